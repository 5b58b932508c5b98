//! What applications report: one [`Observation`] per request, and [`QualityUpdate`]s that may
//! arrive later for a request already seen.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{HealthError, Result};

/// Longest accepted request id, in bytes.
pub const MAX_REQUEST_ID_BYTES: usize = 256;

/// Which variant served the request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arm {
    /// The stable configuration (also called control or baseline).
    Control,
    /// The new configuration under a canary rollout.
    Canary,
    /// The new configuration receiving mirrored traffic.
    Shadow,
    /// An A/B arm, by name.
    Named(String),
}

impl Arm {
    /// Parses a label: `stable`/`control`/`baseline`, `canary`, `shadow`, or any other name.
    pub fn parse(label: &str) -> Self {
        match label.trim().to_ascii_lowercase().as_str() {
            "control" | "stable" | "baseline" => Self::Control,
            "canary" => Self::Canary,
            "shadow" => Self::Shadow,
            _ => Self::Named(label.trim().to_string()),
        }
    }

    /// The label used in reports and rule names.
    pub fn label(&self) -> &str {
        match self {
            Self::Control => "control",
            Self::Canary => "canary",
            Self::Shadow => "shadow",
            Self::Named(n) => n,
        }
    }
}

impl fmt::Display for Arm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// How the request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Answered successfully.
    Ok,
    /// Failed (an error event).
    Error,
    /// Timed out: counted as an error **and** as latency at the timeout value.
    Timeout,
    /// The model refused to answer (not an error; lowers the success rate).
    Refused,
}

impl Outcome {
    /// `true` for error events (errors and timeouts).
    pub const fn is_error(self) -> bool {
        matches!(self, Self::Error | Self::Timeout)
    }
}

/// One request's outcome, as reported by the application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// Logical request id; retries carry the same id and are counted once.
    pub request_id: String,
    /// The configuration slot the rollout changes (empty matches any).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub slot: String,
    /// The rollout this request belongs to.
    pub rollout_id: String,
    /// The arm that served it.
    pub arm: Arm,
    /// How it ended.
    pub outcome: Outcome,
    /// End-to-end latency in milliseconds (required for `ok`; for `timeout` the configured
    /// timeout is used when missing or smaller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// Time to first token in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<f64>,
    /// Prompt tokens.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tokens_in: u64,
    /// Completion tokens.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tokens_out: u64,
    /// Cost of the request (any currency unit, the same for all arms), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
    /// Quality score (1..=5 by default), when already judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<f64>,
    /// The assignment-unit hash the resolution returned (`unit`, 0..=65535) when a sticky
    /// split served the request. Requests of one unit are analysed as one cluster; without it
    /// each request counts as its own unit (correct only for per-request splits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<u16>,
    /// `false` when the resolution said the request was routed outside the phase share
    /// (override, preview pin, region rule, not enrolled in a partial A/B): counted separately,
    /// left out of every comparison and of the sample-ratio check. Default `true`.
    #[serde(default = "in_experiment_default", skip_serializing_if = "is_true")]
    pub in_experiment: bool,
    /// The monitor's phase index the request was served in. An outcome of another phase is
    /// dropped as stale and counted; without a phase it is counted in the current phase (and
    /// counted as unphased).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<u32>,
}

const fn in_experiment_default() -> bool {
    true
}

// Serialised forms (the engine's durable observation batches) leave out what reads back as
// its default: a batch is written before every acknowledgement, so its size is ingestion's
// cost.
#[allow(clippy::trivially_copy_pass_by_ref)]
const fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[allow(clippy::trivially_copy_pass_by_ref)]
const fn is_true(v: &bool) -> bool {
    *v
}

impl Observation {
    /// A minimal observation; add measurements with the builder methods.
    pub fn new(
        rollout_id: impl Into<String>,
        request_id: impl Into<String>,
        arm: Arm,
        outcome: Outcome,
    ) -> Self {
        Self {
            request_id: request_id.into(),
            slot: String::new(),
            rollout_id: rollout_id.into(),
            arm,
            outcome,
            latency_ms: None,
            ttft_ms: None,
            tokens_in: 0,
            tokens_out: 0,
            cost: None,
            quality: None,
            unit: None,
            in_experiment: true,
            phase: None,
        }
    }

    /// Sets the assignment-unit hash from the resolution.
    #[must_use]
    pub const fn unit(mut self, unit: u16) -> Self {
        self.unit = Some(unit);
        self
    }

    /// Marks the request as routed outside the phase share (not compared).
    #[must_use]
    pub const fn outside_experiment(mut self) -> Self {
        self.in_experiment = false;
        self
    }

    /// Sets the monitor's phase index the request was served in.
    #[must_use]
    pub const fn phase(mut self, phase: u32) -> Self {
        self.phase = Some(phase);
        self
    }

    /// Sets the slot.
    #[must_use]
    pub fn slot(mut self, slot: impl Into<String>) -> Self {
        self.slot = slot.into();
        self
    }

    /// Sets the latency in milliseconds.
    #[must_use]
    pub const fn latency(mut self, ms: f64) -> Self {
        self.latency_ms = Some(ms);
        self
    }

