//! [`QuizView`]: what a phone shows, folded from the frames it receives.
//!
//! A plain struct with no I/O: feed it every [`Event`] (or frame) in order and read the
//! fields. The rules are the protocol's: `welcome` replaces everything, `resumed` keeps the
//! view and lets the replayed events update it, a leaderboard frame only moves forward in
//! `v` and keeps the previous top N when it carries none, and an ack updates your score.
//! Acks and leaderboards travel separately (a leaderboard coalesced just before your answer
//! may arrive after its ack), and a score never goes down within a session, so a rank and
//! score that are lower than the score already known are stale and ignored.
//! Times are what the server said when it sent the frame (`ends_in_ms`); counting them
//! down is the UI's business.

use quiz_protocol::Phase;
use quiz_protocol::client::{
    Ack, Ended, LeaderboardFrame, QuestionFrame, QuizInfo, Reveal, Role, ServerMessage, TopEntry,
};

use crate::connection::{CloseReason, Event};

/// The state of a quiz as one phone sees it.
#[derive(Clone, PartialEq, Debug)]
pub struct QuizView {
    /// From the last `welcome`.
    pub quiz: Option<QuizInfo>,
    pub role: Option<Role>,
    /// Your nickname as the server knows it (with any suffix it added).
    pub nickname: String,
    pub phase: Phase,
    /// The current question (for self-paced, yours).
    pub question: Option<QuestionFrame>,
    /// Your ack for the current question.
    pub answered: Option<Ack>,
    /// The current question's reveal, once shown.
    pub reveal: Option<Reveal>,
    pub score: u32,
    /// 1-based; 0 before you have a rank (and for hosts).
    pub rank: u32,
    /// The top N, best first.
    pub top: Vec<TopEntry>,
    pub players: u32,
    /// Hosts: answers in for the current question.
    pub answers_in: Option<u32>,
    /// Version of the last leaderboard applied.
    pub leaderboard_v: u64,
    /// The final standings, once the quiz has ended.
    pub ended: Option<Ended>,
    /// Why the session closed, once it has.
    pub closed: Option<CloseReason>,
}

impl Default for QuizView {
    fn default() -> Self {
        Self {
            quiz: None,
            role: None,
            nickname: String::new(),
            phase: Phase::Lobby,
            question: None,
            answered: None,
            reveal: None,
            score: 0,
            rank: 0,
            top: Vec::new(),
            players: 0,
            answers_in: None,
            leaderboard_v: 0,
            ended: None,
            closed: None,
        }
    }
}

impl QuizView {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies an event from [`crate::EventStream`].
    pub fn apply_event(&mut self, event: &Event) {
        match event {
            Event::Frame(msg) => self.apply(msg),
            Event::Closed { reason, .. } => self.closed = Some(reason.clone()),
            Event::Reconnecting { .. } | Event::Reconnected => {}
        }
    }

