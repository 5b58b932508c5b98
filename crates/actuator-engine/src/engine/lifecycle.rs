//! Start, stop and the control loop that looks at every active rollout.

use super::*;

impl Engine {
    // ---------------------------------------------------------------- lifecycle

    /// Loads active rollouts from the store, refreshes their routes and starts the loop.
    pub async fn start(&self) -> Result<(), EngineError> {
        self.load().await?;
        self.inner.driven.store(false, Ordering::SeqCst);
        self.inner.stopping.store(false, Ordering::SeqCst);
        self.inner.loop_alive.store(true, Ordering::SeqCst);
        let me = self.clone();
        let handle = tokio::spawn(async move { me.supervise().await });
        *lock(&self.inner.loop_task) = Some(handle);
        *lock(&self.inner.state) = ActuatorState::Running;
        Ok(())
    }

    /// Runs the control loop on its own task and starts it again, with an error in the log,
    /// whenever it ends without a stop having been asked for (a panic outside any rollout's
    /// look, or an unexpected return).
    async fn supervise(&self) {
        loop {
            let me = self.clone();
            self.inner.loop_alive.store(true, Ordering::SeqCst);
            let ended = tokio::spawn(async move { me.run_loop().await }).await;
            self.inner.loop_alive.store(false, Ordering::SeqCst);
            if self.inner.stopping.load(Ordering::SeqCst) {
                return;
            }
            let n = self.inner.loop_restarts.fetch_add(1, Ordering::SeqCst) + 1;
            match ended {
                Err(e) if e.is_panic() => {
                    tracing::error!(restarts = n, "the control loop panicked; restarting it")
                }
                _ => tracing::error!(restarts = n, "the control loop ended; restarting it"),
            }
            tokio::time::sleep(Duration::from_millis(self.inner.settings.tick_ms.clamp(10, 1000)))
                .await;
            if self.inner.stopping.load(Ordering::SeqCst) {
                return;
            }
        }
    }

    /// Loads active rollouts and accepts requests, but runs no loop of its own: the caller
    /// drives the engine with [`Engine::run_pass`] (a simulation in simulated time).
    pub async fn start_driven(&self) -> Result<(), EngineError> {
        self.load().await?;
        // The caller drives the loop: it is as alive as its caller.
        self.inner.driven.store(true, Ordering::SeqCst);
        self.inner.loop_alive.store(true, Ordering::SeqCst);
        *lock(&self.inner.state) = ActuatorState::Running;
        Ok(())
    }

