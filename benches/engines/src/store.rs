//! The engine abstraction: one durable commit per `append`.

use crate::model::{Head, HeadUpdate, Msg, Span};
use anyhow::{Result, bail};
use std::path::Path;

/// Block/page cache given to every engine, so that reads compare like with like.
pub const CACHE_BYTES: u64 = 64 * 1024 * 1024;

pub trait Store {
    /// Writes the messages and the head records in one atomic batch and makes it
    /// durable (fsync/fdatasync) before returning.
    fn append(&mut self, msgs: &[Msg], heads: &[HeadUpdate]) -> Result<()>;
    /// The last `n` messages of `room`, newest first.
    fn read_last(&mut self, room: &str, n: usize, out: &mut Vec<Msg>) -> Result<()>;
    fn head(&mut self, room: &str) -> Result<Option<Head>>;
    /// Counts a room's messages (full scan of the room; verification only).
    fn span(&mut self, room: &str) -> Result<Span>;
    /// The engine's most thorough compaction; returns what it did.
    fn compact(&mut self) -> Result<String>;
    fn close(self: Box<Self>) -> Result<()>;
}

/// Engines compiled into this binary.
pub fn available() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(feature = "fjall") {
        v.push("fjall");
        v.push("fjall-m16");
    }
    if cfg!(feature = "redb") {
        v.push("redb");
        v.push("redb-qr");
    }
    if cfg!(feature = "sqlite") {
        v.push("sqlite");
    }
    v
}

/// Opens (creating if needed) the engine's database inside `dir`.
///
/// `fjall-m16` is fjall with a 16 MiB memtable for messages (default 64 MiB).
/// `redb-qr` is redb with `set_quick_repair(true)` on every write transaction
/// (allocator state saved per commit, 2-phase commit; near-instant crash recovery).
pub fn open(engine: &str, dir: &Path) -> Result<Box<dyn Store>> {
    std::fs::create_dir_all(dir)?;
    match engine {
        #[cfg(feature = "fjall")]
        "fjall" => Ok(Box::new(crate::fjall_store::FjallStore::open(dir, None)?)),
        #[cfg(feature = "fjall")]
        "fjall-m16" => Ok(Box::new(crate::fjall_store::FjallStore::open(
            dir,
            Some(16 * 1024 * 1024),
        )?)),
        #[cfg(feature = "redb")]
        "redb" => Ok(Box::new(crate::redb_store::RedbStore::open(dir, false)?)),
        #[cfg(feature = "redb")]
        "redb-qr" => Ok(Box::new(crate::redb_store::RedbStore::open(dir, true)?)),
        #[cfg(feature = "sqlite")]
        "sqlite" => Ok(Box::new(crate::sqlite_store::SqliteStore::open(dir)?)),
        other => bail!("engine {other:?} is not compiled in (available: {:?})", available()),
    }
}
