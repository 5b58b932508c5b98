//! Configuration in user terms: α, weights, minimum detectable effects, margins, minimums.
//! τ, prior grids and variance estimators are derived, never configured (statistics.md §5.9).

use serde::{Deserialize, Serialize};

use crate::error::{HealthError, Result};
use crate::observation::Arm;

/// How the rollout is analysed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum AnalysisMode {
    /// Canary against a concurrent control; the canary share is set per phase.
    Canary,
    /// The new configuration gets mirrored traffic (arm `shadow`) compared with `control`.
    /// No assignment shares: the SRM guard is off and error events use the proportion mSPRT.
    Shadow,
    /// A/B test: `control` plus ≥ 1 named arms; each arm is tested against control and the
    /// winner is picked on `primary`.
    AbTest {
        /// The metric on which a winner is picked.
        primary: PrimaryMetric,
    },
    /// No concurrent control (rolling strategy): guard rails on the canary's own numbers.
    NoControl,
}

/// The metric an A/B test is decided on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrimaryMetric {
    /// Lower error rate wins.
    ErrorRate,
    /// Lower (geometric-mean) latency wins.
    Latency,
    /// Lower mean cost wins.
    Cost,
    /// Higher mean quality wins.
    Quality,
}

/// Error-rate test (conditional-binomial e-process).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ErrorMetricConfig {
    /// Weight in the false-rollback budget.
    pub weight: f64,
    /// Smallest rate ratio worth catching (sets the prior scale).
    pub mde_ratio: f64,
    /// Roll back only when the rate ratio exceeds this (1.0 = any increase).
    pub tolerance_ratio: f64,
    /// Absolute MDE for the proportion mSPRT used when shares are unknown (shadow mode).
    pub mde_abs: f64,
    /// Promotion margin δ on the absolute error-rate difference.
    pub promote_margin_abs: f64,
}

/// Latency test on the mean of ln(latency).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencyMetricConfig {
    /// Weight in the false-rollback budget.
    pub weight: f64,
    /// Smallest ratio of geometric means worth catching (1.2 = +20%).
    pub mde_ratio: f64,
    /// Promotion margin on the ratio (1.10 = not more than 10% slower).
    pub promote_margin_ratio: f64,
}

/// Tail-latency exceedance tests against thresholds frozen before each phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TailMetricConfig {
    /// Weight in the false-rollback budget, split equally among the sub-tests.
    pub weight: f64,
    /// Control quantiles frozen as thresholds at each phase start.
    pub quantiles: Vec<f64>,
    /// Absolute MDE of the exceedance proportion, one per quantile.
    pub mde_abs: Vec<f64>,
    /// Promotion margin on the exceedance difference, one per quantile.
    pub promote_margin_abs: Vec<f64>,
    /// Extra fixed SLO thresholds (ms) tested the same way ("breaches the SLO more often
    /// than control"), each with its absolute MDE and margin.
    pub slo_thresholds: Vec<SloThreshold>,
}

/// A fixed latency threshold tested for exceedance.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SloThreshold {
    /// Threshold in ms.
    pub threshold_ms: f64,
    /// Absolute MDE of the exceedance proportion.
    pub mde_abs: f64,
    /// Promotion margin.
    pub promote_margin_abs: f64,
}

/// Cost per request: relative difference of means.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CostMetricConfig {
    /// Weight in the false-rollback budget.
    pub weight: f64,
    /// Smallest relative increase worth catching (1.10 = +10%).
    pub mde_ratio: f64,
    /// Roll back only if cost is worse than this ratio (1.0 = any increase).
    pub tolerance_ratio: f64,
    /// Promotion margin (1.05 = at most 5% more expensive).
    pub promote_margin_ratio: f64,
    /// Each request's cost is capped at this value before aggregation (heavy tails).
    pub cap_per_request: Option<f64>,
}

/// Quality score: difference of means, harm = lower.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QualityMetricConfig {
    /// Weight in the false-rollback budget.
    pub weight: f64,
    /// Valid score range (inclusive).
    pub range: (f64, f64),
    /// Smallest drop worth catching, in score points.
    pub mde_abs: f64,
    /// Promotion margin in score points.
    pub promote_margin_abs: f64,
    /// When `false`, a phase without any judged request does not block promotion.
    pub required_for_promotion: bool,
}

