-- The last verified head of the audit chain: at most one row, moved by a verification only
-- after every entry up to it verified (or every problem up to it was acknowledged). An
-- incremental verification walks only the entries after it; a full verification that finds a
-- problem before it moves it back.
CREATE TABLE audit_verified_head (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    seq         INTEGER NOT NULL,
    hash        TEXT NOT NULL,
    verified_at TEXT NOT NULL
);
