//! Hosts third-party plugins of the actuator behind the same traits as compiled-in ones.
//!
//! - [`exec::ExecPlugin`]: an executable speaking line-delimited JSON-RPC on stdio; every
//!   call times out; a plugin that crashes or hangs is killed and restarted with bounded
//!   exponential backoff, and a call during the backoff fails at once.
//! - [`cdylib::CdylibPlugin`]: a shared library exporting `ACTUATOR_PLUGIN_V1`; its magic
//!   and API version are checked before any call; calls run on blocking threads with a
//!   timeout; the library is never unloaded.
//! - [`inproc::InProcess`]: a plugin type written against `actuator-plugin-sdk`, linked in
//!   (the compiled-in tier), with the same panic and timeout guards.
//!
//! - [`store::RemoteStore`]: a store plugin of either tier behind `actuator_core::Store`,
//!   loaded by [`store::load_store`], over the `store.*` methods; calls in flight at once,
//!   each answered only after the plugin's store returned.
//!
//! [`load`] picks the tier for a [`PluginSpec`] and checks the file; every hosted plugin
//! reports its [`PluginStatus`].

pub mod cdylib;
pub mod conformance;
pub mod exec;
mod health;
pub mod inproc;
pub mod store;

use actuator_core::plugin::{
    MetricSource, Notifier, PluginError, PluginKind, PluginStatus, PluginTier,
};
use actuator_plugin_sdk::wire::{self, ApiVersion, Hello, RpcError, code};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use health::HealthCell;

/// The plugin API this host speaks.
pub const HOST_API: ApiVersion = ApiVersion::CURRENT;

/// Errors of loading a plugin, before it is used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file does not exist.
    #[error("plugin {name:?}: {path} does not exist")]
    Missing {
        /// The configured name.
        name: String,
        /// The path.
        path: PathBuf,
    },
    /// The exec tier was chosen for a file that may not be executed.
    #[error("plugin {name:?}: {path} is not executable (chmod +x it, or set tier = \"cdylib\")")]
    NotExecutable {
        /// The configured name.
        name: String,
        /// The path.
        path: PathBuf,
    },
    /// [`load`] loads notifiers and metric sources; stores go through
    /// [`store::load_store`].
    #[error(
        "plugin {name:?}: kind {kind} is not a notifier or metric_source; stores are loaded with store::load_store"
    )]
    UnsupportedKind {
        /// The configured name.
        name: String,
        /// The kind.
        kind: PluginKind,
    },
    /// A limit is out of its range.
    #[error("plugin {name:?}: {message}")]
    Limits {
        /// The configured name.
        name: String,
        /// Which limit and its range.
        message: String,
    },
    /// The plugin started but was refused or failed its handshake or configure.
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

/// Timeouts and backoff of one hosted plugin. Ranges are checked by [`Limits::validate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest a call may take, 10 ms ..= 60 s (default 3 s).
    pub call_timeout: Duration,
    /// Longest a start may take (spawn, `hello`, `configure`), 100 ms ..= 60 s (default 10 s).
    pub start_timeout: Duration,
    /// First restart delay after a crash or a kill, 10 ms ..= 60 s (default 500 ms).
    pub backoff_initial: Duration,
    /// Longest restart delay (each failure doubles it up to this), `backoff_initial` ..= 10 min
    /// (default 30 s).
    pub backoff_max: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(3),
            start_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
        }
    }
}

impl Limits {
    /// Checks every range; the message names the field and its range.
    pub fn validate(&self) -> Result<(), String> {
        let ms = |d: Duration| d.as_millis();
        let check = |field: &str, d: Duration, lo: u128, hi: u128| {
            if (lo..=hi).contains(&ms(d)) {
                Ok(())
            } else {
                Err(format!("{field} = {} is outside {lo}..={hi}", ms(d)))
            }
        };
        check("timeout_ms", self.call_timeout, 10, 60_000)?;
        check("start_timeout_ms", self.start_timeout, 100, 60_000)?;
        check("backoff_initial_ms", self.backoff_initial, 10, 60_000)?;
        check("backoff_max_ms", self.backoff_max, ms(self.backoff_initial), 600_000)
    }
}

/// What the operator declared: one `[[plugins]]` entry.
#[derive(Clone, Debug)]
pub struct PluginSpec {
    /// What the daemon uses it as.
    pub kind: PluginKind,
    /// The operator's name for it (unique).
    pub name: String,
    /// The executable or the shared library.
    pub path: PathBuf,
    /// The tier; `None` picks it from the file (`.so`, `.dylib`, `.dll` → cdylib, else exec).
    pub tier: Option<FileTier>,
    /// Arguments of an executable.
    pub args: Vec<String>,
    /// The plugin's own config.
    pub config: Value,
    /// Timeouts and backoff.
    pub limits: Limits,
}

