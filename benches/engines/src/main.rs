//! `engines`: measures embedded storage engines for Herald's durable room history.
//!
//! Subcommands (each prints `RESULT<TAB>section<TAB>engine<TAB>key<TAB>value` lines
//! that `report` turns into markdown tables):
//!
//! - `fsync`   — latency of write 4 KiB + fdatasync on a plain file (the disk's floor)
//! - `append`  — append throughput and commit latency at one batch size, fsync per batch
//! - `history` — load N messages, disk bytes after close / after compaction, read-last-50 latency
//! - `crash`   — kill -9 a `writer` child, time reopen + head read, verify committed batches
//! - `writer`  — the child process of `crash` (prints `committed N` after each commit)
//! - `report`  — markdown tables from the collected RESULT lines
//! - `reopen`  — open + close a database, printing its disk usage (for inspection)
//! - `engines` — list of the engines compiled in

// Built without any engine (the compile-time baseline), the engine-side code is unused.
#![cfg_attr(not(any(feature = "fjall", feature = "redb", feature = "sqlite")), allow(dead_code))]

mod model;
mod report;
mod store;

#[cfg(feature = "fjall")]
mod fjall_store;
#[cfg(feature = "redb")]
mod redb_store;
#[cfg(feature = "sqlite")]
mod sqlite_store;

use anyhow::{Context, Result, bail, ensure};
use hdrhistogram::Histogram;
use model::{Generator, HeadUpdate, Msg, expected_count, message, room_name, splitmix64};
use std::collections::HashMap;
use std::fmt::Display;
use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// `--key value` arguments.
#[derive(Debug)]
struct Args(HashMap<String, String>);

impl Args {
    fn parse(args: &[String]) -> Result<Self> {
        let mut map = HashMap::new();
        let mut it = args.iter();
        while let Some(k) = it.next() {
            let key = k
                .strip_prefix("--")
                .with_context(|| format!("expected --key, got {k:?}"))?;
            let v = it.next().with_context(|| format!("--{key} needs a value"))?;
            map.insert(key.to_owned(), v.clone());
        }
        Ok(Self(map))
    }

    fn get<T: FromStr>(&self, key: &str, default: T) -> Result<T>
    where
        T::Err: Display,
    {
        match self.0.get(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e| anyhow::anyhow!("--{key} {v:?}: {e}")),
        }
    }

    fn req(&self, key: &str) -> Result<String> {
        self.0.get(key).cloned().with_context(|| format!("--{key} is required"))
    }
}

fn result(section: &str, engine: &str, key: &str, value: impl Display) {
    println!("RESULT\t{section}\t{engine}\t{key}\t{value}");
}

fn fresh_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(dir)?;
    Ok(())
}

/// (allocated bytes as `du` counts them, apparent bytes) of a directory tree.
fn dir_usage(dir: &Path) -> Result<(u64, u64)> {
    dir_usage_except(dir, None)
}

/// Like [`dir_usage`], without the files whose name ends with `skip`.
fn dir_usage_except(dir: &Path, skip: Option<&str>) -> Result<(u64, u64)> {
    let (mut alloc, mut apparent) = (0, 0);
    for e in fs::read_dir(dir)? {
        let e = e?;
        let md = e.metadata()?;
        if skip.is_some_and(|s| e.file_name().to_string_lossy().ends_with(s)) {
            continue;
        }
        if md.is_dir() {
            let (a, b) = dir_usage_except(&e.path(), skip)?;
            alloc += a;
            apparent += b;
        } else {
            alloc += md.blocks() * 512;
            apparent += md.len();
        }
    }
    Ok((alloc, apparent))
}

fn hist() -> Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 600_000_000_000, 3)?)
}

/// Records a duration in nanoseconds.
fn record(h: &mut Histogram<u64>, d: Duration) -> Result<()> {
    h.record(u64::try_from(d.as_nanos())?.max(1))?;
    Ok(())
}

fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1e3)
}

fn main() -> Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = argv.split_first() else {
        bail!("usage: engines <fsync|append|history|crash|writer|report|engines> [--key value]...");
    };
    let a = Args::parse(rest)?;
    match cmd.as_str() {
        "fsync" => cmd_fsync(&a),
        "append" => cmd_append(&a),
        "history" => cmd_history(&a),
        "crash" => cmd_crash(&a),
        "writer" => cmd_writer(&a),
        "reopen" => {
            // Opens and closes a database, printing its disk usage before and after.
            let dir = PathBuf::from(a.req("dir")?);
            eprintln!("before: {:?}", dir_usage(&dir)?);
            let t = Instant::now();
            store::open(&a.req("engine")?, &dir)?.close()?;
            eprintln!("open+close {:?}, after: {:?}", t.elapsed(), dir_usage(&dir)?);
            Ok(())
        }
        "report" => report::print(Path::new(&a.req("file")?)),
        "engines" => {
            println!("{}", store::available().join(" "));
            Ok(())
        }
        other => bail!("unknown subcommand {other:?}"),
    }
}

