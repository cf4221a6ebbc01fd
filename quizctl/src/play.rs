//! `quizctl play`: a phone in the terminal. Questions appear as they open; type an answer and
//! press Enter; acks, reveals and the leaderboard print as they come. `--bot` answers on its own.

use std::time::Duration;

use anyhow::Context;
use quiz_client::{Event, Options, QuizConnection, QuizView};
use quiz_protocol::client::{Role, ServerMessage};
use quiz_protocol::{ErrorCode, Phase, QuizId};
use rand::Rng;
use tokio::io::AsyncBufReadExt;

use crate::{Target, show};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The quiz code.
    #[arg(long)]
    quiz: String,
    /// Your nickname.
    #[arg(long)]
    name: String,
    /// Your user id (with dev tokens); default: derived from the nickname.
    #[arg(long)]
    user: Option<String>,
    /// Answer automatically (randomly, after a short think) instead of reading the keyboard.
    #[arg(long)]
    bot: bool,
    #[command(flatten)]
    target: Target,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let quiz = QuizId::parse(&args.quiz).context("that is not a quiz code")?;
    let user = args
        .user
        .clone()
        .unwrap_or_else(|| format!("player-{}", args.name.to_lowercase()));
    let router = args.target.client(&user, Role::Player).await?;
    let ticket = router.join(&quiz, &args.name, None).await?;
    let options =
        Options::default().with_refresh(router.refresher(quiz.clone(), args.name.clone(), None));
    let (conn, mut events) = QuizConnection::connect(ticket, options).await?;
    let mut view = QuizView::new();
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = !args.bot;
    let mut last_top = Vec::new();
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { break };
                view.apply_event(&event);
                if !on_event(&event, &view, &mut last_top, &conn, args.bot) {
                    break;
                }
            }
            line = stdin.next_line(), if stdin_open => match line {
                Ok(Some(line)) => answer_line(&conn, &view, &line),
                _ => stdin_open = false,
            },
        }
    }
    if let Some(reason) = &view.closed {
        println!("({reason})");
    }
    Ok(())
}

/// Prints one event; returns false when the session is over.
fn on_event(
    event: &Event,
    view: &QuizView,
    last_top: &mut Vec<quiz_protocol::client::TopEntry>,
    conn: &QuizConnection,
    bot: bool,
) -> bool {
    let msg = match event {
        Event::Frame(msg) => msg.as_ref(),
        Event::Reconnecting { attempt } => {
            println!("(connection lost; reconnecting, attempt {attempt})");
            return true;
        }
        Event::Reconnected => {
            println!("(reconnected)");
            return true;
        }
        Event::Closed { .. } => return false,
    };
    match msg {
        ServerMessage::Welcome(w) => {
            println!(
                "Joined \"{}\" as {} ({} questions, {} players so far).",
                w.quiz.title, w.you.nickname, w.quiz.question_count, w.leaderboard.players
            );
            match (&w.question, w.phase) {
                (Some(q), Phase::Open) if w.answered.is_none() => ask(q, conn, bot),
                (_, Phase::Lobby) => println!("Waiting for the host to start..."),
                (None, Phase::InProgress) => next_question(conn, Duration::ZERO),
                (_, Phase::Ended) => println!(
                    "This quiz is over. Your score: {}, rank {}",
                    w.you.score, w.you.rank
                ),
                _ => {}
            }
        }
        ServerMessage::Started(s) => {
            println!(
                "The quiz is open for {} minutes: work through it at your own pace.",
                s.ends_in_ms / 60_000
            );
            next_question(conn, Duration::ZERO);
        }
        ServerMessage::Question(q) => ask(q, conn, bot),
        ServerMessage::Closed(_) => println!("Time's up!"),
        ServerMessage::Reveal(r) => {
            println!("{}", show::reveal(r, view.question.as_ref()));
            if r.seq.is_none() {
                // Self-paced: your own reveal; on to your next question.
                next_question(conn, Duration::from_secs(3));
            }
        }
        ServerMessage::Paused(p) => {
            println!("(paused by the host, {} s left)", p.remaining_ms / 1000)
        }
        ServerMessage::Unpaused(u) => println!("(resumed, {} s left)", u.ends_in_ms / 1000),
        ServerMessage::Ack(a) => println!("{}", show::ack(a)),
        ServerMessage::Leaderboard(_) => {
            if view.top != *last_top && view.phase != Phase::Open {
                println!(
                    "Leaderboard: {}   (you: #{} with {})",
                    show::top(&view.top),
                    view.rank,
                    view.score
                );
                last_top.clone_from(&view.top);
            }
        }
        ServerMessage::Ended(e) => {
            println!("{}", show::ended(e));
            println!("You finished #{} with {} points.", view.rank, view.score);
            return false;
        }
        ServerMessage::Error(e) => println!("! {} ({})", e.message, e.code),
        ServerMessage::Resumed(_) | ServerMessage::HostOk(_) | ServerMessage::Pong(_) => {}
    }
    true
}

/// Self-paced: asks for the next question after `delay` (it arrives as a `question` event).
fn next_question(conn: &QuizConnection, delay: Duration) {
    let conn = conn.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        match conn.next().await {
            Ok(_) => {}
            Err(quiz_client::RequestError::Rejected(e)) if e.code == ErrorCode::BadCommand => {
                println!(
                    "You have answered every question; the standings are final when the quiz ends."
                );
            }
            Err(e) => println!("! {e}"),
        }
    });
}

fn ask(q: &quiz_protocol::client::QuestionFrame, conn: &QuizConnection, bot: bool) {
    println!("{}", show::question(q));
    if !bot {
        return;
    }
    let conn = conn.clone();
    let q = q.clone();
    tokio::spawn(async move {
        let (think, answer) = {
            let mut rng = rand::rng();
            let think = rng.random_range(500..(q.ends_in_ms.clamp(1000, 4000) as u64));
            (think, show::random_answer(&q, &mut rng))
        };
        tokio::time::sleep(Duration::from_millis(think)).await;
        println!("(bot answers {answer:?})");
        if let Err(e) = conn.answer(q.index, answer).await {
            println!("! {e}");
        }
    });
}

fn answer_line(conn: &QuizConnection, view: &QuizView, line: &str) {
    let Some(q) = view.question.as_ref().filter(|_| view.phase == Phase::Open) else {
        println!("(no open question)");
        return;
    };
    if view.answered.is_some() {
        println!("(you already answered this one)");
        return;
    }
    match show::parse_answer(q, line) {
        Ok(answer) => {
            let conn = conn.clone();
            let index = q.index;
            tokio::spawn(async move {
                if let Err(e) = conn.answer(index, answer).await {
                    println!("! {e}");
                }
            });
        }
        Err(problem) => println!("! {problem}"),
    }
}
