//! The notification store's pure logic: what is unread under the read
//! watermark, pages, which ids to mark, trim plans.
//!
//! A notification is read when its own flag is set or its id is at or
//! below the user's watermark ("read up to"). Marking all, or up to an id,
//! only raises the watermark: one write instead of one per notification.
//! Flags serve marking single ids. Rows whose `created_ms` is missing are
//! ghosts (a flag update that raced a trim's delete re-created the row
//! with only the flag): they are not notifications and trim removes them.

use std::sync::Arc;

use bytes::Bytes;

use crate::{NotificationRecord, StorageError};

/// One row's read state, as the counting and marking scans see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FlagRow {
    pub(crate) id: u64,
    pub(crate) read: bool,
    /// None: a ghost row.
    pub(crate) created_ms: Option<u64>,
}

impl FlagRow {
    pub(crate) fn unread(&self, watermark: u64) -> bool {
        self.created_ms.is_some() && !self.read && self.id > watermark
    }
}

/// One full notification row (`user` filled in by the caller).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NotificationRow {
    pub(crate) id: u64,
    pub(crate) kind: Option<String>,
    pub(crate) title: Option<String>,
    pub(crate) body: Option<String>,
    pub(crate) data: Option<Bytes>,
    pub(crate) created_ms: Option<u64>,
    pub(crate) read: bool,
}

impl NotificationRow {
    fn is_ghost(&self) -> bool {
        self.created_ms.is_none()
    }

    fn effectively_read(&self, watermark: u64) -> bool {
        self.read || self.id <= watermark
    }

    fn into_record(self, user: &Arc<str>, watermark: u64) -> NotificationRecord {
        let read = self.effectively_read(watermark);
        NotificationRecord {
            id: self.id,
            user: user.clone(),
            kind: self.kind.unwrap_or_default(),
            title: self.title.unwrap_or_default(),
            body: self.body.unwrap_or_default(),
            data: self.data.unwrap_or_default(),
            created_ms: self.created_ms.unwrap_or_default(),
            read,
        }
    }
}

/// Collects a page from rows scanned newest first: at most `limit` items
/// (only unread ones when `unread_only`), and whether more follow.
#[derive(Debug)]
pub(crate) struct PageCollector {
    user: Arc<str>,
    watermark: u64,
    limit: usize,
    unread_only: bool,
    pub(crate) items: Vec<NotificationRecord>,
    pub(crate) has_more: bool,
}

impl PageCollector {
    pub(crate) fn new(user: Arc<str>, watermark: u64, limit: usize, unread_only: bool) -> PageCollector {
        PageCollector {
            user,
            watermark,
            limit,
            unread_only,
            items: Vec::new(),
            has_more: false,
        }
    }

    /// Takes a page of rows (newest first); returns false once the page is
    /// known complete.
    pub(crate) fn feed(&mut self, rows: Vec<NotificationRow>) -> bool {
        for row in rows {
            if self.has_more {
                break;
            }
            if row.is_ghost() || (self.unread_only && row.effectively_read(self.watermark)) {
                continue;
            }
            if self.items.len() == self.limit {
                self.has_more = true;
            } else {
                self.items.push(row.into_record(&self.user, self.watermark));
            }
        }
        !self.has_more
    }
}

