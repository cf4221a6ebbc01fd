//! The checker: compares a run's history with what the system holds afterwards: the answer log
//! in PostgreSQL, the standings in Redis, the router's standings endpoint and the leagues.
//!
//! - **lost**: acknowledged, but not in the log with the points it was acknowledged for;
//! - **duplicated**: in the log more than once (by `answer_id`, or by player and question);
//! - **unexpected**: in the log although never sent, or sent and definitely refused;
//! - **stuck**: sent, and the phone never learned whether it counted;
//! - **unfinished**: phones that never saw their quiz end;
//! - **boards**: every leaderboard that differs from the one the log implies: a phone's final
//!   score, the final top N the phones were shown (the owner's memory), the Redis standings,
//!   the router's standings, the weekly and all-time leagues.
//!
//! [`judge`] is the pure part (history and observations in, verdict out); [`observe`] reads
//! the stores; [`check`] polls both until the derived boards settle or time runs out.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use quiz_engine::session::{AnswerRecord, PlayerRecord};
use quiz_protocol::{AnswerId, QuizId, UserId};
use quiz_store::{League, LeagueRow, StandingRow, Stores, iso_week};

use crate::history::{Outcome, Record};

/// What the stores hold for one quiz.
#[derive(Clone, Debug)]
pub struct ObservedQuiz {
    pub log: Vec<AnswerRecord>,
    pub players: Vec<PlayerRecord>,
    pub created_at: i64,
    /// The Redis standings, or why they could not be read.
    pub redis: Result<Vec<StandingRow>, String>,
    /// The router's standings as (nickname, score), or why they could not be read.
    pub router: Result<Vec<(String, u32)>, String>,
}

/// What the stores hold after a run.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub quizzes: HashMap<QuizId, ObservedQuiz>,
    pub all_time: Vec<LeagueRow>,
    /// By ISO week.
    pub weekly: HashMap<String, Vec<LeagueRow>>,
}

/// What the checker found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Verdict {
    pub sent: usize,
    pub acked: usize,
    pub refused: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub unexpected: usize,
    pub stuck: usize,
    pub unfinished: usize,
    /// Leaderboards that differ from the log, each named.
    pub boards: Vec<String>,
    /// Per phone, the longest an answer of it waited to be settled, ms.
    pub outages_ms: Vec<u64>,
    /// The first problems in detail.
    pub details: Vec<String>,
}

impl Verdict {
    /// Whether every promise held.
    pub fn clean(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.unexpected == 0
            && self.stuck == 0
            && self.unfinished == 0
            && self.boards.is_empty()
    }

    fn problem(&mut self, detail: String) {
        if self.details.len() < 20 {
            self.details.push(detail);
        }
    }

    /// Adds another verdict's counts (rounds of one scenario).
    pub fn add(&mut self, other: Verdict) {
        self.sent += other.sent;
        self.acked += other.acked;
        self.refused += other.refused;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.unexpected += other.unexpected;
        self.stuck += other.stuck;
        self.unfinished += other.unfinished;
        self.boards.extend(other.boards);
        self.outages_ms.extend(other.outages_ms);
        for d in other.details {
            self.problem(d);
        }
    }

    /// A short human summary.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "{} answers sent, {} acknowledged, {} refused; lost {}, duplicated {}, unexpected \
             {}, stuck {}, unfinished phones {}, boards wrong {}",
            self.sent,
            self.acked,
            self.refused,
            self.lost,
            self.duplicated,
            self.unexpected,
            self.stuck,
            self.unfinished,
            self.boards.len()
        );
        for d in self.details.iter().chain(&self.boards).take(20) {
            let _ = write!(out, "\n  - {d}");
        }
        out
    }
}

/// The quizzes a history names.
pub fn quizzes(history: &[Record]) -> Vec<QuizId> {
    history
        .iter()
        .filter_map(|r| match r {
            Record::Quiz { quiz, .. } => Some(quiz.clone()),
            _ => None,
        })
        .collect()
}

