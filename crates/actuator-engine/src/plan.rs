//! Strategies as plans: each strategy becomes a list of steps with a share of traffic, a
//! kind, and promotion gates. The plan is persisted with the rollout, so a restarted
//! engine continues the same plan.

use actuator_core::{DeploymentRequest, DeploymentStrategy};
use actuator_health::{AnalysisMode, PrimaryMetric};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::EngineError;

/// What a step does with traffic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// A share of traffic gets the candidate; the rest is the control.
    Canary,
    /// Blue-green preview: only targeted keys or attributes get the candidate.
    Preview,
    /// Blue-green switch: all traffic on green; blue stays ready for a one-step switch back.
    Switch,
    /// Immediate: all traffic on the candidate while guard rails are watched.
    Watch,
    /// Rolling: a share step with guard rails and no held-back control.
    Rolling,
    /// Shadow: the candidate runs on mirrored requests only.
    Shadow,
    /// A/B: a fixed split between the arms.
    AbTest,
}

/// One step of a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// What the step does.
    pub kind: StepKind,
    /// Share of traffic in the rollout, basis points of 10,000.
    pub share_bp: u16,
    /// Requests on the candidate before promotion.
    pub min_samples: u64,
    /// Seconds before promotion.
    pub min_secs: u64,
    /// Seconds after which the step's analysis is inconclusive.
    pub max_secs: Option<u64>,
    /// Requests on the candidate after which the step is inconclusive.
    pub max_samples: Option<u64>,
}

/// What to do when a step's budget is spent without a decision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InconclusivePolicy {
    /// Pause and alert; a person decides.
    #[default]
    Hold,
    /// Promote, provided no alarm fired.
    PromoteIfNoAlarm,
    /// Roll back.
    Rollback,
}

/// One extra arm of an A/B test.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbArmSpec {
    /// The arm's name (its OFREP variant).
    pub name: String,
    /// An existing version of the slot.
    pub version: u64,
}

/// A preview target of blue-green.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewAttribute {
    /// Context attribute.
    pub attribute: String,
    /// Value that selects preview traffic.
    pub equals: Value,
}

/// Strategy settings (the request's `settings` object); each strategy reads its own keys and
/// unknown keys are refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StrategySettings {
    /// All strategies: what an inconclusive step does.
    pub inconclusive: InconclusivePolicy,
    /// All strategies: the application's request timeout (ms); a timeout reported without a
    /// latency counts at this latency (60000).
    pub request_timeout_ms: f64,
    /// All strategies: which context attribute keeps a caller on one side (targeting key,
    /// user, session, conversation, or `{"attribute": "name"}`). Conversations should stay on
    /// one config: a prompt cache and a multi-turn exchange break when it changes mid-way.
    pub stickiness: actuator_canary::StickinessKey,
    /// All strategies: pinned keys and attribute matches served a fixed variant
    /// (`{"targeting_keys": {"qa-user": "canary"}, "attributes": [{"attribute": "tenant",
    /// "equals": "internal", "variant": "canary"}]}`).
    pub overrides: actuator_canary::Overrides,
    /// All strategies: the seed's automatic rollback triggers beside the analysis.
    pub triggers: actuator_rollback::RollbackTriggers,
    /// Immediate: seconds of guard-rail watching after the switch.
    pub watch_secs: u64,
    /// Immediate, rolling, shadow: requests needed per step.
    pub min_samples: u64,
    /// Blue-green: targeting keys that see green during preview.
    pub preview_keys: Vec<String>,
    /// Blue-green: a context attribute that selects preview traffic.
    pub preview_attribute: Option<PreviewAttribute>,
    /// Blue-green: seconds of preview analysis.
    pub preview_secs: u64,
    /// Blue-green: seconds after the switch during which blue stays ready.
    pub post_promotion_secs: u64,
    /// Rolling: percent added per step.
    pub step_percent: f64,
    /// Rolling: seconds per step.
    pub step_secs: u64,
    /// Shadow: seconds of comparison.
    pub shadow_secs: u64,
    /// Shadow: after a pass, start a canary rollout of the candidate.
    pub then_canary: bool,
    /// A/B: more arms beside control (the stable version) and `b` (the candidate).
    pub arms: Vec<AbArmSpec>,
    /// A/B: the metric that picks a winner.
    pub primary: PrimaryMetric,
    /// A/B: percent of traffic in the experiment.
    pub traffic_percent: f64,
    /// A/B: requests per arm after which the test ends inconclusive.
    pub max_samples: Option<u64>,
    /// A/B: seconds after which the test ends inconclusive.
    pub max_secs: Option<u64>,
}

impl Default for StrategySettings {
    fn default() -> Self {
        Self {
            inconclusive: InconclusivePolicy::Hold,
            request_timeout_ms: 60_000.0,
            stickiness: actuator_canary::StickinessKey::default(),
            overrides: actuator_canary::Overrides::default(),
            triggers: actuator_rollback::RollbackTriggers::default(),
            watch_secs: 300,
            min_samples: 200,
            preview_keys: Vec::new(),
            preview_attribute: None,
            preview_secs: 60,
            post_promotion_secs: 300,
            step_percent: 10.0,
            step_secs: 60,
            shadow_secs: 300,
            then_canary: false,
            arms: Vec::new(),
            primary: PrimaryMetric::Quality,
            traffic_percent: 100.0,
            max_samples: None,
            max_secs: None,
        }
    }
}

