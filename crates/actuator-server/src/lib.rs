//! The actuator's HTTP API, as an axum [`Router`] over shared [`AppState`].
//!
//! Every error has one JSON shape, `{"error": {"code": "...", "message": "..."}}`, where
//! `code` is stable and machine-readable and `message` tells a person what to do.
//! Request bodies are limited to [`MAX_BODY_BYTES`].
//!
//! Besides the management API under `/v1`, it answers "which config for this request?":
//! `POST /v1/resolve` (single or batch) and the OpenFeature Remote Evaluation Protocol under
//! `/ofrep/v1` (single and bulk evaluation, ETag revalidation, change notification by
//! server-sent events). Both resolve against a [`RouteBook`]: a lock-free routing table
//! derived from the store, refreshed after every change.

mod auth;
pub mod cluster;
mod error;
mod extract;
mod forward;
mod listen;
mod masking;
pub mod metrics;
pub mod openapi;
mod routes;
mod routing;
mod verify_jobs;

/// The routing book is where the engine's changes land: it re-reads a slot's route from
/// the store after each persisted transition.
#[async_trait::async_trait]
impl actuator_engine::RouteSink for RouteBook {
    async fn refresh_slot(&self, slot: &actuator_core::SlotName) {
        self.refresh_slot_or_log(slot).await;
    }

    /// More than a few slots: one rebuild of the whole table (one pass over the store) costs
    /// less than a refresh per slot.
    async fn refresh_slots(&self, slots: &[actuator_core::SlotName]) {
        if slots.len() <= REFRESH_ONE_BY_ONE {
            for slot in slots {
                self.refresh_slot_or_log(slot).await;
            }
        } else if let Err(e) = self.rebuild_all().await {
            tracing::error!(slots = slots.len(), error = %e, "route rebuild failed; the resync will retry");
        }
    }

    /// A start resumed rollouts without writing: when the table was already built from the
    /// store it holds their stored routes, so it is not rebuilt a second time (later changes
    /// come through [`RouteBook::refresh_slot`], drift through the periodic resync).
    async fn resumed(&self, slots: &[actuator_core::SlotName]) {
        if !self.built() {
            actuator_engine::RouteSink::refresh_slots(self, slots).await;
        }
    }
}

/// Up to this many slots are refreshed one by one; more are rebuilt in one pass.
const REFRESH_ONE_BY_ONE: usize = 8;

use actuator_config::ConfigManager;
use actuator_core::Store;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

pub use auth::{Access, AuthSettings, OPEN_ACTOR, Principal, TokenTable, access};
pub use cluster::{ClusterStatus, ClusterView, LeaderInfo, ReplicaInfo, ReplicaSelf};
pub use error::ApiError;
pub use forward::{FORWARD_TIMEOUT, FORWARDED_BY_HEADER, needs_leader};
pub use listen::{ServerLimits, refused_connections};
pub use routes::ofrep::{OFREP_EVENTS_PATH, OFREP_MAX_BODY_BYTES};
pub use routes::resolve::MAX_BATCH;
pub use routes::rollouts::MAX_OBSERVATION_BODY_BYTES;
pub use routing::{RouteBook, RouteError, RouteEvent};
pub use verify_jobs::MAX_VERIFY_JOBS;

/// Largest request body accepted, in bytes (1 MiB).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: ConfigManager,
    routes: RouteBook,
    /// The rollout engine while this process runs one: always in a single daemon, only
    /// while leading in a cluster (replaced at each election).
    engine: std::sync::RwLock<Option<actuator_engine::Engine>>,
    /// The cluster this daemon is a replica of, when it runs in cluster mode.
    cluster: std::sync::OnceLock<Arc<dyn ClusterView>>,
    /// The client that forwards requests to the leader.
    forwarder: std::sync::OnceLock<forward::Forwarder>,
    /// The engine is resuming the stored rollouts and will be attached: resolve is served
    /// meanwhile, and the rollout routes ask callers to retry.
    resuming: std::sync::atomic::AtomicBool,
    auth: auth::Auth,
    limits: ServerLimits,
    /// One permit per open event-stream subscriber.
    subscribers: Arc<tokio::sync::Semaphore>,
    /// Held while an audit verification runs, incremental or full: one at a time.
    verifying: Arc<tokio::sync::Mutex<()>>,
    /// The last full verification jobs.
    verify_jobs: verify_jobs::VerifyJobs,
    /// The daemon's plugins, for `GET /v1/plugins`.
    plugins: std::sync::OnceLock<Arc<dyn actuator_core::PluginDirectory>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.inner.config)
            .field("routes", &self.inner.routes)
            .finish()
    }
}

