//! Behaviour a user notices: rollbacks name the rule, equal canaries get promoted, minimums
//! never block a rollback, the catastrophic guard is fast, retries and late scores are handled.

use actuator_health::{
    AnalysisMode, Arm, CheckStatus, Decision, HaltReason, HealthConfig, HealthError,
    MarginOverrides, MetricVerdict, Observation, Outcome, PhaseConfig, PrimaryMetric,
    QualityUpdate, RecordOutcome, RolloutHealth, RuleKind, StageRole, UnreachablePolicy,
};
use chrono::{DateTime, Duration, TimeZone, Utc};

/// Small deterministic PRNG (splitmix64) with normal and Bernoulli draws.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
    fn bernoulli(&mut self, p: f64) -> bool {
        self.uniform() < p
    }
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).single().expect("valid date")
}

#[derive(Clone, Copy)]
struct ArmModel {
    error_rate: f64,
    median_ms: f64,
    sigma: f64,
}

const BASE: ArmModel = ArmModel { error_rate: 0.01, median_ms: 400.0, sigma: 0.6 };

fn obs(rng: &mut Rng, id: u64, arm: Arm, m: ArmModel) -> Observation {
    let err = rng.bernoulli(m.error_rate);
    let latency = m.median_ms * (m.sigma * rng.normal()).exp();
    let cost = 0.002 * (0.5 * rng.normal()).exp();
    let quality = (4.0 + rng.normal()).round().clamp(1.0, 5.0);
    Observation::new("r1", format!("req-{id}"), arm, if err { Outcome::Error } else { Outcome::Ok })
        .latency(latency)
        .ttft(latency / 4.0)
        .tokens(500, 200)
        .cost(cost)
        .quality(quality)
}

fn monitor(phase: PhaseConfig) -> RolloutHealth {
    RolloutHealth::new(
        "r1",
        "assistant.model",
        AnalysisMode::Canary,
        HealthConfig::default(),
        phase,
        t0(),
    )
    .expect("valid configuration")
}

/// Feeds `per_look` canary requests (and the matching control share) per look, and returns
/// the first non-continue decision with the canary count at which it happened.
fn run(
    h: &mut RolloutHealth,
    rng: &mut Rng,
    share: f64,
    canary: ArmModel,
    control: ArmModel,
    max_looks: u64,
) -> (Decision, u64) {
    let per_look = 100u64;
    let ctrl_per_look = (per_look as f64 * (1.0 - share) / share).round() as u64;
    // ids unique across calls, so a second run is not mistaken for retries
    static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1 << 40);
    let mut id = NEXT_ID.fetch_add(1 << 24, std::sync::atomic::Ordering::Relaxed);
    for look in 1..=max_looks {
        for _ in 0..per_look {
            id += 1;
            h.record(&obs(rng, id, Arm::Canary, canary)).expect("valid observation");
        }
        for _ in 0..ctrl_per_look {
            id += 1;
            h.record(&obs(rng, id, Arm::Control, control)).expect("valid observation");
        }
        let now = t0() + Duration::minutes(i64::try_from(look).expect("small"));
        let ev = h.look(now);
        if ev.decision != Decision::Continue {
            return (ev.decision, look * per_look);
        }
    }
    (Decision::Continue, max_looks * per_look)
}

#[test]
fn canary_with_double_errors_is_rolled_back_naming_the_error_rule() {
    let mut h = monitor(PhaseConfig::canary(0.5));
    let mut rng = Rng(7);
    let canary = ArmModel { error_rate: 0.04, ..BASE };
    let control = ArmModel { error_rate: 0.02, ..BASE };
    let (d, n) = run(&mut h, &mut rng, 0.5, canary, control, 200);
    let Decision::Rollback { arm, rules } = d else {
        panic!("expected a rollback, got {d:?} at {n}")
    };
    assert_eq!(arm, Arm::Canary);
    assert!(
        rules.iter().any(|r| r.kind == RuleKind::Sequential && r.metric == "errors"),
        "{rules:?}"
    );
    let ev = h.last_evaluation().expect("looked");
    let errors = ev.explanation.comparisons[0]
        .metrics
        .iter()
        .find(|m| m.metric == "errors")
        .expect("errors metric");
    // The weighted e-average fires on the combined evidence; errors carry the most of it.
    assert!(errors.estimate.expect("estimate") > 0.0);
    let top = ev.explanation.comparisons[0]
        .metrics
        .iter()
        .max_by(|a, b| a.log_e_total.total_cmp(&b.log_e_total))
        .expect("metrics");
    assert_eq!(top.metric, "errors", "errors carry the most evidence");
    assert!(n < 20_000);
}

#[test]
fn equal_canary_is_promoted_only_after_min_samples() {
    let phase = PhaseConfig::canary(0.5).min(2000, 600);
    let phase = PhaseConfig {
        margins: MarginOverrides { errors_abs: Some(0.01), ..MarginOverrides::default() },
        ..phase
    };
    let mut h = monitor(phase);
    let mut rng = Rng(11);
    let (d, n) = run(&mut h, &mut rng, 0.5, BASE, BASE, 200);
    assert_eq!(d, Decision::Promote { arm: Arm::Canary }, "after {n} canary requests");
    assert!(n >= 2000, "promoted at {n} < min_samples");
    let ev = h.last_evaluation().expect("looked");
    assert!(ev.explanation.comparisons[0].metrics.iter().all(|m| !m.blocking
        && matches!(m.verdict, MetricVerdict::NonInferior | MetricVerdict::NotRequired)));
    assert!(ev.explanation.gates.elapsed_secs >= 600);
}

#[test]
fn min_samples_and_duration_never_block_rollback() {
    let mut h = monitor(PhaseConfig::canary(0.5).min(1_000_000, 86_400));
    let mut rng = Rng(3);
    let canary = ArmModel { error_rate: 0.15, ..BASE };
    let (d, n) = run(&mut h, &mut rng, 0.5, canary, BASE, 50);
    let Decision::Rollback { rules, .. } = &d else { panic!("expected a rollback, got {d:?}") };
    // 15% errors against 1%: the sequential error test (not the catastrophic guard, which
    // needs 50%) decided, long before a million requests or a day.
    assert!(
        rules.iter().any(|r| r.metric == "errors" && r.kind == RuleKind::Sequential),
        "{rules:?}"
    );
    assert!(rules.iter().all(|r| r.kind != RuleKind::Catastrophic), "{rules:?}");
    assert!(n <= 300, "rolled back only after {n}");
}

