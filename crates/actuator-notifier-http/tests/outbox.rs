//! The outbox against real HTTP receivers on loopback: retries after failures, a hanging
//! receiver, a restart with deliveries pending, and a full queue.

use actuator_notifier_http::{
    DELIVERY_HEADER, Delivery, DeliveryConfig, Outbox, SIGNATURE_HEADER, Signer, TIMESTAMP_HEADER,
    verify_signature,
};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a receiver does with each request.
#[derive(Clone, Copy)]
enum Mode {
    /// Answers 500 to the first `n` requests, then 200.
    FailFirst(usize),
    /// Never answers.
    Hang,
}

#[derive(Clone)]
struct Receiver {
    mode: Mode,
    /// While set, every request gets 503.
    down: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
    got: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
}

async fn handle(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let n = r.hits.fetch_add(1, Ordering::SeqCst);
    if r.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    match r.mode {
        Mode::Hang => {
            std::future::pending::<()>().await;
            StatusCode::OK
        }
        Mode::FailFirst(k) if n < k => StatusCode::INTERNAL_SERVER_ERROR,
        Mode::FailFirst(_) => {
            r.got.lock().unwrap().push((headers, body));
            StatusCode::OK
        }
    }
}

async fn receiver(mode: Mode) -> (String, Receiver) {
    let r = Receiver {
        mode,
        down: Default::default(),
        hits: Default::default(),
        got: Default::default(),
    };
    let app = axum::Router::new().route("/hook", axum::routing::post(handle)).with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, r)
}

fn fast() -> DeliveryConfig {
    DeliveryConfig {
        timeout_ms: 300,
        max_attempts: 5,
        initial_backoff_ms: 10,
        max_backoff_ms: 50,
        queue_size: 100,
    }
}

fn delivery(url: &str, n: usize) -> Delivery {
    Delivery { url: url.to_owned(), body: format!("{{\"n\":{n}}}"), label: format!("test {n}") }
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !done() {
        assert!(t0.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_failing_receiver_gets_the_delivery_once_after_retries_signed_each_time() {
    let (url, r) = receiver(Mode::FailFirst(2)).await;
    let dir = tempfile::tempdir().unwrap();
    let q =
        Outbox::open("t", dir.path().join("q"), fast(), Some(Signer::new("a-shared-secret-0001")))
            .unwrap();
    q.enqueue(delivery(&url, 1)).await.unwrap();
    wait_for("the delivery", || q.stats().delivered == 1).await;
    let s = q.stats();
    assert_eq!((s.delivered, s.retried, s.pending), (1, 2, 0), "{s:?}");
    assert_eq!(r.hits.load(Ordering::SeqCst), 3);
    let got = r.got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "delivered once");
    let (h, body) = &got[0];
    assert_eq!(&body[..], b"{\"n\":1}");
    let ts = h[TIMESTAMP_HEADER].to_str().unwrap();
    let now = chrono::Utc::now().timestamp();
    assert!((ts.parse::<i64>().unwrap() - now).abs() < 60, "{ts}");
    assert!(verify_signature(
        "a-shared-secret-0001",
        ts,
        body,
        h[SIGNATURE_HEADER].to_str().unwrap()
    ));
    assert!(!h[DELIVERY_HEADER].is_empty());
    assert_eq!(h["content-type"], "application/json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("q")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "the queue directory is the daemon user's only");
    }
    // Settled deliveries leave no file behind.
    wait_for("the file to go", || std::fs::read_dir(dir.path().join("q")).unwrap().count() == 0)
        .await;
}

#[tokio::test]
async fn enqueue_returns_at_once_while_the_receiver_hangs_and_gives_up_after_max_attempts() {
    let (url, r) = receiver(Mode::Hang).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = DeliveryConfig { max_attempts: 2, ..fast() };
    let q = Outbox::open("t", dir.path().join("q"), cfg, None).unwrap();
    let t0 = Instant::now();
    for n in 0..5 {
        q.enqueue(delivery(&url, n)).await.unwrap();
    }
    assert!(t0.elapsed() < Duration::from_millis(250), "enqueue waited: {:?}", t0.elapsed());
    wait_for("the hanging receiver's first request", || r.hits.load(Ordering::SeqCst) >= 1).await;
    // Each attempt is cut at timeout_ms (300 ms); after 2 attempts a delivery is dropped.
    wait_for("every delivery to run out of attempts", || q.stats().dropped_attempts == 5).await;
    assert_eq!(q.stats().pending, 0);
    assert_eq!(q.stats().delivered, 0);
}

#[tokio::test]
async fn pending_deliveries_survive_a_restart_and_are_delivered_by_the_new_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let qdir = dir.path().join("q");
    let (url, r) = receiver(Mode::FailFirst(0)).await;
    r.down.store(true, Ordering::SeqCst);
    let slow = DeliveryConfig { initial_backoff_ms: 60_000, max_backoff_ms: 60_000, ..fast() };
    {
        let q = Outbox::open("t", qdir.clone(), slow, None).unwrap();
        q.enqueue(delivery(&url, 7)).await.unwrap();
        wait_for("the failed first attempt", || q.stats().retried == 1).await;
        // A second outbox on the same directory is refused while the first lives.
        let twin = Outbox::open("t", qdir.clone(), slow, None).unwrap_err();
        assert!(twin.to_string().contains("another notifier"), "{twin}");
        let files: Vec<_> = std::fs::read_dir(&qdir).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(files.len(), 1, "one pending delivery on disk: {files:?}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&files[0]).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "a queued delivery is the daemon user's only");
        }
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
        assert_eq!(v["attempts"], 1, "the spent attempt is on disk: {v}");
    }
    // The daemon restarts (the first outbox is gone, its retry a minute away) and the
    // receiver is back: the new outbox delivers what the old one left.
    r.down.store(false, Ordering::SeqCst);
    let q = Outbox::open("t", qdir.clone(), fast(), None).unwrap();
    assert_eq!(q.stats().pending, 1);
    wait_for("the resumed delivery", || q.stats().delivered == 1).await;
    let got = r.got.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].1[..], b"{\"n\":7}");
    assert_eq!(r.hits.load(Ordering::SeqCst), 2, "one failed attempt before, one after");
}

