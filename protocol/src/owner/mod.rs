//! The owner of a set of rooms, as a pure state machine.
//!
//! Every room has exactly one owner (on a single node: one shard). The owner
//! assigns offsets, keeps a bounded memory window of recent messages, the
//! members of each room by connection, presence by user, idempotency keys,
//! and which shards have members. It is driven like the sessions: feed
//! [`Input`]s to [`RoomOwner::handle`] with the time, pull [`Output`]s with
//! [`RoomOwner::poll_output`]. It reads no clock and touches no socket or
//! disk: durability is a log store beneath it, spoken to only through
//! [`LogRequest`] outputs and [`LogDone`] inputs that may come back at any
//! later time.
//!
//! **Acknowledged means durable.** A stored publish is answered and fanned
//! out only when the log store has completed its append. Operations on a
//! room (appends, joins, history reads, acknowledgements of duplicates) are
//! released strictly in the order they arrived, whatever order the store
//! answers in, so a joining connection's replay and the deliveries after it
//! never leave a gap or repeat a message.

mod config;
mod io;
mod log;
mod replay;
mod room;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::codec::with_encoder;
use crate::wire::{self, BodyT, ErrorCode};
use crate::{MessageRef, Position};

pub use config::{NamespaceConfig, OwnerConfig, namespace_of};
pub use io::{Answer, Audience, Input, Joined, Output, PresenceSnapshot, Query, Refusal, RoomInfo};
pub use log::{
    ClusterHead, ClusterRequest, DurableHead, LogDone, LogError, LogRequest, ReadPage, ReadRange, Sequenced, Stored,
    StreamEvent, Ticket, Unsequenced,
};
use replay::{history_needs_store, join_read_range, resolve_history, resolve_join};
use room::Room;

/// Presence snapshots list at most this many users (with the full count).
pub const PRESENCE_LIST_MAX: usize = 100;

/// Messages a clustered room's stream keeps at least (more when its
/// namespace's memory window is larger; fewer only if retention says so).
const MIN_STREAM_KEEP: u64 = 1_000;

/// Why a room refuses work while its log store is behind.
const BEHIND: &str = "the room's log is behind; retry shortly";

/// Why a publish failed in the log store.
const NOT_STORED: &str = "the message could not be stored";

/// The wire refusal for a log store failure: a full queue is `Overloaded`
/// (nothing was tried), a failure `Unavailable`.
fn refusal_for(e: &LogError) -> (ErrorCode, &'static str) {
    match e {
        LogError::Overloaded => (ErrorCode::Overloaded, "the node's storage queue is full; retry shortly"),
        LogError::Failed(_) => (ErrorCode::Unavailable, NOT_STORED),
    }
}

/// A connection as the owner knows it: the shard it lives on and an id that
/// is unique there for the connection's whole life (a reused slot gets a new
/// id), so nothing of one connection can reach the next one in its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Member {
    /// Shard (or, later, node) that holds the connection.
    pub shard: u32,
    /// Connection id on that shard.
    pub conn: u64,
}

/// `user:U` rooms reach every connection of U.
pub fn is_user_room(name: &str) -> bool {
    name.starts_with("user:")
}

/// An operation waiting in a room for the log store or for the operations
/// before it.
#[derive(Debug)]
enum Op<O> {
    Append {
        ticket: Ticket,
        origin: O,
        message: Stored,
        frame: Bytes,
        key: Option<Box<str>>,
        received: Instant,
        outcome: Option<Result<(), LogError>>,
    },
    /// A repeated idempotency key: answered once what it repeats is.
    Ack {
        origin: O,
        publisher: Arc<str>,
        key: Box<str>,
        position: Position,
    },
    Join {
        origin: O,
        member: Member,
        history: u32,
        recover: Option<Position>,
        presence: bool,
        read: Read,
    },
    History {
        origin: O,
        range: ReadRange,
        read: Read,
    },
    /// A message of a clustered room's log, released in its turn.
    Streamed {
        message: Stored,
    },
}

/// A read from the log store an operation needs.
#[derive(Debug)]
enum Read {
    /// None asked (yet).
    None,
    Waiting(Ticket),
    Done(Result<ReadPage, LogError>),
}

impl<O> Op<O> {
    fn ticket(&self) -> Option<Ticket> {
        match self {
            Op::Append { ticket, .. } => Some(*ticket),
            Op::Join {
                read: Read::Waiting(t), ..
            }
            | Op::History {
                read: Read::Waiting(t), ..
            } => Some(*t),
            _ => None,
        }
    }

    fn ready(&self) -> bool {
        match self {
            Op::Append { outcome, .. } => outcome.is_some(),
            Op::Ack { .. } | Op::Streamed { .. } => true,
            Op::Join { read, .. } | Op::History { read, .. } => !matches!(read, Read::Waiting(_)),
        }
    }
}

