//! Harness for integration tests: starts the real `actuator` binary on a loopback port with
//! its own temporary SQLite file, and runs CLI verbs against it.
//!
//! The binary must be built first (`cargo xtask test` does it; or `cargo build -p actuator`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Path of the built `actuator` binary next to the test executable.
pub fn actuator_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join(format!("actuator{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run `cargo xtask test`, or `cargo build -p actuator` before `cargo test`",
        bin.display()
    );
    bin
}

/// A daemon process with its data directory.
#[derive(Debug)]
pub struct TestDaemon {
    child: Option<Child>,
    /// Base URL, `http://127.0.0.1:PORT`.
    pub url: String,
    /// The data directory (kept across restarts).
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl TestDaemon {
    /// Starts a daemon on a fresh temporary data directory.
    pub fn start() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut d = Self::start_in(tmp.path());
        d._tmp = Some(tmp);
        d
    }

    /// Starts a daemon on `data_dir` (which survives the daemon).
    pub fn start_in(data_dir: &Path) -> Self {
        let mut child = Command::new(actuator_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("RUST_LOG", "warn")
            .env_remove("ACTUATOR_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn actuator serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = loop {
            assert!(Instant::now() < deadline, "daemon did not report its address in time");
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(u) = line.strip_prefix("actuator listening on ") {
                        break u.trim().to_owned();
                    }
                }
                _ => panic!("daemon exited before listening: {:?}", child.try_wait()),
            }
        };
        // Keep draining stdout so the daemon never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self { child: Some(child), url, data_dir: data_dir.to_path_buf(), _tmp: None }
    }

    /// Kills the daemon with SIGKILL (no chance to clean up).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs `actuator ARGS --server URL` and returns its output.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(actuator_bin())
            .args(args)
            .args(["--server", &self.url, "--actor", "tester"])
            .output()
            .expect("run actuator cli")
    }

    /// Like [`TestDaemon::cli`], asserting success and returning stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "`actuator {}` failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An HTTP client for tests.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("client")
}

/// Sends a request and returns status and JSON body (Null when empty or not JSON).
pub async fn call(
    c: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut r = c.request(method, url).header("x-actuator-actor", "tester");
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.expect("request");
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.expect("body");
    (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}
