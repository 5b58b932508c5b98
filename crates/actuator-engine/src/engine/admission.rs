//! Admission: a deploy request is validated, its candidate written, and the rollout created.
//!
//! The rules that concurrent requests could break (the limit of active rollouts, one active
//! rollout per slot, the stable version being the slot's active version) are checked by the
//! store inside the transaction that creates the rollout; the checks here only refuse early.

use actuator_core::Admission;

use super::steps::{health_config, phase_config};
use super::*;

/// How often a start re-reads the slot and tries again when its active version moved between
/// the read and the admitting transaction (a direct apply landed first).
const STABLE_RETRIES: u32 = 8;

impl Engine {
    /// The admission rules the store checks for a rollout built on `stable`.
    pub(super) fn admission(&self, stable: Option<u64>) -> Admission {
        Admission {
            max_active: Some(
                u64::try_from(self.inner.settings.max_active_rollouts).unwrap_or(u64::MAX),
            ),
            expected_stable: Some(stable),
        }
    }
}

/// An admission refusal of the store as the engine reports it.
pub(super) fn admission_error(slot: &SlotName, e: StoreError) -> EngineError {
    match e {
        StoreError::AlreadyExists { what } => {
            EngineError::SlotBusy { slot: slot.to_string(), rollout: what }
        }
        StoreError::Limit { active, limit } => EngineError::Limit {
            active: usize::try_from(active).unwrap_or(usize::MAX),
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
        },
        other => other.into(),
    }
}

impl Engine {
    // ---------------------------------------------------------------- deploy

    /// Validates and starts a rollout; answers once it serves its first step.
    pub async fn deploy(&self, req: DeploymentRequest) -> Result<RolloutView, EngineError> {
        if *lock(&self.inner.state) != ActuatorState::Running {
            return Err(EngineError::NotRunning);
        }
        req.validate()?;
        let settings = plan::settings(&req)?;
        plan::check_strategy_keys(&req)?;
        plan::check_ranges(&req, &settings)?;
        Self::check_gates(&req)?;
        let steps = plan::steps(&req, &settings)?;
        plan::check_steps(&steps)?;
        self.check_metric_feed(&req)?;
        if let Some(split) = &req.canary.traffic_split {
            SplitStrategy::from_request(split)
                .map_err(|e| EngineError::Invalid(format!("canary.traffic_split: {e}")))?;
        }
        if self.inner.config.get_slot(&req.slot).await?.active_version.is_none() {
            return Err(EngineError::Invalid(format!(
                "slot {} has no active version to roll out from; apply a first config directly",
                req.slot
            )));
        }
        let active = self.active_count();
        if active >= self.inner.settings.max_active_rollouts {
            return Err(EngineError::Limit {
                active,
                limit: self.inner.settings.max_active_rollouts,
            });
        }
        if let Some(holder) = self.slot_holder(&req.slot) {
            return Err(EngineError::SlotBusy { slot: req.slot.to_string(), rollout: holder });
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
        let mut attempt = 0;
        let (rec, st) = loop {
            let Some(stable) = self.inner.config.get_slot(&req.slot).await?.active_version else {
                return Err(EngineError::Invalid(format!(
                    "slot {} has no active version to roll out from; apply a first config directly",
                    req.slot
                )));
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
            let now = self.now();
            let mut st = EngineStatus {
                started_at: now,
                stable_version: Some(stable),
                snapshot_id: Some(snapshot.id),
                candidate_version: candidate,
                settings: settings.clone(),
                steps: steps.clone(),
                step: 0,
                step_started_at: now,
                route: None,
                health: None,
                last_decision: None,
                paused_reason: None,
                awaiting_promotion: false,
                transitions: Default::default(),
                rollback: None,
                errors: Default::default(),
                outcome: None,
                ..EngineStatus::fresh(now)
            };
            let created = self
                .store()
                .create_rollout(
                    NewRollout {
                        id: id.clone(),
                        slot: req.slot.clone(),
                        strategy: req.strategy,
                        state: DeploymentState::Pending,
                        request: serde_json::to_value(&req).unwrap_or(Value::Null),
                        status: serde_json::to_value(&st).unwrap_or(Value::Null),
                        admission: self.admission(Some(stable)),
                    },
                    AuditDraft::success(&req.actor, "rollout.start", &id).with_metadata(json!({
                        "slot": req.slot, "strategy": req.strategy, "candidate_version": candidate, "stable_version": stable,
                        "description": req.description,
                    })),
                )
                .await;
            match created {
                Ok(rec) => {
                    // The stable version is the one the store read in the admitting transaction.
                    st.stable_version = rec.stable_version;
                    break (rec, st);
                }
                Err(StoreError::StableChanged { .. }) if attempt < STABLE_RETRIES => {
                    attempt += 1;
                    tracing::debug!(rollout = %id, attempt, "the slot's active version moved; admitting again");
                }
                Err(e) => return Err(admission_error(&req.slot, e)),
            }
        };
        {
            let mut s = lock(&self.inner.stats);
            s.total_deployments += 1;
            s.active_deployments += 1;
            *s.by_strategy.entry(req.strategy).or_default() += 1;
        }
        let actor = req.actor.clone();
        let slot = rec.slot.clone();
        let rt: Shared = Arc::new(Mutex::new(Runtime::new(rec, st, req, self.now())));
        self.inner.runtimes.write().unwrap_or_else(|p| p.into_inner()).insert(
            id.clone(),
            slot,
            rt.clone(),
        );
        let mut g = rt.lock().await;
        // Changed under its lock: the loop takes it on its next pass.
        self.wake_rollout(&id);
        self.begin(&mut g, &actor).await?;
        self.notify(
            &g,
            "rollout.start",
            Severity::Info,
            &actor,
            format!("rollout {id} of {} started ({})", g.rec.slot, g.rec.strategy),
            json!({"candidate_version": candidate}),
        );
        Ok(g.view())
    }

    /// Pending → Validating → first step.
    pub(super) async fn begin(&self, rt: &mut Runtime, actor: &str) -> Result<(), EngineError> {
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
        let now = self.now();
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
                let first = phase_config(&rt.req, first_step, 0, &rt.st);
                match RolloutHealth::new(
                    rt.rec.id.clone(),
                    rt.rec.slot.to_string(),
                    mode,
                    health_config(&rt.req, &rt.st.settings),
                    first,
                    now,
                ) {
                    Ok(mut h) => {
                        h.set_planned_phases(super::steps::planned_phases(&rt.st.steps));
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
        self.enter_first_step(rt, now, actor).await
    }
}
