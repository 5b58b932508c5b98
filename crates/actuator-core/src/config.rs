//! Config slots, immutable config versions and snapshots.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

use crate::error::CoreError;

/// The name of a config slot, such as `chat.default`: 1 to 128 characters of `a-z 0-9 . _ -`,
/// starting with a letter or a digit. Slot names appear in URLs and OFREP flag keys.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(try_from = "String", into = "String")]
pub struct SlotName(String);

impl SlotName {
    /// Maximum length of a slot name in bytes.
    pub const MAX_LEN: usize = 128;

    /// Checks and wraps a slot name.
    pub fn new(name: impl Into<String>) -> Result<Self, CoreError> {
        let name = name.into();
        let ok = !name.is_empty()
            && name.len() <= Self::MAX_LEN
            && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && name.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_' || b == b'-'
            });
        if ok { Ok(Self(name)) } else { Err(CoreError::InvalidSlotName { name }) }
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SlotName {
    type Error = CoreError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<SlotName> for String {
    fn from(value: SlotName) -> Self {
        value.0
    }
}

impl fmt::Display for SlotName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What is needed to create a slot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSlot {
    /// The slot's name.
    pub name: SlotName,
    /// A free-text description.
    #[serde(default)]
    pub description: String,
    /// An optional JSON Schema every version of this slot must satisfy.
    #[serde(default)]
    pub schema: Option<Value>,
}

/// A named LLM configuration, such as `chat.default`, with its version pointers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Slot {
    /// The slot's name.
    pub name: SlotName,
    /// A free-text description.
    pub description: String,
    /// An optional JSON Schema every version must satisfy.
    pub schema: Option<Value>,
    /// The version that serves traffic (the stable config); `None` before the first apply.
    pub active_version: Option<u64>,
    /// The highest version number written so far (0 when none).
    pub latest_version: u64,
    /// Optimistic-concurrency counter, bumped by every write to the slot.
    pub revision: u64,
    /// When the slot was created.
    pub created_at: DateTime<Utc>,
    /// When the slot was last changed.
    pub updated_at: DateTime<Utc>,
}

/// One immutable version of a slot's configuration. Versions count up from 1 per slot and
/// are never rewritten.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ConfigVersion {
    /// The slot this version belongs to.
    pub slot: SlotName,
    /// The version number, 1 for the first.
    pub version: u64,
    /// The configuration document: model, prompt template, temperature, max tokens, anything.
    pub document: Value,
    /// Who wrote it.
    pub author: String,
    /// Why it was written.
    pub message: String,
    /// When it was written.
    pub created_at: DateTime<Utc>,
}

/// A saved copy of the configuration a slot was serving at a moment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Snapshot {
    /// Time-ordered unique id (UUIDv7).
    pub id: String,
    /// The slot.
    pub slot: SlotName,
    /// The version that was active.
    pub version: u64,
    /// A copy of that version's document.
    pub document: Value,
    /// Why the snapshot was taken.
    pub label: String,
    /// Who took it.
    pub created_by: String,
    /// When it was taken.
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names() {
        for ok in ["chat.default", "a", "0-x_y.z", &"a".repeat(128)] {
            assert!(SlotName::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Chat", ".x", "a b", "a/b", &"a".repeat(129), "é"] {
            let err = SlotName::new(bad).unwrap_err();
            assert!(err.to_string().contains("invalid slot name"), "{bad}");
        }
    }

    #[test]
    fn slot_name_deserialization_validates() {
        let err = serde_json::from_str::<SlotName>("\"Bad Name\"").unwrap_err();
        assert!(err.to_string().contains("invalid slot name"));
    }
}
