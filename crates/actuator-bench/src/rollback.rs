//! Rollback timing through the real engine, store (SQLite on a temporary file) and routing
//! table: how long from a rollback decision until the routing table serves stable, and how
//! closely gradual rollback keeps its step interval.

use actuator_canary::{EvalContext, Variant};
use actuator_config::{ConfigManager, ConfigSettings};
use actuator_core::{AuditDraft, DeploymentRequest, Store};
use actuator_engine::{Engine, EngineSettings, ManualAction};
use actuator_server::RouteBook;
use actuator_store_sqlite::SqliteStore;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::Options;
use crate::engine_rig::{percentile, run_rows, two_version_slot};
use crate::table::{Limit, Row, Table};

struct Rig {
    store: Arc<dyn Store>,
    routes: RouteBook,
    engine: Engine,
    _dir: tempfile::TempDir,
}

async fn rig() -> Result<Rig, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&dir.path().join("actuator.db")).await.map_err(|e| e.to_string())?,
    );
    let config = ConfigManager::new(store.clone(), vec![], ConfigSettings::default());
    let routes = RouteBook::load(store.clone()).await.map_err(|e| e.to_string())?;
    let settings = EngineSettings {
        tick_ms: 20,
        gradual_step_secs: 1,
        validation_secs: 0,
        checkpoint_ms: 10_000,
        ..EngineSettings::default()
    };
    let engine = Engine::new(config.clone(), Arc::new(routes.clone()), vec![], settings);
    engine.start().await.map_err(|e| e.to_string())?;
    let slot = two_version_slot(&config, "bench").await?;
    routes.refresh_slot_or_log(&slot).await;
    Ok(Rig { store, routes, engine, _dir: dir })
}

fn request(share: f64) -> Result<DeploymentRequest, String> {
    serde_json::from_value(json!({
        "slot": "bench", "candidate": {"version": 2}, "strategy": "canary",
        "canary": {"phases": [{"traffic_percent": share, "min_samples": 1_000_000_000u64, "min_duration_secs": 0}]}
    }))
    .map_err(|e| e.to_string())
}

fn canary_key(routes: &RouteBook) -> Option<EvalContext> {
    (0..10_000).map(|i| EvalContext::with_key(format!("user-{i}"))).find(|ctx| {
        routes.router().resolve("bench", ctx).is_ok_and(|r| r.variant == Variant::Canary)
    })
}

async fn wait_terminal(engine: &Engine, id: &str) -> Result<actuator_engine::RolloutView, String> {
    let t0 = Instant::now();
    loop {
        let v = engine.view(id).await.map_err(|e| e.to_string())?;
        if v.state.is_terminal() {
            return Ok(v);
        }
        if t0.elapsed() > Duration::from_secs(60) {
            return Err(format!("rollout {id} did not finish"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn measure(opts: &Options) -> Result<Vec<Row>, String> {
    let rig = rig().await?;
    let runs = if opts.quick { 8 } else { 30 };
    // Baseline: one durable write of the same size class (an audited rollout update).
    let mut commit = Vec::new();
    let mut flip_engine = Vec::new();
    let mut flip_seen = Vec::new();
    for _ in 0..runs {
        let v = rig.engine.deploy(request(50.0)?).await.map_err(|e| e.to_string())?;
        let ctx = canary_key(&rig.routes).ok_or("no key lands in the canary")?;
        let t0 = Instant::now();
        let after = rig
            .engine
            .act(&v.id, ManualAction::Rollback { reason: "bench".into(), gradual: false }, "bench")
            .await
            .map_err(|e| e.to_string())?;
        while rig.routes.router().resolve("bench", &ctx).is_ok_and(|r| r.variant == Variant::Canary)
        {
            tokio::task::yield_now().await;
        }
        flip_seen.push(t0.elapsed().as_secs_f64() * 1000.0);
        if let Some(ms) = after.rollback.as_ref().and_then(|r| r.flip_ms) {
            flip_engine.push(ms);
        }
        wait_terminal(&rig.engine, &v.id).await?;
        let rec = rig
            .store
            .get_rollout(&v.id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("rollout vanished")?;
        let t1 = Instant::now();
        rig.store
            .append_audit(
                AuditDraft::success("bench", "bench.commit", &rec.id)
                    .with_metadata(rec.status.clone()),
            )
            .await
            .map_err(|e| e.to_string())?;
        commit.push(t1.elapsed().as_secs_f64() * 1000.0);
    }
    for v in [&mut commit, &mut flip_engine, &mut flip_seen] {
        v.sort_by(f64::total_cmp);
    }
    let base = percentile(&commit, 0.5);
    let mut rows = vec![
        Row::new("rollback: durable audited write (baseline), median", base, "ms"),
        Row::new(
            "fast rollback: decision → routing flipped (engine), median",
            percentile(&flip_engine, 0.5),
            "ms",
        )
        .baseline(base)
        .target(Limit::ValueAtMost(10.0)),
        Row::new(
            "fast rollback: decision → routing flipped (engine), p95",
            percentile(&flip_engine, 0.95),
            "ms",
        )
        .baseline(base),
        Row::new(
            "fast rollback: decision → a canary user resolves stable, median",
            percentile(&flip_seen, 0.5),
            "ms",
        )
        .baseline(base)
        .target(Limit::ValueAtMost(10.0)),
    ];
    // Gradual: 100 % → 50 → 25 → 5 → 1 → 0 with 1 s steps.
    let v = rig.engine.deploy(request(100.0)?).await.map_err(|e| e.to_string())?;
    rig.engine
        .act(&v.id, ManualAction::Rollback { reason: "bench".into(), gradual: true }, "bench")
        .await
        .map_err(|e| e.to_string())?;
    let done = wait_terminal(&rig.engine, &v.id).await?;
    let steps = done.rollback.map(|r| r.steps).unwrap_or_default();
    let gaps: Vec<f64> =
        steps.windows(2).map(|w| (w[1].at - w[0].at).num_milliseconds() as f64 / 1000.0).collect();
    let mean = gaps.iter().sum::<f64>() / gaps.len().max(1) as f64;
    let worst = gaps.iter().map(|g| (g - 1.0).abs() * 1000.0).fold(0.0, f64::max);
    rows.push(Row::new(
        format!("gradual rollback: steps taken ({} shares)", steps.len()),
        steps.len() as f64,
        "steps",
    ));
    rows.push(
        Row::new("gradual rollback: mean step interval (configured 1 s)", mean, "s").baseline(1.0),
    );
    rows.push(
        Row::new("gradual rollback: worst step deviation from 1 s", worst, "ms")
            .target(Limit::ValueAtMost(200.0)),
    );
    rig.engine.stop().await.map_err(|e| e.to_string())?;
    Ok(rows)
}

/// Appends the rollback rows.
pub(crate) fn run(opts: &Options, table: &mut Table) {
    run_rows("rollback", table, measure(opts));
}
