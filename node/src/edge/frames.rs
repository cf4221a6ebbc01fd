//! Reading a phone's frames without holding a read buffer while the phone is quiet.
//!
//! fastwebsockets gives each reader an 8 KiB buffer (a fixed size in 0.10), and at 10,000
//! idle phones on a node those buffers are most of the node's memory. A phone sends a small
//! frame every few seconds at most, so here a quiet phone is waited on with a read of a few
//! bytes into the connection itself; a fastwebsockets reader, and its buffer, is made when
//! bytes arrive and dropped again as soon as every byte read belongs to a frame it returned.
//!
//! Knowing that needs the frame boundaries of the bytes read, which [`Bounds`] follows from
//! the frame headers as the bytes go by (it only measures frames; fastwebsockets parses and
//! checks them).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocketError, WebSocketRead};
use tokio::io::{AsyncRead, ReadBuf};

use crate::shard::lock;

/// Bytes a quiet phone is waited on with.
const HEAD: usize = 16;

/// One frame read from a phone, owning its payload.
pub(super) struct InFrame {
    pub(super) fin: bool,
    pub(super) opcode: OpCode,
    pub(super) payload: BytesMut,
}

/// The read side of a phone's socket. Pings come back as frames (the caller answers them);
/// a close is echoed through the obligated-send function, as fastwebsockets does.
pub(super) struct FrameReader<R> {
    source: Arc<Mutex<Source<R>>>,
    live: Option<WebSocketRead<Feed<R>>>,
    returned: u64,
    max_message_size: usize,
}

struct Source<R> {
    stream: R,
    head: [u8; HEAD],
    head_start: usize,
    head_end: usize,
    bounds: Bounds,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(super) fn new(stream: R, max_message_size: usize) -> Self {
        Self {
            source: Arc::new(Mutex::new(Source {
                stream,
                head: [0; HEAD],
                head_start: 0,
                head_end: 0,
                bounds: Bounds::default(),
            })),
            live: None,
            returned: 0,
            max_message_size,
        }
    }

    /// Whether a read buffer is held (bytes are read that no returned frame has consumed).
    #[cfg(test)]
    fn holds_buffer(&self) -> bool {
        self.live.is_some()
    }

    /// The next frame. Not cancel-safe once bytes have arrived (as fastwebsockets' own).
    pub(super) async fn next_frame<'f, F, Fut, E>(
        &mut self,
        obligated: &mut F,
    ) -> Result<InFrame, WebSocketError>
    where
        F: FnMut(Frame<'f>) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    {
        if self.live.is_none() {
            if self.wait_for_bytes().await? == 0 {
                return Err(WebSocketError::UnexpectedEOF);
            }
            let (mut read, _) = fastwebsockets::after_handshake_split(
                Feed(self.source.clone()),
                tokio::io::sink(),
                Role::Server,
            );
            read.set_auto_pong(false);
            read.set_max_message_size(self.max_message_size);
            self.live = Some(read);
        }
        let live = self.live.as_mut().expect("a reader was just made");
        let frame = live.read_frame(obligated).await?;
        if lock(&self.source).bounds.unmasked {
            // A protocol error (close 1002), like the others fastwebsockets reports.
            return Err(WebSocketError::InvalidValue);
        }
        let frame = InFrame {
            fin: frame.fin,
            opcode: frame.opcode,
            payload: match frame.payload {
                Payload::Bytes(bytes) => bytes,
                other => BytesMut::from(&other[..]),
            },
        };
        self.returned += 1;
        if lock(&self.source).bounds.drained(self.returned) {
            self.live = None;
        }
        Ok(frame)
    }

    /// Waits until the phone sends something; reads up to [`HEAD`] bytes of it.
    async fn wait_for_bytes(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| {
            let mut source = lock(&self.source);
            let Source {
                stream,
                head,
                head_start,
                head_end,
                bounds,
            } = &mut *source;
            let mut buf = ReadBuf::new(head);
            ready!(Pin::new(stream).poll_read(cx, &mut buf))?;
            let n = buf.filled().len();
            bounds.track(&head[..n]);
            *head_start = 0;
            *head_end = n;
            Poll::Ready(Ok(n))
        })
        .await
    }
}

/// The stream a fastwebsockets reader reads: the bytes read while waiting, then the socket.
struct Feed<R>(Arc<Mutex<Source<R>>>);

impl<R: AsyncRead + Unpin> AsyncRead for Feed<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut source = lock(&self.0);
        let source = &mut *source;
        if source.head_start < source.head_end {
            let n = (source.head_end - source.head_start).min(buf.remaining());
            buf.put_slice(&source.head[source.head_start..source.head_start + n]);
            source.head_start += n;
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut source.stream).poll_read(cx, buf))?;
        source.bounds.track(&buf.filled()[before..]);
        Poll::Ready(Ok(()))
    }
}

