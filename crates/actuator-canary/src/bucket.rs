//! Frozen bucketing and traffic shares.
//!
//! # Byte layout (frozen forever)
//!
//! ```text
//! bucket(slot, salt, key) = xxh3_64_with_seed(slot ‖ 0x00 ‖ salt ‖ 0x00 ‖ key, BUCKET_SEED) % 10_000
//! ```
//!
//! `slot`, `salt` and `key` are their UTF-8 bytes. Slots and salts never contain NUL (route
//! validation rejects them), so the layout is unambiguous. XXH3's output is frozen by its
//! authors across versions and platforms; the golden vectors in the tests pin ours. Changing the
//! seed, the layout or the modulus reshuffles every user between stable and canary.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use xxhash_rust::xxh3::{Xxh3, xxh3_64_with_seed};

use crate::ResolveError;

/// Number of buckets: shares have a granularity of 0.01% (one basis point).
pub const BUCKETS: u16 = 10_000;

/// Seed of the assignment hash (ASCII `actuator`). Frozen: changing it reshuffles every user.
pub const BUCKET_SEED: u64 = 0x6163_7475_6174_6f72;

/// Seed of the A/B arm hash (ASCII `abarmsel`), independent of [`BUCKET_SEED`] so that the arm
/// a key lands in does not depend on whether it entered the experiment early or late. Frozen.
pub const ARM_SEED: u64 = 0x6162_6172_6d73_656c;

/// Seed of the assignment-unit hash (ASCII `unitseed`), independent of [`BUCKET_SEED`] and
/// [`ARM_SEED`]: the analysis groups users into cluster buckets by it, so the buckets are
/// groups of users unrelated to which arm they are on. Frozen.
pub const UNIT_SEED: u64 = 0x756e_6974_7365_6564;

/// Inputs up to this many bytes are hashed from a stack buffer without allocating.
const STACK_BYTES: usize = 192;

/// The bucket (0..10_000) of `key` for a rollout of `slot` salted with `salt`.
///
/// Deterministic across processes, machines and releases. A key is inside a share `s` iff
/// `bucket < s.basis_points()`, so ramping a share up never moves a key out.
#[must_use]
pub fn bucket(slot: &str, salt: &str, key: &str) -> u16 {
    bucket_with_seed(BUCKET_SEED, slot, salt, key)
}

/// The A/B arm bucket (0..10_000) of `key`: same layout as [`bucket`], seeded with [`ARM_SEED`].
#[must_use]
pub fn arm_bucket(slot: &str, salt: &str, key: &str) -> u16 {
    bucket_with_seed(ARM_SEED, slot, salt, key)
}

/// The assignment-unit hash (0..65_536) of `key`: the top 16 bits of the same layout as
/// [`bucket`] seeded with [`UNIT_SEED`]. Returned in the resolution of sticky splits so that
/// observations can carry it back; the health monitor reduces it modulo its cluster count (a
/// power of two), so requests of one user land in one cluster bucket.
#[must_use]
pub fn unit_hash(slot: &str, salt: &str, key: &str) -> u16 {
    // The shift leaves 16 bits, so the cast is exact.
    (hash_parts(UNIT_SEED, slot.as_bytes(), salt.as_bytes(), key.as_bytes()) >> 48) as u16
}

fn bucket_with_seed(seed: u64, slot: &str, salt: &str, key: &str) -> u16 {
    // The remainder is < 10_000, so the cast cannot truncate.
    (hash_parts(seed, slot.as_bytes(), salt.as_bytes(), key.as_bytes()) % u64::from(BUCKETS)) as u16
}

