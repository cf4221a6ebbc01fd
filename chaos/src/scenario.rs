//! The fault scenarios of `quiz-chaos run`/`all`, and the rig they run on.
//!
//! Every round of a scenario gets a rig of its own: a fresh Redis Cluster (3 masters × 1
//! replica), a router and shard nodes as OS processes, a TCP proxy between each process and
//! PostgreSQL (to stall or cut the store) and one in front of each edge (the phones' mobile
//! links). A live quiz of [`QUESTIONS`] questions runs with phones spread over every edge;
//! each phone answers every question once and writes what came of it to the history. The
//! fault starts at a seeded moment of the second question and is healed before the quiz ends;
//! then [`crate::check`] compares the history with the stores.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use quiz_client::{AnswerError, RouterClient};
use quiz_harness::{PgDatabase, RedisCluster, TcpProxy, UdpProxy};
use quiz_local::processes::{Plan, ProcessCluster};
use quiz_protocol::client::Role;
use quiz_protocol::{Answer, HostCommand, Phase, QuizId, QuizSettings};
use quiz_store::{RedisConfig, StoreConfig, Stores};
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

use crate::check::{self, Verdict};
use crate::history::{HistoryWriter, Outcome, Record};
use crate::phone::{Phone, question_index};

/// Questions per quiz; the fault comes during the second.
pub const QUESTIONS: u32 = 4;

/// A named fault schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL the quiz's owner.
    OwnerKill,
    /// SIGKILL a node that does not own the quiz: its phones move to other edges.
    EdgeKill,
    /// SIGKILL the owner, then, 3 s later, another node.
    TwoKills,
    /// SIGSTOP the owner for three lease lifetimes, then SIGCONT: it wakes as a zombie.
    OwnerPause,
    /// SIGKILL a node that does not own the quiz, then SIGSTOP the owner for 4.5 s: one
    /// node is left to take over.
    PauseWhileDown,
    /// SIGKILL the router; start it again 2 s later.
    RouterKill,
    /// Cut the owner off PostgreSQL for 6 s (its phones still reach it).
    OwnerStoreCut,
    /// SIGKILL the Redis master holding the quiz's standings; a replica takes over.
    RedisMasterKill,
    /// Freeze the whole Redis Cluster for 3 s, then wipe it (every key lost).
    RedisLost,
    /// Stall every connection to PostgreSQL for 10 s.
    PostgresStall,
    /// Slow every PostgreSQL connection by 50 ms a chunk for 6 s, resetting them all every
    /// second.
    StoreFlaky,
    /// Cut every phone's connection twice, and stall them all for 2 s between.
    MobileLinks,
    /// A node joins mid-question; then the quiz's new owner is drained.
    Rebalance,
    /// Every link between nodes (QUIC) loses 10% of its datagrams and delays the rest by
    /// 50 ms, for 8 s.
    NodeLinks,
    /// The owner aborts right after a batch of answers is in the log, before any is
    /// acknowledged (crash point `answers_committed`).
    CrashAfterCommit,
    /// The owner is SIGKILLed, and every node that then claims the quiz aborts right after
    /// its claim (crash point `quiz_claimed`); all are started again.
    CrashAfterClaim,
}

impl Fault {
    pub const ALL: [Fault; 16] = [
        Fault::OwnerKill,
        Fault::EdgeKill,
        Fault::TwoKills,
        Fault::OwnerPause,
        Fault::PauseWhileDown,
        Fault::RouterKill,
        Fault::OwnerStoreCut,
        Fault::RedisMasterKill,
        Fault::RedisLost,
        Fault::PostgresStall,
        Fault::StoreFlaky,
        Fault::MobileLinks,
        Fault::Rebalance,
        Fault::NodeLinks,
        Fault::CrashAfterCommit,
        Fault::CrashAfterClaim,
    ];

    /// The smoke subset the test suite runs.
    pub const SMOKE: [Fault; 3] = [Fault::OwnerKill, Fault::RedisLost, Fault::PostgresStall];

