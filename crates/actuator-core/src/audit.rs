//! The append-only, hash-chained audit log.
//!
//! Every entry carries the SHA-256 of its own canonical form and of the entry before it,
//! so editing, deleting or reordering any entry breaks the chain. A store also keeps the
//! head of the chain (last sequence number and hash), which catches a deleted tail.
//!
//! The entry of every version write carries the SHA-256 of the version's canonical document
//! ([`AuditDraft::with_document`]), so [`verify_chain`] also finds a document changed in the
//! store after it was written. A broken chain can be acknowledged by an operator: an entry
//! with action [`ACKNOWLEDGE_ACTION`] covers the problems it lists (found before it), and the
//! chain counts as intact again when every problem is covered.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fmt;

use crate::config::SlotName;
use crate::store::{AuditQuery, PageRequest, Store, StoreError};

/// The action of an operator's acknowledgement of a broken chain.
pub const ACKNOWLEDGE_ACTION: &str = "audit.acknowledge";

/// Most problems a verification report lists (it counts them all).
pub const MAX_REPORTED_PROBLEMS: usize = 100;

/// The SHA-256 of a document's canonical JSON (compact, object keys sorted), lowercase hex.
pub fn document_sha256(document: &Value) -> String {
    // serde_json::Value keeps object keys sorted, so its compact form is canonical.
    hex::encode(Sha256::digest(document.to_string().as_bytes()))
}

/// The `prev_hash` of the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Whether the audited action succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    /// The action took effect.
    Success,
    /// The action was refused or failed; nothing changed.
    Failure,
}

impl AuditOutcome {
    /// Stable string form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
        }
    }

    /// Parses the stable string form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "success" => Some(Self::Success),
            "failure" => Some(Self::Failure),
            _ => None,
        }
    }
}

/// An audit record before the store seals it into the chain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditDraft {
    /// Who did it (a person, `ci`, `engine`).
    pub actor: String,
    /// What was done, dotted: `config.apply`, `snapshot.restore`, `rollout.pause`.
    pub action: String,
    /// What it was done to: a slot, `slot@version`, a rollout id.
    pub target: String,
    /// The change, when there is one (a structural diff).
    pub diff: Option<Value>,
    /// Success or failure.
    pub outcome: AuditOutcome,
    /// The error, for a failure.
    pub error: Option<String>,
    /// Anything else worth keeping.
    pub metadata: Value,
}

impl AuditDraft {
    /// A successful action with no diff and no metadata.
    pub fn success(
        actor: impl Into<String>,
        action: impl Into<String>,
        target: impl Into<String>,
    ) -> Self {
        Self {
            actor: actor.into(),
            action: action.into(),
            target: target.into(),
            diff: None,
            outcome: AuditOutcome::Success,
            error: None,
            metadata: Value::Null,
        }
    }

    /// A failed action with its error.
    pub fn failure(
        actor: impl Into<String>,
        action: impl Into<String>,
        target: impl Into<String>,
        error: impl Into<String>,
    ) -> Self {
        Self {
            outcome: AuditOutcome::Failure,
            error: Some(error.into()),
            ..Self::success(actor, action, target)
        }
    }

    /// Adds a diff.
    pub fn with_diff(mut self, diff: Value) -> Self {
        self.diff = Some(diff);
        self
    }

    /// Adds metadata.
    pub fn with_metadata(mut self, metadata: Value) -> Self {
        self.metadata = metadata;
        self
    }

    /// Records in the metadata (key `document`) which version of which slot the entry wrote,
    /// with the SHA-256 of its document, so the chain covers the document. Metadata that is
    /// not an object is kept under the key `value`.
    pub fn with_document(mut self, slot: &SlotName, version: u64, document: &Value) -> Self {
        let mut map = match self.metadata {
            Value::Object(m) => m,
            Value::Null => serde_json::Map::new(),
            other => serde_json::Map::from_iter([("value".to_owned(), other)]),
        };
        map.insert(
            "document".to_owned(),
            serde_json::json!({
                "slot": slot.as_str(),
                "version": version,
                "sha256": document_sha256(document),
            }),
        );
        self.metadata = Value::Object(map);
        self
    }

