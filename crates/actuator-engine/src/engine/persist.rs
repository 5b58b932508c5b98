//! Persistence: transitions committed with their audit entry, checkpoints of evidence, and
//! the durable observation batches behind them.
//!
//! Every status the engine writes carries [`SEQ_KEY`], the highest observation batch folded
//! into the evidence it holds. A checkpoint deletes the batches up to it in the same
//! transaction; a start (or a re-read after another writer won) replays the batches above
//! it. A batch is therefore folded exactly once: either the saved evidence holds it (its
//! number is at most the saved one, and replay skips it) or it is replayed.

use super::*;
use actuator_core::CheckpointWrite;

/// The key of the persisted status that holds the highest batch folded into it.
pub(crate) const SEQ_KEY: &str = "folded_batch_seq";

/// Most rollouts saved by one group commit: a pass with more dirty rollouts commits them in
/// groups of this size, so the encoded statuses a commit holds (about 100 KiB each as JSON
/// trees) stay bounded (≈ 50 MiB) however many rollouts are live.
pub(crate) const CHECKPOINT_GROUP: usize = 512;

/// Batches read per page on replay (each holds at most `MAX_BATCH` items).
const REPLAY_PAGE: u32 = 8;

/// How far a rollout's in-memory evidence has folded in the durable batches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Cursor {
    /// The highest batch folded into the in-memory evidence.
    pub(crate) folded: u64,
    /// The highest batch folded into the last status written to the store.
    pub(crate) saved: u64,
    /// Durable batches above `folded` may exist that are not folded in yet (a replay failed):
    /// replayed before the next batch is folded or the next checkpoint is written.
    pub(crate) needs_replay: bool,
}

/// The one field of a stored status a start reads besides the typed state (decoded from the
/// same text, every other field skipped).
#[derive(Deserialize)]
pub(crate) struct StoredSeq {
    /// See [`SEQ_KEY`].
    #[serde(default)]
    pub(crate) folded_batch_seq: u64,
}

/// The highest folded batch recorded in a persisted status (0 when none is).
pub(crate) fn stored_seq(status: &Value) -> u64 {
    status.get(SEQ_KEY).and_then(Value::as_u64).unwrap_or(0)
}

impl Engine {
    // ---------------------------------------------------------------- batch cursors

    /// The cursor of `rt`. A rollout with no entry has folded nothing since its last save.
    pub(crate) fn cursor(&self, rt: &Runtime) -> Cursor {
        lock(&self.inner.cursors).get(&rt.rec.id).copied().unwrap_or_else(|| {
            let s = rt.stored_seq;
            Cursor { folded: s, saved: s, needs_replay: false }
        })
    }

    pub(crate) fn set_cursor(&self, rt: &Runtime, c: Cursor) {
        lock(&self.inner.cursors).insert(rt.rec.id.clone(), c);
    }

    /// The status to persist: the engine state plus the highest batch it has folded.
    fn status_value(&self, rt: &Runtime, folded: u64) -> Result<Value, EngineError> {
        let mut status = serde_json::to_value(&rt.st)
            .map_err(|e| EngineError::Invalid(format!("status: {e}")))?;
        if let Value::Object(m) = &mut status {
            m.insert(SEQ_KEY.into(), Value::from(folded));
        }
        Ok(status)
    }

