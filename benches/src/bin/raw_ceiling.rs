//! `raw-ceiling`: the kernel's fan-out ceiling on this machine, so that every
//! Herald benchmark can state its fan-out as a fraction of what plain TCP on
//! loopback allows. No protocol, no WebSocket.
//!
//! The program opens `--connections N` TCP connections to its own listener on
//! 127.0.0.1 (TCP_NODELAY on both sides). The accepted ("server") sockets are
//! driven by ONE writer thread (the calling thread) on epoll via mio, playing
//! the gateway: a message is one non-blocking `write` of `--payload` bytes to
//! every connection (`--batch K`: K messages coalesced into one write of
//! K × payload bytes). If a write would block, the rest is owed to that
//! connection and written on writable readiness (`would_block_writes`,
//! `flush_writes`); while bytes are owed, later messages for that connection
//! are appended to its debt (as a gateway's outbound queue would). The
//! connecting ("client") sockets are drained by a separate receiver thread
//! (mio/epoll, 64 KiB read buffer) that counts every byte.
//!
//! Modes:
//! - `max` (default): messages back to back for `--duration` seconds;
//!   `duration_s` is measured from the first write to the last byte received
//!   (the writer finishes the message it is on, then everything is drained),
//!   `deliveries` = messages × connections, all of them fully received.
//! - `sweep-latency`: one message (one write per connection) at a time, then
//!   wait until the receiver has every byte, `--gap-ms` pause, repeat
//!   `--samples` times (after 3 unrecorded warm-up samples). `latency_us` is
//!   first write → last byte received; `write_span_us` is first write → last
//!   write returned. `duration_s` is the sum of the sample latencies, so
//!   `deliveries_per_sec` is the rate while the kernel is busy.
//! - `rate`: open loop, as a gateway sees small rooms. The connections are
//!   split into rooms of `--room-size`; `--rate` messages per second, each
//!   one write to every connection of the next room (round robin), for
//!   `--duration` seconds. Message `k` is due at `k / rate` after the start
//!   and is written when due, never earlier; `latency_us` is its scheduled
//!   time → its last byte read, per delivery (so the writer's own lateness,
//!   `send_lag_us`, is inside it, as in `herald-loadgen`). The receiver
//!   knows which message a connection's `j`-th record is from the schedule,
//!   so the bytes carry no timestamps and a write split by a full socket
//!   buffer is still timed by its last byte. This is the kernel's floor for
//!   a gateway's publish → deliver latency in small rooms at that rate.
//!
//! CPU time comes from `/proc/thread-self/stat` (writer),
//! `/proc/self/task/<tid>/stat` (receiver) and `/proc/self/stat` (process):
//! utime/stime in clock ticks (USER_HZ = 100, i.e. 10 ms resolution), all
//! sampled by the writer at the start and the end of the measured window.
//!
//! `--json FILE` writes a JSON object with the keys `mode, connections,
//! payload, batch, duration_s, deliveries, deliveries_per_sec,
//! writer_cpu_us_per_delivery {user, sys}, process_cpu_us_per_delivery,
//! would_block_writes, machine {cores, kernel, cpu_model}` (and
//! `latency_us {p50, p99, p999, max}` in sweep-latency and rate mode;
//! `rate`, `room_size`, `send_lag_us` in rate mode) plus a few more
//! (`sleeps_per_message {writer, receiver}`: voluntary context switches
//! per message, from /proc/.../status;
//! `received_bytes`, `writes`, `writes_per_sec`, `flush_writes`,
//! `receiver_cpu_us_per_delivery`, `receiver_reads` (whole run, warm-up
//! included), ...). The receiver keeps up when `receiver_reads` is about
//! `writes` (it reads each write on its own) rather than far fewer.

#![forbid(unsafe_code)]

use std::fs;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream as StdTcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde_json::{Value, json};

/// Upper bound on connections (two sockets each, in one process).
const MAX_CONNECTIONS: usize = 9000;
const MAX_DURATION_S: f64 = 120.0;
const MAX_SAMPLES: usize = 10_000;
const MAX_PAYLOAD: usize = 64 * 1024;
/// Upper bound on one write (payload × batch).
const MAX_WRITE: usize = 1 << 20;
const MAX_GAP_MS: u64 = 1000;
/// Receiver read buffer.
const RECV_BUF: usize = 64 * 1024;
/// File descriptors kept free for the listener, the two epoll instances,
/// stdio, /proc reads and the JSON file.
const FD_RESERVE: u64 = 32;
/// Clock ticks per second of /proc/*/stat utime/stime (USER_HZ; 100 on Linux).
const USER_HZ: f64 = 100.0;
/// Bytes owed across all connections above which the writer stops starting
/// new messages until the debt is paid.
const OWED_LIMIT: u64 = 64 << 20;
const WARMUP_SAMPLES: usize = 3;
/// Connections opened before the listener accepts them (below the backlog).
const CONNECT_CHUNK: usize = 64;
/// The receiver must have every byte this long after the writer is done.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_RATE: f64 = 1_000_000.0;
/// Rate mode: time between setting the schedule's start and its first
/// message, so the receiver knows the start before any byte arrives.
const RATE_LEAD_IN: Duration = Duration::from_millis(20);
/// Rate mode: longest sleep while waiting for the next message, so bytes
/// owed to full sockets are still written in time.
const RATE_NAP: Duration = Duration::from_micros(500);
/// Largest latency the histograms record (µs); larger values are clamped.
const MAX_LATENCY_US: u64 = 120_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Messages back to back for --duration; sustained deliveries/s.
    Max,
    /// One message to every connection at a time; first write → last byte.
    SweepLatency,
    /// Open loop: --rate messages/s, each to one room of --room-size
    /// connections; scheduled time → last byte, per delivery.
    Rate,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Max => "max",
            Mode::SweepLatency => "sweep-latency",
            Mode::Rate => "rate",
        }
    }
}

