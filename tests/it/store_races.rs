//! Races that the store settles inside its write transactions: parallel starts under the
//! limit of active rollouts, parallel retries, applies racing a start on the same slot, and
//! parallel applies with and without a precondition.

use actuator_tests::{FAST_ENGINE, TestDaemon, call, http};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// A canary that stays in its first step: nobody sends it traffic.
fn request(slot: &str, candidate: u64) -> Value {
    json!({
        "slot": slot, "candidate": {"version": candidate}, "strategy": "canary",
        "canary": {"phases": [{"traffic_percent": 10, "min_samples": 100000, "min_duration_secs": 0}]}
    })
}

/// Creates `slot` with version 1 active and version 2 staged.
async fn slot_with_candidate(c: &reqwest::Client, url: &str, slot: &str) {
    actuator_tests::slot_with_candidate(
        c,
        url,
        slot,
        json!({"model": "stable"}),
        json!({"model": "candidate"}),
    )
    .await;
}

async fn active_rollouts(c: &reqwest::Client, url: &str) -> Vec<Value> {
    let (s, b) =
        call(c, Method::GET, &format!("{url}/v1/rollouts?active=true&limit=100"), None).await;
    assert_eq!(s, 200, "{b}");
    b["items"].as_array().cloned().unwrap_or_default()
}

