//! The cluster a capacity run drives: started here as child processes of this executable
//! (the hidden `node` and `router` subcommands, on free ports of 127.0.0.1, on a fresh store
//! of the chosen backend), or one started elsewhere (`--router URL`).
//!
//! A cluster started here runs the production defaults for everything that decides whether
//! it holds (leases, queues, limits), and only what a bench needs changed: no join rate
//! limits on the router (every phone comes from 127.0.0.x), more connections per node when a
//! run asks for them. Its processes are stopped by PID when the run ends, also on failure.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use quiz_local::processes::{Plan, ProcessCluster};
use quiz_protocol::QuizId;
use tempfile::TempDir;

use crate::backend::{Backend, RunningBackend};

/// Where the cluster of a run comes from.
#[derive(clap::Args, Clone, Debug)]
pub struct ClusterArgs {
    /// Drive a cluster that is already running at this router URL instead of starting one.
    /// Node memory and CPU are then reported only for the admin URLs given with --admin.
    #[arg(long)]
    pub router: Option<String>,
    /// The running cluster's router admin URL (for the ring: which node owns a quiz).
    #[arg(long, requires = "router")]
    pub router_admin: Option<String>,
    /// The running cluster's node admin URLs, comma-separated (metrics, memory, CPU).
    #[arg(long, value_delimiter = ',', requires = "router")]
    pub admin: Vec<String>,
    /// Copy the logs of the router and nodes started here into this folder, per run.
    #[arg(long)]
    pub logs: Option<PathBuf>,
    /// The stores of a cluster started here.
    #[arg(long, default_value = "embedded", conflicts_with = "router")]
    pub backend: Backend,
    /// Node processes of a cluster started here.
    #[arg(long, default_value_t = 3, conflicts_with = "router")]
    pub nodes: usize,
    /// Each node's `engine.leaderboard_interval_ms` (how often a quiz pushes its board),
    /// instead of the default; for trying a trade of board latency against CPU.
    #[arg(long, conflicts_with = "router")]
    pub leaderboard_interval_ms: Option<u32>,
    /// Each node's `limits.drift_interval_ms` (how often rank-only board changes go out),
    /// instead of the default.
    #[arg(long, conflicts_with = "router")]
    pub drift_interval_ms: Option<u64>,
}

impl ClusterArgs {
    /// The node settings this run sets away from the defaults, for a report's cluster line
    /// (empty when none).
    pub fn overrides(&self) -> String {
        let mut set = Vec::new();
        if let Some(ms) = self.leaderboard_interval_ms {
            set.push(format!("`engine.leaderboard_interval_ms` {ms}"));
        }
        if let Some(ms) = self.drift_interval_ms {
            set.push(format!("`limits.drift_interval_ms` {ms}"));
        }
        if set.is_empty() {
            String::new()
        } else {
            format!(" except {}", set.join(", "))
        }
    }
}

/// What one node process looks like from outside.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct NodeSample {
    pub rss_bytes: u64,
    pub cpu_s: f64,
    pub connections: u64,
}

/// The cluster of a run.
pub struct Cluster {
    processes: Option<ProcessCluster>,
    backend: Option<RunningBackend>,
    pub router_url: String,
    router_admin: Option<String>,
    pub node_admins: Vec<String>,
    pub backend_name: String,
    http: reqwest::Client,
    _dir: Option<TempDir>,
}

