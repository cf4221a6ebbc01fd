//! A cluster of separate OS processes on this machine: a router and shard nodes, each a child
//! process of one executable that has `router --config FILE` and `node --config FILE`
//! subcommands (`quizctl`, the chaos tool). `quizctl up` runs one; the multi-process tests and
//! the chaos runs kill, pause and restart its nodes.
//!
//! The processes share the store named in their configurations; the QUIC certificates come
//! from a CA kept in a directory ([`ensure_certs`], also what `quizctl ca` writes).

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use quiz_cluster::ClusterCa;
use quiz_protocol::QuizId;
use quiz_protocol::cluster::RingMember;
use quiz_store::StoreConfig;
use serde::Deserialize;
use tokio::process::{Child, Command};

use crate::{DEV_SESSION_SECRET, dev_router_config, quick_cluster_config};

/// Runs a shard node from its configuration file until SIGTERM or Ctrl-C: what an
/// executable's `node --config FILE` subcommand does.
pub async fn serve_node(config: &Path, log_json: bool) -> anyhow::Result<()> {
    let mut config = quiz_node::Config::load(config)?;
    config.log_json |= log_json;
    quiz_node::telemetry::init(config.log_json);
    quiz_node::serve(config, quiz_node::telemetry::shutdown_signal())
        .await
        .context("quiz node")
}

/// Runs a router from its configuration file until SIGTERM or Ctrl-C: what an executable's
/// `router --config FILE` subcommand does.
pub async fn serve_router(config: &Path, log_json: bool) -> anyhow::Result<()> {
    let config = quiz_router::Config::load(config)?;
    quiz_node::telemetry::init(log_json);
    quiz_router::serve(config, quiz_node::telemetry::shutdown_signal())
        .await
        .context("quiz router")
}

/// The CA's files in a certificate directory.
const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca.key";

/// Makes sure `dir` holds a cluster CA (`ca.pem`, `ca.key`) and a certificate and key for
/// each of `names` (`NAME.pem`, `NAME.key`), creating what is missing. Existing files are
/// kept, so every process of a cluster keeps trusting the same CA across runs.
pub fn ensure_certs(dir: &Path, cluster_name: &str, names: &[&str]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (cert_path, key_path) = (dir.join(CA_CERT), dir.join(CA_KEY));
    let ca = if cert_path.exists() && key_path.exists() {
        let cert = std::fs::read_to_string(&cert_path)?;
        let key = std::fs::read_to_string(&key_path)?;
        ClusterCa::from_pem(&cert, &key)
            .with_context(|| format!("loading the CA in {}", dir.display()))?
    } else {
        let ca = ClusterCa::generate(cluster_name).context("generating a cluster CA")?;
        write_private(&key_path, &ca.key_pem())?;
        std::fs::write(&cert_path, ca.cert_pem())?;
        ca
    };
    for name in names {
        let (cert, key) = cert_files(dir, name);
        if cert.exists() && key.exists() {
            continue;
        }
        let issued = ca
            .issue(name)
            .with_context(|| format!("a certificate for {name}"))?;
        write_private(&key, &issued.key_pem)?;
        std::fs::write(&cert, issued.cert_pem)?;
    }
    Ok(())
}

/// The certificate and key files of `name` in a certificate directory.
pub fn cert_files(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    )
}

/// Writes a private key readable by its owner only.
fn write_private(path: &Path, pem: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(pem.as_bytes())?;
    Ok(())
}

/// The configurations of a router and its nodes.
#[derive(Clone, Debug)]
pub struct Plan {
    pub router: quiz_router::Config,
    pub nodes: Vec<quiz_node::Config>,
    /// Environment variables every node process is started with.
    pub node_env: Vec<(String, String)>,
    /// A lower soft limit on open files for every node process (`ulimit -n`), to see a node
    /// run out of descriptors; `None` inherits this process's.
    pub node_open_files: Option<u64>,
}

