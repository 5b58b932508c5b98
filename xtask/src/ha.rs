//! `cargo xtask ha`: several replicas of the daemon over one PostgreSQL database, a canary
//! rollout and a traffic simulator sending through a follower, for a local try of high
//! availability. It prints the cluster's view (who leads, since when, each replica's last
//! sync) and the rollout's progress every few seconds; SIGKILL the leader's process (its PID
//! is printed) to watch another replica take over.

use anyhow::{Context, bail};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{cargo, run, target_dir};

/// Arguments of `cargo xtask ha`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct HaArgs {
    /// Replicas to start (1 to 9).
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// The database (default: `ACTUATOR_DATABASE_URL`, else a database `actuator_ha` made on
    /// the PostgreSQL server at 127.0.0.1:5432 as user postgres).
    #[arg(long)]
    database_url: Option<String>,
    /// Port of the first replica; the others take the next ones.
    #[arg(long, default_value_t = 7071)]
    base_port: u16,
    /// How long to run, in seconds (1 to 86,400); Ctrl-C stops everything earlier.
    #[arg(long, default_value_t = 600)]
    seconds: u64,
    /// The leader's lease (ms, 1,000 to 60,000): how long a stopped leader keeps the lead.
    #[arg(long, default_value_t = 3000)]
    lease_ms: u64,
}

/// The local server's database of this command, made when missing (with `psql`).
fn local_database() -> anyhow::Result<String> {
    let psql = |sql: &str| {
        Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-tAc", sql])
            .output()
    };
    let exists = psql("SELECT 1 FROM pg_database WHERE datname = 'actuator_ha'").context(
        "running psql (give --database-url, or install PostgreSQL's client and start its server)",
    )?;
    if !exists.status.success() {
        bail!(
            "no PostgreSQL server at 127.0.0.1:5432 for user postgres ({}); give --database-url",
            String::from_utf8_lossy(&exists.stderr).trim()
        );
    }
    if String::from_utf8_lossy(&exists.stdout).trim() != "1" {
        let made = psql("CREATE DATABASE actuator_ha")?;
        if !made.status.success() {
            bail!("creating database actuator_ha: {}", String::from_utf8_lossy(&made.stderr));
        }
        eprintln!("made database actuator_ha on 127.0.0.1:5432");
    }
    Ok("postgres://postgres@127.0.0.1:5432/actuator_ha".to_owned())
}

/// A started replica, stopped when dropped (also when the command fails half-way).
struct Replica {
    id: String,
    url: String,
    child: Child,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_replica(
    bin: &Path,
    dir: &Path,
    id: &str,
    port: u16,
    settings: &str,
) -> anyhow::Result<Replica> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let config = dir.join("settings.toml");
    std::fs::write(&config, format!("{settings}replica_id = \"{id}\"\n"))
        .with_context(|| format!("writing {}", config.display()))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("daemon.log"))
        .with_context(|| format!("opening {}", dir.join("daemon.log").display()))?;
    let mut child = Command::new(bin)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir)
        .arg("--config")
        .arg(&config)
        .env_remove("ACTUATOR_CONFIG")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdout = child.stdout.take().context("the replica's stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(u) = line.strip_prefix("actuator listening on ") {
                    break u.trim().to_owned();
                }
            }
            _ => bail!(
                "replica {id} stopped before listening; see {}",
                dir.join("daemon.log").display()
            ),
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Ok(Replica { id: id.to_owned(), url, child })
}

