//! The Slack notifier against a local receiver standing in for an incoming webhook: the
//! message's text and blocks, checked field by field.

use actuator_core::{Event, HostContext, Registry, Severity};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Got = Arc<Mutex<Vec<Value>>>;

async fn handle(State(g): State<Got>, body: Bytes) -> (StatusCode, &'static str) {
    g.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
    (StatusCode::OK, "ok")
}

#[tokio::test]
async fn a_rollback_is_posted_with_rollout_slot_versions_decision_reasons_and_link() {
    let got: Got = Default::default();
    let app = axum::Router::new()
        .route("/services/T0/B0/secret", axum::routing::post(handle))
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/services/T0/B0/secret", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let dir = tempfile::tempdir().unwrap();
    let mut registry = Registry::empty();
    actuator_notifier_slack::register(&mut registry).unwrap();
    let n = registry
        .notifier(
            "slack",
            json!({"webhook_url": url, "public_url": "https://actuator.example.com"}),
            &HostContext { data_dir: dir.path().to_path_buf() },
        )
        .unwrap();
    let defaults = registry.notifier_default_events("slack").unwrap();
    assert!(defaults.allows("rollout.rollback") && !defaults.allows("config.apply"));
    n.notify(&Event {
        kind: "rollout.rollback".into(),
        severity: Severity::Critical,
        at: chrono::Utc::now(),
        actor: "engine".into(),
        target: "r-9".into(),
        summary: "rollout r-9 of chat.default is rolling back (errors <5%> & more)".into(),
        details: json!({
            "rollout_id": "r-9", "slot": "chat.default", "stable_version": 1,
            "candidate_version": 2, "automatic": true,
            "decision": {"kind": "rollback", "rule": "errors", "reasons": ["errors: 4.0% vs 1.0%", "latency p99 +30%"]}
        }),
    })
    .await
    .unwrap();
    let t0 = Instant::now();
    while got.lock().unwrap().is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(10), "nothing posted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let m = got.lock().unwrap()[0].clone();
    let text = m["text"].as_str().unwrap();
    assert!(text.starts_with(":rotating_light: Rollout rolling back:"), "{text}");
    assert!(text.contains("&lt;5%&gt; &amp; more"), "mrkdwn escaped: {text}");
    let blocks = m["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[0]["text"]["text"], "Rollout rolling back: chat.default");
    let fields: Vec<&str> = blocks[2]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        vec![
            "*Rollout*\n`r-9`",
            "*Slot*\n`chat.default`",
            "*Versions*\nv1 → v2",
            "*Decision*\nrollback (errors)"
        ]
    );
    assert_eq!(blocks[3]["text"]["text"], "*Reasons*\n• errors: 4.0% vs 1.0%\n• latency p99 +30%");
    let context = blocks[4]["elements"][0]["text"].as_str().unwrap();
    assert!(
        context.starts_with(
            "<https://actuator.example.com/v1/rollouts/r-9|Rollout status> · rollout.rollback"
        ),
        "{context}"
    );
}
