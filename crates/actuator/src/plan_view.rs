//! The step plan of a rollout for people: which steps are done, current and pending, what
//! holds the current one, and how long until its next decision.

use serde_json::Value;
use std::fmt::Write as _;

use crate::output::{percent, short};

/// Whether output may carry colour: stdout is a terminal and `NO_COLOR` is unset or empty.
pub(crate) fn colour_enabled() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stdout())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// A colour of the plan's markers.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Colour {
    Green,
    Yellow,
    Red,
    Cyan,
    Dim,
}

/// `text` in `colour` when `on`, else as it is.
pub(crate) fn paint(text: &str, colour: Colour, on: bool) -> String {
    if !on {
        return text.to_owned();
    }
    let code = match colour {
        Colour::Green => "32",
        Colour::Yellow => "33",
        Colour::Red => "31",
        Colour::Cyan => "36",
        Colour::Dim => "2",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// A duration for people: `45s`, `12m 5s`, `3h 20m`, `2d 4h`.
pub(crate) fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "-".into();
    }
    let s = secs.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// How the current step stands, from the rollout's state.
fn current_marker(state: &str) -> (&'static str, Colour) {
    match state {
        "paused" => ("॥", Colour::Yellow),
        "rolling_back" | "rolled_back" | "failed" | "aborted" => ("✖", Colour::Red),
        "completed" => ("✔", Colour::Green),
        _ => ("●", Colour::Cyan),
    }
}

/// Canary requests of the current step: every arm but the control.
pub(crate) fn candidate_requests(v: &Value) -> u64 {
    v["arms"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| !matches!(a["arm"].as_str(), Some("stable" | "control")))
        .filter_map(|a| a["requests"].as_u64())
        .sum()
}

/// The plan, one line per step: `✔` done, `●` current, `॥` current and paused, `✖` where it
/// rolled back or stopped, `◌` pending.
pub(crate) fn step_plan(v: &Value, colour: bool) -> String {
    let steps: Vec<&Value> = v["steps"].as_array().into_iter().flatten().collect();
    if steps.is_empty() {
        return String::new();
    }
    let state = v["state"].as_str().unwrap_or_default();
    let current = v["phase"].as_u64().and_then(|p| usize::try_from(p).ok()).unwrap_or(0);
    let mut out = String::from("steps:\n");
    for (i, s) in steps.iter().enumerate() {
        let (marker, c) = if state == "completed" || i < current {
            ("✔", Colour::Green)
        } else if i == current {
            current_marker(state)
        } else {
            ("◌", Colour::Dim)
        };
        let kind = short(&s["kind"]);
        let what = match s["role"].as_str() {
            Some(role) => role.to_owned(),
            None => kind.clone(),
        };
        let share = if kind == "shadow" {
            "mirror".to_owned()
        } else {
            format!("{}%", percent(s["share_percent"].as_f64().unwrap_or(0.0)))
        };
        let mut line = format!("  {} {i:>2}  {share:>6}  {what:<8}", paint(marker, c, colour));
        if i == current && matches!(state, "rolling_back" | "rolled_back" | "failed" | "aborted") {
            let _ = write!(line, "  stopped here: {}", state.replace('_', " "));
        } else if i == current && state != "completed" {
            line.push_str(&current_detail(v, s));
        } else {
            let min_samples = s["min_samples"].as_u64().unwrap_or(0);
            let min_secs = s["min_secs"].as_f64().unwrap_or(0.0);
            let _ = write!(line, "  needs {min_samples} requests and {}", duration(min_secs));
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

/// The current step's progress: time and requests against its minimums.
fn current_detail(v: &Value, step: &Value) -> String {
    let active = v["phase_active_secs"].as_f64().unwrap_or(0.0);
    let min_secs = step["min_secs"].as_f64().unwrap_or(0.0);
    let min_samples = step["min_samples"].as_u64().unwrap_or(0);
    let seen = candidate_requests(v);
    let mut d = format!(
        "  now: {} of at least {}, {seen} of {min_samples} canary requests",
        duration(active),
        duration(min_secs)
    );
    if let Some(max) = step["max_secs"].as_f64() {
        let _ = write!(d, ", inconclusive after {}", duration(max));
    }
    d
}

/// What holds the current step, and the projected time to its next decision: the minimums
/// still to run, and each metric that blocks promotion with the requests and time it needs at
/// the current traffic. Empty for a rollout that is not being analysed.
pub(crate) fn holds(v: &Value) -> String {
    let state = v["state"].as_str().unwrap_or_default();
    if !matches!(state, "monitoring" | "rolling_out" | "paused") {
        return String::new();
    }
    let mut out = String::new();
    if let Some(p) = v["paused_reason"].as_str() {
        let _ = writeln!(out, "held by: a pause ({p})");
    }
    let current = v["phase"].as_u64().and_then(|p| usize::try_from(p).ok()).unwrap_or(0);
    let step = &v["steps"][current];
    let active = v["phase_active_secs"].as_f64().unwrap_or(0.0);
    let mut wait: Option<f64> = None;
    if let Some(min_secs) = step["min_secs"].as_f64()
        && active < min_secs
    {
        let left = min_secs - active;
        let _ = writeln!(out, "held by: the step's minimum duration, {} to go", duration(left));
        wait = Some(left);
    }
    if let Some(min_samples) = step["min_samples"].as_u64() {
        let seen = candidate_requests(v);
        if seen < min_samples {
            let _ = writeln!(
                out,
                "held by: the step's minimum sample, {} more canary requests",
                min_samples - seen
            );
        }
    }
    for m in v["metrics"].as_array().into_iter().flatten() {
        if m["blocking"].as_bool() != Some(true) {
            continue;
        }
        let verdict = m["verdict"].as_str().unwrap_or("pending").replace('_', " ");
        let mut line =
            format!("held by: {} on {}: {verdict}", short(&m["metric"]), short(&m["arm"]));
        match (m["additional_requests"].as_u64(), m["eta_secs"].as_f64()) {
            (Some(n), Some(secs)) => {
                let _ = write!(
                    line,
                    ", about {n} more canary requests ({} at the current traffic)",
                    duration(secs)
                );
                wait = Some(wait.map_or(secs, |w| w.max(secs)));
            }
            (Some(n), None) => {
                let _ = write!(line, ", about {n} more canary requests (no canary traffic yet)");
            }
            _ => line.push_str(", no projection yet (too little data)"),
        }
        let _ = writeln!(out, "{line}");
    }
    if let Some(w) = wait {
        let _ = writeln!(out, "next decision: in about {} at the current traffic", duration(w));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn view(state: &str, phase: u64) -> Value {
        json!({
            "state": state, "phase": phase, "phase_active_secs": 30.0,
            "steps": [
                {"kind": "canary", "share_percent": 1.0, "role": "smoke", "min_samples": 100, "min_secs": 60, "max_secs": 3600},
                {"kind": "canary", "share_percent": 25.0, "role": "prove", "min_samples": 100, "min_secs": 60, "max_secs": 3600},
                {"kind": "canary", "share_percent": 100.0, "role": "watch", "min_samples": 1000, "min_secs": 600, "max_secs": 3600}
            ],
            "arms": [{"arm": "stable", "requests": 900}, {"arm": "canary", "requests": 40}],
            "metrics": [{"arm": "canary", "metric": "errors", "verdict": "pending", "blocking": true,
                         "additional_requests": 1200, "eta_secs": 240.0}]
        })
    }

    #[test]
    fn the_plan_marks_done_current_and_pending_steps() {
        let plan = step_plan(&view("monitoring", 1), false);
        let lines: Vec<&str> = plan.lines().collect();
        assert_eq!(lines[0], "steps:");
        assert!(lines[1].starts_with("  ✔  0      1%  smoke"), "{plan}");
        assert!(lines[2].starts_with("  ●  1     25%  prove"), "{plan}");
        assert!(
            lines[2].contains("now: 30s of at least 1m 0s, 40 of 100 canary requests"),
            "{plan}"
        );
        assert!(lines[3].starts_with("  ◌  2    100%  watch"), "{plan}");
        assert!(step_plan(&view("paused", 1), false).contains("॥  1"));
        let stopped = step_plan(&view("rolled_back", 1), false);
        assert!(
            stopped.contains("✖  1") && stopped.contains("stopped here: rolled back"),
            "{stopped}"
        );
        assert_eq!(step_plan(&view("completed", 2), false).matches('✔').count(), 3);
        let coloured = step_plan(&view("monitoring", 1), true);
        assert!(coloured.contains("\x1b[32m✔\x1b[0m"), "{coloured}");
        assert!(!plan.contains('\x1b'));
    }

    #[test]
    fn what_holds_the_step_is_said_with_a_projection() {
        let h = holds(&view("monitoring", 1));
        assert!(h.contains("minimum duration, 30s to go"), "{h}");
        assert!(h.contains("minimum sample, 60 more canary requests"), "{h}");
        assert!(
            h.contains("errors on canary: pending, about 1200 more canary requests (4m 0s"),
            "{h}"
        );
        assert!(h.contains("next decision: in about 4m 0s"), "{h}");
        assert!(holds(&view("completed", 2)).is_empty());
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(5.0), "5s");
        assert_eq!(duration(125.0), "2m 5s");
        assert_eq!(duration(7300.0), "2h 1m");
        assert_eq!(duration(200_000.0), "2d 7h");
        assert_eq!(duration(f64::NAN), "-");
    }
}
