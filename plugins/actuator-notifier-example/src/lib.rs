//! An example third-party plugin of the actuator, depending only on `actuator-plugin-sdk`.
//!
//! As a notifier it appends each event as one JSON line to the file named by `path`. As a
//! metric source it answers a query with the number configured for it in `metrics` (`null`
//! for any other query). The same type is served as an executable (`src/main.rs`) and as a
//! cdylib (the `export_plugin!` below).
//!
//! `test_triggers` is a switch **for testing hosts only**: it maps an event kind (notify) or a
//! query (query) to a misbehaviour: `fail` (an error), `panic`, `hang` (sleep `hang_ms`) or
//! `crash` (exit the process at once; in the cdylib tier this ends the host, so never use it
//! there).

use actuator_plugin_sdk::{
    Event, Kind, MetricSourcePlugin, NotifierPlugin, Plugin, PluginError, PluginMeta,
};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// The longest `hang_ms` (one hour).
pub const MAX_HANG_MS: u64 = 3_600_000;

/// A misbehaviour, for testing hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// Answer with an error.
    Fail,
    /// Panic inside the call.
    Panic,
    /// Sleep `hang_ms` before answering.
    Hang,
    /// Exit the process with status 3 (exec tier only).
    Crash,
}

/// The plugin's config.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The file events are appended to, one JSON object per line; its directory must exist.
    pub path: PathBuf,
    /// Query → value, for the metric source.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// For testing hosts only: event kind or query → misbehaviour.
    #[serde(default)]
    pub test_triggers: BTreeMap<String, Trigger>,
    /// How long `hang` sleeps, 1..=3,600,000 ms (default 60,000).
    #[serde(default = "default_hang_ms")]
    pub hang_ms: u64,
}

fn default_hang_ms() -> u64 {
    60_000
}

/// The plugin: a JSON-lines file writer.
#[derive(Debug)]
pub struct JsonLines {
    config: Config,
    file: Mutex<std::fs::File>,
}

impl JsonLines {
    fn misbehave(&self, key: &str) -> Result<(), PluginError> {
        match self.config.test_triggers.get(key) {
            None => Ok(()),
            Some(Trigger::Fail) => Err(PluginError::failed(format!("test trigger: fail on {key}"))),
            Some(Trigger::Panic) => panic!("test trigger: panic on {key}"),
            Some(Trigger::Hang) => {
                std::thread::sleep(Duration::from_millis(self.config.hang_ms));
                Ok(())
            }
            Some(Trigger::Crash) => std::process::exit(3),
        }
    }
}

impl Plugin for JsonLines {
    type Config = Config;
    const META: PluginMeta = PluginMeta::notifier("example", env!("CARGO_PKG_VERSION"))
        .with_kinds(&[Kind::Notifier, Kind::MetricSource])
        .with_description("Appends each event as a JSON line to a file");

    fn new(config: Config) -> Result<Self, PluginError> {
        if !(1..=MAX_HANG_MS).contains(&config.hang_ms) {
            return Err(PluginError::InvalidConfig {
                field: "hang_ms".into(),
                message: format!("{} is outside 1..={MAX_HANG_MS}", config.hang_ms),
            });
        }
        let file =
            std::fs::OpenOptions::new().create(true).append(true).open(&config.path).map_err(
                |e| PluginError::InvalidConfig {
                    field: "path".into(),
                    message: format!("cannot open {} for appending: {e}", config.path.display()),
                },
            )?;
        Ok(Self { config, file: Mutex::new(file) })
    }

    fn as_notifier(&self) -> Option<&dyn NotifierPlugin> {
        Some(self)
    }

    fn as_metric_source(&self) -> Option<&dyn MetricSourcePlugin> {
        Some(self)
    }
}

impl NotifierPlugin for JsonLines {
    fn notify(&self, event: &Event) -> Result<(), PluginError> {
        self.misbehave(&event.kind)?;
        let mut line = serde_json::to_vec(event).map_err(|e| PluginError::failed(e.to_string()))?;
        line.push(b'\n');
        let mut f = self.file.lock().map_err(|_| PluginError::failed("file lock poisoned"))?;
        f.write_all(&line).and_then(|()| f.flush()).map_err(|e| {
            PluginError::failed(format!("writing {}: {e}", self.config.path.display()))
        })
    }
}

impl MetricSourcePlugin for JsonLines {
    fn query(&self, query: &str) -> Result<Option<f64>, PluginError> {
        self.misbehave(query)?;
        Ok(self.config.metrics.get(query).copied())
    }
}

actuator_plugin_sdk::export_plugin!(JsonLines);

#[cfg(test)]
mod tests {
    use super::*;
    use actuator_plugin_sdk::Severity;

    fn config(path: PathBuf) -> Config {
        Config { path, metrics: BTreeMap::new(), test_triggers: BTreeMap::new(), hang_ms: 10 }
    }

    #[test]
    fn each_event_is_one_json_line() {
        let dir = std::env::temp_dir().join(format!("example-plugin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.jsonl");
        let p = JsonLines::new(config(path.clone())).unwrap();
        for kind in ["config.apply", "rollout.start"] {
            p.notify(&Event {
                kind: kind.into(),
                severity: Severity::Info,
                at: "2026-01-01T00:00:00Z".into(),
                actor: "a".into(),
                target: "chat.default".into(),
                summary: "s".into(),
                details: serde_json::json!({"v": 2}),
            })
            .unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let kinds: Vec<String> =
            text.lines().map(|l| serde_json::from_str::<Event>(l).unwrap().kind).collect();
        assert_eq!(kinds, ["config.apply", "rollout.start"]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_missing_directory_and_a_long_hang_name_their_field() {
        let err = JsonLines::new(config("/nonexistent-dir/x.jsonl".into())).unwrap_err();
        assert!(
            matches!(err, PluginError::InvalidConfig { ref field, .. } if field == "path"),
            "{err}"
        );
        let mut c = config(std::env::temp_dir().join("example-plugin-hang.jsonl"));
        c.hang_ms = 0;
        let err = JsonLines::new(c).unwrap_err();
        assert!(
            matches!(err, PluginError::InvalidConfig { ref field, .. } if field == "hang_ms"),
            "{err}"
        );
    }
}