    pub fn name(self) -> &'static str {
        match self {
            Fault::OwnerKill => "owner-kill",
            Fault::EdgeKill => "edge-kill",
            Fault::TwoKills => "two-kills",
            Fault::OwnerPause => "owner-pause",
            Fault::PauseWhileDown => "pause-while-down",
            Fault::RouterKill => "router-kill",
            Fault::OwnerStoreCut => "owner-store-cut",
            Fault::RedisMasterKill => "redis-master-kill",
            Fault::RedisLost => "redis-lost",
            Fault::PostgresStall => "postgres-stall",
            Fault::StoreFlaky => "store-flaky",
            Fault::MobileLinks => "mobile-links",
            Fault::Rebalance => "rebalance",
            Fault::NodeLinks => "node-links",
            Fault::CrashAfterCommit => "crash-after-commit",
            Fault::CrashAfterClaim => "crash-after-claim",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Fault::OwnerKill => "SIGKILL of the quiz's owner",
            Fault::EdgeKill => "SIGKILL of a node that does not own the quiz (an edge)",
            Fault::TwoKills => "SIGKILL of the owner, then of another node 3 s later",
            Fault::OwnerPause => "SIGSTOP of the owner for 4.5 s (3 leases), then SIGCONT",
            Fault::PauseWhileDown => {
                "SIGKILL of a node that is not the owner, then SIGSTOP of the owner for 4.5 s"
            }
            Fault::RouterKill => "SIGKILL of the router, started again 2 s later",
            Fault::OwnerStoreCut => "the owner cut off PostgreSQL for 6 s, phones still on it",
            Fault::RedisMasterKill => "SIGKILL of the Redis master holding the quiz's standings",
            Fault::RedisLost => "the whole Redis Cluster frozen for 3 s, then wiped empty",
            Fault::PostgresStall => "every PostgreSQL connection stalled for 10 s",
            Fault::StoreFlaky => {
                "PostgreSQL connections slowed by 50 ms a chunk and reset every second, for 6 s"
            }
            Fault::MobileLinks => "every phone's link cut, stalled 2 s, cut again",
            Fault::Rebalance => "a node joins mid-question, then the quiz's new owner drains",
            Fault::NodeLinks => "every link between nodes loses 10% and delays 50 ms, for 8 s",
            Fault::CrashAfterCommit => {
                "the owner aborts between an answer batch's log commit and its acks"
            }
            Fault::CrashAfterClaim => {
                "the owner is killed; each node that claims the quiz then aborts after its claim"
            }
        }
    }

    pub fn parse(name: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Shard nodes started for it (the last one stays down until the fault, for rebalance).
    fn nodes(self) -> usize {
        match self {
            Fault::Rebalance => 4,
            _ => 3,
        }
    }
}

/// How a scenario runs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub rounds: u32,
    pub phones: usize,
    pub seed: u64,
    /// Where histories, configurations and logs go.
    pub dir: PathBuf,
    /// How long the checker waits for derived boards to be repaired.
    pub settle: Duration,
}

/// What a scenario showed over its rounds.
pub struct ScenarioResult {
    pub fault: Fault,
    pub verdict: Verdict,
    /// Per round: fault start → the first ack of an answer sent after it, ms.
    pub first_ack_ms: Vec<u64>,
    pub histories: Vec<PathBuf>,
}

/// Runs `fault` for `options.rounds` rounds on the PostgreSQL server at `pg_admin` (a fresh
/// database per scenario).
pub async fn run(fault: Fault, options: &RunOptions) -> anyhow::Result<ScenarioResult> {
    let pg = PgDatabase::create("chaos").await?;
    let outcome = rounds(fault, options, pg.url()).await;
    if let Err(e) = pg.drop_database().await {
        eprintln!("dropping the chaos database: {e:#}");
    }
    outcome
}

