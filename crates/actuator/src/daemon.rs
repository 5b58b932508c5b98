//! `actuator serve`: assembles the plugins, the configuration manager and the HTTP API.

use actuator_config::ConfigManager;
use actuator_core::{Event, EventSelection, HostContext, Notifier, PluginError, Registry};
use actuator_server::AppState;
use anyhow::Context;
use async_trait::async_trait;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

use crate::settings::Settings;

/// A notifier that gives up after a deadline, so a slow plugin never holds up a change.
struct Deadline {
    inner: Arc<dyn Notifier>,
    name: String,
    limit: Duration,
}

#[async_trait]
impl Notifier for Deadline {
    async fn notify(&self, event: &Event) -> Result<(), PluginError> {
        match tokio::time::timeout(self.limit, self.inner.notify(event)).await {
            Ok(r) => r,
            Err(_) => Err(PluginError::Failed {
                plugin: self.name.clone(),
                message: format!("no answer within {:?}", self.limit),
            }),
        }
    }
}

/// Every plugin of the daemon: the compiled-in ones (registered; `in_use` when the settings
/// name them) and the ones loaded from files, with their live health.
struct PluginList {
    compiled: Vec<actuator_core::PluginStatus>,
    hosted: Vec<actuator_plugin_host::Loaded>,
    /// The store, when it is loaded from a file.
    store: Option<Arc<actuator_plugin_host::store::RemoteStore>>,
}

impl PluginList {
    fn new(
        registry: &Registry,
        settings: &Settings,
        hosted: Vec<actuator_plugin_host::Loaded>,
        store: Option<Arc<actuator_plugin_host::store::RemoteStore>>,
    ) -> Self {
        use actuator_core::{PluginHealth, PluginKind, PluginStatus, PluginTier};
        let compiled = registry
            .describe()
            .into_iter()
            .map(|p| {
                let in_use = match p.kind {
                    PluginKind::Store => settings.store.plugin == p.name,
                    PluginKind::Notifier => settings.notifiers.iter().any(|n| n.plugin == p.name),
                    PluginKind::MetricSource => {
                        settings.metric_sources.iter().any(|m| m.plugin == p.name)
                    }
                };
                PluginStatus {
                    kind: p.kind,
                    name: p.name,
                    tier: PluginTier::CompiledIn,
                    version: p.version,
                    health: PluginHealth::Healthy,
                    last_error: None,
                    restarts: 0,
                    in_use,
                    path: None,
                }
            })
            .collect();
        Self { compiled, hosted, store }
    }
}

impl actuator_core::PluginDirectory for PluginList {
    fn plugins(&self) -> Vec<actuator_core::PluginStatus> {
        let mut all: Vec<_> = self.compiled.clone();
        all.extend(self.hosted.iter().map(|h| h.plugin.status()));
        all.extend(self.store.iter().map(|s| s.status()));
        all.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        all
    }
}

/// A notifier told only about the events its `events = [...]` selects (or its plugin's
/// default selection).
struct Selective {
    inner: Arc<dyn Notifier>,
    selection: EventSelection,
}

#[async_trait]
impl Notifier for Selective {
    async fn notify(&self, event: &Event) -> Result<(), PluginError> {
        if !self.selection.allows(&event.kind) {
            return Ok(());
        }
        self.inner.notify(event).await
    }
}

/// Builds the notifiers of `settings`: each plugin with its config, behind its event
/// selection and a 5 s deadline. An unknown plugin, a bad config or an unknown event name is
/// an error naming the notifier.
pub(crate) fn build_notifiers(
    registry: &Registry,
    settings: &Settings,
    host: &HostContext,
) -> anyhow::Result<Vec<Arc<dyn Notifier>>> {
    let mut notifiers: Vec<Arc<dyn Notifier>> = Vec::new();
    for (i, n) in settings.notifiers.iter().enumerate() {
        let at = || format!("notifiers[{i}] ({})", n.plugin);
        let selection = match &n.events {
            Some(names) => EventSelection::from_names(&n.plugin, names),
            None => registry.notifier_default_events(&n.plugin),
        }
        .with_context(at)?;
        let inner = registry
            .notifier(&n.plugin, n.config.clone(), host)
            .with_context(|| format!("building {}", at()))?;
        tracing::info!(notifier = %n.plugin, events = ?selection.names(), "notifier ready");
        notifiers.push(Arc::new(Deadline {
            inner: Arc::new(Selective { inner, selection }),
            name: n.plugin.clone(),
            limit: Duration::from_secs(5),
        }));
    }
    Ok(notifiers)
}

