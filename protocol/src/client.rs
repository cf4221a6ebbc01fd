//! Client protocol v1: JSON text frames between a phone and an edge.
//!
//! Every frame is one JSON object with a `type`. [`decode_client`] turns a frame from a phone
//! into a [`ClientMessage`] or a [`DecodeError`] that says what was wrong; it never panics.
//! [`ServerMessage`] is what phones receive. `PROTOCOL.md` beside this crate documents every
//! message with an example; the tests at the bottom keep the two in step.

use serde::{Deserialize, Serialize};

use crate::ids::AnswerId;
use crate::question::{Answer, Level, MAX_TYPED_ANSWER_CHARS, QuestionKind};
use crate::quiz::{AutoAdvance, HostCommand, Mode, Phase, Scoring};
use crate::{DecodeError, ErrorCode};

/// The client protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// Default largest frame a phone may send; bigger frames close the socket with 1009.
pub const DEFAULT_MAX_FRAME: usize = 64 * 1024;
/// Longest list (choices, tiles, pairs) an answer may carry.
pub const MAX_ANSWER_ITEMS: usize = 16;

/// A frame from a phone.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// First frame on every connection. `last_seq` (the highest `seq` seen) asks to resume.
    Join {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_seq: Option<u64>,
    },
    Answer(AnswerFrame),
    /// Self-paced mode: open my next question. `ref` is echoed in an `error` reply.
    Next {
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
    /// Leave the quiz: the server closes the connection (1000). Your place and score stay on
    /// the leaderboard, as after a dropped connection, and you may join again.
    Leave,
    /// An application-level heartbeat for clients that cannot see WebSocket pings; answered
    /// with `pong` (echoing `ref`).
    Ping {
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
    /// Host controls; refused with `not_host` for players.
    Host(HostFrame),
}

/// The `type` values [`ClientMessage`] knows, for telling "unknown type" from "bad fields".
const CLIENT_TYPES: &[&str] = &["join", "answer", "next", "leave", "host", "ping"];

/// An answer to question `question` (0-based index). Exactly one of the answer fields is set,
/// the one that fits the question's kind.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct AnswerFrame {
    pub question: u32,
    pub answer_id: AnswerId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choice: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choices: Option<Vec<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<Vec<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairs: Option<Vec<[u32; 2]>>,
}

impl Default for AnswerId {
    fn default() -> Self {
        // An id that parses; only used to fill a frame before the real id is set.
        AnswerId::parse("-").unwrap_or_else(|_| unreachable!("'-' is a valid answer id"))
    }
}

impl AnswerFrame {
    /// A frame carrying `answer`.
    pub fn new(question: u32, answer_id: AnswerId, answer: &Answer) -> Self {
        let mut f = AnswerFrame {
            question,
            answer_id,
            ..Default::default()
        };
        match answer {
            Answer::Choice(c) => f.choice = Some(*c),
            Answer::Choices(c) => f.choices = Some(c.clone()),
            Answer::Bool(b) => f.value = Some(*b),
            Answer::Text(t) => f.text = Some(t.clone()),
            Answer::Order(o) => f.order = Some(o.clone()),
            Answer::Pairs(p) => f.pairs = Some(p.iter().map(|(l, r)| [*l, *r]).collect()),
        }
        f
    }

    /// The one answer this frame carries, or why it carries none.
    pub fn answer(&self) -> Result<Answer, DecodeError> {
        let mut found = Vec::with_capacity(1);
        if let Some(c) = self.choice {
            found.push(Answer::Choice(c));
        }
        if let Some(c) = &self.choices {
            found.push(Answer::Choices(c.clone()));
        }
        if let Some(v) = self.value {
            found.push(Answer::Bool(v));
        }
        if let Some(t) = &self.text {
            if t.chars().count() > MAX_TYPED_ANSWER_CHARS {
                return Err(DecodeError::BadAnswer(
                    "text is longer than 200 characters".into(),
                ));
            }
            found.push(Answer::Text(t.clone()));
        }
        if let Some(o) = &self.order {
            found.push(Answer::Order(o.clone()));
        }
        if let Some(p) = &self.pairs {
            found.push(Answer::Pairs(p.iter().map(|[l, r]| (*l, *r)).collect()));
        }
        let too_long = |n: usize| n > MAX_ANSWER_ITEMS;
        match found.pop() {
            Some(a) if found.is_empty() => match &a {
                Answer::Choices(v) | Answer::Order(v) if too_long(v.len()) => {
                    Err(DecodeError::BadAnswer("more than 16 items".into()))
                }
                Answer::Pairs(v) if too_long(v.len()) => {
                    Err(DecodeError::BadAnswer("more than 16 pairs".into()))
                }
                _ => Ok(a),
            },
            _ => Err(DecodeError::BadAnswer(
                "exactly one of choice, choices, value, text, order, pairs must be set".into(),
            )),
        }
    }
}

