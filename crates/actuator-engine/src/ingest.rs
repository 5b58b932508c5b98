//! Ingestion of request outcomes: parsed per item, grouped per rollout, made durable, then
//! recorded under each rollout's own lock.
//!
//! A batch goes through three stages. *Plan*: under the locks of the rollouts it names, each
//! item is rejected (unknown rollout, a state that takes no observations, a non-finite
//! number), counted without effect (an outcome of an earlier step), or kept as an [`Entry`].
//! *Append* (`engine.durability = "batch"`): the entries of every rollout are written to the
//! store in one transaction; if that fails, nothing of the batch is kept and the caller gets
//! [`EngineError::NotDurable`]. *Fold*: the entries are recorded into the evidence. Replay
//! on start folds the same entries through the same [`fold`], so a replayed batch counts
//! exactly as it did when it was acknowledged.

use actuator_core::{DeploymentState, NewObservationBatch};
use actuator_health::{AnalysisMode, Arm, Observation, Outcome, QualityUpdate, RecordOutcome};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::engine::{Durability, Engine, Runtime};
use crate::error::EngineError;

/// Most items in one batch.
pub const MAX_BATCH: usize = 10_000;

/// Counts a batch's items by what became of them.
fn count_ingest(r: &IngestReport) {
    let kept = r.accepted.saturating_sub(r.stale);
    for (outcome, n) in [
        ("accepted", kept),
        ("rejected", r.rejected),
        ("duplicate", r.duplicates),
        ("stale", r.stale),
    ] {
        if n > 0 {
            metrics::counter!("actuator_observations_total", "outcome" => outcome).increment(n);
        }
    }
}

/// One rejected item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct IngestItemError {
    /// Index in the batch.
    pub index: usize,
    /// What is wrong.
    pub error: String,
}

/// The result of a batch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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

/// One item as the API carries it, borrowing its strings from the request body where
/// they need no unescaping.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire<'a> {
    #[serde(borrow)]
    request_id: Cow<'a, str>,
    #[serde(borrow)]
    rollout_id: Cow<'a, str>,
    #[serde(default, borrow)]
    arm: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    variant: Option<Cow<'a, str>>,
    /// Accepted for the caller's bookkeeping; the rollout id already names the slot.
    #[serde(default, borrow)]
    #[allow(dead_code)]
    slot: Option<Cow<'a, str>>,
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

/// Only the rollout id of an item (the shard key of a body).
#[derive(Deserialize)]
struct RolloutOf<'a> {
    #[serde(borrow)]
    rollout_id: Cow<'a, str>,
}

enum Item {
    Obs(Observation, Option<u32>),
    Quality(QualityUpdate),
}

impl Item {
    /// The rollout the item names.
    fn rollout(&self) -> &str {
        match self {
            Item::Obs(o, _) => &o.rollout_id,
            Item::Quality(q) => &q.rollout_id,
        }
    }
}

fn parse(v: Value) -> Result<Item, String> {
    let w = Wire::deserialize(v).map_err(|e| e.to_string())?;
    from_wire(w)
}

fn from_wire(w: Wire<'_>) -> Result<Item, String> {
    let label = w.arm.or(w.variant);
    let arm = label.as_deref().map(Arm::parse);
    let rollout_id = w.rollout_id.into_owned();
    let request_id = w.request_id.into_owned();
    match w.outcome {
        None => match w.quality {
            Some(score) => {
                let mut q = QualityUpdate::new(rollout_id, request_id, score);
                q.arm = arm;
                q.phase = w.phase;
                q.unit = w.unit;
                q.in_experiment = w.in_experiment.unwrap_or(true);
                Ok(Item::Quality(q))
            }
            None => Err("outcome is required (ok, error, timeout or refused), unless the item only carries a late quality score".into()),
        },
        Some(outcome) => {
            let Some(arm) = arm else {
                return Err("arm is required: the variant the resolve answer gave (stable, canary, shadow or an A/B arm)".into());
            };
            let mut o = Observation::new(rollout_id, request_id, arm, outcome);
            o.latency_ms = w.latency_ms;
            o.ttft_ms = w.ttft_ms;
            o.tokens_in = w.tokens_in;
            o.tokens_out = w.tokens_out;
            o.cost = w.cost;
            o.quality = w.quality;
            o.unit = w.unit;
            o.in_experiment = w.in_experiment.unwrap_or(true);
            Ok(Item::Obs(o, w.phase))
        }
    }
}

