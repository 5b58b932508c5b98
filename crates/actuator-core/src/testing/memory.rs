//! An in-memory store for unit tests. It follows the same rules as a real store (version
//! numbering, optimistic concurrency, audit chain, retention) but keeps nothing on disk.

use async_trait::async_trait;
use chrono::Utc;
use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::audit::{AuditDraft, AuditEntry, AuditHead, AuditReport, GENESIS_HASH};
use crate::config::{ConfigVersion, NewSlot, Slot, SlotName, Snapshot};
use crate::store::*;

#[derive(Default)]
struct Inner {
    slots: BTreeMap<SlotName, Slot>,
    versions: BTreeMap<(SlotName, u64), ConfigVersion>,
    snapshots: BTreeMap<String, Snapshot>,
    audit: Vec<AuditEntry>,
    rollouts: Vec<RolloutRecord>,
    /// The unacknowledged chain problem that blocks writes, set by `verify_audit`.
    chain_block: Option<String>,
    /// The last verified head of the audit chain.
    verified: Option<AuditHead>,
    /// Durable observation batches by sequence number.
    batches: BTreeMap<u64, ObservationBatch>,
    /// The last sequence number handed out (never reused).
    batch_seq: u64,
    /// API tokens by name.
    tokens: BTreeMap<String, crate::token::TokenRecord>,
}

impl Inner {
    fn seal(&mut self, draft: AuditDraft) -> AuditEntry {
        let prev = self.audit.last().map_or(GENESIS_HASH.to_owned(), |e| e.hash.clone());
        let seq = self.audit.len() as u64 + 1;
        let entry = draft.seal(seq, uuid::Uuid::now_v7().to_string(), Utc::now(), &prev);
        self.audit.push(entry.clone());
        entry
    }

    /// Refuses writes while the chain is broken and unacknowledged.
    fn writable(&self) -> Result<(), StoreError> {
        match &self.chain_block {
            Some(p) => Err(StoreError::ChainBroken(p.clone())),
            None => Ok(()),
        }
    }

    /// The active rollout of `slot` other than `except`.
    fn holder(&self, slot: &SlotName, except: Option<&str>) -> Option<&RolloutRecord> {
        self.rollouts
            .iter()
            .find(|r| &r.slot == slot && r.state.is_active() && except.is_none_or(|e| r.id != e))
    }

    /// Refuses a direct activation while a rollout holds the slot.
    fn ensure_not_held(&self, slot: &SlotName) -> Result<(), StoreError> {
        match self.holder(slot, None) {
            Some(r) => Err(StoreError::SlotHeld { slot: slot.to_string(), rollout: r.id.clone() }),
            None => Ok(()),
        }
    }

    /// Admits a rollout of `slot` (`except`: itself, on a retry); returns the stable version.
    fn admit(
        &self,
        slot: &SlotName,
        except: Option<&str>,
        admission: &Admission,
    ) -> Result<Option<u64>, StoreError> {
        let stable = self
            .slots
            .get(slot)
            .ok_or_else(|| StoreError::NotFound { what: format!("slot {slot}") })?
            .active_version;
        if let Some(other) = self.holder(slot, except) {
            return Err(StoreError::AlreadyExists {
                what: format!("an active rollout ({}) of slot {slot}", other.id),
            });
        }
        if let Some(limit) = admission.max_active {
            let active = self.rollouts.iter().filter(|r| r.state.is_active()).count() as u64;
            if active >= limit {
                return Err(StoreError::Limit { active, limit });
            }
        }
        if let Some(expected) = admission.expected_stable
            && expected != stable
        {
            return Err(StoreError::StableChanged {
                slot: slot.to_string(),
                expected,
                actual: stable,
            });
        }
        Ok(stable)
    }

    fn slot_mut(&mut self, name: &SlotName) -> Result<&mut Slot, StoreError> {
        self.slots
            .get_mut(name)
            .ok_or_else(|| StoreError::NotFound { what: format!("slot {name}") })
    }
}

/// An in-memory [`Store`] for unit tests only.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryStore")
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn page_of<T>(items: Vec<T>, limit: u32, cursor: impl Fn(&T) -> String) -> Page<T> {
    let mut items = items;
    let next = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(cursor)
    } else {
        None
    };
    Page { items, next_cursor: next }
}

