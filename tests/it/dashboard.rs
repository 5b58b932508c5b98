//! The dashboard's server side over real HTTP: its embedded files (no token), `GET /v1/whoami`
//! and the rollout event stream (read scope, one event at once and one per change).

use std::process::Command;
use std::time::{Duration, Instant};

use actuator_tests::{FAST_ENGINE, TestDaemon, actuator_bin, call_as, http};
use reqwest::Method;
use serde_json::Value;

const ADMIN: &str = "dashboard-admin-secret-0123456789abcdef";

fn cli(d: &TestDaemon, token: &str, args: &[&str]) -> Value {
    let out = Command::new(actuator_bin())
        .args(args)
        .args(["--server", &d.url, "-o", "json"])
        .env("ACTUATOR_TOKEN", token)
        .output()
        .expect("run the cli");
    assert!(out.status.success(), "`{}`: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json")
}

/// Reads server-sent events from `resp` until `n` events with data have arrived (or 20 s).
async fn events(resp: &mut reqwest::Response, n: usize) -> Vec<(String, Value)> {
    let mut buf = String::new();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while out.len() < n {
        assert!(Instant::now() < deadline, "only {} events in 20 s: {buf}", out.len());
        let chunk = tokio::time::timeout(Duration::from_secs(20), resp.chunk())
            .await
            .expect("an event in time")
            .expect("the stream")
            .expect("the stream stays open");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(cut) = buf.find("\n\n") {
            let block: String = buf.drain(..cut + 2).collect();
            let mut name = String::from("message");
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if !data.is_empty() {
                out.push((name, serde_json::from_str(&data).expect("JSON data")));
            }
        }
    }
    out
}

