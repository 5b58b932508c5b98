//! Deployment requests, statuses, rollbacks and statistics: the vocabulary of the seed's
//! Actuator, shared by the engine, the server and the CLI.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

use crate::config::SlotName;
use crate::error::CoreError;
use crate::state::DeploymentState;

/// How a candidate config reaches traffic.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentStrategy {
    /// Phased shares (1% → 5% → 25% → 50% → 100%) compared against a control.
    Canary,
    /// All traffic at once, with guard rails watched for a window.
    Immediate,
    /// Preview traffic first, then an atomic switch with the old config kept ready.
    BlueGreen,
    /// Fixed share steps with guard rails and no held-back control.
    Rolling,
    /// The candidate runs on mirrored requests only; users never see its answers.
    Shadow,
    /// A fixed split between two or more configs until one wins.
    AbTest,
}

impl DeploymentStrategy {
    /// Every strategy.
    pub const ALL: [Self; 6] =
        [Self::Canary, Self::Immediate, Self::BlueGreen, Self::Rolling, Self::Shadow, Self::AbTest];

    /// Stable string form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Canary => "canary",
            Self::Immediate => "immediate",
            Self::BlueGreen => "blue_green",
            Self::Rolling => "rolling",
            Self::Shadow => "shadow",
            Self::AbTest => "ab_test",
        }
    }

    /// Parses the stable string form.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl fmt::Display for DeploymentStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The config a deployment rolls out: an existing version, or a new document to write first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Candidate {
    /// A version already in the store.
    Version(u64),
    /// A new document; it is validated and written as the next version.
    Document(Value),
}

/// One canary phase.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CanaryPhase {
    /// Share of traffic on the candidate, in percent (0.01 to 100).
    pub traffic_percent: f64,
    /// The phase is never promoted before this many seconds.
    #[serde(default = "defaults::min_duration")]
    pub min_duration_secs: u64,
    /// The phase is never promoted before this many canary requests.
    #[serde(default = "defaults::min_samples")]
    pub min_samples: u64,
    /// After this many seconds the phase's analysis is inconclusive.
    #[serde(default = "defaults::max_duration")]
    pub max_duration_secs: u64,
    /// What the phase is for; `None`: smoke below 10%, prove below 100%, watch at 100%.
    #[serde(default)]
    pub role: Option<PhaseRole>,
    /// Promotion margins of the phase; unset fields take the role's defaults.
    #[serde(default)]
    pub margins: PhaseMargins,
    /// What a metric that cannot reach a verdict within the phase's budget does to promotion;
    /// `None`: `ignore` for smoke and watch phases, `block` for prove phases.
    #[serde(default)]
    pub unreachable: Option<UnreachableMetric>,
    /// What the phase does when its budget is spent without a decision; `None`: the
    /// rollout's `settings.inconclusive`.
    #[serde(default)]
    pub on_inconclusive: Option<PhaseInconclusive>,
}

/// What a canary phase is for (docs/statistics.md, "Stages with roles").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PhaseRole {
    /// Catch crashes and large regressions with coarse margins.
    Smoke,
    /// Prove fine non-inferiority.
    Prove,
    /// No control (the 100% phase): watch against the stable's frozen numbers.
    Watch,
}

impl PhaseRole {
    /// The role a phase at `traffic_percent` gets when none is given.
    pub fn for_percent(traffic_percent: f64) -> Self {
        if traffic_percent >= 100.0 {
            Self::Watch
        } else if traffic_percent < 10.0 {
            Self::Smoke
        } else {
            Self::Prove
        }
    }
}

/// Promotion margins of one phase. Each is optional; unset ones take the role's default
/// (smoke: errors +1 pp or ×2, latency ×1.2, cost ×1.2; prove: errors +0.5 pp, latency ×1.1,
/// cost ×1.05, quality −0.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PhaseMargins {
    /// Absolute error-rate margin, in (0, 1).
    pub errors_abs: Option<f64>,
    /// Error-rate margin as a ratio of the control's rate, in (1, 100].
    pub errors_ratio: Option<f64>,
    /// Latency margin as a ratio of geometric means, in (1, 10].
    pub latency_ratio: Option<f64>,
    /// Cost margin as a ratio of mean costs, in (1, 10].
    pub cost_ratio: Option<f64>,
    /// Quality margin in score points, in (0, 4].
    pub quality_abs: Option<f64>,
}

