//! `/metrics` against the real daemon, and a real Prometheus server scraping it.

use actuator_tests::{TestDaemon, http};
use reqwest::Method;
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ADMIN: &str = "metrics-admin-secret-0123456789abc";

async fn req(
    c: &reqwest::Client,
    method: Method,
    url: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    actuator_tests::call_as(c, method, url, Some(token), body).await
}

/// A daemon with a canary rollout of slot `chat` at its first phase (1%), a viewer token,
/// and some resolutions done.
async fn daemon_with_a_rollout() -> (TestDaemon, String, String) {
    let d = TestDaemon::start_env(&[("ACTUATOR_ADMIN_TOKEN", ADMIN)]);
    let c = http();
    let u = d.url.clone();
    let (s, b) = req(
        &c,
        Method::POST,
        &format!("{u}/v1/tokens"),
        ADMIN,
        Some(json!({"name": "grafana", "role": "viewer"})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let viewer = b["secret"].as_str().expect("secret").to_owned();
    let (s, _) =
        req(&c, Method::POST, &format!("{u}/v1/slots"), ADMIN, Some(json!({"name": "chat"}))).await;
    assert_eq!(s, 201);
    for (m, activate) in [("small", true), ("big", false)] {
        let body = json!({"document": {"model": m}, "activate": activate});
        let (s, b) =
            req(&c, Method::POST, &format!("{u}/v1/slots/chat/versions"), ADMIN, Some(body)).await;
        assert_eq!(s, 201, "{b}");
    }
    let (s, b) = req(
        &c,
        Method::POST,
        &format!("{u}/v1/rollouts"),
        ADMIN,
        Some(json!({"slot": "chat", "candidate": {"version": 2}, "strategy": "canary"})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let id = b["id"].as_str().expect("id").to_owned();
    for i in 0..20 {
        let body = json!({"slot": "chat", "context": {"targetingKey": format!("u{i}")}});
        let (s, b) = req(&c, Method::POST, &format!("{u}/v1/resolve"), ADMIN, Some(body)).await;
        assert_eq!(s, 200, "{b}");
    }
    (d, viewer, id)
}

#[tokio::test]
async fn metrics_are_served_in_the_prometheus_text_format_to_viewers() {
    let (d, viewer, id) = daemon_with_a_rollout().await;
    let c = http();
    let r = c.get(format!("{}/metrics", d.url)).send().await.expect("scrape");
    assert_eq!(r.status().as_u16(), 401, "metrics need a token");
    // The control loop's first pass comes a tick (1 s) after the start.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let r =
            c.get(format!("{}/metrics", d.url)).bearer_auth(&viewer).send().await.expect("scrape");
        assert_eq!(r.status().as_u16(), 200);
        assert!(r.headers()["content-type"].to_str().unwrap_or("").starts_with("text/plain"));
        let text = r.text().await.expect("text");
        if text.contains("actuator_control_loop_tick_seconds") || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for needle in [
        "actuator_http_request_duration_seconds_bucket",
        "actuator_resolutions_total{api=\"resolve\",variant=",
        &format!("actuator_rollout_share_percent{{rollout=\"{id}\",slot=\"chat\"}} 1"),
        &format!("actuator_rollout_phase{{rollout=\"{id}\",slot=\"chat\"}} 0"),
        "actuator_rollouts{state=",
        "actuator_control_loop_tick_seconds",
        "actuator_store_commit_seconds",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}

/// The Prometheus server binary (Debian's `prometheus`); CI installs it, elsewhere a missing
/// one skips the test.
fn prometheus() -> Option<String> {
    let found =
        Command::new("prometheus").arg("--version").output().is_ok_and(|o| o.status.success());
    if found {
        return Some("prometheus".into());
    }
    assert!(
        std::env::var("CI").map_or(true, |v| v != "true"),
        "the prometheus binary is missing under CI (.ci/run installs Debian's package)"
    );
    eprintln!("note: skipping the Prometheus scrape test: no prometheus binary");
    None
}

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_daemon_and_answers_a_rollouts_share() {
    let Some(bin) = prometheus() else { return };
    let (d, viewer, id) = daemon_with_a_rollout().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let target = d.url.trim_start_matches("http://").to_owned();
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: actuator\n    scrape_interval: 1s\n    authorization:\n      type: Bearer\n      credentials: {viewer}\n    static_configs:\n      - targets: ['{target}']\n"
    );
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(&cfg, config).expect("write config");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port();
    let _prom = Killed(
        Command::new(bin)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    let c = http();
    let query = format!("actuator_rollout_share_percent{{rollout=\"{id}\"}}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let value = loop {
        assert!(Instant::now() < deadline, "Prometheus never had the rollout's share");
        let r = c
            .get(format!("http://127.0.0.1:{port}/api/v1/query?query={}", enc(&query)))
            .send()
            .await;
        if let Ok(r) = r
            && let Ok(v) = r.json::<Value>().await
            && let Some(x) = v["data"]["result"][0]["value"][1].as_str()
        {
            break x.to_owned();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(value, "1", "the first phase serves 1% to the candidate");
    let r = c
        .get(format!("http://127.0.0.1:{port}/api/v1/query?query={}", enc("up{job=\"actuator\"}")))
        .send()
        .await
        .expect("query up");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["data"]["result"][0]["value"][1], "1", "{v}");
}
