//! Liveness and readiness.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz))
}

/// The process is up.
async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The store answers and the control loop runs.
async fn readyz(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    if let Some(engine) = st.engine()
        && !engine.loop_alive()
    {
        return Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the rollout control loop is not running: no rollout is being looked at",
        ));
    }
    match st.store().audit_head().await {
        Ok(head) => {
            Ok(Json(json!({"status": "ready", "audit_entries": head.map_or(0, |h| h.seq)})))
        }
        Err(e) => Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            format!("the store does not answer: {e}"),
        )),
    }
}
