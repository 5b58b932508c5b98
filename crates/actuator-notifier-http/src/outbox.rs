//! The persisted, bounded retry queue and its delivery task.
//!
//! Each pending delivery is one file `<seq>.json` in the queue's directory, written (to a
//! temporary name, synced, renamed) before [`Outbox::enqueue`] returns and removed once the
//! delivery is settled (delivered, refused by the receiver, out of attempts, or dropped
//! because the queue is full). A new outbox on the same directory loads what is left and
//! sends it; the attempts already spent count.

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::DeliveryConfig;
use crate::signature::{SIGNATURE_HEADER, Signer};

/// The header with the delivery's id, the same on every attempt (receivers may deduplicate
/// on it: delivery is at least once).
pub const DELIVERY_HEADER: &str = "X-Actuator-Delivery";
/// The header with the attempt's time in Unix seconds, part of the signed material.
pub const TIMESTAMP_HEADER: &str = "X-Actuator-Timestamp";
/// The largest body an outbox takes (256 KiB).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// An error opening an outbox or queueing a delivery.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// Another live outbox of this process uses the directory.
    #[error(
        "the queue directory {0} is used by another notifier; give one of them its own `queue` name"
    )]
    DirInUse(PathBuf),
    /// The queue's directory cannot be made or read.
    #[error("queue directory {dir}: {source}")]
    Io {
        /// The directory.
        dir: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// There is no Tokio runtime to run the delivery task on.
    #[error("an outbox must be opened inside a Tokio runtime")]
    NoRuntime,
    /// The HTTP client could not be built.
    #[error("building the HTTP client: {0}")]
    Client(String),
    /// The body is larger than [`MAX_BODY_BYTES`].
    #[error("a delivery body of {0} bytes is larger than the limit of 262144")]
    TooLarge(usize),
}

/// One delivery to queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Where to POST it.
    pub url: String,
    /// The JSON body.
    pub body: String,
    /// What it is, for logs (`rollout.rollback r-1`); never the URL, which may be secret.
    pub label: String,
}

/// What an outbox did since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Deliveries waiting (queued or between attempts).
    pub pending: usize,
    /// Deliveries a receiver accepted (2xx).
    pub delivered: u64,
    /// Failed attempts that were retried.
    pub retried: u64,
    /// Deliveries dropped because the queue was full (the oldest first).
    pub dropped_overflow: u64,
    /// Deliveries dropped after `max_attempts` failed attempts.
    pub dropped_attempts: u64,
    /// Deliveries the receiver refused with a 4xx other than 408 and 429 (not retried).
    pub rejected: u64,
}

/// A delivery as it is kept on disk.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Entry {
    seq: u64,
    id: String,
    url: String,
    label: String,
    body: String,
    attempts: u32,
    created_at: DateTime<Utc>,
}

struct Pending {
    entry: Entry,
    due: Instant,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Pending>,
    next_seq: u64,
    in_flight: Option<u64>,
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    retried: AtomicU64,
    dropped_overflow: AtomicU64,
    dropped_attempts: AtomicU64,
    rejected: AtomicU64,
}

struct Inner {
    name: String,
    dir: PathBuf,
    cfg: DeliveryConfig,
    signer: Option<Signer>,
    client: reqwest::Client,
    state: Mutex<State>,
    wake: Notify,
    counters: Counters,
}

/// A bounded queue of HTTP deliveries persisted in a directory, with one background task
/// that delivers it. Dropping the outbox stops the task; what is pending stays on disk.
pub struct Outbox {
    inner: Arc<Inner>,
    worker: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("name", &self.inner.name)
            .field("dir", &self.inner.dir)
            .field("stats", &self.stats())
            .finish()
    }
}

/// The directories of the live outboxes of this process.
fn open_dirs() -> MutexGuard<'static, HashSet<PathBuf>> {
    static OPEN: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();
    OPEN.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner())
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn entry_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.json"))
}

/// Writes `entry` to its file: a temporary file, synced, then renamed over the old one.
fn write_entry(dir: &Path, entry: &Entry) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!(".{:020}.tmp", entry.seq));
    let bytes = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
    let mut f = private_file(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, entry_path(dir, entry.seq))
}