    async fn load(&self) -> Result<(), EngineError> {
        *lock(&self.inner.state) = ActuatorState::Starting;
        let mut cursor = None;
        let mut resumed = Vec::new();
        loop {
            let page = self
                .store()
                .list_rollouts(
                    RolloutFilter { active_only: true, slot: None },
                    PageRequest { limit: PageRequest::MAX_LIMIT, cursor },
                )
                .await?;
            for rec in page.items {
                if !rec.state.is_active() {
                    continue;
                }
                // Decoded from the stored documents in place; `Runtime::new` then drops them.
                match (
                    EngineStatus::deserialize(&rec.status),
                    DeploymentRequest::deserialize(&rec.request),
                ) {
                    (Ok(st), Ok(req)) => {
                        let (id, slot, state) = (rec.id.clone(), rec.slot.clone(), rec.state);
                        let mut rt = Runtime::new(rec, st, req, self.now());
                        // Acknowledged batches the checkpoint does not hold yet are folded
                        // in before the loop looks at the rollout.
                        let replayed = self.replay(&mut rt).await?;
                        if replayed > 0 {
                            tracing::info!(rollout = %id, batches = replayed, "replayed durable observation batches");
                        }
                        self.inner.runtimes.write().unwrap_or_else(|p| p.into_inner()).insert(
                            id.clone(),
                            slot.clone(),
                            Arc::new(Mutex::new(rt)),
                        );
                        resumed.push(slot);
                        tracing::debug!(rollout = %id, state = %state, "resumed rollout");
                    }
                    (Err(e), _) | (_, Err(e)) => {
                        tracing::error!(rollout = %rec.id, error = %e, "cannot resume rollout: unreadable state")
                    }
                }
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        if !resumed.is_empty() {
            tracing::info!(rollouts = resumed.len(), "resumed the active rollouts");
            // Their routes, refreshed together (a router may rebuild its table in one pass).
            self.inner.routes.refresh_slots(&resumed).await;
        }
        let stats = self.recount().await?;
        *lock(&self.inner.stats) = stats;
        Ok(())
    }

    /// Stops the loop after checkpointing every active rollout.
    pub async fn stop(&self) -> Result<(), EngineError> {
        *lock(&self.inner.state) = ActuatorState::Stopping;
        self.inner.stopping.store(true, Ordering::SeqCst);
        self.inner.stop.notify_one();
        let handle = lock(&self.inner.loop_task).take();
        if let Some(h) = handle {
            let _ = h.await;
        }
        let mut unsaved = Vec::new();
        for rt in self.all_runtimes() {
            let g = rt.lock_owned().await;
            if g.unsaved() && g.rec.state.is_active() {
                unsaved.push(g);
            }
        }
        let mut refs: Vec<&mut Runtime> = unsaved.iter_mut().map(|g| &mut **g).collect();
        self.checkpoint_many(&mut refs).await;
        self.inner.loop_alive.store(false, Ordering::SeqCst);
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
    ///
    /// Each rollout's look runs isolated: a panic, or an error that retrying cannot cure,
    /// marks that rollout `failed` with the reason (audited and notified) and the others go
    /// on. A store error that may pass (a conflict, the backend) is recorded and retried on
    /// the next pass.
    pub async fn run_pass(&self) {
        let started = std::time::Instant::now();
        self.run_pass_inner().await;
        metrics::histogram!("actuator_control_loop_tick_seconds")
            .record(started.elapsed().as_secs_f64());
    }

    async fn run_pass_inner(&self) {
        // Rollouts due for a checkpoint stay locked until the pass writes all of them in one
        // store call; the others are let go as soon as they were looked at.
        let mut due: Vec<tokio::sync::OwnedMutexGuard<Runtime>> = Vec::new();
        for rt in self.all_runtimes() {
            let mut g = rt.lock_owned().await;
            match AssertUnwindSafe(self.tick(&mut g)).catch_unwind().await {
                Ok(Ok(())) => {}
                Ok(Err(e)) if retryable(&e) => {
                    tracing::warn!(rollout = %g.rec.id, error = %e, "control loop step failed; retrying on the next pass");
                    g.st.push_error(e.to_string());
                }
                Ok(Err(e)) => {
                    let why = format!("the control loop could not go on: {e}");
                    self.fail(&mut g, &why).await;
                }
                Err(panic) => {
                    let why = format!(
                        "internal error in the control loop (a panic: {})",
                        panic_message(panic.as_ref())
                    );
                    self.fail(&mut g, &why).await;
                }
            }
            if g.rec.state.is_terminal() {
                let id = g.rec.id.clone();
                drop(g);
                self.inner.runtimes.write().unwrap_or_else(|p| p.into_inner()).remove(&id);
            } else if self.checkpoint_due(&g, self.now()) {
                due.push(g);
            }
        }
        if !due.is_empty() {
            let mut refs: Vec<&mut Runtime> = due.iter_mut().map(|g| &mut **g).collect();
            self.checkpoint_many(&mut refs).await;
        }
    }

    /// Marks a rollout `failed` with `why`: its traffic goes back to the stable config, the
    /// failure is audited and notified. A failure to write it is logged, and the rollout is
    /// let go from memory (the store keeps its last state for the next start).
    pub(super) async fn fail(&self, rt: &mut Runtime, why: &str) {
        tracing::error!(rollout = %rt.rec.id, reason = %why, "rollout failed");
        rt.st.push_error(why.to_owned());
        rt.st.route = None;
        rt.st.paused_reason = None;
        rt.st.awaiting_promotion = false;
        rt.st.outcome = Some(format!("failed: {why}"));
        if rt.rec.state.is_terminal() {
            return;
        }
        let written = AssertUnwindSafe(self.commit(
            rt,
            DeploymentState::Failed,
            why,
            "rollout.fail",
            "engine",
            None,
            json!({"error": why}),
        ))
        .catch_unwind()
        .await;
        let ok = match written {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::error!(rollout = %rt.rec.id, error = %e, "could not record the failure");
                false
            }
            Err(_) => {
                tracing::error!(rollout = %rt.rec.id, "recording the failure panicked");
                false
            }
        };
        if ok {
            self.finished(false);
        } else {
            // Let it go from memory either way: the loop never looks at it again.
            rt.rec.state = DeploymentState::Failed;
        }
        self.notify(
            rt,
            "rollout.fail",
            Severity::Critical,
            "engine",
            format!("rollout {} failed: {why}", rt.rec.id),
            json!({"error": why}),
        );
    }
}

/// Whether an error of a look may pass by itself (retried on the next pass).
fn retryable(e: &EngineError) -> bool {
    matches!(
        e,
        EngineError::Store(StoreError::Conflict { .. } | StoreError::Backend(_))
            | EngineError::NotRunning
    )
}

pub(super) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}

pub(super) fn count(s: &mut ActuatorStats, rec: &RolloutRecord) {
    s.total_deployments += 1;
    *s.by_strategy.entry(rec.strategy).or_default() += 1;
    match rec.state {
        DeploymentState::Completed => s.successful_deployments += 1,
        DeploymentState::RolledBack | DeploymentState::Failed => s.failed_deployments += 1,
        DeploymentState::Aborted => s.aborted_deployments += 1,
        _ => s.active_deployments += 1,
    }
    let current = rec.status.get("rollback").filter(|v| !v.is_null());
    let past = rec.status.get("past_rollbacks").and_then(Value::as_array);
    for rb in current.into_iter().chain(past.into_iter().flatten()) {
        // Rollouts stored before `aborted` existed recorded an abort as a rollback.
        if rb.get("reason").and_then(|r| r.get("kind")).and_then(Value::as_str) == Some("aborted") {
            continue;
        }
        s.rollbacks += 1;
        if rb.get("automatic").and_then(Value::as_bool).unwrap_or(false) {
            s.automatic_rollbacks += 1;
        } else {
            s.manual_rollbacks += 1;
        }
    }
}
