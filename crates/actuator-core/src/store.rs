//! The `Store` trait: durable versions, snapshots, audit and rollout state.
//!
//! Every write that changes state takes an [`AuditDraft`] and commits it in the same
//! transaction, so the audit log never misses an acknowledged change and never records one
//! that did not happen. Writes that race are settled by optimistic concurrency: the caller
//! names the revision it read, and a store refuses the write with [`StoreError::Conflict`]
//! when that revision moved.
//!
//! # Invariants live in the store transaction
//!
//! Rules that two concurrent requests could otherwise break between a check and a write are
//! checked by the store *inside the transaction that writes*, never by the caller beforehand:
//!
//! * **Admission** ([`Admission`]): at most one active rollout per slot, and at most
//!   `max_active` active rollouts in all, checked by [`Store::create_rollout`] and by
//!   [`Store::update_rollout`] when it moves a finished rollout back to an active state
//!   (a retry). Refusals are [`StoreError::AlreadyExists`] and [`StoreError::Limit`].
//! * **Stable version**: the transaction that admits a rollout reads the slot's active
//!   version, records it as the rollout's [`RolloutRecord::stable_version`], and refuses with
//!   [`StoreError::StableChanged`] when it is not the one the caller built the rollout on.
//! * **No direct activation under a rollout**: [`Store::append_version`] with `activate` and
//!   [`Store::activate_version`] are refused with [`StoreError::SlotHeld`] while the slot has
//!   an active rollout; only the rollout itself moves the active version
//!   ([`RolloutUpdate::activate_version`]).
//!
//! SQLite gets this from one `BEGIN IMMEDIATE` writer; a PostgreSQL store gets it by taking
//! a transaction-scoped lock before the checks (`SELECT … FOR UPDATE` on the slot row and on
//! a single admission row, or `pg_advisory_xact_lock`), or by running these transactions at
//! `SERIALIZABLE` and retrying serialization failures. Either way the check and the write
//! commit together or not at all.
//!
//! # Store faults
//!
//! A store that cannot take writes (disk full, database file replaced, audit chain broken)
//! refuses them with [`StoreError::Unavailable`] or [`StoreError::ChainBroken`], reports why in
//! [`Store::readiness`], and takes writes again by itself once the cause is gone (space freed,
//! chain acknowledged with [`Store::acknowledge_audit`]).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::audit::{AuditDraft, AuditEntry, AuditHead, AuditReport};
use crate::config::{ConfigVersion, NewSlot, Slot, SlotName, Snapshot};
use crate::deployment::DeploymentStrategy;
use crate::state::DeploymentState;

/// An error from a store. Serialised (for stores hosted out of process) as
/// `{"kind": "conflict", "detail": {...}}`, `kind` the variant in snake case.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
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
    /// Admitting the rollout would exceed the limit of active rollouts.
    #[error(
        "{active} rollouts are active, the limit is {limit}; wait for one to finish or raise engine.max_active_rollouts"
    )]
    Limit {
        /// Rollouts active when the request was refused.
        active: u64,
        /// The limit.
        limit: u64,
    },
    /// A direct activation of a version was refused because a rollout holds the slot.
    #[error(
        "slot {slot} has an active rollout ({rollout}); abort or finish it before changing the config directly"
    )]
    SlotHeld {
        /// The slot.
        slot: String,
        /// The rollout holding it.
        rollout: String,
    },
    /// The slot's active version is not the stable version the rollout was built on: it moved
    /// between the caller's read and the admitting transaction.
    #[error(
        "the active version of slot {slot} changed while the rollout was admitted (expected {}, found {}); re-read and retry",
        fmt_version(*expected),
        fmt_version(*actual)
    )]
    StableChanged {
        /// The slot.
        slot: String,
        /// The active version the caller read.
        expected: Option<u64>,
        /// The active version found in the transaction.
        actual: Option<u64>,
    },
    /// The store cannot take writes now (disk full, database file removed or replaced); the
    /// message says why and what to do. Reads may still work.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The write was refused by the fencing token of a replicated store: this replica does
    /// not lead (`held` is `None`) or leads with an epoch another replica's election has
    /// superseded. Nothing of the write was committed.
    #[error(
        "this replica is not the leader ({}, the lease is at epoch {current}); nothing was written",
        held.map_or_else(|| "it holds no epoch".to_owned(), |e| format!("it holds epoch {e}"))
    )]
    Fenced {
        /// The epoch this replica wrote with, `None` when it does not lead.
        held: Option<u64>,
        /// The epoch of the lease in the store.
        current: u64,
    },
    /// The audit chain is broken and not yet acknowledged: the store refuses writes until an
    /// operator acknowledges the problem ([`Store::acknowledge_audit`]).
    #[error(
        "the audit chain is broken ({0}); writes are refused until an operator acknowledges it (`actuator audit acknowledge --reason ...`)"
    )]
    ChainBroken(String),
    /// The request is malformed for the store (e.g. a page size over the limit).
    #[error("invalid store request: {0}")]
    Invalid(String),
    /// The backend failed (IO, connection, corrupt row).
    #[error("store backend error: {0}")]
    Backend(String),
}

