//! A [`Notifier`] of the actuator that opens and closes PagerDuty incidents through the
//! Events API v2.
//!
//! | event | PagerDuty |
//! | --- | --- |
//! | `rollout.rollback`, automatic | `trigger` |
//! | `rollout.rollback`, manual | `trigger` only with `trigger_on_manual_rollback = true` |
//! | `rollout.rollback_timeout` | `trigger` |
//! | `rollout.fail` | `trigger` |
//! | `rollout.rolled_back`, stable still unhealthy (`validated: false`) | `trigger` (updates the incident) |
//! | `rollout.rolled_back`, stable validated healthy (`validated: true`) | `resolve` |
//! | `rollout.complete` | `resolve` |
//! | anything else | nothing |
//!
//! Every event of one rollout has the `dedup_key` `actuator/<rollout id>`, so the resolve
//! closes the incident its trigger opened. Severity: the event's `critical`, `warning` or
//! `info`. A trigger's `payload` has `summary` (at most 1024 characters), `source`,
//! `severity`, `timestamp`, `component` (the slot), `group` (`actuator`), `class` (the
//! event kind) and `custom_details` (rollout, slot, versions, decision, reasons, details).
//!
//! Delivery, retries and the persisted queue are [`actuator_notifier_http::Outbox`]'s.
//!
//! ```toml
//! [[notifiers]]
//! plugin = "pagerduty"
//! config = { routing_key = "${env:PAGERDUTY_ROUTING_KEY}" }
//! ```

use std::sync::Arc;

use actuator_core::plugin::{
    ApiVersion, Event, HostContext, Notifier, NotifierFactory, PluginError, PluginInfo, PluginKind,
    Registry, Severity, parse_config,
};
use actuator_core::{ClassSet, EventClass, EventSelection};
use actuator_notifier_http::{
    Delivery, DeliveryConfig, Outbox, OutboxStats, RolloutContext, check_url, queue_dir,
    rollout_link,
};
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};

/// The plugin's name in configuration files and in the registry.
pub const PLUGIN_NAME: &str = "pagerduty";

/// The public Events API v2 endpoint.
pub const DEFAULT_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// Configuration of the `pagerduty` notifier.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDutyConfig {
    /// The integration's routing key (1 to 128 characters; a secret: give it as
    /// `${env:NAME}`).
    pub routing_key: String,
    /// The Events API endpoint (default [`DEFAULT_EVENTS_URL`]).
    #[serde(default = "default_events_url")]
    pub events_url: String,
    /// The incident's `source` (1 to 255 characters; default `actuator`).
    #[serde(default = "default_source")]
    pub source: String,
    /// Trigger on manual rollbacks too (default `false`: a person who rolls back knows).
    #[serde(default)]
    pub trigger_on_manual_rollback: bool,
    /// The daemon's address as responders reach it, for the incident's link. Optional.
    #[serde(default)]
    pub public_url: Option<String>,
    /// The queue's name under `<data_dir>/notifier-queues/` (default derived from the
    /// endpoint and routing key).
    #[serde(default)]
    pub queue: Option<String>,
    /// Timeout, attempts, backoff and queue size.
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

fn default_events_url() -> String {
    DEFAULT_EVENTS_URL.to_owned()
}

fn default_source() -> String {
    "actuator".to_owned()
}

impl std::fmt::Debug for PagerDutyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PagerDutyConfig")
            .field("events_url", &self.events_url)
            .field("source", &self.source)
            .field("trigger_on_manual_rollback", &self.trigger_on_manual_rollback)
            .field("public_url", &self.public_url)
            .field("delivery", &self.delivery)
            .finish_non_exhaustive()
    }
}

impl PagerDutyConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), PluginError> {
        let bad = |field: &str, message: String| PluginError::InvalidConfig {
            plugin: PLUGIN_NAME.into(),
            field: field.into(),
            message,
        };
        if !(1..=128).contains(&self.routing_key.len()) {
            return Err(bad(
                "routing_key",
                format!("must be 1 to 128 characters, got {}", self.routing_key.len()),
            ));
        }
        if !(1..=255).contains(&self.source.len()) {
            return Err(bad(
                "source",
                format!("must be 1 to 255 characters, got {}", self.source.len()),
            ));
        }
        check_url(PLUGIN_NAME, "events_url", &self.events_url)?;
        if let Some(p) = &self.public_url {
            check_url(PLUGIN_NAME, "public_url", p)?;
        }
        self.delivery.validate(PLUGIN_NAME)
    }

    /// The JSON Schema of this configuration.
    pub fn schema() -> Value {
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "pagerduty notifier",
            "type": "object",
            "additionalProperties": false,
            "required": ["routing_key"],
            "properties": {
                "routing_key": {"type": "string", "minLength": 1, "maxLength": 128, "writeOnly": true},
                "events_url": {"type": "string", "format": "uri", "default": DEFAULT_EVENTS_URL},
                "source": {"type": "string", "minLength": 1, "maxLength": 255, "default": "actuator"},
                "trigger_on_manual_rollback": {"type": "boolean", "default": false},
                "public_url": {"type": "string", "format": "uri"},
                "queue": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                "delivery": {"type": "object", "description": "timeout_ms (100..=60000), max_attempts (1..=50), initial_backoff_ms (10..=600000), max_backoff_ms (..=3600000), queue_size (1..=10000)"}
            }
        })
    }
}

