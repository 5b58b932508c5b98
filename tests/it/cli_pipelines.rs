//! The CLI in a CI pipeline: `rollout start --wait` and `rollout status --watch` end with an
//! exit status per outcome (0 completed, 1 rolled back / aborted / failed, 2 waiting for a
//! person, 3 timed out), a watch survives a daemon restart, and the shell completions and man
//! page are generated from the grammar.

use actuator_tests::{FAST_ENGINE, TestDaemon, actuator_bin};
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest wait for anything in these tests.
const WAIT: Duration = Duration::from_secs(60);

/// A CLI process running in the background, its output drained as it comes.
struct Running {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    drains: Vec<JoinHandle<()>>,
}

fn drain(mut pipe: impl Read + Send + 'static, sink: Arc<Mutex<String>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
    })
}

impl Running {
    fn spawn(d: &TestDaemon, args: &[&str]) -> Self {
        let mut child = Command::new(actuator_bin())
            .args(args)
            .args(["--server", &d.url, "--actor", "tester"])
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (stdout, stderr) = (Arc::default(), Arc::default());
        let drains = vec![
            drain(child.stdout.take().unwrap(), Arc::clone(&stdout)),
            drain(child.stderr.take().unwrap(), Arc::clone(&stderr)),
        ];
        Self { child, stdout, stderr, drains }
    }

    /// Waits until `what` shows up in stdout, or fails the test.
    fn wait_for_stdout(&mut self, what: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.stdout.lock().unwrap().contains(what) {
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "the command ended before printing {what:?}: {}{}",
                self.stdout.lock().unwrap(),
                self.stderr.lock().unwrap()
            );
            assert!(Instant::now() < deadline, "no {what:?}: {}", self.stdout.lock().unwrap());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `what` shows up in stderr, or fails the test.
    fn wait_for_stderr(&mut self, what: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.stderr.lock().unwrap().contains(what) {
            assert!(self.child.try_wait().unwrap().is_none(), "ended before {what:?}");
            assert!(Instant::now() < deadline, "no {what:?}: {}", self.stderr.lock().unwrap());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the process to end: its exit status, stdout and stderr.
    fn finish(mut self) -> (i32, String, String) {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the command did not end: {}", self.stdout.lock().unwrap());
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        for d in self.drains {
            d.join().unwrap();
        }
        let out = self.stdout.lock().unwrap().clone();
        let err = self.stderr.lock().unwrap().clone();
        (status.code().expect("exited, not killed by a signal"), out, err)
    }
}

/// A daemon with a fast engine and `chat` at version 1; `candidate.json` beside it.
fn daemon(dir: &std::path::Path) -> TestDaemon {
    let d = TestDaemon::start_full(dir, Some(FAST_ENGINE), &[]);
    let v1 = dir.join("v1.json");
    std::fs::write(&v1, r#"{"model": "gpt-4o"}"#).unwrap();
    std::fs::write(dir.join("candidate.json"), r#"{"model": "gpt-4o-mini"}"#).unwrap();
    d.cli_ok(&["slot", "create", "chat"]);
    d.cli_ok(&["config", "apply", v1.to_str().unwrap(), "--slot", "chat"]);
    d
}

/// `rollout start --wait` of a canary that cannot promote on its own (its samples never come).
fn start_waiting(d: &TestDaemon, extra: &[&str]) -> Running {
    let candidate = d.data_dir.join("candidate.json");
    let candidate = candidate.to_str().unwrap();
    let mut args = vec![
        "rollout",
        "start",
        "--slot",
        "chat",
        "--strategy",
        "canary",
        "--document",
        candidate,
        "--phases",
        "5,100",
        "--min-samples",
        "1000000",
        "--min-duration",
        "600",
        "--wait",
    ];
    args.extend_from_slice(extra);
    let mut r = Running::spawn(d, &args);
    r.wait_for_stdout("waiting for its outcome");
    r
}

/// The id of the newest rollout.
fn newest(d: &TestDaemon) -> String {
    let out = d.cli_ok(&["rollout", "list", "--all", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["items"][0]["id"].as_str().expect("a rollout").to_owned()
}

#[test]
fn start_wait_exits_with_the_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(dir.path());

    // Completed: exit 0, with the final status printed.
    let r = start_waiting(&d, &[]);
    let id = newest(&d);
    d.cli_ok(&["rollout", "promote", &id, "--full", "--skip-analysis"]);
    let (code, out, err) = r.finish();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("the rollout completed"), "{out}");
    assert!(out.contains("completed"), "one line per change: {out}");

    // Rolled back: exit 1.
    let r = start_waiting(&d, &[]);
    let id = newest(&d);
    d.cli_ok(&["rollout", "rollback", &id, "--reason", "testing the exit status"]);
    let (code, out, err) = r.finish();
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("the rollout ended: rolled_back"), "{err}");

    // Paused: exit 2, saying how to go on.
    let r = start_waiting(&d, &[]);
    let id = newest(&d);
    d.cli_ok(&["rollout", "pause", &id]);
    let (code, out, err) = r.finish();
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("paused") && err.contains(&format!("rollout resume {id}")), "{err}");

    // Still running at the deadline: exit 3.
    d.cli_ok(&["rollout", "resume", &id]);
    let (code, out, err) =
        Running::spawn(&d, &["rollout", "status", &id, "--watch", "--timeout", "2"]).finish();
    assert_eq!(code, 3, "{out}{err}");
    assert!(err.contains("timed out after 2s"), "{err}");

    // An aborted rollout is not a success either.
    d.cli_ok(&["rollout", "abort", &id, "--reason", "testing"]);
    let (code, _, err) = Running::spawn(&d, &["rollout", "status", &id, "--watch"]).finish();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("aborted"), "{err}");
}

#[test]
fn a_watch_survives_a_daemon_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = daemon(dir.path());
    let r = start_waiting(&d, &[]);
    let id = newest(&d);
    let mut watch = Running::spawn(&d, &["rollout", "status", &id, "--watch", "--timeout", "120"]);
    watch.wait_for_stdout("----");

    // Down for three of the watch's one-second looks.
    d.restart_same_port(Duration::from_secs(3));
    watch.wait_for_stderr("reconnected to");
    d.cli_ok(&["rollout", "abort", &id, "--reason", "testing"]);
    let (code, out, err) = watch.finish();
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("lost the daemon at"), "it said it lost the daemon: {err}");
    assert!(err.contains("the rollout ended: aborted"), "{err}");
    // The `--wait` started before the restart reconnected too.
    let (code, _, err) = r.finish();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("reconnected to"), "{err}");
}

