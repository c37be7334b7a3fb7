//! The socket side of a shard: accepting, reading into the shard's buffer
//! and parsing what the connection's link expects (HTTP requests, one at a
//! time; WebSocket frames), writing, closing, and connection deadlines.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use herald_protocol::{ErrorCode, ServerSession};
use mio::net::TcpStream;
use mio::{Interest, Token};

use super::{READ_BUF, Shard, WRITES_BETWEEN_INBOX};
use crate::api::{ApiEnv, Routed};
use crate::conns::{ConnKey, Listener};
use crate::handshake::{self, Handshake};
use crate::http::{self, Response};
use crate::link::{FrameAction, HTTP_TIMEOUT, HttpState, Link, WsFraming, WsLink};
use crate::peer::Peer;
use crate::stats::{DropReason, ShardStats};
use crate::{origins, sse, statics, ws};

/// Time a closed session whose socket is full gets to read what is queued
/// (ending with the error and close frames) before it is dropped.
const STUCK_GRACE: Duration = Duration::from_secs(5);
/// Time a closing connection gets to acknowledge our close.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

impl Shard {
    // ---- accepting ----------------------------------------------------------

    pub(super) fn accept_all(&mut self) {
        self.accept(Listener::Public);
        self.accept(Listener::Internal);
    }

