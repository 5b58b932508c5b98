//! Handler tests of `POST /v1/resolve` and OFREP over an in-memory store: shapes, errors,
//! ETags, and change notification.

use std::sync::Arc;
use std::time::Duration;

use actuator_canary::{
    GeoRules, Rollout, Share, SplitStrategy, VersionedConfig, bucket, unit_hash,
};
use actuator_config::{ApplyRequest, ConfigManager, ConfigSettings};
use actuator_core::testing::MemoryStore;
use actuator_core::{
    AuditDraft, DeploymentState, DeploymentStrategy, NewRollout, NewSlot, SlotName, Store,
};
use actuator_server::{AppState, MAX_BATCH, OFREP_MAX_BODY_BYTES, router};
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use futures::StreamExt;
use serde_json::{Value, json};
use tower::ServiceExt;

struct Fixture {
    app: axum::Router,
    state: AppState,
}

async fn apply(config: &ConfigManager, slot: &str, doc: Value, activate: bool) {
    config
        .apply(ApplyRequest {
            slot: SlotName::new(slot).unwrap(),
            document: doc,
            actor: "t".into(),
            message: String::new(),
            dry_run: false,
            activate,
            expected_latest: None,
        })
        .await
        .unwrap();
}

async fn slot(config: &ConfigManager, name: &str) {
    config
        .create_slot(
            NewSlot {
                name: SlotName::new(name).unwrap(),
                description: String::new(),
                schema: None,
            },
            "t",
        )
        .await
        .unwrap();
}

async fn rollout(store: &dyn Store, slot: &str, route: Rollout) {
    store
        .create_rollout(
            NewRollout {
                id: route.id.to_string(),
                slot: SlotName::new(slot).unwrap(),
                strategy: DeploymentStrategy::Canary,
                state: DeploymentState::Monitoring,
                request: json!({}),
                status: json!({"route": route}),
                admission: Default::default(),
            },
            AuditDraft::success("t", "rollout.create", slot),
        )
        .await
        .unwrap();
}

/// `chat`: v1 stable, v2 canary at 50% (consistent hash, phase 1, rollout `r-1`);
/// `static`: v1 only; `geo`: a geographic rollout; `draft`: no active version.
async fn fixture() -> Fixture {
    let store = Arc::new(MemoryStore::new());
    let config = ConfigManager::new(store.clone(), vec![], ConfigSettings::default());
    for s in ["chat", "static", "geo", "draft"] {
        slot(&config, s).await;
    }
    apply(&config, "chat", json!({"model": "big"}), true).await;
    apply(&config, "chat", json!({"model": "small"}), false).await;
    apply(&config, "static", json!({"model": "fixed"}), true).await;
    apply(&config, "geo", json!({"model": "big"}), true).await;
    let candidate = VersionedConfig::new(2, json!({"model": "small"}));
    rollout(
        store.as_ref(),
        "chat",
        Rollout::canary("r-1", candidate.clone())
            .with_share(Share::from_percent(50.0).unwrap())
            .with_phase(1),
    )
    .await;
    let geo = GeoRules { excluded: ["us-gov".to_owned()].into(), ..GeoRules::default() };
    rollout(
        store.as_ref(),
        "geo",
        Rollout::canary("r-geo", candidate)
            .with_share(Share::FULL)
            .with_strategy(SplitStrategy::Geographic(geo)),
    )
    .await;
    let state = AppState::load(config).await.unwrap();
    Fixture { app: router(state.clone()), state }
}

