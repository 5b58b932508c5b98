//! Stores loaded from a file: [`RemoteStore`] implements [`actuator_core::Store`] over the
//! `store.*` methods of a plugin executable ([`exec::ExecStore`]) or a cdylib
//! ([`cdylib::CdylibStore`]).
//!
//! Every call returns only after the plugin answered, that is after the plugin's store
//! returned (and, for a write, committed). A store error crosses as its exact variant
//! (conflict, not found, limit...); a call that gets no answer in time, or meets a plugin
//! that crashed or is restarting, fails with [`StoreError::Unavailable`] and never hangs. An
//! unanswered write may or may not have been committed by the plugin: the message says so,
//! and a caller re-reads before trying again, as after any lost connection to a database.

pub mod cdylib;
pub mod exec;

use actuator_core::audit::{AuditDraft, AuditEntry, AuditHead, AuditReport, Progress};
use actuator_core::config::{ConfigVersion, NewSlot, Slot, SlotName, Snapshot};
use actuator_core::plugin::{PluginKind, PluginStatus};
use actuator_core::store::*;
use actuator_core::token::{NewToken, TokenRecord};
use actuator_plugin_sdk::store::wire::{self as sw, MAX_STORE_MESSAGE_BYTES, store_error_from_rpc};
use actuator_plugin_sdk::wire::{Response, code};
use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;

use crate::{FileTier, LoadError, PluginSpec};

/// How a [`RemoteStore`] reaches its plugin.
#[async_trait]
pub(crate) trait Transport: Send + Sync {
    /// Sends `method` with `params` (an object whose `instance` the transport sets to the
    /// instance it configured) and waits for the answer, at most the call timeout. `Err` is
    /// the reason no answer came.
    async fn call(&self, method: &'static str, params: Value) -> Result<Response, StoreError>;
    /// The plugin's status.
    fn status(&self) -> PluginStatus;
    /// Stops the plugin once it finished its calls (the daemon stops); no-op by default.
    async fn shutdown(&self) {}
}

/// A store plugin of the exec or cdylib tier behind the [`Store`] trait.
pub struct RemoteStore {
    name: String,
    transport: Box<dyn Transport>,
}

impl std::fmt::Debug for RemoteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteStore").field("name", &self.name).finish()
    }
}

/// Checks the file and the limits, starts or loads the store plugin, checks its handshake
/// (protocol, API version, that it announces the store kind) and opens its store with the
/// spec's config. Every refusal is a clear [`LoadError`].
pub async fn load_store(spec: PluginSpec) -> Result<Arc<RemoteStore>, LoadError> {
    if spec.kind != PluginKind::Store {
        return Err(LoadError::Limits {
            name: spec.name,
            message: format!("load_store loads stores, not a {}", spec.kind),
        });
    }
    crate::check_file(&spec)?;
    let name = spec.name.clone();
    let transport: Box<dyn Transport> = match spec.resolved_tier() {
        FileTier::Exec => Box::new(exec::ExecStore::start(spec).await?),
        FileTier::Cdylib => Box::new(cdylib::CdylibStore::load(spec).await?),
    };
    Ok(Arc::new(RemoteStore { name, transport }))
}

impl RemoteStore {
    /// The plugin's status (tier, version, health, restarts).
    pub fn status(&self) -> PluginStatus {
        self.transport.status()
    }

    /// Asks an exec plugin to finish the calls it runs and exit (`shutdown`), killing it if it
    /// does not answer within the call timeout; later calls fail as `Unavailable`. A cdylib
    /// store stays loaded (its instance is released when this is dropped).
    pub async fn shutdown(&self) {
        self.transport.shutdown().await;
    }

