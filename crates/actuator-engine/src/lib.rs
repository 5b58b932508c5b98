//! The rollout coordinator of the actuator (the seed's Actuator Coordinator, Canary
//! Deployment Engine and Rollback Engine).
//!
//! An [`Engine`] takes a [`DeploymentRequest`](actuator_core::DeploymentRequest), validates
//! it, snapshots the stable config, turns the strategy into a plan of steps, and drives the
//! rollout through the state machine: a control loop looks at every active rollout on each
//! tick and on each batch of observations, and promotes, holds or rolls back as the health
//! monitor (`actuator-health`) decides.
//!
//! **Persist before act.** Every transition is written to the store, with its audit entry and
//! under the rollout's revision, before the routing table changes or a notification goes
//! out. The routing table is rebuilt from what the store holds (the `route` field of a
//! rollout's status), so a restarted daemon serves exactly what was last persisted and
//! resumes each rollout where it was.
//!
//! **Acknowledge after durable.** An observation batch is appended to the store in one
//! transaction before it is acknowledged (unless `engine.durability = "checkpoint"`), then
//! folded into the in-memory evidence; a checkpoint saves the evidence with the highest batch
//! it holds and deletes the batches it folded, and a start replays the batches after it.

mod engine;
mod error;
mod gate;
mod ingest;
mod ingest_queue;
pub mod metric_feed;
mod plan;
mod status;

pub use engine::{
    Clock, Durability, Engine, EngineSettings, ManualAction, ManualClock, RouteSink, SystemClock,
};
pub use error::EngineError;
pub use gate::{GATE_HEADER, GateAnswer, GateOutcome, GateView, GateWait};
pub use ingest::{BodyError, BodyFormat, IngestItemError, IngestReport, MAX_BATCH, ParsedBatch};
pub use plan::{
    InconclusivePolicy, MAX_AB_ARMS, MAX_ACTOR_BYTES, MAX_ATTRIBUTE_OVERRIDES, MAX_COST_RATIO,
    MAX_DESCRIPTION_BYTES, MAX_DURATION_SECS, MAX_FAILING_LOOKS, MAX_KEYS, MAX_LATENCY_MS,
    MAX_METADATA_BYTES, MAX_NAME_BYTES, MAX_PLAN_STEPS, MAX_QUALITY, MAX_REASON_BYTES,
    MAX_ROLLBACK_WINDOW_SECS, MAX_SAMPLES, MAX_SPLIT_BYTES, MIN_SHARE_PERCENT, MIN_STEP_PERCENT,
    Step, StepKind,
};
pub use status::{
    ArmView, DecisionView, EngineStatus, MAX_ERRORS, MAX_ROLLBACKS, MAX_TRANSITIONS, MetricView,
    RollbackState, RollbackStep, RollbackView, RolloutView, StepView, Transition,
};
