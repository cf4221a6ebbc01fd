//! The bookkeeping of one connection, without I/O: the highest `seq` seen, answers awaiting
//! an ack, host and `next` requests awaiting a reply, and which socket generation each
//! answer was last written to.
//!
//! The session task feeds it every decoded frame ([`State::on_frame`]) and every socket
//! change; the writer task asks it what to (re)send; callers of `answer`/`host`/`next`
//! register here and wait on a oneshot. It lives behind a `std::sync::Mutex` that is only
//! held for these short calls, never across an `.await`.

use bytes::Bytes;
use quiz_protocol::client::{
    Ack, AnswerFrame, ClientMessage, ErrorFrame, HostOk, QuestionFrame, ServerMessage,
};
use quiz_protocol::{Answer, AnswerId};
use tokio::sync::oneshot;

use super::{CloseReason, RequestError};

/// The connection's state; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// Highest `seq` seen: sent as `last_seq` when rejoining.
    pub(crate) last_seq: Option<u64>,
    /// Generation of the newest socket (1 for the first); frames tagged with an older one
    /// are not written.
    pub(crate) generation: u64,
    /// The newest socket's `join` has been answered: requests may be sent on it.
    pub(crate) joined: bool,
    /// `leave()` was called: the next end of the socket is final.
    pub(crate) leaving: bool,
    /// Set once the session has ended for good.
    pub(crate) closed: Option<CloseReason>,
    answers: Vec<PendingAnswer>,
    requests: Vec<PendingRequest>,
    next_local: u64,
}

/// An answer awaiting its ack or a definite rejection.
#[derive(Debug)]
struct PendingAnswer {
    local: u64,
    id: AnswerId,
    /// The encoded `answer` frame, re-sent as is (same `answer_id`) after a reconnect.
    frame: Bytes,
    /// Generation of the socket it was last written to (0: none).
    sent_gen: u64,
    /// Not to be (re)sent now: backing off after a retryable error, or already answered.
    held: bool,
    waiter: Option<oneshot::Sender<AnswerReply>>,
    /// A reply that came while no one was waiting (between two attempts).
    parked: Option<AnswerReply>,
}

/// What the server said about an answer.
#[derive(Clone, PartialEq, Debug)]
pub(crate) enum AnswerReply {
    Ack(Ack),
    Error(ErrorFrame),
}

/// Who waits for a request's reply, and for what.
#[derive(Debug)]
pub(crate) enum Waiter {
    Host(oneshot::Sender<Result<HostOk, RequestError>>),
    Next(oneshot::Sender<Result<QuestionFrame, RequestError>>),
}

impl Waiter {
    fn fail(self, err: RequestError) {
        // A caller that gave up (timeout, cancelled) has dropped its receiver: nothing to do.
        let _ = match self {
            Waiter::Host(tx) => tx.send(Err(err)).map_err(drop),
            Waiter::Next(tx) => tx.send(Err(err)).map_err(drop),
        };
    }
}

#[derive(Debug)]
struct PendingRequest {
    local: u64,
    reference: String,
    waiter: Waiter,
}

/// What the session should do with a frame after [`State::on_frame`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct FrameVerdict {
    /// Give it to the application (false for a replayed event seen before).
    pub(crate) deliver: bool,
    /// It answered this socket's `join` (welcome or resumed).
    pub(crate) joined_now: bool,
}

/// An answer registered by [`State::register_answer`].
pub(crate) struct Registered {
    pub(crate) local: u64,
    pub(crate) reply: oneshot::Receiver<AnswerReply>,
}

impl State {
    /// The `join` frame for a new socket, resuming from the highest `seq` seen.
    pub(crate) fn join_frame(&self) -> Bytes {
        encode(&ClientMessage::Join {
            last_seq: self.last_seq,
        })
    }

    /// Starts a new socket generation and returns it.
    pub(crate) fn attach(&mut self) -> u64 {
        self.generation += 1;
        self.joined = false;
        self.generation
    }

    /// The socket dropped: requests in flight have an unknown outcome (host commands are
    /// not idempotent, so they are not re-sent). Answers stay pending and are re-sent.
    pub(crate) fn on_disconnect(&mut self) {
        self.joined = false;
        for r in self.requests.drain(..) {
            r.waiter.fail(RequestError::Disconnected);
        }
    }

    /// The session ended for good: every waiter learns why.
    pub(crate) fn on_close(&mut self, reason: CloseReason) {
        self.joined = false;
        self.closed = Some(reason.clone());
        for r in self.requests.drain(..) {
            r.waiter.fail(RequestError::Closed(reason.clone()));
        }
        // Dropping the senders wakes the callers, who read `closed`.
        self.answers.clear();
    }

