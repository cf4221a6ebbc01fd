//! How frames look in a terminal, and how a person's typed answer becomes an [`Answer`].
//! Players count from 1 and match with letters; the protocol counts from 0.

use quiz_protocol::client::{Ack, Correct, Ended, QuestionFrame, Reveal, TopEntry};
use quiz_protocol::{Answer, QuestionKind};

pub(crate) fn question(q: &QuestionFrame) -> String {
    let mut out = format!(
        "\n── Question {}/{} · {:?} · {} · {} pts{} · {} s ──\n{}\n",
        q.index + 1,
        q.count,
        q.level,
        q.topic,
        q.points,
        match q.multiplier {
            0 => " (practice)".to_owned(),
            1 => String::new(),
            m => format!(" ×{m}"),
        },
        q.ends_in_ms.div_ceil(1000),
        q.prompt,
    );
    let numbered = |items: &[String]| -> String {
        items
            .iter()
            .enumerate()
            .map(|(i, o)| format!("  {}) {o}\n", i + 1))
            .collect()
    };
    match q.kind {
        QuestionKind::SingleChoice | QuestionKind::Poll => {
            out += &numbered(q.options.as_deref().unwrap_or_default());
            out += "Type the number of your answer.";
        }
        QuestionKind::MultipleSelect => {
            out += &numbered(q.options.as_deref().unwrap_or_default());
            out += "Type every right number, separated by spaces (e.g. `1 3`).";
        }
        QuestionKind::TrueFalse => out += "Type t (true) or f (false).",
        QuestionKind::TypedAnswer => out += "Type your answer.",
        QuestionKind::WordOrder => {
            out += &numbered(q.tiles.as_deref().unwrap_or_default());
            out += "Type the tile numbers in sentence order (e.g. `3 1 2`).";
        }
        QuestionKind::Matching => {
            let left = q.left.as_deref().unwrap_or_default();
            let right = q.right.as_deref().unwrap_or_default();
            for (i, l) in left.iter().enumerate() {
                out += &format!("  {}) {l}\n", i + 1);
            }
            for (i, r) in right.iter().enumerate() {
                out += &format!("  {}) {r}\n", letter(i));
            }
            out += "Match each number with a letter (e.g. `1b 2a 3c`).";
        }
    }
    out
}

fn letter(i: usize) -> char {
    (b'a' + i as u8) as char
}

/// Parses what a person typed for question `q`.
pub(crate) fn parse_answer(q: &QuestionFrame, line: &str) -> Result<Answer, String> {
    let line = line.trim();
    let numbers = || -> Result<Vec<u32>, String> {
        line.split(|c: char| c.is_whitespace() || c == ',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<u32>()
                    .ok()
                    .and_then(|n| n.checked_sub(1))
                    .ok_or_else(|| format!("`{s}` is not a number from 1"))
            })
            .collect()
    };
    match q.kind {
        QuestionKind::SingleChoice | QuestionKind::Poll => match numbers()?.as_slice() {
            [n] => Ok(Answer::Choice(*n)),
            _ => Err("type one number".into()),
        },
        QuestionKind::MultipleSelect => Ok(Answer::Choices(numbers()?)),
        QuestionKind::TrueFalse => match line.to_ascii_lowercase().as_str() {
            "t" | "true" | "y" | "yes" => Ok(Answer::Bool(true)),
            "f" | "false" | "n" | "no" => Ok(Answer::Bool(false)),
            _ => Err("type t or f".into()),
        },
        QuestionKind::TypedAnswer if line.is_empty() => Err("type a word".into()),
        QuestionKind::TypedAnswer => Ok(Answer::Text(line.to_owned())),
        QuestionKind::WordOrder => Ok(Answer::Order(numbers()?)),
        QuestionKind::Matching => {
            let mut pairs = Vec::new();
            for item in line
                .split(|c: char| c.is_whitespace() || c == ',')
                .filter(|s| !s.is_empty())
            {
                let split = item
                    .find(|c: char| c.is_ascii_alphabetic())
                    .unwrap_or(item.len());
                let (num, let_) = item.split_at(split);
                let l = num
                    .trim_end_matches('-')
                    .parse::<u32>()
                    .ok()
                    .and_then(|n| n.checked_sub(1));
                let mut chars = let_.chars();
                let r = match (chars.next(), chars.next()) {
                    (Some(c), None) if c.is_ascii_lowercase() => Some(c as u32 - 'a' as u32),
                    _ => None,
                };
                match (l, r) {
                    (Some(l), Some(r)) => pairs.push((l, r)),
                    _ => return Err(format!("`{item}` is not like `1b`")),
                }
            }
            Ok(Answer::Pairs(pairs))
        }
    }
}

