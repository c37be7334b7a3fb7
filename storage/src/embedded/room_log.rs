//! Room history on fjall: `messages` and `room_heads`.

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;
use fjall::{Guard, Readable, Snapshot};
use herald_protocol::owner::{ReadPage, ReadRange, Stored};

use super::codec::{Dec, Enc};
use super::keys::{self, Key};
use super::{EmbeddedStorage, delete_all, failed, lock};
use crate::{LogEntry, Retention, RoomHead, RoomLog, StorageResult, bounds};

impl RoomLog for EmbeddedStorage {
    fn append(&self, batch: &[LogEntry]) -> StorageResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let _writer = lock(&self.log_writer);
        let mut heads: HashMap<&str, RoomHead> = HashMap::new();
        let mut write = self.db.batch();
        for entry in batch {
            let room: &str = &entry.room;
            let offset = entry.message.offset;
            let key = Key::named(room)?.u64(entry.epoch).u64(offset).finish();
            let current = match heads.get(room) {
                Some(head) => Some(*head),
                None => self
                    .ks
                    .heads
                    .get(room)
                    .map_err(|e| failed("room head", e))?
                    .as_deref()
                    .map(decode_head)
                    .transpose()?,
            };
            let head = match current {
                Some(head) if head.epoch == entry.epoch => RoomHead {
                    last_offset: head.last_offset.max(offset),
                    ..head
                },
                // A new room, or a new epoch: the history before is gone.
                // Its messages stay under their old epoch's keys, where no
                // read looks, until `trim` removes them.
                _ => RoomHead {
                    epoch: entry.epoch,
                    last_offset: offset,
                    trimmed_through: 0,
                },
            };
            heads.insert(room, head);
            write.insert(&self.ks.messages, key, encode_message(&entry.message));
        }
        for (room, head) in heads {
            write.insert(&self.ks.heads, room, encode_head(head));
        }
        write.commit().map_err(|e| failed("append", e))
    }

    fn sync(&self) -> StorageResult<()> {
        self.persist()
    }

    fn head(&self, room: &str) -> StorageResult<Option<RoomHead>> {
        self.snapshot_head(&self.db.snapshot(), room)
    }

    fn read(&self, room: &str, epoch: u64, range: ReadRange) -> StorageResult<ReadPage> {
        let snapshot = self.db.snapshot();
        let Some(head) = self.snapshot_head(&snapshot, room)?.filter(|h| h.epoch == epoch) else {
            return Ok(ReadPage::default());
        };
        let complete = range.after >= head.trimmed_through;
        let Some((first, end)) = bounds::offsets(&range) else {
            return Ok(ReadPage {
                complete,
                ..ReadPage::default()
            });
        };
        let last = end.map_or(u64::MAX, |end| end - 1);
        let prefix = Key::named(room)?.u64(epoch);
        let name_len = prefix.len() - 8;
        let from = Key::named(room)?.u64(epoch).u64(first).finish();
        let to = prefix.u64(last).finish();
        let found = snapshot.range(&self.ks.messages, from..=to);
        let mut messages = Vec::with_capacity(range.limit.min(256));
        let more = if range.newest {
            let mut found = found.rev();
            for guard in found.by_ref().take(range.limit) {
                messages.push(decode_entry(guard, name_len)?);
            }
            messages.reverse();
            found.next().is_some()
        } else {
            let mut found = found;
            for guard in found.by_ref().take(range.limit) {
                messages.push(decode_entry(guard, name_len)?);
            }
            found.next().is_some()
        };
        Ok(ReadPage {
            messages,
            complete,
            more,
        })
    }

    fn read_time(&self, room: &str, from_ms: u64, to_ms: u64, limit: usize) -> StorageResult<Vec<Stored>> {
        let snapshot = self.db.snapshot();
        let Some(head) = self.snapshot_head(&snapshot, room)? else {
            return Ok(Vec::new());
        };
        if bounds::span(from_ms, to_ms).is_none() || limit == 0 {
            return Ok(Vec::new());
        }
        // Timestamps are not keyed (they follow offsets, but a clock may
        // step back), so this walks the epoch; it serves the server API's
        // occasional time queries, not the publish or replay paths.
        let (from, to) = epoch_span(room, head.epoch)?;
        let name_len = from.len() - 16;
        let mut found = Vec::new();
        for guard in snapshot.range(&self.ks.messages, from..=to) {
            if found.len() >= limit {
                break;
            }
            let message = decode_entry(guard, name_len)?;
            if (from_ms..to_ms).contains(&message.timestamp_ms) {
                found.push(message);
            }
        }
        Ok(found)
    }

    fn trim(&self, room: &str, retention: Retention, now_ms: u64) -> StorageResult<u64> {
        let snapshot = self.db.snapshot();
        let Some(head) = self.snapshot_head(&snapshot, room)? else {
            return Ok(0);
        };
        let through = self.trim_point(&snapshot, room, head, retention, now_ms)?;
        if through > head.trimmed_through {
            // The head first: until the messages are gone too, a reader
            // finds them but is told the range is not complete, which is
            // true enough; the other order would vouch for a hole.
            let _writer = lock(&self.log_writer);
            let current = self.head(room)?;
            if let Some(current) = current.filter(|h| h.epoch == head.epoch) {
                let raised = RoomHead {
                    trimmed_through: current.trimmed_through.max(through),
                    ..current
                };
                self.ks
                    .heads
                    .insert(room, encode_head(raised))
                    .map_err(|e| failed("trim", e))?;
            }
        }
        // Everything at or below the trim point, plus whatever other
        // epochs left behind (an epoch change, or a trim cut short), as the
        // snapshot saw it: keys written since are not touched.
        let room_prefix = Key::named(room)?.finish();
        let (epoch_first, epoch_last) = epoch_span(room, head.epoch)?;
        let through_key = Key::named(room)?.u64(head.epoch).u64(through).finish();
        let doomed = [
            (
                Bound::Included(room_prefix.clone()),
                Bound::Excluded(epoch_first.clone()),
            ),
            (Bound::Included(epoch_first), Bound::Included(through_key)),
            (Bound::Excluded(epoch_last), prefix_end(room_prefix)),
        ];
        let keys = doomed
            .into_iter()
            .flat_map(|range| snapshot.range(&self.ks.messages, range))
            .map(|guard| guard.key().map(|k| k.to_vec()).map_err(|e| failed("trim", e)));
        delete_all(&self.db, &self.ks.messages, keys)
    }

    fn rooms(&self, after: Option<&str>, limit: usize) -> StorageResult<Vec<Arc<str>>> {
        let from = after.map_or(Bound::Unbounded, |a| Bound::Excluded(a.as_bytes()));
        self.db
            .snapshot()
            .range::<&[u8], _>(&self.ks.heads, (from, Bound::Unbounded))
            .take(limit)
            .map(|guard| {
                let key = guard.key().map_err(|e| failed("rooms", e))?;
                keys::name(&key, "room head key")
            })
            .collect()
    }
}

