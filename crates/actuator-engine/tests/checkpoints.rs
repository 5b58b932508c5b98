//! The control loop writes what changed, on the embedded SQLite store: an idle rollout costs
//! no write per pass (its clocks are saved every `idle_checkpoint_ms`), rollouts whose
//! evidence changed are saved together by the pass, and what a pass saved is what a restart
//! resumes.

use actuator_config::{ApplyRequest, ConfigManager, ConfigSettings};
use actuator_core::{DeploymentRequest, NewSlot, SlotName, Store};
use actuator_engine::{Durability, Engine, EngineSettings, ManualClock, RouteSink};
use actuator_health::{Arm, Observation, Outcome};
use actuator_store_sqlite::SqliteStore;
use async_trait::async_trait;
use chrono::{Duration as ChronoDuration, Utc};
use serde_json::json;
use std::sync::Arc;

struct NoRoutes;

#[async_trait]
impl RouteSink for NoRoutes {
    async fn refresh_slot(&self, _: &SlotName) {}
}

async fn setup(store: Arc<dyn Store>, slots: usize) -> ConfigManager {
    let config = ConfigManager::new(store, vec![], ConfigSettings::default());
    for i in 0..slots {
        let name = SlotName::new(format!("s{i}")).unwrap();
        config
            .create_slot(
                NewSlot { name: name.clone(), description: String::new(), schema: None },
                "t",
            )
            .await
            .unwrap();
        for (m, act) in [("a", true), ("b", false)] {
            config
                .apply(ApplyRequest {
                    slot: name.clone(),
                    document: json!({"model": m}),
                    actor: "t".into(),
                    message: String::new(),
                    dry_run: false,
                    activate: act,
                    expected_latest: None,
                })
                .await
                .unwrap();
        }
    }
    config
}

/// A canary that never has enough requests to move on: it stays monitored.
fn held(slot: usize) -> DeploymentRequest {
    serde_json::from_value(json!({
        "slot": format!("s{slot}"), "candidate": {"version": 2}, "strategy": "canary",
        "actor": "tester",
        "canary": {"phases": [{"traffic_percent": 10, "min_samples": 1000000}]}
    }))
    .unwrap()
}

fn outcomes(id: &str, from: usize, n: usize) -> Vec<Observation> {
    (from..from + n)
        .map(|i| {
            let arm = if i % 10 == 0 { Arm::Canary } else { Arm::Control };
            Observation::new(id, format!("r{i}"), arm, Outcome::Ok).latency(200.0)
        })
        .collect()
}

async fn revision(store: &SqliteStore, id: &str) -> u64 {
    store.get_rollout(id).await.unwrap().unwrap().revision
}

async fn passes(e: &Engine, clock: &ManualClock, secs: i64) {
    for _ in 0..secs {
        clock.advance(ChronoDuration::seconds(1));
        e.run_pass().await;
    }
}

#[tokio::test]
async fn an_idle_rollout_is_not_written_every_pass_and_its_clocks_are_saved_every_minute() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("a.db")).await.unwrap());
    let config = setup(store.clone(), 1).await;
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let settings = EngineSettings::default();
    assert_eq!((settings.checkpoint_ms, settings.idle_checkpoint_ms), (1000, 60_000));
    let e = Engine::with_clock(config.clone(), Arc::new(NoRoutes), vec![], settings, clock.clone());
    e.start_driven().await.unwrap();
    let id = e.deploy(held(0)).await.unwrap().id;
    // The first looks decide something new ("continue"), which is saved once.
    passes(&e, &clock, 3).await;
    let settled = revision(&store, &id).await;
    // No traffic: 50 passes move only the clocks, which cost no write.
    passes(&e, &clock, 50).await;
    assert_eq!(revision(&store, &id).await, settled, "an idle rollout was written on a pass");
    // A minute after the last save, the clocks are saved once.
    passes(&e, &clock, 15).await;
    assert_eq!(revision(&store, &id).await, settled + 1, "the clocks are saved every minute");
    let stored = store.get_rollout(&id).await.unwrap().unwrap();
    let active_ms = stored.status.get("active_ms").and_then(serde_json::Value::as_u64).unwrap();
    assert!((55_000..=68_000).contains(&active_ms), "saved active time {active_ms} ms");
    // New evidence is saved within a second.
    assert_eq!(e.report(outcomes(&id, 0, 100)).await.unwrap().accepted, 100);
    passes(&e, &clock, 1).await;
    assert_eq!(revision(&store, &id).await, settled + 2, "new evidence is saved on the next pass");
    e.stop().await.unwrap();
}

