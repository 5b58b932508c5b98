//! Acknowledged observations are never lost by the engine: a failed checkpoint keeps the
//! evidence and retries, a lost revision race re-reads and replays, a restart replays the
//! durable batches exactly once, and a batch the store cannot persist is refused whole.

use actuator_config::{ApplyRequest, ConfigManager, ConfigSettings};
use actuator_core::audit::{AuditDraft, AuditEntry, AuditHead, AuditReport};
use actuator_core::testing::MemoryStore;
use actuator_core::{
    AppendVersion, AuditQuery, ConfigVersion, DeploymentRequest, NewObservationBatch, NewRollout,
    NewSlot, NewSnapshot, ObservationBatch, Page, PageRequest, RolloutFilter, RolloutRecord,
    RolloutUpdate, Slot, SlotName, Snapshot, Store, StoreError,
};
use actuator_engine::{Durability, Engine, EngineError, EngineSettings, RolloutView, RouteSink};
use actuator_health::{Arm, Observation, Outcome};
use async_trait::async_trait;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

struct NoRoutes;

#[async_trait]
impl RouteSink for NoRoutes {
    async fn refresh_slot(&self, _: &SlotName) {}
}

/// A memory store whose checkpoints and appends can be made to fail, and whose checkpoint
/// can be made non-atomic (the status is saved, the folded batches are left behind: a crash
/// between the two writes of a store without transactions).
#[derive(Default)]
struct Faulty {
    inner: MemoryStore,
    fail_checkpoints: AtomicUsize,
    checkpoint_calls: AtomicUsize,
    fail_appends: AtomicBool,
    keep_folded_batches: AtomicBool,
    /// Appends wait for this lock: a test that holds it keeps every append in flight.
    appends_held: tokio::sync::Mutex<()>,
    append_calls: AtomicUsize,
}

fn down() -> StoreError {
    StoreError::Backend("disk full".into())
}

#[async_trait]
impl Store for Faulty {
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
        self.inner.save_rollout_status(id, expected_revision, status).await
    }
    async fn update_rollout(
        &self,
        id: &str,
        update: RolloutUpdate,
        audit: AuditDraft,
    ) -> Result<RolloutRecord, StoreError> {
        self.inner.update_rollout(id, update, audit).await
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
    async fn append_observation_batches(
        &self,
        batches: Vec<NewObservationBatch>,
    ) -> Result<Vec<u64>, StoreError> {
        self.append_calls.fetch_add(1, Ordering::SeqCst);
        let _held = self.appends_held.lock().await;
        if self.fail_appends.load(Ordering::SeqCst) {
            return Err(down());
        }
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
        self.checkpoint_calls.fetch_add(1, Ordering::SeqCst);
        let left = self.fail_checkpoints.load(Ordering::SeqCst);
        if left > 0 {
            self.fail_checkpoints.store(left - 1, Ordering::SeqCst);
            return Err(down());
        }
        if self.keep_folded_batches.load(Ordering::SeqCst) {
            return self.inner.save_rollout_status(id, expected_revision, status).await;
        }
        self.inner.checkpoint_rollout(id, expected_revision, status, folded_through).await
    }
    async fn prune_observation_batches(
        &self,
        rollout_id: &str,
        through: u64,
    ) -> Result<u64, StoreError> {
        self.inner.prune_observation_batches(rollout_id, through).await
    }
}

fn settings(durability: Durability, checkpoint_ms: u64) -> EngineSettings {
    EngineSettings { checkpoint_ms, validation_secs: 0, durability, ..EngineSettings::default() }
}

async fn setup(store: Arc<Faulty>) -> ConfigManager {
    let config = ConfigManager::new(store, vec![], ConfigSettings::default());
    let name = SlotName::new("chat").unwrap();
    config
        .create_slot(NewSlot { name: name.clone(), description: String::new(), schema: None }, "t")
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
    config
}

