//! A quiz's room on this edge: the one subscription to the quiz's owner, fanned out to the
//! edge's phones in that quiz.
//!
//! Quiz-wide frames arrive rendered once and are shared by every phone. Leaderboard versions
//! arrive as deltas; the room keeps a replica so that it can give each phone its own rank, and
//! sends a phone a frame only when something it shows changed.
//!
//! A phone that is joining is *pending*: events are held for it until its welcome (or replay)
//! is queued, then those newer than its snapshot are released, so nothing is missed or doubled.
//!
//! When the quiz moves (its owner died, handed it off or drained), the room subscribes to the
//! new owner and joins each of its phones there again from the last event it sent them: a
//! phone stays connected and gets a `resumed` and the events it missed, as after a reconnect.

use crate::event::Event;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quiz_engine::LeaderboardReplica;
use quiz_protocol::client::{RankScore, Role, TopEntry, close};
use quiz_protocol::cluster::{Audience, EdgeRequest, OwnerEvent, OwnerReply, Rejection};
use quiz_protocol::{PlayerNo, QuizId, UserId};
use tokio::sync::{Semaphore, mpsc};

use super::Edge;
use super::conn::Conn;
use crate::auth::Session;
use crate::cluster::Subscription;
use crate::shard::EdgeId;

/// How long a room with no phones stays subscribed, for phones that are only reconnecting.
const ROOM_LINGER: Duration = Duration::from_secs(30);
/// Control messages queued for a room.
const CONTROL_QUEUE: usize = 1024;
/// How often a room drops members whose connection closed.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Phones joined again at the quiz's new owner at once, after the quiz moved.
const REJOINS_IN_FLIGHT: usize = 256;
/// How long to wait between tries to subscribe to a moved quiz's new owner.
const RESUBSCRIBE_PAUSE: Duration = Duration::from_millis(100);

enum Control {
    Register {
        conn: Arc<Conn>,
        session: Session,
    },
    Live {
        conn: u64,
        player: Option<PlayerNo>,
        seq: u64,
        leaderboard_v: Option<u64>,
    },
    Unregister {
        conn: u64,
    },
    /// The new owner's reply to joining a phone again after the quiz moved.
    Rejoined {
        conn: u64,
        reply: OwnerReply,
    },
}

/// A handle to a room, held by the edge and by its phones' readers.
#[derive(Clone)]
pub(crate) struct RoomHandle {
    control: mpsc::Sender<Control>,
    open: Arc<AtomicBool>,
}

impl RoomHandle {
    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire) && !self.control.is_closed()
    }

    pub(crate) fn same(&self, other: &RoomHandle) -> bool {
        Arc::ptr_eq(&self.open, &other.open)
    }

    /// Stops the room (its phones are closed to reconnect).
    pub(crate) fn close(&self) {
        self.open.store(false, Ordering::Release);
    }

    /// Adds a joining phone; events are held for it until [`RoomHandle::go_live`]. Waits
    /// for room in the control queue (a join storm queues here rather than fail). False if
    /// the room has closed.
    pub(crate) async fn register(&self, conn: Arc<Conn>, session: &Session) -> bool {
        let session = session.clone();
        self.control
            .send(Control::Register { conn, session })
            .await
            .is_ok()
    }

    /// The phone's snapshot (up to `seq`) is queued: release newer events to it.
    pub(crate) async fn go_live(
        &self,
        conn: u64,
        player: Option<PlayerNo>,
        seq: u64,
        leaderboard_v: Option<u64>,
    ) {
        let live = Control::Live {
            conn,
            player,
            seq,
            leaderboard_v,
        };
        let _ = self.control.send(live).await;
    }

    /// The phone leaves the room. Never waits: if the control queue is full (thousands of
    /// phones closing at once), the room finds the closed connection on its next sweep.
    pub(crate) fn unregister(&self, conn: u64) {
        let _ = self.control.try_send(Control::Unregister { conn });
    }
}

struct Member {
    conn: Arc<Conn>,
    role: Role,
    /// Who the phone is, to join it again at a new owner.
    user: UserId,
    nickname: String,
    player: Option<PlayerNo>,
    /// Events held while joining; `None` once live.
    pending: Option<Vec<Event>>,
    /// Sequenced events up to this one are in the phone's snapshot or queued for it.
    after_seq: u64,
    last_you: Option<RankScore>,
    last_players: u32,
    last_answered: u32,
    needs_top: bool,
}

