//! The connection side of a shard: what a session's events become (messages
//! to room owners) and what owners' answers and deliveries become (frames on
//! this shard's connections).

use std::sync::Arc;

use bytes::Bytes;
use herald_protocol::wire::{self, BodyT};
use herald_protocol::{
    Accept, ErrorCode, MessageRef, PresenceRef, ResumeRoom, SendOutcome, ServerEvent, SubscribedRef, with_encoder,
};

use crate::auth::AuthError;
use crate::conn::{Conn, State};
use crate::mesh::{Answer, Audience, ConnKey, Joined, Origin, Query, Refusal, ShardMsg};
use crate::shard::{LocalMember, Shard};
use crate::stats::{DropReason, ShardStats};
use slab::Slab;

/// Which shard owns a room on this node.
pub(crate) fn shard_of(room: &str, shards: usize) -> usize {
    // FNV-1a: stable across processes and versions (unlike RandomState).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in room.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % shards.max(1) as u64) as usize
}

impl Shard {
    fn ws_origin(&self, conn: ConnKey, request_id: u32) -> Origin {
        Origin::Ws {
            shard: self.id,
            conn,
            request_id,
        }
    }

    fn owner(&self, room: &str) -> usize {
        shard_of(room, self.mesh.shards())
    }

    /// Runs everything the session of `slot` has to say.
    pub(crate) fn session_events(&mut self, slot: usize) {
        loop {
            let Some(w) = self.conns.get_mut(slot).and_then(Conn::ws_mut) else {
                return;
            };
            let Some(event) = w.session.poll_event() else { break };
            self.session_event(slot, event);
        }
        self.mark_write(slot);
    }

    fn session_event(&mut self, slot: usize, event: ServerEvent) {
        let Some(key) = self.key(slot) else { return };
        match event {
            ServerEvent::Connect { token, resume, .. } => self.connect(slot, key, &token, resume),
            ServerEvent::Subscribe {
                request_id,
                room,
                history,
                recover,
                presence,
            } => self.subscribe(slot, key, request_id, &room, history, recover, presence),
            ServerEvent::Unsubscribed { room } => self.leave(slot, &room),
            ServerEvent::Publish {
                request_id,
                room,
                payload,
                content_type,
                volatile,
                idempotency_key,
            } => {
                let Some(w) = self.conns.get_mut(slot).and_then(Conn::ws_mut) else {
                    return;
                };
                let (Some(user), Some(identity)) = (w.user.clone(), w.identity.as_ref()) else {
                    return;
                };
                if !identity.may_publish(&room) {
                    w.session
                        .reply_error(request_id, ErrorCode::Forbidden, "token does not allow publishing here");
                    return;
                }
                let room: Arc<str> = Arc::from(room);
                let owner = self.owner(&room);
                self.mesh.send(
                    owner,
                    ShardMsg::Publish {
                        origin: self.ws_origin(key, request_id),
                        room,
                        user,
                        payload,
                        content_type,
                        volatile,
                        idempotency_key,
                        received: std::time::Instant::now(),
                    },
                );
            }
            ServerEvent::Typing { room, active } => {
                let Some(w) = self.conns.get_mut(slot).and_then(Conn::ws_mut) else {
                    return;
                };
                let Some(user) = w.user.clone() else { return };
                let Some(room) = w.joined.iter().find(|r| ***r == *room).cloned() else {
                    return;
                };
                let owner = self.owner(&room);
                self.mesh.send(
                    owner,
                    ShardMsg::Typing {
                        from: self.id,
                        conn: key,
                        room,
                        user,
                        active,
                    },
                );
            }
            ServerEvent::Request { request_id, body } => self.request(slot, key, request_id, body),
            ServerEvent::RateLimited { .. } => self.stats.dropped(DropReason::RateLimited),
            ServerEvent::Closed { .. } => {}
        }
    }

