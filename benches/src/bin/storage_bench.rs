//! `storage-bench`: Herald's embedded store (`herald_storage::embedded`, the
//! key layout the gateway writes) measured raw, beside the disk's own fsync
//! latency, in one run so the figures can be read as ratios.
//!
//! - `engine --dir D`: one fsync's latency (4 KiB write + fdatasync on a
//!   plain file in D); appends/s with one sync per batch at batch sizes 1,
//!   64 and 1,024 (64-byte random payloads over 1,000 rooms); read-last-50 latency;
//!   disk bytes per message after the load. JSON on stdout.
//! - `fill --dir D --rooms R --messages N`: appends N messages round robin
//!   over R rooms in batches of 1,024 with a sync each, printing the
//!   acknowledged count after every batch (kill it with -9 to leave a store
//!   mid-write behind).
//! - `open --dir D`: time to open the store and read one room's head and
//!   its last 50 messages (the cold path of a node's first publish after a
//!   restart).

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use herald_protocol::owner::{ReadRange, Stored};
use herald_storage::embedded::{self, EmbeddedOptions};
use herald_storage::{LogEntry, Storage};
use serde_json::json;

#[derive(Parser, Debug)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// fsync latency, appends/s at batch 1/64/1,024, read-last-50, bytes/message.
    Engine {
        #[arg(long)]
        dir: PathBuf,
        /// Seconds per batch size.
        #[arg(long, default_value_t = 4)]
        seconds: u64,
    },
    /// Load a store (kill -9 it to leave one mid-write).
    Fill {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 100_000)]
        rooms: u64,
        #[arg(long, default_value_t = 10_000_000)]
        messages: u64,
        #[arg(long, default_value_t = 64)]
        payload: usize,
    },
    /// Time to open a store and read one room.
    Open {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "chat:bench-0")]
        room: String,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Engine { dir, seconds } => engine(&dir, Duration::from_secs(seconds)),
        Command::Fill {
            dir,
            rooms,
            messages,
            payload,
        } => fill(&dir, rooms, messages, payload),
        Command::Open { dir, room } => open(&dir, &room),
    }
}

fn room_name(i: u64) -> Arc<str> {
    Arc::from(format!("chat:bench-{i}"))
}

fn entry(room: Arc<str>, offset: u64, payload: &Bytes) -> LogEntry {
    LogEntry {
        room,
        epoch: 1,
        message: Stored {
            offset,
            publisher: Arc::from("user-123"),
            timestamp_ms: 1_700_000_000_000 + offset,
            payload: payload.clone(),
            content_type: None,
        },
    }
}

/// Payloads of `len` pseudo-random bytes, a few thousand distinct ones
/// reused round robin: compression gains on them what it would on real
/// (already compact or encrypted) application payloads, next to nothing.
struct Payloads {
    pool: Vec<Bytes>,
    next: usize,
}

impl Payloads {
    fn new(len: usize) -> Self {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let pool = (0..4_096)
            .map(|_| {
                let v: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                Bytes::from(v)
            })
            .collect();
        Self { pool, next: 0 }
    }

    fn next(&mut self) -> &Bytes {
        self.next = (self.next + 1) % self.pool.len();
        &self.pool[self.next]
    }
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

fn pct(h: &Histogram<u64>) -> serde_json::Value {
    json!({"p50": h.value_at_quantile(0.5), "p99": h.value_at_quantile(0.99), "max": h.max(), "samples": h.len()})
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                // Blocks actually used, not the apparent size.
                Ok(m) => total += std::os::unix::fs::MetadataExt::blocks(&m) * 512,
                Err(_) => {}
            }
        }
    }
    total
}

