//! The server side of one connection, as a pure state machine.
//!
//! A transport (WebSocket, QUIC, a test harness) drives a [`ServerSession`]:
//! it feeds received frames with [`handle_frame`](ServerSession::handle_frame),
//! fires timers with [`handle_timeout`](ServerSession::handle_timeout), and
//! pulls output with [`poll_transmit`](ServerSession::poll_transmit) (frames
//! to write), [`poll_event`](ServerSession::poll_event) (work for the
//! application: authenticate, subscribe, publish...) and
//! [`poll_timeout`](ServerSession::poll_timeout) (when to call back). The
//! application answers events with commands (`accept`, `subscribed`, `ack`,
//! ...). The session never reads a clock or touches a socket.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::codec::{self, SubscribedRef, with_encoder};
use crate::error::ProtocolError;
use crate::limits::{SessionLimits, valid_room_name};
use crate::rate::TokenBucket;
use crate::wire::{self, Body, ErrorCode};
use crate::{PROTOCOL_VERSION, Position};

/// Timing and limits of server sessions.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Time a client has to send `Connect` and the application has to accept
    /// it. Default 10 s.
    pub handshake_timeout: Duration,
    /// Interval between server pings. Default 15 s.
    pub heartbeat_interval: Duration,
    /// A connection silent for this long is closed. Default 45 s (three
    /// missed heartbeats).
    pub idle_timeout: Duration,
    /// Per-connection limits.
    pub limits: SessionLimits,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(45),
            limits: SessionLimits::default(),
        }
    }
}

/// Work for the application, produced by [`ServerSession::poll_event`].
#[derive(Debug, Clone, PartialEq)]
pub enum ServerEvent {
    /// The client sent `Connect`: authenticate the token, then call
    /// [`ServerSession::accept`] or [`ServerSession::close`]. After accepting,
    /// subscribe the `resume` rooms and answer each with
    /// [`ServerSession::subscribed`] (request id 0) or
    /// [`ServerSession::resume_failed`].
    Connect {
        /// Token to authenticate.
        token: String,
        /// Client software name.
        client_name: String,
        /// Client software version.
        client_version: String,
        /// Rooms to re-subscribe, with the client's last positions.
        resume: Vec<ResumeRoom>,
    },
    /// Subscribe the connection; answer with [`ServerSession::subscribed`] or
    /// [`ServerSession::reply_error`].
    Subscribe {
        /// Request id to answer.
        request_id: u32,
        /// Validated room name.
        room: String,
        /// Most recent messages wanted.
        history: u32,
        /// Position to recover from, if any.
        recover: Option<Position>,
        /// Presence wanted.
        presence: bool,
    },
    /// The connection left a room (already answered).
    Unsubscribed {
        /// Room name.
        room: String,
    },
    /// Publish; answer with [`ServerSession::ack`] or
    /// [`ServerSession::reply_error`].
    Publish {
        /// Request id to answer.
        request_id: u32,
        /// Validated room name.
        room: String,
        /// Payload, a zero-copy slice of the received frame.
        payload: Bytes,
        /// MIME type, if given.
        content_type: Option<String>,
        /// Best-effort, not stored.
        volatile: bool,
        /// Deduplication key, if given.
        idempotency_key: Option<String>,
    },
    /// Typing indicator (already rate-limited).
    Typing {
        /// Room name.
        room: String,
        /// Typing or stopped.
        active: bool,
    },
    /// Any other request (presence, history, notifications, analytics,
    /// metrics); answer with [`ServerSession::send`] of the matching page
    /// frame or with [`ServerSession::reply`].
    Request {
        /// Request id to answer (0 when no answer is wanted).
        request_id: u32,
        /// The request, decoded.
        body: wire::BodyT,
    },
    /// The session refused a request for its rate limit (the refusal is
    /// already queued to the client). For metrics.
    RateLimited {
        /// The refused request.
        request_id: u32,
        /// Which limit.
        limit: RateLimit,
    },
    /// The session is closing: flush [`ServerSession::poll_transmit`], then
    /// close the transport with this code and reason.
    Closed {
        /// Why.
        code: ErrorCode,
        /// Human-readable reason.
        reason: String,
    },
}

