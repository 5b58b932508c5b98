//! The exec tier: a plugin executable speaking line-delimited JSON-RPC on stdin/stdout.
//!
//! One process per configured plugin, started with a cleared environment plus
//! `ACTUATOR_PLUGIN_API`, killed when dropped. Calls are answered one at a time. A call that
//! does not answer in time, or a process that exits, gets the process killed; it is started
//! again on the first call after a backoff that doubles on each failure (bounded by
//! [`crate::Limits::backoff_max`]) and resets after a call succeeds. A call during the backoff fails
//! at once. The plugin's stderr lines and `log` notifications go to the daemon's log under
//! the plugin's name.

use actuator_core::plugin::{
    Event, MetricSource, Notifier, PluginError, PluginHealth, PluginStatus, PluginTier,
};
use actuator_plugin_sdk::wire::{
    self, ConfigureParams, ConfigureResult, Hello, LogLevel, LogRecord, MAX_MESSAGE_BYTES,
    NotifyParams, PluginMessage, QueryParams, QueryResult, Request, Response,
};
use async_trait::async_trait;
use serde_json::Value;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{Mutex, mpsc};
use tokio::time::{Instant, timeout};

use crate::{HealthCell, Hosted, PluginSpec, check_hello, failed, from_rpc, host_hello, wire_kind};

/// Longest stderr line passed to the log (longer ones are cut).
const MAX_STDERR_LINE: usize = 8 * 1024;

/// Messages from the reader of stdout, at most this many waiting.
const INCOMING_QUEUE: usize = 16;

/// A message read from the plugin's stdout.
pub(crate) enum Incoming {
    /// Its hello.
    Hello(Value),
    /// An answer.
    Response(Response),
}

/// A started, configured plugin process.
pub(crate) struct Conn {
    pub(crate) child: Child,
    pub(crate) stdin: ChildStdin,
    pub(crate) incoming: mpsc::Receiver<Incoming>,
    pub(crate) next_id: u64,
    pub(crate) instance: u64,
}

enum State {
    Up(Box<Conn>),
    Down { retry_at: Instant, error: String },
}

/// A running plugin executable behind the [`Notifier`] and [`MetricSource`] traits.
pub struct ExecPlugin {
    spec: PluginSpec,
    kind: wire::Kind,
    state: Mutex<State>,
    /// The restart delay the next failure waits.
    backoff: std::sync::Mutex<Duration>,
    health: Arc<HealthCell>,
}

impl std::fmt::Debug for ExecPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecPlugin")
            .field("name", &self.spec.name)
            .field("path", &self.spec.path)
            .finish()
    }
}

/// Reads one line of at most `max` bytes; a longer one is cut there and its rest skipped.
/// `None` at the end of the stream.
async fn read_bounded<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
    max: usize,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<bool>> {
    buf.clear();
    let n = AsyncReadExt::take(&mut *r, max as u64 + 1).read_until(b'\n', buf).await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        return Ok(Some(true));
    }
    if buf.len() > max {
        let mut rest = Vec::new();
        r.read_until(b'\n', &mut rest).await?;
        buf.truncate(max);
        return Ok(Some(false));
    }
    Ok(Some(true))
}

fn log_record(name: &str, r: &LogRecord) {
    let m = r.message.as_str();
    match r.level {
        LogLevel::Error => tracing::error!(target: "actuator::plugin", plugin = %name, "{m}"),
        LogLevel::Warn => tracing::warn!(target: "actuator::plugin", plugin = %name, "{m}"),
        LogLevel::Info => tracing::info!(target: "actuator::plugin", plugin = %name, "{m}"),
        LogLevel::Debug => tracing::debug!(target: "actuator::plugin", plugin = %name, "{m}"),
        LogLevel::Trace => tracing::trace!(target: "actuator::plugin", plugin = %name, "{m}"),
    }
}

