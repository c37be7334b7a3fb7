//! The owner's inputs and outputs, and the values they carry.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::Position;
use crate::wire::ErrorCode;

use super::Member;
use super::log::{LogDone, LogRequest, Stored};

/// A refusal with its wire code and message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// Wire error code.
    pub code: ErrorCode,
    /// Why, for people.
    pub message: &'static str,
}

impl Refusal {
    pub(super) const fn new(code: ErrorCode, message: &'static str) -> Self {
        Self { code, message }
    }
}

/// Who present in a room: at most [`PRESENCE_LIST_MAX`] users and the count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceSnapshot {
    /// Users present (possibly a part of them).
    pub users: Vec<Arc<str>>,
    /// Distinct users present.
    pub count: u64,
}

/// What a joining connection gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The room's epoch.
    pub epoch: u64,
    /// The room's latest released offset; deliveries after the answer start
    /// after it.
    pub offset: u64,
    /// The requested recovery is complete: `history` holds every message
    /// after the client's position.
    pub recovered: bool,
    /// Messages to replay, oldest first.
    pub history: Vec<Stored>,
    /// Presence, when asked for and tracked.
    pub presence: Option<PresenceSnapshot>,
}

/// Who receives a delivered frame on a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Every member; `volatile` frames are dropped first under pressure.
    Members {
        /// Best effort.
        volatile: bool,
        /// The room's namespace conflates: a member that is behind gets the
        /// newest message instead of every one.
        conflate: bool,
    },
    /// Members that asked for presence, except the connection that caused it.
    Presence {
        /// Left out.
        except: Option<Member>,
    },
    /// Close every connection of the user of this `user:U` room (the
    /// server API disconnected the user on another node); the frame is
    /// empty.
    Kick,
    /// Every member except the typing connection (volatile).
    Typing {
        /// Left out (None: the typing connection is on another node).
        except: Option<Member>,
    },
}

/// A question about a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Query {
    /// Messages with `after < offset < before` (`before` 0: no bound), at
    /// most `limit`: the newest when `after` is 0, else the oldest.
    History {
        /// Exclusive upper bound (0: none).
        before: u64,
        /// Exclusive lower bound.
        after: u64,
        /// Most messages.
        limit: usize,
    },
    /// Who is present.
    Presence,
}

/// The answer to a [`Query`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A page of history, oldest first.
    History {
        /// The room's epoch.
        epoch: u64,
        /// The messages.
        messages: Vec<Stored>,
        /// More messages exist in the asked range.
        has_more: bool,
    },
    /// Who is present.
    Presence(PresenceSnapshot),
    /// The owner holds no such room.
    NoRoom,
    /// The room's log store is behind (too many operations waiting): retry.
    Unavailable,
}

/// One room, as listed by [`Input::ListRooms`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomInfo {
    /// Room name.
    pub name: Arc<str>,
    /// Epoch.
    pub epoch: u64,
    /// Latest released offset.
    pub offset: u64,
    /// Member connections.
    pub subscribers: u64,
    /// Distinct users among them.
    pub users: u64,
}

/// Work for the owner. `O` says where an answer goes (opaque to the owner).
#[derive(Debug)]
pub enum Input<O> {
    /// A connection joins a room (a repeated join of a member is answered
    /// again but changes no count).
    Join {
        /// Where the answer goes.
        origin: O,
        /// The connection.
        member: Member,
        /// Room name.
        room: Arc<str>,
        /// The connection's user.
        user: Arc<str>,
        /// Newest messages wanted when not recovering.
        history: u32,
        /// Position to recover from.
        recover: Option<Position>,
        /// Presence snapshot and events wanted.
        presence: bool,
    },
    /// A connection left a room. A connection that is not a member changes
    /// nothing.
    Leave {
        /// The connection.
        member: Member,
        /// Room name.
        room: Arc<str>,
    },
    /// A message to publish.
    Publish {
        /// Where the answer goes.
        origin: O,
        /// Room name.
        room: Arc<str>,
        /// Publisher's user id ("" for the server API).
        user: Arc<str>,
        /// Payload.
        payload: Bytes,
        /// MIME type.
        content_type: Option<String>,
        /// Best effort, never stored.
        volatile: bool,
        /// Deduplication key.
        idempotency_key: Option<String>,
        /// Published by the server API (allowed in server-only namespaces).
        from_server: bool,
        /// When the node took the request (carried to the deliveries, for
        /// latency metrics).
        received: Instant,
    },
    /// A typing indicator from a member.
    Typing {
        /// The connection.
        member: Member,
        /// Room name.
        room: Arc<str>,
        /// Its user.
        user: Arc<str>,
        /// Typing or stopped.
        active: bool,
    },
    /// A question about a room.
    Query {
        /// Where the answer goes.
        origin: O,
        /// Room name.
        room: Arc<str>,
        /// The question.
        query: Query,
    },
    /// The first connection of a user on a shard opened (`here`), or its
    /// last closed: on a node in a cluster, the node follows the user's
    /// `user:U` room while any shard has one.
    UserHere {
        /// `user:U`.
        room: Arc<str>,
        /// The shard.
        shard: u32,
        /// Opened (else closed).
        here: bool,
    },
    /// Time passes (a node in a cluster sends it while
    /// [`RoomOwner::has_retries`](super::RoomOwner::has_retries)): follows
    /// that failed are asked again when due.
    Tick,
    /// List every room.
    ListRooms {
        /// Where the answer goes.
        origin: O,
    },
    /// The log store answered.
    Log(LogDone),
}

/// What the owner has to say, pulled with [`RoomOwner::poll_output`].
#[derive(Debug)]
pub enum Output<O> {
    /// The answer to a join.
    JoinResult {
        /// From the input.
        origin: O,
        /// Room name.
        room: Arc<str>,
        /// Presence events go to this member from now on.
        presence: bool,
        /// Joined, or why not.
        result: Result<Joined, Refusal>,
    },
    /// The answer to a publish.
    PublishResult {
        /// From the input.
        origin: O,
        /// The message's position (offset 0 when volatile), or why not.
        result: Result<Position, Refusal>,
        /// A repeat of an idempotency key already stored: nothing new.
        duplicate: bool,
    },
    /// One encoded frame for the members of `room` on `shard`.
    Deliver {
        /// Destination shard.
        shard: u32,
        /// Room name.
        room: Arc<str>,
        /// The frame, encoded once for every recipient.
        frame: Bytes,
        /// Who gets it.
        audience: Audience,
        /// When the message was received (for latency metrics); None for
        /// presence and typing events.
        published: Option<Instant>,
    },
    /// The answer to a query.
    Answer {
        /// From the input.
        origin: O,
        /// Room name.
        room: Arc<str>,
        /// The answer.
        answer: Answer,
    },
    /// The answer to [`Input::ListRooms`].
    Rooms {
        /// From the input.
        origin: O,
        /// Every room.
        rooms: Vec<RoomInfo>,
    },
    /// Work for the log store; answer with [`Input::Log`].
    Log(LogRequest),
}
