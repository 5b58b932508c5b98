//! A traffic simulator of an LLM application, over the real HTTP API.
//!
//! Every tick, simulated users (`user-0` … `user-N`) ask `POST /v1/resolve` which config
//! serves them; each request is then "answered" by the model the config names, drawn from
//! [`SimModel`] (errors, timeouts, lognormal latency, cost, quality), and the outcomes go back
//! with `POST /v1/observations`, tagged with the rollout id, the arm (the resolve answer's
//! variant) and a unique request id. A shadow directive runs the candidate on a copy of the
//! request, reported as arm `shadow`.
//!
//! A config document may carry `"sim": {"error_rate": 0.02, "latency_median_ms": 600, …}` to
//! override its model's behaviour, so tests and demos can craft good and bad candidates.

use anyhow::Context;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::cli::SimulateArgs;
use crate::client::Client;

/// Requests per `POST /v1/resolve` batch.
const RESOLVE_CHUNK: usize = 500;
/// Items per `POST /v1/observations` call (the API takes at most 10,000).
const OBSERVE_CHUNK: usize = 5000;
/// Ticks in a row that may fail before the simulator gives up.
const MAX_FAILED_TICKS: u32 = 5;

/// A small pseudo-random generator: xorshift64* seeded through splitmix64.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value, 0 included).
    pub(crate) fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Self(if z == 0 { 0x2545_f491_4f6c_dd1d } else { z })
    }

    /// A seed from the clock and the process id.
    pub(crate) fn clock_seed() -> u64 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        nanos ^ (u64::from(std::process::id()) << 32)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    pub(crate) fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in 0..n (n > 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Standard normal (Box–Muller).
    pub(crate) fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // in (0, 1]
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// `true` with probability `p`.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }
}

/// How a simulated model behaves.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SimModel {
    /// Share of requests that fail (errors and timeouts).
    pub(crate) error_rate: f64,
    /// Share of the failures that are timeouts.
    pub(crate) timeout_share: f64,
    /// Latency reported for a timeout.
    pub(crate) timeout_ms: f64,
    /// Share of requests the model refuses (not errors).
    pub(crate) refusal_rate: f64,
    /// Median latency of successful requests (lognormal).
    pub(crate) latency_median_ms: f64,
    /// σ of ln(latency).
    pub(crate) latency_sigma: f64,
    /// Mean cost per answered request.
    pub(crate) cost: f64,
    /// Mean quality score (1–5).
    pub(crate) quality: f64,
    /// Standard deviation of the quality score.
    pub(crate) quality_sd: f64,
    /// Share of requests that get a quality score.
    pub(crate) judged_share: f64,
}

impl SimModel {
    /// The built-in table, by the document's `model` field; unknown models get middling values.
    pub(crate) fn named(model: &str) -> Self {
        let base = Self {
            error_rate: 0.01,
            timeout_share: 0.1,
            timeout_ms: 10_000.0,
            refusal_rate: 0.0,
            latency_median_ms: 400.0,
            latency_sigma: 0.4,
            cost: 0.004,
            quality: 4.2,
            quality_sd: 0.6,
            judged_share: 0.3,
        };
        match model {
            "gpt-4o" => base,
            "gpt-4o-mini" => Self { latency_median_ms: 380.0, cost: 0.0012, quality: 4.15, ..base },
            "tiny-fast" => Self {
                error_rate: 0.04,
                timeout_share: 0.5,
                latency_median_ms: 700.0,
                latency_sigma: 0.45,
                cost: 0.0004,
                quality: 3.6,
                quality_sd: 0.8,
                ..base
            },
            _ => Self { latency_median_ms: 500.0, cost: 0.002, quality: 4.0, ..base },
        }
    }

