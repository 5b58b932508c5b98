-- Durable observation batches: one row per acknowledged batch per rollout, appended before
-- the batch is acknowledged and deleted by the checkpoint that folds it into the rollout's
-- saved status (in the same transaction). The table holds only what arrived since the last
-- checkpoint of each rollout.
--
-- AUTOINCREMENT: a sequence number is never reused, not even after its row is deleted, so
-- "every batch above the checkpoint's sequence" is exactly what the checkpoint has not seen.

CREATE TABLE observation_batches (
    seq         INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    rollout     TEXT    NOT NULL REFERENCES rollouts (id),
    items       TEXT    NOT NULL,
    created_at  TEXT    NOT NULL
) STRICT;

CREATE INDEX observation_batches_by_rollout ON observation_batches (rollout, seq);