/// What a metric that cannot reach a verdict within the phase's budget does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UnreachableMetric {
    /// It holds the phase.
    Block,
    /// It is reported and does not hold the phase (unless its estimate is beyond the margin).
    Ignore,
    /// The phase decides within its minimums and leaves what they did not prove to a later
    /// prove phase, which pools the evidence of both (unless its estimate is beyond the
    /// margin). Needs a later prove phase; the default of a prove phase that one follows.
    Defer,
}

/// What an inconclusive phase does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PhaseInconclusive {
    /// Pause and alert.
    Hold,
    /// Promote, provided no alarm fired.
    PromoteIfNoAlarm,
    /// Roll back.
    Rollback,
}

impl CanaryPhase {
    /// A phase at `traffic_percent` with the defaults of its role (statistics.md §5.8):
    /// below 10% (smoke) 200 canary requests and 5 min below 2%, else 500 and 10 min, at
    /// most 2 h / 4 h; 10–99% (prove) 1,000 requests, 20 min, at most 8 h; 100% (watch)
    /// 1,000 requests, 10 min, at most 1 h. The minimums are burn-in floors that gate
    /// promotion only (start-up transients such as cold caches show in the first minutes);
    /// the statistics decide, and rollback never waits for them.
    pub fn at(traffic_percent: f64) -> Self {
        let (min_samples, min_duration_secs, max_duration_secs) =
            match PhaseRole::for_percent(traffic_percent) {
                PhaseRole::Smoke if traffic_percent < 2.0 => (200, 300, 2 * 3600),
                PhaseRole::Smoke => (500, 600, 4 * 3600),
                PhaseRole::Prove => (1000, 1200, 8 * 3600),
                PhaseRole::Watch => (1000, 600, 3600),
            };
        Self {
            traffic_percent,
            min_duration_secs,
            min_samples,
            max_duration_secs,
            role: None,
            margins: PhaseMargins::default(),
            unreachable: None,
            on_inconclusive: None,
        }
    }

    /// The phase's role: the one given, or the default for its share.
    pub fn effective_role(&self) -> PhaseRole {
        self.role.unwrap_or_else(|| PhaseRole::for_percent(self.traffic_percent))
    }

    /// The policy of phase `i` of `phases` for metrics it cannot decide: its own, else
    /// `defer` for a prove phase that a later prove phase follows (the later one pools the
    /// evidence and proves the rest), `block` for the last prove phase, `ignore` for smoke
    /// and watch phases.
    pub fn effective_unreachable(phases: &[Self], i: usize) -> Option<UnreachableMetric> {
        let p = phases.get(i)?;
        if let Some(u) = p.unreachable {
            return Some(u);
        }
        Some(match p.effective_role() {
            PhaseRole::Smoke | PhaseRole::Watch => UnreachableMetric::Ignore,
            PhaseRole::Prove if Self::prove_follows(phases, i) => UnreachableMetric::Defer,
            PhaseRole::Prove => UnreachableMetric::Block,
        })
    }

    /// Whether a prove phase comes after phase `i`.
    fn prove_follows(phases: &[Self], i: usize) -> bool {
        phases.iter().skip(i + 1).any(|q| q.effective_role() == PhaseRole::Prove)
    }

    /// Checks the analysis fields of phase `i` (role, margins): every margin in its range,
    /// the watch role exactly at 100%.
    ///
    /// # Errors
    /// [`CoreError::InvalidRequest`] naming the field and the range.
    pub fn validate_analysis(&self, i: usize) -> Result<(), CoreError> {
        let full = self.traffic_percent >= 100.0;
        match (self.role, full) {
            (Some(PhaseRole::Watch), false) => {
                return Err(CoreError::InvalidRequest(format!(
                    "phase {i}: role watch is for the 100% phase only; phases below 100% compare with control (smoke or prove)"
                )));
            }
            (Some(r @ (PhaseRole::Smoke | PhaseRole::Prove)), true) => {
                return Err(CoreError::InvalidRequest(format!(
                    "phase {i}: role {r:?} needs a control, and the 100% phase has none; use watch or leave role unset"
                )));
            }
            _ => {}
        }
        let m = &self.margins;
        let checks: [(&str, Option<f64>, f64, f64, bool); 5] = [
            ("errors_abs", m.errors_abs, 0.0, 1.0, false),
            ("errors_ratio", m.errors_ratio, 1.0, 100.0, true),
            ("latency_ratio", m.latency_ratio, 1.0, 10.0, true),
            ("cost_ratio", m.cost_ratio, 1.0, 10.0, true),
            ("quality_abs", m.quality_abs, 0.0, 4.0, true),
        ];
        for (name, v, lo, hi, hi_inclusive) in checks {
            if let Some(v) = v {
                let ok = v.is_finite() && v > lo && (v < hi || (hi_inclusive && v == hi));
                if !ok {
                    let close = if hi_inclusive { ']' } else { ')' };
                    return Err(CoreError::InvalidRequest(format!(
                        "phase {i}: margins.{name} must be in ({lo}, {hi}{close}, got {v}"
                    )));
                }
            }
        }
        Ok(())
    }
}

