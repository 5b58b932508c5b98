//! The `Store` trait: durable versions, snapshots, audit and rollout state.
//!
//! Every write that changes state takes an [`AuditDraft`] and commits it in the same
//! transaction, so the audit log never misses an acknowledged change and never records one
//! that did not happen. Writes that race are settled by optimistic concurrency: the caller
//! names the revision it read, and a store refuses the write with [`StoreError::Conflict`]
//! when that revision moved.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::audit::{AuditDraft, AuditEntry, AuditHead};
use crate::config::{ConfigVersion, NewSlot, Slot, SlotName, Snapshot};
use crate::deployment::DeploymentStrategy;
use crate::state::DeploymentState;

/// An error from a store.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// The thing does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for, e.g. `slot chat.default`.
        what: String,
    },
    /// The thing exists already.
    #[error("{what} already exists")]
    AlreadyExists {
        /// What, e.g. `slot chat.default`.
        what: String,
    },
    /// Someone else wrote first: re-read and try again.
    #[error("{what} changed concurrently: expected {expected}, found {actual}; re-read and retry")]
    Conflict {
        /// What was written.
        what: String,
        /// The revision or version the caller expected.
        expected: u64,
        /// The one found.
        actual: u64,
    },
    /// The request is malformed for the store (e.g. a page size over the limit).
    #[error("invalid store request: {0}")]
    Invalid(String),
    /// The backend failed (IO, connection, corrupt row).
    #[error("store backend error: {0}")]
    Backend(String),
}

/// A page request: at most `limit` items after `cursor`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRequest {
    /// Items per page, 1 to [`PageRequest::MAX_LIMIT`].
    pub limit: u32,
    /// The `next_cursor` of the previous page; `None` for the first page.
    pub cursor: Option<String>,
}

impl PageRequest {
    /// Largest page size a store serves.
    pub const MAX_LIMIT: u32 = 1000;
    /// Default page size.
    pub const DEFAULT_LIMIT: u32 = 50;

    /// The first page of `limit` items.
    pub fn first(limit: u32) -> Self {
        Self { limit, cursor: None }
    }

    /// Checks the limit.
    pub fn validate(&self) -> Result<(), StoreError> {
        if self.limit == 0 || self.limit > Self::MAX_LIMIT {
            return Err(StoreError::Invalid(format!(
                "page limit must be between 1 and {}, got {}",
                Self::MAX_LIMIT,
                self.limit
            )));
        }
        Ok(())
    }

    /// The cursor parsed as a number (the cursor of versions, audit and rollouts).
    pub fn numeric_cursor(&self) -> Result<Option<u64>, StoreError> {
        self.cursor
            .as_deref()
            .map(|c| {
                c.parse::<u64>()
                    .map_err(|_| StoreError::Invalid(format!("cursor {c:?} is not valid here")))
            })
            .transpose()
    }
}

impl Default for PageRequest {
    fn default() -> Self {
        Self::first(Self::DEFAULT_LIMIT)
    }
}

/// One page of results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass this as `cursor` to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// A request to write the next version of a slot.
#[derive(Clone, Debug, PartialEq)]
pub struct AppendVersion {
    /// The slot.
    pub slot: SlotName,
    /// The `latest_version` the caller read; the write fails with a conflict if it moved.
    pub expected_latest: u64,
    /// The document.
    pub document: Value,
    /// Who wrote it.
    pub author: String,
    /// Why.
    pub message: String,
    /// Whether the new version also becomes the active one.
    pub activate: bool,
}

/// A request to take a snapshot of the slot's active version.
#[derive(Clone, Debug, PartialEq)]
pub struct NewSnapshot {
    /// The slot.
    pub slot: SlotName,
    /// Why.
    pub label: String,
    /// Who.
    pub created_by: String,
    /// Keep at most this many snapshots of the slot; the oldest are deleted in the same
    /// transaction.
    pub retention: u32,
}

/// Which audit entries to list.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AuditQuery {
    /// Entries with a sequence number above this (ascending) or below it (descending).
    pub cursor: Option<u64>,
    /// Page size.
    pub limit: u32,
    /// Newest first.
    pub descending: bool,
    /// Only entries whose target is this or starts with `this@`.
    pub target: Option<String>,
}