/// How an observation body is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFormat {
    /// A JSON array of items (or one item object).
    Json,
    /// One JSON object per line (`application/x-ndjson`); blank lines are skipped.
    Ndjson,
}

/// Why a whole observation body was refused (nothing of it was recorded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// The body is not valid JSON.
    #[error("the request body is not valid JSON: {0}")]
    Malformed(String),
    /// The body is JSON but neither an array nor an object.
    #[error("send a JSON array of observations")]
    NotAnArray,
    /// More items than [`MAX_BATCH`].
    #[error("a batch holds at most {MAX_BATCH} observations, got {0}; split it")]
    TooMany(usize),
}

/// An observation body parsed item by item straight into typed observations (no generic
/// JSON tree): an item that does not parse is kept as its error, at its index.
pub struct ParsedBatch {
    items: Vec<Result<Item, String>>,
}

impl std::fmt::Debug for ParsedBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParsedBatch").field("items", &self.items.len()).finish()
    }
}

impl ParsedBatch {
    /// Parses `body` in `format`.
    ///
    /// # Errors
    /// [`BodyError`] when the body as a whole is unusable: not JSON (a JSON body), neither
    /// an array nor an object, or more than [`MAX_BATCH`] items. An NDJSON line that is not
    /// JSON fails alone, as its item's error.
    pub fn parse(body: &[u8], format: BodyFormat) -> Result<Self, BodyError> {
        let items = match format {
            BodyFormat::Json => {
                let raw: Vec<&RawValue> = match serde_json::from_slice(body) {
                    Ok(raw) => raw,
                    Err(e) => {
                        return match serde_json::from_slice::<&RawValue>(body) {
                            Err(_) => Err(BodyError::Malformed(e.to_string())),
                            Ok(one) if one.get().starts_with('{') => Ok(Self {
                                items: vec![item(serde_json::from_str(one.get()), None)],
                            }),
                            Ok(_) => Err(BodyError::NotAnArray),
                        };
                    }
                };
                if raw.len() > MAX_BATCH {
                    return Err(BodyError::TooMany(raw.len()));
                }
                raw.into_iter().map(|r| item(serde_json::from_str(r.get()), None)).collect()
            }
            BodyFormat::Ndjson => {
                let lines: Vec<(usize, &[u8])> = body
                    .split(|b| *b == b'\n')
                    .enumerate()
                    .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
                    .collect();
                if lines.len() > MAX_BATCH {
                    return Err(BodyError::TooMany(lines.len()));
                }
                lines
                    .into_iter()
                    .map(|(i, line)| item(serde_json::from_slice(line), Some(i + 1)))
                    .collect()
            }
        };
        Ok(Self { items })
    }

    /// The `rollout_id` of the first item that has one, read without parsing the rest.
    pub fn first_rollout_id(body: &[u8], format: BodyFormat) -> Option<String> {
        let first = match format {
            BodyFormat::Json => {
                // Read on the request's own thread: find the first `"rollout_id"` key and
                // read its string, without parsing the rest of a body of up to 16 MiB (a
                // quote inside a JSON string is escaped, so the key cannot match inside one).
                const KEY: &[u8] = b"\"rollout_id\"";
                let at = body.windows(KEY.len()).position(|w| w == KEY)?;
                let rest = body[at + KEY.len()..].trim_ascii_start().strip_prefix(b":")?;
                let mut de = serde_json::Deserializer::from_slice(rest);
                return String::deserialize(&mut de).ok();
            }
            BodyFormat::Ndjson => body
                .split(|b| *b == b'\n')
                .find(|line| !line.iter().all(u8::is_ascii_whitespace))?,
        };
        serde_json::from_slice::<RolloutOf<'_>>(first).ok().map(|o| o.rollout_id.into_owned())
    }

