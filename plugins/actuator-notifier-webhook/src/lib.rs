//! A [`Notifier`] of the actuator that POSTs every event it is given as one signed JSON
//! document to a webhook, for receivers an operator writes themselves.
//!
//! The body is the [`Payload`] (schema version [`SCHEMA_VERSION`]); each request carries
//! `X-Actuator-Timestamp` (Unix seconds), `X-Actuator-Delivery` (the delivery's id, the same
//! on every attempt) and `X-Actuator-Signature: sha256=<hex>`, the HMAC-SHA256 under the
//! configured `secret` of the timestamp, one `.`, and the body as sent.
//! [`actuator_notifier_http::verify_signature`] is the receiver's check.
//!
//! `notify` only queues: delivery, retries (exponential backoff with full jitter) and the
//! bounded queue persisted under the daemon's data directory are
//! [`actuator_notifier_http::Outbox`]'s.
//!
//! The plugin registers itself as the notifier named `webhook`; its config:
//!
//! ```toml
//! [[notifiers]]
//! plugin = "webhook"
//! events = ["rolled_back", "failed", "completed"]   # optional; default: every named event
//! config = { url = "https://ops.example.com/actuator", secret = "${env:ACTUATOR_WEBHOOK_SECRET}",
//!            public_url = "https://actuator.example.com",
//!            delivery = { timeout_ms = 5000, max_attempts = 8, queue_size = 1000 } }
//! ```

use std::sync::Arc;

use actuator_core::plugin::{
    ApiVersion, Event, HostContext, Notifier, NotifierFactory, PluginError, PluginInfo, PluginKind,
    Registry, parse_config,
};
use actuator_core::{EventClass, EventSelection};
use actuator_notifier_http::{
    Delivery, DeliveryConfig, Outbox, OutboxStats, RolloutContext, Signer, check_url, queue_dir,
    rollout_link,
};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The plugin's name in configuration files and in the registry.
pub const PLUGIN_NAME: &str = "webhook";

/// The version of the [`Payload`] schema, its `schema_version` field.
pub const SCHEMA_VERSION: u32 = 1;

/// The shortest secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;

/// Configuration of the `webhook` notifier.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to POST (`http` or `https`).
    pub url: String,
    /// The HMAC-SHA256 key of `X-Actuator-Signature`: 16 to 4096 bytes. Give it as
    /// `${env:NAME}` to keep it out of the file.
    pub secret: String,
    /// The daemon's address as the receiver reaches it (`https://actuator.example.com`); the
    /// payload's `rollout.url` is built from it. Optional.
    #[serde(default)]
    pub public_url: Option<String>,
    /// The queue's name under `<data_dir>/notifier-queues/` (default derived from `url`).
    #[serde(default)]
    pub queue: Option<String>,
    /// Timeout, attempts, backoff and queue size.
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("public_url", &self.public_url)
            .field("queue", &self.queue)
            .field("delivery", &self.delivery)
            .finish_non_exhaustive()
    }
}

impl WebhookConfig {
    /// Checks every field: the URLs, the secret's length, the delivery ranges.
    pub fn validate(&self) -> Result<(), PluginError> {
        check_url(PLUGIN_NAME, "url", &self.url)?;
        if let Some(p) = &self.public_url {
            check_url(PLUGIN_NAME, "public_url", p)?;
        }
        if !(MIN_SECRET_BYTES..=4096).contains(&self.secret.len()) {
            return Err(PluginError::InvalidConfig {
                plugin: PLUGIN_NAME.into(),
                field: "secret".into(),
                message: format!(
                    "must be 16 to 4096 bytes long, got {} (use a random string, e.g. `openssl rand -hex 32`)",
                    self.secret.len()
                ),
            });
        }
        self.delivery.validate(PLUGIN_NAME)
    }

    /// The JSON Schema of this configuration.
    pub fn schema() -> Value {
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "webhook notifier",
            "type": "object",
            "additionalProperties": false,
            "required": ["url", "secret"],
            "properties": {
                "url": {"type": "string", "format": "uri", "description": "Where to POST each event."},
                "secret": {"type": "string", "minLength": 16, "maxLength": 4096, "writeOnly": true,
                    "description": "HMAC-SHA256 key of X-Actuator-Signature."},
                "public_url": {"type": "string", "format": "uri",
                    "description": "The daemon's address as receivers reach it, for rollout links."},
                "queue": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                "delivery": delivery_schema()
            }
        })
    }
}

