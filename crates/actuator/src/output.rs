//! Rendering API answers for people.

use serde_json::Value;
use std::fmt::Write as _;

/// A plain aligned table.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let parts: Vec<String> =
            cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        let _ = writeln!(out, "{}", parts.join("  ").trim_end());
    };
    line(headers.to_vec(), &mut out);
    for r in rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

/// A JSON value as a short string (strings unquoted).
pub(crate) fn short(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A diff object (`added`, `removed`, `changed`) as lines `+ path value`, `- path`, `~ path a -> b`.
pub(crate) fn diff(d: &Value) -> String {
    let mut out = String::new();
    for c in d["changed"].as_array().into_iter().flatten() {
        // The first version of a slot replaces nothing: the whole document is new.
        if c["path"].as_str().is_some_and(str::is_empty) && c["from"].is_null() {
            let _ = writeln!(out, "  + (the whole document, the slot's first version)");
            continue;
        }
        let _ =
            writeln!(out, "  ~ {}: {} -> {}", c["path"].as_str().unwrap_or(""), c["from"], c["to"]);
    }
    for a in d["added"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "  + {}: {}", a["path"].as_str().unwrap_or(""), a["value"]);
    }
    for r in d["removed"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "  - {}: {}", r["path"].as_str().unwrap_or(""), r["value"]);
    }
    if out.is_empty() {
        out.push_str("  (no changes)\n");
    }
    out
}

/// An ISO timestamp shortened to seconds.
pub(crate) fn when(v: &Value) -> String {
    v.as_str().map(|s| s.get(..19).unwrap_or(s).replace('T', " ")).unwrap_or_default()
}

/// A number for people: about four significant digits, `-` when missing.
pub(crate) fn num(v: &Value) -> String {
    v.as_f64().map_or_else(|| "-".into(), fnum)
}

/// An `f64` with about four significant digits.
pub(crate) fn fnum(x: f64) -> String {
    let a = x.abs();
    if !x.is_finite() {
        x.to_string()
    } else if a == 0.0 {
        "0".into()
    } else if a >= 1000.0 {
        format!("{x:.0}")
    } else if a >= 100.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.3}")
    } else if a >= 0.001 {
        format!("{x:.4}")
    } else {
        format!("{x:.2e}")
    }
}

/// A rate in 0..=1 as a percentage, `-` when missing.
pub(crate) fn pct(v: &Value) -> String {
    v.as_f64().map_or_else(|| "-".into(), |r| format!("{:.2}%", r * 100.0))
}

/// Milliseconds, `-` when missing.
pub(crate) fn ms(v: &Value) -> String {
    v.as_f64().map_or_else(|| "-".into(), |x| format!("{x:.0}ms"))
}

/// The largest e-value shown as a number; anything beyond reads `>1e12` (a rollback needs
/// 20 with the default budget, so more digits say nothing).
const EVALUE_CAP_LOG: f64 = 27.631_021_115_928_547; // ln(1e12)

/// An e-value from its logarithm (`exp(log_e)`): two decimals below 1,000, scientific notation
/// above, capped at `>1e12`.
pub(crate) fn evalue(log_e: &Value) -> String {
    match log_e.as_f64() {
        None => "-".into(),
        Some(l) if l.is_nan() => "-".into(),
        Some(l) if l > EVALUE_CAP_LOG => ">1e12".into(),
        Some(l) if l > 1000f64.ln() => format!("{:.1e}", l.exp()),
        Some(l) => format!("{:.2}", l.exp()),
    }
}

/// The phase of a rollout view for people, numbered from 0 as in the API, the observations
/// and OFREP's metadata: `1 of 0-4`; `-` when it has none.
pub(crate) fn phase(view: &Value) -> String {
    match (view["phase"].as_u64(), view["phases"].as_u64()) {
        (Some(p), Some(n)) if n > 1 => format!("{p} of 0-{}", n - 1),
        (Some(p), _) => format!("{p}"),
        _ => "-".into(),
    }
}

/// The candidate's traffic share of a rollout view, e.g. `5%`; for a finished rollout, who
/// serves the traffic now, and for a shadow, that no user is served by the candidate.
pub(crate) fn share(view: &Value) -> String {
    match view["state"].as_str() {
        Some("completed") if view["strategy"] == "shadow" => return "stable kept".into(),
        Some("completed") => return "candidate is stable".into(),
        Some("rolled_back" | "aborted" | "failed") => return "all on stable".into(),
        _ => {}
    }
    if view["strategy"] == "shadow" {
        return "mirrored, serves no user".into();
    }
    view["share_percent"].as_f64().map_or_else(|| "-".into(), |s| format!("{}%", percent(s)))
}

