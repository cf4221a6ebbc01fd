//! Points: from a [`Grade`], the response time and the player's streak to the points an
//! answer is worth. Integer arithmetic throughout, so every node computes the same points.
//!
//! - base = `question.points × multiplier` (0, 1 or 2).
//! - Speed scoring: full base under `full_points_under_ms`, else
//!   `round(base × (1 − (t/T)/2))`, with `t` capped at `T`. Accuracy scoring: base.
//! - Partial credit: `round(speed points × earned / out_of)`.
//! - Streak: consecutive fully correct answers. A fully correct answer adds
//!   `min(100 × (streak − 1), 500)` with `streak_bonus`; a wrong, partial or missing answer
//!   resets it. Polls and questions worth nothing (multiplier 0) leave it alone.
//!
//! Rounding is half away from zero (all values here are non-negative, so half up).

use quiz_protocol::{Question, QuestionKind, QuizSettings, Scoring};

use crate::grade::Grade;

/// Streak bonus per consecutive correct answer after the first.
pub const STREAK_STEP: u32 = 100;
/// Largest streak bonus.
pub const STREAK_CAP: u32 = 500;

/// What one answer scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scored {
    /// Speed points × fraction, plus the streak bonus.
    pub points: u32,
    /// The streak bonus included in `points`.
    pub bonus: u32,
    /// The player's streak after this answer.
    pub streak: u32,
}

/// Whether a question takes part in streaks: polls and practice questions (multiplier 0) do
/// not, so answering or missing them neither builds nor breaks one.
pub fn counts_for_streak(question: &Question) -> bool {
    question.multiplier > 0 && question.body.kind() != QuestionKind::Poll
}

/// The points for an answer graded `grade`, given `response_ms` (pauses excluded) and the
/// player's streak before it.
pub fn score(
    question: &Question,
    grade: &Grade,
    response_ms: u32,
    streak_before: u32,
    settings: &QuizSettings,
    full_points_under_ms: u32,
) -> Scored {
    if !counts_for_streak(question) {
        return Scored {
            points: 0,
            bonus: 0,
            streak: streak_before,
        };
    }
    let base = question
        .points
        .saturating_mul(u32::from(question.multiplier));
    let limit_ms = question.time_limit_s.saturating_mul(1000);
    let timed = match settings.scoring {
        Scoring::Speed => speed_points(base, response_ms, limit_ms, full_points_under_ms),
        Scoring::Accuracy => base,
    };
    let earned = round_div(
        u64::from(timed) * u64::from(grade.earned),
        u64::from(grade.out_of.max(1)),
    );
    if !grade.correct() {
        return Scored {
            points: earned,
            bonus: 0,
            streak: 0,
        };
    }
    let streak = streak_before.saturating_add(1);
    let bonus = if settings.streak_bonus {
        streak_bonus(streak)
    } else {
        0
    };
    Scored {
        points: earned.saturating_add(bonus),
        bonus,
        streak,
    }
}

/// The streak after missing a question (no answer when it closed).
pub fn missed(question: &Question, streak_before: u32) -> u32 {
    if counts_for_streak(question) {
        0
    } else {
        streak_before
    }
}

/// The bonus for the `streak`-th correct answer in a row: +0, +100, +200, … up to +500.
pub fn streak_bonus(streak: u32) -> u32 {
    STREAK_STEP
        .saturating_mul(streak.saturating_sub(1))
        .min(STREAK_CAP)
}

/// `round(base × (1 − (t/T)/2))` = `round(base × (2T − t) / 2T)`, full base under the
/// threshold. `t` is capped at `T`, so the result is at least half the base.
pub fn speed_points(base: u32, response_ms: u32, limit_ms: u32, full_points_under_ms: u32) -> u32 {
    if response_ms < full_points_under_ms || limit_ms == 0 {
        return base;
    }
    let t = u64::from(response_ms.min(limit_ms));
    let two_t = 2 * u64::from(limit_ms);
    round_div(u64::from(base) * (two_t - t), two_t)
}

/// `round(n / d)`, halves up, for `d > 0`. The results here never exceed a question's base
/// points, so they fit in u32.
fn round_div(n: u64, d: u64) -> u32 {
    ((2 * n + d) / (2 * d)) as u32
}

#[cfg(test)]
mod tests {
    use quiz_protocol::{Level, QuestionBody};

    use super::*;

    fn question(points: u32, multiplier: u8) -> Question {
        Question {
            id: "q".into(),
            level: Level::B1,
            topic: "t".into(),
            prompt: "?".into(),
            body: QuestionBody::TrueFalse { answer: true },
            time_limit_s: 20,
            points,
            multiplier,
            explanation: None,
        }
    }

    fn poll() -> Question {
        Question {
            body: QuestionBody::Poll {
                options: vec!["a".into(), "b".into()],
            },
            ..question(1000, 1)
        }
    }

