//! `actuator rollout explain ID`: the full health report of a rollout's last look, for
//! people. Every arm's numbers (TTFT and tokens included), every metric's evidence, every
//! SLO guard, the promotion gates and what holds the step, from `GET /v1/rollouts/{id}/health`.

use serde_json::Value;
use std::fmt::Write as _;

use crate::output::{evalue, ms, num, pct, short, table, when};
use crate::plan_view::duration;

/// An integer count, `-` when missing.
fn count(v: &Value) -> String {
    v.as_u64().map_or_else(|| "-".into(), |n| n.to_string())
}

/// The arms: traffic, errors, latency and TTFT, cost, quality, tokens, and what was left out.
fn arms(x: &Value) -> String {
    let rows: Vec<Vec<String>> = x["arms"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            vec![
                short(&a["arm"]),
                count(&a["requests"]),
                a["effective_requests"].as_f64().map_or_else(|| "-".into(), |e| format!("{e:.0}")),
                format!("{} ({})", count(&a["error_events"]), pct(&a["error_rate"])),
                count(&a["timeouts"]),
                count(&a["refused"]),
                format!("{} / {} / {}", ms(&a["p50_ms"]), ms(&a["p95_ms"]), ms(&a["p99_ms"])),
                format!("{} / {}", ms(&a["ttft_p50_ms"]), ms(&a["ttft_p95_ms"])),
                num(&a["mean_cost"]),
                format!("{} ({} judged)", num(&a["mean_quality"]), count(&a["judged"])),
                format!("{} / {}", count(&a["tokens_in"]), count(&a["tokens_out"])),
                format!(
                    "{} outside, {} stale, {} unphased",
                    count(&a["outside_requests"]),
                    count(&a["stale"]),
                    count(&a["unphased"])
                ),
            ]
        })
        .collect();
    if rows.is_empty() {
        return "no traffic in this phase yet\n".into();
    }
    table(
        &[
            "ARM",
            "REQUESTS",
            "EFFECTIVE",
            "ERRORS",
            "TIMEOUTS",
            "REFUSED",
            "LATENCY P50/P95/P99",
            "TTFT P50/P95",
            "COST",
            "QUALITY",
            "TOKENS IN/OUT",
            "NOT COMPARED",
        ],
        &rows,
    )
}

/// One comparison of an arm with control: its metrics, its guards, the classical tests.
fn comparison(c: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} against control: combined e-value {} (rolls back at {}), p <= {}",
        short(&c["arm"]),
        evalue(&c["combined_log_e"]),
        evalue(&c["log_threshold"]),
        num(&c["p_value"])
    );
    let metrics: Vec<Vec<String>> = c["metrics"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let need = match (m["additional_requests"].as_u64(), m["eta_secs"].as_f64()) {
                (Some(n), Some(s)) => format!("{n} req, {}", duration(s)),
                (Some(n), None) => format!("{n} req"),
                _ => "-".into(),
            };
            vec![
                short(&m["metric"]),
                num(&m["estimate"]),
                num(&m["phase_estimate"]),
                format!("[{}, {}]", num(&m["lower"]), num(&m["upper"])),
                num(&m["margin"]),
                short(&m["verdict"]).replace('_', " ")
                    + if m["blocking"] == Value::Bool(true) { ", blocks" } else { "" },
                format!("{} / {}", evalue(&m["log_e_phase"]), evalue(&m["log_e_total"])),
                num(&m["alpha"]),
                need,
                m["note"].as_str().unwrap_or("").to_owned(),
            ]
        })
        .collect();
    if !metrics.is_empty() {
        out.push_str(&table(
            &[
                "METRIC",
                "ESTIMATE",
                "THIS PHASE",
                "INTERVAL",
                "MARGIN",
                "VERDICT",
                "E PHASE/TOTAL",
                "ALPHA",
                "NEEDS",
                "NOTE",
            ],
            &metrics,
        ));
    }
    let checks: Vec<Vec<String>> = c["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| {
            vec![
                short(&g["check"]),
                num(&g["value"]),
                num(&g["control_value"]),
                num(&g["threshold"]),
                short(&g["status"]),
                evalue(&g["log_e"]),
                g["note"].as_str().unwrap_or("").to_owned(),
            ]
        })
        .collect();
    if !checks.is_empty() {
        out.push_str("\nSLO guards:\n");
        out.push_str(&table(
            &["GUARD", "CANARY", "REFERENCE", "THRESHOLD", "STATUS", "E-VALUE", "NOTE"],
            &checks,
        ));
    }
    let cl = &c["classical"];
    if cl["errors"].is_object() || cl["log_latency"].is_object() {
        out.push_str("\nclassical fixed-sample tests (for reference only, not valid under repeated looks):\n");
        if cl["errors"].is_object() {
            let _ = writeln!(
                out,
                "  errors: {} vs {} (z = {}, two-sided p = {})",
                pct(&cl["errors"]["p_canary"]),
                pct(&cl["errors"]["p_control"]),
                num(&cl["errors"]["z"]),
                num(&cl["errors"]["p_two_sided"])
            );
        }
        if cl["log_latency"].is_object() {
            let _ = writeln!(
                out,
                "  ln latency: difference {} (t = {}, two-sided p = {})",
                num(&cl["log_latency"]["difference"]),
                num(&cl["log_latency"]["t"]),
                num(&cl["log_latency"]["p_two_sided"])
            );
        }
    }
    if c["benefit"].is_object() {
        let b = &c["benefit"];
        let _ = writeln!(
            out,
            "\nbetter than control on {}: improvement {}, e-value {} (declared at {})",
            short(&b["metric"]),
            num(&b["improvement"]),
            evalue(&b["log_e_value"]),
            evalue(&b["log_threshold"])
        );
    }
    out
}

