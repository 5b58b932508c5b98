//! Tail-latency tests against thresholds frozen before the phase (statistics.md §5.4).
//!
//! At the start of a phase, q95*/q99* are frozen from the control's sketch of the previous
//! phase (or a baseline window, or an SLO). The test is then on the proportion of requests
//! above the threshold: "does the canary exceed it **more often than control**". The
//! threshold must never come from the data being tested.

use serde::{Deserialize, Serialize};

use crate::error::{Result, StatsError, check_finite, check_positive};
use crate::estimate::{proportion_difference_pooled, proportion_difference_under_margin};
use crate::msprt::{Estimate, HalfNormalMixture};
use crate::sketch::QuantileSketch;

/// Count of values above a fixed threshold for one arm.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ExceedanceCounter {
    threshold: f64,
    n: u64,
    exceed: u64,
}

impl ExceedanceCounter {
    /// A counter for `threshold` (> 0).
    ///
    /// # Errors
    /// [`StatsError::NotPositive`] when the threshold is not a positive finite number.
    pub fn new(threshold: f64) -> Result<Self> {
        Ok(Self { threshold: check_positive("threshold", threshold)?, n: 0, exceed: 0 })
    }

    /// A counter that has already seen `n` values, `exceed` of them above `threshold` (for a
    /// reference frozen from a sketch: a quantile threshold q has `exceed ≈ (1 − q)·n`).
    ///
    /// # Errors
    /// [`StatsError::NotPositive`] for a bad threshold, [`StatsError::InconsistentCounts`]
    /// when `exceed > n`.
    pub fn from_counts(threshold: f64, exceed: u64, n: u64) -> Result<Self> {
        if exceed > n {
            return Err(StatsError::InconsistentCounts(format!(
                "{exceed} exceedances in {n} values"
            )));
        }
        Ok(Self { threshold: check_positive("threshold", threshold)?, n, exceed })
    }

    /// Records one value (counts it as exceeding when `value > threshold`).
    ///
    /// # Errors
    /// [`StatsError::NotFinite`] for NaN/∞; the counter is unchanged.
    pub fn observe(&mut self, value: f64) -> Result<()> {
        let v = check_finite("value", value)?;
        self.n += 1;
        if v > self.threshold {
            self.exceed += 1;
        }
        Ok(())
    }

    /// Merges another counter for the same threshold.
    ///
    /// # Errors
    /// [`StatsError::IncompatibleMerge`] when the thresholds differ.
    pub fn merge(&mut self, other: &Self) -> Result<()> {
        if self.threshold != other.threshold {
            return Err(StatsError::IncompatibleMerge("exceedance thresholds differ"));
        }
        self.n += other.n;
        self.exceed += other.exceed;
        Ok(())
    }

    /// The threshold.
    pub const fn threshold(&self) -> f64 {
        self.threshold
    }

    /// (values above the threshold, values seen).
    pub const fn counts(&self) -> (u64, u64) {
        (self.exceed, self.n)
    }

    /// Fraction above the threshold, or `None` when empty.
    pub fn fraction(&self) -> Option<f64> {
        (self.n > 0).then(|| self.exceed as f64 / self.n as f64)
    }
}

/// Freezes the `q`-quantile of a (control, previous-phase) sketch as the next phase's threshold.
pub fn freeze_threshold(sketch: &QuantileSketch, q: f64) -> Option<f64> {
    sketch.quantile(q).filter(|v| *v > 0.0 && v.is_finite())
}

/// One-sided test that the canary's exceedance proportion is higher than the control's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ExceedanceTest {
    mixture: HalfNormalMixture,
}

impl ExceedanceTest {
    /// A test tuned for an absolute increase `mde_abs` of the exceedance proportion
    /// (e.g. 0.04 at q95*, 0.01 at q99*).
    ///
    /// # Errors
    /// As [`HalfNormalMixture::for_mde`].
    pub fn new(mde_abs: f64, alpha: f64, beta: f64) -> Result<Self> {
        Ok(Self { mixture: HalfNormalMixture::for_mde(mde_abs, alpha, beta)? })
    }

    /// The mixture used.
    pub const fn mixture(&self) -> &HalfNormalMixture {
        &self.mixture
    }

    /// Estimate (canary − control exceedance) with the pooled variance (rollback side).
    ///
    /// # Errors
    /// When the thresholds differ or an arm is empty.
    pub fn estimate(
        &self,
        canary: &ExceedanceCounter,
        control: &ExceedanceCounter,
    ) -> Result<Estimate> {
        if canary.threshold != control.threshold {
            return Err(StatsError::IncompatibleMerge("exceedance thresholds differ"));
        }
        proportion_difference_pooled(canary.exceed, canary.n, control.exceed, control.n)
    }

    /// ln e of "canary exceeds more often" (0 when there is not yet data in both arms).
    pub fn log_e(&self, canary: &ExceedanceCounter, control: &ExceedanceCounter) -> f64 {
        self.estimate(canary, control).map_or(0.0, |e| self.mixture.log_e(e, 0.0))
    }

    /// Estimate with the variance under the margin null (promotion side).
    ///
    /// # Errors
    /// When the thresholds differ or an arm is empty.
    pub fn estimate_under_margin(
        &self,
        canary: &ExceedanceCounter,
        control: &ExceedanceCounter,
        margin: f64,
    ) -> Result<Estimate> {
        if canary.threshold != control.threshold {
            return Err(StatsError::IncompatibleMerge("exceedance thresholds differ"));
        }
        proportion_difference_under_margin(
            canary.exceed,
            canary.n,
            control.exceed,
            control.n,
            margin,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_test() {
        let mut t = ExceedanceCounter::new(1000.0).unwrap();
        let mut c = ExceedanceCounter::new(1000.0).unwrap();
        for i in 0..1000 {
            t.observe(if i % 10 == 0 { 1500.0 } else { 300.0 }).unwrap();
            c.observe(if i % 20 == 0 { 1500.0 } else { 300.0 }).unwrap();
        }
        assert_eq!(t.counts(), (100, 1000));
        let test = ExceedanceTest::new(0.04, 0.05, 0.2).unwrap();
        assert!(test.log_e(&t, &c) > (20f64).ln(), "10% vs 5% over 1000 each is detected");
        assert_eq!(test.log_e(&t, &ExceedanceCounter::new(1000.0).unwrap()), 0.0);
        assert!(t.observe(f64::NAN).is_err());
        assert!(t.merge(&ExceedanceCounter::new(5.0).unwrap()).is_err());
    }

    #[test]
    fn freezing_uses_the_sketch() {
        let mut s = QuantileSketch::default();
        for i in 1..=1000 {
            s.add(f64::from(i)).unwrap();
        }
        let q = freeze_threshold(&s, 0.95).unwrap();
        assert!((q - 950.0).abs() < 10.0);
        assert!(freeze_threshold(&QuantileSketch::default(), 0.95).is_none());
    }
}
