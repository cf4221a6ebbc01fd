//! The router's Prometheus metrics, in a registry of its own prefixed `quiz_router`. Labels
//! come from small fixed sets (route templates, status classes, error codes, limit names):
//! never a quiz code or a user id.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Every metric the router exports.
pub(crate) struct Metrics {
    registry: Registry,
    /// Requests by route template (`/v1/quizzes/{id}/join`) and status class (`2xx`).
    pub(crate) http_requests: IntCounterVec,
    /// Request latency by route template.
    pub(crate) http_latency: HistogramVec,
    /// Join attempts by outcome: `ok` or the error code.
    pub(crate) joins: IntCounterVec,
    /// Requests refused by a rate limit, by limit.
    pub(crate) rate_limited: IntCounterVec,
    /// Final standings rebuilt from the answer log because the leaderboard store had lost
    /// them, by result: `ok` or `failed`.
    pub(crate) standings_repairs: IntCounterVec,
    /// The ring this router places quizzes with.
    pub(crate) ring: RingMetrics,
    /// Admission on the public listener (`quiz_router_listener_…`).
    pub(crate) listener: quiz_net::Metrics,
}

/// The ring and its membership task. Cheap to clone (the metrics are shared).
#[derive(Clone)]
pub(crate) struct RingMetrics {
    /// The epoch of the ring in use (0 before the first is published).
    pub(crate) epoch: IntGauge,
    /// Its members.
    pub(crate) members: IntGauge,
    /// Pushes of the ring to one node, by result: `ok` or `failed`.
    pub(crate) pushes: IntCounterVec,
    /// Reads of the leases and the stored ring, by result: `ok` or `failed` (the store).
    pub(crate) polls: IntCounterVec,
}

impl Metrics {
    pub(crate) fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new_custom(Some("quiz_router".into()), None)?;
        let http_requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route and status class",
            ),
            &["route", "status"],
        )?;
        let http_latency = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency by route",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ]),
            &["route"],
        )?;
        let joins = IntCounterVec::new(
            Opts::new("joins_total", "Join attempts by outcome"),
            &["outcome"],
        )?;
        let rate_limited = IntCounterVec::new(
            Opts::new("rate_limited_total", "Requests refused by a rate limit"),
            &["limit"],
        )?;
        let standings_repairs = IntCounterVec::new(
            Opts::new(
                "standings_repairs_total",
                "Final standings rebuilt from the answer log, by result",
            ),
            &["result"],
        )?;
        let ring = RingMetrics {
            epoch: IntGauge::new("ring_epoch", "Epoch of the ring in use")?,
            members: IntGauge::new("ring_members", "Members of the ring in use")?,
            pushes: IntCounterVec::new(
                Opts::new(
                    "ring_pushes_total",
                    "Pushes of the ring to a node by result",
                ),
                &["result"],
            )?,
            polls: IntCounterVec::new(
                Opts::new(
                    "ring_polls_total",
                    "Reads of the leases and the stored ring by result",
                ),
                &["result"],
            )?,
        };
        registry.register(Box::new(ring.epoch.clone()))?;
        registry.register(Box::new(ring.members.clone()))?;
        registry.register(Box::new(ring.pushes.clone()))?;
        registry.register(Box::new(ring.polls.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_latency.clone()))?;
        registry.register(Box::new(joins.clone()))?;
        registry.register(Box::new(rate_limited.clone()))?;
        registry.register(Box::new(standings_repairs.clone()))?;
        let listener = quiz_net::Metrics::register(&registry)?;
        Ok(Metrics {
            listener,
            registry,
            http_requests,
            http_latency,
            joins,
            rate_limited,
            standings_repairs,
            ring,
        })
    }

    /// The Prometheus text exposition of every metric.
    pub(crate) fn render(&self) -> Result<String, prometheus::Error> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

/// `2xx`, `4xx`, ...: a bounded label for a status code.
pub(crate) fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
