//! The Redis Cluster leaderboard store: per-quiz standings and cross-quiz leagues, derived
//! from the answer log and rebuilt from it whenever Redis may have lost writes (replication is
//! asynchronous, so a failover can drop acknowledged ones; a wiped cluster drops them all).
//!
//! # Keys
//!
//! Every key of a quiz carries the hash tag `{quiz:ID}`, so they all live in one slot and one
//! Lua script reads and writes them atomically (a script over several slots would fail with
//! CROSSSLOT; the tests check every key's slot). `NS` is an optional namespace (empty by
//! default) for sharing one cluster between deployments or test cases.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `NS{quiz:ID}:lb` | ZSET | the standings (below) |
//! | `NS{quiz:ID}:pts` | HASH | player → score |
//! | `NS{quiz:ID}:tb` | HASH | player → tie-break (ms of the answers that scored) |
//! | `NS{quiz:ID}:seen` | SET | `player:question` of every answer counted |
//! | `NS{quiz:ID}:gone` | SET | players taken off the board for good |
//! | `NS{quiz:ID}:epoch` | STRING | the newest ownership epoch that wrote |
//! | `NS{quiz:ID}:gen` | STRING | the generation: set by a rebuild, gone with the data |
//! | `NS{quiz:ID}:rebuild:TOKEN:*` | | a rebuild's staged keys, with a TTL |
//! | `NS{league:week:WEEK}:contrib`, `NS{league:all-time}:contrib` | HASH | `QUIZ:user` → the quiz's contribution |
//! | `NS{league:week:WEEK}:rank`, `NS{league:all-time}:rank` | ZSET | user → −(league points) |
//!
//! # Order
//!
//! The standings ZSET scores a player `−score` and names them `TTTTTTTTTTTTTTTTTTTT:PPPPPPPPPP`
//! (tie-break and player number, zero-padded to 20 and 10 digits). `ZRANGE` reads ascending
//! scores, so the highest score comes first, and equal scores in ascending byte order of the
//! member, so the smaller tie-break and then the smaller player number come first: exactly the
//! engine's `RankKey`, with nothing sorted client-side. The score is exact (a u32 in a double)
//! and the member holds the exact tie-break, so one `ZRANGE` gives whole rows; tie-breaks stay
//! exact below 2^53 ms (the Lua number). The hashes hold the same values for the scripts. A
//! league's ZSET is scored the same way (−points, user id as member): best first, ties by
//! user id compared byte by byte.
//!
//! # Writes
//!
//! Every write is one Lua script on one hash tag, and every script is idempotent, because the
//! client may run a script again after an I/O error when the first run had gone through:
//! - apply (per quiz, at most [`CHUNK`] records per call): refuses with `FENCED <current>` when
//!   the stored epoch is newer, with `NEEDS_REBUILD` when `gen` is missing (nothing applied),
//!   raises the stored epoch, then counts each record whose `player:question` its `SADD` to
//!   `seen` adds, unless the player is `gone`;
//! - remove: fenced likewise, adds the player to `gone` and takes them off the board;
//! - rebuild: stages the standings computed from the log under temporary keys of the same tag
//!   (chunked, with a TTL so an abandoned rebuild cleans itself up), then one fenced script
//!   renames them over the live keys and sets `gen` to the rebuild's token: readers see the
//!   old standings or the new, never a mix. Run again, it finds its own token and does nothing;
//! - leagues: after the quiz's own writes, one script per league sets the quiz's contribution
//!   per user to the largest total recorded and adds the growth to the user's league score, as
//!   the SQL store does (a late, smaller total from an older batch adds nothing).
//!
//! A rebuild replaces what applies wrote meanwhile: its owner runs them one at a time (the
//! node's journal does), and passes a log read after the last apply it wants kept. Reads do
//! not check the generation: a quiz whose data was lost reads as empty until it is rebuilt.
//!
//! A quiz's standings exist once a rebuild has run for it: a new quiz starts with a rebuild
//! from its (empty) log when its owner takes it, and an owner that gets
//! [`StoreError::NeedsRebuild`] rebuilds from the log (which holds the records it was
//! applying: the log is written first) and goes on. Redis cannot tell a quiz it never saw from
//! one whose data it lost, so both answer `NeedsRebuild`.
//!
//! # Connection
//!
//! One multiplexed cluster connection, opened on first use rather than in
//! [`RedisLeaderboard::connect`], so that a node starts while Redis is down (quizzes go on
//! from memory and the leaderboard catches up later): each call then fails with
//! [`StoreError::Unavailable`] within the configured timeouts, and a later call connects.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use quiz_engine::AnswerRecord;
use quiz_protocol::{Epoch, PlayerNo, QuizId, UserId};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{ErrorKind, RedisError, Script, ServerErrorKind};
use tokio::sync::OnceCell;

use crate::{LeaderboardStore, League, LeagueRow, RedisConfig, StandingRow, StoreError};

/// The most records (or staged rows, or league totals) one script call carries: a call runs
/// alone on its Redis node, so a small one keeps other clients' latency low; 512 take well
/// under a millisecond.
pub const CHUNK: usize = 512;

