//! Drives the real engine over the default canary request, in simulated time.
//!
//! One wave = one [`Engine`] on one current-thread runtime, with one in-memory store, one
//! [`ManualClock`] and the daemon's own routing book ([`RouteBook`], refreshed from the store
//! after every persisted transition). Each rollout of the wave has its own slot. Every
//! simulated second: each slot's requests are resolved through the routing book (so the
//! sticky hash and the real share decide the arm), drawn from the traffic model, and reported
//! in one batch with [`Engine::report`]; judged scores whose delay is over go in through
//! [`Engine::ingest`] as quality updates; then the clock moves 1 s and [`Engine::run_pass`]
//! looks at every rollout once.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use actuator_canary::{EvalContext, Variant};
use actuator_config::{ApplyRequest, ConfigManager, ConfigSettings};
use actuator_core::testing::MemoryStore;
use actuator_core::{DeploymentRequest, DeploymentState, NewSlot, SlotName, Store};
use actuator_engine::{
    Durability, Engine, EngineSettings, MAX_BATCH, ManualClock, RolloutView, RouteSink,
};
use actuator_health::{Arm, Observation, Outcome};
use actuator_server::RouteBook;
use anyhow::{Context, Result};
use chrono::{Duration, TimeZone, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use super::rng::{Rng, mix};
use super::scenarios::Scenario;
use super::traffic::{self, Day, QUALITY_DELAY_SECS, UserTraits, Users};

/// Slots of the quality-delay ring: one per second of the longest delay, plus the current one.
const RING: usize = QUALITY_DELAY_SECS.1 as usize + 1;

/// How a rollout ended in the simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum End {
    /// Every phase passed; the candidate is active.
    Completed,
    /// Rolled back (by the analysis, a trigger, or the rollout's time limit).
    RolledBack,
    /// Paused (inconclusive with `hold`, or halted): waits for a person.
    Paused,
    /// Still running at the simulation's time cap.
    Running,
    /// The engine failed the rollout.
    Failed,
}

/// What one simulated rollout did.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RolloutResult {
    pub(crate) end: End,
    /// Simulated seconds from the start to the decision (rollback decided, completed, paused).
    pub(crate) secs: u64,
    /// Canary requests served up to the decision.
    pub(crate) canary_requests: u64,
    /// All requests up to the decision.
    pub(crate) requests: u64,
    /// Phase index at the decision.
    pub(crate) phase: usize,
    /// Candidate share of that phase, percent.
    pub(crate) share_percent: f64,
    /// Why: the rollback reason, the pause reason, or empty.
    pub(crate) why: String,
    /// Simulated second at which each phase began (the first is 0).
    pub(crate) phase_starts: Vec<u64>,
    /// Per phase reached, the last item that held it (a metric, `min_samples`,
    /// `min_duration`), sampled every [`HOLD_SAMPLE_SECS`]; empty when nothing held it.
    pub(crate) held_by: Vec<String>,
    /// When the rollout was held at an inconclusive step with the analysis still watching
    /// (simulated seconds), if it was: it keeps being simulated, and a later rollback counts.
    pub(crate) held_secs: Option<u64>,
}

/// How often the simulation reads what holds each rollout.
const HOLD_SAMPLE_SECS: u64 = 30;

/// Tells the routing book of every change, and remembers which slots changed.
struct Sink {
    book: RouteBook,
    changed: Mutex<Vec<SlotName>>,
}

#[async_trait::async_trait]
impl RouteSink for Sink {
    async fn refresh_slot(&self, slot: &SlotName) {
        self.book.refresh_slot_or_log(slot).await;
        self.changed.lock().unwrap_or_else(|p| p.into_inner()).push(slot.clone());
    }
}

/// A judged score waiting for its delay.
#[derive(Debug, Clone, Copy)]
struct Pending {
    request: u64,
    canary: bool,
    phase: Option<u32>,
    unit: Option<u16>,
    score: u8,
}

