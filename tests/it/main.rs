//! Integration tests against the real `actuator` binary.

mod ab_partial;
mod auth;
mod bad_input;
mod chaos;
mod cli;
mod cli_pipelines;
mod crash;
mod dashboard;
mod decisions;
mod durable_ingest;
mod hardening;
mod limits;
mod metrics;
mod notifiers;
mod observations;
mod ofrep;
mod plugins;
mod rollouts;
mod rollouts_cli;
mod secrets;
mod store_faults;
mod store_plugin;
mod store_races;
mod validity;
