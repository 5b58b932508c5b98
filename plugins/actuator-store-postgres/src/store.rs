//! [`PostgresStore`]: the [`Store`] trait over one PostgreSQL database.

use std::future::Future;
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
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, SqlSafeStr, Transaction};

use crate::cluster::Fence;
use crate::faults::Faults;
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

/// The key of the transaction-scoped advisory lock every write transaction takes first
/// (`pg_advisory_xact_lock`): writes to one database are serialised, like SQLite's single
/// writer, so the admission rules and the audit chain's order hold under concurrent writers,
/// also writers in other processes. Advisory locks are scoped to their database.
pub const WRITE_LOCK_KEY: i64 = 0x6163_7475_6174_6f72; // "actuator"

/// How long a statement may run, and a write wait for the write lock, before it fails.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections of the writer pool: one in its transaction, one waiting for the write lock.
/// Writes are serialised by the lock, so more would only hold connections idle.
const WRITERS: u32 = 2;
/// How long taking a connection from a pool (or opening one) may take: a write waits this
/// long for its turn.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// The embedded schema migrations, in order.
///
/// Migrations applied by a newer version of the plugin and unknown to this one are
/// tolerated (every migration is additive), so replicas can be upgraded one by one.
fn migrator() -> Migrator {
    let mut m = Migrator::with_migrations(vec![
        Migration::new(
            1,
            "initial schema".into(),
            MigrationType::Simple,
            include_str!("../migrations/0001_initial.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            2,
            "cluster lease and replicas".into(),
            MigrationType::Simple,
            include_str!("../migrations/0002_cluster.sql").into_sql_str(),
            false,
        ),
    ]);
    m.set_ignore_missing(true);
    m
}

/// The channel every write that changes what a replica serves notifies on (delivered on
/// commit): the payload is `slot:<name>` or `tokens`.
pub const CHANGES_CHANNEL: &str = "actuator_changes";

/// A [`Store`] kept in one PostgreSQL database.
///
/// Every write is one transaction that first takes the database's write lock (an advisory
/// lock, [`WRITE_LOCK_KEY`]), then checks its invariants, writes, seals and inserts its audit
/// entry and moves the head of the audit chain; it is acknowledged once PostgreSQL committed
/// it (`synchronous_commit` as the server sets it; its default, `on`, waits for the WAL to
/// reach disk). Reads run on a pool of their own, without the lock, and never wait for writers.
///
/// Faults: a write that fails in the backend (connection lost, server down) is rolled back
/// and writes resume by themselves when the server is back; [`Store::readiness`] probes with
/// a small write until then. The audit chain is verified at open and by
/// [`Store::verify_audit`] (both incremental, from the verified head kept in the database)
/// and by [`Store::verify_audit_full`]; while it is broken and unacknowledged, writes stop
/// with [`StoreError::ChainBroken`].
#[derive(Debug, Clone)]
pub struct PostgresStore {
    writer: PgPool,
    reader: PgPool,
    /// How the pools connect, for the connections of the cluster (lease, listener).
    options: PgConnectOptions,
    /// The fencing token every write is conditional on, when the store is fenced.
    fence: Option<Fence>,
    faults: Arc<Faults>,
    /// Held by a verification of the audit chain: one at a time, so two never move the
    /// verified head past each other.
    verifying: Arc<tokio::sync::Mutex<()>>,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`)
    /// with at most `max_connections` read connections (and two for writes) and brings its
    /// schema up to date.
    ///
    /// Fails with [`StoreError::Invalid`] when the URL cannot be parsed and with
    /// [`StoreError::Unavailable`] or [`StoreError::Backend`] when the server cannot be
    /// reached or the schema was written by a newer version of this plugin.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url
            .parse()
            .map_err(|e| StoreError::Invalid(format!("the database URL is not valid: {e}")))?;
        Self::connect_with(options, max_connections).await
    }

    /// As [`PostgresStore::connect`], with parsed connection options.
    pub async fn connect_with(
        options: PgConnectOptions,
        max_connections: u32,
    ) -> Result<Self, StoreError> {
        let timeout_ms = STATEMENT_TIMEOUT.as_millis().to_string();
        let options = options
            .application_name("actuator")
            .options([("statement_timeout", timeout_ms.as_str()), ("timezone", "UTC")]);
        let pool = |max: u32| {
            PgPoolOptions::new().max_connections(max.max(1)).acquire_timeout(ACQUIRE_TIMEOUT)
        };
        let writer = pool(WRITERS)
            .connect_with(options.clone())
            .await
            .map_err(backend("connecting to the database"))?;
        migrator()
            .run(&writer)
            .await
            .map_err(|e| StoreError::Backend(format!("postgres: migrating the schema: {e}")))?;
        let reader = pool(max_connections)
            .connect_with(options.clone())
            .await
            .map_err(backend("connecting to the database to read"))?;
        let store = Self {
            writer,
            reader,
            options,
            fence: None,
            faults: Arc::default(),
            verifying: Arc::default(),
        };
        store.verify_at_open().await;
        tracing::debug!("postgres store connected");
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

    /// Closes every connection, waiting for those in use to be returned. Later calls on this
    /// store (or its clones) fail.
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }

    /// The pool of read connections.
    pub(crate) fn reader(&self) -> &PgPool {
        &self.reader
    }

    /// The options connections to this database are opened with.
    pub(crate) fn options(&self) -> &PgConnectOptions {
        &self.options
    }

    /// This store (sharing its connections) with every write conditional on `fence`: a write
    /// commits only while the fence holds an epoch and the lease row in the database carries
    /// that epoch; otherwise it is refused with [`StoreError::Fenced`] and writes nothing.
    #[must_use]
    pub fn with_fence(&self, fence: Fence) -> Self {
        Self { fence: Some(fence), ..self.clone() }
    }

    /// This store (sharing its connections) with no fence: for writes a replica makes
    /// whether or not it leads (bootstrapping tokens at start).
    #[must_use]
    pub fn unfenced(&self) -> Self {
        Self { fence: None, ..self.clone() }
    }

    /// The fence writes are conditional on, if any.
    pub fn fence(&self) -> Option<&Fence> {
        self.fence.as_ref()
    }

    /// Runs the read `work`.
    async fn reading<T>(
        &self,
        work: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        work.await
    }

    /// Runs the write `work`: first checks that the store may write (the chain, unless
    /// `acknowledging`), then records whether the backend failed (for readiness).
    pub(crate) async fn guarded<T>(
        &self,
        acknowledging: bool,
        work: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        if !acknowledging {
            self.faults.check_chain()?;
        }
        let out = work.await;
        match &out {
            Ok(_) => self.faults.write_ok(),
            Err(e @ (StoreError::Backend(_) | StoreError::Unavailable(_))) => {
                self.faults.write_failed(e);
            }
            Err(_) => {}
        }
        out
    }

    /// A small write that tells whether writes work again after a failure. A fenced store
    /// that does not lead probes unfenced: the database takes writes, which is what
    /// readiness asks; this replica not leading is no fault.
    async fn probe_write(&self) -> Result<(), StoreError> {
        if self.fence.as_ref().is_some_and(|f| f.epoch().is_none()) {
            return Box::pin(self.unfenced().probe_write()).await;
        }
        self.guarded(false, async {
            let mut tx = self.begin_write().await?;
            sqlx::query(
                "INSERT INTO store_probe (id, at) VALUES (1, $1) \
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

    /// Starts a write transaction holding the database's write lock ([`WRITE_LOCK_KEY`]) until
    /// it ends: every statement after it sees every write committed before it.
    pub(crate) async fn begin_write(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        let mut tx = self.writer.begin().await.map_err(backend("beginning a write"))?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(WRITE_LOCK_KEY)
            .execute(&mut *tx)
            .await
            .map_err(backend("taking the write lock"))?;
        if let Some(fence) = &self.fence {
            // Under the write lock: an election bumps the epoch holding the same lock, so
            // no write of a deposed leader commits after its successor's election.
            let held = fence.epoch();
            let current: i64 = sqlx::query_scalar("SELECT epoch FROM cluster_lease WHERE id = 1")
                .fetch_one(&mut *tx)
                .await
                .map_err(backend("reading the lease's epoch"))?;
            let current = u64::try_from(current).unwrap_or(0);
            if held != Some(current) {
                if let Some(held) = held {
                    fence.deposed(held, current);
                }
                return Err(StoreError::Fenced { held, current });
            }
        }
        Ok(tx)
    }
}

/// What a committed write changed for the replicas' routing tables and token tables.
pub(crate) enum Change<'a> {
    /// The route of one slot (its active version or its rollout's split).
    Slot(&'a str),
    /// The API tokens.
    Tokens,
}

/// Notifies the replicas of `change` on [`CHANGES_CHANNEL`], inside the caller's transaction
/// (delivered when it commits, never when it rolls back).
pub(crate) async fn notify(conn: &mut PgConnection, change: Change<'_>) -> Result<(), StoreError> {
    let payload = match change {
        Change::Slot(slot) => format!("slot:{slot}"),
        Change::Tokens => "tokens".to_owned(),
    };
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANGES_CHANNEL)
        .bind(payload)
        .execute(&mut *conn)
        .await
        .map_err(backend("notifying the replicas"))?;
    Ok(())
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
fn next_rollout_cursor(rows: &mut Vec<PgRow>, limit: u32) -> Result<Option<String>, StoreError> {
    if rows.len() <= limit as usize {
        return Ok(None);
    }
    let first_left = Cols::new(&rows[limit as usize], "rollouts").u64("seq")?;
    rows.truncate(limit as usize);
    Ok(Some((first_left + 1).to_string()))
}

fn map_rows<T>(
    rows: &[PgRow],
    f: fn(&PgRow) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    rows.iter().map(f).collect()
}

async fn fetch_slot(conn: &mut PgConnection, name: &SlotName) -> Result<Slot, StoreError> {
    let row = sqlx::query("SELECT * FROM slots WHERE name = $1")
        .bind(name.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(backend("reading a slot"))?
        .ok_or_else(|| not_found(format!("slot {name}")))?;
    rows::slot(&row)
}

async fn version_exists(
    conn: &mut PgConnection,
    slot: &SlotName,
    version: u64,
) -> Result<bool, StoreError> {
    let Some(version) = to_i64(version) else {
        return Ok(false);
    };
    let row = sqlx::query("SELECT 1 FROM versions WHERE slot = $1 AND version = $2")
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
    conn: &mut PgConnection,
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
         prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
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
        "INSERT INTO audit_head (id, seq, hash) VALUES (1, $1, $2) \
         ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
    )
    .bind(seq)
    .bind(&entry.hash)
    .execute(&mut *conn)
    .await
    .map_err(backend("moving the audit head"))?;
    Ok(entry)
}

pub(crate) async fn commit(tx: Transaction<'static, Postgres>) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    let r = tx.commit().await.map_err(backend("committing"));
    metrics::histogram!("actuator_store_commit_seconds", "store" => "postgres")
        .record(started.elapsed().as_secs_f64());
    r
}

#[async_trait]
impl Store for PostgresStore {
    async fn create_slot(&self, slot: NewSlot, audit: AuditDraft) -> Result<Slot, StoreError> {
        self.guarded(false, async move {
            let now = now();
            let schema = slot.schema.as_ref().map(to_json).transpose()?;
            let mut tx = self.begin_write().await?;
            let exists = sqlx::query("SELECT 1 FROM slots WHERE name = $1")
                .bind(slot.name.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend("reading a slot"))?;
            if exists.is_some() {
                return Err(StoreError::AlreadyExists { what: format!("slot {}", slot.name) });
            }
            sqlx::query(
                "INSERT INTO slots (name, description, schema, active_version, latest_version, \
                 revision, created_at, updated_at) VALUES ($1, $2, $3, NULL, 0, 1, $4, $4)",
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
            let row = sqlx::query("SELECT * FROM slots WHERE name = $1")
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
                "SELECT * FROM slots WHERE ($1 IS NULL OR name > $1) ORDER BY name ASC LIMIT $2",
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
                     WHERE s.name >= $1 AND s.name <= $2",
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
                 VALUES ($1, $2, $3, $4, $5, $6)",
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
                "UPDATE slots SET latest_version = $2, revision = revision + 1, updated_at = $3, \
                 active_version = CASE WHEN $4 THEN $2 ELSE active_version END WHERE name = $1",
            )
            .bind(req.slot.as_str())
            .bind(version_i64)
            .bind(fmt_ts(now))
            .bind(req.activate)
            .execute(&mut *tx)
            .await
            .map_err(backend("updating a slot"))?;
            if req.activate {
                notify(&mut tx, Change::Slot(req.slot.as_str())).await?;
            }
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
                "UPDATE slots SET active_version = $2, revision = revision + 1, updated_at = $3 \
                 WHERE name = $1",
            )
            .bind(slot.as_str())
            .bind(to_i64_checked(version, "version")?)
            .bind(fmt_ts(now))
            .execute(&mut *tx)
            .await
            .map_err(backend("activating a version"))?;
            notify(&mut tx, Change::Slot(slot.as_str())).await?;
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
            let row = sqlx::query("SELECT * FROM versions WHERE slot = $1 AND version = $2")
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
                "SELECT * FROM versions WHERE slot = $1 AND version < $2 \
                 ORDER BY version DESC LIMIT $3",
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
                sqlx::query_scalar("SELECT document FROM versions WHERE slot = $1 AND version = $2")
                    .bind(req.slot.as_str())
                    .bind(active_i64)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(backend("reading the active version"))?
                    .ok_or_else(|| {
                        StoreError::Backend(format!(
                            "postgres: the active version {active} of slot {} is missing",
                            req.slot
                        ))
                    })?;
            let document_value = serde_json::from_str(&document).map_err(|e| {
                StoreError::Backend(format!("postgres: corrupt value in versions.document: JSON: {e}"))
            })?;
            let id = uuid::Uuid::now_v7().to_string();
            sqlx::query(
                "INSERT INTO snapshots (id, slot, version, document, label, created_by, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
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
                "DELETE FROM snapshots WHERE slot = $1 AND id NOT IN \
                 (SELECT id FROM snapshots WHERE slot = $1 ORDER BY id DESC LIMIT $2)",
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
            let row = sqlx::query("SELECT * FROM snapshots WHERE id = $1")
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
                     VALUES (1, $1, $2, $3) ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, \
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
        let ping = sqlx::query("SELECT 1").execute(&self.reader);
        match tokio::time::timeout(ACQUIRE_TIMEOUT, ping).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                problems.push(format!("the database cannot be reached: {e}"));
                return problems;
            }
            Err(_) => {
                problems.push(format!(
                    "the database did not answer within {} s",
                    ACQUIRE_TIMEOUT.as_secs()
                ));
                return problems;
            }
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
            let dup = sqlx::query("SELECT 1 FROM rollouts WHERE id = $1")
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
                 VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7, $8, $9, $10, $11)",
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
            notify(&mut tx, Change::Slot(r.slot.as_str())).await?;
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
            let row = sqlx::query("SELECT * FROM rollouts WHERE id = $1")
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
                "SELECT strategy, state, COUNT(*) AS n, SUM(rollbacks_automatic)::BIGINT AS auto, \
                 SUM(rollbacks_manual)::BIGINT AS manual FROM rollouts GROUP BY strategy, state \
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
                    "UPDATE slots SET active_version = $2, revision = revision + 1, updated_at = $3 \
                     WHERE name = $1",
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
                "UPDATE rollouts SET state = $2, status = $3, revision = revision + 1, \
                 updated_at = $4, stable_version = CASE WHEN $5 THEN $6 ELSE stable_version END, \
                 route = $7, rollbacks_automatic = $8, rollbacks_manual = $9 \
                 WHERE id = $1",
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
            notify(&mut tx, Change::Slot(cur.slot.as_str())).await?;
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
    conn: &mut PgConnection,
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
    let old_route: Option<String> =
        row.try_get("route").map_err(backend("reading a rollout's route"))?;
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
        "UPDATE rollouts SET status = $2, revision = revision + 1, updated_at = $3, route = $4, \
         rollbacks_automatic = $5, rollbacks_manual = $6 WHERE id = $1",
    )
    .bind(id)
    .bind(text)
    .bind(fmt_ts(now))
    .bind(&route)
    .bind(rb_auto)
    .bind(rb_manual)
    .execute(&mut *conn)
    .await
    .map_err(backend(context))?;
    if old_route != route {
        notify(conn, Change::Slot(cur.slot.as_str())).await?;
    }
    cur.status = status;
    cur.revision += 1;
    cur.updated_at = now;
    Ok(cur)
}

/// Refuses a direct activation while a rollout holds `slot`.
async fn ensure_not_held(conn: &mut PgConnection, slot: &SlotName) -> Result<(), StoreError> {
    match active_rollout_of(conn, slot, None).await? {
        Some(rollout) => Err(StoreError::SlotHeld { slot: slot.to_string(), rollout }),
        None => Ok(()),
    }
}

/// Admits a rollout of `slot` (`except`: the rollout itself, on a retry) inside the caller's
/// write transaction: one active rollout per slot, the limit of active rollouts, the
/// expected stable version. Returns the slot's active version, the rollout's stable version.
async fn admit(
    conn: &mut PgConnection,
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
            ") - (SELECT COUNT(*) FROM rollouts WHERE id = $1 AND state NOT IN ",
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
// `$N IS NULL OR key = $N` form is planned once for both cases and cannot count on the key's
// index to fill a page of one slot or one target.

/// The head (sequence and hash) read from the one row of `table` (`audit_head`, the chain's
/// end, or `audit_verified_head`, the last verified entry), `None` when the row is absent.
fn head_of(row: Option<&PgRow>, table: &'static str) -> Result<Option<AuditHead>, StoreError> {
    row.map(|row| {
        let c = Cols::new(row, table);
        Ok(AuditHead { seq: c.u64("seq")?, hash: c.text("hash")? })
    })
    .transpose()
}

/// A page of snapshots, newest id first (`$2` the cursor, `$3` the limit).
const LIST_SNAPSHOTS: &str =
    "SELECT * FROM snapshots WHERE ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3";

/// A page of one slot's snapshots (`$1`), through the `(slot, id)` index.
const LIST_SNAPSHOTS_OF_SLOT: &str =
    "SELECT * FROM snapshots WHERE slot = $1 AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3";

/// Audit entries before `$1`, newest first (`$3` the limit).
const AUDIT_DESC: &str = "SELECT * FROM audit WHERE seq < $1 ORDER BY seq DESC LIMIT $3";

/// Audit entries after `$1`, oldest first (`$3` the limit).
const AUDIT_ASC: &str = "SELECT * FROM audit WHERE seq > $1 ORDER BY seq ASC LIMIT $3";

/// Audit entries of target `$2` (itself and `$2@…`: the range [t@, tA) holds exactly the
/// strings that start with `t@`, 'A' following '@') before `$1`, through the
/// `(target, seq)` index.
const AUDIT_OF_TARGET_DESC: &str = "SELECT * FROM audit WHERE (target = $2 \
     OR (target >= $2 || '@' AND target < $2 || 'A')) AND seq < $1 ORDER BY seq DESC LIMIT $3";

/// As [`AUDIT_OF_TARGET_DESC`], after `$1`, oldest first.
const AUDIT_OF_TARGET_ASC: &str = "SELECT * FROM audit WHERE (target = $2 \
     OR (target >= $2 || '@' AND target < $2 || 'A')) AND seq > $1 ORDER BY seq ASC LIMIT $3";

/// A page of rollouts, newest first (`$1` the cursor, `$2` active only, `$4` the limit).
/// The routes of active rollouts, a page below a cursor, through the partial index
/// `rollouts_active_routes` (the route has its own column: no status is read).
const LIST_ACTIVE_ROUTES: &str = concat!(
    "SELECT seq, id, slot, revision, route FROM rollouts WHERE seq < $1 AND state NOT IN ",
    terminal_states!(),
    " ORDER BY seq DESC LIMIT $2"
);

const LIST_ROLLOUTS: &str = concat!(
    "SELECT * FROM rollouts WHERE seq < $1 AND (NOT $2 OR state NOT IN ",
    terminal_states!(),
    ") ORDER BY seq DESC LIMIT $4"
);

/// A page of one slot's rollouts (`$3`), through the slot's `(slot, seq)` index: the
/// routing book runs this on each transition.
const LIST_ROLLOUTS_OF_SLOT: &str = concat!(
    "SELECT * FROM rollouts WHERE slot = $3 AND seq < $1 AND (NOT $2 OR state NOT IN ",
    terminal_states!(),
    ") ORDER BY seq DESC LIMIT $4"
);

/// The id of a rollout of `slot` in a non-terminal state, other than `except`.
async fn active_rollout_of(
    conn: &mut PgConnection,
    slot: &SlotName,
    except: Option<&str>,
) -> Result<Option<String>, StoreError> {
    let row = sqlx::query(concat!(
        "SELECT id FROM rollouts WHERE slot = $1 AND ($2 IS NULL OR id <> $2) AND state NOT IN ",
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
        let migration = include_str!("../migrations/0001_initial.sql");
        assert_eq!(
            migration.matches(concat!("WHERE state NOT IN ", terminal_states!())).count(),
            2,
            "the migration's partial indexes name the same terminal states"
        );
    }

    #[test]
    fn the_migrations_are_embedded_in_order() {
        let m = migrator();
        let versions: Vec<i64> = m.iter().map(|m| m.version).collect();
        assert_eq!(versions, [1, 2]);
    }
}
