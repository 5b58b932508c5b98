//! The seed's `Actuator` trait over the engine.

use super::*;

#[async_trait]
impl Actuator for Engine {
    type Error = EngineError;

    fn name(&self) -> &str {
        "actuator-engine"
    }

    fn state(&self) -> ActuatorState {
        *lock(&self.inner.state)
    }

    async fn start(&self) -> Result<(), EngineError> {
        Engine::start(self).await
    }

    async fn stop(&self) -> Result<(), EngineError> {
        Engine::stop(self).await
    }

    async fn deploy(&self, request: DeploymentRequest) -> Result<DeploymentStatus, EngineError> {
        let v = Engine::deploy(self, request).await?;
        self.get_deployment_status(&v.id).await
    }

    async fn get_deployment_status(
        &self,
        deployment_id: &str,
    ) -> Result<DeploymentStatus, EngineError> {
        let v = self.view(deployment_id).await?;
        let health = match v.last_decision.as_ref().map(|d| d.kind.as_str()) {
            Some("rollback") => HealthStatus::Unhealthy,
            Some("halt") | Some("inconclusive") => HealthStatus::Degraded,
            Some(_) => HealthStatus::Healthy,
            None => HealthStatus::Unknown,
        };
        Ok(DeploymentStatus {
            deployment_id: v.id,
            slot: SlotName::new(v.slot).map_err(EngineError::Core)?,
            strategy: v.strategy,
            state: v.state,
            current_phase: Some(v.phase),
            traffic_percent: v.share_percent,
            stable_version: v.stable_version,
            candidate_version: v.candidate_version,
            start_time: v.created_at,
            phase_start_time: Some(v.phase_started_at),
            health,
            errors: v.errors,
            last_updated: v.updated_at,
        })
    }

    async fn rollback(&self, request: RollbackRequest) -> Result<RollbackResult, EngineError> {
        let gradual = request.mode == RollbackMode::Gradual;
        let reason = match &request.reason {
            RollbackReason::Manual { reason } => reason.clone(),
            other => serde_json::to_string(other).unwrap_or_default(),
        };
        let started = Instant::now();
        let v = self
            .act(&request.deployment_id, ManualAction::Rollback { reason, gradual }, &request.actor)
            .await?;
        Ok(RollbackResult {
            deployment_id: v.id,
            success: true,
            restored_version: v.stable_version,
            mode: request.mode,
            reason: request.reason,
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
            validated: None,
            error: None,
            completed_at: self.now(),
        })
    }

    async fn health_check(&self) -> Result<Vec<HealthCheckResult>, EngineError> {
        let now = self.now();
        let mut out = Vec::new();
        let store_ok = self.store().audit_head().await;
        out.push(HealthCheckResult {
            name: "store".into(),
            passed: store_ok.is_ok(),
            message: store_ok.map_or_else(|e| e.to_string(), |_| "the store answers".into()),
            value: None,
            threshold: None,
            checked_at: now,
        });
        let alive = self.loop_alive();
        out.push(HealthCheckResult {
            name: "control_loop".into(),
            passed: alive,
            message: if alive {
                format!("the control loop runs ({} restarts)", self.loop_restarts())
            } else {
                "the control loop is not running: no rollout is being looked at".into()
            },
            value: None,
            threshold: None,
            checked_at: now,
        });
        for rt in self.all_runtimes() {
            let g = rt.lock().await;
            let kind = g.st.last_decision.as_ref().map_or("none", |d| d.kind.as_str()).to_owned();
            out.push(HealthCheckResult {
                name: format!("rollout {}", g.rec.id),
                passed: kind != "rollback" && kind != "halt",
                message: format!(
                    "{} at step {} ({} %), last decision {kind}",
                    g.rec.state,
                    g.st.step,
                    g.st.share_percent()
                ),
                value: Some(g.st.share_percent()),
                threshold: None,
                checked_at: now,
            });
        }
        Ok(out)
    }

    fn get_stats(&self) -> ActuatorStats {
        self.stats()
    }

    async fn reset(&self) -> Result<(), EngineError> {
        // Finished rollouts are never held in memory; recount the statistics from the store.
        let stats = self.recount().await?;
        *lock(&self.inner.stats) = stats;
        Ok(())
    }
}