/// Write 4 KiB + fdatasync on a plain file: appending (the file grows, like a
/// journal) and overwriting one block in place.
fn cmd_fsync(a: &Args) -> Result<()> {
    let dir = PathBuf::from(a.req("dir")?);
    let samples: usize = a.get("samples", 2000)?;
    let label = a.get("label", "disk".to_owned())?;
    // `probe`: a short check of the disk right before another measurement.
    let section = a.get("section", "fsync".to_owned())?;
    let prefix = a.get("prefix", String::new())?;
    fresh_dir(&dir)?;
    let buf = vec![0xA5u8; 4096];
    let path = dir.join("fsync.bin");
    for mode in ["append", "overwrite"] {
        let mut f = OpenOptions::new().create(true).write(true).truncate(true).open(&path)?;
        if mode == "overwrite" {
            f.write_all_at(&buf, 0)?;
            f.sync_all()?;
        }
        let mut h = hist()?;
        let start = Instant::now();
        for _ in 0..samples {
            let t = Instant::now();
            if mode == "append" {
                f.write_all(&buf)?;
            } else {
                f.write_all_at(&buf, 0)?;
            }
            f.sync_data()?;
            record(&mut h, t.elapsed())?;
            if start.elapsed() > Duration::from_secs(120) {
                break;
            }
        }
        result(
            &section,
            &label,
            &format!("{prefix}{mode}_p50_us"),
            us(h.value_at_quantile(0.5)),
        );
        result(
            &section,
            &label,
            &format!("{prefix}{mode}_p99_us"),
            us(h.value_at_quantile(0.99)),
        );
        result(
            &section,
            &label,
            &format!("{prefix}{mode}_mean_us"),
            format!("{:.1}", h.mean() / 1e3),
        );
        result(&section, &label, &format!("{prefix}{mode}_samples"), h.len());
    }
    fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Append throughput at one batch size, one durable commit per batch.
fn cmd_append(a: &Args) -> Result<()> {
    let engine = a.req("engine")?;
    let dir = PathBuf::from(a.req("dir")?);
    let rooms: u32 = a.get("rooms", 1000)?;
    let batch: usize = a.get("batch", 64)?;
    let max_messages: u64 = a.get("max-messages", 200_000)?;
    let max_secs: f64 = a.get("max-secs", 60.0)?;
    let payload: usize = a.get("payload", 64)?;
    ensure!(batch > 0, "--batch must be > 0");
    fresh_dir(&dir)?;
    let mut store = store::open(&engine, &dir)?;
    let mut g = Generator::new(rooms, payload);
    let (mut msgs, mut heads) = (Vec::new(), Vec::new());
    let mut h = hist()?;
    let mut in_append = Duration::ZERO;
    let mut commits = 0u64;
    let start = Instant::now();
    while g.next_seq < max_messages && start.elapsed().as_secs_f64() < max_secs {
        let n = batch.min(usize::try_from(max_messages - g.next_seq)?);
        g.next_batch(n, &mut msgs, &mut heads);
        let t = Instant::now();
        store.append(&msgs, &heads)?;
        let d = t.elapsed();
        in_append += d;
        record(&mut h, d)?;
        commits += 1;
    }
    let wall = start.elapsed();
    store.close()?;
    // Round r of the run (run.sh interleaves engines over rounds): keys `r{r}_b{batch}_…`.
    let k = format!("r{}_b{batch}", a.get("round", 1u32)?);
    let secs = in_append.as_secs_f64();
    result(
        "append",
        &engine,
        &format!("{k}_msgs_s"),
        format!("{:.0}", g.next_seq as f64 / secs),
    );
    result(
        "append",
        &engine,
        &format!("{k}_commits_s"),
        format!("{:.0}", commits as f64 / secs),
    );
    result("append", &engine, &format!("{k}_p50_us"), us(h.value_at_quantile(0.5)));
    result("append", &engine, &format!("{k}_p99_us"), us(h.value_at_quantile(0.99)));
    result("append", &engine, &format!("{k}_messages"), g.next_seq);
    result("append", &engine, &format!("{k}_commits"), commits);
    result(
        "append",
        &engine,
        &format!("{k}_wall_s"),
        format!("{:.2}", wall.as_secs_f64()),
    );
    fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Loads `messages` over `rooms` (fsync per batch), measures disk usage after a
/// clean close, read-last-N latency of random rooms, and disk usage after the
/// engine's compaction.
fn cmd_history(a: &Args) -> Result<()> {
    let engine = a.req("engine")?;
    let label = a.get("label", engine.clone())?;
    let dir = PathBuf::from(a.req("dir")?);
    let rooms: u32 = a.get("rooms", 1000)?;
    let messages: u64 = a.get("messages", 1_000_000)?;
    let load_batch: usize = a.get("load-batch", 1024)?;
    let reads: usize = a.get("reads", 10_000)?;
    let warmup: usize = a.get("warmup", 1000)?;
    let last: usize = a.get("last", 50)?;
    let payload: usize = a.get("payload", 64)?;
    let max_secs: f64 = a.get("max-secs", 300.0)?;
    fresh_dir(&dir)?;

    // Load.
    let mut store = store::open(&engine, &dir)?;
    let mut g = Generator::new(rooms, payload);
    let (mut msgs, mut heads) = (Vec::new(), Vec::new());
    let mut raw_bytes = 0u64;
    let start = Instant::now();
    while g.next_seq < messages {
        ensure!(start.elapsed().as_secs_f64() < max_secs, "load exceeded {max_secs} s");
        let n = load_batch.min(usize::try_from(messages - g.next_seq)?);
        g.next_batch(n, &mut msgs, &mut heads);
        raw_bytes += msgs
            .iter()
            .map(|m| (model::kv::msg_key(&m.room, m.offset).len() + model::kv::msg_value(m).len()) as u64)
            .sum::<u64>();
        store.append(&msgs, &heads)?;
    }
    let load = start.elapsed();
    store.close()?;
    let (alloc, apparent) = dir_usage(&dir)?;
    let s = "history";
    result(s, &label, "rooms", rooms);
    result(s, &label, "messages", messages);
    result(
        s,
        &label,
        "load_msgs_s",
        format!("{:.0}", messages as f64 / load.as_secs_f64()),
    );
    result(
        s,
        &label,
        "raw_bytes_per_msg",
        format!("{:.1}", raw_bytes as f64 / messages as f64),
    );
    result(s, &label, "closed_du_bytes", alloc);
    result(s, &label, "closed_apparent_bytes", apparent);
    result(
        s,
        &label,
        "closed_bytes_per_msg",
        format!("{:.1}", alloc as f64 / messages as f64),
    );

    // Reads: reopen, then random rooms.
    let t = Instant::now();
    let mut store = store::open(&engine, &dir)?;
    result(
        s,
        &label,
        "clean_open_ms",
        format!("{:.1}", t.elapsed().as_secs_f64() * 1e3),
    );
    let names: Vec<String> = (0..rooms).map(room_name).collect();
    let mut h = hist()?;
    let mut out = Vec::new();
    let mut rng = 42u64;
    let mut returned = 0u64;
    let start = Instant::now();
    for i in 0..warmup + reads {
        if start.elapsed().as_secs_f64() > max_secs {
            break;
        }
        rng = splitmix64(rng);
        let room = (rng % u64::from(rooms)) as u32;
        let t = Instant::now();
        store.read_last(&names[room as usize], last, &mut out)?;
        let d = t.elapsed();
        let expect = expected_count(messages, rooms, room);
        ensure!(
            out.len() as u64 == expect.min(last as u64),
            "room {room}: {} messages read, expected {}",
            out.len(),
            expect.min(last as u64)
        );
        ensure!(
            out.first().map(|m| m.offset) == expect.checked_sub(1),
            "room {room}: newest offset wrong"
        );
        if i >= warmup {
            record(&mut h, d)?;
            returned += out.len() as u64;
        }
    }
    result(s, &label, "reads", h.len());
    result(
        s,
        &label,
        "msgs_per_read",
        format!("{:.1}", returned as f64 / h.len().max(1) as f64),
    );
    result(s, &label, "read_p50_us", us(h.value_at_quantile(0.5)));
    result(s, &label, "read_p99_us", us(h.value_at_quantile(0.99)));
    result(s, &label, "read_max_us", us(h.max()));

    // Compaction.
    let t = Instant::now();
    let what = store.compact()?;
    store.close()?;
    let took = t.elapsed();
    let (alloc, apparent) = dir_usage(&dir)?;
    result(s, &label, "compaction", what);
    result(s, &label, "compaction_s", format!("{:.2}", took.as_secs_f64()));
    result(s, &label, "compacted_du_bytes", alloc);
    result(s, &label, "compacted_apparent_bytes", apparent);
    result(
        s,
        &label,
        "compacted_bytes_per_msg",
        format!("{:.1}", alloc as f64 / messages as f64),
    );
    let (tables, _) = dir_usage_except(&dir, Some(".jnl"))?;
    if tables != alloc {
        // fjall: without its journal (kept until it rotates at 64 MB).
        result(
            s,
            &label,
            "compacted_nojournal_bytes_per_msg",
            format!("{:.1}", tables as f64 / messages as f64),
        );
    }
    if !a.get("keep", false)? {
        fs::remove_dir_all(&dir)?;
    }
    Ok(())
}

/// Size of the batch the writer commits when `seq` messages are committed.
fn batch_at(seq: u64, fill_until: u64, fill_batch: u64, batch: u64, max_messages: u64) -> u64 {
    let b = if seq < fill_until { fill_batch } else { batch };
    b.min(max_messages.saturating_sub(seq))
}

/// Child of `crash`: writes the workload with a durable commit per batch and
/// prints `committed N` after each commit, until killed (or bounded out).
fn cmd_writer(a: &Args) -> Result<()> {
    let engine = a.req("engine")?;
    let dir = PathBuf::from(a.req("dir")?);
    let rooms: u32 = a.get("rooms", 1000)?;
    let payload: usize = a.get("payload", 64)?;
    let fill_batch: u64 = a.get("fill-batch", 64)?;
    let fill_until: u64 = a.get("fill-until", 0)?;
    let batch: u64 = a.get("batch", 64)?;
    let max_messages: u64 = a.get("max-messages", 2_000_000)?;
    let max_secs: f64 = a.get("max-secs", 300.0)?;
    let mut store = store::open(&engine, &dir)?;
    let mut g = Generator::new(rooms, payload);
    let (mut msgs, mut heads): (Vec<Msg>, Vec<HeadUpdate>) = (Vec::new(), Vec::new());
    let stdout = std::io::stdout();
    let start = Instant::now();
    loop {
        let n = batch_at(g.next_seq, fill_until, fill_batch, batch, max_messages);
        if n == 0 || start.elapsed().as_secs_f64() > max_secs {
            break;
        }
        g.next_batch(usize::try_from(n)?, &mut msgs, &mut heads);
        store.append(&msgs, &heads)?;
        let mut o = stdout.lock();
        writeln!(o, "committed {}", g.next_seq)?;
        o.flush()?;
    }
    store.close()?;
    Ok(())
}

/// Kill -9 recovery: `trials` times, a fresh `writer` child fills the database
/// and is SIGKILLed once it reported `messages` committed; then the time to
/// reopen and read one room's head is measured, and every reported commit is
/// checked to be present (and the in-flight batch all-or-nothing).
fn cmd_crash(a: &Args) -> Result<()> {
    let engine = a.req("engine")?;
    let label = a.get("label", engine.clone())?;
    let dir = PathBuf::from(a.req("dir")?);
    let rooms: u32 = a.get("rooms", 1000)?;
    let messages: u64 = a.get("messages", 1_000_000)?;
    let fill_batch: u64 = a.get("fill-batch", 1024)?;
    let tail: u64 = a.get("tail", 64_000)?;
    let batch: u64 = a.get("batch", 64)?;
    let trials: usize = a.get("trials", 3)?;
    let payload: usize = a.get("payload", 64)?;
    let max_secs: f64 = a.get("max-secs", 300.0)?;
    let fill_until = messages.saturating_sub(tail);
    let max_messages = messages + 100 * batch.max(fill_batch);
    let exe = std::env::current_exe()?;
    let names: Vec<String> = (0..rooms).map(room_name).collect();
    let probe = &names[(rooms / 2) as usize];
    let mut times = Vec::new();
    let mut clean_times = Vec::new();
    let s = "recovery";
    for trial in 0..trials {
        fresh_dir(&dir)?;
        let fill_start = Instant::now();
        let mut child = Command::new(&exe)
            .args(["writer", "--engine", &engine, "--dir"])
            .arg(&dir)
            .args(["--rooms", &rooms.to_string(), "--payload", &payload.to_string()])
            .args(["--fill-batch", &fill_batch.to_string()])
            .args(["--fill-until", &fill_until.to_string()])
            .args(["--batch", &batch.to_string()])
            .args(["--max-messages", &max_messages.to_string()])
            .args(["--max-secs", &max_secs.to_string()])
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().context("child stdout")?;
        let mut committed = 0u64;
        let mut killed = false;
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            if let Some(n) = line.strip_prefix("committed ") {
                committed = n.trim().parse()?;
            }
            if !killed && committed >= messages {
                child.kill()?; // SIGKILL
                killed = true;
            }
        }
        let status = child.wait()?;
        let fill = fill_start.elapsed();
        ensure!(killed, "writer ended by itself ({status}) at {committed} messages");
        let (alloc, _) = dir_usage(&dir)?;

        // Timed: reopen after the crash and read one room's head.
        let t = Instant::now();
        let mut store = store::open(&engine, &dir)?;
        let head = store.head(probe)?;
        let took = t.elapsed();
        ensure!(head.is_some(), "no head for {probe} after reopen");
        times.push(took);

        // Untimed: verify.
        let inflight = batch_at(committed, fill_until, fill_batch, batch, max_messages);
        let present = verify(store.as_mut(), rooms, payload, committed, inflight, &names)?;
        store.close()?;
        let t = Instant::now();
        let mut store = store::open(&engine, &dir)?;
        store.head(probe)?;
        clean_times.push(t.elapsed());
        store.close()?;
        eprintln!(
            "{label} trial {trial}: committed {committed}, present {present}, \
             reopen {:.1} ms, fill {:.1} s, dir {:.1} MB at kill",
            took.as_secs_f64() * 1e3,
            fill.as_secs_f64(),
            alloc as f64 / 1e6
        );
        result(
            s,
            &label,
            &format!("trial{trial}_ms"),
            format!("{:.1}", took.as_secs_f64() * 1e3),
        );
        result(s, &label, &format!("trial{trial}_committed"), committed);
        result(s, &label, &format!("trial{trial}_present"), present);
        result(
            s,
            &label,
            &format!("trial{trial}_fill_s"),
            format!("{:.1}", fill.as_secs_f64()),
        );
        result(s, &label, "dir_mb_at_kill", format!("{:.0}", alloc as f64 / 1e6));
    }
    times.sort();
    clean_times.sort();
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e3);
    result(s, &label, "rooms", rooms);
    result(s, &label, "messages", messages);
    result(
        s,
        &label,
        "fill",
        format!("batch {fill_batch} then {batch} for the last {tail}"),
    );
    result(s, &label, "median_ms", ms(times[times.len() / 2]));
    result(s, &label, "min_ms", ms(times[0]));
    result(s, &label, "max_ms", ms(times[times.len() - 1]));
    result(s, &label, "clean_median_ms", ms(clean_times[clean_times.len() / 2]));
    result(s, &label, "verified", format!("{trials}/{trials}"));
    fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Checks that every one of the first `committed` messages is present and intact,
/// heads match, and at most the one in-flight batch (all of it) was added.
fn verify(
    store: &mut dyn store::Store,
    rooms: u32,
    payload: usize,
    committed: u64,
    inflight: u64,
    names: &[String],
) -> Result<u64> {
    let mut total = 0u64;
    let mut out = Vec::new();
    for room in 0..rooms {
        let name = &names[room as usize];
        let span = store.span(name)?;
        let expect = expected_count(committed, rooms, room);
        ensure!(
            span.count >= expect,
            "{name}: {} messages, {expect} committed",
            span.count
        );
        if span.count > 0 {
            ensure!(
                span.first == Some(0) && span.last == Some(span.count - 1),
                "{name}: offsets not dense: {span:?}"
            );
        }
        let head = store.head(name)?;
        ensure!(
            head.map(|h| (h.epoch, h.last)) == span.last.map(|l| (model::EPOCH, l)),
            "{name}: head {head:?} vs {span:?}"
        );
        store.read_last(name, 50, &mut out)?;
        for m in &out {
            let seq = m.offset * u64::from(rooms) + u64::from(room);
            ensure!(
                *m == message(seq, rooms, payload, names),
                "{name}: message {} corrupt",
                m.offset
            );
        }
        total += span.count;
    }
    ensure!(
        total == committed || total == committed + inflight,
        "{total} messages present; {committed} committed, in-flight batch {inflight}: not atomic"
    );
    Ok(total)
}
