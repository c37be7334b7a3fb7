//! Durable notifications: a per-user inbox, newest first.

use std::sync::Arc;

use bytes::Bytes;

use crate::StorageResult;

/// One notification of one user.
#[derive(Debug, Clone, PartialEq)]
pub struct NotificationRecord {
    /// Assigned by Herald: unique per user, increasing with time (never by
    /// a read in the store).
    pub id: u64,
    /// Whose inbox.
    pub user: Arc<str>,
    /// Application kind ("mention", "invoice.paid", ...).
    pub kind: String,
    /// Title for people.
    pub title: String,
    /// Body for people.
    pub body: String,
    /// Application data (often JSON).
    pub data: Bytes,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: u64,
    /// Marked read.
    pub read: bool,
}

/// A page of a user's inbox.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NotificationPage {
    /// Newest first.
    pub items: Vec<NotificationRecord>,
    /// The user's unread notifications in total.
    pub unread: u64,
    /// More notifications exist beyond this page (older ones).
    pub has_more: bool,
}

/// Which notifications to mark read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkRead<'a> {
    /// These ids.
    Ids(&'a [u64]),
    /// Every notification with id <= this one.
    UpTo(u64),
    /// Every notification.
    All,
}

/// The notification store of one backend (synchronous; storage threads only).
pub trait NotificationStore: Send + Sync + std::fmt::Debug {
    /// Stores a batch (any users). Appending an id again stores the same
    /// notification again. Durable once [`sync`](NotificationStore::sync)
    /// returned.
    fn append(&self, batch: &[NotificationRecord]) -> StorageResult<()>;

    /// Makes everything appended or marked so far durable.
    fn sync(&self) -> StorageResult<()>;

    /// Up to `limit` notifications of `user` with id < `before_id` (0: no
    /// bound), newest first, only unread ones if `unread_only`, with the
    /// user's unread count.
    fn page(&self, user: &str, before_id: u64, limit: usize, unread_only: bool) -> StorageResult<NotificationPage>;

    /// Marks notifications of `user` read; returns how many were unread.
    /// Marking an unknown or already read id changes nothing.
    fn mark_read(&self, user: &str, which: MarkRead<'_>) -> StorageResult<u64>;

    /// Unread notifications of `user`.
    fn unread_count(&self, user: &str) -> StorageResult<u64>;

    /// Keeps at most `max_per_user` newest notifications of `user` and
    /// removes those older than `min_created_ms`; returns how many went.
    fn trim(&self, user: &str, max_per_user: u64, min_created_ms: u64) -> StorageResult<u64>;

    /// Users with stored notifications greater than `after`, in order, at
    /// most `limit` (for the retention sweep).
    fn users(&self, after: Option<&str>, limit: usize) -> StorageResult<Vec<Arc<str>>>;
}
