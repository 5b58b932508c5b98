//! Slots, versions, diffs, snapshots and audit.

use actuator_config::{Acknowledgement, ApplyRequest, AuditReport};
use actuator_core::{
    AuditEntry, AuditQuery, ConfigVersion, NewSlot, Page, PageRequest, Slot, SlotName, Snapshot,
};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use std::sync::Arc;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Actor, ApiJson, ApiQuery};
use crate::verify_jobs::{FinishOnDrop, VerifyJobView};
use actuator_config::secrets::{mask, mask_diff};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/slots", post(create_slot).get(list_slots))
        .route("/v1/slots/{slot}", get(get_slot))
        .route("/v1/slots/{slot}/versions", post(apply).get(list_versions))
        .route("/v1/slots/{slot}/versions/{version}", get(get_version))
        .route("/v1/slots/{slot}/diff", get(diff))
        .route("/v1/slots/{slot}/revert", post(revert))
        .route("/v1/slots/{slot}/snapshots", post(create_snapshot).get(list_slot_snapshots))
        .route("/v1/snapshots", get(list_snapshots))
        .route("/v1/snapshots/{id}", get(get_snapshot))
        .route("/v1/snapshots/{id}/restore", post(restore))
        .route("/v1/audit", get(list_audit))
        .route("/v1/audit/verify", get(verify_audit))
        .route("/v1/audit/verify/full", post(start_full_verify))
        .route("/v1/audit/verify/jobs/{id}", get(get_verify_job))
        .route("/v1/audit/acknowledge", post(acknowledge_audit))
}

/// The slot's JSON Schema, which marks its secret fields (none when the slot is unknown:
/// the handler's own read answers that).
async fn schema_of(st: &AppState, slot: &SlotName) -> Option<Value> {
    st.store().get_slot(slot).await.ok().flatten().and_then(|s| s.schema)
}

/// A version with its secret fields masked: the management API never shows a secret.
fn masked_version(mut v: ConfigVersion, schema: Option<&Value>) -> ConfigVersion {
    v.document = mask(&v.document, schema);
    v
}

fn masked_snapshot(mut s: Snapshot, schema: Option<&Value>) -> Snapshot {
    s.document = mask(&s.document, schema);
    s
}

async fn masked_snapshots(st: &AppState, page: Page<Snapshot>) -> Page<Snapshot> {
    let mut schemas: std::collections::HashMap<SlotName, Option<Value>> = Default::default();
    let mut items = Vec::with_capacity(page.items.len());
    for s in page.items {
        if !schemas.contains_key(&s.slot) {
            let schema = schema_of(st, &s.slot).await;
            schemas.insert(s.slot.clone(), schema);
        }
        let schema = schemas.get(&s.slot).and_then(Option::as_ref);
        items.push(masked_snapshot(s, schema));
    }
    Page { items, ..page }
}

