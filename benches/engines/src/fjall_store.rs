//! fjall 3 (LSM): keyspaces `messages` and `heads`, one `WriteBatch` per append,
//! committed with `PersistMode::SyncData` (journal write + fdatasync).

use crate::model::{Head, HeadUpdate, Msg, Span, kv};
use crate::store::{CACHE_BYTES, Store};
use anyhow::Result;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use std::path::Path;

pub struct FjallStore {
    db: Database,
    msgs: Keyspace,
    heads: Keyspace,
}

impl FjallStore {
    /// `memtable`: the messages keyspace's memtable size (fjall's default: 64 MiB).
    pub fn open(dir: &Path, memtable: Option<u64>) -> Result<Self> {
        let db = Database::builder(dir).cache_size(CACHE_BYTES).open()?;
        let msgs = db.keyspace("messages", || {
            let o = KeyspaceCreateOptions::default();
            match memtable {
                Some(bytes) => o.max_memtable_size(bytes),
                None => o,
            }
        })?;
        let heads = db.keyspace("heads", KeyspaceCreateOptions::default)?;
        Ok(Self { db, msgs, heads })
    }
}

impl Store for FjallStore {
    fn append(&mut self, msgs: &[Msg], heads: &[HeadUpdate]) -> Result<()> {
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncData));
        for m in msgs {
            batch.insert(&self.msgs, kv::msg_key(&m.room, m.offset), kv::msg_value(m));
        }
        for h in heads {
            batch.insert(&self.heads, h.room.as_bytes(), kv::head_value(&h.head));
        }
        batch.commit()?;
        Ok(())
    }

    fn read_last(&mut self, room: &str, n: usize, out: &mut Vec<Msg>) -> Result<()> {
        out.clear();
        let (lo, hi) = kv::room_bounds(room);
        for guard in self.msgs.range(lo..=hi).rev().take(n) {
            let (k, v) = guard.into_inner()?;
            out.push(kv::decode(room, &k, &v)?);
        }
        Ok(())
    }

    fn head(&mut self, room: &str) -> Result<Option<Head>> {
        self.heads
            .get(room.as_bytes())?
            .map(|v| kv::decode_head(&v))
            .transpose()
    }

    fn span(&mut self, room: &str) -> Result<Span> {
        let (lo, hi) = kv::room_bounds(room);
        let mut span = Span::default();
        for guard in self.msgs.range(lo..=hi) {
            let (k, _) = guard.into_inner()?;
            span.add(kv::key_offset(&k)?);
        }
        Ok(span)
    }

    fn compact(&mut self) -> Result<String> {
        for ks in [&self.msgs, &self.heads] {
            ks.rotate_memtable_and_wait()?;
            ks.major_compact()?;
        }
        self.db.persist(PersistMode::SyncAll)?;
        Ok("memtable flush + Keyspace::major_compact (public, #[doc(hidden)])".to_owned())
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.db.persist(PersistMode::SyncAll)?;
        let Self { db, msgs, heads } = *self;
        drop(msgs);
        drop(heads);
        drop(db); // joins the background workers
        Ok(())
    }
}
