//! Every strategy end to end through the daemon's API with simulated traffic: a good
//! candidate completes, a bad one is rolled back, and the state history follows the
//! state machine.

use actuator_tests::{FAST_ENGINE, TestDaemon, TrafficSim, call, http, start_rollout};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

// Comfortably inside the seed guard rail (errors ≤ 1 %), so steps without a control can pass it.
const GOOD: f64 = 0.005;
const BAD: f64 = 0.25;

/// Creates `slot` with version 1 (stable) and version 2 (candidate with `candidate_errors`).
async fn setup(c: &reqwest::Client, url: &str, slot: &str, candidate_errors: f64) {
    setup_with(c, url, slot, json!({"error_rate": candidate_errors, "latency_ms": 300.0})).await;
}

/// Creates `slot` with version 1 (stable) and version 2 (candidate simulated by `sim`).
async fn setup_with(c: &reqwest::Client, url: &str, slot: &str, sim: Value) {
    let (s, b) =
        call(c, Method::POST, &format!("{url}/v1/slots"), Some(json!({"name": slot}))).await;
    assert_eq!(s, 201, "{b}");
    for (model, sim) in [
        ("stable-model", json!({"error_rate": GOOD, "latency_ms": 300.0})),
        ("candidate-model", sim),
    ] {
        let doc = json!({"model": model, "sim": sim});
        let (s, b) = call(
            c,
            Method::POST,
            &format!("{url}/v1/slots/{slot}/versions"),
            Some(json!({"document": doc, "activate": model == "stable-model"})),
        )
        .await;
        assert_eq!(s, 201, "{b}");
    }
}

async fn start(c: &reqwest::Client, url: &str, req: Value) -> String {
    start_rollout(c, url, req).await["id"].as_str().unwrap().to_owned()
}

/// Drives traffic until the rollout ends; returns its final view.
async fn run(c: &reqwest::Client, url: &str, slot: &str, id: &str, limit: Duration) -> Value {
    run_users(c, url, slot, id, limit, 1_000_000).await
}

