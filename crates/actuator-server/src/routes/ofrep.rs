//! The OpenFeature Remote Evaluation Protocol (OFREP 0.3.0) over the routing table.
//!
//! * `POST /ofrep/v1/evaluate/flags/{key}`: one flag (a slot). 200 `{key, value, reason,
//!   variant, metadata}`; 400 `{key, errorCode, errorDetails}` with `PARSE_ERROR`,
//!   `TARGETING_KEY_MISSING` or `INVALID_CONTEXT`; 404 with `FLAG_NOT_FOUND`; 500 with
//!   `GENERAL`.
//! * `POST /ofrep/v1/evaluate/flags`: every flag. 200 `{flags, metadata, eventStreams}` with
//!   per-flag failures inside `flags`, an `ETag`, and 304 for a matching `If-None-Match`;
//!   400 `{errorCode, errorDetails}` when the request itself is bad.
//! * `GET /ofrep/v1/events`: server-sent events, advertised in `eventStreams`. Each change of
//!   the routing table sends `event: message` with
//!   `data: {"type": "refetchEvaluation", "etag", "lastModified"}`.
//!
//! Slot = flag key, `targetingKey` = stickiness key, value = the config object, variant =
//! `stable` / `canary` / `shadow` / arm name. `metadata` carries `configVersion`, `rolloutId`,
//! `phase`, `bucket`, `unit`, `inExperiment`, `shadowVersion` and `reasonDetail` so outcomes can be joined back to the
//! assignment. ETags hash the routes involved and the evaluation context, so they are the same
//! on every replica serving the same persisted state.

use std::convert::Infallible;
use std::time::Duration;

use actuator_canary::{EvalContext, Reason, ResolutionRef, ResolveError, RoutingTable};
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use xxhash_rust::xxh3::Xxh3;

use crate::AppState;
use crate::routing::{RouteEvent, eval_context, now_secs};

/// Largest OFREP request body accepted, in bytes (64 KiB): an evaluation context, not a
/// document.
pub const OFREP_MAX_BODY_BYTES: usize = 64 * 1024;

/// Path of the server-sent event stream advertised in bulk responses' `eventStreams`.
pub const OFREP_EVENTS_PATH: &str = "/ofrep/v1/events";

/// Seconds of client inactivity after which a provider should drop the event stream.
const INACTIVITY_DELAY_SEC: u64 = 120;

/// Reconnection delay suggested to SSE clients.
const SSE_RETRY: Duration = Duration::from_millis(1000);

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/ofrep/v1/evaluate/flags/{key}", post(evaluate_flag))
        .route("/ofrep/v1/evaluate/flags", post(evaluate_bulk))
        .route(OFREP_EVENTS_PATH, get(events))
        .layer(DefaultBodyLimit::max(OFREP_MAX_BODY_BYTES))
}

/// An OFREP failure: `{key?, errorCode, errorDetails}` with its status.
#[derive(Debug)]
pub(crate) struct Failure {
    status: StatusCode,
    code: &'static str,
    details: String,
}

impl Failure {
    fn parse(details: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, code: "PARSE_ERROR", details: details.into() }
    }

    fn into_response(self, key: Option<&str>) -> Response {
        let body = FailureBody { key, error_code: self.code, error_details: &self.details };
        (self.status, Json(body)).into_response()
    }
}

impl From<ResolveError> for Failure {
    fn from(e: ResolveError) -> Self {
        let status = match &e {
            ResolveError::FlagNotFound { .. } => StatusCode::NOT_FOUND,
            ResolveError::General(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        Self { status, code: e.code(), details: e.to_string() }
    }
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FailureBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    error_code: &'static str,
    error_details: &'a str,
}

/// `{"context": {...}}`; other members are ignored (forward compatibility).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(crate) struct EvaluationRequest {
    #[serde(default)]
    context: Option<Value>,
}

fn parse_body(body: Result<Bytes, BytesRejection>) -> Result<EvalContext, Failure> {
    let bytes = body.map_err(|rej| {
        if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Failure {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                code: "PARSE_ERROR",
                details: format!(
                    "the request body is over the limit of {OFREP_MAX_BODY_BYTES} bytes: send only the evaluation context"
                ),
            }
        } else {
            Failure::parse(format!("the request body could not be read: {rej}"))
        }
    })?;
    match bytes.trim_ascii_start().first() {
        None => {
            return Err(Failure::parse(
                "the request body is empty: send {\"context\": {\"targetingKey\": \"...\"}}",
            ));
        }
        // serde would also read a struct from an array; the protocol wants an object.
        Some(b'{') => {}
        Some(_) => {
            return Err(Failure::parse(
                "the request body must be a JSON object: send {\"context\": {\"targetingKey\": \"...\"}}",
            ));
        }
    }
    let req: EvaluationRequest = serde_json::from_slice(&bytes).map_err(|e| {
        Failure::parse(format!(
            "the request body is not an evaluation request ({e}): send {{\"context\": {{\"targetingKey\": \"...\"}}}}"
        ))
    })?;
    Ok(eval_context(req.context)?)
}

