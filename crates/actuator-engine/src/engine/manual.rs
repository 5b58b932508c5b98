//! Operator actions on a rollout: pause, resume, promote, skip, abort, rollback, retry.

use super::*;

/// An operator's action on a rollout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ManualAction {
    /// Hold traffic as it is.
    Pause,
    /// Continue after a pause.
    Resume,
    /// Go to the next step now, or (`full`) straight to 100 %.
    Promote {
        /// Jump to the plan's 100 % step, which still watches the candidate; when there is
        /// none (or the rollout is already there), complete.
        full: bool,
        /// With `full`: complete at once, without the 100 % step's analysis.
        #[serde(default)]
        skip_analysis: bool,
    },
    /// Leave the current step without its analysis.
    Skip,
    /// Stop and send all traffic back to stable at once; the rollout ends `aborted`.
    Abort,
    /// Start an aborted, rolled-back or failed rollout again.
    Retry,
    /// Roll back with a reason: an active rollout, or a completed one within its rollback
    /// window (the version it replaced becomes active again).
    Rollback {
        /// Why.
        reason: String,
        /// Step the share down instead of one switch.
        gradual: bool,
    },
}

impl ManualAction {
    pub(super) fn name(&self) -> &'static str {
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

impl Engine {
    // ---------------------------------------------------------------- manual control

    /// Applies an operator's action; audited with `actor`.
    pub async fn act(
        &self,
        id: &str,
        action: ManualAction,
        actor: &str,
    ) -> Result<RolloutView, EngineError> {
        self.act_because(id, action, actor, "").await
    }

    /// [`Engine::act`] with the operator's reason, recorded in the transition and its audit
    /// entry (`paused by alice: latency looks off`). A rollback's own reason is in its action.
    ///
    /// # Errors
    /// As [`Engine::act`]; a reason longer than the limit or with control characters is
    /// refused, naming `reason`, and nothing changes.
    pub async fn act_because(
        &self,
        id: &str,
        action: ManualAction,
        actor: &str,
        reason: &str,
    ) -> Result<RolloutView, EngineError> {
        check_reason(reason)?;
        let because = if reason.is_empty() { String::new() } else { format!(": {reason}") };
        if let ManualAction::Retry = action {
            return self.retry(id, actor, &because).await;
        }
        if let ManualAction::Rollback { reason, gradual } = &action {
            check_reason(reason)?;
            if self.runtime(id).is_none() {
                return self.rollback_completed(id, reason, *gradual, actor).await;
            }
        }
        let rt = self.runtime(id).ok_or_else(|| self.missing_or_inactive(id, action.name()))?;
        let mut g = rt.lock().await;
        // Changed under its lock: the loop takes it on its next pass.
        self.wake_rollout(id);
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
                self.pause(&mut g, &format!("paused by {actor}{because}"), actor).await?;
            }
            ManualAction::Resume => {
                if state != Paused {
                    return Err(bad());
                }
                g.st.paused_reason = None;
                g.st.held_watch = false;
                // The clocks start again from now: the pause never counts.
                g.anchor = Some(self.now());
                self.commit(
                    &mut g,
                    Monitoring,
                    &format!("resumed by {actor}{because}"),
                    "rollout.resume",
                    actor,
                    None,
                    Value::Null,
                )
                .await?;
            }
            ManualAction::Promote { full, skip_analysis } => {
                if !matches!(state, Monitoring | Paused) {
                    return Err(bad());
                }
                let last = g.st.steps.len().saturating_sub(1);
                let watch_last = *full
                    && !*skip_analysis
                    && g.rec.strategy != DeploymentStrategy::AbTest
                    && g.st.step < last
                    && g.st.steps.get(last).is_some_and(|s| s.share_bp >= 10_000);
                if *full && !watch_last {
                    let how =
                        if *skip_analysis { " without the 100 % step's analysis" } else { "" };
                    self.complete(
                        &mut g,
                        actor,
                        &format!("promoted fully by {actor}{how}{because}"),
                        None,
                    )
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
                    let (next, why) = if watch_last {
                        (
                            last,
                            format!(
                                "promoted to 100 % by {actor}{because}; the 100 % step watches"
                            ),
                        )
                    } else {
                        (g.st.step + 1, format!("promoted by {actor}{because}"))
                    };
                    self.advance_to(&mut g, next, actor, &why, "rollout.promote", None).await?;
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
                    &format!("step {step} skipped by {actor}{because}"),
                    "rollout.skip",
                    None,
                )
                .await?;
            }
            ManualAction::Abort => {
                if !matches!(state, RollingOut | Monitoring | Paused) {
                    return Err(bad());
                }
                self.abort(&mut g, actor, &because).await?;
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
        let view = g.view();
        let done = g.rec.state.is_terminal();
        drop(g);
        if done {
            self.inner.runtimes.write().unwrap_or_else(|p| p.into_inner()).remove(id);
        }
        self.wake();
        Ok(view)
    }

