//! What a room owner asks of the log store beneath it, and the answers.
//!
//! The owner never calls a store: it emits [`LogRequest`]s as outputs and
//! takes [`LogDone`]s as inputs, in any order and at any later time. A store
//! that answers at once (the in-memory node), a writer thread that group-
//! commits to disk, or a database client are all driven the same way.

use std::sync::Arc;

use bytes::Bytes;

use crate::codec::MessageRef;

/// Names one request to the log store; its answer carries the same ticket.
pub type Ticket = u64;

/// A stored message. Cheap to clone: every field is shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Offset within the room's epoch.
    pub offset: u64,
    /// Publisher's user id ("" for the server API).
    pub publisher: Arc<str>,
    /// Acceptance time, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// Application payload.
    pub payload: Bytes,
    /// Optional MIME type.
    pub content_type: Option<Arc<str>>,
}

impl Stored {
    /// The message as the encoder takes it.
    pub fn as_ref<'a>(&'a self, room: &'a str, epoch: u64) -> MessageRef<'a> {
        MessageRef {
            room,
            epoch,
            offset: self.offset,
            publisher: &self.publisher,
            timestamp_ms: self.timestamp_ms,
            payload: &self.payload,
            content_type: self.content_type.as_deref(),
            volatile: false,
        }
    }

    /// About what the message costs once encoded in a frame for `room`: its
    /// fields plus the FlatBuffers tables around them. Used to keep a replay
    /// within a connection's outbound budget without encoding it first.
    pub fn encoded_len(&self, room: &str) -> usize {
        const FRAME_OVERHEAD: usize = 96;
        FRAME_OVERHEAD
            + room.len()
            + self.publisher.len()
            + self.payload.len()
            + self.content_type.as_deref().map_or(0, str::len)
    }
}

/// Which messages a read wants: `after < offset < before` (`before` 0 means
/// no upper bound), at most `limit` of them, the newest ones if `newest`,
/// else the oldest. Answers list them oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadRange {
    /// Exclusive lower bound.
    pub after: u64,
    /// Exclusive upper bound (0: none).
    pub before: u64,
    /// Most messages wanted.
    pub limit: usize,
    /// Keep the newest `limit` of the range rather than the oldest.
    pub newest: bool,
}

impl ReadRange {
    /// Whether `offset` lies inside the range's bounds.
    pub fn contains(&self, offset: u64) -> bool {
        offset > self.after && (self.before == 0 || offset < self.before)
    }
}

/// A log store's answer to a read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadPage {
    /// Messages in the range, oldest first.
    pub messages: Vec<Stored>,
    /// The store still holds every message of the range (none was lost to
    /// retention or never reached it). A store that cannot vouch for that
    /// says false.
    pub complete: bool,
    /// The range holds more messages than `limit` let through.
    pub more: bool,
}

/// Why a log store could not do what it was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// The store's queue is full: nothing was done (the publisher is told
    /// `Overloaded` and retries).
    #[error("log store: queue full")]
    Overloaded,
    /// The store failed (an I/O error, a full disk, an unreachable
    /// cluster): nothing is known to be durable.
    #[error("log store: {0}")]
    Failed(String),
}

/// What the store knows durably of a room: a room loaded from it continues
/// this epoch after this offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurableHead {
    /// The room's epoch.
    pub epoch: u64,
    /// The last offset stored in it.
    pub last_offset: u64,
}

/// A message to sequence in a cluster: the room's log (Redis) assigns its
/// offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsequenced {
    /// Publisher's user id ("" for the server API).
    pub publisher: Arc<str>,
    /// Acceptance time, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// Application payload.
    pub payload: Bytes,
    /// Optional MIME type.
    pub content_type: Option<Arc<str>>,
}

/// Where a shared room stands in the cluster when this node starts to
/// follow it: deliveries continue after `last_offset` of `epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterHead {
    /// The room's epoch.
    pub epoch: u64,
    /// The last offset sequenced.
    pub last_offset: u64,
    /// Presence over every node: distinct users, and some of them (at most
    /// [`PRESENCE_LIST_MAX`](super::PRESENCE_LIST_MAX)).
    pub presence_count: u64,
    /// Some present users.
    pub presence_sample: Vec<Arc<str>>,
}

