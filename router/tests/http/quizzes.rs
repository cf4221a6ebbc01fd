//! Creating quizzes, reading them, and the standings of an ended quiz.

use quiz_engine::{AnswerRecord, PlayerRecord};
use quiz_protocol::{Answer, AnswerId, Epoch, PlayerNo, QuizId, UserId};
use quiz_router::Config;
use serde_json::json;

use crate::support::{Harness, within};

#[tokio::test]
async fn create_a_quiz_with_defaults() {
    within(async {
        let h = Harness::start().await;
        let host = h.host("teacher");
        let set = h.import_sample(&host).await;
        let reply = h
            .post("/v1/quizzes", Some(&host), &json!({"question_set": set}))
            .await;
        let body = reply.expect_ok(201).clone();
        let code = body["quiz_id"].as_str().unwrap();
        let id = QuizId::parse(code).unwrap();
        assert_eq!(id.as_str(), code, "codes are handed out in canonical form");
        assert_eq!(body["title"], "English A1");
        assert_eq!(body["question_count"], 3);
        assert_eq!(body["settings"]["mode"], "live");
        assert_eq!(body["settings"]["max_players"], 50_000);

        let record = h.stores.quizzes.quiz(&id).await.unwrap().unwrap();
        assert_eq!(record.host.as_str(), "teacher");
        assert_eq!(record.epoch, Epoch::FIRST);
        assert_eq!(record.progress.phase, quiz_protocol::Phase::Lobby);
        assert_eq!(record.progress.seq, 0);
        assert_eq!(record.question_set, "english-a1");

        // Each quiz gets its own code.
        let again = h
            .post("/v1/quizzes", Some(&host), &json!({"question_set": set}))
            .await;
        assert_ne!(again.expect_ok(201)["quiz_id"], body["quiz_id"]);
        h.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn create_with_a_title_chosen_questions_and_settings() {
    within(async {
        let h = Harness::start().await;
        let host = h.host("teacher");
        let set = h.import_sample(&host).await;
        let request = json!({
            "question_set": set,
            "title": "  Friday quiz ",
            "questions": ["q3", "q1"],
            "settings": {"mode": "self_paced", "scoring": "accuracy", "top_n": 10}
        });
        let reply = h.post("/v1/quizzes", Some(&host), &request).await;
        let body = reply.expect_ok(201);
        assert_eq!(body["title"], "Friday quiz");
        assert_eq!(body["question_count"], 2);
        assert_eq!(body["settings"]["mode"], "self_paced");
        assert_eq!(body["settings"]["top_n"], 10);
        let id = QuizId::parse(body["quiz_id"].as_str().unwrap()).unwrap();
        let record = h.stores.quizzes.quiz(&id).await.unwrap().unwrap();
        let order: Vec<&str> = record.questions.iter().map(|q| q.id.as_str()).collect();
        assert_eq!(order, ["q3", "q1"]);

        let reply = h
            .post(
                "/v1/quizzes",
                Some(&host),
                &json!({"question_set": set, "count": 2}),
            )
            .await;
        assert_eq!(reply.expect_ok(201)["question_count"], 2);
        h.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn invalid_quiz_requests_are_422_with_paths() {
    within(async {
        let h = Harness::start().await;
        let host = h.host("teacher");
        let set = h.import_sample(&host).await;
        let paths = |reply: &crate::support::Reply| -> Vec<String> {
            reply.body["errors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["path"].as_str().unwrap().to_owned())
                .collect()
        };

        let reply = h
            .post(
                "/v1/quizzes",
                Some(&host),
                &json!({"question_set": set, "settings": {"max_players": 0, "top_n": 50}}),
            )
            .await;
        reply.expect_error(422, "invalid_content");
        assert_eq!(paths(&reply), ["settings.max_players", "settings.top_n"]);

        let reply = h
            .post(
                "/v1/quizzes",
                Some(&host),
                &json!({"question_set": set, "questions": ["q1", "nope", "q1"]}),
            )
            .await;
        reply.expect_error(422, "invalid_content");
        assert_eq!(paths(&reply), ["questions[1]", "questions[2]"]);

        for bad in [
            json!({"question_set": set, "count": 0}),
            json!({"question_set": set, "count": 4}),
            json!({"question_set": set, "count": 1, "questions": ["q1"]}),
            json!({"question_set": set, "questions": []}),
            json!({"question_set": set, "title": "   "}),
        ] {
            let reply = h.post("/v1/quizzes", Some(&host), &bad).await;
            reply.expect_error(422, "invalid_content");
        }

        // Unknown settings fields are a malformed body.
        let reply = h
            .post(
                "/v1/quizzes",
                Some(&host),
                &json!({"question_set": set, "settings": {"speed": 3}}),
            )
            .await;
        reply.expect_error(400, "bad_request");

        h.post(
            "/v1/quizzes",
            Some(&host),
            &json!({"question_set": "missing"}),
        )
        .await
        .expect_error(404, "not_found");
        h.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn quiz_creation_is_rate_limited_per_user() {
    within(async {
        let mut config = Config::for_test();
        config.limits.quiz_creations_per_user_per_minute = 1;
        config.limits.quiz_creation_burst = 2;
        let h = Harness::with(config).await;
        let host = h.host("teacher");
        let set = h.import_sample(&host).await;
        let body = json!({"question_set": set});
        h.post("/v1/quizzes", Some(&host), &body)
            .await
            .expect_ok(201);
        h.post("/v1/quizzes", Some(&host), &body)
            .await
            .expect_ok(201);
        let reply = h.post("/v1/quizzes", Some(&host), &body).await;
        reply.expect_error(429, "rate_limited");
        assert!(reply.body["retryable"].as_bool().unwrap());
        let retry: u64 = reply.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
        // Another host is not affected.
        let other = h.host("other-teacher");
        h.post("/v1/quizzes", Some(&other), &body)
            .await
            .expect_ok(201);
        h.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn read_a_quiz() {
    within(async {
        let h = Harness::start().await;
        let id = h.quiz_by("teacher").await;
        let player = h.player("pat");
        let reply = h.get(&format!("/v1/quizzes/{id}"), Some(&player)).await;
        let body = reply.expect_ok(200);
        assert_eq!(body["quiz_id"], id.as_str());
        assert_eq!(body["title"], "English A1");
        assert_eq!(body["mode"], "live");
        assert_eq!(body["phase"], "lobby");
        assert_eq!(body["question_count"], 3);
        assert_eq!(body["players"], 0);
        assert!(body["created_at"].as_i64().unwrap() > 1_600_000_000_000);

        seed_player(&h, &id, 1, "Ann", false).await;
        seed_player(&h, &id, 2, "Bob", true).await;
        let reply = h.get(&format!("/v1/quizzes/{id}"), Some(&player)).await;
        assert_eq!(
            reply.expect_ok(200)["players"],
            1,
            "kicked players are not counted"
        );

        // Codes are read as typed.
        let typed = id.as_str().to_lowercase();
        let typed = format!("{}-{}", &typed[..3], &typed[3..]);
        h.get(&format!("/v1/quizzes/{typed}"), Some(&player))
            .await
            .expect_ok(200);
        h.get("/v1/quizzes/AAAAAA", Some(&player))
            .await
            .expect_error(404, "unknown_quiz");
        h.get("/v1/quizzes/A0", Some(&player))
            .await
            .expect_error(400, "bad_request");
        h.get(&format!("/v1/quizzes/{id}"), None)
            .await
            .expect_error(401, "unauthorized");
        h.shutdown().await;
    })
    .await;
}

async fn seed_player(h: &Harness, quiz: &QuizId, no: u32, nick: &str, kicked: bool) {
    let record = PlayerRecord {
        player: PlayerNo(no),
        user: UserId::parse(&format!("user-{no}")).unwrap(),
        nickname: nick.into(),
        joined_at: 1,
        kicked,
        current: None,
        current_opened_at: None,
    };
    h.stores
        .quizzes
        .save_player(quiz, Epoch::FIRST, &record)
        .await
        .unwrap();
}

/// Records a graded answer as the owner would: in the log, then on the leaderboard.
async fn seed_answer(h: &Harness, quiz: &QuizId, no: u32, question: u32, points: u32, ms: u32) {
    let record = AnswerRecord {
        quiz: quiz.clone(),
        player: PlayerNo(no),
        question,
        answer_id: AnswerId::parse(&format!("a-{no}-{question}")).unwrap(),
        answer: Answer::Choice(0),
        received_at: 1_000 + i64::from(ms),
        response_ms: ms,
        points,
        correct: points > 0,
        streak: u32::from(points > 0),
    };
    let records = [record];
    h.stores
        .answers
        .append(Epoch::FIRST, &records)
        .await
        .unwrap();
    h.stores
        .leaderboards
        .apply(Epoch::FIRST, &records)
        .await
        .unwrap();
}

#[tokio::test]
async fn standings_of_an_ended_quiz() {
    within(async {
        let h = Harness::start().await;
        let id = h.quiz_by("teacher").await;
        let token = h.player("pat");
        for (no, nick) in [(1, "Ann"), (2, "Bob"), (3, "Cy"), (4, "Dee"), (5, "Eve")] {
            seed_player(&h, &id, no, nick, false).await;
        }
        // Bob: 1900; Cy and Ann tie on 900, Cy faster; Dee answered but scored nothing; Eve
        // never answered.
        seed_answer(&h, &id, 2, 0, 1000, 400).await;
        seed_answer(&h, &id, 2, 1, 900, 2000).await;
        seed_answer(&h, &id, 1, 0, 900, 3000).await;
        seed_answer(&h, &id, 3, 0, 900, 2500).await;
        seed_answer(&h, &id, 4, 0, 0, 1000).await;

        let path = format!("/v1/quizzes/{id}/standings");
        h.get(&path, Some(&token))
            .await
            .expect_error(409, "conflict");

        h.end_quiz(&id).await;
        let reply = h.get(&path, Some(&token)).await;
        let body = reply.expect_ok(200);
        assert_eq!(body["quiz_id"], id.as_str());
        assert_eq!(body["players"], 5);
        let rows: Vec<(u64, &str, u64)> = body["standings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["rank"].as_u64().unwrap(),
                    r["nickname"].as_str().unwrap(),
                    r["score"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                (1, "Bob", 1900),
                (2, "Cy", 900),
                (3, "Ann", 900),
                (4, "Dee", 0),
                (5, "Eve", 0)
            ]
        );

        let top2 = h.get(&format!("{path}?limit=2"), Some(&token)).await;
        let names: Vec<&str> = top2.expect_ok(200)["standings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["nickname"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Bob", "Cy"]);

        for bad in ["0", "1001", "many"] {
            h.get(&format!("{path}?limit={bad}"), Some(&token))
                .await
                .expect_error(400, "bad_request");
        }
        h.get("/v1/quizzes/AAAAAA/standings", Some(&token))
            .await
            .expect_error(404, "unknown_quiz");
        h.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn kicked_players_never_appear_in_standings() {
    within(async {
        let h = Harness::start().await;
        let id = h.quiz_by("teacher").await;
        seed_player(&h, &id, 1, "Ann", false).await;
        seed_player(&h, &id, 2, "Rude", true).await;
        seed_player(&h, &id, 3, "Cy", false).await;
        seed_answer(&h, &id, 2, 0, 1000, 100).await;
        seed_answer(&h, &id, 3, 0, 500, 100).await;
        h.end_quiz(&id).await;
        let reply = h
            .get(&format!("/v1/quizzes/{id}/standings"), Some(&h.player("x")))
            .await;
        let body = reply.expect_ok(200);
        assert_eq!(body["players"], 2);
        let names: Vec<&str> = body["standings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["nickname"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Cy", "Ann"]);
        h.shutdown().await;
    })
    .await;
}
