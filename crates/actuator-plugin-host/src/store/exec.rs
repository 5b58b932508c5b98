//! A store plugin executable: many calls in flight on one process, answers matched by id.
//!
//! Each call waits at most the call timeout for its answer. A call that gets none has the
//! process killed (a store that stops answering is hung), and a process that exits fails
//! every call still waiting; either way the process is started again on the first call after
//! a backoff that doubles on each failure and resets after a good answer, and calls during
//! the backoff fail at once with [`StoreError::Unavailable`].

use actuator_core::plugin::{PluginError, PluginHealth, PluginStatus, PluginTier};
use actuator_core::store::StoreError;
use actuator_plugin_sdk::store::wire::MAX_STORE_MESSAGE_BYTES;
use actuator_plugin_sdk::wire::{self, Request, Response};
use async_trait::async_trait;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::process::ChildStdin;
use tokio::sync::{Mutex, oneshot};
use tokio::time::{Instant, timeout};

use super::{Transport, check_size, with_instance};
use crate::exec::{Incoming, start};
use crate::{HealthCell, PluginSpec};

/// Calls waiting for their answer on one process, and whether it is gone.
#[derive(Default)]
struct Pending {
    waiting: HashMap<u64, oneshot::Sender<Response>>,
    closed: bool,
}

/// One running, configured process.
struct Proc {
    stdin: Mutex<ChildStdin>,
    pending: Arc<std::sync::Mutex<Pending>>,
    next_id: AtomicU64,
    instance: u64,
    /// Dropping or sending kills the process (its supervisor task owns it).
    kill: std::sync::Mutex<Option<oneshot::Sender<()>>>,
}

impl Proc {
    fn kill(&self) {
        if let Some(k) = self.kill.lock().unwrap_or_else(PoisonError::into_inner).take() {
            let _ = k.send(());
        }
    }

    fn closed(&self) -> bool {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).closed
    }
}

enum Link {
    Up(Arc<Proc>),
    Down { retry_at: Instant, error: String },
}

/// A store plugin executable, the transport of a [`super::RemoteStore`].
pub struct ExecStore {
    spec: PluginSpec,
    link: Mutex<Link>,
    backoff: std::sync::Mutex<Duration>,
    health: Arc<HealthCell>,
}

impl std::fmt::Debug for ExecStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecStore").field("name", &self.spec.name).finish()
    }
}

/// Starts the process, configures its store, and wires its answers to the waiting calls.
async fn launch(spec: &PluginSpec, health: &HealthCell) -> Result<Arc<Proc>, PluginError> {
    let conn = start(spec, wire::Kind::Store, health, MAX_STORE_MESSAGE_BYTES).await?;
    let crate::exec::Conn { mut child, stdin, mut incoming, next_id, instance } = conn;
    let pending = Arc::new(std::sync::Mutex::new(Pending::default()));
    let route = pending.clone();
    let name = spec.name.clone();
    tokio::spawn(async move {
        while let Some(m) = incoming.recv().await {
            if let Incoming::Response(r) = m {
                let waiter = r.id.and_then(|id| {
                    route.lock().unwrap_or_else(PoisonError::into_inner).waiting.remove(&id)
                });
                match waiter {
                    Some(w) => {
                        let _ = w.send(r);
                    }
                    None => {
                        tracing::debug!(plugin = %name, id = ?r.id, "late store answer ignored")
                    }
                }
            }
        }
        // stdout closed: every waiting call fails now.
        let mut p = route.lock().unwrap_or_else(PoisonError::into_inner);
        p.closed = true;
        p.waiting.clear();
    });
    let (kill_tx, kill_rx) = oneshot::channel::<()>();
    let name = spec.name.clone();
    tokio::spawn(async move {
        tokio::select! {
            status = child.wait() => {
                tracing::warn!(plugin = %name, status = ?status.ok(), "store plugin exited");
            }
            sent = kill_rx => {
                if sent.is_err() {
                    // The store was dropped: its stdin is closed, so the plugin finishes the
                    // calls it runs and exits; give it a moment before killing it.
                    if timeout(Duration::from_secs(5), child.wait()).await.is_ok() {
                        return;
                    }
                }
                let _ = child.kill().await;
            }
        }
    });
    Ok(Arc::new(Proc {
        stdin: Mutex::new(stdin),
        pending,
        next_id: AtomicU64::new(next_id + 1),
        instance,
        kill: std::sync::Mutex::new(Some(kill_tx)),
    }))
}

fn unavailable(name: &str, message: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("store plugin {name}: {message}"))
}

impl ExecStore {
    /// Starts the plugin and opens its store; refused or failing, it is an error (the daemon
    /// does not start). Later failures are retried with backoff.
    pub async fn start(spec: PluginSpec) -> Result<Self, PluginError> {
        let health =
            Arc::new(HealthCell::new(spec.kind, &spec.name, PluginTier::Exec, Some(&spec.path)));
        let proc = launch(&spec, &health).await?;
        tracing::info!(plugin = %spec.name, path = %spec.path.display(), version = %health.get().version, "exec store plugin started");
        Ok(Self {
            backoff: std::sync::Mutex::new(spec.limits.backoff_initial),
            spec,
            link: Mutex::new(Link::Up(proc)),
            health,
        })
    }

    fn next_backoff(&self) -> Duration {
        let mut b = self.backoff.lock().unwrap_or_else(PoisonError::into_inner);
        let now = *b;
        *b = (now * 2).min(self.spec.limits.backoff_max);
        now
    }

