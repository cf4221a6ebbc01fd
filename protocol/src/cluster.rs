//! Cluster protocol: messages between an edge and a quiz's owner, and between the router and
//! nodes. Within one process they travel as values over channels; between processes they are
//! bincode frames on QUIC streams.
//!
//! # Frame layout
//!
//! ```text
//! +----------------+---------+------------------------------+
//! | length: u32 BE | version | bincode(standard) of message |
//! |  (of the rest) |   u8    |                              |
//! +----------------+---------+------------------------------+
//! ```
//!
//! `length` counts the version byte and the body. A reader refuses a frame whose length is
//! over its limit before reading it, and a version it does not speak. All bincode lives in
//! this module, so the codec can be swapped without touching callers.
//!
//! Messages avoid serde features that need a self-describing format (no `untagged`, no
//! `flatten`, no `skip_serializing_if`); client JSON travels pre-rendered as bytes.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::client::{Role, TopEntry};
use crate::ids::{AnswerId, NodeId, PlayerNo, QuizId, UserId};
use crate::question::Answer;
use crate::quiz::HostCommand;
use crate::{DecodeError, ErrorCode};

/// The cluster protocol version this build speaks.
pub const CLUSTER_VERSION: u8 = 2;
/// Default largest cluster frame (1 MiB); a full leaderboard of 50,000 players fits.
pub const DEFAULT_MAX_CLUSTER_FRAME: usize = 1 << 20;
const HEADER: usize = 4;

/// What an edge asks of a quiz's owner on behalf of one phone.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub enum EdgeRequest {
    /// Join or rejoin; `last_seq` asks for a replay.
    Join {
        user: UserId,
        role: Role,
        nickname: String,
        last_seq: Option<u64>,
    },
    Answer {
        player: PlayerNo,
        question: u32,
        answer_id: AnswerId,
        answer: Answer,
    },
    /// Self-paced: open the player's next question.
    Next { player: PlayerNo },
    /// The player leaves the quiz (and closes this connection).
    Leave { player: PlayerNo },
    /// A connection that had joined closed (`None`: a host's).
    Disconnect { player: Option<PlayerNo> },
    /// A host command; `reference` is echoed in the `host_ok` frame.
    Host {
        user: UserId,
        command: HostCommand,
        target: Option<String>,
        reference: Option<String>,
    },
}

/// The owner's answer to one [`EdgeRequest`].
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub enum OwnerReply {
    /// Joined as `player` (`None` for a host). `frames` are JSON frames for the phone, in
    /// order: a `welcome`, or a `resumed` and the replayed events. They bring the phone to
    /// sequence number `seq` and to leaderboard version `leaderboard_v`, or to none when
    /// they carry no leaderboard (a replay).
    Joined {
        player: Option<PlayerNo>,
        seq: u64,
        leaderboard_v: Option<u64>,
        frames: Vec<Vec<u8>>,
    },
    /// A JSON frame for the phone (an `ack`, `host_ok`, or a self-paced `question`).
    Frame(Vec<u8>),
    /// Done; nothing to send.
    Done,
    Error(Rejection),
}

/// A refusal, sent to the phone as an `error` frame.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Rejection {
    pub code: ErrorCode,
    pub message: String,
    pub answer_id: Option<AnswerId>,
}

/// Who on an edge a pushed frame is for.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Audience {
    Everyone,
    Hosts,
    Player(PlayerNo),
}

/// What the owner pushes to every edge that has phones in the quiz: one message per edge per
/// event, which the edge fans out to its phones.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub enum OwnerEvent {
    /// A rendered JSON frame. `seq` is set for quiz-wide sequenced events.
    Frame {
        audience: Audience,
        seq: Option<u64>,
        json: Vec<u8>,
    },
    /// A coalesced leaderboard change; the edge renders each phone's own frame.
    Leaderboard(LeaderboardUpdate),
    /// The host removed this player: close their connections with 4003.
    Kicked { player: PlayerNo },
    /// The owner no longer serves this quiz: it ended and was unloaded (`ended`), or it is
    /// moving or stopping (phones should reconnect).
    Gone { ended: bool },
}

/// One player's standing, as leaderboard deltas carry it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Standing {
    pub player: PlayerNo,
    pub score: u32,
    /// Second sort key: total response time of correct answers, ms (lower ranks higher).
    pub tiebreak: u64,
}

