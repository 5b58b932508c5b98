//! Decisions and their explanations. Every number that led to a decision is recorded.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::observation::Arm;

/// What the engine should do after a look.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Decision {
    /// Keep watching.
    Continue,
    /// Promote `arm`: non-inferior on every metric that holds the stage and the phase
    /// minimums are met (canary, shadow), the watch passed without an alarm (no control), or
    /// `arm` won the A/B test: better on the primary metric and non-inferior on every other
    /// metric. In an A/B test `arm` may be [`Arm::Control`]: every other arm is confidently
    /// worse on the primary metric, so the stable config stays.
    Promote {
        /// The arm to promote.
        arm: Arm,
    },
    /// Roll back `arm`; `rules` lists every rule that fired, with its numbers.
    Rollback {
        /// The arm to roll back.
        arm: Arm,
        /// The rules that fired.
        rules: Vec<FiredRule>,
    },
    /// The phase budget (requests or time) is spent without a decision.
    Inconclusive {
        /// Per metric that is not yet non-inferior: projected further canary requests.
        needed: Vec<ProjectedNeed>,
    },
    /// Stop automatic actions: the data cannot be trusted.
    Halt {
        /// Why.
        reason: HaltReason,
    },
}

impl Decision {
    /// Short name: `continue`, `promote`, `rollback`, `inconclusive`, `halt`.
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::Continue => "continue",
            Self::Promote { .. } => "promote",
            Self::Rollback { .. } => "rollback",
            Self::Inconclusive { .. } => "inconclusive",
            Self::Halt { .. } => "halt",
        }
    }
}

/// Which family of rule fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// The weighted e-average reached 1/α_total (anytime-valid, one budget); the rule names
    /// a comparative metric.
    Sequential,
    /// The weighted e-average reached 1/α_total and this SLO guard is significant by itself:
    /// the canary is beyond the threshold and confidently worse than the reference by its
    /// margin (inside the same budget). Records of the former guard rails read as this.
    #[serde(alias = "guard_rail", alias = "critical_guard_rail")]
    SloGuard,
    /// The catastrophic hard guard (e.g. ≥ 50% errors over ≥ 20 requests), outside the budget.
    Catastrophic,
}

/// One rule that fired, with the numbers behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FiredRule {
    /// Rule family.
    pub kind: RuleKind,
    /// Metric or check name (e.g. `errors`, `latency`, `error_rate`, `p95_latency`).
    pub metric: String,
    /// The canary's value or the estimated difference.
    pub value: Option<f64>,
    /// The threshold it was compared with (for sequential rules: 1/α_m or 1/α_total).
    pub threshold: Option<f64>,
    /// ln e of the metric (sequential rules).
    pub log_e_value: Option<f64>,
    /// Human-readable explanation.
    pub message: String,
}

/// Why the monitor halted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum HaltReason {
    /// Assignment counts do not match the configured shares.
    SampleRatioMismatch {
        /// ln e of the SRM test.
        log_e_value: f64,
        /// Requests per arm.
        counts: Vec<(Arm, u64)>,
        /// Configured shares.
        expected_shares: Vec<(Arm, f64)>,
    },
    /// An arm that should have data has none.
    MissingData {
        /// The arm.
        arm: Arm,
        /// Requests it was expected to have.
        expected: f64,
    },
    /// Quality judgements arrive at different rates per arm.
    JudgedFractionMismatch {
        /// ln e of the check.
        log_e_value: f64,
        /// Judged requests per arm.
        judged: Vec<(Arm, u64)>,
    },
}

/// Where one metric stands on the way to promotion.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum MetricVerdict {
    /// The upper bound is below the margin.
    NonInferior,
    /// Not yet non-inferior; the projection says it can get there within the stage budget
    /// (or the stage has no budget).
    #[default]
    Pending,
    /// Not yet non-inferior and the projection needs more than the stage's remaining budget.
    Unreachable,
    /// The estimate is at or beyond the margin: more data will not show non-inferiority
    /// unless the estimate improves.
    BeyondMargin,
    /// Not required in this stage (no data by design, quality in a smoke stage, the watch).
    NotRequired,
    /// Not yet non-inferior within the stage's minimums, in a stage whose policy is `defer`:
    /// a later prove stage proves it with the pooled evidence; does not hold this one.
    Deferred,
}

