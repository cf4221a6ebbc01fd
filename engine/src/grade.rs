//! Grading: whether an answer is right, and how right (the fraction that partial credit
//! multiplies points by). Points, speed and streaks are [`crate::score`]'s business.
//!
//! Answers index what the phone was shown, so grading takes the question's [`Layout`]. An
//! answer whose shape or indices do not fit the question is refused with `bad_answer` and
//! changes nothing; a well-formed wrong answer is simply wrong. Typed answers are compared
//! after [`normalise`], and one-letter typos of longer answers are forgiven unless the typo is
//! itself a word the author listed as wrong.

use quiz_protocol::client::Correct;
use quiz_protocol::{Answer, ErrorCode, Question, QuestionBody};

use crate::layout::Layout;
use crate::session::Reject;

/// How right an answer is: `earned / out_of` of the points (`out_of` is never 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grade {
    pub earned: u32,
    pub out_of: u32,
    /// A poll: never right or wrong, never scored.
    pub poll: bool,
}

impl Grade {
    /// Fully correct: continues a streak, counts as correct in the statistics.
    pub fn correct(&self) -> bool {
        !self.poll && self.earned == self.out_of
    }

    fn all_or_nothing(right: bool) -> Grade {
        Grade {
            earned: u32::from(right),
            out_of: 1,
            poll: false,
        }
    }

    fn partial(earned: usize, out_of: usize) -> Grade {
        // Counts are bounded by the answer limits (at most 16 items), so they fit in u32.
        Grade {
            earned: earned as u32,
            out_of: out_of.max(1) as u32,
            poll: false,
        }
    }
}

/// Grades `answer` to `question` as laid out by `layout`. `typo_min_len` is the shortest
/// accepted typed answer (in letters) for which a one-letter typo is forgiven.
pub fn grade(
    question: &Question,
    layout: &Layout,
    answer: &Answer,
    typo_min_len: usize,
) -> Result<Grade, Reject> {
    let kind = question.body.kind();
    if !answer.fits(kind) {
        return Err(bad(format!("this answer does not fit a {kind:?} question")));
    }
    match (&question.body, answer) {
        (QuestionBody::SingleChoice { options, answer }, Answer::Choice(i)) => {
            in_range(*i, options.len(), "choice")?;
            Ok(Grade::all_or_nothing(i == answer))
        }
        (QuestionBody::Poll { options }, Answer::Choice(i)) => {
            in_range(*i, options.len(), "choice")?;
            Ok(Grade {
                earned: 0,
                out_of: 1,
                poll: true,
            })
        }
        (QuestionBody::TrueFalse { answer }, Answer::Bool(b)) => {
            Ok(Grade::all_or_nothing(b == answer))
        }
        (QuestionBody::MultipleSelect { options, answers }, Answer::Choices(chosen)) => {
            distinct_in_range(chosen.iter().copied(), options.len(), "choices")?;
            let right = chosen.iter().filter(|c| answers.contains(c)).count();
            let wrong = chosen.len() - right;
            Ok(Grade::partial(right.saturating_sub(wrong), answers.len()))
        }
        (
            QuestionBody::TypedAnswer {
                accept,
                reject,
                accents_matter,
            },
            Answer::Text(text),
        ) => {
            let typed = TypedAnswer {
                accept,
                reject,
                accents_matter: *accents_matter,
                typo_min_len,
            };
            Ok(Grade::all_or_nothing(typed.accepts(text)))
        }
        (
            QuestionBody::WordOrder {
                answer,
                alternatives,
            },
            Answer::Order(order),
        ) => {
            if order.len() != answer.len() {
                return Err(bad(format!("order must use all {} tiles", answer.len())));
            }
            distinct_in_range(order.iter().copied(), answer.len(), "order")?;
            // Compare texts, not tiles, so that two tiles with the same word are
            // interchangeable.
            let tiles = Layout::shown(layout.tiles(), answer);
            let built: Vec<&str> = order
                .iter()
                .filter_map(|i| tiles.get(*i as usize).copied())
                .collect();
            let right = built == *answer || alternatives.iter().any(|alt| built == *alt);
            Ok(Grade::all_or_nothing(right))
        }
        (QuestionBody::Matching { pairs }, Answer::Pairs(given)) => {
            distinct_in_range(given.iter().map(|p| p.0), pairs.len(), "pairs (left)")?;
            distinct_in_range(given.iter().map(|p| p.1), pairs.len(), "pairs (right)")?;
            let right = given
                .iter()
                .filter(|(l, r)| layout.right().get(*r as usize) == Some(l))
                .count();
            Ok(Grade::partial(right, pairs.len()))
        }
        // `fits` matched the shape to the kind above.
        _ => Err(bad(format!("this answer does not fit a {kind:?} question"))),
    }
}

