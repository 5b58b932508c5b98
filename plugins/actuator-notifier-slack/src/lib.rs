//! A [`Notifier`] of the actuator that posts rollout events to a Slack incoming webhook: a
//! `text` line (what notifications and old clients show) and `blocks` with the rollout, the
//! slot, the versions, the analysis's decision, its reasons and a link to the status.
//!
//! Delivery, retries and the persisted queue are [`actuator_notifier_http::Outbox`]'s, the
//! same as the generic webhook's; `notify` only queues.
//!
//! The plugin registers itself as the notifier named `slack`; its config:
//!
//! ```toml
//! [[notifiers]]
//! plugin = "slack"
//! config = { webhook_url = "${env:SLACK_WEBHOOK_URL}", public_url = "https://actuator.example.com" }
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
pub const PLUGIN_NAME: &str = "slack";

/// Configuration of the `slack` notifier.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// The incoming webhook's URL (a secret: give it as `${env:NAME}`).
    pub webhook_url: String,
    /// The daemon's address as people reach it, for the status link. Optional.
    #[serde(default)]
    pub public_url: Option<String>,
    /// The queue's name under `<data_dir>/notifier-queues/` (default derived from the URL).
    #[serde(default)]
    pub queue: Option<String>,
    /// Timeout, attempts, backoff and queue size.
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

impl std::fmt::Debug for SlackConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackConfig")
            .field("public_url", &self.public_url)
            .field("queue", &self.queue)
            .field("delivery", &self.delivery)
            .finish_non_exhaustive()
    }
}

impl SlackConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), PluginError> {
        check_url(PLUGIN_NAME, "webhook_url", &self.webhook_url)?;
        if let Some(p) = &self.public_url {
            check_url(PLUGIN_NAME, "public_url", p)?;
        }
        self.delivery.validate(PLUGIN_NAME)
    }

    /// The JSON Schema of this configuration.
    pub fn schema() -> Value {
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "slack notifier",
            "type": "object",
            "additionalProperties": false,
            "required": ["webhook_url"],
            "properties": {
                "webhook_url": {"type": "string", "format": "uri", "writeOnly": true},
                "public_url": {"type": "string", "format": "uri"},
                "queue": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                "delivery": {"type": "object", "description": "timeout_ms (100..=60000), max_attempts (1..=50), initial_backoff_ms (10..=600000), max_backoff_ms (..=3600000), queue_size (1..=10000)"}
            }
        })
    }
}

/// Escapes the three characters Slack's mrkdwn reserves.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// At most `n` characters of `s` (Slack limits header and field lengths).
fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(n.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn icon(sev: Severity) -> &'static str {
    match sev {
        Severity::Info => ":information_source:",
        Severity::Warning => ":warning:",
        Severity::Critical => ":rotating_light:",
    }
}

/// A headline for the event's kind.
fn headline(event: &Event) -> &'static str {
    match EventClass::of_kind(&event.kind) {
        Some(EventClass::ConfigApplied) => "Config applied",
        Some(EventClass::RolloutStarted) => "Rollout started",
        Some(EventClass::PhasePromoted) => "Rollout promoted",
        Some(EventClass::Paused) if event.kind == "rollout.gate_held" => "Rollout held by a gate",
        Some(EventClass::Paused) => "Rollout paused",
        Some(EventClass::AwaitingApproval) => "Rollout awaits approval",
        Some(EventClass::Inconclusive) => "Rollout inconclusive",
        Some(EventClass::RolledBack) if event.kind == "rollout.rolled_back" => {
            "Rollout rolled back"
        }
        Some(EventClass::RolledBack) if event.kind == "rollout.rollback_timeout" => {
            "Rollback timed out"
        }
        Some(EventClass::RolledBack) => "Rollout rolling back",
        Some(EventClass::Completed) => "Rollout completed",
        Some(EventClass::Failed) => "Rollout failed",
        Some(EventClass::Aborted) => "Rollout aborted",
        None => "Actuator event",
    }
}

