//! The engine over an in-memory store: limits, manual control against the state machine,
//! notifiers that hang or fail, in-process reporting, and resuming from the store.

use actuator_config::{ApplyRequest, ConfigManager, ConfigSettings};
use actuator_core::testing::MemoryStore;
use actuator_core::{
    DeploymentRequest, DeploymentState, Event, NewSlot, Notifier, PluginError, SlotName, Store,
};
use actuator_engine::{Engine, EngineError, EngineSettings, ManualAction, RouteSink};
use actuator_health::{Arm, Observation, Outcome};
use async_trait::async_trait;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

#[derive(Default)]
struct Routes(AtomicUsize);

#[async_trait]
impl RouteSink for Routes {
    async fn refresh_slot(&self, _: &SlotName) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

struct Hangs;
#[async_trait]
impl Notifier for Hangs {
    async fn notify(&self, _: &Event) -> Result<(), PluginError> {
        std::future::pending::<()>().await;
        Ok(())
    }
}

struct Fails;
#[async_trait]
impl Notifier for Fails {
    async fn notify(&self, _: &Event) -> Result<(), PluginError> {
        Err(PluginError::Failed { plugin: "fails".into(), message: "down".into() })
    }
}

fn settings(max: usize) -> EngineSettings {
    EngineSettings {
        tick_ms: 10,
        validation_secs: 0,
        max_active_rollouts: max,
        ..EngineSettings::default()
    }
}

async fn setup(store: Arc<dyn Store>, slots: &[&str]) -> ConfigManager {
    let config = ConfigManager::new(store, vec![], ConfigSettings::default());
    for s in slots {
        let name = SlotName::new(*s).unwrap();
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

fn req(slot: &str) -> DeploymentRequest {
    serde_json::from_value(json!({
        "slot": slot, "candidate": {"version": 2}, "strategy": "canary", "actor": "tester",
        "canary": {"phases": [{"traffic_percent": 10, "min_samples": 1000000}, {"traffic_percent": 50, "min_samples": 1000000}]}
    }))
    .unwrap()
}

async fn wait_state(e: &Engine, id: &str, want: DeploymentState) {
    for _ in 0..500 {
        if e.view(id).await.unwrap().state == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{id} never reached {want}: {:?}", e.view(id).await.unwrap());
}

#[tokio::test]
async fn limits_and_busy_slots_are_refused() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let config = setup(store, &["a", "b", "c"]).await;
    let e = Engine::new(config, Arc::new(Routes::default()), vec![], settings(2));
    e.start().await.unwrap();
    e.deploy(req("a")).await.unwrap();
    let busy = e.deploy(req("a")).await.unwrap_err();
    assert!(matches!(busy, EngineError::SlotBusy { .. }), "{busy}");
    assert_eq!(busy.code(), "rollout_active");
    e.deploy(req("b")).await.unwrap();
    let limit = e.deploy(req("c")).await.unwrap_err();
    assert!(matches!(limit, EngineError::Limit { active: 2, limit: 2 }), "{limit}");
    assert!(limit.to_string().contains("max_active_rollouts"));
    let mut bad = req("c");
    bad.settings = json!({"step_percent": 5, "colour": 1});
    assert!(e.deploy(bad).await.unwrap_err().to_string().contains("colour"));
    e.stop().await.unwrap();
}

#[tokio::test]
async fn manual_actions_follow_the_state_machine() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let config = setup(store.clone(), &["a"]).await;
    let routes = Arc::new(Routes::default());
    let e = Engine::new(config, routes.clone(), vec![], settings(3));
    e.start().await.unwrap();
    let v = e.deploy(req("a")).await.unwrap();
    assert_eq!((v.state, v.phase, v.share_percent), (DeploymentState::Monitoring, 0, 10.0));
    let invalid = e.act(&v.id, ManualAction::Resume, "op").await.unwrap_err();
    assert_eq!(invalid.code(), "invalid_transition");
    assert_eq!(
        e.act(&v.id, ManualAction::Pause, "op").await.unwrap().state,
        DeploymentState::Paused
    );
    assert_eq!(
        e.act(&v.id, ManualAction::Pause, "op").await.unwrap_err().code(),
        "invalid_transition"
    );
    assert_eq!(
        e.act(&v.id, ManualAction::Resume, "op").await.unwrap().state,
        DeploymentState::Monitoring
    );
    let p = e
        .act(&v.id, ManualAction::Promote { full: false, skip_analysis: false }, "op")
        .await
        .unwrap();
    assert_eq!((p.phase, p.share_percent), (1, 50.0));
    let a = e.act(&v.id, ManualAction::Abort, "op").await.unwrap();
    assert_eq!(a.state, DeploymentState::Aborted, "an abort ends as aborted, not rolled back");
    assert_eq!(a.share_percent, 0.0, "abort sends all traffic back at once");
    assert!(a.rollback.is_none(), "an abort is not a rollback");
    assert_eq!((e.stats().aborted_deployments, e.stats().manual_rollbacks), (1, 0));
    let r = e.act(&v.id, ManualAction::Retry, "op").await.unwrap();
    assert_eq!((r.state, r.phase), (DeploymentState::Monitoring, 0));
    let full = e
        .act(&v.id, ManualAction::Promote { full: true, skip_analysis: false }, "op")
        .await
        .unwrap();
    assert_eq!(full.state, DeploymentState::Completed);
    let slot = store.get_slot(&SlotName::new("a").unwrap()).await.unwrap().unwrap();
    assert_eq!(slot.active_version, Some(2));
    // Every transition went through the state machine, and routing was refreshed after each.
    for t in &full.transitions {
        assert!(t.from.can_transition_to(t.to), "{t:?}");
    }
    assert!(routes.0.load(Ordering::SeqCst) >= full.transitions.len());
    let audit = store
        .list_audit(actuator_core::AuditQuery {
            cursor: None,
            limit: 1000,
            descending: false,
            target: Some(v.id.clone()),
        })
        .await
        .unwrap();
    let actions: Vec<&str> = audit.items.iter().map(|a| a.action.as_str()).collect();
    for want in [
        "rollout.start",
        "rollout.pause",
        "rollout.resume",
        "rollout.promote",
        "rollout.abort",
        "rollout.retry",
        "rollout.complete",
    ] {
        assert!(actions.contains(&want), "{want} missing from {actions:?}");
    }
    assert!(audit.items.iter().filter(|a| a.action == "rollout.pause").all(|a| a.actor == "op"));
    e.stop().await.unwrap();
}

#[tokio::test]
async fn hanging_and_failing_notifiers_never_block_a_rollback() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let config = setup(store, &["a"]).await;
    let e = Engine::new(
        config,
        Arc::new(Routes::default()),
        vec![Arc::new(Hangs), Arc::new(Fails)],
        settings(3),
    );
    e.start().await.unwrap();
    let v = e.deploy(req("a")).await.unwrap();
    let rb = tokio::time::timeout(
        Duration::from_secs(5),
        e.act(&v.id, ManualAction::Rollback { reason: "bad answers".into(), gradual: false }, "op"),
    )
    .await
    .expect("a rollback does not wait for notifiers")
    .unwrap();
    assert_eq!(rb.state, DeploymentState::RollingBack);
    assert!(rb.rollback.as_ref().unwrap().flip_ms.is_some());
    wait_state(&e, &v.id, DeploymentState::RolledBack).await;
    e.stop().await.unwrap();
}

#[tokio::test]
async fn in_process_reports_survive_a_restart() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let config = setup(store.clone(), &["a"]).await;
    let e = Engine::new(config.clone(), Arc::new(Routes::default()), vec![], settings(3));
    e.start().await.unwrap();
    let v = e.deploy(req("a")).await.unwrap();
    let obs: Vec<Observation> = (0..200)
        .map(|i| {
            let arm = if i % 10 == 0 { Arm::Canary } else { Arm::Control };
            Observation::new(v.id.clone(), format!("r{i}"), arm, Outcome::Ok).latency(200.0)
        })
        .collect();
    let rep = e.report(obs).await.unwrap();
    assert_eq!((rep.accepted, rep.rejected), (200, 0), "{rep:?}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = e.view(&v.id).await.unwrap();
    e.stop().await.unwrap();
    let e2 = Engine::new(config, Arc::new(Routes::default()), vec![], settings(3));
    e2.start().await.unwrap();
    let after = e2.view(&v.id).await.unwrap();
    assert_eq!(
        (after.state, after.phase, after.phase_started_at),
        (before.state, before.phase, before.phase_started_at)
    );
    let total = |v: &actuator_engine::RolloutView| v.arms.iter().map(|a| a.requests).sum::<u64>();
    assert_eq!(total(&after), 200, "the evidence survived: {after:?}");
    e2.stop().await.unwrap();
}