mod defaults {
    /// The default canary plan: 1 → 5 → 25 → 50 → 100 %.
    pub(super) fn phases() -> Vec<super::CanaryPhase> {
        [1.0, 5.0, 25.0, 50.0, 100.0].into_iter().map(super::CanaryPhase::at).collect()
    }
    pub(super) fn min_duration() -> u64 {
        60
    }
    pub(super) fn min_samples() -> u64 {
        100
    }
    pub(super) fn max_duration() -> u64 {
        3600
    }
    pub(super) fn max_total() -> u64 {
        24 * 3600
    }
    pub(super) fn rollback_window() -> u64 {
        3600
    }
    pub(super) fn yes() -> bool {
        true
    }
}

/// The thresholds of the seed's guard rails and significance level.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SuccessCriteria {
    /// Minimum share of successful requests (0.99).
    pub min_success_rate: f64,
    /// Maximum share of failed requests (0.01).
    pub max_error_rate: f64,
    /// Maximum 95th percentile latency in milliseconds (1000).
    pub max_p95_latency_ms: f64,
    /// Maximum 99th percentile latency in milliseconds (2000).
    pub max_p99_latency_ms: f64,
    /// Maximum relative cost increase over control (0.10 = 10%).
    pub max_cost_increase: f64,
    /// Minimum mean quality score (3.5 on a 1–5 scale).
    pub min_quality: f64,
    /// Minimum canary requests before any promotion (100).
    pub min_sample_size: u64,
    /// False-rollback budget of the sequential analysis over the whole rollout (0.05).
    pub alpha: f64,
}

impl Default for SuccessCriteria {
    fn default() -> Self {
        Self {
            min_success_rate: 0.99,
            max_error_rate: 0.01,
            max_p95_latency_ms: 1000.0,
            max_p99_latency_ms: 2000.0,
            max_cost_increase: 0.10,
            min_quality: 3.5,
            min_sample_size: 100,
            alpha: 0.05,
        }
    }
}

impl SuccessCriteria {
    /// Checks that every threshold is in its range.
    pub fn validate(&self) -> Result<(), CoreError> {
        let unit = |name: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(CoreError::InvalidRequest(format!("{name} must be between 0 and 1, got {v}")))
            }
        };
        unit("min_success_rate", self.min_success_rate)?;
        unit("max_error_rate", self.max_error_rate)?;
        if !(self.alpha > 0.0 && self.alpha < 0.5) {
            return Err(CoreError::InvalidRequest(format!(
                "alpha must be in (0, 0.5), got {}",
                self.alpha
            )));
        }
        for (name, v) in [
            ("max_p95_latency_ms", self.max_p95_latency_ms),
            ("max_p99_latency_ms", self.max_p99_latency_ms),
            ("max_cost_increase", self.max_cost_increase),
            ("min_quality", self.min_quality),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(CoreError::InvalidRequest(format!(
                    "{name} must be a non-negative number, got {v}"
                )));
            }
        }
        Ok(())
    }
}

/// How a rollback moves traffic back.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RollbackMode {
    /// The candidate's share drops to 0 and the stable snapshot is restored in one step.
    #[default]
    Fast,
    /// The share steps down 100 → 50 → 25 → 5 → 1 → 0 with health watched at each step.
    Gradual,
}

