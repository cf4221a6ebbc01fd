//! Questions as authors write them (the JSON import format), and the answers phones send.
//!
//! A [`QuestionSet`] is the unit of import: `quizctl import` reads one from a file, the router
//! stores it, and a quiz is created from it. [`QuestionSet::validate`] checks everything an
//! author can get wrong and names the field. Grading and scoring live in the engine; this
//! module only says what a question is and what an answer looks like.

use serde::{Deserialize, Serialize};

/// Limits on authored content. They keep a question frame small on the wire.
pub const MAX_QUESTIONS_PER_SET: usize = 500;
pub const MAX_PROMPT_CHARS: usize = 500;
pub const MAX_OPTION_CHARS: usize = 120;
pub const MAX_EXPLANATION_CHARS: usize = 1000;
pub const MIN_OPTIONS: usize = 2;
pub const MAX_OPTIONS: usize = 6;
pub const MAX_TILES: usize = 12;
pub const MAX_PAIRS: usize = 8;
pub const MIN_TIME_LIMIT_S: u32 = 5;
pub const MAX_TIME_LIMIT_S: u32 = 300;
pub const MAX_POINTS: u32 = 2000;
/// Longest typed answer a phone may send, in characters.
pub const MAX_TYPED_ANSWER_CHARS: usize = 200;

/// CEFR level of a question.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum Level {
    A1,
    A2,
    B1,
    B2,
    C1,
    C2,
}

/// A named, versioned bank of questions, as imported.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuestionSet {
    /// Stable slug, such as `english-a1-b2`: lowercase letters, digits and dashes.
    pub id: String,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub questions: Vec<Question>,
}

/// One authored question. (serde cannot refuse unknown fields next to `flatten`;
/// [`QuestionSet::from_json`] does it instead.)
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Question {
    /// Unique within its set.
    pub id: String,
    pub level: Level,
    /// Free-form topic such as `vocabulary`, `grammar`, `phrasal_verbs`, `spelling`.
    pub topic: String,
    pub prompt: String,
    #[serde(flatten)]
    pub body: QuestionBody,
    /// Seconds to answer in live mode (and per question in self-paced mode).
    #[serde(default = "default_time_limit_s")]
    pub time_limit_s: u32,
    /// Base points for a correct answer before speed and multiplier.
    #[serde(default = "default_points")]
    pub points: u32,
    /// 0 (practice, no points), 1 or 2 (double points).
    #[serde(default = "default_multiplier")]
    pub multiplier: u8,
    /// Why the answer is right; shown at the reveal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanation: Option<String>,
}

fn default_time_limit_s() -> u32 {
    20
}
fn default_points() -> u32 {
    1000
}
fn default_multiplier() -> u8 {
    1
}

/// What kind of question it is, with its answer key.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum QuestionBody {
    /// One right option.
    SingleChoice {
        options: Vec<String>,
        answer: u32,
    },
    /// Several right options; partial credit.
    MultipleSelect {
        options: Vec<String>,
        answers: Vec<u32>,
    },
    TrueFalse {
        answer: bool,
    },
    /// Typed answer or fill-in-the-blank (the prompt shows the blank as `___`).
    TypedAnswer {
        /// Accepted spellings; compared after normalising case, spaces, punctuation and quotes.
        accept: Vec<String>,
        /// Real words that are wrong here and must not be forgiven as typos (`affect` when the
        /// answer is `effect`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        reject: Vec<String>,
        /// When false (the default), `café` and `cafe` are the same answer.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        accents_matter: bool,
    },
    /// Build a sentence from tiles. `answer` is the tiles in the right order; phones see them
    /// shuffled. `alternatives` lists other orders that are also right.
    WordOrder {
        answer: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        alternatives: Vec<Vec<String>>,
    },
    /// Match each left item with its right item; phones see the right column shuffled.
    Matching {
        pairs: Vec<(String, String)>,
    },
    /// An opinion poll: no right answer, no points.
    Poll {
        options: Vec<String>,
    },
}

/// The kind of a question, without its content.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuestionKind {
    SingleChoice,
    MultipleSelect,
    TrueFalse,
    TypedAnswer,
    WordOrder,
    Matching,
    Poll,
}

