//! The configuration manager of the actuator: versioned LLM configurations with validation,
//! dry-run, structural diff, snapshots, revert and restore, each change written together
//! with an entry of the hash-chained audit log, over any [`actuator_core::Store`].

mod diff;
mod error;
mod manager;
mod validate;

pub use diff::{Added, Changed, Diff, Removed};
pub use error::ConfigError;
pub use manager::{ApplyOutcome, ApplyRequest, AuditReport, ConfigManager, ConfigSettings};
pub use validate::{ValidationIssue, builtin_checks, check_schema, validate};
