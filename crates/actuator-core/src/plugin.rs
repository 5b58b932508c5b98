//! Plugins: the `Notifier` and `MetricSource` traits, factories for every plugin kind,
//! and the `Registry` that compiled-in plugins fill through `inventory`.
//!
//! A compiled-in plugin crate writes a `register(&mut Registry)` function and submits it:
//!
//! ```text
//! pub fn register(r: &mut Registry) -> Result<(), PluginError> { r.add_notifier(Arc::new(MyFactory)) }
//! inventory::submit! { actuator_core::Registration { register } }
//! ```
//!
//! The binary names each plugin crate (`use plugin as _;`) so the linker keeps the
//! submission; tests build a `Registry` by hand with [`Registry::empty`] and call
//! `register` themselves.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::store::Store;

/// The plugin API version: a plugin is accepted when its major equals the host's and its
/// minor is not newer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiVersion {
    /// Breaking changes bump this.
    pub major: u16,
    /// Additive changes bump this.
    pub minor: u16,
}

impl ApiVersion {
    /// The API this build of the host speaks.
    pub const HOST: Self = Self { major: 1, minor: 0 };

    /// Whether a host of this version accepts a plugin built for `plugin`.
    pub fn accepts(self, plugin: Self) -> bool {
        self.major == plugin.major && plugin.minor <= self.minor
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The kinds of plugin.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PluginKind {
    /// Durable storage.
    Store,
    /// Delivers events (log, webhook, chat).
    Notifier,
    /// Answers metric queries (Prometheus).
    MetricSource,
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Store => "store",
            Self::Notifier => "notifier",
            Self::MetricSource => "metric_source",
        })
    }
}

/// What a plugin says about itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PluginInfo {
    /// Its kind.
    pub kind: PluginKind,
    /// Its name, unique per kind (`sqlite`, `log`).
    pub name: String,
    /// Its own semver version.
    pub version: String,
    /// The plugin API it was built for.
    pub api: ApiVersion,
    /// One line on what it does.
    pub description: String,
    /// JSON Schema of its configuration.
    pub config_schema: Value,
}

/// How a plugin is hosted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PluginTier {
    /// Linked into the binary, registered through `inventory`.
    CompiledIn,
    /// A separate executable speaking JSON-RPC over stdio.
    Exec,
    /// A shared library loaded into the daemon.
    Cdylib,
}

impl fmt::Display for PluginTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::CompiledIn => "compiled-in",
            Self::Exec => "exec",
            Self::Cdylib => "cdylib",
        })
    }
}

/// Whether a loaded plugin works.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PluginHealth {
    /// Its last call (or its start) succeeded.
    Healthy,
    /// Its process died or was killed and waits for its restart (calls fail fast meanwhile).
    Restarting,
    /// Its last call or restart failed.
    Failed,
}

impl fmt::Display for PluginHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Healthy => "healthy",
            Self::Restarting => "restarting",
            Self::Failed => "failed",
        })
    }
}

/// One plugin as a running daemon sees it (`GET /v1/plugins`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PluginStatus {
    /// Its kind.
    pub kind: PluginKind,
    /// Its name: the registry name of a compiled-in plugin, the configured `name` of another.
    pub name: String,
    /// How it is hosted.
    pub tier: PluginTier,
    /// Its own version.
    pub version: String,
    /// Whether it works.
    pub health: PluginHealth,
    /// The last error it gave, if any.
    pub last_error: Option<String>,
    /// Times its process was restarted (exec tier).
    pub restarts: u64,
    /// Whether the daemon uses it (a compiled-in plugin may be registered and unused).
    pub in_use: bool,
    /// The file it was loaded from (exec and cdylib tiers).
    pub path: Option<String>,
}

/// Tells the plugins of a running daemon, with their health.
pub trait PluginDirectory: Send + Sync + 'static {
    /// Every plugin, sorted by kind and name.
    fn plugins(&self) -> Vec<PluginStatus>;
}

