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

    pub(super) fn missing_or_inactive(&self, id: &str, action: &str) -> EngineError {
        EngineError::InvalidTransition {
            action: action.into(),
            id: id.into(),
            state: "not active (finished or unknown)".into(),
        }
    }

    pub(super) async fn retry(&self, id: &str, actor: &str) -> Result<RolloutView, EngineError> {
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
        let now = self.now();
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
        let mut rt = Runtime { rec, st, req, dirty: false, last_save: self.now() };
        self.readmit(&mut rt, actor).await?;
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
}

impl Engine {
    /// Moves a finished rollout back to Pending. The store admits it in that transaction
    /// (the limit, one rollout per slot) and reads the slot's active version as its stable
    /// version; when that version moved since it was read here, it is read again.
    async fn readmit(&self, rt: &mut Runtime, actor: &str) -> Result<(), EngineError> {
        let reason = format!("retried by {actor}");
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
                    rt.rec = rec;
                    rt.dirty = false;
                    rt.last_save = self.now();
                    self.inner.routes.refresh_slot(&rt.rec.slot).await;
                    return Ok(());
                }
                Err(StoreError::StableChanged { .. }) if attempt < 8 => attempt += 1,
                Err(e) => return Err(super::admission::admission_error(&rt.rec.slot, e)),
            }
        }
    }
}
