//! Errors of the configuration manager.

use actuator_core::{CoreError, StoreError};

use crate::validate::ValidationIssue;

/// An error of the configuration manager. [`ConfigError::code`] gives a stable
/// machine-readable code for APIs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The slot does not exist.
    #[error("slot {0} does not exist; create it first")]
    UnknownSlot(String),
    /// The version does not exist.
    #[error("version {version} of slot {slot} does not exist")]
    UnknownVersion {
        /// The slot.
        slot: String,
        /// The version asked for.
        version: u64,
    },
    /// The snapshot does not exist (or was removed by retention).
    #[error("snapshot {0} does not exist (it may have been removed by retention)")]
    UnknownSnapshot(String),
    /// The slot has no active version yet.
    #[error("slot {0} has no active version yet; apply a config first")]
    NoActiveVersion(String),
    /// The document failed validation.
    #[error("config for slot {slot} is invalid: {}", issues.iter().map(|i| i.to_string()).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// The slot.
        slot: String,
        /// Every problem found.
        issues: Vec<ValidationIssue>,
    },
    /// The document is larger than the limit.
    #[error("config document is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The slot's JSON Schema is not a valid schema.
    #[error("the schema given for slot {slot} is not a valid JSON Schema: {message}")]
    InvalidSchema {
        /// The slot.
        slot: String,
        /// What is wrong.
        message: String,
    },
    /// The slot is being rolled out; direct changes would fight the rollout.
    #[error(
        "slot {slot} has an active rollout ({rollout}); abort or finish it before changing the config directly"
    )]
    RolloutActive {
        /// The slot.
        slot: String,
        /// The rollout id.
        rollout: String,
    },
    /// An acknowledgement was asked for a chain with no unacknowledged problem.
    #[error("there is nothing to acknowledge: {0}")]
    NothingToAcknowledge(String),
    /// A domain rule was broken.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ConfigError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownSlot(_) => "slot_not_found",
            Self::UnknownVersion { .. } => "version_not_found",
            Self::UnknownSnapshot(_) => "snapshot_not_found",
            Self::NoActiveVersion(_) => "no_active_version",
            Self::Invalid { .. } => "validation_failed",
            Self::TooLarge { .. } => "payload_too_large",
            Self::InvalidSchema { .. } => "invalid_schema",
            Self::RolloutActive { .. } => "rollout_active",
            Self::NothingToAcknowledge(_) => "nothing_to_acknowledge",
            Self::Core(_) => "invalid_request",
            Self::Store(StoreError::NotFound { .. }) => "not_found",
            Self::Store(StoreError::AlreadyExists { .. }) => "already_exists",
            Self::Store(StoreError::Conflict { .. }) => "conflict",
            Self::Store(StoreError::Invalid(_)) => "invalid_request",
            Self::Store(StoreError::Limit { .. }) => "rollout_limit",
            Self::Store(StoreError::SlotHeld { .. }) => "rollout_active",
            Self::Store(StoreError::StableChanged { .. }) => "conflict",
            Self::Store(StoreError::Unavailable(_)) => "store_unavailable",
            Self::Store(StoreError::ChainBroken(_)) => "audit_chain_broken",
            Self::Store(StoreError::Fenced { .. }) => "not_leader",
            Self::Store(_) => "store_error",
        }
    }
}
