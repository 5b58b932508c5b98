//! Promotion gates in the engine: a wait is recorded in the rollout's persisted status, a
//! pass of the control loop that finds it due starts the call on a task of its own (it never
//! waits for it), and the answer is applied under the rollout's lock, audited in the same
//! store write as the transition it allows, and wakes the rollout.
//!
//! - `pre_rollout`: after validation the rollout monitors step 0 with no traffic on the
//!   candidate (`route` is `None`: the slot serves its stable version) until every
//!   `pre_rollout` gate allowed; then step 0's split is entered.
//! - `confirm_promotion`: an automatic promotion (the analysis, or `promote_if_no_alarm`)
//!   waits for every `confirm_promotion` gate; the candidate keeps its share, and the
//!   analysis keeps looking meanwhile, so a rollback is never held up by a gate.
//! - `post_rollback`: asked once each after the rollout rolled back; answers are audited.
//!
//! A refusal holds (asked again after `retry_ms`) or rolls back, per `on_failure`. An
//! operator's promote, skip, rollback or abort ends the wait (audited as `gate_cancelled`
//! with the transition); a pause keeps it, and an answer that comes while paused is audited
//! and the gate asked again after the resume. A restart asks the awaited gate again.

use super::*;
use crate::gate::{self, CallContext, GateAnswer, GateWait};
use actuator_core::{GateFailure, GateKind, GateSpec};

/// Reads a gate's secret from the daemon's environment.
fn env(var: &str) -> Option<String> {
    std::env::var(var).ok()
}

impl Engine {
    /// Checks the request's gates at admission (ranges, and that every `secret_env` is set).
    pub(super) fn check_gates(req: &DeploymentRequest) -> Result<(), EngineError> {
        gate::check(req, env)
    }

    fn new_wait(
        rt: &mut Runtime,
        kind: GateKind,
        (index, spec): (usize, &GateSpec),
        target: usize,
        reason: String,
        winner: Option<Arm>,
        now: DateTime<Utc>,
    ) -> GateWait {
        rt.st.gate_seq = rt.st.gate_seq.saturating_add(1);
        GateWait {
            id: rt.st.gate_seq,
            kind,
            index,
            gate: spec.name.clone(),
            target,
            reason,
            winner,
            since: now,
            attempts: 0,
            next_try_at: now,
            last: None,
        }
    }

    /// The last step of `begin`: enters step 0, or, with `pre_rollout` gates, monitors it
    /// with no candidate traffic while the first gate is asked.
    pub(super) async fn enter_first_step(
        &self,
        rt: &mut Runtime,
        now: DateTime<Utc>,
        actor: &str,
    ) -> Result<(), EngineError> {
        let Some(first) = gate::next_of_kind(&rt.req, GateKind::PreRollout, None) else {
            return self.enter_step(rt, 0, now, "validated", "rollout.phase", actor).await;
        };
        let (index, spec) = (first.0, first.1.clone());
        let wait = Self::new_wait(
            rt,
            GateKind::PreRollout,
            (index, &spec),
            0,
            "validated".into(),
            None,
            now,
        );
        rt.st.gate = Some(wait);
        rt.st.step = 0;
        rt.st.step_started_at = now;
        rt.st.step_active_ms = 0;
        rt.anchor = Some(now);
        // No split yet: the routing table serves the stable version to everyone.
        rt.st.route = None;
        let why = format!(
            "validated; awaiting gate {} (pre_rollout) before any traffic moves",
            spec.name
        );
        self.commit(
            rt,
            DeploymentState::RollingOut,
            &why,
            "rollout.gate_wait",
            actor,
            None,
            json!({"gate": spec.name, "gate_kind": GateKind::PreRollout}),
        )
        .await?;
        self.commit(
            rt,
            DeploymentState::Monitoring,
            &format!("awaiting gate {}", spec.name),
            "rollout.monitor",
            actor,
            None,
            Value::Null,
        )
        .await
    }