/// Raw-socket fan-out ceiling: plain TCP on loopback, one epoll writer thread
/// doing one write per connection per message, one epoll receiver thread.
#[derive(Debug, Parser)]
#[command(name = "raw-ceiling")]
struct Args {
    #[arg(long, value_enum, default_value_t = Mode::Max)]
    mode: Mode,
    /// TCP connections (socket pairs in this process), at most 9000.
    #[arg(long, default_value_t = 5000)]
    connections: usize,
    /// Bytes per message.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Messages coalesced into one write per connection.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Seconds of sending in max and rate mode, at most 120.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Recorded samples in sweep-latency mode.
    #[arg(long, default_value_t = 200)]
    samples: usize,
    /// Pause between sweep-latency samples, in milliseconds.
    #[arg(long, default_value_t = 2)]
    gap_ms: u64,
    /// Rate mode: messages per second (each one write to every connection
    /// of one room), at most 1,000,000.
    #[arg(long, default_value_t = 5000.0)]
    rate: f64,
    /// Rate mode: connections per room; --connections must be a multiple.
    #[arg(long, default_value_t = 10)]
    room_size: usize,
    /// Also write the results as a JSON object to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Testing only: the receiver sleeps this long after each epoll batch,
    /// which makes it the bottleneck and exercises the would-block path.
    #[arg(long, default_value_t = 0, hide = true)]
    recv_pause_ms: u64,
}

#[derive(Debug, Clone, Copy)]
struct Config {
    mode: Mode,
    connections: usize,
    payload: usize,
    batch: usize,
    duration: Duration,
    samples: usize,
    gap: Duration,
    recv_pause: Duration,
    rate: f64,
    room_size: usize,
}

impl Config {
    fn from_args(a: &Args) -> Result<Self> {
        if a.connections == 0 || a.connections > MAX_CONNECTIONS {
            bail!(
                "--connections must be between 1 and {MAX_CONNECTIONS} (got {})",
                a.connections
            );
        }
        if a.payload == 0 || a.payload > MAX_PAYLOAD {
            bail!(
                "--payload must be between 1 and {MAX_PAYLOAD} bytes (got {})",
                a.payload
            );
        }
        if a.batch == 0 || a.batch.saturating_mul(a.payload) > MAX_WRITE {
            bail!("--batch must be at least 1 and batch × payload at most {MAX_WRITE} bytes");
        }
        if a.mode == Mode::Rate && a.batch != 1 {
            bail!("--batch is for max and sweep-latency mode; rate mode writes each message on its own");
        }
        if !(a.duration > 0.0 && a.duration <= MAX_DURATION_S) {
            bail!(
                "--duration must be more than 0 and at most {MAX_DURATION_S} seconds (got {})",
                a.duration
            );
        }
        if a.samples == 0 || a.samples > MAX_SAMPLES {
            bail!("--samples must be between 1 and {MAX_SAMPLES} (got {})", a.samples);
        }
        if a.mode == Mode::Rate {
            Self::check_rooms(a)?;
        }
        if a.gap_ms > MAX_GAP_MS || a.recv_pause_ms > MAX_GAP_MS {
            bail!("--gap-ms and --recv-pause-ms must be at most {MAX_GAP_MS}");
        }
        Ok(Config {
            mode: a.mode,
            connections: a.connections,
            payload: a.payload,
            batch: a.batch,
            duration: Duration::from_secs_f64(a.duration),
            samples: a.samples,
            gap: Duration::from_millis(a.gap_ms),
            recv_pause: Duration::from_millis(a.recv_pause_ms),
            rate: a.rate,
            room_size: a.room_size,
        })
    }

    /// Rate mode's own options (ignored by the other modes).
    fn check_rooms(a: &Args) -> Result<()> {
        if !(a.rate > 0.0 && a.rate <= MAX_RATE) {
            bail!(
                "--rate must be more than 0 and at most {MAX_RATE} messages/s (got {})",
                a.rate
            );
        }
        if a.rate * a.duration < 1.0 {
            bail!(
                "--rate × --duration must give at least one message (got {} × {})",
                a.rate,
                a.duration
            );
        }
        if a.room_size == 0 || !a.connections.is_multiple_of(a.room_size) {
            bail!(
                "--room-size must be at least 1 and divide --connections (got {} and {})",
                a.room_size,
                a.connections
            );
        }
        Ok(())
    }

    fn rooms(&self) -> usize {
        self.connections / self.room_size
    }

    /// Rate mode: messages in the run.
    fn rate_messages(&self) -> u64 {
        (self.duration.as_secs_f64() * self.rate).floor() as u64
    }

    /// Rate mode: when message `k` is due, in ns after the schedule's start
    /// (computed from `k`, not accumulated, so it does not drift).
    fn due_offset_ns(&self, k: u64) -> u64 {
        (k as f64 * 1e9 / self.rate) as u64
    }

    /// Rate mode: the message whose bytes are connection `conn`'s `j`-th
    /// record (rooms take messages round robin).
    fn message_of_record(&self, conn: usize, j: u64) -> u64 {
        (conn / self.room_size) as u64 + j * self.rooms() as u64
    }