async fn send(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: Option<String>,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app
        .clone()
        .oneshot(req.body(body.map_or_else(Body::empty, Body::from)).unwrap())
        .await
        .unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (status, headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn post(app: &axum::Router, uri: &str, body: Value) -> (StatusCode, HeaderMap, Value) {
    send(app, "POST", uri, Some(body.to_string()), &[]).await
}

fn expected_variant(key: &str) -> &'static str {
    if bucket("chat", "r-1", key) < 5_000 { "canary" } else { "stable" }
}

#[tokio::test]
async fn resolve_single_has_the_documented_shape() {
    let f = fixture().await;
    for i in 0..20 {
        let key = format!("user-{i}");
        let (s, _, b) = post(
            &f.app,
            "/v1/resolve",
            json!({"slot": "chat", "context": {"targetingKey": key, "region": "eu"}}),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let variant = expected_variant(&key);
        assert_eq!(b["variant"], variant, "{b}");
        assert_eq!(b["config_version"], if variant == "canary" { 2 } else { 1 });
        assert_eq!(b["config"]["model"], if variant == "canary" { "small" } else { "big" });
        assert_eq!(b["rollout_id"], "r-1");
        assert_eq!(b["phase"], 1);
        assert_eq!(b["bucket"], bucket("chat", "r-1", &key));
        assert_eq!(b["unit"], unit_hash("chat", "r-1", &key));
        assert_eq!(b["in_experiment"], true);
        assert_eq!(b["reason"], "split");
        assert_eq!(b["slot"], "chat");
        assert!(b.get("shadow").is_none());
    }
    let (s, _, b) = post(&f.app, "/v1/resolve", json!({"slot": "static"})).await;
    assert_eq!(s, StatusCode::OK, "a slot without rollout needs no key: {b}");
    assert_eq!(
        (b["variant"].as_str(), b["reason"].as_str(), &b["rollout_id"]),
        (Some("stable"), Some("no_rollout"), &Value::Null)
    );
}

#[tokio::test]
async fn resolve_errors_use_the_api_shape() {
    let f = fixture().await;
    let cases = [
        (json!({"slot": "nope", "context": {"targetingKey": "u"}}), 404, "slot_not_found"),
        (json!({"slot": "draft", "context": {"targetingKey": "u"}}), 404, "slot_not_found"),
        (json!({"slot": "chat", "context": {}}), 400, "targeting_key_missing"),
        (json!({"slot": "chat", "context": {"targetingKey": ""}}), 400, "targeting_key_missing"),
        (json!({"slot": "chat", "context": "user-1"}), 400, "invalid_context"),
        (json!({"slot": "chat", "context": {"targetingKey": 7}}), 400, "invalid_context"),
        (
            json!({"slot": "geo", "context": {"targetingKey": "u", "region": ["eu"]}}),
            400,
            "invalid_context",
        ),
        (json!({"context": {"targetingKey": "u"}}), 400, "invalid_request"),
        (json!({"slot": "chat", "requests": []}), 400, "invalid_request"),
        (json!({"slot": "chat", "colour": 1}), 422, "invalid_body"),
    ];
    for (body, status, code) in cases {
        let (s, _, b) = post(&f.app, "/v1/resolve", body.clone()).await;
        assert_eq!((s.as_u16(), b["error"]["code"].as_str()), (status, Some(code)), "{body} → {b}");
        assert!(!b["error"]["message"].as_str().unwrap_or_default().is_empty());
    }
    let (s, _, b) = send(&f.app, "POST", "/v1/resolve", Some("{\"slot\":".into()), &[]).await;
    assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("malformed_json")));
}

