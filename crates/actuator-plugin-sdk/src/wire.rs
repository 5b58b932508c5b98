//! The messages that cross the plugin boundary, identical for the exec and the cdylib tier.
//!
//! Every message is one JSON-RPC 2.0 object. Over stdio each is one line (UTF-8, `\n`
//! terminated, at most [`MAX_MESSAGE_BYTES`]); over the C ABI each is one buffer.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// The protocol name both sides announce in `hello`.
pub const PROTOCOL: &str = "actuator-plugin";

/// The JSON-RPC version string of every message.
pub const JSONRPC: &str = "2.0";

/// The largest message either side accepts, in bytes (1 MiB).
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// The environment variable an exec plugin finds the host's API version in (`1.0`).
pub const API_ENV: &str = "ACTUATOR_PLUGIN_API";

/// Method names.
pub mod method {
    /// Plugin → host, first message: who the plugin is. Host → plugin: who the host is.
    pub const HELLO: &str = "hello";
    /// Host → plugin: builds an instance from a config.
    pub const CONFIGURE: &str = "configure";
    /// Host → plugin: delivers one event to a notifier instance.
    pub const NOTIFY: &str = "notify";
    /// Host → plugin: evaluates a query on a metric source instance.
    pub const QUERY: &str = "query";
    /// Host → plugin: is the plugin (or one instance) well?
    pub const HEALTH: &str = "health";
    /// Host → plugin: stop; an exec plugin exits after answering.
    pub const SHUTDOWN: &str = "shutdown";
    /// Plugin → host notification: one log record.
    pub const LOG: &str = "log";
}

/// Error codes of [`RpcError`]: the JSON-RPC ones and the protocol's own.
pub mod code {
    /// The message is not JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// The message is JSON but not a JSON-RPC request.
    pub const INVALID_REQUEST: i64 = -32600;
    /// No such method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// The params do not fit the method.
    pub const INVALID_PARAMS: i64 = -32602;
    /// The config was refused; `data.field` names the culprit.
    pub const INVALID_CONFIG: i64 = -32001;
    /// The plugin tried and failed (delivery failed, the backend is down).
    pub const FAILED: i64 = -32002;
    /// The plugin panicked; the panic was caught at the boundary.
    pub const PANICKED: i64 = -32003;
    /// No configured instance has this id.
    pub const UNKNOWN_INSTANCE: i64 = -32004;
    /// The plugin does not implement the kind asked for.
    pub const UNSUPPORTED_KIND: i64 = -32005;
    /// A store refused or failed a call; `data.store_error` is the store's error,
    /// `{"kind": "conflict", "detail": {...}}` (see [`super::store`]).
    pub const STORE: i64 = -32006;
}

/// A protocol version: a host accepts a plugin of the same major whose minor is not newer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ApiVersion {
    /// Breaking changes bump this.
    pub major: u16,
    /// Additive changes bump this.
    pub minor: u16,
}

impl ApiVersion {
    /// The version this SDK speaks (and a host built with it accepts). 1.1 added the store
    /// kind (`store.*` methods); a store plugin announces it.
    pub const CURRENT: Self = Self { major: 1, minor: 1 };

    /// What a notifier or metric source announces: the first version with everything those
    /// kinds use, so hosts of 1.0 keep accepting them.
    pub const NOTIFIER_AND_METRIC_SOURCE: Self = Self { major: 1, minor: 0 };

    /// Whether a host speaking `self` accepts a plugin speaking `plugin`.
    pub fn accepts(self, plugin: Self) -> bool {
        self.major == plugin.major && plugin.minor <= self.minor
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The kinds of plugin the protocol serves.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Receives events (`notify`).
    Notifier,
    /// Answers scalar queries (`query`).
    MetricSource,
    /// Durable storage (`store.*`, since API 1.1).
    Store,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Notifier => "notifier",
            Self::MetricSource => "metric_source",
            Self::Store => "store",
        })
    }
}