/// Which per-connection rate limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimit {
    /// Publishes per second.
    Publish,
    /// Typing updates per second.
    Typing,
}

/// A room listed in `Connect.resume`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeRoom {
    /// Room name (not yet validated: check it like a subscribe).
    pub room: String,
    /// Last position the client saw; epoch 0 means a plain subscribe.
    pub position: Position,
    /// Presence wanted.
    pub presence: bool,
}

/// What the application learned when it accepted a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accept {
    /// Opaque session id.
    pub session_id: String,
    /// This node's id.
    pub node_id: String,
    /// Authenticated user id.
    pub user_id: String,
    /// Wall clock, ms since the Unix epoch.
    pub server_time_ms: u64,
}

/// Result of queueing an outbound frame with [`ServerSession::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// Queued.
    Queued,
    /// A volatile frame was dropped because the queue is over its limit.
    DroppedVolatile,
    /// The connection exceeded its outbound limit and is now closing as a
    /// slow consumer.
    SlowConsumer,
    /// The session is closing or closed; nothing was queued.
    Closed,
    /// The session is not open yet (no accepted `Connect`): application
    /// frames never reach a connection that has not authenticated.
    NotOpen,
    /// A conflated frame took the place of an older one of its room that was
    /// still waiting ([`ServerSession::send_conflated`]).
    Replaced,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitingConnect,
    Authenticating,
    Open,
    Closed,
}

#[derive(Debug)]
struct Outbound {
    frame: Bytes,
    volatile: bool,
    /// The room of a conflated message: a newer one of the same room
    /// replaces this one while it waits.
    conflate: Option<Arc<str>>,
}

/// Server side of one connection.
#[derive(Debug)]
pub struct ServerSession {
    /// Shared by every session of a node (an idle connection should not pay
    /// for its own copy).
    config: Arc<ServerConfig>,
    state: State,
    handshake_deadline: Instant,
    last_received: Instant,
    next_ping: Instant,
    ping_nonce: u64,
    // Small vectors, not hash sets: a connection has a few rooms (at most
    // `max_rooms`), and an idle one should not pay for hash tables.
    rooms: Vec<Box<str>>,
    pending_subscribes: Vec<(u32, Box<str>)>,
    connect_request_id: u32,
    publish_bucket: TokenBucket,
    typing_bucket: TokenBucket,
    outbound: VecDeque<Outbound>,
    outbound_bytes: usize,
    events: VecDeque<ServerEvent>,
    close: Option<Box<(ErrorCode, String)>>,
}

impl ServerSession {
    /// A session for a connection that was just accepted by the transport.
    pub fn new(config: impl Into<Arc<ServerConfig>>, now: Instant) -> Self {
        let config = config.into();
        let l = config.limits;
        Self {
            handshake_deadline: now + config.handshake_timeout,
            last_received: now,
            next_ping: now + config.heartbeat_interval,
            ping_nonce: 0,
            rooms: Vec::new(),
            pending_subscribes: Vec::new(),
            connect_request_id: 0,
            publish_bucket: TokenBucket::new(l.publish_rate_per_sec, l.publish_burst, now),
            typing_bucket: TokenBucket::new(l.typing_rate_per_sec, l.typing_burst, now),
            outbound: VecDeque::new(),
            outbound_bytes: 0,
            events: VecDeque::new(),
            close: None,
            state: State::AwaitingConnect,
            config,
        }
    }

    // ---- getters ----------------------------------------------------------

    /// True once the application accepted the connection and until it closes.
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// True once the session decided to close; the transport should flush
    /// outbound frames and close.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Why the session closed, if it did.
    pub fn close_reason(&self) -> Option<(ErrorCode, &str)> {
        self.close.as_deref().map(|(c, r)| (*c, r.as_str()))
    }