/// A rollout as the store keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolloutRecord {
    /// The rollout (deployment) id.
    pub id: String,
    /// The slot.
    pub slot: SlotName,
    /// The strategy.
    pub strategy: DeploymentStrategy,
    /// The state.
    pub state: DeploymentState,
    /// The request that started it (a `DeploymentRequest` in JSON).
    pub request: Value,
    /// The engine's state: phase, share, timers, accumulated statistics and evidence.
    pub status: Value,
    /// Optimistic-concurrency counter, bumped by every update.
    pub revision: u64,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last updated.
    pub updated_at: DateTime<Utc>,
}

/// A new rollout.
#[derive(Clone, Debug, PartialEq)]
pub struct NewRollout {
    /// The id.
    pub id: String,
    /// The slot.
    pub slot: SlotName,
    /// The strategy.
    pub strategy: DeploymentStrategy,
    /// The initial state.
    pub state: DeploymentState,
    /// The request.
    pub request: Value,
    /// The initial engine state.
    pub status: Value,
}

/// An update of a rollout, applied only if its revision is still `expected_revision`.
#[derive(Clone, Debug, PartialEq)]
pub struct RolloutUpdate {
    /// The revision the caller read.
    pub expected_revision: u64,
    /// The new state; the store checks the move against the state machine.
    pub state: DeploymentState,
    /// The new engine state.
    pub status: Value,
    /// Make this version of the rollout's slot active in the same transaction
    /// (promotion to 100%, or restoring the stable version on rollback).
    pub activate_version: Option<u64>,
}

/// Which rollouts to list.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RolloutFilter {
    /// Only rollouts not yet in a terminal state.
    pub active_only: bool,
    /// Only rollouts of this slot.
    pub slot: Option<SlotName>,
}

/// A batch of observations of one rollout to make durable before it is acknowledged.
#[derive(Clone, Debug, PartialEq)]
pub struct NewObservationBatch {
    /// The rollout the observations belong to; it must exist.
    pub rollout_id: String,
    /// The items: a document the engine wrote (JSON text), opaque to the store, which keeps
    /// it byte for byte.
    pub items: String,
}

/// A durable batch of observations, not yet folded into a saved checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObservationBatch {
    /// The batch's sequence number: unique in the store, rising with every append, never
    /// reused (not even after the batch is deleted).
    pub seq: u64,
    /// The rollout.
    pub rollout_id: String,
    /// The items, exactly as appended.
    pub items: String,
    /// When the batch was appended.
    pub created_at: DateTime<Utc>,
}

