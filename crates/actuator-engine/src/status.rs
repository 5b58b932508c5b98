//! The engine state persisted with each rollout, and the views the API shows.

use actuator_core::{
    DeploymentState, DeploymentStrategy, RollbackMode, RollbackReason, RollbackResult,
    RolloutRecord,
};
use actuator_health::{Decision, Evaluation, RolloutHealth};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

use crate::plan::{Step, StrategySettings};

/// Transitions kept per rollout.
pub const MAX_TRANSITIONS: usize = 100;
/// Error messages kept per rollout.
pub const MAX_ERRORS: usize = 20;
/// Earlier rollbacks kept per rollout (a retried rollout may be rolled back again).
pub const MAX_ROLLBACKS: usize = 20;

/// One state change, kept in the rollout's bounded history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Transition {
    /// From.
    pub from: DeploymentState,
    /// To.
    pub to: DeploymentState,
    /// When.
    pub at: DateTime<Utc>,
    /// Why, for a person.
    pub reason: String,
}

/// One step of a gradual rollback.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RollbackStep {
    /// Candidate share after the step, basis points.
    pub share_bp: u16,
    /// When the step was taken.
    pub at: DateTime<Utc>,
    /// Control requests seen during the previous step.
    pub control_requests: u64,
    /// Control error rate during the previous step.
    pub control_error_rate: Option<f64>,
}

/// A rollback in progress or done.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RollbackState {
    /// Why.
    pub reason: RollbackReason,
    /// Decided by the engine (not a person).
    pub automatic: bool,
    /// Fast or gradual.
    pub mode: RollbackMode,
    /// Who.
    pub actor: String,
    /// When it was decided.
    pub decided_at: DateTime<Utc>,
    /// Milliseconds from the decision to the routing table serving the first step (for fast
    /// mode: stable everywhere).
    pub flip_ms: Option<f64>,
    /// Shares still to step through (gradual), basis points.
    pub remaining_bp: Vec<u16>,
    /// Steps taken.
    pub steps: Vec<RollbackStep>,
    /// When the next step (or the end of validation) is due, had the daemon run throughout.
    pub next_at: DateTime<Utc>,
    /// Length of the current step in milliseconds of active time (0: due at `next_at`).
    #[serde(default)]
    pub step_ms: u64,
    /// Active time spent in the current step: it grows only while the daemon runs, so a
    /// restart never cuts a step or the validation window short.
    #[serde(default)]
    pub step_active_ms: u64,
    /// Control requests seen since the last step.
    pub control_requests: u64,
    /// Control errors seen since the last step.
    pub control_errors: u64,
    /// The result, once finished.
    pub result: Option<RollbackResult>,
    /// The rollout had completed: this rollback restored the version it replaced, within the
    /// rollback window.
    #[serde(default)]
    pub after_completion: bool,
}

