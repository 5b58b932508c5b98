//! The traffic model: what one simulated request of a slot looks like, per arm.
//!
//! A slot has a stable baseline (error rate, lognormal latency, cost tied to latency, a 1–5
//! quality score on a judged sample), a request rate, optionally a diurnal cycle that moves
//! the rate and both arms' error rate and latency together, and either independent requests
//! (every request its own targeting key) or sticky users: a fixed population with
//! heavy-tailed activity and a per-user error propensity and latency factor.

use serde::Serialize;

use super::rng::{Rng, mix, normal_from};

/// Quality score probabilities of the stable config for scores 1..=5 (mean 3.68).
pub(crate) const QUALITY_P: [f64; 5] = [0.06, 0.12, 0.20, 0.32, 0.30];
/// Median cost of a stable request (any currency unit).
const COST_MEDIAN: f64 = 0.002;
/// σ of log-cost; its correlation with log-latency is [`COST_LATENCY_RHO`].
const COST_SIGMA: f64 = 0.8;
const COST_LATENCY_RHO: f64 = 0.7;
/// Population of the sticky-user scenarios.
pub(crate) const STICKY_USERS: u64 = 10_000;
/// Exponent of the activity law: user rank = U · u^(1/a) puts 30% of requests on the top 1%.
const ACTIVITY_A: f64 = 0.261_4;
/// σ of the per-user log error propensity (mean-preserving lognormal multiplier).
pub(crate) const USER_ERROR_SIGMA: f64 = 1.0;
/// σ of the per-user log latency factor.
pub(crate) const USER_LATENCY_SIGMA: f64 = 0.3;
/// Diurnal amplitudes (relative): request rate, error rate, latency median.
pub(crate) const DIURNAL_RATE: f64 = 0.5;
pub(crate) const DIURNAL_ERRORS: f64 = 0.4;
pub(crate) const DIURNAL_LATENCY: f64 = 0.15;
/// Delay of a judged score after its request, in seconds (uniform).
pub(crate) const QUALITY_DELAY_SECS: (u64, u64) = (10, 120);
/// z of the 99th percentile of a normal.
const Z99: f64 = 2.326_347_874;

/// The stable config's behaviour on a slot.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Baseline {
    /// Share of requests that fail.
    pub(crate) error_rate: f64,
    /// Median latency, ms.
    pub(crate) latency_median_ms: f64,
    /// σ of log-latency.
    pub(crate) latency_sigma: f64,
}

impl Baseline {
    /// The true p99 latency of the stable config, ms.
    pub(crate) fn p99_ms(&self) -> f64 {
        self.latency_median_ms * (Z99 * self.latency_sigma).exp()
    }
}

/// Who sends the requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Users {
    /// Every request has its own targeting key: assignments are independent.
    Independent,
    /// [`STICKY_USERS`] users with heavy-tailed activity; a user stays on one arm.
    Sticky,
}

/// A slot's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Traffic {
    /// Mean requests per second.
    pub(crate) rps: f64,
    /// The stable config.
    pub(crate) baseline: Baseline,
    /// Whether rate, errors and latency follow a 24 h cycle (random phase per rollout).
    pub(crate) diurnal: bool,
    /// Independent requests or sticky users.
    pub(crate) users: Users,
    /// Share of requests whose quality is judged (the score arrives later).
    pub(crate) judged: f64,
}

/// How the candidate differs from the stable config (1.0 / 0.0 = no difference).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Effect {
    /// Multiplier of the error rate.
    pub(crate) errors: f64,
    /// Multiplier of the latency median (σ unchanged).
    pub(crate) latency: f64,
    /// Multiplier of the p99 at the same median (σ grows).
    pub(crate) p99: f64,
    /// Multiplier of the cost.
    pub(crate) cost: f64,
    /// Shift of the mean quality score (negative = worse).
    pub(crate) quality: f64,
}

impl Effect {
    /// No difference: an A/A rollout.
    pub(crate) const NONE: Self =
        Self { errors: 1.0, latency: 1.0, p99: 1.0, cost: 1.0, quality: 0.0 };
}

/// One simulated request's outcome.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) error: bool,
    pub(crate) latency_ms: f64,
    pub(crate) cost: f64,
    /// The judge's score, when this request is judged.
    pub(crate) quality: Option<u8>,
}

/// Time-of-day factors of one simulated second.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Day {
    pub(crate) rate: f64,
    pub(crate) errors: f64,
    pub(crate) latency: f64,
}

impl Day {
    /// The factors at `secs` into a cycle shifted by `phase` (0..1 of a day).
    pub(crate) fn at(diurnal: bool, secs: u64, phase: f64) -> Self {
        if !diurnal {
            return Self { rate: 1.0, errors: 1.0, latency: 1.0 };
        }
        let s = (std::f64::consts::TAU * (secs as f64 / 86_400.0 + phase)).sin();
        Self {
            rate: 1.0 + DIURNAL_RATE * s,
            errors: 1.0 + DIURNAL_ERRORS * s,
            latency: 1.0 + DIURNAL_LATENCY * s,
        }
    }
}

/// One user's traits, fixed per (rollout, user) by a hash (no per-user memory).
#[derive(Debug, Clone, Copy)]
pub(crate) struct UserTraits {
    pub(crate) errors: f64,
    pub(crate) latency: f64,
}

