//! `GET /v1/rollouts/{id}/events`: the rollout's view and health as server-sent events, one
//! `rollout` event when the stream opens and one after every change.
//! `GET /v1/events/rollouts?limit=N`: the newest rollouts (the first page of `GET
//! /v1/rollouts`, at most 100) the same way, as `rollouts` events, for the dashboard's list.
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

/// Most rollouts one list event carries.
const LIST_LIMIT: u32 = 100;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/rollouts/{id}/events", get(events))
        .route("/v1/events/rollouts", get(list_events))
}

/// The query of the list stream.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListEventsQuery {
    /// Rollouts per event, newest first: 1 to 100 (20).
    limit: Option<u32>,
}

/// The newest rollouts as one event body: `{"items": [RolloutView, ...]}`.
async fn list_snapshot(st: &AppState, limit: u32) -> Result<Value, ApiError> {
    let engine = super::rollouts::engine(st)?;
    let page = engine
        .list(
            actuator_core::RolloutFilter { active_only: false, slot: None },
            actuator_core::PageRequest { limit, cursor: None },
        )
        .await?;
    Ok(json!({"items": page.items}))
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
    let strip = |view: &mut Value| {
        if let Some(view) = view.as_object_mut() {
            view.remove("active_secs");
            view.remove("phase_active_secs");
        }
    };
    if let Some(view) = k.get_mut("view") {
        strip(view);
    }
    for view in k.get_mut("items").and_then(Value::as_array_mut).into_iter().flatten() {
        strip(view);
    }
    k
}

async fn events(State(st): State<AppState>, Path(id): Path<String>) -> Response {
    stream_changes(st, "rollout", move |st| {
        let id = id.clone();
        async move { snapshot(&st, &id).await }
    })
    .await
}

async fn list_events(
    State(st): State<AppState>,
    crate::extract::ApiQuery(q): crate::extract::ApiQuery<ListEventsQuery>,
) -> Response {
    let limit = q.limit.unwrap_or(20);
    if !(1..=LIST_LIMIT).contains(&limit) {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "out_of_range",
            format!("limit must be 1 to {LIST_LIMIT}, got {limit}"),
        )
        .into_response();
    }
    stream_changes(st, "rollouts", move |st| async move { list_snapshot(&st, limit).await }).await
}

/// A stream of `name` events: `snap` once at the start (an error answers at once, before a
/// subscriber slot is taken) and again every [`POLL`], sent when it changed.
async fn stream_changes<F, Fut>(st: AppState, name: &'static str, snap: F) -> Response
where
    F: Fn(AppState) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Value, ApiError>> + Send + 'static,
{
    let event = move |v: &Value| Event::default().event(name).data(v.to_string());
    let first = match snap(st.clone()).await {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let Some(permit) = st.subscriber_permit() else {
        let limit = st.limits().max_sse_subscribers;
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_subscribers",
            format!("{limit} event-stream subscribers are connected, the limit (server.max_sse_subscribers); poll the matching GET route instead or retry later"),
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
    let head = futures::stream::iter([Ok::<_, Infallible>(event(&first).retry(RETRY))]);
    let snap = std::sync::Arc::new(snap);
    let state = (st, snap, change_key(&first), closing, permit);
    let tail =
        futures::stream::unfold(state, move |(st, snap, last, mut closing, permit)| async move {
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
                let now = match snap(st.clone()).await {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::debug!(stream = name, error = e.code, "event stream ends");
                        return None;
                    }
                };
                let key = change_key(&now);
                if key != last {
                    return Some((Ok(event(&now)), (st, snap, key, closing, permit)));
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
        let l1 = json!({"items": [{"state": "monitoring", "active_secs": 1.0}]});
        let l2 = json!({"items": [{"state": "monitoring", "active_secs": 9.0}]});
        let l3 = json!({"items": [{"state": "completed", "active_secs": 9.0}]});
        assert_eq!(change_key(&l1), change_key(&l2));
        assert_ne!(change_key(&l2), change_key(&l3));
    }
}
