//! Estimators θ̂ and their variances for the comparisons in statistics.md §5.10.
//!
//! Every function returns the difference **canary minus control** (or canary minus a fixed
//! reference); flip it with [`Estimate::flipped`] for "higher is better" metrics.

use serde::{Deserialize, Serialize};

use crate::error::{Result, StatsError, check_finite, check_positive};
use crate::msprt::Estimate;
use crate::running::RunningStats;

fn check_counts(x: u64, n: u64, arm: &str) -> Result<()> {
    if x > n {
        return Err(StatsError::InconsistentCounts(format!("{arm}: {x} events in {n} trials")));
    }
    Ok(())
}

/// Difference of means with the Welch variance `s_t²/n_t + s_c²/n_c`.
///
/// # Errors
/// [`StatsError::NotEnoughData`] when an arm has fewer than two values.
pub fn mean_difference(canary: &RunningStats, control: &RunningStats) -> Result<Estimate> {
    let (Some(vt), Some(vc)) = (canary.variance_of_mean(), control.variance_of_mean()) else {
        return Err(StatsError::NotEnoughData("each arm needs at least two values"));
    };
    let (Some(mt), Some(mc)) = (canary.mean(), control.mean()) else {
        return Err(StatsError::NotEnoughData("each arm needs at least two values"));
    };
    Estimate::new(mt - mc, vt + vc)
}

/// Relative difference of means `ȳ_t/ȳ_c − 1` with the delta-method variance
/// `s_t²/(n_t ȳ_c²) + ȳ_t² s_c²/(n_c ȳ_c⁴)` (statistics.md §5.5).
///
/// # Errors
/// [`StatsError::NotEnoughData`] with fewer than two values per arm or a control mean ≤ 0.
pub fn relative_mean_difference(canary: &RunningStats, control: &RunningStats) -> Result<Estimate> {
    let (Some(vt), Some(vc)) = (canary.variance_of_mean(), control.variance_of_mean()) else {
        return Err(StatsError::NotEnoughData("each arm needs at least two values"));
    };
    let (Some(mt), Some(mc)) = (canary.mean(), control.mean()) else {
        return Err(StatsError::NotEnoughData("each arm needs at least two values"));
    };
    if mc <= 0.0 {
        return Err(StatsError::NotEnoughData("the control mean must be above zero"));
    }
    Estimate::new(mt / mc - 1.0, vt / (mc * mc) + mt * mt * vc / (mc * mc * mc * mc))
}

/// Difference of proportions with the smoothed **pooled** variance, correct under H0: θ = 0:
/// `p̄ = (x_t + x_c + ½)/(n_t + n_c + 1)`, `V0 = p̄(1−p̄)(1/n_t + 1/n_c)`. Use it for rollback.
///
/// # Errors
/// [`StatsError::NotEnoughData`] when an arm is empty, [`StatsError::InconsistentCounts`] when x > n.
pub fn proportion_difference_pooled(x_t: u64, n_t: u64, x_c: u64, n_c: u64) -> Result<Estimate> {
    check_counts(x_t, n_t, "canary")?;
    check_counts(x_c, n_c, "control")?;
    if n_t == 0 || n_c == 0 {
        return Err(StatsError::NotEnoughData("each arm needs at least one trial"));
    }
    let (nt, nc) = (n_t as f64, n_c as f64);
    let pbar = (x_t as f64 + x_c as f64 + 0.5) / (nt + nc + 1.0);
    Estimate::new(x_t as f64 / nt - x_c as f64 / nc, pbar * (1.0 - pbar) * (1.0 / nt + 1.0 / nc))
}

/// Difference of proportions with the variance evaluated **under the tested null**
/// `p_t = p_c + δ` (statistics.md §5.3). Use it for promotion (`U < δ`) and for any test of
/// "worse by more than δ". Using the pooled variance here gives 7–14% false promotion.
///
/// # Errors
/// As [`proportion_difference_pooled`], plus [`StatsError::NotFinite`] for a non-finite δ.
pub fn proportion_difference_under_margin(
    x_t: u64,
    n_t: u64,
    x_c: u64,
    n_c: u64,
    delta: f64,
) -> Result<Estimate> {
    check_counts(x_t, n_t, "canary")?;
    check_counts(x_c, n_c, "control")?;
    check_finite("delta", delta)?;
    if n_t == 0 || n_c == 0 {
        return Err(StatsError::NotEnoughData("each arm needs at least one trial"));
    }
    let (nt, nc) = (n_t as f64, n_c as f64);
    let eps: f64 = 1e-6;
    let lo = eps.max(-delta + eps);
    let hi = (1.0 - delta - eps).min(1.0 - eps);
    let raw = (x_t as f64 + x_c as f64 - nt * delta + 0.5) / (nt + nc + 1.0);
    let pc = if lo <= hi { raw.clamp(lo, hi) } else { 0.5 };
    let pt = pc + delta;
    Estimate::new(x_t as f64 / nt - x_c as f64 / nc, pc * (1.0 - pc) / nc + pt * (1.0 - pt) / nt)
}

