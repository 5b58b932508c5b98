//! Errors of the core domain.

use crate::state::DeploymentState;

/// An error raised by the core domain: bad input or a forbidden transition.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CoreError {
    /// A slot name does not follow the naming rule.
    #[error(
        "invalid slot name {name:?}: use 1 to 128 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit"
    )]
    InvalidSlotName {
        /// The rejected name.
        name: String,
    },
    /// A deployment state change that the state machine does not allow.
    #[error("a deployment cannot go from {from} to {to}; allowed from {from}: {allowed}")]
    InvalidTransition {
        /// Current state.
        from: DeploymentState,
        /// Requested state.
        to: DeploymentState,
        /// The states reachable from `from`, comma separated.
        allowed: String,
    },
    /// A deployment request that cannot be carried out as written.
    #[error("invalid deployment request: {0}")]
    InvalidRequest(String),
}
