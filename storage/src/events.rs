//! Analytics events, raw and rolled up per minute.

use std::sync::Arc;

use crate::StorageResult;

/// One analytics event (a page view, a click, a game event...).
#[derive(Debug, Clone, PartialEq)]
pub struct AnalyticsEvent {
    /// Event name.
    pub name: Arc<str>,
    /// Its value (1.0 for a count).
    pub value: f64,
    /// Dimensions (key, value).
    pub tags: Vec<(String, String)>,
    /// When it happened, ms since the Unix epoch.
    pub timestamp_ms: u64,
}

/// One minute of one event name: what a dashboard reads instead of raw
/// events.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rollup {
    /// The minute's start, ms since the Unix epoch (a multiple of 60,000).
    pub minute_ms: u64,
    /// Events in the minute.
    pub count: u64,
    /// Sum of their values.
    pub sum: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

impl Rollup {
    /// The start of the minute holding `timestamp_ms`.
    pub fn minute_of(timestamp_ms: u64) -> u64 {
        timestamp_ms - timestamp_ms % 60_000
    }

    /// Folds `other` (the same minute) into this one.
    pub fn merge(&mut self, other: &Rollup) {
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }
}

/// The analytics event store of one backend (synchronous; storage threads
/// only).
pub trait EventStore: Send + Sync + std::fmt::Debug {
    /// Stores a batch of raw events and folds each into its name's
    /// per-minute rollup. Durable once [`sync`](EventStore::sync) returned.
    fn append(&self, batch: &[AnalyticsEvent]) -> StorageResult<()>;

    /// Makes everything appended so far durable.
    fn sync(&self) -> StorageResult<()>;

    /// Raw events named `name` with `from_ms <= timestamp_ms < to_ms`,
    /// oldest first, at most `limit`.
    fn events(&self, name: &str, from_ms: u64, to_ms: u64, limit: usize) -> StorageResult<Vec<AnalyticsEvent>>;

    /// Per-minute rollups of `name` for the minutes starting in
    /// `[from_ms, to_ms)`, oldest first; minutes without events are absent.
    fn rollups(&self, name: &str, from_ms: u64, to_ms: u64) -> StorageResult<Vec<Rollup>>;

    /// Removes raw events older than `min_timestamp_ms` (rollups stay);
    /// returns how many went.
    fn trim(&self, min_timestamp_ms: u64) -> StorageResult<u64>;
}
