//! A/B tests on part of the traffic: only requests enrolled in the test are compared (the
//! others are served the stable config and tagged `in_experiment: false`), the better arm
//! wins, and control wins when it is the best.

use actuator_tests::{FAST_ENGINE, TestDaemon, TrafficSim, call, http};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// A slot whose stable (version 1) and candidate (version 2) are simulated by `stable` and
/// `candidate`.
async fn slot(c: &reqwest::Client, url: &str, name: &str, stable: Value, candidate: Value) {
    let (s, b) =
        call(c, Method::POST, &format!("{url}/v1/slots"), Some(json!({"name": name}))).await;
    assert_eq!(s, 201, "{b}");
    for (i, sim) in [stable, candidate].into_iter().enumerate() {
        let doc = json!({"model": format!("model-{i}"), "sim": sim});
        let body = json!({"document": doc, "activate": i == 0});
        let (s, b) =
            call(c, Method::POST, &format!("{url}/v1/slots/{name}/versions"), Some(body)).await;
        assert_eq!(s, 201, "{b}");
    }
}

async fn start_ab(c: &reqwest::Client, url: &str, name: &str) -> String {
    // A fixed id fixes the bucketing salt, so every run assigns the simulated users alike
    // (a random salt made the comparison a fresh draw of its false-alarm chance each run).
    let req = json!({
        "id": format!("fixed-{name}"),
        "slot": name, "candidate": {"version": 2}, "strategy": "ab_test",
        "settings": {"primary": "quality", "traffic_percent": 40, "min_samples": 200}
    });
    let (s, b) = call(c, Method::POST, &format!("{url}/v1/rollouts"), Some(req)).await;
    assert_eq!(s, 201, "A/B refused: {b}");
    b["id"].as_str().unwrap().to_owned()
}

/// Drives traffic until the test ends; a pause (a sample-ratio halt, say) fails the test.
async fn drive(c: &reqwest::Client, url: &str, name: &str, id: &str) -> Value {
    let mut sim = TrafficSim::new(0xab ^ name.len() as u64);
    let t0 = Instant::now();
    loop {
        sim.drive(c, url, name, 1000).await;
        let (_, v) = call(c, Method::GET, &format!("{url}/v1/rollouts/{id}"), None).await;
        let state = v["state"].as_str().unwrap_or("").to_owned();
        if matches!(state.as_str(), "completed" | "rolled_back" | "failed" | "aborted") {
            return v;
        }
        assert!(state != "paused", "A/B {id} paused: {}", v["paused_reason"]);
        assert!(t0.elapsed() < Duration::from_secs(150), "A/B {id} did not end: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn active_version(c: &reqwest::Client, url: &str, name: &str) -> u64 {
    let (s, v) = call(c, Method::GET, &format!("{url}/v1/slots/{name}"), None).await;
    assert_eq!(s, 200, "{v}");
    v["active_version"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_traffic_ab_test_finds_the_better_arm() {
    let d = TestDaemon::start_with(FAST_ENGINE);
    let c = http();
    let base = json!({"error_rate": 0.01, "latency_ms": 300.0, "quality": 4.0});
    let better = json!({"error_rate": 0.01, "latency_ms": 300.0, "quality": 4.6});
    slot(&c, &d.url, "ab-better", base, better).await;
    let id = start_ab(&c, &d.url, "ab-better").await;
    // Outside the 40 % in the test, requests are served stable and tagged as not enrolled.
    let (s, r) = call(
        &c,
        Method::POST,
        &format!("{}/v1/resolve", d.url),
        Some(json!({"requests": (0..200).map(|i| json!({"slot": "ab-better", "context": {"targetingKey": format!("probe-{i}")}})).collect::<Vec<_>>()})),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    let tags: Vec<bool> = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x["in_experiment"].as_bool())
        .collect();
    assert_eq!(tags.len(), 200, "every answer says whether it is enrolled: {r}");
    let enrolled = tags.iter().filter(|t| **t).count();
    assert!((40..=120).contains(&enrolled), "about 40 % enrolled, got {enrolled} of 200");
    let v = drive(&c, &d.url, "ab-better", &id).await;
    assert_eq!(v["state"], "completed", "{v}");
    assert_eq!(active_version(&c, &d.url, "ab-better").await, 2, "the better arm is active: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_traffic_ab_test_keeps_control_when_it_is_best() {
    let d = TestDaemon::start_with(FAST_ENGINE);
    let c = http();
    let base = json!({"error_rate": 0.01, "latency_ms": 300.0, "quality": 4.2});
    let worse = json!({"error_rate": 0.01, "latency_ms": 300.0, "quality": 3.6});
    slot(&c, &d.url, "ab-control", base, worse).await;
    let id = start_ab(&c, &d.url, "ab-control").await;
    let v = drive(&c, &d.url, "ab-control", &id).await;
    assert_eq!(active_version(&c, &d.url, "ab-control").await, 1, "control stays: {v}");
    assert_eq!(v["state"], "completed", "control won the test: {v}");
    let outcome = v["outcome"].as_str().unwrap_or_default();
    assert!(outcome.contains("control"), "{v}");
}
