//! Storage behind small traits: question sets, quizzes and their progress, players, the
//! durable answer log, and leaderboards.
//!
//! The answer log is the record: an acknowledged answer is in it exactly once (unique on quiz,
//! player, question), and every write is fenced by the quiz's ownership epoch. Leaderboard
//! stores are derived data that can always be rebuilt from the log.
//!
//! Backends: [`sql::SqlStore`] (SQLite embedded by default, PostgreSQL in production, the same
//! sqlx code through the Any driver, one migrations folder per dialect) implements
//! [`ContentStore`], [`QuizStore`], [`AnswerLog`] and [`MembershipStore`];
//! [`sql::SqlLeaderboard`] is the embedded [`LeaderboardStore`]; [`memory::MemoryStore`] is all
//! of them in memory, for simulations. One shared test suite runs against every backend.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

use std::sync::Arc;

use async_trait::async_trait;
use quiz_engine::{AnswerRecord, Millis, PlayerRecord, Progress};
use quiz_protocol::cluster::RingMember;
use quiz_protocol::{Epoch, NodeId, PlayerNo, Question, QuestionSet, QuizId, QuizSettings, UserId};
use serde::{Deserialize, Serialize};

pub mod memory;
pub mod redis;
pub mod sql;
mod week;

pub use week::iso_week;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend could not be reached or timed out; the operation may be retried and may or
    /// may not have taken effect (every write here is idempotent, so retrying is safe).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The row already exists (a quiz id taken).
    #[error("already exists")]
    Conflict,
    /// The write carried an older ownership epoch than the store holds: another node owns the
    /// quiz now. Nothing was written.
    #[error("fenced: epoch {held} is older than the current epoch {current}")]
    Fenced { held: u64, current: u64 },
    /// The quiz is not in the store.
    #[error("no such quiz")]
    NoSuchQuiz,
    /// Stored data could not be decoded.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// A leaderboard store lost a quiz's data (its generation marker is gone): nothing was
    /// applied; rebuild the quiz's standings from the answer log, then apply again.
    #[error("the leaderboard of quiz {0} must be rebuilt from the answer log")]
    NeedsRebuild(QuizId),
}

impl StoreError {
    pub fn retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// A quiz as created: its content is a snapshot of the questions picked at creation.
#[derive(Clone, Debug, PartialEq)]
pub struct QuizRecord {
    pub id: QuizId,
    pub title: String,
    /// The user who created it; only they may host it.
    pub host: UserId,
    /// The question set it was created from.
    pub question_set: String,
    pub settings: QuizSettings,
    pub questions: Vec<Question>,
    pub created_at: Millis,
    /// The current ownership epoch: raised by every [`QuizStore::claim`].
    pub epoch: Epoch,
    /// The node that claimed the quiz at `epoch` (none before the first claim).
    pub owner: Option<NodeId>,
    /// The last saved progress.
    pub progress: Progress,
}

/// A shard node's lease: it is a member of the cluster while `expires_at` is in the future.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLease {
    pub node: NodeId,
    /// Where phones reach its edge (`ws://host:port/v1/ws`).
    pub ws_url: String,
    /// Where other nodes and the router reach it over QUIC (`host:port`).
    pub cluster_addr: String,
    /// Share of quizzes relative to other nodes.
    pub weight: u32,
    /// Draining nodes keep serving but take no new quizzes; the ring leaves them out.
    pub draining: bool,
    pub renewed_at: Millis,
    pub expires_at: Millis,
}

/// The ring every router and node agrees on: its members under an epoch that only grows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingRecord {
    pub epoch: u64,
    pub members: Vec<RingMember>,
    pub updated_at: Millis,
}

/// A cross-quiz leaderboard (the leagues language apps run).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum League {
    /// An ISO week, such as `2026-W48`.
    Weekly(String),
    AllTime,
}

/// One row of a league, best first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeagueRow {
    pub user: UserId,
    pub points: u64,
}