/// A host command; `player` (a nickname) is needed by `kick` only. `ref`, if set, is echoed
/// in the `host_ok` or `error` reply.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct HostFrame {
    pub command: HostCommand,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub player: Option<String>,
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// Longest `ref` a client may attach to a request.
pub const MAX_REF_LEN: usize = 64;

/// Decodes one text frame from a phone. `max` is the largest frame accepted.
pub fn decode_client(frame: &[u8], max: usize) -> Result<ClientMessage, DecodeError> {
    if frame.len() > max {
        return Err(DecodeError::TooLarge {
            len: frame.len(),
            max,
        });
    }
    let text = std::str::from_utf8(frame).map_err(|_| DecodeError::InvalidUtf8)?;
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    let Some(obj) = value.as_object() else {
        return Err(DecodeError::Malformed(
            "a frame must be a JSON object".into(),
        ));
    };
    let kind = match obj.get("type") {
        Some(serde_json::Value::String(t)) => t.as_str(),
        Some(_) => return Err(DecodeError::Malformed("`type` must be a string".into())),
        None => return Err(DecodeError::Malformed("missing `type`".into())),
    };
    if !CLIENT_TYPES.contains(&kind) {
        return Err(DecodeError::UnknownType(kind.chars().take(40).collect()));
    }
    let msg: ClientMessage =
        serde_json::from_value(value).map_err(|e| DecodeError::InvalidField(e.to_string()))?;
    let reference = match &msg {
        ClientMessage::Next { reference } => reference.as_deref(),
        ClientMessage::Host(h) => h.reference.as_deref(),
        ClientMessage::Ping { reference } => reference.as_deref(),
        _ => None,
    };
    if reference.is_some_and(|r| r.len() > MAX_REF_LEN) {
        return Err(DecodeError::InvalidField(
            "`ref` is longer than 64 bytes".into(),
        ));
    }
    Ok(msg)
}

/// Encodes a frame for a phone.
pub fn encode_server(msg: &ServerMessage) -> Vec<u8> {
    // Serialising these plain structs cannot fail: no maps with non-string keys, no floats.
    serde_json::to_vec(msg).unwrap_or_else(|e| unreachable!("server frames serialise: {e}"))
}

/// Decodes a frame from the server (used by client SDKs).
pub fn decode_server(frame: &[u8]) -> Result<ServerMessage, DecodeError> {
    serde_json::from_slice(frame).map_err(|e| DecodeError::Malformed(e.to_string()))
}

/// A frame to a phone.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Reply to `join` (first join, or a resume the server cannot replay): the whole state.
    Welcome(Box<Welcome>),
    /// Reply to a `join` with `last_seq` that can be replayed: the missed events follow.
    Resumed(Resumed),
    /// A self-paced quiz opened: send `next` for your first question.
    Started(Started),
    Question(QuestionFrame),
    Closed(Closed),
    Reveal(Box<Reveal>),
    Paused(Paused),
    Unpaused(Unpaused),
    Ended(Ended),
    Ack(Ack),
    Leaderboard(LeaderboardFrame),
    HostOk(HostOk),
    /// The answer to a `ping`.
    Pong(Pong),
    Error(ErrorFrame),
}

impl ServerMessage {
    /// The quiz-wide sequence number, for frames that carry one.
    pub fn seq(&self) -> Option<u64> {
        match self {
            ServerMessage::Welcome(w) => Some(w.seq),
            ServerMessage::Resumed(r) => Some(r.to_seq),
            ServerMessage::Started(s) => Some(s.seq),
            ServerMessage::Question(q) => q.seq,
            ServerMessage::Closed(c) => Some(c.seq),
            ServerMessage::Reveal(r) => r.seq,
            ServerMessage::Paused(p) => Some(p.seq),
            ServerMessage::Unpaused(u) => Some(u.seq),
            ServerMessage::Ended(e) => Some(e.seq),
            _ => None,
        }
    }
}

/// Whether a connection is a player's or the host's.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Host,
    Player,
}

