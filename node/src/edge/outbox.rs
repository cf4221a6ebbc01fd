//! A phone's outbound queue: bounded in frames and in bytes, and small while idle.
//!
//! A tokio mpsc channel allocates its slots in blocks of 32 (about 1.3 KiB for these frames,
//! two in steady use), for every phone, whether it has anything queued or not: 26 MiB at
//! 10,000 phones on a node. A phone has nothing queued most of the time, so this queue is a
//! `VecDeque` behind a mutex that grows with a burst and gives the memory back when it drains.
//! One writer waits on it; the room, the reader and request tasks push without waiting.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use fastwebsockets::OpCode;
use tokio::sync::Notify;

/// What the writer sends.
pub(super) enum Out {
    Text(Bytes),
    /// A frame the protocol obliges us to send (pong, close echo).
    Control(OpCode, Vec<u8>),
}

impl Out {
    fn len(&self) -> usize {
        match self {
            Out::Text(bytes) => bytes.len(),
            Out::Control(_, payload) => payload.len(),
        }
    }
}

/// Why a frame was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// The queue holds its limit: the phone is not reading.
    Full,
    /// The writer has finished; nothing more goes out.
    Closed,
}

/// A drained queue keeps at most this many slots.
const IDLE_SLOTS: usize = 8;

pub(super) struct Outbox {
    state: Mutex<State>,
    ready: Notify,
    max_frames: usize,
    max_bytes: usize,
}

#[derive(Default)]
struct State {
    frames: VecDeque<Out>,
    bytes: usize,
    closed: bool,
}

impl Outbox {
    /// A queue refusing frames past `max_frames` frames or `max_bytes` bytes queued (a frame
    /// bigger than `max_bytes` still goes out when nothing else is queued).
    pub(super) fn new(max_frames: usize, max_bytes: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            max_frames: max_frames.max(1),
            max_bytes,
        }
    }

    pub(super) fn push(&self, out: Out) -> Result<(), Refused> {
        {
            let mut state = crate::shard::lock(&self.state);
            if state.closed {
                return Err(Refused::Closed);
            }
            let len = out.len();
            let busy = !state.frames.is_empty();
            if state.frames.len() >= self.max_frames || (busy && state.bytes + len > self.max_bytes)
            {
                return Err(Refused::Full);
            }
            state.bytes += len;
            state.frames.push_back(out);
        }
        self.ready.notify_one();
        Ok(())
    }

    /// The next frame, without waiting.
    pub(super) fn try_pop(&self) -> Option<Out> {
        let mut state = crate::shard::lock(&self.state);
        let out = state.frames.pop_front()?;
        state.bytes -= out.len();
        if state.frames.is_empty() && state.frames.capacity() > IDLE_SLOTS {
            state.frames.shrink_to(IDLE_SLOTS);
        }
        Some(out)
    }

    /// The next frame, waiting for one. Cancel-safe: a frame is taken only when returned.
    pub(super) async fn pop(&self) -> Out {
        loop {
            if let Some(out) = self.try_pop() {
                return out;
            }
            // A push between the check and the wait leaves a permit: nothing is missed.
            self.ready.notified().await;
        }
    }

    /// Refuses every later push; what is queued stays for `try_pop`.
    pub(super) fn close(&self) {
        crate::shard::lock(&self.state).closed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize) -> Out {
        Out::Text(Bytes::from(vec![b'x'; n]))
    }

    #[test]
    fn a_queue_refuses_past_its_frames_or_its_bytes() {
        let by_frames = Outbox::new(2, 1 << 20);
        assert_eq!(by_frames.push(text(10)), Ok(()));
        assert_eq!(by_frames.push(text(10)), Ok(()));
        assert_eq!(by_frames.push(text(10)), Err(Refused::Full));

        let by_bytes = Outbox::new(100, 1000);
        assert_eq!(by_bytes.push(text(600)), Ok(()));
        assert_eq!(by_bytes.push(text(600)), Err(Refused::Full));
        assert_eq!(by_bytes.push(text(400)), Ok(()));
        assert!(by_bytes.try_pop().is_some());
        assert_eq!(by_bytes.push(text(600)), Ok(()), "popping frees the bytes");
    }

    #[test]
    fn an_empty_queue_takes_a_frame_bigger_than_its_byte_limit() {
        let outbox = Outbox::new(10, 100);
        assert_eq!(outbox.push(text(5000)), Ok(()));
        assert_eq!(outbox.push(text(1)), Err(Refused::Full));
    }

    #[test]
    fn a_closed_queue_refuses_but_keeps_what_it_holds() {
        let outbox = Outbox::new(10, 1000);
        outbox.push(text(3)).unwrap();
        outbox.close();
        assert_eq!(outbox.push(text(3)), Err(Refused::Closed));
        assert!(outbox.try_pop().is_some());
        assert!(outbox.try_pop().is_none());
    }

    #[test]
    fn a_drained_queue_gives_its_memory_back() {
        let outbox = Outbox::new(1000, 1 << 20);
        for _ in 0..200 {
            outbox.push(text(1)).unwrap();
        }
        while outbox.try_pop().is_some() {}
        assert!(crate::shard::lock(&outbox.state).frames.capacity() <= IDLE_SLOTS);
    }

    #[tokio::test]
    async fn the_writer_wakes_for_a_frame_pushed_while_it_waits() {
        let outbox = std::sync::Arc::new(Outbox::new(10, 1000));
        let waiter = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.pop().await.len() }
        });
        tokio::task::yield_now().await;
        outbox.push(text(7)).unwrap();
        assert_eq!(waiter.await.unwrap(), 7);
    }
}
