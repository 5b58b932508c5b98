//! Recording off the request threads: observation bodies wait in a bounded queue per shard
//! and are parsed, made durable and folded by that shard's own thread.
//!
//! A body goes to the shard of its first item's rollout, so the batches of one rollout are
//! recorded in the order they were taken and two shards rarely wait for each other's rollout
//! locks. A full shard refuses the body at once ([`EngineError::Overloaded`], which the HTTP
//! API answers with 429 and `Retry-After`): nothing buffers without bound, and the request
//! threads that resolve never parse or record an observation. Memory is bounded by
//! `engine.ingest_shards × engine.ingest_queue` bodies, each at most the API's body limit.
//!
//! Each shard is an OS thread named `actuator-ingest-N` with a current-thread runtime of its
//! own. It holds the engine weakly: when the last handle of the engine goes, the queues close
//! and the threads end. A panic while recording a body is caught and answered as an error for
//! that body alone; the shard goes on with the next.

use bytes::Bytes as Body;
use futures::FutureExt;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Weak};
use tokio::sync::{mpsc, oneshot};

use crate::engine::{Engine, Inner};
use crate::error::EngineError;
use crate::ingest::{BodyFormat, IngestReport, ParsedBatch};

/// A body waiting for its shard, and where its answer goes.
struct Job {
    body: Body,
    format: BodyFormat,
    reply: oneshot::Sender<Result<IngestReport, EngineError>>,
}

/// The shards' senders.
pub(crate) struct IngestQueue {
    shards: Vec<mpsc::Sender<Job>>,
    capacity: usize,
}

/// How long a refused caller is asked to wait, in seconds.
const RETRY_AFTER_SECS: u64 = 1;

impl IngestQueue {
    /// Starts `shards` threads with room for `capacity` waiting bodies each, recording into
    /// the engine behind `inner`. A shard whose thread cannot start is left out (logged); with
    /// none, [`IngestQueue::submit`] records on the caller's task.
    pub(crate) fn start(inner: &Arc<Inner>, shards: usize, capacity: usize) -> Self {
        let mut senders = Vec::with_capacity(shards);
        for n in 0..shards {
            let (tx, rx) = mpsc::channel::<Job>(capacity);
            let weak = Arc::downgrade(inner);
            let spawned = std::thread::Builder::new()
                .name(format!("actuator-ingest-{n}"))
                .spawn(move || shard(n, weak, rx));
            match spawned {
                Ok(_) => senders.push(tx),
                Err(e) => tracing::error!(shard = n, error = %e, "ingestion shard could not start"),
            }
        }
        Self { shards: senders, capacity }
    }

    /// Hands `body` to its shard and waits for the answer.
    ///
    /// # Errors
    /// [`EngineError::Overloaded`] when the shard already holds `capacity` bodies (nothing
    /// of this one was read); otherwise as [`Engine::ingest_batch`].
    pub(crate) async fn submit(
        &self,
        engine: &Engine,
        body: Body,
        format: BodyFormat,
    ) -> Result<IngestReport, EngineError> {
        if self.shards.is_empty() {
            return engine.ingest_batch(ParsedBatch::parse(&body, format)?).await;
        }
        let n = shard_of(&body, format, self.shards.len());
        let (reply, answer) = oneshot::channel();
        match self.shards[n].try_send(Job { body, format, reply }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!("actuator_observations_refused_total", "reason" => "queue_full")
                    .increment(1);
                return Err(EngineError::Overloaded {
                    shard: n,
                    waiting: self.capacity,
                    retry_after_secs: RETRY_AFTER_SECS,
                });
            }
            Err(mpsc::error::TrySendError::Closed(job)) => {
                // The shard's thread is gone (the engine is shutting down): record here.
                return engine.ingest_batch(ParsedBatch::parse(&job.body, job.format)?).await;
            }
        }
        answer.await.unwrap_or_else(|_| {
            Err(EngineError::Invalid("the ingestion shard stopped before answering".into()))
        })
    }
}

/// The shard of a body: a hash of the first `rollout_id` in it (shard 0 when none is found).
fn shard_of(body: &[u8], format: BodyFormat, shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    let key = ParsedBatch::first_rollout_id(body, format).unwrap_or_default();
    // FNV-1a: stable, cheap, and good enough to spread rollout ids over a few shards.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % shards as u64) as usize
}

/// The loop of shard `n`: records each body in turn until the engine is gone.
fn shard(n: usize, engine: Weak<Inner>, mut rx: mpsc::Receiver<Job>) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(shard = n, error = %e, "ingestion shard has no runtime");
            return;
        }
    };
    rt.block_on(async move {
        while let Some(job) = rx.recv().await {
            let Some(inner) = engine.upgrade() else { break };
            let engine = Engine::from_inner(inner);
            let work = async {
                let batch = ParsedBatch::parse(&job.body, job.format)?;
                engine.ingest_batch(batch).await
            };
            let answer = match AssertUnwindSafe(work).catch_unwind().await {
                Ok(answer) => answer,
                Err(_) => {
                    tracing::error!(shard = n, "recording an observation body panicked");
                    Err(EngineError::Invalid(
                        "recording this batch failed inside the engine; nothing of it was kept"
                            .into(),
                    ))
                }
            };
            // The caller may have gone (its connection closed): the batch is recorded anyway.
            let _ = job.reply.send(answer);
        }
    });
}
