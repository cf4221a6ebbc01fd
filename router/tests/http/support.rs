//! Test support: a router started in-process on 127.0.0.1:0 over real stores (SQLite in a
//! temporary file), an HTTP client, token helpers, and a question set to import.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use quiz_engine::Progress;
use quiz_protocol::QuizId;
use quiz_router::{Config, RouterHandle};
use quiz_store::{StoreConfig, Stores};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Every test runs inside this, so a hang fails instead of blocking the suite.
pub(crate) async fn within<F: Future<Output = ()>>(test: F) {
    tokio::time::timeout(Duration::from_secs(60), test)
        .await
        .expect("test timed out");
}

pub(crate) fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A running router and what a test needs to talk to it.
pub(crate) struct Harness {
    handle: Option<RouterHandle>,
    pub(crate) base: String,
    pub(crate) admin: String,
    pub(crate) http: reqwest::Client,
    pub(crate) stores: Stores,
    pub(crate) config: Config,
    _dir: Option<tempfile::TempDir>,
}

/// An HTTP response, read whole.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) body: Value,
    pub(crate) text: String,
}

impl Reply {
    /// The error code of an error body.
    pub(crate) fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("<none>")
    }

    /// Asserts the status and the error code.
    #[track_caller]
    pub(crate) fn expect_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        assert_eq!(self.code(), code, "{self:?}");
        assert!(self.body["message"].is_string(), "{self:?}");
        assert!(self.body["retryable"].is_boolean(), "{self:?}");
    }

    #[track_caller]
    pub(crate) fn expect_ok(&self, status: u16) -> &Value {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        &self.body
    }
}

impl Harness {
    pub(crate) async fn start() -> Harness {
        Harness::with(Config::for_test()).await
    }

    pub(crate) async fn with(config: Config) -> Harness {
        let (stores, dir) = test_stores().await;
        Harness::over(config, stores, dir).await
    }

    /// A router over the given stores.
    pub(crate) async fn with_stores(config: Config, stores: Stores) -> Harness {
        Harness::over(config, stores, None).await
    }

    async fn over(config: Config, stores: Stores, dir: Option<tempfile::TempDir>) -> Harness {
        let handle = quiz_router::start(
            config.clone(),
            stores.clone(),
            tokio_util::sync::CancellationToken::new(),
        )
        .await
        .expect("router starts");
        Harness {
            base: format!("http://{}", handle.http_addr()),
            admin: format!("http://{}", handle.admin_addr()),
            handle: Some(handle),
            http: reqwest::Client::new(),
            stores,
            config,
            _dir: dir,
        }
    }

    pub(crate) async fn shutdown(mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown().await;
        }
    }

    /// The claims of a valid identity token.
    pub(crate) fn claims(&self, user: &str, role: Option<&str>) -> Value {
        let mut claims = json!({
            "sub": user,
            "iss": self.config.auth.issuer,
            "aud": self.config.auth.audience,
            "iat": now_s(),
            "exp": now_s() + 600,
        });
        if let Some(role) = role {
            claims["role"] = json!(role);
        }
        claims
    }

    /// Signs claims with the configured HS256 identity-provider secret.
    pub(crate) fn sign(&self, claims: &Value) -> String {
        let secret = self
            .config
            .auth
            .hs256_secret
            .as_ref()
            .expect("an HS256 config");
        hs256(secret.as_bytes(), claims)
    }

    pub(crate) fn host(&self, user: &str) -> String {
        self.sign(&self.claims(user, Some("host")))
    }

    pub(crate) fn player(&self, user: &str) -> String {
        self.sign(&self.claims(user, Some("player")))
    }

    pub(crate) async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        read(req.send().await.expect("request sent")).await
    }

    pub(crate) async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        let mut req = self.http.post(format!("{}{path}", self.base)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        read(req.send().await.expect("request sent")).await
    }

    pub(crate) async fn put_text(&self, path: &str, token: &str, body: String) -> Reply {
        let req = self
            .http
            .put(format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body);
        read(req.send().await.expect("request sent")).await
    }

    pub(crate) async fn admin_get(&self, path: &str) -> Reply {
        let req = self.http.get(format!("{}{path}", self.admin));
        read(req.send().await.expect("request sent")).await
    }

    /// Imports [`sample_set`] as `host`, public so that every host of the test may use it,
    /// and returns its id. When another host imported it first, theirs is used.
    pub(crate) async fn import_sample(&self, host: &str) -> String {
        let set = sample_set();
        let id = set["id"].as_str().unwrap().to_owned();
        let path = format!("/v1/question-sets/{id}?visibility=public");
        let reply = self.put_text(&path, host, set.to_string()).await;
        if reply.status != 403 {
            reply.expect_ok(200);
        }
        id
    }

    /// Imports the sample set and creates a quiz from it as `host_user`; returns its code.
    pub(crate) async fn quiz_by(&self, host_user: &str) -> QuizId {
        let host = self.host(host_user);
        let set = self.import_sample(&host).await;
        let reply = self
            .post("/v1/quizzes", Some(&host), &json!({"question_set": set}))
            .await;
        let body = reply.expect_ok(201);
        QuizId::parse(body["quiz_id"].as_str().unwrap()).unwrap()
    }

    /// Moves a quiz to the ended phase, as its owner would.
    pub(crate) async fn end_quiz(&self, id: &QuizId) {
        let record = self.stores.quizzes.quiz(id).await.unwrap().unwrap();
        let progress = Progress {
            phase: quiz_protocol::Phase::Ended,
            phase_at: record.progress.phase_at + 1,
            seq: record.progress.seq + 1,
            ..record.progress
        };
        self.stores
            .quizzes
            .save_progress(id, record.epoch, &progress)
            .await
            .unwrap();
    }
}

pub(crate) fn hs256(secret: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

async fn read(response: reqwest::Response) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body read");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        body,
        text,
    }
}

/// A valid question set of three questions.
pub(crate) fn sample_set() -> Value {
    json!({
        "id": "english-a1",
        "title": "English A1",
        "questions": [
            {"id": "q1", "level": "A1", "topic": "vocabulary", "prompt": "A cat is an ___",
             "kind": "single_choice", "options": ["animal", "fruit"], "answer": 0},
            {"id": "q2", "level": "A1", "topic": "grammar", "prompt": "She ___ to school.",
             "kind": "typed_answer", "accept": ["goes"]},
            {"id": "q3", "level": "A2", "topic": "vocabulary", "prompt": "Big means large.",
             "kind": "true_false", "answer": true}
        ]
    })
}

/// The stores the router under test uses: SQLite in a temporary directory.
pub(crate) async fn test_stores() -> (Stores, Option<tempfile::TempDir>) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("quiz.db").display());
    let config = StoreConfig {
        pool_size: 4,
        ..StoreConfig::sql(url)
    };
    let stores = Stores::open(&config).await.expect("SQLite store opens");
    (stores, Some(dir))
}

/// Real stores in an in-memory SQLite database, gone when the last handle is dropped: for
/// tests that wrap the stores or never get as far as using them.
pub(crate) async fn memory_stores() -> Stores {
    Stores::open(&StoreConfig::sql("sqlite::memory:"))
        .await
        .expect("in-memory SQLite store opens")
}
