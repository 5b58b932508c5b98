//! The seed's `Actuator` trait: the face the rollout coordinator shows to its callers.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::deployment::{
    ActuatorStats, DeploymentRequest, DeploymentStatus, HealthCheckResult, RollbackRequest,
    RollbackResult,
};

/// Lifecycle of an actuator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActuatorState {
    /// Not running; deploy calls are refused.
    Stopped,
    /// Loading persisted state.
    Starting,
    /// Accepting deployments and running the control loop.
    Running,
    /// Draining.
    Stopping,
}

/// Something that deploys config changes safely.
///
/// Unlike the seed, every method takes `&self`: a daemon shares one coordinator between
/// the HTTP handlers and the control loop, and implementations keep their own fine-grained
/// synchronisation instead of forcing one lock around the whole engine.
#[async_trait]
pub trait Actuator: Send + Sync {
    /// Error type of the implementation.
    type Error: std::error::Error + Send + Sync + 'static;

    /// A name for logs.
    fn name(&self) -> &str;
    /// Where the actuator is in its lifecycle.
    fn state(&self) -> ActuatorState;
    /// Loads persisted deployments and starts the control loop.
    async fn start(&self) -> Result<(), Self::Error>;
    /// Stops the control loop; deployments stay persisted and resume on the next start.
    async fn stop(&self) -> Result<(), Self::Error>;
    /// Validates and starts a deployment.
    async fn deploy(&self, request: DeploymentRequest) -> Result<DeploymentStatus, Self::Error>;
    /// The status of one deployment.
    async fn get_deployment_status(
        &self,
        deployment_id: &str,
    ) -> Result<DeploymentStatus, Self::Error>;
    /// Rolls a deployment back.
    async fn rollback(&self, request: RollbackRequest) -> Result<RollbackResult, Self::Error>;
    /// Checks the actuator's own health and that of active deployments.
    async fn health_check(&self) -> Result<Vec<HealthCheckResult>, Self::Error>;
    /// Counters since the store was created.
    fn get_stats(&self) -> ActuatorStats;
    /// Forgets finished deployments held in memory (persisted history stays).
    async fn reset(&self) -> Result<(), Self::Error>;
}
