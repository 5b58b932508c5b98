//! The coordinator: deploy, the control loop, manual control and rollback.

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
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, Notify};

use crate::error::EngineError;
use crate::plan::{self, InconclusivePolicy, Step, StepKind};
use crate::status::{
    DecisionView, EngineStatus, RollbackState, RollbackStep, RollbackView, RolloutView, Transition,
};

/// Knobs of the engine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSettings {
    /// Milliseconds between looks at every active rollout (1000).
    pub tick_ms: u64,
    /// Rollouts active at once (3).
    pub max_active_rollouts: usize,
    /// Milliseconds between checkpoints of accumulated evidence (1000).
    pub checkpoint_ms: u64,
    /// Seconds per step of a gradual rollback (30).
    pub gradual_step_secs: u64,
    /// Seconds of post-rollback validation of the stable config (30).
    pub validation_secs: u64,
    /// Control requests needed for post-rollback validation to give a verdict (50).
    pub validation_min_samples: u64,
    /// Milliseconds a rollback step may take before it is reported as timed out (10000).
    pub rollback_timeout_ms: u64,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            tick_ms: 1000,
            max_active_rollouts: 3,
            checkpoint_ms: 1000,
            gradual_step_secs: 30,
            validation_secs: 30,
            validation_min_samples: 50,
            rollback_timeout_ms: 10_000,
        }
    }
}

/// Whoever serves traffic decisions: told to re-read a slot after its rollout changed.
#[async_trait]
pub trait RouteSink: Send + Sync + 'static {
    /// Rebuilds the route of `slot` from the store.
    async fn refresh_slot(&self, slot: &SlotName);
}

/// An operator's action on a rollout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ManualAction {
    /// Hold traffic as it is.
    Pause,
    /// Continue after a pause.
    Resume,
    /// Go to the next step now, or (`full`) straight to completion.
    Promote {
        /// Complete the rollout at once.
        full: bool,
    },
    /// Leave the current step without its analysis.
    Skip,
    /// Stop and send all traffic back to stable.
    Abort,
    /// Start an aborted, rolled-back or failed rollout again.
    Retry,
    /// Roll back with a reason.
    Rollback {
        /// Why.
        reason: String,
        /// Step the share down instead of one switch.
        gradual: bool,
    },
}

impl ManualAction {
    fn name(&self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Promote { .. } => "promote",
            Self::Skip => "skip",
            Self::Abort => "abort",
            Self::Retry => "retry",
            Self::Rollback { .. } => "rollback",
        }
    }
}

/// The in-memory side of an active rollout. Its mutex is per rollout: observations and
/// looks of different rollouts never wait for each other.
pub(crate) struct Runtime {
    pub(crate) rec: RolloutRecord,
    pub(crate) st: EngineStatus,
    pub(crate) req: DeploymentRequest,
    pub(crate) dirty: bool,
    pub(crate) last_save: Instant,
}

pub(crate) type Shared = Arc<Mutex<Runtime>>;

