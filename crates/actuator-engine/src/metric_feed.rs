//! Outcomes read from a metric source: cumulative counters per arm turned into the
//! per-request observations the analysis takes, and what the status shows of the feed.
//!
//! Each look reads, per arm, the cumulative `requests` and `errors` counters and the
//! cumulative histogram bucket counts at every configured bound (and `+Inf`). The delta
//! since the previous look of the same step becomes observations: `errors` outcomes
//! `error`, the rest `ok`, each successful one with a latency taken from the histogram:
//!
//! - a request counted in the bucket `(b[i-1], b[i]]` is recorded at latency `b[i]` (its
//!   upper bound), one in `(b[last], +Inf)` at `2 × b[last]`;
//! - when the histogram counted a different number of requests than `requests − errors`
//!   over the look (it counts every request, or its scrape raced the counters'), its bucket
//!   counts are apportioned to the successful requests by largest remainder, keeping its shape.
//!
//! What this preserves: the error counts exactly (the conditional-binomial error test sees
//! the same numbers the counters say), and, for every bucket bound, the number of requests
//! slower than it, so a tail test at a threshold on a bound counts exceedances exactly. What
//! it does not: where a request fell inside its bucket (the latency test on ln(latency) and
//! the quantiles see bucket bounds, so a change inside one bucket is invisible, and a
//! quantile threshold falls on a bound).
//!
//! A counter that goes down was reset (the process restarted): the arm's delta is then its
//! new value, as Prometheus's `increase()` reads it. A look's delta above the spec's
//! `max_requests_per_look` (all arms together) is scaled down by one factor for every arm
//! (largest remainder inside each arm), so the arms keep their ratio (the sample-ratio
//! check stays valid) and each arm its error rate and latency shape; the rest is dropped.

use actuator_health::{Arm, Observation, Outcome};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The cumulative values one look read for one arm.
#[derive(Clone, Debug, PartialEq)]
pub struct ArmReading {
    /// The `requests` counter.
    pub requests: f64,
    /// The `errors` counter.
    pub errors: f64,
    /// The cumulative bucket counts at each configured bound, then at `+Inf`.
    pub buckets: Vec<f64>,
}

/// What one arm served between two looks.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ArmDelta {
    /// Requests.
    pub requests: u64,
    /// Failed requests (at most `requests`).
    pub errors: u64,
    /// Requests per bucket (not cumulative): `(.., b[0]]`, `(b[0], b[1]]`, ..., `(b[last], +Inf)`.
    pub buckets: Vec<u64>,
    /// A counter went down since the last look (a reset).
    pub reset: bool,
}

/// A count from a counter's value: finite and non-negative values only, rounded.
fn count(v: f64) -> u64 {
    if v.is_finite() && v > 0.0 {
        // `as` saturates: a value beyond u64 reads as u64::MAX.
        v.round() as u64
    } else {
        0
    }
}

/// The delta of an arm between two readings. Any counter that went down marks a reset, and
/// the whole arm then counts from zero (its new values are the delta).
pub fn delta(prev: &ArmReading, now: &ArmReading) -> ArmDelta {
    let reset = now.requests < prev.requests
        || now.errors < prev.errors
        || now.buckets.len() != prev.buckets.len()
        || now.buckets.iter().zip(&prev.buckets).any(|(n, p)| n < p);
    let d = |p: f64, n: f64| if reset { count(n) } else { count(n - p) };
    let requests = d(prev.requests, now.requests);
    let errors = d(prev.errors, now.errors).min(requests);
    let mut cumulative: Vec<u64> = now
        .buckets
        .iter()
        .enumerate()
        .map(|(i, n)| d(prev.buckets.get(i).copied().unwrap_or(0.0), *n))
        .collect();
    // Cumulative counts never go down with the bound; a scrape that raced itself is evened.
    for i in 1..cumulative.len() {
        cumulative[i] = cumulative[i].max(cumulative[i - 1]);
    }
    let buckets = cumulative
        .iter()
        .enumerate()
        .map(|(i, c)| c - if i == 0 { 0 } else { cumulative[i - 1] })
        .collect();
    ArmDelta { requests, errors, buckets, reset }
}

/// Splits `target` among the parts in proportion to `weights` by largest remainder (ties to
/// the lower index). The parts sum to `target` (all zero when every weight is zero); equal
/// to `weights` when they already sum to `target`.
pub fn apportion(weights: &[u64], target: u64) -> Vec<u64> {
    let total: u128 = weights.iter().map(|w| u128::from(*w)).sum();
    if total == 0 {
        return vec![0; weights.len()];
    }
    let t = u128::from(target);
    let mut parts: Vec<u64> = Vec::with_capacity(weights.len());
    let mut rems: Vec<(u128, usize)> = Vec::with_capacity(weights.len());
    for (i, w) in weights.iter().enumerate() {
        let q = u128::from(*w) * t;
        parts.push(u64::try_from(q / total).unwrap_or(u64::MAX));
        rems.push((q % total, i));
    }
    let given: u64 = parts.iter().sum();
    let mut left = target.saturating_sub(given);
    rems.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, i) in rems {
        if left == 0 {
            break;
        }
        parts[i] += 1;
        left -= 1;
    }
    parts
}