/// What an SLO guard watches.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum GuardKind {
    /// Error events (errors + timeouts) per request must stay at or below `threshold`.
    ErrorRate,
    /// Successful requests per request must stay at or above `threshold`.
    SuccessRate,
    /// The `quantile` of latency must stay at or below `threshold` ms; tested as "the share
    /// of requests above `threshold` ms stays at or below 1 − `quantile`".
    Latency {
        /// The quantile (0.95 for p95).
        quantile: f64,
    },
    /// Mean cost per request must not rise more than `threshold` (0.10 = +10%) over the
    /// reference (control, or the frozen baseline).
    CostIncrease,
    /// Mean quality score must stay at or above `threshold`.
    Quality,
}

/// One SLO guard: an absolute threshold of the seed's checks, tested with anytime-valid
/// confidence inside the rollback budget.
///
/// The guard's e-value counts towards a rollback only when the canary is beyond `threshold`
/// with anytime-valid confidence **and**, where a reference exists (control, or the stable's
/// numbers frozen from the last compared phase), the canary is confidently worse than the
/// reference by more than `margin`. A threshold the stable itself breaks is reported as such.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SloGuard {
    /// What is watched.
    #[serde(flatten)]
    pub kind: GuardKind,
    /// The threshold (a rate, ms, a relative increase, or score points by kind).
    pub threshold: f64,
    /// How much worse than the reference the canary must be (absolute rate, share of
    /// requests above the latency threshold, or score points; unused for cost, whose
    /// threshold is already relative to the reference).
    pub margin: f64,
}

impl SloGuard {
    /// The guard's name in reports and in the ledger (`slo:error_rate<=0.01`, ...).
    pub fn key(&self) -> String {
        match self.kind {
            GuardKind::ErrorRate => format!("slo:error_rate<={}", self.threshold),
            GuardKind::SuccessRate => format!("slo:success_rate>={}", self.threshold),
            GuardKind::Latency { quantile } => {
                format!("slo:p{}<={}ms", quantile_label(quantile), self.threshold)
            }
            GuardKind::CostIncrease => format!("slo:cost_increase<={}", self.threshold),
            GuardKind::Quality => format!("slo:quality>={}", self.threshold),
        }
    }
}

fn quantile_label(q: f64) -> String {
    let pct = q * 100.0;
    if (pct - pct.round()).abs() < 1e-9 { format!("{pct:.0}") } else { format!("{pct}") }
}

/// The SLO guards and the share of the rollback budget they spend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloGuardConfig {
    /// Turn all SLO guards on or off.
    pub enabled: bool,
    /// Share of α_total carved out for the guards (split equally among them); the
    /// comparative metrics share the rest by their weights.
    pub weight: f64,
    /// The guards (at most 16).
    pub guards: Vec<SloGuard>,
}

impl SloGuardConfig {
    /// The seed's checks with the seed's thresholds: errors ≤ 1%, success ≥ 99%, p95 ≤ 1000
    /// ms, p99 ≤ 2000 ms, cost ≤ +10% over the reference, quality ≥ 3.5.
    pub fn seed() -> Self {
        Self {
            enabled: true,
            weight: 0.1,
            guards: vec![
                SloGuard { kind: GuardKind::ErrorRate, threshold: 0.01, margin: 0.005 },
                SloGuard { kind: GuardKind::SuccessRate, threshold: 0.99, margin: 0.005 },
                SloGuard {
                    kind: GuardKind::Latency { quantile: 0.95 },
                    threshold: 1000.0,
                    margin: 0.01,
                },
                SloGuard {
                    kind: GuardKind::Latency { quantile: 0.99 },
                    threshold: 2000.0,
                    margin: 0.005,
                },
                SloGuard { kind: GuardKind::CostIncrease, threshold: 0.10, margin: 0.0 },
                SloGuard { kind: GuardKind::Quality, threshold: 3.5, margin: 0.1 },
            ],
        }
    }

