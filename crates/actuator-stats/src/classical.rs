//! Classical fixed-sample statistics for reports and for a fixed-horizon mode.
//!
//! These p-values are valid only at **one pre-planned look**. Repeating them at every health
//! check gives about 20% false rollbacks over 200 looks (statistics.md §4.3); use them for
//! reports, or through [`FixedHorizonPlan`], which refuses to decide before the planned size.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

use crate::error::{Result, StatsError, check_positive, check_probability};
use crate::normal::{norm_quantile, norm_sf};
use crate::running::RunningStats;

/// Result of a two-proportion z-test of canary (t) against control (c).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProportionTest {
    /// Canary proportion x_t/n_t.
    pub p_canary: f64,
    /// Control proportion x_c/n_c.
    pub p_control: f64,
    /// Difference p_t − p_c.
    pub difference: f64,
    /// Pooled z statistic.
    pub z: f64,
    /// Two-sided p-value.
    pub p_two_sided: f64,
    /// One-sided p-value for p_t > p_c.
    pub p_greater: f64,
    /// Unpooled (Wald) confidence interval of the difference at the requested level.
    pub ci_lower: f64,
    /// Upper end of the confidence interval.
    pub ci_upper: f64,
    /// Cohen's h effect size `2 asin √p_t − 2 asin √p_c`.
    pub cohens_h: f64,
}

/// Pooled two-proportion z-test with a Wald interval at `confidence` (e.g. 0.95).
///
/// # Errors
/// When an arm is empty, x > n, or `confidence` is not in (0, 1).
pub fn two_proportion_z_test(
    x_t: u64,
    n_t: u64,
    x_c: u64,
    n_c: u64,
    confidence: f64,
) -> Result<ProportionTest> {
    let conf = check_probability("confidence", confidence)?;
    if x_t > n_t || x_c > n_c {
        return Err(StatsError::InconsistentCounts(format!("{x_t}/{n_t} vs {x_c}/{n_c}")));
    }
    if n_t == 0 || n_c == 0 {
        return Err(StatsError::NotEnoughData("each arm needs at least one trial"));
    }
    let (nt, nc) = (n_t as f64, n_c as f64);
    let (pt, pc) = (x_t as f64 / nt, x_c as f64 / nc);
    let pbar = (x_t + x_c) as f64 / (nt + nc);
    let se0 = (pbar * (1.0 - pbar) * (1.0 / nt + 1.0 / nc)).sqrt();
    let diff = pt - pc;
    let z = if se0 > 0.0 { diff / se0 } else { 0.0 };
    let se = (pt * (1.0 - pt) / nt + pc * (1.0 - pc) / nc).sqrt();
    let zc = norm_quantile(0.5 + conf / 2.0)?;
    Ok(ProportionTest {
        p_canary: pt,
        p_control: pc,
        difference: diff,
        z,
        p_two_sided: (2.0 * norm_sf(z.abs())).min(1.0),
        p_greater: norm_sf(z),
        ci_lower: diff - zc * se,
        ci_upper: diff + zc * se,
        cohens_h: 2.0 * pt.sqrt().asin() - 2.0 * pc.sqrt().asin(),
    })
}

/// Wilson score interval for one proportion.
///
/// # Errors
/// When n = 0, x > n or `confidence` is not in (0, 1).
pub fn wilson_interval(x: u64, n: u64, confidence: f64) -> Result<(f64, f64)> {
    let conf = check_probability("confidence", confidence)?;
    if x > n {
        return Err(StatsError::InconsistentCounts(format!("{x} events in {n} trials")));
    }
    if n == 0 {
        return Err(StatsError::NotEnoughData("the arm needs at least one trial"));
    }
    let z = norm_quantile(0.5 + conf / 2.0)?;
    let (nf, p) = (n as f64, x as f64 / n as f64);
    let denom = 1.0 + z * z / nf;
    let centre = (p + z * z / (2.0 * nf)) / denom;
    let half = z * (p * (1.0 - p) / nf + z * z / (4.0 * nf * nf)).sqrt() / denom;
    Ok(((centre - half).max(0.0), (centre + half).min(1.0)))
}

/// Result of Welch's unequal-variance t-test of canary mean minus control mean.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WelchTest {
    /// Difference of means ȳ_t − ȳ_c.
    pub difference: f64,
    /// t statistic.
    pub t: f64,
    /// Welch–Satterthwaite degrees of freedom.
    pub df: f64,
    /// Two-sided p-value.
    pub p_two_sided: f64,
    /// One-sided p-value for ȳ_t > ȳ_c.
    pub p_greater: f64,
    /// Confidence interval lower end at the requested level.
    pub ci_lower: f64,
    /// Confidence interval upper end.
    pub ci_upper: f64,
    /// Cohen's d with the average-variance standardizer `√((s_t² + s_c²)/2)`.
    pub cohens_d: f64,
}

