//! Strategies as plans: each strategy becomes a list of steps with a share of traffic, a
//! kind, and promotion gates. The plan is persisted with the rollout, so a restarted
//! engine continues the same plan.

use actuator_core::{DeploymentRequest, DeploymentStrategy};
use actuator_health::{AnalysisMode, PrimaryMetric};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::EngineError;

/// What a step does with traffic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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
    /// Immediate, blue-green, rolling, shadow: seconds a step may run before its budget is
    /// spent and the inconclusive policy applies; `None` is the larger of one hour and twice
    /// the step's minimum duration.
    pub max_step_secs: Option<u64>,
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
            max_step_secs: None,
        }
    }
}

// ---------------------------------------------------------------- ranges

/// Longest duration any request field may ask for: 30 days, in seconds.
pub const MAX_DURATION_SECS: u64 = 30 * 24 * 3600;
/// Longest rollback window after completion: 7 days, in seconds.
pub const MAX_ROLLBACK_WINDOW_SECS: u64 = 7 * 24 * 3600;
/// Largest sample count any request field may ask for.
pub const MAX_SAMPLES: u64 = 1_000_000_000;
/// Smallest rolling step, in percent.
pub const MIN_STEP_PERCENT: f64 = 0.1;
/// Most steps a plan may have.
pub const MAX_PLAN_STEPS: usize = 1000;
/// Smallest share of a canary phase or an A/B test, in percent (one basis point).
pub const MIN_SHARE_PERCENT: f64 = 0.01;
/// Longest description, in bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 4096;
/// Longest actor name, in bytes.
pub const MAX_ACTOR_BYTES: usize = 256;
/// Longest reason of a manual rollback, in bytes.
pub const MAX_REASON_BYTES: usize = 4096;
/// Largest metadata object (serialised JSON), in bytes.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Largest `canary.traffic_split` object (serialised JSON), in bytes.
pub const MAX_SPLIT_BYTES: usize = 4096;
/// Most preview keys or pinned targeting keys.
pub const MAX_KEYS: usize = 10_000;
/// Most attribute overrides.
pub const MAX_ATTRIBUTE_OVERRIDES: usize = 100;
/// Longest key, attribute or arm name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Most extra A/B arms.
pub const MAX_AB_ARMS: usize = 8;
/// Longest request timeout or latency limit, in milliseconds (one hour).
pub const MAX_LATENCY_MS: f64 = 3_600_000.0;
/// Largest relative cost increase a limit may allow (100 = +10,000 %).
pub const MAX_COST_RATIO: f64 = 100.0;
/// Largest quality limit.
pub const MAX_QUALITY: f64 = 1_000_000.0;
/// Most failing looks in a row a trigger may wait for.
pub const MAX_FAILING_LOOKS: u32 = 10_000;

fn out_of_range(field: &str, range: &str, got: impl std::fmt::Display) -> EngineError {
    EngineError::OutOfRange {
        field: field.to_owned(),
        range: range.to_owned(),
        got: got.to_string(),
    }
}

fn secs_in(field: &str, v: u64, lo: u64, hi: u64) -> Result<(), EngineError> {
    if (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(out_of_range(field, &format!("{lo}..={hi} seconds"), v))
    }
}

fn count_in(field: &str, v: u64, lo: u64) -> Result<(), EngineError> {
    if (lo..=MAX_SAMPLES).contains(&v) {
        Ok(())
    } else {
        Err(out_of_range(field, &format!("{lo}..={MAX_SAMPLES}"), v))
    }
}

fn float_in(field: &str, v: f64, lo: f64, hi: f64) -> Result<(), EngineError> {
    if v.is_finite() && (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(out_of_range(field, &format!("{lo}..={hi}"), v))
    }
}

fn len_at_most(field: &str, len: usize, max: usize, unit: &str) -> Result<(), EngineError> {
    if len <= max {
        Ok(())
    } else {
        Err(out_of_range(field, &format!("at most {max} {unit}"), format!("{len} {unit}")))
    }
}

fn json_len(v: &impl Serialize) -> usize {
    serde_json::to_vec(v).map_or(usize::MAX, |b| b.len())
}

