//! High availability: three replicas on loopback over one PostgreSQL server of the test's
//! own ([`actuator_tests::cluster`]), with one leader elected by an advisory lock and a lease
//! row whose epoch fences every write.
//!
//! The faults: the leader SIGKILLed mid-rollout, the leader SIGSTOPped past its lease and
//! then continued, a rollback on the leader timed to every replica's resolve, PostgreSQL
//! stopped mid-rollout, and SIGKILLs at random moments of three replicas' life.

use actuator_tests::cluster::Cluster;
use actuator_tests::{
    FAST_ENGINE, TrafficSim, call, http, slot_with_candidate, start_rollout, try_call,
};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The lease of these tests (ms): short, so a takeover of a stopped leader is quick.
const LEASE_MS: u64 = 2000;

fn stable() -> Value {
    json!({"model": "stable-model", "sim": {"error_rate": 0.01, "latency_ms": 300.0}})
}

fn candidate(error_rate: f64) -> Value {
    json!({"model": "candidate-model", "sim": {"error_rate": error_rate, "latency_ms": 300.0}})
}

/// A canary of three steps with small minimums, so it completes within seconds of traffic.
fn canary(slot: &str) -> Value {
    json!({
        "slot": slot, "candidate": {"version": 2}, "strategy": "canary",
        "canary": {"phases": [
            {"traffic_percent": 10, "min_samples": 300, "min_duration_secs": 0},
            {"traffic_percent": 30, "min_samples": 300, "min_duration_secs": 0},
            {"traffic_percent": 60, "min_samples": 300, "min_duration_secs": 0}
        ]}
    })
}

async fn rollout(c: &reqwest::Client, url: &str, id: &str) -> Option<Value> {
    match try_call(c, Method::GET, &format!("{url}/v1/rollouts/{id}"), None).await {
        Ok((200, v)) => Some(v),
        _ => None,
    }
}

