//! Test support: a client and a server session connected by a simulated link
//! on virtual time (after quinn-proto's `tests/util.rs`), a tiny gateway-like
//! application answering the server's events, and frame builders.
//!
//! Nothing here reads a clock or sleeps: `Pair::now` is the only time there
//! is, and it moves only when a test (or `drive`/`advance`) moves it.

// Each test file uses a different part of this module.
#![allow(dead_code)]

/// Builds an object-API value (`wire::MessageT`, ...) field by field. The
/// generated types are `#[non_exhaustive]`, so other crates cannot use struct
/// expressions; this starts from `Default` and assigns the given fields.
/// `obj!(wire::PingT { nonce })` and `obj!(wire::PingT { nonce: 1 })` both work.
macro_rules! obj {
    (@value $field:ident) => { $field };
    (@value $field:ident $value:expr) => { $value };
    ($ty:path { $($field:ident $(: $value:expr)?),* $(,)? }) => {{
        #[allow(unused_mut, clippy::field_reassign_with_default)]
        let mut v = <$ty>::default();
        $( v.$field = obj!(@value $field $($value)?); )*
        v
    }};
}

pub(crate) mod frames;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald_protocol::owner::{
    Audience, Input, LogDone, LogRequest, Member, NamespaceConfig, Output, OwnerConfig, ReadPage, RoomOwner, Stored,
};
use herald_protocol::wire::{Body, ErrorCode};
use herald_protocol::{
    Accept, ClientConfig, ClientEvent, ClientSession, MessageRef, Position, ServerConfig, ServerEvent, ServerSession,
    SubscribedRef, with_encoder,
};

/// Iterations after which `drive`/`advance` give up: a session that keeps
/// producing work forever is a bug.
const LIVELOCK: usize = 100_000;

/// Which way a frame travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    ToServer,
    ToClient,
}

#[derive(Debug)]
struct InFlight {
    arrival: Instant,
    dir: Dir,
    frame: Bytes,
}

/// A client and a server session joined by a link with a fixed latency.
#[derive(Debug)]
pub(crate) struct Pair {
    pub(crate) client: ClientSession,
    pub(crate) server: ServerSession,
    pub(crate) app: App,
    pub(crate) now: Instant,
    pub(crate) latency: Duration,
    pub(crate) server_config: ServerConfig,
    /// Frames from the client vanish (the client looks silent to the server).
    pub(crate) lose_client_frames: bool,
    /// Frames from the server vanish.
    pub(crate) lose_server_frames: bool,
    /// Every frame delivered, in order: direction and body kind.
    pub(crate) trace: Vec<(Instant, Dir, Body)>,
    in_flight: VecDeque<InFlight>,
    link_up: bool,
    client_events: Vec<ClientEvent>,
}

impl Default for Pair {
    fn default() -> Self {
        Self::new(ClientConfig::default(), ServerConfig::default())
    }
}

impl Pair {
    /// A pair whose client authenticates as `alice`, with 10 ms of latency.
    /// The link is down until [`connect`](Self::connect).
    pub(crate) fn new(client: ClientConfig, server: ServerConfig) -> Self {
        let now = Instant::now();
        let client = ClientConfig {
            token: if client.token.is_empty() {
                "user:alice".into()
            } else {
                client.token
            },
            ..client
        };
        Self {
            client: ClientSession::new(client, now),
            server: ServerSession::new(server.clone(), now),
            app: App::default(),
            now,
            latency: Duration::from_millis(10),
            server_config: server,
            lose_client_frames: false,
            lose_server_frames: false,
            trace: Vec::new(),
            in_flight: VecDeque::new(),
            link_up: false,
            client_events: Vec::new(),
        }
    }

    /// Opens a new transport: a fresh server session, then
    /// `client.connect(now)`. Does not drive.
    pub(crate) fn open_link(&mut self) {
        self.server = ServerSession::new(self.server_config.clone(), self.now);
        self.app.new_link();
        self.in_flight.clear();
        self.link_up = true;
        self.client.connect(self.now);
    }

