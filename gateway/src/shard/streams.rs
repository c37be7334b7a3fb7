//! SSE streams on a shard: opening one (auth, limits, the answer's head,
//! a join per room), the owners' answers to those joins, and leaving. What
//! a stream receives afterwards comes through the same fan-out as
//! WebSocket peers (`peers.rs`), as events instead of frames.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use herald_protocol::owner::{Input, Joined, Refusal};

use super::Shard;
use crate::auth::AuthError;
use crate::conns::ConnKey;
use crate::http::{RequestHead, Response};
use crate::link::{Link, SseLink};
use crate::stats::{DropReason, ShardStats};
use crate::{origins, sse};

/// What an SSE join carries as its request id: there is no client request
/// to answer, and a stream joins each of its rooms once.
const SSE_JOIN: u32 = 0;

impl Shard {
    /// `GET /sse`: turns the connection into a stream, or answers why not
    /// and closes.
    pub(super) fn start_sse(&mut self, slot: usize, head: &RequestHead<'_>) {
        ShardStats::add(&self.stats.http_requests, 1);
        match self.open_stream(slot, head) {
            Ok(()) => {}
            Err(resp) => self.respond(slot, &resp, false),
        }
    }

    fn open_stream(&mut self, slot: usize, head: &RequestHead<'_>) -> Result<(), Response> {
        if head.method != "GET" {
            return Err(Response::error(405, "method_not_allowed", "an SSE stream is a GET").with_header("Allow: GET"));
        }
        let config = &self.shared.config;
        if !config.allowed_origins.allows(head) {
            return Err(origins::refused());
        }
        let cors = config.allowed_origins.cors_headers(head, true);
        let refuse = |resp: Response| resp.with_headers(cors.clone());
        let limits = &config.session.limits;
        let req = sse::parse_request(head, limits.max_rooms, limits.max_room_name_bytes).map_err(refuse)?;
        let Some(token) = req.token.as_deref() else {
            let message = "an SSE stream needs a token: Authorization: Bearer, ?token= or the herald_token cookie";
            return Err(refuse(Response::error(401, "auth_failed", message)));
        };
        let identity = match self.shared.verifier.verify(token, crate::unix_secs()) {
            Ok(identity) => identity,
            Err(AuthError::Expired) => return Err(refuse(Response::error(401, "token_expired", "token expired"))),
            Err(e) => {
                let message = format!("authentication failed: {e}");
                return Err(refuse(Response::error(401, "auth_failed", &message)));
            }
        };
        if let Some(room) = req.rooms.iter().find(|r| !identity.may_subscribe(r)) {
            let message = format!("token does not allow subscribing to {room}");
            return Err(refuse(Response::error(403, "forbidden", &message)));
        }
        if self.draining.is_some() {
            return Err(refuse(
                Response::error(503, "server_shutdown", "node shutting down").with_header("Retry-After: 1"),
            ));
        }
        let open = self.shared.sessions_open.fetch_add(1, Relaxed) + 1;
        if open > config.max_connections {
            self.shared.sessions_open.fetch_sub(1, Relaxed);
            self.stats.dropped(DropReason::ConnectionLimit);
            return Err(refuse(
                Response::error(503, "connection_limit", "node connection limit reached").with_header("Retry-After: 5"),
            ));
        }
        let heartbeat = self.shared.session.heartbeat_interval;
        let user: Arc<str> = Arc::from(identity.user.as_str());
        let link = SseLink::new(user.clone(), identity.expires_at, &req, Instant::now() + heartbeat);
        let joins: Vec<_> = link.rooms().map(|(room, at)| (room.clone(), at)).collect();
        let Some(c) = self.conns.get_mut(slot) else {
            self.shared.sessions_open.fetch_sub(1, Relaxed);
            return Ok(());
        };
        let key = c.key(slot);
        c.outbuf.extend_from_slice(&sse::response_head(&cors));
        c.link = Link::Sse(Box::new(link));
        ShardStats::gauge(&self.stats.sse_sessions, 1);
        if req.notifications && self.subs.add_user(user.clone(), key) {
            self.user_here(&user, true);
        }
        for (room, recover) in joins {
            let input = Input::Join {
                origin: self.conn_origin(key, SSE_JOIN, 0),
                member: self.member(key),
                room: room.clone(),
                user: user.clone(),
                history: 0,
                recover,
                presence: req.presence,
            };
            self.send_to_owner(&room, input);
        }
        self.mark_write(slot);
        self.arm_timer(slot);
        Ok(())
    }

    /// An owner's answer to a stream's join; false if `conn` is not a
    /// stream (the answer is for a WebSocket peer).
    pub(super) fn stream_joined(
        &mut self,
        conn: ConnKey,
        room: Arc<str>,
        presence: bool,
        result: &Result<Joined, Refusal>,
    ) -> bool {
        let Some(slot) = self.conns.slot_of(conn) else {
            return false;
        };
        let Some(Link::Sse(s)) = self.conns.get_mut(slot).map(|c| &mut c.link) else {
            return false;
        };
        match result {
            Ok(joined) => {
                s.joined(&room, joined);
                if self.subs.add(room, conn, presence) {
                    ShardStats::gauge(&self.stats.subscriptions, 1);
                }
            }
            Err(r) => s.refused(&room, &crate::api::code_name(r.code), r.message),
        }
        self.mark_write(slot);
        true
    }

    /// The rooms and user of a stream that is closing, for `leave_all`.
    pub(super) fn stream_leaves(&mut self, slot: usize) -> Option<(Vec<Arc<str>>, Arc<str>)> {
        match self.conns.get_mut(slot).map(|c| &mut c.link) {
            Some(Link::Sse(s)) => Some((s.take_rooms(), s.user.clone())),
            _ => None,
        }
    }
}
