//! The scenario grid: traffic profiles × candidates, each row labelled with what it is.

use serde::Serialize;

use super::traffic::{Baseline, Effect, Traffic, Users};

/// What the right outcome of a scenario is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Expect {
    /// Candidate ≡ control: it should complete; a rollback is a false rollback.
    Healthy,
    /// Candidate better on some metrics, worse on none: it must complete, never roll back.
    Better,
    /// Candidate worse: it should roll back before completing.
    Regression,
}

/// One row of the table.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Scenario {
    /// Short name, for `--scenario` (substring match) and the CSV.
    pub(crate) name: String,
    /// What the row is, for a person.
    pub(crate) label: String,
    /// The traffic.
    pub(crate) traffic: Traffic,
    /// The candidate.
    pub(crate) effect: Effect,
    /// The right outcome.
    pub(crate) expect: Expect,
}

const BASE: Baseline = Baseline { error_rate: 0.01, latency_median_ms: 400.0, latency_sigma: 0.6 };

fn traffic(rps: f64, baseline: Baseline) -> Traffic {
    Traffic { rps, baseline, diurnal: false, users: Users::Independent, judged: 0.05 }
}

fn candidates() -> [(&'static str, &'static str, Effect, Expect); 7] {
    [
        ("aa", "A/A (candidate ≡ control)", Effect::NONE, Expect::Healthy),
        (
            "better",
            "better: errors ×0.5, latency ×0.85, cost ×0.8",
            Effect { errors: 0.5, latency: 0.85, cost: 0.8, ..Effect::NONE },
            Expect::Better,
        ),
        ("err2", "errors ×2", Effect { errors: 2.0, ..Effect::NONE }, Expect::Regression),
        (
            "lat1.2",
            "latency median ×1.2",
            Effect { latency: 1.2, ..Effect::NONE },
            Expect::Regression,
        ),
        (
            "tail",
            "tail only: p99 ×1.5, same median",
            Effect { p99: 1.5, ..Effect::NONE },
            Expect::Regression,
        ),
        ("cost", "cost +25%", Effect { cost: 1.25, ..Effect::NONE }, Expect::Regression),
        (
            "qual",
            "quality −0.5 (5% judged)",
            Effect { quality: -0.5, ..Effect::NONE },
            Expect::Regression,
        ),
    ]
}

fn describe(t: &Traffic) -> String {
    let b = &t.baseline;
    let mut s = format!(
        "{} rps, errors {}%, latency median {} ms σ {} (p99 {:.0} ms)",
        t.rps,
        b.error_rate * 100.0,
        b.latency_median_ms,
        b.latency_sigma,
        b.p99_ms()
    );
    if t.diurnal {
        s.push_str(", diurnal drift");
    }
    if t.users == Users::Sticky {
        s.push_str(", sticky users");
    }
    s
}

/// Every scenario of the default run.
///
/// The full candidate list runs on the reference traffic (50 rps, 1% errors, latency 400 ms
/// σ 0.6, independent requests). The other profiles each change one thing and run A/A plus
/// the regressions that profile puts at risk: baselines of 0.3% and 5% errors (A/A, errors
/// ×2), latency 250 ms σ 0.5 (A/A), latency 800 ms σ 1.1 whose own p99 is 10 s (A/A, tail
/// regression), diurnal drift (A/A, errors ×2), sticky users (A/A, better, errors ×2), and 5
/// and 500 rps (A/A, errors ×2).
pub(crate) fn all() -> Vec<Scenario> {
    let mut out = Vec::new();
    let mut push = |tag: &str, t: Traffic, which: &[&str]| {
        for (key, label, effect, expect) in candidates() {
            if which.contains(&key) {
                out.push(Scenario {
                    name: format!("{tag}/{key}"),
                    label: format!("{label} — {}", describe(&t)),
                    traffic: t,
                    effect,
                    expect,
                });
            }
        }
    };
    let all = ["aa", "better", "err2", "lat1.2", "tail", "cost", "qual"];
    let pair = ["aa", "err2"];
    push("ref", traffic(50.0, BASE), &all);
    push("err0.3", traffic(50.0, Baseline { error_rate: 0.003, ..BASE }), &pair);
    push("err5", traffic(50.0, Baseline { error_rate: 0.05, ..BASE }), &pair);
    push(
        "lat250",
        traffic(50.0, Baseline { latency_median_ms: 250.0, latency_sigma: 0.5, ..BASE }),
        &["aa"],
    );
    push(
        "lat800",
        traffic(50.0, Baseline { latency_median_ms: 800.0, latency_sigma: 1.1, ..BASE }),
        &["aa", "tail"],
    );
    push("diurnal", Traffic { diurnal: true, ..traffic(50.0, BASE) }, &pair);
    push(
        "sticky",
        Traffic { users: Users::Sticky, ..traffic(50.0, BASE) },
        &["aa", "better", "err2"],
    );
    push("rps5", traffic(5.0, BASE), &pair);
    push("rps500", traffic(500.0, BASE), &pair);
    out
}