    /// Rooms this connection is subscribed to (confirmed by the application).
    pub fn rooms(&self) -> impl Iterator<Item = &str> {
        self.rooms.iter().map(|r| &**r)
    }

    /// Bytes queued for transmission and not yet taken by the transport.
    pub fn outbound_bytes(&self) -> usize {
        self.outbound_bytes
    }

    /// The limits this session enforces.
    pub fn limits(&self) -> &SessionLimits {
        &self.config.limits
    }

    // ---- input ------------------------------------------------------------

    /// Handles one received frame. A protocol error closes the session (the
    /// error frame is queued) and is also returned for logging.
    pub fn handle_frame(&mut self, now: Instant, frame: Bytes) -> Result<(), ProtocolError> {
        if self.state == State::Closed {
            return Ok(());
        }
        self.last_received = now;
        let decoded = match codec::decode(&frame, &self.config.limits.decode) {
            Ok(f) => f,
            Err(e) => return Err(self.fail(e)),
        };
        let body = decoded.body_type();
        let request_id = decoded.request_id();
        if !codec::is_client_body(body) {
            return Err(self.fail_for(request_id, ProtocolError::UnexpectedBody(codec::body_name(body))));
        }
        match (self.state, body) {
            (_, Body::Ping) => {
                let nonce = decoded.body_as_ping().map_or(0, |p| p.nonce());
                // Volatile: a client that pings without reading gets its
                // pongs dropped instead of growing the queue.
                self.enqueue(with_encoder(|e| e.pong(nonce)), true);
            }
            (_, Body::Pong) => {}
            (State::AwaitingConnect, Body::Connect) => {
                let Some(c) = decoded.body_as_connect() else {
                    return Err(self.fail_for(request_id, ProtocolError::MissingBody));
                };
                let protocol = c.protocol().unwrap_or(PROTOCOL_VERSION);
                if protocol != PROTOCOL_VERSION {
                    self.close_for(
                        request_id,
                        ErrorCode::UnsupportedVersion,
                        &format!("server speaks {PROTOCOL_VERSION}, not {protocol}"),
                    );
                    return Ok(());
                }
                let resume = c
                    .resume()
                    .map(|v| {
                        v.iter()
                            .map(|p| ResumeRoom {
                                room: p.room().to_owned(),
                                position: Position {
                                    epoch: p.epoch(),
                                    offset: p.offset(),
                                },
                                presence: p.presence(),
                            })
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default();
                if resume.len() > self.config.limits.max_rooms {
                    self.close_for(
                        request_id,
                        ErrorCode::ProtocolViolation,
                        "Connect.resume lists more rooms than max_rooms",
                    );
                    return Ok(());
                }
                self.state = State::Authenticating;
                self.connect_request_id = request_id;
                self.events.push_back(ServerEvent::Connect {
                    token: c.token().unwrap_or_default().to_owned(),
                    client_name: c.client_name().unwrap_or_default().to_owned(),
                    client_version: c.client_version().unwrap_or_default().to_owned(),
                    resume,
                });
            }
            (State::Open, _) if body != Body::Connect => self.handle_request(now, request_id, &decoded, &frame),
            (_, _) => {
                let what = if body == Body::Connect {
                    "a second Connect"
                } else {
                    "a request before Connected"
                };
                self.close_for(
                    request_id,
                    ErrorCode::ProtocolViolation,
                    &format!("{what} ({})", codec::body_name(body)),
                );
            }
        }
        Ok(())
    }

    /// Handles a WebSocket text message: the protocol is binary only.
    pub fn handle_text(&mut self) -> ProtocolError {
        self.fail(ProtocolError::TextMessage)
    }

    fn handle_request(&mut self, now: Instant, request_id: u32, frame: &wire::Frame<'_>, raw: &Bytes) {
        match frame.body_type() {
            Body::Subscribe => {
                let Some(s) = frame.body_as_subscribe() else { return };
                let Some(room) = self.check_room(request_id, s.room()) else {
                    return;
                };
                let already = self.has_room(&room) || self.pending_subscribes.iter().any(|(_, r)| **r == *room);
                if !already && self.rooms.len() + self.pending_subscribes.len() >= self.config.limits.max_rooms {
                    self.reply_error(
                        request_id,
                        ErrorCode::TooManyRooms,
                        "max_rooms reached for this connection",
                    );
                    return;
                }
                let recover = (s.recover_epoch() != 0).then(|| Position {
                    epoch: s.recover_epoch(),
                    offset: s.recover_offset(),
                });
                self.remove_pending(request_id);
                self.pending_subscribes
                    .push((request_id, room.clone().into_boxed_str()));
                self.events.push_back(ServerEvent::Subscribe {
                    request_id,
                    room,
                    history: s.history(),
                    recover,
                    presence: s.presence(),
                });
            }
            Body::Unsubscribe => {
                let Some(u) = frame.body_as_unsubscribe() else { return };
                let pending = self
                    .pending_subscribes
                    .iter()
                    .find(|(_, r)| **r == *u.room())
                    .map(|(id, _)| *id);
                if let Some(id) = pending {
                    self.remove_pending(id);
                }
                let was_member = match self.rooms.iter().position(|r| **r == *u.room()) {
                    Some(i) => {
                        self.rooms.swap_remove(i);
                        true
                    }
                    None => false,
                };
                if was_member || pending.is_some() {
                    self.events.push_back(ServerEvent::Unsubscribed {
                        room: u.room().to_owned(),
                    });
                    self.reply(request_id, ErrorCode::Ok, None);
                } else {
                    self.reply_error(request_id, ErrorCode::NotSubscribed, "not subscribed to this room");
                }
            }
            Body::Publish => {
                let Some(p) = frame.body_as_publish() else { return };
                let Some(room) = self.check_room(request_id, p.room()) else {
                    return;
                };
                let payload = p.payload().map(|v| v.bytes()).unwrap_or_default();
                if payload.len() > self.config.limits.max_payload_bytes {
                    let max = self.config.limits.max_payload_bytes;
                    self.reply_error(
                        request_id,
                        ErrorCode::PayloadTooLarge,
                        &format!("payload of {} bytes exceeds {max}", payload.len()),
                    );
                    return;
                }
                if !self.publish_bucket.try_take(now) {
                    self.reply_error(request_id, ErrorCode::RateLimited, "publish rate limit exceeded");
                    self.events.push_back(ServerEvent::RateLimited {
                        request_id,
                        limit: RateLimit::Publish,
                    });
                    return;
                }
                self.events.push_back(ServerEvent::Publish {
                    request_id,
                    room,
                    payload: raw.slice_ref(payload),
                    content_type: p.content_type().map(str::to_owned),
                    volatile: p.volatile(),
                    idempotency_key: p.idempotency_key().map(str::to_owned),
                });
            }
            Body::Typing => {
                let Some(t) = frame.body_as_typing() else { return };
                let Some(room) = self.check_room(request_id, t.room()) else {
                    return;
                };
                if !self.has_room(&room) {
                    self.reply_error(request_id, ErrorCode::NotSubscribed, "typing needs a subscription");
                } else if !self.typing_bucket.try_take(now) {
                    self.reply_error(request_id, ErrorCode::RateLimited, "typing rate limit exceeded");
                    self.events.push_back(ServerEvent::RateLimited {
                        request_id,
                        limit: RateLimit::Typing,
                    });
                } else {
                    self.events.push_back(ServerEvent::Typing {
                        room,
                        active: t.active(),
                    });
                }
            }
            _ => {
                let body = frame.unpack().body;
                self.events.push_back(ServerEvent::Request { request_id, body });
            }
        }
    }

    fn check_room(&mut self, request_id: u32, room: &str) -> Option<String> {
        if valid_room_name(room, self.config.limits.max_room_name_bytes) {
            Some(room.to_owned())
        } else {
            let max = self.config.limits.max_room_name_bytes;
            let message = format!("room names are 1-{max} bytes of [A-Za-z0-9:_-.@/]");
            self.reply_error(request_id, ErrorCode::InvalidRoomName, &message);
            None
        }
    }

    /// Fires timers: handshake deadline, heartbeat pings, idle timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Closed => {}
            State::AwaitingConnect | State::Authenticating => {
                if now >= self.handshake_deadline {
                    self.close(
                        ErrorCode::HandshakeTimeout,
                        "no Connect or authentication within the handshake timeout",
                    );
                }
            }
            State::Open => {
                if now.saturating_duration_since(self.last_received) >= self.config.idle_timeout {
                    self.close(ErrorCode::IdleTimeout, "no traffic within the idle timeout");
                } else if now >= self.next_ping {
                    self.ping_nonce += 1;
                    let ping = with_encoder(|e| e.ping(self.ping_nonce));
                    self.enqueue(ping, true);
                    self.next_ping = now + self.config.heartbeat_interval;
                }
            }
        }
    }

