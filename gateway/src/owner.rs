//! The room-owner side of a shard: offsets, logs, presence and typing for the
//! rooms that hash to this shard. A published message is encoded here once
//! and the same `Bytes` goes to every interested shard.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use herald_protocol::wire::{self, BodyT};
use herald_protocol::{ErrorCode, MessageRef, Position, with_encoder};

use crate::mesh::{Answer, Audience, ConnKey, Joined, Origin, Query, RoomInfo, ShardMsg};
use crate::room::{Incoming, Room, Stored};
use crate::shard::Shard;
use crate::stats::ShardStats;

/// Presence snapshots list at most this many users (with the full count).
const PRESENCE_LIST_MAX: usize = 100;

impl Shard {
    /// Bytes of history one answer may carry: half the outbound limit, so a
    /// replay never closes its own connection as a slow consumer.
    fn replay_budget(&self) -> usize {
        self.shared.config.session.limits.max_outbound_bytes / 2
    }

    fn room_mut(&mut self, name: &Arc<str>) -> Option<&mut Room> {
        if !self.owned.contains_key(name) {
            let cfg = &self.shared.config;
            let per_shard = cfg.max_rooms.div_ceil(self.mesh.shards());
            if self.owned.len() >= per_shard {
                return None;
            }
            // Every room of this shard run shares the run's epoch: a room is
            // only forgotten while it has no messages, so one recreated later
            // continues the same (empty) log and a client at (epoch, 0)
            // still resumes without a false gap.
            let epoch = self.epoch_base;
            let ns = cfg.namespace(name);
            let room = Room::new(epoch, self.mesh.shards(), ns.history.max(1), cfg.dedup_per_room)
                .with_max_age(ns.history_max_age);
            self.owned.insert(name.clone(), room);
            ShardStats::gauge(&self.stats.rooms, 1);
        }
        self.owned.get_mut(name)
    }