struct Inner {
    store: Arc<dyn Store>,
    config: ConfigManager,
    routes: Arc<dyn RouteSink>,
    notifiers: Vec<Arc<dyn Notifier>>,
    settings: EngineSettings,
    runtimes: RwLock<HashMap<String, Shared>>,
    wake: Notify,
    stop: Notify,
    state: StdMutex<ActuatorState>,
    stats: StdMutex<ActuatorStats>,
    loop_task: StdMutex<Option<tokio::task::JoinHandle<()>>>,
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

fn health_config(req: &DeploymentRequest, timeout_ms: f64) -> HealthConfig {
    let c = &req.success_criteria;
    let mut h = HealthConfig {
        alpha_rollback_total: c.alpha,
        timeout_ms: Some(timeout_ms),
        ..HealthConfig::default()
    };
    let g = &mut h.guard_rails;
    g.min_success_rate = c.min_success_rate;
    g.max_error_rate = c.max_error_rate;
    g.max_p95_ms = c.max_p95_latency_ms;
    g.max_p99_ms = c.max_p99_latency_ms;
    g.max_cost_increase = c.max_cost_increase;
    g.min_quality = c.min_quality;
    g.min_sample_size = c.min_sample_size;
    h
}

fn phase_config(step: &Step, st: &EngineStatus) -> PhaseConfig {
    let frac = f64::from(step.share_bp) / 10_000.0;
    let base = match step.kind {
        StepKind::Canary if step.share_bp >= 10_000 => PhaseConfig::rolling(1.0),
        StepKind::Canary => PhaseConfig::canary(frac),
        StepKind::Shadow => PhaseConfig::shadow(),
        StepKind::AbTest => {
            let names = ab_arm_names(st);
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            PhaseConfig::ab(1.0 / (names.len() as f64 + 1.0), &refs)
        }
        StepKind::Preview | StepKind::Switch | StepKind::Watch | StepKind::Rolling => {
            PhaseConfig::rolling(if frac > 0.0 { frac } else { 1.0 })
        }
    };
    base.min(step.min_samples, i64::try_from(step.min_secs).unwrap_or(i64::MAX))
        .max(step.max_samples, step.max_secs.and_then(|s| i64::try_from(s).ok()))
}

/// Names of the A/B arms other than control: `b` for the candidate, then the extra arms.
fn ab_arm_names(st: &EngineStatus) -> Vec<String> {
    std::iter::once("b".to_owned()).chain(st.settings.arms.iter().map(|a| a.name.clone())).collect()
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
            }),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &EngineSettings {
        &self.inner.settings
    }

    fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub(crate) fn runtime(&self, id: &str) -> Option<Shared> {
        self.inner.runtimes.read().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }

    fn active_count(&self) -> usize {
        self.inner.runtimes.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Wakes the control loop (after a batch of observations).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    fn notify(
        &self,
        kind: &str,
        severity: Severity,
        actor: &str,
        target: &str,
        summary: String,
        details: Value,
    ) {
        if self.inner.notifiers.is_empty() {
            return;
        }
        let event = Event {
            kind: kind.into(),
            severity,
            at: Utc::now(),
            actor: actor.into(),
            target: target.into(),
            summary,
            details,
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

    // ---------------------------------------------------------------- persistence

    /// Persists `rt` in state `to` (with its audit entry), then refreshes the slot's route.
    #[allow(clippy::too_many_arguments)]
    async fn commit(
        &self,
        rt: &mut Runtime,
        to: DeploymentState,
        reason: &str,
        action: &str,
        actor: &str,
        activate: Option<u64>,
        metadata: Value,
    ) -> Result<(), EngineError> {
        let from = rt.rec.state;
        if from != to {
            rt.st.push_transition(Transition {
                from,
                to,
                at: Utc::now(),
                reason: reason.to_owned(),
            });
        }
        let status = serde_json::to_value(&rt.st)
            .map_err(|e| EngineError::Invalid(format!("status: {e}")))?;
        let mut meta = json!({"slot": rt.rec.slot, "from": from, "to": to, "phase": rt.st.step, "share_percent": rt.st.share_percent(), "reason": reason});
        if let (Value::Object(m), Value::Object(extra)) = (&mut meta, metadata) {
            m.extend(extra);
        }
        let update = RolloutUpdate {
            expected_revision: rt.rec.revision,
            state: to,
            status,
            activate_version: activate,
        };
        let audit = AuditDraft::success(actor, action, rt.rec.id.clone()).with_metadata(meta);
        match self.store().update_rollout(&rt.rec.id, update, audit).await {
            Ok(rec) => {
                rt.rec = rec;
                rt.dirty = false;
                rt.last_save = Instant::now();
            }
            Err(e) => {
                self.reload(rt).await;
                return Err(e.into());
            }
        }
        self.inner.routes.refresh_slot(&rt.rec.slot).await;
        Ok(())
    }

    /// Re-reads a rollout from the store after a failed write (another writer won).
    async fn reload(&self, rt: &mut Runtime) {
        if let Ok(Some(rec)) = self.store().get_rollout(&rt.rec.id).await
            && let Ok(st) = serde_json::from_value::<EngineStatus>(rec.status.clone())
        {
            rt.st = st;
            rt.rec = rec;
        }
    }

    async fn checkpoint(&self, rt: &mut Runtime) {
        let Ok(status) = serde_json::to_value(&rt.st) else { return };
        match self.store().save_rollout_status(&rt.rec.id, rt.rec.revision, status).await {
            Ok(rec) => {
                rt.rec = rec;
                rt.dirty = false;
                rt.last_save = Instant::now();
            }
            Err(e) => {
                tracing::warn!(rollout = %rt.rec.id, error = %e, "checkpoint failed; re-reading the rollout");
                self.reload(rt).await;
            }
        }
    }

    // ---------------------------------------------------------------- lifecycle

    /// Loads active rollouts from the store, refreshes their routes and starts the loop.
    pub async fn start(&self) -> Result<(), EngineError> {
        *lock(&self.inner.state) = ActuatorState::Starting;
        let mut cursor = None;
        loop {
            let page = self
                .store()
                .list_rollouts(
                    RolloutFilter { active_only: true, slot: None },
                    PageRequest { limit: PageRequest::MAX_LIMIT, cursor },
                )
                .await?;
            for rec in &page.items {
                if rec.state.is_active() {
                    match (
                        serde_json::from_value::<EngineStatus>(rec.status.clone()),
                        serde_json::from_value::<DeploymentRequest>(rec.request.clone()),
                    ) {
                        (Ok(st), Ok(req)) => {
                            let rt = Runtime {
                                rec: rec.clone(),
                                st,
                                req,
                                dirty: false,
                                last_save: Instant::now(),
                            };
                            self.inner
                                .runtimes
                                .write()
                                .unwrap_or_else(|p| p.into_inner())
                                .insert(rec.id.clone(), Arc::new(Mutex::new(rt)));
                            self.inner.routes.refresh_slot(&rec.slot).await;
                            tracing::info!(rollout = %rec.id, state = %rec.state, "resumed rollout");
                        }
                        (Err(e), _) | (_, Err(e)) => {
                            tracing::error!(rollout = %rec.id, error = %e, "cannot resume rollout: unreadable state")
                        }
                    }
                }
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let stats = self.recount().await?;
        *lock(&self.inner.stats) = stats;
        let me = self.clone();
        let handle = tokio::spawn(async move { me.run_loop().await });
        *lock(&self.inner.loop_task) = Some(handle);
        *lock(&self.inner.state) = ActuatorState::Running;
        Ok(())
    }

    /// Stops the loop after checkpointing every active rollout.
    pub async fn stop(&self) -> Result<(), EngineError> {
        *lock(&self.inner.state) = ActuatorState::Stopping;
        self.inner.stop.notify_one();
        let handle = lock(&self.inner.loop_task).take();
        if let Some(h) = handle {
            let _ = h.await;
        }
        for rt in self.all_runtimes() {
            let mut g = rt.lock().await;
            if g.dirty {
                self.checkpoint(&mut g).await;
            }
        }
        *lock(&self.inner.state) = ActuatorState::Stopped;
        Ok(())
    }

    async fn recount(&self) -> Result<ActuatorStats, EngineError> {
        let mut stats = ActuatorStats::default();
        let mut cursor = None;
        loop {
            let page = self
                .store()
                .list_rollouts(
                    RolloutFilter::default(),
                    PageRequest { limit: PageRequest::MAX_LIMIT, cursor },
                )
                .await?;
            for rec in &page.items {
                count(&mut stats, rec);
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(stats),
            }
        }
    }

    fn all_runtimes(&self) -> Vec<Shared> {
        self.inner.runtimes.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    async fn run_loop(&self) {
        let tick = Duration::from_millis(self.inner.settings.tick_ms.max(10));
        loop {
            tokio::select! {
                () = tokio::time::sleep(tick) => {}
                () = self.inner.wake.notified() => {}
                () = self.inner.stop.notified() => return,
            }
            for rt in self.all_runtimes() {
                let mut g = rt.lock().await;
                if let Err(e) = self.tick(&mut g).await {
                    tracing::warn!(rollout = %g.rec.id, error = %e, "control loop step failed");
                    g.st.push_error(e.to_string());
                }
                let done = g.rec.state.is_terminal();
                let id = g.rec.id.clone();
                drop(g);
                if done {
                    self.inner.runtimes.write().unwrap_or_else(|p| p.into_inner()).remove(&id);
                }
            }
        }
    }

    // ---------------------------------------------------------------- deploy

    /// Validates and starts a rollout; answers once it serves its first step.
    pub async fn deploy(&self, req: DeploymentRequest) -> Result<RolloutView, EngineError> {
        if *lock(&self.inner.state) != ActuatorState::Running {
            return Err(EngineError::NotRunning);
        }
        req.validate()?;
        let settings = plan::settings(&req)?;
        let steps = plan::steps(&req, &settings)?;
        if let Some(split) = &req.canary.traffic_split {
            serde_json::from_value::<SplitStrategy>(split.clone())
                .map_err(|e| EngineError::Invalid(format!("canary.traffic_split: {e}")))?;
        }
        let slot = self.inner.config.get_slot(&req.slot).await?;
        let Some(stable) = slot.active_version else {
            return Err(EngineError::Invalid(format!(
                "slot {} has no active version to roll out from; apply a first config directly",
                req.slot
            )));
        };
        let active = self.active_count();
        if active >= self.inner.settings.max_active_rollouts {
            return Err(EngineError::Limit {
                active,
                limit: self.inner.settings.max_active_rollouts,
            });
        }
        for rt in self.all_runtimes() {
            let g = rt.lock().await;
            if g.rec.slot == req.slot {
                return Err(EngineError::SlotBusy {
                    slot: req.slot.to_string(),
                    rollout: g.rec.id.clone(),
                });
            }
        }
        for arm in &settings.arms {
            self.inner.config.get_version(&req.slot, arm.version).await?;
        }
        let id = req.id.clone().unwrap_or_else(|| format!("ro-{}", uuid::Uuid::now_v7().simple()));
        let candidate = match &req.candidate {
            Candidate::Version(v) => self.inner.config.get_version(&req.slot, *v).await?.version,
            Candidate::Document(doc) => {
                self.inner
                    .config
                    .apply(ApplyRequest {
                        slot: req.slot.clone(),
                        document: doc.clone(),
                        actor: req.actor.clone(),
                        message: format!("candidate of rollout {id}"),
                        dry_run: false,
                        activate: false,
                        expected_latest: None,
                    })
                    .await?
                    .version_number
            }
        };
        if candidate == stable && req.strategy != DeploymentStrategy::AbTest {
            return Err(EngineError::Invalid(format!(
                "version {candidate} is already the active version of slot {}",
                req.slot
            )));
        }
        let snapshot = self
            .inner
            .config
            .snapshot(&req.slot, &format!("before rollout {id}"), &req.actor)
            .await?;
        let now = Utc::now();
        let st = EngineStatus {
            started_at: now,
            stable_version: Some(stable),
            snapshot_id: Some(snapshot.id),
            candidate_version: candidate,
            settings,
            steps,
            step: 0,
            step_started_at: now,
            route: None,
            health: None,
            last_decision: None,
            paused_reason: None,
            awaiting_promotion: false,
            failing_looks: 0,
            transitions: Default::default(),
            rollback: None,
            errors: Default::default(),
            outcome: None,
        };
        let rec = self
            .store()
            .create_rollout(
                NewRollout {
                    id: id.clone(),
                    slot: req.slot.clone(),
                    strategy: req.strategy,
                    state: DeploymentState::Pending,
                    request: serde_json::to_value(&req).unwrap_or(Value::Null),
                    status: serde_json::to_value(&st).unwrap_or(Value::Null),
                },
                AuditDraft::success(&req.actor, "rollout.start", &id).with_metadata(json!({
                    "slot": req.slot, "strategy": req.strategy, "candidate_version": candidate, "stable_version": stable,
                    "description": req.description,
                })),
            )
            .await
            .map_err(|e| match e {
                StoreError::AlreadyExists { what } => EngineError::SlotBusy { slot: req.slot.to_string(), rollout: what },
                other => other.into(),
            })?;
        {
            let mut s = lock(&self.inner.stats);
            s.total_deployments += 1;
            s.active_deployments += 1;
            *s.by_strategy.entry(req.strategy).or_default() += 1;
        }
        let actor = req.actor.clone();
        let rt: Shared =
            Arc::new(Mutex::new(Runtime { rec, st, req, dirty: false, last_save: Instant::now() }));
        self.inner
            .runtimes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), rt.clone());
        let mut g = rt.lock().await;
        self.begin(&mut g, &actor).await?;
        self.notify(
            "rollout.start",
            Severity::Info,
            &actor,
            &id,
            format!("rollout {id} of {} started ({})", g.rec.slot, g.rec.strategy),
            json!({"candidate_version": candidate}),
        );
        Ok(RolloutView::new(&g.rec, &g.st))
    }

    /// Pending → Validating → first step.
    async fn begin(&self, rt: &mut Runtime, actor: &str) -> Result<(), EngineError> {
        self.commit(
            rt,
            DeploymentState::Validating,
            "validating the candidate",
            "rollout.validate",
            actor,
            None,
            Value::Null,
        )
        .await?;
        let now = Utc::now();
        let candidate =
            self.inner.config.get_version(&rt.rec.slot, rt.st.candidate_version).await?;
        let problem = match self.inner.config.validate(&rt.rec.slot, &candidate.document).await {
            Err(e) => Some(e.to_string()),
            Ok(()) => {
                let first_step = &rt.st.steps[0];
                let mode = if first_step.kind == StepKind::Canary && first_step.share_bp >= 10_000 {
                    actuator_health::AnalysisMode::NoControl
                } else {
                    plan::analysis_mode(rt.rec.strategy, &rt.st.settings)
                };
                let first = phase_config(first_step, &rt.st);
                match RolloutHealth::new(
                    rt.rec.id.clone(),
                    rt.rec.slot.to_string(),
                    mode,
                    health_config(&rt.req, rt.st.settings.request_timeout_ms),
                    first,
                    now,
                ) {
                    Ok(h) => {
                        rt.st.health = Some(h);
                        None
                    }
                    Err(e) => Some(e.to_string()),
                }
            }
        };
        let problem = match problem {
            Some(p) => Some(p),
            None => match self.route_for(rt, 0).await {
                Ok(r) => r.validate().err().map(|e| format!("traffic split: {e}")),
                Err(e) => Some(e.to_string()),
            },
        };
        if let Some(p) = problem {
            rt.st.push_error(p.clone());
            rt.st.outcome = Some(format!("validation failed: {p}"));
            self.commit(rt, DeploymentState::Failed, &p, "rollout.fail", actor, None, Value::Null)
                .await?;
            self.finished(false);
            return Err(EngineError::Invalid(p));
        }
        self.enter_step(rt, 0, now, "validated", "rollout.phase", actor).await
    }

    /// Enters step `i`: its traffic split is committed (rolling out), then monitored.
    async fn enter_step(
        &self,
        rt: &mut Runtime,
        i: usize,
        now: DateTime<Utc>,
        reason: &str,
        action: &str,
        actor: &str,
    ) -> Result<(), EngineError> {
        rt.st.step = i;
        rt.st.step_started_at = now;
        let route = self.route_for(rt, i).await?;
        route
            .validate()
            .map_err(|e| EngineError::Invalid(format!("traffic split of step {i}: {e}")))?;
        rt.st.route = Some(route);
        let entering = format!("{reason}; entering step {i}");
        self.commit(rt, DeploymentState::RollingOut, &entering, action, actor, None, Value::Null)
            .await?;
        let monitoring = format!("monitoring step {i}");
        self.commit(
            rt,
            DeploymentState::Monitoring,
            &monitoring,
            "rollout.monitor",
            actor,
            None,
            Value::Null,
        )
        .await
    }

    async fn versioned(
        &self,
        slot: &SlotName,
        version: u64,
    ) -> Result<VersionedConfig, EngineError> {
        let v = self.inner.config.get_version(slot, version).await?;
        Ok(VersionedConfig::new(v.version, v.document))
    }

    /// The traffic split of step `i`.
    async fn route_for(&self, rt: &Runtime, i: usize) -> Result<Rollout, EngineError> {
        let step = &rt.st.steps[i];
        let id = rt.rec.id.as_str();
        let cand = self.versioned(&rt.rec.slot, rt.st.candidate_version).await?;
        let phase = u32::try_from(i).unwrap_or(u32::MAX);
        let mut r = match step.kind {
            StepKind::Shadow => Rollout::shadow(id, cand),
            StepKind::AbTest => {
                let stable = rt.st.stable_version.unwrap_or(rt.st.candidate_version);
                let mut configs = vec![
                    ("control".to_owned(), self.versioned(&rt.rec.slot, stable).await?),
                    ("b".to_owned(), cand),
                ];
                for a in &rt.st.settings.arms {
                    configs.push((a.name.clone(), self.versioned(&rt.rec.slot, a.version).await?));
                }
                let n = configs.len() as u16;
                let arms = configs
                    .into_iter()
                    .enumerate()
                    .map(|(k, (name, cfg))| {
                        let w = 10_000 / n + u16::from((k as u16) < 10_000 % n);
                        actuator_canary::Arm::new(&name, share(w), cfg)
                    })
                    .collect();
                Rollout::ab_test(id, arms)
            }
            _ => Rollout::canary(id, cand),
        };
        r = r.with_share(share(step.share_bp)).with_phase(phase);
        if let Some(split) = &rt.req.canary.traffic_split
            && let Ok(s) = serde_json::from_value::<SplitStrategy>(split.clone())
        {
            r = r.with_strategy(s);
        }
        r = r.with_stickiness(rt.st.settings.stickiness.clone());
        r.overrides = rt.st.settings.overrides.clone();
        if step.kind == StepKind::Preview {
            for k in &rt.st.settings.preview_keys {
                r = r.pin_key(k, Variant::Canary);
            }
            if let Some(a) = &rt.st.settings.preview_attribute {
                r = r.pin_attribute(&a.attribute, a.equals.clone(), Variant::Canary);
            }
        }
        Ok(r)
    }

    // ---------------------------------------------------------------- the loop

    async fn tick(&self, rt: &mut Runtime) -> Result<(), EngineError> {
        let now = Utc::now();
        match rt.rec.state {
            DeploymentState::Monitoring => {
                self.look(rt, now).await?;
            }
            DeploymentState::RollingBack => self.rollback_tick(rt, now).await?,
            _ => {}
        }
        if rt.dirty
            && rt.rec.state.is_active()
            && rt.last_save.elapsed() >= Duration::from_millis(self.inner.settings.checkpoint_ms)
        {
            self.checkpoint(rt).await;
        }
        Ok(())
    }

    async fn look(&self, rt: &mut Runtime, now: DateTime<Utc>) -> Result<(), EngineError> {
        let Some(health) = rt.st.health.as_mut() else { return Ok(()) };
        let eval = health.look(now);
        let mut view = DecisionView::from_eval(&eval);
        // The seed's triggers, beside the analysis: absolute limits on the candidate's numbers.
        let failing = eval.explanation.comparisons.iter().any(|c| {
            c.checks.iter().any(|k| {
                matches!(
                    k.status,
                    actuator_health::CheckStatus::Breach | actuator_health::CheckStatus::Critical
                )
            })
        });
        rt.st.failing_looks = if failing { rt.st.failing_looks + 1 } else { 0 };
        let max_total = ChronoDuration::seconds(
            i64::try_from(rt.req.canary.max_duration_secs).unwrap_or(i64::MAX / 2),
        );
        let input = trigger_input(&eval, rt.st.failing_looks, now - rt.st.started_at > max_total);
        let fired = rt.st.settings.triggers.evaluate(&input);
        if let Some(first) = fired.first()
            && (rt.req.canary.auto_rollback
                || first.kind == actuator_rollback::TriggerKind::Timeout)
        {
            view.kind = "rollback".into();
            view.rule = format!("trigger: {}", first.message);
            view.reasons = fired.iter().map(|f| f.message.clone()).collect();
            rt.st.last_decision = Some(view);
            let reason = match first.kind {
                actuator_rollback::TriggerKind::ErrorRate => RollbackReason::HighErrorRate,
                actuator_rollback::TriggerKind::Latency => RollbackReason::HighLatency,
                actuator_rollback::TriggerKind::Quality => RollbackReason::QualityDegradation,
                actuator_rollback::TriggerKind::Cost => RollbackReason::CostOverrun,
                actuator_rollback::TriggerKind::HealthChecks => RollbackReason::HealthCheckFailed,
                actuator_rollback::TriggerKind::Timeout => RollbackReason::Timeout,
            };
            let mode = rt.req.rollback_mode;
            return self.start_rollback(rt, reason, true, mode, "engine").await;
        }
        let changed =
            rt.st.last_decision.as_ref().is_none_or(|d| d.kind != view.kind || d.rule != view.rule);
        rt.st.last_decision = Some(view.clone());
        rt.dirty = true;
        let auto_promote = rt.req.canary.auto_promote;
        let auto_rollback = rt.req.canary.auto_rollback;
        match eval.decision {
            Decision::Continue => {
                rt.st.awaiting_promotion = false;
                Ok(())
            }
            Decision::Promote { arm } => {
                if auto_promote {
                    self.advance(rt, "engine", "analysis: promote", "rollout.promote", Some(arm))
                        .await
                } else {
                    if !rt.st.awaiting_promotion {
                        self.notify(
                            "rollout.awaiting_promotion",
                            Severity::Info,
                            "engine",
                            &rt.rec.id,
                            format!("rollout {} can be promoted", rt.rec.id),
                            Value::Null,
                        );
                    }
                    rt.st.awaiting_promotion = true;
                    Ok(())
                }
            }
            Decision::Rollback { rules, .. } => {
                let names: Vec<String> = rules
                    .iter()
                    .map(|r| format!("{:?}:{}", r.kind, r.metric).to_lowercase())
                    .collect();
                if auto_rollback {
                    let mode = rt.req.rollback_mode;
                    self.start_rollback(
                        rt,
                        RollbackReason::Analysis { rules: names },
                        true,
                        mode,
                        "engine",
                    )
                    .await
                } else {
                    self.pause(
                        rt,
                        &format!(
                            "analysis recommends rollback ({}); auto_rollback is off",
                            view.reasons.join("; ")
                        ),
                        "engine",
                    )
                    .await
                }
            }
            Decision::Inconclusive { .. } => match rt.st.settings.inconclusive {
                InconclusivePolicy::Hold => {
                    self.pause(rt, &format!("inconclusive: {}", view.reasons.join("; ")), "engine")
                        .await
                }
                InconclusivePolicy::PromoteIfNoAlarm => {
                    self.advance(
                        rt,
                        "engine",
                        "inconclusive, no alarm: promote",
                        "rollout.promote",
                        None,
                    )
                    .await
                }
                InconclusivePolicy::Rollback => {
                    let mode = rt.req.rollback_mode;
                    self.start_rollback(
                        rt,
                        RollbackReason::Analysis { rules: vec!["inconclusive".into()] },
                        true,
                        mode,
                        "engine",
                    )
                    .await
                }
            },
            Decision::Halt { .. } => {
                if changed {
                    self.pause(rt, &format!("halted: {}", view.reasons.join("; ")), "engine").await
                } else {
                    Ok(())
                }
            }
        }
    }

    async fn pause(&self, rt: &mut Runtime, reason: &str, actor: &str) -> Result<(), EngineError> {
        rt.st.paused_reason = Some(reason.to_owned());
        self.commit(rt, DeploymentState::Paused, reason, "rollout.pause", actor, None, Value::Null)
            .await?;
        let sev = if actor == "engine" { Severity::Warning } else { Severity::Info };
        self.notify(
            "rollout.pause",
            sev,
            actor,
            &rt.rec.id,
            format!("rollout {} paused: {reason}", rt.rec.id),
            Value::Null,
        );
        Ok(())
    }

    /// Moves to the next step, or completes after the last.
    async fn advance(
        &self,
        rt: &mut Runtime,
        actor: &str,
        reason: &str,
        action: &str,
        winner: Option<Arm>,
    ) -> Result<(), EngineError> {
        rt.st.awaiting_promotion = false;
        rt.st.paused_reason = None;
        let next = rt.st.step + 1;
        if next >= rt.st.steps.len() || rt.rec.strategy == DeploymentStrategy::AbTest {
            return self.complete(rt, actor, reason, winner).await;
        }
        let now = Utc::now();
        let cfg = phase_config(&rt.st.steps[next], &rt.st);
        let full_canary =
            rt.st.steps[next].kind == StepKind::Canary && rt.st.steps[next].share_bp >= 10_000;
        if full_canary {
            // At 100 % there is no control left to compare with: the step watches the guard
            // rails on the candidate's own numbers (the comparison was decided on the way up).
            let h = RolloutHealth::new(
                rt.rec.id.clone(),
                rt.rec.slot.to_string(),
                actuator_health::AnalysisMode::NoControl,
                health_config(&rt.req, rt.st.settings.request_timeout_ms),
                cfg,
                now,
            )
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
            rt.st.health = Some(h);
        } else if let Some(h) = rt.st.health.as_mut() {
            h.start_phase(cfg, now).map_err(|e| EngineError::Invalid(e.to_string()))?;
        }
        self.enter_step(rt, next, now, reason, action, actor).await?;
        self.notify(
            action,
            Severity::Info,
            actor,
            &rt.rec.id,
            format!("rollout {} at step {next} ({} %)", rt.rec.id, rt.st.share_percent()),
            Value::Null,
        );
        Ok(())
    }

    async fn complete(
        &self,
        rt: &mut Runtime,
        actor: &str,
        reason: &str,
        winner: Option<Arm>,
    ) -> Result<(), EngineError> {
        let (activate, outcome) = match rt.rec.strategy {
            DeploymentStrategy::Shadow => {
                (None, "the candidate passed the shadow comparison; users never saw it".to_owned())
            }
            DeploymentStrategy::AbTest => match winner {
                Some(Arm::Control) => (None, "control won; the stable config stays".to_owned()),
                Some(Arm::Named(n)) if n != "b" => {
                    let v = rt.st.settings.arms.iter().find(|a| a.name == n).map(|a| a.version);
                    (v, format!("arm {n} won and is now active"))
                }
                Some(_) => (
                    Some(rt.st.candidate_version),
                    "arm b (the candidate) won and is now active".to_owned(),
                ),
                None => (
                    Some(rt.st.candidate_version),
                    "promoted by hand: the candidate is now active".to_owned(),
                ),
            },
            _ => (
                Some(rt.st.candidate_version),
                format!("version {} is now active", rt.st.candidate_version),
            ),
        };
        rt.st.route = None;
        rt.st.outcome = Some(outcome.clone());
        // A paused rollout resumes into monitoring first: the machine completes from there.
        if rt.rec.state == DeploymentState::Paused || rt.rec.state == DeploymentState::RollingOut {
            self.commit(
                rt,
                DeploymentState::Monitoring,
                reason,
                "rollout.monitor",
                actor,
                None,
                Value::Null,
            )
            .await?;
        }
        self.commit(
            rt,
            DeploymentState::Completed,
            &format!("{reason}; {outcome}"),
            "rollout.complete",
            actor,
            activate,
            json!({"activated_version": activate}),
        )
        .await?;
        self.finished(true);
        self.notify(
            "rollout.complete",
            Severity::Info,
            actor,
            &rt.rec.id,
            format!("rollout {} completed: {outcome}", rt.rec.id),
            Value::Null,
        );
        if rt.rec.strategy == DeploymentStrategy::Shadow && rt.st.settings.then_canary {
            let mut next = rt.req.clone();
            next.id = None;
            next.strategy = DeploymentStrategy::Canary;
            next.candidate = Candidate::Version(rt.st.candidate_version);
            next.settings = Value::Null;
            next.description = format!("canary after shadow rollout {}", rt.rec.id);
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(e) = me.deploy(next).await {
                    tracing::warn!(error = %e, "could not start the canary after a passed shadow rollout");
                }
            });
        }
        Ok(())
    }

    fn finished(&self, success: bool) {
        let mut s = lock(&self.inner.stats);
        s.active_deployments = s.active_deployments.saturating_sub(1);
        if success {
            s.successful_deployments += 1;
        } else {
            s.failed_deployments += 1;
        }
    }

    // ---------------------------------------------------------------- rollback

    async fn start_rollback(
        &self,
        rt: &mut Runtime,
        reason: RollbackReason,
        automatic: bool,
        mode: RollbackMode,
        actor: &str,
    ) -> Result<(), EngineError> {
        let decided = Instant::now();
        let now = Utc::now();
        let current = rt.st.route.as_ref().map_or(0, |r| r.share.basis_points());
        let mut remaining: Vec<u16> = match mode {
            RollbackMode::Fast => vec![0],
            RollbackMode::Gradual => actuator_rollback::gradual_plan(current),
        };
        let first = remaining.remove(0);
        let step_secs = if first == 0 {
            self.inner.settings.validation_secs
        } else {
            self.inner.settings.gradual_step_secs
        };
        rt.st.rollback = Some(RollbackState {
            reason: reason.clone(),
            automatic,
            mode,
            actor: actor.to_owned(),
            decided_at: now,
            flip_ms: None,
            remaining_bp: remaining,
            steps: vec![RollbackStep {
                share_bp: first,
                at: now,
                control_requests: 0,
                control_error_rate: None,
            }],
            next_at: now + ChronoDuration::seconds(i64::try_from(step_secs).unwrap_or(0)),
            control_requests: 0,
            control_errors: 0,
            result: None,
        });
        if let Some(r) = rt.st.route.as_mut() {
            r.share = share(first);
            if first == 0 {
                r.overrides = Default::default();
            }
        }
        rt.st.paused_reason = None;
        let why = match &reason {
            RollbackReason::Manual { reason } => format!("manual rollback: {reason}"),
            other => format!("rollback: {}", serde_json::to_string(other).unwrap_or_default()),
        };
        let limit = Duration::from_millis(self.inner.settings.rollback_timeout_ms);
        let action = if matches!(reason, RollbackReason::Aborted) {
            "rollout.abort"
        } else {
            "rollout.rollback"
        };
        let fut = self.commit(
            rt,
            DeploymentState::RollingBack,
            &why,
            action,
            actor,
            None,
            json!({"automatic": automatic, "mode": mode, "rollback_reason": reason}),
        );
        match tokio::time::timeout(limit, fut).await {
            Ok(r) => r?,
            Err(_) => {
                self.notify(
                    "rollout.rollback_timeout",
                    Severity::Critical,
                    actor,
                    &rt.rec.id,
                    format!("rollback of {} timed out", rt.rec.id),
                    Value::Null,
                );
                return Err(EngineError::RollbackTimeout(rt.rec.id.clone()));
            }
        }
        let flip = decided.elapsed().as_secs_f64() * 1000.0;
        if let Some(rb) = rt.st.rollback.as_mut() {
            rb.flip_ms = Some(flip);
        }
        rt.dirty = true;
        {
            let mut s = lock(&self.inner.stats);
            s.rollbacks += 1;
            if automatic {
                s.automatic_rollbacks += 1;
            } else {
                s.manual_rollbacks += 1;
            }
        }
        self.notify(
            action,
            if automatic { Severity::Critical } else { Severity::Warning },
            actor,
            &rt.rec.id,
            format!(
                "rollout {} of {} is rolling back ({why}); routing flipped in {flip:.1} ms",
                rt.rec.id, rt.rec.slot
            ),
            json!({"flip_ms": flip}),
        );
        Ok(())
    }

    async fn rollback_tick(&self, rt: &mut Runtime, now: DateTime<Utc>) -> Result<(), EngineError> {
        let Some(rb) = rt.st.rollback.as_mut() else { return Ok(()) };
        if now < rb.next_at {
            return Ok(());
        }
        let rate = (rb.control_requests > 0)
            .then(|| rb.control_errors as f64 / rb.control_requests as f64);
        if let Some(last) = rb.steps.last_mut() {
            last.control_requests = rb.control_requests;
            last.control_error_rate = rate;
        }
        if !rb.remaining_bp.is_empty() {
            let next = rb.remaining_bp.remove(0);
            rb.steps.push(RollbackStep {
                share_bp: next,
                at: now,
                control_requests: 0,
                control_error_rate: None,
            });
            let secs = if next == 0 {
                self.inner.settings.validation_secs
            } else {
                self.inner.settings.gradual_step_secs
            };
            rb.next_at = now + ChronoDuration::seconds(i64::try_from(secs).unwrap_or(0));
            rb.control_requests = 0;
            rb.control_errors = 0;
            if let Some(r) = rt.st.route.as_mut() {
                r.share = share(next);
            }
            return self
                .commit(
                    rt,
                    DeploymentState::RollingBack,
                    &format!("gradual rollback: share {} %", f64::from(next) / 100.0),
                    "rollout.rollback_step",
                    "engine",
                    None,
                    Value::Null,
                )
                .await;
        }
        // Validation window over: judge the stable config on what it served meanwhile.
        let requests: u64 = rb.steps.iter().map(|s| s.control_requests).sum();
        let errors: u64 = rb
            .steps
            .iter()
            .map(|s| {
                (s.control_error_rate.unwrap_or(0.0) * s.control_requests as f64).round() as u64
            })
            .sum();
        // The stable config is judged against the guard-rail error limit, with the seed's
        // critical factor of 2 as slack for the noise of a short window.
        let limit = (rt.req.success_criteria.max_error_rate * 2.0).max(0.01);
        let validated = match actuator_rollback::validate(
            requests,
            errors,
            self.inner.settings.validation_min_samples,
            limit,
        ) {
            actuator_rollback::Validation::Healthy => Some(true),
            actuator_rollback::Validation::Unhealthy => Some(false),
            actuator_rollback::Validation::Unknown => None,
        };
        let result = RollbackResult {
            deployment_id: rt.rec.id.clone(),
            success: true,
            restored_version: rt.st.stable_version,
            mode: rb.mode,
            reason: rb.reason.clone(),
            duration_ms: (now - rb.decided_at).num_milliseconds() as f64,
            validated,
            error: None,
            completed_at: now,
        };
        rb.result = Some(result);
        let summary = match validated {
            Some(true) => "the stable config is healthy again".to_owned(),
            Some(false) => {
                "the stable config still shows errors after the rollback: look at the system"
                    .to_owned()
            }
            None => "too little traffic to validate the stable config".to_owned(),
        };
        rt.st.route = None;
        rt.st.outcome = Some(format!(
            "rolled back to version {}; {summary}",
            rt.st.stable_version.unwrap_or(0)
        ));
        self.commit(
            rt,
            DeploymentState::RolledBack,
            &summary,
            "rollout.rolled_back",
            "engine",
            None,
            json!({"validated": validated}),
        )
        .await?;
        self.finished(false);
        let sev = if validated == Some(false) { Severity::Critical } else { Severity::Info };
        self.notify(
            "rollout.rolled_back",
            sev,
            "engine",
            &rt.rec.id,
            format!("rollout {} rolled back: {summary}", rt.rec.id),
            Value::Null,
        );
        Ok(())
    }

    // ---------------------------------------------------------------- manual control

    /// Applies an operator's action; audited with `actor`.
    pub async fn act(
        &self,
        id: &str,
        action: ManualAction,
        actor: &str,
    ) -> Result<RolloutView, EngineError> {
        if let ManualAction::Retry = action {
            return self.retry(id, actor).await;
        }
        let rt = self.runtime(id).ok_or_else(|| self.missing_or_inactive(id, action.name()))?;
        let mut g = rt.lock().await;
        let state = g.rec.state;
        let bad = || EngineError::InvalidTransition {
            action: action.name().into(),
            id: id.into(),
            state: state.to_string(),
        };
        use DeploymentState::*;
        match &action {
            ManualAction::Pause => {
                if !matches!(state, RollingOut | Monitoring) {
                    return Err(bad());
                }
                self.pause(&mut g, &format!("paused by {actor}"), actor).await?;
            }
            ManualAction::Resume => {
                if state != Paused {
                    return Err(bad());
                }
                g.st.paused_reason = None;
                self.commit(
                    &mut g,
                    Monitoring,
                    &format!("resumed by {actor}"),
                    "rollout.resume",
                    actor,
                    None,
                    Value::Null,
                )
                .await?;
            }
            ManualAction::Promote { full } => {
                if !matches!(state, Monitoring | Paused) {
                    return Err(bad());
                }
                if *full {
                    self.complete(&mut g, actor, &format!("promoted fully by {actor}"), None)
                        .await?;
                } else {
                    if state == Paused {
                        self.commit(
                            &mut g,
                            Monitoring,
                            "promotion by hand",
                            "rollout.resume",
                            actor,
                            None,
                            Value::Null,
                        )
                        .await?;
                    }
                    self.advance(
                        &mut g,
                        actor,
                        &format!("promoted by {actor}"),
                        "rollout.promote",
                        None,
                    )
                    .await?;
                }
            }
            ManualAction::Skip => {
                if !matches!(state, Monitoring | Paused) {
                    return Err(bad());
                }
                if state == Paused {
                    self.commit(
                        &mut g,
                        Monitoring,
                        "skip by hand",
                        "rollout.resume",
                        actor,
                        None,
                        Value::Null,
                    )
                    .await?;
                }
                let step = g.st.step;
                self.advance(
                    &mut g,
                    actor,
                    &format!("step {step} skipped by {actor}"),
                    "rollout.skip",
                    None,
                )
                .await?;
            }
            ManualAction::Abort => {
                if !matches!(state, RollingOut | Monitoring | Paused) {
                    return Err(bad());
                }
                self.start_rollback(
                    &mut g,
                    RollbackReason::Aborted,
                    false,
                    RollbackMode::Fast,
                    actor,
                )
                .await?;
            }
            ManualAction::Rollback { reason, gradual } => {
                if !matches!(state, RollingOut | Monitoring | Paused) {
                    return Err(bad());
                }
                let mode = if *gradual { RollbackMode::Gradual } else { RollbackMode::Fast };
                self.start_rollback(
                    &mut g,
                    RollbackReason::Manual { reason: reason.clone() },
                    false,
                    mode,
                    actor,
                )
                .await?;
            }
            ManualAction::Retry => {}
        }
        let view = RolloutView::new(&g.rec, &g.st);
        let done = g.rec.state.is_terminal();
        drop(g);
        if done {
            self.inner.runtimes.write().unwrap_or_else(|p| p.into_inner()).remove(id);
        }
        self.wake();
        Ok(view)
    }

    fn missing_or_inactive(&self, id: &str, action: &str) -> EngineError {
        EngineError::InvalidTransition {
            action: action.into(),
            id: id.into(),
            state: "not active (finished or unknown)".into(),
        }
    }

    async fn retry(&self, id: &str, actor: &str) -> Result<RolloutView, EngineError> {
        let rec = self
            .store()
            .get_rollout(id)
            .await?
            .ok_or_else(|| EngineError::UnknownRollout(id.into()))?;
        if !matches!(rec.state, DeploymentState::RolledBack | DeploymentState::Failed) {
            return Err(EngineError::InvalidTransition {
                action: "retry".into(),
                id: id.into(),
                state: rec.state.to_string(),
            });
        }
        let active = self.active_count();
        if active >= self.inner.settings.max_active_rollouts {
            return Err(EngineError::Limit {
                active,
                limit: self.inner.settings.max_active_rollouts,
            });
        }
        let req: DeploymentRequest = serde_json::from_value(rec.request.clone())
            .map_err(|e| EngineError::Invalid(format!("stored request: {e}")))?;
        let mut st: EngineStatus = serde_json::from_value(rec.status.clone())
            .map_err(|e| EngineError::Invalid(format!("stored status: {e}")))?;
        let now = Utc::now();
        st.started_at = now;
        st.step = 0;
        st.step_started_at = now;
        st.route = None;
        st.health = None;
        st.last_decision = None;
        st.paused_reason = None;
        st.awaiting_promotion = false;
        st.rollback = None;
        st.outcome = None;
        let slot = self.inner.config.get_slot(&rec.slot).await?;
        st.stable_version = slot.active_version;
        let mut rt = Runtime { rec, st, req, dirty: false, last_save: Instant::now() };
        self.commit(
            &mut rt,
            DeploymentState::Pending,
            &format!("retried by {actor}"),
            "rollout.retry",
            actor,
            None,
            Value::Null,
        )
        .await
        .map_err(|e| match e {
            EngineError::Store(StoreError::AlreadyExists { what }) => {
                EngineError::SlotBusy { slot: rt.rec.slot.to_string(), rollout: what }
            }
            other => other,
        })?;
        {
            let mut s = lock(&self.inner.stats);
            s.active_deployments += 1;
            s.failed_deployments = s.failed_deployments.saturating_sub(1);
        }
        let shared: Shared = Arc::new(Mutex::new(rt));
        self.inner
            .runtimes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned(), shared.clone());
        let mut g = shared.lock().await;
        self.begin(&mut g, actor).await?;
        Ok(RolloutView::new(&g.rec, &g.st))
    }

    // ---------------------------------------------------------------- reading

    /// The view of one rollout (live for active ones, from the store otherwise).
    pub async fn view(&self, id: &str) -> Result<RolloutView, EngineError> {
        if let Some(rt) = self.runtime(id) {
            let g = rt.lock().await;
            return Ok(RolloutView::new(&g.rec, &g.st));
        }
        let rec = self
            .store()
            .get_rollout(id)
            .await?
            .ok_or_else(|| EngineError::UnknownRollout(id.into()))?;
        let st: EngineStatus = serde_json::from_value(rec.status.clone())
            .map_err(|e| EngineError::Invalid(format!("stored status of {id}: {e}")))?;
        Ok(RolloutView::new(&rec, &st))
    }

    /// The last evaluation with its explanation, and the bounded history of decisions.
    pub async fn health(&self, id: &str) -> Result<Value, EngineError> {
        let st = match self.runtime(id) {
            Some(rt) => rt.lock().await.st.clone(),
            None => {
                let rec = self
                    .store()
                    .get_rollout(id)
                    .await?
                    .ok_or_else(|| EngineError::UnknownRollout(id.into()))?;
                serde_json::from_value::<EngineStatus>(rec.status)
                    .map_err(|e| EngineError::Invalid(e.to_string()))?
            }
        };
        let (last, history): (Value, Vec<Value>) = match &st.health {
            Some(h) => (
                serde_json::to_value(h.last_evaluation()).unwrap_or(Value::Null),
                h.history().map(|r| serde_json::to_value(r).unwrap_or(Value::Null)).collect(),
            ),
            None => (Value::Null, Vec::new()),
        };
        Ok(json!({"rollout_id": id, "phase": st.step, "last_evaluation": last, "history": history}))
    }

    /// Lists rollouts, newest first.
    pub async fn list(
        &self,
        filter: RolloutFilter,
        page: PageRequest,
    ) -> Result<Page<RolloutView>, EngineError> {
        let p = self.store().list_rollouts(filter, page).await?;
        let mut items = Vec::with_capacity(p.items.len());
        for rec in p.items {
            let live = self.runtime(&rec.id);
            let view = match live {
                Some(rt) => {
                    let g = rt.lock().await;
                    RolloutView::new(&g.rec, &g.st)
                }
                None => match serde_json::from_value::<EngineStatus>(rec.status.clone()) {
                    Ok(st) => RolloutView::new(&rec, &st),
                    Err(e) => {
                        return Err(EngineError::Invalid(format!(
                            "stored status of {}: {e}",
                            rec.id
                        )));
                    }
                },
            };
            items.push(view);
        }
        Ok(Page { items, next_cursor: p.next_cursor })
    }

    /// Rollback history, newest first. A page filters one page of rollouts, so it may hold
    /// fewer than `limit` items; follow `next_cursor` to the end.
    pub async fn rollbacks(&self, page: PageRequest) -> Result<Page<RollbackView>, EngineError> {
        let p = self.store().list_rollouts(RolloutFilter::default(), page).await?;
        let items = p
            .items
            .into_iter()
            .filter_map(|rec| {
                let st = serde_json::from_value::<EngineStatus>(rec.status).ok()?;
                Some(RollbackView {
                    rollout_id: rec.id,
                    slot: rec.slot.to_string(),
                    rollback: st.rollback?,
                })
            })
            .collect();
        Ok(Page { items, next_cursor: p.next_cursor })
    }

    /// Counters since the store was created.
    pub fn stats(&self) -> ActuatorStats {
        lock(&self.inner.stats).clone()
    }
}

