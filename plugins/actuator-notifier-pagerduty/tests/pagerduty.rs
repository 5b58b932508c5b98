//! The PagerDuty notifier against a local receiver standing in for the Events API v2: an
//! automatic rollback triggers, the stable's validation resolves with the same dedup_key.

use actuator_core::{Event, HostContext, Registry, Severity};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Default)]
struct Got {
    hits: Arc<AtomicUsize>,
    items: Arc<Mutex<Vec<Value>>>,
}

/// Answers like the Events API: 202 with a status; the first request gets a 429 (rate
/// limited), which the notifier retries.
async fn enqueue(State(g): State<Got>, body: Bytes) -> (StatusCode, String) {
    if g.hits.fetch_add(1, Ordering::SeqCst) == 0 {
        return (StatusCode::TOO_MANY_REQUESTS, "{}".into());
    }
    let v: Value = serde_json::from_slice(&body).unwrap();
    let key = v["dedup_key"].as_str().unwrap_or_default().to_owned();
    g.items.lock().unwrap().push(v);
    (StatusCode::ACCEPTED, json!({"status": "success", "dedup_key": key}).to_string())
}

fn event(kind: &str, severity: Severity, details: Value) -> Event {
    Event {
        kind: kind.into(),
        severity,
        at: chrono::Utc::now(),
        actor: "engine".into(),
        target: "r-7".into(),
        summary: format!("{kind} of rollout r-7"),
        details,
    }
}

#[tokio::test]
async fn an_automatic_rollback_triggers_and_the_validated_stable_resolves_the_same_incident() {
    let got = Got::default();
    let app = axum::Router::new()
        .route("/v2/enqueue", axum::routing::post(enqueue))
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v2/enqueue", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let dir = tempfile::tempdir().unwrap();
    let mut registry = Registry::empty();
    actuator_notifier_pagerduty::register(&mut registry).unwrap();
    let n = registry
        .notifier(
            "pagerduty",
            json!({"routing_key": "R0UT1NGKEY", "events_url": url, "source": "actuator-prod",
                   "public_url": "https://actuator.example.com",
                   "delivery": {"initial_backoff_ms": 10, "max_backoff_ms": 50}}),
            &HostContext { data_dir: dir.path().to_path_buf() },
        )
        .unwrap();
    let ctx = json!({"rollout_id": "r-7", "slot": "chat.default", "stable_version": 3,
        "candidate_version": 4,
        "decision": {"kind": "rollback", "rule": "errors", "reasons": ["errors: 5% vs 1%"]}});
    let mut rollback = ctx.clone();
    rollback["automatic"] = json!(true);
    n.notify(&event("rollout.rollback", Severity::Critical, rollback)).await.unwrap();
    // Neither a promotion nor a manual rollback pages anyone.
    n.notify(&event("rollout.promote", Severity::Info, ctx.clone())).await.unwrap();
    let mut manual = ctx.clone();
    manual["automatic"] = json!(false);
    n.notify(&event("rollout.rollback", Severity::Warning, manual)).await.unwrap();
    let mut validated = ctx.clone();
    validated["validated"] = json!(true);
    n.notify(&event("rollout.rolled_back", Severity::Info, validated)).await.unwrap();
    let t0 = Instant::now();
    while got.items.lock().unwrap().len() < 2 {
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", got.items.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let items = got.items.lock().unwrap().clone();
    assert_eq!(items.len(), 2, "{items:?}");
    let (trigger, resolve) = (&items[0], &items[1]);
    assert_eq!(trigger["routing_key"], "R0UT1NGKEY");
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(trigger["dedup_key"], "actuator/r-7");
    let p = &trigger["payload"];
    assert_eq!(p["summary"], "rollout.rollback of rollout r-7");
    assert_eq!(p["source"], "actuator-prod");
    assert_eq!(p["severity"], "critical");
    assert_eq!(p["component"], "chat.default");
    assert_eq!(p["class"], "rollout.rollback");
    assert!(p["timestamp"].as_str().unwrap().ends_with('Z'));
    let d = &p["custom_details"];
    assert_eq!(d["rollout_id"], "r-7");
    assert_eq!(d["slot"], "chat.default");
    assert_eq!(d["versions"], "v3 → v4");
    assert_eq!(d["decision"], "rollback");
    assert_eq!(d["reasons"], json!(["errors: 5% vs 1%"]));
    assert_eq!(trigger["links"][0]["href"], "https://actuator.example.com/v1/rollouts/r-7");
    assert_eq!(
        resolve,
        &json!({"routing_key": "R0UT1NGKEY", "event_action": "resolve", "dedup_key": "actuator/r-7"})
    );
    let defaults = registry.notifier_default_events("pagerduty").unwrap();
    assert_eq!(defaults.names(), vec!["rolled_back", "completed", "failed"]);
}
