//! Do assignment units come back? The question that decides how phases combine.
//!
//! Under a sticky split every request carries its unit's 16-bit hash. When units are
//! people who return (a user, a tenant), the canary's users of one phase are again canary
//! users in the next, so the phases' comparisons share their users' traits and their
//! e-values are not independent: multiplying them, or pooling their estimates as if they
//! were, spends more than the budget (statistics.md §5.11.1). When every request has its own
//! key (anonymous traffic keyed by request), phases are independent and the product is valid.
//!
//! [`UnitRecurrence`] tells the two apart from the first requests, without looking at any
//! outcome: it marks every unit hash seen in a 65,536-bit map (8 KiB) and, for each request,
//! compares "this hash was seen before" with the chance of that under distinct keys, which
//! is the map's fill fraction at that moment. The excess
//! `r = (seen − expected) / (checked − expected)` estimates the share of requests from units
//! that really return. After [`RECURRENCE_CHECKS`] requests (seconds of traffic, before any
//! clustered test has burned in) it decides: [`UnitsRecur::Yes`] when `r ≥`
//! [`RECURRENCE_SHARE`], otherwise [`UnitsRecur::No`]. A `No` stays under watch while the map
//! is less than half full, so users who come back only after minutes still turn it into a
//! `Yes` (then the phases already multiplied keep what they spent: the budget holds only
//! approximately in that case); a `Yes` is final. The map is freed once the answer is final.
//! The decision depends on which units arrived, never on how they fared, so choosing the
//! combination rule by it keeps either rule's guarantee.

use serde::{Deserialize, Serialize};

/// Requests the detector checks before deciding.
pub const RECURRENCE_CHECKS: u64 = 500;

/// Excess share of returning units from which phases are treated as sharing units.
pub const RECURRENCE_SHARE: f64 = 0.05;

/// Bits in the map: one per 16-bit unit hash.
const UNIT_SPACE: usize = 1 << 16;

/// What the detector has found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitsRecur {
    /// Too few requests with a unit so far.
    #[default]
    Undetermined,
    /// Units return: phases share users and must not multiply their evidence.
    Yes,
    /// Units do not return (distinct keys): phases are independent.
    No,
}

/// The detector of returning units (module comment). 8 KiB while undetermined, a few bytes
/// after.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UnitRecurrence {
    /// The decision, once taken.
    decided: UnitsRecur,
    /// Requests checked so far.
    checked: u64,
    /// Of them, requests whose unit hash was already in the map.
    seen: u64,
    /// Σ over checked requests of the map's fill fraction before the request.
    expected: f64,
    /// Distinct hashes in the map.
    distinct: u32,
    /// The answer is final (a `Yes`, or a `No` watched until the map was half full).
    #[serde(default)]
    settled: bool,
    /// The map; not persisted (after a restart an unsettled detector watches new requests
    /// only, which is as valid: the decision never depends on outcomes).
    #[serde(skip)]
    bits: Option<Box<[u64]>>,
}

impl UnitRecurrence {
    /// A detector with nothing seen.
    pub fn new() -> Self {
        Self::default()
    }

    /// The decision so far.
    pub const fn decision(&self) -> UnitsRecur {
        self.decided
    }

    /// The excess share of returning units among the checked requests (`None` before any).
    pub fn excess_share(&self) -> Option<f64> {
        let room = self.checked as f64 - self.expected;
        (self.checked > 0 && room > 0.0)
            .then(|| ((self.seen as f64 - self.expected) / room).clamp(0.0, 1.0))
    }

    /// Notes one request of the unit hashed to `unit`; decides after [`RECURRENCE_CHECKS`]
    /// (module comment). Returns the decision.
    pub fn observe(&mut self, unit: u16) -> UnitsRecur {
        if self.settled {
            return self.decided;
        }
        let bits = self.bits.get_or_insert_with(|| vec![0_u64; UNIT_SPACE / 64].into_boxed_slice());
        let (word, bit) = (usize::from(unit) / 64, 1_u64 << (unit % 64));
        self.expected += f64::from(self.distinct) / UNIT_SPACE as f64;
        self.checked += 1;
        if bits[word] & bit == 0 {
            bits[word] |= bit;
            self.distinct += 1;
        } else {
            self.seen += 1;
        }
        if self.checked >= RECURRENCE_CHECKS {
            let share = self.excess_share().unwrap_or(0.0);
            self.decided = if share >= RECURRENCE_SHARE { UnitsRecur::Yes } else { UnitsRecur::No };
            self.settled =
                self.decided == UnitsRecur::Yes || self.distinct as usize >= UNIT_SPACE / 2;
            if self.settled {
                self.bits = None;
            }
        }
        self.decided
    }

