//! Two replicas on one PostgreSQL database (`[cluster] enabled`): one leads, the other
//! follows and forwards what only the leader serves. An apply and a rollout control sent to
//! the follower take effect and are audited once, with the caller's identity; both replicas'
//! `GET /v1/cluster` name the same leader and epoch.
//!
//! Needs the local PostgreSQL (CI starts one; without it, and outside CI, the test says so
//! and is skipped).

use actuator_store_postgres::testing::TestDatabase;
use actuator_tests::{FAST_ENGINE, TestDaemon, call_as, http};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const ADMIN: &str = "cluster-admin-secret-0123456789abcdef";

fn settings(db: &TestDatabase, id: &str) -> String {
    format!(
        "{FAST_ENGINE}[store]\nplugin = \"postgres\"\nconfig = {{ url = \"{}\" }}\n[cluster]\nenabled = true\nreplica_id = \"{id}\"\nlease_ms = 1000\n",
        db.url()
    )
}

async fn cluster(c: &reqwest::Client, url: &str) -> Value {
    let (s, b) = call_as(c, Method::GET, &format!("{url}/v1/cluster"), Some(ADMIN), None).await;
    assert_eq!(s, 200, "{b}");
    b
}

/// Polls `f` until it gives `Some`, for at most `within`.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    within: Duration,
    what: &str,
    mut f: impl FnMut() -> F,
) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(t0.elapsed() < within, "{what} did not happen within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_forwards_writes_and_controls_to_the_leader_audited_once_as_the_caller() {
    let Some(db) = TestDatabase::create().await else { return };
    let env = [("ACTUATOR_ADMIN_TOKEN", ADMIN)];
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = TestDaemon::start_full(dir_a.path(), Some(&settings(&db, "r1")), &env);
    let c = http();
    eventually(Duration::from_secs(10), "r1 leading", || async {
        let v = cluster(&c, &a.url).await;
        (v["replica"]["role"] == "leader").then_some(())
    })
    .await;
    let b = TestDaemon::start_full(dir_b.path(), Some(&settings(&db, "r2")), &env);
    let (ua, ub) = (a.url.clone(), b.url.clone());
    // The follower knows the leader once its election polled the lease.
    let seen = eventually(Duration::from_secs(10), "r2 following r1", || async {
        let v = cluster(&c, &ub).await;
        (v["leader"]["id"] == "r1" && v["replicas"].as_array().is_some_and(|r| r.len() == 2))
            .then_some(v)
    })
    .await;
    assert_eq!(seen["replica"]["id"], "r2");
    assert_eq!(seen["replica"]["role"], "follower");
    assert_eq!(seen["replica"]["epoch"], Value::Null);
    assert_eq!(seen["leader"]["url"], ua.as_str());
    let on_a = cluster(&c, &ua).await;
    assert_eq!(on_a["leader"], seen["leader"], "both replicas name the same leader");
    assert_eq!(on_a["replica"]["epoch"], on_a["leader"]["epoch"]);
    let epoch = on_a["leader"]["epoch"].as_u64().unwrap();
    assert!(epoch >= 1);
    let (s, ready) = call_as(&c, Method::GET, &format!("{ub}/readyz"), None, None).await;
    assert_eq!(s, 200, "{ready}");
    assert_eq!(ready["cluster"], json!({"role": "follower", "leader": "r1", "epoch": epoch}));

    // A token made through the follower: forwarded (admin), stored once, known to both.
    let (s, made) = call_as(
        &c,
        Method::POST,
        &format!("{ub}/v1/tokens"),
        Some(ADMIN),
        Some(json!({"name": "alice", "role": "operator"})),
    )
    .await;
    assert_eq!(s, 201, "{made}");
    let alice = made["secret"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(5), "r2 knowing alice's token", || async {
        let (s, _) = call_as(&c, Method::GET, &format!("{ub}/v1/whoami"), Some(&alice), None).await;
        (s == 200).then_some(())
    })
    .await;

    // Writes sent to the follower, as alice.
    let (s, body) = call_as(
        &c,
        Method::POST,
        &format!("{ub}/v1/slots"),
        Some(&alice),
        Some(json!({"name": "chat"})),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    for (model, activate) in [("small", true), ("big", false)] {
        let (s, body) = call_as(
            &c,
            Method::POST,
            &format!("{ub}/v1/slots/chat/versions"),
            Some(&alice),
            Some(json!({"document": {"model": model}, "activate": activate})),
        )
        .await;
        assert_eq!(s, 201, "{body}");
    }
    // The follower serves resolve itself, from its table, refreshed by the change feed.
    eventually(Duration::from_secs(3), "r2 resolving chat", || async {
        let (s, v) = call_as(
            &c,
            Method::POST,
            &format!("{ub}/v1/resolve"),
            Some(&alice),
            Some(json!({"slot": "chat", "context": {"targetingKey": "u1"}})),
        )
        .await;
        (s == 200 && v["config_version"] == 1).then_some(())
    })
    .await;
    let req = json!({
        "slot": "chat", "candidate": {"version": 2}, "strategy": "canary",
        "canary": {"phases": [{"traffic_percent": 10, "min_samples": 100000, "min_duration_secs": 0}]}
    });
    let (s, started) =
        call_as(&c, Method::POST, &format!("{ub}/v1/rollouts"), Some(&alice), Some(req)).await;
    assert_eq!(s, 201, "{started}");
    let id = started["id"].as_str().unwrap().to_owned();
    let (s, paused) = call_as(
        &c,
        Method::POST,
        &format!("{ub}/v1/rollouts/{id}/pause"),
        Some(&alice),
        Some(json!({"reason": "checking"})),
    )
    .await;
    assert_eq!(s, 200, "{paused}");
    assert_eq!(paused["state"], "paused");
    // The rollout reads (which need the engine) are forwarded too.
    let (s, view) =
        call_as(&c, Method::GET, &format!("{ub}/v1/rollouts/{id}"), Some(&alice), None).await;
    assert_eq!(s, 200, "{view}");
    assert_eq!(view["state"], "paused");

    // Audited once each, as alice, in one chain (read on either replica).
    let (s, audit) =
        call_as(&c, Method::GET, &format!("{ub}/v1/audit?limit=100"), Some(ADMIN), None).await;
    assert_eq!(s, 200, "{audit}");
    let entries = audit["items"].as_array().expect("audit items");
    let count = |action: &str| {
        entries.iter().filter(|e| e["action"] == action && e["actor"] == "alice").count()
    };
    assert_eq!(count("slot.create"), 1, "{audit}");
    assert_eq!(count("config.apply"), 1, "{audit}");
    assert_eq!(count("config.stage"), 1, "{audit}");
    assert_eq!(count("rollout.pause"), 1, "{audit}");
    let by_other = entries.iter().filter(|e| {
        let a = e["action"].as_str().unwrap_or("");
        (a.starts_with("config.") || a == "rollout.pause" || a == "slot.create")
            && e["actor"] != "alice"
    });
    assert_eq!(by_other.count(), 0, "{audit}");
    let (s, verify) =
        call_as(&c, Method::GET, &format!("{ub}/v1/audit/verify"), Some(ADMIN), None).await;
    assert_eq!(s, 200, "{verify}");
    assert_eq!(verify["ok"], true, "{verify}");

    // A request marked as forwarded is never forwarded again.
    let r = c
        .post(format!("{ub}/v1/slots"))
        .bearer_auth(&alice)
        .header("x-actuator-forwarded-by", "r9")
        .json(&json!({"name": "other"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "not_leader", "{v}");
    // Too large a body is refused by the follower before it is sent on.
    let big = json!({"document": {"model": "x".repeat(2 * 1024 * 1024)}});
    let (s, v) =
        call_as(&c, Method::POST, &format!("{ub}/v1/slots/chat/versions"), Some(&alice), Some(big))
            .await;
    assert_eq!(s, 413, "{v}");
    drop(b);
    drop(a);
}
