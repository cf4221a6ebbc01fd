//! ISO 8601 week names (`2026-W48`) for the weekly leagues, from wall-clock milliseconds.

use quiz_engine::Millis;

const DAY_MS: i64 = 86_400_000;

/// The ISO week that contains the UTC day of `at`, such as `2026-W48`.
pub fn iso_week(at: Millis) -> String {
    let days = at.div_euclid(DAY_MS);
    // 1970-01-01 was a Thursday; ISO weekdays run Monday = 1 to Sunday = 7.
    let weekday = (days + 3).rem_euclid(7) + 1;
    // A week belongs to the year of its Thursday.
    let thursday = days - (weekday - 4);
    let (year, _, _) = civil_from_days(thursday);
    let week = (thursday - days_from_civil(year, 1, 1)) / 7 + 1;
    format!("{year}-W{week:02}")
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i64, m: i64, d: i64) -> Millis {
        days_from_civil(y, m, d) * DAY_MS + 12 * 3_600_000
    }

    #[test]
    fn iso_weeks_at_the_edges_of_years() {
        assert_eq!(iso_week(at(2026, 11, 27)), "2026-W48");
        assert_eq!(iso_week(at(2021, 1, 3)), "2020-W53"); // a Sunday
        assert_eq!(iso_week(at(2021, 1, 4)), "2021-W01"); // the Monday after
        assert_eq!(iso_week(at(2024, 12, 30)), "2025-W01");
        assert_eq!(iso_week(at(2026, 1, 1)), "2026-W01"); // a Thursday
        assert_eq!(iso_week(at(1970, 1, 1)), "1970-W01");
    }

    #[test]
    fn dates_round_trip() {
        for z in [-800_000, -1, 0, 1, 19_000, 20_419, 2_000_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }
}
