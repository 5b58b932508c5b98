//! Observations over HTTP reach the health monitor: partial failures are reported per item
//! and the valid items kept, and the decisions show with their reasons.

use actuator_tests::{FAST_ENGINE, TestDaemon, TrafficSim, call, http};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn canary(
    c: &reqwest::Client,
    url: &str,
    slot: &str,
    errors: f64,
    min_samples: u64,
) -> String {
    call(c, Method::POST, &format!("{url}/v1/slots"), Some(json!({"name": slot}))).await;
    for (m, er, act) in [("a", 0.01, true), ("b", errors, false)] {
        let doc = json!({"model": m, "sim": {"error_rate": er}});
        call(
            c,
            Method::POST,
            &format!("{url}/v1/slots/{slot}/versions"),
            Some(json!({"document": doc, "activate": act})),
        )
        .await;
    }
    let req = json!({"slot": slot, "candidate": {"version": 2}, "strategy": "canary",
        "canary": {"phases": [{"traffic_percent": 50, "min_samples": min_samples, "min_duration_secs": 0}]}});
    let (s, v) = call(c, Method::POST, &format!("{url}/v1/rollouts"), Some(req)).await;
    assert_eq!(s, 201, "{v}");
    v["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_failures_are_reported_per_item_and_valid_items_kept() {
    let d = TestDaemon::start_with(FAST_ENGINE);
    let c = http();
    let id = canary(&c, &d.url, "chat", 0.01, 1_000_000).await;
    let ok = |rid: &str, arm: &str| json!({"request_id": rid, "rollout_id": id, "arm": arm, "outcome": "ok", "latency_ms": 200.0, "cost": 0.001});
    let batch = json!([
        ok("r1", "canary"),
        ok("r2", "stable"),
        {"request_id": "r3", "rollout_id": id, "arm": "canary", "outcome": "ok", "latency_ms": -5.0},
        {"request_id": "r4", "rollout_id": "ro-nope", "arm": "canary", "outcome": "ok"},
        {"request_id": "r5", "rollout_id": id, "arm": "purple", "outcome": "ok"},
        {"request_id": "r6", "rollout_id": id, "arm": "canary", "outcome": "ok", "quality": 9.0},
        {"request_id": "r7", "rollout_id": id, "arm": "canary"},
        ok("r1", "canary"),
        {"request_id": "r8", "rollout_id": id, "arm": "canary", "outcome": "timeout"}
    ]);
    let (s, r) = call(&c, Method::POST, &format!("{}/v1/observations", d.url), Some(batch)).await;
    assert_eq!(s, 200, "{r}");
    let bad: Vec<u64> =
        r["results"].as_array().unwrap().iter().map(|e| e["index"].as_u64().unwrap()).collect();
    assert_eq!(bad, [2, 3, 4, 5, 6], "{r}");
    let msg = |i: usize| r["results"][i]["error"].as_str().unwrap().to_owned();
    assert!(msg(0).contains("latency"), "{r}");
    assert!(msg(1).contains("ro-nope"), "{r}");
    assert!(msg(2).contains("purple"), "{r}");
    assert!(msg(3).contains("quality"), "{r}");
    assert!(msg(4).contains("outcome is required"), "{r}");
    assert_eq!(r["duplicates"], 1, "a retry of r1 is not counted twice: {r}");
    assert_eq!(r["accepted"], 3, "{r}");

    // NDJSON: a line that is not JSON (Python writes NaN) fails alone.
    let nd = format!(
        "{}\n{{\"request_id\": \"n2\", \"rollout_id\": \"{id}\", \"arm\": \"canary\", \"outcome\": \"ok\", \"latency_ms\": NaN}}\n{}\n",
        json!({"request_id": "n1", "rollout_id": id, "arm": "canary", "outcome": "error", "latency_ms": 900.0}),
        json!({"request_id": "n3", "rollout_id": id, "request_quality": 1})
    );
    let resp = c
        .post(format!("{}/v1/observations", d.url))
        .header("content-type", "application/x-ndjson")
        .body(nd)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let r: Value = resp.json().await.unwrap();
    assert_eq!(r["accepted"], 1, "{r}");
    assert!(r["results"][0]["error"].as_str().unwrap().contains("not valid JSON"), "{r}");
    assert!(r["results"][1]["error"].as_str().unwrap().contains("request_quality"), "{r}");

    // A late quality score for a request already seen.
    let (_, r) = call(
        &c,
        Method::POST,
        &format!("{}/v1/observations", d.url),
        Some(json!([{"request_id": "r1", "rollout_id": id, "arm": "canary", "quality": 4.5}])),
    )
    .await;
    assert_eq!(r["accepted"], 1, "{r}");

    // Too many items.
    let many: Vec<Value> = (0..10_001).map(|i| ok(&format!("m{i}"), "canary")).collect();
    let (s, r) =
        call(&c, Method::POST, &format!("{}/v1/observations", d.url), Some(Value::Array(many)))
            .await;
    assert_eq!((s, r["error"]["code"].as_str()), (413, Some("batch_too_large")), "{r}");

    let (_, v) = call(&c, Method::GET, &format!("{}/v1/rollouts/{id}", d.url), None).await;
    let canary = v["arms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["arm"] == "canary")
        .cloned()
        .unwrap_or_default();
    assert!(canary["requests"].as_u64().unwrap_or(0) >= 3, "{v}");
    assert!(
        canary["errors"].as_u64().unwrap_or(0) >= 2,
        "the timeout and the error count as errors: {v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_are_visible_with_their_reasons() {
    let d = TestDaemon::start_with(FAST_ENGINE);
    let c = http();
    let id = canary(&c, &d.url, "chat", 0.10, 5000).await;
    let mut sim = TrafficSim::new(3);
    let t0 = Instant::now();
    let view = loop {
        sim.drive(&c, &d.url, "chat", 1000).await;
        let (_, v) = call(&c, Method::GET, &format!("{}/v1/rollouts/{id}", d.url), None).await;
        if v["state"] == "rolling_back" || v["state"] == "rolled_back" {
            break v;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "no rollback: {v}");
    };
    let dec = &view["last_decision"];
    assert_eq!(dec["kind"], "rollback", "{view}");
    assert!(!dec["reasons"].as_array().unwrap().is_empty(), "{view}");
    assert!(
        dec["rule"].as_str().unwrap().contains("error"),
        "the rule names the error metric: {view}"
    );
    let (s, h) = call(&c, Method::GET, &format!("{}/v1/rollouts/{id}/health", d.url), None).await;
    assert_eq!(s, 200);
    let ex = &h["last_evaluation"]["explanation"];
    assert!(ex["arms"].as_array().is_some_and(|a| a.len() == 2), "{h}");
    let metrics = ex["comparisons"][0]["metrics"].as_array().unwrap();
    let errors = metrics.iter().find(|m| m["metric"] == "errors").expect("errors metric");
    assert!(
        errors["estimate"].is_number() && errors["upper"].is_number(),
        "estimates and intervals: {errors}"
    );
    assert!(
        h["history"].as_array().is_some_and(|x| !x.is_empty()),
        "bounded history of decisions: {h}"
    );
}
