//! An example third-party store plugin of the actuator: the SQLite store, served over the
//! plugin protocol by `actuator-plugin-sdk`'s `store` feature.
//!
//! The same type is served as an executable (`src/main.rs`, the exec tier) and as a cdylib
//! (the `export_store_plugin!` below). A store of your own is served the same way: implement
//! `actuator_core::Store` (and pass `actuator_core::testing::conformance`), then write a
//! [`StorePlugin`] whose `open` builds it from its config.

use actuator_core::Store;
use actuator_plugin_sdk::store::StorePlugin;
use actuator_plugin_sdk::{PluginError, PluginMeta};
use actuator_store_sqlite::SqliteStore;
use schemars::JsonSchema;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;

/// The plugin's config.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The database file; created, with its parent directories, when missing. Required: the
    /// plugin has no data directory of its own.
    pub path: PathBuf,
}

/// The SQLite store as a third-party plugin.
#[derive(Debug)]
pub struct SqliteExample;

impl StorePlugin for SqliteExample {
    type Config = Config;
    const META: PluginMeta = PluginMeta::store("sqlite-example", env!("CARGO_PKG_VERSION"))
        .with_description("The SQLite store served as a third-party plugin (example)");

    async fn open(config: Config) -> Result<Arc<dyn Store>, PluginError> {
        if config.path.as_os_str().is_empty() {
            return Err(PluginError::InvalidConfig {
                field: "path".into(),
                message: "must not be empty".into(),
            });
        }
        let store = SqliteStore::open(&config.path)
            .await
            .map_err(|e| PluginError::failed(format!("opening {}: {e}", config.path.display())))?;
        Ok(Arc::new(store))
    }
}

actuator_plugin_sdk::export_store_plugin!(SqliteExample);
