//! `cargo xtask`: the project's automation, in Rust so it runs wherever cargo does.
//!
//! - `ci`: rustfmt check, clippy with `-D warnings`, then `test`
//! - `test`: builds the `actuator` binary, then runs every test of the workspace
//! - `bench`: the benchmark table (release build), printed and written to `bench-results/`
//! - `sim`: the statistics simulation (release build), printed and written to `sim-results/`

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::Command;

mod sim;

#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// rustfmt check, clippy -D warnings, and all tests.
    Ci,
    /// Build the binary and run all tests.
    Test {
        /// Extra arguments for the test runner (e.g. a filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Run the benchmarks (release) and write bench-results/bench.md.
    Bench {
        /// Shorter runs, for a quick look.
        #[arg(long)]
        quick: bool,
    },
    /// Run the statistics simulation (in a release build) and write sim-results/sim.md.
    Sim {
        /// Arguments for the simulator (e.g. --rollouts 2000, --quick).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The simulation itself (what `sim` runs, optimised).
    #[command(hide = true)]
    SimRun(sim::SimArgs),
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn run(mut c: Command) -> anyhow::Result<()> {
    eprintln!("$ {c:?}");
    let status = c.status().with_context(|| format!("starting {c:?}"))?;
    if !status.success() {
        bail!("{c:?} failed with {status}");
    }
    Ok(())
}

fn has_nextest() -> bool {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn test(args: &[String]) -> anyhow::Result<()> {
    let mut build = cargo();
    build.args(["build", "-p", "actuator", "--bin", "actuator"]);
    run(build)?;
    let mut t = cargo();
    if has_nextest() {
        t.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
    } else {
        t.args(["test", "--workspace", "--no-fail-fast"]);
    }
    t.args(args);
    run(t)?;
    let mut doc = cargo();
    doc.args(["test", "--workspace", "--doc"]);
    run(doc)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.task {
        Task::Ci => {
            let mut fmt = cargo();
            fmt.args(["fmt", "--all", "--check"]);
            run(fmt)?;
            let mut clippy = cargo();
            clippy.args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]);
            run(clippy)?;
            test(&[])
        }
        Task::Test { args } => test(&args),
        Task::SimRun(args) => sim::run(args),
        Task::Bench { quick } => {
            let mut c = cargo();
            c.args(["run", "--release", "-p", "actuator-bench", "--bin", "actuator-bench", "--"]);
            c.args(["--out", "bench-results/bench.md"]);
            if quick {
                c.arg("--quick");
            }
            run(c)
        }
        Task::Sim { args } => {
            let mut c = cargo();
            c.args(["run", "--release", "-p", "xtask", "--", "sim-run"]);
            c.args(args);
            run(c)
        }
    }
}