    /// Opens a link and drives the handshake to completion.
    pub(crate) fn connect(&mut self) {
        self.open_link();
        self.drive();
    }

    /// The transport breaks: frames in flight are lost, the client is told,
    /// and the server session is gone (the gateway forgets it).
    pub(crate) fn drop_link(&mut self) {
        self.in_flight.clear();
        self.close_link();
        self.client.handle_disconnect(ErrorCode::Unavailable, "link dropped");
        self.collect_client_events();
    }

    /// The transport is gone: the gateway leaves the connection's rooms.
    fn close_link(&mut self) {
        if self.link_up {
            self.app.link_gone(self.now);
        }
        self.link_up = false;
    }

    /// Whether the transport is up.
    pub(crate) fn link_up(&self) -> bool {
        self.link_up
    }

    /// Client events so far (drained).
    pub(crate) fn client_events(&mut self) -> Vec<ClientEvent> {
        self.collect_client_events();
        std::mem::take(&mut self.client_events)
    }

    /// Frames of this kind delivered in this direction so far.
    pub(crate) fn delivered(&self, dir: Dir, body: Body) -> usize {
        self.trace.iter().filter(|(_, d, b)| *d == dir && *b == body).count()
    }

    /// One round: fire due timers, let the application answer server events,
    /// put every queued frame on the wire (arriving at `now + latency`), and
    /// deliver every frame that has arrived by `now`. Returns whether
    /// anything happened.
    pub(crate) fn step(&mut self) -> bool {
        let mut progress = false;
        let now = self.now;

        if let Some(t) = self.client.poll_timeout()
            && t <= now
        {
            self.client.handle_timeout(now);
            assert!(
                self.client.poll_timeout().is_none_or(|t| t > now),
                "client timer still due after handle_timeout: it would spin"
            );
            progress = true;
        }
        if self.link_up
            && let Some(t) = self.server.poll_timeout()
            && t <= now
        {
            self.server.handle_timeout(now);
            assert!(
                self.server.poll_timeout().is_none_or(|t| t > now),
                "server timer still due after handle_timeout: it would spin"
            );
            progress = true;
        }

        if self.link_up {
            while let Some(ev) = self.server.poll_event() {
                self.app.handle(&mut self.server, now, ev);
                progress = true;
            }
        }

        while let Some(frame) = self.client.poll_transmit() {
            progress = true;
            if self.link_up && !self.lose_client_frames {
                self.in_flight.push_back(InFlight {
                    arrival: now + self.latency,
                    dir: Dir::ToServer,
                    frame,
                });
            }
        }
        if self.link_up {
            while let Some(frame) = self.server.poll_transmit() {
                progress = true;
                if !self.lose_server_frames {
                    self.in_flight.push_back(InFlight {
                        arrival: now + self.latency,
                        dir: Dir::ToClient,
                        frame,
                    });
                }
            }
        }

        while self.in_flight.front().is_some_and(|f| f.arrival <= now) {
            let Some(f) = self.in_flight.pop_front() else { break };
            progress = true;
            let body = herald_protocol::decode(&f.frame, &herald_protocol::DecodeLimits::SERVER_TO_CLIENT)
                .map_or(Body::NONE, |d| d.body_type());
            self.trace.push((now, f.dir, body));
            match f.dir {
                // Errors are also visible as a close of the session; tests
                // look at that.
                Dir::ToServer => drop(self.server.handle_frame(now, f.frame)),
                Dir::ToClient => drop(self.client.handle_frame(now, f.frame)),
            }
        }

        progress |= self.collect_client_events();

        // A closed server session whose last frame has been delivered: the
        // gateway closes the transport.
        if self.link_up
            && self.server.is_closed()
            && self.server.outbound_bytes() == 0
            && !self.in_flight.iter().any(|f| f.dir == Dir::ToClient)
        {
            let (code, reason) = self
                .server
                .close_reason()
                .map(|(c, r)| (c, r.to_owned()))
                .unwrap_or((ErrorCode::InternalError, String::new()));
            self.close_link();
            self.in_flight.clear();
            self.client.handle_disconnect(code, &reason);
            self.collect_client_events();
            progress = true;
        }
        progress
    }