    /// Applies one server frame.
    pub fn apply(&mut self, msg: &ServerMessage) {
        match msg {
            ServerMessage::Started(_) => self.phase = Phase::InProgress,
            ServerMessage::Welcome(w) => {
                *self = QuizView {
                    quiz: Some(w.quiz.clone()),
                    role: Some(w.you.role),
                    nickname: w.you.nickname.clone(),
                    phase: w.phase,
                    question: w.question.clone(),
                    answered: w.answered.clone(),
                    reveal: w.reveal.as_deref().cloned(),
                    score: w.you.score,
                    rank: w.you.rank,
                    closed: self.closed.take(),
                    ..QuizView::default()
                };
                self.apply_leaderboard(&w.leaderboard);
                if w.phase == Phase::Ended {
                    // Joined after the end: the snapshot's leaderboard is the final one.
                    self.ended = Some(Ended {
                        seq: w.seq,
                        top: w.leaderboard.top.clone().unwrap_or_default(),
                        players: w.leaderboard.players,
                    });
                }
            }
            ServerMessage::Resumed(r) => {
                self.role = Some(r.you.role);
                self.nickname.clone_from(&r.you.nickname);
                self.score = r.you.score;
                self.rank = r.you.rank;
            }
            ServerMessage::Question(q) => {
                if q.seq.is_some() {
                    self.phase = Phase::Open;
                }
                self.answered = None;
                self.reveal = None;
                self.question = Some(q.clone());
            }
            ServerMessage::Closed(c) => {
                if self.is_current(c.index) {
                    self.phase = Phase::Closed;
                }
            }
            ServerMessage::Reveal(r) => {
                if r.seq.is_some() {
                    self.phase = Phase::Reveal;
                }
                self.reveal = Some((**r).clone());
            }
            ServerMessage::Paused(p) => {
                if self.is_current(p.index) {
                    self.phase = Phase::Paused;
                    if let Some(q) = &mut self.question {
                        q.ends_in_ms = p.remaining_ms;
                    }
                }
            }
            ServerMessage::Unpaused(u) => {
                if self.is_current(u.index) {
                    self.phase = Phase::Open;
                    if let Some(q) = &mut self.question {
                        q.ends_in_ms = u.ends_in_ms;
                    }
                }
            }
            ServerMessage::Ended(e) => {
                self.phase = Phase::Ended;
                self.top.clone_from(&e.top);
                self.players = e.players;
                self.ended = Some(e.clone());
            }
            ServerMessage::Ack(a) => {
                // A re-sent ack for an older answer must not take the score back.
                if a.total >= self.score {
                    self.score = a.total;
                    self.rank = a.rank;
                }
                if self.is_current(a.question) {
                    self.answered = Some(a.clone());
                }
            }
            ServerMessage::Leaderboard(lb) => self.apply_leaderboard(lb),
            // The phase moves with the sequenced events only: a `host_ok` can overtake the
            // event its command caused, and taking its phase would let that event, arriving
            // next, look like a step back.
            ServerMessage::HostOk(_) => {}
            ServerMessage::Pong(_) => {}
            ServerMessage::Error(_) => {}
        }
    }

    /// Merges a leaderboard frame: only newer versions apply; `top` and `you` only when
    /// present.
    fn apply_leaderboard(&mut self, lb: &LeaderboardFrame) {
        if lb.v < self.leaderboard_v {
            return;
        }
        self.leaderboard_v = lb.v;
        self.players = lb.players;
        if let Some(top) = &lb.top {
            self.top.clone_from(top);
        }
        if let Some(you) = lb.you.filter(|you| you.score >= self.score) {
            self.score = you.score;
            self.rank = you.rank;
        }
        if lb.answered.is_some() {
            self.answers_in = lb.answered;
        }
    }