fn req() -> DeploymentRequest {
    serde_json::from_value(json!({
        "slot": "chat", "candidate": {"version": 2}, "strategy": "canary", "actor": "tester",
        "canary": {"phases": [{"traffic_percent": 10, "min_samples": 1000000}]}
    }))
    .unwrap()
}

/// An engine that runs no loop of its own: the test calls `run_pass`.
async fn engine(config: &ConfigManager, s: EngineSettings) -> Engine {
    let e = Engine::new(config.clone(), Arc::new(NoRoutes), vec![], s);
    e.start_driven().await.unwrap();
    e
}

/// `n` outcomes, one in ten on the canary (the traffic split), ids from `from`.
fn outcomes(id: &str, from: usize, n: usize) -> Vec<Observation> {
    (from..from + n)
        .map(|i| {
            let arm = if i % 10 == 0 { Arm::Canary } else { Arm::Control };
            Observation::new(id, format!("r{i}"), arm, Outcome::Ok).latency(200.0)
        })
        .collect()
}

/// Requests counted by the rollout's analysis, after one pass of the loop (the view shows
/// the analysis of the last look).
async fn counted(e: &Engine, id: &str) -> u64 {
    e.run_pass().await;
    let v: RolloutView = e.view(id).await.unwrap();
    v.arms.iter().map(|a| a.requests).sum()
}

#[tokio::test]
async fn a_failed_checkpoint_keeps_the_evidence_and_retries_on_the_next_pass() {
    // In checkpoint mode the in-memory evidence is the only copy: a failed checkpoint that
    // re-read the store would lose it.
    for durability in [Durability::Checkpoint, Durability::Batch] {
        let store = Arc::new(Faulty::default());
        let config = setup(store.clone()).await;
        let e = engine(&config, settings(durability, 0)).await;
        let id = e.deploy(req()).await.unwrap().id;
        let rep = e.report(outcomes(&id, 0, 300)).await.unwrap();
        assert_eq!(rep.accepted, 300, "{rep:?}");
        store.fail_checkpoints.store(1, Ordering::SeqCst);
        let calls = store.checkpoint_calls.load(Ordering::SeqCst);
        e.run_pass().await;
        assert_eq!(store.checkpoint_calls.load(Ordering::SeqCst), calls + 1, "{durability:?}");
        let v = e.view(&id).await.unwrap();
        assert_eq!(v.arms.iter().map(|a| a.requests).sum::<u64>(), 300, "{durability:?}");
        assert_eq!(counted(&e, &id).await, 300, "{durability:?}: evidence kept");
        assert_eq!(
            store.checkpoint_calls.load(Ordering::SeqCst),
            calls + 2,
            "{durability:?}: retried on the next pass"
        );
        // The retried checkpoint holds everything: a fresh engine on the store sees it.
        let e2 = engine(&config, settings(durability, 0)).await;
        assert_eq!(counted(&e2, &id).await, 300, "{durability:?}: saved");
    }
}

