//! A rollout held at an inconclusive step stops spreading but keeps its protection: the
//! analysis keeps looking at the evidence that arrives, and a rollback rule that crosses still
//! rolls the candidate back by itself.

use actuator_config::{ApplyRequest, ConfigManager, ConfigSettings};
use actuator_core::testing::MemoryStore;
use actuator_core::{DeploymentRequest, DeploymentState, NewSlot, SlotName, Store};
use actuator_engine::{Engine, EngineSettings, ManualClock, RouteSink};
use actuator_health::{Arm, Observation, Outcome};
use async_trait::async_trait;
use chrono::{Duration as ChronoDuration, Utc};
use serde_json::json;
use std::sync::Arc;

struct NoRoutes;

#[async_trait]
impl RouteSink for NoRoutes {
    async fn refresh_slot(&self, _: &SlotName) {}
}

async fn engine() -> (Engine, Arc<ManualClock>) {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let config = ConfigManager::new(store, vec![], ConfigSettings::default());
    let slot = SlotName::new("chat.default").unwrap();
    config
        .create_slot(NewSlot { name: slot.clone(), description: String::new(), schema: None }, "t")
        .await
        .unwrap();
    for (m, activate) in [("a", true), ("b", false)] {
        config
            .apply(ApplyRequest {
                slot: slot.clone(),
                document: json!({"model": m}),
                actor: "t".into(),
                message: String::new(),
                dry_run: false,
                activate,
                expected_latest: None,
            })
            .await
            .unwrap();
    }
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let e = Engine::with_clock(
        config,
        Arc::new(NoRoutes),
        vec![],
        EngineSettings { validation_secs: 0, ..EngineSettings::default() },
        clock.clone(),
    );
    e.start_driven().await.unwrap();
    (e, clock)
}

/// A phase that can never promote (a million requests required) and whose maximum is 5 s.
async fn held(e: &Engine, clock: &ManualClock, auto_rollback: bool) -> String {
    let req: DeploymentRequest = serde_json::from_value(json!({
        "slot": "chat.default", "candidate": {"version": 2}, "strategy": "canary", "actor": "tester",
        "canary": {"auto_rollback": auto_rollback,
                   "phases": [{"traffic_percent": 10, "min_samples": 1000000,
                               "min_duration_secs": 0, "max_duration_secs": 5}]}
    }))
    .unwrap();
    let id = e.deploy(req).await.unwrap().id;
    report(e, &id, 0, 50, 450, 0.0).await;
    for _ in 0..10 {
        clock.advance(ChronoDuration::seconds(1));
        e.run_pass().await;
    }
    let v = e.view(&id).await.unwrap();
    assert_eq!(v.state, DeploymentState::Paused, "{:?}", v.paused_reason);
    id
}

/// `canary` and `control` requests from request number `from`; the canary fails at
/// `canary_errors` (every k-th request), the control at 1 %.
async fn report(e: &Engine, id: &str, from: u64, canary: u64, control: u64, canary_errors: f64) {
    let every = |rate: f64| if rate > 0.0 { (1.0 / rate).round() as u64 } else { u64::MAX };
    let (kt, kc) = (every(canary_errors), every(0.01));
    let mut obs = Vec::new();
    for i in 0..canary {
        let out = if (i + 1) % kt == 0 { Outcome::Error } else { Outcome::Ok };
        obs.push(
            Observation::new(id.to_owned(), format!("r{}", from + i), Arm::Canary, out)
                .latency(200.0),
        );
    }
    for i in 0..control {
        let out = if (i + 1) % kc == 0 { Outcome::Error } else { Outcome::Ok };
        obs.push(
            Observation::new(id.to_owned(), format!("r{}", from + canary + i), Arm::Control, out)
                .latency(200.0),
        );
    }
    let rep = e.report(obs).await.unwrap();
    assert_eq!(rep.rejected, 0, "{rep:?}");
}

#[tokio::test]
async fn a_held_rollout_still_rolls_back_when_its_errors_cross() {
    let (e, clock) = engine().await;
    let id = held(&e, &clock, true).await;
    let v = e.view(&id).await.unwrap();
    assert!(v.held_watch, "held with the analysis on watch");
    assert!(v.paused_reason.as_deref().unwrap_or("").contains("keeps watching"));
    // Healthy evidence while held: it stays held.
    for k in 0..20u64 {
        report(&e, &id, 1_000 + k * 500, 50, 450, 0.01).await;
        clock.advance(ChronoDuration::seconds(1));
        e.run_pass().await;
    }
    let v = e.view(&id).await.unwrap();
    assert_eq!(v.state, DeploymentState::Paused, "{:?}", v.last_decision);
    // Then the canary fails at 8 % against the control's 1 %: rolled back while held.
    let mut state = v.state;
    for k in 0..200u64 {
        report(&e, &id, 100_000 + k * 500, 50, 450, 0.08).await;
        clock.advance(ChronoDuration::seconds(1));
        e.run_pass().await;
        state = e.view(&id).await.unwrap().state;
        if state != DeploymentState::Paused {
            break;
        }
    }
    assert!(
        matches!(state, DeploymentState::RollingBack | DeploymentState::RolledBack),
        "{state:?}"
    );
    let v = e.view(&id).await.unwrap();
    let rb = serde_json::to_value(&v.rollback.as_ref().unwrap().reason).unwrap();
    assert_eq!(rb["kind"], "analysis", "{rb}");
    assert!(rb.to_string().contains("error"), "{rb}");
    assert!(!v.held_watch);
    e.stop().await.unwrap();
}

#[tokio::test]
async fn without_auto_rollback_a_held_rollout_waits_for_its_person() {
    let (e, clock) = engine().await;
    let id = held(&e, &clock, false).await;
    assert!(!e.view(&id).await.unwrap().held_watch);
    for k in 0..60u64 {
        report(&e, &id, 100_000 + k * 500, 50, 450, 0.08).await;
        clock.advance(ChronoDuration::seconds(1));
        e.run_pass().await;
    }
    assert_eq!(e.view(&id).await.unwrap().state, DeploymentState::Paused);
    e.stop().await.unwrap();
}