/// Checks every field of a request and of its strategy settings against its range; the
/// error names the field and the limit. Runs before anything is written.
pub(crate) fn check_ranges(
    req: &DeploymentRequest,
    s: &StrategySettings,
) -> Result<(), EngineError> {
    let c = &req.canary;
    secs_in("canary.max_duration_secs", c.max_duration_secs, 1, MAX_DURATION_SECS)?;
    secs_in("canary.rollback_window_secs", c.rollback_window_secs, 0, MAX_ROLLBACK_WINDOW_SECS)?;
    for (i, p) in c.phases.iter().enumerate() {
        float_in(
            &format!("canary.phases[{i}].traffic_percent"),
            p.traffic_percent,
            MIN_SHARE_PERCENT,
            100.0,
        )?;
        secs_in(
            &format!("canary.phases[{i}].min_duration_secs"),
            p.min_duration_secs,
            0,
            MAX_DURATION_SECS,
        )?;
        secs_in(
            &format!("canary.phases[{i}].max_duration_secs"),
            p.max_duration_secs,
            1,
            MAX_DURATION_SECS,
        )?;
        count_in(&format!("canary.phases[{i}].min_samples"), p.min_samples, 0)?;
    }
    if let Some(split) = &c.traffic_split {
        len_at_most("canary.traffic_split", json_len(split), MAX_SPLIT_BYTES, "bytes")?;
    }
    let k = &req.success_criteria;
    count_in("success_criteria.min_sample_size", k.min_sample_size, 0)?;
    float_in("success_criteria.max_p95_latency_ms", k.max_p95_latency_ms, 0.0, MAX_LATENCY_MS)?;
    float_in("success_criteria.max_p99_latency_ms", k.max_p99_latency_ms, 0.0, MAX_LATENCY_MS)?;
    float_in("success_criteria.max_cost_increase", k.max_cost_increase, 0.0, MAX_COST_RATIO)?;
    float_in("success_criteria.min_quality", k.min_quality, 0.0, MAX_QUALITY)?;
    len_at_most("actor", req.actor.len(), MAX_ACTOR_BYTES, "bytes")?;
    len_at_most("description", req.description.len(), MAX_DESCRIPTION_BYTES, "bytes")?;
    len_at_most("metadata", json_len(&req.metadata), MAX_METADATA_BYTES, "bytes")?;

    float_in("settings.request_timeout_ms", s.request_timeout_ms, 1.0, MAX_LATENCY_MS)?;
    secs_in("settings.watch_secs", s.watch_secs, 0, MAX_DURATION_SECS)?;
    secs_in("settings.preview_secs", s.preview_secs, 0, MAX_DURATION_SECS)?;
    secs_in("settings.post_promotion_secs", s.post_promotion_secs, 0, MAX_DURATION_SECS)?;
    secs_in("settings.step_secs", s.step_secs, 0, MAX_DURATION_SECS)?;
    secs_in("settings.shadow_secs", s.shadow_secs, 0, MAX_DURATION_SECS)?;
    if let Some(m) = s.max_secs {
        secs_in("settings.max_secs", m, 1, MAX_DURATION_SECS)?;
    }
    if let Some(m) = s.max_step_secs {
        secs_in("settings.max_step_secs", m, 1, MAX_DURATION_SECS)?;
    }
    count_in("settings.min_samples", s.min_samples, 0)?;
    if let Some(m) = s.max_samples {
        count_in("settings.max_samples", m, 1)?;
    }
    float_in("settings.step_percent", s.step_percent, MIN_STEP_PERCENT, 100.0)?;
    float_in("settings.traffic_percent", s.traffic_percent, MIN_SHARE_PERCENT, 100.0)?;
    len_at_most("settings.preview_keys", s.preview_keys.len(), MAX_KEYS, "keys")?;
    for (i, key) in s.preview_keys.iter().enumerate() {
        len_at_most(&format!("settings.preview_keys[{i}]"), key.len(), MAX_NAME_BYTES, "bytes")?;
    }
    if let Some(a) = &s.preview_attribute {
        len_at_most(
            "settings.preview_attribute.attribute",
            a.attribute.len(),
            MAX_NAME_BYTES,
            "bytes",
        )?;
        len_at_most(
            "settings.preview_attribute.equals",
            json_len(&a.equals),
            MAX_NAME_BYTES,
            "bytes",
        )?;
    }
    len_at_most("settings.arms", s.arms.len(), MAX_AB_ARMS, "arms")?;
    for (i, a) in s.arms.iter().enumerate() {
        len_at_most(&format!("settings.arms[{i}].name"), a.name.len(), MAX_NAME_BYTES, "bytes")?;
    }
    let o = &s.overrides;
    len_at_most("settings.overrides.targeting_keys", o.targeting_keys.len(), MAX_KEYS, "keys")?;
    if let Some(k) = o.targeting_keys.keys().find(|k| k.len() > MAX_NAME_BYTES) {
        return Err(out_of_range(
            "settings.overrides.targeting_keys",
            &format!("keys of at most {MAX_NAME_BYTES} bytes"),
            format!("a key of {} bytes", k.len()),
        ));
    }
    len_at_most(
        "settings.overrides.attributes",
        o.attributes.len(),
        MAX_ATTRIBUTE_OVERRIDES,
        "entries",
    )?;
    for (i, a) in o.attributes.iter().enumerate() {
        len_at_most(
            &format!("settings.overrides.attributes[{i}].attribute"),
            a.attribute.len(),
            MAX_NAME_BYTES,
            "bytes",
        )?;
        len_at_most(
            &format!("settings.overrides.attributes[{i}].equals"),
            json_len(&a.equals),
            MAX_NAME_BYTES,
            "bytes",
        )?;
    }
    if let actuator_canary::StickinessKey::Attribute(a) = &s.stickiness {
        len_at_most("settings.stickiness.attribute", a.len(), MAX_NAME_BYTES, "bytes")?;
    }
    let t = &s.triggers;
    if let Some(v) = t.p99_latency_ms {
        float_in("settings.triggers.p99_latency_ms", v, 0.0, MAX_LATENCY_MS)?;
    }
    if let Some(v) = t.cost_increase {
        float_in("settings.triggers.cost_increase", v, 0.0, MAX_COST_RATIO)?;
    }
    if let Some(v) = t.min_quality {
        float_in("settings.triggers.min_quality", v, 0.0, MAX_QUALITY)?;
    }
    if let Some(v) = t.health_check_failures
        && !(1..=MAX_FAILING_LOOKS).contains(&v)
    {
        return Err(out_of_range(
            "settings.triggers.health_check_failures",
            &format!("1..={MAX_FAILING_LOOKS}"),
            v,
        ));
    }
    count_in("settings.triggers.min_requests", t.min_requests, 0)?;
    Ok(())
}