impl Plan {
    /// A router and `nodes` nodes on free ports of 127.0.0.1 sharing `store`, with dev
    /// secrets, quick leases (test settings), and certificates issued into `certs`.
    pub fn on_free_ports(store: &StoreConfig, nodes: usize, certs: &Path) -> anyhow::Result<Plan> {
        let mut names = vec!["router".to_string()];
        names.extend((1..=nodes).map(|i| format!("node-{i}")));
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        ensure_certs(certs, "local", &refs)?;
        let ca = certs.join(CA_CERT);
        let mut ports = FreePorts::default();
        let router = quiz_router::Config {
            cluster: Some(quiz_router::ClusterConfig {
                name: "local".into(),
                router_id: "router".into(),
                ca_cert: ca.clone(),
                cert: cert_files(certs, "router").0,
                key: cert_files(certs, "router").1,
                bind_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                poll_interval_ms: 100,
                push_interval_ms: 1000,
                push_timeout_ms: 1000,
            }),
            shutdown_grace_ms: 2000,
            ..dev_router_config(store.clone(), ports.tcp()?, ports.tcp()?)
        };
        let mut configs = Vec::new();
        for i in 1..=nodes {
            let node_id = format!("node-{i}");
            let (cert, key) = cert_files(certs, &node_id);
            let mut config = quiz_node::Config {
                node_id,
                listen: ports.tcp()?,
                admin_listen: ports.tcp()?,
                store: store.clone(),
                session_secret: DEV_SESSION_SECRET.into(),
                admin_token: crate::DEV_ADMIN_TOKEN.into(),
                allow_dev_secrets: true,
                cluster: Some(quick_cluster_config(
                    ports.udp()?,
                    ca.display().to_string(),
                    cert.display().to_string(),
                    key.display().to_string(),
                )),
                ..Default::default()
            };
            config.limits.shutdown_grace_s = 2;
            configs.push(config);
        }
        Ok(Plan {
            router,
            nodes: configs,
            node_env: Vec::new(),
            node_open_files: None,
        })
    }
}

/// Distinct free ports on 127.0.0.1. Each stays bound until the picker is dropped, so two
/// picks of one plan can never be the same port (a port freed at once may be handed out
/// again by the next pick); bind them soon after.
#[derive(Default)]
struct FreePorts {
    tcp: Vec<TcpListener>,
    udp: Vec<UdpSocket>,
}

impl FreePorts {
    fn tcp(&mut self) -> anyhow::Result<SocketAddr> {
        let socket = TcpListener::bind("127.0.0.1:0")?;
        let addr = socket.local_addr()?;
        self.tcp.push(socket);
        Ok(addr)
    }

    fn udp(&mut self) -> anyhow::Result<SocketAddr> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        let addr = socket.local_addr()?;
        self.udp.push(socket);
        Ok(addr)
    }
}

/// One child process: its configuration file, its log, and how to tell it is up.
pub struct Process {
    pub name: String,
    exe: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    health: String,
    child: Option<Child>,
    /// Set in its environment at every start.
    pub env: Vec<(String, String)>,
    /// Its soft limit on open files, when lower than this process's.
    pub open_files: Option<u64>,
    /// How many times it was started.
    pub starts: u32,
}

impl Process {
    fn new(exe: &Path, subcommand: &str, config: &Path, name: &str, admin: SocketAddr) -> Self {
        Self {
            name: name.into(),
            exe: exe.to_owned(),
            args: vec![
                subcommand.into(),
                "--config".into(),
                config.display().to_string(),
            ],
            log: config.with_extension("log"),
            health: format!("http://{admin}/healthz"),
            child: None,
            env: Vec::new(),
            open_files: None,
            starts: 0,
        }
    }

