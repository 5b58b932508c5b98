//! Integration tests against the real `actuator` binary.

mod bad_input;
mod chaos;
mod cli;
mod crash;
mod observations;
mod ofrep;
mod rollouts;
mod rollouts_cli;
mod validity;
