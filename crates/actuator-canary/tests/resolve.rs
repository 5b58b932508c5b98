//! Scenario tests of resolution, bad input, the router's snapshots and the wire formats.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actuator_canary::{
    Arm, EvalContext, GeoRules, Reason, ResolveError, Rollout, RolloutMode, Router, RoutingTable,
    Share, SlotRoute, SplitStrategy, StickinessKey, Variant, VersionedConfig, bucket, unit_hash,
};
use serde_json::json;

const SLOT: &str = "llm.chat.default";

fn stable() -> VersionedConfig {
    VersionedConfig::new(1, json!({"model": "stable"}))
}

fn candidate() -> VersionedConfig {
    VersionedConfig::new(2, json!({"model": "candidate"}))
}

fn pct(p: f64) -> Share {
    Share::from_percent(p).unwrap()
}

fn router_with(rollout: Rollout) -> Router {
    let router = Router::new();
    router.update_slot(SLOT, SlotRoute::stable(stable()).with_rollout(rollout)).unwrap();
    router
}

#[test]
fn no_rollout_is_static_and_shares_the_value() {
    let router = Router::new();
    let route = SlotRoute::stable(stable());
    let value = route.stable.value.clone();
    router.update_slot(SLOT, route).unwrap();
    let r = router.resolve(SLOT, &EvalContext::new()).unwrap();
    assert_eq!(r.variant, Variant::Stable);
    assert_eq!(r.reason, Reason::NoRollout);
    assert_eq!(r.reason.ofrep(), "STATIC");
    assert_eq!((r.config.version, r.rollout_id, r.phase, r.bucket), (1, None, None, None));
    assert!(Arc::ptr_eq(&r.config.value, &value), "resolution must share, not copy, the config");
}

#[test]
fn canary_split_reports_bucket_rollout_and_phase() {
    let router =
        router_with(Rollout::canary("r-1", candidate()).with_share(pct(50.0)).with_phase(3));
    for i in 0..200 {
        let k = format!("user-{i}");
        let r = router.resolve(SLOT, &EvalContext::with_key(k.clone())).unwrap();
        let b = bucket(SLOT, "r-1", &k);
        assert_eq!(r.bucket, Some(b));
        assert_eq!(r.variant == Variant::Canary, b < 5_000);
        assert_eq!(r.config.version, if b < 5_000 { 2 } else { 1 });
        assert_eq!(
            (r.rollout_id.as_deref(), r.phase, r.reason),
            (Some("r-1"), Some(3), Reason::Split)
        );
        let meta = r.ofrep_metadata();
        assert_eq!(meta["rolloutId"], json!("r-1"));
        assert_eq!(meta["bucket"], json!(b));
    }
}

#[test]
fn shadow_serves_stable_and_carries_the_candidate() {
    let router = router_with(Rollout::shadow("r-s", candidate()).with_share(Share::FULL));
    let r = router.resolve(SLOT, &EvalContext::with_key("u")).unwrap();
    assert_eq!(r.variant, Variant::Shadow);
    assert_eq!(r.variant_name(), "shadow");
    assert_eq!(r.config.version, 1);
    assert_eq!(r.shadow.as_ref().map(|s| s.candidate.version), Some(2));
    let router = router_with(Rollout::shadow("r-s", candidate()).with_share(Share::ZERO));
    let r = router.resolve(SLOT, &EvalContext::with_key("u")).unwrap();
    assert_eq!((r.variant, r.shadow), (Variant::Stable, None));
}

#[test]
fn stickiness_can_use_session_or_conversation() {
    let router = router_with(
        Rollout::canary("r", candidate())
            .with_share(pct(50.0))
            .with_stickiness(StickinessKey::Session),
    );
    for i in 0..100 {
        // Different users in one session get the same answer.
        let a = router.resolve(SLOT, &EvalContext::with_key("alice").attr("sessionId", i)).unwrap();
        let b = router.resolve(SLOT, &EvalContext::with_key("bob").attr("sessionId", i)).unwrap();
        assert_eq!(a.variant, b.variant);
        assert_eq!(a.bucket, Some(bucket(SLOT, "r", &i.to_string())));
    }
    let e = router.resolve(SLOT, &EvalContext::with_key("alice")).unwrap_err();
    assert_eq!(e.code(), "TARGETING_KEY_MISSING");
    assert!(e.to_string().contains("sessionId"), "{e}");
}

