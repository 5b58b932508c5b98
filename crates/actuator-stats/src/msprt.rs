//! One-sided mixture SPRT (half-normal mixing) and the confidence sequences derived from it
//! (statistics.md §2.2, §5.10).

use serde::{Deserialize, Serialize};

use crate::error::{Result, StatsError, check_finite, check_positive, check_probability};
use crate::normal::{ln_norm_cdf, ln_norm_pdf, norm_quantile};

/// A point estimate θ̂ with its (plug-in) variance V, oriented so that larger θ is worse.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// Point estimate θ̂ (canary minus control, harm direction positive).
    pub theta: f64,
    /// Variance of θ̂.
    pub variance: f64,
}

impl Estimate {
    /// Builds an estimate, checking both numbers are finite and the variance is not negative.
    ///
    /// # Errors
    /// [`StatsError::NotFinite`] or [`StatsError::NotPositive`].
    pub fn new(theta: f64, variance: f64) -> Result<Self> {
        check_finite("theta", theta)?;
        check_finite("variance", variance)?;
        if variance < 0.0 {
            return Err(StatsError::NotPositive { name: "variance", value: variance });
        }
        Ok(Self { theta, variance })
    }

    /// Standard error √V.
    pub fn std_error(&self) -> f64 {
        self.variance.sqrt()
    }

    /// The same estimate with the sign flipped (for "higher is better" metrics).
    pub fn flipped(self) -> Self {
        Self { theta: -self.theta, variance: self.variance }
    }
}

/// C_α = 2 ln(1/α) + ln(1 + 2 ln(1/α)); 7.936155 at α = 0.05.
///
/// # Errors
/// [`StatsError::InvalidProbability`] when `alpha` is not in (0, 1).
pub fn c_alpha(alpha: f64) -> Result<f64> {
    let l = (1.0 / check_probability("alpha", alpha)?).ln();
    Ok(2.0 * l + (1.0 + 2.0 * l).ln())
}

/// Mixing scale τ from a minimum detectable effect: `τ = MDE·√C_α / (z_{1−α} + z_{1−β})`.
///
/// The MDE must be on the scale of θ (ln r for log-means, absolute for proportions).
/// At α = 0.05, β = 0.2 this is 1.133·MDE.
///
/// # Errors
/// When `mde` is not positive or `alpha`/`beta` are not probabilities.
pub fn tau_from_mde(mde: f64, alpha: f64, beta: f64) -> Result<f64> {
    let mde = check_positive("mde", mde)?;
    let za = norm_quantile(1.0 - check_probability("alpha", alpha)?)?;
    let zb = norm_quantile(1.0 - check_probability("beta", beta)?)?;
    Ok(mde * c_alpha(alpha)?.sqrt() / (za + zb))
}

/// Half-normal N⁺(0, τ²) mixture over the harmful direction; the engine of the one-sided mSPRT.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HalfNormalMixture {
    tau: f64,
}

impl HalfNormalMixture {
    /// A mixture with scale `tau`.
    ///
    /// # Errors
    /// [`StatsError::NotPositive`] when `tau` is not a positive finite number.
    pub fn new(tau: f64) -> Result<Self> {
        Ok(Self { tau: check_positive("tau", tau)? })
    }

    /// The mixture tuned for `mde` at level `alpha` and power `1 − beta` (see [`tau_from_mde`]).
    ///
    /// # Errors
    /// As [`tau_from_mde`].
    pub fn for_mde(mde: f64, alpha: f64, beta: f64) -> Result<Self> {
        Self::new(tau_from_mde(mde, alpha, beta)?)
    }

    /// The mixing scale τ.
    pub const fn tau(&self) -> f64 {
        self.tau
    }