impl UserTraits {
    pub(crate) const NEUTRAL: Self = Self { errors: 1.0, latency: 1.0 };

    pub(crate) fn of(seed: u64, user: u64) -> Self {
        let h = mix(seed ^ user.wrapping_mul(0xa076_1d64_78bd_642f));
        let (a, b, c) = (mix(h), mix(h ^ 1), mix(h ^ 2));
        let z1 = normal_from(a, b);
        let z2 = normal_from(c, a ^ b);
        let s1 = USER_ERROR_SIGMA;
        let s2 = USER_LATENCY_SIGMA;
        Self { errors: (s1 * z1 - s1 * s1 / 2.0).exp(), latency: (s2 * z2 - s2 * s2 / 2.0).exp() }
    }
}

/// Draws the user of a sticky request: rank `U · u^(1/a)`, so the top 1% send ~30%.
pub(crate) fn sticky_user(rng: &mut Rng) -> u64 {
    let u = rng.uniform();
    ((STICKY_USERS as f64 * u.powf(1.0 / ACTIVITY_A)) as u64).min(STICKY_USERS - 1)
}

fn quality_score(rng: &mut Rng, shift: f64) -> u8 {
    let u = rng.uniform();
    let mut acc = 0.0;
    let mut score = 5u8;
    for (i, p) in QUALITY_P.iter().enumerate() {
        acc += p;
        if u < acc {
            score = i as u8 + 1;
            break;
        }
    }
    // A shift of −d moves a score one step down with probability d / P(score > 1), which
    // lowers the mean by exactly d; a positive shift moves scores below 5 up the same way.
    if shift < 0.0 && score > 1 && rng.bernoulli(-shift / (1.0 - QUALITY_P[0])) {
        score -= 1;
    } else if shift > 0.0 && score < 5 && rng.bernoulli(shift / (1.0 - QUALITY_P[4])) {
        score += 1;
    }
    score
}

/// Draws one request of `traffic` served by the stable config or by the candidate.
pub(crate) fn sample(
    rng: &mut Rng,
    traffic: &Traffic,
    effect: Option<&Effect>,
    day: Day,
    user: UserTraits,
) -> Sample {
    let b = &traffic.baseline;
    let e = effect.unwrap_or(&Effect::NONE);
    let p = (b.error_rate * day.errors * user.errors * e.errors).clamp(0.0, 1.0);
    let sigma = b.latency_sigma + e.p99.ln() / Z99;
    let z1 = rng.normal();
    let z2 = rng.normal();
    let latency_ms =
        b.latency_median_ms * day.latency * user.latency * e.latency * (sigma * z1).exp();
    let rho = COST_LATENCY_RHO;
    let cost =
        COST_MEDIAN * e.cost * (COST_SIGMA * (rho * z1 + (1.0 - rho * rho).sqrt() * z2)).exp();
    let error = rng.bernoulli(p);
    let quality = rng.bernoulli(traffic.judged).then(|| quality_score(rng, e.quality));
    Sample { error, latency_ms, cost, quality }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_top_percent_of_users_send_about_thirty_percent() {
        let mut r = Rng::new(3);
        let n = 200_000;
        let top = (0..n).filter(|_| sticky_user(&mut r) < STICKY_USERS / 100).count();
        let share = top as f64 / f64::from(n);
        assert!((0.28..0.32).contains(&share), "{share}");
    }

    #[test]
    fn a_quality_shift_moves_the_mean_by_that_much() {
        let mut r = Rng::new(4);
        let n = 400_000;
        let mean = |r: &mut Rng, s: f64| {
            (0..n).map(|_| f64::from(quality_score(r, s))).sum::<f64>() / f64::from(n)
        };
        let base = mean(&mut r, 0.0);
        let worse = mean(&mut r, -0.5);
        assert!((base - 3.68).abs() < 0.01, "{base}");
        assert!((base - worse - 0.5).abs() < 0.01, "{base} {worse}");
    }

    #[test]
    fn user_traits_keep_the_mean_error_rate() {
        let n = 200_000u64;
        let mean = (0..n).map(|u| UserTraits::of(9, u).errors).sum::<f64>() / n as f64;
        assert!((mean - 1.0).abs() < 0.03, "{mean}");
    }

    #[test]
    fn the_tail_effect_keeps_the_median_and_scales_the_p99() {
        let t = Traffic {
            rps: 1.0,
            baseline: Baseline { error_rate: 0.01, latency_median_ms: 400.0, latency_sigma: 0.6 },
            diurnal: false,
            users: Users::Independent,
            judged: 0.0,
        };
        let e = Effect { p99: 1.5, ..Effect::NONE };
        let mut r = Rng::new(5);
        let mut v: Vec<f64> = (0..100_000)
            .map(|_| {
                sample(&mut r, &t, Some(&e), Day::at(false, 0, 0.0), UserTraits::NEUTRAL).latency_ms
            })
            .collect();
        v.sort_by(f64::total_cmp);
        let (median, p99) = (v[50_000], v[99_000]);
        assert!((median / 400.0 - 1.0).abs() < 0.03, "{median}");
        assert!((p99 / (t.baseline.p99_ms() * 1.5) - 1.0).abs() < 0.06, "{p99}");
    }
}