/// The numbers the seed's triggers look at: the worst treatment arm of the evaluation.
fn trigger_input(
    eval: &actuator_health::Evaluation,
    failing_looks: u32,
    past_max: bool,
) -> actuator_rollback::TriggerInput {
    let arms = &eval.explanation.arms;
    let control = arms.iter().find(|a| a.arm == Arm::Control);
    let worst = arms
        .iter()
        .filter(|a| a.arm != Arm::Control)
        .max_by(|a, b| a.error_rate.unwrap_or(0.0).total_cmp(&b.error_rate.unwrap_or(0.0)));
    actuator_rollback::TriggerInput {
        requests: worst.map_or(0, |a| a.requests),
        error_rate: worst.and_then(|a| a.error_rate),
        p99_latency_ms: worst.and_then(|a| a.p99_ms),
        mean_quality: worst.and_then(|a| a.mean_quality),
        mean_cost: worst.and_then(|a| a.mean_cost),
        control_mean_cost: control.and_then(|a| a.mean_cost),
        consecutive_failures: failing_looks,
        past_max_duration: past_max,
    }
}

fn count(s: &mut ActuatorStats, rec: &RolloutRecord) {
    s.total_deployments += 1;
    *s.by_strategy.entry(rec.strategy).or_default() += 1;
    match rec.state {
        DeploymentState::Completed => s.successful_deployments += 1,
        DeploymentState::RolledBack | DeploymentState::Failed => s.failed_deployments += 1,
        _ => s.active_deployments += 1,
    }
    if let Some(rb) = rec.status.get("rollback").filter(|v| !v.is_null()) {
        s.rollbacks += 1;
        if rb.get("automatic").and_then(Value::as_bool).unwrap_or(false) {
            s.automatic_rollbacks += 1;
        } else {
            s.manual_rollbacks += 1;
        }
    }
}