    /// Seals the draft as entry `seq` after an entry whose hash is `prev_hash`.
    pub fn seal(self, seq: u64, id: String, at: DateTime<Utc>, prev_hash: &str) -> AuditEntry {
        let mut entry = AuditEntry {
            seq,
            id,
            at: truncate_to_micros(at),
            actor: self.actor,
            action: self.action,
            target: self.target,
            diff: self.diff,
            outcome: self.outcome,
            error: self.error,
            metadata: self.metadata,
            prev_hash: prev_hash.to_owned(),
            hash: String::new(),
        };
        entry.hash = entry.compute_hash();
        entry
    }
}

/// Audit timestamps are kept to the microsecond, so every store can round-trip them exactly.
pub fn truncate_to_micros(at: DateTime<Utc>) -> DateTime<Utc> {
    let micros = at.timestamp_micros();
    DateTime::from_timestamp_micros(micros).unwrap_or(at)
}

/// A sealed audit entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AuditEntry {
    /// Position in the chain, 1 for the first entry.
    pub seq: u64,
    /// Unique id (UUIDv7).
    pub id: String,
    /// When it was recorded (microsecond precision).
    pub at: DateTime<Utc>,
    /// Who did it.
    pub actor: String,
    /// What was done.
    pub action: String,
    /// What it was done to.
    pub target: String,
    /// The change, when there is one.
    pub diff: Option<Value>,
    /// Success or failure.
    pub outcome: AuditOutcome,
    /// The error, for a failure.
    pub error: Option<String>,
    /// Anything else worth keeping.
    pub metadata: Value,
    /// Hash of the previous entry ([`GENESIS_HASH`] for the first).
    pub prev_hash: String,
    /// SHA-256 of this entry's canonical form, hex.
    pub hash: String,
}

impl AuditEntry {
    /// The SHA-256 of the entry's canonical form (every field but `hash`), lowercase hex.
    pub fn compute_hash(&self) -> String {
        // serde_json::Value keeps object keys sorted, so this form is canonical.
        let canonical = serde_json::json!([
            self.seq,
            self.id,
            self.at.to_rfc3339_opts(SecondsFormat::Micros, true),
            self.actor,
            self.action,
            self.target,
            self.diff,
            self.outcome.as_str(),
            self.error,
            self.metadata,
            self.prev_hash,
        ]);
        let mut hasher = Sha256::new();
        hasher.update(canonical.to_string().as_bytes());
        hex::encode(hasher.finalize())
    }
}

/// The head of the chain as the store records it on every append.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    /// Sequence number of the last entry.
    pub seq: u64,
    /// Hash of the last entry.
    pub hash: String,
}

/// What is wrong with a chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChainProblem {
    /// An entry's content no longer matches its hash: it was edited.
    Edited {
        /// The entry.
        seq: u64,
    },
    /// Sequence numbers jump: entries before `seq` are missing.
    Missing {
        /// The sequence number expected.
        expected: u64,
        /// The one found.
        found: u64,
    },
    /// An entry does not point at the hash of the entry before it.
    BrokenLink {
        /// The entry.
        seq: u64,
    },
    /// The chain ends before the recorded head: entries at the end were deleted.
    Truncated {
        /// Last sequence number found.
        last_seen: u64,
        /// Sequence number of the recorded head.
        head: u64,
    },
    /// The last entry's hash differs from the recorded head.
    HeadMismatch {
        /// The head's sequence number.
        seq: u64,
    },
    /// A version's document no longer has the SHA-256 sealed in the entry that wrote it.
    DocumentChanged {
        /// The entry that wrote the version.
        seq: u64,
        /// The slot.
        slot: String,
        /// The version.
        version: u64,
        /// The SHA-256 of the document stored now.
        found_sha256: String,
    },
    /// A version written by an entry of the chain is gone from the store.
    DocumentMissing {
        /// The entry that wrote the version.
        seq: u64,
        /// The slot.
        slot: String,
        /// The version.
        version: u64,
    },
}

impl ChainProblem {
    /// The entry whose link to the one before is broken, for the problems an acknowledgement
    /// causes itself: after a deleted tail or a mismatched head, the acknowledgement's own
    /// entry follows the recorded head, not the last entry left.
    fn link_at(&self) -> Option<u64> {
        match self {
            Self::Missing { found, .. } => Some(*found),
            Self::BrokenLink { seq } => Some(*seq),
            _ => None,
        }
    }
}

