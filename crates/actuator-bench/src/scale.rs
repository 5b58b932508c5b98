//! Many live rollouts on one engine (SQLite on a temporary file): what creating one costs as
//! the number of live rollouts grows, what one pass of the control loop costs when nothing
//! changed and when every rollout has new evidence (saved by one group commit), the CPU an
//! idle engine burns with its loop ticking every second, the memory per live rollout, and
//! how long a restart takes to resume them all. Routes go to the daemon's routing book, as
//! in the daemon.
//!
//! `--scale N` sets the number of live rollouts (1,000 by default, 200 with `--quick`).

use actuator_config::{ConfigManager, ConfigSettings};
use actuator_core::{DeploymentRequest, Store};
use actuator_engine::{Engine, EngineSettings};
use actuator_health::{Arm, Observation, Outcome};
use actuator_server::RouteBook;
use actuator_store_sqlite::SqliteStore;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::Options;
use crate::engine_rig::{median, run_rows, two_version_slot};
use crate::heap::live_bytes;
use crate::table::{Limit, Row, Table};

/// Resident memory of this process in bytes (Linux `/proc/self/statm`), if readable.
fn rss_bytes() -> Option<f64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096.0)
}

/// CPU time (user + system) this process has used, in seconds (Linux `/proc/self/stat`,
/// whose clock ticks are 1/100 s).
fn cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// A canary at 1 % that never has enough requests to move on: it stays monitored.
fn held(slot: &str) -> Result<DeploymentRequest, String> {
    serde_json::from_value(json!({
        "slot": slot, "candidate": {"version": 2}, "strategy": "canary", "actor": "bench",
        "canary": {"phases": [{"traffic_percent": 1, "min_samples": 1_000_000_000u64}]}
    }))
    .map_err(|e| e.to_string())
}

/// Ten outcomes for each rollout of `ids`, request ids from `round`, as a sticky split
/// reports them (each with its user's unit hash and its phase), so the per-user cluster
/// statistics of the default split are part of what is measured.
fn evidence(ids: &[String], round: usize) -> Vec<Observation> {
    ids.iter()
        .flat_map(|id| {
            (0..10).map(move |i| {
                let arm = if i == 0 { Arm::Canary } else { Arm::Control };
                let mut o = Observation::new(id.clone(), format!("q{round}-{i}"), arm, Outcome::Ok)
                    .latency(300.0 + 10.0 * i as f64)
                    .cost(0.002);
                o.unit = Some(((round * 10 + i) * 40_503 % 65_536) as u16);
                o.phase = Some(0);
                o
            })
        })
        .collect()
}

