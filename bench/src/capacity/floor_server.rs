//! The broadcast floor (`quiz-bench floor-server`, started by the bench): the least a
//! WebSocket server on this machine must do to push one small frame to N sockets, with the
//! same crates and the same shape as an edge (axum + fastwebsockets, a reader and a writer
//! task per socket, a bounded queue each, one shared `Bytes` per broadcast) and nothing else:
//! no tokens, no rooms, no JSON rendering per phone.
//!
//! It prints `{"listening":"ADDR"}` on stdout once bound, then takes commands on stdin, one
//! JSON line each: `{"broadcast":{"first":F,"count":C,"interval_ms":I,"bytes":B}}` sends C
//! frames of about B bytes, I ms apart, to every socket, numbered from F (`{"n":K,…}`);
//! `"rss"` prints `{"rss_bytes":R,"sockets":S}`; `"stop"` (or stdin closing) exits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use bytes::Bytes;
use fastwebsockets::upgrade::IncomingUpgrade;
use fastwebsockets::{Frame, OpCode, Payload};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Frames queued per socket, as on an edge.
const QUEUE: usize = 256;

/// A command to the floor server.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FloorCommand {
    Broadcast {
        first: u64,
        count: u64,
        interval_ms: u64,
        bytes: usize,
    },
    Rss,
    Stop,
}

/// What the floor server prints.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FloorReport {
    Listening(SocketAddr),
    Rss {
        rss_bytes: u64,
        sockets: u64,
    },
    /// A broadcast was queued to every socket: how long queueing took, µs.
    Broadcast {
        n: u64,
        queued_us: u64,
    },
}

type Sockets = Arc<Mutex<Vec<mpsc::Sender<Bytes>>>>;

/// Runs the floor server on `listen` until `stop` or stdin closes.
pub async fn run(listen: SocketAddr) -> anyhow::Result<()> {
    let sockets: Sockets = Arc::default();
    let app = Router::new()
        .route("/ws", get(upgrade))
        .with_state(sockets.clone());
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    print(&FloorReport::Listening(addr)).await;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        match serde_json::from_str::<FloorCommand>(&line)? {
            FloorCommand::Broadcast {
                first,
                count,
                interval_ms,
                bytes,
            } => {
                for n in first..first + count {
                    let started = std::time::Instant::now();
                    let frame = numbered(n, bytes);
                    let targets = crate::capacity::lock(&sockets).clone();
                    for tx in &targets {
                        let _ = tx.try_send(frame.clone());
                    }
                    let queued_us = started.elapsed().as_micros() as u64;
                    print(&FloorReport::Broadcast { n, queued_us }).await;
                    tokio::time::sleep(Duration::from_millis(interval_ms)).await;
                }
            }
            FloorCommand::Rss => {
                let sockets = crate::capacity::lock(&sockets).len() as u64;
                let rss_bytes = crate::capacity::rss_of(std::process::id()).unwrap_or(0);
                print(&FloorReport::Rss { rss_bytes, sockets }).await;
            }
            FloorCommand::Stop => break,
        }
    }
    server.abort();
    Ok(())
}

/// A frame of about `bytes` bytes that names its number.
fn numbered(n: u64, bytes: usize) -> Bytes {
    let head = format!(r#"{{"n":{n},"pad":""#);
    let pad = bytes.saturating_sub(head.len() + 2);
    let mut s = head;
    s.extend(std::iter::repeat_n('x', pad));
    s.push_str("\"}");
    Bytes::from(s)
}

async fn print(report: &FloorReport) {
    let mut line = serde_json::to_vec(report).unwrap_or_default();
    line.push(b'\n');
    let mut out = tokio::io::stdout();
    let _ = out.write_all(&line).await;
    let _ = out.flush().await;
}

async fn upgrade(State(sockets): State<Sockets>, upgrade: IncomingUpgrade) -> impl IntoResponse {
    let Ok((response, socket)) = upgrade.upgrade() else {
        return axum::http::StatusCode::BAD_REQUEST.into_response();
    };
    tokio::spawn(async move {
        let Ok(ws) = socket.await else { return };
        let (mut read, mut write) = ws.split(tokio::io::split);
        let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE);
        crate::capacity::lock(&sockets).push(tx.clone());
        let (control_tx, mut control) = mpsc::channel::<(OpCode, Vec<u8>)>(4);
        let writer = tokio::spawn(async move {
            loop {
                tokio::select! {
                    frame = rx.recv() => {
                        let Some(bytes) = frame else { break };
                        if write.write_frame(Frame::text(Payload::Borrowed(&bytes))).await.is_err() {
                            break;
                        }
                    }
                    c = control.recv() => {
                        let Some((opcode, payload)) = c else { break };
                        let frame = Frame::new(true, opcode, None, Payload::Owned(payload));
                        if write.write_frame(frame).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let mut obligated = move |frame: Frame<'_>| {
            let _ = control_tx.try_send((frame.opcode, frame.payload.to_vec()));
            std::future::ready(Ok::<(), std::convert::Infallible>(()))
        };
        while let Ok(frame) = read.read_frame(&mut obligated).await {
            if frame.opcode == OpCode::Close {
                break;
            }
        }
        writer.abort();
        crate::capacity::lock(&sockets).retain(|s| !s.same_channel(&tx));
    });
    response.into_response()
}