    /// ln Λ⁺ for H0: θ ≤ θ0 against θ > θ0:
    /// `ln 2 + ln Φ((θ̂−θ0)τ/√(VS)) + ½ ln(V/S) + τ²(θ̂−θ0)²/(2VS)`, S = V + τ².
    ///
    /// Returns 0 (no evidence) when the variance is not positive or anything is not finite,
    /// so degenerate data can never produce evidence.
    pub fn log_e(&self, est: Estimate, theta0: f64) -> f64 {
        let v = est.variance;
        let d = est.theta - theta0;
        if !(v > 0.0 && v.is_finite() && d.is_finite()) {
            return 0.0;
        }
        let t2 = self.tau * self.tau;
        let s = v + t2;
        let x = d * self.tau / (v * s).sqrt();
        std::f64::consts::LN_2 + ln_norm_cdf(x) + 0.5 * (v / s).ln() + t2 * d * d / (2.0 * v * s)
    }

    /// Two-sided ln Λ (normal mixing), for display only: `½ ln(V/S) + τ²(θ̂−θ0)²/(2VS)`.
    pub fn log_e_two_sided(&self, est: Estimate, theta0: f64) -> f64 {
        let v = est.variance;
        let d = est.theta - theta0;
        if !(v > 0.0 && v.is_finite() && d.is_finite()) {
            return 0.0;
        }
        let t2 = self.tau * self.tau;
        let s = v + t2;
        0.5 * (v / s).ln() + t2 * d * d / (2.0 * v * s)
    }

    /// Half-width d solving `ln Λ⁺(d; V, τ) = ln(1/α)`: the always-valid one-sided bound is
    /// θ̂ + d (upper) or θ̂ − d (lower). Infinite when the variance is not positive.
    ///
    /// # Errors
    /// [`StatsError::InvalidProbability`] when `alpha` is not in (0, 1).
    pub fn half_width(&self, variance: f64, alpha: f64) -> Result<f64> {
        let target = (1.0 / check_probability("alpha", alpha)?).ln();
        if !(variance > 0.0 && variance.is_finite()) {
            return Ok(f64::INFINITY);
        }
        Ok(self.solve_half_width(variance, target))
    }

    /// `d ≥ 0` with `ln Λ⁺(d; V) = target`, by safeguarded Newton steps.
    ///
    /// `ln Λ⁺` is increasing in `d`; the start is its large-`d` solution (where `ln Φ ≈ 0`),
    /// which is never above the root because `ln Φ < 0`. Each step stays inside the bracket
    /// of known signs and falls back to bisection when Newton would leave it; a handful of
    /// steps reach the relative precision of the former pure bisection (1e-13).
    fn solve_half_width(&self, v: f64, target: f64) -> f64 {
        let t2 = self.tau * self.tau;
        let s = v + t2;
        let k = self.tau / (v * s).sqrt();
        let q = t2 / (v * s);
        let base = std::f64::consts::LN_2 + 0.5 * (v / s).ln();
        let f = |d: f64| base + ln_norm_cdf(d * k) + 0.5 * q * d * d - target;
        // d/dd [ln Φ(kd)] = k·φ(kd)/Φ(kd), computed in logs so it stays finite far left.
        let df = |d: f64| {
            let x = d * k;
            k * (ln_norm_pdf(x) - ln_norm_cdf(x)).exp() + q * d
        };
        let mut lo = 0.0_f64;
        let mut hi = f64::INFINITY;
        let mut d = (2.0 * (target - base).max(0.0) / q).sqrt();
        for _ in 0..100 {
            let fd = f(d);
            if !fd.is_finite() {
                break;
            }
            if fd < 0.0 {
                lo = lo.max(d);
            } else {
                hi = hi.min(d);
            }
            if hi.is_finite() && hi - lo <= 1e-13 * hi {
                return hi;
            }
            let slope = df(d);
            let mut next = if slope > 0.0 && slope.is_finite() { d - fd / slope } else { f64::NAN };
            if !(next > lo && next < hi) {
                next = if hi.is_finite() { 0.5 * (lo + hi) } else { 2.0 * lo.max(d) + 1e-300 };
            }
            if (next - d).abs() <= 1e-15 * d.abs() {
                return next.max(d);
            }
            d = next;
        }
        if hi.is_finite() { hi } else { d }
    }

