-- The quiz store's schema on PostgreSQL. Keep it in step with migrations/sqlite: same tables,
-- same column names. Times are milliseconds since the Unix epoch (BIGINT) and JSON documents
-- are TEXT, because the Any driver maps neither timestamps nor JSON. Every integer is BIGINT:
-- the Rust side binds i64, and u32 values do not all fit an INTEGER.

CREATE TABLE question_sets (
    id         TEXT   NOT NULL PRIMARY KEY,
    title      TEXT   NOT NULL,
    body       TEXT   NOT NULL, -- the whole QuestionSet, as JSON
    questions  BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- A quiz, its content snapshot, its ownership epoch and its progress. The progress is in
-- columns, not a JSON blob, so phase changes can be queried and watched.
CREATE TABLE quizzes (
    id           TEXT   NOT NULL PRIMARY KEY,
    title        TEXT   NOT NULL,
    host         TEXT   NOT NULL,
    question_set TEXT   NOT NULL,
    settings     TEXT   NOT NULL, -- QuizSettings, as JSON
    questions    TEXT   NOT NULL, -- the questions picked at creation, as JSON
    created_at   BIGINT NOT NULL,
    epoch        BIGINT NOT NULL, -- fencing epoch of the owner; only goes up
    phase        TEXT   NOT NULL,
    question     BIGINT,
    opened_at    BIGINT,
    paused_ms    BIGINT NOT NULL,
    paused_at    BIGINT,
    phase_at     BIGINT NOT NULL,
    seq          BIGINT NOT NULL
);

-- live_quizzes() reads only this; the predicate must match the query's literally.
CREATE INDEX quizzes_live ON quizzes (id) WHERE phase <> 'ended';

CREATE TABLE players (
    quiz              TEXT    NOT NULL REFERENCES quizzes (id),
    player            BIGINT  NOT NULL,
    user_id           TEXT    NOT NULL,
    nickname          TEXT    NOT NULL,
    joined_at         BIGINT  NOT NULL,
    kicked            BOOLEAN NOT NULL,
    current_question  BIGINT, -- self-paced: the question this player has open
    current_opened_at BIGINT,
    PRIMARY KEY (quiz, player),
    UNIQUE (quiz, user_id)
);

-- THE ANSWER LOG: one row per (quiz, player, question), never two. The key is ordered
-- (quiz, question, player) so that it also serves answers(quiz), which reads in that order:
-- one B-tree on the answer-ack path instead of a key plus an index.
CREATE TABLE answers (
    quiz        TEXT    NOT NULL REFERENCES quizzes (id),
    player      BIGINT  NOT NULL,
    question    BIGINT  NOT NULL,
    answer_id   TEXT    NOT NULL,
    answer      TEXT    NOT NULL, -- Answer, as JSON
    received_at BIGINT  NOT NULL,
    response_ms BIGINT  NOT NULL,
    points      BIGINT  NOT NULL,
    correct     BOOLEAN NOT NULL,
    streak      BIGINT  NOT NULL,
    epoch       BIGINT  NOT NULL, -- the epoch of the owner that wrote it
    PRIMARY KEY (quiz, question, player)
);

-- The embedded leaderboard store (derived from the answer log, rebuildable).
CREATE TABLE lb_scores (
    quiz     TEXT    NOT NULL REFERENCES quizzes (id),
    player   BIGINT  NOT NULL,
    score    BIGINT  NOT NULL,
    tiebreak BIGINT  NOT NULL, -- total response time of the answers that scored, in ms
    removed  BOOLEAN NOT NULL, -- kicked: kept out for good
    PRIMARY KEY (quiz, player)
);

-- standings(): the leaderboard order, so the top N is read off the front of the index.
CREATE INDEX lb_scores_rank ON lb_scores (quiz, removed, score DESC, tiebreak, player);

-- Which answers have been counted, so that applying one twice counts it once.
CREATE TABLE lb_applied (
    quiz     TEXT   NOT NULL REFERENCES quizzes (id),
    question BIGINT NOT NULL,
    player   BIGINT NOT NULL,
    PRIMARY KEY (quiz, question, player)
);