/// Settings of the canary strategy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CanaryConfig {
    /// The phases, in order; the last is usually 100% (default 1 → 5 → 25 → 50 → 100 %, also
    /// when `canary` is given for its other keys only).
    #[serde(default = "defaults::phases")]
    pub phases: Vec<CanaryPhase>,
    /// How requests are split (an `actuator_canary` split strategy in JSON); `None` means
    /// consistent hashing on the targeting key.
    #[serde(default)]
    pub traffic_split: Option<Value>,
    /// Promote automatically when the analysis says so.
    #[serde(default = "defaults::yes")]
    pub auto_promote: bool,
    /// Roll back automatically when the analysis says so.
    #[serde(default = "defaults::yes")]
    pub auto_rollback: bool,
    /// The whole deployment's budget in seconds of active time (the daemon running and the
    /// rollout not paused). When it is spent the rollout rolls back, or pauses for a person
    /// when `auto_rollback` is off.
    #[serde(default = "defaults::max_total")]
    pub max_duration_secs: u64,
    /// Seconds after completion during which the rollout can still be rolled back, fast or
    /// gradually, to the version it replaced (3600; 0 turns it off).
    #[serde(default = "defaults::rollback_window")]
    pub rollback_window_secs: u64,
}

impl Default for CanaryConfig {
    fn default() -> Self {
        Self {
            phases: defaults::phases(),
            traffic_split: None,
            auto_promote: true,
            auto_rollback: true,
            max_duration_secs: defaults::max_total(),
            rollback_window_secs: defaults::rollback_window(),
        }
    }
}

impl CanaryConfig {
    /// Maximum number of phases.
    pub const MAX_PHASES: usize = 20;

    /// Checks the phases: 1 to 20, shares in (0, 100] and strictly increasing, sane durations.
    pub fn validate(&self) -> Result<(), CoreError> {
        if self.phases.is_empty() || self.phases.len() > Self::MAX_PHASES {
            return Err(CoreError::InvalidRequest(format!(
                "a canary needs 1 to {} phases, got {}",
                Self::MAX_PHASES,
                self.phases.len()
            )));
        }
        let mut last = 0.0;
        for (i, p) in self.phases.iter().enumerate() {
            if !(p.traffic_percent > last && p.traffic_percent <= 100.0) {
                return Err(CoreError::InvalidRequest(format!(
                    "phase {i}: traffic_percent must rise strictly and stay within (0, 100], got {} after {last}",
                    p.traffic_percent
                )));
            }
            if p.max_duration_secs < p.min_duration_secs {
                return Err(CoreError::InvalidRequest(format!(
                    "phase {i}: max_duration_secs ({}) is below min_duration_secs ({})",
                    p.max_duration_secs, p.min_duration_secs
                )));
            }
            last = p.traffic_percent;
        }
        Ok(())
    }
}

/// A request to roll a candidate config out to a slot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploymentRequest {
    /// Caller-chosen id; one is generated when absent.
    #[serde(default)]
    pub id: Option<String>,
    /// The slot to change.
    pub slot: SlotName,
    /// What to roll out.
    pub candidate: Candidate,
    /// How to roll it out.
    pub strategy: DeploymentStrategy,
    /// Canary phases and switches (also used by rolling and A/B as their step plan).
    #[serde(default)]
    pub canary: CanaryConfig,
    /// Guard-rail thresholds and the false-rollback budget.
    #[serde(default)]
    pub success_criteria: SuccessCriteria,
    /// Strategy-specific settings (preview keys for blue-green, step size for rolling,
    /// arms for A/B, ...), interpreted by the engine.
    #[serde(default)]
    pub settings: Value,
    /// How an automatic rollback moves traffic back.
    #[serde(default)]
    pub rollback_mode: RollbackMode,
    /// Who asked.
    #[serde(default = "default_actor")]
    pub actor: String,
    /// Why.
    #[serde(default)]
    pub description: String,
    /// Free-form metadata kept with the deployment.
    #[serde(default)]
    pub metadata: BTreeMap<String, Value>,
    /// Webhook gates asked before traffic moves, before each promotion and after a rollback
    /// (at most 10; docs/user-guide.md, "Promotion gates").
    #[serde(default)]
    pub gates: Vec<crate::gate::GateSpec>,
    /// Read the rollout's outcomes from a metric source (PromQL per arm) instead of, or
    /// besides, posted observations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<crate::metric_query::MetricsSpec>,
}

