//! [`SqliteStore`]: the [`Store`] trait over one SQLite file.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use actuator_core::audit::{
    AuditDraft, AuditEntry, AuditHead, AuditReport, GENESIS_HASH, truncate_to_micros,
};
use actuator_core::config::{ConfigVersion, NewSlot, Slot, SlotName, Snapshot};
use actuator_core::store::{
    Admission, AppendVersion, AuditQuery, CheckpointWrite, NewObservationBatch, NewRollout,
    NewSnapshot, ObservationBatch, Page, PageRequest, RolloutFilter, RolloutRecord, RolloutRoute,
    RolloutUpdate, Store, StoreError,
};
use actuator_core::token::{NewToken, TokenRecord};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlSafeStr, Sqlite, Transaction};

use crate::faults::{Faults, FileId};
use crate::rows::{
    self, Cols, backend, fmt_ts, to_i64, to_i64_checked, to_i64_saturating, to_json,
};

/// The SQL list of terminal rollout states, as in [`DeploymentState::is_terminal`]
/// (a unit test keeps the two in step; the migration's partial index repeats it).
///
/// [`DeploymentState::is_terminal`]: actuator_core::state::DeploymentState::is_terminal
macro_rules! terminal_states {
    () => {
        "('completed', 'rolled_back', 'failed', 'aborted')"
    };
}

/// How long a connection waits for a lock held by another connection or process.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Read connections of a file store.
const READERS: u32 = 4;

/// The embedded schema migrations, in order.
fn migrator() -> Migrator {
    Migrator::with_migrations(vec![
        Migration::new(
            1,
            "initial schema".into(),
            MigrationType::Simple,
            include_str!("../migrations/0001_initial.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            2,
            "observation batches".into(),
            MigrationType::Simple,
            include_str!("../migrations/0002_observation_batches.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            3,
            "admission and store faults".into(),
            MigrationType::Simple,
            include_str!("../migrations/0003_admission_and_faults.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            4,
            "aborted state".into(),
            MigrationType::Simple,
            include_str!("../migrations/0004_aborted_state.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            5,
            "api tokens".into(),
            MigrationType::Simple,
            include_str!("../migrations/0005_tokens.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            6,
            "audit verified head".into(),
            MigrationType::Simple,
            include_str!("../migrations/0006_audit_verified_head.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            7,
            "rollout route and rollback counts".into(),
            MigrationType::Simple,
            include_str!("../migrations/0007_rollout_route_and_counts.sql").into_sql_str(),
            false,
        ),
    ])
}

/// A [`Store`] kept in one SQLite database file.
///
/// The file is in WAL mode with `synchronous=FULL`, so a write acknowledged to the caller
/// survives a crash of the process or of the machine. Every write is one `BEGIN IMMEDIATE`
/// transaction on a single writer connection that also seals and inserts its audit entry and
/// moves the head of the audit chain; reads go through a small pool of read-only connections
/// and never wait for the writer.
///
/// Faults: a write that fails in the backend (disk full, I/O error) replaces the writer
/// connection, so no later write inherits a half-open transaction, and writes resume by
/// themselves when the cause is gone. Before every write the store checks that the database
/// file is still the one it opened (device and inode); if it was removed or replaced, writes
/// stop with [`StoreError::Unavailable`]. The audit chain is verified at open and by
/// [`Store::verify_audit`] (both incremental, from the verified head kept in the file) and by
/// [`Store::verify_audit_full`]; while it is broken and unacknowledged, writes stop with
/// [`StoreError::ChainBroken`]. [`Store::readiness`] reports all three.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    path: Option<PathBuf>,
    faults: Arc<Faults>,
    /// Held by a verification of the audit chain: one at a time, so two never move the
    /// verified head past each other.
    verifying: Arc<tokio::sync::Mutex<()>>,
}

impl SqliteStore {
    /// Opens (creating it, and its parent directories, when missing) the database at `path`
    /// and brings its schema up to date.
    ///
    /// Fails with [`StoreError::Backend`] when the file cannot be opened or was written by a
    /// newer version of this plugin.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent).await.map_err(|e| {
                StoreError::Backend(format!("sqlite: creating directory {}: {e}", parent.display()))
            })?;
        }
        let base = SqliteConnectOptions::new()
            .filename(path)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            .synchronous(SqliteSynchronous::Full);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(base.clone().create_if_missing(true).journal_mode(SqliteJournalMode::Wal))
            .await
            .map_err(|e| StoreError::Backend(format!("sqlite: opening {}: {e}", path.display())))?;
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&writer)
            .await
            .map_err(backend("reading the journal mode"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(
                path = %path.display(),
                journal_mode = %mode,
                "sqlite store could not switch to WAL mode; readers will wait for writers"
            );
        }
        Self::migrate(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .connect_with(base.read_only(true))
            .await
            .map_err(|e| {
                StoreError::Backend(format!("sqlite: opening {} to read: {e}", path.display()))
            })?;
        let id = FileId::read(path)
            .await
            .map_err(|e| StoreError::Backend(format!("sqlite: reading {}: {e}", path.display())))?
            .ok_or_else(|| {
                StoreError::Backend(format!("sqlite: {} vanished while opening", path.display()))
            })?;
        let faults = Arc::new(Faults::for_file(path.to_owned(), id));
        let store =
            Self { writer, reader, path: Some(path.to_owned()), faults, verifying: Arc::default() };
        store.verify_at_open().await;
        tracing::debug!(path = %path.display(), "sqlite store opened");
        Ok(store)
    }

    /// Verifies the audit chain when the store opens, incrementally: only the entries after
    /// the verified head (so a start does not re-walk a long log); a chain that cannot be read
    /// counts as broken.
    async fn verify_at_open(&self) {
        if let Err(e) = self.verify_audit().await {
            self.faults.set_chain(Some(format!("the audit log cannot be read: {e}")));
        }
    }

    /// Opens a fresh database that lives in memory and vanishes with the store (for tests
    /// and demos). It has a single connection shared by readers and the writer.
    pub async fn open_in_memory() -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(backend("configuring an in-memory database"))?
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(backend("opening an in-memory database"))?;
        Self::migrate(&pool).await?;
        Ok(Self {
            writer: pool.clone(),
            reader: pool,
            path: None,
            faults: Arc::default(),
            verifying: Arc::default(),
        })
    }

    /// Turns off (`true`) or back on (`false`) the fsync of every commit on the writer
    /// connection (`PRAGMA synchronous = OFF` / `FULL`), **for seeding a benchmark or a test
    /// database only**: while it is off, a write acknowledged to the caller may be lost by a
    /// crash of the machine (not of the process; WAL keeps the file consistent either way).
    ///
    /// It is not reachable from the plugin's configuration, so a daemon never runs with it;
    /// it lasts until it is turned back on or the writer connection is replaced (after a
    /// backend fault the fresh connection is durable again). Every call is logged at `warn`
    /// when it turns durability off.
    pub async fn set_unsynced_seeding(&self, unsynced: bool) -> Result<(), StoreError> {
        if self.path.is_none() {
            return Ok(());
        }
        let pragma =
            if unsynced { "PRAGMA synchronous = OFF" } else { "PRAGMA synchronous = FULL" };
        sqlx::raw_sql(pragma)
            .execute(&self.writer)
            .await
            .map_err(backend("setting synchronous"))?;
        if unsynced {
            tracing::warn!(
                path = ?self.path,
                "sqlite store: commits are not synced to disk (seeding only, not durable)"
            );
        }
        Ok(())
    }

    /// Whether the writer connection syncs every commit (`PRAGMA synchronous` is `FULL`).
    pub async fn synced(&self) -> Result<bool, StoreError> {
        let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&self.writer)
            .await
            .map_err(backend("reading synchronous"))?;
        Ok(level >= 2)
    }

    /// The database file; `None` for an in-memory store.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Closes every connection, waiting for those in use to be returned. Later calls on this
    /// store (or its clones) fail.
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }

    /// The pool of read connections.
    pub(crate) fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    async fn migrate(pool: &SqlitePool) -> Result<(), StoreError> {
        migrator()
            .run(pool)
            .await
            .map_err(|e| StoreError::Backend(format!("sqlite: migrating the schema: {e}")))
    }

    /// Runs the read `work`; when it fails in the backend, a database file that was removed
    /// or replaced is named instead (a reader connection opened after the file went away
    /// fails with "unable to open database file").
    async fn reading<T>(
        &self,
        work: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match work.await {
            Err(StoreError::Backend(e)) => {
                self.faults.check_file().await?;
                Err(StoreError::Backend(e))
            }
            other => other,
        }
    }

    /// Runs the write `work`: first checks that the store may write (file identity, and the
    /// chain unless `acknowledging`), then, when the backend fails, replaces the writer
    /// connection so the next write starts clean.
    pub(crate) async fn guarded<T>(
        &self,
        acknowledging: bool,
        work: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.faults.check_file().await?;
        if !acknowledging {
            self.faults.check_chain()?;
        }
        let out = work.await;
        match &out {
            Ok(_) => self.faults.write_ok(),
            Err(e @ (StoreError::Backend(_) | StoreError::Unavailable(_))) => {
                self.faults.write_failed(e);
                self.replace_writer().await;
            }
            Err(_) => {}
        }
        out
    }

    /// Closes the writer connection (rolling back whatever it holds); the pool opens a fresh
    /// one for the next write. An in-memory store keeps its only connection (closing it
    /// would drop the database) and rolls back instead.
    async fn replace_writer(&self) {
        if self.path.is_none() {
            let _ = sqlx::raw_sql("ROLLBACK").execute(&self.writer).await;
            return;
        }
        match tokio::time::timeout(BUSY_TIMEOUT, self.writer.acquire()).await {
            Ok(Ok(conn)) => {
                if let Err(e) = sqlx::Connection::close(conn.detach()).await {
                    tracing::warn!(error = %e, "sqlite store: closing the failed writer connection");
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "sqlite store: taking the writer connection"),
            Err(_) => tracing::warn!("sqlite store: the writer connection was busy; not replaced"),
        }
    }

    /// A small write that tells whether writes work again after a failure.
    async fn probe_write(&self) -> Result<(), StoreError> {
        self.guarded(false, async {
            let mut tx = self.begin_write().await?;
            sqlx::query(
                "INSERT INTO store_probe (id, at) VALUES (1, ?1) \
                 ON CONFLICT (id) DO UPDATE SET at = excluded.at",
            )
            .bind(fmt_ts(now()))
            .execute(&mut *tx)
            .await
            .map_err(backend("probing writes"))?;
            commit(tx).await
        })
        .await
    }

    /// Starts a write transaction, taking the database's write lock at once so two writers
    /// never deadlock upgrading read locks.
    pub(crate) async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        self.writer.begin_with("BEGIN IMMEDIATE").await.map_err(backend("beginning a write"))
    }
}