/// A percentage with at most two decimals and no trailing zeros: `1`, `2.5`, `0.25`.
pub(crate) fn percent(x: f64) -> String {
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// The candidate's observed share of the phase's requests beside the configured one:
/// ` (observed 4.8% of 2345 requests)`; empty without traffic, for a shadow (which serves no
/// user) and for a finished rollout.
pub(crate) fn observed_share(view: &Value) -> String {
    if view["strategy"] == "shadow" || is_terminal(&view["state"]) {
        return String::new();
    }
    let candidate = crate::plan_view::candidate_requests(view);
    let total: u64 = view["arms"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["requests"].as_u64())
        .fold(0, u64::saturating_add);
    if total == 0 {
        return String::new();
    }
    format!(" (observed {}% of {total} requests)", percent(100.0 * candidate as f64 / total as f64))
}

/// Whether a rollout state is terminal: `completed`, `rolled_back`, `failed` or `aborted`.
pub(crate) fn is_terminal(state: &Value) -> bool {
    matches!(state.as_str(), Some("completed" | "rolled_back" | "failed" | "aborted"))
}

/// One line about a rollout: `rollout ro-1 on chat.default: monitoring, phase 1 of 0-4, 5%`.
pub(crate) fn rollout_line(view: &Value) -> String {
    format!(
        "rollout {} on {}: {}, phase {}, {}\n",
        short(&view["id"]),
        short(&view["slot"]),
        short(&view["state"]),
        phase(view),
        share(view)
    )
}

/// Rows of `rollout list`.
pub(crate) fn rollout_rows(items: &Value) -> Vec<Vec<String>> {
    items
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            vec![
                short(&r["id"]),
                short(&r["slot"]),
                short(&r["strategy"]),
                short(&r["state"]),
                phase(r),
                share(r),
                format!("{} -> {}", short(&r["stable_version"]), short(&r["candidate_version"])),
                when(&r["updated_at"]),
            ]
        })
        .collect()
}

/// A rollback reason in words (a string, or an object such as
/// `{"kind": "analysis", "rules": [...]}`).
pub(crate) fn reason(v: &Value) -> String {
    if v.is_object()
        && let Ok(r) = serde_json::from_value::<actuator_core::RollbackReason>(v.clone())
    {
        return r.to_string();
    }
    match v {
        Value::Object(m) => {
            let kind = m.get("kind").map_or_else(String::new, short);
            let mut extra: Vec<String> = Vec::new();
            for (k, x) in m {
                if k == "kind" {
                    continue;
                }
                match x {
                    Value::Array(a) => {
                        extra.push(a.iter().map(short).collect::<Vec<_>>().join("; "))
                    }
                    Value::Null => {}
                    other => extra.push(short(other)),
                }
            }
            extra.retain(|e| !e.is_empty());
            match (kind.is_empty(), extra.is_empty()) {
                (_, true) => kind,
                (true, false) => extra.join("; "),
                (false, false) => format!("{kind}: {}", extra.join("; ")),
            }
        }
        other => short(other),
    }
}

/// A decision's kind and rule on one line: `continue: phase minimums not met yet`.
pub(crate) fn decision_headline(d: &Value) -> String {
    let kind = short(&d["kind"]);
    match d["rule"].as_str().filter(|r| !r.is_empty()) {
        Some(rule) if rule.starts_with(kind.as_str()) => rule.to_owned(),
        Some(rule) => format!("{kind} ({rule})"),
        None => kind,
    }
}

/// A decision (`{"kind", "rule", "at", "reasons"}`) as a headline and indented reasons.
pub(crate) fn decision(d: &Value) -> String {
    if d.is_null() {
        return "none yet\n".into();
    }
    let mut out = decision_headline(d);
    if d["at"].is_string() {
        let _ = write!(out, " at {}", when(&d["at"]));
    }
    out.push('\n');
    for r in d["reasons"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "  - {}", short(r));
    }
    out
}

