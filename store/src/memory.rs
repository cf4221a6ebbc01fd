//! Every store in memory, with the semantics of the SQL backends (the shared store suite runs
//! against it): for simulations and tests that must not touch a disk, a thread or a clock.
//! Each call takes one lock for its whole effect, so writes are atomic; the fences are the
//! SQL ones (a write with an epoch older than the quiz's is refused, a claim must raise it).
//!
//! The leaderboard half can be made to lose its data, as a Redis Cluster can:
//! [`MemoryStore::lose_leaderboards`] wipes every quiz's standings, and until a quiz is
//! rebuilt its board answers [`StoreError::NeedsRebuild`], as Redis does once its generation
//! marker is gone.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use quiz_engine::{AnswerRecord, Millis, PlayerRecord, Progress};
use quiz_protocol::{Epoch, NodeId, PlayerNo, QuestionSet, QuizId, UserId};

use crate::{
    AnswerLog, Appended, ContentStore, LeaderboardStore, League, LeagueRow, MembershipStore,
    NodeLease, QuestionSetSummary, QuizRecord, QuizStore, QuizTotals, RingRecord, SetAccess,
    StandingRow, StoreError, StoredSet,
};

/// A question set as held, with when it was stored.
struct Held {
    set: StoredSet,
    at: Millis,
}

/// The stores' state; see the module docs.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    sets: BTreeMap<String, Held>,
    quizzes: BTreeMap<QuizId, QuizRecord>,
    players: BTreeMap<QuizId, BTreeMap<PlayerNo, PlayerRecord>>,
    /// By (quiz, question, player): the log's order.
    answers: BTreeMap<(QuizId, u32, PlayerNo), AnswerRecord>,
    boards: BTreeMap<QuizId, Board>,
    /// Quizzes whose board was lost and not rebuilt since.
    lost: BTreeSet<QuizId>,
    /// League key → (quiz, user) → the largest total recorded.
    leagues: BTreeMap<String, BTreeMap<(QuizId, UserId), u32>>,
    leases: BTreeMap<NodeId, NodeLease>,
    ring: Option<RingRecord>,
}

#[derive(Default)]
struct Board {
    applied: BTreeSet<(u32, PlayerNo)>,
    /// Score, tiebreak, removed.
    scores: BTreeMap<PlayerNo, (u32, u64, bool)>,
}

impl Board {
    /// Counts an answer into the standings, once per (player, question).
    fn count(&mut self, r: &AnswerRecord) {
        if !self.applied.insert((r.question, r.player)) {
            return;
        }
        let row = self.scores.entry(r.player).or_default();
        row.0 += r.points;
        if r.points > 0 {
            row.1 += u64::from(r.response_ms);
        }
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every quiz's standings are gone (a Redis Cluster restarted empty).
    pub fn lose_leaderboards(&self) {
        let mut state = self.state();
        let quizzes: Vec<QuizId> = state.quizzes.keys().cloned().collect();
        state.boards.clear();
        state.lost.extend(quizzes);
    }
}

impl State {
    /// The SQL fence: the quiz exists and its epoch is not newer than `epoch`.
    fn fence(&self, quiz: &QuizId, epoch: Epoch) -> Result<(), StoreError> {
        let current = self
            .quizzes
            .get(quiz)
            .ok_or(StoreError::NoSuchQuiz)?
            .epoch
            .0;
        if current > epoch.0 {
            return Err(StoreError::Fenced {
                held: epoch.0,
                current,
            });
        }
        Ok(())
    }

