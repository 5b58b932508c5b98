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
    /// Promote `arm`: non-inferior on every metric and the phase minimums are met (canary,
    /// shadow, rolling), or `arm` won the A/B test on the primary metric.
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
    /// The weighted e-average reached 1/α_total (anytime-valid, one budget).
    Sequential,
    /// A guard rail breached for `consecutive_failures` looks in a row.
    GuardRail,
    /// A guard rail breached critically (beyond `critical_factor` × threshold).
    CriticalGuardRail,
    /// The catastrophic hard guard (e.g. ≥ 50% errors over ≥ 20 requests).
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
    /// Estimate in the harm direction (canary − control; control − canary for quality),
    /// on the test's scale (absolute rate, ln ratio, relative change, points).
    pub estimate: Option<f64>,
    /// Always-valid lower bound (rollback side, level α_m).
    pub lower: Option<f64>,
    /// Always-valid upper bound (promotion side, level α_promote, stratified over phases).
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
    /// Why a number is missing, or what threshold was used.
    pub note: Option<String>,
}

/// Status of one guard-rail check at one look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// Within the threshold.
    Pass,
    /// Beyond the threshold, but not confidently worse than control (or the threshold).
    Watch,
    /// Beyond the threshold and confidently worse.
    Breach,
    /// Beyond `critical_factor` × threshold and confidently worse.
    Critical,
    /// Not enough data in this phase (gates promotion only).
    Insufficient,
    /// Not applicable (e.g. no cost reported, no control for cost).
    NotEvaluated,
}

/// One guard-rail check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckReport {
    /// Check name (`success_rate`, `error_rate`, `p95_latency`, `p99_latency`, `quality`,
    /// `cost_increase`, `sample_size`, `statistical_significance`).
    pub check: String,
    /// Canary value.
    pub value: Option<f64>,
    /// Control value, when there is a control.
    pub control_value: Option<f64>,
    /// Threshold.
    pub threshold: f64,
    /// Always-valid lower bound of how much worse the canary is than the reference.
    pub confidence_bound: Option<f64>,
    /// Status.
    pub status: CheckStatus,
    /// Breaching looks in a row.
    pub consecutive: u32,
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
    /// ln of the weighted e-average (all metrics, all phases).
    pub combined_log_e: f64,
    /// ln(1/α) the average is compared with.
    pub log_threshold: f64,
    /// Always-valid p-value `min(1, 1/E)`.
    pub p_value: f64,
    /// Per-metric evidence.
    pub metrics: Vec<MetricReport>,
    /// Guard rails.
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
}

/// A decision with its explanation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// The decision.
    pub decision: Decision,
    /// Why.
    pub explanation: Explanation,
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
}