#[test]
fn catastrophic_guard_fires_within_twenty_requests() {
    let mut h = monitor(PhaseConfig::canary(0.5).min(1000, 3600));
    for i in 0..19 {
        h.record(&Observation::new("r1", format!("c{i}"), Arm::Canary, Outcome::Error))
            .expect("valid");
    }
    assert!(!matches!(h.look(t0()).decision, Decision::Rollback { .. }) || h.phase_index() == 0);
    h.record(&Observation::new("r1", "c19", Arm::Canary, Outcome::Error)).expect("valid");
    let d = h.look(t0()).decision;
    let Decision::Rollback { rules, .. } = d else { panic!("expected rollback, got {d:?}") };
    assert_eq!(rules[0].kind, RuleKind::Catastrophic);
    assert!(rules[0].message.contains("20 errors in 20"));
}

#[test]
fn catastrophic_guard_needs_twenty_requests() {
    let mut h = monitor(PhaseConfig::canary(0.5));
    for i in 0..19 {
        h.record(&Observation::new("r1", format!("c{i}"), Arm::Canary, Outcome::Error))
            .expect("valid");
        h.record(
            &Observation::new("r1", format!("k{i}"), Arm::Control, Outcome::Ok).latency(100.0),
        )
        .expect("valid");
    }
    let d = h.look(t0()).decision;
    assert!(
        !matches!(&d, Decision::Rollback { rules, .. } if rules.iter().any(|r| r.kind == RuleKind::Catastrophic)),
        "{d:?}"
    );
}

#[test]
fn retries_with_the_same_request_id_count_once() {
    let mut h = monitor(PhaseConfig::canary(0.5));
    let o = Observation::new("r1", "same", Arm::Canary, Outcome::Error).latency(50.0);
    assert_eq!(h.record(&o).expect("valid"), RecordOutcome::Recorded);
    assert_eq!(h.record(&o).expect("valid"), RecordOutcome::Duplicate);
    let retry_ok = Observation::new("r1", "same", Arm::Canary, Outcome::Ok).latency(60.0);
    assert_eq!(h.record(&retry_ok).expect("valid"), RecordOutcome::Duplicate);
    let s = h.arm_stats(&Arm::Canary).expect("arm");
    assert_eq!((s.requests, s.errors), (1, 1));
    assert_eq!(h.duplicates(), 2);
}

#[test]
fn late_quality_score_updates_the_quality_metric() {
    let mut h = monitor(PhaseConfig::canary(0.5));
    h.record(&Observation::new("r1", "q1", Arm::Canary, Outcome::Ok).latency(10.0)).expect("valid");
    assert_eq!(h.arm_stats(&Arm::Canary).expect("arm").quality.count(), 0);
    let up = QualityUpdate::new("r1", "q1", 2.0);
    assert_eq!(h.record_quality(&up).expect("valid"), RecordOutcome::QualityRecorded);
    let q = &h.arm_stats(&Arm::Canary).expect("arm").quality;
    assert_eq!((q.count(), q.mean()), (1, Some(2.0)));
    assert_eq!(
        h.record_quality(&up).expect("valid"),
        RecordOutcome::QualityIgnored,
        "second score ignored"
    );
    let unknown = QualityUpdate { request_id: "never-seen".into(), ..up.clone() };
    assert!(matches!(h.record_quality(&unknown), Err(HealthError::UnknownRequest(_))));
    // not remembered: the sender's arm and phase decide; without a phase it is dropped
    let with_arm = QualityUpdate { arm: Some(Arm::Control), score: 5.0, ..unknown };
    assert_eq!(h.record_quality(&with_arm).expect("valid"), RecordOutcome::Unphased);
    let with_phase = QualityUpdate { phase: Some(0), ..with_arm };
    assert_eq!(h.record_quality(&with_phase).expect("valid"), RecordOutcome::QualityRecorded);
    let bad = QualityUpdate { score: 9.0, ..up };
    assert!(h.record_quality(&bad).is_err());
}

#[test]
fn timeouts_count_as_errors_with_latency_at_the_timeout() {
    let config = HealthConfig { timeout_ms: Some(30_000.0), ..HealthConfig::default() };
    let mut h =
        RolloutHealth::new("r1", "", AnalysisMode::Canary, config, PhaseConfig::canary(0.5), t0())
            .expect("valid");
    h.record(&Observation::new("r1", "t1", Arm::Canary, Outcome::Timeout)).expect("valid");
    h.record(&Observation::new("r1", "t2", Arm::Canary, Outcome::Timeout).latency(12.0))
        .expect("valid");
    let s = h.arm_stats(&Arm::Canary).expect("arm");
    assert_eq!((s.requests, s.timeouts, s.error_events()), (2, 2, 2));
    assert_eq!(s.latency.count(), 2);
    assert!((s.latency.mean().expect("mean") - 30_000.0).abs() < 1e-9);
    let mut strict = monitor(PhaseConfig::canary(0.5));
    let err = strict
        .record(&Observation::new("r1", "t3", Arm::Canary, Outcome::Timeout))
        .expect_err("needs a latency");
    assert!(err.to_string().contains("timeout_ms"), "{err}");
}

#[test]
fn invalid_observations_get_clear_errors_and_change_nothing() {
    let mut h = monitor(PhaseConfig::canary(0.5));
    let ok = |id: &str| Observation::new("r1", id, Arm::Canary, Outcome::Ok).latency(100.0);
    let cases = [
        (ok("a").latency(f64::NAN), "NaN"),
        (ok("b").latency(-5.0), "negative"),
        (ok("c").quality(7.0), "outside"),
        (Observation::new("r1", "d", Arm::Shadow, Outcome::Ok).latency(1.0), "unknown arm"),
        (Observation::new("other", "e", Arm::Canary, Outcome::Ok).latency(1.0), "rollout"),
        (ok("f").cost(f64::INFINITY), "infinite"),
        (Observation::new("r1", "g", Arm::Canary, Outcome::Ok), "required"),
        (ok(""), "empty"),
    ];
    for (o, needle) in cases {
        let e = h.record(&o).expect_err("must be rejected");
        assert!(e.to_string().contains(needle), "{e} should mention {needle}");
    }
    assert_eq!(h.arm_stats(&Arm::Canary).expect("arm").requests, 0);
    let report = h.record_batch(&[ok("x"), ok("y").latency(-1.0), ok("x")]);
    assert_eq!((report.recorded, report.duplicates, report.errors.len()), (1, 1, 1));
    assert_eq!(report.errors[0].0, 1);
}