#[tokio::test]
async fn acknowledged_batches_are_replayed_exactly_once_after_a_crash() {
    let store = Arc::new(Faulty::default());
    let config = setup(store.clone()).await;
    // No checkpoint ever runs in the first engine: the batches are the only durable copy.
    let e1 = engine(&config, settings(Durability::Batch, u64::MAX)).await;
    let id = e1.deploy(req()).await.unwrap().id;
    for b in 0..3 {
        let rep = e1.report(outcomes(&id, b * 200, 200)).await.unwrap();
        assert_eq!(rep.accepted, 200, "{rep:?}");
    }
    // A crash: the engine is dropped without stopping.
    drop(e1);
    let e2 = engine(&config, settings(Durability::Batch, u64::MAX)).await;
    assert_eq!(counted(&e2, &id).await, 600, "replayed on start");
    let left = store.list_observation_batches(&id, 0, 100).await.unwrap();
    assert_eq!(left.len(), 3, "nothing is deleted before a checkpoint holds it");
    drop(e2);
    let e3 = engine(&config, settings(Durability::Batch, 0)).await;
    assert_eq!(counted(&e3, &id).await, 600, "replayed once more: no checkpoint held them");
    assert!(
        store.list_observation_batches(&id, 0, 100).await.unwrap().is_empty(),
        "the checkpoint deletes the batches it folded"
    );
    drop(e3);
    let e3 = engine(&config, settings(Durability::Batch, 0)).await;
    assert_eq!(counted(&e3, &id).await, 600, "counted once, from the checkpoint");

    // A store that saved the checkpoint but kept the folded batches (a crash between two
    // writes): the checkpoint's batch number makes the replay skip them.
    store.keep_folded_batches.store(true, Ordering::SeqCst);
    let rep = e3.report(outcomes(&id, 600, 200)).await.unwrap();
    assert_eq!(rep.accepted, 200);
    e3.run_pass().await;
    e3.run_pass().await;
    assert_eq!(store.list_observation_batches(&id, 0, 100).await.unwrap().len(), 1);
    drop(e3);
    let e4 = engine(&config, settings(Durability::Batch, 0)).await;
    assert_eq!(counted(&e4, &id).await, 800, "a folded batch is not folded twice");
}

#[tokio::test]
async fn a_checkpoint_that_loses_the_revision_race_re_reads_and_replays() {
    let store = Arc::new(Faulty::default());
    let config = setup(store.clone()).await;
    let e = engine(&config, settings(Durability::Batch, 0)).await;
    let id = e.deploy(req()).await.unwrap().id;
    e.report(outcomes(&id, 0, 300)).await.unwrap();
    // Another writer saves the rollout first (with the evidence it had: none of these).
    let rec = store.get_rollout(&id).await.unwrap().unwrap();
    store.save_rollout_status(&id, rec.revision, rec.status.clone()).await.unwrap();
    let calls = store.checkpoint_calls.load(Ordering::SeqCst);
    e.run_pass().await;
    assert_eq!(store.checkpoint_calls.load(Ordering::SeqCst), calls + 1);
    assert_eq!(counted(&e, &id).await, 300, "replayed after the re-read");
    let e2 = engine(&config, settings(Durability::Batch, 0)).await;
    assert_eq!(counted(&e2, &id).await, 300);
}

#[tokio::test]
async fn a_batch_the_store_cannot_persist_is_refused_whole() {
    let store = Arc::new(Faulty::default());
    let config = setup(store.clone()).await;
    let e = engine(&config, settings(Durability::Batch, 0)).await;
    let id = e.deploy(req()).await.unwrap().id;
    e.report(outcomes(&id, 0, 100)).await.unwrap();
    store.fail_appends.store(true, Ordering::SeqCst);
    let err = e.report(outcomes(&id, 100, 100)).await.unwrap_err();
    assert!(matches!(err, EngineError::NotDurable(_)), "{err}");
    assert_eq!(err.code(), "store_unavailable");
    assert!(err.to_string().contains("retry"), "{err}");
    assert_eq!(counted(&e, &id).await, 100, "nothing of the refused batch counts");
    store.fail_appends.store(false, Ordering::SeqCst);
    let rep = e.report(outcomes(&id, 100, 100)).await.unwrap();
    assert_eq!(rep.accepted, 100, "the retried batch is taken whole: {rep:?}");
    assert_eq!(counted(&e, &id).await, 200);
}

#[tokio::test]
async fn numbers_json_cannot_carry_are_refused_before_they_are_stored() {
    let store = Arc::new(Faulty::default());
    let config = setup(store.clone()).await;
    let e = engine(&config, settings(Durability::Batch, 0)).await;
    let id = e.deploy(req()).await.unwrap().id;
    let mut obs = outcomes(&id, 0, 3);
    obs[1].latency_ms = Some(f64::NAN);
    obs[2].cost = Some(f64::INFINITY);
    let rep = e.report(obs).await.unwrap();
    assert_eq!((rep.accepted, rep.rejected), (1, 2), "{rep:?}");
    assert!(rep.results[0].error.contains("latency_ms"), "{rep:?}");
    assert!(rep.results[1].error.contains("cost"), "{rep:?}");
    drop(e);
    let e2 = engine(&config, settings(Durability::Batch, 0)).await;
    assert_eq!(counted(&e2, &id).await, 1);
}