    /// The model a config document names, with its optional `"sim"` overrides applied.
    pub(crate) fn for_document(doc: &Value) -> Self {
        let mut m = Self::named(doc["model"].as_str().unwrap_or(""));
        let sim = &doc["sim"];
        let set = |key: &str, field: &mut f64, lo: f64, hi: f64| {
            if let Some(x) = sim[key].as_f64().filter(|x| x.is_finite()) {
                *field = x.clamp(lo, hi);
            }
        };
        set("error_rate", &mut m.error_rate, 0.0, 1.0);
        set("timeout_share", &mut m.timeout_share, 0.0, 1.0);
        set("timeout_ms", &mut m.timeout_ms, 1.0, 3_600_000.0);
        set("refusal_rate", &mut m.refusal_rate, 0.0, 1.0);
        set("latency_median_ms", &mut m.latency_median_ms, 0.1, 3_600_000.0);
        set("latency_sigma", &mut m.latency_sigma, 0.0, 5.0);
        set("cost", &mut m.cost, 0.0, 1e6);
        set("quality", &mut m.quality, 1.0, 5.0);
        set("quality_sd", &mut m.quality_sd, 0.0, 4.0);
        set("judged_share", &mut m.judged_share, 0.0, 1.0);
        m
    }

    /// Simulates one request: the observation's measurement fields (everything but the ids).
    pub(crate) fn answer(&self, rng: &mut Rng) -> Value {
        let tokens_in = 150 + rng.below(400);
        let u = rng.uniform();
        if u < self.error_rate {
            if rng.chance(self.timeout_share) {
                return json!({"outcome": "timeout", "latency_ms": self.timeout_ms,
                              "tokens_in": tokens_in, "tokens_out": 0});
            }
            return json!({"outcome": "error", "tokens_in": tokens_in, "tokens_out": 0});
        }
        let latency = self.latency_median_ms * (self.latency_sigma * rng.normal()).exp();
        let latency = (latency * 10.0).round() / 10.0;
        let ttft = (latency * (0.15 + 0.1 * rng.uniform()) * 10.0).round() / 10.0;
        // Cost varies with the answer's length: lognormal with mean `cost`.
        let cost = self.cost * (0.3 * rng.normal() - 0.045).exp();
        if u < self.error_rate + self.refusal_rate {
            return json!({"outcome": "refused", "latency_ms": latency, "ttft_ms": ttft,
                          "tokens_in": tokens_in, "tokens_out": 12, "cost": cost});
        }
        let mut v = json!({"outcome": "ok", "latency_ms": latency, "ttft_ms": ttft,
                           "tokens_in": tokens_in, "tokens_out": 40 + rng.below(300),
                           "cost": cost});
        if rng.chance(self.judged_share) {
            let q = (self.quality + self.quality_sd * rng.normal()).clamp(1.0, 5.0);
            v["quality"] = json!((q * 10.0).round() / 10.0);
        }
        v
    }
}

/// Requests and failures of one arm of one slot, as the simulator saw them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ArmCount {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
}

/// What the simulator has done so far.
#[derive(Debug, Default, Clone)]
pub(crate) struct SimStats {
    /// Ticks run.
    pub(crate) ticks: u64,
    /// Requests resolved.
    pub(crate) requests: u64,
    /// Requests on a slot without an active rollout (nothing to report).
    pub(crate) unrouted: u64,
    /// Observations posted.
    pub(crate) reported: u64,
    /// Observations the daemon accepted, rejected, or counted as duplicates.
    pub(crate) accepted: u64,
    pub(crate) rejected: u64,
    pub(crate) duplicates: u64,
    /// Failed calls (resolve or observations).
    pub(crate) failures: u64,
    /// The last failure or rejection, for people.
    pub(crate) last_error: Option<String>,
    /// Per (slot, arm): requests and simulated errors.
    pub(crate) arms: BTreeMap<(String, String), ArmCount>,
    /// Time since the simulator started.
    pub(crate) elapsed: Duration,
}

impl SimStats {
    /// `stable 9500 (1.0% err), canary 480 (1.2% err)` for one slot.
    pub(crate) fn slot_summary(&self, slot: &str) -> String {
        let parts: Vec<String> = self
            .arms
            .iter()
            .filter(|((s, _), _)| s == slot)
            .map(|((_, arm), c)| {
                let rate = if c.requests == 0 { 0.0 } else { c.errors as f64 / c.requests as f64 };
                format!("{arm} {} ({:.1}% err)", c.requests, rate * 100.0)
            })
            .collect();
        if parts.is_empty() { "no rollout traffic".into() } else { parts.join(", ") }
    }
}