/// The owner of a set of rooms. See the [module docs](self).
#[derive(Debug)]
pub struct RoomOwner<O> {
    config: OwnerConfig,
    rooms: HashMap<Arc<str>, Room<O>>,
    next_ticket: Ticket,
    outputs: VecDeque<Output<O>>,
    /// Cluster requests answered without a room held here: publishes and
    /// presence reads, by ticket.
    awaiting: HashMap<Ticket, Awaiting<O>>,
    /// `user:U` rooms whose follow failed while U has connections here, and
    /// when to ask again (ms): U must not miss what other nodes send.
    follow_retries: VecDeque<(Arc<str>, u64)>,
}

/// How long a failed follow of a user's room waits before it is asked again.
const FOLLOW_RETRY_MS: u64 = 1_000;

/// Who waits for a cluster answer that needs no room state.
#[derive(Debug)]
enum Awaiting<O> {
    Publish(O),
    Presence(O),
}

impl<O: Clone> RoomOwner<O> {
    /// An owner with no rooms.
    pub fn new(config: OwnerConfig) -> Self {
        Self {
            config,
            rooms: HashMap::new(),
            next_ticket: 1,
            outputs: VecDeque::new(),
            awaiting: HashMap::new(),
            follow_retries: VecDeque::new(),
        }
    }

    // ---- getters ----------------------------------------------------------

    /// The settings.
    pub fn config(&self) -> &OwnerConfig {
        &self.config
    }

    /// Rooms held.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// The latest released position of `room`, if held.
    pub fn position(&self, room: &str) -> Option<Position> {
        self.rooms.get(room).map(Room::position)
    }

    /// Member connections of `room` (0 if not held).
    pub fn subscribers(&self, room: &str) -> usize {
        self.rooms.get(room).map_or(0, Room::subscribers)
    }

    /// Whether `member` is a member of `room`.
    pub fn is_member(&self, room: &str, member: Member) -> bool {
        self.rooms.get(room).is_some_and(|r| r.is_member(member))
    }

    /// The messages the memory window of `room` holds, oldest first.
    pub fn window(&mut self, room: &str) -> Vec<Stored> {
        self.rooms
            .get_mut(room)
            .map(|r| r.window_after(0).to_vec())
            .unwrap_or_default()
    }

    /// Follows wait to be asked again ([`Input::Tick`] does it when due).
    pub fn has_retries(&self) -> bool {
        !self.follow_retries.is_empty()
    }

    /// Operations of all rooms waiting for the log store or for earlier ones.
    pub fn pending(&self) -> usize {
        self.rooms.values().map(|r| r.ops.len()).sum()
    }

    // ---- output -----------------------------------------------------------

