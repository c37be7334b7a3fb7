//! Herald storage: room history, notifications and analytics events.
//!
//! One trait per kind of data ([`RoomLog`], [`NotificationStore`],
//! [`EventStore`]), each designed for batching and implemented by every
//! backend: [`memory`] (nothing survives a restart: tests and nodes run
//! with `--storage memory`), [`embedded`] (the default: fjall on local disk
//! under `--data-dir`) and, with the `scylla` feature, `scylla` for
//! clusters. [`Storage`] bundles one backend's three stores.
//!
//! The traits are synchronous: they run on the gateway's storage threads,
//! never on a shard. Beneath the room owners sits the seam
//! [`LogStore`], which takes the owner's log requests and answers them by
//! message, now or later; [`EphemeralLog`] is the in-memory node's one.

#![forbid(unsafe_code)]

mod bounds;
mod error;
mod events;
mod log;
mod notifications;
mod room_log;

pub mod embedded;
pub mod faulty;
pub mod memory;
#[cfg(feature = "scylla")]
pub mod scylla;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

use std::sync::Arc;

pub use error::{StorageError, StorageResult};
pub use events::{AnalyticsEvent, EventStore, Rollup};
pub use log::{EphemeralLog, LogStore};
pub use notifications::{MarkRead, NotificationPage, NotificationRecord, NotificationStore};
pub use room_log::{LogEntry, Retention, RoomHead, RoomLog};

/// The three stores of one backend.
#[derive(Debug, Clone)]
pub struct Storage {
    /// Room history.
    pub log: Arc<dyn RoomLog>,
    /// Notification inboxes.
    pub notifications: Arc<dyn NotificationStore>,
    /// Analytics events and rollups.
    pub events: Arc<dyn EventStore>,
}
