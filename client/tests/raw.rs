//! `RawSocket` against the fake edge: frames a well-behaved client never sends, and the
//! close codes that come back.

mod support;

use quiz_client::RawSocket;
use quiz_client::raw::OpCode;
use quiz_protocol::client::{ClientMessage, ServerMessage};
use support::*;

#[tokio::test]
async fn join_and_welcome_over_a_raw_socket() {
    within_timeout(async {
        let edge = FakeEdge::start().await;
        let mut ws = RawSocket::connect(&edge.url(), Some("t")).await.unwrap();
        ws.send(&ClientMessage::Join { last_seq: None })
            .await
            .unwrap();
        assert!(matches!(
            ws.recv_message().await.unwrap(),
            ServerMessage::Welcome(_)
        ));
        // Garbage JSON gets an error frame, not a close.
        ws.send_text("{not json").await.unwrap();
        match ws.recv_message().await.unwrap() {
            ServerMessage::Error(e) => assert!(!e.retryable),
            other => panic!("{other:?}"),
        }
        assert_eq!(edge.tokens(), ["t"]);
    })
    .await;
}

#[tokio::test]
async fn a_binary_frame_is_closed_with_1003() {
    within_timeout(async {
        let edge = FakeEdge::start().await;
        let mut ws = RawSocket::connect(&edge.url(), None).await.unwrap();
        ws.send_binary(vec![1, 2, 3]).await.unwrap();
        assert_eq!(ws.closed().await, Some(1003));
    })
    .await;
}

#[tokio::test]
async fn invalid_utf8_is_closed_with_1007() {
    within_timeout(async {
        let edge = FakeEdge::start().await;
        let mut ws = RawSocket::connect(&edge.url(), None).await.unwrap();
        ws.send_text(vec![b'{', 0xff, 0xfe, b'}']).await.unwrap();
        let frame = ws.recv().await.unwrap();
        assert_eq!(frame.opcode, OpCode::Close);
        assert_eq!(frame.close_code(), Some(1007));
        assert_eq!(frame.text(), Some("bye"));
    })
    .await;
}

#[tokio::test]
async fn fragmented_and_oversized_frames_can_be_sent() {
    within_timeout(async {
        let edge = FakeEdge::start().await;
        let mut ws = RawSocket::connect(&edge.url(), None).await.unwrap();
        // A join split over two fragments is reassembled by the server.
        ws.send_frame(false, OpCode::Text, &br#"{"type":"#[..])
            .await
            .unwrap();
        ws.send_frame(true, OpCode::Continuation, &br#""join"}"#[..])
            .await
            .unwrap();
        assert!(matches!(
            ws.recv_message().await.unwrap(),
            ServerMessage::Welcome(_)
        ));
        // 100 KiB of spaces: over the fake's 64 KiB limit, so an error frame.
        ws.send_text(vec![b' '; 100 * 1024]).await.unwrap();
        assert!(matches!(
            ws.recv_message().await.unwrap(),
            ServerMessage::Error(_)
        ));
        assert_eq!(edge.joins(), vec![None]);
    })
    .await;
}
