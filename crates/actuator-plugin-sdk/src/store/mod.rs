//! Store plugins (feature `store`): serve any [`actuator_core::Store`] out of process or as a
//! cdylib, over the `store.*` methods of [`crate::wire::store`].
//!
//! A store plugin implements [`StorePlugin`]: its metadata, its typed config and an async
//! `open` that returns the store. Serve it with [`serve_store_stdio`] from `main`, or export it
//! from a cdylib with [`crate::export_store_plugin!`]; both run the store on a tokio runtime
//! of their own (in the library, for a cdylib) and answer calls concurrently.
//!
//! Every call returns only after the store's own method returned: a write is answered once
//! the store committed it, so the host acknowledges nothing the plugin has not made durable.

mod serve;
pub mod wire;

pub use serve::{StoreDispatcher, runtime_failed, serve_store_stdio, serve_store_stdio_announcing};

use actuator_core::Store;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::sync::Arc;

use crate::{PluginError, PluginMeta};

/// Store instances one plugin holds at most (a `configure` beyond it is refused).
pub const MAX_STORES: usize = 64;

/// Calls one store plugin runs at once, at most; further requests wait for a free place.
pub const MAX_CONCURRENT_CALLS: usize = 64;

/// A plugin that opens a [`Store`] from its config.
pub trait StorePlugin: Send + Sync + Sized + 'static {
    /// The config; derive `Deserialize` with `#[serde(deny_unknown_fields)]` and `JsonSchema`.
    type Config: DeserializeOwned + JsonSchema + Send;

    /// Name, version and kinds (made with [`PluginMeta::store`]).
    const META: PluginMeta;

    /// Opens the store (runs on the plugin's runtime). Refuse a bad value with
    /// [`PluginError::InvalidConfig`] naming the field.
    fn open(
        config: Self::Config,
    ) -> impl Future<Output = Result<Arc<dyn Store>, PluginError>> + Send;
}