/// Welch's t-test with the Student t CDF from statrs.
///
/// # Errors
/// With fewer than two values per arm, zero variance in both arms, or a bad `confidence`.
pub fn welch_t_test(
    canary: &RunningStats,
    control: &RunningStats,
    confidence: f64,
) -> Result<WelchTest> {
    let conf = check_probability("confidence", confidence)?;
    let (Some(vt), Some(vc), Some(mt), Some(mc)) =
        (canary.variance(), control.variance(), canary.mean(), control.mean())
    else {
        return Err(StatsError::NotEnoughData("each arm needs at least two values"));
    };
    let (nt, nc) = (canary.count() as f64, control.count() as f64);
    let (at, ac) = (vt / nt, vc / nc);
    let se2 = at + ac;
    if se2 <= 0.0 {
        return Err(StatsError::NotEnoughData("both arms have zero variance"));
    }
    let df = se2 * se2 / (at * at / (nt - 1.0) + ac * ac / (nc - 1.0));
    let diff = mt - mc;
    let t = diff / se2.sqrt();
    let dist = StudentsT::new(0.0, 1.0, df)
        .map_err(|_| StatsError::NotPositive { name: "degrees of freedom", value: df })?;
    let tc = dist.inverse_cdf(0.5 + conf / 2.0);
    let sd_avg = ((vt + vc) / 2.0).sqrt();
    Ok(WelchTest {
        difference: diff,
        t,
        df,
        p_two_sided: (2.0 * dist.sf(t.abs())).min(1.0),
        p_greater: dist.sf(t),
        ci_lower: diff - tc * se2.sqrt(),
        ci_upper: diff + tc * se2.sqrt(),
        cohens_d: if sd_avg > 0.0 { diff / sd_avg } else { 0.0 },
    })
}

/// Canary sample size of a one-look two-proportion z-test (power `1 − beta`, `sided` = 1 or 2)
/// with canary share `share`; the control gets `(1 − share)/share` times as many.
///
/// # Errors
/// For invalid probabilities or p0 = p1.
pub fn fixed_horizon_n_proportions(
    p0: f64,
    p1: f64,
    share: f64,
    alpha: f64,
    beta: f64,
    sided: u8,
) -> Result<f64> {
    check_probability("p0", p0)?;
    check_probability("p1", p1)?;
    let share = check_probability("share", share)?;
    if p0 == p1 {
        return Err(StatsError::NotPositive { name: "|p1 - p0|", value: 0.0 });
    }
    let za =
        norm_quantile(1.0 - check_probability("alpha", alpha)? / f64::from(sided.clamp(1, 2)))?;
    let zb = norm_quantile(1.0 - check_probability("beta", beta)?)?;
    let k = (1.0 - share) / share;
    let pbar = (p1 + k * p0) / (1.0 + k);
    let num = za * (pbar * (1.0 - pbar) * (1.0 + 1.0 / k)).sqrt()
        + zb * (p1 * (1.0 - p1) + p0 * (1.0 - p0) / k).sqrt();
    Ok(num * num / ((p1 - p0) * (p1 - p0)))
}

/// Canary sample size of a one-look test of a mean shift `delta` with standard deviation `sd`.
///
/// # Errors
/// For invalid probabilities or non-positive `delta`/`sd`.
pub fn fixed_horizon_n_means(
    delta: f64,
    sd: f64,
    share: f64,
    alpha: f64,
    beta: f64,
    sided: u8,
) -> Result<f64> {
    let delta = check_positive("delta", delta)?;
    let sd = check_positive("sd", sd)?;
    let share = check_probability("share", share)?;
    let za =
        norm_quantile(1.0 - check_probability("alpha", alpha)? / f64::from(sided.clamp(1, 2)))?;
    let zb = norm_quantile(1.0 - check_probability("beta", beta)?)?;
    let k = (1.0 - share) / share;
    Ok((za + zb) * (za + zb) * sd * sd * (1.0 + 1.0 / k) / (delta * delta))
}

/// Outcome of a fixed-horizon test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FixedHorizonOutcome {
    /// The planned sample size has not been reached: no decision may be taken yet.
    NotYet,
    /// At the planned size, the one-sided test rejects (canary worse).
    Reject,
    /// At the planned size, the test does not reject.
    Accept,
}

/// A fixed-horizon design: one look at a pre-planned canary sample size, one-sided level α.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FixedHorizonPlan {
    /// Planned canary sample size.
    pub n_canary: u64,
    /// One-sided level.
    pub alpha: f64,
}

impl FixedHorizonPlan {
    /// A plan for detecting `p0 → p1` at `share` with power `1 − beta`.
    ///
    /// # Errors
    /// As [`fixed_horizon_n_proportions`].
    pub fn for_proportions(p0: f64, p1: f64, share: f64, alpha: f64, beta: f64) -> Result<Self> {
        let n = fixed_horizon_n_proportions(p0, p1, share, alpha, beta, 1)?;
        Ok(Self { n_canary: n.ceil() as u64, alpha })
    }

