//! `GET /v1/plugins`: every plugin of the daemon with its tier, version and health (read).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/plugins", get(list))
}

/// The answer of `GET /v1/plugins`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub(crate) struct PluginList {
    /// Every plugin: compiled in (registered, used or not) and loaded from files, sorted by
    /// kind and name.
    pub(crate) plugins: Vec<actuator_core::PluginStatus>,
}

/// Every plugin the daemon knows and how each is doing.
async fn list(State(st): State<AppState>) -> Json<PluginList> {
    Json(PluginList { plugins: st.plugins() })
}