/// The engine's state of one rollout, persisted in its record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EngineStatus {
    /// When the rollout started (or was retried).
    pub started_at: DateTime<Utc>,
    /// The version serving before the rollout.
    pub stable_version: Option<u64>,
    /// The snapshot taken before the rollout.
    pub snapshot_id: Option<String>,
    /// The version being rolled out.
    pub candidate_version: u64,
    /// Parsed strategy settings.
    pub settings: StrategySettings,
    /// The plan.
    pub steps: Vec<Step>,
    /// Index of the current step.
    pub step: usize,
    /// When the current step started.
    pub step_started_at: DateTime<Utc>,
    /// The traffic split the routing table serves for this rollout (an
    /// `actuator_canary::Rollout`); `None` when the rollout routes no traffic.
    pub route: Option<actuator_canary::Rollout>,
    /// The health monitor with all accumulated statistics and evidence.
    pub health: Option<RolloutHealth>,
    /// The last decision.
    pub last_decision: Option<DecisionView>,
    /// Why the rollout is paused.
    pub paused_reason: Option<String>,
    /// Whether the analysis said promote while auto-promotion is off.
    pub awaiting_promotion: bool,
    /// The rollout is paused because its step ended inconclusive with `hold`: the candidate
    /// stops spreading, but the analysis keeps looking, and a rollback rule that crosses
    /// still rolls it back (with `auto_rollback`). Cleared by every action that ends the pause.
    #[serde(default)]
    pub held_watch: bool,
    /// Bounded transition history.
    pub transitions: VecDeque<Transition>,
    /// The rollback, if one happened.
    pub rollback: Option<RollbackState>,
    /// Bounded list of errors.
    pub errors: VecDeque<String>,
    /// A note on how it ended.
    pub outcome: Option<String>,
    /// Milliseconds of active time of the rollout: the daemon running and the rollout not
    /// paused. The rollout budget (`canary.max_duration_secs`) is spent against this.
    #[serde(default)]
    pub active_ms: u64,
    /// Milliseconds of active time of the current step; the step's analysis sees this as its
    /// elapsed time.
    #[serde(default)]
    pub step_active_ms: u64,
    /// The rollout budget was spent and the rollout paused for a person; a resume continues
    /// past the budget without pausing again.
    #[serde(default)]
    pub budget_held: bool,
    /// When the rollout completed (the start of its rollback window).
    #[serde(default)]
    pub completed_at: Option<DateTime<Utc>>,
    /// The version the completion made active (none when it changed nothing: a shadow
    /// rollout, or an A/B test control won).
    #[serde(default)]
    pub activated_version: Option<u64>,
    /// Earlier rollbacks of this rollout, oldest first (bounded by [`MAX_ROLLBACKS`]).
    #[serde(default)]
    pub past_rollbacks: VecDeque<RollbackState>,
    /// The promotion gate the rollout waits for, if any (see `crate::gate`).
    #[serde(default)]
    pub gate: Option<crate::gate::GateWait>,
    /// How many gate waits the rollout has had: the id of the next one.
    #[serde(default)]
    pub gate_seq: u64,
}

impl EngineStatus {
    /// A status with nothing in it yet, started at `now`.
    pub(crate) fn fresh(now: DateTime<Utc>) -> Self {
        Self {
            started_at: now,
            stable_version: None,
            snapshot_id: None,
            candidate_version: 0,
            settings: StrategySettings::default(),
            steps: Vec::new(),
            step: 0,
            step_started_at: now,
            route: None,
            health: None,
            last_decision: None,
            paused_reason: None,
            awaiting_promotion: false,
            held_watch: false,
            transitions: VecDeque::new(),
            rollback: None,
            errors: VecDeque::new(),
            outcome: None,
            active_ms: 0,
            step_active_ms: 0,
            budget_held: false,
            completed_at: None,
            activated_version: None,
            past_rollbacks: VecDeque::new(),
            gate: None,
            gate_seq: 0,
        }
    }

    /// Moves the current rollback (if any) into the bounded history.
    pub(crate) fn archive_rollback(&mut self) {
        if let Some(rb) = self.rollback.take() {
            if self.past_rollbacks.len() == MAX_ROLLBACKS {
                self.past_rollbacks.pop_front();
            }
            self.past_rollbacks.push_back(rb);
        }
    }

    /// Every rollback of the rollout, newest first.
    pub fn all_rollbacks(&self) -> impl Iterator<Item = &RollbackState> {
        self.rollback.iter().chain(self.past_rollbacks.iter().rev())
    }

    pub(crate) fn push_transition(&mut self, t: Transition) {
        if self.transitions.len() == MAX_TRANSITIONS {
            self.transitions.pop_front();
        }
        self.transitions.push_back(t);
    }

    pub(crate) fn push_error(&mut self, e: String) {
        if self.errors.len() == MAX_ERRORS {
            self.errors.pop_front();
        }
        self.errors.push_back(e);
    }

    /// The current share of the candidate, in percent.
    pub fn share_percent(&self) -> f64 {
        self.route.as_ref().map_or(0.0, |r| r.share.as_percent())
    }
}

