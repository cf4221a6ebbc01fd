-- Ownership, cluster membership and cross-quiz leagues, on SQLite. Keep it in step with
-- migrations/postgres. 0001 is applied in databases in the wild: change the schema here or in
-- a later file, never there.

-- The node that claimed the quiz at its current epoch; NULL until the first claim.
ALTER TABLE quizzes ADD COLUMN owner TEXT;

-- One lease per shard node. Expired leases stay until released or renewed: the router decides
-- what an expired lease means, and a node that comes back renews the same row.
CREATE TABLE node_leases (
    node         TEXT    NOT NULL PRIMARY KEY,
    ws_url       TEXT    NOT NULL,
    cluster_addr TEXT    NOT NULL,
    weight       INTEGER NOT NULL,
    draining     INTEGER NOT NULL CHECK (draining IN (0, 1)),
    renewed_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Leagues (the embedded store's; Redis keeps its own). `league` is `week:2026-W48` or
-- `all-time`. No foreign key to quizzes: a league is derived data that outlives its quizzes.
--
-- What each quiz has contributed to each user's league score: the largest total recorded, so
-- that recording a total again adds nothing and a larger one adds only the difference.
CREATE TABLE league_contrib (
    league  TEXT    NOT NULL,
    quiz    TEXT    NOT NULL,
    user_id TEXT    NOT NULL,
    points  INTEGER NOT NULL,
    PRIMARY KEY (league, quiz, user_id)
) STRICT, WITHOUT ROWID;

-- Each user's league score: the sum of their contributions, kept up to date with them.
CREATE TABLE league_scores (
    league  TEXT    NOT NULL,
    user_id TEXT    NOT NULL,
    points  INTEGER NOT NULL,
    PRIMARY KEY (league, user_id)
) STRICT, WITHOUT ROWID;

-- league(): best first, ties by user id, read off the front of the index.
CREATE INDEX league_scores_rank ON league_scores (league, points DESC, user_id);