impl Cluster {
    /// Starts (or attaches to) the cluster `args` names. `max_connections` raises each
    /// node's connection limit when set.
    pub async fn start(args: &ClusterArgs, max_connections: Option<usize>) -> anyhow::Result<Self> {
        let http = reqwest::Client::new();
        if let Some(router) = &args.router {
            return Ok(Cluster {
                processes: None,
                backend: None,
                router_url: router.trim_end_matches('/').to_owned(),
                router_admin: args.router_admin.clone(),
                node_admins: args.admin.clone(),
                backend_name: "external".into(),
                http,
                _dir: None,
            });
        }
        anyhow::ensure!((1..=16).contains(&args.nodes), "--nodes must be 1-16");
        let dir = TempDir::new()?;
        let backend = args.backend.start().await?;
        let store = backend.store().unwrap_or_else(|| {
            quiz_store::StoreConfig::sql(format!(
                "sqlite://{}",
                dir.path().join("quiz.db").display()
            ))
        });
        let started = async {
            let mut plan = Plan::on_free_ports(&store, args.nodes, &dir.path().join("certs"))?;
            production_settings(&mut plan, max_connections);
            for node in &mut plan.nodes {
                if let Some(ms) = args.leaderboard_interval_ms {
                    node.engine.leaderboard_interval_ms = ms;
                }
                if let Some(ms) = args.drift_interval_ms {
                    node.limits.drift_interval_ms = ms;
                }
            }
            let exe = std::env::current_exe()?;
            ProcessCluster::launch(&exe, &dir.path().join("cluster"), plan).await
        }
        .await;
        let processes = match started {
            Ok(p) => p,
            Err(e) => {
                let _ = backend.stop().await;
                return Err(e);
            }
        };
        let node_admins = (0..args.nodes).map(|i| processes.admin_url(i)).collect();
        Ok(Cluster {
            router_url: processes.router_url(),
            router_admin: Some(format!("http://{}", processes.plan.router.admin_addr)),
            node_admins,
            backend_name: args.backend.to_string(),
            processes: Some(processes),
            backend: Some(backend),
            http,
            _dir: Some(dir),
        })
    }

    /// The node processes, when this run started them.
    /// Starts the cluster `args` names, runs `f` on it and stops it, also when `f` failed
    /// (whose error then comes first).
    pub async fn run<T>(
        args: &ClusterArgs,
        max_connections: Option<usize>,
        f: impl AsyncFnOnce(&mut Cluster) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let mut cluster = Cluster::start(args, max_connections).await?;
        let result = f(&mut cluster).await;
        // Every bench keeps its logs when asked, also when the run failed.
        if let Some(dir) = &args.logs
            && let Err(e) = cluster.keep_logs(&dir.join(format!("run-{}", super::wire::now_us())))
        {
            eprintln!("could not keep the cluster's logs: {e:#}");
        }
        let stopped = cluster.stop().await;
        let value = result?;
        stopped?;
        Ok(value)
    }

    pub fn processes(&mut self) -> Option<&mut ProcessCluster> {
        self.processes.as_mut()
    }

    /// The store of a cluster started here (to check the answer log).
    pub fn store(&self) -> Option<quiz_store::StoreConfig> {
        self.processes.as_ref().map(|p| p.plan.router.store.clone())
    }

    /// Where the cluster's files are (configs, logs), when started here.
    pub fn dir(&self) -> Option<PathBuf> {
        self._dir.as_ref().map(|d| d.path().to_owned())
    }

    /// Each node's memory, CPU time and open connections now.
    pub async fn sample(&self) -> Vec<NodeSample> {
        let mut out = Vec::new();
        for (i, admin) in self.node_admins.iter().enumerate() {
            let metrics = self.metrics(admin).await.unwrap_or_default();
            let pid = self
                .processes
                .as_ref()
                .and_then(|p| p.nodes.get(i))
                .and_then(|n| n.pid());
            let (rss, cpu) = match pid {
                Some(pid) => (
                    super::rss_of(pid).unwrap_or(0),
                    super::cpu_seconds_of(pid).unwrap_or(0.0),
                ),
                None => (
                    metric(&metrics, "quiz_node_process_resident_bytes") as u64,
                    metric(&metrics, "quiz_node_process_cpu_seconds_total"),
                ),
            };
            out.push(NodeSample {
                rss_bytes: rss,
                cpu_s: cpu,
                connections: metric(&metrics, "quiz_node_connections") as u64,
            });
        }
        out
    }

    /// A node's `/metrics` text.
    pub async fn metrics(&self, admin: &str) -> anyhow::Result<String> {
        Ok(self
            .http
            .get(format!("{admin}/metrics"))
            .timeout(Duration::from_secs(5))
            .send()
            .await?
            .text()
            .await?)
    }

    /// The sum of a metric over every node.
    pub async fn metric_sum(&self, name: &str) -> f64 {
        let mut sum = 0.0;
        for admin in &self.node_admins {
            if let Ok(text) = self.metrics(admin).await {
                sum += metric(&text, name);
            }
        }
        sum
    }