#[test]
fn memory_does_not_grow_with_observation_count() {
    let config = HealthConfig { dedup_capacity: 1000, ..HealthConfig::default() };
    let mut h =
        RolloutHealth::new("r1", "", AnalysisMode::Canary, config, PhaseConfig::canary(0.5), t0())
            .expect("valid");
    let mut rng = Rng(5);
    let mut sizes = Vec::new();
    let mut id = 0u64;
    for target in [1_000u64, 100_000, 1_000_000] {
        while id < target {
            id += 1;
            let arm = if id.is_multiple_of(2) { Arm::Canary } else { Arm::Control };
            h.record(&obs(&mut rng, id, arm, BASE)).expect("valid");
        }
        h.look(t0());
        let json = serde_json::to_string(&h).expect("serializable").len();
        sizes.push((h.approx_bytes(), json));
    }
    let (b1k, j1k) = sizes[0];
    let (b100k, j100k) = sizes[1];
    let (b1m, j1m) = sizes[2];
    assert!(b1m < 2 * b1k && j1m < 2 * j1k, "1k: {b1k} B / {j1k} json, 1M: {b1m} B / {j1m} json");
    assert!(b1m as f64 <= 1.1 * b100k as f64 && j1m as f64 <= 1.1 * j100k as f64, "{sizes:?}");
    assert!(b1m < 512 * 1024, "{b1m} bytes");
}

#[test]
fn state_round_trips_and_resumes_with_identical_decisions() {
    let mut a = monitor(PhaseConfig::canary(0.2));
    let mut rng = Rng(9);
    let canary = ArmModel { error_rate: 0.015, median_ms: 440.0, ..BASE };
    let _ = run(&mut a, &mut rng, 0.2, canary, BASE, 3);
    let json = serde_json::to_string(&a).expect("serializable");
    let mut b: RolloutHealth = serde_json::from_str(&json).expect("deserializable");
    assert_eq!(serde_json::to_string(&b).expect("serializable"), json, "exact round trip");
    let mut rng_a = Rng(99);
    let mut rng_b = Rng(99);
    let da = run(&mut a, &mut rng_a, 0.2, canary, BASE, 20);
    let db = run(&mut b, &mut rng_b, 0.2, canary, BASE, 20);
    assert_eq!(da, db);
    assert_eq!(
        serde_json::to_string(a.last_evaluation().expect("looked")).expect("json"),
        serde_json::to_string(b.last_evaluation().expect("looked")).expect("json")
    );
}

#[test]
fn evidence_carries_across_phases_and_tail_thresholds_freeze() {
    let mut h = monitor(PhaseConfig::canary(0.05));
    let mut rng = Rng(21);
    let canary = ArmModel { error_rate: 0.02, ..BASE };
    let _ = run(&mut h, &mut rng, 0.05, canary, BASE, 5);
    let before = h.log_e_value(&Arm::Canary, "errors").expect("metric");
    assert!(before > 0.0);
    h.start_phase(PhaseConfig::canary(0.25), t0() + Duration::hours(1)).expect("valid phase");
    assert_eq!(h.phase_index(), 1);
    let after = h.log_e_value(&Arm::Canary, "errors").expect("metric");
    assert!((after - before).abs() < 1e-12, "carried {after} vs {before}");
    let _ = run(&mut h, &mut rng, 0.25, canary, BASE, 1);
    let ev = h.last_evaluation().expect("looked");
    let tail = ev.explanation.comparisons[0]
        .metrics
        .iter()
        .find(|m| m.metric == "tail:q0.95")
        .expect("tail");
    assert!(tail.note.as_deref().unwrap_or("").contains("above"), "{tail:?}");
    assert!(h.start_phase(PhaseConfig::shadow(), t0()).is_err(), "arms must not change");
}

#[test]
fn ab_test_picks_the_faster_arm() {
    let phase = PhaseConfig::ab(0.34, &["fast", "same"]).min(500, 0);
    let mut h = RolloutHealth::new(
        "r1",
        "",
        AnalysisMode::AbTest { primary: PrimaryMetric::Latency },
        HealthConfig::default(),
        phase,
        t0(),
    )
    .expect("valid");
    let mut rng = Rng(4);
    let fast = ArmModel { median_ms: 300.0, ..BASE };
    let mut decision = Decision::Continue;
    for i in 0..30_000u64 {
        let (arm, m) = match i % 3 {
            0 => (Arm::Control, BASE),
            1 => (Arm::Named("fast".into()), fast),
            _ => (Arm::Named("same".into()), BASE),
        };
        h.record(&obs(&mut rng, i, arm, m)).expect("valid");
        if i % 300 == 299 {
            decision = h.look(t0()).decision;
            if decision != Decision::Continue {
                break;
            }
        }
    }
    assert_eq!(decision, Decision::Promote { arm: Arm::Named("fast".into()) });
}

#[test]
fn no_control_without_baseline_uses_absolute_slo_guards() {
    let mut bad = RolloutHealth::new(
        "r1",
        "",
        AnalysisMode::NoControl,
        HealthConfig::default(),
        PhaseConfig::rolling(0.1).min(200, 0),
        t0(),
    )
    .expect("valid");
    let mut good = bad.clone();
    let mut rng = Rng(8);
    let mut bad_d = Decision::Continue;
    for i in 0..2000u64 {
        bad.record(&obs(
            &mut rng,
            i,
            Arm::Canary,
            ArmModel { error_rate: 0.2, median_ms: 200.0, sigma: 0.3 },
        ))
        .expect("valid");
        if i % 100 == 99 {
            bad_d = bad.look(t0()).decision;
            if bad_d != Decision::Continue {
                break;
            }
        }
    }
    let Decision::Rollback { rules, .. } = bad_d else { panic!("{bad_d:?}") };
    assert!(
        rules.iter().any(|r| r.metric == "slo:error_rate<=0.01" && r.kind == RuleKind::SloGuard),
        "{rules:?}"
    );
    let healthy = ArmModel { error_rate: 0.001, median_ms: 200.0, sigma: 0.3 };
    let mut good_d = Decision::Continue;
    for i in 0..2000u64 {
        good.record(&obs(&mut rng, i, Arm::Canary, healthy)).expect("valid");
        if i % 100 == 99 {
            good_d = good.look(t0()).decision;
            if good_d != Decision::Continue {
                break;
            }
        }
    }
    assert_eq!(good_d, Decision::Promote { arm: Arm::Canary });
}

