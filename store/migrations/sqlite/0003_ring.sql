-- The cluster ring, on SQLite. Keep it in step with migrations/postgres. 0001 and 0002 are
-- applied in databases in the wild: change the schema here or in a later file, never there.

-- The one ring every router and node agrees on: its members (JSON, a list of
-- `{node, weight, ws_url, cluster_addr}`) under an epoch that only grows. One row at most:
-- a router publishes epoch e + 1 only where the row holds e (a conditional UPDATE), or the
-- first ring by inserting the row, so two routers racing for one epoch cannot both win.
CREATE TABLE cluster_ring (
    id         INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    epoch      INTEGER NOT NULL CHECK (epoch >= 1),
    members    TEXT    NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
