//! Per-(phase, arm) aggregation in bounded memory: counters, running moments and one sketch
//! per distribution-valued metric. Nothing here grows with the number of observations.

use actuator_stats::{
    ClusteredRatio, ExceedanceCounter, QuantileSketch, RunningStats, UNIT_BUCKETS,
};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Latencies below this floor (ms) are raised to it before taking logs.
pub const LOG_LATENCY_FLOOR_MS: f64 = 1.0;

/// The last `size` (≤ 128) outcomes of an arm as a bit window, for the catastrophic guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentWindow {
    bits: u128,
    len: u8,
    size: u8,
}

impl RecentWindow {
    /// A window of `size` outcomes (clamped to 1..=128).
    pub fn new(size: usize) -> Self {
        Self { bits: 0, len: 0, size: u8::try_from(size.clamp(1, 128)).unwrap_or(128) }
    }

    /// Pushes one outcome.
    pub fn push(&mut self, is_error: bool) {
        let mask = if self.size >= 128 { u128::MAX } else { (1u128 << self.size) - 1 };
        self.bits = ((self.bits << 1) | u128::from(is_error)) & mask;
        self.len = self.len.saturating_add(1).min(self.size);
    }

    /// (errors, outcomes) currently in the window.
    pub const fn counts(&self) -> (u32, u32) {
        (self.bits.count_ones(), self.len as u32)
    }

    /// `true` once the window holds `size` outcomes.
    pub const fn is_full(&self) -> bool {
        self.len >= self.size
    }
}

/// A validated, normalised observation ready to aggregate.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clean {
    pub outcome: crate::observation::Outcome,
    pub latency_ms: Option<f64>,
    pub ttft_ms: Option<f64>,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub cost: Option<f64>,
    pub quality: Option<f64>,
    /// Cluster unit: the observation's unit hash, or a hash of its request id without one.
    pub unit: u64,
    /// Whether the observation carried a unit (a sticky split resolved it).
    pub has_unit: bool,
}

/// Per-bucket cluster statistics of one arm in one phase, kept when assignment is sticky
/// (observations carry the `unit` of their resolution): one [`ClusteredRatio`] of B = 128
/// buckets per metric, so one user's correlated requests count as one cluster's worth of
/// evidence (statistics.md §5.11.1). Each metric holds only its filled buckets (18 bytes
/// each, none for a metric that saw no value) until more than half are filled, and at most
/// 2 KiB, whatever the traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmClusters {
    /// n_b = requests, s_b = error events (errors and timeouts).
    pub errors: ClusteredRatio,
    /// n_b = latencies, s_b = Σ ln(latency ms).
    pub log_latency: ClusteredRatio,
    /// n_b = costs, s_b = Σ capped cost.
    pub cost: ClusteredRatio,
    /// n_b = judged requests, s_b = Σ score.
    pub quality: ClusteredRatio,
    /// Parallel to [`ArmStats::exceedance`]: n_b = latencies, s_b = latencies above the threshold.
    pub exceedance: Vec<ClusteredRatio>,
    /// The error table at unit resolution ([`UNIT_BUCKETS`] buckets, a few users each): n_b =
    /// requests, s_b = error events. The error rollback test compares units with it
    /// ([`actuator_stats::UnitErrors`]), so a few heavy users cannot carry an arm. Sparse
    /// (18 bytes per filled bucket) up to half full, at most 64 KiB. Absent in states of
    /// earlier versions, which then keep the request-weighted test for the phase.
    #[serde(default = "unit_table")]
    pub unit_errors: ClusteredRatio,
}

/// An empty per-unit error table.
fn unit_table() -> ClusteredRatio {
    // UNIT_BUCKETS is a valid bucket count (a power of two in 2..=4096).
    ClusteredRatio::new(UNIT_BUCKETS).unwrap_or_default()
}

impl ArmClusters {
    fn new(thresholds: usize) -> Self {
        Self {
            errors: ClusteredRatio::default(),
            log_latency: ClusteredRatio::default(),
            cost: ClusteredRatio::default(),
            quality: ClusteredRatio::default(),
            exceedance: vec![ClusteredRatio::default(); thresholds],
            unit_errors: unit_table(),
        }
    }

    fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + [&self.errors, &self.log_latency, &self.cost, &self.quality, &self.unit_errors]
                .into_iter()
                .chain(&self.exceedance)
                .map(ClusteredRatio::approx_bytes)
                .sum::<usize>()
    }
}