    /// Rate mode: messages room `room` gets in the whole run.
    fn messages_for_room(&self, room: usize) -> u64 {
        let (total, rooms) = (self.rate_messages(), self.rooms() as u64);
        total / rooms + u64::from((room as u64) < total % rooms)
    }

    /// Bytes of one write to one connection.
    fn write_len(&self) -> u64 {
        (self.payload * self.batch) as u64
    }
}

// ---------------------------------------------------------------------------
// /proc readers

/// utime and stime, in clock ticks, of a /proc stat file.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    user: u64,
    sys: u64,
}

impl Cpu {
    fn read(path: &Path) -> Result<Cpu> {
        let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let rest = text.rsplit_once(')').map(|(_, r)| r).context("malformed stat")?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // Field 3 (state) is fields[0]; utime is field 14, stime field 15.
        let get = |i: usize| -> Result<u64> {
            fields
                .get(i)
                .context("short stat")?
                .parse::<u64>()
                .context("malformed stat field")
        };
        Ok(Cpu {
            user: get(11)?,
            sys: get(12)?,
        })
    }

    fn since(self, start: Cpu) -> Cpu {
        Cpu {
            user: self.user.saturating_sub(start.user),
            sys: self.sys.saturating_sub(start.sys),
        }
    }

    fn user_us(self) -> f64 {
        self.user as f64 * 1e6 / USER_HZ
    }

    fn sys_us(self) -> f64 {
        self.sys as f64 * 1e6 / USER_HZ
    }

    fn total_us(self) -> f64 {
        self.user_us() + self.sys_us()
    }
}

/// Times a thread went to sleep and was woken again (`voluntary_ctxt_switches`
/// of its /proc status file): on loopback each wake-up of the reader is paid
/// inside the writer's `write`.
fn sleeps(status: &Path) -> Result<u64> {
    let text = fs::read_to_string(status).with_context(|| format!("reading {}", status.display()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .context("no voluntary_ctxt_switches line")?
        .trim()
        .parse()
        .context("malformed voluntary_ctxt_switches")
}

/// CPU snapshots of the writer, the receiver and the whole process, and
/// the sleeps of the writer and the receiver.
#[derive(Debug, Clone, Copy)]
struct CpuSet {
    writer: Cpu,
    receiver: Cpu,
    process: Cpu,
    writer_sleeps: u64,
    receiver_sleeps: u64,
}

impl CpuSet {
    fn read(receiver_stat: &Path) -> Result<CpuSet> {
        Ok(CpuSet {
            writer: Cpu::read(Path::new("/proc/thread-self/stat"))?,
            receiver: Cpu::read(receiver_stat)?,
            process: Cpu::read(Path::new("/proc/self/stat"))?,
            writer_sleeps: sleeps(Path::new("/proc/thread-self/status"))?,
            receiver_sleeps: sleeps(&receiver_stat.with_file_name("status"))?,
        })
    }

    fn since(self, start: CpuSet) -> CpuSet {
        CpuSet {
            writer: self.writer.since(start.writer),
            receiver: self.receiver.since(start.receiver),
            process: self.process.since(start.process),
            writer_sleeps: self.writer_sleeps.saturating_sub(start.writer_sleeps),
            receiver_sleeps: self.receiver_sleeps.saturating_sub(start.receiver_sleeps),
        }
    }
}

/// (soft, hard) RLIMIT_NOFILE from /proc/self/limits (`None` = unlimited).
fn nofile_limit() -> Result<(Option<u64>, Option<u64>)> {
    let text = fs::read_to_string("/proc/self/limits").context("reading /proc/self/limits")?;
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .context("no 'Max open files' line")?;
    let mut it = line["Max open files".len()..].split_whitespace();
    let parse = |s: Option<&str>| -> Result<Option<u64>> {
        match s {
            Some("unlimited") => Ok(None),
            Some(v) => Ok(Some(v.parse().context("malformed open-files limit")?)),
            None => bail!("malformed 'Max open files' line"),
        }
    };
    Ok((parse(it.next())?, parse(it.next())?))
}

/// Fails with a clear message if 2 × `connections` sockets do not fit under
/// the soft open-file limit.
fn check_fd_limit(connections: usize) -> Result<()> {
    let (soft, hard) = nofile_limit()?;
    let Some(soft) = soft else { return Ok(()) };
    let open = fs::read_dir("/proc/self/fd").map(|d| d.count() as u64).unwrap_or(8);
    let fit = soft.saturating_sub(open + FD_RESERVE) / 2;
    if connections as u64 > fit {
        let hard = hard.map_or_else(|| "unlimited".to_owned(), |h| h.to_string());
        bail!(
            "the open-file limit (RLIMIT_NOFILE soft {soft}, hard {hard}) allows at most {fit} connections \
             here (2 sockets each, {open} files open, {FD_RESERVE} kept free); asked for {connections}: \
             use --connections {fit} or raise the limit (ulimit -n)"
        );
    }
    Ok(())
}

#[derive(Debug, Clone)]
struct Machine {
    cores: usize,
    kernel: String,
    cpu_model: String,
}

impl Machine {
    fn read() -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cores = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".to_owned(), |(_, v)| v.trim().to_owned());
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".to_owned(), |k| k.trim().to_owned());
        Machine {
            cores,
            kernel,
            cpu_model,
        }
    }
}

// ---------------------------------------------------------------------------
// Sockets

/// `n` connected pairs: (accepted "server" sockets, connecting "client" sockets).
fn connect_pairs(n: usize) -> Result<(Vec<TcpStream>, Vec<TcpStream>)> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding the listener on 127.0.0.1")?;
    let addr = listener.local_addr()?;
    let mut servers = Vec::with_capacity(n);
    let mut clients = Vec::with_capacity(n);
    while clients.len() < n {
        let k = CONNECT_CHUNK.min(n - clients.len());
        for _ in 0..k {
            let c = StdTcpStream::connect(addr).with_context(|| format!("connection {}", clients.len()))?;
            c.set_nodelay(true)?;
            c.set_nonblocking(true)?;
            clients.push(TcpStream::from_std(c));
        }
        for _ in 0..k {
            let (s, _) = listener
                .accept()
                .with_context(|| format!("accepting connection {}", servers.len()))?;
            s.set_nodelay(true)?;
            s.set_nonblocking(true)?;
            servers.push(TcpStream::from_std(s));
        }
    }
    Ok((servers, clients))
}