async fn read_stdout(
    name: String,
    out: tokio::process::ChildStdout,
    tx: mpsc::Sender<Incoming>,
    max_line: usize,
) {
    let mut r = BufReader::new(out);
    let mut buf = Vec::new();
    loop {
        match read_bounded(&mut r, max_line, &mut buf).await {
            Ok(None) | Err(_) => return,
            Ok(Some(false)) => {
                tracing::warn!(plugin = %name, "plugin wrote a line longer than {max_line} bytes; ignored");
            }
            Ok(Some(true)) => match serde_json::from_slice::<PluginMessage>(&buf) {
                Ok(PluginMessage::Notification(n)) if n.method == wire::method::LOG => {
                    match serde_json::from_value::<LogRecord>(n.params) {
                        Ok(rec) => log_record(&name, &rec),
                        Err(e) => {
                            tracing::warn!(plugin = %name, error = %e, "unreadable log notification")
                        }
                    }
                }
                Ok(PluginMessage::Notification(n)) if n.method == wire::method::HELLO => {
                    if tx.send(Incoming::Hello(n.params)).await.is_err() {
                        return;
                    }
                }
                Ok(PluginMessage::Notification(n)) => {
                    tracing::debug!(plugin = %name, method = %n.method, "unknown notification ignored");
                }
                Ok(PluginMessage::Response(resp)) => {
                    if tx.send(Incoming::Response(resp)).await.is_err() {
                        return;
                    }
                }
                Err(_) => {
                    let text = String::from_utf8_lossy(&buf);
                    tracing::warn!(plugin = %name, line = %text.chars().take(200).collect::<String>(), "plugin wrote a line on stdout that is not JSON-RPC (use stderr or log records for output)");
                }
            },
        }
    }
}

async fn read_stderr(name: String, err: tokio::process::ChildStderr) {
    let mut r = BufReader::new(err);
    let mut buf = Vec::new();
    while let Ok(Some(_)) = read_bounded(&mut r, MAX_STDERR_LINE, &mut buf).await {
        let line = String::from_utf8_lossy(&buf);
        tracing::info!(target: "actuator::plugin", plugin = %name, stream = "stderr", "{line}");
    }
}

impl Conn {
    async fn send(&mut self, msg: &Request) -> Result<(), String> {
        let mut line = serde_json::to_vec(msg).map_err(|e| e.to_string())?;
        line.push(b'\n');
        self.stdin.write_all(&line).await.map_err(|e| format!("writing to the plugin: {e}"))?;
        self.stdin.flush().await.map_err(|e| format!("writing to the plugin: {e}"))
    }

    /// Sends one request and waits for its answer (no timeout here). `Err` means the
    /// connection is lost; a plugin's error answer is `Ok(Err(..))`.
    async fn request(&mut self, method: &str, params: Value) -> Result<Response, String> {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&Request::call(id, method, params)).await?;
        loop {
            match self.incoming.recv().await {
                None => {
                    // Its stdout closed: it is exiting, or closed the pipe and lives on.
                    let status = timeout(Duration::from_millis(500), self.child.wait()).await;
                    return Err(match status {
                        Ok(Ok(s)) => format!("the plugin exited ({s})"),
                        _ => "the plugin closed its stdout".to_owned(),
                    });
                }
                Some(Incoming::Response(r)) if r.id == Some(id) => return Ok(r),
                Some(Incoming::Response(r)) => {
                    tracing::debug!(id = ?r.id, "stale plugin answer ignored");
                }
                Some(Incoming::Hello(_)) => {}
            }
        }
    }

    pub(crate) fn kill(mut self) {
        let _ = self.child.start_kill();
        // Reap it off the caller's path.
        tokio::spawn(async move {
            let _ = timeout(Duration::from_secs(5), self.child.wait()).await;
        });
    }
}

