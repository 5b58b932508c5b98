//! Persistence: transitions committed with their audit entry, checkpoints of evidence.

use super::*;

impl Engine {
    // ---------------------------------------------------------------- persistence

    /// Persists `rt` in state `to` (with its audit entry), then refreshes the slot's route.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn commit(
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
                at: self.now(),
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
            admission: Default::default(),
        };
        let audit = AuditDraft::success(actor, action, rt.rec.id.clone()).with_metadata(meta);
        match self.store().update_rollout(&rt.rec.id, update, audit).await {
            Ok(rec) => {
                rt.rec = rec;
                rt.dirty = false;
                rt.last_save = self.now();
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
    pub(super) async fn reload(&self, rt: &mut Runtime) {
        if let Ok(Some(rec)) = self.store().get_rollout(&rt.rec.id).await
            && let Ok(st) = serde_json::from_value::<EngineStatus>(rec.status.clone())
        {
            rt.st = st;
            rt.rec = rec;
        }
    }

    pub(super) async fn checkpoint(&self, rt: &mut Runtime) {
        let Ok(status) = serde_json::to_value(&rt.st) else { return };
        match self.store().save_rollout_status(&rt.rec.id, rt.rec.revision, status).await {
            Ok(rec) => {
                rt.rec = rec;
                rt.dirty = false;
                rt.last_save = self.now();
            }
            Err(e) => {
                tracing::warn!(rollout = %rt.rec.id, error = %e, "checkpoint failed; re-reading the rollout");
                self.reload(rt).await;
            }
        }
    }
}
