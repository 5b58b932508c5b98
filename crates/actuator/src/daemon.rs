//! `actuator serve`: assembles the plugins, the configuration manager and the HTTP API.

use actuator_config::ConfigManager;
use actuator_core::{Event, HostContext, Notifier, PluginError, Registry};
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

/// Builds the application state from settings and the compiled-in plugins.
pub(crate) async fn build_state(settings: &Settings) -> anyhow::Result<AppState> {
    let registry = Registry::from_inventory().context("loading compiled-in plugins")?;
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating data directory {}", settings.data_dir.display()))?;
    let host = HostContext { data_dir: settings.data_dir.clone() };
    let store = registry
        .store(&settings.store.plugin, settings.store.config.clone(), &host)
        .await
        .context("opening the store")?;
    let mut notifiers: Vec<Arc<dyn Notifier>> = Vec::new();
    for n in &settings.notifiers {
        let inner =
            registry.notifier(&n.plugin, n.config.clone(), &host).context("building a notifier")?;
        notifiers.push(Arc::new(Deadline {
            inner,
            name: n.plugin.clone(),
            limit: Duration::from_secs(5),
        }));
    }
    let config = ConfigManager::new(store, notifiers.clone(), settings.config.clone());
    // The routing table is derived from the store before the first request is served.
    let state = AppState::load(config.clone())
        .await
        .context("building the routing table from the store")?;
    settings.engine.validate().context("checking the [engine] settings")?;
    let engine = actuator_engine::Engine::new(
        config,
        Arc::new(state.routes().clone()),
        notifiers,
        settings.engine.clone(),
    );
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
    engine.start().await.context("resuming the rollouts in the store")?;
    state.attach_engine(engine);
    Ok(state)
}

/// How often the routing table is rebuilt from the store, to pick up changes written by
/// another process (another replica sharing the store) or a refresh that failed.
const ROUTE_RESYNC: Duration = Duration::from_secs(5);

/// Binds, serves until Ctrl-C or SIGTERM, and drains.
pub(crate) async fn serve(settings: Settings) -> anyhow::Result<()> {
    let state = build_state(&settings).await?;
    let _resync = state.routes().spawn_resync(ROUTE_RESYNC);
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding {}", settings.listen))?;
    let addr: SocketAddr = listener.local_addr()?;
    tracing::info!(%addr, data_dir = %settings.data_dir.display(), store = %settings.store.plugin, "actuator listening");
    // One line on stdout that scripts (and the tests) read to learn the bound address.
    println!("actuator listening on http://{addr}");
    actuator_server::serve(listener, state.clone(), shutdown_signal())
        .await
        .context("serving HTTP")?;
    if let Some(engine) = state.engine() {
        engine.stop().await.context("stopping the rollout engine")?;
    }
    tracing::info!("actuator stopped");
    Ok(())
}

async fn shutdown_signal() {
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
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if format == "json" { builder.json().try_init() } else { builder.try_init() };
}
