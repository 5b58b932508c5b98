//! Rollback policy, pure and synchronous: when to roll back outside the sequential analysis
//! (the seed's automatic triggers), how a gradual rollback steps traffic down, and whether the
//! stable config is healthy again afterwards.
//!
//! The rollout engine (`actuator-engine`) executes what this crate decides: it persists each
//! step before the routing table changes.

use serde::{Deserialize, Serialize};

/// The shares a gradual rollback passes through, in basis points of 10,000.
pub const GRADUAL_STEPS_BP: [u16; 5] = [5_000, 2_500, 500, 100, 0];

/// The steps of a gradual rollback from `current_bp`: every share of [`GRADUAL_STEPS_BP`]
/// strictly below the current one, ending at 0. A fast rollback is the single step `[0]`.
pub fn gradual_plan(current_bp: u16) -> Vec<u16> {
    let mut plan: Vec<u16> = GRADUAL_STEPS_BP.into_iter().filter(|&s| s < current_bp).collect();
    if plan.last() != Some(&0) {
        plan.push(0);
    }
    plan
}

/// The seed's automatic rollback triggers: absolute limits on the candidate's own numbers,
/// checked beside the sequential analysis. Each is optional (`null` turns it off).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RollbackTriggers {
    /// Roll back when the candidate's error rate is above this (0.05).
    pub error_rate: Option<f64>,
    /// Roll back when the candidate's p99 latency is above this many ms (2000).
    pub p99_latency_ms: Option<f64>,
    /// Roll back when the candidate's mean quality is below this (3.5).
    pub min_quality: Option<f64>,
    /// Roll back when the candidate's mean cost exceeds control's by more than this
    /// fraction (0.20 = +20 %).
    pub cost_increase: Option<f64>,
    /// Roll back after this many failing health checks in a row (3).
    pub health_check_failures: Option<u32>,
    /// Roll back when the rollout runs past its maximum duration (true).
    pub max_duration: bool,
    /// Candidate requests needed before the numeric triggers may fire (200): below that, a
    /// handful of slow or failed requests would trip them by chance.
    pub min_requests: u64,
}

impl Default for RollbackTriggers {
    fn default() -> Self {
        Self {
            error_rate: Some(0.05),
            p99_latency_ms: Some(2000.0),
            min_quality: Some(3.5),
            cost_increase: Some(0.20),
            health_check_failures: Some(3),
            max_duration: true,
            min_requests: 200,
        }
    }
}

/// What the triggers look at.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TriggerInput {
    /// Candidate requests in the current step.
    pub requests: u64,
    /// Candidate error rate.
    pub error_rate: Option<f64>,
    /// Candidate p99 latency (ms).
    pub p99_latency_ms: Option<f64>,
    /// Candidate mean quality.
    pub mean_quality: Option<f64>,
    /// Candidate mean cost.
    pub mean_cost: Option<f64>,
    /// Control mean cost, when there is a control.
    pub control_mean_cost: Option<f64>,
    /// Failing health checks in a row.
    pub consecutive_failures: u32,
    /// Whether the rollout is past its maximum duration.
    pub past_max_duration: bool,
}

/// Which trigger fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerKind {
    /// Error rate above its limit.
    ErrorRate,
    /// p99 latency above its limit.
    Latency,
    /// Quality below its limit.
    Quality,
    /// Cost increase above its limit.
    Cost,
    /// Health checks failing in a row.
    HealthChecks,
    /// Maximum duration exceeded.
    Timeout,
}

/// A fired trigger with its numbers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FiredTrigger {
    /// Which.
    pub kind: TriggerKind,
    /// The measured value.
    pub value: f64,
    /// The limit.
    pub limit: f64,
    /// For a person.
    pub message: String,
}

impl RollbackTriggers {
    /// Checks the limits: rates in 0–1, latencies and ratios non-negative.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(e) = self.error_rate
            && !(0.0..=1.0).contains(&e)
        {
            return Err(format!("triggers.error_rate must be within 0–1, got {e}"));
        }
        for (name, v) in [
            ("triggers.p99_latency_ms", self.p99_latency_ms),
            ("triggers.min_quality", self.min_quality),
            ("triggers.cost_increase", self.cost_increase),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && v >= 0.0)
            {
                return Err(format!("{name} must be a non-negative number, got {v}"));
            }
        }
        Ok(())
    }

    /// Every trigger that fires on `input`.
    pub fn evaluate(&self, input: &TriggerInput) -> Vec<FiredTrigger> {
        let mut out = Vec::new();
        if self.max_duration && input.past_max_duration {
            out.push(FiredTrigger {
                kind: TriggerKind::Timeout,
                value: 1.0,
                limit: 0.0,
                message: "the rollout ran past its maximum duration".into(),
            });
        }
        if let Some(limit) = self.health_check_failures
            && input.consecutive_failures >= limit
        {
            out.push(FiredTrigger {
                kind: TriggerKind::HealthChecks,
                value: f64::from(input.consecutive_failures),
                limit: f64::from(limit),
                message: format!(
                    "{} health checks failed in a row (limit {limit})",
                    input.consecutive_failures
                ),
            });
        }
        if input.requests < self.min_requests {
            return out;
        }
        if let (Some(limit), Some(v)) = (self.error_rate, input.error_rate)
            && v > limit
        {
            out.push(FiredTrigger {
                kind: TriggerKind::ErrorRate,
                value: v,
                limit,
                message: format!("error rate {:.2} % is above {:.2} %", v * 100.0, limit * 100.0),
            });
        }
        if let (Some(limit), Some(v)) = (self.p99_latency_ms, input.p99_latency_ms)
            && v > limit
        {
            out.push(FiredTrigger {
                kind: TriggerKind::Latency,
                value: v,
                limit,
                message: format!("p99 latency {v:.0} ms is above {limit:.0} ms"),
            });
        }
        if let (Some(limit), Some(v)) = (self.min_quality, input.mean_quality)
            && v < limit
        {
            out.push(FiredTrigger {
                kind: TriggerKind::Quality,
                value: v,
                limit,
                message: format!("mean quality {v:.2} is below {limit:.2}"),
            });
        }
        if let (Some(limit), Some(c), Some(base)) =
            (self.cost_increase, input.mean_cost, input.control_mean_cost)
            && base > 0.0
        {
            let inc = c / base - 1.0;
            if inc > limit {
                out.push(FiredTrigger {
                    kind: TriggerKind::Cost,
                    value: inc,
                    limit,
                    message: format!(
                        "cost per request is {:.1} % above control (limit {:.1} %)",
                        inc * 100.0,
                        limit * 100.0
                    ),
                });
            }
        }
        out
    }
}