impl AppState {
    /// State over a configuration manager (which holds the store and notifiers) and a routing
    /// book, which should read the same store.
    /// The daemon is open (no authentication) until a token is stored.
    pub fn new(config: ConfigManager, routes: RouteBook) -> Self {
        Self::with_auth(config, routes, AuthSettings::default())
    }

    /// State with authentication settings; the token table starts empty (see
    /// [`AppState::reload_tokens`]).
    pub fn with_auth(config: ConfigManager, routes: RouteBook, settings: AuthSettings) -> Self {
        Self::with_options(config, routes, settings, ServerLimits::default())
    }

    /// State with authentication settings and limits on connections and subscribers.
    pub fn with_options(
        config: ConfigManager,
        routes: RouteBook,
        settings: AuthSettings,
        limits: ServerLimits,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                routes,
                engine: std::sync::RwLock::new(None),
                cluster: std::sync::OnceLock::new(),
                forwarder: std::sync::OnceLock::new(),
                resuming: std::sync::atomic::AtomicBool::new(false),
                auth: auth::Auth { settings, tokens: TokenTable::default() },
                limits,
                subscribers: Arc::new(tokio::sync::Semaphore::new(limits.max_sse_subscribers)),
                verifying: Arc::default(),
                verify_jobs: verify_jobs::VerifyJobs::default(),
                plugins: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Tells the state where `GET /v1/plugins` reads the daemon's plugins (once; a second call
    /// is ignored).
    pub fn set_plugins(&self, directory: Arc<dyn actuator_core::PluginDirectory>) {
        let _ = self.inner.plugins.set(directory);
    }

    /// Every plugin with its health (empty until [`AppState::set_plugins`]).
    pub fn plugins(&self) -> Vec<actuator_core::PluginStatus> {
        self.inner.plugins.get().map(|d| d.plugins()).unwrap_or_default()
    }

    /// The limits on connections and subscribers.
    pub fn limits(&self) -> ServerLimits {
        self.inner.limits
    }

    /// The right to run an audit verification, `None` while one runs; a full verification
    /// job holds it in its task.
    pub(crate) fn verify_guard(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        Arc::clone(&self.inner.verifying).try_lock_owned().ok()
    }

    /// The full verification jobs.
    pub(crate) fn verify_jobs(&self) -> &verify_jobs::VerifyJobs {
        &self.inner.verify_jobs
    }

    /// A permit for one more event-stream subscriber, `None` at the limit.
    pub(crate) fn subscriber_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.inner.subscribers.clone().try_acquire_owned().ok()
    }

    /// State over a configuration manager, with a routing book over its store, built.
    ///
    /// # Errors
    /// [`RouteError`] when the store cannot be read.
    pub async fn load(config: ConfigManager) -> Result<Self, RouteError> {
        Self::load_with(config, AuthSettings::default(), ServerLimits::default()).await
    }

    /// Like [`AppState::load`], with authentication settings and the token table read.
    ///
    /// # Errors
    /// [`RouteError`] when the store cannot be read.
    pub async fn load_with(
        config: ConfigManager,
        settings: AuthSettings,
        limits: ServerLimits,
    ) -> Result<Self, RouteError> {
        let routes = RouteBook::load(Arc::clone(config.store())).await?;
        let st = Self::with_options(config, routes, settings, limits);
        st.reload_tokens().await.map_err(RouteError::Store)?;
        Ok(st)
    }

    /// Re-reads the API tokens from the store; returns how many there are.
    ///
    /// # Errors
    /// The store's error; the table keeps what it had.
    pub async fn reload_tokens(&self) -> Result<usize, actuator_core::StoreError> {
        self.inner.auth.tokens.reload(self.store().as_ref()).await
    }