/// The JSON Schema of [`DeliveryConfig`], shared by the HTTP notifiers.
pub fn delivery_schema() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "timeout_ms": {"type": "integer", "minimum": 100, "maximum": 60000, "default": 5000},
            "max_attempts": {"type": "integer", "minimum": 1, "maximum": 50, "default": 8},
            "initial_backoff_ms": {"type": "integer", "minimum": 10, "maximum": 600000, "default": 1000},
            "max_backoff_ms": {"type": "integer", "minimum": 10, "maximum": 3600000, "default": 300000},
            "queue_size": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 1000}
        }
    })
}

/// The rollout an event is about, in the payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PayloadRollout {
    /// The rollout's id.
    pub id: String,
    /// The slot it changes.
    pub slot: Option<String>,
    /// Its strategy.
    pub strategy: Option<String>,
    /// Its state after the event.
    pub state: Option<String>,
    /// The stable version.
    pub stable_version: Option<u64>,
    /// The candidate version.
    pub candidate_version: Option<u64>,
    /// The current step's index.
    pub step: Option<u64>,
    /// The candidate's share of traffic in percent.
    pub share_percent: Option<f64>,
    /// `<public_url>/v1/rollouts/<id>`, when `public_url` is configured.
    pub url: Option<String>,
}

/// The analysis's last decision, in the payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PayloadDecision {
    /// `continue`, `promote`, `rollback`, `inconclusive` or `halt`.
    pub kind: String,
    /// The rule that decided.
    pub rule: Option<String>,
}

/// The JSON document POSTed for each event (schema version 1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    /// [`SCHEMA_VERSION`]; a receiver refuses versions it does not know.
    pub schema_version: u32,
    /// The event kind, the audit action (`rollout.rollback`, `config.apply`, ...).
    pub kind: String,
    /// The event's name in `events = [...]` (`rolled_back`), `null` for kinds no name covers.
    pub event: Option<String>,
    /// `info`, `warning` or `critical`.
    pub severity: String,
    /// When it happened (RFC 3339, UTC).
    pub at: String,
    /// Who did it (`engine` for the analysis).
    pub actor: String,
    /// What it concerns: the rollout id, or the slot.
    pub target: String,
    /// One line for a person.
    pub summary: String,
    /// The rollout, for rollout events.
    pub rollout: Option<PayloadRollout>,
    /// The analysis's last decision, when there was one.
    pub decision: Option<PayloadDecision>,
    /// The decision's reasons, with their numbers (empty when none).
    pub reasons: Vec<String>,
    /// The event's details as the engine wrote them.
    pub details: Value,
}

impl Payload {
    /// The payload of `event`; `public_url` builds the rollout's link.
    pub fn of(event: &Event, public_url: Option<&str>) -> Self {
        let ctx = RolloutContext::of(event);
        let severity = serde_json::to_value(event.severity)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let rollout = ctx.as_ref().and_then(|c| {
            let id = c.id.clone()?;
            Some(PayloadRollout {
                url: rollout_link(public_url, &id),
                id,
                slot: c.slot.clone(),
                strategy: c.strategy.clone(),
                state: c.state.clone(),
                stable_version: c.stable_version,
                candidate_version: c.candidate_version,
                step: c.step,
                share_percent: c.share_percent,
            })
        });
        let decision = ctx.as_ref().and_then(|c| {
            c.decision.clone().map(|kind| PayloadDecision { kind, rule: c.rule.clone() })
        });
        Self {
            schema_version: SCHEMA_VERSION,
            kind: event.kind.clone(),
            event: EventClass::of_kind(&event.kind).map(|c| c.name().to_owned()),
            severity,
            at: event.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            actor: event.actor.clone(),
            target: event.target.clone(),
            summary: event.summary.clone(),
            rollout,
            decision,
            reasons: ctx.map(|c| c.reasons).unwrap_or_default(),
            details: event.details.clone(),
        }
    }
}

/// POSTs events as signed JSON through a persisted outbox.
#[derive(Debug)]
pub struct WebhookNotifier {
    url: String,
    public_url: Option<String>,
    outbox: Outbox,
}