/// `xxh3_64_with_seed(a ‖ 0 ‖ b ‖ 0 ‖ c, seed)` without allocating.
fn hash_parts(seed: u64, a: &[u8], b: &[u8], c: &[u8]) -> u64 {
    let len = a.len() + b.len() + c.len() + 2;
    if len <= STACK_BYTES {
        let mut buf = [0u8; STACK_BYTES];
        buf[..a.len()].copy_from_slice(a);
        let b_start = a.len() + 1;
        buf[b_start..b_start + b.len()].copy_from_slice(b);
        let c_start = b_start + b.len() + 1;
        buf[c_start..c_start + c.len()].copy_from_slice(c);
        xxh3_64_with_seed(&buf[..len], seed)
    } else {
        // The streaming hasher yields exactly the one-shot value over the concatenation.
        let mut h = Xxh3::with_seed(seed);
        h.update(a);
        h.update(&[0]);
        h.update(b);
        h.update(&[0]);
        h.update(c);
        h.digest()
    }
}

/// Prefixes up to this many bytes (one cache line) are kept zero-padded, so a request copies
/// them with one fixed-size copy.
const PADDED_PREFIX: usize = 64;

/// `slot ‖ 0x00 ‖ salt ‖ 0x00`: the part of the bucketing input that a rollout fixes, laid out
/// once per route so that a request only appends its key.
#[derive(Debug, Default)]
pub(crate) struct StickyPrefix {
    /// The prefix bytes.
    bytes: Box<[u8]>,
    /// The prefix zero-padded to one cache line, when it fits.
    padded: Option<[u8; PADDED_PREFIX]>,
}

impl StickyPrefix {
    /// The prefix of `slot` and `salt`.
    pub(crate) fn new(slot: &str, salt: &str) -> Self {
        let mut p = Vec::with_capacity(slot.len() + salt.len() + 2);
        p.extend_from_slice(slot.as_bytes());
        p.push(0);
        p.extend_from_slice(salt.as_bytes());
        p.push(0);
        let padded = (p.len() <= PADDED_PREFIX).then(|| {
            let mut padded = [0; PADDED_PREFIX];
            padded[..p.len()].copy_from_slice(&p);
            padded
        });
        Self { bytes: p.into_boxed_slice(), padded }
    }

    /// The bucketing input `prefix ‖ key`, joined in `buf` when it fits.
    #[inline]
    pub(crate) fn join<'a>(
        &'a self,
        key: &'a [u8],
        buf: &'a mut [u8; STACK_BYTES],
    ) -> StickyInput<'a> {
        let start = self.bytes.len();
        let len = start + key.len();
        if len > STACK_BYTES {
            return StickyInput::Parts { prefix: &self.bytes, key };
        }
        match &self.padded {
            Some(padded) => buf[..PADDED_PREFIX].copy_from_slice(padded),
            None => buf[..start].copy_from_slice(&self.bytes),
        }
        buf[start..len].copy_from_slice(key);
        StickyInput::Joined(&buf[..len])
    }
}

/// The bucketing input of one request, `prefix ‖ key`, joined once and hashed with each seed
/// the request needs (bucket, unit, A/B arm) instead of once per hash.
#[derive(Debug, Clone, Copy)]
pub(crate) enum StickyInput<'a> {
    /// Short inputs (the usual case), joined in a stack buffer.
    Joined(&'a [u8]),
    /// Inputs longer than the stack buffer, hashed by the streaming hasher.
    Parts {
        /// `slot ‖ 0 ‖ salt ‖ 0`.
        prefix: &'a [u8],
        /// The stickiness key.
        key: &'a [u8],
    },
}

impl StickyInput<'_> {
    #[inline]
    fn hash(&self, seed: u64) -> u64 {
        match self {
            Self::Joined(bytes) => xxh3_64_with_seed(bytes, seed),
            Self::Parts { prefix, key } => {
                let mut h = Xxh3::with_seed(seed);
                h.update(prefix);
                h.update(key);
                h.digest()
            }
        }
    }

    /// [`bucket`] of this input.
    #[inline]
    pub(crate) fn bucket(&self) -> u16 {
        // The remainder is < 10_000, so the cast cannot truncate.
        (self.hash(BUCKET_SEED) % u64::from(BUCKETS)) as u16
    }

    /// [`arm_bucket`] of this input.
    #[inline]
    pub(crate) fn arm_bucket(&self) -> u16 {
        (self.hash(ARM_SEED) % u64::from(BUCKETS)) as u16
    }

    /// [`unit_hash`] of this input.
    #[inline]
    pub(crate) fn unit(&self) -> u16 {
        // The shift leaves 16 bits, so the cast is exact.
        (self.hash(UNIT_SEED) >> 48) as u16
    }
}

