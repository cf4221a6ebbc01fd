//! Identifiers that cross a process boundary: quiz codes, users, answers, nodes.
//!
//! Every identifier is validated where it is parsed, so code that holds one can trust it.
//! Quiz codes are what a person types on a phone: short, case-insensitive, and drawn from an
//! alphabet without look-alike characters.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::IdError;

/// The characters a quiz code is made of: no `0/O`, `1/I/L`, `2/Z`, `5/S`, `8/B`, `U/V`.
pub const QUIZ_ID_ALPHABET: &[u8] = b"ACDEFGHJKMNPQRTWXY34679";
/// Length of a quiz code. 23^6 ≈ 148 million codes; the router rate-limits join attempts so
/// that guessing one is impractical.
pub const QUIZ_ID_LEN: usize = 6;

/// A quiz code such as `K7M3QX`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct QuizId(String);

impl QuizId {
    /// Parses what a person typed: case is ignored, and spaces and dashes are dropped.
    pub fn parse(input: &str) -> Result<Self, IdError> {
        let code: String = input
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        if code.len() != QUIZ_ID_LEN {
            return Err(IdError::QuizId);
        }
        if !code.bytes().all(|b| QUIZ_ID_ALPHABET.contains(&b)) {
            return Err(IdError::QuizId);
        }
        Ok(Self(code))
    }

    /// Builds a code from random numbers (one per character); the caller supplies randomness so
    /// this crate stays free of it.
    pub fn from_random(random: [u32; QUIZ_ID_LEN]) -> Self {
        let code = random
            .iter()
            .map(|r| QUIZ_ID_ALPHABET[*r as usize % QUIZ_ID_ALPHABET.len()] as char)
            .collect();
        Self(code)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for QuizId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        QuizId::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for QuizId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for QuizId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QuizId({})", self.0)
    }
}

/// Maximum length of a user id (the `sub` claim of the identity provider's token).
pub const USER_ID_MAX: usize = 128;

/// A user as the identity provider names them (the JWT `sub`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct UserId(String);

impl UserId {
    pub fn parse(input: &str) -> Result<Self, IdError> {
        if input.is_empty() || input.len() > USER_ID_MAX || input.chars().any(char::is_control) {
            return Err(IdError::UserId);
        }
        Ok(Self(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        UserId::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({})", self.0)
    }
}

/// Maximum length of a client-chosen answer id.
pub const ANSWER_ID_MAX: usize = 64;

/// The idempotency key a phone attaches to an answer; a retry carries the same one.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct AnswerId(String);

impl AnswerId {
    /// 1 to 64 printable ASCII characters (a UUID fits).
    pub fn parse(input: &str) -> Result<Self, IdError> {
        let ok = !input.is_empty()
            && input.len() <= ANSWER_ID_MAX
            && input.bytes().all(|b| b.is_ascii_graphic());
        if ok {
            Ok(Self(input.to_owned()))
        } else {
            Err(IdError::AnswerId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for AnswerId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        AnswerId::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for AnswerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AnswerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AnswerId({})", self.0)
    }
}

/// A player's number within one quiz, assigned in join order from 1. Compact, so that
/// leaderboard deltas between nodes stay small.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct PlayerNo(pub u32);

impl fmt::Display for PlayerNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A shard node's stable name in the cluster, such as `node-1`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct NodeId(pub String);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The fencing epoch of a quiz's ownership: every durable write carries it, and a write with
/// an older epoch than the store's is refused. Always 1 until ownership can move.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct Epoch(pub u64);

impl Epoch {
    pub const FIRST: Epoch = Epoch(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiz_id_is_forgiving_about_case_spaces_and_dashes() {
        let id = QuizId::parse(" k7m-3qx ").unwrap();
        assert_eq!(id.as_str(), "K7M3QX");
    }

    #[test]
    fn quiz_id_rejects_look_alikes_and_wrong_lengths() {
        for bad in [
            "K7M3Q0", "K7M3QO", "K1M3QX", "K7M3Q", "K7M3QXX", "", "K7M3Q!",
        ] {
            assert!(QuizId::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn quiz_id_from_random_uses_only_the_alphabet() {
        let id = QuizId::from_random([0, 1, 22, 23, 1000, u32::MAX]);
        assert!(QuizId::parse(id.as_str()).is_ok());
    }

    #[test]
    fn answer_id_limits() {
        assert!(AnswerId::parse("a1b2-c3").is_ok());
        assert!(AnswerId::parse("").is_err());
        assert!(AnswerId::parse("has space").is_err());
        assert!(AnswerId::parse(&"x".repeat(65)).is_err());
    }

    #[test]
    fn quiz_id_deserialize_validates() {
        let ok: QuizId = serde_json::from_str("\"k7m3qx\"").unwrap();
        assert_eq!(ok.as_str(), "K7M3QX");
        assert!(serde_json::from_str::<QuizId>("\"nope\"").is_err());
    }
}