/// What a followed room's log carries, in order, from every node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// A sequenced message.
    Message {
        /// The room's epoch.
        epoch: u64,
        /// The message.
        message: Stored,
    },
    /// A best-effort message (no offset).
    Volatile {
        /// The room's epoch.
        epoch: u64,
        /// The message (its offset is 0).
        message: Stored,
        /// The connection that sent it, when on this node.
        except: Option<super::Member>,
    },
    /// A user arrived in or left the room on every node.
    Presence {
        /// The user.
        user: Arc<str>,
        /// Arrived (else left).
        joined: bool,
        /// Distinct users present after the change.
        count: u64,
        /// The connection that caused it, when on this node.
        except: Option<super::Member>,
    },
    /// A typing indicator.
    Typing {
        /// The user.
        user: Arc<str>,
        /// Typing or stopped.
        active: bool,
        /// The typing connection, when on this node.
        except: Option<super::Member>,
    },
    /// The cluster may have lost this node's presence in the room (Redis
    /// restarted without its data, or took the node for dead): announce
    /// its present users again (a repeat changes nothing).
    Rejoin,
    /// A frame for a user's connections, or their disconnection (from
    /// another node's server API).
    UserFrame {
        /// The frame (empty for a disconnection).
        frame: Bytes,
        /// Close the user's connections instead.
        disconnect: bool,
        /// Sent by this node (which served its own connections already).
        local: bool,
    },
}

/// Work for the log store, emitted by the owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogRequest {
    /// Make `message` durable in `room`'s log. The owner acknowledges the
    /// publisher and fans the message out only after the answer.
    Append {
        /// Answer with this ticket.
        ticket: Ticket,
        /// Room name.
        room: Arc<str>,
        /// The room's epoch.
        epoch: u64,
        /// The message, its offset already assigned.
        message: Stored,
    },
    /// Read what the store knows of `room` (asked once, when the owner
    /// first uses a durable room).
    Head {
        /// Answer with this ticket.
        ticket: Ticket,
        /// Room name.
        room: Arc<str>,
    },
    /// Work for the cluster's shared log (only on a node in a cluster).
    Cluster(ClusterRequest),
    /// Read messages of `room` the owner's memory window does not hold.
    Read {
        /// Answer with this ticket.
        ticket: Ticket,
        /// Room name.
        room: Arc<str>,
        /// The room's epoch.
        epoch: u64,
        /// Which messages.
        range: ReadRange,
    },
}

/// Work for the cluster's log (the shared rooms' Redis streams). Requests
/// with a ticket are answered once through the log store; the others are
/// not answered (their effects come back as [`LogDone::Streamed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterRequest {
    /// Start receiving `room`'s stream on this node; answered with
    /// [`LogDone::Followed`].
    Follow {
        /// Answer with this ticket.
        ticket: Ticket,
        /// Room name.
        room: Arc<str>,
    },
    /// Stop receiving `room` (no member left on this node). Not answered.
    Unfollow {
        /// Room name.
        room: Arc<str>,
    },
    /// Sequence and append a message; answered with [`LogDone::Published`].
    Publish {
        /// Answer with this ticket.
        ticket: Ticket,
        /// Room name.
        room: Arc<str>,
        /// The message.
        message: Unsequenced,
        /// Deduplication key: a repeat anywhere in the cluster is answered
        /// with the first position.
        idempotency_key: Option<Box<str>>,
        /// Messages of the room to keep in the stream (0: no bound).
        keep: u64,
        /// Copy it to durable storage.
        durable: bool,
    },
    /// Read messages of `room` (from the stream, else durable storage);
    /// answered with [`LogDone::Read`].
    Read {
        /// Answer with this ticket.
        ticket: Ticket,
        /// Room name.
        room: Arc<str>,
        /// The room's epoch.
        epoch: u64,
        /// Which messages.
        range: ReadRange,
    },
    /// A best-effort message for every node's members. Not answered.
    Volatile {
        /// Room name.
        room: Arc<str>,
        /// The message.
        message: Unsequenced,
        /// The sending connection.
        member: Option<super::Member>,
        /// Entries of the room's stream to keep (as its publishes say).
        keep: u64,
    },
    /// A typing indicator for every node's members. Not answered.
    Typing {
        /// Room name.
        room: Arc<str>,
        /// The user.
        user: Arc<str>,
        /// Typing or stopped.
        active: bool,
        /// The typing connection.
        member: super::Member,
        /// Entries of the room's stream to keep (as its publishes say).
        keep: u64,
    },
    /// The first of a user's connections on this node arrived in a room, or
    /// its last one left. Not answered.
    Presence {
        /// Room name.
        room: Arc<str>,
        /// The user.
        user: Arc<str>,
        /// Arrived (else left).
        joined: bool,
        /// The connection that caused it.
        member: super::Member,
        /// Entries of the room's stream to keep (as its publishes say).
        keep: u64,
    },
    /// A frame for every connection of a user on every other node (a live
    /// notification), or their disconnection. Not answered.
    UserFrame {
        /// `user:U`.
        room: Arc<str>,
        /// The frame (empty for a disconnection).
        frame: Bytes,
        /// Close the user's connections instead.
        disconnect: bool,
        /// Entries of the room's stream to keep.
        keep: u64,
    },
    /// Who is present over every node; answered with [`LogDone::Presence`].
    PresenceRead {
        /// Answer with this ticket.
        ticket: Ticket,
        /// Room name.
        room: Arc<str>,
    },
}