fn slot_name(raw: &str) -> Result<SlotName, ApiError> {
    SlotName::new(raw).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// `?limit=&cursor=`
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PageQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

impl PageQuery {
    /// A page of slots: the cursor is a slot name (the last one of the previous page).
    fn slot_page(self) -> Result<PageRequest, ApiError> {
        if let Some(c) = &self.cursor {
            SlotName::new(c.as_str()).map_err(|_| {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", format!("cursor {c:?} is not a cursor of this list; pass the next_cursor of the previous page"))
            })?;
        }
        self.page()
    }

    /// A page of snapshots: the cursor is a snapshot id.
    fn snapshot_page(self) -> Result<PageRequest, ApiError> {
        if let Some(c) = &self.cursor
            && (c.is_empty()
                || c.len() > 64
                || !c.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'))
        {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!(
                    "cursor {c:?} is not a cursor of this list; pass the next_cursor of the previous page"
                ),
            ));
        }
        self.page()
    }

    fn page(self) -> Result<PageRequest, ApiError> {
        let p = PageRequest {
            limit: self.limit.unwrap_or(PageRequest::DEFAULT_LIMIT),
            cursor: self.cursor,
        };
        p.validate().map_err(ApiError::from)?;
        Ok(p)
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateSlot {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    schema: Option<Value>,
}

async fn create_slot(
    State(st): State<AppState>,
    actor: Actor,
    ApiJson(body): ApiJson<CreateSlot>,
) -> Result<(StatusCode, Json<Slot>), ApiError> {
    let name = slot_name(&body.name)?;
    let slot = st
        .config()
        .create_slot(NewSlot { name, description: body.description, schema: body.schema }, &actor.0)
        .await?;
    Ok((StatusCode::CREATED, Json(slot)))
}

async fn list_slots(
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<Slot>>, ApiError> {
    Ok(Json(st.config().list_slots(q.slot_page()?).await?))
}

/// A slot with the document of its active version.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct SlotView {
    #[serde(flatten)]
    slot: Slot,
    current: Option<ConfigVersion>,
}

async fn get_slot(
    State(st): State<AppState>,
    Path(slot): Path<String>,
) -> Result<Json<SlotView>, ApiError> {
    let name = slot_name(&slot)?;
    let slot = st.config().get_slot(&name).await?;
    let current = match slot.active_version {
        Some(v) => {
            Some(masked_version(st.config().get_version(&name, v).await?, slot.schema.as_ref()))
        }
        None => None,
    };
    Ok(Json(SlotView { slot, current }))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApplyBody {
    document: Value,
    #[serde(default)]
    message: String,
    #[serde(default)]
    dry_run: bool,
    #[serde(default = "yes")]
    activate: bool,
    #[serde(default)]
    expected_latest: Option<u64>,
    /// Write a new version even when the document is already the slot's latest.
    #[serde(default)]
    force: bool,
}

fn yes() -> bool {
    true
}

async fn apply(
    State(st): State<AppState>,
    Path(slot): Path<String>,
    actor: Actor,
    ApiJson(body): ApiJson<ApplyBody>,
) -> Result<(StatusCode, Json<actuator_config::ApplyOutcome>), ApiError> {
    let name = slot_name(&slot)?;
    let req = ApplyRequest {
        slot: name.clone(),
        document: body.document,
        actor: actor.0,
        message: body.message,
        dry_run: body.dry_run,
        activate: body.activate,
        expected_latest: body.expected_latest,
    };
    let out = if body.force {
        st.config().apply(req).await?
    } else {
        st.config().apply_unless_unchanged(req).await?
    };
    if !out.dry_run && !out.unchanged && body.activate {
        st.routes().refresh_slot_or_log(&name).await;
    }
    let status = if out.dry_run || out.unchanged { StatusCode::OK } else { StatusCode::CREATED };
    let schema = schema_of(&st, &name).await;
    let out = actuator_config::ApplyOutcome {
        diff: mask_diff(&out.diff, schema.as_ref()),
        version: out.version.map(|v| masked_version(v, schema.as_ref())),
        ..out
    };
    Ok((status, Json(out)))
}

async fn list_versions(
    State(st): State<AppState>,
    Path(slot): Path<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<ConfigVersion>>, ApiError> {
    let name = slot_name(&slot)?;
    let page = st.config().history(&name, q.page()?).await?;
    let schema = schema_of(&st, &name).await;
    let items = page.items.into_iter().map(|v| masked_version(v, schema.as_ref())).collect();
    Ok(Json(Page { items, ..page }))
}

async fn get_version(
    State(st): State<AppState>,
    Path((slot, version)): Path<(String, String)>,
) -> Result<Json<ConfigVersion>, ApiError> {
    let v: u64 = version.parse().map_err(|_| {
        ApiError::bad_request(format!("version {version:?} is not a positive integer"))
    })?;
    let name = slot_name(&slot)?;
    let version = st.config().get_version(&name, v).await?;
    Ok(Json(masked_version(version, schema_of(&st, &name).await.as_ref())))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DiffQuery {
    from: u64,
    to: u64,
}

async fn diff(
    State(st): State<AppState>,
    Path(slot): Path<String>,
    ApiQuery(q): ApiQuery<DiffQuery>,
) -> Result<Json<actuator_config::Diff>, ApiError> {
    let name = slot_name(&slot)?;
    let d = st.config().diff(&name, q.from, q.to).await?;
    Ok(Json(mask_diff(&d, schema_of(&st, &name).await.as_ref())))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevertBody {
    #[serde(default)]
    to: Option<u64>,
    #[serde(default)]
    reason: String,
}

async fn revert(
    State(st): State<AppState>,
    Path(slot): Path<String>,
    actor: Actor,
    ApiJson(body): ApiJson<RevertBody>,
) -> Result<Json<Slot>, ApiError> {
    let name = slot_name(&slot)?;
    let slot = st.config().revert(&name, body.to, &actor.0, &body.reason).await?;
    st.routes().refresh_slot_or_log(&name).await;
    Ok(Json(slot))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SnapshotBody {
    #[serde(default)]
    label: String,
}

async fn create_snapshot(
    State(st): State<AppState>,
    Path(slot): Path<String>,
    actor: Actor,
    ApiJson(body): ApiJson<SnapshotBody>,
) -> Result<(StatusCode, Json<Snapshot>), ApiError> {
    let name = slot_name(&slot)?;
    let snap = st.config().snapshot(&name, &body.label, &actor.0).await?;
    Ok((StatusCode::CREATED, Json(masked_snapshot(snap, schema_of(&st, &name).await.as_ref()))))
}

async fn list_slot_snapshots(
    State(st): State<AppState>,
    Path(slot): Path<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<Snapshot>>, ApiError> {
    let page = st.config().snapshots(Some(&slot_name(&slot)?), q.snapshot_page()?).await?;
    Ok(Json(masked_snapshots(&st, page).await))
}

async fn list_snapshots(
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<Snapshot>>, ApiError> {
    let page = st.config().snapshots(None, q.snapshot_page()?).await?;
    Ok(Json(masked_snapshots(&st, page).await))
}

async fn get_snapshot(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Snapshot>, ApiError> {
    let snap = st.store().get_snapshot(&id).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "snapshot {id} does not exist (it may have been removed by retention)"
        ))
    })?;
    let schema = schema_of(&st, &snap.slot).await;
    Ok(Json(masked_snapshot(snap, schema.as_ref())))
}

async fn restore(
    State(st): State<AppState>,
    Path(id): Path<String>,
    actor: Actor,
) -> Result<Json<Slot>, ApiError> {
    let slot = st.config().restore(&id, &actor.0).await?;
    st.routes().refresh_slot_or_log(&slot.name).await;
    Ok(Json(slot))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditParams {
    limit: Option<u32>,
    cursor: Option<u64>,
    #[serde(default)]
    order: Order,
    target: Option<String>,
}

#[derive(Debug, Default, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Order {
    Asc,
    #[default]
    Desc,
}

async fn list_audit(
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<AuditParams>,
) -> Result<Json<Page<AuditEntry>>, ApiError> {
    let limit = q.limit.unwrap_or(PageRequest::DEFAULT_LIMIT);
    PageRequest::first(limit).validate()?;
    Ok(Json(
        st.config()
            .audit(AuditQuery {
                cursor: q.cursor,
                limit,
                descending: q.order == Order::Desc,
                target: q.target,
            })
            .await?,
    ))
}

/// The refusal of a verification while another runs, naming the running full job if any.
fn verify_running(st: &AppState) -> ApiError {
    let message = match st.verify_jobs().running() {
        Some(id) => format!(
            "the full audit verification job {id} is running; follow it at GET /v1/audit/verify/jobs/{id} and retry when it is done"
        ),
        None => "an audit verification is already running; wait for it and retry".to_owned(),
    };
    ApiError::new(StatusCode::CONFLICT, "audit_verify_running", message)
}

/// Verifies the entries after the last verified head (incremental).
async fn verify_audit(State(st): State<AppState>) -> Result<Json<AuditReport>, ApiError> {
    let Some(_running) = st.verify_guard() else {
        return Err(verify_running(&st));
    };
    Ok(Json(st.config().verify_audit().await?))
}

/// Starts a full verification of the chain in the background; 202 with the job.
async fn start_full_verify(
    State(st): State<AppState>,
) -> Result<(StatusCode, Json<VerifyJobView>), ApiError> {
    let Some(running) = st.verify_guard() else {
        return Err(verify_running(&st));
    };
    let total = st.store().audit_head().await?.map_or(0, |h| h.seq);
    let job = st.verify_jobs().start(total);
    tracing::info!(job = job.id(), total, "full audit verification started");
    let view = job.view();
    tokio::spawn(async move {
        let _running = running;
        let _end = FinishOnDrop(Arc::clone(&job));
        let progress = |n: u64| job.progress(n);
        let result = st.config().verify_audit_full(&progress).await;
        match &result {
            Ok(r) => tracing::info!(
                job = job.id(),
                ok = r.ok,
                entries = r.entries_checked,
                "full audit verification finished"
            ),
            Err(e) => tracing::error!(job = job.id(), error = %e, "full audit verification failed"),
        }
        job.finish(result);
    });
    Ok((StatusCode::ACCEPTED, Json(view)))
}

/// A full verification job: its progress, and its report once done.
async fn get_verify_job(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<VerifyJobView>, ApiError> {
    let job = st.verify_jobs().get(&id).ok_or_else(|| {
        ApiError::not_found(format!(
            "verification job {id} is not known: the server keeps the last {} jobs, and none across restarts",
            crate::MAX_VERIFY_JOBS
        ))
    })?;
    Ok(Json(job.view()))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AcknowledgeBody {
    /// Why the problem is accepted (1 to 1024 bytes).
    reason: String,
}

/// Acknowledges the problems of a broken audit chain; writes resume.
async fn acknowledge_audit(
    State(st): State<AppState>,
    actor: Actor,
    ApiJson(body): ApiJson<AcknowledgeBody>,
) -> Result<(StatusCode, Json<Acknowledgement>), ApiError> {
    let ack = st.config().acknowledge_audit(&actor.0, &body.reason).await?;
    Ok((StatusCode::CREATED, Json(ack)))
}

#[cfg(test)]
mod tests {
    use crate::{AppState, router};
    use actuator_config::{ConfigManager, ConfigSettings};
    use actuator_core::testing::MemoryStore;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use serde_json::{Value, json};
    use std::sync::Arc;
    use tower::ServiceExt;

    async fn call(
        app: &axum::Router,
        method: &str,
        uri: &str,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req =
            Request::builder().method(method).uri(uri).header("x-actuator-actor", "tester");
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let resp = app
            .clone()
            .oneshot(req.body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned()))).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    fn app() -> axum::Router {
        let store = Arc::new(MemoryStore::new());
        router(AppState::new(
            ConfigManager::new(store.clone(), vec![], ConfigSettings::default()),
            crate::RouteBook::new(store),
        ))
    }

    #[tokio::test]
    async fn while_the_engine_resumes_resolve_answers_and_rollout_routes_ask_to_retry() {
        let store = Arc::new(MemoryStore::new());
        let config = ConfigManager::new(store.clone(), vec![], ConfigSettings::default());
        let st = AppState::new(config, crate::RouteBook::new(store));
        st.mark_resuming();
        let app = router(st.clone());
        let (s, _) = call(&app, "POST", "/v1/slots", Some(r#"{"name": "chat"}"#)).await;
        assert_eq!(s, StatusCode::CREATED);
        let doc = r#"{"document": {"model": "a"}, "activate": true}"#;
        let (s, b) = call(&app, "POST", "/v1/slots/chat/versions", Some(doc)).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        st.routes().rebuild_all().await.unwrap();
        let body = r#"{"slot": "chat", "context": {"targetingKey": "u1"}}"#;
        let (s, b) = call(&app, "POST", "/v1/resolve", Some(body)).await;
        assert_eq!((s, b["config"]["model"].as_str()), (StatusCode::OK, Some("a")), "{b}");
        let resp = app
            .clone()
            .oneshot(Request::builder().uri("/v1/rollouts").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
        let (_, b) = call(&app, "GET", "/v1/rollouts", None).await;
        assert_eq!(b["error"]["code"], "resuming", "{b}");
        let (s, b) = call(&app, "GET", "/readyz", None).await;
        assert_eq!((s, b["rollouts"].as_str()), (StatusCode::OK, Some("resuming")), "{b}");
    }

    #[tokio::test]
    async fn only_one_audit_verification_runs_at_a_time() {
        let store = Arc::new(MemoryStore::new());
        let st = AppState::new(
            ConfigManager::new(store.clone(), vec![], ConfigSettings::default()),
            crate::RouteBook::new(store),
        );
        let app = router(st.clone());
        let running = st.verify_guard().expect("nothing runs yet");
        let (s, b) = call(&app, "GET", "/v1/audit/verify", None).await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (StatusCode::CONFLICT, Some("audit_verify_running"))
        );
        drop(running);
        let (s, b) = call(&app, "GET", "/v1/audit/verify", None).await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }

    /// Polls a verification job until it is no longer running.
    async fn finished_job(app: &axum::Router, id: &str) -> Value {
        for _ in 0..500 {
            let (s, b) = call(app, "GET", &format!("/v1/audit/verify/jobs/{id}"), None).await;
            assert_eq!(s, StatusCode::OK, "{b}");
            if b["state"] != "running" {
                return b;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("job {id} still running");
    }

    #[tokio::test]
    async fn a_full_verification_runs_as_a_job_one_at_a_time() {
        let store = Arc::new(MemoryStore::new());
        let st = AppState::new(
            ConfigManager::new(store.clone(), vec![], ConfigSettings::default()),
            crate::RouteBook::new(store),
        );
        let app = router(st.clone());
        for name in ["a", "b", "c"] {
            let body = format!(r#"{{"name":"{name}"}}"#);
            let (s, _) = call(&app, "POST", "/v1/slots", Some(&body)).await;
            assert_eq!(s, StatusCode::CREATED);
        }
        let (s, b) = call(&app, "GET", "/v1/audit/verify", None).await;
        assert_eq!(
            (s, b["incremental"].as_bool(), b["entries_checked"].as_u64()),
            (StatusCode::OK, Some(false), Some(3)),
            "{b}"
        );
        let (s, _) = call(&app, "POST", "/v1/slots", Some(r#"{"name":"d"}"#)).await;
        assert_eq!(s, StatusCode::CREATED);
        let (_, b) = call(&app, "GET", "/v1/audit/verify", None).await;
        assert_eq!(
            (
                b["incremental"].as_bool(),
                b["from"].as_u64(),
                b["to"].as_u64(),
                b["entries_checked"].as_u64()
            ),
            (Some(true), Some(4), Some(4), Some(1)),
            "only the new entry: {b}"
        );

        // While a verification holds the guard, a start is refused.
        let held = st.verify_guard().expect("nothing runs");
        let (s, b) = call(&app, "POST", "/v1/audit/verify/full", Some("{}")).await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (StatusCode::CONFLICT, Some("audit_verify_running"))
        );
        drop(held);

        let (s, job) = call(&app, "POST", "/v1/audit/verify/full", Some("{}")).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{job}");
        let id = job["id"].as_str().unwrap().to_owned();
        assert_eq!(job["total"], json!(4));
        let done = finished_job(&app, &id).await;
        assert_eq!(done["state"], "succeeded", "{done}");
        assert_eq!(done["entries_checked"], json!(4));
        assert_eq!(done["report"]["ok"], json!(true));
        assert_eq!(done["report"]["incremental"], json!(false));
        assert!(done["finished_at"].is_string(), "{done}");

        // A running job is named by the refusal of a second start and of an incremental run.
        let held = st.verify_guard().expect("the job ended");
        let running = st.verify_jobs().start(4);
        for (method, path) in [("POST", "/v1/audit/verify/full"), ("GET", "/v1/audit/verify")] {
            let (s, b) = call(&app, method, path, Some("{}")).await;
            assert_eq!(s, StatusCode::CONFLICT, "{path}: {b}");
            let msg = b["error"]["message"].as_str().unwrap();
            assert!(msg.contains(running.id()), "{path} names the running job: {msg}");
        }
        running.finish(Err(actuator_config::ConfigError::NothingToAcknowledge("x".into())));
        drop(held);

        let (s, b) = call(&app, "GET", "/v1/audit/verify/jobs/av-nope", None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
        assert!(b["error"]["message"].as_str().unwrap().contains("last 16 jobs"), "{b}");
    }

    #[tokio::test]
    async fn errors_have_one_shape() {
        let app = app();
        let (s, b) = call(&app, "POST", "/v1/slots", Some("{not json")).await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("malformed_json"))
        );
        let (s, b) = call(&app, "POST", "/v1/slots", Some(r#"{"name":"chat","colour":1}"#)).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(b["error"]["message"].as_str().unwrap().contains("unknown field `colour`"), "{b}");
        let (s, b) = call(&app, "GET", "/v1/slots/nope", None).await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("slot_not_found"))
        );
        let (s, b) = call(&app, "GET", "/v1/slots/Bad%20Name", None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
        let (s, _) = call(&app, "GET", "/nowhere", None).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let big = format!(r#"{{"document": {{"p": "{}"}}}}"#, "x".repeat(crate::MAX_BODY_BYTES));
        call(&app, "POST", "/v1/slots", Some(r#"{"name":"chat"}"#)).await;
        let (s, b) = call(&app, "POST", "/v1/slots/chat/versions", Some(&big)).await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
        );
        let (s, b) = call(&app, "GET", "/v1/slots?limit=5000", None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    }

    #[tokio::test]
    async fn apply_and_read_back() {
        let app = app();
        let (s, _) = call(&app, "POST", "/v1/slots", Some(r#"{"name":"chat"}"#)).await;
        assert_eq!(s, StatusCode::CREATED);
        let (s, b) = call(
            &app,
            "POST",
            "/v1/slots/chat/versions",
            Some(r#"{"document":{"model":"a","temperature":5}}"#),
        )
        .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(b["error"]["details"][0]["path"], json!("/temperature"));
        let (s, b) =
            call(&app, "POST", "/v1/slots/chat/versions", Some(r#"{"document":{"model":"a"}}"#))
                .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let (_, b) = call(&app, "GET", "/v1/slots/chat", None).await;
        assert_eq!(b["current"]["document"]["model"], json!("a"));
        assert_eq!(b["active_version"], json!(1));
        let (_, b) = call(&app, "GET", "/v1/audit/verify", None).await;
        assert_eq!(b["ok"], json!(true));
    }
}
