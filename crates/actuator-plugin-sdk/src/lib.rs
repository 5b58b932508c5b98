//! Write plugins for the actuator without depending on the actuator itself.
//!
//! A plugin is a Rust type that implements [`Plugin`] and one or both of
//! [`NotifierPlugin`] and [`MetricSourcePlugin`], or (with the `store` feature) a
//! `store::StorePlugin` that opens any `actuator_core::Store`. The same type is served two
//! ways:
//!
//! - as an executable (the exec tier): `fn main() { actuator_plugin_sdk::serve_stdio::<MyPlugin>() }`,
//!   speaking line-delimited JSON-RPC 2.0 on stdin/stdout;
//! - as a shared library (the cdylib tier): `actuator_plugin_sdk::export_plugin!(MyPlugin);`,
//!   which exports the `#[repr(C)]` static `ACTUATOR_PLUGIN_V1`.
//!
//! Both tiers exchange the messages of [`wire`]; the README is the author's guide.
//!
//! ```
//! use actuator_plugin_sdk::{Event, NotifierPlugin, Plugin, PluginError, PluginMeta, log};
//!
//! #[derive(serde::Deserialize, schemars::JsonSchema)]
//! #[serde(deny_unknown_fields)]
//! pub struct Config {
//!     /// Where the messages go.
//!     pub channel: String,
//! }
//!
//! pub struct Teams {
//!     channel: String,
//! }
//!
//! impl Plugin for Teams {
//!     type Config = Config;
//!     const META: PluginMeta = PluginMeta::notifier("teams", "0.1.0");
//!
//!     fn new(config: Config) -> Result<Self, PluginError> {
//!         if config.channel.is_empty() {
//!             return Err(PluginError::InvalidConfig { field: "channel".into(), message: "is empty".into() });
//!         }
//!         Ok(Self { channel: config.channel })
//!     }
//!
//!     fn as_notifier(&self) -> Option<&dyn NotifierPlugin> {
//!         Some(self)
//!     }
//! }
//!
//! impl NotifierPlugin for Teams {
//!     fn notify(&self, event: &Event) -> Result<(), PluginError> {
//!         log::info(&format!("to {}: {} ({})", self.channel, event.summary, event.kind));
//!         Ok(())
//!     }
//! }
//!
//! actuator_plugin_sdk::export_plugin!(Teams);
//!
//! // The exec tier answers the same messages; here one configure, through the dispatcher.
//! let d = actuator_plugin_sdk::Dispatcher::<Teams>::default();
//! let answer = d.handle(br#"{"jsonrpc":"2.0","id":1,"method":"configure","params":{"kind":"notifier","name":"t","config":{"channel":""}}}"#);
//! let error = answer.and_then(|r| r.error).expect("an empty channel is refused");
//! assert_eq!(error.data.unwrap()["field"], "channel");
//! ```

pub mod abi;
pub mod config;
mod dispatch;
pub mod log;
mod stdio;
#[cfg(feature = "store")]
pub mod store;
pub mod wire;

pub use dispatch::{Dispatcher, MAX_INSTANCES};
pub use stdio::{serve_stdio, serve_stdio_announcing, serve_with};
pub use wire::{ApiVersion, Event, Kind, Severity};

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use std::fmt;

/// What a plugin tells the host about itself before it is configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PluginMeta {
    /// Its name (`teams`).
    pub name: &'static str,
    /// Its own version, usually `env!("CARGO_PKG_VERSION")`.
    pub version: &'static str,
    /// The kinds it implements.
    pub kinds: &'static [Kind],
    /// One line on what it does.
    pub description: &'static str,
}

impl PluginMeta {
    /// A notifier named `name` at `version`.
    pub const fn notifier(name: &'static str, version: &'static str) -> Self {
        Self { name, version, kinds: &[Kind::Notifier], description: "" }
    }

    /// A metric source named `name` at `version`.
    pub const fn metric_source(name: &'static str, version: &'static str) -> Self {
        Self { name, version, kinds: &[Kind::MetricSource], description: "" }
    }

    /// A store named `name` at `version` (served with the `store` feature).
    pub const fn store(name: &'static str, version: &'static str) -> Self {
        Self { name, version, kinds: &[Kind::Store], description: "" }
    }

    /// The same, implementing `kinds`.
    pub const fn with_kinds(self, kinds: &'static [Kind]) -> Self {
        Self { kinds, ..self }
    }

    /// The same, with a one-line description.
    pub const fn with_description(self, description: &'static str) -> Self {
        Self { description, ..self }
    }
}

/// What a plugin's calls can fail with.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PluginError {
    /// The config is wrong; `field` is the top-level field at fault (`.` for the whole).
    InvalidConfig {
        /// The field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The plugin tried and failed.
    Failed(String),
}

impl PluginError {
    /// A failure with this message.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::Failed(message.into())
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidConfig { field, message } => {
                write!(f, "invalid config at `{field}`: {message}")
            }
            Self::Failed(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for PluginError {}

/// A plugin: its metadata, its typed config, and how an instance is built.
///
/// Calls are synchronous and may come from several threads at once (cdylib tier), so an
/// instance is `Send + Sync`. The host times every call out; a call that blocks forever costs
/// the host a thread (cdylib) or a restart (exec).
pub trait Plugin: Send + Sync + Sized + 'static {
    /// The config; derive `Deserialize` with `#[serde(deny_unknown_fields)]` and `JsonSchema`.
    type Config: DeserializeOwned + JsonSchema;

    /// Name, version and kinds.
    const META: PluginMeta;

    /// Builds an instance from a checked config. Refuse a bad value with
    /// [`PluginError::InvalidConfig`] naming the field.
    fn new(config: Self::Config) -> Result<Self, PluginError>;

    /// Whether the instance is well (default: yes).
    fn health(&self) -> Result<(), PluginError> {
        Ok(())
    }

    /// This instance as a notifier; return `Some(self)` when you implement [`NotifierPlugin`].
    fn as_notifier(&self) -> Option<&dyn NotifierPlugin> {
        None
    }

    /// This instance as a metric source; return `Some(self)` when you implement
    /// [`MetricSourcePlugin`].
    fn as_metric_source(&self) -> Option<&dyn MetricSourcePlugin> {
        None
    }
}

/// A plugin that receives events.
pub trait NotifierPlugin: Send + Sync {
    /// Delivers one event. Return an error when it could not be delivered; the host logs it.
    fn notify(&self, event: &Event) -> Result<(), PluginError>;
}

/// A plugin that answers queries with one number.
pub trait MetricSourcePlugin: Send + Sync {
    /// Evaluates `query` now: a value, `None` when there is no data, or an error.
    fn query(&self, query: &str) -> Result<Option<f64>, PluginError>;
}
