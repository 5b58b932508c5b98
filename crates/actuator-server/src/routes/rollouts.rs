//! Rollouts, manual control, rollback history, statistics and observation ingestion.

use actuator_core::{DeploymentRequest, PageRequest, RolloutFilter, SlotName};
use actuator_engine::{BodyError, BodyFormat, Engine, EngineError, ManualAction};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Actor, ApiJson, ApiQuery};

/// Largest observation batch body, in bytes (16 MiB).
pub const MAX_OBSERVATION_BODY_BYTES: usize = 16 * 1024 * 1024;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/rollouts", post(start).get(list))
        .route("/v1/rollouts/{id}", get(view))
        .route("/v1/rollouts/{id}/health", get(health))
        .route("/v1/rollouts/{id}/{action}", post(act))
        .route("/v1/rollbacks", get(rollbacks))
        .route("/v1/stats", get(stats))
        .route(
            "/v1/observations",
            post(observations).layer(DefaultBodyLimit::max(MAX_OBSERVATION_BODY_BYTES)),
        )
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let status = match e {
            // Configuration and store errors keep the statuses the rest of the API gives them.
            EngineError::Config(c) => return c.into(),
            EngineError::Store(s) => return s.into(),
            EngineError::Invalid(_) | EngineError::Core(_) => StatusCode::UNPROCESSABLE_ENTITY,
            EngineError::OutOfRange { .. } => StatusCode::BAD_REQUEST,
            EngineError::RollbackRefused { .. } => StatusCode::CONFLICT,
            EngineError::UnknownRollout(_) => StatusCode::NOT_FOUND,
            EngineError::Limit { .. }
            | EngineError::SlotBusy { .. }
            | EngineError::InvalidTransition { .. } => StatusCode::CONFLICT,
            EngineError::NotRunning | EngineError::NotDurable(_) => StatusCode::SERVICE_UNAVAILABLE,
            EngineError::Overloaded { retry_after_secs, .. } => {
                return Self::new(StatusCode::TOO_MANY_REQUESTS, e.code(), e.to_string())
                    .retry_after(retry_after_secs);
            }
            EngineError::Body(BodyError::Malformed(_)) => StatusCode::BAD_REQUEST,
            EngineError::Body(BodyError::TooMany(_)) => StatusCode::PAYLOAD_TOO_LARGE,
            EngineError::Body(_) => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.code(), e.to_string())
    }
}

pub(crate) fn engine(st: &AppState) -> Result<Engine, ApiError> {
    st.engine().ok_or_else(|| {
        if st.resuming() {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "resuming",
                "the rollout engine is resuming the stored rollouts (resolve is already served); retry shortly",
            )
            .retry_after(1)
        } else {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_running",
                "the rollout engine is not running",
            )
        }
    })
}

