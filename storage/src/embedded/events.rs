//! Analytics events on fjall: `events`, `event_names`, `rollups`, and the
//! event sequence in `meta`.
//!
//! Raw events are keyed by name, then time, then a sequence number that
//! makes two events of one name and millisecond distinct keys. The
//! sequence is stored with each batch, so it continues after a restart
//! rather than overwriting events written before. `event_names` lists
//! every name ever appended so `trim`, which is by time across all names,
//! is one range per name instead of a walk over every event.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;

use fjall::{Keyspace, Readable};

use super::codec::{Dec, Enc};
use super::keys::{self, Key};
use super::{EmbeddedStorage, delete_all, failed, lock};
use crate::{AnalyticsEvent, EventStore, Rollup, StorageResult, bounds};

/// `meta` key of the next event sequence number.
const NEXT_SEQ: &[u8] = b"next_event_seq";

/// The sequence the events store continues from.
pub(super) fn stored_next_seq(meta: &Keyspace) -> StorageResult<u64> {
    match meta.get(NEXT_SEQ).map_err(|e| failed("event sequence", e))? {
        Some(value) => {
            let mut d = Dec::new(&value, "event sequence")?;
            let seq = d.var()?;
            d.end()?;
            Ok(seq)
        }
        None => Ok(0),
    }
}

impl EventStore for EmbeddedStorage {
    fn append(&self, batch: &[AnalyticsEvent]) -> StorageResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut next_seq = lock(&self.events_writer);
        let mut seq = *next_seq;
        let mut write = self.db.batch();
        let mut minutes: BTreeMap<(&str, u64), Rollup> = BTreeMap::new();
        let mut names = BTreeSet::new();
        for event in batch {
            let name: &str = &event.name;
            let key = Key::named(name)?.u64(event.timestamp_ms).u64(seq).finish();
            seq = seq.wrapping_add(1);
            write.insert(&self.ks.events, key, encode_event(event));
            names.insert(name);
            let one = Rollup {
                minute_ms: Rollup::minute_of(event.timestamp_ms),
                count: 1,
                sum: event.value,
                min: event.value,
                max: event.value,
            };
            minutes
                .entry((name, one.minute_ms))
                .and_modify(|r| r.merge(&one))
                .or_insert(one);
        }
        for ((name, minute), mut rollup) in minutes {
            let key = Key::named(name)?.u64(minute).finish();
            if let Some(value) = self.ks.rollups.get(&key).map_err(|e| failed("rollup", e))? {
                rollup.merge(&decode_rollup(minute, &value)?);
            }
            write.insert(&self.ks.rollups, key, encode_rollup(&rollup));
        }
        for name in names {
            write.insert(&self.ks.event_names, name, b"");
        }
        write.insert(&self.ks.meta, NEXT_SEQ, Enc::new().var(seq).finish());
        write.commit().map_err(|e| failed("append events", e))?;
        *next_seq = seq;
        Ok(())
    }

    fn sync(&self) -> StorageResult<()> {
        self.persist()
    }

    fn events(&self, name: &str, from_ms: u64, to_ms: u64, limit: usize) -> StorageResult<Vec<AnalyticsEvent>> {
        let Some((from, to)) = bounds::span(from_ms, to_ms) else {
            keys::check_name(name)?;
            return Ok(Vec::new());
        };
        let name_len = Key::named(name)?.len();
        let start = Key::named(name)?.u64(from).u64(0).finish();
        let end = Key::named(name)?.u64(to).u64(0).finish();
        let name: Arc<str> = Arc::from(name);
        self.db
            .snapshot()
            .range(&self.ks.events, start..end)
            .take(limit)
            .map(|guard| {
                let (key, value) = guard.into_inner().map_err(|e| failed("events", e))?;
                let [timestamp_ms, _] = keys::suffix::<2>(&key, name_len, "event key")?;
                decode_event(name.clone(), timestamp_ms, &value)
            })
            .collect()
    }

    fn rollups(&self, name: &str, from_ms: u64, to_ms: u64) -> StorageResult<Vec<Rollup>> {
        let Some((from, to)) = bounds::span(from_ms, to_ms) else {
            keys::check_name(name)?;
            return Ok(Vec::new());
        };
        let name_len = Key::named(name)?.len();
        let start = Key::named(name)?.u64(from).finish();
        let end = Key::named(name)?.u64(to).finish();
        self.db
            .snapshot()
            .range(&self.ks.rollups, start..end)
            .map(|guard| {
                let (key, value) = guard.into_inner().map_err(|e| failed("rollups", e))?;
                let [minute] = keys::suffix::<1>(&key, name_len, "rollup key")?;
                decode_rollup(minute, &value)
            })
            .collect()
    }

    fn trim(&self, min_timestamp_ms: u64) -> StorageResult<u64> {
        // New events get new keys, so deleting old ones needs no lock.
        let mut removed = 0;
        for guard in self.ks.event_names.iter() {
            let name = keys::name(&guard.key().map_err(|e| failed("event names", e))?, "event name")?;
            let start = Key::named(&name)?.finish();
            let end = Key::named(&name)?.u64(min_timestamp_ms).u64(0).finish();
            let keys = self
                .ks
                .events
                .range::<Vec<u8>, _>((Bound::Included(start), Bound::Excluded(end)))
                .map(|guard| guard.key().map(|k| k.to_vec()).map_err(|e| failed("trim events", e)));
            removed += delete_all(&self.db, &self.ks.events, keys)?;
        }
        Ok(removed)
    }
}

