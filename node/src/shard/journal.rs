//! A quiz's journal: the writes its actor owes the stores, made in order and in batches
//! (group commit), on two independent lanes.
//!
//! - The **durable** lane, in the SQL store: players, then answers (an answer names its
//!   player), then the quiz's progress. One batch in flight; what arrives meanwhile goes in
//!   the next, so under load each round trip carries many answers. Answers are acknowledged
//!   as soon as their batch is committed: the answer log is the record.
//! - The **board** lane, in the leaderboard store (Redis Cluster in production): answers the
//!   log now holds, kicked players and league totals. It is derived data, rebuilt from the
//!   log when in doubt, and never holds an ack back: it runs beside the durable lane, one batch
//!   in flight of its own, and what it has not applied waits in a backlog. After a failure it
//!   backs off; a store that lost a quiz's data asks for a rebuild from the log.
//!
//! A quiz loaded from the store starts by *verifying* the board: if the store counts as many
//! answers as the log, nothing is rewritten; otherwise the board is rebuilt, from the log as
//! the load read it (not read again).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use quiz_engine::{AnswerRecord, PlayerRecord, Progress};
use quiz_protocol::{Epoch, PlayerNo, QuizId, UserId};
use quiz_store::{Appended, StoreError, Stores};
use tokio::time::Instant;

/// Durable and derived work not yet written.
#[derive(Default)]
pub(super) struct Journal {
    players: BTreeMap<PlayerNo, PlayerRecord>,
    /// The outbox version of the latest player record queued (see [`Journal::save_player`]).
    players_version: u64,
    /// The latest progress to save, and its version (see [`Journal::save_progress`]).
    progress: Option<(Progress, u64)>,
    answers: Vec<AnswerRecord>,
    durable_in_flight: bool,
    durable_failures: u32,
    durable_retry_at: Option<Instant>,
    board: Board,
}

/// The log as a load read it: what a rebuild on load starts from.
pub(super) struct Loaded {
    pub(super) answers: Vec<AnswerRecord>,
    pub(super) kicked: Vec<PlayerNo>,
}

/// What the leaderboard store has not seen yet.
#[derive(Default)]
struct Board {
    /// Answers in the log that the board has not counted, oldest first.
    backlog: Vec<AnswerRecord>,
    removals: Vec<PlayerNo>,
    leagues: BTreeMap<UserId, u32>,
    /// Compare the store's count with the log first (a quiz just loaded).
    verify: bool,
    /// The store lost (or may have lost) this quiz's data: rebuild it from the log first.
    rebuild: bool,
    loaded: Option<Arc<Loaded>>,
    in_flight: bool,
    /// When the last batch was taken: regular batches are at least an interval apart, so
    /// that each carries many answers (on SQLite the board shares the log's one writer).
    last_taken: Option<Instant>,
    /// The last attempt failed.
    behind: bool,
    failures: u32,
    retry_at: Option<Instant>,
}

/// One batch of the durable lane.
pub(super) struct DurableBatch {
    pub(super) players: Vec<PlayerRecord>,
    pub(super) players_version: u64,
    pub(super) progress: Option<(Progress, u64)>,
    pub(super) answers: Vec<AnswerRecord>,
}

/// One batch of the board lane.
pub(super) struct BoardBatch {
    backlog: Vec<AnswerRecord>,
    removals: Vec<PlayerNo>,
    leagues: Vec<(UserId, u32)>,
    verify: bool,
    rebuild: bool,
    loaded: Option<Arc<Loaded>>,
    week: String,
    /// Answers of the quiz in the log, all of them counted by the board once this batch's
    /// backlog is applied.
    logged: u64,
}

/// What writing a batch did.
pub(super) enum Written {
    Durable(DurableWritten),
    Board(BoardWritten),
    /// The quiz's epoch as a read found it (`None`: the read failed), for refusals waiting to
    /// be confirmed (see the actor's `refuse`).
    OwnerChecked(Option<Epoch>),
}

