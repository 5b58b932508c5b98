//! Harness for integration tests: starts the real `actuator` binary on a loopback port with
//! its own temporary SQLite file, and runs CLI verbs against it.
//!
//! The binary must be built first (`cargo xtask test` does it; or `cargo build -p actuator`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod cluster;

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
    /// Where its stderr goes, when not to the test's own.
    log: Option<PathBuf>,
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

    /// Starts a daemon on a fresh temporary data directory with a settings file holding
    /// `toml` (for example a faster engine tick).
    pub fn start_with(toml: &str) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut d = Self::start_in_with(tmp.path(), Some(toml));
        d._tmp = Some(tmp);
        d
    }

    /// Starts a daemon on `data_dir` (which survives the daemon).
    pub fn start_in(data_dir: &Path) -> Self {
        Self::start_in_with(data_dir, None)
    }

    /// Starts a daemon on a fresh temporary data directory with extra environment
    /// variables (for example `ACTUATOR_ADMIN_TOKEN`).
    pub fn start_env(env: &[(&str, &str)]) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut d = Self::start_full(tmp.path(), None, env);
        d._tmp = Some(tmp);
        d
    }

    /// Starts a daemon on `data_dir` with an optional settings file.
    pub fn start_in_with(data_dir: &Path, toml: Option<&str>) -> Self {
        Self::start_full(data_dir, toml, &[])
    }

    /// Starts a daemon on `data_dir` with an optional settings file and extra environment.
    pub fn start_full(data_dir: &Path, toml: Option<&str>, env: &[(&str, &str)]) -> Self {
        if let Some(t) = toml {
            std::fs::write(data_dir.join("settings.toml"), t).expect("write settings");
        }
        Self::spawn(data_dir, toml.is_some(), env, "127.0.0.1:0", None)
    }

    /// Starts a daemon on `data_dir` with its `settings.toml` (written by the caller), its
    /// stderr appended to `log`.
    pub fn spawn_logged(data_dir: &Path, log: &Path) -> Self {
        Self::spawn(data_dir, true, &[], "127.0.0.1:0", Some(log))
    }

    /// Sends `signal` (`STOP`, `CONT`, `TERM`…) to the daemon's process.
    pub fn signal(&self, signal: &str) {
        let Some(c) = &self.child else { return };
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(c.id().to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{signal} {} failed", c.id());
    }

    /// Kills the daemon, waits `down_for`, and starts it again on the same data directory,
    /// settings file and port: a client that keeps the URL sees the daemon go away and come
    /// back.
    pub fn restart_same_port(&mut self, down_for: Duration) {
        self.kill();
        std::thread::sleep(down_for);
        let listen = self.url.trim_start_matches("http://").to_owned();
        let with_settings = self.data_dir.join("settings.toml").exists();
        let mut fresh =
            Self::spawn(&self.data_dir, with_settings, &[], &listen, self.log.as_deref());
        self.url = std::mem::take(&mut fresh.url);
        self.child = fresh.child.take();
    }

    fn spawn(
        data_dir: &Path,
        with_settings: bool,
        env: &[(&str, &str)],
        listen: &str,
        log: Option<&Path>,
    ) -> Self {
        let mut cmd = Command::new(actuator_bin());
        cmd.envs(env.iter().copied());
        cmd.args(["serve", "--listen", listen, "--data-dir"]).arg(data_dir);
        if with_settings {
            cmd.arg("--config").arg(data_dir.join("settings.toml"));
        }
        let mut child = cmd
            // A replica that logs to its own file says more: what it did is read back when a
            // test fails.
            .env("RUST_LOG", if log.is_some() { "info" } else { "warn" })
            .env_remove("ACTUATOR_CONFIG")
            .stdout(Stdio::piped())
            .stderr(match log {
                Some(path) => std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map(Stdio::from)
                    .expect("open the daemon's log"),
                None => Stdio::inherit(),
            })
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
        Self {
            child: Some(child),
            url,
            data_dir: data_dir.to_path_buf(),
            log: log.map(Path::to_path_buf),
            _tmp: None,
        }
    }

    /// Kills the daemon with SIGKILL (no chance to clean up).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the daemon gracefully (SIGTERM, then SIGKILL after 10 s) and asserts it exited
    /// cleanly. The data directory stays, so the test may edit the store and
    /// [`TestDaemon::restart`].
    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else { return };
        let term = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Ok(Some(status)) = c.try_wait() {
                break Some(status);
            }
            if term.is_err() || Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            status.is_some_and(|s| s.success()),
            "the daemon did not stop cleanly on SIGTERM within 10 s: {status:?}"
        );
    }

    /// Starts the daemon again on the same data directory (after [`TestDaemon::stop`] or
    /// [`TestDaemon::kill`]); the URL changes.
    pub fn restart(&mut self) {
        self.kill();
        let mut fresh = Self::start_in(&self.data_dir);
        self.url = std::mem::take(&mut fresh.url);
        self.child = fresh.child.take();
    }

    /// The SQLite file of the default store.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("actuator.db")
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
    call_as(c, method, url, None, body).await
}