    /// Adds `guard` unless a guard with the same key exists.
    pub fn add(&mut self, guard: SloGuard) {
        let key = guard.key();
        if !self.guards.iter().any(|g| g.key() == key) {
            self.guards.push(guard);
        }
    }

    /// The guards that take part (none when disabled or given no weight).
    pub fn active(&self) -> &[SloGuard] {
        if self.enabled && self.weight > 0.0 { &self.guards } else { &[] }
    }
}

/// Catastrophic hard guard: not statistical, for disasters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HardGuardConfig {
    /// On or off.
    pub enabled: bool,
    /// Error rate that trips it.
    pub error_rate: f64,
    /// Over at least this many requests (the last `min_requests`, or the whole phase); ≤ 128.
    pub min_requests: u32,
}

/// Data-quality guards.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SrmConfig {
    /// On or off.
    pub enabled: bool,
    /// Halt when the SRM e-value reaches 1/alpha.
    pub alpha: f64,
    /// Halt with missing data when an arm expected at least this many requests has none.
    pub missing_data_min_expected: u64,
}

/// Full health-monitor configuration. `Default` gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthConfig {
    /// P(any false rollback over the whole rollout), all metrics, all phases.
    pub alpha_rollback_total: f64,
    /// Per-metric level of each promotion gate (intersection–union; no correction needed).
    pub alpha_promote: f64,
    /// Level for declaring an A/B winner (split over the arms).
    pub alpha_ab: f64,
    /// Power used only to turn MDEs into τ.
    pub power_for_tau: f64,
    /// Error-rate test.
    pub errors: ErrorMetricConfig,
    /// Latency test.
    pub latency: LatencyMetricConfig,
    /// Tail tests.
    pub latency_tail: TailMetricConfig,
    /// Cost test.
    pub cost: CostMetricConfig,
    /// Quality test.
    pub quality: QualityMetricConfig,
    /// SLO guards (the seed's checks and triggers), inside the rollback budget.
    #[serde(default = "SloGuardConfig::seed")]
    pub slo_guards: SloGuardConfig,
    /// Requests per arm (canary and control) before any promotion; gates promotion only.
    #[serde(default = "default_min_sample_size")]
    pub min_sample_size: u64,
    /// Catastrophic guard.
    pub hard_guard: HardGuardConfig,
    /// SRM and missing-data guards.
    pub srm: SrmConfig,
    /// Values per arm before a normal-approximation test (means) may contribute evidence.
    /// The exact error test and the hard guard are not affected.
    pub clt_burn_in: u64,
    /// Request timeout (ms): timeouts are recorded at least at this latency.
    pub timeout_ms: Option<f64>,
    /// Remembered request ids for de-duplication.
    pub dedup_capacity: usize,
    /// Decisions kept in the health history.
    pub history_capacity: usize,
    /// Relative accuracy of the quantile sketches.
    pub sketch_relative_accuracy: f64,
    /// Maximum bins per sketch.
    pub sketch_max_bins: u32,
}

const fn default_min_sample_size() -> u64 {
    100
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            alpha_rollback_total: 0.05,
            alpha_promote: 0.05,
            alpha_ab: 0.05,
            power_for_tau: 0.8,
            errors: ErrorMetricConfig {
                weight: 0.4,
                mde_ratio: 2.0,
                tolerance_ratio: 1.0,
                mde_abs: 0.01,
                promote_margin_abs: 0.005,
            },
            latency: LatencyMetricConfig {
                weight: 0.2,
                mde_ratio: 1.2,
                promote_margin_ratio: 1.10,
            },
            latency_tail: TailMetricConfig {
                weight: 0.2,
                quantiles: vec![0.95, 0.99],
                mde_abs: vec![0.04, 0.01],
                promote_margin_abs: vec![0.02, 0.005],
                slo_thresholds: Vec::new(),
            },
            cost: CostMetricConfig {
                weight: 0.1,
                mde_ratio: 1.10,
                tolerance_ratio: 1.0,
                promote_margin_ratio: 1.05,
                cap_per_request: None,
            },
            quality: QualityMetricConfig {
                weight: 0.1,
                range: (1.0, 5.0),
                mde_abs: 0.1,
                promote_margin_abs: 0.1,
                required_for_promotion: false,
            },
            slo_guards: SloGuardConfig::seed(),
            min_sample_size: 100,
            hard_guard: HardGuardConfig { enabled: true, error_rate: 0.5, min_requests: 20 },
            srm: SrmConfig { enabled: true, alpha: 0.001, missing_data_min_expected: 50 },
            clt_burn_in: 20,
            timeout_ms: None,
            dedup_capacity: crate::dedup::DEFAULT_DEDUP_CAPACITY,
            history_capacity: 64,
            sketch_relative_accuracy: actuator_stats::sketch::DEFAULT_RELATIVE_ACCURACY,
            sketch_max_bins: actuator_stats::sketch::DEFAULT_MAX_BINS,
        }
    }
}