    /// Steps until nothing is left to do now or in flight. Time moves
    /// forward only to let frames in flight arrive (and timers that fall due
    /// before them fire on time); idle timers are left alone.
    pub(crate) fn drive(&mut self) {
        for _ in 0..LIVELOCK {
            if self.step() {
                continue;
            }
            let Some(arrival) = self.in_flight.front().map(|f| f.arrival) else {
                return;
            };
            let next = self.next_timer().map_or(arrival, |t| t.min(arrival));
            self.now = self.now.max(next);
        }
        panic!("drive() did not settle after {LIVELOCK} steps");
    }

    /// Moves time forward by `d`, firing every timer and delivering every
    /// frame that falls due on the way, each at its own instant.
    pub(crate) fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        for _ in 0..LIVELOCK {
            while self.step() {}
            let next = [self.in_flight.front().map(|f| f.arrival), self.next_timer()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= target => self.now = self.now.max(t),
                _ => {
                    self.now = target;
                    while self.step() {}
                    return;
                }
            }
        }
        panic!("advance() did not settle after {LIVELOCK} steps");
    }

    fn next_timer(&self) -> Option<Instant> {
        let server = if self.link_up { self.server.poll_timeout() } else { None };
        [self.client.poll_timeout(), server].into_iter().flatten().min()
    }

    fn collect_client_events(&mut self) -> bool {
        let mut any = false;
        while let Some(ev) = self.client.poll_event() {
            any = true;
            if matches!(ev, ClientEvent::Disconnected { .. }) && self.link_up {
                // The client gave up on this transport and closes it.
                self.close_link();
                self.in_flight.clear();
            }
            self.client_events.push(ev);
        }
        any
    }

    /// A message published by someone else (another connection or the
    /// server API): stored, and delivered to this client if it is connected
    /// and subscribed.
    pub(crate) fn publish_elsewhere(&mut self, room: &str, payload: &[u8]) -> Position {
        let now_ms = self.app.wall(self.now);
        self.app.owner.handle(
            now_ms,
            Input::Publish {
                origin: 0,
                room: Arc::from(room),
                user: Arc::from("bob"),
                payload: Bytes::copy_from_slice(payload),
                content_type: None,
                volatile: false,
                idempotency_key: None,
                from_server: true,
                received: self.now,
            },
        );
        let server = self.link_up.then_some(&mut self.server);
        self.app.pump(server, self.now);
        self.app
            .owner
            .position(room)
            .expect("the room exists once published to")
    }

    /// Completes the appends the store held (`app.hold_publishes`).
    pub(crate) fn release_publishes(&mut self) {
        let server = self.link_up.then_some(&mut self.server);
        self.app.release_publishes(server, self.now);
    }
}

/// One room's log as the owner holds it: the epoch, the offset of the
/// oldest message kept, and the kept messages.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RoomLog {
    pub(crate) epoch: u64,
    /// Offset of `messages[0]` (or the next offset when empty).
    pub(crate) first: u64,
    pub(crate) messages: Vec<Stored>,
}

impl RoomLog {
    /// The latest offset (0 when nothing was ever published).
    pub(crate) fn latest(&self) -> u64 {
        self.first + self.messages.len() as u64 - 1
    }
}

/// The wall clock the owner sees: a fixed start plus the pair's virtual time.
const WALL_START_MS: u64 = 1_700_000_000_000;