/// What PagerDuty is told about an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Open (or update) the rollout's incident.
    Trigger,
    /// Close it.
    Resolve,
}

/// The action for `event`, or `None` when PagerDuty is not told (see the crate's table).
pub fn action_for(event: &Event, trigger_on_manual_rollback: bool) -> Option<Action> {
    match event.kind.as_str() {
        "rollout.rollback" => {
            let automatic =
                event.details.get("automatic").and_then(Value::as_bool).unwrap_or(false);
            (automatic || trigger_on_manual_rollback).then_some(Action::Trigger)
        }
        "rollout.rollback_timeout" | "rollout.fail" => Some(Action::Trigger),
        "rollout.rolled_back" => match event.details.get("validated").and_then(Value::as_bool) {
            Some(true) => Some(Action::Resolve),
            Some(false) => Some(Action::Trigger),
            None => None,
        },
        "rollout.complete" => Some(Action::Resolve),
        _ => None,
    }
}

/// The `dedup_key` of a rollout's incident.
pub fn dedup_key(rollout_id: &str) -> String {
    format!("actuator/{rollout_id}")
}

fn pd_severity(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(n.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The Events API v2 body for `event`, or `None` when PagerDuty is not told.
pub fn event_body(event: &Event, config: &PagerDutyConfig) -> Option<Value> {
    let action = action_for(event, config.trigger_on_manual_rollback)?;
    let ctx = RolloutContext::of(event);
    let id = ctx.as_ref().and_then(|c| c.id.clone()).unwrap_or_else(|| event.target.clone());
    let key = dedup_key(&id);
    if action == Action::Resolve {
        return Some(json!({
            "routing_key": config.routing_key,
            "event_action": "resolve",
            "dedup_key": key,
        }));
    }
    let c = ctx.unwrap_or_default();
    let mut body = json!({
        "routing_key": config.routing_key,
        "event_action": "trigger",
        "dedup_key": key,
        "payload": {
            "summary": clip(&event.summary, 1024),
            "source": config.source,
            "severity": pd_severity(event.severity),
            "timestamp": event.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "component": c.slot.clone().unwrap_or_else(|| event.target.clone()),
            "group": "actuator",
            "class": event.kind,
            "custom_details": {
                "rollout_id": id,
                "slot": c.slot,
                "versions": c.versions(),
                "stable_version": c.stable_version,
                "candidate_version": c.candidate_version,
                "decision": c.decision,
                "rule": c.rule,
                "reasons": c.reasons,
                "actor": event.actor,
                "details": event.details,
            }
        },
        "client": "actuator",
    });
    if let Some(link) = rollout_link(config.public_url.as_deref(), &id) {
        body["links"] = json!([{"href": link, "text": "Rollout status"}]);
        body["client_url"] = json!(link);
    }
    Some(body)
}

/// Triggers and resolves PagerDuty incidents through a persisted outbox.
#[derive(Debug)]
pub struct PagerDutyNotifier {
    config: PagerDutyConfig,
    outbox: Outbox,
}

impl PagerDutyNotifier {
    /// A notifier with `config`, its queue under `host.data_dir`. Must run inside a Tokio
    /// runtime.
    pub fn new(config: PagerDutyConfig, host: &HostContext) -> Result<Self, PluginError> {
        config.validate()?;
        let identity = format!("{} {}", config.events_url, config.routing_key);
        let dir = queue_dir(host, PLUGIN_NAME, config.queue.as_deref(), &identity)?;
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or(PLUGIN_NAME).to_owned();
        let outbox = Outbox::open(&name, dir, config.delivery, None).map_err(|e| {
            PluginError::Failed { plugin: PLUGIN_NAME.into(), message: e.to_string() }
        })?;
        Ok(Self { config, outbox })
    }

    /// What the outbox did so far.
    pub fn stats(&self) -> OutboxStats {
        self.outbox.stats()
    }
}

#[async_trait]
impl Notifier for PagerDutyNotifier {
    async fn notify(&self, event: &Event) -> Result<(), PluginError> {
        let Some(body) = event_body(event, &self.config) else { return Ok(()) };
        self.outbox
            .enqueue(Delivery {
                url: self.config.events_url.clone(),
                body: body.to_string(),
                label: format!("{} {}", event.kind, event.target),
            })
            .await
            .map_err(|e| PluginError::Failed { plugin: PLUGIN_NAME.into(), message: e.to_string() })
    }
}

/// Builds [`PagerDutyNotifier`]s from configuration: the `pagerduty` [`NotifierFactory`].
#[derive(Clone, Copy, Debug, Default)]
pub struct PagerDutyNotifierFactory;

impl NotifierFactory for PagerDutyNotifierFactory {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            kind: PluginKind::Notifier,
            name: PLUGIN_NAME.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            api: ApiVersion::HOST,
            description: "Triggers PagerDuty incidents on rollbacks and failures and resolves them"
                .to_owned(),
            config_schema: PagerDutyConfig::schema(),
        }
    }

    fn build(&self, config: Value, host: &HostContext) -> Result<Arc<dyn Notifier>, PluginError> {
        let config: PagerDutyConfig = parse_config(PLUGIN_NAME, config)?;
        Ok(Arc::new(PagerDutyNotifier::new(config, host)?))
    }

    /// `rolled_back` and `failed`, and `completed` for the resolutions.
    fn default_events(&self) -> EventSelection {
        EventSelection::Only(ClassSet::of(&[
            EventClass::RolledBack,
            EventClass::Failed,
            EventClass::Completed,
        ]))
    }
}

