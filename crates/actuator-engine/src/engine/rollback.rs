//! Fast and gradual rollback, and the validation of the stable config afterwards.

use super::*;

impl Engine {
    // ---------------------------------------------------------------- rollback

    pub(super) async fn start_rollback(
        &self,
        rt: &mut Runtime,
        reason: RollbackReason,
        automatic: bool,
        mode: RollbackMode,
        actor: &str,
    ) -> Result<(), EngineError> {
        let decided = Instant::now();
        let now = self.now();
        metrics::counter!("actuator_rollbacks_total", "trigger" => rollback_trigger(&reason))
            .increment(1);
        // A completed rollout rolled back within its window: the version it replaced becomes
        // active again in the same write, and the candidate's share steps down from there.
        let after_completion = rt.rec.state == DeploymentState::Completed;
        let activate = if after_completion { rt.st.stable_version } else { None };
        self.cancel_gate_wait(rt, actor);
        rt.st.archive_rollback();
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
            next_at: plan::secs(step_secs).and_then(|d| now.checked_add_signed(d)).unwrap_or(now),
            step_ms: step_secs.saturating_mul(1000),
            step_active_ms: 0,
            control_requests: 0,
            control_errors: 0,
            result: None,
            after_completion,
        });
        if let Some(r) = rt.st.route.as_mut() {
            r.share = share(first);
            if first == 0 {
                r.overrides = Default::default();
            }
        }
        rt.st.paused_reason = None;
        rt.st.held_watch = false;
        let why = match &reason {
            RollbackReason::Manual { reason } => format!("manual rollback: {reason}"),
            other => format!("rollback: {other}"),
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
            activate,
            json!({"automatic": automatic, "mode": mode, "rollback_reason": reason, "after_completion": after_completion}),
        );
        match tokio::time::timeout(limit, fut).await {
            Ok(r) => r?,
            Err(_) => {
                self.notify(
                    rt,
                    "rollout.rollback_timeout",
                    Severity::Critical,
                    actor,
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
            rt,
            action,
            if automatic { Severity::Critical } else { Severity::Warning },
            actor,
            format!(
                "rollout {} of {} is rolling back ({why}); routing flipped in {flip:.1} ms",
                rt.rec.id, rt.rec.slot
            ),
            json!({"flip_ms": flip, "automatic": automatic, "mode": mode, "rollback_reason": reason, "after_completion": after_completion}),
        );
        Ok(())
    }

    pub(super) async fn rollback_tick(
        &self,
        rt: &mut Runtime,
        now: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        self.accrue(rt, now);
        let Some(rb) = rt.st.rollback.as_mut() else { return Ok(()) };
        let due = if rb.step_ms > 0 { rb.step_active_ms >= rb.step_ms } else { now >= rb.next_at };
        if !due {
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
            rb.next_at = plan::secs(secs).and_then(|d| now.checked_add_signed(d)).unwrap_or(now);
            rb.step_ms = secs.saturating_mul(1000);
            rb.step_active_ms = 0;
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
            duration_ms: now.signed_duration_since(rb.decided_at).num_milliseconds().max(0) as f64,
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
        self.post_rollback_gates(rt);
        let sev = if validated == Some(false) { Severity::Critical } else { Severity::Info };
        self.notify(
            rt,
            "rollout.rolled_back",
            sev,
            "engine",
            format!("rollout {} rolled back: {summary}", rt.rec.id),
            Value::Null,
        );
        Ok(())
    }
}

/// The kind of a rollback's reason, for the metrics (`analysis`, `manual`, `timeout`, ...).
fn rollback_trigger(reason: &RollbackReason) -> String {
    serde_json::to_value(reason)
        .ok()
        .and_then(|v| {
            v.get("kind")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
                .or_else(|| v.as_str().map(str::to_owned))
        })
        .unwrap_or_else(|| "other".into())
}
