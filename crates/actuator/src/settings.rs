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
    /// Notifier plugins, each with the events it is told about.
    pub(crate) notifiers: Vec<NotifierChoice>,
    /// Plugins loaded from files (`[[plugins]]`): executables and shared libraries.
    pub(crate) plugins: Vec<PluginDecl>,
    /// Compiled-in metric sources (`[[metric_sources]]`) that rollouts name in
    /// `metrics.source`; a `[[plugins]]` entry of kind `metric_source` is one too, by its name.
    pub(crate) metric_sources: Vec<MetricSourceChoice>,
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
    /// Several replicas on one PostgreSQL database, one of them leading.
    pub(crate) cluster: ClusterSettings,
}

/// `[cluster]`: run as one replica of several on one PostgreSQL database.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ClusterSettings {
    /// Cluster mode; needs `[store] plugin = "postgres"`.
    pub(crate) enabled: bool,
    /// This replica's id, 1 to 64 characters of `A-Z a-z 0-9 . _ -`; `<hostname>-<pid>`
    /// when absent.
    pub(crate) replica_id: Option<String>,
    /// How the other replicas reach this one; `http://<listen>` when absent.
    pub(crate) advertise_url: Option<String>,
    /// The lease, in milliseconds: a leader not renewed for this long is taken over.
    pub(crate) lease_ms: u64,
}

/// The default lease length.
pub(crate) const DEFAULT_LEASE_MS: u64 = 5_000;

impl Default for ClusterSettings {
    fn default() -> Self {
        Self { enabled: false, replica_id: None, advertise_url: None, lease_ms: DEFAULT_LEASE_MS }
    }
}

/// This machine's name, for the default replica id (`localhost` when it cannot be read).
fn hostname() -> String {
    let raw = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .unwrap_or_default();
    let clean: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(40)
        .collect();
    if clean.is_empty() { "localhost".to_owned() } else { clean }
}

impl ClusterSettings {
    /// Checks the section against the store and the listen address, naming the field that
    /// is wrong, and fills in the defaults: returns the replica id and the advertised URL.
    pub(crate) fn resolve(
        &self,
        store: &PluginChoice,
        listen: SocketAddr,
    ) -> anyhow::Result<(String, String)> {
        if self.enabled && store.plugin != actuator_store_postgres::PLUGIN_NAME {
            anyhow::bail!(
                "cluster.enabled: cluster mode needs the PostgreSQL store ([store] plugin = \"postgres\"); the store is {:?}",
                store.plugin
            );
        }
        let range = actuator_store_postgres::cluster::LEASE_MS_RANGE;
        if !range.contains(&self.lease_ms) {
            anyhow::bail!(
                "cluster.lease_ms: {} is out of range {}..={}",
                self.lease_ms,
                range.start(),
                range.end()
            );
        }
        let id = match &self.replica_id {
            Some(id) => id.clone(),
            None => format!("{}-{}", hostname(), std::process::id()),
        };
        let id_ok = (1..=64).contains(&id.len())
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !id_ok {
            anyhow::bail!(
                "cluster.replica_id: {id:?} must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'"
            );
        }
        let url = match &self.advertise_url {
            Some(u) => {
                let ok = (u.starts_with("http://") || u.starts_with("https://"))
                    && u.len() <= 2048
                    && u.len() > "https://".len()
                    && u.bytes().all(|b| b.is_ascii_graphic());
                if !ok {
                    anyhow::bail!(
                        "cluster.advertise_url: {u:?} must be an http:// or https:// URL such as http://10.0.0.5:8080"
                    );
                }
                u.trim_end_matches('/').to_owned()
            }
            None => format!("http://{listen}"),
        };
        Ok((id, url))
    }
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

/// A notifier plugin by name, its JSON config, and the events it is told about (`None`: the
/// plugin's default selection; see `actuator_core::events` for the names).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NotifierChoice {
    pub(crate) plugin: String,
    #[serde(default = "empty_object")]
    pub(crate) config: Value,
    #[serde(default)]
    pub(crate) events: Option<Vec<String>>,
}

/// A compiled-in metric source plugin, the name rollouts give it, and its JSON config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MetricSourceChoice {
    /// The name in `metrics.source`: 1 to 64 characters of `a-z`, `0-9`, `-`, `_`, unique
    /// among metric sources (those of `[[plugins]]` included); the plugin's name by default.
    #[serde(default)]
    pub(crate) name: Option<String>,
    /// The compiled-in plugin (`prometheus`).
    pub(crate) plugin: String,
    #[serde(default = "empty_object")]
    pub(crate) config: Value,
}