/// The right answer as phones index it (shown order), for the reveal. `None` for a poll.
pub fn correct(question: &Question, layout: &Layout) -> Option<Correct> {
    let mut c = Correct::default();
    match &question.body {
        QuestionBody::SingleChoice { answer, .. } => c.choice = Some(*answer),
        QuestionBody::MultipleSelect { answers, .. } => {
            let mut answers = answers.clone();
            answers.sort_unstable();
            c.choices = Some(answers);
        }
        QuestionBody::TrueFalse { answer } => c.value = Some(*answer),
        QuestionBody::TypedAnswer { accept, .. } => c.text = Some(accept.clone()),
        QuestionBody::WordOrder { answer, .. } => {
            // Each word takes the first shown tile with its text not used yet, so duplicate
            // words still name distinct tiles.
            let shown = Layout::shown(layout.tiles(), answer);
            let mut used = vec![false; shown.len()];
            let order = answer
                .iter()
                .filter_map(|word| {
                    let at = (0..shown.len()).find(|i| !used[*i] && shown[*i] == word)?;
                    used[at] = true;
                    Some(at as u32)
                })
                .collect();
            c.order = Some(order);
            c.sentence = Some(answer.join(" "));
        }
        QuestionBody::Matching { .. } => {
            let mut pairs: Vec<[u32; 2]> = (0..layout.right().len() as u32)
                .map(|shown| [layout.right()[shown as usize], shown])
                .collect();
            pairs.sort_unstable();
            c.pairs = Some(pairs);
        }
        QuestionBody::Poll { .. } => return None,
    }
    Some(c)
}

fn bad(message: String) -> Reject {
    Reject::new(ErrorCode::BadAnswer, message)
}

fn in_range(i: u32, len: usize, what: &str) -> Result<(), Reject> {
    if (i as usize) < len {
        Ok(())
    } else {
        Err(bad(format!("{what} {i} is out of range: there are {len}")))
    }
}

fn distinct_in_range(
    items: impl Iterator<Item = u32>,
    len: usize,
    what: &str,
) -> Result<(), Reject> {
    let mut seen = vec![false; len];
    for i in items {
        in_range(i, len, what)?;
        if std::mem::replace(&mut seen[i as usize], true) {
            return Err(bad(format!("{what} names {i} twice")));
        }
    }
    Ok(())
}

/// A typed-answer question's key, ready to judge texts.
struct TypedAnswer<'a> {
    accept: &'a [String],
    reject: &'a [String],
    accents_matter: bool,
    typo_min_len: usize,
}

impl TypedAnswer<'_> {
    fn accepts(&self, text: &str) -> bool {
        let typed = normalise(text, self.accents_matter);
        if typed.is_empty() {
            return false;
        }
        let norm = |list: &[String]| -> Vec<String> {
            list.iter()
                .map(|a| normalise(a, self.accents_matter))
                .collect()
        };
        let (accepted, rejected) = (norm(self.accept), norm(self.reject));
        if accepted.contains(&typed) {
            return true;
        }
        if rejected.contains(&typed) {
            return false;
        }
        let typed_chars: Vec<char> = typed.chars().collect();
        let near = |target: &str| {
            let target: Vec<char> = target.chars().collect();
            within_one_edit(&typed_chars, &target)
        };
        let forgiven = accepted.iter().any(|a| {
            letters(a) >= self.typo_min_len
                && near(a)
                // When accents matter, a missing or wrong accent is the mistake being tested,
                // not a typo.
                && !(self.accents_matter && normalise(&typed, false) == normalise(a, false))
        });
        // A typo that lands on (or next to) a listed wrong word is that word, not a slip.
        forgiven && !rejected.iter().any(|r| near(r))
    }
}

fn letters(s: &str) -> usize {
    s.chars().filter(|c| c.is_alphanumeric()).count()
}

