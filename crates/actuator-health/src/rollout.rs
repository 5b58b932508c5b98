//! [`RolloutHealth`]: the health monitor of one rollout.
//!
//! Recording (validation, de-duplication, the catastrophic guard, late quality scores) and
//! the data-quality halt stay in this file; the SLO guards are in `guards.rs`, the frozen
//! baseline in `baseline.rs`, stage roles and margins in `config.rs`.

use std::collections::VecDeque;

use actuator_stats::classical::{two_proportion_z_test, welch_t_test};
use actuator_stats::cluster::{self, MIN_EFFECTIVE_BUCKETS, MIN_NONEMPTY_BUCKETS};
use actuator_stats::estimate::{
    mean_difference, proportion_difference_pooled, proportion_difference_under_margin,
    relative_mean_difference,
};
use actuator_stats::{
    ClusteredRatio, CondBinomConfig, ConditionalBinomial, Estimate, EvidenceLedger,
    ExceedanceCounter, ExceedanceTest, HalfNormalMixture, RatioDirection, Stratified, UnitErrors,
    UnitRecurrence, UnitsRecur, freeze_threshold, p_value_from_log_e, srm_clustered_log_e,
    srm_log_e,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::aggregate::{ArmStats, Clean};
use crate::baseline::{Baseline, Handover};
use crate::config::{
    AnalysisMode, GuardKind, HealthConfig, PhaseConfig, PrimaryMetric, StageRole, UnreachablePolicy,
};
use crate::decision::{
    ArmComparison, ArmSummary, BenefitReport, CheckReport, CheckStatus, ClassicalReport, Decision,
    Evaluation, Explanation, FiredRule, Gates, HaltReason, HealthRecord, Holding, MetricPoint,
    MetricReport, MetricVerdict, ProjectedNeed, RuleKind,
};
use crate::dedup::{DedupEntry, RequestDedup, arm_request_key, request_key};
use crate::error::{HealthError, Result};
use crate::guards::{self, GuardEval, GuardInput};
use crate::observation::{
    Arm, Observation, Outcome, QualityUpdate, check_non_negative, check_quality, check_request_id,
    invalid,
};

const METRIC_ERRORS: &str = "errors";
const METRIC_LATENCY: &str = "latency";
const METRIC_COST: &str = "cost";
const METRIC_QUALITY: &str = "quality";

/// What happened to one recorded item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordOutcome {
    /// Counted.
    Recorded,
    /// A retry of a request already counted: ignored.
    Duplicate,
    /// A late quality score was added.
    QualityRecorded,
    /// A second quality score for the same request: ignored.
    QualityIgnored,
    /// An outcome or score of a request served in another phase: dropped and counted.
    Stale,
    /// A late score without a phase for a request no longer remembered: dropped and counted.
    Unphased,
    /// A request routed outside the phase share: counted separately, never compared.
    OutsideExperiment,
}