    /// Approximate bytes held.
    pub fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.bits.as_ref().map_or(0, |b| b.len() * 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 64-bit mixer (splitmix64's finaliser) for test keys.
    fn mix(mut x: u64) -> u64 {
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }

    #[test]
    fn distinct_keys_are_independent() {
        // Every request its own key: hashes collide only by chance, which is expected.
        let mut d = UnitRecurrence::new();
        for i in 0..RECURRENCE_CHECKS - 1 {
            assert_eq!(d.observe((mix(i) >> 48) as u16), UnitsRecur::Undetermined);
        }
        assert_eq!(d.observe((mix(9_999) >> 48) as u16), UnitsRecur::No);
        assert!(d.excess_share().unwrap() < 0.01, "{:?}", d.excess_share());
        // watched until the map is half full (about 45,000 distinct keys), then freed
        for i in 0..60_000 {
            assert_eq!(d.observe((mix(100_000 + i) >> 48) as u16), UnitsRecur::No);
        }
        assert!(d.excess_share().unwrap() < 0.01, "{:?}", d.excess_share());
        assert!(d.approx_bytes() < 200, "the map is freed once the answer is final");
    }

    #[test]
    fn returning_users_recur() {
        // 300 users, each request from one of them: most requests repeat a seen unit.
        let mut d = UnitRecurrence::new();
        let mut last = UnitsRecur::Undetermined;
        for i in 0..RECURRENCE_CHECKS {
            last = d.observe((mix(mix(i) % 300) >> 48) as u16);
        }
        assert_eq!(last, UnitsRecur::Yes);
        assert!(d.excess_share().unwrap() > 0.3);
        // decided once: later requests do not change it
        for i in 0..10_000 {
            assert_eq!(d.observe((mix(1_000_000 + i) >> 48) as u16), UnitsRecur::Yes);
        }
    }

    #[test]
    fn users_who_return_after_a_while_turn_a_no_into_a_yes() {
        // 2,000 users who each come back once, 1,000 requests later: too late for the
        // first decision, not for the watch.
        let mut d = UnitRecurrence::new();
        let user = |i: u64| (mix(i % 2_000 + 7) >> 48) as u16;
        for i in 0..RECURRENCE_CHECKS {
            d.observe(user(i));
        }
        assert_eq!(d.decision(), UnitsRecur::No);
        for i in RECURRENCE_CHECKS..4_000 {
            d.observe(user(i));
        }
        assert_eq!(d.decision(), UnitsRecur::Yes, "{:?}", d.excess_share());
    }

    #[test]
    fn a_heavy_tail_of_users_recurs_though_most_users_are_new() {
        // 100,000 users; 30 % of requests come from the 100 most active ones.
        let mut d = UnitRecurrence::new();
        for i in 0..RECURRENCE_CHECKS {
            let r = mix(i);
            let user = if r % 10 < 3 { r % 100 } else { 100 + r % 99_900 };
            d.observe((mix(user) >> 48) as u16);
        }
        assert_eq!(d.decision(), UnitsRecur::Yes, "{:?}", d.excess_share());
    }

    #[test]
    fn the_decision_survives_a_round_trip_and_the_map_is_not_stored() {
        let mut d = UnitRecurrence::new();
        for i in 0..10 {
            d.observe(i);
        }
        let text = serde_json::to_string(&d).unwrap();
        assert!(text.len() < 200, "{text}");
        let back: UnitRecurrence = serde_json::from_str(&text).unwrap();
        assert_eq!(back.decision(), UnitsRecur::Undetermined);
        let mut d = UnitRecurrence::new();
        for _ in 0..RECURRENCE_CHECKS {
            d.observe(7);
        }
        let back: UnitRecurrence =
            serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(back.decision(), UnitsRecur::Yes);
    }
}