impl PluginSpec {
    /// The tier this spec resolves to.
    pub fn resolved_tier(&self) -> FileTier {
        self.tier.unwrap_or_else(|| tier_of(&self.path))
    }
}

/// The tiers a plugin file can be hosted in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileTier {
    /// An executable, over JSON-RPC on stdio.
    Exec,
    /// A shared library, through the C ABI.
    Cdylib,
}

impl From<FileTier> for PluginTier {
    fn from(t: FileTier) -> Self {
        match t {
            FileTier::Exec => Self::Exec,
            FileTier::Cdylib => Self::Cdylib,
        }
    }
}

/// The tier a file implies: a shared library by its extension, else an executable.
pub fn tier_of(path: &Path) -> FileTier {
    match path.extension().and_then(|e| e.to_str()) {
        Some("so" | "dylib" | "dll") => FileTier::Cdylib,
        _ => FileTier::Exec,
    }
}

/// A loaded plugin of the exec or cdylib tier.
pub trait Hosted: Notifier + MetricSource {
    /// Its status now.
    fn status(&self) -> PluginStatus;
}

/// A loaded plugin and what it is used as.
#[derive(Clone)]
pub struct Loaded {
    /// The kind it was configured as.
    pub kind: PluginKind,
    /// The plugin.
    pub plugin: Arc<dyn Hosted>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.plugin.status();
        f.debug_struct("Loaded").field("kind", &self.kind).field("name", &s.name).finish()
    }
}

impl Loaded {
    /// The plugin as a notifier.
    pub fn notifier(&self) -> Arc<dyn Notifier> {
        self.plugin.clone()
    }

    /// The plugin as a metric source.
    pub fn metric_source(&self) -> Arc<dyn MetricSource> {
        self.plugin.clone()
    }
}

/// The protocol kind of a core kind (`None` for stores).
pub fn wire_kind(kind: PluginKind) -> Option<wire::Kind> {
    match kind {
        PluginKind::Notifier => Some(wire::Kind::Notifier),
        PluginKind::MetricSource => Some(wire::Kind::MetricSource),
        _ => None,
    }
}

/// Checks the file and the limits, starts or loads the plugin, checks its handshake and
/// configures it. Every refusal is a clear [`LoadError`].
pub async fn load(spec: PluginSpec) -> Result<Loaded, LoadError> {
    if wire_kind(spec.kind).is_none() {
        return Err(LoadError::UnsupportedKind { name: spec.name, kind: spec.kind });
    }
    check_file(&spec)?;
    let kind = spec.kind;
    let plugin: Arc<dyn Hosted> = match spec.resolved_tier() {
        FileTier::Exec => Arc::new(exec::ExecPlugin::start(spec).await?),
        FileTier::Cdylib => Arc::new(cdylib::CdylibPlugin::load(spec).await?),
    };
    Ok(Loaded { kind, plugin })
}

/// Checks the limits' ranges, that the file exists, and that an exec-tier file may be
/// executed.
pub(crate) fn check_file(spec: &PluginSpec) -> Result<(), LoadError> {
    spec.limits
        .validate()
        .map_err(|message| LoadError::Limits { name: spec.name.clone(), message })?;
    let meta = std::fs::metadata(&spec.path)
        .map_err(|_| LoadError::Missing { name: spec.name.clone(), path: spec.path.clone() })?;
    if spec.resolved_tier() == FileTier::Exec {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
                return Err(LoadError::NotExecutable {
                    name: spec.name.clone(),
                    path: spec.path.clone(),
                });
            }
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    Ok(())
}

/// Checks a plugin's `hello`: the protocol name, the major version, a minor not newer than
/// the host's, and the kind it is configured as.
pub fn check_hello(name: &str, hello: &Hello, kind: wire::Kind) -> Result<(), PluginError> {
    if hello.protocol != wire::PROTOCOL {
        return Err(PluginError::Failed {
            plugin: name.to_owned(),
            message: format!(
                "speaks protocol {:?}, not {:?}: is this an actuator plugin?",
                hello.protocol,
                wire::PROTOCOL
            ),
        });
    }
    if !HOST_API.accepts(hello.api) {
        let why = if hello.api.major != HOST_API.major {
            "another major version"
        } else {
            "a newer minor version"
        };
        return Err(PluginError::Failed {
            plugin: name.to_owned(),
            message: format!(
                "speaks plugin API {} ({why}); this host speaks {}: rebuild the plugin against actuator-plugin-sdk {}.x",
                hello.api, HOST_API, HOST_API.major
            ),
        });
    }
    if !hello.plugin.kinds.contains(&kind) {
        return Err(PluginError::Failed {
            plugin: name.to_owned(),
            message: format!(
                "is configured as a {kind} but announces only {:?}",
                hello.plugin.kinds.iter().map(ToString::to_string).collect::<Vec<_>>()
            ),
        });
    }
    Ok(())
}

