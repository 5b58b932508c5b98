//! Summaries of the simulated rollouts: the markdown table, a CSV and a JSON of the same.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use actuator_health::HealthConfig;
use actuator_stats::classical::fixed_horizon_n_proportions;
use anyhow::{Context, Result};
use serde::Serialize;

use super::driver::{End, RolloutResult};
use super::scenarios::{Expect, Scenario};
use super::traffic::{self, Users};

/// The run's settings, printed with the table.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Settings {
    pub(crate) rollouts: u64,
    pub(crate) seed: u64,
    pub(crate) quick: bool,
    pub(crate) wave: u64,
    pub(crate) cap_secs: u64,
    pub(crate) checkpoint_ms: u64,
    pub(crate) threads: usize,
    pub(crate) wall_secs: f64,
}

/// Everything one scenario produced.
#[derive(Debug)]
pub(crate) struct ScenarioRun {
    pub(crate) scenario: Scenario,
    pub(crate) results: Vec<RolloutResult>,
    pub(crate) requests: u64,
    pub(crate) rejected: u64,
    pub(crate) cpu_secs: f64,
}

impl ScenarioRun {
    pub(crate) fn new(scenario: Scenario) -> Self {
        Self { scenario, results: Vec::new(), requests: 0, rejected: 0, cpu_secs: 0.0 }
    }
}

/// One row of the table, as written to the CSV and JSON.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    pub(crate) name: String,
    pub(crate) label: String,
    pub(crate) expect: Expect,
    pub(crate) rollouts: usize,
    pub(crate) completed_pct: f64,
    pub(crate) completed_within_2h_pct: f64,
    /// Median minutes to complete, unconditional (`None`: fewer than half completed).
    pub(crate) median_complete_min: Option<f64>,
    pub(crate) rolled_back_pct: f64,
    pub(crate) paused_pct: f64,
    pub(crate) running_at_cap_pct: f64,
    pub(crate) failed_pct: f64,
    /// Median canary requests to the rollback decision, unconditional (`None`: fewer than
    /// half rolled back).
    pub(crate) median_canary_to_rollback: Option<u64>,
    pub(crate) median_minutes_to_rollback: Option<f64>,
    /// Rollbacks whose reason names the regressed metric, percent of rollouts.
    pub(crate) on_metric_pct: Option<f64>,
    /// Median canary requests to a rollback whose reason names the regressed metric
    /// (unconditional, as above).
    pub(crate) median_canary_on_metric: Option<u64>,
    /// The share (percent) of the phase in which most rollbacks were decided.
    pub(crate) caught_at_share: Option<f64>,
    /// Fixed-horizon canary n (one-sided α 0.05, power 0.8) for errors ×2 at that share.
    pub(crate) fixed_horizon_n: Option<f64>,
    pub(crate) ratio_to_fixed: Option<f64>,
    /// The same at the error metric's share of the rollback budget (its ledger weight × α):
    /// a fixed-horizon test of errors that keeps the same whole-rollout budget.
    pub(crate) fixed_horizon_n_budget: Option<f64>,
    pub(crate) ratio_to_fixed_budget: Option<f64>,
    /// Rollbacks by reason.
    pub(crate) rollbacks: BTreeMap<String, usize>,
    /// Pauses and rollouts still running, by phase share and reason.
    pub(crate) stuck: BTreeMap<String, usize>,
    /// Rollbacks by the share of the phase they were decided in.
    pub(crate) rollback_share: BTreeMap<String, usize>,
    pub(crate) requests: u64,
    pub(crate) rejected: u64,
    pub(crate) cpu_secs: f64,
}

fn pct(k: usize, n: usize) -> f64 {
    if n == 0 { 0.0 } else { 100.0 * k as f64 / n as f64 }
}

