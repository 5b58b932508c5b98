//! Decisions through the daemon: a healthy candidate on a stable that breaks the seed's
//! absolute thresholds completes (the thresholds are SLO guards compared with the stable,
//! not limits on the candidate's own numbers), and a candidate with doubled errors rolls back.

use actuator_tests::{FAST_ENGINE, TestDaemon, TrafficSim, call, http, start_rollout};
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

/// Drives traffic until the rollout ends (or `limit` passes); returns its final view.
async fn drive(c: &reqwest::Client, url: &str, name: &str, id: &str, limit: Duration) -> Value {
    let mut sim = TrafficSim::new(0xdec1 ^ id.len() as u64);
    let t0 = Instant::now();
    loop {
        sim.drive(c, url, name, 1000).await;
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

fn request(name: &str) -> Value {
    json!({
        "slot": name, "candidate": {"version": 2}, "strategy": "canary",
        "canary": {"phases": [
            {"traffic_percent": 20, "min_samples": 300, "min_duration_secs": 0,
             "margins": {"errors_abs": 0.02, "latency_ratio": 1.2, "cost_ratio": 1.2, "quality_abs": 0.3}},
            {"traffic_percent": 100, "min_samples": 300, "min_duration_secs": 0}
        ]}
    })
}

async fn start(c: &reqwest::Client, url: &str, req: Value) -> String {
    start_rollout(c, url, req).await["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_candidate_on_a_stable_with_p99_above_two_seconds_completes() {
    let d = TestDaemon::start_with(FAST_ENGINE);
    let c = http();
    // Median 1500 ms with σ = 0.3: p95 ≈ 2.5 s and p99 ≈ 3 s in both configs.
    let slow = json!({"error_rate": 0.005, "latency_ms": 1500.0});
    slot(&c, &d.url, "slow", slow.clone(), slow).await;
    // Both arms run the same config: at the default α = 0.05 a healthy candidate is rolled
    // back in up to 5% of rollouts by design, and the assignment salt is new in every run. A
    // budget of 0.001 keeps this test's own false-failure rate at most 0.1%.
    let mut req = request("slow");
    req["success_criteria"] = json!({"alpha": 0.001});
    let id = start(&c, &d.url, req).await;
    let v = drive(&c, &d.url, "slow", &id, Duration::from_secs(150)).await;
    assert_eq!(v["state"], "completed", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidate_with_doubled_errors_rolls_back_naming_the_rule() {
    let d = TestDaemon::start_with(FAST_ENGINE);
    let c = http();
    slot(
        &c,
        &d.url,
        "errs",
        json!({"error_rate": 0.05, "latency_ms": 300.0}),
        json!({"error_rate": 0.10, "latency_ms": 300.0}),
    )
    .await;
    let mut req = request("errs");
    req["canary"]["phases"][0]["min_samples"] = json!(1_000_000);
    let id = start(&c, &d.url, req).await;
    let v = drive(&c, &d.url, "errs", &id, Duration::from_secs(150)).await;
    assert_eq!(v["state"], "rolled_back", "{v}");
    let reasons = v["last_decision"]["reasons"].to_string();
    assert!(reasons.contains("errors") || reasons.contains("slo:error_rate"), "{reasons}");
}