impl QuestionBody {
    pub fn kind(&self) -> QuestionKind {
        match self {
            QuestionBody::SingleChoice { .. } => QuestionKind::SingleChoice,
            QuestionBody::MultipleSelect { .. } => QuestionKind::MultipleSelect,
            QuestionBody::TrueFalse { .. } => QuestionKind::TrueFalse,
            QuestionBody::TypedAnswer { .. } => QuestionKind::TypedAnswer,
            QuestionBody::WordOrder { .. } => QuestionKind::WordOrder,
            QuestionBody::Matching { .. } => QuestionKind::Matching,
            QuestionBody::Poll { .. } => QuestionKind::Poll,
        }
    }
}

/// An answer as a phone sends it, after the client frame has been checked for shape. Indices
/// refer to what the phone was shown (tiles and right-hand items in their shuffled order).
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum Answer {
    /// Single choice and poll: the option index.
    Choice(u32),
    /// Multiple select: the chosen option indices.
    Choices(Vec<u32>),
    /// True/false.
    Bool(bool),
    /// Typed answer.
    Text(String),
    /// Word order: tile indices (as shown) in the order the player put them.
    Order(Vec<u32>),
    /// Matching: (left index, right index as shown) pairs.
    Pairs(Vec<(u32, u32)>),
}

impl Answer {
    /// The question kinds this answer shape fits.
    pub fn fits(&self, kind: QuestionKind) -> bool {
        matches!(
            (self, kind),
            (
                Answer::Choice(_),
                QuestionKind::SingleChoice | QuestionKind::Poll
            ) | (Answer::Choices(_), QuestionKind::MultipleSelect)
                | (Answer::Bool(_), QuestionKind::TrueFalse)
                | (Answer::Text(_), QuestionKind::TypedAnswer)
                | (Answer::Order(_), QuestionKind::WordOrder)
                | (Answer::Pairs(_), QuestionKind::Matching)
        )
    }
}

/// One problem found in an authored question set, with the path of the field.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ContentError {
    pub path: String,
    pub problem: String,
}

impl std::fmt::Display for ContentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.problem)
    }
}

/// Fields every question may have, whatever its kind.
const COMMON_FIELDS: &[&str] = &[
    "id",
    "level",
    "topic",
    "prompt",
    "kind",
    "time_limit_s",
    "points",
    "multiplier",
    "explanation",
];

fn kind_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "single_choice" => &["options", "answer"],
        "multiple_select" => &["options", "answers"],
        "true_false" => &["answer"],
        "typed_answer" => &["accept", "reject", "accents_matter"],
        "word_order" => &["answer", "alternatives"],
        "matching" => &["pairs"],
        "poll" => &["options"],
        _ => &[],
    }
}

