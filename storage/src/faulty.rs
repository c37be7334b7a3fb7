//! A fault-injecting wrapper around any backend, so the gateway's tests can
//! make storage fail on demand (a full disk, a cluster that stopped
//! answering) and check that clients get typed errors and nothing crashes.
//!
//! Writes are `append`, `mark_read` and `trim`; syncs are `sync`; reads are
//! everything else. A failing operation returns
//! [`StorageError::Unavailable`] without reaching the inner store, so
//! nothing of it is applied.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use herald_protocol::owner::{ReadPage, ReadRange, Stored};

use crate::{
    AnalyticsEvent, EventStore, LogEntry, MarkRead, NotificationPage, NotificationRecord, NotificationStore, Retention,
    Rollup, RoomHead, RoomLog, Storage, StorageError, StorageResult,
};

/// Which operations fail, shared by every wrapper made with it: flip it from
/// the test while the gateway runs.
#[derive(Debug, Clone, Default)]
pub struct FaultSwitch {
    flags: Arc<Flags>,
}

#[derive(Debug, Default)]
struct Flags {
    writes: AtomicBool,
    reads: AtomicBool,
    sync: AtomicBool,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Write,
    Read,
    Sync,
}

impl FaultSwitch {
    /// A switch with nothing failing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `append`, `mark_read` and `trim` fail (or work again).
    pub fn fail_writes(&self, fail: bool) {
        self.flags.writes.store(fail, Ordering::Release);
    }

    /// Makes every read fail (or work again).
    pub fn fail_reads(&self, fail: bool) {
        self.flags.reads.store(fail, Ordering::Release);
    }

    /// Makes `sync` fail (or work again).
    pub fn fail_sync(&self, fail: bool) {
        self.flags.sync.store(fail, Ordering::Release);
    }

    /// Makes everything fail (or work again).
    pub fn fail_all(&self, fail: bool) {
        self.fail_writes(fail);
        self.fail_reads(fail);
        self.fail_sync(fail);
    }

    fn check(&self, op: Op) -> StorageResult<()> {
        let (flag, what) = match op {
            Op::Write => (&self.flags.writes, "writes"),
            Op::Read => (&self.flags.reads, "reads"),
            Op::Sync => (&self.flags.sync, "sync"),
        };
        if flag.load(Ordering::Acquire) {
            Err(StorageError::Unavailable(format!("injected fault: {what} fail")))
        } else {
            Ok(())
        }
    }
}

/// `inner` with every operation first asking `switch` whether to fail.
pub fn wrap(inner: Storage, switch: FaultSwitch) -> Storage {
    Storage {
        log: Arc::new(Faulty {
            inner: inner.log,
            switch: switch.clone(),
        }),
        notifications: Arc::new(Faulty {
            inner: inner.notifications,
            switch: switch.clone(),
        }),
        events: Arc::new(Faulty {
            inner: inner.events,
            switch,
        }),
    }
}

/// One store of the inner backend behind the switch.
#[derive(Debug)]
pub struct Faulty<T: ?Sized> {
    inner: Arc<T>,
    switch: FaultSwitch,
}

impl<T: ?Sized> Faulty<T> {
    fn inner(&self, op: Op) -> StorageResult<&T> {
        self.switch.check(op).map(|()| &*self.inner)
    }
}

impl RoomLog for Faulty<dyn RoomLog> {
    fn append(&self, batch: &[LogEntry]) -> StorageResult<()> {
        self.inner(Op::Write)?.append(batch)
    }

    fn sync(&self) -> StorageResult<()> {
        self.inner(Op::Sync)?.sync()
    }

    fn head(&self, room: &str) -> StorageResult<Option<RoomHead>> {
        self.inner(Op::Read)?.head(room)
    }

    fn read(&self, room: &str, epoch: u64, range: ReadRange) -> StorageResult<ReadPage> {
        self.inner(Op::Read)?.read(room, epoch, range)
    }

    fn read_time(&self, room: &str, from_ms: u64, to_ms: u64, limit: usize) -> StorageResult<Vec<Stored>> {
        self.inner(Op::Read)?.read_time(room, from_ms, to_ms, limit)
    }

    fn trim(&self, room: &str, retention: Retention, now_ms: u64) -> StorageResult<u64> {
        self.inner(Op::Write)?.trim(room, retention, now_ms)
    }

    fn rooms(&self, after: Option<&str>, limit: usize) -> StorageResult<Vec<Arc<str>>> {
        self.inner(Op::Read)?.rooms(after, limit)
    }
}

impl NotificationStore for Faulty<dyn NotificationStore> {
    fn append(&self, batch: &[NotificationRecord]) -> StorageResult<()> {
        self.inner(Op::Write)?.append(batch)
    }

    fn sync(&self) -> StorageResult<()> {
        self.inner(Op::Sync)?.sync()
    }

    fn page(&self, user: &str, before_id: u64, limit: usize, unread_only: bool) -> StorageResult<NotificationPage> {
        self.inner(Op::Read)?.page(user, before_id, limit, unread_only)
    }

    fn mark_read(&self, user: &str, which: MarkRead<'_>) -> StorageResult<u64> {
        self.inner(Op::Write)?.mark_read(user, which)
    }

    fn unread_count(&self, user: &str) -> StorageResult<u64> {
        self.inner(Op::Read)?.unread_count(user)
    }

    fn trim(&self, user: &str, max_per_user: u64, min_created_ms: u64) -> StorageResult<u64> {
        self.inner(Op::Write)?.trim(user, max_per_user, min_created_ms)
    }