    /// The variance `V` at which the half-width equals `gap > 0`: `ln Λ⁺(gap; V) = target`.
    ///
    /// `ln Λ⁺(gap; V)` decreases in `V`, so a bisection on `ln V` finds it; one evaluation per
    /// step instead of a half-width solve per step. `None` when it is out of floating range.
    fn variance_for_half_width(&self, gap: f64, target: f64) -> Option<f64> {
        let excess = |v: f64| self.log_e(Estimate { theta: gap, variance: v }, 0.0) - target;
        // Bracket in ln V.
        let mut lo = (gap * gap).ln() - 2.0;
        let mut hi = lo + 4.0;
        let mut steps = 0;
        while excess(lo.exp()) < 0.0 {
            lo -= 4.0;
            steps += 1;
            if steps > 200 || lo < -700.0 {
                return None;
            }
        }
        while excess(hi.exp()) >= 0.0 {
            hi += 4.0;
            steps += 1;
            if steps > 200 || hi > 700.0 {
                return None;
            }
        }
        // At V = exp(lo) the bound is narrower than gap; at exp(hi) wider.
        for _ in 0..80 {
            let mid = 0.5 * (lo + hi);
            if excess(mid.exp()) >= 0.0 {
                lo = mid;
            } else {
                hi = mid;
            }
            if hi - lo < 1e-12 {
                break;
            }
        }
        Some(lo.exp())
    }

    /// The one-sided test decision: `ln Λ⁺ ≥ ln(1/α)`.
    pub fn rejects(&self, est: Estimate, theta0: f64, alpha: f64) -> bool {
        alpha > 0.0 && self.log_e(est, theta0) >= (1.0 / alpha).ln()
    }

    /// Always-valid interval from this mixture: `[θ̂ − d(V_lower), θ̂ + d(V_upper)]`.
    ///
    /// Pass different variances for the two sides when the nulls differ, e.g. for error rates
    /// the lower (rollback) side uses the pooled V0 and the upper (promotion) side V_δ.
    ///
    /// # Errors
    /// As [`Self::half_width`].
    pub fn interval(&self, theta: f64, v_lower: f64, v_upper: f64, alpha: f64) -> Result<Interval> {
        Ok(Interval {
            lower: theta - self.half_width(v_lower, alpha)?,
            upper: theta + self.half_width(v_upper, alpha)?,
        })
    }

    /// Projected total sample size (in the unit of `n`) at which the upper bound would fall
    /// below `margin` if the estimate stayed at `est.theta` and the variance shrank as 1/n:
    /// solves `θ̂ + d(V·n/n′) = δ` for n′ (statistics.md §5.8). `None` when θ̂ ≥ δ or n = 0.
    pub fn projected_n(&self, est: Estimate, n: u64, margin: f64, alpha: f64) -> Option<u64> {
        let gap = margin - est.theta;
        if !(gap > 0.0 && n > 0 && est.variance > 0.0 && est.variance.is_finite()) {
            return None;
        }
        // V(n′) = V·n/n′; the width at V* is gap, so n′ = V·n/V*.
        self.projected_units(gap, alpha, n, |v_star| est.variance * n as f64 / v_star)
    }

    /// Shared end of the projections: `None` for an invalid α; `n` when the bound is already
    /// below the margin; else `ceil(n′(V*))`, or `None` beyond 10¹⁵ units.
    fn projected_units(
        &self,
        gap: f64,
        alpha: f64,
        n: u64,
        units_at: impl Fn(f64) -> f64,
    ) -> Option<u64> {
        let target = (1.0 / check_probability("alpha", alpha).ok()?).ln();
        let v_star = self.variance_for_half_width(gap, target)?;
        let np = units_at(v_star);
        if !np.is_finite() || np > 1e15 {
            return None;
        }
        if np <= n as f64 {
            return Some(n);
        }
        Some(np.ceil() as u64)
    }
}