/// The OFREP reason. OFREP 0.3.0 knows `STATIC`, `TARGETING_MATCH`, `SPLIT`, `DISABLED` and
/// `UNKNOWN`; a geographic rollout's default share is a split too (the precise reason is in
/// `metadata.reasonDetail`).
const fn ofrep_reason(r: Reason) -> &'static str {
    match r {
        Reason::NoRollout => "STATIC",
        Reason::Split | Reason::RegionDefault => "SPLIT",
        Reason::Override | Reason::RegionExcluded => "TARGETING_MATCH",
    }
}

const fn reason_detail(r: Reason) -> &'static str {
    match r {
        Reason::NoRollout => "no_rollout",
        Reason::Split => "split",
        Reason::Override => "override",
        Reason::RegionExcluded => "region_excluded",
        Reason::RegionDefault => "region_default",
    }
}

/// Flag metadata: the same keys as `Resolution::ofrep_metadata`, without building a map, plus
/// `reasonDetail`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Metadata<'a> {
    config_version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    rollout_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    phase: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bucket: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unit: Option<u16>,
    /// Present with a rollout: whether the request is part of the comparison.
    #[serde(skip_serializing_if = "Option::is_none")]
    in_experiment: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shadow_version: Option<u64>,
    reason_detail: &'static str,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct Success<'a> {
    key: &'a str,
    value: &'a Value,
    reason: &'static str,
    variant: &'a str,
    metadata: Metadata<'a>,
}

impl<'a> Success<'a> {
    /// The answer for `r`, serving `masked` instead of its config value when set.
    fn new(key: &'a str, r: ResolutionRef<'a>, masked: Option<&'a Value>) -> Self {
        Self {
            key,
            value: masked.unwrap_or(&r.config.value),
            reason: ofrep_reason(r.reason),
            variant: r.variant_name(),
            metadata: Metadata {
                config_version: r.config.version,
                rollout_id: r.rollout_id_str(),
                phase: r.phase,
                bucket: r.bucket,
                unit: r.unit,
                in_experiment: r.rollout_id.is_some().then_some(r.in_experiment),
                shadow_version: r.shadow.map(|c| c.version),
                reason_detail: reason_detail(r.reason),
            },
        }
    }
}

/// Feeds a JSON value into a hasher canonically: object members in key order, every value
/// tagged with its type, strings length-prefixed. Equal contexts hash equally whatever their
/// member order or formatting.
fn hash_value(h: &mut Xxh3, v: &Value) {
    match v {
        Value::Null => h.update(b"n"),
        Value::Bool(b) => h.update(if *b { b"t" } else { b"f" }),
        Value::Number(n) => {
            h.update(b"#");
            hash_str(h, &n.to_string());
        }
        Value::String(s) => {
            h.update(b"s");
            hash_str(h, s);
        }
        Value::Array(items) => {
            h.update(b"[");
            h.update(&(items.len() as u64).to_le_bytes());
            for item in items {
                hash_value(h, item);
            }
        }
        Value::Object(map) => {
            h.update(b"{");
            hash_members(h, map);
        }
    }
}

