//! Promotion gates: webhooks a rollout asks before traffic moves (`pre_rollout`), before
//! each promotion (`confirm_promotion`) and after a rollback (`post_rollback`).
//!
//! These are the request's types only; the engine validates them (`gates[i].field` in its
//! errors), records what it awaits in the rollout's persisted status, and makes the calls on
//! tasks of their own.

use serde::{Deserialize, Serialize};

/// When a gate is asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GateKind {
    /// Before any traffic moves to the candidate: the rollout serves only the stable config
    /// until every `pre_rollout` gate allowed it.
    PreRollout,
    /// Before each promotion the analysis (or an inconclusive policy) decides: the candidate
    /// keeps its share until every `confirm_promotion` gate allowed the promotion.
    ConfirmPromotion,
    /// After the rollout rolled back: told, audited, never blocking anything.
    PostRollback,
}

impl GateKind {
    /// Stable string form (as in JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PreRollout => "pre_rollout",
            Self::ConfirmPromotion => "confirm_promotion",
            Self::PostRollback => "post_rollback",
        }
    }
}

/// What a `pre_rollout` or `confirm_promotion` gate that does not allow (a non-2xx answer,
/// a timeout, a connection error) does to the rollout.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum GateFailure {
    /// The rollout stays where it is and the gate is asked again after `retry_ms`.
    #[default]
    Hold,
    /// The rollout rolls back (its `rollback_mode`).
    Rollback,
}

/// One webhook gate of a rollout request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GateSpec {
    /// Unique within the request: 1 to 64 characters of letters, digits, `-`, `_` or `.`.
    pub name: String,
    /// When the gate is asked.
    pub kind: GateKind,
    /// Where the JSON payload is posted: an `http` or `https` URL of at most 2048 bytes.
    pub url: String,
    /// How long one call may take before it counts as a timeout, in milliseconds
    /// (100 to 60,000; 5,000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// What a refusal or a timeout does (`hold`, or `rollback`); ignored by `post_rollback`
    /// gates, whose failures are only audited.
    #[serde(default)]
    pub on_failure: GateFailure,
    /// How long a held gate waits before it is asked again, in milliseconds
    /// (100 to 3,600,000; 10,000).
    #[serde(default = "default_retry_ms")]
    pub retry_ms: u64,
    /// The name of an environment variable of the daemon that holds the HMAC-SHA256 secret
    /// signing each call (`X-Actuator-Signature`). Only the name is stored and shown; the
    /// value is read when a call is made. 1 to 128 characters of `A`-`Z`, `0`-`9`, `_`.
    #[serde(default)]
    pub secret_env: Option<String>,
}

/// The default of [`GateSpec::timeout_ms`].
pub fn default_timeout_ms() -> u64 {
    5_000
}

/// The default of [`GateSpec::retry_ms`].
pub fn default_retry_ms() -> u64 {
    10_000
}

/// Limits of the gates of one request.
pub mod limits {
    /// Gates per request.
    pub const MAX_GATES: usize = 10;
    /// Bytes of a gate's name.
    pub const MAX_NAME_BYTES: usize = 64;
    /// Bytes of a gate's URL.
    pub const MAX_URL_BYTES: usize = 2048;
    /// Bytes of a gate's `secret_env`.
    pub const MAX_ENV_BYTES: usize = 128;
    /// Range of `timeout_ms`.
    pub const TIMEOUT_MS: (u64, u64) = (100, 60_000);
    /// Range of `retry_ms`.
    pub const RETRY_MS: (u64, u64) = (100, 3_600_000);
}
