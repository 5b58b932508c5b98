//! A daemon configured with a `[[metric_sources]]` Prometheus source: a real Prometheus
//! (`/usr/bin/prometheus`, skipped with a message when absent) scrapes a loopback exporter of
//! per-arm counters and a histogram every second, and a rollout started over the API with
//! `metrics` is rolled back from that data alone.

use actuator_tests::{FAST_ENGINE, TestDaemon, call, http};
use axum::extract::State;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PROMETHEUS: &str = "/usr/bin/prometheus";

/// A Prometheus server killed when the test ends.
struct Prom {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prom {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn prometheus(target: &str) -> Option<Prom> {
    if !Path::new(PROMETHEUS).exists() {
        eprintln!("skipped: {PROMETHEUS} is not installed (Debian package `prometheus`)");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: app\n    scrape_interval: 1s\n    scrape_timeout: 900ms\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(PROMETHEUS)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting prometheus");
    let p = Prom { child, url: format!("http://127.0.0.1:{port}"), _dir: dir };
    let c = http();
    let t0 = Instant::now();
    // Ready, and the exporter scraped once: its counters answer a query.
    loop {
        let q = format!("{}/api/v1/query?query=sum(app_requests_total)", p.url);
        if let Ok(r) = c.get(q).send().await
            && let Ok(v) = r.json::<Value>().await
            && v["data"]["result"].as_array().is_some_and(|a| !a.is_empty())
        {
            return Some(p);
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "prometheus never scraped the exporter");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Per arm: requests, errors, successful requests at most 0.1 s, 0.5 s, and in all.
type Counters = Arc<Mutex<BTreeMap<String, [u64; 5]>>>;

async fn exporter() -> (String, Counters) {
    let c: Counters = Arc::default();
    for arm in ["stable", "canary"] {
        c.lock().unwrap().insert(arm.into(), [0; 5]);
    }
    async fn text(State(c): State<Counters>) -> String {
        let mut t = String::from(
            "# TYPE app_requests_total counter\n# TYPE app_errors_total counter\n# TYPE app_latency_seconds histogram\n",
        );
        for (arm, [r, e, b1, b2, all]) in c.lock().unwrap().iter() {
            t += &format!(
                "app_requests_total{{arm=\"{arm}\"}} {r}\napp_errors_total{{arm=\"{arm}\"}} {e}\n"
            );
            t += &format!("app_latency_seconds_bucket{{arm=\"{arm}\",le=\"0.1\"}} {b1}\n");
            t += &format!("app_latency_seconds_bucket{{arm=\"{arm}\",le=\"0.5\"}} {b2}\n");
            t += &format!("app_latency_seconds_bucket{{arm=\"{arm}\",le=\"+Inf\"}} {all}\n");
            t += &format!("app_latency_seconds_count{{arm=\"{arm}\"}} {all}\n");
        }
        t
    }
    let app = axum::Router::new().route("/metrics", axum::routing::get(text)).with_state(c.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, c)
}

/// Serves `n` requests on `arm`, `error_rate` of them failing, latencies spread over the buckets.
fn serve(c: &Counters, arm: &str, n: u64, error_rate: f64) {
    let mut m = c.lock().unwrap();
    let a = m.get_mut(arm).unwrap();
    for _ in 0..n {
        a[0] += 1;
        if (a[1] as f64) < error_rate * a[0] as f64 {
            a[1] += 1;
            continue;
        }
        match a[0] % 10 {
            0..6 => a[2] += 1,
            6..9 => {}
            _ => {
                a[4] += 1;
                continue;
            }
        }
        a[3] += 1;
        a[4] += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_with_a_prometheus_source_rolls_a_bad_candidate_back_from_its_data() {
    let (addr, counters) = exporter().await;
    let Some(prom) = prometheus(&addr).await else { return };
    let d = TestDaemon::start_with(&format!(
        "{FAST_ENGINE}[[metric_sources]]\nname = \"prom\"\nplugin = \"prometheus\"\nconfig = {{ url = \"{}\", timeout_ms = 2000 }}\n",
        prom.url
    ));
    let c = http();
    let (_, plugins) = call(&c, Method::GET, &format!("{}/v1/plugins", d.url), None).await;
    let p = plugins["plugins"].as_array().unwrap().iter().find(|p| p["name"] == "prometheus");
    assert_eq!(
        p.map(|p| (p["kind"].clone(), p["in_use"].clone())),
        Some((json!("metric_source"), json!(true)))
    );
    let (s, b) =
        call(&c, Method::POST, &format!("{}/v1/slots", d.url), Some(json!({"name": "chat"}))).await;
    assert_eq!(s, 201, "{b}");
    for (i, m) in ["a", "b"].iter().enumerate() {
        let body = json!({"document": {"model": m}, "activate": i == 0});
        let (s, b) =
            call(&c, Method::POST, &format!("{}/v1/slots/chat/versions", d.url), Some(body)).await;
        assert_eq!(s, 201, "{b}");
    }
    let mut req = json!({
        "slot": "chat", "candidate": {"version": 2}, "strategy": "canary",
        "canary": {"phases": [
            {"traffic_percent": 50, "min_samples": 300, "min_duration_secs": 0},
            {"traffic_percent": 100, "min_samples": 300, "min_duration_secs": 0}
        ]},
        "success_criteria": {"alpha": 0.001},
        "metrics": {
            "source": "thanos", "interval_ms": 1000,
            "requests": "sum(app_requests_total{arm=\"{{arm}}\"})",
            "errors": "sum(app_errors_total{arm=\"{{arm}}\"})",
            "latency_bucket": "sum(app_latency_seconds_bucket{arm=\"{{arm}}\",le=\"{{le}}\"})",
            "latency_buckets_ms": [100, 500]
        }
    });
    // A source the daemon does not have is refused, naming the field; nothing is started.
    let (s, b) = call(&c, Method::POST, &format!("{}/v1/rollouts", d.url), Some(req.clone())).await;
    assert_eq!(s, 422, "{b}");
    assert!(b.to_string().contains("metrics.source: no metric source named"), "{b}");
    req["metrics"]["source"] = json!("prom");
    let mut fast = req.clone();
    fast["metrics"]["interval_ms"] = json!(10);
    let (s, b) = call(&c, Method::POST, &format!("{}/v1/rollouts", d.url), Some(fast)).await;
    assert_eq!(s, 422, "{b}");
    assert!(b.to_string().contains("metrics.interval_ms: must be between 500 and 300000"), "{b}");
    let (s, b) = call(&c, Method::POST, &format!("{}/v1/rollouts", d.url), Some(req)).await;
    assert_eq!(s, 201, "{b}");
    let id = b["id"].as_str().unwrap().to_owned();
    // The application posts nothing: it only counts, at the split the daemon routes.
    let t0 = Instant::now();
    let v = loop {
        let (_, v) = call(&c, Method::GET, &format!("{}/v1/rollouts/{id}", d.url), None).await;
        let state = v["state"].as_str().unwrap_or("").to_owned();
        if matches!(state.as_str(), "rolling_back" | "rolled_back" | "completed" | "paused") {
            break v;
        }
        assert!(t0.elapsed() < Duration::from_secs(40), "no decision: {v}");
        let canary = (40.0 * v["share_percent"].as_f64().unwrap_or(0.0) / 100.0).round() as u64;
        serve(&counters, "canary", canary, 0.30);
        serve(&counters, "stable", 40 - canary, 0.01);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(matches!(v["state"].as_str(), Some("rolling_back" | "rolled_back")), "{v}");
    assert!(v["last_decision"]["rule"].as_str().unwrap_or("").contains("error"), "{v}");
    let canary = v["arms"].as_array().unwrap().iter().find(|a| a["arm"] == "canary").unwrap();
    assert!(canary["requests"].as_u64().unwrap() > 0, "{v}");
}
