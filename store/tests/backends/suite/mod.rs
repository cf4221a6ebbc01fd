//! The store suite, written once against the traits and run by every backend module through
//! [`instantiate!`]: each case gets a fresh, empty store of that backend. The cases are in
//! submodules by store; the harness and the fixtures they share are here.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use quiz_engine::{AnswerRecord, PlayerRecord, Progress};
use quiz_protocol::{
    Answer, AnswerId, AutoAdvance, Epoch, Level, Mode, Phase, PlayerNo, Question, QuestionBody,
    QuestionSet, QuizId, QuizSettings, Scoring, UserId,
};
use quiz_store::{Appended, QuizRecord, QuizTotals, StandingRow, StoreError, Stores};

mod answers;
mod leaderboard;
mod membership;
mod quizzes;
mod timings;

pub(crate) use answers::*;
pub(crate) use leaderboard::*;
pub(crate) use membership::*;
pub(crate) use quizzes::*;
pub(crate) use timings::*;

/// Moves a quiz's ownership epoch, as a failover will.
pub(crate) type BumpEpoch =
    Box<dyn Fn(QuizId, Epoch) -> BoxFuture<'static, Result<(), StoreError>> + Send + Sync>;

/// One backend under test.
pub(crate) struct Backend {
    pub(crate) name: &'static str,
    pub(crate) stores: Stores,
    pub(crate) bump_epoch: BumpEpoch,
}

/// A backend's fresh store for one case, and how to throw it away afterwards.
pub(crate) struct TestDb {
    pub(crate) backend: Backend,
    pub(crate) cleanup: BoxFuture<'static, ()>,
}