/// Scales the arms' deltas down so they sum to at most `cap` requests, every arm by the same
/// factor; `true` when they were scaled.
pub fn cap_deltas(deltas: &mut [ArmDelta], cap: u64) -> bool {
    let total: u64 = deltas.iter().map(|d| d.requests).fold(0, u64::saturating_add);
    if total <= cap {
        return false;
    }
    let sizes = apportion(&deltas.iter().map(|d| d.requests).collect::<Vec<_>>(), cap);
    for (d, n) in deltas.iter_mut().zip(sizes) {
        let split = apportion(&[d.errors, d.requests.saturating_sub(d.errors)], n);
        d.errors = split[0];
        d.requests = n;
    }
    true
}

/// The latency recorded for a request of bucket `i`: its upper bound, or twice the last
/// bound for the `+Inf` bucket.
pub fn bucket_latency(bounds_ms: &[f64], i: usize) -> f64 {
    match bounds_ms.get(i) {
        Some(b) => *b,
        None => bounds_ms.last().map_or(1.0, |b| b * 2.0),
    }
}

/// Why an arm's delta cannot become observations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeedGap {
    /// Requests succeeded but the histogram counted none in the look: no latency to give them.
    NoLatency {
        /// The successful requests without a latency.
        ok: u64,
    },
}

/// The observations of one arm's delta, ids `"{prefix}.{i}"`, errors spread evenly among
/// the successful requests, at step `phase`.
///
/// # Errors
/// [`FeedGap::NoLatency`] when requests succeeded and the histogram counted none.
pub fn observations(
    rollout: &str,
    arm: &Arm,
    d: &ArmDelta,
    bounds_ms: &[f64],
    phase: u32,
    prefix: &str,
) -> Result<Vec<Observation>, FeedGap> {
    let ok = d.requests - d.errors.min(d.requests);
    let per_bucket = apportion(&d.buckets, ok);
    if per_bucket.iter().sum::<u64>() != ok {
        return Err(FeedGap::NoLatency { ok });
    }
    let n = usize::try_from(d.requests).unwrap_or(usize::MAX);
    let mut out = Vec::with_capacity(n);
    let mut latencies = per_bucket.iter().enumerate().flat_map(|(i, c)| {
        std::iter::repeat_n(bucket_latency(bounds_ms, i), usize::try_from(*c).unwrap_or(0))
    });
    let (r, e) = (u128::from(d.requests), u128::from(d.errors));
    for j in 0..d.requests {
        let j128 = u128::from(j);
        // Request j is an error when the running share of errors steps up at it.
        let is_error = (j128 + 1) * e / r > j128 * e / r;
        let mut o = Observation::new(
            rollout,
            format!("{prefix}.{j}"),
            arm.clone(),
            if is_error { Outcome::Error } else { Outcome::Ok },
        )
        .phase(phase);
        if !is_error {
            o.latency_ms = latencies.next();
        }
        out.push(o);
    }
    Ok(out)
}

/// A query that gave no usable number at the last look.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MissingData {
    /// The arm whose query failed (`stable`, `canary`, ...).
    pub arm: String,
    /// The query's field in the request (`requests`, `errors`, `latency_bucket`).
    pub field: String,
    /// The query as sent.
    pub query: String,
    /// What went wrong: the source's error, or that it returned no data.
    pub error: String,
    /// When the looks started missing data.
    pub since: DateTime<Utc>,
    /// Consecutive looks with missing data.
    pub looks: u32,
    /// Looks with missing data after which the rollout is halted.
    pub limit: u32,
}

