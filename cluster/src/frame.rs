//! Cluster frames on one QUIC stream: [`FrameReader`] cuts the byte stream into messages,
//! [`FrameWriter`] sends them. The byte layout and the bincode codec are
//! `quiz_protocol::cluster`'s (`encode_frame`/`decode_frame`); this module only moves bytes
//! between quinn and that codec, and never holds more than one frame.
//!
//! A reader takes exactly the bytes of the frame it is reading from quinn: first the 4-byte
//! header, then, once the codec has accepted the announced length, the rest of that frame.
//! So an oversized frame is refused from its header alone, the buffer never exceeds
//! `max_frame_bytes + 4`, and what the peer sent beyond stays in quinn, under its flow control.

use quinn::{RecvStream, SendStream, VarInt};
use quiz_protocol::cluster::{ClusterMessage, decode_frame, encode_frame};

use crate::config::FRAME_HEADER;
use crate::error::ClusterError;

/// The QUIC error code with which we stop or reset a stream we give up on: a protocol
/// violation, a bad first frame, a send cancelled half-way.
pub(crate) const STREAM_ABORTED: VarInt = VarInt::from_u32(1);

/// A reader's buffer is given back after a frame larger than this, so a stream that once
/// carried a large frame does not keep its memory while idle.
const KEEP_CAPACITY: usize = 64 * 1024;

/// Reads cluster frames from one stream.
///
/// [`next`](Self::next) is cancel-safe: bytes already read stay buffered for the next call.
pub struct FrameReader {
    recv: RecvStream,
    buf: Vec<u8>,
    max_frame: usize,
    /// Once a frame failed, the stream cannot be resynchronised: every later call returns
    /// the same error.
    failed: Option<ClusterError>,
}

impl FrameReader {
    pub(crate) fn new(recv: RecvStream, max_frame: usize) -> Self {
        FrameReader {
            recv,
            buf: Vec::new(),
            max_frame,
            failed: None,
        }
    }

    /// The next message; `Ok(None)` when the peer finished the stream between frames.
    ///
    /// Errors: [`Truncated`](ClusterError::Truncated) if the stream ends mid-frame,
    /// [`Oversized`](ClusterError::Oversized) (from the header, before any of the body is
    /// read), [`Version`](ClusterError::Version), [`Malformed`](ClusterError::Malformed), or
    /// [`Closed`](ClusterError::Closed) when the stream is reset or the connection lost.
    /// After a protocol violation the stream is stopped, so the peer's writes fail.
    pub async fn next(&mut self) -> Result<Option<ClusterMessage>, ClusterError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = self.read_frame().await;
        if let Err(e) = &result {
            if e.is_protocol_violation() {
                // Already stopped or finished is fine: either way the peer is told.
                let _ = self.recv.stop(STREAM_ABORTED);
            }
            self.failed = Some(e.clone());
        }
        result
    }

    async fn read_frame(&mut self) -> Result<Option<ClusterMessage>, ClusterError> {
        loop {
            if let Some((msg, used)) = decode_frame::<ClusterMessage>(&self.buf, self.max_frame)? {
                // We never read past the frame, so `used` is the whole buffer.
                self.buf.drain(..used);
                if self.buf.capacity() > KEEP_CAPACITY {
                    self.buf = Vec::new();
                }
                return Ok(Some(msg));
            }
            let missing = self.missing();
            self.buf.reserve_exact(missing);
            match self.recv.read_chunk(missing, true).await? {
                Some(chunk) => self.buf.extend_from_slice(&chunk.bytes),
                None if self.buf.is_empty() => return Ok(None),
                None => return Err(ClusterError::Truncated),
            }
        }
    }

    /// Bytes still missing from the frame being read. Only called after the codec has checked
    /// the header (if complete) against the limit, so this is at most `max_frame + 4`.
    fn missing(&self) -> usize {
        match self.buf.get(..FRAME_HEADER) {
            None => FRAME_HEADER - self.buf.len(),
            Some(header) => {
                let mut len = [0u8; FRAME_HEADER];
                len.copy_from_slice(header);
                FRAME_HEADER + u32::from_be_bytes(len) as usize - self.buf.len()
            }
        }
    }
}

/// Writes cluster frames to one stream. Dropping it finishes the stream, unless a send was
/// cancelled half-way: then it resets it, so the peer sees an abandoned stream rather than a
/// truncated frame.
pub struct FrameWriter {
    send: SendStream,
    max_frame: usize,
    /// A frame is being written; if we are dropped now, the stream holds half of it.
    writing: bool,
}

impl FrameWriter {
    pub(crate) fn new(send: SendStream, max_frame: usize) -> Self {
        FrameWriter {
            send,
            max_frame,
            writing: false,
        }
    }

    /// Sends one message. Waits while the peer's flow control is full (a peer that does not
    /// read stalls this): callers put it under a timeout. A message over `max_frame_bytes`
    /// is refused here with [`Oversized`](ClusterError::Oversized), since the peer would
    /// refuse it anyway. Not cancel-safe: after a cancelled send the stream holds half a
    /// frame, so drop the writer (which resets the stream).
    pub async fn send(&mut self, msg: &ClusterMessage) -> Result<(), ClusterError> {
        let frame = encode_checked(msg, self.max_frame)?;
        self.send_encoded(&frame).await
    }

    /// Sends a frame already encoded (by `quiz_protocol::cluster::encode_frame`), such as one
    /// event shared by many streams. Refused with [`Oversized`](ClusterError::Oversized) like
    /// [`send`](Self::send). Not cancel-safe either.
    pub async fn send_frame(&mut self, frame: &[u8]) -> Result<(), ClusterError> {
        let len = frame.len().saturating_sub(FRAME_HEADER);
        if len > self.max_frame {
            return Err(ClusterError::Oversized {
                len,
                max: self.max_frame,
            });
        }
        self.send_encoded(frame).await
    }

    /// Sends a frame made by [`encode_checked`].
    pub(crate) async fn send_encoded(&mut self, frame: &[u8]) -> Result<(), ClusterError> {
        if self.writing {
            return Err(ClusterError::Closed(
                "a cancelled send left half a frame on this stream".into(),
            ));
        }
        self.writing = true;
        self.send.write_all(frame).await?;
        self.writing = false;
        Ok(())
    }

    /// Ends the stream cleanly: the peer's reader sees `Ok(None)` after the last frame.
    /// Data already sent is still delivered (and retransmitted) after this returns.
    pub fn finish(mut self) -> Result<(), ClusterError> {
        self.send.finish()?;
        Ok(())
    }

    /// Abandons the stream: unsent data is dropped and the peer's reader sees an error.
    pub fn reset(mut self) {
        // Already finished or reset: nothing left to abandon.
        let _ = self.send.reset(STREAM_ABORTED);
    }
}

impl Drop for FrameWriter {
    fn drop(&mut self) {
        if self.writing {
            // Already finished or reset: nothing left to abandon.
            let _ = self.send.reset(STREAM_ABORTED);
        }
    }
}

/// Encodes `msg` as one frame, refusing it if its frame would be over `max_frame` (the peer
/// would refuse it anyway).
pub(crate) fn encode_checked(
    msg: &ClusterMessage,
    max_frame: usize,
) -> Result<Vec<u8>, ClusterError> {
    let frame = encode_frame(msg);
    let len = frame.len() - FRAME_HEADER;
    if len > max_frame {
        return Err(ClusterError::Oversized {
            len,
            max: max_frame,
        });
    }
    Ok(frame)
}