/// Opens the store `[store] plugin` names: a `[[plugins]]` entry of kind store (loaded from
/// its file, exec or cdylib) or a compiled-in store plugin. A file store may not take the
/// name of a compiled-in one.
async fn open_store(
    registry: &Registry,
    settings: &Settings,
    host: &HostContext,
) -> anyhow::Result<(Arc<dyn actuator_core::Store>, FileStore)> {
    if settings.cluster.enabled {
        anyhow::bail!("cluster mode opens its store with open_cluster_store");
    }
    let Some(decl) = crate::settings::check_store_choice(&settings.store, &settings.plugins)?
    else {
        let store = registry
            .store(&settings.store.plugin, settings.store.config.clone(), host)
            .await
            .context("opening the store")?;
        return Ok((store, None));
    };
    if registry
        .describe()
        .iter()
        .any(|p| p.kind == actuator_core::PluginKind::Store && p.name == decl.name)
    {
        anyhow::bail!(
            "plugins.{0}: {0} is the name of a compiled-in store; give the store loaded from {1} another name",
            decl.name,
            decl.path.display()
        );
    }
    let store = actuator_plugin_host::store::load_store(decl.spec()).await.with_context(|| {
        format!("opening the store: loading plugin {:?} ({})", decl.name, decl.path.display())
    })?;
    tracing::info!(store = %decl.name, path = %decl.path.display(), "the store is a plugin loaded from a file");
    Ok((store.clone(), Some(store)))
}

/// Builds the compiled-in metric sources of `settings` (`[[metric_sources]]`), by the name
/// rollouts give them. An unknown plugin or a bad config is an error naming the entry.
pub(crate) fn build_metric_sources(
    registry: &Registry,
    settings: &Settings,
    host: &HostContext,
) -> anyhow::Result<std::collections::BTreeMap<String, Arc<dyn actuator_core::MetricSource>>> {
    let mut out = std::collections::BTreeMap::new();
    for (i, m) in settings.metric_sources.iter().enumerate() {
        let source = registry
            .metric_source(&m.plugin, m.config.clone(), host)
            .with_context(|| format!("metric_sources[{i}] ({})", m.name()))?;
        tracing::info!(metric_source = %m.name(), plugin = %m.plugin, "metric source ready");
        out.insert(m.name().to_owned(), source);
    }
    Ok(out)
}

/// Builds the application state from settings and the compiled-in plugins, with the
/// rollout engine resumed and attached.
pub(crate) async fn build_state(settings: &Settings) -> anyhow::Result<AppState> {
    let parts = build_parts(settings).await?;
    let engine = parts.engines.build();
    engine.start().await.context("resuming the rollouts in the store")?;
    parts.state.attach_engine(engine);
    Ok(parts.state)
}

/// Builds rollout engines over one configuration manager and routing book: one for a
/// single daemon, a fresh one at each election of a replica.
#[derive(Clone)]
pub(crate) struct EngineFactory {
    config: ConfigManager,
    routes: actuator_server::RouteBook,
    notifiers: Vec<Arc<dyn Notifier>>,
    settings: actuator_engine::EngineSettings,
    metric_sources: std::collections::BTreeMap<String, Arc<dyn actuator_core::MetricSource>>,
}

