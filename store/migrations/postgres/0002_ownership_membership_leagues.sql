-- Ownership, cluster membership and cross-quiz leagues, on PostgreSQL. Keep it in step with
-- migrations/sqlite. 0001 is applied in databases in the wild: change the schema here or in a
-- later file, never there. Ids that are listed in order are `COLLATE "C"`: byte order, as
-- SQLite, Redis and Rust sort them, whatever the database's locale.

-- The node that claimed the quiz at its current epoch; NULL until the first claim. Adding a
-- nullable column without a default rewrites nothing.
ALTER TABLE quizzes ADD COLUMN owner TEXT;

-- One lease per shard node. Expired leases stay until released or renewed: the router decides
-- what an expired lease means, and a node that comes back renews the same row.
CREATE TABLE node_leases (
    node         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    ws_url       TEXT    NOT NULL,
    cluster_addr TEXT    NOT NULL,
    weight       BIGINT  NOT NULL,
    draining     BOOLEAN NOT NULL,
    renewed_at   BIGINT  NOT NULL,
    expires_at   BIGINT  NOT NULL
);

-- Leagues (the embedded store's; Redis keeps its own). `league` is `week:2026-W48` or
-- `all-time`. No foreign key to quizzes: a league is derived data that outlives its quizzes.
--
-- What each quiz has contributed to each user's league score: the largest total recorded, so
-- that recording a total again adds nothing and a larger one adds only the difference.
CREATE TABLE league_contrib (
    league  TEXT COLLATE "C" NOT NULL,
    quiz    TEXT COLLATE "C" NOT NULL,
    user_id TEXT COLLATE "C" NOT NULL,
    points  BIGINT NOT NULL,
    PRIMARY KEY (league, quiz, user_id)
);

-- Each user's league score: the sum of their contributions, kept up to date with them.
CREATE TABLE league_scores (
    league  TEXT COLLATE "C" NOT NULL,
    user_id TEXT COLLATE "C" NOT NULL,
    points  BIGINT NOT NULL,
    PRIMARY KEY (league, user_id)
);

-- league(): best first, ties by user id, read off the front of the index.
CREATE INDEX league_scores_rank ON league_scores (league, points DESC, user_id);
