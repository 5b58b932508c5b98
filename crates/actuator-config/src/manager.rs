//! The configuration manager.

use actuator_core::audit::ACKNOWLEDGE_ACTION;
use actuator_core::{
    AppendVersion, AuditDraft, AuditEntry, AuditQuery, AuditReport, ChainProblem, ConfigVersion,
    Event, NewSlot, NewSnapshot, Notifier, Page, PageRequest, RolloutFilter, Severity, Slot,
    SlotName, Snapshot, Store, StoreError,
};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;

use crate::diff::Diff;
use crate::error::ConfigError;
use crate::validate::{check_schema, validate};

/// Limits and retention of the configuration manager.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigSettings {
    /// Snapshots kept per slot; older ones are deleted when a new one is taken (100).
    pub snapshot_retention: u32,
    /// Largest config document accepted, in bytes of compact JSON (256 KiB).
    pub max_document_bytes: usize,
    /// Whether refused changes leave an audit entry with outcome `failure` (true).
    pub audit_failures: bool,
}

impl Default for ConfigSettings {
    fn default() -> Self {
        Self { snapshot_retention: 100, max_document_bytes: 256 * 1024, audit_failures: true }
    }
}

/// A request to write (and usually activate) a new version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApplyRequest {
    /// The slot.
    pub slot: SlotName,
    /// The new document.
    pub document: Value,
    /// Who.
    pub actor: String,
    /// Why.
    pub message: String,
    /// Validate and diff only; write nothing.
    pub dry_run: bool,
    /// Make the new version active (false stages it, e.g. as a rollout candidate).
    pub activate: bool,
    /// Refuse with a conflict unless the slot's latest version is still this one.
    pub expected_latest: Option<u64>,
}

/// What an apply did (or, for a dry run, would do).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ApplyOutcome {
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// The version written; `None` for a dry run.
    pub version: Option<ConfigVersion>,
    /// The number the version has (or would have).
    pub version_number: u64,
    /// The active version before the apply.
    pub previous_version: Option<u64>,
    /// The change against the previously active document.
    pub diff: Diff,
    /// Nothing was written: the document is already the slot's latest version (and its
    /// active one when the apply activates). `version` is that existing version.
    #[serde(default)]
    pub unchanged: bool,
}

/// How often an apply without `expected_latest` re-reads the slot and tries again after
/// losing a race to another writer, before it gives up with the conflict.
pub const APPLY_RETRIES: u32 = 32;

/// What an acknowledgement of a broken audit chain recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Acknowledgement {
    /// The acknowledgement's own audit entry.
    pub entry: AuditEntry,
    /// The chain verified again after it.
    pub report: AuditReport,
}

/// Longest reason of an acknowledgement, in bytes.
pub const MAX_ACK_REASON_BYTES: usize = 1024;

/// Longest slot description, in bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 1024;

/// Longest snapshot label, in bytes.
pub const MAX_LABEL_BYTES: usize = 256;

/// Longest message of an applied version or reason of a revert, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// The first control character of `text`, if any (a newline or a tab count only where
/// `lines` is false): what no free-text field may hold, so that none can forge a log line.
pub fn control_char(text: &str, lines: bool) -> Option<char> {
    text.chars().find(|c| c.is_control() && !(lines && (*c == '\n' || *c == '\t')))
}

/// Checks a free-text field: at most `max` bytes and no control characters (a newline or
/// a tab only where `lines` allows them), so that no field can forge a log line.
///
/// # Errors
/// [`ConfigError::Core`] naming the field and the rule.
pub fn check_text(field: &str, text: &str, max: usize, lines: bool) -> Result<(), ConfigError> {
    let bad = |m: String| Err(ConfigError::Core(actuator_core::CoreError::InvalidRequest(m)));
    if text.len() > max {
        return bad(format!("{field} is {} bytes, at most {max} are allowed", text.len()));
    }
    if let Some(c) = control_char(text, lines) {
        return bad(format!(
            "{field} must not hold control characters (found U+{:04X})",
            u32::from(c)
        ));
    }
    Ok(())
}