#[test]
fn sample_ratio_mismatch_halts() {
    let mut h = monitor(PhaseConfig::canary(0.5));
    for i in 0..3000u64 {
        let arm = if i % 10 < 3 { Arm::Canary } else { Arm::Control };
        h.record(&Observation::new("r1", format!("s{i}"), arm, Outcome::Ok).latency(100.0))
            .expect("valid");
    }
    let d = h.look(t0()).decision;
    assert!(
        matches!(d, Decision::Halt { reason: HaltReason::SampleRatioMismatch { .. } }),
        "{d:?}"
    );
}

#[test]
fn slo_guards_compare_against_control_not_just_thresholds() {
    // p95 is above 1000 ms in BOTH arms: the guard reports that the stable breaks it too.
    let mut h = monitor(PhaseConfig::canary(0.5));
    let mut rng = Rng(31);
    let slow = ArmModel { error_rate: 0.0, median_ms: 900.0, sigma: 0.6 };
    let (d, _) = run(&mut h, &mut rng, 0.5, slow, slow, 20);
    assert!(!matches!(d, Decision::Rollback { .. }), "{d:?}");
    let ev = h.last_evaluation().expect("looked");
    let p95 = ev.explanation.comparisons[0]
        .checks
        .iter()
        .find(|c| c.check == "slo:p95<=1000ms")
        .expect("check");
    assert_eq!(p95.status, CheckStatus::StableBreaks);
    assert!(p95.stable_breaks && p95.note.as_deref().unwrap_or("").contains("stable breaks"));
    assert_eq!(ev.explanation.comparisons[0].checks.len(), 6);
}

#[test]
fn history_is_bounded() {
    let config = HealthConfig { history_capacity: 5, ..HealthConfig::default() };
    let mut h =
        RolloutHealth::new("r1", "", AnalysisMode::Canary, config, PhaseConfig::canary(0.5), t0())
            .expect("valid");
    for i in 0..20 {
        h.look(t0() + Duration::seconds(i));
    }
    assert!(h.history().count() <= 5);
    // A full history is thinned, not cut: it still starts at the first look and ends at the
    // last, in time order.
    let at: Vec<_> = h.history().map(|r| r.at).collect();
    assert_eq!(at.first(), Some(&t0()), "{at:?}");
    assert_eq!(at.last(), Some(&(t0() + Duration::seconds(19))), "{at:?}");
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{at:?}");

    // A long phase: the default 64 looks cover the whole of 10,000.
    let mut h = monitor(PhaseConfig::canary(0.5));
    for i in 0..10_000 {
        h.look(t0() + Duration::seconds(i));
    }
    let at: Vec<_> = h.history().map(|r| r.at).collect();
    assert!(at.len() <= 64 && at.len() >= 32, "{}", at.len());
    assert_eq!(at[0], t0());
    assert_eq!(at.last(), Some(&(t0() + Duration::seconds(9_999))));
}

#[test]
fn history_points_carry_each_metric_for_charts() {
    let mut h = monitor(PhaseConfig::canary(0.5));
    let mut rng = Rng(5);
    let _ = run(&mut h, &mut rng, 0.5, BASE, BASE, 2);
    let r = h.history().last().expect("a look");
    assert_eq!(r.arm.as_deref(), Some("canary"));
    assert!(r.log_threshold.is_some_and(|t| t > 0.0));
    let errors = r.metrics.iter().find(|m| m.metric == "errors").expect("errors");
    let (lo, e, hi) = (errors.lower.unwrap(), errors.estimate.unwrap(), errors.upper.unwrap());
    assert!(lo <= e && e <= hi, "the interval holds its estimate: {errors:?}");
    let json = serde_json::to_string(r).unwrap();
    assert!(json.contains("\"m\":\"errors\""), "{json}");
    // Four significant digits: a stored look stays small.
    assert!(json.len() < 1200, "{} bytes: {json}", json.len());
    let whole: usize = h.history().map(|r| serde_json::to_string(r).unwrap().len()).sum();
    eprintln!("one look {} bytes, the history {whole} bytes", json.len());
    let back: actuator_health::HealthRecord = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, r);
    // A record stored before the points existed still reads.
    let old = r#"{"at":"2026-01-01T00:00:00Z","phase":0,"decision":{"kind":"continue"},"rule":"x","max_combined_log_e":0.0,"samples":1}"#;
    let old: actuator_health::HealthRecord = serde_json::from_str(old).unwrap();
    assert!(old.metrics.is_empty());
}

#[test]
fn shadow_mode_counts_the_same_request_in_both_arms() {
    let mut h = RolloutHealth::new(
        "r1",
        "",
        AnalysisMode::Shadow,
        HealthConfig::default(),
        PhaseConfig::shadow(),
        t0(),
    )
    .expect("valid");
    let a = Observation::new("r1", "x", Arm::Control, Outcome::Ok).latency(10.0);
    let b = Observation { arm: Arm::Shadow, ..a.clone() };
    assert_eq!(h.record(&a).expect("valid"), RecordOutcome::Recorded);
    assert_eq!(h.record(&b).expect("valid"), RecordOutcome::Recorded);
    assert_eq!(h.look(t0()).decision, Decision::Continue);
}

