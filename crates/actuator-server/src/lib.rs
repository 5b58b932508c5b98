//! The actuator's HTTP API, as an axum [`Router`] over shared [`AppState`].
//!
//! Every error has one JSON shape, `{"error": {"code": "...", "message": "..."}}`, where
//! `code` is stable and machine-readable and `message` tells a person what to do.
//! Request bodies are limited to [`MAX_BODY_BYTES`].

mod error;
mod extract;
mod routes;

use actuator_config::ConfigManager;
use actuator_core::Store;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

pub use error::ApiError;

/// Largest request body accepted, in bytes (1 MiB).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: ConfigManager,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("config", &self.inner.config).finish()
    }
}

impl AppState {
    /// State over a configuration manager (which holds the store and notifiers).
    pub fn new(config: ConfigManager) -> Self {
        Self { inner: Arc::new(Inner { config }) }
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
    Router::new()
        .merge(routes::health::router())
        .merge(routes::config::router())
        .fallback(routes::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}
