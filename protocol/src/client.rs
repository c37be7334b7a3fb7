//! The client side of a connection, as a pure state machine that survives
//! reconnects.
//!
//! One [`ClientSession`] lives as long as the application's logical
//! connection; each transport connection starts with
//! [`connect`](ClientSession::connect) and ends with
//! [`handle_disconnect`](ClientSession::handle_disconnect). Subscriptions,
//! per-room positions and unacknowledged publishes carry over: on reconnect
//! the session resumes every room from its last (epoch, offset) and resends
//! unacknowledged publishes with their idempotency keys, so the server can
//! deduplicate them.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::codec::{self, PublishRef, with_encoder};
use crate::error::ProtocolError;
use crate::limits::DecodeLimits;
use crate::wire::{self, Body, ErrorCode};
use crate::{PROTOCOL_VERSION, Position};

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Authentication token sent in `Connect`.
    pub token: String,
    /// Client software name, for server logs.
    pub client_name: String,
    /// Client software version.
    pub client_version: String,
    /// Time to wait for `Connected`. Default 10 s.
    pub connect_timeout: Duration,
    /// Time to wait for any request's answer. Default 10 s.
    pub request_timeout: Duration,
    /// Limits for frames from the server. Default [`DecodeLimits::SERVER_TO_CLIENT`].
    pub decode: DecodeLimits,
    /// Prefix of generated idempotency keys; make it unique per client
    /// instance (the async client uses a random one).
    pub idempotency_prefix: String,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            token: String::new(),
            client_name: "herald-rust".into(),
            client_version: env!("CARGO_PKG_VERSION").into(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            decode: DecodeLimits::SERVER_TO_CLIENT,
            idempotency_prefix: "c".into(),
        }
    }
}

/// Options of a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// Most recent messages to receive with the first `Subscribed`.
    pub history: u32,
    /// Receive presence events.
    pub presence: bool,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        Self {
            history: 0,
            presence: true,
        }
    }
}

/// Options of a publish.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishOptions {
    /// MIME type of the payload.
    pub content_type: Option<String>,
    /// Best-effort, not stored, not resent after a reconnect.
    pub volatile: bool,
    /// Deduplication key; one is generated when absent.
    pub idempotency_key: Option<String>,
}

/// A message received in a room.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Room name.
    pub room: String,
    /// Room epoch.
    pub epoch: u64,
    /// Offset (0 for volatile).
    pub offset: u64,
    /// Publisher's user id.
    pub publisher: String,
    /// Acceptance time, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// Payload, sharing the received frame's buffer.
    pub payload: Bytes,
    /// MIME type, if any.
    pub content_type: Option<String>,
    /// Best-effort message.
    pub volatile: bool,
}