/// Checks a plan's steps: at most [`MAX_PLAN_STEPS`], and a maximum duration never below the
/// step's minimum.
pub(crate) fn check_steps(steps: &[Step]) -> Result<(), EngineError> {
    len_at_most("the plan", steps.len(), MAX_PLAN_STEPS, "steps")?;
    for (i, st) in steps.iter().enumerate() {
        if let Some(max) = st.max_secs
            && max < st.min_secs
        {
            return Err(out_of_range(
                &format!("the budget of step {i}"),
                &format!("at least the step's minimum of {} seconds", st.min_secs),
                format!("{max} seconds"),
            ));
        }
    }
    Ok(())
}

/// The default budget of a step without a control: the larger of one hour and twice the
/// step's minimum duration, within [`MAX_DURATION_SECS`].
fn default_budget(min_secs: u64) -> u64 {
    min_secs.saturating_mul(2).max(3600).min(MAX_DURATION_SECS.max(min_secs))
}

/// A duration in seconds as a chrono duration; `None` when it does not fit.
pub(crate) fn secs(v: u64) -> Option<chrono::Duration> {
    chrono::Duration::try_seconds(i64::try_from(v).ok()?)
}

/// A duration in milliseconds as a chrono duration; `None` when it does not fit.
pub(crate) fn millis(v: u64) -> Option<chrono::Duration> {
    chrono::Duration::try_milliseconds(i64::try_from(v).ok()?)
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

/// The `settings` keys every strategy reads.
const COMMON_KEYS: [&str; 5] =
    ["inconclusive", "request_timeout_ms", "stickiness", "overrides", "triggers"];

/// The `settings` keys a strategy reads beside [`COMMON_KEYS`].
const fn strategy_keys(strategy: DeploymentStrategy) -> &'static [&'static str] {
    match strategy {
        DeploymentStrategy::Canary => &[],
        DeploymentStrategy::Immediate => &["watch_secs", "min_samples", "max_step_secs"],
        DeploymentStrategy::BlueGreen => &[
            "preview_keys",
            "preview_attribute",
            "preview_secs",
            "min_samples",
            "post_promotion_secs",
            "max_step_secs",
        ],
        DeploymentStrategy::Rolling => {
            &["step_percent", "step_secs", "min_samples", "max_step_secs"]
        }
        DeploymentStrategy::Shadow => {
            &["shadow_secs", "min_samples", "then_canary", "max_step_secs"]
        }
        DeploymentStrategy::AbTest => {
            &["arms", "primary", "traffic_percent", "min_samples", "max_samples", "max_secs"]
        }
    }
}

