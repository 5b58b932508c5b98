-- Replicas and one leader (additive: replicas that predate it ignore these tables).
--
-- The lease: one row. `epoch` is the fencing token, bumped by each election; `holder`, `url`
-- and `backend_pid` name the leader and the server backend of its lease connection (which
-- holds the session advisory lock); `renewed_at` is moved by the leader on the database's
-- clock, and a lease older than the lease length is taken over.
CREATE TABLE cluster_lease (
    id          BIGINT NOT NULL PRIMARY KEY CHECK (id = 1),
    epoch       BIGINT NOT NULL CHECK (epoch >= 0),
    holder      TEXT COLLATE "C",
    url         TEXT COLLATE "C",
    backend_pid INT,
    since       TEXT COLLATE "C",
    renewed_at  TIMESTAMPTZ
);

INSERT INTO cluster_lease (id, epoch) VALUES (1, 0);

-- Every replica's row, upserted on each poll of its election. Times are RFC 3339 UTC text.
CREATE TABLE cluster_replicas (
    id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    url         TEXT COLLATE "C" NOT NULL,
    role        TEXT COLLATE "C" NOT NULL CHECK (role IN ('leader', 'follower')),
    started_at  TEXT COLLATE "C" NOT NULL,
    last_seen   TEXT COLLATE "C" NOT NULL,
    last_sync   TEXT COLLATE "C"
);
