//! A [`Notifier`] of the actuator that writes every event as one structured `tracing` event,
//! for operators who read the daemon's logs or ship them elsewhere.
//!
//! Each event is logged under the tracing target [`TRACING_TARGET`] with the fields `kind`,
//! `severity`, `at`, `actor`, `target`, `summary` and `details` (the details as a JSON
//! string), at level INFO, WARN or ERROR for the severities info, warning and critical.
//! Events below the configured `level_floor` are dropped.
//!
//! The plugin registers itself as the notifier named `log`; its config is
//! `{ "level_floor": "info" | "warning" | "critical" }`, every field optional.

use std::sync::Arc;

use actuator_core::plugin::{
    ApiVersion, Event, HostContext, Notifier, NotifierFactory, PluginError, PluginInfo, PluginKind,
    Registry, Severity, parse_config,
};
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};

/// The plugin's name in configuration files and in the registry.
pub const PLUGIN_NAME: &str = "log";

/// The `tracing` target of the events this notifier writes.
pub const TRACING_TARGET: &str = "actuator::event";

/// Configuration of the `log` notifier.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Events less severe than this are not logged. Default: `info` (everything).
    #[serde(default = "default_floor")]
    pub level_floor: Severity,
}

fn default_floor() -> Severity {
    Severity::Info
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level_floor: default_floor() }
    }
}

impl LogConfig {
    /// The JSON Schema of this configuration.
    pub fn schema() -> Value {
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "log notifier",
            "description": "Writes every event as one structured log event.",
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "level_floor": {
                    "enum": ["info", "warning", "critical"],
                    "default": "info",
                    "description": "Events less severe than this are not logged."
                }
            }
        })
    }
}

/// The order of severities: info < warning < critical.
fn rank(s: Severity) -> u8 {
    match s {
        Severity::Info => 0,
        Severity::Warning => 1,
        Severity::Critical => 2,
    }
}

fn severity_str(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

/// Writes events to `tracing`.
#[derive(Clone, Debug, Default)]
pub struct LogNotifier {
    config: LogConfig,
}

impl LogNotifier {
    /// A notifier with this configuration.
    pub fn new(config: LogConfig) -> Self {
        Self { config }
    }

    /// Whether an event of this severity is logged.
    pub fn logs(&self, severity: Severity) -> bool {
        rank(severity) >= rank(self.config.level_floor)
    }
}

/// Emits one event at `$level` with the fields of `$event` (`tracing`'s level must be a
/// constant per call site, hence one call per level).
macro_rules! emit {
    ($level:ident, $event:expr, $details:expr) => {
        tracing::$level!(
            target: TRACING_TARGET,
            kind = %$event.kind,
            severity = severity_str($event.severity),
            at = %$event.at.to_rfc3339(),
            actor = %$event.actor,
            target = %$event.target,
            summary = %$event.summary,
            details = %$details,
            "{}",
            $event.summary
        )
    };
}

#[async_trait]
impl Notifier for LogNotifier {
    async fn notify(&self, event: &Event) -> Result<(), PluginError> {
        if !self.logs(event.severity) {
            return Ok(());
        }
        let details = event.details.to_string();
        match event.severity {
            Severity::Info => emit!(info, event, details),
            Severity::Warning => emit!(warn, event, details),
            Severity::Critical => emit!(error, event, details),
        }
        Ok(())
    }
}

/// Builds [`LogNotifier`]s from configuration: the `log` [`NotifierFactory`].
#[derive(Clone, Copy, Debug, Default)]
pub struct LogNotifierFactory;

impl NotifierFactory for LogNotifierFactory {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            kind: PluginKind::Notifier,
            name: PLUGIN_NAME.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            api: ApiVersion::HOST,
            description: "Writes every event as one structured log event".to_owned(),
            config_schema: LogConfig::schema(),
        }
    }

    /// Builds the notifier. A `null` config counts as `{}`.
    fn build(&self, config: Value, _host: &HostContext) -> Result<Arc<dyn Notifier>, PluginError> {
        let config = if config.is_null() { json!({}) } else { config };
        let config: LogConfig = parse_config(PLUGIN_NAME, config)?;
        Ok(Arc::new(LogNotifier::new(config)))
    }
}

/// Adds the `log` notifier plugin to `r`.
pub fn register(r: &mut Registry) -> Result<(), PluginError> {
    r.add_notifier(Arc::new(LogNotifierFactory))
}

inventory::submit! { actuator_core::Registration { register } }

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_orders_severities() {
        let n = LogNotifier::new(LogConfig { level_floor: Severity::Warning });
        assert!(!n.logs(Severity::Info));
        assert!(n.logs(Severity::Warning));
        assert!(n.logs(Severity::Critical));
        assert!(LogNotifier::default().logs(Severity::Info));
    }

    #[test]
    fn severity_strings_are_the_json_forms() {
        for s in [Severity::Info, Severity::Warning, Severity::Critical] {
            assert_eq!(serde_json::to_value(s).unwrap(), severity_str(s));
        }
    }

    #[test]
    fn schema_lists_every_severity() {
        let schema = LogConfig::schema();
        let listed = schema["properties"]["level_floor"]["enum"].as_array().unwrap();
        for s in [Severity::Info, Severity::Warning, Severity::Critical] {
            assert!(listed.contains(&json!(severity_str(s))));
        }
    }
}
