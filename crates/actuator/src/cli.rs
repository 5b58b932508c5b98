//! Command-line grammar.

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
    /// List the compiled-in plugins.
    Plugins,
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

/// Options of every command that talks to a daemon.
#[derive(Debug, Args, Clone)]
pub(crate) struct Remote {
    /// The daemon's base URL.
    #[arg(long, env = "ACTUATOR_URL", default_value = "http://127.0.0.1:8080", global = true)]
    pub(crate) server: String,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Human, global = true)]
    pub(crate) output: Output,
    /// Who is acting (recorded in the audit log).
    #[arg(long, env = "ACTUATOR_ACTOR", global = true)]
    pub(crate) actor: Option<String>,
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
        #[command(flatten)]
        remote: Remote,
    },
    /// Show a slot and its active config.
    Get {
        /// Slot name.
        name: String,
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
        #[command(flatten)]
        remote: Remote,
    },
    /// List a slot's versions, newest first.
    History {
        /// Slot name.
        slot: String,
        /// Page size.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show what changed between two versions.
    Diff {
        /// Slot name.
        slot: String,
        /// Older version.
        from: u64,
        /// Newer version.
        to: u64,
        #[command(flatten)]
        remote: Remote,
    },
    /// Make an earlier version active again (default: the one before the active one).
    Revert {
        /// Slot name.
        slot: String,
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
        /// Slot name.
        slot: String,
        /// Label.
        #[arg(long, default_value = "")]
        label: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// List snapshots, newest first.
    List {
        /// Only this slot.
        slot: Option<String>,
        /// Page size.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        remote: Remote,
    },
    /// Restore a snapshot: its version becomes active again.
    Restore {
        /// Snapshot id.
        id: String,
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
        /// Only entries about this target (a slot, a rollout).
        #[arg(long)]
        target: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Verify the hash chain of the whole audit log.
    Verify {
        #[command(flatten)]
        remote: Remote,
    },
}