impl fmt::Display for ChainProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Edited { seq } => write!(f, "entry {seq} was edited (its hash does not match)"),
            Self::Missing { expected, found } => {
                write!(f, "entries {expected}..{found} are missing (deleted)")
            }
            Self::BrokenLink { seq } => {
                write!(f, "entry {seq} does not link to the entry before it")
            }
            Self::Truncated { last_seen, head } => write!(
                f,
                "the chain ends at entry {last_seen} but the head says {head}: the last entries were deleted"
            ),
            Self::HeadMismatch { seq } => {
                write!(f, "entry {seq} differs from the recorded head of the chain")
            }
            Self::DocumentChanged { seq, slot, version, .. } => write!(
                f,
                "the document of version {version} of slot {slot} was changed after it was written (it no longer matches the SHA-256 sealed in entry {seq})"
            ),
            Self::DocumentMissing { seq, slot, version } => write!(
                f,
                "version {version} of slot {slot}, written by entry {seq}, is missing from the store"
            ),
        }
    }
}

/// Checks a chain fed entry by entry in ascending order, in constant memory.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    expected_seq: u64,
    prev_hash: String,
    checked: u64,
    problem: Option<ChainProblem>,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl ChainVerifier {
    /// A verifier expecting the first entry.
    pub fn new() -> Self {
        Self { expected_seq: 1, prev_hash: GENESIS_HASH.to_owned(), checked: 0, problem: None }
    }

    /// Feeds the next entry. Returns `false` once a problem was found (later entries are ignored).
    pub fn push(&mut self, entry: &AuditEntry) -> bool {
        if self.problem.is_some() {
            return false;
        }
        let problem = if entry.seq != self.expected_seq {
            Some(ChainProblem::Missing { expected: self.expected_seq, found: entry.seq })
        } else if entry.compute_hash() != entry.hash {
            Some(ChainProblem::Edited { seq: entry.seq })
        } else if entry.prev_hash != self.prev_hash {
            Some(ChainProblem::BrokenLink { seq: entry.seq })
        } else {
            None
        };
        if problem.is_some() {
            self.problem = problem;
            return false;
        }
        self.expected_seq += 1;
        self.prev_hash.clone_from(&entry.hash);
        self.checked += 1;
        true
    }

    /// Ends the check against the recorded head; returns the number of entries checked or the
    /// first problem.
    pub fn finish(self, head: Option<&AuditHead>) -> Result<u64, ChainProblem> {
        if let Some(p) = self.problem {
            return Err(p);
        }
        let last_seen = self.expected_seq - 1;
        if let Some(head) = head {
            if head.seq > last_seen {
                return Err(ChainProblem::Truncated { last_seen, head: head.seq });
            }
            if head.seq == last_seen && head.hash != self.prev_hash {
                return Err(ChainProblem::HeadMismatch { seq: head.seq });
            }
        }
        Ok(self.checked)
    }
}

/// A problem found by [`verify_chain`], and the acknowledgement that covers it, if any.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FoundProblem {
    /// The problem.
    pub problem: ChainProblem,
    /// Sequence number of the acknowledgement entry that covers it; `None` while it is
    /// unacknowledged.
    pub acknowledged_by: Option<u64>,
}

/// The result of verifying the audit chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AuditReport {
    /// Whether every problem found is acknowledged (always true for an intact chain).
    pub ok: bool,
    /// Entries read (for an incremental verification, those after the verified head).
    pub entries_checked: u64,
    /// Whether the verification started from the head remembered by an earlier one
    /// ([`verify_incremental`]): the entries up to it were trusted, only its hash was checked.
    /// `false` for a walk of the whole chain.
    #[serde(default)]
    pub incremental: bool,
    /// The first sequence number walked: 1 for the whole chain, the one after the verified
    /// head for an incremental verification.
    #[serde(default)]
    pub from: u64,
    /// The last sequence number walked; `from - 1` when there was nothing to walk.
    #[serde(default)]
    pub to: u64,
    /// The first unacknowledged problem.
    pub problem: Option<ChainProblem>,
    /// The problems found, in chain order (at most [`MAX_REPORTED_PROBLEMS`]).
    pub problems: Vec<FoundProblem>,
    /// How many problems were found in all.
    pub problems_found: u64,
    /// A sentence for a person.
    pub message: String,
}

