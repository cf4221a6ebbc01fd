//! Shared pieces of the end-to-end tests: a local system on port 0, phones on the client
//! SDK, a question set whose answer key the tests know, a TCP proxy that can cut
//! connections, and a reader for the node's Prometheus histograms.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quiz_client::{Event, Options, QuizConnection, QuizView, RouterClient};
use quiz_local::{LocalOptions, LocalSystem};
use quiz_protocol::client::{Role, ServerMessage};
use quiz_protocol::{Answer, QuizId, QuizSettings};
use tokio::sync::Notify;

/// Every test runs under this overall timeout.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(180);

/// Options for phones that must ride out a node going away: reconnect and retry patiently.
pub fn patient() -> Options {
    quiz_local::patient_options()
}

pub async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("test timed out")
}

/// Polls `check` until it returns `Some`, failing after `deadline`.
pub async fn eventually<T>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A question set with one question of every kind; the tests know its answer key.
pub const TEST_SET: &str = r#"{
  "id": "e2e",
  "title": "End-to-end test set",
  "questions": [
    {"id": "q-single", "level": "A1", "topic": "vocabulary", "prompt": "A young cat is a ___.",
     "kind": "single_choice", "options": ["puppy", "kitten", "calf"], "answer": 1,
     "explanation": "A kitten is a young cat."},
    {"id": "q-multi", "level": "A2", "topic": "vocabulary", "prompt": "Which can fly?",
     "kind": "multiple_select", "options": ["bird", "fish", "plane", "car"], "answers": [0, 2]},
    {"id": "q-tf", "level": "A1", "topic": "grammar", "prompt": "'He go to school' is correct.",
     "kind": "true_false", "answer": false, "multiplier": 2},
    {"id": "q-typed", "level": "A2", "topic": "grammar", "prompt": "Yesterday I ___ (go) home.",
     "kind": "typed_answer", "accept": ["went"]},
    {"id": "q-order", "level": "B1", "topic": "word_order", "prompt": "Build the sentence.",
     "kind": "word_order", "answer": ["I", "have", "never", "been", "there"]},
    {"id": "q-match", "level": "B1", "topic": "vocabulary", "prompt": "Match the opposites.",
     "kind": "matching", "pairs": [["hot", "cold"], ["up", "down"], ["big", "small"]]},
    {"id": "q-poll", "level": "A1", "topic": "opinion", "prompt": "Do you like quizzes?",
     "kind": "poll", "options": ["yes", "no"]}
  ]
}"#;

pub const TEST_QUESTIONS: u32 = 7;

/// Five single-choice questions (the right option of question q is q % 4), 20 s each.
pub const CLUSTER_SET: &str = r#"{
  "id": "e2e-cluster",
  "title": "Cluster",
  "questions": [
    {"id": "c0", "level": "A1", "topic": "t", "prompt": "Q0", "kind": "single_choice", "options": ["a","b","c","d"], "answer": 0},
    {"id": "c1", "level": "A1", "topic": "t", "prompt": "Q1", "kind": "single_choice", "options": ["a","b","c","d"], "answer": 1},
    {"id": "c2", "level": "A1", "topic": "t", "prompt": "Q2", "kind": "single_choice", "options": ["a","b","c","d"], "answer": 2},
    {"id": "c3", "level": "A1", "topic": "t", "prompt": "Q3", "kind": "single_choice", "options": ["a","b","c","d"], "answer": 3},
    {"id": "c4", "level": "A1", "topic": "t", "prompt": "Q4", "kind": "single_choice", "options": ["a","b","c","d"], "answer": 0}
  ]
}"#;

/// One five-second question (the shortest limit there is), for deadlines.
pub const FAST_SET: &str = r#"{
  "id": "e2e-fast",
  "title": "A quick one",
  "questions": [
    {"id": "q-quick", "level": "A1", "topic": "vocabulary", "prompt": "A young dog is a ___.",
     "kind": "single_choice", "options": ["puppy", "kitten"], "answer": 0, "time_limit_s": 5}
  ]
}"#;

/// A running system with the test set loaded.
pub struct System {
    pub local: LocalSystem,
}

impl System {
    pub async fn start() -> System {
        Self::start_with(LocalOptions::for_test()).await
    }