/// Opens a room: subscribes to the quiz's owner and starts the room's task.
pub(super) async fn open(edge: Arc<Edge>, quiz: QuizId) -> Result<RoomHandle, Rejection> {
    let (events_tx, events) = mpsc::channel(edge.config.limits.edge_queue_events);
    let edge_id = crate::shard::next_edge_id();
    let subscription = edge.owners.subscribe(&quiz, edge_id, events_tx).await?;
    let (control_tx, control) = mpsc::channel(CONTROL_QUEUE);
    let handle = RoomHandle {
        control: control_tx,
        open: Arc::new(AtomicBool::new(true)),
    };
    let room = Room {
        edge: edge.clone(),
        quiz,
        edge_id,
        subscription: Some(subscription),
        handle: handle.clone(),
        members: HashMap::new(),
        replica: LeaderboardReplica::new(),
        replica_loaded: false,
        top_before_parts: None,
        top_json: None,
        empty_since: Some(Instant::now()),
        drift_sent_at: Instant::now(),
        drift_flush_at: None,
    };
    edge.tracker.spawn(room.run(events, control));
    Ok(handle)
}

struct Room {
    edge: Arc<Edge>,
    quiz: QuizId,
    /// This edge, as the quiz's owner knows it.
    edge_id: EdgeId,
    /// The subscription to the quiz's owner (local or remote); ended when the room closes.
    subscription: Option<Subscription>,
    handle: RoomHandle,
    members: HashMap<u64, Member>,
    replica: LeaderboardReplica,
    /// Whether the owner's whole board has arrived since the room (re)subscribed.
    replica_loaded: bool,
    /// The top phones saw, while a full board arrives in parts.
    top_before_parts: Option<Vec<TopEntry>>,
    /// The top N of a version, as JSON, rendered for the first phone that needs it.
    top_json: Option<(u64, String)>,
    empty_since: Option<Instant>,
    /// When players last got news that others made (the count, a rank moved by others'
    /// scores), and when they get what was held back since (`limits.drift_interval_ms`).
    drift_sent_at: Instant,
    drift_flush_at: Option<Instant>,
}

impl Room {
    async fn run(
        mut self,
        mut events: mpsc::Receiver<Event>,
        mut control: mpsc::Receiver<Control>,
    ) {
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let close_code = loop {
            let linger = self.empty_since.map(|t| t + ROOM_LINGER);
            tokio::select! {
                biased;
                _ = self.edge.shutdown.cancelled() => break close::GOING_AWAY,
                Some(c) = control.recv() => self.on_control(c),
                event = events.recv() => {
                    let moved = match event {
                        Some(e) => match self.on_event(&e) {
                            Ok(()) => false,
                            Err(close::GOING_AWAY) => true,
                            Err(code) => break code,
                        },
                        // The owner dropped this edge (too slow) or went away.
                        None => true,
                    };
                    if moved {
                        match self.resync().await {
                            Some(new_events) => events = new_events,
                            // Phones reconnect and resume on their own.
                            None => break close::GOING_AWAY,
                        }
                    }
                }
                _ = sleep_until(linger), if linger.is_some() => {
                    if self.members.is_empty() {
                        break close::NORMAL;
                    }
                }
                _ = sleep_until(self.drift_flush_at), if self.drift_flush_at.is_some() => {
                    self.leaderboard_to_all(false, true);
                }
                _ = sweep.tick() => {
                    // Connections that closed without a word (their unregister did not fit).
                    self.members.retain(|_, m| !m.conn.is_closed());
                }
            }
            if !self.handle.open.load(Ordering::Acquire) {
                break close::GOING_AWAY;
            }
            self.empty_since = match (self.members.is_empty(), self.empty_since) {
                (true, None) => Some(Instant::now()),
                (true, since) => since,
                (false, _) => None,
            };
        };
        self.handle.close();
        self.edge.drop_room(&self.quiz, &self.handle);
        for member in self.members.values() {
            member.conn.close(close_code);
        }
        if let Some(subscription) = self.subscription.take() {
            subscription.end().await;
        }
    }

