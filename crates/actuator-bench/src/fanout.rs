//! Change fan-out across replicas: three `actuator serve` processes (the release binary
//! beside this one) in cluster mode over a throwaway database on the local PostgreSQL
//! server; a canary is started on the leader and rolled back, and the time from the
//! rollback's answer until every replica resolves every sampled key to stable is taken,
//! over repeated rounds. The baseline, measured in the same rounds, is the time until the
//! leader itself resolves stable (its own routing table, no fan-out). The replicas' rollback
//! validation window is 1 s, so that a round's rollback ends before the next round starts.
//!
//! Skipped, saying why, when the binary was not built (`cargo xtask bench` builds it) or no
//! PostgreSQL server answers (`ACTUATOR_TEST_POSTGRES_URL`, default 127.0.0.1:5432).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use actuator_store_postgres::testing::TestDatabase;
use serde_json::{Value, json};

use crate::Options;
use crate::engine_rig::{percentile, run_rows};
use crate::table::{Limit, Row, Table};

/// A replica process, killed when dropped.
struct Replica {
    url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin = exe
        .parent()
        .ok_or("no directory of the bench binary")?
        .join(format!("actuator{}", std::env::consts::EXE_SUFFIX));
    if bin.exists() {
        Ok(bin)
    } else {
        Err(format!("{} is missing: `cargo build --release -p actuator` first", bin.display()))
    }
}

fn start(bin: &PathBuf, db_url: &str, id: &str) -> Result<Replica, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let settings = format!(
        "[engine]\ntick_ms = 50\nvalidation_secs = 1\nvalidation_min_samples = 10\n\n[store]\nplugin = \"postgres\"\nconfig = {{ url = \"{db_url}\" }}\n\n[cluster]\nenabled = true\nreplica_id = \"{id}\"\nlease_ms = 2000\n"
    );
    let config = dir.path().join("settings.toml");
    std::fs::write(&config, settings).map_err(|e| e.to_string())?;
    let mut child = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "error")
        .env_remove("ACTUATOR_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", bin.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(u) = line.strip_prefix("actuator listening on ") {
                    break u.trim().to_owned();
                }
            }
            _ => return Err(format!("replica {id} exited before listening")),
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Ok(Replica { url, child, _dir: dir })
}

