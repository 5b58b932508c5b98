//! Ingestion: how fast outcomes are recorded in-process and over HTTP, and what an
//! observation stream costs resolve on the same daemon.
//!
//! In-process rows feed one live canary rollout (SQLite on a temporary directory) batches of
//! 10,000 distinct outcomes through [`Engine::report`], with `engine.durability = "batch"`
//! (each batch on disk before the call returns) and `"checkpoint"`; the baseline is
//! [`RolloutHealth::record_batch`] alone on the same outcomes, the analysis without the
//! engine around it. HTTP rows run the real router with that engine on a one-worker runtime:
//! `POST /v1/resolve` measured by `wrk` alone, then while observation batches of 1,000 JSON
//! items stream into `POST /v1/observations` at a fixed rate, then while they stream as fast
//! as two connections can send them.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actuator_config::{ConfigManager, ConfigSettings};
use actuator_core::{DeploymentRequest, Store};
use actuator_engine::{Durability, Engine, EngineSettings};
use actuator_health::{
    AnalysisMode, Arm, HealthConfig, Observation, Outcome, PhaseConfig, RolloutHealth,
};
use actuator_server::{AppState, RouteBook};
use actuator_store_sqlite::SqliteStore;
use serde_json::json;
use tokio::net::TcpListener;

use crate::Options;
use crate::engine_rig::{run_rows, two_version_slot};
use crate::http::{resolve_script_for, wrk as wrk_rps};
use crate::table::{Limit, Row, Table};

const SLOT: &str = "llm.chat.ingest";
/// Outcomes per in-process batch (the engine's largest).
const BATCH: usize = 10_000;
/// Items per HTTP batch.
const HTTP_BATCH: usize = 1_000;
/// Observations per second of the fixed-rate stream.
const STREAM_RATE: u64 = 50_000;
/// `Engine::ingest` goal, in million observations per second.
const ENGINE_GOAL: f64 = 5.0;
/// Resolve while observations stream in must keep this share of resolve alone.
const RESOLVE_RATIO: f64 = 0.8;

/// A canary at 5 % that never decides while the bench runs: huge minimums and a tiny α.
fn held() -> Result<DeploymentRequest, String> {
    serde_json::from_value(json!({
        "slot": SLOT, "candidate": {"version": 2}, "strategy": "canary", "actor": "bench",
        "success_criteria": {"alpha": 0.0001},
        "canary": {"phases": [{"traffic_percent": 5, "min_samples": 1_000_000_000u64}]}
    }))
    .map_err(|e| e.to_string())
}

/// `n` distinct outcomes of rollout `id` from request number `from`: one in twenty on the
/// canary, one in a hundred an error, latencies spread over 200–600 ms.
fn outcomes(id: &str, from: u64, n: usize) -> Vec<Observation> {
    (0..n as u64)
        .map(|i| {
            let k = from + i;
            let arm = if k.is_multiple_of(20) { Arm::Canary } else { Arm::Control };
            let outcome = if k % 100 == 7 { Outcome::Error } else { Outcome::Ok };
            let mut o = Observation::new(id, format!("q{k}"), arm, outcome)
                .latency(200.0 + (k * 7_919 % 400) as f64)
                .cost(0.002);
            o.phase = Some(0);
            o
        })
        .collect()
}

