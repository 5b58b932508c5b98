//! Start, stop and the control loop that looks at every active rollout.

use super::*;
use actuator_core::EncodedRollout;

/// A stored rollout decoded for a start: its typed status and request and the highest
/// observation batch its status holds, or why it cannot be read.
type Decoded = Result<(EngineStatus, DeploymentRequest, u64), serde_json::Error>;

/// Fewest rollouts one decoding thread takes: below it, a page is decoded on fewer threads.
const DECODE_CHUNK_MIN: usize = 64;

/// Decodes one rollout's stored status and request.
fn decode(doc: &EncodedRollout) -> Decoded {
    let st = serde_json::from_str::<EngineStatus>(&doc.status)?;
    let req = serde_json::from_str::<DeploymentRequest>(&doc.request)?;
    let seq = serde_json::from_str::<persist::StoredSeq>(&doc.status)?;
    Ok((st, req, seq.folded_batch_seq))
}

/// Decodes a page of stored rollouts on up to one blocking thread per core (at least
/// [`DECODE_CHUNK_MIN`] rollouts each), keeping the page's order. The text of each is freed
/// once decoded.
async fn decode_page(
    items: Vec<EncodedRollout>,
) -> Result<Vec<(RolloutRecord, Decoded)>, EngineError> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let chunks = (items.len() / DECODE_CHUNK_MIN).clamp(1, threads);
    let per = items.len().div_ceil(chunks).max(1);
    let mut rest = items;
    let mut tasks = Vec::with_capacity(chunks);
    while !rest.is_empty() {
        let tail = rest.split_off(per.min(rest.len()));
        let chunk = std::mem::replace(&mut rest, tail);
        tasks.push(tokio::task::spawn_blocking(move || {
            chunk
                .into_iter()
                .map(|doc| {
                    let decoded = decode(&doc);
                    (doc.record, decoded)
                })
                .collect::<Vec<_>>()
        }));
    }
    let mut out = Vec::new();
    for task in tasks {
        let decoded = task.await.map_err(|e| {
            EngineError::Store(StoreError::Backend(format!("decoding stored rollouts: {e}")))
        })?;
        out.extend(decoded);
    }
    Ok(out)
}

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
        // Rollouts fed by a metric source get their pollers (own tasks, never awaited here).
        self.start_feeds();
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
        // The rollouts with durable batches to replay, when the store can tell: the others
        // are not asked for theirs one by one.
        let holders = self.store().rollouts_with_batches().await?;
        loop {
            let page = self
                .store()
                .list_active_rollouts_encoded(PageRequest { limit: PageRequest::MAX_LIMIT, cursor })
                .await?;
            let next = page.next_cursor;
            // Decoded from the stored text straight into the typed state, the page split
            // over the machine's cores.
            for (rec, decoded) in decode_page(page.items).await? {
                match decoded {
                    Ok((st, req, seq)) => {
                        let (id, slot, state) = (rec.id.clone(), rec.slot.clone(), rec.state);
                        let mut rt = Runtime::new(rec, st, req, self.now());
                        rt.stored_seq = seq;
                        // Acknowledged batches the checkpoint does not hold yet are folded
                        // in before the loop looks at the rollout.
                        let replayed = match &holders {
                            Some(h) if !h.contains(&id) => 0,
                            _ => self.replay(&mut rt).await?,
                        };
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
                    Err(e) => {
                        tracing::error!(rollout = %rec.id, error = %e, "cannot resume rollout: unreadable state")
                    }
                }
            }
            match next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        if !resumed.is_empty() {
            tracing::info!(rollouts = resumed.len(), "resumed the active rollouts");
            // Their routes, refreshed together (a router may rebuild its table in one pass,
            // or skip it when its table was built from the same store).
            self.inner.routes.resumed(&resumed).await;
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

    /// The statistics of every rollout in the store, from the store's counts (a start
    /// reads no finished rollout's status).
    pub(super) async fn recount(&self) -> Result<ActuatorStats, EngineError> {
        let counts = self.store().rollout_counts().await?;
        let mut stats = ActuatorStats::default();
        for &(strategy, state, n) in &counts.by_kind {
            stats.total_deployments += n;
            *stats.by_strategy.entry(strategy).or_default() += n;
            match state {
                DeploymentState::Completed => stats.successful_deployments += n,
                DeploymentState::RolledBack | DeploymentState::Failed => {
                    stats.failed_deployments += n
                }
                DeploymentState::Aborted => stats.aborted_deployments += n,
                _ => stats.active_deployments += n,
            }
        }
        stats.automatic_rollbacks = counts.automatic_rollbacks;
        stats.manual_rollbacks = counts.manual_rollbacks;
        stats.rollbacks = counts.automatic_rollbacks + counts.manual_rollbacks;
        Ok(stats)
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
        // Only the rollouts whose deadline passed or that something changed are taken: an
        // idle rollout costs one read of its deadline.
        let now_ms = self.now().timestamp_millis();
        let taken = self.inner.runtimes.read().unwrap_or_else(|p| p.into_inner()).due(now_ms);
        for rt in taken {
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
            } else {
                self.reschedule(&g);
            }
        }
        if !due.is_empty() {
            let mut refs: Vec<&mut Runtime> = due.iter_mut().map(|g| &mut **g).collect();
            self.checkpoint_many(&mut refs).await;
            for g in &due {
                self.reschedule(g);
            }
        }
    }

    /// Sets when the loop next takes `rt` (called holding its lock, after its tick).
    fn reschedule(&self, rt: &Runtime) {
        let at = self.next_due_ms(rt, self.now());
        self.inner.runtimes.read().unwrap_or_else(|p| p.into_inner()).schedule(&rt.rec.id, at);
    }

    /// When the loop must next take `rt`, in engine-clock milliseconds: at once when
    /// something changed since its last look or it is rolling back, else at the earliest of
    /// its timers (its step's minimum and maximum durations, the rollout's budget of active
    /// time, its checkpoint, its idle look), and never later than the idle interval, so its
    /// clocks keep counting (see [`Engine::idle_interval_ms`]).
    pub(super) fn next_due_ms(&self, rt: &Runtime, now: DateTime<Utc>) -> i64 {
        let now_ms = now.timestamp_millis();
        let state = rt.rec.state;
        if rt.fresh || (rt.looked.is_none() && state == DeploymentState::Monitoring) {
            return now_ms;
        }
        if state == DeploymentState::RollingBack {
            return now_ms;
        }
        let after = |ms: u64| now_ms.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX));
        let mut due = after(self.idle_interval_ms());
        if state == DeploymentState::Monitoring {
            if let Some((at, _, _)) = rt.looked {
                let idle_look = at.timestamp_millis().saturating_add(super::control::IDLE_LOOK_MS);
                due = due.min(idle_look);
            }
            // Active time runs with the clock while monitoring: a gate `g` ms into the step
            // is crossed `g − step_active_ms` from now.
            if let Some(step) = rt.st.steps.get(rt.st.step) {
                for secs in std::iter::once(step.min_secs).chain(step.max_secs) {
                    let gate = secs.saturating_mul(1000);
                    if gate > rt.st.step_active_ms {
                        due = due.min(after(gate - rt.st.step_active_ms));
                    }
                }
            }
            if let Some(at) = Self::gate_due_ms(rt) {
                due = due.min(at);
            }
            if rt.st.settings.triggers.max_duration && !rt.st.budget_held {
                let limit = rt.req.canary.max_duration_secs.saturating_mul(1000);
                due = due.min(after(limit.saturating_sub(rt.st.active_ms)));
            }
        }
        if rt.rec.state.is_active() && rt.unsaved() {
            let wait = i64::try_from(self.checkpoint_wait_ms(rt)).unwrap_or(i64::MAX);
            due = due.min(rt.last_save.timestamp_millis().saturating_add(wait));
        }
        due
    }

    /// The longest the loop leaves a live rollout alone: the idle look interval, and at most
    /// half of `max_tick_gap_ms` (a longer gap between two of a rollout's ticks is not counted
    /// as active time: it is taken for a stalled process). A driven engine counts every moved
    /// millisecond, so only the idle look bounds it.
    pub(super) fn idle_interval_ms(&self) -> u64 {
        let idle = super::control::IDLE_LOOK_MS.unsigned_abs();
        if self.inner.driven.load(Ordering::SeqCst) {
            idle
        } else {
            idle.min(self.inner.settings.max_tick_gap_ms / 2).max(1)
        }
    }

    /// Marks a rollout `failed` with `why`: its traffic goes back to the stable config, the
    /// failure is audited and notified. A failure to write it is logged, and the rollout is
    /// let go from memory (the store keeps its last state for the next start).
    pub(super) async fn fail(&self, rt: &mut Runtime, why: &str) {
        tracing::error!(rollout = %rt.rec.id, reason = %why, "rollout failed");
        rt.st.push_error(why.to_owned());
        rt.st.route = None;
        rt.st.gate = None;
        rt.st.paused_reason = None;
        rt.st.held_watch = false;
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

/// Whether an error of a look may pass by itself (retried on the next pass). A store that
/// cannot be reached, or a replica whose fencing token was superseded (it stops leading; the
/// new leader resumes the rollout from the store), is never a reason to fail a rollout.
fn retryable(e: &EngineError) -> bool {
    matches!(
        e,
        EngineError::Store(
            StoreError::Conflict { .. }
                | StoreError::Backend(_)
                | StoreError::Unavailable(_)
                | StoreError::Fenced { .. }
        ) | EngineError::NotRunning
    )
}

pub(super) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}