/// A question set in a listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuestionSetSummary {
    pub id: String,
    pub title: String,
    pub questions: u32,
    pub updated_at: Millis,
    #[serde(flatten)]
    pub access: SetAccess,
}

/// Who may read and use a question set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetAccess {
    /// The host who stored it first (`""`: seeded by the system). Only the owner and admins
    /// replace it or read its answers.
    pub owner: String,
    pub visibility: Visibility,
    /// With [`Visibility::Shared`]: the hosts who may read it (without answers) and create
    /// quizzes from it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared_with: Vec<String>,
}

/// Who, besides the owner and admins, sees a question set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// No one else.
    Private,
    /// The hosts named in `shared_with`.
    Shared,
    /// Every host.
    Public,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Private => "private",
            Visibility::Shared => "shared",
            Visibility::Public => "public",
        }
    }

    pub fn parse(s: &str) -> Option<Visibility> {
        match s {
            "private" => Some(Visibility::Private),
            "shared" => Some(Visibility::Shared),
            "public" => Some(Visibility::Public),
            _ => None,
        }
    }
}

impl SetAccess {
    /// A set of `owner`'s that no one else sees.
    pub fn private(owner: &str) -> SetAccess {
        SetAccess {
            owner: owner.into(),
            visibility: Visibility::Private,
            shared_with: Vec::new(),
        }
    }

    /// A set every host sees (without its answers).
    pub fn public(owner: &str) -> SetAccess {
        SetAccess {
            visibility: Visibility::Public,
            ..SetAccess::private(owner)
        }
    }

    /// Whether `user` may read the set (answers aside) and create quizzes from it.
    pub fn can_use(&self, user: &str) -> bool {
        self.owner == user
            || self.visibility == Visibility::Public
            || (self.visibility == Visibility::Shared && self.shared_with.iter().any(|u| u == user))
    }
}

/// A stored question set and who may use it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredSet {
    pub set: QuestionSet,
    pub access: SetAccess,
}

/// What appending one record did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Appended {
    Inserted,
    /// The log already held an answer for this (quiz, player, question); here it is. Same
    /// `answer_id` means the earlier append of this very answer went through.
    Existing(AnswerRecord),
}

/// One row of a stored leaderboard, in leaderboard order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StandingRow {
    pub player: PlayerNo,
    pub score: u32,
    pub tiebreak: u64,
}

impl StandingRow {
    /// The leaderboard an answer log implies, in leaderboard order: a player's score is the
    /// sum of their points, the tiebreak the sum of response times of their scoring answers
    /// (lower ranks first), then the player number. What every leaderboard store must hold
    /// for a quiz once it has caught up with its log.
    pub fn from_log(log: &[AnswerRecord]) -> Vec<StandingRow> {
        let mut by_player: std::collections::HashMap<PlayerNo, StandingRow> =
            std::collections::HashMap::new();
        for r in log {
            let row = by_player.entry(r.player).or_insert(StandingRow {
                player: r.player,
                score: 0,
                tiebreak: 0,
            });
            row.score += r.points;
            if r.points > 0 {
                row.tiebreak += u64::from(r.response_ms);
            }
        }
        let mut rows: Vec<StandingRow> = by_player.into_values().collect();
        StandingRow::sort(&mut rows);
        rows
    }

    /// Puts rows in leaderboard order: score descending, then tiebreak, then player number.
    pub fn sort(rows: &mut [StandingRow]) {
        rows.sort_by(|a, b| {
            b.score
                .cmp(&a.score)
                .then(a.tiebreak.cmp(&b.tiebreak))
                .then(a.player.cmp(&b.player))
        });
    }
}

/// Question sets.
#[async_trait]
pub trait ContentStore: Send + Sync + 'static {
    /// Inserts a (validated) question set owned by `access.owner`, or replaces it with its
    /// visibility when it is that owner's (or `any_owner`, an admin's write: the owner then
    /// stays). Returns false, storing nothing, when the set is someone else's.
    async fn put_question_set(
        &self,
        set: &QuestionSet,
        access: &SetAccess,
        any_owner: bool,
        now: Millis,
    ) -> Result<bool, StoreError>;
    async fn question_set(&self, id: &str) -> Result<Option<StoredSet>, StoreError>;
    async fn question_sets(&self) -> Result<Vec<QuestionSetSummary>, StoreError>;
}