/// Object members in key order. serde_json's default map is already sorted; with its
/// `preserve_order` feature it is not, and the keys are sorted first.
fn hash_members(h: &mut Xxh3, map: &Map<String, Value>) {
    h.update(&(map.len() as u64).to_le_bytes());
    let mut member = |k: &str, v: &Value| {
        hash_str(h, k);
        hash_value(h, v);
    };
    if map.keys().is_sorted() {
        for (k, v) in map {
            member(k, v);
        }
    } else {
        let mut members: Vec<(&String, &Value)> = map.iter().collect();
        members.sort_unstable_by_key(|(k, _)| *k);
        for (k, v) in members {
            member(k, v);
        }
    }
}

fn hash_str(h: &mut Xxh3, s: &str) {
    h.update(&(s.len() as u64).to_le_bytes());
    h.update(s.as_bytes());
}

fn context_hash(ctx: &EvalContext) -> u64 {
    let mut h = Xxh3::new();
    match &ctx.targeting_key {
        Some(k) => {
            h.update(b"k");
            hash_str(&mut h, k);
        }
        None => h.update(b"-"),
    }
    hash_members(&mut h, &ctx.attributes);
    h.digest()
}

/// A strong ETag over the routes' content hash and the context.
fn etag(routes: u64, ctx: &EvalContext) -> String {
    let mut h = Xxh3::new();
    h.update(&routes.to_le_bytes());
    h.update(&context_hash(ctx).to_le_bytes());
    format!("\"{:016x}\"", h.digest())
}

/// The `If-None-Match` header values, without cloning the whole header map (an empty vector
/// does not allocate).
#[derive(Debug, Default)]
pub(crate) struct IfNoneMatch(Vec<HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for IfNoneMatch {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.headers.get_all(IF_NONE_MATCH).iter().cloned().collect()))
    }
}

impl IfNoneMatch {
    /// Whether it names `etag` (or `*`); weak validators compare by their opaque part.
    fn matches(&self, etag: &str) -> bool {
        self.0
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
    }
}

fn json_response(status: StatusCode, etag: &str, body: &impl Serialize) -> Response {
    // Most single-flag answers fit: one allocation instead of a few regrowths.
    let mut bytes = Vec::with_capacity(512);
    match serde_json::to_writer(&mut bytes, body) {
        Ok(()) => {
            let mut resp = Response::new(Body::from(bytes));
            *resp.status_mut() = status;
            let h = resp.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            if let Ok(v) = HeaderValue::from_str(etag) {
                h.insert(ETAG, v);
            }
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            resp
        }
        Err(e) => Failure {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "GENERAL",
            details: format!("cannot serialize the evaluation: {e}"),
        }
        .into_response(None),
    }
}

fn not_modified_response(etag: &str) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::NOT_MODIFIED;
    if let Ok(v) = HeaderValue::from_str(etag) {
        resp.headers_mut().insert(ETAG, v);
    }
    resp
}

