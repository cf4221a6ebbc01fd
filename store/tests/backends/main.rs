//! The store suite (`suite.rs`) run against every backend: SQLite in a temporary file,
//! PostgreSQL in a throwaway database created for each case, and SQLite with a Redis Cluster
//! for the leaderboards (one cluster the harness starts for the whole binary). Plus the few
//! checks that only make sense for one backend, and Redis' faults.
//!
//! PostgreSQL comes from `QUIZ_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`,
//! a user allowed to create databases); when it cannot be reached the PostgreSQL cases fail,
//! unless `QUIZ_SKIP_PG=1`.

mod memory;
mod postgres;
mod redis;
mod sqlite;
mod suite;