impl AuditReport {
    /// The problems no acknowledgement covers.
    pub fn unacknowledged(&self) -> impl Iterator<Item = &ChainProblem> {
        self.problems.iter().filter(|p| p.acknowledged_by.is_none()).map(|p| &p.problem)
    }
}

/// Problems found while walking a chain, with their acknowledgements (bounded memory).
#[derive(Debug, Default)]
struct Findings {
    listed: Vec<FoundProblem>,
    /// For each listed problem, the last entry walked before it (`None`: the genesis): how far
    /// the chain is known good when that problem is the first open one.
    anchors: Vec<Option<AuditHead>>,
    found: u64,
    /// Problems beyond the listed ones that no later acknowledgement covers yet.
    unlisted_open: u64,
}

impl Findings {
    #[cfg(test)]
    fn record(&mut self, problem: ChainProblem) {
        self.record_after(problem, None);
    }

    /// Records `problem`, found after the entry `anchor` (the last one known good before it).
    fn record_after(&mut self, problem: ChainProblem, anchor: Option<AuditHead>) {
        self.found += 1;
        if self.listed.len() >= MAX_REPORTED_PROBLEMS
            && let Some(i) = self.listed.iter().position(|p| p.acknowledged_by.is_some())
        {
            // Open problems matter more than acknowledged ones: make room.
            self.listed.remove(i);
            self.anchors.remove(i);
        }
        if self.listed.len() < MAX_REPORTED_PROBLEMS {
            self.listed.push(FoundProblem { problem, acknowledged_by: None });
            self.anchors.push(anchor);
        } else {
            self.unlisted_open += 1;
        }
    }

    /// An acknowledgement at `seq`: covers the open problems it lists (so a later edit of an
    /// earlier entry, or a document changed again, is a new problem), the broken link into
    /// its own entry, and the problems beyond [`MAX_REPORTED_PROBLEMS`] that no report could
    /// list.
    fn acknowledge(&mut self, seq: u64, metadata: &Value) {
        let listed: Vec<ChainProblem> = metadata
            .get("problems")
            .and_then(|p| serde_json::from_value(p.clone()).ok())
            .unwrap_or_default();
        for p in self.listed.iter_mut().filter(|p| p.acknowledged_by.is_none()) {
            if listed.contains(&p.problem) || p.problem.link_at() == Some(seq) {
                p.acknowledged_by = Some(seq);
            }
        }
        self.unlisted_open = 0;
    }

    /// The anchor of the first open problem: `Some(anchor)` when a problem is open.
    fn first_open_anchor(&self) -> Option<Option<AuditHead>> {
        self.listed
            .iter()
            .position(|p| p.acknowledged_by.is_none())
            .map(|i| self.anchors[i].clone())
    }
}

/// Reports how many entries a verification has checked so far (called after every page).
pub type Progress<'a> = &'a (dyn Fn(u64) + Send + Sync);

/// A walk of the chain ([`walk_chain`]): its report, and how far it verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainWalk {
    /// The report.
    pub report: AuditReport,
    /// The last entry walked (`start` when there was nothing after it).
    pub end: Option<AuditHead>,
    /// How far the chain is known good: `end` when the report is ok, otherwise the last entry
    /// walked before the first unacknowledged problem (`start` or earlier, down to `None` for
    /// a problem in the first entry of the chain). A later verification that starts there
    /// finds the problem again.
    pub good_through: Option<AuditHead>,
}

/// Walks the whole chain of `store` in ascending pages and checks, in memory bounded by
/// [`MAX_REPORTED_PROBLEMS`]: the sequence numbers, every entry's hash and link, the head,
/// and that every version document an entry sealed still has the SHA-256 sealed with it.
/// The walk goes on past a problem (re-anchoring on the stored hash), so an acknowledgement
/// later in the chain can cover it. It does not read or move the remembered verified head
/// ([`verify_incremental`] and [`verify_full`] do).
pub async fn verify_chain<S: Store + ?Sized>(store: &S) -> Result<AuditReport, StoreError> {
    Ok(walk_chain(store, None, &|_| {}).await?.report)
}

