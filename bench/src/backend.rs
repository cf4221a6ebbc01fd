//! The store backends a bench compares, each started fresh for one run and thrown away after
//! it, so that no run inherits another's tables, caches or Redis keys.
//!
//! - `embedded`: a new SQLite file (WAL, `synchronous = FULL`) that the local system creates
//!   in a temporary folder; leaderboards live in the same database.
//! - `real`: a throwaway PostgreSQL database on the server at `QUIZ_TEST_PG_URL` (default
//!   `postgres://postgres@127.0.0.1:5432/postgres`) for the record, and a Redis Cluster of
//!   three masters with one replica each, started on 127.0.0.1, for the leaderboards. The
//!   harness starts and removes both.

use std::fmt;

use anyhow::Context;
use quiz_harness::{PgDatabase, RedisCluster};
use quiz_store::{RedisConfig, StoreConfig};

/// Which stores a run uses.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, clap::ValueEnum)]
pub enum Backend {
    /// SQLite in a fresh file; no Redis.
    Embedded,
    /// PostgreSQL and a Redis Cluster (3 masters, 1 replica each).
    Real,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::Real => "real",
        }
    }

    /// One line for the report.
    pub fn describe(self) -> &'static str {
        match self {
            Backend::Embedded => {
                "SQLite file (WAL, synchronous = FULL), leaderboards in the same database"
            }
            Backend::Real => {
                "PostgreSQL (a fresh database on the server at QUIZ_TEST_PG_URL, default \
                 127.0.0.1:5432) + Redis Cluster (3 masters × 1 replica, redis-server on \
                 127.0.0.1)"
            }
        }
    }

    /// Starts fresh stores for one run.
    pub async fn start(self) -> anyhow::Result<RunningBackend> {
        match self {
            Backend::Embedded => Ok(RunningBackend {
                store: None,
                pg: None,
                redis: None,
            }),
            Backend::Real => {
                let pg = PgDatabase::create("bench")
                    .await
                    .context("creating a PostgreSQL database")?;
                let redis = match RedisCluster::start(3, 1).await {
                    Ok(redis) => redis,
                    Err(e) => {
                        let _ = pg.drop_database().await;
                        return Err(e.context("starting a Redis Cluster"));
                    }
                };
                let store = StoreConfig {
                    redis: Some(RedisConfig {
                        nodes: redis.seed_urls(),
                        connect_timeout_ms: 1_000,
                        response_timeout_ms: 1_000,
                        retries: 3,
                        weekly_league_weeks_kept: 8,
                    }),
                    ..StoreConfig::sql(pg.url())
                };
                Ok(RunningBackend {
                    store: Some(store),
                    pg: Some(pg),
                    redis: Some(redis),
                })
            }
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The stores of one run; [`RunningBackend::stop`] removes them.
pub struct RunningBackend {
    store: Option<StoreConfig>,
    pg: Option<PgDatabase>,
    redis: Option<RedisCluster>,
}

impl RunningBackend {
    /// The store configuration for the local system; `None` asks it for a fresh SQLite
    /// file of its own.
    pub fn store(&self) -> Option<StoreConfig> {
        self.store.clone()
    }

    /// Kills the Redis servers and drops the PostgreSQL database. Stop the system using
    /// them first.
    pub async fn stop(self) -> anyhow::Result<()> {
        drop(self.redis);
        if let Some(pg) = self.pg {
            let name = pg.name().to_owned();
            pg.drop_database()
                .await
                .with_context(|| format!("dropping PostgreSQL database {name}"))?;
        }
        Ok(())
    }
}