    /// Sets the time to first token in milliseconds.
    #[must_use]
    pub const fn ttft(mut self, ms: f64) -> Self {
        self.ttft_ms = Some(ms);
        self
    }

    /// Sets token counts.
    #[must_use]
    pub const fn tokens(mut self, tokens_in: u64, tokens_out: u64) -> Self {
        self.tokens_in = tokens_in;
        self.tokens_out = tokens_out;
        self
    }

    /// Sets the cost.
    #[must_use]
    pub const fn cost(mut self, cost: f64) -> Self {
        self.cost = Some(cost);
        self
    }

    /// Sets the quality score.
    #[must_use]
    pub const fn quality(mut self, score: f64) -> Self {
        self.quality = Some(score);
        self
    }
}

/// A quality score that arrives after the request was recorded (e.g. from an LLM judge).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityUpdate {
    /// The rollout.
    pub rollout_id: String,
    /// The request that was judged.
    pub request_id: String,
    /// The arm, if the sender knows it (needed when the request id is no longer remembered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arm: Option<Arm>,
    /// The score.
    pub score: f64,
    /// The monitor's phase index the request was served in (needed when the request id is no
    /// longer remembered; a score of another phase is dropped as stale and counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<u32>,
    /// The request's assignment-unit hash (see [`Observation::unit`]), when the request is no
    /// longer remembered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<u16>,
    /// `false` for a request routed outside the phase share (see
    /// [`Observation::in_experiment`]): the score is then not compared.
    #[serde(default = "in_experiment_default", skip_serializing_if = "is_true")]
    pub in_experiment: bool,
}

impl QualityUpdate {
    /// A late score for `request_id`; set `arm`, `phase`, `unit` when known.
    pub fn new(rollout_id: impl Into<String>, request_id: impl Into<String>, score: f64) -> Self {
        Self {
            rollout_id: rollout_id.into(),
            request_id: request_id.into(),
            arm: None,
            score,
            phase: None,
            unit: None,
            in_experiment: true,
        }
    }
}

pub(crate) fn invalid(
    request_id: &str,
    field: &'static str,
    reason: impl Into<String>,
) -> HealthError {
    HealthError::InvalidObservation {
        request_id: request_id.to_string(),
        field,
        reason: reason.into(),
    }
}

pub(crate) fn check_request_id(id: &str) -> Result<()> {
    if id.trim().is_empty() {
        return Err(invalid(id, "request_id", "must not be empty; send the logical request id"));
    }
    if id.len() > MAX_REQUEST_ID_BYTES {
        return Err(invalid(
            id,
            "request_id",
            format!("is {} bytes; send at most {MAX_REQUEST_ID_BYTES}", id.len()),
        ));
    }
    Ok(())
}

pub(crate) fn check_non_negative(
    id: &str,
    field: &'static str,
    v: Option<f64>,
) -> Result<Option<f64>> {
    match v {
        None => Ok(None),
        Some(x) if x.is_nan() => Err(invalid(id, field, "is NaN; send a number or leave it out")),
        Some(x) if !x.is_finite() => Err(invalid(id, field, "is infinite; send a finite number")),
        Some(x) if x < 0.0 => {
            Err(invalid(id, field, format!("is negative ({x}); send a value >= 0")))
        }
        Some(x) if x > 1e12 => {
            Err(invalid(id, field, format!("is implausibly large ({x}); check the unit")))
        }
        Some(x) => Ok(Some(x)),
    }
}

pub(crate) fn check_quality(id: &str, v: f64, range: (f64, f64)) -> Result<f64> {
    if !v.is_finite() {
        return Err(invalid(id, "quality", "is not a finite number; send a score or leave it out"));
    }
    if v < range.0 || v > range.1 {
        return Err(invalid(
            id,
            "quality",
            format!("{v} is outside {}..={}; send a score in range", range.0, range.1),
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arm_labels_round_trip() {
        for (s, a) in [("stable", Arm::Control), ("Canary", Arm::Canary), ("shadow", Arm::Shadow)] {
            assert_eq!(Arm::parse(s), a);
        }
        assert_eq!(Arm::parse("variant-b"), Arm::Named("variant-b".into()));
        assert_eq!(Arm::Named("b".into()).to_string(), "b");
        let json = serde_json::to_string(&Arm::Named("b".into())).unwrap();
        assert_eq!(serde_json::from_str::<Arm>(&json).unwrap(), Arm::Named("b".into()));
    }

    #[test]
    fn field_checks() {
        assert!(check_non_negative("r", "latency_ms", Some(f64::NAN)).is_err());
        assert!(check_non_negative("r", "latency_ms", Some(-1.0)).is_err());
        assert_eq!(check_non_negative("r", "latency_ms", Some(3.0)).unwrap(), Some(3.0));
        assert!(check_quality("r", 6.0, (1.0, 5.0)).is_err());
        assert!(check_request_id("").is_err());
        assert!(check_request_id(&"x".repeat(300)).is_err());
    }
}