#[test]
fn completions_and_the_man_page_come_from_the_grammar() {
    for (shell, marker) in
        [("bash", "_actuator()"), ("zsh", "#compdef actuator"), ("fish", "complete -c actuator")]
    {
        let out = Command::new(actuator_bin()).args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(marker), "{shell}: {text}");
        assert!(
            text.contains("rollout") && text.contains("--wait"),
            "{shell} completes subcommands and flags"
        );
    }
    let out = Command::new(actuator_bin()).args(["completions", "tcsh"]).output().unwrap();
    assert!(!out.status.success(), "an unknown shell is refused");

    let out = Command::new(actuator_bin()).arg("man").output().unwrap();
    assert!(out.status.success());
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(page.contains(".TH actuator") && page.contains("rollout"), "{page}");

    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(actuator_bin()).args(["man", "--dir"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for page in ["actuator.1", "actuator-rollout.1", "actuator-rollout-start.1"] {
        assert!(dir.path().join(page).exists(), "{page} written");
    }

    let help = Command::new(actuator_bin()).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("simulate"), "simulate is listed");
}

/// Starts `actuator serve` with its stderr to a pipe (as under systemd or a log collector),
/// makes it log a warning (no tokens), and returns what it wrote.
fn daemon_stderr(extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(actuator_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(extra)
        .env_remove("NO_COLOR")
        .env_remove("ACTUATOR_LOG_FORMAT")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = Arc::new(Mutex::new(String::new()));
    let drains = vec![
        drain(child.stderr.take().unwrap(), Arc::clone(&err)),
        drain(child.stdout.take().unwrap(), Arc::default()),
    ];
    let deadline = Instant::now() + WAIT;
    while !err.lock().unwrap().contains("no API tokens") {
        assert!(Instant::now() < deadline, "no warning logged: {}", err.lock().unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    for d in drains {
        d.join().unwrap();
    }
    err.lock().unwrap().clone()
}

#[test]
fn logs_to_a_file_are_plain_and_json_on_request() {
    let text = daemon_stderr(&[]);
    assert!(!text.contains('\u{1b}'), "no colour codes when stderr is not a terminal: {text:?}");
    assert!(text.contains("WARN"), "{text}");

    let json = daemon_stderr(&["--log-format", "json"]);
    let warning =
        json.lines().find(|l| l.contains("no API tokens")).expect("the warning is logged");
    let v: serde_json::Value = serde_json::from_str(warning).expect("one JSON object per line");
    assert_eq!(v["level"], "WARN", "{v}");

    let out = Command::new(actuator_bin()).args(["serve", "--log-format", "xml"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("xml"), "the bad value is named");
}

/// Runs `actuator ARGS -o json` against `d` and parses the answer.
fn json_of(d: &TestDaemon, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = d.cli_ok(&all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn lists_page_on_and_snapshots_restore_by_label_or_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(dir.path());
    let doc = |n: u32| {
        let p = dir.path().join(format!("doc{n}.json"));
        std::fs::write(&p, format!(r#"{{"model": "gpt-4o", "temperature": 0.{n}}}"#)).unwrap();
        p
    };
    d.cli_ok(&["config", "apply", doc(2).to_str().unwrap(), "--slot", "chat"]);
    d.cli_ok(&["snapshot", "create", "chat", "--label", "before-v3"]);
    d.cli_ok(&["config", "apply", doc(3).to_str().unwrap(), "--slot", "chat"]);
    d.cli_ok(&["snapshot", "create", "chat", "--label", "at-v3"]);
    let active = |d: &TestDaemon| json_of(d, &["slot", "get", "chat"])["active_version"].clone();
    assert_eq!(active(&d), 3);

    // By label.
    let out = d.cli_ok(&["snapshot", "restore", "before-v3"]);
    assert!(out.contains("version 2"), "{out}");
    assert_eq!(active(&d), 2);

    // By a unique prefix of its id.
    let snaps = json_of(&d, &["snapshot", "list"]);
    let ids: Vec<String> = snaps["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 2, "{snaps:#}");
    let at_v3 = snaps["items"].as_array().unwrap().iter().find(|s| s["label"] == "at-v3").unwrap()
        ["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let common = ids[0].chars().zip(ids[1].chars()).take_while(|(a, b)| a == b).count();
    let unique = &at_v3[..common + 1];
    d.cli_ok(&["snapshot", "restore", unique]);
    assert_eq!(active(&d), 3);

    // A prefix both share (time-ordered ids share their first digits) is refused, naming both.
    if common > 0 {
        let out = d.cli(&["snapshot", "restore", &at_v3[..common]]);
        assert!(!out.status.success(), "an ambiguous prefix is refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("names 2 snapshots") && err.contains(&at_v3), "{err}");
    }
    let out = d.cli(&["snapshot", "restore", "no-such-label"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no snapshot has"));
    assert_eq!(active(&d), 3, "a refused restore changes nothing");

    // Every list pages on: a hint with the cursor, and the cursor gives the rest.
    let first = d.cli_ok(&["config", "history", "chat", "--limit", "1"]);
    let cursor = first
        .lines()
        .find_map(|l| l.strip_prefix("more: add --cursor "))
        .unwrap_or_else(|| panic!("no hint for the next page: {first}"))
        .to_owned();
    let next = json_of(&d, &["config", "history", "chat", "--limit", "1", "--cursor", &cursor]);
    assert_eq!(next["items"][0]["version"], 2, "the second page follows the first: {next:#}");
    for list in [
        vec!["audit", "list", "--limit", "1"],
        vec!["snapshot", "list", "--limit", "1"],
        vec!["slot", "list", "--limit", "1"],
    ] {
        let out = d.cli_ok(&list);
        if list[0] == "slot" {
            assert!(!out.contains("more:"), "one slot, one page: {out}");
        } else {
            assert!(out.contains("more: add --cursor"), "{list:?}: {out}");
        }
    }
}
