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

/// The store answers and can take writes, and the control loop runs.
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
    let not_ready = |message: String| {
        ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, "not_ready", message)
    };
    // A cheap read, bounded: an unreachable store fails readiness quickly.
    let head = match tokio::time::timeout(STORE_CHECK, st.store().audit_head()).await {
        Ok(Ok(head)) => head,
        Ok(Err(e)) => return Err(not_ready(format!("the store does not answer: {e}"))),
        Err(_) => {
            return Err(not_ready(format!(
                "the store did not answer within {} ms",
                STORE_CHECK.as_millis()
            )));
        }
    };
    store_writable(&st).await?;
    // Resolve is served from the routing book while the engine resumes the stored rollouts.
    let rollouts = if st.resuming() { "resuming" } else { "resumed" };
    Ok(Json(json!({
        "status": "ready",
        "audit_entries": head.map_or(0, |h| h.seq),
        "rollouts": rollouts,
        "cluster": cluster_summary(&st),
    })))
}

/// How long readiness waits for the store's answer.
const STORE_CHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// `/readyz`'s `cluster`: this replica's role, the leader's id and the epoch (its own when
/// it leads, else the last one read). A daemon not in cluster mode is its own leader, with
/// no epoch.
fn cluster_summary(st: &AppState) -> Value {
    let Some(c) = st.cluster() else {
        return json!({"role": "leader", "leader": null, "epoch": null});
    };
    match c.leading_epoch() {
        Some(epoch) => json!({"role": "leader", "leader": c.replica_id(), "epoch": epoch}),
        None => {
            let (leader, epoch) = c.last_leader().map_or((None, None), |(l, e)| (Some(l), Some(e)));
            json!({"role": "follower", "leader": leader, "epoch": epoch})
        }
    }
}

/// Not ready while the store cannot take writes (database file removed or replaced, audit
/// chain broken and unacknowledged, writes failing): the reasons are in `details.reasons`.
async fn store_writable(st: &AppState) -> Result<(), ApiError> {
    let reasons = st.store().readiness().await;
    if reasons.is_empty() {
        return Ok(());
    }
    let mut e = ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "not_ready",
        format!("the store cannot take writes: {}", reasons.join("; ")),
    );
    e.details = Some(json!({"reasons": reasons}));
    Err(e)
}