/// Quizzes, their progress and their players.
#[async_trait]
pub trait QuizStore: Send + Sync + 'static {
    /// Creates a quiz; [`StoreError::Conflict`] if the id is taken.
    async fn create_quiz(&self, quiz: &QuizRecord) -> Result<(), StoreError>;
    async fn quiz(&self, id: &QuizId) -> Result<Option<QuizRecord>, StoreError>;
    /// Saves progress, fenced: refused if `epoch` is older than the quiz's.
    async fn save_progress(
        &self,
        id: &QuizId,
        epoch: Epoch,
        progress: &Progress,
    ) -> Result<(), StoreError>;
    /// Inserts or updates a player, fenced like [`QuizStore::save_progress`].
    async fn save_player(
        &self,
        id: &QuizId,
        epoch: Epoch,
        player: &PlayerRecord,
    ) -> Result<(), StoreError>;
    /// Inserts or updates several players of one quiz in one transaction, fenced like
    /// [`QuizStore::save_player`] (a join storm writes them in batches).
    async fn save_players(
        &self,
        id: &QuizId,
        epoch: Epoch,
        players: &[PlayerRecord],
    ) -> Result<(), StoreError>;
    /// Every player of a quiz, by player number.
    async fn players(&self, id: &QuizId) -> Result<Vec<PlayerRecord>, StoreError>;
    /// Quizzes that have not ended.
    async fn live_quizzes(&self) -> Result<Vec<QuizId>, StoreError>;
    /// Makes `node` the quiz's owner at `epoch`, which must be newer than the stored epoch
    /// ([`StoreError::Fenced`] otherwise: someone claimed it first). From then on writes with an
    /// older epoch are refused. Waits for writes that passed the old epoch's fence.
    async fn claim(&self, id: &QuizId, node: &NodeId, epoch: Epoch) -> Result<(), StoreError>;
    /// The owner gives the quiz up (a handoff): clears the owner if it is still `node` at
    /// `epoch`, so the next owner need not wait for `node`'s lease. A no-op otherwise.
    async fn release(&self, id: &QuizId, node: &NodeId, epoch: Epoch) -> Result<(), StoreError>;
}

/// Cluster membership: node leases, in the durable store so that every router sees the same
/// members and a router restart loses nothing.
#[async_trait]
pub trait MembershipStore: Send + Sync + 'static {
    /// Creates or renews a lease (the whole row is replaced).
    async fn renew_lease(&self, lease: &NodeLease) -> Result<(), StoreError>;
    /// Every lease, expired ones included, by node id.
    async fn leases(&self) -> Result<Vec<NodeLease>, StoreError>;
    /// Removes a node's lease (it left gracefully).
    async fn release_lease(&self, node: &NodeId) -> Result<(), StoreError>;
    /// The current ring, if one was ever published.
    async fn ring(&self) -> Result<Option<RingRecord>, StoreError>;
    /// Publishes `ring` if it is the next epoch (the stored one is `ring.epoch - 1`, or none
    /// is stored and `ring.epoch` is 1). `Ok(false)`: another router published first; read
    /// [`MembershipStore::ring`] and adopt it.
    async fn publish_ring(&self, ring: &RingRecord) -> Result<bool, StoreError>;
}