    fn connect(&mut self, slot: usize, key: ConnKey, token: &str, resume: Vec<ResumeRoom>) {
        let verified = self.shared.verifier.verify(token, crate::unix_secs());
        let node_id = self.shared.config.node_id.clone();
        let max_name = self.shared.config.session.limits.max_room_name_bytes;
        let Some(w) = self.conns.get_mut(slot).and_then(Conn::ws_mut) else {
            return;
        };
        let identity = match verified {
            Ok(identity) => identity,
            Err(AuthError::Expired) => {
                w.session.reject(ErrorCode::TokenExpired, "token expired");
                return;
            }
            Err(e) => {
                w.session
                    .reject(ErrorCode::AuthFailed, &format!("authentication failed: {e}"));
                return;
            }
        };
        let user: Arc<str> = Arc::from(identity.user.as_str());
        let accept = Accept {
            session_id: format!("{node_id}-{}-{}-{}", self.id, key.slot, key.generation),
            node_id,
            user_id: identity.user.clone(),
            server_time_ms: crate::unix_ms(),
        };
        w.session.accept(std::time::Instant::now(), &accept);
        w.user = Some(user.clone());
        w.identity = Some(identity);
        // Every connection of user U is in `user:U` without joining it.
        let users = self.user_conns.entry(user).or_default();
        users.push(key.slot);
        for r in resume {
            let recover = (r.position.epoch != 0).then_some(r.position);
            if !herald_protocol::valid_room_name(&r.room, max_name) {
                if let Some(w) = self.conns.get_mut(slot).and_then(Conn::ws_mut) {
                    w.session
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
        recover: Option<herald_protocol::Position>,
        presence: bool,
    ) {
        let Some(w) = self.conns.get_mut(slot).and_then(Conn::ws_mut) else {
            return;
        };
        let (Some(user), Some(identity)) = (w.user.clone(), w.identity.as_ref()) else {
            return;
        };
        if !identity.may_subscribe(room) {
            fail_join(
                w,
                request_id,
                room,
                (ErrorCode::Forbidden, "token does not allow subscribing here"),
            );
            return;
        }
        let (room, rejoin) = match w.joined.iter().find(|r| ***r == *room) {
            Some(r) => (r.clone(), true),
            None => {
                let r: Arc<str> = Arc::from(room);
                w.joined.push(r.clone());
                (r, false)
            }
        };
        let owner = self.owner(&room);
        self.mesh.send(
            owner,
            ShardMsg::Join {
                origin: self.ws_origin(key, request_id),
                room,
                user,
                history,
                recover,
                presence,
                rejoin,
            },
        );
    }

    /// The connection left `room` (unsubscribe or close).
    fn leave(&mut self, slot: usize, room: &str) {
        let Some(w) = self.conns.get_mut(slot).and_then(Conn::ws_mut) else {
            return;
        };
        let Some(i) = w.joined.iter().position(|r| **r == *room) else {
            return;
        };
        let room = w.joined.swap_remove(i);
        let Some(user) = w.user.clone() else { return };
        self.send_leave(slot, room, user);
    }

    /// Drops the local membership and tells the room's owner.
    fn send_leave(&mut self, slot: usize, room: Arc<str>, user: Arc<str>) {
        self.forget_local(slot, &room);
        let owner = self.owner(&room);
        self.mesh.send(
            owner,
            ShardMsg::Leave {
                from: self.id,
                room,
                user,
            },
        );
    }

    /// Leaves every room (the connection is closing).
    pub(crate) fn leave_all(&mut self, slot: usize) {
        let Some(w) = self.conns.get_mut(slot).and_then(Conn::ws_mut) else {
            return;
        };
        let rooms = std::mem::take(&mut w.joined);
        let Some(user) = w.user.clone() else { return };
        for room in rooms {
            self.send_leave(slot, room, user.clone());
        }
    }

    fn forget_local(&mut self, slot: usize, room: &str) {
        if let Some(members) = self.local.get_mut(room)
            && members.remove(&(slot as u32)).is_some()
        {
            ShardStats::gauge(&self.stats.subscriptions, -1);
            if members.is_empty() {
                self.local.remove(room);
            }
        }
    }

    fn request(&mut self, slot: usize, key: ConnKey, request_id: u32, body: BodyT) {
        let origin = self.ws_origin(key, request_id);
        let max_history = self.shared.config.max_history();
        let (room, query) = match body {
            BodyT::HistoryQuery(q) => (
                q.room,
                Query::History {
                    before: q.before,
                    after: q.after,
                    limit: (q.limit as usize).clamp(1, max_history),
                },
            ),
            BodyT::PresenceQuery(q) => (q.room, Query::Presence),
            other => {
                let what = wire::Body::variant_name(other.body_type()).unwrap_or("request");
                let message = format!("{what} is not available on this node yet");
                if let Some(w) = self.conns.get_mut(slot).and_then(Conn::ws_mut) {
                    w.session.reply_error(request_id, ErrorCode::Unavailable, &message);
                }
                return;
            }
        };
        let Some(w) = self.conns.get_mut(slot).and_then(Conn::ws_mut) else {
            return;
        };
        if !w.identity.as_ref().is_some_and(|i| i.may_subscribe(&room)) {
            w.session.reply_error(
                request_id,
                ErrorCode::Forbidden,
                "token does not allow reading this room",
            );
            return;
        }
        let room: Arc<str> = Arc::from(room);
        let owner = self.owner(&room);
        self.mesh.send(owner, ShardMsg::Query { origin, room, query });
    }

    // ---- answers from room owners ------------------------------------------

    pub(crate) fn on_message(&mut self, msg: ShardMsg) {
        match msg {
            ShardMsg::Join {
                origin,
                room,
                user,
                history,
                recover,
                presence,
                rejoin,
            } => self.owner_join(origin, room, user, history, recover, presence, rejoin),
            ShardMsg::Leave { from, room, user } => self.owner_leave(from, &room, &user),
            ShardMsg::Publish {
                origin,
                room,
                user,
                payload,
                content_type,
                volatile,
                idempotency_key,
                received,
            } => self.owner_publish(
                origin,
                room,
                &user,
                payload,
                content_type,
                volatile,
                idempotency_key,
                received,
            ),
            ShardMsg::Typing {
                from,
                conn,
                room,
                user,
                active,
            } => self.owner_typing(from, conn, room, &user, active),
            ShardMsg::Query { origin, room, query } => self.owner_query(origin, room, query),
            ShardMsg::ListRooms { origin } => self.owner_list(origin),
            ShardMsg::DisconnectUser { origin, user } => self.disconnect_user(origin, &user),
            ShardMsg::Shutdown => self.begin_drain(),
            ShardMsg::NotifyUser { origin, user, frame } => {
                let count = self.deliver_to_user(&user, &frame, false);
                self.mesh.send(origin.shard(), ShardMsg::Counted { origin, count });
            }
            ShardMsg::JoinResult {
                origin,
                room,
                presence,
                result,
            } => self.join_result(origin, room, presence, result),
            ShardMsg::PublishResult { origin, result } => match origin {
                Origin::Ws { conn, request_id, .. } => {
                    let Some(slot) = self.slot_of(conn) else { return };
                    let Some(w) = self.conns.get_mut(slot).and_then(Conn::ws_mut) else {
                        return;
                    };
                    match result {
                        Ok(position) => w.session.ack(request_id, position),
                        Err((code, message)) => w.session.reply_error(request_id, code, message),
                    }
                    self.mark_write(slot);
                }
                Origin::Http { conn, .. } => self.api_published(conn, result),
            },
            ShardMsg::Deliver {
                room,
                frame,
                audience,
                published,
            } => self.deliver(&room, &frame, audience, published),
            ShardMsg::Answer { origin, room, answer } => match origin {
                Origin::Ws { conn, request_id, .. } => self.answer_ws(conn, request_id, &room, answer),
                Origin::Http { conn, .. } => self.api_answer(conn, &room, answer),
            },
            ShardMsg::Rooms { origin, rooms } => self.api_rooms(origin, rooms),
            ShardMsg::Counted { origin, count } => self.api_counted(origin, count),
        }
    }

    fn join_result(&mut self, origin: Origin, room: Arc<str>, presence: bool, result: Result<Joined, Refusal>) {
        let Origin::Ws { conn, request_id, .. } = origin else {
            return;
        };
        // A connection that closed meanwhile already sent its Leave.
        let Some(slot) = self.slot_of(conn) else { return };
        let Some(w) = self.conns.get_mut(slot).and_then(Conn::ws_mut) else {
            return;
        };
        // Unsubscribed while the join was in flight: the Leave already went
        // to the owner after the Join, so only forget the answer.
        if !w.joined.contains(&room) {
            return;
        }
        let joined = match result {
            Ok(j) => j,
            Err(refusal) => {
                if let Some(i) = w.joined.iter().position(|r| *r == room) {
                    w.joined.swap_remove(i);
                }
                fail_join(w, request_id, &room, refusal);
                self.mark_write(slot);
                return;
            }
        };
        let generation = conn.generation;
        let refs: Vec<MessageRef<'_>> = joined.history.iter().map(|m| m.as_ref(&room, joined.epoch)).collect();
        let users: Vec<&str> = joined
            .presence
            .as_ref()
            .map(|(u, _)| u.iter().map(|s| &**s).collect())
            .unwrap_or_default();
        w.session.subscribed(
            request_id,
            &SubscribedRef {
                room: &room,
                epoch: joined.epoch,
                offset: joined.offset,
                recovered: joined.recovered,
                history: &refs,
                presence: joined.presence.as_ref().map(|(_, count)| PresenceRef {
                    users: &users,
                    count: *count,
                }),
            },
        );
        let members = self.local.entry(room).or_default();
        if members
            .insert(slot as u32, LocalMember { generation, presence })
            .is_none()
        {
            ShardStats::gauge(&self.stats.subscriptions, 1);
        }
        self.mark_write(slot);
    }

    /// Queues one encoded frame to this shard's members of `room`.
    fn deliver(&mut self, room: &str, frame: &Bytes, audience: Audience, published: std::time::Instant) {
        if let (Some(user), Audience::Members { volatile }) = (room.strip_prefix("user:"), audience) {
            let mut delivered = self.deliver_to_user(user, frame, volatile);
            // Others who joined user:U explicitly (admins) get it too.
            let user_slots = self.user_conns.get(user).cloned().unwrap_or_default();
            let others: Vec<(u32, u32)> = self.local.get(room).map_or_else(Vec::new, |m| {
                m.iter()
                    .filter(|(slot, _)| !user_slots.contains(slot))
                    .map(|(slot, m)| (*slot, m.generation))
                    .collect()
            });
            for (slot, generation) in others {
                delivered += u64::from(self.send_to(slot, generation, frame, volatile));
            }
            ShardStats::add(&self.stats.deliveries, delivered);
            self.stats.fanout_latency(published.elapsed());
            return;
        }
        let Some(members) = self.local.get(room) else { return };
        let me = self.id;
        let volatile = !matches!(audience, Audience::Members { volatile: false });
        let mut delivered = 0u64;
        for (&slot, m) in members {
            let include = match audience {
                Audience::Members { .. } => true,
                Audience::Presence { except } => m.presence && except != Some((me, key(slot, m.generation))),
                Audience::Typing { except } => except != (me, key(slot, m.generation)),
            };
            if !include {
                continue;
            }
            let queued = queue_frame(
                &mut self.conns,
                &mut self.to_write,
                &self.stats,
                (slot, m.generation),
                frame,
                volatile,
            );
            delivered += u64::from(queued);
        }
        if matches!(audience, Audience::Members { .. }) {
            ShardStats::add(&self.stats.deliveries, delivered);
            self.stats.fanout_latency(published.elapsed());
        }
    }

    /// Queues a frame to every connection of `user` on this shard; returns
    /// how many took it.
    fn deliver_to_user(&mut self, user: &str, frame: &Bytes, volatile: bool) -> u64 {
        let Some(slots) = self.user_conns.get(user).cloned() else {
            return 0;
        };
        let mut n = 0;
        for slot in slots {
            let Some(generation) = self.conns.get(slot as usize).map(|c| c.generation) else {
                continue;
            };
            n += u64::from(self.send_to(slot, generation, frame, volatile));
        }
        n
    }

    /// Queues a frame to one connection; true if queued.
    fn send_to(&mut self, slot: u32, generation: u32, frame: &Bytes, volatile: bool) -> bool {
        queue_frame(
            &mut self.conns,
            &mut self.to_write,
            &self.stats,
            (slot, generation),
            frame,
            volatile,
        )
    }

    fn answer_ws(&mut self, conn: ConnKey, request_id: u32, room: &str, answer: Answer) {
        let Some(slot) = self.slot_of(conn) else { return };
        let Some(w) = self.conns.get_mut(slot).and_then(Conn::ws_mut) else {
            return;
        };
        let frame = match answer {
            Answer::NoRoom => {
                w.session.reply_error(request_id, ErrorCode::NotFound, "no such room");
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
                        t.publisher = Some(m.publisher.clone());
                        t.timestamp_ms = m.timestamp_ms;
                        t.payload = Some(m.payload.to_vec());
                        t.content_type = m.content_type.clone();
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
            Answer::Presence { users, count } => {
                let mut snapshot = wire::PresenceSnapshotT::default();
                snapshot.room = room.to_owned();
                snapshot.truncated = (users.len() as u64) < count;
                snapshot.users = Some(users.iter().map(|u| u.to_string()).collect());
                snapshot.count = count;
                with_encoder(|e| e.body(request_id, BodyT::PresenceSnapshot(Box::new(snapshot))))
            }
        };
        let _ = w.session.send(frame, false);
        self.mark_write(slot);
    }

    /// Closes every connection of `user` on this shard and reports the count.
    fn disconnect_user(&mut self, origin: Origin, user: &str) {
        let slots: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(&c.state, State::Ws(w) if w.user.as_deref() == Some(user)))
            .map(|(s, _)| s)
            .collect();
        for &slot in &slots {
            if let Some(w) = self.conns.get_mut(slot).and_then(Conn::ws_mut) {
                w.session.close(ErrorCode::Kicked, "disconnected by the server API");
            }
            self.session_events(slot);
        }
        self.mesh.send(
            origin.shard(),
            ShardMsg::Counted {
                origin,
                count: slots.len() as u64,
            },
        );
    }
}

/// Queues a frame to the connection in `slot` if it is still `generation`,
/// and schedules its write; true if the session took the frame. A free
/// function so fan-out can run while the room's member map is borrowed.
fn queue_frame(
    conns: &mut Slab<Conn>,
    to_write: &mut Vec<usize>,
    stats: &ShardStats,
    (slot, generation): (u32, u32),
    frame: &Bytes,
    volatile: bool,
) -> bool {
    let Some(c) = conns.get_mut(slot as usize) else {
        return false;
    };
    if c.generation != generation {
        return false;
    }
    let State::Ws(w) = &mut c.state else { return false };
    let queued = match w.session.send(frame.clone(), volatile) {
        SendOutcome::Queued => true,
        SendOutcome::DroppedVolatile => {
            stats.dropped(DropReason::Volatile);
            return false;
        }
        // Closing: its error and close frames still need a write.
        SendOutcome::SlowConsumer | SendOutcome::Closed | SendOutcome::NotOpen => false,
    };
    if !c.queued_write {
        c.queued_write = true;
        to_write.push(slot as usize);
    }
    queued
}

fn key(slot: u32, generation: u32) -> ConnKey {
    ConnKey { slot, generation }
}

fn fail_join(w: &mut crate::conn::Ws, request_id: u32, room: &str, (code, message): Refusal) {
    if request_id == 0 {
        w.session.resume_failed(room, code, message);
    } else {
        w.session.reply_error(request_id, code, message);
    }
}