/// An error from a plugin or from the registry.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PluginError {
    /// The plugin's configuration is wrong; `field` is the JSON path of the culprit.
    #[error("invalid config for {plugin} at `{field}`: {message}")]
    InvalidConfig {
        /// The plugin.
        plugin: String,
        /// JSON path of the wrong field (`.` for the whole document).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// No plugin of that kind and name is registered.
    #[error("no {kind} plugin named {name:?}; registered: {available}")]
    Unknown {
        /// The kind.
        kind: PluginKind,
        /// The name asked for.
        name: String,
        /// The names that exist, comma separated.
        available: String,
    },
    /// Two plugins of one kind share a name.
    #[error("a {kind} plugin named {name:?} is registered twice")]
    Duplicate {
        /// The kind.
        kind: PluginKind,
        /// The name.
        name: String,
    },
    /// The plugin was built for an API this host does not speak.
    #[error("plugin {name:?} targets plugin API {plugin}, this host speaks {host}")]
    IncompatibleApi {
        /// The plugin.
        name: String,
        /// Its API.
        plugin: ApiVersion,
        /// The host's.
        host: ApiVersion,
    },
    /// The plugin failed at run time (could not connect, delivery failed).
    #[error("plugin {plugin} failed: {message}")]
    Failed {
        /// The plugin.
        plugin: String,
        /// What happened.
        message: String,
    },
}

/// Turns a plugin's JSON config into its typed config, naming the wrong field on failure.
pub fn parse_config<T: DeserializeOwned>(plugin: &str, config: Value) -> Result<T, PluginError> {
    serde_path_to_error::deserialize(config).map_err(|e| {
        let path = e.path().to_string();
        PluginError::InvalidConfig {
            plugin: plugin.to_owned(),
            field: path,
            message: e.into_inner().to_string(),
        }
    })
}

/// What the host lends to plugins it builds (tier 1 only).
#[derive(Clone, Debug, Default)]
pub struct HostContext {
    /// Where plugins may keep files (the daemon's data directory).
    pub data_dir: PathBuf,
}

/// How much an event matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Routine.
    Info,
    /// Worth a look.
    Warning,
    /// Someone should act.
    Critical,
}

/// Something that happened and is worth telling: a config applied, a rollout promoted or
/// rolled back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Dotted kind, the same as the audit action (`config.apply`, `rollout.rollback`).
    pub kind: String,
    /// How much it matters.
    pub severity: Severity,
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub actor: String,
    /// What it concerns.
    pub target: String,
    /// One line for a person.
    pub summary: String,
    /// Everything else.
    pub details: Value,
}

/// Delivers events. A failing notifier never blocks the action it reports.
#[async_trait]
pub trait Notifier: Send + Sync + 'static {
    /// Delivers one event.
    async fn notify(&self, event: &Event) -> Result<(), PluginError>;
}

/// Answers metric queries, for rollouts whose outcomes live in a metrics system.
#[async_trait]
pub trait MetricSource: Send + Sync + 'static {
    /// Evaluates `query` now and returns a scalar, or `None` when it has no data.
    async fn query_scalar(&self, query: &str) -> Result<Option<f64>, PluginError>;
}

/// Builds stores from JSON config.
#[async_trait]
pub trait StoreFactory: Send + Sync + 'static {
    /// What the plugin is.
    fn info(&self) -> PluginInfo;
    /// Opens a store.
    async fn build(&self, config: Value, host: &HostContext)
    -> Result<Arc<dyn Store>, PluginError>;
}

/// Builds notifiers from JSON config.
pub trait NotifierFactory: Send + Sync + 'static {
    /// What the plugin is.
    fn info(&self) -> PluginInfo;
    /// Builds a notifier.
    fn build(&self, config: Value, host: &HostContext) -> Result<Arc<dyn Notifier>, PluginError>;
    /// The events this notifier is told about when its configuration names none (the
    /// daemon's `events = [...]`). Default: every event.
    fn default_events(&self) -> crate::events::EventSelection {
        crate::events::EventSelection::All
    }
}

/// Builds metric sources from JSON config.
pub trait MetricSourceFactory: Send + Sync + 'static {
    /// What the plugin is.
    fn info(&self) -> PluginInfo;
    /// Builds a metric source.
    fn build(
        &self,
        config: Value,
        host: &HostContext,
    ) -> Result<Arc<dyn MetricSource>, PluginError>;
}