fn default_actor() -> String {
    "anonymous".into()
}

impl DeploymentRequest {
    /// Validates the request's own fields (not the candidate document, which the config
    /// manager validates against the slot).
    pub fn validate(&self) -> Result<(), CoreError> {
        self.canary.validate()?;
        for (i, p) in self.canary.phases.iter().enumerate() {
            p.validate_analysis(i)?;
            if p.unreachable == Some(UnreachableMetric::Defer)
                && !CanaryPhase::prove_follows(&self.canary.phases, i)
            {
                return Err(CoreError::InvalidRequest(format!(
                    "canary.phases[{i}].unreachable: defer needs a later prove phase to prove what this one defers; use block or ignore"
                )));
            }
        }
        self.success_criteria.validate()?;
        if let Some(m) = &self.metrics {
            m.validate()?;
        }
        if self.actor.trim().is_empty() {
            return Err(CoreError::InvalidRequest("actor must not be empty".into()));
        }
        if let Some(id) = &self.id
            && (id.is_empty()
                || id.len() > 64
                || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        {
            return Err(CoreError::InvalidRequest(format!(
                "deployment id {id:?} must be 1 to 64 characters of letters, digits, '-' or '_'"
            )));
        }
        Ok(())
    }
}

/// Overall health of a deployment or of the actuator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Every check passes.
    Healthy,
    /// Some checks warn.
    Degraded,
    /// A check fails.
    Unhealthy,
    /// Not enough data yet.
    #[default]
    Unknown,
}

/// The result of one health check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HealthCheckResult {
    /// The check's name (`error_rate`, `p99_latency`, `store`, ...).
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// What was found, for a person.
    pub message: String,
    /// The measured value, if any.
    pub value: Option<f64>,
    /// The threshold compared against, if any.
    pub threshold: Option<f64>,
    /// When it ran.
    pub checked_at: DateTime<Utc>,
}

/// Where a deployment stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeploymentStatus {
    /// The deployment id.
    pub deployment_id: String,
    /// The slot.
    pub slot: SlotName,
    /// The strategy.
    pub strategy: DeploymentStrategy,
    /// The state.
    pub state: DeploymentState,
    /// Index of the current phase, if the strategy has phases.
    pub current_phase: Option<usize>,
    /// Share of traffic on the candidate, in percent.
    pub traffic_percent: f64,
    /// The version serving the rest of the traffic.
    pub stable_version: Option<u64>,
    /// The version being rolled out.
    pub candidate_version: u64,
    /// When the deployment started.
    pub start_time: DateTime<Utc>,
    /// When the current phase started.
    pub phase_start_time: Option<DateTime<Utc>>,
    /// Health from the last analysis.
    pub health: HealthStatus,
    /// Errors met so far.
    pub errors: Vec<String>,
    /// When this status was last written.
    pub last_updated: DateTime<Utc>,
}

/// Why a rollback happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RollbackReason {
    /// An operator asked.
    Manual {
        /// Their reason.
        reason: String,
    },
    /// The sequential analysis found the candidate worse.
    Analysis {
        /// The rules that fired.
        rules: Vec<String>,
    },
    /// Consecutive health check failures.
    HealthCheckFailed,
    /// Error rate above its trigger.
    HighErrorRate,
    /// p99 latency above its trigger.
    HighLatency,
    /// Quality below its trigger.
    QualityDegradation,
    /// Cost above its trigger.
    CostOverrun,
    /// The deployment ran past its maximum duration.
    Timeout,
    /// The deployment was aborted.
    Aborted,
    /// A `pre_rollout` or `confirm_promotion` gate with `on_failure = "rollback"` did not
    /// allow the rollout to go on.
    Gate {
        /// The gate's name.
        gate: String,
        /// Its answer (`HTTP 503`, `timeout after 5000 ms`, ...).
        answer: String,
    },
}

/// A rule name of the analysis (`sequential:latency`, `sloguard:p99_latency`,
/// `catastrophic:error_rate`) in words.
fn rule_in_words(rule: &str) -> String {
    match rule.split_once(':') {
        Some(("sequential", m)) => format!("{m} worse than control (sequential test)"),
        Some(("sloguard", m)) => format!("{m} beyond its SLO guard"),
        Some(("catastrophic", m)) => format!("{m} catastrophic (hard guard)"),
        _ => rule.to_owned(),
    }
}

