//! The wire types of the quiz cluster, and their codecs. Pure: no I/O, no clock, no runtime.
//!
//! - [`client`]: protocol v1 between phones and edges (JSON text frames), documented for
//!   mobile developers in `protocol/PROTOCOL.md`.
//! - [`cluster`]: messages between nodes and between the router and nodes (bincode frames,
//!   versioned, carried over QUIC).
//! - [`question`] and [`quiz`]: the content model (the JSON import format) and quiz settings.
//! - [`ids`]: validated identifiers.
//! - [`ring`]: which shard node owns a quiz (consistent hashing with virtual nodes).
//!
//! Decoding never panics: input from the network is either a message, "need more bytes" (for
//! the length-prefixed cluster stream) or a [`DecodeError`].

pub mod client;
pub mod cluster;
pub mod ids;
pub mod question;
pub mod quiz;
pub mod ring;
pub mod session;

pub use ids::{AnswerId, Epoch, NodeId, PlayerNo, QuizId, UserId};
pub use question::{
    Answer, ContentError, Level, Question, QuestionBody, QuestionKind, QuestionSet,
};
pub use quiz::{AutoAdvance, HostCommand, Mode, Phase, QuizSettings, Scoring};

use serde::{Deserialize, Serialize};

/// Why a frame could not be decoded.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("frame of {len} bytes is over the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("frame is not valid UTF-8")]
    InvalidUtf8,
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    #[error("invalid field: {0}")]
    InvalidField(String),
    #[error("bad answer: {0}")]
    BadAnswer(String),
    #[error("unsupported cluster protocol version {0}")]
    Version(u8),
}

/// Why an identifier was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum IdError {
    #[error("a quiz id is 6 characters from ACDEFGHJKMNPQRTWXY34679")]
    QuizId,
    #[error("a user id is 1-128 characters without control characters")]
    UserId,
    #[error("an answer id is 1-64 printable ASCII characters")]
    AnswerId,
}

/// Every error code a client can receive, in an error frame or an HTTP error body.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    // Frames a phone sends.
    /// Not JSON, not an object, a missing or mistyped field.
    BadMessage,
    /// A `type` this server does not know.
    UnknownType,
    /// The answer's shape does not fit the question, or a choice is out of range.
    BadAnswer,
    /// A frame other than `join` before `join`.
    NotJoined,
    // The quiz's rules.
    /// No such question index, or not the current one.
    UnknownQuestion,
    /// The question is not open (not started yet, or already closed).
    NotOpen,
    /// The answer arrived after the deadline (server time).
    TooLate,
    /// The question is paused; send again after it resumes.
    QuestionPaused,
    /// A different answer to this question was already accepted.
    AlreadyAnswered,
    /// A host command from a player.
    NotHost,
    /// A host command that does not apply in this phase.
    BadCommand,
    /// `kick` of a nickname that is not in the quiz.
    UnknownPlayer,
    /// A message for the other mode (`next` in a live quiz).
    WrongMode,
    QuizEnded,
    UnknownQuiz,
    QuizFull,
    NicknameInvalid,
    NicknameNotAllowed,
    /// The host removed you from this quiz.
    Kicked,
    // Limits and faults.
    RateLimited,
    /// A store or the quiz's owner is unavailable; retry with the same answer id.
    Unavailable,
    Internal,
    // HTTP API.
    Unauthorized,
    TokenExpired,
    Forbidden,
    BadRequest,
    NotFound,
    InvalidContent,
    Conflict,
}

impl ErrorCode {
    /// Whether the same request may succeed later.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::RateLimited
                | ErrorCode::Unavailable
                | ErrorCode::Internal
                | ErrorCode::QuestionPaused
        )
    }

    /// The wire name, such as `too_late`.
    pub fn as_str(self) -> &'static str {
        // A static table keeps this allocation-free; a test checks it against serde's names.
        match self {
            ErrorCode::BadMessage => "bad_message",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::BadAnswer => "bad_answer",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::UnknownQuestion => "unknown_question",
            ErrorCode::NotOpen => "not_open",
            ErrorCode::TooLate => "too_late",
            ErrorCode::QuestionPaused => "question_paused",
            ErrorCode::AlreadyAnswered => "already_answered",
            ErrorCode::NotHost => "not_host",
            ErrorCode::BadCommand => "bad_command",
            ErrorCode::UnknownPlayer => "unknown_player",
            ErrorCode::WrongMode => "wrong_mode",
            ErrorCode::QuizEnded => "quiz_ended",
            ErrorCode::UnknownQuiz => "unknown_quiz",
            ErrorCode::QuizFull => "quiz_full",
            ErrorCode::NicknameInvalid => "nickname_invalid",
            ErrorCode::NicknameNotAllowed => "nickname_not_allowed",
            ErrorCode::Kicked => "kicked",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::NotFound => "not_found",
            ErrorCode::InvalidContent => "invalid_content",
            ErrorCode::Conflict => "conflict",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_code_names_match_serde() {
        let all = [
            ErrorCode::BadMessage,
            ErrorCode::UnknownType,
            ErrorCode::BadAnswer,
            ErrorCode::NotJoined,
            ErrorCode::UnknownQuestion,
            ErrorCode::NotOpen,
            ErrorCode::TooLate,
            ErrorCode::QuestionPaused,
            ErrorCode::AlreadyAnswered,
            ErrorCode::NotHost,
            ErrorCode::BadCommand,
            ErrorCode::UnknownPlayer,
            ErrorCode::WrongMode,
            ErrorCode::QuizEnded,
            ErrorCode::UnknownQuiz,
            ErrorCode::QuizFull,
            ErrorCode::NicknameInvalid,
            ErrorCode::NicknameNotAllowed,
            ErrorCode::Kicked,
            ErrorCode::RateLimited,
            ErrorCode::Unavailable,
            ErrorCode::Internal,
            ErrorCode::Unauthorized,
            ErrorCode::TokenExpired,
            ErrorCode::Forbidden,
            ErrorCode::BadRequest,
            ErrorCode::NotFound,
            ErrorCode::InvalidContent,
            ErrorCode::Conflict,
        ];
        for code in all {
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json.as_str(), Some(code.as_str()));
        }
    }
}