    fn on_control(&mut self, control: Control) {
        match control {
            Control::Register { conn, session } => {
                let member = Member {
                    conn: conn.clone(),
                    role: session.role,
                    user: session.user,
                    nickname: session.nickname,
                    player: None,
                    pending: Some(Vec::new()),
                    after_seq: 0,
                    last_you: None,
                    last_players: 0,
                    last_answered: 0,
                    needs_top: false,
                };
                self.members.insert(conn.id, member);
            }
            Control::Live {
                conn,
                player,
                seq,
                leaderboard_v,
            } => self.go_live(conn, player, seq, leaderboard_v),
            Control::Unregister { conn } => {
                self.members.remove(&conn);
            }
            Control::Rejoined { conn, reply } => self.rejoined(conn, reply),
        }
    }

    /// The quiz moved, or its owner dropped this edge: subscribes to the owner the ring names
    /// now and joins every live phone there again from the last event it was sent. `None` when
    /// there is no phone to keep or no owner took the subscription in time; the room then
    /// closes and phones reconnect on their own.
    async fn resync(&mut self) -> Option<mpsc::Receiver<Event>> {
        if let Some(old) = self.subscription.take() {
            old.end().await;
        }
        // Phones still joining hear from their own join request (refused or served).
        let live: Vec<u64> = self
            .members
            .iter()
            .filter(|(_, m)| m.pending.is_none() && !m.conn.is_closed())
            .map(|(id, _)| *id)
            .collect();
        if live.is_empty() {
            return None;
        }
        let limits = &self.edge.config.limits;
        let deadline = Instant::now() + Duration::from_millis(limits.request_timeout_ms);
        let events = loop {
            let (events_tx, events) = mpsc::channel(limits.edge_queue_events);
            let subscribing = self
                .edge
                .owners
                .subscribe(&self.quiz, self.edge_id, events_tx);
            let refused = tokio::select! {
                _ = self.edge.shutdown.cancelled() => return None,
                subscribed = tokio::time::timeout_at(deadline.into(), subscribing) => match subscribed {
                    Ok(Ok(subscription)) => {
                        self.subscription = Some(subscription);
                        break events;
                    }
                    Ok(Err(rejection)) => rejection.message,
                    Err(_) => "no owner in time".into(),
                },
            };
            if Instant::now() + RESUBSCRIBE_PAUSE >= deadline {
                tracing::warn!(quiz = %self.quiz, %refused, "the moved quiz has no owner; phones reconnect");
                return None;
            }
            tokio::select! {
                _ = self.edge.shutdown.cancelled() => return None,
                () = tokio::time::sleep(RESUBSCRIBE_PAUSE) => {}
            }
        };
        // The new owner's board comes whole, with versions of its own.
        self.replica = LeaderboardReplica::new();
        self.replica_loaded = false;
        self.top_before_parts = None;
        self.top_json = None;
        tracing::info!(quiz = %self.quiz, phones = live.len(), "the quiz moved; resyncing phones in place");
        self.edge.metrics.room_resyncs.inc();
        let permits = Arc::new(Semaphore::new(REJOINS_IN_FLIGHT));
        for id in live {
            let Some(m) = self.members.get_mut(&id) else {
                continue;
            };
            m.pending = Some(Vec::new());
            let request = EdgeRequest::Join {
                user: m.user.clone(),
                role: m.role,
                nickname: m.nickname.clone(),
                last_seq: Some(m.after_seq),
            };
            let (edge, quiz) = (self.edge.clone(), self.quiz.clone());
            let (control, permits) = (self.handle.control.clone(), permits.clone());
            self.edge.tracker.spawn(async move {
                let Ok(_permit) = permits.acquire().await else {
                    return;
                };
                let reply = edge.owners.request(&quiz, request).await;
                let _ = control.send(Control::Rejoined { conn: id, reply }).await;
            });
        }
        Some(events)
    }

    /// A phone joined again at the quiz's new owner: its replay goes out, then what is held.
    fn rejoined(&mut self, conn: u64, reply: OwnerReply) {
        let Some(member) = self.members.get(&conn) else {
            // The phone left while it was being joined again: the new owner hears it left.
            if let OwnerReply::Joined { player, .. } = reply {
                let (owners, quiz) = (self.edge.owners.clone(), self.quiz.clone());
                self.edge.tracker.spawn(async move {
                    owners
                        .request(&quiz, EdgeRequest::Disconnect { player })
                        .await;
                });
            }
            return;
        };
        match reply {
            OwnerReply::Joined {
                player,
                seq,
                leaderboard_v,
                frames,
            } => {
                for frame in frames {
                    member.conn.push(frame.into());
                }
                self.go_live(conn, player, seq, leaderboard_v);
            }
            other => {
                // It reconnects and joins on its own, and hears why if it still cannot.
                tracing::debug!(?other, "joining a phone again at the new owner failed");
                member.conn.close(close::GOING_AWAY);
                self.members.remove(&conn);
            }
        }
    }