fn bad(msg: impl Into<String>) -> HealthError {
    HealthError::InvalidConfig(msg.into())
}

fn prob(name: &str, v: f64) -> Result<()> {
    if v.is_finite() && v > 0.0 && v < 1.0 {
        Ok(())
    } else {
        Err(bad(format!("{name} = {v}; use a value strictly between 0 and 1")))
    }
}

fn pos(name: &str, v: f64) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(bad(format!("{name} = {v}; use a finite value above 0")))
    }
}

fn ratio(name: &str, v: f64) -> Result<()> {
    if v.is_finite() && v > 1.0 {
        Ok(())
    } else {
        Err(bad(format!("{name} = {v}; use a ratio above 1 (1.1 = +10%)")))
    }
}

impl SloGuard {
    /// Checks the threshold and margin against the kind's range (`quality_range` bounds a
    /// quality threshold).
    ///
    /// # Errors
    /// [`HealthError::InvalidConfig`] naming the guard.
    pub fn check(&self, quality_range: (f64, f64)) -> Result<()> {
        self.validate(0, quality_range)
    }

    fn validate(&self, i: usize, quality_range: (f64, f64)) -> Result<()> {
        let name = format!("slo_guards.guards[{i}]");
        let t = self.threshold;
        let ok = match self.kind {
            GuardKind::ErrorRate | GuardKind::SuccessRate => t.is_finite() && t > 0.0 && t < 1.0,
            GuardKind::Latency { quantile } => {
                prob(&format!("{name}.quantile"), quantile)?;
                t.is_finite() && t > 0.0
            }
            GuardKind::CostIncrease => t.is_finite() && t > 0.0 && t <= 100.0,
            GuardKind::Quality => t.is_finite() && t >= quality_range.0 && t <= quality_range.1,
        };
        if !ok {
            return Err(bad(format!(
                "{name}.threshold = {t} is out of range for {:?} (rates in (0, 1), latency in ms > 0, cost increase in (0, 100], quality inside quality.range)",
                self.kind
            )));
        }
        let m = self.margin;
        let margin_ok = match self.kind {
            GuardKind::CostIncrease => m.is_finite() && m >= 0.0,
            GuardKind::Quality => m.is_finite() && m > 0.0,
            _ => m.is_finite() && m > 0.0 && m < 1.0,
        };
        if !margin_ok {
            return Err(bad(format!(
                "{name}.margin = {m}; use a value in (0, 1) for rates and latency shares, > 0 for quality"
            )));
        }
        Ok(())
    }
}

