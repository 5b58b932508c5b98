//! HTTP delivery for the actuator's notifiers.
//!
//! A notifier that posts to an HTTP receiver (the generic webhook, Slack, PagerDuty) builds
//! its body and hands it to an [`Outbox`]: [`Outbox::enqueue`] writes the delivery to the
//! queue's directory and returns, and one background task per outbox sends the queue in
//! order of due time, retrying failures with exponential backoff and full jitter. A hanging
//! or failing receiver therefore never delays the caller, pending deliveries survive a
//! restart, deliveries leave in the order they were queued (one being retried holds those
//! after it), and the queue never holds more than its configured size: when it is full the
//! oldest pending delivery is dropped, counted and logged.
//!
//! - [`DeliveryConfig`]: the timeout, attempts, backoff and queue size, each with its range.
//! - [`Outbox`]: the persisted queue and its delivery task.
//! - [`Signer`] and [`verify_signature`]: the `X-Actuator-Signature` HMAC-SHA256 header.
//! - [`RolloutContext`]: the rollout fields of an event's details, and the status link.

mod config;
mod context;
mod outbox;
mod signature;

pub use config::{DeliveryConfig, check_url, queue_dir};
pub use context::{RolloutContext, rollout_link};
pub use outbox::{
    DELIVERY_HEADER, Delivery, MAX_BODY_BYTES, Outbox, OutboxError, OutboxStats, TIMESTAMP_HEADER,
};
pub use signature::{SIGNATURE_HEADER, Signer, signed_material, verify_signature};
