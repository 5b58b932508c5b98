//! Engine hardening against the real daemon: request ranges, promotion that waits for a
//! person, step and rollout budgets, rollback after completion, and the aborted state.

use actuator_tests::{FAST_ENGINE, TestDaemon, call, http, slot_with_candidate, start_rollout};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

/// Creates `slot` with version 1 (active) and version 2 (the candidate).
async fn setup(c: &reqwest::Client, url: &str, slot: &str) {
    slot_with_candidate(
        c,
        url,
        slot,
        json!({"model": "stable-model"}),
        json!({"model": "candidate-model"}),
    )
    .await;
}

async fn start(c: &reqwest::Client, url: &str, req: Value) -> Value {
    start_rollout(c, url, req).await
}

async fn get(c: &reqwest::Client, url: &str, id: &str) -> Value {
    call(c, Method::GET, &format!("{url}/v1/rollouts/{id}"), None).await.1
}

async fn act(c: &reqwest::Client, url: &str, id: &str, action: &str, body: Value) -> (u16, Value) {
    call(c, Method::POST, &format!("{url}/v1/rollouts/{id}/{action}"), Some(body)).await
}

/// Polls the rollout until `pred` holds.
async fn wait_for(
    c: &reqwest::Client,
    url: &str,
    id: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = get(c, url, id).await;
        if pred(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "rollout {id} never got {what}: {v:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn active_version(c: &reqwest::Client, url: &str, slot: &str) -> u64 {
    let (_, s) = call(c, Method::GET, &format!("{url}/v1/slots/{slot}"), None).await;
    s["active_version"].as_u64().unwrap()
}

/// A canary that can never gather its samples, so it stays where a person puts it.
fn held_canary(slot: &str, canary: Value) -> Value {
    let mut c = json!({"phases": [
        {"traffic_percent": 10, "min_samples": 1_000_000, "min_duration_secs": 0},
        {"traffic_percent": 100, "min_samples": 1_000_000, "min_duration_secs": 0}
    ]});
    if let (Value::Object(m), Value::Object(e)) = (&mut c, canary) {
        m.extend(e);
    }
    json!({"slot": slot, "candidate": {"version": 2}, "strategy": "canary", "canary": c})
}

fn serving(v: &Value) -> bool {
    matches!(v["state"].as_str(), Some("rolling_out" | "monitoring"))
}

/// Finding 1: every field has a range, checked before anything is written; a request that
/// used to kill the control loop is a 400 and the daemon keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_requests_are_refused_and_the_daemon_keeps_working() {
    let d = TestDaemon::start_with(FAST_ENGINE);
    let c = http();
    setup(&c, &d.url, "chat").await;
    let u = &d.url;
    let cases = [
        (
            held_canary("chat", json!({"max_duration_secs": 10_000_000_000_000_000u64})),
            "canary.max_duration_secs",
            "2592000",
        ),
        (
            json!({"slot": "chat", "candidate": {"version": 2}, "strategy": "rolling", "settings": {"step_percent": 1e-9}}),
            "settings.step_percent",
            "0.1",
        ),
        (
            json!({"slot": "chat", "candidate": {"version": 2}, "strategy": "canary", "canary": {"phases": [{"traffic_percent": 10, "min_duration_secs": 0, "max_duration_secs": 9_000_000_000u64}]}}),
            "canary.phases[0].max_duration_secs",
            "2592000",
        ),
        (
            held_canary("chat", json!({"rollback_window_secs": 700_000})),
            "canary.rollback_window_secs",
            "604800",
        ),
        (
            json!({"slot": "chat", "candidate": {"version": 2}, "strategy": "immediate", "settings": {"watch_secs": 99_999_999u64}}),
            "settings.watch_secs",
            "2592000",
        ),
        (
            json!({"slot": "chat", "candidate": {"version": 2}, "strategy": "canary", "description": "x".repeat(5000)}),
            "description",
            "4096",
        ),
        (
            json!({"slot": "chat", "candidate": {"version": 2}, "strategy": "canary", "metadata": {"blob": "y".repeat(20_000)}}),
            "metadata",
            "16384",
        ),
        (
            json!({"slot": "chat", "candidate": {"version": 2}, "strategy": "canary", "success_criteria": {"min_sample_size": 10_000_000_000u64}}),
            "success_criteria.min_sample_size",
            "1000000000",
        ),
    ];
    for (req, field, limit) in cases {
        let t0 = Instant::now();
        let (s, b) = call(&c, Method::POST, &format!("{u}/v1/rollouts"), Some(req)).await;
        assert_eq!(s, 400, "{field}: {b}");
        assert_eq!(b["error"]["code"], "out_of_range", "{b}");
        let msg = b["error"]["message"].as_str().unwrap();
        assert!(msg.contains(field) && msg.contains(limit), "{field} / {limit}: {msg}");
        assert!(t0.elapsed() < Duration::from_secs(5), "refused at once, not after planning");
    }
    // Nothing was written, the loop runs, and a valid rollout still moves.
    let (_, list) = call(&c, Method::GET, &format!("{u}/v1/rollouts"), None).await;
    assert_eq!(list["items"], json!([]), "{list}");
    let (s, r) = call(&c, Method::GET, &format!("{u}/readyz"), None).await;
    assert_eq!(s, 200, "{r}");
    let v = start(&c, u, held_canary("chat", json!({}))).await;
    let id = v["id"].as_str().unwrap();
    let (s, b) = act(&c, u, id, "promote", json!({})).await;
    assert_eq!(s, 200, "{b}");
    wait_for(&c, u, id, "phase 1", |v| v["phase"] == 1 && serving(v)).await;
}

