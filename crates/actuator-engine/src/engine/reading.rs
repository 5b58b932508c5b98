//! Reading: views of rollouts, their health, lists and rollback history.

use super::*;

impl Engine {
    // ---------------------------------------------------------------- reading

    /// The view of one rollout (live for active ones, from the store otherwise).
    pub async fn view(&self, id: &str) -> Result<RolloutView, EngineError> {
        if let Some(rt) = self.runtime(id) {
            let mut g = rt.lock().await;
            return Ok(self.live_view(&mut g));
        }
        let rec = self
            .store()
            .get_rollout(id)
            .await?
            .ok_or_else(|| EngineError::UnknownRollout(id.into()))?;
        let st: EngineStatus = serde_json::from_value(rec.status.clone())
            .map_err(|e| EngineError::Invalid(format!("stored status of {id}: {e}")))?;
        Ok(RolloutView::new(&rec, &st, stored_rollback_window(&rec)))
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
                    let mut g = rt.lock().await;
                    self.live_view(&mut g)
                }
                None => match serde_json::from_value::<EngineStatus>(rec.status.clone()) {
                    Ok(st) => RolloutView::new(&rec, &st, stored_rollback_window(&rec)),
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

    /// Rollback history, newest first: every rollback of every rollout (a retried rollout
    /// keeps its earlier ones, up to [`crate::MAX_ROLLBACKS`]). A page covers one page of
    /// rollouts, so it may hold fewer or more than `limit` items; follow `next_cursor` to the
    /// end.
    pub async fn rollbacks(&self, page: PageRequest) -> Result<Page<RollbackView>, EngineError> {
        let p = self.store().list_rollouts(RolloutFilter::default(), page).await?;
        let mut items = Vec::new();
        for rec in p.items {
            let st = match self.runtime(&rec.id) {
                Some(rt) => rt.lock().await.st.clone(),
                None => match serde_json::from_value::<EngineStatus>(rec.status) {
                    Ok(st) => st,
                    Err(_) => continue,
                },
            };
            for rb in st.all_rollbacks() {
                // Rollouts stored before `aborted` existed recorded an abort as a rollback.
                if matches!(rb.reason, RollbackReason::Aborted) {
                    continue;
                }
                items.push(RollbackView {
                    rollout_id: rec.id.clone(),
                    slot: rec.slot.to_string(),
                    rollback: rb.clone(),
                });
            }
        }
        Ok(Page { items, next_cursor: p.next_cursor })
    }

    /// The views of every rollout this engine drives now (in memory; no store read), for
    /// metrics.
    pub async fn active_views(&self) -> Vec<RolloutView> {
        let mut out = Vec::new();
        for rt in self.all_runtimes() {
            let mut g = rt.lock().await;
            out.push(self.live_view(&mut g));
        }
        out
    }

    /// The view of a live rollout with its clocks of active time brought up to now: the loop
    /// takes an idle rollout only every few seconds, a reader sees the time to the moment.
    fn live_view(&self, rt: &mut Runtime) -> RolloutView {
        self.accrue(rt, self.now());
        let mut v = rt.view();
        v.metric_feed = self.feed_view(&rt.rec.id);
        v
    }

    /// Counters since the store was created.
    pub fn stats(&self) -> ActuatorStats {
        lock(&self.inner.stats).clone()
    }
}