/// A field of a rollback record: at the top level, or in its `result` once it finished.
pub(crate) fn rollback_field<'a>(rb: &'a Value, key: &str) -> &'a Value {
    if rb[key].is_null() { &rb["result"][key] } else { &rb[key] }
}

/// A rollback record (from a rollout view or the rollback history) on one line.
pub(crate) fn rollback_line(rb: &Value) -> String {
    let mut out = format!(
        "{} rollback{}",
        short(&rb["mode"]),
        match rb["automatic"].as_bool() {
            Some(true) => " (automatic)",
            Some(false) => " (manual)",
            None => "",
        }
    );
    if let Some(a) = rb["actor"].as_str() {
        let _ = write!(out, " by {a}");
    }
    if rb["after_completion"] == Value::Bool(true) {
        out.push_str(" after completion");
    }
    if let Some(f) = rb["flip_ms"].as_f64() {
        if rb["mode"] == "gradual" {
            let _ = write!(out, ", first step down in {} ms", fnum(f));
        } else {
            let _ = write!(out, ", traffic back on stable in {} ms", fnum(f));
        }
    }
    match rollback_field(rb, "success").as_bool() {
        Some(s) => {
            if let Some(v) = rollback_field(rb, "restored_version").as_u64() {
                let _ = write!(out, ", version {v} restored");
            }
            if let Some(d) = rollback_field(rb, "duration_ms").as_f64() {
                let _ = write!(out, " after {:.1} s", d / 1000.0);
            }
            let _ = write!(out, ", {}", if s { "succeeded" } else { "FAILED" });
            match rollback_field(rb, "validated").as_bool() {
                Some(true) => out.push_str(", stable validated healthy"),
                Some(false) => out.push_str(", stable NOT healthy after it"),
                None => {}
            }
        }
        None => out.push_str(", in progress"),
    }
    if !rb["reason"].is_null() {
        let _ = write!(out, "; reason: {}", reason(&rb["reason"]));
    }
    if let Some(e) = rollback_field(rb, "error").as_str() {
        let _ = write!(out, "; error: {e}");
    }
    out
}

/// The arms of a rollout view: requests, errors, latency percentiles, cost, quality.
pub(crate) fn arms_table(v: &Value) -> String {
    let arms: Vec<Vec<String>> = v["arms"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            vec![
                short(&a["arm"]),
                short(&a["requests"]),
                short(&a["errors"]),
                pct(&a["error_rate"]),
                ms(&a["p50_ms"]),
                ms(&a["p95_ms"]),
                ms(&a["p99_ms"]),
                num(&a["mean_cost"]),
                num(&a["mean_quality"]),
            ]
        })
        .collect();
    if arms.is_empty() {
        return "no traffic reported yet\n".into();
    }
    table(
        &["ARM", "REQUESTS", "ERRORS", "ERROR RATE", "P50", "P95", "P99", "COST", "QUALITY"],
        &arms,
    )
}

/// The metrics of a rollout view: estimate, always-valid interval, margin, non-inferiority and
/// e-value per arm compared with control; empty when there is no comparison.
pub(crate) fn metrics_table(v: &Value) -> String {
    let metrics: Vec<Vec<String>> = v["metrics"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            vec![
                short(&m["arm"]),
                short(&m["metric"]),
                num(&m["estimate"]),
                format!("[{}, {}]", num(&m["lower"]), num(&m["upper"])),
                num(&m["margin"]),
                verdict(m),
                evalue(&m["log_e_total"]),
            ]
        })
        .collect();
    if metrics.is_empty() {
        return String::new();
    }
    table(&["ARM", "METRIC", "ESTIMATE", "INTERVAL", "MARGIN", "VERDICT", "E-VALUE"], &metrics)
}

/// A metric's standing in words: `no data` without an estimate, else its verdict
/// (`non-inferior`, `pending`, `unreachable`, `beyond margin`, `not required`), `, blocks`
/// when it holds promotion.
fn verdict(m: &Value) -> String {
    if !m["estimate"].is_number() {
        return "no data".into();
    }
    let mut v = match m["verdict"].as_str() {
        Some(s) => s.replace('_', "-").replace("beyond-margin", "beyond margin"),
        None if m["non_inferior"] == Value::Bool(true) => "non-inferior".into(),
        None => "pending".into(),
    };
    if v == "not-required" {
        v = "not required".into();
    }
    if m["blocking"] == Value::Bool(true) {
        v.push_str(", blocks");
    }
    v
}

