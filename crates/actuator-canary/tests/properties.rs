//! Property tests: shares within binomial bounds for every strategy, monotone ramps, salt
//! independence, round-robin exactness, overrides beating strategies, A/B arm stability.

use std::collections::BTreeMap;

use actuator_canary::{
    Arm, EvalContext, GeoRules, Reason, Rollout, Router, Share, SlotRoute, SplitStrategy, Variant,
    VersionedConfig, bucket,
};
use proptest::prelude::*;
use serde_json::json;

const SLOT: &str = "llm.chat.default";

fn stable() -> VersionedConfig {
    VersionedConfig::new(1, json!({"model": "stable"}))
}

fn candidate() -> VersionedConfig {
    VersionedConfig::new(2, json!({"model": "candidate"}))
}

fn router_with(rollout: Rollout) -> Router {
    let router = Router::new();
    router.update_slot(SLOT, SlotRoute::stable(stable()).with_rollout(rollout)).unwrap();
    router
}

/// |observed − n·p| ≤ 4.5 σ (+1 for discreteness).
fn assert_binomial(observed: usize, n: usize, p: f64, what: &str) {
    let mean = n as f64 * p;
    let sigma = (n as f64 * p * (1.0 - p)).sqrt();
    let dev = (observed as f64 - mean).abs();
    assert!(
        dev <= 4.5 * sigma + 1.0,
        "{what}: observed {observed} of {n}, expected {mean:.1} ± {:.1}",
        4.5 * sigma
    );
}

fn key(base: u64, i: usize) -> String {
    format!("user-{base:x}-{i}")
}

fn count_canary(router: &Router, n: usize, base: u64) -> usize {
    (0..n)
        .filter(|&i| {
            let r = router.resolve(SLOT, &EvalContext::with_key(key(base, i))).unwrap();
            r.variant == Variant::Canary
        })
        .count()
}