async fn rounds(
    fault: Fault,
    options: &RunOptions,
    pg_url: &str,
) -> anyhow::Result<ScenarioResult> {
    let mut result = ScenarioResult {
        fault,
        verdict: Verdict::default(),
        first_ack_ms: Vec::new(),
        histories: Vec::new(),
    };
    for round in 1..=options.rounds {
        let seed = options.seed.wrapping_add(u64::from(round));
        let dir = options
            .dir
            .join(fault.name())
            .join(format!("round-{round}"));
        let _ = std::fs::remove_dir_all(&dir);
        let history = dir.join("history.jsonl");
        let (verdict, first_ack) = one_round(fault, options, pg_url, &dir, seed)
            .await
            .with_context(|| {
                format!("{} round {round}; logs in {}", fault.name(), dir.display())
            })?;
        eprintln!(
            "{} round {round}/{}: {}",
            fault.name(),
            options.rounds,
            verdict.summary()
        );
        result.verdict.add(verdict);
        result.first_ack_ms.extend(first_ack);
        result.histories.push(history);
    }
    Ok(result)
}

/// The stores, proxies and processes of one round.
struct Rig {
    redis: RedisCluster,
    /// One per node, then the router's.
    pg_proxies: Vec<TcpProxy>,
    /// One in front of each edge.
    phone_proxies: Vec<TcpProxy>,
    /// One in front of each node's QUIC endpoint, which it advertises to its peers.
    link_proxies: Vec<UdpProxy>,
    cluster: ProcessCluster,
    stores: Stores,
}

impl Rig {
    async fn start(fault: Fault, pg_url: &str, dir: &Path) -> anyhow::Result<Rig> {
        let redis = RedisCluster::start(3, 1).await?;
        let direct = StoreConfig {
            redis: Some(redis_config(redis.seed_urls())),
            ..StoreConfig::sql(pg_url)
        };
        let stores = Stores::open(&direct).await?;
        quiz_local::seed(&stores).await?;
        // The proxies bind their ports before the plan picks the processes' free ports, or a
        // proxy could take a port the plan picked and released (the process would then fail
        // to bind it); each is pointed at its process once the plan is made.
        let nodes = fault.nodes();
        let pg_addr = pg_addr(pg_url)?;
        let mut pg_proxies = Vec::new();
        for _ in 0..=nodes {
            pg_proxies.push(TcpProxy::start(pg_addr).await?);
        }
        let unset = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
        let mut phone_proxies = Vec::new();
        let mut link_proxies = Vec::new();
        for i in 0..nodes {
            phone_proxies.push(TcpProxy::start(unset).await?);
            link_proxies.push(UdpProxy::start(unset, i as u64).await?);
        }
        let mut plan = Plan::on_free_ports(&direct, nodes, &dir.join("certs"))?;
        production_timers(&mut plan);
        plan.node_env = vec![(quiz_node::failpoints::ADMIN_ENV.into(), "1".into())];
        for (i, node) in plan.nodes.iter_mut().enumerate() {
            node.store.database_url = via(pg_url, pg_proxies[i].addr());
            phone_proxies[i].retarget(node.listen);
            let cluster = node.cluster.as_mut().expect("a cluster plan");
            link_proxies[i].retarget(cluster.listen);
            cluster.advertise_addr = Some(link_proxies[i].addr().to_string());
        }
        plan.router.store.database_url = via(pg_url, pg_proxies[nodes].addr());
        let exe = std::env::current_exe()?;
        let mut cluster = ProcessCluster::launch(&exe, dir, plan).await?;
        if fault == Fault::Rebalance {
            // The spare node joins during the fault.
            let spare = cluster.nodes.len() - 1;
            cluster.nodes[spare].terminate(Duration::from_secs(5)).await;
            cluster.wait_for_ring(spare).await?;
        }
        Ok(Rig {
            redis,
            pg_proxies,
            phone_proxies,
            link_proxies,
            cluster,
            stores,
        })
    }

    /// The phones' edge URLs (through their proxies), starting with edge `first`.
    fn phone_urls(&self, first: usize) -> Vec<String> {
        let n = self.phone_proxies.len();
        (0..n)
            .map(|k| format!("ws://{}/v1/ws", self.phone_proxies[(first + k) % n].addr()))
            .collect()
    }