/// Follows frame boundaries in a stream of WebSocket bytes.
#[derive(Default)]
struct Bounds {
    header: [u8; 14],
    header_len: usize,
    payload_left: u64,
    completed: u64,
    /// A frame came without a mask: RFC 6455 §5.1 makes a server close the connection
    /// (fastwebsockets 0.10 does not check).
    unmasked: bool,
}

impl Bounds {
    fn track(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(bytes.len() as u64);
                self.payload_left -= n;
                bytes = &bytes[n as usize..];
                if self.payload_left == 0 {
                    self.completed += 1;
                }
                continue;
            }
            self.header[self.header_len] = bytes[0];
            self.header_len += 1;
            bytes = &bytes[1..];
            if let Some(payload) = self.payload_len() {
                self.header_len = 0;
                self.payload_left = payload;
                if payload == 0 {
                    self.completed += 1;
                }
            }
        }
    }

    /// The payload length once the header gathered so far is complete.
    fn payload_len(&mut self) -> Option<u64> {
        let h = &self.header;
        if self.header_len < 2 {
            return None;
        }
        let code = h[1] & 0x7f;
        let extra = match code {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if h[1] & 0x80 != 0 { 4 } else { 0 };
        if self.header_len < 2 + extra + mask {
            return None;
        }
        if mask == 0 {
            self.unmasked = true;
        }
        Some(match extra {
            0 => u64::from(code),
            2 => u64::from(u16::from_be_bytes([h[2], h[3]])),
            _ => u64::from_be_bytes(h[2..10].try_into().expect("eight bytes")),
        })
    }

    /// Whether every byte seen so far belongs to the first `frames` frames.
    fn drained(&self, frames: u64) -> bool {
        self.header_len == 0 && self.payload_left == 0 && self.completed == frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A masked client frame, as a phone sends it.
    fn client_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut frame = Frame::new(true, opcode, None, Payload::Owned(payload.to_vec()));
        frame.mask();
        let mut head = [0u8; 16];
        let n = frame.fmt_head(&mut head);
        let mut out = head[..n].to_vec();
        out.extend_from_slice(&frame.payload);
        out
    }

    async fn no_obligation(_: Frame<'_>) -> Result<(), std::convert::Infallible> {
        Ok(())
    }

    #[test]
    fn bounds_follow_every_header_size() {
        let mut bounds = Bounds::default();
        let frames = [
            client_frame(OpCode::Text, b""),
            client_frame(OpCode::Text, &[b'a'; 125]),
            client_frame(OpCode::Text, &[b'b'; 126]),
            client_frame(OpCode::Binary, &[b'c'; 70_000]),
            client_frame(OpCode::Ping, b"hi"),
        ];
        let all: Vec<u8> = frames.concat();
        // Byte by byte, then in one go: the same boundaries.
        for (i, byte) in all.iter().enumerate() {
            bounds.track(std::slice::from_ref(byte));
            let ends: usize = frames
                .iter()
                .scan(0, |at, f| {
                    *at += f.len();
                    Some(*at)
                })
                .take_while(|&end| end <= i + 1)
                .count();
            assert_eq!(bounds.completed, ends as u64, "after byte {i}");
        }
        assert!(bounds.drained(5));
        let mut once = Bounds::default();
        once.track(&all[..all.len() - 1]);
        assert!(!once.drained(4), "a frame is still partly unread");
        once.track(&all[all.len() - 1..]);
        assert!(once.drained(5));
    }

    #[tokio::test]
    async fn a_quiet_phone_holds_no_buffer_and_frames_split_anywhere_arrive_whole() {
        let (phone, server) = tokio::io::duplex(64);
        let (mut phone_tx, server_rx) = (phone, server);
        let mut reader = FrameReader::new(server_rx, 1 << 20);
        let long = vec![b'z'; 3000];
        let first = client_frame(OpCode::Text, br#"{"type":"join"}"#);
        let second = client_frame(OpCode::Text, &long);
        let writer = tokio::spawn(async move {
            let both = [first, second].concat();
            // Two frames in one write, then a ping after a pause.
            phone_tx.write_all(&both).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            phone_tx
                .write_all(&client_frame(OpCode::Ping, b"p"))
                .await
                .unwrap();
            phone_tx
        });
        let join = reader.next_frame(&mut no_obligation).await.unwrap();
        assert_eq!(&join.payload[..], br#"{"type":"join"}"#);
        let text = reader.next_frame(&mut no_obligation).await.unwrap();
        assert_eq!(text.opcode, OpCode::Text);
        assert_eq!(text.payload.len(), 3000);
        assert!(!reader.holds_buffer(), "every byte read was returned");
        let ping = reader.next_frame(&mut no_obligation).await.unwrap();
        assert_eq!(ping.opcode, OpCode::Ping, "pings come back to be answered");
        assert_eq!(&ping.payload[..], b"p");
        assert!(!reader.holds_buffer());
        drop(writer.await.unwrap());
        assert!(matches!(
            reader.next_frame(&mut no_obligation).await,
            Err(WebSocketError::UnexpectedEOF)
        ));
    }
}