    /// Starts it (stdout and stderr appended to its log) and waits until `/healthz` answers.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut command = match self.open_files {
            // The shell lowers its own limit and becomes the executable (`exec`), so the
            // child's PID is still the process's.
            Some(limit) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                    .arg(&self.exe);
                sh
            }
            None => Command::new(&self.exe),
        };
        let child = command
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} ({})", self.name, self.exe.display()))?;
        self.child = Some(child);
        self.starts += 1;
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                anyhow::bail!(
                    "{} exited ({status}) while starting; its log:\n{}",
                    self.name,
                    self.log_tail(40)
                );
            }
            if client
                .get(&self.health)
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!(
                    "{} did not come up in 30 s; its log:\n{}",
                    self.name,
                    self.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL: no goodbye, no flush.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// SIGTERM, then waits for it to exit (SIGKILL after `grace`). Returns whether it exited
    /// by itself.
    pub async fn terminate(&mut self, grace: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        if let Some(pid) = child.id() {
            signal(pid, "-TERM");
        }
        match tokio::time::timeout(grace, child.wait()).await {
            Ok(_) => true,
            Err(_) => {
                let _ = child.kill().await;
                false
            }
        }
    }

    /// SIGSTOP: frozen (a stalled machine, a long GC pause) until [`resume`](Self::resume).
    pub fn pause(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, "-STOP");
        }
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, "-CONT");
        }
    }

    /// Waits until it exits by itself, up to `limit`; `false` if still running.
    pub async fn exited_within(&mut self, limit: Duration) -> bool {
        let Some(child) = self.child.as_mut() else {
            return true;
        };
        if tokio::time::timeout(limit, child.wait()).await.is_ok() {
            self.child = None;
            return true;
        }
        false
    }

    /// Everything it logged, across its starts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        // Backtrace frames (a process started with RUST_BACKTRACE) would push the error they
        // follow out of the tail.
        let all: Vec<&str> = log.lines().filter(|l| !is_backtrace_frame(l)).collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// Sends `signal` (such as `-STOP`) to `pid` with kill(1): this workspace forbids unsafe code.
fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status();
    if !status.is_ok_and(|s| s.success()) {
        tracing::warn!(pid, signal, "kill failed");
    }
}

/// What the router's `GET /v1/cluster/ring` answers.
#[derive(Clone, Debug, Deserialize)]
pub struct RingView {
    pub epoch: u64,
    pub members: Vec<RingMember>,
}

/// A router and nodes as child processes. Dropping it kills them all.
pub struct ProcessCluster {
    pub plan: Plan,
    pub router: Process,
    pub nodes: Vec<Process>,
    http: reqwest::Client,
}

impl ProcessCluster {
    /// Writes each configuration into `dir` (`router.toml`, `node-1.toml`, …, next to their
    /// `.log`), starts the nodes and then the router from `exe`, and waits until the ring has
    /// every node.
    pub async fn launch(exe: &Path, dir: &Path, plan: Plan) -> anyhow::Result<ProcessCluster> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut nodes = Vec::new();
        for config in &plan.nodes {
            let path = dir.join(format!("{}.toml", config.node_id));
            std::fs::write(&path, toml::to_string(config)?)
                .with_context(|| format!("writing {}", path.display()))?;
            let mut node = Process::new(exe, "node", &path, &config.node_id, config.admin_listen);
            node.env = plan.node_env.clone();
            node.open_files = plan.node_open_files;
            nodes.push(node);
        }
        let path = dir.join("router.toml");
        std::fs::write(&path, toml::to_string(&plan.router)?)
            .with_context(|| format!("writing {}", path.display()))?;
        let router = Process::new(exe, "router", &path, "router", plan.router.admin_addr);
        let mut cluster = ProcessCluster {
            plan,
            router,
            nodes,
            http: reqwest::Client::new(),
        };
        for node in &mut cluster.nodes {
            node.start().await?;
        }
        cluster.router.start().await?;
        let members = cluster.nodes.len();
        cluster.wait_for_ring(members).await?;
        Ok(cluster)
    }

    /// The router's base URL.
    pub fn router_url(&self) -> String {
        format!("http://{}", self.plan.router.http_addr)
    }

    /// Node `i`'s WebSocket URL (`i` counts from 0).
    pub fn ws_url(&self, i: usize) -> String {
        format!("ws://{}/v1/ws", self.plan.nodes[i].listen)
    }

    /// Node `i`'s admin base URL (`/metrics`, `/healthz`).
    pub fn admin_url(&self, i: usize) -> String {
        format!("http://{}", self.plan.nodes[i].admin_listen)
    }

    /// The index of the node called `node_id`.
    pub fn index_of(&self, node_id: &str) -> Option<usize> {
        self.plan.nodes.iter().position(|c| c.node_id == node_id)
    }

    /// The ring the router uses now.
    pub async fn ring(&self) -> anyhow::Result<RingView> {
        let url = format!("http://{}/v1/cluster/ring", self.plan.router.admin_addr);
        Ok(self
            .http
            .get(&url)
            .timeout(Duration::from_secs(2))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// Waits (up to 30 s) until the router's ring has exactly `members` members; returns it.
    pub async fn wait_for_ring(&self, members: usize) -> anyhow::Result<RingView> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(ring) = self.ring().await
                && ring.members.len() == members
            {
                return Ok(ring);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the ring never reached {members} members"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The index of the node that owns `quiz` under the router's current ring (the router's
    /// `GET /v1/cluster/ring?quiz=`).
    pub async fn owner_of(&self, quiz: &QuizId) -> anyhow::Result<usize> {
        #[derive(Deserialize)]
        struct Placed {
            quiz: Option<QuizNodes>,
        }
        #[derive(Deserialize)]
        struct QuizNodes {
            nodes: Vec<String>,
        }
        let url = format!(
            "http://{}/v1/cluster/ring?quiz={quiz}",
            self.plan.router.admin_addr
        );
        let placed: Placed = self
            .http
            .get(&url)
            .timeout(Duration::from_secs(2))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let owner = placed
            .quiz
            .and_then(|q| q.nodes.into_iter().next())
            .context("an empty ring")?;
        self.index_of(&owner)
            .with_context(|| format!("{owner} is not one of this cluster's nodes"))
    }

    /// A metric's value on node `i` (the sum over its label sets when `name` has no labels);
    /// 0 when absent.
    pub async fn node_metric(&self, i: usize, name: &str) -> anyhow::Result<f64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.admin_url(i)))
            .timeout(Duration::from_secs(2))
            .send()
            .await?
            .text()
            .await?;
        Ok(metric_value(&text, name))
    }

    /// Stops everything: SIGTERM to the router and every node, SIGKILL after a grace period.
    pub async fn shutdown(mut self) {
        self.router.terminate(Duration::from_secs(5)).await;
        for node in &mut self.nodes {
            node.terminate(Duration::from_secs(5)).await;
        }
    }
}

