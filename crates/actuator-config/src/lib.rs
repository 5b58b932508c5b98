//! The configuration manager of the actuator: versioned LLM configurations with validation,
//! dry-run, structural diff, snapshots, revert and restore, each change written together
//! with an entry of the hash-chained audit log, over any [`actuator_core::Store`].

mod diff;
mod error;
mod manager;
pub mod secrets;
mod validate;

pub use actuator_core::AuditReport;
pub use diff::{Added, Changed, Diff, Removed};
pub use error::ConfigError;
pub use manager::{
    APPLY_RETRIES, Acknowledgement, ApplyOutcome, ApplyRequest, ConfigManager, ConfigSettings,
    MAX_ACK_REASON_BYTES, MAX_DESCRIPTION_BYTES, MAX_LABEL_BYTES, MAX_MESSAGE_BYTES, check_text,
    control_char,
};
pub use validate::{ValidationIssue, builtin_checks, check_schema, validate};
