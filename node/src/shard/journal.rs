//! A quiz's journal: the writes its actor owes the stores, made in order and in batches
//! (group commit).
//!
//! One batch is in flight at a time. While it is written, new work queues up and goes in the
//! next batch, so under load each round trip carries many answers. A batch has two parts:
//!
//! - The **durable** part, in the SQL store: players, then answers (an answer names its
//!   player), then the quiz's progress. Answers are acknowledged only once this part is done.
//! - The **board** part, in the leaderboard store (Redis Cluster in production): the new
//!   answers, kicked players and league totals. It is derived data, rebuilt from the answer
//!   log when in doubt, so it never holds an ack back for long: after one failure the board is
//!   *behind*, batches skip it, and what it missed waits in a backlog that is retried with
//!   backoff. A store that lost a quiz's data asks for a rebuild from the log.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use quiz_engine::{AnswerRecord, PlayerRecord, Progress};
use quiz_protocol::{Epoch, PlayerNo, QuizId, UserId};
use quiz_store::{Appended, StoreError, Stores};

/// Durable and derived work not yet written.
#[derive(Default)]
pub(super) struct Journal {
    players: BTreeMap<PlayerNo, PlayerRecord>,
    /// The latest progress to save, and its version (see [`Journal::save_progress`]).
    progress: Option<(Progress, u64)>,
    answers: Vec<AnswerRecord>,
    board: Board,
    in_flight: bool,
    durable_failures: u32,
    durable_retry_at: Option<Instant>,
}

/// What the leaderboard store has not seen yet.
#[derive(Default)]
struct Board {
    backlog: Vec<AnswerRecord>,
    removals: Vec<PlayerNo>,
    leagues: BTreeMap<UserId, u32>,
    /// The store lost this quiz's data: rebuild it from the answer log first.
    rebuild: bool,
    /// The last attempt failed: batches leave the board out until `retry_at`.
    behind: bool,
    failures: u32,
    retry_at: Option<Instant>,
}

/// One batch of writes.
pub(super) struct Batch {
    pub(super) players: Vec<PlayerRecord>,
    pub(super) progress: Option<(Progress, u64)>,
    pub(super) answers: Vec<AnswerRecord>,
    /// `None`: this batch leaves the board alone (it is behind and not due for a retry).
    pub(super) board: Option<BoardWork>,
}

/// The board part of a batch.
pub(super) struct BoardWork {
    backlog: Vec<AnswerRecord>,
    removals: Vec<PlayerNo>,
    leagues: Vec<(UserId, u32)>,
    rebuild: bool,
    week: String,
    /// Answers of the quiz in the log before this batch, all counted by the board if it is
    /// up to date.
    logged: u64,
}

/// What writing a batch did.
pub(super) struct Written {
    pub(super) batch: Batch,
    pub(super) players: Result<(), StoreError>,
    /// `None` when the answers were not attempted (their players could not be written).
    pub(super) answers: Option<Result<Vec<Appended>, StoreError>>,
    pub(super) progress: Result<(), StoreError>,
    /// The answers now in the log that the board has not counted (it was skipped or failed).
    board_missed: Vec<AnswerRecord>,
    pub(super) board: Result<(), StoreError>,
    pub(super) elapsed: Duration,
}

impl Written {
    /// Whether a store refused a write because another node owns the quiz now.
    pub(super) fn fenced(&self) -> bool {
        fn fenced<T>(r: &Result<T, StoreError>) -> bool {
            matches!(r, Err(StoreError::Fenced { .. }))
        }
        fenced(&self.players)
            || self.answers.as_ref().is_some_and(fenced)
            || fenced(&self.progress)
            || fenced(&self.board)
    }

    /// The version of the progress this batch made durable, if it saved one.
    pub(super) fn progress_saved(&self) -> Option<u64> {
        self.batch
            .progress
            .as_ref()
            .filter(|_| self.progress.is_ok())
            .map(|(_, v)| *v)
    }
}

impl Journal {
    pub(super) fn save_player(&mut self, player: PlayerRecord) {
        self.players.insert(player.player, player);
    }

    /// Queues the quiz's progress; `version` grows with every call, so the actor can tell
    /// when a given phase change is durable.
    pub(super) fn save_progress(&mut self, progress: Progress, version: u64) {
        self.progress = Some((progress, version));
    }

    pub(super) fn append(&mut self, record: AnswerRecord) {
        self.answers.push(record);
    }