impl ClusterRequest {
    /// The room the request is for.
    pub fn room(&self) -> &Arc<str> {
        match self {
            ClusterRequest::Follow { room, .. }
            | ClusterRequest::Unfollow { room }
            | ClusterRequest::Publish { room, .. }
            | ClusterRequest::Read { room, .. }
            | ClusterRequest::Volatile { room, .. }
            | ClusterRequest::Typing { room, .. }
            | ClusterRequest::Presence { room, .. }
            | ClusterRequest::UserFrame { room, .. }
            | ClusterRequest::PresenceRead { room, .. } => room,
        }
    }
}

impl ClusterRequest {
    /// The answer that says `error`, for a request that expects one.
    pub fn fail(self, error: LogError) -> Option<LogDone> {
        match self {
            ClusterRequest::Follow { ticket, room } => Some(LogDone::Followed {
                ticket,
                room,
                result: Err(error),
            }),
            ClusterRequest::Publish { ticket, room, .. } => Some(LogDone::Published {
                ticket,
                room,
                result: Err(error),
            }),
            ClusterRequest::Read { ticket, room, .. } => Some(LogDone::Read {
                ticket,
                room,
                result: Err(error),
            }),
            ClusterRequest::PresenceRead { ticket, room } => Some(LogDone::Presence {
                ticket,
                room,
                result: Err(error),
            }),
            ClusterRequest::Unfollow { .. }
            | ClusterRequest::Volatile { .. }
            | ClusterRequest::Typing { .. }
            | ClusterRequest::UserFrame { .. }
            | ClusterRequest::Presence { .. } => None,
        }
    }
}

/// A sequenced publish: its position, and whether it repeated an
/// idempotency key (nothing new was stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sequenced {
    /// Where the message is.
    pub position: crate::Position,
    /// A repeat of an earlier publish.
    pub duplicate: bool,
}

/// A log store's answer, fed back to the owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogDone {
    /// An append finished.
    Appended {
        /// The request's ticket.
        ticket: Ticket,
        /// Room name.
        room: Arc<str>,
        /// Durable, or why not.
        result: Result<(), LogError>,
    },
    /// A read finished.
    Read {
        /// The request's ticket.
        ticket: Ticket,
        /// Room name.
        room: Arc<str>,
        /// The page, or why not.
        result: Result<ReadPage, LogError>,
    },
    /// A head read finished.
    Head {
        /// The request's ticket.
        ticket: Ticket,
        /// Room name.
        room: Arc<str>,
        /// The head (None: the store never held the room), or why not.
        result: Result<Option<DurableHead>, LogError>,
    },
    /// A follow started (cluster).
    Followed {
        /// The request's ticket.
        ticket: Ticket,
        /// Room name.
        room: Arc<str>,
        /// Where the room stands, or why it cannot be followed.
        result: Result<ClusterHead, LogError>,
    },
    /// A cluster publish finished.
    Published {
        /// The request's ticket.
        ticket: Ticket,
        /// Room name.
        room: Arc<str>,
        /// Where it was sequenced, or why not.
        result: Result<Sequenced, LogError>,
    },
    /// A presence read finished (cluster).
    Presence {
        /// The request's ticket.
        ticket: Ticket,
        /// Room name.
        room: Arc<str>,
        /// Who is present, or why not known.
        result: Result<super::PresenceSnapshot, LogError>,
    },
    /// Events of a followed room, in the room's order (cluster).
    Streamed {
        /// Room name.
        room: Arc<str>,
        /// The events.
        events: Vec<StreamEvent>,
    },
}

impl LogDone {
    /// The room the answer is for.
    pub fn room(&self) -> &Arc<str> {
        match self {
            LogDone::Appended { room, .. }
            | LogDone::Read { room, .. }
            | LogDone::Head { room, .. }
            | LogDone::Followed { room, .. }
            | LogDone::Published { room, .. }
            | LogDone::Presence { room, .. }
            | LogDone::Streamed { room, .. } => room,
        }
    }
}