impl QuestionSet {
    /// Parses and validates a set in the JSON import format, refusing unknown fields (a typo
    /// in a field name would otherwise silently fall back to a default).
    pub fn from_json(text: &str) -> Result<QuestionSet, Vec<ContentError>> {
        let one = |path: &str, problem: String| {
            vec![ContentError {
                path: path.into(),
                problem,
            }]
        };
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| one("", format!("not valid JSON: {e}")))?;
        let mut errors = Vec::new();
        if let Some(questions) = value.get("questions").and_then(|q| q.as_array()) {
            for (i, q) in questions.iter().enumerate() {
                let Some(obj) = q.as_object() else { continue };
                let kind = obj.get("kind").and_then(|k| k.as_str()).unwrap_or("");
                for key in obj.keys() {
                    if !COMMON_FIELDS.contains(&key.as_str())
                        && !kind_fields(kind).contains(&key.as_str())
                    {
                        errors.push(ContentError {
                            path: format!("questions[{i}].{key}"),
                            problem: format!("is not a field of a {kind:?} question"),
                        });
                    }
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let set: QuestionSet = serde_json::from_value(value).map_err(|e| one("", e.to_string()))?;
        set.validate()?;
        Ok(set)
    }

    /// Every problem in the set, or `Ok` if it can be imported.
    pub fn validate(&self) -> Result<(), Vec<ContentError>> {
        let mut errors = Vec::new();
        let mut err = |path: String, problem: &str| {
            errors.push(ContentError {
                path,
                problem: problem.to_owned(),
            })
        };
        if !is_slug(&self.id) {
            err(
                "id".into(),
                "must be 1-64 lowercase letters, digits or dashes",
            );
        }
        if self.title.trim().is_empty() || self.title.chars().count() > 100 {
            err("title".into(), "must be 1-100 characters");
        }
        if self.questions.is_empty() || self.questions.len() > MAX_QUESTIONS_PER_SET {
            err("questions".into(), "must hold 1-500 questions");
        }
        let mut seen = std::collections::HashSet::new();
        for (i, q) in self.questions.iter().enumerate() {
            let at = |field: &str| format!("questions[{i}].{field}");
            if !is_slug(&q.id) {
                err(at("id"), "must be 1-64 lowercase letters, digits or dashes");
            } else if !seen.insert(q.id.as_str()) {
                err(at("id"), "is used by an earlier question");
            }
            for (path, problem) in q.problems() {
                err(at(&path), problem);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

impl Question {
    /// Problems with this question's own fields, as (field, problem).
    fn problems(&self) -> Vec<(String, &'static str)> {
        let mut out = Vec::new();
        let mut add = |f: &str, p: &'static str| out.push((f.to_owned(), p));
        if !text_ok(&self.prompt, MAX_PROMPT_CHARS) {
            add("prompt", "must be 1-500 characters");
        }
        if self.topic.trim().is_empty() || self.topic.len() > 40 {
            add("topic", "must be 1-40 characters");
        }
        if !(MIN_TIME_LIMIT_S..=MAX_TIME_LIMIT_S).contains(&self.time_limit_s) {
            add("time_limit_s", "must be 5-300 seconds");
        }
        if self.points > MAX_POINTS {
            add("points", "must be at most 2000");
        }
        if self.multiplier > 2 {
            add("multiplier", "must be 0, 1 or 2");
        }
        if let Some(e) = &self.explanation
            && !text_ok(e, MAX_EXPLANATION_CHARS)
        {
            add("explanation", "must be 1-1000 characters");
        }
        match &self.body {
            QuestionBody::SingleChoice { options, answer } => {
                options_problems(options, &mut add);
                if *answer as usize >= options.len() {
                    add("answer", "is not the index of an option");
                }
            }
            QuestionBody::MultipleSelect { options, answers } => {
                options_problems(options, &mut add);
                if answers.is_empty() {
                    add("answers", "must name at least one option");
                }
                if answers.iter().any(|a| *a as usize >= options.len()) {
                    add("answers", "holds an index that is not an option");
                }
                if has_duplicates(answers) {
                    add("answers", "names an option twice");
                }
            }
            QuestionBody::TrueFalse { .. } => {}
            QuestionBody::TypedAnswer { accept, reject, .. } => {
                if accept.is_empty() || accept.iter().any(|a| !text_ok(a, MAX_OPTION_CHARS)) {
                    add("accept", "must hold 1 or more answers of 1-120 characters");
                }
                if reject.iter().any(|a| !text_ok(a, MAX_OPTION_CHARS)) {
                    add("reject", "must hold answers of 1-120 characters");
                }
            }
            QuestionBody::WordOrder {
                answer,
                alternatives,
            } => {
                let tiles_ok = |t: &Vec<String>| {
                    (2..=MAX_TILES).contains(&t.len())
                        && t.iter().all(|w| text_ok(w, MAX_OPTION_CHARS))
                };
                if !tiles_ok(answer) {
                    add("answer", "must hold 2-12 tiles of 1-120 characters");
                }
                let mut sorted = answer.clone();
                sorted.sort();
                for alt in alternatives {
                    let mut s = alt.clone();
                    s.sort();
                    if s != sorted {
                        add("alternatives", "must use exactly the tiles of the answer");
                    }
                }
            }
            QuestionBody::Matching { pairs } => {
                if !(2..=MAX_PAIRS).contains(&pairs.len()) {
                    add("pairs", "must hold 2-8 pairs");
                }
                let bad_text = pairs
                    .iter()
                    .any(|(l, r)| !text_ok(l, MAX_OPTION_CHARS) || !text_ok(r, MAX_OPTION_CHARS));
                if bad_text {
                    add("pairs", "items must be 1-120 characters");
                }
                let lefts: Vec<_> = pairs.iter().map(|p| &p.0).collect();
                let rights: Vec<_> = pairs.iter().map(|p| &p.1).collect();
                if has_duplicates(&lefts) || has_duplicates(&rights) {
                    add("pairs", "items on one side must be distinct");
                }
            }
            QuestionBody::Poll { options } => options_problems(options, &mut add),
        }
        out
    }
}

fn options_problems(options: &[String], add: &mut impl FnMut(&str, &'static str)) {
    if !(MIN_OPTIONS..=MAX_OPTIONS).contains(&options.len()) {
        add("options", "must hold 2-6 options");
    }
    if options.iter().any(|o| !text_ok(o, MAX_OPTION_CHARS)) {
        add("options", "each must be 1-120 characters");
    }
    if has_duplicates(options) {
        add("options", "must be distinct");
    }
}

fn text_ok(s: &str, max_chars: usize) -> bool {
    !s.trim().is_empty() && s.chars().count() <= max_chars
}

fn is_slug(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn has_duplicates<T: Ord + Clone>(items: &[T]) -> bool {
    let mut v = items.to_vec();
    v.sort();
    v.windows(2).any(|w| w[0] == w[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(body: &str) -> Result<QuestionSet, serde_json::Error> {
        serde_json::from_str(&format!(
            r#"{{"id":"s","title":"T","questions":[{{"id":"q1","level":"A1","topic":"vocabulary","prompt":"P",{body}}}]}}"#
        ))
    }

    #[test]
    fn every_kind_parses_with_defaults() {
        let bodies = [
            r#""kind":"single_choice","options":["a","b"],"answer":1"#,
            r#""kind":"multiple_select","options":["a","b","c"],"answers":[0,2]"#,
            r#""kind":"true_false","answer":true"#,
            r#""kind":"typed_answer","accept":["went"]"#,
            r#""kind":"word_order","answer":["I","am","here"]"#,
            r#""kind":"matching","pairs":[["big","large"],["small","little"]]"#,
            r#""kind":"poll","options":["yes","no"]"#,
        ];
        for b in bodies {
            let s = set(b).unwrap_or_else(|e| panic!("{b}: {e}"));
            assert_eq!(s.questions[0].time_limit_s, 20);
            assert_eq!(s.questions[0].points, 1000);
            assert_eq!(s.questions[0].multiplier, 1);
            s.validate().unwrap();
        }
    }

    #[test]
    fn validation_names_the_field() {
        let s = set(r#""kind":"single_choice","options":["a","a"],"answer":2"#).unwrap();
        let errs = s.validate().unwrap_err();
        let paths: Vec<_> = errs.iter().map(|e| e.path.as_str()).collect();
        assert!(paths.contains(&"questions[0].options"), "{errs:?}");
        assert!(paths.contains(&"questions[0].answer"), "{errs:?}");
    }

    #[test]
    fn unknown_fields_and_kinds_are_refused() {
        assert!(set(r#""kind":"essay","options":["a"]"#).is_err());
        let json = r#"{"id":"s","title":"T","questions":[{"id":"q1","level":"A1","topic":"t",
            "prompt":"P","kind":"true_false","answer":true,"colour":"red"}]}"#;
        let errs = QuestionSet::from_json(json).unwrap_err();
        assert_eq!(errs[0].path, "questions[0].colour");
        let typo = json.replace(r#","colour":"red""#, r#","multiplyer":2"#);
        assert!(QuestionSet::from_json(&typo).is_err());
        let ok = json.replace(r#","colour":"red""#, "");
        assert!(QuestionSet::from_json(&ok).is_ok());
    }

    #[test]
    fn word_order_alternatives_must_reuse_the_tiles() {
        let s =
            set(r#""kind":"word_order","answer":["a","b"],"alternatives":[["b","c"]]"#).unwrap();
        assert!(s.validate().is_err());
    }

    #[test]
    fn answer_fits_its_kind() {
        assert!(Answer::Choice(0).fits(QuestionKind::Poll));
        assert!(!Answer::Choice(0).fits(QuestionKind::TrueFalse));
        assert!(Answer::Pairs(vec![]).fits(QuestionKind::Matching));
    }
}
