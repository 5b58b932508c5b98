//! The `sqlite` store plugin: its typed configuration and its [`StoreFactory`].

use std::path::PathBuf;
use std::sync::Arc;

use actuator_core::plugin::{
    ApiVersion, HostContext, PluginError, PluginInfo, PluginKind, StoreFactory, parse_config,
};
use actuator_core::store::Store;
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::SqliteStore;

/// The plugin's name in configuration files and in the registry.
pub const PLUGIN_NAME: &str = "sqlite";

/// The file name used in the host's data directory when the config names no path.
pub const DEFAULT_FILE_NAME: &str = "actuator.db";

/// Configuration of the `sqlite` store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteConfig {
    /// The database file; `<data_dir>/actuator.db` when absent. Created, with its parent
    /// directories, when missing.
    #[serde(default)]
    pub path: Option<PathBuf>,
}

impl SqliteConfig {
    /// The file to open: the configured path, or the default one in `host.data_dir`.
    pub fn resolved_path(&self, host: &HostContext) -> PathBuf {
        self.path.clone().unwrap_or_else(|| host.data_dir.join(DEFAULT_FILE_NAME))
    }

    /// The JSON Schema of this configuration.
    pub fn schema() -> Value {
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "sqlite store",
            "description": "The embedded SQLite store: one database file, WAL mode, durable commits.",
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "path": {
                    "type": "string",
                    "minLength": 1,
                    "description": "The database file. Default: actuator.db in the daemon's data directory. Created with its parent directories when missing."
                }
            }
        })
    }
}

/// Builds [`SqliteStore`]s from configuration: the `sqlite` [`StoreFactory`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SqliteStoreFactory;

#[async_trait]
impl StoreFactory for SqliteStoreFactory {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            kind: PluginKind::Store,
            name: PLUGIN_NAME.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            api: ApiVersion::HOST,
            description:
                "Embedded SQLite store (one file, WAL, durable commits, hash-chained audit)"
                    .to_owned(),
            config_schema: SqliteConfig::schema(),
        }
    }

    /// Opens the store. A `null` config counts as `{}`.
    async fn build(
        &self,
        config: Value,
        host: &HostContext,
    ) -> Result<Arc<dyn Store>, PluginError> {
        let config = if config.is_null() { json!({}) } else { config };
        let config: SqliteConfig = parse_config(PLUGIN_NAME, config)?;
        if config.path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            return Err(PluginError::InvalidConfig {
                plugin: PLUGIN_NAME.to_owned(),
                field: "path".to_owned(),
                message: "must not be empty".to_owned(),
            });
        }
        let path = config.resolved_path(host);
        let store = SqliteStore::open(&path).await.map_err(|e| PluginError::Failed {
            plugin: PLUGIN_NAME.to_owned(),
            message: format!("opening {}: {e}", path.display()),
        })?;
        Ok(Arc::new(store))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_describes_the_plugin() {
        let info = SqliteStoreFactory.info();
        assert_eq!(info.name, "sqlite");
        assert_eq!(info.kind, PluginKind::Store);
        assert_eq!(info.config_schema["properties"]["path"]["type"], "string");
        assert_eq!(info.config_schema["additionalProperties"], false);
    }

    #[test]
    fn default_path_is_in_the_data_dir() {
        let host = HostContext { data_dir: PathBuf::from("/var/lib/actuator") };
        assert_eq!(
            SqliteConfig::default().resolved_path(&host),
            PathBuf::from("/var/lib/actuator/actuator.db")
        );
        let set = SqliteConfig { path: Some(PathBuf::from("/x/y.db")) };
        assert_eq!(set.resolved_path(&host), PathBuf::from("/x/y.db"));
    }
}
