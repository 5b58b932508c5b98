//! The coordinator: deploy, the control loop, manual control and rollback.
//!
//! The engine is split by concern: `admission` (deploy, validation, retry), `lifecycle`
//! (start, stop, the supervised control loop), `control` (one look at a rollout and what it
//! decides), `steps` (entering, advancing and completing steps), `rollback` (fast and gradual
//! rollback), `manual` (operator actions), `persist` (commits and checkpoints), `reading`
//! (views and history), `actuator_impl` (the seed's `Actuator` trait) and `clock`.
//! `budget` holds the clocks of active time and the step and rollout budgets.

use actuator_canary::{Rollout, Share, SplitStrategy, Variant, VersionedConfig};
use actuator_config::{ApplyRequest, ConfigManager};
use actuator_core::{
    Actuator, ActuatorState, ActuatorStats, AuditDraft, Candidate, DeploymentRequest,
    DeploymentState, DeploymentStatus, DeploymentStrategy, Event, HealthCheckResult, HealthStatus,
    NewRollout, Notifier, Page, PageRequest, RollbackMode, RollbackReason, RollbackRequest,
    RollbackResult, RolloutFilter, RolloutRecord, RolloutUpdate, Severity, SlotName, Store,
    StoreError,
};
use actuator_health::{Arm, Decision, HealthConfig, PhaseConfig, RolloutHealth};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, Notify};

use crate::error::EngineError;
use crate::plan::{self, InconclusivePolicy, Step, StepKind};
use crate::status::{
    DecisionView, EngineStatus, RollbackState, RollbackStep, RollbackView, RolloutView, Transition,
    stored_rollback_window,
};

mod actuator_impl;
mod admission;
mod budget;
mod clock;
mod control;
mod feed;
mod gates;
mod lifecycle;
mod manual;
mod persist;
mod reading;
mod rollback;
mod steps;

pub use clock::{Clock, ManualClock, SystemClock};
pub use manual::ManualAction;

/// Knobs of the engine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSettings {
    /// Milliseconds between looks at every active rollout (1000).
    pub tick_ms: u64,
    /// Rollouts active at once (3).
    pub max_active_rollouts: usize,
    /// Milliseconds between checkpoints of accumulated evidence (1000). A rollout whose
    /// evidence or decision changed is saved at most this long after; all rollouts due in a
    /// pass are saved by one store transaction per 512 rollouts (group commit).
    pub checkpoint_ms: u64,
    /// Milliseconds between checkpoints of a rollout whose only change is its clocks of
    /// active time (60000): an idle rollout costs no write per tick. A crash loses at most
    /// this much of its counted active time (the clocks then run a little longer; downtime
    /// never counts either way).
    pub idle_checkpoint_ms: u64,
    /// Seconds per step of a gradual rollback (30).
    pub gradual_step_secs: u64,
    /// Seconds of post-rollback validation of the stable config (30).
    pub validation_secs: u64,
    /// Control requests needed for post-rollback validation to give a verdict (50).
    pub validation_min_samples: u64,
    /// Milliseconds a rollback step may take before it is reported as timed out (10000).
    pub rollback_timeout_ms: u64,
    /// Largest gap between two looks at a rollout that counts fully toward its step and
    /// rollout clocks, in milliseconds (10000). A longer gap (the process was frozen, the
    /// machine slept) counts as this much. An engine driven from outside
    /// ([`Engine::start_driven`]) counts every second its caller moves the clock.
    pub max_tick_gap_ms: u64,
    /// When an observation batch is acknowledged (`batch`).
    pub durability: Durability,
    /// Threads that record observation bodies taken over HTTP (2), each with its own
    /// bounded queue: resolve never waits behind an observation batch.
    pub ingest_shards: usize,
    /// Bodies that may wait in one ingestion shard's queue (8); a body that finds its shard
    /// full is refused at once (HTTP 429 with `Retry-After`). At most `ingest_shards ×
    /// ingest_queue` bodies are held, each at most the API's body limit.
    pub ingest_queue: usize,
}

/// When an observation batch is acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// After the batch is on disk: appended to the store in one transaction before the
    /// answer, folded into the evidence, and replayed on start if no checkpoint holds it yet.
    /// A crash loses no acknowledged observation.
    #[default]
    Batch,
    /// Before it is on disk: the batch is only folded into the in-memory evidence, which is
    /// saved every `checkpoint_ms`. A crash loses up to `checkpoint_ms` of acknowledged
    /// observations; ingestion costs no store write.
    Checkpoint,
}

