//! Quizzes: creation from a question set (hosts), a quiz's public summary, and the final
//! standings of an ended quiz. Looking a quiz up by its code counts a miss against the
//! client's failed-lookup limit, whichever endpoint does it, so codes cannot be guessed by
//! asking here instead of joining.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use quiz_engine::{Millis, PlayerRecord, Progress, RankKey};
use quiz_protocol::ids::QUIZ_ID_LEN;
use quiz_protocol::{
    ContentError, Epoch, Mode, Phase, PlayerNo, Question, QuestionSet, QuizId, QuizSettings, UserId,
};
use quiz_store::{QuizRecord, StandingRow, StoreError};
use serde::{Deserialize, Serialize};

use super::{App, AppState, ClientIp, JsonBody, PathId, QueryParams, now_ms};
use crate::auth::Caller;
use crate::error::{ApiError, problem};

/// Tries at a free quiz code before giving up. With 148 million codes, a second try is
/// already rare.
const CODE_ATTEMPTS: usize = 5;
/// Longest quiz title, in characters.
const MAX_TITLE_CHARS: usize = 100;
/// Standings rows returned when the query names no limit, and the most it may name.
const DEFAULT_STANDINGS: usize = 100;
const MAX_STANDINGS: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateQuiz {
    question_set: String,
    #[serde(default)]
    title: Option<String>,
    /// Question ids to use, in this order.
    #[serde(default)]
    questions: Option<Vec<String>>,
    /// Or: the first `count` questions of the set.
    #[serde(default)]
    count: Option<usize>,
    #[serde(default)]
    settings: Option<QuizSettings>,
}

#[derive(Serialize)]
pub(crate) struct Created {
    quiz_id: QuizId,
    title: String,
    question_count: usize,
    settings: QuizSettings,
}

#[derive(Serialize)]
pub(crate) struct QuizSummary {
    quiz_id: QuizId,
    title: String,
    mode: Mode,
    phase: Phase,
    question_count: usize,
    /// Players who joined and were not kicked.
    players: usize,
    /// Unix milliseconds.
    created_at: Millis,
}

#[derive(Deserialize)]
pub(crate) struct StandingsQuery {
    limit: Option<usize>,
}

#[derive(Serialize)]
pub(crate) struct Standings {
    quiz_id: QuizId,
    players: usize,
    standings: Vec<Standing>,
}

#[derive(Serialize)]
pub(crate) struct Standing {
    rank: usize,
    nickname: String,
    score: u32,
}

/// `POST /v1/quizzes`.
pub(crate) async fn create(
    State(app): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<CreateQuiz>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    caller.require_host()?;
    if let Err(wait) = app.limits.create_quiz.acquire(&caller.user, Instant::now()) {
        return Err(app.rate_limited("create_quiz", wait));
    }
    let set = super::content::usable_set(&app, &caller, &request.question_set)
        .await?
        .set;
    let (title, questions, settings) = request.resolve(set)?;
    let now = now_ms();
    let mut record = QuizRecord {
        owner: None,
        id: random_code(),
        title,
        host: caller.user.clone(),
        question_set: request.question_set,
        settings,
        questions,
        created_at: now,
        epoch: Epoch::FIRST,
        progress: Progress::lobby(now),
    };
    let mut attempts = 0;
    loop {
        match app.stores.quizzes.create_quiz(&record).await {
            Ok(()) => break,
            Err(StoreError::Conflict) if attempts + 1 < CODE_ATTEMPTS => {
                attempts += 1;
                record.id = random_code();
            }
            Err(StoreError::Conflict) => {
                return Err(ApiError::Unavailable("no free quiz code found".into()));
            }
            Err(e) => return Err(e.into()),
        }
    }
    tracing::info!(quiz = %record.id, user = %caller.user, questions = record.questions.len(), "quiz created");
    let created = Created {
        quiz_id: record.id,
        title: record.title,
        question_count: record.questions.len(),
        settings: record.settings,
    };
    Ok((StatusCode::CREATED, Json(created)))
}

/// `GET /v1/quizzes/{id}`.
pub(crate) async fn info(
    State(app): State<AppState>,
    caller: Caller,
    ClientIp(ip): ClientIp,
    PathId(code): PathId,
) -> Result<Json<QuizSummary>, ApiError> {
    let quiz = find_quiz(&app, ip, &caller.user, &code).await?;
    let players = app.stores.quizzes.players(&quiz.id).await?;
    Ok(Json(QuizSummary {
        mode: quiz.settings.mode,
        phase: quiz.progress.phase,
        question_count: quiz.questions.len(),
        players: players.iter().filter(|p| !p.kicked).count(),
        created_at: quiz.created_at,
        quiz_id: quiz.id,
        title: quiz.title,
    }))
}