fn bp(percent: f64) -> Result<u16, EngineError> {
    if !(percent.is_finite() && (0.0..=100.0).contains(&percent)) {
        return Err(EngineError::Invalid(format!("a share must be within 0–100 %, got {percent}")));
    }
    Ok((percent * 100.0).round() as u16)
}

/// Parses the strategy settings of a request.
pub(crate) fn settings(req: &DeploymentRequest) -> Result<StrategySettings, EngineError> {
    if req.settings.is_null() {
        return Ok(StrategySettings::default());
    }
    let s: StrategySettings = serde_json::from_value(req.settings.clone())
        .map_err(|e| EngineError::Invalid(format!("settings: {e}")))?;
    s.triggers.validate().map_err(EngineError::Invalid)?;
    if !(s.request_timeout_ms.is_finite() && s.request_timeout_ms > 0.0) {
        return Err(EngineError::Invalid(format!(
            "settings.request_timeout_ms must be a positive number, got {}",
            s.request_timeout_ms
        )));
    }
    Ok(s)
}

/// The analysis mode a strategy uses.
pub(crate) fn analysis_mode(strategy: DeploymentStrategy, s: &StrategySettings) -> AnalysisMode {
    match strategy {
        DeploymentStrategy::Canary => AnalysisMode::Canary,
        DeploymentStrategy::Shadow => AnalysisMode::Shadow,
        DeploymentStrategy::AbTest => AnalysisMode::AbTest { primary: s.primary },
        DeploymentStrategy::Immediate
        | DeploymentStrategy::BlueGreen
        | DeploymentStrategy::Rolling => AnalysisMode::NoControl,
    }
}

/// The steps of a request's strategy.
pub(crate) fn steps(
    req: &DeploymentRequest,
    s: &StrategySettings,
) -> Result<Vec<Step>, EngineError> {
    let step = |kind, share_bp, min_samples, min_secs, max_secs| Step {
        kind,
        share_bp,
        min_samples,
        min_secs,
        max_secs,
        max_samples: None,
    };
    Ok(match req.strategy {
        DeploymentStrategy::Canary => req
            .canary
            .phases
            .iter()
            .map(|p| {
                Ok(step(
                    StepKind::Canary,
                    bp(p.traffic_percent)?,
                    p.min_samples,
                    p.min_duration_secs,
                    Some(p.max_duration_secs),
                ))
            })
            .collect::<Result<_, EngineError>>()?,
        DeploymentStrategy::Immediate => {
            vec![step(StepKind::Watch, 10_000, s.min_samples, s.watch_secs, None)]
        }
        DeploymentStrategy::BlueGreen => {
            if s.preview_keys.is_empty() && s.preview_attribute.is_none() {
                return Err(EngineError::Invalid(
                    "blue_green needs settings.preview_keys or settings.preview_attribute to route preview traffic".into(),
                ));
            }
            vec![
                step(StepKind::Preview, 0, s.min_samples, s.preview_secs, None),
                step(StepKind::Switch, 10_000, 0, s.post_promotion_secs, None),
            ]
        }
        DeploymentStrategy::Rolling => {
            let inc = s.step_percent;
            if !(inc > 0.0 && inc <= 100.0) {
                return Err(EngineError::Invalid(format!(
                    "settings.step_percent must be in (0, 100], got {inc}"
                )));
            }
            let mut out = Vec::new();
            let mut p = 0.0;
            while p < 100.0 {
                p = (p + inc).min(100.0);
                out.push(step(StepKind::Rolling, bp(p)?, s.min_samples, s.step_secs, None));
            }
            out
        }
        DeploymentStrategy::Shadow => {
            vec![step(StepKind::Shadow, 10_000, s.min_samples, s.shadow_secs, None)]
        }
        DeploymentStrategy::AbTest => {
            let mut st =
                step(StepKind::AbTest, bp(s.traffic_percent)?, s.min_samples, 0, s.max_secs);
            st.max_samples = s.max_samples;
            if st.share_bp == 0 {
                return Err(EngineError::Invalid(
                    "settings.traffic_percent must be above 0".into(),
                ));
            }
            vec![st]
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(strategy: &str, settings: Value) -> DeploymentRequest {
        serde_json::from_value(json!({
            "slot": "chat", "candidate": {"version": 2}, "strategy": strategy, "settings": settings
        }))
        .unwrap()
    }

    #[test]
    fn plans() {
        let r = req("canary", Value::Null);
        let s = steps(&r, &settings(&r).unwrap()).unwrap();
        assert_eq!(
            s.iter().map(|x| x.share_bp).collect::<Vec<_>>(),
            [100, 500, 2500, 5000, 10_000]
        );
        let r = req("rolling", json!({"step_percent": 30}));
        let s = steps(&r, &settings(&r).unwrap()).unwrap();
        assert_eq!(s.iter().map(|x| x.share_bp).collect::<Vec<_>>(), [3000, 6000, 9000, 10_000]);
        let r = req("blue_green", json!({}));
        assert!(
            steps(&r, &settings(&r).unwrap()).unwrap_err().to_string().contains("preview_keys")
        );
        let r = req("canary", json!({"colour": 1}));
        assert!(settings(&r).unwrap_err().to_string().contains("colour"));
    }
}
