//! Limits on resources against the real daemon: idle and slow connections are closed while
//! requests keep being served, connections beyond the limit are closed at once, and event
//! streams are capped.

use actuator_tests::{TestDaemon, http};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr(d: &TestDaemon) -> String {
    d.url.trim_start_matches("http://").to_owned()
}

/// Whether the server closed `s` within `limit`: a read returns end of stream or an error.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            // A response (say a 408 before closing): keep reading to the end.
            Ok(Ok(_)) => {}
        }
    }
}

async fn healthz(c: &reqwest::Client, d: &TestDaemon) -> u16 {
    c.get(format!("{}/healthz", d.url)).send().await.map_or(0, |r| r.status().as_u16())
}

#[tokio::test]
async fn two_thousand_idle_connections_are_closed_while_requests_are_served() {
    let d = TestDaemon::start_with(
        "[server]\nheader_read_timeout_secs = 1\nidle_timeout_secs = 2\nmax_connections = 4000\n",
    );
    let a = addr(&d);
    let mut idle = Vec::with_capacity(2000);
    for _ in 0..2000 {
        idle.push(TcpStream::connect(&a).await.expect("connect"));
    }
    // The daemon keeps answering while they are open.
    let c = http();
    for _ in 0..50 {
        assert_eq!(healthz(&c, &d).await, 200);
    }
    let started = Instant::now();
    let mut closed = 0;
    for s in &mut idle {
        let left = Duration::from_secs(30).saturating_sub(started.elapsed());
        if closed_within(s, left).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 2000, "every idle connection is closed by the idle timeout");
    assert_eq!(healthz(&c, &d).await, 200);
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_cut_off() {
    let d =
        TestDaemon::start_with("[server]\nheader_read_timeout_secs = 1\nidle_timeout_secs = 30\n");
    let mut s = TcpStream::connect(addr(&d)).await.expect("connect");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n").await.expect("write");
    let started = Instant::now();
    let mut cut = false;
    for i in 0..40 {
        // One header byte every 100 ms: never idle, never done.
        if s.write_all(if i % 2 == 0 { b"X" } else { b"y" }).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut buf = [0u8; 64];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await
        {
            cut = true;
            break;
        }
    }
    assert!(cut, "the connection stayed open for {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_at_once_and_service_resumes() {
    let d = TestDaemon::start_with("[server]\nmax_connections = 20\nidle_timeout_secs = 2\n");
    let a = addr(&d);
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(&a).await.expect("connect"));
    }
    // Give the daemon time to accept all twenty.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut extra = TcpStream::connect(&a).await.expect("the kernel still accepts");
    assert!(closed_within(&mut extra, Duration::from_secs(1)).await, "closed at once");
    // Once the idle ones time out, the daemon serves again.
    let c = http();
    let deadline = Instant::now() + Duration::from_secs(10);
    while healthz(&c, &d).await != 200 {
        assert!(Instant::now() < deadline, "the daemon never served again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(held);
}

#[tokio::test]
async fn event_stream_subscribers_are_capped() {
    let d = TestDaemon::start_with("[server]\nmax_sse_subscribers = 2\n");
    let c = http();
    let url = format!("{}/ofrep/v1/events", d.url);
    let first = c.get(&url).send().await.expect("first");
    let second = c.get(&url).send().await.expect("second");
    assert_eq!((first.status().as_u16(), second.status().as_u16()), (200, 200));
    let third = c.get(&url).send().await.expect("third");
    assert_eq!(third.status().as_u16(), 503);
    let b: serde_json::Value = third.json().await.expect("JSON error");
    assert_eq!(b["error"]["code"], "too_many_subscribers");
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = c.get(&url).send().await.expect("again");
        if r.status().as_u16() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "a freed place is never given again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn free_text_is_capped_and_garbage_cursors_are_errors() {
    use actuator_tests::call;
    use reqwest::Method;
    use serde_json::json;
    let d = TestDaemon::start();
    let c = http();
    let u = &d.url;
    let long = "d".repeat(1025);
    for (body, field) in [
        (json!({"name": "a", "description": long}), "description"),
        (json!({"name": "a", "description": "red \u{1b}[31m alert"}), "control characters"),
    ] {
        let (s, b) = call(&c, Method::POST, &format!("{u}/v1/slots"), Some(body)).await;
        assert_eq!(s, 400, "{b}");
        assert!(b["error"]["message"].as_str().unwrap_or("").contains(field), "{b}");
    }
    let (s, b) =
        call(&c, Method::POST, &format!("{u}/v1/slots"), Some(json!({"name": "chat"}))).await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = call(
        &c,
        Method::POST,
        &format!("{u}/v1/slots/chat/versions"),
        Some(json!({"document": {"model": "m"}, "message": "line\rforged"})),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = call(
        &c,
        Method::POST,
        &format!("{u}/v1/slots/chat/snapshots"),
        Some(json!({"label": "l".repeat(257)})),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    let (_, audit) = call(&c, Method::GET, &format!("{u}/v1/audit"), None).await;
    assert_eq!(audit["items"].as_array().map(Vec::len), Some(1), "refusals wrote nothing: {audit}");
    for path in [
        "/v1/slots?cursor=%25%25%25",
        "/v1/snapshots?cursor=zzz",
        "/v1/slots/chat/versions?cursor=x",
    ] {
        let (s, b) = call(&c, Method::GET, &format!("{u}{path}"), None).await;
        assert_eq!(s, 400, "{path}: {b}");
    }
}

#[tokio::test]
async fn an_oversized_observation_batch_gets_the_json_error_shape() {
    let d = TestDaemon::start();
    // One byte over the limit, sent whole before the answer is read: the daemon has read
    // every byte when it refuses, so its close cannot reset the connection under the answer
    // (a much larger body can be cut off mid-upload, and the client then sees its write fail).
    // The documented limit of an observation body (16 MiB).
    let limit = 16 * 1024 * 1024;
    let mut body = String::with_capacity(limit + 1);
    body.push('[');
    while body.len() < limit - 1 {
        body.push_str("1,");
    }
    body.truncate(limit - 1);
    body.push_str("1]");
    assert_eq!(body.len(), limit + 1);
    let mut s = TcpStream::connect(addr(&d)).await.expect("connect");
    let head = format!(
        "POST /v1/observations HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("send the headers");
    s.write_all(body.as_bytes()).await.expect("send the body");
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut got))
        .await
        .expect("an answer within 20 s")
        .expect("read the answer");
    let answer = String::from_utf8_lossy(&got).into_owned();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let body = &answer[answer.find("\r\n\r\n").expect("a body") + 4..];
    let b: serde_json::Value =
        serde_json::from_str(body.trim()).expect("a JSON error, not plain text");
    assert_eq!(b["error"]["code"], "payload_too_large", "{b}");
}
