//! How a question is laid out on the phones: the shuffled order of word-order tiles and of
//! matching's right-hand column.
//!
//! Phones answer with indices into what they were shown, so the server must know the exact
//! layout it sent: to grade, to state the right answer at the reveal, and to render the same
//! question again after a reconnect or on another node after a failover. The layout is a pure
//! function of (quiz id, question index): a fixed hash of those bytes seeds a splitmix64
//! generator that drives a Fisher-Yates shuffle. std's `Hash` is not used because its output
//! may change between Rust releases, and a new node must lay out a question as the old one did.
//! Everything else (choice options) is shown in the order the author wrote.

use quiz_protocol::{QuestionBody, QuizId};

/// Bumping this changes every layout; do it only between quizzes, never during one.
const LAYOUT_DOMAIN: &[u8] = b"quiz-engine/layout/v1";

/// One question's display order. Each list maps a shown position to the authored index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    tiles: Vec<u32>,
    right: Vec<u32>,
}

impl Layout {
    /// The layout of question `index` of quiz `quiz`.
    pub fn new(quiz: &QuizId, index: u32, body: &QuestionBody) -> Layout {
        match body {
            QuestionBody::WordOrder {
                answer,
                alternatives,
            } => {
                let perm = shuffle(answer.len(), seed(quiz, index, b'T'));
                let tiles = Self::tiles_not_given_away(perm, answer, alternatives);
                Layout {
                    tiles,
                    right: Vec::new(),
                }
            }
            QuestionBody::Matching { pairs } => {
                let mut right = shuffle(pairs.len(), seed(quiz, index, b'R'));
                // Right items shown beside their own left items would give the answer away;
                // the items are distinct, so a rotation of the identity is never the identity.
                if right.iter().enumerate().all(|(i, r)| i as u32 == *r) {
                    right.rotate_left(1);
                }
                Layout {
                    tiles: Vec::new(),
                    right,
                }
            }
            _ => Layout::default(),
        }
    }

    /// Shown tile position → index into the authored `answer`.
    pub fn tiles(&self) -> &[u32] {
        &self.tiles
    }

    /// Shown right-hand position → index of the authored pair it belongs to.
    pub fn right(&self) -> &[u32] {
        &self.right
    }

    /// The texts in shown order, given the authored list they index.
    pub fn shown<'a>(order: &[u32], authored: &'a [String]) -> Vec<&'a str> {
        order
            .iter()
            .filter_map(|i| authored.get(*i as usize).map(String::as_str))
            .collect()
    }

    /// Picks the first rotation of `perm` whose texts are not a right answer, or failing that
    /// not the main answer; tiles that are all the same word leave no choice.
    fn tiles_not_given_away(
        perm: Vec<u32>,
        answer: &[String],
        alternatives: &[Vec<String>],
    ) -> Vec<u32> {
        let rotations = (0..perm.len().max(1)).map(|k| {
            let mut p = perm.clone();
            p.rotate_left(k);
            p
        });
        let is_answer = |p: &[u32], a: &[String]| Self::shown(p, answer) == a;
        let is_right =
            |p: &[u32]| is_answer(p, answer) || alternatives.iter().any(|alt| is_answer(p, alt));
        let mut fallback = None;
        for p in rotations {
            if !is_right(&p) {
                return p;
            }
            if fallback.is_none() && !is_answer(&p, answer) {
                fallback = Some(p);
            }
        }
        fallback.unwrap_or(perm)
    }
}

/// A fixed 64-bit hash (FNV-1a) of the layout domain, the quiz code, the question index and a
/// tag for which list is being shuffled.
fn seed(quiz: &QuizId, index: u32, tag: u8) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let (index, tag) = (index.to_le_bytes(), [tag]);
    let bytes = [LAYOUT_DOMAIN, quiz.as_str().as_bytes(), &index, &tag];
    bytes
        .iter()
        .flat_map(|part| part.iter())
        .fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME))
}

/// splitmix64: a tiny generator with good output from any seed, including ones that differ in
/// a single bit (neighbouring question indices).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A permutation of `0..n` (Fisher-Yates). The modulo's bias is below 2^-58 for n ≤ 16.
fn shuffle(n: usize, seed: u64) -> Vec<u32> {
    let mut rng = SplitMix64(seed);
    let mut perm: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        perm.swap(i, j);
    }
    perm
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiz() -> QuizId {
        QuizId::parse("K7M3QX").unwrap()
    }

    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    fn word_order(answer: &str) -> QuestionBody {
        QuestionBody::WordOrder {
            answer: words(answer),
            alternatives: vec![],
        }
    }

    #[test]
    fn layouts_are_fixed_across_builds() {
        // Golden values: if these change, a node running a new build would grade a live quiz
        // against a different layout than the phones were shown.
        let body = word_order("she has never been to London");
        assert_eq!(Layout::new(&quiz(), 0, &body).tiles(), &[2, 3, 0, 1, 5, 4]);
        assert_eq!(Layout::new(&quiz(), 1, &body).tiles(), &[2, 1, 4, 5, 3, 0]);
    }

    #[test]
    fn layouts_are_permutations_and_vary_by_question() {
        let body = word_order("a b c d e f g h");
        let layouts: Vec<_> = (0..20).map(|i| Layout::new(&quiz(), i, &body)).collect();
        for l in &layouts {
            let mut sorted = l.tiles().to_vec();
            sorted.sort();
            assert_eq!(sorted, (0..8).collect::<Vec<_>>());
        }
        layouts.windows(2).for_each(|w| assert_ne!(w[0], w[1]));
    }

    #[test]
    fn word_order_is_never_shown_solved() {
        let body = QuestionBody::WordOrder {
            answer: words("go home"),
            alternatives: vec![],
        };
        for i in 0..50 {
            let l = Layout::new(&quiz(), i, &body);
            assert_eq!(l.tiles(), &[1, 0], "question {i}");
        }
        // With duplicate words only the texts matter: "a a b" must not show as "a a b".
        let dup = word_order("a a b");
        let authored = words("a a b");
        for i in 0..50 {
            let l = Layout::new(&quiz(), i, &dup);
            assert_ne!(Layout::shown(l.tiles(), &authored), vec!["a", "a", "b"]);
        }
        // All tiles alike: nothing to hide, and no endless search.
        let same = word_order("la la");
        assert_eq!(Layout::new(&quiz(), 0, &same).tiles().len(), 2);
    }

    #[test]
    fn word_order_avoids_alternatives_when_it_can() {
        let body = QuestionBody::WordOrder {
            answer: words("today I run"),
            alternatives: vec![words("I run today")],
        };
        let authored = words("today I run");
        for i in 0..50 {
            let l = Layout::new(&quiz(), i, &body);
            let shown = Layout::shown(l.tiles(), &authored);
            assert_ne!(shown, vec!["today", "I", "run"]);
            assert_ne!(shown, vec!["I", "run", "today"]);
        }
    }

    #[test]
    fn matching_right_column_is_never_in_authored_order() {
        let pairs = |n: usize| QuestionBody::Matching {
            pairs: (0..n).map(|i| (format!("l{i}"), format!("r{i}"))).collect(),
        };
        for n in 2..=8 {
            for i in 0..30 {
                let l = Layout::new(&quiz(), i, &pairs(n));
                assert_eq!(l.right().len(), n);
                assert!(l.right().iter().enumerate().any(|(p, r)| p as u32 != *r));
            }
        }
    }

    #[test]
    fn choice_questions_have_no_shuffle() {
        let body = QuestionBody::TrueFalse { answer: true };
        assert_eq!(Layout::new(&quiz(), 0, &body), Layout::default());
    }
}