    /// One call: params serialised (their `instance` is set by the transport), the answer
    /// decoded, a store error given back as its own variant.
    async fn call<P: Serialize, R: DeserializeOwned>(
        &self,
        method: &'static str,
        params: P,
    ) -> Result<R, StoreError> {
        let params = serde_json::to_value(params)
            .map_err(|e| StoreError::Invalid(format!("encoding the params of {method}: {e}")))?;
        let resp = self.transport.call(method, params).await?;
        match resp.into_result() {
            Ok(v) => serde_json::from_value(v).map_err(|e| {
                StoreError::Backend(format!(
                    "store plugin {}: unreadable answer to {method}: {e}",
                    self.name
                ))
            }),
            Err(e) => Err(store_error_from_rpc(&e).unwrap_or_else(|| {
                let what = match e.code {
                    code::PANICKED => "panicked",
                    code::UNKNOWN_INSTANCE => "lost its store instance",
                    _ => "failed",
                };
                StoreError::Backend(format!(
                    "store plugin {} {what} in {method}: {}",
                    self.name, e.message
                ))
            })),
        }
    }
}

/// The `instance` field of params built here before the transport stamps the plugin's own
/// instance id into it (`with_instance`).
const INSTANCE: u64 = 0;

fn page(page: PageRequest) -> sw::Paged {
    sw::Paged { instance: INSTANCE, page }
}

const ONLY: sw::Instance = sw::Instance { instance: INSTANCE };

#[async_trait]
impl Store for RemoteStore {
    async fn create_slot(&self, slot: NewSlot, audit: AuditDraft) -> Result<Slot, StoreError> {
        self.call("store.create_slot", sw::CreateSlot { instance: INSTANCE, slot, audit }).await
    }

    async fn get_slot(&self, name: &SlotName) -> Result<Option<Slot>, StoreError> {
        self.call("store.get_slot", sw::GetSlot { instance: INSTANCE, name: name.clone() }).await
    }

    async fn list_slots(&self, p: PageRequest) -> Result<Page<Slot>, StoreError> {
        self.call("store.list_slots", page(p)).await
    }

    async fn list_slots_with_active_versions(
        &self,
        p: PageRequest,
    ) -> Result<Page<(Slot, Option<ConfigVersion>)>, StoreError> {
        self.call("store.list_slots_with_active_versions", page(p)).await
    }

    async fn append_version(
        &self,
        req: AppendVersion,
        audit: AuditDraft,
    ) -> Result<ConfigVersion, StoreError> {
        self.call("store.append_version", sw::Append { instance: INSTANCE, req, audit }).await
    }

    async fn activate_version(
        &self,
        slot: &SlotName,
        expected_revision: u64,
        version: u64,
        audit: AuditDraft,
    ) -> Result<Slot, StoreError> {
        let p = sw::Activate {
            instance: INSTANCE,
            slot: slot.clone(),
            expected_revision,
            version,
            audit,
        };
        self.call("store.activate_version", p).await
    }

    async fn get_version(
        &self,
        slot: &SlotName,
        version: u64,
    ) -> Result<Option<ConfigVersion>, StoreError> {
        let p = sw::GetVersion { instance: INSTANCE, slot: slot.clone(), version };
        self.call("store.get_version", p).await
    }

    async fn list_versions(
        &self,
        slot: &SlotName,
        page: PageRequest,
    ) -> Result<Page<ConfigVersion>, StoreError> {
        let p = sw::ListVersions { instance: INSTANCE, slot: slot.clone(), page };
        self.call("store.list_versions", p).await
    }

    async fn create_snapshot(
        &self,
        req: NewSnapshot,
        audit: AuditDraft,
    ) -> Result<Snapshot, StoreError> {
        self.call("store.create_snapshot", sw::CreateSnapshot { instance: INSTANCE, req, audit })
            .await
    }

    async fn get_snapshot(&self, id: &str) -> Result<Option<Snapshot>, StoreError> {
        self.call("store.get_snapshot", sw::ById { instance: INSTANCE, id: id.to_owned() }).await
    }

    async fn list_snapshots(
        &self,
        slot: Option<&SlotName>,
        page: PageRequest,
    ) -> Result<Page<Snapshot>, StoreError> {
        let p = sw::ListSnapshots { instance: INSTANCE, slot: slot.cloned(), page };
        self.call("store.list_snapshots", p).await
    }