/// The ids of a `MarkRead::Ids` worth looking up: above the watermark (at
/// or below it they are read already), storable, without duplicates.
pub(crate) fn ids_to_check(ids: &[u64], watermark: u64) -> Vec<u64> {
    let mut out: Vec<u64> = ids
        .iter()
        .copied()
        .filter(|&id| id > watermark && i64::try_from(id).is_ok())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The ids among `rows` that are unread (and so get their flag set).
pub(crate) fn unread_ids(rows: &[FlagRow], watermark: u64) -> Vec<u64> {
    rows.iter().filter(|r| r.unread(watermark)).map(|r| r.id).collect()
}

/// Counts unread rows of a scan above the watermark, examining at most
/// `limit` rows (the count saturates there: an inbox trimmed to a bounded
/// size never reaches it), and notes the newest notification seen: marking
/// up to an id raises the watermark only that far, so notifications stored
/// later with lower ids than the mark are not reached.
#[derive(Debug)]
pub(crate) struct UnreadCounter {
    watermark: u64,
    limit: u64,
    pub(crate) examined: u64,
    pub(crate) unread: u64,
    pub(crate) newest: Option<u64>,
}

impl UnreadCounter {
    pub(crate) fn new(watermark: u64, limit: u64) -> UnreadCounter {
        UnreadCounter {
            watermark,
            limit,
            examined: 0,
            unread: 0,
            newest: None,
        }
    }

    /// Takes rows; returns false once the examination limit is reached.
    pub(crate) fn feed(&mut self, rows: &[FlagRow]) -> bool {
        for r in rows {
            if self.examined >= self.limit {
                return false;
            }
            self.examined += 1;
            if r.unread(self.watermark) {
                self.unread += 1;
            }
            if r.created_ms.is_some() {
                self.newest = self.newest.max(Some(r.id));
            }
        }
        self.examined < self.limit
    }
}

/// What trimming one inbox deletes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct TrimPlan {
    /// Delete every row with id <= this (one range tombstone).
    pub(crate) through: Option<u64>,
    /// Delete these rows one by one (newer than `through`).
    pub(crate) singles: Vec<u64>,
    /// Notifications removed (ghost rows are not notifications).
    pub(crate) removed: u64,
    /// Notifications kept: none left, the user leaves the user index.
    pub(crate) kept: u64,
}

/// Plans a trim from `(id, created_ms)` rows scanned newest first: the
/// newest `max_per_user` notifications created at or after
/// `min_created_ms` stay; the longest run of removed rows at the old end
/// becomes one range delete.
pub(crate) fn trim_plan(rows: &[(u64, Option<u64>)], max_per_user: u64, min_created_ms: u64) -> TrimPlan {
    let mut kept = 0u64;
    let mut removed = 0u64;
    let mut gone = Vec::with_capacity(rows.len());
    for &(_, created) in rows {
        let go = match created {
            None => true,
            Some(c) => {
                let go = kept >= max_per_user || c < min_created_ms;
                if go {
                    removed += 1;
                } else {
                    kept += 1;
                }
                go
            }
        };
        gone.push(go);
    }
    let tail = gone.iter().rev().take_while(|g| **g).count();
    let split = rows.len() - tail;
    TrimPlan {
        through: (tail > 0).then(|| rows[split].0),
        singles: rows[..split]
            .iter()
            .zip(&gone)
            .filter(|(_, g)| **g)
            .map(|((id, _), _)| *id)
            .collect(),
        removed,
        kept,
    }
}