fn now_ns(epoch: Instant) -> u64 {
    epoch.elapsed().as_nanos() as u64
}

/// State the writer and the receiver share.
#[derive(Debug)]
struct Shared {
    epoch: Instant,
    /// Cumulative bytes the writer waits for (0: none yet).
    target: AtomicU64,
    /// The last target the receiver saw fully received ...
    reached: AtomicU64,
    /// ... and when (ns since `epoch`).
    reached_at_ns: AtomicU64,
    stop: AtomicBool,
    /// Rate mode: the schedule's start (ns since `epoch`), set before the
    /// first write.
    rate_start_ns: AtomicU64,
}

#[derive(Debug, Default)]
struct RecvStats {
    received: u64,
    per_connection: Vec<u64>,
    reads: u64,
    /// Rate mode: scheduled time → last byte, µs, per delivery.
    latency: Option<Histogram<u64>>,
}

fn latency_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).context("creating a histogram")
}

/// The receiver thread: drains every client socket and counts bytes.
fn receive(
    mut clients: Vec<TcpStream>,
    shared: &Shared,
    cfg: &Config,
    ready: &mpsc::Sender<Result<PathBuf>>,
) -> Result<RecvStats> {
    let mut setup = || -> Result<(Poll, PathBuf)> {
        let poll = Poll::new()?;
        for (i, c) in clients.iter_mut().enumerate() {
            poll.registry().register(c, Token(i), Interest::READABLE)?;
        }
        // "<pid>/task/<tid>": lets the writer sample this thread's CPU time.
        let me = fs::read_link("/proc/thread-self").context("reading /proc/thread-self")?;
        Ok((poll, Path::new("/proc").join(me).join("stat")))
    };
    let mut poll = match setup() {
        Ok((poll, stat)) => {
            let _ = ready.send(Ok(stat));
            poll
        }
        Err(e) => {
            let _ = ready.send(Err(anyhow::anyhow!("receiver setup failed: {e:#}")));
            return Err(e);
        }
    };
    let mut stats = RecvStats {
        per_connection: vec![0; clients.len()],
        latency: if cfg.mode == Mode::Rate {
            Some(latency_histogram()?)
        } else {
            None
        },
        ..RecvStats::default()
    };
    let payload = cfg.payload as u64;
    let mut buf = vec![0u8; RECV_BUF];
    let mut events = Events::with_capacity(1024);
    // When the latest bytes were read (ns since the epoch).
    let mut last_data_ns = 0;
    loop {
        match poll.poll(&mut events, Some(Duration::from_millis(10))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("receiver epoll_wait"),
        }
        let before = stats.received;
        for ev in events.iter() {
            let i = ev.token().0;
            let mut conn = &clients[i];
            loop {
                match conn.read(&mut buf) {
                    Ok(0) => bail!("connection {i} was closed by the writer side"),
                    Ok(k) => {
                        let before = stats.per_connection[i];
                        stats.received += k as u64;
                        stats.per_connection[i] += k as u64;
                        stats.reads += 1;
                        if let Some(h) = stats.latency.as_mut() {
                            // Records whose last byte this read brought.
                            let now = now_ns(shared.epoch);
                            let start = shared.rate_start_ns.load(SeqCst);
                            for j in before / payload..(before + k as u64) / payload {
                                let due = start + cfg.due_offset_ns(cfg.message_of_record(i, j));
                                h.saturating_record(now.saturating_sub(due) / 1000);
                            }
                        }
                        // A short read of a stream socket means it is drained;
                        // on Linux new data raises a new edge.
                        if k < buf.len() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e).with_context(|| format!("reading connection {i}")),
                }
            }
        }
        if stats.received != before {
            last_data_ns = now_ns(shared.epoch);
        }
        let target = shared.target.load(SeqCst);
        if target != 0 && stats.received >= target && shared.reached.load(SeqCst) != target {
            // The target may have been set after its last byte came in.
            shared.reached_at_ns.store(last_data_ns, SeqCst);
            shared.reached.store(target, SeqCst);
        }
        if shared.stop.load(SeqCst) {
            return Ok(stats);
        }
        if !cfg.recv_pause.is_zero() {
            thread::sleep(cfg.recv_pause);
        }
    }
}

/// The gateway stand-in: one write per connection per message.
#[derive(Debug)]
struct Writer {
    poll: Poll,
    events: Events,
    conns: Vec<TcpStream>,
    /// Bytes owed to each connection (written on writable readiness).
    owed: Vec<u64>,
    total_owed: u64,
    /// Source of the bytes written (its content does not matter).
    chunk: Vec<u8>,
    ready: Vec<usize>,
    writes: u64,
    flush_writes: u64,
    would_block: u64,
    written: u64,
}

