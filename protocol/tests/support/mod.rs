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

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
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
        self.link_up = false;
        self.client.handle_disconnect(ErrorCode::Unavailable, "link dropped");
        self.collect_client_events();
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
            self.link_up = false;
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
                self.link_up = false;
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
        let position = self.app.append(room, "bob", payload, None);
        if self.link_up {
            self.app.fan_out(&mut self.server, room, position.offset);
        }
        position
    }
}

/// A message in a room's log.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Stored {
    pub(crate) offset: u64,
    pub(crate) publisher: String,
    pub(crate) timestamp_ms: u64,
    pub(crate) payload: Bytes,
    pub(crate) content_type: Option<String>,
}

/// One room's log: an epoch and the retained tail of its messages.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RoomLog {
    pub(crate) epoch: u64,
    /// Offset of `messages[0]` (or the next offset when empty).
    pub(crate) first: u64,
    pub(crate) messages: Vec<Stored>,
}

impl RoomLog {
    fn new() -> Self {
        Self {
            epoch: 1,
            first: 1,
            messages: Vec::new(),
        }
    }

    /// The latest offset (0 when nothing was ever published).
    pub(crate) fn latest(&self) -> u64 {
        self.first + self.messages.len() as u64 - 1
    }

    /// Every message after `offset`, or None if some were already trimmed.
    fn after(&self, offset: u64) -> Option<&[Stored]> {
        if offset >= self.latest() {
            return Some(&[]);
        }
        let skip = (offset + 1).checked_sub(self.first)?;
        Some(&self.messages[skip as usize..])
    }

    fn last(&self, n: u32) -> &[Stored] {
        &self.messages[self.messages.len().saturating_sub(n as usize)..]
    }
}

/// A gateway in miniature: authenticates `user:<id>` tokens, keeps a log per
/// room, answers subscribes (with history or recovery), acks publishes
/// (deduplicating idempotency keys) and fans messages out.
#[derive(Debug, Default)]
pub(crate) struct App {
    pub(crate) rooms: HashMap<String, RoomLog>,
    /// Every server event seen, in order.
    pub(crate) events: Vec<ServerEvent>,
    /// Leave `Connect` unanswered (authentication stalls).
    pub(crate) hold_connects: bool,
    /// Leave publishes unanswered (storage stalls).
    pub(crate) hold_publishes: bool,
    dedup: HashMap<(String, String), Position>,
    user_id: String,
    sessions: u32,
}

impl App {
    /// The log of a room (panics if the room was never used).
    pub(crate) fn log(&self, room: &str) -> &RoomLog {
        self.rooms.get(room).unwrap_or_else(|| panic!("no room {room}"))
    }

    /// Drops all but the last `keep` messages of a room, as a bounded
    /// history would.
    pub(crate) fn trim(&mut self, room: &str, keep: usize) {
        let log = self.rooms.entry(room.to_owned()).or_insert_with(RoomLog::new);
        let drop = log.messages.len().saturating_sub(keep);
        log.messages.drain(..drop);
        log.first += drop as u64;
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

    fn handle(&mut self, server: &mut ServerSession, now: Instant, ev: ServerEvent) {
        self.events.push(ev.clone());
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
                        server_time_ms: 1_700_000_000_000,
                    },
                );
                for r in resume {
                    let recover = (r.position.epoch != 0).then_some(r.position);
                    self.subscribe(server, 0, &r.room, 0, recover);
                }
            }
            ServerEvent::Subscribe {
                request_id,
                room,
                history,
                recover,
                ..
            } => self.subscribe(server, request_id, &room, history, recover),
            ServerEvent::Publish { .. } if self.hold_publishes => {}
            ServerEvent::Publish {
                request_id,
                room,
                payload,
                content_type,
                volatile,
                idempotency_key,
            } => {
                if volatile {
                    server.ack(request_id, Position { epoch: 0, offset: 0 });
                    let frame = with_encoder(|e| {
                        e.message(&MessageRef {
                            room: &room,
                            publisher: &self.user_id,
                            payload: &payload,
                            content_type: content_type.as_deref(),
                            volatile: true,
                            ..MessageRef::default()
                        })
                    });
                    if server.rooms().any(|r| r == room) {
                        server.send(frame, true);
                    }
                    return;
                }
                let key = idempotency_key.map(|k| (room.clone(), k));
                if let Some(position) = key.as_ref().and_then(|k| self.dedup.get(k)) {
                    server.ack(request_id, *position);
                    return;
                }
                let user = self.user_id.clone();
                let position = self.append(&room, &user, &payload, content_type);
                if let Some(key) = key {
                    self.dedup.insert(key, position);
                }
                server.ack(request_id, position);
                self.fan_out(server, &room, position.offset);
            }
            ServerEvent::Request { request_id, .. } => server.reply(request_id, ErrorCode::Ok, None),
            ServerEvent::Unsubscribed { .. } | ServerEvent::Typing { .. } | ServerEvent::Closed { .. } => {}
        }
    }

    fn subscribe(
        &mut self,
        server: &mut ServerSession,
        request_id: u32,
        room: &str,
        history: u32,
        recover: Option<Position>,
    ) {
        let log = self.rooms.entry(room.to_owned()).or_insert_with(RoomLog::new);
        let (recovered, messages) = match recover {
            Some(p) if p.epoch == log.epoch => match log.after(p.offset) {
                Some(m) => (true, m),
                None => (false, &[][..]),
            },
            Some(_) => (false, &[][..]),
            None => (false, log.last(history)),
        };
        let history: Vec<MessageRef<'_>> = messages.iter().map(|m| message_ref(room, log.epoch, m)).collect();
        server.subscribed(
            request_id,
            &SubscribedRef {
                room,
                epoch: log.epoch,
                offset: log.latest(),
                recovered,
                history: &history,
                presence: None,
            },
        );
    }

    fn append(&mut self, room: &str, publisher: &str, payload: &[u8], content_type: Option<String>) -> Position {
        let log = self.rooms.entry(room.to_owned()).or_insert_with(RoomLog::new);
        let offset = log.latest() + 1;
        log.messages.push(Stored {
            offset,
            publisher: publisher.to_owned(),
            timestamp_ms: 1_700_000_000_000 + offset,
            payload: Bytes::copy_from_slice(payload),
            content_type,
        });
        Position {
            epoch: log.epoch,
            offset,
        }
    }

    /// Encodes a stored message once and queues it to the session if it is
    /// subscribed to the room. Tests also use it to deliver a message again.
    pub(crate) fn fan_out(&mut self, server: &mut ServerSession, room: &str, offset: u64) {
        if !server.rooms().any(|r| r == room) {
            return;
        }
        let log = self.log(room);
        let Some(m) = log.messages.iter().find(|m| m.offset == offset) else {
            return;
        };
        let frame = with_encoder(|e| e.message(&message_ref(room, log.epoch, m)));
        server.send(frame, false);
    }
}

fn message_ref<'a>(room: &'a str, epoch: u64, m: &'a Stored) -> MessageRef<'a> {
    MessageRef {
        room,
        epoch,
        offset: m.offset,
        publisher: &m.publisher,
        timestamp_ms: m.timestamp_ms,
        payload: &m.payload,
        content_type: m.content_type.as_deref(),
        volatile: false,
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
