//! Active time and budgets: the step and rollout clocks count only time the daemon was
//! running and the rollout not paused, and the rollout budget has an explicit outcome.

use super::*;

impl Engine {
    /// Advances the clocks of `rt` to `now`. Time counts while the rollout rolls out or is
    /// monitored (its step and rollout clocks) and while it rolls back (the rollback step's
    /// clock); a paused rollout only moves its anchor. The gap since the last look is
    /// capped at `max_tick_gap_ms` (not for an engine driven from outside, whose caller moves
    /// the clock on purpose), and a rollout loaded from the store has no anchor, so neither
    /// a frozen process nor downtime counts.
    pub(super) fn accrue(&self, rt: &mut Runtime, now: DateTime<Utc>) {
        let prev = rt.anchor.replace(now);
        let counting = matches!(
            rt.rec.state,
            DeploymentState::RollingOut
                | DeploymentState::Monitoring
                | DeploymentState::RollingBack
        );
        let Some(prev) = prev.filter(|_| counting) else { return };
        let cap = if self.inner.driven.load(Ordering::SeqCst) {
            i64::MAX
        } else {
            i64::try_from(self.inner.settings.max_tick_gap_ms).unwrap_or(i64::MAX)
        };
        let gap = now.signed_duration_since(prev).num_milliseconds().clamp(0, cap);
        let delta = u64::try_from(gap).unwrap_or(0);
        if delta > 0 && rt.rec.state == DeploymentState::RollingBack {
            // A rollback's steps and validation window count the same active time.
            if let Some(rb) = rt.st.rollback.as_mut() {
                rb.step_active_ms = rb.step_active_ms.saturating_add(delta);
                rt.clock_moved = true;
            }
        } else if delta > 0 {
            rt.st.active_ms = rt.st.active_ms.saturating_add(delta);
            rt.st.step_active_ms = rt.st.step_active_ms.saturating_add(delta);
            rt.clock_moved = true;
        }
    }

    /// The time the current step's analysis sees: the step's start plus its active time, so
    /// its minimum and maximum durations count the same active time.
    pub(super) fn phase_now(rt: &Runtime) -> DateTime<Utc> {
        plan::millis(rt.st.step_active_ms)
            .and_then(|d| rt.st.step_started_at.checked_add_signed(d))
            .unwrap_or(rt.st.step_started_at)
    }

    /// Checks the rollout budget (`canary.max_duration_secs` of active time). When spent it
    /// rolls back, or, with `auto_rollback` off, pauses once for a person. Returns whether
    /// it acted.
    pub(super) async fn check_rollout_budget(
        &self,
        rt: &mut Runtime,
        now: DateTime<Utc>,
    ) -> Result<bool, EngineError> {
        if !rt.st.settings.triggers.max_duration || rt.st.budget_held {
            return Ok(false);
        }
        let limit = rt.req.canary.max_duration_secs;
        if rt.st.active_ms < limit.saturating_mul(1000) {
            return Ok(false);
        }
        let why = format!(
            "the rollout spent its budget of {limit} s of active time (canary.max_duration_secs)"
        );
        if rt.req.canary.auto_rollback {
            rt.st.last_decision = Some(DecisionView {
                kind: "rollback".into(),
                rule: format!("budget: {why}"),
                at: now,
                reasons: vec![why],
                holding: None,
                projected_requests: None,
                projected_secs: None,
            });
            let mode = rt.req.rollback_mode;
            self.start_rollback(rt, RollbackReason::Timeout, true, mode, "engine").await?;
        } else {
            rt.st.budget_held = true;
            let reason = format!(
                "{why}; auto_rollback is off, so a person decides: resume to continue past the budget, promote, or roll back"
            );
            rt.st.last_decision = Some(DecisionView {
                kind: "halt".into(),
                rule: format!("budget: {why}"),
                at: now,
                reasons: vec![reason.clone()],
                holding: Some("rollout_budget".into()),
                projected_requests: None,
                projected_secs: None,
            });
            self.pause(rt, &reason, "engine").await?;
        }
        Ok(true)
    }

    /// Why a step's budget is spent, for a person.
    pub(super) fn step_budget_reason(rt: &Runtime) -> String {
        let i = rt.st.step;
        let Some(step) = rt.st.steps.get(i) else { return "the step's budget is spent".into() };
        let kind = serde_json::to_value(&step.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let mut limits = Vec::new();
        if let Some(s) = step.max_secs {
            limits.push(format!("{s} s of active time"));
        }
        if let Some(n) = step.max_samples {
            limits.push(format!("{n} requests"));
        }
        format!(
            "step {i} ({kind} at {} %) spent its budget ({}) without a decision",
            f64::from(step.share_bp) / 100.0,
            if limits.is_empty() { "none set".into() } else { limits.join(" or ") }
        )
    }
}
