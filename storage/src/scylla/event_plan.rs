//! The event store's pure logic: day partitions, rollup partials, trims.
//!
//! Rollups: CQL counters only add integers (no min, no max, no doubles)
//! and a counter update retried after a timeout may count twice. So each
//! writer keeps, in memory, the rollup of the events *it* stored for each
//! (name, minute) and upserts that partial with absolute values into its
//! own row, clustering `(minute_ms, writer)`: a retry writes the same
//! values again. A read sums the partial rows of each minute. A partial
//! evicted from memory is never rewritten: its next event starts a partial
//! with a new writer id.

use std::collections::HashMap;
use std::sync::Arc;

use crate::{AnalyticsEvent, Rollup, StorageError, StorageResult};

/// Event partitions are one UTC day wide.
pub(crate) const DAY_MS: u64 = 86_400_000;

/// Partials kept in memory before old minutes are evicted.
pub(crate) const ROLLUP_CACHE_ENTRIES: usize = 100_000;

/// Minutes older than the newest seen by more than this are evicted first.
pub(crate) const ROLLUP_KEEP_MS: u64 = 2 * 3_600_000;

pub(crate) fn day_of(timestamp_ms: u64) -> u64 {
    timestamp_ms / DAY_MS
}

/// The days `[from_ms, to_ms)` spans, inclusive (None: an empty range).
pub(crate) fn day_span(from_ms: u64, to_ms: u64) -> Option<(u64, u64)> {
    (to_ms > from_ms).then(|| (day_of(from_ms), day_of(to_ms - 1)))
}

/// Refuses what the schema cannot hold.
pub(crate) fn validate_event(e: &AnalyticsEvent) -> StorageResult<()> {
    if i64::try_from(e.timestamp_ms).is_err() {
        return Err(StorageError::Invalid(format!(
            "event {}: timestamp exceeds a bigint",
            e.name
        )));
    }
    Ok(())
}

/// Sums partial rollup rows into one per minute, oldest first.
pub(crate) fn fold_rollups(rows: impl IntoIterator<Item = Rollup>) -> Vec<Rollup> {
    let mut by_minute: HashMap<u64, Rollup> = HashMap::new();
    for r in rows {
        by_minute
            .entry(r.minute_ms)
            .and_modify(|acc| acc.merge(&r))
            .or_insert(r);
    }
    let mut out: Vec<Rollup> = by_minute.into_values().collect();
    out.sort_by_key(|r| r.minute_ms);
    out
}

/// One partial rollup row to upsert.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RollupWrite {
    pub(crate) name: Arc<str>,
    pub(crate) writer: i64,
    pub(crate) rollup: Rollup,
}

#[derive(Debug, Clone, Copy)]
struct Partial {
    writer: i64,
    rollup: Rollup,
}

/// This process's partial rollups per (name, minute).
#[derive(Debug)]
pub(crate) struct RollupCache {
    entries: HashMap<(Arc<str>, u64), Partial>,
    seed: u64,
    next_writer: u64,
    newest_minute: u64,
    capacity: usize,
}

impl RollupCache {
    pub(crate) fn new(seed: u64, capacity: usize) -> RollupCache {
        RollupCache {
            entries: HashMap::new(),
            seed,
            next_writer: 0,
            newest_minute: 0,
            capacity,
        }
    }

    fn new_writer(&mut self) -> i64 {
        self.next_writer += 1;
        // Unique per process (seed) and per partial (counter).
        super::util::mix64(self.seed ^ self.next_writer.wrapping_mul(0x9e37_79b9_7f4a_7c15)) as i64
    }

    /// Folds a batch in; returns each touched partial's new absolute value.
    pub(crate) fn apply(&mut self, batch: &[AnalyticsEvent]) -> Vec<RollupWrite> {
        let mut touched: Vec<(Arc<str>, u64)> = Vec::new();
        for e in batch {
            let minute = Rollup::minute_of(e.timestamp_ms);
            self.newest_minute = self.newest_minute.max(minute);
            let one = Rollup {
                minute_ms: minute,
                count: 1,
                sum: e.value,
                min: e.value,
                max: e.value,
            };
            let key = (e.name.clone(), minute);
            match self.entries.get_mut(&key) {
                Some(p) => p.rollup.merge(&one),
                None => {
                    let writer = self.new_writer();
                    self.entries.insert(key.clone(), Partial { writer, rollup: one });
                }
            }
            if !touched.contains(&key) {
                touched.push(key);
            }
        }
        let writes = touched
            .into_iter()
            .filter_map(|key| {
                let p = self.entries.get(&key)?;
                Some(RollupWrite {
                    name: key.0,
                    writer: p.writer,
                    rollup: p.rollup,
                })
            })
            .collect();
        self.evict();
        writes
    }

    /// Forgets partials whose write failed: their durable row may or may
    /// not hold the last value, so the next event starts a new partial.
    pub(crate) fn forget(&mut self, writes: &[RollupWrite]) {
        for w in writes {
            let key = (w.name.clone(), w.rollup.minute_ms);
            if self.entries.get(&key).is_some_and(|p| p.writer == w.writer) {
                self.entries.remove(&key);
            }
        }
    }