/// Finding 6: `auto_promote: false` waits for a person even when the inconclusive policy
/// would promote; `promote_if_no_alarm` never promotes before the phase minimums are met.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_if_no_alarm_respects_auto_promote_and_the_minimums() {
    let d = TestDaemon::start_with(FAST_ENGINE);
    let c = http();
    let u = &d.url;
    setup(&c, u, "manual").await;
    setup(&c, u, "early").await;
    // No traffic: the phase budget (1 s) is spent with no alarm and minimums of 0 met.
    let manual = json!({"slot": "manual", "candidate": {"version": 2}, "strategy": "canary",
    "settings": {"inconclusive": "promote_if_no_alarm"},
    "success_criteria": {"min_sample_size": 0},
    "canary": {"auto_promote": false, "phases": [
        {"traffic_percent": 10, "min_samples": 0, "min_duration_secs": 0, "max_duration_secs": 1},
        {"traffic_percent": 100, "min_samples": 0, "min_duration_secs": 0, "max_duration_secs": 1}
    ]}});
    let id = start(&c, u, manual).await["id"].as_str().unwrap().to_owned();
    let v = wait_for(&c, u, &id, "an inconclusive look", |v| {
        v["last_decision"]["kind"] == "inconclusive" || v["phase"] != 0
    })
    .await;
    assert_eq!(v["phase"], 0, "auto_promote is off: no promotion without a person: {v:#}");
    let v = wait_for(&c, u, &id, "awaiting promotion", |v| v["awaiting_promotion"] == true).await;
    assert_eq!((v["phase"].as_u64(), v["state"].as_str()), (Some(0), Some("monitoring")), "{v:#}");
    // The person promotes.
    let (s, b) = act(&c, u, &id, "promote", json!({})).await;
    assert_eq!((s, b["phase"].as_u64()), (200, Some(1)), "{b}");

    // Minimums not met when the budget is spent: held, never promoted.
    let early = json!({"slot": "early", "candidate": {"version": 2}, "strategy": "canary",
    "settings": {"inconclusive": "promote_if_no_alarm"},
    "canary": {"phases": [
        {"traffic_percent": 10, "min_samples": 1000, "min_duration_secs": 0, "max_duration_secs": 1},
        {"traffic_percent": 100, "min_samples": 1000, "min_duration_secs": 0, "max_duration_secs": 1}
    ]}});
    let id = start(&c, u, early).await["id"].as_str().unwrap().to_owned();
    let v = wait_for(&c, u, &id, "a decision on the spent budget", |v| {
        v["state"] == "paused" || v["phase"] != 0
    })
    .await;
    assert_eq!((v["phase"].as_u64(), v["state"].as_str()), (Some(0), Some("paused")), "{v:#}");
    let why = v["paused_reason"].as_str().unwrap();
    assert!(why.contains("minimums") && why.contains("0 of 1000 requests"), "{why}");
}