    /// Folds every durable batch of `rt` above its cursor into its evidence, page by page
    /// (progress is kept if a later page fails). Returns how many batches were folded.
    pub(crate) async fn replay(&self, rt: &mut Runtime) -> Result<u64, StoreError> {
        let mut c = self.cursor(rt);
        c.needs_replay = true;
        self.set_cursor(rt, c);
        let mut folded = 0u64;
        loop {
            let page =
                self.store().list_observation_batches(&rt.rec.id, c.folded, REPLAY_PAGE).await?;
            let full = page.len() >= REPLAY_PAGE as usize;
            for b in page {
                match crate::ingest::decode_batch(&b.items) {
                    Ok(entries) => {
                        crate::ingest::fold(rt, entries);
                    }
                    Err(e) => tracing::error!(
                        rollout = %rt.rec.id, batch = b.seq, error = %e,
                        "a durable observation batch is unreadable; skipping it"
                    ),
                }
                c.folded = c.folded.max(b.seq);
                folded += 1;
            }
            self.set_cursor(rt, c);
            if !full {
                break;
            }
        }
        c.needs_replay = false;
        self.set_cursor(rt, c);
        if folded > 0 {
            rt.dirty = true;
        }
        Ok(folded)
    }

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
        let cursor = self.cursor(rt);
        let status = self.status_value(rt, cursor.folded)?;
        let mut meta = json!({"slot": rt.rec.slot, "from": from, "to": to, "phase": rt.st.step, "share_percent": rt.st.share_percent(), "reason": reason});
        if let (Value::Object(m), Value::Object(extra)) = (&mut meta, metadata) {
            m.extend(extra);
        }
        if let (Value::Object(m), Some(Value::Object(extra))) = (&mut meta, rt.pending_audit.take())
        {
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
                rt.set_record(rec);
                rt.mark_saved(self.now());
                // A transition (or a resume) is looked at on the next pass.
                rt.fresh = true;
                if rt.rec.state.is_terminal() {
                    // A finished rollout takes no more observations: its batches are done with
                    // (a retry starts its evidence afresh).
                    lock(&self.inner.cursors).remove(&rt.rec.id);
                    if let Err(e) =
                        self.store().prune_observation_batches(&rt.rec.id, u64::MAX).await
                    {
                        tracing::warn!(rollout = %rt.rec.id, error = %e, "could not delete the observation batches of a finished rollout");
                    }
                } else {
                    self.set_cursor(rt, Cursor { saved: cursor.folded, ..cursor });
                }
            }
            Err(e) => {
                self.reload(rt).await;
                return Err(e.into());
            }
        }
        self.inner.routes.refresh_slot(&rt.rec.slot).await;
        Ok(())
    }

    /// Re-reads a rollout from the store after a failed write (another writer won), then
    /// replays its durable batches above the re-read checkpoint, so nothing acknowledged is
    /// lost. When the store cannot be read, the in-memory state is kept.
    pub(super) async fn reload(&self, rt: &mut Runtime) {
        let rec = match self.store().get_rollout(&rt.rec.id).await {
            Ok(Some(rec)) => rec,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(rollout = %rt.rec.id, error = %e, "cannot re-read the rollout; keeping the state in memory");
                return;
            }
        };
        let st = match serde_json::from_value::<EngineStatus>(rec.status.clone()) {
            Ok(st) => st,
            Err(e) => {
                tracing::error!(rollout = %rt.rec.id, error = %e, "the stored rollout is unreadable; keeping the state in memory");
                return;
            }
        };
        let seq = stored_seq(&rec.status);
        rt.st = st;
        rt.set_record(rec);
        rt.dirty = false;
        rt.clock_moved = false;
        rt.fresh = true;
        if rt.rec.state.is_terminal() {
            // Another writer finished it: it takes no more observations.
            lock(&self.inner.cursors).remove(&rt.rec.id);
            return;
        }
        self.set_cursor(rt, Cursor { folded: seq, saved: seq, needs_replay: true });
        if let Err(e) = self.replay(rt).await {
            tracing::warn!(rollout = %rt.rec.id, error = %e, "replaying durable observations failed; retried before the next batch or checkpoint");
        }
    }

    /// Whether `rt` is due for a checkpoint at `now`: its evidence or decision changed and
    /// `checkpoint_ms` passed since its last save, or only its clocks moved and
    /// `idle_checkpoint_ms` (and at least `checkpoint_ms`) passed. Finished rollouts never are (their last commit saved them).
    pub(super) fn checkpoint_due(&self, rt: &Runtime, now: DateTime<Utc>) -> bool {
        if !rt.rec.state.is_active() || !rt.unsaved() {
            return false;
        }
        let since = (now - rt.last_save).num_milliseconds();
        since >= i64::try_from(self.checkpoint_wait_ms(rt)).unwrap_or(i64::MAX)
    }

    /// How long after its last save an unsaved rollout is checkpointed: `checkpoint_ms` when
    /// its evidence or decision changed, else (only its clocks moved) `idle_checkpoint_ms`,
    /// and never sooner than `checkpoint_ms`.
    pub(super) fn checkpoint_wait_ms(&self, rt: &Runtime) -> u64 {
        let s = &self.inner.settings;
        if rt.dirty { s.checkpoint_ms } else { s.idle_checkpoint_ms.max(s.checkpoint_ms) }
    }

    /// The checkpoint of `rt` to write, with the cursor it saves; `None` when it cannot be
    /// written now (a replay it needs failed, or its state cannot be encoded).
    async fn prepared(&self, rt: &mut Runtime) -> Option<(CheckpointWrite, Cursor)> {
        if self.cursor(rt).needs_replay
            && let Err(e) = self.replay(rt).await
        {
            tracing::warn!(rollout = %rt.rec.id, error = %e, "checkpoint postponed: replaying durable observations failed");
            return None;
        }
        let cursor = self.cursor(rt);
        let encoded =
            std::panic::catch_unwind(AssertUnwindSafe(|| self.status_value(rt, cursor.folded)));
        let status = match encoded {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::error!(rollout = %rt.rec.id, error = %e, "cannot encode the rollout's state");
                return None;
            }
            Err(_) => {
                tracing::error!(rollout = %rt.rec.id, "encoding the rollout's state panicked");
                return None;
            }
        };
        let write = CheckpointWrite {
            id: rt.rec.id.clone(),
            expected_revision: rt.rec.revision,
            status,
            folded_through: cursor.folded,
        };
        Some((write, cursor))
    }

    /// Saves the accumulated evidence of every rollout of `rts` (each held under its lock by
    /// the caller) in one store call per [`CHECKPOINT_GROUP`] rollouts, which a store that can
    /// writes in one transaction: one durable commit for each group (group commit), and the
    /// encoded statuses of one group at most in memory at once. A failed write keeps everything in
    /// memory (the rollouts stay unsaved, so a later pass tries again); only a revision
    /// conflict, where another writer saved a rollout first, re-reads that rollout and
    /// replays its durable batches. Nothing is reported saved before the store said the
    /// write is durable. A panic in the group write is a bug that one rollout's state may
    /// trigger: each rollout is then written alone, and the one whose write panics is failed
    /// while the others are saved.
    pub(super) async fn checkpoint_many(&self, rts: &mut [&mut Runtime]) {
        for group in rts.chunks_mut(CHECKPOINT_GROUP) {
            self.checkpoint_group(group).await;
        }
    }

    /// One store call of [`Engine::checkpoint_many`], for at most [`CHECKPOINT_GROUP`]
    /// rollouts.
    async fn checkpoint_group(&self, rts: &mut [&mut Runtime]) {
        let mut items = Vec::with_capacity(rts.len());
        let mut written: Vec<(usize, Cursor)> = Vec::with_capacity(rts.len());
        for (i, rt) in rts.iter_mut().enumerate() {
            if let Some((write, cursor)) = self.prepared(rt).await {
                items.push(write);
                written.push((i, cursor));
            }
        }
        if items.is_empty() {
            return;
        }
        let group = AssertUnwindSafe(self.store().checkpoint_rollouts(items)).catch_unwind().await;
        let results = match group {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::warn!(rollouts = written.len(), error = %e, "checkpoint failed; the evidence stays in memory and is saved on a later pass");
                return;
            }
            Err(_) => {
                tracing::error!(
                    rollouts = written.len(),
                    "the group checkpoint panicked; writing each rollout alone"
                );
                for (i, _) in written {
                    if let Some(rt) = rts.get_mut(i) {
                        self.checkpoint_alone(rt).await;
                    }
                }
                return;
            }
        };
        metrics::counter!("actuator_checkpoint_commits_total").increment(1);
        metrics::counter!("actuator_checkpoint_rollouts_total").increment(written.len() as u64);
        for ((i, cursor), result) in written.into_iter().zip(results) {
            if let Some(rt) = rts.get_mut(i) {
                self.saved(rt, cursor, result).await;
            }
        }
    }

    /// One rollout's checkpoint in a write of its own; a panic fails that rollout.
    async fn checkpoint_alone(&self, rt: &mut Runtime) {
        let Some((w, cursor)) = self.prepared(rt).await else { return };
        let one =
            self.store().checkpoint_rollout(&w.id, w.expected_revision, w.status, w.folded_through);
        match AssertUnwindSafe(one).catch_unwind().await {
            Ok(result) => self.saved(rt, cursor, result).await,
            Err(panic) => {
                let why = format!(
                    "internal error while saving the rollout's evidence (a panic: {})",
                    super::lifecycle::panic_message(panic.as_ref())
                );
                self.fail(rt, &why).await;
            }
        }
    }

    /// Applies the store's answer to one rollout's checkpoint.
    async fn saved(
        &self,
        rt: &mut Runtime,
        cursor: Cursor,
        result: Result<RolloutRecord, StoreError>,
    ) {
        match result {
            Ok(rec) => {
                rt.set_record(rec);
                rt.mark_saved(self.now());
                self.set_cursor(rt, Cursor { saved: cursor.folded, ..cursor });
            }
            Err(e @ StoreError::Conflict { .. }) => {
                tracing::warn!(rollout = %rt.rec.id, error = %e, "checkpoint lost to another writer; re-reading the rollout and replaying its durable observations");
                self.reload(rt).await;
            }
            Err(e) => {
                tracing::warn!(rollout = %rt.rec.id, error = %e, "checkpoint failed; the evidence stays in memory and is saved on a later pass");
            }
        }
    }
}