/// Durable storage for the actuator. Implementations live in plugins (SQLite, PostgreSQL);
/// all of them pass the conformance suite in `actuator_core::testing::conformance`.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates a slot.
    async fn create_slot(&self, slot: NewSlot, audit: AuditDraft) -> Result<Slot, StoreError>;
    /// Reads a slot.
    async fn get_slot(&self, name: &SlotName) -> Result<Option<Slot>, StoreError>;
    /// Lists slots by name.
    async fn list_slots(&self, page: PageRequest) -> Result<Page<Slot>, StoreError>;

    /// Writes the next version; version numbers rise by one per slot.
    async fn append_version(
        &self,
        req: AppendVersion,
        audit: AuditDraft,
    ) -> Result<ConfigVersion, StoreError>;
    /// Makes an existing version the active one, if the slot's revision is still
    /// `expected_revision`.
    async fn activate_version(
        &self,
        slot: &SlotName,
        expected_revision: u64,
        version: u64,
        audit: AuditDraft,
    ) -> Result<Slot, StoreError>;
    /// Reads one version.
    async fn get_version(
        &self,
        slot: &SlotName,
        version: u64,
    ) -> Result<Option<ConfigVersion>, StoreError>;
    /// Lists versions, newest first.
    async fn list_versions(
        &self,
        slot: &SlotName,
        page: PageRequest,
    ) -> Result<Page<ConfigVersion>, StoreError>;

    /// Snapshots the slot's active version, enforcing the retention limit.
    async fn create_snapshot(
        &self,
        req: NewSnapshot,
        audit: AuditDraft,
    ) -> Result<Snapshot, StoreError>;
    /// Reads a snapshot.
    async fn get_snapshot(&self, id: &str) -> Result<Option<Snapshot>, StoreError>;
    /// Lists snapshots, newest first, of one slot or of all.
    async fn list_snapshots(
        &self,
        slot: Option<&SlotName>,
        page: PageRequest,
    ) -> Result<Page<Snapshot>, StoreError>;

    /// Appends an audit entry on its own (for failures and actions with no other write).
    async fn append_audit(&self, audit: AuditDraft) -> Result<AuditEntry, StoreError>;
    /// Lists audit entries.
    async fn list_audit(&self, query: AuditQuery) -> Result<Page<AuditEntry>, StoreError>;
    /// The head of the audit chain; `None` when the log is empty.
    async fn audit_head(&self) -> Result<Option<AuditHead>, StoreError>;

    /// Creates a rollout; refused if the slot already has an active one.
    async fn create_rollout(
        &self,
        rollout: NewRollout,
        audit: AuditDraft,
    ) -> Result<RolloutRecord, StoreError>;
    /// Reads a rollout.
    async fn get_rollout(&self, id: &str) -> Result<Option<RolloutRecord>, StoreError>;
    /// Lists rollouts, newest first.
    async fn list_rollouts(
        &self,
        filter: RolloutFilter,
        page: PageRequest,
    ) -> Result<Page<RolloutRecord>, StoreError>;
    /// Saves a rollout's engine state without changing its state and without an audit entry:
    /// the periodic checkpoint of accumulated statistics and evidence. Same revision rule as
    /// [`Store::update_rollout`].
    async fn save_rollout_status(
        &self,
        id: &str,
        expected_revision: u64,
        status: Value,
    ) -> Result<RolloutRecord, StoreError>;
    /// Updates a rollout under optimistic concurrency.
    async fn update_rollout(
        &self,
        id: &str,
        update: RolloutUpdate,
        audit: AuditDraft,
    ) -> Result<RolloutRecord, StoreError>;

    /// Appends observation batches, all in one transaction, and returns their sequence
    /// numbers in the order given.
    ///
    /// Durability contract: when this returns `Ok`, every batch is on stable storage and
    /// survives a crash of the process or the machine; when it returns an error, none of them
    /// was kept. Sequence numbers rise with every call and are never reused, even after the
    /// batches holding them were deleted, so "every batch after sequence `n`" is exactly what a
    /// checkpoint that folded up to `n` has not seen. Fails with [`StoreError::NotFound`] (and
    /// keeps nothing) when a batch names a rollout that does not exist, and with
    /// [`StoreError::Invalid`] when `batches` is empty.
    async fn append_observation_batches(
        &self,
        batches: Vec<NewObservationBatch>,
    ) -> Result<Vec<u64>, StoreError>;
    /// Lists the durable batches of `rollout_id` with a sequence number above `after`,
    /// ascending, at most `limit` (1 to [`PageRequest::MAX_LIMIT`]) of them.
    async fn list_observation_batches(
        &self,
        rollout_id: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<ObservationBatch>, StoreError>;
    /// A checkpoint: saves a rollout's engine state like [`Store::save_rollout_status`] (same
    /// revision rule, no audit entry) and, in the same transaction, deletes the rollout's
    /// batches with a sequence number up to `folded_through`, the highest batch the saved
    /// state has folded in. Either both happen or neither; on a conflict nothing changes.
    async fn checkpoint_rollout(
        &self,
        id: &str,
        expected_revision: u64,
        status: Value,
        folded_through: u64,
    ) -> Result<RolloutRecord, StoreError>;
    /// Deletes the batches of `rollout_id` with a sequence number up to `through` (already
    /// folded into state saved by another write, e.g. a transition) and returns how many.
    async fn prune_observation_batches(
        &self,
        rollout_id: &str,
        through: u64,
    ) -> Result<u64, StoreError>;
}
