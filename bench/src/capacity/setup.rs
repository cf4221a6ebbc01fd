//! What every capacity run does around its scenario: the question set and the quizzes, a
//! host connection per quiz, and the load processes with their plans.

use std::time::Duration;

use anyhow::Context;
use quiz_client::{CreateQuiz, Event, EventStream, QuizConnection, RouterClient};
use quiz_protocol::client::{Role, ServerMessage};
use quiz_protocol::{AutoAdvance, QuizId, QuizSettings};
use tokio::task::JoinHandle;

use super::cluster::Cluster;
use super::fleet::{self, Fleet};
use super::wire::{AnswerPlan, Mode, PhonePlan, Plan};

/// The user that hosts every capacity quiz.
pub(super) const HOST_USER: &str = "bench-host";
/// The generated question set's id.
const SET_ID: &str = "bench-capacity";
/// Joins in flight per load process.
pub(super) const JOIN_CONCURRENCY: usize = 64;

/// The quizzes of a run and their hosts.
pub(super) struct Quizzes {
    pub ids: Vec<QuizId>,
    pub hosts: Vec<Host>,
}

/// A host connection and the task that follows its quiz's events.
pub(super) struct Host {
    pub conn: QuizConnection,
    /// Resolves with the `ended` frame's arrival, or `None` if the session closed first.
    pub ended: JoinHandle<Option<std::time::Instant>>,
}

/// How a run's quizzes play.
pub(super) struct QuizShape {
    pub quizzes: usize,
    pub questions: u32,
    pub time_limit_s: u32,
    pub max_players: u32,
    /// Auto-advance: `None` leaves every step to the host.
    pub auto_advance: Option<AutoAdvance>,
    pub close_when_all_answered: bool,
}

/// Stores the question set, creates the quizzes and connects a host to each.
pub(super) async fn quizzes(cluster: &Cluster, shape: &QuizShape) -> anyhow::Result<Quizzes> {
    let token = RouterClient::dev_token(&cluster.router_url, HOST_USER, Role::Host).await?;
    let router = RouterClient::new(&cluster.router_url, token);
    let set = crate::content::single_choice_set(SET_ID, shape.questions, shape.time_limit_s);
    router
        .put_question_set(&set)
        .await
        .context("storing the question set")?;
    let settings = QuizSettings {
        auto_advance: shape.auto_advance,
        close_when_all_answered: shape.close_when_all_answered,
        max_players: shape.max_players,
        ..QuizSettings::default()
    };
    let mut ids = Vec::new();
    let mut hosts = Vec::new();
    for _ in 0..shape.quizzes {
        let created = router
            .create_quiz(&CreateQuiz {
                question_set: SET_ID.into(),
                settings: Some(settings.clone()),
                ..CreateQuiz::default()
            })
            .await
            .context("creating a quiz")?;
        let ticket = router.join(&created.quiz_id, "", Some(Role::Host)).await?;
        let options = quiz_local::patient_options();
        let (conn, events) = QuizConnection::connect(ticket, options)
            .await
            .with_context(|| format!("the host connecting to {}", created.quiz_id))?;
        hosts.push(Host {
            conn,
            ended: tokio::spawn(until_ended(events)),
        });
        ids.push(created.quiz_id);
    }
    Ok(Quizzes { ids, hosts })
}

/// Follows a host's events until `ended`.
async fn until_ended(mut events: EventStream) -> Option<std::time::Instant> {
    while let Some(event) = events.recv().await {
        if let Event::Frame(frame) = event
            && matches!(frame.as_ref(), ServerMessage::Ended(_))
        {
            return Some(std::time::Instant::now());
        }
    }
    None
}

impl Quizzes {
    /// Closes every host connection.
    pub(super) async fn close(self) {
        for h in self.hosts {
            h.conn.close().await;
            h.ended.abort();
        }
    }
}

/// What the phones of a run do.
pub(super) struct Load {
    pub phones: u64,
    pub answers: AnswerPlan,
    pub reconnect: bool,
    /// Load processes, at least (more when the phones need them).
    pub processes: usize,
    /// Each load process stops by itself after this.
    pub deadline: Duration,
}

/// Starts the load processes for `load` on `quizzes` (phones spread over every edge).
pub(super) async fn fleet(
    cluster: &Cluster,
    quizzes: &[QuizId],
    load: &Load,
) -> anyhow::Result<Fleet> {
    let plans = fleet::split(load.phones, load.processes)
        .into_iter()
        .enumerate()
        .map(|(worker, (first, count, source))| Plan {
            worker,
            source,
            deadline_s: load.deadline.as_secs(),
            mode: Mode::Phones(PhonePlan {
                router: cluster.router_url.clone(),
                quizzes: quizzes.iter().map(|q| q.to_string()).collect(),
                first,
                count,
                join_concurrency: JOIN_CONCURRENCY,
                spread_edges: true,
                answers: load.answers.clone(),
                reconnect: load.reconnect,
            }),
        })
        .collect();
    Fleet::spawn(&super::cluster::this_exe()?, plans).await
}

/// Checks the answer log of `quiz` against the acks the phones got: how many rows it holds,
/// and whether every acknowledged answer is in it exactly once with the points acked.
pub(super) async fn check_log(
    cluster: &Cluster,
    quiz: &QuizId,
    answers: &[super::wire::AnswerRecord],
) -> anyhow::Result<Option<(u64, bool)>> {
    let Some(store) = cluster.store() else {
        return Ok(None);
    };
    let stores = quiz_store::Stores::open(&store).await?;
    let log = stores.answers.answers(quiz).await?;
    let mut by_id = std::collections::HashMap::new();
    for row in &log {
        *by_id
            .entry(row.answer_id.as_str().to_owned())
            .or_insert(0u32) += 1;
    }
    let points: std::collections::HashMap<&str, u32> = log
        .iter()
        .map(|r| (r.answer_id.as_str(), r.points))
        .collect();
    let all_once = answers.iter().filter(|a| a.acked_us.is_some()).all(|a| {
        let id = format!("b{}-{}", a.phone, a.question);
        by_id.get(&id) == Some(&1) && points.get(id.as_str()) == Some(&a.points)
    });
    Ok(Some((log.len() as u64, all_once)))
}
