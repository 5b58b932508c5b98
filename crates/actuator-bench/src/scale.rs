//! Many live rollouts on one engine (SQLite on a temporary file): what creating one costs as
//! the number of live rollouts grows, what one pass of the control loop costs when nothing
//! changed and when every rollout has new evidence (saved by group commits), the CPU an
//! idle engine burns with its loop ticking every second, the memory per live rollout, and
//! how long a restart takes to resume them all. Routes go to the daemon's routing book, as
//! in the daemon.
//!
//! `--scale N` sets the number of live rollouts (1,000 by default, 200 with `--quick`).
//!
//! Seeding the store is not measured and is sped up: the slots, and the rollouts between the
//! first and the last 20 (whose creation is timed), are created 16 at a time with the SQLite
//! store's commits unsynced ([`SqliteStore::set_unsynced_seeding`]) and the routing book
//! rebuilt once at the end instead of after each change. Everything measured (the
//! timed creations, the passes and their group commits, the restart) runs on durable commits.

use actuator_config::{ConfigManager, ConfigSettings};
use actuator_core::{DeploymentRequest, SlotName, Store};
use actuator_engine::{Engine, EngineSettings, RouteSink};
use actuator_health::{Arm, Observation, Outcome};
use actuator_server::RouteBook;
use actuator_store_sqlite::SqliteStore;
use async_trait::async_trait;
use futures::stream::{self, StreamExt};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::Options;
use crate::engine_rig::{median, run_rows, two_version_slot};
use crate::heap::live_bytes;
use crate::table::{Limit, Row, Table};

/// Rollouts whose creation is timed at each end: the first with none live, the last with
/// nearly `N` live.
const TIMED: usize = 20;

/// Slots and rollouts created at once while seeding, so their writes overlap.
const SEED_CONCURRENCY: usize = 16;

/// The routing book as the engine's route sink, except that while seeding it skips the
/// refresh of each change (the book is rebuilt once when the seeding ends): every refresh
/// publishes a new copy of the whole table, which is what the timed creations measure, not
/// what seeding 100,000 rollouts should wait for.
struct SeedingSink {
    book: RouteBook,
    seeding: AtomicBool,
}

#[async_trait]
impl RouteSink for SeedingSink {
    async fn refresh_slot(&self, slot: &SlotName) {
        if !self.seeding.load(Ordering::SeqCst) {
            self.book.refresh_slot_or_log(slot).await;
        }
    }

    async fn refresh_slots(&self, slots: &[SlotName]) {
        if !self.seeding.load(Ordering::SeqCst) {
            RouteSink::refresh_slots(&self.book, slots).await;
        }
    }
}

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

/// Heap bytes a value decoded from `json` holds (the text is allocated before counting and
/// the decoder's transient allocations are freed by the time it returns).
fn decoded_heap<T: serde::de::DeserializeOwned>(json: &str) -> Result<usize, String> {
    let h0 = live_bytes();
    let v: T = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let held = live_bytes().saturating_sub(h0);
    drop(v);
    Ok(held)
}

/// What the parts of one stored status cost on the heap once decoded: the whole status, its
/// health monitor, and the monitor without each of its larger parts in turn (the difference
/// is that part's cost).
fn status_parts(status: &serde_json::Value) -> Result<Vec<(String, usize)>, String> {
    use actuator_engine::{DecisionView, EngineStatus};
    use actuator_health::RolloutHealth;
    let text = |v: &serde_json::Value| serde_json::to_string(v).map_err(|e| e.to_string());
    let whole = decoded_heap::<EngineStatus>(&text(status)?)?;
    let health = status.get("health").cloned().unwrap_or_default();
    let health_heap = decoded_heap::<Option<RolloutHealth>>(&text(&health)?)?;
    let mut parts = vec![
        ("the whole engine status".to_owned(), whole),
        ("its health monitor".to_owned(), health_heap),
    ];
    if let Some(d) = status.get("last_decision") {
        parts.push((
            "its last decision view".to_owned(),
            decoded_heap::<Option<DecisionView>>(&text(d)?)?,
        ));
    }
    for (name, path, empty) in [
        ("the monitor's history", vec!["history"], json!([])),
        ("the monitor's last evaluation", vec!["last"], json!(null)),
        ("the monitor's dedup ring", vec!["dedup", "ring"], json!([])),
        ("the monitor's phase statistics", vec!["phase", "stats"], json!([])),
        ("the monitor's treatments (ledgers)", vec!["treatments"], json!([])),
    ] {
        let mut h = health.clone();
        let mut at = &mut h;
        for key in &path[..path.len() - 1] {
            at = at.get_mut(*key).ok_or_else(|| format!("no {key} in the status"))?;
        }
        let Some(slot) = at.get_mut(path[path.len() - 1]) else { continue };
        *slot = empty;
        let without = decoded_heap::<Option<RolloutHealth>>(&text(&h)?)?;
        parts.push((name.to_owned(), health_heap.saturating_sub(without)));
    }
    Ok(parts)
}

