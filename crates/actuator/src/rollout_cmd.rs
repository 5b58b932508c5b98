//! `actuator rollout …` and `actuator stats`: the rollout engine's HTTP API from the command line.

use anyhow::Context;
use serde_json::{Map, Value, json};
use std::time::Duration;

use crate::cli::{Output, Remote, RolloutCmd, RolloutId, StartArgs};
use crate::client::enc;
use crate::commands::{client, emit, more, paged, read_json};
use crate::output::{
    fnum, reason, rollback_field, rollout_line, rollout_rows, rollout_view, short, table, when,
};
use crate::watch::{Show, follow};

/// The canary phases used when `--min-samples` or `--min-duration` is given without `--phases`.
const DEFAULT_PHASES: [f64; 5] = [1.0, 5.0, 25.0, 50.0, 100.0];
/// The engine's default `max_duration_secs` of a phase.
const DEFAULT_MAX_PHASE_SECS: u64 = 3600;
/// Transitions shown by `rollout status`.
pub(crate) const TRANSITIONS_SHOWN: usize = 6;

pub(crate) async fn run(c: RolloutCmd) -> anyhow::Result<()> {
    match c {
        RolloutCmd::Start(args) => start(&args).await,
        RolloutCmd::List { all, slot, limit, cursor, remote } => {
            let mut path = paged("/v1/rollouts", limit, cursor.as_deref());
            if !all {
                path.push_str("&active=true");
            }
            if let Some(s) = &slot {
                path.push_str(&format!("&slot={}", enc(s)));
            }
            let v = client(&remote)?.get(&path).await?;
            emit(&remote, &v, |v| {
                let rows = rollout_rows(&v["items"]);
                if rows.is_empty() {
                    return if all {
                        "no rollouts\n".into()
                    } else {
                        "no active rollouts (--all lists finished ones too)\n".into()
                    };
                }
                table(
                    &["ID", "SLOT", "STRATEGY", "STATE", "PHASE", "SHARE", "VERSIONS", "UPDATED"],
                    &rows,
                ) + &more(v)
            });
            Ok(())
        }
        RolloutCmd::Status { id, watch: false, remote, .. } => {
            let v = client(&remote)?.get(&view_path(&id)).await?;
            emit(&remote, &v, |v| rollout_view(v, TRANSITIONS_SHOWN));
            Ok(())
        }
        RolloutCmd::Status { id, watch: true, timeout, remote } => {
            let c = client(&remote)?;
            let timeout = timeout.map(Duration::from_secs);
            tokio::select! {
                r = follow(&c, &remote, &id, Show::Redraw, timeout) => r,
                _ = tokio::signal::ctrl_c() => Ok(()),
            }
        }
        RolloutCmd::Explain(r) => {
            let v = client(&r.remote)?.get(&format!("{}/health", view_path(&r.id))).await?;
            emit(&r.remote, &v, crate::explain::render);
            Ok(())
        }
        RolloutCmd::Pause(c) => control(c.into(), "pause", "paused").await,
        RolloutCmd::Resume(c) => control(c.into(), "resume", "resumed").await,
        RolloutCmd::Skip(c) => control(c.into(), "skip", "skipped the phase").await,
        RolloutCmd::Abort(c) => control(c.into(), "abort", "aborted").await,
        RolloutCmd::Retry(c) => control(c.into(), "retry", "retrying").await,
        RolloutCmd::Promote { id, full, skip_analysis, reason, remote } => {
            let said = match (full, skip_analysis) {
                (true, true) => "promoted to 100% and completed",
                (true, false) => "promoted to the 100% step",
                _ => "promoted",
            };
            let body = json!({"full": full, "skip_analysis": skip_analysis, "reason": reason});
            control_with(RolloutId { id, remote }, "promote", body, said).await
        }
        RolloutCmd::Rollback { id, gradual, reason, remote } => {
            let body = json!({"reason": reason, "gradual": gradual});
            control_with(RolloutId { id, remote }, "rollback", body, "rolling back").await
        }
        RolloutCmd::History { limit, cursor, remote } => {
            let v = client(&remote)?.get(&paged("/v1/rollbacks", limit, cursor.as_deref())).await?;
            emit(&remote, &v, |v| {
                let rows = history_rows(&v["items"]);
                if rows.is_empty() {
                    return "no rollbacks\n".into();
                }
                table(
                    &[
                        "COMPLETED",
                        "ROLLOUT",
                        "SLOT",
                        "MODE",
                        "AUTOMATIC",
                        "SUCCESS",
                        "RESTORED",
                        "DURATION",
                        "REASON",
                    ],
                    &rows,
                ) + &more(v)
            });
            Ok(())
        }
    }
}