/// Walks the chain after `start` (from the first entry when `None`), with the checks of
/// [`verify_chain`], calling `progress` after every page. `start` is trusted: the caller
/// checked that its entry still hashes to `start.hash` ([`head_entry_matches`]); the entry
/// after it must link to that hash. The documents of entries up to `start` are not read
/// again, and neither is an acknowledgement up to it: the problems it covered were found by
/// the verification that moved the head past them.
pub async fn walk_chain<S: Store + ?Sized>(
    store: &S,
    start: Option<&AuditHead>,
    progress: Progress<'_>,
) -> Result<ChainWalk, StoreError> {
    let head = store.audit_head().await?;
    let mut findings = Findings::default();
    let from = start.map_or(1, |h| h.seq.saturating_add(1));
    let mut expected_seq = from;
    let mut prev_hash = start.map_or_else(|| GENESIS_HASH.to_owned(), |h| h.hash.clone());
    // The last entry walked, and the one before it (the anchors of problems found at them).
    let mut last: Option<AuditHead> = start.cloned();
    let mut before_last: Option<AuditHead> = None;
    let mut checked = 0u64;
    let mut cursor = start.map(|h| h.seq);
    loop {
        let page = store
            .list_audit(AuditQuery {
                cursor,
                limit: PageRequest::MAX_LIMIT,
                descending: false,
                target: None,
            })
            .await?;
        for e in &page.items {
            checked += 1;
            let hash_ok = e.compute_hash() == e.hash;
            if e.seq != expected_seq {
                findings.record_after(
                    ChainProblem::Missing { expected: expected_seq, found: e.seq },
                    last.clone(),
                );
            } else if !hash_ok {
                findings.record_after(ChainProblem::Edited { seq: e.seq }, last.clone());
            } else if e.prev_hash != prev_hash {
                findings.record_after(ChainProblem::BrokenLink { seq: e.seq }, last.clone());
            }
            if e.seq != expected_seq && !hash_ok {
                findings.record_after(ChainProblem::Edited { seq: e.seq }, last.clone());
            }
            if hash_ok && e.outcome == AuditOutcome::Success {
                if let Some(p) = check_document(store, e).await? {
                    findings.record_after(p, last.clone());
                }
                if e.action == ACKNOWLEDGE_ACTION {
                    findings.acknowledge(e.seq, &e.metadata);
                }
            }
            expected_seq = e.seq.saturating_add(1);
            prev_hash.clone_from(&e.hash);
            before_last = last.replace(AuditHead { seq: e.seq, hash: e.hash.clone() });
        }
        progress(checked);
        match page.next_cursor.and_then(|c| c.parse().ok()) {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let last_seen = expected_seq - 1;
    if let Some(head) = &head {
        if head.seq > last_seen {
            findings
                .record_after(ChainProblem::Truncated { last_seen, head: head.seq }, last.clone());
        } else if head.seq == last_seen && head.hash != prev_hash {
            // The last entry walked differs from the head: known good only before it (before
            // the start when nothing was walked, since the start itself is then in question).
            let anchor = if checked == 0 { None } else { before_last.clone() };
            findings.record_after(ChainProblem::HeadMismatch { seq: head.seq }, anchor);
        }
    }
    let open = findings.listed.iter().filter(|p| p.acknowledged_by.is_none()).count() as u64
        + findings.unlisted_open;
    let first_open =
        findings.listed.iter().find(|p| p.acknowledged_by.is_none()).map(|p| p.problem.clone());
    let to = last_seen.max(from.saturating_sub(1));
    let scope = match start {
        Some(h) if checked == 0 => {
            format!(" (nothing new after the verified head, entry {})", h.seq)
        }
        Some(h) => format!(" (entries {from} to {to}, after the verified head, entry {})", h.seq),
        None => String::new(),
    };
    let message = match (&first_open, findings.found) {
        (None, 0) => format!("audit chain intact: {checked} entries verified{scope}"),
        (None, n) => format!(
            "audit chain verified: {checked} entries{scope}, {n} earlier problem(s), all acknowledged"
        ),
        (Some(p), _) => format!(
            "audit chain broken: {p}{}",
            if open > 1 { format!(" (and {} more)", open - 1) } else { String::new() }
        ),
    };
    let good_through = match findings.first_open_anchor() {
        Some(anchor) => anchor,
        None if open > 0 => start.cloned(),
        None => last.clone(),
    };
    Ok(ChainWalk {
        report: AuditReport {
            ok: open == 0,
            entries_checked: checked,
            incremental: start.is_some(),
            from,
            to,
            problem: first_open,
            problems: findings.listed,
            problems_found: findings.found,
            message,
        },
        end: last,
        good_through,
    })
}

/// Whether the entry at `head.seq` is still in the store, intact, with the hash `head.hash`.
pub async fn head_entry_matches<S: Store + ?Sized>(
    store: &S,
    head: &AuditHead,
) -> Result<bool, StoreError> {
    let page = store
        .list_audit(AuditQuery {
            cursor: Some(head.seq.saturating_sub(1)),
            limit: 1,
            descending: false,
            target: None,
        })
        .await?;
    Ok(page
        .items
        .first()
        .is_some_and(|e| e.seq == head.seq && e.hash == head.hash && e.compute_hash() == e.hash))
}

/// Incremental verification: walks only the entries after the head the last verification
/// remembered ([`Store::verified_head`]), after checking that the head's own entry still has
/// the hash remembered; then remembers how far the chain verified ([`remember_walk`]).
///
/// What it trusts: every entry up to the remembered head, and the documents those entries
/// sealed, as they were when an earlier verification checked them. An edit of such an entry
/// that keeps the links intact, or a document changed after its entry was verified, is found
/// only by [`verify_full`]. When the head's entry changed or went, this walks the whole chain
/// instead (the report then says `incremental: false`).
pub async fn verify_incremental<S: Store + ?Sized>(store: &S) -> Result<AuditReport, StoreError> {
    let remembered = store.verified_head().await?;
    let start = match &remembered {
        Some(h) if head_entry_matches(store, h).await? => Some(h.clone()),
        _ => None,
    };
    let walk = walk_chain(store, start.as_ref(), &|_| {}).await?;
    let fell_back = remembered.is_some() && start.is_none();
    remember_walk(store, &walk, remembered.as_ref()).await?;
    let mut report = walk.report;
    if fell_back {
        report.message.push_str(
            "; the entry of the verified head was changed or deleted, so the whole chain was walked",
        );
    }
    Ok(report)
}

/// Full verification: walks the whole chain ([`walk_chain`] from the first entry), reporting
/// progress, and remembers how far it verified ([`remember_walk`]): a problem found before
/// the remembered head moves the head back, so the next incremental verification finds it too.
pub async fn verify_full<S: Store + ?Sized>(
    store: &S,
    progress: Progress<'_>,
) -> Result<AuditReport, StoreError> {
    let remembered = store.verified_head().await?;
    let walk = walk_chain(store, None, progress).await?;
    remember_walk(store, &walk, remembered.as_ref()).await?;
    Ok(walk.report)
}

/// Moves the remembered verified head to where `walk` left the chain known good
/// ([`ChainWalk::good_through`]); writes nothing when that is where it is already.
pub async fn remember_walk<S: Store + ?Sized>(
    store: &S,
    walk: &ChainWalk,
    remembered: Option<&AuditHead>,
) -> Result<(), StoreError> {
    if walk.good_through.as_ref() != remembered {
        store.set_verified_head(walk.good_through.clone()).await?;
    }
    Ok(())
}

/// The document problem of entry `e`, if it sealed a version document that changed or went.
async fn check_document<S: Store + ?Sized>(
    store: &S,
    e: &AuditEntry,
) -> Result<Option<ChainProblem>, StoreError> {
    let Some(doc) = e.metadata.get("document") else { return Ok(None) };
    let (Some(slot), Some(version), Some(sealed)) = (
        doc.get("slot").and_then(Value::as_str),
        doc.get("version").and_then(Value::as_u64),
        doc.get("sha256").and_then(Value::as_str),
    ) else {
        return Ok(None);
    };
    let Ok(name) = SlotName::new(slot) else { return Ok(None) };
    Ok(match store.get_version(&name, version).await? {
        None => Some(ChainProblem::DocumentMissing { seq: e.seq, slot: slot.to_owned(), version }),
        Some(v) => {
            let found = document_sha256(&v.document);
            (found != sealed).then(|| ChainProblem::DocumentChanged {
                seq: e.seq,
                slot: slot.to_owned(),
                version,
                found_sha256: found,
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<AuditEntry> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let e = AuditDraft::success("alice", "config.apply", format!("chat@{seq}"))
                    .with_metadata(
                        serde_json::json!({"n": seq, "f": 0.1, "g": 1.234_567_890_123_456_7e300}),
                    )
                    .seal(seq, format!("id{seq}"), Utc::now(), &prev);
                prev.clone_from(&e.hash);
                e
            })
            .collect()
    }

    fn verify(entries: &[AuditEntry], head: Option<&AuditHead>) -> Result<u64, ChainProblem> {
        let mut v = ChainVerifier::new();
        for e in entries {
            v.push(e);
        }
        v.finish(head)
    }

    fn head_of(entries: &[AuditEntry]) -> AuditHead {
        let last = entries.last().unwrap();
        AuditHead { seq: last.seq, hash: last.hash.clone() }
    }

    #[test]
    fn intact_chain_verifies() {
        let c = chain(5);
        assert_eq!(verify(&c, Some(&head_of(&c))), Ok(5));
    }

    #[test]
    fn edited_entry_is_found() {
        let mut c = chain(5);
        let head = head_of(&c);
        c[2].actor = "mallory".into();
        assert_eq!(verify(&c, Some(&head)), Err(ChainProblem::Edited { seq: 3 }));
    }

    #[test]
    fn edited_and_rehashed_entry_breaks_the_next_link() {
        let mut c = chain(5);
        let head = head_of(&c);
        c[2].actor = "mallory".into();
        c[2].hash = c[2].compute_hash();
        assert_eq!(verify(&c, Some(&head)), Err(ChainProblem::BrokenLink { seq: 4 }));
    }

    #[test]
    fn deleted_entry_is_found() {
        let mut c = chain(5);
        let head = head_of(&c);
        c.remove(1);
        assert_eq!(verify(&c, Some(&head)), Err(ChainProblem::Missing { expected: 2, found: 3 }));
    }

    #[test]
    fn deleted_tail_is_found_by_the_head() {
        let mut c = chain(5);
        let head = head_of(&c);
        c.pop();
        assert_eq!(verify(&c, Some(&head)), Err(ChainProblem::Truncated { last_seen: 4, head: 5 }));
    }

    #[test]
    fn hash_survives_json_round_trip() {
        for e in chain(3) {
            let back: AuditEntry =
                serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
            assert_eq!(back.compute_hash(), e.hash);
        }
    }

    #[test]
    fn an_acknowledgement_covers_earlier_entry_problems_and_the_documents_it_lists() {
        let changed = |found: &str| ChainProblem::DocumentChanged {
            seq: 2,
            slot: "chat".into(),
            version: 1,
            found_sha256: found.into(),
        };
        let mut f = Findings::default();
        f.record(ChainProblem::Edited { seq: 3 });
        f.record(changed("aa"));
        f.record(ChainProblem::Edited { seq: 4 });
        f.acknowledge(
            9,
            &serde_json::json!({"problems": [changed("bb"), {"kind": "edited", "seq": 3}]}),
        );
        assert_eq!(f.listed[0].acknowledged_by, Some(9), "a listed entry problem");
        assert_eq!(f.listed[1].acknowledged_by, None, "a document changed to another digest");
        assert_eq!(f.listed[2].acknowledged_by, None, "an edit it does not list");
        f.acknowledge(10, &serde_json::json!({"problems": [changed("aa")]}));
        assert_eq!(f.listed[1].acknowledged_by, Some(10), "the document problem it lists");
        f.record(ChainProblem::Missing { expected: 5, found: 11 });
        f.acknowledge(11, &Value::Null);
        assert_eq!(f.listed[3].acknowledged_by, Some(11), "the gap into the ack's own entry");
        f.record(ChainProblem::BrokenLink { seq: 12 });
        assert_eq!(f.listed[4].acknowledged_by, None, "a problem after the last ack stays open");
    }

    #[test]
    fn findings_are_bounded_and_counted() {
        let mut f = Findings::default();
        for seq in 0..(MAX_REPORTED_PROBLEMS as u64 + 5) {
            f.record(ChainProblem::Edited { seq });
        }
        assert_eq!(f.listed.len(), MAX_REPORTED_PROBLEMS);
        assert_eq!((f.found, f.unlisted_open), (MAX_REPORTED_PROBLEMS as u64 + 5, 5));
        f.acknowledge(1000, &Value::Null);
        assert_eq!(f.unlisted_open, 0);
    }

    #[test]
    fn the_first_open_problem_anchors_how_far_the_chain_is_good() {
        let at = |seq: u64| Some(AuditHead { seq, hash: format!("h{seq}") });
        let mut f = Findings::default();
        assert_eq!(f.first_open_anchor(), None, "no problem");
        f.record_after(ChainProblem::Edited { seq: 3 }, at(2));
        f.record_after(ChainProblem::Edited { seq: 7 }, at(6));
        assert_eq!(f.first_open_anchor(), Some(at(2)));
        f.acknowledge(8, &serde_json::json!({"problems": [{"kind": "edited", "seq": 3}]}));
        assert_eq!(f.first_open_anchor(), Some(at(6)), "the acknowledged one no longer counts");
        f.acknowledge(9, &serde_json::json!({"problems": [{"kind": "edited", "seq": 7}]}));
        assert_eq!(f.first_open_anchor(), None);
    }

    #[tokio::test]
    async fn an_incremental_walk_starts_after_the_head_and_checks_its_entry() {
        use crate::testing::MemoryStore;
        let store = MemoryStore::new();
        for i in 0..5 {
            store.append_audit(AuditDraft::success("a", "note", format!("n{i}"))).await.unwrap();
        }
        let full = walk_chain(&store, None, &|_| {}).await.unwrap();
        assert!(full.report.ok);
        assert_eq!(full.end.as_ref().map(|h| h.seq), Some(5));
        assert_eq!(full.good_through, full.end, "an intact chain is good to its end");
        let mid = store
            .list_audit(AuditQuery { cursor: Some(2), limit: 1, descending: false, target: None })
            .await
            .unwrap()
            .items
            .remove(0);
        let mid = AuditHead { seq: mid.seq, hash: mid.hash };
        assert!(head_entry_matches(&store, &mid).await.unwrap());
        let wrong = AuditHead { seq: 3, hash: GENESIS_HASH.to_owned() };
        assert!(!head_entry_matches(&store, &wrong).await.unwrap(), "another hash");
        let gone = AuditHead { seq: 9, hash: mid.hash.clone() };
        assert!(!head_entry_matches(&store, &gone).await.unwrap(), "no such entry");
        let seen = std::sync::Mutex::new(0);
        let part = walk_chain(&store, Some(&mid), &|n| *seen.lock().unwrap() = n).await.unwrap();
        assert!(part.report.ok, "{:?}", part.report);
        assert_eq!((part.report.from, part.report.to, part.report.entries_checked), (4, 5, 2));
        assert!(part.report.incremental);
        assert_eq!(*seen.lock().unwrap(), 2);
        // A start whose hash is not the one the next entry links to: that link is broken, and
        // the chain is good only through the start.
        let bad = walk_chain(&store, Some(&wrong), &|_| {}).await.unwrap();
        assert_eq!(bad.report.problem, Some(ChainProblem::BrokenLink { seq: 4 }));
        assert_eq!(bad.good_through, Some(wrong.clone()));
        let end = full.end.clone().unwrap();
        let nothing = walk_chain(&store, Some(&end), &|_| {}).await.unwrap();
        assert_eq!(
            (nothing.report.from, nothing.report.to, nothing.report.entries_checked),
            (6, 5, 0)
        );
        assert!(nothing.report.message.contains("nothing new"), "{}", nothing.report.message);
    }

    #[test]
    fn document_digest_is_canonical_and_sealed_in_the_metadata() {
        let a: Value = serde_json::from_str(r#"{"b": 1, "a": [0.5, "x"]}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":[0.5,"x"],"b":1}"#).unwrap();
        assert_eq!(document_sha256(&a), document_sha256(&b), "key order and spacing do not matter");
        assert_ne!(document_sha256(&a), document_sha256(&serde_json::json!({"b": 2})));
        let slot = SlotName::new("chat").unwrap();
        let d = AuditDraft::success("a", "config.apply", "chat@1")
            .with_metadata(serde_json::json!({"message": "m"}))
            .with_document(&slot, 1, &a);
        assert_eq!(d.metadata["message"], "m");
        assert_eq!(d.metadata["document"]["sha256"], document_sha256(&a));
        let d = AuditDraft::success("a", "x", "t")
            .with_metadata(serde_json::json!(5))
            .with_document(&slot, 1, &a);
        assert_eq!(d.metadata["value"], 5, "non-object metadata is kept");
    }
}