#[async_trait]
impl Store for MemoryStore {
    async fn create_slot(&self, slot: NewSlot, audit: AuditDraft) -> Result<Slot, StoreError> {
        let mut g = self.lock();
        g.writable()?;
        if g.slots.contains_key(&slot.name) {
            return Err(StoreError::AlreadyExists { what: format!("slot {}", slot.name) });
        }
        let now = Utc::now();
        let s = Slot {
            name: slot.name.clone(),
            description: slot.description,
            schema: slot.schema,
            active_version: None,
            latest_version: 0,
            revision: 1,
            created_at: now,
            updated_at: now,
        };
        g.slots.insert(slot.name, s.clone());
        g.seal(audit);
        Ok(s)
    }

    async fn get_slot(&self, name: &SlotName) -> Result<Option<Slot>, StoreError> {
        Ok(self.lock().slots.get(name).cloned())
    }

    async fn list_slots(&self, page: PageRequest) -> Result<Page<Slot>, StoreError> {
        page.validate()?;
        let g = self.lock();
        let items: Vec<Slot> = g
            .slots
            .values()
            .filter(|s| page.cursor.as_deref().is_none_or(|c| s.name.as_str() > c))
            .take(page.limit as usize + 1)
            .cloned()
            .collect();
        Ok(page_of(items, page.limit, |s| s.name.to_string()))
    }

    async fn append_version(
        &self,
        req: AppendVersion,
        audit: AuditDraft,
    ) -> Result<ConfigVersion, StoreError> {
        let mut g = self.lock();
        g.writable()?;
        if req.activate {
            g.slot_mut(&req.slot)?;
            g.ensure_not_held(&req.slot)?;
        }
        let slot = g.slot_mut(&req.slot)?;
        if slot.latest_version != req.expected_latest {
            return Err(StoreError::Conflict {
                what: format!("latest version of slot {}", req.slot),
                expected: req.expected_latest,
                actual: slot.latest_version,
            });
        }
        let now = Utc::now();
        slot.latest_version += 1;
        slot.revision += 1;
        slot.updated_at = now;
        if req.activate {
            slot.active_version = Some(slot.latest_version);
        }
        let v = ConfigVersion {
            slot: req.slot.clone(),
            version: slot.latest_version,
            document: req.document,
            author: req.author,
            message: req.message,
            created_at: now,
        };
        let audit = audit.with_document(&req.slot, v.version, &v.document);
        g.versions.insert((req.slot, v.version), v.clone());
        g.seal(audit);
        Ok(v)
    }

    async fn activate_version(
        &self,
        slot: &SlotName,
        expected_revision: u64,
        version: u64,
        audit: AuditDraft,
    ) -> Result<Slot, StoreError> {
        let mut g = self.lock();
        g.writable()?;
        if !g.versions.contains_key(&(slot.clone(), version)) {
            g.slot_mut(slot)?;
            return Err(StoreError::NotFound { what: format!("version {version} of slot {slot}") });
        }
        g.ensure_not_held(slot)?;
        let s = g.slot_mut(slot)?;
        if s.revision != expected_revision {
            return Err(StoreError::Conflict {
                what: format!("slot {slot}"),
                expected: expected_revision,
                actual: s.revision,
            });
        }
        s.active_version = Some(version);
        s.revision += 1;
        s.updated_at = Utc::now();
        let out = s.clone();
        g.seal(audit);
        Ok(out)
    }

    async fn get_version(
        &self,
        slot: &SlotName,
        version: u64,
    ) -> Result<Option<ConfigVersion>, StoreError> {
        Ok(self.lock().versions.get(&(slot.clone(), version)).cloned())
    }

    async fn list_versions(
        &self,
        slot: &SlotName,
        page: PageRequest,
    ) -> Result<Page<ConfigVersion>, StoreError> {
        page.validate()?;
        let below = page.numeric_cursor()?.unwrap_or(u64::MAX);
        let g = self.lock();
        let items: Vec<ConfigVersion> = g
            .versions
            .range((slot.clone(), 0)..(slot.clone(), below))
            .rev()
            .take(page.limit as usize + 1)
            .map(|(_, v)| v.clone())
            .collect();
        Ok(page_of(items, page.limit, |v| v.version.to_string()))
    }