/// `value, tag count, (key, value)...`; name and time are in the key.
fn encode_event(event: &AnalyticsEvent) -> Vec<u8> {
    let tags_len: usize = event.tags.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    let mut enc = Enc::with_capacity(10 + tags_len)
        .f64(event.value)
        .var(event.tags.len() as u64);
    for (key, value) in &event.tags {
        enc = enc.str(key).str(value);
    }
    enc.finish()
}

fn decode_event(name: Arc<str>, timestamp_ms: u64, value: &[u8]) -> StorageResult<AnalyticsEvent> {
    let mut d = Dec::new(value, "event")?;
    let value = d.f64()?;
    let count = d.var()?;
    // Each tag takes at least two bytes, which bounds the allocation by
    // the value's size whatever a damaged count says.
    let mut tags = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(d.remaining() / 2));
    for _ in 0..count {
        tags.push((d.str()?.to_owned(), d.str()?.to_owned()));
    }
    d.end()?;
    Ok(AnalyticsEvent {
        name,
        value,
        tags,
        timestamp_ms,
    })
}

/// `count, sum, min, max`; name and minute are in the key.
fn encode_rollup(rollup: &Rollup) -> Vec<u8> {
    Enc::new()
        .var(rollup.count)
        .f64(rollup.sum)
        .f64(rollup.min)
        .f64(rollup.max)
        .finish()
}

fn decode_rollup(minute_ms: u64, value: &[u8]) -> StorageResult<Rollup> {
    let mut d = Dec::new(value, "rollup")?;
    let rollup = Rollup {
        minute_ms,
        count: d.var()?,
        sum: d.f64()?,
        min: d.f64()?,
        max: d.f64()?,
    };
    d.end()?;
    Ok(rollup)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_and_rollup_round_trip() {
        let event = AnalyticsEvent {
            name: Arc::from("click"),
            value: 2.5,
            tags: vec![("page".into(), "/".into()), ("".into(), "é".into())],
            timestamp_ms: 61_000,
        };
        let value = encode_event(&event);
        assert_eq!(decode_event(Arc::from("click"), 61_000, &value).unwrap(), event);
        assert!(decode_event(Arc::from("click"), 61_000, &value[..value.len() - 1]).is_err());
        // A damaged tag count fails cleanly instead of allocating for it.
        let lying = Enc::new().f64(1.0).var(u64::MAX).finish();
        assert!(decode_event(Arc::from("click"), 0, &lying).is_err());

        let rollup = Rollup {
            minute_ms: 60_000,
            count: 3,
            sum: 6.0,
            min: 1.0,
            max: 3.0,
        };
        assert_eq!(decode_rollup(60_000, &encode_rollup(&rollup)).unwrap(), rollup);
    }
}