/// The rollback window of a rollout, in seconds, from its stored request (0 when unreadable).
pub(crate) fn stored_rollback_window(rec: &RolloutRecord) -> u64 {
    serde_json::from_value::<actuator_core::DeploymentRequest>(rec.request.clone())
        .map_or(0, |r| r.canary.rollback_window_secs)
}

/// A decision, short.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DecisionView {
    /// `continue`, `promote`, `rollback`, `inconclusive`, `halt`.
    pub kind: String,
    /// The rule that decided, for a person.
    pub rule: String,
    /// When.
    pub at: DateTime<Utc>,
    /// The rules that fired or what holds the stage, with their numbers.
    pub reasons: Vec<String>,
    /// What holds the rollout in its stage: a metric (`errors`, `latency`, ...),
    /// `min_samples`, `min_duration` or `halt`; `None` when nothing does.
    #[serde(default)]
    pub holding: Option<String>,
    /// Further canary requests until the holding item is decided, when projectable.
    #[serde(default)]
    pub projected_requests: Option<u64>,
    /// Seconds until then at the current canary traffic, when projectable.
    #[serde(default)]
    pub projected_secs: Option<f64>,
}

impl DecisionView {
    pub(crate) fn from_eval(e: &Evaluation) -> Self {
        let holding = e.explanation.holding.as_ref();
        let mut reasons: Vec<String> = match &e.decision {
            Decision::Rollback { rules, .. } => rules.iter().map(|r| r.message.clone()).collect(),
            Decision::Inconclusive { needed } => needed
                .iter()
                .map(|n| match n.additional_requests {
                    Some(x) => format!(
                        "{} on {}: about {x} more canary requests needed at the current estimate",
                        n.metric, n.arm
                    ),
                    None => format!(
                        "{} on {}: the estimate is at or beyond the margin, so more requests will not show non-inferiority unless it improves",
                        n.metric, n.arm
                    ),
                })
                .collect(),
            Decision::Halt { reason } => vec![serde_json::to_string(reason).unwrap_or_default()],
            Decision::Promote { .. } => vec![e.explanation.rule.clone()],
            Decision::Continue => {
                let g = &e.explanation.gates;
                vec![format!(
                    "{} of {} requests, {} of {} s",
                    g.samples, g.min_samples, g.elapsed_secs, g.min_duration_secs
                )]
            }
        };
        if let Some(h) = holding
            && !matches!(e.decision, Decision::Halt { .. })
        {
            reasons.push(format!("holding: {}", h.reason));
        }
        Self {
            kind: e.decision.kind().to_owned(),
            rule: e.explanation.rule.clone(),
            at: e.explanation.at,
            reasons,
            holding: holding.map(|h| h.what.clone()),
            projected_requests: holding.and_then(|h| h.additional_requests),
            projected_secs: holding.and_then(|h| h.eta_secs),
        }
    }
}

/// One arm's numbers in the current step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ArmView {
    /// `control`, `canary`, `shadow` or an A/B arm.
    pub arm: String,
    /// Requests.
    pub requests: u64,
    /// Errors and timeouts.
    pub errors: u64,
    /// Error rate.
    pub error_rate: Option<f64>,
    /// Latency p50 (ms).
    pub p50_ms: Option<f64>,
    /// Latency p95 (ms).
    pub p95_ms: Option<f64>,
    /// Latency p99 (ms).
    pub p99_ms: Option<f64>,
    /// Mean cost per request.
    pub mean_cost: Option<f64>,
    /// Mean quality.
    pub mean_quality: Option<f64>,
}