    pub async fn start_with(options: LocalOptions) -> System {
        let local = LocalSystem::start(options)
            .await
            .expect("local system starts");
        let host = local.client("host", Role::Host).await.expect("dev token");
        for json in [TEST_SET, FAST_SET, CLUSTER_SET] {
            let set = quiz_local::parse_set(json).expect("test set is valid");
            host.put_question_set(&set)
                .await
                .expect("test set imported");
        }
        System { local }
    }

    /// A quiz whose questions stay open until their deadline, however many have answered.
    pub async fn open_quiz(&self) -> QuizId {
        self.quiz(QuizSettings {
            close_when_all_answered: false,
            ..QuizSettings::default()
        })
        .await
    }

    pub async fn quiz(&self, settings: QuizSettings) -> QuizId {
        self.local
            .create_quiz("host", "e2e", settings)
            .await
            .expect("quiz created")
    }

    pub fn router_url(&self) -> String {
        self.local.router_url()
    }

    pub async fn router_as(&self, user: &str, role: Role) -> RouterClient {
        self.local.client(user, role).await.expect("dev token")
    }

    /// The node's /metrics text.
    pub async fn node_metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.local.node(0).admin_addr());
        reqwest::get(url)
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body")
    }
}

/// A phone: a connection plus everything it has received.
#[derive(Clone)]
pub struct Phone {
    pub name: String,
    pub conn: QuizConnection,
    pub log: Arc<Mutex<PhoneLog>>,
    pub changed: Arc<Notify>,
}

#[derive(Default)]
pub struct PhoneLog {
    pub view: QuizView,
    pub frames: Vec<ServerMessage>,
    pub reconnects: u32,
    pub closed: bool,
}

impl Phone {
    /// Joins `quiz` through the router as user `user` and connects through `via` (a proxy)
    /// when given.
    pub async fn join(
        sys: &System,
        quiz: &QuizId,
        user: &str,
        name: &str,
        role: Role,
        via: Option<&Proxy>,
    ) -> Phone {
        let urls = via.map(|proxy| vec![format!("ws://{}/v1/ws", proxy.addr)]);
        Phone::connect_with(sys, quiz, user, name, role, urls, Options::for_test()).await
    }

    /// Joins through the router, then connects to `urls` instead of the router's choice
    /// when given (to put a phone on a given edge), with `options`.
    pub async fn connect_with(
        sys: &System,
        quiz: &QuizId,
        user: &str,
        name: &str,
        role: Role,
        urls: Option<Vec<String>>,
        options: Options,
    ) -> Phone {
        let router = sys.router_as(user, role).await;
        let mut ticket = router
            .join(quiz, name, (role == Role::Host).then_some(Role::Host))
            .await
            .expect("join");
        if let Some(urls) = urls {
            ticket.ws_urls = urls;
        }
        let options = options.with_refresh(router.refresher(
            quiz.clone(),
            name.into(),
            (role == Role::Host).then_some(Role::Host),
        ));
        let (conn, mut events) = QuizConnection::connect(ticket, options)
            .await
            .expect("connect");
        let log = Arc::new(Mutex::new(PhoneLog::default()));
        let changed = Arc::new(Notify::new());
        let (l, c) = (log.clone(), changed.clone());
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let mut log = l.lock().unwrap();
                log.view.apply_event(&event);
                match event {
                    Event::Frame(f) => log.frames.push(*f),
                    Event::Reconnected => log.reconnects += 1,
                    Event::Closed { .. } => log.closed = true,
                    Event::Reconnecting { .. } => {}
                }
                drop(log);
                c.notify_waiters();
            }
        });
        Phone {
            name: name.into(),
            conn,
            log,
            changed,
        }
    }

    /// Waits until question `index` has arrived.
    pub async fn until_question(&self, index: u32) {
        self.until("the question", |l| {
            l.frames.iter().find_map(|f| match f {
                ServerMessage::Question(q) if q.index == index => Some(()),
                _ => None,
            })
        })
        .await
    }

    /// Waits until `check` holds on the phone's log.
    pub async fn until<T>(&self, what: &str, check: impl FnMut(&PhoneLog) -> Option<T>) -> T {
        match self.within(Duration::from_secs(60), check).await {
            Some(v) => v,
            None => panic!("{}: timed out waiting for {what}", self.name),
        }
    }

    /// Waits up to `limit` for `check` to hold on the phone's log.
    pub async fn within<T>(
        &self,
        limit: Duration,
        mut check: impl FnMut(&PhoneLog) -> Option<T>,
    ) -> Option<T> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.changed.notified();
            if let Some(v) = check(&self.log.lock().unwrap()) {
                return Some(v);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return check(&self.log.lock().unwrap());
            }
        }
    }

    pub fn view(&self) -> QuizView {
        self.log.lock().unwrap().view.clone()
    }

    /// Sequence numbers of every sequenced frame received, in order.
    pub fn seqs(&self) -> Vec<u64> {
        let log = self.log.lock().unwrap();
        log.frames
            .iter()
            .filter(|f| !matches!(f, ServerMessage::Welcome(_) | ServerMessage::Resumed(_)))
            .filter_map(|f| f.seq())
            .collect()
    }
}

