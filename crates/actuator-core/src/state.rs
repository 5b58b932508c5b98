//! The deployment state machine. Every state change in the project goes through
//! [`DeploymentState::transition`], so the allowed moves are written down in one place.
//!
//! ```text
//! Pending → Validating → RollingOut ⇄ Monitoring → Completed
//!                            │  ↘ Paused ↙ │           │ (within the rollback window)
//!                            └→ RollingBack ←┘ ←───────┘
//!                                    └→ RolledBack
//! RollingOut | Monitoring | Paused → Aborted (an operator's abort)
//! any non-terminal state → Failed;  RolledBack | Aborted | Failed → Pending (retry)
//! ```

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::error::CoreError;

/// Where a deployment is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentState {
    /// Accepted, not yet validated.
    Pending,
    /// The candidate is being validated.
    Validating,
    /// Traffic is moving to the candidate (a phase is being entered).
    RollingOut,
    /// A phase is serving traffic and being analysed.
    Monitoring,
    /// Held by an operator or by an inconclusive analysis; traffic stays as it is.
    Paused,
    /// The candidate is the new stable config.
    Completed,
    /// Traffic is moving back to the stable config.
    RollingBack,
    /// The stable config serves all traffic again.
    RolledBack,
    /// The deployment could not proceed (validation failed, an internal error).
    Failed,
    /// An operator aborted the deployment: all traffic went back to the stable config at
    /// once, without a rollback's validation. Not counted as a rollback.
    Aborted,
}

impl DeploymentState {
    /// Every state, in lifecycle order.
    pub const ALL: [Self; 10] = [
        Self::Pending,
        Self::Validating,
        Self::RollingOut,
        Self::Monitoring,
        Self::Paused,
        Self::Completed,
        Self::RollingBack,
        Self::RolledBack,
        Self::Failed,
        Self::Aborted,
    ];

    /// The states reachable in one step.
    pub fn successors(self) -> &'static [Self] {
        use DeploymentState::*;
        match self {
            Pending => &[Validating, Failed],
            Validating => &[RollingOut, Failed],
            RollingOut => &[Monitoring, Paused, RollingBack, Aborted, Failed],
            Monitoring => &[RollingOut, Completed, Paused, RollingBack, Aborted, Failed],
            Paused => &[RollingOut, Monitoring, RollingBack, Aborted, Failed],
            RollingBack => &[RolledBack, Failed],
            RolledBack | Aborted | Failed => &[Pending],
            // A completed rollout may still be rolled back within its rollback window.
            Completed => &[RollingBack],
        }
    }

    /// Whether `next` is reachable in one step.
    pub fn can_transition_to(self, next: Self) -> bool {
        self.successors().contains(&next)
    }

    /// Moves to `next` if the state machine allows it.
    pub fn transition(self, next: Self) -> Result<Self, CoreError> {
        if self.can_transition_to(next) {
            Ok(next)
        } else {
            let allowed = self.successors().iter().map(|s| s.as_str()).collect::<Vec<_>>();
            Err(CoreError::InvalidTransition {
                from: self,
                to: next,
                allowed: if allowed.is_empty() { "nothing".into() } else { allowed.join(", ") },
            })
        }
    }

    /// Whether the deployment has ended (it may still be retried from `RolledBack`, `Aborted`
    /// or `Failed`, and a `Completed` one rolled back within its window).
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::RolledBack | Self::Failed | Self::Aborted)
    }

    /// Whether the deployment holds its slot (at most one active deployment per slot).
    pub fn is_active(self) -> bool {
        !self.is_terminal()
    }

    /// Stable string form (as in JSON and the store).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Validating => "validating",
            Self::RollingOut => "rolling_out",
            Self::Monitoring => "monitoring",
            Self::Paused => "paused",
            Self::Completed => "completed",
            Self::RollingBack => "rolling_back",
            Self::RolledBack => "rolled_back",
            Self::Failed => "failed",
            Self::Aborted => "aborted",
        }
    }

    /// Parses the stable string form.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl fmt::Display for DeploymentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::DeploymentState::{self, *};
    use proptest::prelude::*;

    #[test]
    fn happy_path_and_rollback_path() {
        let mut s = Pending;
        for next in [Validating, RollingOut, Monitoring, RollingOut, Monitoring, Completed] {
            s = s.transition(next).unwrap();
        }
        assert!(s.is_terminal());
        let mut s = Monitoring;
        for next in [RollingBack, RolledBack, Pending] {
            s = s.transition(next).unwrap();
        }
    }

    #[test]
    fn forbidden_moves_name_the_allowed_ones() {
        let err = Completed.transition(Monitoring).unwrap_err().to_string();
        assert!(err.contains("completed to monitoring"), "{err}");
        assert!(err.contains("rolling_back"), "{err}");
        let err = Aborted.transition(RollingBack).unwrap_err().to_string();
        assert!(err.contains("aborted to rolling_back"), "{err}");
        let err = Pending.transition(Completed).unwrap_err().to_string();
        assert!(err.contains("validating, failed"), "{err}");
    }

    #[test]
    fn abort_is_its_own_end_and_can_be_retried() {
        for from in [RollingOut, Monitoring, Paused] {
            assert!(from.can_transition_to(Aborted));
        }
        assert!(Aborted.is_terminal());
        assert!(!RollingBack.can_transition_to(Aborted), "a rollback ends as rolled_back");
        assert_eq!(Aborted.transition(Pending).unwrap(), Pending);
    }

    #[test]
    fn string_forms_round_trip() {
        for s in DeploymentState::ALL {
            assert_eq!(DeploymentState::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }

    fn state() -> impl Strategy<Value = DeploymentState> {
        prop::sample::select(DeploymentState::ALL.to_vec())
    }

    proptest! {
        /// Any sequence of requested moves leaves the machine in a state reached only through
        /// allowed edges; completed is left only for a rollback, and rolled_back is only
        /// reached via rolling_back.
        #[test]
        fn random_walks_respect_the_machine(moves in prop::collection::vec(state(), 0..64)) {
            let mut s = Pending;
            let mut prev = None;
            for m in moves {
                match s.transition(m) {
                    Ok(n) => { prop_assert!(s.successors().contains(&n)); prev = Some(s); s = n; }
                    Err(_) => prop_assert!(!s.can_transition_to(m)),
                }
                if s == RolledBack { prop_assert_eq!(prev, Some(RollingBack)); }
                if prev == Some(Completed) { prop_assert_eq!(s, RollingBack, "left completed"); }
            }
        }
    }
}
