//! Rollouts driven only by a real Prometheus's data: a Prometheus server (`/usr/bin/prometheus`)
//! started with a temporary config and storage scrapes a test exporter on loopback every
//! second; the exporter serves per-arm request and error counters and a latency histogram,
//! driven by the test at the split the engine routes. The engine reads them through the
//! `prometheus` metric source: a good candidate completes, a bad one is rolled back, and a
//! query without data holds and then halts the rollout.

use actuator_config::{ApplyRequest, ConfigManager, ConfigSettings};
use actuator_core::testing::MemoryStore;
use actuator_core::{
    AuditQuery, DeploymentRequest, DeploymentState, HostContext, MetricSource, NewSlot, Registry,
    SlotName, Store,
};
use actuator_engine::metric_feed::MetricFeedView;
use actuator_engine::{Engine, EngineSettings, ManualAction, RolloutView, RouteSink};
use actuator_metrics_prometheus::PrometheusSource;
use async_trait::async_trait;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PROMETHEUS: &str = "/usr/bin/prometheus";
/// The histogram's bounds, in seconds as the exporter writes them.
const BOUNDS_S: [f64; 5] = [0.05, 0.1, 0.25, 0.5, 1.0];

/// A Prometheus server that is killed when the test ends.
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts Prometheus scraping `target` (host:port) every second; `None` when it is absent.
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
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: app\n    scrape_interval: 1s\n    scrape_timeout: 900ms\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let child = Command::new(PROMETHEUS)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting prometheus");
    let url = format!("http://127.0.0.1:{port}");
    let p = Prom { child, url, _dir: dir };
    let c = reqwest::Client::new();
    let t0 = Instant::now();
    loop {
        if let Ok(r) = c.get(format!("{}/-/ready", p.url)).send().await
            && r.status().is_success()
        {
            return Some(p);
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "prometheus did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One arm's cumulative counters.
#[derive(Clone, Debug, Default)]
struct ArmCounters {
    requests: u64,
    errors: u64,
    /// Successful requests at most each bound, then in total (`+Inf`).
    buckets: [u64; 6],
    sum_s: f64,
}

/// What the exporter serves; `down` answers 503 (a scrape that fails).
#[derive(Clone, Default)]
struct Exporter {
    arms: Arc<Mutex<BTreeMap<String, ArmCounters>>>,
    down: Arc<AtomicBool>,
}

impl Exporter {
    /// Serves `n` requests on `arm`, `error_rate` of them failing; latencies cycle through a
    /// fixed spread (the same for every arm).
    fn serve(&self, arm: &str, n: u64, error_rate: f64, seq: &mut u64) {
        let mut arms = self.arms.lock().unwrap();
        let a = arms.entry(arm.to_owned()).or_default();
        for _ in 0..n {
            *seq += 1;
            let before = (a.errors as f64) < error_rate * ((a.requests + 1) as f64);
            a.requests += 1;
            if before {
                a.errors += 1;
                continue;
            }
            // 40% at 30 ms, 30% at 80 ms, 20% at 200 ms, 8% at 400 ms, 2% at 1.5 s.
            let lat = match *seq % 50 {
                0..20 => 0.03,
                20..35 => 0.08,
                35..45 => 0.2,
                45..49 => 0.4,
                _ => 1.5,
            };
            for (i, b) in BOUNDS_S.iter().enumerate() {
                if lat <= *b {
                    a.buckets[i] += 1;
                }
            }
            a.buckets[5] += 1;
            a.sum_s += lat;
        }
    }

    fn text(&self) -> String {
        let arms = self.arms.lock().unwrap();
        let mut t = String::from("# TYPE app_requests_total counter\n");
        for (arm, a) in arms.iter() {
            t += &format!("app_requests_total{{arm=\"{arm}\"}} {}\n", a.requests);
        }
        t += "# TYPE app_errors_total counter\n";
        for (arm, a) in arms.iter() {
            t += &format!("app_errors_total{{arm=\"{arm}\"}} {}\n", a.errors);
        }
        t += "# TYPE app_latency_seconds histogram\n";
        for (arm, a) in arms.iter() {
            for (i, b) in BOUNDS_S.iter().enumerate() {
                t += &format!(
                    "app_latency_seconds_bucket{{arm=\"{arm}\",le=\"{b}\"}} {}\n",
                    a.buckets[i]
                );
            }
            t += &format!(
                "app_latency_seconds_bucket{{arm=\"{arm}\",le=\"+Inf\"}} {}\n",
                a.buckets[5]
            );
            t += &format!("app_latency_seconds_sum{{arm=\"{arm}\"}} {}\n", a.sum_s);
            t += &format!("app_latency_seconds_count{{arm=\"{arm}\"}} {}\n", a.buckets[5]);
        }
        t
    }
}

async fn metrics(State(e): State<Exporter>) -> (StatusCode, String) {
    if e.down.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, String::new());
    }
    (StatusCode::OK, e.text())
}