/// `actuator stats`.
pub(crate) async fn stats(remote: &Remote) -> anyhow::Result<()> {
    let v = client(remote)?.get("/v1/stats").await?;
    emit(remote, &v, |v| {
        let mut rows: Vec<Vec<String>> = [
            ("rollouts started", "total_deployments"),
            ("  completed", "successful_deployments"),
            ("  failed or rolled back", "failed_deployments"),
            ("  aborted", "aborted_deployments"),
            ("  active", "active_deployments"),
            ("rollbacks", "rollbacks"),
            ("  automatic", "automatic_rollbacks"),
            ("  manual", "manual_rollbacks"),
        ]
        .into_iter()
        .map(|(label, key)| vec![label.to_owned(), short(&v[key])])
        .collect();
        if let Some(by) = v["by_strategy"].as_object().filter(|m| !m.is_empty()) {
            rows.push(vec!["rollouts started by strategy".into(), String::new()]);
            for (strategy, n) in by {
                rows.push(vec![format!("  {strategy}"), short(n)]);
            }
        }
        table(&["COUNTER", "VALUE"], &rows)
    });
    Ok(())
}

/// `actuator cluster`: `GET /v1/cluster` as a few lines and a table of the replicas.
pub(crate) async fn cluster(remote: &Remote) -> anyhow::Result<()> {
    let v = client(remote)?.get("/v1/cluster").await?;
    emit(remote, &v, cluster_text);
    Ok(())
}

/// The human form of a `/v1/cluster` answer.
pub(crate) fn cluster_text(v: &serde_json::Value) -> String {
    let text = |x: &serde_json::Value| x.as_str().map_or_else(|| "-".to_owned(), str::to_owned);
    let me = &v["replica"];
    let mut out = format!(
        "this replica: {} ({}), last sync {}\n",
        text(&me["id"]),
        text(&me["role"]),
        text(&me["last_sync"])
    );
    let leader = &v["leader"];
    if leader.is_object() {
        out.push_str(&format!(
            "leader: {} at {}, epoch {}, since {}\n",
            text(&leader["id"]),
            text(&leader["url"]),
            short(&leader["epoch"]),
            text(&leader["since"])
        ));
    } else if me["role"] == "leader" {
        out.push_str("leader: this replica (single node: no cluster configured)\n");
    } else {
        out.push_str(
            "leader: none at the moment (an election is under way, or the store is unreachable)\n",
        );
    }
    let rows: Vec<Vec<String>> = v["replicas"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            vec![
                text(&r["id"]),
                text(&r["role"]),
                text(&r["url"]),
                text(&r["last_seen"]),
                text(&r["last_sync"]),
            ]
        })
        .collect();
    if !rows.is_empty() {
        out.push_str(&table(&["REPLICA", "ROLE", "URL", "LAST SEEN", "LAST SYNC"], &rows));
    }
    out
}

fn view_path(id: &str) -> String {
    format!("/v1/rollouts/{}", enc(id))
}

/// A control's id, reason and daemon.
pub(crate) struct Reasoned {
    id: String,
    reason: String,
    remote: Remote,
}

impl From<crate::cli::Control> for Reasoned {
    fn from(c: crate::cli::Control) -> Self {
        Self { id: c.id, reason: c.reason, remote: c.remote }
    }
}