async fn evaluate_flag(
    State(st): State<AppState>,
    principal: Option<axum::Extension<crate::auth::Principal>>,
    Path(key): Path<String>,
    if_none_match: IfNoneMatch,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let ctx = match parse_body(body) {
        Ok(c) => c,
        Err(f) => return f.into_response(Some(&key)),
    };
    let mut masker = crate::masking::Masker::for_principal(principal.as_deref());
    masker.prepare(&st, &[key.as_str()]).await;
    // Everything below is synchronous: the snapshot is held for no wait.
    let table = st.routes().current();
    let r = match table.resolve_ref(&key, &ctx) {
        Ok(r) => r,
        Err(e) => return Failure::from(e).into_response(Some(&key)),
    };
    crate::metrics::resolved("ofrep", r.variant_name());
    let tag = masked_tag(etag(table.etag_for([key.as_str()]), &ctx), masker.active());
    if if_none_match.matches(&tag) {
        return not_modified_response(&tag);
    }
    let masked = masker.mask(&key, &r.config.value);
    json_response(StatusCode::OK, &tag, &Success::new(&key, r, masked.as_ref()))
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub(crate) enum BulkItem<'a> {
    Ok(Success<'a>),
    Err(FailureBody<'a>),
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BulkMetadata {
    /// Content hash of every route (the `etag` of `refetchEvaluation` events).
    routes_etag: String,
    flag_count: usize,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct EndpointRef {
    #[serde(rename = "requestUri")]
    request_uri: &'static str,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EventStream {
    #[serde(rename = "type")]
    kind: &'static str,
    endpoint: EndpointRef,
    inactivity_delay_sec: u64,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BulkResponse<'a> {
    flags: Vec<BulkItem<'a>>,
    metadata: BulkMetadata,
    event_streams: [EventStream; 1],
}

fn routes_etag(table: &RoutingTable) -> String {
    format!("\"{:016x}\"", table.etag())
}

/// A masked answer differs from the served one: its entity tag says so, so no cache hands
/// one to the other.
fn masked_tag(tag: String, masked: bool) -> String {
    if masked { format!("{}-masked\"", tag.trim_end_matches('"')) } else { tag }
}

async fn evaluate_bulk(
    State(st): State<AppState>,
    principal: Option<axum::Extension<crate::auth::Principal>>,
    if_none_match: IfNoneMatch,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let ctx = match parse_body(body) {
        Ok(c) => c,
        Err(f) => return f.into_response(None),
    };
    let mut masker = crate::masking::Masker::for_principal(principal.as_deref());
    if masker.active() {
        // The schemas of every slot are read before the answer: hold an owned snapshot across
        // the reads, so the answer covers exactly the slots whose schemas were read.
        let table = st.routes().snapshot();
        let tag = masked_tag(etag(table.etag(), &ctx), true);
        if if_none_match.matches(&tag) {
            return not_modified_response(&tag);
        }
        let slots: Vec<&str> = table.slots().map(|s| &**s).collect();
        masker.prepare(&st, &slots).await;
        bulk_response(&table, &ctx, &masker, &tag)
    } else {
        let table = st.routes().current();
        let tag = masked_tag(etag(table.etag(), &ctx), false);
        if if_none_match.matches(&tag) {
            return not_modified_response(&tag);
        }
        bulk_response(&table, &ctx, &masker, &tag)
    }
}

/// The bulk answer over `table`, serialized from borrowed resolutions.
fn bulk_response(
    table: &RoutingTable,
    ctx: &EvalContext,
    masker: &crate::masking::Masker,
    tag: &str,
) -> Response {
    let answers = table.resolve_all_ref(ctx);
    for r in answers.iter().filter_map(|(_, r)| r.as_ref().ok()) {
        crate::metrics::resolved("ofrep", r.variant_name());
    }
    let masked: Vec<Option<Value>> = answers
        .iter()
        .map(|(key, r)| r.as_ref().ok().and_then(|r| masker.mask(key, &r.config.value)))
        .collect();
    let details: Vec<Option<String>> =
        answers.iter().map(|(_, r)| r.as_ref().err().map(ToString::to_string)).collect();
    let flags = answers
        .iter()
        .zip(&details)
        .zip(&masked)
        .map(|(((key, r), detail), masked)| match r {
            Ok(r) => BulkItem::Ok(Success::new(key, *r, masked.as_ref())),
            Err(e) => BulkItem::Err(FailureBody {
                key: Some(key),
                error_code: e.code(),
                error_details: detail.as_deref().unwrap_or_default(),
            }),
        })
        .collect();
    let body = BulkResponse {
        flags,
        metadata: BulkMetadata { routes_etag: routes_etag(table), flag_count: answers.len() },
        event_streams: [EventStream {
            kind: "sse",
            endpoint: EndpointRef { request_uri: OFREP_EVENTS_PATH },
            inactivity_delay_sec: INACTIVITY_DELAY_SEC,
        }],
    };
    json_response(StatusCode::OK, tag, &body)
}

/// The SSE event id of a table state: its content hash, the same on every replica.
fn event_id(etag: u64) -> String {
    format!("{etag:016x}")
}

fn refetch_event(e: &RouteEvent) -> Event {
    let data = serde_json::json!({
        "type": "refetchEvaluation",
        "etag": format!("\"{:016x}\"", e.etag),
        "lastModified": e.at,
    });
    Event::default().event("message").id(event_id(e.etag)).data(data.to_string())
}

/// `GET /ofrep/v1/events`: a `refetchEvaluation` message after every change of the routing
/// table (changes in a burst coalesce). A client that reconnects with a `Last-Event-ID` that is
/// not the current state's id is told to refetch at once.
async fn events(State(st): State<AppState>, headers: HeaderMap) -> Response {
    use axum::response::IntoResponse;
    let Some(permit) = st.subscriber_permit() else {
        let limit = st.limits().max_sse_subscribers;
        let mut r = crate::error::ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_subscribers",
            format!("{limit} event-stream subscribers are connected, the limit (server.max_sse_subscribers); poll the bulk evaluation or retry later"),
        )
        .into_response();
        r.headers_mut()
            .insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("30"));
        return r;
    };
    // Keep-alive comments at least twice per idle timeout, so an idle subscriber is not
    // taken for an idle connection.
    let every = (st.limits().idle_timeout_secs / 2).clamp(1, 15);
    event_stream(&st, &headers, permit)
        .keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(every)))
        .into_response()
}

