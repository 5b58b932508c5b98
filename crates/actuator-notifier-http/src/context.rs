//! The rollout fields of an event's details, as the engine writes them.

use actuator_core::Event;
use serde::Serialize;
use serde_json::Value;

/// What a rollout event says about its rollout: read from the event's `details`
/// (`rollout_id`, `slot`, `strategy`, `state`, `stable_version`, `candidate_version`, `step`,
/// `share_percent`, `decision`), each field `None` or empty when the event lacks it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RolloutContext {
    /// The rollout's id.
    pub id: Option<String>,
    /// The slot it changes.
    pub slot: Option<String>,
    /// Its strategy (`canary`, `blue_green`, ...).
    pub strategy: Option<String>,
    /// Its state after the event (`monitoring`, `rolling_back`, ...).
    pub state: Option<String>,
    /// The stable version it started from.
    pub stable_version: Option<u64>,
    /// The candidate version.
    pub candidate_version: Option<u64>,
    /// The index of its current step.
    pub step: Option<u64>,
    /// The candidate's share of traffic, in percent.
    pub share_percent: Option<f64>,
    /// The kind of the last decision of the analysis (`promote`, `rollback`, ...).
    pub decision: Option<String>,
    /// The rule that made it.
    pub rule: Option<String>,
    /// Its reasons, with their numbers.
    pub reasons: Vec<String>,
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

impl RolloutContext {
    /// The context of `event`; `None` when the event is not about a rollout (its details
    /// carry no `rollout_id`).
    pub fn of(event: &Event) -> Option<Self> {
        let d = &event.details;
        let id = text(d, "rollout_id")?;
        let decision = d.get("decision").filter(|v| v.is_object());
        Some(Self {
            id: Some(id),
            slot: text(d, "slot"),
            strategy: text(d, "strategy"),
            state: text(d, "state"),
            stable_version: d.get("stable_version").and_then(Value::as_u64),
            candidate_version: d.get("candidate_version").and_then(Value::as_u64),
            step: d.get("step").and_then(Value::as_u64),
            share_percent: d.get("share_percent").and_then(Value::as_f64),
            decision: decision.and_then(|v| text(v, "kind")),
            rule: decision.and_then(|v| text(v, "rule")),
            reasons: decision
                .and_then(|v| v.get("reasons"))
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default(),
        })
    }

    /// `v<stable> → v<candidate>`, or what is known of it.
    pub fn versions(&self) -> String {
        let v = |n: Option<u64>| n.map_or_else(|| "?".to_owned(), |n| format!("v{n}"));
        format!("{} → {}", v(self.stable_version), v(self.candidate_version))
    }
}

/// The link to a rollout's status, `<public_url>/v1/rollouts/<id>`, when the daemon's public
/// URL is configured.
pub fn rollout_link(public_url: Option<&str>, id: &str) -> Option<String> {
    public_url.map(|base| format!("{}/v1/rollouts/{id}", base.trim_end_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actuator_core::Severity;
    use serde_json::json;

    #[test]
    fn reads_the_engine_details_and_builds_the_link() {
        let e = Event {
            kind: "rollout.rollback".into(),
            severity: Severity::Critical,
            at: chrono::Utc::now(),
            actor: "engine".into(),
            target: "r1".into(),
            summary: "s".into(),
            details: json!({"rollout_id": "r1", "slot": "chat.default", "strategy": "canary",
                "state": "rolling_back", "stable_version": 1, "candidate_version": 2, "step": 0,
                "share_percent": 0.0,
                "decision": {"kind": "rollback", "rule": "errors", "reasons": ["errors +4 pp"]}}),
        };
        let c = RolloutContext::of(&e).unwrap();
        assert_eq!(c.slot.as_deref(), Some("chat.default"));
        assert_eq!(c.versions(), "v1 → v2");
        assert_eq!(c.reasons, vec!["errors +4 pp".to_string()]);
        assert_eq!(c.decision.as_deref(), Some("rollback"));
        let plain = Event { details: json!({"version": 3}), ..e };
        assert_eq!(RolloutContext::of(&plain), None);
        assert_eq!(
            rollout_link(Some("https://act.example.com/"), "r1").as_deref(),
            Some("https://act.example.com/v1/rollouts/r1")
        );
        assert_eq!(rollout_link(None, "r1"), None);
    }
}
