//! A quiz's outbox: its events on their way to the subscribed edges, held back until the
//! change that produced them (a phase change, a player's record) is durable.
//!
//! Persist, then announce: a question is shown to phones only once the progress that opened it
//! is in the store, a host hears `host_ok` only once its command is, a phone gets its
//! `welcome` only once its player record is, and a kicked phone is closed only once the kick
//! is stored (a crash in between would bring the player back). So an answer in the log always
//! belongs to a question the store knows was opened, and a node restarted after a crash
//! resumes the quiz exactly where phones saw it, deadlines included. Events keep their order: once one is held, everything after it waits.

use crate::event::{Event, SharedEvent};
use std::collections::VecDeque;
use tokio::time::Instant;

use quiz_protocol::client::{ServerMessage, encode_server};
use quiz_protocol::cluster::{Audience, OwnerEvent, OwnerReply};
use tokio::sync::{mpsc, oneshot};

use super::EdgeId;

/// An event waiting for its progress to be durable.
enum Held {
    Message {
        audience: Audience,
        msg: ServerMessage,
        since: Instant,
    },
    Event(OwnerEvent),
    /// A host command's `host_ok`.
    Reply {
        reply: oneshot::Sender<OwnerReply>,
        frame: OwnerReply,
    },
}

#[derive(Default)]
pub(super) struct Outbox {
    edges: Vec<(EdgeId, mpsc::Sender<Event>)>,
    /// Version of the last progress handed to the journal, and of the last one made durable.
    saved: u64,
    durable: u64,
    /// Each held event with the progress version it waits for.
    held: VecDeque<(u64, Held)>,
}

impl Outbox {
    pub(super) fn subscribe(&mut self, edge: EdgeId, events: mpsc::Sender<Event>) {
        self.edges.push((edge, events));
    }

    pub(super) fn unsubscribe(&mut self, edge: EdgeId) {
        self.edges.retain(|(id, _)| *id != edge);
    }

    /// A durable change (progress or a player record) goes to the journal; returns its
    /// version.
    pub(super) fn change_queued(&mut self) -> u64 {
        self.saved += 1;
        self.saved
    }

    /// The change of `version` (and every earlier one) is durable: release what waited.
    pub(super) fn changes_durable(&mut self, version: u64) {
        self.durable = self.durable.max(version);
        while self.held.front().is_some_and(|(v, _)| *v <= self.durable) {
            if let Some((_, held)) = self.held.pop_front() {
                match held {
                    Held::Message {
                        audience,
                        msg,
                        since,
                    } => self.send_now(audience, msg, since),
                    Held::Event(event) => self.broadcast(event),
                    Held::Reply { reply, frame } => {
                        let _ = reply.send(frame);
                    }
                }
            }
        }
    }

    /// Events waiting for the store.
    #[cfg(test)]
    pub(super) fn held(&self) -> usize {
        self.held.len()
    }

    /// Sends a frame to every edge, now or once the latest progress is durable.
    pub(super) fn send(&mut self, audience: Audience, msg: ServerMessage) {
        if self.must_wait() {
            let held = Held::Message {
                audience,
                msg,
                since: Instant::now(),
            };
            self.held.push_back((self.saved, held));
        } else {
            self.send_now(audience, msg, Instant::now());
        }
    }

    /// Sends any other event, in order with the frames.
    pub(super) fn event(&mut self, event: OwnerEvent) {
        if self.must_wait() {
            self.held.push_back((self.saved, Held::Event(event)));
        } else {
            self.broadcast(event);
        }
    }

    /// Replies to a request whose effects were just queued, once they are durable. If the
    /// quiz stops first the reply is dropped, and the edge tells the phone to try again.
    pub(super) fn reply(&mut self, reply: oneshot::Sender<OwnerReply>, frame: OwnerReply) {
        if self.must_wait() {
            self.held
                .push_back((self.saved, Held::Reply { reply, frame }));
        } else {
            let _ = reply.send(frame);
        }
    }

    fn must_wait(&self) -> bool {
        self.saved > self.durable || !self.held.is_empty()
    }

    /// Renders and broadcasts a frame. A frame that waited has its countdown shortened by the
    /// wait: `ends_in_ms` is the time left when it leaves.
    fn send_now(&mut self, audience: Audience, mut msg: ServerMessage, since: Instant) {
        let waited = since.elapsed().as_millis().min(u128::from(u32::MAX)) as u32;
        if waited > 0 {
            match &mut msg {
                ServerMessage::Question(q) => q.ends_in_ms = q.ends_in_ms.saturating_sub(waited),
                ServerMessage::Unpaused(u) => u.ends_in_ms = u.ends_in_ms.saturating_sub(waited),
                _ => {}
            }
        }
        let json = encode_server(&msg);
        self.broadcast(OwnerEvent::Frame {
            audience,
            seq: msg.seq(),
            json,
        });
    }

    /// Sends one event to every subscribed edge; an edge that cannot keep up is dropped (it
    /// resubscribes and resyncs its phones).
    pub(super) fn broadcast(&mut self, event: OwnerEvent) {
        let event = SharedEvent::new(event);
        self.edges
            .retain(|(edge, tx)| match tx.try_send(event.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(edge, "dropping an edge that cannot keep up; it will resync");
                    false
                }
                // The edge let go of the quiz (its room closed).
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiz_protocol::client::Closed;

    fn closed(seq: u64) -> ServerMessage {
        ServerMessage::Closed(Closed { seq, index: 0 })
    }

    fn received(rx: &mut mpsc::Receiver<Event>) -> Vec<Option<u64>> {
        let mut out = Vec::new();
        while let Ok(e) = rx.try_recv() {
            if let OwnerEvent::Frame { seq, .. } = e.event() {
                out.push(*seq);
            }
        }
        out
    }

    #[test]
    fn frames_wait_for_their_progress_and_keep_their_order() {
        let (tx, mut rx) = mpsc::channel(16);
        let mut outbox = Outbox::default();
        outbox.subscribe(1, tx);
        outbox.send(Audience::Everyone, closed(1));
        assert_eq!(received(&mut rx), vec![Some(1)], "nothing to wait for");

        let first = outbox.change_queued();
        outbox.send(Audience::Everyone, closed(2));
        let second = outbox.change_queued();
        outbox.send(Audience::Everyone, closed(3));
        assert!(received(&mut rx).is_empty(), "held until durable");
        assert_eq!(outbox.held(), 2);

        outbox.changes_durable(first);
        assert_eq!(received(&mut rx), vec![Some(2)]);
        // Later events queue behind the held one even without a new progress.
        outbox.event(OwnerEvent::Gone { ended: false });
        outbox.changes_durable(second);
        assert_eq!(received(&mut rx), vec![Some(3)]);
        assert_eq!(outbox.held(), 0);
    }
}