/// Like [`call`], returning a failure to get an answer (connection refused or reset, a
/// timeout) as an error instead of panicking.
pub async fn try_call(
    c: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<serde_json::Value>,
) -> Result<(u16, serde_json::Value), String> {
    let mut r = c.request(method, url).header("x-actuator-actor", "tester");
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.map_err(|e| format!("{url}: {e}"))?;
    Ok((status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)))
}

/// Like [`call`], with `token` (when given) as `Authorization: Bearer`.
pub async fn call_as(
    c: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut r = c.request(method, url).header("x-actuator-actor", "tester");
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.expect("request");
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.expect("body");
    (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}

/// Creates `slot` over HTTP with two versions: `stable` (active) and `candidate` (staged,
/// version 2), asserting each answer.
pub async fn slot_with_candidate(
    c: &reqwest::Client,
    url: &str,
    slot: &str,
    stable: serde_json::Value,
    candidate: serde_json::Value,
) {
    use serde_json::json;
    let (s, b) =
        call(c, reqwest::Method::POST, &format!("{url}/v1/slots"), Some(json!({"name": slot})))
            .await;
    assert_eq!(s, 201, "{b}");
    for (doc, activate) in [(stable, true), (candidate, false)] {
        let (s, b) = call(
            c,
            reqwest::Method::POST,
            &format!("{url}/v1/slots/{slot}/versions"),
            Some(json!({"document": doc, "activate": activate})),
        )
        .await;
        assert_eq!(s, 201, "{b}");
    }
}

/// Starts a rollout over HTTP, asserting 201; returns its view.
pub async fn start_rollout(
    c: &reqwest::Client,
    url: &str,
    req: serde_json::Value,
) -> serde_json::Value {
    let (s, b) = call(c, reqwest::Method::POST, &format!("{url}/v1/rollouts"), Some(req)).await;
    assert_eq!(s, 201, "rollout refused: {b}");
    b
}

/// A simulated LLM application: resolves configs for random users and reports outcomes
/// drawn from each config document's `sim` object (`error_rate`, `latency_ms`, `cost`,
/// `quality`; defaults 1 %, 300 ms, 0.002, 4.0).
#[derive(Debug)]
pub struct TrafficSim {
    state: u64,
    next_request: u64,
    /// Distinct users.
    pub users: u64,
}

impl TrafficSim {
    /// A simulator with a fixed seed.
    pub fn new(seed: u64) -> Self {
        // Many users: with few sticky users, requests cluster by user and the sample-ratio
        // check (which counts requests) sees a skew that is not there.
        Self { state: seed | 1, next_request: 0, users: 1_000_000 }
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(1e-12);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    fn outcome(
        &mut self,
        rollout: &str,
        phase: &serde_json::Value,
        arm: &str,
        doc: &serde_json::Value,
    ) -> serde_json::Value {
        let sim = &doc["sim"];
        let er = sim["error_rate"].as_f64().unwrap_or(0.01);
        let lat = sim["latency_ms"].as_f64().unwrap_or(300.0);
        let cost = sim["cost"].as_f64().unwrap_or(0.002);
        let q = sim["quality"].as_f64().unwrap_or(4.0);
        self.next_request += 1;
        let failed = self.unit() < er;
        let latency = lat * (0.3 * self.normal()).exp();
        let quality = (q + 0.5 * self.normal()).clamp(1.0, 5.0);
        serde_json::json!({
            "request_id": format!("req-{}", self.next_request),
            "rollout_id": rollout,
            "phase": phase,
            "arm": arm,
            "outcome": if failed { "error" } else { "ok" },
            "latency_ms": latency,
            "cost": cost * (1.0 + 0.1 * self.normal()).max(0.1),
            "quality": quality,
        })
    }

    /// Sends `n` requests for `slot` through `POST /v1/resolve` and reports their outcomes;
    /// returns how many observations were accepted.
    pub async fn drive(&mut self, c: &reqwest::Client, url: &str, slot: &str, n: usize) -> u64 {
        match self.try_drive(c, url, slot, n).await {
            Ok(accepted) => accepted,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like [`TrafficSim::drive`], returning the first refusal (a resolve or an observation
    /// batch not answered 200, or no answer) instead of panicking: for a daemon that may be
    /// away, or a replica whose leader is changing.
    pub async fn try_drive(
        &mut self,
        c: &reqwest::Client,
        url: &str,
        slot: &str,
        n: usize,
    ) -> Result<u64, String> {
        let mut accepted = 0;
        let mut left = n;
        while left > 0 {
            let k = left.min(500);
            left -= k;
            let requests: Vec<serde_json::Value> = (0..k)
                .map(|_| {
                    let user = self.next() % self.users;
                    serde_json::json!({"slot": slot, "context": {"targetingKey": format!("user-{user}")}})
                })
                .collect();
            let (s, body) = try_call(
                c,
                reqwest::Method::POST,
                &format!("{url}/v1/resolve"),
                Some(serde_json::json!({"requests": requests})),
            )
            .await?;
            if s != 200 {
                return Err(format!("resolve failed with {s}: {body}"));
            }
            let mut obs = Vec::new();
            for r in body["results"].as_array().into_iter().flatten() {
                let Some(rollout) = r["rollout_id"].as_str() else { continue };
                // A shadow answer serves the stable config; the candidate runs on a copy.
                let variant = match r["variant"].as_str().unwrap_or("stable") {
                    "shadow" => "stable".to_owned(),
                    v => v.to_owned(),
                };
                // As the API asks: the resolution's phase, unit and in_experiment go back
                // with the outcome.
                let mut o = self.outcome(rollout, &r["phase"], &variant, &r["config"]);
                o["unit"] = r["unit"].clone();
                o["in_experiment"] = r["in_experiment"].clone();
                obs.push(o);
                if r["shadow"].is_object() {
                    let doc = r["shadow"]["config"].clone();
                    let mut o = self.outcome(rollout, &r["phase"], "shadow", &doc);
                    o["unit"] = r["unit"].clone();
                    o["in_experiment"] = r["in_experiment"].clone();
                    obs.push(o);
                }
            }
            if obs.is_empty() {
                continue;
            }
            let (s, rep) = try_call(
                c,
                reqwest::Method::POST,
                &format!("{url}/v1/observations"),
                Some(serde_json::Value::Array(obs)),
            )
            .await?;
            if s != 200 {
                return Err(format!("observations refused with {s}: {rep}"));
            }
            accepted += rep["accepted"].as_u64().unwrap_or(0);
        }
        Ok(accepted)
    }
}

/// Engine settings that make rollouts finish within seconds in tests.
pub const FAST_ENGINE: &str = "[engine]\ntick_ms = 50\ncheckpoint_ms = 200\ngradual_step_secs = 1\nvalidation_secs = 1\nvalidation_min_samples = 10\n";
