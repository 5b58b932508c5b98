-- Initial schema of the actuator's SQLite store.
--
-- Integers are SQLite's signed 64-bit INTEGER (the store refuses values above i64::MAX),
-- timestamps are RFC 3339 UTC strings with microseconds (they sort as text), and JSON
-- documents are TEXT exactly as serde_json wrote them.

CREATE TABLE slots (
    name            TEXT    NOT NULL PRIMARY KEY,
    description     TEXT    NOT NULL,
    schema          TEXT,
    active_version  INTEGER,
    latest_version  INTEGER NOT NULL CHECK (latest_version >= 0),
    revision        INTEGER NOT NULL CHECK (revision >= 1),
    created_at      TEXT    NOT NULL,
    updated_at      TEXT    NOT NULL,
    FOREIGN KEY (name, active_version) REFERENCES versions (slot, version)
) STRICT;

CREATE TABLE versions (
    slot        TEXT    NOT NULL REFERENCES slots (name),
    version     INTEGER NOT NULL CHECK (version >= 1),
    document    TEXT    NOT NULL,
    author      TEXT    NOT NULL,
    message     TEXT    NOT NULL,
    created_at  TEXT    NOT NULL,
    PRIMARY KEY (slot, version)
) STRICT;

CREATE TABLE snapshots (
    id          TEXT    NOT NULL PRIMARY KEY,
    slot        TEXT    NOT NULL REFERENCES slots (name),
    version     INTEGER NOT NULL,
    document    TEXT    NOT NULL,
    label       TEXT    NOT NULL,
    created_by  TEXT    NOT NULL,
    created_at  TEXT    NOT NULL,
    FOREIGN KEY (slot, version) REFERENCES versions (slot, version)
) STRICT;

CREATE INDEX snapshots_by_slot ON snapshots (slot, id);

CREATE TABLE audit (
    seq         INTEGER NOT NULL PRIMARY KEY CHECK (seq >= 1),
    id          TEXT    NOT NULL UNIQUE,
    at          TEXT    NOT NULL,
    actor       TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    target      TEXT    NOT NULL,
    diff        TEXT,
    outcome     TEXT    NOT NULL CHECK (outcome IN ('success', 'failure')),
    error       TEXT,
    metadata    TEXT    NOT NULL,
    prev_hash   TEXT    NOT NULL,
    hash        TEXT    NOT NULL
) STRICT;

CREATE INDEX audit_by_target ON audit (target, seq);

-- The head of the audit chain: at most one row, written with every audit entry. It catches
-- a deleted tail, which the chain alone cannot.
CREATE TABLE audit_head (
    id      INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    seq     INTEGER NOT NULL,
    hash    TEXT    NOT NULL
) STRICT;

-- `seq` orders rollouts by creation and is the listing cursor; `id` is the public id.
CREATE TABLE rollouts (
    seq         INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    id          TEXT    NOT NULL UNIQUE,
    slot        TEXT    NOT NULL REFERENCES slots (name),
    strategy    TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    request     TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    revision    INTEGER NOT NULL CHECK (revision >= 1),
    created_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL
) STRICT;

CREATE INDEX rollouts_by_slot ON rollouts (slot, seq);

-- At most one active (non-terminal) rollout per slot. The terminal states are those of
-- `DeploymentState::is_terminal`; a unit test keeps this list in step with it.
CREATE UNIQUE INDEX rollouts_one_active_per_slot ON rollouts (slot)
    WHERE state NOT IN ('completed', 'rolled_back', 'failed');
