//! Split strategies: how a rollout decides which requests enter it.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::{BUCKETS, ResolveError, Share};

/// How a rollout splits traffic between stable and the rollout's side.
///
/// Serialized with a `type` tag: `{"type": "consistent_hash"}`,
/// `{"type": "geographic", "shares": {"eu-west": 500}, "excluded": ["us-gov"]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SplitStrategy {
    /// A fresh random draw per request at the rollout's share (not sticky; a fast thread-local
    /// generator, no lock).
    WeightedRandom,
    /// Sticky by the stickiness key through the frozen [`bucket`](crate::bucket) (the default).
    #[default]
    ConsistentHash,
    /// Exact proportions in request order: the n-th request (0-based) of the rollout is admitted
    /// iff `⌊(n+1)·s/10000⌋ > ⌊n·s/10000⌋` (a Bresenham spread). At 5% that is exactly one in
    /// every 20, and any run of k consecutive requests holds ⌊k·s⌋ or ⌈k·s⌉ admissions. One
    /// lock-free atomic counter per rollout.
    RoundRobin,
    /// Per-region shares read from a context attribute, sticky within a region.
    Geographic(GeoRules),
}

impl SplitStrategy {
    /// Reads the split a rollout request names: its name alone (`"weighted_random"`), or the
    /// tagged object (`{"type": "geographic", "shares": {...}}`).
    ///
    /// # Errors
    /// An unknown name, or an object that does not match a split, with serde's message.
    pub fn from_request(v: &serde_json::Value) -> Result<Self, serde_json::Error> {
        match v {
            serde_json::Value::String(name) => {
                serde_json::from_value(serde_json::json!({ "type": name }))
            }
            other => serde_json::from_value(other.clone()),
        }
    }

    /// Whether the strategy needs a stickiness key (consistent hash and geographic do).
    #[must_use]
    pub const fn is_sticky(&self) -> bool {
        matches!(self, Self::ConsistentHash | Self::Geographic(_))
    }

    /// The snake_case name of the strategy, as serialized in its `type` tag.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            Self::WeightedRandom => "weighted_random",
            Self::ConsistentHash => "consistent_hash",
            Self::RoundRobin => "round_robin",
            Self::Geographic(_) => "geographic",
        }
    }
}

fn default_region_attribute() -> String {
    "region".to_owned()
}

/// Rules of the [`SplitStrategy::Geographic`] strategy.
///
/// Precedence for a request's region: `excluded` (always stable) over `shares` (the region's own
/// share) over `first` (regions going first, at `first_share`), and otherwise — unknown region or
/// no region in the context — `default_share`, or the rollout's share when that is unset.
/// Regions match exactly (case-sensitive). A region may appear in only one of the three lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeoRules {
    /// The context attribute holding the region (default `region`); it must be a string.
    #[serde(default = "default_region_attribute")]
    pub attribute: String,
    /// Per-region shares.
    #[serde(default)]
    pub shares: BTreeMap<String, Share>,
    /// Regions kept on stable whatever the share.
    #[serde(default)]
    pub excluded: BTreeSet<String>,
    /// Regions going first, all at `first_share`.
    #[serde(default)]
    pub first: BTreeSet<String>,
    /// The share of the `first` regions.
    #[serde(default)]
    pub first_share: Share,
    /// The share of unknown or missing regions; `None` means the rollout's share.
    #[serde(default)]
    pub default_share: Option<Share>,
}

impl Default for GeoRules {
    fn default() -> Self {
        Self {
            attribute: default_region_attribute(),
            shares: BTreeMap::new(),
            excluded: BTreeSet::new(),
            first: BTreeSet::new(),
            first_share: Share::ZERO,
            default_share: None,
        }
    }
}

/// What the geographic rules say about one region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GeoRule {
    /// Always stable.
    Excluded,
    /// A listed region (own share or going first) at this share.
    Listed(Share),
    /// Unknown or missing region, at this share.
    Default(Share),
}

impl GeoRules {
    /// Checks that the attribute is named and that no region is listed twice.
    ///
    /// # Errors
    /// [`ResolveError::Parse`] naming the problem.
    pub fn validate(&self) -> Result<(), ResolveError> {
        if self.attribute.is_empty() {
            return Err(ResolveError::Parse(
                "geographic rules need a region attribute name: set `attribute` (default `region`)"
                    .into(),
            ));
        }
        let lists: [(&str, Vec<&String>); 3] = [
            ("shares", self.shares.keys().collect()),
            ("excluded", self.excluded.iter().collect()),
            ("first", self.first.iter().collect()),
        ];
        for (i, (name_a, a)) in lists.iter().enumerate() {
            for (name_b, b) in &lists[i + 1..] {
                if let Some(region) = a.iter().find(|r| b.contains(r)) {
                    return Err(ResolveError::Parse(format!(
                        "region `{region}` is in both `{name_a}` and `{name_b}`: list it in one only"
                    )));
                }
            }
        }
        Ok(())
    }

    pub(crate) fn rule(&self, region: Option<&str>, rollout_share: Share) -> GeoRule {
        let default = GeoRule::Default(self.default_share.unwrap_or(rollout_share));
        let Some(region) = region else { return default };
        if self.excluded.contains(region) {
            GeoRule::Excluded
        } else if let Some(share) = self.shares.get(region) {
            GeoRule::Listed(*share)
        } else if self.first.contains(region) {
            GeoRule::Listed(self.first_share)
        } else {
            default
        }
    }
}