/// Spawns the process, reads its hello, answers with the host's, and configures it. Lines
/// from the plugin longer than `max_line` bytes are dropped.
pub(crate) async fn start(
    spec: &PluginSpec,
    kind: wire::Kind,
    health: &HealthCell,
    max_line: usize,
) -> Result<Conn, PluginError> {
    let name = spec.name.as_str();
    let mut cmd = Command::new(&spec.path);
    cmd.args(&spec.args)
        .env_clear()
        .env(wire::API_ENV, crate::HOST_API.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| failed(name, format!("cannot start {}: {e}", spec.path.display())))?;
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(failed(name, "the plugin's stdio could not be captured"));
    };
    let (tx, rx) = mpsc::channel(INCOMING_QUEUE);
    tokio::spawn(read_stdout(name.to_owned(), stdout, tx, max_line));
    tokio::spawn(read_stderr(name.to_owned(), stderr));
    let mut conn = Conn { child, stdin, incoming: rx, next_id: 0, instance: 0 };
    let handshake = async {
        let hello = match conn.incoming.recv().await {
            Some(Incoming::Hello(v)) => v,
            Some(Incoming::Response(_)) => {
                return Err(failed(name, "the plugin answered before its hello"));
            }
            None => return Err(failed(name, "the plugin exited before its hello")),
        };
        let hello: Hello = serde_json::from_value(hello).map_err(|e| {
            failed(name, format!("its hello is not the actuator-plugin handshake: {e}"))
        })?;
        check_hello(name, &hello, kind)?;
        health.set_version(&hello.plugin.version);
        conn.send(&Request::notification(wire::method::HELLO, host_hello()))
            .await
            .map_err(|e| failed(name, e))?;
        let params = ConfigureParams { kind, name: name.to_owned(), config: spec.config.clone() };
        let resp = conn
            .request(wire::method::CONFIGURE, serde_json::to_value(params).unwrap_or(Value::Null))
            .await
            .map_err(|e| failed(name, format!("during configure: {e}")))?;
        let result = resp.into_result().map_err(|e| from_rpc(name, e))?;
        let r: ConfigureResult = serde_json::from_value(result)
            .map_err(|e| failed(name, format!("unreadable configure result: {e}")))?;
        Ok::<_, PluginError>(r.instance)
    };
    match timeout(spec.limits.start_timeout, handshake).await {
        Ok(Ok(instance)) => {
            conn.instance = instance;
            Ok(conn)
        }
        Ok(Err(e)) => {
            conn.kill();
            Err(e)
        }
        Err(_) => {
            conn.kill();
            Err(failed(
                name,
                format!("no hello and configure within {:?}", spec.limits.start_timeout),
            ))
        }
    }
}

impl ExecPlugin {
    /// Starts the plugin: spawn, handshake, configure. Refused or failing, it is an error (the
    /// daemon does not start); afterwards failures are retried with backoff.
    pub async fn start(spec: PluginSpec) -> Result<Self, PluginError> {
        let kind = wire_kind(spec.kind).ok_or_else(|| {
            failed(&spec.name, format!("kind {} cannot be an exec plugin", spec.kind))
        })?;
        let health =
            Arc::new(HealthCell::new(spec.kind, &spec.name, PluginTier::Exec, Some(&spec.path)));
        let conn = start(&spec, kind, &health, MAX_MESSAGE_BYTES).await?;
        tracing::info!(plugin = %spec.name, path = %spec.path.display(), version = %health.get().version, "exec plugin started");
        Ok(Self {
            backoff: std::sync::Mutex::new(spec.limits.backoff_initial),
            spec,
            kind,
            state: Mutex::new(State::Up(Box::new(conn))),
            health,
        })
    }

    fn next_backoff(&self) -> Duration {
        let mut b = self.backoff.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = *b;
        *b = (now * 2).min(self.spec.limits.backoff_max);
        now
    }

    fn reset_backoff(&self) {
        *self.backoff.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            self.spec.limits.backoff_initial;
    }

    fn down(&self, error: String) -> State {
        let wait = self.next_backoff();
        tracing::warn!(plugin = %self.spec.name, error = %error, retry_in_ms = wait.as_millis() as u64, "exec plugin down; restarting after backoff");
        self.health.fail(PluginHealth::Restarting, &error);
        State::Down { retry_at: Instant::now() + wait, error }
    }