impl HealthConfig {
    /// Checks every field; the message names the field and the accepted range.
    ///
    /// # Errors
    /// [`HealthError::InvalidConfig`].
    pub fn validate(&self) -> Result<()> {
        prob("alpha_rollback_total", self.alpha_rollback_total)?;
        prob("alpha_promote", self.alpha_promote)?;
        prob("alpha_ab", self.alpha_ab)?;
        prob("power_for_tau", self.power_for_tau)?;
        pos("errors.weight", self.errors.weight)?;
        ratio("errors.mde_ratio", self.errors.mde_ratio)?;
        if !(self.errors.tolerance_ratio.is_finite() && self.errors.tolerance_ratio >= 1.0) {
            return Err(bad("errors.tolerance_ratio must be >= 1.0 (1.0 = no tolerance)"));
        }
        prob("errors.mde_abs", self.errors.mde_abs)?;
        prob("errors.promote_margin_abs", self.errors.promote_margin_abs)?;
        pos("latency.weight", self.latency.weight)?;
        ratio("latency.mde_ratio", self.latency.mde_ratio)?;
        ratio("latency.promote_margin_ratio", self.latency.promote_margin_ratio)?;
        let t = &self.latency_tail;
        pos("latency_tail.weight", t.weight)?;
        if t.quantiles.len() != t.mde_abs.len() || t.quantiles.len() != t.promote_margin_abs.len() {
            return Err(bad(
                "latency_tail.quantiles, mde_abs and promote_margin_abs need one entry each per quantile",
            ));
        }
        if t.quantiles.len() + t.slo_thresholds.len() > 6 {
            return Err(bad("latency_tail: use at most 6 quantiles and SLO thresholds in total"));
        }
        for ((q, m), d) in t.quantiles.iter().zip(&t.mde_abs).zip(&t.promote_margin_abs) {
            prob("latency_tail.quantiles[]", *q)?;
            prob("latency_tail.mde_abs[]", *m)?;
            prob("latency_tail.promote_margin_abs[]", *d)?;
        }
        for s in &t.slo_thresholds {
            pos("latency_tail.slo_thresholds[].threshold_ms", s.threshold_ms)?;
            prob("latency_tail.slo_thresholds[].mde_abs", s.mde_abs)?;
            prob("latency_tail.slo_thresholds[].promote_margin_abs", s.promote_margin_abs)?;
        }
        pos("cost.weight", self.cost.weight)?;
        ratio("cost.mde_ratio", self.cost.mde_ratio)?;
        ratio("cost.promote_margin_ratio", self.cost.promote_margin_ratio)?;
        if !(self.cost.tolerance_ratio.is_finite() && self.cost.tolerance_ratio >= 1.0) {
            return Err(bad("cost.tolerance_ratio must be >= 1.0 (1.0 = no tolerance)"));
        }
        if let Some(c) = self.cost.cap_per_request {
            pos("cost.cap_per_request", c)?;
        }
        pos("quality.weight", self.quality.weight)?;
        let (lo, hi) = self.quality.range;
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return Err(bad("quality.range must be (low, high) with low < high, e.g. (1, 5)"));
        }
        pos("quality.mde_abs", self.quality.mde_abs)?;
        pos("quality.promote_margin_abs", self.quality.promote_margin_abs)?;
        let g = &self.slo_guards;
        if !(g.weight.is_finite() && g.weight >= 0.0 && g.weight < 1.0) {
            return Err(bad(format!("slo_guards.weight = {}; use a value in [0, 1)", g.weight)));
        }
        if g.guards.len() > 16 {
            return Err(bad("slo_guards.guards: use at most 16 guards"));
        }
        for (i, s) in g.guards.iter().enumerate() {
            s.validate(i, self.quality.range)?;
            if g.guards[..i].iter().any(|o| o.key() == s.key()) {
                return Err(bad(format!("slo_guards.guards[{i}] repeats the guard {}", s.key())));
            }
        }
        prob("hard_guard.error_rate", self.hard_guard.error_rate)?;
        if !(1..=128).contains(&self.hard_guard.min_requests) {
            return Err(bad("hard_guard.min_requests must be between 1 and 128"));
        }
        prob("srm.alpha", self.srm.alpha)?;
        if let Some(t) = self.timeout_ms {
            pos("timeout_ms", t)?;
        }
        if self.dedup_capacity == 0 || self.dedup_capacity > 1 << 22 {
            return Err(bad("dedup_capacity must be between 1 and 4194304"));
        }
        if self.history_capacity == 0 || self.history_capacity > 10_000 {
            return Err(bad("history_capacity must be between 1 and 10000"));
        }
        prob("sketch_relative_accuracy", self.sketch_relative_accuracy)?;
        if !(128..=65_536).contains(&self.sketch_max_bins) {
            return Err(bad("sketch_max_bins must be between 128 and 65536"));
        }
        Ok(())
    }
}

