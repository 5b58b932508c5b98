//! Harness for the high-availability tests: a private PostgreSQL server the test may stop and
//! start, and several `actuator` replicas on loopback sharing it.
//!
//! The server is made with the machine's `initdb` and `pg_ctl` (Debian's PostgreSQL, found on
//! `PATH`, through `pg_config --bindir` or under `/usr/lib/postgresql`) in a temporary
//! directory, on a free port, with trust authentication on loopback only. As root it runs as
//! the `postgres` user (PostgreSQL refuses to run as root). It is stopped and removed when
//! the value is dropped. Without those programs the tests say so and skip, except under CI
//! (`CI=true`), where a missing server is an error.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{TestDaemon, call, http};

/// Where `initdb` and `pg_ctl` are, if anywhere.
fn postgres_bindir() -> Option<PathBuf> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return Some(dir);
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A free TCP port on loopback (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on loopback")
}

/// A PostgreSQL server of the test's own, which it may stop and start.
#[derive(Debug)]
pub struct PrivatePostgres {
    bindir: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
}

impl PrivatePostgres {
    /// Makes and starts a server with one database, `actuator`. `None` (after saying why)
    /// when the machine has no PostgreSQL programs and the run is not under CI.
    pub fn start() -> Option<Self> {
        let Some(bindir) = postgres_bindir() else {
            assert!(
                std::env::var("CI").map(|v| v != "true").unwrap_or(true),
                "CI: initdb/pg_ctl not found (install PostgreSQL's server package)"
            );
            eprintln!("skipped: initdb and pg_ctl not found");
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let as_postgres = is_root();
        if as_postgres {
            let ok = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown of the PostgreSQL directory to postgres failed");
        }
        let pg = Self { bindir, dir, port: free_port(), as_postgres };
        let data = pg.data();
        pg.run(
            "initdb",
            &[
                "-D",
                data.to_str().expect("utf-8 path"),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
        );
        pg.resume();
        let out = Command::new(pg.bindir.join("createdb"))
            .args(["-h", "127.0.0.1", "-p", &pg.port.to_string(), "-U", "postgres", "actuator"])
            .output()
            .expect("run createdb");
        assert!(out.status.success(), "createdb: {}", String::from_utf8_lossy(&out.stderr));
        Some(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn run(&self, program: &str, args: &[&str]) {
        let exe = self.bindir.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        let out = cmd.args(args).output().unwrap_or_else(|e| panic!("run {program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The URL of the `actuator` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/actuator", self.port)
    }

    /// Stops the server (fast shutdown: open connections are closed).
    pub fn stop(&self) {
        let data = self.data();
        self.run("pg_ctl", &["-D", data.to_str().expect("utf-8"), "-m", "fast", "-w", "stop"]);
    }

    /// Starts the server (again), on the same port, and waits until it accepts connections.
    pub fn resume(&self) {
        let data = self.data();
        let log = self.dir.path().join("server.log");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().expect("utf-8"),
                "-l",
                log.to_str().expect("utf-8"),
                "-w",
                "-o",
                &opts,
                "start",
            ],
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.data();
        let exe = self.bindir.join("pg_ctl");
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        let _ = cmd.arg("-D").arg(&data).args(["-m", "immediate", "-w", "stop"]).output();
    }
}

/// One replica of a [`Cluster`].
#[derive(Debug)]
pub struct Replica {
    /// Its `[cluster] replica_id`.
    pub id: String,
    /// The running daemon (`None` while it is killed).
    pub daemon: Option<TestDaemon>,
    dir: tempfile::TempDir,
}

impl Replica {
    /// Its base URL (panics while it is down).
    pub fn url(&self) -> String {
        self.daemon.as_ref().expect("the replica is running").url.clone()
    }

    /// What the replica wrote on stderr since it was first started.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }
}

/// Several `actuator` replicas on loopback over one [`PrivatePostgres`].
#[derive(Debug)]
pub struct Cluster {
    /// The replicas, by index.
    pub replicas: Vec<Replica>,
    settings: String,
    /// The database server (declared last: dropped after the replicas).
    pub pg: PrivatePostgres,
}

impl Cluster {
    /// Starts `n` replicas (`r0`, `r1`, …) with `lease_ms` and `extra` settings (for
    /// example [`crate::FAST_ENGINE`]), and waits until one of them leads. `None` when the
    /// machine has no PostgreSQL programs (outside CI).
    pub async fn start(n: usize, lease_ms: u64, extra: &str) -> Option<Self> {
        let pg = PrivatePostgres::start()?;
        let settings = format!(
            "{extra}\n[store]\nplugin = \"postgres\"\nconfig = {{ url = \"{}\" }}\n\n[cluster]\nenabled = true\nlease_ms = {lease_ms}\n",
            pg.url()
        );
        let mut cluster = Self { replicas: Vec::new(), settings, pg };
        for i in 0..n {
            let dir = tempfile::tempdir().expect("tempdir");
            cluster.replicas.push(Replica { id: format!("r{i}"), daemon: None, dir });
            cluster.restart(i);
        }
        cluster.wait_leader(Duration::from_secs(20)).await;
        Some(cluster)
    }

    /// Starts replica `i` (again), on a new port, logging to its `daemon.log`.
    pub fn restart(&mut self, i: usize) {
        let r = &mut self.replicas[i];
        if let Some(mut d) = r.daemon.take() {
            d.kill();
        }
        let toml = format!("{}replica_id = \"{}\"\n", self.settings, r.id);
        std::fs::write(r.dir.path().join("settings.toml"), &toml).expect("write settings");
        let log = r.dir.path().join("daemon.log");
        r.daemon = Some(TestDaemon::spawn_logged(r.dir.path(), &log));
    }

    /// SIGKILLs replica `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut d) = self.replicas[i].daemon.take() {
            d.kill();
        }
    }

    /// Sends `signal` (`STOP`, `CONT`, …) to replica `i`.
    pub fn signal(&self, i: usize, signal: &str) {
        let d = self.replicas[i].daemon.as_ref().expect("the replica is running");
        d.signal(signal);
    }

    /// The indices of the running replicas.
    pub fn running(&self) -> Vec<usize> {
        (0..self.replicas.len()).filter(|&i| self.replicas[i].daemon.is_some()).collect()
    }

    /// `GET /v1/cluster` on replica `i` (`None` when it does not answer 200).
    pub async fn view(&self, i: usize) -> Option<Value> {
        let c = http();
        let url = self.replicas[i].daemon.as_ref()?.url.clone();
        let (s, v) = call(&c, reqwest::Method::GET, &format!("{url}/v1/cluster"), None).await;
        (s == 200).then_some(v)
    }

    /// The index of the replica every running replica except `skip` names as the leader,
    /// with its epoch, once they agree and it is running.
    pub async fn agreed_leader(&self, skip: &[usize]) -> Option<(usize, u64)> {
        let mut agreed: Option<(String, u64)> = None;
        for i in self.running() {
            if skip.contains(&i) {
                continue;
            }
            let v = self.view(i).await?;
            let id = v["leader"]["id"].as_str()?.to_owned();
            let epoch = v["leader"]["epoch"].as_u64()?;
            match &agreed {
                None => agreed = Some((id, epoch)),
                Some(a) if *a == (id.clone(), epoch) => {}
                Some(_) => return None,
            }
        }
        let (id, epoch) = agreed?;
        let i = self.replicas.iter().position(|r| r.id == id)?;
        if skip.contains(&i) || self.replicas[i].daemon.is_none() {
            return None;
        }
        let own = self.view(i).await?;
        (own["replica"]["role"] == "leader").then_some((i, epoch))
    }

    /// Waits until the replicas agree on a running leader; returns its index and epoch.
    pub async fn wait_leader(&self, within: Duration) -> (usize, u64) {
        self.wait_leader_except(&[], within).await
    }

    /// Like [`Cluster::wait_leader`], leaving the replicas of `skip` out (stopped ones).
    pub async fn wait_leader_except(&self, skip: &[usize], within: Duration) -> (usize, u64) {
        let t0 = Instant::now();
        loop {
            if let Some(l) = self.agreed_leader(skip).await {
                return l;
            }
            assert!(t0.elapsed() < within, "no agreed leader within {within:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The data directory of replica `i`.
    pub fn dir(&self, i: usize) -> &Path {
        self.replicas[i].dir.path()
    }
}
