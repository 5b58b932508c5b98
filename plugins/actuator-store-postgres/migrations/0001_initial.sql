-- Schema of the actuator's PostgreSQL store: the same tables, columns and meaning as the
-- SQLite store's schema after all its migrations.
--
-- Integers are BIGINT (the store refuses values above i64::MAX), timestamps are RFC 3339 UTC
-- strings with microseconds (they sort as text), and JSON documents are TEXT exactly as
-- serde_json wrote them (the audit chain hashes those bytes). Every text column compares in
-- the "C" collation, byte by byte, whatever the database's locale: listings page by text
-- cursors and the audit's target filter is a byte range.

CREATE TABLE slots (
    name            TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    description     TEXT COLLATE "C" NOT NULL,
    schema          TEXT COLLATE "C",
    active_version  BIGINT,
    latest_version  BIGINT NOT NULL CHECK (latest_version >= 0),
    revision        BIGINT NOT NULL CHECK (revision >= 1),
    created_at      TEXT COLLATE "C" NOT NULL,
    updated_at      TEXT COLLATE "C" NOT NULL
);

CREATE TABLE versions (
    slot        TEXT COLLATE "C" NOT NULL REFERENCES slots (name),
    version     BIGINT NOT NULL CHECK (version >= 1),
    document    TEXT COLLATE "C" NOT NULL,
    author      TEXT COLLATE "C" NOT NULL,
    message     TEXT COLLATE "C" NOT NULL,
    created_at  TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (slot, version)
);

ALTER TABLE slots ADD FOREIGN KEY (name, active_version) REFERENCES versions (slot, version);

CREATE TABLE snapshots (
    id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    slot        TEXT COLLATE "C" NOT NULL REFERENCES slots (name),
    version     BIGINT NOT NULL,
    document    TEXT COLLATE "C" NOT NULL,
    label       TEXT COLLATE "C" NOT NULL,
    created_by  TEXT COLLATE "C" NOT NULL,
    created_at  TEXT COLLATE "C" NOT NULL,
    FOREIGN KEY (slot, version) REFERENCES versions (slot, version)
);

CREATE INDEX snapshots_by_slot ON snapshots (slot, id);

CREATE TABLE audit (
    seq         BIGINT NOT NULL PRIMARY KEY CHECK (seq >= 1),
    id          TEXT COLLATE "C" NOT NULL UNIQUE,
    at          TEXT COLLATE "C" NOT NULL,
    actor       TEXT COLLATE "C" NOT NULL,
    action      TEXT COLLATE "C" NOT NULL,
    target      TEXT COLLATE "C" NOT NULL,
    diff        TEXT COLLATE "C",
    outcome     TEXT COLLATE "C" NOT NULL CHECK (outcome IN ('success', 'failure')),
    error       TEXT COLLATE "C",
    metadata    TEXT COLLATE "C" NOT NULL,
    prev_hash   TEXT COLLATE "C" NOT NULL,
    hash        TEXT COLLATE "C" NOT NULL
);

CREATE INDEX audit_by_target ON audit (target, seq);

-- The head of the audit chain: at most one row, written with every audit entry. It catches
-- a deleted tail, which the chain alone cannot.
CREATE TABLE audit_head (
    id      BIGINT NOT NULL PRIMARY KEY CHECK (id = 1),
    seq     BIGINT NOT NULL,
    hash    TEXT COLLATE "C" NOT NULL
);

-- The last verified head of the audit chain: at most one row, moved by a verification only
-- after every entry up to it verified (or every problem up to it was acknowledged).
CREATE TABLE audit_verified_head (
    id          BIGINT NOT NULL PRIMARY KEY CHECK (id = 1),
    seq         BIGINT NOT NULL,
    hash        TEXT COLLATE "C" NOT NULL,
    verified_at TEXT COLLATE "C" NOT NULL
);

-- `seq` orders rollouts by creation and is the listing cursor; `id` is the public id. Writes
-- are serialised by the store's write lock, so `seq` also follows commit order.
-- `stable_version`: the slot's active version read in the transaction that admitted the
-- rollout. `route` and the two counts are derived from the status at each write, so the hot
-- reads need no status.
CREATE TABLE rollouts (
    seq                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id                   TEXT COLLATE "C" NOT NULL UNIQUE,
    slot                 TEXT COLLATE "C" NOT NULL REFERENCES slots (name),
    strategy             TEXT COLLATE "C" NOT NULL,
    state                TEXT COLLATE "C" NOT NULL,
    request              TEXT COLLATE "C" NOT NULL,
    status               TEXT COLLATE "C" NOT NULL,
    revision             BIGINT NOT NULL CHECK (revision >= 1),
    created_at           TEXT COLLATE "C" NOT NULL,
    updated_at           TEXT COLLATE "C" NOT NULL,
    stable_version       BIGINT,
    route                TEXT COLLATE "C",
    rollbacks_automatic  BIGINT NOT NULL DEFAULT 0 CHECK (rollbacks_automatic >= 0),
    rollbacks_manual     BIGINT NOT NULL DEFAULT 0 CHECK (rollbacks_manual >= 0)
);

CREATE INDEX rollouts_by_slot ON rollouts (slot, seq);

-- At most one active (non-terminal) rollout per slot. The terminal states are those of
-- `DeploymentState::is_terminal`; a unit test keeps this list in step with it.
CREATE UNIQUE INDEX rollouts_one_active_per_slot ON rollouts (slot)
    WHERE state NOT IN ('completed', 'rolled_back', 'failed', 'aborted');

-- The routing book's read of the routes of active rollouts.
CREATE INDEX rollouts_active_routes ON rollouts (seq)
    WHERE state NOT IN ('completed', 'rolled_back', 'failed', 'aborted');

-- Durable observation batches: one row per acknowledged batch per rollout, appended before
-- the batch is acknowledged and deleted by the checkpoint that folds it into the rollout's
-- saved status (in the same transaction). An identity never hands out a number twice, and
-- appends hold the write lock, so "every batch above the checkpoint's sequence" is exactly
-- what the checkpoint has not seen.
CREATE TABLE observation_batches (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rollout     TEXT COLLATE "C" NOT NULL REFERENCES rollouts (id),
    items       TEXT COLLATE "C" NOT NULL,
    created_at  TEXT COLLATE "C" NOT NULL
);

CREATE INDEX observation_batches_by_rollout ON observation_batches (rollout, seq);

-- One row written by the store's readiness probe after a failed write, to find out whether
-- writes work again without waiting for a real write.
CREATE TABLE store_probe (
    id  BIGINT NOT NULL PRIMARY KEY CHECK (id = 1),
    at  TEXT COLLATE "C" NOT NULL
);

-- API tokens: the secret's SHA-256 only, never the secret.
CREATE TABLE api_tokens (
    name       TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    role       TEXT COLLATE "C" NOT NULL,
    hash       TEXT COLLATE "C" NOT NULL UNIQUE,
    created_at TEXT COLLATE "C" NOT NULL
);
