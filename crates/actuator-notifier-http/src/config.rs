//! Delivery settings and their ranges, queue directories, and URL checks.

use actuator_core::{HostContext, PluginError};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::ops::RangeInclusive;
use std::path::PathBuf;

/// How an [`Outbox`](crate::Outbox) delivers: every field optional, each with its range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Milliseconds one attempt may take, connecting included (100 to 60,000; default 5,000).
    pub timeout_ms: u64,
    /// Attempts per delivery before it is dropped (1 to 50; default 8).
    pub max_attempts: u32,
    /// The backoff after the first failure, in milliseconds (10 to 600,000; default 1,000);
    /// it doubles after each further failure.
    pub initial_backoff_ms: u64,
    /// The largest backoff, in milliseconds (`initial_backoff_ms` to 3,600,000; default
    /// 300,000). Each wait is drawn uniformly between 0 and the backoff (full jitter).
    pub max_backoff_ms: u64,
    /// Pending deliveries kept at most (1 to 10,000; default 1,000); when full, the oldest
    /// is dropped.
    pub queue_size: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            timeout_ms: 5_000,
            max_attempts: 8,
            initial_backoff_ms: 1_000,
            max_backoff_ms: 300_000,
            queue_size: 1_000,
        }
    }
}

/// The range of `timeout_ms`.
pub(crate) const TIMEOUT_MS: RangeInclusive<u64> = 100..=60_000;
/// The range of `max_attempts`.
pub(crate) const MAX_ATTEMPTS: RangeInclusive<u32> = 1..=50;
/// The range of `initial_backoff_ms`.
pub(crate) const INITIAL_BACKOFF_MS: RangeInclusive<u64> = 10..=600_000;
/// The largest `max_backoff_ms`.
pub(crate) const MAX_BACKOFF_MS: u64 = 3_600_000;
/// The range of `queue_size`.
pub(crate) const QUEUE_SIZE: RangeInclusive<usize> = 1..=10_000;

fn out_of_range(plugin: &str, field: &str, message: String) -> PluginError {
    PluginError::InvalidConfig { plugin: plugin.to_owned(), field: field.to_owned(), message }
}

impl DeliveryConfig {
    /// Checks every field against its range; the error names the field as
    /// `delivery.<field>`.
    pub fn validate(&self, plugin: &str) -> Result<(), PluginError> {
        if !TIMEOUT_MS.contains(&self.timeout_ms) {
            return Err(out_of_range(
                plugin,
                "delivery.timeout_ms",
                format!("{} is out of range 100..=60000 (milliseconds)", self.timeout_ms),
            ));
        }
        if !MAX_ATTEMPTS.contains(&self.max_attempts) {
            return Err(out_of_range(
                plugin,
                "delivery.max_attempts",
                format!("{} is out of range 1..=50", self.max_attempts),
            ));
        }
        if !INITIAL_BACKOFF_MS.contains(&self.initial_backoff_ms) {
            return Err(out_of_range(
                plugin,
                "delivery.initial_backoff_ms",
                format!("{} is out of range 10..=600000 (milliseconds)", self.initial_backoff_ms),
            ));
        }
        if self.max_backoff_ms < self.initial_backoff_ms || self.max_backoff_ms > MAX_BACKOFF_MS {
            return Err(out_of_range(
                plugin,
                "delivery.max_backoff_ms",
                format!(
                    "{} is out of range {}..=3600000 (milliseconds, at least initial_backoff_ms)",
                    self.max_backoff_ms, self.initial_backoff_ms
                ),
            ));
        }
        if !QUEUE_SIZE.contains(&self.queue_size) {
            return Err(out_of_range(
                plugin,
                "delivery.queue_size",
                format!("{} is out of range 1..=10000", self.queue_size),
            ));
        }
        Ok(())
    }

    /// The cap of the wait after `failures` failed attempts (1 or more): the initial backoff
    /// doubled per further failure, at most `max_backoff_ms`.
    pub(crate) fn backoff_cap_ms(&self, failures: u32) -> u64 {
        let doublings = failures.saturating_sub(1).min(40);
        self.initial_backoff_ms.saturating_mul(1u64 << doublings).min(self.max_backoff_ms)
    }
}

/// Checks that `value` (the config field `field` of `plugin`) is an absolute `http` or
/// `https` URL. The error never repeats the value, which may hold a secret.
pub fn check_url(plugin: &str, field: &str, value: &str) -> Result<reqwest::Url, PluginError> {
    let bad = |message: &str| PluginError::InvalidConfig {
        plugin: plugin.to_owned(),
        field: field.to_owned(),
        message: message.to_owned(),
    };
    let url = reqwest::Url::parse(value)
        .map_err(|e| bad(&format!("not a URL ({e}); expected http://host/path or https://…")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("the URL has no host"));
    }
    Ok(url)
}