    // ---- commands ---------------------------------------------------------

    /// Accepts an authenticated connection: queues `Connected`.
    pub fn accept(&mut self, now: Instant, accept: &Accept) {
        if self.state != State::Authenticating {
            return;
        }
        let l = &self.config.limits;
        let limits = wire::LimitsT {
            max_frame_bytes: l.decode.max_frame_bytes as u32,
            max_payload_bytes: l.max_payload_bytes as u32,
            max_rooms: l.max_rooms as u32,
            max_room_name_bytes: l.max_room_name_bytes as u32,
            publish_rate_per_sec: l.publish_rate_per_sec,
            publish_burst: l.publish_burst,
            max_outbound_bytes: l.max_outbound_bytes as u32,
        };
        let connected = wire::ConnectedT {
            session_id: Some(accept.session_id.clone()),
            node_id: Some(accept.node_id.clone()),
            user_id: Some(accept.user_id.clone()),
            server_time_ms: accept.server_time_ms,
            heartbeat_interval_ms: self.config.heartbeat_interval.as_millis() as u32,
            limits: Some(Box::new(limits)),
        };
        self.state = State::Open;
        self.last_received = now;
        self.next_ping = now + self.config.heartbeat_interval;
        let request_id = self.connect_request_id;
        let frame = with_encoder(|e| e.body(request_id, wire::BodyT::Connected(Box::new(connected))));
        self.push(frame, false);
    }