impl EmbeddedStorage {
    fn snapshot_head(&self, snapshot: &Snapshot, room: &str) -> StorageResult<Option<RoomHead>> {
        keys::check_name(room)?;
        let value = snapshot.get(&self.ks.heads, room).map_err(|e| failed("room head", e))?;
        value.as_deref().map(decode_head).transpose()
    }

    /// The highest offset of `head`'s epoch that `retention` removes (the
    /// head's `trimmed_through` if none): only ever a run of the oldest
    /// messages goes, so what remains stays contiguous.
    fn trim_point(
        &self,
        snapshot: &Snapshot,
        room: &str,
        head: RoomHead,
        retention: Retention,
        now_ms: u64,
    ) -> StorageResult<u64> {
        let (from, to) = epoch_span(room, head.epoch)?;
        let name_len = from.len() - 16;
        let mut through = head.trimmed_through;
        if let Some(max) = retention.max_messages {
            // Offsets are distinct and lie in (trimmed_through, last_offset],
            // so a room that cannot hold more than `max` costs no scan.
            if head.last_offset.saturating_sub(head.trimmed_through) > max {
                let mut newest = snapshot.range(&self.ks.messages, from..=to.clone()).rev();
                if let Some(guard) = newest.nth(usize::try_from(max).unwrap_or(usize::MAX)) {
                    let key = guard.key().map_err(|e| failed("trim", e))?;
                    let [_, offset] = keys::suffix::<2>(&key, name_len, "message key")?;
                    through = through.max(offset);
                }
            }
        }
        if let Some(cutoff) = bounds::age_cutoff(retention.max_age, now_ms) {
            let start = Key::named(room)?.u64(head.epoch).u64(through).finish();
            for guard in snapshot.range(&self.ks.messages, (Bound::Excluded(start), Bound::Included(to))) {
                let message = decode_entry(guard, name_len)?;
                if message.timestamp_ms >= cutoff {
                    break;
                }
                through = message.offset;
            }
        }
        Ok(through)
    }
}

