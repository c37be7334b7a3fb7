//! Notification inboxes on fjall: `notifications` and `inboxes`.
//!
//! Each inbox keeps a read mark and an unread count beside the records. A
//! notification is read when its own flag says so (`MarkRead::Ids`) or its
//! id is at or below the mark (`UpTo`, `All`): marking a thousand read is
//! one small write, not a thousand, and `unread_count` is one get. The
//! count changes in the same batch as the records it counts, under the
//! inbox writer lock, so it never drifts.

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;
use fjall::{Guard, Readable};

use super::codec::{Dec, Enc};
use super::keys::{self, Key};
use super::{EmbeddedStorage, failed, lock};
use crate::{MarkRead, NotificationPage, NotificationRecord, NotificationStore, StorageResult};

/// An inbox's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Inbox {
    /// Every notification with an id at or below this is read.
    read_upto: u64,
    /// Notifications that are not read.
    unread: u64,
}

impl NotificationStore for EmbeddedStorage {
    fn append(&self, batch: &[NotificationRecord]) -> StorageResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let _writer = lock(&self.inbox_writer);
        let mut inboxes: HashMap<&str, Inbox> = HashMap::new();
        // What this batch already wrote, which a get cannot see yet.
        let mut written: HashMap<Vec<u8>, bool> = HashMap::new();
        let mut write = self.db.batch();
        for record in batch {
            let user: &str = &record.user;
            let mut inbox = match inboxes.get(user) {
                Some(inbox) => *inbox,
                None => self.inbox(user)?.unwrap_or_default(),
            };
            let key = Key::named(user)?.u64(record.id).finish();
            let stored_flag = match written.get(&key) {
                Some(read) => Some(*read),
                None => self.record_flag(&key)?,
            };
            // Appending again is a retry: a read mark made meanwhile stays.
            let read = record.read || stored_flag.unwrap_or(false);
            let was_unread = stored_flag.is_some_and(|f| !f && record.id > inbox.read_upto);
            let is_unread = !read && record.id > inbox.read_upto;
            inbox.unread = inbox
                .unread
                .saturating_sub(u64::from(was_unread))
                .saturating_add(u64::from(is_unread));
            inboxes.insert(user, inbox);
            write.insert(&self.ks.notifications, key.clone(), encode_record(record, read));
            written.insert(key, read);
        }
        for (user, inbox) in inboxes {
            write.insert(&self.ks.inboxes, user, encode_inbox(inbox));
        }
        write.commit().map_err(|e| failed("append notifications", e))
    }

    fn sync(&self) -> StorageResult<()> {
        self.persist()
    }

    fn page(&self, user: &str, before_id: u64, limit: usize, unread_only: bool) -> StorageResult<NotificationPage> {
        keys::check_name(user)?;
        let snapshot = self.db.snapshot();
        let inbox = match snapshot.get(&self.ks.inboxes, user).map_err(|e| failed("inbox", e))? {
            Some(value) => decode_inbox(&value)?,
            None => return Ok(NotificationPage::default()),
        };
        // Unread ones all lie above the read mark.
        let first = if unread_only {
            inbox.read_upto.saturating_add(1)
        } else {
            0
        };
        let end = match before_id {
            0 => Bound::Included(Key::named(user)?.u64(u64::MAX).finish()),
            id => Bound::Excluded(Key::named(user)?.u64(id).finish()),
        };
        if before_id != 0 && before_id <= first {
            return Ok(NotificationPage {
                unread: inbox.unread,
                ..NotificationPage::default()
            });
        }
        let start = Bound::Included(Key::named(user)?.u64(first).finish());
        let name_len = Key::named(user)?.len();
        let mut found = snapshot
            .range(&self.ks.notifications, (start, end))
            .rev()
            .map(|guard| decode_entry(guard, user, name_len, inbox))
            .filter(|record| !unread_only || !record.as_ref().is_ok_and(|r| r.read));
        let items = found.by_ref().take(limit).collect::<StorageResult<Vec<_>>>()?;
        let has_more = found.next().transpose()?.is_some();
        Ok(NotificationPage {
            items,
            unread: inbox.unread,
            has_more,
        })
    }

    fn mark_read(&self, user: &str, which: MarkRead<'_>) -> StorageResult<u64> {
        let _writer = lock(&self.inbox_writer);
        let Some(before) = self.inbox(user)? else {
            return Ok(0);
        };
        let mut inbox = before;
        let name_len = Key::named(user)?.len();
        let mut write = self.db.batch();
        let mut marked = 0;
        match which {
            MarkRead::Ids(ids) => {
                let mut ids = ids.to_vec();
                ids.sort_unstable();
                ids.dedup();
                for id in ids.into_iter().filter(|&id| id > inbox.read_upto) {
                    let key = Key::named(user)?.u64(id).finish();
                    let Some(value) = self.ks.notifications.get(&key).map_err(|e| failed("notification", e))? else {
                        continue;
                    };
                    let record = decode_record(user, id, &value)?;
                    if !record.read {
                        write.insert(&self.ks.notifications, key, encode_record(&record, true));
                        marked += 1;
                    }
                }
            }
            MarkRead::UpTo(_) | MarkRead::All => {
                let prefix = Key::named(user)?.finish();
                let newest = match self.ks.notifications.prefix(&prefix).next_back() {
                    Some(guard) => {
                        let key = guard.key().map_err(|e| failed("notification", e))?;
                        keys::suffix::<1>(&key, name_len, "notification key")?[0]
                    }
                    None => 0,
                };
                // Never past the newest stored id: a later notification with
                // a smaller id than the client named must arrive unread.
                let upto = match which {
                    MarkRead::UpTo(id) => id.min(newest),
                    _ => newest,
                };
                if upto > inbox.read_upto {
                    let from = Key::named(user)?.u64(inbox.read_upto + 1).finish();
                    let to = Key::named(user)?.u64(upto).finish();
                    for guard in self.ks.notifications.range(from..=to) {
                        let (key, value) = guard.into_inner().map_err(|e| failed("notification", e))?;
                        let [id] = keys::suffix::<1>(&key, name_len, "notification key")?;
                        if !decode_record(user, id, &value)?.read {
                            marked += 1;
                        }
                    }
                    inbox.read_upto = upto;
                }
            }
        }
        inbox.unread = inbox.unread.saturating_sub(marked);
        if marked == 0 && inbox == before {
            return Ok(0);
        }
        write.insert(&self.ks.inboxes, user, encode_inbox(inbox));
        write.commit().map_err(|e| failed("mark read", e))?;
        Ok(marked)
    }

    fn unread_count(&self, user: &str) -> StorageResult<u64> {
        keys::check_name(user)?;
        let value = self
            .db
            .snapshot()
            .get(&self.ks.inboxes, user)
            .map_err(|e| failed("inbox", e))?;
        Ok(value
            .as_deref()
            .map(decode_inbox)
            .transpose()?
            .map_or(0, |inbox| inbox.unread))
    }

    fn trim(&self, user: &str, max_per_user: u64, min_created_ms: u64) -> StorageResult<u64> {
        let _writer = lock(&self.inbox_writer);
        let Some(mut inbox) = self.inbox(user)? else {
            return Ok(0);
        };
        let name_len = Key::named(user)?.len();
        let mut write = self.db.batch();
        let mut kept = 0u64;
        let mut removed = 0u64;
        // Newest first: the first `max_per_user` young enough stay. An
        // inbox is bounded by this very trim, so one batch holds it.
        for guard in self.ks.notifications.prefix(Key::named(user)?.finish()).rev() {
            let record = decode_entry(guard, user, name_len, inbox)?;
            if kept < max_per_user && record.created_ms >= min_created_ms {
                kept += 1;
                continue;
            }
            if !record.read {
                inbox.unread = inbox.unread.saturating_sub(1);
            }
            write.remove(&self.ks.notifications, Key::named(user)?.u64(record.id).finish());
            removed += 1;
        }
        if removed == 0 {
            return Ok(0);
        }
        if kept == 0 {
            write.remove(&self.ks.inboxes, user);
        } else {
            write.insert(&self.ks.inboxes, user, encode_inbox(inbox));
        }
        write.commit().map_err(|e| failed("trim notifications", e))?;
        Ok(removed)
    }

    fn users(&self, after: Option<&str>, limit: usize) -> StorageResult<Vec<Arc<str>>> {
        let from = after.map_or(Bound::Unbounded, |a| Bound::Excluded(a.as_bytes()));
        self.db
            .snapshot()
            .range::<&[u8], _>(&self.ks.inboxes, (from, Bound::Unbounded))
            .take(limit)
            .map(|guard| {
                let key = guard.key().map_err(|e| failed("users", e))?;
                keys::name(&key, "inbox key")
            })
            .collect()
    }
}