async fn timed_pass(engine: &Engine) -> f64 {
    let t0 = Instant::now();
    engine.run_pass().await;
    t0.elapsed().as_secs_f64() * 1000.0
}

async fn measure(opts: &Options) -> Result<Vec<Row>, String> {
    let n = opts.scale.unwrap_or(if opts.quick { 200 } else { 1_000 }).max(40);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let sqlite =
        Arc::new(SqliteStore::open(&dir.path().join("scale.db")).await.map_err(|e| e.to_string())?);
    let store: Arc<dyn Store> = sqlite.clone();
    let config = ConfigManager::new(store.clone(), vec![], ConfigSettings::default());
    let settings = EngineSettings {
        max_active_rollouts: n + 1,
        validation_secs: 0,
        ..EngineSettings::default()
    };
    let routes = RouteBook::load(store.clone()).await.map_err(|e| e.to_string())?;
    let sink = Arc::new(SeedingSink { book: routes.clone(), seeding: AtomicBool::new(false) });
    // Driven: the bench calls `run_pass` itself, as the daemon's loop does on each tick.
    let engine = Engine::new(config.clone(), sink.clone(), vec![], settings.clone());
    engine.start_driven().await.map_err(|e| e.to_string())?;
    // Seeding (not measured): the slots, and every rollout but the first and the last
    // `TIMED`, are written with the store's commits unsynced and `SEED_CONCURRENCY` at a
    // time; everything measured runs with durable commits.
    let seeding = |on: bool| {
        let sqlite = sqlite.clone();
        let sink = sink.clone();
        async move {
            sqlite.set_unsynced_seeding(on).await.map_err(|e| e.to_string())?;
            sink.seeding.store(on, Ordering::SeqCst);
            if !on {
                // What the seeding changed, in one rebuild.
                sink.book.rebuild_all().await.map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(())
        }
    };
    let seeded_at = Instant::now();
    seeding(true).await?;
    let names: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
    let made: Vec<Result<_, String>> = stream::iter(names.iter())
        .map(|name| two_version_slot(&config, name))
        .buffer_unordered(SEED_CONCURRENCY)
        .collect()
        .await;
    made.into_iter().collect::<Result<Vec<_>, _>>()?;
    seeding(false).await?;
    let rss0 = rss_bytes();
    let heap0 = live_bytes();
    let create_timed = |range: std::ops::Range<usize>| {
        let engine = &engine;
        let names = &names;
        async move {
            let mut ms = Vec::with_capacity(range.len());
            let mut ids = Vec::with_capacity(range.len());
            for i in range {
                let t0 = Instant::now();
                let v = engine.deploy(held(&names[i])?).await.map_err(|e| e.to_string())?;
                ms.push(t0.elapsed().as_secs_f64() * 1000.0);
                ids.push(v.id);
            }
            Ok::<_, String>((ms, ids))
        }
    };
    let (first, mut ids) = create_timed(0..TIMED).await?;
    seeding(true).await?;
    let seeded: Vec<Result<String, String>> = stream::iter(TIMED..n - TIMED)
        .map(|i| {
            let engine = &engine;
            let names = &names;
            async move {
                let v = engine.deploy(held(&names[i])?).await.map_err(|e| e.to_string())?;
                Ok(v.id)
            }
        })
        .buffered(SEED_CONCURRENCY)
        .collect()
        .await;
    seeding(false).await?;
    for id in seeded {
        ids.push(id?);
    }
    let (last, last_ids) = create_timed(n - TIMED..n).await?;
    ids.extend(last_ids);
    eprintln!(
        "scale: {n} slots and rollouts created in {:.0} s",
        seeded_at.elapsed().as_secs_f64()
    );
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
    // Every rollout with new evidence: all saved by group commits (one per 512 rollouts).
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
    let parts = status_parts(&stored.status)?;

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
                "control loop: one pass, all {n} with new evidence (group commits), per rollout"
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
    for (part, bytes) in parts {
        rows.push(Row::new(
            format!("memory of one resumed rollout, decoded heap: {part}"),
            bytes as f64 / 1024.0,
            "KiB",
        ));
    }
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