/// Everything kept for one arm in one phase.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArmStats {
    /// Requests counted (after de-duplication).
    pub requests: u64,
    /// Successful requests.
    pub ok: u64,
    /// Failed requests (not counting timeouts).
    pub errors: u64,
    /// Timed-out requests (also error events).
    pub timeouts: u64,
    /// Refused requests.
    pub refused: u64,
    /// Moments of ln(latency ms) (floored at 1 ms).
    pub log_latency: RunningStats,
    /// Moments of latency in ms.
    pub latency: RunningStats,
    /// Latency sketch (ms).
    pub latency_sketch: QuantileSketch,
    /// Time-to-first-token sketch (ms).
    pub ttft_sketch: QuantileSketch,
    /// Prompt tokens in total.
    pub tokens_in: u64,
    /// Completion tokens in total.
    pub tokens_out: u64,
    /// Moments of the (capped) cost per request.
    pub cost: RunningStats,
    /// Cost sketch.
    pub cost_sketch: QuantileSketch,
    /// Requests whose cost was capped.
    pub cost_capped: u64,
    /// Moments of the quality score (judged requests only).
    pub quality: RunningStats,
    /// Exceedance counters, one per threshold frozen for this phase (tail sub-tests first,
    /// then the guard-rail p95/p99 thresholds).
    pub exceedance: Vec<ExceedanceCounter>,
    /// Last outcomes, for the catastrophic guard.
    pub recent: RecentWindow,
    /// Cluster statistics, present once this phase saw an observation from a sticky split.
    #[serde(default)]
    pub clusters: Option<Box<ArmClusters>>,
    /// Requests served on this arm outside the phase share (overrides, region rules, preview
    /// pins, not enrolled in a partial A/B): counted here, left out of every comparison.
    #[serde(default)]
    pub outside_requests: u64,
    /// Error events among [`ArmStats::outside_requests`].
    #[serde(default)]
    pub outside_error_events: u64,
    /// Outcomes and late scores of requests served in an earlier phase, received during this
    /// one: dropped (they belong to a phase whose evidence is frozen) and counted.
    #[serde(default)]
    pub stale: u64,
    /// Outcomes without a phase, counted in this phase (send `phase` to avoid any doubt around a
    /// ramp), plus late scores without a phase whose request is no longer remembered (dropped).
    #[serde(default)]
    pub unphased: u64,
}