    /// Answers whose append failed with an unknown outcome: they are appended again (the
    /// append is idempotent), ahead of newer ones, until the log says what it holds. Their
    /// phones were told to retry; a retry waits for this.
    pub(super) fn append_again(&mut self, mut records: Vec<AnswerRecord>) {
        records.append(&mut self.answers);
        self.answers = records;
    }

    pub(super) fn remove_from_leaderboard(&mut self, player: PlayerNo) {
        self.board.removals.push(player);
    }

    /// A user's quiz total changed: their league contribution follows.
    pub(super) fn league_total(&mut self, user: UserId, total: u32) {
        self.board.leagues.insert(user, total);
    }

    /// Asks for the quiz's standings to be rebuilt from the answer log.
    pub(super) fn rebuild_board(&mut self) {
        self.board.rebuild = true;
        self.board.retry_at = None;
    }

    /// Answers waiting to be written (not counting the batch in flight).
    pub(super) fn queued_answers(&self) -> usize {
        self.answers.len()
    }

    fn durable_pending(&self) -> bool {
        !self.players.is_empty() || self.progress.is_some() || !self.answers.is_empty()
    }

    fn board_pending(&self) -> bool {
        let b = &self.board;
        b.rebuild || !b.backlog.is_empty() || !b.removals.is_empty() || !b.leagues.is_empty()
    }

    pub(super) fn is_empty(&self) -> bool {
        !self.durable_pending() && !self.board_pending()
    }

    pub(super) fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// Whether the leaderboard store is behind the log.
    pub(super) fn board_behind(&self) -> bool {
        self.board.behind || self.board.rebuild
    }