    /// The next output.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output<O>> {
        self.outputs.pop_front()
    }

    // ---- input ------------------------------------------------------------

    /// Handles one input at wall-clock time `now_ms` (ms since the Unix
    /// epoch: message timestamps and history age).
    pub fn handle(&mut self, now_ms: u64, input: Input<O>) {
        let Some(input) = self.defer_while_loading(input) else {
            return;
        };
        match input {
            Input::Join {
                origin,
                member,
                room,
                user,
                history,
                recover,
                presence,
            } => self.join(now_ms, origin, member, room, &user, history, recover, presence),
            Input::Leave { member, room } => self.leave(member, &room),
            Input::Publish {
                origin,
                room,
                user,
                payload,
                content_type,
                volatile,
                idempotency_key,
                from_server,
                received,
            } => {
                let publish = Publish {
                    user,
                    payload,
                    content_type: content_type.map(Arc::from),
                    volatile,
                    idempotency_key,
                    from_server,
                    received,
                };
                self.publish(now_ms, origin, room, publish);
            }
            Input::Typing {
                member,
                room,
                user,
                active,
            } => self.typing(member, &room, &user, active),
            Input::Query { origin, room, query } => self.query(now_ms, origin, room, query),
            Input::UserHere { room, here, .. } => self.user_here(&room, here),
            Input::Tick => self.retry_follows(now_ms),
            Input::ListRooms { origin } => {
                let rooms = self
                    .rooms
                    .iter()
                    .map(|(name, r)| RoomInfo {
                        name: name.clone(),
                        epoch: r.epoch,
                        offset: r.released,
                        subscribers: r.subscribers() as u64,
                        users: r.user_count() as u64,
                    })
                    .collect();
                self.outputs.push_back(Output::Rooms { origin, rooms });
            }
            Input::Log(done) => self.log_done(now_ms, done),
        }
    }

    /// The room, created if this owner has room for one more. A durable
    /// room starts loading its head from the store (see
    /// [`defer_while_loading`](Self::defer_while_loading)).
    fn room_entry(&mut self, name: &Arc<str>) -> Option<&mut Room<O>> {
        if !self.rooms.contains_key(name) {
            if self.rooms.len() >= self.config.max_rooms {
                return None;
            }
            let ns = self.config.namespace(name);
            let room = if self.config.cluster && ns.cluster {
                let ticket = self.next_ticket;
                self.next_ticket += 1;
                self.outputs
                    .push_back(Output::Log(LogRequest::Cluster(ClusterRequest::Follow {
                        ticket,
                        room: name.clone(),
                    })));
                Room::following(ns, self.config.dedup_per_room)
            } else if self.config.durable_store && ns.durable {
                let ticket = self.next_ticket;
                self.next_ticket += 1;
                self.outputs.push_back(Output::Log(LogRequest::Head {
                    ticket,
                    room: name.clone(),
                }));
                Room::loading(ns, self.config.dedup_per_room)
            } else {
                Room::new(self.config.epoch, ns, self.config.dedup_per_room)
            };
            self.rooms.insert(name.clone(), room);
        }
        self.rooms.get_mut(name)
    }

    /// Holds back an input for a room whose head is still being read (its
    /// epoch and last offset are unknown until then), creating and loading
    /// a durable room that a join, a publish or a history read is the first
    /// to use. Held inputs run in their order once the head arrives.
    /// Returns the input when it can run now.
    fn defer_while_loading(&mut self, input: Input<O>) -> Option<Input<O>> {
        let (name, creates) = match &input {
            // A clustered room's publish is sequenced by the cluster's log,
            // whether this node follows the room or not.
            Input::Publish { room, .. } if self.clustered(room) => return Some(input),
            Input::Join { room, .. } | Input::Publish { room, .. } => (room, true),
            // A history read loads a room only for what the store holds.
            Input::Query {
                room,
                query: Query::History { .. },
                ..
            } => (
                room,
                self.clustered(room) || (self.config.durable_store && self.config.namespace(room).durable),
            ),
            Input::Query { room, .. } | Input::Leave { room, .. } | Input::Typing { room, .. } => (room, false),
            Input::ListRooms { .. } | Input::Log(_) | Input::UserHere { .. } | Input::Tick => return Some(input),
        };
        let name = name.clone();
        if creates && !self.rooms.contains_key(&name) {
            // Over the room limit nothing is created: the input's own path
            // refuses it.
            let _ = self.room_entry(&name);
        }
        let max_pending = self.config.max_pending_per_room;
        let Some(room) = self.rooms.get_mut(&name).filter(|r| r.loading) else {
            return Some(input);
        };
        if room.deferred.len() < max_pending {
            room.deferred.push_back(input);
        } else {
            self.refuse(input, ErrorCode::Unavailable, BEHIND);
        }
        None
    }

    /// Answers an input that cannot run (nothing waits for a leave or a
    /// typing indicator).
    fn refuse(&mut self, input: Input<O>, code: ErrorCode, message: &'static str) {
        let out = match input {
            Input::Join {
                origin, room, presence, ..
            } => Output::JoinResult {
                origin,
                room,
                presence,
                result: Err(Refusal::new(code, message)),
            },
            Input::Publish { origin, .. } => Output::PublishResult {
                origin,
                result: Err(Refusal::new(code, message)),
                duplicate: false,
            },
            Input::Query { origin, room, .. } => Output::Answer {
                origin,
                room,
                answer: Answer::Unavailable,
            },
            Input::Leave { .. }
            | Input::Typing { .. }
            | Input::ListRooms { .. }
            | Input::Log(_)
            | Input::Tick
            | Input::UserHere { .. } => return,
        };
        self.outputs.push_back(out);
    }

    /// The head of a loading room arrived: the room takes its epoch and
    /// offset, then runs what waited. A failed read refuses what waited and
    /// forgets the room, so the next use asks again.
    fn head_done(&mut self, now_ms: u64, name: &Arc<str>, result: Result<Option<DurableHead>, LogError>) {
        let epoch = self.config.epoch;
        let Some(room) = self.rooms.get_mut(name).filter(|r| r.loading) else {
            return;
        };
        let waiting = std::mem::take(&mut room.deferred);
        match result {
            Ok(head) => {
                room.loaded(head.map(|h| (h.epoch, h.last_offset)), epoch);
                for input in waiting {
                    self.handle(now_ms, input);
                }
            }
            Err(e) => {
                self.rooms.remove(name);
                let (code, message) = refusal_for(&e);
                for input in waiting {
                    self.refuse(input, code, message);
                }
            }
        }
    }

    /// Rooms of `room`'s namespace are shared by the cluster's nodes.
    fn clustered(&self, room: &str) -> bool {
        self.config.cluster && self.config.namespace(room).cluster
    }

    /// A follow started: the room continues the cluster's epoch and offset,
    /// then runs what waited. A failed follow refuses what waited and
    /// forgets the room, so the next use asks again.
    fn followed_done(&mut self, now_ms: u64, name: &Arc<str>, result: Result<ClusterHead, LogError>) {
        let Some(room) = self.rooms.get_mut(name).filter(|r| r.loading) else {
            return;
        };
        let waiting = std::mem::take(&mut room.deferred);
        match result {
            Ok(head) => {
                room.followed(&head);
                for input in waiting {
                    self.handle(now_ms, input);
                }
                // Everything that waited may have left already.
                self.forget_if_unused(name);
            }
            Err(e) => {
                let (code, message) = refusal_for(&e);
                if room.user_shards > 0 {
                    // Connections of the user stay here: keep the room and
                    // ask again, so they get what other nodes send them.
                    self.follow_retries.push_back((name.clone(), now_ms + FOLLOW_RETRY_MS));
                } else {
                    self.rooms.remove(name);
                    self.cluster(ClusterRequest::Unfollow { room: name.clone() });
                }
                for input in waiting {
                    self.refuse(input, code, message);
                }
            }
        }
    }

    /// Asks again for the follows whose retry is due.
    fn retry_follows(&mut self, now_ms: u64) {
        while let Some((name, due)) = self.follow_retries.front().cloned() {
            if due > now_ms {
                return;
            }
            self.follow_retries.pop_front();
            let wanted = self
                .rooms
                .get(&name)
                .is_some_and(|r| r.loading && r.clustered && r.user_shards > 0);
            if wanted {
                let ticket = self.ticket();
                self.cluster(ClusterRequest::Follow { ticket, room: name });
            } else if self.rooms.get(&name).is_some_and(|r| r.loading && r.user_shards == 0) {
                // The user left meanwhile.
                self.rooms.remove(&name);
                self.cluster(ClusterRequest::Unfollow { room: name });
            }
        }
    }

    fn cluster(&mut self, request: ClusterRequest) {
        self.outputs.push_back(Output::Log(LogRequest::Cluster(request)));
    }

    /// Forgets a room nobody uses and that holds nothing (a clustered one
    /// stops following the cluster's log), so joins to random names cannot
    /// fill the room limit.
    fn forget_if_unused(&mut self, name: &Arc<str>) {
        let Some(room) = self.rooms.get(name) else { return };
        if !room.is_unused() {
            return;
        }
        let clustered = room.clustered;
        self.rooms.remove(name);
        if clustered {
            self.cluster(ClusterRequest::Unfollow { room: name.clone() });
        }
    }

    /// A shard's first connection of a user opened, or its last closed: a
    /// clustered `user:U` room is followed while any shard has one, so
    /// what other nodes send the user reaches them here.
    fn user_here(&mut self, name: &Arc<str>, here: bool) {
        if !is_user_room(name) || !self.clustered(name) {
            return;
        }
        if here {
            if let Some(room) = self.room_entry(name) {
                room.user_shards += 1;
            }
        } else {
            if let Some(room) = self.rooms.get_mut(name) {
                room.user_shards = room.user_shards.saturating_sub(1);
            }
            self.forget_if_unused(name);
        }
    }

    /// Events of a followed room's log, in order: messages take their turn
    /// behind the room's waiting operations (a join answered before a
    /// message never misses it, and one answered after never gets it
    /// twice); the rest is delivered at once.
    fn streamed(&mut self, now_ms: u64, name: &Arc<str>, events: Vec<StreamEvent>) {
        let ns = self.config.namespace(name).clone();
        let ns = &ns;
        let tracks_presence = ns.presence;
        for event in events {
            let Some(room) = self.rooms.get_mut(name).filter(|r| r.clustered && !r.loading) else {
                return;
            };
            match event {
                StreamEvent::Message { epoch, message } => {
                    if epoch != room.epoch {
                        room.adopt_epoch(epoch);
                    }
                    if message.offset <= room.assigned {
                        continue;
                    }
                    room.assigned = message.offset;
                    let waiting = !room.ops.is_empty();
                    self.enqueue(now_ms, name, Op::Streamed { message }, waiting);
                }
                StreamEvent::Volatile { epoch, message, .. } => {
                    let frame = with_encoder(|e| {
                        e.message(&MessageRef {
                            volatile: true,
                            ..message.as_ref(name, epoch)
                        })
                    });
                    let audience = Audience::Members {
                        volatile: true,
                        conflate: false,
                    };
                    self.deliver(name, frame, audience, None);
                }
                StreamEvent::Presence {
                    user,
                    joined,
                    count,
                    except,
                } => {
                    room.cluster_presence(&user, joined, count);
                    if tracks_presence {
                        let frame = presence_frame(name, &user, joined);
                        self.deliver(name, frame, Audience::Presence { except }, None);
                    }
                }
                StreamEvent::Typing { user, active, except } => {
                    let frame = typing_frame(name, &user, active);
                    self.deliver(name, frame, Audience::Typing { except }, None);
                }
                StreamEvent::Rejoin => {
                    if tracks_presence {
                        let keep = stream_keep(ns);
                        for (user, member) in room.user_members() {
                            self.cluster(ClusterRequest::Presence {
                                room: name.clone(),
                                user,
                                joined: true,
                                member,
                                keep,
                            });
                        }
                    }
                }
                StreamEvent::UserFrame { local: true, .. } => {}
                StreamEvent::UserFrame { frame, disconnect, .. } => {
                    let audience = if disconnect {
                        Audience::Kick
                    } else {
                        Audience::Members {
                            volatile: false,
                            conflate: false,
                        }
                    };
                    self.deliver(name, frame, audience, None);
                }
            }
        }
    }

    fn ticket(&mut self) -> Ticket {
        let t = self.next_ticket;
        self.next_ticket += 1;
        t
    }

    /// Answers a publish that stored nothing new (a refusal, or a volatile
    /// message).
    fn published(&mut self, origin: O, result: Result<Position, Refusal>) {
        self.outputs.push_back(Output::PublishResult {
            origin,
            result,
            duplicate: false,
        });
    }

    /// Asks the log store for `range` of `name`; the operation waits for
    /// the answer.
    fn ask_store(&mut self, name: &Arc<str>, range: ReadRange) -> Read {
        let Some((epoch, clustered, released)) = self
            .rooms
            .get(name)
            .filter(|r| r.durable)
            .map(|r| (r.epoch, r.clustered, r.released))
        else {
            // Nothing of the room is stored: the window is all there is.
            return Read::Done(Ok(ReadPage::default()));
        };
        let ticket = self.ticket();
        if clustered {
            // The cluster's log is ahead of this room (what it holds past
            // `released` arrives as its own events): read only up to here.
            let end = released + 1;
            let range = ReadRange {
                before: if range.before == 0 { end } else { range.before.min(end) },
                ..range
            };
            self.cluster(ClusterRequest::Read {
                ticket,
                room: name.clone(),
                epoch,
                range,
            });
            return Read::Waiting(ticket);
        }
        self.outputs.push_back(Output::Log(LogRequest::Read {
            ticket,
            room: name.clone(),
            epoch,
            range,
        }));
        Read::Waiting(ticket)
    }

    #[allow(clippy::too_many_arguments)]
    fn join(
        &mut self,
        now_ms: u64,
        origin: O,
        member: Member,
        name: Arc<str>,
        user: &Arc<str>,
        history: u32,
        recover: Option<Position>,
        presence: bool,
    ) {
        let ns = self.config.namespace(&name);
        let (max_subscribers, tracks_presence, history_cap) = (ns.max_subscribers, ns.presence, ns.history);
        let max_pending = self.config.max_pending_per_room;
        let presence = presence && tracks_presence;
        let refuse = |code, message| Output::JoinResult {
            origin: origin.clone(),
            room: name.clone(),
            presence,
            result: Err(Refusal::new(code, message)),
        };
        let Some(room) = self.room_entry(&name) else {
            let out = refuse(ErrorCode::Unavailable, "node room limit reached");
            self.outputs.push_back(out);
            return;
        };
        if !room.is_member(member) && room.subscribers() >= max_subscribers {
            let out = refuse(ErrorCode::RoomFull, "room is full");
            self.outputs.push_back(out);
            return;
        }
        if room.ops.len() >= max_pending {
            let out = refuse(ErrorCode::Unavailable, BEHIND);
            self.outputs.push_back(out);
            return;
        }
        let change = room.add_member(member, user);
        let clustered = room.clustered;
        room.prune(now_ms);
        // Ask the store early for what the window no longer holds, so the
        // answer is likely there when the join's turn comes.
        let read_range = join_read_range(room, history, recover, history_cap);
        let waiting = !room.ops.is_empty();
        let read = match read_range {
            Some(range) => self.ask_store(&name, range),
            None => Read::None,
        };
        if change.user_arrived && tracks_presence {
            if clustered {
                // Every node (this one included) hears of it from the log.
                self.cluster(ClusterRequest::Presence {
                    room: name.clone(),
                    user: user.clone(),
                    joined: true,
                    member,
                    keep: stream_keep(self.config.namespace(&name)),
                });
            } else {
                let frame = presence_frame(&name, user, true);
                self.deliver(&name, frame, Audience::Presence { except: Some(member) }, None);
            }
        }
        let op = Op::Join {
            origin,
            member,
            history,
            recover,
            presence,
            read,
        };
        self.enqueue(now_ms, &name, op, waiting);
    }

    fn leave(&mut self, member: Member, name: &Arc<str>) {
        let Some(room) = self.rooms.get_mut(name) else { return };
        let Some((user, gone)) = room.remove_member(member) else {
            return;
        };
        let clustered = room.clustered;
        if gone && self.config.namespace(name).presence {
            if clustered {
                self.cluster(ClusterRequest::Presence {
                    room: name.clone(),
                    user,
                    joined: false,
                    member,
                    keep: stream_keep(self.config.namespace(name)),
                });
            } else {
                let frame = presence_frame(name, &user, false);
                self.deliver(name, frame, Audience::Presence { except: None }, None);
            }
        }
        self.forget_if_unused(name);
    }

    fn publish(&mut self, now_ms: u64, origin: O, name: Arc<str>, p: Publish) {
        let max_pending = self.config.max_pending_per_room;
        let ns = self.config.namespace(&name);
        let refusal = if !ns.client_publish && !p.from_server {
            Some(Refusal::new(
                ErrorCode::Forbidden,
                "only the server publishes in this namespace",
            ))
        } else if p.volatile && !ns.volatile {
            Some(Refusal::new(
                ErrorCode::VolatileNotAllowed,
                "volatile messages are not allowed in this namespace",
            ))
        } else {
            None
        };
        if let Some(r) = refusal {
            self.published(origin, Err(r));
            return;
        }
        if self.clustered(&name) {
            self.publish_clustered(now_ms, origin, name, p);
            return;
        }
        let Some(room) = self.room_entry(&name) else {
            let r = Refusal::new(ErrorCode::Unavailable, "node room limit reached");
            self.published(origin, Err(r));
            return;
        };
        let epoch = room.epoch;
        if !p.volatile && room.ops.len() >= max_pending {
            self.published(origin, Err(Refusal::new(ErrorCode::Unavailable, BEHIND)));
            return;
        }
        if p.volatile {
            let frame = with_encoder(|e| {
                e.message(&MessageRef {
                    room: &name,
                    epoch,
                    offset: 0,
                    publisher: &p.user,
                    timestamp_ms: now_ms,
                    payload: &p.payload,
                    content_type: p.content_type.as_deref(),
                    volatile: true,
                })
            });
            self.published(origin, Ok(Position { epoch, offset: 0 }));
            let audience = Audience::Members {
                volatile: true,
                conflate: false,
            };
            self.deliver(&name, frame, audience, Some(p.received));
            return;
        }
        if let Some(key) = p.idempotency_key.as_deref()
            && let Some(position) = room.duplicate(&p.user, key)
        {
            let op = Op::Ack {
                origin,
                publisher: p.user,
                key: key.into(),
                position,
            };
            let waiting = !room.ops.is_empty();
            self.enqueue(now_ms, &name, op, waiting);
            return;
        }
        room.prune(now_ms);
        room.assigned += 1;
        let message = Stored {
            offset: room.assigned,
            publisher: p.user,
            timestamp_ms: now_ms,
            payload: p.payload,
            content_type: p.content_type,
        };
        let frame = with_encoder(|e| e.message(&message.as_ref(&name, epoch)));
        let key: Option<Box<str>> = p.idempotency_key.map(String::into_boxed_str);
        if let Some(k) = &key {
            let position = Position {
                epoch,
                offset: message.offset,
            };
            room.remember_key(&message.publisher, k, position);
        }
        let durable = room.durable;
        let waiting = !room.ops.is_empty();
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let outcome = if durable {
            self.outputs.push_back(Output::Log(LogRequest::Append {
                ticket,
                room: name.clone(),
                epoch,
                message: message.clone(),
            }));
            None
        } else {
            // Memory only: in the window is as stored as it gets.
            Some(Ok(()))
        };
        let op = Op::Append {
            ticket,
            origin,
            message,
            frame,
            key,
            received: p.received,
            outcome,
        };
        if durable {
            if let Some(room) = self.rooms.get_mut(&name) {
                room.ops.push_back(op);
            }
        } else {
            self.enqueue(now_ms, &name, op, waiting);
        }
    }

    /// A publish to a room the cluster shares: the cluster's log sequences
    /// it (and checks its idempotency key) and every following node,
    /// this one included, delivers it from there.
    fn publish_clustered(&mut self, now_ms: u64, origin: O, name: Arc<str>, p: Publish) {
        let ns = self.config.namespace(&name);
        let keep = stream_keep(ns);
        let durable = ns.durable;
        let message = Unsequenced {
            publisher: p.user,
            timestamp_ms: now_ms,
            payload: p.payload,
            content_type: p.content_type,
        };
        if p.volatile {
            let epoch = room_epoch(&self.rooms, &name);
            self.cluster(ClusterRequest::Volatile {
                room: name,
                message,
                member: None,
                keep,
            });
            self.published(origin, Ok(Position { epoch, offset: 0 }));
            return;
        }
        let ticket = self.ticket();
        self.awaiting.insert(ticket, Awaiting::Publish(origin));
        self.cluster(ClusterRequest::Publish {
            ticket,
            room: name,
            message,
            idempotency_key: p.idempotency_key.map(String::into_boxed_str),
            keep,
            durable,
        });
    }

    fn typing(&mut self, member: Member, name: &Arc<str>, user: &Arc<str>, active: bool) {
        let Some(room) = self.rooms.get(name).filter(|r| r.is_member(member)) else {
            return;
        };
        if room.clustered {
            self.cluster(ClusterRequest::Typing {
                room: name.clone(),
                user: user.clone(),
                active,
                member,
                keep: stream_keep(self.config.namespace(name)),
            });
            return;
        }
        let frame = typing_frame(name, user, active);
        self.deliver(name, frame, Audience::Typing { except: Some(member) }, None);
    }

    fn query(&mut self, now_ms: u64, origin: O, name: Arc<str>, query: Query) {
        let held = self.rooms.get(&name).is_some_and(|r| !r.loading);
        if !held && query == Query::Presence && self.clustered(&name) {
            // Present on other nodes, none here: ask the cluster.
            let ticket = self.ticket();
            self.awaiting.insert(ticket, Awaiting::Presence(origin));
            self.cluster(ClusterRequest::PresenceRead { ticket, room: name });
            return;
        }
        let Some(room) = self.rooms.get_mut(&name) else {
            self.outputs.push_back(Output::Answer {
                origin,
                room: name,
                answer: Answer::NoRoom,
            });
            return;
        };
        match query {
            Query::Presence => {
                let (users, count) = room.presence(PRESENCE_LIST_MAX);
                self.outputs.push_back(Output::Answer {
                    origin,
                    room: name,
                    answer: Answer::Presence(PresenceSnapshot { users, count }),
                });
            }
            Query::History { before, after, limit } => {
                if room.ops.len() >= self.config.max_pending_per_room {
                    self.outputs.push_back(Output::Answer {
                        origin,
                        room: name,
                        answer: Answer::Unavailable,
                    });
                    return;
                }
                room.prune(now_ms);
                let range = ReadRange {
                    after,
                    before,
                    limit: limit.max(1),
                    newest: after == 0,
                };
                let waiting = !room.ops.is_empty();
                let read = if history_needs_store(room, range) {
                    self.ask_store(&name, range)
                } else {
                    Read::None
                };
                self.enqueue(now_ms, &name, Op::History { origin, range, read }, waiting);
            }
        }
    }

    fn log_done(&mut self, now_ms: u64, done: LogDone) {
        let done = match done {
            LogDone::Published { ticket, result, .. } => {
                if let Some(Awaiting::Publish(origin)) = self.awaiting.remove(&ticket) {
                    let (result, duplicate) = match result {
                        Ok(s) => (Ok(s.position), s.duplicate),
                        Err(e) => {
                            let (code, message) = refusal_for(&e);
                            (Err(Refusal::new(code, message)), false)
                        }
                    };
                    self.outputs.push_back(Output::PublishResult {
                        origin,
                        result,
                        duplicate,
                    });
                }
                return;
            }
            LogDone::Presence { ticket, room, result } => {
                if let Some(Awaiting::Presence(origin)) = self.awaiting.remove(&ticket) {
                    let answer = match result {
                        Ok(snapshot) if snapshot.count == 0 => Answer::NoRoom,
                        Ok(snapshot) => Answer::Presence(snapshot),
                        Err(_) => Answer::Unavailable,
                    };
                    self.outputs.push_back(Output::Answer { origin, room, answer });
                }
                return;
            }
            LogDone::Followed { room, result, .. } => {
                self.followed_done(now_ms, &room, result);
                return;
            }
            LogDone::Streamed { room, events } => {
                self.streamed(now_ms, &room, events);
                return;
            }
            done => done,
        };
        let Some(room) = self.rooms.get_mut(done.room()) else {
            return;
        };
        let name = done.room().clone();
        match done {
            LogDone::Appended { ticket, result, .. } => {
                if let Some(Op::Append { outcome, .. }) = room.next_ticket_op(ticket) {
                    *outcome = Some(result);
                }
            }
            LogDone::Read { ticket, result, .. } => {
                if let Some(Op::Join { read, .. } | Op::History { read, .. }) = room.next_ticket_op(ticket) {
                    *read = Read::Done(result);
                }
            }
            LogDone::Head { result, .. } => {
                self.head_done(now_ms, &name, result);
                return;
            }
            // Handled above.
            LogDone::Followed { .. }
            | LogDone::Published { .. }
            | LogDone::Presence { .. }
            | LogDone::Streamed { .. } => {
                return;
            }
        }
        self.release(now_ms, &name);
    }

    /// Queues `op` behind the room's waiting operations, or runs it at once.
    fn enqueue(&mut self, now_ms: u64, name: &Arc<str>, op: Op<O>, waiting: bool) {
        let Some(room) = self.rooms.get_mut(name) else { return };
        room.ops.push_back(op);
        if !waiting {
            self.release(now_ms, name);
        }
    }

    /// Runs the room's operations that are ready, in arrival order, up to
    /// the first that still waits.
    fn release(&mut self, now_ms: u64, name: &Arc<str>) {
        loop {
            let Some(room) = self.rooms.get_mut(name) else { return };
            if !room.ops.front().is_some_and(Op::ready) {
                return;
            }
            let Some(op) = room.ops.pop_front() else { return };
            if let Some(op) = self.run(now_ms, name, op) {
                // It needs the store after all: it waits at the front.
                if let Some(room) = self.rooms.get_mut(name) {
                    room.ops.push_front(op);
                }
                return;
            }
        }
    }

    /// Runs one ready operation; gives it back if it must wait for a read.
    fn run(&mut self, now_ms: u64, name: &Arc<str>, op: Op<O>) -> Option<Op<O>> {
        let budget = self.config.replay_budget;
        let ns = self.config.namespace(name);
        let (history_cap, conflate) = (ns.history, ns.conflate);
        let room = self.rooms.get_mut(name)?;
        match op {
            Op::Append {
                origin,
                message,
                frame,
                key,
                received,
                outcome,
                ..
            } => {
                let position = Position {
                    epoch: room.epoch,
                    offset: message.offset,
                };
                match outcome {
                    Some(Ok(())) => {
                        room.push_window(message);
                        room.prune(now_ms);
                        self.outputs.push_back(Output::PublishResult {
                            origin,
                            result: Ok(position),
                            duplicate: false,
                        });
                        let audience = Audience::Members {
                            volatile: false,
                            conflate,
                        };
                        self.deliver(name, frame, audience, Some(received));
                    }
                    Some(Err(e)) => {
                        room.skip_released(message.offset);
                        if let Some(k) = key {
                            room.forget_key(&message.publisher, &k, Some(position));
                        }
                        let (code, message) = refusal_for(&e);
                        self.outputs.push_back(Output::PublishResult {
                            origin,
                            result: Err(Refusal::new(code, message)),
                            duplicate: false,
                        });
                    }
                    None => {
                        room.skip_released(message.offset);
                        if let Some(k) = key {
                            room.forget_key(&message.publisher, &k, Some(position));
                        }
                        self.outputs.push_back(Output::PublishResult {
                            origin,
                            result: Err(Refusal::new(ErrorCode::Unavailable, NOT_STORED)),
                            duplicate: false,
                        });
                    }
                }
            }
            Op::Ack {
                origin,
                publisher,
                key,
                position,
            } => {
                // What it repeats may have failed to store meanwhile.
                let result = if room.duplicate(&publisher, &key) == Some(position) {
                    Ok(position)
                } else {
                    Err(Refusal::new(ErrorCode::Unavailable, NOT_STORED))
                };
                self.outputs.push_back(Output::PublishResult {
                    origin,
                    result,
                    duplicate: true,
                });
            }
            Op::Join {
                origin,
                member,
                history,
                recover,
                presence,
                read,
            } => {
                if !room.is_member(member) {
                    // It left before its turn: nobody waits for the answer.
                    return None;
                }
                let read = match read {
                    Read::None => match join_read_range(room, history, recover, history_cap) {
                        Some(range) => {
                            let read = self.ask_store(name, range);
                            return Some(Op::Join {
                                origin,
                                member,
                                history,
                                recover,
                                presence,
                                read,
                            });
                        }
                        None => None,
                    },
                    Read::Done(r) => r.ok(),
                    Read::Waiting(_) => None,
                };
                let room = self.rooms.get_mut(name)?;
                let joined = resolve_join(room, name, history, recover, read, budget, presence);
                self.outputs.push_back(Output::JoinResult {
                    origin,
                    room: name.clone(),
                    presence,
                    result: Ok(joined),
                });
            }
            Op::History { origin, range, read } => {
                let page = match read {
                    Read::Done(Ok(page)) => Some(page),
                    _ => None,
                };
                let epoch = room.epoch;
                let (messages, has_more) = resolve_history(room, name, range, page, budget);
                let answer = if room.is_unused() && !room.clustered {
                    // Loaded only to be read, and the store never held it:
                    // as unknown as before it was loaded.
                    self.rooms.remove(name);
                    Answer::NoRoom
                } else if room.clustered && room.epoch == 0 {
                    Answer::NoRoom
                } else {
                    Answer::History {
                        epoch,
                        messages,
                        has_more,
                    }
                };
                self.outputs.push_back(Output::Answer {
                    origin,
                    room: name.clone(),
                    answer,
                });
                // Followed only to be read.
                self.forget_if_unused(name);
            }
            Op::Streamed { message } => {
                let epoch = room.epoch;
                let frame = with_encoder(|e| e.message(&message.as_ref(name, epoch)));
                room.push_window(message);
                room.prune(now_ms);
                let audience = Audience::Members {
                    volatile: false,
                    conflate,
                };
                self.deliver(name, frame, audience, None);
            }
        }
        None
    }

    /// One frame to every shard with members of `name` (every shard for a
    /// message to `user:U`).
    fn deliver(&mut self, name: &Arc<str>, frame: Bytes, audience: Audience, published: Option<Instant>) {
        let Some(room) = self.rooms.get(name) else { return };
        let mut send = |shard: u32| {
            self.outputs.push_back(Output::Deliver {
                shard,
                room: name.clone(),
                frame: frame.clone(),
                audience,
                published,
            });
        };
        if is_user_room(name) && matches!(audience, Audience::Members { .. } | Audience::Kick) {
            (0..self.config.shards).for_each(&mut send);
        } else {
            room.interested_shards().for_each(send);
        }
    }
}