    fn board(&mut self, quiz: &QuizId) -> Result<&mut Board, StoreError> {
        if self.lost.contains(quiz) {
            return Err(StoreError::NeedsRebuild(quiz.clone()));
        }
        Ok(self.boards.entry(quiz.clone()).or_default())
    }
}

fn league_key(league: &League) -> String {
    match league {
        League::Weekly(week) => format!("week:{week}"),
        League::AllTime => "all-time".into(),
    }
}

#[async_trait]
impl ContentStore for MemoryStore {
    async fn put_question_set(
        &self,
        set: &QuestionSet,
        access: &SetAccess,
        any_owner: bool,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let mut state = self.state();
        let mut access = access.clone();
        if let Some(held) = state.sets.get(&set.id) {
            if !any_owner && held.set.access.owner != access.owner {
                return Ok(false);
            }
            access.owner = held.set.access.owner.clone();
        }
        let stored = StoredSet {
            set: set.clone(),
            access,
        };
        state.sets.insert(
            set.id.clone(),
            Held {
                set: stored,
                at: now,
            },
        );
        Ok(true)
    }

    async fn question_set(&self, id: &str) -> Result<Option<StoredSet>, StoreError> {
        Ok(self.state().sets.get(id).map(|h| h.set.clone()))
    }

    async fn question_sets(&self) -> Result<Vec<QuestionSetSummary>, StoreError> {
        Ok(self
            .state()
            .sets
            .values()
            .map(|h| QuestionSetSummary {
                id: h.set.set.id.clone(),
                title: h.set.set.title.clone(),
                questions: h.set.set.questions.len() as u32,
                updated_at: h.at,
                access: h.set.access.clone(),
            })
            .collect())
    }
}

#[async_trait]
impl QuizStore for MemoryStore {
    async fn create_quiz(&self, quiz: &QuizRecord) -> Result<(), StoreError> {
        let mut state = self.state();
        if state.quizzes.contains_key(&quiz.id) {
            return Err(StoreError::Conflict);
        }
        state.quizzes.insert(quiz.id.clone(), quiz.clone());
        Ok(())
    }

    async fn quiz(&self, id: &QuizId) -> Result<Option<QuizRecord>, StoreError> {
        Ok(self.state().quizzes.get(id).cloned())
    }

    async fn save_progress(
        &self,
        id: &QuizId,
        epoch: Epoch,
        progress: &Progress,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        state.fence(id, epoch)?;
        if let Some(quiz) = state.quizzes.get_mut(id) {
            quiz.progress = progress.clone();
        }
        Ok(())
    }

    async fn save_player(
        &self,
        id: &QuizId,
        epoch: Epoch,
        player: &PlayerRecord,
    ) -> Result<(), StoreError> {
        self.save_players(id, epoch, std::slice::from_ref(player))
            .await
    }

    async fn save_players(
        &self,
        id: &QuizId,
        epoch: Epoch,
        players: &[PlayerRecord],
    ) -> Result<(), StoreError> {
        if players.is_empty() {
            return Ok(());
        }
        let mut state = self.state();
        state.fence(id, epoch)?;
        let rows = state.players.entry(id.clone()).or_default();
        // One user is one player of a quiz: a batch that breaks it is refused whole.
        let mut after: BTreeMap<PlayerNo, &PlayerRecord> =
            rows.iter().map(|(n, p)| (*n, p)).collect();
        for p in players {
            after.insert(p.player, p);
        }
        let users: BTreeSet<&UserId> = after.values().map(|p| &p.user).collect();
        if users.len() != after.len() {
            return Err(StoreError::Conflict);
        }
        for p in players {
            rows.insert(p.player, p.clone());
        }
        Ok(())
    }

