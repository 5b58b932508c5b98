//! The one error type of this crate.

use thiserror::Error;

/// Everything the health monitor can reject. Every message says what to do instead.
///
/// A rejected observation or call changes nothing.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum HealthError {
    /// One field of an observation is invalid.
    #[error("request {request_id:?}: invalid {field}: {reason}")]
    InvalidObservation {
        /// The request id (may be empty when that is the problem).
        request_id: String,
        /// The offending field.
        field: &'static str,
        /// What is wrong and what to send instead.
        reason: String,
    },
    /// The observation names an arm this rollout does not have.
    #[error("request {request_id:?}: unknown arm {arm:?}; this rollout has arms {known}")]
    UnknownArm {
        /// The request id.
        request_id: String,
        /// The arm received.
        arm: String,
        /// The arms configured, comma-separated.
        known: String,
    },
    /// The observation belongs to another rollout or slot.
    #[error(
        "request {request_id:?}: {field} is {got:?} but this monitor tracks {expected:?}; route it to the right rollout"
    )]
    WrongRollout {
        /// The request id.
        request_id: String,
        /// `rollout_id` or `slot`.
        field: &'static str,
        /// Value received.
        got: String,
        /// Value expected.
        expected: String,
    },
    /// A quality update for a request id that is not (or no longer) remembered and names no arm.
    #[error(
        "quality update for unknown request {0:?}; include the arm in the update or send it sooner"
    )]
    UnknownRequest(String),
    /// The configuration or a phase definition is invalid.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// A statistic rejected its input (should not happen for validated input).
    #[error(transparent)]
    Stats(#[from] actuator_stats::StatsError),
}

/// Shorthand result type.
pub type Result<T> = std::result::Result<T, HealthError>;