    fn users(&self, after: Option<&str>, limit: usize) -> StorageResult<Vec<Arc<str>>> {
        self.inner(Op::Read)?.users(after, limit)
    }
}

impl EventStore for Faulty<dyn EventStore> {
    fn append(&self, batch: &[AnalyticsEvent]) -> StorageResult<()> {
        self.inner(Op::Write)?.append(batch)
    }

    fn sync(&self) -> StorageResult<()> {
        self.inner(Op::Sync)?.sync()
    }

    fn events(&self, name: &str, from_ms: u64, to_ms: u64, limit: usize) -> StorageResult<Vec<AnalyticsEvent>> {
        self.inner(Op::Read)?.events(name, from_ms, to_ms, limit)
    }

    fn rollups(&self, name: &str, from_ms: u64, to_ms: u64) -> StorageResult<Vec<Rollup>> {
        self.inner(Op::Read)?.rollups(name, from_ms, to_ms)
    }

    fn trim(&self, min_timestamp_ms: u64) -> StorageResult<u64> {
        self.inner(Op::Write)?.trim(min_timestamp_ms)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn entry(offset: u64) -> LogEntry {
        LogEntry {
            room: Arc::from("r"),
            epoch: 1,
            message: Stored {
                offset,
                publisher: Arc::from("ann"),
                timestamp_ms: 1_000,
                payload: Bytes::from_static(b"x"),
                content_type: None,
            },
        }
    }

    fn note(id: u64) -> NotificationRecord {
        NotificationRecord {
            id,
            user: Arc::from("u"),
            kind: "k".into(),
            title: "t".into(),
            body: "b".into(),
            data: Bytes::new(),
            created_ms: 1_000,
            read: false,
        }
    }

    fn event() -> AnalyticsEvent {
        AnalyticsEvent {
            name: Arc::from("e"),
            value: 1.0,
            tags: Vec::new(),
            timestamp_ms: 60_000,
        }
    }

    fn injected<T: std::fmt::Debug>(result: StorageResult<T>) -> bool {
        matches!(result, Err(StorageError::Unavailable(m)) if m.starts_with("injected fault"))
    }

    #[test]
    fn nothing_fails_until_switched() {
        let storage = wrap(crate::memory::storage(), FaultSwitch::new());
        storage.log.append(&[entry(1)]).unwrap();
        storage.log.sync().unwrap();
        assert_eq!(storage.log.head("r").unwrap().map(|h| h.last_offset), Some(1));
        storage.notifications.append(&[note(1)]).unwrap();
        assert_eq!(storage.notifications.unread_count("u").unwrap(), 1);
        storage.events.append(&[event()]).unwrap();
        assert_eq!(storage.events.rollups("e", 0, 120_000).unwrap().len(), 1);
    }

    #[test]
    fn failing_writes_apply_nothing_and_reads_still_work() {
        let switch = FaultSwitch::new();
        let storage = wrap(crate::memory::storage(), switch.clone());
        storage.log.append(&[entry(1)]).unwrap();
        storage.notifications.append(&[note(1)]).unwrap();
        switch.fail_writes(true);
        assert!(injected(storage.log.append(&[entry(2)])));
        assert!(injected(storage.log.trim("r", Retention::default(), 0)));
        assert!(injected(storage.notifications.append(&[note(2)])));
        assert!(injected(storage.notifications.mark_read("u", MarkRead::All)));
        assert!(injected(storage.notifications.trim("u", 0, 0)));
        assert!(injected(storage.events.append(&[event()])));
        assert!(injected(storage.events.trim(0)));
        storage.log.sync().unwrap();
        assert_eq!(storage.log.head("r").unwrap().map(|h| h.last_offset), Some(1));
        assert_eq!(storage.notifications.unread_count("u").unwrap(), 1);
        assert!(storage.events.rollups("e", 0, 120_000).unwrap().is_empty());

        switch.fail_writes(false);
        storage.log.append(&[entry(2)]).unwrap();
        assert_eq!(storage.log.head("r").unwrap().map(|h| h.last_offset), Some(2));
    }

    #[test]
    fn failing_reads_and_sync_are_separate_switches() {
        let switch = FaultSwitch::new();
        let storage = wrap(crate::memory::storage(), switch.clone());
        switch.fail_reads(true);
        let range = ReadRange {
            after: 0,
            before: 0,
            limit: 1,
            newest: true,
        };
        assert!(injected(storage.log.head("r")));
        assert!(injected(storage.log.read("r", 1, range)));
        assert!(injected(storage.log.read_time("r", 0, 1, 1)));
        assert!(injected(storage.log.rooms(None, 1)));
        assert!(injected(storage.notifications.page("u", 0, 1, false)));
        assert!(injected(storage.notifications.unread_count("u")));
        assert!(injected(storage.notifications.users(None, 1)));
        assert!(injected(storage.events.events("e", 0, 1, 1)));
        assert!(injected(storage.events.rollups("e", 0, 1)));
        storage.log.append(&[entry(1)]).unwrap();
        storage.log.sync().unwrap();

        switch.fail_reads(false);
        switch.fail_sync(true);
        assert!(injected(storage.log.sync()));
        assert!(injected(storage.notifications.sync()));
        assert!(injected(storage.events.sync()));
        assert_eq!(storage.log.head("r").unwrap().map(|h| h.last_offset), Some(1));

        switch.fail_all(false);
        storage.events.sync().unwrap();
    }
}
