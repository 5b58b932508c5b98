//! The replicas' own rows: each replica upserts its row on every poll of its election, so
//! `GET /v1/cluster` can say who runs, who leads and when each last synchronised.

use actuator_core::store::StoreError;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::postgres::PgRow;

use crate::rows::{Cols, backend, fmt_ts};

/// At most this many replica rows are listed.
pub const MAX_LISTED: i64 = 100;

/// A replica's row is dropped by the leader when it was not seen for this long.
pub fn forget_after() -> chrono::TimeDelta {
    chrono::TimeDelta::hours(1)
}

/// One replica as its last poll recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaRow {
    /// The replica's id (`[cluster] replica_id`).
    pub id: String,
    /// How the other replicas reach it.
    pub url: String,
    /// `leader` or `follower`, as it was at its last poll.
    pub role: String,
    /// When it started, RFC 3339.
    pub started_at: String,
    /// Its last poll, RFC 3339.
    pub last_seen: String,
    /// When its routing table last fully resynchronised or applied a change, RFC 3339.
    pub last_sync: Option<String>,
}

fn replica(row: &PgRow) -> Result<ReplicaRow, StoreError> {
    let c = Cols::new(row, "cluster_replicas");
    Ok(ReplicaRow {
        id: c.text("id")?,
        url: c.text("url")?,
        role: c.text("role")?,
        started_at: c.text("started_at")?,
        last_seen: c.text("last_seen")?,
        last_sync: c.opt_text("last_sync")?,
    })
}

/// Upserts the row of one replica.
pub(crate) async fn upsert(pool: &PgPool, row: &ReplicaRow) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO cluster_replicas (id, url, role, started_at, last_seen, last_sync) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO UPDATE SET url = excluded.url, \
         role = excluded.role, started_at = excluded.started_at, last_seen = excluded.last_seen, \
         last_sync = excluded.last_sync",
    )
    .bind(&row.id)
    .bind(&row.url)
    .bind(&row.role)
    .bind(&row.started_at)
    .bind(&row.last_seen)
    .bind(&row.last_sync)
    .execute(pool)
    .await
    .map_err(backend("recording this replica"))?;
    Ok(())
}

/// Drops the rows of replicas not seen since `before`.
pub(crate) async fn forget_before(pool: &PgPool, before: DateTime<Utc>) -> Result<u64, StoreError> {
    let done = sqlx::query("DELETE FROM cluster_replicas WHERE last_seen < $1")
        .bind(fmt_ts(before))
        .execute(pool)
        .await
        .map_err(backend("forgetting replicas not seen for long"))?;
    Ok(done.rows_affected())
}

/// Drops the row of replica `id` (it stops).
pub(crate) async fn remove(pool: &PgPool, id: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM cluster_replicas WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await
        .map_err(backend("removing this replica's row"))?;
    Ok(())
}

/// The replicas' rows by id, at most [`MAX_LISTED`].
pub(crate) async fn list(pool: &PgPool) -> Result<Vec<ReplicaRow>, StoreError> {
    let rows = sqlx::query("SELECT * FROM cluster_replicas ORDER BY id LIMIT $1")
        .bind(MAX_LISTED)
        .fetch_all(pool)
        .await
        .map_err(backend("listing the replicas"))?;
    rows.iter().map(replica).collect()
}