/// Now, to the microsecond the store keeps.
pub(crate) fn now() -> DateTime<Utc> {
    truncate_to_micros(Utc::now())
}

/// A page of at most `limit` items from `limit + 1` fetched ones, with the cursor taken from
/// the last item kept.
fn page_of<T>(mut items: Vec<T>, limit: u32, cursor: impl Fn(&T) -> String) -> Page<T> {
    let next = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(cursor)
    } else {
        None
    };
    Page { items, next_cursor: next }
}

fn not_found(what: String) -> StoreError {
    StoreError::NotFound { what }
}

/// Maps rows with `f`, stopping at the first corrupt one.
/// The cursor after a page of rollout rows fetched with one row more than `limit`: the
/// internal sequence number of the first row not returned, plus one (the next page holds the
/// rollouts below it). Drops that extra row.
fn next_rollout_cursor(
    rows: &mut Vec<SqliteRow>,
    limit: u32,
) -> Result<Option<String>, StoreError> {
    if rows.len() <= limit as usize {
        return Ok(None);
    }
    let first_left = Cols::new(&rows[limit as usize], "rollouts").u64("seq")?;
    rows.truncate(limit as usize);
    Ok(Some((first_left + 1).to_string()))
}

fn map_rows<T>(
    rows: &[SqliteRow],
    f: fn(&SqliteRow) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    rows.iter().map(f).collect()
}