/// The value of a metric in Prometheus text: a line `name value`, or the sum of every line
/// `name{...} value` when `name` has no braces.
pub fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let matches =
                key == name || (!name.contains('{') && key.starts_with(&format!("{name}{{")));
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// A line of a printed backtrace: `  12: some::function` or `             at src/x.rs:3:9`.
fn is_backtrace_frame(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with("at ")
        || t.split_once(": ")
            .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_values_sum_over_labels() {
        let text = "# HELP x\nquiz_a{kind=\"x\"} 2\nquiz_a{kind=\"y\"} 3\nquiz_ab 7\nquiz_b 1.5\n";
        assert_eq!(metric_value(text, "quiz_a"), 5.0);
        assert_eq!(metric_value(text, "quiz_a{kind=\"y\"}"), 3.0);
        assert_eq!(metric_value(text, "quiz_b"), 1.5);
        assert_eq!(metric_value(text, "quiz_c"), 0.0);
    }

    /// A process that failed with RUST_BACKTRACE set printed its error, then 40-odd frames:
    /// the tail of its log used to show only frames (a chaos smoke in CI said nothing more
    /// than "router exited").
    #[test]
    fn backtrace_frames_are_left_out_of_a_log_tail() {
        assert!(is_backtrace_frame(
            "  13: tokio::runtime::Runtime::block_on"
        ));
        assert!(is_backtrace_frame("             at ./src/main.rs:5:47"));
        assert!(!is_backtrace_frame(
            "Error: binding 127.0.0.1:8080: address in use"
        ));
        assert!(!is_backtrace_frame(
            "2026-12-04T22:55:22Z  INFO quiz_router: up"
        ));
    }

    #[test]
    fn certificates_are_made_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("quiz-certs-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        ensure_certs(&dir, "t", &["node-1"]).unwrap();
        let first = std::fs::read_to_string(dir.join("node-1.pem")).unwrap();
        ensure_certs(&dir, "t", &["node-1", "node-2"]).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("node-1.pem")).unwrap(),
            first
        );
        let ca = std::fs::read_to_string(dir.join(CA_CERT)).unwrap();
        let (cert, key) = cert_files(&dir, "node-2");
        let tls = quiz_cluster::ClusterTls::from_pem(
            &ca,
            &std::fs::read_to_string(cert).unwrap(),
            &std::fs::read_to_string(key).unwrap(),
        )
        .unwrap();
        assert!(tls.is_valid_for(&quiz_protocol::NodeId("node-2".into())));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
