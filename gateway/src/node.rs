//! The node's shared state on its (single) thread: rooms and connections, and
//! what happens for each session event.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use herald_protocol::wire::{self, BodyT};
use herald_protocol::{
    Accept, ErrorCode, Position, PresenceRef, ResumeRoom, SendOutcome, ServerEvent, ServerSession, SubscribedRef,
    with_encoder,
};
use tokio::sync::Notify;

use crate::config::NodeConfig;
use crate::room::{Incoming, Member, Room, Stored};

/// Presence snapshots list at most this many users (with the full count).
const PRESENCE_LIST_MAX: usize = 100;

/// One connection as the node sees it.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) session: ServerSession,
    pub(crate) user: Option<String>,
    /// Wakes the connection task when frames were queued for it.
    pub(crate) wake: Rc<Notify>,
}

pub(crate) type ConnRef = Rc<RefCell<Conn>>;

#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) config: NodeConfig,
    rooms: HashMap<String, Room>,
    pub(crate) conns: HashMap<u64, ConnRef>,
    next_conn: u64,
    epoch_base: u64,
    rooms_created: u64,
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Node {
    pub(crate) fn new(config: NodeConfig) -> Self {
        Self {
            config,
            rooms: HashMap::new(),
            conns: HashMap::new(),
            next_conn: 1,
            // Epochs must differ across restarts of this in-memory node, so a
            // client resuming after a restart is told recovered = false.
            epoch_base: unix_ms() << 20,
            rooms_created: 0,
        }
    }

    pub(crate) fn add_conn(&mut self, now: Instant) -> (u64, ConnRef) {
        let id = self.next_conn;
        self.next_conn += 1;
        let conn = Rc::new(RefCell::new(Conn {
            session: ServerSession::new(self.config.session.clone(), now),
            user: None,
            wake: Rc::new(Notify::new()),
        }));
        self.conns.insert(id, conn.clone());
        (id, conn)
    }

    /// Forgets a closed connection: leaves its rooms (presence leave events).
    pub(crate) fn remove_conn(&mut self, id: u64) {
        let Some(conn) = self.conns.remove(&id) else { return };
        let (rooms, user) = {
            let c = conn.borrow();
            (c.session.rooms().map(str::to_owned).collect::<Vec<_>>(), c.user.clone())
        };
        for room in rooms {
            self.leave(id, &room, user.as_deref());
        }
    }

    pub(crate) fn handle(&mut self, now: Instant, id: u64, event: ServerEvent) {
        match event {
            ServerEvent::Connect { token, resume, .. } => self.on_connect(now, id, &token, resume),
            ServerEvent::Subscribe {
                request_id,
                room,
                history,
                recover,
                presence,
            } => self.subscribe(id, request_id, &room, history, recover, presence),
            ServerEvent::Unsubscribed { room } => {
                let user = self.user(id);
                self.leave(id, &room, user.as_deref());
            }
            ServerEvent::Publish {
                request_id,
                room,
                payload,
                content_type,
                volatile,
                idempotency_key,
            } => self.publish(id, request_id, &room, payload, content_type, volatile, idempotency_key),
            ServerEvent::Typing { room, active } => self.typing(id, &room, active),
            ServerEvent::Request { request_id, body } => self.request(id, request_id, body),
            ServerEvent::Closed { .. } => {}
        }
    }

    fn user(&self, id: u64) -> Option<String> {
        self.conns.get(&id).and_then(|c| c.borrow().user.clone())
    }

    fn with_session(&self, id: u64, f: impl FnOnce(&mut ServerSession)) {
        if let Some(c) = self.conns.get(&id) {
            let mut c = c.borrow_mut();
            f(&mut c.session);
            c.wake.notify_one();
        }
    }

    fn on_connect(&mut self, now: Instant, id: u64, token: &str, resume: Vec<ResumeRoom>) {
        // Development authentication: the token is the user id. Signed tokens
        // (JWT) replace this when the gateway gains auth; the node refuses
        // non-loopback binds until then.
        let valid = !token.is_empty() && herald_protocol::valid_room_name(token, 64);
        if !valid {
            self.with_session(id, |s| {
                s.close(
                    ErrorCode::AuthFailed,
                    "dev token must be a user id of 1-64 [A-Za-z0-9:_-.@/]",
                )
            });
            return;
        }
        let accept = Accept {
            session_id: format!("{}-{id}", self.config.node_id),
            node_id: self.config.node_id.clone(),
            user_id: token.to_owned(),
            server_time_ms: unix_ms(),
        };
        if let Some(c) = self.conns.get(&id) {
            c.borrow_mut().user = Some(token.to_owned());
        }
        self.with_session(id, |s| s.accept(now, &accept));
        for r in resume {
            let recover = (r.position.epoch != 0).then_some(r.position);
            if !herald_protocol::valid_room_name(&r.room, self.config.session.limits.max_room_name_bytes) {
                self.with_session(id, |s| {
                    s.resume_failed(&r.room, ErrorCode::InvalidRoomName, "invalid room name")
                });
                continue;
            }
            self.subscribe(id, 0, &r.room, 0, recover, r.presence);
        }
    }

    fn room_mut(&mut self, name: &str) -> Option<&mut Room> {
        if !self.rooms.contains_key(name) {
            if self.rooms.len() >= self.config.max_rooms {
                return None;
            }
            self.rooms_created += 1;
            let epoch = self.epoch_base + self.rooms_created;
            self.rooms.insert(
                name.to_owned(),
                Room::new(epoch, self.config.history_per_room, self.config.dedup_per_room),
            );
        }
        self.rooms.get_mut(name)
    }

    fn subscribe(
        &mut self,
        id: u64,
        request_id: u32,
        name: &str,
        history: u32,
        recover: Option<Position>,
        presence: bool,
    ) {
        let Some(user) = self.user(id) else { return };
        let max_subscribers = self.config.max_subscribers_per_room;
        let replay_budget = self.replay_budget();
        let Some(conn) = self.conns.get(&id).cloned() else {
            return;
        };
        let Some(room) = self.room_mut(name) else {
            let mut c = conn.borrow_mut();
            fail_subscribe(
                &mut c.session,
                request_id,
                name,
                ErrorCode::Unavailable,
                "node room limit reached",
            );
            return;
        };
        let rejoin = room.members.contains_key(&id);
        if !rejoin && room.members.len() >= max_subscribers {
            let mut c = conn.borrow_mut();
            fail_subscribe(&mut c.session, request_id, name, ErrorCode::RoomFull, "room is full");
            return;
        }
        let newly_present = if rejoin { false } else { room.add_user(&user) };
        room.members.insert(id, Member { presence });
        let epoch = room.epoch;
        let position = room.position();
        let users: Vec<String> = if presence {
            room.users.keys().take(PRESENCE_LIST_MAX).cloned().collect()
        } else {
            Vec::new()
        };
        let count = room.users.len() as u64;
        let join = room.join(recover, history);
        // A replay larger than the byte budget would trip the connection's
        // outbound limit: send the newest part, and if that leaves a gap in a
        // recovery, say so (recovered = false) so the client refetches.
        let (replay, trimmed) = fit_bytes(join.history, replay_budget, true);
        let recovered = join.recovered && !trimmed;
        let refs: Vec<_> = replay.iter().map(|m| m.as_ref(name, epoch)).collect();
        let user_refs: Vec<&str> = users.iter().map(String::as_str).collect();
        {
            let mut c = conn.borrow_mut();
            c.session.subscribed(
                request_id,
                &SubscribedRef {
                    room: name,
                    epoch,
                    offset: position.offset,
                    recovered,
                    history: &refs,
                    presence: presence.then_some(PresenceRef {
                        users: &user_refs,
                        count,
                    }),
                },
            );
            c.wake.notify_one();
        }
        if newly_present {
            let frame = with_encoder(|e| {
                e.body(
                    0,
                    BodyT::PresenceJoin(Box::new({
                        let mut t = wire::PresenceJoinT::default();
                        t.room = name.to_owned();
                        t.user = user.clone();
                        t
                    })),
                )
            });
            self.broadcast_presence(name, Some(id), frame);
        }
    }

    fn leave(&mut self, id: u64, name: &str, user: Option<&str>) {
        let Some(room) = self.rooms.get_mut(name) else { return };
        if room.members.remove(&id).is_none() {
            return;
        }
        if let Some(user) = user
            && room.remove_user(user)
        {
            let frame = with_encoder(|e| {
                e.body(
                    0,
                    BodyT::PresenceLeave(Box::new({
                        let mut t = wire::PresenceLeaveT::default();
                        t.room = name.to_owned();
                        t.user = user.to_owned();
                        t
                    })),
                )
            });
            self.broadcast_presence(name, None, frame);
        }
    }

    fn broadcast_presence(&self, name: &str, except: Option<u64>, frame: Bytes) {
        let Some(room) = self.rooms.get(name) else { return };
        let targets = room
            .members
            .iter()
            .filter(|(id, m)| m.presence && Some(**id) != except)
            .map(|(id, _)| *id);
        self.fan_out(targets, &frame, false);
    }

    /// Hands one encoded frame to every target connection (a `Bytes` clone
    /// each) and wakes their tasks.
    fn fan_out(&self, targets: impl Iterator<Item = u64>, frame: &Bytes, volatile: bool) {
        for id in targets {
            if let Some(c) = self.conns.get(&id) {
                let mut c = c.borrow_mut();
                let outcome = c.session.send(frame.clone(), volatile);
                if outcome != SendOutcome::DroppedVolatile {
                    c.wake.notify_one();
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn publish(
        &mut self,
        id: u64,
        request_id: u32,
        name: &str,
        payload: Bytes,
        content_type: Option<String>,
        volatile: bool,
        idempotency_key: Option<String>,
    ) {
        let Some(user) = self.user(id) else { return };
        let Some(room) = self.room_mut(name) else {
            self.with_session(id, |s| {
                s.reply_error(request_id, ErrorCode::Unavailable, "node room limit reached")
            });
            return;
        };
        let now_ms = unix_ms();
        let (frame, position) = if volatile {
            let frame = with_encoder(|e| {
                e.message(&herald_protocol::MessageRef {
                    room: name,
                    epoch: room.epoch,
                    offset: 0,
                    publisher: &user,
                    timestamp_ms: now_ms,
                    payload: &payload,
                    content_type: content_type.as_deref(),
                    volatile: true,
                })
            });
            (
                frame,
                Position {
                    epoch: room.epoch,
                    offset: 0,
                },
            )
        } else {
            if let Some(key) = idempotency_key.as_deref()
                && let Some(pos) = room.duplicate(&user, key)
            {
                self.with_session(id, |s| s.ack(request_id, pos));
                return;
            }
            let incoming = Incoming {
                publisher: &user,
                timestamp_ms: now_ms,
                payload,
                content_type,
                idempotency_key: idempotency_key.as_deref(),
            };
            let stored = room.append(name, incoming, |m| with_encoder(|e| e.message(m)));
            (stored.frame.clone(), room.position())
        };
        let members: Vec<u64> = room.members.keys().copied().collect();
        self.with_session(id, |s| s.ack(request_id, position));
        self.fan_out(members.into_iter(), &frame, volatile);
    }

    fn typing(&self, id: u64, name: &str, active: bool) {
        let (Some(user), Some(room)) = (self.user(id), self.rooms.get(name)) else {
            return;
        };
        let frame = with_encoder(|e| {
            e.body(
                0,
                BodyT::TypingEvent(Box::new({
                    let mut t = wire::TypingEventT::default();
                    t.room = name.to_owned();
                    t.user = user;
                    t.active = active;
                    t
                })),
            )
        });
        self.fan_out(room.members.keys().copied().filter(|m| *m != id), &frame, true);
    }

    fn request(&mut self, id: u64, request_id: u32, body: BodyT) {
        match body {
            BodyT::HistoryQuery(q) => {
                let budget = self.replay_budget();
                let limit = (q.limit as usize).clamp(1, self.config.history_per_room.max(1));
                let Some(room) = self.rooms.get_mut(&q.room) else {
                    self.with_session(id, |s| s.reply_error(request_id, ErrorCode::NotFound, "no such room"));
                    return;
                };
                let epoch = room.epoch;
                let (page, more) = room.range(q.before, q.after, limit);
                // Forward paging (after) keeps the oldest; otherwise the newest.
                let (page, trimmed) = fit_bytes(page, budget, q.after == 0);
                let has_more = more || trimmed;
                let messages = page
                    .iter()
                    .map(|m| {
                        let mut t = wire::MessageT::default();
                        t.room = q.room.clone();
                        t.epoch = epoch;
                        t.offset = m.offset;
                        t.publisher = Some(m.publisher.clone());
                        t.timestamp_ms = m.timestamp_ms;
                        t.payload = Some(m.payload.to_vec());
                        t.content_type = m.content_type.clone();
                        t
                    })
                    .collect();
                let mut page = wire::HistoryPageT::default();
                page.room = q.room.clone();
                page.epoch = epoch;
                page.messages = Some(messages);
                page.has_more = has_more;
                let frame = with_encoder(|e| e.body(request_id, BodyT::HistoryPage(Box::new(page))));
                self.with_session(id, |s| {
                    s.send(frame, false);
                });
            }
            BodyT::PresenceQuery(q) => {
                let (users, count) = self.rooms.get(&q.room).map_or((Vec::new(), 0), |r| {
                    (
                        r.users.keys().take(PRESENCE_LIST_MAX).cloned().collect::<Vec<_>>(),
                        r.users.len() as u64,
                    )
                });
                let mut snapshot = wire::PresenceSnapshotT::default();
                snapshot.room = q.room.clone();
                snapshot.truncated = (users.len() as u64) < count;
                snapshot.users = Some(users);
                snapshot.count = count;
                let frame = with_encoder(|e| e.body(request_id, BodyT::PresenceSnapshot(Box::new(snapshot))));
                self.with_session(id, |s| {
                    s.send(frame, false);
                });
            }
            other => {
                let what = wire::Body::variant_name(other.body_type()).unwrap_or("request");
                let message = format!("{what} is not available on this node yet");
                self.with_session(id, |s| s.reply_error(request_id, ErrorCode::Unavailable, &message));
            }
        }
    }

    /// Sends GoAway to every connection (shutdown).
    pub(crate) fn go_away_all(&self, reason: &str, reconnect_after: std::time::Duration) {
        for c in self.conns.values() {
            let mut c = c.borrow_mut();
            c.session.go_away(ErrorCode::ServerShutdown, reason, reconnect_after);
            c.wake.notify_one();
        }
    }
}

impl Node {
    /// Bytes of history one answer may carry: half the outbound limit, so a
    /// replay never closes its own connection as a slow consumer.
    fn replay_budget(&self) -> usize {
        self.config.session.limits.max_outbound_bytes / 2
    }
}

/// The longest run of `messages` (from the newest end if `keep_newest`, else
/// from the oldest) whose encoded size fits `budget`; and whether any message
/// was left out.
fn fit_bytes(messages: &[Stored], budget: usize, keep_newest: bool) -> (&[Stored], bool) {
    let mut used = 0;
    let mut fits = |m: &Stored| {
        used += m.frame.len();
        used <= budget
    };
    let n = if keep_newest {
        messages.iter().rev().take_while(|m| fits(m)).count()
    } else {
        messages.iter().take_while(|m| fits(m)).count()
    };
    let kept = if keep_newest {
        &messages[messages.len() - n..]
    } else {
        &messages[..n]
    };
    (kept, n < messages.len())
}

fn fail_subscribe(session: &mut ServerSession, request_id: u32, room: &str, code: ErrorCode, message: &str) {
    if request_id == 0 {
        session.resume_failed(room, code, message);
    } else {
        session.reply_error(request_id, code, message);
    }
}