/// The quiz, as a phone sees it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct QuizInfo {
    pub id: String,
    pub title: String,
    pub mode: Mode,
    pub scoring: Scoring,
    pub question_count: u32,
    /// Live quizzes that pace themselves: how long after a close the reveal comes, and how
    /// long after a reveal the next question opens. Absent when the host drives every step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_advance: Option<AutoAdvance>,
}

/// Who you are in this quiz.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct You {
    pub role: Role,
    /// Your nickname, with the suffix the server added if another player had it first.
    /// Empty for a host.
    pub nickname: String,
    pub score: u32,
    /// 1-based (players are ranked from the moment they join); 0 for a host.
    pub rank: u32,
}

#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Welcome {
    /// The client protocol version the server speaks ([`PROTOCOL_VERSION`]).
    pub protocol: u32,
    /// The quiz's sequence number now; resume from it.
    pub seq: u64,
    pub quiz: QuizInfo,
    pub you: You,
    pub phase: Phase,
    /// Self-paced, once started: time left until the quiz ends for everyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_in_ms: Option<u64>,
    /// The open (or paused or closed) question, if any; for self-paced, your current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question: Option<QuestionFrame>,
    /// Your acknowledged answer to that question, if you gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered: Option<Ack>,
    /// The last reveal, while the quiz is in the reveal phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reveal: Option<Box<Reveal>>,
    pub leaderboard: LeaderboardFrame,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Resumed {
    /// The first replayed `seq`; events `from_seq..=to_seq` follow in order.
    pub from_seq: u64,
    pub to_seq: u64,
    pub you: You,
}

/// A question, without its answer.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct QuestionFrame {
    /// Absent in self-paced mode, where questions are per player.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// 0-based position in the quiz.
    pub index: u32,
    pub count: u32,
    pub kind: QuestionKind,
    pub level: Level,
    pub topic: String,
    pub prompt: String,
    /// single_choice, multiple_select, poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<String>>,
    /// word_order, shuffled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiles: Option<Vec<String>>,
    /// matching: the left column in order, the right column shuffled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub right: Option<Vec<String>>,
    pub time_limit_ms: u32,
    /// Time left when this frame was sent; phones count down from it.
    pub ends_in_ms: u32,
    pub points: u32,
    pub multiplier: u8,
}

/// A self-paced quiz's window opened.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Started {
    pub seq: u64,
    /// Time left until the quiz ends for everyone.
    pub ends_in_ms: u64,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Closed {
    pub seq: u64,
    pub index: u32,
}

/// The right answer, in the same fields an answer uses (indices as shown to phones).
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Correct {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choice: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choices: Option<Vec<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<bool>,
    /// Typed answer: the accepted answers, the first being the preferred one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<Vec<String>>,
    /// Word order: tile indices (as shown) in the right order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<Vec<u32>>,
    /// Word order: the sentence, for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentence: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairs: Option<Vec<[u32; 2]>>,
}

/// How everyone answered one question.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Stats {
    pub answered: u32,
    /// Fully correct answers.
    pub correct: u32,
    /// Mean response time of all answers, in ms; absent when nobody answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_ms: Option<u32>,
    /// Answers per option (choice, multiple select, poll) or `[true, false]` (true/false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<Vec<u32>>,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Reveal {
    /// Absent in self-paced mode, where reveals are per player.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    pub index: u32,
    /// Absent for a poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correct: Option<Correct>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanation: Option<String>,
    pub stats: Stats,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Paused {
    pub seq: u64,
    pub index: u32,
    pub remaining_ms: u32,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Unpaused {
    pub seq: u64,
    pub index: u32,
    pub ends_in_ms: u32,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Ended {
    pub seq: u64,
    /// Final top N.
    pub top: Vec<TopEntry>,
    pub players: u32,
}

/// The answer to your `answer`: what it scored. A retry with the same `answer_id` gets the
/// same frame.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Ack {
    pub answer_id: AnswerId,
    pub question: u32,
    /// Points for this answer, streak bonus included.
    pub points: u32,
    /// Your score after it.
    pub total: u32,
    /// Your rank after it (1-based).
    pub rank: u32,
    /// Consecutive fully correct answers, this one included.
    pub streak: u32,
}

/// One leaderboard row: `[nickname, score]`; its rank is its position + 1.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct TopEntry(pub String, pub u32);

/// Your rank and score.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RankScore {
    pub rank: u32,
    pub score: u32,
}

