//! Durable observation batches: appended in one transaction before they are acknowledged,
//! listed for replay on start, and deleted by the checkpoint that folds them in.

use actuator_core::audit::truncate_to_micros;
use actuator_core::store::{
    CheckpointWrite, NewObservationBatch, ObservationBatch, PageRequest, RolloutRecord, StoreError,
};
use chrono::Utc;
use serde_json::Value;
use sqlx::sqlite::SqliteRow;

use crate::rows::{Cols, backend, fmt_ts, to_i64_saturating};
use crate::store::{SqliteStore, write_status};

fn batch(row: &SqliteRow) -> Result<ObservationBatch, StoreError> {
    let c = Cols::new(row, "observation_batches");
    Ok(ObservationBatch {
        seq: c.u64("seq")?,
        rollout_id: c.text("rollout")?,
        items: c.text("items")?,
        created_at: c.ts("created_at")?,
    })
}

impl SqliteStore {
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
            let exists = sqlx::query("SELECT 1 FROM rollouts WHERE id = ?1")
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
                 VALUES (?1, ?2, ?3) RETURNING seq",
            )
            .bind(&rollout)
            .bind(items)
            .bind(&now)
            .fetch_one(&mut *tx)
            .await
            .map_err(backend("appending an observation batch"))?;
            seqs.push(u64::try_from(seq).map_err(|_| {
                StoreError::Backend(format!("sqlite: negative batch sequence number {seq}"))
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
            "SELECT * FROM observation_batches WHERE rollout = ?1 AND seq > ?2 \
             ORDER BY seq ASC LIMIT ?3",
        )
        .bind(rollout_id)
        .bind(to_i64_saturating(after))
        .bind(i64::from(limit))
        .fetch_all(self.reader())
        .await
        .map_err(backend("listing observation batches"))?;
        rows.iter().map(batch).collect()
    }

    /// One checkpoint: [`SqliteStore::checkpoint_many`] with a single item.
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
    conn: &mut sqlx::SqliteConnection,
    rollout_id: &str,
    through: u64,
) -> Result<u64, StoreError> {
    let done = sqlx::query("DELETE FROM observation_batches WHERE rollout = ?1 AND seq <= ?2")
        .bind(rollout_id)
        .bind(to_i64_saturating(through))
        .execute(&mut *conn)
        .await
        .map_err(backend("deleting folded observation batches"))?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actuator_core::audit::AuditDraft;
    use actuator_core::config::{NewSlot, SlotName};
    use actuator_core::deployment::DeploymentStrategy;
    use actuator_core::state::DeploymentState;
    use actuator_core::store::{AppendVersion, NewRollout, Store};
    use serde_json::json;

    #[tokio::test]
    async fn appended_batches_survive_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.db");
        let store = SqliteStore::open(&path).await.unwrap();
        let slot = SlotName::new("chat").unwrap();
        store
            .create_slot(
                NewSlot { name: slot.clone(), description: String::new(), schema: None },
                AuditDraft::success("t", "slot.create", "chat"),
            )
            .await
            .unwrap();
        store
            .append_version(
                AppendVersion {
                    slot: slot.clone(),
                    expected_latest: 0,
                    document: json!({}),
                    author: "t".into(),
                    message: String::new(),
                    activate: true,
                },
                AuditDraft::success("t", "config.apply", "chat"),
            )
            .await
            .unwrap();
        store
            .create_rollout(
                NewRollout {
                    id: "r".into(),
                    slot,
                    strategy: DeploymentStrategy::Canary,
                    state: DeploymentState::Monitoring,
                    request: json!({}),
                    status: json!({}),
                    admission: Default::default(),
                },
                AuditDraft::success("t", "rollout.start", "r"),
            )
            .await
            .unwrap();
        let seqs = store
            .append_observation_batches(vec![NewObservationBatch {
                rollout_id: "r".into(),
                items: r#"{"items": [1, 2.5, "x"]}"#.into(),
            }])
            .await
            .unwrap();
        store.close().await;
        let again = SqliteStore::open(&path).await.unwrap();
        let got = again.list_observation_batches("r", 0, 10).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].seq, seqs[0]);
        assert_eq!(got[0].items, r#"{"items": [1, 2.5, "x"]}"#);
    }

    /// A slot `slot` with an active version and a monitored rollout `id` on it.
    async fn rollout_on(store: &SqliteStore, slot: &str, id: &str) {
        let name = SlotName::new(slot).unwrap();
        store
            .create_slot(
                NewSlot { name: name.clone(), description: String::new(), schema: None },
                AuditDraft::success("t", "slot.create", slot),
            )
            .await
            .unwrap();
        store
            .append_version(
                AppendVersion {
                    slot: name.clone(),
                    expected_latest: 0,
                    document: json!({}),
                    author: "t".into(),
                    message: String::new(),
                    activate: true,
                },
                AuditDraft::success("t", "config.apply", slot),
            )
            .await
            .unwrap();
        store
            .create_rollout(
                NewRollout {
                    id: id.into(),
                    slot: name,
                    strategy: DeploymentStrategy::Canary,
                    state: DeploymentState::Monitoring,
                    request: json!({}),
                    status: json!({"n": 0}),
                    admission: Default::default(),
                },
                AuditDraft::success("t", "rollout.start", id),
            )
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_group_checkpoint_writes_every_item_but_the_one_that_conflicts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.db");
        let store = SqliteStore::open(&path).await.unwrap();
        for (slot, id) in [("a", "ra"), ("b", "rb"), ("c", "rc")] {
            rollout_on(&store, slot, id).await;
        }
        let seqs = store
            .append_observation_batches(
                ["ra", "rb", "rc"]
                    .iter()
                    .map(|r| NewObservationBatch { rollout_id: (*r).into(), items: "{}".into() })
                    .collect(),
            )
            .await
            .unwrap();
        let rev = store.get_rollout("rb").await.unwrap().unwrap().revision;
        let item =
            |id: &str, expected_revision: u64, n: u64, folded_through: u64| CheckpointWrite {
                id: id.into(),
                expected_revision,
                status: json!({"n": n}),
                folded_through,
            };
        let out = store
            .checkpoint_rollouts(vec![
                item("ra", rev, 1, seqs[0]),
                item("rb", rev + 7, 2, seqs[1]),
                item("rc", rev, 3, seqs[2]),
                item("gone", 1, 4, 0),
            ])
            .await
            .unwrap();
        assert_eq!(out.len(), 4);
        assert_eq!(out[0].as_ref().unwrap().status, json!({"n": 1}));
        assert!(matches!(out[1], Err(StoreError::Conflict { .. })), "{:?}", out[1]);
        assert_eq!(out[2].as_ref().unwrap().status, json!({"n": 3}));
        assert!(matches!(out[3], Err(StoreError::NotFound { .. })), "{:?}", out[3]);
        store.close().await;
        // Durable, and the conflicting item wrote nothing: neither its status nor the
        // deletion of its batches.
        let again = SqliteStore::open(&path).await.unwrap();
        for (id, n, batches) in [("ra", 1, 0), ("rb", 0, 1), ("rc", 3, 0)] {
            let rec = again.get_rollout(id).await.unwrap().unwrap();
            assert_eq!(rec.status, json!({"n": n}), "{id}");
            let left = again.list_observation_batches(id, 0, 10).await.unwrap();
            assert_eq!(left.len(), batches, "{id}");
        }
    }
}