#[async_trait]
impl Actuator for Engine {
    type Error = EngineError;

    fn name(&self) -> &str {
        "actuator-engine"
    }

    fn state(&self) -> ActuatorState {
        *lock(&self.inner.state)
    }

    async fn start(&self) -> Result<(), EngineError> {
        Engine::start(self).await
    }

    async fn stop(&self) -> Result<(), EngineError> {
        Engine::stop(self).await
    }

    async fn deploy(&self, request: DeploymentRequest) -> Result<DeploymentStatus, EngineError> {
        let v = Engine::deploy(self, request).await?;
        self.get_deployment_status(&v.id).await
    }

    async fn get_deployment_status(
        &self,
        deployment_id: &str,
    ) -> Result<DeploymentStatus, EngineError> {
        let v = self.view(deployment_id).await?;
        let health = match v.last_decision.as_ref().map(|d| d.kind.as_str()) {
            Some("rollback") => HealthStatus::Unhealthy,
            Some("halt") | Some("inconclusive") => HealthStatus::Degraded,
            Some(_) => HealthStatus::Healthy,
            None => HealthStatus::Unknown,
        };
        Ok(DeploymentStatus {
            deployment_id: v.id,
            slot: SlotName::new(v.slot).map_err(EngineError::Core)?,
            strategy: v.strategy,
            state: v.state,
            current_phase: Some(v.phase),
            traffic_percent: v.share_percent,
            stable_version: v.stable_version,
            candidate_version: v.candidate_version,
            start_time: v.created_at,
            phase_start_time: Some(v.phase_started_at),
            health,
            errors: v.errors,
            last_updated: v.updated_at,
        })
    }

