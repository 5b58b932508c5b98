//! Rollback policy, pure and synchronous: the seed's automatic triggers as request settings
//! (their numeric limits become SLO guards inside the analysis's one budget; only the
//! maximum-duration trigger is checked here), how a gradual rollback steps traffic down, and
//! whether the stable config is healthy again afterwards.
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

/// The seed's automatic rollback triggers, as request settings.
///
/// The numeric limits (`error_rate`, `p99_latency_ms`, `min_quality`, `cost_increase`) are
/// no longer checked on the candidate's own point estimates: the engine turns each into an
/// SLO guard of the health analysis, inside the one false-rollback budget. A guard fires only
/// when the candidate is beyond the limit with anytime-valid confidence and confidently worse
/// than its reference (control, or the stable's numbers frozen from the last compared phase);
/// a limit the stable breaks too is reported as such. `null` turns a limit off. Only
/// `max_duration` is evaluated here, by [`RollbackTriggers::evaluate`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RollbackTriggers {
    /// SLO guard: the candidate's error rate must stay at or below this (0.05).
    pub error_rate: Option<f64>,
    /// SLO guard: the candidate's p99 latency must stay at or below this many ms (2000).
    pub p99_latency_ms: Option<f64>,
    /// SLO guard: the candidate's mean quality must stay at or above this (3.5).
    pub min_quality: Option<f64>,
    /// SLO guard: the candidate's mean cost may exceed the reference's by at most this
    /// fraction (0.20 = +20 %).
    pub cost_increase: Option<f64>,
    /// Accepted so that older requests parse; it has no effect. Counting failing looks was
    /// a rule outside the budget; every SLO guard now acts at its first anytime-valid breach.
    pub health_check_failures: Option<u32>,
    /// Roll back when the rollout runs past its maximum duration (true).
    pub max_duration: bool,
    /// Accepted so that older requests parse; it has no effect. Minimums gate promotion
    /// only; the anytime-valid guards need no burn-in to stay inside the budget.
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
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerInput {
    /// Whether the rollout is past its maximum duration.
    pub past_max_duration: bool,
}

/// Which trigger fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerKind {
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

/// One trigger limit as an SLO guard for the health analysis (the engine maps it onto
/// `actuator_health::SloGuard`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum TriggerGuard {
    /// Error rate at most `limit`.
    ErrorRate {
        /// The limit.
        limit: f64,
    },
    /// p99 latency at most `limit_ms`.
    P99Latency {
        /// The limit (ms).
        limit_ms: f64,
    },
    /// Mean quality at least `limit`.
    MinQuality {
        /// The limit.
        limit: f64,
    },
    /// Mean cost at most `limit` above the reference (0.20 = +20 %).
    CostIncrease {
        /// The limit.
        limit: f64,
    },
}

impl RollbackTriggers {
    /// Checks the limits: the error rate strictly inside (0, 1), latency and cost limits
    /// positive, quality non-negative; the field and the range are named.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(e) = self.error_rate
            && !(e.is_finite() && e > 0.0 && e < 1.0)
        {
            return Err(format!("triggers.error_rate must be strictly between 0 and 1, got {e}"));
        }
        for (name, v) in [
            ("triggers.p99_latency_ms", self.p99_latency_ms),
            ("triggers.cost_increase", self.cost_increase),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && v > 0.0 && v <= 1e9)
            {
                return Err(format!("{name} must be a positive number up to 1e9, got {v}"));
            }
        }
        if let Some(v) = self.min_quality
            && !(v.is_finite() && (0.0..=1e6).contains(&v))
        {
            return Err(format!("triggers.min_quality must be within 0–1e6, got {v}"));
        }
        Ok(())
    }

    /// The numeric limits that are set, as SLO guards for the analysis.
    pub fn guards(&self) -> Vec<TriggerGuard> {
        let mut out = Vec::new();
        if let Some(limit) = self.error_rate {
            out.push(TriggerGuard::ErrorRate { limit });
        }
        if let Some(limit_ms) = self.p99_latency_ms {
            out.push(TriggerGuard::P99Latency { limit_ms });
        }
        if let Some(limit) = self.min_quality {
            out.push(TriggerGuard::MinQuality { limit });
        }
        if let Some(limit) = self.cost_increase {
            out.push(TriggerGuard::CostIncrease { limit });
        }
        out
    }

    /// Every trigger that fires on `input`: only the maximum duration is checked here.
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

    #[test]
    fn numeric_limits_become_guards_and_only_the_duration_fires_here() {
        let t = RollbackTriggers::default();
        assert_eq!(
            t.guards(),
            [
                TriggerGuard::ErrorRate { limit: 0.05 },
                TriggerGuard::P99Latency { limit_ms: 2000.0 },
                TriggerGuard::MinQuality { limit: 3.5 },
                TriggerGuard::CostIncrease { limit: 0.20 },
            ]
        );
        assert!(t.evaluate(&TriggerInput { past_max_duration: false }).is_empty());
        let fired = t.evaluate(&TriggerInput { past_max_duration: true });
        assert_eq!(fired.iter().map(|f| f.kind).collect::<Vec<_>>(), [TriggerKind::Timeout]);
        let off = RollbackTriggers { max_duration: false, ..t };
        assert!(off.evaluate(&TriggerInput { past_max_duration: true }).is_empty());
    }

    #[test]
    fn limits_can_be_turned_off_and_are_range_checked() {
        let off: RollbackTriggers =
            serde_json::from_value(serde_json::json!({"error_rate": null, "min_requests": 50}))
                .unwrap();
        assert!(!off.guards().iter().any(|g| matches!(g, TriggerGuard::ErrorRate { .. })));
        assert!(
            serde_json::from_value::<RollbackTriggers>(serde_json::json!({"eror_rate": 1}))
                .is_err()
        );
        let e = RollbackTriggers { error_rate: Some(2.0), ..Default::default() }.validate();
        assert!(e.unwrap_err().contains("triggers.error_rate"));
        let e = RollbackTriggers { p99_latency_ms: Some(-1.0), ..Default::default() }.validate();
        assert!(e.unwrap_err().contains("triggers.p99_latency_ms"));
        RollbackTriggers::default().validate().unwrap();
    }

    #[test]
    fn validation_verdicts() {
        assert_eq!(validate(100, 1, 50, 0.02), Validation::Healthy);
        assert_eq!(validate(100, 10, 50, 0.02), Validation::Unhealthy);
        assert_eq!(validate(10, 0, 50, 0.02), Validation::Unknown);
    }
}