    /// Confirms a subscription (`request_id` 0 for a `Connect.resume` room).
    pub fn subscribed(&mut self, request_id: u32, s: &SubscribedRef<'_>) {
        if self.state != State::Open {
            return;
        }
        // A subscribe the client cancelled (unsubscribed while pending) is
        // not confirmed; the application already got `Unsubscribed` for it.
        if request_id != 0 && !self.remove_pending(request_id) {
            return;
        }
        if !self.has_room(s.room) {
            self.rooms.push(s.room.into());
        }
        let frame = with_encoder(|e| e.subscribed(request_id, s));
        self.send(frame, false);
    }

    /// Answers a failed `Connect.resume` entry.
    pub fn resume_failed(&mut self, room: &str, code: ErrorCode, message: &str) {
        let frame = with_encoder(|e| e.error(0, code, message, Some(room)));
        self.send(frame, false);
    }

    /// Acknowledges a publish with its position (offset 0 when volatile).
    pub fn ack(&mut self, request_id: u32, position: Position) {
        if request_id != 0 {
            let frame = with_encoder(|e| e.reply(request_id, ErrorCode::Ok, None, position.epoch, position.offset));
            self.send(frame, false);
        }
    }

    /// Answers a request with a code and optional message.
    pub fn reply(&mut self, request_id: u32, code: ErrorCode, message: Option<&str>) {
        if request_id != 0 {
            let frame = with_encoder(|e| e.reply(request_id, code, message, 0, 0));
            self.send(frame, false);
        }
    }

