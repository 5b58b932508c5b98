//! Errors of the engine.

use actuator_config::ConfigError;
use actuator_core::{CoreError, StoreError};

/// An error of the rollout engine; [`EngineError::code`] is stable and machine-readable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The request is invalid.
    #[error("invalid rollout request: {0}")]
    Invalid(String),
    /// A request field is outside its range.
    #[error("{field} must be within {range}, got {got}")]
    OutOfRange {
        /// The field, as a path in the request (`canary.max_duration_secs`).
        field: String,
        /// The allowed range, for a person.
        range: String,
        /// What the request asked for.
        got: String,
    },
    /// No such rollout.
    #[error("rollout {0} does not exist")]
    UnknownRollout(String),
    /// The daemon already runs its maximum of rollouts.
    #[error(
        "{active} rollouts are active, the limit is {limit}; wait for one to finish or raise engine.max_active_rollouts"
    )]
    Limit {
        /// Active now.
        active: usize,
        /// The limit.
        limit: usize,
    },
    /// The slot already has an active rollout.
    #[error(
        "slot {slot} already has an active rollout ({rollout}); abort it or wait for it to finish"
    )]
    SlotBusy {
        /// The slot.
        slot: String,
        /// The rollout holding it.
        rollout: String,
    },
    /// The action is not allowed in the rollout's state.
    #[error("cannot {action} rollout {id} while it is {state}")]
    InvalidTransition {
        /// The action.
        action: String,
        /// The rollout.
        id: String,
        /// Its state.
        state: String,
    },
    /// A completed rollout cannot be rolled back.
    #[error("cannot roll back completed rollout {id}: {detail}")]
    RollbackRefused {
        /// The rollout.
        id: String,
        /// Why, for a person.
        detail: String,
    },
    /// The engine is not running.
    #[error("the engine is not running")]
    NotRunning,
    /// A rollback did not finish in time.
    #[error("rollback of {0} timed out; the rollout is marked failed, check the slot by hand")]
    RollbackTimeout(String),
    /// A configuration error (validation of the candidate, unknown slot or version).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A domain rule.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An observation batch could not be made durable: nothing of it was kept.
    #[error(
        "the store could not persist the observation batch, so none of it was kept; retry the whole batch: {0}"
    )]
    NotDurable(StoreError),
    /// The ingestion shard of an observation body already holds as many bodies as it may:
    /// nothing of this one was read.
    #[error(
        "observation ingestion is at capacity: shard {shard} already holds {waiting} batches waiting to be recorded; nothing of this one was kept, retry after {retry_after_secs} s"
    )]
    Overloaded {
        /// The shard.
        shard: usize,
        /// Bodies waiting in it (its capacity).
        waiting: usize,
        /// Seconds to wait before sending again.
        retry_after_secs: u64,
    },
    /// An observation body as a whole is unusable; nothing of it was kept.
    #[error(transparent)]
    Body(#[from] crate::ingest::BodyError),
}

impl EngineError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid_request",
            Self::OutOfRange { .. } => "out_of_range",
            Self::UnknownRollout(_) => "rollout_not_found",
            Self::Limit { .. } => "rollout_limit",
            Self::SlotBusy { .. } => "rollout_active",
            Self::InvalidTransition { .. } => "invalid_transition",
            Self::RollbackRefused { .. } => "rollback_refused",
            Self::NotRunning => "not_running",
            Self::RollbackTimeout(_) => "rollback_timeout",
            Self::Config(e) => e.code(),
            Self::Core(_) => "invalid_request",
            Self::Store(StoreError::Conflict { .. }) => "conflict",
            Self::Store(StoreError::NotFound { .. }) => "not_found",
            Self::Store(StoreError::AlreadyExists { .. }) => "already_exists",
            Self::Store(StoreError::Invalid(_)) => "invalid_request",
            Self::Store(_) => "store_error",
            Self::NotDurable(_) => "store_unavailable",
            Self::Overloaded { .. } => "ingest_overloaded",
            Self::Body(crate::ingest::BodyError::Malformed(_)) => "malformed_json",
            Self::Body(crate::ingest::BodyError::TooMany(_)) => "batch_too_large",
            Self::Body(_) => "invalid_body",
        }
    }
}
