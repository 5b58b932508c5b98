//! The one error type of this crate.

use thiserror::Error;

/// Everything that can go wrong when building or feeding a statistic.
///
/// Every message names the offending value and says what to pass instead.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum StatsError {
    /// A significance level or error rate outside (0, 1).
    #[error(
        "{name} must be strictly between 0 and 1, got {value}; pass a probability such as 0.05"
    )]
    InvalidProbability {
        /// Name of the parameter.
        name: &'static str,
        /// The value received.
        value: f64,
    },
    /// A parameter that must be a finite number strictly above zero.
    #[error("{name} must be a finite number above 0, got {value}")]
    NotPositive {
        /// Name of the parameter.
        name: &'static str,
        /// The value received.
        value: f64,
    },
    /// A value that must be finite (not NaN, not infinite).
    #[error("{name} must be a finite number, got {value}; drop or repair the sample")]
    NotFinite {
        /// Name of the parameter.
        name: &'static str,
        /// The value received.
        value: f64,
    },
    /// Event counts larger than their sample sizes, or similar count inconsistencies.
    #[error("inconsistent counts: {0}; pass events <= trials for every arm")]
    InconsistentCounts(String),
    /// Two inputs of different lengths that must match.
    #[error("{what}: expected {expected} entries, got {got}; pass one entry per arm")]
    LengthMismatch {
        /// What was being compared.
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Received length.
        got: usize,
    },
    /// Not enough data for the requested statistic.
    #[error("not enough data: {0}; record more observations before asking")]
    NotEnoughData(&'static str),
    /// Two sketches or states built with different parameters cannot be merged.
    #[error("cannot merge: {0}; merge only states built with the same configuration")]
    IncompatibleMerge(&'static str),
    /// A weight list that is empty, negative, or sums to zero.
    #[error("invalid weights: {0}; pass at least one positive finite weight")]
    InvalidWeights(String),
    /// A name used twice or never registered.
    #[error("unknown or duplicate metric name {0:?}; register each metric exactly once")]
    UnknownMetric(String),
}

/// Shorthand result type.
pub type Result<T> = std::result::Result<T, StatsError>;

pub(crate) fn check_probability(name: &'static str, value: f64) -> Result<f64> {
    if value.is_finite() && value > 0.0 && value < 1.0 {
        Ok(value)
    } else {
        Err(StatsError::InvalidProbability { name, value })
    }
}

pub(crate) fn check_positive(name: &'static str, value: f64) -> Result<f64> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(StatsError::NotPositive { name, value })
    }
}

pub(crate) fn check_finite(name: &'static str, value: f64) -> Result<f64> {
    if value.is_finite() { Ok(value) } else { Err(StatsError::NotFinite { name, value }) }
}
