//! The webhook notifier against real receivers on loopback: the payload field by field and
//! its signature checked with the secret, and a hanging receiver that a rollout driven
//! through the real engine never waits for.

use actuator_config::{ApplyRequest, ConfigManager, ConfigSettings};
use actuator_core::testing::MemoryStore;
use actuator_core::{
    DeploymentRequest, DeploymentState, Event, HostContext, NewSlot, Notifier, Registry, Severity,
    SlotName, Store,
};
use actuator_engine::{Engine, EngineSettings, ManualAction, RouteSink};
use actuator_notifier_webhook::{Payload, SCHEMA_VERSION, WebhookConfig, WebhookNotifier};
use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "webhook-test-secret-0123456789";

#[derive(Clone, Default)]
struct Got {
    hang: bool,
    hits: Arc<AtomicUsize>,
    items: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
}

async fn handle(State(g): State<Got>, headers: HeaderMap, body: Bytes) -> StatusCode {
    g.hits.fetch_add(1, Ordering::SeqCst);
    if g.hang {
        std::future::pending::<()>().await;
    }
    g.items.lock().unwrap().push((headers, body));
    StatusCode::NO_CONTENT
}

async fn receiver(hang: bool) -> (String, Got) {
    let g = Got { hang, ..Got::default() };
    let app = axum::Router::new().route("/hook", axum::routing::post(handle)).with_state(g.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, g)
}

