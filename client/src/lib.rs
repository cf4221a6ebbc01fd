//! The Rust client SDK of the quiz cluster, used by `quizctl`, the load generator, the chaos
//! tests and the integration tests.
//!
//! - [`RouterClient`] (`router.rs`): the router's HTTP API — dev tokens, question sets,
//!   quizzes, join, status, standings — with typed requests and replies and one error type.
//! - [`QuizConnection`] and [`EventStream`] (`connection/`): one phone's WebSocket session.
//!   It resumes after drops with the last `seq`, re-sends unacknowledged answers with the
//!   same `answer_id`, retries retryable errors, and refreshes an expired session token.
//!   Two tasks and a few KiB per phone, every queue bounded.
//! - [`QuizView`] (`view.rs`): the quiz as a phone shows it, folded from events.
//! - [`Backoff`] (`backoff.rs`): exponential backoff with full jitter, pure.
//! - [`RawSocket`] (`raw.rs`): a bare socket for protocol-violation tests.
//!
//! Typical use:
//!
//! ```no_run
//! # async fn play() -> Result<(), Box<dyn std::error::Error>> {
//! use quiz_client::{Event, Options, QuizConnection, QuizView, RouterClient};
//! use quiz_protocol::{Answer, QuizId, client::{Role, ServerMessage}};
//!
//! let base = "http://127.0.0.1:8080";
//! let token = RouterClient::dev_token(base, "ana", Role::Player).await?;
//! let router = RouterClient::new(base, token);
//! let quiz = QuizId::parse("K7M3QX")?;
//! let ticket = router.join(&quiz, "Ana", None).await?;
//! let options = Options::default().with_refresh(router.refresher(quiz, "Ana".into(), None));
//! let (conn, mut events) = QuizConnection::connect(ticket, options).await?;
//! let mut view = QuizView::new();
//! while let Some(event) = events.recv().await {
//!     view.apply_event(&event);
//!     if let Event::Frame(msg) = &event {
//!         if let ServerMessage::Question(q) = msg.as_ref() {
//!             let ack = conn.answer(q.index, Answer::Choice(0)).await?;
//!             println!("{} points, rank {}", ack.points, ack.rank);
//!         }
//!     }
//! }
//! # Ok(()) }
//! ```

mod backoff;
pub mod connection;
mod handshake;
mod options;
pub mod raw;
pub mod router;
pub mod tls;
mod view;

pub use backoff::Backoff;
pub use connection::{
    AnswerError, CloseReason, ConnectError, Event, EventStream, QuizConnection, RequestError,
    new_answer_id,
};
pub use handshake::HandshakeError;
pub use options::{Options, Refresh, RefreshFuture};
pub use raw::{RawError, RawFrame, RawSocket, WebSocketStream, open_websocket};
pub use router::{
    ApiError, ClientError, CreateQuiz, CreatedQuiz, DevToken, DevTokenRequest, JoinRequest,
    JoinTicket, QuizStatus, RouterClient, Standing, Standings, StoredQuestionSet,
};
pub use view::QuizView;