/// Defines one `#[tokio::test]` per suite case for a backend. `$open` is an async fn returning
/// `Option<TestDb>` (`None`: the backend is skipped on purpose). The store is cleaned up even
/// when the case panics.
macro_rules! instantiate {
    ($open:path) => {
        $crate::suite::instantiate!(@cases $open;
            quiz_round_trips,
            duplicate_quiz_is_a_conflict,
            progress_round_trips_and_overwrites,
            writes_to_a_missing_quiz_are_refused,
            players_round_trip_and_upsert,
            append_is_idempotent_per_key,
            batch_mixes_new_and_existing_rows,
            answers_of_quizzes_are_kept_apart,
            league_totals_sum_each_users_points_from_the_log,
            stale_epoch_writes_are_fenced_and_write_nothing,
            leaderboard_counts_each_answer_once,
            counted_follows_the_log,
            standings_break_ties_by_tiebreak_then_player,
            removed_player_stays_off_the_standings,
            live_quizzes_exclude_ended_ones,
            question_sets_put_replace_and_list,
            concurrent_appends_store_each_key_once,
            concurrent_applies_count_each_answer_once,
            fence_holds_against_a_concurrent_bump,
            save_players_upserts_a_batch_atomically,
            claim_moves_owner_and_epoch,
            writes_with_the_old_epoch_are_refused_after_a_claim,
            concurrent_claims_of_one_epoch_have_one_winner,
            leases_upsert_list_and_release,
            ring_publishes_in_epoch_order_and_reads_back,
            a_ring_that_is_not_the_next_epoch_loses,
            concurrent_ring_publishers_of_one_epoch_have_one_winner,
            release_clears_only_the_matching_owner_and_epoch,
            rebuild_equals_applying_the_log,
            rebuild_replaces_stale_standings_and_leaves_removed_players_out,
            rebuild_is_fenced,
            league_totals_count_once_and_grow_by_the_difference,
            leagues_add_up_quizzes_and_keep_weeks_apart,
            league_ties_go_to_the_smaller_user_id,
            concurrent_league_records_count_each_total_once,
            #[ignore = "a timing report: run with --ignored --nocapture"]
            append_timings,
        );
    };
    (@cases $open:path; $($(#[$attr:meta])* $case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            $(#[$attr])*
            async fn $case() {
                let Some(db) = $open().await else { return };
                let outcome = futures_util::FutureExt::catch_unwind(
                    std::panic::AssertUnwindSafe($crate::suite::$case(&db.backend)),
                )
                .await;
                db.cleanup.await;
                if let Err(panic) = outcome {
                    std::panic::resume_unwind(panic);
                }
            }
        )*
    };
}
pub(crate) use instantiate;

// ---- fixtures ----

pub(super) fn quiz_id(n: u32) -> QuizId {
    QuizId::from_random([n, 1, 2, 3, 4, 5])
}

pub(super) fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

pub(super) fn lobby(at: i64) -> Progress {
    Progress {
        phase: Phase::Lobby,
        question: None,
        opened_at: None,
        paused_ms: 0,
        paused_at: None,
        phase_at: at,
        seq: 0,
    }
}

pub(super) fn questions() -> Vec<Question> {
    vec![
        Question {
            id: "q1".into(),
            level: Level::A2,
            topic: "vocabulary".into(),
            prompt: "Pick the synonym of \"big\"".into(),
            body: QuestionBody::SingleChoice {
                options: vec!["large".into(), "small".into(), "thin".into()],
                answer: 0,
            },
            time_limit_s: 20,
            points: 1000,
            multiplier: 1,
            explanation: Some("Large means big.".into()),
        },
        Question {
            id: "q2".into(),
            level: Level::B1,
            topic: "spelling".into(),
            prompt: "Spell the word for a place to sleep when travelling: h___l".into(),
            body: QuestionBody::TypedAnswer {
                accept: vec!["hotel".into()],
                reject: vec!["hostel".into()],
                accents_matter: false,
            },
            time_limit_s: 30,
            points: 500,
            multiplier: 2,
            explanation: None,
        },
    ]
}

pub(super) fn quiz(n: u32) -> QuizRecord {
    QuizRecord {
        id: quiz_id(n),
        title: format!("Quiz {n}: café English ✓"),
        host: user("teacher-1"),
        question_set: "english-a2".into(),
        settings: QuizSettings {
            mode: Mode::Live,
            scoring: Scoring::Accuracy,
            streak_bonus: false,
            auto_advance: Some(AutoAdvance {
                reveal_after_ms: 1_500,
                next_after_ms: 4_000,
            }),
            close_when_all_answered: false,
            self_paced_window_s: 3_600,
            max_players: 300,
            top_n: 7,
        },
        questions: questions(),
        created_at: 1_700_000_000_000,
        epoch: Epoch::FIRST,
        owner: None,
        progress: lobby(1_700_000_000_000),
    }
}

pub(super) fn player(n: u32, name: &str) -> PlayerRecord {
    PlayerRecord {
        player: PlayerNo(n),
        user: user(&format!("user-{name}")),
        nickname: name.into(),
        joined_at: 1_700_000_001_000 + i64::from(n),
        kicked: false,
        current: None,
        current_opened_at: None,
    }
}

pub(super) fn answer(quiz: &QuizId, player: u32, question: u32, answer_id: &str) -> AnswerRecord {
    AnswerRecord {
        quiz: quiz.clone(),
        player: PlayerNo(player),
        question,
        answer_id: AnswerId::parse(answer_id).unwrap(),
        answer: Answer::Choice(player % 3),
        received_at: 1_700_000_002_000 + i64::from(player),
        response_ms: 1_000 + player,
        points: 900,
        correct: true,
        streak: question + 1,
    }
}

pub(super) fn scored(
    quiz: &QuizId,
    player: u32,
    question: u32,
    points: u32,
    ms: u32,
) -> AnswerRecord {
    AnswerRecord {
        points,
        response_ms: ms,
        correct: points > 0,
        ..answer(quiz, player, question, &format!("p{player}q{question}"))
    }
}

pub(super) fn row(player: u32, score: u32, tiebreak: u64) -> StandingRow {
    StandingRow {
        player: PlayerNo(player),
        score,
        tiebreak,
    }
}

pub(super) async fn created(b: &Backend, n: u32) -> QuizId {
    let q = quiz(n);
    b.stores.quizzes.create_quiz(&q).await.unwrap();
    q.id
}

pub(super) fn is_fenced(result: Result<impl std::fmt::Debug, StoreError>, held: u64, current: u64) {
    match result {
        Err(StoreError::Fenced {
            held: h,
            current: c,
        }) if h == held && c == current => {}
        other => panic!("expected Fenced {{ held: {held}, current: {current} }}, got {other:?}"),
    }
}