/// A notification's id as the bigint it is clustered by (ids are compared
/// in range queries: at most `i64::MAX`).
pub(crate) fn check_record(r: &NotificationRecord) -> Result<i64, StorageError> {
    i64::try_from(r.id).map_err(|_| StorageError::Invalid(format!("notification id {} exceeds a CQL bigint", r.id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: u64, read: bool) -> NotificationRow {
        NotificationRow {
            id,
            kind: Some("k".into()),
            title: Some(format!("t{id}")),
            body: None,
            data: None,
            created_ms: Some(id * 10),
            read,
        }
    }

    fn flag(id: u64, read: bool) -> FlagRow {
        FlagRow {
            id,
            read,
            created_ms: Some(1),
        }
    }

    #[test]
    fn unread_under_watermark_and_flags() {
        assert!(flag(5, false).unread(4));
        assert!(!flag(5, false).unread(5), "at the watermark: read");
        assert!(!flag(5, true).unread(0), "flagged");
        assert!(
            !FlagRow {
                id: 9,
                read: false,
                created_ms: None
            }
            .unread(0),
            "ghost"
        );
        let rows = [flag(3, false), flag(4, true), flag(7, false), flag(8, false)];
        assert_eq!(unread_ids(&rows, 3), [7, 8]);
    }

    #[test]
    fn pages() {
        let user: Arc<str> = Arc::from("u");
        let mut c = PageCollector::new(user.clone(), 5, 3, false);
        assert!(c.feed(vec![row(9, false), row(8, true)]));
        assert!(!c.feed(vec![row(5, false), row(4, false), row(3, false)]));
        let ids: Vec<(u64, bool)> = c.items.iter().map(|n| (n.id, n.read)).collect();
        assert_eq!(
            ids,
            [(9, false), (8, true), (5, true)],
            "at or below the watermark reads as read"
        );
        assert!(c.has_more);
        assert_eq!(&*c.items[0].user, "u");
        assert_eq!(c.items[0].created_ms, 90);

        let mut c = PageCollector::new(user.clone(), 5, 2, true);
        let mut ghost = row(10, false);
        ghost.created_ms = None;
        c.feed(vec![ghost, row(9, true), row(8, false), row(7, false)]);
        assert!(c.feed(vec![]));
        assert_eq!(c.items.iter().map(|n| n.id).collect::<Vec<_>>(), [8, 7]);
        assert!(!c.has_more, "nothing unread follows");

        let mut c = PageCollector::new(user, 0, 0, false);
        c.feed(vec![row(1, false)]);
        assert!(c.items.is_empty() && c.has_more);
    }

    #[test]
    fn ids_worth_checking() {
        assert_eq!(ids_to_check(&[5, 3, 9, 9, 2, u64::MAX], 3), [5, 9]);
        assert!(ids_to_check(&[], 0).is_empty());
    }

    #[test]
    fn counting_is_bounded() {
        let rows: Vec<FlagRow> = (1..=10).map(|i| flag(i, i % 2 == 0)).collect();
        let mut c = UnreadCounter::new(0, 100);
        assert!(c.feed(&rows));
        assert_eq!((c.examined, c.unread), (10, 5));
        let mut c = UnreadCounter::new(0, 4);
        assert!(!c.feed(&rows));
        assert_eq!((c.examined, c.unread), (4, 2));
        let mut c = UnreadCounter::new(6, 100);
        c.feed(&rows);
        assert_eq!(c.unread, 2, "7 and 9");
        assert_eq!(c.newest, Some(10));
        let mut c = UnreadCounter::new(0, 100);
        c.feed(&[
            FlagRow {
                id: 12,
                read: false,
                created_ms: None,
            },
            flag(3, true),
        ]);
        assert_eq!((c.unread, c.newest), (0, Some(3)), "ghosts are not notifications");
    }

    #[test]
    fn trim_by_count_is_one_range_delete() {
        let rows: Vec<(u64, Option<u64>)> = (1..=10).rev().map(|i| (i, Some(i * 10))).collect();
        assert_eq!(
            trim_plan(&rows, 3, 0),
            TrimPlan {
                through: Some(7),
                singles: vec![],
                removed: 7,
                kept: 3,
            }
        );
        assert_eq!(
            trim_plan(&rows, 10, 0),
            TrimPlan {
                kept: 10,
                ..TrimPlan::default()
            }
        );
        assert_eq!(
            trim_plan(&rows, 0, 0),
            TrimPlan {
                through: Some(10),
                singles: vec![],
                removed: 10,
                kept: 0,
            }
        );
        assert_eq!(trim_plan(&[], 3, 0), TrimPlan::default());
    }

    #[test]
    fn trim_by_age_and_ghosts() {
        // id 6 was created out of order (old): removed alone.
        let rows = vec![
            (8, Some(80)),
            (7, None),
            (6, Some(5)),
            (5, Some(50)),
            (4, Some(40)),
            (3, Some(30)),
        ];
        let plan = trim_plan(&rows, 100, 45);
        assert_eq!(
            plan,
            TrimPlan {
                through: Some(4),
                singles: vec![7, 6],
                removed: 3,
                kept: 2,
            }
        );
        let plan = trim_plan(&rows, 1, 0);
        assert_eq!(
            plan,
            TrimPlan {
                through: Some(7),
                singles: vec![],
                removed: 4,
                kept: 1,
            }
        );
    }

    #[test]
    fn records_fit_the_schema() {
        let mut r = NotificationRecord {
            id: 5,
            user: Arc::from("u"),
            kind: String::new(),
            title: String::new(),
            body: String::new(),
            data: Bytes::new(),
            created_ms: 7,
            read: false,
        };
        assert_eq!(check_record(&r).unwrap(), 5);
        r.id = u64::MAX;
        assert!(check_record(&r).is_err());
    }
}