/// The owner settings of the miniature gateway: epoch 1, one shard, every
/// room with the general namespace options.
pub(crate) fn owner_config(epoch: u64) -> OwnerConfig {
    OwnerConfig {
        epoch,
        durable_store: true,
        cluster: false,
        shards: 1,
        max_rooms: 10_000,
        dedup_per_room: 10_000,
        max_pending_per_room: 10_000,
        replay_budget: 512 * 1024,
        default_namespace: NamespaceConfig::general(),
        namespaces: Vec::new(),
    }
}

/// The connection of the current link, as the owner knows it.
fn member(link: u64) -> Member {
    Member { shard: 0, conn: link }
}

/// A gateway in miniature around the real room owner: authenticates
/// `user:<id>` tokens, hands subscribes, publishes and unsubscribes to the
/// owner, answers with what it says, and plays an in-memory log store that
/// completes every append at once (unless `hold_publishes`).
#[derive(Debug)]
pub(crate) struct App {
    pub(crate) owner: RoomOwner<u32>,
    /// Every server event seen, in order.
    pub(crate) events: Vec<ServerEvent>,
    /// Leave `Connect` unanswered (authentication stalls).
    pub(crate) hold_connects: bool,
    /// Leave appends unanswered (storage stalls): publishes wait for their
    /// acknowledgement until released.
    pub(crate) hold_publishes: bool,
    held: Vec<LogRequest>,
    /// Rooms the current link joined (the owner counts it there).
    joined: Vec<Arc<str>>,
    user_id: String,
    sessions: u32,
    /// Increments with every link, so each connection is a new member.
    link: u64,
    start: Option<Instant>,
}

impl Default for App {
    fn default() -> Self {
        Self {
            owner: RoomOwner::new(owner_config(1)),
            events: Vec::new(),
            hold_connects: false,
            hold_publishes: false,
            held: Vec::new(),
            joined: Vec::new(),
            user_id: String::new(),
            sessions: 0,
            link: 0,
            start: None,
        }
    }
}

impl App {
    /// A room's log (panics if the owner holds no such room).
    pub(crate) fn log(&mut self, room: &str) -> RoomLog {
        let position = self.owner.position(room).unwrap_or_else(|| panic!("no room {room}"));
        let messages = self.owner.window(room);
        let first = messages.first().map_or(position.offset + 1, |m| m.offset);
        RoomLog {
            epoch: position.epoch,
            first,
            messages,
        }
    }

    /// The node restarts without durable history: a new owner, a new epoch.
    pub(crate) fn restart_owner(&mut self, config: OwnerConfig) {
        self.owner = RoomOwner::new(config);
        self.held.clear();
    }

