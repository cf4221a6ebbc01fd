//! Throwaway PostgreSQL databases on an existing server (the one at `QUIZ_TEST_PG_URL`), one
//! per test or run, so that tests run in parallel without seeing each other's rows.
//!
//! Starting PostgreSQL itself is left to the environment (`scripts/test.sh` does it in CI):
//! a server refuses to run as root, and one server serves every test.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// The admin URL used when `QUIZ_TEST_PG_URL` is not set: a user allowed to create databases.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// How long connecting to the admin database may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest `<purpose>` kept in a database name (PostgreSQL names stop at 63 bytes).
const PURPOSE_MAX: usize = 20;

/// A database created for one test; [`PgDatabase::drop_database`] removes it.
///
/// Dropping the value does not drop the database (that needs `.await`): call
/// `drop_database`, also when the test fails (the database names say which process made
/// them, for cleaning up by hand).
#[derive(Debug)]
pub struct PgDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDatabase {
    /// Creates `quiz_<purpose>_<pid>_<nanos>` on the server at `QUIZ_TEST_PG_URL` (an admin
    /// URL; default [`DEFAULT_ADMIN_URL`]). `purpose` is lower-cased, and characters other
    /// than ASCII letters, digits and `_` become `_`.
    pub async fn create(purpose: &str) -> anyhow::Result<PgDatabase> {
        let admin_url =
            std::env::var("QUIZ_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned());
        let name = database_name(purpose);
        let mut admin = admin(&admin_url).await?;
        let created = sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .with_context(|| format!("CREATE DATABASE {name}"));
        let _ = admin.close().await;
        created?;
        Ok(PgDatabase {
            url: database_url(&admin_url, &name),
            admin_url,
            name,
        })
    }

    /// The database's URL: the admin URL with its database name replaced.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drops the database, closing any connection still open to it (`WITH (FORCE)`).
    pub async fn drop_database(self) -> anyhow::Result<()> {
        let mut admin = admin(&self.admin_url).await?;
        let dropped = sqlx::query(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut admin)
        .await
        .with_context(|| format!("DROP DATABASE {}", self.name));
        let _ = admin.close().await;
        dropped.map(|_| ())
    }
}

async fn admin(admin_url: &str) -> anyhow::Result<PgConnection> {
    tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect(admin_url))
        .await
        .map_err(|_| anyhow!("connecting to PostgreSQL timed out"))?
        .with_context(|| {
            format!(
                "PostgreSQL is unreachable at QUIZ_TEST_PG_URL (default {DEFAULT_ADMIN_URL}); \
                 start it, or point QUIZ_TEST_PG_URL at a server where this user may create \
                 databases"
            )
        })
}

/// `quiz_<purpose>_<pid>_<nanos>`, where nanos only grow within this process so that two
/// names are never equal.
fn database_name(purpose: &str) -> String {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or_default();
    let previous = LAST.fetch_max(now, Ordering::Relaxed);
    let nanos = if previous >= now {
        LAST.fetch_add(1, Ordering::Relaxed) + 1
    } else {
        now
    };
    let purpose: String = purpose
        .chars()
        .take(PURPOSE_MAX)
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_') => c,
            _ => '_',
        })
        .collect();
    format!("quiz_{purpose}_{}_{nanos}", std::process::id())
}

/// `admin_url` with its database name replaced by `name`.
fn database_url(admin_url: &str, name: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (admin_url, String::new()),
    };
    let authority_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[authority_end..].find('/') {
        Some(slash) => &base[..authority_end + slash],
        None => base,
    };
    format!("{host_part}/{name}{query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_replaces_only_the_database() {
        assert_eq!(
            database_url("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            database_url("postgres://u:p@h/db?sslmode=disable", "t2"),
            "postgres://u:p@h/t2?sslmode=disable"
        );
        assert_eq!(database_url("postgres://u@h", "t3"), "postgres://u@h/t3");
    }

    #[test]
    fn database_names_are_safe_short_and_unique() {
        let a = database_name("Store Suite-1 ✓ with a purpose far too long");
        let b = database_name("Store Suite-1 ✓ with a purpose far too long");
        assert_ne!(a, b);
        assert!(a.starts_with("quiz_store_suite_1___with_"), "{a}");
        assert!(a.len() <= 63, "{a}");
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_'),
            "{a}"
        );
    }
}