    /// An automatic promotion: advances at once when the request has no `confirm_promotion`
    /// gate, else records the wait (the candidate keeps its share) unless one is already
    /// recorded.
    pub(super) async fn promote_gated(
        &self,
        rt: &mut Runtime,
        reason: &str,
        winner: Option<Arm>,
    ) -> Result<(), EngineError> {
        if rt.st.gate.is_some() {
            return Ok(());
        }
        let Some(first) = gate::next_of_kind(&rt.req, GateKind::ConfirmPromotion, None) else {
            return self.advance(rt, "engine", reason, "rollout.promote", winner).await;
        };
        let (index, spec) = (first.0, first.1.clone());
        let now = self.now();
        let target = rt.st.step.saturating_add(1);
        let wait = Self::new_wait(
            rt,
            GateKind::ConfirmPromotion,
            (index, &spec),
            target,
            reason.to_owned(),
            winner,
            now,
        );
        rt.st.gate = Some(wait);
        self.commit(
            rt,
            DeploymentState::Monitoring,
            &format!("{reason}; awaiting gate {} (confirm_promotion)", spec.name),
            "rollout.gate_wait",
            "engine",
            None,
            json!({"gate": spec.name, "gate_kind": GateKind::ConfirmPromotion, "target_step": target}),
        )
        .await
    }

    /// Ends a recorded wait because `actor` moved the rollout on (a promote, a skip, a
    /// rollback, an abort): the next commit audits it as `gate_cancelled`.
    pub(super) fn cancel_gate_wait(&self, rt: &mut Runtime, actor: &str) {
        let Some(w) = rt.st.gate.take() else { return };
        let cancelled = json!({"gate_cancelled": {"gate": w.gate, "kind": w.kind, "by": actor}});
        rt.pending_audit = Some(match rt.pending_audit.take() {
            Some(Value::Object(mut m)) => {
                if let Value::Object(c) = cancelled {
                    m.extend(c);
                }
                Value::Object(m)
            }
            _ => cancelled,
        });
    }

    /// What a gate is told about `rt`.
    fn call_context(rt: &Runtime, next_phase: Option<usize>, attempt: u32) -> CallContext {
        let decision = rt
            .st
            .last_decision
            .as_ref()
            .map_or(Value::Null, |d| json!({"kind": d.kind, "rule": d.rule, "reasons": d.reasons}));
        CallContext {
            rollout: rt.rec.id.clone(),
            slot: rt.rec.slot.to_string(),
            strategy: rt.rec.strategy.as_str().to_owned(),
            state: rt.rec.state.as_str().to_owned(),
            phase: rt.st.step,
            next_phase,
            share_percent: rt.st.share_percent(),
            stable_version: rt.st.stable_version,
            candidate_version: rt.st.candidate_version,
            decision,
            attempt,
        }
    }

    /// A pass's part for a monitored rollout with a recorded wait: when the gate is due and
    /// no call is in flight, starts the call on its own task. Returns whether the analysis
    /// waits too (a `pre_rollout` wait: the candidate has no traffic to analyse yet).
    pub(super) fn gate_tick(&self, rt: &mut Runtime, now: DateTime<Utc>) -> bool {
        let Some(w) = rt.st.gate.as_ref() else { return false };
        let holds_look = w.kind == GateKind::PreRollout;
        if holds_look {
            // Nothing to look at: the rollout is due again by its gate's retry or its answer.
            rt.fresh = false;
            rt.looked = Some((now, rt.st.step, rt.st.step_active_ms));
        }
        if rt.gate_in_flight == Some(w.id) || now < w.next_try_at {
            return holds_look;
        }
        let Some(spec) = rt.req.gates.get(w.index).cloned() else {
            // The stored request lost the gate (it cannot: the request is immutable); drop the
            // wait rather than hold the rollout on nothing.
            tracing::error!(rollout = %rt.rec.id, gate = %w.gate, "the awaited gate is not in the request; dropping the wait");
            rt.st.gate = None;
            rt.dirty = true;
            return holds_look;
        };
        let (wait_id, target) = (w.id, w.target);
        let attempt = w.attempts.saturating_add(1);
        let ctx = Self::call_context(rt, Some(target), attempt);
        rt.gate_in_flight = Some(wait_id);
        let me = self.clone();
        let id = rt.rec.id.clone();
        tracing::debug!(rollout = %id, gate = %spec.name, attempt, "asking a gate");
        // The call runs on its own task, bounded by the gate's timeout: the pass goes on.
        tokio::spawn(async move {
            let answer = gate::call(&spec, &ctx, me.now(), env).await;
            me.gate_answered(&id, wait_id, answer).await;
        });
        holds_look
    }