/// What happened, produced by [`ClientSession::poll_event`].
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// The server accepted the connection.
    Connected {
        /// Session id.
        session_id: String,
        /// Node id.
        node_id: String,
        /// Authenticated user id.
        user_id: String,
        /// True if this was a reconnect of an existing session.
        reconnected: bool,
    },
    /// A subscription is active (first subscribe, or resumed after a
    /// reconnect).
    Subscribed {
        /// Room name.
        room: String,
        /// Room epoch.
        epoch: u64,
        /// Latest room offset.
        offset: u64,
        /// For a resume: true when no message was missed. False means a gap
        /// the server could not fill: refetch the room's state.
        recovered: bool,
        /// True when this answers a resume after a reconnect.
        resumed: bool,
        /// History or recovered messages, oldest first.
        history: Vec<Delivery>,
        /// Presence snapshot, if requested.
        presence: Option<wire::PresenceSnapshotT>,
    },
    /// A subscription was refused (or could not be resumed); the room is
    /// forgotten.
    SubscribeFailed {
        /// Room name.
        room: String,
        /// Why.
        code: ErrorCode,
        /// Detail.
        message: String,
    },
    /// A message was delivered.
    Message(Delivery),
    /// A publish was stored (offset 0 when volatile).
    Published {
        /// The id returned by [`ClientSession::publish`].
        request_id: u32,
        /// Assigned position.
        position: Position,
    },
    /// A publish failed (`ErrorCode::Timeout` when no answer came in time).
    PublishFailed {
        /// The id returned by [`ClientSession::publish`].
        request_id: u32,
        /// Why.
        code: ErrorCode,
        /// Detail.
        message: String,
    },
    /// Answer to a [`ClientSession::request`], an unsubscribe, or a timeout.
    Reply {
        /// Request id.
        request_id: u32,
        /// Result code.
        code: ErrorCode,
        /// Detail.
        message: String,
    },
    /// The user's unread notification count, which the server sends unasked
    /// after every `Connected` (a `NotificationsPage` with request id 0 and
    /// no notifications). Also kept: [`ClientSession::unread`].
    Unread {
        /// Unread notifications in total.
        unread: u64,
    },
    /// Any other frame from the server (presence, typing, pages,
    /// notifications, metrics, alerts), with the request id it answers.
    Frame {
        /// Request id answered, or 0.
        request_id: u32,
        /// The body.
        body: wire::BodyT,
    },
    /// The server is going away; reconnect after the given delay (None:
    /// do not reconnect automatically).
    GoAway {
        /// Why.
        code: ErrorCode,
        /// Reason.
        reason: String,
        /// Suggested delay before reconnecting.
        reconnect_after: Option<Duration>,
    },
    /// The transport must be closed (fatal error from either side, timeout,
    /// or the transport itself closed). Call [`ClientSession::connect`] on a
    /// new transport to resume.
    Disconnected {
        /// Why.
        code: ErrorCode,
        /// Detail.
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Connecting { deadline: Instant },
    Open,
}

#[derive(Debug)]
struct RoomState {
    options: SubscribeOptions,
    position: Option<Position>,
    confirmed: bool,
    /// Listed in the `Connect.resume` of the current transport. A room
    /// subscribed while that `Connect` is in flight is not, and needs its
    /// own `Subscribe` once connected.
    in_connect: bool,
}

#[derive(Debug)]
enum PendingKind {
    Subscribe(String),
    Publish { frame: Bytes, volatile: bool },
    Other,
}

#[derive(Debug)]
struct Pending {
    kind: PendingKind,
    deadline: Instant,
}

/// Client side of a logical connection.
#[derive(Debug)]
pub struct ClientSession {
    config: ClientConfig,
    state: State,
    ever_connected: bool,
    next_request_id: u32,
    next_idempotency: u64,
    rooms: BTreeMap<String, RoomState>,
    pending: HashMap<u32, Pending>,
    outbound: VecDeque<Bytes>,
    events: VecDeque<ClientEvent>,
    idle_timeout: Option<Duration>,
    last_received: Instant,
    user_id: Option<String>,
    unread: Option<u64>,
}

impl ClientSession {
    /// A new, unconnected session.
    pub fn new(config: ClientConfig, now: Instant) -> Self {
        Self {
            config,
            state: State::Idle,
            ever_connected: false,
            next_request_id: 1,
            next_idempotency: 1,
            rooms: BTreeMap::new(),
            pending: HashMap::new(),
            outbound: VecDeque::new(),
            events: VecDeque::new(),
            idle_timeout: None,
            last_received: now,
            user_id: None,
            unread: None,
        }
    }

    // ---- getters ----------------------------------------------------------

    /// True between `Connected` and a disconnect.
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// The last position seen in a room.
    pub fn position(&self, room: &str) -> Option<Position> {
        self.rooms.get(room).and_then(|r| r.position)
    }

    /// Rooms this session is subscribed to (or subscribing).
    pub fn rooms(&self) -> impl Iterator<Item = &str> {
        self.rooms.keys().map(String::as_str)
    }

    /// Requests sent and not yet answered.
    pub fn pending_requests(&self) -> usize {
        self.pending.len()
    }

    /// The authenticated user id, once connected.
    pub fn user_id(&self) -> Option<&str> {
        self.user_id.as_deref()
    }

    /// The user's unread notification count as the server last told it
    /// (after connecting, and in every notifications page); None until then.
    pub fn unread(&self) -> Option<u64> {
        self.unread
    }

    // ---- transport lifecycle ----------------------------------------------

