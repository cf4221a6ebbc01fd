//! The shipped question banks in `content/` parse and validate through the real import parser,
//! and hold the mix of kinds, levels and topics they promise.

use std::collections::{HashMap, HashSet};

use quiz_protocol::question::{Level, QuestionBody, QuestionKind, QuestionSet};

const ENGLISH: &str = include_str!("../../content/english-a1-b2.json");
const DEMO: &str = include_str!("../../content/demo.json");

fn parse(name: &str, text: &str) -> QuestionSet {
    match QuestionSet::from_json(text) {
        Ok(set) => set,
        Err(errors) => {
            let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            panic!("{name} does not import:\n{}", list.join("\n"));
        }
    }
}

fn kinds(set: &QuestionSet) -> HashMap<QuestionKind, usize> {
    let mut out = HashMap::new();
    for q in &set.questions {
        *out.entry(q.body.kind()).or_insert(0) += 1;
    }
    out
}

/// Checks every set should pass: explanations on scored questions, sensible sizes.
fn check_shape(set: &QuestionSet) {
    for q in &set.questions {
        let id = &q.id;
        if q.body.kind() != QuestionKind::Poll {
            assert!(q.explanation.is_some(), "{id}: needs an explanation");
        }
        assert!(
            (15..=30).contains(&q.time_limit_s),
            "{id}: time limit {}",
            q.time_limit_s
        );
        match &q.body {
            QuestionBody::WordOrder {
                answer,
                alternatives,
            } => {
                assert!((3..=9).contains(&answer.len()), "{id}: 3-9 tiles");
                // Identical tiles would make two different index orders both right.
                let distinct: HashSet<_> = answer.iter().collect();
                assert_eq!(distinct.len(), answer.len(), "{id}: repeated tile");
                for alt in alternatives {
                    assert_ne!(alt, answer, "{id}: alternative equals the answer");
                }
            }
            QuestionBody::Matching { pairs } => {
                assert!((3..=5).contains(&pairs.len()), "{id}: 3-5 pairs");
            }
            QuestionBody::TypedAnswer { accept, reject, .. } => {
                for r in reject {
                    assert!(
                        !accept.contains(r),
                        "{id}: {r:?} both accepted and rejected"
                    );
                }
            }
            _ => {}
        }
    }
}

#[test]
fn english_bank_imports_with_the_promised_mix() {
    let set = parse("english-a1-b2.json", ENGLISH);
    assert_eq!(set.id, "english-a1-b2");
    assert_eq!(set.title, "English A1–B2");
    assert!(set.description.is_some());
    assert!(
        set.questions.len() >= 72,
        "{} questions",
        set.questions.len()
    );
    check_shape(&set);

    let kinds = kinds(&set);
    for (kind, min) in [
        (QuestionKind::SingleChoice, 8),
        (QuestionKind::MultipleSelect, 8),
        (QuestionKind::TrueFalse, 8),
        (QuestionKind::TypedAnswer, 8),
        (QuestionKind::WordOrder, 8),
        (QuestionKind::Matching, 8),
        (QuestionKind::Poll, 3),
    ] {
        let n = kinds.get(&kind).copied().unwrap_or(0);
        assert!(n >= min, "{kind:?}: {n} questions, want at least {min}");
    }

    for level in [Level::A1, Level::A2, Level::B1, Level::B2] {
        let n = set.questions.iter().filter(|q| q.level == level).count();
        assert!(n >= 12, "{level:?}: {n} questions, want at least 12");
    }

    let topics: HashSet<&str> = set.questions.iter().map(|q| q.topic.as_str()).collect();
    for topic in [
        "vocabulary",
        "grammar",
        "phrasal_verbs",
        "spelling",
        "word_order",
        "prepositions",
        "idioms",
        "false_friends",
        "collocations",
    ] {
        assert!(topics.contains(topic), "no {topic} questions");
    }

    let blanks = set
        .questions
        .iter()
        .filter(|q| q.body.kind() == QuestionKind::TypedAnswer && q.prompt.contains("___"))
        .count();
    assert!(blanks >= 4, "{blanks} fill-in-the-blank typed answers");
    let with_alternatives = set
        .questions
        .iter()
        .filter(|q| matches!(&q.body, QuestionBody::WordOrder { alternatives, .. } if !alternatives.is_empty()))
        .count();
    assert!(with_alternatives >= 2, "word order alternatives");
    assert!(set.questions.iter().any(|q| q.multiplier == 0));
    assert!(set.questions.iter().any(|q| q.multiplier == 2));
}

#[test]
fn demo_has_one_question_of_each_scored_kind() {
    let set = parse("demo.json", DEMO);
    assert_eq!(set.id, "demo");
    assert_eq!(set.title, "Demo: English warm-up");
    assert_eq!(set.questions.len(), 6);
    check_shape(&set);

    let kinds = kinds(&set);
    for kind in [
        QuestionKind::SingleChoice,
        QuestionKind::TrueFalse,
        QuestionKind::TypedAnswer,
        QuestionKind::WordOrder,
        QuestionKind::Matching,
        QuestionKind::MultipleSelect,
    ] {
        assert_eq!(kinds.get(&kind), Some(&1), "{kind:?}");
    }
    for q in &set.questions {
        assert!(matches!(q.level, Level::A1 | Level::A2), "{}: level", q.id);
        assert_eq!(q.time_limit_s, 20, "{}: time limit", q.id);
    }
}
