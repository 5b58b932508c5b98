//! Start, stop and the control loop that looks at every active rollout.

use super::*;

impl Engine {
    // ---------------------------------------------------------------- lifecycle

    /// Loads active rollouts from the store, refreshes their routes and starts the loop.
    pub async fn start(&self) -> Result<(), EngineError> {
        self.load().await?;
        let me = self.clone();
        let handle = tokio::spawn(async move { me.run_loop().await });
        *lock(&self.inner.loop_task) = Some(handle);
        *lock(&self.inner.state) = ActuatorState::Running;
        Ok(())
    }

    /// Loads active rollouts and accepts requests, but runs no loop of its own: the caller
    /// drives the engine with [`Engine::run_pass`] (a simulation in simulated time).
    pub async fn start_driven(&self) -> Result<(), EngineError> {
        self.load().await?;
        *lock(&self.inner.state) = ActuatorState::Running;
        Ok(())
    }

    async fn load(&self) -> Result<(), EngineError> {
        *lock(&self.inner.state) = ActuatorState::Starting;
        let mut cursor = None;
        loop {
            let page = self
                .store()
                .list_rollouts(
                    RolloutFilter { active_only: true, slot: None },
                    PageRequest { limit: PageRequest::MAX_LIMIT, cursor },
                )
                .await?;
            for rec in &page.items {
                if rec.state.is_active() {
                    match (
                        serde_json::from_value::<EngineStatus>(rec.status.clone()),
                        serde_json::from_value::<DeploymentRequest>(rec.request.clone()),
                    ) {
                        (Ok(st), Ok(req)) => {
                            let mut rt = Runtime {
                                rec: rec.clone(),
                                st,
                                req,
                                dirty: false,
                                last_save: self.now(),
                            };
                            // Acknowledged batches the checkpoint does not hold yet are folded
                            // in before the loop looks at the rollout.
                            let replayed = self.replay(&mut rt).await?;
                            if replayed > 0 {
                                tracing::info!(rollout = %rec.id, batches = replayed, "replayed durable observation batches");
                            }
                            self.inner
                                .runtimes
                                .write()
                                .unwrap_or_else(|p| p.into_inner())
                                .insert(rec.id.clone(), Arc::new(Mutex::new(rt)));
                            self.inner.routes.refresh_slot(&rec.slot).await;
                            tracing::info!(rollout = %rec.id, state = %rec.state, "resumed rollout");
                        }
                        (Err(e), _) | (_, Err(e)) => {
                            tracing::error!(rollout = %rec.id, error = %e, "cannot resume rollout: unreadable state")
                        }
                    }
                }
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let stats = self.recount().await?;
        *lock(&self.inner.stats) = stats;
        Ok(())
    }

    /// Stops the loop after checkpointing every active rollout.
    pub async fn stop(&self) -> Result<(), EngineError> {
        *lock(&self.inner.state) = ActuatorState::Stopping;
        self.inner.stop.notify_one();
        let handle = lock(&self.inner.loop_task).take();
        if let Some(h) = handle {
            let _ = h.await;
        }
        for rt in self.all_runtimes() {
            let mut g = rt.lock().await;
            if g.dirty {
                self.checkpoint(&mut g).await;
            }
        }
        *lock(&self.inner.state) = ActuatorState::Stopped;
        Ok(())
    }

    pub(super) async fn recount(&self) -> Result<ActuatorStats, EngineError> {
        let mut stats = ActuatorStats::default();
        let mut cursor = None;
        loop {
            let page = self
                .store()
                .list_rollouts(
                    RolloutFilter::default(),
                    PageRequest { limit: PageRequest::MAX_LIMIT, cursor },
                )
                .await?;
            for rec in &page.items {
                count(&mut stats, rec);
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(stats),
            }
        }
    }

    pub(super) fn all_runtimes(&self) -> Vec<Shared> {
        self.inner.runtimes.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    pub(super) async fn run_loop(&self) {
        let tick = Duration::from_millis(self.inner.settings.tick_ms.max(10));
        loop {
            tokio::select! {
                () = tokio::time::sleep(tick) => {}
                () = self.inner.wake.notified() => {}
                () = self.inner.stop.notified() => return,
            }
            self.run_pass().await;
        }
    }

    /// One pass of the control loop: every active rollout is looked at once, and finished
    /// ones are let go. The daemon's loop calls it on each tick and after each batch of
    /// observations; a simulation calls it after moving its clock.
    pub async fn run_pass(&self) {
        for rt in self.all_runtimes() {
            let mut g = rt.lock().await;
            if let Err(e) = self.tick(&mut g).await {
                tracing::warn!(rollout = %g.rec.id, error = %e, "control loop step failed");
                g.st.push_error(e.to_string());
            }
            let done = g.rec.state.is_terminal();
            let id = g.rec.id.clone();
            drop(g);
            if done {
                self.inner.runtimes.write().unwrap_or_else(|p| p.into_inner()).remove(&id);
            }
        }
    }
}

pub(super) fn count(s: &mut ActuatorStats, rec: &RolloutRecord) {
    s.total_deployments += 1;
    *s.by_strategy.entry(rec.strategy).or_default() += 1;
    match rec.state {
        DeploymentState::Completed => s.successful_deployments += 1,
        DeploymentState::RolledBack | DeploymentState::Failed => s.failed_deployments += 1,
        _ => s.active_deployments += 1,
    }
    if let Some(rb) = rec.status.get("rollback").filter(|v| !v.is_null()) {
        s.rollbacks += 1;
        if rb.get("automatic").and_then(Value::as_bool).unwrap_or(false) {
            s.automatic_rollbacks += 1;
        } else {
            s.manual_rollbacks += 1;
        }
    }
}