    /// Starts a handshake on a new transport: queues `Connect`, resuming
    /// every known room from its last position.
    pub fn connect(&mut self, now: Instant) {
        self.outbound.clear();
        let resume: Vec<wire::RoomPositionT> = self
            .rooms
            .iter_mut()
            .map(|(room, st)| {
                st.in_connect = true;
                let p = st.position.unwrap_or_default();
                wire::RoomPositionT {
                    room: room.clone(),
                    epoch: p.epoch,
                    offset: p.offset,
                    presence: st.options.presence,
                }
            })
            .collect();
        let connect = wire::ConnectT {
            protocol: Some(PROTOCOL_VERSION.into()),
            token: Some(self.config.token.clone()),
            client_name: Some(self.config.client_name.clone()),
            client_version: Some(self.config.client_version.clone()),
            resume: (!resume.is_empty()).then_some(resume),
        };
        let request_id = self.request_id();
        let frame = with_encoder(|e| e.body(request_id, wire::BodyT::Connect(Box::new(connect))));
        self.outbound.push_back(frame);
        self.state = State::Connecting {
            deadline: now + self.config.connect_timeout,
        };
        self.last_received = now;
    }

    /// The transport closed. Pending subscribes are kept (they resume with
    /// the next `connect`); unacknowledged non-volatile publishes are kept and
    /// resent; other pending requests fail.
    pub fn handle_disconnect(&mut self, code: ErrorCode, reason: &str) {
        if self.state == State::Idle {
            return;
        }
        self.state = State::Idle;
        self.outbound.clear();
        for r in self.rooms.values_mut() {
            r.confirmed = false;
        }
        let mut failed = Vec::new();
        self.pending.retain(|id, p| match &p.kind {
            PendingKind::Subscribe(_) => false,
            PendingKind::Publish { volatile: false, .. } => true,
            PendingKind::Publish { volatile: true, .. } => {
                failed.push((*id, true));
                false
            }
            PendingKind::Other => {
                failed.push((*id, false));
                false
            }
        });
        failed.sort_unstable();
        for (request_id, publish) in failed {
            let message = "connection lost before an answer".to_owned();
            self.events.push_back(if publish {
                ClientEvent::PublishFailed {
                    request_id,
                    code: ErrorCode::Unavailable,
                    message,
                }
            } else {
                ClientEvent::Reply {
                    request_id,
                    code: ErrorCode::Unavailable,
                    message,
                }
            });
        }
        self.events.push_back(ClientEvent::Disconnected {
            code,
            reason: reason.to_owned(),
        });
    }

    // ---- commands ---------------------------------------------------------

    fn request_id(&mut self) -> u32 {
        let id = self.next_request_id;
        self.next_request_id = self.next_request_id.checked_add(1).unwrap_or(1);
        id
    }

    /// Subscribes to a room (sent now if connected, else at the next connect).
    pub fn subscribe(&mut self, now: Instant, room: &str, options: SubscribeOptions) {
        let st = self.rooms.entry(room.to_owned()).or_insert(RoomState {
            options,
            position: None,
            confirmed: false,
            in_connect: false,
        });
        st.options = options;
        // While connecting, the server takes no request before `Connected`:
        // a new room is subscribed by `on_connected`.
        if self.state == State::Open {
            self.send_subscribe(now, room, options);
        }
    }

    fn send_subscribe(&mut self, now: Instant, room: &str, options: SubscribeOptions) {
        let request_id = self.request_id();
        let body = wire::SubscribeT {
            room: room.to_owned(),
            history: options.history,
            recover_epoch: 0,
            recover_offset: 0,
            presence: options.presence,
        };
        self.send_request(
            now,
            request_id,
            wire::BodyT::Subscribe(Box::new(body)),
            PendingKind::Subscribe(room.to_owned()),
        );
    }

    /// Leaves a room. Returns the request id if a request was sent.
    pub fn unsubscribe(&mut self, now: Instant, room: &str) -> Option<u32> {
        self.rooms.remove(room)?;
        if self.state != State::Open {
            return None;
        }
        let request_id = self.request_id();
        let body = wire::UnsubscribeT { room: room.to_owned() };
        self.send_request(
            now,
            request_id,
            wire::BodyT::Unsubscribe(Box::new(body)),
            PendingKind::Other,
        );
        Some(request_id)
    }

