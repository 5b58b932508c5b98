//! `actuator-bench`: measures the actuator and writes a markdown table.
//!
//! ```text
//! cargo run --release -p actuator-bench -- [--quick] [--strict] [--scale N] [--audit-entries N] [--only NAME] [--out PATH]
//! ```
//!
//! Each module appends rows (name | value | unit | baseline | ratio | target | verdict) to one
//! [`table::Table`]; the table is printed and written to `--out` (default
//! `bench-results/bench.md`). Baselines are measured in the same run, so ratios survive a noisy
//! machine better than absolute numbers. `--strict` exits with status 1 when a target is missed.
//!
//! To add a module: write `src/<name>.rs` with `pub(crate) fn run(opts: &Options, table: &mut
//! Table)` and call it from `main`.

mod audit;
mod engine_rig;
mod fanout;
// A global allocator is an `unsafe` trait; this module forwards every call to `System`.
#[allow(unsafe_code)]
mod heap;
mod http;
mod ingest;
mod resolve;
mod rollback;
mod scale;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use crate::table::Table;

/// Every allocation is counted, for the memory rows.
#[global_allocator]
static ALLOC: heap::Counting = heap::Counting;

/// Command-line options shared by every module.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Fewer iterations, for a smoke run.
    pub(crate) quick: bool,
    /// Exit 1 when a target is missed.
    pub(crate) strict: bool,
    /// Where the markdown table goes.
    pub(crate) out: PathBuf,
    /// Live rollouts of the scale rows (1,000 by default, 200 with `--quick`).
    pub(crate) scale: Option<usize>,
    /// Entries in the chain of the audit rows (100,000 by default, 10,000 with `--quick`).
    pub(crate) audit_entries: Option<u64>,
    /// Run only the module of this name (`resolve`, `rollback`, `http`, `scale`, `ingest`,
    /// `audit`, `fanout`).
    pub(crate) only: Option<String>,
}

const MODULES: [&str; 7] = ["resolve", "rollback", "http", "scale", "ingest", "audit", "fanout"];

const USAGE: &str = "usage: actuator-bench [--quick] [--strict] [--scale N] [--audit-entries N] [--only resolve|rollback|http|scale|ingest|audit|fanout] [--out PATH]";

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut opts = Options {
        quick: false,
        strict: false,
        out: PathBuf::from("bench-results/bench.md"),
        scale: None,
        audit_entries: None,
        only: None,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => opts.quick = true,
            "--strict" => opts.strict = true,
            "--out" => {
                opts.out = args.next().map(PathBuf::from).ok_or("--out needs a path")?;
            }
            "--scale" => {
                let n = args.next().ok_or("--scale needs a number of rollouts")?;
                let n: usize = n.parse().map_err(|_| format!("--scale: `{n}` is not a number"))?;
                if !(40..=1_000_000).contains(&n) {
                    return Err(format!("--scale must be between 40 and 1,000,000, got {n}"));
                }
                opts.scale = Some(n);
            }
            "--audit-entries" => {
                let n = args.next().ok_or("--audit-entries needs a number of entries")?;
                let n: u64 =
                    n.parse().map_err(|_| format!("--audit-entries: `{n}` is not a number"))?;
                if !(1_000..=10_000_000).contains(&n) {
                    return Err(format!(
                        "--audit-entries must be between 1,000 and 10,000,000, got {n}"
                    ));
                }
                opts.audit_entries = Some(n);
            }
            "--only" => {
                let m = args.next().ok_or("--only needs a module name")?;
                if !MODULES.contains(&m.as_str()) {
                    return Err(format!("--only: no module `{m}` (one of {})", MODULES.join(", ")));
                }
                opts.only = Some(m);
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
    let wanted = |m: &str| opts.only.as_deref().is_none_or(|o| o == m);
    if wanted("resolve") {
        resolve::run(&opts, &mut table);
    }
    if wanted("rollback") {
        rollback::run(&opts, &mut table);
    }
    if wanted("http") {
        http::run(&opts, &mut table);
    }
    if wanted("scale") {
        scale::run(&opts, &mut table);
    }
    if wanted("ingest") {
        ingest::run(&opts, &mut table);
    }
    if wanted("audit") {
        audit::run(&opts, &mut table);
    }
    if wanted("fanout") {
        fanout::run(&opts, &mut table);
    }

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
        let o = parse_args(args(&["--scale", "10000", "--only", "scale"])).unwrap();
        assert_eq!((o.scale, o.only.as_deref()), (Some(10_000), Some("scale")));
        assert!(parse_args(args(&["--scale", "3"])).unwrap_err().contains("between 40"));
        assert!(parse_args(args(&["--scale", "x"])).is_err());
        assert!(parse_args(args(&["--only", "nope"])).unwrap_err().contains("scale"));
        let o = parse_args(args(&["--audit-entries", "1000000", "--only", "audit"])).unwrap();
        assert_eq!((o.audit_entries, o.only.as_deref()), (Some(1_000_000), Some("audit")));
        assert!(parse_args(args(&["--audit-entries", "5"])).unwrap_err().contains("between 1,000"));
        assert!(parse_args(args(&["--audit-entries"])).is_err());
    }
}