async fn send(
    c: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Result<(u16, Value), String> {
    let mut r = c.request(method, url).header("x-actuator-actor", "bench");
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
    Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
}

/// Whether every key resolves to stable (`stable`) or some key to the canary (`!stable`).
async fn resolves(c: &reqwest::Client, url: &str, keys: &[Value], stable: bool) -> bool {
    let Ok((200, body)) = send(
        c,
        reqwest::Method::POST,
        &format!("{url}/v1/resolve"),
        Some(json!({"requests": keys})),
    )
    .await
    else {
        return false;
    };
    let canary = body["results"]
        .as_array()
        .map_or(0, |a| a.iter().filter(|r| r["variant"] == "canary").count());
    if stable { canary == 0 } else { canary > 0 }
}

async fn wait(
    c: &reqwest::Client,
    url: &str,
    keys: &[Value],
    stable: bool,
) -> Result<Duration, String> {
    let t0 = Instant::now();
    while !resolves(c, url, keys, stable).await {
        if t0.elapsed() > Duration::from_secs(10) {
            return Err(format!(
                "{url} did not resolve {} within 10 s",
                if stable { "stable" } else { "the canary" }
            ));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(t0.elapsed())
}

async fn leader(c: &reqwest::Client, replicas: &[Replica]) -> Result<usize, String> {
    let t0 = Instant::now();
    loop {
        for (i, r) in replicas.iter().enumerate() {
            if let Ok((200, v)) =
                send(c, reqwest::Method::GET, &format!("{}/v1/cluster", r.url), None).await
                && v["replica"]["role"] == "leader"
            {
                return Ok(i);
            }
        }
        if t0.elapsed() > Duration::from_secs(30) {
            return Err("no leader within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn measure(opts: &Options) -> Result<Vec<Row>, String> {
    let bin = binary()?;
    let db = TestDatabase::create().await.ok_or("no PostgreSQL server")?;
    let replicas: Vec<Replica> =
        (0..3).map(|i| start(&bin, db.url(), &format!("r{i}"))).collect::<Result<_, _>>()?;
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let lead = leader(&c, &replicas).await?;
    let l = replicas[lead].url.clone();
    let (s, b) =
        send(&c, reqwest::Method::POST, &format!("{l}/v1/slots"), Some(json!({"name": "bench"})))
            .await?;
    if s != 201 {
        return Err(format!("slot: {s} {b}"));
    }
    let doc = json!({"model": "stable"});
    let (s, b) = send(
        &c,
        reqwest::Method::POST,
        &format!("{l}/v1/slots/bench/versions"),
        Some(json!({"document": doc})),
    )
    .await?;
    if s != 201 {
        return Err(format!("version: {s} {b}"));
    }
    let keys: Vec<Value> = (0..100)
        .map(|i| json!({"slot": "bench", "context": {"targetingKey": format!("user-{i}")}}))
        .collect();
    let rounds = if opts.quick { 10 } else { 30 };
    let (mut all, mut own) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let doc = json!({"model": format!("candidate-{round}")});
        let (s, v) = send(
            &c,
            reqwest::Method::POST,
            &format!("{l}/v1/slots/bench/versions"),
            Some(json!({"document": doc, "activate": false})),
        )
        .await?;
        if s != 201 {
            return Err(format!("candidate: {s} {v}"));
        }
        let version = v["version_number"].as_u64().ok_or("no version number")?;
        let req = json!({
            "slot": "bench", "candidate": {"version": version}, "strategy": "canary", "rollback_mode": "fast",
            "canary": {"phases": [{"traffic_percent": 50, "min_samples": 1_000_000, "min_duration_secs": 3600}]}
        });
        let (s, v) =
            send(&c, reqwest::Method::POST, &format!("{l}/v1/rollouts"), Some(req)).await?;
        if s != 201 {
            return Err(format!("rollout: {s} {v}"));
        }
        let id = v["id"].as_str().ok_or("no rollout id")?.to_owned();
        for r in &replicas {
            wait(&c, &r.url, &keys, false).await?;
        }
        let (s, v) = send(
            &c,
            reqwest::Method::POST,
            &format!("{l}/v1/rollouts/{id}/rollback"),
            Some(json!({"reason": "bench"})),
        )
        .await?;
        if !(200..300).contains(&s) {
            return Err(format!("rollback: {s} {v}"));
        }
        let t0 = Instant::now();
        own.push(wait(&c, &l, &keys, true).await?.as_secs_f64() * 1e3);
        let mut slowest = t0.elapsed();
        for (i, r) in replicas.iter().enumerate() {
            if i != lead {
                wait(&c, &r.url, &keys, true).await?;
                slowest = slowest.max(t0.elapsed());
            }
        }
        all.push(slowest.as_secs_f64() * 1e3);
        let t1 = Instant::now();
        loop {
            let (_, v) =
                send(&c, reqwest::Method::GET, &format!("{l}/v1/rollouts/{id}"), None).await?;
            if matches!(v["state"].as_str(), Some("rolled_back" | "failed" | "aborted")) {
                break;
            }
            if t1.elapsed() > Duration::from_secs(30) {
                return Err(format!("rollback of {id} did not finish: {v}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    all.sort_by(f64::total_cmp);
    own.sort_by(f64::total_cmp);
    drop(replicas);
    Ok(vec![
        Row::new(format!("fan-out: rollback on the leader → every replica of 3 resolves stable, p50 of {rounds}"), percentile(&all, 0.5), "ms")
            .baseline(percentile(&own, 0.5)),
        Row::new(format!("fan-out: rollback on the leader → every replica of 3 resolves stable, p99 of {rounds}"), percentile(&all, 0.99), "ms")
            .baseline(percentile(&own, 0.99))
            .target(Limit::ValueAtMost(1000.0)),
    ])
}

/// Runs the fan-out rows.
pub(crate) fn run(opts: &Options, table: &mut Table) {
    run_rows("fanout", table, measure(opts));
}