/// Creates (or truncates) `path`, readable by the daemon's user only: a queued delivery may
/// carry a secret (a Slack webhook URL, a PagerDuty routing key).
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path)
}

/// Makes the queue's directory (and its parents), the directory itself for the daemon's
/// user only.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

fn remove_entry(dir: &Path, seq: u64) {
    match std::fs::remove_file(entry_path(dir, seq)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(dir = %dir.display(), seq, error = %e, "could not remove a settled delivery's file")
        }
    }
}

/// Reads the pending deliveries of `dir`, oldest first; files that do not parse are removed
/// with a warning.
fn load_entries(dir: &Path) -> std::io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    for item in std::fs::read_dir(dir)? {
        let path = item?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        if name.ends_with(".tmp") {
            // A write cut short before its rename: never acknowledged.
            let _ = std::fs::remove_file(&path);
            continue;
        }
        if !name.ends_with(".json") {
            continue;
        }
        let parsed = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Entry>(&b).map_err(|e| e.to_string()));
        match parsed {
            Ok(e) => out.push(e),
            Err(error) => {
                tracing::warn!(file = %path.display(), %error, "dropping an unreadable pending delivery");
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    out.sort_by_key(|e| e.seq);
    Ok(out)
}

enum Outcome {
    Delivered,
    Retry(String),
    Rejected(String),
}

impl Outbox {
    /// Opens the queue in `dir` (made if missing), loads what is pending there and starts
    /// delivering it. `name` labels its logs and metrics (`actuator_notifier_deliveries_total`
    /// and `actuator_notifier_queue_pending`, label `queue`). `cfg` must be valid
    /// ([`DeliveryConfig::validate`]). Deliveries are signed when `signer` is given.
    pub fn open(
        name: &str,
        dir: PathBuf,
        cfg: DeliveryConfig,
        signer: Option<Signer>,
    ) -> Result<Self, OutboxError> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| OutboxError::NoRuntime)?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .connect_timeout(Duration::from_millis(cfg.timeout_ms))
            .user_agent(concat!("actuator/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| OutboxError::Client(e.to_string()))?;
        if !open_dirs().insert(dir.clone()) {
            return Err(OutboxError::DirInUse(dir));
        }
        let release = |e| {
            open_dirs().remove(&dir);
            OutboxError::Io { dir: dir.clone(), source: e }
        };
        private_dir(&dir).map_err(release)?;
        let mut entries = load_entries(&dir).map_err(release)?;
        let counters = Counters::default();
        let excess = entries.len().saturating_sub(cfg.queue_size);
        for e in entries.drain(..excess) {
            counters.dropped_overflow.fetch_add(1, Ordering::Relaxed);
            warn_dropped(name, &e, "the queue holds more than queue_size after a restart");
            remove_entry(&dir, e.seq);
        }
        let now = Instant::now();
        let next_seq = entries.last().map_or(1, |e| e.seq + 1);
        if !entries.is_empty() {
            tracing::info!(queue = name, pending = entries.len(), "resuming pending deliveries");
        }
        let state = State {
            queue: entries.into_iter().map(|entry| Pending { entry, due: now }).collect(),
            next_seq,
            in_flight: None,
        };
        let inner = Arc::new(Inner {
            name: name.to_owned(),
            dir,
            cfg,
            signer,
            client,
            state: Mutex::new(state),
            wake: Notify::new(),
            counters,
        });
        inner.gauge();
        let worker = handle.spawn(run(inner.clone()));
        Ok(Self { inner, worker })
    }

    /// Queues `delivery`: it is on disk when this returns (unless the disk refused it, which
    /// is logged and leaves it in memory only), and sent in the background. When the queue
    /// is full, the oldest pending delivery not being sent right now is dropped, counted and
    /// logged.
    pub async fn enqueue(&self, delivery: Delivery) -> Result<(), OutboxError> {
        if delivery.body.len() > MAX_BODY_BYTES {
            return Err(OutboxError::TooLarge(delivery.body.len()));
        }
        let seq = {
            let mut s = lock(&self.inner.state);
            let seq = s.next_seq;
            s.next_seq += 1;
            seq
        };
        let entry = Entry {
            seq,
            id: uuid::Uuid::new_v4().to_string(),
            url: delivery.url,
            label: delivery.label,
            body: delivery.body,
            attempts: 0,
            created_at: Utc::now(),
        };
        let dir = self.inner.dir.clone();
        let copy = entry.clone();
        let written = tokio::task::spawn_blocking(move || write_entry(&dir, &copy)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(queue = %self.inner.name, label = %entry.label, error = %e, "could not persist a delivery; it is kept in memory only")
            }
            Err(e) => {
                tracing::warn!(queue = %self.inner.name, label = %entry.label, error = %e, "persisting a delivery failed; it is kept in memory only")
            }
        }
        let dropped = {
            let mut s = lock(&self.inner.state);
            s.queue.push_back(Pending { entry, due: Instant::now() });
            let mut dropped = Vec::new();
            while s.queue.len() > self.inner.cfg.queue_size {
                let in_flight = s.in_flight;
                let oldest = s
                    .queue
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| Some(p.entry.seq) != in_flight)
                    .min_by_key(|(_, p)| p.entry.seq)
                    .map(|(i, _)| i);
                match oldest.and_then(|i| s.queue.remove(i)) {
                    Some(p) => dropped.push(p.entry),
                    None => break,
                }
            }
            dropped
        };
        for e in dropped {
            self.inner.counters.dropped_overflow.fetch_add(1, Ordering::Relaxed);
            self.inner.count("dropped_overflow");
            warn_dropped(&self.inner.name, &e, "the queue is full (queue_size)");
            remove_entry(&self.inner.dir, e.seq);
        }
        self.inner.gauge();
        self.inner.wake.notify_one();
        Ok(())
    }

    /// What the outbox did since it was opened.
    pub fn stats(&self) -> OutboxStats {
        let c = &self.inner.counters;
        OutboxStats {
            pending: lock(&self.inner.state).queue.len(),
            delivered: c.delivered.load(Ordering::Relaxed),
            retried: c.retried.load(Ordering::Relaxed),
            dropped_overflow: c.dropped_overflow.load(Ordering::Relaxed),
            dropped_attempts: c.dropped_attempts.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
        }
    }

    /// The queue's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.worker.abort();
        open_dirs().remove(&self.inner.dir);
    }
}