/// What keeps the rollout in its stage, with a projection at the current traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Holding {
    /// The metric (`errors`, `latency`, ...), or `min_samples`, `min_duration`, `halt`.
    pub what: String,
    /// The treatment arm, for metrics.
    pub arm: Option<Arm>,
    /// For a person: why it holds and what would release it.
    pub reason: String,
    /// Further canary requests to a decision, when it can be projected.
    pub additional_requests: Option<u64>,
    /// Seconds to a decision at the current canary traffic, when it can be projected.
    pub eta_secs: Option<f64>,
}

/// Projection of the canary requests still needed to show non-inferiority on one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectedNeed {
    /// Metric name.
    pub metric: String,
    /// Treatment arm.
    pub arm: Arm,
    /// Further canary requests if the estimate stays where it is; `None` when the estimate is
    /// already at or beyond the margin (no amount of data would promote).
    pub additional_requests: Option<u64>,
}

/// Descriptive numbers of one arm in the current phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmSummary {
    /// The arm.
    pub arm: Arm,
    /// Requests (after de-duplication).
    pub requests: u64,
    /// Error events (errors + timeouts).
    pub error_events: u64,
    /// Timeouts.
    pub timeouts: u64,
    /// Refusals.
    pub refused: u64,
    /// Error rate.
    pub error_rate: Option<f64>,
    /// Success rate.
    pub success_rate: Option<f64>,
    /// Latency p50 (ms).
    pub p50_ms: Option<f64>,
    /// Latency p95 (ms).
    pub p95_ms: Option<f64>,
    /// Latency p99 (ms).
    pub p99_ms: Option<f64>,
    /// Time-to-first-token p50 (ms).
    pub ttft_p50_ms: Option<f64>,
    /// Time-to-first-token p95 (ms).
    pub ttft_p95_ms: Option<f64>,
    /// Mean cost per request.
    pub mean_cost: Option<f64>,
    /// Mean quality score.
    pub mean_quality: Option<f64>,
    /// Judged requests.
    pub judged: u64,
    /// Total prompt tokens.
    pub tokens_in: u64,
    /// Total completion tokens.
    pub tokens_out: u64,
    /// Effective sample size: requests discounted for clustering (design effect of the
    /// clustered error rate) when assignment is sticky; `None` for per-request splits.
    #[serde(default)]
    pub effective_requests: Option<f64>,
    /// Requests routed to this arm outside the phase share (overrides, region rules, preview
    /// pins, not enrolled in a partial A/B): not compared, not in the sample-ratio check.
    #[serde(default)]
    pub outside_requests: u64,
    /// Error events among the requests outside the phase share.
    #[serde(default)]
    pub outside_error_events: u64,
    /// Outcomes and late scores of an earlier phase received in this one: dropped.
    #[serde(default)]
    pub stale: u64,
    /// Outcomes without a phase counted here, and late scores without one dropped.
    #[serde(default)]
    pub unphased: u64,
}