    /// How many items the body held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the body held no item.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// One parsed item, or its error; `line` names the NDJSON line of a syntax error.
fn item(parsed: serde_json::Result<Wire<'_>>, line: Option<usize>) -> Result<Item, String> {
    match parsed {
        Ok(w) => from_wire(w),
        Err(e) => match (line, e.classify()) {
            (Some(n), serde_json::error::Category::Syntax | serde_json::error::Category::Eof) => {
                Err(format!("line {n} is not valid JSON: {e}"))
            }
            _ => Err(e.to_string()),
        },
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

/// One item that changes a rollout's evidence, as kept in a durable batch.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Entry {
    /// An outcome.
    Obs(Observation),
    /// A late quality score.
    Quality(QualityUpdate),
}

/// The stored form of a batch of one rollout.
#[derive(Serialize)]
struct BatchDoc<'a> {
    /// Format version.
    v: u32,
    items: &'a [Entry],
}

#[derive(Deserialize)]
struct StoredBatch {
    v: u32,
    items: Vec<Entry>,
}

const BATCH_FORMAT: u32 = 1;

/// Reads back the entries of a stored batch.
pub(crate) fn decode_batch(items: &str) -> Result<Vec<Entry>, String> {
    let b: StoredBatch = serde_json::from_str(items).map_err(|e| e.to_string())?;
    if b.v != BATCH_FORMAT {
        return Err(format!("unknown observation batch format {}", b.v));
    }
    Ok(b.items)
}

/// What folding a batch did; `errors` are positions in the batch's entries.
#[derive(Debug, Default)]
pub(crate) struct Folded {
    pub(crate) accepted: u64,
    pub(crate) duplicates: u64,
    pub(crate) stale: u64,
    pub(crate) errors: Vec<(usize, String)>,
}

/// Records `entries` into the evidence of `rt`. Deterministic given the rollout's state, so
/// that a replayed batch counts as it did live: quality scores first, in order, then the
/// outcomes as one batch.
pub(crate) fn fold(rt: &mut Runtime, entries: Vec<Entry>) -> Folded {
    let mut out = Folded::default();
    if entries.is_empty() {
        return out;
    }
    match rt.rec.state {
        DeploymentState::RollingOut | DeploymentState::Monitoring | DeploymentState::Paused => {
            let Some(health) = rt.st.health.as_mut() else { return out };
            let mut obs = Vec::new();
            let mut pos = Vec::new();
            for (i, e) in entries.into_iter().enumerate() {
                match e {
                    Entry::Obs(o) => {
                        pos.push(i);
                        obs.push(o);
                    }
                    Entry::Quality(q) => match health.record_quality(&q) {
                        Ok(RecordOutcome::Stale) => {
                            out.accepted += 1;
                            out.stale += 1;
                        }
                        Ok(_) => out.accepted += 1,
                        Err(e) => out.errors.push((i, e.to_string())),
                    },
                }
            }
            let r = health.record_batch(&obs);
            out.accepted += r.recorded;
            out.duplicates += r.duplicates;
            out.errors.extend(r.errors.into_iter().map(|(i, e)| (pos[i], e)));
        }
        DeploymentState::RollingBack => {
            // During a rollback only the stable config's health matters: count it.
            let st = &mut rt.st;
            let Some(rb) = st.rollback.as_mut() else { return out };
            for e in entries {
                if let Entry::Obs(o) = &e
                    && o.arm == Arm::Control
                {
                    // Retries of a control request count once here too.
                    if st.health.as_mut().is_some_and(|h| !h.remember_request(&o.request_id)) {
                        out.duplicates += 1;
                    } else {
                        rb.control_requests += 1;
                        rb.control_errors += u64::from(o.outcome.is_error());
                    }
                }
                out.accepted += 1;
            }
        }
        _ => return out,
    }
    rt.dirty = true;
    rt.fresh = true;
    out
}

/// A stored batch must replay exactly as it was recorded: a number JSON cannot carry (NaN,
/// infinity, which an in-process caller can pass) is refused up front.
fn finite(entry: &Entry) -> Result<(), String> {
    let fields = match entry {
        Entry::Obs(o) => [
            ("latency_ms", o.latency_ms),
            ("ttft_ms", o.ttft_ms),
            ("cost", o.cost),
            ("quality", o.quality),
        ],
        Entry::Quality(q) => [("quality", Some(q.score)), ("", None), ("", None), ("", None)],
    };
    match fields.into_iter().find(|(_, v)| v.is_some_and(|v| !v.is_finite())) {
        Some((name, Some(v))) => Err(format!("{name} must be a finite number, got {v}")),
        _ => Ok(()),
    }
}

/// The entries of one rollout's share of a batch, with the batch index of each.
struct Planned {
    entries: Vec<Entry>,
    index: Vec<usize>,
}

/// Decides, under the rollout's lock, what each item of the group does.
fn plan(
    rt: &Runtime,
    rollout: &str,
    group: Vec<(usize, Item)>,
    report: &mut IngestReport,
) -> Planned {
    fn keep(p: &mut Planned, report: &mut IngestReport, index: usize, e: Entry) {
        match finite(&e) {
            Ok(()) => {
                p.entries.push(e);
                p.index.push(index);
            }
            Err(error) => report.results.push(IngestItemError { index, error }),
        }
    }
    let mut p = Planned { entries: Vec::new(), index: Vec::new() };
    match rt.rec.state {
        DeploymentState::RollingOut | DeploymentState::Monitoring | DeploymentState::Paused => {
            let Some(health) = rt.st.health.as_ref() else { return p };
            let no_control = matches!(health.mode(), AnalysisMode::NoControl);
            let step = u32::try_from(rt.st.step).unwrap_or(u32::MAX);
            for (index, item) in group {
                match item {
                    Item::Obs(_, Some(phase)) if phase != step => {
                        report.accepted += 1;
                        report.stale += 1;
                    }
                    Item::Obs(o, _) if no_control && o.arm == Arm::Control => report.accepted += 1,
                    Item::Obs(mut o, phase) => {
                        // The step of the resolution, in the monitor's phase numbering.
                        o.phase = phase.map(|_| health.phase_index());
                        // Without a control there is no comparison for the tag to protect: a
                        // step watches every request the candidate served (a blue-green
                        // preview serves only its pinned keys, which resolve as outside).
                        if no_control {
                            o.in_experiment = true;
                        }
                        keep(&mut p, report, index, Entry::Obs(o));
                    }
                    Item::Quality(mut q) => {
                        let Some(phase) = monitor_phase(q.phase, step, health.phase_index()) else {
                            report.accepted += 1;
                            report.stale += 1;
                            continue;
                        };
                        q.phase = phase;
                        keep(&mut p, report, index, Entry::Quality(q));
                    }
                }
            }
        }
        DeploymentState::RollingBack => {
            if rt.st.rollback.is_none() {
                return p;
            }
            for (index, item) in group {
                match item {
                    Item::Obs(o, _) if o.arm == Arm::Control => {
                        keep(&mut p, report, index, Entry::Obs(o))
                    }
                    Item::Obs(..) | Item::Quality(_) => report.accepted += 1,
                }
            }
        }
        other => {
            for (index, _) in group {
                report.results.push(IngestItemError {
                    index,
                    error: format!("rollout {rollout} is {other}; it takes no observations"),
                });
            }
        }
    }
    p
}

impl Engine {
    /// Records a batch of outcomes. Valid items are kept; invalid ones are reported by index.
    ///
    /// With `engine.durability = "batch"` (the default) the kept items are on disk when this
    /// returns `Ok`.
    ///
    /// # Errors
    /// [`EngineError::NotDurable`] when the store could not persist the batch: nothing of it
    /// was kept, and the whole batch can be sent again.
    pub async fn ingest(&self, items: Vec<Value>) -> Result<IngestReport, EngineError> {
        self.ingest_parsed(items.into_iter().map(Ok).collect()).await
    }