    pub(super) fn accept(&mut self, which: Listener) {
        loop {
            let Some(listeners) = self.listeners.as_ref() else {
                return;
            };
            let listener = match which {
                Listener::Public => &listeners.public,
                Listener::Internal => match &listeners.internal {
                    Some(l) => l,
                    None => return,
                },
            };
            match listener.accept() {
                Ok((sock, _peer)) => self.add_conn(sock, which),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and friends: retry soon instead of spinning;
                    // pending connections wait in the backlog.
                    tracing::warn!(shard = self.id, error = %e, "accept failed; pausing accepts");
                    self.accept_retry = Some(Instant::now() + super::ACCEPT_RETRY);
                    return;
                }
            }
        }
    }

    fn add_conn(&mut self, mut sock: TcpStream, listener: Listener) {
        let sessions = self.stats.ws_sessions.load(Relaxed) + self.stats.sse_sessions.load(Relaxed);
        let sessions = usize::try_from(sessions).unwrap_or(0);
        if self.conns.len().saturating_sub(sessions) >= self.max_http_connections {
            // Best effort: a fresh socket's send buffer takes this at once;
            // if not, the client sees the close alone.
            let _ = sock.write(&self.busy_response);
            self.stats.dropped(DropReason::HttpLimit);
            return;
        }
        let _ = sock.set_nodelay(true);
        let slot = self.conns.next_slot();
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut sock, Token(slot), Interest::READABLE | Interest::WRITABLE)
        {
            tracing::warn!(error = %e, "cannot register connection");
            return;
        }
        let key = self.conns.insert(sock, listener, Instant::now());
        debug_assert_eq!(key.slot as usize, slot);
        ShardStats::gauge(&self.stats.connections, 1);
        self.arm_timer(slot);
    }

    // ---- reading ------------------------------------------------------------

    /// Reads the sockets that are ready, until a request to another shard
    /// has to wait in overflow: then the rest wait too (still queued), so
    /// one loop iteration adds at most one frame's worth of work to a full
    /// channel.
    pub(super) fn read_ready(&mut self) {
        let slots = std::mem::take(&mut self.to_read);
        for (i, &slot) in slots.iter().enumerate() {
            if self.mesh.requests_waiting() {
                self.to_read.extend_from_slice(&slots[i..]);
                return;
            }
            self.read_conn(slot);
        }
    }

    fn read_conn(&mut self, slot: usize) {
        let Some(c) = self.conns.get_mut(slot) else { return };
        c.queued_read = false;
        if c.link.is_ws() && !c.inbuf.is_empty() {
            // Frames left unparsed when the channels filled go first.
            self.reparse(slot);
            if self.mesh.requests_waiting() {
                self.requeue_read(slot);
                return;
            }
        }
        let Some(c) = self.conns.get_mut(slot) else { return };
        // An HTTP connection reads only while it has no answer pending, and
        // never more than one request's worth: pipelined requests wait in
        // the client's socket buffer, not in ours.
        let room = match &c.link {
            Link::Http(h) if !h.reading() => return,
            Link::Http(_) => http::MAX_REQUEST_BYTES.saturating_sub(c.inbuf.len()).min(READ_BUF),
            _ => READ_BUF,
        };
        if room == 0 {
            return;
        }
        let mut buf = std::mem::take(&mut self.read_buf);
        let result = loop {
            match c.sock.read(&mut buf[..room]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => break r,
            }
        };
        match result {
            Ok(0) => self.remove(slot),
            Ok(n) => {
                ShardStats::add(&self.stats.bytes_in, n as u64);
                if n == room {
                    // There may be more; read again next iteration (fairness).
                    self.requeue_read(slot);
                }
                self.take_input(slot, &mut buf[..n]);
                self.mark_active(slot);
                self.arm_timer(slot);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => self.remove(slot),
        }
        self.read_buf = buf;
    }

    /// Parses `fresh` bytes after whatever the connection kept, and keeps
    /// what does not form a complete unit yet.
    fn take_input(&mut self, slot: usize, fresh: &mut [u8]) {
        let Some(c) = self.conns.get_mut(slot) else { return };
        if c.inbuf.is_empty() {
            let used = self.input(slot, fresh);
            if let Some(c) = self.conns.get_mut(slot)
                && used < fresh.len()
            {
                c.inbuf.extend_from_slice(&fresh[used..]);
            }
        } else {
            c.inbuf.extend_from_slice(fresh);
            self.reparse(slot);
        }
    }

    /// Re-runs parsing over the bytes a connection kept (more arrived, or
    /// an HTTP answer was written and the next request may be waiting).
    fn reparse(&mut self, slot: usize) {
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

    /// Handles as much of `data` as forms complete units; returns the bytes
    /// used (all of them when the connection is gone or closing).
    fn input(&mut self, slot: usize, data: &mut [u8]) -> usize {
        let mut used = 0;
        loop {
            let Some(c) = self.conns.get_mut(slot) else {
                return data.len();
            };
            match &c.link {
                Link::Closing => return data.len(),
                Link::Http(h) if !h.reading() => return used,
                Link::Http(_) => match self.http_request(slot, &data[used..]) {
                    Some(0) => return used,
                    Some(n) => used += n,
                    None => return data.len(),
                },
                Link::Ws(_) => return used + self.ws_input(slot, &mut data[used..]),
                // A page sends nothing on its stream; whatever comes is dropped.
                Link::Sse(_) => return data.len(),
            }
        }
    }

    // ---- HTTP ---------------------------------------------------------------

    /// Takes one HTTP request if it is complete; returns the bytes it used
    /// (0: need more), None if the connection is closing.
    fn http_request(&mut self, slot: usize, data: &[u8]) -> Option<usize> {
        let head = match http::parse_head(data) {
            Ok(Some(h)) => h,
            Ok(None) => return Some(0),
            Err(e) => {
                let resp = Response::error(e.status(), "bad_request", &e.to_string());
                self.respond(slot, &resp, false);
                return None;
            }
        };
        let listener = self.conns.get(slot)?.listener;
        let internal_exists = self.shared.config.internal_listen.is_some();
        let clients_here = listener == Listener::Public || !internal_exists;
        let origins = &self.shared.config.allowed_origins;
        let api_path = head.path.starts_with("/api/");
        if head.method == "OPTIONS" && head.cors_method.is_some() && (api_path || head.path == sse::SSE_PATH) {
            let resp = origins.preflight(&head);
            return self.answer_at_once(slot, &head, &resp);
        }
        // WebSocket clients and pages use the public listener only.
        let handshake = if clients_here {
            handshake::check(&head)
        } else {
            Handshake::NotWebSocket
        };
        match handshake {
            Handshake::Accept(key) => {
                if !origins.allows(&head) {
                    self.respond(slot, &origins::refused(), false);
                    return None;
                }
                let protocol = head.offers_protocol(handshake::PROTOCOL).then_some(handshake::PROTOCOL);
                self.upgrade(slot, key, protocol);
                return Some(head.head_len);
            }
            Handshake::Refuse(resp) => {
                self.respond(slot, &resp, false);
                return None;
            }
            Handshake::NotWebSocket => {}
        }
        if clients_here && head.path == sse::SSE_PATH {
            self.start_sse(slot, &head);
            return None;
        }
        if clients_here
            && let Some(dir) = &self.shared.config.static_dir
            && (head.path == statics::PREFIX || head.path.starts_with(statics::PREFIX_SLASH))
        {
            let resp = statics::serve(dir, &head);
            return self.answer_at_once(slot, &head, &resp);
        }
        if api_path && !origins.allows(&head) {
            self.respond(slot, &origins::refused(), false);
            return None;
        }
        if head.content_length > http::MAX_BODY_BYTES {
            let msg = format!("request body larger than {} bytes", http::MAX_BODY_BYTES);
            self.respond(slot, &Response::error(413, "payload_too_large", &msg), false);
            return None;
        }
        let total = head.head_len + head.content_length;
        if data.len() < total {
            // curl and others wait (1 s) for this before sending a large body.
            if head.expect_continue
                && let Some(c) = self.conns.get_mut(slot)
                && let Link::Http(h) = &mut c.link
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
        let cors = if api_path {
            self.shared.config.allowed_origins.cors_headers(&head, false)
        } else {
            Vec::new()
        };
        let c = self.conns.get_mut(slot)?;
        let key = c.key(slot);
        if let Link::Http(h) = &mut c.link {
            h.took_request(keep_alive);
        }
        let mut env = ApiEnv {
            shard: self.id,
            shared: &self.shared,
            mesh: &mut self.mesh,
            placer: self.placer,
            store: &self.store,
            rooms: &mut self.rooms,
        };
        match self
            .api
            .request(&mut env, key, listener, &head, &data[head.head_len..total])
        {
            Routed::Answer(resp) => self.respond(slot, &resp.with_headers(cors), keep_alive),
            Routed::Pending => {
                if let Some(Link::Http(h)) = self.conns.get_mut(slot).map(|c| &mut c.link) {
                    h.answer_headers = cors;
                }
            }
        }
        Some(total)
    }

    /// Answers a request that needs no other shard and whose body, if it
    /// has one, is not wanted: the connection goes on after it unless it
    /// sent a body (which would have to be read past first).
    fn answer_at_once(&mut self, slot: usize, head: &http::RequestHead<'_>, resp: &Response) -> Option<usize> {
        ShardStats::add(&self.stats.http_requests, 1);
        if head.content_length > 0 {
            self.respond(slot, resp, false);
            return None;
        }
        if let Some(Link::Http(h)) = self.conns.get_mut(slot).map(|c| &mut c.link) {
            h.took_request(head.keep_alive);
        }
        self.respond(slot, resp, head.keep_alive);
        Some(head.head_len)
    }

    /// Queues an HTTP answer; the connection closes after it unless
    /// `keep_alive` (and the node is not draining).
    pub(super) fn respond(&mut self, slot: usize, resp: &Response, keep_alive: bool) {
        let keep_alive = keep_alive && self.draining.is_none();
        let Some(c) = self.conns.get_mut(slot) else { return };
        match &mut c.link {
            Link::Http(h) => {
                h.answered(keep_alive);
                c.deadline = Instant::now() + HTTP_TIMEOUT;
                resp.encode_into(h.keep_alive, &mut c.outbuf);
            }
            _ => return,
        }
        self.mark_write(slot);
        self.arm_timer(slot);
    }

    /// The answer to the HTTP request of `conn`, from other shards.
    pub(super) fn finish_http(&mut self, conn: ConnKey, resp: Response) {
        let Some(slot) = self.conns.slot_of(conn) else { return };
        let Some(Link::Http(h)) = self.conns.get_mut(slot).map(|c| &mut c.link) else {
            return;
        };
        let keep_alive = h.keep_alive;
        let resp = resp.with_headers(std::mem::take(&mut h.answer_headers));
        self.respond(slot, &resp, keep_alive);
    }

    /// Switches an HTTP connection to WebSocket.
    fn upgrade(&mut self, slot: usize, key: &str, protocol: Option<&str>) {
        let now = Instant::now();
        let Some(c) = self.conns.get_mut(slot) else { return };
        handshake::write_accept(&mut c.outbuf, key, protocol);
        let mut session = ServerSession::new(self.shared.session.clone(), now);
        let open = self.shared.sessions_open.fetch_add(1, Relaxed) + 1;
        if open > self.shared.config.max_connections {
            session.close(ErrorCode::ConnectionLimit, "node connection limit reached");
            self.stats.dropped(DropReason::ConnectionLimit);
        }
        c.link = Link::Ws(Box::new(WsLink {
            framing: WsFraming::default(),
            peer: Peer::new(session),
        }));
        ShardStats::gauge(&self.stats.ws_sessions, 1);
        self.mark_write(slot);
        self.arm_timer(slot);
    }

    // ---- WebSocket ----------------------------------------------------------

    /// Handles the complete WebSocket frames at the start of `data`; returns
    /// the bytes used.
    fn ws_input(&mut self, slot: usize, data: &mut [u8]) -> usize {
        let max = self.shared.config.session.limits.decode.max_frame_bytes;
        let mut used = 0;
        while used < data.len() {
            if self.mesh.requests_waiting() {
                // The rest waits in the connection's buffer (at most one
                // read's worth) until the channels drain.
                self.requeue_read(slot);
                break;
            }
            let head = match ws::parse_head(&data[used..], max) {
                Ok(Some(h)) if h.frame_len() <= data.len() - used => h,
                Ok(_) => break,
                Err(e) => {
                    self.ws_fail(slot, e.close_code(), &e.to_string());
                    return data.len();
                }
            };
            let payload = &mut data[used + head.header_len..used + head.frame_len()];
            ws::unmask(payload, head.mask);
            used += head.frame_len();
            let Some(Link::Ws(w)) = self.conns.get_mut(slot).map(|c| &mut c.link) else {
                return data.len();
            };
            match w.framing.on_frame(head.fin, head.opcode, payload, max) {
                FrameAction::None => {
                    if head.opcode == ws::opcode::PING {
                        self.mark_write(slot);
                    }
                }
                FrameAction::Message(frame) => self.ws_message(slot, frame),
                FrameAction::Closed { code } => {
                    // The client is leaving: echo its close and stop.
                    if let Some(c) = self.conns.get_mut(slot)
                        && let Link::Ws(w) = &mut c.link
                        && !w.framing.close_sent
                    {
                        w.framing.close_sent = true;
                        c.outbuf.extend_from_slice(&ws::close_frame(code, ""));
                    }
                    self.start_closing(slot);
                    return data.len();
                }
                FrameAction::Fail { code, reason } => {
                    self.ws_fail(slot, code, reason);
                    return data.len();
                }
            }
            if !self.conns.get(slot).is_some_and(|c| c.link.is_ws()) {
                return data.len();
            }
        }
        used
    }

    fn ws_message(&mut self, slot: usize, frame: bytes::Bytes) {
        let now = Instant::now();
        let Some(peer) = self.conns.get_mut(slot).and_then(|c| c.link.peer_mut()) else {
            return;
        };
        ShardStats::add(&self.stats.frames_in, 1);
        if let Err(e) = peer.session.handle_frame(now, frame) {
            if e.code().0 >= 200 {
                self.stats.dropped(DropReason::BadFrame);
            }
            tracing::debug!(shard = self.id, slot, error = %e, "protocol error");
        }
        self.session_events(slot);
    }

    /// A WebSocket-level violation: close with the RFC's code and a reason;
    /// nothing else is sent.
    fn ws_fail(&mut self, slot: usize, code: u16, reason: &str) {
        self.stats.dropped(DropReason::BadFrame);
        tracing::debug!(shard = self.id, slot, code, reason, "websocket violation");
        if let Some(c) = self.conns.get_mut(slot)
            && let Link::Ws(w) = &mut c.link
        {
            w.framing.close_sent = true;
            c.outbuf.extend_from_slice(&ws::close_frame(code, reason));
        }
        self.start_closing(slot);
    }

    // ---- writing ------------------------------------------------------------

    /// One pass over the connections that have something to write. Frames
    /// queued during the pass (for connections it has already written) wait
    /// for the next loop iteration, so timers and accepts still get turns
    /// under continuous load.
    pub(super) fn write_ready(&mut self) {
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
        let mut handled = self.handle_inbox(super::INBOX_BATCH) > 0;
        if !self.mesh.requests_waiting() && self.poll_events(Duration::ZERO) && !self.to_read.is_empty() {
            ShardStats::add(&self.stats.write_pass_reads, self.to_read.len() as u64);
            self.read_ready();
            self.flush_events();
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
            // A session that closed while its socket is full gets a grace
            // period to read, out of its rooms.
            let closed_while_full = match &c.link {
                Link::Ws(w) => w.peer.session.close_reason().is_some() && !w.framing.close_sent && !w.framing.stuck,
                Link::Sse(s) => s.closing && !s.stuck,
                _ => false,
            };
            if closed_while_full {
                self.become_stuck(slot);
            }
            return;
        }
        let session: Option<&mut dyn crate::writer::Source> = match &mut c.link {
            Link::Ws(w) => {
                if let Some(pong) = w.framing.take_pong() {
                    c.outbuf.extend_from_slice(&ws::server_frame(ws::opcode::PONG, &pong));
                }
                Some(&mut w.peer.session)
            }
            Link::Sse(s) => Some(&mut **s),
            _ => None,
        };
        if !crate::writer::flush(
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
        self.mark_active(slot);
        let Some(c) = self.conns.get_mut(slot) else { return };
        if c.blocked {
            return;
        }
        match &mut c.link {
            Link::Ws(w) => {
                if let Some((code, reason)) = w.peer.session.close_reason()
                    && !w.framing.close_sent
                {
                    w.framing.close_sent = true;
                    let frame = ws::close_frame(crate::close_code(code), reason);
                    if !w.framing.stuck {
                        count_close(&self.stats, code);
                    }
                    c.outbuf.extend_from_slice(&frame);
                    self.start_closing(slot);
                }
            }
            Link::Http(h) => {
                if h.state == HttpState::Writing && c.outbuf.is_empty() {
                    // The answer is out: close, or read the next request.
                    if h.keep_alive {
                        h.written();
                        c.deadline = Instant::now() + HTTP_TIMEOUT;
                        self.reparse(slot);
                        self.requeue_read(slot);
                        self.arm_timer(slot);
                    } else {
                        self.start_closing(slot);
                    }
                }
            }
            Link::Sse(s) => {
                // The final event is out: the stream ends (a page's
                // EventSource reconnects by itself and resumes).
                if s.closing && s.queued_bytes() == 0 && c.outbuf.is_empty() {
                    self.start_closing(slot);
                }
            }
            Link::Closing => {
                if c.outbuf.is_empty() {
                    let _ = c.sock.shutdown(Shutdown::Write);
                }
            }
        }
    }

    /// Closed as a slow consumer (or otherwise) while its socket was full:
    /// the error and close frames wait behind what the peer has not read.
    /// It leaves its rooms now and gets [`STUCK_GRACE`] to read them.
    fn become_stuck(&mut self, slot: usize) {
        let Some(c) = self.conns.get_mut(slot) else { return };
        match &mut c.link {
            Link::Ws(w) => {
                w.framing.stuck = true;
                if let Some((code, _)) = w.peer.session.close_reason() {
                    count_close(&self.stats, code);
                }
            }
            // Its slow-consumer drop was counted when it was closed.
            Link::Sse(s) => s.stuck = true,
            _ => return,
        }
        c.deadline = Instant::now() + STUCK_GRACE;
        self.leave_all(slot);
        self.arm_timer(slot);
    }

    // ---- closing ------------------------------------------------------------

    /// Stops output after what is queued and waits briefly for the peer.
    pub(super) fn start_closing(&mut self, slot: usize) {
        self.end_session(slot);
        let Some(c) = self.conns.get_mut(slot) else { return };
        c.link = Link::Closing;
        c.deadline = Instant::now() + CLOSE_LINGER;
        if c.outbuf.is_empty() {
            let _ = c.sock.shutdown(Shutdown::Write);
        }
        self.mark_write(slot);
        self.arm_timer(slot);
    }

    /// A WebSocket or SSE session ends: it leaves its rooms and no longer
    /// counts as open. Nothing for other links.
    fn end_session(&mut self, slot: usize) {
        let gauge = match self.conns.get(slot).map(|c| &c.link) {
            Some(Link::Ws(_)) => &self.stats.ws_sessions,
            Some(Link::Sse(_)) => &self.stats.sse_sessions,
            _ => return,
        };
        ShardStats::gauge(gauge, -1);
        self.shared.sessions_open.fetch_sub(1, Relaxed);
        self.leave_all(slot);
    }

    /// Forgets a connection at once.
    pub(super) fn remove(&mut self, slot: usize) {
        let Some(key) = self.conns.key(slot) else { return };
        self.end_session(slot);
        let Some(mut c) = self.conns.remove(slot) else { return };
        let _ = self.poll.registry().deregister(&mut c.sock);
        self.api.forget(key);
        ShardStats::gauge(&self.stats.connections, -1);
    }

    /// A connection's deadline passed.
    pub(super) fn on_deadline(&mut self, slot: usize, now: Instant) {
        let unix = self.unix_secs;
        let Some(c) = self.conns.get_mut(slot) else { return };
        let expired = c.deadline <= now;
        match &mut c.link {
            Link::Http(h) => {
                if h.timed() && expired {
                    self.remove(slot);
                }
            }
            Link::Closing => {
                if expired {
                    self.remove(slot);
                }
            }
            Link::Sse(s) => {
                if s.stuck {
                    if expired {
                        self.remove(slot);
                    }
                    return;
                }
                if s.expires_at
                    .is_some_and(|exp| exp.saturating_add(crate::auth::LEEWAY_SECS) <= unix)
                {
                    s.close_with("token_expired", "token expired");
                } else if s.next_heartbeat <= now {
                    s.heartbeat(now + self.shared.session.heartbeat_interval);
                }
                self.mark_write(slot);
            }
            Link::Ws(w) => {
                if w.framing.stuck {
                    if expired {
                        self.remove(slot);
                    }
                    return;
                }
                let peer = &mut w.peer;
                // The same leeway as at Connect, so clock skew between the
                // issuer and the node does not cut sessions short.
                if peer
                    .expires_at()
                    .is_some_and(|exp| exp.saturating_add(crate::auth::LEEWAY_SECS) <= unix)
                {
                    peer.session.close(ErrorCode::TokenExpired, "token expired");
                } else if peer.session.poll_timeout().is_some_and(|t| t <= now) {
                    peer.session.handle_timeout(now);
                } else {
                    return;
                }
                self.session_events(slot);
            }
        }
    }
}

fn count_close(stats: &ShardStats, code: ErrorCode) {
    match code {
        ErrorCode::SlowConsumer => stats.dropped(DropReason::SlowConsumer),
        ErrorCode::IdleTimeout | ErrorCode::HandshakeTimeout => stats.dropped(DropReason::Timeout),
        _ => {}
    }
}
