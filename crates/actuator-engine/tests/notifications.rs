//! What notifiers are told: every rollout event carries the rollout's context, and an
//! inconclusive phase is told before its policy acts.

use actuator_config::{ApplyRequest, ConfigManager, ConfigSettings};
use actuator_core::testing::MemoryStore;
use actuator_core::{
    DeploymentRequest, DeploymentState, Event, NewSlot, Notifier, PluginError, SlotName, Store,
};
use actuator_engine::{Engine, EngineSettings, ManualAction, ManualClock, RouteSink};
use async_trait::async_trait;
use chrono::{Duration as ChronoDuration, Utc};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct NoRoutes;

#[async_trait]
impl RouteSink for NoRoutes {
    async fn refresh_slot(&self, _: &SlotName) {}
}

#[derive(Default)]
struct Collect(Mutex<Vec<Event>>);

#[async_trait]
impl Notifier for Collect {
    async fn notify(&self, event: &Event) -> Result<(), PluginError> {
        self.0.lock().unwrap().push(event.clone());
        Ok(())
    }
}

impl Collect {
    async fn wait_for(&self, kind: &str) -> Event {
        for _ in 0..500 {
            if let Some(e) = self.0.lock().unwrap().iter().find(|e| e.kind == kind) {
                return e.clone();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let kinds: Vec<String> = self.0.lock().unwrap().iter().map(|e| e.kind.clone()).collect();
        panic!("no {kind} event; got {kinds:?}");
    }
}

#[tokio::test]
async fn rollout_events_carry_their_context_and_inconclusive_is_told() {
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
    let seen = Arc::new(Collect::default());
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let e = Engine::with_clock(
        config,
        Arc::new(NoRoutes),
        vec![seen.clone()],
        EngineSettings { validation_secs: 0, ..EngineSettings::default() },
        clock.clone(),
    );
    e.start_driven().await.unwrap();
    // A phase that can never promote and runs out after 5 s: inconclusive, held for a person.
    let req: DeploymentRequest = serde_json::from_value(json!({
        "slot": "chat.default", "candidate": {"version": 2}, "strategy": "canary", "actor": "tester",
        "canary": {"phases": [{"traffic_percent": 10, "min_samples": 1000000,
                               "min_duration_secs": 0, "max_duration_secs": 5}]}
    }))
    .unwrap();
    let id = e.deploy(req).await.unwrap().id;
    let start = seen.wait_for("rollout.start").await;
    assert_eq!(start.target, id);
    let d = &start.details;
    assert_eq!(d["rollout_id"], id.as_str());
    assert_eq!(d["slot"], "chat.default");
    assert_eq!(d["strategy"], "canary");
    assert_eq!((d["stable_version"].as_u64(), d["candidate_version"].as_u64()), (Some(1), Some(2)));
    assert_eq!(d["share_percent"], 10.0);
    for _ in 0..10 {
        clock.advance(ChronoDuration::seconds(1));
        e.run_pass().await;
    }
    assert_eq!(e.view(&id).await.unwrap().state, DeploymentState::Paused);
    let inconclusive = seen.wait_for("rollout.inconclusive").await;
    assert_eq!(inconclusive.details["policy"], "hold");
    assert_eq!(inconclusive.details["decision"]["kind"], "inconclusive");
    assert!(inconclusive.summary.contains("inconclusive"), "{}", inconclusive.summary);
    let pause = seen.wait_for("rollout.pause").await;
    assert_eq!(pause.details["state"], "paused");
    // Told once, not on every later look.
    for _ in 0..15 {
        clock.advance(ChronoDuration::seconds(1));
        e.run_pass().await;
    }
    e.act(&id, ManualAction::Rollback { reason: "enough".into(), gradual: false }, "op")
        .await
        .unwrap();
    let rb = seen.wait_for("rollout.rollback").await;
    assert_eq!(rb.details["automatic"], false);
    assert_eq!(rb.details["state"], "rolling_back");
    assert_eq!(rb.details["slot"], "chat.default");
    let n = seen.0.lock().unwrap().iter().filter(|e| e.kind == "rollout.inconclusive").count();
    assert_eq!(n, 1);
    e.stop().await.unwrap();
}