    /// Makes sure a process is up: fails at once during the backoff, else restarts it.
    async fn ensure_up<'a>(&self, state: &'a mut State) -> Result<&'a mut Conn, PluginError> {
        if let State::Down { retry_at, error } = state {
            let now = Instant::now();
            if now < *retry_at {
                return Err(failed(
                    &self.spec.name,
                    format!(
                        "restarting: next attempt in {} ms (last error: {error})",
                        (*retry_at - now).as_millis()
                    ),
                ));
            }
            self.health.restarted();
            match start(&self.spec, self.kind, &self.health, MAX_MESSAGE_BYTES).await {
                Ok(conn) => {
                    tracing::info!(plugin = %self.spec.name, "exec plugin restarted");
                    *state = State::Up(Box::new(conn));
                }
                Err(e) => {
                    let msg = e.to_string();
                    *state = self.down(msg);
                    self.health.fail(PluginHealth::Failed, &e.to_string());
                    return Err(e);
                }
            }
        }
        match state {
            State::Up(c) => Ok(c),
            State::Down { .. } => Err(failed(&self.spec.name, "not running")),
        }
    }

    /// One call, bounded by the call timeout (waiting for a running call counts too).
    async fn call(
        &self,
        method: &str,
        params: impl FnOnce(u64) -> Value,
    ) -> Result<Value, PluginError> {
        let name = &self.spec.name;
        let limit = self.spec.limits.call_timeout;
        let started = Instant::now();
        let Ok(mut state) = timeout(limit, self.state.lock()).await else {
            return Err(failed(name, format!("busy: an earlier call still runs after {limit:?}")));
        };
        let conn = self.ensure_up(&mut state).await?;
        let params = params(conn.instance);
        let left = limit.saturating_sub(started.elapsed()).max(Duration::from_millis(1));
        let outcome = timeout(left, conn.request(method, params)).await;
        match outcome {
            Ok(Ok(resp)) => match resp.into_result() {
                Ok(v) => {
                    self.health.ok();
                    self.reset_backoff();
                    Ok(v)
                }
                Err(e) => {
                    let e = from_rpc(name, e);
                    self.health.fail(PluginHealth::Failed, &e.to_string());
                    Err(e)
                }
            },
            Ok(Err(lost)) => {
                if let State::Up(c) = std::mem::replace(
                    &mut *state,
                    State::Down { retry_at: Instant::now(), error: String::new() },
                ) {
                    c.kill();
                }
                *state = self.down(lost.clone());
                Err(failed(name, lost))
            }
            Err(_) => {
                let msg = format!("no answer to {method} within {limit:?}; the process was killed");
                if let State::Up(c) = std::mem::replace(
                    &mut *state,
                    State::Down { retry_at: Instant::now(), error: String::new() },
                ) {
                    c.kill();
                }
                *state = self.down(msg.clone());
                Err(failed(name, msg))
            }
        }
    }

    /// Asks the plugin whether it is well (`health`).
    pub async fn probe(&self) -> Result<bool, PluginError> {
        let v = self.call(wire::method::HEALTH, |i| serde_json::json!({ "instance": i })).await?;
        Ok(v.get("ok").and_then(Value::as_bool).unwrap_or(false))
    }

    /// Asks the plugin to exit (`shutdown`), and kills it if it does not within a second.
    pub async fn shutdown(&self) {
        let mut state = self.state.lock().await;
        if let State::Up(mut c) = std::mem::replace(
            &mut *state,
            State::Down {
                retry_at: Instant::now() + Duration::from_secs(3600),
                error: "shut down".into(),
            },
        ) {
            let _ = timeout(
                Duration::from_secs(1),
                c.request(wire::method::SHUTDOWN, serde_json::json!({})),
            )
            .await;
            if timeout(Duration::from_secs(1), c.child.wait()).await.is_err() {
                c.kill();
            }
        }
    }
}

#[async_trait]
impl Notifier for ExecPlugin {
    async fn notify(&self, event: &Event) -> Result<(), PluginError> {
        let event = crate::wire_event(event);
        self.call(wire::method::NOTIFY, |instance| {
            serde_json::to_value(NotifyParams { instance, event }).unwrap_or(Value::Null)
        })
        .await
        .map(|_| ())
    }
}

#[async_trait]
impl MetricSource for ExecPlugin {
    async fn query_scalar(&self, query: &str) -> Result<Option<f64>, PluginError> {
        let v = self
            .call(wire::method::QUERY, |instance| {
                serde_json::to_value(QueryParams { instance, query: query.to_owned() })
                    .unwrap_or(Value::Null)
            })
            .await?;
        let r: QueryResult = serde_json::from_value(v)
            .map_err(|e| failed(&self.spec.name, format!("unreadable query result: {e}")))?;
        Ok(r.value)
    }
}

impl Hosted for ExecPlugin {
    fn status(&self) -> PluginStatus {
        self.health.get()
    }
}
