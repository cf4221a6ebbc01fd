//! Nickname rules: trimmed, 1-20 characters, no control characters, not on the word list for a
//! children's audience, and unique within a quiz (a suffix is added).
//!
//! The word filter is deliberately small and whole-word: it catches the words children try
//! first, spelled with the usual disguises (`5h1t`, `a$$`, `f.u.c.k`, `fuuuck`, `Bas Tard`),
//! without refusing `Cassandra` or `Scunthorpe`. It is a first line, not moderation: hosts can
//! still kick. The list is stored in ROT13 so the source reads cleanly; [`blocked_words`]
//! decodes it.

use quiz_protocol::ErrorCode;

use crate::grade::push_folded;
use crate::session::Reject;

/// Longest nickname, in characters.
pub const MAX_NICKNAME_CHARS: usize = 20;

/// The blocked words, ROT13-encoded, lowercase.
const BLOCKED_ROT13: &[&str] = &[
    "shpx", "fuvg", "ovgpu", "phag", "qvpx", "pbpx", "chffl", "nff", "nffubyr", "onfgneq", "fyhg",
    "juber", "snt", "snttbg", "avttre", "avttn", "ergneq", "gjng", "jnaxre", "cvff", "cbea", "frk",
    "anmv", "cravf", "qvyqb",
];

/// Digits in a row that read as a number rather than as look-alike letters.
const NUMBER_DIGITS: usize = 3;

/// Endings that keep a blocked word blocked (`…s`, `…er`, `…ing`).
const SUFFIXES: &[&str] = &[
    "", "s", "es", "z", "er", "ers", "ed", "in", "ing", "y", "ie",
];

/// Checks and trims a nickname as a person typed it. Codes: `nickname_invalid`,
/// `nickname_not_allowed`.
pub fn clean(input: &str) -> Result<String, Reject> {
    let nickname = input.trim();
    let len = nickname.chars().count();
    if len == 0 || len > MAX_NICKNAME_CHARS {
        return Err(Reject::new(
            ErrorCode::NicknameInvalid,
            format!("a nickname is 1-{MAX_NICKNAME_CHARS} characters"),
        ));
    }
    if nickname.chars().any(is_invisible) {
        return Err(Reject::new(
            ErrorCode::NicknameInvalid,
            "a nickname cannot hold control or invisible characters",
        ));
    }
    if contains_blocked_word(nickname) {
        return Err(Reject::new(
            ErrorCode::NicknameNotAllowed,
            "please choose another nickname",
        ));
    }
    Ok(nickname.to_owned())
}

/// The form nicknames are compared in: `Ana` and `ANA` are the same nickname.
pub fn key(nickname: &str) -> String {
    nickname.to_lowercase()
}

/// `nickname`, or the first of `nickname 2`, `nickname 3`, … that is not `taken`, with the base
/// shortened so the whole stays within [`MAX_NICKNAME_CHARS`]. `taken` is asked about each
/// candidate as is; compare with [`key`] to make it case-insensitive.
pub fn unique(nickname: &str, taken: impl Fn(&str) -> bool) -> String {
    if !taken(nickname) {
        return nickname.to_owned();
    }
    // Terminates: each player takes one name, so at most that many suffixes are tried.
    (2u64..)
        .map(|n| {
            let suffix = format!(" {n}");
            let room = MAX_NICKNAME_CHARS.saturating_sub(suffix.len());
            let base: String = nickname.chars().take(room).collect();
            format!("{}{suffix}", base.trim_end())
        })
        .find(|candidate| !taken(candidate))
        .unwrap_or_default()
}

/// The decoded word list.
pub fn blocked_words() -> Vec<String> {
    BLOCKED_ROT13.iter().map(|w| rot13(w)).collect()
}

fn rot13(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'a'..='m' => (c as u8 + 13) as char,
            'n'..='z' => (c as u8 - 13) as char,
            _ => c,
        })
        .collect()
}