/// The first and last possible keys of `room`'s `epoch`.
fn epoch_span(room: &str, epoch: u64) -> StorageResult<(Vec<u8>, Vec<u8>)> {
    Ok((
        Key::named(room)?.u64(epoch).u64(0).finish(),
        Key::named(room)?.u64(epoch).u64(u64::MAX).finish(),
    ))
}

/// The bound just past every key starting with `prefix`.
fn prefix_end(mut prefix: Vec<u8>) -> Bound<Vec<u8>> {
    while let Some(last) = prefix.pop() {
        if last < u8::MAX {
            prefix.push(last + 1);
            return Bound::Excluded(prefix);
        }
    }
    Bound::Unbounded
}

fn decode_entry(guard: Guard, name_len: usize) -> StorageResult<Stored> {
    let (key, value) = guard.into_inner().map_err(|e| failed("read", e))?;
    let [_, offset] = keys::suffix::<2>(&key, name_len, "message key")?;
    decode_message(offset, &value)
}

/// `timestamp, publisher, content type (0 | 1 + text), payload`; the offset
/// is in the key.
fn encode_message(message: &Stored) -> Vec<u8> {
    let capacity =
        16 + message.publisher.len() + message.payload.len() + message.content_type.as_deref().map_or(0, str::len);
    let enc = Enc::with_capacity(capacity)
        .var(message.timestamp_ms)
        .str(&message.publisher);
    let enc = match message.content_type.as_deref() {
        Some(content_type) => enc.u8(1).str(content_type),
        None => enc.u8(0),
    };
    enc.bytes(&message.payload).finish()
}

fn decode_message(offset: u64, value: &[u8]) -> StorageResult<Stored> {
    let mut d = Dec::new(value, "message")?;
    let timestamp_ms = d.var()?;
    let publisher = Arc::from(d.str()?);
    let content_type = match d.u8()? {
        0 => None,
        1 => Some(Arc::from(d.str()?)),
        _ => return Err(super::codec::corrupt("message", "bad content type tag")),
    };
    let payload = Bytes::copy_from_slice(d.bytes()?);
    d.end()?;
    Ok(Stored {
        offset,
        publisher,
        timestamp_ms,
        payload,
        content_type,
    })
}

/// `epoch, last offset, trimmed through`.
fn encode_head(head: RoomHead) -> Vec<u8> {
    Enc::new()
        .var(head.epoch)
        .var(head.last_offset)
        .var(head.trimmed_through)
        .finish()
}

fn decode_head(value: &[u8]) -> StorageResult<RoomHead> {
    let mut d = Dec::new(value, "room head")?;
    let head = RoomHead {
        epoch: d.var()?,
        last_offset: d.var()?,
        trimmed_through: d.var()?,
    };
    d.end()?;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StorageError;

    #[test]
    fn message_round_trip_and_damage() {
        let message = Stored {
            offset: 9,
            publisher: Arc::from("ann"),
            timestamp_ms: 1_700_000_000_000,
            payload: Bytes::from_static(&[0, 1, 255]),
            content_type: Some(Arc::from("application/octet-stream")),
        };
        let value = encode_message(&message);
        assert_eq!(decode_message(9, &value).unwrap(), message);
        for cut in 0..value.len() {
            assert!(matches!(
                decode_message(9, &value[..cut]),
                Err(StorageError::Corrupt(_))
            ));
        }
        let mut bad_tag = encode_message(&Stored {
            content_type: None,
            ..message
        });
        let tag_at = bad_tag.len() - 4;
        bad_tag[tag_at] = 7;
        assert!(matches!(decode_message(9, &bad_tag), Err(StorageError::Corrupt(_))));
    }

    #[test]
    fn head_round_trip() {
        let head = RoomHead {
            epoch: u64::MAX,
            last_offset: 300,
            trimmed_through: 0,
        };
        assert_eq!(decode_head(&encode_head(head)).unwrap(), head);
        assert!(decode_head(&[]).is_err());
    }

    #[test]
    fn prefix_end_carries() {
        assert_eq!(prefix_end(vec![1, 2]), Bound::Excluded(vec![1, 3]));
        assert_eq!(prefix_end(vec![1, 255]), Bound::Excluded(vec![2]));
        assert_eq!(prefix_end(vec![255]), Bound::Unbounded);
    }
}
