//! SIGKILL at random moments during live rollouts, 50 times: no rollout is lost, none goes
//! back to an earlier step or state, no acknowledged audit entry disappears, the audit
//! chain verifies, and the rollouts carry on after each restart.

use actuator_tests::{FAST_ENGINE, TestDaemon, TrafficSim, call, http};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

const SLOTS: [&str; 3] = ["chat", "search", "summarize"];

fn rounds() -> usize {
    std::env::var("ACTUATOR_CHAOS_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(50)
}

/// Where a rollout stands: terminal rollouts keep their state; live ones never go back a step.
fn rank(v: &Value) -> (u8, u64) {
    let terminal = matches!(v["state"].as_str(), Some("completed" | "rolled_back" | "failed"));
    let rolling_back = v["state"] == "rolling_back";
    (u8::from(rolling_back) + 2 * u8::from(terminal), v["phase"].as_u64().unwrap_or(0))
}

async fn ensure_rollout(c: &reqwest::Client, url: &str, slot: &str, n: u64) -> Option<String> {
    let (_, list) =
        call(c, Method::GET, &format!("{url}/v1/rollouts?active=true&slot={slot}"), None).await;
    if list["items"].as_array().is_some_and(|a| !a.is_empty()) {
        return None;
    }
    let bad = n.is_multiple_of(3);
    let doc = json!({"model": format!("{slot}-{n}"), "sim": {"error_rate": if bad { 0.3 } else { 0.01 }}});
    let (s, v) = call(
        c,
        Method::POST,
        &format!("{url}/v1/slots/{slot}/versions"),
        Some(json!({"document": doc, "activate": false})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let version = v["version_number"].as_u64().unwrap();
    let req = json!({
        "slot": slot, "candidate": {"version": version}, "strategy": "canary",
        "rollback_mode": if n.is_multiple_of(2) { "gradual" } else { "fast" },
        "canary": {"phases": [
            {"traffic_percent": 10, "min_samples": 400, "min_duration_secs": 0},
            {"traffic_percent": 30, "min_samples": 400, "min_duration_secs": 0},
            {"traffic_percent": 60, "min_samples": 400, "min_duration_secs": 0}
        ]}
    });
    let (s, v) = call(c, Method::POST, &format!("{url}/v1/rollouts"), Some(req)).await;
    assert_eq!(s, 201, "{v}");
    v["id"].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_live_rollouts_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = http();
    let mut d = TestDaemon::start_in_with(dir.path(), Some(FAST_ENGINE));
    for slot in SLOTS {
        call(&c, Method::POST, &format!("{}/v1/slots", d.url), Some(json!({"name": slot}))).await;
        let doc = json!({"model": format!("{slot}-0"), "sim": {"error_rate": 0.01}});
        call(
            &c,
            Method::POST,
            &format!("{}/v1/slots/{slot}/versions", d.url),
            Some(json!({"document": doc})),
        )
        .await;
    }
    let mut seen: BTreeMap<String, Value> = BTreeMap::new();
    let mut sim = TrafficSim::new(7);
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut n = 1;
    let mut first: BTreeMap<String, (u8, u64)> = BTreeMap::new();
    for round in 0..rounds() {
        for slot in SLOTS {
            if let Some(id) = ensure_rollout(&c, &d.url, slot, n).await {
                seen.insert(id, Value::Null);
            }
            n += 1;
        }
        // Live traffic for a random while, then SIGKILL.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let batches = 1 + rng % 4;
        for _ in 0..batches {
            for slot in SLOTS {
                sim.drive(&c, &d.url, slot, 300).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(rng % 150)).await;
        for (id, last) in seen.iter_mut() {
            let (s, v) = call(&c, Method::GET, &format!("{}/v1/rollouts/{id}", d.url), None).await;
            assert_eq!(s, 200, "round {round}: rollout {id} unreadable before the kill");
            first.entry(id.clone()).or_insert_with(|| rank(&v));
            *last = v;
        }
        let (_, audit) = call(&c, Method::GET, &format!("{}/v1/audit?limit=1", d.url), None).await;
        let head = audit["items"][0].clone();
        d.kill();
        d = TestDaemon::start_in_with(dir.path(), Some(FAST_ENGINE));
        for (id, before) in &seen {
            let (s, after) =
                call(&c, Method::GET, &format!("{}/v1/rollouts/{id}", d.url), None).await;
            assert_eq!(s, 200, "round {round}: rollout {id} lost");
            assert!(
                rank(&after) >= rank(before),
                "round {round}: rollout {id} went back from {} step {} to {} step {}",
                before["state"],
                before["phase"],
                after["state"],
                after["phase"]
            );
            if before["state"] == after["state"] && before["phase"] == after["phase"] {
                assert_eq!(
                    before["phase_started_at"], after["phase_started_at"],
                    "round {round}: {id}'s step timer restarted"
                );
            }
        }
        let seq = head["seq"].as_u64().unwrap();
        let (_, got) = call(
            &c,
            Method::GET,
            &format!("{}/v1/audit?order=asc&cursor={}&limit=1", d.url, seq - 1),
            None,
        )
        .await;
        assert_eq!(
            got["items"][0]["hash"], head["hash"],
            "round {round}: acknowledged audit entry {seq} changed or vanished"
        );
        let (_, report) = call(&c, Method::GET, &format!("{}/v1/audit/verify", d.url), None).await;
        assert_eq!(report["ok"], true, "round {round}: {report}");
    }
    // The rollouts moved on across restarts: resumed ones advanced, and some finished.
    let progressed = seen.iter().filter(|(id, v)| rank(v) > first[*id]).count();
    assert!(progressed > 0, "no rollout made progress across {} restarts", rounds());
    let finished = seen
        .values()
        .filter(|v| matches!(v["state"].as_str(), Some("completed" | "rolled_back")))
        .count();
    assert!(finished > 0, "no rollout finished: {seen:?}");
}