/// One arm's assignment share in a phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmShare {
    /// The arm.
    pub arm: Arm,
    /// Its share of assigned traffic (ignored in shadow mode).
    pub share: f64,
}

/// What a stage is for (statistics.md §5.8).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageRole {
    /// Small shares (below 10%): catch crashes and large regressions. Coarse promotion
    /// margins (errors +1 pp or ×2, latency ×1.2, cost ×1.2, tails at their MDE); quality is
    /// never required; a metric that cannot reach a verdict within the stage's budget does
    /// not block (policy `ignore`).
    Smoke,
    /// Larger shares: prove fine non-inferiority (errors +0.5 pp, latency ×1.1, cost +5%,
    /// quality −0.1, tails at their configured margins); a metric that cannot reach a verdict
    /// within the budget blocks (policy `block`).
    #[default]
    Prove,
    /// No concurrent control (the 100% step, rolling, immediate, blue-green): watch for
    /// regressions against the stable's frozen numbers (or absolute SLOs) and pass once the
    /// minimums are met without an alarm. Nothing is proven here; it was proven on the way up.
    Watch,
}

impl StageRole {
    /// The default role of a canary stage at `share` of traffic: smoke below 10%, prove
    /// below 100%, watch at 100%.
    pub fn for_share(share: f64) -> Self {
        if share >= 1.0 {
            Self::Watch
        } else if share < 0.10 {
            Self::Smoke
        } else {
            Self::Prove
        }
    }

    /// The default policy for metrics that cannot reach a verdict within the stage's budget.
    pub const fn default_unreachable(self) -> UnreachablePolicy {
        match self {
            Self::Smoke | Self::Watch => UnreachablePolicy::Ignore,
            Self::Prove => UnreachablePolicy::Block,
        }
    }
}

/// What a metric that cannot reach a verdict within the stage's budget does to promotion.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnreachablePolicy {
    /// It holds the stage (the stage ends inconclusive when its budget is spent).
    #[default]
    Block,
    /// It is reported as unreachable and does not hold the stage, provided its estimate is
    /// below the margin (a metric whose estimate is at or beyond its margin always holds).
    Ignore,
    /// The stage decides within its minimums and passes on what they did not prove: a later
    /// prove stage shows it with the evidence pooled across stages. A metric not yet
    /// non-inferior when the minimums are met is reported `deferred` and does not hold the
    /// stage, provided its estimate is below the margin. For prove stages that another prove
    /// stage follows; the engine makes it their default.
    Defer,
}

/// Per-phase overrides of the promotion margins (statistics.md §5.8). `None` takes the
/// stage role's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MarginOverrides {
    /// Error-rate margin (absolute).
    pub errors_abs: Option<f64>,
    /// Error-rate margin as a ratio of the control's rate (2.0 = ×2); the margin used is the
    /// larger of the absolute and the relative one.
    #[serde(default)]
    pub errors_ratio: Option<f64>,
    /// Latency margin (ratio).
    pub latency_ratio: Option<f64>,
    /// Cost margin (ratio).
    pub cost_ratio: Option<f64>,
    /// Quality margin (points).
    pub quality_abs: Option<f64>,
}

/// The promotion margins a stage uses, resolved from its role, the configuration and the
/// overrides, each on its test's scale.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ResolvedMargins {
    /// Absolute error-rate margin.
    pub errors_abs: f64,
    /// Relative error-rate margin (ratio), if any.
    pub errors_ratio: Option<f64>,
    /// ln of the latency ratio.
    pub latency_ln: f64,
    /// Relative cost margin (0.05 = +5%).
    pub cost_rel: f64,
    /// Quality margin in points.
    pub quality_abs: f64,
    /// Tail margins are raised to the tail MDEs (smoke stages).
    pub tail_at_mde: bool,
}

impl ResolvedMargins {
    /// The error-rate margin at a control rate of `control_rate`: the larger of the absolute
    /// margin and `(ratio − 1) × control_rate`.
    pub fn errors_at(&self, control_rate: f64) -> f64 {
        let rel = self.errors_ratio.map_or(0.0, |r| (r - 1.0) * control_rate.max(0.0));
        self.errors_abs.max(rel)
    }
}