    /// The token table (to resync it from the store periodically).
    pub fn tokens(&self) -> &TokenTable {
        &self.inner.auth.tokens
    }

    pub(crate) fn auth(&self) -> &auth::Auth {
        &self.inner.auth
    }

    /// Attaches the rollout engine; the rollout and observation routes answer 503 until then.
    /// An engine attached before is replaced (a replica attaches a fresh one at each
    /// election); stop it first.
    pub fn attach_engine(&self, engine: actuator_engine::Engine) {
        *self.inner.engine.write().unwrap_or_else(|p| p.into_inner()) = Some(engine);
        self.inner.resuming.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Detaches the rollout engine (a replica that stops leading) and returns it, to be
    /// stopped; the rollout routes answer 503 `not_running` (or are forwarded) from now on.
    pub fn detach_engine(&self) -> Option<actuator_engine::Engine> {
        self.inner.resuming.store(false, std::sync::atomic::Ordering::SeqCst);
        self.inner.engine.write().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Marks the engine as resuming the stored rollouts (it is attached when done): until
    /// then the rollout and observation routes answer 503 with `Retry-After` and code
    /// `resuming`, while resolve and OFREP already answer from the routing book.
    pub fn mark_resuming(&self) {
        if self.engine().is_none() {
            self.inner.resuming.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Makes this daemon a replica of `cluster` (once; a second call is ignored): requests
    /// only the leader serves are forwarded to it, and `GET /v1/cluster` describes it.
    pub fn set_cluster(&self, cluster: Arc<dyn ClusterView>) {
        let _ = self.inner.cluster.set(cluster);
    }

    /// The cluster, in cluster mode.
    pub fn cluster(&self) -> Option<&Arc<dyn ClusterView>> {
        self.inner.cluster.get()
    }

    pub(crate) fn forwarder(&self) -> &forward::Forwarder {
        self.inner.forwarder.get_or_init(forward::Forwarder::new)
    }

    /// Whether the engine is still resuming the stored rollouts.
    pub fn resuming(&self) -> bool {
        self.inner.resuming.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The rollout engine, while one is attached (a handle: clones share the engine).
    pub fn engine(&self) -> Option<actuator_engine::Engine> {
        self.inner.engine.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The routing table and its source.
    pub fn routes(&self) -> &RouteBook {
        &self.inner.routes
    }

    /// The configuration manager.
    pub fn config(&self) -> &ConfigManager {
        &self.inner.config
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        self.inner.config.store()
    }
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    let cors = match state.auth().settings.cors() {
        Ok(c) => c,
        Err(e) => {
            // Checked when the settings are read; an invalid origin here grants nothing.
            tracing::error!(error = %e, "CORS disabled");
            None
        }
    };
    let app = Router::new()
        .merge(routes::health::router())
        .merge(routes::config::router())
        .merge(routes::resolve::router())
        .merge(routes::ofrep::router())
        .merge(routes::rollouts::router())
        .merge(routes::rollout_events::router())
        .merge(routes::session::router())
        .merge(routes::ui::router())
        .merge(routes::tokens::router())
        .merge(routes::plugins::router())
        .merge(routes::cluster::router())
        .route("/metrics", axum::routing::get(metrics::scrape))
        .route("/openapi.json", axum::routing::get(openapi::serve))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::authorize))
        // Before authentication: a follower hands what only the leader serves to the leader,
        // which authenticates and audits the caller itself.
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), forward::forward))
        .route_layer(axum::middleware::from_fn(metrics::track))
        .method_not_allowed_fallback(routes::method_not_allowed)
        .fallback(routes::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state);
    match cors {
        Some(c) => app.layer(c),
        None => app,
    }
}

/// Serves the API on `listener` under the state's [`ServerLimits`] until `shutdown`
/// resolves, then ends the event streams and drains in-flight requests.
///
/// # Errors
/// When the listener fails.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let routes = state.routes().clone();
    let shutdown = async move {
        shutdown.await;
        routes.close();
    };
    let limits = state.limits();
    listen::serve_limited(listener, router(state), limits, shutdown).await
}
