//! Property tests of the borrowed resolution: for random tables and contexts it equals the owned
//! one and an independent reference built from the frozen hashes (`bucket`, `arm_bucket`,
//! `unit_hash`), and it points into the table instead of copying.

use std::sync::Arc;

use actuator_canary::{
    Arm, EvalContext, GeoRules, Reason, Resolution, ResolveError, Rollout, RolloutMode, Router,
    RoutingTable, ShadowDirective, Share, SlotId, SlotRoute, SplitStrategy, StickinessKey, Variant,
    VersionedConfig, arm_bucket, bucket, unit_hash,
};
use proptest::prelude::*;
use serde_json::{Value, json};

fn config(version: u64) -> VersionedConfig {
    VersionedConfig::new(version, json!({"model": format!("m{version}")}))
}

/// A random sticky route: mode, share, strategy, stickiness, salt and overrides.
#[derive(Debug, Clone)]
struct Spec {
    mode: u8,
    share: u16,
    arm_weight: u16,
    geo: bool,
    eu_share: u16,
    session: bool,
    salt: String,
    pin: Option<(String, u8)>,
    tenant_rule: Option<u8>,
}

fn spec() -> impl Strategy<Value = Option<Spec>> {
    let s = (
        0u8..3,
        0u16..=10_000,
        1u16..10_000,
        any::<bool>(),
        0u16..=10_000,
        any::<bool>(),
        "[a-z0-9-]{1,12}",
        proptest::option::of(("u[0-9]{1,2}", 0u8..2)),
        proptest::option::of(0u8..2),
    )
        .prop_map(
            |(mode, share, arm_weight, geo, eu_share, session, salt, pin, tenant_rule)| Spec {
                mode,
                share,
                arm_weight,
                geo,
                eu_share,
                session,
                salt,
                pin,
                tenant_rule,
            },
        );
    proptest::option::weighted(0.85, s)
}

fn share(bp: u16) -> Share {
    Share::from_basis_points(bp).unwrap()
}

/// The variant a pin code stands for in `mode` (0 = stable, 1 = the mode's other side).
fn pinned(mode: u8, code: u8) -> Variant {
    match (mode, code) {
        (_, 0) => Variant::Stable,
        (0, _) => Variant::Canary,
        (1, _) => Variant::Shadow,
        _ => Variant::Arm(Arc::from("b")),
    }
}

fn route(s: &Spec) -> SlotRoute {
    let mode = match s.mode {
        0 => RolloutMode::Canary { candidate: config(2) },
        1 => RolloutMode::Shadow { candidate: config(2) },
        _ => RolloutMode::AbTest {
            arms: vec![
                Arm::new("a", share(s.arm_weight), config(3)),
                Arm::new("b", share(10_000 - s.arm_weight), config(4)),
            ],
        },
    };
    let mut r = match mode {
        RolloutMode::Canary { candidate } => Rollout::canary("r", candidate),
        RolloutMode::Shadow { candidate } => Rollout::shadow("r", candidate),
        RolloutMode::AbTest { arms } => Rollout::ab_test("r", arms),
    }
    .with_share(share(s.share))
    .with_phase(2)
    .with_salt(&s.salt);
    if s.geo {
        let mut g = GeoRules::default();
        g.shares.insert("eu".into(), share(s.eu_share));
        g.excluded.insert("gov".into());
        r = r.with_strategy(SplitStrategy::Geographic(g));
    }
    if s.session {
        r = r.with_stickiness(StickinessKey::Session);
    }
    if let Some((key, code)) = &s.pin {
        r = r.pin_key(key, pinned(s.mode, *code));
    }
    if let Some(code) = s.tenant_rule {
        r = r.pin_attribute("tenant", json!("internal"), pinned(s.mode, code));
    }
    SlotRoute::stable(config(1)).with_rollout(r)
}