impl EngineSettings {
    /// Checks every knob against its range (`tick_ms` 1 to 60,000; `max_active_rollouts`
    /// 1 to 1,000,000; `checkpoint_ms` and `idle_checkpoint_ms` up to 3,600,000;
    /// `gradual_step_secs` and `validation_secs` up to 86,400; `validation_min_samples` up to
    /// 10^9;
    /// `rollback_timeout_ms` 1 to 600,000; `max_tick_gap_ms` 1 to 86,400,000; `ingest_shards`
    /// 1 to 64; `ingest_queue` 1 to 1,024), naming the setting and its range when one is
    /// outside.
    ///
    /// # Errors
    /// [`EngineError::Invalid`] for the first setting out of its range.
    pub fn validate(&self) -> Result<(), EngineError> {
        let checks: [(&str, u64, u64, u64); 11] = [
            ("engine.tick_ms", self.tick_ms, 1, 60_000),
            ("engine.max_active_rollouts", self.max_active_rollouts as u64, 1, 1_000_000),
            ("engine.checkpoint_ms", self.checkpoint_ms, 0, 3_600_000),
            ("engine.idle_checkpoint_ms", self.idle_checkpoint_ms, 0, 3_600_000),
            ("engine.gradual_step_secs", self.gradual_step_secs, 0, 86_400),
            ("engine.validation_secs", self.validation_secs, 0, 86_400),
            ("engine.validation_min_samples", self.validation_min_samples, 0, 1_000_000_000),
            ("engine.rollback_timeout_ms", self.rollback_timeout_ms, 1, 600_000),
            ("engine.max_tick_gap_ms", self.max_tick_gap_ms, 1, 86_400_000),
            ("engine.ingest_shards", self.ingest_shards as u64, 1, 64),
            ("engine.ingest_queue", self.ingest_queue as u64, 1, 1_024),
        ];
        for (name, v, lo, hi) in checks {
            if !(lo..=hi).contains(&v) {
                return Err(EngineError::Invalid(format!(
                    "{name} must be between {lo} and {hi}, got {v}"
                )));
            }
        }
        Ok(())
    }
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            tick_ms: 1000,
            max_active_rollouts: 3,
            checkpoint_ms: 1000,
            idle_checkpoint_ms: 60_000,
            gradual_step_secs: 30,
            validation_secs: 30,
            validation_min_samples: 50,
            rollback_timeout_ms: 10_000,
            max_tick_gap_ms: 10_000,
            durability: Durability::Batch,
            ingest_shards: 2,
            ingest_queue: 8,
        }
    }
}

/// Whoever serves traffic decisions: told to re-read a slot after its rollout changed.
#[async_trait]
pub trait RouteSink: Send + Sync + 'static {
    /// Rebuilds the route of `slot` from the store.
    async fn refresh_slot(&self, slot: &SlotName);

    /// Rebuilds the routes of several slots (after a start resumed their rollouts). The
    /// default refreshes them one by one; a sink that can rebuild everything in one pass may
    /// do that instead.
    async fn refresh_slots(&self, slots: &[SlotName]) {
        for slot in slots {
            self.refresh_slot(slot).await;
        }
    }

    /// A start resumed the rollouts of `slots` from the store (writing nothing: their routes
    /// are the stored ones). The default refreshes them ([`RouteSink::refresh_slots`]); a
    /// sink whose table was already built from the same store may skip it.
    async fn resumed(&self, slots: &[SlotName]) {
        self.refresh_slots(slots).await;
    }
}

