//! The accept loop: HTTP/1.1 connections under explicit limits, so that idle or slow clients
//! cannot hold the daemon's file descriptors.
//!
//! - at most [`ServerLimits::max_connections`] open connections: one more is accepted and
//!   closed at once (the client sees the connection closed, the daemon keeps its descriptors);
//! - a request's headers must arrive within [`ServerLimits::header_read_timeout_secs`]
//!   (a client trickling header bytes is cut off);
//! - a connection that moves no byte in either direction for
//!   [`ServerLimits::idle_timeout_secs`] is closed (one that never sends a request, or a
//!   keep-alive connection between requests; a response still streaming, such as the event
//!   stream with its keep-alive comments, moves bytes and stays).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, Sleep};

/// Limits on connections and subscribers (docs/operations.md, "Limits").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerLimits {
    /// Open connections at most (1 to 100,000); default 1,024. Keep it below the process's
    /// open-file limit.
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers (1 to 3,600); default 10.
    pub header_read_timeout_secs: u64,
    /// Seconds a connection may move no byte before it is closed (1 to 86,400); default 60.
    pub idle_timeout_secs: u64,
    /// Open event-stream (`/ofrep/v1/events`) subscribers at most (1 to 100,000); default 256.
    pub max_sse_subscribers: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            max_sse_subscribers: 256,
        }
    }
}

impl ServerLimits {
    /// Checks every limit against its range.
    ///
    /// # Errors
    /// The first limit out of range, named with its range.
    pub fn validate(&self) -> Result<(), String> {
        let check = |name: &str, v: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(format!("server.{name} must be between {lo} and {hi}, got {v}"))
            }
        };
        check("max_connections", self.max_connections as u64, 1, 100_000)?;
        check("header_read_timeout_secs", self.header_read_timeout_secs, 1, 3600)?;
        check("idle_timeout_secs", self.idle_timeout_secs, 1, 86_400)?;
        check("max_sse_subscribers", self.max_sse_subscribers as u64, 1, 100_000)
    }
}

/// How long a shutdown waits for open connections to finish their requests.
const DRAIN: Duration = Duration::from_secs(30);

/// Connections refused because [`ServerLimits::max_connections`] were open, since start.
static REFUSED: AtomicU64 = AtomicU64::new(0);

/// How many connections were closed at once because the limit was reached.
pub fn refused_connections() -> u64 {
    REFUSED.load(Ordering::Relaxed)
}

/// An IO that fails a read pending for longer than the idle timeout since the last byte
/// moved either way.
struct IdleIo<T> {
    inner: T,
    idle: Duration,
    last: Instant,
    timer: Pin<Box<Sleep>>,
}

impl<T> IdleIo<T> {
    fn new(inner: T, idle: Duration) -> Self {
        let now = Instant::now();
        Self { inner, idle, last: now, timer: Box::pin(tokio::time::sleep_until(now + idle)) }
    }

    fn touched(&mut self) {
        self.last = Instant::now();
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.touched();
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                let deadline = self.last + self.idle;
                if self.timer.deadline() != deadline {
                    self.timer.as_mut().reset(deadline);
                }
                match self.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connection idle for longer than server.idle_timeout_secs",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touched();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves `app` on `listener` under `limits` until `shutdown` resolves, then asks every
/// connection to finish its request and waits for them.
///
/// # Errors
/// Never for a single failed connection (logged); only when the listener itself fails.
pub(crate) async fn serve_limited(
    listener: TcpListener,
    app: axum::Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let header = Duration::from_secs(limits.header_read_timeout_secs);
    let idle = Duration::from_secs(limits.idle_timeout_secs);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors or a transient error: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            REFUSED.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, limit = limits.max_connections, "connection limit reached; closing");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let io = TokioIo::new(IdleIo::new(stream, idle));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header)
                .serve_connection(io, service);
            tokio::pin!(conn);
            let done = tokio::select! {
                r = conn.as_mut() => Some(r),
                _ = stop.wait_for(|s| *s) => None,
            };
            let result = match done {
                Some(r) => r,
                None => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
    let _ = stop_tx.send(true);
    // Every connection holds a permit: when all are back, every connection has ended.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN, permits.acquire_many(all)).await.is_err() {
        tracing::warn!("connections still open {DRAIN:?} after shutdown was asked; closing them");
    }
    Ok(())
}