impl HalfNormalMixture {
    /// Projection for a pooled (information-weighted) estimate: the total number `n′` of
    /// current-stage units at which `θ̂ + d(V(n′)) < δ`, where the earlier stages' information
    /// `info_earlier` stays fixed and the current stage's `info_current` (at `n` units) grows
    /// in proportion: `V(n′) = 1/(info_earlier + info_current·n′/n)`. This is statistics.md
    /// §5.8's `d(V·n/n′) = δ − θ̂` for a stratified estimate. `None` when θ̂ ≥ δ, when there is
    /// no current information, or beyond 10¹⁵ units.
    pub fn projected_n_pooled(
        &self,
        theta: f64,
        info_earlier: f64,
        info_current: f64,
        n: u64,
        margin: f64,
        alpha: f64,
    ) -> Option<u64> {
        let gap = margin - theta;
        let ok = gap > 0.0
            && n > 0
            && info_current > 0.0
            && info_current.is_finite()
            && info_earlier >= 0.0
            && info_earlier.is_finite();
        if !ok {
            return None;
        }
        // 1/V(n′) = info_earlier + info_current·n′/n at the width gap: solve for n′.
        self.projected_units(gap, alpha, n, |v_star| {
            (1.0 / v_star - info_earlier) * n as f64 / info_current
        })
    }
}

/// A closed interval `[lower, upper]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Lower end.
    pub lower: f64,
    /// Upper end.
    pub upper: f64,
}

/// Running intersection of a confidence sequence: keeps `max_k L_k` and `min_k U_k`, which
/// stays valid and never widens (statistics.md §2.4, §5.10).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RunningInterval {
    lower: Option<f64>,
    upper: Option<f64>,
}

impl RunningInterval {
    /// An interval with no information yet: (−∞, ∞).
    pub const fn new() -> Self {
        Self { lower: None, upper: None }
    }

    /// Intersects with a new interval; non-finite ends are ignored (they carry no information).
    pub fn update(&mut self, interval: Interval) {
        if interval.lower.is_finite() {
            self.lower = Some(self.lower.map_or(interval.lower, |l| l.max(interval.lower)));
        }
        if interval.upper.is_finite() {
            self.upper = Some(self.upper.map_or(interval.upper, |u| u.min(interval.upper)));
        }
    }

    /// Running lower bound `L*`, or −∞.
    pub fn lower(&self) -> f64 {
        self.lower.unwrap_or(f64::NEG_INFINITY)
    }

    /// Running upper bound `U*`, or +∞.
    pub fn upper(&self) -> f64 {
        self.upper.unwrap_or(f64::INFINITY)
    }
}