/// Whether a rollout view holds a comparison with control (some metric has an estimate).
pub(crate) fn has_comparison(v: &Value) -> bool {
    v["metrics"].as_array().is_some_and(|m| m.iter().any(|x| x["estimate"].is_number()))
}

/// Errors shown by [`rollout_view`] (the view keeps up to 20).
const ERRORS_SHOWN: usize = 3;

/// What a rollout fed by a metric source shows of its feed: looks and requests fed, and the
/// missing data that holds promotion (`None` without a feed).
fn metric_feed_line(f: &Value) -> Option<String> {
    let source = f["source"].as_str()?;
    let mut line = format!(
        "outcomes from metric source {source}: {} looks, {} requests fed",
        f["looks"].as_u64().unwrap_or(0),
        f["fed_requests"].as_u64().unwrap_or(0)
    );
    let m = &f["missing"];
    if m.is_object() {
        let _ = write!(
            line,
            "\nMISSING DATA since {} ({} of {} looks before a halt; promotion held): {} query for {} ({}): {}",
            when(&m["since"]),
            m["looks"].as_u64().unwrap_or(0),
            m["limit"].as_u64().unwrap_or(0),
            short(&m["field"]),
            short(&m["arm"]),
            m["query"].as_str().unwrap_or(""),
            m["error"].as_str().unwrap_or("")
        );
    }
    line.push('\n');
    Some(line)
}

