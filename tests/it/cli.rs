//! The CLI verbs against a live daemon.

use actuator_tests::TestDaemon;
use serde_json::Value;

#[test]
fn cli_walks_through_versioning() {
    let d = TestDaemon::start();
    let dir = tempfile::tempdir().unwrap();
    let v1 = dir.path().join("v1.json");
    let v2 = dir.path().join("v2.json");
    let bad = dir.path().join("bad.json");
    std::fs::write(&v1, r#"{"model": "gpt-4o", "temperature": 0.2}"#).unwrap();
    std::fs::write(&v2, r#"{"slot": "chat.default", "message": "cheaper", "document": {"model": "gpt-4o-mini", "temperature": 0.2}}"#).unwrap();
    std::fs::write(&bad, r#"{"model": "x", "temperature": 9}"#).unwrap();

    assert!(
        d.cli_ok(&["slot", "create", "chat.default", "--description", "chat"])
            .contains("created slot chat.default")
    );
    let first = d.cli_ok(&["config", "apply", v1.to_str().unwrap(), "--slot", "chat.default"]);
    assert!(first.contains("applied chat.default version 1"), "{first}");
    assert!(first.contains("+ (the whole document"), "a first version has no `~ : null`: {first}");
    assert!(!first.contains("null ->"), "{first}");
    // The same document again writes nothing and says so; --force writes it anyway.
    let again = d.cli_ok(&["config", "apply", v1.to_str().unwrap(), "--slot", "chat.default"]);
    assert!(again.contains("unchanged: chat.default version 1"), "{again}");
    let hist = d.cli_ok(&["config", "history", "chat.default", "-o", "json"]);
    let hist: Value = serde_json::from_str(&hist).unwrap();
    assert_eq!(hist["items"].as_array().unwrap().len(), 1, "no identical version: {hist:#}");
    d.cli_ok(&["slot", "create", "scratch"]);
    d.cli_ok(&["config", "apply", v1.to_str().unwrap(), "--slot", "scratch"]);
    let forced =
        d.cli_ok(&["config", "apply", v1.to_str().unwrap(), "--slot", "scratch", "--force"]);
    assert!(forced.contains("applied scratch version 2"), "{forced}");
    let dry = d.cli_ok(&["config", "apply", v2.to_str().unwrap(), "--dry-run"]);
    assert!(dry.contains("dry run") && dry.contains("/model"), "{dry}");
    let snap = d.cli_ok(&["snapshot", "create", "chat.default", "--label", "stable", "-o", "json"]);
    let snap: Value = serde_json::from_str(&snap).unwrap();
    let id = snap["id"].as_str().unwrap().to_owned();
    assert!(d.cli_ok(&["config", "apply", v2.to_str().unwrap()]).contains("version 2"));

    let out = d.cli(&["config", "apply", bad.to_str().unwrap(), "--slot", "chat.default"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("validation_failed") && err.contains("/temperature"), "{err}");

    let diff = d.cli_ok(&["config", "diff", "chat.default", "1", "2"]);
    assert!(diff.contains("~ /model: \"gpt-4o\" -> \"gpt-4o-mini\""), "{diff}");
    // --slot works wherever a slot is named, as in `config apply`.
    assert_eq!(d.cli_ok(&["config", "diff", "--slot", "chat.default", "1", "2"]), diff);
    assert_eq!(
        d.cli_ok(&["config", "history", "--slot", "chat.default"]),
        d.cli_ok(&["config", "history", "chat.default"])
    );
    assert!(d.cli_ok(&["slot", "get", "--slot", "chat.default"]).contains("active version: 2"));
    assert!(
        !d.cli(&["config", "history", "chat.default", "--slot", "chat.default"]).status.success()
    );
    let hist = d.cli_ok(&["config", "history", "chat.default"]);
    assert!(hist.contains("2*") && hist.contains("cheaper"), "{hist}");
    assert!(d.cli_ok(&["config", "revert", "chat.default"]).contains("version 1 is active again"));
    assert!(d.cli_ok(&["snapshot", "list", "chat.default"]).contains(&id));
    assert!(d.cli_ok(&["snapshot", "restore", &id]).contains("at version 1"));
    let get: Value =
        serde_json::from_str(&d.cli_ok(&["slot", "get", "chat.default", "-o", "json"])).unwrap();
    assert_eq!(get["current"]["document"]["model"], "gpt-4o");
    assert!(d.cli_ok(&["slot", "list"]).contains("chat.default"));

    // The documented request forms: a split by name, and a strategy's own keys only.
    std::fs::write(
        &v2,
        r#"{"slot": "chat.default", "strategy": "canary", "candidate": {"version": 2},
            "canary": {"traffic_split": "weighted_random"}}"#,
    )
    .unwrap();
    let started = d.cli_ok(&["rollout", "start", v2.to_str().unwrap()]);
    assert!(started.contains("started rollout"), "a split named by a string: {started}");
    std::fs::write(
        &v2,
        r#"{"slot": "scratch", "strategy": "canary", "candidate": {"version": 1},
            "settings": {"watch_secs": 5}}"#,
    )
    .unwrap();
    let out = d.cli(&["rollout", "start", v2.to_str().unwrap()]);
    assert!(!out.status.success(), "a key of another strategy is refused");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("settings.watch_secs is a setting of immediate"), "{err}");

    let audit = d.cli_ok(&["audit", "list", "--limit", "50"]);
    for action in
        ["slot.create", "config.apply", "snapshot.create", "config.revert", "snapshot.restore"]
    {
        assert!(audit.contains(action), "{action} missing from\n{audit}");
    }
    assert!(audit.contains("failure"), "the refused apply is audited\n{audit}");
    assert!(audit.contains("tester"), "the actor is recorded\n{audit}");
    assert!(d.cli_ok(&["audit", "verify"]).contains("audit chain intact"));
}

#[test]
fn cli_reports_an_unreachable_daemon_clearly() {
    let out = std::process::Command::new(actuator_tests::actuator_bin())
        .args(["slot", "list", "--server", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the actuator"), "{err}");
}