/// Evidence and intervals for one metric of one treatment arm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricReport {
    /// Metric name (`errors`, `latency`, `tail:q0.95`, `tail:slo:1000ms`, `cost`, `quality`).
    pub metric: String,
    /// Pooled estimate in the harm direction (canary − control; control − canary for
    /// quality), information-weighted across the stages so far (statistics.md §5.2), on the
    /// test's scale (absolute rate, ln ratio, relative change, points). `lower` and `upper`
    /// are centred on it, so the interval always contains it.
    pub estimate: Option<f64>,
    /// This stage's own estimate (the one the stage's e-value is computed from).
    #[serde(default)]
    pub phase_estimate: Option<f64>,
    /// Always-valid lower bound of the pooled estimate (rollback side, level α_m).
    pub lower: Option<f64>,
    /// Always-valid upper bound of the pooled estimate (promotion side, level α_promote).
    pub upper: Option<f64>,
    /// ln e of the current phase.
    pub log_e_phase: f64,
    /// ln e carried over phases (product of phase e-values, including this one).
    pub log_e_total: f64,
    /// Normalized weight w_m.
    pub weight: f64,
    /// α_m = w_m·α_total.
    pub alpha: f64,
    /// `E_m ≥ 1/α_m`: significant by itself.
    pub significant: bool,
    /// Promotion margin δ_m on the same scale as the estimate.
    pub margin: Option<f64>,
    /// `upper < margin`.
    pub non_inferior: bool,
    /// Where the metric stands on the way to promotion.
    #[serde(default)]
    pub verdict: MetricVerdict,
    /// Whether it holds promotion in this stage.
    #[serde(default)]
    pub blocking: bool,
    /// Further canary requests until the upper bound would fall below the margin if the
    /// estimate stayed where it is (statistics.md §5.8); `None` when beyond the margin.
    #[serde(default)]
    pub additional_requests: Option<u64>,
    /// The same in seconds at the current canary traffic.
    #[serde(default)]
    pub eta_secs: Option<f64>,
    /// Why a number is missing, or what threshold was used.
    pub note: Option<String>,
}

/// Status of one guard-rail check at one look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// Within the threshold.
    Pass,
    /// Beyond the threshold, but not confidently worse than the reference (or the threshold).
    Watch,
    /// Beyond the threshold with confidence and confidently worse than the reference by the
    /// margin: the guard's e-value alone reaches 1/α_guard.
    #[serde(alias = "critical")]
    Breach,
    /// The canary is beyond the threshold, and so is the stable: not blamed on the canary.
    StableBreaks,
    /// Not enough data in this phase yet.
    Insufficient,
    /// Not applicable (e.g. no cost reported, no control for cost).
    NotEvaluated,
}

/// One SLO guard at one look.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckReport {
    /// Guard name (`slo:error_rate<=0.01`, `slo:p99<=2000ms`, ...).
    pub check: String,
    /// Canary value (rate, quantile in ms, relative cost change, mean score).
    pub value: Option<f64>,
    /// The reference's value (control, or the frozen baseline), when there is one.
    pub control_value: Option<f64>,
    /// Threshold.
    pub threshold: f64,
    /// Always-valid lower bound of how much worse the canary is than the reference (or the
    /// threshold, without a reference).
    pub confidence_bound: Option<f64>,
    /// Status.
    pub status: CheckStatus,
    /// ln of the guard's term in the e-average (capped at 0 while the canary is not beyond
    /// the threshold with confidence).
    #[serde(default)]
    pub log_e: f64,
    /// The guard's share of α_total.
    #[serde(default)]
    pub alpha: f64,
    /// The stable breaks the threshold too.
    #[serde(default)]
    pub stable_breaks: bool,
    /// The reference used, and "the stable breaks this too" when it does.
    #[serde(default)]
    pub note: Option<String>,
}

/// Classical fixed-sample statistics, for reports only (not valid under repeated looks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassicalReport {
    /// Two-proportion z-test on error rates.
    pub errors: Option<actuator_stats::classical::ProportionTest>,
    /// Welch t-test on ln(latency).
    pub log_latency: Option<actuator_stats::classical::WelchTest>,
}

/// A/B evidence that an arm is better than control on the primary metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenefitReport {
    /// The primary metric.
    pub metric: String,
    /// Estimated improvement (positive = better than control).
    pub improvement: Option<f64>,
    /// ln e of "better than control", carried over phases.
    pub log_e_value: f64,
    /// ln of the threshold (k/α_ab for k arms).
    pub log_threshold: f64,
}

