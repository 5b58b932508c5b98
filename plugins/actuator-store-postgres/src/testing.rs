//! Throwaway databases for tests (feature `testing`): each [`TestDatabase`] is a fresh
//! database on the server at [`server_url`], dropped when the value is dropped (also when
//! the test panics).

use sqlx::{Connection, Executor, PgConnection};

/// The environment variable naming the server tests use; default
/// `postgres://postgres@127.0.0.1:5432` (the local server CI starts, trust auth).
pub const SERVER_ENV: &str = "ACTUATOR_TEST_POSTGRES_URL";

/// The server tests create their databases on: [`SERVER_ENV`], or the local default.
pub fn server_url() -> String {
    std::env::var(SERVER_ENV).unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// Whether a missing server fails the test rather than skipping it: under CI (`CI` set), or
/// when `ACTUATOR_REQUIRE_POSTGRES` is set.
pub fn server_required() -> bool {
    std::env::var_os("CI").is_some() || std::env::var_os("ACTUATOR_REQUIRE_POSTGRES").is_some()
}

/// A database created for one test and dropped (`WITH (FORCE)`, closing the connections
/// still open) when this value is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
}

impl TestDatabase {
    /// Creates `actuator_test_<random>` on the server. `None` (after saying so on stderr)
    /// when no server answers and none is [required](server_required); panics when one is.
    pub async fn create() -> Option<Self> {
        let server = server_url();
        let mut admin = match PgConnection::connect(&format!("{server}/postgres")).await {
            Ok(c) => c,
            Err(e) if !server_required() => {
                eprintln!(
                    "skipped: no PostgreSQL answers at {server} ({e}); set {SERVER_ENV} to run the PostgreSQL tests (CI runs them)"
                );
                return None;
            }
            Err(e) => panic!("PostgreSQL is required (CI) but {server} does not answer: {e}"),
        };
        let name = format!("actuator_test_{}", uuid::Uuid::new_v4().simple());
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .await
            .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
        let _ = admin.close().await;
        Some(Self { url: format!("{server}/{name}"), name })
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on: a thread with its
        // own runtime drops the database.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                let mut admin =
                    PgConnection::connect(&format!("{}/postgres", server_url())).await?;
                admin
                    .execute(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                    )))
                    .await?;
                admin.close().await
            })
            .map_err(std::io::Error::other)
        })
        .join();
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: dropping test database {}: {e}", self.name),
            Err(_) => eprintln!("warning: dropping test database {} panicked", self.name),
        }
    }
}
