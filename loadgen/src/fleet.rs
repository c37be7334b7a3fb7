//! Every connection of one worker on one epoll instance (mio): connect,
//! upgrade, handshake, join rooms, then send what the scenario says and
//! turn what arrives into [`Ev`]s. One thread, no per-connection tasks, so
//! the generator's own CPU per delivery stays small next to the target's.
//!
//! On an `sse://` run the connections that read are SSE streams (one GET,
//! rooms in its query, then events until the target closes); those that
//! publish are Herald WebSocket connections to the same node.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::alarm::Alarm;
use crate::inflight::InFlight;
use crate::sse;
use crate::target::{Kind, Target};
use crate::wire::{self, Incoming, Stamp};

/// Bytes one connection may have waiting to be written.
pub const MAX_QUEUED: usize = 8 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Connecting,
    Upgrading,
    Handshaking,
    Joining,
    Ready,
    Dead,
}

#[derive(Debug)]
pub struct Conn {
    /// `None` when the socket could not even be created.
    sock: Option<TcpStream>,
    pub state: State,
    target: usize,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    /// Rooms to join at connect (indices into the scenario's rooms).
    pub rooms: Vec<u32>,
    pending_joins: usize,
    /// Per room: the last order key seen (room sequence or target offset).
    pub last: Vec<(u32, u64)>,
    pub user: u64,
    /// When this connection was scheduled to open (connect latency base).
    pub due: Instant,
    next_request: u32,
    /// Publishes awaiting their ack, with their scheduled send times.
    acks: InFlight,
    /// An SSE stream's event parser (`None`: a WebSocket connection).
    sse: Option<sse::Parser>,
}

/// What happened on a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ev {
    Ready {
        conn: usize,
        at: Instant,
    },
    Failed {
        conn: usize,
        reason: String,
    },
    Delivery {
        conn: usize,
        room: u32,
        order: Option<u64>,
        stamp: Stamp,
        /// When the bytes were read (Unix ns), taken per socket read so a
        /// long batch of ready sockets does not add to the latency.
        recv_unix_ns: u64,
    },
    /// A publish was answered. `latency_us`: read time of the answer
    /// minus the publish's scheduled send time, when the publish was still
    /// in the connection's in-flight table.
    Acked {
        ok: bool,
        reason: Option<String>,
        latency_us: Option<u64>,
    },
    /// A publish was dropped from its connection's full in-flight table
    /// (more than `inflight::MAX_IN_FLIGHT` awaiting their acks): its ack
    /// will carry no latency.
    AckUntracked,
    Presence,
    Typing,
    Error(String),
}

#[derive(Debug)]
pub struct Fleet {
    poll: Poll,
    /// Ends a poll at the next due send with sub-millisecond precision.
    alarm: Alarm,
    events: Events,
    pub conns: Vec<Conn>,
    targets: Vec<Target>,
    kind: Kind,
    sources: Vec<IpAddr>,
    room_prefix: String,
    /// Room names by index, built once.
    room_names: Vec<String>,
    presence: bool,
    mask: u32,
    read_buf: Vec<u8>,
    /// Connections neither ready nor dead (kept as a count: the connect
    /// loop asks for it once per connection it opens).
    pending: usize,
    /// Time of the socket read being processed (Unix ns).
    read_at_ns: u64,
    /// When `expire` last scanned every connection.
    last_expiry_scan: Option<Instant>,
    pub out: Vec<Ev>,
}