impl fmt::Display for RollbackReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Manual { reason } if reason.is_empty() => f.write_str("requested by an operator"),
            Self::Manual { reason } => write!(f, "requested by an operator: {reason}"),
            Self::Analysis { rules } if rules.is_empty() => {
                f.write_str("the analysis found the candidate worse")
            }
            Self::Analysis { rules } => {
                let words: Vec<String> = rules.iter().map(|r| rule_in_words(r)).collect();
                write!(f, "the analysis found the candidate worse: {}", words.join("; "))
            }
            Self::HealthCheckFailed => f.write_str("consecutive health checks failed"),
            Self::HighErrorRate => f.write_str("the error rate is above its trigger"),
            Self::HighLatency => f.write_str("the p99 latency is above its trigger"),
            Self::QualityDegradation => f.write_str("quality is below its trigger"),
            Self::CostOverrun => f.write_str("cost is above its trigger"),
            Self::Timeout => f.write_str("the rollout ran past its maximum duration"),
            Self::Aborted => f.write_str("aborted"),
            Self::Gate { gate, answer } => write!(f, "gate {gate} refused the rollout: {answer}"),
        }
    }
}

/// A request to roll a deployment back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RollbackRequest {
    /// The deployment.
    pub deployment_id: String,
    /// Why.
    pub reason: RollbackReason,
    /// Whether the engine decided it (rather than a person).
    pub automatic: bool,
    /// Fast or gradual.
    pub mode: RollbackMode,
    /// Who asked.
    pub actor: String,
    /// When it was asked.
    pub timestamp: DateTime<Utc>,
    /// Anything else.
    pub metadata: BTreeMap<String, Value>,
}

/// What a rollback achieved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RollbackResult {
    /// The deployment.
    pub deployment_id: String,
    /// Whether traffic is back on the stable config.
    pub success: bool,
    /// The version restored.
    pub restored_version: Option<u64>,
    /// Fast or gradual.
    pub mode: RollbackMode,
    /// Why it happened.
    pub reason: RollbackReason,
    /// Milliseconds from decision to the stable config serving all traffic.
    pub duration_ms: f64,
    /// Whether post-rollback validation found the stable config healthy.
    pub validated: Option<bool>,
    /// The error, if it failed.
    pub error: Option<String>,
    /// When it finished.
    pub completed_at: DateTime<Utc>,
}