    fn go_live(
        &mut self,
        conn: u64,
        player: Option<PlayerNo>,
        seq: u64,
        leaderboard_v: Option<u64>,
    ) {
        let Some(member) = self.members.get_mut(&conn) else {
            return;
        };
        member.player = player;
        member.after_seq = seq;
        let held = member.pending.take().unwrap_or_default();
        // The welcome carried the leaderboard at `leaderboard_v`; a replay carried none.
        let current = leaderboard_v.is_some_and(|v| v >= self.replica.version());
        if current {
            member.last_you = player.and_then(|p| self.replica.standing(p));
            member.last_players = self.replica.players();
            member.last_answered = self.replica.answered();
        } else {
            member.needs_top = true;
        }
        for event in held {
            if let OwnerEvent::Frame {
                audience,
                seq,
                json,
            } = event.event()
            {
                self.deliver(conn, *audience, *seq, &Bytes::copy_from_slice(json));
            }
        }
        // Until the owner's whole board is in, the phone gets it with everyone else.
        if !current && self.replica_loaded {
            self.leaderboard_to(conn, false, true);
        }
    }

    /// Handles one event from the owner; `Err(code)` when the room must close its phones.
    fn on_event(&mut self, event: &Event) -> Result<(), u16> {
        for m in self.members.values_mut() {
            if let Some(held) = m.pending.as_mut() {
                if held.len() >= self.edge.config.limits.send_queue_frames {
                    m.conn.close(close::TOO_SLOW);
                } else {
                    held.push(event.clone());
                }
            }
        }
        match event.event() {
            OwnerEvent::Frame {
                audience,
                seq,
                json,
            } => {
                let bytes = Bytes::copy_from_slice(json);
                let ids: Vec<u64> = self.members.keys().copied().collect();
                for id in ids {
                    self.deliver(id, *audience, *seq, &bytes);
                }
            }
            OwnerEvent::Leaderboard(update) => {
                let started = Instant::now();
                // A board in parts is compared with what phones saw before its first part.
                let before = self
                    .top_before_parts
                    .take()
                    .unwrap_or_else(|| self.replica.top().to_vec());
                if let Err(gap) = self.replica.apply(update) {
                    tracing::error!(%gap, "leaderboard replica out of step; resyncing phones");
                    return Err(close::INTERNAL);
                }
                if update.more {
                    // Phones see the board once every part of it is in.
                    self.top_before_parts = Some(before);
                    return Ok(());
                }
                self.replica_loaded = true;
                let top_changed = self.replica.top() != before.as_slice();
                let interval = Duration::from_millis(self.edge.config.limits.drift_interval_ms);
                let drift_due = self.drift_sent_at.elapsed() >= interval;
                self.leaderboard_to_all(top_changed, drift_due);
                if !drift_due && self.drift_flush_at.is_none() {
                    self.drift_flush_at = Some(self.drift_sent_at + interval);
                }
                self.edge
                    .metrics
                    .leaderboard_fanout_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
            OwnerEvent::Kicked { player } => {
                for m in self.members.values() {
                    if m.player == Some(*player) {
                        m.conn.close(close::KICKED);
                    }
                }
            }
            // An ended quiz that was unloaded is over for good; otherwise phones reconnect.
            OwnerEvent::Gone { ended: true } => return Err(close::NORMAL),
            OwnerEvent::Gone { ended: false } => return Err(close::GOING_AWAY),
        }
        self.members.retain(|_, m| !m.conn.is_closed());
        Ok(())
    }

    /// Sends a rendered frame to one live member, if it is for them and new to them.
    fn deliver(&mut self, id: u64, audience: Audience, seq: Option<u64>, bytes: &Bytes) {
        let Some(m) = self.members.get_mut(&id) else {
            return;
        };
        if m.pending.is_some() {
            return;
        }
        let for_them = match audience {
            Audience::Everyone => true,
            Audience::Hosts => m.role == Role::Host,
            Audience::Player(p) => m.player == Some(p),
        };
        let new = seq.is_none_or(|s| s > m.after_seq);
        if for_them && new {
            m.conn.push(bytes.clone());
            if let Some(s) = seq {
                m.after_seq = s;
            }
        }
    }

    /// Sends every live member their leaderboard frame if anything they see changed; news
    /// that others made (the players count, a rank moved while the score stayed) waits for
    /// `drift_due` unless the frame goes out anyway (hosts get the count at once).
    fn leaderboard_to_all(&mut self, top_changed: bool, drift_due: bool) {
        let ids: Vec<u64> = self.members.keys().copied().collect();
        for id in ids {
            self.leaderboard_to(id, top_changed, drift_due);
        }
        if drift_due {
            self.drift_sent_at = Instant::now();
            self.drift_flush_at = None;
        }
    }

    /// Sends one live member their leaderboard frame if anything they see changed.
    fn leaderboard_to(&mut self, id: u64, top_changed: bool, drift_due: bool) {
        let replica = &self.replica;
        let Some(m) = self.members.get_mut(&id) else {
            return;
        };
        if m.pending.is_some() {
            return;
        }
        let you = m.player.and_then(|p| replica.standing(p));
        let send_top = top_changed || m.needs_top;
        let host = m.role == Role::Host;
        let answered = replica.answered();
        let players = replica.players();
        let own_score = you.is_some_and(|y| m.last_you.is_none_or(|l| l.score != y.score));
        let news = send_top || own_score || (host && answered != m.last_answered);
        let drift = you != m.last_you || players != m.last_players;
        if !(news || (drift && (drift_due || host))) {
            return;
        }
        let send_you = you.is_some() && you != m.last_you;
        let top = send_top.then(|| {
            // The top's JSON is the same for every phone of this version: rendered once.
            let version = replica.version();
            if self.top_json.as_ref().is_none_or(|(v, _)| *v != version) {
                let json = serde_json::to_string(replica.top()).unwrap_or_else(|_| "[]".into());
                self.top_json = Some((version, json));
            }
            self.top_json.as_ref().map_or("[]", |(_, j)| j.as_str())
        });
        let frame = render_leaderboard(
            replica.version(),
            players,
            top,
            if send_you { you } else { None },
            host.then_some(answered),
        );
        m.last_you = you;
        m.last_players = players;
        m.last_answered = answered;
        m.needs_top = false;
        m.conn.push(frame);
    }
}

/// Renders a `leaderboard` frame by hand: this runs once per phone per version, so it avoids
/// building the frame struct (and cloning the top N) each time; `top` is the top N already
/// rendered as JSON (once per version). A test pins it to serde's output for the same frame.
fn render_leaderboard(
    v: u64,
    players: u32,
    top: Option<&str>,
    you: Option<RankScore>,
    answered: Option<u32>,
) -> Bytes {
    let mut s = String::with_capacity(64 + top.map_or(0, str::len));
    let _ = write!(s, r#"{{"type":"leaderboard","v":{v},"players":{players}"#);
    if let Some(top) = top {
        s.push_str(r#","top":"#);
        s.push_str(top);
    }
    if let Some(you) = you {
        let _ = write!(s, r#","you":{{"rank":{},"score":{}}}"#, you.rank, you.score);
    }
    if let Some(a) = answered {
        let _ = write!(s, r#","answered":{a}"#);
    }
    s.push('}');
    Bytes::from(s)
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiz_protocol::client::{LeaderboardFrame, ServerMessage, encode_server};

    #[test]
    fn hand_rendered_leaderboard_matches_serde() {
        let top = vec![
            TopEntry("Ana \"the\" Great".into(), 1200),
            TopEntry("Bo".into(), 900),
        ];
        let cases = [
            (
                Some(top.as_slice()),
                Some(RankScore {
                    rank: 2,
                    score: 900,
                }),
                None,
            ),
            (None, Some(RankScore { rank: 7, score: 0 }), None),
            (Some(top.as_slice()), None, Some(3)),
            (None, None, None),
        ];
        for (t, you, answered) in cases {
            let json = t.map(|t| serde_json::to_string(t).unwrap());
            let ours = render_leaderboard(9, 12, json.as_deref(), you, answered);
            let theirs = encode_server(&ServerMessage::Leaderboard(LeaderboardFrame {
                v: 9,
                players: 12,
                top: t.map(<[TopEntry]>::to_vec),
                you,
                answered,
            }));
            assert_eq!(
                std::str::from_utf8(&ours).unwrap(),
                std::str::from_utf8(&theirs).unwrap()
            );
        }
    }
}