impl Writer {
    fn new(mut conns: Vec<TcpStream>, write_len: u64) -> Result<Writer> {
        let poll = Poll::new()?;
        for (i, c) in conns.iter_mut().enumerate() {
            poll.registry().register(c, Token(i), Interest::WRITABLE)?;
        }
        let n = conns.len();
        Ok(Writer {
            poll,
            events: Events::with_capacity(1024),
            conns,
            owed: vec![0; n],
            total_owed: 0,
            chunk: vec![b'x'; (write_len as usize).max(64 * 1024)],
            ready: Vec::with_capacity(1024),
            writes: 0,
            flush_writes: 0,
            would_block: 0,
            written: 0,
        })
    }

    /// One write of `len` bytes to every connection (appended to the debt of
    /// a connection that is still owed bytes).
    fn send_all(&mut self, len: u64) -> Result<()> {
        self.send_to(0..self.conns.len(), len)
    }

    /// One write of `len` bytes to each of the connections `conns`.
    fn send_to(&mut self, conns: std::ops::Range<usize>, len: u64) -> Result<()> {
        for i in conns {
            if self.owed[i] > 0 {
                self.owed[i] += len;
                self.total_owed += len;
            } else {
                self.write_conn(i, len, false)?;
            }
        }
        Ok(())
    }

    /// Writes `len` bytes to connection `i` until done or it would block;
    /// the rest becomes that connection's debt (replacing the old one).
    fn write_conn(&mut self, i: usize, mut len: u64, flush: bool) -> Result<()> {
        let mut conn = &self.conns[i];
        while len > 0 {
            let k = len.min(self.chunk.len() as u64) as usize;
            match conn.write(&self.chunk[..k]) {
                Ok(0) => bail!("connection {i}: write returned 0"),
                Ok(w) => {
                    self.writes += 1;
                    self.flush_writes += u64::from(flush);
                    self.written += w as u64;
                    len -= w as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.would_block += 1;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).with_context(|| format!("writing connection {i}")),
            }
        }
        self.total_owed = self.total_owed - self.owed[i] + len;
        self.owed[i] = len;
        Ok(())
    }

    /// Waits up to `timeout` for writable readiness and pays what is owed.
    fn service(&mut self, timeout: Duration) -> Result<()> {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e).context("writer epoll_wait"),
        }
        self.ready.clear();
        self.ready.extend(self.events.iter().map(|e| e.token().0));
        for j in 0..self.ready.len() {
            let i = self.ready[j];
            if self.owed[i] > 0 {
                self.write_conn(i, self.owed[i], true)?;
            }
        }
        Ok(())
    }

    /// Starts no new message while more than OWED_LIMIT bytes are owed.
    fn pay_down(&mut self) -> Result<()> {
        while self.total_owed > OWED_LIMIT {
            self.service(Duration::from_millis(100))?;
        }
        Ok(())
    }

    /// Pays every debt.
    fn flush_all(&mut self) -> Result<()> {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while self.total_owed > 0 {
            if Instant::now() > deadline {
                bail!("{} bytes still owed after {DRAIN_TIMEOUT:?}", self.total_owed);
            }
            self.service(Duration::from_millis(100))?;
        }
        Ok(())
    }
}

/// Sets the receiver's target to `total` bytes and waits until it has them;
/// returns when (ns since the epoch) the last byte was received.
fn wait_received(shared: &Shared, total: u64, receiver: &thread::JoinHandle<Result<RecvStats>>) -> Result<u64> {
    shared.target.store(total, SeqCst);
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        if shared.reached.load(SeqCst) == total {
            return Ok(shared.reached_at_ns.load(SeqCst));
        }
        if receiver.is_finished() {
            bail!("the receiver stopped early");
        }
        if Instant::now() > deadline {
            bail!("the receiver did not get all {total} bytes within {DRAIN_TIMEOUT:?}");
        }
        thread::sleep(Duration::from_micros(50));
    }
}

#[derive(Debug, Clone, Copy)]
struct Percentiles {
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of nanosecond samples, in µs.
    fn of_ns(samples: &mut [u64]) -> Percentiles {
        samples.sort_unstable();
        let at = |p: f64| -> f64 {
            let n = samples.len();
            let rank = ((p / 100.0) * n as f64).ceil() as usize;
            samples
                .get(rank.clamp(1, n.max(1)) - 1)
                .map_or(0.0, |&v| v as f64 / 1e3)
        };
        Percentiles {
            p50: at(50.0),
            p99: at(99.0),
            p999: at(99.9),
            max: at(100.0),
        }
    }

    /// Percentiles of a histogram of µs values.
    fn of_histogram(h: &Histogram<u64>) -> Percentiles {
        let at = |q: f64| h.value_at_quantile(q) as f64;
        Percentiles {
            p50: at(0.5),
            p99: at(0.99),
            p999: at(0.999),
            max: h.max() as f64,
        }
    }

    fn json(&self) -> Value {
        json!({
            "p50": round3(self.p50),
            "p99": round3(self.p99),
            "p999": round3(self.p999),
            "max": round3(self.max),
        })
    }
}