/// How long a rebuild's staged keys live if the rebuild is abandoned half-way. A rebuild of
/// 100,000 answers stages in about a second.
const STAGING_TTL_S: u64 = 3_600;

/// The wait before the first retry of a failed command (the client's default, 1.28 s, is
/// longer than a whole failover of a test cluster).
const MIN_RETRY_WAIT_MS: u64 = 50;
/// The longest wait between two retries.
const MAX_RETRY_WAIT_MS: u64 = 1_000;

/// `member(tb, player)`: the standings ZSET member (see the module docs), shared by scripts.
const LUA_MEMBER: &str = r"
local function member(tb, player)
  return string.format('%020d:%010d', tonumber(tb), tonumber(player))
end
";

/// Fences on KEYS[1] (epoch) with ARGV[1], and requires KEYS[2] (gen); then raises the epoch.
const LUA_FENCE: &str = r"
local function fence_and_check_gen()
  local epoch = tonumber(ARGV[1])
  local current = tonumber(redis.call('GET', KEYS[1]) or '0')
  if current > epoch then
    return redis.error_reply('FENCED ' .. string.format('%d', current))
  end
  if redis.call('EXISTS', KEYS[2]) == 0 then
    return redis.error_reply('NEEDS_REBUILD the standings are gone')
  end
  if epoch > current then
    redis.call('SET', KEYS[1], ARGV[1])
  end
  return nil
end
";