/// The parts of a publish the owner keeps.
struct Publish {
    user: Arc<str>,
    payload: Bytes,
    content_type: Option<Arc<str>>,
    volatile: bool,
    idempotency_key: Option<String>,
    from_server: bool,
    received: Instant,
}

fn room_epoch<O>(rooms: &HashMap<Arc<str>, Room<O>>, name: &str) -> u64 {
    rooms.get(name).map_or(0, |r| r.epoch)
}

/// Entries a clustered room's stream keeps: at least the namespace's
/// memory window and [`MIN_STREAM_KEEP`], fewer only when retention keeps
/// fewer.
fn stream_keep(ns: &NamespaceConfig) -> u64 {
    let keep = (ns.history as u64).max(MIN_STREAM_KEEP);
    ns.retain_messages.map_or(keep, |r| keep.min(r.max(ns.history as u64)))
}

fn typing_frame(room: &str, user: &str, active: bool) -> Bytes {
    with_encoder(|e| {
        e.body(
            0,
            BodyT::TypingEvent(Box::new(wire::TypingEventT {
                room: room.to_owned(),
                user: user.to_owned(),
                active,
            })),
        )
    })
}

fn presence_frame(room: &str, user: &str, joined: bool) -> Bytes {
    with_encoder(|e| {
        let body = if joined {
            BodyT::PresenceJoin(Box::new(wire::PresenceJoinT {
                room: room.to_owned(),
                user: user.to_owned(),
            }))
        } else {
            BodyT::PresenceLeave(Box::new(wire::PresenceLeaveT {
                room: room.to_owned(),
                user: user.to_owned(),
            }))
        };
        e.body(0, body)
    })
}
