//! Bounded de-duplication of request ids.
//!
//! A FIFO ring of the last `capacity` logical request ids with a hash index. The key does not
//! include the arm, so a retry that the router sent to the other arm is still counted once. Keys are
//! 64-bit FNV-1a hashes (stable across releases and platforms, so persisted state stays
//! valid). Memory: about 48 bytes per entry, so `capacity × 48` bytes at most (≈ 400 KB at
//! the default 8,192). Guarantees: a retry is recognised if fewer than `capacity` other
//! requests arrived since the original; the chance that two distinct ids collide within the
//! window is below `capacity² / 2⁶⁵` (≈ 2·10⁻¹² at 8,192).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// Default number of remembered requests per rollout.
pub const DEFAULT_DEDUP_CAPACITY: usize = 8192;

/// FNV-1a 64-bit hash of the logical request id (the arm is not part of it).
pub(crate) fn request_key(request_id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in request_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// FNV-1a 64-bit hash of `arm \0 request_id`: shadow mode runs one request on both arms (a
/// paired comparison), so there the arm is part of the key.
pub(crate) fn arm_request_key(arm: &str, request_id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in arm.bytes().chain(std::iter::once(0)).chain(request_id.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Hashes the (already hashed) keys of the index with a secret per-process seed: one folded
/// 128-bit multiply instead of SipHash. The keys come from caller-chosen request ids, so the
/// seed keeps a caller from aiming many keys at one slot of the table.
#[derive(Debug, Clone, Copy)]
struct KeyedMix(u64);

impl Default for KeyedMix {
    fn default() -> Self {
        static SEED: OnceLock<u64> = OnceLock::new();
        Self(*SEED.get_or_init(|| std::hash::RandomState::new().hash_one(0x5eed_u64) | 1))
    }
}

impl BuildHasher for KeyedMix {
    type Hasher = MixHasher;
    fn build_hasher(&self) -> MixHasher {
        MixHasher { seed: self.0, h: 0 }
    }
}

/// The hasher of [`KeyedMix`].
struct MixHasher {
    seed: u64,
    h: u64,
}

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        self.h
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed; other input still mixes every byte.
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }
    fn write_u64(&mut self, k: u64) {
        let p =
            u128::from(k ^ self.h ^ self.seed) * u128::from(0x9e37_79b9_7f4a_7c15_u64 ^ self.seed);
        self.h = (p as u64) ^ ((p >> 64) as u64);
    }
}

/// One remembered request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupEntry {
    /// Hash of the logical request id.
    pub key: u64,
    /// Phase index the request was recorded in.
    pub phase: u32,
    /// Index of the arm in the rollout's arm list.
    pub arm: u16,
    /// Whether a quality score has been recorded for it.
    pub quality_seen: bool,
    /// The request's assignment-unit hash, when it carried one (late scores join its cluster).
    pub unit: Option<u16>,
    /// Whether the request was inside the experiment (see `Observation::in_experiment`).
    pub in_experiment: bool,
}

/// One persisted entry: `[key, phase, arm, quality_seen, unit, in_experiment]`, or the older
/// four-element form (no unit, inside the experiment).
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Row {
    Full(u64, u32, u16, bool, Option<u16>, bool),
    Short(u64, u32, u16, bool),
}

/// Compact persisted form: entries as tuples (about half the JSON size of named fields).
#[derive(Serialize, Deserialize)]
struct DedupState {
    capacity: usize,
    front_seq: u64,
    ring: Vec<Row>,
}

/// Fixed-capacity memory of recently seen requests.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "DedupState", into = "DedupState")]
pub struct RequestDedup {
    capacity: usize,
    front_seq: u64,
    ring: VecDeque<DedupEntry>,
    index: HashMap<u64, u64, KeyedMix>,
}

impl From<DedupState> for RequestDedup {
    fn from(s: DedupState) -> Self {
        let capacity = s.capacity.max(1);
        let ring = s
            .ring
            .into_iter()
            .map(|row| match row {
                Row::Full(key, phase, arm, quality_seen, unit, in_experiment) => {
                    DedupEntry { key, phase, arm, quality_seen, unit, in_experiment }
                }
                Row::Short(key, phase, arm, quality_seen) => {
                    DedupEntry { key, phase, arm, quality_seen, unit: None, in_experiment: true }
                }
            })
            .collect();
        let mut d = Self { capacity, front_seq: s.front_seq, ring, index: HashMap::default() };
        while d.ring.len() > capacity {
            d.ring.pop_front();
            d.front_seq += 1;
        }
        for (i, e) in d.ring.iter().enumerate() {
            d.index.insert(e.key, d.front_seq + i as u64);
        }
        d
    }
}