#[tokio::test]
async fn the_dashboard_files_need_no_token_and_hold_no_data() {
    let d = TestDaemon::start_env(&[("ACTUATOR_ADMIN_TOKEN", ADMIN)]);
    let c = http();
    let r = c.get(format!("{}/ui/", d.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    assert!(r.headers()["content-security-policy"].to_str().unwrap().contains("script-src 'self'"));
    let page = r.text().await.unwrap();
    assert!(page.contains("<script src=\"app.js\">"), "{page}");
    let js = c.get(format!("{}/ui/app.js", d.url)).send().await.unwrap();
    assert_eq!(js.headers()["content-type"], "text/javascript; charset=utf-8");
    assert!(js.text().await.unwrap().contains("/v1/whoami"));
    let no_redirects =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = no_redirects.get(format!("{}/ui", d.url)).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["location"].to_str().unwrap()), (308, "/ui/"));
    let (s, body) =
        call_as(&c, Method::GET, &format!("{}/ui/secrets.json", d.url), None, None).await;
    assert_eq!((s, body["error"]["code"].as_str()), (404, Some("not_found")));
    // The data still needs a token.
    let (s, _) = call_as(&c, Method::GET, &format!("{}/v1/rollouts", d.url), None, None).await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn whoami_names_the_token_and_its_role() {
    let d = TestDaemon::start_env(&[("ACTUATOR_ADMIN_TOKEN", ADMIN)]);
    let c = http();
    let url = format!("{}/v1/whoami", d.url);
    let viewer = cli(&d, ADMIN, &["token", "create", "vera", "--role", "viewer"]);
    let client = cli(&d, ADMIN, &["token", "create", "app", "--role", "client"]);
    let (s, who) = call_as(&c, Method::GET, &url, viewer["secret"].as_str(), None).await;
    assert_eq!(s, 200, "{who}");
    assert_eq!(who, serde_json::json!({"name": "vera", "role": "viewer", "open": false}));
    let (s, who) = call_as(&c, Method::GET, &url, client["secret"].as_str(), None).await;
    assert_eq!((s, who["role"].as_str()), (200, Some("client")), "any token may ask");
    let (s, _) = call_as(&c, Method::GET, &url, None, None).await;
    assert_eq!(s, 401);
    let (s, _) = call_as(&c, Method::GET, &url, Some("not-a-token"), None).await;
    assert_eq!(s, 401);

    let open = TestDaemon::start();
    let (s, who) = call_as(&c, Method::GET, &format!("{}/v1/whoami", open.url), None, None).await;
    assert_eq!(s, 200);
    assert_eq!((who["role"].as_str(), who["open"].as_bool()), (Some("open"), Some(true)));
}

#[tokio::test]
async fn the_rollout_stream_sends_the_view_at_once_and_after_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let d =
        TestDaemon::start_full(dir.path(), Some(FAST_ENGINE), &[("ACTUATOR_ADMIN_TOKEN", ADMIN)]);
    let v1 = dir.path().join("v1.json");
    std::fs::write(&v1, r#"{"model": "gpt-4o"}"#).unwrap();
    let v2 = dir.path().join("v2.json");
    std::fs::write(&v2, r#"{"model": "gpt-4o-mini"}"#).unwrap();
    cli(&d, ADMIN, &["slot", "create", "chat"]);
    cli(&d, ADMIN, &["config", "apply", v1.to_str().unwrap(), "--slot", "chat"]);
    let started = cli(
        &d,
        ADMIN,
        &[
            "rollout",
            "start",
            "--slot",
            "chat",
            "--strategy",
            "canary",
            "--document",
            v2.to_str().unwrap(),
            "--phases",
            "10,100",
            "--min-samples",
            "1000000",
            "--min-duration",
            "600",
        ],
    );
    let id = started["id"].as_str().unwrap().to_owned();
    let viewer = cli(&d, ADMIN, &["token", "create", "vera", "--role", "viewer"]);
    let viewer = viewer["secret"].as_str().unwrap().to_owned();
    let client = cli(&d, ADMIN, &["token", "create", "app", "--role", "client"]);
    let c = reqwest::Client::new();
    let stream = |token: &str, id: &str| {
        c.get(format!("{}/v1/rollouts/{id}/events", d.url)).bearer_auth(token).send()
    };

    let mut r = stream(&viewer, &id).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let first = events(&mut r, 1).await;
    assert_eq!(first[0].0, "rollout");
    assert_eq!(first[0].1["view"]["id"], id.as_str());
    assert!(first[0].1["health"]["history"].is_array(), "{}", first[0].1);
    // A pause (by someone else) arrives on the open stream.
    let http = http();
    let (s, _) = call_as(
        &http,
        Method::POST,
        &format!("{}/v1/rollouts/{id}/pause", d.url),
        Some(ADMIN),
        Some(serde_json::json!({"reason": "looking at the stream"})),
    )
    .await;
    assert_eq!(s, 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let next = events(&mut r, 1).await;
        if next[0].1["view"]["state"] == "paused" {
            assert!(
                next[0].1["view"]["paused_reason"]
                    .as_str()
                    .unwrap()
                    .contains("looking at the stream")
            );
            break;
        }
        assert!(Instant::now() < deadline, "the pause never arrived");
    }

    // The list's stream: the newest rollouts at once, and again when one changes.
    let list = |token: &str, q: &str| {
        c.get(format!("{}/v1/events/rollouts{q}", d.url)).bearer_auth(token).send()
    };
    let mut l = list(&viewer, "?limit=5").await.unwrap();
    assert_eq!(l.status(), 200);
    let first = events(&mut l, 1).await;
    assert_eq!(first[0].0, "rollouts");
    assert_eq!(first[0].1["items"][0]["id"], id.as_str(), "{}", first[0].1);
    assert_eq!(first[0].1["items"][0]["state"], "paused");
    let (s, _) = call_as(
        &http,
        Method::POST,
        &format!("{}/v1/rollouts/{id}/resume", d.url),
        Some(ADMIN),
        Some(serde_json::json!({"reason": "done looking"})),
    )
    .await;
    assert_eq!(s, 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let next = events(&mut l, 1).await;
        if next[0].1["items"][0]["state"] != "paused" {
            break;
        }
        assert!(Instant::now() < deadline, "the resume never reached the list's stream");
    }
    assert_eq!(list(&viewer, "?limit=0").await.unwrap().status(), 400);
    assert_eq!(list(client["secret"].as_str().unwrap(), "").await.unwrap().status(), 403);

    let r = stream(&viewer, "ro-missing").await.unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rollout_not_found");
    let r = stream(client["secret"].as_str().unwrap(), &id).await.unwrap();
    assert_eq!(r.status(), 403, "a client token may not read rollouts");
    let r = c.get(format!("{}/v1/rollouts/{id}/events", d.url)).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn rollout_streams_share_the_subscriber_bound() {
    let dir = tempfile::tempdir().unwrap();
    let settings = format!("{FAST_ENGINE}\n[server]\nmax_sse_subscribers = 1\n");
    let d = TestDaemon::start_full(dir.path(), Some(&settings), &[("ACTUATOR_ADMIN_TOKEN", ADMIN)]);
    let v1 = dir.path().join("v1.json");
    std::fs::write(&v1, r#"{"model": "gpt-4o"}"#).unwrap();
    let v2 = dir.path().join("v2.json");
    std::fs::write(&v2, r#"{"model": "gpt-4o-mini"}"#).unwrap();
    cli(&d, ADMIN, &["slot", "create", "chat"]);
    cli(&d, ADMIN, &["config", "apply", v1.to_str().unwrap(), "--slot", "chat"]);
    let started = cli(
        &d,
        ADMIN,
        &[
            "rollout",
            "start",
            "--slot",
            "chat",
            "--strategy",
            "canary",
            "--document",
            v2.to_str().unwrap(),
        ],
    );
    let id = started["id"].as_str().unwrap();
    let c = reqwest::Client::new();
    let url = format!("{}/v1/rollouts/{id}/events", d.url);
    let mut first = c.get(&url).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(first.status(), 200);
    events(&mut first, 1).await;
    let second = c.get(&url).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(second.status(), 503);
    assert_eq!(second.headers()["retry-after"], "30");
    let body: Value = second.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_subscribers");
    // The OFREP stream counts against the same bound.
    let ofrep =
        c.get(format!("{}/ofrep/v1/events", d.url)).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(ofrep.status(), 503);
    // A closed stream frees its place (at the latest when the next keep-alive, every 15 s,
    // finds the connection gone).
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let again = c.get(&url).bearer_auth(ADMIN).send().await.unwrap();
        if again.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the closed stream's place was never freed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
