//! The params and results of the `store.*` methods, shared by the host and the plugin.
//!
//! Each method's params are a JSON object: `instance` (from `configure`) and the arguments
//! of the `Store` method of the same name, by their names in the trait. Results are the
//! method's return value in JSON. A store error is a JSON-RPC error with code
//! [`code::STORE`] whose `data.store_error` is the [`StoreError`]
//! (`{"kind": "conflict", "detail": {...}}`), so the host gets back the exact variant.

use actuator_core::audit::{AuditDraft, AuditHead};
use actuator_core::config::{NewSlot, SlotName};
use actuator_core::store::{
    AppendVersion, AuditQuery, CheckpointWrite, NewObservationBatch, NewRollout, NewSnapshot,
    PageRequest, RolloutFilter, RolloutRecord, RolloutUpdate, StoreError,
};
use actuator_core::token::{NewToken, Role, TokenRecord};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::wire::{RpcError, code};

/// The largest message of the store kind, in bytes (16 MiB): a page of rollouts with their
/// statuses is larger than other kinds' messages. An answer that would exceed it is replaced
/// by a store error asking for a smaller page.
pub const MAX_STORE_MESSAGE_BYTES: usize = 16 << 20;

/// Params that name only the instance (`store.audit_head`, `store.readiness`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Instance {
    /// The instance from `configure`.
    pub instance: u64,
}

/// `store.create_slot`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSlot {
    /// The instance.
    pub instance: u64,
    /// The slot.
    pub slot: NewSlot,
    /// Its audit entry.
    pub audit: AuditDraft,
}

/// `store.get_slot`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetSlot {
    /// The instance.
    pub instance: u64,
    /// The slot.
    pub name: SlotName,
}

/// `store.list_slots`, `store.list_slots_with_active_versions`, `store.list_active_routes`,
/// `store.list_active_rollouts_encoded`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Paged {
    /// The instance.
    pub instance: u64,
    /// The page.
    pub page: PageRequest,
}

/// `store.append_version`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Append {
    /// The instance.
    pub instance: u64,
    /// The request.
    pub req: AppendVersion,
    /// Its audit entry.
    pub audit: AuditDraft,
}

/// `store.activate_version`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Activate {
    /// The instance.
    pub instance: u64,
    /// The slot.
    pub slot: SlotName,
    /// The slot revision the caller read.
    pub expected_revision: u64,
    /// The version to activate.
    pub version: u64,
    /// Its audit entry.
    pub audit: AuditDraft,
}

/// `store.get_version`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetVersion {
    /// The instance.
    pub instance: u64,
    /// The slot.
    pub slot: SlotName,
    /// The version.
    pub version: u64,
}

/// `store.list_versions`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListVersions {
    /// The instance.
    pub instance: u64,
    /// The slot.
    pub slot: SlotName,
    /// The page.
    pub page: PageRequest,
}

/// `store.create_snapshot`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshot {
    /// The instance.
    pub instance: u64,
    /// The request.
    pub req: NewSnapshot,
    /// Its audit entry.
    pub audit: AuditDraft,
}

/// `store.get_snapshot`, `store.get_rollout`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ById {
    /// The instance.
    pub instance: u64,
    /// The id.
    pub id: String,
}

/// `store.list_snapshots`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListSnapshots {
    /// The instance.
    pub instance: u64,
    /// One slot, or all.
    pub slot: Option<SlotName>,
    /// The page.
    pub page: PageRequest,
}

/// `store.append_audit`, `store.acknowledge_audit`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Audit {
    /// The instance.
    pub instance: u64,
    /// The entry.
    pub audit: AuditDraft,
}

/// `store.list_audit`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListAudit {
    /// The instance.
    pub instance: u64,
    /// The query.
    pub query: AuditQuery,
}

/// `store.set_verified_head`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetVerifiedHead {
    /// The instance.
    pub instance: u64,
    /// The head, or `null` to forget it.
    pub head: Option<AuditHead>,
}

/// `store.create_token`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// The instance.
    pub instance: u64,
    /// The token (its secret's hash, never the secret).
    pub token: NewToken,
    /// Its audit entry.
    pub audit: AuditDraft,
}

/// `store.revoke_token`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeToken {
    /// The instance.
    pub instance: u64,
    /// The token's name.
    pub name: String,
    /// Its audit entry.
    pub audit: AuditDraft,
}

/// A stored token as it crosses: unlike the API's view, with the secret's hash, which the
/// host checks presented secrets against.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireToken {
    /// Unique name.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// SHA-256 of the secret, hex.
    pub hash: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

impl From<TokenRecord> for WireToken {
    fn from(t: TokenRecord) -> Self {
        Self { name: t.name, role: t.role, hash: t.hash, created_at: t.created_at }
    }
}