/// The answer to each test-set question, right or wrong, with indices as phones see them.
/// Word order and matching are shown shuffled, so those read the frame.
pub fn answer_for(q: &quiz_protocol::client::QuestionFrame, right: bool) -> Answer {
    match q.index {
        0 => Answer::Choice(if right { 1 } else { 2 }),
        1 => Answer::Choices(if right { vec![0, 2] } else { vec![1] }),
        2 => Answer::Bool(!right),
        3 => Answer::Text(if right { "Went".into() } else { "goed".into() }),
        4 => {
            let tiles = q.tiles.as_ref().expect("tiles");
            let want = ["I", "have", "never", "been", "there"];
            let mut order: Vec<u32> = want
                .iter()
                .map(|w| tiles.iter().position(|t| t == w).expect("tile") as u32)
                .collect();
            if !right {
                order.swap(0, 1);
            }
            Answer::Order(order)
        }
        5 => {
            let right_col = q.right.as_ref().expect("right column");
            let want = ["cold", "down", "small"];
            let mut pairs: Vec<(u32, u32)> = want
                .iter()
                .enumerate()
                .map(|(l, w)| {
                    (
                        l as u32,
                        right_col.iter().position(|r| r == w).expect("item") as u32,
                    )
                })
                .collect();
            if !right {
                // Every item matched with the next one's partner: no pair right, no credit.
                let rights: Vec<u32> = pairs.iter().map(|p| p.1).collect();
                for (i, p) in pairs.iter_mut().enumerate() {
                    p.1 = rights[(i + 1) % rights.len()];
                }
            }
            Answer::Pairs(pairs)
        }
        _ => Answer::Choice(if right { 0 } else { 1 }),
    }
}

/// A raw socket to `url` with session token `token` that has joined (its welcome read).
pub async fn raw_joined(url: &str, token: &str) -> quiz_client::RawSocket {
    let mut s = quiz_client::RawSocket::connect(url, Some(token))
        .await
        .expect("socket");
    let join = quiz_protocol::client::ClientMessage::Join { last_seq: None };
    s.send(&join).await.unwrap();
    loop {
        if let ServerMessage::Welcome(_) = s.recv_message().await.unwrap() {
            return s;
        }
    }
}

/// The TCP proxy of the harness: cut and block connections to an edge.
pub struct Proxy {
    pub addr: SocketAddr,
    inner: quiz_harness::TcpProxy,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let inner = quiz_harness::TcpProxy::start(target).await.expect("proxy");
        Proxy {
            addr: inner.addr(),
            inner,
        }
    }

    pub fn cut(&self) {
        self.inner.cut();
    }

    pub fn block(&self) {
        self.inner.block();
    }

    pub fn unblock(&self) {
        self.inner.unblock();
    }
}

/// The `q` quantile (0..1) of a Prometheus histogram in `text`, as the upper bound of the
/// bucket it falls in (seconds), and the observation count.
pub fn histogram_quantile(text: &str, name: &str, q: f64) -> (f64, u64) {
    let mut buckets: Vec<(f64, u64)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(&format!("{name}_bucket{{le=\"")) {
            let (le, count) = rest.split_once("\"} ").unwrap();
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            buckets.push((le, count.trim().parse().unwrap()));
        }
    }
    let total = buckets.last().map(|b| b.1).unwrap_or(0);
    let want = (q * total as f64).ceil() as u64;
    let le = buckets
        .iter()
        .find(|(_, c)| *c >= want.max(1))
        .map(|b| b.0)
        .unwrap_or(f64::NAN);
    (le, total)
}