impl From<crate::cli::ReasonedControl> for Reasoned {
    fn from(c: crate::cli::ReasonedControl) -> Self {
        Self { id: c.id, reason: c.reason, remote: c.remote }
    }
}

async fn control(c: Reasoned, action: &str, said: &str) -> anyhow::Result<()> {
    let body = json!({"reason": c.reason});
    control_with(RolloutId { id: c.id, remote: c.remote }, action, body, said).await
}

async fn control_with(r: RolloutId, action: &str, body: Value, said: &str) -> anyhow::Result<()> {
    let v = client(&r.remote)?.post(&format!("{}/{action}", view_path(&r.id)), &body).await?;
    emit(&r.remote, &v, |v| format!("{said}: {}", rollout_line(v)));
    Ok(())
}

async fn start(a: &StartArgs) -> anyhow::Result<()> {
    let body = match &a.file {
        Some(f) => read_json(f)?,
        None => start_request(a)?,
    };
    let c = client(&a.remote)?;
    let v = c.post("/v1/rollouts", &body).await?;
    if a.wait {
        let id = v["id"].as_str().context("the daemon answered without a rollout id")?.to_owned();
        if a.remote.output == Output::Human {
            println!(
                "started rollout {id}: {} of {} version {} (stable version {}); waiting for its outcome",
                short(&v["strategy"]),
                short(&v["slot"]),
                short(&v["candidate_version"]),
                short(&v["stable_version"]),
            );
        }
        let timeout = a.timeout.map(Duration::from_secs);
        return tokio::select! {
            r = follow(&c, &a.remote, &id, Show::Changes, timeout) => r,
            _ = tokio::signal::ctrl_c() => Ok(()),
        };
    }
    emit(&a.remote, &v, |v| {
        format!(
            "started rollout {}: {} of {} version {} (stable version {})\n{}follow it with `actuator rollout status {} --watch`\n",
            short(&v["id"]),
            short(&v["strategy"]),
            short(&v["slot"]),
            short(&v["candidate_version"]),
            short(&v["stable_version"]),
            rollout_line(v),
            short(&v["id"]),
        )
    });
    Ok(())
}

/// Builds a deployment request from the flags of `rollout start`.
pub(crate) fn start_request(a: &StartArgs) -> anyhow::Result<Value> {
    let slot = a.slot.as_deref().context("--slot is required without a request file")?;
    let strategy = a.strategy.context("--strategy is required without a request file")?;
    let candidate = match (&a.version, &a.document) {
        (Some(n), None) => json!({"version": n}),
        (None, Some(path)) => json!({"document": read_json(path)?}),
        _ => anyhow::bail!(
            "name the candidate with --version N (an existing version) or --document FILE (a new one)"
        ),
    };
    let mut req = Map::new();
    req.insert("slot".into(), json!(slot));
    req.insert("candidate".into(), candidate);
    req.insert("strategy".into(), json!(strategy.as_str()));
    if !a.phase.is_empty() {
        req.insert("canary".into(), json!({"phases": a.phase}));
    } else if !a.phases.is_empty() || a.min_samples.is_some() || a.min_duration.is_some() {
        let shares: &[f64] = if a.phases.is_empty() { &DEFAULT_PHASES } else { &a.phases };
        if let Some(bad) = shares.iter().find(|p| !(p.is_finite() && **p > 0.0 && **p <= 100.0)) {
            anyhow::bail!("--phases: every share must be a percentage in (0, 100], got {bad}");
        }
        let phases: Vec<Value> = shares
            .iter()
            .map(|&p| {
                let mut phase = Map::new();
                phase.insert("traffic_percent".into(), json!(p));
                if let Some(n) = a.min_samples {
                    phase.insert("min_samples".into(), json!(n));
                }
                if let Some(s) = a.min_duration {
                    phase.insert("min_duration_secs".into(), json!(s));
                    phase.insert("max_duration_secs".into(), json!(s.max(DEFAULT_MAX_PHASE_SECS)));
                }
                Value::Object(phase)
            })
            .collect();
        req.insert("canary".into(), json!({"phases": phases}));
    }
    if a.gradual_rollback {
        req.insert("rollback_mode".into(), json!("gradual"));
    }
    if let Some(d) = &a.description {
        req.insert("description".into(), json!(d));
    }
    Ok(Value::Object(req))
}