    async fn append_audit(&self, audit: AuditDraft) -> Result<AuditEntry, StoreError> {
        self.call("store.append_audit", sw::Audit { instance: INSTANCE, audit }).await
    }

    async fn list_audit(&self, query: AuditQuery) -> Result<Page<AuditEntry>, StoreError> {
        self.call("store.list_audit", sw::ListAudit { instance: INSTANCE, query }).await
    }

    async fn audit_head(&self) -> Result<Option<AuditHead>, StoreError> {
        self.call("store.audit_head", ONLY).await
    }

    async fn verified_head(&self) -> Result<Option<AuditHead>, StoreError> {
        self.call("store.verified_head", ONLY).await
    }

    async fn set_verified_head(&self, head: Option<AuditHead>) -> Result<(), StoreError> {
        self.call("store.set_verified_head", sw::SetVerifiedHead { instance: INSTANCE, head }).await
    }

    async fn verify_audit(&self) -> Result<AuditReport, StoreError> {
        self.call("store.verify_audit", ONLY).await
    }

    /// Runs the plugin's full verification; progress is reported once, at the end (it does
    /// not cross the boundary while the walk runs).
    async fn verify_audit_full(&self, progress: Progress<'_>) -> Result<AuditReport, StoreError> {
        let report: AuditReport = self.call("store.verify_audit_full", ONLY).await?;
        progress(report.entries_checked);
        Ok(report)
    }

    async fn acknowledge_audit(&self, audit: AuditDraft) -> Result<AuditEntry, StoreError> {
        self.call("store.acknowledge_audit", sw::Audit { instance: INSTANCE, audit }).await
    }

    async fn create_token(
        &self,
        token: NewToken,
        audit: AuditDraft,
    ) -> Result<TokenRecord, StoreError> {
        let t: sw::WireToken = self
            .call("store.create_token", sw::CreateToken { instance: INSTANCE, token, audit })
            .await?;
        Ok(t.into())
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let all: Vec<sw::WireToken> = self.call("store.list_tokens", ONLY).await?;
        Ok(all.into_iter().map(TokenRecord::from).collect())
    }

    async fn revoke_token(&self, name: &str, audit: AuditDraft) -> Result<TokenRecord, StoreError> {
        let p = sw::RevokeToken { instance: INSTANCE, name: name.to_owned(), audit };
        let t: sw::WireToken = self.call("store.revoke_token", p).await?;
        Ok(t.into())
    }

    /// The plugin's own readiness, or why the plugin cannot be reached.
    async fn readiness(&self) -> Vec<String> {
        match self.call::<_, Vec<String>>("store.readiness", ONLY).await {
            Ok(v) => v,
            Err(e) => vec![format!("store plugin {}: {e}", self.name)],
        }
    }

    async fn create_rollout(
        &self,
        rollout: NewRollout,
        audit: AuditDraft,
    ) -> Result<RolloutRecord, StoreError> {
        self.call("store.create_rollout", sw::CreateRollout { instance: INSTANCE, rollout, audit })
            .await
    }

    async fn get_rollout(&self, id: &str) -> Result<Option<RolloutRecord>, StoreError> {
        self.call("store.get_rollout", sw::ById { instance: INSTANCE, id: id.to_owned() }).await
    }

    async fn list_rollouts(
        &self,
        filter: RolloutFilter,
        page: PageRequest,
    ) -> Result<Page<RolloutRecord>, StoreError> {
        self.call("store.list_rollouts", sw::ListRollouts { instance: INSTANCE, filter, page })
            .await
    }

    async fn list_active_routes(&self, p: PageRequest) -> Result<Page<RolloutRoute>, StoreError> {
        self.call("store.list_active_routes", page(p)).await
    }

    async fn list_active_rollouts_encoded(
        &self,
        p: PageRequest,
    ) -> Result<Page<EncodedRollout>, StoreError> {
        self.call("store.list_active_rollouts_encoded", page(p)).await
    }