    /// Publishes to a room; the outcome arrives as `Published` or
    /// `PublishFailed` with the returned request id. Queued until connected.
    pub fn publish(&mut self, now: Instant, room: &str, payload: &[u8], options: PublishOptions) -> u32 {
        let request_id = self.request_id();
        let key = match options.idempotency_key {
            Some(k) => k,
            None if options.volatile => String::new(),
            None => {
                let n = self.next_idempotency;
                self.next_idempotency += 1;
                format!("{}-{n}", self.config.idempotency_prefix)
            }
        };
        let frame = with_encoder(|e| {
            e.publish(
                request_id,
                &PublishRef {
                    room,
                    payload,
                    content_type: options.content_type.as_deref(),
                    volatile: options.volatile,
                    idempotency_key: (!key.is_empty()).then_some(key.as_str()),
                },
            )
        });
        if self.state == State::Open {
            self.outbound.push_back(frame.clone());
        }
        self.pending.insert(
            request_id,
            Pending {
                kind: PendingKind::Publish {
                    frame,
                    volatile: options.volatile,
                },
                deadline: now + self.config.request_timeout,
            },
        );
        request_id
    }

    /// Sends a typing indicator (dropped when not connected).
    pub fn typing(&mut self, room: &str, active: bool) {
        if self.state == State::Open {
            let body = wire::TypingT {
                room: room.to_owned(),
                active,
            };
            self.outbound
                .push_back(with_encoder(|e| e.body(0, wire::BodyT::Typing(Box::new(body)))));
        }
    }

    /// Sends any other request (queries, mark-read, analytics, metrics).
    /// Returns the request id, or None when not connected.
    pub fn request(&mut self, now: Instant, body: wire::BodyT) -> Option<u32> {
        if self.state != State::Open {
            return None;
        }
        let request_id = self.request_id();
        self.send_request(now, request_id, body, PendingKind::Other);
        Some(request_id)
    }

    fn send_request(&mut self, now: Instant, request_id: u32, body: wire::BodyT, kind: PendingKind) {
        self.outbound.push_back(with_encoder(|e| e.body(request_id, body)));
        self.pending.insert(
            request_id,
            Pending {
                kind,
                deadline: now + self.config.request_timeout,
            },
        );
    }

    // ---- input ------------------------------------------------------------

    /// Handles one frame from the server. A protocol error means the server
    /// is broken or hostile: the session reports `Disconnected` and the
    /// transport should be closed.
    pub fn handle_frame(&mut self, now: Instant, frame: Bytes) -> Result<(), ProtocolError> {
        self.last_received = now;
        let decoded = match codec::decode(&frame, &self.config.decode) {
            Ok(f) => f,
            Err(e) => return Err(self.fail(e)),
        };
        let body = decoded.body_type();
        if !codec::is_server_body(body) {
            return Err(self.fail(ProtocolError::UnexpectedBody(codec::body_name(body))));
        }
        let request_id = decoded.request_id();
        match body {
            Body::Ping => {
                let nonce = decoded.body_as_ping().map_or(0, |p| p.nonce());
                self.outbound.push_back(with_encoder(|e| e.pong(nonce)));
            }
            Body::Pong => {}
            Body::Connected => self.on_connected(now, &decoded),
            Body::Reply => {
                if let Some(r) = decoded.body_as_reply() {
                    self.on_reply(
                        request_id,
                        r.code(),
                        r.message().unwrap_or_default(),
                        Position {
                            epoch: r.epoch(),
                            offset: r.offset(),
                        },
                    );
                }
            }
            Body::Subscribed => {
                if let Some(s) = decoded.body_as_subscribed() {
                    self.on_subscribed(request_id, &s, &frame);
                }
            }
            Body::Message => {
                if let Some(m) = decoded.body_as_message() {
                    let d = delivery(&m, &frame);
                    self.on_message(d);
                }
            }
            Body::Error => {
                if let Some(e) = decoded.body_as_error() {
                    self.on_error(request_id, e.code(), e.message().unwrap_or_default(), e.room());
                }
            }
            Body::GoAway => {
                if let Some(g) = decoded.body_as_go_away() {
                    let ms = g.reconnect_after_ms();
                    self.events.push_back(ClientEvent::GoAway {
                        code: g.code(),
                        reason: g.reason().unwrap_or_default().to_owned(),
                        reconnect_after: (ms != 0).then(|| Duration::from_millis(u64::from(ms))),
                    });
                }
            }
            Body::NotificationsPage => {
                let unread = decoded.body_as_notifications_page().map_or(0, |p| p.unread());
                self.unread = Some(unread);
                if request_id == 0 {
                    self.events.push_back(ClientEvent::Unread { unread });
                } else {
                    self.pending.remove(&request_id);
                    self.events.push_back(ClientEvent::Frame {
                        request_id,
                        body: decoded.unpack().body,
                    });
                }
            }
            _ => {
                self.pending.remove(&request_id);
                self.events.push_back(ClientEvent::Frame {
                    request_id,
                    body: decoded.unpack().body,
                });
            }
        }
        Ok(())
    }