async fn exporter() -> (String, Exporter) {
    let e = Exporter::default();
    for arm in ["stable", "canary"] {
        e.arms.lock().unwrap().insert(arm.into(), ArmCounters::default());
    }
    let app =
        axum::Router::new().route("/metrics", axum::routing::get(metrics)).with_state(e.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, e)
}

/// Waits until Prometheus has scraped the exporter (its counters answer a query).
async fn scraped(prom: &Prom) {
    let src =
        PrometheusSource::new(&serde_json::from_value(json!({"url": prom.url})).unwrap()).unwrap();
    let t0 = Instant::now();
    while src.query_scalar("sum(app_requests_total)").await.ok().flatten().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(30), "prometheus never scraped the exporter");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[derive(Default)]
struct Routes;

#[async_trait]
impl RouteSink for Routes {
    async fn refresh_slot(&self, _: &SlotName) {}
}

async fn engine(prom_url: &str, store: Arc<dyn Store>) -> Engine {
    let config = ConfigManager::new(store, vec![], ConfigSettings::default());
    let name = SlotName::new("chat.default").unwrap();
    config
        .create_slot(NewSlot { name: name.clone(), description: String::new(), schema: None }, "t")
        .await
        .unwrap();
    for (m, activate) in [("a", true), ("b", false), ("c", false)] {
        config
            .apply(ApplyRequest {
                slot: name.clone(),
                document: json!({"model": m}),
                actor: "t".into(),
                message: String::new(),
                dry_run: false,
                activate,
                expected_latest: None,
            })
            .await
            .unwrap();
    }
    let mut registry = Registry::empty();
    actuator_metrics_prometheus::register(&mut registry).unwrap();
    let source: Arc<dyn MetricSource> = registry
        .metric_source(
            "prometheus",
            json!({"url": prom_url, "timeout_ms": 2000}),
            &HostContext::default(),
        )
        .unwrap();
    let settings = EngineSettings {
        tick_ms: 50,
        validation_secs: 0,
        gradual_step_secs: 0,
        ..EngineSettings::default()
    };
    let e = Engine::new(config, Arc::new(Routes), vec![], settings);
    e.set_metric_sources(BTreeMap::from([("prom".to_owned(), source)]));
    e.start().await.unwrap();
    e
}

fn metrics_spec() -> Value {
    json!({
        "source": "prom", "interval_ms": 1000, "missing_limit": 3,
        "requests": "sum(app_requests_total{arm=\"{{arm}}\"})",
        "errors": "sum(app_errors_total{arm=\"{{arm}}\"})",
        "latency_bucket": "sum(app_latency_seconds_bucket{arm=\"{{arm}}\",le=\"{{le}}\"})",
        "latency_buckets_ms": [50, 100, 250, 500, 1000]
    })
}

