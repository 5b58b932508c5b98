//! Validity under real traffic through the daemon: an override that sends an internal tenant's
//! users to the canary is tagged outside the experiment in the resolve answer, and their
//! failures cause neither a rollback nor a halt; the same failures untagged do roll back.

use actuator_tests::{FAST_ENGINE, TestDaemon, call, http, slot_with_candidate};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const GOOD: f64 = 0.005;

async fn setup(c: &reqwest::Client, url: &str, slot: &str) {
    let sim = json!({"error_rate": GOOD, "latency_ms": 300.0});
    slot_with_candidate(
        c,
        url,
        slot,
        json!({"model": "stable-model", "sim": sim}),
        json!({"model": "candidate-model", "sim": sim}),
    )
    .await;
}

async fn start(c: &reqwest::Client, url: &str, slot: &str) -> String {
    let req = json!({"slot": slot, "candidate": {"version": 2}, "strategy": "canary",
        "canary": {"phases": [{"traffic_percent": 10, "min_samples": 1000000}]},
        "settings": {"overrides": {"attributes": [
            {"attribute": "tenant", "equals": "internal", "variant": "canary"}]}}});
    let (s, b) = call(c, Method::POST, &format!("{url}/v1/rollouts"), Some(req)).await;
    assert_eq!(s, 201, "rollout refused: {b}");
    b["id"].as_str().expect("id").to_owned()
}

/// splitmix64 for reproducible traffic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Sends `n` requests for `slot` (10% from the internal tenant, whose requests fail 60% of the
/// time on the canary) and reports their outcomes with the resolve answer's phase, unit and,
/// when `echo_tag`, its `in_experiment`. Returns one resolve answer of an internal user.
async fn drive(
    c: &reqwest::Client,
    url: &str,
    slot: &str,
    rng: &mut Rng,
    n: usize,
    echo_tag: bool,
    next_id: &mut u64,
) -> Option<Value> {
    let mut internal_answer = None;
    let requests: Vec<Value> = (0..n)
        .map(|_| {
            if rng.uniform() < 0.1 {
                let user = rng.next() % 200;
                json!({"slot": slot, "context": {"targetingKey": format!("staff-{user}"), "tenant": "internal"}})
            } else {
                let user = rng.next() % 200_000;
                json!({"slot": slot, "context": {"targetingKey": format!("user-{user}")}})
            }
        })
        .collect();
    let (s, body) =
        call(c, Method::POST, &format!("{url}/v1/resolve"), Some(json!({"requests": requests})))
            .await;
    assert_eq!(s, 200, "resolve failed: {body}");
    let mut obs = Vec::new();
    for (req, r) in requests.iter().zip(body["results"].as_array().expect("results")) {
        let Some(rollout) = r["rollout_id"].as_str() else { continue };
        let internal = req["context"]["tenant"] == "internal";
        if internal && internal_answer.is_none() {
            internal_answer = Some(r.clone());
        }
        let variant = r["variant"].as_str().unwrap_or("stable");
        let error_rate = if internal && variant == "canary" { 0.6 } else { GOOD };
        *next_id += 1;
        let mut o = json!({
            "request_id": format!("{slot}-{next_id}"),
            "rollout_id": rollout,
            "phase": r["phase"],
            "unit": r["unit"],
            "arm": variant,
            "outcome": if rng.uniform() < error_rate { "error" } else { "ok" },
            "latency_ms": 300.0 * (1.0 + rng.uniform()),
        });
        if echo_tag {
            o["in_experiment"] = r["in_experiment"].clone();
        }
        obs.push(o);
    }
    let (s, rep) =
        call(c, Method::POST, &format!("{url}/v1/observations"), Some(Value::Array(obs))).await;
    assert_eq!(s, 200, "observations refused: {rep}");
    assert_eq!(rep["rejected"], 0, "{rep}");
    internal_answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_override_for_an_internal_tenant_neither_rolls_back_nor_halts() {
    let d = TestDaemon::start_with(FAST_ENGINE);
    let c = http();
    setup(&c, &d.url, "tagged").await;
    setup(&c, &d.url, "untagged").await;
    let tagged = start(&c, &d.url, "tagged").await;
    let untagged = start(&c, &d.url, "untagged").await;
    let state = |id: String| {
        let (c, url) = (c.clone(), d.url.clone());
        async move {
            let (_, v) = call(&c, Method::GET, &format!("{url}/v1/rollouts/{id}"), None).await;
            v
        }
    };

    // The resolve answer tags the override as outside the experiment; a split user is inside.
    let (_, r) = call(
        &c,
        Method::POST,
        &format!("{}/v1/resolve", d.url),
        Some(
            json!({"slot": "tagged", "context": {"targetingKey": "staff-1", "tenant": "internal"}}),
        ),
    )
    .await;
    assert_eq!((r["variant"].as_str(), r["reason"].as_str()), (Some("canary"), Some("override")));
    assert_eq!(r["in_experiment"], false, "{r}");
    let (_, r) = call(
        &c,
        Method::POST,
        &format!("{}/v1/resolve", d.url),
        Some(json!({"slot": "tagged", "context": {"targetingKey": "user-1"}})),
    )
    .await;
    assert_eq!(r["in_experiment"], true, "{r}");
    assert!(r["unit"].is_u64(), "a sticky split returns the unit hash: {r}");

    // The untagged copy of the same traffic must alarm (so this test can fail) ...
    let mut rng = Rng(7);
    let mut next_id = 0;
    let t0 = Instant::now();
    loop {
        drive(&c, &d.url, "untagged", &mut rng, 500, false, &mut next_id).await;
        let v = state(untagged.clone()).await;
        if matches!(v["state"].as_str(), Some("rolled_back" | "rolling_back" | "paused")) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "untagged never alarmed: {v}");
    }

    // ... while the tagged one keeps going through as much traffic.
    let mut rng = Rng(7);
    let mut sent = 0;
    while sent < 20_000 {
        let answer = drive(&c, &d.url, "tagged", &mut rng, 500, true, &mut next_id).await;
        if let Some(a) = answer {
            assert_eq!(a["in_experiment"], false, "{a}");
        }
        sent += 500;
        let v = state(tagged.clone()).await;
        assert!(
            matches!(v["state"].as_str(), Some("monitoring" | "rolling_out")),
            "tagged override traffic stopped the rollout: {v}"
        );
    }
    // The health view counts the override traffic apart from the comparison.
    let (s, h) =
        call(&c, Method::GET, &format!("{}/v1/rollouts/{tagged}/health", d.url), None).await;
    assert_eq!(s, 200, "{h}");
    let arms = h["last_evaluation"]["explanation"]["arms"].as_array().expect("arms").clone();
    let canary = arms.iter().find(|a| a["arm"] == "canary").expect("canary arm");
    assert!(canary["outside_requests"].as_u64().unwrap_or(0) > 1_000, "{canary}");
    assert!(canary["outside_error_events"].as_u64().unwrap_or(0) > 500, "{canary}");
    assert!(canary["error_rate"].as_f64().unwrap_or(1.0) < 0.05, "{canary}");
    assert!(canary["effective_requests"].as_f64().is_some(), "{canary}");
}