/// Everything known about one treatment arm against control at a look.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmComparison {
    /// The treatment arm.
    pub arm: Arm,
    /// ln of the weighted e-average (all metrics, all phases; when assignment units return
    /// across phases, this phase's own evidence less ln K for K planned phases).
    pub combined_log_e: f64,
    /// Whether assignment units return across phases (`yes`: each phase is judged alone on
    /// its share of the budget; `no`: the phases multiply their evidence; `undetermined`: too
    /// few requests to tell yet, judged as `yes`).
    #[serde(default)]
    pub units_return: actuator_stats::UnitsRecur,
    /// ln(1/α) the average is compared with.
    pub log_threshold: f64,
    /// Always-valid p-value `min(1, 1/E)`.
    pub p_value: f64,
    /// Per-metric evidence.
    pub metrics: Vec<MetricReport>,
    /// SLO guards.
    pub checks: Vec<CheckReport>,
    /// Classical statistics for the report.
    pub classical: ClassicalReport,
    /// A/B benefit evidence.
    pub benefit: Option<BenefitReport>,
}

/// Promotion gates of the current phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gates {
    /// Treatment requests in the phase (smallest treatment arm).
    pub samples: u64,
    /// Required.
    pub min_samples: u64,
    /// Seconds since the phase started (0 if the clock went backwards).
    pub elapsed_secs: i64,
    /// Required.
    pub min_duration_secs: i64,
    /// Phase budget spent.
    pub budget_spent: bool,
}

/// Why a decision was taken, with every number behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    /// Rollout id.
    pub rollout_id: String,
    /// Phase index (0-based).
    pub phase: u32,
    /// Time of the look.
    pub at: DateTime<Utc>,
    /// One-line reason.
    pub rule: String,
    /// Per-arm descriptive numbers.
    pub arms: Vec<ArmSummary>,
    /// Per-treatment comparisons.
    pub comparisons: Vec<ArmComparison>,
    /// ln e of the SRM test (running maximum in the phase), if applicable.
    pub srm_log_e: Option<f64>,
    /// Promotion gates.
    pub gates: Gates,
    /// The role of the current stage.
    #[serde(default)]
    pub role: crate::config::StageRole,
    /// What keeps the rollout in its stage (the longest-projected item), when something does.
    #[serde(default)]
    pub holding: Option<Holding>,
    /// Rollback delays in force at this look, each with its reason (burn-in of the
    /// normal-approximation tests, tail tests waiting for a frozen threshold). The error test,
    /// the SLO guards on rates and the catastrophic guard have none.
    #[serde(default)]
    pub delays: Vec<String>,
}

/// A decision with its explanation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// The decision.
    pub decision: Decision,
    /// Why.
    pub explanation: Explanation,
}

/// One metric of the first compared arm at one look, kept in the health history for charts:
/// single precision and short keys (`m`, `e`, `lo`, `hi`, `mg`, `le`), since a history is
/// part of every stored status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricPoint {
    /// The metric (`errors`, `latency`, `tail:q0.99`, `cost`, `quality`, ...).
    #[serde(rename = "m")]
    pub metric: String,
    /// The pooled estimate (harm direction, the test's scale).
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<f32>,
    /// Always-valid lower bound.
    #[serde(rename = "lo", default, skip_serializing_if = "Option::is_none")]
    pub lower: Option<f32>,
    /// Always-valid upper bound.
    #[serde(rename = "hi", default, skip_serializing_if = "Option::is_none")]
    pub upper: Option<f32>,
    /// The promotion margin.
    #[serde(rename = "mg", default, skip_serializing_if = "Option::is_none")]
    pub margin: Option<f32>,
    /// ln e carried over the phases.
    #[serde(rename = "le")]
    pub log_e_total: f32,
}

/// A compact entry of the bounded health history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthRecord {
    /// Time of the look.
    pub at: DateTime<Utc>,
    /// Phase index.
    pub phase: u32,
    /// The decision.
    pub decision: Decision,
    /// The one-line reason.
    pub rule: String,
    /// Largest ln e over treatment arms.
    pub max_combined_log_e: f64,
    /// Treatment requests in the phase.
    pub samples: u64,
    /// The arm whose metrics follow (the first compared with control).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arm: Option<String>,
    /// ln of the e-value at which the arm's combined evidence rolls it back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_threshold: Option<f64>,
    /// Each metric of that arm at this look.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricPoint>,
}
