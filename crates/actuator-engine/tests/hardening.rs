//! Hardening of the engine where the daemon cannot be made to misbehave from outside: a look
//! at one rollout that panics, and clocks that count only active time (driven by a manual
//! clock, over the in-memory store).

use actuator_config::{ApplyRequest, ConfigManager, ConfigSettings};
use actuator_core::testing::MemoryStore;
use actuator_core::{
    AppendVersion, AuditDraft, AuditEntry, AuditHead, AuditQuery, ConfigVersion, DeploymentRequest,
    DeploymentState, NewRollout, NewSlot, NewSnapshot, Page, PageRequest, RolloutFilter,
    RolloutRecord, RolloutUpdate, Slot, SlotName, Snapshot, Store, StoreError,
};
use actuator_core::{AuditReport, NewObservationBatch, ObservationBatch};
use actuator_engine::{Engine, EngineSettings, ManualAction, ManualClock, RouteSink};
use actuator_health::{Arm, Observation, Outcome};
use async_trait::async_trait;
use chrono::{Duration as ChronoDuration, Utc};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

struct Routes;

#[async_trait]
impl RouteSink for Routes {
    async fn refresh_slot(&self, _: &SlotName) {}
}

/// A store whose checkpoint of one rollout panics: a bug in one rollout's look.
struct PanicsOn {
    inner: MemoryStore,
    rollout: String,
}

