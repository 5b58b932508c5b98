//! The rollout verbs of the CLI against a live daemon: every manual control, the rollback
//! history, the audit trail, the counters, `status --watch` and the traffic simulator.

use actuator_tests::{FAST_ENGINE, TestDaemon, actuator_bin};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs a CLI verb with `-o json` and parses its answer.
fn json(d: &TestDaemon, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = d.cli_ok(&all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("`{}`: {e}\n{out}", args.join(" ")))
}

/// Longest wait for a rollout to reach a state (a rollback stays `rolling_back` through the
/// post-rollback validation of the stable config, 1 s with [`FAST_ENGINE`]).
const WAIT: Duration = Duration::from_secs(30);

/// Polls the rollout view until `pred` holds (the engine may apply a control on its next tick).
fn wait_for(d: &TestDaemon, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = json(d, &["rollout", "status", id]);
        if pred(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "rollout {id} never got {what}: {v:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn serving(v: &Value) -> bool {
    matches!(v["state"].as_str(), Some("rolling_out" | "monitoring"))
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A daemon with a fast engine and `chat.default` at version 1 (gpt-4o).
fn daemon_with_slot(dir: &Path) -> TestDaemon {
    let d = TestDaemon::start_with(FAST_ENGINE);
    let v1 = write(dir, "v1.json", r#"{"model": "gpt-4o", "temperature": 0.2}"#);
    d.cli_ok(&["slot", "create", "chat.default"]);
    d.cli_ok(&["config", "apply", v1.to_str().unwrap(), "--slot", "chat.default"]);
    d
}

/// Starts a canary that stays in its first phase (it can never gather its samples).
fn start_held_canary(d: &TestDaemon, document: &Path) -> String {
    let v = json(
        d,
        &[
            "rollout",
            "start",
            "--slot",
            "chat.default",
            "--strategy",
            "canary",
            "--document",
            document.to_str().unwrap(),
            "--phases",
            "1,5,25,50,100",
            "--min-samples",
            "1000000",
            "--min-duration",
            "600",
            "--description",
            "cheaper model",
        ],
    );
    assert_eq!(v["slot"], "chat.default", "{v:#}");
    assert_eq!(v["strategy"], "canary", "{v:#}");
    assert_eq!(v["phases"], 5, "{v:#}");
    v["id"].as_str().expect("the view has an id").to_owned()
}

#[test]
fn every_rollout_control_works_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon_with_slot(dir.path());
    let v2 = write(dir.path(), "v2.json", r#"{"model": "gpt-4o-mini", "temperature": 0.2}"#);
    let v3 = write(dir.path(), "v3.json", r#"{"model": "tiny-fast", "temperature": 0.2}"#);

    // A canary held in phase 0: pause, resume, promote, skip, promote --full.
    let id = start_held_canary(&d, &v2);
    let v = wait_for(&d, &id, "phase 0 serving", serving);
    assert_eq!(v["phase"], 0, "{v:#}");
    assert_eq!((v["stable_version"].as_u64(), v["candidate_version"].as_u64()), (Some(1), Some(2)));
    assert!(d.cli_ok(&["rollout", "list"]).contains(&id));
    let status = d.cli_ok(&["rollout", "status", &id]);
    assert!(status.contains("phase 0 of 0-4") && status.contains("chat.default"), "{status}");
    assert!(status.contains("● ") && status.contains("◌ "), "the step plan: {status}");
    assert!(status.contains("held by: the step's minimum"), "what holds it: {status}");

    let out = d.cli_ok(&["rollout", "pause", &id, "--reason", "latency looks off"]);
    assert!(out.contains("paused"), "{out}");
    wait_for(&d, &id, "paused", |v| v["state"] == "paused");
    d.cli_ok(&["rollout", "resume", &id]);
    let v = wait_for(&d, &id, "resumed", serving);
    assert_eq!(v["phase"], 0, "{v:#}");
    d.cli_ok(&["rollout", "promote", &id]);
    let v = wait_for(&d, &id, "phase 1", |v| v["phase"] == 1 && serving(v));
    assert_eq!(v["share_percent"], 5.0, "{v:#}");
    d.cli_ok(&["rollout", "skip", &id]);
    let v = wait_for(&d, &id, "phase 2", |v| v["phase"] == 2 && serving(v));
    assert_eq!(v["share_percent"], 25.0, "{v:#}");
    // --full jumps to the 100 % step, which still watches; promoting it completes.
    d.cli_ok(&["rollout", "promote", &id, "--full"]);
    let v = wait_for(&d, &id, "the 100 % step", |v| v["phase"] == 4 && serving(v));
    assert_eq!(v["share_percent"], 100.0, "{v:#}");
    d.cli_ok(&["rollout", "promote", &id, "--full"]);
    wait_for(&d, &id, "completed", |v| v["state"] == "completed");
    let slot = json(&d, &["slot", "get", "chat.default"]);
    assert_eq!(slot["active_version"], 2, "the candidate is the stable config now: {slot:#}");
    let out = d.cli(&["rollout", "resume", &id]);
    assert!(!out.status.success(), "a completed rollout cannot resume");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid_transition"), "{err}");

    // A second rollout from a request file: abort, retry, rollback --reason.
    let req = write(
        dir.path(),
        "req.json",
        &format!(
            r#"{{"slot": "chat.default", "strategy": "canary", "candidate": {{"document": {}}},
                "canary": {{"phases": [{{"traffic_percent": 10, "min_samples": 1000000, "min_duration_secs": 600}},
                                       {{"traffic_percent": 100, "min_samples": 1000000, "min_duration_secs": 600}}]}},
                "description": "from a file"}}"#,
            std::fs::read_to_string(&v3).unwrap()
        ),
    );
    let out = d.cli_ok(&["rollout", "start", req.to_str().unwrap()]);
    assert!(out.contains("started rollout"), "{out}");
    let list = json(&d, &["rollout", "list", "--slot", "chat.default"]);
    let id2 = list["items"][0]["id"].as_str().expect("an active rollout").to_owned();
    assert_ne!(id2, id);
    wait_for(&d, &id2, "serving", serving);
    let out = d.cli(&[
        "rollout",
        "start",
        "--slot",
        "chat.default",
        "--strategy",
        "immediate",
        "--version",
        "1",
    ]);
    assert!(!out.status.success(), "one active rollout per slot");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rollout_active"), "{err}");

    let out = d.cli(&["rollout", "abort", &id2]);
    assert!(!out.status.success(), "abort needs a reason");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--reason"));
    let out = d.cli(&["rollout", "rollback", &id2]);
    assert!(!out.status.success(), "rollback needs a reason");
    d.cli_ok(&["rollout", "abort", &id2, "--reason", "wrong candidate"]);
    wait_for(&d, &id2, "ended by the abort", |v| v["state"] == "aborted");
    d.cli_ok(&["rollout", "retry", &id2]);
    let v = wait_for(&d, &id2, "active again", serving);
    assert_eq!(v["phase"], 0, "a retry starts from the first phase: {v:#}");
    let out = d.cli_ok(&["rollout", "rollback", &id2, "--reason", "p99 too high"]);
    assert!(out.contains(&id2), "{out}");
    wait_for(&d, &id2, "rolled back", |v| v["state"] == "rolled_back");
    let slot = json(&d, &["slot", "get", "chat.default"]);
    assert_eq!(slot["active_version"], 2, "the stable config serves again: {slot:#}");

    // Lists, history, audit, counters.
    let active = d.cli_ok(&["rollout", "list"]);
    assert!(!active.contains(&id) && !active.contains(&id2), "{active}");
    let all = d.cli_ok(&["rollout", "list", "--all"]);
    assert!(all.contains(&id) && all.contains(&id2), "{all}");
    assert_eq!(
        json(&d, &["rollout", "list", "--all", "--slot", "other"])["items"],
        Value::Array(vec![])
    );

    let history = json(&d, &["rollout", "history"]);
    let items = history["items"].as_array().expect("history items");
    assert!(
        items
            .iter()
            .any(|r| r["rollout_id"] == id2.as_str()
                && r["reason"].to_string().contains("p99 too high")),
        "the manual rollback is in the history: {history:#}"
    );
    let human = d.cli_ok(&["rollout", "history"]);
    assert!(human.contains(&id2) && human.contains("p99 too high"), "{human}");

    let audit = json(&d, &["audit", "list", "--limit", "200"]);
    let entries = audit["items"].as_array().expect("audit items");
    for action in [
        "rollout.pause",
        "rollout.resume",
        "rollout.promote",
        "rollout.skip",
        "rollout.abort",
        "rollout.retry",
        "rollout.rollback",
    ] {
        assert!(
            entries.iter().any(|e| e["action"] == action && e["actor"] == "tester"),
            "{action} by tester missing from the audit log: {audit:#}"
        );
    }
    // The operator's reasons are in the audit log with their controls.
    for (action, why) in
        [("rollout.pause", "latency looks off"), ("rollout.abort", "wrong candidate")]
    {
        assert!(
            entries.iter().any(|e| e["action"] == action && e.to_string().contains(why)),
            "{action} with its reason {why:?} missing from the audit log: {audit:#}"
        );
    }
    assert!(d.cli_ok(&["audit", "verify"]).contains("audit chain intact"));

    let stats = json(&d, &["stats"]);
    assert!(stats["total_deployments"].as_u64() >= Some(2), "{stats:#}");
    assert!(stats["successful_deployments"].as_u64() >= Some(1), "{stats:#}");
    assert!(stats["rollbacks"].as_u64() >= Some(1), "{stats:#}");
    assert!(stats["manual_rollbacks"].as_u64() >= Some(1), "{stats:#}");
    assert_eq!(stats["active_deployments"], 0, "{stats:#}");
    assert!(stats["by_strategy"]["canary"].as_u64() >= Some(2), "{stats:#}");
    let human = d.cli_ok(&["stats"]);
    assert!(human.contains("rollouts started") && human.contains("canary"), "{human}");
}

#[test]
fn status_watch_redraws_until_the_rollout_ends() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon_with_slot(dir.path());
    let v2 = write(dir.path(), "v2.json", r#"{"model": "gpt-4o-mini"}"#);
    let id = start_held_canary(&d, &v2);
    wait_for(&d, &id, "serving", serving);

    let mut watch = Command::new(actuator_bin())
        .args(["rollout", "status", &id, "--watch", "--server", &d.url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drain stdout while the watch runs (so it never blocks on a full pipe), keeping what
    // it drew so far where the test can look.
    let mut pipe = watch.stdout.take().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = seen.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match std::io::Read::read(&mut pipe, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        sink.lock().unwrap().clone()
    });
    // Two drawings while the rollout is active, however slow the machine is.
    let deadline = Instant::now() + WAIT;
    while seen.lock().unwrap().matches("----").count() < 2 {
        assert!(
            watch.try_wait().unwrap().is_none(),
            "the watch ended while the rollout was active"
        );
        assert!(Instant::now() < deadline, "no second drawing: {}", seen.lock().unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(watch.try_wait().unwrap().is_none(), "the watch ended while the rollout was active");
    d.cli_ok(&["rollout", "abort", &id, "--reason", "testing"]);
    let deadline = Instant::now() + WAIT;
    while watch.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = watch.kill();
            panic!("the watch did not end with the rollout");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = watch.wait_with_output().unwrap();
    let stdout = reader.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "an aborted rollout exits 1: {stdout}{stderr}");
    assert!(stdout.matches("----").count() >= 2, "it redrew at least twice:\n{stdout}");
    assert!(stdout.contains("ARM") || stdout.contains("no traffic reported yet"), "{stdout}");
    assert!(stderr.contains("the rollout ended: aborted"), "{stderr}");

    // A finished rollout: one drawing, then the watch ends at once.
    let out = d.cli(&["rollout", "status", &id, "--watch"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout.matches("----").count(), 1, "{stdout}");
}

#[test]
fn simulated_traffic_reaches_both_arms() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon_with_slot(dir.path());
    let v2 = write(dir.path(), "v2.json", r#"{"model": "gpt-4o-mini"}"#);
    let v = json(
        &d,
        &[
            "rollout",
            "start",
            "--slot",
            "chat.default",
            "--strategy",
            "canary",
            "--document",
            v2.to_str().unwrap(),
            "--phases",
            "50,100",
            "--min-samples",
            "1000000",
            "--min-duration",
            "600",
        ],
    );
    let id = v["id"].as_str().unwrap().to_owned();
    wait_for(&d, &id, "serving", serving);

    let out = d.cli_ok(&["simulate", "--slot", "chat.default", "--rps", "500", "--duration", "2"]);
    assert!(out.contains("outcomes reported"), "{out}");
    assert!(out.contains(", 0 rejected"), "every simulated outcome is valid:\n{out}");
    let v = wait_for(&d, &id, "traffic on both arms", |v| {
        let arms = v["arms"].as_array().cloned().unwrap_or_default();
        arms.len() >= 2 && arms.iter().all(|a| a["requests"].as_u64() > Some(100))
    });
    let total: u64 =
        v["arms"].as_array().unwrap().iter().filter_map(|a| a["requests"].as_u64()).sum();
    assert!((500..=1500).contains(&total), "about 1,000 requests in 2 s: {v:#}");

    // The simulator sends back what the resolution said: every outcome has its phase.
    let arms = v["arms"].as_array().unwrap();
    assert!(arms.iter().all(|a| a["requests"].as_u64() > Some(100)), "{v:#}");

    // The full health report: arms with TTFT and tokens, each metric's evidence, the guards.
    let explain = d.cli_ok(&["rollout", "explain", &id]);
    for part in ["TTFT P50/P95", "TOKENS IN/OUT", "canary against control", "METRIC", "minimums:"] {
        assert!(explain.contains(part), "{part:?} missing from `rollout explain`:\n{explain}");
    }
    let health = json(&d, &["rollout", "explain", &id]);
    let unphased: u64 = health["last_evaluation"]["explanation"]["arms"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["unphased"].as_u64())
        .sum();
    assert_eq!(unphased, 0, "the simulator tags each outcome with its phase: {health:#}");
}