    fn on_connected(&mut self, now: Instant, frame: &wire::Frame<'_>) {
        if !matches!(self.state, State::Connecting { .. }) {
            return;
        }
        let Some(c) = frame.body_as_connected() else { return };
        self.state = State::Open;
        self.user_id = c.user_id().map(str::to_owned);
        let hb = u64::from(c.heartbeat_interval_ms());
        self.idle_timeout = (hb > 0).then(|| Duration::from_millis(hb * 3));
        let reconnected = self.ever_connected;
        self.ever_connected = true;
        self.events.push_back(ClientEvent::Connected {
            session_id: c.session_id().unwrap_or_default().to_owned(),
            node_id: c.node_id().unwrap_or_default().to_owned(),
            user_id: c.user_id().unwrap_or_default().to_owned(),
            reconnected,
        });
        // Publishes made while disconnected, or unacknowledged when the link
        // dropped, go out now in request order with their idempotency keys.
        let mut resend: Vec<(u32, Bytes)> = self
            .pending
            .iter_mut()
            .filter_map(|(id, p)| match &p.kind {
                PendingKind::Publish { frame, .. } => {
                    p.deadline = now + self.config.request_timeout;
                    Some((*id, frame.clone()))
                }
                _ => None,
            })
            .collect();
        resend.sort_unstable_by_key(|(id, _)| *id);
        self.outbound.extend(resend.into_iter().map(|(_, f)| f));
        // Rooms subscribed while the handshake was in flight were not in
        // `Connect.resume`: subscribe them now.
        let late: Vec<(String, SubscribeOptions)> = self
            .rooms
            .iter()
            .filter(|(_, st)| !st.in_connect)
            .map(|(room, st)| (room.clone(), st.options))
            .collect();
        for (room, options) in late {
            self.send_subscribe(now, &room, options);
        }
    }

    fn on_reply(&mut self, request_id: u32, code: ErrorCode, message: &str, position: Position) {
        let Some(p) = self.pending.remove(&request_id) else {
            return;
        };
        let message = message.to_owned();
        match p.kind {
            PendingKind::Publish { .. } if code == ErrorCode::Ok => {
                self.events.push_back(ClientEvent::Published { request_id, position });
            }
            PendingKind::Publish { .. } => {
                self.events.push_back(ClientEvent::PublishFailed {
                    request_id,
                    code,
                    message,
                });
            }
            PendingKind::Subscribe(room) => {
                self.rooms.remove(&room);
                self.events
                    .push_back(ClientEvent::SubscribeFailed { room, code, message });
            }
            PendingKind::Other => self.events.push_back(ClientEvent::Reply {
                request_id,
                code,
                message,
            }),
        }
    }

