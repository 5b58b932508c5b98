//! [`RolloutHealth`]: the health monitor of one rollout.

use std::collections::VecDeque;

use actuator_stats::classical::{two_proportion_z_test, welch_t_test};
use actuator_stats::cluster::{self, MIN_NONEMPTY_BUCKETS};
use actuator_stats::estimate::{
    mean_difference, mean_vs_reference, proportion_difference_pooled,
    proportion_difference_under_margin, proportion_vs_reference, relative_mean_difference,
};
use actuator_stats::{
    ClusteredRatio, CondBinomConfig, ConditionalBinomial, Estimate, EvidenceLedger, ExceedanceTest,
    HalfNormalMixture, RatioDirection, RunningInterval, Stratified, freeze_threshold,
    p_value_from_log_e, srm_clustered_log_e, srm_log_e,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::aggregate::{ArmStats, Clean};
use crate::config::{AnalysisMode, HealthConfig, PhaseConfig, PrimaryMetric};
use crate::decision::{
    ArmComparison, ArmSummary, BenefitReport, CheckReport, CheckStatus, ClassicalReport, Decision,
    Evaluation, Explanation, FiredRule, Gates, HaltReason, HealthRecord, MetricReport,
    ProjectedNeed, RuleKind,
};
use crate::dedup::{DedupEntry, RequestDedup, arm_request_key, request_key};
use crate::error::{HealthError, Result};
use crate::observation::{
    Arm, Observation, Outcome, QualityUpdate, check_non_negative, check_quality, check_request_id,
    invalid,
};

const METRIC_ERRORS: &str = "errors";
const METRIC_LATENCY: &str = "latency";
const METRIC_COST: &str = "cost";
const METRIC_QUALITY: &str = "quality";
/// Guard-rail checks that count consecutive breaches, in report order.
const GUARD_CHECKS: [&str; 6] =
    ["success_rate", "error_rate", "p95_latency", "p99_latency", "quality", "cost_increase"];

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
    mde_abs: f64,
    margin: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TreatmentState {
    arm: usize,
    ledger: EvidenceLedger,
    /// Per ledger metric, the stratified promotion-side estimate of completed phases.
    strat: Vec<Stratified>,
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
    /// Exceedance index of the guard-rail p95 and p99 thresholds in `ArmStats::exceedance`.
    guard_exceedance: [usize; 2],
    /// Latched catastrophic-guard rule per arm.
    tripped: Vec<Option<FiredRule>>,
    /// Per treatment, per guard check: breaching looks in a row.
    consecutive: Vec<[u32; 6]>,
    /// Per treatment, per ledger metric: running intersection of the reported interval.
    intervals: Vec<Vec<RunningInterval>>,
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
    /// The metric cannot block promotion (no data by design, or no frozen threshold yet).
    optional: bool,
    note: Option<String>,
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
    dedup: RequestDedup,
    history: VecDeque<HealthRecord>,
    last: Option<Evaluation>,
    duplicates: u64,
}

impl RolloutHealth {
    /// A monitor for `rollout_id` on `slot` (empty slot accepts any), starting `first_phase` at `now`.
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
        let treatments = treatments_idx
            .iter()
            .map(|&arm| {
                Ok(TreatmentState {
                    arm,
                    ledger: EvidenceLedger::new(config.alpha_rollback_total, &weights)?,
                    strat: vec![Stratified::new(); weights.len()],
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
                guard_exceedance: [0, 1],
                tripped: Vec::new(),
                consecutive: Vec::new(),
                intervals: Vec::new(),
                srm_max_log_e: 0.0,
            },
            dedup,
            history: VecDeque::new(),
            last: None,
            duplicates: 0,
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
            + self.dedup.approx_bytes()
            + self.history.len() * (std::mem::size_of::<HealthRecord>() + 256)
            + self.treatments.len() * 1024
    }

    fn build_phase(
        &self,
        index: u32,
        config: PhaseConfig,
        now: DateTime<Utc>,
        previous: Option<&PhaseState>,
    ) -> Result<PhaseState> {
        self.check_phase(&config)?;
        let t = &self.config.latency_tail;
        let mut tail = Vec::new();
        for (i, q) in t.quantiles.iter().enumerate() {
            let from_previous = previous
                .zip(self.control)
                .and_then(|(p, c)| freeze_threshold(&p.stats[c].latency_sketch, *q));
            let baseline =
                config.baseline_tail_thresholds_ms.as_ref().and_then(|v| v.get(i).copied());
            let threshold_ms = from_previous
                .or(if previous.is_none() { baseline } else { None })
                .filter(|x| *x > 0.0 && x.is_finite());
            tail.push(TailTest {
                key: format!("tail:q{q}"),
                threshold_ms,
                mde_abs: t.mde_abs[i],
                margin: t.promote_margin_abs[i],
            });
        }
        for s in &t.slo_thresholds {
            tail.push(TailTest {
                key: format!("tail:slo:{}ms", s.threshold_ms),
                threshold_ms: Some(s.threshold_ms),
                mde_abs: s.mde_abs,
                margin: s.promote_margin_abs,
            });
        }
        let mut thresholds: Vec<f64> = tail.iter().filter_map(|x| x.threshold_ms).collect();
        let guard_exceedance = [thresholds.len(), thresholds.len() + 1];
        thresholds.push(self.config.guard_rails.max_p95_ms);
        thresholds.push(self.config.guard_rails.max_p99_ms);
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
        let n_metrics = ledger_weights(&self.config).len();
        Ok(PhaseState {
            index,
            config,
            started_at: now,
            stats,
            tail,
            guard_exceedance,
            tripped: vec![None; self.arms.len()],
            consecutive: vec![[0; 6]; self.treatments.len()],
            intervals: vec![vec![RunningInterval::new(); n_metrics]; self.treatments.len()],
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
        for v in [p.margins.latency_ratio, p.margins.cost_ratio].into_iter().flatten() {
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
    /// (multiplied), tail thresholds are frozen from the control's sketch of the ending phase,
    /// and fresh statistics start. On error nothing changes.
    ///
    /// # Errors
    /// [`HealthError::InvalidConfig`] when the phase does not list the rollout's arms or its
    /// shares are invalid.
    pub fn start_phase(&mut self, next: PhaseConfig, now: DateTime<Utc>) -> Result<()> {
        let phase = self.build_phase(self.phase.index + 1, next, now, Some(&self.phase))?;
        for ti in 0..self.treatments.len() {
            let evals = self.evaluate_metrics(ti);
            let benefit = self.benefit_log_e(ti).map(|(l, _)| l);
            let t = &mut self.treatments[ti];
            for (mi, e) in evals.iter().enumerate() {
                t.ledger.set_current(&e.key, e.log_e)?;
                if let Some(p) = e.promo {
                    t.strat[mi].add(p);
                }
            }
            t.ledger.close_phase();
            t.benefit_carried_log_e += benefit.unwrap_or(0.0);
        }
        self.phase = phase;
        Ok(())
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

    fn pair(&self, ti: usize) -> Option<(&ArmStats, &ArmStats)> {
        let c = self.control?;
        Some((&self.phase.stats[self.treatments[ti].arm], &self.phase.stats[c]))
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
        let margins = self.phase.config.margins;
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
            note: Some(note.to_string()),
        };
        // Sticky split: both arms keep per-user-bucket statistics, and every test below uses
        // the cluster-robust variance instead of the i.i.d. one.
        let clustered = pair.and_then(|(t, c)| t.clusters.as_deref().zip(c.clusters.as_deref()));
        // Only borrowed in branches where `clustered` is `Some`.
        let no_clusters = ClusteredRatio::default();
        let burn_note = |t: &ClusteredRatio, c: &ClusteredRatio| {
            format!(
                "burn-in: a clustered test counts from {MIN_NONEMPTY_BUCKETS} non-empty user buckets per arm (canary {}, control {}); the catastrophic guard acts before",
                t.non_empty(),
                c.non_empty()
            )
        };
        let clustered_note =
            |what: &str| format!("{what}; clustered by user bucket (sticky split)");

        // errors
        let delta = margins.errors_abs.unwrap_or(cfg.errors.promote_margin_abs);
        let a_err = self.alpha_m(ti, METRIC_ERRORS);
        out.push(match pair {
            Some((t, c)) if t.requests > 0 && c.requests > 0 && clustered.is_some() => {
                let (tc, cc) = clustered
                    .map(|(a, b)| (&a.errors, &b.errors))
                    .unwrap_or((&no_clusters, &no_clusters));
                let ready = cluster::burned_in(tc, cc);
                let harm = cluster::proportion_difference_pooled(tc, cc).ok();
                let lower_mix = self.mixture(cfg.errors.mde_abs, a_err);
                MetricEval {
                    key: METRIC_ERRORS.into(),
                    log_e: if ready {
                        harm.zip(lower_mix).map_or(0.0, |(h, m)| m.log_e(h, 0.0))
                    } else {
                        0.0
                    },
                    harm,
                    lower_mix,
                    promo: ready
                        .then(|| cluster::proportion_difference_under_margin(tc, cc, delta).ok())
                        .flatten(),
                    promo_mix: self.mixture(delta, cfg.alpha_promote),
                    margin: Some(delta),
                    optional: false,
                    note: Some(if ready {
                        clustered_note("mSPRT on the error-rate difference")
                    } else {
                        burn_note(tc, cc)
                    }),
                }
            }
            Some((t, c)) if t.requests > 0 && c.requests > 0 => {
                let harm = proportion_difference_pooled(
                    t.error_events(),
                    t.requests,
                    c.error_events(),
                    c.requests,
                )
                .ok();
                let lower_mix = self.mixture(cfg.errors.mde_abs, a_err);
                let log_e = match self.pair_share(ti) {
                    Some(pi) => {
                        let cb = CondBinomConfig {
                            mde_ratio: cfg.errors.mde_ratio,
                            grid_points: 40,
                            tolerance_ratio: cfg.errors.tolerance_ratio,
                            direction: RatioDirection::Increase,
                            scale_alpha: a_err,
                        };
                        ConditionalBinomial::new(cb)
                            .and_then(|e| e.log_e_with(t.error_events(), c.error_events(), pi))
                            .unwrap_or(0.0)
                    }
                    None => harm.zip(lower_mix).map_or(0.0, |(h, m)| m.log_e(h, 0.0)),
                };
                MetricEval {
                    key: METRIC_ERRORS.into(),
                    log_e,
                    harm,
                    lower_mix,
                    promo: proportion_difference_under_margin(
                        t.error_events(),
                        t.requests,
                        c.error_events(),
                        c.requests,
                        delta,
                    )
                    .ok(),
                    promo_mix: self.mixture(delta, cfg.alpha_promote),
                    margin: Some(delta),
                    optional: false,
                    note: None,
                }
            }
            _ => empty(METRIC_ERRORS, "no requests in one arm yet", false),
        });

        // latency (mean of ln latency)
        let lat_margin = margins.latency_ratio.unwrap_or(cfg.latency.promote_margin_ratio).ln();
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
                let est = cluster::ratio_difference(tc, cc).ok();
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
                    note: Some(if ready {
                        clustered_note("ln ratio of geometric means")
                    } else {
                        burn_note(tc, cc)
                    }),
                }
            }
            Some((t, c)) if t.log_latency.count() >= burn && c.log_latency.count() >= burn => {
                let est = mean_difference(&t.log_latency, &c.log_latency).ok();
                let mix = self.mixture(cfg.latency.mde_ratio.ln(), a_lat);
                MetricEval {
                    key: METRIC_LATENCY.into(),
                    log_e: est.zip(mix).map_or(0.0, |(e, m)| m.log_e(e, 0.0)),
                    harm: est,
                    lower_mix: mix,
                    promo: est,
                    promo_mix: self.mixture(lat_margin, cfg.alpha_promote),
                    margin: Some(lat_margin),
                    optional: false,
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
            out.push(match pair {
                Some((t, c))
                    if t.exceedance[idx].counts().1 >= burn
                        && c.exceedance[idx].counts().1 >= burn =>
                {
                    let (te, ce) = (&t.exceedance[idx], &c.exceedance[idx]);
                    let cl = clustered
                        .and_then(|(a, b)| a.exceedance.get(idx).zip(b.exceedance.get(idx)));
                    match ExceedanceTest::new(tt.mde_abs, a, beta) {
                        Ok(test) if cl.is_some() => {
                            let (tc, cc) = cl.unwrap_or((&no_clusters, &no_clusters));
                            let ready = cluster::burned_in(tc, cc);
                            let harm = cluster::proportion_difference_pooled(tc, cc).ok();
                            let mix = *test.mixture();
                            MetricEval {
                                key: tt.key.clone(),
                                log_e: if ready {
                                    harm.map_or(0.0, |h| mix.log_e(h, 0.0))
                                } else {
                                    0.0
                                },
                                harm,
                                lower_mix: Some(mix),
                                promo: ready
                                    .then(|| {
                                        cluster::proportion_difference_under_margin(
                                            tc, cc, tt.margin,
                                        )
                                        .ok()
                                    })
                                    .flatten(),
                                promo_mix: self.mixture(tt.margin, cfg.alpha_promote),
                                margin: Some(tt.margin),
                                optional: false,
                                note: Some(if ready {
                                    clustered_note(&format!(
                                        "share of requests above {threshold:.1} ms"
                                    ))
                                } else {
                                    burn_note(tc, cc)
                                }),
                            }
                        }
                        Ok(test) => MetricEval {
                            key: tt.key.clone(),
                            log_e: test.log_e(te, ce),
                            harm: test.estimate(te, ce).ok(),
                            lower_mix: Some(*test.mixture()),
                            promo: test.estimate_under_margin(te, ce, tt.margin).ok(),
                            promo_mix: self.mixture(tt.margin, cfg.alpha_promote),
                            margin: Some(tt.margin),
                            optional: false,
                            note: Some(format!("share of requests above {threshold:.1} ms")),
                        },
                        Err(_) => empty(&tt.key, "invalid tail configuration", true),
                    }
                }
                _ => empty(&tt.key, "fewer latencies than clt_burn_in in one arm", false),
            });
        }

        // cost (relative difference of means)
        let cost_margin = margins.cost_ratio.unwrap_or(cfg.cost.promote_margin_ratio) - 1.0;
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
                let est = cluster::relative_ratio_difference(tc, cc).ok();
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
                    note: Some(if ready {
                        clustered_note("relative change of mean cost")
                    } else {
                        burn_note(tc, cc)
                    }),
                }
            }
            Some((t, c)) if t.cost.count() >= burn && c.cost.count() >= burn => {
                let est = relative_mean_difference(&t.cost, &c.cost).ok();
                let mix = self.mixture(cfg.cost.mde_ratio - 1.0, a_cost);
                let theta0 = cfg.cost.tolerance_ratio - 1.0;
                MetricEval {
                    key: METRIC_COST.into(),
                    log_e: est.zip(mix).map_or(0.0, |(e, m)| m.log_e(e, theta0)),
                    harm: est,
                    lower_mix: mix,
                    promo: est,
                    promo_mix: self.mixture(cost_margin, cfg.alpha_promote),
                    margin: Some(cost_margin),
                    optional: false,
                    note: Some("relative change of mean cost".into()),
                }
            }
            _ => empty(METRIC_COST, "fewer costs than clt_burn_in in one arm", false),
        });

        // quality (harm = lower): control − canary
        let q_margin = margins.quality_abs.unwrap_or(cfg.quality.promote_margin_abs);
        let a_q = self.alpha_m(ti, METRIC_QUALITY);
        out.push(match pair {
            Some((t, c)) if t.quality.count() == 0 && c.quality.count() == 0 => {
                empty(METRIC_QUALITY, "no quality scores yet", !cfg.quality.required_for_promotion)
            }
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
                let est = cluster::ratio_difference(cc, tc).ok();
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
                    optional: false,
                    note: Some(if ready {
                        clustered_note("control minus canary mean score")
                    } else {
                        burn_note(tc, cc)
                    }),
                }
            }
            Some((t, c)) if t.quality.count() >= burn && c.quality.count() >= burn => {
                let est = mean_difference(&c.quality, &t.quality).ok();
                let mix = self.mixture(cfg.quality.mde_abs, a_q);
                MetricEval {
                    key: METRIC_QUALITY.into(),
                    log_e: est.zip(mix).map_or(0.0, |(e, m)| m.log_e(e, 0.0)),
                    harm: est,
                    lower_mix: mix,
                    promo: est,
                    promo_mix: self.mixture(q_margin, cfg.alpha_promote),
                    margin: Some(q_margin),
                    optional: false,
                    note: Some("control minus canary mean score".into()),
                }
            }
            _ => empty(METRIC_QUALITY, "fewer scores than clt_burn_in in one arm", false),
        });
        out
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

    /// Guard rails of treatment `ti` (or the canary without control), without consecutive counts.
    fn guard_checks(&self, ti: usize, combined_log_e: f64) -> Vec<CheckReport> {
        let g = self.config.guard_rails;
        let beta = 1.0 - self.config.power_for_tau;
        let t = &self.phase.stats[self.treatments[ti].arm];
        let c = self.control.map(|i| &self.phase.stats[i]);
        let burn = self.config.clt_burn_in.max(2);
        let lower = |est: Option<Estimate>, mde: f64| -> Option<f64> {
            let e = est?;
            let m = HalfNormalMixture::for_mde(mde, g.alpha, beta).ok()?;
            fin(e.theta - m.half_width(e.variance, g.alpha).ok()?)
        };
        let status =
            |abs_bad: bool, critical: bool, bound: Option<f64>, reference: f64| -> CheckStatus {
                if !abs_bad {
                    CheckStatus::Pass
                } else if bound.is_some_and(|b| b > reference) {
                    if critical { CheckStatus::Critical } else { CheckStatus::Breach }
                } else {
                    CheckStatus::Watch
                }
            };
        let report = |check: &str,
                      value: Option<f64>,
                      control_value: Option<f64>,
                      threshold: f64,
                      bound: Option<f64>,
                      st: CheckStatus| CheckReport {
            check: check.into(),
            value: value.and_then(fin),
            control_value: control_value.and_then(fin),
            threshold,
            confidence_bound: bound,
            status: st,
            consecutive: 0,
        };
        let mut out = Vec::new();
        let n = t.requests;
        let fails = |s: &ArmStats| s.requests - s.ok;

        // 1. success rate (harm quantity: failure share = 1 - success)
        {
            let thr = g.min_success_rate;
            let v = t.success_rate();
            let (bound, reference) = match c {
                Some(c) if c.requests > 0 && n > 0 => (
                    lower(
                        proportion_difference_under_margin(
                            fails(t),
                            n,
                            fails(c),
                            c.requests,
                            g.rate_margin,
                        )
                        .ok(),
                        g.rate_margin,
                    ),
                    g.rate_margin,
                ),
                None if n > 0 => {
                    (lower(proportion_vs_reference(fails(t), n, 1.0 - thr).ok(), 1.0 - thr), 0.0)
                }
                _ => (None, 0.0),
            };
            let st = match v {
                None => CheckStatus::Insufficient,
                Some(s) => {
                    status(s < thr, 1.0 - s > g.critical_factor * (1.0 - thr), bound, reference)
                }
            };
            out.push(report("success_rate", v, c.and_then(ArmStats::success_rate), thr, bound, st));
        }
        // 2. error rate
        {
            let thr = g.max_error_rate;
            let v = t.error_rate();
            let (bound, reference) = match c {
                Some(c) if c.requests > 0 && n > 0 => (
                    lower(
                        proportion_difference_under_margin(
                            t.error_events(),
                            n,
                            c.error_events(),
                            c.requests,
                            g.rate_margin,
                        )
                        .ok(),
                        g.rate_margin,
                    ),
                    g.rate_margin,
                ),
                None if n > 0 => {
                    (lower(proportion_vs_reference(t.error_events(), n, thr).ok(), thr), 0.0)
                }
                _ => (None, 0.0),
            };
            let st = match v {
                None => CheckStatus::Insufficient,
                Some(p) => status(p > thr, p > g.critical_factor * thr, bound, reference),
            };
            out.push(report("error_rate", v, c.and_then(ArmStats::error_rate), thr, bound, st));
        }
        // 3./4. p95 and p99 latency, confirmed on the exceedance of the threshold
        for (k, (name, q, thr, margin, tail)) in [
            ("p95_latency", 0.95, g.max_p95_ms, g.p95_exceedance_margin, 0.05),
            ("p99_latency", 0.99, g.max_p99_ms, g.p99_exceedance_margin, 0.01),
        ]
        .into_iter()
        .enumerate()
        {
            let idx = self.phase.guard_exceedance[k];
            let v = t.latency_sketch.quantile(q);
            let (te, tn) = t.exceedance[idx].counts();
            let (bound, reference) = match c {
                Some(c) if c.exceedance[idx].counts().1 > 0 && tn > 0 => {
                    let (ce, cn) = c.exceedance[idx].counts();
                    (
                        lower(
                            proportion_difference_under_margin(te, tn, ce, cn, margin).ok(),
                            margin,
                        ),
                        margin,
                    )
                }
                None if tn > 0 => (lower(proportion_vs_reference(te, tn, tail).ok(), tail), 0.0),
                _ => (None, 0.0),
            };
            let st = match v {
                None => CheckStatus::Insufficient,
                Some(p) => status(p > thr, p > g.critical_factor * thr, bound, reference),
            };
            out.push(report(name, v, c.and_then(|c| c.latency_sketch.quantile(q)), thr, bound, st));
        }
        // 5. quality (harm = below min_quality)
        {
            let thr = g.min_quality;
            let hi = self.config.quality.range.1;
            let v = t.quality.mean();
            let (bound, reference) = match c {
                Some(c) if t.quality.count() >= burn && c.quality.count() >= burn => (
                    lower(mean_difference(&c.quality, &t.quality).ok(), g.quality_margin),
                    g.quality_margin,
                ),
                None if t.quality.count() >= burn => (
                    lower(
                        mean_vs_reference(&t.quality, thr).ok().map(Estimate::flipped),
                        g.quality_margin,
                    ),
                    0.0,
                ),
                _ => (None, 0.0),
            };
            let st = match v {
                None => CheckStatus::NotEvaluated,
                Some(q) => {
                    status(q < thr, hi - q > g.critical_factor * (hi - thr), bound, reference)
                }
            };
            out.push(report("quality", v, c.and_then(|c| c.quality.mean()), thr, bound, st));
        }
        // 6. cost increase over control
        {
            let thr = g.max_cost_increase;
            let est = match c {
                Some(c) if t.cost.count() >= burn && c.cost.count() >= burn => {
                    relative_mean_difference(&t.cost, &c.cost).ok()
                }
                _ => None,
            };
            let bound = lower(est, thr);
            let st = match est {
                None => CheckStatus::NotEvaluated,
                Some(e) => status(e.theta > thr, e.theta > g.critical_factor * thr, bound, thr),
            };
            out.push(report("cost_increase", est.map(|e| e.theta), None, thr, bound, st));
        }
        // 7. sample size (gates promotion only)
        {
            let size = c.map_or(n, |c| n.min(c.requests));
            let st = if size >= g.min_sample_size {
                CheckStatus::Pass
            } else {
                CheckStatus::Insufficient
            };
            out.push(report(
                "sample_size",
                Some(size as f64),
                c.map(|c| c.requests as f64),
                g.min_sample_size as f64,
                None,
                st,
            ));
        }
        // 8. statistical significance (the sequential rule; reported here as a check)
        {
            let thr = 1.0 / self.config.alpha_rollback_total;
            let st =
                if combined_log_e >= thr.ln() { CheckStatus::Breach } else { CheckStatus::Pass };
            let st = if self.control.is_none() { CheckStatus::NotEvaluated } else { st };
            out.push(report(
                "statistical_significance",
                Some(combined_log_e.exp().min(1e300)),
                None,
                thr,
                None,
                st,
            ));
        }
        if !g.enabled {
            for r in out.iter_mut().take(GUARD_CHECKS.len()) {
                r.status = CheckStatus::NotEvaluated;
            }
        }
        out
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
            let clusters: Option<Vec<&[f64]>> = self
                .phase
                .stats
                .iter()
                .map(|s| s.clusters.as_deref().map(|c| c.errors.counts()))
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
                            srm_clustered_log_e(per_arm[i], &total, shares[i], alpha).ok()
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
    /// Order: catastrophic guard → halt (SRM, missing data) → rollback (sequential evidence,
    /// guard rails) → promotion → inconclusive (phase budget spent) → continue. The minimum
    /// samples and duration gate promotion only, never rollback.
    pub fn look(&mut self, now: DateTime<Utc>) -> Evaluation {
        let elapsed = (now - self.phase.started_at).num_seconds().max(0);
        let pc = self.phase.config.clone();
        let samples =
            self.treatments.iter().map(|t| self.phase.stats[t.arm].requests).min().unwrap_or(0);
        let budget_spent = pc.max_samples.is_some_and(|m| samples >= m)
            || pc.max_duration_secs.is_some_and(|m| elapsed >= m);
        let gates = Gates {
            samples,
            min_samples: pc.min_samples,
            elapsed_secs: elapsed,
            min_duration_secs: pc.min_duration_secs,
            budget_spent,
        };
        let gates_met = samples >= pc.min_samples && elapsed >= pc.min_duration_secs;

        let mut comparisons = Vec::new();
        for ti in 0..self.treatments.len() {
            let evals = self.evaluate_metrics(ti);
            for e in &evals {
                // keys were registered at construction; a failure here would be a bug, so ignore
                let _ = self.treatments[ti].ledger.set_current(&e.key, e.log_e);
            }
            let verdict = self.treatments[ti].ledger.verdict();
            let mut checks = self.guard_checks(ti, verdict.combined_log_e);
            for (k, r) in checks.iter_mut().take(GUARD_CHECKS.len()).enumerate() {
                let c = &mut self.phase.consecutive[ti][k];
                *c = if matches!(r.status, CheckStatus::Breach | CheckStatus::Critical) {
                    c.saturating_add(1)
                } else {
                    0
                };
                r.consecutive = *c;
            }
            let mut metrics = Vec::new();
            for (mi, e) in evals.iter().enumerate() {
                let entry = self.treatments[ti].ledger.entries()[mi].clone();
                let lower = e.harm.zip(e.lower_mix).and_then(|(h, m)| {
                    m.half_width(h.variance, entry.weight * self.config.alpha_rollback_total)
                        .ok()
                        .map(|d| h.theta - d)
                });
                let strat = self.treatments[ti].strat[mi].combined_with(e.promo);
                let upper = strat.zip(e.promo_mix).and_then(|(s, m)| {
                    m.half_width(s.variance, self.config.alpha_promote).ok().map(|d| s.theta + d)
                });
                let iv = &mut self.phase.intervals[ti][mi];
                iv.update(actuator_stats::Interval {
                    lower: lower.unwrap_or(f64::NEG_INFINITY),
                    upper: upper.unwrap_or(f64::INFINITY),
                });
                let (lo, up) = (fin(iv.lower()), fin(iv.upper()));
                let non_inferior = match (up, e.margin) {
                    (Some(u), Some(d)) => u < d,
                    _ => e.optional,
                };
                let alpha = entry.weight * self.config.alpha_rollback_total;
                metrics.push(MetricReport {
                    metric: e.key.clone(),
                    estimate: e.harm.map(|h| h.theta).and_then(fin),
                    lower: lo,
                    upper: up,
                    log_e_phase: e.log_e,
                    log_e_total: entry.log_e(),
                    weight: entry.weight,
                    alpha,
                    significant: entry.log_e() >= (1.0 / alpha).ln(),
                    margin: e.margin,
                    non_inferior,
                    note: e.note.clone(),
                });
            }
            let classical = match self.pair(ti) {
                Some((t, c)) => ClassicalReport {
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
                None => ClassicalReport { errors: None, log_latency: None },
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
                log_threshold: verdict.log_threshold,
                p_value: p_value_from_log_e(verdict.combined_log_e),
                metrics,
                checks,
                classical,
                benefit,
            });
        }

        let (decision, rule) = self.decide(&comparisons, gates_met, budget_spent);
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
        };
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
        };
        if self.history.len() >= self.config.history_capacity {
            self.history.pop_front();
        }
        self.history.push_back(record);
        let evaluation = Evaluation { decision, explanation };
        self.last = Some(evaluation.clone());
        evaluation
    }

    fn decide(
        &mut self,
        comparisons: &[ArmComparison],
        gates_met: bool,
        budget_spent: bool,
    ) -> (Decision, String) {
        // 1. catastrophic guard
        for t in &self.treatments {
            if let Some(rule) = &self.phase.tripped[t.arm] {
                let msg = rule.message.clone();
                return (
                    Decision::Rollback { arm: self.arms[t.arm].clone(), rules: vec![rule.clone()] },
                    msg,
                );
            }
        }
        // 2. data quality
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
        // 3. rollback
        for comp in comparisons {
            let mut rules = Vec::new();
            if comp.combined_log_e >= comp.log_threshold {
                let mut named = false;
                for m in comp.metrics.iter().filter(|m| m.significant) {
                    named = true;
                    rules.push(FiredRule {
                        kind: RuleKind::Sequential,
                        metric: m.metric.clone(),
                        value: m.estimate,
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
                if !named
                    && let Some(m) = comp.metrics.iter().max_by(|a, b| {
                        (a.weight.ln() + a.log_e_total).total_cmp(&(b.weight.ln() + b.log_e_total))
                    })
                {
                    rules.push(FiredRule {
                        kind: RuleKind::Sequential,
                        metric: m.metric.clone(),
                        value: m.estimate,
                        threshold: Some(comp.log_threshold.exp()),
                        log_e_value: Some(comp.combined_log_e),
                        message: format!(
                            "weighted e-average {:.1} >= {:.0}; largest contribution from {}",
                            comp.combined_log_e.exp(),
                            comp.log_threshold.exp(),
                            m.metric
                        ),
                    });
                }
            }
            let need = self.config.guard_rails.consecutive_failures;
            for c in comp.checks.iter().take(GUARD_CHECKS.len()) {
                let kind = match c.status {
                    CheckStatus::Critical => RuleKind::CriticalGuardRail,
                    CheckStatus::Breach if c.consecutive >= need => RuleKind::GuardRail,
                    _ => continue,
                };
                rules.push(FiredRule {
                    kind,
                    metric: c.check.clone(),
                    value: c.value,
                    threshold: Some(c.threshold),
                    log_e_value: None,
                    message: format!(
                        "guard rail {}: canary {} vs threshold {} (control {}, confidence bound {}, {} breaching looks)",
                        c.check,
                        fmt_opt(c.value),
                        c.threshold,
                        fmt_opt(c.control_value),
                        fmt_opt(c.confidence_bound),
                        c.consecutive
                    ),
                });
            }
            if !rules.is_empty() {
                let msg = format!(
                    "rollback {}: {}",
                    comp.arm,
                    rules.iter().map(|r| r.metric.as_str()).collect::<Vec<_>>().join(", ")
                );
                return (Decision::Rollback { arm: comp.arm.clone(), rules }, msg);
            }
        }
        // 4. promotion
        let healthy = |comp: &ArmComparison| {
            comp.checks
                .iter()
                .take(GUARD_CHECKS.len())
                .all(|c| !matches!(c.status, CheckStatus::Breach | CheckStatus::Critical))
                && comp
                    .checks
                    .iter()
                    .any(|c| c.check == "sample_size" && c.status == CheckStatus::Pass)
        };
        if gates_met {
            match self.mode {
                AnalysisMode::AbTest { .. } => {
                    let winner = comparisons
                        .iter()
                        .filter(|c| {
                            healthy(c)
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
                        let msg =
                            format!("promote {}: better than control on the primary metric", w.arm);
                        return (Decision::Promote { arm: w.arm.clone() }, msg);
                    }
                }
                AnalysisMode::NoControl => {
                    if let Some(comp) = comparisons.first()
                        && comp.checks.iter().take(GUARD_CHECKS.len()).all(|c| {
                            matches!(c.status, CheckStatus::Pass | CheckStatus::NotEvaluated)
                        })
                        && healthy(comp)
                    {
                        return (
                            Decision::Promote { arm: comp.arm.clone() },
                            "promote: guard rails pass and the phase minimums are met".into(),
                        );
                    }
                }
                AnalysisMode::Canary | AnalysisMode::Shadow => {
                    if let Some(comp) = comparisons.first()
                        && healthy(comp)
                        && comp.metrics.iter().all(|m| m.non_inferior)
                    {
                        let msg = format!(
                            "promote {}: every metric's upper bound is below its margin and the phase minimums are met",
                            comp.arm
                        );
                        return (Decision::Promote { arm: comp.arm.clone() }, msg);
                    }
                }
            }
        }
        // 5. inconclusive
        if budget_spent {
            let mut needed = Vec::new();
            for (ti, comp) in comparisons.iter().enumerate() {
                let n = self.phase.stats[self.treatments[ti].arm].requests;
                let evals = self.evaluate_metrics(ti);
                for (mi, m) in comp.metrics.iter().enumerate().filter(|(_, m)| !m.non_inferior) {
                    let e = &evals[mi];
                    let strat = self.treatments[ti].strat[mi].combined_with(e.promo);
                    let additional = match (strat, e.promo_mix, m.margin) {
                        (Some(s), Some(mix), Some(d)) => mix
                            .projected_n(s, n.max(1), d, self.config.alpha_promote)
                            .map(|p| p.saturating_sub(n)),
                        _ => None,
                    };
                    needed.push(ProjectedNeed {
                        metric: m.metric.clone(),
                        arm: comp.arm.clone(),
                        additional_requests: additional,
                    });
                }
            }
            return (
                Decision::Inconclusive { needed },
                "inconclusive: phase budget spent without a decision".into(),
            );
        }
        let why = if gates_met {
            "continue: not yet non-inferior on every metric"
        } else {
            "continue: phase minimums not met yet"
        };
        (Decision::Continue, why.into())
    }
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |x| format!("{x:.4}"))
}

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