    /// Like [`Engine::ingest`], for items some of which already failed to parse (an NDJSON
    /// line that is not JSON): those are reported at their index with their error.
    ///
    /// # Errors
    /// As [`Engine::ingest`].
    pub async fn ingest_parsed(
        &self,
        items: Vec<Result<Value, String>>,
    ) -> Result<IngestReport, EngineError> {
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
            count_ingest(&report);
            return Ok(report);
        }
        let parsed = items.into_iter().map(|v| v.and_then(parse)).collect();
        self.ingest_items(parsed, report).await
    }

    /// Records a parsed body ([`ParsedBatch`]): the same rules and durability as
    /// [`Engine::ingest`], without a generic JSON tree on the way.
    ///
    /// # Errors
    /// As [`Engine::ingest`].
    pub async fn ingest_batch(&self, batch: ParsedBatch) -> Result<IngestReport, EngineError> {
        self.ingest_items(batch.items, IngestReport::default()).await
    }

    /// Records outcomes reported in-process by an application that embeds the engine (no
    /// JSON on the way): the same rules, and the same durability, as [`Engine::ingest`]. Set
    /// each observation's `phase` to the resolution's `phase` (the rollout's step), `unit` and
    /// `in_experiment` to the resolution's, so the outcome joins the step it was served in.
    ///
    /// # Errors
    /// As [`Engine::ingest`].
    pub async fn report(
        &self,
        observations: Vec<Observation>,
    ) -> Result<IngestReport, EngineError> {
        if observations.len() > MAX_BATCH {
            return Ok(IngestReport {
                rejected: observations.len() as u64,
                results: vec![IngestItemError {
                    index: 0,
                    error: format!(
                        "a batch holds at most {MAX_BATCH} items, got {}; split it",
                        observations.len()
                    ),
                }],
                ..IngestReport::default()
            });
        }
        let items = observations
            .into_iter()
            .map(|o| {
                let step = o.phase;
                Ok(Item::Obs(o, step))
            })
            .collect();
        self.ingest_items(items, IngestReport::default()).await
    }

