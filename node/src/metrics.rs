//! Prometheus metrics of a node, served as text on the admin port. No quiz or player id is
//! ever a label: label values come from small fixed sets.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// Latency buckets in seconds, fine at the low end where acks live.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15,
    0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Every metric a node exports, registered once.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Open phone connections.
    pub connections: IntGauge,
    /// Upgrades refused, by reason (`token`). Connections refused by the listener's caps are
    /// `listener_refused_total`.
    pub refused: IntCounterVec,
    /// Joins, by outcome (`welcome`, `resumed`, or an error code).
    pub joins: IntCounterVec,
    /// Answers, by result (`accepted`, `duplicate`, or the rejection code).
    pub answers: IntCounterVec,
    /// From an answer frame's arrival at the edge to its ack being queued for the phone.
    pub answer_ack_seconds: Histogram,
    /// From a leaderboard version reaching an edge to every phone's frame being queued.
    pub leaderboard_fanout_seconds: Histogram,
    /// Frames and bytes queued to phones.
    pub frames_sent: IntCounter,
    pub bytes_sent: IntCounter,
    /// Phones dropped for not reading (close 4008).
    pub slow_consumers: IntCounter,
    /// Rooms that followed a moved quiz to its new owner, keeping their phones connected.
    pub room_resyncs: IntCounter,
    /// Connections closed by the server, by close code (1008 policy, 4009 idle...).
    pub closes: IntCounterVec,
    /// Quizzes loaded on this node as owner.
    pub quizzes: IntGauge,
    /// Cluster messages, by kind (`request`, `event` sent to edges, `event_in` from owners).
    pub cluster_messages: IntCounterVec,
    /// The ring epoch this node holds.
    pub ring_epoch: IntGauge,
    /// Durable write batches: duration and size.
    pub store_write_seconds: HistogramVec,
    pub write_batch_answers: Histogram,
    /// Leaderboard store (Redis) write batches, off the ack path: duration by result.
    pub leaderboard_store_write_seconds: HistogramVec,
    /// This process's resident memory and CPU time, read from `/proc` at each scrape.
    pub process_resident_bytes: IntGauge,
    pub process_cpu_seconds: prometheus::Gauge,
    /// Admission on the phones' port (`quiz_node_listener_…`).
    pub listener: quiz_net::Metrics,
    /// Incoming QUIC connections refused in their handshake (counted by the cluster
    /// endpoint, copied here at each scrape).
    pub cluster_refused_handshakes: IntCounter,
    pub(crate) cluster_refused_source: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("quiz_node".into()), None)
            .unwrap_or_else(|e| unreachable!("a fixed prefix is valid: {e}"));
        let m = Self {
            connections: IntGauge::new("connections", "Open phone connections")
                .unwrap_or_else(|e| unreachable!("static metric definitions are valid: {e}")),
            refused: counter_vec("connections_refused_total", "Refused connections", "reason"),
            joins: counter_vec("joins_total", "Joins by outcome", "outcome"),
            answers: counter_vec("answers_total", "Answers by result", "result"),
            answer_ack_seconds: histogram(
                "answer_ack_seconds",
                "Answer frame received at the edge to ack queued",
            ),
            leaderboard_fanout_seconds: histogram(
                "leaderboard_fanout_seconds",
                "Leaderboard version received at the edge to all phone frames queued",
            ),
            frames_sent: counter("frames_sent_total", "Frames queued to phones"),
            bytes_sent: counter("bytes_sent_total", "Payload bytes queued to phones"),
            slow_consumers: counter("slow_consumers_total", "Phones dropped as too slow"),
            room_resyncs: counter(
                "room_resyncs_total",
                "Rooms that followed a moved quiz and resynced their phones in place",
            ),
            closes: counter_vec("closes_total", "Connections closed by the server", "code"),
            cluster_messages: counter_vec(
                "cluster_messages_total",
                "Cluster messages by kind",
                "kind",
            ),
            ring_epoch: IntGauge::new("ring_epoch", "The ring epoch this node holds")
                .unwrap_or_else(|e| unreachable!("static metric definitions are valid: {e}")),
            quizzes: IntGauge::new("quizzes", "Quizzes loaded as owner")
                .unwrap_or_else(|e| unreachable!("static metric definitions are valid: {e}")),
            store_write_seconds: HistogramVec::new(
                HistogramOpts::new("store_write_seconds", "Durable write batch duration")
                    .buckets(LATENCY_BUCKETS.to_vec()),
                &["result"],
            )
            .unwrap_or_else(|e| unreachable!("static metric definitions are valid: {e}")),
            write_batch_answers: Histogram::with_opts(
                HistogramOpts::new("write_batch_answers", "Answers per durable write batch")
                    .buckets(vec![
                        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0,
                    ]),
            )
            .unwrap_or_else(|e| unreachable!("static metric definitions are valid: {e}")),
            leaderboard_store_write_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "leaderboard_store_write_seconds",
                    "Leaderboard store write batch duration (off the ack path)",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["result"],
            )
            .unwrap_or_else(|e| unreachable!("static metric definitions are valid: {e}")),
            process_resident_bytes: IntGauge::new(
                "process_resident_bytes",
                "Resident memory of this process",
            )
            .unwrap_or_else(|e| unreachable!("static metric definitions are valid: {e}")),
            process_cpu_seconds: prometheus::Gauge::new(
                "process_cpu_seconds_total",
                "User and system CPU time of this process",
            )
            .unwrap_or_else(|e| unreachable!("static metric definitions are valid: {e}")),
            cluster_refused_handshakes: counter(
                "cluster_refused_handshakes_total",
                "Incoming QUIC connections refused in their handshake",
            ),
            cluster_refused_source: Default::default(),
            listener: quiz_net::Metrics::register(&registry)
                .unwrap_or_else(|e| unreachable!("static metric definitions are valid: {e}")),
            registry,
        };
        m.register_all();
        m
    }

    fn register_all(&self) {
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(self.connections.clone()),
            Box::new(self.refused.clone()),
            Box::new(self.joins.clone()),
            Box::new(self.answers.clone()),
            Box::new(self.answer_ack_seconds.clone()),
            Box::new(self.leaderboard_fanout_seconds.clone()),
            Box::new(self.frames_sent.clone()),
            Box::new(self.bytes_sent.clone()),
            Box::new(self.slow_consumers.clone()),
            Box::new(self.room_resyncs.clone()),
            Box::new(self.closes.clone()),
            Box::new(self.quizzes.clone()),
            Box::new(self.cluster_messages.clone()),
            Box::new(self.ring_epoch.clone()),
            Box::new(self.store_write_seconds.clone()),
            Box::new(self.write_batch_answers.clone()),
            Box::new(self.leaderboard_store_write_seconds.clone()),
            Box::new(self.process_resident_bytes.clone()),
            Box::new(self.process_cpu_seconds.clone()),
            Box::new(self.cluster_refused_handshakes.clone()),
        ];
        for c in collectors {
            // Each metric is registered exactly once, here, on a fresh registry.
            if let Err(e) = self.registry.register(c) {
                unreachable!("metric registered twice: {e}");
            }
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        if let Some((rss, cpu)) = process_usage() {
            self.process_resident_bytes.set(rss as i64);
            self.process_cpu_seconds.set(cpu);
        }
        let refused = self
            .cluster_refused_source
            .load(std::sync::atomic::Ordering::Relaxed);
        let counted = self.cluster_refused_handshakes.get();
        self.cluster_refused_handshakes
            .inc_by(refused.saturating_sub(counted));
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Resident bytes and CPU seconds of this process, from `/proc/self` (Linux only).
fn process_usage() -> Option<(u64, f64)> {
    Some((resident_bytes("self")?, cpu_seconds("self")?))
}

/// The resident memory of a process (`"self"` or a PID), bytes: `VmRSS` of its
/// `/proc/…/status` (Linux only).
pub fn resident_bytes(process: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{process}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// User + system CPU time of a process (`"self"` or a PID), seconds, from its `/proc/…/stat`
/// (Linux only).
pub fn cpu_seconds(process: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{process}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): utime and stime are the 12th
    // and 13th, in clock ticks (100 per second on Linux).
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help)
        .unwrap_or_else(|e| unreachable!("static metric definitions are valid: {e}"))
}

fn counter_vec(name: &str, help: &str, label: &str) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), &[label])
        .unwrap_or_else(|e| unreachable!("static metric definitions are valid: {e}"))
}

fn histogram(name: &str, help: &str) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()))
        .unwrap_or_else(|e| unreachable!("static metric definitions are valid: {e}"))
}