/// Always-valid p-value from an e-value: `min(1, 1/E)`.
pub fn p_value_from_log_e(log_e: f64) -> f64 {
    if log_e.is_nan() { 1.0 } else { (-log_e).exp().min(1.0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() <= tol, "{a} vs {b} (tol {tol})");
    }

    #[test]
    fn tau_rule_golden() {
        close(c_alpha(0.05).unwrap(), 7.936155, 1e-6);
        // statistics.md rounds this to 11.535; 2 ln 100 + ln(1 + 2 ln 100) = 11.53374.
        close(c_alpha(0.01).unwrap(), 11.533_74, 1e-5);
        close(tau_from_mde(0.01, 0.05, 0.2).unwrap(), 0.011_329_8, 1e-7);
        close(tau_from_mde(1.2f64.ln(), 0.05, 0.2).unwrap(), 0.206_566, 1e-6);
        close(tau_from_mde(1.0, 0.01, 0.2).unwrap(), 1.072, 1e-3);
        assert!(tau_from_mde(0.0, 0.05, 0.2).is_err());
    }

    #[test]
    fn errors_fifty_fifty_golden() {
        // 30/2000 vs 15/2000, tau = 0.0113298 (statistics.md §5.10)
        let mix = HalfNormalMixture::new(0.011_329_767_223_555_196).unwrap();
        let pbar = (45.0 + 0.5) / 4001.0;
        let v0 = pbar * (1.0 - pbar) * (2.0 / 2000.0);
        close(v0, 1.124_283e-5, 1e-10);
        let est = Estimate::new(0.0075, v0).unwrap();
        close(mix.log_e(est, 0.0), 1.717_62, 1e-5);
        close(mix.log_e_two_sided(est, 0.0), 1.040_59, 1e-5);
        close(mix.half_width(v0, 0.05).unwrap(), 0.009_338_4, 1e-7);
        assert!(!mix.rejects(est, 0.0, 0.05));
    }

    #[test]
    fn latency_golden() {
        let mix = HalfNormalMixture::new(0.206_566).unwrap();
        let v = 0.36 / 500.0 * 2.0;
        close(v, 0.00144, 1e-12);
        close(mix.log_e(Estimate::new(0.1, v).unwrap(), 0.0), 2.336_21, 1e-4);
        close(mix.half_width(v, 0.05).unwrap(), 0.109_344, 1e-5);
    }

    #[test]
    fn z_boundary_golden() {
        // d/sqrt(V) depends only on rho = V / tau^2.
        for (rho, b) in [(10.0, 7.213), (1.0, 3.262), (0.1, 2.777), (0.01, 3.052), (0.001, 3.395)] {
            let mix = HalfNormalMixture::new((1.0f64 / rho).sqrt()).unwrap();
            close(mix.half_width(1.0, 0.05).unwrap(), b, 1e-3);
        }
    }

    #[test]
    fn degenerate_variance_gives_no_evidence() {
        let mix = HalfNormalMixture::new(0.1).unwrap();
        assert_eq!(mix.log_e(Estimate { theta: 1.0, variance: 0.0 }, 0.0), 0.0);
        assert!(mix.half_width(0.0, 0.05).unwrap().is_infinite());
        assert!(mix.log_e(Estimate { theta: -50.0, variance: 1e-6 }, 0.0).is_finite());
    }

    #[test]
    fn projection_reaches_margin() {
        let mix = HalfNormalMixture::for_mde(0.005, 0.05, 0.2).unwrap();
        let est = Estimate::new(0.0, 1e-5).unwrap();
        let n = mix.projected_n(est, 2000, 0.005, 0.05).unwrap();
        assert!(n > 2000);
        let w = mix.half_width(1e-5 * 2000.0 / n as f64, 0.05).unwrap();
        assert!(w < 0.005 && w > 0.0049, "{w}");
        assert_eq!(mix.projected_n(Estimate::new(0.01, 1e-5).unwrap(), 10, 0.005, 0.05), None);
    }

    #[test]
    fn pooled_projection_golden() {
        // canary_sim.py: bisection on upper_cs_halfwidth(1/(I_e + I_c·n'/n), tau2_from_mde(0.005))
        // for θ̂ = 0.001, I_e = 1/4e-6, I_c = 1/2e-5 at n = 1000, δ = 0.005: n' = 4881.8.
        let mix = HalfNormalMixture::for_mde(0.005, 0.05, 0.2).unwrap();
        let n = mix.projected_n_pooled(0.001, 1.0 / 4e-6, 1.0 / 2e-5, 1000, 0.005, 0.05).unwrap();
        assert!((4881..=4883).contains(&n), "{n}");
        // Without earlier stages it is the plain projection.
        let est = Estimate::new(0.001, 2e-5).unwrap();
        let a = mix.projected_n(est, 1000, 0.005, 0.05).unwrap();
        let b = mix.projected_n_pooled(0.001, 0.0, 1.0 / 2e-5, 1000, 0.005, 0.05).unwrap();
        assert!(a.abs_diff(b) <= 1, "{a} vs {b}");
        assert_eq!(mix.projected_n_pooled(0.006, 0.0, 1e5, 1000, 0.005, 0.05), None);
    }

    /// splitmix64 + Box–Muller, for reproducible coverage checks.
    fn normals(seed: u64, n: usize) -> Vec<f64> {
        let mut x = seed;
        let mut u = move || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        };
        (0..n)
            .map(|_| (-2.0 * u().max(1e-300).ln()).sqrt() * (std::f64::consts::TAU * u()).cos())
            .collect()
    }

    #[test]
    fn confidence_sequence_covers_the_true_difference() {
        // 300 experiments, true difference 0.3, checked at 20 looks each: the running interval
        // must contain the truth at every look in at least 95% of experiments (anytime-valid).
        let mix = HalfNormalMixture::for_mde(0.2, 0.05, 0.2).unwrap();
        let mut misses = 0;
        for e in 0..300u64 {
            let a = normals(2 * e + 1, 4000);
            let b = normals(2 * e + 2, 4000);
            let mut ra = crate::RunningStats::new();
            let mut rb = crate::RunningStats::new();
            let mut run = RunningInterval::new();
            let mut missed = false;
            for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                ra.push(x + 0.3).unwrap();
                rb.push(*y).unwrap();
                if (i + 1) % 200 == 0 {
                    let est = crate::estimate::mean_difference(&ra, &rb).unwrap();
                    run.update(mix.interval(est.theta, est.variance, est.variance, 0.05).unwrap());
                    missed |= run.lower() > 0.3 || run.upper() < 0.3;
                }
            }
            misses += u32::from(missed);
        }
        assert!(misses <= 15, "{misses} of 300 experiments left the true value");
    }

    proptest::proptest! {
        #[test]
        fn e_values_are_non_negative_and_monotone(theta in -1.0f64..1.0, v in 1e-8f64..1.0, tau in 1e-3f64..2.0) {
            let mix = HalfNormalMixture::new(tau).unwrap();
            let e = mix.log_e(Estimate { theta, variance: v }, 0.0);
            proptest::prop_assert!(e.is_finite() && e.exp() >= 0.0);
            let e2 = mix.log_e(Estimate { theta: theta + 0.01, variance: v }, 0.0);
            proptest::prop_assert!(e2 >= e - 1e-9);
        }

        #[test]
        fn half_width_is_the_boundary(v in 1e-12f64..10.0, tau in 1e-4f64..5.0, alpha in 1e-6f64..0.5) {
            let mix = HalfNormalMixture::new(tau).unwrap();
            let d = mix.half_width(v, alpha).unwrap();
            let target = (1.0 / alpha).ln();
            proptest::prop_assert!(d.is_finite() && d > 0.0);
            // The boundary: ln Λ⁺ reaches ln(1/α) at d and not just below it.
            let at = mix.log_e(Estimate { theta: d, variance: v }, 0.0);
            let below = mix.log_e(Estimate { theta: d * (1.0 - 1e-9), variance: v }, 0.0);
            proptest::prop_assert!(at >= target - 1e-9, "{at} < {target}");
            proptest::prop_assert!(below <= target + 1e-9, "{below} > {target}");
        }

        #[test]
        fn projection_reaches_the_margin_at_the_projected_n(
            v in 1e-9f64..1e-3, n in 1u64..100_000, gap_sd in 0.1f64..50.0, alpha in 1e-4f64..0.2
        ) {
            let mix = HalfNormalMixture::for_mde(0.01, 0.05, 0.2).unwrap();
            let gap = gap_sd * v.sqrt();
            let np = mix.projected_n(Estimate { theta: 0.0, variance: v }, n, gap, alpha).unwrap();
            proptest::prop_assert!(np >= n);
            let w = mix.half_width(v * n as f64 / np as f64, alpha).unwrap();
            proptest::prop_assert!(w <= gap * (1.0 + 1e-9), "width {w} above gap {gap} at {np}");
            if np > n + 1 {
                let w_before = mix.half_width(v * n as f64 / (np - 1) as f64, alpha).unwrap();
                proptest::prop_assert!(w_before >= gap * (1.0 - 1e-6), "already {w_before} < {gap} at {}", np - 1);
            }
        }
    }

    #[test]
    fn running_interval_never_widens() {
        let mut r = RunningInterval::new();
        r.update(Interval { lower: -1.0, upper: 2.0 });
        r.update(Interval { lower: -2.0, upper: 1.0 });
        r.update(Interval { lower: f64::NEG_INFINITY, upper: f64::INFINITY });
        assert_eq!((r.lower(), r.upper()), (-1.0, 1.0));
    }
}
