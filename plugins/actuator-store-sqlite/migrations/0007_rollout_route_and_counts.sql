-- Columns derived from a rollout's status at each write, so the hot reads need no status:
-- `route` is `status.route` (what the routing book loads for every active rollout at start and
-- on each resync), and the two counts are the rollbacks the status records (what the engine's
-- statistics sum at start).
ALTER TABLE rollouts ADD COLUMN route TEXT;
ALTER TABLE rollouts ADD COLUMN rollbacks_automatic INTEGER NOT NULL DEFAULT 0 CHECK (rollbacks_automatic >= 0);
ALTER TABLE rollouts ADD COLUMN rollbacks_manual INTEGER NOT NULL DEFAULT 0 CHECK (rollbacks_manual >= 0);
-- The routing book's read, answered from this index alone: in the table the route comes after
-- the status, and reading a column that follows a large one walks that one's overflow pages.
CREATE INDEX rollouts_active_routes ON rollouts (seq, id, slot, revision, route, state)
    WHERE state NOT IN ('completed', 'rolled_back', 'failed', 'aborted');
-- backfill: the same derivation for the rows written before these columns existed
UPDATE rollouts SET
    route = CASE WHEN json_type(status, '$.route') = 'object' THEN json_extract(status, '$.route') END,
    rollbacks_automatic =
        (SELECT COUNT(*) FROM json_each(status, '$.past_rollbacks')
          WHERE json_extract(value, '$.automatic') = 1
            AND coalesce(json_extract(value, '$.reason.kind'), '') <> 'aborted')
        + (CASE WHEN json_type(status, '$.rollback') = 'object'
                 AND json_extract(status, '$.rollback.automatic') = 1
                 AND coalesce(json_extract(status, '$.rollback.reason.kind'), '') <> 'aborted'
            THEN 1 ELSE 0 END),
    rollbacks_manual =
        (SELECT COUNT(*) FROM json_each(status, '$.past_rollbacks')
          WHERE coalesce(json_extract(value, '$.automatic'), 0) <> 1
            AND coalesce(json_extract(value, '$.reason.kind'), '') <> 'aborted')
        + (CASE WHEN json_type(status, '$.rollback') = 'object'
                 AND coalesce(json_extract(status, '$.rollback.automatic'), 0) <> 1
                 AND coalesce(json_extract(status, '$.rollback.reason.kind'), '') <> 'aborted'
            THEN 1 ELSE 0 END);