impl MetricSourceChoice {
    /// The name rollouts use.
    pub(crate) fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.plugin)
    }
}

fn plugin_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Checks `[[metric_sources]]`: each name valid and unique among the metric sources, those
/// loaded from files (`[[plugins]]` of kind `metric_source`) included.
pub(crate) fn check_metric_sources(
    sources: &[MetricSourceChoice],
    plugins: &[PluginDecl],
) -> anyhow::Result<()> {
    let mut seen: std::collections::BTreeSet<&str> = plugins
        .iter()
        .filter(|p| p.kind == actuator_core::PluginKind::MetricSource)
        .map(|p| p.name.as_str())
        .collect();
    for (i, m) in sources.iter().enumerate() {
        let name = m.name();
        if !plugin_name_ok(name) {
            anyhow::bail!(
                "metric_sources[{i}].name: {name:?} must be 1 to 64 characters of a-z, 0-9, '-' and '_'"
            );
        }
        if !seen.insert(name) {
            anyhow::bail!(
                "metric_sources[{i}].name: a metric source named {name:?} is declared twice; give each its own name"
            );
        }
    }
    Ok(())
}

/// Replaces every `${env:NAME}` inside the strings of `value` with the variable's value, as
/// `lookup` gives it; `at` names the setting in the error. An unset or empty variable, an
/// unterminated reference and a name outside `A-Z a-z 0-9 _` are refused.
pub(crate) fn resolve_env(
    value: &mut Value,
    at: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<()> {
    match value {
        Value::String(s) if s.contains("${env:") => {
            let mut out = String::with_capacity(s.len());
            let mut rest = s.as_str();
            while let Some(i) = rest.find("${env:") {
                out.push_str(&rest[..i]);
                let after = &rest[i + 6..];
                let Some(end) = after.find('}') else {
                    anyhow::bail!("{at}: `${{env:` without its closing `}}`");
                };
                let name = &after[..end];
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    anyhow::bail!(
                        "{at}: {name:?} is not an environment variable name (A-Z, a-z, 0-9, _)"
                    );
                }
                match lookup(name).filter(|v| !v.is_empty()) {
                    Some(v) => out.push_str(&v),
                    None => anyhow::bail!(
                        "{at}: environment variable {name} is not set (the setting reads it as ${{env:{name}}})"
                    ),
                }
                rest = &after[end + 1..];
            }
            out.push_str(rest);
            *s = out;
        }
        Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                resolve_env(v, &format!("{at}[{i}]"), lookup)?;
            }
        }
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                resolve_env(v, &format!("{at}.{k}"), lookup)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// One `[[plugins]]` entry: a plugin loaded from a file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PluginDecl {
    /// `notifier`, `metric_source` or `store` (a store is used when `[store] plugin` names
    /// it; its config is this entry's `config`).
    pub(crate) kind: actuator_core::PluginKind,
    /// Unique among `[[plugins]]`: 1 to 64 characters of `a-z`, `0-9`, `-`, `_`.
    pub(crate) name: String,
    /// The executable or shared library; relative paths are read from the settings file's
    /// directory.
    pub(crate) path: PathBuf,
    /// `exec` or `cdylib`; by default `.so`/`.dylib`/`.dll` files are cdylib, others exec.
    #[serde(default)]
    pub(crate) tier: Option<actuator_plugin_host::FileTier>,
    /// Arguments of an executable.
    #[serde(default)]
    pub(crate) args: Vec<String>,
    /// The plugin's own config, checked by the plugin.
    #[serde(default = "empty_object")]
    pub(crate) config: Value,
    /// For a notifier, the events it is told about (as in `[[notifiers]]`); every event when
    /// absent. Refused on a metric source.
    #[serde(default)]
    pub(crate) events: Option<Vec<String>>,
    /// Longest call, 10..=60000 ms (default 3000).
    #[serde(default = "default_timeout_ms")]
    pub(crate) timeout_ms: u64,
    /// Longest start (spawn or load, hello, configure), 100..=60000 ms (default 10000).
    #[serde(default = "default_start_timeout_ms")]
    pub(crate) start_timeout_ms: u64,
    /// First restart delay of an exec plugin, 10..=60000 ms (default 500).
    #[serde(default = "default_backoff_initial_ms")]
    pub(crate) backoff_initial_ms: u64,
    /// Longest restart delay, backoff_initial_ms..=600000 ms (default 30000).
    #[serde(default = "default_backoff_max_ms")]
    pub(crate) backoff_max_ms: u64,
}

