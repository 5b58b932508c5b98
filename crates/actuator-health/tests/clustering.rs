//! Validity under real traffic: sticky users with heavy-tailed activity and per-user error
//! propensity, traffic routed outside the phase share, late scores and retries across arms.

use actuator_health::{
    AnalysisMode, Arm, Decision, HealthConfig, Observation, Outcome, PhaseConfig, QualityUpdate,
    RecordOutcome, RolloutHealth,
};
use chrono::{DateTime, Duration, TimeZone, Utc};

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Small deterministic PRNG (splitmix64) with uniform and normal draws.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).single().expect("valid date")
}

/// One user: sticky arm, unit hash, own error propensity, latency and cost level.
struct User {
    canary: bool,
    unit: u16,
    error_rate: f64,
    log_latency: f64,
    cost: f64,
}

/// A population of `n` users: the top 1% send about 30% of the requests, error propensity is
/// lognormal around `base_error` (σ = 1), latency and cost levels vary per user.
struct Population {
    users: Vec<User>,
    heavy: usize,
}

impl Population {
    fn new(seed: u64, n: usize, share: f64, base_error: f64) -> Self {
        let mut rng = Rng(mix(seed ^ 0x7573_6572));
        let users = (0..n)
            .map(|_| {
                let z = rng.normal();
                User {
                    canary: rng.uniform() < share,
                    // the resolution's unit hash: independent of the assignment
                    unit: (rng.next_u64() >> 48) as u16,
                    error_rate: (base_error * (z - 0.5).exp()).min(0.6),
                    log_latency: 350f64.ln() + 0.4 * rng.normal(),
                    cost: 0.002 * (0.5 * rng.normal()).exp(),
                }
            })
            .collect();
        Self { users, heavy: (n / 100).max(1) }
    }

