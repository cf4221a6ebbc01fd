//! A Redis Cluster of real `redis-server` processes on free ports of 127.0.0.1, for tests,
//! chaos runs and local runs; and the faults tests need: kill a node, wait for a replica to
//! take over, lose all data.
//!
//! Each server runs in its own folder under one temporary folder (its `nodes.conf` and a
//! `redis.log` of its output), with no persistence (`--save "" --appendonly no`), a short
//! `--cluster-node-timeout` so that failovers take about two seconds, and
//! `--cluster-replica-validity-factor 0` so that a replica of a busy test machine is never
//! judged too stale to take over. The cluster is formed by `redis-cli --cluster create`.
//!
//! No server outlives the process that started it, however that process ends:
//! - dropping a [`RedisCluster`] SIGKILLs every server and removes the folder;
//! - a static cluster shared by a test binary is never dropped, and a test process may itself
//!   be killed, so each cluster also has a watchdog: a small `sh` process, in a process group
//!   of its own and deaf to SIGINT/SIGTERM/SIGHUP, that blocks reading a pipe whose only
//!   writer is this process. The servers of the cluster all run in one process group (led by
//!   the first server), whose id is written down that pipe. When this process exits, in any
//!   way, the kernel closes the pipe; the watchdog reads end-of-file, SIGKILLs the servers'
//!   group, and removes the folder. (No `pre_exec`/`prctl` is needed, which `unsafe_code =
//!   "forbid"` would not allow anyway, and a reused pid can never be hit: the group id stays
//!   reserved while any server of it lives.)

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use redis::FromRedisValue;

const REDIS_SERVER: &str = "redis-server";
const REDIS_CLI: &str = "redis-cli";

/// Hash slots of a Redis Cluster.
const SLOTS: u32 = 16_384;

/// How often readiness and failover are polled.
const POLL: Duration = Duration::from_millis(50);

/// One command to one node: connecting and the reply, each.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Attempts at one server when the port picked is taken by someone else meanwhile.
const PORT_ATTEMPTS: u32 = 10;

/// The watchdog: waits for end-of-file on stdin, then kills the servers' process group (the
/// last line read) and removes the cluster's folder (`$1`).
const WATCHDOG: &str = r#"
trap '' HUP INT TERM QUIT PIPE
pg=
while read -r line; do pg=$line; done
if [ -n "$pg" ]; then
    kill -9 "-$pg" 2>/dev/null
    i=0
    while kill -0 "-$pg" 2>/dev/null && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
fi
rm -rf -- "$1"
"#;

/// How to start a [`RedisCluster`].
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Masters (at least 3: `redis-cli --cluster create` refuses fewer).
    pub masters: usize,
    /// Replicas of each master.
    pub replicas: usize,
    /// `--cluster-node-timeout`: how long a node may be unreachable before it is failed over.
    /// Short makes failover tests quick; too short on a loaded machine fails over healthy
    /// masters that merely stalled. Default 1000 ms.
    pub node_timeout_ms: u64,
    /// How long starting the cluster (servers, create, every node agreeing) may take. Default
    /// 60 s.
    pub startup_timeout: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            masters: 3,
            replicas: 1,
            node_timeout_ms: 1_000,
            startup_timeout: Duration::from_secs(60),
        }
    }
}

/// A running Redis Cluster. Dropping it SIGKILLs every server it started and removes its
/// temporary folder; if the process dies first, its watchdog does both.
pub struct RedisCluster {
    dir: PathBuf,
    options: ClusterOptions,
    nodes: Vec<Node>,
    /// The process group of the servers: the first server's pid.
    group: Option<u32>,
    watchdog: Option<Watchdog>,
    /// The slots each master served when [`RedisCluster::kill`] killed it.
    killed_masters: HashMap<u16, Vec<(u16, u16)>>,
}

struct Node {
    port: u16,
    /// `None` once killed.
    process: Option<Child>,
}

struct Watchdog {
    process: Child,
    /// The pipe whose end-of-file tells the watchdog to clean up.
    pipe: ChildStdin,
}