/// The Slack message of `event`: `{"text": ..., "blocks": [...]}`.
pub fn message(event: &Event, public_url: Option<&str>) -> Value {
    let ctx = RolloutContext::of(event);
    let head = headline(event);
    let subject = ctx.as_ref().and_then(|c| c.slot.clone()).unwrap_or_else(|| event.target.clone());
    let text = format!("{} {head}: {}", icon(event.severity), esc(&event.summary));
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": clip(&format!("{head}: {subject}"), 150)}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": clip(&esc(&event.summary), 3000)}}),
    ];
    if let Some(c) = &ctx {
        let id = c.id.clone().unwrap_or_default();
        let decision = match (&c.decision, &c.rule) {
            (Some(k), Some(r)) if !r.is_empty() => format!("{k} ({})", esc(r)),
            (Some(k), _) => k.clone(),
            (None, _) => "none yet".to_owned(),
        };
        blocks.push(json!({"type": "section", "fields": [
            {"type": "mrkdwn", "text": format!("*Rollout*\n`{}`", esc(&id))},
            {"type": "mrkdwn", "text": format!("*Slot*\n`{}`", esc(c.slot.as_deref().unwrap_or("?")))},
            {"type": "mrkdwn", "text": format!("*Versions*\n{}", c.versions())},
            {"type": "mrkdwn", "text": clip(&format!("*Decision*\n{decision}"), 2000)},
        ]}));
        if !c.reasons.is_empty() {
            let lines: Vec<String> =
                c.reasons.iter().take(10).map(|r| format!("• {}", esc(r))).collect();
            blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": clip(&format!("*Reasons*\n{}", lines.join("\n")), 3000)}}));
        }
        let mut context = format!(
            "{} · {} · by {}",
            event.kind,
            event.at.format("%Y-%m-%d %H:%M:%S UTC"),
            esc(&event.actor)
        );
        if let Some(link) = rollout_link(public_url, &id) {
            context = format!("<{link}|Rollout status> · {context}");
        }
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]}));
    } else {
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": format!("{} · `{}` · {} · by {}", event.kind, esc(&event.target), event.at.format("%Y-%m-%d %H:%M:%S UTC"), esc(&event.actor))}]}));
    }
    json!({"text": text, "blocks": blocks})
}

/// Posts events to a Slack incoming webhook through a persisted outbox.
#[derive(Debug)]
pub struct SlackNotifier {
    webhook_url: String,
    public_url: Option<String>,
    outbox: Outbox,
}

impl SlackNotifier {
    /// A notifier with `config`, its queue under `host.data_dir`. Must run inside a Tokio
    /// runtime.
    pub fn new(config: SlackConfig, host: &HostContext) -> Result<Self, PluginError> {
        config.validate()?;
        let dir = queue_dir(host, PLUGIN_NAME, config.queue.as_deref(), &config.webhook_url)?;
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or(PLUGIN_NAME).to_owned();
        let outbox = Outbox::open(&name, dir, config.delivery, None).map_err(|e| {
            PluginError::Failed { plugin: PLUGIN_NAME.into(), message: e.to_string() }
        })?;
        Ok(Self { webhook_url: config.webhook_url, public_url: config.public_url, outbox })
    }

    /// What the outbox did so far.
    pub fn stats(&self) -> OutboxStats {
        self.outbox.stats()
    }
}

#[async_trait]
impl Notifier for SlackNotifier {
    async fn notify(&self, event: &Event) -> Result<(), PluginError> {
        let body = message(event, self.public_url.as_deref()).to_string();
        self.outbox
            .enqueue(Delivery {
                url: self.webhook_url.clone(),
                body,
                label: format!("{} {}", event.kind, event.target),
            })
            .await
            .map_err(|e| PluginError::Failed { plugin: PLUGIN_NAME.into(), message: e.to_string() })
    }
}

/// Builds [`SlackNotifier`]s from configuration: the `slack` [`NotifierFactory`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SlackNotifierFactory;

impl NotifierFactory for SlackNotifierFactory {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            kind: PluginKind::Notifier,
            name: PLUGIN_NAME.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            api: ApiVersion::HOST,
            description: "Posts rollout events to a Slack incoming webhook".to_owned(),
            config_schema: SlackConfig::schema(),
        }
    }

    fn build(&self, config: Value, host: &HostContext) -> Result<Arc<dyn Notifier>, PluginError> {
        let config: SlackConfig = parse_config(PLUGIN_NAME, config)?;
        Ok(Arc::new(SlackNotifier::new(config, host)?))
    }

    /// Every rollout event (all named events but `config_applied`).
    fn default_events(&self) -> EventSelection {
        let rollout: Vec<EventClass> =
            EventClass::ALL.into_iter().filter(|c| *c != EventClass::ConfigApplied).collect();
        EventSelection::Only(ClassSet::of(&rollout))
    }
}

/// Adds the `slack` notifier plugin to `r`.
pub fn register(r: &mut Registry) -> Result<(), PluginError> {
    r.add_notifier(Arc::new(SlackNotifierFactory))
}

inventory::submit! { actuator_core::Registration { register } }

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mrkdwn_is_escaped_and_long_text_clipped() {
        assert_eq!(esc("a<b>&c"), "a&lt;b&gt;&amp;c");
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("abc", 4), "abc");
    }

    #[test]
    fn config_errors_name_the_field() {
        let c: SlackConfig =
            parse_config(PLUGIN_NAME, json!({"webhook_url": "hooks.slack.com/x"})).unwrap();
        match c.validate() {
            Err(PluginError::InvalidConfig { field, .. }) => assert_eq!(field, "webhook_url"),
            other => panic!("{other:?}"),
        }
        let c: SlackConfig = parse_config(
            PLUGIN_NAME,
            json!({"webhook_url": "https://hooks.slack.com/x", "delivery": {"timeout_ms": 1}}),
        )
        .unwrap();
        match c.validate() {
            Err(PluginError::InvalidConfig { field, .. }) => {
                assert_eq!(field, "delivery.timeout_ms");
            }
            other => panic!("{other:?}"),
        }
    }
}