    fn evict(&mut self) {
        if self.entries.len() <= self.capacity {
            return;
        }
        let keep_from = self.newest_minute.saturating_sub(ROLLUP_KEEP_MS);
        self.entries.retain(|(_, minute), _| *minute >= keep_from);
        if self.entries.len() > self.capacity {
            self.entries.clear();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The raw-event days trim handles for one name: `whole` days end at or
/// before `min_timestamp_ms` (their partitions go), `partial` is the day
/// holding it (a range of it goes). Days already trimmed (`raw` false) are
/// skipped.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct DayTrim {
    pub(crate) whole: Vec<u64>,
    pub(crate) partial: Option<u64>,
}

pub(crate) fn day_trim(days: &[(u64, Option<bool>)], min_timestamp_ms: u64) -> DayTrim {
    let mut plan = DayTrim::default();
    for &(day, raw) in days {
        if raw == Some(false) {
            continue;
        }
        let start = day.saturating_mul(DAY_MS);
        let end = start.saturating_add(DAY_MS);
        if end <= min_timestamp_ms {
            plan.whole.push(day);
        } else if start < min_timestamp_ms {
            plan.partial = Some(day);
        }
    }
    plan.whole.sort_unstable();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(name: &str, value: f64, ts: u64) -> AnalyticsEvent {
        AnalyticsEvent {
            name: Arc::from(name),
            value,
            tags: vec![],
            timestamp_ms: ts,
        }
    }

    #[test]
    fn days() {
        assert_eq!(day_of(DAY_MS - 1), 0);
        assert_eq!(day_of(DAY_MS), 1);
        assert_eq!(day_span(0, DAY_MS), Some((0, 0)));
        assert_eq!(day_span(0, DAY_MS + 1), Some((0, 1)));
        assert_eq!(day_span(5, 5), None);
        assert!(validate_event(&ev("a", 1.0, u64::MAX)).is_err());
        validate_event(&ev("a", 1.0, 5)).unwrap();
    }

    #[test]
    fn partial_rows_sum_per_minute() {
        let r = |m, count, sum, min, max| Rollup {
            minute_ms: m,
            count,
            sum,
            min,
            max,
        };
        let folded = fold_rollups([
            r(120_000, 1, 5.0, 5.0, 5.0),
            r(60_000, 2, 3.0, 1.0, 2.0),
            r(120_000, 3, 6.0, -1.0, 4.0),
        ]);
        assert_eq!(folded, [r(60_000, 2, 3.0, 1.0, 2.0), r(120_000, 4, 11.0, -1.0, 5.0)]);
        assert!(fold_rollups([]).is_empty());
    }

    #[test]
    fn cache_writes_absolute_partials() {
        let mut c = RollupCache::new(42, 100);
        let w1 = c.apply(&[ev("a", 1.0, 1000), ev("a", 3.0, 2000), ev("b", 2.0, 61_000)]);
        assert_eq!(w1.len(), 2);
        assert_eq!((w1[0].rollup.count, w1[0].rollup.sum, w1[0].rollup.max), (2, 4.0, 3.0));
        assert_eq!(w1[1].rollup.minute_ms, 60_000);
        let w2 = c.apply(&[ev("a", -1.0, 59_999)]);
        assert_eq!(w2.len(), 1);
        assert_eq!(w2[0].writer, w1[0].writer, "same partial, same row");
        assert_eq!((w2[0].rollup.count, w2[0].rollup.sum, w2[0].rollup.min), (3, 3.0, -1.0));
        assert_ne!(w1[0].writer, w1[1].writer);
    }

    #[test]
    fn forgotten_partials_start_new_rows() {
        let mut c = RollupCache::new(1, 100);
        let w1 = c.apply(&[ev("a", 1.0, 1000)]);
        c.forget(&w1);
        let w2 = c.apply(&[ev("a", 2.0, 1000)]);
        assert_ne!(w1[0].writer, w2[0].writer);
        assert_eq!(w2[0].rollup.count, 1, "the new partial holds only its own events");
        // Summed at read, both rows give the minute.
        let folded = fold_rollups([w1[0].rollup, w2[0].rollup]);
        assert_eq!((folded[0].count, folded[0].sum), (2, 3.0));
    }

    #[test]
    fn eviction_keeps_recent_minutes() {
        let mut c = RollupCache::new(7, 3);
        c.apply(&[ev("a", 1.0, 0), ev("a", 1.0, 60_000)]);
        c.apply(&[
            ev("a", 1.0, ROLLUP_KEEP_MS + 120_000),
            ev("b", 1.0, ROLLUP_KEEP_MS + 120_000),
        ]);
        assert_eq!(c.len(), 2, "minutes older than the window went");
        let mut c = RollupCache::new(7, 1);
        c.apply(&[ev("a", 1.0, 0), ev("b", 1.0, 0)]);
        assert_eq!(c.len(), 0, "over capacity within the window: start over");
    }

    #[test]
    fn trims_by_day() {
        let days = [
            (0, Some(true)),
            (1, None),
            (2, Some(false)),
            (3, Some(true)),
            (5, Some(true)),
        ];
        assert_eq!(
            day_trim(&days, 3 * DAY_MS + 5),
            DayTrim {
                whole: vec![0, 1],
                partial: Some(3)
            }
        );
        assert_eq!(
            day_trim(&days, 4 * DAY_MS),
            DayTrim {
                whole: vec![0, 1, 3],
                partial: None
            }
        );
        assert_eq!(day_trim(&days, 0), DayTrim::default());
    }
}
