//! The `postgres` store plugin: its typed configuration and its [`StoreFactory`].

use std::ops::RangeInclusive;
use std::sync::Arc;

use actuator_core::plugin::{
    ApiVersion, HostContext, PluginError, PluginInfo, PluginKind, StoreFactory, parse_config,
};
use actuator_core::store::Store;
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;

use crate::PostgresStore;

/// The plugin's name in configuration files and in the registry.
pub const PLUGIN_NAME: &str = "postgres";

/// The environment variable read for the database URL when the config names none.
pub const URL_ENV: &str = "ACTUATOR_DATABASE_URL";

/// Read connections when the config names no number.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;

/// The accepted range of `max_connections`.
pub const MAX_CONNECTIONS_RANGE: RangeInclusive<u32> = 1..=100;

/// Configuration of the `postgres` store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// The database, `postgres://user:password@host:port/database`; the value of
    /// [`URL_ENV`] when absent. The database must exist; its tables are created.
    #[serde(default)]
    pub url: Option<String>,
    /// Connections for reads (writes have two more), in [`MAX_CONNECTIONS_RANGE`]; [`DEFAULT_MAX_CONNECTIONS`]
    /// when absent.
    #[serde(default)]
    pub max_connections: Option<u32>,
}

impl PostgresConfig {
    /// The JSON Schema of this configuration.
    pub fn schema() -> Value {
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "postgres store",
            "description": "A PostgreSQL store: one database on a PostgreSQL server, writes serialised by an advisory lock, hash-chained audit.",
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "url": {
                    "type": "string",
                    "minLength": 1,
                    "description": "The database: postgres://user:password@host:port/database. Default: the ACTUATOR_DATABASE_URL environment variable. The database must exist; the store creates its tables."
                },
                "max_connections": {
                    "type": "integer",
                    "minimum": *MAX_CONNECTIONS_RANGE.start(),
                    "maximum": *MAX_CONNECTIONS_RANGE.end(),
                    "description": "Connections for reads (writes have two more of their own). Default: 10."
                }
            }
        })
    }

    /// The URL to connect to: the configured one, else `env` (the value of [`URL_ENV`]).
    /// An error names the field and the variable when neither is set, or the one that is
    /// empty or does not parse (the message never repeats the URL: it may hold a password).
    pub fn resolve(&self, env: Option<String>) -> Result<PgConnectOptions, PluginError> {
        let invalid = |message: String| PluginError::InvalidConfig {
            plugin: PLUGIN_NAME.to_owned(),
            field: "url".to_owned(),
            message,
        };
        let (url, from) = match (&self.url, env) {
            (Some(url), _) => (url.clone(), "url"),
            (None, Some(env)) => (env, URL_ENV),
            (None, None) => {
                return Err(invalid(format!(
                    "missing: set [store] config = {{ url = \"postgres://user@host:5432/database\" }} or the environment variable {URL_ENV}"
                )));
            }
        };
        if url.trim().is_empty() {
            return Err(invalid(format!("{from} is empty")));
        }
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(invalid(format!("{from} must start with postgres:// or postgresql://")));
        }
        url.parse::<PgConnectOptions>()
            .map_err(|e| invalid(format!("{from} is not a valid PostgreSQL URL: {}", redact(&e))))
    }
}

/// An error's text with anything after `://` up to `@` removed (a password in a URL).
fn redact(e: &dyn std::fmt::Display) -> String {
    let s = e.to_string();
    match (s.find("://"), s.rfind('@')) {
        (Some(a), Some(b)) if a + 3 < b => format!("{}://…{}", &s[..a], &s[b..]),
        _ => s,
    }
}

/// Where `options` points, without user or password: `host:port/database`.
fn describe(options: &PgConnectOptions) -> String {
    format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("(the user's database)")
    )
}

/// Builds [`PostgresStore`]s from configuration: the `postgres` [`StoreFactory`].
#[derive(Clone, Copy, Debug, Default)]
pub struct PostgresStoreFactory;

#[async_trait]
impl StoreFactory for PostgresStoreFactory {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            kind: PluginKind::Store,
            name: PLUGIN_NAME.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            api: ApiVersion::HOST,
            description:
                "PostgreSQL store (one database, serialised durable writes, hash-chained audit)"
                    .to_owned(),
            config_schema: PostgresConfig::schema(),
        }
    }

    /// Connects to the database. A `null` config counts as `{}`.
    async fn build(
        &self,
        config: Value,
        _host: &HostContext,
    ) -> Result<Arc<dyn Store>, PluginError> {
        Ok(Arc::new(Self::open(config).await?))
    }
}

impl PostgresStoreFactory {
    /// Connects to the database `config` names (as the plugin's config, `null` counting as
    /// `{}`), returning the concrete store: a replica fences it and runs its election on it.
    ///
    /// # Errors
    /// [`PluginError::InvalidConfig`] naming the field that is wrong, or
    /// [`PluginError::Failed`] when the database cannot be opened.
    pub async fn open(config: Value) -> Result<PostgresStore, PluginError> {
        let config = if config.is_null() { json!({}) } else { config };
        let config: PostgresConfig = parse_config(PLUGIN_NAME, config)?;
        let max = config.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if !MAX_CONNECTIONS_RANGE.contains(&max) {
            return Err(PluginError::InvalidConfig {
                plugin: PLUGIN_NAME.to_owned(),
                field: "max_connections".to_owned(),
                message: format!(
                    "{max} is out of range {}..={}",
                    MAX_CONNECTIONS_RANGE.start(),
                    MAX_CONNECTIONS_RANGE.end()
                ),
            });
        }
        let options = config.resolve(std::env::var(URL_ENV).ok())?;
        let target = describe(&options);
        let store =
            PostgresStore::connect_with(options, max).await.map_err(|e| PluginError::Failed {
                plugin: PLUGIN_NAME.to_owned(),
                message: format!("opening the database at {target}: {e}"),
            })?;
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_describes_the_plugin() {
        let info = PostgresStoreFactory.info();
        assert_eq!(info.name, "postgres");
        assert_eq!(info.kind, PluginKind::Store);
        assert_eq!(info.config_schema["properties"]["url"]["type"], "string");
        assert_eq!(info.config_schema["properties"]["max_connections"]["maximum"], 100);
        assert_eq!(info.config_schema["additionalProperties"], false);
    }

    fn message(e: PluginError) -> (String, String) {
        match e {
            PluginError::InvalidConfig { field, message, .. } => (field, message),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn the_url_comes_from_the_config_then_the_environment() {
        let set =
            PostgresConfig { url: Some("postgres://a@h1:5433/d1".into()), ..Default::default() };
        let o = set.resolve(Some("postgres://b@h2/d2".into())).unwrap();
        assert_eq!(describe(&o), "h1:5433/d1");
        let o = PostgresConfig::default().resolve(Some("postgres://b@h2/d2".into())).unwrap();
        assert_eq!(describe(&o), "h2:5432/d2");
        let (field, msg) = message(PostgresConfig::default().resolve(None).unwrap_err());
        assert_eq!(field, "url");
        assert!(msg.contains("missing") && msg.contains(URL_ENV), "{msg}");
        let (_, msg) = message(PostgresConfig::default().resolve(Some(" ".into())).unwrap_err());
        assert_eq!(msg, format!("{URL_ENV} is empty"));
        let bad = PostgresConfig { url: Some("mysql://x:secret@h/d".into()), ..Default::default() };
        let (field, msg) = message(bad.resolve(None).unwrap_err());
        assert_eq!(field, "url");
        assert!(msg.contains("must start with postgres://") && !msg.contains("secret"), "{msg}");
    }
}
