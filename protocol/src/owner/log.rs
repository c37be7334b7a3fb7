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
}

impl LogDone {
    /// The room the answer is for.
    pub fn room(&self) -> &Arc<str> {
        match self {
            LogDone::Appended { room, .. } | LogDone::Read { room, .. } | LogDone::Head { room, .. } => room,
        }
    }
}