/// Aborts every active rollout and waits until none is active.
async fn abort_all(c: &reqwest::Client, url: &str) {
    for r in active_rollouts(c, url).await {
        let id = r["id"].as_str().unwrap();
        let (s, b) =
            call(c, Method::POST, &format!("{url}/v1/rollouts/{id}/abort"), Some(json!({}))).await;
        assert!(s == 200 || s == 409, "abort {id}: {s} {b}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !active_rollouts(c, url).await.is_empty() {
        assert!(Instant::now() < deadline, "rollouts still active 30 s after abort");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The status and error code of each answer, for assertion messages.
fn summary(results: &[(u16, Value)]) -> Vec<(u16, Value)> {
    results.iter().map(|(s, b)| (*s, b["error"]["code"].clone())).collect()
}

/// Sends every request at once; returns (status, body) in request order.
async fn all_at_once(
    c: &reqwest::Client,
    requests: Vec<(Method, String, Option<Value>)>,
) -> Vec<(u16, Value)> {
    let mut set = JoinSet::new();
    for (i, (m, u, b)) in requests.into_iter().enumerate() {
        let c = c.clone();
        set.spawn(async move { (i, call(&c, m, &u, b).await) });
    }
    let mut out: Vec<(usize, (u16, Value))> = set.join_all().await;
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_starts_and_retries_respect_the_limit_of_active_rollouts() {
    let d = TestDaemon::start_with(&format!("{FAST_ENGINE}max_active_rollouts = 3\n"));
    let c = http();
    let url = d.url.clone();
    for i in 0..20 {
        slot_with_candidate(&c, &url, &format!("s{i}")).await;
    }
    for round in 0..4 {
        let reqs = (0..20)
            .map(|i| {
                (Method::POST, format!("{url}/v1/rollouts"), Some(request(&format!("s{i}"), 2)))
            })
            .collect();
        let results = all_at_once(&c, reqs).await;
        let started = results.iter().filter(|(s, _)| *s == 201).count();
        assert_eq!(started, 3, "round {round}: exactly the limit starts: {:?}", summary(&results));
        for (s, b) in results.iter().filter(|(s, _)| *s != 201) {
            assert_eq!(*s, 409, "round {round}: {b}");
            assert_eq!(b["error"]["code"], "rollout_limit", "round {round}: {b}");
        }
        assert_eq!(active_rollouts(&c, &url).await.len(), 3, "round {round}: 3 active");
        abort_all(&c, &url).await;
    }
    // Twelve rolled-back rollouts on distinct slots, retried at once: the limit holds for
    // retries too.
    let mut ids = Vec::new();
    for chunk in 0..4 {
        for i in 0..3 {
            let slot = format!("s{}", 3 * chunk + i);
            let (s, b) =
                call(&c, Method::POST, &format!("{url}/v1/rollouts"), Some(request(&slot, 2)))
                    .await;
            assert_eq!(s, 201, "{b}");
            ids.push(b["id"].as_str().unwrap().to_owned());
        }
        abort_all(&c, &url).await;
    }
    for round in 0..3 {
        let reqs = ids
            .iter()
            .map(|id| (Method::POST, format!("{url}/v1/rollouts/{id}/retry"), Some(json!({}))))
            .collect();
        let results = all_at_once(&c, reqs).await;
        let retried = results.iter().filter(|(s, _)| *s == 200).count();
        assert_eq!(retried, 3, "retry round {round}: exactly the limit: {:?}", summary(&results));
        for (s, b) in results.iter().filter(|(s, _)| *s != 200) {
            assert_eq!((*s, b["error"]["code"].as_str()), (409, Some("rollout_limit")), "{b}");
        }
        assert_eq!(active_rollouts(&c, &url).await.len(), 3, "retry round {round}: 3 active");
        abort_all(&c, &url).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_starts_on_one_slot_admit_one() {
    let d = TestDaemon::start_with(&format!("{FAST_ENGINE}max_active_rollouts = 50\n"));
    let c = http();
    let url = d.url.clone();
    slot_with_candidate(&c, &url, "one").await;
    for round in 0..3 {
        let reqs = (0..20)
            .map(|_| (Method::POST, format!("{url}/v1/rollouts"), Some(request("one", 2))))
            .collect();
        let results = all_at_once(&c, reqs).await;
        assert_eq!(
            results.iter().filter(|(s, _)| *s == 201).count(),
            1,
            "round {round}: one rollout per slot: {:?}",
            summary(&results)
        );
        for (s, b) in results.iter().filter(|(s, _)| *s != 201) {
            assert_eq!((*s, b["error"]["code"].as_str()), (409, Some("rollout_active")), "{b}");
        }
        abort_all(&c, &url).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_apply_racing_a_start_never_changes_the_config_under_the_rollout() {
    let d = TestDaemon::start_with(&format!("{FAST_ENGINE}max_active_rollouts = 50\n"));
    let c = http();
    let url = d.url.clone();
    let (mut apply_first, mut refused) = (0, 0);
    for trial in 0..36 {
        let slot = format!("race{trial}");
        slot_with_candidate(&c, &url, &slot).await;
        let results = all_at_once(
            &c,
            vec![
                (Method::POST, format!("{url}/v1/rollouts"), Some(request(&slot, 2))),
                (
                    Method::POST,
                    format!("{url}/v1/slots/{slot}/versions"),
                    Some(json!({"document": {"model": "direct"}})),
                ),
            ],
        )
        .await;
        let (start, apply) = (&results[0], &results[1]);
        assert_eq!(start.0, 201, "trial {trial}: the start succeeds either way: {}", start.1);
        let id = start.1["id"].as_str().unwrap();
        match apply.0 {
            201 => apply_first += 1,
            409 => {
                refused += 1;
                assert_eq!(apply.1["error"]["code"], "rollout_active", "trial {trial}");
                let msg = apply.1["error"]["message"].as_str().unwrap();
                assert!(msg.contains(id), "trial {trial}: the refusal names the rollout: {msg}");
            }
            s => panic!("trial {trial}: apply answered {s}: {}", apply.1),
        }
        let (_, sl) = call(&c, Method::GET, &format!("{url}/v1/slots/{slot}"), None).await;
        let (_, ro) = call(&c, Method::GET, &format!("{url}/v1/rollouts/{id}"), None).await;
        let stable = ro["stable_version"].as_u64().expect("stable version");
        assert_eq!(
            sl["active_version"].as_u64(),
            Some(stable),
            "trial {trial}: the live config is the rollout's stable version (apply {})",
            apply.0
        );
        let requests: Vec<Value> = (0..300)
            .map(
                |u| json!({"slot": slot, "context": {"targetingKey": format!("user-{trial}-{u}")}}),
            )
            .collect();
        let (s, r) = call(
            &c,
            Method::POST,
            &format!("{url}/v1/resolve"),
            Some(json!({"requests": requests})),
        )
        .await;
        assert_eq!(s, 200, "{r}");
        let mut stable_users = 0;
        for res in r["results"].as_array().unwrap() {
            assert_eq!(res["rollout_id"].as_str(), Some(id), "trial {trial}: {res}");
            match res["variant"].as_str() {
                Some("stable") => {
                    stable_users += 1;
                    assert_eq!(
                        res["config_version"].as_u64(),
                        Some(stable),
                        "trial {trial}: users outside the canary get the stable version"
                    );
                }
                _ => assert_eq!(res["config_version"], 2, "trial {trial}: the canary: {res}"),
            }
        }
        assert!(stable_users > 200, "trial {trial}: most users stay on stable");
        abort_all(&c, &url).await;
    }
    eprintln!("apply landed first in {apply_first} trials, was refused in {refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_applies_without_a_precondition_all_succeed() {
    let d = TestDaemon::start();
    let c = http();
    let url = d.url.clone();
    let (s, b) =
        call(&c, Method::POST, &format!("{url}/v1/slots"), Some(json!({"name": "busy"}))).await;
    assert_eq!(s, 201, "{b}");
    let mut versions = Vec::new();
    for round in 0..3 {
        let reqs = (0..20)
            .map(|i| {
                (
                    Method::POST,
                    format!("{url}/v1/slots/busy/versions"),
                    Some(json!({"document": {"model": format!("m-{round}-{i}")}})),
                )
            })
            .collect();
        for (s, b) in all_at_once(&c, reqs).await {
            assert_eq!(s, 201, "round {round}: an apply without expected_latest succeeds: {b}");
            versions.push(b["version_number"].as_u64().unwrap());
        }
    }
    versions.sort_unstable();
    assert_eq!(versions, (1..=60).collect::<Vec<_>>(), "every apply wrote its own version");
    let (_, sl) = call(&c, Method::GET, &format!("{url}/v1/slots/busy"), None).await;
    assert_eq!(sl["latest_version"], 60);
    // With a precondition, the race still has exactly one winner.
    let reqs = (0..20)
        .map(|i| {
            (
                Method::POST,
                format!("{url}/v1/slots/busy/versions"),
                Some(json!({"document": {"model": format!("p-{i}")}, "expected_latest": 60})),
            )
        })
        .collect();
    let results = all_at_once(&c, reqs).await;
    assert_eq!(results.iter().filter(|(s, _)| *s == 201).count(), 1, "{:?}", summary(&results));
    for (s, b) in results.iter().filter(|(s, _)| *s != 201) {
        assert_eq!((*s, b["error"]["code"].as_str()), (409, Some("conflict")), "{b}");
    }
    let (_, v) = call(&c, Method::GET, &format!("{url}/v1/audit/verify"), None).await;
    assert_eq!(v["ok"], true, "{v}");
}