/// What the documented rules give, from the frozen hashes alone.
fn reference(slot: &str, route: &SlotRoute, ctx: &EvalContext, revision: u64) -> Resolution {
    let Some(r) = &route.rollout else {
        return Resolution {
            variant: Variant::Stable,
            config: route.stable.clone(),
            rollout_id: None,
            phase: None,
            bucket: None,
            unit: None,
            in_experiment: false,
            reason: Reason::NoRollout,
            shadow: None,
            revision,
        };
    };
    let serve = |v: &Variant| -> (Variant, VersionedConfig, Option<ShadowDirective>) {
        match (v, &r.mode) {
            (Variant::Stable, _) => (Variant::Stable, route.stable.clone(), None),
            (Variant::Canary, RolloutMode::Canary { candidate }) => {
                (Variant::Canary, candidate.clone(), None)
            }
            (Variant::Shadow, RolloutMode::Shadow { candidate }) => (
                Variant::Shadow,
                route.stable.clone(),
                Some(ShadowDirective { candidate: candidate.clone() }),
            ),
            (Variant::Arm(name), RolloutMode::AbTest { arms }) => {
                let arm = arms.iter().find(|a| a.name == *name).unwrap();
                (v.clone(), arm.config.clone(), None)
            }
            _ => unreachable!("the spec only pins variants of its mode"),
        }
    };
    let out = |(variant, config, shadow): (Variant, VersionedConfig, Option<ShadowDirective>),
               bucket,
               unit,
               in_experiment,
               reason| Resolution {
        variant,
        config,
        rollout_id: Some(r.id.clone()),
        phase: Some(r.phase),
        bucket,
        unit,
        in_experiment,
        reason,
        shadow,
        revision,
    };
    let pin = ctx.targeting_key.as_deref().and_then(|k| r.overrides.targeting_keys.get(k)).or_else(
        || {
            r.overrides
                .attributes
                .iter()
                .find(|o| ctx.attributes.get(&o.attribute) == Some(&o.equals))
                .map(|o| &o.variant)
        },
    );
    if let Some(v) = pin {
        return out(serve(v), None, None, false, Reason::Override);
    }
    let (share, reason) = match &r.strategy {
        SplitStrategy::Geographic(g) => {
            match ctx.attributes.get("region").and_then(Value::as_str) {
                Some(region) if g.excluded.contains(region) => {
                    return out(serve(&Variant::Stable), None, None, false, Reason::RegionExcluded);
                }
                Some(region) if g.shares.contains_key(region) => (g.shares[region], Reason::Split),
                _ => (r.share, Reason::RegionDefault),
            }
        }
        _ => (r.share, Reason::Split),
    };
    let key = match r.stickiness {
        StickinessKey::Session => ctx.attributes.get("sessionId").and_then(Value::as_str),
        _ => ctx.targeting_key.as_deref(),
    }
    .unwrap();
    let b = bucket(slot, &r.salt, key);
    let admitted = b < share.basis_points();
    let variant = match (&r.mode, admitted) {
        (_, false) => Variant::Stable,
        (RolloutMode::Canary { .. }, true) => Variant::Canary,
        (RolloutMode::Shadow { .. }, true) => Variant::Shadow,
        (RolloutMode::AbTest { arms }, true) => {
            let draw = arm_bucket(slot, &r.salt, key);
            let first = arms[0].weight.basis_points();
            Variant::Arm(arms[usize::from(draw >= first)].name.clone())
        }
    };
    let ab = matches!(r.mode, RolloutMode::AbTest { .. });
    let in_experiment = share == r.share && (admitted || !ab);
    out(serve(&variant), Some(b), Some(unit_hash(slot, &r.salt, key)), in_experiment, reason)
}

