//! `actuator-bench`: measures the actuator and writes a markdown table.
//!
//! ```text
//! cargo run --release -p actuator-bench -- [--quick] [--strict] [--out PATH]
//! ```
//!
//! Each module appends rows (name | value | unit | baseline | ratio | target | verdict) to one
//! [`table::Table`]; the table is printed and written to `--out` (default
//! `bench-results/bench.md`). Baselines are measured in the same run, so ratios survive a noisy
//! machine better than absolute numbers. `--strict` exits with status 1 when a target is missed.
//!
//! To add a module: write `src/<name>.rs` with `pub(crate) fn run(opts: &Options, table: &mut
//! Table)` and call it from `main`.

mod http;
mod resolve;
mod rollback;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use crate::table::Table;

/// Command-line options shared by every module.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Fewer iterations, for a smoke run.
    pub(crate) quick: bool,
    /// Exit 1 when a target is missed.
    pub(crate) strict: bool,
    /// Where the markdown table goes.
    pub(crate) out: PathBuf,
}

const USAGE: &str = "usage: actuator-bench [--quick] [--strict] [--out PATH]";

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut opts =
        Options { quick: false, strict: false, out: PathBuf::from("bench-results/bench.md") };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => opts.quick = true,
            "--strict" => opts.strict = true,
            "--out" => {
                opts.out = args.next().map(PathBuf::from).ok_or("--out needs a path")?;
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    Ok(opts)
}

fn main() -> ExitCode {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let mut table = Table::default();
    resolve::run(&opts, &mut table);
    rollback::run(&opts, &mut table);
    http::run(&opts, &mut table);

    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let mode = if opts.quick { "quick" } else { "full" };
    let report = format!(
        "# actuator benchmarks\n\nmode: {mode}, cores available: {cores}, build: {}\n\n{}",
        if cfg!(debug_assertions) { "debug (numbers are not meaningful)" } else { "release" },
        table.to_markdown()
    );
    println!("{report}");
    if let Some(dir) = opts.out.parent().filter(|d| !d.as_os_str().is_empty())
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        eprintln!("cannot create {}: {e}; pass another --out", dir.display());
        return ExitCode::FAILURE;
    }
    if let Err(e) = std::fs::write(&opts.out, &report) {
        eprintln!("cannot write {}: {e}; pass another --out", opts.out.display());
        return ExitCode::FAILURE;
    }
    eprintln!("wrote {}", opts.out.display());
    let failures = table.failures();
    if opts.strict && !failures.is_empty() {
        eprintln!("targets missed: {}", failures.join(", "));
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::parse_args;

    fn args(a: &[&str]) -> impl Iterator<Item = String> {
        a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>().into_iter()
    }

    #[test]
    fn parses_flags() {
        let o = parse_args(args(&["--quick", "--out", "x.md"])).unwrap();
        assert!(o.quick && !o.strict);
        assert_eq!(o.out.to_str(), Some("x.md"));
        assert!(parse_args(args(&["--out"])).is_err());
        assert!(parse_args(args(&["--nope"])).is_err());
    }
}