    pub(super) fn missing_or_inactive(&self, id: &str, action: &str) -> EngineError {
        EngineError::InvalidTransition {
            action: action.into(),
            id: id.into(),
            state: "not active (finished or unknown)".into(),
        }
    }

    pub(super) async fn retry(
        &self,
        id: &str,
        actor: &str,
        because: &str,
    ) -> Result<RolloutView, EngineError> {
        let rec = self
            .store()
            .get_rollout(id)
            .await?
            .ok_or_else(|| EngineError::UnknownRollout(id.into()))?;
        if !matches!(
            rec.state,
            DeploymentState::RolledBack | DeploymentState::Failed | DeploymentState::Aborted
        ) {
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
        // A request stored before the ranges existed is held to them before it runs again.
        plan::check_ranges(&req, &st.settings)?;
        let now = self.now();
        st.started_at = now;
        st.step = 0;
        st.step_started_at = now;
        st.route = None;
        st.health = None;
        st.last_decision = None;
        st.paused_reason = None;
        st.held_watch = false;
        st.awaiting_promotion = false;
        st.gate = None;
        // Earlier rollbacks stay in the rollout's bounded history.
        st.archive_rollback();
        st.outcome = None;
        st.active_ms = 0;
        st.step_active_ms = 0;
        st.budget_held = false;
        st.completed_at = None;
        st.activated_version = None;
        let was_aborted = rec.state == DeploymentState::Aborted;
        let mut rt = Runtime::new(rec, st, req, self.now());
        self.readmit(&mut rt, actor, because).await?;
        {
            let mut s = lock(&self.inner.stats);
            s.active_deployments += 1;
            if was_aborted {
                s.aborted_deployments = s.aborted_deployments.saturating_sub(1);
            } else {
                s.failed_deployments = s.failed_deployments.saturating_sub(1);
            }
        }
        let slot_name = rt.rec.slot.clone();
        let shared: Shared = Arc::new(Mutex::new(rt));
        self.inner.runtimes.write().unwrap_or_else(|p| p.into_inner()).insert(
            id.to_owned(),
            slot_name,
            shared.clone(),
        );
        let mut g = shared.lock().await;
        // Changed under its lock: the loop takes it on its next pass.
        self.wake_rollout(id);
        self.begin(&mut g, actor).await?;
        Ok(g.view())
    }
}

impl Engine {
    /// Moves a finished rollout back to Pending. The store admits it in that transaction
    /// (the limit, one rollout per slot) and reads the slot's active version as its stable
    /// version; when that version moved since it was read here, it is read again.
    async fn readmit(
        &self,
        rt: &mut Runtime,
        actor: &str,
        because: &str,
    ) -> Result<(), EngineError> {
        let reason = format!("retried by {actor}{because}");
        let from = rt.rec.state;
        rt.st.push_transition(Transition {
            from,
            to: DeploymentState::Pending,
            at: self.now(),
            reason: reason.clone(),
        });
        let mut attempt = 0;
        loop {
            let stable = self.inner.config.get_slot(&rt.rec.slot).await?.active_version;
            rt.st.stable_version = stable;
            let status = serde_json::to_value(&rt.st)
                .map_err(|e| EngineError::Invalid(format!("status: {e}")))?;
            let update = RolloutUpdate {
                expected_revision: rt.rec.revision,
                state: DeploymentState::Pending,
                status,
                activate_version: None,
                admission: self.admission(stable),
            };
            let audit = AuditDraft::success(actor, "rollout.retry", rt.rec.id.clone())
                .with_metadata(json!({
                    "slot": rt.rec.slot, "from": from, "to": DeploymentState::Pending,
                    "phase": rt.st.step, "share_percent": rt.st.share_percent(),
                    "reason": reason, "stable_version": stable,
                }));
            match self.store().update_rollout(&rt.rec.id, update, audit).await {
                Ok(rec) => {
                    rt.st.stable_version = rec.stable_version;
                    rt.set_record(rec);
                    rt.mark_saved(self.now());
                    self.inner.routes.refresh_slot(&rt.rec.slot).await;
                    return Ok(());
                }
                Err(StoreError::StableChanged { .. }) if attempt < 8 => attempt += 1,
                Err(e) => return Err(super::admission::admission_error(&rt.rec.slot, e)),
            }
        }
    }