/// Whether `a` and `b` are at most one edit apart in optimal string alignment distance: one
/// insertion, deletion, substitution, or swap of two adjacent characters.
pub fn within_one_edit(a: &[char], b: &[char]) -> bool {
    if a.len().abs_diff(b.len()) > 1 {
        return false;
    }
    let p = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    if p == a.len() && p == b.len() {
        return true;
    }
    match a.len().cmp(&b.len()) {
        std::cmp::Ordering::Less => a[p..] == b[p + 1..],
        std::cmp::Ordering::Greater => a[p + 1..] == b[p..],
        std::cmp::Ordering::Equal => {
            let substituted = a[p + 1..] == b[p + 1..];
            let swapped =
                p + 1 < a.len() && a[p] == b[p + 1] && a[p + 1] == b[p] && a[p + 2..] == b[p + 2..];
            substituted || swapped
        }
    }
}

/// Accented letters: (composed, base letter, combining mark). Used both to fold accents away
/// and to compose a decomposed letter (`e` + U+0301) into the one phones usually send (`é`).
const ACCENTED: &[(char, char, char)] = &[
    ('à', 'a', '\u{300}'),
    ('á', 'a', '\u{301}'),
    ('â', 'a', '\u{302}'),
    ('ã', 'a', '\u{303}'),
    ('ä', 'a', '\u{308}'),
    ('å', 'a', '\u{30a}'),
    ('ç', 'c', '\u{327}'),
    ('è', 'e', '\u{300}'),
    ('é', 'e', '\u{301}'),
    ('ê', 'e', '\u{302}'),
    ('ë', 'e', '\u{308}'),
    ('ì', 'i', '\u{300}'),
    ('í', 'i', '\u{301}'),
    ('î', 'i', '\u{302}'),
    ('ï', 'i', '\u{308}'),
    ('ñ', 'n', '\u{303}'),
    ('ò', 'o', '\u{300}'),
    ('ó', 'o', '\u{301}'),
    ('ô', 'o', '\u{302}'),
    ('õ', 'o', '\u{303}'),
    ('ö', 'o', '\u{308}'),
    ('ù', 'u', '\u{300}'),
    ('ú', 'u', '\u{301}'),
    ('û', 'u', '\u{302}'),
    ('ü', 'u', '\u{308}'),
    ('ý', 'y', '\u{301}'),
    ('ÿ', 'y', '\u{308}'),
];

/// Pushes `c` (already lowercase) with its accent folded away: `é` → `e`, `œ` → `oe`.
pub(crate) fn push_folded(out: &mut String, c: char) {
    match c {
        'ø' => out.push('o'),
        'œ' => out.push_str("oe"),
        'æ' => out.push_str("ae"),
        'ß' => out.push_str("ss"),
        _ => match ACCENTED.iter().find(|(composed, ..)| *composed == c) {
            Some((_, base, _)) => out.push(*base),
            None => out.push(c),
        },
    }
}

fn is_combining_mark(c: char) -> bool {
    ('\u{300}'..='\u{36f}').contains(&c)
}

fn is_dash(c: char) -> bool {
    matches!(
        c,
        '-' | '\u{2010}'..='\u{2015}' | '\u{2212}' | '\u{fe58}' | '\u{fe63}' | '\u{ff0d}'
    )
}