async fn start(
    State(st): State<AppState>,
    actor: Actor,
    ApiJson(mut req): ApiJson<DeploymentRequest>,
) -> Result<(StatusCode, Json<actuator_engine::RolloutView>), ApiError> {
    // The audit actor is who authenticated, whatever the body says.
    req.actor = actor.0;
    let v = engine(&st)?.deploy(req).await?;
    Ok((StatusCode::CREATED, Json(v)))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    #[serde(default)]
    active: bool,
    slot: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

async fn list(
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<actuator_core::Page<actuator_engine::RolloutView>>, ApiError> {
    let slot =
        q.slot.map(SlotName::new).transpose().map_err(|e| ApiError::bad_request(e.to_string()))?;
    let page =
        PageRequest { limit: q.limit.unwrap_or(PageRequest::DEFAULT_LIMIT), cursor: q.cursor };
    page.validate()?;
    Ok(Json(engine(&st)?.list(RolloutFilter { active_only: q.active, slot }, page).await?))
}

async fn view(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<actuator_engine::RolloutView>, ApiError> {
    Ok(Json(engine(&st)?.view(&id).await?))
}

async fn health(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(engine(&st)?.health(&id).await?))
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ActBody {
    #[serde(default)]
    full: bool,
    #[serde(default)]
    skip_analysis: bool,
    #[serde(default)]
    gradual: bool,
    #[serde(default)]
    reason: String,
}

async fn act(
    State(st): State<AppState>,
    Path((id, action)): Path<(String, String)>,
    actor: Actor,
    body: Bytes,
) -> Result<Json<actuator_engine::RolloutView>, ApiError> {
    let b: ActBody = if body.iter().all(u8::is_ascii_whitespace) {
        ActBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                format!("the request body does not match the expected shape: {e}"),
            )
        })?
    };
    // A rollback carries its reason in the action; every other control records it beside the
    // transition (`paused by alice: latency looks off`).
    let because = if action == "rollback" { String::new() } else { b.reason.clone() };
    let action = match action.as_str() {
        "pause" => ManualAction::Pause,
        "resume" => ManualAction::Resume,
        "promote" => ManualAction::Promote { full: b.full, skip_analysis: b.skip_analysis },
        "skip" => ManualAction::Skip,
        "abort" => ManualAction::Abort,
        "retry" => ManualAction::Retry,
        "rollback" => ManualAction::Rollback {
            reason: if b.reason.is_empty() {
                format!("requested by {}", actor.0)
            } else {
                b.reason
            },
            gradual: b.gradual,
        },
        other => {
            return Err(ApiError::not_found(format!(
                "unknown rollout action {other:?}; use pause, resume, promote, skip, abort, retry or rollback"
            )));
        }
    };
    Ok(Json(engine(&st)?.act_because(&id, action, &actor.0, &because).await?))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PageQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

async fn rollbacks(
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<actuator_core::Page<actuator_engine::RollbackView>>, ApiError> {
    let page =
        PageRequest { limit: q.limit.unwrap_or(PageRequest::DEFAULT_LIMIT), cursor: q.cursor };
    page.validate()?;
    Ok(Json(engine(&st)?.rollbacks(page).await?))
}

async fn stats(State(st): State<AppState>) -> Result<Json<actuator_core::ActuatorStats>, ApiError> {
    Ok(Json(engine(&st)?.stats()))
}

/// A JSON array, or NDJSON (`application/x-ndjson`, one object per line).
async fn observations(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<actuator_engine::IngestReport>, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "an observation batch is at most {MAX_OBSERVATION_BODY_BYTES} bytes; split it"
                ),
            )
        } else {
            ApiError::bad_request(format!("the request body could not be read: {e}"))
        }
    })?;
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    // A line that is not JSON (NaN, a truncated line) fails alone; the others are kept.
    let format = if ct.starts_with("application/x-ndjson") || ct.starts_with("application/jsonl") {
        BodyFormat::Ndjson
    } else if ct.starts_with("application/json") {
        BodyFormat::Json
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send observations as application/json (an array) or application/x-ndjson",
        ));
    };
    // Parsed, made durable and recorded on an ingestion shard's own thread: this task only
    // waits, and a full shard answers 429 at once.
    Ok(Json(engine(&st)?.ingest_body(body, format).await?))
}

/// The body of a POST that takes no input: an empty JSON object (the content type is what
/// makes it a JSON request).
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub(crate) struct EmptyBody {}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;

    #[test]
    fn a_full_ingestion_queue_answers_429_with_retry_after() {
        let e = EngineError::Overloaded { shard: 1, waiting: 8, retry_after_secs: 1 };
        let r = ApiError::from(e).into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()), Some("1"));
        let body_errors = [
            (BodyError::Malformed("eof".into()), StatusCode::BAD_REQUEST, "malformed_json"),
            (BodyError::NotAnArray, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
            (BodyError::TooMany(10_001), StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large"),
        ];
        for (b, status, code) in body_errors {
            let a = ApiError::from(EngineError::Body(b));
            assert_eq!((a.status, a.code, a.retry_after_secs), (status, code, None));
        }
    }
}
