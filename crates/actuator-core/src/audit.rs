//! The append-only, hash-chained audit log.
//!
//! Every entry carries the SHA-256 of its own canonical form and of the entry before it,
//! so editing, deleting or reordering any entry breaks the chain. A store also keeps the
//! head of the chain (last sequence number and hash), which catches a deleted tail.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fmt;

/// The `prev_hash` of the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Whether the audited action succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
}