#[test]
fn spent_budget_is_inconclusive_with_a_projection() {
    let phase = PhaseConfig::canary(0.5).min(100, 0).max(Some(500), None);
    let mut h = monitor(phase);
    let mut rng = Rng(17);
    let (d, n) = run(&mut h, &mut rng, 0.5, BASE, BASE, 10);
    let Decision::Inconclusive { needed } = d else { panic!("expected inconclusive, got {d:?}") };
    assert_eq!(n, 500);
    assert!(
        needed.iter().any(|p| p.metric == "errors" && p.additional_requests.is_some_and(|k| k > 0)),
        "{needed:?}"
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn any_obs() -> impl Strategy<Value = Observation> {
        (
            0u64..40,
            prop_oneof![Just(Arm::Control), Just(Arm::Canary), Just(Arm::Shadow)],
            prop_oneof![
                Just(Outcome::Ok),
                Just(Outcome::Error),
                Just(Outcome::Timeout),
                Just(Outcome::Refused)
            ],
            prop_oneof![Just(None), (-10.0f64..5000.0).prop_map(Some), Just(Some(f64::NAN))],
            prop_oneof![Just(None), (0.0f64..7.0).prop_map(Some)],
            prop_oneof![Just(None), (-1.0f64..1.0).prop_map(Some)],
        )
            .prop_map(|(id, arm, outcome, latency, quality, cost)| {
                let mut o = Observation::new("r1", format!("p{id}"), arm, outcome);
                o.latency_ms = latency;
                o.quality = quality;
                o.cost = cost;
                o
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn rejected_items_change_nothing_and_state_stays_serializable(batch in proptest::collection::vec(any_obs(), 0..200)) {
            let mut h = monitor(PhaseConfig::canary(0.3));
            for o in &batch {
                let before = serde_json::to_string(&h).expect("json");
                if h.record(o).is_err() {
                    prop_assert_eq!(serde_json::to_string(&h).expect("json"), before);
                }
            }
            let ev = h.look(t0());
            for c in &ev.explanation.comparisons {
                prop_assert!(c.combined_log_e.is_finite());
                prop_assert!((0.0..=1.0).contains(&c.p_value));
            }
            let json = serde_json::to_string(&h).expect("json");
            let back: RolloutHealth = serde_json::from_str(&json).expect("round trip");
            prop_assert_eq!(serde_json::to_string(&back).expect("json"), json);
        }
    }
}

#[test]
fn reserved_or_duplicate_arm_names_are_rejected() {
    let mode = AnalysisMode::AbTest { primary: PrimaryMetric::ErrorRate };
    let cfg = HealthConfig::default();
    assert!(
        RolloutHealth::new(
            "r1",
            "",
            mode.clone(),
            cfg.clone(),
            PhaseConfig::ab(0.5, &["Canary"]),
            t0()
        )
        .is_err()
    );
    assert!(
        RolloutHealth::new(
            "r1",
            "",
            mode.clone(),
            cfg.clone(),
            PhaseConfig::ab(0.5, &["b", "b"]),
            t0()
        )
        .is_err()
    );
    assert!(
        RolloutHealth::new("r1", "", mode, cfg.clone(), PhaseConfig::ab(0.5, &["b"]), t0()).is_ok()
    );
    assert!(
        RolloutHealth::new("r1", "", AnalysisMode::Canary, cfg, PhaseConfig::canary(1.5), t0())
            .is_err()
    );
}

/// Feeds only canary requests (no-control stages), one look per `per_look` requests, one
/// minute apart; returns the first non-continue decision.
fn run_alone(
    h: &mut RolloutHealth,
    rng: &mut Rng,
    canary: ArmModel,
    looks: u64,
    start: DateTime<Utc>,
) -> Decision {
    for look in 1..=looks {
        for i in 0..100 {
            h.record(&obs(rng, (1 << 50) + look * 1000 + i, Arm::Canary, canary)).expect("valid");
        }
        let d = h.look(start + Duration::minutes(i64::try_from(look).expect("small"))).decision;
        if d != Decision::Continue {
            return d;
        }
    }
    Decision::Continue
}

/// A monitor that went through a healthy 50% phase and hands over to the 100% step.
fn full_step(stable: ArmModel, rng: &mut Rng) -> (RolloutHealth, f64) {
    let mut h = monitor(PhaseConfig::canary(0.5).min(1_000_000, 0));
    let _ = run(&mut h, rng, 0.5, stable, stable, 30);
    let carried = h.log_e_value(&Arm::Canary, "errors").expect("metric");
    let handover = h.handover();
    let watch = RolloutHealth::new(
        "r1",
        "assistant.model",
        AnalysisMode::NoControl,
        HealthConfig::default(),
        PhaseConfig::rolling(1.0).min(2000, 600),
        t0() + Duration::hours(1),
    )
    .expect("valid")
    .with_handover(handover)
    .expect("no control");
    (watch, carried)
}

#[test]
fn full_step_keeps_the_budget_and_passes_a_healthy_candidate_whose_stable_p99_is_above_two_seconds()
{
    // Stable and candidate alike: median 900 ms, σ = 0.9, so p99 ≈ 7.3 s (above the 2 s SLO).
    let slow = ArmModel { error_rate: 0.01, median_ms: 900.0, sigma: 0.9 };
    let mut rng = Rng(41);
    let (mut h, carried) = full_step(slow, &mut rng);
    assert!(h.baseline().is_some_and(|b| b.requests() > 0));
    let now_carried = h.log_e_value(&Arm::Canary, "errors").expect("metric");
    assert!((now_carried - carried).abs() < 1e-9, "evidence continues: {now_carried} vs {carried}");
    let d = run_alone(&mut h, &mut rng, slow, 40, t0() + Duration::hours(1));
    assert_eq!(d, Decision::Promote { arm: Arm::Canary });
    let ev = h.last_evaluation().expect("looked");
    let p99 = ev.explanation.comparisons[0]
        .checks
        .iter()
        .find(|c| c.check == "slo:p99<=2000ms")
        .expect("guard");
    assert!(p99.stable_breaks, "{p99:?}");
}

#[test]
fn full_step_rolls_back_doubled_errors_against_the_frozen_baseline() {
    let mut rng = Rng(43);
    let (mut h, _) = full_step(BASE, &mut rng);
    let worse = ArmModel { error_rate: 0.04, ..BASE };
    let d = run_alone(&mut h, &mut rng, worse, 100, t0() + Duration::hours(1));
    let Decision::Rollback { rules, .. } = d else { panic!("expected rollback, got {d:?}") };
    assert!(
        rules.iter().any(|r| r.metric == "errors" || r.metric.starts_with("slo:")),
        "{rules:?}"
    );
}

#[test]
fn a_data_quality_halt_never_holds_back_a_rollback() {
    // Assignment is skewed (SRM) and the canary is much worse: the rollback wins.
    let mut h = monitor(PhaseConfig::canary(0.5));
    let mut rng = Rng(5);
    let bad = ArmModel { error_rate: 0.15, ..BASE };
    for i in 0..4000u64 {
        let (arm, m) = if i % 10 < 3 { (Arm::Canary, bad) } else { (Arm::Control, BASE) };
        h.record(&obs(&mut rng, i, arm, m)).expect("valid");
    }
    let d = h.look(t0()).decision;
    assert!(matches!(d, Decision::Rollback { .. }), "{d:?}");
}

fn ab(primary: PrimaryMetric) -> RolloutHealth {
    RolloutHealth::new(
        "r1",
        "",
        AnalysisMode::AbTest { primary },
        HealthConfig::default(),
        PhaseConfig::ab(0.5, &["b"]).min(500, 0),
        t0(),
    )
    .expect("valid")
}

fn run_ab(h: &mut RolloutHealth, rng: &mut Rng, b: ArmModel, n: u64) -> Decision {
    for i in 0..n {
        let (arm, m) = if i % 2 == 0 { (Arm::Control, BASE) } else { (Arm::Named("b".into()), b) };
        h.record(&obs(rng, i, arm, m)).expect("valid");
        if i % 200 == 199 {
            let d = h.look(t0()).decision;
            if d != Decision::Continue {
                return d;
            }
        }
    }
    Decision::Continue
}

#[test]
fn ab_control_wins_when_the_arm_is_worse_on_the_primary_metric() {
    let mut h = ab(PrimaryMetric::Latency);
    let slower = ArmModel { median_ms: 520.0, ..BASE };
    let d = run_ab(&mut h, &mut Rng(9), slower, 40_000);
    assert_eq!(d, Decision::Promote { arm: Arm::Control });
    let rule = &h.last_evaluation().expect("looked").explanation.rule;
    assert!(rule.contains("control wins"), "{rule}");
}

#[test]
fn ab_winner_must_be_non_inferior_on_every_other_metric() {
    // Faster (the primary metric) but with four times the errors: never declared the winner.
    let mut h = ab(PrimaryMetric::Latency);
    let fast_but_failing = ArmModel { median_ms: 300.0, error_rate: 0.04, ..BASE };
    let d = run_ab(&mut h, &mut Rng(10), fast_but_failing, 40_000);
    assert_ne!(d, Decision::Promote { arm: Arm::Named("b".into()) });
    for rec in h.history() {
        assert_ne!(rec.decision, Decision::Promote { arm: Arm::Named("b".into()) });
    }
}

#[test]
fn smoke_stage_uses_coarse_margins_and_does_not_wait_for_quality() {
    let mut h = monitor(PhaseConfig::canary(0.05).min(500, 0));
    let mut rng = Rng(12);
    let _ = run(&mut h, &mut rng, 0.05, BASE, BASE, 3);
    let ev = h.last_evaluation().expect("looked");
    assert_eq!(ev.explanation.role, StageRole::Smoke);
    let m = &ev.explanation.comparisons[0].metrics;
    let errors = m.iter().find(|x| x.metric == "errors").expect("errors");
    assert!(errors.margin.is_some_and(|d| d >= 0.01), "{errors:?}");
    let quality = m.iter().find(|x| x.metric == "quality").expect("quality");
    assert!(!quality.blocking, "{quality:?}");
}

#[test]
fn unreachable_metric_is_ignored_in_a_smoke_stage_and_blocks_a_prove_stage() {
    // 600 canary requests of budget cannot show errors non-inferior at +0.5 pp (prove) or
    // at +1 pp; latency and cost can. Smoke (ignore) promotes, prove (block) ends inconclusive.
    let phase = |role| {
        PhaseConfig::canary(0.5)
            .role(role)
            .min(500, 0)
            .max(Some(600), None)
            .margins(MarginOverrides { errors_abs: Some(0.005), ..MarginOverrides::default() })
    };
    let mut smoke = monitor(phase(StageRole::Smoke));
    let (d, _) = run(&mut smoke, &mut Rng(13), 0.5, BASE, BASE, 10);
    assert_eq!(d, Decision::Promote { arm: Arm::Canary });
    let ev = smoke.last_evaluation().expect("looked");
    let errors = ev.explanation.comparisons[0].metrics.iter().find(|m| m.metric == "errors");
    assert_eq!(errors.map(|m| m.verdict), Some(MetricVerdict::Unreachable));
    assert!(ev.explanation.rule.contains("cannot reach a verdict"), "{}", ev.explanation.rule);
    let mut prove = monitor(phase(StageRole::Prove));
    let (d, _) = run(&mut prove, &mut Rng(13), 0.5, BASE, BASE, 10);
    assert!(matches!(d, Decision::Inconclusive { .. }), "{d:?}");
}

#[test]
fn a_prove_stage_that_defers_promotes_at_its_minimums_unless_an_estimate_is_beyond_its_margin() {
    // 500 canary requests cannot show errors within +0.5 pp; a prove stage whose policy is
    // defer (a later prove stage follows) passes errors on at its minimums, long before its
    // budget of 100,000 requests, and says so.
    let phase = |errors_abs| PhaseConfig {
        unreachable: Some(UnreachablePolicy::Defer),
        ..PhaseConfig::canary(0.5)
            .role(StageRole::Prove)
            .min(500, 0)
            .max(Some(100_000), None)
            .margins(MarginOverrides { errors_abs: Some(errors_abs), ..MarginOverrides::default() })
    };
    let mut h = monitor(phase(0.005));
    let (d, n) = run(&mut h, &mut Rng(13), 0.5, BASE, BASE, 10);
    assert_eq!((d, n), (Decision::Promote { arm: Arm::Canary }, 500));
    let ev = h.last_evaluation().expect("looked");
    let errors = ev.explanation.comparisons[0].metrics.iter().find(|m| m.metric == "errors");
    assert_eq!(errors.map(|m| m.verdict), Some(MetricVerdict::Deferred));
    assert!(
        ev.explanation.rule.contains("deferred to the next prove stage"),
        "{}",
        ev.explanation.rule
    );
    // The same stage with block waits for the proof.
    let mut b =
        monitor(PhaseConfig { unreachable: Some(UnreachablePolicy::Block), ..phase(0.005) });
    let (d, _) = run(&mut b, &mut Rng(13), 0.5, BASE, BASE, 10);
    assert_eq!(d, Decision::Continue);
    // An estimate beyond its margin is not deferred: it holds the stage.
    let worse = ArmModel { error_rate: 0.02, ..BASE };
    let mut w = monitor(phase(0.001));
    let (d, _) = run(&mut w, &mut Rng(13), 0.5, worse, BASE, 8);
    assert!(!matches!(d, Decision::Promote { .. }), "{d:?}");
    let ev = w.last_evaluation().expect("looked");
    let errors = ev.explanation.comparisons[0].metrics.iter().find(|m| m.metric == "errors");
    assert_eq!(errors.map(|m| m.verdict), Some(MetricVerdict::BeyondMargin), "{errors:?}");
}

#[test]
fn every_look_states_what_holds_the_stage_with_a_projection() {
    let mut h = monitor(PhaseConfig::canary(0.25).min(1000, 0));
    let mut rng = Rng(14);
    // no traffic yet: still a reason, never a bare "?"
    let ev = h.look(t0());
    let hold = ev.explanation.holding.expect("something holds");
    assert!(!hold.reason.contains('?') && !hold.reason.is_empty(), "{hold:?}");
    let _ = run(&mut h, &mut rng, 0.25, BASE, BASE, 12);
    let ev = h.last_evaluation().expect("looked");
    if ev.decision == Decision::Continue {
        let hold = ev.explanation.holding.as_ref().expect("something holds");
        assert!(hold.eta_secs.is_some() || hold.what == "min_samples", "{hold:?}");
        assert!(hold.reason.contains("canary"), "{hold:?}");
    }
    let errors = ev.explanation.comparisons[0].metrics.iter().find(|m| m.metric == "errors");
    let errors = errors.expect("errors");
    if !errors.non_inferior {
        assert!(errors.additional_requests.is_some(), "{errors:?}");
    }
}

mod decision_properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]

        /// The reported interval always contains the reported (pooled) estimate, across
        /// phases with different shares.
        #[test]
        fn reported_interval_contains_its_estimate(seed in 0u64..10_000, worse in 0.0f64..0.02) {
            let mut h = monitor(PhaseConfig::canary(0.05).min(1_000_000, 0));
            let mut rng = Rng(seed);
            let canary = ArmModel { error_rate: 0.01 + worse, ..BASE };
            for (k, share) in [0.05, 0.25, 0.5].into_iter().enumerate() {
                if k > 0 {
                    h.start_phase(PhaseConfig::canary(share).min(1_000_000, 0), t0()).expect("phase");
                }
                for _ in 0..4 {
                    let _ = run(&mut h, &mut rng, share, canary, BASE, 1);
                    let ev = h.last_evaluation().expect("looked");
                    for m in &ev.explanation.comparisons[0].metrics {
                        if let (Some(l), Some(e), Some(u)) = (m.lower, m.estimate, m.upper) {
                            prop_assert!(l <= e && e <= u, "{}: {l} {e} {u}", m.metric);
                        }
                    }
                }
            }
        }

        /// Identical canary and control (the same outcome, latency, cost and score served
        /// to both) never roll back and never breach an SLO guard.
        #[test]
        fn identical_arms_never_roll_back(seed in 0u64..10_000) {
            let mut h = monitor(PhaseConfig::canary(0.5).min(1_000_000, 0));
            let mut rng = Rng(seed);
            for look in 0..20u64 {
                for i in 0..100u64 {
                    let o = obs(&mut rng, look * 1000 + i, Arm::Canary, ArmModel { error_rate: 0.03, ..BASE });
                    let c = Observation { request_id: format!("{}-c", o.request_id), arm: Arm::Control, ..o.clone() };
                    h.record(&o).expect("valid");
                    h.record(&c).expect("valid");
                }
                let ev = h.look(t0() + Duration::minutes(i64::try_from(look).expect("small")));
                prop_assert!(!matches!(ev.decision, Decision::Rollback { .. }), "{:?}", ev.decision);
                prop_assert!(ev.explanation.comparisons[0].checks.iter().all(|c| c.status != CheckStatus::Breach));
            }
        }
    }
}

