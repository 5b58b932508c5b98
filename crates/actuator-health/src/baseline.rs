//! The stable's numbers frozen from the last compared phase, for stages without a control.
//!
//! At the 100% step (and in any stage that follows a compared phase without a concurrent
//! control) nothing serves the stable config any more, so the canary is compared with the
//! stable's sufficient statistics from the last phase in which both ran side by side: error
//! events and requests, the moments of ln latency, cost and quality, the exceedance counts at
//! the SLO latency thresholds, and the latency sketch from which the tail thresholds of the
//! next stage are frozen. Everything is bounded (counters, moments, one sketch).
//!
//! Time has passed since those numbers were taken, so a comparison with them tests "worse
//! than the stable by more than the stage's margin", never "worse at all": drift smaller than
//! the margin cannot roll a candidate back.

use actuator_stats::EvidenceLedger;
use serde::{Deserialize, Serialize};

use crate::aggregate::ArmStats;

/// The stable's sufficient statistics frozen at the end of a compared phase.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Baseline {
    /// The phase (0-based) they were taken in.
    pub phase: u32,
    /// The stable (control) arm's statistics in that phase.
    pub stable: ArmStats,
}

impl Baseline {
    /// Requests the baseline rests on.
    pub const fn requests(&self) -> u64 {
        self.stable.requests
    }

    /// The stable's error rate in that phase.
    pub fn error_rate(&self) -> Option<f64> {
        self.stable.error_rate()
    }
}

/// What a monitor hands to the monitor of the next stage when the control goes away: the
/// frozen baseline and the evidence carried so far (one budget for the whole rollout).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Handover {
    /// The stable's frozen numbers, when a compared phase had control traffic.
    pub baseline: Option<Baseline>,
    /// The evidence ledger with every phase closed.
    pub ledger: Option<EvidenceLedger>,
    /// Index of the next phase.
    pub next_phase: u32,
}
