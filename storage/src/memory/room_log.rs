//! Room history in memory.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use herald_protocol::owner::{ReadPage, ReadRange, Stored};

use super::{MemoryStorage, read, write};
use crate::{LogEntry, Retention, RoomHead, RoomLog, StorageResult, bounds};

/// Every stored room by name.
pub(super) type Rooms = BTreeMap<Arc<str>, Room>;

/// One room: its head and its current epoch's messages by offset. A new
/// epoch replaces the whole room, so older epochs' messages never linger.
#[derive(Debug)]
pub(super) struct Room {
    head: RoomHead,
    messages: BTreeMap<u64, Stored>,
}

impl Room {
    fn in_range(&self, range: &ReadRange) -> impl DoubleEndedIterator<Item = &Stored> {
        let bounds = bounds::offsets(range).map(|(first, end)| {
            let end = end.map_or(Bound::Unbounded, Bound::Excluded);
            (Bound::Included(first), end)
        });
        bounds
            .into_iter()
            .flat_map(|bounds| self.messages.range(bounds).map(|(_, m)| m))
    }
}

impl RoomLog for MemoryStorage {
    fn append(&self, batch: &[LogEntry]) -> StorageResult<()> {
        let mut rooms = write(&self.rooms);
        for entry in batch {
            let offset = entry.message.offset;
            let room = rooms.entry(entry.room.clone()).or_insert_with(|| Room {
                head: RoomHead {
                    epoch: entry.epoch,
                    last_offset: offset,
                    trimmed_through: 0,
                },
                messages: BTreeMap::new(),
            });
            if room.head.epoch == entry.epoch {
                room.head.last_offset = room.head.last_offset.max(offset);
            } else {
                room.head = RoomHead {
                    epoch: entry.epoch,
                    last_offset: offset,
                    trimmed_through: 0,
                };
                room.messages.clear();
            }
            room.messages.insert(offset, entry.message.clone());
        }
        Ok(())
    }

    fn sync(&self) -> StorageResult<()> {
        Ok(())
    }

    fn head(&self, room: &str) -> StorageResult<Option<RoomHead>> {
        Ok(read(&self.rooms).get(room).map(|r| r.head))
    }

    fn read(&self, room: &str, epoch: u64, range: ReadRange) -> StorageResult<ReadPage> {
        let rooms = read(&self.rooms);
        let Some(room) = rooms.get(room).filter(|r| r.head.epoch == epoch) else {
            return Ok(ReadPage::default());
        };
        let mut messages: Vec<Stored>;
        let more;
        if range.newest {
            let mut found = room.in_range(&range).rev();
            messages = found.by_ref().take(range.limit).cloned().collect();
            more = found.next().is_some();
            messages.reverse();
        } else {
            let mut found = room.in_range(&range);
            messages = found.by_ref().take(range.limit).cloned().collect();
            more = found.next().is_some();
        }
        Ok(ReadPage {
            messages,
            complete: range.after >= room.head.trimmed_through,
            more,
        })
    }

    fn read_time(&self, room: &str, from_ms: u64, to_ms: u64, limit: usize) -> StorageResult<Vec<Stored>> {
        let rooms = read(&self.rooms);
        let Some(room) = rooms.get(room) else {
            return Ok(Vec::new());
        };
        Ok(room
            .messages
            .values()
            .filter(|m| (from_ms..to_ms).contains(&m.timestamp_ms))
            .take(limit)
            .cloned()
            .collect())
    }

    fn trim(&self, room: &str, retention: Retention, now_ms: u64) -> StorageResult<u64> {
        let mut rooms = write(&self.rooms);
        let Some(room) = rooms.get_mut(room) else {
            return Ok(0);
        };
        let excess = retention
            .max_messages
            .map_or(0, |max| (room.messages.len() as u64).saturating_sub(max));
        let cutoff = bounds::age_cutoff(retention.max_age, now_ms);
        let mut removed = 0;
        // Only ever the oldest messages go, so what remains is contiguous
        // and `trimmed_through` alone says what a read can vouch for.
        while let Some(entry) = room.messages.first_entry() {
            let too_old = cutoff.is_some_and(|c| entry.get().timestamp_ms < c);
            if removed >= excess && !too_old {
                break;
            }
            let offset = *entry.key();
            entry.remove();
            room.head.trimmed_through = room.head.trimmed_through.max(offset);
            removed += 1;
        }
        Ok(removed)
    }

    fn rooms(&self, after: Option<&str>, limit: usize) -> StorageResult<Vec<Arc<str>>> {
        let rooms = read(&self.rooms);
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(rooms
            .range::<str, _>((from, Bound::Unbounded))
            .take(limit)
            .map(|(name, _)| name.clone())
            .collect())
    }
}
