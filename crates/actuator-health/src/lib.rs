//! Health monitor for LLM configuration rollouts.
//!
//! Applications report one [`Observation`] per request (and later [`QualityUpdate`]s); a
//! [`RolloutHealth`] aggregates them per (phase, arm) in bounded memory and, at every
//! [`RolloutHealth::look`], decides [`Decision::Continue`], `Promote`, `Rollback`,
//! `Inconclusive` or `Halt`, with an [`Explanation`] holding every estimate, interval,
//! e-value, threshold and rule.
//!
//! Comparisons use the anytime-valid statistics of `actuator-stats` under one false-rollback
//! budget across metrics, phases and the SLO guards (the seed's checks and triggers, which
//! fire only when the canary is beyond its threshold with confidence and confidently worse
//! than its reference); only the catastrophic guard sits outside the budget. Stages have
//! roles (smoke, prove, watch); a stage without a control compares with the stable's numbers
//! frozen from the last compared phase ([`Baseline`]). Pure, synchronous, no IO, no clock.

mod aggregate;
mod baseline;
mod config;
mod decision;
mod dedup;
mod error;
mod guards;
mod observation;
mod rollout;

pub use actuator_stats::UnitsRecur;
pub use aggregate::{ArmStats, LOG_LATENCY_FLOOR_MS, RecentWindow};
pub use baseline::{Baseline, Handover};
pub use config::{
    AnalysisMode, ArmShare, CostMetricConfig, ErrorMetricConfig, GuardKind, HardGuardConfig,
    HealthConfig, LatencyMetricConfig, MarginOverrides, PhaseConfig, PrimaryMetric,
    QualityMetricConfig, ResolvedMargins, SloGuard, SloGuardConfig, SloThreshold, SrmConfig,
    StageRole, TailMetricConfig, UnreachablePolicy,
};
pub use decision::{
    ArmComparison, ArmSummary, BenefitReport, CheckReport, CheckStatus, ClassicalReport, Decision,
    Evaluation, Explanation, FiredRule, Gates, HaltReason, HealthRecord, Holding, MetricPoint,
    MetricReport, MetricVerdict, ProjectedNeed, RuleKind,
};
pub use dedup::{DEFAULT_DEDUP_CAPACITY, DedupEntry, RequestDedup};
pub use error::{HealthError, Result};
pub use observation::{Arm, MAX_REQUEST_ID_BYTES, Observation, Outcome, QualityUpdate};
pub use rollout::{BatchReport, RecordOutcome, RolloutHealth};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
