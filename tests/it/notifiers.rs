//! Notifiers configured by TOML in the real daemon: a webhook with a secret from the
//! environment and an event selection gets a rollout's start and rollback, signed, and
//! nothing else; an unknown event name stops the daemon at start with the name.

use actuator_tests::{FAST_ENGINE, TestDaemon, actuator_bin, call, http};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "integration-webhook-secret";

type Got = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

async fn take(State(g): State<Got>, headers: HeaderMap, body: Bytes) -> StatusCode {
    g.lock().unwrap().push((headers, body));
    StatusCode::OK
}

#[tokio::test]
async fn a_webhook_from_toml_gets_its_selected_events_signed() {
    let got: Got = Default::default();
    let app = axum::Router::new().route("/hook", axum::routing::post(take)).with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let toml = format!(
        "{FAST_ENGINE}\n[[notifiers]]\nplugin = \"webhook\"\nevents = [\"rollout_started\", \"rolled_back\"]\nconfig = {{ url = \"{hook}\", secret = \"${{env:IT_WEBHOOK_SECRET}}\", public_url = \"https://actuator.example.com\" }}\n"
    );
    let tmp = tempfile::tempdir().unwrap();
    let d = TestDaemon::start_full(tmp.path(), Some(&toml), &[("IT_WEBHOOK_SECRET", SECRET)]);
    let (c, u) = (http(), d.url.clone());
    let (s, b) =
        call(&c, Method::POST, &format!("{u}/v1/slots"), Some(json!({"name": "chat.default"})))
            .await;
    assert_eq!(s, 201, "{b}");
    for (m, activate) in [("a", true), ("b", false)] {
        let (s, b) = call(
            &c,
            Method::POST,
            &format!("{u}/v1/slots/chat.default/versions"),
            Some(json!({"document": {"model": m}, "activate": activate})),
        )
        .await;
        assert_eq!(s, 201, "{b}");
    }
    let (s, b) = call(
        &c,
        Method::POST,
        &format!("{u}/v1/rollouts"),
        Some(json!({"slot": "chat.default", "candidate": {"version": 2}, "strategy": "canary",
                    "canary": {"phases": [{"traffic_percent": 10, "min_samples": 1000000}]}})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let id = b["id"].as_str().unwrap().to_owned();
    let (s, b) = call(
        &c,
        Method::POST,
        &format!("{u}/v1/rollouts/{id}/rollback"),
        Some(json!({"reason": "answers got worse"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let t0 = Instant::now();
    let kinds = || -> Vec<String> {
        got.lock()
            .unwrap()
            .iter()
            .map(|(_, b)| {
                serde_json::from_slice::<Value>(b).unwrap()["kind"].as_str().unwrap().to_owned()
            })
            .collect()
    };
    while !kinds().contains(&"rollout.rolled_back".to_string()) {
        assert!(t0.elapsed() < Duration::from_secs(20), "got {:?}", kinds());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Config applies, validation and monitoring are not selected.
    assert_eq!(kinds(), vec!["rollout.start", "rollout.rollback", "rollout.rolled_back"]);
    let deliveries = got.lock().unwrap().clone();
    for (h, body) in &deliveries {
        let ts = h["x-actuator-timestamp"].to_str().unwrap();
        let sig = h["x-actuator-signature"].to_str().unwrap();
        assert!(actuator_notifier_http::verify_signature(SECRET, ts, body, sig), "bad signature");
        let p: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(p["rollout"]["id"], id.as_str());
        assert_eq!(p["rollout"]["slot"], "chat.default");
        assert_eq!(p["rollout"]["url"], format!("https://actuator.example.com/v1/rollouts/{id}"));
    }
    let rb = got.lock().unwrap()[1].1.clone();
    let p: Value = serde_json::from_slice(&rb).unwrap();
    assert_eq!(
        (p["event"].as_str(), p["details"]["automatic"].as_bool()),
        (Some("rolled_back"), Some(false))
    );
    // The queue lives under the data directory and is empty once everything is delivered.
    let queues = tmp.path().join("notifier-queues");
    let dirs: Vec<_> = std::fs::read_dir(&queues).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let t1 = Instant::now();
    while std::fs::read_dir(&dirs[0]).unwrap().count() > 0 {
        assert!(t1.elapsed() < Duration::from_secs(5), "deliveries left on disk");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn an_unknown_event_name_or_an_unset_secret_stops_the_daemon_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[[notifiers]]\nplugin = \"webhook\"\nevents = [\"rolledback\"]\nconfig = { url = \"http://127.0.0.1:9/\", secret = \"0123456789abcdef\" }\n",
            vec!["notifiers[0] (webhook)", "unknown event \"rolledback\"", "rolled_back"],
        ),
        (
            "[[notifiers]]\nplugin = \"slack\"\nconfig = { webhook_url = \"${env:IT_UNSET_SLACK_URL}\" }\n",
            vec!["notifiers[0].config.webhook_url", "IT_UNSET_SLACK_URL"],
        ),
        (
            "[[notifiers]]\nplugin = \"pagerduty\"\nconfig = { routing_key = \"k\", delivery = { queue_size = 0 } }\n",
            vec!["delivery.queue_size", "1..=10000"],
        ),
    ];
    for (toml, want) in cases {
        let path = tmp.path().join("settings.toml");
        std::fs::write(&path, toml).unwrap();
        let out = std::process::Command::new(actuator_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(tmp.path())
            .arg("--config")
            .arg(&path)
            .env_remove("IT_UNSET_SLACK_URL")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        for w in want {
            assert!(err.contains(w), "{w:?} not in: {err}");
        }
    }
}
