//! One look at a monitored rollout: the analysis, the triggers, and what follows.

use super::*;

impl Engine {
    // ---------------------------------------------------------------- the loop

    pub(super) async fn tick(&self, rt: &mut Runtime) -> Result<(), EngineError> {
        let now = self.now();
        self.accrue(rt, now);
        match rt.rec.state {
            DeploymentState::Monitoring => {
                // The rollout budget has its own check on every pass, before the analysis.
                if self.check_rollout_budget(rt, now).await? {
                    return Ok(());
                }
                // A gate's call starts on its own task; a pre_rollout wait has nothing to
                // analyse yet.
                let gate_holds = self.gate_tick(rt, now);
                if !gate_holds && look_due(rt, now) {
                    self.look(rt, now).await?;
                }
            }
            // Held at an inconclusive step: the spread stopped, the protection did not.
            DeploymentState::Paused if rt.st.held_watch && look_due(rt, now) => {
                self.watch_held(rt, now).await?;
            }
            DeploymentState::RollingBack => self.rollback_tick(rt, now).await?,
            _ => {}
        }
        // The checkpoint, when due, is written by the pass with every other due rollout's.
        Ok(())
    }

    pub(super) async fn look(
        &self,
        rt: &mut Runtime,
        now: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        rt.fresh = false;
        rt.looked = Some((now, rt.st.step, rt.st.step_active_ms));
        // The step's analysis sees the step's active time as its elapsed time.
        let phase_now = Self::phase_now(rt);
        let Some(health) = rt.st.health.as_mut() else { return Ok(()) };
        let eval = health.look(phase_now);
        let mut view = DecisionView::from_eval(&eval);
        // The analysis ran on the step's active time; the decision is shown at the real time.
        view.at = now;
        // Guard rails breaching now: promote_if_no_alarm never promotes over one.
        let failing = eval.explanation.comparisons.iter().any(|c| {
            c.checks.iter().any(|k| matches!(k.status, actuator_health::CheckStatus::Breach))
        });
        // The seed's numeric triggers are SLO guards inside the analysis's budget (see
        // `health_config`); the rollout's maximum duration is checked above as its budget.
        let input = trigger_input(false);
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
                actuator_rollback::TriggerKind::Timeout => RollbackReason::Timeout,
            };
            let mode = rt.req.rollback_mode;
            return self.start_rollback(rt, reason, true, mode, "engine").await;
        }
        metrics::counter!(
            "actuator_decisions_total",
            "kind" => view.kind.clone(),
            "rule" => decision_rule(&eval.decision),
        )
        .increment(1);
        let changed =
            rt.st.last_decision.as_ref().is_none_or(|d| d.kind != view.kind || d.rule != view.rule);
        rt.st.last_decision = Some(view.clone());
        // A look that decides what the last one did is not worth a write of its own: the
        // evidence behind it is saved when it changes (new observations mark the rollout
        // dirty), and the view is saved with the next checkpoint.
        if changed {
            rt.dirty = true;
        }
        let auto_promote = rt.req.canary.auto_promote;
        let auto_rollback = rt.req.canary.auto_rollback;
        // Missing metric data (a rollout fed by a metric source) holds every promotion.
        let promotes = match eval.decision {
            Decision::Promote { .. } => true,
            Decision::Inconclusive { .. } => matches!(
                super::steps::inconclusive_policy(rt),
                InconclusivePolicy::PromoteIfNoAlarm
            ),
            _ => false,
        };
        if promotes && let Some(held) = self.feed_hold(rt) {
            if let Some(d) = rt.st.last_decision.as_mut() {
                d.reasons.push(held);
            }
            rt.st.awaiting_promotion = false;
            return Ok(());
        }
        match eval.decision {
            Decision::Continue => {
                rt.st.awaiting_promotion = false;
                Ok(())
            }
            Decision::Promote { arm } => {
                if auto_promote {
                    self.promote_gated(rt, "analysis: promote", Some(arm)).await
                } else {
                    if !rt.st.awaiting_promotion {
                        self.notify(
                            rt,
                            "rollout.awaiting_promotion",
                            Severity::Info,
                            "engine",
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
            Decision::Inconclusive { .. } => {
                let budget = Self::step_budget_reason(rt);
                let detail = if view.reasons.is_empty() {
                    budget
                } else {
                    format!("{budget}: {}", view.reasons.join("; "))
                };
                // Told once per new inconclusive decision, before its policy acts (a
                // notification only: what the policy does is audited by its own action).
                if changed {
                    self.notify(
                        rt,
                        "rollout.inconclusive",
                        Severity::Warning,
                        "engine",
                        format!(
                            "rollout {} is inconclusive at step {}: {detail}",
                            rt.rec.id, rt.st.step
                        ),
                        json!({"policy": super::steps::inconclusive_policy(rt)}),
                    );
                }
                match super::steps::inconclusive_policy(rt) {
                    InconclusivePolicy::Hold => {
                        let watch = if auto_rollback {
                            "; the analysis keeps watching and still rolls back"
                        } else {
                            ""
                        };
                        let reason = format!(
                            "inconclusive: {detail}; held for a person (promote, skip or roll back){watch}"
                        );
                        self.pause_watched(rt, &reason, auto_rollback).await
                    }
                    InconclusivePolicy::PromoteIfNoAlarm => {
                        let g = &eval.explanation.gates;
                        let minimums =
                            g.samples >= g.min_samples && g.elapsed_secs >= g.min_duration_secs;
                        if failing || !fired.is_empty() {
                            let alarms: Vec<String> =
                                fired.iter().map(|f| f.message.clone()).collect();
                            let what = if alarms.is_empty() {
                                "a guard rail is breaching".to_owned()
                            } else {
                                alarms.join("; ")
                            };
                            self.pause(
                                rt,
                                &format!(
                                    "inconclusive with an alarm ({what}): promote_if_no_alarm does not promote; {detail}"
                                ),
                                "engine",
                            )
                            .await
                        } else if !minimums {
                            self.pause(
                                rt,
                                &format!(
                                    "inconclusive before the step's minimums were met ({} of {} requests, {} of {} s): promote_if_no_alarm does not promote; {detail}",
                                    g.samples, g.min_samples, g.elapsed_secs, g.min_duration_secs
                                ),
                                "engine",
                            )
                            .await
                        } else if !auto_promote {
                            // auto_promote off always waits for a person.
                            if !rt.st.awaiting_promotion {
                                self.notify(
                                    rt,
                                    "rollout.awaiting_promotion",
                                    Severity::Info,
                                    "engine",
                                    format!(
                                        "rollout {} can be promoted (inconclusive, no alarm); auto_promote is off",
                                        rt.rec.id
                                    ),
                                    Value::Null,
                                );
                            }
                            rt.st.awaiting_promotion = true;
                            Ok(())
                        } else {
                            self.promote_gated(
                                rt,
                                &format!(
                                    "inconclusive, no alarm, minimums met: promote ({detail})"
                                ),
                                None,
                            )
                            .await
                        }
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
                }
            }
            Decision::Halt { .. } => {
                if changed {
                    self.pause(rt, &format!("halted: {}", view.reasons.join("; ")), "engine").await
                } else {
                    Ok(())
                }
            }
        }
    }

    /// One look at a rollout held at an inconclusive step ([`EngineStatus::held_watch`]):
    /// the analysis runs on the evidence that keeps arriving, and only its rollback acts
    /// (promotion and the inconclusive policy wait for the person). Every rollback rule is
    /// an e-process, valid at any stopping time, so watching for longer spends nothing
    /// beyond the rollout's α.
    pub(super) async fn watch_held(
        &self,
        rt: &mut Runtime,
        now: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        rt.fresh = false;
        rt.looked = Some((now, rt.st.step, rt.st.step_active_ms));
        let phase_now = Self::phase_now(rt);
        let Some(health) = rt.st.health.as_mut() else { return Ok(()) };
        let eval = health.look(phase_now);
        let Decision::Rollback { rules, .. } = &eval.decision else { return Ok(()) };
        let names: Vec<String> =
            rules.iter().map(|r| format!("{:?}:{}", r.kind, r.metric).to_lowercase()).collect();
        metrics::counter!(
            "actuator_decisions_total",
            "kind" => "rollback",
            "rule" => decision_rule(&eval.decision),
        )
        .increment(1);
        let mut view = DecisionView::from_eval(&eval);
        view.at = now;
        rt.st.last_decision = Some(view);
        rt.dirty = true;
        let mode = rt.req.rollback_mode;
        self.start_rollback(rt, RollbackReason::Analysis { rules: names }, true, mode, "engine")
            .await
    }

    /// Pauses for a person at an inconclusive step with `hold`, keeping the analysis on
    /// watch when `watch` (the rollout rolls back by itself).
    async fn pause_watched(
        &self,
        rt: &mut Runtime,
        reason: &str,
        watch: bool,
    ) -> Result<(), EngineError> {
        rt.st.held_watch = watch;
        self.pause_as(rt, reason, "engine").await
    }

    pub(super) async fn pause(
        &self,
        rt: &mut Runtime,
        reason: &str,
        actor: &str,
    ) -> Result<(), EngineError> {
        rt.st.held_watch = false;
        self.pause_as(rt, reason, actor).await
    }

    async fn pause_as(
        &self,
        rt: &mut Runtime,
        reason: &str,
        actor: &str,
    ) -> Result<(), EngineError> {
        rt.st.paused_reason = Some(reason.to_owned());
        self.commit(rt, DeploymentState::Paused, reason, "rollout.pause", actor, None, Value::Null)
            .await?;
        let sev = if actor == "engine" { Severity::Warning } else { Severity::Info };
        self.notify(
            rt,
            "rollout.pause",
            sev,
            actor,
            format!("rollout {} paused: {reason}", rt.rec.id),
            Value::Null,
        );
        Ok(())
    }
}

/// How long a monitored rollout with no new evidence goes without a look (30 s): what a
/// look decides without new data changes only with time, and every timer that moves a
/// decision by itself (the step's minimum and maximum durations, the rollout's budget) has
/// its own deadline (`Engine::next_due_ms`) and is checked exactly below; what is left is
/// the projection of the time to a decision at the current traffic, which ages slowly.
pub(super) const IDLE_LOOK_MS: i64 = 30_000;

/// Whether the analysis should look at `rt` now: new evidence or a change of state since the
/// last look, a new step, the step's minimum or maximum duration crossed in active time since
/// the last look, or [`IDLE_LOOK_MS`] passed. A rollout that nothing happened to costs no
/// analysis on a pass.
fn look_due(rt: &Runtime, now: DateTime<Utc>) -> bool {
    let Some((at, step, step_ms)) = rt.looked else { return true };
    if rt.fresh || step != rt.st.step || (now - at).num_milliseconds() >= IDLE_LOOK_MS {
        return true;
    }
    let Some(s) = rt.st.steps.get(rt.st.step) else { return true };
    let crossed = |secs: u64| {
        let gate = secs.saturating_mul(1000);
        step_ms < gate && gate <= rt.st.step_active_ms
    };
    crossed(s.min_secs) || s.max_secs.is_some_and(crossed)
}

/// What the remaining trigger (maximum duration) looks at.
const fn trigger_input(past_max: bool) -> actuator_rollback::TriggerInput {
    actuator_rollback::TriggerInput { past_max_duration: past_max }
}

/// A decision's rule for the metrics, of bounded cardinality: the first rule of a rollback
/// (`sequential:errors`, `sloguard:...`, `catastrophic:errors`), else the decision's kind.
fn decision_rule(d: &Decision) -> String {
    match d {
        Decision::Rollback { rules, .. } => rules.first().map_or_else(
            || "rollback".into(),
            |r| format!("{:?}:{}", r.kind, r.metric).to_lowercase(),
        ),
        Decision::Continue => "continue".into(),
        Decision::Promote { .. } => "promote".into(),
        Decision::Inconclusive { .. } => "inconclusive".into(),
        Decision::Halt { .. } => "halt".into(),
    }
}
