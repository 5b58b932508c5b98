//! Steps: the traffic split of each step, entering, advancing and completing.

use super::*;

/// The health configuration of a request: the false-rollback budget, and the seed's checks
/// (success criteria) and triggers as SLO guards inside that budget. A limit that cannot be
/// tested (an error rate of 0 or 1, a quality limit outside the score range) is left out.
pub(super) fn health_config(
    req: &DeploymentRequest,
    s: &crate::plan::StrategySettings,
) -> HealthConfig {
    use actuator_health::{GuardKind, SloGuard};
    use actuator_rollback::TriggerGuard;
    let c = &req.success_criteria;
    let mut h = HealthConfig {
        alpha_rollback_total: c.alpha,
        timeout_ms: Some(s.request_timeout_ms),
        min_sample_size: c.min_sample_size,
        ..HealthConfig::default()
    };
    let seed = actuator_health::SloGuardConfig::seed();
    let margin_of =
        |kind: GuardKind| seed.guards.iter().find(|g| g.kind == kind).map_or(0.005, |g| g.margin);
    let p95 = GuardKind::Latency { quantile: 0.95 };
    let p99 = GuardKind::Latency { quantile: 0.99 };
    let mut guards = vec![
        (GuardKind::ErrorRate, c.max_error_rate),
        (GuardKind::SuccessRate, c.min_success_rate),
        (p95, c.max_p95_latency_ms),
        (p99, c.max_p99_latency_ms),
        (GuardKind::CostIncrease, c.max_cost_increase),
        (GuardKind::Quality, c.min_quality),
    ];
    for t in s.triggers.guards() {
        guards.push(match t {
            TriggerGuard::ErrorRate { limit } => (GuardKind::ErrorRate, limit),
            TriggerGuard::P99Latency { limit_ms } => (p99, limit_ms),
            TriggerGuard::MinQuality { limit } => (GuardKind::Quality, limit),
            TriggerGuard::CostIncrease { limit } => (GuardKind::CostIncrease, limit),
        });
    }
    h.slo_guards.guards.clear();
    for (kind, threshold) in guards {
        let g = SloGuard { kind, threshold, margin: margin_of(kind) };
        if g.check(h.quality.range).is_ok() {
            h.slo_guards.add(g);
        }
    }
    h
}

/// The analysis phase of step `i`: shares by step kind, the step's minimums and budget, and
/// for canary phases the role, margins and unreachable-metric policy of the request's phase.
/// K for the per-phase split of the rollback budget when assignment units return across
/// phases: every step of the plan can roll back, so every step counts.
pub(super) fn planned_phases(steps: &[Step]) -> u32 {
    u32::try_from(steps.len()).unwrap_or(u32::MAX).max(1)
}

pub(super) fn phase_config(
    req: &DeploymentRequest,
    step: &Step,
    i: usize,
    st: &EngineStatus,
) -> PhaseConfig {
    use actuator_core::{CanaryPhase, PhaseRole, UnreachableMetric};
    use actuator_health::{MarginOverrides, StageRole, UnreachablePolicy};
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
    // Requests are range-checked at deploy; a rollout stored before the checks is held to
    // them here, so no duration reaches the analysis that its clock arithmetic cannot hold.
    let cap = |s: u64| i64::try_from(s.min(plan::MAX_DURATION_SECS)).unwrap_or(0);
    let mut cfg = base
        .min(step.min_samples, cap(step.min_secs))
        .max(step.max_samples, step.max_secs.map(cap));
    if step.kind == StepKind::Canary
        && let Some(p) = req.canary.phases.get(i)
    {
        cfg.role = match p.effective_role() {
            PhaseRole::Smoke => StageRole::Smoke,
            PhaseRole::Prove => StageRole::Prove,
            PhaseRole::Watch => StageRole::Watch,
        };
        let m = p.margins;
        cfg.margins = MarginOverrides {
            errors_abs: m.errors_abs,
            errors_ratio: m.errors_ratio,
            latency_ratio: m.latency_ratio,
            cost_ratio: m.cost_ratio,
            quality_abs: m.quality_abs,
        };
        cfg.unreachable =
            CanaryPhase::effective_unreachable(&req.canary.phases, i).map(|u| match u {
                UnreachableMetric::Block => UnreachablePolicy::Block,
                UnreachableMetric::Ignore => UnreachablePolicy::Ignore,
                UnreachableMetric::Defer => UnreachablePolicy::Defer,
            });
    }
    cfg
}

