//! The Herald side of a shard: what a peer's session asks for becomes a
//! request to a room's owner; what owners answer and deliver becomes frames
//! on this shard's peers. Nothing reaches a peer that has not been accepted,
//! and everything that names a connection carries its generation.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use herald_protocol::owner::{Answer, Audience, Input, Joined, Member, Output, Refusal, is_user_room};
use herald_protocol::wire::{self, BodyT};
use herald_protocol::{
    Accept, ErrorCode, MessageRef, Position, PresenceRef, ResumeRoom, SendOutcome, ServerEvent, SubscribedRef,
    with_encoder,
};

use super::Shard;
use crate::api::Api;
use crate::auth::AuthError;
use crate::conns::{ConnKey, Connections};
use crate::link::Link;
use crate::mesh::{Origin, Reply, Request};
use crate::peer::Peer;
use crate::sse::{self, SseOutcome};
use crate::stats::{DropReason, ShardStats};

impl Shard {
    pub(super) fn member(&self, key: ConnKey) -> Member {
        Member {
            shard: self.id as u32,
            conn: key.id(),
        }
    }

    pub(super) fn send_to_owner(&mut self, room: &str, input: Input<Origin>) {
        let owner = self.owner_of(room);
        self.mesh.request(owner, Request::Owner(input));
    }

    pub(super) fn peer_mut(&mut self, slot: usize) -> Option<&mut Peer> {
        self.conns.get_mut(slot).and_then(|c| c.link.peer_mut())
    }

    // ---- what sessions ask for ------------------------------------------------

    /// Runs everything the session of `slot` has to say.
    pub(super) fn session_events(&mut self, slot: usize) {
        let Some(key) = self.conns.key(slot) else { return };
        loop {
            let Some(peer) = self.peer_mut(slot) else { return };
            let Some(event) = peer.session.poll_event() else { break };
            self.session_event(slot, key, event);
        }
        self.mark_write(slot);
        self.arm_timer(slot);
    }

    fn session_event(&mut self, slot: usize, key: ConnKey, event: ServerEvent) {
        match event {
            ServerEvent::Connect { token, resume, .. } => self.connect(slot, key, &token, resume),
            ServerEvent::Subscribe {
                request_id,
                room,
                history,
                recover,
                presence,
            } => self.subscribe(slot, key, request_id, &room, history, recover, presence),
            ServerEvent::Unsubscribed { room } => self.leave(slot, key, &room),
            ServerEvent::Publish {
                request_id,
                room,
                payload,
                content_type,
                volatile,
                idempotency_key,
            } => {
                let Some(peer) = self.peer_mut(slot) else { return };
                let (Some(user), Some(identity)) = (peer.user().cloned(), peer.identity()) else {
                    return;
                };
                if !identity.may_publish(&room) {
                    peer.session
                        .reply_error(request_id, ErrorCode::Forbidden, "token does not allow publishing here");
                    return;
                }
                let room: Arc<str> = Arc::from(room);
                let input = Input::Publish {
                    origin: self.conn_origin(key, request_id, 0),
                    room: room.clone(),
                    user,
                    payload,
                    content_type,
                    volatile,
                    idempotency_key,
                    from_server: false,
                    received: Instant::now(),
                };
                self.send_to_owner(&room, input);
            }
            ServerEvent::Typing { room, active } => {
                let member = self.member(key);
                let Some(peer) = self.peer_mut(slot) else { return };
                let (Some(user), Some(room)) = (peer.user().cloned(), peer.room(&room).cloned()) else {
                    return;
                };
                let input = Input::Typing {
                    member,
                    room: room.clone(),
                    user,
                    active,
                };
                self.send_to_owner(&room, input);
            }
            ServerEvent::Request { request_id, body } => self.request(slot, key, request_id, body),
            ServerEvent::RateLimited { .. } => self.stats.dropped(DropReason::RateLimited),
            ServerEvent::Closed { .. } => {}
        }
    }

    pub(super) fn conn_origin(&self, conn: ConnKey, request_id: u32, attempt: u32) -> Origin {
        Origin::Conn {
            shard: self.id as u32,
            conn,
            request_id,
            attempt,
        }
    }