/// One-sample proportion against a fixed reference `p0`, variance evaluated under `p0`:
/// θ̂ = x/n − p0, V = p0(1−p0)/n. Used when there is no control arm.
///
/// # Errors
/// [`StatsError::NotEnoughData`] for n = 0, [`StatsError::InvalidProbability`] for p0 ∉ (0, 1).
pub fn proportion_vs_reference(x: u64, n: u64, p0: f64) -> Result<Estimate> {
    check_counts(x, n, "arm")?;
    let p0 = crate::error::check_probability("reference proportion", p0)?;
    if n == 0 {
        return Err(StatsError::NotEnoughData("the arm needs at least one trial"));
    }
    Estimate::new(x as f64 / n as f64 - p0, p0 * (1.0 - p0) / n as f64)
}

/// One-sample mean against a fixed reference `m0`: θ̂ = ȳ − m0, V = s²/n.
///
/// # Errors
/// [`StatsError::NotEnoughData`] with fewer than two values.
pub fn mean_vs_reference(stats: &RunningStats, m0: f64) -> Result<Estimate> {
    check_finite("reference mean", m0)?;
    match (stats.mean(), stats.variance_of_mean()) {
        (Some(m), Some(v)) => Estimate::new(m - m0, v),
        _ => Err(StatsError::NotEnoughData("the arm needs at least two values")),
    }
}

/// Information-weighted combination of independent per-stage estimates:
/// `θ̂ = Σ I_s θ̂_s / Σ I_s`, `V = 1/Σ I_s`, `I_s = 1/V_s` (statistics.md §5.2).
///
/// Holds two numbers, whatever the number of stages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Stratified {
    info: f64,
    info_theta: f64,
}

impl Stratified {
    /// No stages yet.
    pub const fn new() -> Self {
        Self { info: 0.0, info_theta: 0.0 }
    }

    /// Adds one stage's estimate; estimates with a non-positive variance are ignored.
    pub fn add(&mut self, est: Estimate) {
        if est.variance > 0.0 && est.variance.is_finite() && est.theta.is_finite() {
            let i = 1.0 / est.variance;
            self.info += i;
            self.info_theta += i * est.theta;
        }
    }

    /// The combined estimate including `current` (not stored), or `None` without information.
    pub fn combined_with(&self, current: Option<Estimate>) -> Option<Estimate> {
        let mut s = *self;
        if let Some(c) = current {
            s.add(c);
        }
        (s.info > 0.0).then(|| Estimate { theta: s.info_theta / s.info, variance: 1.0 / s.info })
    }

    /// Total information Σ I_s.
    pub const fn information(&self) -> f64 {
        self.info
    }
}

/// Ratio of two means expressed as a relative change, e.g. 0.10 for +10%.
///
/// # Errors
/// [`StatsError::NotPositive`] when the reference is not positive.
pub fn relative_change(value: f64, reference: f64) -> Result<f64> {
    let r = check_positive("reference", reference)?;
    Ok(check_finite("value", value)? / r - 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooled_golden_one_percent_share() {
        let e = proportion_difference_pooled(12, 600, 6000, 594_000).unwrap();
        assert!((e.theta - 0.009_898_99).abs() < 1e-8);
        assert!((e.variance - 1.669_947e-5).abs() < 1e-10);
    }

    #[test]
    fn margin_variance_matches_reference_script() {
        // canary_sim.promo_err formula, 20/2000 vs 20/2000, delta = 0.005
        let e = proportion_difference_under_margin(20, 2000, 20, 2000, 0.005).unwrap();
        assert!((e.variance - 1.001_436_718_972_593_7e-5).abs() < 1e-15);
        assert!(proportion_difference_pooled(3, 2, 0, 1).is_err());
    }

    #[test]
    fn welch_and_relative() {
        let t = RunningStats::from_sums(4, 10.0, 30.0).unwrap();
        let c = RunningStats::from_sums(4, 8.0, 20.0).unwrap();
        let d = mean_difference(&t, &c).unwrap();
        assert!((d.theta - 0.5).abs() < 1e-12);
        let r = relative_mean_difference(&t, &c).unwrap();
        assert!((r.theta - 0.25).abs() < 1e-12);
        assert!(mean_difference(&RunningStats::new(), &c).is_err());
    }

    #[test]
    fn stratified_weights_by_information() {
        let mut s = Stratified::new();
        s.add(Estimate { theta: 1.0, variance: 1.0 });
        let c = s.combined_with(Some(Estimate { theta: 0.0, variance: 0.5 })).unwrap();
        assert!((c.theta - 1.0 / 3.0).abs() < 1e-12);
        assert!((c.variance - 1.0 / 3.0).abs() < 1e-12);
    }
}