fn notifier(url: &str, dir: &std::path::Path) -> WebhookNotifier {
    let cfg: WebhookConfig = serde_json::from_value(json!({
        "url": url, "secret": SECRET, "public_url": "https://actuator.example.com/",
        "delivery": {"timeout_ms": 200, "initial_backoff_ms": 10, "max_backoff_ms": 50}
    }))
    .unwrap();
    WebhookNotifier::new(cfg, &HostContext { data_dir: dir.to_path_buf() }).unwrap()
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !done() {
        assert!(t0.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_payload_is_signed_and_carries_every_documented_field() {
    let (url, got) = receiver(false).await;
    let dir = tempfile::tempdir().unwrap();
    let n = notifier(&url, dir.path());
    let at = chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05.678Z").unwrap().to_utc();
    let event = Event {
        kind: "rollout.rollback".into(),
        severity: Severity::Critical,
        at,
        actor: "engine".into(),
        target: "r-42".into(),
        summary: "rollout r-42 of chat.default is rolling back".into(),
        details: json!({
            "rollout_id": "r-42", "slot": "chat.default", "strategy": "canary",
            "state": "rolling_back", "stable_version": 3, "candidate_version": 4, "step": 1,
            "share_percent": 0.0, "automatic": true, "flip_ms": 1.5,
            "decision": {"kind": "rollback", "rule": "errors: e-value over 1/alpha",
                         "reasons": ["errors: candidate 4.1% vs control 1.0%"]}
        }),
    };
    let t0 = Instant::now();
    n.notify(&event).await.unwrap();
    assert!(t0.elapsed() < Duration::from_millis(500));
    wait_for("the delivery", || !got.items.lock().unwrap().is_empty()).await;
    let (h, body) = got.items.lock().unwrap()[0].clone();
    // The receiver checks the signature with the shared secret over "<timestamp>.<body>".
    let ts = h["x-actuator-timestamp"].to_str().unwrap();
    let sig = h["x-actuator-signature"].to_str().unwrap();
    assert!(sig.starts_with("sha256="), "{sig}");
    assert!(actuator_notifier_http::verify_signature(SECRET, ts, &body, sig));
    assert!(!actuator_notifier_http::verify_signature("not-the-secret-at-all", ts, &body, sig));
    let p: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(p["schema_version"], SCHEMA_VERSION);
    assert_eq!(p["kind"], "rollout.rollback");
    assert_eq!(p["event"], "rolled_back");
    assert_eq!(p["severity"], "critical");
    assert_eq!(p["at"], "2026-01-02T03:04:05.678Z");
    assert_eq!(p["actor"], "engine");
    assert_eq!(p["target"], "r-42");
    assert_eq!(p["summary"], "rollout r-42 of chat.default is rolling back");
    assert_eq!(p["rollout"]["id"], "r-42");
    assert_eq!(p["rollout"]["slot"], "chat.default");
    assert_eq!(p["rollout"]["strategy"], "canary");
    assert_eq!(p["rollout"]["state"], "rolling_back");
    assert_eq!(p["rollout"]["stable_version"], 3);
    assert_eq!(p["rollout"]["candidate_version"], 4);
    assert_eq!(p["rollout"]["step"], 1);
    assert_eq!(p["rollout"]["url"], "https://actuator.example.com/v1/rollouts/r-42");
    assert_eq!(p["decision"]["kind"], "rollback");
    assert_eq!(p["decision"]["rule"], "errors: e-value over 1/alpha");
    assert_eq!(p["reasons"], json!(["errors: candidate 4.1% vs control 1.0%"]));
    assert_eq!(p["details"]["automatic"], true);
    // The typed form reads back what was sent.
    let typed: Payload = serde_json::from_value(p).unwrap();
    assert_eq!(typed.rollout.unwrap().candidate_version, Some(4));
    // A config event has no rollout and no decision.
    n.notify(&Event {
        kind: "config.apply".into(),
        severity: Severity::Info,
        at,
        actor: "alice".into(),
        target: "chat.default".into(),
        summary: "slot chat.default: version 5 written".into(),
        details: json!({"version": 5, "activated": true}),
    })
    .await
    .unwrap();
    wait_for("the second delivery", || got.items.lock().unwrap().len() == 2).await;
    let p: Value = serde_json::from_slice(&got.items.lock().unwrap()[1].1).unwrap();
    assert_eq!((p["event"].as_str(), p["rollout"].is_null()), (Some("config_applied"), true));
    assert_eq!(p["reasons"], json!([]));
    assert_eq!(n.stats().delivered, 2);
}

#[derive(Default)]
struct Routes;

#[async_trait]
impl RouteSink for Routes {
    async fn refresh_slot(&self, _: &SlotName) {}
}

async fn config_with_two_versions(store: Arc<dyn Store>) -> ConfigManager {
    let config = ConfigManager::new(store, vec![], ConfigSettings::default());
    let name = SlotName::new("chat.default").unwrap();
    config
        .create_slot(NewSlot { name: name.clone(), description: String::new(), schema: None }, "t")
        .await
        .unwrap();
    for (m, activate) in [("a", true), ("b", false)] {
        config
            .apply(ApplyRequest {
                slot: name.clone(),
                document: json!({"model": m}),
                actor: "t".into(),
                message: String::new(),
                dry_run: false,
                activate,
                expected_latest: None,
            })
            .await
            .unwrap();
    }
    config
}

#[tokio::test]
async fn a_rollback_completes_while_the_webhook_receiver_hangs() {
    let (url, got) = receiver(true).await;
    let dir = tempfile::tempdir().unwrap();
    let mut registry = Registry::empty();
    actuator_notifier_webhook::register(&mut registry).unwrap();
    let n = registry
        .notifier(
            "webhook",
            json!({"url": url, "secret": SECRET, "delivery": {"timeout_ms": 60000, "max_attempts": 1}}),
            &HostContext { data_dir: dir.path().to_path_buf() },
        )
        .unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let config = config_with_two_versions(store).await;
    let settings = EngineSettings { tick_ms: 10, validation_secs: 0, ..EngineSettings::default() };
    let engine = Engine::new(config, Arc::new(Routes), vec![n.clone()], settings);
    engine.start().await.unwrap();
    let req: DeploymentRequest = serde_json::from_value(json!({
        "slot": "chat.default", "candidate": {"version": 2}, "strategy": "canary", "actor": "tester",
        "canary": {"phases": [{"traffic_percent": 10, "min_samples": 1000000}]}
    }))
    .unwrap();
    let v = engine.deploy(req).await.unwrap();
    // The receiver holds the first delivery (rollout.start) open: it never answers.
    wait_for("the receiver's first request", || got.hits.load(Ordering::SeqCst) >= 1).await;
    let t0 = Instant::now();
    let rb = engine
        .act(&v.id, ManualAction::Rollback { reason: "bad answers".into(), gradual: false }, "op")
        .await
        .unwrap();
    assert_eq!(rb.state, DeploymentState::RollingBack);
    loop {
        let state = engine.view(&v.id).await.unwrap().state;
        if state == DeploymentState::RolledBack {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "the rollback waited: {state:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Finished in the time a rollback takes without notifiers (validation is off here), far
    // below the receiver's 60 s timeout, and nothing was delivered.
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert!(got.items.lock().unwrap().is_empty());
    // A notify call straight on the notifier returns at once too.
    let t1 = Instant::now();
    n.notify(&Event {
        kind: "rollout.fail".into(),
        severity: Severity::Critical,
        at: chrono::Utc::now(),
        actor: "engine".into(),
        target: v.id.clone(),
        summary: "x".into(),
        details: Value::Null,
    })
    .await
    .unwrap();
    assert!(t1.elapsed() < Duration::from_millis(250), "{:?}", t1.elapsed());
    engine.stop().await.unwrap();
}
