-- The quiz store's schema on SQLite. Keep it in step with migrations/postgres: same tables,
-- same column names. Times are milliseconds since the Unix epoch, JSON documents are TEXT and
-- booleans are INTEGER 0/1 (the Any driver maps no date, JSON or SQLite boolean types).
-- STRICT tables make SQLite refuse a value of the wrong type instead of storing it.

CREATE TABLE question_sets (
    id         TEXT    NOT NULL PRIMARY KEY,
    title      TEXT    NOT NULL,
    body       TEXT    NOT NULL, -- the whole QuestionSet, as JSON
    questions  INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

-- A quiz, its content snapshot, its ownership epoch and its progress. The progress is in
-- columns, not a JSON blob, so phase changes can be queried and watched.
CREATE TABLE quizzes (
    id           TEXT    NOT NULL PRIMARY KEY,
    title        TEXT    NOT NULL,
    host         TEXT    NOT NULL,
    question_set TEXT    NOT NULL,
    settings     TEXT    NOT NULL, -- QuizSettings, as JSON
    questions    TEXT    NOT NULL, -- the questions picked at creation, as JSON
    created_at   INTEGER NOT NULL,
    epoch        INTEGER NOT NULL, -- fencing epoch of the owner; only goes up
    phase        TEXT    NOT NULL,
    question     INTEGER,
    opened_at    INTEGER,
    paused_ms    INTEGER NOT NULL,
    paused_at    INTEGER,
    phase_at     INTEGER NOT NULL,
    seq          INTEGER NOT NULL
) STRICT;

-- live_quizzes() reads only this; the predicate must match the query's literally.
CREATE INDEX quizzes_live ON quizzes (id) WHERE phase <> 'ended';

CREATE TABLE players (
    quiz              TEXT    NOT NULL REFERENCES quizzes (id),
    player            INTEGER NOT NULL,
    user_id           TEXT    NOT NULL,
    nickname          TEXT    NOT NULL,
    joined_at         INTEGER NOT NULL,
    kicked            INTEGER NOT NULL CHECK (kicked IN (0, 1)),
    current_question  INTEGER, -- self-paced: the question this player has open
    current_opened_at INTEGER,
    PRIMARY KEY (quiz, player),
    UNIQUE (quiz, user_id)
) STRICT, WITHOUT ROWID;

-- THE ANSWER LOG: one row per (quiz, player, question), never two. The key is ordered
-- (quiz, question, player) so that it also serves answers(quiz), which reads in that order:
-- one B-tree on the answer-ack path instead of a key plus an index.
CREATE TABLE answers (
    quiz        TEXT    NOT NULL REFERENCES quizzes (id),
    player      INTEGER NOT NULL,
    question    INTEGER NOT NULL,
    answer_id   TEXT    NOT NULL,
    answer      TEXT    NOT NULL, -- Answer, as JSON
    received_at INTEGER NOT NULL,
    response_ms INTEGER NOT NULL,
    points      INTEGER NOT NULL,
    correct     INTEGER NOT NULL CHECK (correct IN (0, 1)),
    streak      INTEGER NOT NULL,
    epoch       INTEGER NOT NULL, -- the epoch of the owner that wrote it
    PRIMARY KEY (quiz, question, player)
) STRICT, WITHOUT ROWID;

-- The embedded leaderboard store (derived from the answer log, rebuildable).
CREATE TABLE lb_scores (
    quiz     TEXT    NOT NULL REFERENCES quizzes (id),
    player   INTEGER NOT NULL,
    score    INTEGER NOT NULL,
    tiebreak INTEGER NOT NULL, -- total response time of the answers that scored, in ms
    removed  INTEGER NOT NULL CHECK (removed IN (0, 1)), -- kicked: kept out for good
    PRIMARY KEY (quiz, player)
) STRICT, WITHOUT ROWID;

-- standings(): the leaderboard order, so the top N is read off the front of the index.
CREATE INDEX lb_scores_rank ON lb_scores (quiz, removed, score DESC, tiebreak, player);

-- Which answers have been counted, so that applying one twice counts it once.
CREATE TABLE lb_applied (
    quiz     TEXT    NOT NULL REFERENCES quizzes (id),
    question INTEGER NOT NULL,
    player   INTEGER NOT NULL,
    PRIMARY KEY (quiz, question, player)
) STRICT, WITHOUT ROWID;