    /// Publish events seen by the server, as (room, payload, idempotency key).
    pub(crate) fn publishes(&self) -> Vec<(String, Bytes, Option<String>)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                ServerEvent::Publish {
                    room,
                    payload,
                    idempotency_key,
                    ..
                } => Some((room.clone(), payload.clone(), idempotency_key.clone())),
                _ => None,
            })
            .collect()
    }

    /// Completes the appends held while `hold_publishes` was set.
    pub(crate) fn release_publishes(&mut self, server: Option<&mut ServerSession>, now: Instant) {
        self.hold_publishes = false;
        let now_ms = self.wall(now);
        for request in std::mem::take(&mut self.held) {
            self.complete(request, now_ms);
        }
        self.pump(server, now);
    }

    fn wall(&mut self, now: Instant) -> u64 {
        let start = *self.start.get_or_insert(now);
        WALL_START_MS + now.saturating_duration_since(start).as_millis() as u64
    }

    fn complete(&mut self, request: LogRequest, now_ms: u64) {
        let done = match request {
            LogRequest::Append { ticket, room, .. } => LogDone::Appended {
                ticket,
                room,
                result: Ok(()),
            },
            // The window is all the history there is.
            LogRequest::Read { ticket, room, .. } => LogDone::Read {
                ticket,
                room,
                result: Ok(ReadPage::default()),
            },
            // A store that never held a room.
            LogRequest::Head { ticket, room } => LogDone::Head {
                ticket,
                room,
                result: Ok(None),
            },
            // This harness's owner is not in a cluster.
            LogRequest::Cluster(request) => {
                match request.fail(herald_protocol::owner::LogError::Failed("no cluster".into())) {
                    Some(done) => done,
                    None => return,
                }
            }
        };
        self.owner.handle(now_ms, Input::Log(done));
    }

    /// A link closed: its connection leaves every room.
    fn link_gone(&mut self, now: Instant) {
        let now_ms = self.wall(now);
        for room in std::mem::take(&mut self.joined) {
            let leave = Input::Leave {
                member: member(self.link),
                room,
            };
            self.owner.handle(now_ms, leave);
        }
        self.pump(None, now);
    }

    /// A link opened: its connection is a new member.
    fn new_link(&mut self) {
        self.link += 1;
    }

    fn handle(&mut self, server: &mut ServerSession, now: Instant, ev: ServerEvent) {
        self.events.push(ev.clone());
        let now_ms = self.wall(now);
        let user: Arc<str> = Arc::from(self.user_id.as_str());
        match ev {
            ServerEvent::Connect { .. } if self.hold_connects => {}
            ServerEvent::Connect { token, resume, .. } => {
                let Some(user) = token.strip_prefix("user:") else {
                    server.reject(ErrorCode::AuthFailed, "bad token");
                    return;
                };
                self.user_id = user.to_owned();
                self.sessions += 1;
                server.accept(
                    now,
                    &Accept {
                        session_id: format!("s{}", self.sessions),
                        node_id: "node-1".into(),
                        user_id: user.to_owned(),
                        server_time_ms: WALL_START_MS,
                    },
                );
                let user: Arc<str> = Arc::from(user);
                for r in resume {
                    let recover = (r.position.epoch != 0).then_some(r.position);
                    let room: Arc<str> = Arc::from(r.room);
                    self.joined.push(room.clone());
                    self.owner.handle(
                        now_ms,
                        Input::Join {
                            origin: 0,
                            member: member(self.link),
                            room,
                            user: user.clone(),
                            history: 0,
                            recover,
                            presence: r.presence,
                        },
                    );
                }
            }
            ServerEvent::Subscribe {
                request_id,
                room,
                history,
                recover,
                presence,
            } => {
                let room: Arc<str> = Arc::from(room);
                if !self.joined.contains(&room) {
                    self.joined.push(room.clone());
                }
                let join = Input::Join {
                    origin: request_id,
                    member: member(self.link),
                    room,
                    user,
                    history,
                    recover,
                    presence,
                };
                self.owner.handle(now_ms, join);
            }
            ServerEvent::Unsubscribed { room } => {
                self.joined.retain(|r| **r != *room);
                let leave = Input::Leave {
                    member: member(self.link),
                    room: Arc::from(room),
                };
                self.owner.handle(now_ms, leave);
            }
            ServerEvent::Publish {
                request_id,
                room,
                payload,
                content_type,
                volatile,
                idempotency_key,
            } => self.owner.handle(
                now_ms,
                Input::Publish {
                    origin: request_id,
                    room: Arc::from(room),
                    user,
                    payload,
                    content_type,
                    volatile,
                    idempotency_key,
                    from_server: false,
                    received: now,
                },
            ),
            ServerEvent::Request { request_id, .. } => server.reply(request_id, ErrorCode::Ok, None),
            ServerEvent::Typing { .. } | ServerEvent::RateLimited { .. } | ServerEvent::Closed { .. } => {}
        }
        self.pump(Some(server), now);
    }

    /// Runs the owner's outputs: answers to the session, deliveries to it
    /// when it is subscribed, appends to the log store.
    fn pump(&mut self, mut server: Option<&mut ServerSession>, now: Instant) {
        while let Some(out) = self.owner.poll_output() {
            match out {
                Output::Log(request @ LogRequest::Append { .. }) if self.hold_publishes => self.held.push(request),
                Output::Log(request) => {
                    let now_ms = self.wall(now);
                    self.complete(request, now_ms);
                }
                out => {
                    if let Some(server) = server.as_deref_mut() {
                        answer(server, out);
                    }
                }
            }
        }
    }

    /// Encodes a stored message again and queues it to the session if it is
    /// subscribed: a duplicate delivery, for tests of the client's dedup.
    pub(crate) fn redeliver(&mut self, server: &mut ServerSession, room: &str, offset: u64) {
        if !server.rooms().any(|r| r == room) {
            return;
        }
        let log = self.log(room);
        let Some(m) = log.messages.iter().find(|m| m.offset == offset) else {
            return;
        };
        let frame = with_encoder(|e| e.message(&m.as_ref(room, log.epoch)));
        let _ = server.send(frame, false);
    }
}

