//! The daemon on the PostgreSQL store: settings name the `postgres` plugin and a fresh
//! database; a config is applied, a short canary runs to completion, and after a restart
//! (with the URL from `ACTUATOR_DATABASE_URL` this time) the slots, the rollout and the audit
//! chain are all still there. Nothing is written to
//! the data directory's SQLite file.
//!
//! Needs the local PostgreSQL (CI starts one; without it, and outside CI, the test says so
//! and is skipped).

use actuator_store_postgres::testing::TestDatabase;
use actuator_tests::{FAST_ENGINE, TestDaemon, TrafficSim, call, http};
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_runs_a_rollout_on_postgres_and_keeps_it_across_a_restart() {
    let Some(db) = TestDatabase::create().await else { return };
    let settings = format!(
        "{FAST_ENGINE}[store]\nplugin = \"postgres\"\nconfig = {{ url = \"{}\" }}\n",
        db.url()
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut d = TestDaemon::start_in_with(tmp.path(), Some(&settings));
    let c = http();
    let url = d.url.clone();
    let (s, b) =
        call(&c, Method::POST, &format!("{url}/v1/slots"), Some(json!({"name": "chat"}))).await;
    assert_eq!(s, 201, "{b}");
    for (model, activate) in [("stable-model", true), ("candidate-model", false)] {
        let doc = json!({"model": model, "sim": {"error_rate": 0.005, "latency_ms": 300.0}});
        let (s, b) = call(
            &c,
            Method::POST,
            &format!("{url}/v1/slots/chat/versions"),
            Some(json!({"document": doc, "activate": activate})),
        )
        .await;
        assert_eq!(s, 201, "{b}");
    }
    let req = json!({
        "slot": "chat", "candidate": {"version": 2}, "strategy": "canary",
        "canary": {"phases": [
            {"traffic_percent": 50, "min_samples": 200, "min_duration_secs": 0},
            {"traffic_percent": 100, "min_samples": 200, "min_duration_secs": 0}
        ]}
    });
    let (s, b) = call(&c, Method::POST, &format!("{url}/v1/rollouts"), Some(req)).await;
    assert_eq!(s, 201, "{b}");
    let id = b["id"].as_str().unwrap().to_owned();
    let mut sim = TrafficSim::new(0x9a5);
    let t0 = Instant::now();
    let done = loop {
        sim.drive(&c, &url, "chat", 1000).await;
        let (_, v) = call(&c, Method::GET, &format!("{url}/v1/rollouts/{id}"), None).await;
        if matches!(v["state"].as_str(), Some("completed" | "rolled_back" | "failed" | "aborted")) {
            break v;
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "the rollout did not finish: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(done["state"], "completed", "{done}");
    let (_, audit_before) = call(&c, Method::GET, &format!("{url}/v1/audit/verify"), None).await;
    assert_eq!(audit_before["ok"], true, "{audit_before}");
    assert!(!tmp.path().join("actuator.db").exists(), "the SQLite store was not opened");
    let (s, ready) = call(&c, Method::GET, &format!("{url}/readyz"), None).await;
    assert_eq!(s, 200, "ready on PostgreSQL: {ready}");

    d.stop();
    // Started again with the URL from the environment instead of the settings.
    let from_env = format!("{FAST_ENGINE}[store]\nplugin = \"postgres\"\n");
    let d =
        TestDaemon::start_full(tmp.path(), Some(&from_env), &[("ACTUATOR_DATABASE_URL", db.url())]);
    let url = d.url.clone();
    let (s, slot) = call(&c, Method::GET, &format!("{url}/v1/slots/chat"), None).await;
    assert_eq!(s, 200, "{slot}");
    assert_eq!(slot["active_version"], 2, "the completed canary's version still serves: {slot}");
    let (_, v) = call(&c, Method::GET, &format!("{url}/v1/rollouts/{id}"), None).await;
    assert_eq!(v["state"], "completed", "{v}");
    assert_eq!(v["transitions"], done["transitions"], "the history survived");
    let (_, audit) = call(&c, Method::GET, &format!("{url}/v1/audit/verify"), None).await;
    assert_eq!(audit["ok"], true, "{audit}");
    let (_, page) = call(&c, Method::GET, &format!("{url}/v1/audit?limit=200"), None).await;
    let actions: Vec<&str> =
        page["items"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    assert!(actions.iter().any(|a| a.starts_with("rollout")), "{actions:?}");
    assert!(!tmp.path().join("actuator.db").exists(), "the SQLite store was not opened");
}

/// Runs `actuator serve` with `settings` and no `ACTUATOR_DATABASE_URL`; it must exit on its
/// own with an error. Returns its stderr.
fn serve_fails(settings: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("settings.toml");
    std::fs::write(&path, settings).unwrap();
    let out = std::process::Command::new(actuator_tests::actuator_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path())
        .arg("--config")
        .arg(&path)
        .env_remove("ACTUATOR_DATABASE_URL")
        .env_remove("ACTUATOR_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the daemon started: {out:?}");
    assert!(!tmp.path().join("actuator.db").exists(), "no fallback to SQLite");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_daemon_names_a_missing_database_url_and_an_unreachable_server() {
    let err = serve_fails("[store]\nplugin = \"postgres\"\n");
    assert!(err.contains("url") && err.contains("ACTUATOR_DATABASE_URL"), "{err}");
    // Port 1 on loopback: nothing listens. The password is never printed.
    let err = serve_fails(
        "[store]\nplugin = \"postgres\"\nconfig = { url = \"postgres://u:hunter2@127.0.0.1:1/x\" }\n",
    );
    assert!(err.contains("127.0.0.1:1/x"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}