/// A store error as the manager reports it: a write refused because a rollout holds the
/// slot is [`ConfigError::RolloutActive`].
fn store_error(e: StoreError) -> ConfigError {
    match e {
        StoreError::SlotHeld { slot, rollout } => ConfigError::RolloutActive { slot, rollout },
        other => ConfigError::Store(other),
    }
}

/// Applies, reverts, snapshots and restores configs, validating first and auditing every
/// change in the same store transaction.
#[derive(Clone)]
pub struct ConfigManager {
    store: Arc<dyn Store>,
    notifiers: Vec<Arc<dyn Notifier>>,
    settings: ConfigSettings,
}

impl std::fmt::Debug for ConfigManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigManager")
            .field("notifiers", &self.notifiers.len())
            .field("settings", &self.settings)
            .finish()
    }
}

impl ConfigManager {
    /// A manager over `store`, telling `notifiers` about every change.
    pub fn new(
        store: Arc<dyn Store>,
        notifiers: Vec<Arc<dyn Notifier>>,
        settings: ConfigSettings,
    ) -> Self {
        Self { store, notifiers, settings }
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The settings.
    pub fn settings(&self) -> &ConfigSettings {
        &self.settings
    }

    async fn notify(&self, kind: &str, actor: &str, target: &str, summary: String, details: Value) {
        if self.notifiers.is_empty() {
            return;
        }
        let event = Event {
            kind: kind.to_owned(),
            severity: Severity::Info,
            at: Utc::now(),
            actor: actor.to_owned(),
            target: target.to_owned(),
            summary,
            details,
        };
        for n in &self.notifiers {
            if let Err(e) = n.notify(&event).await {
                tracing::warn!(error = %e, kind, "notifier failed; the change stands");
            }
        }
    }

    /// Records a refused change in the audit log (when enabled) and returns the error.
    async fn refuse(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        err: ConfigError,
    ) -> ConfigError {
        self.refuse_as(actor, action, target, err, None).await
    }

    /// Audits a refusal with `message` (the error's text with secrets scrubbed) instead of
    /// the error's own text.
    async fn refuse_as(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        err: ConfigError,
        message: Option<String>,
    ) -> ConfigError {
        if self.settings.audit_failures {
            let text = message.unwrap_or_else(|| err.to_string());
            let draft = AuditDraft::failure(actor, action, target, text)
                .with_metadata(json!({"code": err.code()}));
            if let Err(e) = self.store.append_audit(draft).await {
                tracing::warn!(error = %e, "could not audit a refused change");
            }
        }
        err
    }

    async fn slot(&self, name: &SlotName) -> Result<Slot, ConfigError> {
        self.store.get_slot(name).await?.ok_or_else(|| ConfigError::UnknownSlot(name.to_string()))
    }

    async fn version(&self, slot: &SlotName, version: u64) -> Result<ConfigVersion, ConfigError> {
        self.store
            .get_version(slot, version)
            .await?
            .ok_or_else(|| ConfigError::UnknownVersion { slot: slot.to_string(), version })
    }

    async fn active_document(&self, slot: &Slot) -> Result<Value, ConfigError> {
        match slot.active_version {
            Some(v) => Ok(self.version(&slot.name, v).await?.document),
            None => Ok(Value::Null),
        }
    }

    async fn ensure_no_rollout(&self, slot: &SlotName) -> Result<(), ConfigError> {
        let active = self
            .store
            .list_rollouts(
                RolloutFilter { active_only: true, slot: Some(slot.clone()) },
                PageRequest::first(1),
            )
            .await?;
        match active.items.first() {
            Some(r) => {
                Err(ConfigError::RolloutActive { slot: slot.to_string(), rollout: r.id.clone() })
            }
            None => Ok(()),
        }
    }

    /// Creates a slot, checking its schema first.
    pub async fn create_slot(&self, new: NewSlot, actor: &str) -> Result<Slot, ConfigError> {
        check_text("description", &new.description, MAX_DESCRIPTION_BYTES, true)?;
        let target = new.name.to_string();
        if let Some(schema) = &new.schema
            && let Err(message) = check_schema(schema)
        {
            let err = ConfigError::InvalidSchema { slot: target.clone(), message };
            return Err(self.refuse(actor, "slot.create", &target, err).await);
        }
        let draft = AuditDraft::success(actor, "slot.create", &target).with_metadata(
            json!({"description": new.description, "has_schema": new.schema.is_some()}),
        );
        let slot = self.store.create_slot(new, draft).await.map_err(ConfigError::from)?;
        self.notify("slot.create", actor, &target, format!("slot {target} created"), Value::Null)
            .await;
        Ok(slot)
    }

    /// Reads a slot.
    pub async fn get_slot(&self, name: &SlotName) -> Result<Slot, ConfigError> {
        self.slot(name).await
    }

    /// Lists slots by name.
    pub async fn list_slots(&self, page: PageRequest) -> Result<Page<Slot>, ConfigError> {
        Ok(self.store.list_slots(page).await?)
    }

    /// Validates a document against the slot without writing anything.
    pub async fn validate(&self, slot: &SlotName, doc: &Value) -> Result<(), ConfigError> {
        let s = self.slot(slot).await?;
        self.check(&s, doc)
    }

    fn check(&self, slot: &Slot, doc: &Value) -> Result<(), ConfigError> {
        let size = serde_json::to_vec(doc).map(|v| v.len()).unwrap_or(usize::MAX);
        if size > self.settings.max_document_bytes {
            return Err(ConfigError::TooLarge { size, limit: self.settings.max_document_bytes });
        }
        let issues = validate(doc, slot.schema.as_ref());
        if issues.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid { slot: slot.name.to_string(), issues })
        }
    }

    /// Validates and writes the next version (or, with `dry_run`, reports what would be
    /// written). A refused apply writes no version.
    ///
    /// With `expected_latest`, the write is refused with a conflict when the slot's latest
    /// version moved. Without it, an apply that loses a race to another writer re-reads the
    /// slot and tries again (up to [`APPLY_RETRIES`] times), so it succeeds unless the slot
    /// is held by a rollout (an activating apply) or the document is refused.
    pub async fn apply(&self, req: ApplyRequest) -> Result<ApplyOutcome, ConfigError> {
        check_text("message", &req.message, MAX_MESSAGE_BYTES, true)?;
        let mut attempt = 0;
        loop {
            let last = req.expected_latest.is_some() || attempt >= APPLY_RETRIES;
            match self.apply_once(&req, last).await {
                Err(ConfigError::Store(StoreError::Conflict { .. })) if !last => {
                    attempt += 1;
                    tracing::debug!(slot = %req.slot, attempt, "apply lost a race; re-reading the slot");
                }
                other => return other,
            }
        }
    }

    /// One attempt of [`ConfigManager::apply`]. A lost race is audited as a refusal only on
    /// the `last` attempt; before, it is returned as it is for the caller to retry.
    async fn apply_once(
        &self,
        req: &ApplyRequest,
        last: bool,
    ) -> Result<ApplyOutcome, ConfigError> {
        let req = req.clone();
        let target = req.slot.to_string();
        let slot = self.slot(&req.slot).await?;
        let result = async {
            self.check(&slot, &req.document)?;
            if let Some(expected) = req.expected_latest
                && expected != slot.latest_version
            {
                return Err(ConfigError::Store(StoreError::Conflict {
                    what: format!("latest version of slot {target}"),
                    expected,
                    actual: slot.latest_version,
                }));
            }
            if req.activate && !req.dry_run {
                self.ensure_no_rollout(&req.slot).await?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            return Err(if req.dry_run {
                e
            } else {
                let scrubbed =
                    crate::secrets::scrub(&e.to_string(), &req.document, slot.schema.as_ref());
                self.refuse_as(&req.actor, "config.apply", &target, e, Some(scrubbed)).await
            });
        }
        let previous = self.active_document(&slot).await?;
        let diff = Diff::between(&previous, &req.document);
        let number = slot.latest_version + 1;
        if req.dry_run {
            return Ok(ApplyOutcome {
                dry_run: true,
                version: None,
                version_number: number,
                previous_version: slot.active_version,
                diff,
                unchanged: false,
            });
        }
        let action = if req.activate { "config.apply" } else { "config.stage" };
        let masked = crate::secrets::mask_diff(&diff, slot.schema.as_ref());
        let draft = AuditDraft::success(&req.actor, action, format!("{target}@{number}"))
            .with_diff(serde_json::to_value(&masked).unwrap_or(Value::Null))
            .with_metadata(
                json!({"message": req.message, "previous_version": slot.active_version}),
            );
        let written = self
            .store
            .append_version(
                AppendVersion {
                    slot: req.slot.clone(),
                    expected_latest: req.expected_latest.unwrap_or(slot.latest_version),
                    document: req.document,
                    author: req.actor.clone(),
                    message: req.message,
                    activate: req.activate,
                },
                draft,
            )
            .await;
        let version = match written {
            Ok(v) => v,
            Err(e @ StoreError::Conflict { .. }) if !last => return Err(ConfigError::Store(e)),
            Err(e) => return Err(self.refuse(&req.actor, action, &target, store_error(e)).await),
        };
        self.notify(
            action,
            &req.actor,
            &target,
            format!(
                "slot {target}: version {} written ({} paths changed)",
                version.version,
                diff.len()
            ),
            json!({"version": version.version, "activated": req.activate}),
        )
        .await;
        Ok(ApplyOutcome {
            dry_run: false,
            version_number: version.version,
            version: Some(version),
            previous_version: slot.active_version,
            diff,
            unchanged: false,
        })
    }

    /// [`ConfigManager::apply`], except that a document equal to the slot's latest version
    /// (and, when the apply activates, the active one) writes nothing and reports that
    /// version as `unchanged`: re-applying the same file is idempotent. A dry run, or an
    /// apply that must write anyway (`--force`), goes to [`ConfigManager::apply`].
    ///
    /// # Errors
    /// As [`ConfigManager::apply`]: an invalid document is refused (and the refusal audited)
    /// even when it equals the latest version.
    pub async fn apply_unless_unchanged(
        &self,
        req: ApplyRequest,
    ) -> Result<ApplyOutcome, ConfigError> {
        // A document the slot refuses goes to `apply`, which refuses it and audits that.
        if !req.dry_run
            && let Ok(slot) = self.slot(&req.slot).await
            && self.check(&slot, &req.document).is_ok()
        {
            let same_as_active = slot.active_version == Some(slot.latest_version);
            if slot.latest_version > 0
                && (same_as_active || !req.activate)
                && req.expected_latest.is_none_or(|e| e == slot.latest_version)
            {
                let latest = self.version(&slot.name, slot.latest_version).await?;
                if latest.document == req.document {
                    return Ok(ApplyOutcome {
                        dry_run: false,
                        version_number: latest.version,
                        version: Some(latest),
                        previous_version: slot.active_version,
                        diff: Diff::default(),
                        unchanged: true,
                    });
                }
            }
        }
        self.apply(req).await
    }

    async fn activate(
        &self,
        slot: &Slot,
        version: u64,
        actor: &str,
        action: &str,
        metadata: Value,
    ) -> Result<Slot, ConfigError> {
        let target = slot.name.to_string();
        let current = self.active_document(slot).await?;
        let doc = self.version(&slot.name, version).await?.document;
        let diff = crate::secrets::mask_diff(&Diff::between(&current, &doc), slot.schema.as_ref());
        let draft = AuditDraft::success(actor, action, format!("{target}@{version}"))
            .with_diff(serde_json::to_value(&diff).unwrap_or(Value::Null))
            .with_metadata(metadata.clone());
        let out = self.store.activate_version(&slot.name, slot.revision, version, draft).await;
        let out = match out {
            Ok(s) => s,
            Err(e) => return Err(self.refuse(actor, action, &target, store_error(e)).await),
        };
        self.notify(
            action,
            actor,
            &target,
            format!("slot {target}: version {version} active"),
            metadata,
        )
        .await;
        Ok(out)
    }

    /// Makes an earlier version active again; `to` defaults to the version before the
    /// active one. Versions are never rewritten: a revert moves the active pointer.
    pub async fn revert(
        &self,
        slot: &SlotName,
        to: Option<u64>,
        actor: &str,
        reason: &str,
    ) -> Result<Slot, ConfigError> {
        check_text("reason", reason, MAX_MESSAGE_BYTES, true)?;
        let s = self.slot(slot).await?;
        let target = slot.to_string();
        let Some(active) = s.active_version else {
            let e = ConfigError::NoActiveVersion(target.clone());
            return Err(self.refuse(actor, "config.revert", &target, e).await);
        };
        let to = match to {
            Some(v) => v,
            None if active > 1 => active - 1,
            None => {
                let e = ConfigError::Core(actuator_core::CoreError::InvalidRequest(format!(
                    "slot {target} is at its first version; there is nothing to revert to"
                )));
                return Err(self.refuse(actor, "config.revert", &target, e).await);
            }
        };
        if let Err(e) = self.ensure_no_rollout(slot).await {
            return Err(self.refuse(actor, "config.revert", &target, e).await);
        }
        if let Err(e) = self.version(slot, to).await {
            return Err(self.refuse(actor, "config.revert", &target, e).await);
        }
        self.activate(&s, to, actor, "config.revert", json!({"from": active, "reason": reason}))
            .await
    }

    /// Snapshots the slot's active config.
    pub async fn snapshot(
        &self,
        slot: &SlotName,
        label: &str,
        actor: &str,
    ) -> Result<Snapshot, ConfigError> {
        check_text("label", label, MAX_LABEL_BYTES, false)?;
        let s = self.slot(slot).await?;
        let target = slot.to_string();
        if s.active_version.is_none() {
            let e = ConfigError::NoActiveVersion(target.clone());
            return Err(self.refuse(actor, "snapshot.create", &target, e).await);
        }
        let draft = AuditDraft::success(actor, "snapshot.create", &target)
            .with_metadata(json!({"label": label, "version": s.active_version}));
        let snap = self
            .store
            .create_snapshot(
                NewSnapshot {
                    slot: slot.clone(),
                    label: label.to_owned(),
                    created_by: actor.to_owned(),
                    retention: self.settings.snapshot_retention,
                },
                draft,
            )
            .await?;
        self.notify(
            "snapshot.create",
            actor,
            &target,
            format!("slot {target}: snapshot {} of version {}", snap.id, snap.version),
            json!({"snapshot": snap.id}),
        )
        .await;
        Ok(snap)
    }

    /// Restores a snapshot: its version becomes the slot's active one.
    pub async fn restore(&self, snapshot_id: &str, actor: &str) -> Result<Slot, ConfigError> {
        let Some(snap) = self.store.get_snapshot(snapshot_id).await? else {
            return Err(ConfigError::UnknownSnapshot(snapshot_id.to_owned()));
        };
        let s = self.slot(&snap.slot).await?;
        if let Err(e) = self.ensure_no_rollout(&snap.slot).await {
            return Err(self.refuse(actor, "snapshot.restore", snap.slot.as_str(), e).await);
        }
        self.activate(
            &s,
            snap.version,
            actor,
            "snapshot.restore",
            json!({"snapshot": snap.id, "label": snap.label}),
        )
        .await
    }

    /// Reads one version.
    pub async fn get_version(
        &self,
        slot: &SlotName,
        version: u64,
    ) -> Result<ConfigVersion, ConfigError> {
        self.slot(slot).await?;
        self.version(slot, version).await
    }

    /// Lists versions, newest first.
    pub async fn history(
        &self,
        slot: &SlotName,
        page: PageRequest,
    ) -> Result<Page<ConfigVersion>, ConfigError> {
        self.slot(slot).await?;
        Ok(self.store.list_versions(slot, page).await?)
    }

    /// The structural diff between two versions of a slot.
    pub async fn diff(&self, slot: &SlotName, from: u64, to: u64) -> Result<Diff, ConfigError> {
        self.slot(slot).await?;
        let a = self.version(slot, from).await?;
        let b = self.version(slot, to).await?;
        Ok(Diff::between(&a.document, &b.document))
    }

    /// Lists snapshots, newest first.
    pub async fn snapshots(
        &self,
        slot: Option<&SlotName>,
        page: PageRequest,
    ) -> Result<Page<Snapshot>, ConfigError> {
        if let Some(s) = slot {
            self.slot(s).await?;
        }
        Ok(self.store.list_snapshots(slot, page).await?)
    }

    /// Lists audit entries.
    pub async fn audit(&self, query: AuditQuery) -> Result<Page<AuditEntry>, ConfigError> {
        Ok(self.store.list_audit(query).await?)
    }

    /// Verifies the audit chain incrementally ([`Store::verify_audit`]): the entries after the
    /// last verified head, their links, the chain's head and the version documents they
    /// sealed; the entries up to the verified head are trusted. A problem no acknowledgement
    /// covers makes the store refuse writes until [`ConfigManager::acknowledge_audit`].
    pub async fn verify_audit(&self) -> Result<AuditReport, ConfigError> {
        Ok(self.store.verify_audit().await?)
    }

    /// Verifies the whole audit chain and every document it sealed
    /// ([`Store::verify_audit_full`]), calling `progress` with the entries checked so far.
    /// Blocks writes like [`ConfigManager::verify_audit`]; a problem found before the verified
    /// head moves the head back, so the incremental verification (and an acknowledgement)
    /// sees it too.
    pub async fn verify_audit_full(
        &self,
        progress: actuator_core::audit::Progress<'_>,
    ) -> Result<AuditReport, ConfigError> {
        Ok(self.store.verify_audit_full(progress).await?)
    }

    /// Acknowledges the problems of a broken audit chain with `reason`: appends an audited
    /// acknowledgement listing them, after which the store takes writes again. Refused when
    /// the chain has no unacknowledged problem, or the reason is empty or too long.
    pub async fn acknowledge_audit(
        &self,
        actor: &str,
        reason: &str,
    ) -> Result<Acknowledgement, ConfigError> {
        let reason = reason.trim();
        check_text("reason", reason, MAX_ACK_REASON_BYTES, true)?;
        if reason.is_empty() || reason.len() > MAX_ACK_REASON_BYTES {
            return Err(ConfigError::Core(actuator_core::CoreError::InvalidRequest(format!(
                "reason must be 1 to {MAX_ACK_REASON_BYTES} bytes, got {}",
                reason.len()
            ))));
        }
        let report = self.store.verify_audit().await?;
        if report.ok {
            return Err(ConfigError::NothingToAcknowledge(report.message));
        }
        let problems: Vec<ChainProblem> = report.unacknowledged().cloned().collect();
        let draft = AuditDraft::success(actor, ACKNOWLEDGE_ACTION, "audit").with_metadata(json!({
            "reason": reason,
            "problems": problems,
            "problems_found": report.problems_found,
            "message": report.message,
        }));
        let entry = self.store.acknowledge_audit(draft).await?;
        tracing::warn!(actor, reason, seq = entry.seq, "broken audit chain acknowledged");
        let report = self.store.verify_audit().await?;
        self.notify(
            ACKNOWLEDGE_ACTION,
            actor,
            "audit",
            format!("audit chain problem acknowledged by {actor}: {reason}"),
            json!({"seq": entry.seq, "ok": report.ok}),
        )
        .await;
        Ok(Acknowledgement { entry, report })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actuator_core::testing::MemoryStore;
    use actuator_core::{AuditOutcome, DeploymentState, DeploymentStrategy, NewRollout};
    use serde_json::json;

    fn name(s: &str) -> SlotName {
        SlotName::new(s).unwrap()
    }

    async fn manager() -> ConfigManager {
        let m = ConfigManager::new(Arc::new(MemoryStore::new()), vec![], ConfigSettings::default());
        m.create_slot(
            NewSlot { name: name("chat"), description: "chat".into(), schema: None },
            "alice",
        )
        .await
        .unwrap();
        m
    }

    fn req(doc: Value) -> ApplyRequest {
        ApplyRequest {
            slot: name("chat"),
            document: doc,
            actor: "alice".into(),
            message: "m".into(),
            dry_run: false,
            activate: true,
            expected_latest: None,
        }
    }

    #[tokio::test]
    async fn reapplying_the_same_document_writes_nothing() {
        let m = manager().await;
        let doc = json!({"model": "gpt-4o", "temperature": 0.2});
        let first = m.apply_unless_unchanged(req(doc.clone())).await.unwrap();
        assert!(!first.unchanged);
        assert_eq!(first.version_number, 1);
        let again = m.apply_unless_unchanged(req(doc.clone())).await.unwrap();
        assert!(again.unchanged, "the same document again is reported, not versioned");
        assert_eq!(again.version_number, 1);
        assert_eq!(again.version.as_ref().map(|v| v.version), Some(1));
        assert!(again.diff.is_empty());
        let slot = m.get_slot(&name("chat")).await.unwrap();
        assert_eq!(slot.latest_version, 1, "no version written");

        // A different document, an invalid one, and a forced rewrite.
        let other = m.apply_unless_unchanged(req(json!({"model": "b"}))).await.unwrap();
        assert!(!other.unchanged);
        assert_eq!(other.version_number, 2);
        let forced = m.apply(req(json!({"model": "b"}))).await.unwrap();
        assert_eq!(forced.version_number, 3, "apply itself always writes");

        // A staged latest version is not the active one: activating its document writes.
        m.apply(ApplyRequest { activate: false, ..req(json!({"model": "c"})) }).await.unwrap();
        let staged_again = m
            .apply_unless_unchanged(ApplyRequest { activate: false, ..req(json!({"model": "c"})) })
            .await
            .unwrap();
        assert!(staged_again.unchanged, "staging the same document twice writes once");
        let activated = m.apply_unless_unchanged(req(json!({"model": "c"}))).await.unwrap();
        assert!(!activated.unchanged, "activating it is a change");
        assert_eq!(m.get_slot(&name("chat")).await.unwrap().active_version, Some(5));
    }

    #[tokio::test]
    async fn apply_diff_revert_snapshot_restore() {
        let m = manager().await;
        let a = m.apply(req(json!({"model": "gpt-4o", "temperature": 0.2}))).await.unwrap();
        assert_eq!(a.version_number, 1);
        let b = m.apply(req(json!({"model": "gpt-4o-mini", "temperature": 0.2}))).await.unwrap();
        assert_eq!(b.previous_version, Some(1));
        assert_eq!(b.diff.changed[0].path, "/model");
        let snap = m.snapshot(&name("chat"), "before v3", "alice").await.unwrap();
        assert_eq!(snap.version, 2);
        m.apply(req(json!({"model": "x", "temperature": 1.0}))).await.unwrap();
        let s = m.revert(&name("chat"), None, "alice", "bad").await.unwrap();
        assert_eq!(s.active_version, Some(2));
        assert_eq!(s.latest_version, 3, "revert writes no version");
        m.revert(&name("chat"), Some(1), "alice", "older").await.unwrap();
        let s = m.restore(&snap.id, "alice").await.unwrap();
        assert_eq!(s.active_version, Some(2));
        let d = m.diff(&name("chat"), 1, 3).await.unwrap();
        assert_eq!(d.changed.len(), 2);
        let report = m.verify_audit().await.unwrap();
        assert!(report.ok, "{}", report.message);
        assert_eq!(report.entries_checked, 8);
    }

    #[tokio::test]
    async fn dry_run_writes_nothing() {
        let m = manager().await;
        m.apply(req(json!({"model": "a"}))).await.unwrap();
        let before = m.store().audit_head().await.unwrap();
        let out =
            m.apply(ApplyRequest { dry_run: true, ..req(json!({"model": "b"})) }).await.unwrap();
        assert!(out.dry_run && out.version.is_none());
        assert_eq!(out.version_number, 2);
        assert_eq!(out.diff.changed[0].to, json!("b"));
        assert_eq!(m.get_slot(&name("chat")).await.unwrap().latest_version, 1);
        assert_eq!(m.store().audit_head().await.unwrap(), before);
        let bad = m.apply(ApplyRequest { dry_run: true, ..req(json!({"temperature": 9})) }).await;
        assert!(matches!(bad, Err(ConfigError::Invalid { .. })));
        assert_eq!(m.store().audit_head().await.unwrap(), before, "a dry run is not audited");
    }

    #[tokio::test]
    async fn invalid_configs_are_refused_and_audited_as_failures() {
        let m = manager().await;
        let err = m.apply(req(json!({"model": "m", "temperature": 3}))).await.unwrap_err();
        assert_eq!(err.code(), "validation_failed");
        assert!(
            err.to_string().contains("/temperature: temperature must be between 0 and 2, got 3"),
            "{err}"
        );
        assert_eq!(
            m.get_slot(&name("chat")).await.unwrap().latest_version,
            0,
            "no version written"
        );
        let last = m
            .audit(AuditQuery { cursor: None, limit: 1, descending: true, target: None })
            .await
            .unwrap()
            .items
            .remove(0);
        assert_eq!(last.outcome, AuditOutcome::Failure);
        assert!(last.error.unwrap().contains("temperature"));
        let big = json!({"model": "m", "prompt": "x".repeat(300 * 1024)});
        assert_eq!(m.apply(req(big)).await.unwrap_err().code(), "payload_too_large");
        let stale =
            m.apply(ApplyRequest { expected_latest: Some(4), ..req(json!({"model": "m"})) }).await;
        assert_eq!(stale.unwrap_err().code(), "conflict");
        let unknown =
            m.apply(ApplyRequest { slot: name("nope"), ..req(json!({"model": "m"})) }).await;
        assert_eq!(unknown.unwrap_err().code(), "slot_not_found");
        assert!(m.verify_audit().await.unwrap().ok);
    }

    #[tokio::test]
    async fn slot_schema_is_enforced_and_checked() {
        let m = manager().await;
        let bad = m
            .create_slot(
                NewSlot {
                    name: name("s"),
                    description: String::new(),
                    schema: Some(json!({"type": 5})),
                },
                "a",
            )
            .await;
        assert_eq!(bad.unwrap_err().code(), "invalid_schema");
        m.create_slot(
            NewSlot {
                name: name("s"),
                description: String::new(),
                schema: Some(json!({"required": ["prompt"]})),
            },
            "a",
        )
        .await
        .unwrap();
        let err = m
            .apply(ApplyRequest { slot: name("s"), ..req(json!({"model": "m"})) })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("prompt"), "{err}");
    }

    #[tokio::test]
    async fn direct_changes_are_refused_during_a_rollout() {
        let m = manager().await;
        m.apply(req(json!({"model": "a"}))).await.unwrap();
        m.store()
            .create_rollout(
                NewRollout {
                    id: "r1".into(),
                    slot: name("chat"),
                    strategy: DeploymentStrategy::Canary,
                    state: DeploymentState::Monitoring,
                    request: json!({}),
                    status: json!({}),
                    admission: Default::default(),
                },
                AuditDraft::success("a", "rollout.start", "r1"),
            )
            .await
            .unwrap();
        let err = m.apply(req(json!({"model": "b"}))).await.unwrap_err();
        assert_eq!(err.code(), "rollout_active");
        let staged =
            m.apply(ApplyRequest { activate: false, ..req(json!({"model": "b"})) }).await.unwrap();
        assert_eq!(staged.version_number, 2, "staging a candidate is allowed");
        assert_eq!(m.get_slot(&name("chat")).await.unwrap().active_version, Some(1));
    }

    #[tokio::test]
    async fn snapshot_retention_is_bounded() {
        let m = ConfigManager::new(
            Arc::new(MemoryStore::new()),
            vec![],
            ConfigSettings { snapshot_retention: 3, ..Default::default() },
        );
        m.create_slot(
            NewSlot { name: name("chat"), description: String::new(), schema: None },
            "a",
        )
        .await
        .unwrap();
        m.apply(req(json!({"model": "a"}))).await.unwrap();
        for i in 0..6 {
            m.snapshot(&name("chat"), &format!("s{i}"), "a").await.unwrap();
        }
        let snaps = m.snapshots(Some(&name("chat")), PageRequest::first(100)).await.unwrap();
        assert_eq!(snaps.items.len(), 3);
        assert_eq!(snaps.items[0].label, "s5");
    }
}