    pub(crate) fn register_answer(
        &mut self,
        question: u32,
        id: AnswerId,
        answer: &Answer,
    ) -> Result<Registered, CloseReason> {
        if let Some(reason) = &self.closed {
            return Err(reason.clone());
        }
        let frame = encode(&ClientMessage::Answer(AnswerFrame::new(
            question,
            id.clone(),
            answer,
        )));
        let local = self.next_local();
        let (tx, rx) = oneshot::channel();
        self.answers.push(PendingAnswer {
            local,
            id,
            frame,
            sent_gen: 0,
            held: false,
            waiter: Some(tx),
            parked: None,
        });
        Ok(Registered { local, reply: rx })
    }

    /// A new receiver for the answer's next reply; `held` keeps it from being re-sent
    /// meanwhile. A reply parked while no one waited is delivered at once.
    pub(crate) fn rearm_answer(
        &mut self,
        local: u64,
        held: bool,
    ) -> Option<oneshot::Receiver<AnswerReply>> {
        let a = self.answers.iter_mut().find(|a| a.local == local)?;
        let (tx, rx) = oneshot::channel();
        a.held = held;
        match a.parked.take() {
            Some(reply) => {
                let _ = tx.send(reply);
            }
            None => a.waiter = Some(tx),
        }
        Some(rx)
    }

    /// The backoff after a retryable error is over: send the answer again on the live socket.
    pub(crate) fn release_answer(&mut self, local: u64) {
        if let Some(a) = self.answers.iter_mut().find(|a| a.local == local) {
            a.held = false;
            a.sent_gen = 0;
        }
    }

    pub(crate) fn remove_answer(&mut self, local: u64) {
        self.answers.retain(|a| a.local != local);
    }

    /// The frame to write for answer `local` on socket `generation`, unless it is held,
    /// gone, or already written to that socket.
    pub(crate) fn answer_to_send(&mut self, local: u64, generation: u64) -> Option<Bytes> {
        let a = self.answers.iter_mut().find(|a| a.local == local)?;
        if a.held || a.sent_gen == generation {
            return None;
        }
        a.sent_gen = generation;
        Some(a.frame.clone())
    }

    /// Every answer still awaiting a reply, to re-send on a new socket (same `answer_id`).
    pub(crate) fn answers_to_resend(&mut self, generation: u64) -> Vec<Bytes> {
        self.answers
            .iter_mut()
            .filter(|a| !a.held && a.sent_gen != generation)
            .map(|a| {
                a.sent_gen = generation;
                a.frame.clone()
            })
            .collect()
    }

    /// Registers a request whose frame `build` makes from a fresh `ref`. Only on a joined
    /// socket: a request written to a socket that is being replaced would have an unknown
    /// outcome from the start.
    pub(crate) fn register_request(
        &mut self,
        waiter: Waiter,
        build: impl FnOnce(String) -> ClientMessage,
    ) -> Result<(u64, u64, Bytes), RequestError> {
        if let Some(reason) = &self.closed {
            return Err(RequestError::Closed(reason.clone()));
        }
        if !self.joined {
            return Err(RequestError::NotConnected);
        }
        let local = self.next_local();
        let reference = format!("r{local}");
        let frame = encode(&build(reference.clone()));
        self.requests.push(PendingRequest {
            local,
            reference,
            waiter,
        });
        Ok((self.generation, local, frame))
    }

    pub(crate) fn remove_request(&mut self, local: u64) {
        self.requests.retain(|r| r.local != local);
    }

    /// Applies a frame from the server.
    pub(crate) fn on_frame(&mut self, msg: &ServerMessage) -> FrameVerdict {
        let mut verdict = FrameVerdict {
            deliver: true,
            joined_now: false,
        };
        match msg {
            ServerMessage::Welcome(w) => {
                // A snapshot replaces everything, including where to resume from.
                self.last_seq = Some(w.seq);
                verdict.joined_now = !self.joined;
                self.joined = true;
            }
            // `seq()` of `resumed` is its `to_seq`; the replayed events that follow carry
            // their own, so it must not move `last_seq` past them.
            ServerMessage::Resumed(_) => {
                verdict.joined_now = !self.joined;
                self.joined = true;
            }
            _ => {
                if let Some(seq) = msg.seq() {
                    if self.last_seq.is_some_and(|last| seq <= last) {
                        verdict.deliver = false;
                        return verdict;
                    }
                    self.last_seq = Some(seq);
                }
            }
        }
        match msg {
            ServerMessage::Ack(ack) => {
                self.answer_replied(&ack.answer_id, AnswerReply::Ack(ack.clone()))
            }
            ServerMessage::Error(e) => match &e.answer_id {
                Some(id) => self.answer_replied(id, AnswerReply::Error(e.clone())),
                None => {
                    if let Some(r) = self.take_request(e.reference.as_deref(), |_| true) {
                        r.waiter.fail(RequestError::Rejected(e.clone()));
                    }
                }
            },
            ServerMessage::HostOk(ok) => {
                let host = |w: &Waiter| matches!(w, Waiter::Host(_));
                if let Some(r) = self.take_request(ok.reference.as_deref(), host)
                    && let Waiter::Host(tx) = r.waiter
                {
                    let _ = tx.send(Ok(ok.clone()));
                }
            }
            // A question without `seq` is a self-paced reply to `next` (which has no `ref`).
            ServerMessage::Question(q) if q.seq.is_none() => {
                let next = |w: &Waiter| matches!(w, Waiter::Next(_));
                if let Some(r) = self.take_request(None, next)
                    && let Waiter::Next(tx) = r.waiter
                {
                    let _ = tx.send(Ok(q.clone()));
                }
            }
            _ => {}
        }
        verdict
    }