impl From<RequestDedup> for DedupState {
    fn from(d: RequestDedup) -> Self {
        let ring = d
            .ring
            .into_iter()
            .map(|e| Row::Full(e.key, e.phase, e.arm, e.quality_seen, e.unit, e.in_experiment))
            .collect();
        Self { capacity: d.capacity, front_seq: d.front_seq, ring }
    }
}

impl PartialEq for RequestDedup {
    fn eq(&self, other: &Self) -> bool {
        self.capacity == other.capacity
            && self.front_seq == other.front_seq
            && self.ring == other.ring
    }
}

impl RequestDedup {
    /// A memory of at most `capacity` requests (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            front_seq: 0,
            ring: VecDeque::new(),
            index: HashMap::default(),
        }
    }

    /// The capacity.
    pub const fn capacity(&self) -> usize {
        self.capacity
    }

    /// Number of remembered requests.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// `true` when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// The entry for `key`, if still remembered.
    pub fn get_mut(&mut self, key: u64) -> Option<&mut DedupEntry> {
        let seq = *self.index.get(&key)?;
        let pos = usize::try_from(seq.checked_sub(self.front_seq)?).ok()?;
        self.ring.get_mut(pos).filter(|e| e.key == key)
    }

    /// `true` when `key` is remembered.
    pub fn contains(&self, key: u64) -> bool {
        self.index.contains_key(&key)
    }

    /// Remembers a new key, evicting the oldest when full. Returns `false` (and changes
    /// nothing) if the key is already remembered.
    pub fn insert(&mut self, entry: DedupEntry) -> bool {
        if self.index.contains_key(&entry.key) {
            return false;
        }
        if self.ring.len() >= self.capacity
            && let Some(old) = self.ring.pop_front()
        {
            if self.index.get(&old.key) == Some(&self.front_seq) {
                self.index.remove(&old.key);
            }
            self.front_seq += 1;
        }
        let seq = self.front_seq + self.ring.len() as u64;
        self.ring.push_back(entry);
        self.index.insert(entry.key, seq);
        true
    }

    /// Approximate bytes used (ring plus index).
    pub fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.ring.capacity() * std::mem::size_of::<DedupEntry>()
            + self.index.capacity() * (2 * std::mem::size_of::<u64>() + 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: u64) -> DedupEntry {
        DedupEntry { key, phase: 0, arm: 0, quality_seen: false, unit: None, in_experiment: true }
    }

    #[test]
    fn remembers_and_evicts_oldest() {
        let mut d = RequestDedup::new(3);
        assert!(d.insert(entry(1)));
        assert!(!d.insert(entry(1)));
        assert!(d.insert(entry(2)));
        assert!(d.insert(entry(3)));
        assert!(d.insert(entry(4)));
        assert!(!d.contains(1));
        assert!(d.contains(2) && d.contains(4));
        assert_eq!(d.len(), 3);
        d.get_mut(3).unwrap().quality_seen = true;
        let back: RequestDedup = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(back, d);
        let mut back = back;
        assert!(back.get_mut(3).unwrap().quality_seen);
        assert!(!back.insert(entry(4)));
    }

    #[test]
    fn keys_are_frozen_fnv1a_of_the_request_id() {
        // FNV-1a 64 reference values (the empty string is the offset basis; "a" is the
        // published test vector 0xaf63dc4c8601ec8c); changing the hash breaks persisted state.
        assert_eq!(request_key(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(request_key("a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(request_key("r-1"), request_key("r-2"));
        // the shadow-mode key kept the older layout
        assert_eq!(arm_request_key("", ""), 0xaf63_bd4c_8601_b7df);
        assert_ne!(arm_request_key("canary", "r-1"), arm_request_key("control", "r-1"));
    }

    #[test]
    fn older_four_field_rows_still_load() {
        let old = r#"{"capacity":4,"front_seq":0,"ring":[[7,1,1,true]]}"#;
        let mut d: RequestDedup = serde_json::from_str(old).unwrap();
        let e = *d.get_mut(7).unwrap();
        assert_eq!(
            (e.phase, e.arm, e.quality_seen, e.unit, e.in_experiment),
            (1, 1, true, None, true)
        );
        let mut n = entry(9);
        n.unit = Some(300);
        n.in_experiment = false;
        assert!(d.insert(n));
        let back: RequestDedup = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(back, d);
    }
}