/// The feed of a rollout whose outcomes come from a metric source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MetricFeedView {
    /// The metric source.
    pub source: String,
    /// Looks taken (since the daemon started).
    pub looks: u64,
    /// When the last look was taken.
    pub last_look_at: Option<DateTime<Utc>>,
    /// Requests fed into the analysis (since the daemon started).
    pub fed_requests: u64,
    /// Looks whose delta was above `max_requests_per_look` and scaled down.
    pub capped_looks: u64,
    /// The step whose counters the last complete look read. Until a look has read the
    /// current step, promotion is held.
    pub step_read: Option<usize>,
    /// Present while the last look missed data: promotion is held until a look reads every
    /// query again.
    pub missing: Option<MissingData>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(requests: f64, errors: f64, buckets: &[f64]) -> ArmReading {
        ArmReading { requests, errors, buckets: buckets.to_vec() }
    }

    #[test]
    fn deltas_count_since_the_last_look_and_read_a_reset_as_a_restart() {
        let a = r(100.0, 5.0, &[60.0, 90.0, 95.0]);
        let b = r(150.0, 7.0, &[90.0, 130.0, 143.0]);
        let d = delta(&a, &b);
        assert_eq!((d.requests, d.errors, d.reset), (50, 2, false));
        assert_eq!(d.buckets, vec![30, 10, 8]);
        // The process restarted: the counters start again from zero.
        let c = r(20.0, 1.0, &[10.0, 15.0, 19.0]);
        let d = delta(&b, &c);
        assert_eq!((d.requests, d.errors, d.reset), (20, 1, true));
        assert_eq!(d.buckets, vec![10, 5, 4]);
        // One bucket that went down is a reset of the whole arm.
        let d = delta(&b, &r(160.0, 7.0, &[80.0, 140.0, 153.0]));
        assert!(d.reset);
        assert_eq!(d.requests, 160);
        // Errors never exceed requests; a raced cumulative count is evened.
        let d = delta(&a, &r(101.0, 9.0, &[62.0, 91.0, 96.0]));
        assert_eq!((d.requests, d.errors, d.reset), (1, 1, false));
        assert_eq!(d.buckets, vec![2, 0, 0]);
    }

    #[test]
    fn apportioning_keeps_the_total_and_the_shape() {
        assert_eq!(apportion(&[3, 5, 2], 10), vec![3, 5, 2]);
        assert_eq!(apportion(&[3, 5, 2], 5), vec![2, 2, 1]);
        assert_eq!(apportion(&[1, 1, 1], 2), vec![1, 1, 0]);
        assert_eq!(apportion(&[0, 0], 7), vec![0, 0]);
        assert_eq!(apportion(&[u64::MAX, u64::MAX], 10), vec![5, 5]);
        assert_eq!(apportion(&[9, 1], 100).iter().sum::<u64>(), 100);
    }

    #[test]
    fn a_huge_delta_is_capped_with_every_arm_scaled_alike() {
        let mut d = vec![
            ArmDelta { requests: 90_000, errors: 900, buckets: vec![], reset: false },
            ArmDelta { requests: 10_000, errors: 3_000, buckets: vec![], reset: false },
        ];
        assert!(cap_deltas(&mut d, 10_000));
        assert_eq!((d[0].requests, d[0].errors), (9_000, 90));
        assert_eq!((d[1].requests, d[1].errors), (1_000, 300));
        assert!(!cap_deltas(&mut d, 10_000));
    }

    #[test]
    fn buckets_become_latencies_that_keep_exceedance_at_each_bound() {
        let bounds = [50.0, 100.0, 250.0];
        let d = ArmDelta { requests: 12, errors: 2, buckets: vec![4, 3, 2, 1], reset: false };
        let obs = observations("ro", &Arm::Canary, &d, &bounds, 3, "p").unwrap();
        assert_eq!(obs.len(), 12);
        assert_eq!(obs.iter().filter(|o| o.outcome == Outcome::Error).count(), 2);
        assert!(obs.iter().all(|o| o.phase == Some(3) && o.arm == Arm::Canary));
        let lat: Vec<f64> = obs.iter().filter_map(|o| o.latency_ms).collect();
        assert_eq!(lat.len(), 10);
        // Slower than each bound: exactly the requests the buckets above it counted.
        for (b, above) in [(50.0, 6), (100.0, 3), (250.0, 1)] {
            assert_eq!(lat.iter().filter(|l| **l > b).count(), above, "above {b}");
        }
        assert_eq!(lat.iter().copied().fold(0.0, f64::max), 500.0);
        // Errors are spread, not bunched at the end.
        assert_ne!(obs[11].outcome, obs[10].outcome);
        let ids: std::collections::HashSet<_> = obs.iter().map(|o| &o.request_id).collect();
        assert_eq!(ids.len(), 12);
        // A histogram that counts every request (errors too) is apportioned to the successes.
        let all = ArmDelta { requests: 10, errors: 5, buckets: vec![10, 10, 0, 0], reset: false };
        let obs = observations("ro", &Arm::Control, &all, &bounds, 0, "p").unwrap();
        let lat: Vec<f64> = obs.iter().filter_map(|o| o.latency_ms).collect();
        assert_eq!(lat.iter().filter(|l| **l == 50.0).count(), 3);
        assert_eq!(lat.iter().filter(|l| **l == 100.0).count(), 2);
        // Successes without any histogram count have no latency: a gap, not made-up numbers.
        let none = ArmDelta { requests: 4, errors: 0, buckets: vec![0, 0, 0, 0], reset: false };
        assert_eq!(
            observations("ro", &Arm::Canary, &none, &bounds, 0, "p").unwrap_err(),
            FeedGap::NoLatency { ok: 4 }
        );
        let only_errors =
            ArmDelta { requests: 4, errors: 4, buckets: vec![0, 0, 0, 0], reset: false };
        assert_eq!(
            observations("ro", &Arm::Canary, &only_errors, &bounds, 0, "p").unwrap().len(),
            4
        );
    }
}