#[test]
fn an_unknown_traffic_rate_never_makes_a_metric_unreachable() {
    // All requests arrive before the first look at elapsed 0 s: the time budget in requests
    // is unknown, so nothing may be waved through as "unreachable" in a stage that ignores
    // unreachable metrics within its maximum (a prove stage set to `ignore`; a smoke stage
    // decides within its minimums instead, which are known).
    let phase =
        PhaseConfig::canary(0.5).role(StageRole::Prove).min(200, 0).max(None, Some(3600)).margins(
            MarginOverrides {
                errors_abs: Some(0.002),
                errors_ratio: Some(1.01),
                ..MarginOverrides::default()
            },
        );
    let mut h = monitor(PhaseConfig { unreachable: Some(UnreachablePolicy::Ignore), ..phase });
    let mut rng = Rng(15);
    let clean = ArmModel { error_rate: 0.0, ..BASE };
    for i in 0..600u64 {
        let arm = if i % 2 == 0 { Arm::Canary } else { Arm::Control };
        h.record(&obs(&mut rng, i, arm, clean)).expect("valid");
    }
    let ev = h.look(t0());
    let errors = ev.explanation.comparisons[0].metrics.iter().find(|m| m.metric == "errors");
    assert_ne!(errors.map(|m| m.verdict), Some(MetricVerdict::Unreachable), "{errors:?}");
    assert_ne!(ev.decision, Decision::Promote { arm: Arm::Canary });
}