/// The lock-free request counter of a round-robin rollout.
///
/// Clones share the count, so a route copied into a new routing table (copy-on-write) keeps its
/// position. Never serialized; equality ignores it.
#[derive(Debug, Clone, Default)]
pub(crate) struct RoundRobinCounter(std::sync::Arc<AtomicU64>);

impl RoundRobinCounter {
    pub(crate) fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

impl PartialEq for RoundRobinCounter {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for RoundRobinCounter {}

/// Whether the `n`-th round-robin request (0-based) is admitted at `share`.
#[must_use]
pub(crate) fn round_robin_admits(n: u64, share: Share) -> bool {
    let w = u64::from(BUCKETS);
    let r = n % w;
    let s = u64::from(share.basis_points());
    (r + 1) * s / w > r * s / w
}

/// Stride of the arm draw for round robin: ≈ 10000/φ, coprime with 10000, so every aligned
/// window of 10,000 admitted requests visits each draw exactly once.
const ARM_STRIDE: u128 = 6_181;

/// The arm draw (0..10000) of the admitted `n`-th round-robin request at `share`.
#[must_use]
pub(crate) fn round_robin_arm_draw(n: u64, share: Share) -> u16 {
    let w = u128::from(BUCKETS);
    // Number of admissions up to and including request n, minus one: this request's index
    // among admitted ones.
    let k = ((u128::from(n) + 1) * u128::from(share.basis_points()) / w).saturating_sub(1);
    // < 10_000, so the cast is exact.
    ((k % w) * ARM_STRIDE % w) as u16
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(rng_seed());
}

fn rng_seed() -> u64 {
    static STREAM: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let stream = STREAM.fetch_add(1, Ordering::Relaxed);
    let local = 0u8;
    let addr = std::ptr::addr_of!(local) as u64;
    splitmix64(nanos ^ splitmix64(stream) ^ addr.rotate_left(32))
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform draw in `0..10_000` from a thread-local wyrand generator (no lock, no allocation).
#[must_use]
pub(crate) fn random_draw() -> u16 {
    RNG.with(|cell| {
        let s = cell.get().wrapping_add(0xa076_1d64_78bd_642f);
        cell.set(s);
        let t = u128::from(s) * u128::from(s ^ 0xe703_7ed1_a0b4_28db);
        let r = ((t >> 64) as u64) ^ (t as u64);
        // Multiply-shift maps r uniformly onto 0..10_000; the result is < 10_000.
        ((u128::from(r) * u128::from(BUCKETS)) >> 64) as u16
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_is_named_or_tagged() {
        use serde_json::json;
        assert_eq!(
            SplitStrategy::from_request(&json!("weighted_random")).unwrap(),
            SplitStrategy::WeightedRandom
        );
        assert_eq!(
            SplitStrategy::from_request(&json!({"type": "round_robin"})).unwrap(),
            SplitStrategy::RoundRobin
        );
        let err = SplitStrategy::from_request(&json!("fastest")).unwrap_err().to_string();
        assert!(err.contains("fastest"), "{err}");
    }

    #[test]
    fn round_robin_five_percent_is_one_in_twenty() {
        let s = Share::from_basis_points(500).unwrap();
        for window in 0..50u64 {
            let hits =
                (window * 20..window * 20 + 20).filter(|&n| round_robin_admits(n, s)).count();
            assert_eq!(hits, 1, "window {window}");
        }
        assert!(!round_robin_admits(0, Share::ZERO));
        assert!(round_robin_admits(0, Share::FULL));
    }

    #[test]
    fn round_robin_arm_draws_are_a_permutation() {
        let s = Share::from_basis_points(3_333).unwrap();
        let mut seen = vec![false; 10_000];
        let mut admitted = 0;
        let mut n = 0u64;
        while admitted < 10_000 {
            if round_robin_admits(n, s) {
                let d = usize::from(round_robin_arm_draw(n, s));
                assert!(!seen[d], "draw {d} repeated");
                seen[d] = true;
                admitted += 1;
            }
            n += 1;
        }
        assert!(seen.iter().all(|&b| b));
    }

    #[test]
    fn random_draws_are_in_range() {
        assert!((0..10_000).map(|_| random_draw()).all(|d| d < BUCKETS));
    }

    #[test]
    fn geo_rules_precedence_and_validation() {
        let mut g = GeoRules::default();
        g.shares.insert("eu".into(), Share::from_basis_points(100).unwrap());
        g.excluded.insert("gov".into());
        g.first.insert("nz".into());
        g.first_share = Share::from_basis_points(5_000).unwrap();
        let base = Share::from_basis_points(10).unwrap();
        assert_eq!(g.rule(Some("gov"), base), GeoRule::Excluded);
        assert_eq!(
            g.rule(Some("eu"), base),
            GeoRule::Listed(Share::from_basis_points(100).unwrap())
        );
        assert_eq!(g.rule(Some("nz"), base), GeoRule::Listed(g.first_share));
        assert_eq!(g.rule(Some("mars"), base), GeoRule::Default(base));
        assert_eq!(g.rule(None, base), GeoRule::Default(base));
        g.validate().unwrap();
        g.first.insert("gov".into());
        assert_eq!(g.validate().unwrap_err().code(), "PARSE_ERROR");
    }
}