/// One metric's estimate with its always-valid interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MetricView {
    /// The arm compared with control.
    pub arm: String,
    /// The metric.
    pub metric: String,
    /// Estimated difference (candidate worse is positive), pooled over the stages so far;
    /// `lower` and `upper` are centred on it.
    pub estimate: Option<f64>,
    /// This stage's own estimate.
    #[serde(default)]
    pub phase_estimate: Option<f64>,
    /// Lower bound.
    pub lower: Option<f64>,
    /// Upper bound.
    pub upper: Option<f64>,
    /// Promotion margin.
    pub margin: Option<f64>,
    /// Whether the upper bound is below the margin.
    pub non_inferior: bool,
    /// Whether the evidence of harm is significant.
    pub significant: bool,
    /// ln of the e-value carried over the whole rollout.
    pub log_e_total: f64,
    /// Where the metric stands: `non_inferior`, `pending`, `unreachable`, `beyond_margin`,
    /// `not_required`.
    #[serde(default)]
    pub verdict: Option<actuator_health::MetricVerdict>,
    /// Whether it holds promotion in this stage.
    #[serde(default)]
    pub blocking: bool,
    /// Further canary requests to show non-inferiority at the current estimate.
    #[serde(default)]
    pub additional_requests: Option<u64>,
    /// The same in seconds at the current canary traffic.
    #[serde(default)]
    pub eta_secs: Option<f64>,
}

/// A rollback as listed in the history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RollbackView {
    /// The rollout.
    pub rollout_id: String,
    /// The slot.
    pub slot: String,
    /// The rollback.
    #[serde(flatten)]
    pub rollback: RollbackState,
}

/// One step of a rollout's plan as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StepView {
    /// What the step does with traffic.
    pub kind: crate::plan::StepKind,
    /// The candidate's share in percent (a shadow step serves no user: 0).
    pub share_percent: f64,
    /// A canary phase's role (`smoke`, `prove`, `watch`); none for other steps.
    pub role: Option<actuator_core::PhaseRole>,
    /// Candidate requests before the step may be promoted.
    pub min_samples: u64,
    /// Seconds of active time before the step may be promoted.
    pub min_secs: u64,
    /// Seconds of active time after which the step's analysis is inconclusive.
    pub max_secs: Option<u64>,
}

impl StepView {
    fn of(step: &Step, request_phase: &serde_json::Value) -> Self {
        use crate::plan::StepKind;
        let share_percent = f64::from(step.share_bp) / 100.0;
        let role = (step.kind == StepKind::Canary).then(|| {
            serde_json::from_value::<actuator_core::PhaseRole>(request_phase["role"].clone())
                .unwrap_or_else(|_| actuator_core::PhaseRole::for_percent(share_percent))
        });
        Self {
            kind: step.kind.clone(),
            share_percent: if step.kind == StepKind::Shadow { 0.0 } else { share_percent },
            role,
            min_samples: step.min_samples,
            min_secs: step.min_secs,
            max_secs: step.max_secs,
        }
    }
}

/// What the API shows of a rollout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RolloutView {
    /// Id.
    pub id: String,
    /// Slot.
    pub slot: String,
    /// Strategy.
    pub strategy: DeploymentStrategy,
    /// State.
    pub state: DeploymentState,
    /// Current step index.
    pub phase: usize,
    /// Number of steps.
    pub phases: usize,
    /// The plan: every step in order (`phase` indexes it, from 0).
    #[serde(default)]
    pub steps: Vec<StepView>,
    /// Candidate share in percent.
    pub share_percent: f64,
    /// Stable version.
    pub stable_version: Option<u64>,
    /// Candidate version.
    pub candidate_version: u64,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Updated.
    pub updated_at: DateTime<Utc>,
    /// Current step start.
    pub phase_started_at: DateTime<Utc>,
    /// Why paused.
    pub paused_reason: Option<String>,
    /// Paused at an inconclusive step with `hold` while the analysis keeps watching: a
    /// rollback rule that crosses still rolls the rollout back.
    pub held_watch: bool,
    /// Whether the analysis recommends promotion while auto-promotion is off.
    pub awaiting_promotion: bool,
    /// Last decision.
    pub last_decision: Option<DecisionView>,
    /// Arms.
    pub arms: Vec<ArmView>,
    /// Metrics.
    pub metrics: Vec<MetricView>,
    /// Transitions.
    pub transitions: Vec<Transition>,
    /// Rollback.
    pub rollback: Option<RollbackState>,
    /// Every rollback of the rollout (also those before a retry), newest first.
    pub rollbacks: Vec<RollbackState>,
    /// Seconds of active time of the rollout (daemon running, rollout not paused).
    pub active_secs: f64,
    /// Seconds of active time of the current step.
    pub phase_active_secs: f64,
    /// When the rollout completed.
    pub completed_at: Option<DateTime<Utc>>,
    /// Until when a completed rollout can still be rolled back.
    pub rollback_window_until: Option<DateTime<Utc>>,
    /// Errors.
    pub errors: Vec<String>,
    /// How it ended.
    pub outcome: Option<String>,
    /// Store revision (optimistic concurrency).
    pub revision: u64,
    /// The promotion gate the rollout waits for: its name, kind, last answer and next try.
    #[serde(default)]
    pub gate: Option<crate::gate::GateView>,
    /// The feed of a rollout whose outcomes come from a metric source (`metrics` in the
    /// request): its looks, and the missing data that holds promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_feed: Option<crate::metric_feed::MetricFeedView>,
}

