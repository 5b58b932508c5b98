//! Daemon settings: a TOML file, then environment and flags on top.

use actuator_config::ConfigSettings;
use anyhow::Context;
use serde::Deserialize;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::cli::ServeArgs;

/// Everything `actuator serve` can be told.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Settings {
    /// Address of the HTTP API.
    pub(crate) listen: SocketAddr,
    /// Where the SQLite file and other state live.
    pub(crate) data_dir: PathBuf,
    /// The store plugin and its config.
    pub(crate) store: PluginChoice,
    /// Notifier plugins.
    pub(crate) notifiers: Vec<PluginChoice>,
    /// Versioning limits.
    pub(crate) config: ConfigSettings,
    /// The rollout engine, including `engine.durability`: `"batch"` (the default: an
    /// observation batch is on disk before its 2xx) or `"checkpoint"` (acknowledged before it
    /// is durable; a crash loses up to `engine.checkpoint_ms` of outcomes).
    pub(crate) engine: actuator_engine::EngineSettings,
    /// Logging.
    pub(crate) log: LogSettings,
    /// Who may reach the API from where.
    pub(crate) server: ServerSettings,
}

/// The HTTP server's access settings and limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ServerSettings {
    /// Host names, besides the loopback ones, that a daemon running without tokens answers
    /// (a `Host` header naming anything else gets 403: a guard against DNS rebinding).
    pub(crate) allowed_hosts: Vec<String>,
    /// Origins whose web pages may call the API (CORS); none by default.
    pub(crate) cors_origins: Vec<String>,
    /// Open connections at most.
    pub(crate) max_connections: usize,
    /// Seconds a client has to send a request's headers.
    pub(crate) header_read_timeout_secs: u64,
    /// Seconds a connection may move no byte before it is closed.
    pub(crate) idle_timeout_secs: u64,
    /// Event-stream subscribers at most.
    pub(crate) max_sse_subscribers: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        let l = actuator_server::ServerLimits::default();
        Self {
            allowed_hosts: Vec::new(),
            cors_origins: Vec::new(),
            max_connections: l.max_connections,
            header_read_timeout_secs: l.header_read_timeout_secs,
            idle_timeout_secs: l.idle_timeout_secs,
            max_sse_subscribers: l.max_sse_subscribers,
        }
    }
}

impl ServerSettings {
    /// The limits, as the server takes them.
    pub(crate) fn limits(&self) -> actuator_server::ServerLimits {
        actuator_server::ServerLimits {
            max_connections: self.max_connections,
            header_read_timeout_secs: self.header_read_timeout_secs,
            idle_timeout_secs: self.idle_timeout_secs,
            max_sse_subscribers: self.max_sse_subscribers,
        }
    }
}

/// A plugin by name with its JSON config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PluginChoice {
    pub(crate) plugin: String,
    #[serde(default = "empty_object")]
    pub(crate) config: Value,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// Log format and filter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LogSettings {
    /// `text` or `json`.
    pub(crate) format: String,
    /// A tracing filter such as `info,actuator=debug` (`RUST_LOG` overrides it).
    pub(crate) filter: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self { format: "text".into(), filter: "info".into() }
    }
}

/// The default data directory: `$XDG_DATA_HOME/actuator`, `~/.local/share/actuator`, or
/// `./actuator-data`.
pub(crate) fn default_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Path::new(&x).join("actuator");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return Path::new(&h).join(".local/share/actuator");
    }
    PathBuf::from("actuator-data")
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: default_data_dir(),
            store: PluginChoice { plugin: "sqlite".into(), config: empty_object() },
            notifiers: vec![PluginChoice { plugin: "log".into(), config: empty_object() }],
            config: ConfigSettings::default(),
            engine: actuator_engine::EngineSettings::default(),
            log: LogSettings::default(),
            server: ServerSettings::default(),
        }
    }
}

impl Settings {
    /// Reads the file (if any), then applies the flags and their environment variables.
    pub(crate) fn load(args: &ServeArgs) -> anyhow::Result<Self> {
        let mut s = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading settings file {}", path.display()))?;
                toml::from_str::<Settings>(&text)
                    .with_context(|| format!("settings file {} is invalid", path.display()))?
            }
            None => Self::default(),
        };
        if let Some(l) = args.listen {
            s.listen = l;
        }
        if let Some(d) = &args.data_dir {
            s.data_dir.clone_from(d);
        }
        if let Ok(f) = std::env::var("ACTUATOR_LOG_FORMAT") {
            s.log.format = f;
        }
        s.server.limits().validate().map_err(anyhow::Error::msg)?;
        for o in &s.server.cors_origins {
            let ok = (o.starts_with("http://") || o.starts_with("https://"))
                && o.bytes().all(|b| b.is_ascii_graphic());
            if !ok {
                anyhow::bail!(
                    "server.cors_origins: {o:?} must be an origin such as https://ops.example.com"
                );
            }
        }
        if !matches!(s.log.format.as_str(), "text" | "json") {
            anyhow::bail!("log.format must be \"text\" or \"json\", got {:?}", s.log.format);
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_is_strict() {
        let err = toml::from_str::<Settings>("listen = \"127.0.0.1:1\"\ncolour = 1").unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
        let s: Settings = toml::from_str(
            "listen = \"0.0.0.0:9000\"\n[store]\nplugin = \"sqlite\"\nconfig = { path = \"/tmp/x.db\" }\n[config]\nsnapshot_retention = 7",
        )
        .unwrap();
        assert_eq!(s.listen.port(), 9000);
        assert_eq!(s.config.snapshot_retention, 7);
        assert_eq!(s.notifiers[0].plugin, "log");
    }

    #[test]
    fn durability_is_batch_unless_the_operator_opts_into_the_checkpoint_window() {
        use actuator_engine::Durability;
        assert_eq!(Settings::default().engine.durability, Durability::Batch);
        let s: Settings = toml::from_str("[engine]\ncheckpoint_ms = 500").unwrap();
        assert_eq!(s.engine.durability, Durability::Batch);
        let s: Settings = toml::from_str("[engine]\ndurability = \"checkpoint\"").unwrap();
        assert_eq!(s.engine.durability, Durability::Checkpoint);
        let s: Settings = toml::from_str("[engine]\ndurability = \"batch\"").unwrap();
        assert_eq!(s.engine.durability, Durability::Batch);
        let err = toml::from_str::<Settings>("[engine]\ndurability = \"never\"").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("never") && msg.contains("batch") && msg.contains("checkpoint"),
            "{msg}"
        );
    }

    #[test]
    fn the_idle_checkpoint_interval_is_read_and_held_to_its_range() {
        let s: Settings = toml::from_str("[engine]\nidle_checkpoint_ms = 300000").unwrap();
        assert_eq!(s.engine.idle_checkpoint_ms, 300_000);
        s.engine.validate().unwrap();
        let s: Settings = toml::from_str("[engine]\nidle_checkpoint_ms = 3600001").unwrap();
        let msg = s.engine.validate().unwrap_err().to_string();
        assert!(msg.contains("engine.idle_checkpoint_ms") && msg.contains("3600000"), "{msg}");
    }
}