#[derive(Debug)]
struct Report {
    cfg: Config,
    machine: Machine,
    /// Measured window (max: first write → last byte; sweep: sum of latencies).
    duration: Duration,
    /// Wall time from the first write to the end of the run.
    wall: Duration,
    /// Writes of payload × batch bytes to each connection (rounds).
    rounds: u64,
    deliveries: u64,
    received_bytes: u64,
    writes: u64,
    flush_writes: u64,
    would_block_writes: u64,
    receiver_reads: u64,
    cpu: CpuSet,
    latency: Option<Percentiles>,
    write_span: Option<Percentiles>,
    send_lag: Option<Percentiles>,
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl Report {
    fn per_delivery(&self, us: f64) -> f64 {
        if self.deliveries == 0 {
            0.0
        } else {
            us / self.deliveries as f64
        }
    }

    fn per_round(&self, n: u64) -> f64 {
        n as f64 / self.rounds.max(1) as f64
    }

    fn deliveries_per_sec(&self) -> f64 {
        self.deliveries as f64 / self.duration.as_secs_f64().max(1e-9)
    }

    fn writes_per_sec(&self) -> f64 {
        self.writes as f64 / self.duration.as_secs_f64().max(1e-9)
    }

    fn json(&self) -> Value {
        let c = &self.cfg;
        let mut v = json!({
            "mode": c.mode.name(),
            "connections": c.connections,
            "payload": c.payload,
            "batch": c.batch,
            "duration_s": round3(self.duration.as_secs_f64() * 1e3) / 1e3,
            "wall_s": round3(self.wall.as_secs_f64() * 1e3) / 1e3,
            "rounds": self.rounds,
            "deliveries": self.deliveries,
            "deliveries_per_sec": self.deliveries_per_sec().round(),
            "received_bytes": self.received_bytes,
            "writes": self.writes,
            "writes_per_sec": self.writes_per_sec().round(),
            "writer_cpu_us_per_delivery": {
                "user": round3(self.per_delivery(self.cpu.writer.user_us())),
                "sys": round3(self.per_delivery(self.cpu.writer.sys_us())),
            },
            "receiver_cpu_us_per_delivery": round3(self.per_delivery(self.cpu.receiver.total_us())),
            "process_cpu_us_per_delivery": round3(self.per_delivery(self.cpu.process.total_us())),
            "cpu_s": {
                "writer_user": self.cpu.writer.user_us() / 1e6,
                "writer_sys": self.cpu.writer.sys_us() / 1e6,
                "receiver": self.cpu.receiver.total_us() / 1e6,
                "process": self.cpu.process.total_us() / 1e6,
            },
            "sleeps_per_message": {
                "writer": round3(self.per_round(self.cpu.writer_sleeps)),
                "receiver": round3(self.per_round(self.cpu.receiver_sleeps)),
            },
            "would_block_writes": self.would_block_writes,
            "flush_writes": self.flush_writes,
            "receiver_reads": self.receiver_reads,
            "machine": {
                "cores": self.machine.cores,
                "kernel": self.machine.kernel,
                "cpu_model": self.machine.cpu_model,
            },
        });
        if let Some(obj) = v.as_object_mut() {
            if let Some(l) = self.latency {
                obj.insert("latency_us".into(), l.json());
            }
            if let Some(w) = self.write_span {
                obj.insert("samples".into(), json!(c.samples));
                obj.insert("write_span_us".into(), w.json());
            }
            if let Some(lag) = self.send_lag {
                obj.insert("rate".into(), json!(c.rate));
                obj.insert("room_size".into(), json!(c.room_size));
                obj.insert("send_lag_us".into(), lag.json());
            }
        }
        v
    }

    fn print(&self) {
        let c = &self.cfg;
        println!(
            "raw-ceiling: mode {}, {} connections, {} B payload, batch {} ({} B per write), {} cores, {}, kernel {}",
            c.mode.name(),
            c.connections,
            c.payload,
            c.batch,
            c.write_len(),
            self.machine.cores,
            self.machine.cpu_model,
            self.machine.kernel
        );
        println!(
            "  deliveries      {} in {:.3} s = {:.0} deliveries/s ({:.0} writes/s, {} writes)",
            self.deliveries,
            self.duration.as_secs_f64(),
            self.deliveries_per_sec(),
            self.writes_per_sec(),
            self.writes
        );
        println!(
            "  received        {} B (= deliveries × payload), {} reads",
            self.received_bytes, self.receiver_reads
        );
        println!(
            "  writer CPU      {:.3} µs user + {:.3} µs sys per delivery ({:.2} s user, {:.2} s sys)",
            self.per_delivery(self.cpu.writer.user_us()),
            self.per_delivery(self.cpu.writer.sys_us()),
            self.cpu.writer.user_us() / 1e6,
            self.cpu.writer.sys_us() / 1e6
        );
        println!(
            "  receiver CPU    {:.3} µs per delivery; process CPU {:.3} µs per delivery",
            self.per_delivery(self.cpu.receiver.total_us()),
            self.per_delivery(self.cpu.process.total_us())
        );
        println!(
            "  sleeps          writer {:.2}, receiver {:.2} per message (voluntary context switches)",
            self.per_round(self.cpu.writer_sleeps),
            self.per_round(self.cpu.receiver_sleeps)
        );
        println!(
            "  would-block     {} writes (then {} writes on readiness)",
            self.would_block_writes, self.flush_writes
        );
        if let (Some(l), Some(lag)) = (self.latency, self.send_lag) {
            println!(
                "  open loop, {} msgs/s to rooms of {} ({:.0} deliveries/s offered): scheduled → last byte p50 {:.0} µs, p99 {:.0} µs, p99.9 {:.0} µs, max {:.0} µs",
                c.rate,
                c.room_size,
                c.rate * c.room_size as f64,
                l.p50,
                l.p99,
                l.p999,
                l.max
            );
            println!(
                "  writer lateness (send lag): p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs",
                lag.p50, lag.p99, lag.max
            );
        }
        if let (Some(l), Some(w)) = (self.latency, self.write_span) {
            println!(
                "  one message to all {} connections, {} samples: first write → last byte p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs",
                c.connections, c.samples, l.p50, l.p99, l.max
            );
            println!(
                "  first write → last write returned: p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs",
                w.p50, w.p99, w.max
            );
        }
    }
}

/// What the writer measured.
#[derive(Debug)]
struct WriterOutcome {
    duration: Duration,
    wall: Duration,
    rounds: u64,
    writes: u64,
    flush_writes: u64,
    would_block: u64,
    cpu: CpuSet,
    latency_ns: Vec<u64>,
    write_span_ns: Vec<u64>,
    /// Rate mode: scheduled time → first write, µs, per message.
    send_lag: Option<Histogram<u64>>,
    /// Bytes written before the measured window (warm-up).
    warmup_bytes: u64,
}

impl WriterOutcome {
    /// An outcome whose counts are the writer's whole run (no warm-up).
    fn whole_run(w: &Writer, duration: Duration, wall: Duration, rounds: u64, cpu: CpuSet) -> Self {
        WriterOutcome {
            duration,
            wall,
            rounds,
            writes: w.writes,
            flush_writes: w.flush_writes,
            would_block: w.would_block,
            cpu,
            latency_ns: Vec::new(),
            write_span_ns: Vec::new(),
            send_lag: None,
            warmup_bytes: 0,
        }
    }
}

/// Ends a max or rate run: pays every debt, waits until the receiver has
/// every byte, and returns when the last one came (ns since the epoch) and
/// the CPU used since `cpu0`.
fn finish(
    w: &mut Writer,
    shared: &Shared,
    receiver: &thread::JoinHandle<Result<RecvStats>>,
    receiver_stat: &Path,
    cpu0: CpuSet,
) -> Result<(u64, CpuSet)> {
    w.flush_all()?;
    let end_ns = wait_received(shared, w.written, receiver)?;
    Ok((end_ns, CpuSet::read(receiver_stat)?.since(cpu0)))
}

fn drive(
    cfg: &Config,
    w: &mut Writer,
    shared: &Shared,
    receiver: &thread::JoinHandle<Result<RecvStats>>,
    receiver_stat: &Path,
) -> Result<WriterOutcome> {
    let len = cfg.write_len();
    let n = cfg.connections as u64;
    match cfg.mode {
        Mode::Max => {
            let cpu0 = CpuSet::read(receiver_stat)?;
            let start_ns = now_ns(shared.epoch);
            let deadline = Instant::now() + cfg.duration;
            let mut rounds = 0;
            while Instant::now() < deadline {
                w.send_all(len)?;
                rounds += 1;
                if w.total_owed > 0 {
                    w.service(Duration::ZERO)?;
                    w.pay_down()?;
                }
            }
            let (end_ns, cpu) = finish(w, shared, receiver, receiver_stat, cpu0)?;
            let span = Duration::from_nanos(end_ns.saturating_sub(start_ns));
            Ok(WriterOutcome::whole_run(w, span, span, rounds, cpu))
        }
        Mode::Rate => {
            let total = cfg.rate_messages();
            let (rooms, size) = (cfg.rooms() as u64, cfg.room_size);
            let mut lag = latency_histogram()?;
            // The default 50 µs slack would make every sleep that much late,
            // and the floor that much higher than what the kernel allows
            // (herald-loadgen wakes on a timerfd, which has no slack).
            rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1))
                .context("setting the writer's timer slack")?;
            let cpu0 = CpuSet::read(receiver_stat)?;
            let start_ns = now_ns(shared.epoch) + RATE_LEAD_IN.as_nanos() as u64;
            shared.rate_start_ns.store(start_ns, SeqCst);
            for k in 0..total {
                let due = start_ns + cfg.due_offset_ns(k);
                loop {
                    if w.total_owed > 0 {
                        w.service(Duration::ZERO)?;
                    }
                    let now = now_ns(shared.epoch);
                    if now >= due {
                        lag.saturating_record((now - due) / 1000);
                        break;
                    }
                    thread::sleep(Duration::from_nanos(due - now).min(RATE_NAP));
                }
                let room = (k % rooms) as usize;
                w.send_to(room * size..(room + 1) * size, len)?;
                w.pay_down()?;
            }
            let (end_ns, cpu) = finish(w, shared, receiver, receiver_stat, cpu0)?;
            // The offered window, so deliveries_per_sec is the offered rate.
            let offered = Duration::from_nanos(cfg.due_offset_ns(total));
            let wall = Duration::from_nanos(end_ns.saturating_sub(start_ns));
            Ok(WriterOutcome {
                send_lag: Some(lag),
                ..WriterOutcome::whole_run(w, offered, wall, total, cpu)
            })
        }
        Mode::SweepLatency => {
            let mut latency_ns = Vec::with_capacity(cfg.samples);
            let mut write_span_ns = Vec::with_capacity(cfg.samples);
            let mut cpu0 = None;
            let mut base = (0, 0, 0, 0u64);
            let mut start_ns = 0;
            for s in 0..WARMUP_SAMPLES + cfg.samples {
                if s == WARMUP_SAMPLES {
                    cpu0 = Some(CpuSet::read(receiver_stat)?);
                    base = (w.writes, w.flush_writes, w.would_block, w.written);
                    start_ns = now_ns(shared.epoch);
                }
                let total = w.written + len * n;
                shared.target.store(total, SeqCst);
                let t0 = now_ns(shared.epoch);
                w.send_all(len)?;
                let t_written = now_ns(shared.epoch);
                w.flush_all()?;
                let t_done = wait_received(shared, total, receiver)?;
                if s >= WARMUP_SAMPLES {
                    latency_ns.push(t_done.saturating_sub(t0));
                    write_span_ns.push(t_written.saturating_sub(t0));
                }
                thread::sleep(cfg.gap);
            }
            let cpu = CpuSet::read(receiver_stat)?.since(cpu0.context("no samples")?);
            Ok(WriterOutcome {
                duration: Duration::from_nanos(latency_ns.iter().sum()),
                wall: Duration::from_nanos(now_ns(shared.epoch).saturating_sub(start_ns)),
                rounds: cfg.samples as u64,
                writes: w.writes - base.0,
                flush_writes: w.flush_writes - base.1,
                would_block: w.would_block - base.2,
                cpu,
                latency_ns,
                write_span_ns,
                send_lag: None,
                warmup_bytes: base.3,
            })
        }
    }
}