#[async_trait]
impl Store for PanicsOn {
    async fn create_slot(&self, slot: NewSlot, audit: AuditDraft) -> Result<Slot, StoreError> {
        self.inner.create_slot(slot, audit).await
    }
    async fn get_slot(&self, name: &SlotName) -> Result<Option<Slot>, StoreError> {
        self.inner.get_slot(name).await
    }
    async fn list_slots(&self, page: PageRequest) -> Result<Page<Slot>, StoreError> {
        self.inner.list_slots(page).await
    }
    async fn append_version(
        &self,
        req: AppendVersion,
        audit: AuditDraft,
    ) -> Result<ConfigVersion, StoreError> {
        self.inner.append_version(req, audit).await
    }
    async fn activate_version(
        &self,
        slot: &SlotName,
        expected_revision: u64,
        version: u64,
        audit: AuditDraft,
    ) -> Result<Slot, StoreError> {
        self.inner.activate_version(slot, expected_revision, version, audit).await
    }
    async fn get_version(
        &self,
        slot: &SlotName,
        version: u64,
    ) -> Result<Option<ConfigVersion>, StoreError> {
        self.inner.get_version(slot, version).await
    }
    async fn list_versions(
        &self,
        slot: &SlotName,
        page: PageRequest,
    ) -> Result<Page<ConfigVersion>, StoreError> {
        self.inner.list_versions(slot, page).await
    }
    async fn create_snapshot(
        &self,
        req: NewSnapshot,
        audit: AuditDraft,
    ) -> Result<Snapshot, StoreError> {
        self.inner.create_snapshot(req, audit).await
    }
    async fn get_snapshot(&self, id: &str) -> Result<Option<Snapshot>, StoreError> {
        self.inner.get_snapshot(id).await
    }
    async fn list_snapshots(
        &self,
        slot: Option<&SlotName>,
        page: PageRequest,
    ) -> Result<Page<Snapshot>, StoreError> {
        self.inner.list_snapshots(slot, page).await
    }
    async fn append_audit(&self, audit: AuditDraft) -> Result<AuditEntry, StoreError> {
        self.inner.append_audit(audit).await
    }
    async fn list_audit(&self, query: AuditQuery) -> Result<Page<AuditEntry>, StoreError> {
        self.inner.list_audit(query).await
    }
    async fn audit_head(&self) -> Result<Option<AuditHead>, StoreError> {
        self.inner.audit_head().await
    }
    async fn verify_audit(&self) -> Result<AuditReport, StoreError> {
        self.inner.verify_audit().await
    }
    async fn acknowledge_audit(&self, audit: AuditDraft) -> Result<AuditEntry, StoreError> {
        self.inner.acknowledge_audit(audit).await
    }
    async fn create_token(
        &self,
        token: actuator_core::NewToken,
        audit: AuditDraft,
    ) -> Result<actuator_core::TokenRecord, StoreError> {
        self.inner.create_token(token, audit).await
    }
    async fn list_tokens(&self) -> Result<Vec<actuator_core::TokenRecord>, StoreError> {
        self.inner.list_tokens().await
    }
    async fn revoke_token(
        &self,
        name: &str,
        audit: AuditDraft,
    ) -> Result<actuator_core::TokenRecord, StoreError> {
        self.inner.revoke_token(name, audit).await
    }
    async fn readiness(&self) -> Vec<String> {
        self.inner.readiness().await
    }
    async fn create_rollout(
        &self,
        rollout: NewRollout,
        audit: AuditDraft,
    ) -> Result<RolloutRecord, StoreError> {
        self.inner.create_rollout(rollout, audit).await
    }
    async fn get_rollout(&self, id: &str) -> Result<Option<RolloutRecord>, StoreError> {
        self.inner.get_rollout(id).await
    }
    async fn list_rollouts(
        &self,
        filter: RolloutFilter,
        page: PageRequest,
    ) -> Result<Page<RolloutRecord>, StoreError> {
        self.inner.list_rollouts(filter, page).await
    }
    async fn save_rollout_status(
        &self,
        id: &str,
        expected_revision: u64,
        status: Value,
    ) -> Result<RolloutRecord, StoreError> {
        assert!(id != self.rollout, "checkpoint of {id} hit a bug");
        self.inner.save_rollout_status(id, expected_revision, status).await
    }
    async fn append_observation_batches(
        &self,
        batches: Vec<NewObservationBatch>,
    ) -> Result<Vec<u64>, StoreError> {
        self.inner.append_observation_batches(batches).await
    }
    async fn list_observation_batches(
        &self,
        rollout_id: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<ObservationBatch>, StoreError> {
        self.inner.list_observation_batches(rollout_id, after, limit).await
    }
    async fn checkpoint_rollout(
        &self,
        id: &str,
        expected_revision: u64,
        status: Value,
        folded_through: u64,
    ) -> Result<RolloutRecord, StoreError> {
        assert!(id != self.rollout, "checkpoint of {id} hit a bug");
        self.inner.checkpoint_rollout(id, expected_revision, status, folded_through).await
    }
    async fn prune_observation_batches(
        &self,
        rollout_id: &str,
        through: u64,
    ) -> Result<u64, StoreError> {
        self.inner.prune_observation_batches(rollout_id, through).await
    }
    async fn update_rollout(
        &self,
        id: &str,
        update: RolloutUpdate,
        audit: AuditDraft,
    ) -> Result<RolloutRecord, StoreError> {
        self.inner.update_rollout(id, update, audit).await
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

fn held(slot: &str, extra: Value) -> DeploymentRequest {
    let mut v = json!({
        "id": format!("ro-{slot}"), "slot": slot, "candidate": {"version": 2},
        "strategy": "canary", "actor": "tester",
        "canary": {"phases": [
            {"traffic_percent": 10, "min_samples": 1_000_000, "min_duration_secs": 0, "max_duration_secs": 86_400},
            {"traffic_percent": 50, "min_samples": 1_000_000, "min_duration_secs": 0, "max_duration_secs": 86_400}
        ]}
    });
    if let (Value::Object(m), Value::Object(e)) = (&mut v["canary"], extra) {
        m.extend(e);
    }
    serde_json::from_value(v).unwrap()
}

#[tokio::test]
async fn a_panic_in_one_rollouts_look_fails_that_rollout_and_spares_the_others() {
    let store: Arc<dyn Store> =
        Arc::new(PanicsOn { inner: MemoryStore::new(), rollout: "ro-boom".into() });
    let config = setup(store.clone(), &["boom", "calm"]).await;
    let settings = EngineSettings { tick_ms: 10, checkpoint_ms: 0, ..EngineSettings::default() };
    let e = Engine::new(config, Arc::new(Routes), vec![], settings);
    e.start().await.unwrap();
    e.deploy(held("boom", json!({}))).await.unwrap();
    let calm = e.deploy(held("calm", json!({}))).await.unwrap();
    let mut boom = e.view("ro-boom").await.unwrap();
    for _ in 0..500 {
        if boom.state == DeploymentState::Failed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        boom = e.view("ro-boom").await.unwrap();
    }
    assert_eq!(boom.state, DeploymentState::Failed, "{boom:?}");
    assert!(boom.errors.iter().any(|m| m.contains("panic") && m.contains("hit a bug")), "{boom:?}");
    assert_eq!(boom.share_percent, 0.0, "a failed rollout routes no traffic");
    let audit = store
        .list_audit(AuditQuery {
            cursor: None,
            limit: 100,
            descending: true,
            target: Some("ro-boom".into()),
        })
        .await
        .unwrap();
    assert!(audit.items.iter().any(|a| a.action == "rollout.fail"), "the failure is audited");
    // The loop is alive and still looks at the other rollout: new evidence of it is
    // analysed.
    assert!(e.loop_alive());
    let before = e.view(&calm.id).await.unwrap().last_decision.map(|d| d.at);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let outcomes = (0..20)
        .map(|i| {
            let arm = if i % 10 == 0 { Arm::Canary } else { Arm::Control };
            Observation::new(calm.id.clone(), format!("c{i}"), arm, Outcome::Ok).latency(100.0)
        })
        .collect();
    assert_eq!(e.report(outcomes).await.unwrap().accepted, 20);
    let mut later = before;
    for _ in 0..500 {
        later = e.view(&calm.id).await.unwrap().last_decision.map(|d| d.at);
        if later > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(later > before, "the other rollout is still looked at");
    assert_eq!(e.view(&calm.id).await.unwrap().state, DeploymentState::Monitoring);
    e.stop().await.unwrap();
    assert!(!e.loop_alive(), "a stopped engine has no loop; /readyz says so");
}

/// Advances the clock by `secs` seconds in steps of `step`, with a pass after each.
async fn run_for(e: &Engine, clock: &ManualClock, secs: i64, step: i64) {
    let mut left = secs;
    while left > 0 {
        let s = left.min(step);
        clock.advance(ChronoDuration::seconds(s));
        e.run_pass().await;
        left -= s;
    }
}

#[tokio::test]
async fn paused_time_and_downtime_do_not_count_and_the_budget_respects_auto_rollback() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let config = setup(store.clone(), &["a"]).await;
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let e = Engine::with_clock(
        config.clone(),
        Arc::new(Routes),
        vec![],
        EngineSettings::default(),
        clock.clone(),
    );
    e.start_driven().await.unwrap();
    let req = held("a", json!({"max_duration_secs": 100, "auto_rollback": false}));
    let id = e.deploy(req).await.unwrap().id;
    run_for(&e, &clock, 40, 5).await;
    let v = e.view(&id).await.unwrap();
    assert!((39.0..=41.0).contains(&v.active_secs), "{}", v.active_secs);
    assert!((39.0..=41.0).contains(&v.phase_active_secs), "{}", v.phase_active_secs);

    // A long pause counts nothing.
    e.act(&id, ManualAction::Pause, "op").await.unwrap();
    run_for(&e, &clock, 3600, 60).await;
    e.act(&id, ManualAction::Resume, "op").await.unwrap();
    e.run_pass().await;
    let v = e.view(&id).await.unwrap();
    assert_eq!(v.state, DeploymentState::Monitoring, "no timeout after a pause: {v:?}");
    assert!(v.active_secs < 45.0, "{}", v.active_secs);

    // Downtime counts nothing: a new engine over the same store, an hour later.
    e.stop().await.unwrap();
    clock.advance(ChronoDuration::hours(1));
    let e = Engine::with_clock(
        config,
        Arc::new(Routes),
        vec![],
        EngineSettings::default(),
        clock.clone(),
    );
    e.start_driven().await.unwrap();
    e.run_pass().await;
    let v = e.view(&id).await.unwrap();
    assert_eq!(v.state, DeploymentState::Monitoring, "no timeout after a restart: {v:?}");
    assert!(v.active_secs < 45.0, "{}", v.active_secs);

    // The budget is spent in active time; with auto_rollback off it pauses for a person.
    run_for(&e, &clock, 70, 5).await;
    let v = e.view(&id).await.unwrap();
    assert_eq!(v.state, DeploymentState::Paused, "{v:?}");
    let why = v.paused_reason.clone().unwrap_or_default();
    assert!(why.contains("max_duration_secs") && why.contains("auto_rollback is off"), "{why}");
    assert!(v.rollback.is_none(), "no rollback with auto_rollback off");
    // A resume continues past the budget.
    e.act(&id, ManualAction::Resume, "op").await.unwrap();
    run_for(&e, &clock, 20, 5).await;
    assert_eq!(e.view(&id).await.unwrap().state, DeploymentState::Monitoring);
}

#[tokio::test]
async fn the_budget_rolls_back_when_auto_rollback_is_on() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let config = setup(store, &["a"]).await;
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let settings = EngineSettings { validation_secs: 0, ..EngineSettings::default() };
    let e = Engine::with_clock(config, Arc::new(Routes), vec![], settings, clock.clone());
    e.start_driven().await.unwrap();
    let id = e.deploy(held("a", json!({"max_duration_secs": 30}))).await.unwrap().id;
    run_for(&e, &clock, 25, 5).await;
    assert_eq!(e.view(&id).await.unwrap().state, DeploymentState::Monitoring);
    run_for(&e, &clock, 10, 5).await;
    let v = e.view(&id).await.unwrap();
    let rb = v.rollback.expect("rolled back on its budget");
    assert_eq!(rb.reason, actuator_core::RollbackReason::Timeout);
}

#[tokio::test]
async fn a_frozen_process_counts_at_most_the_tick_gap() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let config = setup(store, &["a"]).await;
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let settings =
        EngineSettings { tick_ms: 10, max_tick_gap_ms: 2000, ..EngineSettings::default() };
    // The engine's own loop, on a clock that jumps an hour (as after a frozen process).
    let e = Engine::with_clock(config, Arc::new(Routes), vec![], settings, clock.clone());
    e.start().await.unwrap();
    let id = e.deploy(held("a", json!({"max_duration_secs": 600}))).await.unwrap().id;
    let seen = |v: &actuator_engine::RolloutView| v.active_secs;
    clock.advance(ChronoDuration::hours(1));
    let mut v = e.view(&id).await.unwrap();
    for _ in 0..500 {
        if seen(&v) > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        v = e.view(&id).await.unwrap();
    }
    assert!((1.9..=2.1).contains(&v.active_secs), "counted {} s", v.active_secs);
    assert_eq!(v.state, DeploymentState::Monitoring, "no timeout: {v:?}");
    e.stop().await.unwrap();
}

#[tokio::test]
async fn parallel_rollbacks_of_a_completed_rollout_settle_in_one() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let config = setup(store.clone(), &["a"]).await;
    let settings = EngineSettings {
        tick_ms: 10,
        validation_secs: 0,
        gradual_step_secs: 0,
        ..EngineSettings::default()
    };
    let e = Engine::new(config, Arc::new(Routes), vec![], settings);
    e.start().await.unwrap();
    let id = e.deploy(held("a", json!({}))).await.unwrap().id;
    let done =
        e.act(&id, ManualAction::Promote { full: true, skip_analysis: true }, "op").await.unwrap();
    assert_eq!(done.state, DeploymentState::Completed);
    let back = |gradual| ManualAction::Rollback { reason: "late".into(), gradual };
    let results = futures::future::join_all(
        (0..8).map(|i| e.act(&id, back(i % 2 == 0), "op")).collect::<Vec<_>>(),
    )
    .await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 1, "{results:?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(matches!(r.code(), "rollback_refused" | "invalid_transition"), "{r}");
    }
    let mut v = e.view(&id).await.unwrap();
    for _ in 0..500 {
        if v.state == DeploymentState::RolledBack {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        v = e.view(&id).await.unwrap();
    }
    assert_eq!(v.state, DeploymentState::RolledBack, "{v:?}");
    assert_eq!(v.rollbacks.len(), 1, "{v:?}");
    let slot = store.get_slot(&SlotName::new("a").unwrap()).await.unwrap().unwrap();
    assert_eq!(slot.active_version, Some(1), "the replaced version serves again");
    e.stop().await.unwrap();
}