/// Refuses a `settings` key that another strategy reads and this one would ignore
/// (`watch_secs` on a canary, say), naming the key and the strategies that read it. Keys no
/// strategy knows are refused by [`settings`].
pub(crate) fn check_strategy_keys(req: &DeploymentRequest) -> Result<(), EngineError> {
    let Some(map) = req.settings.as_object() else { return Ok(()) };
    let own = strategy_keys(req.strategy);
    for key in map.keys() {
        if COMMON_KEYS.contains(&key.as_str()) || own.contains(&key.as_str()) {
            continue;
        }
        let readers: Vec<&str> = DeploymentStrategy::ALL
            .iter()
            .filter(|d| strategy_keys(**d).contains(&key.as_str()))
            .map(|d| d.as_str())
            .collect();
        if readers.is_empty() {
            continue;
        }
        let mut accepted: Vec<&str> = COMMON_KEYS.to_vec();
        accepted.extend_from_slice(own);
        return Err(EngineError::Invalid(format!(
            "settings.{key} is a setting of {} and a {} rollout does not read it; a {} rollout takes {}",
            readers.join(", "),
            req.strategy.as_str(),
            req.strategy.as_str(),
            accepted.join(", ")
        )));
    }
    Ok(())
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
    let budget = |min_secs: u64| Some(s.max_step_secs.unwrap_or_else(|| default_budget(min_secs)));
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
            vec![step(StepKind::Watch, 10_000, s.min_samples, s.watch_secs, budget(s.watch_secs))]
        }
        DeploymentStrategy::BlueGreen => {
            if s.preview_keys.is_empty() && s.preview_attribute.is_none() {
                return Err(EngineError::Invalid(
                    "blue_green needs settings.preview_keys or settings.preview_attribute to route preview traffic".into(),
                ));
            }
            vec![
                step(StepKind::Preview, 0, s.min_samples, s.preview_secs, budget(s.preview_secs)),
                step(
                    StepKind::Switch,
                    10_000,
                    0,
                    s.post_promotion_secs,
                    budget(s.post_promotion_secs),
                ),
            ]
        }
        DeploymentStrategy::Rolling => {
            let inc = s.step_percent;
            float_in("settings.step_percent", inc, MIN_STEP_PERCENT, 100.0)?;
            // At most 100 / MIN_STEP_PERCENT steps: the bound is checked before any is built.
            let n = (100.0 / inc).ceil();
            if n > MAX_PLAN_STEPS as f64 {
                return Err(out_of_range(
                    "the plan",
                    &format!("at most {MAX_PLAN_STEPS} steps"),
                    n,
                ));
            }
            let mut out: Vec<Step> = Vec::with_capacity(n as usize);
            // Step k is at k·inc percent, rounded to basis points; a share that rounds to the
            // previous one or to 100 % is merged, so shares rise strictly and end at 100 %.
            let mut k = 1.0;
            while out.len() < MAX_PLAN_STEPS {
                let share = bp((k * inc).min(100.0))?;
                k += 1.0;
                if out.last().is_some_and(|l| l.share_bp >= share) {
                    continue;
                }
                if share >= 10_000 {
                    break;
                }
                out.push(step(
                    StepKind::Rolling,
                    share,
                    s.min_samples,
                    s.step_secs,
                    budget(s.step_secs),
                ));
            }
            out.push(step(
                StepKind::Rolling,
                10_000,
                s.min_samples,
                s.step_secs,
                budget(s.step_secs),
            ));
            out
        }
        DeploymentStrategy::Shadow => {
            vec![step(
                StepKind::Shadow,
                10_000,
                s.min_samples,
                s.shadow_secs,
                budget(s.shadow_secs),
            )]
        }
        DeploymentStrategy::AbTest => {
            let mut st = step(
                StepKind::AbTest,
                bp(s.traffic_percent)?,
                s.min_samples,
                0,
                Some(s.max_secs.unwrap_or(7 * 24 * 3600)),
            );
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
    fn a_setting_of_another_strategy_is_refused_by_name() {
        let err =
            check_strategy_keys(&req("canary", json!({"watch_secs": 5}))).unwrap_err().to_string();
        assert!(err.contains("settings.watch_secs is a setting of immediate"), "{err}");
        assert!(err.contains("a canary rollout takes inconclusive"), "{err}");
        let err = check_strategy_keys(&req("rolling", json!({"shadow_secs": 5, "step_secs": 1})))
            .unwrap_err()
            .to_string();
        assert!(err.contains("settings.shadow_secs") && err.contains("shadow"), "{err}");
        for (strategy, ok) in [
            ("immediate", json!({"watch_secs": 1, "min_samples": 10, "inconclusive": "hold"})),
            ("rolling", json!({"step_percent": 50, "step_secs": 0, "min_samples": 10})),
            ("ab_test", json!({"primary": "quality", "min_samples": 10, "traffic_percent": 50})),
            ("canary", json!({"stickiness": "user", "request_timeout_ms": 1000})),
        ] {
            assert!(check_strategy_keys(&req(strategy, ok.clone())).is_ok(), "{strategy}: {ok}");
        }
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

    #[test]
    fn every_step_without_a_control_has_a_budget() {
        for (strategy, s) in [
            ("immediate", json!({})),
            ("rolling", json!({"step_percent": 25})),
            ("blue_green", json!({"preview_keys": ["qa"]})),
            ("shadow", json!({})),
            ("ab_test", json!({})),
            ("canary", Value::Null),
        ] {
            let r = req(strategy, s);
            for st in steps(&r, &settings(&r).unwrap()).unwrap() {
                let max = st.max_secs.expect("a budget");
                assert!(max >= st.min_secs && max <= MAX_DURATION_SECS, "{strategy}: {st:?}");
            }
        }
        let r = req("immediate", json!({"watch_secs": 7200}));
        assert_eq!(steps(&r, &settings(&r).unwrap()).unwrap()[0].max_secs, Some(14_400));
        let r = req("rolling", json!({"step_secs": 600, "max_step_secs": 60}));
        let err = check_steps(&steps(&r, &settings(&r).unwrap()).unwrap()).unwrap_err();
        assert!(err.to_string().contains("at least the step's minimum of 600"), "{err}");
    }

    #[test]
    fn out_of_range_fields_name_the_field_and_the_limit() {
        let mut r = req("canary", Value::Null);
        r.canary.max_duration_secs = 10_000_000_000_000_000;
        let err = check_ranges(&r, &settings(&r).unwrap()).unwrap_err().to_string();
        assert!(err.contains("canary.max_duration_secs") && err.contains("2592000"), "{err}");
        let r = req("rolling", json!({"step_percent": 1e-9}));
        let err = steps(&r, &settings(&r).unwrap()).unwrap_err().to_string();
        assert!(err.contains("settings.step_percent") && err.contains("0.1"), "{err}");
        let r = req(
            "canary",
            json!({"overrides": {"attributes": (0..101).map(|i| json!({"attribute": "t", "equals": i, "variant": "canary"})).collect::<Vec<_>>()}}),
        );
        let err = check_ranges(&r, &settings(&r).unwrap()).unwrap_err().to_string();
        assert!(err.contains("settings.overrides.attributes") && err.contains("100"), "{err}");
    }

    proptest::proptest! {
        /// Any accepted rolling step size gives a bounded plan whose shares rise strictly
        /// and end at 100 %.
        #[test]
        fn rolling_plans_are_bounded_and_rise_to_100(p in 0.1f64..=100.0) {
            let r = req("rolling", json!({"step_percent": p}));
            let s = steps(&r, &settings(&r).unwrap()).unwrap();
            proptest::prop_assert!(s.len() <= MAX_PLAN_STEPS);
            proptest::prop_assert_eq!(s.last().map(|x| x.share_bp), Some(10_000));
            for w in s.windows(2) {
                proptest::prop_assert!(w[0].share_bp < w[1].share_bp, "{:?}", w);
            }
        }
    }
}
