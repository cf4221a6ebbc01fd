//! Leagues: the cross-quiz leaderboards language apps run (this week's, and all time), built
//! from every quiz's totals by the leaderboard store.

use axum::Json;
use axum::extract::{Path, State};
use quiz_store::{League, LeagueRow};
use serde::{Deserialize, Serialize};

use super::{AppState, QueryParams};
use crate::auth::Caller;
use crate::error::ApiError;

/// Rows returned when the query names no limit, and the most it may name.
const DEFAULT_ROWS: usize = 100;
const MAX_ROWS: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LeagueQuery {
    limit: Option<usize>,
}

#[derive(Serialize)]
pub(crate) struct LeagueStandings {
    league: String,
    standings: Vec<LeagueEntry>,
}

#[derive(Serialize)]
pub(crate) struct LeagueEntry {
    rank: usize,
    user: String,
    points: u64,
}

/// `GET /v1/leagues/weekly/{week}` (an ISO week such as `2026-W48`).
pub(crate) async fn weekly(
    State(app): State<AppState>,
    _caller: Caller,
    Path(week): Path<String>,
    QueryParams(query): QueryParams<LeagueQuery>,
) -> Result<Json<LeagueStandings>, ApiError> {
    if !is_iso_week(&week) {
        return Err(ApiError::BadRequest(
            "a week is written like 2026-W48".into(),
        ));
    }
    let rows = app
        .stores
        .leaderboards
        .league(&League::Weekly(week.clone()), limit(&query)?)
        .await?;
    Ok(Json(standings(format!("week {week}"), rows)))
}

/// `GET /v1/leagues/all-time`.
pub(crate) async fn all_time(
    State(app): State<AppState>,
    _caller: Caller,
    QueryParams(query): QueryParams<LeagueQuery>,
) -> Result<Json<LeagueStandings>, ApiError> {
    let rows = app
        .stores
        .leaderboards
        .league(&League::AllTime, limit(&query)?)
        .await?;
    Ok(Json(standings("all time".into(), rows)))
}

fn limit(query: &LeagueQuery) -> Result<usize, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_ROWS);
    if (1..=MAX_ROWS).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::BadRequest(format!("limit must be 1-{MAX_ROWS}")))
    }
}

fn standings(league: String, rows: Vec<LeagueRow>) -> LeagueStandings {
    let standings = rows
        .into_iter()
        .enumerate()
        .map(|(i, r)| LeagueEntry {
            rank: i + 1,
            user: r.user.to_string(),
            points: r.points,
        })
        .collect();
    LeagueStandings { league, standings }
}

/// `YYYY-Www` with a week from 01 to 53.
fn is_iso_week(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 8
        && b[..4].iter().all(u8::is_ascii_digit)
        && &b[4..6] == b"-W"
        && b[6..].iter().all(u8::is_ascii_digit)
        && matches!(s[6..].parse::<u8>(), Ok(1..=53))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weeks_are_checked() {
        assert!(is_iso_week("2026-W48"));
        assert!(is_iso_week("2020-W53"));
        for bad in [
            "2026-W00", "2026-W54", "2026W48", "26-W48", "2026-w48", "2026-W4",
        ] {
            assert!(!is_iso_week(bad), "{bad}");
        }
    }
}