#[tokio::test]
async fn a_full_queue_drops_the_oldest_waiting_delivery_and_counts_it() {
    // The receiver holds the first delivery open for the whole test: it is being sent, so
    // the queue drops the oldest of those waiting behind it.
    let (url, r) = receiver(Mode::Hang).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = DeliveryConfig { queue_size: 3, timeout_ms: 60_000, ..fast() };
    let qdir = dir.path().join("q");
    let q = Outbox::open("t", qdir.clone(), cfg, None).unwrap();
    q.enqueue(delivery(&url, 0)).await.unwrap();
    wait_for("the first delivery to be in flight", || r.hits.load(Ordering::SeqCst) == 1).await;
    for n in 1..=5 {
        q.enqueue(delivery(&url, n)).await.unwrap();
    }
    let s = q.stats();
    assert_eq!((s.pending, s.dropped_overflow), (3, 3), "{s:?}");
    drop(q);
    let bodies = |dir: &std::path::Path| {
        let mut b: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let v: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap();
                v["body"].as_str().unwrap().to_owned()
            })
            .collect();
        b.sort();
        b
    };
    // 1, 2 and 3 are gone from disk too.
    assert_eq!(bodies(&qdir), vec!["{\"n\":0}", "{\"n\":4}", "{\"n\":5}"]);
    // Reopened with a smaller queue, the oldest beyond it are dropped and counted.
    let slow = DeliveryConfig { queue_size: 1, ..cfg };
    let q = Outbox::open("t", qdir.clone(), slow, None).unwrap();
    let s = q.stats();
    assert_eq!((s.pending, s.dropped_overflow), (1, 2), "{s:?}");
    drop(q);
    assert_eq!(bodies(&qdir), vec!["{\"n\":5}"]);
}

#[tokio::test]
async fn a_refusing_receiver_is_not_retried_and_large_bodies_are_refused() {
    async fn refuse() -> StatusCode {
        StatusCode::BAD_REQUEST
    }
    let app = axum::Router::new().route("/hook", axum::routing::post(refuse));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let dir = tempfile::tempdir().unwrap();
    let q = Outbox::open("t", dir.path().join("q"), fast(), None).unwrap();
    q.enqueue(delivery(&url, 1)).await.unwrap();
    wait_for("the refusal", || q.stats().rejected == 1).await;
    assert_eq!(q.stats().retried, 0);
    let big = Delivery { body: "x".repeat(300 * 1024), ..delivery(&url, 2) };
    assert!(q.enqueue(big).await.unwrap_err().to_string().contains("larger than the limit"));
}
