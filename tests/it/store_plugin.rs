//! The daemon on a store loaded from a file: the example store plugin (the SQLite store served
//! over the plugin protocol) as an executable and as a cdylib, selected by `[store] plugin`,
//! through a real apply and a canary rollout, surviving a SIGKILL of the daemon and stopping
//! cleanly on SIGTERM; misconfigured store plugins stop `actuator serve` at start with a clear
//! message.

use crate::plugins::{dylib, exe, serve_fails_with, toml_path};
use actuator_tests::{FAST_ENGINE, TestDaemon, TrafficSim, call, http};
use reqwest::Method;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

/// Settings with the store plugin at `plugin`, started with `--test-label=<label>` (an
/// argument the plugin ignores, so the test can find its process).
fn settings(plugin: &Path, db: &Path, label: &str) -> String {
    format!(
        "{FAST_ENGINE}\n[store]\nplugin = \"file-store\"\n\n[[plugins]]\nkind = \"store\"\nname = \"file-store\"\npath = {}\nargs = [\"--test-label={label}\"]\ntimeout_ms = 10000\nconfig = {{ path = {} }}\n",
        toml_path(plugin),
        toml_path(db)
    )
}

/// Processes on the machine started with `--test-label=<label>`.
fn labelled(label: &str) -> Vec<String> {
    let want = format!("--test-label={label}");
    let Ok(all) = std::fs::read_dir("/proc") else { return Vec::new() };
    all.flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().into_owned();
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            cmdline.split(|b| *b == 0).any(|a| a == want.as_bytes()).then_some(pid)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_applies_and_rolls_out_on_an_exec_store_plugin_and_keeps_it_across_a_kill() {
    apply_and_roll_out_on(&exe("actuator-store-example"), "exec").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_applies_and_rolls_out_on_a_cdylib_store_plugin_and_keeps_it_across_a_kill() {
    apply_and_roll_out_on(&dylib("actuator_store_example"), "cdylib").await;
}

async fn apply_and_roll_out_on(plugin: &Path, tier: &str) {
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let db = out.path().join("plugin-store.db");
    let label = format!("store-plugin-{tier}-{}", std::process::id());
    let toml = settings(plugin, &db, &label);
    let mut d = TestDaemon::start_in_with(data.path(), Some(&toml));
    let c = http();
    let url = d.url.clone();
    let (s, b) =
        call(&c, Method::POST, &format!("{url}/v1/slots"), Some(json!({"name": "chat.default"})))
            .await;
    assert_eq!(s, 201, "{b}");
    for (model, active) in [("stable-model", true), ("candidate-model", false)] {
        let doc = json!({"model": model, "sim": {"error_rate": 0.005, "latency_ms": 300.0}});
        let (s, b) = call(
            &c,
            Method::POST,
            &format!("{url}/v1/slots/chat.default/versions"),
            Some(json!({"document": doc, "activate": active})),
        )
        .await;
        assert_eq!(s, 201, "{b}");
    }
    let req = json!({
        "slot": "chat.default", "candidate": {"version": 2}, "strategy": "canary",
        "canary": {"phases": [
            {"traffic_percent": 50, "min_samples": 200, "min_duration_secs": 0},
            {"traffic_percent": 100, "min_samples": 200, "min_duration_secs": 0}
        ]}
    });
    let (s, b) = call(&c, Method::POST, &format!("{url}/v1/rollouts"), Some(req)).await;
    assert_eq!(s, 201, "rollout refused: {b}");
    let id = b["id"].as_str().unwrap().to_owned();
    let mut sim = TrafficSim::new(0x57);
    let t0 = Instant::now();
    let end = loop {
        sim.drive(&c, &url, "chat.default", 1000).await;
        let (_, v) = call(&c, Method::GET, &format!("{url}/v1/rollouts/{id}"), None).await;
        if matches!(v["state"].as_str(), Some("completed" | "rolled_back" | "failed")) {
            break v;
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "rollout did not finish: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(end["state"], "completed", "{end}");
    let (_, slot) = call(&c, Method::GET, &format!("{url}/v1/slots/chat.default"), None).await;
    assert_eq!(slot["active_version"], 2, "{slot}");

    // The store is the plugin's file, not the compiled-in SQLite store's default one.
    assert!(db.exists(), "the plugin's database file exists");
    assert!(!d.db_path().exists(), "the compiled-in store was not opened");
    let listed: Value =
        serde_json::from_str(&d.cli_ok(&["plugins", "list", "-o", "json"])).unwrap();
    let store = listed["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "file-store")
        .cloned()
        .unwrap_or_else(|| panic!("file-store not listed: {listed}"));
    assert_eq!(
        (store["kind"].as_str(), store["tier"].as_str(), store["health"].as_str()),
        (Some("store"), Some(tier), Some("healthy")),
        "{store}"
    );
    assert_eq!(store["version"], "0.1.0", "{store}");
    let (s, ready) = call(&c, Method::GET, &format!("{url}/readyz"), None).await;
    assert_eq!((s, &ready["status"]), (200, &json!("ready")), "{ready}");

    // What was acknowledged survives a SIGKILL of the daemon (and of the plugin with it).
    d.kill();
    let mut d = TestDaemon::start_in_with(data.path(), Some(&toml));
    let (_, v) = call(&c, Method::GET, &format!("{}/v1/rollouts/{id}", d.url), None).await;
    assert_eq!(v["state"], "completed", "{v}");
    let (_, slot) = call(&c, Method::GET, &format!("{}/v1/slots/chat.default", d.url), None).await;
    assert_eq!(slot["active_version"], 2, "{slot}");
    let (s, audit) = call(&c, Method::GET, &format!("{}/v1/audit?limit=100", d.url), None).await;
    assert_eq!(s, 200, "{audit}");
    assert!(audit.to_string().contains("rollout"), "the rollout is audited: {audit}");
    // SIGTERM: the engine stops, then the store plugin is told to finish and exit.
    d.stop();
    let t0 = Instant::now();
    while !labelled(&label).is_empty() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(labelled(&label).is_empty(), "the store plugin outlived the daemon");
}

#[test]
fn a_misconfigured_store_plugin_stops_the_daemon_at_start_naming_the_problem() {
    let exe = toml_path(&exe("actuator-store-example"));
    let entry = format!(
        "[[plugins]]\nkind = \"store\"\nname = \"file-store\"\npath = {exe}\nconfig = {{ path = \"/tmp/never.db\" }}\n"
    );
    let err = serve_fails_with(&entry);
    assert!(
        err.contains("plugins.file-store: a store plugin is used only as the daemon's store")
            && err.contains("[store] plugin = \"file-store\""),
        "{err}"
    );
    let err = serve_fails_with(&format!(
        "[store]\nplugin = \"file-store\"\nconfig = {{ path = \"/tmp/x.db\" }}\n{entry}"
    ));
    assert!(err.contains("its own entry (plugins.file-store.config)"), "{err}");
    let err = serve_fails_with(&format!(
        "[store]\nplugin = \"sqlite\"\n{}",
        entry.replace("file-store", "sqlite")
    ));
    assert!(err.contains("sqlite is the name of a compiled-in store"), "{err}");
    let err = serve_fails_with(&format!(
        "[store]\nplugin = \"file-store\"\n{}",
        entry.replace("/tmp/never.db", "").replace("path = \"\"", "colour = 1")
    ));
    assert!(err.contains("opening the store") && err.contains("colour"), "{err}");
    // A library with the wrong magic, and a plugin of another API version (both tiers), are
    // refused before they open anything.
    let err = serve_fails_with(&format!(
        "[store]\nplugin = \"bad\"\n[[plugins]]\nkind = \"store\"\nname = \"bad\"\npath = {}\n",
        toml_path(&dylib("actuator_plugin_fixture_badmagic"))
    ));
    assert!(err.contains("opening the store") && err.contains("with magic 0x21444142"), "{err}");
    for path in [exe_path("actuator-plugin-fixture-future"), dylib_path()] {
        let err = serve_fails_with(&format!(
            "[store]\nplugin = \"future\"\n[[plugins]]\nkind = \"store\"\nname = \"future\"\npath = {path}\n"
        ));
        assert!(
            err.contains("plugin API 2.0") && err.contains("this host speaks 1.1"),
            "{path}: {err}"
        );
    }
}

fn exe_path(stem: &str) -> String {
    toml_path(&exe(stem))
}

fn dylib_path() -> String {
    toml_path(&dylib("actuator_plugin_fixture_future"))
}