    /// When the loop must take a rollout for its gate: at the gate's next try, unless a call
    /// is in flight (its answer wakes the rollout).
    pub(super) fn gate_due_ms(rt: &Runtime) -> Option<i64> {
        let w = rt.st.gate.as_ref()?;
        (rt.gate_in_flight != Some(w.id)).then(|| w.next_try_at.timestamp_millis())
    }

    /// Applies an answer under the rollout's lock, then wakes the rollout.
    async fn gate_answered(&self, id: &str, wait_id: u64, answer: GateAnswer) {
        let Some(shared) = self.runtime(id) else {
            return self
                .audit_gate_answer(id, &answer, Some("the rollout is no longer active"))
                .await;
        };
        let mut g = shared.lock().await;
        if g.gate_in_flight == Some(wait_id) {
            g.gate_in_flight = None;
        }
        // Changed under its lock: the loop takes it on its next pass.
        self.wake_rollout(id);
        let current = g.st.gate.as_ref().is_some_and(|w| w.id == wait_id)
            && matches!(g.rec.state, DeploymentState::Monitoring | DeploymentState::Paused);
        if !current {
            drop(g);
            return self
                .audit_gate_answer(id, &answer, Some("the rollout no longer waits for this gate"))
                .await;
        }
        if let Err(e) = self.apply_gate_answer(&mut g, answer).await {
            // The wait is still in the store: the gate is asked again.
            tracing::warn!(rollout = %id, error = %e, "could not apply a gate's answer; it will be asked again");
        }
        drop(g);
        self.wake();
    }

    /// An answer that allows nothing (a stale one, a `post_rollback` one) in an audit entry
    /// of its own: outcome `failure` unless the gate allowed.
    async fn audit_gate_answer(&self, id: &str, answer: &GateAnswer, stale: Option<&str>) {
        let actor = format!("gate:{}", answer.gate);
        let meta = json!({"gate_answer": answer, "stale": stale});
        let draft = if answer.allowed() {
            AuditDraft::success(actor, "rollout.gate_answer", id)
        } else {
            AuditDraft::failure(actor, "rollout.gate_answer", id, answer.summary())
        };
        if let Err(e) = self.store().append_audit(draft.with_metadata(meta)).await {
            tracing::warn!(rollout = %id, gate = %answer.gate, error = %e, "could not audit a gate's answer");
        }
    }

