//! Store faults against the real daemon: a full disk, a database file removed or replaced
//! under the daemon, and tampering with the stored documents and the audit log.

use actuator_tests::{TestDaemon, call, http};
use reqwest::Method;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

async fn create_slot(c: &reqwest::Client, url: &str, slot: &str) {
    let (s, b) =
        call(c, Method::POST, &format!("{url}/v1/slots"), Some(json!({"name": slot}))).await;
    assert_eq!(s, 201, "{b}");
}

async fn apply(c: &reqwest::Client, url: &str, slot: &str, doc: Value) -> (u16, Value) {
    call(
        c,
        Method::POST,
        &format!("{url}/v1/slots/{slot}/versions"),
        Some(json!({"document": doc})),
    )
    .await
}

async fn readyz(c: &reqwest::Client, url: &str) -> (u16, Value) {
    call(c, Method::GET, &format!("{url}/readyz"), None).await
}

/// Polls `readyz` until it answers `status` (30 s at most).
async fn wait_ready(c: &reqwest::Client, url: &str, status: u16) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (s, b) = readyz(c, url).await;
        if s == status {
            return b;
        }
        assert!(Instant::now() < deadline, "readyz stayed {s}, wanted {status}: {b}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Result<Self, String> {
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(Self(at.to_owned()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system holding `path` with a file at `path`.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("create filler");
    let chunk = vec![0x5a_u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_resume_by_themselves_once_disk_space_returns() {
    if !is_root() {
        eprintln!("skipped: mounting a small tmpfs for the data directory needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("data");
    let fs = match Tmpfs::mount(&mnt, "16m") {
        Ok(fs) => fs,
        Err(e) => {
            eprintln!("skipped: cannot mount a tmpfs here: {e}");
            return;
        }
    };
    let mut d = TestDaemon::start_in(&mnt);
    let c = http();
    let url = d.url.clone();
    create_slot(&c, &url, "disk").await;
    let (s, b) = apply(&c, &url, "disk", json!({"model": "small"})).await;
    assert_eq!(s, 201, "{b}");
    let filler = mnt.join("filler");
    fill(&filler);
    let mut refused = None;
    for i in 0..60 {
        let doc = json!({"model": "big", "prompt": format!("{i}-{}", "x".repeat(150_000))});
        let (s, b) = apply(&c, &url, "disk", doc).await;
        if s != 201 {
            refused = Some((s, b));
            break;
        }
    }
    let (s, b) = refused.expect("a write failed once the disk was full");
    assert_eq!(s, 503, "a full disk is a 503: {b}");
    assert_eq!(b["error"]["code"], "store_unavailable", "{b}");
    let msg = b["error"]["message"].as_str().unwrap();
    assert!(msg.contains("full"), "the error says the disk is full: {msg}");
    std::fs::remove_file(&filler).unwrap();
    // No restart: the next writes work.
    for i in 0..5 {
        let (s, b) = apply(&c, &url, "disk", json!({"model": format!("after-{i}")})).await;
        assert_eq!(s, 201, "write {i} after space returned: {b}");
    }
    wait_ready(&c, &url, 200).await;
    let (_, v) = call(&c, Method::GET, &format!("{url}/v1/audit/verify"), None).await;
    assert_eq!(v["ok"], true, "{v}");
    d.stop();
    drop(fs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_or_replaced_database_file_stops_writes() {
    let d = TestDaemon::start();
    let c = http();
    let url = d.url.clone();
    create_slot(&c, &url, "file").await;
    let (s, b) = apply(&c, &url, "file", json!({"model": "a"})).await;
    assert_eq!(s, 201, "{b}");
    wait_ready(&c, &url, 200).await;

    let db = d.db_path();
    let away = d.data_dir.join("moved.db");
    std::fs::rename(&db, &away).unwrap();
    let (s, b) = apply(&c, &url, "file", json!({"model": "b"})).await;
    assert_eq!((s, b["error"]["code"].as_str()), (503, Some("store_unavailable")), "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("was removed"), "{b}");
    let r = wait_ready(&c, &url, 503).await;
    assert!(r["error"]["details"]["reasons"][0].as_str().unwrap().contains("was removed"), "{r}");

    // The same file back: writes resume.
    std::fs::rename(&away, &db).unwrap();
    let (s, b) = apply(&c, &url, "file", json!({"model": "c"})).await;
    assert_eq!(s, 201, "{b}");
    wait_ready(&c, &url, 200).await;

    // Another file at the path (a restore from backup under the running daemon).
    let copy = d.data_dir.join("copy.db");
    std::fs::copy(&db, &copy).unwrap();
    std::fs::rename(&copy, &db).unwrap();
    let (s, b) = apply(&c, &url, "file", json!({"model": "d"})).await;
    assert_eq!((s, b["error"]["code"].as_str()), (503, Some("store_unavailable")), "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("was replaced"), "{b}");
    let r = wait_ready(&c, &url, 503).await;
    assert!(r["error"]["message"].as_str().unwrap().contains("was replaced"), "{r}");
    let (_, sl) = call(&c, Method::GET, &format!("{url}/v1/slots/file"), None).await;
    assert_eq!(sl["latest_version"], 2, "nothing was written after the file was replaced");
}

/// Runs `sql` on the daemon's database while the daemon is stopped.
async fn tamper(db: &Path, sql: &'static str) {
    use sqlx::ConnectOptions;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new().filename(db).connect().await.unwrap();
    let done = sqlx::query(sql).execute(&mut conn).await.unwrap();
    assert_eq!(done.rows_affected(), 1, "{sql}");
    sqlx::Connection::close(conn).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_store_is_detected_and_refuses_writes_until_acknowledged() {
    let mut d = TestDaemon::start();
    let c = http();
    create_slot(&c, &d.url, "chat").await;
    for m in ["a", "b"] {
        let (s, b) = apply(&c, &d.url, "chat", json!({"model": m})).await;
        assert_eq!(s, 201, "{b}");
    }
    d.stop();
    tamper(
        &d.db_path(),
        r#"UPDATE versions SET document = '{"model":"evil"}' WHERE slot = 'chat' AND version = 1"#,
    )
    .await;
    d.restart();
    let url = d.url.clone();

    let (_, v) = call(&c, Method::GET, &format!("{url}/v1/audit/verify"), None).await;
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["problem"]["kind"], "document_changed", "{v}");
    assert_eq!(
        (v["problem"]["slot"].as_str(), v["problem"]["version"].as_u64()),
        (Some("chat"), Some(1))
    );
    assert!(v["message"].as_str().unwrap().contains("version 1 of slot chat"), "{v}");
    let out = d.cli(&["audit", "verify"]);
    assert!(!out.status.success(), "the CLI fails on a broken chain");

    let r = wait_ready(&c, &url, 503).await;
    assert!(r["error"]["message"].as_str().unwrap().contains("audit chain broken"), "{r}");
    let (s, b) = apply(&c, &url, "chat", json!({"model": "c"})).await;
    assert_eq!((s, b["error"]["code"].as_str()), (503, Some("audit_chain_broken")), "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("version 1 of slot chat"), "{b}");

    let (s, b) =
        call(&c, Method::POST, &format!("{url}/v1/audit/acknowledge"), Some(json!({"reason": ""})))
            .await;
    assert_eq!(s, 400, "an empty reason is refused: {b}");
    let out = d.cli_ok(&["audit", "acknowledge", "--reason", "version 1 edited by hand, checked"]);
    assert!(out.contains("acknowledged"), "{out}");
    let (s, b) = apply(&c, &url, "chat", json!({"model": "c"})).await;
    assert_eq!(s, 201, "writes resume after the acknowledgement: {b}");
    wait_ready(&c, &url, 200).await;
    let (_, v) = call(&c, Method::GET, &format!("{url}/v1/audit/verify"), None).await;
    assert_eq!((v["ok"].as_bool(), v["incremental"].as_bool()), (Some(true), Some(true)), "{v}");
    assert_eq!(v["entries_checked"], 1, "only the write after the acknowledgement: {v}");
    // The full verification walks the whole chain again: the problem, acknowledged.
    let job: Value =
        serde_json::from_str(&d.cli_ok(&["audit", "verify", "--full", "--wait", "-o", "json"]))
            .unwrap();
    assert_eq!(job["state"], "succeeded", "{job}");
    let v = &job["report"];
    assert_eq!((v["ok"].as_bool(), v["incremental"].as_bool()), (Some(true), Some(false)), "{v}");
    assert!(v["problems"][0]["acknowledged_by"].is_u64(), "{v}");
    let (_, log) =
        call(&c, Method::GET, &format!("{url}/v1/audit?target=audit&limit=5"), None).await;
    let ack = &log["items"][0];
    assert_eq!(ack["action"], "audit.acknowledge", "{log}");
    assert_eq!(ack["actor"], "tester");
    assert_eq!(ack["metadata"]["reason"], "version 1 edited by hand, checked");
    assert_eq!(ack["metadata"]["problems"][0]["kind"], "document_changed");
    let (s, b) = call(
        &c,
        Method::POST,
        &format!("{url}/v1/audit/acknowledge"),
        Some(json!({"reason": "again"})),
    )
    .await;
    assert_eq!((s, b["error"]["code"].as_str()), (409, Some("nothing_to_acknowledge")), "{b}");

    // The acknowledgement survives a restart; a new edit, of an audit entry this time, does not
    // hide behind it. The entry is before the verified head, so the start (incremental)
    // trusts it: the full verification finds it, and moves the verified head back before it.
    d.stop();
    d.restart();
    wait_ready(&c, &d.url, 200).await;
    d.stop();
    tamper(&d.db_path(), "UPDATE audit SET actor = 'mallory' WHERE seq = 2").await;
    d.restart();
    let url = d.url.clone();
    wait_ready(&c, &url, 200).await;
    let (_, v) = call(&c, Method::GET, &format!("{url}/v1/audit/verify"), None).await;
    assert_eq!((v["ok"].as_bool(), v["incremental"].as_bool()), (Some(true), Some(true)), "{v}");
    let (s, job) =
        call(&c, Method::POST, &format!("{url}/v1/audit/verify/full"), Some(json!({}))).await;
    assert_eq!(s, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    let (s, again) =
        call(&c, Method::POST, &format!("{url}/v1/audit/verify/full"), Some(json!({}))).await;
    if s == 409 {
        assert!(again["error"]["message"].as_str().unwrap().contains(&id), "{again}");
    } else {
        assert_eq!(s, 202, "the first job may be done already: {again}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let done = loop {
        let (s, j) = call(&c, Method::GET, &format!("{url}/v1/audit/verify/jobs/{id}"), None).await;
        assert_eq!(s, 200, "{j}");
        if j["state"] != "running" {
            break j;
        }
        assert!(Instant::now() < deadline, "the job did not end: {j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["report"]["ok"], false, "{done}");
    assert_eq!(done["report"]["problem"], json!({"kind": "edited", "seq": 2}), "{done}");
    let r = wait_ready(&c, &url, 503).await;
    assert!(r["error"]["message"].as_str().unwrap().contains("entry 2 was edited"), "{r}");
    let (s, b) = apply(&c, &url, "chat", json!({"model": "d"})).await;
    assert_eq!((s, b["error"]["code"].as_str()), (503, Some("audit_chain_broken")), "{b}");
    d.cli_ok(&["audit", "acknowledge", "--reason", "entry 2 edited in a drill"]);
    let (s, b) = apply(&c, &url, "chat", json!({"model": "d"})).await;
    assert_eq!(s, 201, "{b}");
    wait_ready(&c, &url, 200).await;
}