    /// Ingests and counts the outcome in the metrics (`actuator_observations_total`).
    async fn ingest_items(
        &self,
        items: Vec<Result<Item, String>>,
        report: IngestReport,
    ) -> Result<IngestReport, EngineError> {
        let r = self.ingest_uncounted(items, report).await?;
        count_ingest(&r);
        Ok(r)
    }

    async fn ingest_uncounted(
        &self,
        items: Vec<Result<Item, String>>,
        mut report: IngestReport,
    ) -> Result<IngestReport, EngineError> {
        let mut groups: BTreeMap<String, Vec<(usize, Item)>> = BTreeMap::new();
        for (index, v) in items.into_iter().enumerate() {
            match v {
                // One key per rollout, not one per item: a batch usually names one rollout.
                Ok(item) => match groups.get_mut(item.rollout()) {
                    Some(group) => group.push((index, item)),
                    None => {
                        groups.insert(item.rollout().to_owned(), vec![(index, item)]);
                    }
                },
                Err(error) => report.results.push(IngestItemError { index, error }),
            }
        }
        // The rollouts of the batch are locked together, in id order (the map's order, so two
        // batches never wait for each other in a cycle), from the plan to the fold: a
        // checkpoint never sees a batch appended but not yet folded.
        let mut locked = Vec::new();
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
            let g = rt.lock_owned().await;
            // Its evidence changes under this lock: the loop takes it on its next pass.
            self.wake_rollout(&rollout);
            let planned = plan(&g, &rollout, group, &mut report);
            locked.push((g, planned));
        }
        let durable = self.settings().durability == Durability::Batch;
        let mut seqs = Vec::new();
        if durable {
            for (g, p) in &mut locked {
                if !p.entries.is_empty() && self.cursor(g).needs_replay {
                    self.replay(g).await.map_err(EngineError::NotDurable)?;
                }
            }
            let mut batches = Vec::new();
            for (g, p) in locked.iter().filter(|(_, p)| !p.entries.is_empty()) {
                let items = serde_json::to_string(&BatchDoc { v: BATCH_FORMAT, items: &p.entries })
                    .map_err(|e| EngineError::Invalid(format!("observation batch: {e}")))?;
                batches.push(NewObservationBatch { rollout_id: g.rec.id.clone(), items });
            }
            if !batches.is_empty() {
                seqs = self
                    .store()
                    .append_observation_batches(batches)
                    .await
                    .map_err(EngineError::NotDurable)?;
            }
        }
        let mut seqs = seqs.into_iter();
        for (mut g, p) in locked {
            if p.entries.is_empty() {
                continue;
            }
            let r = fold(&mut g, p.entries);
            report.accepted += r.accepted;
            report.duplicates += r.duplicates;
            report.stale += r.stale;
            for (i, error) in r.errors {
                report.results.push(IngestItemError { index: p.index[i], error });
            }
            if durable && let Some(seq) = seqs.next() {
                let mut c = self.cursor(&g);
                c.folded = c.folded.max(seq);
                self.set_cursor(&g, c);
            }
        }
        report.results.sort_by_key(|e| e.index);
        report.rejected = report.results.len() as u64;
        self.wake();
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn arm() -> impl Strategy<Value = Arm> {
        prop_oneof![
            Just(Arm::Control),
            Just(Arm::Canary),
            Just(Arm::Shadow),
            "[a-zA-Z0-9 _-]{1,12}".prop_map(Arm::Named),
        ]
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![
            Just(Outcome::Ok),
            Just(Outcome::Error),
            Just(Outcome::Timeout),
            Just(Outcome::Refused)
        ]
    }

