//! Analytics events and rollups in memory.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{MemoryStorage, read, write};
use crate::{AnalyticsEvent, EventStore, Rollup, StorageResult, bounds};

/// Raw events and rollups by event name.
#[derive(Debug, Default)]
pub(super) struct Events {
    names: BTreeMap<Arc<str>, Named>,
    /// Orders events of one name and millisecond by arrival.
    next_seq: u64,
}

#[derive(Debug, Default)]
struct Named {
    /// By (timestamp, arrival).
    raw: BTreeMap<(u64, u64), AnalyticsEvent>,
    /// By minute.
    rollups: BTreeMap<u64, Rollup>,
}

impl EventStore for MemoryStorage {
    fn append(&self, batch: &[AnalyticsEvent]) -> StorageResult<()> {
        let mut events = write(&self.events);
        for event in batch {
            let seq = events.next_seq;
            events.next_seq += 1;
            let named = events.names.entry(event.name.clone()).or_default();
            named.raw.insert((event.timestamp_ms, seq), event.clone());
            let one = Rollup {
                minute_ms: Rollup::minute_of(event.timestamp_ms),
                count: 1,
                sum: event.value,
                min: event.value,
                max: event.value,
            };
            named
                .rollups
                .entry(one.minute_ms)
                .and_modify(|r| r.merge(&one))
                .or_insert(one);
        }
        Ok(())
    }

    fn sync(&self) -> StorageResult<()> {
        Ok(())
    }

    fn events(&self, name: &str, from_ms: u64, to_ms: u64, limit: usize) -> StorageResult<Vec<AnalyticsEvent>> {
        let events = read(&self.events);
        let (Some(named), Some((from, to))) = (events.names.get(name), bounds::span(from_ms, to_ms)) else {
            return Ok(Vec::new());
        };
        Ok(named
            .raw
            .range((from, 0)..(to, 0))
            .take(limit)
            .map(|(_, e)| e.clone())
            .collect())
    }

    fn rollups(&self, name: &str, from_ms: u64, to_ms: u64) -> StorageResult<Vec<Rollup>> {
        let events = read(&self.events);
        let (Some(named), Some((from, to))) = (events.names.get(name), bounds::span(from_ms, to_ms)) else {
            return Ok(Vec::new());
        };
        Ok(named.rollups.range(from..to).map(|(_, r)| *r).collect())
    }

    fn trim(&self, min_timestamp_ms: u64) -> StorageResult<u64> {
        let mut events = write(&self.events);
        let mut removed = 0;
        for named in events.names.values_mut() {
            let kept = named.raw.split_off(&(min_timestamp_ms, 0));
            removed += named.raw.len() as u64;
            named.raw = kept;
        }
        Ok(removed)
    }
}
