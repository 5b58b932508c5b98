//! `cargo xtask`: the project's automation, in Rust so it runs wherever cargo does.
//!
//! - `ci`: rustfmt check, clippy with `-D warnings`, then `test`
//! - `test`: builds the `actuator` binary and the OpenFeature Python venv (`target/ofrep-venv`),
//!   then runs every test of the workspace
//! - `bench`: the benchmark table (release build), printed and written to `bench-results/`
//! - `sim`: the real engine over the default canary request in simulated time (release build),
//!   printed and written to `sim-results/` (markdown, CSV, JSON)
//! - `openapi`: writes `docs/openapi.json`, the API's OpenAPI document
//! - `ha`: three replicas over one PostgreSQL database with a canary and simulated traffic,
//!   for a local try of high availability
//! - `screenshot`: regenerates `docs/images/rollout-page.png` (the dashboard in headless
//!   Chromium, as the browser test drives it)
//!
//! `test` runs the dashboard's browser test (installing Debian's `chromium` and
//! `chromium-driver` when missing) and ends with schemathesis (installed in the same venv) fuzzing a live daemon over its
//! OpenAPI document with an operator token: no server error, every status and body as
//! documented.

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::Command;

mod browser;
mod fuzz;
mod ha;
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
        /// Live rollouts of the scale rows (1,000 by default, 200 with --quick).
        #[arg(long)]
        scale: Option<usize>,
        /// Only one module: resolve, rollback, http, scale, ingest, audit or fanout.
        #[arg(long)]
        only: Option<String>,
    },
    /// Simulate default canary rollouts through the real engine (release build); writes
    /// sim-results/sim.md, .csv and .json.
    Sim {
        /// Arguments for the simulator (e.g. --quick, --rollouts 2000, --scenario ref/).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Write docs/openapi.json from the server's types.
    Openapi,
    /// Regenerate docs/images/rollout-page.png: the dashboard's rollout page in headless
    /// Chromium, on a live daemon with a canary under simulated traffic.
    Screenshot,
    /// Only the schemathesis run of `test` (builds the binary first).
    Fuzz,
    /// Start replicas of the daemon over one PostgreSQL database (leader election, fencing,
    /// change fan-out), a canary and simulated traffic through a follower, for a local try.
    Ha(ha::HaArgs),
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

/// The independent OpenFeature clients the integration tests drive (pinned).
const OFREP_PY_PACKAGES: [&str; 3] =
    ["openfeature-sdk==0.10.0", "openfeature-provider-ofrep==0.3.0", "schemathesis==4.32.5"];

fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        Some(p) if p.is_absolute() => p,
        Some(p) => root().join(p),
        None => root().join("target"),
    }
}

/// Makes (or updates) `target/ofrep-venv` with the OpenFeature Python SDK and OFREP provider
/// and returns its interpreter.
fn ofrep_venv() -> anyhow::Result<PathBuf> {
    let venv = target_dir().join("ofrep-venv");
    let python = if cfg!(windows) {
        venv.join("Scripts").join("python.exe")
    } else {
        venv.join("bin").join("python")
    };
    if !python.exists() {
        let mut mk = Command::new("python3");
        mk.args(["-m", "venv"]).arg(&venv);
        run(mk).context("creating the Python venv (is python3-venv installed?)")?;
    }
    let mut pip = Command::new(&python);
    pip.args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"]);
    pip.args(OFREP_PY_PACKAGES);
    run(pip).context("installing the OpenFeature Python packages")?;
    Ok(python)
}

fn test(args: &[String]) -> anyhow::Result<()> {
    let mut build = cargo();
    build.args(["build", "-p", "actuator", "--bin", "actuator"]);
    run(build)?;
    // The plugin conformance suites (notifier, metric source, store) and the integration
    // tests load these as an executable and as a cdylib.
    let mut plugins = cargo();
    plugins.args([
        "build",
        "-p",
        "actuator-notifier-example",
        "-p",
        "actuator-store-example",
        "-p",
        "actuator-plugin-fixture-future",
        "-p",
        "actuator-plugin-fixture-badmagic",
    ]);
    run(plugins)?;
    let mut t = cargo();
    // The Python OpenFeature client test reads this; under CI it fails without it.
    match ofrep_venv() {
        Ok(python) => {
            t.env("ACTUATOR_TEST_PYTHON", python);
        }
        Err(e) if is_ci() => return Err(e),
        Err(e) => eprintln!("warning: {e:#}; the Python OpenFeature client test will be skipped"),
    }
    // The PostgreSQL store's tests (its conformance suite, tests/it/postgres.rs) use the
    // server at 127.0.0.1:5432 that .ci/run starts (or ACTUATOR_TEST_POSTGRES_URL); with `CI`
    // set they fail without one, elsewhere they say so and skip.
    if has_nextest() {
        t.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
    } else {
        t.args(["test", "--workspace", "--no-fail-fast"]);
    }
    t.args(args);
    run(t)?;
    let mut doc = cargo();
    doc.args(["test", "--workspace", "--doc"]);
    run(doc)?;
    if args.is_empty() {
        // The dashboard in a real browser (ignored by the plain test run above).
        browser::test_step()?;
        match ofrep_venv() {
            Ok(python) => fuzz::schemathesis(&python, &target_dir())?,
            Err(e) if is_ci() => return Err(e),
            Err(e) => eprintln!("warning: {e:#}; schemathesis skipped"),
        }
    }
    Ok(())
}

/// Installs `wrk` (the HTTP load generator of the throughput benchmark) with apt when it is
/// missing; without it the benchmark skips its HTTP rows.
fn ensure_wrk() {
    let has = |cmd: &str| Command::new(cmd).arg("--version").output().is_ok();
    if has("wrk") || !has("apt-get") {
        return;
    }
    let install = || Command::new("apt-get").args(["install", "-y", "-qq", "wrk"]).status();
    if !install().is_ok_and(|s| s.success()) {
        let _ = Command::new("apt-get").args(["update", "-qq"]).status();
        if !install().is_ok_and(|s| s.success()) {
            eprintln!("warning: could not install wrk; the HTTP benchmark rows will be skipped");
        }
    }
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
        Task::Screenshot => browser::screenshot(),
        Task::Ha(args) => ha::run_ha(args),
        Task::SimRun(args) => sim::run(args),
        Task::Fuzz => {
            let mut build = cargo();
            build.args(["build", "-p", "actuator", "--bin", "actuator"]);
            run(build)?;
            fuzz::schemathesis(&ofrep_venv()?, &target_dir())
        }
        Task::Openapi => {
            let doc = actuator_server::openapi::document();
            let text = serde_json::to_string_pretty(&doc).context("the OpenAPI document")? + "\n";
            let path = root().join("docs/openapi.json");
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", path.display());
            Ok(())
        }
        Task::Bench { quick, scale, only } => {
            if only.as_deref().is_none_or(|m| m == "http") {
                ensure_wrk();
            }
            if only.as_deref().is_none_or(|m| m == "fanout") {
                // The fan-out rows start replicas of the release daemon.
                let mut b = cargo();
                b.args(["build", "--release", "-p", "actuator", "--bin", "actuator"]);
                run(b)?;
            }
            let mut c = cargo();
            c.args(["run", "--release", "-p", "actuator-bench", "--bin", "actuator-bench", "--"]);
            c.args(["--out", "bench-results/bench.md"]);
            if quick {
                c.arg("--quick");
            }
            if let Some(n) = scale {
                c.args(["--scale", &n.to_string()]);
            }
            if let Some(m) = only {
                c.args(["--only", &m]);
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
