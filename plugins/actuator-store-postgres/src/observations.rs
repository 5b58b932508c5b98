//! Durable observation batches: appended in one transaction before they are acknowledged,
//! listed for replay on start, and deleted by the checkpoint that folds them in.

use actuator_core::audit::truncate_to_micros;
use actuator_core::store::{
    CheckpointWrite, NewObservationBatch, ObservationBatch, PageRequest, RolloutRecord, StoreError,
};
use chrono::Utc;
use serde_json::Value;
use sqlx::postgres::PgRow;

use crate::rows::{Cols, backend, fmt_ts, to_i64_saturating};
use crate::store::{PostgresStore, write_status};

fn batch(row: &PgRow) -> Result<ObservationBatch, StoreError> {
    let c = Cols::new(row, "observation_batches");
    Ok(ObservationBatch {
        seq: c.u64("seq")?,
        rollout_id: c.text("rollout")?,
        items: c.text("items")?,
        created_at: c.ts("created_at")?,
    })
}

impl PostgresStore {
    pub(crate) async fn append_batches(
        &self,
        batches: Vec<NewObservationBatch>,
    ) -> Result<Vec<u64>, StoreError> {
        if batches.is_empty() {
            return Err(StoreError::Invalid("an append needs at least one batch".into()));
        }
        let now = fmt_ts(truncate_to_micros(Utc::now()));
        let mut tx = self.begin_write().await?;
        let mut seqs = Vec::with_capacity(batches.len());
        for NewObservationBatch { rollout_id: rollout, items } in batches {
            let exists = sqlx::query("SELECT 1 FROM rollouts WHERE id = $1")
                .bind(&rollout)
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend("reading a rollout"))?;
            if exists.is_none() {
                // Dropping the transaction rolls back the batches already inserted.
                return Err(StoreError::NotFound { what: format!("rollout {rollout}") });
            }
            let seq: i64 = sqlx::query_scalar(
                "INSERT INTO observation_batches (rollout, items, created_at) \
                 VALUES ($1, $2, $3) RETURNING seq",
            )
            .bind(&rollout)
            .bind(items)
            .bind(&now)
            .fetch_one(&mut *tx)
            .await
            .map_err(backend("appending an observation batch"))?;
            seqs.push(u64::try_from(seq).map_err(|_| {
                StoreError::Backend(format!("postgres: negative batch sequence number {seq}"))
            })?);
        }
        crate::store::commit(tx).await?;
        Ok(seqs)
    }

    pub(crate) async fn list_batches(
        &self,
        rollout_id: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<ObservationBatch>, StoreError> {
        PageRequest::first(limit).validate()?;
        let rows = sqlx::query(
            "SELECT * FROM observation_batches WHERE rollout = $1 AND seq > $2 \
             ORDER BY seq ASC LIMIT $3",
        )
        .bind(rollout_id)
        .bind(to_i64_saturating(after))
        .bind(i64::from(limit))
        .fetch_all(self.reader())
        .await
        .map_err(backend("listing observation batches"))?;
        rows.iter().map(batch).collect()
    }

    /// One checkpoint: [`PostgresStore::checkpoint_many`] with a single item.
    pub(crate) async fn checkpoint(
        &self,
        id: &str,
        expected_revision: u64,
        status: Value,
        folded_through: u64,
    ) -> Result<RolloutRecord, StoreError> {
        let item = CheckpointWrite { id: id.to_owned(), expected_revision, status, folded_through };
        self.checkpoint_many(vec![item]).await?.pop().unwrap_or_else(|| {
            Err(StoreError::Backend("a checkpoint of one rollout gave no result".into()))
        })
    }

    /// Every checkpoint of `items` in one transaction (one durable commit). An item whose
    /// rollout moved on (a conflict), is gone or whose status cannot be encoded gets its own
    /// error and writes nothing; an error of the database rolls the whole transaction back.
    pub(crate) async fn checkpoint_many(
        &self,
        items: Vec<CheckpointWrite>,
    ) -> Result<Vec<Result<RolloutRecord, StoreError>>, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut out = Vec::with_capacity(items.len());
        for it in items {
            match write_status(
                &mut tx,
                &it.id,
                it.expected_revision,
                it.status,
                "saving a rollout's checkpoint",
            )
            .await
            {
                Ok(cur) => {
                    delete_folded(&mut tx, &it.id, it.folded_through).await?;
                    out.push(Ok(cur));
                }
                Err(e @ (StoreError::Backend(_) | StoreError::Unavailable(_))) => return Err(e),
                Err(e) => out.push(Err(e)),
            }
        }
        crate::store::commit(tx).await?;
        Ok(out)
    }

    pub(crate) async fn prune_batches(
        &self,
        rollout_id: &str,
        through: u64,
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = delete_folded(&mut tx, rollout_id, through).await?;
        tx.commit().await.map_err(backend("committing a prune"))?;
        Ok(done)
    }
}

/// Deletes the batches of `rollout_id` up to `through` inside the caller's transaction and
/// returns how many.
async fn delete_folded(
    conn: &mut sqlx::PgConnection,
    rollout_id: &str,
    through: u64,
) -> Result<u64, StoreError> {
    let done = sqlx::query("DELETE FROM observation_batches WHERE rollout = $1 AND seq <= $2")
        .bind(rollout_id)
        .bind(to_i64_saturating(through))
        .execute(&mut *conn)
        .await
        .map_err(backend("deleting folded observation batches"))?;
    Ok(done.rows_affected())
}
