//! A shard: one thread running one epoll loop (mio) over its own listener
//! (SO_REUSEPORT) and connections. It owns the rooms that hash to it and the
//! subscriptions of its connections; everything else is a message to another
//! shard (see [`crate::mesh`]).
//!
//! Each loop iteration: poll; read ready sockets into one shard-owned buffer
//! and run their sessions; handle messages from other shards; then write
//! every connection that got frames, all its queued frames in one call.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use herald_protocol::{ErrorCode, ServerSession};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::auth::Verifier;
use crate::config::NodeConfig;
use crate::conn::{self, Conn, Http, State, Ws};
use crate::http::{self, HeadError, Response};
use crate::mesh::{ConnKey, Mesh};
use crate::room::Room;
use crate::stats::{DropReason, ShardStats};
use crate::ws::{self, WsError};

pub(crate) const LISTENER: Token = Token(usize::MAX - 1);
pub(crate) const WAKER: Token = Token(usize::MAX - 2);

/// How often timeouts (heartbeats, idle, handshake, token expiry) are checked.
const TICK: Duration = Duration::from_millis(100);
/// Shard-owned read buffer.
const READ_BUF: usize = 64 * 1024;
/// Largest HTTP request body (server API).
pub(crate) const MAX_BODY_BYTES: usize = 256 * 1024;
/// Time an HTTP request (or the WebSocket upgrade) has to arrive.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a closed session whose socket is full gets to read what is queued
/// (ending with the error and close frames) before it is dropped.
const STUCK_GRACE: Duration = Duration::from_secs(5);
/// Time a closing connection gets to acknowledge our close.
const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// How soon a shard retries sending to a full peer channel.
const BACKLOG_RETRY: Duration = Duration::from_millis(1);
/// Most bytes of pongs and other control replies queued for one connection;
/// beyond it pings are not answered (RFC 6455 allows answering only the
/// latest), so a client cannot grow our memory by pinging without reading.
const MAX_CONTROL_QUEUE: usize = 4 * 1024;
/// Socket writes between two looks at the inbox and the sockets' readiness
/// during a long write pass.
const WRITES_BETWEEN_INBOX: usize = 64;
/// Messages from other shards handled per iteration before sockets get a turn.
const INBOX_BATCH: usize = 4096;

/// What all shards of a node share (read-mostly).
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: NodeConfig,
    /// The session settings every connection shares.
    pub(crate) session: Arc<herald_protocol::ServerConfig>,
    pub(crate) verifier: Verifier,
    pub(crate) stats: Vec<Arc<ShardStats>>,
    pub(crate) accepting: AtomicBool,
    /// Open WebSocket sessions on the node (for `max_connections`).
    pub(crate) ws_open: AtomicUsize,
}

/// A subscriber on this shard.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LocalMember {
    pub(crate) generation: u32,
    pub(crate) presence: bool,
}

pub(crate) struct Shard {
    pub(crate) id: usize,
    pub(crate) shared: Arc<Shared>,
    pub(crate) stats: Arc<ShardStats>,
    poll: Poll,
    listener: Option<TcpListener>,
    pub(crate) conns: Slab<Conn>,
    next_generation: u32,
    pub(crate) mesh: Mesh,
    /// Subscribers of this shard's connections, by room, by slot. Ordered
    /// by slot so fan-out walks the connection slab front to back: in a room
    /// of 5,000 the hash order's random walk missed the cache on every
    /// member (user-space share of node CPU 30 % → 20 %, BENCHMARKS.md).
    pub(crate) local: HashMap<Arc<str>, BTreeMap<u32, LocalMember>>,
    /// Rooms this shard owns.
    pub(crate) owned: HashMap<Arc<str>, Room>,
    /// This shard's connections by user: the members of `user:U` (every
    /// connection of U is, without joining) and the targets of notifications.
    pub(crate) user_conns: HashMap<Arc<str>, Vec<u32>>,
    pub(crate) epoch_base: u64,
    /// Server API requests waiting for every shard's answer.
    pub(crate) gathers: HashMap<ConnKey, crate::api::Gather>,
    events: Events,
    read_buf: Box<[u8]>,
    to_read: Vec<usize>,
    pub(crate) to_write: Vec<usize>,
    draining: Option<Instant>,
    accept_paused: bool,
    /// A peer shard's channel is full: client input waits.
    backlog: bool,
    /// A write pass sent this shard messages: handle them before sleeping.
    sent_to_self: bool,
    /// This shard's share of `max_http_connections`.
    max_http_connections: usize,
    /// The answer to a connection beyond that share, encoded once.
    busy_response: Box<[u8]>,
    /// Where one write call's frames are assembled (see `conn::take_batch`).
    write_buf: Vec<u8>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("id", &self.id)
            .field("conns", &self.conns.len())
            .finish_non_exhaustive()
    }
}