/// Compares a history with what the stores hold.
pub fn judge(history: &[Record], observed: &Observed) -> Verdict {
    let mut v = Verdict::default();
    let mut sent: HashMap<&AnswerId, &Outcome> = HashMap::new();
    let mut longest: BTreeMap<(&QuizId, &str), u64> = BTreeMap::new();
    for r in history {
        let Record::Answer {
            quiz,
            phone,
            answer_id,
            sent_ms,
            settled_ms,
            outcome,
            ..
        } = r
        else {
            continue;
        };
        v.sent += 1;
        sent.insert(answer_id, outcome);
        let waited = settled_ms.saturating_sub(*sent_ms);
        let slot = longest.entry((quiz, phone.as_str())).or_default();
        *slot = (*slot).max(waited);
        let log = observed.quizzes.get(quiz).map_or(&[][..], |q| &q.log[..]);
        let rows: Vec<&AnswerRecord> = log.iter().filter(|a| &a.answer_id == answer_id).collect();
        match outcome {
            Outcome::Ack { points } => {
                v.acked += 1;
                if !rows.iter().any(|a| a.points == *points) {
                    v.lost += 1;
                    v.problem(format!(
                        "lost: {quiz} {phone} answer {answer_id} acknowledged with {points} \
                         points; the log holds {:?}",
                        rows.iter().map(|a| a.points).collect::<Vec<_>>()
                    ));
                }
            }
            Outcome::Refused { .. } => v.refused += 1,
            Outcome::Unknown { error } => {
                v.stuck += 1;
                v.problem(format!(
                    "stuck: {quiz} {phone} answer {answer_id} never settled ({error})"
                ));
            }
        }
    }
    v.outages_ms = longest.into_values().collect();

    for quiz in quizzes(history) {
        let Some(q) = observed.quizzes.get(&quiz) else {
            v.boards.push(format!("{quiz}: not found in the stores"));
            continue;
        };
        let mut ids: HashMap<&AnswerId, usize> = HashMap::new();
        let mut slots: HashSet<(u32, u32)> = HashSet::new();
        for a in &q.log {
            *ids.entry(&a.answer_id).or_default() += 1;
            if !slots.insert((a.player.0, a.question)) {
                v.duplicated += 1;
                v.problem(format!(
                    "duplicated: {quiz} player {} answered question {} twice",
                    a.player.0, a.question
                ));
            }
            match sent.get(&a.answer_id) {
                None => {
                    v.unexpected += 1;
                    v.problem(format!(
                        "unexpected: {quiz} answer {} was never sent",
                        a.answer_id
                    ));
                }
                Some(Outcome::Refused { code }) => {
                    v.unexpected += 1;
                    v.problem(format!(
                        "unexpected: {quiz} answer {} was refused ({code}) yet logged",
                        a.answer_id
                    ));
                }
                Some(_) => {}
            }
        }
        for (id, n) in ids {
            if n > 1 {
                v.duplicated += n - 1;
                v.problem(format!(
                    "duplicated: {quiz} answer {id} is logged {n} times"
                ));
            }
        }
        boards(&mut v, history, &quiz, q);
    }
    leagues(&mut v, history, observed);
    v
}