/// One rollout's side of the simulation.
struct Live {
    id: String,
    slot: SlotName,
    rng: Rng,
    user_seed: u64,
    day_phase: f64,
    next_request: u64,
    requests: u64,
    canary_requests: u64,
    phase: usize,
    share_percent: f64,
    result: Option<RolloutResult>,
    decided: Option<RolloutResult>,
    ring: Vec<Vec<Pending>>,
    phase_starts: Vec<u64>,
    held_by: Vec<String>,
    /// The pause of a held rollout that the analysis still watches: how it ends unless a
    /// rollback follows before the time cap.
    held: Option<RolloutResult>,
}

impl Live {
    fn running(&self) -> bool {
        self.result.is_none()
    }

    fn snapshot(&self, end: End, secs: u64, why: String) -> RolloutResult {
        RolloutResult {
            end,
            secs,
            canary_requests: self.canary_requests,
            requests: self.requests,
            phase: self.phase,
            share_percent: self.share_percent,
            why,
            phase_starts: self.phase_starts.clone(),
            held_by: self.held_by.clone(),
            held_secs: self.held.as_ref().map(|h| h.secs),
        }
    }

    /// Notes what holds the rollout in its current phase.
    fn note_holding(&mut self, v: &RolloutView) {
        if v.phase != self.phase {
            return;
        }
        let Some(h) = v.last_decision.as_ref().and_then(|d| d.holding.clone()) else { return };
        if let Some(last) = self.held_by.last_mut() {
            *last = h;
        }
    }

    /// Takes in the engine's view after a change of the rollout.
    fn observe(&mut self, v: &RolloutView, secs: u64) {
        if !matches!(
            v.state,
            DeploymentState::RollingBack | DeploymentState::RolledBack | DeploymentState::Completed
        ) {
            if v.phase != self.phase {
                self.phase_starts.push(secs);
                self.held_by.push(String::new());
            }
            self.phase = v.phase;
            self.share_percent = v.share_percent;
        }
        match v.state {
            DeploymentState::RollingOut | DeploymentState::Monitoring => {}
            DeploymentState::RollingBack => {
                if self.decided.is_none() {
                    self.decided = Some(self.snapshot(End::RolledBack, secs, rollback_why(v)));
                }
            }
            DeploymentState::RolledBack => {
                let d = self
                    .decided
                    .take()
                    .unwrap_or_else(|| self.snapshot(End::RolledBack, secs, rollback_why(v)));
                self.result = Some(d);
            }
            DeploymentState::Completed => {
                self.result = Some(self.snapshot(End::Completed, secs, String::new()));
            }
            DeploymentState::Paused if v.held_watch => {
                if self.held.is_none() {
                    let why = v.paused_reason.clone().unwrap_or_default();
                    self.held = Some(self.snapshot(End::Paused, secs, why));
                }
            }
            DeploymentState::Paused => {
                let why = v.paused_reason.clone().unwrap_or_default();
                self.result = Some(self.snapshot(End::Paused, secs, why));
            }
            DeploymentState::Aborted => {
                let why = v.outcome.clone().unwrap_or_default();
                self.result = Some(self.snapshot(End::Failed, secs, why));
            }
            DeploymentState::Failed => {
                // A rollback whose validation failed still counts as the rollback it was.
                let why = v.outcome.clone().unwrap_or_default();
                let r =
                    self.decided.take().unwrap_or_else(|| self.snapshot(End::Failed, secs, why));
                self.result = Some(r);
            }
            DeploymentState::Pending | DeploymentState::Validating => {}
        }
    }
}

/// The rollback's reason, short: `analysis: rules`, a trigger kind, or `timeout`.
fn rollback_why(v: &RolloutView) -> String {
    let Some(rb) = &v.rollback else { return "rollback".into() };
    let raw = serde_json::to_value(&rb.reason).unwrap_or(Value::Null);
    let kind = raw.get("kind").and_then(Value::as_str).unwrap_or("rollback").to_owned();
    match raw.get("rules").and_then(Value::as_array) {
        Some(rules) => {
            let names: Vec<&str> = rules.iter().filter_map(Value::as_str).collect();
            format!("{kind}: {}", names.join(", "))
        }
        None => kind,
    }
}