fn default_timeout_ms() -> u64 {
    3_000
}
fn default_start_timeout_ms() -> u64 {
    10_000
}
fn default_backoff_initial_ms() -> u64 {
    500
}
fn default_backoff_max_ms() -> u64 {
    30_000
}

impl PluginDecl {
    /// What the plugin host loads.
    pub(crate) fn spec(&self) -> actuator_plugin_host::PluginSpec {
        use std::time::Duration;
        actuator_plugin_host::PluginSpec {
            kind: self.kind,
            name: self.name.clone(),
            path: self.path.clone(),
            tier: self.tier,
            args: self.args.clone(),
            config: self.config.clone(),
            limits: actuator_plugin_host::Limits {
                call_timeout: Duration::from_millis(self.timeout_ms),
                start_timeout: Duration::from_millis(self.start_timeout_ms),
                backoff_initial: Duration::from_millis(self.backoff_initial_ms),
                backoff_max: Duration::from_millis(self.backoff_max_ms),
            },
        }
    }
}

/// Checks `[[plugins]]`: names, kinds, files and limits, before anything is started.
pub(crate) fn check_plugins(decls: &mut [PluginDecl], base: Option<&Path>) -> anyhow::Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for d in decls.iter_mut() {
        if !plugin_name_ok(&d.name) {
            anyhow::bail!(
                "plugins: name {:?} must be 1 to 64 characters of a-z, 0-9, '-' and '_'",
                d.name
            );
        }
        if !seen.insert(d.name.clone()) {
            anyhow::bail!(
                "plugins: the name {:?} is declared twice; each plugin needs its own name",
                d.name
            );
        }
        if !matches!(
            d.kind,
            actuator_core::PluginKind::Notifier
                | actuator_core::PluginKind::MetricSource
                | actuator_core::PluginKind::Store
        ) {
            anyhow::bail!(
                "plugins.{}: kind {} cannot be loaded from a file; use notifier, metric_source or store",
                d.name,
                d.kind
            );
        }
        if let Some(names) = &d.events {
            if d.kind != actuator_core::PluginKind::Notifier {
                anyhow::bail!("plugins.{}: events apply to notifiers only", d.name);
            }
            actuator_core::EventSelection::from_names(&d.name, names)
                .with_context(|| format!("plugins.{}.events", d.name))?;
        }
        if let Some(base) = base.filter(|_| d.path.is_relative()) {
            d.path = base.join(&d.path);
        }
        if !d.path.exists() {
            anyhow::bail!("plugins.{}: the file {} does not exist", d.name, d.path.display());
        }
        d.spec().limits.validate().map_err(|m| anyhow::anyhow!("plugins.{}: {m}", d.name))?;
    }
    Ok(())
}

/// Checks that a store declared in `[[plugins]]` is the one `[store]` names, that there is at
/// most one, and that its config is in its own entry. Returns the declared store, if any.
pub(crate) fn check_store_choice<'a>(
    store: &PluginChoice,
    decls: &'a [PluginDecl],
) -> anyhow::Result<Option<&'a PluginDecl>> {
    let stores: Vec<&PluginDecl> =
        decls.iter().filter(|d| d.kind == actuator_core::PluginKind::Store).collect();
    let decl = match stores.as_slice() {
        [] => return Ok(None),
        [one] => *one,
        [a, b, ..] => anyhow::bail!(
            "plugins: {} and {} are both stores; the daemon uses one store, named by [store] plugin",
            a.name,
            b.name
        ),
    };
    if store.plugin != decl.name {
        anyhow::bail!(
            "plugins.{0}: a store plugin is used only as the daemon's store: set [store] plugin = \"{0}\" (it names {1:?}), or remove the entry",
            decl.name,
            store.plugin
        );
    }
    if store.config.as_object().is_none_or(|m| !m.is_empty()) {
        anyhow::bail!(
            "store.config: the store is plugin {0}, loaded from a file; its config goes in its own entry (plugins.{0}.config)",
            decl.name
        );
    }
    Ok(Some(decl))
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
            notifiers: vec![NotifierChoice {
                plugin: "log".into(),
                config: empty_object(),
                events: None,
            }],
            plugins: Vec::new(),
            metric_sources: Vec::new(),
            config: ConfigSettings::default(),
            engine: actuator_engine::EngineSettings::default(),
            log: LogSettings::default(),
            server: ServerSettings::default(),
            cluster: ClusterSettings::default(),
        }
    }
}

