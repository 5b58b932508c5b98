-- Admission and store faults.
--
-- `stable_version`: the slot's active version read in the transaction that admitted the
-- rollout (created it, or moved it back to an active state on retry). NULL for rollouts
-- admitted before this migration, and for slots that had no active version.
ALTER TABLE rollouts ADD COLUMN stable_version INTEGER;

-- One row written by the store's readiness probe after a failed write, to find out whether
-- writes work again (for example once disk space returns) without waiting for a real write.
CREATE TABLE store_probe (
    id  INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    at  TEXT    NOT NULL
) STRICT;