/// Result of [`RolloutHealth::record_batch`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchReport {
    /// Observations counted.
    pub recorded: u64,
    /// Retries ignored.
    pub duplicates: u64,
    /// Rejected items: (index in the batch, error).
    pub errors: Vec<(usize, String)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TailTest {
    key: String,
    /// Threshold frozen for this phase (ms), `None` when none is known yet.
    threshold_ms: Option<f64>,
    /// The quantile it was frozen at (`None` for fixed SLO thresholds).
    #[serde(default)]
    quantile: Option<f64>,
    mde_abs: f64,
    margin: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TreatmentState {
    arm: usize,
    ledger: EvidenceLedger,
    /// Per ledger metric, the stratified promotion-side estimate of completed phases.
    strat: Vec<Stratified>,
    /// Per ledger metric, the stratified rollback-side (harm) estimate of completed phases
    /// whose test pooled: the mixture of the next phase runs over it and the new estimate.
    #[serde(default)]
    harm_strat: Vec<Stratified>,
    benefit_carried_log_e: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PhaseState {
    index: u32,
    config: PhaseConfig,
    started_at: DateTime<Utc>,
    /// Parallel to `RolloutHealth::arms`.
    stats: Vec<ArmStats>,
    tail: Vec<TailTest>,
    /// Per active SLO guard: index of its latency threshold in `ArmStats::exceedance`.
    #[serde(default)]
    guard_exceedance: Vec<Option<usize>>,
    /// The frozen baseline's exceedance at each of this phase's thresholds (phases without a
    /// control that follow a compared phase).
    #[serde(default)]
    baseline_exceedance: Vec<Option<ExceedanceCounter>>,
    /// Latched catastrophic-guard rule per arm.
    tripped: Vec<Option<FiredRule>>,
    srm_max_log_e: f64,
}

/// Per-metric result of one look, before it is turned into a report.
struct MetricEval {
    key: String,
    log_e: f64,
    harm: Option<Estimate>,
    lower_mix: Option<HalfNormalMixture>,
    promo: Option<Estimate>,
    promo_mix: Option<HalfNormalMixture>,
    margin: Option<f64>,
    /// The metric cannot block promotion (no data by design, no frozen threshold yet, or not
    /// required in this stage).
    optional: bool,
    /// Values of the metric in the current phase (requests, latencies, judged scores...).
    units: u64,
    /// A clustered test still short of its bucket burn-in: no evidence and no bound yet.
    burning_in: bool,
    /// `Some(θ0)` when `log_e` is the mixture `lower_mix` on `harm` against `θ0` with a
    /// concurrent control: then the evidence pools across phases (`harm_strat`).
    pool: Option<f64>,
    note: Option<String>,
}

/// ln e of the conditional-binomial error test (statistics.md §5.2) for `canary` and
/// `control` error events at canary share `pi` of the pair, at level `alpha`.
fn cond_binom_log_e(cfg: &HealthConfig, alpha: f64, canary: u64, control: u64, pi: f64) -> f64 {
    let cb = CondBinomConfig {
        mde_ratio: cfg.errors.mde_ratio,
        grid_points: 40,
        tolerance_ratio: cfg.errors.tolerance_ratio,
        direction: RatioDirection::Increase,
        scale_alpha: alpha,
    };
    ConditionalBinomial::new(cb).and_then(|e| e.log_e_with(canary, control, pi)).unwrap_or(0.0)
}

/// ln e of the conditional-binomial test of "the canary's event rate is higher" for any rare
/// event (requests above a latency threshold), tuned to a rate ratio `mde_ratio`.
fn event_log_e(mde_ratio: f64, alpha: f64, canary: u64, control: u64, pi: f64) -> f64 {
    let cb = CondBinomConfig {
        mde_ratio,
        grid_points: 40,
        tolerance_ratio: 1.0,
        direction: RatioDirection::Increase,
        scale_alpha: alpha,
    };
    ConditionalBinomial::new(cb).and_then(|e| e.log_e_with(canary, control, pi)).unwrap_or(0.0)
}

/// Per-value measurement resolution of the mean tests, as a fraction of the metric's unit
/// (latency and cost are compared as relative changes; quality on its range): 0.1%.
const RELATIVE_RESOLUTION: f64 = 1e-3;

/// An estimate whose variance is at least that of values measured to `resolution`:
/// `resolution² · (1/n_t + 1/n_c)`. A metric that does not vary (a flat price per request, a
/// cached answer) has a sample variance of 0 up to rounding, which would turn a rounding
/// difference between the arms into certainty; with the floor, identical constants give no
/// evidence and different constants still give plenty.
fn resolution_floor(est: Option<Estimate>, resolution: f64, nt: u64, nc: u64) -> Option<Estimate> {
    let est = est?;
    if nt == 0 || nc == 0 {
        return Some(est);
    }
    let floor = resolution * resolution * (1.0 / nt as f64 + 1.0 / nc as f64);
    if est.variance >= floor { Some(est) } else { Estimate::new(est.theta, floor).ok() }
}

/// A clustered estimate whose variance is at least the i.i.d. one: requests of one user are
/// alike, not opposite, so a cluster-robust variance below the i.i.d. variance is the noise
/// of a small number of buckets, never information.
fn at_least_iid(clustered: Option<Estimate>, iid: Option<Estimate>) -> Option<Estimate> {
    clustered.map(|c| widened(c, iid))
}

/// `base` with the larger of its variance and `other`'s (a finite one): the one rule behind
/// "never below the i.i.d. variance" here and "at least the clustered variance" in the guards.
pub(crate) fn widened(base: Estimate, other: Option<Estimate>) -> Estimate {
    match other {
        Some(o) if o.variance.is_finite() && o.variance > base.variance => {
            Estimate::new(base.theta, o.variance).unwrap_or(base)
        }
        _ => base,
    }
}

fn fin(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// The health monitor of one rollout: per-phase arms, carried evidence, bounded history.
///
/// Pure and synchronous: time is passed in, nothing reads a clock or does IO. The whole
/// state is `Serialize`/`Deserialize`; a restored monitor takes exactly the same decisions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RolloutHealth {
    rollout_id: String,
    slot: String,
    mode: AnalysisMode,
    config: HealthConfig,
    arms: Vec<Arm>,
    control: Option<usize>,
    treatments: Vec<TreatmentState>,
    phase: PhaseState,
    /// The stable's numbers frozen from the last compared phase (no-control monitors only).
    #[serde(default)]
    baseline: Option<Baseline>,
    dedup: RequestDedup,
    history: VecDeque<HealthRecord>,
    last: Option<Evaluation>,
    duplicates: u64,
    /// Whether assignment units return (sticky splits): decides how phases combine.
    #[serde(default)]
    recurrence: UnitRecurrence,
}

impl RolloutHealth {
    /// A monitor for `rollout_id` on `slot` (empty slot accepts any), starting `first_phase` at `now`.
    ///
    /// With several treatment arms (A/B) each arm's ledger gets α_total / k, so the whole
    /// test stays inside one budget.
    ///
    /// # Errors
    /// [`HealthError::InvalidConfig`] when the configuration, the mode or the phase is invalid.
    pub fn new(
        rollout_id: impl Into<String>,
        slot: impl Into<String>,
        mode: AnalysisMode,
        config: HealthConfig,
        first_phase: PhaseConfig,
        now: DateTime<Utc>,
    ) -> Result<Self> {
        config.validate()?;
        let rollout_id = rollout_id.into();
        if rollout_id.trim().is_empty() {
            return Err(HealthError::InvalidConfig("rollout_id must not be empty".into()));
        }
        let arms: Vec<Arm> = first_phase.shares.iter().map(|s| s.arm.clone()).collect();
        let control = arms.iter().position(|a| *a == Arm::Control);
        let treatments_idx: Vec<usize> = (0..arms.len()).filter(|&i| Some(i) != control).collect();
        check_mode_arms(&mode, &arms)?;
        let weights = ledger_weights(&config);
        let alpha_arm = config.alpha_rollback_total / treatments_idx.len().max(1) as f64;
        let treatments = treatments_idx
            .iter()
            .map(|&arm| {
                Ok(TreatmentState {
                    arm,
                    ledger: EvidenceLedger::new(alpha_arm, &weights)?,
                    strat: vec![Stratified::new(); weights.len()],
                    harm_strat: vec![Stratified::new(); weights.len()],
                    benefit_carried_log_e: 0.0,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let dedup = RequestDedup::new(config.dedup_capacity);
        let mut me = Self {
            rollout_id,
            slot: slot.into(),
            mode,
            config,
            arms,
            control,
            treatments,
            phase: PhaseState {
                index: 0,
                config: first_phase.clone(),
                started_at: now,
                stats: Vec::new(),
                tail: Vec::new(),
                guard_exceedance: Vec::new(),
                baseline_exceedance: Vec::new(),
                tripped: Vec::new(),
                srm_max_log_e: 0.0,
            },
            baseline: None,
            dedup,
            history: VecDeque::new(),
            last: None,
            duplicates: 0,
            recurrence: UnitRecurrence::new(),
        };
        me.phase = me.build_phase(0, first_phase, now, None)?;
        Ok(me)
    }

    /// The rollout id.
    pub fn rollout_id(&self) -> &str {
        &self.rollout_id
    }

    /// The analysis mode.
    pub const fn mode(&self) -> &AnalysisMode {
        &self.mode
    }

    /// The configuration.
    pub const fn config(&self) -> &HealthConfig {
        &self.config
    }

    /// The arms, in the order of the first phase.
    pub fn arms(&self) -> &[Arm] {
        &self.arms
    }

    /// Current phase index (0-based).
    pub const fn phase_index(&self) -> u32 {
        self.phase.index
    }

    /// Current phase configuration.
    pub const fn phase_config(&self) -> &PhaseConfig {
        &self.phase.config
    }

    /// Statistics of `arm` in the current phase.
    pub fn arm_stats(&self, arm: &Arm) -> Option<&ArmStats> {
        self.arms.iter().position(|a| a == arm).map(|i| &self.phase.stats[i])
    }

    /// The frozen baseline a no-control monitor compares with, if any.
    pub const fn baseline(&self) -> Option<&Baseline> {
        self.baseline.as_ref()
    }

    /// K, the phases the rollout plans (the engine's plan, the step at 100 % included): when
    /// assignment units return across phases, each phase is judged alone on 1/K of the
    /// budget ([`actuator_stats::budget`]).
    pub fn set_planned_phases(&mut self, phases: u32) {
        for t in &mut self.treatments {
            t.ledger.set_planned_phases(phases);
        }
    }

    /// Whether assignment units return across phases, as far as this monitor knows: only
    /// sticky splits (requests with a unit) can tell; without units every request is its own.
    pub fn units_recur(&self) -> UnitsRecur {
        if self.phase.stats.iter().any(|s| s.clusters.is_some()) {
            self.recurrence.decision()
        } else {
            UnitsRecur::No
        }
    }

    /// Retries ignored so far.
    pub const fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// The bounded health history, oldest first.
    pub fn history(&self) -> impl Iterator<Item = &HealthRecord> {
        self.history.iter()
    }

    /// The last evaluation, if any look happened.
    pub const fn last_evaluation(&self) -> Option<&Evaluation> {
        self.last.as_ref()
    }

    /// ln E_m carried for `metric` of treatment `arm` (product over phases, including the
    /// current phase as of the last look or phase change).
    pub fn log_e_value(&self, arm: &Arm, metric: &str) -> Option<f64> {
        let t = self.treatments.iter().find(|t| &self.arms[t.arm] == arm)?;
        t.ledger.entry(metric).map(actuator_stats::LedgerEntry::log_e)
    }

    /// Approximate bytes held; bounded by configuration (sketch bins, dedup capacity,
    /// history capacity), never by the number of observations.
    pub fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.phase.stats.iter().map(ArmStats::approx_bytes).sum::<usize>()
            + self.baseline.as_ref().map_or(0, |b| b.stable.approx_bytes())
            + self.dedup.approx_bytes()
            + self
                .history
                .iter()
                .map(|r| {
                    std::mem::size_of::<HealthRecord>()
                        + 256
                        + r.metrics.len() * (std::mem::size_of::<MetricPoint>() + 16)
                })
                .sum::<usize>()
            + self.treatments.len() * 1024
    }

    /// Builds phase `index`. `reference` is the arm whose sketch freezes the tail thresholds
    /// (the control of the ending phase, or the frozen baseline).
    fn build_phase(
        &self,
        index: u32,
        config: PhaseConfig,
        now: DateTime<Utc>,
        reference: Option<&ArmStats>,
    ) -> Result<PhaseState> {
        self.check_phase(&config)?;
        let t = &self.config.latency_tail;
        let mut tail = Vec::new();
        for (i, q) in t.quantiles.iter().enumerate() {
            let from_previous = reference.and_then(|p| freeze_threshold(&p.latency_sketch, *q));
            let baseline =
                config.baseline_tail_thresholds_ms.as_ref().and_then(|v| v.get(i).copied());
            let threshold_ms = from_previous
                .or(if reference.is_none() { baseline } else { None })
                .filter(|x| *x > 0.0 && x.is_finite());
            tail.push(TailTest {
                key: format!("tail:q{q}"),
                threshold_ms,
                quantile: Some(*q),
                mde_abs: t.mde_abs[i],
                margin: t.promote_margin_abs[i],
            });
        }
        for s in &t.slo_thresholds {
            tail.push(TailTest {
                key: format!("tail:slo:{}ms", s.threshold_ms),
                threshold_ms: Some(s.threshold_ms),
                quantile: None,
                mde_abs: s.mde_abs,
                margin: s.promote_margin_abs,
            });
        }
        let mut thresholds: Vec<f64> = tail.iter().filter_map(|x| x.threshold_ms).collect();
        let n_tail_thresholds = thresholds.len();
        let mut guard_exceedance = Vec::new();
        for g in self.config.slo_guards.active() {
            if let GuardKind::Latency { .. } = g.kind {
                guard_exceedance.push(Some(thresholds.len()));
                thresholds.push(g.threshold);
            } else {
                guard_exceedance.push(None);
            }
        }
        // Without a control, the frozen baseline stands in: its exceedance at the tail
        // thresholds frozen from its own sketch is (1 − q) by construction; at the fixed SLO
        // thresholds its counters are reused when it had them.
        let baseline_exceedance = match (&self.baseline, self.control) {
            (Some(b), None) => {
                let n = b.stable.latency_sketch.count();
                let mut out = Vec::new();
                let frozen = tail.iter().filter(|x| x.threshold_ms.is_some());
                for tt in frozen {
                    let thr = tt.threshold_ms.unwrap_or(f64::NAN);
                    out.push(match tt.quantile {
                        Some(q) => {
                            let exceed = ((1.0 - q) * n as f64).round() as u64;
                            ExceedanceCounter::from_counts(thr, exceed.min(n), n).ok()
                        }
                        None => b.stable.exceedance.iter().find(|c| c.threshold() == thr).copied(),
                    });
                }
                for thr in &thresholds[n_tail_thresholds..] {
                    out.push(b.stable.exceedance.iter().find(|c| c.threshold() == *thr).copied());
                }
                out
            }
            _ => Vec::new(),
        };
        let window = self.config.hard_guard.min_requests as usize;
        let stats = self
            .arms
            .iter()
            .map(|_| {
                ArmStats::new(
                    &thresholds,
                    window,
                    self.config.sketch_relative_accuracy,
                    self.config.sketch_max_bins,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(PhaseState {
            index,
            config,
            started_at: now,
            stats,
            tail,
            guard_exceedance,
            baseline_exceedance,
            tripped: vec![None; self.arms.len()],
            srm_max_log_e: 0.0,
        })
    }

    fn check_phase(&self, p: &PhaseConfig) -> Result<()> {
        let bad = |m: String| Err(HealthError::InvalidConfig(m));
        if p.shares.len() != self.arms.len() || self.arms.iter().any(|a| p.share_of(a).is_none()) {
            let want: Vec<&str> = self.arms.iter().map(Arm::label).collect();
            return bad(format!("a phase must list exactly the arms {want:?}, once each"));
        }
        for (i, s) in p.shares.iter().enumerate() {
            if p.shares[..i].iter().any(|o| o.arm == s.arm) {
                return bad(format!("arm {} is listed twice in the phase", s.arm));
            }
        }
        if !matches!(self.mode, AnalysisMode::Shadow) {
            let lo_ok = p.shares.iter().all(|s| s.share.is_finite() && s.share > 0.0);
            let total: f64 = p.shares.iter().map(|s| s.share).sum();
            let single = matches!(self.mode, AnalysisMode::NoControl);
            if !lo_ok || (!single && (total - 1.0).abs() > 1e-6) || (single && total > 1.0 + 1e-9) {
                return bad(format!("phase shares {:?} must be above 0 and sum to 1", p.shares));
            }
        }
        if p.min_duration_secs < 0 || p.max_duration_secs.is_some_and(|d| d < 0) {
            return bad("phase durations must not be negative".into());
        }
        for v in [p.margins.errors_abs, p.margins.quality_abs].into_iter().flatten() {
            if !(v.is_finite() && v > 0.0) {
                return bad(format!("margin override {v} must be above 0"));
            }
        }
        for v in [p.margins.latency_ratio, p.margins.cost_ratio, p.margins.errors_ratio]
            .into_iter()
            .flatten()
        {
            if !(v.is_finite() && v > 1.0) {
                return bad(format!("ratio margin override {v} must be above 1"));
            }
        }
        if let Some(b) = &p.baseline_tail_thresholds_ms
            && (b.len() != self.config.latency_tail.quantiles.len()
                || b.iter().any(|x| !(x.is_finite() && *x > 0.0)))
        {
            return bad(
                "baseline_tail_thresholds_ms needs one positive value per tail quantile".into()
            );
        }
        Ok(())
    }

    /// Ends the current phase and starts `next` at `now`: evidence is frozen and carried
    /// (multiplied), tail thresholds are frozen from the control's sketch of the ending phase
    /// (or the frozen baseline without a control), and fresh statistics start. On error
    /// nothing changes.
    ///
    /// # Errors
    /// [`HealthError::InvalidConfig`] when the phase does not list the rollout's arms or its
    /// shares are invalid.
    pub fn start_phase(&mut self, next: PhaseConfig, now: DateTime<Utc>) -> Result<()> {
        let reference = match self.control {
            Some(c) => Some(&self.phase.stats[c]),
            None => self.baseline.as_ref().map(|b| &b.stable),
        };
        let phase = self.build_phase(self.phase.index + 1, next, now, reference)?;
        for ti in 0..self.treatments.len() {
            self.close_treatment_phase(ti);
        }
        self.phase = phase;
        Ok(())
    }

    /// Freezes treatment `ti`'s current evidence into its ledger and its promotion-side
    /// estimates into the stratified pools.
    fn close_treatment_phase(&mut self, ti: usize) {
        let evals = self.evaluate_metrics(ti);
        let guard_evals = self.guard_evals(ti);
        let benefit = self.benefit_log_e(ti).map(|(l, _)| l);
        for (mi, e) in evals.iter().enumerate() {
            self.set_metric_evidence(ti, mi, e);
            let t = &mut self.treatments[ti];
            if let Some(p) = e.promo {
                t.strat[mi].add(p);
            }
            if let (Some(_), Some(h), Some(pool)) = (e.pool, e.harm, t.harm_strat.get_mut(mi)) {
                pool.add(h);
            }
        }
        let t = &mut self.treatments[ti];
        for g in &guard_evals {
            let _ = t.ledger.set_current(&g.key, g.log_e);
        }
        t.ledger.close_phase();
        t.benefit_carried_log_e += benefit.unwrap_or(0.0);
    }

    /// What the monitor of a stage without a control needs from this one: the stable's
    /// numbers frozen from the current phase (when it has control traffic; otherwise the
    /// baseline this monitor already holds) and the evidence ledger of the first treatment
    /// with the current phase closed. This monitor is not changed.
    pub fn handover(&self) -> Handover {
        let mut me = self.clone();
        let ledger = if me.treatments.is_empty() {
            None
        } else {
            me.close_treatment_phase(0);
            Some(me.treatments[0].ledger.clone())
        };
        let baseline = match self.control {
            Some(c) if self.phase.stats[c].requests > 0 => {
                Some(Baseline { phase: self.phase.index, stable: self.phase.stats[c].clone() })
            }
            _ => self.baseline.clone(),
        };
        Handover { baseline, ledger, next_phase: self.phase.index + 1 }
    }

    /// Continues a rollout in this (no-control) monitor after `handover`: the evidence
    /// carried so far is multiplied onto this monitor's ledger (one budget for the whole
    /// rollout) and the comparisons use the frozen baseline. Call it on a fresh monitor,
    /// before any observation.
    ///
    /// # Errors
    /// [`HealthError::InvalidConfig`] when this monitor has a control arm.
    pub fn with_handover(mut self, handover: Handover) -> Result<Self> {
        if self.control.is_some() {
            return Err(HealthError::InvalidConfig(
                "a handover continues a rollout in a monitor without a control".into(),
            ));
        }
        if let (Some(l), Some(t)) = (&handover.ledger, self.treatments.first_mut()) {
            t.ledger.absorb(l);
        }
        self.baseline = handover.baseline;
        let config = self.phase.config.clone();
        let reference = self.baseline.as_ref().map(|b| b.stable.clone());
        self.phase = self.build_phase(
            handover.next_phase,
            config,
            self.phase.started_at,
            reference.as_ref(),
        )?;
        Ok(self)
    }

    fn arm_index(&self, arm: &Arm, request_id: &str) -> Result<usize> {
        self.arms.iter().position(|a| a == arm).ok_or_else(|| HealthError::UnknownArm {
            request_id: request_id.to_string(),
            arm: arm.label().to_string(),
            known: self.arms.iter().map(Arm::label).collect::<Vec<_>>().join(", "),
        })
    }

    fn clean(&self, obs: &Observation) -> Result<(usize, Clean)> {
        let id = obs.request_id.as_str();
        check_request_id(id)?;
        if obs.rollout_id != self.rollout_id {
            return Err(HealthError::WrongRollout {
                request_id: id.to_string(),
                field: "rollout_id",
                got: obs.rollout_id.clone(),
                expected: self.rollout_id.clone(),
            });
        }
        if !self.slot.is_empty() && !obs.slot.is_empty() && obs.slot != self.slot {
            return Err(HealthError::WrongRollout {
                request_id: id.to_string(),
                field: "slot",
                got: obs.slot.clone(),
                expected: self.slot.clone(),
            });
        }
        let arm = self.arm_index(&obs.arm, id)?;
        let mut latency_ms = check_non_negative(id, "latency_ms", obs.latency_ms)?;
        let ttft_ms = check_non_negative(id, "ttft_ms", obs.ttft_ms)?;
        let cost = check_non_negative(id, "cost", obs.cost)?;
        let quality =
            obs.quality.map(|q| check_quality(id, q, self.config.quality.range)).transpose()?;
        match obs.outcome {
            Outcome::Ok if latency_ms.is_none() => {
                return Err(invalid(id, "latency_ms", "is required for a successful request"));
            }
            Outcome::Timeout => {
                latency_ms = match (latency_ms, self.config.timeout_ms) {
                    (Some(l), Some(t)) => Some(l.max(t)),
                    (Some(l), None) => Some(l),
                    (None, Some(t)) => Some(t),
                    (None, None) => {
                        return Err(invalid(
                            id,
                            "latency_ms",
                            "is required for a timeout unless config.timeout_ms is set",
                        ));
                    }
                };
            }
            _ => {}
        }
        Ok((
            arm,
            Clean {
                outcome: obs.outcome,
                latency_ms,
                ttft_ms,
                tokens_in: obs.tokens_in,
                tokens_out: obs.tokens_out,
                cost,
                quality,
                unit: obs.unit.map_or_else(|| request_key(id), u64::from),
                has_unit: obs.unit.is_some(),
            },
        ))
    }

    /// Validates and records one observation. Retries (same logical request id, whichever arm
    /// served them) are counted once. Timeouts count as error events and as latency at the
    /// timeout. An observation of another phase is dropped as stale and counted; one outside
    /// the experiment is counted separately and never compared; one carrying a `unit` (a
    /// sticky split) also feeds the cluster statistics of the phase.
    ///
    /// # Errors
    /// A per-item [`HealthError`] (NaN, negative values, quality out of range, unknown arm,
    /// wrong rollout); nothing changes.
    pub fn record(&mut self, obs: &Observation) -> Result<RecordOutcome> {
        let (arm, clean) = self.clean(obs)?;
        match obs.phase {
            Some(p) if p != self.phase.index => {
                let s = &mut self.phase.stats[arm];
                s.stale = s.stale.saturating_add(1);
                return Ok(RecordOutcome::Stale);
            }
            _ => {}
        }
        // One logical request counts once whichever arm served it (a retry routed to the other
        // arm is a duplicate); only shadow mode runs one request on both arms.
        let key = if matches!(self.mode, AnalysisMode::Shadow) {
            arm_request_key(self.arms[arm].label(), &obs.request_id)
        } else {
            request_key(&obs.request_id)
        };
        if self.dedup.contains(key) {
            self.duplicates += 1;
            return Ok(RecordOutcome::Duplicate);
        }
        let entry = DedupEntry {
            key,
            phase: self.phase.index,
            arm: u16::try_from(arm).unwrap_or(u16::MAX),
            quality_seen: clean.quality.is_some(),
            unit: obs.unit,
            in_experiment: obs.in_experiment,
        };
        if obs.phase.is_none() {
            let s = &mut self.phase.stats[arm];
            s.unphased = s.unphased.saturating_add(1);
        }
        if !obs.in_experiment {
            self.phase.stats[arm].record_outside(&clean);
            self.dedup.insert(entry);
            return Ok(RecordOutcome::OutsideExperiment);
        }
        if clean.has_unit {
            for s in &mut self.phase.stats {
                s.ensure_clusters();
            }
            if let Some(unit) = obs.unit {
                self.recurrence.observe(unit);
            }
        }
        // `clean` checked every value (finite, >= 0, in range), so aggregation cannot fail
        // half-way; an error here would leave at most this request partially counted.
        self.phase.stats[arm].record(&clean, self.config.cost.cap_per_request)?;
        self.dedup.insert(entry);
        self.check_hard_guard(arm);
        Ok(RecordOutcome::Recorded)
    }

    /// Remembers a request seen while the rollout is rolled back (only the stable arm is
    /// counted then): `true` the first time, `false` for a retry of a request already seen.
    pub fn remember_request(&mut self, request_id: &str) -> bool {
        let key = request_key(request_id);
        self.dedup.insert(DedupEntry {
            key,
            phase: self.phase.index,
            arm: u16::try_from(self.control.unwrap_or(0)).unwrap_or(u16::MAX),
            quality_seen: true,
            unit: None,
            in_experiment: false,
        })
    }

    fn check_hard_guard(&mut self, arm: usize) {
        let hg = self.config.hard_guard;
        if !hg.enabled || Some(arm) == self.control || self.phase.tripped[arm].is_some() {
            return;
        }
        let s = &self.phase.stats[arm];
        let (we, wn) = s.recent.counts();
        let window_trip = s.recent.is_full() && f64::from(we) >= hg.error_rate * f64::from(wn);
        let total_trip = s.requests >= u64::from(hg.min_requests)
            && s.error_events() as f64 >= hg.error_rate * s.requests as f64;
        if window_trip || total_trip {
            let (e, n) = if window_trip {
                (u64::from(we), u64::from(wn))
            } else {
                (s.error_events(), s.requests)
            };
            self.phase.tripped[arm] = Some(FiredRule {
                kind: RuleKind::Catastrophic,
                metric: "error_rate".into(),
                value: Some(e as f64 / n as f64),
                threshold: Some(hg.error_rate),
                log_e_value: None,
                message: format!(
                    "catastrophic: {e} errors in {n} {} requests (>= {:.0}% over >= {} requests)",
                    self.arms[arm],
                    100.0 * hg.error_rate,
                    hg.min_requests
                ),
            });
        }
    }

    /// Records a quality score that arrives after the request (or for a request recorded
    /// without one). The score joins the phase its request was served in: a remembered request
    /// gives its phase, arm and unit; otherwise the update's `phase` and `arm` must say them. A
    /// score of another phase is dropped as stale, one without a phase for a request no longer
    /// remembered is dropped as unphased (both counted), and a second score is ignored.
    ///
    /// # Errors
    /// Out-of-range or non-finite score, wrong rollout, unknown arm, or an unknown request id
    /// without an arm; nothing changes.
    pub fn record_quality(&mut self, update: &QualityUpdate) -> Result<RecordOutcome> {
        let id = update.request_id.as_str();
        check_request_id(id)?;
        if update.rollout_id != self.rollout_id {
            return Err(HealthError::WrongRollout {
                request_id: id.to_string(),
                field: "rollout_id",
                got: update.rollout_id.clone(),
                expected: self.rollout_id.clone(),
            });
        }
        let score = check_quality(id, update.score, self.config.quality.range)?;
        let sender_arm = update.arm.as_ref().map(|a| self.arm_index(a, id)).transpose()?;
        let phase = self.phase.index;
        let key = if matches!(self.mode, AnalysisMode::Shadow) {
            // paired design: the key holds the arm; try the sender's arm, else each arm
            let arms: Vec<usize> =
                sender_arm.map_or_else(|| (0..self.arms.len()).collect(), |a| vec![a]);
            arms.iter()
                .map(|&a| arm_request_key(self.arms[a].label(), id))
                .find(|k| self.dedup.contains(*k))
                .unwrap_or_else(|| request_key(id))
        } else {
            request_key(id)
        };
        if let Some(entry) = self.dedup.get_mut(key) {
            if entry.quality_seen {
                return Ok(RecordOutcome::QualityIgnored);
            }
            let arm = usize::from(entry.arm).min(self.arms.len().saturating_sub(1));
            if entry.phase != phase {
                let s = &mut self.phase.stats[arm];
                s.stale = s.stale.saturating_add(1);
                return Ok(RecordOutcome::Stale);
            }
            entry.quality_seen = true;
            if !entry.in_experiment {
                return Ok(RecordOutcome::OutsideExperiment);
            }
            let unit = entry.unit.map_or(key, u64::from);
            self.phase.stats[arm].record_quality(score, unit)?;
            return Ok(RecordOutcome::QualityRecorded);
        }
        // Not remembered (older than the dedup window, or never seen): the sender's arm and
        // phase decide.
        let Some(arm) = sender_arm else {
            return Err(HealthError::UnknownRequest(id.to_string()));
        };
        let s = &mut self.phase.stats[arm];
        match update.phase {
            Some(p) if p == phase => {
                if !update.in_experiment {
                    return Ok(RecordOutcome::OutsideExperiment);
                }
                s.record_quality(score, update.unit.map_or(key, u64::from))?;
                Ok(RecordOutcome::QualityRecorded)
            }
            Some(_) => {
                s.stale = s.stale.saturating_add(1);
                Ok(RecordOutcome::Stale)
            }
            None => {
                s.unphased = s.unphased.saturating_add(1);
                Ok(RecordOutcome::Unphased)
            }
        }
    }

    /// Records many observations; each bad item is reported with its index and skipped.
    pub fn record_batch(&mut self, batch: &[Observation]) -> BatchReport {
        let mut report = BatchReport::default();
        for (i, obs) in batch.iter().enumerate() {
            match self.record(obs) {
                Ok(RecordOutcome::Duplicate) => report.duplicates += 1,
                Ok(_) => report.recorded += 1,
                Err(e) => report.errors.push((i, e.to_string())),
            }
        }
        report
    }

    fn alpha_m(&self, ti: usize, key: &str) -> f64 {
        self.treatments[ti].ledger.alpha_for(key).unwrap_or(self.config.alpha_rollback_total)
    }

    fn mixture(&self, mde: f64, alpha: f64) -> Option<HalfNormalMixture> {
        HalfNormalMixture::for_mde(mde, alpha, 1.0 - self.config.power_for_tau).ok()
    }

    /// The treatment's statistics and the reference's: control in this phase, or the
    /// frozen baseline when the stage has no control.
    fn pair(&self, ti: usize) -> Option<(&ArmStats, &ArmStats)> {
        let t = &self.phase.stats[self.treatments[ti].arm];
        match self.control {
            Some(c) => Some((t, &self.phase.stats[c])),
            None => self.baseline.as_ref().map(|b| (t, &b.stable)),
        }
    }

    /// The reference's exceedance counter at threshold index `idx` of this phase.
    fn reference_exceedance(&self, idx: usize) -> Option<ExceedanceCounter> {
        match self.control {
            Some(c) => self.phase.stats[c].exceedance.get(idx).copied(),
            None => self.phase.baseline_exceedance.get(idx).copied().flatten(),
        }
    }

    /// Share of the treatment among (treatment + control) in the current phase.
    fn pair_share(&self, ti: usize) -> Option<f64> {
        let c = self.control?;
        let st = self.phase.config.share_of(&self.arms[self.treatments[ti].arm])?;
        let sc = self.phase.config.share_of(&self.arms[c])?;
        let pi = st / (st + sc);
        (pi > 0.0 && pi < 1.0 && !matches!(self.mode, AnalysisMode::Shadow)).then_some(pi)
    }

    fn evaluate_metrics(&self, ti: usize) -> Vec<MetricEval> {
        let cfg = &self.config;
        let margins = self.phase.config.resolved_margins(cfg);
        let role = self.phase.config.role;
        // Against a frozen baseline, time has passed: test "worse by more than the margin".
        let frozen = self.control.is_none();
        let burn = cfg.clt_burn_in.max(2);
        let beta = 1.0 - cfg.power_for_tau;
        let mut out = Vec::new();
        let pair = self.pair(ti);
        let empty = |key: &str, note: &str, optional: bool| MetricEval {
            key: key.to_string(),
            log_e: 0.0,
            harm: None,
            lower_mix: None,
            promo: None,
            promo_mix: None,
            margin: None,
            optional,
            units: 0,
            burning_in: false,
            pool: None,
            note: Some(note.to_string()),
        };
        // Sticky split: both arms keep per-user-bucket statistics, and every test below uses
        // the cluster-robust variance instead of the i.i.d. one.
        let clustered = pair
            .filter(|_| !frozen)
            .and_then(|(t, c)| t.clusters.as_deref().zip(c.clusters.as_deref()));
        // Only borrowed in branches where `clustered` is `Some`.
        let no_clusters = ClusteredRatio::default();
        let burn_note = |t: &ClusteredRatio, c: &ClusteredRatio| {
            format!(
                "burn-in: a clustered test counts from {MIN_NONEMPTY_BUCKETS} non-empty and {MIN_EFFECTIVE_BUCKETS:.0} effective user buckets per arm (canary {} and {:.1}, control {} and {:.1}); the catastrophic guard and the SLO guards act before",
                t.non_empty(),
                t.effective_buckets(),
                c.non_empty(),
                c.effective_buckets()
            )
        };
        let clustered_note =
            |what: &str| format!("{what}; clustered by user bucket (sticky split)");

        // errors
        let a_err = self.alpha_m(ti, METRIC_ERRORS);
        out.push(match pair {
            Some((t, c)) if t.requests > 0 && c.requests > 0 && clustered.is_some() => {
                let (tc, cc) = clustered
                    .map(|(a, b)| (&a.errors, &b.errors))
                    .unwrap_or((&no_clusters, &no_clusters));
                let ready = cluster::burned_in(tc, cc);
                let control_rate = (c.error_events() as f64 + 0.5) / (c.requests as f64 + 1.0);
                let delta = margins.errors_at(control_rate);
                let harm = cluster::proportion_difference_pooled(tc, cc).ok();
                let lower_mix = self.mixture(cfg.errors.mde_abs, a_err);
                // With a concurrent control at a known share, the exact event test on
                // effective counts: a normal approximation of a rare event over-reacts to a
                // few early errors. The counts are those of the per-unit comparison (units
                // weighted by their own design effect, `UnitErrors`), so a few heavy users
                // cannot carry an arm; a phase whose unit table is not complete (restored
                // from an earlier version) keeps the request counts deflated by the larger
                // design effect (Kish's effective counts) at the configured share.
                let units = clustered
                    .map(|(a, b)| (&a.unit_errors, &b.unit_errors))
                    .filter(|(ut, uc)| ut.count() == tc.count() && uc.count() == cc.count())
                    .and_then(|(ut, uc)| UnitErrors::new(ut, uc).ok());
                let exact = self.pair_share(ti).filter(|_| ready).map(|pi| match &units {
                    Some(u) => u.effective_events().map_or(0.0, |(x, y)| {
                        cond_binom_log_e(cfg, a_err, x, y, u.share())
                    }),
                    None => {
                        let d = cluster::proportion_design_effect(tc)
                            .max(cluster::proportion_design_effect(cc));
                        let deflated = |x: f64| (x / d).round() as u64;
                        cond_binom_log_e(cfg, a_err, deflated(tc.sum()), deflated(cc.sum()), pi)
                    }
                });
                MetricEval {
                    key: METRIC_ERRORS.into(),
                    log_e: match (ready, exact) {
                        (true, Some(l)) => l,
                        (true, None) => harm.zip(lower_mix).map_or(0.0, |(h, m)| m.log_e(h, 0.0)),
                        (false, _) => 0.0,
                    },
                    harm,
                    lower_mix,
                    promo: ready
                        .then(|| cluster::proportion_difference_under_margin(tc, cc, delta).ok())
                        .flatten(),
                    promo_mix: self.mixture(delta, cfg.alpha_promote),
                    margin: Some(delta),
                    optional: false,
                    units: t.requests,
                    burning_in: !ready,
                    pool: (ready && exact.is_none()).then_some(0.0),
                    note: Some(match (&units, exact) {
                        _ if !ready => burn_note(tc, cc),
                        (Some(u), Some(_)) => clustered_note(&format!(
                            "exact event test on effective counts, compared by unit (intraclass correlation {:.4}: a unit counts up to {} requests)",
                            u.icc,
                            if u.icc > 0.0 { format!("{:.0}", 1.0 / u.icc) } else { "all its".into() }
                        )),
                        (None, Some(_)) => clustered_note("exact event test on effective counts"),
                        _ => clustered_note("mSPRT on the error-rate difference"),
                    }),
                }
            }
            Some((t, c)) if t.requests > 0 && c.requests > 0 => {
                let control_rate = (c.error_events() as f64 + 0.5) / (c.requests as f64 + 1.0);
                let delta = margins.errors_at(control_rate);
                let harm = proportion_difference_pooled(
                    t.error_events(),
                    t.requests,
                    c.error_events(),
                    c.requests,
                )
                .ok();
                let promo = proportion_difference_under_margin(
                    t.error_events(),
                    t.requests,
                    c.error_events(),
                    c.requests,
                    delta,
                )
                .ok();
                let lower_mix = self.mixture(cfg.errors.mde_abs, a_err);
                let log_e = match self.pair_share(ti) {
                    Some(pi) => {
                        cond_binom_log_e(cfg, a_err, t.error_events(), c.error_events(), pi)
                    }
                    None if frozen => promo.zip(lower_mix).map_or(0.0, |(h, m)| m.log_e(h, delta)),
                    None => harm.zip(lower_mix).map_or(0.0, |(h, m)| m.log_e(h, 0.0)),
                };
                MetricEval {
                    key: METRIC_ERRORS.into(),
                    log_e,
                    harm,
                    lower_mix,
                    promo,
                    promo_mix: self.mixture(delta, cfg.alpha_promote),
                    margin: Some(delta),
                    optional: false,
                    units: t.requests,
                    burning_in: false,
                    pool: None,
                    note: Some(format!("absolute error-rate difference; margin {delta:.4}")),
                }
            }
            _ => empty(METRIC_ERRORS, "no requests in one arm yet", false),
        });

        // latency (mean of ln latency)
        let lat_margin = margins.latency_ln;
        let a_lat = self.alpha_m(ti, METRIC_LATENCY);
        out.push(match pair {
            Some((t, c))
                if t.log_latency.count() >= burn
                    && c.log_latency.count() >= burn
                    && clustered.is_some() =>
            {
                let (tc, cc) = clustered
                    .map(|(a, b)| (&a.log_latency, &b.log_latency))
                    .unwrap_or((&no_clusters, &no_clusters));
                let ready = cluster::burned_in(tc, cc);
                let est = resolution_floor(
                    at_least_iid(
                        cluster::ratio_difference(tc, cc).ok(),
                        mean_difference(&t.log_latency, &c.log_latency).ok(),
                    ),
                    RELATIVE_RESOLUTION,
                    t.log_latency.count(),
                    c.log_latency.count(),
                );
                let mix = self.mixture(cfg.latency.mde_ratio.ln(), a_lat);
                MetricEval {
                    key: METRIC_LATENCY.into(),
                    log_e: if ready {
                        est.zip(mix).map_or(0.0, |(e, m)| m.log_e(e, 0.0))
                    } else {
                        0.0
                    },
                    harm: est,
                    lower_mix: mix,
                    promo: est.filter(|_| ready),
                    promo_mix: self.mixture(lat_margin, cfg.alpha_promote),
                    margin: Some(lat_margin),
                    optional: false,
                    units: t.log_latency.count(),
                    burning_in: !ready,
                    pool: ready.then_some(0.0),
                    note: Some(if ready {
                        clustered_note("ln ratio of geometric means")
                    } else {
                        burn_note(tc, cc)
                    }),
                }
            }
            Some((t, c)) if t.log_latency.count() >= burn && c.log_latency.count() >= burn => {
                let est = resolution_floor(
                    mean_difference(&t.log_latency, &c.log_latency).ok(),
                    RELATIVE_RESOLUTION,
                    t.log_latency.count(),
                    c.log_latency.count(),
                );
                let mix = self.mixture(cfg.latency.mde_ratio.ln(), a_lat);
                let theta0 = if frozen { lat_margin } else { 0.0 };
                MetricEval {
                    key: METRIC_LATENCY.into(),
                    log_e: est.zip(mix).map_or(0.0, |(e, m)| m.log_e(e, theta0)),
                    harm: est,
                    lower_mix: mix,
                    promo: est,
                    promo_mix: self.mixture(lat_margin, cfg.alpha_promote),
                    margin: Some(lat_margin),
                    optional: false,
                    units: t.log_latency.count(),
                    burning_in: false,
                    pool: (!frozen).then_some(theta0),
                    note: Some("ln ratio of geometric means".into()),
                }
            }
            _ => empty(METRIC_LATENCY, "fewer latencies than clt_burn_in in one arm", false),
        });

        // tail exceedance sub-tests
        let mut counter = 0;
        for tt in &self.phase.tail {
            let Some(threshold) = tt.threshold_ms else {
                out.push(empty(
                    &tt.key,
                    "no frozen threshold yet (first phase without baseline)",
                    true,
                ));
                continue;
            };
            let idx = counter;
            counter += 1;
            let a = self.alpha_m(ti, &tt.key);
            let margin = if margins.tail_at_mde { tt.margin.max(tt.mde_abs) } else { tt.margin };
            let te = pair.and_then(|(t, _)| t.exceedance.get(idx).copied());
            let ce = self.reference_exceedance(idx);
            out.push(match (te, ce) {
                (Some(te), Some(ce)) if te.counts().1 >= burn && ce.counts().1 >= burn => {
                    let cl = clustered
                        .and_then(|(a, b)| a.exceedance.get(idx).zip(b.exceedance.get(idx)));
                    match ExceedanceTest::new(tt.mde_abs, a, beta) {
                        Ok(test) if cl.is_some() => {
                            let (tc, cc) = cl.unwrap_or((&no_clusters, &no_clusters));
                            let ready = cluster::burned_in(tc, cc);
                            let harm = cluster::proportion_difference_pooled(tc, cc).ok();
                            let mix = *test.mixture();
                            // As for errors: exceedances are rare events, so the exact event
                            // test on effective counts, tuned to the MDE at the frozen
                            // quantile's base rate (1 − q; ×2 for a fixed SLO threshold).
                            let exact = self.pair_share(ti).filter(|_| ready).map(|pi| {
                                let d = cluster::proportion_design_effect(tc)
                                    .max(cluster::proportion_design_effect(cc));
                                let deflated = |x: f64| (x / d).round() as u64;
                                let ratio = tt
                                    .quantile
                                    .map_or(2.0, |q| 1.0 + tt.mde_abs / (1.0 - q).max(1e-6))
                                    .clamp(1.05, 20.0);
                                event_log_e(ratio, a, deflated(tc.sum()), deflated(cc.sum()), pi)
                            });
                            MetricEval {
                                key: tt.key.clone(),
                                log_e: match (ready, exact) {
                                    (true, Some(l)) => l,
                                    (true, None) => harm.map_or(0.0, |h| mix.log_e(h, 0.0)),
                                    (false, _) => 0.0,
                                },
                                harm,
                                lower_mix: Some(mix),
                                promo: ready
                                    .then(|| {
                                        cluster::proportion_difference_under_margin(tc, cc, margin)
                                            .ok()
                                    })
                                    .flatten(),
                                promo_mix: self.mixture(margin, cfg.alpha_promote),
                                margin: Some(margin),
                                optional: false,
                                units: te.counts().1,
                                burning_in: !ready,
                                pool: (ready && exact.is_none()).then_some(0.0),
                                note: Some(if ready {
                                    clustered_note(&format!(
                                        "share of requests above {threshold:.1} ms"
                                    ))
                                } else {
                                    burn_note(tc, cc)
                                }),
                            }
                        }
                        Ok(test) => {
                            let promo = test.estimate_under_margin(&te, &ce, margin).ok();
                            let log_e = if frozen {
                                promo.map_or(0.0, |p| test.mixture().log_e(p, margin))
                            } else {
                                test.log_e(&te, &ce)
                            };
                            MetricEval {
                                key: tt.key.clone(),
                                log_e,
                                harm: test.estimate(&te, &ce).ok(),
                                lower_mix: Some(*test.mixture()),
                                promo,
                                promo_mix: self.mixture(margin, cfg.alpha_promote),
                                margin: Some(margin),
                                optional: false,
                                units: te.counts().1,
                                burning_in: false,
                                pool: None,
                                note: Some(format!("share of requests above {threshold:.1} ms")),
                            }
                        }
                        Err(_) => empty(&tt.key, "invalid tail configuration", true),
                    }
                }
                _ => empty(&tt.key, "fewer latencies than clt_burn_in in one arm", false),
            });
        }

        // cost (relative difference of means)
        let cost_margin = margins.cost_rel;
        let a_cost = self.alpha_m(ti, METRIC_COST);
        out.push(match pair {
            Some((t, c)) if t.cost.count() == 0 && c.cost.count() == 0 => {
                empty(METRIC_COST, "no cost reported", true)
            }
            Some((t, c))
                if t.cost.count() >= burn && c.cost.count() >= burn && clustered.is_some() =>
            {
                let (tc, cc) = clustered
                    .map(|(a, b)| (&a.cost, &b.cost))
                    .unwrap_or((&no_clusters, &no_clusters));
                let ready = cluster::burned_in(tc, cc);
                let est = resolution_floor(
                    at_least_iid(
                        cluster::relative_ratio_difference(tc, cc).ok(),
                        relative_mean_difference(&t.cost, &c.cost).ok(),
                    ),
                    RELATIVE_RESOLUTION,
                    t.cost.count(),
                    c.cost.count(),
                );
                let mix = self.mixture(cfg.cost.mde_ratio - 1.0, a_cost);
                let theta0 = cfg.cost.tolerance_ratio - 1.0;
                MetricEval {
                    key: METRIC_COST.into(),
                    log_e: if ready {
                        est.zip(mix).map_or(0.0, |(e, m)| m.log_e(e, theta0))
                    } else {
                        0.0
                    },
                    harm: est,
                    lower_mix: mix,
                    promo: est.filter(|_| ready),
                    promo_mix: self.mixture(cost_margin, cfg.alpha_promote),
                    margin: Some(cost_margin),
                    optional: false,
                    units: t.cost.count(),
                    burning_in: !ready,
                    pool: ready.then_some(theta0),
                    note: Some(if ready {
                        clustered_note("relative change of mean cost")
                    } else {
                        burn_note(tc, cc)
                    }),
                }
            }
            Some((t, c)) if t.cost.count() >= burn && c.cost.count() >= burn => {
                let est = resolution_floor(
                    relative_mean_difference(&t.cost, &c.cost).ok(),
                    RELATIVE_RESOLUTION,
                    t.cost.count(),
                    c.cost.count(),
                );
                let mix = self.mixture(cfg.cost.mde_ratio - 1.0, a_cost);
                let tolerance = cfg.cost.tolerance_ratio - 1.0;
                let theta0 = if frozen { tolerance.max(cost_margin) } else { tolerance };
                MetricEval {
                    key: METRIC_COST.into(),
                    log_e: est.zip(mix).map_or(0.0, |(e, m)| m.log_e(e, theta0)),
                    harm: est,
                    lower_mix: mix,
                    promo: est,
                    promo_mix: self.mixture(cost_margin, cfg.alpha_promote),
                    margin: Some(cost_margin),
                    optional: false,
                    units: t.cost.count(),
                    burning_in: false,
                    pool: (!frozen).then_some(theta0),
                    note: Some("relative change of mean cost".into()),
                }
            }
            _ => empty(METRIC_COST, "fewer costs than clt_burn_in in one arm", false),
        });

        // quality (harm = lower): control − canary
        let q_margin = margins.quality_abs;
        let a_q = self.alpha_m(ti, METRIC_QUALITY);
        // A smoke stage never waits for judged scores: quality is not required there.
        let q_optional = role == StageRole::Smoke;
        out.push(match pair {
            Some((t, c)) if t.quality.count() == 0 && c.quality.count() == 0 => empty(
                METRIC_QUALITY,
                "no quality scores yet",
                q_optional || !cfg.quality.required_for_promotion,
            ),
            Some((t, c))
                if t.quality.count() >= burn
                    && c.quality.count() >= burn
                    && clustered.is_some() =>
            {
                let (tc, cc) = clustered
                    .map(|(a, b)| (&a.quality, &b.quality))
                    .unwrap_or((&no_clusters, &no_clusters));
                let ready = cluster::burned_in(tc, cc);
                // control minus canary: harm = lower quality
                let est = resolution_floor(
                    at_least_iid(
                        cluster::ratio_difference(cc, tc).ok(),
                        mean_difference(&c.quality, &t.quality).ok(),
                    ),
                    RELATIVE_RESOLUTION * (cfg.quality.range.1 - cfg.quality.range.0).abs(),
                    t.quality.count(),
                    c.quality.count(),
                );
                let mix = self.mixture(cfg.quality.mde_abs, a_q);
                MetricEval {
                    key: METRIC_QUALITY.into(),
                    log_e: if ready {
                        est.zip(mix).map_or(0.0, |(e, m)| m.log_e(e, 0.0))
                    } else {
                        0.0
                    },
                    harm: est,
                    lower_mix: mix,
                    promo: est.filter(|_| ready),
                    promo_mix: self.mixture(q_margin, cfg.alpha_promote),
                    margin: Some(q_margin),
                    optional: q_optional,
                    units: t.quality.count(),
                    burning_in: !ready,
                    pool: ready.then_some(0.0),
                    note: Some(if ready {
                        clustered_note("control minus canary mean score")
                    } else {
                        burn_note(tc, cc)
                    }),
                }
            }
            Some((t, c)) if t.quality.count() >= burn && c.quality.count() >= burn => {
                let est = resolution_floor(
                    mean_difference(&c.quality, &t.quality).ok(),
                    RELATIVE_RESOLUTION * (cfg.quality.range.1 - cfg.quality.range.0).abs(),
                    t.quality.count(),
                    c.quality.count(),
                );
                let mix = self.mixture(cfg.quality.mde_abs, a_q);
                let theta0 = if frozen { q_margin } else { 0.0 };
                MetricEval {
                    key: METRIC_QUALITY.into(),
                    log_e: est.zip(mix).map_or(0.0, |(e, m)| m.log_e(e, theta0)),
                    harm: est,
                    lower_mix: mix,
                    promo: est,
                    promo_mix: self.mixture(q_margin, cfg.alpha_promote),
                    margin: Some(q_margin),
                    optional: q_optional,
                    units: t.quality.count(),
                    burning_in: false,
                    pool: (!frozen).then_some(theta0),
                    note: Some("control minus canary mean score".into()),
                }
            }
            _ => {
                // Below clt_burn_in judged scores per arm quality cannot be tested yet; unless
                // it is required, it does not hold promotion until there are enough.
                let mut e = empty(
                    METRIC_QUALITY,
                    "fewer judged scores than clt_burn_in in one arm",
                    q_optional || !cfg.quality.required_for_promotion,
                );
                e.units = pair.map_or(0, |(t, _)| t.quality.count());
                e
            }
        });
        out
    }

    /// The SLO guards of treatment `ti` against its reference (control, the frozen baseline,
    /// or, with neither, the thresholds themselves).
    fn guard_evals(&self, ti: usize) -> Vec<GuardEval> {
        let beta = 1.0 - self.config.power_for_tau;
        let t = &self.phase.stats[self.treatments[ti].arm];
        let reference = self.pair(ti).map(|(_, r)| r);
        let design_effect = guards::sticky_design_effect(t, reference);
        self.config
            .slo_guards
            .active()
            .iter()
            .enumerate()
            .map(|(gi, g)| {
                let idx = self.phase.guard_exceedance.get(gi).copied().flatten();
                let inp = GuardInput {
                    canary: t,
                    reference,
                    canary_exceedance: idx.and_then(|i| t.exceedance.get(i).copied()),
                    reference_exceedance: idx.and_then(|i| self.reference_exceedance(i)),
                    burn_in: self.config.clt_burn_in.max(2),
                    frozen: self.control.is_none(),
                    design_effect,
                };
                guards::evaluate(g, self.alpha_m(ti, &g.key()), beta, &inp)
            })
            .collect()
    }

    /// Puts metric `mi`'s evidence of this look into treatment `ti`'s ledger: a pooling test
    /// sets the mixture over the pooled harm estimate of every pooling phase and this one (and
    /// no current-phase factor); any other test sets its current-phase e-value.
    fn set_metric_evidence(&mut self, ti: usize, mi: usize, e: &MetricEval) {
        let t = &mut self.treatments[ti];
        if t.harm_strat.len() < t.strat.len() {
            // state saved before pooling existed: no earlier pooled phases
            t.harm_strat.resize(t.strat.len(), Stratified::new());
        }
        // keys were registered at construction; a failure here would be a bug, so ignore
        match (e.pool, e.harm, e.lower_mix) {
            (Some(theta0), Some(h), Some(mix)) => {
                let pooled = t.harm_strat.get(mi).and_then(|p| p.combined_with(Some(h)));
                let log_e = pooled.map_or(0.0, |p| mix.log_e(p, theta0));
                let _ = t.ledger.set_pooled(&e.key, log_e);
                let _ = t.ledger.set_current(&e.key, 0.0);
                let _ = t.ledger.set_own(&e.key, e.log_e);
            }
            _ => {
                let _ = t.ledger.set_current(&e.key, e.log_e);
            }
        }
    }

    /// A/B: ln e (current phase) that the arm is better on the primary metric, and the
    /// estimated improvement.
    fn benefit_log_e(&self, ti: usize) -> Option<(f64, Option<f64>)> {
        let AnalysisMode::AbTest { primary } = self.mode else { return None };
        let (t, c) = self.pair(ti)?;
        let cfg = &self.config;
        let k = self.treatments.len() as f64;
        let alpha = cfg.alpha_ab / k;
        let beta = 1.0 - cfg.power_for_tau;
        let burn = cfg.clt_burn_in.max(2);
        let mean_benefit = |est: Option<Estimate>, mde: f64| -> (f64, Option<f64>) {
            let b = est.map(Estimate::flipped);
            let log_e = b
                .zip(HalfNormalMixture::for_mde(mde, alpha, beta).ok())
                .map_or(0.0, |(e, m)| m.log_e(e, 0.0));
            (log_e, b.map(|e| e.theta))
        };
        Some(match primary {
            PrimaryMetric::ErrorRate => {
                if t.requests == 0 || c.requests == 0 {
                    return Some((0.0, None));
                }
                let improvement = c.error_rate().zip(t.error_rate()).map(|(pc, pt)| pc - pt);
                let log_e = match self.pair_share(ti) {
                    Some(pi) => {
                        let cb = CondBinomConfig {
                            direction: RatioDirection::Decrease,
                            ..CondBinomConfig::default()
                        };
                        ConditionalBinomial::new(cb)
                            .and_then(|e| e.log_e_with(t.error_events(), c.error_events(), pi))
                            .unwrap_or(0.0)
                    }
                    None => {
                        mean_benefit(
                            proportion_difference_pooled(
                                t.error_events(),
                                t.requests,
                                c.error_events(),
                                c.requests,
                            )
                            .ok(),
                            cfg.errors.mde_abs,
                        )
                        .0
                    }
                };
                (log_e, improvement)
            }
            PrimaryMetric::Latency
                if t.log_latency.count() >= burn && c.log_latency.count() >= burn =>
            {
                mean_benefit(
                    mean_difference(&t.log_latency, &c.log_latency).ok(),
                    cfg.latency.mde_ratio.ln(),
                )
            }
            PrimaryMetric::Cost if t.cost.count() >= burn && c.cost.count() >= burn => {
                mean_benefit(
                    relative_mean_difference(&t.cost, &c.cost).ok(),
                    cfg.cost.mde_ratio - 1.0,
                )
            }
            PrimaryMetric::Quality if t.quality.count() >= burn && c.quality.count() >= burn => {
                mean_benefit(mean_difference(&c.quality, &t.quality).ok(), cfg.quality.mde_abs)
            }
            _ => (0.0, None),
        })
    }

    fn summaries(&self) -> Vec<ArmSummary> {
        self.arms
            .iter()
            .zip(&self.phase.stats)
            .map(|(a, s)| ArmSummary {
                arm: a.clone(),
                requests: s.requests,
                error_events: s.error_events(),
                timeouts: s.timeouts,
                refused: s.refused,
                error_rate: s.error_rate(),
                success_rate: s.success_rate(),
                p50_ms: s.latency_sketch.quantile(0.5),
                p95_ms: s.latency_sketch.quantile(0.95),
                p99_ms: s.latency_sketch.quantile(0.99),
                ttft_p50_ms: s.ttft_sketch.quantile(0.5),
                ttft_p95_ms: s.ttft_sketch.quantile(0.95),
                mean_cost: s.cost.mean(),
                mean_quality: s.quality.mean(),
                judged: s.quality.count(),
                tokens_in: s.tokens_in,
                tokens_out: s.tokens_out,
                effective_requests: s.effective_requests(),
                outside_requests: s.outside_requests,
                outside_error_events: s.outside_error_events,
                stale: s.stale,
                unphased: s.unphased,
            })
            .collect()
    }

    fn halt_reason(&mut self) -> Option<HaltReason> {
        if !self.config.srm.enabled {
            return None;
        }
        let counts: Vec<u64> = self.phase.stats.iter().map(|s| s.requests).collect();
        let total: u64 = counts.iter().sum();
        let shadow = matches!(self.mode, AnalysisMode::Shadow);
        // missing data
        for (i, a) in self.arms.iter().enumerate() {
            let expected = if shadow {
                counts
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, c)| *c as f64)
                    .fold(0.0, f64::max)
            } else if self.control.is_some() {
                total as f64 * self.phase.config.share_of(a).unwrap_or(0.0)
            } else {
                0.0
            };
            if counts[i] == 0 && expected >= self.config.srm.missing_data_min_expected as f64 {
                return Some(HaltReason::MissingData { arm: a.clone(), expected });
            }
        }
        let log_thr = (1.0 / self.config.srm.alpha).ln();
        // sample-ratio mismatch, on requests inside the experiment only (`requests` leaves out
        // traffic routed outside the phase share). With a sticky split the unit of assignment is
        // the user, not the request: test each arm's share of requests across user buckets with
        // the cluster-robust variance (statistics.md §5.8, clustering.md), at alpha / arms.
        if self.control.is_some() && !shadow {
            let shares: Vec<f64> =
                self.arms.iter().map(|a| self.phase.config.share_of(a).unwrap_or(0.0)).collect();
            let clusters: Option<Vec<Vec<f64>>> = self
                .phase
                .stats
                .iter()
                .map(|s| s.clusters.as_deref().map(|c| c.errors.dense_counts()))
                .collect();
            let l = match clusters {
                Some(per_arm) => {
                    let buckets = per_arm.first().map_or(0, |c| c.len());
                    let total: Vec<f64> =
                        (0..buckets).map(|b| per_arm.iter().map(|c| c[b]).sum()).collect();
                    // two arms: one test covers both shares; more: one per arm at alpha / k
                    let tested = if per_arm.len() == 2 { 1 } else { per_arm.len() };
                    let alpha = self.config.srm.alpha / tested as f64;
                    (0..tested)
                        .filter_map(|i| {
                            srm_clustered_log_e(&per_arm[i], &total, shares[i], alpha).ok()
                        })
                        .map(|l| l - (tested as f64).ln())
                        .fold(None, |m: Option<f64>, l| Some(m.map_or(l, |m| m.max(l))))
                }
                None => {
                    srm_log_e(&counts, &shares, actuator_stats::srm::DEFAULT_CONCENTRATION).ok()
                }
            };
            if let Some(l) = l {
                self.phase.srm_max_log_e = self.phase.srm_max_log_e.max(l);
            }
            if self.phase.srm_max_log_e >= log_thr {
                return Some(HaltReason::SampleRatioMismatch {
                    log_e_value: self.phase.srm_max_log_e,
                    counts: self.arms.iter().cloned().zip(counts.iter().copied()).collect(),
                    expected_shares: self.arms.iter().cloned().zip(shares).collect(),
                });
            }
        }
        // judged fraction must not depend on the arm
        if self.control.is_some() {
            let judged: Vec<u64> = self.phase.stats.iter().map(|s| s.quality.count()).collect();
            let jt: u64 = judged.iter().sum();
            if jt >= 20 && total > 0 && counts.iter().all(|&c| c > 0) {
                let shares: Vec<f64> = counts.iter().map(|&c| c as f64 / total as f64).collect();
                if let Ok(l) =
                    srm_log_e(&judged, &shares, actuator_stats::srm::DEFAULT_CONCENTRATION)
                    && l >= log_thr
                {
                    return Some(HaltReason::JudgedFractionMismatch {
                        log_e_value: l,
                        judged: self.arms.iter().cloned().zip(judged).collect(),
                    });
                }
            }
        }
        None
    }

    /// Evaluates the rollout at time `now` and returns the decision with its explanation.
    ///
    /// Order: catastrophic guard → rollback (the weighted e-average of the comparative
    /// metrics and the SLO guards: one budget) → halt (SRM, missing data; never ahead of a
    /// rollback) → A/B control wins → promotion → inconclusive (phase budget spent) →
    /// continue. The minimum samples and duration gate promotion only, never rollback.
    pub fn look(&mut self, now: DateTime<Utc>) -> Evaluation {
        let elapsed = (now - self.phase.started_at).num_seconds().max(0);
        let pc = self.phase.config.clone();
        let samples =
            self.treatments.iter().map(|t| self.phase.stats[t.arm].requests).min().unwrap_or(0);
        let control_samples = self.control.map(|c| self.phase.stats[c].requests);
        let min_samples = pc.min_samples.max(self.config.min_sample_size);
        let budget_spent = pc.max_samples.is_some_and(|m| samples >= m)
            || pc.max_duration_secs.is_some_and(|m| elapsed >= m);
        let gates = Gates {
            samples,
            min_samples,
            elapsed_secs: elapsed,
            min_duration_secs: pc.min_duration_secs,
            budget_spent,
        };
        let gates_met = samples >= min_samples
            && control_samples.is_none_or(|c| c >= self.config.min_sample_size)
            && elapsed >= pc.min_duration_secs;
        let rate = (elapsed > 0 && samples > 0).then(|| samples as f64 / elapsed as f64);
        let policy = pc.unreachable_policy();
        // A smoke stage that does not wait for unreachable metrics decides within its
        // minimums: what the minimums do not show is not waited for (an estimate beyond its
        // coarse margin still holds it, and rollback evidence carries to the next phases).
        // A prove stage with the `defer` policy also decides within its minimums and leaves
        // the rest to the prove stage that follows (which pools this stage's evidence).
        let within_minimums = (pc.role == StageRole::Smoke && policy == UnreachablePolicy::Ignore)
            || policy == UnreachablePolicy::Defer;
        let remaining = if within_minimums {
            Some(remaining_to_minimums(samples, min_samples, elapsed, pc.min_duration_secs, rate))
        } else {
            remaining_budget(&pc, samples, elapsed, rate)
        };
        let projection = Projection { rate, remaining, policy };

        let mut comparisons = Vec::new();
        let mut delays: Vec<String> = Vec::new();
        let units = self.units_recur();
        for ti in 0..self.treatments.len() {
            let evals = self.evaluate_metrics(ti);
            for d in self.burn_in_delays(&evals) {
                if !delays.contains(&d) {
                    delays.push(d);
                }
            }
            let guard_evals = self.guard_evals(ti);
            for (mi, e) in evals.iter().enumerate() {
                self.set_metric_evidence(ti, mi, e);
            }
            for g in &guard_evals {
                let _ = self.treatments[ti].ledger.set_current(&g.key, g.log_e);
            }
            self.treatments[ti].ledger.set_units_recur(units);
            let verdict = self.treatments[ti].ledger.verdict();
            let units_return = self.treatments[ti].ledger.units_recur();
            let requests = self.phase.stats[self.treatments[ti].arm].requests;
            let metrics = evals
                .iter()
                .enumerate()
                .map(|(mi, e)| self.metric_report(ti, mi, e, requests, &projection))
                .collect();
            let checks: Vec<CheckReport> = guard_evals.into_iter().map(|g| g.report).collect();
            let classical = match (self.control, self.pair(ti)) {
                (Some(_), Some((t, c))) => ClassicalReport {
                    errors: two_proportion_z_test(
                        t.error_events(),
                        t.requests,
                        c.error_events(),
                        c.requests,
                        0.95,
                    )
                    .ok(),
                    log_latency: welch_t_test(&t.log_latency, &c.log_latency, 0.95).ok(),
                },
                _ => ClassicalReport { errors: None, log_latency: None },
            };
            let benefit = self.benefit_log_e(ti).map(|(cur, improvement)| {
                let k = self.treatments.len() as f64;
                BenefitReport {
                    metric: match self.mode {
                        AnalysisMode::AbTest { primary } => format!("{primary:?}"),
                        _ => String::new(),
                    },
                    improvement: improvement.and_then(fin),
                    log_e_value: self.treatments[ti].benefit_carried_log_e + cur,
                    log_threshold: (k / self.config.alpha_ab).ln(),
                }
            });
            comparisons.push(ArmComparison {
                arm: self.arms[self.treatments[ti].arm].clone(),
                combined_log_e: verdict.combined_log_e,
                units_return,
                log_threshold: verdict.log_threshold,
                p_value: p_value_from_log_e(verdict.combined_log_e),
                metrics,
                checks,
                classical,
                benefit,
            });
        }

        let (decision, rule) = self.decide(&comparisons, gates_met, budget_spent);
        let holding = match decision {
            Decision::Continue | Decision::Inconclusive { .. } => {
                holding(&comparisons, &gates, rate, gates_met)
            }
            Decision::Halt { .. } => Some(Holding {
                what: "halt".into(),
                arm: None,
                reason: rule.clone(),
                additional_requests: None,
                eta_secs: None,
            }),
            Decision::Promote { .. } | Decision::Rollback { .. } => None,
        };
        let explanation = Explanation {
            rollout_id: self.rollout_id.clone(),
            phase: self.phase.index,
            at: now,
            rule: rule.clone(),
            arms: self.summaries(),
            comparisons,
            srm_log_e: (self.control.is_some() && !matches!(self.mode, AnalysisMode::Shadow))
                .then_some(self.phase.srm_max_log_e),
            gates,
            role: pc.role,
            holding,
            delays,
        };
        let first = explanation.comparisons.first();
        let narrow = |x: Option<f64>| x.filter(|v| v.is_finite()).map(chart_value);
        let record = HealthRecord {
            at: now,
            phase: self.phase.index,
            decision: decision.clone(),
            rule,
            max_combined_log_e: explanation
                .comparisons
                .iter()
                .map(|c| c.combined_log_e)
                .fold(0.0, f64::max),
            samples,
            arm: first.map(|c| c.arm.label().to_owned()),
            log_threshold: first.map(|c| c.log_threshold),
            metrics: first
                .map(|c| {
                    c.metrics
                        .iter()
                        .filter(|m| m.estimate.is_some_and(f64::is_finite))
                        .map(|m| MetricPoint {
                            metric: m.metric.clone(),
                            estimate: narrow(m.estimate),
                            lower: narrow(m.lower),
                            upper: narrow(m.upper),
                            margin: narrow(m.margin),
                            log_e_total: narrow(Some(m.log_e_total)).unwrap_or(0.0),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        };
        push_thinned(&mut self.history, record, self.config.history_capacity);
        let evaluation = Evaluation { decision, explanation };
        self.last = Some(evaluation.clone());
        evaluation
    }

    /// The rollback delays in force at this look, with their reason: metrics whose test
    /// waits for `clt_burn_in` values per arm, and tail tests without a frozen threshold.
    fn burn_in_delays(&self, evals: &[MetricEval]) -> Vec<String> {
        let burn = self.config.clt_burn_in.max(2);
        let mut out = Vec::new();
        for e in evals.iter().filter(|e| e.key != METRIC_ERRORS && e.harm.is_none()) {
            let no_threshold =
                self.phase.tail.iter().any(|t| t.key == e.key && t.threshold_ms.is_none());
            if no_threshold {
                out.push(format!(
                    "{}: no rollback evidence in this phase; its threshold must be frozen from data the phase does not test (a previous phase or baseline_tail_thresholds_ms)",
                    e.key
                ));
            } else if e.units < burn && !e.optional {
                out.push(format!(
                    "{}: no rollback evidence until {burn} values per arm (clt_burn_in); the plug-in variance of fewer values is unreliable",
                    e.key
                ));
            }
        }
        out
    }

    /// One metric's report: the pooled estimate with the pooled confidence sequence around
    /// it, and where the metric stands on the way to promotion.
    fn metric_report(
        &self,
        ti: usize,
        mi: usize,
        e: &MetricEval,
        requests: u64,
        projection: &Projection,
    ) -> MetricReport {
        let t = &self.treatments[ti];
        let entry = &t.ledger.entries()[mi];
        let alpha = entry.weight * t.ledger.alpha_total();
        let pooled = t.strat[mi].combined_with(e.promo);
        let lower = pooled
            .zip(e.lower_mix)
            .and_then(|(p, m)| m.half_width(p.variance, alpha).ok().and_then(|d| fin(p.theta - d)));
        let upper = pooled.zip(e.promo_mix).and_then(|(p, m)| {
            m.half_width(p.variance, self.config.alpha_promote).ok().and_then(|d| fin(p.theta + d))
        });
        let estimate = pooled.map(|p| p.theta).and_then(fin);
        let non_inferior = match (upper, e.margin) {
            (Some(u), Some(d)) => u < d,
            _ => false,
        };
        let mut additional = None;
        if !non_inferior
            && let (Some(p), Some(cur), Some(mix), Some(d)) =
                (pooled, e.promo, e.promo_mix, e.margin)
            && cur.variance > 0.0
            && e.units > 0
        {
            let info_earlier = t.strat[mi].information();
            additional = mix
                .projected_n_pooled(
                    p.theta,
                    info_earlier,
                    1.0 / cur.variance,
                    e.units,
                    d,
                    self.config.alpha_promote,
                )
                .map(|total| {
                    let units = total.saturating_sub(e.units) as f64;
                    // convert the metric's units (judged scores, latencies) to canary requests
                    (units * requests.max(e.units) as f64 / e.units as f64).ceil() as u64
                });
        }
        let eta_secs = additional.zip(projection.rate).map(|(n, r)| n as f64 / r);
        let watch = self.phase.config.role == StageRole::Watch;
        let out_of_reach = if projection.policy == UnreachablePolicy::Defer {
            MetricVerdict::Deferred
        } else {
            MetricVerdict::Unreachable
        };
        let verdict = if non_inferior {
            MetricVerdict::NonInferior
        } else if e.optional || watch {
            MetricVerdict::NotRequired
        } else if estimate.zip(e.margin).is_some_and(|(x, d)| x >= d) {
            MetricVerdict::BeyondMargin
        } else if e.burning_in && projection.policy != UnreachablePolicy::Block {
            // A stage that does not wait for unreachable metrics does not wait for a
            // clustered test to burn in either (a small share of sticky users may never
            // fill enough buckets); the catastrophic guard and the SLO guards still act.
            out_of_reach
        } else if additional.zip(projection.remaining).is_some_and(|(n, r)| n as f64 > r) {
            out_of_reach
        } else {
            MetricVerdict::Pending
        };
        let blocking = match verdict {
            MetricVerdict::Pending | MetricVerdict::BeyondMargin => true,
            MetricVerdict::Unreachable => projection.policy == UnreachablePolicy::Block,
            MetricVerdict::NonInferior | MetricVerdict::NotRequired | MetricVerdict::Deferred => {
                false
            }
        };
        MetricReport {
            metric: e.key.clone(),
            estimate,
            phase_estimate: e.harm.map(|h| h.theta).and_then(fin),
            lower,
            upper,
            log_e_phase: e.log_e,
            log_e_total: entry.log_e(),
            weight: entry.weight,
            alpha,
            significant: entry.log_e() >= (1.0 / alpha).ln(),
            margin: e.margin,
            non_inferior,
            verdict,
            blocking,
            additional_requests: additional,
            eta_secs,
            note: e.note.clone(),
        }
    }

    fn decide(
        &mut self,
        comparisons: &[ArmComparison],
        gates_met: bool,
        budget_spent: bool,
    ) -> (Decision, String) {
        // 1. catastrophic guard (outside the budget)
        for t in &self.treatments {
            if let Some(rule) = &self.phase.tripped[t.arm] {
                let msg = rule.message.clone();
                return (
                    Decision::Rollback { arm: self.arms[t.arm].clone(), rules: vec![rule.clone()] },
                    msg,
                );
            }
        }
        // 2. rollback: one budget for every comparative metric and SLO guard
        let primary = match self.mode {
            AnalysisMode::AbTest { primary } => Some(primary_key(primary)),
            _ => None,
        };
        let mut lost: Vec<&Arm> = Vec::new();
        for comp in comparisons {
            if comp.combined_log_e < comp.log_threshold {
                continue;
            }
            let rules = rollback_rules(comp);
            // A/B: an arm confidently worse on the primary metric alone has lost the test;
            // that is not a harm to roll back for (control or another arm may still win).
            if let Some(pk) = primary
                && rules.iter().all(|r| r.metric == pk && r.kind == RuleKind::Sequential)
            {
                lost.push(&comp.arm);
                continue;
            }
            let msg = format!(
                "rollback {}: {}",
                comp.arm,
                rules.iter().map(|r| r.metric.as_str()).collect::<Vec<_>>().join(", ")
            );
            return (Decision::Rollback { arm: comp.arm.clone(), rules }, msg);
        }
        // 3. data quality (after rollback: a halt must never keep a worse canary serving)
        if let Some(reason) = self.halt_reason() {
            let msg = match &reason {
                HaltReason::SampleRatioMismatch { log_e_value, .. } => {
                    format!(
                        "halt: sample-ratio mismatch (SRM e-value {:.3e} >= {:.0})",
                        log_e_value.exp(),
                        1.0 / self.config.srm.alpha
                    )
                }
                HaltReason::MissingData { arm, expected } => {
                    format!("halt: no data from arm {arm} (expected about {expected:.0} requests)")
                }
                HaltReason::JudgedFractionMismatch { .. } => {
                    "halt: quality judgements arrive at different rates per arm".into()
                }
            };
            return (Decision::Halt { reason }, msg);
        }
        // 4. A/B: control wins when every arm is confidently worse on the primary metric
        if let Some(pk) = primary
            && !comparisons.is_empty()
            && lost.len() == comparisons.len()
        {
            return (
                Decision::Promote { arm: Arm::Control },
                format!(
                    "control wins: every arm is confidently worse than control on the primary metric ({pk}); the stable config stays"
                ),
            );
        }
        // 5. promotion
        if gates_met {
            match self.mode {
                AnalysisMode::AbTest { .. } => {
                    let winner = comparisons
                        .iter()
                        .filter(|c| {
                            !lost.contains(&&c.arm)
                                && c.checks.iter().all(|k| k.status != CheckStatus::Breach)
                                && c.metrics.iter().all(|m| {
                                    m.non_inferior || m.verdict == MetricVerdict::NotRequired
                                })
                                && c.benefit
                                    .as_ref()
                                    .is_some_and(|b| b.log_e_value >= b.log_threshold)
                        })
                        .max_by(|a, b| {
                            let ia = a.benefit.as_ref().and_then(|x| x.improvement).unwrap_or(0.0);
                            let ib = b.benefit.as_ref().and_then(|x| x.improvement).unwrap_or(0.0);
                            ia.total_cmp(&ib)
                        });
                    if let Some(w) = winner {
                        let msg = format!(
                            "promote {}: better than control on the primary metric and non-inferior on every other metric",
                            w.arm
                        );
                        return (Decision::Promote { arm: w.arm.clone() }, msg);
                    }
                }
                AnalysisMode::NoControl => {
                    if let Some(comp) = comparisons.first() {
                        let against = if self.baseline.is_some() {
                            "the stable's frozen numbers"
                        } else {
                            "the absolute SLO thresholds"
                        };
                        return (
                            Decision::Promote { arm: comp.arm.clone() },
                            format!(
                                "promote: the watch met its minimums without an alarm (compared with {against})"
                            ),
                        );
                    }
                }
                AnalysisMode::Canary | AnalysisMode::Shadow => {
                    if let Some(comp) = comparisons.first()
                        && comp.metrics.iter().all(|m| !m.blocking)
                    {
                        let listed = |v: MetricVerdict| -> Vec<&str> {
                            comp.metrics
                                .iter()
                                .filter(|m| m.verdict == v)
                                .map(|m| m.metric.as_str())
                                .collect()
                        };
                        let unreachable = listed(MetricVerdict::Unreachable);
                        let deferred = listed(MetricVerdict::Deferred);
                        let msg = if !deferred.is_empty() {
                            format!(
                                "promote {}: the minimums are met and no metric is beyond its margin; {} not yet non-inferior, deferred to the next prove stage, which pools this stage's evidence",
                                comp.arm,
                                deferred.join(", ")
                            )
                        } else if unreachable.is_empty() {
                            format!(
                                "promote {}: every required metric's upper bound is below its margin and the phase minimums are met",
                                comp.arm
                            )
                        } else {
                            format!(
                                "promote {}: every other required metric is non-inferior and the minimums are met; {} cannot reach a verdict within this {:?} stage's budget and its policy is ignore",
                                comp.arm,
                                unreachable.join(", "),
                                self.phase.config.role
                            )
                        };
                        return (Decision::Promote { arm: comp.arm.clone() }, msg);
                    }
                }
            }
        }
        // 6. inconclusive
        if budget_spent {
            let needed = comparisons
                .iter()
                .flat_map(|comp| {
                    comp.metrics.iter().filter(|m| m.blocking).map(|m| ProjectedNeed {
                        metric: m.metric.clone(),
                        arm: comp.arm.clone(),
                        additional_requests: m.additional_requests,
                    })
                })
                .collect();
            return (
                Decision::Inconclusive { needed },
                "inconclusive: phase budget spent without a decision".into(),
            );
        }
        let why = if !lost.is_empty() {
            format!(
                "continue: {} confidently worse than control on the primary metric; waiting for the other arms",
                lost.iter().map(|a| a.label()).collect::<Vec<_>>().join(", ")
            )
        } else if gates_met {
            "continue: a required metric is not yet non-inferior".into()
        } else {
            "continue: phase minimums not met yet".into()
        };
        (Decision::Continue, why)
    }
}

/// The rules behind a rejection of the weighted e-average: every metric and SLO guard
/// significant by itself, or else the largest contribution.
fn rollback_rules(comp: &ArmComparison) -> Vec<FiredRule> {
    let mut rules = Vec::new();
    for m in comp.metrics.iter().filter(|m| m.significant) {
        rules.push(FiredRule {
            kind: RuleKind::Sequential,
            metric: m.metric.clone(),
            value: m.phase_estimate,
            threshold: Some(1.0 / m.alpha),
            log_e_value: Some(m.log_e_total),
            message: format!(
                "{} worse than control: e-value {:.1} >= 1/alpha_m = {:.0} (estimate {}, always-valid lower bound {})",
                m.metric,
                m.log_e_total.exp(),
                1.0 / m.alpha,
                fmt_opt(m.estimate),
                fmt_opt(m.lower)
            ),
        });
    }
    for c in comp.checks.iter().filter(|c| c.status == CheckStatus::Breach) {
        rules.push(FiredRule {
            kind: RuleKind::SloGuard,
            metric: c.check.clone(),
            value: c.value,
            threshold: Some(c.threshold),
            log_e_value: Some(c.log_e),
            message: format!(
                "SLO guard {}: canary {} beyond {} with confidence and worse than the reference ({}) by more than its margin (e-value {:.1} >= 1/alpha_guard = {:.0}){}",
                c.check,
                fmt_opt(c.value),
                c.threshold,
                fmt_opt(c.control_value),
                c.log_e.exp(),
                1.0 / c.alpha,
                if c.stable_breaks { "; the stable breaks this threshold too" } else { "" }
            ),
        });
    }
    if rules.is_empty() {
        let metric_top = comp
            .metrics
            .iter()
            .map(|m| (m.weight.ln() + m.log_e_total, m.metric.as_str(), m.phase_estimate))
            .chain(comp.checks.iter().map(|c| (c.log_e, c.check.as_str(), c.value)))
            .max_by(|a, b| a.0.total_cmp(&b.0));
        if let Some((_, name, value)) = metric_top {
            rules.push(FiredRule {
                kind: if name.starts_with("slo:") {
                    RuleKind::SloGuard
                } else {
                    RuleKind::Sequential
                },
                metric: name.to_string(),
                value,
                threshold: Some(comp.log_threshold.exp()),
                log_e_value: Some(comp.combined_log_e),
                message: format!(
                    "weighted e-average {:.1} >= {:.0}; largest contribution from {name}",
                    comp.combined_log_e.exp(),
                    comp.log_threshold.exp(),
                ),
            });
        }
    }
    rules
}

const fn primary_key(p: PrimaryMetric) -> &'static str {
    match p {
        PrimaryMetric::ErrorRate => METRIC_ERRORS,
        PrimaryMetric::Latency => METRIC_LATENCY,
        PrimaryMetric::Cost => METRIC_COST,
        PrimaryMetric::Quality => METRIC_QUALITY,
    }
}

/// Inputs of the promotion projections at one look.
struct Projection {
    /// Canary requests per second in this phase.
    rate: Option<f64>,
    /// Canary requests the phase budget still allows (`None`: no budget).
    remaining: Option<f64>,
    policy: UnreachablePolicy,
}

/// Canary requests the phase's budget still allows: the smaller of the request budget and
/// the time budget at the current rate. `None` when the phase has no budget.
fn remaining_budget(
    pc: &PhaseConfig,
    samples: u64,
    elapsed: i64,
    rate: Option<f64>,
) -> Option<f64> {
    let by_samples = pc.max_samples.map(|m| m.saturating_sub(samples) as f64);
    // Without a measured rate the time budget in requests is unknown, not zero.
    let by_time = pc.max_duration_secs.zip(rate).map(|(m, r)| {
        let left = m.saturating_sub(elapsed).max(0) as f64;
        left * r
    });
    match (by_samples, by_time) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Canary requests still to come before the phase's minimums are met (0 once they are): the
/// larger of the missing requests and the missing time at the current rate.
fn remaining_to_minimums(
    samples: u64,
    min_samples: u64,
    elapsed: i64,
    min_duration_secs: i64,
    rate: Option<f64>,
) -> f64 {
    let by_samples = min_samples.saturating_sub(samples) as f64;
    let by_time = rate.map_or(0.0, |r| (min_duration_secs - elapsed).max(0) as f64 * r);
    by_samples.max(by_time)
}

/// Seconds as a short duration for people.
pub(crate) fn fmt_secs(s: f64) -> String {
    if !s.is_finite() {
        "an unbounded time".into()
    } else if s < 90.0 {
        format!("{s:.0} s")
    } else if s < 5400.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

/// What keeps the stage: the unmet minimum or the blocking metric with the longest
/// projection (a metric beyond its margin first).
fn holding(
    comparisons: &[ArmComparison],
    gates: &Gates,
    rate: Option<f64>,
    gates_met: bool,
) -> Option<Holding> {
    let mut items: Vec<(f64, Holding)> = Vec::new();
    let at_rate = |n: u64| rate.map(|r| n as f64 / r);
    let traffic = |eta: Option<f64>| {
        eta.map_or_else(
            || "no canary traffic measured yet, so no time can be projected".to_string(),
            |s| format!("about {} at the current canary traffic", fmt_secs(s)),
        )
    };
    if !gates_met {
        if gates.samples < gates.min_samples {
            let n = gates.min_samples - gates.samples;
            let eta = at_rate(n);
            items.push((
                eta.unwrap_or(f64::INFINITY),
                Holding {
                    what: "min_samples".into(),
                    arm: None,
                    reason: format!(
                        "minimum samples: {} of {} requests per arm ({n} more, {})",
                        gates.samples,
                        gates.min_samples,
                        traffic(eta)
                    ),
                    additional_requests: Some(n),
                    eta_secs: eta,
                },
            ));
        }
        if gates.elapsed_secs < gates.min_duration_secs {
            let left = (gates.min_duration_secs - gates.elapsed_secs) as f64;
            items.push((
                left,
                Holding {
                    what: "min_duration".into(),
                    arm: None,
                    reason: format!(
                        "minimum duration: {} of {} s ({} left)",
                        gates.elapsed_secs,
                        gates.min_duration_secs,
                        fmt_secs(left)
                    ),
                    additional_requests: None,
                    eta_secs: Some(left),
                },
            ));
        }
    }
    for comp in comparisons {
        for m in comp.metrics.iter().filter(|m| m.blocking) {
            let (key, reason) = match m.verdict {
                MetricVerdict::BeyondMargin => (
                    f64::MAX,
                    format!(
                        "{} on {}: the estimate {} is at or beyond the margin {}; it holds until the estimate improves, and the stage ends inconclusive when its budget is spent",
                        m.metric,
                        comp.arm,
                        fmt_opt(m.estimate),
                        fmt_opt(m.margin)
                    ),
                ),
                MetricVerdict::Unreachable => (
                    m.eta_secs.unwrap_or(f64::INFINITY),
                    format!(
                        "{} on {}: about {} more canary requests ({}) to show non-inferiority, more than the stage's remaining budget; the stage's policy is block",
                        m.metric,
                        comp.arm,
                        m.additional_requests.map_or_else(|| "many".into(), |n| n.to_string()),
                        traffic(m.eta_secs)
                    ),
                ),
                _ => match m.additional_requests {
                    Some(n) => (
                        m.eta_secs.unwrap_or(f64::INFINITY),
                        format!(
                            "{} on {}: about {n} more canary requests ({}) to show non-inferiority at margin {} if the estimate stays at {}",
                            m.metric,
                            comp.arm,
                            traffic(m.eta_secs),
                            fmt_opt(m.margin),
                            fmt_opt(m.estimate)
                        ),
                    ),
                    None => (
                        f64::INFINITY,
                        format!(
                            "{} on {}: waiting for data ({})",
                            m.metric,
                            comp.arm,
                            m.note.clone().unwrap_or_default()
                        ),
                    ),
                },
            };
            items.push((
                key,
                Holding {
                    what: m.metric.clone(),
                    arm: Some(comp.arm.clone()),
                    reason,
                    additional_requests: m.additional_requests,
                    eta_secs: m.eta_secs,
                },
            ));
        }
    }
    items.into_iter().max_by(|a, b| a.0.total_cmp(&b.0)).map(|(_, h)| h)
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |x| format!("{x:.4}"))
}

/// Ledger entries: the comparative metrics share `1 − w_guards` by their weights, the SLO
/// guards share `w_guards` equally.
fn ledger_weights(cfg: &HealthConfig) -> Vec<(String, f64)> {
    let t = &cfg.latency_tail;
    let n_tail = t.quantiles.len() + t.slo_thresholds.len();
    let mut w = vec![
        (METRIC_ERRORS.to_string(), cfg.errors.weight),
        (METRIC_LATENCY.to_string(), cfg.latency.weight),
    ];
    for q in &t.quantiles {
        w.push((format!("tail:q{q}"), t.weight / n_tail as f64));
    }
    for s in &t.slo_thresholds {
        w.push((format!("tail:slo:{}ms", s.threshold_ms), t.weight / n_tail as f64));
    }
    w.push((METRIC_COST.to_string(), cfg.cost.weight));
    w.push((METRIC_QUALITY.to_string(), cfg.quality.weight));
    let guards = cfg.slo_guards.active();
    if !guards.is_empty() && cfg.slo_guards.weight > 0.0 {
        let total: f64 = w.iter().map(|(_, x)| x).sum();
        for (_, x) in &mut w {
            *x *= (1.0 - cfg.slo_guards.weight) / total;
        }
        let each = cfg.slo_guards.weight / guards.len() as f64;
        for g in guards {
            w.push((g.key(), each));
        }
    }
    w
}

fn check_mode_arms(mode: &AnalysisMode, arms: &[Arm]) -> Result<()> {
    for a in arms {
        if let Arm::Named(n) = a
            && (n.trim().is_empty() || Arm::parse(n) != *a || n.len() > 64)
        {
            return Err(HealthError::InvalidConfig(format!(
                "arm name {n:?} is empty, too long or reserved (control, stable, baseline, canary, shadow); pick another name"
            )));
        }
    }
    let has = |a: &Arm| arms.contains(a);
    let ok = match mode {
        AnalysisMode::Canary => arms.len() == 2 && has(&Arm::Control) && has(&Arm::Canary),
        AnalysisMode::Shadow => arms.len() == 2 && has(&Arm::Control) && has(&Arm::Shadow),
        AnalysisMode::AbTest { .. } => {
            has(&Arm::Control)
                && arms.len() >= 2
                && arms.len() <= 16
                && arms.iter().all(|a| matches!(a, Arm::Control | Arm::Named(_)))
        }
        AnalysisMode::NoControl => arms.len() == 1 && has(&Arm::Canary),
    };
    if ok {
        Ok(())
    } else {
        Err(HealthError::InvalidConfig(format!(
            "mode {mode:?} needs arms: canary = control + canary, shadow = control + shadow, \
             ab_test = control + 1..15 named arms, no_control = canary only; got {:?}",
            arms.iter().map(Arm::label).collect::<Vec<_>>()
        )))
    }
}

/// A number kept for a chart: single precision, rounded to four significant digits (what a
/// chart can show), so a stored history stays small.
#[allow(clippy::cast_possible_truncation)]
fn chart_value(x: f64) -> f32 {
    if x == 0.0 || !x.is_finite() {
        return x as f32;
    }
    let scale = 10f64.powi(3 - x.abs().log10().floor() as i32);
    ((x * scale).round() / scale) as f32
}

/// Appends `record` to a history of at most `capacity` looks. A full history drops every
/// second look (the first one kept, and every promotion and rollback kept), so it always
/// spans the whole rollout from its first look, at a resolution that halves each time it
/// fills, instead of losing its beginning.
fn push_thinned(history: &mut VecDeque<HealthRecord>, record: HealthRecord, capacity: usize) {
    if history.len() >= capacity {
        let mut i = 0usize;
        history.retain(|r| {
            let keep = i.is_multiple_of(2)
                || matches!(r.decision, Decision::Promote { .. } | Decision::Rollback { .. });
            i += 1;
            keep
        });
        while history.len() >= capacity {
            history.pop_front();
        }
    }
    history.push_back(record);
}