    /// Delivers a reply to every pending answer with this id (two callers may have sent
    /// the same id; the server gives both the same ack).
    fn answer_replied(&mut self, id: &AnswerId, reply: AnswerReply) {
        let retryable = matches!(&reply, AnswerReply::Error(e) if e.retryable);
        for a in self.answers.iter_mut().filter(|a| &a.id == id) {
            if !retryable {
                // Settled: never re-send it, even if the caller has not removed it yet.
                a.held = true;
            }
            match a.waiter.take() {
                Some(tx) => {
                    let _ = tx.send(reply.clone());
                }
                // A retryable error with no one waiting is superseded by the next attempt.
                None if !retryable => a.parked = Some(reply.clone()),
                None => {}
            }
        }
    }

    /// Takes the request a reply is for: the one with `reference`, or else (a server that
    /// does not echo `ref`) the oldest that `fits`, since a socket's replies come in order.
    fn take_request(
        &mut self,
        reference: Option<&str>,
        fits: impl Fn(&Waiter) -> bool,
    ) -> Option<PendingRequest> {
        let i = match reference {
            Some(r) => self.requests.iter().position(|p| p.reference == r)?,
            None => self.requests.iter().position(|p| fits(&p.waiter))?,
        };
        Some(self.requests.remove(i))
    }

    fn next_local(&mut self) -> u64 {
        self.next_local += 1;
        self.next_local
    }
}