/// Size of the stack buffer a request joins its bucketing input in.
pub(crate) const JOIN_BYTES: usize = STACK_BYTES;

/// A traffic share in basis points of 10,000 (0.01% granularity), validated to `0..=10_000`.
///
/// Serialized as an integer number of basis points (`500` = 5%); deserialization also accepts a
/// percent string such as `"5%"` or `"0.01"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Share(u16);

impl Share {
    /// 0%: nobody.
    pub const ZERO: Self = Self(0);
    /// 100%: everybody.
    pub const FULL: Self = Self(BUCKETS);

    /// A share of `bp` basis points (`500` = 5%).
    ///
    /// # Errors
    /// [`ResolveError::Parse`] when `bp > 10_000`.
    pub fn from_basis_points(bp: u16) -> Result<Self, ResolveError> {
        if bp > BUCKETS {
            return Err(ResolveError::Parse(format!(
                "share of {bp} basis points is above 100%: use 0 to 10000 basis points"
            )));
        }
        Ok(Self(bp))
    }

    /// A share from a percent such as `5.0` or `0.01`.
    ///
    /// # Errors
    /// [`ResolveError::Parse`] when the value is not finite, outside `0..=100`, or finer than
    /// 0.01% (it is never silently truncated).
    pub fn from_percent(percent: f64) -> Result<Self, ResolveError> {
        if !percent.is_finite() || !(0.0..=100.0).contains(&percent) {
            return Err(ResolveError::Parse(format!(
                "share {percent}% is out of range: use a percent between 0 and 100"
            )));
        }
        let bp = (percent * 100.0).round();
        if (percent * 100.0 - bp).abs() > 1e-6 {
            return Err(ResolveError::Parse(format!(
                "share {percent}% is finer than 0.01%: round it to two decimals"
            )));
        }
        // In 0..=10_000 after the range check, so the cast is exact.
        Self::from_basis_points(bp as u16)
    }

    /// The share in basis points (0..=10_000).
    #[must_use]
    pub const fn basis_points(self) -> u16 {
        self.0
    }

    /// The share as a percent (0.0..=100.0).
    #[must_use]
    pub fn as_percent(self) -> f64 {
        f64::from(self.0) / 100.0
    }

    /// The share as a fraction (0.0..=1.0).
    #[must_use]
    pub fn as_fraction(self) -> f64 {
        f64::from(self.0) / f64::from(BUCKETS)
    }

    /// Whether a bucket falls inside this share: `bucket < basis_points`.
    #[must_use]
    pub const fn contains(self, bucket: u16) -> bool {
        bucket < self.0
    }
}

impl TryFrom<u16> for Share {
    type Error = ResolveError;
    fn try_from(bp: u16) -> Result<Self, ResolveError> {
        Self::from_basis_points(bp)
    }
}

impl From<Share> for u16 {
    fn from(s: Share) -> Self {
        s.0
    }
}

impl FromStr for Share {
    type Err = ResolveError;

    /// Parses a percent: `"5"`, `"5.0"`, `"5%"`, `"0.01%"`.
    fn from_str(s: &str) -> Result<Self, ResolveError> {
        let t = s.trim();
        let t = t.strip_suffix('%').unwrap_or(t).trim_end();
        let p: f64 = t.parse().map_err(|_| {
            ResolveError::Parse(format!(
                "share `{s}` is not a percent: write it like `5%` or `0.01`"
            ))
        })?;
        Self::from_percent(p)
    }
}