/// A random answer of the right shape, for bots.
pub(crate) fn random_answer(q: &QuestionFrame, rng: &mut impl rand::Rng) -> Answer {
    use rand::seq::SliceRandom;
    let n = |v: &Option<Vec<String>>| v.as_ref().map_or(0, Vec::len) as u32;
    match q.kind {
        QuestionKind::SingleChoice | QuestionKind::Poll => {
            Answer::Choice(rng.random_range(0..n(&q.options).max(1)))
        }
        QuestionKind::MultipleSelect => {
            let all: Vec<u32> = (0..n(&q.options))
                .filter(|_| rng.random_bool(0.5))
                .collect();
            Answer::Choices(all)
        }
        QuestionKind::TrueFalse => Answer::Bool(rng.random_bool(0.5)),
        QuestionKind::TypedAnswer => {
            Answer::Text(["went", "effect", "their"][rng.random_range(0..3)].into())
        }
        QuestionKind::WordOrder => {
            let mut order: Vec<u32> = (0..n(&q.tiles)).collect();
            order.shuffle(rng);
            Answer::Order(order)
        }
        QuestionKind::Matching => {
            let mut right: Vec<u32> = (0..n(&q.right)).collect();
            right.shuffle(rng);
            Answer::Pairs(
                right
                    .into_iter()
                    .enumerate()
                    .map(|(l, r)| (l as u32, r))
                    .collect(),
            )
        }
    }
}

pub(crate) fn ack(a: &Ack) -> String {
    let streak = if a.streak > 1 {
        format!(" · streak {}", a.streak)
    } else {
        String::new()
    };
    format!(
        "✓ +{} points{streak} · score {} · rank {}",
        a.points, a.total, a.rank
    )
}

pub(crate) fn reveal(r: &Reveal, q: Option<&QuestionFrame>) -> String {
    let mut out = String::from("Answer: ");
    match &r.correct {
        Some(c) => out += &correct(c, q),
        None => out += "(a poll: no right answer)",
    }
    out += "\n";
    if let Some(e) = &r.explanation {
        out += &format!("Why: {e}\n");
    }
    let s = &r.stats;
    out += &format!("{} answered, {} fully right", s.answered, s.correct);
    if let Some(ms) = s.mean_ms {
        out += &format!(", {:.1} s on average", ms as f64 / 1000.0);
    }
    if let Some(counts) = &s.counts {
        let c: Vec<String> = counts
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{}: {n}", i + 1))
            .collect();
        out += &format!(" ({})", c.join(", "));
    }
    out
}

fn correct(c: &Correct, q: Option<&QuestionFrame>) -> String {
    let option = |i: u32| -> String {
        let text = q
            .and_then(|q| q.options.as_ref())
            .and_then(|o| o.get(i as usize));
        match text {
            Some(t) => format!("{}) {t}", i + 1),
            None => format!("{}", i + 1),
        }
    };
    if let Some(i) = c.choice {
        return option(i);
    }
    if let Some(v) = &c.choices {
        return v.iter().map(|i| option(*i)).collect::<Vec<_>>().join(", ");
    }
    if let Some(b) = c.value {
        return if b { "true".into() } else { "false".into() };
    }
    if let Some(t) = &c.text {
        return t.join(" / ");
    }
    if let Some(s) = &c.sentence {
        return s.clone();
    }
    if let Some(p) = &c.pairs {
        return p
            .iter()
            .map(|[l, r]| format!("{}{}", l + 1, letter(*r as usize)))
            .collect::<Vec<_>>()
            .join(" ");
    }
    String::from("?")
}

pub(crate) fn top(entries: &[TopEntry]) -> String {
    entries
        .iter()
        .enumerate()
        .map(|(i, TopEntry(nick, score))| format!("{}. {nick} {score}", i + 1))
        .collect::<Vec<_>>()
        .join(" · ")
}

pub(crate) fn ended(e: &Ended) -> String {
    format!(
        "\n🏁 The quiz is over ({} players). Final top: {}",
        e.players,
        top(&e.top)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiz_protocol::Level;

    fn frame(kind: QuestionKind) -> QuestionFrame {
        QuestionFrame {
            seq: Some(1),
            index: 0,
            count: 1,
            kind,
            level: Level::A1,
            topic: "t".into(),
            prompt: "p".into(),
            options: Some(vec!["a".into(), "b".into(), "c".into()]),
            tiles: Some(vec!["x".into(), "y".into()]),
            left: Some(vec!["l1".into(), "l2".into()]),
            right: Some(vec!["r1".into(), "r2".into()]),
            time_limit_ms: 20_000,
            ends_in_ms: 20_000,
            points: 1000,
            multiplier: 1,
        }
    }

    #[test]
    fn typed_answers_become_zero_based_answers() {
        assert_eq!(
            parse_answer(&frame(QuestionKind::SingleChoice), "2"),
            Ok(Answer::Choice(1))
        );
        assert_eq!(
            parse_answer(&frame(QuestionKind::MultipleSelect), "1, 3"),
            Ok(Answer::Choices(vec![0, 2]))
        );
        assert_eq!(
            parse_answer(&frame(QuestionKind::TrueFalse), "F"),
            Ok(Answer::Bool(false))
        );
        assert_eq!(
            parse_answer(&frame(QuestionKind::WordOrder), "2 1"),
            Ok(Answer::Order(vec![1, 0]))
        );
        assert_eq!(
            parse_answer(&frame(QuestionKind::Matching), "1b 2a"),
            Ok(Answer::Pairs(vec![(0, 1), (1, 0)]))
        );
        assert_eq!(
            parse_answer(&frame(QuestionKind::TypedAnswer), " went "),
            Ok(Answer::Text("went".into()))
        );
        assert!(parse_answer(&frame(QuestionKind::SingleChoice), "0").is_err());
        assert!(parse_answer(&frame(QuestionKind::Matching), "1 b").is_err());
    }
}