impl EngineFactory {
    /// A new engine, not yet started.
    pub(crate) fn build(&self) -> actuator_engine::Engine {
        let engine = actuator_engine::Engine::new(
            self.config.clone(),
            Arc::new(self.routes.clone()),
            self.notifiers.clone(),
            self.settings.clone(),
        );
        engine.set_metric_sources(self.metric_sources.clone());
        engine
    }
}

/// What a replica in cluster mode keeps beside the application state.
pub(crate) struct ClusterParts {
    /// The store, unfenced (the election and the bookkeeping run on it).
    pub(crate) store: actuator_store_postgres::PostgresStore,
    /// The fencing token the state's store writes with.
    pub(crate) fence: actuator_store_postgres::Fence,
}

/// What [`build_parts`] builds.
struct Parts {
    state: AppState,
    engines: EngineFactory,
    file_store: FileStore,
    /// The store without a fence: writes a replica makes whether or not it leads.
    unfenced: Arc<dyn actuator_core::Store>,
    cluster: Option<ClusterParts>,
}

/// Opens the PostgreSQL store of a replica: the store itself and a fenced handle on it,
/// whose writes commit only while this replica leads.
async fn open_cluster_store(
    settings: &Settings,
) -> anyhow::Result<(Arc<dyn actuator_core::Store>, Arc<dyn actuator_core::Store>, ClusterParts)> {
    let store = actuator_store_postgres::PostgresStoreFactory::open(settings.store.config.clone())
        .await
        .context("opening the store")?;
    let fence = actuator_store_postgres::Fence::new();
    let fenced: Arc<dyn actuator_core::Store> = Arc::new(store.with_fence(fence.clone()));
    let unfenced: Arc<dyn actuator_core::Store> = Arc::new(store.clone());
    Ok((fenced, unfenced, ClusterParts { store, fence }))
}

/// A store loaded from a file, kept to stop its plugin when the daemon stops.
type FileStore = Option<Arc<actuator_plugin_host::store::RemoteStore>>;

/// The application state (routing book and tokens loaded from the store), the rollout
/// engine, not yet started, and the store when it is a plugin loaded from a file.
async fn build_parts(settings: &Settings) -> anyhow::Result<Parts> {
    // Counters and histograms from the first request on, for `/metrics`.
    let _ = actuator_server::metrics::install();
    let registry = Registry::from_inventory().context("loading compiled-in plugins")?;
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating data directory {}", settings.data_dir.display()))?;
    let host = HostContext { data_dir: settings.data_dir.clone() };
    let (store, unfenced, file_store, cluster) = if settings.cluster.enabled {
        let (fenced, unfenced, parts) = open_cluster_store(settings).await?;
        (fenced, unfenced, None, Some(parts))
    } else {
        let (store, file_store) = open_store(&registry, settings, &host).await?;
        (store.clone(), store, file_store, None)
    };
    let mut notifiers = build_notifiers(&registry, settings, &host)?;
    let mut metric_sources = build_metric_sources(&registry, settings, &host)?;
    let mut hosted = Vec::new();
    for decl in settings.plugins.iter().filter(|d| d.kind != actuator_core::PluginKind::Store) {
        let loaded = actuator_plugin_host::load(decl.spec()).await.with_context(|| {
            format!("loading plugin {:?} ({} {})", decl.name, decl.kind, decl.path.display())
        })?;
        if loaded.kind == actuator_core::PluginKind::Notifier {
            // Names checked with the settings; every event when none are chosen.
            let selection = match &decl.events {
                Some(names) => EventSelection::from_names(&decl.name, names)
                    .with_context(|| format!("plugins.{}.events", decl.name))?,
                None => EventSelection::All,
            };
            notifiers.push(Arc::new(Deadline {
                inner: Arc::new(Selective { inner: loaded.notifier(), selection }),
                name: decl.name.clone(),
                // Room for a restart (start, then the call) behind the plugin's own limits.
                limit: Duration::from_secs(5)
                    .max(Duration::from_millis(decl.timeout_ms + decl.start_timeout_ms)),
            }));
        }
        if loaded.kind == actuator_core::PluginKind::MetricSource {
            // Names checked with the settings: unique among all metric sources.
            metric_sources.insert(decl.name.clone(), loaded.metric_source());
        }
        hosted.push(loaded);
    }
    let directory = Arc::new(PluginList::new(&registry, settings, hosted, file_store.clone()));
    let config = ConfigManager::new(store, notifiers.clone(), settings.config.clone());
    // The routing table is derived from the store before the first request is served.
    let auth = actuator_server::AuthSettings {
        allow_open: settings.listen.ip().is_loopback(),
        allowed_hosts: settings.server.allowed_hosts.clone(),
        cors_origins: settings.server.cors_origins.clone(),
    };
    let state = AppState::load_with(config.clone(), auth, settings.server.limits())
        .await
        .context("building the routing table and the token table from the store")?;
    state.set_plugins(directory);
    settings.engine.validate().context("checking the [engine] settings")?;
    let engines = EngineFactory {
        config,
        routes: state.routes().clone(),
        notifiers,
        settings: settings.engine.clone(),
        metric_sources,
    };
    match settings.engine.durability {
        actuator_engine::Durability::Batch => tracing::info!(
            durability = "batch",
            "an observation batch is on disk before it is acknowledged"
        ),
        actuator_engine::Durability::Checkpoint => tracing::warn!(
            durability = "checkpoint",
            checkpoint_ms = settings.engine.checkpoint_ms,
            "observations are acknowledged before they are durable: a crash loses up to checkpoint_ms of them"
        ),
    }
    Ok(Parts { state, engines, file_store, unfenced, cluster })
}