/// The directory of a notifier's queue: `<data_dir>/notifier-queues/<plugin>-<name>`, where
/// `name` is `queue` when given (1 to 64 of `A-Z a-z 0-9 _ -`) or the first 12 hex digits of
/// the SHA-256 of `url`, so two notifiers of one plugin posting to different URLs keep
/// different queues and a restarted daemon finds its own.
pub fn queue_dir(
    host: &HostContext,
    plugin: &str,
    queue: Option<&str>,
    url: &str,
) -> Result<PathBuf, PluginError> {
    let name = match queue {
        Some(q) => {
            let ok = (1..=64).contains(&q.len())
                && q.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !ok {
                return Err(PluginError::InvalidConfig {
                    plugin: plugin.to_owned(),
                    field: "queue".into(),
                    message: format!(
                        "{q:?} must be 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'"
                    ),
                });
            }
            q.to_owned()
        }
        None => hex::encode(Sha256::digest(url.as_bytes()))[..12].to_owned(),
    };
    Ok(host.data_dir.join("notifier-queues").join(format!("{plugin}-{name}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_held_to_its_range_by_name() {
        DeliveryConfig::default().validate("webhook").unwrap();
        let cases = [
            (DeliveryConfig { timeout_ms: 99, ..Default::default() }, "delivery.timeout_ms"),
            (DeliveryConfig { timeout_ms: 60_001, ..Default::default() }, "delivery.timeout_ms"),
            (DeliveryConfig { max_attempts: 0, ..Default::default() }, "delivery.max_attempts"),
            (DeliveryConfig { max_attempts: 51, ..Default::default() }, "delivery.max_attempts"),
            (
                DeliveryConfig { initial_backoff_ms: 5, ..Default::default() },
                "delivery.initial_backoff_ms",
            ),
            (
                DeliveryConfig {
                    initial_backoff_ms: 2_000,
                    max_backoff_ms: 1_000,
                    ..Default::default()
                },
                "delivery.max_backoff_ms",
            ),
            (
                DeliveryConfig { max_backoff_ms: 3_600_001, ..Default::default() },
                "delivery.max_backoff_ms",
            ),
            (DeliveryConfig { queue_size: 0, ..Default::default() }, "delivery.queue_size"),
            (DeliveryConfig { queue_size: 10_001, ..Default::default() }, "delivery.queue_size"),
        ];
        for (cfg, field) in cases {
            match cfg.validate("webhook") {
                Err(PluginError::InvalidConfig { field: f, message, .. }) => {
                    assert_eq!(f, field, "{message}");
                    assert!(message.contains("out of range"), "{message}");
                }
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let c =
            DeliveryConfig { initial_backoff_ms: 100, max_backoff_ms: 1_000, ..Default::default() };
        let caps: Vec<u64> = (1..=6).map(|n| c.backoff_cap_ms(n)).collect();
        assert_eq!(caps, vec![100, 200, 400, 800, 1_000, 1_000]);
        assert_eq!(c.backoff_cap_ms(u32::MAX), 1_000);
    }

    #[test]
    fn urls_must_be_http_and_errors_do_not_echo_them() {
        assert!(check_url("slack", "webhook_url", "https://hooks.example.com/T/B/x").is_ok());
        for bad in ["ftp://x/y", "not a url", "https://"] {
            let err = check_url("slack", "webhook_url", bad).unwrap_err().to_string();
            assert!(err.contains("webhook_url"), "{err}");
        }
        let err = check_url("slack", "webhook_url", "mailto:secret-token").unwrap_err().to_string();
        assert!(!err.contains("secret-token"), "{err}");
    }

    #[test]
    fn queue_directories_are_per_plugin_and_url() {
        let host = HostContext { data_dir: PathBuf::from("/d") };
        let a = queue_dir(&host, "webhook", None, "http://a/").unwrap();
        let b = queue_dir(&host, "webhook", None, "http://b/").unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("/d/notifier-queues"));
        let named = queue_dir(&host, "webhook", Some("ops"), "http://a/").unwrap();
        assert_eq!(named, PathBuf::from("/d/notifier-queues/webhook-ops"));
        let err = queue_dir(&host, "webhook", Some("../x"), "http://a/").unwrap_err();
        assert!(err.to_string().contains("`queue`"), "{err}");
    }
}