    fn pick(&self, rng: &mut Rng) -> usize {
        let r = rng.uniform();
        let n = self.users.len();
        if r < 0.3 {
            (rng.next_u64() % self.heavy as u64) as usize
        } else {
            self.heavy + (rng.next_u64() % (n - self.heavy) as u64) as usize
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Rollback,
    Halt,
    Other,
}

struct Sim {
    /// Report the resolution's unit with each observation (the cluster-robust analysis).
    with_unit: bool,
    /// Multiplies the canary users' error propensity.
    canary_error_factor: f64,
    requests: u64,
    look_every: u64,
    /// Every k-th light user (k > 0) is routed to the canary whatever its assignment: a routing
    /// bug that sends a whole tenant to the wrong arm (untagged).
    misrouted_every: usize,
    /// The canary's share of users.
    share: f64,
}

fn config() -> HealthConfig {
    // Every rule that can roll back is on, the SLO guards included: they spend from the same
    // budget as the comparative tests.
    HealthConfig::default()
}

/// The observation of one request of user `u` on `arm` (its error and latency drawn here).
fn observe(
    rng: &mut Rng,
    u: &User,
    id: String,
    arm: Arm,
    error_factor: f64,
    phase: u32,
    with_unit: bool,
) -> Observation {
    let err = rng.uniform() < (u.error_rate * error_factor).min(0.95);
    let latency = (u.log_latency + 0.5 * rng.normal()).exp();
    let o = Observation::new("r1", id, arm, if err { Outcome::Error } else { Outcome::Ok })
        .latency(latency)
        .cost(u.cost * (0.3 * rng.normal()).exp())
        .phase(phase);
    if with_unit { o.unit(u.unit) } else { o }
}

fn simulate(seed: u64, sim: &Sim) -> (End, RolloutHealth) {
    let pop = Population::new(seed, 3_000, sim.share, 0.02);
    let mut rng = Rng(mix(seed));
    let mut h = RolloutHealth::new(
        "r1",
        "",
        AnalysisMode::Canary,
        config(),
        PhaseConfig::canary(sim.share).min(u64::MAX, i64::MAX),
        t0(),
    )
    .expect("valid");
    for i in 0..sim.requests {
        let k = pop.pick(&mut rng);
        let u = &pop.users[k];
        let misrouted =
            sim.misrouted_every > 0 && k >= pop.heavy && k.is_multiple_of(sim.misrouted_every);
        let (arm, factor) = if u.canary || misrouted {
            (Arm::Canary, sim.canary_error_factor)
        } else {
            (Arm::Control, 1.0)
        };
        let o = observe(&mut rng, u, format!("q{i}"), arm, factor, 0, sim.with_unit);
        h.record(&o).expect("valid observation");
        if (i + 1) % sim.look_every == 0 {
            let at = t0() + Duration::seconds(i64::try_from(i).unwrap_or(0));
            match h.look(at).decision {
                Decision::Rollback { .. } => return (End::Rollback, h),
                Decision::Halt { .. } => return (End::Halt, h),
                _ => {}
            }
        }
    }
    (End::Other, h)
}

fn count(ends: &[End], which: End) -> usize {
    ends.iter().filter(|e| **e == which).count()
}

/// A/A with sticky heavy-tailed users: the clustered analysis keeps false rollbacks within
/// alpha = 5% and sample-ratio halts rare over 200 seeded rollouts, where the same traffic
/// analysed as independent requests (no unit reported) rolls back or halts far more often.
#[test]
fn aa_sticky_heavy_users_keep_the_budget() {
    let runs = 200;
    let clustered = Sim {
        with_unit: true,
        canary_error_factor: 1.0,
        requests: 6_000,
        look_every: 500,
        misrouted_every: 0,
        share: 0.5,
    };
    let iid = Sim { with_unit: false, ..clustered };
    let ends: Vec<End> = (0..runs).map(|s| simulate(s, &clustered).0).collect();
    let naive: Vec<End> = (0..runs).map(|s| simulate(s, &iid).0).collect();
    let (rb, halt) = (count(&ends, End::Rollback), count(&ends, End::Halt));
    let (nrb, nhalt) = (count(&naive, End::Rollback), count(&naive, End::Halt));
    eprintln!(
        "clustered: {rb} rollbacks, {halt} halts; i.i.d.: {nrb} rollbacks, {nhalt} halts of {runs}"
    );
    // budget 5% (10 of 200), with room for simulation noise (sd ≈ 3 runs)
    assert!(rb <= 16, "{rb} false rollbacks of {runs}");
    assert!(halt <= 4, "{halt} sample-ratio halts of {runs}");
    assert!(nrb + nhalt >= 3 * (rb + halt).max(10), "the i.i.d. analysis: {nrb} + {nhalt}");
}

/// The same at a 10% canary (fewer canary users per bucket, so a noisier plug-in variance).
#[test]
fn aa_sticky_heavy_users_keep_the_budget_at_a_small_share() {
    let runs = 200;
    let sim = Sim {
        with_unit: true,
        canary_error_factor: 1.0,
        requests: 6_000,
        look_every: 500,
        misrouted_every: 0,
        share: 0.1,
    };
    let ends: Vec<End> = (0..runs).map(|s| simulate(5_000 + s, &sim).0).collect();
    let (rb, halt) = (count(&ends, End::Rollback), count(&ends, End::Halt));
    eprintln!("clustered at 10%: {rb} rollbacks, {halt} halts of {runs}");
    assert!(rb <= 16, "{rb} false rollbacks of {runs}");
    assert!(halt <= 4, "{halt} sample-ratio halts of {runs}");
}

/// Errors ×2 on every canary user is still detected with the clustered analysis.
#[test]
fn doubled_errors_on_every_user_are_detected() {
    let sim = Sim {
        with_unit: true,
        canary_error_factor: 2.0,
        requests: 30_000,
        look_every: 1_000,
        misrouted_every: 0,
        share: 0.5,
    };
    let runs = 40;
    let ends: Vec<End> = (0..runs).map(|s| simulate(1_000 + s, &sim).0).collect();
    let rb = count(&ends, End::Rollback);
    assert!(rb >= 32, "detected in {rb} of {runs}");
    assert_eq!(count(&ends, End::Halt), 0);
}

/// A routing bug that sends a whole tenant (half of the light users) to the canary still
/// halts on the clustered sample-ratio check, although the tenant behaves like everyone else.
#[test]
fn a_whole_tenant_on_the_wrong_arm_still_halts() {
    let sim = Sim {
        with_unit: true,
        canary_error_factor: 1.0,
        requests: 10_000,
        look_every: 500,
        misrouted_every: 2,
        share: 0.5,
    };
    let runs = 20;
    let ends: Vec<End> = (0..runs).map(|s| simulate(2_000 + s, &sim).0).collect();
    let halts = count(&ends, End::Halt);
    assert!(halts >= 16, "halted in {halts} of {runs}: {ends:?}");
}

/// The status shows the effective sample size beside the raw count: clustered traffic is worth
/// fewer independent requests.
#[test]
fn effective_sample_size_is_reported_and_below_the_raw_count() {
    let sim = Sim {
        with_unit: true,
        canary_error_factor: 1.0,
        requests: 4_000,
        look_every: 4_000,
        misrouted_every: 0,
        share: 0.5,
    };
    let (_, mut h) = simulate(7, &sim);
    let eval = h.look(t0() + Duration::hours(1));
    for a in &eval.explanation.arms {
        let eff = a.effective_requests.expect("sticky split: effective size reported");
        assert!(eff > 0.0 && eff < 0.8 * a.requests as f64, "{} of {}", eff, a.requests);
    }
    let iid = Sim { with_unit: false, ..sim };
    let (_, mut h) = simulate(7, &iid);
    let eval = h.look(t0() + Duration::hours(1));
    assert!(eval.explanation.arms.iter().all(|a| a.effective_requests.is_none()));
    let m = &eval.explanation.comparisons[0].metrics[0];
    assert!(m.note.is_none() || !m.note.as_deref().unwrap_or("").contains("clustered"));
}

/// Before 20 non-empty user buckets per arm a clustered test does not count, and the
/// explanation says so; the catastrophic guard acts before that.
#[test]
fn clustered_burn_in_is_explained_and_the_catastrophic_guard_still_acts() {
    let mut h = RolloutHealth::new(
        "r1",
        "",
        AnalysisMode::Canary,
        config(),
        PhaseConfig::canary(0.5),
        t0(),
    )
    .expect("valid");
    // five users per arm, many requests each: too few clusters
    for i in 0..200u64 {
        let arm = if i % 2 == 0 { Arm::Canary } else { Arm::Control };
        let unit = u16::try_from(i % 10).unwrap_or(0);
        let o = Observation::new("r1", format!("b{i}"), arm, Outcome::Ok)
            .latency(300.0)
            .unit(unit)
            .phase(0);
        h.record(&o).expect("valid");
    }
    let eval = h.look(t0());
    let errors = &eval.explanation.comparisons[0].metrics[0];
    assert_eq!(errors.log_e_phase, 0.0);
    assert!(errors.note.as_deref().unwrap_or("").contains("burn-in"), "{:?}", errors.note);
    for i in 0..30u64 {
        let o = Observation::new("r1", format!("x{i}"), Arm::Canary, Outcome::Error)
            .unit(1)
            .latency(50.0);
        h.record(&o).expect("valid");
    }
    assert!(matches!(h.look(t0()).decision, Decision::Rollback { .. }));
}

/// An override sends an internal tenant's users to the canary, and they fail: tagged outside
/// the experiment, they cause neither a rollback nor a halt, and are counted apart. The same
/// traffic untagged does roll back or halt (so the test can fail).
#[test]
fn override_for_an_internal_tenant_neither_rolls_back_nor_halts() {
    let run = |tagged: bool| {
        let mut rng = Rng(42);
        let mut h = RolloutHealth::new(
            "r1",
            "",
            AnalysisMode::Canary,
            config(),
            PhaseConfig::canary(0.05).min(u64::MAX, i64::MAX),
            t0(),
        )
        .expect("valid");
        let mut end = End::Other;
        for i in 0..40_000u64 {
            let user = rng.next_u64() % 20_000;
            let unit = (mix(user) >> 48) as u16;
            let internal = user < 400; // 2% of users: the internal tenant, pinned to canary
            let o = if internal {
                let err = rng.uniform() < 0.6;
                let o = Observation::new(
                    "r1",
                    format!("q{i}"),
                    Arm::Canary,
                    if err { Outcome::Error } else { Outcome::Ok },
                )
                .latency(900.0)
                .phase(0);
                if tagged { o.outside_experiment() } else { o.unit(unit) }
            } else {
                let arm = if mix(user ^ 0xabc) % 100 < 5 { Arm::Canary } else { Arm::Control };
                let err = rng.uniform() < 0.01;
                Observation::new(
                    "r1",
                    format!("q{i}"),
                    arm,
                    if err { Outcome::Error } else { Outcome::Ok },
                )
                .latency(300.0 * (0.5 * rng.normal()).exp())
                .unit(unit)
                .phase(0)
            };
            h.record(&o).expect("valid");
            if (i + 1) % 1_000 == 0 {
                match h.look(t0() + Duration::seconds(i64::try_from(i).unwrap_or(0))).decision {
                    Decision::Rollback { .. } => {
                        end = End::Rollback;
                        break;
                    }
                    Decision::Halt { .. } => {
                        end = End::Halt;
                        break;
                    }
                    _ => {}
                }
            }
        }
        (end, h)
    };
    let (end, mut h) = run(true);
    assert_eq!(end, End::Other);
    let eval = h.look(t0() + Duration::hours(2));
    let canary = eval.explanation.arms.iter().find(|a| a.arm == Arm::Canary).expect("canary");
    assert!(canary.outside_requests > 500, "{}", canary.outside_requests);
    assert!(canary.outside_error_events > 300);
    assert!(canary.error_rate.unwrap_or(1.0) < 0.05, "internal errors are not compared");
    let (untagged, _) = run(false);
    assert_ne!(untagged, End::Other, "the untagged override traffic must alarm");
}

/// A late quality score lands in the phase its request was served in, or is dropped as stale.
#[test]
fn late_quality_score_lands_in_its_own_phase() {
    let mut h = RolloutHealth::new(
        "r1",
        "",
        AnalysisMode::Canary,
        config(),
        PhaseConfig::canary(0.5),
        t0(),
    )
    .expect("valid");
    h.record(&Observation::new("r1", "old", Arm::Canary, Outcome::Ok).latency(10.0).phase(0))
        .expect("valid");
    h.start_phase(PhaseConfig::canary(0.5), t0() + Duration::minutes(5)).expect("valid");
    h.record(&Observation::new("r1", "new", Arm::Canary, Outcome::Ok).latency(10.0).phase(1))
        .expect("valid");
    // the remembered request of phase 0: stale in phase 1
    assert_eq!(
        h.record_quality(&QualityUpdate::new("r1", "old", 1.0)).expect("valid"),
        RecordOutcome::Stale
    );
    // the request of phase 1: counted in phase 1
    assert_eq!(
        h.record_quality(&QualityUpdate::new("r1", "new", 5.0)).expect("valid"),
        RecordOutcome::QualityRecorded
    );
    // not remembered: the sender's phase decides
    let forgotten = QualityUpdate {
        arm: Some(Arm::Control),
        phase: Some(0),
        ..QualityUpdate::new("r1", "gone", 1.0)
    };
    assert_eq!(h.record_quality(&forgotten).expect("valid"), RecordOutcome::Stale);
    let current = QualityUpdate { phase: Some(1), ..forgotten.clone() };
    assert_eq!(h.record_quality(&current).expect("valid"), RecordOutcome::QualityRecorded);
    let unphased = QualityUpdate { phase: None, request_id: "gone-too".into(), ..forgotten };
    assert_eq!(h.record_quality(&unphased).expect("valid"), RecordOutcome::Unphased);
    let canary = h.arm_stats(&Arm::Canary).expect("arm");
    assert_eq!((canary.quality.count(), canary.quality.mean(), canary.stale), (1, Some(5.0), 1));
    let control = h.arm_stats(&Arm::Control).expect("arm");
    assert_eq!((control.quality.count(), control.stale, control.unphased), (1, 1, 1));
    // an outcome of the earlier phase is dropped as stale too
    let late = Observation::new("r1", "late", Arm::Control, Outcome::Error).latency(10.0).phase(0);
    assert_eq!(h.record(&late).expect("valid"), RecordOutcome::Stale);
    assert_eq!(h.arm_stats(&Arm::Control).expect("arm").requests, 0);
}

/// A retry that the router sent to the other arm is the same logical request: counted once.
#[test]
fn a_retry_on_the_other_arm_counts_once() {
    let mut h = RolloutHealth::new(
        "r1",
        "",
        AnalysisMode::Canary,
        config(),
        PhaseConfig::canary(0.5),
        t0(),
    )
    .expect("valid");
    let first = Observation::new("r1", "req-1", Arm::Canary, Outcome::Error).latency(10.0);
    assert_eq!(h.record(&first).expect("valid"), RecordOutcome::Recorded);
    let retry = Observation::new("r1", "req-1", Arm::Control, Outcome::Ok).latency(10.0);
    assert_eq!(h.record(&retry).expect("valid"), RecordOutcome::Duplicate);
    assert_eq!(h.arm_stats(&Arm::Control).expect("arm").requests, 0);
    assert_eq!(h.duplicates(), 1);
    // while rolled back only the stable arm counts, once per logical request
    assert!(h.remember_request("rb-1"));
    assert!(!h.remember_request("rb-1"));
    assert!(!h.remember_request("req-1"));
}

/// A/A over several phases whose canary users stay canary users as the share grows (nested
/// sticky assignment, as consistent hashing does): returning users are detected and each
/// phase is judged alone on 1/K of the budget, so false rollbacks stay within α over the
/// whole rollout. Returns the end and the monitor.
fn simulate_phases(
    seed: u64,
    shares: &[f64],
    per_phase: u64,
    with_unit: bool,
) -> (End, RolloutHealth) {
    let mut rng = Rng(mix(seed ^ 0x7068_6173_6573));
    // 3,000 users: a position u in [0, 1) (canary while u < share), a unit hash and traits
    let pop = Population::new(seed, 3_000, 0.0, 0.02);
    let pos: Vec<f64> = pop.users.iter().map(|_| rng.uniform()).collect();
    let mut h = RolloutHealth::new(
        "r1",
        "",
        AnalysisMode::Canary,
        config(),
        PhaseConfig::canary(shares[0]).min(u64::MAX, i64::MAX),
        t0(),
    )
    .expect("valid");
    h.set_planned_phases(u32::try_from(shares.len()).expect("few phases"));
    let mut clock = 0_i64;
    for (p, &share) in shares.iter().enumerate() {
        let phase = u32::try_from(p).expect("few phases");
        if p > 0 {
            let at = t0() + Duration::seconds(clock);
            h.start_phase(PhaseConfig::canary(share).min(u64::MAX, i64::MAX), at).expect("valid");
        }
        for i in 0..per_phase {
            clock += 1;
            let k = pop.pick(&mut rng);
            let u = &pop.users[k];
            let arm = if pos[k] < share { Arm::Canary } else { Arm::Control };
            let o = observe(&mut rng, u, format!("q{p}-{i}"), arm, 1.0, phase, with_unit);
            h.record(&o).expect("valid observation");
            if (i + 1) % 500 == 0 {
                match h.look(t0() + Duration::seconds(clock)).decision {
                    Decision::Rollback { .. } => return (End::Rollback, h),
                    Decision::Halt { .. } => return (End::Halt, h),
                    _ => {}
                }
            }
        }
    }
    (End::Other, h)
}

#[test]
fn returning_users_are_judged_phase_by_phase_and_keep_the_budget() {
    use actuator_health::UnitsRecur;
    let shares = [0.1, 0.25, 0.5];
    let runs = 150;
    let ends: Vec<End> =
        (0..runs).map(|s| simulate_phases(9_000 + s, &shares, 4_000, true).0).collect();
    let (rb, halt) = (count(&ends, End::Rollback), count(&ends, End::Halt));
    eprintln!("nested sticky phases: {rb} rollbacks, {halt} halts of {runs}");
    // budget 5% (7.5 of 150), with room for simulation noise (sd ≈ 2.7 runs)
    assert!(rb <= 12, "{rb} false rollbacks of {runs}");
    // the status says how the phases were combined
    let (_, mut h) = simulate_phases(3, &shares, 1_000, true);
    let eval = h.look(t0() + Duration::hours(2));
    assert_eq!(eval.explanation.comparisons[0].units_return, UnitsRecur::Yes);
    // without units (a per-request split) every request is its own unit: the phases multiply
    let (_, mut h) = simulate_phases(3, &shares, 1_000, false);
    let eval = h.look(t0() + Duration::hours(2));
    assert_eq!(eval.explanation.comparisons[0].units_return, UnitsRecur::No);
}

#[test]
fn distinct_keys_are_not_taken_for_returning_users() {
    use actuator_health::UnitsRecur;
    // every request its own targeting key: unit hashes repeat only by chance
    let mut rng = Rng(42);
    let mut h = RolloutHealth::new(
        "r1",
        "",
        AnalysisMode::Canary,
        config(),
        PhaseConfig::canary(0.5).min(u64::MAX, i64::MAX),
        t0(),
    )
    .expect("valid");
    h.set_planned_phases(5);
    for i in 0..3_000 {
        let arm = if rng.uniform() < 0.5 { Arm::Canary } else { Arm::Control };
        let o = Observation::new("r1", format!("q{i}"), arm, Outcome::Ok)
            .latency(300.0 + 100.0 * rng.uniform())
            .unit((rng.next_u64() >> 48) as u16)
            .phase(0);
        h.record(&o).expect("valid observation");
    }
    let eval = h.look(t0() + Duration::minutes(10));
    assert_eq!(eval.explanation.comparisons[0].units_return, UnitsRecur::No);
    assert_eq!(h.units_recur(), UnitsRecur::No);
}