#[test]
fn geographic_excluded_first_and_default() {
    let geo = GeoRules {
        excluded: ["us-gov".to_owned()].into(),
        first: ["nz".to_owned()].into(),
        first_share: Share::FULL,
        ..GeoRules::default()
    };
    let router = router_with(
        Rollout::canary("r", candidate())
            .with_share(Share::ZERO)
            .with_strategy(SplitStrategy::Geographic(geo)),
    );
    // Excluded regions need no key.
    let r = router.resolve(SLOT, &EvalContext::new().attr("region", "us-gov")).unwrap();
    assert_eq!(
        (r.variant, r.reason, r.reason.ofrep()),
        (Variant::Stable, Reason::RegionExcluded, "TARGETING_MATCH")
    );
    let r = router.resolve(SLOT, &EvalContext::with_key("u").attr("region", "nz")).unwrap();
    assert_eq!((r.variant, r.reason), (Variant::Canary, Reason::Split));
    let r = router.resolve(SLOT, &EvalContext::with_key("u")).unwrap();
    assert_eq!(
        (r.variant, r.reason, r.reason.ofrep()),
        (Variant::Stable, Reason::RegionDefault, "DEFAULT")
    );
    let e = router.resolve(SLOT, &EvalContext::new().attr("region", "nz")).unwrap_err();
    assert_eq!(e.code(), "TARGETING_KEY_MISSING");
    let e = router.resolve(SLOT, &EvalContext::with_key("u").attr("region", 7)).unwrap_err();
    assert_eq!(e.code(), "INVALID_CONTEXT");
}

#[test]
fn non_sticky_strategies_need_no_key() {
    for s in [SplitStrategy::WeightedRandom, SplitStrategy::RoundRobin] {
        let router =
            router_with(Rollout::canary("r", candidate()).with_share(pct(5.0)).with_strategy(s));
        let r = router.resolve(SLOT, &EvalContext::new()).unwrap();
        assert_eq!(r.bucket, None);
    }
}

#[test]
fn bad_input_gets_the_right_ofrep_code() {
    let router = router_with(Rollout::canary("r", candidate()).with_share(pct(5.0)).pin_attribute(
        "tenant",
        json!("internal"),
        Variant::Canary,
    ));
    let code = |ctx: EvalContext| router.resolve(SLOT, &ctx).unwrap_err().code();
    assert_eq!(code(EvalContext::new()), "TARGETING_KEY_MISSING");
    assert_eq!(code(EvalContext::with_key("")), "TARGETING_KEY_MISSING");
    assert_eq!(
        code(EvalContext::with_key("u").attr("tenant", json!({"id": 1}))),
        "INVALID_CONTEXT"
    );
    assert_eq!(code(EvalContext::with_key("u").attr("tenant", json!(["a"]))), "INVALID_CONTEXT");
    // Attributes not used for targeting may be anything.
    assert!(
        router.resolve(SLOT, &EvalContext::with_key("u").attr("extra", json!({"a": [1]}))).is_ok()
    );
    let e = router.resolve("nope", &EvalContext::with_key("u")).unwrap_err();
    assert_eq!(e, ResolveError::FlagNotFound { slot: "nope".into() });
    assert_eq!(e.code(), "FLAG_NOT_FOUND");
    assert_eq!(Share::from_percent(150.0).unwrap_err().code(), "PARSE_ERROR");
    assert_eq!(EvalContext::from_json_str("[1,2]").unwrap_err().code(), "PARSE_ERROR");
    let ctx = EvalContext::from_json(json!({"targetingKey": {"a": 1}})).unwrap_err();
    assert_eq!(ctx.code(), "INVALID_CONTEXT");
}