async fn fetch_slot(conn: &mut SqliteConnection, name: &SlotName) -> Result<Slot, StoreError> {
    let row = sqlx::query("SELECT * FROM slots WHERE name = ?1")
        .bind(name.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(backend("reading a slot"))?
        .ok_or_else(|| not_found(format!("slot {name}")))?;
    rows::slot(&row)
}

async fn version_exists(
    conn: &mut SqliteConnection,
    slot: &SlotName,
    version: u64,
) -> Result<bool, StoreError> {
    let Some(version) = to_i64(version) else {
        return Ok(false);
    };
    let row = sqlx::query("SELECT 1 FROM versions WHERE slot = ?1 AND version = ?2")
        .bind(slot.as_str())
        .bind(version)
        .fetch_optional(&mut *conn)
        .await
        .map_err(backend("reading a version"))?;
    Ok(row.is_some())
}

/// Seals `draft` as the next entry of the chain and moves the head, inside the caller's
/// transaction.
pub(crate) async fn seal(
    conn: &mut SqliteConnection,
    draft: AuditDraft,
    at: DateTime<Utc>,
) -> Result<AuditEntry, StoreError> {
    let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
        .fetch_optional(&mut *conn)
        .await
        .map_err(backend("reading the audit head"))?;
    let (seq, prev_hash) = match head {
        Some(row) => {
            let c = Cols::new(&row, "audit_head");
            (c.u64("seq")?, c.text("hash")?)
        }
        None => (0, GENESIS_HASH.to_owned()),
    };
    let entry = draft.seal(seq + 1, uuid::Uuid::now_v7().to_string(), at, &prev_hash);
    let seq = to_i64_checked(entry.seq, "audit sequence number")?;
    let diff = entry.diff.as_ref().map(to_json).transpose()?;
    sqlx::query(
        "INSERT INTO audit (seq, id, at, actor, action, target, diff, outcome, error, metadata, \
         prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )
    .bind(seq)
    .bind(&entry.id)
    .bind(fmt_ts(entry.at))
    .bind(&entry.actor)
    .bind(&entry.action)
    .bind(&entry.target)
    .bind(diff)
    .bind(entry.outcome.as_str())
    .bind(&entry.error)
    .bind(to_json(&entry.metadata)?)
    .bind(&entry.prev_hash)
    .bind(&entry.hash)
    .execute(&mut *conn)
    .await
    .map_err(backend("writing an audit entry"))?;
    sqlx::query(
        "INSERT INTO audit_head (id, seq, hash) VALUES (1, ?1, ?2) \
         ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
    )
    .bind(seq)
    .bind(&entry.hash)
    .execute(&mut *conn)
    .await
    .map_err(backend("moving the audit head"))?;
    Ok(entry)
}

pub(crate) async fn commit(tx: Transaction<'static, Sqlite>) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    let r = tx.commit().await.map_err(backend("committing"));
    metrics::histogram!("actuator_store_commit_seconds", "store" => "sqlite")
        .record(started.elapsed().as_secs_f64());
    r
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_slot(&self, slot: NewSlot, audit: AuditDraft) -> Result<Slot, StoreError> {
        self.guarded(false, async move {
            let now = now();
            let schema = slot.schema.as_ref().map(to_json).transpose()?;
            let mut tx = self.begin_write().await?;
            let exists = sqlx::query("SELECT 1 FROM slots WHERE name = ?1")
                .bind(slot.name.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend("reading a slot"))?;
            if exists.is_some() {
                return Err(StoreError::AlreadyExists { what: format!("slot {}", slot.name) });
            }
            sqlx::query(
                "INSERT INTO slots (name, description, schema, active_version, latest_version, \
                 revision, created_at, updated_at) VALUES (?1, ?2, ?3, NULL, 0, 1, ?4, ?4)",
            )
            .bind(slot.name.as_str())
            .bind(&slot.description)
            .bind(schema)
            .bind(fmt_ts(now))
            .execute(&mut *tx)
            .await
            .map_err(backend("creating a slot"))?;
            seal(&mut tx, audit, now).await?;
            commit(tx).await?;
            Ok(Slot {
                name: slot.name,
                description: slot.description,
                schema: slot.schema,
                active_version: None,
                latest_version: 0,
                revision: 1,
                created_at: now,
                updated_at: now,
            })
        })
        .await
    }

    async fn get_slot(&self, name: &SlotName) -> Result<Option<Slot>, StoreError> {
        self.reading(async move {
            let row = sqlx::query("SELECT * FROM slots WHERE name = ?1")
                .bind(name.as_str())
                .fetch_optional(&self.reader)
                .await
                .map_err(backend("reading a slot"))?;
            row.as_ref().map(rows::slot).transpose()
        })
        .await
    }

    async fn list_slots(&self, page: PageRequest) -> Result<Page<Slot>, StoreError> {
        self.reading(async move {
            page.validate()?;
            let rows = sqlx::query(
                "SELECT * FROM slots WHERE (?1 IS NULL OR name > ?1) ORDER BY name ASC LIMIT ?2",
            )
            .bind(page.cursor.as_deref())
            .bind(i64::from(page.limit) + 1)
            .fetch_all(&self.reader)
            .await
            .map_err(backend("listing slots"))?;
            Ok(page_of(map_rows(&rows, rows::slot)?, page.limit, |s| s.name.to_string()))
        })
        .await
    }

    async fn list_slots_with_active_versions(
        &self,
        page: PageRequest,
    ) -> Result<Page<(Slot, Option<ConfigVersion>)>, StoreError> {
        let slots = self.list_slots(page).await?;
        let (Some(first), Some(last)) = (slots.items.first(), slots.items.last()) else {
            return Ok(Page { items: Vec::new(), next_cursor: slots.next_cursor });
        };
        let (first, last) = (first.name.to_string(), last.name.to_string());
        // The page's active versions in one read, through the versions' primary key.
        let rows = self
            .reading(async move {
                sqlx::query(
                    "SELECT v.* FROM slots s JOIN versions v \
                     ON v.slot = s.name AND v.version = s.active_version \
                     WHERE s.name >= ?1 AND s.name <= ?2",
                )
                .bind(first)
                .bind(last)
                .fetch_all(&self.reader)
                .await
                .map_err(backend("reading the active versions of a page of slots"))
            })
            .await?;
        let mut found: std::collections::HashMap<String, ConfigVersion> =
            std::collections::HashMap::with_capacity(rows.len());
        for row in &rows {
            let v = rows::version(row)?;
            found.insert(v.slot.to_string(), v);
        }
        let mut items = Vec::with_capacity(slots.items.len());
        for slot in slots.items {
            let v = match slot.active_version {
                None => None,
                // A write between the two reads moved the active version: read it alone.
                Some(a) => match found.remove(slot.name.as_str()) {
                    Some(v) if v.version == a => Some(v),
                    _ => self.get_version(&slot.name, a).await?,
                },
            };
            items.push((slot, v));
        }
        Ok(Page { items, next_cursor: slots.next_cursor })
    }

    async fn append_version(
        &self,
        req: AppendVersion,
        audit: AuditDraft,
    ) -> Result<ConfigVersion, StoreError> {
        self.guarded(false, async move {
            let now = now();
            let document = to_json(&req.document)?;
            let mut tx = self.begin_write().await?;
            let slot = fetch_slot(&mut tx, &req.slot).await?;
            if req.activate {
                ensure_not_held(&mut tx, &req.slot).await?;
            }
            if slot.latest_version != req.expected_latest {
                return Err(StoreError::Conflict {
                    what: format!("latest version of slot {}", req.slot),
                    expected: req.expected_latest,
                    actual: slot.latest_version,
                });
            }
            let version = slot.latest_version + 1;
            let version_i64 = to_i64_checked(version, "version")?;
            sqlx::query(
                "INSERT INTO versions (slot, version, document, author, message, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .bind(req.slot.as_str())
            .bind(version_i64)
            .bind(document)
            .bind(&req.author)
            .bind(&req.message)
            .bind(fmt_ts(now))
            .execute(&mut *tx)
            .await
            .map_err(backend("writing a version"))?;
            sqlx::query(
                "UPDATE slots SET latest_version = ?2, revision = revision + 1, updated_at = ?3, \
                 active_version = CASE WHEN ?4 THEN ?2 ELSE active_version END WHERE name = ?1",
            )
            .bind(req.slot.as_str())
            .bind(version_i64)
            .bind(fmt_ts(now))
            .bind(req.activate)
            .execute(&mut *tx)
            .await
            .map_err(backend("updating a slot"))?;
            seal(&mut tx, audit.with_document(&req.slot, version, &req.document), now).await?;
            commit(tx).await?;
            Ok(ConfigVersion {
                slot: req.slot,
                version,
                document: req.document,
                author: req.author,
                message: req.message,
                created_at: now,
            })
        })
        .await
    }

    async fn activate_version(
        &self,
        slot: &SlotName,
        expected_revision: u64,
        version: u64,
        audit: AuditDraft,
    ) -> Result<Slot, StoreError> {
        self.guarded(false, async move {
            let now = now();
            let mut tx = self.begin_write().await?;
            let mut current = fetch_slot(&mut tx, slot).await?;
            if !version_exists(&mut tx, slot, version).await? {
                return Err(not_found(format!("version {version} of slot {slot}")));
            }
            ensure_not_held(&mut tx, slot).await?;
            if current.revision != expected_revision {
                return Err(StoreError::Conflict {
                    what: format!("slot {slot}"),
                    expected: expected_revision,
                    actual: current.revision,
                });
            }
            sqlx::query(
                "UPDATE slots SET active_version = ?2, revision = revision + 1, updated_at = ?3 \
                 WHERE name = ?1",
            )
            .bind(slot.as_str())
            .bind(to_i64_checked(version, "version")?)
            .bind(fmt_ts(now))
            .execute(&mut *tx)
            .await
            .map_err(backend("activating a version"))?;
            seal(&mut tx, audit, now).await?;
            commit(tx).await?;
            current.active_version = Some(version);
            current.revision += 1;
            current.updated_at = now;
            Ok(current)
        })
        .await
    }

    async fn get_version(
        &self,
        slot: &SlotName,
        version: u64,
    ) -> Result<Option<ConfigVersion>, StoreError> {
        self.reading(async move {
            let Some(version) = to_i64(version) else {
                return Ok(None);
            };
            let row = sqlx::query("SELECT * FROM versions WHERE slot = ?1 AND version = ?2")
                .bind(slot.as_str())
                .bind(version)
                .fetch_optional(&self.reader)
                .await
                .map_err(backend("reading a version"))?;
            row.as_ref().map(rows::version).transpose()
        })
        .await
    }

    async fn list_versions(
        &self,
        slot: &SlotName,
        page: PageRequest,
    ) -> Result<Page<ConfigVersion>, StoreError> {
        self.reading(async move {
            page.validate()?;
            let below = page.numeric_cursor()?.map_or(i64::MAX, to_i64_saturating);
            let rows = sqlx::query(
                "SELECT * FROM versions WHERE slot = ?1 AND version < ?2 \
                 ORDER BY version DESC LIMIT ?3",
            )
            .bind(slot.as_str())
            .bind(below)
            .bind(i64::from(page.limit) + 1)
            .fetch_all(&self.reader)
            .await
            .map_err(backend("listing versions"))?;
            Ok(page_of(map_rows(&rows, rows::version)?, page.limit, |v| v.version.to_string()))
        })
        .await
    }

    async fn create_snapshot(
        &self,
        req: NewSnapshot,
        audit: AuditDraft,
    ) -> Result<Snapshot, StoreError> {
        self.guarded(false, async move {
            if req.retention == 0 {
                return Err(StoreError::Invalid("snapshot retention must be at least 1".into()));
            }
            let now = now();
            let mut tx = self.begin_write().await?;
            let slot = fetch_slot(&mut tx, &req.slot).await?;
            let Some(active) = slot.active_version else {
                return Err(StoreError::Invalid(format!(
                    "slot {} has no active version to snapshot",
                    req.slot
                )));
            };
            let active_i64 = to_i64_checked(active, "version")?;
            let document: String =
                sqlx::query_scalar("SELECT document FROM versions WHERE slot = ?1 AND version = ?2")
                    .bind(req.slot.as_str())
                    .bind(active_i64)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(backend("reading the active version"))?
                    .ok_or_else(|| {
                        StoreError::Backend(format!(
                            "sqlite: the active version {active} of slot {} is missing",
                            req.slot
                        ))
                    })?;
            let document_value = serde_json::from_str(&document).map_err(|e| {
                StoreError::Backend(format!("sqlite: corrupt value in versions.document: JSON: {e}"))
            })?;
            let id = uuid::Uuid::now_v7().to_string();
            sqlx::query(
                "INSERT INTO snapshots (id, slot, version, document, label, created_by, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .bind(&id)
            .bind(req.slot.as_str())
            .bind(active_i64)
            .bind(&document)
            .bind(&req.label)
            .bind(&req.created_by)
            .bind(fmt_ts(now))
            .execute(&mut *tx)
            .await
            .map_err(backend("writing a snapshot"))?;
            sqlx::query(
                "DELETE FROM snapshots WHERE slot = ?1 AND id NOT IN \
                 (SELECT id FROM snapshots WHERE slot = ?1 ORDER BY id DESC LIMIT ?2)",
            )
            .bind(req.slot.as_str())
            .bind(i64::from(req.retention))
            .execute(&mut *tx)
            .await
            .map_err(backend("deleting snapshots beyond retention"))?;
            seal(&mut tx, audit, now).await?;
            commit(tx).await?;
            Ok(Snapshot {
                id,
                slot: req.slot,
                version: active,
                document: document_value,
                label: req.label,
                created_by: req.created_by,
                created_at: now,
            })
        })
        .await
    }

    async fn get_snapshot(&self, id: &str) -> Result<Option<Snapshot>, StoreError> {
        self.reading(async move {
            let row = sqlx::query("SELECT * FROM snapshots WHERE id = ?1")
                .bind(id)
                .fetch_optional(&self.reader)
                .await
                .map_err(backend("reading a snapshot"))?;
            row.as_ref().map(rows::snapshot).transpose()
        })
        .await
    }

    async fn list_snapshots(
        &self,
        slot: Option<&SlotName>,
        page: PageRequest,
    ) -> Result<Page<Snapshot>, StoreError> {
        self.reading(async move {
            page.validate()?;
            let sql = if slot.is_some() { LIST_SNAPSHOTS_OF_SLOT } else { LIST_SNAPSHOTS };
            let rows = sqlx::query(sql)
                .bind(slot.map(SlotName::as_str))
                .bind(page.cursor.as_deref())
                .bind(i64::from(page.limit) + 1)
                .fetch_all(&self.reader)
                .await
                .map_err(backend("listing snapshots"))?;
            Ok(page_of(map_rows(&rows, rows::snapshot)?, page.limit, |s| s.id.clone()))
        })
        .await
    }

    async fn append_audit(&self, audit: AuditDraft) -> Result<AuditEntry, StoreError> {
        self.guarded(false, async move {
            let mut tx = self.begin_write().await?;
            let entry = seal(&mut tx, audit, now()).await?;
            commit(tx).await?;
            Ok(entry)
        })
        .await
    }

    async fn list_audit(&self, q: AuditQuery) -> Result<Page<AuditEntry>, StoreError> {
        PageRequest::first(q.limit).validate()?;
        // `target` matches itself and `target@…`: the range [t@, tA) holds exactly the
        // strings that start with `t@` ('A' follows '@'), and can use the index.
        let sql = match (q.descending, q.target.is_some()) {
            (true, true) => AUDIT_OF_TARGET_DESC,
            (false, true) => AUDIT_OF_TARGET_ASC,
            (true, false) => AUDIT_DESC,
            (false, false) => AUDIT_ASC,
        };
        let cursor = match (q.cursor, q.descending) {
            (Some(c), _) => to_i64_saturating(c),
            (None, true) => i64::MAX,
            (None, false) => 0,
        };
        let rows = sqlx::query(sql)
            .bind(cursor)
            .bind(q.target.as_deref())
            .bind(i64::from(q.limit) + 1)
            .fetch_all(&self.reader)
            .await
            .map_err(backend("listing audit entries"))?;
        Ok(page_of(map_rows(&rows, rows::audit_entry)?, q.limit, |e| e.seq.to_string()))
    }

    async fn verified_head(&self) -> Result<Option<AuditHead>, StoreError> {
        self.reading(async {
            let row = sqlx::query("SELECT seq, hash FROM audit_verified_head WHERE id = 1")
                .fetch_optional(&self.reader)
                .await
                .map_err(backend("reading the verified audit head"))?;
            head_of(row.as_ref(), "audit_verified_head")
        })
        .await
    }

    async fn set_verified_head(&self, head: Option<AuditHead>) -> Result<(), StoreError> {
        // Allowed while the chain blocks writes: a full verification moves the head back
        // exactly then.
        let seq = head.as_ref().map(|h| h.seq);
        self.guarded(true, async move {
            let mut tx = self.begin_write().await?;
            match &head {
                Some(h) => sqlx::query(
                    "INSERT INTO audit_verified_head (id, seq, hash, verified_at) \
                     VALUES (1, ?1, ?2, ?3) ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, \
                     hash = excluded.hash, verified_at = excluded.verified_at",
                )
                .bind(to_i64_checked(h.seq, "audit sequence number")?)
                .bind(&h.hash)
                .bind(fmt_ts(now()))
                .execute(&mut *tx)
                .await
                .map_err(backend("moving the verified audit head"))?,
                None => sqlx::query("DELETE FROM audit_verified_head")
                    .execute(&mut *tx)
                    .await
                    .map_err(backend("forgetting the verified audit head"))?,
            };
            commit(tx).await
        })
        .await?;
        tracing::debug!(seq, "verified audit head moved");
        Ok(())
    }

    async fn verify_audit(&self) -> Result<AuditReport, StoreError> {
        let _one = self.verifying.lock().await;
        let report = actuator_core::audit::verify_incremental(self).await?;
        self.faults.set_chain(report.problem.as_ref().map(ToString::to_string));
        Ok(report)
    }

    async fn verify_audit_full(
        &self,
        progress: actuator_core::audit::Progress<'_>,
    ) -> Result<AuditReport, StoreError> {
        let _one = self.verifying.lock().await;
        let report = actuator_core::audit::verify_full(self, progress).await?;
        self.faults.set_chain(report.problem.as_ref().map(ToString::to_string));
        tracing::info!(
            entries = report.entries_checked,
            ok = report.ok,
            "full audit verification done"
        );
        Ok(report)
    }

    async fn acknowledge_audit(&self, audit: AuditDraft) -> Result<AuditEntry, StoreError> {
        let entry = self
            .guarded(true, async move {
                let mut tx = self.begin_write().await?;
                let entry = seal(&mut tx, audit, now()).await?;
                commit(tx).await?;
                Ok(entry)
            })
            .await?;
        self.faults.set_chain(None);
        tracing::warn!(seq = entry.seq, actor = %entry.actor, "audit chain problem acknowledged; writes resume");
        Ok(entry)
    }

    async fn create_token(
        &self,
        token: NewToken,
        audit: AuditDraft,
    ) -> Result<TokenRecord, StoreError> {
        self.insert_token(token, audit).await
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.all_tokens().await
    }

    async fn revoke_token(&self, name: &str, audit: AuditDraft) -> Result<TokenRecord, StoreError> {
        self.delete_token(name, audit).await
    }

    async fn readiness(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(e) = self.faults.check_file().await {
            problems.push(e.to_string());
            return problems;
        }
        if let Some(p) = self.faults.chain() {
            problems.push(format!("audit chain broken and not acknowledged: {p}"));
        } else if self.faults.write_failure().is_some()
            && let Err(e) = self.probe_write().await
        {
            problems.push(format!("writes fail: {e}"));
        }
        problems
    }

    async fn audit_head(&self) -> Result<Option<AuditHead>, StoreError> {
        let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_optional(&self.reader)
            .await
            .map_err(backend("reading the audit head"))?;
        head_of(row.as_ref(), "audit_head")
    }

    async fn create_rollout(
        &self,
        r: NewRollout,
        audit: AuditDraft,
    ) -> Result<RolloutRecord, StoreError> {
        self.guarded(false, async move {
            let now = now();
            let request = to_json(&r.request)?;
            let status = to_json(&r.status)?;
            let (route, rb_auto, rb_manual) = rows::derived(&r.status)?;
            let mut tx = self.begin_write().await?;
            fetch_slot(&mut tx, &r.slot).await?;
            let dup = sqlx::query("SELECT 1 FROM rollouts WHERE id = ?1")
                .bind(&r.id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend("reading a rollout"))?;
            if dup.is_some() {
                return Err(StoreError::AlreadyExists { what: format!("rollout {}", r.id) });
            }
            let stable = admit(&mut tx, &r.slot, None, &r.admission).await?;
            let stable_i64 = stable.map(|v| to_i64_checked(v, "version")).transpose()?;
            sqlx::query(
                "INSERT INTO rollouts (id, slot, strategy, state, request, status, revision, \
                 created_at, updated_at, stable_version, route, rollbacks_automatic, \
                 rollbacks_manual) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7, ?7, ?8, ?9, ?10, ?11)",
            )
            .bind(&r.id)
            .bind(r.slot.as_str())
            .bind(r.strategy.as_str())
            .bind(r.state.as_str())
            .bind(request)
            .bind(status)
            .bind(fmt_ts(now))
            .bind(stable_i64)
            .bind(route)
            .bind(rb_auto)
            .bind(rb_manual)
            .execute(&mut *tx)
            .await
            .map_err(backend("creating a rollout"))?;
            seal(&mut tx, audit, now).await?;
            commit(tx).await?;
            Ok(RolloutRecord {
                id: r.id,
                slot: r.slot,
                strategy: r.strategy,
                state: r.state,
                request: r.request,
                status: r.status,
                revision: 1,
                stable_version: stable,
                created_at: now,
                updated_at: now,
            })
        })
        .await
    }

    async fn get_rollout(&self, id: &str) -> Result<Option<RolloutRecord>, StoreError> {
        self.reading(async move {
            let row = sqlx::query("SELECT * FROM rollouts WHERE id = ?1")
                .bind(id)
                .fetch_optional(&self.reader)
                .await
                .map_err(backend("reading a rollout"))?;
            row.as_ref().map(rows::rollout).transpose()
        })
        .await
    }

    async fn list_rollouts(
        &self,
        filter: RolloutFilter,
        page: PageRequest,
    ) -> Result<Page<RolloutRecord>, StoreError> {
        self.reading(async move {
            page.validate()?;
            let below = page.numeric_cursor()?.map_or(i64::MAX, to_i64_saturating);
            let sql = if filter.slot.is_some() { LIST_ROLLOUTS_OF_SLOT } else { LIST_ROLLOUTS };
            let mut rows = sqlx::query(sql)
                .bind(below)
                .bind(filter.active_only)
                .bind(filter.slot.as_ref().map(SlotName::as_str))
                .bind(i64::from(page.limit) + 1)
                .fetch_all(&self.reader)
                .await
                .map_err(backend("listing rollouts"))?;
            let next_cursor = next_rollout_cursor(&mut rows, page.limit)?;
            Ok(Page { items: map_rows(&rows, rows::rollout)?, next_cursor })
        })
        .await
    }

    async fn list_active_rollouts_encoded(
        &self,
        page: PageRequest,
    ) -> Result<Page<actuator_core::EncodedRollout>, StoreError> {
        self.reading(async move {
            page.validate()?;
            let below = page.numeric_cursor()?.map_or(i64::MAX, to_i64_saturating);
            let mut rows = sqlx::query(LIST_ROLLOUTS)
                .bind(below)
                .bind(true)
                .bind(Option::<&str>::None)
                .bind(i64::from(page.limit) + 1)
                .fetch_all(&self.reader)
                .await
                .map_err(backend("listing active rollouts"))?;
            let next_cursor = next_rollout_cursor(&mut rows, page.limit)?;
            let items = map_rows(&rows, |row| {
                let c = Cols::new(row, "rollouts");
                let request = c.text("request")?;
                let status = c.text("status")?;
                // The documents stay text: the record carries them as `Null`.
                let null = serde_json::Value::Null;
                let record = rows::rollout_from(row, null.clone(), null)?;
                Ok(actuator_core::EncodedRollout { record, request, status })
            })?;
            Ok(Page { items, next_cursor })
        })
        .await
    }

    async fn rollout_counts(&self) -> Result<actuator_core::RolloutCounts, StoreError> {
        self.reading(async move {
            // Sums of columns written with each status: no status is read.
            let rows = sqlx::query(
                "SELECT strategy, state, COUNT(*) AS n, SUM(rollbacks_automatic) AS auto, \
                 SUM(rollbacks_manual) AS manual FROM rollouts GROUP BY strategy, state \
                 ORDER BY strategy, state",
            )
            .fetch_all(&self.reader)
            .await
            .map_err(backend("counting rollouts"))?;
            let mut out = actuator_core::RolloutCounts::default();
            for row in &rows {
                let c = Cols::new(row, "rollouts");
                let (strategy, state) = rows::strategy_and_state(&c)?;
                out.by_kind.push((strategy, state, c.u64("n")?));
                out.automatic_rollbacks += c.u64("auto")?;
                out.manual_rollbacks += c.u64("manual")?;
            }
            Ok(out)
        })
        .await
    }

    async fn rollouts_with_batches(
        &self,
    ) -> Result<Option<std::collections::HashSet<String>>, StoreError> {
        self.reading(async move {
            let rows = sqlx::query("SELECT DISTINCT rollout FROM observation_batches")
                .fetch_all(&self.reader)
                .await
                .map_err(backend("listing the rollouts with observation batches"))?;
            let ids = rows
                .iter()
                .map(|r| Cols::new(r, "observation_batches").text("rollout"))
                .collect::<Result<_, _>>()?;
            Ok(Some(ids))
        })
        .await
    }

    async fn list_active_routes(
        &self,
        page: PageRequest,
    ) -> Result<Page<RolloutRoute>, StoreError> {
        self.reading(async move {
            page.validate()?;
            let below = page.numeric_cursor()?.map_or(i64::MAX, to_i64_saturating);
            // The route has its own column, written with each status: no status is read.
            let mut rows = sqlx::query(LIST_ACTIVE_ROUTES)
                .bind(below)
                .bind(i64::from(page.limit) + 1)
                .fetch_all(&self.reader)
                .await
                .map_err(backend("listing the routes of active rollouts"))?;
            let next_cursor = next_rollout_cursor(&mut rows, page.limit)?;
            let items = map_rows(&rows, |row| {
                let c = Cols::new(row, "rollouts");
                Ok(RolloutRoute {
                    id: c.text("id")?,
                    slot: c.slot_name("slot")?,
                    revision: c.u64("revision")?,
                    route: c.opt_json("route")?.unwrap_or(serde_json::Value::Null),
                })
            })?;
            Ok(Page { items, next_cursor })
        })
        .await
    }

    async fn save_rollout_status(
        &self,
        id: &str,
        expected_revision: u64,
        status: serde_json::Value,
    ) -> Result<RolloutRecord, StoreError> {
        self.guarded(false, async move {
            let mut tx = self.begin_write().await?;
            let cur =
                write_status(&mut tx, id, expected_revision, status, "saving a rollout's status")
                    .await?;
            commit(tx).await?;
            Ok(cur)
        })
        .await
    }

    async fn update_rollout(
        &self,
        id: &str,
        u: RolloutUpdate,
        audit: AuditDraft,
    ) -> Result<RolloutRecord, StoreError> {
        self.guarded(false, async move {
            let now = now();
            let status = to_json(&u.status)?;
            let (route, rb_auto, rb_manual) = rows::derived(&u.status)?;
            let mut tx = self.begin_write().await?;
            let row = sqlx::query(rows::ROLLOUT_META)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend("reading a rollout"))?
                .ok_or_else(|| not_found(format!("rollout {id}")))?;
            // The stored status is about to be replaced: it is not read.
            let mut cur = rows::rollout_with(&row, serde_json::Value::Null)?;
            if cur.revision != u.expected_revision {
                return Err(StoreError::Conflict {
                    what: format!("rollout {id}"),
                    expected: u.expected_revision,
                    actual: cur.revision,
                });
            }
            if cur.state != u.state && !cur.state.can_transition_to(u.state) {
                return Err(StoreError::Invalid(format!(
                    "rollout {id} cannot go from {} to {}",
                    cur.state, u.state
                )));
            }
            // A retry takes the slot again: admitted like a new rollout.
            let readmitted = if cur.state.is_terminal() && u.state.is_active() {
                Some(admit(&mut tx, &cur.slot, Some(id), &u.admission).await?)
            } else {
                None
            };
            if let Some(v) = u.activate_version {
                if !version_exists(&mut tx, &cur.slot, v).await? {
                    return Err(not_found(format!("version {v} of slot {}", cur.slot)));
                }
                sqlx::query(
                    "UPDATE slots SET active_version = ?2, revision = revision + 1, updated_at = ?3 \
                     WHERE name = ?1",
                )
                .bind(cur.slot.as_str())
                .bind(to_i64_checked(v, "version")?)
                .bind(fmt_ts(now))
                .execute(&mut *tx)
                .await
                .map_err(backend("activating a version"))?;
            }
            let stable = readmitted.flatten().map(|v| to_i64_checked(v, "version")).transpose()?;
            sqlx::query(
                "UPDATE rollouts SET state = ?2, status = ?3, revision = revision + 1, \
                 updated_at = ?4, stable_version = CASE WHEN ?5 THEN ?6 ELSE stable_version END, \
                 route = ?7, rollbacks_automatic = ?8, rollbacks_manual = ?9 \
                 WHERE id = ?1",
            )
            .bind(id)
            .bind(u.state.as_str())
            .bind(status)
            .bind(fmt_ts(now))
            .bind(readmitted.is_some())
            .bind(stable)
            .bind(route)
            .bind(rb_auto)
            .bind(rb_manual)
            .execute(&mut *tx)
            .await
            .map_err(backend("updating a rollout"))?;
            seal(&mut tx, audit, now).await?;
            commit(tx).await?;
            cur.state = u.state;
            cur.status = u.status;
            if let Some(stable) = readmitted {
                cur.stable_version = stable;
            }
            cur.revision += 1;
            cur.updated_at = now;
            Ok(cur)
        })
        .await
    }

    // Observation batches: see `observations.rs`.

    async fn append_observation_batches(
        &self,
        batches: Vec<NewObservationBatch>,
    ) -> Result<Vec<u64>, StoreError> {
        self.guarded(false, self.append_batches(batches)).await
    }

    async fn list_observation_batches(
        &self,
        rollout_id: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<ObservationBatch>, StoreError> {
        self.list_batches(rollout_id, after, limit).await
    }

    async fn checkpoint_rollout(
        &self,
        id: &str,
        expected_revision: u64,
        status: serde_json::Value,
        folded_through: u64,
    ) -> Result<RolloutRecord, StoreError> {
        self.guarded(false, self.checkpoint(id, expected_revision, status, folded_through)).await
    }

    async fn checkpoint_rollouts(
        &self,
        items: Vec<CheckpointWrite>,
    ) -> Result<Vec<Result<RolloutRecord, StoreError>>, StoreError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        self.guarded(false, self.checkpoint_many(items)).await
    }

    async fn prune_observation_batches(
        &self,
        rollout_id: &str,
        through: u64,
    ) -> Result<u64, StoreError> {
        self.guarded(false, self.prune_batches(rollout_id, through)).await
    }
}

/// Writes `status` as the rollout's new status under its revision `expected_revision`
/// (a `Conflict` when another writer won), inside the caller's transaction; returns the
/// record as written.
pub(crate) async fn write_status(
    conn: &mut SqliteConnection,
    id: &str,
    expected_revision: u64,
    status: serde_json::Value,
    context: &'static str,
) -> Result<RolloutRecord, StoreError> {
    let now = now();
    let text = to_json(&status)?;
    let (route, rb_auto, rb_manual) = rows::derived(&status)?;
    let row = sqlx::query(rows::ROLLOUT_META)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(backend("reading a rollout"))?
        .ok_or_else(|| not_found(format!("rollout {id}")))?;
    // The stored status is about to be replaced: it is not read.
    let mut cur = rows::rollout_with(&row, serde_json::Value::Null)?;
    if cur.revision != expected_revision {
        return Err(StoreError::Conflict {
            what: format!("rollout {id}"),
            expected: expected_revision,
            actual: cur.revision,
        });
    }
    sqlx::query(
        "UPDATE rollouts SET status = ?2, revision = revision + 1, updated_at = ?3, route = ?4, \
         rollbacks_automatic = ?5, rollbacks_manual = ?6 WHERE id = ?1",
    )
    .bind(id)
    .bind(text)
    .bind(fmt_ts(now))
    .bind(route)
    .bind(rb_auto)
    .bind(rb_manual)
    .execute(&mut *conn)
    .await
    .map_err(backend(context))?;
    cur.status = status;
    cur.revision += 1;
    cur.updated_at = now;
    Ok(cur)
}

/// Refuses a direct activation while a rollout holds `slot`.
async fn ensure_not_held(conn: &mut SqliteConnection, slot: &SlotName) -> Result<(), StoreError> {
    match active_rollout_of(conn, slot, None).await? {
        Some(rollout) => Err(StoreError::SlotHeld { slot: slot.to_string(), rollout }),
        None => Ok(()),
    }
}

/// Admits a rollout of `slot` (`except`: the rollout itself, on a retry) inside the caller's
/// write transaction: one active rollout per slot, the limit of active rollouts, the
/// expected stable version. Returns the slot's active version, the rollout's stable version.
async fn admit(
    conn: &mut SqliteConnection,
    slot: &SlotName,
    except: Option<&str>,
    admission: &Admission,
) -> Result<Option<u64>, StoreError> {
    let stable = fetch_slot(conn, slot).await?.active_version;
    if let Some(active) = active_rollout_of(conn, slot, except).await? {
        return Err(StoreError::AlreadyExists {
            what: format!("an active rollout ({active}) of slot {slot}"),
        });
    }
    if let Some(limit) = admission.max_active {
        // Both counts are answered from indexes (the partial index of active rollouts, the
        // id's unique index): no status is read, however many rollouts are live.
        let active: i64 = sqlx::query_scalar(concat!(
            "SELECT (SELECT COUNT(*) FROM rollouts WHERE state NOT IN ",
            terminal_states!(),
            ") - (SELECT COUNT(*) FROM rollouts WHERE id = ?1 AND state NOT IN ",
            terminal_states!(),
            ")"
        ))
        .bind(except)
        .fetch_one(&mut *conn)
        .await
        .map_err(backend("counting active rollouts"))?;
        let active = u64::try_from(active).unwrap_or(0);
        if active >= limit {
            return Err(StoreError::Limit { active, limit });
        }
    }
    if let Some(expected) = admission.expected_stable
        && expected != stable
    {
        return Err(StoreError::StableChanged { slot: slot.to_string(), expected, actual: stable });
    }
    Ok(stable)
}

// Listings filtered by an optional key have one query with the key and one without: a
// `?N IS NULL OR key = ?N` form cannot use the key's index, so SQLite walks the whole table
// (every snapshot, every audit entry) to fill a page of one slot or one target.

/// The head (sequence and hash) read from the one row of `table` (`audit_head`, the chain's
/// end, or `audit_verified_head`, the last verified entry), `None` when the row is absent.
fn head_of(row: Option<&SqliteRow>, table: &'static str) -> Result<Option<AuditHead>, StoreError> {
    row.map(|row| {
        let c = Cols::new(row, table);
        Ok(AuditHead { seq: c.u64("seq")?, hash: c.text("hash")? })
    })
    .transpose()
}

/// A page of snapshots, newest id first (`?2` the cursor, `?3` the limit).
const LIST_SNAPSHOTS: &str =
    "SELECT * FROM snapshots WHERE (?2 IS NULL OR id < ?2) ORDER BY id DESC LIMIT ?3";

/// A page of one slot's snapshots (`?1`), through the `(slot, id)` index.
const LIST_SNAPSHOTS_OF_SLOT: &str =
    "SELECT * FROM snapshots WHERE slot = ?1 AND (?2 IS NULL OR id < ?2) ORDER BY id DESC LIMIT ?3";

/// Audit entries before `?1`, newest first (`?3` the limit).
const AUDIT_DESC: &str = "SELECT * FROM audit WHERE seq < ?1 ORDER BY seq DESC LIMIT ?3";

/// Audit entries after `?1`, oldest first (`?3` the limit).
const AUDIT_ASC: &str = "SELECT * FROM audit WHERE seq > ?1 ORDER BY seq ASC LIMIT ?3";

/// Audit entries of target `?2` (itself and `?2@…`: the range [t@, tA) holds exactly the
/// strings that start with `t@`, 'A' following '@') before `?1`, through the
/// `(target, seq)` index.
const AUDIT_OF_TARGET_DESC: &str = "SELECT * FROM audit WHERE (target = ?2 \
     OR (target >= ?2 || '@' AND target < ?2 || 'A')) AND seq < ?1 ORDER BY seq DESC LIMIT ?3";

/// As [`AUDIT_OF_TARGET_DESC`], after `?1`, oldest first.
const AUDIT_OF_TARGET_ASC: &str = "SELECT * FROM audit WHERE (target = ?2 \
     OR (target >= ?2 || '@' AND target < ?2 || 'A')) AND seq > ?1 ORDER BY seq ASC LIMIT ?3";

/// A page of rollouts, newest first (`?1` the cursor, `?2` active only, `?4` the limit).
/// The routes of active rollouts, a page below a cursor: answered from the covering partial
/// index `rollouts_active_routes` (no table row, so no status, is read).
const LIST_ACTIVE_ROUTES: &str = concat!(
    "SELECT seq, id, slot, revision, route FROM rollouts WHERE seq < ?1 AND state NOT IN ",
    terminal_states!(),
    " ORDER BY seq DESC LIMIT ?2"
);

const LIST_ROLLOUTS: &str = concat!(
    "SELECT * FROM rollouts WHERE seq < ?1 AND (NOT ?2 OR state NOT IN ",
    terminal_states!(),
    ") ORDER BY seq DESC LIMIT ?4"
);

/// A page of one slot's rollouts (`?3`). The slot is named first so that SQLite walks that
/// slot's `(slot, seq)` index: an `?3 IS NULL OR slot = ?3` form scans every rollout (and
/// reads every status) to fill the page, and the routing book runs this on each transition.
const LIST_ROLLOUTS_OF_SLOT: &str = concat!(
    "SELECT * FROM rollouts WHERE slot = ?3 AND seq < ?1 AND (NOT ?2 OR state NOT IN ",
    terminal_states!(),
    ") ORDER BY seq DESC LIMIT ?4"
);

/// The id of a rollout of `slot` in a non-terminal state, other than `except`.
async fn active_rollout_of(
    conn: &mut SqliteConnection,
    slot: &SlotName,
    except: Option<&str>,
) -> Result<Option<String>, StoreError> {
    let row = sqlx::query(concat!(
        "SELECT id FROM rollouts WHERE slot = ?1 AND (?2 IS NULL OR id <> ?2) AND state NOT IN ",
        terminal_states!(),
        " LIMIT 1"
    ))
    .bind(slot.as_str())
    .bind(except)
    .fetch_optional(&mut *conn)
    .await
    .map_err(backend("looking for an active rollout"))?;
    row.map(|r| r.try_get::<String, _>("id").map_err(backend("reading a rollout id"))).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actuator_core::state::DeploymentState;

    #[test]
    fn terminal_state_list_matches_the_state_machine() {
        let mut terminal: Vec<_> = DeploymentState::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        terminal.sort();
        let listed = terminal_states!().trim_matches(|c| c == '(' || c == ')');
        let mut listed: Vec<_> = listed.split(", ").map(str::to_owned).collect();
        listed.sort();
        assert_eq!(listed, terminal);
        let migration = include_str!("../migrations/0004_aborted_state.sql");
        assert!(
            migration.contains(concat!("WHERE state NOT IN ", terminal_states!())),
            "the migration's partial index names the same terminal states"
        );
    }

    #[test]
    fn the_migrations_are_embedded_in_order() {
        let m = migrator();
        let versions: Vec<i64> = m.iter().map(|m| m.version).collect();
        assert_eq!(versions, [1, 2, 3, 4, 5, 6, 7]);
    }

    /// The migration that adds the derived columns fills them for rows written before it
    /// exactly as a write does: its backfill, run over rows whose columns were emptied, gives
    /// back the same routes and counts.
    #[tokio::test]
    async fn the_backfill_derives_what_a_write_does() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        actuator_core::testing::conformance::summaries(&store).await;
        async fn routes(s: &SqliteStore) -> Vec<(String, serde_json::Value)> {
            let mut r = s.list_active_routes(PageRequest::first(10)).await.unwrap().items;
            r.sort_by(|a, b| a.id.cmp(&b.id));
            r.into_iter().map(|r| (r.id, r.route)).collect()
        }
        let before = (routes(&store).await, store.rollout_counts().await.unwrap());
        sqlx::query(
            "UPDATE rollouts SET route = NULL, rollbacks_automatic = 0, rollbacks_manual = 0",
        )
        .execute(&store.writer)
        .await
        .unwrap();
        assert_ne!(store.rollout_counts().await.unwrap(), before.1, "the columns were emptied");
        let migration = include_str!("../migrations/0007_rollout_route_and_counts.sql");
        let backfill = &migration[migration.find("-- backfill").unwrap()..];
        sqlx::raw_sql(sqlx::AssertSqlSafe(backfill.to_owned()))
            .execute(&store.writer)
            .await
            .unwrap();
        let after = (routes(&store).await, store.rollout_counts().await.unwrap());
        assert_eq!(after, before);
    }

    /// The steps of SQLite's plan for `sql` with its parameters bound to `binds`.
    async fn plan(store: &SqliteStore, sql: &str, binds: [Option<&str>; 4]) -> Vec<String> {
        let mut q = sqlx::query_as::<_, (i64, i64, i64, String)>(sqlx::AssertSqlSafe(format!(
            "EXPLAIN QUERY PLAN {sql}"
        )));
        for b in binds {
            q = q.bind(b.map(str::to_owned));
        }
        q.fetch_all(&store.reader).await.unwrap().into_iter().map(|p| p.3).collect()
    }

    #[tokio::test]
    async fn listings_of_one_key_are_read_through_its_index_not_a_scan() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let max = i64::MAX.to_string();
        let cases = [
            (
                LIST_ROLLOUTS_OF_SLOT,
                [Some(max.as_str()), Some("1"), Some("chat"), Some("2")],
                "rollouts_by_slot (slot=?",
            ),
            (
                LIST_SNAPSHOTS_OF_SLOT,
                [Some("chat"), None, Some("2"), None],
                "snapshots_by_slot (slot=?",
            ),
            (
                AUDIT_OF_TARGET_DESC,
                [Some(max.as_str()), Some("chat"), Some("2"), None],
                "audit_by_target (target=?",
            ),
            (
                AUDIT_OF_TARGET_ASC,
                [Some("0"), Some("chat"), Some("2"), None],
                "audit_by_target (target=?",
            ),
        ];
        for (sql, binds, index) in cases {
            let steps = plan(&store, sql, binds).await;
            assert!(steps.iter().any(|s| s.contains(index)), "{sql}: {steps:?}");
            assert!(!steps.iter().any(|s| s.starts_with("SCAN")), "{sql}: {steps:?}");
        }
        // The routing book reads the routes from the covering index alone: no table row.
        let steps =
            plan(&store, LIST_ACTIVE_ROUTES, [Some(max.as_str()), Some("2"), None, None]).await;
        assert!(
            steps.iter().any(|s| s.contains("COVERING INDEX rollouts_active_routes")),
            "{steps:?}"
        );
    }

    #[tokio::test]
    async fn file_connections_are_durable_wal_with_foreign_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("p.db")).await.unwrap();
        for (pool, role) in [(&store.writer, "writer"), (&store.reader, "reader")] {
            let mode: String =
                sqlx::query_scalar("PRAGMA journal_mode").fetch_one(pool).await.unwrap();
            assert_eq!(mode, "wal", "{role}");
            let sync: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(pool).await.unwrap();
            assert_eq!(sync, 2, "{role}: synchronous=FULL");
            let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys").fetch_one(pool).await.unwrap();
            assert_eq!(fk, 1, "{role}: foreign keys on");
            let busy: i64 =
                sqlx::query_scalar("PRAGMA busy_timeout").fetch_one(pool).await.unwrap();
            assert_eq!(busy, 10_000, "{role}: busy timeout");
        }
        let write = sqlx::query("DELETE FROM audit").execute(&store.reader).await;
        assert!(write.is_err(), "reader connections are read-only");
    }

    #[tokio::test]
    async fn unsynced_seeding_is_off_by_default_and_turns_back_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed.db");
        let store = SqliteStore::open(&path).await.unwrap();
        assert!(store.synced().await.unwrap(), "a store opens durable");
        store.set_unsynced_seeding(true).await.unwrap();
        assert!(!store.synced().await.unwrap());
        let name = SlotName::new("seeded").unwrap();
        let new = NewSlot { name: name.clone(), description: String::new(), schema: None };
        store.create_slot(new, AuditDraft::success("t", "slot.create", "seeded")).await.unwrap();
        store.set_unsynced_seeding(false).await.unwrap();
        assert!(store.synced().await.unwrap(), "durable again");
        store.close().await;
        // What was written while unsynced is in the file.
        let again = SqliteStore::open(&path).await.unwrap();
        assert!(again.synced().await.unwrap(), "a reopened store is durable");
        assert!(again.get_slot(&name).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn in_memory_store_passes_conformance() {
        actuator_core::testing::conformance::run(|| async {
            std::sync::Arc::new(SqliteStore::open_in_memory().await.expect("open"))
                as std::sync::Arc<dyn Store>
        })
        .await;
    }
}