/// A typed text as it is compared: lowercase, hyphens and dashes as spaces, every other
/// punctuation mark (quotes and apostrophes included, curly or straight) removed, whitespace
/// collapsed and trimmed, and, unless `accents_matter`, accents folded (`Café` → `cafe`).
pub fn normalise(text: &str, accents_matter: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars().flat_map(char::to_lowercase) {
        if c.is_whitespace() || is_dash(c) {
            if !out.is_empty() && !out.ends_with(' ') {
                out.push(' ');
            }
        } else if is_combining_mark(c) {
            // A decomposed accent: fold it away (drop it), or attach it to its letter.
            if accents_matter {
                let composed = out.chars().next_back().and_then(|base| {
                    ACCENTED
                        .iter()
                        .find(|(_, b, mark)| *b == base && *mark == c)
                        .map(|(composed, ..)| *composed)
                });
                if let Some(composed) = composed {
                    out.pop();
                    out.push(composed);
                }
            }
        } else if c.is_alphanumeric() {
            if accents_matter {
                out.push(c);
            } else {
                push_folded(&mut out, c);
            }
        }
        // Anything else is punctuation or a symbol, curly quotes included: dropped.
    }
    if out.ends_with(' ') {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use quiz_protocol::{Level, QuizId};

    use super::*;

    fn question(body: QuestionBody) -> Question {
        Question {
            id: "q".into(),
            level: Level::A2,
            topic: "grammar".into(),
            prompt: "?".into(),
            body,
            time_limit_s: 20,
            points: 1000,
            multiplier: 1,
            explanation: None,
        }
    }

    fn layout(q: &Question) -> Layout {
        Layout::new(&QuizId::parse("K7M3QX").unwrap(), 0, &q.body)
    }

    fn run(body: QuestionBody, answer: Answer) -> Result<Grade, ErrorCode> {
        let q = question(body);
        grade(&q, &layout(&q), &answer, 5).map_err(|r| r.code)
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn typed(accept: &[&str], reject: &[&str], accents_matter: bool) -> QuestionBody {
        QuestionBody::TypedAnswer {
            accept: strings(accept),
            reject: strings(reject),
            accents_matter,
        }
    }

    fn right(body: QuestionBody, answer: Answer) -> bool {
        run(body, answer).expect("a well-formed answer").correct()
    }

    #[test]
    fn single_choice() {
        let body = || QuestionBody::SingleChoice {
            options: strings(&["went", "goed", "gone"]),
            answer: 0,
        };
        assert!(right(body(), Answer::Choice(0)));
        assert!(!right(body(), Answer::Choice(2)));
        assert_eq!(run(body(), Answer::Choice(3)), Err(ErrorCode::BadAnswer));
        assert_eq!(run(body(), Answer::Bool(true)), Err(ErrorCode::BadAnswer));
    }

    #[test]
    fn poll_is_never_right_but_checks_range() {
        let body = || QuestionBody::Poll {
            options: strings(&["yes", "no"]),
        };
        let g = run(body(), Answer::Choice(1)).unwrap();
        assert!(g.poll && !g.correct() && g.earned == 0);
        assert_eq!(run(body(), Answer::Choice(2)), Err(ErrorCode::BadAnswer));
    }

    #[test]
    fn true_false() {
        let body = || QuestionBody::TrueFalse { answer: false };
        assert!(right(body(), Answer::Bool(false)));
        assert!(!right(body(), Answer::Bool(true)));
        assert_eq!(run(body(), Answer::Choice(0)), Err(ErrorCode::BadAnswer));
    }

    #[test]
    fn multiple_select_partial_credit() {
        let body = || QuestionBody::MultipleSelect {
            options: strings(&["a", "b", "c", "d"]),
            answers: vec![0, 2, 3],
        };
        let g = |v: Vec<u32>| run(body(), Answer::Choices(v)).unwrap();
        assert_eq!((g(vec![3, 0, 2]).earned, g(vec![3, 0, 2]).out_of), (3, 3));
        assert!(g(vec![0, 2, 3]).correct());
        // Two right, one wrong: (2 - 1) / 3.
        assert_eq!(g(vec![0, 2, 1]).earned, 1);
        assert!(!g(vec![0, 2, 1]).correct());
        // More wrong than right never goes below zero.
        assert_eq!(g(vec![1]).earned, 0);
        assert_eq!(g(vec![]).earned, 0);
        assert_eq!(
            run(body(), Answer::Choices(vec![0, 0])),
            Err(ErrorCode::BadAnswer)
        );
        assert_eq!(
            run(body(), Answer::Choices(vec![4])),
            Err(ErrorCode::BadAnswer)
        );
    }

    #[test]
    fn normalising_typed_text() {
        assert_eq!(normalise("  Don’t   STOP!  ", false), "dont stop");
        assert_eq!(normalise("“well-known”", false), "well known");
        assert_eq!(normalise("a — b – c", false), "a b c");
        assert_eq!(normalise("Crème Brûlée", false), "creme brulee");
        assert_eq!(normalise("Crème Brûlée", true), "crème brûlée");
        assert_eq!(
            normalise("ŒUVRE Æsir STRAßE Ø", false),
            "oeuvre aesir strasse o"
        );
        // A decomposed é (e + U+0301) is the same as the composed one.
        assert_eq!(normalise("cafe\u{301}", true), "café");
        assert_eq!(normalise("cafe\u{301}", false), "cafe");
        assert_eq!(normalise(" ?! ", false), "");
    }

    #[test]
    fn typed_answer_matching() {
        let body = || typed(&["went", "has gone"], &[], false);
        assert!(right(body(), Answer::Text("Went".into())));
        assert!(right(body(), Answer::Text("  HAS   gone. ".into())));
        assert!(!right(body(), Answer::Text("go".into())));
        // Empty after normalising: wrong, not an error.
        assert!(!right(body(), Answer::Text(" !! ".into())));
        assert!(!right(body(), Answer::Text(String::new())));
    }

    #[test]
    fn curly_quotes_and_apostrophes() {
        let body = || typed(&["don't"], &[], false);
        assert!(right(body(), Answer::Text("don’t".into())));
        assert!(right(body(), Answer::Text("dont".into())));
        let quoted = || typed(&["\"yes\""], &[], false);
        assert!(right(quoted(), Answer::Text("“yes”".into())));
    }

    #[test]
    fn accents_fold_unless_they_matter() {
        assert!(right(
            typed(&["café"], &[], false),
            Answer::Text("CAFE".into())
        ));
        assert!(!right(
            typed(&["café"], &[], true),
            Answer::Text("cafe".into())
        ));
        assert!(right(
            typed(&["café"], &[], true),
            Answer::Text("CAFÉ".into())
        ));
        // A missing accent on a long word is not forgiven as a typo when accents matter.
        assert!(!right(
            typed(&["résumé"], &[], true),
            Answer::Text("résume".into())
        ));
        assert!(right(
            typed(&["résumé"], &[], true),
            Answer::Text("résumés".into())
        ));
    }

    #[test]
    fn one_letter_typos_of_long_answers_are_forgiven() {
        let body = || typed(&["beautiful"], &[], false);
        for typo in [
            "beautifull",
            "beautful",
            "beauttful",
            "beuatiful",
            "BEAUTIFUL!",
        ] {
            assert!(right(body(), Answer::Text(typo.into())), "{typo}");
        }
        for wrong in ["beautifullll", "butiful", "baeutiufl"] {
            assert!(!right(body(), Answer::Text(wrong.into())), "{wrong}");
        }
        // Short answers must be exact: "wnet" is not "went".
        assert!(!right(
            typed(&["went"], &[], false),
            Answer::Text("wnet".into())
        ));
        // Five letters is long enough by default.
        assert!(right(
            typed(&["house"], &[], false),
            Answer::Text("hous".into())
        ));
    }

    #[test]
    fn reject_list_beats_typo_forgiveness() {
        let body = || typed(&["effect"], &["affect"], false);
        assert!(right(body(), Answer::Text("efect".into())));
        assert!(!right(body(), Answer::Text("affect".into())));
        let lose = || typed(&["loose"], &["lose"], false);
        assert!(!right(lose(), Answer::Text("lose".into())));
        // One letter from the accepted word and one from a rejected one: not forgiven.
        assert!(!right(lose(), Answer::Text("lowse".into())));
        assert!(right(lose(), Answer::Text("looose".into())));
    }

    #[test]
    fn typo_threshold_follows_config() {
        let q = question(typed(&["went"], &[], false));
        let l = layout(&q);
        let text = Answer::Text("wnet".into());
        assert!(grade(&q, &l, &text, 4).unwrap().correct());
        assert!(!grade(&q, &l, &text, 5).unwrap().correct());
    }

    #[test]
    fn word_order_uses_the_shown_tiles() {
        let answer = strings(&["I", "have", "been", "here"]);
        let q = question(QuestionBody::WordOrder {
            answer: answer.clone(),
            alternatives: vec![strings(&["here", "I", "have", "been"])],
        });
        let l = layout(&q);
        let shown = Layout::shown(l.tiles(), &answer);
        let order_of = |words: &[&str]| -> Vec<u32> {
            words
                .iter()
                .map(|w| shown.iter().position(|s| s == w).unwrap() as u32)
                .collect()
        };
        let g = |o: Vec<u32>| grade(&q, &l, &Answer::Order(o), 5).map_err(|r| r.code);
        assert!(
            g(order_of(&["I", "have", "been", "here"]))
                .unwrap()
                .correct()
        );
        assert!(
            g(order_of(&["here", "I", "have", "been"]))
                .unwrap()
                .correct()
        );
        assert!(
            !g(order_of(&["have", "I", "been", "here"]))
                .unwrap()
                .correct()
        );
        assert_eq!(g(vec![0, 1, 2]), Err(ErrorCode::BadAnswer));
        assert_eq!(g(vec![0, 1, 2, 2]), Err(ErrorCode::BadAnswer));
        assert_eq!(g(vec![0, 1, 2, 4]), Err(ErrorCode::BadAnswer));
    }

    #[test]
    fn word_order_duplicate_words_are_interchangeable() {
        let answer = strings(&["the", "cat", "saw", "the", "dog"]);
        let q = question(QuestionBody::WordOrder {
            answer: answer.clone(),
            alternatives: vec![],
        });
        let l = layout(&q);
        let shown = Layout::shown(l.tiles(), &answer);
        let thes: Vec<u32> = (0..5u32).filter(|i| shown[*i as usize] == "the").collect();
        let at = |w: &str| shown.iter().position(|s| *s == w).unwrap() as u32;
        for (first, second) in [(thes[0], thes[1]), (thes[1], thes[0])] {
            let order = vec![first, at("cat"), at("saw"), second, at("dog")];
            assert!(grade(&q, &l, &Answer::Order(order), 5).unwrap().correct());
        }
    }

    #[test]
    fn matching_partial_credit_in_shown_indices() {
        let q = question(QuestionBody::Matching {
            pairs: vec![
                ("big".into(), "large".into()),
                ("small".into(), "little".into()),
                ("fast".into(), "quick".into()),
                ("happy".into(), "glad".into()),
            ],
        });
        let l = layout(&q);
        let shown_of = |left: u32| l.right().iter().position(|r| *r == left).unwrap() as u32;
        let g = |pairs: Vec<(u32, u32)>| grade(&q, &l, &Answer::Pairs(pairs), 5);
        let all: Vec<_> = (0..4).map(|i| (i, shown_of(i))).collect();
        assert!(g(all.clone()).unwrap().correct());
        let half = g(vec![(0, shown_of(0)), (1, shown_of(1))]).unwrap();
        assert_eq!((half.earned, half.out_of, half.correct()), (2, 4, false));
        let swapped = g(vec![(0, shown_of(1)), (1, shown_of(0))]).unwrap();
        assert_eq!(swapped.earned, 0);
        assert_eq!(g(vec![]).unwrap().earned, 0);
        for bad in [
            vec![(0, 0), (0, 1)],
            vec![(0, 1), (1, 1)],
            vec![(4, 0)],
            vec![(0, 4)],
        ] {
            assert_eq!(g(bad).map_err(|r| r.code), Err(ErrorCode::BadAnswer));
        }
    }

    #[test]
    fn correct_answers_are_in_shown_indices() {
        let answer = strings(&["the", "cat", "saw", "the", "dog"]);
        let q = question(QuestionBody::WordOrder {
            answer: answer.clone(),
            alternatives: vec![],
        });
        let l = layout(&q);
        let c = correct(&q, &l).unwrap();
        assert_eq!(c.sentence.as_deref(), Some("the cat saw the dog"));
        let order = c.order.unwrap();
        let mut distinct = order.clone();
        distinct.sort();
        assert_eq!(distinct, vec![0, 1, 2, 3, 4]);
        // The revealed order, sent back as an answer, is right.
        assert!(grade(&q, &l, &Answer::Order(order), 5).unwrap().correct());

        let m = question(QuestionBody::Matching {
            pairs: vec![
                ("a".into(), "1".into()),
                ("b".into(), "2".into()),
                ("c".into(), "3".into()),
            ],
        });
        let ml = layout(&m);
        let pairs = correct(&m, &ml).unwrap().pairs.unwrap();
        assert_eq!(
            pairs.iter().map(|p| p[0]).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        let given = pairs.iter().map(|[l, r]| (*l, *r)).collect();
        assert!(grade(&m, &ml, &Answer::Pairs(given), 5).unwrap().correct());

        let poll = question(QuestionBody::Poll {
            options: strings(&["a", "b"]),
        });
        assert_eq!(correct(&poll, &layout(&poll)), None);
        let typed_q = question(typed(&["went", "has gone"], &[], false));
        assert_eq!(
            correct(&typed_q, &layout(&typed_q)).unwrap().text,
            Some(strings(&["went", "has gone"]))
        );
    }

    #[test]
    fn osa_distance_one() {
        let c = |s: &str| s.chars().collect::<Vec<_>>();
        let near = |a: &str, b: &str| within_one_edit(&c(a), &c(b));
        assert!(near("abc", "abc"));
        assert!(near("abc", "abd"));
        assert!(near("abc", "acb"));
        assert!(near("abc", "ab"));
        assert!(near("abc", "xabc"));
        assert!(near("", "a"));
        assert!(!near("abc", "cab"));
        assert!(!near("abc", "a"));
        assert!(!near("abcd", "badc"));
    }
}