/// Finding 7: a step without a control has a budget with an explicit outcome (hold by
/// default); the rollout budget pauses instead of rolling back when `auto_rollback` is off;
/// paused time does not count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_have_budgets_and_the_rollout_budget_respects_auto_rollback() {
    let d = TestDaemon::start_with(FAST_ENGINE);
    let c = http();
    let u = &d.url;
    setup(&c, u, "roll").await;
    setup(&c, u, "slow").await;
    setup(&c, u, "held").await;

    // The rollout budget with auto_rollback off: paused for a person, not rolled back.
    let slow = held_canary("slow", json!({"max_duration_secs": 1, "auto_rollback": false}));
    let id = start(&c, u, slow).await["id"].as_str().unwrap().to_owned();
    let v = wait_for(&c, u, &id, "its rollout budget spent", |v| v["state"] != "monitoring").await;
    assert_eq!(v["state"], "paused", "{v:#}");
    assert!(v["rollback"].is_null(), "{v:#}");
    let why = v["paused_reason"].as_str().unwrap();
    assert!(why.contains("max_duration_secs") && why.contains("auto_rollback is off"), "{why}");
    assert_eq!(active_version(&c, u, "slow").await, 1);

    // Paused time does not count: paused at once, resumed after the budget would be spent.
    let held = held_canary("held", json!({"max_duration_secs": 3}));
    let id = start(&c, u, held).await["id"].as_str().unwrap().to_owned();
    let (s, b) = act(&c, u, &id, "pause", json!({})).await;
    assert_eq!(s, 200, "{b}");
    let paused_at = Instant::now();
    while paused_at.elapsed() < Duration::from_secs(4) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (s, b) = act(&c, u, &id, "resume", json!({})).await;
    assert_eq!(s, 200, "{b}");
    let resumed = b["updated_at"].as_str().unwrap().to_owned();
    // Wait for a look after the resume, then it must still be monitoring.
    let v = wait_for(&c, u, &id, "a look after the resume", |v| {
        v["last_decision"]["at"].as_str().is_some_and(|at| at > resumed.as_str())
            || v["state"] != "monitoring"
    })
    .await;
    assert_eq!(v["state"], "monitoring", "the pause did not count toward the budget: {v:#}");
    assert!(v["active_secs"].as_f64().unwrap() < 3.0, "{v:#}");

    // Downtime does not count either: stopped for longer than the budget, then restarted.
    let before = v["active_secs"].as_f64().unwrap();
    let mut d = d;
    d.stop();
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(4) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    d.restart();
    let u = &d.url;
    let (_, b) = call(&c, Method::GET, &format!("{u}/v1/rollouts/{id}"), None).await;
    // The last look persisted before the stop; wait for a newer one.
    let loaded = b["last_decision"]["at"].as_str().unwrap().to_owned();
    let v = wait_for(&c, u, &id, "a look after the restart", |v| {
        v["last_decision"]["at"].as_str().is_some_and(|at| at > loaded.as_str())
            || v["state"] != "monitoring"
    })
    .await;
    assert_eq!(v["state"], "monitoring", "the downtime did not count toward the budget: {v:#}");
    assert!(v["active_secs"].as_f64().unwrap() < before + 2.5, "{v:#}");

    // Rolling: no traffic, so the first step can never promote; its 1 s budget is spent.
    let roll = json!({"slot": "roll", "candidate": {"version": 2}, "strategy": "rolling",
        "settings": {"step_percent": 50, "step_secs": 0, "min_samples": 1000, "max_step_secs": 1}});
    let id = start(&c, u, roll).await["id"].as_str().unwrap().to_owned();
    let v = wait_for(&c, u, &id, "its step budget spent", |v| v["state"] != "monitoring").await;
    assert_eq!(v["state"], "paused", "the default outcome is hold: {v:#}");
    let why = v["paused_reason"].as_str().unwrap();
    assert!(why.contains("step 0 (rolling at 50 %) spent its budget (1 s"), "{why}");
    assert_eq!(v["share_percent"], 50.0, "held where it was: {v:#}");
}