    /// Arms crash point `name` of node `i` with `actions`.
    async fn arm(&self, i: usize, name: &str, actions: &str) -> anyhow::Result<()> {
        let url = format!("{}/admin/failpoints/{name}", self.cluster.admin_url(i));
        reqwest::Client::new()
            .post(url)
            .bearer_auth(quiz_local::DEV_ADMIN_TOKEN)
            .body(actions.to_owned())
            .send()
            .await?
            .error_for_status()
            .with_context(|| format!("arming {name} on node {}", i + 1))?;
        Ok(())
    }

    async fn stop(self) {
        self.cluster.shutdown().await;
        drop(self.redis);
    }
}

/// The production defaults for leases and the ring, except a league audit every 5 s so a
/// check after a Redis loss need not wait 5 minutes for it.
fn production_timers(plan: &mut Plan) {
    for node in &mut plan.nodes {
        if let Some(c) = node.cluster.as_mut() {
            let defaults = quiz_node::config::ClusterConfig::default();
            c.lease_ttl_ms = defaults.lease_ttl_ms;
            c.lease_renew_ms = defaults.lease_renew_ms;
            c.ring_poll_ms = defaults.ring_poll_ms;
            c.handoff_wait_ms = defaults.handoff_wait_ms;
            c.peer_timeout_ms = defaults.peer_timeout_ms;
            c.peer_idle_timeout_ms = defaults.peer_idle_timeout_ms;
        }
    }
    if let Some(c) = plan.router.cluster.as_mut() {
        let defaults = quiz_router::ClusterConfig::default();
        c.poll_interval_ms = defaults.poll_interval_ms;
        c.push_interval_ms = defaults.push_interval_ms;
        c.push_timeout_ms = defaults.push_timeout_ms;
    }
    plan.router.league_audit_interval_s = 5;
}

/// The leaderboard store's settings for a Redis Cluster with these seeds (the defaults).
pub(crate) fn redis_config(nodes: Vec<String>) -> RedisConfig {
    RedisConfig {
        nodes,
        connect_timeout_ms: 1_000,
        response_timeout_ms: 1_000,
        retries: 3,
        weekly_league_weeks_kept: 8,
    }
}

/// Host and port of a PostgreSQL URL.
fn pg_addr(url: &str) -> anyhow::Result<std::net::SocketAddr> {
    let parsed = reqwest::Url::parse(url).context("the PostgreSQL URL")?;
    let host = parsed.host_str().unwrap_or("127.0.0.1");
    let port = parsed.port().unwrap_or(5432);
    std::net::ToSocketAddrs::to_socket_addrs(&(host, port))?
        .next()
        .with_context(|| format!("resolving {host}:{port}"))
}

/// `url` with its host and port replaced by `addr`.
fn via(url: &str, addr: std::net::SocketAddr) -> String {
    let mut parsed = reqwest::Url::parse(url).expect("parsed before");
    let _ = parsed.set_ip_host(addr.ip());
    let _ = parsed.set_port(Some(addr.port()));
    parsed.to_string()
}

/// Puts `urls` (the edges' proxies) in place of the ticket's edges.
fn replace(urls: Vec<String>) -> impl FnOnce(&mut Vec<String>) {
    move |ticket| *ticket = urls
}

/// One round: a rig, the quiz with its phones, the fault, the check.
async fn one_round(
    fault: Fault,
    options: &RunOptions,
    pg_url: &str,
    dir: &Path,
    seed: u64,
) -> anyhow::Result<(Verdict, Option<u64>)> {
    let rig = Rig::start(fault, pg_url, dir).await?;
    play(fault, options, pg_url, dir, seed, rig).await
}