/// Adds the `pagerduty` notifier plugin to `r`.
pub fn register(r: &mut Registry) -> Result<(), PluginError> {
    r.add_notifier(Arc::new(PagerDutyNotifierFactory))
}

inventory::submit! { actuator_core::Registration { register } }

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &str, details: Value) -> Event {
        Event {
            kind: kind.into(),
            severity: Severity::Critical,
            at: chrono::Utc::now(),
            actor: "engine".into(),
            target: "r1".into(),
            summary: "x".repeat(2000),
            details,
        }
    }

    #[test]
    fn actions_follow_the_table() {
        let t = |k: &str, d: Value| action_for(&ev(k, d), false);
        assert_eq!(t("rollout.rollback", json!({"automatic": true})), Some(Action::Trigger));
        assert_eq!(t("rollout.rollback", json!({"automatic": false})), None);
        assert_eq!(
            action_for(&ev("rollout.rollback", json!({"automatic": false})), true),
            Some(Action::Trigger)
        );
        assert_eq!(t("rollout.fail", Value::Null), Some(Action::Trigger));
        assert_eq!(t("rollout.rollback_timeout", Value::Null), Some(Action::Trigger));
        assert_eq!(t("rollout.rolled_back", json!({"validated": true})), Some(Action::Resolve));
        assert_eq!(t("rollout.rolled_back", json!({"validated": false})), Some(Action::Trigger));
        assert_eq!(t("rollout.rolled_back", json!({"validated": null})), None);
        assert_eq!(t("rollout.complete", Value::Null), Some(Action::Resolve));
        assert_eq!(t("rollout.promote", Value::Null), None);
    }

    #[test]
    fn config_errors_name_the_field() {
        let field = |v: Value| {
            let c: PagerDutyConfig = parse_config(PLUGIN_NAME, v).unwrap();
            match c.validate() {
                Err(PluginError::InvalidConfig { field, .. }) => field,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(field(json!({"routing_key": ""})), "routing_key");
        assert_eq!(field(json!({"routing_key": "k", "events_url": "nope"})), "events_url");
        assert_eq!(field(json!({"routing_key": "k", "source": ""})), "source");
        assert_eq!(
            field(json!({"routing_key": "k", "delivery": {"initial_backoff_ms": 1}})),
            "delivery.initial_backoff_ms"
        );
        let c: PagerDutyConfig = parse_config(PLUGIN_NAME, json!({"routing_key": "k"})).unwrap();
        assert_eq!(c.events_url, DEFAULT_EVENTS_URL);
        let body = event_body(&ev("rollout.fail", json!({"rollout_id": "r1"})), &c).unwrap();
        assert_eq!(body["payload"]["summary"].as_str().unwrap().chars().count(), 1024);
    }
}