/// `GET /v1/quizzes/{id}/standings?limit=N`: final standings, once the quiz has ended.
pub(crate) async fn standings(
    State(app): State<AppState>,
    caller: Caller,
    ClientIp(ip): ClientIp,
    PathId(code): PathId,
    QueryParams(query): QueryParams<StandingsQuery>,
) -> Result<Json<Standings>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_STANDINGS);
    if !(1..=MAX_STANDINGS).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1-{MAX_STANDINGS}"
        )));
    }
    let quiz = find_quiz(&app, ip, &caller.user, &code).await?;
    if quiz.progress.phase != Phase::Ended {
        return Err(ApiError::Conflict("the quiz has not finished".into()));
    }
    if !app.stores.leaderboard_matches_log(&quiz.id).await? {
        repair_standings(&app, &quiz).await?;
    }
    let rows = app.stores.leaderboards.standings(&quiz.id, limit).await?;
    let players = app.stores.quizzes.players(&quiz.id).await?;
    let standings = rank(rows, &players, limit);
    Ok(Json(Standings {
        quiz_id: quiz.id,
        players: players.iter().filter(|p| !p.kicked).count(),
        standings,
    }))
}

/// The leaderboard store is derived and may have lost data (a Redis failover or restart)
/// after the quiz's last write; an ended quiz has no owner left to notice. Rebuilds its
/// standings (and league points) from the log, once: readers of the same quiz wait for the
/// rebuild under way and find the standings right.
async fn repair_standings(app: &App, quiz: &QuizRecord) -> Result<(), ApiError> {
    let lock = repairs(app).entry(quiz.id.clone()).or_default().clone();
    let result = async {
        let _only = lock.lock().await;
        if app.stores.leaderboard_matches_log(&quiz.id).await? {
            return Ok(());
        }
        tracing::warn!(quiz = %quiz.id, "the final standings differ from the answer log; repairing them");
        let repaired = app.stores.repair_leaderboard(quiz).await;
        let outcome = if repaired.is_ok() { "ok" } else { "failed" };
        app.metrics
            .standings_repairs
            .with_label_values(&[outcome])
            .inc();
        repaired
    }
    .await;
    // The last one out forgets the lock (the map holds one clone, each reader another).
    let mut table = repairs(app);
    if Arc::strong_count(&lock) <= 2 {
        table.remove(&quiz.id);
    }
    drop(table);
    result.map_err(ApiError::from)
}

type Repairs = HashMap<QuizId, Arc<tokio::sync::Mutex<()>>>;

fn repairs(app: &App) -> std::sync::MutexGuard<'_, Repairs> {
    app.repairs
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Looks up a quiz by a code as typed. An ill-formed or unknown code is charged to the
/// client's failed-lookup bucket; an empty bucket refuses the lookup before the store is asked.
pub(crate) async fn find_quiz(
    app: &App,
    ip: IpAddr,
    user: &UserId,
    code: &str,
) -> Result<QuizRecord, ApiError> {
    let now = Instant::now();
    if let Err(wait) = app.limits.failed_lookup.check(&ip, now) {
        return Err(app.rate_limited("failed_lookup", wait));
    }
    if let Err(wait) = app.limits.failed_lookup_user.check(user, now) {
        return Err(app.rate_limited("failed_lookup_user", wait));
    }
    let found = match QuizId::parse(code) {
        Err(e) => Err(ApiError::BadRequest(e.to_string())),
        Ok(id) => app
            .stores
            .quizzes
            .quiz(&id)
            .await?
            .ok_or(ApiError::UnknownQuiz),
    };
    if found.is_err() {
        app.limits.failed_lookup.charge(&ip, now);
        app.limits.failed_lookup_user.charge(user, now);
    }
    found
}

impl CreateQuiz {
    /// The title, questions and settings the request asks for, or every problem with it.
    fn resolve(&self, set: QuestionSet) -> Result<(String, Vec<Question>, QuizSettings), ApiError> {
        let mut errors = Vec::new();
        let title = match &self.title {
            None => set.title.clone(),
            Some(t) => {
                let t = t.trim();
                if t.is_empty() || t.chars().count() > MAX_TITLE_CHARS {
                    errors.push(problem("title", "must be 1-100 characters"));
                }
                t.to_owned()
            }
        };
        let questions = self.pick(set, &mut errors);
        let settings = self.settings.clone().unwrap_or_default();
        if let Err(problems) = settings.validate() {
            errors.extend(problems.into_iter().map(|p| ContentError {
                path: format!("settings.{}", p.path),
                problem: p.problem,
            }));
        }
        if errors.is_empty() {
            Ok((title, questions, settings))
        } else {
            Err(ApiError::InvalidContent(errors))
        }
    }