fn warn_dropped(queue: &str, e: &Entry, why: &str) {
    tracing::warn!(
        queue,
        label = %e.label,
        delivery = %e.id,
        seq = e.seq,
        attempts = e.attempts,
        queued_at = %e.created_at.to_rfc3339(),
        "dropped a pending delivery: {why}"
    );
}

enum Pick {
    Empty,
    Wait(Instant),
    Send(Entry),
}

impl Inner {
    fn count(&self, outcome: &'static str) {
        metrics::counter!("actuator_notifier_deliveries_total", "queue" => self.name.clone(), "outcome" => outcome)
            .increment(1);
    }

    fn gauge(&self) {
        let n = lock(&self.state).queue.len();
        metrics::gauge!("actuator_notifier_queue_pending", "queue" => self.name.clone())
            .set(n as f64);
    }

    /// The oldest pending delivery: sent now when due (marked in flight). Deliveries go out
    /// in the order they were queued, so a receiver sees a trigger before its resolve; one
    /// being retried holds those after it.
    fn pick(&self) -> Pick {
        let mut s = lock(&self.state);
        let Some(first) = s.queue.iter().min_by_key(|p| p.entry.seq) else {
            return Pick::Empty;
        };
        if first.due > Instant::now() {
            return Pick::Wait(first.due);
        }
        let entry = first.entry.clone();
        s.in_flight = Some(entry.seq);
        Pick::Send(entry)
    }

