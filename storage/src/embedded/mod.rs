//! The embedded backend: fjall (an LSM tree) on local disk, one database
//! with a keyspace per kind of record (layouts in `keys.rs`).
//!
//! Writes are fjall write batches, atomic across keyspaces: a message and
//! its room's new head, a notification and its inbox's unread count, an
//! event and its minute's rollup land together or not at all. Batches reach
//! the OS without an fsync; `sync` fsyncs the journal once for everything
//! written before it, which is how the gateway's writer thread
//! group-commits (many appends, then one sync, then the acknowledgements).
//!
//! The stores keep counters (room heads, unread counts, rollups) that are
//! read, changed and written back. Each store has one small writer lock
//! around that read-modify-write so a second writer (a trim sweep, a
//! `mark_read` from a reader thread) cannot lose an update. Readers never
//! take it, and always read through a fjall snapshot: fjall's plain
//! `Keyspace::get` and `range` read at the newest sequence number, which
//! includes a batch still being applied, so a reader could see half a
//! batch, or a head whose messages a later snapshot does not show yet. A
//! snapshot sees every batch entirely or not at all. Writers read plainly:
//! under their lock, every batch of their keyspaces has finished.

mod codec;
mod events;
mod keys;
mod notifications;
mod room_log;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

/// Memtable size per keyspace. fjall's default (64 MiB) makes every insert
/// search a skiplist of up to a million entries; with 8 MiB the group
/// commit of 1,024 messages ran about twice as fast here (storage-bench,
/// BENCHMARKS.md), at the price of more, smaller flushes.
const MEMTABLE_BYTES: u64 = 8 * 1024 * 1024;

use crate::{Storage, StorageError, StorageResult};

/// How to open the embedded database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// Block cache in bytes. Default 64 MiB: hot rooms' recent history and
    /// every room head stay in memory; fjall suggests 20–25% of RAM for
    /// data sets that do not fit.
    pub cache_bytes: u64,
    /// fjall's background threads (flushes, compactions). Default None:
    /// fjall's own choice, min(cores, 4). Must not be 0.
    pub worker_threads: Option<usize>,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            cache_bytes: 64 * 1024 * 1024,
            worker_threads: None,
        }
    }
}

/// All three stores in one fjall database under a directory.
pub struct EmbeddedStorage {
    dir: PathBuf,
    db: Database,
    ks: Keyspaces,
    /// Serialises read-modify-writes of room heads (append, trim).
    log_writer: Mutex<()>,
    /// Serialises read-modify-writes of inboxes (append, mark_read, trim).
    inbox_writer: Mutex<()>,
    /// Serialises rollup read-modify-writes; holds the next event sequence.
    events_writer: Mutex<u64>,
}

struct Keyspaces {
    messages: Keyspace,
    heads: Keyspace,
    notifications: Keyspace,
    inboxes: Keyspace,
    events: Keyspace,
    event_names: Keyspace,
    rollups: Keyspace,
    meta: Keyspace,
}

impl std::fmt::Debug for EmbeddedStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStorage")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Opens (or creates) the database under `dir` and returns its stores.
pub fn open(dir: &Path, options: EmbeddedOptions) -> StorageResult<Storage> {
    EmbeddedStorage::open(dir, options).map(EmbeddedStorage::storage)
}

impl EmbeddedStorage {
    /// Opens (or creates) the database under `dir`. Fails with
    /// [`StorageError::Unavailable`] when fjall cannot (the directory is a
    /// file, is not writable, or another process holds it) and
    /// [`StorageError::Invalid`] for impossible options.
    pub fn open(dir: &Path, options: EmbeddedOptions) -> StorageResult<Self> {
        let mut builder = Database::builder(dir).cache_size(options.cache_bytes);
        if let Some(threads) = options.worker_threads {
            if threads == 0 {
                return Err(StorageError::Invalid("worker_threads must be at least 1".into()));
            }
            builder = builder.worker_threads(threads);
        }
        let db = builder
            .open()
            .map_err(|e| failed(&format!("opening {}", dir.display()), e))?;
        let keyspace = |name: &str| {
            db.keyspace(name, || {
                KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES)
            })
            .map_err(|e| failed(&format!("opening keyspace {name}"), e))
        };
        let ks = Keyspaces {
            messages: keyspace("messages")?,
            heads: keyspace("room_heads")?,
            notifications: keyspace("notifications")?,
            inboxes: keyspace("inboxes")?,
            events: keyspace("events")?,
            event_names: keyspace("event_names")?,
            rollups: keyspace("rollups")?,
            meta: keyspace("meta")?,
        };
        let next_seq = events::stored_next_seq(&ks.meta)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            db,
            ks,
            log_writer: Mutex::new(()),
            inbox_writer: Mutex::new(()),
            events_writer: Mutex::new(next_seq),
        })
    }

    /// The bundle whose three stores are this database.
    pub fn storage(self) -> Storage {
        let shared = Arc::new(self);
        Storage {
            log: shared.clone(),
            notifications: shared.clone(),
            events: shared,
        }
    }

    /// The directory the database lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// fsyncs the journal: every batch committed before is durable. One
    /// journal serves all keyspaces, so any store's `sync` covers all three.
    fn persist(&self) -> StorageResult<()> {
        self.db.persist(PersistMode::SyncAll).map_err(|e| failed("sync", e))
    }
}

/// Maps a fjall error: I/O and a poisoned or locked database are
/// `Unavailable` (the disk, not the data); anything about what was read
/// back is `Corrupt`.
fn failed(doing: &str, error: fjall::Error) -> StorageError {
    use fjall::{Error, LsmError};
    let message = format!("{doing}: {error}");
    match error {
        Error::Io(_) | Error::Poisoned | Error::Locked | Error::KeyspaceDeleted | Error::Storage(LsmError::Io(_)) => {
            StorageError::Unavailable(message)
        }
        _ => StorageError::Corrupt(message),
    }
}

// No code here panics while holding a writer lock; if something below
// fjall ever did, the guarded data is `()` or a counter that is only stored
// after its batch committed, so carrying on is safe.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Deletes are committed in batches of this many keys, so a trim of a huge
/// room never builds one enormous batch in memory.
const DELETE_CHUNK: usize = 10_000;

/// Commits `keys` of `keyspace` as deletes, [`DELETE_CHUNK`] at a time.
fn delete_all(
    db: &Database,
    keyspace: &Keyspace,
    keys: impl Iterator<Item = StorageResult<Vec<u8>>>,
) -> StorageResult<u64> {
    let mut batch = db.batch();
    let mut deleted = 0;
    for key in keys {
        batch.remove(keyspace, key?);
        deleted += 1;
        if batch.len() >= DELETE_CHUNK {
            std::mem::replace(&mut batch, db.batch())
                .commit()
                .map_err(|e| failed("trim", e))?;
        }
    }
    batch.commit().map_err(|e| failed("trim", e))?;
    Ok(deleted)
}
