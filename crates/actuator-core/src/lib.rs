//! Core of the actuator: the domain of versioned LLM configurations and their rollouts,
//! the deployment state machine, and the plugin traits (`Store`, `Notifier`,
//! `MetricSource`) with the `Registry` that plugins fill.
//!
//! This crate does no IO and starts no runtime. Everything that touches a disk, a network
//! or a clock lives behind a trait implemented elsewhere (plugins, the server).

pub mod actuator;
pub mod audit;
pub mod config;
pub mod deployment;
pub mod error;
pub mod events;
pub mod gate;
pub mod metric_query;
pub mod plugin;
pub mod state;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod token;

pub use actuator::{Actuator, ActuatorState};
pub use audit::{
    AuditDraft, AuditEntry, AuditHead, AuditOutcome, AuditReport, ChainProblem, ChainVerifier,
    FoundProblem,
};
pub use config::{ConfigVersion, NewSlot, Slot, SlotName, Snapshot};
pub use deployment::*;
pub use error::CoreError;
pub use events::{ClassSet, EventClass, EventSelection};
pub use gate::{GateFailure, GateKind, GateSpec};
pub use metric_query::{LatencyUnit, MetricsSpec};
pub use plugin::{
    ApiVersion, Event, HostContext, MetricSource, Notifier, PluginDirectory, PluginError,
    PluginHealth, PluginInfo, PluginKind, PluginStatus, PluginTier, Registration, Registry,
    Severity,
};
pub use state::DeploymentState;
pub use store::{
    Admission, AppendVersion, AuditQuery, CheckpointWrite, EncodedRollout, NewObservationBatch,
    NewRollout, NewSnapshot, ObservationBatch, Page, PageRequest, RolloutCounts, RolloutFilter,
    RolloutRecord, RolloutRoute, RolloutUpdate, Store, StoreError, rollback_counts,
};
pub use token::{NewToken, Role, TokenRecord};