/// KEYS: epoch, gen, seen, gone, pts, tb, lb. ARGV: epoch, then (player, question, points,
/// response_ms) per record. Returns how many answers the standings count now.
const LUA_APPLY: &str = r"
local refused = fence_and_check_gen()
if refused then return refused end
local points, ms, order = {}, {}, {}
for i = 2, #ARGV, 4 do
  local player = ARGV[i]
  if redis.call('SADD', KEYS[3], player .. ':' .. ARGV[i + 1]) == 1
      and redis.call('SISMEMBER', KEYS[4], player) == 0 then
    if points[player] == nil then
      points[player] = 0
      ms[player] = 0
      order[#order + 1] = player
    end
    local p = tonumber(ARGV[i + 2])
    points[player] = points[player] + p
    if p > 0 then ms[player] = ms[player] + tonumber(ARGV[i + 3]) end
  end
end
for _, player in ipairs(order) do
  local old_tb = redis.call('HGET', KEYS[6], player)
  if old_tb then redis.call('ZREM', KEYS[7], member(old_tb, player)) end
  local score = redis.call('HINCRBY', KEYS[5], player, string.format('%d', points[player]))
  local tb = redis.call('HINCRBY', KEYS[6], player, string.format('%d', ms[player]))
  redis.call('ZADD', KEYS[7], string.format('%d', -score), member(tb, player))
end
return redis.call('SCARD', KEYS[3])
";

/// KEYS: epoch, gen, gone, pts, tb, lb. ARGV: epoch, player.
const LUA_REMOVE: &str = r"
local refused = fence_and_check_gen()
if refused then return refused end
local player = ARGV[2]
redis.call('SADD', KEYS[3], player)
local tb = redis.call('HGET', KEYS[5], player)
if tb then
  redis.call('ZREM', KEYS[6], member(tb, player))
  redis.call('HDEL', KEYS[4], player)
  redis.call('HDEL', KEYS[5], player)
end
return 0
";

/// KEYS: staged lb, pts, tb, seen, gone. ARGV: ttl, players n, seen m, then n (player,
/// score, tie-break), m `player:question`, and the rest gone players.
const LUA_STAGE: &str = r"
local n, m = tonumber(ARGV[2]), tonumber(ARGV[3])
local i = 4
for _ = 1, n do
  local player, score, tb = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  redis.call('HSET', KEYS[2], player, score)
  redis.call('HSET', KEYS[3], player, tb)
  redis.call('ZADD', KEYS[1], '-' .. score, member(tb, player))
  i = i + 3
end
for _ = 1, m do
  redis.call('SADD', KEYS[4], ARGV[i])
  i = i + 1
end
while i <= #ARGV do
  redis.call('SADD', KEYS[5], ARGV[i])
  i = i + 1
end
for k = 1, 5 do redis.call('EXPIRE', KEYS[k], ARGV[1]) end
return 0
";

/// KEYS: epoch, gen, lb, pts, tb, seen, gone, then the staged lb, pts, tb, seen, gone. ARGV:
/// epoch, token, then the staged counts of lb, pts, tb, seen, gone. Returns 1 when it
/// swapped, 0 when this rebuild was in place already.
const LUA_SWAP: &str = r"
local epoch = tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current > epoch then
  return redis.error_reply('FENCED ' .. string.format('%d', current))
end
if redis.call('GET', KEYS[2]) == ARGV[2] then return 0 end
local counts = {
  redis.call('ZCARD', KEYS[8]), redis.call('HLEN', KEYS[9]), redis.call('HLEN', KEYS[10]),
  redis.call('SCARD', KEYS[11]), redis.call('SCARD', KEYS[12]),
}
for k = 1, 5 do
  if counts[k] ~= tonumber(ARGV[2 + k]) then
    return redis.error_reply('REBUILD_INCOMPLETE staged data is missing (expired?)')
  end
end
if epoch > current then redis.call('SET', KEYS[1], ARGV[1]) end
for k = 3, 7 do
  redis.call('UNLINK', KEYS[k])
  if redis.call('EXISTS', KEYS[k + 5]) == 1 then
    redis.call('RENAME', KEYS[k + 5], KEYS[k])
    redis.call('PERSIST', KEYS[k])
  end
end
redis.call('SET', KEYS[2], ARGV[2])
return 1
";

/// KEYS: gen, seen. How many answers the standings count; `NEEDS_REBUILD` if they are gone.
const LUA_COUNTED: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
    return redis.error_reply('NEEDS_REBUILD the standings are gone')
end
return redis.call('SCARD', KEYS[2])
";

/// KEYS: epoch. ARGV: epoch. Raises the stored epoch; refuses an older one.
const LUA_RAISE_EPOCH: &str = r"
local epoch = tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current > epoch then
  return redis.error_reply('FENCED ' .. string.format('%d', current))
end
if epoch > current then redis.call('SET', KEYS[1], ARGV[1]) end
return 0
";

/// KEYS: contributions, ranking. ARGV: quiz, expire-at (unix s; 0: never), then (user,
/// total) pairs. A contribution only grows; the ranking gains what it grew by.
const LUA_LEAGUE: &str = r"
for i = 3, #ARGV, 2 do
  local field = ARGV[1] .. ':' .. ARGV[i]
  local total = tonumber(ARGV[i + 1])
  local before = tonumber(redis.call('HGET', KEYS[1], field) or '0')
  if total > before then
    redis.call('HSET', KEYS[1], field, ARGV[i + 1])
    redis.call('ZINCRBY', KEYS[2], string.format('%d', before - total), ARGV[i])
  end
end
if ARGV[2] ~= '0' then
  redis.call('EXPIREAT', KEYS[1], ARGV[2])
  redis.call('EXPIREAT', KEYS[2], ARGV[2])
end
return 0
";

/// Leaderboards in Redis Cluster (see the module docs).
pub struct RedisLeaderboard {
    client: ClusterClient,
    /// Opened on first use; a failed attempt leaves it empty for the next call to retry.
    connection: OnceCell<ClusterConnection>,
    /// How long opening the connection may take.
    connect_deadline: Duration,
    namespace: String,
    weeks_kept: u32,
    scripts: Scripts,
}

struct Scripts {
    apply: Script,
    remove: Script,
    stage: Script,
    swap: Script,
    raise_epoch: Script,
    league: Script,
    counted: Script,
}

/// The keys of one quiz.
#[derive(Debug)]
struct QuizKeys {
    epoch: String,
    generation: String,
    lb: String,
    pts: String,
    tb: String,
    seen: String,
    gone: String,
}

/// The keys of one league.
#[derive(Debug)]
struct LeagueKeys {
    contrib: String,
    rank: String,
}

/// What a rebuild writes, computed from the log.
#[derive(Debug, Default)]
struct Rebuilt {
    /// (player, score, tie-break) of every player on the board.
    rows: Vec<(u32, u64, u64)>,
    /// `player:question` of every answer of the log.
    seen: Vec<String>,
    gone: Vec<u32>,
}

impl RedisLeaderboard {
    /// A store on the cluster `config.nodes` name. Connects lazily: this only checks the
    /// configuration, and fails with [`StoreError::Unavailable`] only if it is unusable.
    pub async fn connect(config: &RedisConfig) -> Result<RedisLeaderboard, StoreError> {
        Self::connect_namespaced(config, "").await
    }

    /// Like [`RedisLeaderboard::connect`], with every key prefixed by `namespace` (outside
    /// the hash tags, so a quiz's keys still share a slot; braces in it become `_`).
    pub async fn connect_namespaced(
        config: &RedisConfig,
        namespace: &str,
    ) -> Result<RedisLeaderboard, StoreError> {
        let connect = Duration::from_millis(config.connect_timeout_ms);
        let response = Duration::from_millis(config.response_timeout_ms);
        // Each attempt is bounded by `response`; the whole call, retries and their waits
        // included, by this.
        let attempts = config.retries.saturating_add(1);
        let overall = response.saturating_mul(attempts)
            + Duration::from_millis(MAX_RETRY_WAIT_MS).saturating_mul(config.retries);
        let client = ClusterClientBuilder::new(config.nodes.iter().map(String::as_str))
            .retries(config.retries)
            .min_retry_wait(MIN_RETRY_WAIT_MS)
            .max_retry_wait(MAX_RETRY_WAIT_MS)
            .connection_timeout(connect)
            .response_timeout(response)
            .overall_response_timeout(Some(overall))
            .build()
            .map_err(|e| StoreError::Unavailable(format!("Redis Cluster configuration: {e}")))?;
        Ok(RedisLeaderboard {
            client,
            connection: OnceCell::new(),
            // Connecting to the seeds, then reading the slot map from one.
            connect_deadline: connect + response + Duration::from_millis(100),
            namespace: namespace.replace(['{', '}'], "_"),
            weeks_kept: config.weekly_league_weeks_kept,
            scripts: Scripts {
                apply: Script::new(&format!("{LUA_MEMBER}{LUA_FENCE}{LUA_APPLY}")),
                remove: Script::new(&format!("{LUA_MEMBER}{LUA_FENCE}{LUA_REMOVE}")),
                stage: Script::new(&format!("{LUA_MEMBER}{LUA_STAGE}")),
                swap: Script::new(LUA_SWAP),
                raise_epoch: Script::new(LUA_RAISE_EPOCH),
                league: Script::new(LUA_LEAGUE),
                counted: Script::new(LUA_COUNTED),
            },
        })
    }

    /// Raises the quiz's stored epoch to `epoch`, so that from now on writes with an older one
    /// are refused even before the new owner's first write; [`StoreError::Fenced`] if a newer
    /// epoch is stored. A new owner that rebuilds when it takes a quiz gets the same from the
    /// rebuild.
    pub async fn fence(&self, quiz: &QuizId, epoch: Epoch) -> Result<(), StoreError> {
        let keys = self.quiz_keys(quiz);
        let mut connection = self.connection().await?;
        self.scripts
            .raise_epoch
            .key(&keys.epoch)
            .arg(epoch.0)
            .invoke_async::<i64>(&mut connection)
            .await
            .map_err(|e| script_error(e, quiz, epoch))?;
        Ok(())
    }

    /// The shared connection, opened on first use.
    async fn connection(&self) -> Result<ClusterConnection, StoreError> {
        let opened = self
            .connection
            .get_or_try_init(|| async {
                match tokio::time::timeout(
                    self.connect_deadline,
                    self.client.get_async_connection(),
                )
                .await
                {
                    Ok(Ok(connection)) => Ok(connection),
                    Ok(Err(e)) => Err(StoreError::Unavailable(format!(
                        "connecting to the Redis Cluster: {e}"
                    ))),
                    Err(_) => Err(StoreError::Unavailable(format!(
                        "connecting to the Redis Cluster timed out after {:?}",
                        self.connect_deadline
                    ))),
                }
            })
            .await?;
        Ok(opened.clone())
    }

    fn quiz_keys(&self, quiz: &QuizId) -> QuizKeys {
        let tag = format!("{}{{quiz:{}}}", self.namespace, quiz.as_str());
        QuizKeys {
            epoch: format!("{tag}:epoch"),
            generation: format!("{tag}:gen"),
            lb: format!("{tag}:lb"),
            pts: format!("{tag}:pts"),
            tb: format!("{tag}:tb"),
            seen: format!("{tag}:seen"),
            gone: format!("{tag}:gone"),
        }
    }

    /// The staged keys of one rebuild of `quiz`: lb, pts, tb, seen, gone.
    fn staged_keys(&self, quiz: &QuizId, token: &str) -> [String; 5] {
        let tag = format!(
            "{}{{quiz:{}}}:rebuild:{token}",
            self.namespace,
            quiz.as_str()
        );
        ["lb", "pts", "tb", "seen", "gone"].map(|k| format!("{tag}:{k}"))
    }

    fn league_keys(&self, league: &League) -> LeagueKeys {
        let tag = match league {
            League::Weekly(week) => format!("{}{{league:week:{week}}}", self.namespace),
            League::AllTime => format!("{}{{league:all-time}}", self.namespace),
        };
        LeagueKeys {
            contrib: format!("{tag}:contrib"),
            rank: format!("{tag}:rank"),
        }
    }

    /// Applies one chunk of one quiz's records.
    async fn apply_chunk(
        &self,
        connection: &mut ClusterConnection,
        quiz: &QuizId,
        epoch: Epoch,
        records: &[&AnswerRecord],
    ) -> Result<u64, StoreError> {
        let keys = self.quiz_keys(quiz);
        let mut call = self.scripts.apply.prepare_invoke();
        call.key(&keys.epoch)
            .key(&keys.generation)
            .key(&keys.seen)
            .key(&keys.gone)
            .key(&keys.pts)
            .key(&keys.tb)
            .key(&keys.lb)
            .arg(epoch.0);
        for r in records {
            call.arg(r.player.0)
                .arg(r.question)
                .arg(r.points)
                .arg(r.response_ms);
        }
        call.invoke_async::<u64>(connection)
            .await
            .map_err(|e| script_error(e, quiz, epoch))
    }

    /// Writes one rebuild's staged keys, chunk by chunk.
    async fn stage(
        &self,
        connection: &mut ClusterConnection,
        quiz: &QuizId,
        epoch: Epoch,
        staged: &[String; 5],
        rebuilt: &Rebuilt,
    ) -> Result<(), StoreError> {
        let mut rows = rebuilt.rows.chunks(CHUNK);
        let mut seen = rebuilt.seen.chunks(CHUNK);
        let mut gone = rebuilt.gone.chunks(CHUNK);
        loop {
            let (r, s, g) = (rows.next(), seen.next(), gone.next());
            if r.is_none() && s.is_none() && g.is_none() {
                return Ok(());
            }
            let (r, s, g) = (r.unwrap_or(&[]), s.unwrap_or(&[]), g.unwrap_or(&[]));
            let mut call = self.scripts.stage.prepare_invoke();
            for key in staged {
                call.key(key);
            }
            call.arg(STAGING_TTL_S).arg(r.len()).arg(s.len());
            for (player, score, tiebreak) in r {
                call.arg(*player).arg(*score).arg(*tiebreak);
            }
            call.arg(s).arg(g);
            call.invoke_async::<i64>(connection)
                .await
                .map_err(|e| script_error(e, quiz, epoch))?;
        }
    }

    /// The unix time (s) at which a weekly league's keys expire: `weeks_kept` weeks after its
    /// ISO week ends, and never sooner than `weeks_kept` weeks from now (a late write to an
    /// old week, or a week name that is not an ISO week); 0 (never) if `weeks_kept` is 0.
    fn weekly_expiry(&self, week: &str) -> u64 {
        const WEEK_S: u64 = 7 * 86_400;
        if self.weeks_kept == 0 {
            return 0;
        }
        let kept = u64::from(self.weeks_kept) * WEEK_S;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let after_week = iso_week_end(week).map_or(0, |end| end.saturating_add(kept));
        after_week.max(now.saturating_add(kept))
    }
}

#[async_trait]
impl LeaderboardStore for RedisLeaderboard {
    async fn apply(&self, epoch: Epoch, records: &[AnswerRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut by_quiz: BTreeMap<&QuizId, Vec<&AnswerRecord>> = BTreeMap::new();
        for r in records {
            by_quiz.entry(&r.quiz).or_default().push(r);
        }
        let mut connection = self.connection().await?;
        // Atomic per quiz and chunk, not across them: a retry after a failure half-way
        // re-runs the chunks that went through, which count nothing twice.
        for (quiz, records) in by_quiz {
            for chunk in records.chunks(CHUNK) {
                self.apply_chunk(&mut connection, quiz, epoch, chunk)
                    .await?;
            }
        }
        Ok(())
    }

    async fn remove_player(
        &self,
        quiz: &QuizId,
        epoch: Epoch,
        player: PlayerNo,
    ) -> Result<(), StoreError> {
        let keys = self.quiz_keys(quiz);
        let mut connection = self.connection().await?;
        self.scripts
            .remove
            .key(&keys.epoch)
            .key(&keys.generation)
            .key(&keys.gone)
            .key(&keys.pts)
            .key(&keys.tb)
            .key(&keys.lb)
            .arg(epoch.0)
            .arg(player.0)
            .invoke_async::<i64>(&mut connection)
            .await
            .map_err(|e| script_error(e, quiz, epoch))?;
        Ok(())
    }

    async fn apply_counted(
        &self,
        quiz: &QuizId,
        epoch: Epoch,
        records: &[AnswerRecord],
    ) -> Result<u64, StoreError> {
        let records: Vec<&AnswerRecord> = records.iter().collect();
        if records.iter().any(|r| &r.quiz != quiz) {
            return Err(StoreError::Corrupt(format!(
                "apply_counted of {quiz} got another quiz's answers"
            )));
        }
        if records.is_empty() {
            return self.counted(quiz).await;
        }
        let mut connection = self.connection().await?;
        // The script returns the count after each chunk: the last one is current.
        let mut counted = 0;
        for chunk in records.chunks(CHUNK) {
            counted = self
                .apply_chunk(&mut connection, quiz, epoch, chunk)
                .await?;
        }
        Ok(counted)
    }

    async fn counted(&self, quiz: &QuizId) -> Result<u64, StoreError> {
        let keys = self.quiz_keys(quiz);
        let mut connection = self.connection().await?;
        self.scripts
            .counted
            .key(&keys.generation)
            .key(&keys.seen)
            .invoke_async::<u64>(&mut connection)
            .await
            .map_err(|e| script_error(e, quiz, Epoch::FIRST))
    }

    async fn standings(&self, quiz: &QuizId, limit: usize) -> Result<Vec<StandingRow>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let keys = self.quiz_keys(quiz);
        let rows = zrange_head(&mut self.connection().await?, &keys.lb, limit).await?;
        rows.into_iter()
            .map(|(member, score)| {
                let (tiebreak, player) = member
                    .split_once(':')
                    .and_then(|(t, p)| Some((t.parse().ok()?, p.parse().ok()?)))
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!("standings member {member:?} of {quiz}"))
                    })?;
                Ok(StandingRow {
                    player: PlayerNo(player),
                    score: negated_count(score)?,
                    tiebreak,
                })
            })
            .collect()
    }

    async fn rebuild(
        &self,
        quiz: &QuizId,
        epoch: Epoch,
        records: &[AnswerRecord],
        removed: &[PlayerNo],
    ) -> Result<(), StoreError> {
        let rebuilt = Rebuilt::from_log(quiz, records, removed);
        let token = rebuild_token();
        let keys = self.quiz_keys(quiz);
        let staged = self.staged_keys(quiz, &token);
        let mut connection = self.connection().await?;
        self.stage(&mut connection, quiz, epoch, &staged, &rebuilt)
            .await?;
        let players = rebuilt.rows.len();
        let mut call = self.scripts.swap.prepare_invoke();
        call.key(&keys.epoch)
            .key(&keys.generation)
            .key(&keys.lb)
            .key(&keys.pts)
            .key(&keys.tb)
            .key(&keys.seen)
            .key(&keys.gone);
        for key in &staged {
            call.key(key);
        }
        call.arg(epoch.0)
            .arg(&token)
            .arg(players)
            .arg(players)
            .arg(players)
            .arg(rebuilt.seen.len())
            .arg(rebuilt.gone.len());
        call.invoke_async::<i64>(&mut connection)
            .await
            .map_err(|e| script_error(e, quiz, epoch))?;
        Ok(())
    }

    async fn record_league(
        &self,
        quiz: &QuizId,
        week: &str,
        totals: &[(UserId, u32)],
    ) -> Result<(), StoreError> {
        // A user listed twice counts with their larger total; a zero total raises nothing.
        let mut best: BTreeMap<&str, u32> = BTreeMap::new();
        for (user, total) in totals.iter().filter(|(_, total)| *total > 0) {
            let entry = best.entry(user.as_str()).or_default();
            *entry = (*entry).max(*total);
        }
        if best.is_empty() {
            return Ok(());
        }
        let best: Vec<(&str, u32)> = best.into_iter().collect();
        let mut connection = self.connection().await?;
        let leagues = [
            (League::Weekly(week.to_owned()), self.weekly_expiry(week)),
            (League::AllTime, 0),
        ];
        for (league, expire_at) in leagues {
            let keys = self.league_keys(&league);
            for chunk in best.chunks(CHUNK) {
                let mut call = self.scripts.league.prepare_invoke();
                call.key(&keys.contrib)
                    .key(&keys.rank)
                    .arg(quiz.as_str())
                    .arg(expire_at);
                for (user, total) in chunk {
                    call.arg(*user).arg(*total);
                }
                // Leagues are not fenced: the epoch only labels a refusal that cannot come.
                call.invoke_async::<i64>(&mut connection)
                    .await
                    .map_err(|e| script_error(e, quiz, Epoch(0)))?;
            }
        }
        Ok(())
    }

    async fn league(&self, league: &League, limit: usize) -> Result<Vec<LeagueRow>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let keys = self.league_keys(league);
        let rows = zrange_head(&mut self.connection().await?, &keys.rank, limit).await?;
        rows.into_iter()
            .map(|(user, score)| {
                Ok(LeagueRow {
                    user: UserId::parse(&user)
                        .map_err(|e| StoreError::Corrupt(format!("league member {user:?}: {e}")))?,
                    points: negated_count(score)?,
                })
            })
            .collect()
    }
}