/// The median of `v` counting `None` as +∞ (statistics.md §4.4): `None` when half or more
/// are `None`.
fn median<T: Copy + PartialOrd>(v: &[Option<T>]) -> Option<T> {
    let mut some: Vec<T> = v.iter().flatten().copied().collect();
    if some.is_empty() {
        return None;
    }
    some.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let k = v.len().div_ceil(2);
    some.get(k.saturating_sub(1)).copied()
}

fn share_label(p: f64) -> String {
    format!("{p}%")
}

fn pause_kind(why: &str) -> &'static str {
    if why.starts_with("inconclusive") {
        "inconclusive"
    } else if why.contains("ratio") {
        "halted: sample ratio"
    } else if why.starts_with("halted") {
        "halted"
    } else {
        "paused"
    }
}

fn short(why: &str) -> String {
    let mut s: String = why.chars().take(70).collect();
    if why.chars().count() > 70 {
        s.push('…');
    }
    s
}

/// Words a rollback reason uses for the metric a candidate regresses (matched in lower case
/// against the trigger kind or the analysis rule): empty for A/A and better candidates.
fn metric_words(s: &Scenario) -> Vec<&'static str> {
    let e = &s.effect;
    let mut w = Vec::new();
    if s.expect != Expect::Regression {
        return w;
    }
    if e.errors > 1.0 {
        w.push("error");
    }
    if e.latency > 1.0 || e.p99 > 1.0 {
        w.extend(["latency", "p99", "p95", "tail"]);
    }
    if e.cost > 1.0 {
        w.push("cost");
    }
    if e.quality < 0.0 {
        w.push("quality");
    }
    w
}

