//! In-process resolve latency: per strategy with one active rollout, the borrowed resolution
//! against the owned one, consistent hash as the number of slots grows (it should stay flat),
//! and throughput on 1 and 2 threads (it should grow).

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use actuator_canary::{
    Arm, EvalContext, GeoRules, Rollout, Router, Share, SlotId, SlotRoute, SplitStrategy,
    VersionedConfig, bucket,
};
use serde_json::json;

use crate::Options;
use crate::table::{Limit, Row, Table};

/// Distinct contexts cycled through (a power of two).
const CONTEXTS: usize = 1024;
const SLOT: &str = "llm.chat.default";
/// The per-call target for the owned consistent-hash resolve with one active rollout.
const TARGET_NS: f64 = 100.0;
/// The per-call target for the borrowed consistent-hash resolve with one active rollout.
const TARGET_BORROWED_NS: f64 = 50.0;
/// Runs of each throughput measurement; the best is kept.
const THROUGHPUT_RUNS: usize = 5;

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
        if name.starts_with("consistent_hash, 1 rollout") {
            single_ch = borrowed_vs_owned(&plan, &router, &ctxs, baseline, table);
            continue;
        }
        let ns = measure(&plan, |i| {
            let _ = black_box(router.load().resolve_ref(black_box(SLOT), at(i)));
        });
        table.push(Row::new(format!("resolve_ref: {name}"), ns, "ns/call").baseline(baseline));
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
            let t = router.load();
            let _ =
                black_box(t.resolve_ref(black_box(queried[j]), &ctxs[(j * 7) & (CONTEXTS - 1)]));
        });
        if n == 1 {
            one_slot = ns;
        }
        table.push(
            Row::new(format!("resolve_ref: consistent_hash with {n} slots"), ns, "ns/call")
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
        let _ = black_box(router.load().resolve_ref(black_box(SLOT), at(i)));
    });
    stop.store(true, Ordering::Relaxed);
    let updates = writer.join().unwrap_or(0);
    let rate = updates as f64 / started.elapsed().as_secs_f64();
    table.push(
        Row::new(
            format!(
                "resolve_ref: consistent_hash while a writer updates the slot ({rate:.0} updates/s)"
            ),
            ns,
            "ns/call",
        )
        .baseline(single_ch)
        .target(Limit::RatioAtMost(3.0)),
    );

    throughput(&plan, ctxs, table);
}

/// The consistent-hash rollout at 5% through each entry point: owned (`Router::resolve`, the
/// baseline of the others), borrowed through a guard per call, borrowed with the slot hashed
/// beforehand, and borrowed through a per-thread reader. Returns the borrowed (guard) time.
fn borrowed_vs_owned(
    plan: &Plan,
    router: &Router,
    ctxs: &[EvalContext],
    baseline: f64,
    table: &mut Table,
) -> f64 {
    let at = |i: usize| &ctxs[i & (CONTEXTS - 1)];
    let owned = measure(plan, |i| {
        let _ = black_box(router.resolve(black_box(SLOT), at(i)));
    });
    table.push(
        Row::new("resolve (owned): consistent_hash, 1 rollout at 5%", owned, "ns/call")
            .baseline(baseline)
            .target(Limit::ValueAtMost(TARGET_NS)),
    );
    let borrowed = measure(plan, |i| {
        let _ = black_box(router.load().resolve_ref(black_box(SLOT), at(i)));
    });
    table.push(
        Row::new(
            "resolve_ref (borrowed, a guard per call): consistent_hash, 1 rollout at 5%",
            borrowed,
            "ns/call",
        )
        .baseline(owned)
        .target(Limit::ValueAtMost(TARGET_BORROWED_NS)),
    );
    let id = SlotId::new(SLOT);
    let by_id = measure(plan, |i| {
        let _ = black_box(router.load().resolve_id(black_box(&id), at(i)));
    });
    table.push(
        Row::new(
            "resolve_id (borrowed, slot hashed beforehand): consistent_hash, 1 rollout at 5%",
            by_id,
            "ns/call",
        )
        .baseline(owned),
    );
    let mut reader = router.reader();
    let cached = measure(plan, |i| {
        let _ = black_box(reader.load().resolve_ref(black_box(SLOT), at(i)));
    });
    table.push(
        Row::new(
            "resolve_ref (borrowed, per-thread RouterReader): consistent_hash, 1 rollout at 5%",
            cached,
            "ns/call",
        )
        .baseline(owned),
    );
    borrowed
}

/// Millions of resolves per second of `threads` threads each resolving `per_thread` times,
/// started together (one run).
fn resolves_per_sec(
    threads: usize,
    per_thread: usize,
    router: &Arc<Router>,
    ctxs: &Arc<Vec<EvalContext>>,
    borrowed: bool,
) -> f64 {
    let start = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (router, ctxs, start) = (Arc::clone(router), Arc::clone(ctxs), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                for i in 0..per_thread {
                    let ctx = &ctxs[i & (CONTEXTS - 1)];
                    if borrowed {
                        let _ = black_box(router.load().resolve_ref(black_box(SLOT), ctx));
                    } else {
                        let _ = black_box(router.resolve(black_box(SLOT), ctx));
                    }
                }
            })
        })
        .collect();
    start.wait();
    let t = Instant::now();
    for h in handles {
        let _ = h.join();
    }
    (threads * per_thread) as f64 / t.elapsed().as_secs_f64() / 1e6
}

/// Throughput of the consistent-hash resolve on 1 and 2 threads, owned and borrowed; each
/// 2-thread row is against its own 1-thread row. Runs alternate between 1 and 2 threads so a
/// change of load on the machine hits both alike.
fn throughput(plan: &Plan, ctxs: Vec<EvalContext>, table: &mut Table) {
    let router = Arc::new(router_with(route(Some(rollout(SplitStrategy::ConsistentHash)))));
    let ctxs = Arc::new(ctxs);
    let per_thread = plan.iters * 2;
    for (borrowed, label) in [(false, "owned resolve"), (true, "borrowed resolve_ref")] {
        let (mut one, mut two) = (0.0f64, 0.0f64);
        for _ in 0..THROUGHPUT_RUNS {
            one = one.max(resolves_per_sec(1, per_thread, &router, &ctxs, borrowed));
            two = two.max(resolves_per_sec(2, per_thread, &router, &ctxs, borrowed));
        }
        let row =
            Row::new(format!("throughput: consistent_hash {label}, 1 thread"), one, "M resolves/s");
        // The floor the earlier multi-thread row kept: a million resolves a second.
        table.push(if borrowed { row.target(Limit::ValueAtLeast(1.0)) } else { row });
        let row = Row::new(
            format!("throughput: consistent_hash {label}, 2 threads (ratio: 2 threads / 1)"),
            two,
            "M resolves/s",
        )
        .baseline(one);
        table.push(if borrowed { row.target(Limit::RatioAtLeast(1.0)) } else { row });
    }
}
