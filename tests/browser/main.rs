//! The dashboard in a real browser: headless Chromium, driven over WebDriver, against a real
//! daemon with tokens on, a canary under simulated traffic.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian's `chromium` and
//! `chromium-driver`), so it is ignored by a plain `cargo test`; `cargo xtask test` installs
//! them and runs it with `--ignored`. `ACTUATOR_SCREENSHOT=PATH` also writes the screenshot of
//! the rollout page there (`cargo xtask screenshot` uses it for the README's picture).

mod webdriver;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use actuator_tests::{FAST_ENGINE, TestDaemon, actuator_bin};
use serde_json::{Value, json};
use webdriver::Browser;

const ADMIN: &str = "browser-admin-secret-0123456789abcdef";

/// Runs the CLI against `d` with `token`.
fn cli(d: &TestDaemon, token: &str, args: &[&str]) -> Output {
    Command::new(actuator_bin())
        .args(args)
        .args(["--server", &d.url])
        .env("ACTUATOR_TOKEN", token)
        .env("NO_COLOR", "1")
        .output()
        .expect("run the cli")
}

fn cli_json(d: &TestDaemon, token: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = cli(d, token, &all);
    assert!(
        out.status.success(),
        "`actuator {}`: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

fn token(d: &TestDaemon, name: &str, role: &str) -> String {
    let v = cli_json(d, ADMIN, &["token", "create", name, "--role", role]);
    v["secret"].as_str().expect("a secret").to_owned()
}

/// Simulated traffic until it is killed (dropped).
struct Traffic(Child);

impl Drop for Traffic {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `target/` (the test runs from `target/debug/deps`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("exe");
    exe.ancestors().nth(3).map(Path::to_path_buf).expect("target dir")
}

/// The text of the element `css` selects (empty when there is none).
fn text_of(css: &str) -> String {
    format!("const e = document.querySelector({css:?}); return e ? e.textContent : '';")
}

/// Signs in with `secret` on the sign-in page.
async fn sign_in(b: &Browser, url: &str, secret: &str) {
    b.js("sessionStorage.clear(); return true;", json!([])).await;
    b.goto(&format!("{url}/ui/#/signin")).await;
    b.wait_for("the sign-in form", 20, "return document.querySelector('#token') !== null").await;
    b.type_into("#token", secret).await;
    b.click("#signin-submit").await;
    b.wait_for("the rollouts page", 20, "return document.querySelector('#rollouts') !== null")
        .await;
}

/// Confirms the open dialog with `reason` (after checking that an empty reason is refused).
async fn confirm(b: &Browser, reason: &str) {
    b.wait_for("the confirmation", 10, "return document.querySelector('#confirm').open").await;
    b.click("#confirm-ok").await;
    let err = b.wait_for("the missing reason to be refused", 10, &text_of("#confirm-error")).await;
    assert_eq!(err, "A reason is required.");
    assert_eq!(b.js("return document.querySelector('#confirm').open", json!([])).await, true);
    b.type_into("#confirm-reason", reason).await;
    b.click("#confirm-ok").await;
    b.wait_for("the dialog to close", 10, "return !document.querySelector('#confirm').open").await;
}

async fn wait_state(b: &Browser, what: &str, states: &[&str]) -> String {
    let list = serde_json::to_string(states).unwrap();
    let script = format!(
        "const e = document.querySelector('#state'); const s = e ? e.className.replace('state ', '') : ''; return {list}.includes(s) ? s : '';"
    );
    b.wait_for(what, 30, &script).await.as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromium-driver; `cargo xtask test` installs them and runs it"]
async fn the_dashboard_follows_and_controls_a_live_canary() {
    let dir = tempfile::tempdir().unwrap();
    let d =
        TestDaemon::start_full(dir.path(), Some(FAST_ENGINE), &[("ACTUATOR_ADMIN_TOKEN", ADMIN)]);
    let operator = token(&d, "dora-operator", "operator");
    let viewer = token(&d, "vic-viewer", "viewer");
    let v1 = dir.path().join("v1.json");
    std::fs::write(&v1, r#"{"model": "gpt-4o", "temperature": 0.2}"#).unwrap();
    let v2 = dir.path().join("v2.json");
    std::fs::write(&v2, r#"{"model": "gpt-4o-mini", "temperature": 0.2}"#).unwrap();
    cli_json(&d, operator.as_str(), &["slot", "create", "chat.default"]);
    cli_json(&d, &operator, &["config", "apply", v1.to_str().unwrap(), "--slot", "chat.default"]);
    cli_json(
        &d,
        &operator,
        &["snapshot", "create", "--slot", "chat.default", "--label", "before-canary"],
    );
    // A canary that stays in its first step (it can never gather its samples in the test).
    let started = cli_json(
        &d,
        &operator,
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
            "10,50,100",
            "--min-samples",
            "1000000",
            "--min-duration",
            "600",
        ],
    );
    let id = started["id"].as_str().expect("rollout id").to_owned();
    let traffic = Traffic(
        Command::new(actuator_bin())
            .args(["simulate", "--slot", "chat.default", "--rps", "200", "--duration", "120"])
            .args(["--server", &d.url])
            .env("ACTUATOR_TOKEN", &operator)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the simulation"),
    );

    let b = Browser::start().await;
    // Tokens are on: the dashboard asks for one first.
    b.goto(&format!("{}/ui/", d.url)).await;
    b.wait_for("the sign-in page", 20, "return document.querySelector('#signin') !== null").await;
    sign_in(&b, &d.url, &operator).await;
    let who = b.wait_for("the role", 10, &text_of("#who")).await;
    assert_eq!(who, "dora-operator · operator");
    let row = b
        .wait_for(
            "the rollout in the live list",
            20,
            &format!("const r = document.querySelector('tr[data-id=\"{id}\"]'); return r ? r.textContent : '';"),
        )
        .await;
    assert!(row.as_str().unwrap().contains("chat.default"), "{row}");
    b.wait_for("the list's live stream", 20, "return document.querySelector('#live.on') !== null")
        .await;
    b.click(&format!("tr[data-id=\"{id}\"] a")).await;

    // The rollout page: the step plan, the arms, live evidence.
    b.wait_for("the live stream", 20, "return document.querySelector('#live.on') !== null").await;
    let plan = b.wait_for("the step plan", 10, &text_of("#plan")).await;
    let plan = plan.as_str().unwrap().to_owned();
    assert!(plan.contains("●0. prove 10%") && plan.contains("◌2. watch 100%"), "{plan}");
    b.wait_for(
        "traffic on both arms",
        30,
        "return document.querySelectorAll('#arms tbody tr').length >= 2",
    )
    .await;
    let first = b
        .wait_for(
            "a combined-evidence chart with points",
            30,
            "const s = document.querySelector('#chart-combined svg'); return s && Number(s.dataset.points) >= 2 ? s.dataset.last : '';",
        )
        .await;
    b.wait_for(
        "the chart to move with new looks",
        30,
        &format!("const s = document.querySelector('#chart-combined svg'); return s && s.dataset.last !== {first} ? s.dataset.last : '';"),
    )
    .await;
    b.wait_for(
        "a per-metric estimate chart with two looks",
        30,
        "return [...document.querySelectorAll('#charts .chart svg')].some((s) => s.closest('[id^=chart-est-]') && Number(s.dataset.points) >= 2)",
    )
    .await;

    // Pause and resume from the page, each confirmed with a reason.
    b.click("#ctl-pause").await;
    confirm(&b, "latency looks off in the browser test").await;
    wait_state(&b, "the pause", &["paused"]).await;
    let reason = b.wait_for("the paused reason", 10, &text_of("#paused-reason")).await;
    assert!(reason.as_str().unwrap().contains("latency looks off in the browser test"), "{reason}");
    let transitions = b.wait_for("the transition", 10, &text_of("#transitions")).await;
    assert!(transitions.as_str().unwrap().contains("dora-operator"), "{transitions}");
    b.click("#ctl-resume").await;
    confirm(&b, "checked, carry on").await;
    wait_state(&b, "the resume", &["rolling_out", "monitoring", "validating"]).await;
    let state = cli_json(&d, &operator, &["rollout", "status", &id]);
    assert_ne!(state["state"], "paused", "the daemon resumed it: {state}");

    // The picture of the rollout page, a test artefact (and the README's image on request).
    b.wait_for("the chart again", 30, "const s = document.querySelector('#chart-combined svg'); return s && Number(s.dataset.points) >= 2").await;
    let png = b.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let out = target_dir().join("dashboard");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("rollout-page.png"), &png).unwrap();
    if let Some(p) = std::env::var_os("ACTUATOR_SCREENSHOT") {
        std::fs::write(&p, &png).unwrap();
    }

    // A rollback from the page appears as it happens.
    b.click("#ctl-rollback").await;
    confirm(&b, "the candidate is worse").await;
    wait_state(&b, "the rollback", &["rolling_back", "rolled_back"]).await;
    b.wait_for("the rollback record", 30, "return document.querySelector('#rollbacks') !== null")
        .await;
    let t = b.wait_for("the rollback transition", 10, &text_of("#transitions")).await;
    assert!(t.as_str().unwrap().contains("the candidate is worse"), "{t}");
    wait_state(&b, "the end of the rollback", &["rolled_back"]).await;
    assert_eq!(
        b.js("return document.querySelector('#ctl-pause').disabled", json!([])).await,
        true,
        "a finished rollout cannot be paused"
    );

    // A viewer sees the same page without controls.
    sign_in(&b, &d.url, &viewer).await;
    assert_eq!(b.wait_for("the role", 10, &text_of("#who")).await, "vic-viewer · viewer");
    b.goto(&format!("{}/ui/#/rollout/{id}", d.url)).await;
    wait_state(&b, "the rollout page as a viewer", &["rolled_back"]).await;
    assert_eq!(
        b.js("return document.querySelectorAll('#controls, [id^=ctl-]').length", json!([])).await,
        0,
        "a viewer sees no control"
    );

    // The other pages, as the viewer: a slot's versions side by side, snapshots, the audit log.
    b.goto(&format!("{}/ui/#/slot/chat.default", d.url)).await;
    let changes = b.wait_for("the diff of v1 and v2", 20, &text_of("#diff-changes")).await;
    assert!(
        changes.as_str().unwrap().contains("~ /model: \"gpt-4o\" → \"gpt-4o-mini\""),
        "{changes}"
    );
    let left = b.wait_for("the left side", 5, &text_of("#diff-left")).await;
    let right = b.wait_for("the right side", 5, &text_of("#diff-right")).await;
    assert!(left.as_str().unwrap().contains("\"gpt-4o\""), "{left}");
    assert!(right.as_str().unwrap().contains("\"gpt-4o-mini\""), "{right}");
    b.click("#nav a[data-page=snapshots]").await;
    let snaps = b.wait_for("the snapshot", 20, &text_of("#snapshots tbody")).await;
    assert!(snaps.as_str().unwrap().contains("before-canary"), "{snaps}");
    b.click("#nav a[data-page=audit]").await;
    let audit = b.wait_for("the audit log", 20, &text_of("#audit tbody")).await;
    let audit = audit.as_str().unwrap();
    assert!(audit.contains("snapshot.create") && audit.contains("dora-operator"), "{audit}");
    let status = b.wait_for("the verification status", 20, "const e = document.querySelector('#audit-status'); return e && !e.textContent.startsWith('Checking') ? e.textContent : '';").await;
    assert!(status.as_str().unwrap().contains("needs an admin token"), "{status}");
    // An admin sees the chain verified.
    sign_in(&b, &d.url, ADMIN).await;
    b.click("#nav a[data-page=audit]").await;
    let status = b.wait_for("the verification status", 20, "const e = document.querySelector('#audit-status .verified'); return e ? e.parentElement.textContent : '';").await;
    assert!(status.as_str().unwrap().contains("✔ verified"), "{status}");
    drop(traffic);

    // An open daemon (no tokens) needs no sign-in, says so, and shows the controls.
    let open = TestDaemon::start();
    b.js("sessionStorage.clear(); return true;", json!([])).await;
    b.goto(&format!("{}/ui/", open.url)).await;
    b.wait_for("the rollouts page", 20, "return document.querySelector('#rollouts') !== null")
        .await;
    let who = b.wait_for("the open mode", 10, &text_of("#who")).await;
    assert_eq!(who, "open daemon (no tokens): every role");
    assert_eq!(b.js("return document.querySelector('#signout').hidden", json!([])).await, true);
}
