//! Quantile sketch with bounded memory: a thin wrapper over `sketches-ddsketch`.
//!
//! DDSketch returns, for every quantile, a value within a relative error α of the true
//! quantile of the recorded data; the number of bins is capped, so memory never grows past
//! `max_bins` counters whatever the number of values (the lowest bins collapse first, which
//! only affects low quantiles). Sketches with the same configuration merge exactly.

use serde::{Deserialize, Serialize};
use sketches_ddsketch::{Config, DDSketch};

use crate::error::{Result, StatsError, check_finite, check_probability};

/// Default relative accuracy (0.5%, statistics.md §3.3).
pub const DEFAULT_RELATIVE_ACCURACY: f64 = 0.005;
/// Default maximum number of bins (covers 1 ms … 1 h at 0.5% with room to spare).
pub const DEFAULT_MAX_BINS: u32 = 2048;

/// A mergeable quantile sketch with relative accuracy and a fixed maximum bin count.
///
/// Values must be finite and ≥ 0 (latency, cost, tokens). The inner sketch is created on
/// the first value, so an empty sketch serializes without infinities.
#[derive(Clone, Serialize, Deserialize)]
pub struct QuantileSketch {
    relative_accuracy: f64,
    max_bins: u32,
    inner: Option<DDSketch>,
}

impl std::fmt::Debug for QuantileSketch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuantileSketch")
            .field("relative_accuracy", &self.relative_accuracy)
            .field("max_bins", &self.max_bins)
            .field("count", &self.count())
            .field("p50", &self.quantile(0.5))
            .field("p99", &self.quantile(0.99))
            .finish()
    }
}

impl Default for QuantileSketch {
    fn default() -> Self {
        Self {
            relative_accuracy: DEFAULT_RELATIVE_ACCURACY,
            max_bins: DEFAULT_MAX_BINS,
            inner: None,
        }
    }
}

impl QuantileSketch {
    /// A sketch with relative accuracy `relative_accuracy` (e.g. 0.005) and at most `max_bins`
    /// bins (≥ 128).
    ///
    /// # Errors
    /// When the accuracy is not in (0, 1) or `max_bins` < 128.
    pub fn new(relative_accuracy: f64, max_bins: u32) -> Result<Self> {
        let relative_accuracy = check_probability("relative_accuracy", relative_accuracy)?;
        if max_bins < 128 {
            return Err(StatsError::NotPositive {
                name: "max_bins - 127",
                value: f64::from(max_bins) - 127.0,
            });
        }
        Ok(Self { relative_accuracy, max_bins, inner: None })
    }

    fn config(&self) -> Config {
        Config::new(self.relative_accuracy, self.max_bins, 1e-9)
    }

    /// Records one value.
    ///
    /// # Errors
    /// [`StatsError::NotFinite`] for NaN/∞ and [`StatsError::NotPositive`] for negative values;
    /// the sketch is unchanged.
    pub fn add(&mut self, value: f64) -> Result<()> {
        let v = check_finite("value", value)?;
        if v < 0.0 {
            return Err(StatsError::NotPositive { name: "sketch value (>= 0)", value: v });
        }
        let config = self.config();
        self.inner.get_or_insert_with(|| DDSketch::new(config)).add(v);
        Ok(())
    }

    /// Merges `other` into this sketch.
    ///
    /// # Errors
    /// [`StatsError::IncompatibleMerge`] when the accuracies or bin limits differ.
    pub fn merge(&mut self, other: &Self) -> Result<()> {
        if self.relative_accuracy != other.relative_accuracy || self.max_bins != other.max_bins {
            return Err(StatsError::IncompatibleMerge("sketch accuracy or bin limit differs"));
        }
        match (&mut self.inner, &other.inner) {
            (_, None) => Ok(()),
            (None, Some(o)) => {
                self.inner = Some(o.clone());
                Ok(())
            }
            (Some(s), Some(o)) => s
                .merge(o)
                .map_err(|_| StatsError::IncompatibleMerge("sketch configuration differs")),
        }
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.inner.as_ref().map_or(0, |s| s.count() as u64)
    }

    /// The q-quantile (q in [0, 1]), or `None` when empty or q is out of range.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.inner.as_ref().and_then(|s| s.quantile(q).ok().flatten())
    }

    /// Smallest value recorded.
    pub fn min(&self) -> Option<f64> {
        self.inner.as_ref().and_then(DDSketch::min)
    }

    /// Largest value recorded.
    pub fn max(&self) -> Option<f64> {
        self.inner.as_ref().and_then(DDSketch::max)
    }

    /// Bins currently allocated (never above the configured maximum plus one allocation chunk).
    pub fn bin_count(&self) -> usize {
        self.inner.as_ref().map_or(0, DDSketch::length)
    }

    /// The configured maximum bin count.
    pub const fn max_bins(&self) -> u32 {
        self.max_bins
    }

    /// The relative accuracy α.
    pub const fn relative_accuracy(&self) -> f64 {
        self.relative_accuracy
    }

    /// Approximate heap + inline bytes used, for memory-bound checks.
    pub fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.bin_count() * std::mem::size_of::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn quantiles_within_relative_error() {
        let mut s = QuantileSketch::default();
        for i in 1..=10_000 {
            s.add(f64::from(i)).unwrap();
        }
        for q in [0.5, 0.95, 0.99] {
            let got = s.quantile(q).unwrap();
            let exact = (q * 9999.0).floor() + 1.0;
            assert!((got - exact).abs() <= 0.0051 * exact, "q={q}: {got} vs {exact}");
        }
        assert!(s.add(f64::NAN).is_err());
        assert!(s.add(-1.0).is_err());
        assert_eq!(s.count(), 10_000);
    }

    #[test]
    fn bins_are_capped() {
        let mut s = QuantileSketch::new(0.01, 256).unwrap();
        let mut x = 1e-6;
        while x < 1e12 {
            s.add(x).unwrap();
            x *= 1.001;
        }
        assert!(s.bin_count() <= 256 + 128, "{}", s.bin_count());
        assert!(s.quantile(0.99).unwrap() > 1e11);
    }

    #[test]
    fn empty_sketch_round_trips() {
        let s = QuantileSketch::default();
        let back: QuantileSketch =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back.count(), 0);
        assert!(back.quantile(0.5).is_none());
    }

    proptest! {
        #[test]
        fn merge_equals_sequential(a in proptest::collection::vec(0.1f64..1e5, 0..200),
                                   b in proptest::collection::vec(0.1f64..1e5, 0..200)) {
            let mut seq = QuantileSketch::default();
            let mut left = QuantileSketch::default();
            let mut right = QuantileSketch::default();
            for &x in &a { seq.add(x).unwrap(); left.add(x).unwrap(); }
            for &x in &b { seq.add(x).unwrap(); right.add(x).unwrap(); }
            left.merge(&right).unwrap();
            prop_assert_eq!(left.count(), seq.count());
            for q in [0.1, 0.5, 0.95, 0.99] {
                prop_assert_eq!(left.quantile(q), seq.quantile(q));
            }
        }

        #[test]
        fn json_round_trip_keeps_quantiles(a in proptest::collection::vec(0.0f64..1e6, 1..100)) {
            let mut s = QuantileSketch::default();
            for &x in &a { s.add(x).unwrap(); }
            let back: QuantileSketch = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
            for q in [0.0, 0.5, 0.95, 1.0] {
                prop_assert_eq!(back.quantile(q), s.quantile(q));
            }
        }
    }
}