/// The durable record of answers.
#[async_trait]
pub trait AnswerLog: Send + Sync + 'static {
    /// Appends records (all of one quiz or several), idempotent on (quiz, player, question) and
    /// fenced by `epoch`. One outcome per record, in order. Atomic per call: on an error,
    /// nothing was appended, or (on [`StoreError::Unavailable`]) it is unknown, and a retry
    /// reports what is there.
    async fn append(
        &self,
        epoch: Epoch,
        records: &[AnswerRecord],
    ) -> Result<Vec<Appended>, StoreError>;
    /// Every answer of a quiz, by (question, player).
    async fn answers(&self, quiz: &QuizId) -> Result<Vec<AnswerRecord>, StoreError>;
    /// How many answers of a quiz the log holds.
    async fn count(&self, quiz: &QuizId) -> Result<u64, StoreError>;
    /// For every quiz created at or after `since` (Unix ms): each user's points in it, from
    /// the log, kicked players and zero totals left out. What the leagues must count.
    async fn league_totals(&self, since: Millis) -> Result<Vec<QuizTotals>, StoreError>;
}

/// One quiz's contribution to the leagues, as its answer log gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuizTotals {
    pub quiz: QuizId,
    pub created_at: Millis,
    /// By user id.
    pub totals: Vec<(UserId, u32)>,
}

/// Per-quiz leaderboards kept outside the owner's memory, for standings of finished quizzes
/// and for rebuilding. Derived from the answer log; every write is idempotent.
#[async_trait]
pub trait LeaderboardStore: Send + Sync + 'static {
    /// Counts these answers into their quizzes' standings, each at most once (keyed on quiz,
    /// player, question), fenced by `epoch`.
    async fn apply(&self, epoch: Epoch, records: &[AnswerRecord]) -> Result<(), StoreError>;
    /// Takes a player (kicked) off a quiz's standings.
    async fn remove_player(
        &self,
        quiz: &QuizId,
        epoch: Epoch,
        player: PlayerNo,
    ) -> Result<(), StoreError>;
    /// [`LeaderboardStore::apply`] for one quiz's answers, then [`LeaderboardStore::counted`]:
    /// what the answer path calls. Backends override it to do both in one round trip.
    async fn apply_counted(
        &self,
        quiz: &QuizId,
        epoch: Epoch,
        records: &[AnswerRecord],
    ) -> Result<u64, StoreError> {
        self.apply(epoch, records).await?;
        self.counted(quiz).await
    }
    /// How many answers of a quiz the standings count (each (player, question) once, removed
    /// players' included): a writer compares it with its answer log to notice writes the store
    /// acknowledged and then lost (a Redis failover), and rebuilds. [`StoreError::NeedsRebuild`]
    /// when the store lost the quiz altogether.
    async fn counted(&self, quiz: &QuizId) -> Result<u64, StoreError>;
    /// The first `limit` rows of a quiz's standings, in leaderboard order.
    async fn standings(&self, quiz: &QuizId, limit: usize) -> Result<Vec<StandingRow>, StoreError>;
    /// Replaces a quiz's standings with those of `records` (its whole answer log), leaving
    /// out `removed` players, and marks the quiz's data as present again. Fenced by `epoch`.
    async fn rebuild(
        &self,
        quiz: &QuizId,
        epoch: Epoch,
        records: &[AnswerRecord],
        removed: &[PlayerNo],
    ) -> Result<(), StoreError>;
    /// Sets each user's contribution from `quiz` to the weekly league `week` and the all-time
    /// league to their current quiz total. Idempotent: setting the same totals again changes
    /// nothing, and a larger total adds only the difference.
    async fn record_league(
        &self,
        quiz: &QuizId,
        week: &str,
        totals: &[(UserId, u32)],
    ) -> Result<(), StoreError>;
    /// The first `limit` rows of a league, best first (ties: the user id). Users who never
    /// scored are not listed.
    async fn league(&self, league: &League, limit: usize) -> Result<Vec<LeagueRow>, StoreError>;
}

/// The stores a node or router works with.
#[derive(Clone)]
pub struct Stores {
    pub content: Arc<dyn ContentStore>,
    pub quizzes: Arc<dyn QuizStore>,
    pub answers: Arc<dyn AnswerLog>,
    pub leaderboards: Arc<dyn LeaderboardStore>,
    pub membership: Arc<dyn MembershipStore>,
}

