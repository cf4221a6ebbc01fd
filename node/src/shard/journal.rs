//! A quiz's journal: the durable writes its actor owes the store, made in order and in
//! batches (group commit).
//!
//! One batch is in flight at a time. While it is written, new work queues up and goes in the
//! next batch, so under load each round trip to the store carries many answers. Within a batch
//! players are written before answers (an answer names its player), then progress, then the
//! leaderboard store, which is derived data: if it fails, the answers it missed stay in a
//! backlog and are applied again later (applying is idempotent), and no ack waits for it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use quiz_engine::{AnswerRecord, PlayerRecord, Progress};
use quiz_protocol::{Epoch, PlayerNo, QuizId};
use quiz_store::{Appended, StoreError, Stores};

/// Durable work not yet written.
#[derive(Default)]
pub(super) struct Journal {
    players: BTreeMap<PlayerNo, PlayerRecord>,
    progress: Option<Progress>,
    answers: Vec<AnswerRecord>,
    removals: Vec<PlayerNo>,
    leaderboard_backlog: Vec<AnswerRecord>,
    in_flight: bool,
    failures: u32,
    retry_at: Option<Instant>,
}

/// One batch of writes.
pub(super) struct Batch {
    pub(super) players: Vec<PlayerRecord>,
    pub(super) progress: Option<Progress>,
    pub(super) answers: Vec<AnswerRecord>,
    pub(super) removals: Vec<PlayerNo>,
    pub(super) leaderboard_backlog: Vec<AnswerRecord>,
}

/// What writing a batch did.
pub(super) struct Written {
    pub(super) batch: Batch,
    pub(super) players: Result<(), StoreError>,
    /// `None` when the answers were not attempted (their players could not be written).
    pub(super) answers: Option<Result<Vec<Appended>, StoreError>>,
    pub(super) progress: Result<(), StoreError>,
    /// The records the leaderboard store was asked to count, and whether it did.
    pub(super) leaderboard: (Vec<AnswerRecord>, Result<(), StoreError>),
    pub(super) elapsed: Duration,
}

impl Written {
    /// Whether the store refused a write because another node owns the quiz now.
    pub(super) fn fenced(&self) -> bool {
        fn fenced<T>(r: &Result<T, StoreError>) -> bool {
            matches!(r, Err(StoreError::Fenced { .. }))
        }
        fenced(&self.players)
            || self.answers.as_ref().is_some_and(fenced)
            || fenced(&self.progress)
            || fenced(&self.leaderboard.1)
    }
}

impl Journal {
    pub(super) fn save_player(&mut self, player: PlayerRecord) {
        self.players.insert(player.player, player);
    }

    pub(super) fn save_progress(&mut self, progress: Progress) {
        self.progress = Some(progress);
    }

    pub(super) fn append(&mut self, record: AnswerRecord) {
        self.answers.push(record);
    }

    pub(super) fn remove_from_leaderboard(&mut self, player: PlayerNo) {
        self.removals.push(player);
    }

    /// Answers waiting to be written (not counting the batch in flight).
    pub(super) fn queued_answers(&self) -> usize {
        self.answers.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.players.is_empty()
            && self.progress.is_none()
            && self.answers.is_empty()
            && self.removals.is_empty()
            && self.leaderboard_backlog.is_empty()
    }

    pub(super) fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// When a failed write may be tried again.
    pub(super) fn retry_at(&self) -> Option<Instant> {
        self.retry_at
            .filter(|_| !self.in_flight && !self.is_empty())
    }

    /// The next batch, if nothing is in flight, there is work, and no backoff is pending.
    /// Answers are never held back by a backoff: they have phones waiting.
    pub(super) fn take_batch(&mut self, max_answers: usize, now: Instant) -> Option<Batch> {
        if self.in_flight || self.is_empty() {
            return None;
        }
        let backing_off = self.retry_at.is_some_and(|t| now < t);
        if backing_off && self.answers.is_empty() {
            return None;
        }
        let n = self.answers.len().min(max_answers);
        let batch = Batch {
            players: std::mem::take(&mut self.players).into_values().collect(),
            progress: self.progress.take(),
            answers: self.answers.drain(..n).collect(),
            removals: std::mem::take(&mut self.removals),
            leaderboard_backlog: std::mem::take(&mut self.leaderboard_backlog),
        };
        self.in_flight = true;
        Some(batch)
    }

    /// Takes back what a written batch failed to write (answers excepted: their phones are
    /// told to retry), keeping anything newer that queued meanwhile.
    pub(super) fn settle(&mut self, written: &Written, now: Instant) {
        self.in_flight = false;
        let mut failed = false;
        if written.players.is_err() {
            failed = true;
            for p in &written.batch.players {
                self.players.entry(p.player).or_insert_with(|| p.clone());
            }
        }
        if written.progress.is_err() {
            failed = true;
            if self.progress.is_none() {
                self.progress.clone_from(&written.batch.progress);
            }
        }
        if written.leaderboard.1.is_err() {
            failed = true;
            let mut back = written.leaderboard.0.clone();
            back.append(&mut self.leaderboard_backlog);
            self.leaderboard_backlog = back;
            let mut removals = written.batch.removals.clone();
            removals.append(&mut self.removals);
            self.removals = removals;
        }
        if failed {
            self.failures += 1;
            let backoff = 50u64 << self.failures.min(6);
            self.retry_at = Some(now + Duration::from_millis(backoff));
        } else {
            self.failures = 0;
            self.retry_at = None;
        }
    }
}

/// Writes one batch, in order: players, answers, progress, leaderboard.
pub(super) async fn write(stores: Stores, quiz: QuizId, epoch: Epoch, batch: Batch) -> Written {
    let started = Instant::now();
    let mut players = Ok(());
    for p in &batch.players {
        players = stores.quizzes.save_player(&quiz, epoch, p).await;
        if players.is_err() {
            break;
        }
    }
    let answers = match (&players, batch.answers.is_empty()) {
        (Err(_), _) => None,
        (Ok(()), true) => Some(Ok(Vec::new())),
        (Ok(()), false) => Some(stores.answers.append(epoch, &batch.answers).await),
    };
    let progress = match &batch.progress {
        Some(p) => stores.quizzes.save_progress(&quiz, epoch, p).await,
        None => Ok(()),
    };
    // Count into the leaderboard store every answer now in the log: those inserted, and those
    // an earlier, failed-looking attempt had already inserted.
    let mut counted = batch.leaderboard_backlog.clone();
    if let Some(Ok(outcomes)) = &answers {
        for (record, outcome) in batch.answers.iter().zip(outcomes) {
            match outcome {
                Appended::Inserted => counted.push(record.clone()),
                Appended::Existing(e) if e.answer_id == record.answer_id => counted.push(e.clone()),
                Appended::Existing(_) => {}
            }
        }
    }
    let mut leaderboard = Ok(());
    if !counted.is_empty() {
        leaderboard = stores.leaderboards.apply(epoch, &counted).await;
    }
    if leaderboard.is_ok() {
        for p in &batch.removals {
            leaderboard = stores.leaderboards.remove_player(&quiz, epoch, *p).await;
            if leaderboard.is_err() {
                break;
            }
        }
    }
    Written {
        batch,
        players,
        answers,
        progress,
        leaderboard: (counted, leaderboard),
        elapsed: started.elapsed(),
    }
}
