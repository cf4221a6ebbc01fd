//! Nickname rules: trimmed, 1-20 characters, no control characters, not on the word list for a
//! children's audience, and unique within a quiz (a suffix is added).

use quiz_protocol::ErrorCode;

use crate::session::Reject;

/// Longest nickname, in characters.
pub const MAX_NICKNAME_CHARS: usize = 20;

/// Checks and trims a nickname as a person typed it. Codes: `nickname_invalid`,
/// `nickname_not_allowed`.
pub fn clean(input: &str) -> Result<String, Reject> {
    let _ = (input, ErrorCode::NicknameInvalid);
    todo!()
}
