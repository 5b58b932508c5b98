//! In-process resolve latency: per strategy with one active rollout, and consistent hash as the
//! number of slots grows (it should stay flat).

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use actuator_canary::{
    Arm, EvalContext, GeoRules, Rollout, Router, Share, SlotRoute, SplitStrategy, VersionedConfig,
    bucket,
};
use serde_json::json;

use crate::Options;
use crate::table::{Limit, Row, Table};

/// Distinct contexts cycled through (a power of two).
const CONTEXTS: usize = 1024;
const SLOT: &str = "llm.chat.default";
/// The per-call target for consistent hash with one active rollout.
const TARGET_NS: f64 = 100.0;

struct Plan {
    iters: usize,
    runs: usize,
}

/// Best-of-`runs` mean ns per call of `f` over `iters` calls.
fn measure(plan: &Plan, mut f: impl FnMut(usize)) -> f64 {
    // Warm-up.
    for i in 0..plan.iters / 10 {
        f(i);
    }
    let mut best = f64::INFINITY;
    for _ in 0..plan.runs {
        let t = Instant::now();
        for i in 0..plan.iters {
            f(i);
        }
        best = best.min(t.elapsed().as_nanos() as f64 / plan.iters as f64);
    }
    best
}

fn config(version: u64, model: &str) -> VersionedConfig {
    VersionedConfig::new(
        version,
        json!({"model": model, "temperature": 0.2, "max_tokens": 1024, "prompt": "v3"}),
    )
}

fn rollout(strategy: SplitStrategy) -> Rollout {
    Rollout::canary("rollout-0190c0de", config(2, "small"))
        .with_share(Share::from_basis_points(500).unwrap_or(Share::ZERO))
        .with_phase(1)
        .with_strategy(strategy)
}

fn route(r: Option<Rollout>) -> SlotRoute {
    let s = SlotRoute::stable(config(1, "big"));
    match r {
        Some(r) => s.with_rollout(r),
        None => s,
    }
}

fn contexts() -> Vec<EvalContext> {
    let regions = ["eu-west", "us-east", "ap-south", "nz", "us-gov"];
    (0..CONTEXTS)
        .map(|i| {
            EvalContext::with_key(format!("user-{i:08x}"))
                .attr("region", regions[i % regions.len()])
                .attr("tenant", if i % 97 == 0 { "internal" } else { "acme" })
        })
        .collect()
}

fn router_with(slot_route: SlotRoute) -> Router {
    let router = Router::new();
    if let Err(e) = router.update_slot(SLOT, slot_route) {
        panic!("benchmark route is invalid: {e}");
    }
    router
}

fn geo() -> SplitStrategy {
    SplitStrategy::Geographic(GeoRules {
        shares: [("eu-west".to_owned(), Share::from_basis_points(1_000).unwrap_or(Share::ZERO))]
            .into(),
        excluded: ["us-gov".to_owned()].into(),
        first: ["nz".to_owned()].into(),
        first_share: Share::FULL,
        ..GeoRules::default()
    })
}

