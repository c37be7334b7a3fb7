//! redb 5 (copy-on-write B+tree): tables `messages` and `heads`, one write
//! transaction per append with the default `Durability::Immediate`.

use crate::model::{Head, HeadUpdate, Msg, Span, kv};
use crate::store::{CACHE_BYTES, Store};
use anyhow::Result;
use redb::{Builder, CompactionMode, Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;

const MESSAGES: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("messages");
const HEADS: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("heads");

pub struct RedbStore {
    db: Database,
    quick_repair: bool,
}

impl RedbStore {
    pub fn open(dir: &Path, quick_repair: bool) -> Result<Self> {
        let db = Builder::new()
            .set_cache_size(CACHE_BYTES as usize)
            .create(dir.join("herald.redb"))?;
        let mut tx = db.begin_write()?;
        tx.set_quick_repair(quick_repair);
        tx.open_table(MESSAGES)?;
        tx.open_table(HEADS)?;
        tx.commit()?;
        Ok(Self { db, quick_repair })
    }
}

impl Store for RedbStore {
    fn append(&mut self, msgs: &[Msg], heads: &[HeadUpdate]) -> Result<()> {
        let mut tx = self.db.begin_write()?;
        tx.set_quick_repair(self.quick_repair);
        {
            let mut t = tx.open_table(MESSAGES)?;
            for m in msgs {
                let k = kv::msg_key(&m.room, m.offset);
                let v = kv::msg_value(m);
                t.insert(k.as_slice(), v.as_slice())?;
            }
            let mut t = tx.open_table(HEADS)?;
            for h in heads {
                let v = kv::head_value(&h.head);
                t.insert(h.room.as_bytes(), v.as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn read_last(&mut self, room: &str, n: usize, out: &mut Vec<Msg>) -> Result<()> {
        out.clear();
        let (lo, hi) = kv::room_bounds(room);
        let tx = self.db.begin_read()?;
        let t = tx.open_table(MESSAGES)?;
        for e in t.range(lo.as_slice()..=hi.as_slice())?.rev().take(n) {
            let (k, v) = e?;
            out.push(kv::decode(room, k.value(), v.value())?);
        }
        Ok(())
    }

    fn head(&mut self, room: &str) -> Result<Option<Head>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(HEADS)?;
        t.get(room.as_bytes())?.map(|v| kv::decode_head(v.value())).transpose()
    }

    fn span(&mut self, room: &str) -> Result<Span> {
        let (lo, hi) = kv::room_bounds(room);
        let tx = self.db.begin_read()?;
        let t = tx.open_table(MESSAGES)?;
        let mut span = Span::default();
        for e in t.range(lo.as_slice()..=hi.as_slice())? {
            let (k, _) = e?;
            span.add(kv::key_offset(k.value())?);
        }
        Ok(span)
    }

    fn compact(&mut self) -> Result<String> {
        let mut rounds = 0;
        while rounds < 50 && self.db.compact(CompactionMode::Maximum)? {
            rounds += 1;
        }
        Ok(format!("Database::compact(CompactionMode::Maximum) x{rounds}"))
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.db.close()?;
        Ok(())
    }
}