    async fn players(&self, id: &QuizId) -> Result<Vec<PlayerRecord>, StoreError> {
        Ok(self
            .state()
            .players
            .get(id)
            .map(|rows| rows.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn live_quizzes(&self) -> Result<Vec<QuizId>, StoreError> {
        Ok(self
            .state()
            .quizzes
            .values()
            .filter(|q| q.progress.phase != quiz_protocol::Phase::Ended)
            .map(|q| q.id.clone())
            .collect())
    }

    async fn claim(&self, id: &QuizId, node: &NodeId, epoch: Epoch) -> Result<(), StoreError> {
        let mut state = self.state();
        let quiz = state.quizzes.get_mut(id).ok_or(StoreError::NoSuchQuiz)?;
        if quiz.epoch.0 >= epoch.0 {
            return Err(StoreError::Fenced {
                held: epoch.0,
                current: quiz.epoch.0,
            });
        }
        quiz.epoch = epoch;
        quiz.owner = Some(node.clone());
        Ok(())
    }

    async fn release(&self, id: &QuizId, node: &NodeId, epoch: Epoch) -> Result<(), StoreError> {
        let mut state = self.state();
        if let Some(quiz) = state.quizzes.get_mut(id)
            && quiz.owner.as_ref() == Some(node)
            && quiz.epoch == epoch
        {
            quiz.owner = None;
        }
        Ok(())
    }
}

#[async_trait]
impl AnswerLog for MemoryStore {
    async fn append(
        &self,
        epoch: Epoch,
        records: &[AnswerRecord],
    ) -> Result<Vec<Appended>, StoreError> {
        let mut state = self.state();
        let quizzes: BTreeSet<&QuizId> = records.iter().map(|r| &r.quiz).collect();
        for quiz in quizzes {
            state.fence(quiz, epoch)?;
        }
        let mut outcomes = Vec::with_capacity(records.len());
        for r in records {
            let key = (r.quiz.clone(), r.question, r.player);
            match state.answers.get(&key) {
                Some(existing) => outcomes.push(Appended::Existing(existing.clone())),
                None => {
                    state.answers.insert(key, r.clone());
                    outcomes.push(Appended::Inserted);
                }
            }
        }
        Ok(outcomes)
    }

    async fn answers(&self, quiz: &QuizId) -> Result<Vec<AnswerRecord>, StoreError> {
        Ok(self
            .state()
            .answers
            .range((quiz.clone(), 0, PlayerNo(0))..)
            .take_while(|((q, _, _), _)| q == quiz)
            .map(|(_, r)| r.clone())
            .collect())
    }

    async fn count(&self, quiz: &QuizId) -> Result<u64, StoreError> {
        Ok(self.answers(quiz).await?.len() as u64)
    }

    async fn league_totals(&self, since: Millis) -> Result<Vec<QuizTotals>, StoreError> {
        let state = self.state();
        let mut out = Vec::new();
        for quiz in state.quizzes.values().filter(|q| q.created_at >= since) {
            let players = state.players.get(&quiz.id);
            let mut totals: BTreeMap<UserId, u32> = BTreeMap::new();
            for ((q, _, player), r) in state.answers.range((quiz.id.clone(), 0, PlayerNo(0))..) {
                if q != &quiz.id {
                    break;
                }
                let Some(p) = players.and_then(|ps| ps.get(player)) else {
                    continue;
                };
                if !p.kicked {
                    *totals.entry(p.user.clone()).or_default() += r.points;
                }
            }
            let totals: Vec<(UserId, u32)> = totals.into_iter().filter(|(_, t)| *t > 0).collect();
            if !totals.is_empty() {
                out.push(QuizTotals {
                    quiz: quiz.id.clone(),
                    created_at: quiz.created_at,
                    totals,
                });
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl LeaderboardStore for MemoryStore {
    async fn apply(&self, epoch: Epoch, records: &[AnswerRecord]) -> Result<(), StoreError> {
        let mut state = self.state();
        let quizzes: BTreeSet<QuizId> = records.iter().map(|r| r.quiz.clone()).collect();
        for quiz in &quizzes {
            state.fence(quiz, epoch)?;
            state.board(quiz)?;
        }
        for r in records {
            state.board(&r.quiz)?.count(r);
        }
        Ok(())
    }

    async fn remove_player(
        &self,
        quiz: &QuizId,
        epoch: Epoch,
        player: PlayerNo,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        state.fence(quiz, epoch)?;
        state.board(quiz)?.scores.entry(player).or_default().2 = true;
        Ok(())
    }

    async fn counted(&self, quiz: &QuizId) -> Result<u64, StoreError> {
        let mut state = self.state();
        Ok(state.board(quiz)?.applied.len() as u64)
    }

    async fn standings(&self, quiz: &QuizId, limit: usize) -> Result<Vec<StandingRow>, StoreError> {
        let state = self.state();
        let Some(board) = state.boards.get(quiz) else {
            return Ok(Vec::new());
        };
        let mut rows: Vec<StandingRow> = board
            .scores
            .iter()
            .filter(|(_, (_, _, removed))| !removed)
            .map(|(player, (score, tiebreak, _))| StandingRow {
                player: *player,
                score: *score,
                tiebreak: *tiebreak,
            })
            .collect();
        StandingRow::sort(&mut rows);
        rows.truncate(limit);
        Ok(rows)
    }

    async fn rebuild(
        &self,
        quiz: &QuizId,
        epoch: Epoch,
        records: &[AnswerRecord],
        removed: &[PlayerNo],
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        state.fence(quiz, epoch)?;
        let mut board = Board::default();
        for r in records.iter().filter(|r| &r.quiz == quiz) {
            board.count(r);
        }
        for player in removed {
            board.scores.entry(*player).or_default().2 = true;
        }
        state.boards.insert(quiz.clone(), board);
        state.lost.remove(quiz);
        Ok(())
    }

    async fn record_league(
        &self,
        quiz: &QuizId,
        week: &str,
        totals: &[(UserId, u32)],
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        for league in [
            league_key(&League::Weekly(week.into())),
            league_key(&League::AllTime),
        ] {
            let contributions = state.leagues.entry(league).or_default();
            for (user, total) in totals.iter().filter(|(_, t)| *t > 0) {
                let c = contributions
                    .entry((quiz.clone(), user.clone()))
                    .or_default();
                *c = (*c).max(*total);
            }
        }
        Ok(())
    }

    async fn league(&self, league: &League, limit: usize) -> Result<Vec<LeagueRow>, StoreError> {
        let state = self.state();
        let mut points: BTreeMap<UserId, u64> = BTreeMap::new();
        if let Some(contributions) = state.leagues.get(&league_key(league)) {
            for ((_, user), total) in contributions {
                *points.entry(user.clone()).or_default() += u64::from(*total);
            }
        }
        let mut rows: Vec<LeagueRow> = points
            .into_iter()
            .filter(|(_, p)| *p > 0)
            .map(|(user, points)| LeagueRow { user, points })
            .collect();
        rows.sort_by(|a, b| b.points.cmp(&a.points).then(a.user.cmp(&b.user)));
        rows.truncate(limit);
        Ok(rows)
    }
}

#[async_trait]
impl MembershipStore for MemoryStore {
    async fn renew_lease(&self, lease: &NodeLease) -> Result<(), StoreError> {
        self.state()
            .leases
            .insert(lease.node.clone(), lease.clone());
        Ok(())
    }

    async fn leases(&self) -> Result<Vec<NodeLease>, StoreError> {
        Ok(self.state().leases.values().cloned().collect())
    }

    async fn release_lease(&self, node: &NodeId) -> Result<(), StoreError> {
        self.state().leases.remove(node);
        Ok(())
    }

    async fn ring(&self) -> Result<Option<RingRecord>, StoreError> {
        Ok(self.state().ring.clone())
    }

    async fn publish_ring(&self, ring: &RingRecord) -> Result<bool, StoreError> {
        let mut state = self.state();
        let next = match &state.ring {
            Some(current) => current.epoch + 1,
            None => 1,
        };
        if ring.epoch != next {
            return Ok(false);
        }
        state.ring = Some(ring.clone());
        Ok(true)
    }
}

/// Every store backed by one [`MemoryStore`].
pub fn stores(memory: std::sync::Arc<MemoryStore>) -> crate::Stores {
    crate::Stores {
        content: memory.clone(),
        quizzes: memory.clone(),
        answers: memory.clone(),
        leaderboards: memory.clone(),
        membership: memory,
    }
}