fn summarize(run: &ScenarioRun) -> Row {
    let r = &run.results;
    let n = r.len();
    let count = |e: End| r.iter().filter(|x| x.end == e).count();
    let complete: Vec<Option<f64>> =
        r.iter().map(|x| (x.end == End::Completed).then_some(x.secs as f64 / 60.0)).collect();
    let rollback_n: Vec<Option<u64>> =
        r.iter().map(|x| (x.end == End::RolledBack).then_some(x.canary_requests)).collect();
    let rollback_t: Vec<Option<f64>> =
        r.iter().map(|x| (x.end == End::RolledBack).then_some(x.secs as f64 / 60.0)).collect();
    let words = metric_words(&run.scenario);
    let on_metric = |x: &RolloutResult| {
        let why = x.why.to_lowercase();
        x.end == End::RolledBack && words.iter().any(|w| why.contains(w))
    };
    let on_metric_n: Vec<Option<u64>> =
        r.iter().map(|x| on_metric(x).then_some(x.canary_requests)).collect();
    let mut on_metric_share: BTreeMap<String, usize> = BTreeMap::new();
    for x in r.iter().filter(|x| on_metric(x)) {
        *on_metric_share.entry(share_label(x.share_percent)).or_default() += 1;
    }
    let mut rollbacks = BTreeMap::new();
    let mut rollback_share: BTreeMap<String, usize> = BTreeMap::new();
    let mut stuck = BTreeMap::new();
    for x in r {
        match x.end {
            End::RolledBack => {
                *rollbacks.entry(short(&x.why)).or_default() += 1;
                *rollback_share.entry(share_label(x.share_percent)).or_default() += 1;
            }
            End::Paused => {
                let k = format!("{} {}", share_label(x.share_percent), pause_kind(&x.why));
                *stuck.entry(k).or_default() += 1;
            }
            End::Running => {
                *stuck
                    .entry(format!("{} running at cap", share_label(x.share_percent)))
                    .or_default() += 1;
            }
            End::Failed => *stuck.entry(format!("failed: {}", short(&x.why))).or_default() += 1,
            End::Completed => {}
        }
    }
    let caught = on_metric_share
        .iter()
        .max_by_key(|(_, c)| **c)
        .and_then(|(k, _)| k.trim_end_matches('%').parse::<f64>().ok());
    let s = &run.scenario;
    let is_err2 = s.effect.errors == 2.0
        && s.effect.latency == 1.0
        && s.effect.p99 == 1.0
        && s.effect.cost == 1.0
        && s.effect.quality == 0.0;
    let p0 = s.traffic.baseline.error_rate;
    let fixed = caught
        .filter(|sh| is_err2 && *sh > 0.0 && *sh < 100.0)
        .and_then(|sh| fixed_horizon_n_proportions(p0, 2.0 * p0, sh / 100.0, 0.05, 0.2, 1).ok());
    let fixed_budget = caught.filter(|sh| is_err2 && *sh > 0.0 && *sh < 100.0).and_then(|sh| {
        fixed_horizon_n_proportions(p0, 2.0 * p0, sh / 100.0, errors_alpha(), 0.2, 1).ok()
    });
    let med_n = median(&rollback_n);
    let med_on = median(&on_metric_n);
    Row {
        name: s.name.clone(),
        label: s.label.clone(),
        expect: s.expect,
        rollouts: n,
        completed_pct: pct(count(End::Completed), n),
        completed_within_2h_pct: pct(complete.iter().flatten().filter(|m| **m <= 120.0).count(), n),
        median_complete_min: median(&complete),
        rolled_back_pct: pct(count(End::RolledBack), n),
        paused_pct: pct(count(End::Paused), n),
        running_at_cap_pct: pct(count(End::Running), n),
        failed_pct: pct(count(End::Failed), n),
        median_canary_to_rollback: med_n,
        median_minutes_to_rollback: median(&rollback_t),
        on_metric_pct: (!words.is_empty()).then(|| pct(on_metric_n.iter().flatten().count(), n)),
        median_canary_on_metric: med_on,
        caught_at_share: caught,
        fixed_horizon_n: fixed,
        ratio_to_fixed: fixed.zip(med_on).map(|(f, m)| m as f64 / f),
        fixed_horizon_n_budget: fixed_budget,
        ratio_to_fixed_budget: fixed_budget.zip(med_on).map(|(f, m)| m as f64 / f),
        rollbacks,
        stuck,
        rollback_share,
        requests: run.requests,
        rejected: run.rejected,
        cpu_secs: run.cpu_secs,
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>, none: &str) -> String {
    v.map_or_else(|| none.to_owned(), |x| x.to_string())
}

fn map_text(m: &BTreeMap<String, usize>) -> String {
    if m.is_empty() {
        return "–".into();
    }
    let mut v: Vec<(&String, &usize)> = m.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    v.iter().map(|(k, c)| format!("{k} ×{c}")).collect::<Vec<_>>().join("; ")
}

/// Checks the targets of the decisions issue; returns the misses.
fn targets(rows: &[Row], scenarios: &[Scenario]) -> (Vec<String>, Vec<String>) {
    let mut met = Vec::new();
    let mut missed = Vec::new();
    let mut check = |ok: bool, text: String| if ok { met.push(text) } else { missed.push(text) };
    for (row, s) in rows.iter().zip(scenarios) {
        let independent_50 = s.traffic.users == Users::Independent && s.traffic.rps == 50.0;
        match s.expect {
            Expect::Healthy => {
                check(
                    row.rolled_back_pct <= 5.0,
                    format!(
                        "{}: false rollback {:.1}% (target ≤ 5%)",
                        row.name, row.rolled_back_pct
                    ),
                );
                if independent_50 {
                    check(
                        row.completed_within_2h_pct >= 90.0,
                        format!(
                            "{}: completed within 2 h {:.1}% (target ≥ 90%)",
                            row.name, row.completed_within_2h_pct
                        ),
                    );
                }
            }
            Expect::Better => {
                check(
                    row.rolled_back_pct == 0.0,
                    format!(
                        "{}: better candidate rolled back in {:.1}% (target 0)",
                        row.name, row.rolled_back_pct
                    ),
                );
                if independent_50 {
                    check(
                        row.completed_within_2h_pct >= 90.0,
                        format!(
                            "{}: completed within 2 h {:.1}% (target ≥ 90%)",
                            row.name, row.completed_within_2h_pct
                        ),
                    );
                }
            }
            Expect::Regression => {
                let key = s.name.rsplit('/').next().unwrap_or_default();
                if ["err2", "tail", "cost", "qual"].contains(&key) {
                    let on = row.on_metric_pct.unwrap_or(0.0);
                    check(
                        on >= 90.0,
                        format!(
                            "{}: rolled back on the regressed metric before completion {on:.1}% (any rollback {:.1}%; target ≥ 90%)",
                            row.name, row.rolled_back_pct
                        ),
                    );
                }
                if let Some(ratio) =
                    row.ratio_to_fixed_budget.filter(|_| s.traffic.users == Users::Independent)
                {
                    check(
                        ratio <= 1.3,
                        format!(
                            "{}: median canary requests {ratio:.2}× the fixed-horizon n at the error metric's share of α ({:.2}× the n at α = 0.05 for errors alone; target ≤ 1.3×)",
                            row.name,
                            row.ratio_to_fixed.unwrap_or(f64::NAN)
                        ),
                    );
                }
            }
        }
    }
    (met, missed)
}

/// The error metric's share of the default rollback budget: its weight among the comparative
/// metrics, times the part the SLO guards leave, times α.
fn errors_alpha() -> f64 {
    let c = HealthConfig::default();
    let metrics = c.errors.weight
        + c.latency.weight
        + c.latency_tail.weight
        + c.cost.weight
        + c.quality.weight;
    let guards = if c.slo_guards.active().is_empty() { 0.0 } else { c.slo_guards.weight };
    c.alpha_rollback_total * c.errors.weight / metrics * (1.0 - guards)
}

fn git_commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or_else(|| "unknown".into(), |s| s.trim().to_owned())
}