impl Fleet {
    pub fn new(
        targets: Vec<Target>,
        sources: Vec<IpAddr>,
        room_prefix: String,
        rooms: usize,
        presence: bool,
    ) -> io::Result<Self> {
        let kind = targets.first().map_or(Kind::Herald, |t| t.kind);
        let poll = Poll::new()?;
        let alarm = Alarm::new(poll.registry())?;
        Ok(Self {
            poll,
            alarm,
            events: Events::with_capacity(256),
            conns: Vec::new(),
            room_names: (0..rooms).map(|r| format!("{room_prefix}{r}")).collect(),
            targets,
            kind,
            sources,
            room_prefix,
            presence,
            mask: 0x1234_5678,
            read_buf: vec![0; 64 * 1024],
            pending: 0,
            read_at_ns: 0,
            last_expiry_scan: None,
            out: Vec::new(),
        })
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn room_name(&self, r: u32) -> &str {
        self.room_names.get(r as usize).map_or("", String::as_str)
    }

    /// Starts connection number `global` to `target` (an index into the
    /// targets, which the plan chooses); its source address follows from
    /// the number, so workers spread the same way. `stream`: an SSE stream
    /// of `rooms` rather than a WebSocket connection.
    pub fn open(
        &mut self,
        global: usize,
        target: usize,
        user: u64,
        rooms: Vec<u32>,
        due: Instant,
        stream: bool,
    ) -> usize {
        let i = self.conns.len();
        let target = target.min(self.targets.len().saturating_sub(1));
        let source = (!self.sources.is_empty()).then(|| self.sources[global % self.sources.len()]);
        let (sock, state) = match connect(self.targets[target].addr, source) {
            Ok(s) => (Some(s), State::Connecting),
            Err(e) => {
                self.out.push(Ev::Failed {
                    conn: i,
                    reason: connect_reason(&e),
                });
                (None, State::Dead)
            }
        };
        let mut c = Conn {
            sock,
            state,
            target,
            inbuf: Vec::new(),
            out: Vec::new(),
            rooms,
            pending_joins: 0,
            last: Vec::new(),
            user,
            due,
            next_request: wire::PUBLISH_BASE,
            acks: InFlight::default(),
            sse: stream.then(sse::Parser::default),
        };
        if let Some(sock) = c.sock.as_mut()
            && let Err(e) = self
                .poll
                .registry()
                .register(sock, Token(i), Interest::READABLE | Interest::WRITABLE)
        {
            self.out.push(Ev::Failed {
                conn: i,
                reason: format!("register: {e}"),
            });
            c.state = State::Dead;
        }
        if c.state != State::Dead {
            self.pending += 1;
        }
        self.conns.push(c);
        i
    }

    pub fn alive(&self) -> usize {
        self.conns.iter().filter(|c| c.state == State::Ready).count()
    }

    pub fn in_progress(&self) -> usize {
        self.pending
    }

    /// Fails connections still not ready `timeout` after they were due
    /// (scans at most every 100 ms).
    pub fn expire(&mut self, now: Instant, timeout: Duration) {
        if self.pending == 0
            || self
                .last_expiry_scan
                .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_millis(100))
        {
            return;
        }
        self.last_expiry_scan = Some(now);
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            if !matches!(c.state, State::Ready | State::Dead) && now.saturating_duration_since(c.due) > timeout {
                let reason = match (c.state, c.sse.is_some()) {
                    (State::Connecting, _) => "connect timeout",
                    (State::Upgrading, true) => "sse answer timeout",
                    (State::Upgrading, false) => "upgrade timeout",
                    (State::Handshaking, _) => "handshake timeout",
                    _ => "join timeout",
                };
                self.fail(i, reason.into());
            }
        }
    }

    /// Publishes `payload` to `room` on connection `i`; `sched_unix_ns` is
    /// when the schedule wanted it sent (the stamp's time), from which its
    /// ack's latency is counted. False: not sent.
    pub fn publish(&mut self, i: usize, room: u32, payload: &[u8], sched_unix_ns: u64) -> bool {
        let Some(c) = self.conns.get_mut(i) else { return false };
        if c.state != State::Ready {
            return false;
        }
        let id = c.next_request;
        c.next_request = c.next_request.wrapping_add(1).max(wire::PUBLISH_BASE);
        let name = self.room_names.get(room as usize).map_or("", String::as_str);
        let frame = wire::publish(self.kind, id, name, payload);
        if !self.send(i, frame) {
            return false;
        }
        if self.conns[i].acks.push(id, sched_unix_ns) {
            self.out.push(Ev::AckUntracked);
        }
        true
    }

    /// Publishes still awaiting their ack, over every connection.
    pub fn awaiting_acks(&self) -> usize {
        self.conns.iter().map(|c| c.acks.len()).sum()
    }

    /// Forgets every publish awaiting its ack (at the end of a step's
    /// drain window: an ack that comes later must not add the pause
    /// between steps to the next step's figures). Returns how many.
    pub fn forget_acks(&mut self) -> usize {
        self.conns.iter_mut().map(|c| c.acks.clear()).sum()
    }

    pub fn typing(&mut self, i: usize, room: u32) {
        if self.conns.get(i).is_some_and(|c| c.state == State::Ready) {
            let frame = wire::typing(self.kind, self.room_name(room));
            self.send(i, frame);
        }
    }

    /// Leaves and re-joins `room` (presence churn); the join's answer is
    /// not waited for.
    pub fn churn(&mut self, i: usize, room: u32) {
        if self.conns.get(i).is_some_and(|c| c.state == State::Ready) {
            let name = self.room_name(room).to_owned();
            let id = wire::JOIN_BASE + room % 1024;
            let leave = wire::leave(self.kind, id, &name);
            self.send(i, leave);
            let join = wire::join(self.kind, id, &name, true);
            self.send(i, join);
        }
    }

    /// Queues a frame and writes what the socket takes. Refuses (false)
    /// once `MAX_QUEUED` bytes wait: a target that stops reading must not
    /// grow the generator's memory without bound.
    fn send(&mut self, i: usize, (op, payload): wire::Outgoing) -> bool {
        self.mask = self.mask.rotate_left(7) ^ 0x9e37_79b9;
        let mask = self.mask.to_ne_bytes();
        let c = &mut self.conns[i];
        // A stream's request went out whole; it takes nothing more.
        if c.out.len() > MAX_QUEUED || c.sse.is_some() {
            return false;
        }
        wire::push_frame(&mut c.out, op, &payload, mask);
        if !matches!(c.state, State::Connecting | State::Dead) && flush(c).is_err() {
            self.fail(i, "write failed".into());
            return false;
        }
        true
    }

    fn fail(&mut self, i: usize, reason: String) {
        let c = &mut self.conns[i];
        if c.state == State::Dead {
            return;
        }
        let was_ready = c.state == State::Ready;
        if !was_ready {
            self.pending = self.pending.saturating_sub(1);
        }
        c.state = State::Dead;
        if let Some(mut sock) = c.sock.take() {
            let _ = self.poll.registry().deregister(&mut sock);
        }
        c.inbuf = Vec::new();
        c.out = Vec::new();
        c.acks.clear();
        if let Some(p) = c.sse.as_mut() {
            p.clear();
        }
        let reason = if was_ready {
            format!("dropped: {reason}")
        } else {
            reason
        };
        self.out.push(Ev::Failed { conn: i, reason });
    }

    /// Waits until `due`, or `cap` at most, for socket events and handles
    /// them. The alarm is set for `due` itself, so what is scheduled then
    /// (a send, a connect) is not held back by epoll's millisecond timeout.
    pub fn poll_until(&mut self, due: Instant, cap: Duration) -> io::Result<()> {
        let wait = due.saturating_duration_since(Instant::now());
        if !wait.is_zero() && wait <= cap {
            self.alarm.arm_at(due)?;
        }
        self.poll(wait.min(cap))
    }

    /// Waits up to `timeout` for socket events and handles them; results go
    /// to `self.out`.
    pub fn poll(&mut self, timeout: Duration) -> io::Result<()> {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        let ready: Vec<(usize, bool, bool)> = self
            .events
            .iter()
            .map(|e| {
                (
                    e.token().0,
                    e.is_readable() || e.is_read_closed() || e.is_error(),
                    e.is_writable(),
                )
            })
            .collect();
        let now = Instant::now();
        for (i, r, w) in ready {
            if i >= self.conns.len() || self.conns[i].state == State::Dead {
                continue;
            }
            if w {
                self.on_writable(i);
            }
            if r && self.conns[i].state != State::Dead {
                self.on_readable(i, now);
            }
        }
        Ok(())
    }

    fn on_writable(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if c.state == State::Connecting {
            let Some(sock) = c.sock.as_ref() else { return };
            match sock.take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => return self.fail(i, connect_reason(&e)),
            }
            if sock.peer_addr().is_err() {
                return; // not connected yet
            }
            c.state = State::Upgrading;
            let t = &self.targets[c.target];
            let mut req = if c.sse.is_some() {
                let rooms = c
                    .rooms
                    .iter()
                    .map(|&r| self.room_names.get(r as usize).map_or("", String::as_str));
                sse::request(&t.host, &t.path, rooms, &format!("lg-{}", c.user))
            } else {
                wire::upgrade_request(&t.host, t.ws_path())
            };
            // The upgrade goes before anything queued while connecting.
            req.append(&mut c.out);
            c.out = req;
        }
        if flush(c).is_err() {
            self.fail(i, "write failed".into());
        }
    }

    fn on_readable(&mut self, i: usize, now: Instant) {
        let mut buf = std::mem::take(&mut self.read_buf);
        let mut closed = None;
        loop {
            let c = &mut self.conns[i];
            let Some(sock) = c.sock.as_mut() else { break };
            match sock.read(&mut buf) {
                Ok(0) => {
                    // Closed before a stream started: what the answer said.
                    let answer = (c.sse.is_some() && c.state == State::Upgrading).then(|| sse::answer(&c.inbuf, true));
                    closed = Some(match answer {
                        Some(sse::Answer::Refused(why)) => why,
                        _ => "closed by target".to_owned(),
                    });
                    break;
                }
                Ok(n) if c.sse.is_some() => {
                    self.read_at_ns = crate::worker::unix_ns();
                    self.on_stream_bytes(i, &buf[..n], now);
                    if self.conns[i].state == State::Dead || n < buf.len() {
                        break;
                    }
                }
                Ok(n) => {
                    // Frames are handled chunk by chunk, so the buffer only
                    // ever holds one partial frame (at most MAX_FRAME, which
                    // `process` enforces) however much the target sent.
                    c.inbuf.extend_from_slice(&buf[..n]);
                    self.read_at_ns = crate::worker::unix_ns();
                    self.process(i, now);
                    // A short read emptied the socket: the next data raises a
                    // new edge, so skip the read that would only say
                    // WouldBlock (one syscall per delivery in small rooms,
                    // taken from the target's cores on a shared machine).
                    if self.conns[i].state == State::Dead || n < buf.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    closed = Some(if self.conns[i].state == State::Connecting {
                        connect_reason(&e)
                    } else {
                        format!("read: {}", e.kind())
                    });
                    break;
                }
            }
        }
        self.read_buf = buf;
        if let Some(reason) = closed {
            self.fail(i, reason);
        }
    }

    fn process(&mut self, i: usize, now: Instant) {
        if self.conns[i].state == State::Upgrading {
            let c = &mut self.conns[i];
            let Some(end) = c.inbuf.windows(4).position(|w| w == b"\r\n\r\n") else {
                if c.inbuf.len() > 16 * 1024 {
                    self.fail(i, "upgrade response too large".into());
                }
                return;
            };
            if !c.inbuf.starts_with(b"HTTP/1.1 101") {
                let status = String::from_utf8_lossy(&c.inbuf[..c.inbuf.len().min(12)]).into_owned();
                return self.fail(i, format!("upgrade refused ({})", status.trim()));
            }
            c.inbuf.drain(..end + 4);
            c.state = State::Handshaking;
            let token = format!("lg-{}", c.user);
            if let Some(hello) = wire::hello(self.kind, &token) {
                self.send(i, hello);
            }
        }
        let inbuf = std::mem::take(&mut self.conns[i].inbuf);
        let mut pos = 0;
        while let Some((op, hlen, plen)) = wire::server_frame(&inbuf[pos..]) {
            if plen > wire::MAX_FRAME {
                return self.fail(i, "frame too large".into());
            }
            if inbuf.len() - pos < hlen + plen {
                break;
            }
            let data = &inbuf[pos + hlen..pos + hlen + plen];
            pos += hlen + plen;
            match op {
                wire::OP_CLOSE => {
                    let code = data.get(..2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
                    let why = String::from_utf8_lossy(data.get(2..).unwrap_or_default()).into_owned();
                    return self.fail(i, format!("close {code} {why}").trim().to_owned());
                }
                wire::OP_PING => {
                    let data = data.to_vec();
                    self.send(i, (wire::OP_PONG, data));
                }
                _ => self.on_frame(i, op, data, now),
            }
            if self.conns[i].state == State::Dead {
                return;
            }
        }
        let c = &mut self.conns[i];
        let mut inbuf = inbuf;
        inbuf.drain(..pos);
        c.inbuf = inbuf;
    }

    /// What one read of an SSE stream brought: the answer's head, then
    /// events. The parser keeps an unfinished line for the next read.
    fn on_stream_bytes(&mut self, i: usize, bytes: &[u8], now: Instant) {
        let Some(mut parser) = self.conns[i].sse.take() else {
            return;
        };
        let result = self.stream_events(i, &mut parser, bytes, now);
        self.conns[i].sse = Some(parser);
        if let Err(why) = result {
            self.fail(i, why);
        }
    }

    fn stream_events(&mut self, i: usize, parser: &mut sse::Parser, bytes: &[u8], now: Instant) -> Result<(), String> {
        let c = &mut self.conns[i];
        if c.state == State::Upgrading {
            c.inbuf.extend_from_slice(bytes);
            match sse::answer(&c.inbuf, false) {
                sse::Answer::Incomplete => return Ok(()),
                sse::Answer::Refused(why) => return Err(why),
                sse::Answer::Streaming(head) => {
                    parser.push(&c.inbuf[head..]);
                    c.inbuf = Vec::new();
                    // The answer is the whole handshake: what is left is
                    // one `subscribed` event per room.
                    c.state = State::Joining;
                    c.pending_joins = c.rooms.len();
                }
            }
        } else {
            parser.push(bytes);
        }
        while let Some(ev) = parser
            .next_event()
            .map_err(|sse::TooLong| format!("sse line over {} bytes", sse::MAX_LINE))?
        {
            match sse::read(&ev) {
                sse::Incoming::Message { room, offset, payload } => {
                    self.deliver(i, &room, Some(offset), payload.as_bytes());
                }
                sse::Incoming::Binary => self.out.push(Ev::Error("unstamped message".into())),
                sse::Incoming::Subscribed => self.joined(i, now),
                sse::Incoming::Refused(code) => return Err(format!("join refused: {code}")),
                sse::Incoming::Close(code) => return Err(format!("sse close {code}")),
                sse::Incoming::Undecodable => self.out.push(Ev::Error("undecodable sse event".into())),
                sse::Incoming::Other => {}
            }
        }
        Ok(())
    }

    fn deliver(&mut self, i: usize, room: &str, order: Option<u64>, payload: &[u8]) {
        let Some(stamp) = wire::read_stamp(payload) else {
            self.out.push(Ev::Error("unstamped message".into()));
            return;
        };
        let room = room
            .strip_prefix(self.room_prefix.as_str())
            .and_then(|s| s.parse().ok())
            .unwrap_or(u32::MAX);
        self.out.push(Ev::Delivery {
            conn: i,
            room,
            order,
            stamp,
            recv_unix_ns: self.read_at_ns,
        });
    }

    fn on_frame(&mut self, i: usize, op: u8, data: &[u8], now: Instant) {
        match wire::parse(self.kind, op, data) {
            Incoming::Message(room, offset, payload) => self.deliver(i, room, offset, payload),
            Incoming::EngineOpen => {
                self.send(i, wire::engine_connect());
            }
            Incoming::Open => {
                let c = &mut self.conns[i];
                if c.state != State::Handshaking {
                    return;
                }
                if c.rooms.is_empty() {
                    c.state = State::Ready;
                    self.pending = self.pending.saturating_sub(1);
                    self.out.push(Ev::Ready { conn: i, at: now });
                    return;
                }
                c.state = State::Joining;
                c.pending_joins = c.rooms.len();
                let rooms = c.rooms.clone();
                for (slot, r) in rooms.into_iter().enumerate() {
                    let name = self.room_name(r).to_owned();
                    let frame = wire::join(self.kind, wire::JOIN_BASE + slot as u32, &name, self.presence);
                    self.send(i, frame);
                }
            }
            Incoming::Joined(_) => self.joined(i, now),
            Incoming::Reply(id, ok, reason) => {
                if id >= wire::PUBLISH_BASE {
                    // Open loop, like a delivery: from the scheduled send
                    // time to this socket read.
                    let latency_us = self.conns[i]
                        .acks
                        .take(id)
                        .map(|sched| self.read_at_ns.saturating_sub(sched) / 1000);
                    self.out.push(Ev::Acked { ok, reason, latency_us });
                } else if self.conns[i].state == State::Joining {
                    if ok && self.kind == Kind::SocketIo {
                        self.joined(i, now);
                    } else if !ok {
                        self.fail(i, format!("join refused: {}", reason.unwrap_or_default()));
                    }
                }
            }
            Incoming::Ping(nonce) => {
                let pong = wire::pong(self.kind, nonce);
                self.send(i, pong);
            }
            Incoming::Presence => self.out.push(Ev::Presence),
            Incoming::Typing => self.out.push(Ev::Typing),
            Incoming::Closing(reason) => self.fail(i, reason),
            Incoming::Error(e) => self.out.push(Ev::Error(e)),
            Incoming::Other => {}
        }
    }

    fn joined(&mut self, i: usize, now: Instant) {
        let c = &mut self.conns[i];
        if c.state != State::Joining {
            return;
        }
        c.pending_joins = c.pending_joins.saturating_sub(1);
        if c.pending_joins == 0 {
            c.state = State::Ready;
            self.pending = self.pending.saturating_sub(1);
            self.out.push(Ev::Ready { conn: i, at: now });
        }
    }

    /// Closes every connection (the target sees ordinary disconnects).
    pub fn close_all(&mut self) {
        for c in &mut self.conns {
            if let Some(mut sock) = c.sock.take() {
                let _ = self.poll.registry().deregister(&mut sock);
            }
            c.state = State::Dead;
            c.acks.clear();
        }
        self.pending = 0;
    }
}

fn flush(c: &mut Conn) -> io::Result<()> {
    let Some(sock) = c.sock.as_mut() else { return Ok(()) };
    let mut done = 0;
    while done < c.out.len() {
        match sock.write(&c.out[done..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    c.out.drain(..done);
    Ok(())
}

fn connect(target: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    if let Some(ip) = source {
        // bind() reserves one of the ~28,000 ephemeral ports of this source
        // address, whatever the target: spread over enough addresses.
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match socket.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc_einprogress()) || e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

const fn libc_einprogress() -> i32 {
    115 // EINPROGRESS on Linux
}

pub fn connect_reason(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(111) => "refused".into(),
        Some(24) => "too many open files (local)".into(),
        Some(99) => "no free local port".into(),
        Some(110) => "connect timeout".into(),
        Some(104) => "reset".into(),
        _ => format!("connect: {}", e.kind()),
    }
}