#[test]
fn invalid_routes_are_rejected_and_change_nothing() {
    let router = router_with(Rollout::canary("r", candidate()).with_share(pct(5.0)));
    let rev = router.revision();
    let arms = |w1, w2| {
        vec![
            Arm::new("a", Share::from_basis_points(w1).unwrap(), stable()),
            Arm::new("b", Share::from_basis_points(w2).unwrap(), candidate()),
        ]
    };
    let bad_routes = [
        ("", SlotRoute::stable(stable())),
        ("a\0b", SlotRoute::stable(stable())),
        (
            SLOT,
            SlotRoute::stable(stable()).with_rollout(Rollout::ab_test("ab", arms(5_000, 4_000))),
        ),
        (
            SLOT,
            SlotRoute::stable(stable())
                .with_rollout(Rollout::ab_test("ab", arms(5_000, 5_000)[..1].to_vec())),
        ),
        (
            SLOT,
            SlotRoute::stable(stable()).with_rollout(
                Rollout::ab_test("ab", arms(5_000, 5_000)).pin_key("u", Variant::Canary),
            ),
        ),
        (
            SLOT,
            SlotRoute::stable(stable()).with_rollout(
                Rollout::ab_test("ab", arms(5_000, 5_000)).pin_key("u", Variant::Arm("zz".into())),
            ),
        ),
        (
            SLOT,
            SlotRoute::stable(stable())
                .with_rollout(Rollout::canary("r", candidate()).pin_key("u", Variant::Shadow)),
        ),
        (
            SLOT,
            SlotRoute::stable(stable())
                .with_rollout(Rollout::canary("r", candidate()).with_salt("a\0b")),
        ),
        (
            SLOT,
            SlotRoute::stable(stable()).with_rollout(
                Rollout::canary("r", candidate()).pin_attribute("t", json!([1]), Variant::Stable),
            ),
        ),
        (
            SLOT,
            SlotRoute::stable(stable()).with_rollout(
                Rollout::canary("r", candidate()).with_strategy(SplitStrategy::Geographic(
                    GeoRules {
                        excluded: ["eu".to_owned()].into(),
                        first: ["eu".to_owned()].into(),
                        ..GeoRules::default()
                    },
                )),
            ),
        ),
    ];
    for (slot, route) in bad_routes {
        let e = router.update_slot(slot, route).unwrap_err();
        assert_eq!(e.code(), "PARSE_ERROR", "{e}");
        assert_eq!(router.revision(), rev);
    }
    assert_eq!(router.remove_slot("nope").unwrap_err().code(), "FLAG_NOT_FOUND");
    assert_eq!(router.revision(), rev);
    assert_eq!(
        router.resolve(SLOT, &EvalContext::with_key("u")).unwrap().rollout_id.as_deref(),
        Some("r")
    );
}

#[test]
fn revisions_are_monotone_and_etags_follow_content() {
    let router = Router::new();
    let r1 = router.update_slot("a", SlotRoute::stable(stable())).unwrap();
    let snap1 = router.snapshot();
    let r2 = router.update_slot("b", SlotRoute::stable(candidate())).unwrap();
    let snap2 = router.snapshot();
    assert!(r2 > r1);
    assert_eq!(router.resolve("a", &EvalContext::new()).unwrap().revision, r2);
    // Slot `a` did not change, so its etag did not either; the whole-table etag did.
    assert_eq!(snap1.etag_for(["a"]), snap2.etag_for(["a"]));
    assert_ne!(snap1.etag(), snap2.etag());
    assert_ne!(snap1.etag_for(["a", "b"]), snap2.etag_for(["a", "b"]));
    // Republishing identical content bumps the revision but keeps the etag.
    let r3 = router.update_slot("b", SlotRoute::stable(candidate())).unwrap();
    assert!(r3 > r2);
    assert_eq!(router.snapshot().etag(), snap2.etag());
    // Etags depend on content only: a table built independently agrees.
    let mut t = RoutingTable::new();
    t.insert("b", SlotRoute::stable(candidate())).unwrap();
    t.insert("a", SlotRoute::stable(stable())).unwrap();
    assert_eq!(t.etag(), snap2.etag());
    let r4 = router.remove_slot("b").unwrap();
    assert!(r4 > r3);
    assert_eq!(router.snapshot().etag(), snap1.etag());
    let r5 = router.publish(RoutingTable::new()).unwrap();
    assert!(r5 > r4 && router.snapshot().is_empty());
}

