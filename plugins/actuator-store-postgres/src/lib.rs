//! A PostgreSQL [`Store`](actuator_core::Store) of the actuator: the same contract as the
//! embedded SQLite store, kept in a database server.
//!
//! * Every write is one transaction that first takes the database's write lock (a
//!   transaction-scoped advisory lock), so the admission rules, one rollout per slot and the
//!   audit chain's order hold under concurrent writers, in this process or in others.
//! * Each write seals its audit entry into the hash chain and moves the chain's head in the
//!   same transaction, so the audit log always matches the data.
//! * The schema is migrated at connect by migrations embedded in the binary.
//!
//! The plugin registers itself as the store named `postgres`; its config is
//! `{ "url": "postgres://user@host:5432/actuator" }`, with the URL taken from the
//! `ACTUATOR_DATABASE_URL` environment variable when the config names none.

pub mod cluster;
mod factory;
mod faults;
mod observations;
mod rows;
mod store;
mod tokens;

#[cfg(feature = "testing")]
pub mod testing;

use std::sync::Arc;

use actuator_core::plugin::{PluginError, Registry};

pub use cluster::{ClusterNode, ClusterOptions, Fence, FenceState, Role};
pub use factory::{
    DEFAULT_MAX_CONNECTIONS, MAX_CONNECTIONS_RANGE, PLUGIN_NAME, PostgresConfig,
    PostgresStoreFactory, URL_ENV,
};
pub use store::{CHANGES_CHANNEL, PostgresStore, WRITE_LOCK_KEY};

/// Adds the `postgres` store plugin to `r`.
pub fn register(r: &mut Registry) -> Result<(), PluginError> {
    r.add_store(Arc::new(PostgresStoreFactory))
}

inventory::submit! { actuator_core::Registration { register } }