/// The verdict of post-rollback validation: is the stable config healthy again?
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Validation {
    /// Its error rate is within the limit.
    Healthy,
    /// It still fails: the trouble is not (only) the candidate.
    Unhealthy,
    /// Too little traffic to say.
    Unknown,
}

/// Judges the stable config on the requests it served after the rollback: healthy when at
/// least `min_requests` were seen and the error rate is at most `max_error_rate`.
pub fn validate(requests: u64, errors: u64, min_requests: u64, max_error_rate: f64) -> Validation {
    if requests == 0 || requests < min_requests {
        return Validation::Unknown;
    }
    if errors as f64 / requests as f64 <= max_error_rate {
        Validation::Healthy
    } else {
        Validation::Unhealthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn gradual_plans() {
        assert_eq!(gradual_plan(10_000), [5_000, 2_500, 500, 100, 0]);
        assert_eq!(gradual_plan(2_500), [500, 100, 0]);
        assert_eq!(gradual_plan(100), [0]);
        assert_eq!(gradual_plan(0), [0]);
    }

    proptest! {
        /// A gradual plan only ever lowers the share, and always ends at 0.
        #[test]
        fn plans_descend_to_zero(current in 0u16..=10_000) {
            let p = gradual_plan(current);
            prop_assert_eq!(p.last(), Some(&0));
            prop_assert!(p.windows(2).all(|w| w[0] > w[1]));
            prop_assert!(p.iter().all(|&s| s < current || s == 0));
        }
    }

    fn input() -> TriggerInput {
        TriggerInput {
            requests: 1000,
            error_rate: Some(0.01),
            p99_latency_ms: Some(900.0),
            mean_quality: Some(4.2),
            mean_cost: Some(0.002),
            control_mean_cost: Some(0.002),
            consecutive_failures: 0,
            past_max_duration: false,
        }
    }

    #[test]
    fn seed_defaults_fire_on_the_seed_limits() {
        let t = RollbackTriggers::default();
        assert!(t.evaluate(&input()).is_empty());
        let kinds =
            |i: TriggerInput| t.evaluate(&i).into_iter().map(|f| f.kind).collect::<Vec<_>>();
        assert_eq!(
            kinds(TriggerInput { error_rate: Some(0.06), ..input() }),
            [TriggerKind::ErrorRate]
        );
        assert_eq!(
            kinds(TriggerInput { p99_latency_ms: Some(2100.0), ..input() }),
            [TriggerKind::Latency]
        );
        assert_eq!(
            kinds(TriggerInput { mean_quality: Some(3.4), ..input() }),
            [TriggerKind::Quality]
        );
        assert_eq!(kinds(TriggerInput { mean_cost: Some(0.0025), ..input() }), [TriggerKind::Cost]);
        assert_eq!(
            kinds(TriggerInput { consecutive_failures: 3, ..input() }),
            [TriggerKind::HealthChecks]
        );
        assert_eq!(
            kinds(TriggerInput { past_max_duration: true, ..input() }),
            [TriggerKind::Timeout]
        );
    }

    #[test]
    fn numeric_triggers_wait_for_enough_requests_and_can_be_turned_off() {
        let t = RollbackTriggers::default();
        assert!(
            t.evaluate(&TriggerInput { requests: 50, error_rate: Some(0.5), ..input() }).is_empty()
        );
        let off: RollbackTriggers =
            serde_json::from_value(serde_json::json!({"error_rate": null})).unwrap();
        assert!(off.evaluate(&TriggerInput { error_rate: Some(0.5), ..input() }).is_empty());
        assert!(
            serde_json::from_value::<RollbackTriggers>(serde_json::json!({"eror_rate": 1}))
                .is_err()
        );
        assert!(
            RollbackTriggers { error_rate: Some(2.0), ..Default::default() }.validate().is_err()
        );
    }

    #[test]
    fn validation_verdicts() {
        assert_eq!(validate(100, 1, 50, 0.02), Validation::Healthy);
        assert_eq!(validate(100, 10, 50, 0.02), Validation::Unhealthy);
        assert_eq!(validate(10, 0, 50, 0.02), Validation::Unknown);
    }
}