impl Settings {
    /// Resolves `${env:NAME}` in the store's and the notifiers' configs, before any plugin
    /// sees them.
    pub(crate) fn resolve_secrets(
        &mut self,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> anyhow::Result<()> {
        resolve_env(&mut self.store.config, "store.config", lookup)?;
        for (i, n) in self.notifiers.iter_mut().enumerate() {
            resolve_env(&mut n.config, &format!("notifiers[{i}].config"), lookup)?;
        }
        for p in &mut self.plugins {
            resolve_env(&mut p.config, &format!("plugins.{}.config", p.name), lookup)?;
        }
        for (i, m) in self.metric_sources.iter_mut().enumerate() {
            resolve_env(&mut m.config, &format!("metric_sources[{i}].config"), lookup)?;
        }
        Ok(())
    }

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
        let base = args.config.as_deref().and_then(Path::parent);
        check_plugins(&mut s.plugins, base)?;
        check_store_choice(&s.store, &s.plugins)?;
        check_metric_sources(&s.metric_sources, &s.plugins)?;
        if let Some(l) = args.listen {
            s.listen = l;
        }
        if let Some(d) = &args.data_dir {
            s.data_dir.clone_from(d);
        }
        if let Some(f) = &args.log_format {
            s.log.format.clone_from(f);
        }
        s.resolve_secrets(&|name| std::env::var(name).ok())?;
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
        s.cluster.resolve(&s.store, s.listen)?;
        if !matches!(s.log.format.as_str(), "text" | "json") {
            anyhow::bail!("log.format must be \"text\" or \"json\", got {:?}", s.log.format);
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(toml: &str) -> anyhow::Result<(String, String)> {
        let s: Settings = toml::from_str(toml)?;
        s.cluster.resolve(&s.store, s.listen)
    }

    #[test]
    fn cluster_mode_is_off_by_default_and_checked_by_field() {
        let s = Settings::default();
        assert_eq!(s.cluster, ClusterSettings::default());
        assert!(!s.cluster.enabled);
        assert_eq!(s.cluster.lease_ms, 5000);
        const PG: &str = "[store]\nplugin = \"postgres\"\n";
        let (id, url) = cluster(&format!(
            "listen = \"127.0.0.1:7071\"\n{PG}[cluster]\nenabled = true\nreplica_id = \"r1\"\nlease_ms = 1000"
        ))
        .unwrap();
        assert_eq!((id.as_str(), url.as_str()), ("r1", "http://127.0.0.1:7071"));
        let (id, url) = cluster(&format!(
            "{PG}[cluster]\nenabled = true\nadvertise_url = \"http://10.0.0.5:8080/\"\nlease_ms = 60000"
        ))
        .unwrap();
        assert!(id.ends_with(&format!("-{}", std::process::id())), "{id}");
        assert_eq!(url, "http://10.0.0.5:8080");
        let e = cluster("[cluster]\nenabled = true").unwrap_err().to_string();
        assert!(
            e.contains("cluster.enabled") && e.contains("postgres") && e.contains("sqlite"),
            "{e}"
        );
        for lease in [999, 60_001, 0] {
            let e = cluster(&format!("{PG}[cluster]\nenabled = true\nlease_ms = {lease}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("cluster.lease_ms") && e.contains("1000..=60000"), "{e}");
        }
        for bad in ["", "has space", "ü", &"x".repeat(65)] {
            let e = cluster(&format!("{PG}[cluster]\nenabled = true\nreplica_id = {bad:?}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("cluster.replica_id"), "{e}");
        }
        assert!(cluster(&format!("{PG}[cluster]\nreplica_id = {:?}", "x".repeat(64))).is_ok());
        for bad in ["10.0.0.5:8080", "ftp://x", "http://a b"] {
            let e = cluster(&format!("{PG}[cluster]\nenabled = true\nadvertise_url = {bad:?}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("cluster.advertise_url"), "{e}");
        }
        let e = toml::from_str::<Settings>("[cluster]\nlease = 5").unwrap_err().to_string();
        assert!(e.contains("lease"), "{e}");
    }

    #[test]
    fn metric_sources_are_named_once() {
        let s: Settings = toml::from_str(
            "[[metric_sources]]\nplugin = \"prometheus\"\nconfig = { url = \"http://127.0.0.1:9090\", timeout_ms = 2000 }\n[[metric_sources]]\nname = \"prom-eu\"\nplugin = \"prometheus\"\nconfig = { url = \"http://10.0.0.1:9090\" }",
        )
        .unwrap();
        check_metric_sources(&s.metric_sources, &s.plugins).unwrap();
        assert_eq!(s.metric_sources[0].name(), "prometheus");
        assert_eq!(s.metric_sources[1].name(), "prom-eu");
        assert_eq!(s.metric_sources[0].config["timeout_ms"], 2000);
        let twice: Settings = toml::from_str(
            "[[metric_sources]]\nplugin = \"prometheus\"\n[[metric_sources]]\nplugin = \"prometheus\"",
        )
        .unwrap();
        let e = check_metric_sources(&twice.metric_sources, &twice.plugins).unwrap_err();
        assert!(
            e.to_string().contains("metric_sources[1].name") && e.to_string().contains("twice"),
            "{e}"
        );
        let bad: Settings =
            toml::from_str("[[metric_sources]]\nname = \"Prom EU\"\nplugin = \"prometheus\"")
                .unwrap();
        let e = check_metric_sources(&bad.metric_sources, &bad.plugins).unwrap_err();
        assert!(e.to_string().contains("metric_sources[0].name"), "{e}");
        let e = toml::from_str::<Settings>("[[metric_sources]]\nplugin = \"p\"\nurl = \"x\"")
            .unwrap_err();
        assert!(e.to_string().contains("url"), "{e}");
        // A metric source loaded from a file takes its name from `[[plugins]]`: the same name
        // cannot also be a compiled-in source's.
        let clash: Settings = toml::from_str(
            "[[plugins]]\nkind = \"metric_source\"\nname = \"prom\"\npath = \"p\"\n[[metric_sources]]\nname = \"prom\"\nplugin = \"prometheus\"",
        )
        .unwrap();
        let e = check_metric_sources(&clash.metric_sources, &clash.plugins).unwrap_err();
        assert!(e.to_string().contains("\"prom\" is declared twice"), "{e}");
    }

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
    fn plugins_are_checked_before_anything_starts() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("teams");
        std::fs::write(&exe, "").unwrap();
        let parse = |t: &str| toml::from_str::<Settings>(t);
        let one = "[[plugins]]\nkind = \"notifier\"\nname = \"teams\"\npath = \"teams\"\nconfig = { url = \"http://x\" }\n";
        let mut s = parse(one).unwrap();
        check_plugins(&mut s.plugins, Some(dir.path())).unwrap();
        assert_eq!(s.plugins[0].path, exe);
        assert_eq!(s.plugins[0].config["url"], "http://x");
        assert_eq!(s.plugins[0].spec().limits, actuator_plugin_host::Limits::default());

        let mut twice = parse(&format!("{one}{one}")).unwrap();
        let msg = check_plugins(&mut twice.plugins, Some(dir.path())).unwrap_err().to_string();
        assert!(msg.contains("\"teams\" is declared twice"), "{msg}");

        let err = parse(&one.replace("notifier", "pager")).unwrap_err().to_string();
        assert!(err.contains("pager") && err.contains("notifier"), "{err}");

        // A store from a file: checked like the others, used only when [store] names it.
        let as_store = one.replace("\"notifier\"", "\"store\"");
        let mut store = parse(&as_store).unwrap();
        check_plugins(&mut store.plugins, Some(dir.path())).unwrap();
        let msg = check_store_choice(&store.store, &store.plugins).unwrap_err().to_string();
        assert!(msg.contains("plugins.teams: a store plugin is used only as the daemon's store: set [store] plugin = \"teams\" (it names \"sqlite\")"), "{msg}");
        let chosen = parse(&format!("[store]\nplugin = \"teams\"\n{as_store}")).unwrap();
        let d = check_store_choice(&chosen.store, &chosen.plugins).unwrap().unwrap();
        assert_eq!((d.name.as_str(), &d.config["url"]), ("teams", &serde_json::json!("http://x")));
        let with_config = parse(&format!(
            "[store]\nplugin = \"teams\"\nconfig = {{ path = \"/x.db\" }}\n{as_store}"
        ))
        .unwrap();
        let msg = check_store_choice(&with_config.store, &with_config.plugins).unwrap_err();
        assert!(msg.to_string().contains("its own entry (plugins.teams.config)"), "{msg}");
        let two = parse(&format!(
            "[store]\nplugin = \"teams\"\n{as_store}{}",
            as_store.replace("name = \"teams\"", "name = \"other\"")
        ))
        .unwrap();
        let msg = check_store_choice(&two.store, &two.plugins).unwrap_err().to_string();
        assert!(msg.contains("teams and other are both stores"), "{msg}");
        let mut with_events = parse(&format!("{as_store}events = [\"failed\"]\n")).unwrap();
        let msg = check_plugins(&mut with_events.plugins, Some(dir.path())).unwrap_err();
        assert!(msg.to_string().contains("events apply to notifiers only"), "{msg}");
        assert!(check_store_choice(&s.store, &s.plugins).unwrap().is_none());

        let mut missing = parse(&one.replace("path = \"teams\"", "path = \"gone\"")).unwrap();
        let msg = check_plugins(&mut missing.plugins, Some(dir.path())).unwrap_err().to_string();
        assert!(msg.contains("plugins.teams: the file") && msg.contains("does not exist"), "{msg}");

        let mut slow = parse(&format!("{one}timeout_ms = 70000\n")).unwrap();
        let msg = check_plugins(&mut slow.plugins, Some(dir.path())).unwrap_err().to_string();
        assert!(msg.contains("timeout_ms = 70000 is outside 10..=60000"), "{msg}");

        let mut bad = parse(&one.replace("name = \"teams\"", "name = \"Teams!\"")).unwrap();
        let msg = check_plugins(&mut bad.plugins, Some(dir.path())).unwrap_err().to_string();
        assert!(msg.contains("must be 1 to 64 characters"), "{msg}");

        let mut unknown = parse(&format!("{one}events = [\"deployed\"]\n")).unwrap();
        let msg =
            format!("{:#}", check_plugins(&mut unknown.plugins, Some(dir.path())).unwrap_err());
        assert!(msg.contains("plugins.teams.events") && msg.contains("deployed"), "{msg}");
        let mut chosen = parse(&format!("{one}events = [\"rolled_back\"]\n")).unwrap();
        check_plugins(&mut chosen.plugins, Some(dir.path())).unwrap();
        assert_eq!(chosen.plugins[0].events.as_deref(), Some(&["rolled_back".to_string()][..]));

        let err = parse(&format!("{one}colour = 1\n")).unwrap_err().to_string();
        assert!(err.contains("colour"), "{err}");
        let err = parse(&format!("{one}tier = \"wasm\"\n")).unwrap_err().to_string();
        assert!(err.contains("wasm") && err.contains("cdylib"), "{err}");
    }

    #[test]
    fn notifier_events_and_env_secrets_are_read() {
        let mut s: Settings = toml::from_str(
            "[[notifiers]]\nplugin = \"webhook\"\nevents = [\"rolled_back\", \"failed\"]\nconfig = { url = \"http://h/${env:HOOK_PATH}\", secret = \"${env:HOOK_SECRET}\", list = [\"${env:HOOK_PATH}\"] }",
        )
        .unwrap();
        assert_eq!(
            s.notifiers[0].events.as_deref(),
            Some(&["rolled_back".to_string(), "failed".to_string()][..])
        );
        let env = |n: &str| match n {
            "HOOK_PATH" => Some("in".to_string()),
            "HOOK_SECRET" => Some("s3cret-s3cret-s3cret".to_string()),
            _ => None,
        };
        s.resolve_secrets(&env).unwrap();
        let c = &s.notifiers[0].config;
        assert_eq!(c["url"], "http://h/in");
        assert_eq!(c["secret"], "s3cret-s3cret-s3cret");
        assert_eq!(c["list"][0], "in");
        let mut s: Settings = toml::from_str(
            "[[notifiers]]\nplugin = \"slack\"\nconfig = { webhook_url = \"${env:NOPE_UNSET}\" }",
        )
        .unwrap();
        let msg = s.resolve_secrets(&env).unwrap_err().to_string();
        assert!(
            msg.contains("notifiers[0].config.webhook_url") && msg.contains("NOPE_UNSET"),
            "{msg}"
        );
        let mut v = serde_json::json!("${env:BAD-NAME}");
        assert!(resolve_env(&mut v, "x", &env).unwrap_err().to_string().contains("BAD-NAME"));
        let mut v = serde_json::json!("${env:HOOK_PATH");
        assert!(resolve_env(&mut v, "x", &env).unwrap_err().to_string().contains("closing"));
        let err =
            toml::from_str::<Settings>("[[notifiers]]\nplugin = \"log\"\nevent = []").unwrap_err();
        assert!(err.to_string().contains("event"), "{err}");
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
