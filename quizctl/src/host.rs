//! `quizctl host`: create (or take) a quiz and drive it. Press Enter to do the obvious next
//! step (start, reveal, next question); or type a command: `start`, `next`, `reveal`,
//! `pause`, `resume`, `end`, `kick NAME`, `quit`. `--auto` paces the quiz by itself.

use std::time::Duration;

use anyhow::Context;
use quiz_client::{CreateQuiz, Event, Options, QuizConnection, QuizView};
use quiz_local::DEMO_HOST;
use quiz_protocol::client::{Role, ServerMessage};
use quiz_protocol::{HostCommand, Mode, Phase, QuizId, QuizSettings};
use tokio::io::AsyncBufReadExt;

use crate::{Target, show};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Host this existing quiz; without it, a new quiz is created from `--set`.
    #[arg(long)]
    quiz: Option<String>,
    /// The question set to create a quiz from.
    #[arg(long, default_value = "demo")]
    set: String,
    /// Use only the first N questions of the set.
    #[arg(long)]
    count: Option<u32>,
    /// Self-paced instead of live.
    #[arg(long)]
    self_paced: bool,
    /// Pace the quiz automatically: start once `--players` have joined, reveal two seconds
    /// after each question closes, and move on five seconds after each reveal.
    #[arg(long)]
    auto: bool,
    /// With `--auto`: how many players to wait for before starting.
    #[arg(long, default_value_t = 1)]
    players: u32,
    /// Your user id (the quiz's creator; with dev tokens).
    #[arg(long, default_value = DEMO_HOST)]
    user: String,
    #[command(flatten)]
    target: Target,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let router = args.target.client(&args.user, Role::Host).await?;
    let quiz = match &args.quiz {
        Some(code) => QuizId::parse(code).context("that is not a quiz code")?,
        None => {
            let settings = QuizSettings {
                mode: if args.self_paced {
                    Mode::SelfPaced
                } else {
                    Mode::Live
                },
                ..QuizSettings::default()
            };
            let created = router
                .create_quiz(&CreateQuiz {
                    question_set: args.set.clone(),
                    count: args.count,
                    settings: Some(settings),
                    ..Default::default()
                })
                .await?;
            println!(
                "Created quiz {} \"{}\" ({} questions).",
                created.quiz_id, created.title, created.question_count
            );
            created.quiz_id
        }
    };
    let ticket = router.join(&quiz, "", Some(Role::Host)).await?;
    let options = Options::default().with_refresh(router.refresher(
        quiz.clone(),
        String::new(),
        Some(Role::Host),
    ));
    let (conn, mut events) = QuizConnection::connect(ticket, options).await?;
    println!("Hosting {quiz}. Players join with: quizctl play --quiz {quiz} --name <nickname>");
    if !args.auto {
        println!(
            "Press Enter to start, reveal and go on; or type start/next/reveal/pause/resume/end/kick NAME/quit."
        );
    }
    let mut view = QuizView::new();
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = !args.auto;
    let mut players_seen = 0;
    let mut pending_step: Option<(tokio::time::Instant, HostCommand)> = None;
    loop {
        let step_at = pending_step.map(|(at, _)| at);
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { break };
                view.apply_event(&event);
                if !print_event(&event, &view, &mut players_seen) {
                    break;
                }
                if args.auto {
                    pending_step = auto_step(&view, args.players).or(pending_step);
                }
            }
            line = stdin.next_line(), if stdin_open => match line {
                Ok(Some(line)) => {
                    if line.trim() == "quit" {
                        break;
                    }
                    command(&conn, &view, &line);
                }
                _ => stdin_open = false,
            },
            _ = sleep_until(step_at), if step_at.is_some() => {
                if let Some((_, cmd)) = pending_step.take() {
                    send(&conn, cmd, None);
                }
            }
        }
    }
    // The end reaches the store just behind the `ended` frame; ask again briefly if early.
    let tries = if view.ended.is_some() { 20 } else { 0 };
    for _ in 0..tries {
        match router.standings(&quiz, Some(10)).await {
            Ok(standings) => {
                println!("Final standings:");
                for s in standings.standings {
                    println!("  {}. {} {}", s.rank, s.nickname, s.score);
                }
                break;
            }
            Err(e) if e.code() == Some(quiz_protocol::ErrorCode::Conflict) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(_) => break,
        }
    }
    conn.close().await;
    Ok(())
}