impl Shard {
    pub(crate) fn new(id: usize, shared: Arc<Shared>, poll: Poll, listener: TcpListener, mesh: Mesh) -> Self {
        let stats = shared.stats[id].clone();
        let mut shard = Self {
            id,
            stats,
            poll,
            listener: Some(listener),
            conns: Slab::new(),
            next_generation: 0,
            mesh,
            local: HashMap::new(),
            owned: HashMap::new(),
            user_conns: HashMap::new(),
            epoch_base: epoch_base(crate::unix_ms(), id),
            gathers: HashMap::new(),
            events: Events::with_capacity(1024),
            read_buf: vec![0; READ_BUF].into_boxed_slice(),
            to_read: Vec::new(),
            to_write: Vec::new(),
            draining: None,
            accept_paused: false,
            backlog: false,
            sent_to_self: false,
            max_http_connections: shared.config.max_http_connections.div_ceil(shared.stats.len().max(1)),
            busy_response: Response::error(
                503,
                "too_many_connections",
                "the node holds its limit of connections that are not WebSocket sessions; retry later",
            )
            .encode(false)
            .into(),
            write_buf: Vec::new(),
            shared,
        };
        if let Some(l) = shard.listener.as_mut()
            && let Err(e) = shard.poll.registry().register(l, LISTENER, Interest::READABLE)
        {
            tracing::error!(shard = id, error = %e, "cannot register listener");
        }
        shard
    }

    /// Runs until drained after a shutdown message.
    pub(crate) fn run(mut self) {
        let mut next_tick = Instant::now() + TICK;
        let mut busy = false;
        loop {
            let now = Instant::now();
            let timeout = if busy || (!self.backlog && !self.to_read.is_empty()) || !self.to_write.is_empty() {
                Duration::ZERO
            } else if self.backlog {
                // Nothing wakes us when a full peer channel drains: retry soon.
                BACKLOG_RETRY.min(next_tick.saturating_duration_since(now))
            } else {
                next_tick.saturating_duration_since(now)
            };
            if !self.poll_events(timeout) {
                return;
            }
            busy = self.handle_inbox(INBOX_BATCH) == INBOX_BATCH;
            // While other shards' channels are full, stop taking client input
            // so the pressure reaches clients as TCP back-pressure.
            if !self.backlog {
                self.read_ready();
            }
            // Hand publishes and deliveries to other shards before writing
            // sockets, so they work in parallel with this shard's writes
            // instead of waiting for them.
            let early = self.mesh.flush();
            self.write_ready();
            let flushed = self.mesh.flush();
            self.backlog = flushed.backlog;
            busy |= early.to_self || flushed.to_self || std::mem::take(&mut self.sent_to_self);
            let now = Instant::now();
            if now >= next_tick {
                self.tick(now);
                next_tick = now + TICK;
            }
            if let Some(deadline) = self.draining
                && (self.conns.is_empty() || now >= deadline)
            {
                if !self.conns.is_empty() {
                    tracing::warn!(
                        shard = self.id,
                        connections = self.conns.len(),
                        "shutdown grace expired with connections open"
                    );
                }
                return;
            }
        }
    }