/// How often the routing table is rebuilt from the store, to pick up changes written by
/// another process (another replica sharing the store) or a refresh that failed.
pub(crate) const ROUTE_RESYNC: Duration = Duration::from_secs(5);

/// Name of the admin token `--init-admin-token` makes.
const INIT_ADMIN_NAME: &str = "admin";
/// Name of the admin token whose secret is `ACTUATOR_ADMIN_TOKEN`.
const ENV_ADMIN_NAME: &str = "admin-env";

/// Makes the first admin token: from `ACTUATOR_ADMIN_TOKEN` (kept in step with the variable:
/// a changed secret replaces the old token), and with `--init-admin-token` a generated one
/// when the store has no admin token (its secret printed once on stdout).
///
/// `store` is unfenced: every replica of a cluster makes the token at start, whether or not
/// it leads; one that finds another replica made it at the same moment takes that one.
pub(crate) async fn bootstrap_tokens(
    state: &AppState,
    store: &Arc<dyn actuator_core::Store>,
    init_admin: bool,
) -> anyhow::Result<()> {
    use actuator_core::token::{NewToken, Role, generate_secret, hash_secret, validate_secret};
    use actuator_core::{AuditDraft, StoreError};
    if let Some(secret) = std::env::var("ACTUATOR_ADMIN_TOKEN").ok().filter(|s| !s.is_empty()) {
        validate_secret(&secret).context("ACTUATOR_ADMIN_TOKEN")?;
        let hash = hash_secret(&secret);
        let tokens = store.list_tokens().await.context("reading API tokens")?;
        if !tokens.iter().any(|t| t.hash == hash) {
            if tokens.iter().any(|t| t.name == ENV_ADMIN_NAME) {
                store
                    .revoke_token(
                        ENV_ADMIN_NAME,
                        AuditDraft::success("serve", "token.revoke", ENV_ADMIN_NAME).with_metadata(
                            serde_json::json!({"why": "ACTUATOR_ADMIN_TOKEN changed"}),
                        ),
                    )
                    .await
                    .context("replacing the admin token of ACTUATOR_ADMIN_TOKEN")?;
            }
            let made = store
                .create_token(
                    NewToken { name: ENV_ADMIN_NAME.into(), role: Role::Admin, hash: hash.clone() },
                    AuditDraft::success("serve", "token.create", ENV_ADMIN_NAME).with_metadata(
                        serde_json::json!({"role": "admin", "from": "ACTUATOR_ADMIN_TOKEN"}),
                    ),
                )
                .await;
            match made {
                Ok(_) => tracing::info!(
                    token = ENV_ADMIN_NAME,
                    "admin token from ACTUATOR_ADMIN_TOKEN stored"
                ),
                // Another replica on the same database stored the same secret meanwhile.
                Err(StoreError::AlreadyExists { .. })
                    if store
                        .list_tokens()
                        .await
                        .context("reading API tokens")?
                        .iter()
                        .any(|t| t.hash == hash) => {}
                Err(e) => {
                    return Err(e).context("storing the admin token of ACTUATOR_ADMIN_TOKEN");
                }
            }
        }
    }
    if init_admin {
        let tokens = store.list_tokens().await.context("reading API tokens")?;
        if tokens.iter().any(|t| t.role == Role::Admin) {
            tracing::info!("--init-admin-token: an admin token exists already; none made");
        } else {
            let secret = generate_secret();
            let made = store
                .create_token(
                    NewToken {
                        name: INIT_ADMIN_NAME.into(),
                        role: Role::Admin,
                        hash: hash_secret(&secret),
                    },
                    AuditDraft::success("serve", "token.create", INIT_ADMIN_NAME).with_metadata(
                        serde_json::json!({"role": "admin", "from": "--init-admin-token"}),
                    ),
                )
                .await;
            match made {
                Ok(_) => println!("admin token {INIT_ADMIN_NAME} (shown only now): {secret}"),
                Err(StoreError::AlreadyExists { .. }) => anyhow::bail!(
                    "--init-admin-token: a token named {INIT_ADMIN_NAME} exists but is not an admin; revoke it first"
                ),
                Err(e) => return Err(e).context("storing the initial admin token"),
            }
        }
    }
    state.reload_tokens().await.context("reading API tokens")?;
    Ok(())
}