#[test]
fn remaining_rollback_delays_are_listed_with_their_reason() {
    let mut h = monitor(PhaseConfig::canary(0.5));
    let mut rng = Rng(16);
    for i in 0..20u64 {
        let arm = if i % 2 == 0 { Arm::Canary } else { Arm::Control };
        h.record(&obs(&mut rng, i, arm, BASE)).expect("valid");
    }
    let ev = h.look(t0());
    let delays = ev.explanation.delays.join("\n");
    assert!(delays.contains("latency: no rollback evidence until 20 values"), "{delays}");
    assert!(delays.contains("tail:q0.95") && delays.contains("frozen"), "{delays}");
    assert!(!delays.contains("errors"), "the error test has no burn-in: {delays}");
    let _ = run(&mut h, &mut rng, 0.5, BASE, BASE, 2);
    let ev = h.last_evaluation().expect("looked");
    assert!(
        !ev.explanation.delays.iter().any(|d| d.starts_with("latency")),
        "{:?}",
        ev.explanation.delays
    );
}

#[test]
fn a_smoke_stage_decides_within_its_minimums_and_a_blocking_one_waits() {
    // A/A at 1%: after 5 min and 200 canary requests nothing has shown a coarse
    // non-inferiority on errors (that takes ~1,000 canary requests), yet the smoke stage
    // promotes: it does not wait beyond its minimums for what they cannot show.
    let phase = PhaseConfig::canary(0.01).min(200, 300);
    assert_eq!(phase.role, StageRole::Smoke);
    let mut h = monitor(phase.clone());
    let mut rng = Rng(21);
    let (d, n) = run(&mut h, &mut rng, 0.01, BASE, BASE, 30);
    assert_eq!(d, Decision::Promote { arm: Arm::Canary }, "after {n} canary requests");
    assert!(n <= 1_000, "promoted only at {n}");
    let ev = h.last_evaluation().expect("looked");
    let errors = ev.explanation.comparisons[0]
        .metrics
        .iter()
        .find(|m| m.metric == "errors")
        .expect("errors metric");
    assert!(
        matches!(errors.verdict, MetricVerdict::Unreachable | MetricVerdict::NonInferior),
        "{errors:?}"
    );
    // The same stage told to block on unreachable metrics waits for the evidence.
    let mut h = monitor(PhaseConfig { unreachable: Some(UnreachablePolicy::Block), ..phase });
    let mut rng = Rng(21);
    let (d, m) = run(&mut h, &mut rng, 0.01, BASE, BASE, n / 100);
    assert_eq!(d, Decision::Continue, "a blocking smoke stage decided after {m}");
}

