//! `GET /v1/rollouts/{id}/events`: the rollout's view and health as server-sent events, one
//! `rollout` event when the stream opens and one after every change.
//!
//! The engine is read once per [`POLL`] by the stream's own task (the engine's control pass
//! never waits for a subscriber). A change is any change of the view or of the health report
//! other than the ticking active-time counters. Subscribers share the server's bound
//! (`server.max_sse_subscribers`) with the OFREP stream; the stream ends when the server shuts
//! down or the rollout can no longer be read.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;

/// How often a stream reads the rollout.
const POLL: Duration = Duration::from_millis(1000);

/// Reconnection delay suggested to clients.
const RETRY: Duration = Duration::from_millis(2000);

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/rollouts/{id}/events", get(events))
}

/// The rollout as one event body: `{"view": RolloutView, "health": {...}}`.
async fn snapshot(st: &AppState, id: &str) -> Result<Value, ApiError> {
    let engine = super::rollouts::engine(st)?;
    let view = engine.view(id).await?;
    let health = engine.health(id).await?;
    Ok(json!({"view": view, "health": health}))
}

/// The parts of a snapshot that count as a change (the active-time counters tick every
/// second and are left out).
fn change_key(v: &Value) -> Value {
    let mut k = v.clone();
    if let Some(view) = k.get_mut("view").and_then(Value::as_object_mut) {
        view.remove("active_secs");
        view.remove("phase_active_secs");
    }
    k
}

fn rollout_event(v: &Value) -> Event {
    Event::default().event("rollout").data(v.to_string())
}

async fn events(State(st): State<AppState>, Path(id): Path<String>) -> Response {
    // An unknown rollout or a stopped engine answers at once, before a subscriber slot is
    // taken.
    let first = match snapshot(&st, &id).await {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let Some(permit) = st.subscriber_permit() else {
        let limit = st.limits().max_sse_subscribers;
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_subscribers",
            format!("{limit} event-stream subscribers are connected, the limit (server.max_sse_subscribers); poll GET /v1/rollouts/{{id}} or retry later"),
        )
        .retry_after(30)
        .into_response();
    };
    let every = (st.limits().idle_timeout_secs / 2).clamp(1, 15);
    let mut closing = st.routes().subscribe();
    if closing.borrow_and_update().closing {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down",
        )
        .into_response();
    }
    let head = futures::stream::iter([Ok::<_, Infallible>(rollout_event(&first).retry(RETRY))]);
    let state = (st, id, change_key(&first), closing, permit);
    let tail = futures::stream::unfold(state, |(st, id, last, mut closing, permit)| async move {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                changed = closing.changed() => {
                    if changed.is_err() || closing.borrow_and_update().closing {
                        return None;
                    }
                    continue;
                }
            }
            let now = match snapshot(&st, &id).await {
                Ok(v) => v,
                Err(e) => {
                    tracing::debug!(rollout = %id, error = e.code, "rollout stream ends");
                    return None;
                }
            };
            let key = change_key(&now);
            if key != last {
                return Some((Ok(rollout_event(&now)), (st, id, key, closing, permit)));
            }
        }
    });
    let mut r = Sse::new(futures::StreamExt::chain(head, tail))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(every)))
        .into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ticking_counters_are_not_a_change() {
        let a = json!({"view": {"state": "progressing", "active_secs": 1.0, "phase_active_secs": 1.0}, "health": {}});
        let b = json!({"view": {"state": "progressing", "active_secs": 2.0, "phase_active_secs": 2.0}, "health": {}});
        let c = json!({"view": {"state": "paused", "active_secs": 2.0, "phase_active_secs": 2.0}, "health": {}});
        assert_eq!(change_key(&a), change_key(&b));
        assert_ne!(change_key(&b), change_key(&c));
    }
}