fn fmt_version(v: Option<u64>) -> String {
    v.map_or_else(|| "none".to_owned(), |v| format!("version {v}"))
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass this as `cursor` to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// A request to write the next version of a slot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    /// The slot's active version read in the transaction that admitted the rollout (created
    /// it, or moved it back to an active state on retry): the version it rolls out from.
    pub stable_version: Option<u64>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last updated.
    pub updated_at: DateTime<Utc>,
}

/// An active rollout as a start reads it: its record with `request` and `status` left
/// `Null`, and those two documents as their stored JSON text, so the reader decodes each
/// straight into its own types (see [`Store::list_active_rollouts_encoded`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EncodedRollout {
    /// The record, its documents `Null`.
    pub record: RolloutRecord,
    /// The request that started it, as stored (JSON text).
    pub request: String,
    /// Its status, as stored (JSON text).
    pub status: String,
}

/// How many rollouts the store holds, by strategy and state, and the rollbacks their
/// statuses record (see [`Store::rollout_counts`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutCounts {
    /// Rollouts per (strategy, state); pairs with none are left out.
    pub by_kind: Vec<(DeploymentStrategy, DeploymentState, u64)>,
    /// Rollbacks the engine decided (its own statistics, triggers or budget).
    pub automatic_rollbacks: u64,
    /// Rollbacks a person asked for.
    pub manual_rollbacks: u64,
}

/// The (automatic, manual) rollbacks one stored status records: its current `rollback` and
/// its `past_rollbacks` (a retried rollout keeps those of earlier tries). Aborts, which
/// statuses written before `aborted` existed recorded as rollbacks, are not counted.
pub fn rollback_counts(status: &Value) -> (u64, u64) {
    let current = status.get("rollback").filter(|v| !v.is_null());
    let past = status.get("past_rollbacks").and_then(Value::as_array);
    let (mut auto, mut manual) = (0u64, 0u64);
    for rb in current.into_iter().chain(past.into_iter().flatten()) {
        if rb.get("reason").and_then(|r| r.get("kind")).and_then(Value::as_str) == Some("aborted") {
            continue;
        }
        if rb.get("automatic").and_then(Value::as_bool).unwrap_or(false) {
            auto += 1;
        } else {
            manual += 1;
        }
    }
    (auto, manual)
}

/// The traffic split an active rollout asks routers to serve (see
/// [`Store::list_active_routes`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolloutRoute {
    /// The rollout id.
    pub id: String,
    /// Its slot.
    pub slot: SlotName,
    /// The record's revision when read.
    pub revision: u64,
    /// `status.route` (an `actuator_canary::Rollout` in JSON); `Null` when the rollout routes
    /// no traffic.
    pub route: Value,
}

impl RolloutRoute {
    /// The route of a full record (its status's `route`, `Null` when absent).
    pub fn of_record(mut rec: RolloutRecord) -> Self {
        let route = rec.status.get_mut("route").map(Value::take).unwrap_or(Value::Null);
        Self { id: rec.id, slot: rec.slot, revision: rec.revision, route }
    }
}