    /// Ends an active rollout as `aborted`: all traffic goes back to the stable config in the
    /// same write, with no rollback validation; not counted as a rollback.
    pub(super) async fn abort(
        &self,
        rt: &mut Runtime,
        actor: &str,
        because: &str,
    ) -> Result<(), EngineError> {
        self.cancel_gate_wait(rt, actor);
        rt.st.route = None;
        rt.st.paused_reason = None;
        rt.st.held_watch = false;
        rt.st.awaiting_promotion = false;
        let stable = rt
            .st
            .stable_version
            .map_or_else(|| "the stable version".into(), |v| format!("version {v}"));
        rt.st.outcome = Some(format!("aborted by {actor}{because}; {stable} serves all traffic"));
        self.commit(
            rt,
            DeploymentState::Aborted,
            &format!("aborted by {actor}{because}"),
            "rollout.abort",
            actor,
            None,
            Value::Null,
        )
        .await?;
        {
            let mut s = lock(&self.inner.stats);
            s.active_deployments = s.active_deployments.saturating_sub(1);
            s.aborted_deployments += 1;
        }
        self.notify(
            rt,
            "rollout.abort",
            Severity::Warning,
            actor,
            format!("rollout {} of {} aborted by {actor}{because}", rt.rec.id, rt.rec.slot),
            Value::Null,
        );
        Ok(())
    }