    fn on_subscribed(&mut self, request_id: u32, s: &wire::Subscribed<'_>, raw: &Bytes) {
        if request_id != 0 {
            self.pending.remove(&request_id);
        }
        let room = s.room().to_owned();
        let Some(st) = self.rooms.get_mut(&room) else {
            // Unsubscribed meanwhile. The server may have confirmed the
            // subscription after handling our unsubscribe, or never got one
            // (an unsubscribe while the `Connect` resuming this room was in
            // flight is not sent: no request is allowed before `Connected`).
            // Leave the room now; the reply matches no pending request and
            // is ignored.
            if self.state == State::Open {
                let request_id = self.request_id();
                let body = wire::UnsubscribeT { room };
                self.outbound.push_back(with_encoder(|e| {
                    e.body(request_id, wire::BodyT::Unsubscribe(Box::new(body)))
                }));
            }
            return;
        };
        st.confirmed = true;
        st.position = Some(Position {
            epoch: s.epoch(),
            offset: s.offset(),
        });
        let history = s
            .history()
            .map(|h| h.iter().map(|m| delivery(&m, raw)).collect())
            .unwrap_or_default();
        self.events.push_back(ClientEvent::Subscribed {
            room,
            epoch: s.epoch(),
            offset: s.offset(),
            recovered: s.recovered(),
            resumed: request_id == 0,
            history,
            presence: s.presence().map(|p| p.unpack()),
        });
    }

    fn on_message(&mut self, d: Delivery) {
        let Some(st) = self.rooms.get_mut(&d.room) else { return };
        if !d.volatile && d.offset != 0 {
            if let Some(p) = st.position
                && p.epoch == d.epoch
                && d.offset <= p.offset
            {
                // Already seen (replayed in a recovery batch): drop.
                return;
            }
            st.position = Some(Position {
                epoch: d.epoch,
                offset: d.offset,
            });
        }
        self.events.push_back(ClientEvent::Message(d));
    }

    fn on_error(&mut self, request_id: u32, code: ErrorCode, message: &str, room: Option<&str>) {
        if code.is_fatal() {
            self.handle_disconnect(code, message);
            return;
        }
        if let Some(room) = room {
            self.rooms.remove(room);
            self.events.push_back(ClientEvent::SubscribeFailed {
                room: room.to_owned(),
                code,
                message: message.to_owned(),
            });
        } else {
            self.on_reply(request_id, code, message, Position::default());
        }
    }

    fn fail(&mut self, err: ProtocolError) -> ProtocolError {
        self.handle_disconnect(err.code(), &err.to_string());
        err
    }

    /// Fires timers: connect timeout, request timeouts, idle detection.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Idle => {}
            State::Connecting { deadline } => {
                if now >= deadline {
                    self.handle_disconnect(ErrorCode::HandshakeTimeout, "no Connected within the connect timeout");
                }
                return;
            }
            State::Open => {
                if let Some(idle) = self.idle_timeout
                    && now.saturating_duration_since(self.last_received) >= idle
                {
                    self.handle_disconnect(ErrorCode::IdleTimeout, "server silent for three heartbeats");
                    return;
                }
            }
        }
        let mut expired: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| now >= p.deadline)
            .map(|(id, _)| *id)
            .collect();
        expired.sort_unstable();
        for request_id in expired {
            let Some(p) = self.pending.remove(&request_id) else {
                continue;
            };
            let message = "no answer within the request timeout".to_owned();
            let code = ErrorCode::Timeout;
            self.events.push_back(match p.kind {
                PendingKind::Publish { .. } => ClientEvent::PublishFailed {
                    request_id,
                    code,
                    message,
                },
                PendingKind::Subscribe(room) => {
                    self.rooms.remove(&room);
                    ClientEvent::SubscribeFailed { room, code, message }
                }
                PendingKind::Other => ClientEvent::Reply {
                    request_id,
                    code,
                    message,
                },
            });
        }
    }

    // ---- output -----------------------------------------------------------

    /// The next frame to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.outbound.pop_front()
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let requests = self.pending.values().map(|p| p.deadline).min();
        match self.state {
            State::Idle => None,
            State::Connecting { deadline } => Some(deadline),
            State::Open => {
                let idle = self.idle_timeout.map(|d| self.last_received + d);
                match (requests, idle) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
        }
    }
}

fn delivery(m: &wire::Message<'_>, raw: &Bytes) -> Delivery {
    Delivery {
        room: m.room().to_owned(),
        epoch: m.epoch(),
        offset: m.offset(),
        publisher: m.publisher().unwrap_or_default().to_owned(),
        timestamp_ms: m.timestamp_ms(),
        payload: m.payload().map(|p| raw.slice_ref(p.bytes())).unwrap_or_default(),
        content_type: m.content_type().map(str::to_owned),
        volatile: m.volatile(),
    }
}
