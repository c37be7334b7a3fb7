//! Notification inboxes in memory.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use super::{MemoryStorage, read, write};
use crate::{MarkRead, NotificationPage, NotificationRecord, NotificationStore, StorageResult};

/// Every inbox by user. An inbox exists while it holds a notification.
pub(super) type Inboxes = BTreeMap<Arc<str>, Inbox>;

/// One user's notifications by id, with the same read model as the
/// embedded backend (so both answer alike): a notification is read when its
/// own flag says so or its id is at or below `read_upto`, which `UpTo` and
/// `All` raise instead of touching every record.
#[derive(Debug, Default)]
pub(super) struct Inbox {
    items: BTreeMap<u64, NotificationRecord>,
    read_upto: u64,
    unread: u64,
}

impl Inbox {
    fn is_read(&self, record: &NotificationRecord) -> bool {
        record.read || record.id <= self.read_upto
    }

    /// The record as a reader sees it: `read` is the effective state.
    fn view(&self, record: &NotificationRecord) -> NotificationRecord {
        NotificationRecord {
            read: self.is_read(record),
            ..record.clone()
        }
    }

    fn remove(&mut self, id: u64) -> bool {
        match self.items.remove(&id) {
            Some(record) => {
                if !self.is_read(&record) {
                    self.unread -= 1;
                }
                true
            }
            None => false,
        }
    }
}

impl NotificationStore for MemoryStorage {
    fn append(&self, batch: &[NotificationRecord]) -> StorageResult<()> {
        let mut inboxes = write(&self.inboxes);
        for record in batch {
            let inbox = inboxes.entry(record.user.clone()).or_default();
            // Appending again is a retry: a read mark made meanwhile stays.
            let was_read = inbox.items.get(&record.id).map(|old| old.read);
            inbox.remove(record.id);
            let stored = NotificationRecord {
                read: record.read || was_read.unwrap_or(false),
                ..record.clone()
            };
            if !inbox.is_read(&stored) {
                inbox.unread += 1;
            }
            inbox.items.insert(record.id, stored);
        }
        Ok(())
    }

    fn sync(&self) -> StorageResult<()> {
        Ok(())
    }

    fn page(&self, user: &str, before_id: u64, limit: usize, unread_only: bool) -> StorageResult<NotificationPage> {
        let inboxes = read(&self.inboxes);
        let Some(inbox) = inboxes.get(user) else {
            return Ok(NotificationPage::default());
        };
        let end = match before_id {
            0 => Bound::Unbounded,
            id => Bound::Excluded(id),
        };
        let mut found = inbox
            .items
            .range((Bound::Unbounded, end))
            .rev()
            .map(|(_, r)| r)
            .filter(|r| !unread_only || !inbox.is_read(r));
        let items = found.by_ref().take(limit).map(|r| inbox.view(r)).collect();
        Ok(NotificationPage {
            items,
            unread: inbox.unread,
            has_more: found.next().is_some(),
        })
    }

    fn mark_read(&self, user: &str, which: MarkRead<'_>) -> StorageResult<u64> {
        let mut inboxes = write(&self.inboxes);
        let Some(inbox) = inboxes.get_mut(user) else {
            return Ok(0);
        };
        let mut marked = 0;
        match which {
            MarkRead::Ids(ids) => {
                for id in ids {
                    let read_upto = inbox.read_upto;
                    if let Some(record) = inbox.items.get_mut(id).filter(|r| !r.read && r.id > read_upto) {
                        record.read = true;
                        marked += 1;
                    }
                }
            }
            MarkRead::UpTo(_) | MarkRead::All => {
                let newest = inbox.items.keys().next_back().copied().unwrap_or(0);
                // Never past the newest stored id: a later notification with
                // a smaller id than the client guessed must arrive unread.
                let upto = match which {
                    MarkRead::UpTo(id) => id.min(newest),
                    _ => newest,
                };
                if upto > inbox.read_upto {
                    let first = inbox.read_upto + 1;
                    marked = inbox.items.range(first..=upto).filter(|(_, r)| !r.read).count() as u64;
                    inbox.read_upto = upto;
                }
            }
        }
        inbox.unread -= marked;
        Ok(marked)
    }

    fn unread_count(&self, user: &str) -> StorageResult<u64> {
        Ok(read(&self.inboxes).get(user).map_or(0, |i| i.unread))
    }

    fn trim(&self, user: &str, max_per_user: u64, min_created_ms: u64) -> StorageResult<u64> {
        let mut inboxes = write(&self.inboxes);
        let Some(inbox) = inboxes.get_mut(user) else {
            return Ok(0);
        };
        // Newest first: the first `max_per_user` young enough stay.
        let mut kept = 0;
        let doomed: Vec<u64> = inbox
            .items
            .values()
            .rev()
            .filter(|r| {
                let keep = kept < max_per_user && r.created_ms >= min_created_ms;
                kept += u64::from(keep);
                !keep
            })
            .map(|r| r.id)
            .collect();
        for id in &doomed {
            inbox.remove(*id);
        }
        if inbox.items.is_empty() {
            inboxes.remove(user);
        }
        Ok(doomed.len() as u64)
    }

    fn users(&self, after: Option<&str>, limit: usize) -> StorageResult<Vec<Arc<str>>> {
        let inboxes = read(&self.inboxes);
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(inboxes
            .range::<str, _>((from, Bound::Unbounded))
            .take(limit)
            .map(|(name, _)| name.clone())
            .collect())
    }
}
