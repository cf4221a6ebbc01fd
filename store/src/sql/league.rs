//! The embedded store's leagues: cross-quiz leaderboards (weekly and all-time), for setups
//! without Redis.
//!
//! `league_contrib` remembers, per (league, quiz, user), the largest quiz total recorded, and
//! `league_scores` holds each user's league score, the sum of those contributions. Recording a
//! total adds only what it raises the contribution by: the same total again, or a smaller one
//! (a late retry of an older batch), adds nothing. A league is keyed `week:2026-W48` or
//! `all-time`; the prefix keeps any week name apart from the all-time league.
//!
//! Recording is a read of the stored contributions, then raising those that grow and adding
//! the differences to the scores. On PostgreSQL two calls for one quiz would race between
//! that read and the write, so each call first takes a transaction-scoped advisory lock on its
//! quiz: calls for one quiz take turns (its owner makes one at a time anyway), calls for
//! different quizzes run at once. The score rows they share are updated in one global order
//! (by league, then user), so those calls cannot deadlock.

use std::collections::{BTreeMap, HashMap};

use quiz_protocol::{QuizId, UserId};
use sqlx::AssertSqlSafe;

use super::{Dialect, ROWS_PER_STATEMENT, SqlStore, WriteTx, corrupt, db, int, text, values_sql};
use crate::{League, LeagueRow, StoreError};

const ALL_TIME: &str = "all-time";

impl SqlStore {
    /// The body of [`crate::LeaderboardStore::record_league`], inside its transaction.
    pub(super) async fn record_league_in(
        &self,
        tx: &mut WriteTx<'_>,
        quiz: &QuizId,
        week: &str,
        totals: &[(UserId, u32)],
    ) -> Result<(), StoreError> {
        if self.dialect == Dialect::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(format!("league:{quiz}"))
                .execute(&mut *tx.tx)
                .await
                .map_err(db)?;
        }
        // A user listed twice counts with their larger total; a zero total raises nothing.
        let mut best: BTreeMap<&UserId, i64> = BTreeMap::new();
        for (user, total) in totals.iter().filter(|(_, total)| *total > 0) {
            let entry = best.entry(user).or_default();
            *entry = (*entry).max(i64::from(*total));
        }
        let best: Vec<(&UserId, i64)> = best.into_iter().collect();
        let mut leagues = [
            league_key(&League::Weekly(week.to_owned())),
            ALL_TIME.into(),
        ];
        leagues.sort();
        for league in &leagues {
            for chunk in best.chunks(ROWS_PER_STATEMENT) {
                self.raise_chunk(tx, league, quiz, chunk).await?;
            }
        }
        Ok(())
    }

    /// Raises the contributions of `quiz` to `league` to `totals` (sorted by user, each user
    /// once) where they grow, and adds what they grew by to the users' scores.
    async fn raise_chunk(
        &self,
        tx: &mut WriteTx<'_>,
        league: &str,
        quiz: &QuizId,
        totals: &[(&UserId, i64)],
    ) -> Result<(), StoreError> {
        let stored = self.contributions(tx, league, quiz, totals).await?;
        let grown: Vec<(&UserId, i64, i64)> = totals
            .iter()
            .filter_map(|&(user, total)| {
                let before = stored.get(user.as_str()).copied().unwrap_or(0);
                (total > before).then_some((user, total, total - before))
            })
            .collect();
        if grown.is_empty() {
            return Ok(());
        }
        let sql = values_sql(
            "INSERT INTO league_contrib (league, quiz, user_id, points)",
            grown.len(),
            4,
            "ON CONFLICT (league, quiz, user_id) DO UPDATE SET points = excluded.points",
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for (user, total, _) in &grown {
            query = query
                .bind(league)
                .bind(quiz.as_str())
                .bind(user.as_str())
                .bind(*total);
        }
        query.execute(&mut *tx.tx).await.map_err(db)?;

        let sql = values_sql(
            "INSERT INTO league_scores (league, user_id, points)",
            grown.len(),
            3,
            "ON CONFLICT (league, user_id) DO UPDATE SET \
             points = league_scores.points + excluded.points",
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for (user, _, added) in &grown {
            query = query.bind(league).bind(user.as_str()).bind(*added);
        }
        query.execute(&mut *tx.tx).await.map_err(db)?;
        Ok(())
    }

    /// The stored contributions of `quiz` to `league` of these users.
    async fn contributions(
        &self,
        tx: &mut WriteTx<'_>,
        league: &str,
        quiz: &QuizId,
        users: &[(&UserId, i64)],
    ) -> Result<HashMap<String, i64>, StoreError> {
        let list: Vec<String> = (0..users.len()).map(|i| format!("${}", i + 3)).collect();
        let sql = format!(
            "SELECT user_id, points FROM league_contrib \
             WHERE league = $1 AND quiz = $2 AND user_id IN ({})",
            list.join(", ")
        );
        let mut query = sqlx::query(AssertSqlSafe(sql))
            .bind(league)
            .bind(quiz.as_str());
        for (user, _) in users {
            query = query.bind(user.as_str());
        }
        let mut stored = HashMap::with_capacity(users.len());
        for row in query.fetch_all(&mut *tx.tx).await.map_err(db)? {
            stored.insert(text(&row, "user_id")?, int(&row, "points")?);
        }
        Ok(stored)
    }

    /// The body of [`crate::LeaderboardStore::league`].
    pub(super) async fn league(
        &self,
        league: &League,
        limit: usize,
    ) -> Result<Vec<LeagueRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT user_id, points FROM league_scores WHERE league = $1 \
             ORDER BY points DESC, user_id ASC LIMIT $2",
        )
        .bind(league_key(league))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|row| {
                Ok(LeagueRow {
                    user: UserId::parse(&text(row, "user_id")?)
                        .map_err(|e| corrupt("user id", e))?,
                    points: int(row, "points")?,
                })
            })
            .collect()
    }
}

/// A league's key in the tables.
fn league_key(league: &League) -> String {
    match league {
        League::Weekly(week) => format!("week:{week}"),
        League::AllTime => ALL_TIME.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_week_name_is_the_all_time_league() {
        assert_eq!(
            league_key(&League::Weekly("2026-W48".into())),
            "week:2026-W48"
        );
        assert_ne!(league_key(&League::Weekly(ALL_TIME.into())), ALL_TIME);
        assert_eq!(league_key(&League::AllTime), ALL_TIME);
    }
}