    /// Waits up to `timeout` for readiness and queues what it reports:
    /// accepts, reads, writes. False if polling failed (the shard stops).
    fn poll_events(&mut self, timeout: Duration) -> bool {
        let mut events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        let polled = self.poll.poll(&mut events, Some(timeout));
        if let Err(e) = polled
            && e.kind() != io::ErrorKind::Interrupted
        {
            tracing::error!(shard = self.id, error = %e, "poll failed; shard stops");
            self.events = events;
            return false;
        }
        for ev in events.iter() {
            match ev.token() {
                LISTENER => self.accept(),
                WAKER => {}
                Token(slot) => {
                    let Some(c) = self.conns.get_mut(slot) else { continue };
                    if (ev.is_readable() || ev.is_read_closed() || ev.is_error()) && !c.queued_read {
                        c.queued_read = true;
                        self.to_read.push(slot);
                    }
                    if ev.is_writable() || ev.is_error() {
                        c.blocked = false;
                        self.mark_write(slot);
                    }
                }
            }
        }
        self.events = events;
        true
    }

    fn accept(&mut self) {
        loop {
            let Some(listener) = self.listener.as_ref() else { return };
            match listener.accept() {
                Ok((sock, _peer)) => self.add_conn(sock),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and friends: retry on the next tick instead of
                    // spinning; pending connections wait in the backlog.
                    tracing::warn!(shard = self.id, error = %e, "accept failed; pausing accepts");
                    self.accept_paused = true;
                    return;
                }
            }
        }
    }

    fn add_conn(&mut self, mut sock: TcpStream) {
        let ws = usize::try_from(self.stats.ws_sessions.load(Relaxed)).unwrap_or(0);
        if self.conns.len().saturating_sub(ws) >= self.max_http_connections {
            // Best effort: a fresh socket's send buffer takes this at once;
            // if not, the client sees the close alone.
            let _ = sock.write(&self.busy_response);
            self.stats.dropped(DropReason::HttpLimit);
            return;
        }
        let _ = sock.set_nodelay(true);
        let entry = self.conns.vacant_entry();
        let slot = entry.key();
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut sock, Token(slot), Interest::READABLE | Interest::WRITABLE)
        {
            tracing::warn!(error = %e, "cannot register connection");
            return;
        }
        self.next_generation = self.next_generation.wrapping_add(1);
        entry.insert(Conn::new(sock, self.next_generation, Instant::now() + HTTP_TIMEOUT));
        ShardStats::gauge(&self.stats.connections, 1);
    }

    pub(crate) fn key(&self, slot: usize) -> Option<ConnKey> {
        self.conns.get(slot).map(|c| ConnKey {
            slot: slot as u32,
            generation: c.generation,
        })
    }

    /// The slot of a connection if it is still the same connection.
    pub(crate) fn slot_of(&self, key: ConnKey) -> Option<usize> {
        let slot = key.slot as usize;
        (self.conns.get(slot)?.generation == key.generation).then_some(slot)
    }

    pub(crate) fn mark_write(&mut self, slot: usize) {
        if let Some(c) = self.conns.get_mut(slot)
            && !c.queued_write
        {
            c.queued_write = true;
            self.to_write.push(slot);
        }
    }

    fn read_ready(&mut self) {
        let slots = std::mem::take(&mut self.to_read);
        for slot in slots {
            self.read_conn(slot);
        }
    }

    fn read_conn(&mut self, slot: usize) {
        let mut buf = std::mem::take(&mut self.read_buf);
        let result = match self.conns.get_mut(slot) {
            Some(c) => {
                c.queued_read = false;
                c.sock.read(&mut buf)
            }
            None => {
                self.read_buf = buf;
                return;
            }
        };
        match result {
            Ok(0) => self.remove(slot),
            Ok(n) => {
                ShardStats::add(&self.stats.bytes_in, n as u64);
                if n == buf.len() {
                    // There may be more; read again next iteration (fairness).
                    self.requeue_read(slot);
                }
                let leftover = {
                    let Some(c) = self.conns.get_mut(slot) else {
                        self.read_buf = buf;
                        return;
                    };
                    if c.inbuf.is_empty() {
                        None
                    } else {
                        c.inbuf.extend_from_slice(&buf[..n]);
                        Some(std::mem::take(&mut c.inbuf))
                    }
                };
                match leftover {
                    None => {
                        let used = self.input(slot, &mut buf[..n]);
                        self.keep_unparsed(slot, &buf[used..n]);
                    }
                    Some(mut data) => {
                        let used = self.input(slot, &mut data);
                        data.drain(..used);
                        if let Some(c) = self.conns.get_mut(slot) {
                            c.inbuf = data;
                        }
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => self.requeue_read(slot),
            Err(_) => self.remove(slot),
        }
        self.read_buf = buf;
    }

    fn requeue_read(&mut self, slot: usize) {
        if let Some(c) = self.conns.get_mut(slot)
            && !c.queued_read
        {
            c.queued_read = true;
            self.to_read.push(slot);
        }
    }

    fn keep_unparsed(&mut self, slot: usize, rest: &[u8]) {
        if let Some(c) = self.conns.get_mut(slot)
            && !rest.is_empty()
        {
            c.inbuf.extend_from_slice(rest);
        }
    }

    /// Re-runs input parsing over bytes a connection has buffered (after an
    /// API answer, pipelined requests may be waiting).
    pub(crate) fn reparse(&mut self, slot: usize) {
        let Some(c) = self.conns.get_mut(slot) else { return };
        if c.inbuf.is_empty() {
            return;
        }
        let mut data = std::mem::take(&mut c.inbuf);
        let used = self.input(slot, &mut data);
        data.drain(..used);
        if let Some(c) = self.conns.get_mut(slot) {
            c.inbuf = data;
        }
    }

    /// Parses and handles as much of `data` as forms complete units; returns
    /// the bytes used. The caller keeps the rest for the next read.
    fn input(&mut self, slot: usize, data: &mut [u8]) -> usize {
        let mut used = 0;
        loop {
            let Some(c) = self.conns.get_mut(slot) else {
                return data.len();
            };
            match &mut c.state {
                State::Closing => return data.len(),
                // After a response that closes the connection, ignore the rest.
                State::Http(h) if h.close_after => return data.len(),
                State::Http(h) => {
                    if h.waiting {
                        // Pipelined input waits for the current answer, within bounds.
                        if data.len() - used > http::MAX_HEAD_BYTES + MAX_BODY_BYTES {
                            self.remove(slot);
                            return data.len();
                        }
                        return used;
                    }
                    match self.http_input(slot, &data[used..]) {
                        Some(n) if n > 0 => used += n,
                        _ => return used,
                    }
                }
                State::Ws(_) => {
                    used += self.ws_input(slot, &mut data[used..]);
                    return used;
                }
            }
        }
    }

    /// Handles one HTTP request if complete; returns the bytes it used (0 =
    /// need more), None if the connection is gone.
    fn http_input(&mut self, slot: usize, data: &[u8]) -> Option<usize> {
        let head = match http::parse_head(data) {
            Ok(Some(h)) => h,
            Ok(None) => return Some(0),
            Err(e) => {
                let status = match e {
                    HeadError::TooLarge => 431,
                    HeadError::Chunked => 411,
                    HeadError::Malformed => 400,
                };
                self.respond(slot, &Response::error(status, "bad_request", &e.to_string()), false);
                return None;
            }
        };
        if head.ws_key.is_some() {
            // A refused upgrade closes the connection: nothing after it counts.
            return self.upgrade(slot, &head).then_some(head.head_len);
        }
        if head.content_length > MAX_BODY_BYTES {
            let msg = format!("request body larger than {MAX_BODY_BYTES} bytes");
            self.respond(slot, &Response::error(413, "payload_too_large", &msg), false);
            return None;
        }
        let total = head.head_len + head.content_length;
        if data.len() < total {
            // curl and others wait (1 s) for this before sending a large body.
            if head.expect_continue
                && let Some(c) = self.conns.get_mut(slot)
                && let State::Http(h) = &mut c.state
                && !h.continue_sent
            {
                h.continue_sent = true;
                c.outbuf.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                self.mark_write(slot);
            }
            return Some(0);
        }
        ShardStats::add(&self.stats.http_requests, 1);
        let keep_alive = head.keep_alive;
        if let Some(State::Http(h)) = self.conns.get_mut(slot).map(|c| &mut c.state) {
            h.keep_alive = keep_alive;
            h.continue_sent = false;
        }
        let body = &data[head.head_len..total];
        if let Some(resp) = self.api(slot, &head, body) {
            self.respond(slot, &resp, keep_alive);
        }
        Some(total)
    }

    /// Queues an HTTP response; closes afterwards unless `keep_alive`.
    pub(crate) fn respond(&mut self, slot: usize, resp: &Response, keep_alive: bool) {
        let draining = self.draining.is_some();
        let Some(c) = self.conns.get_mut(slot) else { return };
        let keep_alive = keep_alive && !draining;
        c.outbuf.extend_from_slice(&resp.encode(keep_alive));
        c.deadline = Instant::now() + HTTP_TIMEOUT;
        if let State::Http(h) = &mut c.state {
            h.waiting = false;
            h.close_after = !keep_alive;
        }
        self.mark_write(slot);
    }

    /// Answers a WebSocket upgrade; false if it was refused (the connection
    /// closes after the answer).
    fn upgrade(&mut self, slot: usize, head: &http::RequestHead<'_>) -> bool {
        if head.method != "GET" || head.path != "/ws" {
            let resp = Response::error(404, "not_found", "the WebSocket endpoint is GET /ws");
            self.respond(slot, &resp, false);
            return false;
        }
        if head.ws_version != Some("13") {
            let resp = Response::error(426, "upgrade_required", "Sec-WebSocket-Version must be 13");
            self.respond(slot, &resp, false);
            return false;
        }
        let now = Instant::now();
        let shared = self.shared.clone();
        let Some(c) = self.conns.get_mut(slot) else {
            return false;
        };
        let Some(key) = head.ws_key else { return false };
        http::write_upgrade_response(&mut c.outbuf, key);
        let mut session = ServerSession::new(shared.session.clone(), now);
        let open = shared.ws_open.fetch_add(1, Relaxed) + 1;
        if open > shared.config.max_connections {
            session.close(ErrorCode::ConnectionLimit, "node connection limit reached");
            self.stats.dropped(DropReason::ConnectionLimit);
        }
        c.state = State::Ws(Box::new(Ws::new(session)));
        ShardStats::gauge(&self.stats.ws_sessions, 1);
        self.mark_write(slot);
        true
    }

    /// Handles the complete WebSocket frames at the start of `data`; returns
    /// the bytes used.
    fn ws_input(&mut self, slot: usize, data: &mut [u8]) -> usize {
        let max = self.shared.config.session.limits.decode.max_frame_bytes;
        let mut used = 0;
        while used < data.len() {
            let head = match ws::parse_head(&data[used..], max) {
                Ok(Some(h)) if h.frame_len() <= data.len() - used => h,
                Ok(_) => break,
                Err(e) => {
                    self.ws_violation(slot, &e);
                    return data.len();
                }
            };
            let payload = &mut data[used + head.header_len..used + head.frame_len()];
            ws::unmask(payload, head.mask);
            used += head.frame_len();
            if !self.ws_frame(slot, head.fin, head.opcode, payload) {
                return data.len();
            }
        }
        used
    }

    /// One unmasked frame; false if the connection is closing.
    fn ws_frame(&mut self, slot: usize, fin: bool, opcode: u8, payload: &[u8]) -> bool {
        let max = self.shared.config.session.limits.decode.max_frame_bytes;
        let Some(c) = self.conns.get_mut(slot) else {
            return false;
        };
        let State::Ws(w) = &mut c.state else { return false };
        match opcode {
            ws::opcode::BINARY | ws::opcode::TEXT if w.fragment_opcode.is_none() => {
                if fin {
                    self.ws_message(slot, opcode, payload);
                } else {
                    w.fragment_opcode = Some(opcode);
                    w.fragments = payload.to_vec();
                }
            }
            ws::opcode::CONTINUATION if w.fragment_opcode.is_some() => {
                if w.fragments.len() + payload.len() > max {
                    let e = WsError::TooLarge {
                        size: (w.fragments.len() + payload.len()) as u64,
                        max,
                    };
                    self.ws_violation(slot, &e);
                    return false;
                }
                w.fragments.extend_from_slice(payload);
                if fin {
                    let whole = std::mem::take(&mut w.fragments);
                    let op = w.fragment_opcode.take().unwrap_or(ws::opcode::BINARY);
                    self.ws_message(slot, op, &whole);
                }
            }
            ws::opcode::PING => {
                if c.outbuf.len() < MAX_CONTROL_QUEUE {
                    c.outbuf.extend_from_slice(&ws::server_frame(ws::opcode::PONG, payload));
                    self.mark_write(slot);
                }
            }
            ws::opcode::PONG => {}
            ws::opcode::CLOSE => {
                // The client is leaving: answer its close and stop.
                if !w.close_sent {
                    w.close_sent = true;
                    c.outbuf.extend_from_slice(&ws::close_frame(ws::close::NORMAL, ""));
                }
                self.start_closing(slot);
                return false;
            }
            _ => {
                self.ws_violation(slot, &WsError::Reserved);
                return false;
            }
        }
        self.conns.get(slot).is_some_and(|c| matches!(c.state, State::Ws(_)))
    }

    fn ws_message(&mut self, slot: usize, opcode: u8, payload: &[u8]) {
        let now = Instant::now();
        let Some(w) = self.conns.get_mut(slot).and_then(Conn::ws_mut) else {
            return;
        };
        ShardStats::add(&self.stats.frames_in, 1);
        if opcode == ws::opcode::TEXT {
            let _ = w.session.handle_text();
        } else if let Err(e) = w.session.handle_frame(now, bytes::Bytes::copy_from_slice(payload)) {
            if e.code().0 >= 200 {
                self.stats.dropped(DropReason::BadFrame);
            }
            tracing::debug!(shard = self.id, slot, error = %e, "protocol error");
        }
        self.session_events(slot);
    }

    /// A WebSocket-level violation: say why in the session's error frame and
    /// in the close frame.
    fn ws_violation(&mut self, slot: usize, e: &WsError) {
        self.stats.dropped(DropReason::BadFrame);
        let code = match e {
            WsError::TooLarge { .. } => ErrorCode::FrameTooLarge,
            _ => ErrorCode::ProtocolViolation,
        };
        if let Some(w) = self.conns.get_mut(slot).and_then(Conn::ws_mut) {
            w.session.close(code, &e.to_string());
        }
        self.session_events(slot);
        self.mark_write(slot);
    }

    /// Handles up to `max` messages from other shards; returns how many.
    fn handle_inbox(&mut self, max: usize) -> usize {
        let mut handled = 0;
        while handled < max {
            let Some(msg) = self.mesh.recv() else { break };
            ShardStats::gauge(&self.stats.queue_depth, -1);
            self.on_message(msg);
            handled += 1;
        }
        handled
    }

    /// One pass over the connections that have something to write. Frames
    /// queued during the pass (for connections it has already written) wait
    /// for the next loop iteration, so timers and accepts still get turns
    /// under continuous load.
    fn write_ready(&mut self) {
        let slots = std::mem::take(&mut self.to_write);
        for (i, slot) in slots.into_iter().enumerate() {
            self.write_conn(slot);
            if i % WRITES_BETWEEN_INBOX == WRITES_BETWEEN_INBOX - 1 {
                self.between_writes();
            }
        }
    }

    /// Input taken in the middle of a long write pass (thousands of
    /// sockets): other shards' messages, and, unless a peer channel is
    /// full, client frames. A message published now reaches the
    /// connections the pass has not written yet in this same pass, instead
    /// of waiting for a whole pass to end and then its place in the next.
    fn between_writes(&mut self) {
        let mut handled = self.handle_inbox(INBOX_BATCH) > 0;
        if !self.backlog && self.poll_events(Duration::ZERO) && !self.to_read.is_empty() {
            ShardStats::add(&self.stats.write_pass_reads, self.to_read.len() as u64);
            self.read_ready();
            handled = true;
        }
        if handled {
            let flushed = self.mesh.flush();
            self.backlog |= flushed.backlog;
            self.sent_to_self |= flushed.to_self;
        }
    }

    fn write_conn(&mut self, slot: usize) {
        let Some(c) = self.conns.get_mut(slot) else { return };
        c.queued_write = false;
        if c.blocked {
            return;
        }
        let session = match &mut c.state {
            State::Ws(w) => Some(&mut w.session),
            _ => None,
        };
        if !conn::flush(
            &mut c.sock,
            &mut c.outbuf,
            session,
            &mut c.blocked,
            &self.stats,
            &mut self.write_buf,
        ) {
            self.remove(slot);
            return;
        }
        if c.blocked {
            return;
        }
        match &mut c.state {
            State::Ws(w) => {
                if let Some((code, reason)) = w.session.close_reason()
                    && !w.close_sent
                {
                    w.close_sent = true;
                    let frame = ws::close_frame(crate::close_code(code), reason);
                    if w.stuck_until.is_none() {
                        count_close(&self.stats, code);
                    }
                    c.outbuf.extend_from_slice(&frame);
                    self.start_closing(slot);
                    self.mark_write(slot);
                }
            }
            State::Http(h) => {
                if h.close_after {
                    self.start_closing(slot);
                }
            }
            State::Closing => {
                if c.outbuf.is_empty() {
                    let _ = c.sock.shutdown(Shutdown::Write);
                }
            }
        }
    }

    /// Stops output after what is queued and waits briefly for the peer.
    fn start_closing(&mut self, slot: usize) {
        let was_ws = matches!(self.conns.get(slot).map(|c| &c.state), Some(State::Ws(_)));
        if was_ws {
            self.leave_all(slot);
        }
        let Some(c) = self.conns.get_mut(slot) else { return };
        if was_ws {
            self.shared.ws_open.fetch_sub(1, Relaxed);
            ShardStats::gauge(&self.stats.ws_sessions, -1);
        }
        c.state = State::Closing;
        c.deadline = Instant::now() + CLOSE_LINGER;
        if c.outbuf.is_empty() {
            let _ = c.sock.shutdown(Shutdown::Write);
        }
        self.mark_write(slot);
    }

    /// Forgets a connection at once.
    pub(crate) fn remove(&mut self, slot: usize) {
        if !self.conns.contains(slot) {
            return;
        }
        if matches!(self.conns.get(slot).map(|c| &c.state), Some(State::Ws(_))) {
            self.leave_all(slot);
            self.shared.ws_open.fetch_sub(1, Relaxed);
            ShardStats::gauge(&self.stats.ws_sessions, -1);
        }
        let key = self.key(slot);
        let mut c = self.conns.remove(slot);
        let _ = self.poll.registry().deregister(&mut c.sock);
        if let Some(key) = key {
            self.gathers.remove(&key);
        }
        ShardStats::gauge(&self.stats.connections, -1);
    }

    fn tick(&mut self, now: Instant) {
        if self.accept_paused && self.draining.is_none() {
            self.accept_paused = false;
            self.accept();
        }
        let now_secs = crate::unix_secs();
        let mut expired = Vec::new();
        let mut timed_out = Vec::new();
        let mut stuck = Vec::new();
        for (slot, c) in self.conns.iter_mut() {
            match &mut c.state {
                // Closed (e.g. as a slow consumer) but its socket is full: the
                // error and close frames wait behind what the peer has not
                // read. Leave its rooms now; give it STUCK_GRACE to read
                // them, then drop the connection.
                State::Ws(w) if c.blocked && w.session.close_reason().is_some() && !w.close_sent => {
                    match w.stuck_until {
                        None => {
                            w.stuck_until = Some(now + STUCK_GRACE);
                            stuck.push(slot);
                        }
                        Some(t) if t <= now => expired.push(slot),
                        Some(_) => {}
                    }
                }
                State::Ws(w) => {
                    // The same leeway as at Connect, so clock skew between
                    // the issuer and the node does not cut sessions short.
                    if let Some(exp) = w.identity.as_ref().and_then(|i| i.expires_at)
                        && exp.saturating_add(crate::auth::LEEWAY_SECS) <= now_secs
                    {
                        w.session.close(ErrorCode::TokenExpired, "token expired");
                        timed_out.push(slot);
                    } else if w.session.poll_timeout().is_some_and(|t| t <= now) {
                        w.session.handle_timeout(now);
                        timed_out.push(slot);
                    } else if !c.queued_write && c.outbuf.is_empty() {
                        // Quiet since the last tick: hand back burst capacity.
                        w.session.release_idle_memory();
                        if w.fragments.is_empty() && w.fragments.capacity() > 0 {
                            w.fragments = Vec::new();
                        }
                    }
                }
                State::Http(h) => {
                    if !h.waiting && c.deadline <= now {
                        expired.push(slot);
                    }
                }
                State::Closing => {
                    if c.deadline <= now {
                        expired.push(slot);
                    }
                }
            }
        }
        for slot in timed_out {
            self.session_events(slot);
            self.mark_write(slot);
        }
        for slot in stuck {
            if let Some((code, _)) = self
                .conns
                .get_mut(slot)
                .and_then(Conn::ws_mut)
                .and_then(|w| w.session.close_reason())
            {
                count_close(&self.stats, code);
            }
            self.leave_all(slot);
        }
        for slot in expired {
            self.remove(slot);
        }
    }

    /// Stop accepting and tell every client to go away.
    pub(crate) fn begin_drain(&mut self) {
        if self.draining.is_some() {
            return;
        }
        let grace = self.shared.config.shutdown_grace;
        let reconnect_after = self.shared.config.reconnect_after;
        self.draining = Some(Instant::now() + grace);
        self.shared.accepting.store(false, Relaxed);
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        tracing::info!(
            shard = self.id,
            connections = self.conns.len(),
            "draining: sending GoAway"
        );
        let slots: Vec<usize> = self.conns.iter().map(|(s, _)| s).collect();
        for slot in slots {
            let Some(c) = self.conns.get_mut(slot) else { continue };
            match &mut c.state {
                State::Ws(w) => {
                    w.session
                        .go_away(ErrorCode::ServerShutdown, "node shutting down", reconnect_after);
                    self.session_events(slot);
                    self.mark_write(slot);
                }
                State::Http(Http { waiting: false, .. }) if c.outbuf.is_empty() => self.remove(slot),
                _ => {}
            }
        }
    }
}

/// The epoch of every room a shard run owns. It must differ across restarts
/// of this in-memory node (and between shards), so a client resuming after a
/// restart is told `recovered = false`; and it must stay below 2^53 so the
/// JSON API's numbers survive JavaScript's `JSON.parse` (start ms × 1,024 +
/// shard: ~1.8e15 until the year 2248).
fn epoch_base(start_ms: u64, shard: usize) -> u64 {
    start_ms * 1024 + (shard as u64 % 1024)
}

fn count_close(stats: &ShardStats, code: ErrorCode) {
    match code {
        ErrorCode::SlowConsumer => stats.dropped(DropReason::SlowConsumer),
        ErrorCode::IdleTimeout | ErrorCode::HandshakeTimeout => stats.dropped(DropReason::Timeout),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::epoch_base;

    #[test]
    fn epochs_differ_by_shard_and_start_and_fit_in_a_javascript_number() {
        let now = 1_795_443_134_157; // 2026-11
        assert_ne!(epoch_base(now, 0), epoch_base(now, 1));
        assert_ne!(epoch_base(now, 0), epoch_base(now + 1, 0));
        let year_2200_ms = 7_258_118_400_000;
        assert!(epoch_base(year_2200_ms, 1023) < 1 << 53);
    }
}