/// The in-memory side of an active rollout. Its mutex is per rollout: observations and
/// looks of different rollouts never wait for each other.
pub(crate) struct Runtime {
    /// The rollout's row as last read from or written to the store, without its `status` and
    /// `request` documents (both `Null`): the typed `st` and `req` are the only copies kept in
    /// memory (see [`Runtime::set_record`]).
    pub(crate) rec: RolloutRecord,
    /// The highest durable observation batch folded into the status last read from or
    /// written to the store.
    pub(crate) stored_seq: u64,
    pub(crate) st: EngineStatus,
    pub(crate) req: DeploymentRequest,
    /// The evidence or the decision changed since the last save: checkpointed within
    /// `checkpoint_ms`.
    pub(crate) dirty: bool,
    /// Only the clocks of active time moved since the last save: checkpointed within
    /// `idle_checkpoint_ms`, so an idle rollout costs no write per tick.
    pub(crate) clock_moved: bool,
    /// New evidence was folded in, or the rollout changed state, since its last look: the
    /// next pass looks at it.
    pub(crate) fresh: bool,
    /// When the analysis last looked at the rollout, and at which step and step active time.
    pub(crate) looked: Option<(DateTime<Utc>, usize, u64)>,
    pub(crate) last_save: DateTime<Utc>,
    /// When the rollout's clocks were last advanced; `None` after a load, so downtime never
    /// counts.
    pub(crate) anchor: Option<DateTime<Utc>>,
    /// The id of the gate wait whose call is in flight (never persisted: a restart asks the
    /// awaited gate again).
    pub(crate) gate_in_flight: Option<u64>,
    /// Audit metadata the next commit adds to its entry (a gate's answer, audited in the
    /// write of the transition it allows).
    pub(crate) pending_audit: Option<Value>,
}

impl Runtime {
    pub(crate) fn new(
        mut rec: RolloutRecord,
        st: EngineStatus,
        req: DeploymentRequest,
        now: DateTime<Utc>,
    ) -> Self {
        let stored_seq = persist::stored_seq(&rec.status);
        rec.status = Value::Null;
        rec.request = Value::Null;
        Self {
            rec,
            stored_seq,
            st,
            req,
            dirty: false,
            clock_moved: false,
            fresh: true,
            looked: None,
            last_save: now,
            anchor: None,
            gate_in_flight: None,
            pending_audit: None,
        }
    }

    /// Keeps `rec` as the rollout's row, dropping its `status` and `request` documents: the
    /// typed state holds the same facts, and a parsed copy of a status is several times its
    /// encoded size.
    pub(crate) fn set_record(&mut self, mut rec: RolloutRecord) {
        self.stored_seq = persist::stored_seq(&rec.status);
        rec.status = Value::Null;
        rec.request = Value::Null;
        self.rec = rec;
    }

    /// The rollout as the API shows it.
    pub(crate) fn view(&self) -> RolloutView {
        RolloutView::new(&self.rec, &self.st, self.req.canary.rollback_window_secs)
    }

    /// Whether anything of this rollout waits to be saved.
    pub(crate) fn unsaved(&self) -> bool {
        self.dirty || self.clock_moved
    }

    /// Everything in memory is now in the store.
    pub(crate) fn mark_saved(&mut self, now: DateTime<Utc>) {
        self.dirty = false;
        self.clock_moved = false;
        self.last_save = now;
    }
}

pub(crate) type Shared = Arc<Mutex<Runtime>>;

/// One live rollout in the engine's map: its slot, its runtime, and when the control loop
/// should next look at it.
pub(crate) struct Entry {
    slot: SlotName,
    rt: Shared,
    /// Milliseconds since the epoch (engine clock) at which the loop next takes this rollout:
    /// `i64::MIN` when something changed and the next pass must. Written by the loop while
    /// it holds the rollout's lock, and lowered by whoever changes the rollout while holding
    /// it, so a change is never overwritten by the schedule of an earlier look.
    due_ms: AtomicI64,
}

/// The rollouts this engine drives, by id and by slot. The slot index answers "does a live
/// rollout hold this slot?" without locking any rollout (the store's transaction is what
/// enforces one rollout per slot; the index only refuses early).
#[derive(Default)]
pub(crate) struct Runtimes {
    by_id: HashMap<String, Entry>,
    by_slot: HashMap<SlotName, String>,
}

impl Runtimes {
    pub(crate) fn get(&self, id: &str) -> Option<Shared> {
        self.by_id.get(id).map(|e| e.rt.clone())
    }