fn share_strategy() -> impl Strategy<Value = (u16, u64)> {
    (0u16..=10_000, any::<u64>())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn consistent_hash_share_is_binomial((bp, base) in share_strategy()) {
        let share = Share::from_basis_points(bp).unwrap();
        let router = router_with(Rollout::canary("r", candidate()).with_share(share).with_salt(&format!("s{base}")));
        let n = 20_000;
        assert_binomial(count_canary(&router, n, base), n, share.as_fraction(), "consistent_hash");
    }

    #[test]
    fn weighted_random_share_is_binomial((bp, base) in share_strategy()) {
        let share = Share::from_basis_points(bp).unwrap();
        let router = router_with(
            Rollout::canary("r", candidate()).with_share(share).with_strategy(SplitStrategy::WeightedRandom),
        );
        let n = 20_000;
        assert_binomial(count_canary(&router, n, base), n, share.as_fraction(), "weighted_random");
    }

    #[test]
    fn round_robin_is_exact_in_every_run((bp, start) in (0u16..=10_000, 0usize..30_000), len in 1usize..30_000) {
        let share = Share::from_basis_points(bp).unwrap();
        let router = router_with(
            Rollout::canary("r", candidate()).with_share(share).with_strategy(SplitStrategy::RoundRobin),
        );
        let ctx = EvalContext::new();
        let decisions: Vec<bool> = (0..start + len)
            .map(|_| router.resolve(SLOT, &ctx).unwrap().variant == Variant::Canary)
            .collect();
        // Any prefix and any run of consecutive requests is within 1 of exact.
        let p = share.as_fraction();
        let prefix = decisions[..start + len].iter().filter(|&&c| c).count() as f64;
        prop_assert!((prefix - (start + len) as f64 * p).abs() < 1.0 + 1e-9);
        let run = decisions[start..].iter().filter(|&&c| c).count() as f64;
        prop_assert!((run - len as f64 * p).abs() < 1.0 + 1e-9, "run {run} of {len} at {p}");
        // When the share divides the window, every aligned window is exact (5% → 1 in 20).
        let g = gcd(u64::from(bp), 10_000) as usize;
        let window = 10_000 / g;
        if window <= decisions.len() {
            for w in decisions.chunks_exact(window) {
                prop_assert_eq!(w.iter().filter(|&&c| c).count(), usize::from(bp) / g);
            }
        }
    }

    #[test]
    fn geographic_shares_are_binomial_per_region((eu, first, default) in (0u16..=10_000, 0u16..=10_000, 0u16..=10_000), base in any::<u64>()) {
        let mut geo = GeoRules::default();
        geo.shares.insert("eu".into(), Share::from_basis_points(eu).unwrap());
        geo.first.insert("nz".into());
        geo.first_share = Share::from_basis_points(first).unwrap();
        geo.default_share = Some(Share::from_basis_points(default).unwrap());
        geo.excluded.insert("gov".into());
        let router = router_with(
            Rollout::canary("r", candidate())
                .with_share(Share::FULL)
                .with_strategy(SplitStrategy::Geographic(geo)),
        );
        let n = 8_000;
        for (region, bp) in [(Some("eu"), eu), (Some("nz"), first), (Some("mars"), default), (None, default), (Some("gov"), 0)] {
            let hits = (0..n)
                .filter(|&i| {
                    let mut ctx = EvalContext::with_key(key(base, i));
                    if let Some(r) = region {
                        ctx = ctx.attr("region", r);
                    }
                    router.resolve(SLOT, &ctx).unwrap().variant == Variant::Canary
                })
                .count();
            assert_binomial(hits, n, f64::from(bp) / 10_000.0, &format!("region {region:?}"));
        }
    }

    #[test]
    fn ab_arms_are_binomial_and_stable_across_ramps(w in 1u16..10_000, (s1, s2) in (0u16..=10_000, 0u16..=10_000), base in any::<u64>()) {
        let (lo, hi) = (s1.min(s2), s1.max(s2));
        let arms = vec![
            Arm::new("a", Share::from_basis_points(w).unwrap(), stable()),
            Arm::new("b", Share::from_basis_points(10_000 - w).unwrap(), candidate()),
        ];
        let at = |bp: u16| router_with(Rollout::ab_test("ab", arms.clone()).with_share(Share::from_basis_points(bp).unwrap()));
        let (r_lo, r_hi) = (at(lo), at(hi));
        let n = 6_000;
        let mut in_hi = 0;
        let mut arm_a = 0;
        for i in 0..n {
            let ctx = EvalContext::with_key(key(base, i));
            let a = r_lo.resolve(SLOT, &ctx).unwrap();
            let b = r_hi.resolve(SLOT, &ctx).unwrap();
            if let Variant::Arm(_) = a.variant {
                // In at the lower share ⇒ in at the higher share, in the same arm.
                prop_assert_eq!(&a.variant, &b.variant);
            }
            if let Variant::Arm(name) = &b.variant {
                in_hi += 1;
                arm_a += usize::from(&**name == "a");
            }
        }
        assert_binomial(in_hi, n, f64::from(hi) / 10_000.0, "a/b admitted");
        if in_hi > 0 {
            assert_binomial(arm_a, in_hi, f64::from(w) / 10_000.0, "arm a");
        }
    }

    #[test]
    fn ramps_are_monotone(k in ".{0,40}", (s1, s2) in (0u16..=10_000, 0u16..=10_000), salt in "[a-z0-9-]{1,20}") {
        let (lo, hi) = (s1.min(s2), s1.max(s2));
        let router = Router::new();
        let phase = |bp: u16, idx: u32| {
            let r = Rollout::canary("r", candidate())
                .with_salt(&salt)
                .with_phase(idx)
                .with_share(Share::from_basis_points(bp).unwrap());
            router.update_slot(SLOT, SlotRoute::stable(stable()).with_rollout(r)).unwrap();
            let ctx = EvalContext::with_key(k.clone());
            match router.resolve(SLOT, &ctx) {
                Ok(res) => Some(res.variant == Variant::Canary),
                // An empty key is no key.
                Err(e) => { assert!(k.is_empty(), "{e}"); None }
            }
        };
        let in_lo = phase(lo, 0);
        let in_hi = phase(hi, 1);
        if in_lo == Some(true) {
            prop_assert_eq!(in_hi, Some(true));
        }
    }

    #[test]
    fn salts_are_independent((s1, s2) in (500u16..=9_500, 500u16..=9_500), base in any::<u64>()) {
        let n = 20_000;
        let (p1, p2) = (f64::from(s1) / 1e4, f64::from(s2) / 1e4);
        let both = (0..n)
            .filter(|&i| {
                let k = key(base, i);
                bucket(SLOT, "rollout-1", &k) < s1 && bucket(SLOT, "rollout-2", &k) < s2
            })
            .count();
        assert_binomial(both, n, p1 * p2, "overlap of two salts");
    }

    #[test]
    fn overrides_beat_every_strategy(strategy in prop_oneof![
        Just(SplitStrategy::ConsistentHash),
        Just(SplitStrategy::WeightedRandom),
        Just(SplitStrategy::RoundRobin),
        Just(SplitStrategy::Geographic(GeoRules { excluded: ["eu".to_string()].into(), ..GeoRules::default() })),
    ], bp in 0u16..=10_000, pinned in "[a-z]{1,12}", base in any::<u64>()) {
        let share = Share::from_basis_points(bp).unwrap();
        let rollout = Rollout::canary("r", candidate())
            .with_share(share)
            .with_strategy(strategy)
            .pin_key(&pinned, Variant::Canary)
            .pin_attribute("tenant", json!("internal"), Variant::Stable);
        let router = router_with(rollout);
        let r = router.resolve(SLOT, &EvalContext::with_key(pinned).attr("region", "eu")).unwrap();
        prop_assert_eq!(r.variant, Variant::Canary);
        prop_assert_eq!(r.reason, Reason::Override);
        prop_assert_eq!(r.reason.ofrep(), "TARGETING_MATCH");
        for i in 0..200 {
            let ctx = EvalContext::with_key(key(base, i)).attr("tenant", "internal").attr("region", "eu");
            let r = router.resolve(SLOT, &ctx).unwrap();
            prop_assert_eq!(r.variant, Variant::Stable);
            prop_assert_eq!(r.reason, Reason::Override);
            prop_assert_eq!(r.config.version, 1);
        }
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[test]
fn three_arms_split_by_weight() {
    let weights = [5_000u16, 3_000, 2_000];
    let arms: Vec<Arm> = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            Arm::new(
                &format!("arm{i}"),
                Share::from_basis_points(w).unwrap(),
                VersionedConfig::new(10 + i as u64, json!(i)),
            )
        })
        .collect();
    for strategy in
        [SplitStrategy::ConsistentHash, SplitStrategy::WeightedRandom, SplitStrategy::RoundRobin]
    {
        let rr = strategy == SplitStrategy::RoundRobin;
        let router = router_with(
            Rollout::ab_test("ab", arms.clone()).with_share(Share::FULL).with_strategy(strategy),
        );
        let n = 30_000;
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for i in 0..n {
            let r = router.resolve(SLOT, &EvalContext::with_key(key(7, i))).unwrap();
            *counts.entry(r.variant.name().to_owned()).or_default() += 1;
            assert_eq!(r.config.version, 10 + r.variant.name()[3..].parse::<u64>().unwrap());
        }
        for (i, &w) in weights.iter().enumerate() {
            let got = counts.get(&format!("arm{i}")).copied().unwrap_or(0);
            let want = n as f64 * f64::from(w) / 1e4;
            if rr {
                // Round robin: a low-discrepancy sequence, far tighter than binomial.
                assert!((got as f64 - want).abs() <= 10.0, "round robin arm{i}: {got} vs {want}");
            } else {
                assert_binomial(got, n, f64::from(w) / 1e4, &format!("arm{i}"));
            }
        }
    }
}