/// One wave: `count` rollouts of `scenario`, numbered from `first`.
#[derive(Debug, Clone)]
pub(crate) struct Wave {
    pub(crate) scenario: Scenario,
    pub(crate) scenario_index: usize,
    pub(crate) first: u64,
    pub(crate) count: u64,
    pub(crate) seed: u64,
    pub(crate) cap_secs: u64,
    pub(crate) checkpoint_ms: u64,
}

/// What a wave returns: per-rollout results and the request volume it simulated.
#[derive(Debug, Default)]
pub(crate) struct WaveOutput {
    pub(crate) results: Vec<RolloutResult>,
    pub(crate) requests: u64,
    pub(crate) rejected: u64,
    pub(crate) simulated_secs: u64,
}

/// Runs a wave on a current-thread runtime of its own.
pub(crate) fn run_wave(w: &Wave) -> Result<WaveOutput> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .context("building the wave's runtime")?;
    rt.block_on(drive(w))
}

fn rollout_seed(seed: u64, scenario: usize, rollout: u64) -> u64 {
    mix(seed ^ mix((scenario as u64) << 32 ^ rollout))
}

async fn setup(config: &ConfigManager, engine: &Engine, w: &Wave, k: u64) -> Result<Live> {
    let r = w.first + k;
    let slot =
        SlotName::new(format!("s{}-r{r}", w.scenario_index)).context("a simulated slot name")?;
    let id = format!("sim-{}-{r}", w.scenario_index);
    config
        .create_slot(
            NewSlot { name: slot.clone(), description: String::new(), schema: None },
            "sim",
        )
        .await
        .context("creating a slot")?;
    config
        .apply(ApplyRequest {
            slot: slot.clone(),
            document: json!({"model": "stable"}),
            actor: "sim".into(),
            message: "stable".into(),
            dry_run: false,
            activate: true,
            expected_latest: None,
        })
        .await
        .context("applying the stable config")?;
    // The default canary request: slot, candidate and strategy, nothing else (the id only
    // fixes the bucketing salt, so that runs are reproducible).
    let req: DeploymentRequest = serde_json::from_value(json!({
        "id": id,
        "slot": slot.as_str(),
        "candidate": {"document": {"model": "candidate"}},
        "strategy": "canary",
    }))
    .context("the default deployment request")?;
    let view = engine.deploy(req).await.with_context(|| format!("deploying {id}"))?;
    let seed = rollout_seed(w.seed, w.scenario_index, r);
    let mut rng = Rng::new(seed);
    let day_phase = rng.uniform();
    Ok(Live {
        id,
        slot,
        rng,
        user_seed: mix(seed ^ 0x5eed),
        day_phase,
        next_request: 0,
        requests: 0,
        canary_requests: 0,
        phase: view.phase,
        share_percent: view.share_percent,
        result: None,
        decided: None,
        ring: vec![Vec::new(); RING],
        phase_starts: vec![0],
        held_by: vec![String::new()],
        held: None,
    })
}