    /// Answers a request with an error; a failed subscribe is forgotten.
    pub fn reply_error(&mut self, request_id: u32, code: ErrorCode, message: &str) {
        self.remove_pending(request_id);
        self.reply(request_id, code, Some(message));
    }

    /// Queues an encoded application frame (a delivery, an event, a page).
    /// Only an open session takes one: before `Connected` the answer is
    /// [`SendOutcome::NotOpen`]. Enforces the outbound limit: when over it,
    /// queued volatile frames are dropped first; if that is not enough the
    /// session closes as a slow consumer.
    pub fn send(&mut self, frame: Bytes, volatile: bool) -> SendOutcome {
        match self.state {
            State::Open => self.enqueue(frame, volatile),
            State::Closed => SendOutcome::Closed,
            State::AwaitingConnect | State::Authenticating => SendOutcome::NotOpen,
        }
    }

    /// Queues a message of a conflated room (one whose readers want the
    /// latest state, not every step): if an older message of `room` is
    /// still waiting for the transport, the new one takes its place, so a
    /// reader that cannot keep up gets the newest message per room instead
    /// of a growing queue or a slow-consumer close. The reader sees the
    /// offsets it missed as a jump. Otherwise it is [`send`](Self::send).
    pub fn send_conflated(&mut self, frame: Bytes, room: &Arc<str>) -> SendOutcome {
        if self.state != State::Open {
            return self.send(frame, false);
        }
        let max = self.config.limits.max_outbound_bytes;
        if let Some(old) = self
            .outbound
            .iter_mut()
            .find(|o| o.conflate.as_deref().is_some_and(|r| *r == **room))
        {
            let total = self.outbound_bytes - old.frame.len() + frame.len();
            if total <= max {
                self.outbound_bytes = total;
                old.frame = frame;
                return SendOutcome::Replaced;
            }
        }
        let outcome = self.enqueue(frame, false);
        if outcome == SendOutcome::Queued
            && let Some(last) = self.outbound.back_mut()
        {
            last.conflate = Some(room.clone());
        }
        outcome
    }

    /// [`send`](Self::send) in any state but closed: for the session's own
    /// frames (pongs, pings), which a connection gets before it opens too.
    fn enqueue(&mut self, frame: Bytes, volatile: bool) -> SendOutcome {
        if self.state == State::Closed {
            return SendOutcome::Closed;
        }
        let max = self.config.limits.max_outbound_bytes;
        if self.outbound_bytes + frame.len() <= max {
            self.push(frame, volatile);
            return SendOutcome::Queued;
        }
        if volatile {
            return SendOutcome::DroppedVolatile;
        }
        self.drop_volatile();
        if self.outbound_bytes + frame.len() <= max {
            self.push(frame, volatile);
            return SendOutcome::Queued;
        }
        self.close(ErrorCode::SlowConsumer, "outbound queue limit exceeded");
        SendOutcome::SlowConsumer
    }

    /// Sends `GoAway` and closes (shutdown, drain).
    pub fn go_away(&mut self, code: ErrorCode, reason: &str, reconnect_after: Duration) {
        if self.state == State::Closed {
            return;
        }
        let frame = with_encoder(|e| e.go_away(code, reason, reconnect_after.as_millis() as u32));
        self.finish_close(code, reason, frame);
    }

    /// Sends an `Error` frame and closes.
    pub fn close(&mut self, code: ErrorCode, reason: &str) {
        self.close_for(0, code, reason);
    }

    /// Refuses the `Connect` the application is deciding on (for example a
    /// token that does not verify): an `Error` answering that request, then
    /// the close. Outside that wait it is [`close`](Self::close).
    pub fn reject(&mut self, code: ErrorCode, reason: &str) {
        let request_id = if self.state == State::Authenticating {
            self.connect_request_id
        } else {
            0
        };
        self.close_for(request_id, code, reason);
    }