impl fmt::Display for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, frac) = (self.0 / 100, self.0 % 100);
        match frac {
            0 => write!(f, "{whole}%"),
            f2 if f2 % 10 == 0 => write!(f, "{whole}.{}%", f2 / 10),
            f2 => write!(f, "{whole}.{f2:02}%"),
        }
    }
}

impl Serialize for Share {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.0)
    }
}

impl<'de> Deserialize<'de> for Share {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Share;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a share as integer basis points (500 = 5%) or a percent string like \"5%\"",
                )
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Share, E> {
                u16::try_from(v)
                    .map_err(|_| {
                        E::custom(format!(
                            "share of {v} basis points is above 100%: use 0 to 10000 basis points"
                        ))
                    })
                    .and_then(|bp| Share::from_basis_points(bp).map_err(E::custom))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Share, E> {
                match u64::try_from(v) {
                    Ok(u) => self.visit_u64(u),
                    Err(_) => Err(E::custom(format!(
                        "share of {v} basis points is negative: use 0 to 10000 basis points"
                    ))),
                }
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Share, E> {
                Err(E::custom(format!(
                    "share {v} is ambiguous: write integer basis points (500 = 5%) or a percent string like \"5%\""
                )))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Share, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden vectors: (slot, salt, key, bucket, arm_bucket).
    ///
    /// FROZEN. If this test fails, the bucketing changed and every user would be reshuffled
    /// between stable and canary (and between A/B arms) on upgrade. Do not update the table: fix
    /// the code. The values were cross-checked with an independent XXH3 implementation (the
    /// Python `xxhash` package: `xxh3_64_intdigest(b"slot\0salt\0key", seed) % 10000`).
    const GOLDEN: [(&str, &str, &str, u16, u16); 10] = [
        ("llm.chat.default", "r-1", "user-1", 6942, 5771),
        ("llm.chat.default", "r-1", "user-2", 3167, 7675),
        ("llm.chat.default", "r-2", "user-1", 9575, 4831),
        ("llm.summarize", "r-1", "user-1", 8736, 1466),
        ("", "", "", 9060, 4568),
        ("slot", "salt", "", 6386, 3086),
        ("slot", "", "key", 4878, 1050),
        ("llm.chat.default", "0190c0de-7b3a-7cc0-9d2e-0a1b2c3d4e5f", "session:42", 8737, 4570),
        ("a", "b", "ключ-ユーザー", 9264, 7903),
        ("llm.agent", "salt", "k", 5051, 2665),
    ];

    /// Golden vectors of [`unit_hash`], cross-checked with the Python `xxhash` package:
    /// `xxh3_64_intdigest(b"slot\0salt\0key", 0x756e_6974_7365_6564) >> 48`. FROZEN.
    #[test]
    fn unit_hash_golden_vectors() {
        for (slot, salt, key, want) in [
            ("llm.chat.default", "r-1", "user-1", 4634),
            ("llm.chat.default", "r-1", "user-2", 8281),
            ("", "", "", 61822),
            ("a", "b", "ключ-ユーザー", 41264),
        ] {
            assert_eq!(unit_hash(slot, salt, key), want, "unit_hash({slot:?}, {salt:?}, {key:?})");
        }
    }

    #[test]
    fn golden_vectors() {
        for (slot, salt, key, want, want_arm) in GOLDEN {
            assert_eq!(bucket(slot, salt, key), want, "bucket({slot:?}, {salt:?}, {key:?})");
            assert_eq!(
                arm_bucket(slot, salt, key),
                want_arm,
                "arm_bucket({slot:?}, {salt:?}, {key:?})"
            );
        }
        // A key longer than the stack buffer takes the streaming path; frozen too.
        let long = "k".repeat(300);
        assert_eq!(bucket("llm.agent", "salt", &long), 5991);
        assert_eq!(arm_bucket("llm.agent", "salt", &long), 2060);
    }

    #[test]
    fn streaming_path_equals_one_shot() {
        for n in [0usize, 1, 100, 186, 187, 188, 189, 190, 191, 192, 193, 240, 241, 1000, 5000] {
            let key = "x".repeat(n);
            let joined = format!("slot\0salt\0{key}");
            let one_shot = (xxh3_64_with_seed(joined.as_bytes(), BUCKET_SEED) % 10_000) as u16;
            assert_eq!(bucket("slot", "salt", &key), one_shot, "key length {n}");
        }
    }

    #[test]
    fn prefixed_input_equals_the_public_hashes() {
        let cases = [("llm.chat.default", "r-1"), ("", ""), ("a", "b"), ("s", &*"x".repeat(200))];
        for (slot, salt) in cases {
            let prefix = StickyPrefix::new(slot, salt);
            for n in [0usize, 1, 7, 40, 150, 180, 181, 189, 190, 191, 192, 193, 300, 1000] {
                let key = "k".repeat(n);
                let mut buf = [0; JOIN_BYTES];
                let input = prefix.join(key.as_bytes(), &mut buf);
                let what = format!("slot {slot:?}, salt of {} bytes, key of {n}", salt.len());
                assert_eq!(input.bucket(), bucket(slot, salt, &key), "{what}");
                assert_eq!(input.arm_bucket(), arm_bucket(slot, salt, &key), "{what}");
                assert_eq!(input.unit(), unit_hash(slot, salt, &key), "{what}");
            }
        }
    }

    #[test]
    fn share_parsing() {
        assert_eq!(Share::from_percent(5.0).unwrap().basis_points(), 500);
        assert_eq!(Share::from_percent(0.01).unwrap().basis_points(), 1);
        assert_eq!(Share::from_percent(37.9).unwrap().basis_points(), 3790);
        assert_eq!(Share::from_percent(100.0).unwrap(), Share::FULL);
        for bad in [100.01, -1.0, f64::NAN, f64::INFINITY, 0.005] {
            assert_eq!(Share::from_percent(bad).unwrap_err().code(), "PARSE_ERROR", "{bad}");
        }
        assert!(Share::from_basis_points(10_001).is_err());
        assert_eq!("5%".parse::<Share>().unwrap().basis_points(), 500);
        assert_eq!(" 0.5 % ".parse::<Share>().unwrap().basis_points(), 50);
        assert!("150%".parse::<Share>().is_err());
        assert!("five".parse::<Share>().is_err());
        for (bp, text) in
            [(500, "5%"), (1, "0.01%"), (50, "0.5%"), (3790, "37.9%"), (10_000, "100%")]
        {
            assert_eq!(Share::from_basis_points(bp).unwrap().to_string(), text);
        }
    }

    #[test]
    fn share_serde() {
        let s: Share = serde_json::from_str("500").unwrap();
        assert_eq!(s.basis_points(), 500);
        assert_eq!(serde_json::to_string(&s).unwrap(), "500");
        let s: Share = serde_json::from_str("\"2.5%\"").unwrap();
        assert_eq!(s.basis_points(), 250);
        for bad in ["10001", "-5", "5.0", "\"101%\"", "70000"] {
            assert!(serde_json::from_str::<Share>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn buckets_are_in_range_and_uniform() {
        // 20,000 keys over ten equal ranges of buckets: each gets 2,000 ± binomial noise
        // (sd ≈ 42; the band is ±5 sd). Monotone ramps are a property of the router
        // (`tests/properties.rs`), which uses these buckets.
        let mut deciles = [0u32; 10];
        for i in 0..20_000 {
            let b = bucket("slot", "salt", &format!("user-{i}"));
            assert!(b < BUCKETS);
            deciles[usize::from(b / (BUCKETS / 10))] += 1;
        }
        for (d, &c) in deciles.iter().enumerate() {
            assert!((1790..=2210).contains(&c), "decile {d}: {c} of 20000");
        }
    }
}