/// The rollout's view once a replica can serve it: a new leader answers 503 `resuming`
/// while it restores the stored rollouts, and a follower 503 `no_leader` during an election.
/// `None` only when the rollout is unknown (404) or no answer came within 20 s.
async fn rollout_eventually(c: &reqwest::Client, url: &str, id: &str) -> Option<Value> {
    let t0 = Instant::now();
    loop {
        match try_call(c, Method::GET, &format!("{url}/v1/rollouts/{id}"), None).await {
            Ok((200, v)) => return Some(v),
            Ok((404, _)) => return None,
            _ if t0.elapsed() > Duration::from_secs(20) => return None,
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn terminal(v: &Value) -> bool {
    matches!(v["state"].as_str(), Some("completed" | "rolled_back" | "failed" | "aborted"))
}

/// Drives traffic through the running replicas in turn (a replica that refuses, or a
/// leader being replaced, is tried again later) until `done` holds for the rollout's view
/// or `within` passes; returns the last view.
async fn drive_until(
    cl: &Cluster,
    sim: &mut TrafficSim,
    slot: &str,
    id: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let c = http();
    let t0 = Instant::now();
    let mut turn = 0;
    loop {
        let running = cl.running();
        let url = cl.replicas[running[turn % running.len()]].url();
        turn += 1;
        if sim.try_drive(&c, &url, slot, 400).await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if let Some(v) = rollout(&c, &url, id).await
            && done(&v)
        {
            return v;
        }
        assert!(t0.elapsed() < within, "the rollout did not get there within {within:?}");
    }
}

/// Every audit entry of `target`, oldest first, read through replica `url`.
async fn audit_of(c: &reqwest::Client, url: &str, target: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = format!("{url}/v1/audit?order=asc&limit=200&target={target}");
        if let Some(cur) = &cursor {
            q.push_str(&format!("&cursor={cur}"));
        }
        let (s, page) = call(c, Method::GET, &q, None).await;
        assert_eq!(s, 200, "{page}");
        out.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str().or(page["next"].as_str()) {
            Some(n) => cursor = Some(n.to_owned()),
            None => return out,
        }
    }
}

/// No transition of the rollout was recorded twice: the transitions are in time order and
/// no two are the same move at different moments of one step (a second leader acting on a
/// decision the first had committed would repeat it).
fn assert_one_history(v: &Value) {
    let ts = v["transitions"].as_array().expect("transitions");
    for pair in ts.windows(2) {
        assert!(
            pair[0]["at"].as_str() <= pair[1]["at"].as_str(),
            "transitions out of order: {ts:?}"
        );
        assert!(
            !(pair[0]["from"] == pair[1]["from"]
                && pair[0]["to"] == pair[1]["to"]
                && pair[0]["reason"] == pair[1]["reason"]),
            "a transition was applied twice: {ts:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_leader_is_replaced_within_five_seconds_and_the_rollout_carries_on() {
    let Some(mut cl) = Cluster::start(3, LEASE_MS, FAST_ENGINE).await else { return };
    let c = http();
    let (leader, epoch) = cl.wait_leader(Duration::from_secs(20)).await;
    let follower = (leader + 1) % 3;
    let f = cl.replicas[follower].url();
    // Written through a follower: forwarded to the leader.
    slot_with_candidate(&c, &f, "chat", stable(), candidate(0.01)).await;
    let id = start_rollout(&c, &f, canary("chat")).await["id"].as_str().unwrap().to_owned();
    let mut sim = TrafficSim::new(0x4a11);
    let before = drive_until(&cl, &mut sim, "chat", &id, Duration::from_secs(90), |v| {
        v["phase"].as_u64() >= Some(1) || terminal(v)
    })
    .await;
    assert!(!terminal(&before), "finished before the kill: {before}");
    let seen_before = audit_of(&c, &f, &id).await;

    cl.kill(leader);
    let t0 = Instant::now();
    let (next, next_epoch) = cl.wait_leader_except(&[leader], Duration::from_secs(5)).await;
    let took = t0.elapsed();
    assert_ne!(next, leader);
    assert!(next_epoch > epoch, "the new leader's epoch {next_epoch} is not above {epoch}");
    eprintln!("a new leader after {took:?}");

    let after = drive_until(&cl, &mut sim, "chat", &id, Duration::from_secs(120), terminal).await;
    assert_eq!(after["state"], "completed", "{after}");
    let kept = &after["transitions"].as_array().unwrap()
        [..before["transitions"].as_array().unwrap().len()];
    assert_eq!(kept, before["transitions"].as_array().unwrap().as_slice(), "history rewritten");
    assert_one_history(&after);
    // Every audit entry seen before the kill is still there, unchanged, and the chain holds.
    let audit = audit_of(&c, &cl.replicas[next].url(), &id).await;
    for e in &seen_before {
        assert!(audit.iter().any(|a| a["hash"] == e["hash"]), "audit entry lost: {e}");
    }
    let completes = audit.iter().filter(|a| a["action"] == "rollout.complete").count();
    assert_eq!(completes, 1, "completed once: {audit:?}");
    let (_, report) =
        call(&c, Method::GET, &format!("{}/v1/audit/verify", cl.replicas[next].url()), None).await;
    assert_eq!(report["ok"], true, "{report}");
    // The killed replica comes back as a follower of the new leader.
    cl.restart(leader);
    let (again, _) = cl.wait_leader(Duration::from_secs(10)).await;
    assert_eq!(again, next, "the restarted replica took the lead back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stopped_past_its_lease_is_fenced_and_steps_down() {
    let Some(cl) = Cluster::start(3, LEASE_MS, FAST_ENGINE).await else { return };
    let c = http();
    let (old, epoch) = cl.wait_leader(Duration::from_secs(20)).await;
    let f = cl.replicas[(old + 1) % 3].url();
    slot_with_candidate(&c, &f, "chat", stable(), candidate(0.01)).await;
    let id = start_rollout(&c, &f, canary("chat")).await["id"].as_str().unwrap().to_owned();
    let mut sim = TrafficSim::new(0x5709);
    // Evidence in flight: the leader has new observations to fold and save when it stops.
    drive_until(&cl, &mut sim, "chat", &id, Duration::from_secs(60), |v| {
        v["arms"]
            .as_array()
            .is_some_and(|a| a.iter().any(|arm| arm["requests"].as_u64() > Some(50)))
    })
    .await;
    let log_before = cl.replicas[old].log().len();
    cl.signal(old, "STOP");
    let t0 = Instant::now();
    let (new, new_epoch) = cl.wait_leader_except(&[old], Duration::from_secs(15)).await;
    assert!(new_epoch > epoch, "{new_epoch} after {epoch}");
    eprintln!("taken over after {:?}", t0.elapsed());
    // The rollout moves on under the new leader while the old one is frozen.
    let n = cl.replicas[new].url();
    sim.try_drive(&c, &n, "chat", 800).await.expect("traffic through the new leader");
    cl.signal(old, "CONT");
    // The old leader wakes up believing it leads: whatever it had pending is refused by the
    // fencing token, and it says that it steps down.
    let t1 = Instant::now();
    loop {
        let log = cl.replicas[old].log();
        if log[log_before..].contains("stepping down") {
            break;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(15),
            "no step-down in the old leader's log:\n{}",
            &log[log_before..]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let view = cl.view(old).await.expect("the old leader answers");
    assert_eq!(view["replica"]["role"], "follower", "{view}");
    assert_eq!(view["leader"]["id"], cl.replicas[new].id.as_str(), "{view}");
    let (agreed, e) = cl.wait_leader(Duration::from_secs(5)).await;
    assert_eq!((agreed, e), (new, new_epoch), "one leader, one epoch");
    // One history: the rollout goes on to completion with no transition applied twice, and
    // the audit chain verifies.
    let done = drive_until(&cl, &mut sim, "chat", &id, Duration::from_secs(120), terminal).await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_one_history(&done);
    let (_, report) = call(&c, Method::GET, &format!("{n}/v1/audit/verify"), None).await;
    assert_eq!(report["ok"], true, "{report}");
    let completes =
        audit_of(&c, &n, &id).await.iter().filter(|a| a["action"] == "rollout.complete").count();
    assert_eq!(completes, 1);
}

/// The keys `keys` resolve to `variant` on `url`.
async fn all_resolve(
    c: &reqwest::Client,
    url: &str,
    slot: &str,
    keys: &[String],
    stable_only: bool,
) -> bool {
    let requests: Vec<Value> =
        keys.iter().map(|k| json!({"slot": slot, "context": {"targetingKey": k}})).collect();
    let Ok((200, body)) = try_call(
        c,
        Method::POST,
        &format!("{url}/v1/resolve"),
        Some(json!({"requests": requests})),
    )
    .await
    else {
        return false;
    };
    let results = body["results"].as_array().cloned().unwrap_or_default();
    let canary = results.iter().filter(|r| r["variant"] == "canary").count();
    if stable_only { canary == 0 } else { canary > 0 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_on_the_leader_reaches_every_replica_within_a_second() {
    let Some(cl) = Cluster::start(3, LEASE_MS, FAST_ENGINE).await else { return };
    let c = http();
    let (leader, _) = cl.wait_leader(Duration::from_secs(20)).await;
    let l = cl.replicas[leader].url();
    let keys: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();
    let rounds = 10;
    let mut times = Vec::new();
    slot_with_candidate(&c, &l, "chat", stable(), candidate(0.01)).await;
    for round in 0..rounds {
        // A fresh candidate version each round (a rolled-back one may be retried, but a new
        // version is what a user does).
        if round > 0 {
            let (s, b) = call(
                &c,
                Method::POST,
                &format!("{l}/v1/slots/chat/versions"),
                Some(
                    json!({"document": candidate(0.01 + round as f64 / 1000.0), "activate": false}),
                ),
            )
            .await;
            assert_eq!(s, 201, "{b}");
        }
        let (_, slot) = call(&c, Method::GET, &format!("{l}/v1/slots/chat"), None).await;
        let version = slot["latest_version"].as_u64().unwrap();
        let req = json!({
            "slot": "chat", "candidate": {"version": version}, "strategy": "canary",
            "rollback_mode": "fast",
            "canary": {"phases": [{"traffic_percent": 50, "min_samples": 100000, "min_duration_secs": 3600}]}
        });
        let id = start_rollout(&c, &l, req).await["id"].as_str().unwrap().to_owned();
        // Every replica serves the canary share first.
        let t0 = Instant::now();
        for r in cl.running() {
            let url = cl.replicas[r].url();
            while !all_resolve(&c, &url, "chat", &keys, false).await {
                assert!(
                    t0.elapsed() < Duration::from_secs(10),
                    "replica {r} never served the canary"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let (s, b) = call(
            &c,
            Method::POST,
            &format!("{l}/v1/rollouts/{id}/rollback"),
            Some(json!({"reason": "fan-out test"})),
        )
        .await;
        assert!(s == 200 || s == 202, "{s} {b}");
        let t0 = Instant::now();
        let mut slowest = Duration::ZERO;
        for r in cl.running() {
            let url = cl.replicas[r].url();
            while !all_resolve(&c, &url, "chat", &keys, true).await {
                assert!(
                    t0.elapsed() < Duration::from_secs(10),
                    "replica {r} kept serving the canary"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            slowest = slowest.max(t0.elapsed());
        }
        times.push(slowest);
        // The rollback finishes before the next round starts its rollout.
        let t1 = Instant::now();
        while !rollout(&c, &l, &id).await.is_some_and(|v| terminal(&v)) {
            assert!(t1.elapsed() < Duration::from_secs(30), "the rollback did not finish");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    times.sort();
    eprintln!("rollback to stable on every replica: {times:?}");
    let worst = *times.last().unwrap();
    assert!(
        worst <= Duration::from_secs(1),
        "a replica took {worst:?} to resolve stable after a rollback: {times:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_stopped_replicas_serve_from_memory_and_act_once_it_returns() {
    let Some(cl) = Cluster::start(3, LEASE_MS, FAST_ENGINE).await else { return };
    let c = http();
    let (leader, _) = cl.wait_leader(Duration::from_secs(20)).await;
    let l = cl.replicas[leader].url();
    slot_with_candidate(&c, &l, "chat", stable(), candidate(0.01)).await;
    // The one step runs out after 6 s with no verdict (nothing is sent), and an inconclusive
    // step rolls back: a rollback that falls due while the store is down.
    let req = json!({
        "slot": "chat", "candidate": {"version": 2}, "strategy": "canary", "rollback_mode": "fast",
        "canary": {"phases": [{"traffic_percent": 50, "min_samples": 100, "min_duration_secs": 0,
                               "max_duration_secs": 6, "on_inconclusive": "rollback"}]}
    });
    let id = start_rollout(&c, &l, req).await["id"].as_str().unwrap().to_owned();
    let keys: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();
    for r in cl.running() {
        let url = cl.replicas[r].url();
        let t0 = Instant::now();
        while !all_resolve(&c, &url, "chat", &keys, false).await {
            assert!(t0.elapsed() < Duration::from_secs(10), "replica {r} never served the canary");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    cl.pg.stop();
    let down = Instant::now();
    // Past the step's maximum, with the store down: every replica still resolves from
    // memory, still with the canary share (no rollback acted on), and is not ready.
    tokio::time::sleep(Duration::from_secs(9)).await;
    for r in cl.running() {
        let url = cl.replicas[r].url();
        assert!(
            all_resolve(&c, &url, "chat", &keys, false).await,
            "replica {r} changed routing with the store down"
        );
        let (s, ready) = try_call(&c, Method::GET, &format!("{url}/readyz"), None)
            .await
            .expect("readyz answers");
        assert_eq!(s, 503, "replica {r} ready with the store down: {ready}");
    }
    eprintln!("store down for {:?}", down.elapsed());
    cl.pg.resume();
    // Once it is back, without a restart: a leader again, the due rollback happens, and every
    // replica resolves stable.
    cl.wait_leader(Duration::from_secs(20)).await;
    let t0 = Instant::now();
    for r in cl.running() {
        let url = cl.replicas[r].url();
        while !all_resolve(&c, &url, "chat", &keys, true).await {
            assert!(t0.elapsed() < Duration::from_secs(30), "replica {r} still serves the canary");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (s, ready) = call(&c, Method::GET, &format!("{url}/readyz"), None).await;
        assert_eq!(s, 200, "replica {r}: {ready}");
    }
    let (leader, _) = cl.wait_leader(Duration::from_secs(5)).await;
    let v = rollout(&c, &cl.replicas[leader].url(), &id).await.expect("the rollout");
    assert!(
        matches!(v["state"].as_str(), Some("rolled_back" | "rolling_back")),
        "the due rollback was not acted on: {v}"
    );
    let rollbacks = audit_of(&c, &cl.replicas[leader].url(), &id)
        .await
        .iter()
        .filter(|a| a["action"] == "rollout.rollback")
        .count();
    assert_eq!(rollbacks, 1, "rolled back once");
}

/// Where a rollout stands: terminal rollouts keep their state; live ones never go back a step.
fn rank(v: &Value) -> (u8, u64) {
    let terminal = matches!(v["state"].as_str(), Some("completed" | "rolled_back" | "failed"));
    let rolling_back = v["state"] == "rolling_back";
    (u8::from(rolling_back) + 2 * u8::from(terminal), v["phase"].as_u64().unwrap_or(0))
}

/// Requests the rollout's arms have counted in its current step.
fn counted(v: &Value) -> u64 {
    v["arms"]
        .as_array()
        .map(|a| a.iter().filter_map(|arm| arm["requests"].as_u64()).sum())
        .unwrap_or(0)
}

fn chaos_rounds() -> usize {
    std::env::var("ACTUATOR_CHAOS_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(50)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_of_three_replicas_loses_nothing() {
    let Some(mut cl) = Cluster::start(3, LEASE_MS, FAST_ENGINE).await else { return };
    let c = http();
    let (leader, _) = cl.wait_leader(Duration::from_secs(20)).await;
    let l = cl.replicas[leader].url();
    let slots = ["chat", "search", "summarize"];
    for slot in slots {
        let (s, b) =
            call(&c, Method::POST, &format!("{l}/v1/slots"), Some(json!({"name": slot}))).await;
        assert_eq!(s, 201, "{b}");
        let doc = json!({"model": format!("{slot}-0"), "sim": {"error_rate": 0.01}});
        let (s, b) = call(
            &c,
            Method::POST,
            &format!("{l}/v1/slots/{slot}/versions"),
            Some(json!({"document": doc})),
        )
        .await;
        assert_eq!(s, 201, "{b}");
    }
    let mut sim = TrafficSim::new(0xc4a05);
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut seen: std::collections::BTreeMap<String, Value> = Default::default();
    let mut n = 1u64;
    for round in 0..chaos_rounds() {
        let (leader, _) = cl.wait_leader(Duration::from_secs(15)).await;
        let l = cl.replicas[leader].url();
        for slot in slots {
            let (_, list) =
                call(&c, Method::GET, &format!("{l}/v1/rollouts?active=true&slot={slot}"), None)
                    .await;
            if list["items"].as_array().is_some_and(|a| !a.is_empty()) {
                continue;
            }
            let bad = n.is_multiple_of(3);
            let doc = json!({"model": format!("{slot}-{n}"), "sim": {"error_rate": if bad { 0.3 } else { 0.01 }}});
            n += 1;
            let Ok((201, v)) = try_call(
                &c,
                Method::POST,
                &format!("{l}/v1/slots/{slot}/versions"),
                Some(json!({"document": doc, "activate": false})),
            )
            .await
            else {
                continue;
            };
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
            if let Ok((201, v)) =
                try_call(&c, Method::POST, &format!("{l}/v1/rollouts"), Some(req)).await
            {
                seen.insert(v["id"].as_str().unwrap().to_owned(), Value::Null);
            }
        }
        // Traffic through every replica for a random while.
        for _ in 0..1 + next() % 3 {
            for r in cl.running() {
                let url = cl.replicas[r].url();
                for slot in slots {
                    let _ = sim.try_drive(&c, &url, slot, 200).await;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(next() % 150)).await;
        // What is acknowledged now must survive: each rollout's state, step and counts, and
        // the audit chain's newest entry.
        let (leader, _) = cl.wait_leader(Duration::from_secs(15)).await;
        let l = cl.replicas[leader].url();
        for (id, last) in seen.iter_mut() {
            let v = rollout_eventually(&c, &l, id)
                .await
                .unwrap_or_else(|| panic!("round {round}: {id} unreadable"));
            *last = v;
        }
        let (_, audit) = call(&c, Method::GET, &format!("{l}/v1/audit?limit=1"), None).await;
        let head = audit["items"][0].clone();
        // SIGKILL the leader two times in three, else a follower, and bring it back.
        let victim = if next() % 3 < 2 { leader } else { (leader + 1 + (next() % 2) as usize) % 3 };
        eprintln!("round {round}: leader r{leader}, SIGKILL r{victim}");
        cl.kill(victim);
        cl.restart(victim);
        let (leader, _) = cl.wait_leader(Duration::from_secs(15)).await;
        let l = cl.replicas[leader].url();
        for (id, before) in &seen {
            // The view's counts are those of the rollout's last look; the new leader looks
            // within a tick of resuming, with every acknowledged batch replayed. Until then
            // the stored look may show fewer: wait for the counts to come back (or the
            // rollout to move on), never for long.
            let t0 = Instant::now();
            let after = loop {
                let after = rollout_eventually(&c, &l, id)
                    .await
                    .unwrap_or_else(|| panic!("round {round}: rollout {id} lost"));
                let same_step =
                    before["state"] == after["state"] && before["phase"] == after["phase"];
                // Right after a promotion the view still shows the previous step's last look
                // (its decision predates the step's start): those counts are not the step's.
                let of_this_step =
                    before["last_decision"]["at"].as_str() >= before["phase_started_at"].as_str();
                if !same_step
                    || !of_this_step
                    || terminal(before)
                    || counted(&after) >= counted(before)
                {
                    break after;
                }
                if t0.elapsed() >= Duration::from_secs(15) {
                    for r in &cl.replicas {
                        let log = r.log();
                        let mine: Vec<&str> = log
                            .lines()
                            .filter(|l| {
                                l.contains(id.as_str())
                                    || l.contains("leading")
                                    || l.contains("stepping")
                            })
                            .collect();
                        eprintln!("---- {} ----\n{}", r.id, mine.join("\n"));
                    }
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(15),
                    "round {round}: {id} lost acknowledged observations: {} then {} (state {}, step {}, killed r{victim}); before: {} {} {} {}; after: {} {} {} {}",
                    counted(before),
                    counted(&after),
                    after["state"],
                    after["phase"],
                    before["phase_started_at"],
                    before["transitions"].as_array().map_or(0, Vec::len),
                    before["arms"],
                    before["last_decision"],
                    after["phase_started_at"],
                    after["transitions"].as_array().map_or(0, Vec::len),
                    after["arms"],
                    after["last_decision"]
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            assert!(
                rank(&after) >= rank(before),
                "round {round}: rollout {id} went back from {} step {} to {} step {}",
                before["state"],
                before["phase"],
                after["state"],
                after["phase"]
            );
            assert_one_history(&after);
        }
        let seq = head["seq"].as_u64().unwrap();
        let (_, got) = call(
            &c,
            Method::GET,
            &format!("{l}/v1/audit?order=asc&cursor={}&limit=1", seq - 1),
            None,
        )
        .await;
        assert_eq!(
            got["items"][0]["hash"], head["hash"],
            "round {round}: acknowledged audit entry {seq} lost"
        );
        let (_, report) = call(&c, Method::GET, &format!("{l}/v1/audit/verify"), None).await;
        assert_eq!(report["ok"], true, "round {round}: {report}");
    }
    let finished = seen
        .values()
        .filter(|v| matches!(v["state"].as_str(), Some("completed" | "rolled_back")))
        .count();
    assert!(finished > 0, "no rollout finished across {} kills: {seen:?}", chaos_rounds());
}
