//! The work shards hand the storage threads, and the answers they get.

use std::sync::Arc;

use herald_protocol::owner::{LogError, ReadRange, Ticket};
use herald_storage::{AnalyticsEvent, LogEntry, NotificationPage, NotificationRecord, Rollup};

use crate::mesh::Origin;

/// Work for the writer.
#[derive(Debug)]
pub(crate) enum WriteJob {
    /// A room owner's append; answered on the shard's log channel.
    Append {
        shard: usize,
        ticket: Ticket,
        entry: LogEntry,
    },
    /// Store a notification, then it is delivered live.
    Notify { origin: Origin, record: NotificationRecord },
    /// Mark a user's notifications read (`all`, or `ids` and every id up to
    /// `up_to` when not 0).
    MarkRead {
        origin: Origin,
        user: Arc<str>,
        ids: Vec<u64>,
        up_to: u64,
        all: bool,
    },
    /// Store analytics events; `origin` None when nobody waits.
    Events {
        origin: Option<Origin>,
        events: Vec<AnalyticsEvent>,
    },
}

/// Work for a reader.
#[derive(Debug)]
pub(crate) enum ReadJob {
    /// A room owner's read of what its window lacks.
    Log {
        shard: usize,
        ticket: Ticket,
        room: Arc<str>,
        epoch: u64,
        range: ReadRange,
    },
    /// A room owner's read of a room's durable head.
    Head {
        shard: usize,
        ticket: Ticket,
        room: Arc<str>,
    },
    /// A page of a user's notifications.
    Notifications {
        origin: Origin,
        user: Arc<str>,
        before_id: u64,
        limit: usize,
        unread_only: bool,
    },
    /// A user's unread count (sent to a session after it connects).
    Unread { origin: Origin, user: Arc<str> },
    /// Per-minute rollups of one analytics event name, minutes starting in
    /// `[from_ms, to_ms)`.
    Rollups {
        origin: Origin,
        name: Arc<str>,
        from_ms: u64,
        to_ms: u64,
    },
}

/// An answer to a notification or analytics job.
#[derive(Debug)]
pub(crate) struct StoreDone {
    /// Who asked.
    pub(crate) origin: Origin,
    /// What happened.
    pub(crate) answer: StoreAnswer,
}

/// What a notification or analytics job came to.
#[derive(Debug)]
pub(crate) enum StoreAnswer {
    /// The notification is stored (deliver it live now).
    Notified(Result<NotificationRecord, LogError>),
    /// Notifications marked read: how many were unread.
    Marked(Result<u64, LogError>),
    /// Events stored: how many.
    EventsStored(Result<usize, LogError>),
    /// A page of notifications.
    Page(Result<NotificationPage, LogError>),
    /// An unread count.
    Unread(Result<u64, LogError>),
    /// Per-minute rollups, oldest first.
    Rollups(Result<Vec<Rollup>, LogError>),
}

impl WriteJob {
    /// About what the job holds in memory while it waits (payloads and
    /// strings, plus a fixed overhead): what the node's write budget counts.
    pub(crate) fn bytes(&self) -> usize {
        const OVERHEAD: usize = 64;
        OVERHEAD
            + match self {
                WriteJob::Append { entry, .. } => {
                    entry.room.len() + entry.message.publisher.len() + entry.message.payload.len()
                }
                WriteJob::Notify { record, .. } => {
                    record.user.len() + record.kind.len() + record.title.len() + record.body.len() + record.data.len()
                }
                WriteJob::MarkRead { user, ids, .. } => user.len() + ids.len() * 8,
                WriteJob::Events { events, .. } => events
                    .iter()
                    .map(|e| OVERHEAD + e.name.len() + e.tags.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>())
                    .sum(),
            }
    }
}
