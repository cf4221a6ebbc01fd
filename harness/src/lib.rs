//! Real backends for tests, chaos runs and local runs: a Redis Cluster of `redis-server`
//! processes on free ports of 127.0.0.1 ([`RedisCluster`]), and a throwaway PostgreSQL
//! database on an existing server ([`PgDatabase`]), a TCP proxy that can cut, block, stall
//! and slow connections ([`TcpProxy`]), and a UDP proxy that loses and delays datagrams
//! ([`UdpProxy`]).
//!
//! This crate owns starting, faulting and cleaning up those backends; it knows nothing of the
//! quiz (no dependency on other crates of the workspace), so that every crate can
//! dev-depend on it. Errors are `anyhow`: a failure here is a broken test environment, and the
//! message says what to look at (the tail of a server's log, the URL that was tried).
//!
//! No process outlives its test: see [`RedisCluster`] for how the servers are killed even when
//! the test process dies without running destructors.

mod postgres;
mod proxy;
mod redis_cluster;
mod udp_proxy;

pub use postgres::{DEFAULT_ADMIN_URL as DEFAULT_PG_ADMIN_URL, PgDatabase};
pub use proxy::TcpProxy;
pub use redis_cluster::{ClusterOptions, RedisCluster};
pub use udp_proxy::UdpProxy;
