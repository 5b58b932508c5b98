//! The embedded default [`Store`](actuator_core::Store) of the actuator: one SQLite file.
//!
//! * WAL journal, `synchronous=FULL`: a write acknowledged to the caller survives a crash.
//! * Every write is one `BEGIN IMMEDIATE` transaction that also seals its audit entry into the
//!   hash chain and moves the chain's head, so the audit log always matches the data.
//! * The schema is migrated at open by migrations embedded in the binary.
//!
//! The plugin registers itself as the store named `sqlite`; its config is
//! `{ "path": "/var/lib/actuator/actuator.db" }`, with `path` defaulting to
//! `actuator.db` in the host's data directory.

mod factory;
mod faults;
mod observations;
mod rows;
mod store;
mod tokens;

use std::sync::Arc;

use actuator_core::plugin::{PluginError, Registry};

pub use factory::{DEFAULT_FILE_NAME, PLUGIN_NAME, SqliteConfig, SqliteStoreFactory};
pub use store::SqliteStore;

/// Adds the `sqlite` store plugin to `r`.
pub fn register(r: &mut Registry) -> Result<(), PluginError> {
    r.add_store(Arc::new(SqliteStoreFactory))
}

inventory::submit! { actuator_core::Registration { register } }
