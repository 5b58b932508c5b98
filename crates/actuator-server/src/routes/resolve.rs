//! `POST /v1/resolve`: which config serves this request, for one slot or a batch.
//!
//! Single: `{"slot": "chat", "context": {"targetingKey": "user-1", "region": "eu"}}` answers
//! `{"slot", "variant", "config_version", "config", "rollout_id", "phase", "bucket", "unit",
//! "in_experiment", "reason", "shadow"?}` (`unit` and `in_experiment` go back with the
//! outcome: see `docs/api.md`), or an error in the API's shape (unknown slot 404, missing targeting key or
//! invalid context 400).
//!
//! Batch: `{"requests": [{"slot", "context"}, ...]}` (at most [`MAX_BATCH`]) answers
//! `{"results": [...]}` in request order, each a resolution or `{"slot", "error": {"code",
//! "message"}}`; all items are resolved against one snapshot of the routing table.
//!
//! No lock, no IO on the way to the answer: it is serialized from data borrowed from the routing
//! table's current snapshot (no copy, no reference count). For people's tokens the slots'
//! schemas are read first, to mask secret fields.

use actuator_canary::{Reason, ResolutionRef, ResolveError};
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::routing::eval_context;

/// Most requests one batch may hold.
pub const MAX_BATCH: usize = 1000;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/resolve", post(resolve))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResolveBody {
    #[serde(default)]
    slot: Option<String>,
    #[serde(default)]
    context: Option<Value>,
    #[serde(default)]
    requests: Option<Vec<ResolveItem>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResolveItem {
    slot: String,
    #[serde(default)]
    context: Option<Value>,
}

/// A resolution as the API shows it.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct Resolved<'a> {
    slot: &'a str,
    variant: &'a str,
    config_version: u64,
    config: &'a Value,
    rollout_id: Option<&'a str>,
    phase: Option<u32>,
    bucket: Option<u16>,
    unit: Option<u16>,
    in_experiment: bool,
    reason: Reason,
    #[serde(skip_serializing_if = "Option::is_none")]
    shadow: Option<ShadowView<'a>>,
}

/// The candidate to run on the side, in shadow mode.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct ShadowView<'a> {
    config_version: u64,
    config: &'a Value,
}

impl<'a> Resolved<'a> {
    /// The view of `r`, serving `masked` instead of its config value when set.
    fn new(slot: &'a str, r: ResolutionRef<'a>, masked: Option<&'a Value>) -> Self {
        Self {
            slot,
            variant: r.variant_name(),
            config_version: r.config.version,
            config: masked.unwrap_or(&r.config.value),
            rollout_id: r.rollout_id_str(),
            phase: r.phase,
            bucket: r.bucket,
            unit: r.unit,
            in_experiment: r.in_experiment,
            reason: r.reason,
            shadow: r.shadow.map(|c| ShadowView { config_version: c.version, config: &c.value }),
        }
    }
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct ItemError<'a> {
    slot: &'a str,
    error: ErrorBody,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct ErrorBody {
    code: &'static str,
    message: String,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub(crate) enum Outcome<'a> {
    Ok(Resolved<'a>),
    Err(ItemError<'a>),
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct BatchResponse<'a> {
    results: Vec<Outcome<'a>>,
}

async fn resolve(
    State(st): State<AppState>,
    principal: Option<axum::Extension<crate::auth::Principal>>,
    ApiJson(body): ApiJson<ResolveBody>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let mut masker = crate::masking::Masker::for_principal(principal.as_deref());
    match (body.slot, body.requests) {
        (Some(slot), None) => {
            let ctx = eval_context(body.context)?;
            masker.prepare(&st, &[slot.as_str()]).await;
            let table = st.routes().current();
            let r = table.resolve_ref(&slot, &ctx)?;
            let masked = masker.mask(&slot, &r.config.value);
            crate::metrics::resolved("resolve", r.variant_name());
            Ok(Json(Resolved::new(&slot, r, masked.as_ref())).into_response())
        }
        (None, Some(items)) => {
            if body.context.is_some() {
                return Err(ApiError::bad_request(
                    "a batch carries a context per request: move `context` into each item of `requests`",
                ));
            }
            if items.len() > MAX_BATCH {
                return Err(ApiError::new(
                    axum::http::StatusCode::BAD_REQUEST,
                    "batch_too_large",
                    format!(
                        "a batch holds at most {MAX_BATCH} requests, got {}: split it",
                        items.len()
                    ),
                ));
            }
            if masker.active() {
                let slots: Vec<&str> = items.iter().map(|i| i.slot.as_str()).collect();
                masker.prepare(&st, &slots).await;
            }
            // Everything below is synchronous: the snapshot is held for no wait.
            let table = st.routes().current();
            let answers: Vec<(&str, Result<ResolutionRef<'_>, ResolveError>)> = items
                .iter()
                .map(|item| {
                    let r = eval_context(item.context.clone())
                        .and_then(|ctx| table.resolve_ref(&item.slot, &ctx));
                    (item.slot.as_str(), r)
                })
                .collect();
            for r in answers.iter().filter_map(|(_, r)| r.as_ref().ok()) {
                crate::metrics::resolved("resolve", r.variant_name());
            }
            let masked: Vec<Option<Value>> = answers
                .iter()
                .map(|(slot, r)| r.as_ref().ok().and_then(|r| masker.mask(slot, &r.config.value)))
                .collect();
            let results = answers
                .iter()
                .zip(&masked)
                .map(|((slot, r), masked)| match r {
                    Ok(r) => Outcome::Ok(Resolved::new(slot, *r, masked.as_ref())),
                    Err(e) => {
                        let api = ApiError::from(e.clone());
                        Outcome::Err(ItemError {
                            slot,
                            error: ErrorBody { code: api.code, message: api.message },
                        })
                    }
                })
                .collect();
            Ok(Json(BatchResponse { results }).into_response())
        }
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "send either `slot` and `context` (one request) or `requests` (a batch), not both",
        )),
        (None, None) => Err(ApiError::bad_request(
            "send `slot` and `context` (one request) or `requests` (a batch of them)",
        )),
    }
}