/// Binds, serves until Ctrl-C or SIGTERM, and drains.
pub(crate) async fn serve(settings: Settings, init_admin: bool) -> anyhow::Result<()> {
    let Parts { state, engines, file_store, unfenced, cluster } = build_parts(&settings).await?;
    bootstrap_tokens(&state, &unfenced, init_admin).await?;
    if state.tokens().is_empty() {
        if !settings.listen.ip().is_loopback() {
            anyhow::bail!(
                "refusing to listen on {} without API tokens: anyone who reaches the port could change configs and rollouts. Make an admin token with `actuator serve --init-admin-token` or ACTUATOR_ADMIN_TOKEN, or listen on 127.0.0.1",
                settings.listen
            );
        }
        tracing::warn!(
            listen = %settings.listen,
            "no API tokens: the API is open to every process on this machine (local use only); make one with `actuator token create` or --init-admin-token to require tokens"
        );
    }
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding {}", settings.listen))?;
    let addr: SocketAddr = listener.local_addr()?;
    if let Some(parts) = cluster {
        return crate::cluster::serve(settings, state, engines, parts, listener, addr).await;
    }
    let _resync = state.routes().spawn_resync(ROUTE_RESYNC);
    let _tokens = state.tokens().spawn_resync(state.store().clone(), ROUTE_RESYNC);
    tracing::info!(%addr, data_dir = %settings.data_dir.display(), store = %settings.store.plugin, "actuator listening; resolve is served while the stored rollouts resume");
    // Resolve and OFREP answer from the routing book (already loaded) while the engine
    // resumes every stored rollout's analysis; the rollout routes answer 503 `resuming` until
    // it is attached.
    state.mark_resuming();
    let server = tokio::spawn(actuator_server::serve(listener, state.clone(), shutdown_signal()));
    let t0 = std::time::Instant::now();
    let engine = engines.build();
    engine.start().await.context("resuming the rollouts in the store")?;
    state.attach_engine(engine);
    tracing::info!(secs = t0.elapsed().as_secs_f64(), "the stored rollouts are resumed");
    // One line on stdout that scripts (and the tests) read to learn the bound address, once
    // every route answers.
    println!("actuator listening on http://{addr}");
    server.await.context("the HTTP server task")?.context("serving HTTP")?;
    if let Some(engine) = state.engine() {
        engine.stop().await.context("stopping the rollout engine")?;
    }
    if let Some(store) = file_store {
        // After the engine's last write: the plugin finishes what it runs, then exits.
        store.shutdown().await;
    }
    tracing::info!("actuator stopped");
    Ok(())
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
    tracing::info!("shutdown requested; draining in-flight requests");
}

