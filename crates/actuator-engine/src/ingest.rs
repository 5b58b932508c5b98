//! Ingestion of request outcomes: parsed per item, grouped per rollout, recorded under each
//! rollout's own lock.

use actuator_core::DeploymentState;
use actuator_health::{AnalysisMode, Arm, Observation, Outcome, QualityUpdate, RecordOutcome};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

use crate::engine::Engine;

/// Most items in one batch.
pub const MAX_BATCH: usize = 10_000;

/// One rejected item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestItemError {
    /// Index in the batch.
    pub index: usize,
    /// What is wrong.
    pub error: String,
}

/// The result of a batch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestReport {
    /// Items kept.
    pub accepted: u64,
    /// Items refused (listed in `results`).
    pub rejected: u64,
    /// Retries of requests already counted.
    pub duplicates: u64,
    /// Outcomes of requests resolved in an earlier step (their `phase` is not the current
    /// one): kept out of the analysis, which compares arms within a step.
    pub stale: u64,
    /// The refused items.
    pub results: Vec<IngestItemError>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    request_id: String,
    rollout_id: String,
    #[serde(default)]
    arm: Option<String>,
    #[serde(default)]
    variant: Option<String>,
    /// Accepted for the caller's bookkeeping; the rollout id already names the slot.
    #[serde(default)]
    #[allow(dead_code)]
    slot: Option<String>,
    /// The resolution's `phase` (the rollout's step): an outcome or score of another step is
    /// stale.
    #[serde(default)]
    phase: Option<u32>,
    /// The resolution's `unit` (0..=65535) under a sticky split.
    #[serde(default)]
    unit: Option<u16>,
    /// The resolution's `in_experiment`; `false` keeps the request out of the comparison.
    #[serde(default)]
    in_experiment: Option<bool>,
    #[serde(default)]
    outcome: Option<Outcome>,
    #[serde(default)]
    latency_ms: Option<f64>,
    #[serde(default)]
    ttft_ms: Option<f64>,
    #[serde(default)]
    tokens_in: u64,
    #[serde(default)]
    tokens_out: u64,
    #[serde(default)]
    cost: Option<f64>,
    #[serde(default)]
    quality: Option<f64>,
}

enum Item {
    Obs(Observation, Option<u32>),
    Quality(QualityUpdate),
}

fn parse(v: Value) -> Result<(String, Item), String> {
    let w: Wire = serde_json::from_value(v).map_err(|e| e.to_string())?;
    let label = w.arm.or(w.variant);
    let arm = label.as_deref().map(Arm::parse);
    match w.outcome {
        None => match w.quality {
            Some(score) => {
                let mut q = QualityUpdate::new(w.rollout_id.clone(), w.request_id, score);
                q.arm = arm;
                q.phase = w.phase;
                q.unit = w.unit;
                q.in_experiment = w.in_experiment.unwrap_or(true);
                Ok((w.rollout_id, Item::Quality(q)))
            }
            None => Err("outcome is required (ok, error, timeout or refused), unless the item only carries a late quality score".into()),
        },
        Some(outcome) => {
            let Some(arm) = arm else {
                return Err("arm is required: the variant the resolve answer gave (stable, canary, shadow or an A/B arm)".into());
            };
            let mut o = Observation::new(w.rollout_id.clone(), w.request_id, arm, outcome);
            o.latency_ms = w.latency_ms;
            o.ttft_ms = w.ttft_ms;
            o.tokens_in = w.tokens_in;
            o.tokens_out = w.tokens_out;
            o.cost = w.cost;
            o.quality = w.quality;
            o.unit = w.unit;
            o.in_experiment = w.in_experiment.unwrap_or(true);
            Ok((w.rollout_id, Item::Obs(o, w.phase)))
        }
    }
}