/// What a compiled-in plugin crate submits to `inventory`.
#[derive(Debug)]
pub struct Registration {
    /// Adds the crate's factories to a registry.
    pub register: fn(&mut Registry) -> Result<(), PluginError>,
}

inventory::collect!(Registration);

/// The plugins a host knows, by kind and name.
#[derive(Default)]
pub struct Registry {
    stores: BTreeMap<String, Arc<dyn StoreFactory>>,
    notifiers: BTreeMap<String, Arc<dyn NotifierFactory>>,
    metric_sources: BTreeMap<String, Arc<dyn MetricSourceFactory>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("stores", &self.stores.keys().collect::<Vec<_>>())
            .field("notifiers", &self.notifiers.keys().collect::<Vec<_>>())
            .field("metric_sources", &self.metric_sources.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn insert<F: ?Sized>(
    map: &mut BTreeMap<String, Arc<F>>,
    info: PluginInfo,
    factory: Arc<F>,
) -> Result<(), PluginError> {
    if !ApiVersion::HOST.accepts(info.api) {
        return Err(PluginError::IncompatibleApi {
            name: info.name,
            plugin: info.api,
            host: ApiVersion::HOST,
        });
    }
    if map.contains_key(&info.name) {
        return Err(PluginError::Duplicate { kind: info.kind, name: info.name });
    }
    map.insert(info.name, factory);
    Ok(())
}

fn lookup<'a, F: ?Sized>(
    map: &'a BTreeMap<String, Arc<F>>,
    kind: PluginKind,
    name: &str,
) -> Result<&'a Arc<F>, PluginError> {
    map.get(name).ok_or_else(|| PluginError::Unknown {
        kind,
        name: name.to_owned(),
        available: if map.is_empty() {
            "none".into()
        } else {
            map.keys().cloned().collect::<Vec<_>>().join(", ")
        },
    })
}

impl Registry {
    /// A registry with no plugins (for tests).
    pub fn empty() -> Self {
        Self::default()
    }

    /// A registry filled by every compiled-in plugin that submitted a [`Registration`].
    pub fn from_inventory() -> Result<Self, PluginError> {
        let mut r = Self::empty();
        for reg in inventory::iter::<Registration> {
            (reg.register)(&mut r)?;
        }
        Ok(r)
    }

    /// Adds a store plugin.
    pub fn add_store(&mut self, f: Arc<dyn StoreFactory>) -> Result<(), PluginError> {
        let info = f.info();
        insert(&mut self.stores, info, f)
    }

    /// Adds a notifier plugin.
    pub fn add_notifier(&mut self, f: Arc<dyn NotifierFactory>) -> Result<(), PluginError> {
        let info = f.info();
        insert(&mut self.notifiers, info, f)
    }

    /// Adds a metric source plugin.
    pub fn add_metric_source(
        &mut self,
        f: Arc<dyn MetricSourceFactory>,
    ) -> Result<(), PluginError> {
        let info = f.info();
        insert(&mut self.metric_sources, info, f)
    }

    /// Opens the store plugin `name` with `config`.
    pub async fn store(
        &self,
        name: &str,
        config: Value,
        host: &HostContext,
    ) -> Result<Arc<dyn Store>, PluginError> {
        lookup(&self.stores, PluginKind::Store, name)?.build(config, host).await
    }

    /// Builds the notifier plugin `name` with `config`.
    pub fn notifier(
        &self,
        name: &str,
        config: Value,
        host: &HostContext,
    ) -> Result<Arc<dyn Notifier>, PluginError> {
        lookup(&self.notifiers, PluginKind::Notifier, name)?.build(config, host)
    }

    /// The events the notifier plugin `name` is told about by default.
    pub fn notifier_default_events(
        &self,
        name: &str,
    ) -> Result<crate::events::EventSelection, PluginError> {
        Ok(lookup(&self.notifiers, PluginKind::Notifier, name)?.default_events())
    }

