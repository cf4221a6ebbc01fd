//! What the bench and its load processes say to each other: JSON lines, the bench writing to
//! a load process's stdin and reading its stdout.
//!
//! The first line to a load process is its [`Plan`]; then [`Command`]s. A load process
//! answers with [`Report`]s, the last of which is [`Report::Done`] with everything it
//! measured. A load process whose stdin closes (the bench died) stops its phones and exits,
//! and every load process stops by itself at its plan's deadline.
//!
//! Times cross process boundaries as wall-clock microseconds since the Unix epoch: every
//! process runs on the same machine, so they share the clock.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::histogram::LatencyHistogram;

/// What one load process does.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    /// Its number among the load processes, for logs.
    pub worker: usize,
    /// The source address of its sockets and HTTP requests (127.0.0.2, 127.0.0.3, …).
    pub source: IpAddr,
    /// Bound on the whole process's life, seconds: it exits then whatever happens.
    pub deadline_s: u64,
    pub mode: Mode,
}

/// Phones of a quiz, or bare sockets to a broadcast floor server.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Mode {
    Phones(PhonePlan),
    Floor(FloorPlan),
}

/// Phones that join quizzes through the router and play them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PhonePlan {
    pub router: String,
    /// The quizzes; phone `i` joins `quizzes[i % len]`.
    pub quizzes: Vec<String>,
    /// The phones' numbers, `first..first + count`: user `bench-u{n}`, nickname `p{n}`.
    pub first: u64,
    pub count: u64,
    /// Joins (router call, WebSocket, welcome) in flight at once.
    pub join_concurrency: usize,
    /// Phone `n` connects first to the edge at `n % ws_urls.len()` of its ticket, so phones
    /// spread over every edge; the others are its fallbacks.
    pub spread_edges: bool,
    pub answers: AnswerPlan,
    /// Whether a phone whose socket drops reconnects and resumes (`join` with `last_seq`).
    pub reconnect: bool,
}

/// When phones answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum AnswerPlan {
    /// Never: idle phones.
    Never,
    /// Each open question, after a delay uniform in `[0, window_ms]` from its arrival.
    Spread { window_ms: u64, correct_pct: u8 },
    /// Only on [`Command::Answer`].
    OnCommand { correct_pct: u8 },
}

/// Bare WebSockets to floor servers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FloorPlan {
    pub urls: Vec<String>,
    pub count: u64,
    pub connect_concurrency: usize,
}

/// The bench to a load process, after the plan.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Command {
    /// Join (or connect) every phone now.
    Join,
    /// Answer the open question `question`: each phone after a delay uniform in
    /// `[0, within_ms]`.
    Answer { question: u32, within_ms: u64 },
    /// Report what was measured, close every socket, exit.
    Stop,
}

/// A load process to the bench.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Report {
    /// Ready for [`Command::Join`]: identity tokens fetched.
    Ready {
        phones: u64,
    },
    /// Phones joined (welcomed) so far and joins that failed for good.
    Progress {
        joined: u64,
        failed: u64,
    },
    Done(Box<Measured>),
    /// The process could not go on.
    Failed {
        error: String,
    },
}

/// Everything a load process measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Measured {
    pub phones: u64,
    pub joined: u64,
    /// When each phone got its first welcome, µs.
    pub welcomed_at: Vec<i64>,
    /// Join start → welcome, per phone that joined.
    pub join_latency: LatencyHistogram,
    /// Joins that failed for good, by error code (or `connect`, `http`).
    pub join_failures: BTreeMap<String, u64>,
    /// First failure messages seen, a few.
    pub failure_samples: Vec<String>,
    pub answers: Vec<AnswerRecord>,
    /// Leaderboard versions received: version → arrivals.
    pub versions: BTreeMap<u64, Arrivals>,
    /// Sequenced frames received (questions, reveals…): seq → arrivals.
    pub sequenced: BTreeMap<u64, SequencedArrivals>,
    /// Error frames by code; and how many of them refused an answer without naming it.
    pub errors: BTreeMap<String, u64>,
    pub errors_without_answer_id: u64,
    /// Sockets the server closed, by close code (`eof` when the socket just ended).
    pub closes: BTreeMap<String, u64>,
    pub reconnects: u64,
    pub bytes_received: u64,
    pub frames_received: u64,
}

/// When a frame reached the first and the last phone that got it, and how many got it.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Arrivals {
    pub first_us: i64,
    pub last_us: i64,
    pub count: u64,
    /// Frames of this version that carried the top N.
    pub with_top: u64,
}

impl Arrivals {
    pub fn add(&mut self, at_us: i64) {
        if self.count == 0 {
            self.first_us = at_us;
            self.last_us = at_us;
        } else {
            self.first_us = self.first_us.min(at_us);
            self.last_us = self.last_us.max(at_us);
        }
        self.count += 1;
    }

    pub fn merge(&mut self, other: &Arrivals) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *other;
            return;
        }
        self.first_us = self.first_us.min(other.first_us);
        self.last_us = self.last_us.max(other.last_us);
        self.count += other.count;
        self.with_top += other.with_top;
    }
}

/// A sequenced frame's arrivals, and what it was.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SequencedArrivals {
    pub kind: String,
    pub arrivals: Arrivals,
}

/// One answer a phone sent, and what became of it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AnswerRecord {
    /// The phone's number: its answer ids are `b{phone}-{question}`.
    pub phone: u64,
    pub question: u32,
    /// When it was first sent, µs.
    pub sent_us: i64,
    /// When its ack arrived, µs; `None` if it never did.
    pub acked_us: Option<i64>,
    pub points: u32,
    pub total: u32,
    /// Times it was sent again (a retryable refusal, a reconnect).
    pub resent: u32,
    /// The refusal that ended it, if it was refused for good.
    pub refused: Option<String>,
    /// The first leaderboard frame after the ack that showed this phone its new total: its
    /// version and arrival, µs.
    pub board: Option<(u64, i64)>,
}

/// Wall-clock microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}
