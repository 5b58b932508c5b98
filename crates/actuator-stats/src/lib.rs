//! Anytime-valid sequential statistics for canary analysis.
//!
//! Pure, synchronous, no IO. Every stateful type keeps sufficient statistics or a fixed-size
//! sketch (never raw samples) and is `Serialize`/`Deserialize`, so a restarted process resumes
//! with exactly the same evidence. The formulas follow `statistics.md` §5.10:
//!
//! * [`ConditionalBinomial`]: exact e-process for error events, any share, any sample size.
//! * [`HalfNormalMixture`]: one-sided mSPRT for differences of means and proportions, with τ
//!   from the minimum detectable effect ([`tau_from_mde`]), and the always-valid confidence
//!   sequence from the same mixture ([`HalfNormalMixture::interval`], [`RunningInterval`]).
//! * [`estimate`]: θ̂ and V for means (Welch), relative means (delta method), proportions
//!   (pooled for rollback, under the margin for promotion).
//! * [`ExceedanceTest`]: tail latency against thresholds frozen before the phase.
//! * [`EvidenceLedger`]: one false-rollback budget across metrics and phases.
//! * [`cluster`]: cluster-robust ratio estimates over hashed user buckets ([`ClusteredRatio`]),
//!   for sticky assignment; design effect and effective sample size.
//! * [`UnitRecurrence`]: do assignment units return? (decides whether phases may multiply
//!   their evidence).
//! * [`srm_log_e`]: sample-ratio-mismatch guard; [`srm_clustered_log_e`] counts assignment
//!   units (hashed user buckets) instead of requests.
//! * [`classical`]: z-test, Welch t-test, intervals, effect sizes, fixed-horizon designs.
//! * [`QuantileSketch`]: bounded-memory, mergeable DDSketch; [`RunningStats`]: Welford moments.

pub mod budget;
pub mod classical;
pub mod cluster;
pub mod cond_binom;
mod error;
pub mod estimate;
pub mod exceedance;
pub mod msprt;
pub mod normal;
pub mod recurrence;
pub mod running;
pub mod sketch;
pub mod srm;

pub use budget::{EvidenceLedger, LedgerEntry, LedgerVerdict};
pub use cluster::{
    ClusteredRatio, DEFAULT_CLUSTER_BUCKETS, MIN_EFFECTIVE_BUCKETS, MIN_NONEMPTY_BUCKETS,
    UNIT_BUCKETS, UnitErrors,
};
pub use cond_binom::{CondBinomConfig, ConditionalBinomial, RatioDirection, q_ratio};
pub use error::{Result, StatsError};
pub use estimate::Stratified;
pub use exceedance::{ExceedanceCounter, ExceedanceTest, freeze_threshold};
pub use msprt::{
    Estimate, HalfNormalMixture, Interval, RunningInterval, c_alpha, p_value_from_log_e,
    tau_from_mde,
};
pub use recurrence::{RECURRENCE_CHECKS, RECURRENCE_SHARE, UnitRecurrence, UnitsRecur};
pub use running::RunningStats;
pub use sketch::QuantileSketch;
pub use srm::{srm_clustered_log_e, srm_log_e, srm_mismatch};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