    /// A histogram summed over every node (each edge records its own phones).
    pub async fn histogram_sum(
        &self,
        name: &str,
        labels: &[(&str, &str)],
    ) -> Option<crate::scrape::PromHistogram> {
        let mut total: Option<crate::scrape::PromHistogram> = None;
        for admin in &self.node_admins {
            let Ok(text) = self.metrics(admin).await else {
                continue;
            };
            let Some(h) = crate::scrape::PromHistogram::parse(&text, name, labels) else {
                continue;
            };
            total = Some(match total {
                None => h,
                Some(mut t) => {
                    for (b, (_, c)) in t.buckets.iter_mut().zip(&h.buckets) {
                        b.1 += c;
                    }
                    t.sum += h.sum;
                    t.count += h.count;
                    t
                }
            });
        }
        total
    }

    /// Copies every process's log into `dir` (when this run started the cluster).
    pub fn keep_logs(&self, dir: &std::path::Path) -> anyhow::Result<()> {
        let Some(p) = &self.processes else {
            return Ok(());
        };
        std::fs::create_dir_all(dir)?;
        for process in p.nodes.iter().chain(std::iter::once(&p.router)) {
            std::fs::write(dir.join(format!("{}.log", process.name)), process.log())?;
        }
        Ok(())
    }

    /// The node (index into the admin URLs) that owns `quiz` now, from the router's ring.
    pub async fn owner_of(&self, quiz: &QuizId) -> anyhow::Result<usize> {
        let processes = self
            .processes
            .as_ref()
            .context("the owner of a quiz is known only in a cluster started here")?;
        processes.owner_of(quiz).await
    }

    /// The router admin URL, if known.
    pub fn router_admin(&self) -> Option<&str> {
        self.router_admin.as_deref()
    }

    /// Lines of every node's log that say a lease lapsed.
    pub fn lease_lapses(&self) -> usize {
        let Some(p) = &self.processes else { return 0 };
        p.nodes
            .iter()
            .map(|n| {
                n.log()
                    .lines()
                    .filter(|l| l.contains("lease lapsed"))
                    .count()
            })
            .sum()
    }

    /// Stops every process of a cluster started here and removes its stores.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(p) = self.processes.take() {
            p.shutdown().await;
        }
        if let Some(b) = self.backend.take() {
            b.stop().await?;
        }
        Ok(())
    }
}

/// Production defaults where a test plan has quick ones, and room for the run's phones.
/// A node connection limit with room for `phones` spread over `nodes` nodes, under the
/// process's 20,000 open files.
pub fn connections_for(phones: u64, nodes: usize) -> usize {
    (phones.div_ceil(nodes.max(1) as u64) as usize + 500).clamp(18_000, 19_800)
}

fn production_settings(plan: &mut Plan, max_connections: Option<usize>) {
    let defaults = quiz_node::config::ClusterConfig::default();
    for node in &mut plan.nodes {
        if let Some(c) = node.cluster.as_mut() {
            c.lease_ttl_ms = defaults.lease_ttl_ms;
            c.lease_renew_ms = defaults.lease_renew_ms;
            c.ring_poll_ms = defaults.ring_poll_ms;
            c.handoff_wait_ms = defaults.handoff_wait_ms;
            c.peer_timeout_ms = defaults.peer_timeout_ms;
            c.peer_idle_timeout_ms = defaults.peer_idle_timeout_ms;
        }
        node.limits.shutdown_grace_s = 10;
        if let Some(max) = max_connections {
            node.listener.max_connections = max;
        }
    }
    if let Some(c) = plan.router.cluster.as_mut() {
        let defaults = quiz_router::ClusterConfig::default();
        c.poll_interval_ms = defaults.poll_interval_ms;
        c.push_interval_ms = defaults.push_interval_ms;
        c.push_timeout_ms = defaults.push_timeout_ms;
    }
    // Phones of a big quiz join at once, a few load processes' addresses for all of them:
    // the router's listener takes them all (its open-file limit lowers this, saying so).
    plan.router.listener.max_connections = 65_536;
    plan.router.listener.max_connections_per_ip = 65_536;
}

fn metric(text: &str, name: &str) -> f64 {
    quiz_local::processes::metric_value(text, name)
}

/// The executable of this run, for child processes.
pub fn this_exe() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("finding this executable")
}
