//! `actuator`: the daemon, the demo, and the CLI that talks to a running daemon.

// Compiled-in plugins: naming each crate keeps its `inventory` registration in the binary.
use actuator_metrics_prometheus as _;
use actuator_notifier_log as _;
use actuator_notifier_pagerduty as _;
use actuator_notifier_slack as _;
use actuator_notifier_webhook as _;
use actuator_store_postgres as _;
use actuator_store_sqlite as _;

mod cli;
mod client;
mod cluster;
mod commands;
mod daemon;
mod demo;
mod explain;
mod output;
mod plan_view;
mod settings;
mod watch;

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
            // A follow that ends on a rolled-back, paused or timed-out rollout has its own
            // exit status (`watch::Exit`); every other error is status 1.
            if let Some(exit) = e.downcast_ref::<watch::Exit>() {
                if !exit.message.is_empty() {
                    eprintln!("{}", exit.message);
                }
                return std::process::ExitCode::from(exit.code);
            }
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