async fn play(
    fault: Fault,
    options: &RunOptions,
    pg_url: &str,
    dir: &Path,
    seed: u64,
    mut rig: Rig,
) -> anyhow::Result<(Verdict, Option<u64>)> {
    let result = async {
        let history = HistoryWriter::create(&dir.join("history.jsonl"))?;
        let router_url = rig.cluster.router_url();
        history.record(&Record::Run {
            scenario: fault.name().into(),
            seed,
            database_url: pg_url.into(),
            redis_nodes: rig.redis.seed_urls(),
            router_url: router_url.clone(),
        });
        let host = RouterClient::dev(&router_url, "chaos-host", Role::Host).await?;
        host.put_question_set(&quiz_local::parse_set(&question_set())?)
            .await?;
        let created = host
            .create_quiz(&quiz_client::CreateQuiz {
                question_set: SET_ID.into(),
                settings: Some(QuizSettings {
                    close_when_all_answered: true,
                    ..QuizSettings::default()
                }),
                ..Default::default()
            })
            .await?;
        let quiz = created.quiz_id;
        history.record(&Record::Quiz {
            quiz: quiz.clone(),
            phones: options.phones as u32,
        });
        let owner = rig.cluster.owner_of(&quiz).await?;
        let edges = rig.phone_proxies.len();
        let mut host_phone = Phone::join(
            &host,
            &quiz,
            "",
            Role::Host,
            replace(rig.phone_urls((owner + 1) % edges)),
        )
        .await?;
        let mut phones = Vec::new();
        for i in 0..options.phones {
            let user = format!("{}-{seed}-{i}", fault.name());
            let urls = rig.phone_urls(i % edges);
            phones.push(Phone::pupil(&router_url, &user, &quiz, i, replace(urls)).await?);
        }
        retry_host(&host_phone, HostCommand::Start).await?;

        // Every phone answers every question; the settled answers are counted per question.
        let (settled_tx, settled) = watch::channel(vec![0usize; QUESTIONS as usize]);
        let settled_tx = Arc::new(settled_tx);
        let fault_at = Arc::new(std::sync::Mutex::new(None::<Instant>));
        let first_ack = Arc::new(std::sync::Mutex::new(None::<Instant>));
        let mut players = Vec::new();
        for (i, phone) in phones.into_iter().enumerate() {
            let (history, settled_tx) = (history.clone(), settled_tx.clone());
            let (quiz, fault_at, first_ack) = (quiz.clone(), fault_at.clone(), first_ack.clone());
            let think = rand::rngs::StdRng::seed_from_u64(seed ^ (i as u64) << 8);
            players.push(tokio::spawn(answer_all(
                phone, quiz, history, settled_tx, think, fault_at, first_ack,
            )));
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let delay = Duration::from_millis(rng.random_range(0..800));
        let mut injector = Injector {
            fault,
            quiz: quiz.clone(),
            owner,
            rng,
            history: history.clone(),
        };
        // The host drives the quiz while the fault runs beside it.
        let mut hv = host_phone.view.clone();
        let driving = drive(&mut host_phone, settled, options.phones);
        let faulting = async {
            let _ = tokio::time::timeout(
                Duration::from_secs(60),
                hv.wait_for(|v| question_index(v).is_some_and(|q| q >= 1)),
            )
            .await;
            tokio::time::sleep(delay).await;
            *fault_at.lock().unwrap() = Some(Instant::now());
            injector.inject(&mut rig).await
        };
        let (driven, injected) = tokio::join!(driving, faulting);
        injected.context("the fault")?;
        driven.context("driving the quiz")?;
        for p in players {
            p.await?;
        }
        history.flush()?;
        let first_ack = match (*fault_at.lock().unwrap(), *first_ack.lock().unwrap()) {
            (Some(f), Some(a)) => Some(a.saturating_duration_since(f).as_millis() as u64),
            _ => None,
        };
        host_phone.conn.close().await;
        let records = crate::history::read(&dir.join("history.jsonl"))?;
        let verdict = check::check(&records, &rig.stores, &host, options.settle).await?;
        Ok::<_, anyhow::Error>((verdict, first_ack))
    }
    .await;
    rig.stop().await;
    result
}

/// A phone's part: each question once, as soon as it sees it open (after a short think); then
/// what it was shown at the end.
#[allow(clippy::too_many_arguments)]
async fn answer_all(
    mut phone: Phone,
    quiz: QuizId,
    history: HistoryWriter,
    settled: Arc<watch::Sender<Vec<usize>>>,
    mut rng: rand::rngs::StdRng,
    fault_at: Arc<std::sync::Mutex<Option<Instant>>>,
    first_ack: Arc<std::sync::Mutex<Option<Instant>>>,
) {
    for q in 0..QUESTIONS {
        let open = phone
            .until(Duration::from_secs(120), |v| {
                question_index(v).is_some_and(|i| i >= q) || v.ended.is_some()
            })
            .await;
        let current = question_index(&phone.view.borrow());
        if open && current == Some(q) {
            tokio::time::sleep(Duration::from_millis(rng.random_range(100..2500))).await;
            let answer_id = quiz_client::new_answer_id();
            let sent_ms = history.now_ms();
            let sent_at = Instant::now();
            let result = phone
                .conn
                .answer_with_id(q, answer_id.clone(), Answer::Choice(rng.random_range(0..4)))
                .await;
            let outcome = match result {
                Ok(ack) => {
                    let after_fault = fault_at.lock().unwrap().is_some_and(|f| sent_at >= f);
                    if after_fault {
                        let mut first = first_ack.lock().unwrap();
                        if first.is_none() {
                            *first = Some(Instant::now());
                        }
                    }
                    Outcome::Ack { points: ack.points }
                }
                Err(AnswerError::Rejected(e)) => Outcome::Refused {
                    code: e.code.to_string(),
                },
                Err(e) => Outcome::Unknown {
                    error: e.to_string(),
                },
            };
            history.record(&Record::Answer {
                quiz: quiz.clone(),
                phone: phone.name.clone(),
                question: q,
                answer_id,
                sent_ms,
                settled_ms: history.now_ms(),
                outcome,
            });
        }
        // Missed (the question closed before this phone saw it): nothing was sent.
        settled.send_modify(|s| s[q as usize] += 1);
    }
    phone
        .until(Duration::from_secs(120), |v| v.ended.is_some())
        .await;
    let view = phone.view.borrow().clone();
    history.record(&Record::Final {
        quiz,
        phone: phone.name.clone(),
        nickname: view.nickname.clone(),
        score: view.ended.as_ref().map(|_| view.score),
        top: view
            .ended
            .as_ref()
            .map(|e| e.top.iter().map(|t| (t.0.clone(), t.1)).collect()),
    });
    phone.conn.close().await;
}

/// The host: once every phone has settled its answer to a question, the next one; the end
/// after the last.
async fn drive(
    host: &mut Phone,
    mut settled: watch::Receiver<Vec<usize>>,
    phones: usize,
) -> anyhow::Result<()> {
    for q in 0..QUESTIONS {
        let _ = tokio::time::timeout(
            Duration::from_secs(120),
            settled.wait_for(|s| s[q as usize] >= phones),
        )
        .await;
        if q + 1 == QUESTIONS {
            break;
        }
        // `next` is not idempotent: it goes on only after one that was not applied, or one
        // that only revealed. After an error whose outcome is unknown, the host's view says.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if Instant::now() > deadline {
                bail!("the quiz did not move past question {q}");
            }
            match host.conn.host(HostCommand::Next, None).await {
                Ok(ok) if ok.phase == Phase::Reveal => {}
                Ok(_) => break,
                Err(_) => {
                    let moved = host
                        .until(Duration::from_millis(500), |v| {
                            question_index(v).is_some_and(|i| i > q)
                        })
                        .await;
                    if moved {
                        break;
                    }
                }
            }
        }
    }
    retry_host(host, HostCommand::End).await?;
    if !host
        .until(Duration::from_secs(60), |v| v.ended.is_some())
        .await
    {
        bail!("the host never saw the quiz end");
    }
    Ok(())
}