async fn report_all(engine: &Engine, obs: Vec<Observation>) -> Result<(), String> {
    for chunk in obs.chunks(5_000) {
        engine.report(chunk.to_vec()).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

async fn timed_pass(engine: &Engine) -> f64 {
    let t0 = Instant::now();
    engine.run_pass().await;
    t0.elapsed().as_secs_f64() * 1000.0
}

async fn measure(opts: &Options) -> Result<Vec<Row>, String> {
    let n = opts.scale.unwrap_or(if opts.quick { 200 } else { 1_000 }).max(40);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("scale.db")).await.map_err(|e| e.to_string())?);
    let config = ConfigManager::new(store.clone(), vec![], ConfigSettings::default());
    let settings = EngineSettings {
        max_active_rollouts: n + 1,
        validation_secs: 0,
        ..EngineSettings::default()
    };
    let routes = RouteBook::load(store.clone()).await.map_err(|e| e.to_string())?;
    // Driven: the bench calls `run_pass` itself, as the daemon's loop does on each tick.
    let engine = Engine::new(config.clone(), Arc::new(routes), vec![], settings.clone());
    engine.start_driven().await.map_err(|e| e.to_string())?;
    for i in 0..n {
        two_version_slot(&config, &format!("s{i}")).await?;
    }
    let rss0 = rss_bytes();
    let heap0 = live_bytes();
    let mut first = Vec::new();
    let mut last = Vec::new();
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let t0 = Instant::now();
        let v = engine.deploy(held(&format!("s{i}"))?).await.map_err(|e| e.to_string())?;
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        if i < 20 {
            first.push(ms);
        } else if i >= n - 20 {
            last.push(ms);
        }
        ids.push(v.id);
    }
    // Every rollout has been looked at once and saved what its first look decided.
    engine.run_pass().await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    engine.run_pass().await;
    let rss1 = rss_bytes();
    let heap1 = live_bytes();

    let mut idle = Vec::new();
    for _ in 0..5 {
        idle.push(timed_pass(&engine).await);
    }
    // One rollout with new evidence: one checkpoint alone.
    let mut one = Vec::new();
    for round in 0..5 {
        report_all(&engine, evidence(&ids[..1], round)).await?;
        tokio::time::sleep(Duration::from_millis(1_050)).await;
        one.push(timed_pass(&engine).await);
    }
    // Every rollout with new evidence: all saved by one group commit.
    let mut all = Vec::new();
    for round in 0..3 {
        report_all(&engine, evidence(&ids, 100 + round)).await?;
        tokio::time::sleep(Duration::from_millis(1_050)).await;
        all.push(timed_pass(&engine).await);
    }
    // The daemon's loop on an idle engine: a pass every second for 5 s.
    let cpu0 = cpu_secs();
    let t0 = Instant::now();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        engine.run_pass().await;
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs().zip(cpu0).map(|(b, a)| (b - a) / wall * 100.0);
    // Every rollout now holds 30 outcomes of up to 30 users (the first one 80).
    let heap_evidence = live_bytes();
    engine.stop().await.map_err(|e| e.to_string())?;
    drop(engine);
    let heap2 = live_bytes();
    let rss2 = rss_bytes();

    // A restart: the routing book and the engine over the same store, every rollout resumed.
    let t0 = Instant::now();
    let routes = RouteBook::load(store.clone()).await.map_err(|e| e.to_string())?;
    let book_s = t0.elapsed().as_secs_f64();
    let again = Engine::new(config.clone(), Arc::new(routes.clone()), vec![], settings);
    again.start_driven().await.map_err(|e| e.to_string())?;
    let startup_s = t0.elapsed().as_secs_f64();
    let heap3 = live_bytes();
    let rss3 = rss_bytes();
    if routes.router().snapshot().len() < n {
        return Err(format!("after the restart only {} routes", routes.router().snapshot().len()));
    }
    again.stop().await.map_err(|e| e.to_string())?;
    // What one rollout's status costs in the store after those outcomes (its encoded size is
    // what every checkpoint writes and every start reads and decodes).
    let stored =
        store.get_rollout(&ids[1]).await.map_err(|e| e.to_string())?.ok_or("no rollout")?;
    let status_bytes = serde_json::to_vec(&stored.status).map_err(|e| e.to_string())?.len();

    let first_ms = median(first);
    let idle_ms = median(idle);
    let one_ms = median(one);
    let all_ms = median(all);
    let mut rows = vec![
        Row::new("live rollouts: create the first (median of the first 20)", first_ms, "ms"),
        Row::new(
            format!("live rollouts: create one with {n} live (median of the last 20)"),
            median(last),
            "ms",
        )
        .baseline(first_ms)
        .target(Limit::RatioAtMost(2.0)),
        Row::new(
            format!("control loop: one pass over {n} idle rollouts (median of 5)"),
            idle_ms,
            "ms",
        )
        .target(Limit::ValueAtMost(100.0 * n as f64 / 100_000.0)),
        Row::new(
            format!("control loop: one pass, {n} live, 1 with new evidence (baseline)"),
            one_ms,
            "ms",
        ),
        Row::new(
            format!(
                "control loop: one pass, all {n} with new evidence (one group commit), per rollout"
            ),
            (all_ms - idle_ms).max(0.0) / n as f64,
            "ms",
        )
        .baseline((one_ms - idle_ms).max(f64::MIN_POSITIVE))
        .target(Limit::RatioAtMost(1.0)),
    ];
    rows.push(
        Row::new(
            format!(
                "startup: the routing book loads {n} slots (the daemon listens and serves resolve)"
            ),
            book_s,
            "s",
        )
        .target(Limit::ValueAtMost(5.0 * n as f64 / 100_000.0)),
    );
    rows.push(Row::new(
        "stored status of one rollout after 30 sticky outcomes (JSON)",
        status_bytes as f64 / 1024.0,
        "KiB",
    ));
    rows.push(
        Row::new(
            format!(
                "startup: routing book and engine resume {n} live rollouts (rollout routes served)"
            ),
            startup_s,
            "s",
        )
        .target(Limit::ValueAtMost(5.0 * n as f64 / 100_000.0)),
    );
    if let Some(c) = cpu {
        rows.push(
            Row::new(
                format!("idle engine CPU, {n} live rollouts, a pass every second"),
                c,
                "% of a core",
            )
            .target(Limit::ValueAtMost(5.0)),
        );
    }
    let per = |a: usize, b: usize| b.saturating_sub(a) as f64 / n as f64 / 1024.0;
    rows.push(Row::new(
        format!("memory per live rollout, heap: created, no evidence yet ({n} live)"),
        per(heap0, heap1),
        "KiB",
    ));
    rows.push(Row::new(
        format!("memory per live rollout, heap: after 30 sticky outcomes each ({n} live)"),
        per(heap0, heap_evidence),
        "KiB",
    ));
    rows.push(
        Row::new(
            format!("memory per live rollout, heap after a restart (routing book and engine, {n} resumed)"),
            per(heap2, heap3),
            "KiB",
        )
        .target(Limit::ValueAtMost(16.0)),
    );
    if let (Some(a), Some(b)) = (rss0, rss1) {
        rows.push(Row::new(
            format!("memory per live rollout, RSS growth while creating {n}"),
            (b - a).max(0.0) / n as f64 / 1024.0,
            "KiB",
        ));
    }
    if let (Some(a), Some(b)) = (rss2, rss3) {
        rows.push(
            Row::new(
                format!("memory per live rollout, RSS growth over a restart ({n} resumed; reuses pages the first engine freed)"),
                (b - a).max(0.0) / n as f64 / 1024.0,
                "KiB",
            ),
        );
    }
    Ok(rows)
}

/// Appends the scale rows.
pub(crate) fn run(opts: &Options, table: &mut Table) {
    run_rows("scale", table, measure(opts));
}