/// Starts logging.
pub(crate) fn init_logging(format: &str, filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    // Colour codes only where a person reads them: a log file or a collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = if format == "json" { builder.json().try_init() } else { builder.try_init() };
}

#[cfg(test)]
mod tests {
    use super::*;
    use actuator_core::plugin::NotifierFactory;
    use actuator_core::{PluginInfo, PluginKind, Severity};
    use std::sync::Mutex;

    /// Collects the kinds it is told about; selects `rolled_back` by default.
    struct Collect(Arc<Mutex<Vec<String>>>);
    #[async_trait]
    impl Notifier for Collect {
        async fn notify(&self, event: &Event) -> Result<(), PluginError> {
            self.0.lock().unwrap().push(event.kind.clone());
            Ok(())
        }
    }
    struct CollectFactory(Arc<Mutex<Vec<String>>>);
    impl NotifierFactory for CollectFactory {
        fn info(&self) -> PluginInfo {
            PluginInfo {
                kind: PluginKind::Notifier,
                name: "collect".into(),
                version: "1.0.0".into(),
                api: actuator_core::ApiVersion::HOST,
                description: "collects".into(),
                config_schema: serde_json::json!({}),
            }
        }
        fn build(
            &self,
            _: serde_json::Value,
            _: &HostContext,
        ) -> Result<Arc<dyn Notifier>, PluginError> {
            Ok(Arc::new(Collect(self.0.clone())))
        }
        fn default_events(&self) -> EventSelection {
            EventSelection::from_names("collect", &["rolled_back"]).unwrap()
        }
    }

    fn event(kind: &str) -> Event {
        Event {
            kind: kind.into(),
            severity: Severity::Info,
            at: chrono::Utc::now(),
            actor: "t".into(),
            target: "r".into(),
            summary: String::new(),
            details: serde_json::Value::Null,
        }
    }

    async fn told(events: Option<Vec<&str>>) -> anyhow::Result<Vec<String>> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut registry = Registry::empty();
        registry.add_notifier(Arc::new(CollectFactory(seen.clone())))?;
        let toml = match events {
            Some(e) => format!("[[notifiers]]\nplugin = \"collect\"\nevents = {e:?}"),
            None => "[[notifiers]]\nplugin = \"collect\"".to_owned(),
        };
        let settings: Settings = toml::from_str(&toml)?;
        let built = build_notifiers(&registry, &settings, &HostContext::default())?;
        for kind in [
            "rollout.start",
            "rollout.promote",
            "rollout.rollback",
            "rollout.rolled_back",
            "rollout.fail",
            "slot.create",
        ] {
            built[0].notify(&event(kind)).await?;
        }
        let got = seen.lock().unwrap().clone();
        Ok(got)
    }

    #[tokio::test]
    async fn each_notifier_is_told_only_its_selected_events() {
        assert_eq!(told(None).await.unwrap(), vec!["rollout.rollback", "rollout.rolled_back"]);
        assert_eq!(
            told(Some(vec!["rollout_started", "failed"])).await.unwrap(),
            vec!["rollout.start", "rollout.fail"]
        );
        assert_eq!(told(Some(vec!["all"])).await.unwrap().len(), 6);
        let err = told(Some(vec!["failed", "exploded"])).await.unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("notifiers[0] (collect)") && msg.contains("\"exploded\""), "{msg}");
    }
}