fn run(cfg: &Config) -> Result<Report> {
    check_fd_limit(cfg.connections)?;
    let machine = Machine::read();
    let (servers, clients) = connect_pairs(cfg.connections)?;
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        target: AtomicU64::new(0),
        reached: AtomicU64::new(0),
        reached_at_ns: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        rate_start_ns: AtomicU64::new(0),
    });
    let (ready_tx, ready_rx) = mpsc::channel();
    let receiver = {
        let shared = Arc::clone(&shared);
        let cfg = *cfg;
        thread::Builder::new()
            .name("raw-receiver".into())
            .spawn(move || receive(clients, &shared, &cfg, &ready_tx))
            .context("spawning the receiver thread")?
    };
    // The writer (and its sockets) outlives the receiver: closing them first
    // would show the receiver end-of-file before it sees `stop`.
    let mut writer = None;
    let outcome = ready_rx
        .recv()
        .context("receiver thread died during setup")
        .and_then(|r| r)
        .and_then(|receiver_stat| {
            let w = writer.insert(Writer::new(servers, cfg.write_len())?);
            drive(cfg, w, &shared, &receiver, &receiver_stat)
        });
    shared.stop.store(true, SeqCst);
    let recv = match receiver.join() {
        Ok(r) => r,
        Err(_) => bail!("the receiver thread panicked"),
    };
    drop(writer);
    let (mut out, recv) = match (outcome, recv) {
        (Ok(o), Ok(r)) => (o, r),
        (Err(e), _) | (Ok(_), Err(e)) => return Err(e),
    };

    // Connections a message goes to.
    let n = match cfg.mode {
        Mode::Rate => cfg.room_size as u64,
        Mode::Max | Mode::SweepLatency => cfg.connections as u64,
    };
    let received = recv.received - out.warmup_bytes;
    let len = cfg.write_len();
    let expected = out.rounds * n * len;
    if received != expected {
        bail!(
            "received {received} B, expected {expected} B ({} rounds × {n} connections × {len} B)",
            out.rounds
        );
    }
    let per_conn = |i: usize| match cfg.mode {
        Mode::Rate => cfg.messages_for_room(i / cfg.room_size) * len,
        Mode::Max | Mode::SweepLatency => (out.warmup_bytes + received) / n,
    };
    if let Some(i) = (0..recv.per_connection.len()).find(|&i| recv.per_connection[i] != per_conn(i)) {
        bail!(
            "connection {i} received {} B, expected {} B",
            recv.per_connection[i],
            per_conn(i)
        );
    }
    Ok(Report {
        cfg: *cfg,
        machine,
        duration: out.duration,
        wall: out.wall,
        rounds: out.rounds,
        deliveries: out.rounds * n * cfg.batch as u64,
        received_bytes: received,
        writes: out.writes,
        flush_writes: out.flush_writes,
        would_block_writes: out.would_block,
        receiver_reads: recv.reads,
        cpu: out.cpu,
        latency: match &recv.latency {
            Some(h) => Some(Percentiles::of_histogram(h)),
            None => (!out.latency_ns.is_empty()).then(|| Percentiles::of_ns(&mut out.latency_ns)),
        },
        write_span: (!out.write_span_ns.is_empty()).then(|| Percentiles::of_ns(&mut out.write_span_ns)),
        send_lag: out.send_lag.as_ref().map(Percentiles::of_histogram),
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = Config::from_args(&args).and_then(|cfg| run(&cfg)).and_then(|report| {
        report.print();
        if let Some(path) = &args.json {
            let text = serde_json::to_string_pretty(&report.json())?;
            fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raw-ceiling: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        let p = Percentiles::of_ns(&mut v);
        assert_eq!((p.p50, p.p99, p.max), (50.0, 99.0, 100.0));
    }

    #[test]
    fn rate_schedule_maps_records_to_messages() {
        let args = Args::parse_from([
            "raw-ceiling",
            "--mode",
            "rate",
            "--connections",
            "30",
            "--rate",
            "1000",
            "--duration",
            "0.01",
        ]);
        let cfg = Config::from_args(&args).unwrap();
        // 10 messages over 3 rooms: rooms 0, 1, 2, 0, 1, 2, 0, 1, 2, 0.
        assert_eq!(cfg.rate_messages(), 10);
        assert_eq!([0, 1, 2].map(|r| cfg.messages_for_room(r)), [4, 3, 3]);
        // Connection 25 is in room 2: its records are messages 2, 5, 8.
        assert_eq!([0, 1, 2].map(|j| cfg.message_of_record(25, j)), [2, 5, 8]);
        assert_eq!(cfg.due_offset_ns(8), 8_000_000);
    }

    #[test]
    fn reads_own_cpu_and_limits() {
        assert!(Cpu::read(Path::new("/proc/thread-self/stat")).is_ok());
        assert!(nofile_limit().is_ok());
    }
}