/// The whole report of `GET /v1/rollouts/{id}/health`.
pub(crate) fn render(h: &Value) -> String {
    let e = &h["last_evaluation"];
    let x = &e["explanation"];
    if x.is_null() {
        return format!(
            "rollout {}: no look at its evidence yet (phase {})\n",
            short(&h["rollout_id"]),
            short(&h["phase"])
        );
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "rollout {}, phase {} ({}), last look {}",
        short(&h["rollout_id"]),
        short(&x["phase"]),
        short(&x["role"]),
        when(&x["at"])
    );
    let _ = writeln!(out, "decision: {}", short(&x["rule"]));
    let g = &x["gates"];
    let _ = writeln!(
        out,
        "minimums: {} of {} canary requests, {} of {}{}",
        count(&g["samples"]),
        count(&g["min_samples"]),
        duration(g["elapsed_secs"].as_f64().unwrap_or(0.0)),
        duration(g["min_duration_secs"].as_f64().unwrap_or(0.0)),
        if g["budget_spent"] == Value::Bool(true) { "; the step's budget is spent" } else { "" }
    );
    if x["holding"].is_object() {
        let hd = &x["holding"];
        let mut line = format!("held by: {}", short(&hd["what"]));
        if !hd["arm"].is_null() {
            let _ = write!(line, " on {}", short(&hd["arm"]));
        }
        let _ = write!(line, ": {}", short(&hd["reason"]));
        if let Some(n) = hd["additional_requests"].as_u64() {
            let _ = write!(line, "; about {n} more canary requests");
        }
        if let Some(s) = hd["eta_secs"].as_f64() {
            let _ = write!(line, " ({} at the current traffic)", duration(s));
        }
        let _ = writeln!(out, "{line}");
    }
    for d in x["delays"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "delay: {}", short(d));
    }
    if x["srm_log_e"].is_number() {
        let _ = writeln!(out, "sample-ratio check: e-value {}", evalue(&x["srm_log_e"]));
    }
    out.push_str("\narms:\n");
    out.push_str(&arms(x));
    for c in x["comparisons"].as_array().into_iter().flatten() {
        out.push('\n');
        out.push_str(&comparison(c));
    }
    let looks = h["history"].as_array().map_or(0, Vec::len);
    let _ = writeln!(out, "\n{looks} looks kept in the health history (`-o json` prints them)");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_report_shows_every_section() {
        let h = json!({
            "rollout_id": "ro-1", "phase": 1,
            "history": [{}, {}],
            "last_evaluation": {"decision": {"kind": "continue"}, "explanation": {
                "phase": 1, "role": "prove", "at": "2026-12-04T03:00:00Z", "rule": "continue: holding",
                "gates": {"samples": 40, "min_samples": 100, "elapsed_secs": 30, "min_duration_secs": 60, "budget_spent": false},
                "holding": {"what": "errors", "arm": "canary", "reason": "not yet non-inferior", "additional_requests": 1200, "eta_secs": 240.0},
                "delays": ["burn-in: 30 latencies per arm"],
                "srm_log_e": 0.1,
                "arms": [{"arm": "canary", "requests": 40, "error_events": 1, "error_rate": 0.025,
                          "ttft_p50_ms": 120.0, "ttft_p95_ms": 300.0, "tokens_in": 5000, "tokens_out": 7000,
                          "judged": 2, "outside_requests": 0, "stale": 0, "unphased": 0}],
                "comparisons": [{"arm": "canary", "combined_log_e": 95.0, "log_threshold": 3.0, "p_value": 0.5,
                    "metrics": [{"metric": "errors", "estimate": 0.01, "lower": -0.02, "upper": 0.04, "margin": 0.01,
                                 "verdict": "pending", "blocking": true, "log_e_phase": 0.0, "log_e_total": 95.0, "alpha": 0.01}],
                    "checks": [{"check": "slo:p99<=2000ms", "value": 2500.0, "control_value": 2600.0, "threshold": 2000.0,
                                "status": "StableBreaks", "log_e": 0.0, "note": "the stable breaks this too"}],
                    "classical": {"errors": {"p_canary": 0.025, "p_control": 0.01, "z": 1.2, "p_two_sided": 0.23}}}]
            }}
        });
        let r = render(&h);
        for part in [
            "phase 1 (prove)",
            "minimums: 40 of 100 canary requests, 30s of 1m 0s",
            "held by: errors on canary: not yet non-inferior; about 1200 more canary requests (4m 0s",
            "delay: burn-in",
            "120ms / 300ms",
            "5000 / 7000",
            ">1e12",
            "StableBreaks",
            "the stable breaks this too",
            "classical fixed-sample tests",
            "pending, blocks",
            "2 looks kept",
        ] {
            assert!(r.contains(part), "{part:?} missing:\n{r}");
        }
        assert!(render(&json!({"rollout_id": "ro-2", "phase": 0})).contains("no look"));
    }
}