/// The monitor's phase of a late score resolved at `step` (the resolution's phase) while the
/// rollout is at `current_step` and its monitor at `monitor_index`: `Some(None)` without a
/// phase, `None` when the step is not one the current monitor saw (stale).
fn monitor_phase(step: Option<u32>, current_step: u32, monitor_index: u32) -> Option<Option<u32>> {
    let Some(s) = step else { return Some(None) };
    let back = current_step.checked_sub(s)?;
    monitor_index.checked_sub(back).map(Some)
}

impl Engine {
    /// Records a batch of outcomes. Valid items are kept; invalid ones are reported by index.
    pub async fn ingest(&self, items: Vec<Value>) -> IngestReport {
        self.ingest_parsed(items.into_iter().map(Ok).collect()).await
    }

    /// Like [`Engine::ingest`], for items some of which already failed to parse (an NDJSON
    /// line that is not JSON): those are reported at their index with their error.
    pub async fn ingest_parsed(&self, items: Vec<Result<Value, String>>) -> IngestReport {
        let mut report = IngestReport::default();
        if items.len() > MAX_BATCH {
            report.rejected = items.len() as u64;
            report.results.push(IngestItemError {
                index: 0,
                error: format!(
                    "a batch holds at most {MAX_BATCH} items, got {}; split it",
                    items.len()
                ),
            });
            return report;
        }
        let parsed = items.into_iter().map(|v| v.and_then(parse)).collect();
        self.ingest_items(parsed, report).await
    }

    /// Records outcomes reported in-process by an application that embeds the engine (no
    /// JSON on the way): the same rules as [`Engine::ingest`]. Set each observation's `phase`
    /// to the resolution's `phase` (the rollout's step), `unit` and `in_experiment` to the
    /// resolution's, so the outcome joins the step it was served in.
    pub async fn report(&self, observations: Vec<Observation>) -> IngestReport {
        let items = observations
            .into_iter()
            .map(|o| {
                let step = o.phase;
                Ok((o.rollout_id.clone(), Item::Obs(o, step)))
            })
            .collect();
        self.ingest_items(items, IngestReport::default()).await
    }