    async fn apply_gate_answer(
        &self,
        rt: &mut Runtime,
        answer: GateAnswer,
    ) -> Result<(), EngineError> {
        let Some(mut w) = rt.st.gate.clone() else { return Ok(()) };
        let now = self.now();
        let spec = rt.req.gates.get(w.index);
        let on_failure = spec.map_or(GateFailure::Hold, |s| s.on_failure);
        let retry_ms = spec.map_or(actuator_core::gate::default_retry_ms(), |s| s.retry_ms);
        let actor = format!("gate:{}", w.gate);
        let summary = answer.summary();
        let meta = json!({"gate_answer": answer, "gate_wait": w.id});
        w.attempts = answer.attempt;
        w.last = Some(answer.clone());
        if rt.rec.state == DeploymentState::Paused {
            // Held by a person: the answer is kept and audited, and the gate asked again once
            // the rollout is resumed.
            w.next_try_at = now;
            let why = format!(
                "gate {} answered {summary} while the rollout is paused; asked again after a resume",
                w.gate
            );
            rt.st.gate = Some(w);
            return self
                .commit(
                    rt,
                    DeploymentState::Paused,
                    &why,
                    "rollout.gate_answer",
                    &actor,
                    None,
                    meta,
                )
                .await;
        }
        if answer.allowed() {
            let why = format!("gate {} allowed ({summary})", w.gate);
            if let Some((index, next)) = gate::next_of_kind(&rt.req, w.kind, Some(w.index)) {
                let next = next.clone();
                let mut wait = Self::new_wait(
                    rt,
                    w.kind,
                    (index, &next),
                    w.target,
                    w.reason.clone(),
                    w.winner.clone(),
                    now,
                );
                wait.since = w.since;
                rt.st.gate = Some(wait);
                return self
                    .commit(
                        rt,
                        DeploymentState::Monitoring,
                        &format!("{why}; awaiting gate {}", next.name),
                        "rollout.gate_answer",
                        &actor,
                        None,
                        meta,
                    )
                    .await;
            }
            rt.st.gate = None;
            // Audited in the write of the transition the answer allows.
            rt.pending_audit = Some(meta);
            return match w.kind {
                GateKind::PreRollout => {
                    self.enter_step(rt, 0, now, &why, "rollout.phase", &actor).await?;
                    self.notify(
                        rt,
                        "rollout.phase",
                        Severity::Info,
                        &actor,
                        format!("rollout {}: {why}; traffic moves to the candidate", rt.rec.id),
                        Value::Null,
                    );
                    Ok(())
                }
                _ => {
                    let reason = format!("{}; {why}", w.reason);
                    self.advance_to(rt, w.target, &actor, &reason, "rollout.promote", w.winner)
                        .await
                }
            };
        }
        match on_failure {
            GateFailure::Rollback => {
                rt.st.gate = None;
                rt.pending_audit = Some(meta);
                let mode = rt.req.rollback_mode;
                let reason = RollbackReason::Gate { gate: w.gate.clone(), answer: summary };
                self.start_rollback(rt, reason, true, mode, &actor).await
            }
            GateFailure::Hold => {
                let wait = i64::try_from(retry_ms)
                    .ok()
                    .and_then(chrono::TimeDelta::try_milliseconds)
                    .unwrap_or_else(chrono::TimeDelta::zero);
                w.next_try_at = now.checked_add_signed(wait).unwrap_or(now);
                let first = w.attempts <= 1;
                let why = w.message();
                rt.st.gate = Some(w);
                self.commit(
                    rt,
                    DeploymentState::Monitoring,
                    &why,
                    "rollout.gate_held",
                    &actor,
                    None,
                    meta,
                )
                .await?;
                if first {
                    self.notify(
                        rt,
                        "rollout.gate_held",
                        Severity::Warning,
                        &actor,
                        format!("rollout {} {why}", rt.rec.id),
                        Value::Null,
                    );
                }
                Ok(())
            }
        }
    }

    /// After a rollback: asks each `post_rollback` gate once, on a task of its own, and
    /// audits every answer.
    pub(super) fn post_rollback_gates(&self, rt: &Runtime) {
        let gates: Vec<GateSpec> = gate::of_kind(&rt.req, GateKind::PostRollback)
            .into_iter()
            .map(|(_, g)| g.clone())
            .collect();
        if gates.is_empty() {
            return;
        }
        let ctx = Self::call_context(rt, None, 1);
        let me = self.clone();
        let id = rt.rec.id.clone();
        tokio::spawn(async move {
            for spec in gates {
                let answer = gate::call(&spec, &ctx, me.now(), env).await;
                if !answer.allowed() {
                    tracing::warn!(rollout = %id, gate = %spec.name, answer = %answer.summary(), "a post_rollback gate did not allow");
                }
                me.audit_gate_answer(&id, &answer, None).await;
            }
        });
    }
}