async fn drive(w: &Wave) -> Result<WaveOutput> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let config = ConfigManager::new(store.clone(), Vec::new(), ConfigSettings::default());
    let book = RouteBook::new(store.clone());
    let sink = Arc::new(Sink { book: book.clone(), changed: Mutex::new(Vec::new()) });
    let start = Utc.with_ymd_and_hms(2026, 1, 5, 0, 0, 0).single().context("start time")?;
    let clock = Arc::new(ManualClock::new(start));
    let settings = EngineSettings {
        max_active_rollouts: usize::try_from(w.count).unwrap_or(usize::MAX).max(1),
        checkpoint_ms: w.checkpoint_ms,
        // Like the checkpoint interval, when a batch is written decides nothing; the
        // simulated store is in memory and a serialised batch would only cost time.
        durability: Durability::Checkpoint,
        ..EngineSettings::default()
    };
    let engine =
        Engine::with_clock(config.clone(), sink.clone(), Vec::new(), settings, clock.clone());
    engine.start_driven().await.context("starting the engine")?;
    let mut lives = Vec::with_capacity(usize::try_from(w.count).unwrap_or(0));
    for k in 0..w.count {
        lives.push(setup(&config, &engine, w, k).await?);
    }
    let index: std::collections::HashMap<SlotName, usize> =
        lives.iter().enumerate().map(|(i, l)| (l.slot.clone(), i)).collect();
    sink.changed.lock().unwrap_or_else(|p| p.into_inner()).clear();
    let router = book.router();
    let t = w.scenario.traffic;
    let effect = w.scenario.effect;
    let mut out = WaveOutput::default();
    let mut batch: Vec<Observation> = Vec::new();
    let mut quality: Vec<Value> = Vec::new();
    let mut key = String::new();
    let mut ctx = EvalContext::with_key(String::new());
    for sec in 0..w.cap_secs {
        for live in lives.iter_mut().filter(|l| l.running()) {
            // Scores whose delay ends now.
            let due = std::mem::take(&mut live.ring[(sec % RING as u64) as usize]);
            for p in &due {
                let mut item = json!({
                    "request_id": p.request.to_string(),
                    "rollout_id": live.id,
                    "arm": if p.canary { "canary" } else { "stable" },
                    "quality": f64::from(p.score),
                });
                if let (Some(phase), Value::Object(m)) = (p.phase, &mut item) {
                    m.insert("phase".into(), phase.into());
                }
                if let (Some(unit), Value::Object(m)) = (p.unit, &mut item) {
                    m.insert("unit".into(), unit.into());
                }
                quality.push(item);
            }
            live.ring[(sec % RING as u64) as usize] = {
                let mut v = due;
                v.clear();
                v
            };
            let day = Day::at(t.diurnal, sec, live.day_phase);
            let n = live.rng.poisson(t.rps * day.rate);
            for _ in 0..n {
                let request = live.next_request;
                live.next_request += 1;
                key.clear();
                let user = match t.users {
                    Users::Independent => {
                        let _ = write!(key, "r{request}");
                        UserTraits::NEUTRAL
                    }
                    Users::Sticky => {
                        let u = traffic::sticky_user(&mut live.rng);
                        let _ = write!(key, "u{u}");
                        UserTraits::of(live.user_seed, u)
                    }
                };
                if let Some(k) = ctx.targeting_key.as_mut() {
                    k.clone_from(&key);
                } else {
                    ctx.targeting_key = Some(key.clone());
                }
                let Ok(res) = router.resolve(live.slot.as_str(), &ctx) else {
                    out.rejected += 1;
                    continue;
                };
                let canary = res.variant == Variant::Canary;
                let s = traffic::sample(&mut live.rng, &t, canary.then_some(&effect), day, user);
                live.requests += 1;
                live.canary_requests += u64::from(canary);
                let arm = if canary { Arm::Canary } else { Arm::Control };
                let outcome = if s.error { Outcome::Error } else { Outcome::Ok };
                // As a client does: the resolution's phase, unit and tag go back with it.
                let mut o = Observation::new(live.id.clone(), request.to_string(), arm, outcome)
                    .latency(s.latency_ms)
                    .tokens(400, 150)
                    .cost(s.cost);
                o.phase = res.phase;
                o.unit = res.unit;
                o.in_experiment = res.in_experiment;
                batch.push(o);
                if let Some(score) = s.quality {
                    let delay = live.rng.between(QUALITY_DELAY_SECS.0, QUALITY_DELAY_SECS.1);
                    live.ring[((sec + delay) % RING as u64) as usize].push(Pending {
                        request,
                        canary,
                        phase: res.phase,
                        unit: res.unit,
                        score,
                    });
                }
            }
        }
        out.requests += batch.len() as u64;
        // In batches the engine accepts (a larger one is refused whole).
        while !batch.is_empty() {
            let rest = batch.split_off(batch.len().min(MAX_BATCH));
            let r = engine
                .report(std::mem::replace(&mut batch, rest))
                .await
                .context("reporting outcomes")?;
            out.rejected += r.rejected;
        }
        while !quality.is_empty() {
            let rest = quality.split_off(quality.len().min(MAX_BATCH));
            let r = engine
                .ingest(std::mem::replace(&mut quality, rest))
                .await
                .context("reporting quality scores")?;
            out.rejected += r.rejected;
        }
        clock.advance(Duration::seconds(1));
        engine.run_pass().await;
        let changed = std::mem::take(&mut *sink.changed.lock().unwrap_or_else(|p| p.into_inner()));
        for slot in changed {
            let Some(&i) = index.get(&slot) else { continue };
            if !lives[i].running() {
                continue;
            }
            let v = engine.view(&lives[i].id).await.context("reading a rollout")?;
            lives[i].observe(&v, sec + 1);
        }
        if (sec + 1) % HOLD_SAMPLE_SECS == 0 {
            for live in lives.iter_mut().filter(|l| l.running()) {
                let v = engine.view(&live.id).await.context("reading a rollout")?;
                live.note_holding(&v);
            }
        }
        out.simulated_secs = sec + 1;
        if lives.iter().all(|l| !l.running()) {
            break;
        }
    }
    let cap = out.simulated_secs;
    out.results = lives
        .into_iter()
        .map(|l| match (l.result.clone(), l.held.clone()) {
            (Some(r), _) => r,
            (None, Some(mut held)) => {
                held.held_secs = Some(held.secs);
                held
            }
            (None, None) => l.snapshot(End::Running, cap, "still running at the time cap".into()),
        })
        .collect();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::scenarios::Expect;
    use crate::sim::traffic::{Baseline, Effect, Traffic};

    fn wave(rps: f64, effect: Effect, count: u64, cap_secs: u64) -> Wave {
        let traffic = Traffic {
            rps,
            baseline: Baseline { error_rate: 0.01, latency_median_ms: 400.0, latency_sigma: 0.6 },
            diurnal: false,
            users: Users::Independent,
            judged: 0.05,
        };
        Wave {
            scenario: Scenario {
                name: "test".into(),
                label: "test".into(),
                traffic,
                effect,
                expect: Expect::Regression,
            },
            scenario_index: 0,
            first: 0,
            count,
            seed: 11,
            cap_secs,
            checkpoint_ms: 600_000,
        }
    }

    #[test]
    fn a_catastrophic_candidate_is_rolled_back_the_same_way_on_every_run() {
        let w = wave(50.0, Effect { errors: 60.0, ..Effect::NONE }, 3, 900);
        let a = run_wave(&w).unwrap();
        assert_eq!(a.results.len(), 3);
        for r in &a.results {
            assert_eq!(r.end, End::RolledBack, "{r:?}");
            assert!(r.canary_requests >= 1 && r.secs < 900, "{r:?}");
        }
        let b = run_wave(&w).unwrap();
        let key = |o: &WaveOutput| {
            o.results
                .iter()
                .map(|r| (r.end, r.secs, r.canary_requests, r.requests))
                .collect::<Vec<_>>()
        };
        assert_eq!(key(&a), key(&b), "the same seed gives the same rollouts");
    }

    #[test]
    fn requests_reach_the_candidate_at_the_first_phase_share() {
        let out = run_wave(&wave(500.0, Effect::NONE, 3, 120)).unwrap();
        assert_eq!(out.rejected, 0);
        let canary: u64 = out.results.iter().map(|r| r.canary_requests).sum();
        let all: u64 = out.results.iter().map(|r| r.requests).sum();
        let share = canary as f64 / all as f64;
        assert!(all > 100_000, "{all}");
        assert!((0.008..0.012).contains(&share), "canary share {share}");
    }
}