/// Encodes a client frame.
pub(crate) fn encode(msg: &ClientMessage) -> Bytes {
    // Client frames are plain structs with string keys: serialising cannot fail.
    Bytes::from(serde_json::to_vec(msg).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiz_protocol::ErrorCode;
    use quiz_protocol::HostCommand;
    use quiz_protocol::Phase;
    use quiz_protocol::client::{Closed, Resumed, Role, You};

    fn id(s: &str) -> AnswerId {
        AnswerId::parse(s).unwrap()
    }

    fn ack(answer: &str) -> ServerMessage {
        ServerMessage::Ack(Ack {
            answer_id: id(answer),
            question: 0,
            points: 900,
            total: 900,
            rank: 1,
            streak: 1,
        })
    }

    fn error(answer: Option<&str>, code: ErrorCode) -> ServerMessage {
        let mut e = ErrorFrame::new(code, "x");
        e.answer_id = answer.map(id);
        ServerMessage::Error(e)
    }

    fn closed(seq: u64) -> ServerMessage {
        ServerMessage::Closed(Closed { seq, index: 0 })
    }

    fn resumed() -> ServerMessage {
        ServerMessage::Resumed(Resumed {
            from_seq: 4,
            to_seq: 9,
            you: You {
                role: Role::Player,
                nickname: "Ana".into(),
                score: 0,
                rank: 0,
            },
        })
    }

    #[test]
    fn replayed_events_are_delivered_once() {
        let mut s = State::default();
        s.attach();
        assert!(s.on_frame(&resumed()).joined_now);
        assert!(s.on_frame(&closed(4)).deliver);
        assert!(s.on_frame(&closed(5)).deliver);
        assert!(!s.on_frame(&closed(5)).deliver);
        assert!(!s.on_frame(&closed(3)).deliver);
        assert_eq!(s.last_seq, Some(5));
        assert_eq!(&s.join_frame()[..], br#"{"type":"join","last_seq":5}"#);
        // Frames without seq are never filtered.
        assert!(s.on_frame(&ack("a")).deliver);
        assert!(s.on_frame(&ack("a")).deliver);
    }

    #[test]
    fn an_ack_resolves_every_caller_of_that_id() {
        let mut s = State::default();
        let mut one = s.register_answer(0, id("a"), &Answer::Choice(1)).unwrap();
        let mut two = s.register_answer(0, id("a"), &Answer::Choice(1)).unwrap();
        let mut other = s.register_answer(1, id("b"), &Answer::Choice(1)).unwrap();
        s.on_frame(&ack("a"));
        assert!(matches!(one.reply.try_recv(), Ok(AnswerReply::Ack(_))));
        assert!(matches!(two.reply.try_recv(), Ok(AnswerReply::Ack(_))));
        assert!(other.reply.try_recv().is_err());
        // Settled answers are not re-sent on a new socket; the other one is.
        let g = s.attach();
        let frames = s.answers_to_resend(g);
        assert_eq!(frames.len(), 1);
        assert!(
            std::str::from_utf8(&frames[0])
                .unwrap()
                .contains(r#""answer_id":"b""#)
        );
        assert_eq!(s.answers_to_resend(g).len(), 0, "written once per socket");
        assert!(s.answer_to_send(other.local, g).is_none());
    }

    #[test]
    fn a_reply_between_attempts_is_parked_not_lost() {
        let mut s = State::default();
        let mut r = s.register_answer(0, id("a"), &Answer::Bool(true)).unwrap();
        s.on_frame(&error(Some("a"), ErrorCode::Unavailable));
        assert!(matches!(r.reply.try_recv(), Ok(AnswerReply::Error(e)) if e.retryable));
        // The ack of an earlier copy lands before the caller re-arms.
        s.on_frame(&ack("a"));
        let mut again = s.rearm_answer(r.local, true).unwrap();
        assert!(matches!(again.try_recv(), Ok(AnswerReply::Ack(_))));
    }

    #[test]
    fn held_answers_wait_for_release() {
        let mut s = State::default();
        let g = s.attach();
        let r = s.register_answer(0, id("a"), &Answer::Choice(0)).unwrap();
        assert!(s.answer_to_send(r.local, g).is_some());
        assert!(s.answer_to_send(r.local, g).is_none());
        let _rx = s.rearm_answer(r.local, true).unwrap();
        assert!(s.answers_to_resend(s.generation + 1).is_empty());
        s.release_answer(r.local);
        assert!(s.answer_to_send(r.local, g).is_some());
    }

    #[test]
    fn requests_need_a_joined_socket_and_fail_on_disconnect() {
        let mut s = State::default();
        let (tx, _rx) = oneshot::channel();
        let host = |r: String| {
            ClientMessage::Host(quiz_protocol::client::HostFrame {
                command: HostCommand::Start,
                player: None,
                reference: Some(r),
            })
        };
        assert!(matches!(
            s.register_request(Waiter::Host(tx), host),
            Err(RequestError::NotConnected)
        ));
        s.attach();
        s.on_frame(&resumed());
        let (tx, mut rx) = oneshot::channel();
        let (_, _, frame) = s.register_request(Waiter::Host(tx), host).unwrap();
        assert!(
            std::str::from_utf8(&frame)
                .unwrap()
                .contains(r#""ref":"r1""#)
        );
        s.on_disconnect();
        assert!(matches!(rx.try_recv(), Ok(Err(RequestError::Disconnected))));
    }

    #[test]
    fn replies_find_their_request_by_ref_or_in_order() {
        let mut s = State::default();
        s.attach();
        s.on_frame(&resumed());
        let host = |r: String| {
            ClientMessage::Host(quiz_protocol::client::HostFrame {
                command: HostCommand::Next,
                player: None,
                reference: Some(r),
            })
        };
        let (tx1, mut rx1) = oneshot::channel();
        let (tx2, mut rx2) = oneshot::channel();
        s.register_request(Waiter::Host(tx1), host).unwrap();
        s.register_request(Waiter::Host(tx2), host).unwrap();
        // The second is answered first, by ref.
        let mut refused = ErrorFrame::new(ErrorCode::BadCommand, "not now");
        refused.reference = Some("r2".into());
        s.on_frame(&ServerMessage::Error(refused));
        assert!(matches!(rx2.try_recv(), Ok(Err(RequestError::Rejected(_)))));
        // A host_ok without ref goes to the oldest host request.
        let ok = ServerMessage::HostOk(HostOk {
            command: HostCommand::Next,
            phase: Phase::Open,
            reference: None,
        });
        s.on_frame(&ok);
        assert!(matches!(rx1.try_recv(), Ok(Ok(_))));
    }

    #[test]
    fn close_tells_everyone() {
        let mut s = State::default();
        let mut r = s.register_answer(0, id("a"), &Answer::Choice(0)).unwrap();
        s.on_close(CloseReason::Kicked);
        assert!(matches!(
            r.reply.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        assert_eq!(
            s.register_answer(0, id("b"), &Answer::Choice(0)).err(),
            Some(CloseReason::Kicked)
        );
    }
}