impl WebhookNotifier {
    /// A notifier with `config`, its queue under `host.data_dir`. Must run inside a Tokio
    /// runtime (the delivery task is spawned on it).
    pub fn new(config: WebhookConfig, host: &HostContext) -> Result<Self, PluginError> {
        config.validate()?;
        let dir = queue_dir(host, PLUGIN_NAME, config.queue.as_deref(), &config.url)?;
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or(PLUGIN_NAME).to_owned();
        let outbox =
            Outbox::open(&name, dir, config.delivery, Some(Signer::new(&config.secret))).map_err(
                |e| PluginError::Failed { plugin: PLUGIN_NAME.into(), message: e.to_string() },
            )?;
        Ok(Self { url: config.url, public_url: config.public_url, outbox })
    }

    /// What the outbox did so far.
    pub fn stats(&self) -> OutboxStats {
        self.outbox.stats()
    }
}

#[async_trait]
impl Notifier for WebhookNotifier {
    async fn notify(&self, event: &Event) -> Result<(), PluginError> {
        let body = serde_json::to_string(&Payload::of(event, self.public_url.as_deref())).map_err(
            |e| PluginError::Failed { plugin: PLUGIN_NAME.into(), message: e.to_string() },
        )?;
        self.outbox
            .enqueue(Delivery {
                url: self.url.clone(),
                body,
                label: format!("{} {}", event.kind, event.target),
            })
            .await
            .map_err(|e| PluginError::Failed { plugin: PLUGIN_NAME.into(), message: e.to_string() })
    }
}

/// Builds [`WebhookNotifier`]s from configuration: the `webhook` [`NotifierFactory`].
#[derive(Clone, Copy, Debug, Default)]
pub struct WebhookNotifierFactory;

impl NotifierFactory for WebhookNotifierFactory {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            kind: PluginKind::Notifier,
            name: PLUGIN_NAME.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            api: ApiVersion::HOST,
            description: "POSTs each event as signed JSON, with retries and a persisted queue"
                .to_owned(),
            config_schema: WebhookConfig::schema(),
        }
    }

    fn build(&self, config: Value, host: &HostContext) -> Result<Arc<dyn Notifier>, PluginError> {
        let config: WebhookConfig = parse_config(PLUGIN_NAME, config)?;
        Ok(Arc::new(WebhookNotifier::new(config, host)?))
    }

    /// Every named event (`rollout_started` to `aborted`, and `config_applied`).
    fn default_events(&self) -> EventSelection {
        EventSelection::Only(actuator_core::ClassSet::of(&EventClass::ALL))
    }
}

/// Adds the `webhook` notifier plugin to `r`.
pub fn register(r: &mut Registry) -> Result<(), PluginError> {
    r.add_notifier(Arc::new(WebhookNotifierFactory))
}

inventory::submit! { actuator_core::Registration { register } }

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(v: Value) -> Result<WebhookConfig, PluginError> {
        let c: WebhookConfig = parse_config(PLUGIN_NAME, v)?;
        c.validate().map(|()| c)
    }

    #[test]
    fn config_errors_name_the_field() {
        let ok = json!({"url": "http://127.0.0.1:9/x", "secret": "0123456789abcdef"});
        cfg(ok.clone()).unwrap();
        let field = |v: Value| match cfg(v) {
            Err(PluginError::InvalidConfig { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(json!({"url": "x", "secret": "0123456789abcdef"})), "url");
        assert_eq!(field(json!({"url": "http://h/", "secret": "short"})), "secret");
        let mut v = ok.clone();
        v["delivery"] = json!({"max_attempts": 0});
        assert_eq!(field(v), "delivery.max_attempts");
        let mut v = ok.clone();
        v["delivery"] = json!({"queue_size": 20000});
        assert_eq!(field(v), "delivery.queue_size");
        let mut v = ok;
        v["colour"] = json!(1);
        assert!(cfg(v).unwrap_err().to_string().contains("unknown field `colour`"));
    }

    #[test]
    fn the_config_debug_hides_the_secret_and_the_url() {
        let c =
            cfg(json!({"url": "http://127.0.0.1:9/tok", "secret": "0123456789abcdef"})).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("0123456789abcdef") && !shown.contains("tok"), "{shown}");
    }
}