    /// Rolls a completed rollout back within its rollback window: the version it replaced is
    /// made active again and the candidate's share goes to 0 at once (fast) or steps down
    /// from 100 % with the restored version as control (gradual). Refused once the window
    /// has closed, when another rollout holds the slot, or when a later change replaced the
    /// version the rollout made active.
    async fn rollback_completed(
        &self,
        id: &str,
        reason: &str,
        gradual: bool,
        actor: &str,
    ) -> Result<RolloutView, EngineError> {
        let rec = self
            .store()
            .get_rollout(id)
            .await?
            .ok_or_else(|| EngineError::UnknownRollout(id.into()))?;
        if rec.state != DeploymentState::Completed {
            return Err(EngineError::InvalidTransition {
                action: "rollback".into(),
                id: id.into(),
                state: rec.state.to_string(),
            });
        }
        let req: DeploymentRequest = serde_json::from_value(rec.request.clone())
            .map_err(|e| EngineError::Invalid(format!("stored request: {e}")))?;
        let st: EngineStatus = serde_json::from_value(rec.status.clone())
            .map_err(|e| EngineError::Invalid(format!("stored status: {e}")))?;
        let refuse = |detail: String| EngineError::RollbackRefused { id: id.into(), detail };
        let now = self.now();
        let window = req.canary.rollback_window_secs;
        let Some(done_at) = st.completed_at else {
            return Err(refuse("it completed before rollback windows were recorded".into()));
        };
        let until = plan::secs(window).and_then(|d| done_at.checked_add_signed(d));
        match until {
            Some(u) if window > 0 && now <= u => {}
            _ => {
                return Err(refuse(format!(
                    "its rollback window of {window} s (canary.rollback_window_secs) after completion at {done_at} has closed"
                )));
            }
        }
        let (Some(activated), Some(stable)) = (st.activated_version, st.stable_version) else {
            return Err(refuse(
                "its completion made no version active, so there is nothing to roll back".into(),
            ));
        };
        if let Some(holder) = self.slot_holder(&rec.slot) {
            return Err(refuse(format!("rollout {holder} now holds slot {}", rec.slot)));
        }
        let slot = self.inner.config.get_slot(&rec.slot).await?;
        if slot.active_version != Some(activated) {
            return Err(refuse(format!(
                "version {activated} is no longer the active version of slot {} (now {}): a later change replaced it",
                rec.slot,
                slot.active_version.map_or_else(|| "none".into(), |v| v.to_string())
            )));
        }
        let mut rt = Runtime::new(rec, st, req, now);
        let cand = self.versioned(&rt.rec.slot, activated).await?;
        let phase = u32::try_from(rt.st.step).unwrap_or(u32::MAX);
        let mut route = Rollout::canary(&rt.rec.id, cand)
            .with_share(share(10_000))
            .with_phase(phase)
            .with_stickiness(rt.st.settings.stickiness.clone());
        if let Some(split) = &rt.req.canary.traffic_split
            && let Ok(s) = SplitStrategy::from_request(split)
        {
            route = route.with_strategy(s);
        }
        rt.st.route = Some(route);
        rt.st.outcome = None;
        rt.st.stable_version = Some(stable);
        let slot_name = rt.rec.slot.clone();
        let shared: Shared = Arc::new(Mutex::new(rt));
        {
            let mut map = self.inner.runtimes.write().unwrap_or_else(|p| p.into_inner());
            if map.contains(id) {
                // Another request is already rolling it back: that one wins.
                return Err(refuse("a rollback of it is already under way".into()));
            }
            map.insert(id.to_owned(), slot_name.clone(), shared.clone());
        }
        let mut g = shared.lock().await;
        // Changed under its lock: the loop takes it on its next pass.
        self.wake_rollout(id);
        let mode = if gradual { RollbackMode::Gradual } else { RollbackMode::Fast };
        let started = self
            .start_rollback(
                &mut g,
                RollbackReason::Manual { reason: reason.to_owned() },
                false,
                mode,
                actor,
            )
            .await;
        if let Err(e) = started {
            drop(g);
            let mut map = self.inner.runtimes.write().unwrap_or_else(|p| p.into_inner());
            if map.get(id).is_some_and(|r| Arc::ptr_eq(&r, &shared)) {
                map.remove(id);
            }
            drop(map);
            return Err(match e {
                EngineError::Store(StoreError::AlreadyExists { what }) => {
                    refuse(format!("{what} now holds the slot"))
                }
                other => other,
            });
        }
        {
            let mut s = lock(&self.inner.stats);
            s.successful_deployments = s.successful_deployments.saturating_sub(1);
            s.active_deployments += 1;
        }
        let view = g.view();
        drop(g);
        self.wake();
        Ok(view)
    }
}

/// Checks an operator's reason: at most [`plan::MAX_REASON_BYTES`], no control characters.
fn check_reason(reason: &str) -> Result<(), EngineError> {
    if reason.len() > plan::MAX_REASON_BYTES {
        return Err(EngineError::OutOfRange {
            field: "reason".into(),
            range: format!("at most {} bytes", plan::MAX_REASON_BYTES),
            got: format!("{} bytes", reason.len()),
        });
    }
    if let Some(c) = actuator_config::control_char(reason, true) {
        return Err(EngineError::OutOfRange {
            field: "reason".into(),
            range: "text without control characters".into(),
            got: format!("U+{:04X}", u32::from(c)),
        });
    }
    Ok(())
}