impl ArmStats {
    pub(crate) fn new(
        thresholds: &[f64],
        window: usize,
        sketch_accuracy: f64,
        sketch_bins: u32,
    ) -> Result<Self> {
        let sketch = QuantileSketch::new(sketch_accuracy, sketch_bins)?;
        let exceedance = thresholds
            .iter()
            .map(|&t| ExceedanceCounter::new(t))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Self {
            requests: 0,
            ok: 0,
            errors: 0,
            timeouts: 0,
            refused: 0,
            log_latency: RunningStats::new(),
            latency: RunningStats::new(),
            latency_sketch: sketch.clone(),
            ttft_sketch: sketch.clone(),
            tokens_in: 0,
            tokens_out: 0,
            cost: RunningStats::new(),
            cost_sketch: sketch,
            cost_capped: 0,
            quality: RunningStats::new(),
            exceedance,
            recent: RecentWindow::new(window),
            clusters: None,
            outside_requests: 0,
            outside_error_events: 0,
            stale: 0,
            unphased: 0,
        })
    }

    /// Starts keeping cluster statistics (from now on) if not yet kept.
    pub(crate) fn ensure_clusters(&mut self) {
        if self.clusters.is_none() {
            self.clusters = Some(Box::new(ArmClusters::new(self.exceedance.len())));
        }
    }

    /// Counts a request served outside the phase share: never compared.
    pub(crate) fn record_outside(&mut self, c: &Clean) {
        self.outside_requests = self.outside_requests.saturating_add(1);
        if c.outcome.is_error() {
            self.outside_error_events = self.outside_error_events.saturating_add(1);
        }
    }

    /// Adds a quality score (late or with the outcome) of the request in cluster `unit`.
    pub(crate) fn record_quality(&mut self, score: f64, unit: u64) -> Result<()> {
        self.quality.push(score)?;
        if let Some(cl) = self.clusters.as_deref_mut() {
            cl.quality.add(unit, score)?;
        }
        Ok(())
    }

    /// Effective sample size: requests discounted for clustering by the larger design effect
    /// of the clustered error rate and mean ln latency. `None` without cluster statistics (a
    /// per-request split). Never above [`ArmStats::requests`].
    pub fn effective_requests(&self) -> Option<f64> {
        let cl = self.clusters.as_deref()?;
        let n = cl.errors.count();
        let d_errors = cl
            .errors
            .ratio()
            .filter(|r| *r > 0.0 && *r < 1.0)
            .and_then(|r| cl.errors.design_effect(r * (1.0 - r) / n));
        let d_latency = self.log_latency.variance().and_then(|v| {
            let m = cl.log_latency.count();
            cl.log_latency.design_effect(v / m)
        });
        let d = match (d_errors, d_latency) {
            (Some(a), Some(b)) => a.max(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return None,
        };
        Some((n / d.max(1.0)).min(self.requests as f64))
    }

    /// Adds one clean observation. All values were validated as finite and non-negative.
    pub(crate) fn record(&mut self, c: &Clean, cost_cap: Option<f64>) -> Result<()> {
        use crate::observation::Outcome;
        self.requests += 1;
        match c.outcome {
            Outcome::Ok => self.ok += 1,
            Outcome::Error => self.errors += 1,
            Outcome::Timeout => self.timeouts += 1,
            Outcome::Refused => self.refused += 1,
        }
        self.recent.push(c.outcome.is_error());
        let mut cl = self.clusters.as_deref_mut();
        if let Some(cl) = cl.as_deref_mut() {
            let e = if c.outcome.is_error() { 1.0 } else { 0.0 };
            cl.errors.add(c.unit, e)?;
            cl.unit_errors.add(c.unit, e)?;
        }
        if let Some(l) = c.latency_ms {
            let ln = l.max(LOG_LATENCY_FLOOR_MS).ln();
            self.log_latency.push(ln)?;
            self.latency.push(l)?;
            self.latency_sketch.add(l)?;
            for e in &mut self.exceedance {
                e.observe(l)?;
            }
            if let Some(cl) = cl.as_deref_mut() {
                cl.log_latency.add(c.unit, ln)?;
                for (k, e) in self.exceedance.iter().enumerate() {
                    if let Some(x) = cl.exceedance.get_mut(k) {
                        x.add(c.unit, if l > e.threshold() { 1.0 } else { 0.0 })?;
                    }
                }
            }
        }
        if let Some(t) = c.ttft_ms {
            self.ttft_sketch.add(t)?;
        }
        self.tokens_in = self.tokens_in.saturating_add(c.tokens_in);
        self.tokens_out = self.tokens_out.saturating_add(c.tokens_out);
        if let Some(cost) = c.cost {
            let capped = match cost_cap {
                Some(cap) if cost > cap => {
                    self.cost_capped += 1;
                    cap
                }
                _ => cost,
            };
            self.cost.push(capped)?;
            self.cost_sketch.add(capped)?;
            if let Some(cl) = cl {
                cl.cost.add(c.unit, capped)?;
            }
        }
        if let Some(q) = c.quality {
            self.record_quality(q, c.unit)?;
        }
        Ok(())
    }

    /// Error events: errors plus timeouts.
    pub const fn error_events(&self) -> u64 {
        self.errors + self.timeouts
    }

    /// Error rate, or `None` without requests.
    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.error_events() as f64 / self.requests as f64)
    }

    /// Success rate (ok / requests), or `None` without requests.
    pub fn success_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.ok as f64 / self.requests as f64)
    }

    /// Approximate bytes used; bounded by the sketch bin limits, not by the request count.
    pub fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.latency_sketch.approx_bytes()
            + self.ttft_sketch.approx_bytes()
            + self.cost_sketch.approx_bytes()
            + self.exceedance.len() * std::mem::size_of::<ExceedanceCounter>()
            + self.clusters.as_deref().map_or(0, ArmClusters::approx_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_keeps_last_outcomes() {
        let mut w = RecentWindow::new(4);
        for e in [true, true, false, false, false, true] {
            w.push(e);
        }
        assert_eq!(w.counts(), (1, 4));
        assert!(w.is_full());
        let mut big = RecentWindow::new(500);
        for _ in 0..200 {
            big.push(true);
        }
        assert_eq!(big.counts(), (128, 128));
    }
}