fn request(metrics: Value, candidate: u64) -> DeploymentRequest {
    serde_json::from_value(json!({
        "slot": "chat.default", "candidate": {"version": candidate}, "strategy": "canary", "actor": "tester",
        "canary": {"phases": [
            {"traffic_percent": 50, "min_samples": 300, "min_duration_secs": 0,
             "margins": {"errors_abs": 0.02, "latency_ratio": 1.2}},
            {"traffic_percent": 100, "min_samples": 300, "min_duration_secs": 0}
        ]},
        "success_criteria": {"alpha": 0.001},
        "metrics": metrics
    }))
    .unwrap()
}

/// Serves traffic at the split the engine routes (400 requests a second) until the rollout
/// leaves `Monitoring` for good (ends, pauses or rolls back) or `limit` passes; returns its
/// last view and the last feed status seen while it was live.
async fn drive(
    e: &Engine,
    x: &Exporter,
    id: &str,
    canary_errors: f64,
    limit: Duration,
) -> (RolloutView, MetricFeedView) {
    let t0 = Instant::now();
    let mut seq = 0;
    let mut feed = None;
    loop {
        let v = e.view(id).await.unwrap();
        if v.metric_feed.is_some() {
            feed = v.metric_feed.clone();
        }
        if !matches!(v.state, DeploymentState::Monitoring | DeploymentState::RollingOut) {
            return (v, feed.expect("a live rollout shows its feed"));
        }
        assert!(t0.elapsed() < limit, "rollout {id} did not end in {limit:?}: {v:?}");
        if v.state == DeploymentState::Monitoring {
            let canary = (40.0 * v.share_percent / 100.0).round() as u64;
            x.serve("canary", canary, canary_errors, &mut seq);
            x.serve("stable", 40 - canary, 0.01, &mut seq);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_data_alone_promotes_a_good_candidate_and_rolls_back_a_bad_one() {
    let (addr, x) = exporter().await;
    let Some(prom) = prometheus(&addr).await else { return };
    scraped(&prom).await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let e = engine(&prom.url, store).await;
    // A healthy candidate: 1% errors and the same latencies as the stable config.
    let good = e.deploy(request(metrics_spec(), 2)).await.unwrap();
    let (v, feed) = drive(&e, &x, &good.id, 0.01, Duration::from_secs(50)).await;
    assert_eq!(v.state, DeploymentState::Completed, "{v:?}");
    assert!(v.transitions.iter().any(|t| t.reason.contains("promote")), "{v:?}");
    assert!(
        feed.fed_requests >= 600 && feed.missing.is_none() && feed.source == "prom",
        "{feed:?}"
    );
    // A bad candidate, 30% errors against 1%, is rolled back from the counters alone.
    let bad = e.deploy(request(metrics_spec(), 3)).await.unwrap();
    let (v, feed) = drive(&e, &x, &bad.id, 0.30, Duration::from_secs(40)).await;
    assert!(matches!(v.state, DeploymentState::RollingBack | DeploymentState::RolledBack), "{v:?}");
    let rule = v.last_decision.as_ref().map(|d| d.rule.clone()).unwrap_or_default();
    assert!(rule.contains("error"), "rolled back on the errors: {rule}");
    // The analysis decided on what Prometheus counted: canary requests, a third failed.
    let canary = v.arms.iter().find(|a| a.arm == "canary").expect("a canary arm");
    assert!(canary.requests > 0 && canary.errors * 5 > canary.requests, "{canary:?}");
    assert!(feed.missing.is_none(), "{feed:?}");
    e.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_data_holds_promotion_then_halts_with_the_reason_and_data_back_lets_it_go_on() {
    let (addr, x) = exporter().await;
    let Some(prom) = prometheus(&addr).await else { return };
    scraped(&prom).await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let e = engine(&prom.url, store.clone()).await;
    // A source that is not configured is refused at admission, naming the field.
    let mut spec = metrics_spec();
    spec["source"] = json!("thanos");
    let err = e.deploy(request(spec, 2)).await.unwrap_err().to_string();
    assert!(err.contains("metrics.source") && err.contains("prom"), "{err}");
    // The scrape target goes down: Prometheus marks its series stale and every query is empty.
    x.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = e.deploy(request(metrics_spec(), 2)).await.unwrap();
    // Held first: the status names the query and since when.
    let t0 = Instant::now();
    let held = loop {
        let v = e.view(&r.id).await.unwrap();
        if let Some(m) = v.metric_feed.as_ref().and_then(|f| f.missing.clone()) {
            break (v, m);
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "never missing: {v:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (v, m) = held;
    assert_eq!(v.state, DeploymentState::Monitoring);
    assert_eq!((m.field.as_str(), m.arm.as_str()), ("requests", "stable"), "{m:?}");
    assert!(
        m.query.contains("app_requests_total{arm=\"stable\"}") && m.error.contains("no data"),
        "{m:?}"
    );
    // Then halted after `missing_limit` looks, with the reason.
    let t0 = Instant::now();
    let paused = loop {
        let v = e.view(&r.id).await.unwrap();
        if v.state == DeploymentState::Paused {
            break v;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "never halted: {v:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let reason = paused.paused_reason.clone().unwrap_or_default();
    assert!(reason.contains("metric data missing for 3 looks"), "{reason}");
    assert!(reason.contains("app_requests_total{arm=\"stable\"}"), "{reason}");
    let audit = store
        .list_audit(AuditQuery { limit: 100, target: Some(r.id.clone()), ..AuditQuery::default() })
        .await
        .unwrap();
    assert!(
        audit.items.iter().any(|a| a.action == "rollout.pause" && a.actor == "engine"),
        "{:?}",
        audit.items.iter().map(|a| &a.action).collect::<Vec<_>>()
    );
    // The data comes back: once resumed, the feed reads every query again and the rollout
    // completes on Prometheus's numbers.
    x.down.store(false, Ordering::SeqCst);
    e.act(&r.id, ManualAction::Resume, "op").await.unwrap();
    let (v, feed) = drive(&e, &x, &r.id, 0.01, Duration::from_secs(50)).await;
    assert_eq!(v.state, DeploymentState::Completed, "{v:?}");
    assert!(feed.missing.is_none(), "{feed:?}");
    e.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prometheus_source_passes_the_metric_source_conformance_suite() {
    use actuator_plugin_host::conformance::{Form, Subject, check_metric_source};
    let (addr, _x) = exporter().await;
    let Some(prom) = prometheus(&addr).await else { return };
    let mut registry = Registry::empty();
    actuator_metrics_prometheus::register(&mut registry).unwrap();
    let subject =
        Subject::new(Form::CompiledIn { registry: Arc::new(registry), name: "prometheus".into() });
    check_metric_source(
        &subject,
        json!({"url": prom.url, "timeout_ms": 2000}),
        ("vector(42)", 42.0),
        "absent_metric_of_the_conformance_suite",
        (json!({"url": "ftp://127.0.0.1"}), "url"),
    )
    .await
    .unwrap();
    // A query Prometheus refuses, and one of several series, are errors that say so.
    let source =
        PrometheusSource::new(&serde_json::from_value(json!({"url": prom.url})).unwrap()).unwrap();
    let e = source.query_scalar("sum(").await.unwrap_err().to_string();
    assert!(e.contains("bad_data"), "{e}");
    let e = source
        .query_scalar("vector(1) or label_replace(vector(2), \"a\", \"b\", \"\", \"\")")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("2 series") && e.contains("sum("), "{e}");
    // A server that does not answer in time is a timeout, not a hang.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let slow = PrometheusSource::new(
        &serde_json::from_value(json!({"url": url, "timeout_ms": 200})).unwrap(),
    )
    .unwrap();
    let t0 = Instant::now();
    let e = slow.query_scalar("up").await.unwrap_err().to_string();
    assert!(e.contains("timed out"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    drop(silent);
}