    pub(crate) fn contains(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// The id of the live rollout that holds `slot`, if one does.
    pub(crate) fn holder(&self, slot: &SlotName) -> Option<&str> {
        self.by_slot.get(slot).map(String::as_str)
    }

    /// Adds a rollout, due at once.
    pub(crate) fn insert(&mut self, id: String, slot: SlotName, rt: Shared) {
        self.by_slot.insert(slot.clone(), id.clone());
        self.by_id.insert(id, Entry { slot, rt, due_ms: AtomicI64::new(i64::MIN) });
    }

    /// Lets `id` go, and its slot with it when the slot still names it.
    pub(crate) fn remove(&mut self, id: &str) -> Option<Shared> {
        let e = self.by_id.remove(id)?;
        if self.by_slot.get(&e.slot).is_some_and(|holder| holder == id) {
            self.by_slot.remove(&e.slot);
        }
        Some(e.rt)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &Shared> {
        self.by_id.values().map(|e| &e.rt)
    }

    /// The rollouts due at `now_ms`: one read of each entry's deadline, no rollout locked.
    pub(crate) fn due(&self, now_ms: i64) -> Vec<Shared> {
        self.by_id
            .values()
            .filter(|e| e.due_ms.load(Ordering::Acquire) <= now_ms)
            .map(|e| e.rt.clone())
            .collect()
    }

    /// Sets when the loop next takes `id` (the loop, holding its lock, after a look).
    pub(crate) fn schedule(&self, id: &str, at_ms: i64) {
        if let Some(e) = self.by_id.get(id) {
            e.due_ms.store(at_ms, Ordering::Release);
        }
    }

    /// Makes `id` due on the next pass (whoever changed it, holding its lock).
    pub(crate) fn wake(&self, id: &str) {
        if let Some(e) = self.by_id.get(id) {
            e.due_ms.store(i64::MIN, Ordering::Release);
        }
    }
}

pub(crate) struct Inner {
    store: Arc<dyn Store>,
    config: ConfigManager,
    routes: Arc<dyn RouteSink>,
    notifiers: Vec<Arc<dyn Notifier>>,
    settings: EngineSettings,
    runtimes: RwLock<Runtimes>,
    wake: Notify,
    stop: Notify,
    state: StdMutex<ActuatorState>,
    stats: StdMutex<ActuatorStats>,
    loop_task: StdMutex<Option<tokio::task::JoinHandle<()>>>,
    clock: Arc<dyn Clock>,
    /// The control loop's task is running (or the engine is driven from outside).
    loop_alive: AtomicBool,
    /// A stop was asked for: the supervisor does not restart the loop.
    stopping: AtomicBool,
    /// How many times the supervisor restarted the loop.
    loop_restarts: AtomicU64,
    /// Driven from outside ([`Engine::start_driven`]): the caller moves the clock, and every
    /// moved second between two passes is active time.
    driven: AtomicBool,
    /// Per active rollout: how far its evidence has folded in the durable batches.
    cursors: StdMutex<HashMap<String, persist::Cursor>>,
    /// The ingestion shards, started by the first body that needs them.
    ingest: std::sync::OnceLock<crate::ingest_queue::IngestQueue>,
    /// The metric sources and the pollers of rollouts fed by them.
    feeds: feed::Feeds,
}

/// The rollout coordinator. Cheap to clone; all clones share one engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("settings", &self.inner.settings).finish()
    }
}

fn lock<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn share(bp: u16) -> Share {
    Share::from_basis_points(bp.min(10_000)).unwrap_or(Share::ZERO)
}

impl Engine {
    /// An engine over the store (through the config manager), telling `routes` of every
    /// change and `notifiers` of every event worth telling.
    pub fn new(
        config: ConfigManager,
        routes: Arc<dyn RouteSink>,
        notifiers: Vec<Arc<dyn Notifier>>,
        settings: EngineSettings,
    ) -> Self {
        Self::with_clock(config, routes, notifiers, settings, Arc::new(SystemClock))
    }