/// A quiz's boards against its log.
fn boards(v: &mut Verdict, history: &[Record], quiz: &QuizId, q: &ObservedQuiz) {
    let kicked: HashSet<u32> = q
        .players
        .iter()
        .filter(|p| p.kicked)
        .map(|p| p.player.0)
        .collect();
    let log: Vec<AnswerRecord> = q
        .log
        .iter()
        .filter(|a| !kicked.contains(&a.player.0))
        .cloned()
        .collect();
    let want = StandingRow::from_log(&log);
    let nickname: HashMap<u32, &str> = q
        .players
        .iter()
        .map(|p| (p.player.0, p.nickname.as_str()))
        .collect();
    let score_of: HashMap<&str, u32> = want
        .iter()
        .filter_map(|r| Some((*nickname.get(&r.player.0)?, r.score)))
        .collect();
    let want_scores: Vec<u32> = want.iter().map(|r| r.score).collect();
    // Phones are shown every player, also those none of whose answers counted.
    let mut every_score: Vec<u32> = q
        .players
        .iter()
        .filter(|p| !p.kicked)
        .map(|p| score_of.get(p.nickname.as_str()).copied().unwrap_or(0))
        .collect();
    every_score.sort_by(|a, b| b.cmp(a));

    match &q.redis {
        Ok(rows) if *rows == want => {}
        Ok(rows) => v.boards.push(format!(
            "{quiz}: the Redis standings ({} rows) differ from the log's ({} rows)",
            rows.len(),
            want.len()
        )),
        Err(e) => v.boards.push(format!("{quiz}: the Redis standings: {e}")),
    }
    match &q.router {
        Ok(rows) => {
            let scores: Vec<u32> = rows.iter().map(|(_, s)| *s).collect();
            let named_right = rows
                .iter()
                .all(|(n, s)| score_of.get(n.as_str()).copied().unwrap_or(0) == *s);
            if scores != want_scores || !named_right {
                v.boards.push(format!(
                    "{quiz}: the router's standings ({} rows) differ from the log's",
                    rows.len()
                ));
            }
        }
        Err(e) => v
            .boards
            .push(format!("{quiz}: the router's standings: {e}")),
    }
    for r in history {
        let Record::Final {
            quiz: of,
            phone,
            nickname,
            score,
            top,
        } = r
        else {
            continue;
        };
        if of != quiz {
            continue;
        }
        let (Some(score), Some(top)) = (score, top) else {
            v.unfinished += 1;
            v.problem(format!("unfinished: {quiz} {phone} never saw the quiz end"));
            continue;
        };
        let logged = score_of.get(nickname.as_str()).copied().unwrap_or(0);
        if *score != logged {
            v.boards.push(format!(
                "{quiz}: {phone} was shown a final score of {score}; the log gives {logged}"
            ));
        }
        let shown: Vec<u32> = top.iter().map(|(_, s)| *s).collect();
        let expected: Vec<u32> = every_score.iter().copied().take(top.len()).collect();
        let named_right = top
            .iter()
            .all(|(n, s)| score_of.get(n.as_str()).copied().unwrap_or(0) == *s);
        if shown != expected || !named_right {
            v.boards.push(format!(
                "{quiz}: {phone} was shown a final top {} that differs from the log's",
                top.len()
            ));
        }
    }
}

/// The leagues' entries for the history's users against the logs of its quizzes (the users of
/// a run play in its quizzes only).
fn leagues(v: &mut Verdict, history: &[Record], observed: &Observed) {
    let mut all_time: HashMap<UserId, u64> = HashMap::new();
    let mut weekly: HashMap<String, HashMap<UserId, u64>> = HashMap::new();
    let mut users: HashSet<UserId> = HashSet::new();
    for quiz in quizzes(history) {
        let Some(q) = observed.quizzes.get(&quiz) else {
            continue;
        };
        let mut points: HashMap<u32, u64> = HashMap::new();
        for a in &q.log {
            *points.entry(a.player.0).or_default() += u64::from(a.points);
        }
        let week = iso_week(q.created_at);
        for p in q.players.iter().filter(|p| !p.kicked) {
            users.insert(p.user.clone());
            let pts = points.get(&p.player.0).copied().unwrap_or(0);
            if pts > 0 {
                *all_time.entry(p.user.clone()).or_default() += pts;
                *weekly
                    .entry(week.clone())
                    .or_default()
                    .entry(p.user.clone())
                    .or_default() += pts;
            }
        }
    }
    let compare = |v: &mut Verdict, name: &str, want: &HashMap<UserId, u64>, got: &[LeagueRow]| {
        let got: HashMap<&UserId, u64> = got
            .iter()
            .filter(|r| users.contains(&r.user))
            .map(|r| (&r.user, r.points))
            .collect();
        let wrong = users
            .iter()
            .filter(|u| want.get(*u).copied().unwrap_or(0) != got.get(u).copied().unwrap_or(0))
            .count();
        if wrong > 0 {
            v.boards.push(format!(
                "the {name} league is wrong for {wrong} of the run's users"
            ));
        }
    };
    compare(v, "all-time", &all_time, &observed.all_time);
    for (week, want) in &weekly {
        let got = observed.weekly.get(week).map_or(&[][..], |g| &g[..]);
        compare(v, &format!("weekly {week}"), want, got);
    }
}