    /// Builds the metric source plugin `name` with `config`.
    pub fn metric_source(
        &self,
        name: &str,
        config: Value,
        host: &HostContext,
    ) -> Result<Arc<dyn MetricSource>, PluginError> {
        lookup(&self.metric_sources, PluginKind::MetricSource, name)?.build(config, host)
    }

    /// Every registered plugin, sorted by kind and name.
    pub fn describe(&self) -> Vec<PluginInfo> {
        let mut all: Vec<PluginInfo> = self
            .stores
            .values()
            .map(|f| f.info())
            .chain(self.notifiers.values().map(|f| f.info()))
            .chain(self.metric_sources.values().map(|f| f.info()))
            .collect();
        all.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Cfg {
        url: String,
        retries: u8,
    }

    struct Collect(Arc<Mutex<Vec<String>>>);
    #[async_trait]
    impl Notifier for Collect {
        async fn notify(&self, event: &Event) -> Result<(), PluginError> {
            self.0.lock().unwrap().push(event.kind.clone());
            Ok(())
        }
    }

    struct CollectFactory(Arc<Mutex<Vec<String>>>, ApiVersion);
    impl NotifierFactory for CollectFactory {
        fn info(&self) -> PluginInfo {
            PluginInfo {
                kind: PluginKind::Notifier,
                name: "collect".into(),
                version: "1.0.0".into(),
                api: self.1,
                description: "collects".into(),
                config_schema: serde_json::json!({"type": "object"}),
            }
        }
        fn build(&self, config: Value, _: &HostContext) -> Result<Arc<dyn Notifier>, PluginError> {
            let _: Cfg = parse_config("collect", config)?;
            Ok(Arc::new(Collect(self.0.clone())))
        }
    }

    #[test]
    fn bad_config_names_the_field() {
        let mut r = Registry::empty();
        r.add_notifier(Arc::new(CollectFactory(Default::default(), ApiVersion::HOST))).unwrap();
        let err = r
            .notifier(
                "collect",
                serde_json::json!({"url": "x", "retries": 300}),
                &Default::default(),
            )
            .err()
            .unwrap();
        match err {
            PluginError::InvalidConfig { field, .. } => assert_eq!(field, "retries"),
            other => panic!("{other}"),
        }
        let err = r
            .notifier(
                "collect",
                serde_json::json!({"url": "x", "retries": 1, "x": 1}),
                &Default::default(),
            )
            .err()
            .unwrap();
        assert!(err.to_string().contains("unknown field `x`"), "{err}");
    }

    #[test]
    fn unknown_duplicate_and_incompatible_plugins_are_refused() {
        let mut r = Registry::empty();
        let err = r.notifier("slack", Value::Null, &Default::default()).err().unwrap();
        assert!(err.to_string().contains("registered: none"), "{err}");
        r.add_notifier(Arc::new(CollectFactory(Default::default(), ApiVersion::HOST))).unwrap();
        let dup = r.add_notifier(Arc::new(CollectFactory(Default::default(), ApiVersion::HOST)));
        assert!(matches!(dup, Err(PluginError::Duplicate { .. })));
        let mut r2 = Registry::empty();
        let newer = ApiVersion { major: 1, minor: 9 };
        let err = r2.add_notifier(Arc::new(CollectFactory(Default::default(), newer))).unwrap_err();
        assert!(err.to_string().contains("targets plugin API 1.9"), "{err}");
    }

    #[tokio::test]
    async fn registered_notifier_delivers() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut r = Registry::empty();
        r.add_notifier(Arc::new(CollectFactory(seen.clone(), ApiVersion::HOST))).unwrap();
        let n = r
            .notifier("collect", serde_json::json!({"url": "x", "retries": 1}), &Default::default())
            .unwrap();
        n.notify(&Event {
            kind: "config.apply".into(),
            severity: Severity::Info,
            at: Utc::now(),
            actor: "a".into(),
            target: "t".into(),
            summary: "s".into(),
            details: Value::Null,
        })
        .await
        .unwrap();
        assert_eq!(*seen.lock().unwrap(), vec!["config.apply".to_string()]);
        assert_eq!(r.describe()[0].name, "collect");
    }
}