    /// Sends one frame to every shard with members in the room. Messages to
    /// `user:U` go to every shard: each connection of U is a member there
    /// without joining (see `Shard::user_conns`).
    fn broadcast(&mut self, name: &Arc<str>, frame: Bytes, audience: Audience, published: Instant) {
        let Some(room) = self.owned.get(name) else { return };
        let shards: Vec<usize> = if is_user_room(name) && matches!(audience, Audience::Members { .. }) {
            (0..self.mesh.shards()).collect()
        } else {
            room.interested_shards().collect()
        };
        for shard in shards {
            self.mesh.send(
                shard,
                ShardMsg::Deliver {
                    room: name.clone(),
                    frame: frame.clone(),
                    audience,
                    published,
                },
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn owner_join(
        &mut self,
        origin: Origin,
        name: Arc<str>,
        user: Arc<str>,
        history: u32,
        recover: Option<Position>,
        presence: bool,
        rejoin: bool,
    ) {
        let shard = origin.shard();
        let ns = self.shared.config.namespace(&name);
        let (max_subscribers, tracks_presence) = (ns.max_subscribers, ns.presence);
        let presence = presence && tracks_presence;
        let budget = self.replay_budget();
        let Some(room) = self.room_mut(&name) else {
            let result = Err((ErrorCode::Unavailable, "node room limit reached"));
            self.reply_join(origin, name, presence, result);
            return;
        };
        if !rejoin && room.subscribers() >= max_subscribers as u64 {
            let result = Err((ErrorCode::RoomFull, "room is full"));
            self.reply_join(origin, name, presence, result);
            return;
        }
        let newly_present = if rejoin {
            false
        } else {
            room.interest[shard] += 1;
            room.add_user(&user) && tracks_presence
        };
        room.prune(crate::unix_ms());
        let epoch = room.epoch;
        let offset = room.last_offset;
        let presence_snapshot = presence.then(|| {
            (
                room.users.keys().take(PRESENCE_LIST_MAX).cloned().collect(),
                room.users.len() as u64,
            )
        });
        let join = room.join(recover, history);
        // A replay larger than the byte budget would trip the connection's
        // outbound limit: send the newest part, and if that leaves a gap in a
        // recovery, say so (recovered = false) so the client refetches.
        let (replay, trimmed) = fit_bytes(join.history, budget, true);
        let joined = Joined {
            epoch,
            offset,
            recovered: join.recovered && !trimmed,
            history: replay.to_vec(),
            presence: presence_snapshot,
        };
        self.reply_join(origin, name.clone(), presence, Ok(joined));
        if newly_present {
            let frame = with_encoder(|e| {
                e.body(
                    0,
                    BodyT::PresenceJoin(Box::new({
                        let mut t = wire::PresenceJoinT::default();
                        t.room = name.to_string();
                        t.user = user.to_string();
                        t
                    })),
                )
            });
            let except = match origin {
                Origin::Ws { shard, conn, .. } => Some((shard, conn)),
                Origin::Http { .. } => None,
            };
            self.broadcast(&name, frame, Audience::Presence { except }, Instant::now());
        }
    }

    fn reply_join(
        &mut self,
        origin: Origin,
        room: Arc<str>,
        presence: bool,
        result: Result<Joined, crate::mesh::Refusal>,
    ) {
        self.mesh.send(
            origin.shard(),
            ShardMsg::JoinResult {
                origin,
                room,
                presence,
                result,
            },
        );
    }

    pub(crate) fn owner_leave(&mut self, from: usize, name: &Arc<str>, user: &str) {
        let Some(room) = self.owned.get_mut(name) else { return };
        if let Some(n) = room.interest.get_mut(from) {
            *n = n.saturating_sub(1);
        }
        let gone = room.remove_user(user);
        if gone && self.shared.config.namespace(name).presence {
            let frame = with_encoder(|e| {
                e.body(
                    0,
                    BodyT::PresenceLeave(Box::new({
                        let mut t = wire::PresenceLeaveT::default();
                        t.room = name.to_string();
                        t.user = user.to_owned();
                        t
                    })),
                )
            });
            self.broadcast(name, frame, Audience::Presence { except: None }, Instant::now());
        }
        // A room nobody uses and that holds nothing is forgotten, so joins to
        // random names cannot fill the room limit.
        if let Some(room) = self.owned.get(name)
            && room.subscribers() == 0
            && room.last_offset == 0
        {
            self.owned.remove(name);
            ShardStats::gauge(&self.stats.rooms, -1);
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn owner_publish(
        &mut self,
        origin: Origin,
        name: Arc<str>,
        user: &str,
        payload: Bytes,
        content_type: Option<String>,
        volatile: bool,
        idempotency_key: Option<String>,
        received: Instant,
    ) {
        let ns = self.shared.config.namespace(&name);
        let refusal = if !ns.client_publish && !matches!(origin, Origin::Http { .. }) {
            Some((ErrorCode::Forbidden, "only the server publishes in this namespace"))
        } else if volatile && !ns.volatile {
            Some((
                ErrorCode::VolatileNotAllowed,
                "volatile messages are not allowed in this namespace",
            ))
        } else {
            None
        };
        if let Some(refusal) = refusal {
            let result = Err(refusal);
            self.mesh
                .send(origin.shard(), ShardMsg::PublishResult { origin, result });
            return;
        }
        let Some(room) = self.room_mut(&name) else {
            let result = Err((ErrorCode::Unavailable, "node room limit reached"));
            self.mesh
                .send(origin.shard(), ShardMsg::PublishResult { origin, result });
            return;
        };
        let now_ms = crate::unix_ms();
        let (frame, position) = if volatile {
            let frame = with_encoder(|e| {
                e.message(&MessageRef {
                    room: &name,
                    epoch: room.epoch,
                    offset: 0,
                    publisher: user,
                    timestamp_ms: now_ms,
                    payload: &payload,
                    content_type: content_type.as_deref(),
                    volatile: true,
                })
            });
            let position = Position {
                epoch: room.epoch,
                offset: 0,
            };
            (frame, position)
        } else {
            if let Some(key) = idempotency_key.as_deref()
                && let Some(position) = room.duplicate(user, key)
            {
                let result = Ok(position);
                self.mesh
                    .send(origin.shard(), ShardMsg::PublishResult { origin, result });
                return;
            }
            let incoming = Incoming {
                publisher: user,
                timestamp_ms: now_ms,
                payload,
                content_type,
                idempotency_key: idempotency_key.as_deref(),
            };
            room.prune(now_ms);
            let stored = room.append(&name, incoming, |m| with_encoder(|e| e.message(m)));
            (stored.frame.clone(), room.position())
        };
        ShardStats::add(&self.stats.publishes, 1);
        self.broadcast(&name, frame, Audience::Members { volatile }, received);
        let result = Ok(position);
        self.mesh
            .send(origin.shard(), ShardMsg::PublishResult { origin, result });
    }

    pub(crate) fn owner_typing(&mut self, from: usize, conn: ConnKey, name: Arc<str>, user: &str, active: bool) {
        if !self.owned.contains_key(&name) {
            return;
        }
        let frame = with_encoder(|e| {
            e.body(
                0,
                BodyT::TypingEvent(Box::new({
                    let mut t = wire::TypingEventT::default();
                    t.room = name.to_string();
                    t.user = user.to_owned();
                    t.active = active;
                    t
                })),
            )
        });
        self.broadcast(&name, frame, Audience::Typing { except: (from, conn) }, Instant::now());
    }

    pub(crate) fn owner_query(&mut self, origin: Origin, name: Arc<str>, query: Query) {
        let budget = self.replay_budget();
        let answer = match (self.owned.get_mut(&name), query) {
            (None, _) => Answer::NoRoom,
            (Some(room), Query::History { before, after, limit }) => {
                room.prune(crate::unix_ms());
                let epoch = room.epoch;
                let (page, more) = room.range(before, after, limit);
                // Forward paging (after) keeps the oldest; otherwise the newest.
                let (page, trimmed) = fit_bytes(page, budget, after == 0);
                Answer::History {
                    epoch,
                    messages: page.to_vec(),
                    has_more: more || trimmed,
                }
            }
            (Some(room), Query::Presence) => Answer::Presence {
                users: room.users.keys().take(PRESENCE_LIST_MAX).cloned().collect(),
                count: room.users.len() as u64,
            },
        };
        self.mesh.send(
            origin.shard(),
            ShardMsg::Answer {
                origin,
                room: name,
                answer,
            },
        );
    }

    pub(crate) fn owner_list(&mut self, origin: Origin) {
        let rooms = self
            .owned
            .iter()
            .map(|(name, r)| RoomInfo {
                name: name.clone(),
                epoch: r.epoch,
                offset: r.last_offset,
                subscribers: r.subscribers(),
                users: r.users.len() as u64,
            })
            .collect();
        self.mesh.send(origin.shard(), ShardMsg::Rooms { origin, rooms });
    }
}

/// `user:U` rooms reach every connection of U.
pub(crate) fn is_user_room(name: &str) -> bool {
    name.starts_with("user:")
}

/// The longest run of `messages` (from the newest end if `keep_newest`, else
/// from the oldest) whose encoded size fits `budget`; and whether any message
/// was left out.
fn fit_bytes(messages: &[Stored], budget: usize, keep_newest: bool) -> (&[Stored], bool) {
    let mut used = 0;
    let mut fits = |m: &Stored| {
        used += m.frame.len();
        used <= budget
    };
    let n = if keep_newest {
        messages.iter().rev().take_while(|m| fits(m)).count()
    } else {
        messages.iter().take_while(|m| fits(m)).count()
    };
    let kept = if keep_newest {
        &messages[messages.len() - n..]
    } else {
        &messages[..n]
    };
    (kept, n < messages.len())
}