/// One line of `CLUSTER NODES`.
#[derive(Clone, Debug)]
struct NodeView {
    port: u16,
    flags: Vec<String>,
    slots: Vec<(u16, u16)>,
}

impl RedisCluster {
    /// `masters` masters with `replicas` replicas each on free ports of 127.0.0.1, with the
    /// default [`ClusterOptions`]. Returns once every node reports `cluster_state:ok`, sees
    /// all slots covered and knows every node, and every replica is in sync with its master.
    pub async fn start(masters: usize, replicas: usize) -> anyhow::Result<RedisCluster> {
        Self::start_with(ClusterOptions {
            masters,
            replicas,
            ..ClusterOptions::default()
        })
        .await
    }

    /// Like [`RedisCluster::start`], with every option.
    pub async fn start_with(options: ClusterOptions) -> anyhow::Result<RedisCluster> {
        if options.masters < 3 {
            bail!(
                "a Redis Cluster needs at least 3 masters, not {}",
                options.masters
            );
        }
        let deadline = Instant::now() + options.startup_timeout;
        let dir = unique_dir()?;
        let mut cluster = RedisCluster {
            dir,
            options,
            nodes: Vec::new(),
            group: None,
            watchdog: None,
            killed_masters: HashMap::new(),
        };
        // From here on, an early return drops `cluster`, which cleans up what was started.
        cluster.watchdog = Some(Watchdog::spawn(&cluster.dir)?);
        let total = cluster.options.masters * (1 + cluster.options.replicas);
        for index in 0..total {
            cluster.add_server(index, deadline).await?;
        }
        cluster.create(deadline).await?;
        cluster.wait_until_ready(deadline).await?;
        Ok(cluster)
    }