    fn pick(&self, set: QuestionSet, errors: &mut Vec<ContentError>) -> Vec<Question> {
        let available = set.questions.len();
        match (&self.questions, self.count) {
            (Some(_), Some(_)) => {
                errors.push(problem("count", "give questions or count, not both"));
                Vec::new()
            }
            (None, None) => set.questions,
            (None, Some(count)) => {
                if !(1..=available).contains(&count) {
                    errors.push(problem("count", format!("must be 1-{available}")));
                }
                set.questions.into_iter().take(count).collect()
            }
            (Some(ids), None) => {
                if ids.is_empty() {
                    errors.push(problem("questions", "must name at least one question"));
                }
                let by_id: HashMap<&str, &Question> =
                    set.questions.iter().map(|q| (q.id.as_str(), q)).collect();
                let mut picked = Vec::with_capacity(ids.len());
                for (i, id) in ids.iter().enumerate() {
                    if ids[..i].contains(id) {
                        errors.push(problem(format!("questions[{i}]"), "is named twice"));
                    } else if let Some(q) = by_id.get(id.as_str()) {
                        picked.push((*q).clone());
                    } else {
                        errors.push(problem(
                            format!("questions[{i}]"),
                            format!("{id:?} is not in the set"),
                        ));
                    }
                }
                picked
            }
        }
    }
}

fn random_code() -> QuizId {
    QuizId::from_random(rand::random::<[u32; QUIZ_ID_LEN]>())
}

/// Final standings: the stored leaderboard rows, then players who joined but never answered
/// (score 0), in the engine's leaderboard order, kicked players left out, ranks 1, 2, 3, ...
fn rank(rows: Vec<StandingRow>, players: &[PlayerRecord], limit: usize) -> Vec<Standing> {
    let by_no: HashMap<PlayerNo, &PlayerRecord> = players.iter().map(|p| (p.player, p)).collect();
    let complete = rows.len() < limit;
    let mut keys: Vec<RankKey> = rows
        .iter()
        .filter(|r| by_no.get(&r.player).is_some_and(|p| !p.kicked))
        .map(|r| RankKey {
            score: r.score,
            tiebreak: r.tiebreak,
            player: r.player,
        })
        .collect();
    // When the store returned fewer rows than asked, it returned all it has: everyone else
    // never answered. (When it returned `limit` rows, the list is already full.)
    if complete {
        let listed: std::collections::HashSet<PlayerNo> = rows.iter().map(|r| r.player).collect();
        keys.extend(
            players
                .iter()
                .filter(|p| !p.kicked && !listed.contains(&p.player))
                .map(|p| RankKey {
                    score: 0,
                    tiebreak: 0,
                    player: p.player,
                }),
        );
        keys.sort();
    }
    keys.into_iter()
        .take(limit)
        .enumerate()
        .filter_map(|(i, key)| {
            let player = by_no.get(&key.player)?;
            Some(Standing {
                rank: i + 1,
                nickname: player.nickname.clone(),
                score: key.score,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use quiz_protocol::UserId;

    use super::*;

    fn player(no: u32, nick: &str, kicked: bool) -> PlayerRecord {
        PlayerRecord {
            player: PlayerNo(no),
            user: UserId::parse(&format!("u{no}")).unwrap(),
            nickname: nick.into(),
            joined_at: 0,
            kicked,
            current: None,
            current_opened_at: None,
        }
    }

    fn row(no: u32, score: u32, tiebreak: u64) -> StandingRow {
        StandingRow {
            player: PlayerNo(no),
            score,
            tiebreak,
        }
    }

    #[test]
    fn standings_list_scorers_then_the_rest_without_the_kicked() {
        let players = [
            player(1, "ann", false),
            player(2, "bob", false),
            player(3, "cy", true),
            player(4, "dee", false),
            player(5, "eve", false),
        ];
        let rows = vec![row(4, 900, 10), row(3, 800, 5), row(2, 0, 0)];
        let out = rank(rows, &players, 100);
        let names: Vec<_> = out
            .iter()
            .map(|s| (s.rank, s.nickname.as_str(), s.score))
            .collect();
        assert_eq!(
            names,
            [(1, "dee", 900), (2, "ann", 0), (3, "bob", 0), (4, "eve", 0)]
        );
    }

    #[test]
    fn standings_stop_at_the_limit() {
        let players = [
            player(1, "a", false),
            player(2, "b", false),
            player(3, "c", false),
        ];
        let out = rank(vec![row(2, 10, 0)], &players, 2);
        let names: Vec<_> = out.iter().map(|s| s.nickname.as_str()).collect();
        assert_eq!(names, ["b", "a"]);
        let full = rank(vec![row(2, 10, 0), row(3, 5, 0)], &players, 2);
        assert_eq!(full.len(), 2);
        assert_eq!(full[1].nickname, "c");
    }
}