    async fn send(&self, e: &Entry) -> Outcome {
        let ts = Utc::now().timestamp().to_string();
        let mut req = self
            .client
            .post(&e.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(DELIVERY_HEADER, &e.id)
            .header(TIMESTAMP_HEADER, &ts);
        if let Some(s) = &self.signer {
            req = req.header(SIGNATURE_HEADER, s.sign(&ts, e.body.as_bytes()));
        }
        match req.body(e.body.clone()).send().await {
            Ok(r) if r.status().is_success() => Outcome::Delivered,
            Ok(r) => {
                let st = r.status();
                if st.is_server_error() || st.as_u16() == 408 || st.as_u16() == 429 {
                    Outcome::Retry(format!("HTTP {st}"))
                } else {
                    Outcome::Rejected(format!("HTTP {st}"))
                }
            }
            // Without the URL: it may carry a secret (a Slack webhook's path).
            Err(err) => Outcome::Retry(err.without_url().to_string()),
        }
    }

    /// Records what became of the attempt at `e`. A retried delivery's file is rewritten
    /// with its attempts while it is still in flight (so the queue cannot drop it and leave
    /// the rewritten file behind); a settled one leaves the queue, then its file goes.
    async fn settle(&self, mut e: Entry, outcome: Outcome) {
        e.attempts += 1;
        let retry_in = match &outcome {
            Outcome::Retry(_) if e.attempts < self.cfg.max_attempts => {
                let cap = self.cfg.backoff_cap_ms(e.attempts);
                Some(Duration::from_millis(fastrand::u64(0..=cap)))
            }
            _ => None,
        };
        if let Some(wait) = retry_in {
            let dir = self.dir.clone();
            let copy = e.clone();
            let written = tokio::task::spawn_blocking(move || write_entry(&dir, &copy)).await;
            if !matches!(written, Ok(Ok(()))) {
                tracing::warn!(queue = %self.name, label = %e.label, "could not record a delivery's attempts on disk");
            }
            {
                let mut s = lock(&self.state);
                s.in_flight = None;
                if let Some(p) = s.queue.iter_mut().find(|p| p.entry.seq == e.seq) {
                    p.entry.attempts = e.attempts;
                    p.due = Instant::now() + wait;
                }
            }
            self.counters.retried.fetch_add(1, Ordering::Relaxed);
            self.count("retried");
            if let Outcome::Retry(why) = &outcome {
                tracing::info!(queue = %self.name, label = %e.label, attempts = e.attempts, wait_ms = wait.as_millis() as u64, error = %why, "delivery failed; retrying");
            }
            return;
        }
        {
            let mut s = lock(&self.state);
            s.in_flight = None;
            if let Some(i) = s.queue.iter().position(|p| p.entry.seq == e.seq) {
                s.queue.remove(i);
            }
        }
        match outcome {
            Outcome::Delivered => {
                self.counters.delivered.fetch_add(1, Ordering::Relaxed);
                self.count("delivered");
                tracing::debug!(queue = %self.name, label = %e.label, attempts = e.attempts, "delivered");
            }
            Outcome::Retry(why) => {
                self.counters.dropped_attempts.fetch_add(1, Ordering::Relaxed);
                self.count("dropped_attempts");
                tracing::warn!(queue = %self.name, label = %e.label, delivery = %e.id, attempts = e.attempts, error = %why, "dropped a delivery after its last attempt");
            }
            Outcome::Rejected(why) => {
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                self.count("rejected");
                tracing::warn!(queue = %self.name, label = %e.label, delivery = %e.id, error = %why, "the receiver refused a delivery; not retried");
            }
        }
        let dir = self.dir.clone();
        let seq = e.seq;
        let _ = tokio::task::spawn_blocking(move || remove_entry(&dir, seq)).await;
        self.gauge();
    }
}

/// The delivery task: sends the oldest delivery when it is due, sleeps until then or until a
/// new one arrives.
async fn run(inner: Arc<Inner>) {
    loop {
        match inner.pick() {
            Pick::Empty => inner.wake.notified().await,
            Pick::Wait(due) => {
                tokio::select! {
                    () = tokio::time::sleep_until(due) => {}
                    () = inner.wake.notified() => {}
                }
            }
            Pick::Send(e) => {
                let outcome = inner.send(&e).await;
                inner.settle(e, outcome).await;
            }
        }
    }
}
