//! Session tests: a small harness that plays a quiz with a fake clock, and one file per
//! topic. Tests assert what phones and hosts would see: frames, acks, errors, standings.

use quiz_protocol::client::{Ack, Role, ServerMessage, Welcome};
use quiz_protocol::cluster::{Audience, LeaderboardUpdate};
use quiz_protocol::{
    Answer, AnswerId, AutoAdvance, ErrorCode, HostCommand, Level, Mode, Phase, PlayerNo, Question,
    QuestionBody, QuizId, QuizSettings, UserId,
};

use super::{AnswerRecord, Effect, EngineConfig, QuizSpec, SavedQuiz, Session, Submit};
use crate::Millis;

mod answers;
mod frames;
mod live;
mod props;
mod restore;
mod self_paced;

/// Quiz time 0, as wall-clock ms.
const T0: Millis = 1_700_000_000_000;

fn aid(s: &str) -> AnswerId {
    AnswerId::parse(s).unwrap()
}

fn question(body: QuestionBody) -> Question {
    Question {
        id: "q".into(),
        level: Level::A2,
        topic: "grammar".into(),
        prompt: "Pick one".into(),
        body,
        time_limit_s: 20,
        points: 1000,
        multiplier: 1,
        explanation: Some("Because.".into()),
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Single choice, options go/went/gone, right answer 1 ("went").
fn choice() -> Question {
    question(QuestionBody::SingleChoice {
        options: strings(&["go", "went", "gone"]),
        answer: 1,
    })
}

fn true_false(answer: bool) -> Question {
    question(QuestionBody::TrueFalse { answer })
}

fn poll() -> Question {
    question(QuestionBody::Poll {
        options: strings(&["tea", "coffee"]),
    })
}

fn settings() -> QuizSettings {
    QuizSettings::default()
}

fn spec(questions: Vec<Question>, settings: QuizSettings) -> QuizSpec {
    QuizSpec {
        id: QuizId::parse("K7M3QX").unwrap(),
        title: "Past simple".into(),
        settings,
        questions,
    }
}

fn auto(reveal_after_ms: u32, next_after_ms: u32) -> QuizSettings {
    QuizSettings {
        auto_advance: Some(AutoAdvance {
            reveal_after_ms,
            next_after_ms,
        }),
        ..settings()
    }
}

fn self_paced() -> QuizSettings {
    QuizSettings {
        mode: Mode::SelfPaced,
        self_paced_window_s: 3_600,
        ..settings()
    }
}

/// A session with a clock, and everything it has emitted so far.
struct Quiz {
    s: Session,
    now: Millis,
    effects: Vec<Effect>,
    /// Records committed through [`Quiz::answer`]: the answer log.
    log: Vec<AnswerRecord>,
}

impl Quiz {
    fn new(questions: Vec<Question>, settings: QuizSettings) -> Quiz {
        Quiz::with_config(questions, settings, EngineConfig::default())
    }

    fn with_config(questions: Vec<Question>, settings: QuizSettings, config: EngineConfig) -> Quiz {
        let s = Session::new(spec(questions, settings), config, T0);
        Quiz {
            s,
            now: T0,
            effects: Vec::new(),
            log: Vec::new(),
        }
    }

    /// Three true/false questions (answers true, false, true), default settings.
    fn live() -> Quiz {
        Quiz::new(
            vec![true_false(true), true_false(false), true_false(true)],
            settings(),
        )
    }

    /// Moves the clock to `ms` after quiz time 0 without firing timers.
    fn at(&mut self, ms: Millis) -> &mut Self {
        self.now = T0 + ms;
        self
    }

    /// Moves the clock to `ms` after quiz time 0 and fires what is due.
    fn tick(&mut self, ms: Millis) {
        self.now = T0 + ms;
        self.s.handle_timeout(self.now);
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(e) = self.s.poll_effect() {
            self.effects.push(e);
        }
    }

    /// Effects since the last call.
    fn take(&mut self) -> Vec<Effect> {
        self.drain();
        std::mem::take(&mut self.effects)
    }

    /// Frames sent since the last `take`, with their audience.
    fn sent(&mut self) -> Vec<(Audience, ServerMessage)> {
        self.take()
            .into_iter()
            .filter_map(|e| match e {
                Effect::Send { audience, msg } => Some((audience, msg)),
                _ => None,
            })
            .collect()
    }

    /// Names of the sequenced frames sent since the last `take`, with their seq.
    fn events(&mut self) -> Vec<(String, u64)> {
        self.sent()
            .into_iter()
            .filter_map(|(_, m)| Some((kind(&m), m.seq()?)))
            .collect()
    }

    fn join(&mut self, name: &str) -> PlayerNo {
        let user = UserId::parse(&format!("user-{name}")).unwrap();
        let joined = self.s.join(&user, name, self.now).unwrap();
        self.drain();
        joined.player
    }

    fn host(&mut self, command: HostCommand) -> Result<Phase, ErrorCode> {
        let r = self.s.host(command, None, self.now);
        self.drain();
        r.map(|ok| ok.phase).map_err(|e| e.code)
    }

    fn kick(&mut self, nickname: &str) -> Result<Phase, ErrorCode> {
        let r = self.s.host(HostCommand::Kick, Some(nickname), self.now);
        self.drain();
        r.map(|ok| ok.phase).map_err(|e| e.code)
    }

    fn submit(&mut self, p: PlayerNo, q: u32, id: &str, answer: Answer) -> Submit {
        let r = self.s.submit(p, q, aid(id), answer, self.now);
        self.drain();
        r
    }

    /// Submits and, if accepted, commits: what a phone sees when the write succeeds.
    fn answer(&mut self, p: PlayerNo, q: u32, id: &str, answer: Answer) -> Result<Ack, ErrorCode> {
        match self.submit(p, q, id, answer) {
            Submit::Accepted(record) => {
                let ack = self.s.commit(&record, self.now);
                self.drain();
                self.log.push(record);
                Ok(ack)
            }
            Submit::Duplicate(ack) => Ok(ack),
            Submit::InFlight => panic!("unexpected in-flight answer"),
            Submit::Rejected(r) => Err(r.code),
        }
    }

    /// The pending record of an accepted submit.
    fn accept(&mut self, p: PlayerNo, q: u32, id: &str, answer: Answer) -> AnswerRecord {
        match self.submit(p, q, id, answer) {
            Submit::Accepted(record) => record,
            other => panic!("expected Accepted, got {other:?}"),
        }
    }

    fn rejected(&mut self, p: PlayerNo, q: u32, id: &str, answer: Answer) -> ErrorCode {
        match self.submit(p, q, id, answer) {
            Submit::Rejected(r) => r.code,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    fn welcome(&self, p: PlayerNo) -> Welcome {
        self.s.welcome(Some(p), Role::Player, self.now)
    }

    fn full(&self) -> LeaderboardUpdate {
        self.s.leaderboard_full()
    }

    /// Rank and score as the player's welcome shows them.
    fn standing(&self, p: PlayerNo) -> (u32, u32) {
        let you = self.welcome(p).you;
        (you.rank, you.score)
    }
}

impl Quiz {
    /// What the stores hold now: progress, players and the answer log.
    fn saved(&self) -> SavedQuiz {
        let players = (1..)
            .map_while(|n| self.s.player(PlayerNo(n)).cloned())
            .collect();
        SavedQuiz {
            progress: self.s.progress(),
            players,
            answers: self.log.clone(),
        }
    }

    /// The session a new owner rebuilds from [`Quiz::saved`], on the same clock.
    fn restored(&self) -> Quiz {
        let s = Session::restore(self.s.spec().clone(), EngineConfig::default(), self.saved());
        Quiz {
            s,
            now: self.now,
            effects: Vec::new(),
            log: self.log.clone(),
        }
    }
}

/// A full leaderboard without its version, which restarts on a new owner.
fn board(update: &LeaderboardUpdate) -> LeaderboardUpdate {
    LeaderboardUpdate {
        version: 0,
        ..update.clone()
    }
}

/// A frame's `type`.
fn kind(msg: &ServerMessage) -> String {
    let json = serde_json::to_value(msg).unwrap();
    json["type"].as_str().unwrap().to_owned()
}

fn names(events: &[(String, u64)]) -> Vec<&str> {
    events.iter().map(|(n, _)| n.as_str()).collect()
}