#[tokio::test]
async fn downtime_does_not_cut_a_rollback_step_short() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let config = setup(store, &["a"]).await;
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let settings = EngineSettings { validation_secs: 30, ..EngineSettings::default() };
    let e = Engine::with_clock(
        config.clone(),
        Arc::new(Routes),
        vec![],
        settings.clone(),
        clock.clone(),
    );
    e.start_driven().await.unwrap();
    let id = e.deploy(held("a", json!({}))).await.unwrap().id;
    run_for(&e, &clock, 5, 5).await;
    let rollback = ManualAction::Rollback { reason: "bad answers".into(), gradual: false };
    e.act(&id, rollback, "op").await.unwrap();
    run_for(&e, &clock, 10, 5).await;
    assert_eq!(e.view(&id).await.unwrap().state, DeploymentState::RollingBack);

    // The daemon is down for an hour in the middle of the 30 s validation window.
    e.stop().await.unwrap();
    clock.advance(ChronoDuration::hours(1));
    let e = Engine::with_clock(config, Arc::new(Routes), vec![], settings, clock.clone());
    e.start_driven().await.unwrap();
    e.run_pass().await;
    let v = e.view(&id).await.unwrap();
    assert_eq!(v.state, DeploymentState::RollingBack, "the window resumes where it was: {v:?}");
    run_for(&e, &clock, 15, 5).await;
    assert_eq!(e.view(&id).await.unwrap().state, DeploymentState::RollingBack);
    run_for(&e, &clock, 10, 5).await;
    assert_eq!(e.view(&id).await.unwrap().state, DeploymentState::RolledBack);
}

#[test]
fn engine_settings_out_of_range_are_refused_naming_the_setting() {
    assert!(EngineSettings::default().validate().is_ok());
    let bad = EngineSettings { max_tick_gap_ms: 0, ..EngineSettings::default() };
    let err = bad.validate().unwrap_err().to_string();
    assert!(err.contains("engine.max_tick_gap_ms") && err.contains("86400000"), "{err}");
    let bad = EngineSettings { tick_ms: 3_600_000, ..EngineSettings::default() };
    assert!(bad.validate().unwrap_err().to_string().contains("engine.tick_ms"));
}