/// The next automatic step for the phase the quiz is in, and when to take it.
fn auto_step(view: &QuizView, players: u32) -> Option<(tokio::time::Instant, HostCommand)> {
    let in_ = |s| tokio::time::Instant::now() + Duration::from_secs(s);
    match view.phase {
        Phase::Lobby if view.players >= players => Some((in_(1), HostCommand::Start)),
        Phase::Closed => Some((in_(2), HostCommand::Reveal)),
        Phase::Reveal => Some((in_(5), HostCommand::Next)),
        _ => None,
    }
}

fn print_event(event: &Event, view: &QuizView, players_seen: &mut u32) -> bool {
    let msg = match event {
        Event::Frame(msg) => msg.as_ref(),
        Event::Closed { reason, .. } => {
            println!("({reason})");
            return false;
        }
        _ => return true,
    };
    match msg {
        ServerMessage::Welcome(w) => {
            println!("Phase: {:?}, {} players.", w.phase, w.leaderboard.players)
        }
        ServerMessage::Started(s) => println!(
            "Started: players work through the questions for the next {} minutes (`end` ends it early).",
            s.ends_in_ms / 60_000
        ),
        ServerMessage::Question(q) => println!("{}", show::question(q)),
        ServerMessage::Closed(_) => println!("Time's up. (Enter reveals the answer.)"),
        ServerMessage::Reveal(r) => {
            println!("{}", show::reveal(r, view.question.as_ref()));
            println!(
                "Leaderboard: {}   (Enter: next question)",
                show::top(&view.top)
            );
        }
        ServerMessage::Leaderboard(_) => {
            if view.phase == Phase::Lobby && view.players != *players_seen {
                println!("{} players in the lobby.", view.players);
            }
            if let (Phase::Open, Some(n)) = (view.phase, view.answers_in) {
                println!("  {n}/{} answered", view.players);
            }
            *players_seen = view.players;
        }
        ServerMessage::Paused(p) => println!("Paused ({} s left).", p.remaining_ms / 1000),
        ServerMessage::Unpaused(_) => println!("Resumed."),
        ServerMessage::Ended(e) => {
            println!("{}", show::ended(e));
            return false;
        }
        ServerMessage::Error(e) => println!("! {} ({})", e.message, e.code),
        ServerMessage::HostOk(_)
        | ServerMessage::Ack(_)
        | ServerMessage::Resumed(_)
        | ServerMessage::Pong(_) => {}
    }
    true
}

fn command(conn: &QuizConnection, view: &QuizView, line: &str) {
    let mut words = line.split_whitespace();
    let cmd = match words.next() {
        None => match view.phase {
            Phase::Lobby => HostCommand::Start,
            Phase::Open | Phase::Paused | Phase::Closed => HostCommand::Reveal,
            Phase::Reveal => HostCommand::Next,
            Phase::InProgress | Phase::Ended => {
                println!("(nothing to do; type `end` to end the quiz)");
                return;
            }
        },
        Some("start") => HostCommand::Start,
        Some("next") => HostCommand::Next,
        Some("reveal") => HostCommand::Reveal,
        Some("pause") => HostCommand::Pause,
        Some("resume") => HostCommand::Resume,
        Some("end") => HostCommand::End,
        Some("kick") => {
            let name: Vec<&str> = words.collect();
            send(conn, HostCommand::Kick, Some(name.join(" ")));
            return;
        }
        Some(other) => {
            println!("! unknown command `{other}`");
            return;
        }
    };
    send(conn, cmd, None);
}

fn send(conn: &QuizConnection, cmd: HostCommand, player: Option<String>) {
    let conn = conn.clone();
    tokio::spawn(async move {
        if let Err(e) = conn.host(cmd, player.as_deref()).await {
            println!("! {e}");
        }
    });
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