/// The live leaderboard. Sent at most once per coalescing interval, only when something the
/// phone shows changed: `top` is present when the top N changed, `you` when your rank or score
/// changed. `v` only increases.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct LeaderboardFrame {
    pub v: u64,
    pub players: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top: Option<Vec<TopEntry>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub you: Option<RankScore>,
    /// Hosts only: answers in for the current question.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered: Option<u32>,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct HostOk {
    pub command: HostCommand,
    pub phase: Phase,
    /// The `ref` of the host frame, if it had one.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Pong {
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ErrorFrame {
    pub code: ErrorCode,
    pub message: String,
    /// True when sending the same frame again later may succeed.
    pub retryable: bool,
    /// The answer this error is about, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_id: Option<AnswerId>,
    /// The `ref` of the request this error answers, if it had one.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

impl ErrorFrame {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retryable: code.retryable(),
            answer_id: None,
            reference: None,
        }
    }
}

/// WebSocket close codes the edge uses.
pub mod close {
    /// The quiz ended and the grace period is over, or the player left.
    pub const NORMAL: u16 = 1000;
    /// The node is shutting down; reconnect (to another edge).
    pub const GOING_AWAY: u16 = 1001;
    /// A binary frame; this protocol is text only.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// A frame that breaks RFC 6455: unmasked, a new message inside a fragmented one, bad
    /// framing.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame that is not UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// Too many bad frames, or no `join` within the join timeout.
    pub const POLICY: u16 = 1008;
    /// A frame over the size limit.
    pub const TOO_BIG: u16 = 1009;
    /// The server failed; reconnect and resume.
    pub const INTERNAL: u16 = 1011;
    /// The host removed this player.
    pub const KICKED: u16 = 4003;
    /// The quiz does not exist (any more) on this cluster.
    pub const QUIZ_GONE: u16 = 4004;
    /// The phone did not read its frames fast enough; reconnect and resume.
    pub const TOO_SLOW: u16 = 4008;
    /// No pong or frame for too long.
    pub const TIMEOUT: u16 = 4009;
}

