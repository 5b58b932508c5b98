//! The `log` notifier through the registry, with a subscriber that captures its output.

use std::io;
use std::sync::{Arc, Mutex};

use actuator_core::plugin::{Event, HostContext, PluginError, Registry, Severity};
use chrono::Utc;
use serde_json::{Value, json};

/// A writer into a shared buffer.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl io::Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    /// Every captured line, parsed as JSON.
    fn events(&self) -> Vec<Value> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

fn registry() -> Registry {
    let mut r = Registry::empty();
    actuator_notifier_log::register(&mut r).unwrap();
    r
}

fn event(kind: &str, severity: Severity) -> Event {
    Event {
        kind: kind.into(),
        severity,
        at: Utc::now(),
        actor: "alice".into(),
        target: "chat.default@4".into(),
        summary: format!("{kind} happened"),
        details: json!({"from": 3, "to": 4, "why": "p99 \"latency\""}),
    }
}

/// Runs `f` with a JSON subscriber writing into a fresh buffer, and returns what it wrote.
async fn capture<F: Future<Output = ()>>(f: F) -> Vec<Value> {
    let buf = Buffer::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    {
        // The test runtime is single-threaded, so the thread's default subscriber sees the
        // events of `f`.
        let _guard = tracing::subscriber::set_default(subscriber);
        f.await;
    }
    buf.events()
}

#[tokio::test]
async fn every_event_is_logged_with_its_fields_at_its_level() {
    let n = registry().notifier("log", json!({}), &HostContext::default()).unwrap();
    let lines = capture(async {
        n.notify(&event("config.apply", Severity::Info)).await.unwrap();
        n.notify(&event("rollout.pause", Severity::Warning)).await.unwrap();
        n.notify(&event("rollout.rollback", Severity::Critical)).await.unwrap();
    })
    .await;
    assert_eq!(lines.len(), 3, "{lines:?}");
    let levels: Vec<_> = lines.iter().map(|l| l["level"].as_str().unwrap()).collect();
    assert_eq!(levels, ["INFO", "WARN", "ERROR"]);
    let first = &lines[0];
    assert_eq!(first["target"], "actuator::event", "the tracing target");
    let f = &first["fields"];
    assert_eq!(f["kind"], "config.apply");
    assert_eq!(f["severity"], "info");
    assert_eq!(f["actor"], "alice");
    assert_eq!(f["target"], "chat.default@4");
    assert_eq!(f["summary"], "config.apply happened");
    assert_eq!(f["message"], "config.apply happened");
    assert!(f["at"].as_str().unwrap().contains('T'));
    let details: Value = serde_json::from_str(f["details"].as_str().unwrap()).unwrap();
    assert_eq!(details, json!({"from": 3, "to": 4, "why": "p99 \"latency\""}));
    assert_eq!(lines[2]["fields"]["severity"], "critical");
}

#[tokio::test]
async fn events_below_the_floor_are_dropped() {
    let n = registry()
        .notifier("log", json!({"level_floor": "warning"}), &HostContext::default())
        .unwrap();
    let lines = capture(async {
        n.notify(&event("config.apply", Severity::Info)).await.unwrap();
        n.notify(&event("rollout.pause", Severity::Warning)).await.unwrap();
    })
    .await;
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["fields"]["kind"], "rollout.pause");
    assert!(registry().notifier("log", Value::Null, &HostContext::default()).is_ok());
}

#[test]
fn bad_config_names_the_field() {
    let r = registry();
    let host = HostContext::default();
    match r.notifier("log", json!({"level_floor": "loud"}), &host).err().unwrap() {
        PluginError::InvalidConfig { plugin, field, message } => {
            assert_eq!((plugin.as_str(), field.as_str()), ("log", "level_floor"), "{message}");
            assert!(message.contains("unknown variant `loud`"), "{message}");
        }
        other => panic!("{other}"),
    }
    let err = r.notifier("log", json!({"level": "info"}), &host).err().unwrap();
    assert!(err.to_string().contains("unknown field `level`"), "{err}");
    assert!(
        matches!(err, PluginError::InvalidConfig { ref field, .. } if field == "level"),
        "{err}"
    );
}

#[test]
fn the_plugin_is_described_and_submitted_to_inventory() {
    let info = registry().describe();
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].name, "log");
    assert_eq!(info[0].config_schema["additionalProperties"], false);
    let r = Registry::from_inventory().unwrap();
    assert!(r.describe().iter().any(|p| p.name == "log"), "{r:?}");
}