/// The methods of the store kind: one per method of the actuator's `Store` trait, named
/// `store.<method>`, with named params (`instance` plus the method's arguments by their
/// names in the trait). A store error is answered with [`code::STORE`].
pub mod store {
    /// Every store method, in the order of the trait.
    pub const METHODS: &[&str] = &[
        "store.create_slot",
        "store.get_slot",
        "store.list_slots",
        "store.list_slots_with_active_versions",
        "store.append_version",
        "store.activate_version",
        "store.get_version",
        "store.list_versions",
        "store.create_snapshot",
        "store.get_snapshot",
        "store.list_snapshots",
        "store.append_audit",
        "store.list_audit",
        "store.audit_head",
        "store.verified_head",
        "store.set_verified_head",
        "store.verify_audit",
        "store.verify_audit_full",
        "store.acknowledge_audit",
        "store.create_token",
        "store.list_tokens",
        "store.revoke_token",
        "store.readiness",
        "store.create_rollout",
        "store.get_rollout",
        "store.list_rollouts",
        "store.list_active_routes",
        "store.list_active_rollouts_encoded",
        "store.rollout_counts",
        "store.rollouts_with_batches",
        "store.save_rollout_status",
        "store.update_rollout",
        "store.append_observation_batches",
        "store.list_observation_batches",
        "store.checkpoint_rollout",
        "store.checkpoint_rollouts",
        "store.prune_observation_batches",
    ];
    /// Host → plugin: releases a store instance (its connections); the instance id is not
    /// valid afterwards.
    pub const CLOSE: &str = "store.close";
}

/// The plugin's part of `hello`: who it is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PluginDescriptor {
    /// Its name (`teams`).
    pub name: String,
    /// Its own semver version.
    pub version: String,
    /// The kinds it implements.
    pub kinds: Vec<Kind>,
    /// One line on what it does.
    #[serde(default)]
    pub description: String,
}

/// `hello` from the plugin: the first line an exec plugin writes, what a cdylib's
/// `manifest` returns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Hello {
    /// Always [`PROTOCOL`].
    pub protocol: String,
    /// The protocol version the plugin speaks.
    pub api: ApiVersion,
    /// Who the plugin is.
    pub plugin: PluginDescriptor,
    /// Optional capabilities (`health`).
    #[serde(default)]
    pub features: Vec<String>,
    /// JSON Schema of its config.
    pub config_schema: Value,
}

/// `hello` from the host, the answer to the plugin's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HostHello {
    /// Always [`PROTOCOL`].
    pub protocol: String,
    /// The protocol version the host speaks.
    pub api: ApiVersion,
    /// The host's optional capabilities (`log`).
    #[serde(default)]
    pub features: Vec<String>,
}

/// Params of `configure`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigureParams {
    /// The kind the host will use the instance as.
    pub kind: Kind,
    /// The name the operator gave it (`teams`), for the plugin's logs.
    pub name: String,
    /// The plugin's config, as the operator wrote it.
    pub config: Value,
}

/// Result of `configure`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ConfigureResult {
    /// The id later calls name.
    pub instance: u64,
}

/// How much an event matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Routine.
    Info,
    /// Worth a look.
    Warning,
    /// Someone should act.
    Critical,
}

/// An event as it crosses the boundary: a config applied, a rollout promoted or rolled back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Event {
    /// Dotted kind, the audit action (`config.apply`, `rollout.rollback`).
    pub kind: String,
    /// How much it matters.
    pub severity: Severity,
    /// When, RFC 3339 in UTC (`2026-01-31T12:00:00Z`).
    pub at: String,
    /// Who acted.
    pub actor: String,
    /// What it concerns (a slot or a rollout id).
    pub target: String,
    /// One line for a person.
    pub summary: String,
    /// Everything else, as the host gives it.
    #[serde(default)]
    pub details: Value,
}

/// Params of `notify`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifyParams {
    /// The instance from `configure`.
    pub instance: u64,
    /// The event.
    pub event: Event,
}

/// Params of `query`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryParams {
    /// The instance from `configure`.
    pub instance: u64,
    /// The query, in the source's own language.
    pub query: String,
}

/// Result of `query`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct QueryResult {
    /// The scalar, or `null` when the query has no data.
    pub value: Option<f64>,
}

/// Params of `health`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthParams {
    /// One instance, or the plugin as a whole when absent.
    #[serde(default)]
    pub instance: Option<u64>,
}

/// Result of `health`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HealthResult {
    /// Whether it is well.
    pub ok: bool,
    /// Why not, or anything worth showing.
    #[serde(default)]
    pub detail: Option<String>,
}

/// Log levels of a `log` record (and the `level` byte of the C ABI's logger, 1..=5).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    /// 1.
    Error,
    /// 2.
    Warn,
    /// 3.
    Info,
    /// 4.
    Debug,
    /// 5.
    Trace,
}

impl LogLevel {
    /// The C ABI's byte for this level.
    pub fn as_u8(self) -> u8 {
        match self {
            Self::Error => 1,
            Self::Warn => 2,
            Self::Info => 3,
            Self::Debug => 4,
            Self::Trace => 5,
        }
    }

    /// The level of a C ABI byte (unknown bytes count as `info`).
    pub fn from_u8(b: u8) -> Self {
        match b {
            1 => Self::Error,
            2 => Self::Warn,
            4 => Self::Debug,
            5 => Self::Trace,
            _ => Self::Info,
        }
    }
}