/// One phase of the rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseConfig {
    /// Assignment shares per arm (must sum to 1 except in shadow mode).
    pub shares: Vec<ArmShare>,
    /// Canary requests needed before promotion (never gates rollback).
    pub min_samples: u64,
    /// Seconds needed before promotion (never gates rollback).
    pub min_duration_secs: i64,
    /// Canary requests after which the phase is inconclusive.
    pub max_samples: Option<u64>,
    /// Seconds after which the phase is inconclusive.
    pub max_duration_secs: Option<i64>,
    /// Promotion margin overrides for this phase.
    pub margins: MarginOverrides,
    /// Tail thresholds (ms), one per configured quantile, for phases with no previous control
    /// sketch (e.g. from a pre-rollout baseline window). Ignored when a previous phase exists.
    pub baseline_tail_thresholds_ms: Option<Vec<f64>>,
    /// What the stage is for.
    #[serde(default)]
    pub role: StageRole,
    /// What a metric that cannot reach a verdict within the budget does; `None` takes the
    /// role's default.
    #[serde(default)]
    pub unreachable: Option<UnreachablePolicy>,
}

impl PhaseConfig {
    fn with_shares(shares: Vec<ArmShare>) -> Self {
        Self {
            shares,
            min_samples: 1000,
            min_duration_secs: 0,
            max_samples: None,
            max_duration_secs: None,
            margins: MarginOverrides::default(),
            baseline_tail_thresholds_ms: None,
            role: StageRole::Prove,
            unreachable: None,
        }
    }

    /// A canary phase with canary share `share` (control gets the rest), with the role
    /// [`StageRole::for_share`] gives.
    pub fn canary(share: f64) -> Self {
        Self::with_shares(vec![
            ArmShare { arm: Arm::Control, share: 1.0 - share },
            ArmShare { arm: Arm::Canary, share },
        ])
        .role(StageRole::for_share(share))
    }

    /// A shadow phase (control and shadow, no shares).
    pub fn shadow() -> Self {
        Self::with_shares(vec![
            ArmShare { arm: Arm::Control, share: 1.0 },
            ArmShare { arm: Arm::Shadow, share: 1.0 },
        ])
    }

    /// A rolling (no-control) phase at `share` of traffic (role [`StageRole::Watch`]).
    pub fn rolling(share: f64) -> Self {
        Self::with_shares(vec![ArmShare { arm: Arm::Canary, share }]).role(StageRole::Watch)
    }

    /// An A/B phase: `control_share` for control, the named arms share the rest equally.
    pub fn ab(control_share: f64, arms: &[&str]) -> Self {
        let each = (1.0 - control_share) / arms.len().max(1) as f64;
        let mut shares = vec![ArmShare { arm: Arm::Control, share: control_share }];
        shares.extend(
            arms.iter().map(|a| ArmShare { arm: Arm::Named((*a).to_string()), share: each }),
        );
        Self::with_shares(shares)
    }

    /// Sets the promotion minimums.
    #[must_use]
    pub const fn min(mut self, samples: u64, duration_secs: i64) -> Self {
        self.min_samples = samples;
        self.min_duration_secs = duration_secs;
        self
    }

    /// Sets the phase budget.
    #[must_use]
    pub const fn max(mut self, samples: Option<u64>, duration_secs: Option<i64>) -> Self {
        self.max_samples = samples;
        self.max_duration_secs = duration_secs;
        self
    }

    /// Sets the stage role.
    #[must_use]
    pub const fn role(mut self, role: StageRole) -> Self {
        self.role = role;
        self
    }

    /// Sets the margin overrides.
    #[must_use]
    pub const fn margins(mut self, margins: MarginOverrides) -> Self {
        self.margins = margins;
        self
    }

    /// The policy for metrics that cannot reach a verdict within the budget.
    pub fn unreachable_policy(&self) -> UnreachablePolicy {
        self.unreachable.unwrap_or_else(|| self.role.default_unreachable())
    }