/// Sends a host command until it is accepted (the host's connection may be moving).
async fn retry_host(host: &Phone, command: HostCommand) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match host.conn.host(command, None).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => bail!("{command:?}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Starts and heals one fault.
struct Injector {
    fault: Fault,
    quiz: QuizId,
    owner: usize,
    rng: rand::rngs::StdRng,
    history: HistoryWriter,
}

impl Injector {
    fn mark(&self, what: &str, healed: bool) {
        self.history.record(&Record::Fault {
            at_ms: self.history.now_ms(),
            what: what.into(),
            healed,
        });
    }

    async fn inject(&mut self, rig: &mut Rig) -> anyhow::Result<()> {
        let name = self.fault.name();
        self.mark(name, false);
        let n = rig.cluster.nodes.len();
        let owner = self.owner;
        match self.fault {
            Fault::OwnerKill => {
                rig.cluster.nodes[owner].kill().await;
                rig.cluster.wait_for_ring(n - 1).await?;
                rig.cluster.nodes[owner].start().await?;
                rig.cluster.wait_for_ring(n).await?;
            }
            Fault::EdgeKill => {
                let edge = (owner + 1 + self.rng.random_range(0..n - 1)) % n;
                rig.cluster.nodes[edge].kill().await;
                rig.cluster.wait_for_ring(n - 1).await?;
                rig.cluster.nodes[edge].start().await?;
                rig.cluster.wait_for_ring(n).await?;
            }
            Fault::TwoKills => {
                let other = (owner + 1 + self.rng.random_range(0..n - 1)) % n;
                rig.cluster.nodes[owner].kill().await;
                tokio::time::sleep(Duration::from_secs(3)).await;
                rig.cluster.nodes[other].kill().await;
                rig.cluster.wait_for_ring(n - 2).await?;
                rig.cluster.nodes[owner].start().await?;
                rig.cluster.nodes[other].start().await?;
                rig.cluster.wait_for_ring(n).await?;
            }
            Fault::OwnerPause => {
                rig.cluster.nodes[owner].pause();
                tokio::time::sleep(Duration::from_millis(4_500)).await;
                rig.cluster.nodes[owner].resume();
                rig.cluster.wait_for_ring(n).await?;
            }
            Fault::PauseWhileDown => {
                let edge = (owner + 1 + self.rng.random_range(0..n - 1)) % n;
                rig.cluster.nodes[edge].kill().await;
                rig.cluster.wait_for_ring(n - 1).await?;
                rig.cluster.nodes[owner].pause();
                tokio::time::sleep(Duration::from_millis(4_500)).await;
                rig.cluster.nodes[owner].resume();
                rig.cluster.nodes[edge].start().await?;
                rig.cluster.wait_for_ring(n).await?;
            }
            Fault::RouterKill => {
                rig.cluster.router.kill().await;
                tokio::time::sleep(Duration::from_secs(2)).await;
                rig.cluster.router.start().await?;
                rig.cluster.wait_for_ring(n).await?;
            }
            Fault::OwnerStoreCut => {
                rig.pg_proxies[owner].block();
                tokio::time::sleep(Duration::from_secs(6)).await;
                rig.pg_proxies[owner].unblock();
                rig.cluster.wait_for_ring(n).await?;
            }
            Fault::RedisMasterKill => {
                // The quiz's keys are all tagged `{quiz:ID}`: one slot, one master.
                let key = format!("{{quiz:{}}}", self.quiz.as_str());
                let master = rig.redis.master_of_key(&key).await?;
                rig.redis.kill(master).await?;
                rig.redis.wait_for_new_master(master).await?;
            }
            Fault::RedisLost => {
                rig.redis.pause_all()?;
                tokio::time::sleep(Duration::from_secs(3)).await;
                rig.redis.resume_all()?;
                rig.redis.flush_all().await?;
            }
            Fault::PostgresStall => {
                for p in &rig.pg_proxies {
                    p.stall();
                }
                tokio::time::sleep(Duration::from_secs(10)).await;
                for p in &rig.pg_proxies {
                    p.unstall();
                }
                rig.cluster.wait_for_ring(n).await?;
            }
            Fault::StoreFlaky => {
                for p in &rig.pg_proxies {
                    p.set_delay(Duration::from_millis(50));
                }
                for _ in 0..6 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    for p in &rig.pg_proxies {
                        p.cut();
                    }
                }
                for p in &rig.pg_proxies {
                    p.set_delay(Duration::ZERO);
                }
                rig.cluster.wait_for_ring(n).await?;
            }
            Fault::MobileLinks => {
                for p in &rig.phone_proxies {
                    p.cut();
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                for p in &rig.phone_proxies {
                    p.stall();
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
                for p in &rig.phone_proxies {
                    p.unstall();
                    p.cut();
                }
            }
            Fault::Rebalance => {
                let spare = n - 1;
                rig.cluster.nodes[spare].start().await?;
                rig.cluster.wait_for_ring(n).await?;
                tokio::time::sleep(Duration::from_secs(1)).await;
                let now = rig.cluster.owner_of(&self.quiz).await?;
                let url = format!("{}/admin/drain", rig.cluster.admin_url(now));
                reqwest::Client::new()
                    .post(url)
                    .bearer_auth(quiz_local::DEV_ADMIN_TOKEN)
                    .send()
                    .await?
                    .error_for_status()?;
                rig.cluster.wait_for_ring(n - 1).await?;
            }
            Fault::CrashAfterCommit => {
                rig.arm(owner, "answers_committed", "return").await?;
                if !rig.cluster.nodes[owner]
                    .exited_within(Duration::from_secs(60))
                    .await
                {
                    bail!("the owner did not reach its crash point");
                }
                rig.cluster.wait_for_ring(n - 1).await?;
                rig.cluster.nodes[owner].start().await?;
                rig.cluster.wait_for_ring(n).await?;
            }
            Fault::CrashAfterClaim => {
                let others: Vec<usize> = (0..n).filter(|i| *i != owner).collect();
                for &i in &others {
                    rig.arm(i, "quiz_claimed", "return").await?;
                }
                rig.cluster.nodes[owner].kill().await;
                // The next owner claims and aborts, then the one after it.
                for &i in &others {
                    if !rig.cluster.nodes[i]
                        .exited_within(Duration::from_secs(30))
                        .await
                    {
                        bail!("node {} did not reach its crash point", i + 1);
                    }
                }
                for i in 0..n {
                    rig.cluster.nodes[i].start().await?;
                }
                rig.cluster.wait_for_ring(n).await?;
            }
            Fault::NodeLinks => {
                for p in &rig.link_proxies {
                    p.set_loss(0.10);
                    p.set_delay(Duration::from_millis(50));
                }
                tokio::time::sleep(Duration::from_secs(8)).await;
                for p in &rig.link_proxies {
                    p.set_loss(0.0);
                    p.set_delay(Duration::ZERO);
                }
                rig.cluster.wait_for_ring(n).await?;
            }
        }
        self.mark(name, true);
        Ok(())
    }
}

const SET_ID: &str = "chaos-drill";

/// Four single-choice questions, each open long enough for any fault.
fn question_set() -> String {
    let questions: Vec<serde_json::Value> = (0..QUESTIONS)
        .map(|i| {
            serde_json::json!({
                "id": format!("q{i}"), "level": "A2", "topic": "vocabulary",
                "prompt": format!("Which one is a colour? ({})", i + 1), "kind": "single_choice",
                "options": ["red", "run", "rain", "road"], "answer": 0, "time_limit_s": 60
            })
        })
        .collect();
    serde_json::json!({ "id": SET_ID, "title": "Chaos drill", "questions": questions }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_has_a_unique_name_that_parses_back() {
        let mut names: Vec<&str> = Fault::ALL.iter().map(|f| f.name()).collect();
        for f in Fault::ALL {
            assert_eq!(Fault::parse(f.name()), Some(f));
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Fault::ALL.len());
        assert_eq!(Fault::parse("nope"), None);
    }

    #[test]
    fn the_drill_set_imports() {
        let set = quiz_local::parse_set(&question_set()).unwrap();
        assert_eq!(set.questions.len(), QUESTIONS as usize);
    }

    #[test]
    fn a_store_url_is_pointed_at_its_proxy() {
        let url = "postgres://postgres@127.0.0.1:5432/quiz_chaos_1";
        assert_eq!(
            via(url, "127.0.0.1:6000".parse().unwrap()),
            "postgres://postgres@127.0.0.1:6000/quiz_chaos_1"
        );
        assert_eq!(pg_addr(url).unwrap(), "127.0.0.1:5432".parse().unwrap());
    }
}