fn context() -> impl Strategy<Value = EvalContext> {
    (
        "u[0-9]{1,2}|[a-zA-Z0-9 ключ]{1,30}|k{180,200}",
        proptest::option::of(prop_oneof![Just("eu"), Just("gov"), Just("us")]),
        proptest::option::of("s[0-9]{1,3}"),
        any::<bool>(),
    )
        .prop_map(|(key, region, session, internal)| {
            let mut c = EvalContext::with_key(key);
            if let Some(r) = region {
                c = c.attr("region", r);
            }
            if let Some(s) = session {
                c = c.attr("sessionId", s);
            }
            c.attr("tenant", if internal { "internal" } else { "acme" })
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn borrowed_equals_owned_and_the_reference(
        specs in proptest::collection::vec(spec(), 1..6),
        ctxs in proptest::collection::vec(context(), 1..6),
    ) {
        let router = Router::new();
        let mut table = RoutingTable::new();
        let names: Vec<String> = (0..specs.len()).map(|i| format!("llm.slot.{i}")).collect();
        for (name, s) in names.iter().zip(&specs) {
            let r = s.as_ref().map_or_else(|| SlotRoute::stable(config(1)), route);
            table.insert(name, r).unwrap();
        }
        let revision = router.publish(table).unwrap();
        let guard = router.load();
        for ctx in &ctxs {
            for name in &names {
                let borrowed = guard.resolve_ref(name, ctx);
                let owned = guard.resolve(name, ctx);
                let by_id = guard.resolve_id(&SlotId::new(name), ctx);
                prop_assert_eq!(&by_id, &borrowed);
                let route = guard.get(name).unwrap();
                let needs_session = route
                    .rollout
                    .as_ref()
                    .is_some_and(|r| r.stickiness == StickinessKey::Session);
                if needs_session && !ctx.attributes.contains_key("sessionId") {
                    let pinned = route.rollout.as_ref().is_some_and(|r| {
                        r.overrides.matching(ctx).unwrap().is_some()
                    });
                    let excluded = ctx.attributes.get("region") == Some(&json!("gov"))
                        && route.rollout.as_ref().is_some_and(|r| r.strategy.name() == "geographic");
                    if !pinned && !excluded {
                        prop_assert_eq!(
                            borrowed.map_err(|e| e.code()),
                            Err("TARGETING_KEY_MISSING")
                        );
                        let missing = matches!(owned, Err(ResolveError::TargetingKeyMissing { .. }));
                        prop_assert!(missing, "the owned resolution must fail alike");
                        continue;
                    }
                }
                let borrowed = borrowed.unwrap();
                let owned = owned.unwrap();
                prop_assert_eq!(&borrowed.into_owned(), &owned);
                prop_assert_eq!(&owned, &reference(name, route, ctx, revision));
                // The served value is the table's own, not a copy.
                let served = [Some(&route.stable)]
                    .into_iter()
                    .chain(route.rollout.iter().flat_map(|r| match &r.mode {
                        RolloutMode::Canary { candidate } | RolloutMode::Shadow { candidate } => {
                            vec![Some(candidate)]
                        }
                        RolloutMode::AbTest { arms } => arms.iter().map(|a| Some(&a.config)).collect(),
                    }))
                    .flatten()
                    .any(|c| std::ptr::eq(c, borrowed.config));
                prop_assert!(served, "the borrowed config must point into the route");
                prop_assert_eq!(borrowed.variant_name(), owned.variant_name());
                prop_assert_eq!(borrowed.ofrep_metadata(), owned.ofrep_metadata());
            }
        }
        // Bulk: the same answers in slot order.
        let all = guard.resolve_all_ref(&ctxs[0]);
        let owned_all = guard.resolve_all(&ctxs[0]);
        prop_assert_eq!(all.len(), owned_all.len());
        for ((name, r), (owned_name, owned)) in all.into_iter().zip(owned_all) {
            prop_assert_eq!(name, &*owned_name);
            prop_assert_eq!(r.map(actuator_canary::ResolutionRef::into_owned), owned);
        }
    }
}

#[test]
fn unknown_slots_and_borrowed_lifetimes() {
    let router = Router::new();
    router.update_slot("chat", SlotRoute::stable(config(1))).unwrap();
    let guard = router.load();
    let e = guard.resolve_ref("nope", &EvalContext::new()).unwrap_err();
    assert_eq!(e.code(), "FLAG_NOT_FOUND");
    assert_eq!(guard.resolve_id(&SlotId::new("nope"), &EvalContext::new()), Err(e));
    // A borrowed answer outlives its context, and an update does not disturb it.
    let r = {
        let ctx = EvalContext::with_key("u");
        guard.resolve_ref("chat", &ctx).unwrap()
    };
    router.update_slot("chat", SlotRoute::stable(config(7))).unwrap();
    assert_eq!(r.config.version, 1);
    assert_eq!(router.load().resolve_ref("chat", &EvalContext::new()).unwrap().config.version, 7);
    assert_eq!(r.revision, guard.revision());
    assert!(format!("{guard:?}").contains("TableGuard"));
}