/// Simulated users of an LLM application, sending traffic to some slots.
#[derive(Debug)]
pub(crate) struct Simulator {
    client: Client,
    slots: Vec<String>,
    users: u64,
    rng: Rng,
    run: String,
    seq: u64,
    started: Instant,
    failed_ticks: u32,
    /// What happened so far.
    pub(crate) stats: SimStats,
}

impl Simulator {
    /// A simulator for `slots` with `users` distinct targeting keys.
    pub(crate) fn new(client: &Client, slots: &[&str], users: u32, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let run = format!("sim-{:08x}", rng.next_u64() as u32);
        Self {
            client: client.clone(),
            slots: slots.iter().map(|s| (*s).to_owned()).collect(),
            users: u64::from(users.max(1)),
            rng,
            run,
            seq: 0,
            started: Instant::now(),
            failed_ticks: 0,
            stats: SimStats::default(),
        }
    }

    /// Runs a tick of `requests_per_tick` requests every `tick` until `until(stats)` is true
    /// (checked before each tick). Failed calls are counted and retried on the next tick; the
    /// simulator gives up after a few failed ticks in a row.
    pub(crate) async fn drive(
        &mut self,
        requests_per_tick: usize,
        tick: Duration,
        mut until: impl FnMut(&SimStats) -> bool,
    ) -> anyhow::Result<()> {
        let mut timer = tokio::time::interval(tick);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            timer.tick().await;
            self.stats.elapsed = self.started.elapsed();
            if until(&self.stats) {
                return Ok(());
            }
            match self.tick(requests_per_tick).await {
                Ok(()) => self.failed_ticks = 0,
                Err(e) => {
                    self.stats.failures += 1;
                    self.stats.last_error = Some(format!("{e:#}"));
                    self.failed_ticks += 1;
                    if self.failed_ticks >= MAX_FAILED_TICKS {
                        return Err(e.context(format!(
                            "the traffic simulator failed {MAX_FAILED_TICKS} ticks in a row"
                        )));
                    }
                }
            }
        }
    }

    /// One batch: resolve `n` requests, simulate them, report their outcomes.
    pub(crate) async fn tick(&mut self, n: usize) -> anyhow::Result<()> {
        self.stats.ticks += 1;
        if self.slots.is_empty() || n == 0 {
            return Ok(());
        }
        let requests: Vec<Value> = (0..n)
            .map(|_| {
                let slot = &self.slots[self.rng.below(self.slots.len() as u64) as usize];
                let user = self.rng.below(self.users);
                json!({"slot": slot, "context": {"targetingKey": format!("user-{user}")}})
            })
            .collect();
        let mut observations = Vec::with_capacity(n);
        for chunk in requests.chunks(RESOLVE_CHUNK) {
            let answer = self
                .client
                .post("/v1/resolve", &json!({"requests": chunk}))
                .await
                .context("POST /v1/resolve")?;
            let answers = answer_list(&answer).with_context(|| {
                format!("unexpected answer from POST /v1/resolve: {}", truncate(&answer))
            })?;
            for (req, ans) in chunk.iter().zip(answers) {
                self.stats.requests += 1;
                let slot = req["slot"].as_str().unwrap_or_default().to_owned();
                self.simulate(&slot, ans, &mut observations);
            }
        }
        for chunk in observations.chunks(OBSERVE_CHUNK) {
            let body = Value::Array(chunk.to_vec());
            let r = self
                .client
                .post("/v1/observations", &body)
                .await
                .context("POST /v1/observations")?;
            self.stats.reported += chunk.len() as u64;
            self.stats.accepted += r["accepted"].as_u64().unwrap_or(0);
            self.stats.rejected += r["rejected"].as_u64().unwrap_or(0);
            self.stats.duplicates += r["duplicates"].as_u64().unwrap_or(0);
            if let Some(first) = r["results"].as_array().and_then(|a| a.first()) {
                self.stats.last_error = Some(format!("observation rejected: {first}"));
            }
        }
        Ok(())
    }

    /// Simulates one resolved request (and its shadow copy), queuing the observations.
    fn simulate(&mut self, slot: &str, ans: &Value, out: &mut Vec<Value>) {
        let Some(rollout_id) = ans["rollout_id"].as_str() else {
            self.stats.unrouted += 1;
            return;
        };
        let shadow = shadow_document(&ans["shadow"]);
        let variant = ans["variant"].as_str().unwrap_or("stable");
        // With a shadow directive the user is served the stable config; the candidate runs on
        // a copy and is reported as arm `shadow`.
        let arm = if shadow.is_some() && variant == "shadow" { "stable" } else { variant };
        self.seq += 1;
        let request_id = format!("{}-{}", self.run, self.seq);
        // What the resolution said goes back with the outcome, as a client should send it:
        // the phase it was served in, its assignment unit, and whether it is in the experiment.
        let tags = Tags {
            phase: ans["phase"].as_u64(),
            unit: ans["unit"].as_u64(),
            in_experiment: ans["in_experiment"].as_bool(),
        };
        self.observe(slot, rollout_id, arm, &request_id, &ans["config"], &tags, out);
        if let Some(doc) = shadow {
            self.observe(slot, rollout_id, "shadow", &request_id, doc, &tags, out);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn observe(
        &mut self,
        slot: &str,
        rollout_id: &str,
        arm: &str,
        request_id: &str,
        doc: &Value,
        tags: &Tags,
        out: &mut Vec<Value>,
    ) {
        let mut obs = SimModel::for_document(doc).answer(&mut self.rng);
        let failed = matches!(obs["outcome"].as_str(), Some("error" | "timeout"));
        let count = self.stats.arms.entry((slot.to_owned(), arm.to_owned())).or_default();
        count.requests += 1;
        count.errors += u64::from(failed);
        obs["request_id"] = json!(request_id);
        obs["rollout_id"] = json!(rollout_id);
        obs["arm"] = json!(arm);
        if let Some(p) = tags.phase {
            obs["phase"] = json!(p);
        }
        if let Some(u) = tags.unit {
            obs["unit"] = json!(u);
        }
        if tags.in_experiment == Some(false) {
            obs["in_experiment"] = json!(false);
        }
        out.push(obs);
    }
}

/// What a resolution says that its outcome must repeat.
#[derive(Debug, Clone, Copy)]
struct Tags {
    phase: Option<u64>,
    unit: Option<u64>,
    in_experiment: Option<bool>,
}

/// The list of answers of a batch resolve (a bare array, or under a usual key).
fn answer_list(v: &Value) -> Option<&Vec<Value>> {
    v.as_array().or_else(|| {
        ["results", "responses", "answers", "items"].iter().find_map(|k| v[*k].as_array())
    })
}

/// The candidate document of a shadow directive, wherever the answer puts it.
fn shadow_document(s: &Value) -> Option<&Value> {
    if s.is_null() {
        return None;
    }
    [
        &s["config"],
        &s["document"],
        &s["candidate"]["config"],
        &s["candidate"]["value"],
        &s["candidate"]["document"],
    ]
    .into_iter()
    .find(|d| d.is_object())
}

fn truncate(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// Distinct users of [`run_traffic`]: many, so that requests are nearly independent draws
/// (with few users, each user's sticky assignment repeats and the share of canary requests
/// drifts from the configured share, which the sample-ratio-mismatch guard rightly flags).
pub(crate) const DEFAULT_USERS: u32 = 1_000_000;

/// Drives simulated traffic to `slots` ([`DEFAULT_USERS`] users, a seed from the clock) until
/// `until` is true; see [`Simulator::drive`].
pub(crate) async fn run_traffic(
    client: &Client,
    slots: &[&str],
    requests_per_tick: usize,
    tick: Duration,
    until: impl FnMut(&SimStats) -> bool,
) -> anyhow::Result<SimStats> {
    let mut sim = Simulator::new(client, slots, DEFAULT_USERS, Rng::clock_seed());
    sim.drive(requests_per_tick, tick, until).await?;
    Ok(sim.stats)
}

/// `actuator simulate`: traffic against a running daemon, with a progress line every second.
pub(crate) async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let client = crate::commands::client(&args.remote)?;
    let slots: Vec<&str> = args.slots.iter().map(String::as_str).collect();
    let seed = args.seed.unwrap_or_else(Rng::clock_seed);
    let tick = Duration::from_millis(200);
    let per_tick = (f64::from(args.rps) * tick.as_secs_f64()).round().max(1.0) as usize;
    let duration = Duration::from_secs(args.duration);
    let mut sim = Simulator::new(&client, &slots, args.users, seed);
    println!(
        "simulating {} requests/s for {}s on {} against {} (seed {seed}); Ctrl-C to stop",
        args.rps,
        args.duration,
        slots.join(", "),
        args.remote.server
    );
    let mut next_report = Duration::from_secs(1);
    let until = |s: &SimStats| {
        if s.elapsed >= next_report {
            next_report += Duration::from_secs(1);
            for slot in &slots {
                println!("[{:>4}s] {slot}: {}", s.elapsed.as_secs(), s.slot_summary(slot));
            }
            if let Some(e) = &s.last_error {
                println!("        last problem: {e}");
            }
        }
        s.elapsed >= duration
    };
    tokio::select! {
        r = sim.drive(per_tick, tick, until) => r?,
        _ = tokio::signal::ctrl_c() => {}
    }
    let s = &sim.stats;
    println!(
        "done: {} requests resolved ({} on slots without a rollout), {} outcomes reported: {} accepted, {} rejected, {} duplicates, {} failed calls",
        s.requests, s.unrouted, s.reported, s.accepted, s.rejected, s.duplicates, s.failures
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_reproducible_and_roughly_normal() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        assert_eq!(a.next_u64(), b.next_u64());
        let n = 200_000;
        let (mut sum, mut sq) = (0.0, 0.0);
        for _ in 0..n {
            let z = a.normal();
            sum += z;
            sq += z * z;
        }
        let mean = sum / f64::from(n);
        let var = sq / f64::from(n) - mean * mean;
        assert!(mean.abs() < 0.01, "{mean}");
        assert!((var - 1.0).abs() < 0.02, "{var}");
        assert!((0..1000).all(|_| a.below(10) < 10));
    }

    #[test]
    fn models_follow_their_table_and_overrides() {
        let mini = SimModel::for_document(&json!({"model": "gpt-4o-mini"}));
        assert_eq!(mini.cost, 0.0012);
        let bad = SimModel::for_document(
            &json!({"model": "gpt-4o-mini", "sim": {"error_rate": 0.02, "latency_median_ms": 600, "cost": "x"}}),
        );
        assert_eq!((bad.error_rate, bad.latency_median_ms, bad.cost), (0.02, 600.0, 0.0012));
        let mut rng = Rng::new(1);
        let n = 100_000;
        let mut errors = 0;
        let mut latencies = Vec::new();
        for _ in 0..n {
            let a = bad.answer(&mut rng);
            match a["outcome"].as_str() {
                Some("ok") => latencies.push(a["latency_ms"].as_f64().unwrap()),
                Some("error" | "timeout") => errors += 1,
                other => panic!("{other:?}"),
            }
        }
        let rate = f64::from(errors) / f64::from(n);
        assert!((rate - 0.02).abs() < 0.003, "{rate}");
        latencies.sort_by(f64::total_cmp);
        let median = latencies[latencies.len() / 2];
        assert!((median - 600.0).abs() < 15.0, "{median}");
    }

    #[test]
    fn shadow_documents_and_answer_lists_are_found() {
        let doc = json!({"model": "tiny-fast"});
        assert_eq!(shadow_document(&json!({"config": doc})), Some(&doc));
        assert_eq!(
            shadow_document(&json!({"candidate": {"version": 2, "value": doc}})),
            Some(&doc)
        );
        assert_eq!(shadow_document(&Value::Null), None);
        assert_eq!(answer_list(&json!({"results": [1]})).map(Vec::len), Some(1));
        assert_eq!(answer_list(&json!([1, 2])).map(Vec::len), Some(2));
        assert!(answer_list(&json!({"x": 1})).is_none());
    }
}