impl RolloutView {
    /// The view of `rec` with state `st`; `window_secs` is the request's rollback window.
    pub(crate) fn new(rec: &RolloutRecord, st: &EngineStatus, window_secs: u64) -> Self {
        let window_until = if rec.state == DeploymentState::Completed {
            st.completed_at.and_then(|at| at.checked_add_signed(crate::plan::secs(window_secs)?))
        } else {
            None
        };
        let eval = st.health.as_ref().and_then(|h| h.last_evaluation());
        let arms = eval
            .map(|e| {
                e.explanation
                    .arms
                    .iter()
                    .map(|a| ArmView {
                        arm: a.arm.label().to_owned(),
                        requests: a.requests,
                        errors: a.error_events,
                        error_rate: a.error_rate,
                        p50_ms: a.p50_ms,
                        p95_ms: a.p95_ms,
                        p99_ms: a.p99_ms,
                        mean_cost: a.mean_cost,
                        mean_quality: a.mean_quality,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let metrics = eval
            .map(|e| {
                e.explanation
                    .comparisons
                    .iter()
                    .flat_map(|c| {
                        c.metrics.iter().map(|m| MetricView {
                            arm: c.arm.label().to_owned(),
                            metric: m.metric.clone(),
                            estimate: m.estimate,
                            phase_estimate: m.phase_estimate,
                            lower: m.lower,
                            upper: m.upper,
                            margin: m.margin,
                            non_inferior: m.non_inferior,
                            significant: m.significant,
                            log_e_total: m.log_e_total,
                            verdict: Some(m.verdict),
                            blocking: m.blocking,
                            additional_requests: m.additional_requests,
                            eta_secs: m.eta_secs,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            id: rec.id.clone(),
            slot: rec.slot.to_string(),
            strategy: rec.strategy,
            state: rec.state,
            phase: st.step,
            phases: st.steps.len(),
            steps: st
                .steps
                .iter()
                .enumerate()
                .map(|(i, step)| StepView::of(step, &rec.request["canary"]["phases"][i]))
                .collect(),
            share_percent: st.share_percent(),
            stable_version: st.stable_version,
            candidate_version: st.candidate_version,
            created_at: rec.created_at,
            updated_at: rec.updated_at,
            phase_started_at: st.step_started_at,
            paused_reason: st.paused_reason.clone(),
            held_watch: st.held_watch,
            awaiting_promotion: st.awaiting_promotion,
            last_decision: st.last_decision.clone(),
            arms,
            metrics,
            transitions: st.transitions.iter().cloned().collect(),
            rollback: st.rollback.clone(),
            rollbacks: st.all_rollbacks().cloned().collect(),
            active_secs: st.active_ms as f64 / 1000.0,
            phase_active_secs: st.step_active_ms as f64 / 1000.0,
            completed_at: st.completed_at,
            rollback_window_until: window_until,
            errors: st.errors.iter().cloned().collect(),
            outcome: st.outcome.clone(),
            revision: rec.revision,
            gate: st.gate.as_ref().map(crate::gate::GateView::from),
            metric_feed: None,
        }
    }
}