    fn finite() -> impl Strategy<Value = Option<f64>> {
        proptest::option::of(
            proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL | proptest::num::f64::ZERO,
        )
    }

    fn entry() -> impl Strategy<Value = Entry> {
        let obs =
            (".{0,20}", arm(), outcome(), finite(), finite(), any::<u64>(), finite(), finite())
                .prop_map(|(id, arm, outcome, lat, ttft, tokens, cost, quality)| {
                    let mut o = Observation::new("ro-1", id, arm, outcome);
                    o.latency_ms = lat;
                    o.ttft_ms = ttft;
                    o.tokens_in = tokens;
                    o.tokens_out = tokens / 3;
                    o.cost = cost;
                    o.quality = quality;
                    Entry::Obs(o)
                });
        let quality = (".{0,20}", proptest::option::of(arm()), proptest::num::f64::NORMAL)
            .prop_map(|(id, arm, score)| {
                Entry::Quality(QualityUpdate {
                    rollout_id: "ro-1".into(),
                    request_id: id,
                    arm,
                    score,
                    phase: None,
                    unit: None,
                    in_experiment: true,
                })
            });
        prop_oneof![obs, quality]
    }

    fn same(a: &Entry, b: &Entry) -> bool {
        match (a, b) {
            (Entry::Obs(x), Entry::Obs(y)) => x == y,
            (Entry::Quality(x), Entry::Quality(y)) => x == y,
            _ => false,
        }
    }

    proptest! {
        /// A replayed batch must count exactly as it did live: every entry the plan keeps
        /// (finite numbers only) reads back from its stored form unchanged, bit for bit.
        #[test]
        fn stored_batches_read_back_exactly(entries in proptest::collection::vec(entry(), 0..20)) {
            prop_assert!(entries.iter().all(|e| super::finite(e).is_ok()));
            let text = serde_json::to_string(&BatchDoc { v: BATCH_FORMAT, items: &entries }).unwrap();
            let back = decode_batch(&text).unwrap();
            prop_assert_eq!(back.len(), entries.len());
            for (a, b) in entries.iter().zip(&back) {
                prop_assert!(same(a, b), "{:?} came back as {:?}", a, b);
            }
        }
    }

