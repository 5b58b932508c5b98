//! SLO guards: the seed's absolute checks (error rate, success rate, p95, p99, cost increase,
//! quality) and its automatic triggers, as terms of the one rollback budget.
//!
//! A guard's e-value is the e-process of "the canary is worse than the reference by more
//! than `margin`" (control in the same phase, or the stable's numbers frozen from the last
//! compared phase). It counts in full only while the canary is also beyond the absolute
//! threshold with anytime-valid confidence; otherwise it is capped at 1 (`min(E, 1)`). The
//! capped term never exceeds the uncapped e-process, so the weighted e-average stays an
//! e-process under "the canary is no worse than the reference" and Ville's inequality keeps
//! the whole rollout inside α_total. With no reference at all (rolling, immediate, blue-green
//! without a compared phase) the only testable hypothesis is the threshold itself: the term is
//! the e-process of "the canary is beyond the threshold".
//!
//! Under a sticky split the rate guards count the effective sample (deflated by the design
//! effect) and the cost and quality guards use the larger of the i.i.d. and the
//! cluster-robust variance.

use actuator_stats::estimate::{
    mean_difference, mean_vs_reference, proportion_difference_under_margin,
    proportion_vs_reference, relative_mean_difference,
};
use actuator_stats::{Estimate, ExceedanceCounter, HalfNormalMixture, RunningStats};

use actuator_stats::{ClusteredRatio, cluster};

use crate::aggregate::{ArmClusters, ArmStats};
use crate::config::{GuardKind, SloGuard};
use crate::decision::{CheckReport, CheckStatus};
use crate::rollout::widened;

/// What one guard needs: the canary, the reference (if any) and, for latency guards, the
/// exceedance counters at the guard's threshold.
pub(crate) struct GuardInput<'a> {
    pub canary: &'a ArmStats,
    pub reference: Option<&'a ArmStats>,
    pub canary_exceedance: Option<ExceedanceCounter>,
    pub reference_exceedance: Option<ExceedanceCounter>,
    /// Values per arm before a mean-based guard (cost, quality) may give evidence.
    pub burn_in: u64,
    /// `true` when the reference is the frozen baseline rather than a concurrent control.
    pub frozen: bool,
    /// The larger design effect of the two arms ([`sticky_design_effect`]), computed once
    /// per look for every guard.
    pub design_effect: f64,
}

/// A guard's evaluation at one look.
pub(crate) struct GuardEval {
    pub key: String,
    /// ln of the (capped) guard term of the e-average.
    pub log_e: f64,
    pub report: CheckReport,
}