/// Adds the resolve rows to `table`.
pub(crate) fn run(opts: &Options, table: &mut Table) {
    let plan = if opts.quick {
        Plan { iters: 200_000, runs: 5 }
    } else {
        Plan { iters: 2_000_000, runs: 7 }
    };
    let ctxs = contexts();
    let at = |i: usize| &ctxs[i & (CONTEXTS - 1)];

    // Baseline: a bare HashMap lookup of the slot name, the floor of any table-driven resolve.
    let mut bare: HashMap<String, u64> = HashMap::new();
    bare.insert(SLOT.to_owned(), 1);
    let baseline = measure(&plan, |_| {
        black_box(bare.get(black_box(SLOT)));
    });
    table.push(Row::new("baseline: HashMap<String,_> lookup of the slot", baseline, "ns/call"));

    let keys: Vec<String> = (0..CONTEXTS).map(|i| format!("user-{i:08x}")).collect();
    let hash = measure(&plan, |i| {
        black_box(bucket(black_box(SLOT), "rollout-0190c0de", &keys[i & (CONTEXTS - 1)]));
    });
    table.push(Row::new("bucket(slot, salt, key) alone", hash, "ns/call"));

    let arms = vec![
        Arm::new("a", Share::from_basis_points(5_000).unwrap_or(Share::ZERO), config(3, "a")),
        Arm::new("b", Share::from_basis_points(5_000).unwrap_or(Share::ZERO), config(4, "b")),
    ];
    let cases: Vec<(&str, SlotRoute)> = vec![
        ("no rollout (stable only)", route(None)),
        ("consistent_hash, 1 rollout at 5%", route(Some(rollout(SplitStrategy::ConsistentHash)))),
        ("weighted_random, 1 rollout at 5%", route(Some(rollout(SplitStrategy::WeightedRandom)))),
        ("round_robin, 1 rollout at 5%", route(Some(rollout(SplitStrategy::RoundRobin)))),
        ("geographic, 1 rollout (5 regions)", route(Some(rollout(geo())))),
        (
            "consistent_hash + overrides (key pin, tenant rule)",
            route(Some(
                rollout(SplitStrategy::ConsistentHash)
                    .pin_key("user-00000001", actuator_canary::Variant::Canary)
                    .pin_attribute("tenant", json!("internal"), actuator_canary::Variant::Stable),
            )),
        ),
        (
            "a/b test, 2 arms, consistent_hash at 100%",
            route(Some(Rollout::ab_test("ab-1", arms).with_share(Share::FULL).with_phase(1))),
        ),
        (
            "shadow, consistent_hash at 5%",
            route(Some(
                Rollout::shadow("sh-1", config(2, "small"))
                    .with_share(Share::from_basis_points(500).unwrap_or(Share::ZERO)),
            )),
        ),
    ];
    let mut single_ch = f64::NAN;
    for (name, slot_route) in cases {
        let router = router_with(slot_route);
        let ns = measure(&plan, |i| {
            let _ = black_box(router.resolve(black_box(SLOT), at(i)));
        });
        let mut row = Row::new(format!("resolve: {name}"), ns, "ns/call").baseline(baseline);
        if name.starts_with("consistent_hash, 1 rollout") {
            row = row.target(Limit::ValueAtMost(TARGET_NS));
            single_ch = ns;
        }
        table.push(row);
    }

    // Scaling: every slot has an active consistent-hash rollout; queries cycle over up to
    // 1024 distinct slots. The baseline of each row is the 1-slot time.
    let mut one_slot = f64::NAN;
    for n in [1usize, 100, 1_000, 10_000] {
        let router = Router::new();
        let names: Vec<String> = (0..n).map(|i| format!("llm.slot.{i:05}")).collect();
        for name in &names {
            if let Err(e) =
                router.update_slot(name, route(Some(rollout(SplitStrategy::ConsistentHash))))
            {
                panic!("benchmark route is invalid: {e}");
            }
        }
        let step = (n / CONTEXTS.min(n)).max(1);
        let queried: Vec<&str> = (0..CONTEXTS).map(|i| names[(i * step) % n].as_str()).collect();
        let ns = measure(&plan, |i| {
            let j = i & (CONTEXTS - 1);
            let _ =
                black_box(router.resolve(black_box(queried[j]), &ctxs[(j * 7) & (CONTEXTS - 1)]));
        });
        if n == 1 {
            one_slot = ns;
        }
        table.push(
            Row::new(format!("resolve: consistent_hash with {n} slots"), ns, "ns/call")
                .baseline(one_slot)
                .target(Limit::RatioAtMost(2.0)),
        );
    }

    // Readers while a writer republishes the slot continuously (copy-on-write + swap).
    let router = Arc::new(router_with(route(Some(rollout(SplitStrategy::ConsistentHash)))));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (router, stop) = (Arc::clone(&router), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut updates = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let bp = (updates % 10_000) as u16;
                let r = rollout(SplitStrategy::ConsistentHash)
                    .with_share(Share::from_basis_points(bp).unwrap_or(Share::ZERO));
                if router.update_slot(SLOT, route(Some(r))).is_ok() {
                    updates += 1;
                }
                std::thread::sleep(std::time::Duration::from_micros(100));
            }
            updates
        })
    };
    let started = Instant::now();
    let ns = measure(&plan, |i| {
        let _ = black_box(router.resolve(black_box(SLOT), at(i)));
    });
    stop.store(true, Ordering::Relaxed);
    let updates = writer.join().unwrap_or(0);
    let rate = updates as f64 / started.elapsed().as_secs_f64();
    table.push(
        Row::new(
            format!(
                "resolve: consistent_hash while a writer updates the slot ({rate:.0} updates/s)"
            ),
            ns,
            "ns/call",
        )
        .baseline(single_ch)
        .target(Limit::RatioAtMost(3.0)),
    );

    // Aggregate throughput with one reader per core.
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get).min(4);
    let router = Arc::new(router_with(route(Some(rollout(SplitStrategy::ConsistentHash)))));
    let ctxs = Arc::new(ctxs);
    let per_thread = plan.iters * 2;
    let t = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (router, ctxs) = (Arc::clone(&router), Arc::clone(&ctxs));
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    let _ = black_box(router.resolve(SLOT, &ctxs[i & (CONTEXTS - 1)]));
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    let secs = t.elapsed().as_secs_f64();
    table.push(
        Row::new(
            format!("throughput: consistent_hash resolve, {threads} threads"),
            (threads * per_thread) as f64 / secs / 1e6,
            "M resolves/s",
        )
        .target(Limit::ValueAtLeast(1.0)),
    );
}