/// What an inconclusive step does: the request phase's own policy, else the rollout's.
pub(super) fn inconclusive_policy(rt: &Runtime) -> InconclusivePolicy {
    use actuator_core::PhaseInconclusive;
    let own = (rt.rec.strategy == DeploymentStrategy::Canary)
        .then(|| rt.req.canary.phases.get(rt.st.step).and_then(|p| p.on_inconclusive))
        .flatten();
    match own {
        Some(PhaseInconclusive::Hold) => InconclusivePolicy::Hold,
        Some(PhaseInconclusive::PromoteIfNoAlarm) => InconclusivePolicy::PromoteIfNoAlarm,
        Some(PhaseInconclusive::Rollback) => InconclusivePolicy::Rollback,
        None => rt.st.settings.inconclusive,
    }
}

/// Names of the A/B arms other than control: `b` for the candidate, then the extra arms.
pub(super) fn ab_arm_names(st: &EngineStatus) -> Vec<String> {
    std::iter::once("b".to_owned()).chain(st.settings.arms.iter().map(|a| a.name.clone())).collect()
}

impl Engine {
    /// Enters step `i`: its traffic split is committed (rolling out), then monitored.
    pub(super) async fn enter_step(
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
        rt.st.step_active_ms = 0;
        rt.anchor = Some(now);
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

    pub(super) async fn versioned(
        &self,
        slot: &SlotName,
        version: u64,
    ) -> Result<VersionedConfig, EngineError> {
        let v = self.inner.config.get_version(slot, version).await?;
        Ok(VersionedConfig::new(v.version, v.document))
    }

    /// The traffic split of step `i`.
    pub(super) async fn route_for(&self, rt: &Runtime, i: usize) -> Result<Rollout, EngineError> {
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
            && let Ok(s) = SplitStrategy::from_request(split)
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

    /// Moves to the next step, or completes after the last.
    pub(super) async fn advance(
        &self,
        rt: &mut Runtime,
        actor: &str,
        reason: &str,
        action: &str,
        winner: Option<Arm>,
    ) -> Result<(), EngineError> {
        let next = rt.st.step + 1;
        self.advance_to(rt, next, actor, reason, action, winner).await
    }

    /// Moves to step `next`, or completes when there is none.
    pub(super) async fn advance_to(
        &self,
        rt: &mut Runtime,
        next: usize,
        actor: &str,
        reason: &str,
        action: &str,
        winner: Option<Arm>,
    ) -> Result<(), EngineError> {
        self.cancel_gate_wait(rt, actor);
        rt.st.awaiting_promotion = false;
        rt.st.paused_reason = None;
        rt.st.held_watch = false;
        if next >= rt.st.steps.len() || rt.rec.strategy == DeploymentStrategy::AbTest {
            return self.complete(rt, actor, reason, winner).await;
        }
        let now = self.now();
        let cfg = phase_config(&rt.req, &rt.st.steps[next], next, &rt.st);
        let full_canary =
            rt.st.steps[next].kind == StepKind::Canary && rt.st.steps[next].share_bp >= 10_000;
        if full_canary {
            // At 100 % there is no control left: the step compares the candidate with the
            // stable's numbers frozen from the last compared phase, and its evidence continues
            // the rollout's one budget (the handover carries both).
            let handover = rt.st.health.as_ref().map(RolloutHealth::handover);
            let mut h = RolloutHealth::new(
                rt.rec.id.clone(),
                rt.rec.slot.to_string(),
                actuator_health::AnalysisMode::NoControl,
                health_config(&rt.req, &rt.st.settings),
                cfg,
                now,
            )
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
            if let Some(ho) = handover {
                h = h.with_handover(ho).map_err(|e| EngineError::Invalid(e.to_string()))?;
            }
            h.set_planned_phases(planned_phases(&rt.st.steps));
            rt.st.health = Some(h);
        } else if let Some(h) = rt.st.health.as_mut() {
            h.start_phase(cfg, now).map_err(|e| EngineError::Invalid(e.to_string()))?;
        }
        self.enter_step(rt, next, now, reason, action, actor).await?;
        self.notify(
            rt,
            action,
            Severity::Info,
            actor,
            format!("rollout {} at step {next} ({} %)", rt.rec.id, rt.st.share_percent()),
            Value::Null,
        );
        Ok(())
    }

    pub(super) async fn complete(
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
        self.cancel_gate_wait(rt, actor);
        rt.st.route = None;
        rt.st.outcome = Some(outcome.clone());
        rt.st.completed_at = Some(self.now());
        rt.st.activated_version = activate;
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
            rt,
            "rollout.complete",
            Severity::Info,
            actor,
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

    pub(super) fn finished(&self, success: bool) {
        let mut s = lock(&self.inner.stats);
        s.active_deployments = s.active_deployments.saturating_sub(1);
        if success {
            s.successful_deployments += 1;
        } else {
            s.failed_deployments += 1;
        }
    }
}