#[tokio::test]
async fn resolve_batch_answers_in_order_and_is_limited() {
    let f = fixture().await;
    let (s, _, b) = post(
        &f.app,
        "/v1/resolve",
        json!({"requests": [
            {"slot": "chat", "context": {"targetingKey": "user-1"}},
            {"slot": "nope", "context": {"targetingKey": "user-1"}},
            {"slot": "chat"},
            {"slot": "static"},
            {"slot": "geo", "context": {"targetingKey": "u", "region": "us-gov"}},
        ]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let r = b["results"].as_array().unwrap();
    assert_eq!(r.len(), 5);
    assert_eq!(r[0]["variant"], expected_variant("user-1"));
    assert_eq!(
        (r[1]["slot"].as_str(), r[1]["error"]["code"].as_str()),
        (Some("nope"), Some("slot_not_found"))
    );
    assert_eq!(r[2]["error"]["code"], "targeting_key_missing");
    assert_eq!(r[3]["config"]["model"], "fixed");
    assert_eq!(
        (r[4]["variant"].as_str(), r[4]["reason"].as_str()),
        (Some("stable"), Some("region_excluded"))
    );

    let many: Vec<Value> = (0..=MAX_BATCH).map(|_| json!({"slot": "static"})).collect();
    let (s, _, b) = post(&f.app, "/v1/resolve", json!({"requests": many})).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("batch_too_large"))
    );
    assert!(b["error"]["message"].as_str().unwrap().contains("1000"), "{b}");
    let full: Vec<Value> = (0..MAX_BATCH).map(|_| json!({"slot": "static"})).collect();
    let (s, _, b) = post(&f.app, "/v1/resolve", json!({"requests": full})).await;
    assert_eq!((s, b["results"].as_array().map(Vec::len)), (StatusCode::OK, Some(MAX_BATCH)));
    let (s, _, b) = post(
        &f.app,
        "/v1/resolve",
        json!({"requests": [{"slot": "chat"}], "context": {"targetingKey": "u"}}),
    )
    .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
}

#[tokio::test]
async fn ofrep_single_flag_success_and_revalidation() {
    let f = fixture().await;
    let uri = "/ofrep/v1/evaluate/flags/chat";
    let key = "user-42";
    let (s, h, b) =
        post(&f.app, uri, json!({"context": {"targetingKey": key, "region": "eu"}})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let variant = expected_variant(key);
    assert_eq!(b["key"], "chat");
    assert_eq!(b["variant"], variant);
    assert_eq!(b["reason"], "SPLIT");
    assert_eq!(b["value"]["model"], if variant == "canary" { "small" } else { "big" });
    assert_eq!(
        b["metadata"],
        json!({
            "configVersion": if variant == "canary" { 2 } else { 1 },
            "rolloutId": "r-1",
            "phase": 1,
            "bucket": bucket("chat", "r-1", key),
            "unit": unit_hash("chat", "r-1", key),
            "inExperiment": true,
            "reasonDetail": "split",
        })
    );
    let etag = h["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    // Same context (members reordered) → 304; another context → 200 with another ETag.
    let (s, h2, _) = send(
        &f.app,
        "POST",
        uri,
        Some(format!(r#"{{"context": {{"region": "eu", "targetingKey": "{key}"}}}}"#)),
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!((s, h2["etag"].to_str().unwrap()), (StatusCode::NOT_MODIFIED, etag.as_str()));
    let (s, h3, _) = send(
        &f.app,
        "POST",
        uri,
        Some(json!({"context": {"targetingKey": "user-43", "region": "eu"}}).to_string()),
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_ne!(h3["etag"], etag.as_str());

    // A slot without rollout is STATIC and needs no targeting key.
    let (s, _, b) = post(&f.app, "/ofrep/v1/evaluate/flags/static", json!({"context": {}})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        b,
        json!({"key": "static", "value": {"model": "fixed"}, "reason": "STATIC", "variant": "stable",
               "metadata": {"configVersion": 1, "reasonDetail": "no_rollout"}})
    );
    // Excluded region: TARGETING_MATCH.
    let (_, _, b) = post(
        &f.app,
        "/ofrep/v1/evaluate/flags/geo",
        json!({"context": {"targetingKey": "u", "region": "us-gov"}}),
    )
    .await;
    assert_eq!(
        (b["reason"].as_str(), b["variant"].as_str()),
        (Some("TARGETING_MATCH"), Some("stable"))
    );
}

#[tokio::test]
async fn ofrep_single_flag_errors_follow_the_protocol() {
    let f = fixture().await;
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("nope", json!({"context": {"targetingKey": "u"}}).to_string(), 404, "FLAG_NOT_FOUND"),
        ("draft", json!({"context": {"targetingKey": "u"}}).to_string(), 404, "FLAG_NOT_FOUND"),
        ("chat", json!({"context": {"region": "eu"}}).to_string(), 400, "TARGETING_KEY_MISSING"),
        ("chat", json!({}).to_string(), 400, "TARGETING_KEY_MISSING"),
        ("chat", json!({"context": [1, 2]}).to_string(), 400, "INVALID_CONTEXT"),
        ("chat", json!({"context": {"targetingKey": true}}).to_string(), 400, "INVALID_CONTEXT"),
        (
            "geo",
            json!({"context": {"targetingKey": "u", "region": {"a": 1}}}).to_string(),
            400,
            "INVALID_CONTEXT",
        ),
        ("chat", "{\"context\": {".to_owned(), 400, "PARSE_ERROR"),
        ("chat", "[]".to_owned(), 400, "PARSE_ERROR"),
        ("chat", String::new(), 400, "PARSE_ERROR"),
        (
            "chat",
            json!({"context": {"targetingKey": "u", "blob": "x".repeat(OFREP_MAX_BODY_BYTES)}})
                .to_string(),
            413,
            "PARSE_ERROR",
        ),
    ];
    for (key, body, status, code) in cases {
        let uri = format!("/ofrep/v1/evaluate/flags/{key}");
        let (s, _, b) = send(&f.app, "POST", &uri, Some(body.clone()), &[]).await;
        let short: String = body.chars().take(60).collect();
        assert_eq!(s.as_u16(), status, "{key} {short} → {b}");
        assert_eq!(b["key"], key, "{b}");
        assert_eq!(b["errorCode"], code, "{b}");
        assert!(!b["errorDetails"].as_str().unwrap_or_default().is_empty(), "{b}");
    }
}

#[tokio::test]
async fn ofrep_bulk_reports_per_flag_and_revalidates() {
    let f = fixture().await;
    let uri = "/ofrep/v1/evaluate/flags";
    let (s, h, b) = post(&f.app, uri, json!({"context": {"region": "eu"}})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let flags = b["flags"].as_array().unwrap();
    let keys: Vec<&str> = flags.iter().filter_map(|f| f["key"].as_str()).collect();
    assert_eq!(keys, ["chat", "geo", "static"], "sorted; slots without a version are absent");
    assert_eq!(flags[0]["errorCode"], "TARGETING_KEY_MISSING", "{b}");
    assert!(flags[0]["errorDetails"].as_str().unwrap().contains("targetingKey"));
    assert_eq!(flags[2]["value"]["model"], "fixed");
    assert_eq!(b["metadata"]["flagCount"], 3);
    assert_eq!(
        b["eventStreams"],
        json!([{"type": "sse", "endpoint": {"requestUri": "/ofrep/v1/events"}, "inactivityDelaySec": 120}])
    );
    let etag = h["etag"].to_str().unwrap().to_owned();

    let ctx = json!({"context": {"region": "eu"}}).to_string();
    let (s, _, _) = send(&f.app, "POST", uri, Some(ctx.clone()), &[("if-none-match", &etag)]).await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);
    // flagConfigEtag / flagConfigLastModified are accepted.
    let (s, _, _) = send(
        &f.app,
        "POST",
        &format!("{uri}?flagConfigEtag=%22x%22&flagConfigLastModified=1771622898"),
        Some(ctx.clone()),
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);
    // The ETag depends on the context...
    let (_, h2, b2) = post(&f.app, uri, json!({"context": {"targetingKey": "u1"}})).await;
    assert_ne!(h2["etag"].to_str().unwrap(), etag);
    assert!(b2["flags"][0]["variant"].is_string(), "{b2}");
    // ...and on the routes: a config change through the API refreshes the table.
    let (s, _, _) =
        post(&f.app, "/v1/slots/static/versions", json!({"document": {"model": "new"}})).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, h3, b3) = send(&f.app, "POST", uri, Some(ctx), &[("if-none-match", &etag)]).await;
    assert_eq!(s, StatusCode::OK);
    assert_ne!(h3["etag"].to_str().unwrap(), etag);
    assert_eq!(b3["flags"][2]["value"]["model"], "new");

    // Whole-request failures carry no key.
    for (body, code) in [("{", "PARSE_ERROR"), (r#"{"context": 3}"#, "INVALID_CONTEXT")] {
        let (s, _, b) = send(&f.app, "POST", uri, Some(body.into()), &[]).await;
        assert_eq!((s, b["errorCode"].as_str()), (StatusCode::BAD_REQUEST, Some(code)), "{b}");
        assert!(b.get("key").is_none());
    }
}

/// The next chunk of an event stream, `None` when it ended (or after 5 s of silence).
async fn next(s: &mut axum::body::BodyDataStream) -> Option<String> {
    let chunk = tokio::time::timeout(Duration::from_secs(5), s.next()).await;
    chunk.ok().flatten().map(|c| String::from_utf8_lossy(&c.unwrap()).into_owned())
}

#[tokio::test]
async fn config_changes_are_pushed_over_sse() {
    let f = fixture().await;
    let req = Request::builder().uri("/ofrep/v1/events").body(Body::empty()).unwrap();
    let resp = f.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut stream = resp.into_body().into_data_stream();
    let first = next(&mut stream).await.unwrap();
    assert!(first.contains(": connected") && first.contains("retry: 1000"), "{first}");

    // A config change reaches the stream at once.
    let (s, _, _) =
        post(&f.app, "/v1/slots/static/versions", json!({"document": {"model": "v2"}})).await;
    assert_eq!(s, StatusCode::CREATED);
    let ev = next(&mut stream).await.unwrap();
    assert!(ev.contains("event: message"), "{ev}");
    let data = ev.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    let data: Value = serde_json::from_str(data).unwrap();
    assert_eq!(data["type"], "refetchEvaluation");
    let etag = format!("\"{:016x}\"", f.state.routes().snapshot().etag());
    assert_eq!(data["etag"], etag);
    assert!(data["lastModified"].as_u64().unwrap() > 1_700_000_000);
    let id = ev.lines().find_map(|l| l.strip_prefix("id: ")).unwrap().to_owned();

    // Reconnecting with an old Last-Event-ID is told to refetch at once; with the current one,
    // it is not.
    for (last, refetch) in [("0123456789abcdef", true), (id.as_str(), false)] {
        let req = Request::builder()
            .uri("/ofrep/v1/events")
            .header("last-event-id", last)
            .body(Body::empty())
            .unwrap();
        let mut s = f.app.clone().oneshot(req).await.unwrap().into_body().into_data_stream();
        let first = next(&mut s).await.unwrap();
        assert_eq!(first.contains("refetchEvaluation"), refetch, "{first}");
    }

    // Closing ends the stream (so a graceful shutdown does not wait for it).
    f.state.routes().close();
    assert_eq!(next(&mut stream).await, None);
}
