//! Command-line grammar.

use actuator_core::DeploymentStrategy;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Safe rollouts of LLM configuration: versioned configs, canary analysis, rollback.
#[derive(Debug, Parser)]
#[command(name = "actuator", version, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the daemon (HTTP API on --listen, SQLite by default).
    Serve(ServeArgs),
    /// Start a daemon on a temporary SQLite file and walk through the main features.
    Demo(DemoArgs),
    /// Manage config slots.
    #[command(subcommand)]
    Slot(SlotCmd),
    /// Apply, inspect and revert config versions.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Take, list and restore snapshots.
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
    /// Read and verify the audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Create, list and revoke API tokens (admin).
    #[command(subcommand)]
    Token(TokenCmd),
    /// Start, watch and steer rollouts of a candidate config.
    #[command(subcommand)]
    Rollout(RolloutCmd),
    /// The daemon's rollout counters.
    Stats {
        #[command(flatten)]
        remote: Remote,
    },
    /// The replicas sharing the daemon's store: which one leads, since when, with which
    /// epoch, and when each last synchronised its routing table.
    Cluster {
        #[command(flatten)]
        remote: Remote,
    },
    /// Drive simulated LLM traffic against a running daemon (resolve, then report outcomes).
    #[command(long_about = SIMULATE_ABOUT)]
    Simulate(SimulateArgs),
    /// List the plugins.
    #[command(subcommand)]
    Plugins(PluginsCmd),
    /// Print a shell completion script on stdout, e.g.
    /// `actuator completions bash > /etc/bash_completion.d/actuator`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page on stdout (roff), or write one page per command into --dir.
    Man {
        /// Write `actuator.1`, `actuator-rollout.1`, `actuator-rollout-start.1`, … here.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// The long help of `actuator simulate`: the models and the `"sim"` overrides.
const SIMULATE_ABOUT: &str = "\
Drive simulated LLM traffic against a running daemon.

Every 200 ms, simulated users (user-0 .. user-N, the targeting keys) ask POST /v1/resolve
which config serves them; each request is answered by the model the served config names and
the outcome is reported with POST /v1/observations, tagged as the resolution said (rollout,
arm, phase, unit, in_experiment). A shadow directive also runs the candidate on a copy, reported as arm `shadow`.

Models, by the document's `model` field:
  gpt-4o        1% errors (10% of them timeouts at 10 s), median 400 ms (lognormal sigma 0.4),
                cost 0.004, quality 4.2 (sd 0.6), 30% of requests judged
  gpt-4o-mini   as gpt-4o, median 380 ms, cost 0.0012, quality 4.15
  tiny-fast     4% errors (half timeouts), median 700 ms (sigma 0.45), cost 0.0004,
                quality 3.6 (sd 0.8)
  anything else as gpt-4o, median 500 ms, cost 0.002, quality 4.0

A document may override its model with a `sim` object; each key is clamped to its range:
  error_rate 0..1, timeout_share 0..1, timeout_ms 1..3600000, refusal_rate 0..1,
  latency_median_ms 0.1..3600000, latency_sigma 0..5, cost 0..1e6, quality 1..5,
  quality_sd 0..4, judged_share 0..1
e.g. {\"model\": \"gpt-4o-mini\", \"sim\": {\"error_rate\": 0.05}} makes a bad candidate.";

#[derive(Debug, Subcommand)]
pub(crate) enum PluginsCmd {
    /// Every plugin of the running daemon (compiled in, exec and cdylib) with its kind, tier,
    /// version and health; with --compiled-in, the plugins built into this binary, without a
    /// daemon.
    List {
        /// List the plugins compiled into this binary instead of asking the daemon.
        #[arg(long)]
        compiled_in: bool,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// TOML settings file.
    #[arg(long, env = "ACTUATOR_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Address to listen on (overrides the file).
    #[arg(long, env = "ACTUATOR_LISTEN")]
    pub(crate) listen: Option<SocketAddr>,
    /// Directory for the SQLite database and other state (overrides the file).
    #[arg(long, env = "ACTUATOR_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Make an admin token named `admin` if the store has no admin token, and print its
    /// secret once on stdout.
    #[arg(long)]
    pub(crate) init_admin_token: bool,
    /// Log format on stderr, `text` or `json` (overrides the file's `log.format`). Text has
    /// colour only on a terminal without `NO_COLOR`.
    #[arg(long, env = "ACTUATOR_LOG_FORMAT", value_parser = ["text", "json"])]
    pub(crate) log_format: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Keep the demo daemon running at the end until Ctrl-C.
    #[arg(long)]
    pub(crate) keep_running: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq, Default)]
pub(crate) enum Output {
    /// Text for people.
    #[default]
    Human,
    /// The API's JSON, for scripts.
    Json,
}

/// The slot a command works on, named the same way everywhere: positionally (`config
/// history chat`) or with `--slot` (`config history --slot chat`), as `config apply` and
/// `rollout start` take it.
#[derive(Debug, Args, Clone)]
pub(crate) struct SlotArg {
    /// Slot name.
    #[arg(value_name = "SLOT", required_unless_present = "slot")]
    slot_name: Option<String>,
    /// Slot name (the same as the positional SLOT).
    #[arg(long = "slot", conflicts_with = "slot_name")]
    slot: Option<String>,
}

impl SlotArg {
    /// The slot's name, however it was given.
    pub(crate) fn name(&self) -> String {
        self.slot.clone().or_else(|| self.slot_name.clone()).unwrap_or_default()
    }
}

/// `config diff`'s positionals: `[SLOT] FROM TO`, the slot unless `--slot` gave it.
pub(crate) fn diff_args(args: &[String], slot: Option<&str>) -> Result<(String, u64, u64), String> {
    let (slot, from, to) = match (slot, args) {
        (Some(s), [from, to]) => (s.to_owned(), from, to),
        (None, [s, from, to]) => (s.clone(), from, to),
        (Some(_), _) => {
            return Err("with --slot, give FROM and TO: `config diff --slot S 1 2`".into());
        }
        (None, _) => return Err("give SLOT FROM TO (or --slot SLOT FROM TO)".into()),
    };
    let version =
        |v: &str| v.parse::<u64>().map_err(|_| format!("a version is a whole number, got {v:?}"));
    Ok((slot, version(from)?, version(to)?))
}

/// Options of every command that talks to a daemon.
#[derive(Debug, Args, Clone)]
pub(crate) struct Remote {
    /// The daemon's base URL.
    #[arg(long, env = "ACTUATOR_URL", default_value = "http://127.0.0.1:8080", global = true)]
    pub(crate) server: String,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Human, global = true)]
    pub(crate) output: Output,
    /// Who is acting, recorded in the audit log by a daemon that runs without tokens (with
    /// a token, the audit actor is the token's name).
    #[arg(long, env = "ACTUATOR_ACTOR", global = true)]
    pub(crate) actor: Option<String>,
    /// API token, sent as `Authorization: Bearer`.
    #[arg(long, env = "ACTUATOR_TOKEN", global = true, hide_env_values = true)]
    pub(crate) token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum SlotCmd {
    /// Create a slot.
    Create {
        /// Slot name, e.g. chat.default.
        name: String,
        /// Description.
        #[arg(long, default_value = "")]
        description: String,
        /// JSON Schema file every version must satisfy.
        #[arg(long)]
        schema: Option<PathBuf>,
        #[command(flatten)]
        remote: Remote,
    },
    /// List slots.
    List {
        /// Page size.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Where to continue: the cursor a previous page printed.
        #[arg(long)]
        cursor: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show a slot and its active config.
    Get {
        #[command(flatten)]
        slot: SlotArg,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCmd {
    /// Apply a config document (JSON file, or - for stdin) as the slot's next version.
    Apply {
        /// The JSON document, or an envelope {"slot", "document", "message"}.
        file: PathBuf,
        /// Slot (required unless the file is an envelope).
        #[arg(long)]
        slot: Option<String>,
        /// Why.
        #[arg(long, short, default_value = "")]
        message: String,
        /// Validate and show the diff without writing.
        #[arg(long)]
        dry_run: bool,
        /// Write a new version even when the document is already the slot's latest one
        /// (without it, re-applying the same document changes nothing and says so).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// List a slot's versions, newest first.
    History {
        #[command(flatten)]
        slot: SlotArg,
        /// Page size.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Where to continue: the cursor a previous page printed.
        #[arg(long)]
        cursor: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show what changed between two versions: `diff SLOT FROM TO` or `diff --slot SLOT FROM TO`.
    Diff {
        /// [SLOT] FROM TO: the slot (unless --slot names it), the older and the newer version.
        #[arg(value_name = "ARGS", num_args = 2..=3, required = true)]
        args: Vec<String>,
        /// Slot name (instead of the first positional).
        #[arg(long)]
        slot: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Make an earlier version active again (default: the one before the active one).
    Revert {
        #[command(flatten)]
        slot: SlotArg,
        /// Version to go back to.
        #[arg(long)]
        to: Option<u64>,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum SnapshotCmd {
    /// Snapshot a slot's active config.
    Create {
        #[command(flatten)]
        slot: SlotArg,
        /// Label.
        #[arg(long, default_value = "")]
        label: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// List snapshots, newest first.
    List {
        /// Only this slot.
        #[arg(value_name = "SLOT")]
        slot_name: Option<String>,
        /// Only this slot (the same as the positional SLOT).
        #[arg(long = "slot", conflicts_with = "slot_name")]
        slot: Option<String>,
        /// Page size.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Where to continue: the cursor a previous page printed.
        #[arg(long)]
        cursor: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Restore a snapshot: its version becomes active again.
    Restore {
        /// The snapshot: its id, a unique prefix of its id, or its label (when one snapshot
        /// has it).
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCmd {
    /// Create a token; its secret is printed once.
    Create {
        /// Unique name: the audit actor of everything done with the token.
        name: String,
        /// admin, operator, viewer or client.
        #[arg(long)]
        role: String,
        /// Use this secret (24 to 256 visible ASCII characters) instead of a generated one.
        #[arg(long, env = "ACTUATOR_NEW_TOKEN_SECRET", hide_env_values = true)]
        secret: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// List tokens (names and roles; never secrets).
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Revoke a token: it stops working at once on this daemon, within 5 s on others
    /// sharing the store.
    Revoke {
        /// The token's name.
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCmd {
    /// List audit entries, newest first.
    List {
        /// Page size.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Where to continue: the cursor a previous page printed.
        #[arg(long)]
        cursor: Option<String>,
        /// Only entries about this target (a slot, a rollout).
        #[arg(long)]
        target: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Verify the hash chain of the audit log: by default only the entries after the last
    /// verified head (the entries up to it are trusted); `--full` starts a verification of
    /// the whole chain as a background job on the daemon; `--job ID` shows a job.
    Verify {
        /// Verify the whole chain and every document it sealed, as a background job; prints
        /// the job's id (add `--wait` to follow it to the end).
        #[arg(long, conflicts_with = "job")]
        full: bool,
        /// Show the full verification job with this id.
        #[arg(long)]
        job: Option<String>,
        /// With `--full` or `--job`: poll the job until it ends, then print its report (and
        /// fail when the chain does not verify).
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Acknowledge the problems of a broken audit chain (writes are refused until then); the
    /// acknowledgement is itself an entry of the chain.
    Acknowledge {
        /// Why the problem is accepted (1 to 1024 bytes), kept in the audit log.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        remote: Remote,
    },
}

/// Parses a strategy name with the core's own list (`canary`, `immediate`, `blue_green`,
/// `rolling`, `shadow`, `ab_test`).
fn parse_strategy(s: &str) -> Result<DeploymentStrategy, String> {
    DeploymentStrategy::parse(s).ok_or_else(|| {
        let names: Vec<&str> = DeploymentStrategy::ALL.iter().map(|d| d.as_str()).collect();
        format!("unknown strategy {s:?}; use one of {}", names.join(", "))
    })
}

/// `actuator rollout start`: a deployment request from a file, or built from flags.
#[derive(Debug, Args)]
pub(crate) struct StartArgs {
    /// A deployment request JSON file (or - for stdin); without it, build one from the flags.
    pub(crate) file: Option<PathBuf>,
    /// Slot to change.
    #[arg(long, required_unless_present = "file", conflicts_with = "file")]
    pub(crate) slot: Option<String>,
    /// How to roll the candidate out.
    #[arg(long, value_parser = parse_strategy, required_unless_present = "file", conflicts_with = "file")]
    pub(crate) strategy: Option<DeploymentStrategy>,
    /// Roll out this existing version.
    #[arg(long, conflicts_with_all = ["file", "document"])]
    pub(crate) version: Option<u64>,
    /// Roll out this JSON document (written as the slot's next version, not activated).
    #[arg(long, conflicts_with = "file")]
    pub(crate) document: Option<PathBuf>,
    /// Traffic shares of the phases in percent, e.g. 1,5,25,50,100.
    #[arg(long, value_delimiter = ',', conflicts_with = "file")]
    pub(crate) phases: Vec<f64>,
    /// Candidate requests each phase needs before it may be promoted.
    #[arg(long, conflicts_with = "file")]
    pub(crate) min_samples: Option<u64>,
    /// Seconds each phase lasts at least.
    #[arg(long, conflicts_with = "file")]
    pub(crate) min_duration: Option<u64>,
    /// One canary phase with its own settings, repeated per phase in order, e.g.
    /// `--phase percent=5,min_samples=500,min_secs=600 --phase percent=25,role=prove,errors_abs=0.01`.
    /// Keys: percent (required), role (smoke|prove|watch), min_samples, min_secs, max_secs,
    /// errors_abs, errors_ratio, latency_ratio, cost_ratio, quality_abs (promotion margins),
    /// unreachable (ignore|block), on_inconclusive (hold|promote_if_no_alarm|rollback).
    #[arg(long = "phase", value_parser = parse_phase, conflicts_with_all = ["file", "phases", "min_samples", "min_duration"])]
    pub(crate) phase: Vec<serde_json::Value>,
    /// Roll back gradually (100 → 50 → 25 → 5 → 1 → 0) instead of all at once.
    #[arg(long, conflicts_with = "file")]
    pub(crate) gradual_rollback: bool,
    /// Why.
    #[arg(long, conflicts_with = "file")]
    pub(crate) description: Option<String>,
    /// Follow the rollout after starting it, one line per change, and exit like
    /// `rollout status --watch`: 0 completed, 1 rolled back, aborted or failed, 2 waiting
    /// for a person, 3 timed out.
    #[arg(long)]
    pub(crate) wait: bool,
    /// With --wait: give up after this many seconds (exit 3), 1 to 604800.
    #[arg(long, value_name = "SECS", requires = "wait", value_parser = clap::value_parser!(u64).range(1..=MAX_WAIT_SECS))]
    pub(crate) timeout: Option<u64>,
    #[command(flatten)]
    pub(crate) remote: Remote,
}

/// The longest `--timeout` of a watch or a wait: a week.
pub(crate) const MAX_WAIT_SECS: u64 = 7 * 24 * 3600;

#[derive(Debug, Subcommand)]
pub(crate) enum RolloutCmd {
    /// Start a rollout.
    #[command(disable_version_flag = true)]
    Start(Box<StartArgs>),
    /// List rollouts, newest first (active ones unless --all).
    List {
        /// Include finished rollouts.
        #[arg(long)]
        all: bool,
        /// Only this slot.
        #[arg(long)]
        slot: Option<String>,
        /// Page size.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Where to continue: the cursor a previous page printed.
        #[arg(long)]
        cursor: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show a rollout: arms, metrics, the last decision and transitions.
    Status {
        /// Rollout id.
        id: String,
        /// Redraw every second until the rollout completes (exit 0), rolls back, is aborted or
        /// fails (exit 1), or waits for a person: paused or awaiting a manual promotion (exit 2).
        /// A daemon restart does not end the watch: it reconnects.
        #[arg(long, short)]
        watch: bool,
        /// With --watch: give up after this many seconds (exit 3), 1 to 604800.
        #[arg(long, value_name = "SECS", requires = "watch", value_parser = clap::value_parser!(u64).range(1..=MAX_WAIT_SECS))]
        timeout: Option<u64>,
        #[command(flatten)]
        remote: Remote,
    },
    /// The full health report of the rollout's last look: every arm (TTFT and tokens too),
    /// every metric's evidence, the SLO guards, the minimums and what holds the step.
    Explain(RolloutId),
    /// Hold the rollout where it is; traffic shares stay as they are.
    Pause(Control),
    /// Continue a paused rollout.
    Resume(Control),
    /// Leave the current phase without its analysis.
    Skip(Control),
    /// Stop the rollout; the stable config serves all traffic again (--reason required).
    Abort(ReasonedControl),
    /// Start an aborted, rolled-back or failed rollout again from its first phase.
    Retry(Control),
    /// Move to the next phase now (or straight to 100% with --full).
    Promote {
        /// Rollout id.
        id: String,
        /// Go straight to the 100% step, which still watches the candidate before it becomes
        /// the stable config.
        #[arg(long)]
        full: bool,
        /// With --full: complete at once, without the 100% step's analysis.
        #[arg(long, requires = "full")]
        skip_analysis: bool,
        /// Why (recorded with the transition and in the audit log).
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Roll the candidate back (also a completed rollout, within its rollback window).
    Rollback {
        /// Rollout id.
        id: String,
        /// Step the share down gradually instead of all at once.
        #[arg(long)]
        gradual: bool,
        /// Why (required; recorded with the rollback and in the audit log).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// The rollback history, newest first.
    History {
        /// Page size.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Where to continue: the cursor a previous page printed.
        #[arg(long)]
        cursor: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
}

/// A rollout named by id.
#[derive(Debug, Args)]
pub(crate) struct RolloutId {
    /// Rollout id.
    pub(crate) id: String,
    #[command(flatten)]
    pub(crate) remote: Remote,
}

/// A manual control of a rollout, with the operator's reason (kept in the transition and the
/// audit log).
#[derive(Debug, Args)]
pub(crate) struct Control {
    /// Rollout id.
    pub(crate) id: String,
    /// Why (recorded with the transition and in the audit log).
    #[arg(long, default_value = "")]
    pub(crate) reason: String,
    #[command(flatten)]
    pub(crate) remote: Remote,
}

/// A control that ends the rollout's traffic on the candidate: a reason is required.
#[derive(Debug, Args)]
pub(crate) struct ReasonedControl {
    /// Rollout id.
    pub(crate) id: String,
    /// Why (required; recorded with the transition and in the audit log).
    #[arg(long)]
    pub(crate) reason: String,
    #[command(flatten)]
    pub(crate) remote: Remote,
}

/// `actuator simulate`: simulated users resolve configs and report outcomes.
#[derive(Debug, Args)]
pub(crate) struct SimulateArgs {
    /// Slot to send traffic to (repeat for several).
    #[arg(long = "slot", required = true)]
    pub(crate) slots: Vec<String>,
    /// Requests per second, over all slots.
    #[arg(long, default_value_t = 200)]
    pub(crate) rps: u32,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 60)]
    pub(crate) duration: u64,
    /// Number of distinct simulated users (targeting keys user-0 .. user-N). Few users make
    /// requests less independent, which the sample-ratio-mismatch guard may flag.
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) users: u32,
    /// Seed of the pseudo-random generator (default: from the clock).
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    #[command(flatten)]
    pub(crate) remote: Remote,
}

/// Parses one `--phase key=value,...` into a canary phase of the deployment request (the
/// daemon checks each value's range and names the field it refuses).
fn parse_phase(spec: &str) -> Result<serde_json::Value, String> {
    use serde_json::{Map, Value, json};
    let mut phase = Map::new();
    let mut margins = Map::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?}: expected key=value (e.g. percent=5)"))?;
        let (key, value) = (key.trim(), value.trim());
        let number = || {
            value
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| format!("{key}: expected a number, got {value:?}"))
        };
        let count = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{key}: expected a whole number, got {value:?}"))
        };
        match key {
            "percent" => {
                phase.insert("traffic_percent".into(), json!(number()?));
            }
            "min_samples" => {
                phase.insert("min_samples".into(), json!(count()?));
            }
            "min_secs" => {
                phase.insert("min_duration_secs".into(), json!(count()?));
            }
            "max_secs" => {
                phase.insert("max_duration_secs".into(), json!(count()?));
            }
            "role" | "unreachable" | "on_inconclusive" => {
                phase.insert(key.into(), Value::String(value.to_owned()));
            }
            "errors_abs" | "errors_ratio" | "latency_ratio" | "cost_ratio" | "quality_abs" => {
                margins.insert(key.into(), json!(number()?));
            }
            other => {
                return Err(format!(
                    "unknown phase key {other:?} (percent, role, min_samples, min_secs, max_secs, errors_abs, errors_ratio, latency_ratio, cost_ratio, quality_abs, unreachable, on_inconclusive)"
                ));
            }
        }
    }
    if !phase.contains_key("traffic_percent") {
        return Err("every --phase needs percent=N (the canary share in percent)".into());
    }
    if !margins.is_empty() {
        phase.insert("margins".into(), Value::Object(margins));
    }
    Ok(Value::Object(phase))
}