    async fn rollback(&self, request: RollbackRequest) -> Result<RollbackResult, EngineError> {
        let gradual = request.mode == RollbackMode::Gradual;
        let reason = match &request.reason {
            RollbackReason::Manual { reason } => reason.clone(),
            other => serde_json::to_string(other).unwrap_or_default(),
        };
        let started = Instant::now();
        let v = self
            .act(&request.deployment_id, ManualAction::Rollback { reason, gradual }, &request.actor)
            .await?;
        Ok(RollbackResult {
            deployment_id: v.id,
            success: true,
            restored_version: v.stable_version,
            mode: request.mode,
            reason: request.reason,
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
            validated: None,
            error: None,
            completed_at: Utc::now(),
        })
    }

    async fn health_check(&self) -> Result<Vec<HealthCheckResult>, EngineError> {
        let now = Utc::now();
        let mut out = Vec::new();
        let store_ok = self.store().audit_head().await;
        out.push(HealthCheckResult {
            name: "store".into(),
            passed: store_ok.is_ok(),
            message: store_ok.map_or_else(|e| e.to_string(), |_| "the store answers".into()),
            value: None,
            threshold: None,
            checked_at: now,
        });
        for rt in self.all_runtimes() {
            let g = rt.lock().await;
            let kind = g.st.last_decision.as_ref().map_or("none", |d| d.kind.as_str()).to_owned();
            out.push(HealthCheckResult {
                name: format!("rollout {}", g.rec.id),
                passed: kind != "rollback" && kind != "halt",
                message: format!(
                    "{} at step {} ({} %), last decision {kind}",
                    g.rec.state,
                    g.st.step,
                    g.st.share_percent()
                ),
                value: Some(g.st.share_percent()),
                threshold: None,
                checked_at: now,
            });
        }
        Ok(out)
    }

    fn get_stats(&self) -> ActuatorStats {
        self.stats()
    }

    async fn reset(&self) -> Result<(), EngineError> {
        // Finished rollouts are never held in memory; recount the statistics from the store.
        let stats = self.recount().await?;
        *lock(&self.inner.stats) = stats;
        Ok(())
    }
}