    async fn create_snapshot(
        &self,
        req: NewSnapshot,
        audit: AuditDraft,
    ) -> Result<Snapshot, StoreError> {
        if req.retention == 0 {
            return Err(StoreError::Invalid("snapshot retention must be at least 1".into()));
        }
        let mut g = self.lock();
        g.writable()?;
        let slot = g.slot_mut(&req.slot)?.clone();
        let Some(active) = slot.active_version else {
            return Err(StoreError::Invalid(format!(
                "slot {} has no active version to snapshot",
                req.slot
            )));
        };
        let doc = g.versions[&(req.slot.clone(), active)].document.clone();
        let snap = Snapshot {
            id: uuid::Uuid::now_v7().to_string(),
            slot: req.slot.clone(),
            version: active,
            document: doc,
            label: req.label,
            created_by: req.created_by,
            created_at: Utc::now(),
        };
        g.snapshots.insert(snap.id.clone(), snap.clone());
        let mut ids: Vec<String> =
            g.snapshots.values().filter(|s| s.slot == req.slot).map(|s| s.id.clone()).collect();
        ids.sort();
        let excess = ids.len().saturating_sub(req.retention as usize);
        for id in &ids[..excess] {
            g.snapshots.remove(id);
        }
        g.seal(audit);
        Ok(snap)
    }

    async fn get_snapshot(&self, id: &str) -> Result<Option<Snapshot>, StoreError> {
        Ok(self.lock().snapshots.get(id).cloned())
    }

    async fn list_snapshots(
        &self,
        slot: Option<&SlotName>,
        page: PageRequest,
    ) -> Result<Page<Snapshot>, StoreError> {
        page.validate()?;
        let g = self.lock();
        let items: Vec<Snapshot> = g
            .snapshots
            .values()
            .rev()
            .filter(|s| slot.is_none_or(|n| &s.slot == n))
            .filter(|s| page.cursor.as_deref().is_none_or(|c| s.id.as_str() < c))
            .take(page.limit as usize + 1)
            .cloned()
            .collect();
        Ok(page_of(items, page.limit, |s| s.id.clone()))
    }

    async fn append_audit(&self, audit: AuditDraft) -> Result<AuditEntry, StoreError> {
        let mut g = self.lock();
        g.writable()?;
        Ok(g.seal(audit))
    }

    async fn list_audit(&self, q: AuditQuery) -> Result<Page<AuditEntry>, StoreError> {
        PageRequest::first(q.limit).validate()?;
        let g = self.lock();
        let matches = |e: &&AuditEntry| {
            q.target.as_deref().is_none_or(|t| {
                e.target == t || e.target.strip_prefix(t).is_some_and(|r| r.starts_with('@'))
            })
        };
        let items: Vec<AuditEntry> = if q.descending {
            let below = q.cursor.unwrap_or(u64::MAX);
            g.audit
                .iter()
                .rev()
                .filter(|e| e.seq < below)
                .filter(matches)
                .take(q.limit as usize + 1)
                .cloned()
                .collect()
        } else {
            let above = q.cursor.unwrap_or(0);
            g.audit
                .iter()
                .filter(|e| e.seq > above)
                .filter(matches)
                .take(q.limit as usize + 1)
                .cloned()
                .collect()
        };
        Ok(page_of(items, q.limit, |e| e.seq.to_string()))
    }

    async fn audit_head(&self) -> Result<Option<AuditHead>, StoreError> {
        Ok(self.lock().audit.last().map(|e| AuditHead { seq: e.seq, hash: e.hash.clone() }))
    }

    async fn verified_head(&self) -> Result<Option<AuditHead>, StoreError> {
        Ok(self.lock().verified.clone())
    }

    async fn set_verified_head(&self, head: Option<AuditHead>) -> Result<(), StoreError> {
        self.lock().verified = head;
        Ok(())
    }

    async fn verify_audit(&self) -> Result<AuditReport, StoreError> {
        let report = crate::audit::verify_incremental(self).await?;
        self.lock().chain_block = report.problem.as_ref().map(ToString::to_string);
        Ok(report)
    }

    async fn verify_audit_full(
        &self,
        progress: crate::audit::Progress<'_>,
    ) -> Result<AuditReport, StoreError> {
        let report = crate::audit::verify_full(self, progress).await?;
        self.lock().chain_block = report.problem.as_ref().map(ToString::to_string);
        Ok(report)
    }

    async fn acknowledge_audit(&self, audit: AuditDraft) -> Result<AuditEntry, StoreError> {
        let mut g = self.lock();
        let entry = g.seal(audit);
        g.chain_block = None;
        Ok(entry)
    }