/// One owner output, answered on the session.
fn answer(server: &mut ServerSession, out: Output<u32>) {
    match out {
        Output::JoinResult {
            origin, room, result, ..
        } => match result {
            Ok(j) => {
                let history: Vec<MessageRef<'_>> = j.history.iter().map(|m| m.as_ref(&room, j.epoch)).collect();
                server.subscribed(
                    origin,
                    &SubscribedRef {
                        room: &room,
                        epoch: j.epoch,
                        offset: j.offset,
                        recovered: j.recovered,
                        history: &history,
                        presence: None,
                    },
                );
            }
            Err(r) if origin == 0 => server.resume_failed(&room, r.code, r.message),
            Err(r) => server.reply_error(origin, r.code, r.message),
        },
        Output::PublishResult { origin, result, .. } => match result {
            Ok(position) => server.ack(origin, position),
            Err(r) => server.reply_error(origin, r.code, r.message),
        },
        Output::Deliver {
            room, frame, audience, ..
        } => {
            if let Audience::Members { volatile, conflate } = audience
                && server.rooms().any(|r| *r == *room)
            {
                let _ = if conflate && !volatile {
                    server.send_conflated(frame, &room)
                } else {
                    server.send(frame, volatile)
                };
            }
        }
        Output::Answer { .. } | Output::Rooms { .. } | Output::Log(_) => {}
    }
}

/// Payloads of deliveries, as UTF-8 strings, for compact assertions.
pub(crate) fn payloads(deliveries: &[herald_protocol::Delivery]) -> Vec<String> {
    deliveries
        .iter()
        .map(|d| String::from_utf8_lossy(&d.payload).into_owned())
        .collect()
}

/// Payloads of the `Message` events in `events`.
pub(crate) fn messages(events: &[ClientEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Message(d) => Some(String::from_utf8_lossy(&d.payload).into_owned()),
            _ => None,
        })
        .collect()
}

/// A server session that went through `Connect` and was accepted, with its
/// output drained. For tests that drive a server session by hand.
pub(crate) fn open_server(config: ServerConfig, now: Instant) -> ServerSession {
    let mut server = ServerSession::new(config, now);
    server
        .handle_frame(now, frames::connect("user:alice"))
        .unwrap_or_else(|e| panic!("Connect refused: {e}"));
    assert!(matches!(server.poll_event(), Some(ServerEvent::Connect { .. })));
    server.accept(
        now,
        &Accept {
            session_id: "s1".into(),
            node_id: "node-1".into(),
            user_id: "alice".into(),
            server_time_ms: 0,
        },
    );
    assert!(server.is_open());
    assert_eq!(frames::kind(&server.poll_transmit().unwrap_or_default()), "Connected");
    assert_eq!(server.poll_transmit(), None);
    server
}

/// Every frame the server session has queued (drained).
pub(crate) fn transmitted(server: &mut ServerSession) -> Vec<Bytes> {
    std::iter::from_fn(|| server.poll_transmit()).collect()
}

/// Every event the server session has queued (drained).
pub(crate) fn server_events(server: &mut ServerSession) -> Vec<ServerEvent> {
    std::iter::from_fn(|| server.poll_event()).collect()
}