fn fin(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// Lower always-valid bound of `est` at level `alpha`.
fn lower(mix: &HalfNormalMixture, est: Estimate, alpha: f64) -> Option<f64> {
    mix.half_width(est.variance, alpha).ok().and_then(|d| fin(est.theta - d))
}

struct Parts {
    value: Option<f64>,
    reference_value: Option<f64>,
    beyond_point: bool,
    beyond_confident: bool,
    stable_breaks: bool,
    log_e_b: f64,
    bound: Option<f64>,
    enough: bool,
}

/// Design effect of an arm's requests under a sticky split: how much the clustering of one
/// user's requests inflates the variance of its rates (the larger of the error-rate and
/// ln-latency design effects of its user buckets); 1 for independent requests.
fn design_effect(a: &ArmStats) -> f64 {
    match a.effective_requests() {
        Some(e) if e > 0.0 && a.requests > 0 => (a.requests as f64 / e).max(1.0),
        _ => 1.0,
    }
}

/// The design effect the rate guards use: the larger of the canary's and the reference's.
pub(crate) fn sticky_design_effect(canary: &ArmStats, reference: Option<&ArmStats>) -> f64 {
    design_effect(canary).max(reference.map_or(1.0, design_effect))
}

/// Counts `(events, n)` deflated by the design effect `d` to their effective size (Kish):
/// a rate's binomial variance computed from them is the clustered variance.
fn deflate((x, n): (u64, u64), d: f64) -> (u64, u64) {
    if d <= 1.0 || n == 0 {
        return (x, n);
    }
    let n_eff = ((n as f64) / d).round().max(1.0);
    let x_eff = ((x as f64) / d).round().min(n_eff);
    (x_eff as u64, n_eff as u64)
}

/// Evaluates `guard` at level `alpha` (its share of α_total), power `1 − beta` for τ.
///
/// Under a sticky split the rate guards (errors, success, latency thresholds) count the
/// effective sample (requests discounted by the larger design effect of the two arms), so
/// one user's correlated requests do not pass for independent evidence.
pub(crate) fn evaluate(guard: &SloGuard, alpha: f64, beta: f64, inp: &GuardInput<'_>) -> GuardEval {
    let key = guard.key();
    let t = inp.canary;
    let d = inp.design_effect;
    let parts = match guard.kind {
        GuardKind::ErrorRate => rate_parts(
            deflate((t.error_events(), t.requests), d),
            inp.reference.map(|r| deflate((r.error_events(), r.requests), d)),
            guard.threshold,
            guard.margin,
            alpha,
            beta,
            |x| x,
        ),
        GuardKind::SuccessRate => rate_parts(
            deflate((t.requests - t.ok.min(t.requests), t.requests), d),
            inp.reference.map(|r| deflate((r.requests - r.ok.min(r.requests), r.requests), d)),
            1.0 - guard.threshold,
            guard.margin,
            alpha,
            beta,
            |x| 1.0 - x,
        ),
        GuardKind::Latency { quantile } => {
            let mut p = match inp.canary_exceedance {
                Some(ce) => rate_parts(
                    deflate(ce.counts(), d),
                    inp.reference_exceedance.map(|r| deflate(r.counts(), d)),
                    1.0 - quantile,
                    guard.margin,
                    alpha,
                    beta,
                    |x| x,
                ),
                None => Parts::none(),
            };
            // Show the quantile itself, not the exceedance share.
            p.value = t.latency_sketch.quantile(quantile);
            p.reference_value = inp.reference.and_then(|r| r.latency_sketch.quantile(quantile));
            p
        }
        GuardKind::CostIncrease => cost_parts(t, inp, guard.threshold, alpha, beta),
        GuardKind::Quality => quality_parts(t, inp, guard, alpha, beta),
    };
    let log_e = if parts.beyond_confident { parts.log_e_b } else { parts.log_e_b.min(0.0) };
    let significant = log_e >= (1.0 / alpha).ln();
    let status = if !parts.enough {
        CheckStatus::Insufficient
    } else if significant {
        CheckStatus::Breach
    } else if !parts.beyond_point {
        CheckStatus::Pass
    } else if parts.stable_breaks {
        CheckStatus::StableBreaks
    } else {
        CheckStatus::Watch
    };
    let reference = match (inp.reference.is_some(), inp.frozen) {
        (false, _) => "no reference: tested against the threshold itself",
        (true, true) => "reference: the stable's numbers frozen from the last compared phase",
        (true, false) => "reference: control in this phase",
    };
    let note = if parts.stable_breaks {
        format!("the stable breaks this too ({reference})")
    } else {
        reference.to_string()
    };
    GuardEval {
        key: key.clone(),
        log_e,
        report: CheckReport {
            check: key,
            value: parts.value.and_then(fin),
            control_value: parts.reference_value.and_then(fin),
            threshold: guard.threshold,
            confidence_bound: parts.bound,
            status,
            log_e,
            alpha,
            stable_breaks: parts.stable_breaks,
            note: Some(note),
        },
    }
}

impl Parts {
    const fn none() -> Self {
        Self {
            value: None,
            reference_value: None,
            beyond_point: false,
            beyond_confident: false,
            stable_breaks: false,
            log_e_b: 0.0,
            bound: None,
            enough: false,
        }
    }
}

/// A rate guard on "harm events" (errors, failures, requests above a latency threshold):
/// the threshold `p_max` is on the harm rate. `show` turns the harm rate into the displayed
/// value (success rate = 1 − failure rate).
fn rate_parts(
    canary: (u64, u64),
    reference: Option<(u64, u64)>,
    p_max: f64,
    margin: f64,
    alpha: f64,
    beta: f64,
    show: impl Fn(f64) -> f64,
) -> Parts {
    let (x, n) = canary;
    let Ok(mix) = HalfNormalMixture::for_mde(margin, alpha, beta) else { return Parts::none() };
    let Ok(vs_threshold) = proportion_vs_reference(x, n, p_max) else { return Parts::none() };
    let rate = x as f64 / n as f64;
    let beyond_point = rate > p_max;
    let beyond_confident = lower(&mix, vs_threshold, alpha).is_some_and(|l| l > 0.0);
    let (log_e_b, bound, stable_breaks, reference_value) = match reference {
        // A reference exists but has no data yet: no evidence either way.
        Some((_, 0)) => (0.0, None, false, None),
        Some((rx, rn)) => match proportion_difference_under_margin(x, n, rx, rn, margin) {
            Ok(est) => {
                let r = rx as f64 / rn as f64;
                (mix.log_e(est, margin), lower(&mix, est, alpha), r > p_max, Some(show(r)))
            }
            Err(_) => (0.0, None, false, None),
        },
        None => (mix.log_e(vs_threshold, 0.0), lower(&mix, vs_threshold, alpha), false, None),
    };
    Parts {
        value: Some(show(rate)),
        reference_value,
        beyond_point,
        beyond_confident,
        stable_breaks,
        log_e_b,
        bound,
        enough: true,
    }
}

/// Both arms' cluster statistics, when the split is sticky.
fn clustered<'a>(
    t: &'a ArmStats,
    r: Option<&'a ArmStats>,
) -> Option<(&'a ArmClusters, &'a ArmClusters)> {
    t.clusters.as_deref().zip(r.and_then(|r| r.clusters.as_deref()))
}