    /// An engine that reads the time from `clock` (a simulation drives it in simulated time).
    pub fn with_clock(
        config: ConfigManager,
        routes: Arc<dyn RouteSink>,
        notifiers: Vec<Arc<dyn Notifier>>,
        settings: EngineSettings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store: config.store().clone(),
                config,
                routes,
                notifiers,
                settings,
                runtimes: RwLock::default(),
                wake: Notify::new(),
                stop: Notify::new(),
                state: StdMutex::new(ActuatorState::Stopped),
                stats: StdMutex::default(),
                loop_task: StdMutex::new(None),
                clock,
                loop_alive: AtomicBool::new(false),
                stopping: AtomicBool::new(false),
                loop_restarts: AtomicU64::new(0),
                driven: AtomicBool::new(false),
                cursors: StdMutex::default(),
                ingest: std::sync::OnceLock::new(),
                feeds: feed::Feeds::default(),
            }),
        }
    }

    /// An engine handle from its shared state (an ingestion shard's weak handle, upgraded).
    pub(crate) fn from_inner(inner: Arc<Inner>) -> Self {
        Self { inner }
    }

    /// Records an observation body taken over HTTP on an ingestion shard's thread (see
    /// `engine.ingest_shards`): parsed straight into typed observations, made durable and
    /// folded there, while the caller's task only waits for the answer.
    ///
    /// # Errors
    /// [`EngineError::Overloaded`] when the body's shard queue is full (nothing was read;
    /// send it again after the delay), [`EngineError::Body`] when the body as a whole is
    /// unusable, otherwise as [`Engine::ingest`].
    pub async fn ingest_body(
        &self,
        body: bytes::Bytes,
        format: crate::ingest::BodyFormat,
    ) -> Result<crate::ingest::IngestReport, EngineError> {
        let s = &self.inner.settings;
        let queue = self.inner.ingest.get_or_init(|| {
            crate::ingest_queue::IngestQueue::start(&self.inner, s.ingest_shards, s.ingest_queue)
        });
        queue.submit(self, body, format).await
    }

    /// The time on the engine's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    /// Whether the control loop runs: its task is alive (or the engine is driven from outside
    /// with [`Engine::run_pass`]). `/readyz` fails when it is not.
    pub fn loop_alive(&self) -> bool {
        self.inner.loop_alive.load(Ordering::SeqCst)
    }

    /// How many times the supervisor restarted a control loop that ended unexpectedly.
    pub fn loop_restarts(&self) -> u64 {
        self.inner.loop_restarts.load(Ordering::SeqCst)
    }

    /// The settings.
    pub fn settings(&self) -> &EngineSettings {
        &self.inner.settings
    }

    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub(crate) fn runtime(&self, id: &str) -> Option<Shared> {
        self.inner.runtimes.read().unwrap_or_else(|p| p.into_inner()).get(id)
    }

    /// The id of the live rollout that holds `slot`, read from the index (no rollout locked).
    pub(super) fn slot_holder(&self, slot: &SlotName) -> Option<String> {
        self.inner
            .runtimes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .holder(slot)
            .map(str::to_owned)
    }

    pub(super) fn active_count(&self) -> usize {
        self.inner.runtimes.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Makes rollout `id` due on the next pass of the control loop: called by whoever changed
    /// it (a control, new evidence), while holding its lock.
    pub(crate) fn wake_rollout(&self, id: &str) {
        self.inner.runtimes.read().unwrap_or_else(|p| p.into_inner()).wake(id);
    }

    /// Wakes the control loop (after a batch of observations).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Tells every notifier about `rt`: the event's details carry the rollout's context
    /// ([`event_context`]) with `details`' own fields on top.
    pub(super) fn notify(
        &self,
        rt: &Runtime,
        kind: &str,
        severity: Severity,
        actor: &str,
        summary: String,
        details: Value,
    ) {
        if self.inner.notifiers.is_empty() {
            return;
        }
        let event = Event {
            kind: kind.into(),
            severity,
            at: self.now(),
            actor: actor.into(),
            target: rt.rec.id.clone(),
            summary,
            details: event_context(rt, details),
        };
        for n in self.inner.notifiers.clone() {
            let e = event.clone();
            // Delivery runs on its own task: a slow or failing notifier never blocks a rollout.
            tokio::spawn(async move {
                if let Err(err) = n.notify(&e).await {
                    tracing::warn!(error = %err, kind = %e.kind, "notifier failed");
                }
            });
        }
    }
}

/// The details every rollout event carries: `rollout_id`, `slot`, `strategy`, `state`,
/// `stable_version`, `candidate_version`, `step`, `share_percent` and the last `decision`
/// (`kind`, `rule`, `reasons`, or `null`), with the fields of `extra` (an object) on top.
fn event_context(rt: &Runtime, extra: Value) -> Value {
    let decision = rt
        .st
        .last_decision
        .as_ref()
        .map(|d| serde_json::json!({"kind": d.kind, "rule": d.rule, "reasons": d.reasons}));
    let mut ctx = serde_json::json!({
        "rollout_id": rt.rec.id,
        "slot": rt.rec.slot.as_str(),
        "strategy": rt.rec.strategy,
        "state": rt.rec.state,
        "stable_version": rt.st.stable_version,
        "candidate_version": rt.st.candidate_version,
        "step": rt.st.step,
        "share_percent": rt.st.share_percent(),
        "decision": decision,
    });
    if let (Some(ctx), Value::Object(extra)) = (ctx.as_object_mut(), extra) {
        ctx.extend(extra);
    }
    ctx
}
