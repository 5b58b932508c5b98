//! `cargo xtask sim`: the real [`actuator_engine::Engine`] over the default canary request,
//! in simulated time, on many slots at once.
//!
//! - `rng`: the seeded generator and its distributions
//! - `traffic`: what a simulated request looks like (baselines, drift, users, candidates)
//! - `scenarios`: the grid of traffic profiles × candidates
//! - `driver`: one engine per wave, one simulated second per `run_pass`
//! - `report`: the table, the CSV and the JSON

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Result, bail};

mod driver;
mod report;
mod rng;
mod scenarios;
mod traffic;

/// Arguments of `cargo xtask sim`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct SimArgs {
    /// Simulated rollouts per scenario (the published table uses at least 1,000).
    #[arg(long, default_value_t = 1000)]
    pub(crate) rollouts: u64,
    /// A fast look: 100 rollouts per scenario (unless --rollouts is given too), without the
    /// 500 rps rows.
    #[arg(long)]
    pub(crate) quick: bool,
    /// Only the scenarios whose name contains this (e.g. `ref/`, `err2`, `sticky/aa`).
    #[arg(long)]
    pub(crate) scenario: Option<String>,
    /// Seed of every pseudo-random draw (results are identical for a given seed).
    #[arg(long, default_value_t = 20_261_201)]
    pub(crate) seed: u64,
    /// Rollouts per engine (a wave); memory grows with it.
    #[arg(long, default_value_t = 250)]
    pub(crate) wave: u64,
    /// Simulated seconds after which a rollout still running is reported as such (the
    /// default request's own limit is 24 h, after which it rolls back).
    #[arg(long, default_value_t = 25 * 3600)]
    pub(crate) cap_secs: u64,
    /// Milliseconds between the engine's evidence checkpoints (a durability knob that
    /// decides nothing; the daemon's default, 1000, serialises every rollout every second).
    #[arg(long, default_value_t = 600_000)]
    pub(crate) checkpoint_ms: u64,
    /// Worker threads (one engine each at a time).
    #[arg(long, default_value_t = 2)]
    pub(crate) threads: usize,
    /// Where to write the markdown table (the CSV and JSON go beside it).
    #[arg(long, default_value = "sim-results/sim.md")]
    pub(crate) out: PathBuf,
    /// Exit with an error when a target of the decisions issue is missed.
    #[arg(long)]
    pub(crate) check: bool,
}

/// CPU time of the calling thread, from Linux's `/proc/thread-self/schedstat` (nanoseconds
/// on the CPU); `None` elsewhere, where the wall time is used instead.
fn thread_cpu_secs() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e9)
}

/// Runs the simulation, prints the table and writes it.
pub(crate) fn run(args: SimArgs) -> Result<()> {
    let explicit = std::env::args().any(|a| a == "--rollouts" || a.starts_with("--rollouts="));
    let rollouts = if args.quick && !explicit { 100 } else { args.rollouts };
    if rollouts == 0 || args.wave == 0 || args.threads == 0 || args.cap_secs == 0 {
        bail!("--rollouts, --wave, --threads and --cap-secs must be at least 1");
    }
    // Each scenario keeps its index in the full grid (its seeds and rollout ids come from
    // it), so a filtered run reproduces the same rows as the full one.
    let mut grid: Vec<(usize, scenarios::Scenario)> =
        scenarios::all().into_iter().enumerate().collect();
    if args.quick {
        grid.retain(|(_, s)| !s.name.starts_with("rps500"));
    }
    if let Some(f) = &args.scenario {
        grid.retain(|(_, s)| s.name.contains(f.as_str()));
    }
    let all: Vec<scenarios::Scenario> = grid.iter().map(|(_, s)| s.clone()).collect();
    if all.is_empty() {
        bail!("no scenario matches {:?}", args.scenario);
    }
    let mut jobs = Vec::new();
    let mut rows = Vec::new();
    for (row, (i, s)) in grid.iter().enumerate() {
        let n = rollouts.max(1);
        let mut first = 0;
        // Waves no larger than a thread's share, so a single row keeps every thread busy.
        let wave = args.wave.min(n.div_ceil(args.threads as u64)).max(1);
        while first < n {
            let count = wave.min(n - first);
            jobs.push(driver::Wave {
                scenario: s.clone(),
                scenario_index: *i,
                first,
                count,
                seed: args.seed,
                cap_secs: args.cap_secs,
                checkpoint_ms: args.checkpoint_ms,
            });
            rows.push(row);
            first += count;
        }
    }
    let t0 = Instant::now();
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<Option<(driver::WaveOutput, f64)>>> =
        Mutex::new((0..jobs.len()).map(|_| None).collect());
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|sc| {
        for _ in 0..args.threads.min(jobs.len()) {
            sc.spawn(|| {
                loop {
                    let j = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(j) else { return };
                    if failure.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
                        return;
                    }
                    let t = Instant::now();
                    let cpu0 = thread_cpu_secs();
                    match driver::run_wave(job) {
                        Ok(out) => {
                            let secs = match (cpu0, thread_cpu_secs()) {
                                (Some(a), Some(b)) => b - a,
                                _ => t.elapsed().as_secs_f64(),
                            };
                            eprintln!(
                                "sim: {} rollouts {}..{} done in {secs:.0} CPU s ({} requests, {:.0} simulated min; {:.0} s since start)",
                                job.scenario.name,
                                job.first,
                                job.first + job.count,
                                out.requests,
                                out.simulated_secs as f64 / 60.0,
                                t0.elapsed().as_secs_f64()
                            );
                            done.lock().unwrap_or_else(|p| p.into_inner())[j] = Some((out, secs));
                        }
                        Err(e) => {
                            *failure.lock().unwrap_or_else(|p| p.into_inner()) =
                                Some(e.context(format!("scenario {}", job.scenario.name)));
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let done = done.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut per: Vec<report::ScenarioRun> =
        all.iter().map(|s| report::ScenarioRun::new(s.clone())).collect();
    for ((job, out), row) in jobs.iter().zip(done).zip(rows) {
        let Some((out, secs)) = out else {
            bail!("a wave of {} did not finish", job.scenario.name)
        };
        let r = &mut per[row];
        r.results.extend(out.results);
        r.requests += out.requests;
        r.rejected += out.rejected;
        r.cpu_secs += secs;
    }
    let settings = report::Settings {
        rollouts,
        seed: args.seed,
        quick: args.quick,
        wave: args.wave,
        cap_secs: args.cap_secs,
        checkpoint_ms: args.checkpoint_ms,
        threads: args.threads,
        wall_secs: t0.elapsed().as_secs_f64(),
    };
    let missed = report::write(&args.out, &settings, &per)?;
    report::write_rollouts(&args.out, &per)?;
    if args.check && !missed.is_empty() {
        bail!("targets missed: {}", missed.join("; "));
    }
    Ok(())
}