fn cost_parts(
    t: &ArmStats,
    inp: &GuardInput<'_>,
    max_increase: f64,
    alpha: f64,
    beta: f64,
) -> Parts {
    let Some(r) = inp.reference else { return Parts::none() };
    if t.cost.count() < inp.burn_in || r.cost.count() < inp.burn_in {
        return Parts::none();
    }
    let (Ok(est), Ok(mix)) = (
        relative_mean_difference(&t.cost, &r.cost),
        HalfNormalMixture::for_mde(max_increase, alpha, beta),
    ) else {
        return Parts::none();
    };
    let est = widened(
        est,
        clustered(t, Some(r)).and_then(|(tc, rc)| {
            cluster::relative_ratio_difference(&tc.cost, &rc.cost)
                .ok()
                .filter(|_| cluster::burned_in(&tc.cost, &rc.cost))
        }),
    );
    let bound = lower(&mix, est, alpha);
    Parts {
        value: Some(est.theta),
        reference_value: Some(0.0),
        beyond_point: est.theta > max_increase,
        beyond_confident: bound.is_some_and(|b| b > max_increase),
        stable_breaks: false,
        log_e_b: mix.log_e(est, max_increase),
        bound,
        enough: true,
    }
}

fn quality_parts(
    t: &ArmStats,
    inp: &GuardInput<'_>,
    guard: &SloGuard,
    alpha: f64,
    beta: f64,
) -> Parts {
    let q: &RunningStats = &t.quality;
    if q.count() < inp.burn_in {
        return Parts::none();
    }
    let (Ok(vs_threshold), Ok(mix)) = (
        mean_vs_reference(q, guard.threshold).map(Estimate::flipped),
        HalfNormalMixture::for_mde(guard.margin.max(0.1), alpha, beta),
    ) else {
        return Parts::none();
    };
    // Under a sticky split the canary's own mean has its cluster-robust variance.
    let own = t.clusters.as_deref().map(|c| &c.quality).filter(|c| c.non_empty() >= 2);
    let vs_threshold = match own.and_then(ClusteredRatio::variance) {
        Some(v) if v.is_finite() && v > vs_threshold.variance => {
            Estimate::new(vs_threshold.theta, v).unwrap_or(vs_threshold)
        }
        _ => vs_threshold,
    };
    let mean = q.mean().unwrap_or(f64::NAN);
    let beyond_confident = lower(&mix, vs_threshold, alpha).is_some_and(|l| l > 0.0);
    let (log_e_b, bound, stable_breaks, reference_value) = match inp.reference {
        // A reference without enough scores yet: no evidence either way.
        Some(r) if r.quality.count() < inp.burn_in => (0.0, None, false, r.quality.mean()),
        Some(r) => match mean_difference(&r.quality, q) {
            Ok(est) => {
                let est = widened(
                    est,
                    clustered(t, Some(r)).and_then(|(tc, rc)| {
                        cluster::ratio_difference(&rc.quality, &tc.quality)
                            .ok()
                            .filter(|_| cluster::burned_in(&tc.quality, &rc.quality))
                    }),
                );
                let rm = r.quality.mean();
                (
                    mix.log_e(est, guard.margin),
                    lower(&mix, est, alpha),
                    rm.is_some_and(|m| m < guard.threshold),
                    rm,
                )
            }
            Err(_) => (0.0, None, false, None),
        },
        None => (mix.log_e(vs_threshold, 0.0), lower(&mix, vs_threshold, alpha), false, None),
    };
    Parts {
        value: Some(mean),
        reference_value,
        beyond_point: mean < guard.threshold,
        beyond_confident,
        stable_breaks,
        log_e_b,
        bound,
        enough: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// α of one of the six default guards: 0.05 · 0.1 / 6.
    const ALPHA_G: f64 = 0.05 * 0.1 / 6.0;

    fn arm(errors: u64, requests: u64) -> ArmStats {
        let mut s = ArmStats::new(&[], 20, 0.005, 2048).unwrap();
        s.requests = requests;
        s.errors = errors;
        s.ok = requests - errors;
        s
    }

    fn error_guard() -> SloGuard {
        SloGuard { kind: GuardKind::ErrorRate, threshold: 0.01, margin: 0.005 }
    }

    fn input<'a>(t: &'a ArmStats, r: Option<&'a ArmStats>) -> GuardInput<'a> {
        GuardInput {
            canary: t,
            reference: r,
            canary_exceedance: None,
            reference_exceedance: None,
            burn_in: 20,
            frozen: false,
            design_effect: sticky_design_effect(t, r),
        }
    }

    #[test]
    fn error_guard_golden() {
        // Golden values from canary_sim.py: V under the margin null as in `promo_err`,
        // `msprt_log_lr1(θ̂ − δ, V, tau2_from_mde(δ, α_g))` = 3.539285725681431 and the lower
        // bound θ̂ − upper_cs_halfwidth(V, τ², α_g) = −0.0016410987815806098 for 60/2000 vs
        // 20/2000, δ = 0.005, α_g = 0.05·0.1/6. The canary is beyond 1% with confidence
        // (0.02 − halfwidth = 0.0107 > 0), so the term counts in full.
        let (t, c) = (arm(60, 2000), arm(20, 2000));
        let g = evaluate(&error_guard(), ALPHA_G, 0.2, &input(&t, Some(&c)));
        assert!((g.log_e - 3.539_285_725_681_431).abs() < 1e-6, "{}", g.log_e);
        let b = g.report.confidence_bound.unwrap();
        assert!((b - -0.001_641_098_781_580_61).abs() < 1e-7, "{b}");
        assert_eq!(g.report.status, CheckStatus::Watch, "beyond 1% but not yet significant");
        assert!(!g.report.stable_breaks);
        assert_eq!(g.key, "slo:error_rate<=0.01");
    }

    #[test]
    fn a_threshold_the_stable_breaks_is_not_blamed_on_the_canary() {
        // 30/2000 vs 28/2000, both above 1%: canary_sim.py gives log e_b = −1.0893117179943501.
        let (t, c) = (arm(30, 2000), arm(28, 2000));
        let g = evaluate(&error_guard(), ALPHA_G, 0.2, &input(&t, Some(&c)));
        assert_eq!(g.report.status, CheckStatus::StableBreaks);
        assert!(g.report.note.unwrap().contains("the stable breaks this too"));
        assert!((g.log_e - -1.089_311_717_994_350_1).abs() < 1e-6, "{}", g.log_e);
    }

    #[test]
    fn without_a_reference_the_threshold_itself_is_tested() {
        let t = arm(200, 1000);
        let g = evaluate(&error_guard(), ALPHA_G, 0.2, &input(&t, None));
        assert_eq!(g.report.status, CheckStatus::Breach);
        assert!(g.log_e > (1.0 / ALPHA_G).ln());
        let quiet = arm(5, 1000);
        let g = evaluate(&error_guard(), ALPHA_G, 0.2, &input(&quiet, None));
        assert_eq!(g.report.status, CheckStatus::Pass);
    }

    #[test]
    fn an_empty_reference_gives_no_evidence() {
        let (t, c) = (arm(500, 1000), arm(0, 0));
        let g = evaluate(&error_guard(), ALPHA_G, 0.2, &input(&t, Some(&c)));
        assert_eq!(g.log_e, 0.0);
        assert_ne!(g.report.status, CheckStatus::Breach);
    }

    proptest! {
        /// A guard never counts evidence when canary and reference have identical statistics.
        #[test]
        fn identical_statistics_never_give_guard_evidence(
            n in 1u64..200_000,
            frac in 0.0f64..1.0,
            q_n in 2u64..5000,
            q_mean in 1.0f64..5.0,
            q_sd in 0.0f64..2.0,
            cost_mean in 0.0001f64..1.0,
            cost_sd in 0.0f64..1.0,
        ) {
            let x = ((n as f64) * frac).floor() as u64;
            let mut t = arm(x, n);
            let qn = q_n as f64;
            t.quality = RunningStats::from_sums(q_n, q_mean * qn, (q_sd * q_sd + q_mean * q_mean) * qn).unwrap();
            t.cost = RunningStats::from_sums(q_n, cost_mean * qn, (cost_sd * cost_sd + cost_mean * cost_mean) * qn).unwrap();
            let c = t.clone();
            let guards = [
                error_guard(),
                SloGuard { kind: GuardKind::SuccessRate, threshold: 0.99, margin: 0.005 },
                SloGuard { kind: GuardKind::CostIncrease, threshold: 0.10, margin: 0.0 },
                SloGuard { kind: GuardKind::Quality, threshold: 3.5, margin: 0.1 },
            ];
            for g in &guards {
                let e = evaluate(g, ALPHA_G, 0.2, &input(&t, Some(&c)));
                prop_assert!(e.log_e <= 1e-12, "{:?}: {}", g.kind, e.log_e);
                prop_assert_ne!(e.report.status, CheckStatus::Breach);
            }
            let ce = ExceedanceCounter::from_counts(1000.0, x, n).unwrap();
            let lat = SloGuard { kind: GuardKind::Latency { quantile: 0.95 }, threshold: 1000.0, margin: 0.01 };
            let inp = GuardInput { canary_exceedance: Some(ce), reference_exceedance: Some(ce), ..input(&t, Some(&c)) };
            let e = evaluate(&lat, ALPHA_G, 0.2, &inp);
            prop_assert!(e.log_e <= 1e-12, "latency: {}", e.log_e);
        }
    }
}