    fn is_current(&self, index: u32) -> bool {
        self.question.as_ref().is_some_and(|q| q.index == index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiz_protocol::client::{Closed, RankScore, Resumed, Welcome, You};
    use quiz_protocol::{AnswerId, Level, Mode, QuestionKind, Scoring};

    fn lb(v: u64, top: Option<&[(&str, u32)]>, you: Option<(u32, u32)>) -> ServerMessage {
        ServerMessage::Leaderboard(LeaderboardFrame {
            v,
            players: 3,
            top: top.map(|t| t.iter().map(|(n, s)| TopEntry((*n).into(), *s)).collect()),
            you: you.map(|(rank, score)| RankScore { rank, score }),
            answered: None,
        })
    }

    fn question(index: u32) -> QuestionFrame {
        QuestionFrame {
            seq: Some(2 + u64::from(index)),
            index,
            count: 3,
            kind: QuestionKind::TrueFalse,
            level: Level::A1,
            topic: "grammar".into(),
            prompt: "Is it?".into(),
            options: None,
            tiles: None,
            left: None,
            right: None,
            time_limit_ms: 20_000,
            ends_in_ms: 20_000,
            points: 1000,
            multiplier: 1,
        }
    }

    fn welcome() -> ServerMessage {
        ServerMessage::Welcome(Box::new(Welcome {
            protocol: 1,
            seq: 1,
            quiz: QuizInfo {
                id: "K7M3QX".into(),
                title: "Verbs".into(),
                mode: Mode::Live,
                scoring: Scoring::Speed,
                question_count: 3,
                auto_advance: None,
            },
            you: You {
                role: Role::Player,
                nickname: "Ana".into(),
                score: 0,
                rank: 0,
            },
            phase: Phase::Lobby,
            ends_in_ms: None,
            question: None,
            answered: None,
            reveal: None,
            leaderboard: LeaderboardFrame {
                v: 1,
                players: 1,
                top: Some(vec![]),
                you: None,
                answered: None,
            },
        }))
    }

    #[test]
    fn a_host_ok_ahead_of_its_event_does_not_move_the_phase() {
        let mut view = QuizView::new();
        let mut w = welcome();
        if let ServerMessage::Welcome(w) = &mut w {
            w.phase = Phase::Closed;
        }
        view.apply(&w);
        view.apply(&ServerMessage::HostOk(quiz_protocol::client::HostOk {
            command: quiz_protocol::HostCommand::Reveal,
            phase: Phase::Reveal,
            reference: None,
        }));
        assert_eq!(
            view.phase,
            Phase::Closed,
            "still closed until the reveal arrives"
        );
    }

    #[test]
    fn a_welcome_after_the_end_carries_the_final_standings() {
        let mut view = QuizView::new();
        let mut w = welcome();
        if let ServerMessage::Welcome(w) = &mut w {
            w.phase = Phase::Ended;
            w.leaderboard.top = Some(vec![TopEntry("Ana".into(), 900)]);
        }
        view.apply(&w);
        let ended = view.ended.expect("the end is known");
        assert_eq!(ended.top, vec![TopEntry("Ana".into(), 900)]);
    }

    #[test]
    fn leaderboard_merges_top_and_you_and_only_moves_forward() {
        let mut view = QuizView::new();
        view.apply(&welcome());
        view.apply(&lb(2, Some(&[("Bo", 900), ("Ana", 800)]), Some((2, 800))));
        assert_eq!(view.top.len(), 2);
        assert_eq!((view.rank, view.score), (2, 800));
        // No top: keep the previous one; new you.
        view.apply(&lb(3, None, Some((1, 1700))));
        assert_eq!(view.top[0], TopEntry("Bo".into(), 900));
        assert_eq!((view.rank, view.score), (1, 1700));
        // No you: keep it; new top.
        view.apply(&lb(4, Some(&[("Ana", 1700), ("Bo", 900)]), None));
        assert_eq!(view.top[0], TopEntry("Ana".into(), 1700));
        assert_eq!((view.rank, view.score), (1, 1700));
        // A leaderboard made before an answer's ack does not take the score back.
        view.apply(&ServerMessage::Ack(Ack {
            answer_id: AnswerId::parse("a").unwrap(),
            question: 0,
            points: 300,
            total: 2000,
            rank: 1,
            streak: 2,
        }));
        view.apply(&lb(5, None, Some((2, 1700))));
        assert_eq!((view.rank, view.score, view.leaderboard_v), (1, 2000, 5));
        // An older version is ignored entirely.
        view.apply(&lb(3, Some(&[("Cy", 5)]), Some((3, 5000))));
        assert_eq!(view.top[0].0, "Ana");
        assert_eq!((view.rank, view.score, view.leaderboard_v), (1, 2000, 5));
    }

    #[test]
    fn welcome_resets_and_resumed_keeps() {
        let mut view = QuizView::new();
        view.apply(&welcome());
        view.apply(&ServerMessage::Question(question(0)));
        view.apply(&lb(5, Some(&[("Ana", 10)]), Some((1, 10))));
        let before = view.clone();
        view.apply(&ServerMessage::Resumed(Resumed {
            from_seq: 3,
            to_seq: 3,
            you: You {
                role: Role::Player,
                nickname: "Ana".into(),
                score: 10,
                rank: 1,
            },
        }));
        assert_eq!(view, before);
        view.apply(&ServerMessage::Closed(Closed { seq: 3, index: 0 }));
        assert_eq!(view.phase, Phase::Closed);
        view.apply(&welcome());
        assert_eq!(view.question, None);
        assert_eq!(view.phase, Phase::Lobby);
        assert_eq!(
            view.leaderboard_v, 1,
            "a snapshot may go back to an older version"
        );
        assert!(view.top.is_empty());
    }

    #[test]
    fn acks_update_score_but_never_take_it_back() {
        let mut view = QuizView::new();
        view.apply(&welcome());
        view.apply(&ServerMessage::Question(question(1)));
        let ack = |total, question| {
            ServerMessage::Ack(Ack {
                answer_id: AnswerId::parse("a").unwrap(),
                question,
                points: 100,
                total,
                rank: 2,
                streak: 1,
            })
        };
        view.apply(&ack(900, 1));
        assert_eq!((view.score, view.rank), (900, 2));
        assert_eq!(view.answered.as_ref().map(|a| a.total), Some(900));
        view.apply(&ack(400, 0));
        assert_eq!(view.score, 900);
        view.apply(&ServerMessage::Question(question(2)));
        assert_eq!(view.answered, None);
    }
}