#[test]
fn batch_and_bulk_resolution_use_one_snapshot() {
    let router = Router::new();
    let mut t = RoutingTable::new();
    t.insert("b", SlotRoute::stable(stable())).unwrap();
    t.insert(
        "a",
        SlotRoute::stable(stable())
            .with_rollout(Rollout::canary("r", candidate()).with_share(Share::FULL)),
    )
    .unwrap();
    let rev = router.publish(t).unwrap();
    let out = router.resolve_batch(["a", "missing", "b"], &EvalContext::with_key("u"));
    assert_eq!(out[0].as_ref().unwrap().variant, Variant::Canary);
    assert_eq!(out[1].as_ref().unwrap_err().code(), "FLAG_NOT_FOUND");
    assert_eq!(out[2].as_ref().unwrap().revision, rev);
    let all = router.resolve_all(&EvalContext::new());
    let names: Vec<&str> = all.iter().map(|(s, _)| &**s).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(all[0].1.as_ref().unwrap_err().code(), "TARGETING_KEY_MISSING");
}

#[test]
fn routes_round_trip_through_json() {
    let text = json!({
        "stable": {"version": 1, "value": {"model": "big"}},
        "rollout": {
            "id": "r-9",
            "phase": 2,
            "strategy": {"type": "geographic", "shares": {"eu": "5%"}, "excluded": ["us-gov"], "default_share": 100},
            "share": 2500,
            "stickiness": {"attribute": "orgId"},
            "mode": {"type": "canary", "candidate": {"version": 2, "value": {"model": "small"}}},
            "overrides": {"targeting_keys": {"vip": "stable"}, "attributes": [{"attribute": "tenant", "equals": "internal", "variant": "canary"}]}
        }
    });
    let route: SlotRoute = serde_json::from_value(text).unwrap();
    let r = route.rollout.as_ref().unwrap();
    assert_eq!(&*r.salt, "r-9", "salt defaults to the rollout id");
    assert_eq!(r.share, pct(25.0));
    let SplitStrategy::Geographic(g) = &r.strategy else { panic!("geographic expected") };
    assert_eq!(
        (g.attribute.as_str(), g.shares["eu"], g.default_share),
        ("region", pct(5.0), Some(pct(1.0)))
    );
    assert!(matches!(r.mode, RolloutMode::Canary { .. }));
    let back: SlotRoute = serde_json::from_value(serde_json::to_value(&route).unwrap()).unwrap();
    assert_eq!(back, route);
    // Strategy tags are snake_case.
    let s: SplitStrategy = serde_json::from_value(json!({"type": "round_robin"})).unwrap();
    assert_eq!(s, SplitStrategy::RoundRobin);
    assert_eq!(
        serde_json::to_value(SplitStrategy::WeightedRandom).unwrap(),
        json!({"type": "weighted_random"})
    );
    // Deserializing validates.
    let bad = json!({"id": "r", "mode": {"type": "ab_test", "arms": []}});
    let e = serde_json::from_value::<Rollout>(bad).unwrap_err().to_string();
    assert!(e.contains("at least 2 arms"), "{e}");
    let bad = json!({"id": "r", "share": 20000, "mode": {"type": "canary", "candidate": {"version": 2, "value": null}}});
    assert!(serde_json::from_value::<Rollout>(bad).is_err());
}

#[test]
fn readers_never_block_on_writers() {
    let router = Arc::new(router_with(Rollout::canary("r", candidate()).with_share(pct(50.0))));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (router, stop) = (router.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut phase = 0u32;
            while !stop.load(Ordering::Relaxed) {
                phase += 1;
                let share = Share::from_basis_points((phase % 10_001) as u16).unwrap();
                let r = Rollout::canary("r", candidate()).with_share(share).with_phase(phase);
                router.update_slot(SLOT, SlotRoute::stable(stable()).with_rollout(r)).unwrap();
            }
            phase
        })
    };
    let mut last = 0;
    for i in 0..20_000 {
        let r = router.resolve(SLOT, &EvalContext::with_key(format!("u{i}"))).unwrap();
        assert!(r.revision >= last, "revisions never go back");
        last = r.revision;
    }
    stop.store(true, Ordering::Relaxed);
    let phases = writer.join().unwrap();
    assert!(phases > 0);
}