impl Rebuilt {
    /// Counts a quiz's log as `apply` counts it: each (player, question) once, records of
    /// other quizzes skipped, removed players off the board but their answers still marked
    /// counted.
    fn from_log(quiz: &QuizId, records: &[AnswerRecord], removed: &[PlayerNo]) -> Rebuilt {
        let gone: BTreeSet<u32> = removed.iter().map(|p| p.0).collect();
        let mut counted: BTreeSet<(u32, u32)> = BTreeSet::new();
        let mut rows: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
        for r in records.iter().filter(|r| &r.quiz == quiz) {
            if !counted.insert((r.player.0, r.question)) || gone.contains(&r.player.0) {
                continue;
            }
            let row = rows.entry(r.player.0).or_default();
            row.0 += u64::from(r.points);
            if r.points > 0 {
                row.1 += u64::from(r.response_ms);
            }
        }
        Rebuilt {
            rows: rows.into_iter().map(|(p, (s, t))| (p, s, t)).collect(),
            seen: counted
                .into_iter()
                .map(|(player, question)| format!("{player}:{question}"))
                .collect(),
            gone: gone.into_iter().collect(),
        }
    }
}

/// The first `limit` members of a ZSET with their scores, lowest score first.
async fn zrange_head(
    connection: &mut ClusterConnection,
    key: &str,
    limit: usize,
) -> Result<Vec<(String, f64)>, StoreError> {
    let stop = i64::try_from(limit - 1).unwrap_or(i64::MAX);
    redis::cmd("ZRANGE")
        .arg(key)
        .arg(0)
        .arg(stop)
        .arg("WITHSCORES")
        .query_async(connection)
        .await
        .map_err(unavailable_or_corrupt)
}