fn engine(dir: &Path, per_batch: Duration) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    // The disk's floor: one 4 KiB write + fdatasync.
    let mut fsync = hist();
    let path = dir.join("fsync-probe");
    let mut f = OpenOptions::new().create(true).write(true).truncate(true).open(&path)?;
    let block = [7u8; 4096];
    for _ in 0..2_000 {
        let t = Instant::now();
        f.write_all(&block)?;
        f.sync_data()?;
        fsync.record(t.elapsed().as_micros().max(1) as u64)?;
    }
    drop(f);
    std::fs::remove_file(&path)?;

    let store_dir = dir.join("store");
    let _ = std::fs::remove_dir_all(&store_dir);
    let storage = embedded::open(&store_dir, EmbeddedOptions::default()).context("open store")?;
    let mut payloads = Payloads::new(64);
    let rooms: Vec<Arc<str>> = (0..1_000).map(room_name).collect();
    let mut offsets = vec![0u64; rooms.len()];
    let mut next_room = 0usize;
    let mut batches = Vec::new();
    let mut total_messages = 0u64;
    for batch in [1usize, 64, 1_024] {
        let mut commit = hist();
        let mut sync = hist();
        let started = Instant::now();
        let mut n = 0u64;
        while started.elapsed() < per_batch {
            let mut entries = Vec::with_capacity(batch);
            for _ in 0..batch {
                offsets[next_room] += 1;
                entries.push(entry(rooms[next_room].clone(), offsets[next_room], payloads.next()));
                next_room = (next_room + 1) % rooms.len();
            }
            let t = Instant::now();
            storage.log.append(&entries)?;
            let s = Instant::now();
            storage.log.sync()?;
            commit.record(t.elapsed().as_micros().max(1) as u64)?;
            sync.record(s.elapsed().as_micros().max(1) as u64)?;
            n += batch as u64;
        }
        let secs = started.elapsed().as_secs_f64();
        total_messages += n;
        batches.push(json!({
            "batch": batch,
            "messages": n,
            "messages_per_sec": (n as f64 / secs).round(),
            "commit_us": pct(&commit),
            "sync_part_us": pct(&sync),
        }));
    }
    // Top up to 1M messages for reads and size.
    while total_messages < 1_000_000 {
        let mut entries = Vec::with_capacity(4_096);
        for _ in 0..4_096 {
            offsets[next_room] += 1;
            entries.push(entry(rooms[next_room].clone(), offsets[next_room], payloads.next()));
            next_room = (next_room + 1) % rooms.len();
        }
        storage.log.append(&entries)?;
        total_messages += entries.len() as u64;
    }
    storage.log.sync()?;
    let mut read50 = hist();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..10_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let room = &rooms[(seed % rooms.len() as u64) as usize];
        let range = ReadRange {
            after: 0,
            before: 0,
            limit: 50,
            newest: true,
        };
        let t = Instant::now();
        let page = storage.log.read(room, 1, range)?;
        read50.record(t.elapsed().as_micros().max(1) as u64)?;
        anyhow::ensure!(page.messages.len() == 50, "a full page");
    }
    drop(storage);
    let bytes = dir_bytes(&store_dir);
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "fsync_4k_us": pct(&fsync),
            "appends": batches,
            "read_last_50_us": pct(&read50),
            "stored_messages": total_messages,
            "disk_bytes": bytes,
            "disk_bytes_per_64b_message": (bytes as f64 / total_messages as f64 * 10.0).round() / 10.0,
        }))?
    );
    Ok(())
}

fn fill(dir: &Path, rooms: u64, messages: u64, payload: usize) -> Result<()> {
    let storage: Storage = embedded::open(dir, EmbeddedOptions::default()).context("open store")?;
    let mut payloads = Payloads::new(payload);
    let names: Vec<Arc<str>> = (0..rooms).map(room_name).collect();
    let mut written = 0u64;
    let started = Instant::now();
    let mut out = std::io::stdout().lock();
    while written < messages {
        let mut entries = Vec::with_capacity(1_024);
        for _ in 0..1_024.min(messages - written) {
            let room = written % rooms;
            let offset = written / rooms + 1;
            entries.push(entry(names[room as usize].clone(), offset, payloads.next()));
            written += 1;
        }
        storage.log.append(&entries)?;
        storage.log.sync()?;
        writeln!(out, "acked {written}")?;
    }
    out.flush()?;
    eprintln!(
        "filled {written} messages in {rooms} rooms in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn open(dir: &Path, room: &str) -> Result<()> {
    let t = Instant::now();
    let storage = embedded::open(dir, EmbeddedOptions::default()).context("open store")?;
    let opened = t.elapsed();
    let head = storage.log.head(room)?.context("the room has a head")?;
    let page = storage.log.read(
        room,
        head.epoch,
        ReadRange {
            after: 0,
            before: 0,
            limit: 50,
            newest: true,
        },
    )?;
    let total = t.elapsed();
    println!(
        "{}",
        json!({
            "open_ms": opened.as_secs_f64() * 1e3,
            "open_and_first_read_ms": total.as_secs_f64() * 1e3,
            "head": {"epoch": head.epoch, "last_offset": head.last_offset},
            "last_50": page.messages.len(),
            "disk_bytes": dir_bytes(dir),
        })
    );
    Ok(())
}