impl EmbeddedStorage {
    /// The inbox as the writer sees it (with the inbox lock held).
    fn inbox(&self, user: &str) -> StorageResult<Option<Inbox>> {
        keys::check_name(user)?;
        let value = self.ks.inboxes.get(user).map_err(|e| failed("inbox", e))?;
        value.as_deref().map(decode_inbox).transpose()
    }

    /// The stored record's own read flag, None when there is no record.
    fn record_flag(&self, key: &[u8]) -> StorageResult<Option<bool>> {
        let value = self.ks.notifications.get(key).map_err(|e| failed("notification", e))?;
        value
            .as_deref()
            .map(|v| Dec::new(v, "notification").and_then(|mut d| Ok(d.u8()? & READ != 0)))
            .transpose()
    }
}

/// The record as a reader sees it: `read` is the effective state.
fn decode_entry(guard: Guard, user: &str, name_len: usize, inbox: Inbox) -> StorageResult<NotificationRecord> {
    let (key, value) = guard.into_inner().map_err(|e| failed("notification", e))?;
    let [id] = keys::suffix::<1>(&key, name_len, "notification key")?;
    let mut record = decode_record(user, id, &value)?;
    record.read |= id <= inbox.read_upto;
    Ok(record)
}

const READ: u8 = 1;