fn event_stream(
    st: &AppState,
    headers: &HeaderMap,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Sse<impl Stream<Item = Result<Event, Infallible>> + use<>> {
    use futures::StreamExt;
    let routes = st.routes().clone();
    let mut rx = routes.subscribe();
    let seen = rx.borrow_and_update().clone();
    let current = routes.snapshot().etag();
    let missed = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|id| id.trim() != event_id(current));
    let first = if missed {
        let at = if seen.at == 0 { now_secs() } else { seen.at };
        refetch_event(&RouteEvent { etag: current, at, ..seen.clone() })
    } else {
        Event::default().comment("connected")
    };
    let head = futures::stream::iter([Ok(first.retry(SSE_RETRY))]);
    // The subscriber's permit lives as long as its stream.
    let tail = futures::stream::unfold(
        (rx, seen.closing, permit),
        |(mut rx, closed, permit)| async move {
            if closed || rx.changed().await.is_err() {
                return None;
            }
            let e = rx.borrow_and_update().clone();
            if e.closing {
                return None;
            }
            Some((Ok(refetch_event(&e)), (rx, false, permit)))
        },
    );
    Sse::new(head.chain(tail))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actuator_canary::{Rollout, Router as CanaryRouter, Share, SlotRoute, VersionedConfig};
    use serde_json::json;

    #[test]
    fn metadata_matches_the_canary_crate() {
        let router = CanaryRouter::new();
        let rollout = Rollout::shadow("r-9", VersionedConfig::new(2, json!({"m": "s"})))
            .with_share(Share::FULL)
            .with_phase(3);
        router
            .update_slot(
                "chat",
                SlotRoute::stable(VersionedConfig::new(1, json!({"m": "b"}))).with_rollout(rollout),
            )
            .unwrap();
        let r = router.resolve("chat", &EvalContext::with_key("u")).unwrap();
        let mut ours =
            serde_json::to_value(Success::new("chat", r.borrowed(), None)).unwrap()["metadata"]
                .clone();
        assert_eq!(ours["reasonDetail"], "split");
        ours.as_object_mut().unwrap().remove("reasonDetail");
        assert_eq!(ours, Value::Object(r.ofrep_metadata()));
        assert!(ours.get("shadowVersion").is_some());
    }

    #[test]
    fn context_hash_is_canonical() {
        let a = EvalContext::from_json(json!({"targetingKey": "u", "a": 1, "b": {"x": [1, "2"]}}))
            .unwrap();
        let b: EvalContext =
            EvalContext::from_json_str(r#"{ "b": {"x": [1, "2"]}, "a": 1, "targetingKey": "u" }"#)
                .unwrap();
        assert_eq!(context_hash(&a), context_hash(&b));
        let c =
            EvalContext::from_json(json!({"targetingKey": "u", "a": "1", "b": {"x": [1, "2"]}}))
                .unwrap();
        assert_ne!(context_hash(&a), context_hash(&c));
        assert_ne!(context_hash(&EvalContext::new()), context_hash(&EvalContext::with_key("")));
    }

    #[test]
    fn if_none_match_forms() {
        assert!(!IfNoneMatch::default().matches("\"ab\""));
        let h = IfNoneMatch(vec![HeaderValue::from_static("\"x\", W/\"ab\"")]);
        assert!(h.matches("\"ab\"") && !h.matches("\"x2\""));
        assert!(IfNoneMatch(vec![HeaderValue::from_static("*")]).matches("\"zz\""));
    }
}
