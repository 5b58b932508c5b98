//! "Acknowledged" means durable: observations answered with a 200 are counted after a
//! SIGKILL that follows the last answer at once, round after round on the same data dir;
//! a batch the store cannot write gets a 503 and is not counted until it is sent again.

use actuator_tests::{TestDaemon, call, http};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Batches per round and observations per batch: 20,000 observations a round.
const BATCHES: usize = 100;
const PER_BATCH: usize = 200;
const ROUNDS: usize = 3;

/// Per-arm request counts of the rollout's current step, as the API shows them.
async fn arm_requests(c: &reqwest::Client, url: &str, id: &str) -> BTreeMap<String, u64> {
    let (s, v) = call(c, Method::GET, &format!("{url}/v1/rollouts/{id}"), None).await;
    assert_eq!(s, 200, "{v}");
    v["arms"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| Some((a["arm"].as_str()?.to_owned(), a["requests"].as_u64()?)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_right_after_the_last_200_loses_no_acknowledged_observation() {
    let dir = tempfile::tempdir().unwrap();
    let c = http();
    let mut d = TestDaemon::start_in(dir.path());
    call(&c, Method::POST, &format!("{}/v1/slots", d.url), Some(json!({"name": "chat"}))).await;
    for (model, activate) in [("a", true), ("b", false)] {
        let (s, v) = call(
            &c,
            Method::POST,
            &format!("{}/v1/slots/chat/versions", d.url),
            Some(json!({"document": {"model": model}, "activate": activate})),
        )
        .await;
        assert_eq!(s, 201, "{v}");
    }
    // A canary that keeps watching: its minimum sample is never reached in this test.
    let req = json!({"slot": "chat", "candidate": {"version": 2}, "strategy": "canary",
        "canary": {"phases": [{"traffic_percent": 50, "min_samples": 100_000_000u64, "min_duration_secs": 0}]}});
    let (s, v) = call(&c, Method::POST, &format!("{}/v1/rollouts", d.url), Some(req)).await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();

    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    let mut next = 0u64;
    for round in 0..ROUNDS {
        for _ in 0..BATCHES {
            let mut sent: BTreeMap<String, u64> = BTreeMap::new();
            let batch: Vec<Value> = (0..PER_BATCH)
                .map(|_| {
                    next += 1;
                    let arm = if next.is_multiple_of(2) { "canary" } else { "stable" };
                    *sent
                        .entry(if arm == "stable" { "control" } else { arm }.to_owned())
                        .or_default() += 1;
                    json!({"request_id": format!("req-{next}"), "rollout_id": id, "arm": arm,
                        "outcome": "ok", "latency_ms": 100.0 + (next % 50) as f64, "cost": 0.001})
                })
                .collect();
            let (s, r) = call(
                &c,
                Method::POST,
                &format!("{}/v1/observations", d.url),
                Some(Value::Array(batch)),
            )
            .await;
            assert_eq!(s, 200, "round {round}: {r}");
            assert_eq!(r["accepted"], PER_BATCH as u64, "round {round}: {r}");
            for (arm, n) in sent {
                *acked.entry(arm).or_default() += n;
            }
        }
        // No grace period: the process dies right after the last acknowledgement.
        d.kill();
        d = TestDaemon::start_in(dir.path());
        // The view shows the analysis of the rollout's last look; the loop looks within a
        // tick of the start. Counts only rise towards the acknowledged ones, never past them.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let counted = arm_requests(&c, &d.url, &id).await;
            for (arm, n) in &counted {
                assert!(
                    *n <= acked.get(arm).copied().unwrap_or(0),
                    "round {round}: {arm} counted {n}, more than acknowledged: {acked:?}"
                );
            }
            if counted == acked {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: acknowledged {acked:?} (total {}), counted after the restart \
                 {counted:?}",
                acked.values().sum::<u64>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_store_cannot_write_gets_503_and_counts_once_when_sent_again() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let c = http();
    let mut d = TestDaemon::start_in(dir.path());
    call(&c, Method::POST, &format!("{}/v1/slots", d.url), Some(json!({"name": "chat"}))).await;
    for (model, activate) in [("a", true), ("b", false)] {
        call(
            &c,
            Method::POST,
            &format!("{}/v1/slots/chat/versions", d.url),
            Some(json!({"document": {"model": model}, "activate": activate})),
        )
        .await;
    }
    let req = json!({"slot": "chat", "candidate": {"version": 2}, "strategy": "canary",
        "canary": {"phases": [{"traffic_percent": 50, "min_samples": 100_000_000u64, "min_duration_secs": 0}]}});
    let (s, v) = call(&c, Method::POST, &format!("{}/v1/rollouts", d.url), Some(req)).await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let batch = |from: u64| -> Value {
        Value::Array(
            (from..from + 100)
                .map(|i| {
                    let arm = if i.is_multiple_of(2) { "canary" } else { "stable" };
                    json!({"request_id": format!("req-{i}"), "rollout_id": id, "arm": arm,
                        "outcome": "ok", "latency_ms": 120.0})
                })
                .collect(),
        )
    };
    let url = format!("{}/v1/observations", d.url);
    let (s, r) = call(&c, Method::POST, &url, Some(batch(0))).await;
    assert_eq!((s, r["accepted"].as_u64()), (200, Some(100)), "{r}");

    // Another process holds the database's write lock past the daemon's busy timeout.
    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", d.db_path().display()))
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE").execute(&mut other).await.unwrap();
    let (s, r) = call(&c, Method::POST, &url, Some(batch(100))).await;
    assert_eq!((s, r["error"]["code"].as_str()), (503, Some("store_unavailable")), "{r}");
    assert!(r["error"]["message"].as_str().unwrap_or("").contains("retry"), "{r}");
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    other.close().await.unwrap();

    // The same batch again: taken whole, counted once, and still there after a SIGKILL.
    let (s, r) = call(&c, Method::POST, &url, Some(batch(100))).await;
    assert_eq!(
        (s, r["accepted"].as_u64(), r["duplicates"].as_u64()),
        (200, Some(100), Some(0)),
        "{r}"
    );
    d.kill();
    d = TestDaemon::start_in(dir.path());
    let want: BTreeMap<String, u64> =
        [("canary".to_owned(), 100), ("control".to_owned(), 100)].into();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let counted = arm_requests(&c, &d.url, &id).await;
        if counted == want {
            break;
        }
        assert!(Instant::now() < deadline, "counted {counted:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