/// Reads what the stores and the router hold for a history's quizzes.
pub async fn observe(
    history: &[Record],
    stores: &Stores,
    router: &quiz_client::RouterClient,
) -> anyhow::Result<Observed> {
    let mut observed = Observed::default();
    let mut weeks = HashSet::new();
    for quiz in quizzes(history) {
        let log = stores.answers.answers(&quiz).await?;
        let players = stores.quizzes.players(&quiz).await?;
        let record = stores.quizzes.quiz(&quiz).await?;
        let created_at = record.map_or(0, |r| r.created_at);
        weeks.insert(iso_week(created_at));
        let redis = stores
            .leaderboards
            .standings(&quiz, LIMIT)
            .await
            .map_err(|e| e.to_string());
        let router = router
            .standings(&quiz, Some(1000))
            .await
            .map(|s| {
                s.standings
                    .into_iter()
                    .map(|r| (r.nickname, r.score))
                    .collect()
            })
            .map_err(|e| e.to_string());
        observed.quizzes.insert(
            quiz,
            ObservedQuiz {
                log,
                players,
                created_at,
                redis,
                router,
            },
        );
    }
    observed.all_time = stores.leaderboards.league(&League::AllTime, LIMIT).await?;
    for week in weeks {
        let rows = stores
            .leaderboards
            .league(&League::Weekly(week.clone()), LIMIT)
            .await?;
        observed.weekly.insert(week, rows);
    }
    Ok(observed)
}

const LIMIT: usize = 10_000;

