//! The durable room log: every acknowledged message of every durable room.

use std::sync::Arc;
use std::time::Duration;

use herald_protocol::owner::{ReadPage, ReadRange, Stored};

use crate::StorageResult;

/// One message to append: its room, the room's epoch and the message with
/// the offset Herald assigned (storage never assigns offsets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Room name.
    pub room: Arc<str>,
    /// The room's epoch.
    pub epoch: u64,
    /// The message, offset assigned.
    pub message: Stored,
}

/// What the store knows durably about a room, read when a node first uses
/// the room so offsets continue in the same epoch after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomHead {
    /// The room's epoch.
    pub epoch: u64,
    /// The highest offset appended in that epoch.
    pub last_offset: u64,
    /// Offsets up to and including this one were removed by retention (0:
    /// none). Reads reaching below it are not complete.
    pub trimmed_through: u64,
}

/// How much of a room the store keeps (a namespace's retention).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Keep at most this many newest messages (None: no bound by count).
    pub max_messages: Option<u64>,
    /// Remove messages older than this (None: no bound by age).
    pub max_age: Option<Duration>,
}

impl Retention {
    /// Keeps everything.
    pub const FOREVER: Retention = Retention {
        max_messages: None,
        max_age: None,
    };
}

/// The room log of one backend. Methods are synchronous and may block on
/// I/O: they run on the storage threads, never on a shard.
///
/// Offsets within a room's epoch are assigned by Herald and appended in
/// ascending order; appending an (room, epoch, offset) again stores the same
/// message again (idempotent), which makes retries safe. A room's epoch
/// changes only when its history was lost: an append in a new epoch
/// replaces the room's head, and reads in the old epoch find nothing.
pub trait RoomLog: Send + Sync + std::fmt::Debug {
    /// Writes a batch of messages (of any rooms; each room's offsets
    /// ascending) and advances each room's head. Durable once
    /// [`sync`](RoomLog::sync) has returned (backends that are durable on
    /// write make `sync` a no-op).
    fn append(&self, batch: &[LogEntry]) -> StorageResult<()>;

    /// Makes everything appended so far durable (one fsync for all of it).
    fn sync(&self) -> StorageResult<()>;

    /// The room's durable head, None for a room never stored.
    fn head(&self, room: &str) -> StorageResult<Option<RoomHead>>;

    /// Messages of `room` in `epoch` within `range` (`after < offset <
    /// before`, `before` 0 meaning no bound; the newest `limit` when
    /// `range.newest`, else the oldest), oldest first. This covers the last
    /// N (after 0, before 0, newest), what follows an offset (resume) and
    /// pages before an offset. `complete` is true only when `epoch` is the
    /// room's stored epoch and nothing of the range was removed by
    /// retention (`range.after >= trimmed_through`); `more` when the range
    /// holds more than `limit` messages.
    fn read(&self, room: &str, epoch: u64, range: ReadRange) -> StorageResult<ReadPage>;

    /// Messages of `room`'s current epoch with `from_ms <= timestamp_ms <
    /// to_ms`, oldest first, at most `limit`.
    fn read_time(&self, room: &str, from_ms: u64, to_ms: u64, limit: usize) -> StorageResult<Vec<Stored>>;

    /// Removes what `retention` no longer keeps of `room` at `now_ms`, and
    /// raises the head's `trimmed_through`. Returns how many messages went.
    /// Runs in the background, never on the publish path.
    fn trim(&self, room: &str, retention: Retention, now_ms: u64) -> StorageResult<u64>;

    /// Names of stored rooms greater than `after` (None: from the first),
    /// in order, at most `limit`: the retention sweep walks them in pages.
    fn rooms(&self, after: Option<&str>, limit: usize) -> StorageResult<Vec<Arc<str>>>;
}