#[tokio::test]
async fn every_changed_rollout_is_saved_by_the_pass_and_a_restart_resumes_what_it_saved() {
    // In checkpoint mode the checkpoint is the only durable copy of the evidence, so what a
    // restart sees is exactly what the group commit wrote.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.db");
    let store = Arc::new(SqliteStore::open(&path).await.unwrap());
    let config = setup(store.clone(), 6).await;
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let settings = EngineSettings {
        max_active_rollouts: 10,
        durability: Durability::Checkpoint,
        ..EngineSettings::default()
    };
    let e = Engine::with_clock(
        config.clone(),
        Arc::new(NoRoutes),
        vec![],
        settings.clone(),
        clock.clone(),
    );
    e.start_driven().await.unwrap();
    let mut ids = Vec::new();
    for s in 0..6 {
        ids.push(e.deploy(held(s)).await.unwrap().id);
    }
    passes(&e, &clock, 3).await;
    let before: Vec<u64> = {
        let mut v = Vec::new();
        for id in &ids {
            v.push(revision(&store, id).await);
        }
        v
    };
    // Four of the six get traffic; the two idle ones are left alone.
    for (k, id) in ids.iter().enumerate().take(4) {
        let n = 100 * (k + 1);
        assert_eq!(e.report(outcomes(id, 0, n)).await.unwrap().accepted, n as u64);
    }
    passes(&e, &clock, 1).await;
    for (k, id) in ids.iter().enumerate() {
        let want = if k < 4 { before[k] + 1 } else { before[k] };
        assert_eq!(revision(&store, id).await, want, "rollout {k}");
    }
    // A crash now (no stop, so nothing more is written) and a restart on the same file:
    // every saved rollout resumes with its evidence.
    drop(e);
    drop(config);
    drop(store);
    let store = Arc::new(SqliteStore::open(&path).await.unwrap());
    let config = ConfigManager::new(store.clone(), vec![], ConfigSettings::default());
    let e = Engine::with_clock(config, Arc::new(NoRoutes), vec![], settings, clock.clone());
    e.start_driven().await.unwrap();
    e.run_pass().await;
    for (k, id) in ids.iter().enumerate() {
        let v = e.view(id).await.unwrap();
        let n: u64 = v.arms.iter().map(|a| a.requests).sum();
        let want = if k < 4 { 100 * (k as u64 + 1) } else { 0 };
        assert_eq!(n, want, "rollout {k} resumed with {n} requests");
    }
    e.stop().await.unwrap();
}

#[tokio::test]
async fn an_idle_rollout_is_analysed_every_thirty_seconds_and_at_once_when_its_step_runs_out() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("l.db")).await.unwrap());
    let config = setup(store.clone(), 1).await;
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let e = Engine::with_clock(
        config,
        Arc::new(NoRoutes),
        vec![],
        EngineSettings::default(),
        clock.clone(),
    );
    e.start_driven().await.unwrap();
    // The step can never promote and is inconclusive after 70 s of active time; the default
    // policy holds it for a person.
    let req: DeploymentRequest = serde_json::from_value(json!({
        "slot": "s0", "candidate": {"version": 2}, "strategy": "canary", "actor": "tester",
        "canary": {"phases": [{"traffic_percent": 10, "min_samples": 1000000,
                               "min_duration_secs": 0, "max_duration_secs": 70}]}
    }))
    .unwrap();
    let id = e.deploy(req).await.unwrap().id;
    passes(&e, &clock, 2).await;
    let at = |v: &actuator_engine::RolloutView| v.last_decision.as_ref().map(|d| d.at);
    let first = at(&e.view(&id).await.unwrap());
    assert!(first.is_some(), "the first pass looks at a new rollout");
    // Nothing happens to it: no look for the next passes of the 30 s.
    passes(&e, &clock, 27).await;
    assert_eq!(at(&e.view(&id).await.unwrap()), first, "an idle rollout was analysed on a pass");
    passes(&e, &clock, 3).await;
    let later = at(&e.view(&id).await.unwrap());
    assert!(later > first, "an idle rollout is still analysed every 30 s");
    // New evidence is looked at on the next pass.
    assert_eq!(e.report(outcomes(&id, 0, 10)).await.unwrap().accepted, 10);
    passes(&e, &clock, 1).await;
    assert!(at(&e.view(&id).await.unwrap()) > later, "new evidence is analysed at once");
    // The step's 70 s run out between two idle looks (at 63 s and 93 s): the hold comes on
    // the pass that crosses them (its own deadline), not at the next idle look.
    let mut held_at = None;
    for s in 33..100 {
        passes(&e, &clock, 1).await;
        if e.view(&id).await.unwrap().state == actuator_core::DeploymentState::Paused {
            held_at = Some(s);
            break;
        }
    }
    let held_at = held_at.expect("the step ran out and was held");
    assert!((68..=72).contains(&held_at), "held after {held_at} s, the step has 70 s");
    e.stop().await.unwrap();
}