/// Judges `history` against the stores, again and again for up to `settle` while only derived
/// boards are wrong (they are repaired after the fact), and returns the last verdict.
pub async fn check(
    history: &[Record],
    stores: &Stores,
    router: &quiz_client::RouterClient,
    settle: Duration,
) -> anyhow::Result<Verdict> {
    let deadline = Instant::now() + settle;
    loop {
        let verdict = match observe(history, stores, router).await {
            Ok(observed) => judge(history, &observed),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "reading the stores for the check");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        if verdict.boards.is_empty() || Instant::now() >= deadline {
            return Ok(verdict);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use quiz_protocol::{Answer, PlayerNo};

    use super::*;

    fn quiz() -> QuizId {
        QuizId::parse("K7M3QX").unwrap()
    }

    fn answer(phone: &str, question: u32, id: &str, outcome: Outcome) -> Record {
        Record::Answer {
            quiz: quiz(),
            phone: phone.into(),
            question,
            answer_id: AnswerId::parse(id).unwrap(),
            sent_ms: 100,
            settled_ms: 150,
            outcome,
        }
    }

    fn row(player: u32, question: u32, id: &str, points: u32) -> AnswerRecord {
        AnswerRecord {
            quiz: quiz(),
            player: PlayerNo(player),
            question,
            answer_id: AnswerId::parse(id).unwrap(),
            answer: Answer::Choice(0),
            received_at: 0,
            response_ms: 1000,
            points,
            correct: points > 0,
            streak: 1,
        }
    }

    fn player(n: u32, nickname: &str) -> PlayerRecord {
        PlayerRecord {
            player: PlayerNo(n),
            user: UserId::parse(&format!("u-{nickname}")).unwrap(),
            nickname: nickname.into(),
            joined_at: 0,
            kicked: false,
            current: None,
            current_opened_at: None,
        }
    }

    /// Two phones that each answered once, acknowledged; the stores agree unless changed.
    fn run() -> (Vec<Record>, Observed) {
        let history = vec![
            Record::Quiz {
                quiz: quiz(),
                phones: 2,
            },
            answer("ana", 0, "a1", Outcome::Ack { points: 900 }),
            answer("bo", 0, "b1", Outcome::Ack { points: 0 }),
            Record::Final {
                quiz: quiz(),
                phone: "ana".into(),
                nickname: "Ana".into(),
                score: Some(900),
                top: Some(vec![("Ana".into(), 900), ("Bo".into(), 0)]),
            },
        ];
        let log = vec![row(1, 0, "a1", 900), row(2, 0, "b1", 0)];
        let standings = StandingRow::from_log(&log);
        let q = ObservedQuiz {
            log,
            players: vec![player(1, "Ana"), player(2, "Bo")],
            created_at: 0,
            redis: Ok(standings),
            router: Ok(vec![("Ana".into(), 900), ("Bo".into(), 0)]),
        };
        let league = vec![LeagueRow {
            user: UserId::parse("u-Ana").unwrap(),
            points: 900,
        }];
        let observed = Observed {
            quizzes: HashMap::from([(quiz(), q)]),
            all_time: league.clone(),
            weekly: HashMap::from([(iso_week(0), league)]),
        };
        (history, observed)
    }

    #[test]
    fn a_run_the_stores_agree_with_is_clean() {
        let (history, observed) = run();
        let v = judge(&history, &observed);
        assert!(v.clean(), "{}", v.summary());
        assert_eq!((v.sent, v.acked), (2, 2));
        assert_eq!(v.outages_ms, vec![50, 50]);
    }

    #[test]
    fn an_acknowledged_answer_missing_or_with_other_points_is_lost() {
        let (history, mut observed) = run();
        let q = observed.quizzes.get_mut(&quiz()).unwrap();
        q.log[0].points = 800;
        let v = judge(&history, &observed);
        assert_eq!(v.lost, 1, "{}", v.summary());
        q_remove(&mut observed);
        assert_eq!(judge(&history, &observed).lost, 2);
    }

    fn q_remove(observed: &mut Observed) {
        observed.quizzes.get_mut(&quiz()).unwrap().log.clear();
    }

    #[test]
    fn a_second_row_for_an_answer_is_duplicated_and_a_refused_one_logged_is_unexpected() {
        let (mut history, mut observed) = run();
        let q = observed.quizzes.get_mut(&quiz()).unwrap();
        q.log.push(row(1, 1, "a1", 0));
        q.log.push(row(2, 1, "b2", 0));
        history.push(answer(
            "bo",
            1,
            "b2",
            Outcome::Refused {
                code: "too_late".into(),
            },
        ));
        q.log.push(row(2, 2, "never-sent", 0));
        let v = judge(&history, &observed);
        assert_eq!(v.duplicated, 1, "{}", v.summary());
        assert_eq!(v.unexpected, 2, "{}", v.summary());
        assert_eq!(v.refused, 1);
    }

    #[test]
    fn an_unsettled_answer_is_stuck_and_a_phone_without_the_end_unfinished() {
        let (mut history, observed) = run();
        history.push(answer(
            "bo",
            1,
            "b9",
            Outcome::Unknown {
                error: "timeout".into(),
            },
        ));
        history.push(Record::Final {
            quiz: quiz(),
            phone: "bo".into(),
            nickname: "Bo".into(),
            score: None,
            top: None,
        });
        let v = judge(&history, &observed);
        assert_eq!((v.stuck, v.unfinished), (1, 1), "{}", v.summary());
        assert!(!v.clean());
    }

    #[test]
    fn every_board_that_differs_from_the_log_is_named() {
        let (mut history, mut observed) = run();
        let q = observed.quizzes.get_mut(&quiz()).unwrap();
        q.redis = Ok(Vec::new());
        q.router = Ok(vec![("Ana".into(), 800), ("Bo".into(), 0)]);
        observed.all_time.clear();
        history.push(Record::Final {
            quiz: quiz(),
            phone: "bo".into(),
            nickname: "Bo".into(),
            score: Some(5),
            top: Some(vec![("Bo".into(), 900)]),
        });
        let v = judge(&history, &observed);
        let text = v.boards.join("\n");
        for needle in [
            "Redis standings",
            "router's standings",
            "final score of 5",
            "final top 1",
            "all-time league",
        ] {
            assert!(text.contains(needle), "{needle} in {text}");
        }
        assert_eq!(v.boards.len(), 5, "{text}");
    }
}
