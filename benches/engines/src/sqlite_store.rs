//! SQLite (rusqlite, bundled): WAL mode, `synchronous=FULL`, clustered
//! `WITHOUT ROWID` tables, one `BEGIN IMMEDIATE` transaction per append.

use crate::model::{Head, HeadUpdate, Msg, Span};
use crate::store::{CACHE_BYTES, Store};
use anyhow::{Context, Result};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::path::Path;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    room TEXT NOT NULL,
    off INTEGER NOT NULL,
    publisher BLOB NOT NULL,
    ts INTEGER NOT NULL,
    content_type TEXT,
    payload BLOB NOT NULL,
    PRIMARY KEY (room, off)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS heads (
    room TEXT PRIMARY KEY,
    epoch INTEGER NOT NULL,
    last_off INTEGER NOT NULL
) WITHOUT ROWID;
";

pub struct SqliteStore {
    conn: Connection,
}

impl SqliteStore {
    pub fn open(dir: &Path) -> Result<Self> {
        let conn = Connection::open(dir.join("herald.sqlite"))?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        anyhow::ensure!(mode.eq_ignore_ascii_case("wal"), "journal_mode {mode}");
        conn.execute_batch(&format!(
            "PRAGMA synchronous=FULL; PRAGMA cache_size=-{};",
            CACHE_BYTES / 1024
        ))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self { conn })
    }
}

fn i64_of(v: u64) -> Result<i64> {
    i64::try_from(v).context("u64 out of SQLite's range")
}

impl Store for SqliteStore {
    fn append(&mut self, msgs: &[Msg], heads: &[HeadUpdate]) -> Result<()> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO messages (room, off, publisher, ts, content_type, payload) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for m in msgs {
                ins.execute(params![
                    m.room,
                    i64_of(m.offset)?,
                    &m.publisher[..],
                    i64_of(m.ts_ms)?,
                    m.content_type,
                    m.payload
                ])?;
            }
            let mut up = tx.prepare_cached(
                "INSERT INTO heads (room, epoch, last_off) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (room) DO UPDATE SET epoch = excluded.epoch, last_off = excluded.last_off",
            )?;
            for h in heads {
                up.execute(params![h.room, i64_of(h.head.epoch)?, i64_of(h.head.last)?])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn read_last(&mut self, room: &str, n: usize, out: &mut Vec<Msg>) -> Result<()> {
        out.clear();
        let mut st = self.conn.prepare_cached(
            "SELECT off, publisher, ts, content_type, payload FROM messages \
             WHERE room = ?1 ORDER BY off DESC LIMIT ?2",
        )?;
        let mut rows = st.query(params![room, i64::try_from(n)?])?;
        while let Some(r) = rows.next()? {
            let publisher: Vec<u8> = r.get(1)?;
            out.push(Msg {
                room: room.to_owned(),
                offset: u64::try_from(r.get::<_, i64>(0)?)?,
                publisher: publisher.as_slice().try_into().context("publisher length")?,
                ts_ms: u64::try_from(r.get::<_, i64>(2)?)?,
                content_type: r.get(3)?,
                payload: r.get(4)?,
            });
        }
        Ok(())
    }

    fn head(&mut self, room: &str) -> Result<Option<Head>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT epoch, last_off FROM heads WHERE room = ?1")?;
        let h = st
            .query_row(params![room], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
            .optional()?;
        h.map(|(epoch, last)| {
            Ok(Head {
                epoch: u64::try_from(epoch)?,
                last: u64::try_from(last)?,
            })
        })
        .transpose()
    }

    fn span(&mut self, room: &str) -> Result<Span> {
        let mut st = self
            .conn
            .prepare_cached("SELECT count(*), min(off), max(off) FROM messages WHERE room = ?1")?;
        let (count, first, last) = st.query_row(params![room], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, Option<i64>>(2)?,
            ))
        })?;
        Ok(Span {
            count: u64::try_from(count)?,
            first: first.map(u64::try_from).transpose()?,
            last: last.map(u64::try_from).transpose()?,
        })
    }

    fn compact(&mut self) -> Result<String> {
        self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        self.conn.execute_batch("VACUUM")?;
        Ok("wal_checkpoint(TRUNCATE) + VACUUM".to_owned())
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.conn.close().map_err(|(_, e)| e)?;
        Ok(())
    }
}