/// The JSON body of HTTP batch `b` (1,000 items with request ids of their own).
fn http_body(id: &str, b: u64) -> String {
    let items: Vec<_> = outcomes(id, 1_000_000_000 + b * HTTP_BATCH as u64, HTTP_BATCH)
        .into_iter()
        .map(|o| {
            json!({
                "request_id": o.request_id, "rollout_id": o.rollout_id,
                "arm": if o.arm == Arm::Canary { "canary" } else { "stable" },
                "phase": 0, "outcome": if o.outcome == Outcome::Error { "error" } else { "ok" },
                "latency_ms": o.latency_ms, "cost": o.cost,
            })
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

/// An engine over SQLite in `dir` with the held rollout live; returns it with its config,
/// its routing book and the rollout's id.
async fn live(
    dir: &Path,
    durability: Durability,
) -> Result<(Engine, ConfigManager, RouteBook, String), String> {
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.join("ingest.db")).await.map_err(|e| e.to_string())?);
    let config = ConfigManager::new(store.clone(), vec![], ConfigSettings::default());
    two_version_slot(&config, SLOT).await?;
    let settings = EngineSettings { durability, validation_secs: 0, ..EngineSettings::default() };
    let routes = RouteBook::load(store).await.map_err(|e| e.to_string())?;
    let engine = Engine::new(config.clone(), Arc::new(routes.clone()), vec![], settings);
    engine.start_driven().await.map_err(|e| e.to_string())?;
    let id = engine.deploy(held()?).await.map_err(|e| e.to_string())?.id;
    Ok((engine, config, routes, id))
}

/// Million observations per second of `RolloutHealth::record_batch` over `batches`.
fn health_alone(id: &str, batches: &[Vec<Observation>]) -> Result<f64, String> {
    let mut h = RolloutHealth::new(
        id,
        SLOT,
        AnalysisMode::Canary,
        HealthConfig::default(),
        PhaseConfig::canary(0.05).min(u64::MAX, i64::MAX),
        chrono::Utc::now(),
    )
    .map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let mut n = 0;
    for b in batches {
        let r = h.record_batch(b);
        if let Some((_, e)) = r.errors.first() {
            return Err(format!("the analysis refused outcomes: {e}"));
        }
        n += r.recorded;
    }
    Ok(n as f64 / t0.elapsed().as_secs_f64() / 1e6)
}

/// Million observations per second of `Engine::report` over `batches` (cloned outside the
/// timed part).
async fn engine_report(engine: &Engine, batches: Vec<Vec<Observation>>) -> Result<f64, String> {
    let t0 = Instant::now();
    let mut n = 0;
    for b in batches {
        let r = engine.report(b).await.map_err(|e| e.to_string())?;
        if r.rejected > 0 {
            return Err(format!("the engine refused outcomes: {:?}", r.results.first()));
        }
        n += r.accepted;
    }
    Ok(n as f64 / t0.elapsed().as_secs_f64() / 1e6)
}

async fn in_process(opts: &Options) -> Result<Vec<Row>, String> {
    let rounds = if opts.quick { 10 } else { 40 };
    let mut rows = Vec::new();
    let mut alone = 0.0f64;
    let mut engines = Vec::new();
    for durability in [Durability::Batch, Durability::Checkpoint] {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let (engine, _, _, id) = live(dir.path(), durability).await?;
        let batches: Vec<_> =
            (0..rounds).map(|r| outcomes(&id, (r * BATCH) as u64, BATCH)).collect();
        alone = alone.max(health_alone(&id, &batches)?);
        let rate = engine_report(&engine, batches).await?;
        engines.push((durability, rate));
        engine.stop().await.map_err(|e| e.to_string())?;
        drop(dir);
    }
    rows.push(Row::new(
        format!("ingest: RolloutHealth::record_batch alone, batches of {BATCH} (baseline)"),
        alone,
        "M obs/s",
    ));
    for (durability, rate) in engines {
        let (what, target) = match durability {
            Durability::Batch => ("durability batch: on disk before the call returns", true),
            Durability::Checkpoint => ("durability checkpoint", false),
        };
        let row = Row::new(
            format!("ingest: Engine::report in-process, batches of {BATCH}, {what}"),
            rate,
            "M obs/s",
        )
        .baseline(alone);
        rows.push(if target { row.target(Limit::ValueAtLeast(ENGINE_GOAL)) } else { row });
    }
    Ok(rows)
}

/// Posts batch bodies to `url` at `rate` observations per second until `stop`; counts the
/// observations answered 2xx and the batches answered otherwise.
async fn stream(
    url: String,
    bodies: Arc<Vec<String>>,
    rate: Option<u64>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
) {
    let client = reqwest::Client::new();
    let every = rate.map(|r| Duration::from_secs_f64(HTTP_BATCH as f64 / r as f64));
    let mut next = Instant::now();
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        if let Some(every) = every {
            let now = Instant::now();
            if next > now {
                tokio::time::sleep(next - now).await;
            }
            next += every;
        }
        let body = bodies[i % bodies.len()].clone();
        i += 1;
        let ok = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            sent.fetch_add(HTTP_BATCH as u64, Ordering::Relaxed);
        } else {
            refused.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Resolve throughput (wrk) while `streams` clients post observations at `rate` each (or as
/// fast as they can); returns it with the observations per second the daemon took.
fn resolve_under(
    rt: &tokio::runtime::Runtime,
    script: &Path,
    addr: SocketAddr,
    bodies: &Arc<Vec<String>>,
    streams: usize,
    rate: Option<u64>,
    secs: u32,
) -> Result<(f64, f64, u64), String> {
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let url = format!("http://{addr}/v1/observations");
    let tasks: Vec<_> = (0..streams)
        .map(|_| {
            rt.spawn(stream(
                url.clone(),
                bodies.clone(),
                rate,
                stop.clone(),
                sent.clone(),
                refused.clone(),
            ))
        })
        .collect();
    let t0 = Instant::now();
    let rps = wrk_rps(script, &format!("http://{addr}/v1/resolve"), secs);
    let secs_taken = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = rt.block_on(t);
    }
    let rps = rps.map_err(|e| format!("{e:#}"))?;
    Ok((rps, sent.load(Ordering::Relaxed) as f64 / secs_taken, refused.load(Ordering::Relaxed)))
}

fn over_http(opts: &Options, table: &mut Table) -> Result<(), String> {
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("ingest: `wrk` not found: skipping the HTTP rows");
        return Ok(());
    }
    // The daemon's runtime (one worker, as the HTTP module uses) and a separate one for the
    // observation clients, so the clients' work is not counted as the daemon's.
    let server = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build();
    let server = server.map_err(|e| e.to_string())?;
    let clients =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build();
    let clients = clients.map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (addr, id) = server.block_on(async {
        let (engine, config, routes, id) = live(dir.path(), Durability::Batch).await?;
        let state = AppState::new(config, routes);
        state.attach_engine(engine);
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        tokio::spawn(actuator_server::serve(listener, state, std::future::pending()));
        Ok::<_, String>((addr, id))
    })?;
    // 64 distinct batches: a cycle is 64,000 request ids, more than a rollout remembers for
    // de-duplication, so every item counts again when the cycle comes round.
    let bodies = Arc::new((0..64).map(|b| http_body(&id, b)).collect::<Vec<_>>());
    let script = dir.path().join("resolve.lua");
    std::fs::write(&script, resolve_script_for(SLOT)).map_err(|e| e.to_string())?;
    let secs = if opts.quick { 3 } else { 5 };
    let rounds = if opts.quick { 2 } else { 3 };
    wrk_rps(&script, &format!("http://{addr}/v1/resolve"), 1).map_err(|e| format!("{e:#}"))?;
    let (mut alone, mut fixed, mut full) = (0.0f64, (0.0f64, 0.0f64, 0), (0.0f64, 0.0f64, 0));
    for _ in 0..rounds {
        let (a, _, _) = resolve_under(&clients, &script, addr, &bodies, 0, None, secs)?;
        alone = alone.max(a);
        let f = resolve_under(&clients, &script, addr, &bodies, 1, Some(STREAM_RATE), secs)?;
        if f.0 > fixed.0 {
            fixed = f;
        }
        let u = resolve_under(&clients, &script, addr, &bodies, 2, None, secs)?;
        if u.0 > full.0 {
            full = u;
        }
    }
    let label = format!("wrk -t1 -c16 -d{secs}s, best of {rounds}");
    table.push(Row::new(format!("http: POST /v1/resolve alone ({label})"), alone, "req/s"));
    table.push(
        Row::new(
            format!(
                "http: POST /v1/resolve while {STREAM_RATE} observations/s stream in ({label})"
            ),
            fixed.0,
            "req/s",
        )
        .baseline(alone)
        .target(Limit::RatioAtLeast(RESOLVE_RATIO)),
    );
    table.push(Row::new(
        format!("http: observations taken during that stream ({} batches refused)", fixed.2),
        fixed.1,
        "obs/s",
    ));
    table.push(
        Row::new(
            format!("http: POST /v1/resolve while 2 clients post observations flat out ({label})"),
            full.0,
            "req/s",
        )
        .baseline(alone),
    );
    table.push(Row::new(
        format!(
            "http: POST /v1/observations flat out beside resolve, {HTTP_BATCH}-item JSON batches ({} refused)",
            full.2
        ),
        full.1,
        "obs/s",
    ));
    server.shutdown_background();
    clients.shutdown_background();
    Ok(())
}

/// Adds the ingestion rows to `table`.
pub(crate) fn run(opts: &Options, table: &mut Table) {
    run_rows("ingest", table, in_process(opts));
    if let Err(e) = over_http(opts, table) {
        eprintln!("ingest: HTTP rows failed: {e}");
    }
}