/// A leaderboard version. With `full`, `changes` is every player and replaces what the edge
/// held; otherwise it lists the players whose standing changed since `version - 1`. Players
/// in `removed` left the leaderboard (kicked).
///
/// A full board too big for one frame comes in parts: the first has `full`, the rest have
/// `continues` and the same version, and add their players to it; every part but the last
/// has `more`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct LeaderboardUpdate {
    pub version: u64,
    pub full: bool,
    pub continues: bool,
    pub more: bool,
    pub players: u32,
    /// Answers in for the current question (shown to hosts).
    pub answered: u32,
    pub top: Vec<TopEntry>,
    pub changes: Vec<Standing>,
    pub removed: Vec<PlayerNo>,
}

/// A member of the ring, and where to reach it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RingMember {
    pub node: NodeId,
    /// Share of quizzes relative to the other members.
    pub weight: u32,
    /// Where phones reach its edge.
    pub ws_url: String,
    /// Where nodes and routers reach it over QUIC (`host:port`).
    pub cluster_addr: String,
}

/// Every message of the cluster protocol.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub enum ClusterMessage {
    /// First message on a connection, both ways.
    Hello {
        node: NodeId,
        cluster: String,
    },
    /// A request for quiz `quiz`; the reply carries the same `id`.
    Request {
        id: u64,
        quiz: QuizId,
        request: EdgeRequest,
    },
    Reply {
        id: u64,
        reply: OwnerReply,
    },
    /// Start or stop pushing a quiz's events to this edge.
    Subscribe {
        quiz: QuizId,
    },
    Unsubscribe {
        quiz: QuizId,
    },
    Event {
        quiz: QuizId,
        event: OwnerEvent,
    },
    /// The ring: its members, under an epoch that only increases.
    Ring {
        epoch: u64,
        members: Vec<RingMember>,
    },
    /// First message of a request channel: `Request`s follow on the stream, each answered by
    /// a `Reply` with its id, in any order.
    Requests,
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ DEFAULT_MAX_CLUSTER_FRAME * 4 }>()
}

/// Encodes `msg` as one length-prefixed, versioned frame.
pub fn encode_frame<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut out = vec![0u8; HEADER];
    out.push(CLUSTER_VERSION);
    // Encoding into a Vec fails only past the byte limit, which no message we build reaches.
    let body = bincode::serde::encode_to_vec(msg, config())
        .unwrap_or_else(|e| unreachable!("cluster messages encode: {e}"));
    out.extend_from_slice(&body);
    let len = (out.len() - HEADER) as u32;
    out[..HEADER].copy_from_slice(&len.to_be_bytes());
    out
}