/// Like [`run`] with `users` distinct users (few users make pinned preview keys frequent).
async fn run_users(
    c: &reqwest::Client,
    url: &str,
    slot: &str,
    id: &str,
    limit: Duration,
    users: u64,
) -> Value {
    let mut sim = TrafficSim::new(0x5eed ^ id.len() as u64);
    sim.users = users;
    let t0 = Instant::now();
    loop {
        sim.drive(c, url, slot, 1000).await;
        let (_, v) = call(c, Method::GET, &format!("{url}/v1/rollouts/{id}"), None).await;
        let state = v["state"].as_str().unwrap_or("").to_owned();
        if matches!(state.as_str(), "completed" | "rolled_back" | "failed") {
            return v;
        }
        assert!(state != "paused", "rollout {id} paused: {}", v["paused_reason"]);
        assert!(t0.elapsed() < limit, "rollout {id} did not finish in {limit:?}: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every recorded transition is an edge of the state machine, and they chain.
fn assert_history(v: &Value) {
    let t = v["transitions"].as_array().expect("transitions");
    assert!(!t.is_empty());
    let mut prev: Option<&str> = None;
    for tr in t {
        let (from, to) = (tr["from"].as_str().unwrap(), tr["to"].as_str().unwrap());
        let from_s: actuator_core::DeploymentState = serde_json::from_value(json!(from)).unwrap();
        let to_s: actuator_core::DeploymentState = serde_json::from_value(json!(to)).unwrap();
        assert!(from_s.can_transition_to(to_s), "illegal transition {from} -> {to} in {v}");
        if let Some(p) = prev {
            assert_eq!(p, from, "transitions do not chain in {v}");
        }
        prev = Some(to);
    }
    assert_eq!(prev, v["state"].as_str(), "history ends elsewhere than the state");
}

async fn slot_active(c: &reqwest::Client, url: &str, slot: &str) -> u64 {
    let (_, s) = call(c, Method::GET, &format!("{url}/v1/slots/{slot}"), None).await;
    s["active_version"].as_u64().unwrap()
}

fn canary_request(slot: &str) -> Value {
    json!({
        "slot": slot, "candidate": {"version": 2}, "strategy": "canary",
        "canary": {"phases": [
            {"traffic_percent": 20, "min_samples": 300, "min_duration_secs": 0},
            {"traffic_percent": 50, "min_samples": 300, "min_duration_secs": 0},
            {"traffic_percent": 100, "min_samples": 300, "min_duration_secs": 0}
        ]}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_good_completes_and_bad_rolls_back() {
    let d = TestDaemon::start_with(FAST_ENGINE);
    let c = http();
    setup(&c, &d.url, "good", GOOD).await;
    setup(&c, &d.url, "bad", BAD).await;
    let good = start(&c, &d.url, canary_request("good")).await;
    let bad = start(&c, &d.url, canary_request("bad")).await;
    let vb = run(&c, &d.url, "bad", &bad, Duration::from_secs(90)).await;
    assert_eq!(vb["state"], "rolled_back", "{vb}");
    assert!(vb["rollback"]["automatic"].as_bool().unwrap());
    assert!(vb["last_decision"]["kind"] == "rollback", "{vb}");
    assert_eq!(slot_active(&c, &d.url, "bad").await, 1, "the stable version still serves");
    assert_history(&vb);
    let vg = run(&c, &d.url, "good", &good, Duration::from_secs(120)).await;
    assert_eq!(vg["state"], "completed", "{vg}");
    assert_eq!(slot_active(&c, &d.url, "good").await, 2, "the candidate is the new stable");
    assert_history(&vg);
}

/// Runs `strategy` with `settings` twice, with a good and a bad candidate.
async fn good_and_bad(strategy: &str, settings: Value, good_sim: Value, good_end: (&str, u64)) {
    let d = TestDaemon::start_with(FAST_ENGINE);
    let c = http();
    setup_with(&c, &d.url, "good", good_sim).await;
    setup(&c, &d.url, "bad", BAD).await;
    let req = |slot: &str| json!({"slot": slot, "candidate": {"version": 2}, "strategy": strategy, "settings": settings});
    let good = start(&c, &d.url, req("good")).await;
    let bad = start(&c, &d.url, req("bad")).await;
    let users = if strategy == "blue_green" { 5000 } else { 1_000_000 };
    let vb = run_users(&c, &d.url, "bad", &bad, Duration::from_secs(90), users).await;
    assert_eq!(vb["state"], "rolled_back", "{strategy}: {vb}");
    assert_eq!(vb["rollback"]["automatic"], true, "{strategy}: {vb}");
    assert_eq!(
        slot_active(&c, &d.url, "bad").await,
        1,
        "{strategy}: the stable version still serves"
    );
    assert_history(&vb);
    let vg = run_users(&c, &d.url, "good", &good, Duration::from_secs(120), users).await;
    assert_eq!(vg["state"], good_end.0, "{strategy}: {vg}");
    assert_eq!(
        slot_active(&c, &d.url, "good").await,
        good_end.1,
        "{strategy}: active version after the rollout"
    );
    assert_history(&vg);
}

fn plain() -> Value {
    json!({"error_rate": GOOD, "latency_ms": 300.0})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_watches_guard_rails() {
    good_and_bad(
        "immediate",
        json!({"watch_secs": 1, "min_samples": 300}),
        plain(),
        ("completed", 2),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_previews_then_switches() {
    let preview: Vec<String> = (0..500).map(|i| format!("user-{i}")).collect();
    good_and_bad(
        "blue_green",
        json!({"preview_keys": preview, "min_samples": 200, "preview_secs": 0, "post_promotion_secs": 1}),
        plain(),
        ("completed", 2),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_steps_up_with_guard_rails() {
    good_and_bad(
        "rolling",
        json!({"step_percent": 50, "step_secs": 0, "min_samples": 200}),
        plain(),
        ("completed", 2),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_compares_without_serving() {
    // A shadow pass leaves the stable version active: users never saw the candidate.
    good_and_bad(
        "shadow",
        json!({"min_samples": 300, "shadow_secs": 0}),
        plain(),
        ("completed", 1),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ab_test_picks_the_better_arm() {
    good_and_bad(
        "ab_test",
        json!({"primary": "quality", "min_samples": 200}),
        json!({"error_rate": GOOD, "latency_ms": 300.0, "quality": 4.6}),
        ("completed", 2),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_and_conversation_stickiness_shape_the_split() {
    let d = TestDaemon::start_with(FAST_ENGINE);
    let c = http();
    setup(&c, &d.url, "chat", GOOD).await;
    let req = json!({"slot": "chat", "candidate": {"version": 2}, "strategy": "canary",
        "canary": {"phases": [{"traffic_percent": 1, "min_samples": 1000000}]},
        "settings": {"stickiness": "conversation",
            "overrides": {"targeting_keys": {"qa-1": "canary"},
                          "attributes": [{"attribute": "tenant", "equals": "internal", "variant": "canary"}]}}});
    let id = start(&c, &d.url, req).await;
    let resolve = |ctx: Value| {
        let (c, url) = (c.clone(), d.url.clone());
        async move {
            call(
                &c,
                Method::POST,
                &format!("{url}/v1/resolve"),
                Some(json!({"slot": "chat", "context": ctx})),
            )
            .await
        }
    };
    let (_, r) = resolve(json!({"targetingKey": "qa-1", "conversationId": "c-0"})).await;
    assert_eq!(
        (r["variant"].as_str(), r["reason"].as_str()),
        (Some("canary"), Some("override")),
        "{r}"
    );
    let (_, r) =
        resolve(json!({"targetingKey": "someone", "conversationId": "c-0", "tenant": "internal"}))
            .await;
    assert_eq!(r["variant"], "canary", "{r}");
    // Sticky by conversation: one conversation keeps its variant whoever asks.
    let (_, a) = resolve(json!({"targetingKey": "u1", "conversationId": "conv-42"})).await;
    let (_, b) = resolve(json!({"targetingKey": "u2", "conversationId": "conv-42"})).await;
    assert_eq!(
        (a["variant"].clone(), a["bucket"].clone()),
        (b["variant"].clone(), b["bucket"].clone())
    );
    let (s, e) = resolve(json!({"targetingKey": "u1"})).await;
    assert_eq!(s, 400, "no conversation id, no sticky answer: {e}");
    // A split the router cannot serve is refused before any traffic moves.
    let (s, _) = call(
        &c,
        Method::POST,
        &format!("{}/v1/rollouts/{id}/abort", d.url),
        Some(serde_json::json!({})),
    )
    .await;
    assert_eq!(s, 200);
    for _ in 0..200 {
        let (_, v) = call(&c, Method::GET, &format!("{}/v1/rollouts/{id}", d.url), None).await;
        if v["state"] == "aborted" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let bad = json!({"slot": "chat", "candidate": {"version": 2}, "strategy": "canary",
        "settings": {"overrides": {"targeting_keys": {"qa-1": {"arm": "nope"}}}}});
    let (s, v) = call(&c, Method::POST, &format!("{}/v1/rollouts", d.url), Some(bad)).await;
    assert_eq!(s, 422, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("traffic split"), "{v}");
}