#[test]
fn a_latency_regression_too_small_for_one_phase_is_caught_by_the_pooled_evidence() {
    // Latency ×1.07 over phases of 1,000 canary requests each: one phase alone rarely reaches
    // latency's share of the budget, the mixture over the pooled estimate of all of them does.
    let slow = ArmModel { median_ms: BASE.median_ms * 1.07, ..BASE };
    let mut caught = 0;
    let mut pooled_beyond_phase = 0;
    for seed in 0..20u64 {
        let mut h = monitor(PhaseConfig::canary(0.5).min(1_000_000, 0));
        let mut rng = Rng(100 + seed);
        for phase in 0..6i64 {
            let (d, _) = run(&mut h, &mut rng, 0.5, slow, BASE, 10);
            if let Decision::Rollback { rules, .. } = &d {
                assert!(rules.iter().any(|r| r.metric == "latency"), "{rules:?}");
                caught += 1;
                let ev = h.last_evaluation().expect("looked");
                let lat = ev.explanation.comparisons[0]
                    .metrics
                    .iter()
                    .find(|m| m.metric == "latency")
                    .expect("latency");
                if phase > 0 && lat.log_e_phase < (1.0 / lat.alpha).ln() {
                    pooled_beyond_phase += 1;
                }
                break;
            }
            let next = t0() + Duration::hours(phase + 1);
            h.start_phase(PhaseConfig::canary(0.5).min(1_000_000, 0), next).expect("next phase");
        }
    }
    assert!(caught >= 18, "caught in {caught} of 20");
    assert!(
        pooled_beyond_phase >= 10,
        "the pooled evidence decided {pooled_beyond_phase} of {caught}"
    );
}

#[test]
fn an_equal_candidate_over_many_phases_keeps_the_budget() {
    // A/A over six phases of 1,000 canary requests: the pooled mixtures and the products
    // together stay inside α = 0.05 (expected about 1 rollback in 40; 5 would be 4 standard
    // deviations above α).
    let mut rollbacks = 0;
    for seed in 0..40u64 {
        let mut h = monitor(PhaseConfig::canary(0.5).min(1_000_000, 0));
        let mut rng = Rng(500 + seed);
        for phase in 0..6i64 {
            let (d, _) = run(&mut h, &mut rng, 0.5, BASE, BASE, 10);
            if matches!(d, Decision::Rollback { .. }) {
                rollbacks += 1;
                break;
            }
            let next = t0() + Duration::hours(phase + 1);
            h.start_phase(PhaseConfig::canary(0.5).min(1_000_000, 0), next).expect("next phase");
        }
    }
    assert!(rollbacks <= 5, "{rollbacks} false rollbacks in 40");
}

#[test]
fn a_flat_price_per_request_gives_no_evidence_and_a_higher_flat_price_is_caught() {
    let run_flat = |canary_cost: f64, seed: u64| {
        let mut h = monitor(PhaseConfig::canary(0.05).min(1_000_000, 0));
        let mut rng = Rng(seed);
        let mut id = 0u64;
        for look in 1..=60i64 {
            for k in 0..400u64 {
                id += 1;
                let canary = k % 20 == 0;
                let arm = if canary { Arm::Canary } else { Arm::Control };
                let o = obs(&mut rng, id, arm, BASE).cost(if canary { canary_cost } else { 0.002 });
                h.record(&o).expect("valid");
            }
            let ev = h.look(t0() + Duration::seconds(look));
            if ev.decision != Decision::Continue {
                return (ev.decision, h);
            }
        }
        (Decision::Continue, h)
    };
    // Identical constants: rounding differences between the arms' sums are no evidence.
    let (d, h) = run_flat(0.002, 31);
    assert!(!matches!(d, Decision::Rollback { .. }), "{d:?}");
    let ev = h.last_evaluation().expect("looked");
    let cost = ev.explanation.comparisons[0].metrics.iter().find(|m| m.metric == "cost");
    assert!(cost.is_some_and(|m| m.log_e_total < 1.0 && m.estimate == Some(0.0)), "{cost:?}");
    // A flat price 50% higher: caught, on cost.
    let (d, _) = run_flat(0.003, 32);
    let Decision::Rollback { rules, .. } = d else { panic!("expected a rollback, got {d:?}") };
    assert!(rules.iter().any(|r| r.metric == "cost"), "{rules:?}");
}