/// Decodes one frame from the front of `buf`: `Ok(Some((message, bytes used)))`, `Ok(None)`
/// when more bytes are needed, or an error for a frame that can never decode.
pub fn decode_frame<T: DeserializeOwned>(
    buf: &[u8],
    max: usize,
) -> Result<Option<(T, usize)>, DecodeError> {
    let Some(len_bytes) = buf.get(..HEADER) else {
        return Ok(None);
    };
    let mut len_arr = [0u8; HEADER];
    len_arr.copy_from_slice(len_bytes);
    let len = u32::from_be_bytes(len_arr) as usize;
    if len > max {
        return Err(DecodeError::TooLarge { len, max });
    }
    if len == 0 {
        return Err(DecodeError::Malformed("empty cluster frame".into()));
    }
    let Some(frame) = buf.get(HEADER..HEADER + len) else {
        return Ok(None);
    };
    if frame[0] != CLUSTER_VERSION {
        return Err(DecodeError::Version(frame[0]));
    }
    let (msg, used) = bincode::serde::decode_from_slice(&frame[1..], config())
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if used != len - 1 {
        return Err(DecodeError::Malformed(
            "trailing bytes in cluster frame".into(),
        ));
    }
    Ok(Some((msg, HEADER + len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<ClusterMessage> {
        let quiz = QuizId::parse("K7M3QX").unwrap();
        vec![
            ClusterMessage::Hello {
                node: NodeId("node-1".into()),
                cluster: "local".into(),
            },
            ClusterMessage::Request {
                id: 7,
                quiz: quiz.clone(),
                request: EdgeRequest::Answer {
                    player: PlayerNo(3),
                    question: 1,
                    answer_id: AnswerId::parse("a-1").unwrap(),
                    answer: Answer::Pairs(vec![(0, 1), (1, 0)]),
                },
            },
            ClusterMessage::Reply {
                id: 7,
                reply: OwnerReply::Error(Rejection {
                    code: ErrorCode::TooLate,
                    message: "time is up".into(),
                    answer_id: None,
                }),
            },
            ClusterMessage::Event {
                quiz,
                event: OwnerEvent::Leaderboard(LeaderboardUpdate {
                    version: 9,
                    full: false,
                    continues: false,
                    more: false,
                    players: 2,
                    answered: 1,
                    top: vec![TopEntry("Ana".into(), 950)],
                    changes: vec![Standing {
                        player: PlayerNo(1),
                        score: 950,
                        tiebreak: 812,
                    }],
                    removed: vec![],
                }),
            },
            ClusterMessage::Requests,
            ClusterMessage::Ring {
                epoch: 2,
                members: vec![RingMember {
                    node: NodeId("node-1".into()),
                    weight: 1,
                    ws_url: "ws://127.0.0.1:7001/v1/ws".into(),
                    cluster_addr: "127.0.0.1:7101".into(),
                }],
            },
        ]
    }

    #[test]
    fn round_trip() {
        for m in samples() {
            let bytes = encode_frame(&m);
            let (back, used) = decode_frame::<ClusterMessage>(&bytes, DEFAULT_MAX_CLUSTER_FRAME)
                .unwrap()
                .unwrap();
            assert_eq!(back, m);
            assert_eq!(used, bytes.len());
        }
    }

    #[test]
    fn truncated_frames_need_more_bytes() {
        for m in samples() {
            let bytes = encode_frame(&m);
            for cut in 0..bytes.len() {
                let r = decode_frame::<ClusterMessage>(&bytes[..cut], DEFAULT_MAX_CLUSTER_FRAME);
                assert_eq!(r, Ok(None), "cut at {cut}");
            }
        }
    }

    #[test]
    fn two_frames_back_to_back() {
        let s = samples();
        let mut bytes = encode_frame(&s[0]);
        bytes.extend(encode_frame(&s[1]));
        let (first, used) = decode_frame::<ClusterMessage>(&bytes, DEFAULT_MAX_CLUSTER_FRAME)
            .unwrap()
            .unwrap();
        assert_eq!(first, s[0]);
        let (second, _) = decode_frame::<ClusterMessage>(&bytes[used..], DEFAULT_MAX_CLUSTER_FRAME)
            .unwrap()
            .unwrap();
        assert_eq!(second, s[1]);
    }

    #[test]
    fn oversized_is_refused_from_the_header_alone() {
        let header = (10_000_000u32).to_be_bytes();
        let r = decode_frame::<ClusterMessage>(&header, DEFAULT_MAX_CLUSTER_FRAME);
        assert!(matches!(r, Err(DecodeError::TooLarge { .. })));
    }

    #[test]
    fn another_version_is_refused() {
        let mut bytes = encode_frame(&samples()[0]);
        bytes[HEADER] = 9;
        let r = decode_frame::<ClusterMessage>(&bytes, DEFAULT_MAX_CLUSTER_FRAME);
        assert_eq!(r, Err(DecodeError::Version(9)));
    }

    #[test]
    fn malformed_bodies_are_errors() {
        // A valid header around garbage, and a valid frame with a flipped variant tag.
        let mut garbage = vec![0, 0, 0, 5, CLUSTER_VERSION, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            decode_frame::<ClusterMessage>(&garbage, DEFAULT_MAX_CLUSTER_FRAME),
            Err(DecodeError::Malformed(_))
        ));
        garbage[5] = 200;
        assert!(decode_frame::<ClusterMessage>(&garbage, DEFAULT_MAX_CLUSTER_FRAME).is_err());
        let mut bytes = encode_frame(&samples()[1]);
        bytes.push(0);
        let len = (bytes.len() - HEADER) as u32;
        bytes[..HEADER].copy_from_slice(&len.to_be_bytes());
        assert!(matches!(
            decode_frame::<ClusterMessage>(&bytes, DEFAULT_MAX_CLUSTER_FRAME),
            Err(DecodeError::Malformed(_))
        ));
    }
}