/// Where the stores live.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreConfig {
    /// `sqlite://path/to/file.db` (created if missing) or `postgres://user@host/db`.
    pub database_url: String,
    /// Connections in the SQL pool. SQLite serialises writers anyway; PostgreSQL benefits from
    /// a few per core.
    #[serde(default = "default_pool")]
    pub pool_size: u32,
    /// Redis Cluster for the leaderboards; without it they live in the SQL database.
    #[serde(default)]
    pub redis: Option<RedisConfig>,
    /// Where node leases and the published ring live. Default: the same PostgreSQL database
    /// (on a pool of its own), or for an SQLite file, a file beside it named
    /// `<name>-membership.db`: SQLite has one writer at a time per file, and a lease renewal
    /// must never wait behind answer writes (a busy node is not a dead one).
    #[serde(default)]
    pub membership_url: Option<String>,
}

fn default_pool() -> u32 {
    8
}

/// Connections of the membership store's own pool: lease renewals and ring reads only.
const MEMBERSHIP_POOL: u32 = 2;

impl StoreConfig {
    /// A store on `database_url` with the default pool and no Redis.
    pub fn sql(database_url: impl Into<String>) -> Self {
        Self {
            database_url: database_url.into(),
            pool_size: default_pool(),
            redis: None,
            membership_url: None,
        }
    }

    /// The database that holds node leases and the ring (see [`StoreConfig::membership_url`]).
    /// An in-memory SQLite database keeps them itself: another connection would be another
    /// database.
    pub fn membership_database(&self) -> String {
        if let Some(url) = &self.membership_url {
            return url.clone();
        }
        let url = &self.database_url;
        let Some(rest) = url.strip_prefix("sqlite://") else {
            return url.clone();
        };
        if url.contains(":memory:") || url.contains("mode=memory") {
            return url.clone();
        }
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let sibling = match path.strip_suffix(".db") {
            Some(stem) => format!("{stem}-membership.db"),
            None => format!("{path}-membership"),
        };
        match query {
            Some(q) => format!("sqlite://{sibling}?{q}"),
            None => format!("sqlite://{sibling}"),
        }
    }
}

/// How to reach the Redis Cluster that holds leaderboards.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// Seed nodes, such as `redis://127.0.0.1:7000`; the client discovers the rest.
    pub nodes: Vec<String>,
    /// Connecting to a node, ms. Default 1000.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// One command's reply, ms (the cluster client has none by default). Default 1000.
    #[serde(default = "default_response_timeout_ms")]
    pub response_timeout_ms: u64,
    /// Retries after MOVED/ASK/TRYAGAIN/CLUSTERDOWN and I/O errors. Default 3.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Weekly leagues expire this many weeks after their week. Default 8.
    #[serde(default = "default_weeks_kept")]
    pub weekly_league_weeks_kept: u32,
}

fn default_connect_timeout_ms() -> u64 {
    1000
}
fn default_response_timeout_ms() -> u64 {
    1000
}
fn default_retries() -> u32 {
    3
}
fn default_weeks_kept() -> u32 {
    8
}

impl Stores {
    /// Opens the configured backends and runs migrations.
    pub async fn open(config: &StoreConfig) -> Result<Stores, StoreError> {
        let sql = Arc::new(sql::SqlStore::connect(&config.database_url, config.pool_size).await?);
        let leaderboards: Arc<dyn LeaderboardStore> = match &config.redis {
            Some(redis) => Arc::new(redis::RedisLeaderboard::connect(redis).await?),
            None => Arc::new(sql::SqlLeaderboard::new(sql.clone())),
        };
        let membership = config.membership_database();
        let membership: Arc<dyn MembershipStore> =
            if membership == config.database_url && membership.starts_with("sqlite:") {
                sql.clone()
            } else {
                Arc::new(sql::SqlStore::connect(&membership, MEMBERSHIP_POOL).await?)
            };
        Ok(Stores {
            content: sql.clone(),
            quizzes: sql.clone(),
            answers: sql,
            membership,
            leaderboards,
        })
    }