pub(super) struct DurableWritten {
    pub(super) batch: DurableBatch,
    pub(super) players: Result<(), StoreError>,
    /// `None` when the answers were not attempted (their players could not be written).
    pub(super) answers: Option<Result<Vec<Appended>, StoreError>>,
    pub(super) progress: Result<(), StoreError>,
    pub(super) elapsed: Duration,
}

pub(super) struct BoardWritten {
    batch: BoardBatch,
    pub(super) result: Result<(), StoreError>,
    pub(super) elapsed: Duration,
}

impl DurableWritten {
    /// Whether a store refused a write because another node owns the quiz now.
    pub(super) fn fenced(&self) -> bool {
        fenced(&self.players) || self.answers.as_ref().is_some_and(fenced) || fenced(&self.progress)
    }

    /// The outbox version this batch made durable: every player record and progress queued
    /// up to it is in the store now. `None` when it carried neither, or when one of its writes
    /// failed: then all of them go again (see [`Journal::settle_durable`]), and the batch that
    /// succeeds covers them.
    pub(super) fn version_durable(&self) -> Option<u64> {
        if self.players.is_err() || self.progress.is_err() {
            return None;
        }
        let progress = self.batch.progress.as_ref().map(|(_, v)| *v);
        let players = (!self.batch.players.is_empty()).then_some(self.batch.players_version);
        progress.max(players)
    }
}

impl BoardWritten {
    pub(super) fn fenced(&self) -> bool {
        fenced(&self.result)
    }
}

fn fenced<T>(r: &Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::Fenced { .. }))
}

impl Journal {
    /// A journal for a quiz just loaded: its board is verified against the log first.
    pub(super) fn loaded(loaded: Option<Loaded>) -> Self {
        let mut journal = Journal::default();
        journal.board.verify = true;
        journal.board.loaded = loaded.map(Arc::new);
        journal
    }

    /// Queues a player's record; `version` is the outbox's, as for progress.
    pub(super) fn save_player(&mut self, player: PlayerRecord, version: u64) {
        self.players.insert(player.player, player);
        self.players_version = version;
    }

    /// Queues the quiz's progress; `version` grows with every durable change (progress or
    /// player record), so the actor can tell when a given change is durable.
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

    /// An answer is in the log: the board must count it.
    pub(super) fn logged(&mut self, record: AnswerRecord) {
        self.board.backlog.push(record);
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
        b.verify
            || b.rebuild
            || !b.backlog.is_empty()
            || !b.removals.is_empty()
            || !b.leagues.is_empty()
    }

    /// Nothing to write, nothing in flight.
    pub(super) fn is_idle(&self) -> bool {
        !self.durable_pending()
            && !self.board_pending()
            && !self.durable_in_flight
            && !self.board.in_flight
    }

    /// Durable work pending or in flight.
    pub(super) fn durable_busy(&self) -> bool {
        self.durable_in_flight || self.durable_pending()
    }

    /// Whether the leaderboard store is behind the log.
    pub(super) fn board_behind(&self) -> bool {
        self.board.behind || self.board.rebuild || self.board.verify
    }

