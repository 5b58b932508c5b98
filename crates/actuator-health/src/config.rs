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

/// The seed's eight checks, kept as absolute guard rails.
///
/// A check *breaches* when the canary's own number violates the threshold **and** the canary
/// is worse than control beyond `margin` with always-valid confidence (level `alpha`). Without
/// a control, the second condition becomes "worse than the threshold itself with confidence".
/// `consecutive_failures` breaching looks roll back; a *critical* breach (`critical_factor`
/// times the threshold) rolls back at once.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GuardRailConfig {
    /// Turn all guard rails on or off.
    pub enabled: bool,
    /// Minimum success rate (ok / requests).
    pub min_success_rate: f64,
    /// Maximum error rate (errors + timeouts).
    pub max_error_rate: f64,
    /// Maximum p95 latency (ms).
    pub max_p95_ms: f64,
    /// Maximum p99 latency (ms).
    pub max_p99_ms: f64,
    /// Maximum relative cost increase over control (0.10 = +10%).
    pub max_cost_increase: f64,
    /// Minimum mean quality.
    pub min_quality: f64,
    /// Minimum canary (and control) sample size; gates promotion, never rollback.
    pub min_sample_size: u64,
    /// Breaching looks in a row before a rollback.
    pub consecutive_failures: u32,
    /// A breach this many times beyond the threshold is critical (immediate rollback).
    pub critical_factor: f64,
    /// Level of the always-valid confirmation.
    pub alpha: f64,
    /// Comparative margin for success and error rates (absolute).
    pub rate_margin: f64,
    /// Comparative margin on the exceedance of the p95 threshold (absolute).
    pub p95_exceedance_margin: f64,
    /// Comparative margin on the exceedance of the p99 threshold (absolute).
    pub p99_exceedance_margin: f64,
    /// Comparative margin for quality (points).
    pub quality_margin: f64,
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
    /// Guard rails (the seed's checks).
    pub guard_rails: GuardRailConfig,
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

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            alpha_rollback_total: 0.05,
            alpha_promote: 0.05,
            alpha_ab: 0.05,
            power_for_tau: 0.8,
            errors: ErrorMetricConfig {
                weight: 0.5,
                mde_ratio: 2.0,
                tolerance_ratio: 1.0,
                mde_abs: 0.01,
                promote_margin_abs: 0.005,
            },
            latency: LatencyMetricConfig {
                weight: 0.15,
                mde_ratio: 1.2,
                promote_margin_ratio: 1.10,
            },
            latency_tail: TailMetricConfig {
                weight: 0.15,
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
            guard_rails: GuardRailConfig {
                enabled: true,
                min_success_rate: 0.99,
                max_error_rate: 0.01,
                max_p95_ms: 1000.0,
                max_p99_ms: 2000.0,
                max_cost_increase: 0.10,
                min_quality: 3.5,
                min_sample_size: 100,
                consecutive_failures: 3,
                critical_factor: 2.0,
                alpha: 0.01,
                rate_margin: 0.005,
                p95_exceedance_margin: 0.01,
                p99_exceedance_margin: 0.005,
                quality_margin: 0.1,
            },
            hard_guard: HardGuardConfig { enabled: true, error_rate: 0.5, min_requests: 20 },
            srm: SrmConfig { enabled: true, alpha: 0.001, missing_data_min_expected: 50 },
            clt_burn_in: 20,
            timeout_ms: None,
            dedup_capacity: crate::dedup::DEFAULT_DEDUP_CAPACITY,
            history_capacity: 100,
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
        let g = &self.guard_rails;
        prob("guard_rails.min_success_rate", g.min_success_rate)?;
        prob("guard_rails.max_error_rate", g.max_error_rate)?;
        pos("guard_rails.max_p95_ms", g.max_p95_ms)?;
        pos("guard_rails.max_p99_ms", g.max_p99_ms)?;
        pos("guard_rails.max_cost_increase", g.max_cost_increase)?;
        if !(g.min_quality.is_finite() && g.min_quality >= lo && g.min_quality <= hi) {
            return Err(bad("guard_rails.min_quality must lie inside quality.range"));
        }
        if g.consecutive_failures == 0 {
            return Err(bad("guard_rails.consecutive_failures must be at least 1"));
        }
        ratio("guard_rails.critical_factor", g.critical_factor)?;
        prob("guard_rails.alpha", g.alpha)?;
        prob("guard_rails.rate_margin", g.rate_margin)?;
        prob("guard_rails.p95_exceedance_margin", g.p95_exceedance_margin)?;
        prob("guard_rails.p99_exceedance_margin", g.p99_exceedance_margin)?;
        pos("guard_rails.quality_margin", g.quality_margin)?;
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

/// Per-phase overrides of the promotion margins (statistics.md §5.8).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MarginOverrides {
    /// Error-rate margin (absolute).
    pub errors_abs: Option<f64>,
    /// Latency margin (ratio).
    pub latency_ratio: Option<f64>,
    /// Cost margin (ratio).
    pub cost_ratio: Option<f64>,
    /// Quality margin (points).
    pub quality_abs: Option<f64>,
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
        }
    }

    /// A canary phase with canary share `share` (control gets the rest).
    pub fn canary(share: f64) -> Self {
        Self::with_shares(vec![
            ArmShare { arm: Arm::Control, share: 1.0 - share },
            ArmShare { arm: Arm::Canary, share },
        ])
    }

    /// A shadow phase (control and shadow, no shares).
    pub fn shadow() -> Self {
        Self::with_shares(vec![
            ArmShare { arm: Arm::Control, share: 1.0 },
            ArmShare { arm: Arm::Shadow, share: 1.0 },
        ])
    }

    /// A rolling (no-control) phase at `share` of traffic.
    pub fn rolling(share: f64) -> Self {
        Self::with_shares(vec![ArmShare { arm: Arm::Canary, share }])
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

    /// The share of `arm`, if present.
    pub fn share_of(&self, arm: &Arm) -> Option<f64> {
        self.shares.iter().find(|s| &s.arm == arm).map(|s| s.share)
    }
}