    /// Closes with an `Error` that names the request which caused it (0 for
    /// none).
    fn close_for(&mut self, request_id: u32, code: ErrorCode, reason: &str) {
        if self.state == State::Closed {
            return;
        }
        let frame = with_encoder(|e| e.error(request_id, code, reason, None));
        self.finish_close(code, reason, frame);
    }

    fn finish_close(&mut self, code: ErrorCode, reason: &str, frame: Bytes) {
        // The closing frame must get out even past the outbound limit; what
        // was queued before it still goes first, except volatile traffic.
        self.drop_volatile();
        self.push(frame, false);
        self.state = State::Closed;
        self.close = Some(Box::new((code, reason.to_owned())));
        self.events.push_back(ServerEvent::Closed {
            code,
            reason: reason.to_owned(),
        });
    }

    fn fail(&mut self, err: ProtocolError) -> ProtocolError {
        self.fail_for(0, err)
    }

    fn fail_for(&mut self, request_id: u32, err: ProtocolError) -> ProtocolError {
        self.close_for(request_id, err.code(), &err.to_string());
        err
    }

    /// Queues without the outbound limit: only for `Connected` and the
    /// closing frame. Everything else goes through [`send`](Self::send), so
    /// no client behaviour (pings, requests) grows the queue past the limit
    /// and nothing is queued after the closing frame.
    fn push(&mut self, frame: Bytes, volatile: bool) {
        self.outbound_bytes += frame.len();
        self.outbound.push_back(Outbound {
            frame,
            volatile,
            conflate: None,
        });
    }

    fn drop_volatile(&mut self) {
        let before = self.outbound.len();
        self.outbound.retain(|o| !o.volatile);
        if self.outbound.len() != before {
            self.outbound_bytes = self.outbound.iter().map(|o| o.frame.len()).sum();
        }
    }

    // ---- output -----------------------------------------------------------

    /// The next frame to write. Call only as fast as the transport can write:
    /// frames not yet taken count against the outbound limit.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        let o = self.outbound.pop_front()?;
        self.outbound_bytes -= o.frame.len();
        Some(o.frame)
    }

    /// The next event for the application.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    fn has_room(&self, room: &str) -> bool {
        self.rooms.iter().any(|r| **r == *room)
    }

    /// Forgets a pending subscribe; true if it was pending.
    fn remove_pending(&mut self, request_id: u32) -> bool {
        match self.pending_subscribes.iter().position(|(id, _)| *id == request_id) {
            Some(i) => {
                self.pending_subscribes.swap_remove(i);
                true
            }
            None => false,
        }
    }

    /// Returns the memory of queues that are empty (a burst leaves them with
    /// capacity). Call it for connections that went quiet: an idle session
    /// then holds no heap memory beyond its room names.
    pub fn release_idle_memory(&mut self) {
        if self.outbound.is_empty() && self.outbound.capacity() > 0 {
            self.outbound = VecDeque::new();
        }
        if self.events.is_empty() && self.events.capacity() > 0 {
            self.events = VecDeque::new();
        }
        if self.pending_subscribes.is_empty() && self.pending_subscribes.capacity() > 0 {
            self.pending_subscribes = Vec::new();
        }
    }

    /// Bytes of heap the session's queues hold (their capacity, used or
    /// not): what [`release_idle_memory`](Self::release_idle_memory) gives
    /// back once they are empty.
    pub fn queue_capacity_bytes(&self) -> usize {
        self.outbound.capacity() * std::mem::size_of::<Outbound>()
            + self.events.capacity() * std::mem::size_of::<ServerEvent>()
            + self.pending_subscribes.capacity() * std::mem::size_of::<(u32, Box<str>)>()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Closed => None,
            State::AwaitingConnect | State::Authenticating => Some(self.handshake_deadline),
            State::Open => Some(self.next_ping.min(self.last_received + self.config.idle_timeout)),
        }
    }
}
