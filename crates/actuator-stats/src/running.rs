//! Running sufficient statistics (count, mean, M2) with Welford updates and exact-form merges.

use serde::{Deserialize, Serialize};

use crate::error::{Result, check_finite};

/// Count, mean and sum of squared deviations (M2) of a stream, in O(1) memory.
///
/// Updates use Welford's algorithm and merges use Chan et al.'s parallel formula, so a
/// merged state equals a sequentially updated one up to floating-point rounding.
/// All fields stay finite, so the state round-trips through JSON exactly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RunningStats {
    n: u64,
    mean: f64,
    m2: f64,
}

impl RunningStats {
    /// An empty accumulator.
    pub const fn new() -> Self {
        Self { n: 0, mean: 0.0, m2: 0.0 }
    }

    /// Adds one value.
    ///
    /// # Errors
    /// [`crate::StatsError::NotFinite`] for NaN or infinite values; the state is unchanged.
    pub fn push(&mut self, x: f64) -> Result<()> {
        let x = check_finite("value", x)?;
        self.n += 1;
        let delta = x - self.mean;
        self.mean += delta / self.n as f64;
        self.m2 += delta * (x - self.mean);
        Ok(())
    }

    /// Merges another accumulator into this one (as if its values had been pushed here).
    pub fn merge(&mut self, other: &Self) {
        if other.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = *other;
            return;
        }
        let n = self.n + other.n;
        let (na, nb) = (self.n as f64, other.n as f64);
        let delta = other.mean - self.mean;
        self.mean += delta * nb / n as f64;
        self.m2 += other.m2 + delta * delta * na * nb / n as f64;
        self.n = n;
    }

    /// Builds a state from raw sums (n, Σy, Σy²); useful for simulations and imports.
    ///
    /// # Errors
    /// [`crate::StatsError::NotFinite`] when a sum is not finite.
    pub fn from_sums(n: u64, sum: f64, sum_sq: f64) -> Result<Self> {
        check_finite("sum", sum)?;
        check_finite("sum of squares", sum_sq)?;
        if n == 0 {
            return Ok(Self::new());
        }
        let mean = sum / n as f64;
        let m2 = (sum_sq - sum * mean).max(0.0);
        Ok(Self { n, mean, m2 })
    }

    /// Number of values.
    pub const fn count(&self) -> u64 {
        self.n
    }

    /// Mean, or `None` when empty.
    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then_some(self.mean)
    }

    /// Sum of the values.
    pub fn sum(&self) -> f64 {
        self.mean * self.n as f64
    }

    /// Sum of squared deviations from the mean.
    pub const fn m2(&self) -> f64 {
        self.m2
    }

    /// Unbiased sample variance s², or `None` with fewer than two values.
    pub fn variance(&self) -> Option<f64> {
        (self.n > 1).then(|| (self.m2 / (self.n - 1) as f64).max(0.0))
    }

    /// Sample standard deviation, or `None` with fewer than two values.
    pub fn std_dev(&self) -> Option<f64> {
        self.variance().map(f64::sqrt)
    }

    /// Squared standard error of the mean, s²/n, or `None` with fewer than two values.
    pub fn variance_of_mean(&self) -> Option<f64> {
        self.variance().map(|v| v / self.n as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn basic_moments() {
        let mut s = RunningStats::new();
        for x in [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0] {
            s.push(x).unwrap();
        }
        assert_eq!(s.count(), 8);
        assert!((s.mean().unwrap() - 5.0).abs() < 1e-12);
        assert!((s.variance().unwrap() - 32.0 / 7.0).abs() < 1e-12);
        assert!(s.push(f64::NAN).is_err());
        assert_eq!(s.count(), 8);
    }

    #[test]
    fn from_sums_matches_push() {
        let xs = [1.5, 2.5, 10.0, -3.0];
        let mut s = RunningStats::new();
        for x in xs {
            s.push(x).unwrap();
        }
        let t =
            RunningStats::from_sums(4, xs.iter().sum(), xs.iter().map(|x| x * x).sum()).unwrap();
        assert!((s.variance().unwrap() - t.variance().unwrap()).abs() < 1e-9);
    }

    proptest! {
        #[test]
        fn merge_equals_sequential(a in proptest::collection::vec(-1e3f64..1e3, 0..60),
                                   b in proptest::collection::vec(-1e3f64..1e3, 0..60)) {
            let mut seq = RunningStats::new();
            let mut left = RunningStats::new();
            let mut right = RunningStats::new();
            for &x in &a { seq.push(x).unwrap(); left.push(x).unwrap(); }
            for &x in &b { seq.push(x).unwrap(); right.push(x).unwrap(); }
            left.merge(&right);
            prop_assert_eq!(left.count(), seq.count());
            if seq.count() > 0 {
                prop_assert!((left.mean().unwrap() - seq.mean().unwrap()).abs() < 1e-9);
                prop_assert!((left.m2() - seq.m2()).abs() <= 1e-7 * (1.0 + seq.m2()));
            }
        }

        #[test]
        fn json_round_trip_is_exact(xs in proptest::collection::vec(-1e6f64..1e6, 0..40)) {
            let mut s = RunningStats::new();
            for &x in &xs { s.push(x).unwrap(); }
            let back: RunningStats = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
            prop_assert_eq!(back, s);
        }
    }
}