#[test]
fn traffic_outside_the_phase_share_is_tagged() {
    // split at the phase share: in the experiment, with the unit hash of the key
    let router = router_with(
        Rollout::canary("r-1", candidate())
            .with_share(pct(5.0))
            .pin_attribute("tenant", json!("internal"), Variant::Canary)
            .pin_key("qa-bot", Variant::Stable),
    );
    let r = router.resolve(SLOT, &EvalContext::with_key("user-1")).unwrap();
    assert!(r.in_experiment);
    assert_eq!(r.unit, Some(unit_hash(SLOT, "r-1", "user-1")));
    assert_eq!(r.ofrep_metadata().get("inExperiment"), Some(&json!(true)));
    assert_eq!(r.ofrep_metadata().get("unit"), Some(&json!(unit_hash(SLOT, "r-1", "user-1"))));
    // an override to the canary (an internal tenant) and a pin to stable: outside
    let r = router.resolve(SLOT, &EvalContext::with_key("u2").attr("tenant", "internal")).unwrap();
    assert_eq!(
        (&r.variant, r.reason, r.in_experiment),
        (&Variant::Canary, Reason::Override, false)
    );
    assert_eq!(r.ofrep_metadata().get("inExperiment"), Some(&json!(false)));
    let r = router.resolve(SLOT, &EvalContext::with_key("qa-bot")).unwrap();
    assert_eq!((r.variant, r.in_experiment), (Variant::Stable, false));
    // no rollout: no experiment, and OFREP metadata says nothing about it
    let plain = Router::new();
    plain.update_slot(SLOT, SlotRoute::stable(stable())).unwrap();
    let r = plain.resolve(SLOT, &EvalContext::with_key("u")).unwrap();
    assert!(!r.in_experiment && r.unit.is_none());
    assert!(r.ofrep_metadata().get("inExperiment").is_none());
}

#[test]
fn region_rules_outside_the_phase_share_are_tagged() {
    let geo = GeoRules {
        excluded: ["us-gov".to_owned()].into(),
        first: ["nz".to_owned()].into(),
        first_share: Share::FULL,
        ..GeoRules::default()
    };
    let router = router_with(
        Rollout::canary("r", candidate())
            .with_share(pct(10.0))
            .with_strategy(SplitStrategy::Geographic(geo)),
    );
    let r = router.resolve(SLOT, &EvalContext::new().attr("region", "us-gov")).unwrap();
    assert!(!r.in_experiment);
    // a region going first at 100% is not at the phase share
    let r = router.resolve(SLOT, &EvalContext::with_key("u").attr("region", "nz")).unwrap();
    assert_eq!((r.variant, r.in_experiment), (Variant::Canary, false));
    // unlisted regions split at the rollout's share: in the experiment, both sides
    let sides: Vec<bool> = (0..300)
        .map(|i| {
            let r = router.resolve(SLOT, &EvalContext::with_key(format!("u{i}"))).unwrap();
            assert!(r.in_experiment && r.unit.is_some());
            r.variant == Variant::Canary
        })
        .collect();
    assert!(sides.iter().any(|&c| c) && sides.iter().any(|&c| !c));
}

#[test]
fn partial_ab_outside_traffic_is_not_enrolled() {
    let arms =
        vec![Arm::new("control", pct(50.0), stable()), Arm::new("b", pct(50.0), candidate())];
    let router = router_with(Rollout::ab_test("ab", arms).with_share(pct(20.0)));
    let (mut enrolled, mut outside) = (0, 0);
    for i in 0..2_000 {
        let r = router.resolve(SLOT, &EvalContext::with_key(format!("k{i}"))).unwrap();
        match &r.variant {
            Variant::Stable => {
                assert!(!r.in_experiment, "served stable outside the A/B: not enrolled");
                outside += 1;
            }
            Variant::Arm(_) => {
                assert!(r.in_experiment);
                enrolled += 1;
            }
            other => panic!("unexpected variant {other:?}"),
        }
    }
    assert!((300..500).contains(&enrolled) && outside > 1_400, "{enrolled} enrolled");
    // per-request strategies carry no unit but are in the experiment
    let router = router_with(
        Rollout::canary("r", candidate())
            .with_share(pct(50.0))
            .with_strategy(SplitStrategy::WeightedRandom),
    );
    let r = router.resolve(SLOT, &EvalContext::new()).unwrap();
    assert!(r.in_experiment && r.unit.is_none());
}