/// `flags (bit 0: read), created, kind, title, body, data`; user and id
/// are in the key.
fn encode_record(record: &NotificationRecord, read: bool) -> Vec<u8> {
    let capacity = 16 + record.kind.len() + record.title.len() + record.body.len() + record.data.len();
    Enc::with_capacity(capacity)
        .u8(if read { READ } else { 0 })
        .var(record.created_ms)
        .str(&record.kind)
        .str(&record.title)
        .str(&record.body)
        .bytes(&record.data)
        .finish()
}

fn decode_record(user: &str, id: u64, value: &[u8]) -> StorageResult<NotificationRecord> {
    let mut d = Dec::new(value, "notification")?;
    let flags = d.u8()?;
    let record = NotificationRecord {
        id,
        user: Arc::from(user),
        created_ms: d.var()?,
        kind: d.str()?.to_owned(),
        title: d.str()?.to_owned(),
        body: d.str()?.to_owned(),
        data: Bytes::copy_from_slice(d.bytes()?),
        read: flags & READ != 0,
    };
    d.end()?;
    Ok(record)
}

/// `read mark, unread count`.
fn encode_inbox(inbox: Inbox) -> Vec<u8> {
    Enc::new().var(inbox.read_upto).var(inbox.unread).finish()
}

fn decode_inbox(value: &[u8]) -> StorageResult<Inbox> {
    let mut d = Dec::new(value, "inbox")?;
    let inbox = Inbox {
        read_upto: d.var()?,
        unread: d.var()?,
    };
    d.end()?;
    Ok(inbox)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_and_inbox_round_trip() {
        let record = NotificationRecord {
            id: 5,
            user: Arc::from("u"),
            kind: "mention".into(),
            title: "Hi".into(),
            body: "there".into(),
            data: Bytes::from_static(b"{\"a\":1}"),
            created_ms: 42,
            read: true,
        };
        let value = encode_record(&record, true);
        assert_eq!(decode_record("u", 5, &value).unwrap(), record);
        assert!(decode_record("u", 5, &value[..value.len() - 1]).is_err());
        let inbox = Inbox {
            read_upto: 3,
            unread: 9,
        };
        assert_eq!(decode_inbox(&encode_inbox(inbox)).unwrap(), inbox);
    }
}