    /// When a failed write may be tried again.
    pub(super) fn retry_at(&self) -> Option<Instant> {
        if self.in_flight {
            return None;
        }
        let durable = self.durable_retry_at.filter(|_| self.durable_pending());
        let board = self.board.retry_at.filter(|_| self.board_pending());
        match (durable, board) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next batch, if nothing is in flight and something is due. `logged` is how many
    /// answers of the quiz are in the log (all settled: nothing is in flight).
    pub(super) fn take_batch(
        &mut self,
        max_answers: usize,
        week: &str,
        logged: u64,
        now: Instant,
    ) -> Option<Batch> {
        if self.in_flight {
            return None;
        }
        // After a failure everything waits for the backoff, answers included (their phones
        // were answered `unavailable` and retry on their own schedule).
        let durable_due = self.durable_pending() && self.durable_retry_at.is_none_or(|t| now >= t);
        let board_due = self.board.retry_at.is_none_or(|t| now >= t);
        let board_now = board_due && (durable_due || self.board_pending());
        if !durable_due && !board_now {
            return None;
        }
        let (players, progress, answers) = if durable_due {
            let n = self.answers.len().min(max_answers);
            (
                std::mem::take(&mut self.players).into_values().collect(),
                self.progress.take(),
                self.answers.drain(..n).collect(),
            )
        } else {
            (Vec::new(), None, Vec::new())
        };
        let board = board_now.then(|| BoardWork {
            backlog: std::mem::take(&mut self.board.backlog),
            removals: std::mem::take(&mut self.board.removals),
            leagues: std::mem::take(&mut self.board.leagues)
                .into_iter()
                .collect(),
            rebuild: std::mem::take(&mut self.board.rebuild),
            week: week.to_owned(),
            logged,
        });
        self.in_flight = true;
        Some(Batch {
            players,
            progress,
            answers,
            board,
        })
    }

    /// Takes back what a written batch failed to write (answers excepted: their phones are
    /// told to retry), keeping anything newer that queued meanwhile.
    pub(super) fn settle(&mut self, written: Written, now: Instant) {
        self.in_flight = false;
        let batch = written.batch;
        let mut durable_failed = false;
        if written.players.is_err() {
            durable_failed = true;
            for p in batch.players {
                self.players.entry(p.player).or_insert(p);
            }
        }
        if written.progress.is_err() {
            durable_failed = true;
            if self.progress.is_none() {
                self.progress = batch.progress;
            }
        }
        (self.durable_failures, self.durable_retry_at) =
            next_try(durable_failed, self.durable_failures, now);

        let board = &mut self.board;
        let mut missed = written.board_missed;
        match (batch.board, &written.board) {
            (Some(_), Ok(())) => {
                board.behind = false;
                (board.failures, board.retry_at) = (0, None);
            }
            (Some(work), Err(e)) => {
                board.behind = true;
                board.rebuild |= work.rebuild || matches!(e, StoreError::NeedsRebuild(_));
                let mut removals = work.removals;
                removals.append(&mut board.removals);
                board.removals = removals;
                for (user, total) in work.leagues {
                    board.leagues.entry(user).or_insert(total);
                }
                (board.failures, board.retry_at) = next_try(true, board.failures, now);
            }
            (None, _) => {}
        }
        // Everything the board missed, oldest first, then what queued meanwhile.
        missed.append(&mut board.backlog);
        board.backlog = missed;
    }
}

/// Failure count and retry time after an attempt: exponential backoff from 50 ms to ~3 s.
fn next_try(failed: bool, failures: u32, now: Instant) -> (u32, Option<Instant>) {
    if !failed {
        return (0, None);
    }
    let failures = failures + 1;
    let backoff = Duration::from_millis(50u64 << failures.min(6));
    (failures, Some(now + backoff))
}

/// Writes one batch: players, answers, progress (durable), then the board.
pub(super) async fn write(stores: Stores, quiz: QuizId, epoch: Epoch, batch: Batch) -> Written {
    let started = Instant::now();
    let players = match batch.players.as_slice() {
        [] => Ok(()),
        [one] => stores.quizzes.save_player(&quiz, epoch, one).await,
        many => stores.quizzes.save_players(&quiz, epoch, many).await,
    };
    let answers = match (&players, batch.answers.is_empty()) {
        (Err(_), _) => None,
        (Ok(()), true) => Some(Ok(Vec::new())),
        (Ok(()), false) => Some(stores.answers.append(epoch, &batch.answers).await),
    };
    let progress = match &batch.progress {
        Some((p, _)) => stores.quizzes.save_progress(&quiz, epoch, p).await,
        None => Ok(()),
    };
    // The answers now in the log that the board must count: those inserted, and those an
    // earlier, failed-looking attempt had already inserted.
    let mut fresh = Vec::new();
    if let Some(Ok(outcomes)) = &answers {
        for (record, outcome) in batch.answers.iter().zip(outcomes) {
            match outcome {
                Appended::Inserted => fresh.push(record.clone()),
                Appended::Existing(e) if e.answer_id == record.answer_id => fresh.push(e.clone()),
                Appended::Existing(_) => {}
            }
        }
    }
    let (board, board_missed) = match &batch.board {
        None => (Ok(()), fresh),
        Some(work) => match write_board(&stores, &quiz, epoch, work, &fresh).await {
            Ok(()) => (Ok(()), Vec::new()),
            Err(e) => {
                let mut missed = work.backlog.clone();
                missed.extend(fresh);
                (Err(e), missed)
            }
        },
    };
    Written {
        batch,
        players,
        answers,
        progress,
        board_missed,
        board,
        elapsed: started.elapsed(),
    }
}

/// The board part: a rebuild from the log if asked, else the backlog and the fresh answers;
/// then removals and league totals.
async fn write_board(
    stores: &Stores,
    quiz: &QuizId,
    epoch: Epoch,
    work: &BoardWork,
    fresh: &[AnswerRecord],
) -> Result<(), StoreError> {
    let lb = &stores.leaderboards;
    if work.rebuild {
        rebuild(stores, quiz, epoch).await?;
    } else {
        let mut records = work.backlog.clone();
        records.extend_from_slice(fresh);
        if !records.is_empty() {
            // A Redis failover can lose writes it had acknowledged: the board must count
            // every answer of the log. Fewer means some were lost: rebuild from the log.
            // (More can happen for a moment: an answer whose append looked failed but went
            // through is in the log before this node counts it.)
            let counted = lb.apply_counted(quiz, epoch, &records).await?;
            let expected = work.logged + fresh.len() as u64;
            if counted < expected {
                tracing::warn!(%quiz, counted, expected, "the leaderboard store lost answers");
                return Err(StoreError::NeedsRebuild(quiz.clone()));
            }
        }
    }
    for p in &work.removals {
        lb.remove_player(quiz, epoch, *p).await?;
    }
    if !work.leagues.is_empty() {
        lb.record_league(quiz, &work.week, &work.leagues).await?;
    }
    Ok(())
}

/// Rebuilds a quiz's standings in the leaderboard store from its answer log.
pub(crate) async fn rebuild(
    stores: &Stores,
    quiz: &QuizId,
    epoch: Epoch,
) -> Result<(), StoreError> {
    let records = stores.answers.answers(quiz).await?;
    let kicked: Vec<PlayerNo> = stores
        .quizzes
        .players(quiz)
        .await?
        .into_iter()
        .filter(|p| p.kicked)
        .map(|p| p.player)
        .collect();
    tracing::info!(%quiz, answers = records.len(), "rebuilding the leaderboard from the answer log");
    stores
        .leaderboards
        .rebuild(quiz, epoch, &records, &kicked)
        .await
}