    async fn create_token(
        &self,
        token: crate::token::NewToken,
        audit: AuditDraft,
    ) -> Result<crate::token::TokenRecord, StoreError> {
        let mut g = self.lock();
        g.writable()?;
        crate::token::validate_token_name(&token.name)
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        if g.tokens.contains_key(&token.name) || g.tokens.values().any(|t| t.hash == token.hash) {
            return Err(StoreError::AlreadyExists { what: format!("token {}", token.name) });
        }
        if g.tokens.len() >= crate::token::MAX_TOKENS {
            return Err(StoreError::Invalid(format!(
                "{} tokens are stored, the limit; revoke one first",
                crate::token::MAX_TOKENS
            )));
        }
        let rec = crate::token::TokenRecord {
            name: token.name,
            role: token.role,
            hash: token.hash,
            created_at: crate::audit::truncate_to_micros(Utc::now()),
        };
        g.tokens.insert(rec.name.clone(), rec.clone());
        g.seal(audit);
        Ok(rec)
    }

    async fn list_tokens(&self) -> Result<Vec<crate::token::TokenRecord>, StoreError> {
        Ok(self.lock().tokens.values().cloned().collect())
    }

    async fn revoke_token(
        &self,
        name: &str,
        audit: AuditDraft,
    ) -> Result<crate::token::TokenRecord, StoreError> {
        let mut g = self.lock();
        g.writable()?;
        let rec = g
            .tokens
            .remove(name)
            .ok_or_else(|| StoreError::NotFound { what: format!("token {name}") })?;
        g.seal(audit);
        Ok(rec)
    }

    async fn readiness(&self) -> Vec<String> {
        self.lock()
            .chain_block
            .iter()
            .map(|p| format!("audit chain broken and not acknowledged: {p}"))
            .collect()
    }

    async fn create_rollout(
        &self,
        r: NewRollout,
        audit: AuditDraft,
    ) -> Result<RolloutRecord, StoreError> {
        let mut g = self.lock();
        g.writable()?;
        g.slot_mut(&r.slot)?;
        if g.rollouts.iter().any(|x| x.id == r.id) {
            return Err(StoreError::AlreadyExists { what: format!("rollout {}", r.id) });
        }
        let stable = g.admit(&r.slot, None, &r.admission)?;
        let now = Utc::now();
        let rec = RolloutRecord {
            id: r.id,
            slot: r.slot,
            strategy: r.strategy,
            state: r.state,
            request: r.request,
            status: r.status,
            revision: 1,
            stable_version: stable,
            created_at: now,
            updated_at: now,
        };
        g.rollouts.push(rec.clone());
        g.seal(audit);
        Ok(rec)
    }

    async fn get_rollout(&self, id: &str) -> Result<Option<RolloutRecord>, StoreError> {
        Ok(self.lock().rollouts.iter().find(|r| r.id == id).cloned())
    }

    async fn list_rollouts(
        &self,
        filter: RolloutFilter,
        page: PageRequest,
    ) -> Result<Page<RolloutRecord>, StoreError> {
        page.validate()?;
        let below =
            page.numeric_cursor()?.map_or(usize::MAX, |c| usize::try_from(c).unwrap_or(usize::MAX));
        let g = self.lock();
        let mut items = Vec::new();
        let mut next = None;
        for (i, r) in g.rollouts.iter().enumerate().rev() {
            if i + 1 >= below
                || (filter.active_only && !r.state.is_active())
                || filter.slot.as_ref().is_some_and(|s| &r.slot != s)
            {
                continue;
            }
            if items.len() == page.limit as usize {
                next = Some((i + 2).to_string());
                break;
            }
            items.push(r.clone());
        }
        Ok(Page { items, next_cursor: next })
    }

    async fn save_rollout_status(
        &self,
        id: &str,
        expected_revision: u64,
        status: serde_json::Value,
    ) -> Result<RolloutRecord, StoreError> {
        let mut g = self.lock();
        g.writable()?;
        let r = g
            .rollouts
            .iter_mut()
            .find(|r| r.id == id)
            .ok_or_else(|| StoreError::NotFound { what: format!("rollout {id}") })?;
        if r.revision != expected_revision {
            return Err(StoreError::Conflict {
                what: format!("rollout {id}"),
                expected: expected_revision,
                actual: r.revision,
            });
        }
        r.status = status;
        r.revision += 1;
        r.updated_at = Utc::now();
        Ok(r.clone())
    }