/// The host's `hello`.
pub fn host_hello() -> wire::HostHello {
    wire::HostHello {
        protocol: wire::PROTOCOL.to_owned(),
        api: HOST_API,
        features: vec!["log".to_owned()],
    }
}

/// A plugin's JSON-RPC error as a core error: `INVALID_CONFIG` keeps its field.
pub fn from_rpc(name: &str, e: RpcError) -> PluginError {
    if e.code == code::INVALID_CONFIG {
        let field = e
            .data
            .as_ref()
            .and_then(|d| d.get("field"))
            .and_then(Value::as_str)
            .unwrap_or(".")
            .to_owned();
        return PluginError::InvalidConfig { plugin: name.to_owned(), field, message: e.message };
    }
    PluginError::Failed { plugin: name.to_owned(), message: e.message }
}

/// A core event as it crosses the boundary.
pub fn wire_event(e: &actuator_core::plugin::Event) -> wire::Event {
    let severity = match e.severity {
        actuator_core::plugin::Severity::Info => wire::Severity::Info,
        actuator_core::plugin::Severity::Warning => wire::Severity::Warning,
        actuator_core::plugin::Severity::Critical => wire::Severity::Critical,
    };
    wire::Event {
        kind: e.kind.clone(),
        severity,
        at: e.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        actor: e.actor.clone(),
        target: e.target.clone(),
        summary: e.summary.clone(),
        details: e.details.clone(),
    }
}

fn failed(name: &str, message: impl Into<String>) -> PluginError {
    PluginError::Failed { plugin: name.to_owned(), message: message.into() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actuator_plugin_sdk::wire::PluginDescriptor;

    fn hello(protocol: &str, major: u16, minor: u16) -> Hello {
        Hello {
            protocol: protocol.into(),
            api: ApiVersion { major, minor },
            plugin: PluginDescriptor {
                name: "p".into(),
                version: "1.0.0".into(),
                kinds: vec![wire::Kind::Notifier],
                description: String::new(),
            },
            features: vec![],
            config_schema: Value::Null,
        }
    }

    #[test]
    fn the_handshake_refuses_another_protocol_major_newer_minor_and_kind() {
        check_hello("p", &hello(wire::PROTOCOL, 1, 0), wire::Kind::Notifier).unwrap();
        let e = check_hello("p", &hello("lsp", 1, 0), wire::Kind::Notifier).unwrap_err();
        assert!(e.to_string().contains("\"lsp\""), "{e}");
        let e = check_hello("p", &hello(wire::PROTOCOL, 2, 0), wire::Kind::Notifier).unwrap_err();
        assert!(e.to_string().contains("plugin API 2.0 (another major version)"), "{e}");
        let e = check_hello("p", &hello(wire::PROTOCOL, 1, 7), wire::Kind::Notifier).unwrap_err();
        assert!(e.to_string().contains("1.7 (a newer minor version)"), "{e}");
        let e =
            check_hello("p", &hello(wire::PROTOCOL, 1, 0), wire::Kind::MetricSource).unwrap_err();
        assert!(e.to_string().contains("configured as a metric_source"), "{e}");
    }

    #[test]
    fn limits_name_the_field_out_of_range() {
        Limits::default().validate().unwrap();
        let l = Limits { call_timeout: Duration::from_millis(1), ..Limits::default() };
        assert!(l.validate().unwrap_err().contains("timeout_ms = 1 is outside 10..=60000"));
        let l = Limits { backoff_max: Duration::from_millis(100), ..Limits::default() };
        assert!(l.validate().unwrap_err().contains("backoff_max_ms"));
    }

    #[test]
    fn the_tier_follows_the_extension() {
        assert_eq!(tier_of(Path::new("/x/libteams.so")), FileTier::Cdylib);
        assert_eq!(tier_of(Path::new("/x/libteams.dylib")), FileTier::Cdylib);
        assert_eq!(tier_of(Path::new("/x/teams")), FileTier::Exec);
    }

    #[test]
    fn an_invalid_config_error_keeps_its_field() {
        let e = from_rpc(
            "p",
            RpcError {
                code: code::INVALID_CONFIG,
                message: "bad".into(),
                data: Some(serde_json::json!({"field": "path"})),
            },
        );
        assert!(matches!(e, PluginError::InvalidConfig { field, .. } if field == "path"));
        assert!(matches!(
            from_rpc("p", RpcError::new(code::PANICKED, "x")),
            PluginError::Failed { .. }
        ));
    }
}