/// What a store checks, inside the transaction that makes a rollout active, before it admits
/// it. The rule "one active rollout per slot" always holds and needs no field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admission {
    /// At most this many rollouts may be active at once over all slots, the admitted one
    /// included; `None` for no limit. Refused with [`StoreError::Limit`].
    pub max_active: Option<u64>,
    /// The slot's active version the caller built the rollout on (its stable version).
    /// `Some(v)`: refused with [`StoreError::StableChanged`] unless the slot's active version
    /// is still `v` (`Some(None)` expects a slot with no active version); `None`: not checked.
    pub expected_stable: Option<Option<u64>>,
}

/// A new rollout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    /// The admission rules checked in the creating transaction.
    pub admission: Admission,
}

/// One rollout's checkpoint in [`Store::checkpoint_rollouts`]: the arguments of
/// [`Store::checkpoint_rollout`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointWrite {
    /// The rollout.
    pub id: String,
    /// The revision the write expects (a [`StoreError::Conflict`] for this item otherwise).
    pub expected_revision: u64,
    /// The engine state to save.
    pub status: Value,
    /// The highest observation batch the saved state has folded in; the rollout's batches up
    /// to it are deleted with the write.
    pub folded_through: u64,
}

/// An update of a rollout, applied only if its revision is still `expected_revision`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolloutUpdate {
    /// The revision the caller read.
    pub expected_revision: u64,
    /// The new state; the store checks the move against the state machine.
    pub state: DeploymentState,
    /// The new engine state.
    pub status: Value,
    /// Make this version of the rollout's slot active in the same transaction
    /// (promotion to 100%, or restoring the stable version on rollback). Allowed while the
    /// rollout holds the slot: this is the rollout's own move.
    pub activate_version: Option<u64>,
    /// The admission rules, checked only when the update moves a finished rollout back to an
    /// active state (a retry); the stable version is then read again and recorded.
    pub admission: Admission,
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    /// Lists slots by name like [`Store::list_slots`], each with its active version (`None`
    /// when it has none): what a router needs to rebuild its whole table. The default reads
    /// each slot's version on its own; a store that can read them with the page should.
    async fn list_slots_with_active_versions(
        &self,
        page: PageRequest,
    ) -> Result<Page<(Slot, Option<ConfigVersion>)>, StoreError> {
        let p = self.list_slots(page).await?;
        let mut items = Vec::with_capacity(p.items.len());
        for slot in p.items {
            let v = match slot.active_version {
                Some(a) => self.get_version(&slot.name, a).await?,
                None => None,
            };
            items.push((slot, v));
        }
        Ok(Page { items, next_cursor: p.next_cursor })
    }

    /// Writes the next version; version numbers rise by one per slot. With `activate`, refused
    /// with [`StoreError::SlotHeld`] while the slot has an active rollout (checked in the
    /// writing transaction). The audit entry's metadata gets a `document` object with the
    /// slot, the version and the SHA-256 of the canonical document
    /// ([`AuditDraft::with_document`]), so the chain covers the document.
    async fn append_version(
        &self,
        req: AppendVersion,
        audit: AuditDraft,
    ) -> Result<ConfigVersion, StoreError>;
    /// Makes an existing version the active one, if the slot's revision is still
    /// `expected_revision`; refused with [`StoreError::SlotHeld`] while the slot has an
    /// active rollout (checked in the writing transaction).
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

    /// The last verified head: the entry up to which an earlier verification found the chain
    /// intact (or every problem acknowledged), kept durably; `None` before the first one. The
    /// default remembers nothing, so every verification walks the whole chain.
    async fn verified_head(&self) -> Result<Option<AuditHead>, StoreError> {
        Ok(None)
    }

    /// Remembers `head` as the last verified head (`None` forgets it). Only the verification
    /// functions of [`crate::audit`] call this, after the entries up to `head` verified; a
    /// full verification that finds a problem before the remembered head moves it back.
    /// Allowed while writes are blocked by the chain. The default keeps nothing.
    async fn set_verified_head(&self, head: Option<AuditHead>) -> Result<(), StoreError> {
        let _ = head;
        Ok(())
    }

    /// Verifies the audit chain incrementally ([`crate::audit::verify_incremental`]): only the
    /// entries after the last verified head, and that the head's entry still has the hash
    /// remembered; the entries up to it are trusted. When the report shows a problem no
    /// acknowledgement covers, the store refuses every later write with
    /// [`StoreError::ChainBroken`] until [`Store::acknowledge_audit`]; a store runs this when
    /// it opens, too.
    async fn verify_audit(&self) -> Result<AuditReport, StoreError>;

    /// Verifies the whole audit chain and the documents its entries cover
    /// ([`crate::audit::verify_full`]), calling `progress` with the entries checked so far,
    /// and blocks or unblocks writes like [`Store::verify_audit`]. The default suits a store
    /// that keeps no verified head (whose [`Store::verify_audit`] walks the whole chain
    /// anyway): it runs that and reports progress once, at the end. A store that remembers a
    /// verified head overrides this.
    async fn verify_audit_full(
        &self,
        progress: crate::audit::Progress<'_>,
    ) -> Result<AuditReport, StoreError> {
        let report = self.verify_audit().await?;
        progress(report.entries_checked);
        Ok(report)
    }

    /// Appends an operator's acknowledgement of a broken chain (action
    /// [`crate::audit::ACKNOWLEDGE_ACTION`], its metadata listing the problems acknowledged)
    /// and lifts the write block of [`Store::verify_audit`]. Allowed while writes are blocked
    /// by the chain; refused like any write when the store is unavailable.
    async fn acknowledge_audit(&self, audit: AuditDraft) -> Result<AuditEntry, StoreError>;

    /// Stores an API token and its audit entry in one transaction. Refused with
    /// [`StoreError::AlreadyExists`] when the name is taken and with [`StoreError::Invalid`]
    /// when [`crate::token::MAX_TOKENS`] are stored (both checked in the transaction).
    async fn create_token(
        &self,
        token: crate::token::NewToken,
        audit: AuditDraft,
    ) -> Result<crate::token::TokenRecord, StoreError>;
    /// Every stored token, by name.
    async fn list_tokens(&self) -> Result<Vec<crate::token::TokenRecord>, StoreError>;
    /// Deletes a token and appends its audit entry in one transaction;
    /// [`StoreError::NotFound`] when there is none of that name.
    async fn revoke_token(
        &self,
        name: &str,
        audit: AuditDraft,
    ) -> Result<crate::token::TokenRecord, StoreError>;

    /// Why the store cannot take writes now; empty when it can. Checks what is cheap to check
    /// (the database file's identity, a pending chain problem, a write that failed for lack of
    /// space, probed again here so the answer clears by itself once space returns).
    async fn readiness(&self) -> Vec<String>;

    /// Creates a rollout. In the creating transaction: refused with
    /// [`StoreError::AlreadyExists`] if the slot already has an active rollout, with
    /// [`StoreError::Limit`] if `admission.max_active` rollouts are active, and with
    /// [`StoreError::StableChanged`] if the slot's active version is not
    /// `admission.expected_stable`; the active version read there is recorded as the
    /// record's `stable_version`.
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
    /// The traffic split (`status.route`) of every active rollout, newest first, paged like
    /// [`Store::list_rollouts`] with `active_only`: what a router needs to rebuild its table
    /// without reading every rollout's whole status. The default reads the full records; a
    /// store that can extract the field where it keeps it should.
    async fn list_active_routes(
        &self,
        page: PageRequest,
    ) -> Result<Page<RolloutRoute>, StoreError> {
        let p = self.list_rollouts(RolloutFilter { active_only: true, slot: None }, page).await?;
        Ok(Page {
            items: p.items.into_iter().map(RolloutRoute::of_record).collect(),
            next_cursor: p.next_cursor,
        })
    }
    /// The active rollouts, newest first, paged like [`Store::list_rollouts`] with
    /// `active_only`, with their documents as JSON text: what a start decodes into typed state
    /// without building a generic JSON tree of each status first. The default encodes the
    /// records [`Store::list_rollouts`] gives; a store that keeps the text should hand it over.
    async fn list_active_rollouts_encoded(
        &self,
        page: PageRequest,
    ) -> Result<Page<EncodedRollout>, StoreError> {
        let p = self.list_rollouts(RolloutFilter { active_only: true, slot: None }, page).await?;
        let mut items = Vec::with_capacity(p.items.len());
        for mut record in p.items {
            let encode = |v: &Value| {
                serde_json::to_string(v)
                    .map_err(|e| StoreError::Backend(format!("encoding a stored document: {e}")))
            };
            let request = encode(&record.request)?;
            let status = encode(&record.status)?;
            record.request = Value::Null;
            record.status = Value::Null;
            items.push(EncodedRollout { record, request, status });
        }
        Ok(Page { items, next_cursor: p.next_cursor })
    }
    /// How many rollouts there are by strategy and state, and the rollbacks they record. The
    /// default reads every record; a store that keeps the counts where it can sum them
    /// should, so a start does not read every finished rollout's status.
    async fn rollout_counts(&self) -> Result<RolloutCounts, StoreError> {
        let mut by: std::collections::BTreeMap<
            (&'static str, &'static str),
            (DeploymentStrategy, DeploymentState, u64),
        > = std::collections::BTreeMap::new();
        let mut out = RolloutCounts::default();
        let mut cursor = None;
        loop {
            let page = self
                .list_rollouts(
                    RolloutFilter::default(),
                    PageRequest { limit: PageRequest::MAX_LIMIT, cursor },
                )
                .await?;
            for rec in &page.items {
                by.entry((rec.strategy.as_str(), rec.state.as_str()))
                    .or_insert((rec.strategy, rec.state, 0))
                    .2 += 1;
                let (a, m) = rollback_counts(&rec.status);
                out.automatic_rollbacks += a;
                out.manual_rollbacks += m;
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        out.by_kind = by.into_values().collect();
        Ok(out)
    }
    /// The rollouts that have durable observation batches (not yet folded into a saved
    /// checkpoint), or `None` when the store cannot tell cheaply: a start then replays only
    /// those instead of asking for every rollout's batches one by one.
    async fn rollouts_with_batches(
        &self,
    ) -> Result<Option<std::collections::HashSet<String>>, StoreError> {
        Ok(None)
    }
    /// Saves a rollout's engine state without changing its state and without an audit entry:
    /// the periodic checkpoint of accumulated statistics and evidence. Same revision rule as
    /// [`Store::update_rollout`].
    async fn save_rollout_status(
        &self,
        id: &str,
        expected_revision: u64,
        status: Value,
    ) -> Result<RolloutRecord, StoreError>;
    /// Updates a rollout under optimistic concurrency. A move from a terminal state to an
    /// active one (a retry) is admitted like [`Store::create_rollout`], with
    /// `update.admission`, and records the slot's active version as the new `stable_version`.
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
    /// Several checkpoints at once: the control loop's group commit, so that saving the
    /// evidence of every changed rollout costs one durable commit per interval, not one per
    /// rollout. Each item follows the rule of [`Store::checkpoint_rollout`] and gets its own
    /// result, in the order given: an item's conflict or absence is its own error and the
    /// other items are still written. An `Err` of the whole call means no item was written.
    ///
    /// Stores that can should write every item in one transaction; this default writes them
    /// one by one with [`Store::checkpoint_rollout`] (one commit each, same results).
    async fn checkpoint_rollouts(
        &self,
        items: Vec<CheckpointWrite>,
    ) -> Result<Vec<Result<RolloutRecord, StoreError>>, StoreError> {
        let mut out = Vec::with_capacity(items.len());
        for it in items {
            out.push(
                self.checkpoint_rollout(&it.id, it.expected_revision, it.status, it.folded_through)
                    .await,
            );
        }
        Ok(out)
    }
    /// Deletes the batches of `rollout_id` with a sequence number up to `through` (already
    /// folded into state saved by another write, e.g. a transition) and returns how many.
    async fn prune_observation_batches(
        &self,
        rollout_id: &str,
        through: u64,
    ) -> Result<u64, StoreError>;
}