/// A count stored negated as a ZSET score (see the module docs), back as a whole number.
fn negated_count<T: TryFrom<u64>>(score: f64) -> Result<T, StoreError> {
    let value = -score;
    if !(value.is_finite() && value >= 0.0 && value.fract() == 0.0 && value < 2f64.powi(53)) {
        return Err(StoreError::Corrupt(format!("a ZSET score of {score}")));
    }
    // Checked just above: a whole number in [0, 2^53).
    let whole = value as u64;
    T::try_from(whole).map_err(|_| StoreError::Corrupt(format!("a ZSET score of {score}")))
}

/// A token no other rebuild uses: this process, the time, and a counter.
fn rebuild_token() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// When the ISO week `YYYY-Www` ends (the next Monday, 00:00 UTC), in unix seconds; `None`
/// for anything else.
fn iso_week_end(week: &str) -> Option<u64> {
    let (year, number) = week.split_once("-W")?;
    if year.len() != 4 || number.len() != 2 {
        return None;
    }
    let year: i64 = year.parse().ok()?;
    let number: i64 = number.parse().ok()?;
    if !(1..=53).contains(&number) {
        return None;
    }
    // Week 1 is the week holding January 4th; weeks start on Monday.
    let jan4 = days_from_civil(year, 1, 4);
    let weekday = (jan4 + 3).rem_euclid(7); // 0 = Monday (1970-01-01 was a Thursday)
    let end = jan4 - weekday + 7 * number;
    u64::try_from(end * 86_400).ok()
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (H. Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Maps an error of one of our scripts: `FENCED <current>` and `NEEDS_REBUILD` are the
/// scripts' refusals; anything else is the connection's or the data's.
fn script_error(e: RedisError, quiz: &QuizId, epoch: Epoch) -> StoreError {
    match e.code() {
        Some("FENCED") => match e.detail().and_then(|d| d.trim().parse().ok()) {
            Some(current) => StoreError::Fenced {
                held: epoch.0,
                current,
            },
            None => StoreError::Corrupt(format!("a malformed fence refusal: {e}")),
        },
        Some("NEEDS_REBUILD") => StoreError::NeedsRebuild(quiz.clone()),
        Some("REBUILD_INCOMPLETE") => {
            StoreError::Unavailable(format!("rebuild of {quiz} must run again: {e}"))
        }
        _ => unavailable_or_corrupt(e),
    }
}

/// Connection trouble, a cluster in flux or a busy server is [`StoreError::Unavailable`]
/// (retry later); a reply that makes no sense is [`StoreError::Corrupt`].
fn unavailable_or_corrupt(e: RedisError) -> StoreError {
    let corrupt = match e.kind() {
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => true,
        // `ERR` from a script (bad data under our keys) and CROSSSLOT (a bug in our keys)
        // will not go away by retrying.
        ErrorKind::Server(ServerErrorKind::ResponseError | ServerErrorKind::CrossSlot) => true,
        ErrorKind::Extension => e.code() == Some("WRONGTYPE"),
        // I/O, timeouts, refused connections, CLUSTERDOWN, TRYAGAIN, MOVED/ASK left after
        // the retries, LOADING, READONLY, MASTERDOWN, BUSY, OOM...
        _ => false,
    };
    if corrupt {
        StoreError::Corrupt(format!("Redis: {e}"))
    } else {
        StoreError::Unavailable(format!("Redis: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use quiz_protocol::AnswerId;

    use super::*;

    /// The hash slot of a key, as Redis Cluster computes it: CRC16/XMODEM of the hash tag
    /// (the text between the first `{` and the next `}`, if not empty) or of the whole key.
    fn key_slot(key: &str) -> u16 {
        let bytes = key.as_bytes();
        let hashed = match bytes.iter().position(|&b| b == b'{') {
            Some(open) => match bytes[open + 1..].iter().position(|&b| b == b'}') {
                Some(len) if len > 0 => &bytes[open + 1..open + 1 + len],
                _ => bytes,
            },
            None => bytes,
        };
        let mut crc: u16 = 0;
        for &byte in hashed {
            crc ^= u16::from(byte) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 {
                    (crc << 1) ^ 0x1021
                } else {
                    crc << 1
                };
            }
        }
        crc % 16_384
    }

    fn store(namespace: &str) -> RedisLeaderboard {
        let config = RedisConfig {
            nodes: vec!["redis://127.0.0.1:1".into()],
            connect_timeout_ms: 100,
            response_timeout_ms: 100,
            retries: 0,
            weekly_league_weeks_kept: 8,
        };
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(RedisLeaderboard::connect_namespaced(&config, namespace))
            .unwrap()
    }

    #[test]
    fn key_slot_matches_the_redis_reference_values() {
        // From the Redis Cluster specification: CRC16("123456789") = 0x31C3 (slot 12739).
        assert_eq!(key_slot("123456789"), 12_739);
        assert_eq!(key_slot("{user1000}.following"), key_slot("user1000"));
        assert_eq!(key_slot("foo{}{bar}"), key_slot("foo{}{bar}"));
        assert_ne!(
            key_slot("foo{}{bar}"),
            key_slot("bar"),
            "an empty tag hashes it all"
        );
        assert_eq!(key_slot("foo{{bar}}zap"), key_slot("{bar"));
    }

    #[test]
    fn every_key_of_a_quiz_is_in_one_slot() {
        for namespace in ["", "test-7:", "odd{name}"] {
            let store = store(namespace);
            for n in 0..50 {
                let quiz = QuizId::from_random([n, n * 7, n * 13, 5, 3, n * 31]);
                let k = store.quiz_keys(&quiz);
                let mut keys = vec![k.epoch, k.generation, k.lb, k.pts, k.tb, k.seen, k.gone];
                keys.extend(store.staged_keys(&quiz, &rebuild_token()));
                let slot = key_slot(&keys[0]);
                assert_eq!(slot, key_slot(&format!("quiz:{}", quiz.as_str())));
                for key in &keys {
                    assert_eq!(
                        key_slot(key),
                        slot,
                        "{key} is not in the slot of {}",
                        keys[0]
                    );
                    assert!(key.starts_with(&namespace.replace(['{', '}'], "_")));
                }
            }
        }
    }

    #[test]
    fn every_key_of_a_league_is_in_one_slot() {
        let store = store("");
        for league in [
            League::AllTime,
            League::Weekly("2026-W48".into()),
            League::Weekly("week}{odd".into()),
        ] {
            let keys = store.league_keys(&league);
            assert_eq!(key_slot(&keys.contrib), key_slot(&keys.rank), "{league:?}");
        }
        let weekly = store.league_keys(&League::Weekly("all-time".into()));
        assert_ne!(weekly.rank, store.league_keys(&League::AllTime).rank);
    }

    #[test]
    fn iso_weeks_end_on_the_next_monday() {
        // 2026-W01 runs from Monday 2025-12-29 to Sunday 2026-01-04.
        assert_eq!(
            iso_week_end("2026-W01"),
            Some(days_from_civil(2026, 1, 5) as u64 * 86_400)
        );
        // 2026-W48: Monday 2026-11-23 to Sunday 2026-11-29.
        assert_eq!(
            iso_week_end("2026-W48"),
            Some(days_from_civil(2026, 11, 30) as u64 * 86_400)
        );
        // 2020 has 53 weeks; W53 ends on Monday 2021-01-04.
        assert_eq!(
            iso_week_end("2020-W53"),
            Some(days_from_civil(2021, 1, 4) as u64 * 86_400)
        );
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        for bad in ["2026-W00", "2026-W54", "2026W48", "26-W48", "all-time", ""] {
            assert_eq!(iso_week_end(bad), None, "{bad}");
        }
    }

    #[test]
    fn weekly_leagues_expire_weeks_after_their_week_or_their_last_write() {
        let store = store("");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let eight_weeks = 8 * 7 * 86_400;
        let far = store.weekly_expiry("2999-W10");
        assert_eq!(far, iso_week_end("2999-W10").unwrap() + eight_weeks);
        // A past week, or a name that is no ISO week: kept from now.
        for week in ["2001-W10", "spring"] {
            let at = store.weekly_expiry(week);
            assert!(
                at >= now + eight_weeks && at <= now + eight_weeks + 5,
                "{week}"
            );
        }
    }

    #[test]
    fn a_rebuild_counts_the_log_as_apply_does() {
        let quiz = QuizId::parse("K7M3QX").unwrap();
        let other = QuizId::from_random([1, 2, 3, 4, 5, 6]);
        let record =
            |quiz: &QuizId, player: u32, question: u32, points: u32, ms: u32| AnswerRecord {
                quiz: quiz.clone(),
                player: PlayerNo(player),
                question,
                answer_id: AnswerId::parse("a").unwrap(),
                answer: quiz_protocol::Answer::Choice(0),
                received_at: 0,
                response_ms: ms,
                points,
                correct: points > 0,
                streak: 0,
            };
        let log = [
            record(&quiz, 1, 0, 500, 1_000),
            record(&quiz, 1, 0, 900, 10), // the same answer again: counted once
            record(&quiz, 1, 1, 0, 7_000), // no points: its time does not count
            record(&quiz, 2, 0, 300, 200),
            record(&quiz, 3, 0, 800, 100), // removed
            record(&other, 1, 2, 1_000, 1),
        ];
        let rebuilt = Rebuilt::from_log(&quiz, &log, &[PlayerNo(3), PlayerNo(4)]);
        assert_eq!(rebuilt.rows, vec![(1, 500, 1_000), (2, 300, 200)]);
        assert_eq!(rebuilt.seen, vec!["1:0", "1:1", "2:0", "3:0"]);
        assert_eq!(rebuilt.gone, vec![3, 4]);
    }

    #[test]
    fn negated_scores_read_back_exactly() {
        assert_eq!(negated_count::<u32>(-0.0).unwrap(), 0);
        assert_eq!(negated_count::<u32>(0.0).unwrap(), 0);
        assert_eq!(negated_count::<u32>(-4_294_967_295.0).unwrap(), u32::MAX);
        assert_eq!(
            negated_count::<u64>(-9_007_199_254_740_991.0).unwrap(),
            9_007_199_254_740_991
        );
        for bad in [1.0, -0.5, f64::NAN, f64::NEG_INFINITY, -4_294_967_296.0] {
            assert!(negated_count::<u32>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn script_refusals_map_to_store_errors() {
        let quiz = QuizId::parse("K7M3QX").unwrap();
        let fenced = redis::make_extension_error("FENCED".into(), Some("7".into()));
        assert!(matches!(
            script_error(fenced, &quiz, Epoch(3)),
            StoreError::Fenced {
                held: 3,
                current: 7
            }
        ));
        let lost = redis::make_extension_error("NEEDS_REBUILD".into(), None);
        assert!(matches!(
            script_error(lost, &quiz, Epoch(3)),
            StoreError::NeedsRebuild(q) if q == quiz
        ));
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(script_error(io, &quiz, Epoch(3)).retryable());
        let wrong = redis::make_extension_error("WRONGTYPE".into(), Some("no".into()));
        assert!(matches!(
            script_error(wrong, &quiz, Epoch(3)),
            StoreError::Corrupt(_)
        ));
    }
}