    async fn rollout_counts(&self) -> Result<RolloutCounts, StoreError> {
        self.call("store.rollout_counts", ONLY).await
    }

    async fn rollouts_with_batches(&self) -> Result<Option<HashSet<String>>, StoreError> {
        self.call("store.rollouts_with_batches", ONLY).await
    }

    async fn save_rollout_status(
        &self,
        id: &str,
        expected_revision: u64,
        status: Value,
    ) -> Result<RolloutRecord, StoreError> {
        let p = sw::SaveStatus { instance: INSTANCE, id: id.to_owned(), expected_revision, status };
        self.call("store.save_rollout_status", p).await
    }

    async fn update_rollout(
        &self,
        id: &str,
        update: RolloutUpdate,
        audit: AuditDraft,
    ) -> Result<RolloutRecord, StoreError> {
        let p = sw::UpdateRollout { instance: INSTANCE, id: id.to_owned(), update, audit };
        self.call("store.update_rollout", p).await
    }

    async fn append_observation_batches(
        &self,
        batches: Vec<NewObservationBatch>,
    ) -> Result<Vec<u64>, StoreError> {
        let p = sw::AppendBatches { instance: INSTANCE, batches };
        self.call("store.append_observation_batches", p).await
    }

    async fn list_observation_batches(
        &self,
        rollout_id: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<ObservationBatch>, StoreError> {
        let p =
            sw::ListBatches { instance: INSTANCE, rollout_id: rollout_id.to_owned(), after, limit };
        self.call("store.list_observation_batches", p).await
    }

    async fn checkpoint_rollout(
        &self,
        id: &str,
        expected_revision: u64,
        status: Value,
        folded_through: u64,
    ) -> Result<RolloutRecord, StoreError> {
        let p = sw::Checkpoint {
            instance: INSTANCE,
            id: id.to_owned(),
            expected_revision,
            status,
            folded_through,
        };
        self.call("store.checkpoint_rollout", p).await
    }

    async fn checkpoint_rollouts(
        &self,
        items: Vec<CheckpointWrite>,
    ) -> Result<Vec<Result<RolloutRecord, StoreError>>, StoreError> {
        let n = items.len();
        let out: Vec<sw::ItemResult> = self
            .call("store.checkpoint_rollouts", sw::Checkpoints { instance: INSTANCE, items })
            .await?;
        if out.len() != n {
            return Err(StoreError::Backend(format!(
                "store plugin {} answered {} results to {n} checkpoints",
                self.name,
                out.len()
            )));
        }
        Ok(out
            .into_iter()
            .map(|r| match r {
                sw::ItemResult::Ok(rec) => Ok(rec),
                sw::ItemResult::Err(e) => Err(e),
            })
            .collect())
    }

    async fn prune_observation_batches(
        &self,
        rollout_id: &str,
        through: u64,
    ) -> Result<u64, StoreError> {
        let p = sw::Prune { instance: INSTANCE, rollout_id: rollout_id.to_owned(), through };
        self.call("store.prune_observation_batches", p).await
    }
}

/// Refuses a request larger than a store plugin reads ([`MAX_STORE_MESSAGE_BYTES`]) before it
/// is sent, so an oversized write fails as `Invalid` and costs the plugin nothing.
pub(crate) fn check_size(method: &str, bytes: usize) -> Result<(), StoreError> {
    if bytes > MAX_STORE_MESSAGE_BYTES {
        return Err(StoreError::Invalid(format!(
            "{method}: the request is {bytes} bytes, over the store plugin message limit of {MAX_STORE_MESSAGE_BYTES}"
        )));
    }
    Ok(())
}

/// Sets `params.instance` to `instance`.
pub(crate) fn with_instance(mut params: Value, instance: u64) -> Value {
    if let Some(m) = params.as_object_mut() {
        m.insert("instance".to_owned(), Value::from(instance));
    }
    params
}