/// The full rollout view for people: header, arms, metrics, last decision, transitions.
pub(crate) fn rollout_view(v: &Value, transitions: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "rollout {}  slot {}  strategy {}  state {}",
        short(&v["id"]),
        short(&v["slot"]),
        short(&v["strategy"]),
        short(&v["state"]).to_uppercase()
    );
    let _ = writeln!(
        out,
        "phase {}, {}{}  stable version {} -> candidate version {}",
        phase(v),
        share(v),
        observed_share(v),
        short(&v["stable_version"]),
        short(&v["candidate_version"])
    );
    let _ = writeln!(
        out,
        "started {}  phase started {}  updated {}",
        when(&v["created_at"]),
        when(&v["phase_started_at"]),
        when(&v["updated_at"])
    );
    if let Some(p) = v["paused_reason"].as_str() {
        let _ = writeln!(out, "paused: {p}");
    }
    if let Some(g) = v["gate"]["message"].as_str() {
        let _ = writeln!(out, "gate: {g}");
    }
    if v["awaiting_promotion"] == Value::Bool(true) {
        let _ = writeln!(
            out,
            "the analysis recommends promotion (auto-promotion is off): `actuator rollout promote {}`",
            short(&v["id"])
        );
    }
    let plan = crate::plan_view::step_plan(v, crate::plan_view::colour_enabled());
    if !plan.is_empty() {
        out.push('\n');
        out.push_str(&plan);
    }
    if let Some(line) = metric_feed_line(&v["metric_feed"]) {
        out.push_str(&line);
    }
    out.push('\n');
    out.push_str(&arms_table(v));
    if has_comparison(v) {
        out.push('\n');
        out.push_str(&metrics_table(v));
    } else if v["metrics"].as_array().is_some_and(|m| !m.is_empty()) {
        out.push_str("(no comparison with control in this phase yet)\n");
    }
    let held = crate::plan_view::holds(v);
    if !held.is_empty() {
        out.push('\n');
        out.push_str(&held);
    }
    let _ = write!(out, "\nlast decision: {}", decision(&v["last_decision"]));
    if !v["rollback"].is_null() {
        let _ = writeln!(out, "rollback: {}", rollback_line(&v["rollback"]));
    }
    let earlier: Vec<&Value> = v["rollbacks"]
        .as_array()
        .into_iter()
        .flatten()
        .skip(usize::from(!v["rollback"].is_null()))
        .collect();
    for rb in earlier {
        let _ = writeln!(out, "earlier rollback: {}", rollback_line(rb));
    }
    if let Some(o) = v["outcome"].as_str() {
        let _ = writeln!(out, "outcome: {o}");
    }
    if let Some(until) = v["rollback_window_until"].as_str() {
        let _ = writeln!(
            out,
            "can be rolled back until {until}: `actuator rollout rollback {} [--gradual]`",
            short(&v["id"])
        );
    }
    let errors: Vec<&Value> = v["errors"].as_array().into_iter().flatten().collect();
    if errors.len() > ERRORS_SHOWN {
        let _ = writeln!(out, "errors: {} (the last {ERRORS_SHOWN} follow)", errors.len());
    }
    for e in &errors[errors.len().saturating_sub(ERRORS_SHOWN)..] {
        let _ = writeln!(out, "error: {}", short(e));
    }
    let all: Vec<&Value> = v["transitions"].as_array().into_iter().flatten().collect();
    if !all.is_empty() {
        let _ = writeln!(out, "\ntransitions (last {}):", transitions.min(all.len()));
        for t in &all[all.len().saturating_sub(transitions)..] {
            let _ = writeln!(
                out,
                "  {}  {} -> {}  {}",
                when(&t["at"]),
                short(&t["from"]),
                short(&t["to"]),
                t["reason"].as_str().unwrap_or("")
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shares_say_who_serves_the_traffic() {
        let live = json!({"state": "monitoring", "strategy": "canary", "share_percent": 5.0,
            "arms": [{"arm": "control", "requests": 950}, {"arm": "canary", "requests": 50}]});
        assert_eq!(share(&live), "5%");
        assert_eq!(observed_share(&live), " (observed 5% of 1000 requests)");
        let done = json!({"state": "completed", "strategy": "canary", "share_percent": 0.0});
        assert_eq!(share(&done), "candidate is stable");
        assert_eq!(observed_share(&done), "");
        let back = json!({"state": "rolled_back", "strategy": "canary", "share_percent": 0.0});
        assert_eq!(share(&back), "all on stable");
        let shadow = json!({"state": "monitoring", "strategy": "shadow", "share_percent": 100.0});
        assert_eq!(share(&shadow), "mirrored, serves no user");
        assert_eq!(observed_share(&shadow), "");
    }

    #[test]
    fn numbers_are_for_people() {
        assert_eq!(phase(&json!({"phase": 1, "phases": 5})), "1 of 0-4", "numbered from 0");
        assert_eq!(evalue(&json!(0.0)), "1.00");
        assert_eq!(evalue(&json!(10.0)), "2.2e4");
        assert_eq!(evalue(&json!(207.0)), ">1e12", "a 90-digit number is capped");
        let no_data = json!({"estimate": null, "non_inferior": true, "verdict": "pending"});
        assert_eq!(verdict(&no_data), "no data");
        let held = json!({"estimate": 0.01, "verdict": "beyond_margin", "blocking": true});
        assert_eq!(verdict(&held), "beyond margin, blocks");
        let fine = json!({"estimate": -0.01, "verdict": "non_inferior"});
        assert_eq!(verdict(&fine), "non-inferior");
    }

    #[test]
    fn reasons_read_as_words() {
        let r = json!({"kind": "analysis", "rules": ["sequential:errors"]});
        assert_eq!(
            reason(&r),
            "the analysis found the candidate worse: errors worse than control (sequential test)"
        );
        let gradual = json!({"mode": "gradual", "automatic": true, "flip_ms": 3.0});
        assert!(rollback_line(&gradual).contains("first step down in 3.000 ms"));
        assert!(!rollback_line(&gradual).contains("traffic back on stable"));
    }
}

#[cfg(test)]
mod feed_tests {
    use super::*;

    #[test]
    fn a_fed_rollout_shows_its_feed_and_what_holds_it() {
        assert_eq!(metric_feed_line(&Value::Null), None);
        let f = serde_json::json!({"source": "prom", "looks": 12, "fed_requests": 4800, "missing": null});
        assert_eq!(
            metric_feed_line(&f).unwrap(),
            "outcomes from metric source prom: 12 looks, 4800 requests fed\n"
        );
        let f = serde_json::json!({"source": "prom", "looks": 13, "fed_requests": 4800, "missing": {
            "arm": "canary", "field": "errors", "query": "sum(e{arm=\"canary\"})",
            "error": "returned no data", "since": "2026-01-02T03:04:05Z", "looks": 1, "limit": 3}});
        let line = metric_feed_line(&f).unwrap();
        assert!(line.contains("MISSING DATA since"), "{line}");
        assert!(line.contains("(1 of 3 looks before a halt; promotion held): errors query for canary (sum(e{arm=\"canary\"})): returned no data"), "{line}");
    }
}