impl From<WireToken> for TokenRecord {
    fn from(t: WireToken) -> Self {
        Self { name: t.name, role: t.role, hash: t.hash, created_at: t.created_at }
    }
}

/// `store.create_rollout`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRollout {
    /// The instance.
    pub instance: u64,
    /// The rollout.
    pub rollout: NewRollout,
    /// Its audit entry.
    pub audit: AuditDraft,
}

/// `store.list_rollouts`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListRollouts {
    /// The instance.
    pub instance: u64,
    /// Which rollouts.
    pub filter: RolloutFilter,
    /// The page.
    pub page: PageRequest,
}

/// `store.save_rollout_status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaveStatus {
    /// The instance.
    pub instance: u64,
    /// The rollout.
    pub id: String,
    /// The revision the caller read.
    pub expected_revision: u64,
    /// The engine state.
    pub status: Value,
}

/// `store.update_rollout`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRollout {
    /// The instance.
    pub instance: u64,
    /// The rollout.
    pub id: String,
    /// The update.
    pub update: RolloutUpdate,
    /// Its audit entry.
    pub audit: AuditDraft,
}

/// `store.append_observation_batches`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppendBatches {
    /// The instance.
    pub instance: u64,
    /// The batches.
    pub batches: Vec<NewObservationBatch>,
}

/// `store.list_observation_batches`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListBatches {
    /// The instance.
    pub instance: u64,
    /// The rollout.
    pub rollout_id: String,
    /// Batches with a sequence number above this.
    pub after: u64,
    /// At most this many.
    pub limit: u32,
}

/// `store.checkpoint_rollout`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The instance.
    pub instance: u64,
    /// The rollout.
    pub id: String,
    /// The revision the caller read.
    pub expected_revision: u64,
    /// The engine state.
    pub status: Value,
    /// The highest batch folded into `status`.
    pub folded_through: u64,
}

/// `store.checkpoint_rollouts`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoints {
    /// The instance.
    pub instance: u64,
    /// The items.
    pub items: Vec<CheckpointWrite>,
}

/// One item's result of `store.checkpoint_rollouts`: `{"ok": record}` or `{"err": error}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemResult {
    /// Written.
    Ok(RolloutRecord),
    /// Refused or failed, on its own.
    Err(StoreError),
}

/// `store.prune_observation_batches`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prune {
    /// The instance.
    pub instance: u64,
    /// The rollout.
    pub rollout_id: String,
    /// Batches up to this sequence number.
    pub through: u64,
}

/// A store error as a JSON-RPC error ([`code::STORE`]).
pub fn store_error_to_rpc(e: &StoreError) -> RpcError {
    RpcError { code: code::STORE, message: e.to_string(), data: Some(json!({ "store_error": e })) }
}

/// The store error a JSON-RPC error carries; `None` when it is not a store error (or names a
/// variant this side does not know).
pub fn store_error_from_rpc(e: &RpcError) -> Option<StoreError> {
    if e.code != code::STORE {
        return None;
    }
    let v = e.data.as_ref()?.get("store_error")?;
    serde_json::from_value(v.clone()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_store_error_round_trips_through_an_rpc_error() {
        let all = [
            StoreError::NotFound { what: "slot a".into() },
            StoreError::AlreadyExists { what: "slot a".into() },
            StoreError::Conflict { what: "slot a".into(), expected: 3, actual: 4 },
            StoreError::Limit { active: 2, limit: 2 },
            StoreError::SlotHeld { slot: "a".into(), rollout: "r".into() },
            StoreError::StableChanged { slot: "a".into(), expected: Some(1), actual: None },
            StoreError::Unavailable("disk full".into()),
            StoreError::ChainBroken("entry 4".into()),
            StoreError::Fenced { held: Some(3), current: 4 },
            StoreError::Fenced { held: None, current: 1 },
            StoreError::Invalid("page".into()),
            StoreError::Backend("io".into()),
        ];
        for e in all {
            let rpc = store_error_to_rpc(&e);
            assert_eq!(rpc.message, e.to_string());
            let text = serde_json::to_string(&rpc).unwrap();
            let back: RpcError = serde_json::from_str(&text).unwrap();
            assert_eq!(store_error_from_rpc(&back), Some(e));
        }
        let conflict =
            store_error_to_rpc(&StoreError::Conflict { what: "w".into(), expected: 1, actual: 2 });
        assert_eq!(conflict.data.unwrap()["store_error"]["kind"], "conflict");
        assert_eq!(store_error_from_rpc(&RpcError::new(code::FAILED, "x")), None);
    }
}
