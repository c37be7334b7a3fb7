//! The in-memory backend: every store in `BTreeMap`s behind `RwLock`s.
//!
//! It is the reference implementation of the traits (the conformance suite
//! is written against what it does) and what `--storage memory` runs on:
//! nothing survives a restart, so `sync` has nothing to do. Each kind of
//! data has its own lock, so a notification write never waits for a room
//! read; readers share their lock and only writers are exclusive.

mod events;
mod notifications;
mod room_log;

use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::Storage;

/// All three stores in memory. Cheap to create; share it through
/// [`storage`](MemoryStorage::storage).
#[derive(Debug, Default)]
pub struct MemoryStorage {
    rooms: RwLock<room_log::Rooms>,
    inboxes: RwLock<notifications::Inboxes>,
    events: RwLock<events::Events>,
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The bundle whose three stores are this one.
    pub fn storage(self) -> Storage {
        let shared = Arc::new(self);
        Storage {
            log: shared.clone(),
            notifications: shared.clone(),
            events: shared,
        }
    }
}

/// A fresh, empty in-memory [`Storage`].
pub fn storage() -> Storage {
    MemoryStorage::new().storage()
}

// A panic while a lock was held cannot leave a half-applied change here
// (every write finishes its checks before it mutates), so a poisoned lock
// still guards consistent data: take it rather than panic again.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