/// Counters of the actuator, as in the seed.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ActuatorStats {
    /// Deployments started.
    pub total_deployments: u64,
    /// Deployments completed.
    pub successful_deployments: u64,
    /// Deployments failed or rolled back.
    pub failed_deployments: u64,
    /// Deployments an operator aborted (not counted as failed, nor as rollbacks).
    #[serde(default)]
    pub aborted_deployments: u64,
    /// Deployments in progress.
    pub active_deployments: u64,
    /// Rollbacks of any kind.
    pub rollbacks: u64,
    /// Rollbacks the engine decided.
    pub automatic_rollbacks: u64,
    /// Rollbacks people asked for.
    pub manual_rollbacks: u64,
    /// Deployments started, by strategy.
    pub by_strategy: BTreeMap<DeploymentStrategy, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: Value) -> Result<DeploymentRequest, serde_json::Error> {
        serde_json::from_value(json)
    }

    #[test]
    fn rollback_reasons_read_as_words() {
        let r = RollbackReason::Analysis {
            rules: vec!["sequential:latency".into(), "sloguard:p99_latency".into()],
        };
        assert_eq!(
            r.to_string(),
            "the analysis found the candidate worse: latency worse than control (sequential test); p99_latency beyond its SLO guard"
        );
        assert_eq!(
            RollbackReason::Manual { reason: "bad answers".into() }.to_string(),
            "requested by an operator: bad answers"
        );
        assert!(!RollbackReason::Timeout.to_string().contains('{'));
    }

    #[test]
    fn minimal_request_gets_seed_defaults() {
        let r = req(serde_json::json!({
            "slot": "chat.default", "candidate": {"version": 3}, "strategy": "canary"
        }))
        .unwrap();
        r.validate().unwrap();
        let shares: Vec<f64> = r.canary.phases.iter().map(|p| p.traffic_percent).collect();
        assert_eq!(shares, vec![1.0, 5.0, 25.0, 50.0, 100.0]);
        assert_eq!(r.success_criteria.max_p99_latency_ms, 2000.0);
        assert_eq!(r.rollback_mode, RollbackMode::Fast);
    }

    #[test]
    fn unknown_fields_and_bad_phases_are_refused() {
        let err = req(serde_json::json!({
            "slot": "chat", "candidate": {"version": 1}, "strategy": "canary", "colour": 1
        }))
        .unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
        let mut r = req(serde_json::json!({
            "slot": "chat", "candidate": {"version": 1}, "strategy": "canary"
        }))
        .unwrap();
        r.canary.phases = vec![CanaryPhase::at(5.0), CanaryPhase::at(1.0)];
        assert!(r.validate().unwrap_err().to_string().contains("rise strictly"));
        r.canary.phases = vec![];
        assert!(r.validate().unwrap_err().to_string().contains("1 to 20 phases"));
    }

    #[test]
    fn phases_take_role_defaults_and_old_requests_still_parse() {
        let r = req(serde_json::json!({
            "slot": "chat", "candidate": {"version": 1}, "strategy": "canary",
            "canary": {"phases": [{"traffic_percent": 1, "min_samples": 10}]}
        }))
        .unwrap();
        r.validate().unwrap();
        assert_eq!(r.canary.phases[0].effective_role(), PhaseRole::Smoke);
        assert_eq!(r.canary.phases[0].margins, PhaseMargins::default());
        let d = CanaryConfig::default();
        let roles: Vec<PhaseRole> = d.phases.iter().map(CanaryPhase::effective_role).collect();
        assert_eq!(
            roles,
            [
                PhaseRole::Smoke,
                PhaseRole::Smoke,
                PhaseRole::Prove,
                PhaseRole::Prove,
                PhaseRole::Watch
            ]
        );
        assert_eq!(d.phases[0].min_samples, 200);
        assert_eq!(d.phases[2].min_duration_secs, 1200);
    }

    #[test]
    fn phase_analysis_fields_are_range_checked() {
        let base =
            serde_json::json!({"slot": "chat", "candidate": {"version": 1}, "strategy": "canary"});
        let with = |phase: Value| {
            let mut j = base.clone();
            j["canary"] = serde_json::json!({"phases": [phase]});
            req(j).unwrap().validate()
        };
        let e = with(serde_json::json!({"traffic_percent": 5, "margins": {"latency_ratio": 0.9}}));
        assert!(e.unwrap_err().to_string().contains("margins.latency_ratio"));
        let e = with(serde_json::json!({"traffic_percent": 5, "role": "watch"}));
        assert!(e.unwrap_err().to_string().contains("role watch"));
        let e = with(serde_json::json!({"traffic_percent": 100, "role": "prove"}));
        assert!(e.unwrap_err().to_string().contains("needs a control"));
        with(serde_json::json!({"traffic_percent": 5, "role": "prove", "unreachable": "ignore",
            "on_inconclusive": "promote_if_no_alarm", "margins": {"errors_abs": 0.02, "errors_ratio": 2}}))
        .unwrap();
        let mut j = base.clone();
        j["canary"] =
            serde_json::json!({"phases": [{"traffic_percent": 5, "margins": {"colour": 1}}]});
        assert!(req(j).is_err());
        let e = with(serde_json::json!({"traffic_percent": 25, "unreachable": "defer"}));
        assert!(e.unwrap_err().to_string().contains("defer needs a later prove phase"));
    }

    #[test]
    fn a_prove_phase_defers_to_a_later_prove_phase_by_default() {
        let d = CanaryConfig::default();
        let policies: Vec<_> =
            (0..d.phases.len()).map(|i| CanaryPhase::effective_unreachable(&d.phases, i)).collect();
        assert_eq!(
            policies,
            vec![
                Some(UnreachableMetric::Ignore),
                Some(UnreachableMetric::Ignore),
                Some(UnreachableMetric::Defer),
                Some(UnreachableMetric::Block),
                Some(UnreachableMetric::Ignore),
            ]
        );
        let mut own = d.phases;
        own[2].unreachable = Some(UnreachableMetric::Block);
        assert_eq!(CanaryPhase::effective_unreachable(&own, 2), Some(UnreachableMetric::Block));
    }
}