    fn down(&self, error: String) -> Link {
        let wait = self.next_backoff();
        tracing::warn!(plugin = %self.spec.name, error = %error, retry_in_ms = wait.as_millis() as u64, "store plugin down; restarting after backoff");
        self.health.fail(PluginHealth::Restarting, &error);
        Link::Down { retry_at: Instant::now() + wait, error }
    }

    /// Takes `proc` down (killed, backoff started) unless it was replaced already.
    async fn take_down(&self, proc: &Arc<Proc>, error: String) {
        let mut link = self.link.lock().await;
        if let Link::Up(p) = &*link
            && Arc::ptr_eq(p, proc)
        {
            p.kill();
            *link = self.down(error);
        }
    }

    /// The running process: restarted when its backoff is over, refused during it.
    async fn up(&self, limit: Duration) -> Result<Arc<Proc>, StoreError> {
        let name = &self.spec.name;
        let Ok(mut link) = timeout(limit, self.link.lock()).await else {
            return Err(unavailable(name, format!("still restarting after {limit:?}")));
        };
        if let Link::Up(p) = &*link {
            if !p.closed() {
                return Ok(p.clone());
            }
            p.kill();
            *link = self.down("the plugin exited".to_owned());
        }
        let Link::Down { retry_at, error } = &*link else {
            return Err(unavailable(name, "not running"));
        };
        let now = Instant::now();
        if now < *retry_at {
            return Err(unavailable(
                name,
                format!(
                    "restarting: next attempt in {} ms (last error: {error})",
                    (*retry_at - now).as_millis()
                ),
            ));
        }
        self.health.restarted();
        match launch(&self.spec, &self.health).await {
            Ok(p) => {
                tracing::info!(plugin = %name, "store plugin restarted");
                *link = Link::Up(p.clone());
                Ok(p)
            }
            Err(e) => {
                *link = self.down(e.to_string());
                self.health.fail(PluginHealth::Failed, &e.to_string());
                Err(unavailable(name, format!("restart failed: {e}")))
            }
        }
    }

    /// Asks the plugin to finish its calls and exit (`shutdown`), and kills it if it does not
    /// answer within the call timeout.
    async fn stop(&self) {
        let mut link = self.link.lock().await;
        if let Link::Up(p) = &*link {
            let p = p.clone();
            let id = p.next_id.fetch_add(1, Ordering::SeqCst);
            let (tx, rx) = oneshot::channel();
            p.pending.lock().unwrap_or_else(PoisonError::into_inner).waiting.insert(id, tx);
            let mut line = serde_json::to_vec(&Request::call(
                id,
                wire::method::SHUTDOWN,
                serde_json::json!({}),
            ))
            .unwrap_or_default();
            line.push(b'\n');
            let _ = p.stdin.lock().await.write_all(&line).await;
            if let Ok(Ok(_)) = timeout(self.spec.limits.call_timeout, rx).await {
                // It answered and exits: its supervisor waits for that (killing it only if it
                // lingers).
                drop(p.kill.lock().unwrap_or_else(PoisonError::into_inner).take());
            } else {
                p.kill();
            }
        }
        *link = Link::Down {
            retry_at: Instant::now() + Duration::from_secs(3600),
            error: "shut down".into(),
        };
    }
}

#[async_trait]
impl Transport for ExecStore {
    async fn call(&self, method: &'static str, params: Value) -> Result<Response, StoreError> {
        let name = &self.spec.name;
        let limit = self.spec.limits.call_timeout;
        let started = Instant::now();
        let proc = self.up(limit).await?;
        let id = proc.next_id.fetch_add(1, Ordering::SeqCst);
        let mut line =
            serde_json::to_vec(&Request::call(id, method, with_instance(params, proc.instance)))
                .map_err(|e| StoreError::Invalid(format!("encoding {method}: {e}")))?;
        check_size(method, line.len())?;
        let (tx, rx) = oneshot::channel();
        let registered = {
            let mut p = proc.pending.lock().unwrap_or_else(PoisonError::into_inner);
            if !p.closed {
                p.waiting.insert(id, tx);
            }
            !p.closed
        };
        if !registered {
            self.take_down(&proc, "the plugin exited".to_owned()).await;
            return Err(unavailable(name, "the plugin exited; it is restarted after a backoff"));
        }
        line.push(b'\n');
        let exchange = async {
            {
                let mut stdin = proc.stdin.lock().await;
                stdin.write_all(&line).await.map_err(|e| format!("writing to the plugin: {e}"))?;
                stdin.flush().await.map_err(|e| format!("writing to the plugin: {e}"))?;
            }
            rx.await.map_err(|_| "the plugin exited before it answered".to_owned())
        };
        let left = limit.saturating_sub(started.elapsed()).max(Duration::from_millis(1));
        match timeout(left, exchange).await {
            Ok(Ok(resp)) => {
                self.health.ok();
                *self.backoff.lock().unwrap_or_else(PoisonError::into_inner) =
                    self.spec.limits.backoff_initial;
                Ok(resp)
            }
            Ok(Err(lost)) => {
                self.take_down(&proc, lost.clone()).await;
                Err(unavailable(
                    name,
                    format!(
                        "{lost} to {method}; whether it was applied is unknown: re-read before retrying"
                    ),
                ))
            }
            Err(_) => {
                proc.pending.lock().unwrap_or_else(PoisonError::into_inner).waiting.remove(&id);
                let msg = format!("no answer to {method} within {limit:?}; the process was killed");
                self.take_down(&proc, msg.clone()).await;
                Err(unavailable(
                    name,
                    format!("{msg}; whether it was applied is unknown: re-read before retrying"),
                ))
            }
        }
    }

    fn status(&self) -> PluginStatus {
        self.health.get()
    }

    async fn shutdown(&self) {
        self.stop().await;
    }
}