    #[test]
    fn numbers_json_cannot_carry_are_refused_by_name() {
        let mut o = Observation::new("ro-1", "r", Arm::Canary, Outcome::Ok);
        o.ttft_ms = Some(f64::NEG_INFINITY);
        let e = super::finite(&Entry::Obs(o)).unwrap_err();
        assert!(e.contains("ttft_ms"), "{e}");
        let q = QualityUpdate {
            rollout_id: "ro-1".into(),
            request_id: "r".into(),
            arm: None,
            score: f64::NAN,
            phase: None,
            unit: None,
            in_experiment: true,
        };
        assert!(super::finite(&Entry::Quality(q)).unwrap_err().contains("quality"));
        assert!(decode_batch(r#"{"v": 2, "items": []}"#).unwrap_err().contains("format 2"));
    }

    #[test]
    fn the_wire_carries_phase_unit_and_tag_of_outcomes_and_scores() {
        let item = parse(json!({
            "request_id": "q1", "rollout_id": "r", "arm": "canary", "outcome": "ok",
            "latency_ms": 10.0, "phase": 2, "unit": 4634, "in_experiment": false
        }))
        .unwrap();
        let Item::Obs(o, phase) = item else { panic!("an outcome") };
        assert_eq!((phase, o.unit, o.in_experiment), (Some(2), Some(4634), false));
        let item = parse(json!({
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
    fn bodies_parse_item_by_item_and_fail_whole_only_when_unusable() {
        let one = r#"{"request_id": "a", "rollout_id": "r", "arm": "canary", "outcome": "ok"}"#;
        let two = format!(r#"[{one}, {{"request_id": "b", "rollout_id": "r", "outcome": "ok"}}]"#);
        let b = ParsedBatch::parse(two.as_bytes(), BodyFormat::Json).unwrap();
        assert_eq!(b.len(), 2);
        assert!(b.items[0].is_ok());
        assert!(b.items[1].as_ref().err().unwrap().contains("arm is required"));
        // One object is a batch of one.
        assert_eq!(ParsedBatch::parse(one.as_bytes(), BodyFormat::Json).unwrap().len(), 1);
        // Escaped strings are unescaped (they cannot be borrowed from the body).
        let esc = r#"[{"request_id": "a\"b", "rollout_id": "r\u0031", "arm": "canary", "outcome": "ok"}]"#;
        let b = ParsedBatch::parse(esc.as_bytes(), BodyFormat::Json).unwrap();
        let Ok(Item::Obs(o, _)) = &b.items[0] else { panic!("an outcome") };
        assert_eq!((o.rollout_id.as_str(), o.request_id.as_str()), ("r1", "a\"b"));
        assert!(matches!(
            ParsedBatch::parse(b"[{", BodyFormat::Json),
            Err(BodyError::Malformed(_))
        ));
        assert_eq!(ParsedBatch::parse(b"42", BodyFormat::Json).unwrap_err(), BodyError::NotAnArray);
        let many = format!("[{}]", vec![one; MAX_BATCH + 1].join(","));
        assert_eq!(
            ParsedBatch::parse(many.as_bytes(), BodyFormat::Json).unwrap_err(),
            BodyError::TooMany(MAX_BATCH + 1)
        );
        // NDJSON: a bad line fails alone and is named; blank lines are skipped.
        let nd = format!("{one}\n\n{{\"request_id\": NaN}}\n{one}\n");
        let b = ParsedBatch::parse(nd.as_bytes(), BodyFormat::Ndjson).unwrap();
        assert_eq!(b.len(), 3);
        assert!(b.items[1].as_ref().err().unwrap().starts_with("line 3 is not valid JSON"));
        assert_eq!(
            ParsedBatch::first_rollout_id(nd.as_bytes(), BodyFormat::Ndjson).as_deref(),
            Some("r")
        );
        assert_eq!(
            ParsedBatch::first_rollout_id(two.as_bytes(), BodyFormat::Json).as_deref(),
            Some("r")
        );
        assert_eq!(ParsedBatch::first_rollout_id(b"nope", BodyFormat::Json), None);
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