/// Params of the `log` notification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LogRecord {
    /// Its level.
    pub level: LogLevel,
    /// The plugin that wrote it.
    pub plugin: String,
    /// The text.
    pub message: String,
}

/// A JSON-RPC request (with an `id`) or notification (without).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Request {
    /// Always `"2.0"`.
    pub jsonrpc: String,
    /// Absent for a notification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// The method.
    pub method: String,
    /// Its params.
    #[serde(default)]
    pub params: Value,
}

impl Request {
    /// A request with an id.
    pub fn call(id: u64, method: &str, params: impl Serialize) -> Self {
        Self {
            jsonrpc: JSONRPC.to_owned(),
            id: Some(id),
            method: method.to_owned(),
            params: serde_json::to_value(params).unwrap_or(Value::Null),
        }
    }

    /// A notification (no answer expected).
    pub fn notification(method: &str, params: impl Serialize) -> Self {
        Self {
            jsonrpc: JSONRPC.to_owned(),
            id: None,
            method: method.to_owned(),
            params: serde_json::to_value(params).unwrap_or(Value::Null),
        }
    }
}

/// A JSON-RPC error object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RpcError {
    /// One of [`code`].
    pub code: i64,
    /// For a person.
    pub message: String,
    /// For `INVALID_CONFIG`: `{"field": "path"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl RpcError {
    /// An error without data.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), data: None }
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {})", self.message, self.code)
    }
}

impl std::error::Error for RpcError {}

/// A JSON-RPC response: `result` or `error`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Response {
    /// Always `"2.0"`.
    pub jsonrpc: String,
    /// The request's id (`null` when the request could not be read).
    pub id: Option<u64>,
    /// The result on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The error on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RpcError>,
}

impl Response {
    /// A success.
    pub fn ok(id: Option<u64>, result: impl Serialize) -> Self {
        Self {
            jsonrpc: JSONRPC.to_owned(),
            id,
            result: Some(serde_json::to_value(result).unwrap_or(Value::Null)),
            error: None,
        }
    }

    /// A failure.
    pub fn err(id: Option<u64>, error: RpcError) -> Self {
        Self { jsonrpc: JSONRPC.to_owned(), id, result: None, error: Some(error) }
    }

    /// The result, or the error.
    pub fn into_result(self) -> Result<Value, RpcError> {
        match (self.error, self.result) {
            (Some(e), _) => Err(e),
            (None, Some(v)) => Ok(v),
            (None, None) => Ok(Value::Null),
        }
    }
}

/// One line on the wire from the plugin: a response, or a notification (`hello`, `log`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PluginMessage {
    /// A notification.
    Notification(Request),
    /// An answer to a request.
    Response(Response),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_accepts_the_same_major_and_an_older_minor_only() {
        let host = ApiVersion { major: 1, minor: 2 };
        assert!(host.accepts(ApiVersion { major: 1, minor: 0 }));
        assert!(host.accepts(ApiVersion { major: 1, minor: 2 }));
        assert!(!host.accepts(ApiVersion { major: 1, minor: 3 }));
        assert!(!host.accepts(ApiVersion { major: 2, minor: 0 }));
        assert!(!host.accepts(ApiVersion { major: 0, minor: 2 }));
    }

    #[test]
    fn lines_from_a_plugin_are_told_apart() {
        let n: PluginMessage = serde_json::from_str(
            r#"{"jsonrpc":"2.0","method":"log","params":{"level":"info","plugin":"p","message":"m"}}"#,
        )
        .unwrap();
        assert!(matches!(n, PluginMessage::Notification(r) if r.method == "log"));
        let r: PluginMessage =
            serde_json::from_str(r#"{"jsonrpc":"2.0","id":3,"result":{"instance":1}}"#).unwrap();
        assert!(matches!(r, PluginMessage::Response(r) if r.id == Some(3)));
        let e: PluginMessage = serde_json::from_str(
            r#"{"jsonrpc":"2.0","id":4,"error":{"code":-32001,"message":"bad","data":{"field":"path"}}}"#,
        )
        .unwrap();
        let PluginMessage::Response(e) = e else { panic!("not a response") };
        assert_eq!(e.into_result().unwrap_err().code, code::INVALID_CONFIG);
    }

    #[test]
    fn log_levels_round_trip_through_their_bytes() {
        for l in [LogLevel::Error, LogLevel::Warn, LogLevel::Info, LogLevel::Debug, LogLevel::Trace]
        {
            assert_eq!(LogLevel::from_u8(l.as_u8()), l);
        }
        assert_eq!(LogLevel::from_u8(200), LogLevel::Info);
    }
}