    /// Decides on proportions, but only once `n_t` reaches the plan.
    ///
    /// # Errors
    /// As [`two_proportion_z_test`].
    pub fn decide_proportions(
        &self,
        x_t: u64,
        n_t: u64,
        x_c: u64,
        n_c: u64,
    ) -> Result<FixedHorizonOutcome> {
        if n_t < self.n_canary {
            return Ok(FixedHorizonOutcome::NotYet);
        }
        let t = two_proportion_z_test(x_t, n_t, x_c, n_c, 0.95)?;
        Ok(if t.p_greater < self.alpha {
            FixedHorizonOutcome::Reject
        } else {
            FixedHorizonOutcome::Accept
        })
    }

    /// Decides on means with Welch's test, once the canary count reaches the plan.
    ///
    /// # Errors
    /// As [`welch_t_test`].
    pub fn decide_means(
        &self,
        canary: &RunningStats,
        control: &RunningStats,
    ) -> Result<FixedHorizonOutcome> {
        if canary.count() < self.n_canary {
            return Ok(FixedHorizonOutcome::NotYet);
        }
        let t = welch_t_test(canary, control, 0.95)?;
        Ok(if t.p_greater < self.alpha {
            FixedHorizonOutcome::Reject
        } else {
            FixedHorizonOutcome::Accept
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn z_test_golden() {
        let t = two_proportion_z_test(30, 2000, 15, 2000, 0.95).unwrap();
        // The naive engine's statistic: 2.2488 with the plain pooled proportion
        // (statistics.md §5.10 quotes 2.2368 for the smoothed pool, checked below).
        assert!((t.z - 2.248_753).abs() < 1e-5, "{}", t.z);
        let smoothed = crate::estimate::proportion_difference_pooled(30, 2000, 15, 2000).unwrap();
        assert!((smoothed.theta / smoothed.std_error() - 2.2368).abs() < 1e-4);
        assert!(t.p_two_sided < 0.05 && t.p_greater < 0.025);
        assert!(t.ci_lower > 0.0 && t.ci_upper > t.ci_lower);
        assert!(t.cohens_h > 0.0);
    }

    #[test]
    fn welch_against_reference() {
        // Reference: scipy.stats.ttest_ind([1,2,3,4,5],[2,4,6,8,10], equal_var=False)
        // t = -1.8973665961, p = 0.1075311949 (two-sided), df = 5.8823529
        let mut a = RunningStats::new();
        let mut b = RunningStats::new();
        for x in [1.0, 2.0, 3.0, 4.0, 5.0] {
            a.push(x).unwrap();
            b.push(2.0 * x).unwrap();
        }
        let w = welch_t_test(&a, &b, 0.95).unwrap();
        assert!((w.t + 1.897_366_596_1).abs() < 1e-8);
        assert!((w.df - 5.882_352_9).abs() < 1e-5);
        assert!((w.p_two_sided - 0.107_531_194_9).abs() < 1e-6, "{}", w.p_two_sided);
    }

    #[test]
    fn wilson_bounds() {
        let (lo, hi) = wilson_interval(0, 100, 0.95).unwrap();
        assert_eq!(lo, 0.0);
        assert!(hi > 0.03 && hi < 0.04);
    }

    #[test]
    fn fixed_horizon_golden() {
        let n = fixed_horizon_n_proportions(0.01, 0.02, 0.5, 0.05, 0.2, 1).unwrap();
        assert!((n - 1825.9).abs() < 0.1, "{n}");
        assert!(
            (fixed_horizon_n_proportions(0.01, 0.05, 0.5, 0.05, 0.2, 1).unwrap() - 223.84).abs()
                < 0.1
        );
        assert!(
            (fixed_horizon_n_proportions(0.01, 0.02, 0.01, 0.05, 0.2, 1).unwrap() - 803.29).abs()
                < 0.1
        );
        assert!(
            (fixed_horizon_n_means(1.2f64.ln(), 0.6, 0.5, 0.05, 0.2, 1).unwrap() - 133.91).abs()
                < 0.1
        );
        assert!(
            (fixed_horizon_n_means(1.5f64.ln(), 0.6, 0.5, 0.05, 0.2, 1).unwrap() - 27.08).abs()
                < 0.1
        );
        let plan = FixedHorizonPlan::for_proportions(0.01, 0.02, 0.5, 0.05, 0.2).unwrap();
        assert_eq!(plan.n_canary, 1826);
        assert_eq!(
            plan.decide_proportions(30, 1000, 10, 1000).unwrap(),
            FixedHorizonOutcome::NotYet
        );
        assert_eq!(
            plan.decide_proportions(40, 1826, 18, 1826).unwrap(),
            FixedHorizonOutcome::Reject
        );
    }
}