    /// A membership store of its own (own connections, own SQLite writer slot), for a task
    /// that must not share a pool with anything else: a node's lease renewals. `None` for an
    /// in-memory SQLite database, where another connection would be another database.
    pub async fn open_membership(
        config: &StoreConfig,
    ) -> Result<Option<Arc<dyn MembershipStore>>, StoreError> {
        let url = config.membership_database();
        if url.contains(":memory:") || url.contains("mode=memory") {
            return Ok(None);
        }
        Ok(Some(Arc::new(
            sql::SqlStore::connect(&url, MEMBERSHIP_POOL).await?,
        )))
    }

    /// Whether the leaderboard store counts exactly the answers of the quiz's log. `false`
    /// when Redis lost some or all of them (a failover, a restart without persistence), or
    /// counts one the log does not hold; the standings are then wrong until
    /// [`Stores::repair_leaderboard`] runs.
    pub async fn leaderboard_matches_log(&self, quiz: &QuizId) -> Result<bool, StoreError> {
        let logged = self.answers.count(quiz).await?;
        match self.leaderboards.counted(quiz).await {
            Ok(counted) => Ok(counted == logged),
            Err(StoreError::NeedsRebuild(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Rebuilds a quiz's standings from its answer log (kicked players left out), fenced by
    /// `epoch`.
    pub async fn rebuild_leaderboard(&self, quiz: &QuizId, epoch: Epoch) -> Result<(), StoreError> {
        let records = self.answers.answers(quiz).await?;
        let players = self.quizzes.players(quiz).await?;
        self.rebuild_from(quiz, epoch, &records, &players).await
    }

    async fn rebuild_from(
        &self,
        quiz: &QuizId,
        epoch: Epoch,
        records: &[AnswerRecord],
        players: &[PlayerRecord],
    ) -> Result<(), StoreError> {
        let kicked: Vec<PlayerNo> = players
            .iter()
            .filter(|p| p.kicked)
            .map(|p| p.player)
            .collect();
        tracing::info!(%quiz, answers = records.len(), "rebuilding the leaderboard from the answer log");
        self.leaderboards
            .rebuild(quiz, epoch, records, &kicked)
            .await
    }

    /// Sets the league contributions of every quiz created at or after `since` to what the
    /// answer log gives (idempotent: a contribution already right is left as it is, one the
    /// store lost comes back). Leagues are derived, and Redis may lose writes it acknowledged
    /// (a failover) after the quiz that made them has ended; routers run this periodically
    /// (`league_audit_interval_s`). Returns how many quizzes it went through.
    pub async fn repair_leagues(&self, since: Millis) -> Result<usize, StoreError> {
        let quizzes = self.answers.league_totals(since).await?;
        for q in &quizzes {
            self.leaderboards
                .record_league(&q.quiz, &iso_week(q.created_at), &q.totals)
                .await?;
        }
        Ok(quizzes.len())
    }

    /// Restores everything the leaderboard store derives from one quiz's log: its standings
    /// and its players' contributions to the weekly and all-time leagues (idempotent: a
    /// contribution already there is left as it is). For a quiz no owner is writing, such
    /// as one that has ended; a live owner repairs its own quiz.
    pub async fn repair_leaderboard(&self, quiz: &QuizRecord) -> Result<(), StoreError> {
        let records = self.answers.answers(&quiz.id).await?;
        let players = self.quizzes.players(&quiz.id).await?;
        self.rebuild_from(&quiz.id, quiz.epoch, &records, &players)
            .await?;
        let mut points: std::collections::HashMap<PlayerNo, u32> = std::collections::HashMap::new();
        for r in &records {
            *points.entry(r.player).or_default() += r.points;
        }
        let totals: Vec<(UserId, u32)> = players
            .into_iter()
            .filter(|p| !p.kicked)
            .filter_map(|p| Some((p.user, *points.get(&p.player).filter(|&&t| t > 0)?)))
            .collect();
        if !totals.is_empty() {
            self.leaderboards
                .record_league(&quiz.id, &iso_week(quiz.created_at), &totals)
                .await?;
        }
        Ok(())
    }
}
