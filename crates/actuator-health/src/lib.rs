//! Health monitor for LLM configuration rollouts.
//!
//! Applications report one [`Observation`] per request (and later [`QualityUpdate`]s); a
//! [`RolloutHealth`] aggregates them per (phase, arm) in bounded memory and, at every
//! [`RolloutHealth::look`], decides [`Decision::Continue`], `Promote`, `Rollback`,
//! `Inconclusive` or `Halt`, with an [`Explanation`] holding every estimate, interval,
//! e-value, threshold and rule.
//!
//! Comparisons use the anytime-valid statistics of `actuator-stats` under one false-rollback
//! budget across metrics and phases; the seed's eight checks remain as guard rails; a
//! catastrophic guard fires within a few requests. Pure, synchronous, no IO, no clock.

mod aggregate;
mod config;
mod decision;
mod dedup;
mod error;
mod observation;
mod rollout;

pub use aggregate::{ArmStats, LOG_LATENCY_FLOOR_MS, RecentWindow};
pub use config::{
    AnalysisMode, ArmShare, CostMetricConfig, ErrorMetricConfig, GuardRailConfig, HardGuardConfig,
    HealthConfig, LatencyMetricConfig, MarginOverrides, PhaseConfig, PrimaryMetric,
    QualityMetricConfig, SloThreshold, SrmConfig, TailMetricConfig,
};
pub use decision::{
    ArmComparison, ArmSummary, BenefitReport, CheckReport, CheckStatus, ClassicalReport, Decision,
    Evaluation, Explanation, FiredRule, Gates, HaltReason, HealthRecord, MetricReport,
    ProjectedNeed, RuleKind,
};
pub use dedup::{DEFAULT_DEDUP_CAPACITY, DedupEntry, RequestDedup};
pub use error::{HealthError, Result};
pub use observation::{Arm, MAX_REQUEST_ID_BYTES, Observation, Outcome, QualityUpdate};
pub use rollout::{BatchReport, RecordOutcome, RolloutHealth};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