    /// When a failed write may be tried again.
    pub(super) fn retry_at(&self) -> Option<Instant> {
        let durable = self
            .durable_retry_at
            .filter(|_| !self.durable_in_flight && self.durable_pending());
        let board = self
            .board
            .retry_at
            .filter(|_| !self.board.in_flight && self.board_pending());
        match (durable, board) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next durable batch, if none is in flight and something is due. After a failure
    /// everything waits for the backoff, answers included (their phones were answered
    /// `unavailable` and retry on their own schedule).
    pub(super) fn take_durable(
        &mut self,
        max_answers: usize,
        now: Instant,
    ) -> Option<DurableBatch> {
        let due = self.durable_retry_at.is_none_or(|t| now >= t);
        if self.durable_in_flight || !self.durable_pending() || !due {
            return None;
        }
        let n = self.answers.len().min(max_answers);
        self.durable_in_flight = true;
        Some(DurableBatch {
            players: std::mem::take(&mut self.players).into_values().collect(),
            players_version: std::mem::take(&mut self.players_version),
            progress: self.progress.take(),
            answers: self.answers.drain(..n).collect(),
        })
    }

    /// When the next board batch may be taken, if one is waiting: a verification or rebuild
    /// at once, other work an `every` after the previous batch (or the retry time after a
    /// failure). `None` while a batch is in flight or nothing waits.
    pub(super) fn board_due_at(&self, every: Duration, now: Instant) -> Option<Instant> {
        let b = &self.board;
        if b.in_flight || !self.board_pending() {
            return None;
        }
        let paced = match (b.verify || b.rebuild, b.last_taken) {
            (false, Some(last)) => Some(last + every),
            _ => None,
        };
        match (paced, b.retry_at) {
            (Some(a), Some(r)) => Some(a.max(r)),
            (a, r) => Some(a.or(r).unwrap_or(now)),
        }
    }

    /// The next board batch, if none is in flight and one is due (see
    /// [`Journal::board_due_at`]). `logged` is how many answers of the quiz the log holds as
    /// far as the actor has settled them.
    pub(super) fn take_board(
        &mut self,
        week: &str,
        logged: u64,
        every: Duration,
        now: Instant,
    ) -> Option<BoardBatch> {
        if self.board_due_at(every, now).is_none_or(|at| at > now) {
            return None;
        }
        let b = &mut self.board;
        b.in_flight = true;
        b.last_taken = Some(now);
        Some(BoardBatch {
            backlog: std::mem::take(&mut b.backlog),
            removals: std::mem::take(&mut b.removals),
            leagues: std::mem::take(&mut b.leagues).into_iter().collect(),
            verify: std::mem::take(&mut b.verify),
            rebuild: std::mem::take(&mut b.rebuild),
            loaded: b.loaded.clone(),
            week: week.to_owned(),
            logged,
        })
    }

    /// Takes back a durable batch that failed in part (answers excepted: their phones are
    /// told to retry, and the actor appends them again), keeping anything newer. Its player
    /// records and progress go again even if one of the two was written: what waits for them
    /// is released by the version of the batch that writes them all.
    pub(super) fn settle_durable(&mut self, written: DurableWritten, now: Instant) {
        self.durable_in_flight = false;
        let batch = written.batch;
        let records_failed = written.players.is_err() || written.progress.is_err();
        // A failure of the answers alone backs off too: the actor appends them again.
        let failed = records_failed || matches!(written.answers, Some(Err(_)));
        if records_failed {
            if !batch.players.is_empty() {
                self.players_version = self.players_version.max(batch.players_version);
            }
            for p in batch.players {
                self.players.entry(p.player).or_insert(p);
            }
            if self.progress.is_none() {
                self.progress = batch.progress;
            }
        }
        (self.durable_failures, self.durable_retry_at) =
            next_try(failed, self.durable_failures, now);
    }

    /// Takes back what a board batch failed to apply, keeping anything newer behind it.
    pub(super) fn settle_board(&mut self, written: BoardWritten, now: Instant) {
        let b = &mut self.board;
        b.in_flight = false;
        let work = written.batch;
        match &written.result {
            Ok(()) => {
                b.behind = false;
                (b.failures, b.retry_at) = (0, None);
                // The board agrees with the log: the log as loaded is no longer needed (and
                // would no longer be whole: answers applied since are out of the backlog).
                b.loaded = None;
            }
            Err(e) => {
                b.behind = true;
                b.verify |= work.verify && !matches!(e, StoreError::NeedsRebuild(_));
                b.rebuild |= work.rebuild || matches!(e, StoreError::NeedsRebuild(_));
                let mut backlog = work.backlog;
                backlog.append(&mut b.backlog);
                b.backlog = backlog;
                let mut removals = work.removals;
                removals.append(&mut b.removals);
                b.removals = removals;
                for (user, total) in work.leagues {
                    b.leagues.entry(user).or_insert(total);
                }
                (b.failures, b.retry_at) = next_try(true, b.failures, now);
            }
        }
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

/// Writes one durable batch: players, answers, progress.
pub(super) async fn write_durable(
    stores: Stores,
    quiz: QuizId,
    epoch: Epoch,
    batch: DurableBatch,
) -> Written {
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
    Written::Durable(DurableWritten {
        batch,
        players,
        answers,
        progress,
        elapsed: started.elapsed(),
    })
}

/// Writes one board batch: a verification or rebuild if asked, the backlog, then removals
/// and league totals.
pub(super) async fn write_board(
    stores: Stores,
    quiz: QuizId,
    epoch: Epoch,
    batch: BoardBatch,
) -> Written {
    let started = Instant::now();
    let result = apply_board(&stores, &quiz, epoch, &batch).await;
    Written::Board(BoardWritten {
        batch,
        result,
        elapsed: started.elapsed(),
    })
}

async fn apply_board(
    stores: &Stores,
    quiz: &QuizId,
    epoch: Epoch,
    work: &BoardBatch,
) -> Result<(), StoreError> {
    let lb = &stores.leaderboards;
    let mut rebuild = work.rebuild;
    if work.verify && !rebuild {
        // What the log held at load is counted by the board, or the board is rebuilt.
        let before = work.logged.saturating_sub(work.backlog.len() as u64);
        match lb.counted(quiz).await {
            Ok(counted) if counted == before => {}
            Ok(counted) => {
                tracing::info!(%quiz, counted, logged = before, "the leaderboard store differs from the log");
                rebuild = true;
            }
            Err(StoreError::NeedsRebuild(_)) => rebuild = true,
            Err(e) => return Err(e),
        }
    }
    if rebuild {
        // Until a board batch succeeds after the load, every later answer is still in the
        // backlog, so the log as loaded plus the backlog is the whole log.
        match &work.loaded {
            Some(loaded) => {
                tracing::info!(%quiz, answers = loaded.answers.len(), "rebuilding the leaderboard from the log as loaded");
                lb.rebuild(quiz, epoch, &loaded.answers, &loaded.kicked)
                    .await?;
            }
            _ => stores.rebuild_leaderboard(quiz, epoch).await?,
        }
    }
    if !work.backlog.is_empty() {
        // A Redis failover can lose writes it had acknowledged: the board must count every
        // answer of the log. Fewer means some were lost: rebuild from the log. (More can
        // happen after a rebuild that read answers whose append still looked in doubt.)
        let counted = lb.apply_counted(quiz, epoch, &work.backlog).await?;
        if counted < work.logged && !rebuild {
            tracing::warn!(%quiz, counted, expected = work.logged, "the leaderboard store lost answers");
            return Err(StoreError::NeedsRebuild(quiz.clone()));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn player(n: u32) -> PlayerRecord {
        PlayerRecord {
            player: PlayerNo(n),
            user: UserId::parse(&format!("u{n}")).unwrap(),
            nickname: format!("p{n}"),
            joined_at: 0,
            kicked: false,
            current: None,
            current_opened_at: None,
        }
    }

    fn written(batch: DurableBatch, players: Result<(), StoreError>) -> DurableWritten {
        DurableWritten {
            batch,
            players,
            answers: None,
            progress: Ok(()),
            elapsed: Duration::ZERO,
        }
    }

    /// A batch whose player records failed while its progress was written releases nothing
    /// that waits for either; both go again, and the batch that writes them releases up to
    /// the newest version it carries.
    #[test]
    fn a_batch_that_failed_in_part_goes_again_whole_and_the_next_covers_it() {
        let mut j = Journal::default();
        let t0 = Instant::now();
        j.save_player(player(1), 1);
        j.save_progress(Progress::lobby(0), 2);
        let first = j.take_durable(100, t0).expect("due");
        let failed = written(first, Err(StoreError::Unavailable("down".into())));
        assert_eq!(failed.version_durable(), None, "nothing released");
        j.settle_durable(failed, t0);
        j.save_player(player(2), 3);
        let retry_at = j.retry_at().expect("a backoff");
        let second = j
            .take_durable(100, retry_at)
            .expect("due after the backoff");
        assert_eq!(second.players.len(), 2, "player 1 again, and player 2");
        assert!(second.progress.is_some(), "the progress again");
        assert_eq!(written(second, Ok(())).version_durable(), Some(3));
    }

    /// A batch whose answers failed (the store down, failing fast) backs off like any other
    /// failure. It used to be retried at once, and an owner cut off its store spun on it,
    /// never yielding the CPU (found by the simulation, seed 113).
    #[test]
    fn a_batch_whose_answers_failed_waits_for_the_backoff() {
        let mut j = Journal::default();
        let t0 = Instant::now();
        let record = AnswerRecord {
            quiz: quiz_protocol::QuizId::parse("K7M3QX").unwrap(),
            player: PlayerNo(1),
            question: 0,
            answer_id: quiz_protocol::AnswerId::parse("a-1").unwrap(),
            answer: quiz_protocol::Answer::Choice(0),
            received_at: 0,
            response_ms: 0,
            points: 0,
            correct: false,
            streak: 0,
        };
        j.append(record);
        let batch = j.take_durable(100, t0).expect("due");
        let again = batch.answers.clone();
        let mut failed = written(batch, Ok(()));
        failed.answers = Some(Err(StoreError::Unavailable("refused".into())));
        j.settle_durable(failed, t0);
        // The actor queues the answers again, as it does on a failed append.
        j.append_again(again);
        assert!(j.take_durable(100, t0).is_none(), "not at once");
        let retry_at = j.retry_at().expect("a backoff");
        assert!(retry_at > t0);
        assert!(
            j.take_durable(100, retry_at).is_some(),
            "due after the backoff"
        );
    }

    #[test]
    fn a_loaded_quiz_verifies_its_board_at_once_then_batches_are_paced() {
        let every = Duration::from_millis(100);
        let mut j = Journal::loaded(None);
        let t0 = Instant::now();
        assert!(!j.is_idle(), "the board must be verified");
        let verify = j
            .take_board("2026-W49", 0, every, t0)
            .expect("verified at once");
        assert!(verify.verify);
        assert!(
            j.take_board("2026-W49", 0, every, t0).is_none(),
            "one in flight"
        );
        j.settle_board(
            BoardWritten {
                batch: verify,
                result: Ok(()),
                elapsed: Duration::ZERO,
            },
            t0,
        );
        assert!(j.is_idle());
        j.league_total(UserId::parse("ana").unwrap(), 100);
        assert_eq!(j.board_due_at(every, t0), Some(t0 + every));
        assert!(j.take_board("2026-W49", 0, every, t0).is_none(), "paced");
        let later = j.take_board("2026-W49", 0, every, t0 + every);
        assert!(later.is_some_and(|b| b.leagues.len() == 1));
    }

    #[test]
    fn a_failed_board_batch_is_taken_back_and_retried_after_a_backoff() {
        let every = Duration::from_millis(100);
        let mut j = Journal::loaded(None);
        let t0 = Instant::now();
        let batch = j.take_board("w", 0, every, t0).unwrap();
        j.settle_board(
            BoardWritten {
                batch,
                result: Err(StoreError::Unavailable("down".into())),
                elapsed: Duration::ZERO,
            },
            t0,
        );
        assert!(j.board_behind());
        let at = j.board_due_at(every, t0).expect("retried");
        assert!(at > t0);
        let retried = j.take_board("w", 0, every, at).expect("after the backoff");
        assert!(retried.verify, "the verification is not forgotten");
    }
}
