//! The weekly and all-time leagues.

use quiz_protocol::UserId;

use crate::support::{Harness, within};

#[tokio::test]
async fn leagues_list_users_best_first() {
    within(async {
        let h = Harness::start().await;
        let quiz = h.quiz_by("teacher").await;
        let other = h.quiz_by("teacher").await;
        let user = |u: &str| UserId::parse(u).unwrap();
        let lb = &h.stores.leaderboards;
        lb.record_league(&quiz, "2026-W48", &[(user("ana"), 900), (user("bo"), 1200)])
            .await
            .unwrap();
        lb.record_league(&other, "2026-W49", &[(user("ana"), 700)])
            .await
            .unwrap();
        let token = h.player("cy");

        let week = h.get("/v1/leagues/weekly/2026-W48", Some(&token)).await;
        let body = week.expect_ok(200);
        assert_eq!(body["league"], "week 2026-W48");
        assert_eq!(body["standings"][0]["user"], "bo");
        assert_eq!(body["standings"][0]["rank"], 1);
        assert_eq!(body["standings"][1]["user"], "ana");
        assert_eq!(body["standings"][1]["points"], 900);

        let all = h.get("/v1/leagues/all-time?limit=1", Some(&token)).await;
        let body = all.expect_ok(200);
        assert_eq!(body["standings"].as_array().unwrap().len(), 1);
        assert_eq!(
            body["standings"][0]["user"], "ana",
            "900 + 700 over two quizzes"
        );
        assert_eq!(body["standings"][0]["points"], 1600);
        h.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_bad_week_or_limit_is_a_bad_request_and_a_token_is_needed() {
    within(async {
        let h = Harness::start().await;
        let token = h.player("cy");
        h.get("/v1/leagues/weekly/2026-W99", Some(&token))
            .await
            .expect_error(400, "bad_request");
        h.get("/v1/leagues/all-time?limit=0", Some(&token))
            .await
            .expect_error(400, "bad_request");
        h.get("/v1/leagues/all-time", None)
            .await
            .expect_error(401, "unauthorized");
        h.shutdown().await;
    })
    .await;
}