    /// The promotion margins of this stage.
    pub fn resolved_margins(&self, cfg: &HealthConfig) -> ResolvedMargins {
        let o = self.margins;
        let (errors_abs, errors_ratio, lat, cost, quality, tail_at_mde) = match self.role {
            StageRole::Smoke => {
                (0.01_f64.max(cfg.errors.promote_margin_abs), Some(2.0), 1.2, 1.2, 0.25, true)
            }
            StageRole::Prove | StageRole::Watch => (
                cfg.errors.promote_margin_abs,
                None,
                cfg.latency.promote_margin_ratio,
                cfg.cost.promote_margin_ratio,
                cfg.quality.promote_margin_abs,
                false,
            ),
        };
        ResolvedMargins {
            errors_abs: o.errors_abs.unwrap_or(errors_abs),
            errors_ratio: o.errors_ratio.or(errors_ratio),
            latency_ln: o.latency_ratio.unwrap_or(lat).ln(),
            cost_rel: o.cost_ratio.unwrap_or(cost) - 1.0,
            quality_abs: o.quality_abs.unwrap_or(quality),
            tail_at_mde,
        }
    }

    /// The share of `arm`, if present.
    pub fn share_of(&self, arm: &Arm) -> Option<f64> {
        self.shares.iter().find(|s| &s.arm == arm).map(|s| s.share)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_roles_by_share_and_their_margins() {
        let cfg = HealthConfig::default();
        assert_eq!(PhaseConfig::canary(0.01).role, StageRole::Smoke);
        assert_eq!(PhaseConfig::canary(0.05).role, StageRole::Smoke);
        assert_eq!(PhaseConfig::canary(0.25).role, StageRole::Prove);
        assert_eq!(PhaseConfig::rolling(1.0).role, StageRole::Watch);
        let smoke = PhaseConfig::canary(0.01).resolved_margins(&cfg);
        // errors: +1 pp or ×2, whichever is coarser
        assert!((smoke.errors_at(0.003) - 0.01).abs() < 1e-12);
        assert!((smoke.errors_at(0.05) - 0.05).abs() < 1e-12);
        assert!((smoke.latency_ln - 1.2f64.ln()).abs() < 1e-12);
        assert_eq!(PhaseConfig::canary(0.01).unreachable_policy(), UnreachablePolicy::Ignore);
        let prove = PhaseConfig::canary(0.25).resolved_margins(&cfg);
        assert!((prove.errors_at(0.05) - 0.005).abs() < 1e-12);
        assert!((prove.latency_ln - 1.1f64.ln()).abs() < 1e-12);
        assert!((prove.cost_rel - 0.05).abs() < 1e-12);
        assert_eq!(PhaseConfig::canary(0.25).unreachable_policy(), UnreachablePolicy::Block);
        let overridden = PhaseConfig::canary(0.25)
            .margins(MarginOverrides { errors_ratio: Some(1.5), ..MarginOverrides::default() })
            .resolved_margins(&cfg);
        assert!((overridden.errors_at(0.02) - 0.01).abs() < 1e-12);
    }

    #[test]
    fn default_weights_follow_the_specification_and_guards_are_checked() {
        let cfg = HealthConfig::default();
        assert_eq!(
            (cfg.errors.weight, cfg.latency.weight, cfg.latency_tail.weight, cfg.cost.weight),
            (0.4, 0.2, 0.2, 0.1)
        );
        cfg.validate().unwrap();
        let mut dup = cfg.clone();
        let g = dup.slo_guards.guards[0];
        dup.slo_guards.guards.push(g);
        assert!(dup.validate().unwrap_err().to_string().contains("repeats"));
        let mut bad = cfg;
        bad.slo_guards.guards[0].threshold = 1.5;
        assert!(bad.validate().unwrap_err().to_string().contains("slo_guards.guards[0].threshold"));
        let mut set = SloGuardConfig::seed();
        let n = set.guards.len();
        set.add(SloGuard { kind: GuardKind::ErrorRate, threshold: 0.01, margin: 0.005 });
        assert_eq!(set.guards.len(), n, "same key is not added twice");
    }
}
