//! A phone of a chaos run: the client SDK's resuming connection, joined at the edges a
//! scenario chooses, and what it has seen so far (its `QuizView`).

use std::time::Duration;

use quiz_client::{Event, Options, QuizConnection, QuizView, RouterClient};
use quiz_protocol::QuizId;
use quiz_protocol::client::Role;
use tokio::sync::watch;

pub(crate) struct Phone {
    pub(crate) name: String,
    pub(crate) conn: QuizConnection,
    pub(crate) view: watch::Receiver<QuizView>,
}

impl Phone {
    /// Joins `quiz` as `name` through `router`; `urls` may reorder or replace the edges of the
    /// ticket (the one to try first, or proxies in front of them). The SDK's default timers,
    /// as a phone in the field has them, except that it keeps trying for as long as a fault
    /// can last.
    pub(crate) async fn join(
        router: &RouterClient,
        quiz: &QuizId,
        name: &str,
        role: Role,
        urls: impl FnOnce(&mut Vec<String>),
    ) -> anyhow::Result<Phone> {
        let host = (role == Role::Host).then_some(Role::Host);
        let mut ticket = router.join(quiz, name, host).await?;
        urls(&mut ticket.ws_urls);
        let mut options =
            Options::default().with_refresh(router.refresher(quiz.clone(), name.into(), host));
        options.reconnect.max_attempts = 200;
        options.reconnect.cap = Duration::from_secs(1);
        options.answer_timeout = Duration::from_secs(60);
        options.answer_retry.max_attempts = 1000;
        let (conn, mut events) = QuizConnection::connect(ticket, options).await?;
        let (tx, view) = watch::channel(QuizView::default());
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                tx.send_modify(|v| v.apply_event(&event));
                if matches!(event, Event::Closed { .. }) {
                    break;
                }
            }
        });
        Ok(Phone {
            name: name.into(),
            conn,
            view,
        })
    }

    /// Pupil `i`: signs in at `router` as `user` (dev tokens) and joins as `Pupil {i}`.
    pub(crate) async fn pupil(
        router: &str,
        user: &str,
        quiz: &QuizId,
        i: usize,
        urls: impl FnOnce(&mut Vec<String>),
    ) -> anyhow::Result<Phone> {
        let client = RouterClient::dev(router, user, Role::Player).await?;
        Phone::join(&client, quiz, &format!("Pupil {i}"), Role::Player, urls).await
    }

    /// Waits up to `limit` for the view to satisfy `check`.
    pub(crate) async fn until(
        &mut self,
        limit: Duration,
        check: impl FnMut(&QuizView) -> bool,
    ) -> bool {
        tokio::time::timeout(limit, self.view.wait_for(check))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// The index of the question the view shows, if any.
pub(crate) fn question_index(view: &QuizView) -> Option<u32> {
    view.question.as_ref().map(|q| q.index)
}

/// Moves `first` to the front of `urls`, if it is there.
pub(crate) fn first(first: &str) -> impl FnOnce(&mut Vec<String>) + '_ {
    move |urls| {
        if let Some(at) = urls.iter().position(|u| u == first) {
            urls.rotate_left(at);
        }
    }
}