fn history_rows(items: &Value) -> Vec<Vec<String>> {
    items
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            vec![
                when(rollback_field(r, "completed_at")),
                short(&r["rollout_id"]),
                short(&r["slot"]),
                short(&r["mode"]),
                yes_no(&r["automatic"]),
                match rollback_field(r, "success") {
                    Value::Null => "in progress".into(),
                    s => yes_no(s),
                },
                short(rollback_field(r, "restored_version")),
                rollback_field(r, "duration_ms")
                    .as_f64()
                    .map_or_else(|| "-".into(), |d| format!("{}ms", fnum(d))),
                reason(&r["reason"]),
            ]
        })
        .collect()
}

fn yes_no(v: &Value) -> String {
    match v.as_bool() {
        Some(true) => "yes".into(),
        Some(false) => "no".into(),
        None => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::{CommandFactory, Parser};

    fn parse(args: &[&str]) -> Result<StartArgs, clap::Error> {
        let cli = Cli::try_parse_from(
            ["actuator", "rollout", "start"].iter().chain(args).copied().collect::<Vec<_>>(),
        )?;
        match cli.command {
            crate::cli::Command::Rollout(RolloutCmd::Start(a)) => Ok(*a),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn grammar_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn diff_takes_its_slot_either_way() {
        use crate::cli::diff_args;
        let v = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(diff_args(&v(&["chat", "1", "2"]), None), Ok(("chat".into(), 1, 2)));
        assert_eq!(diff_args(&v(&["1", "2"]), Some("chat")), Ok(("chat".into(), 1, 2)));
        assert!(diff_args(&v(&["chat", "1", "2"]), Some("chat")).is_err());
        assert!(diff_args(&v(&["1", "2"]), None).unwrap_err().contains("SLOT FROM TO"));
        assert!(diff_args(&v(&["chat", "one", "2"]), None).unwrap_err().contains("\"one\""));
    }

    #[test]
    fn flags_build_a_deployment_request() {
        let a = parse(&[
            "--slot",
            "chat.default",
            "--strategy",
            "canary",
            "--version",
            "2",
            "--phases",
            "1,5,100",
            "--min-samples",
            "300",
            "--min-duration",
            "2",
            "--gradual-rollback",
            "--description",
            "cheaper",
        ])
        .unwrap();
        let r = start_request(&a).unwrap();
        assert_eq!(r["slot"], "chat.default");
        assert_eq!(r["strategy"], "canary");
        assert_eq!(r["candidate"], json!({"version": 2}));
        assert_eq!(r["rollback_mode"], "gradual");
        assert_eq!(r["description"], "cheaper");
        let phases = r["canary"]["phases"].as_array().unwrap();
        assert_eq!(phases.len(), 3);
        assert_eq!(
            phases[0],
            json!({"traffic_percent": 1.0, "min_samples": 300, "min_duration_secs": 2, "max_duration_secs": 3600})
        );
        assert_eq!(phases[2]["traffic_percent"], 100.0);

        let a = parse(&[
            "--slot",
            "s",
            "--strategy",
            "canary",
            "--version",
            "2",
            "--phase",
            "percent=5,min_samples=500,min_secs=600,max_secs=7200,unreachable=block",
            "--phase",
            "percent=50, role=prove, errors_abs=0.01, latency_ratio=1.2",
            "--phase",
            "percent=100",
        ])
        .unwrap();
        let r = start_request(&a).unwrap();
        assert_eq!(
            r["canary"]["phases"],
            json!([
                {"traffic_percent": 5.0, "min_samples": 500, "min_duration_secs": 600, "max_duration_secs": 7200, "unreachable": "block"},
                {"traffic_percent": 50.0, "role": "prove", "margins": {"errors_abs": 0.01, "latency_ratio": 1.2}},
                {"traffic_percent": 100.0}
            ])
        );
        for bad in
            ["min_secs=5", "percent=5,colour=red", "percent=five", "percent=5,min_samples=-1"]
        {
            let err =
                parse(&["--slot", "s", "--strategy", "canary", "--version", "2", "--phase", bad])
                    .unwrap_err()
                    .to_string();
            assert!(err.contains("--phase"), "{bad}: {err}");
        }
        assert!(
            parse(&[
                "--slot",
                "s",
                "--strategy",
                "canary",
                "--version",
                "2",
                "--phase",
                "percent=5",
                "--phases",
                "1,100"
            ])
            .is_err()
        );

        let a = parse(&["--slot", "s", "--strategy", "blue_green", "--version", "3"]).unwrap();
        let r = start_request(&a).unwrap();
        assert_eq!(r["strategy"], "blue_green");
        assert!(r.get("canary").is_none() && r.get("rollback_mode").is_none());

        let a = parse(&[
            "--slot",
            "s",
            "--strategy",
            "canary",
            "--min-samples",
            "10",
            "--version",
            "1",
        ])
        .unwrap();
        let r = start_request(&a).unwrap();
        assert_eq!(r["canary"]["phases"].as_array().unwrap().len(), DEFAULT_PHASES.len());
    }

    #[test]
    fn bad_start_flags_are_refused() {
        let a = parse(&["--slot", "s", "--strategy", "canary"]).unwrap();
        assert!(start_request(&a).unwrap_err().to_string().contains("--version N"));
        let a =
            parse(&["--slot", "s", "--strategy", "canary", "--version", "1", "--phases", "0,50"])
                .unwrap();
        assert!(start_request(&a).unwrap_err().to_string().contains("(0, 100]"));
        assert!(parse(&["--strategy", "canary", "--version", "1"]).is_err(), "--slot is required");
        assert!(parse(&["req.json", "--slot", "s"]).is_err(), "a file excludes the flags");
        assert!(parse(&["--slot", "s", "--strategy", "nope", "--version", "1"]).is_err());
        assert!(parse(&["req.json"]).is_ok());
    }

    #[test]
    fn the_cluster_view_names_the_leader_and_every_replica() {
        let v = serde_json::json!({
            "replica": {"id": "r1", "url": "http://10.0.0.2:8080", "role": "follower", "epoch": null, "last_sync": "2026-12-04T10:00:01Z"},
            "leader": {"id": "r0", "url": "http://10.0.0.1:8080", "epoch": 7, "since": "2026-12-04T09:00:00Z"},
            "replicas": [
                {"id": "r0", "url": "http://10.0.0.1:8080", "role": "leader", "last_seen": "2026-12-04T10:00:02Z", "last_sync": "2026-12-04T10:00:00Z"},
                {"id": "r1", "url": "http://10.0.0.2:8080", "role": "follower", "last_seen": "2026-12-04T10:00:02Z", "last_sync": null}
            ]
        });
        let text = super::cluster_text(&v);
        assert!(text.contains("this replica: r1 (follower)"), "{text}");
        assert!(
            text.contains(
                "leader: r0 at http://10.0.0.1:8080, epoch 7, since 2026-12-04T09:00:00Z"
            ),
            "{text}"
        );
        assert!(
            text.lines().any(|l| l.starts_with("r1")
                && l.contains("follower")
                && l.trim_end().ends_with('-')),
            "{text}"
        );
        let alone = serde_json::json!({"replica": {"id": "solo", "role": "leader"}, "leader": null, "replicas": []});
        assert!(super::cluster_text(&alone).contains("single node"));
        let electing = serde_json::json!({"replica": {"id": "r2", "role": "follower"}, "leader": null, "replicas": []});
        assert!(super::cluster_text(&electing).contains("none at the moment"));
    }
}
