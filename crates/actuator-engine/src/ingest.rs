//! Ingestion of request outcomes: parsed per item, grouped per rollout, recorded under each
//! rollout's own lock.

use actuator_core::DeploymentState;
use actuator_health::{AnalysisMode, Arm, Observation, Outcome, QualityUpdate};
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
    #[serde(default)]
    phase: Option<u32>,
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
            Some(score) => Ok((
                w.rollout_id.clone(),
                Item::Quality(QualityUpdate { rollout_id: w.rollout_id, request_id: w.request_id, arm, score }),
            )),
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
            Ok((w.rollout_id, Item::Obs(o, w.phase)))
        }
    }
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
    /// JSON on the way): the same rules as [`Engine::ingest`].
    pub async fn report(&self, observations: Vec<Observation>) -> IngestReport {
        let items = observations
            .into_iter()
            .map(|o| Ok((o.rollout_id.clone(), Item::Obs(o, None))))
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
                            Item::Obs(o, _) => {
                                idx.push(index);
                                obs.push(o);
                            }
                            Item::Quality(q) => match health.record_quality(&q) {
                                Ok(_) => report.accepted += 1,
                                Err(e) => report
                                    .results
                                    .push(IngestItemError { index, error: e.to_string() }),
                            },
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
                    let Some(rb) = g.st.rollback.as_mut() else { continue };
                    for (_, item) in group {
                        match item {
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