    const RIGHT: Grade = Grade {
        earned: 1,
        out_of: 1,
        poll: false,
    };
    const WRONG: Grade = Grade {
        earned: 0,
        out_of: 1,
        poll: false,
    };

    fn speed() -> QuizSettings {
        QuizSettings::default()
    }

    fn accuracy() -> QuizSettings {
        QuizSettings {
            scoring: Scoring::Accuracy,
            ..QuizSettings::default()
        }
    }

    fn points(q: &Question, g: Grade, t: u32, settings: &QuizSettings) -> u32 {
        score(q, &g, t, 0, settings, 500).points
    }

    #[test]
    fn speed_formula_and_the_half_second_rule() {
        let q = question(1000, 1);
        assert_eq!(points(&q, RIGHT, 0, &speed()), 1000);
        assert_eq!(points(&q, RIGHT, 499, &speed()), 1000);
        // At 500 ms the formula applies: 1000 × (1 − 0.025/2) = 987.5 → 988.
        assert_eq!(points(&q, RIGHT, 500, &speed()), 988);
        assert_eq!(points(&q, RIGHT, 10_000, &speed()), 750);
        assert_eq!(points(&q, RIGHT, 20_000, &speed()), 500);
        // Past the limit (an answer in the grace period) scores as at the limit.
        assert_eq!(points(&q, RIGHT, 25_000, &speed()), 500);
        assert_eq!(points(&q, WRONG, 100, &speed()), 0);
    }

    #[test]
    fn rounding_is_half_up() {
        // 333 × (40000 − 1000) / 40000 = 324.675 → 325; 3 × 0.75 = 2.25 → 2; 5 × 0.75 = 3.75 → 4.
        assert_eq!(speed_points(333, 1_000, 20_000, 500), 325);
        assert_eq!(speed_points(3, 10_000, 20_000, 500), 2);
        assert_eq!(speed_points(5, 10_000, 20_000, 500), 4);
        // 1 × 0.5 = 0.5 → 1.
        assert_eq!(speed_points(1, 20_000, 20_000, 500), 1);
    }

    #[test]
    fn multipliers() {
        assert_eq!(points(&question(1000, 2), RIGHT, 10_000, &speed()), 1500);
        assert_eq!(points(&question(1000, 0), RIGHT, 0, &speed()), 0);
        assert_eq!(points(&question(800, 2), RIGHT, 19_000, &accuracy()), 1600);
    }

    #[test]
    fn accuracy_ignores_time() {
        let q = question(1000, 1);
        assert_eq!(points(&q, RIGHT, 19_999, &accuracy()), 1000);
        assert_eq!(points(&q, WRONG, 0, &accuracy()), 0);
    }

    #[test]
    fn partial_credit_multiplies_and_rounds() {
        let q = question(1000, 1);
        let two_thirds = Grade {
            earned: 2,
            out_of: 3,
            poll: false,
        };
        // 1000 × 2/3 = 666.67 → 667; at 10 s: 750 × 2/3 = 500.
        assert_eq!(points(&q, two_thirds, 0, &speed()), 667);
        assert_eq!(points(&q, two_thirds, 10_000, &speed()), 500);
        let s = score(&q, &two_thirds, 0, 3, &speed(), 500);
        assert_eq!((s.streak, s.bonus), (0, 0), "partial breaks the streak");
    }

    #[test]
    fn streak_bonus_steps_and_cap() {
        let q = question(1000, 1);
        let mut streak = 0;
        let mut bonuses = vec![];
        for _ in 0..8 {
            let s = score(&q, &RIGHT, 0, streak, &speed(), 500);
            assert_eq!(s.points, 1000 + s.bonus);
            bonuses.push(s.bonus);
            streak = s.streak;
        }
        assert_eq!(bonuses, [0, 100, 200, 300, 400, 500, 500, 500]);
        assert_eq!(streak, 8);
        let wrong = score(&q, &WRONG, 0, streak, &speed(), 500);
        assert_eq!((wrong.points, wrong.streak), (0, 0));
        let off = QuizSettings {
            streak_bonus: false,
            ..speed()
        };
        let s = score(&q, &RIGHT, 0, 4, &off, 500);
        assert_eq!((s.points, s.bonus, s.streak), (1000, 0, 5));
    }

    #[test]
    fn polls_and_practice_leave_the_streak_alone() {
        let p = score(&poll(), &RIGHT, 0, 3, &speed(), 500);
        assert_eq!((p.points, p.streak), (0, 3));
        let practice = score(&question(1000, 0), &WRONG, 0, 3, &speed(), 500);
        assert_eq!((practice.points, practice.streak), (0, 3));
        let practice_right = score(&question(1000, 0), &RIGHT, 0, 3, &speed(), 500);
        assert_eq!((practice_right.points, practice_right.streak), (0, 3));
        assert_eq!(missed(&poll(), 3), 3);
        assert_eq!(missed(&question(1000, 0), 3), 3);
        assert_eq!(missed(&question(1000, 1), 3), 0);
    }
}
