//! Third-party plugins loaded by a real daemon from its TOML settings: the example notifier as
//! an executable and as a cdylib receives the daemon's events; `actuator plugins list` shows
//! them with their health; a plugin of another API version stops `actuator serve` at start.

use actuator_tests::{TestDaemon, actuator_bin};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) fn artifact(file: &str) -> PathBuf {
    let bin = actuator_bin();
    let p = bin.parent().expect("target dir").join(file);
    assert!(
        p.exists(),
        "{} is missing: run `cargo xtask test`, or `cargo build -p actuator-notifier-example -p actuator-plugin-fixture-future` first",
        p.display()
    );
    p
}

pub(crate) fn exe(stem: &str) -> PathBuf {
    artifact(&format!("{stem}{}", std::env::consts::EXE_SUFFIX))
}

pub(crate) fn dylib(stem: &str) -> PathBuf {
    artifact(&format!("{}{stem}{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX))
}

pub(crate) fn toml_path(p: &Path) -> String {
    serde_json::to_string(&p.display().to_string()).unwrap()
}

fn kinds_in(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["kind"].as_str().map(str::to_owned))
        .collect()
}

fn wait_for(path: &Path, kind: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let kinds = kinds_in(path);
        if kinds.iter().any(|k| k == kind) || Instant::now() > deadline {
            return kinds;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_example_notifier_receives_events_as_an_executable_and_as_a_cdylib() {
    let out = tempfile::tempdir().unwrap();
    let exec_file = out.path().join("exec.jsonl");
    let lib_file = out.path().join("cdylib.jsonl");
    let toml = format!(
        r#"
[[plugins]]
kind = "notifier"
name = "jsonl-exec"
path = {exe}
config = {{ path = {exec_file} }}

[[plugins]]
kind = "notifier"
name = "jsonl-lib"
path = {lib}
timeout_ms = 2000
config = {{ path = {lib_file} }}

[[plugins]]
kind = "metric_source"
name = "numbers"
path = {exe}
tier = "exec"
config = {{ path = {metric_file}, metrics = {{ "errors" = 0.5 }} }}
"#,
        exe = toml_path(&exe("actuator-notifier-example")),
        lib = toml_path(&dylib("actuator_notifier_example")),
        exec_file = toml_path(&exec_file),
        lib_file = toml_path(&lib_file),
        metric_file = toml_path(&out.path().join("metric.jsonl")),
    );
    let d = TestDaemon::start_with(&toml);
    let doc = out.path().join("v1.json");
    std::fs::write(&doc, r#"{"model": "gpt-4o", "temperature": 0.2}"#).unwrap();
    d.cli_ok(&["slot", "create", "chat.default"]);
    d.cli_ok(&["config", "apply", doc.to_str().unwrap(), "--slot", "chat.default"]);

    for file in [&exec_file, &lib_file] {
        let kinds = wait_for(file, "config.apply");
        assert!(kinds.iter().any(|k| k == "config.apply"), "{}: {kinds:?}", file.display());
        let line: Value = std::fs::read_to_string(file)
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["kind"] == "config.apply")
            .unwrap();
        assert_eq!(line["target"], "chat.default", "{line}");
        assert!(line["at"].as_str().unwrap().ends_with('Z'), "{line}");
    }

    let listed: Value =
        serde_json::from_str(&d.cli_ok(&["plugins", "list", "-o", "json"])).unwrap();
    let find = |name: &str| {
        listed["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not listed: {listed}"))
    };
    let e = find("jsonl-exec");
    assert_eq!(
        (e["kind"].as_str(), e["tier"].as_str(), e["health"].as_str()),
        (Some("notifier"), Some("exec"), Some("healthy")),
        "{e}"
    );
    assert_eq!(e["version"], "0.1.0");
    let l = find("jsonl-lib");
    assert_eq!(
        (l["tier"].as_str(), l["health"].as_str()),
        (Some("cdylib"), Some("healthy")),
        "{l}"
    );
    let m = find("numbers");
    assert_eq!(
        (m["kind"].as_str(), m["tier"].as_str()),
        (Some("metric_source"), Some("exec")),
        "{m}"
    );
    let log = find("log");
    assert_eq!(
        (log["tier"].as_str(), log["in_use"].as_bool()),
        (Some("compiled-in"), Some(true)),
        "{log}"
    );
    assert_eq!(find("sqlite")["kind"], "store");

    let human = d.cli_ok(&["plugins", "list"]);
    for word in ["jsonl-exec", "jsonl-lib", "cdylib", "exec", "compiled-in", "healthy", "TIER"] {
        assert!(human.contains(word), "{word} missing from\n{human}");
    }
}

pub(crate) fn serve_fails_with(toml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("settings.toml");
    std::fs::write(&settings, toml).unwrap();
    let mut child = Command::new(actuator_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .arg("--config")
        .arg(&settings)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn actuator serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("actuator serve did not stop at start with {toml}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "serve should fail: {err}");
    err
}

#[test]
fn a_plugin_of_another_version_stops_the_daemon_at_start_with_a_clear_message() {
    for (path, tier) in [
        (exe("actuator-plugin-fixture-future"), "exec"),
        (dylib("actuator_plugin_fixture_future"), "cdylib"),
    ] {
        let toml = format!(
            "[[plugins]]\nkind = \"notifier\"\nname = \"future\"\npath = {}\n",
            toml_path(&path)
        );
        let err = serve_fails_with(&toml);
        assert!(err.contains("loading plugin \"future\""), "{tier}: {err}");
        assert!(
            err.contains("plugin API 2.0") && err.contains("this host speaks 1.1"),
            "{tier}: {err}"
        );
    }
}

#[test]
fn a_bad_plugin_declaration_stops_the_daemon_at_start_naming_the_problem() {
    let exe = toml_path(&exe("actuator-notifier-example"));
    let err = serve_fails_with(
        "[[plugins]]\nkind = \"notifier\"\nname = \"x\"\npath = \"/nonexistent/plugin\"\n",
    );
    assert!(err.contains("plugins.x: the file /nonexistent/plugin does not exist"), "{err}");
    let one = format!(
        "[[plugins]]\nkind = \"notifier\"\nname = \"x\"\npath = {exe}\nconfig = {{ path = \"/tmp/x.jsonl\" }}\n"
    );
    let err = serve_fails_with(&format!("{one}{one}"));
    assert!(err.contains("\"x\" is declared twice"), "{err}");
    let err = serve_fails_with(&one.replace("\"notifier\"", "\"pager\""));
    assert!(err.contains("unknown variant `pager`"), "{err}");
    let err = serve_fails_with(&format!(
        "[[plugins]]\nkind = \"notifier\"\nname = \"x\"\npath = {exe}\nconfig = {{ path = \"/tmp/x.jsonl\", colour = 1 }}\n"
    ));
    assert!(err.contains("invalid config for x at `colour`"), "{err}");
}
