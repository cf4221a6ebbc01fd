-- How many answers the embedded leaderboard counts per quiz, kept beside lb_applied so that
-- counting them (done after every batch, to notice lost writes) does not scan a big quiz's
-- rows. Keep it in step with migrations/sqlite.
CREATE TABLE lb_counts (
    quiz    TEXT   NOT NULL PRIMARY KEY REFERENCES quizzes (id),
    applied BIGINT NOT NULL
);

INSERT INTO lb_counts (quiz, applied) SELECT quiz, COUNT(*) FROM lb_applied GROUP BY quiz;