impl From<&DecodeError> for ErrorCode {
    fn from(e: &DecodeError) -> Self {
        match e {
            DecodeError::UnknownType(_) => ErrorCode::UnknownType,
            DecodeError::BadAnswer(_) => ErrorCode::BadAnswer,
            _ => ErrorCode::BadMessage,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = DEFAULT_MAX_FRAME;

    fn aid(s: &str) -> AnswerId {
        AnswerId::parse(s).unwrap()
    }

    #[test]
    fn client_messages_round_trip() {
        let msgs = vec![
            ClientMessage::Join { last_seq: None },
            ClientMessage::Join { last_seq: Some(41) },
            ClientMessage::Answer(AnswerFrame::new(3, aid("a-1"), &Answer::Choice(2))),
            ClientMessage::Answer(AnswerFrame::new(
                0,
                aid("a-2"),
                &Answer::Pairs(vec![(0, 1)]),
            )),
            ClientMessage::Next { reference: None },
            ClientMessage::Next {
                reference: Some("n1".into()),
            },
            ClientMessage::Leave,
            ClientMessage::Host(HostFrame {
                command: HostCommand::Kick,
                player: Some("Bo".into()),
                reference: Some("h7".into()),
            }),
        ];
        for m in msgs {
            let bytes = serde_json::to_vec(&m).unwrap();
            assert_eq!(decode_client(&bytes, MAX).unwrap(), m);
        }
    }

    #[test]
    fn documented_examples_decode() {
        let examples = [
            r#"{"type":"join"}"#,
            r#"{"type":"join","last_seq":17}"#,
            r#"{"type":"answer","question":0,"answer_id":"7f3c","choice":1}"#,
            r#"{"type":"answer","question":1,"answer_id":"7f3d","choices":[0,2]}"#,
            r#"{"type":"answer","question":2,"answer_id":"7f3e","value":false}"#,
            r#"{"type":"answer","question":3,"answer_id":"7f3f","text":"went"}"#,
            r#"{"type":"answer","question":4,"answer_id":"7f40","order":[2,0,1]}"#,
            r#"{"type":"answer","question":5,"answer_id":"7f41","pairs":[[0,1],[1,0]]}"#,
            r#"{"type":"next"}"#,
            r#"{"type":"leave"}"#,
            r#"{"type":"host","command":"start"}"#,
            r#"{"type":"host","command":"kick","player":"Bo"}"#,
            r#"{"type":"host","command":"next","ref":"h2"}"#,
            r#"{"type":"next","ref":"n1"}"#,
            r#"{"type":"ping"}"#,
            r#"{"type":"ping","ref":"p1"}"#,
        ];
        for e in examples {
            let m = decode_client(e.as_bytes(), MAX).unwrap_or_else(|err| panic!("{e}: {err}"));
            if let ClientMessage::Answer(a) = m {
                a.answer().unwrap();
            }
        }
    }

    #[test]
    fn truncated_frames_are_malformed() {
        let full = br#"{"type":"answer","question":0,"answer_id":"x","choice":1}"#;
        for cut in 0..full.len() {
            let err = decode_client(&full[..cut], MAX).unwrap_err();
            assert!(
                matches!(err, DecodeError::Malformed(_)),
                "cut at {cut}: {err:?}"
            );
        }
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let cases: &[&[u8]] = &[
            b"",
            b"null",
            b"[1,2]",
            b"\"join\"",
            b"{}",
            b"{\"type\":7}",
            b"{\"type\":\"answer\"}",
            b"{\"type\":\"answer\",\"question\":\"one\",\"answer_id\":\"a\",\"choice\":1}",
            b"{\"type\":\"answer\",\"question\":-1,\"answer_id\":\"a\",\"choice\":1}",
            b"{\"type\":\"answer\",\"question\":0,\"answer_id\":\"\",\"choice\":1}",
            b"{\"type\":\"host\",\"command\":\"explode\"}",
            b"{\"type\":\"join\",\"last_seq\":\"x\"}",
            b"{\"type\":\"next\",\"ref\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}",
        ];
        for c in cases {
            let err = decode_client(c, MAX).unwrap_err();
            assert!(
                matches!(
                    err,
                    DecodeError::Malformed(_) | DecodeError::InvalidField(_)
                ),
                "{}: {err:?}",
                String::from_utf8_lossy(c)
            );
        }
    }

    #[test]
    fn unknown_type_is_named() {
        let err = decode_client(br#"{"type":"dance"}"#, MAX).unwrap_err();
        assert_eq!(err, DecodeError::UnknownType("dance".into()));
        assert_eq!(ErrorCode::from(&err), ErrorCode::UnknownType);
    }

    #[test]
    fn oversized_and_invalid_utf8() {
        let big = vec![b' '; MAX + 1];
        assert!(matches!(
            decode_client(&big, MAX),
            Err(DecodeError::TooLarge { .. })
        ));
        assert_eq!(
            decode_client(&[0xff, 0xfe], MAX),
            Err(DecodeError::InvalidUtf8)
        );
    }

    #[test]
    fn an_answer_carries_exactly_one_value() {
        let two = AnswerFrame {
            choice: Some(1),
            value: Some(true),
            ..AnswerFrame::new(0, aid("a"), &Answer::Choice(1))
        };
        assert!(matches!(two.answer(), Err(DecodeError::BadAnswer(_))));
        let none = AnswerFrame {
            question: 0,
            answer_id: aid("a"),
            ..Default::default()
        };
        assert!(matches!(none.answer(), Err(DecodeError::BadAnswer(_))));
        let long = AnswerFrame::new(0, aid("a"), &Answer::Text("x".repeat(201)));
        assert!(matches!(long.answer(), Err(DecodeError::BadAnswer(_))));
    }

    #[test]
    fn server_messages_round_trip() {
        let lb = LeaderboardFrame {
            v: 3,
            players: 2,
            top: Some(vec![TopEntry("Ana".into(), 900), TopEntry("Bo".into(), 0)]),
            you: Some(RankScore { rank: 2, score: 0 }),
            answered: None,
        };
        let msgs = vec![
            ServerMessage::Leaderboard(lb),
            ServerMessage::Closed(Closed { seq: 4, index: 0 }),
            ServerMessage::Error(ErrorFrame::new(ErrorCode::TooLate, "time is up")),
        ];
        for m in msgs {
            let bytes = encode_server(&m);
            assert_eq!(decode_server(&bytes).unwrap(), m);
        }
        let text = String::from_utf8(encode_server(&ServerMessage::Leaderboard(
            LeaderboardFrame {
                v: 1,
                players: 1,
                top: Some(vec![TopEntry("Ana".into(), 900)]),
                you: None,
                answered: None,
            },
        )))
        .unwrap();
        assert_eq!(
            text,
            r#"{"type":"leaderboard","v":1,"players":1,"top":[["Ana",900]]}"#
        );
    }
}