/// Control characters, and the invisible ones that can make two nicknames look alike or
/// flip the text direction on other players' screens.
fn is_invisible(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{feff}'
        )
}

/// Whether any run of the nickname's words, joined without separators, is a blocked word
/// (allowing repeated letters and a few endings).
fn contains_blocked_word(nickname: &str) -> bool {
    let words = words_of(nickname);
    let blocked = blocked_words();
    (0..words.len()).any(|start| {
        let mut joined = String::new();
        words[start..].iter().any(|w| {
            joined.push_str(w);
            blocked.iter().any(|b| is_disguised(&joined, b))
        })
    })
}

/// Lowercase words with accents folded and look-alike digits and symbols read as letters;
/// anything else separates words. A run of [`NUMBER_DIGITS`] or more digits is a number, not
/// a disguise: `p155` and `kid2010` are a name and a number (`5h1t` and `a55` still read as
/// words).
fn words_of(nickname: &str) -> Vec<String> {
    let chars: Vec<char> = nickname.chars().flat_map(char::to_lowercase).collect();
    let mut words = vec![String::new()];
    let mut i = 0;
    while i < chars.len() {
        let digits = chars[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits >= NUMBER_DIGITS {
            if words.last().is_some_and(|w| !w.is_empty()) {
                words.push(String::new());
            }
            i += digits;
            continue;
        }
        let c = chars[i];
        i += 1;
        let letter = match c {
            '0' => Some('o'),
            '1' | '!' | '|' => Some('i'),
            '3' => Some('e'),
            '4' | '@' => Some('a'),
            '5' | '$' => Some('s'),
            '7' => Some('t'),
            '8' => Some('b'),
            c if c.is_alphabetic() => Some(c),
            _ => None,
        };
        match (letter, words.last_mut()) {
            (Some(l), Some(word)) => push_folded(word, l),
            (None, Some(word)) if !word.is_empty() => words.push(String::new()),
            _ => {}
        }
    }
    words.retain(|w| !w.is_empty());
    words
}

/// `text` is `word` with some letters repeated (`fuuuck`) and one of [`SUFFIXES`] added.
fn is_disguised(text: &str, word: &str) -> bool {
    SUFFIXES.iter().any(|suffix| {
        text.strip_suffix(suffix)
            .is_some_and(|stem| stretches(stem, word))
    })
}

/// Whether `text` is `word` with each run of a letter at least as long as in `word`: `asss`
/// stretches `ass`, but `as` does not.
fn stretches(text: &str, word: &str) -> bool {
    let (text, word) = (runs(text), runs(word));
    text.len() == word.len()
        && text
            .iter()
            .zip(&word)
            .all(|((tc, tn), (wc, wn))| tc == wc && tn >= wn)
}

fn runs(s: &str) -> Vec<(char, usize)> {
    let mut out: Vec<(char, usize)> = Vec::new();
    for c in s.chars() {
        match out.last_mut() {
            Some((last, n)) if *last == c => *n += 1,
            _ => out.push((c, 1)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn code(input: &str) -> Option<ErrorCode> {
        clean(input).err().map(|r| r.code)
    }

    #[test]
    fn trims_and_counts_characters_not_bytes() {
        assert_eq!(clean("  Ana  ").unwrap(), "Ana");
        assert_eq!(clean("ÉÉÉÉÉÉÉÉÉÉÉÉÉÉÉÉÉÉÉÉ").unwrap().chars().count(), 20);
        assert_eq!(
            code("ÉÉÉÉÉÉÉÉÉÉÉÉÉÉÉÉÉÉÉÉÉ"),
            Some(ErrorCode::NicknameInvalid)
        );
        assert_eq!(code("   "), Some(ErrorCode::NicknameInvalid));
        assert_eq!(code(""), Some(ErrorCode::NicknameInvalid));
        assert_eq!(clean("李小龙").unwrap(), "李小龙");
    }

    #[test]
    fn control_and_invisible_characters_are_invalid() {
        for bad in ["An\na", "A\u{7}na", "Ana\u{200b}Bo", "\u{202e}anA"] {
            assert_eq!(code(bad), Some(ErrorCode::NicknameInvalid), "{bad:?}");
        }
    }

    #[test]
    fn blocked_words_and_their_disguises() {
        let bad = [
            "shit", "SHIT", "Sh1t", "5h!t", "big shit", "s.h.i.t", "s h i t", "shiiiit", "sh_it",
            "a$$", "@ss", "Bas Tard", "shits", "fucking", "ass 99", "shït",
        ];
        for b in bad {
            assert_eq!(code(b), Some(ErrorCode::NicknameNotAllowed), "{b:?}");
        }
    }

    #[test]
    fn innocent_names_containing_blocked_letters_pass() {
        let fine = [
            "Cassandra",
            "Scunthorpe",
            "Dickens",
            "As Soon",
            "Bass",
            "Class Act",
            "Peacock",
            "Sussex",
            "Assassin",
            "Glass 2",
            "Ana 2010",
            "as",
        ];
        for f in fine {
            assert!(clean(f).is_ok(), "{f:?} should be allowed");
        }
    }

    #[test]
    fn plain_names_with_numbers_pass() {
        // Names people and load tools make: a letter or a word and a number. Read as
        // look-alike letters, `p155` would be a blocked word.
        let fine = [
            "p155",
            "p1255",
            "p6455",
            "p0",
            "p5",
            "p55",
            "p1000",
            "p31337",
            "player 5155",
            "kid2010",
            "Lisa1",
            "Max123",
            "Tom99",
            "Sam 2",
            "Ana_007",
            "bot-4455",
            "x1",
            "Team 45",
            "class 7b",
            "user105",
            "Essex",
            "Ali 1955",
        ];
        for f in fine {
            assert!(clean(f).is_ok(), "{f:?} should be allowed");
        }
        // Fewer digits still read as letters, and a number does not hide a word beside it.
        for b in ["a55", "sh1t", "5h1t", "shit123", "123 shit", "a$$ 2010"] {
            assert_eq!(code(b), Some(ErrorCode::NicknameNotAllowed), "{b:?}");
        }
    }

    #[test]
    fn word_list_decodes_to_plain_lowercase_words() {
        let words = blocked_words();
        assert!(words.contains(&"ass".to_owned()));
        assert!(
            words
                .iter()
                .all(|w| w.chars().all(|c| c.is_ascii_lowercase()))
        );
    }

    #[test]
    fn unique_adds_a_number_case_insensitively() {
        let mut taken = HashSet::new();
        let mut add = |name: &str| {
            let got = unique(name, |c| taken.contains(&key(c)));
            taken.insert(key(&got));
            got
        };
        assert_eq!(add("Ana"), "Ana");
        assert_eq!(add("ANA"), "ANA 2");
        assert_eq!(add("ana"), "ana 3");
        assert_eq!(add("Bo"), "Bo");
    }

    #[test]
    fn unique_keeps_within_twenty_characters() {
        let long = "Abcdefghijklmnopqrst";
        let taken: HashSet<String> = [key(long)].into();
        let got = unique(long, |c| taken.contains(&key(c)));
        assert_eq!(got, "Abcdefghijklmnopqr 2");
        assert_eq!(got.chars().count(), 20);
        // A base cut at a space does not end up with two spaces.
        let spaced = "Abcdefghijklmnopq rs";
        let taken: HashSet<String> = [key(spaced)].into();
        assert_eq!(
            unique(spaced, |c| taken.contains(&key(c))),
            "Abcdefghijklmnopq 2"
        );
        let taken: HashSet<String> = (1..=10)
            .map(|n| {
                if n == 1 {
                    key("Ana")
                } else {
                    format!("ana {n}")
                }
            })
            .collect();
        assert_eq!(unique("Ana", |c| taken.contains(&key(c))), "Ana 11");
    }
}