fn markdown(settings: &Settings, rows: &[Row], met: &[String], missed: &[String]) -> String {
    let mut md = String::new();
    let now = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC");
    let _ = writeln!(md, "# `cargo xtask sim`: the real engine over the default canary request\n");
    let _ = writeln!(
        md,
        "Run {now} on commit `{}`; seed {}, {} rollouts per scenario{}, {} rollouts per engine, {} threads, \
         time cap {} h, evidence checkpoint every {} s; {:.0} s wall time.\n",
        git_commit(),
        settings.seed,
        settings.rollouts,
        if settings.quick { " (--quick: 500 rps rows left out)" } else { "" },
        settings.wave,
        settings.threads,
        settings.cap_secs / 3600,
        settings.checkpoint_ms / 1000,
        settings.wall_secs
    );
    let _ = writeln!(
        md,
        "Every rollout is `{{\"slot\", \"candidate\", \"strategy\": \"canary\"}}` and nothing else: the default plan, \
         phase minimums and maximums, rollback triggers, inconclusive policy, the 100% step and the rollback itself, \
         driven by `Engine::run_pass` once per simulated second. Requests are resolved through the daemon's routing \
         book (`RouteBook`, refreshed from the store after every transition), so the sticky hash and the real share \
         decide the arm. Judged scores ({:.0}% of requests) arrive {}–{} s later as quality updates. Sticky users: \
         {} users, the top 1% send ~30% of requests, per-user error propensity lognormal (σ {}) and latency factor \
         (σ {}). Diurnal drift: a 24 h cycle of ±{:.0}% rate, ±{:.0}% errors and ±{:.0}% latency on both arms, at a \
         random phase per rollout. Cost: lognormal (σ 0.8, correlation 0.7 with latency). Medians count rollouts \
         that never got there as +∞ (\"–\" when half or more never did). A regression counts as caught on its \
         metric when the rollback's reason (trigger kind or analysis rule) names that metric; the caught phase, the \
         fixed-horizon optimum and the ratio use those rollbacks only.\n",
        5.0,
        traffic::QUALITY_DELAY_SECS.0,
        traffic::QUALITY_DELAY_SECS.1,
        traffic::STICKY_USERS,
        traffic::USER_ERROR_SIGMA,
        traffic::USER_LATENCY_SIGMA,
        traffic::DIURNAL_RATE * 100.0,
        traffic::DIURNAL_ERRORS * 100.0,
        traffic::DIURNAL_LATENCY * 100.0,
    );
    let _ = writeln!(md, "## Healthy and better candidates\n");
    let _ = writeln!(
        md,
        "| scenario | what | rollouts | rolled back (false) | completed | completed ≤ 2 h | median time to complete | stuck: where and why | rollbacks by reason |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
    for r in rows.iter().filter(|r| r.expect != Expect::Regression) {
        let _ = writeln!(
            md,
            "| `{}` | {} | {} | {:.1}% | {:.1}% | {:.1}% | {} | {} | {} |",
            r.name,
            r.label,
            r.rollouts,
            r.rolled_back_pct,
            r.completed_pct,
            r.completed_within_2h_pct,
            opt(r.median_complete_min.map(|m| format!("{m:.0} min")), "–"),
            map_text(&r.stuck),
            map_text(&r.rollbacks),
        );
    }
    let _ = writeln!(md, "\n## Regressions\n");
    let _ = writeln!(
        md,
        "| scenario | what | rollouts | rolled back (any reason) | median canary requests to rollback | median time to rollback | rolled back on the regressed metric | median canary requests to that | caught in phase (most) | fixed-horizon n at that share (α 0.05) | ratio | fixed-horizon n at the errors' share of α | ratio | completed (missed) | stuck | rollbacks by reason |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows.iter().filter(|r| r.expect == Expect::Regression) {
        let _ = writeln!(
            md,
            "| `{}` | {} | {} | {:.1}% | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1}% | {} | {} |",
            r.name,
            r.label,
            r.rollouts,
            r.rolled_back_pct,
            opt(r.median_canary_to_rollback, "–"),
            opt(r.median_minutes_to_rollback.map(|m| format!("{m:.0} min")), "–"),
            opt(r.on_metric_pct.map(|p| format!("{p:.1}%")), "–"),
            opt(r.median_canary_on_metric, "–"),
            opt(r.caught_at_share.map(|s| format!("{s}%")), "–"),
            opt(r.fixed_horizon_n.map(|f| format!("{f:.0}")), "–"),
            opt(r.ratio_to_fixed.map(|x| format!("{x:.2}")), "–"),
            opt(r.fixed_horizon_n_budget.map(|f| format!("{f:.0}")), "–"),
            opt(r.ratio_to_fixed_budget.map(|x| format!("{x:.2}")), "–"),
            r.completed_pct,
            map_text(&r.stuck),
            map_text(&r.rollbacks),
        );
    }
    let _ = writeln!(md, "\n## Targets (decisions issue)\n");
    for m in missed {
        let _ = writeln!(md, "- MISSED: {m}");
    }
    for m in met {
        let _ = writeln!(md, "- met: {m}");
    }
    let total: u64 = rows.iter().map(|r| r.requests).sum();
    let cpu: f64 = rows.iter().map(|r| r.cpu_secs).sum();
    let rejected: u64 = rows.iter().map(|r| r.rejected).sum();
    let _ = writeln!(
        md,
        "\nSimulated {total} requests in {cpu:.0} CPU seconds ({:.2} M requests per CPU second, engine included); {rejected} observations refused by the engine.",
        if cpu > 0.0 { total as f64 / cpu / 1e6 } else { 0.0 }
    );
    md
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn csv(rows: &[Row]) -> String {
    let mut out = String::from(
        "name,label,expect,rollouts,completed_pct,completed_within_2h_pct,median_complete_min,rolled_back_pct,paused_pct,running_at_cap_pct,failed_pct,median_canary_to_rollback,median_minutes_to_rollback,on_metric_pct,median_canary_on_metric,caught_at_share,fixed_horizon_n,ratio_to_fixed,fixed_horizon_n_budget,ratio_to_fixed_budget,rollbacks,stuck,requests,cpu_secs\n",
    );
    let o = |v: Option<f64>| v.map_or_else(String::new, |x| format!("{x:.3}"));
    for r in rows {
        let _ = writeln!(
            out,
            "{},{},{},{},{:.2},{:.2},{},{:.2},{:.2},{:.2},{:.2},{},{},{},{},{},{},{},{},{},{},{},{},{:.1}",
            csv_field(&r.name),
            csv_field(&r.label),
            serde_json::to_value(r.expect)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            r.rollouts,
            r.completed_pct,
            r.completed_within_2h_pct,
            o(r.median_complete_min),
            r.rolled_back_pct,
            r.paused_pct,
            r.running_at_cap_pct,
            r.failed_pct,
            r.median_canary_to_rollback.map_or_else(String::new, |x| x.to_string()),
            o(r.median_minutes_to_rollback),
            o(r.on_metric_pct),
            r.median_canary_on_metric.map_or_else(String::new, |x| x.to_string()),
            o(r.caught_at_share),
            o(r.fixed_horizon_n),
            o(r.ratio_to_fixed),
            o(r.fixed_horizon_n_budget),
            o(r.ratio_to_fixed_budget),
            csv_field(&map_text(&r.rollbacks)),
            csv_field(&map_text(&r.stuck)),
            r.requests,
            r.cpu_secs,
        );
    }
    out
}

/// Prints the table and writes `out` (markdown), and the CSV and JSON beside it. Returns the
/// missed targets.
pub(crate) fn write(out: &Path, settings: &Settings, runs: &[ScenarioRun]) -> Result<Vec<String>> {
    let rows: Vec<Row> = runs.iter().map(summarize).collect();
    let scenarios: Vec<Scenario> = runs.iter().map(|r| r.scenario.clone()).collect();
    let (met, missed) = targets(&rows, &scenarios);
    let md = markdown(settings, &rows, &met, &missed);
    print!("{md}");
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(out, &md).with_context(|| format!("writing {}", out.display()))?;
    let csv_path = out.with_extension("csv");
    std::fs::write(&csv_path, csv(&rows))
        .with_context(|| format!("writing {}", csv_path.display()))?;
    let json_path = out.with_extension("json");
    let doc = serde_json::json!({"settings": settings, "scenarios": scenarios, "rows": rows, "targets": {"met": met, "missed": missed}});
    let text = serde_json::to_string_pretty(&doc).context("the JSON summary")?;
    std::fs::write(&json_path, text).with_context(|| format!("writing {}", json_path.display()))?;
    Ok(missed)
}

/// Writes every simulated rollout, one JSON object per line (scenario, end, seconds, canary
/// and all requests, phase, share, reason) to `<out>.rollouts.jsonl`.
pub(crate) fn write_rollouts(out: &Path, runs: &[ScenarioRun]) -> Result<()> {
    let path = out.with_extension("rollouts.jsonl");
    let mut text = String::new();
    for run in runs {
        for r in &run.results {
            let mut v = serde_json::to_value(r).context("a rollout result")?;
            if let serde_json::Value::Object(m) = &mut v {
                m.insert("scenario".into(), run.scenario.name.clone().into());
            }
            text.push_str(&v.to_string());
            text.push('\n');
        }
    }
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_counts_missing_values_as_infinite() {
        assert_eq!(median(&[Some(1u64), Some(3), None]), Some(3));
        assert_eq!(median(&[Some(1u64), None, None]), None);
        assert_eq!(median(&[Some(5u64), Some(1), Some(3), Some(2)]), Some(2));
    }
}
