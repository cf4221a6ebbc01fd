//! How everyone answered one question, kept up to date as answers are counted so that a
//! reveal (sent to everyone, or in each late joiner's welcome) costs nothing to render.

use quiz_protocol::client::Stats;
use quiz_protocol::{Answer, Question, QuestionBody};

#[derive(Clone, Debug, Default)]
pub(super) struct QuestionStats {
    answered: u32,
    correct: u32,
    total_ms: u64,
    /// Per option (choices, polls) or `[true, false]`; `None` for other kinds.
    counts: Option<Vec<u32>>,
}

impl QuestionStats {
    pub(super) fn new(question: &Question) -> Self {
        let counts = match &question.body {
            QuestionBody::SingleChoice { options, .. }
            | QuestionBody::MultipleSelect { options, .. }
            | QuestionBody::Poll { options } => Some(vec![0; options.len()]),
            QuestionBody::TrueFalse { .. } => Some(vec![0; 2]),
            _ => None,
        };
        Self {
            counts,
            ..Self::default()
        }
    }

    /// Counts one answer (already checked against the question).
    pub(super) fn count(&mut self, answer: &Answer, correct: bool, response_ms: u32) {
        self.answered += 1;
        self.correct += u32::from(correct);
        self.total_ms += u64::from(response_ms);
        let Some(counts) = self.counts.as_mut() else {
            return;
        };
        let mut bump = |i: u32| {
            if let Some(c) = counts.get_mut(i as usize) {
                *c += 1;
            }
        };
        match answer {
            Answer::Choice(i) => bump(*i),
            Answer::Choices(chosen) => chosen.iter().copied().for_each(bump),
            Answer::Bool(b) => bump(u32::from(!*b)),
            _ => {}
        }
    }

    pub(super) fn answered(&self) -> u32 {
        self.answered
    }

    pub(super) fn frame(&self) -> Stats {
        let n = u64::from(self.answered);
        Stats {
            answered: self.answered,
            correct: self.correct,
            // Rounded to the nearest ms; the mean of u32 values fits in u32.
            mean_ms: (n > 0).then(|| ((2 * self.total_ms + n) / (2 * n)) as u32),
            counts: self.counts.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use quiz_protocol::Level;

    use super::*;

    fn question(body: QuestionBody) -> Question {
        Question {
            id: "q".into(),
            level: Level::A1,
            topic: "t".into(),
            prompt: "?".into(),
            body,
            time_limit_s: 20,
            points: 1000,
            multiplier: 1,
            explanation: None,
        }
    }

    #[test]
    fn counts_per_kind() {
        let mut tf = QuestionStats::new(&question(QuestionBody::TrueFalse { answer: true }));
        tf.count(&Answer::Bool(true), true, 1_000);
        tf.count(&Answer::Bool(false), false, 2_001);
        tf.count(&Answer::Bool(true), true, 3_000);
        let f = tf.frame();
        assert_eq!((f.answered, f.correct), (3, 2));
        assert_eq!(f.counts, Some(vec![2, 1]));
        assert_eq!(f.mean_ms, Some(2_000));

        let options = vec!["a".into(), "b".into(), "c".into()];
        let mut ms = QuestionStats::new(&question(QuestionBody::MultipleSelect {
            options,
            answers: vec![0, 2],
        }));
        ms.count(&Answer::Choices(vec![0, 2]), true, 10);
        ms.count(&Answer::Choices(vec![0, 1]), false, 10);
        assert_eq!(ms.frame().counts, Some(vec![2, 1, 1]));

        let typed = QuestionStats::new(&question(QuestionBody::TypedAnswer {
            accept: vec!["x".into()],
            reject: vec![],
            accents_matter: false,
        }));
        let f = typed.frame();
        assert_eq!((f.counts, f.mean_ms), (None, None));
    }
}
