//! An owner's event on its way to the edges: one value shared by every subscribed edge, with
//! its cluster frame encoded once for all the remote ones (not once per edge).

use std::sync::{Arc, OnceLock};

use quiz_protocol::QuizId;
use quiz_protocol::cluster::{ClusterMessage, OwnerEvent, encode_frame};

/// An event shared by the edges of a quiz.
#[derive(Debug)]
pub(crate) struct SharedEvent {
    event: OwnerEvent,
    frame: OnceLock<Vec<u8>>,
}

impl SharedEvent {
    pub(crate) fn new(event: OwnerEvent) -> Arc<SharedEvent> {
        Arc::new(SharedEvent {
            event,
            frame: OnceLock::new(),
        })
    }

    pub(crate) fn event(&self) -> &OwnerEvent {
        &self.event
    }

    /// The event as a cluster frame for `quiz`, encoded by the first edge that needs it.
    pub(crate) fn frame(&self, quiz: &QuizId) -> &[u8] {
        self.frame.get_or_init(|| {
            encode_frame(&ClusterMessage::Event {
                quiz: quiz.clone(),
                event: self.event.clone(),
            })
        })
    }
}

/// What an owner sends an edge's room.
pub(crate) type Event = Arc<SharedEvent>;
