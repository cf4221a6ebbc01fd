//! A phone of a chaos scenario: the client SDK's resuming connection, joined at a chosen edge,
//! and a signal for the question it is waiting for.

use std::time::Duration;

use quiz_client::{Event, Options, QuizConnection, RouterClient};
use quiz_protocol::QuizId;
use quiz_protocol::client::{Role, ServerMessage};
use tokio::sync::watch;

pub(crate) struct Phone {
    pub(crate) conn: QuizConnection,
    /// The index of the last question seen open.
    question: watch::Receiver<Option<u32>>,
}

impl Phone {
    /// Joins `quiz` as `nickname` through `router`, trying the edge `first` before the others.
    /// The SDK's default timers, as a phone in the field has them, except that it keeps trying
    /// for as long as a failover can take.
    pub(crate) async fn join(
        router: &RouterClient,
        quiz: &QuizId,
        nickname: &str,
        role: Role,
        first: &str,
    ) -> anyhow::Result<Phone> {
        let host = (role == Role::Host).then_some(Role::Host);
        let mut ticket = router.join(quiz, nickname, host).await?;
        if let Some(at) = ticket.ws_urls.iter().position(|u| u == first) {
            ticket.ws_urls.rotate_left(at);
        }
        let mut options =
            Options::default().with_refresh(router.refresher(quiz.clone(), nickname.into(), host));
        options.reconnect.max_attempts = 100;
        options.reconnect.cap = Duration::from_secs(1);
        options.answer_timeout = Duration::from_secs(60);
        options.answer_retry.max_attempts = 1000;
        let (conn, mut events) = QuizConnection::connect(ticket, options).await?;
        let (tx, question) = watch::channel(None);
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if let Event::Frame(frame) = &event {
                    let index = match frame.as_ref() {
                        ServerMessage::Question(q) => Some(q.index),
                        ServerMessage::Welcome(w) => w.question.as_ref().map(|q| q.index),
                        _ => None,
                    };
                    if index.is_some() {
                        tx.send_replace(index);
                    }
                }
            }
        });
        Ok(Phone { conn, question })
    }

    /// Waits (up to `limit`) until question `index` has been seen open.
    pub(crate) async fn question_open(&mut self, index: u32, limit: Duration) -> bool {
        tokio::time::timeout(
            limit,
            self.question.wait_for(|q| q.is_some_and(|q| q >= index)),
        )
        .await
        .is_ok_and(|r| r.is_ok())
    }
}