/// Finding 8: `promote --full` runs the 100 % watch step; a completed rollout can be rolled
/// back (gradually here) within its window, as a new audited rollback; outside its window,
/// or when another rollout holds the slot, the answer is a clear 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_rollout_can_be_rolled_back_within_its_window() {
    let d = TestDaemon::start_with(FAST_ENGINE);
    let c = http();
    let u = &d.url;
    setup(&c, u, "chat").await;
    setup(&c, u, "nowin").await;

    let id = start(&c, u, held_canary("chat", json!({}))).await["id"].as_str().unwrap().to_owned();
    let (s, v) = act(&c, u, &id, "promote", json!({"full": true})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!((v["state"].as_str(), v["phase"].as_u64()), (Some("monitoring"), Some(1)), "{v:#}");
    assert_eq!(v["share_percent"], 100.0, "the 100 % step watches the candidate: {v:#}");
    let (s, v) = act(&c, u, &id, "promote", json!({"full": true, "skip_analysis": true})).await;
    assert_eq!((s, v["state"].as_str()), (200, Some("completed")), "{v:#}");
    assert!(v["rollback_window_until"].is_string(), "{v:#}");
    assert_eq!(active_version(&c, u, "chat").await, 2);

    // Gradual rollback after completion: the previous version is active again at once, and
    // the candidate's share steps down from 100 %.
    let (s, v) =
        act(&c, u, &id, "rollback", json!({"gradual": true, "reason": "users complain"})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["state"], "rolling_back", "{v:#}");
    assert_eq!(v["rollback"]["after_completion"], true, "{v:#}");
    assert_eq!(v["share_percent"], 50.0, "{v:#}");
    assert_eq!(active_version(&c, u, "chat").await, 1, "the previous version is the control");
    let v = wait_for(&c, u, &id, "rolled back", |v| v["state"] == "rolled_back").await;
    let shares: Vec<u64> = v["rollback"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["share_bp"].as_u64().unwrap())
        .collect();
    assert_eq!(shares.last(), Some(&0), "{shares:?}");
    assert!(shares.len() > 2, "stepped down gradually: {shares:?}");
    assert_eq!(active_version(&c, u, "chat").await, 1);
    let (_, h) = call(&c, Method::GET, &format!("{u}/v1/rollbacks"), None).await;
    assert!(
        h["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["rollout_id"] == id.as_str() && r["after_completion"] == true),
        "{h:#}"
    );
    let (_, audit) =
        call(&c, Method::GET, &format!("{u}/v1/audit?target={id}&limit=200"), None).await;
    assert!(
        audit["items"].as_array().unwrap().iter().any(|e| e["action"] == "rollout.rollback"
            && e["metadata"]["after_completion"] == true),
        "{audit:#}"
    );

    // Another rollout now holds the slot: the first one, completed again, is refused.
    let (s, b) = act(&c, u, &id, "retry", json!({})).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = act(&c, u, &id, "promote", json!({"full": true, "skip_analysis": true})).await;
    assert_eq!((s, b["state"].as_str()), (200, Some("completed")), "{b}");
    let (s, b) = call(
        &c,
        Method::POST,
        &format!("{u}/v1/slots/chat/versions"),
        Some(json!({"document": {"model": "third"}, "activate": false})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let mut next = held_canary("chat", json!({}));
    next["candidate"] = json!({"version": 3});
    let other = start(&c, u, next).await["id"].as_str().unwrap().to_owned();
    let (s, b) = act(&c, u, &id, "rollback", json!({})).await;
    assert_eq!((s, b["error"]["code"].as_str()), (409, Some("rollback_refused")), "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains(&other), "{b}");

    // Outside the window (0 s: no window at all).
    let id = start(&c, u, held_canary("nowin", json!({"rollback_window_secs": 0}))).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, _) = act(&c, u, &id, "promote", json!({"full": true, "skip_analysis": true})).await;
    assert_eq!(s, 200);
    let (s, b) = act(&c, u, &id, "rollback", json!({})).await;
    assert_eq!((s, b["error"]["code"].as_str()), (409, Some("rollback_refused")), "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("rollback window"), "{b}");
    assert_eq!(active_version(&c, u, "nowin").await, 2, "nothing changed");

    // The CLI: `rollout rollback ID --gradual` on a completed rollout.
    setup(&c, u, "cli").await;
    let id = start(&c, u, held_canary("cli", json!({}))).await["id"].as_str().unwrap().to_owned();
    d.cli_ok(&["rollout", "promote", &id, "--full", "--skip-analysis"]);
    let out = d.cli_ok(&["rollout", "rollback", &id, "--gradual", "--reason", "late regression"]);
    assert!(out.contains(&id), "{out}");
    wait_for(&c, u, &id, "rolled back", |v| v["state"] == "rolled_back").await;
    let human = d.cli_ok(&["rollout", "history"]);
    assert!(human.contains(&id) && human.contains("late regression"), "{human}");
}

/// Finding 9: abort ends as `aborted`, not as a rollback; a retried rollout keeps every one
/// of its rollbacks in the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_is_its_own_state_and_the_history_keeps_every_rollback() {
    let d = TestDaemon::start_with(FAST_ENGINE);
    let c = http();
    let u = &d.url;
    setup(&c, u, "chat").await;
    let id = start(&c, u, held_canary("chat", json!({}))).await["id"].as_str().unwrap().to_owned();
    let (s, v) = act(&c, u, &id, "abort", json!({})).await;
    assert_eq!((s, v["state"].as_str()), (200, Some("aborted")), "{v:#}");
    assert!(v["rollback"].is_null(), "{v:#}");
    assert_eq!(v["share_percent"], 0.0);
    let (_, st) = call(&c, Method::GET, &format!("{u}/v1/stats"), None).await;
    assert_eq!(
        (st["aborted_deployments"].as_u64(), st["rollbacks"].as_u64()),
        (Some(1), Some(0)),
        "{st:#}"
    );
    assert_eq!(st["manual_rollbacks"], 0, "an abort is not a manual rollback: {st:#}");
    let list = d.cli_ok(&["rollout", "list", "--all"]);
    assert!(list.contains("aborted"), "{list}");

    // Retry, roll back, retry, roll back: both rollbacks stay in the history.
    for reason in ["first regression", "second regression"] {
        let (s, b) = act(&c, u, &id, "retry", json!({})).await;
        assert_eq!(s, 200, "{b}");
        let (s, b) = act(&c, u, &id, "rollback", json!({"reason": reason})).await;
        assert_eq!(s, 200, "{b}");
        wait_for(&c, u, &id, "rolled back", |v| v["state"] == "rolled_back").await;
    }
    let v = get(&c, u, &id).await;
    let reasons: Vec<String> =
        v["rollbacks"].as_array().unwrap().iter().map(|r| r["reason"].to_string()).collect();
    assert_eq!(reasons.len(), 2, "{v:#}");
    assert!(reasons[0].contains("second") && reasons[1].contains("first"), "{reasons:?}");
    let (_, h) = call(&c, Method::GET, &format!("{u}/v1/rollbacks"), None).await;
    let mine =
        h["items"].as_array().unwrap().iter().filter(|r| r["rollout_id"] == id.as_str()).count();
    assert_eq!(mine, 2, "{h:#}");
    let human = d.cli_ok(&["rollout", "history"]);
    assert!(human.contains("first regression") && human.contains("second regression"), "{human}");
    let (_, st) = call(&c, Method::GET, &format!("{u}/v1/stats"), None).await;
    assert_eq!(
        (st["manual_rollbacks"].as_u64(), st["aborted_deployments"].as_u64()),
        (Some(2), Some(0)),
        "{st:#}"
    );
    // The counters survive a restart (they are recounted from the store).
    let mut d = d;
    d.restart();
    let (_, st) = call(&c, Method::GET, &format!("{}/v1/stats", d.url), None).await;
    assert_eq!(st["manual_rollbacks"], 2, "{st:#}");
}