#[tokio::test]
async fn checkpoint_durability_acknowledges_before_the_evidence_is_on_disk() {
    let store = Arc::new(Faulty::default());
    let config = setup(store.clone()).await;
    let e1 = engine(&config, settings(Durability::Checkpoint, u64::MAX)).await;
    let id = e1.deploy(req()).await.unwrap().id;
    assert_eq!(e1.report(outcomes(&id, 0, 200)).await.unwrap().accepted, 200);
    assert!(store.list_observation_batches(&id, 0, 10).await.unwrap().is_empty());
    drop(e1);
    let e2 = engine(&config, settings(Durability::Checkpoint, 0)).await;
    assert_eq!(
        counted(&e2, &id).await,
        0,
        "the documented cost: outcomes since the last checkpoint are lost in a crash"
    );
}

/// An HTTP-style body of `n` outcomes of rollout `id`, request ids from `from`.
fn body(id: &str, from: usize, n: usize) -> bytes::Bytes {
    let items: Vec<Value> = (from..from + n)
        .map(|i| {
            let arm = if i % 10 == 0 { "canary" } else { "stable" };
            json!({"request_id": format!("r{i}"), "rollout_id": id, "arm": arm,
                   "outcome": "ok", "latency_ms": 200.0})
        })
        .collect();
    bytes::Bytes::from(Value::Array(items).to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_ingestion_shard_refuses_a_body_at_once_and_records_the_ones_it_took() {
    let store = Arc::new(Faulty::default());
    let config = setup(store.clone()).await;
    let s = EngineSettings { ingest_shards: 1, ingest_queue: 1, ..settings(Durability::Batch, 0) };
    let e = engine(&config, s).await;
    let id = e.deploy(req()).await.unwrap().id;
    let held = store.appends_held.lock().await;
    // The first body is taken by the shard's thread and waits in its durable append...
    let first = tokio::spawn({
        let (e, b) = (e.clone(), body(&id, 0, 100));
        async move { e.ingest_body(b, actuator_engine::BodyFormat::Json).await }
    });
    while store.append_calls.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // ...the second fills the queue...
    let second = tokio::spawn({
        let (e, b) = (e.clone(), body(&id, 100, 100));
        async move { e.ingest_body(b, actuator_engine::BodyFormat::Json).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    // ...and the third is refused at once, naming the shard and when to come back.
    let third = e.ingest_body(body(&id, 200, 100), actuator_engine::BodyFormat::Json).await;
    match third {
        Err(err @ EngineError::Overloaded { retry_after_secs: 1, .. }) => {
            assert_eq!(err.code(), "ingest_overloaded");
            assert!(err.to_string().contains("shard 0"), "{err}");
        }
        other => panic!("a full shard must refuse the body: {other:?}"),
    }
    drop(held);
    for task in [first, second] {
        let rep = task.await.unwrap().unwrap();
        assert_eq!((rep.accepted, rep.rejected), (100, 0), "{rep:?}");
    }
    assert_eq!(counted(&e, &id).await, 200, "the refused body left nothing behind");
    // A body that is not JSON is refused whole on the shard, and the shard goes on.
    let bad = e.ingest_body(bytes::Bytes::from_static(b"[{"), actuator_engine::BodyFormat::Json);
    assert_eq!(bad.await.unwrap_err().code(), "malformed_json");
    let rep = e.ingest_body(body(&id, 300, 10), actuator_engine::BodyFormat::Ndjson).await.unwrap();
    assert_eq!(rep.rejected, 1, "an array on one NDJSON line is one item, not an outcome");
}
