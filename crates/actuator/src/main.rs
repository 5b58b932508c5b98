//! `actuator`: the daemon, the demo, and the CLI that talks to a running daemon.

// Compiled-in plugins: naming each crate keeps its `inventory` registration in the binary.
use actuator_metrics_prometheus as _;
use actuator_notifier_log as _;
use actuator_notifier_pagerduty as _;
use actuator_notifier_slack as _;
use actuator_notifier_webhook as _;
use actuator_store_sqlite as _;

mod cli;
mod client;
mod commands;
mod daemon;
mod demo;
mod output;
mod settings;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