    async fn ingest_items(
        &self,
        items: Vec<Result<(String, Item), String>>,
        mut report: IngestReport,
    ) -> IngestReport {
        let mut groups: BTreeMap<String, Vec<(usize, Item)>> = BTreeMap::new();
        for (index, v) in items.into_iter().enumerate() {
            match v {
                Ok((rollout, item)) => groups.entry(rollout).or_default().push((index, item)),
                Err(error) => report.results.push(IngestItemError { index, error }),
            }
        }
        for (rollout, group) in groups {
            let Some(rt) = self.runtime(&rollout) else {
                for (index, _) in group {
                    report.results.push(IngestItemError {
                        index,
                        error: format!("rollout {rollout} is unknown or no longer active"),
                    });
                }
                continue;
            };
            let mut g = rt.lock().await;
            let state = g.rec.state;
            let no_control =
                g.st.health.as_ref().is_some_and(|h| matches!(h.mode(), AnalysisMode::NoControl));
            let step = u32::try_from(g.st.step).unwrap_or(u32::MAX);
            match state {
                DeploymentState::RollingOut
                | DeploymentState::Monitoring
                | DeploymentState::Paused => {
                    let Some(health) = g.st.health.as_mut() else { continue };
                    let mut obs = Vec::new();
                    let mut idx = Vec::new();
                    for (index, item) in group {
                        match item {
                            Item::Obs(_, Some(p)) if p != step => {
                                report.accepted += 1;
                                report.stale += 1;
                            }
                            Item::Obs(o, _) if no_control && o.arm == Arm::Control => {
                                report.accepted += 1
                            }
                            Item::Obs(mut o, p) => {
                                // the step of the resolution, in the monitor's phase numbering
                                o.phase = p.map(|_| health.phase_index());
                                idx.push(index);
                                obs.push(o);
                            }
                            Item::Quality(mut q) => {
                                let Some(phase) =
                                    monitor_phase(q.phase, step, health.phase_index())
                                else {
                                    report.accepted += 1;
                                    report.stale += 1;
                                    continue;
                                };
                                q.phase = phase;
                                match health.record_quality(&q) {
                                    Ok(RecordOutcome::Stale) => {
                                        report.accepted += 1;
                                        report.stale += 1;
                                    }
                                    Ok(_) => report.accepted += 1,
                                    Err(e) => report
                                        .results
                                        .push(IngestItemError { index, error: e.to_string() }),
                                }
                            }
                        }
                    }
                    let r = health.record_batch(&obs);
                    report.accepted += r.recorded;
                    report.duplicates += r.duplicates;
                    for (i, e) in r.errors {
                        report.results.push(IngestItemError { index: idx[i], error: e });
                    }
                }
                DeploymentState::RollingBack => {
                    // During a rollback only the stable config's health matters: count it.
                    let st = &mut g.st;
                    let Some(rb) = st.rollback.as_mut() else { continue };
                    for (_, item) in group {
                        match item {
                            // retries of a control request count once here too
                            Item::Obs(o, _)
                                if o.arm == Arm::Control
                                    && st
                                        .health
                                        .as_mut()
                                        .is_some_and(|h| !h.remember_request(&o.request_id)) =>
                            {
                                report.accepted += 1;
                                report.duplicates += 1;
                            }
                            Item::Obs(o, _) if o.arm == Arm::Control => {
                                rb.control_requests += 1;
                                rb.control_errors += u64::from(o.outcome.is_error());
                                report.accepted += 1;
                            }
                            Item::Obs(..) | Item::Quality(_) => report.accepted += 1,
                        }
                    }
                }
                other => {
                    for (index, _) in group {
                        report.results.push(IngestItemError {
                            index,
                            error: format!(
                                "rollout {rollout} is {other}; it takes no observations"
                            ),
                        });
                    }
                }
            }
            g.dirty = true;
        }
        report.results.sort_by_key(|e| e.index);
        report.rejected = report.results.len() as u64;
        self.wake();
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_wire_carries_phase_unit_and_tag_of_outcomes_and_scores() {
        let (_, item) = parse(json!({
            "request_id": "q1", "rollout_id": "r", "arm": "canary", "outcome": "ok",
            "latency_ms": 10.0, "phase": 2, "unit": 4634, "in_experiment": false
        }))
        .unwrap();
        let Item::Obs(o, phase) = item else { panic!("an outcome") };
        assert_eq!((phase, o.unit, o.in_experiment), (Some(2), Some(4634), false));
        let (_, item) = parse(json!({
            "request_id": "q1", "rollout_id": "r", "quality": 4.0, "phase": 1, "unit": 7
        }))
        .unwrap();
        let Item::Quality(q) = item else { panic!("a score") };
        assert_eq!((q.phase, q.unit, q.in_experiment), (Some(1), Some(7), true));
        let e = parse(json!({"request_id": "q", "rollout_id": "r", "arm": "canary",
            "outcome": "ok", "unit": 70000}))
        .err()
        .unwrap();
        assert!(e.contains("70000"), "{e}");
    }

    #[test]
    fn late_scores_map_steps_to_the_monitor_phase() {
        // no phase: the monitor decides
        assert_eq!(monitor_phase(None, 3, 1), Some(None));
        // the current step is the monitor's current phase
        assert_eq!(monitor_phase(Some(3), 3, 1), Some(Some(1)));
        // one step back is one phase back, while the monitor saw it
        assert_eq!(monitor_phase(Some(2), 3, 1), Some(Some(0)));
        // before the monitor existed (a fresh monitor at 100%), or a step ahead: stale
        assert_eq!(monitor_phase(Some(1), 3, 1), None);
        assert_eq!(monitor_phase(Some(4), 3, 1), None);
    }
}