    async fn update_rollout(
        &self,
        id: &str,
        u: RolloutUpdate,
        audit: AuditDraft,
    ) -> Result<RolloutRecord, StoreError> {
        let mut g = self.lock();
        g.writable()?;
        let idx = g
            .rollouts
            .iter()
            .position(|r| r.id == id)
            .ok_or_else(|| StoreError::NotFound { what: format!("rollout {id}") })?;
        let cur = g.rollouts[idx].clone();
        if cur.revision != u.expected_revision {
            return Err(StoreError::Conflict {
                what: format!("rollout {id}"),
                expected: u.expected_revision,
                actual: cur.revision,
            });
        }
        if cur.state != u.state && !cur.state.can_transition_to(u.state) {
            return Err(StoreError::Invalid(format!(
                "rollout {id} cannot go from {} to {}",
                cur.state, u.state
            )));
        }
        let readmitted = if !cur.state.is_active() && u.state.is_active() {
            Some(g.admit(&cur.slot, Some(&cur.id), &u.admission)?)
        } else {
            None
        };
        if let Some(v) = u.activate_version {
            if !g.versions.contains_key(&(cur.slot.clone(), v)) {
                return Err(StoreError::NotFound {
                    what: format!("version {v} of slot {}", cur.slot),
                });
            }
            let s = g.slot_mut(&cur.slot)?;
            s.active_version = Some(v);
            s.revision += 1;
            s.updated_at = Utc::now();
        }
        let r = &mut g.rollouts[idx];
        r.state = u.state;
        r.status = u.status;
        if let Some(stable) = readmitted {
            r.stable_version = stable;
        }
        r.revision += 1;
        r.updated_at = Utc::now();
        let out = r.clone();
        g.seal(audit);
        Ok(out)
    }

    async fn append_observation_batches(
        &self,
        batches: Vec<NewObservationBatch>,
    ) -> Result<Vec<u64>, StoreError> {
        if batches.is_empty() {
            return Err(StoreError::Invalid("an append needs at least one batch".into()));
        }
        let mut g = self.lock();
        if let Some(b) = batches.iter().find(|b| !g.rollouts.iter().any(|r| r.id == b.rollout_id)) {
            return Err(StoreError::NotFound { what: format!("rollout {}", b.rollout_id) });
        }
        let now = Utc::now();
        let mut seqs = Vec::with_capacity(batches.len());
        for b in batches {
            g.batch_seq += 1;
            let seq = g.batch_seq;
            g.batches.insert(
                seq,
                ObservationBatch { seq, rollout_id: b.rollout_id, items: b.items, created_at: now },
            );
            seqs.push(seq);
        }
        Ok(seqs)
    }

    async fn list_observation_batches(
        &self,
        rollout_id: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<ObservationBatch>, StoreError> {
        PageRequest::first(limit).validate()?;
        let g = self.lock();
        Ok(g.batches
            .range(after.saturating_add(1)..)
            .map(|(_, b)| b)
            .filter(|b| b.rollout_id == rollout_id)
            .take(limit as usize)
            .cloned()
            .collect())
    }

    async fn checkpoint_rollout(
        &self,
        id: &str,
        expected_revision: u64,
        status: serde_json::Value,
        folded_through: u64,
    ) -> Result<RolloutRecord, StoreError> {
        let mut g = self.lock();
        let r = g
            .rollouts
            .iter_mut()
            .find(|r| r.id == id)
            .ok_or_else(|| StoreError::NotFound { what: format!("rollout {id}") })?;
        if r.revision != expected_revision {
            return Err(StoreError::Conflict {
                what: format!("rollout {id}"),
                expected: expected_revision,
                actual: r.revision,
            });
        }
        r.status = status;
        r.revision += 1;
        r.updated_at = Utc::now();
        let out = r.clone();
        g.batches.retain(|seq, b| b.rollout_id != id || *seq > folded_through);
        Ok(out)
    }

    async fn prune_observation_batches(
        &self,
        rollout_id: &str,
        through: u64,
    ) -> Result<u64, StoreError> {
        let mut g = self.lock();
        let before = g.batches.len();
        g.batches.retain(|seq, b| b.rollout_id != rollout_id || *seq > through);
        Ok((before - g.batches.len()) as u64)
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_store_passes_conformance() {
        crate::testing::conformance::run(|| async {
            std::sync::Arc::new(super::MemoryStore::new()) as std::sync::Arc<dyn crate::Store>
        })
        .await;
    }
}