    /// `redis://127.0.0.1:P` for every node started, killed ones included (a client skips
    /// seeds it cannot reach).
    pub fn seed_urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    /// The port of every node started, killed ones included.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// The ports of nodes not killed.
    pub fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.process.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// The temporary folder holding every node's folder and log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The port of the master serving `key` now, as a live node sees the cluster.
    pub async fn master_of_key(&self, key: &str) -> anyhow::Result<u16> {
        let mut last = anyhow!("no live node");
        for port in self.live_ports() {
            let answer = async {
                let slot: u16 = query(port, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key)).await?;
                let nodes = cluster_nodes(port).await?;
                master_of_slot(&nodes, slot, None).ok_or_else(|| {
                    anyhow!("no live master serves slot {slot} in the view of {port}")
                })
            };
            match answer.await {
                Ok(master) => return Ok(master),
                Err(e) => last = e,
            }
        }
        Err(last.context(format!("the master of key {key:?}")))
    }

    /// Freezes every server (SIGSTOP): Redis is unreachable (connections hang) until
    /// [`RedisCluster::resume_all`]. Keep it shorter than the node timeout's few multiples, or
    /// the servers may fail each other over when they wake.
    pub fn pause_all(&self) -> anyhow::Result<()> {
        self.signal_all("-STOP")
    }

    /// Wakes every server after [`RedisCluster::pause_all`] (SIGCONT).
    pub fn resume_all(&self) -> anyhow::Result<()> {
        self.signal_all("-CONT")
    }

    fn signal_all(&self, signal: &str) -> anyhow::Result<()> {
        for node in &self.nodes {
            if let Some(process) = &node.process {
                let status = std::process::Command::new("kill")
                    .args([signal, &process.id().to_string()])
                    .status()
                    .with_context(|| format!("kill {signal} redis-server on port {}", node.port))?;
                if !status.success() {
                    bail!(
                        "kill {signal} failed for redis-server on port {}",
                        node.port
                    );
                }
            }
        }
        Ok(())
    }

    /// SIGKILLs the node on `port`. If it was a master, remembers its slots for
    /// [`RedisCluster::wait_for_new_master`].
    pub async fn kill(&mut self, port: u16) -> anyhow::Result<()> {
        let index = self
            .nodes
            .iter()
            .position(|n| n.port == port && n.process.is_some())
            .ok_or_else(|| anyhow!("no live node on port {port}"))?;
        // Its slots as it, or else another node, sees them now.
        let mut ports = vec![port];
        ports.extend(self.live_ports().into_iter().filter(|p| *p != port));
        for asked in ports {
            if let Ok(nodes) = cluster_nodes(asked).await
                && let Some(view) = nodes.iter().find(|n| n.port == port)
            {
                if view.is_master() && !view.slots.is_empty() {
                    self.killed_masters.insert(port, view.slots.clone());
                }
                break;
            }
        }
        if let Some(mut process) = self.nodes[index].process.take() {
            process
                .kill()
                .with_context(|| format!("killing redis-server on port {port}"))?;
            process.wait()?;
        }
        Ok(())
    }

    /// Waits until a replica of the master on `dead_master` (killed by
    /// [`RedisCluster::kill`]) has taken over its slots, in the view of every live node, and
    /// every live node reports `cluster_state:ok` again. Returns the new master's port.
    pub async fn wait_for_new_master(&self, dead_master: u16) -> anyhow::Result<u16> {
        let slots = self.killed_masters.get(&dead_master).ok_or_else(|| {
            anyhow!("port {dead_master} is not a master killed through RedisCluster::kill")
        })?;
        let slot = slots[0].0;
        // Failure detection takes about 2 node timeouts, the election about one more.
        let timeout =
            Duration::from_millis(self.options.node_timeout_ms * 30).max(Duration::from_secs(30));
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.new_master(dead_master, slot).await {
                Ok(Some(port)) => return Ok(port),
                Ok(None) => "no agreement yet".to_owned(),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() > deadline {
                bail!(
                    "no replica took over from {dead_master} within {timeout:?} (last: {last})\n{}",
                    self.log_tails()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// FLUSHALL on every live master (their replicas follow): every key is lost, as when a
    /// cluster is replaced or its data wiped.
    pub async fn flush_all(&self) -> anyhow::Result<()> {
        self.on_masters(&["FLUSHALL"]).await
    }

    /// Runs one command (`["SCRIPT", "FLUSH"]`) on every live master.
    pub async fn on_masters(&self, command: &[&str]) -> anyhow::Result<()> {
        let (name, args) = command
            .split_first()
            .ok_or_else(|| anyhow!("an empty command"))?;
        for port in self.live_ports() {
            let nodes = cluster_nodes(port).await?;
            let myself = nodes
                .iter()
                .find(|n| n.flags.iter().any(|f| f == "myself"))
                .ok_or_else(|| anyhow!("node {port} does not list itself"))?;
            if myself.is_master() {
                let mut cmd = redis::cmd(name);
                cmd.arg(args);
                query::<redis::Value>(port, &cmd)
                    .await
                    .with_context(|| format!("{command:?} on {port}"))?;
            }
        }
        Ok(())
    }

    /// Starts server `index` on a free port, retrying on another port when the one picked was
    /// taken meanwhile.
    async fn add_server(&mut self, index: usize, deadline: Instant) -> anyhow::Result<()> {
        let mut taken: BTreeSet<u16> = self.nodes.iter().map(|n| n.port).collect();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port(&taken)?;
            taken.insert(port);
            let node_dir = self.dir.join(format!("node-{index}"));
            fs::create_dir_all(&node_dir)?;
            let process = self.spawn_server(&node_dir, port)?;
            let first = self.group.is_none();
            let group = process.id();
            // Held by the cluster from now on, so that dropping it (an error below, or the
            // caller giving up on `start`) kills this server too.
            self.nodes.push(Node {
                port,
                process: Some(process),
            });
            if first {
                self.tell_watchdog(group)?;
                self.group = Some(group);
            }
            let started = match self.nodes.last_mut().and_then(|n| n.process.as_mut()) {
                Some(process) => wait_for_ping(port, process, deadline).await,
                None => Err(anyhow!("the server just started is gone")),
            };
            let Err(e) = started else { return Ok(()) };
            if let Some(mut process) = self.nodes.pop().and_then(|n| n.process) {
                let _ = process.kill();
                let _ = process.wait();
            }
            if first {
                // The group died with its leader; the next server leads a new one.
                self.group = None;
            }
            let log = tail(&node_dir.join("redis.log"));
            if !log.contains("Address already in use") {
                bail!("redis-server on port {port} did not start: {e:#}\n{log}");
            }
        }
        bail!("no free port for redis-server after {PORT_ATTEMPTS} attempts")
    }

    fn spawn_server(&self, dir: &Path, port: u16) -> anyhow::Result<Child> {
        let log = File::create(dir.join("redis.log"))?;
        let mut command = Command::new(REDIS_SERVER);
        command
            .arg("--port")
            .arg(port.to_string())
            .args(["--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir)
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", "nodes.conf"])
            .arg("--cluster-node-timeout")
            .arg(self.options.node_timeout_ms.to_string())
            .args(["--cluster-replica-validity-factor", "0"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            // Replicas sync at once instead of waiting 5 s for more replicas to batch.
            .args(["--repl-diskless-sync-delay", "0"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // 0: lead a new group (the first server); otherwise join the first server's.
            .process_group(self.group.map_or(0, |g| g as i32));
        command
            .spawn()
            .with_context(|| format!("starting {REDIS_SERVER} (is it installed?)"))
    }

    fn tell_watchdog(&mut self, group: u32) -> anyhow::Result<()> {
        let watchdog = self
            .watchdog
            .as_mut()
            .ok_or_else(|| anyhow!("no watchdog"))?;
        writeln!(watchdog.pipe, "{group}")?;
        watchdog.pipe.flush()?;
        Ok(())
    }

    /// `redis-cli --cluster create` over every server.
    async fn create(&self, deadline: Instant) -> anyhow::Result<()> {
        let mut command = tokio::process::Command::new(REDIS_CLI);
        command.args(["--cluster", "create"]);
        for node in &self.nodes {
            command.arg(format!("127.0.0.1:{}", node.port));
        }
        command
            .arg("--cluster-replicas")
            .arg(self.options.replicas.to_string())
            .arg("--cluster-yes")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let left = deadline.saturating_duration_since(Instant::now());
        let output = tokio::time::timeout(left, command.output())
            .await
            .map_err(|_| anyhow!("redis-cli --cluster create timed out"))?
            .with_context(|| format!("running {REDIS_CLI} (is it installed?)"))?;
        if !output.status.success() {
            bail!(
                "redis-cli --cluster create failed ({}):\n{}{}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                self.log_tails()
            );
        }
        Ok(())
    }

    async fn wait_until_ready(&self, deadline: Instant) -> anyhow::Result<()> {
        let total = self.nodes.len();
        loop {
            let mut why = None;
            for node in &self.nodes {
                if let Err(e) = node_ready(node.port, total).await {
                    why = Some(e);
                    break;
                }
            }
            let Some(why) = why else { return Ok(()) };
            if Instant::now() > deadline {
                bail!(
                    "the cluster did not become ready in time: {why:#}\n{}",
                    self.log_tails()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The port of the live master that serves `slot` in the view of every live node, when
    /// they all agree, it is not `dead` and all report `cluster_state:ok`.
    async fn new_master(&self, dead: u16, slot: u16) -> anyhow::Result<Option<u16>> {
        let mut agreed = None;
        for port in self.live_ports() {
            let info: String = query(port, redis::cmd("CLUSTER").arg("INFO")).await?;
            if info_field(&info, "cluster_state") != Some("ok") {
                return Ok(None);
            }
            let nodes = cluster_nodes(port).await?;
            let Some(owner) = master_of_slot(&nodes, slot, Some(dead)) else {
                return Ok(None);
            };
            if agreed.is_some_and(|a| a != owner) {
                return Ok(None);
            }
            agreed = Some(owner);
        }
        Ok(agreed)
    }

    /// The last lines of every server's log, for error messages.
    fn log_tails(&self) -> String {
        let mut out = String::new();
        for (index, node) in self.nodes.iter().enumerate() {
            let log = self.dir.join(format!("node-{index}")).join("redis.log");
            out.push_str(&format!(
                "--- redis-server :{} ---\n{}\n",
                node.port,
                tail(&log)
            ));
        }
        out
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        // Servers first: should this process die half-way, the watchdog still does the rest.
        for node in &mut self.nodes {
            if let Some(mut process) = node.process.take() {
                let _ = process.kill();
                let _ = process.wait();
            }
        }
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.process.kill();
            let _ = watchdog.process.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Watchdog {
    fn spawn(dir: &Path) -> anyhow::Result<Watchdog> {
        let mut process = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("redis-watchdog")
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Out of the test's process group, so that a Ctrl-C reaches the test but not the
            // watchdog (which then cleans up after it).
            .process_group(0)
            .spawn()
            .context("starting the watchdog shell")?;
        let pipe = process
            .stdin
            .take()
            .ok_or_else(|| anyhow!("the watchdog has no stdin"))?;
        Ok(Watchdog { process, pipe })
    }
}

impl NodeView {
    fn is_master(&self) -> bool {
        self.flags.iter().any(|f| f == "master")
    }

    fn failing(&self) -> bool {
        self.flags
            .iter()
            .any(|f| matches!(f.as_str(), "fail" | "fail?" | "handshake" | "noaddr"))
    }

    fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(a, b)| a <= slot && slot <= b)
    }
}

/// Whether one node is ready: the cluster is ok and whole in its view, and, if it is a
/// replica, it is in sync with its master.
async fn node_ready(port: u16, total: usize) -> anyhow::Result<()> {
    let info: String = query(port, redis::cmd("CLUSTER").arg("INFO")).await?;
    let expect = [
        ("cluster_state", "ok".to_owned()),
        ("cluster_slots_ok", SLOTS.to_string()),
        ("cluster_known_nodes", total.to_string()),
    ];
    for (field, value) in expect {
        if info_field(&info, field) != Some(value.as_str()) {
            bail!("node {port}: {field} is {:?}", info_field(&info, field));
        }
    }
    let nodes = cluster_nodes(port).await?;
    if let Some(bad) = nodes.iter().find(|n| n.failing()) {
        bail!("node {port} sees {} as {:?}", bad.port, bad.flags);
    }
    let replication: String = query(port, redis::cmd("INFO").arg("replication")).await?;
    if info_field(&replication, "role") == Some("slave")
        && info_field(&replication, "master_link_status") != Some("up")
    {
        bail!("replica {port} is not in sync with its master yet");
    }
    Ok(())
}

/// The live master serving `slot` in `nodes`, other than `except`.
fn master_of_slot(nodes: &[NodeView], slot: u16, except: Option<u16>) -> Option<u16> {
    nodes
        .iter()
        .find(|n| n.is_master() && !n.failing() && n.serves(slot) && Some(n.port) != except)
        .map(|n| n.port)
}

async fn cluster_nodes(port: u16) -> anyhow::Result<Vec<NodeView>> {
    let text: String = query(port, redis::cmd("CLUSTER").arg("NODES")).await?;
    parse_nodes(&text)
}

/// Parses `CLUSTER NODES`: `<id> <ip:port@cport[,hostname]> <flags> <master> <ping-sent>
/// <pong-recv> <config-epoch> <link-state> <slot>...`, where a slot is `N`, `A-B`, or a
/// `[...]` migration note (skipped).
fn parse_nodes(text: &str) -> anyhow::Result<Vec<NodeView>> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 {
            bail!("a short CLUSTER NODES line: {line:?}");
        }
        let address = fields[1].split(['@', ',']).next().unwrap_or_default();
        let port = address
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| anyhow!("no port in {line:?}"))?;
        let mut slots = Vec::new();
        for slot in fields[8..].iter().filter(|s| !s.starts_with('[')) {
            let (a, b) = slot.split_once('-').unwrap_or((slot, slot));
            slots.push((
                a.parse().with_context(|| format!("slot in {line:?}"))?,
                b.parse().with_context(|| format!("slot in {line:?}"))?,
            ));
        }
        out.push(NodeView {
            port,
            flags: fields[2].split(',').map(str::to_owned).collect(),
            slots,
        });
    }
    Ok(out)
}

/// `field:value` from an INFO-style reply.
fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (name == field).then(|| value.trim())
    })
}

/// One command to one node over a fresh connection, each step bounded.
async fn query<T: FromRedisValue>(port: u16, cmd: &redis::Cmd) -> anyhow::Result<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let mut connection =
        tokio::time::timeout(COMMAND_TIMEOUT, client.get_multiplexed_async_connection())
            .await
            .map_err(|_| anyhow!("connecting to {port} timed out"))?
            .with_context(|| format!("connecting to {port}"))?;
    tokio::time::timeout(COMMAND_TIMEOUT, cmd.query_async(&mut connection))
        .await
        .map_err(|_| anyhow!("a command to {port} timed out"))?
        .with_context(|| format!("a command to {port}"))
}

/// Polls PING until the server answers, it exits, or the deadline passes.
async fn wait_for_ping(port: u16, process: &mut Child, deadline: Instant) -> anyhow::Result<()> {
    loop {
        if let Some(status) = process.try_wait()? {
            bail!("redis-server exited with {status}");
        }
        let pong: anyhow::Result<String> = query(port, &redis::cmd("PING")).await;
        if pong.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("redis-server on {port} did not answer PING in time");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A port P of 127.0.0.1 that is free now, with its cluster bus port P + 10000 free too.
fn free_port(taken: &BTreeSet<u16>) -> anyhow::Result<u16> {
    for _ in 0..100 {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        if port > u16::MAX - 10_000 || taken.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port pair (P, P + 10000) found on 127.0.0.1")
}

/// A fresh folder under the system's temporary folder, named after this process.
fn unique_dir() -> anyhow::Result<PathBuf> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!(
        "quiz-redis-{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// The last few KiB of a log file.
fn tail(path: &Path) -> String {
    const TAIL: u64 = 4_096;
    let Ok(mut file) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(TAIL)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cluster_nodes() {
        let text = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@40004 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@40002,host master - 0 1426238316232 2 connected 5461-10922
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460 [93->-292f8b365bb7edb5e285caf0b7e6ddc7265a2f4b]
292f8b365bb7edb5e285caf0b7e6ddc7265a2f4b 127.0.0.1:30003@40003 master,fail - 1426238316232 0 3 connected 10923 10924-16383
";
        let nodes = parse_nodes(text).unwrap();
        assert_eq!(nodes.len(), 4);
        assert_eq!(nodes[0].port, 30004);
        assert!(!nodes[0].is_master());
        assert_eq!(nodes[1].port, 30002);
        assert_eq!(nodes[2].slots, vec![(0, 5460)]);
        assert!(nodes[3].failing());
        assert_eq!(nodes[3].slots, vec![(10923, 10923), (10924, 16383)]);
        assert_eq!(master_of_slot(&nodes, 100, None), Some(30001));
        assert_eq!(master_of_slot(&nodes, 100, Some(30001)), None);
        assert_eq!(
            master_of_slot(&nodes, 12_000, None),
            None,
            "a failed master"
        );
    }

    #[test]
    fn reads_info_fields() {
        let info = "# Cluster\r\ncluster_state:ok\r\ncluster_slots_ok:16384\r\n";
        assert_eq!(info_field(info, "cluster_state"), Some("ok"));
        assert_eq!(info_field(info, "cluster_slots_ok"), Some("16384"));
        assert_eq!(info_field(info, "cluster_known_nodes"), None);
    }

    #[test]
    fn free_ports_leave_room_for_the_bus_port() {
        let port = free_port(&BTreeSet::new()).unwrap();
        assert!(port <= u16::MAX - 10_000);
    }
}