    fn connect(&mut self, slot: usize, key: ConnKey, token: &str, resume: Vec<ResumeRoom>) {
        let verified = self.shared.verifier.verify(token, crate::unix_secs());
        let node_id = self.shared.config.node_id.clone();
        let max_name = self.shared.config.session.limits.max_room_name_bytes;
        let shard = self.id;
        let Some(peer) = self.peer_mut(slot) else { return };
        let identity = match verified {
            Ok(identity) => identity,
            Err(AuthError::Expired) => {
                peer.session.reject(ErrorCode::TokenExpired, "token expired");
                return;
            }
            Err(e) => {
                peer.session
                    .reject(ErrorCode::AuthFailed, &format!("authentication failed: {e}"));
                return;
            }
        };
        let accept = Accept {
            session_id: format!("{node_id}-{shard}-{}-{}", key.slot, key.generation),
            node_id,
            user_id: identity.user.clone(),
            server_time_ms: crate::unix_ms(),
        };
        peer.session.accept(Instant::now(), &accept);
        let user = peer.authenticated(identity);
        // Every connection of user U is in `user:U` without joining it.
        if self.subs.add_user(user.clone(), key) {
            self.user_here(&user, true);
        }
        self.send_unread(key, user);
        for r in resume {
            let recover = (r.position.epoch != 0).then_some(r.position);
            if !herald_protocol::valid_room_name(&r.room, max_name) {
                if let Some(peer) = self.peer_mut(slot) {
                    peer.session
                        .resume_failed(&r.room, ErrorCode::InvalidRoomName, "invalid room name");
                }
                continue;
            }
            self.subscribe(slot, key, 0, &r.room, 0, recover, r.presence);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn subscribe(
        &mut self,
        slot: usize,
        key: ConnKey,
        request_id: u32,
        room: &str,
        history: u32,
        recover: Option<Position>,
        presence: bool,
    ) {
        let member = self.member(key);
        let Some(peer) = self.peer_mut(slot) else { return };
        let (Some(user), Some(identity)) = (peer.user().cloned(), peer.identity()) else {
            return;
        };
        if !identity.may_subscribe(room) {
            let refusal = Refusal {
                code: ErrorCode::Forbidden,
                message: "token does not allow subscribing here",
            };
            fail_join(peer, request_id, room, refusal);
            return;
        }
        let (room, attempt) = peer.start_join(room);
        let input = Input::Join {
            origin: self.conn_origin(key, request_id, attempt),
            member,
            room: room.clone(),
            user,
            history,
            recover,
            presence,
        };
        self.send_to_owner(&room, input);
    }

    /// The connection left `room` (unsubscribe).
    fn leave(&mut self, slot: usize, key: ConnKey, room: &str) {
        let Some(room) = self.peer_mut(slot).and_then(|p| p.leave(room)) else {
            return;
        };
        self.drop_membership(key, room);
    }

    /// Leaves every room and the user index (the connection is closing).
    pub(super) fn leave_all(&mut self, slot: usize) {
        let Some(key) = self.conns.key(slot) else { return };
        if let Some((rooms, user)) = self.stream_leaves(slot) {
            for room in rooms {
                self.drop_membership(key, room);
            }
            if self.subs.remove_user(&user, key) {
                self.user_here(&user, false);
            }
            return;
        }
        let Some(peer) = self.peer_mut(slot) else { return };
        let rooms = peer.take_rooms();
        let user = peer.user().cloned();
        for room in rooms {
            self.drop_membership(key, room);
        }
        if let Some(user) = user
            && self.subs.remove_user(&user, key)
        {
            self.user_here(&user, false);
        }
    }

    /// Forgets the local membership and tells the owner, which ignores a
    /// connection it does not count.
    fn drop_membership(&mut self, key: ConnKey, room: Arc<str>) {
        if self.subs.remove(&room, key) {
            ShardStats::gauge(&self.stats.subscriptions, -1);
        }
        let member = self.member(key);
        self.send_to_owner(&room.clone(), Input::Leave { member, room });
    }

    fn request(&mut self, slot: usize, key: ConnKey, request_id: u32, body: BodyT) {
        // Notifications and analytics go to the storage service (storage.rs).
        let body = match body {
            BodyT::NotificationsQuery(q) => return self.notifications_query(slot, key, request_id, &q),
            BodyT::NotificationsMarkRead(m) => return self.mark_read(slot, key, request_id, *m),
            BodyT::AnalyticsEvent(e) => return self.analytics_event(slot, key, request_id, *e),
            other => other,
        };
        let origin = self.conn_origin(key, request_id, 0);
        let max_history = self.shared.config.max_history();
        let Some(peer) = self.peer_mut(slot) else { return };
        let (room, query) = match body {
            BodyT::HistoryQuery(q) => (
                q.room,
                herald_protocol::owner::Query::History {
                    before: q.before,
                    after: q.after,
                    limit: (q.limit as usize).clamp(1, max_history),
                },
            ),
            BodyT::PresenceQuery(q) => (q.room, herald_protocol::owner::Query::Presence),
            other => {
                let what = wire::Body::variant_name(other.body_type()).unwrap_or("request");
                let message = format!("{what} is not available on this node yet");
                peer.session.reply_error(request_id, ErrorCode::Unavailable, &message);
                return;
            }
        };
        if !peer.identity().is_some_and(|i| i.may_subscribe(&room)) {
            peer.session.reply_error(
                request_id,
                ErrorCode::Forbidden,
                "token does not allow reading this room",
            );
            return;
        }
        let room: Arc<str> = Arc::from(room);
        self.send_to_owner(&room.clone(), Input::Query { origin, room, query });
    }

    // ---- what owners answer -----------------------------------------------------

    pub(super) fn on_reply(&mut self, reply: Reply) {
        match reply {
            Reply::Owner(out) => self.owner_output(out),
            Reply::Counted { origin, count } => {
                if let Origin::Http { conn, .. } = origin
                    && let Some(resp) = self.api.counted(conn, count)
                {
                    self.finish_http(conn, resp);
                }
            }
            Reply::Shutdown => self.begin_drain(),
        }
    }

    fn owner_output(&mut self, out: Output<Origin>) {
        match out {
            Output::JoinResult {
                origin,
                room,
                presence,
                result,
            } => self.join_result(origin, room, presence, result),
            Output::PublishResult { origin, result, .. } => match origin {
                Origin::Conn { conn, request_id, .. } => {
                    let Some(slot) = self.conns.slot_of(conn) else { return };
                    let Some(peer) = self.peer_mut(slot) else { return };
                    match result {
                        Ok(position) => peer.session.ack(request_id, position),
                        Err(r) => peer.session.reply_error(request_id, r.code, r.message),
                    }
                    self.mark_write(slot);
                }
                Origin::Http { conn, .. } => self.finish_http(conn, Api::published(result)),
            },
            Output::Deliver {
                room,
                frame,
                audience,
                published,
                ..
            } => self.deliver(&room, &frame, audience, published),
            Output::Answer { origin, room, answer } => match origin {
                Origin::Conn { conn, request_id, .. } => self.answer_ws(conn, request_id, &room, answer),
                Origin::Http { conn, .. } => self.finish_http(conn, Api::answer(&room, answer)),
            },
            Output::Rooms { origin, rooms } => {
                if let Origin::Http { conn, .. } = origin
                    && let Some(resp) = self.api.rooms(conn, rooms)
                {
                    self.finish_http(conn, resp);
                }
            }
            // Log requests stay with the owner's shard.
            Output::Log(_) => {}
        }
    }

    fn join_result(&mut self, origin: Origin, room: Arc<str>, presence: bool, result: Result<Joined, Refusal>) {
        let Origin::Conn {
            conn,
            request_id,
            attempt,
            ..
        } = origin
        else {
            return;
        };
        if self.stream_joined(conn, room.clone(), presence, &result) {
            return;
        }
        // A connection that closed meanwhile already sent its leave.
        let Some(slot) = self.conns.slot_of(conn) else { return };
        let Some(peer) = self.peer_mut(slot) else { return };
        let joined = match result {
            Ok(j) => j,
            Err(refusal) => {
                if peer.join_refused(&room, attempt) {
                    fail_join(peer, request_id, &room, refusal);
                    self.mark_write(slot);
                }
                return;
            }
        };
        // Left, or joined again, since: the later answer is the one.
        if !peer.join_answered(&room, attempt) {
            return;
        }
        let refs: Vec<MessageRef<'_>> = joined.history.iter().map(|m| m.as_ref(&room, joined.epoch)).collect();
        let users: Vec<&str> = joined
            .presence
            .as_ref()
            .map(|p| p.users.iter().map(|s| &**s).collect())
            .unwrap_or_default();
        peer.session.subscribed(
            request_id,
            &SubscribedRef {
                room: &room,
                epoch: joined.epoch,
                offset: joined.offset,
                recovered: joined.recovered,
                history: &refs,
                presence: joined.presence.as_ref().map(|p| PresenceRef {
                    users: &users,
                    count: p.count,
                }),
            },
        );
        drop(refs);
        if self.subs.add(room, conn, presence) {
            ShardStats::gauge(&self.stats.subscriptions, 1);
        }
        self.mark_write(slot);
    }

    /// Queues one encoded frame to this shard's members of `room`.
    fn deliver(&mut self, room: &Arc<str>, frame: &Bytes, audience: Audience, published: Option<Instant>) {
        if audience == Audience::Kick {
            // The server API of another node disconnected this user.
            if let Some(user) = room.strip_prefix("user:") {
                self.disconnect_user(user);
            }
            return;
        }
        let me = self.id as u32;
        let mut delivered = 0u64;
        let (volatile, conflate) = match audience {
            Audience::Members { volatile, conflate } => (volatile, conflate.then_some(room)),
            Audience::Presence { .. } | Audience::Typing { .. } | Audience::Kick => (true, None),
        };
        let mut out = Outgoing::new(
            room,
            frame,
            volatile,
            self.shared.config.session.limits.max_outbound_bytes,
        );
        out.conflate = conflate;
        let (conns, to_write, stats) = (&mut self.conns, &mut self.to_write, &*self.stats);
        let mut send = |key: ConnKey| u64::from(queue_frame(conns, to_write, stats, key, &mut out));
        if let (Some(user), Audience::Members { .. }) = (room.strip_prefix("user:"), audience)
            && is_user_room(room)
        {
            // Every open connection of U, and others who joined user:U
            // explicitly (admins).
            let own = self.subs.user_conns(user);
            delivered += own.iter().map(|&key| send(key)).sum::<u64>();
            if let Some(members) = self.subs.members(room) {
                for (&slot, m) in members {
                    let key = m.key(slot);
                    if !own.contains(&key) {
                        delivered += send(key);
                    }
                }
            }
        } else if let Some(members) = self.subs.members(room) {
            let is = |slot: u32, m: &crate::subscriptions::LocalMember| Member {
                shard: me,
                conn: m.key(slot).id(),
            };
            for (&slot, m) in members {
                let include = match audience {
                    Audience::Members { .. } => true,
                    Audience::Presence { except } => m.presence && except != Some(is(slot, m)),
                    Audience::Typing { except } => except != Some(is(slot, m)),
                    Audience::Kick => false,
                };
                if include {
                    delivered += send(m.key(slot));
                }
            }
        }
        if let (Audience::Members { .. }, Some(published)) = (audience, published) {
            ShardStats::add(&self.stats.deliveries, delivered);
            self.stats.fanout_latency(published.elapsed());
        }
    }

    /// Queues a frame to every open connection of `user` on this shard;
    /// returns how many took it.
    pub(super) fn deliver_to_user(&mut self, user: &str, frame: &Bytes, volatile: bool) -> u64 {
        let room: Arc<str> = Arc::from(format!("user:{user}"));
        let mut out = Outgoing::new(
            &room,
            frame,
            volatile,
            self.shared.config.session.limits.max_outbound_bytes,
        );
        let mut n = 0;
        for &key in self.subs.user_conns(user) {
            n += u64::from(queue_frame(
                &mut self.conns,
                &mut self.to_write,
                &self.stats,
                key,
                &mut out,
            ));
        }
        n
    }

    fn answer_ws(&mut self, conn: ConnKey, request_id: u32, room: &str, answer: Answer) {
        let Some(slot) = self.conns.slot_of(conn) else { return };
        let Some(peer) = self.peer_mut(slot) else { return };
        let frame = match answer {
            Answer::NoRoom => {
                peer.session
                    .reply_error(request_id, ErrorCode::NotFound, "no such room");
                self.mark_write(slot);
                return;
            }
            Answer::Unavailable => {
                let message = "the room's log is behind; retry shortly";
                peer.session.reply_error(request_id, ErrorCode::Unavailable, message);
                self.mark_write(slot);
                return;
            }
            Answer::History {
                epoch,
                messages,
                has_more,
            } => {
                let messages = messages
                    .iter()
                    .map(|m| {
                        let mut t = wire::MessageT::default();
                        t.room = room.to_owned();
                        t.epoch = epoch;
                        t.offset = m.offset;
                        t.publisher = Some(m.publisher.to_string());
                        t.timestamp_ms = m.timestamp_ms;
                        t.payload = Some(m.payload.to_vec());
                        t.content_type = m.content_type.as_deref().map(str::to_owned);
                        t
                    })
                    .collect();
                let mut page = wire::HistoryPageT::default();
                page.room = room.to_owned();
                page.epoch = epoch;
                page.messages = Some(messages);
                page.has_more = has_more;
                with_encoder(|e| e.body(request_id, BodyT::HistoryPage(Box::new(page))))
            }
            Answer::Presence(p) => {
                let mut snapshot = wire::PresenceSnapshotT::default();
                snapshot.room = room.to_owned();
                snapshot.truncated = (p.users.len() as u64) < p.count;
                snapshot.users = Some(p.users.iter().map(|u| u.to_string()).collect());
                snapshot.count = p.count;
                with_encoder(|e| e.body(request_id, BodyT::PresenceSnapshot(Box::new(snapshot))))
            }
        };
        let _ = peer.session.send(frame, false);
        self.mark_write(slot);
    }

    /// Closes every open connection of `user` on this shard; returns how
    /// many.
    pub(super) fn disconnect_user(&mut self, user: &str) -> u64 {
        let keys = self.subs.user_conns(user).to_vec();
        for &key in &keys {
            let Some(slot) = self.conns.slot_of(key) else { continue };
            if let Some(peer) = self.peer_mut(slot) {
                peer.session.close(ErrorCode::Kicked, "disconnected by the server API");
            }
            self.session_events(slot);
        }
        keys.len() as u64
    }
}

/// One frame on its way to this shard's members, in each link's format:
/// the frame itself for WebSocket peers and, built on first need and then
/// shared, the event SSE streams send.
struct Outgoing<'a> {
    room: &'a Arc<str>,
    frame: &'a Bytes,
    volatile: bool,
    /// The room, when its namespace conflates.
    conflate: Option<&'a Arc<str>>,
    event: Option<sse::Event>,
    /// The bytes an SSE stream may have waiting.
    sse_limit: usize,
}

impl<'a> Outgoing<'a> {
    fn new(room: &'a Arc<str>, frame: &'a Bytes, volatile: bool, sse_limit: usize) -> Self {
        Self {
            room,
            frame,
            volatile,
            conflate: None,
            event: None,
            sse_limit,
        }
    }
}

/// Queues a frame to the connection `key` if it is still that connection
/// and its session is open, and schedules its write; true if it took the
/// frame. A free function so fan-out can run while a member map is
/// borrowed.
fn queue_frame(
    conns: &mut Connections,
    to_write: &mut Vec<usize>,
    stats: &ShardStats,
    key: ConnKey,
    out: &mut Outgoing<'_>,
) -> bool {
    let Some(c) = conns.by_key(key) else { return false };
    let queued = match &mut c.link {
        Link::Ws(w) => {
            let session = &mut w.peer.session;
            let outcome = match out.conflate {
                Some(room) if !out.volatile => session.send_conflated(out.frame.clone(), room),
                _ => session.send(out.frame.clone(), out.volatile),
            };
            match outcome {
                SendOutcome::Queued => true,
                SendOutcome::Replaced => {
                    stats.dropped(DropReason::Conflated);
                    true
                }
                SendOutcome::DroppedVolatile => {
                    stats.dropped(DropReason::Volatile);
                    return false;
                }
                // Closing: its error and close frames still need a write.
                SendOutcome::SlowConsumer | SendOutcome::Closed => false,
                SendOutcome::NotOpen => return false,
            }
        }
        Link::Sse(s) => {
            let frame = out.frame;
            let event = out.event.get_or_insert_with(|| sse::event_for_frame(frame));
            let limit = out.sse_limit;
            let outcome = match event {
                sse::Event::Message { epoch, offset, data } => {
                    s.message(out.room, *epoch, *offset, data, out.conflate.is_some(), limit)
                }
                sse::Event::Presence(e) if s.presence => s.event(e, limit),
                sse::Event::Notification(e) if s.notifications => s.event(e, limit),
                _ => SseOutcome::Skipped,
            };
            match outcome {
                SseOutcome::Queued => true,
                SseOutcome::Replaced => {
                    stats.dropped(DropReason::Conflated);
                    true
                }
                SseOutcome::Skipped => return false,
                SseOutcome::DroppedVolatile => {
                    stats.dropped(DropReason::Volatile);
                    return false;
                }
                // Its close event still needs a write.
                SseOutcome::SlowConsumer => {
                    stats.dropped(DropReason::SlowConsumer);
                    false
                }
            }
        }
        Link::Http(_) | Link::Closing => return false,
    };
    if !c.queued_write {
        c.queued_write = true;
        to_write.push(key.slot as usize);
    }
    queued
}

fn fail_join(peer: &mut Peer, request_id: u32, room: &str, r: Refusal) {
    if request_id == 0 {
        peer.session.resume_failed(room, r.code, r.message);
    } else {
        peer.session.reply_error(request_id, r.code, r.message);
    }
}