fn cli(bin: &Path, server: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .args(args)
        .args(["--server", server])
        .output()
        .with_context(|| format!("running actuator {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "actuator {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs the local cluster.
pub(crate) fn run_ha(args: HaArgs) -> anyhow::Result<()> {
    if !(1..=9).contains(&args.replicas) {
        bail!("--replicas must be 1 to 9, got {}", args.replicas);
    }
    if !(1..=86_400).contains(&args.seconds) {
        bail!("--seconds must be 1 to 86400, got {}", args.seconds);
    }
    if !(1000..=60_000).contains(&args.lease_ms) {
        bail!("--lease-ms must be 1000 to 60000, got {}", args.lease_ms);
    }
    if usize::from(args.base_port) + args.replicas > usize::from(u16::MAX) {
        bail!("--base-port {} leaves no room for {} replicas", args.base_port, args.replicas);
    }
    let mut build = cargo();
    build.args(["build", "-p", "actuator", "--bin", "actuator"]);
    run(build)?;
    let bin = target_dir().join("debug").join(format!("actuator{}", std::env::consts::EXE_SUFFIX));
    let url =
        match args.database_url.clone().or_else(|| std::env::var("ACTUATOR_DATABASE_URL").ok()) {
            Some(u) => u,
            None => local_database()?,
        };
    let settings = format!(
        "[store]\nplugin = \"postgres\"\nconfig = {{ url = \"{url}\" }}\n\n[cluster]\nenabled = true\nlease_ms = {}\n",
        args.lease_ms
    );
    let base: PathBuf = target_dir().join("ha");
    let mut replicas = Vec::new();
    for i in 0..args.replicas {
        let port = args.base_port + u16::try_from(i).context("replica index")?;
        let id = format!("r{i}");
        let r = start_replica(&bin, &base.join(&id), &id, port, &settings)?;
        eprintln!(
            "replica {} on {} (pid {}), log {}",
            r.id,
            r.url,
            r.child.id(),
            base.join(&id).join("daemon.log").display()
        );
        replicas.push(r);
    }
    let first = replicas[0].url.clone();
    let through = replicas[replicas.len() - 1].url.clone();
    // A slot with a stable config and a canary of a candidate, written through one replica
    // (a follower forwards them to the leader).
    let t0 = Instant::now();
    loop {
        if cli(&bin, &first, &["cluster"]).is_ok_and(|s| s.contains("leader")) {
            break;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("no leader after 30 s; see the logs under {}", base.display());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = cli(&bin, &first, &["slot", "create", "chat", "--description", "cargo xtask ha"]);
    let stable = base.join("stable.json");
    std::fs::write(&stable, r#"{"model": "gpt-4o"}"#)?;
    cli(
        &bin,
        &first,
        &["config", "apply", "--slot", "chat", stable.to_str().context("utf-8 path")?],
    )?;
    let active = cli(&bin, &first, &["rollout", "list", "--slot", "chat", "--output", "json"])
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v["items"].as_array().is_some_and(|a| !a.is_empty()));
    if !active {
        let candidate = base.join("candidate.json");
        std::fs::write(&candidate, r#"{"model": "gpt-4o-mini"}"#)?;
        cli(
            &bin,
            &first,
            &[
                "rollout",
                "start",
                "--slot",
                "chat",
                "--strategy",
                "canary",
                "--document",
                candidate.to_str().context("utf-8 path")?,
                "--phases",
                "5,25,50,100",
                "--min-samples",
                "300",
                "--min-duration",
                "20",
                "--description",
                "cargo xtask ha",
            ],
        )?;
    }
    let mut sim = Command::new(&bin)
        .args([
            "simulate",
            "--slot",
            "chat",
            "--rps",
            "200",
            "--duration",
            &args.seconds.to_string(),
        ])
        .args(["--server", &through])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting actuator simulate")?;
    eprintln!(
        "traffic: 200 requests/s through {through}. Try `kill -9 <pid>` on the leader, or `kill -STOP` it for longer than the lease."
    );
    let end = Instant::now() + Duration::from_secs(args.seconds);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_secs(5));
        for r in &mut replicas {
            if let Ok(Some(status)) = r.child.try_wait() {
                eprintln!("replica {} exited ({status})", r.id);
            }
        }
        let alive: Vec<&Replica> =
            replicas.iter().filter(|r| cli(&bin, &r.url, &["cluster"]).is_ok()).collect();
        match alive.first() {
            Some(r) => {
                println!("{}", cli(&bin, &r.url, &["cluster"]).unwrap_or_default());
                println!(
                    "{}",
                    cli(&bin, &r.url, &["rollout", "list", "--slot", "chat"]).unwrap_or_default()
                );
            }
            None => eprintln!("no replica answers"),
        }
    }
    let _ = sim.kill();
    let _ = sim.wait();
    drop(replicas);
    Ok(())
}
