//! `gateway-bench`: measures a running `herald` node from the outside, over
//! real WebSocket connections on loopback, until `herald-loadgen` grows these
//! scenarios.
//!
//! - `idle`: opens N connections (upgrade + Connect), holds them, and reads
//!   the node's RSS from /proc before and after: user-space bytes per idle
//!   connection.
//! - `fanout`: S subscribers over R rooms, P publisher connections sending an
//!   open-loop schedule (`--rates` steps, `--duration` each). Each payload
//!   carries its *scheduled* send time, so a stalled node shows up in the
//!   latency (no coordinated omission). Reports deliveries/s, loss, latency
//!   percentiles (HdrHistogram) and the node's CPU per delivery.
//!
//! One thread drives every connection with epoll (mio); its own cost is
//! reported so a result can be read against the machine's two cores.

use std::io::{self, IoSlice, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use hdrhistogram::Histogram;
use herald_protocol::wire::{self, BodyT};
use herald_protocol::{DecodeLimits, PublishRef, decode, with_encoder};
use mimalloc::MiMalloc;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde_json::json;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "gateway-bench",
    about = "Idle-memory and fan-out measurements of a running herald node"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// RSS per idle WebSocket connection.
    Idle {
        #[command(flatten)]
        common: Common,
        /// Connections to open.
        #[arg(long, default_value_t = 15_000)]
        connections: usize,
        /// Seconds to hold them before measuring.
        #[arg(long, default_value_t = 5)]
        hold: u64,
    },
    /// Fan-out throughput and latency.
    Fanout {
        #[command(flatten)]
        common: Common,
        /// Subscriber connections.
        #[arg(long, default_value_t = 5_000)]
        subscribers: usize,
        /// Rooms (subscribers are spread evenly).
        #[arg(long, default_value_t = 1)]
        rooms: usize,
        /// Publisher connections.
        #[arg(long, default_value_t = 1)]
        publishers: usize,
        /// Publish rates to step through (messages/s over all rooms).
        #[arg(long, value_delimiter = ',', default_value = "100")]
        rates: Vec<u64>,
        /// Seconds per rate step.
        #[arg(long, default_value_t = 5)]
        duration: u64,
        /// Payload bytes (at least 16: schedule time and sequence).
        #[arg(long, default_value_t = 64)]
        payload: usize,
        /// Stop at the first step delivering under this fraction of expected.
        #[arg(long, default_value_t = 0.99)]
        keep_up: f64,
    },
}

#[derive(Args, Debug)]
struct Common {
    /// Node address (host:port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    target: SocketAddr,
    /// Node process id, for RSS and CPU from /proc.
    #[arg(long)]
    pid: Option<u32>,
    /// Source addresses to spread connections over, e.g. 127.0.0.2-127.0.0.9.
    #[arg(long)]
    source_ips: Option<String>,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Connections opened at once.
    #[arg(long, default_value_t = 512)]
    connect_window: usize,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let report = match cli.cmd {
        Cmd::Idle {
            common,
            connections,
            hold,
        } => {
            let r = idle(&common, connections, Duration::from_secs(hold.min(600)))?;
            write_json(&common, &r)?;
            r
        }
        Cmd::Fanout {
            common,
            subscribers,
            rooms,
            publishers,
            rates,
            duration,
            payload,
            keep_up,
        } => {
            if payload < 16 || rooms == 0 || publishers == 0 || subscribers < rooms {
                bail!("need --payload >= 16, --rooms >= 1, --publishers >= 1, --subscribers >= --rooms");
            }
            let plan = FanoutPlan {
                subscribers,
                rooms,
                publishers,
                rates,
                duration: Duration::from_secs(duration.clamp(1, 300)),
                payload,
                keep_up,
            };
            let r = fanout(&common, &plan)?;
            write_json(&common, &r)?;
            r
        }
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

fn write_json(common: &Common, v: &serde_json::Value) -> Result<()> {
    if let Some(path) = &common.json {
        std::fs::write(path, serde_json::to_vec_pretty(v)?).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

// ---- connections -----------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    Upgrading,
    Authenticating,
    Subscribing,
    Ready,
    Failed,
}

struct Conn {
    sock: TcpStream,
    phase: Phase,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    room: Option<usize>,
}

type OnMessage = Box<dyn FnMut(usize, &[u8], Instant)>;

/// Every connection of a run on one epoll instance.
struct Fleet {
    poll: Poll,
    conns: Vec<Conn>,
    rooms: Vec<String>,
    user_prefix: String,
    /// Called with (connection index, payload, receive time) for every delivery.
    on_message: Option<OnMessage>,
    mask: u32,
    read_buf: Vec<u8>,
}

fn source_ips(spec: &Option<String>) -> Result<Vec<IpAddr>> {
    let Some(spec) = spec else { return Ok(Vec::new()) };
    let (a, b) = spec.split_once('-').unwrap_or((spec, spec));
    let (a, b): (std::net::Ipv4Addr, std::net::Ipv4Addr) = (a.parse()?, b.parse()?);
    let (a, b) = (u32::from(a), u32::from(b));
    if b < a || b - a > 1000 {
        bail!("--source-ips: give a range of at most 1000 addresses, low-high");
    }
    Ok((a..=b).map(|x| IpAddr::V4(x.into())).collect())
}

impl Fleet {
    fn new(rooms: Vec<String>) -> Result<Self> {
        Ok(Self {
            poll: Poll::new()?,
            conns: Vec::new(),
            rooms,
            user_prefix: format!("bench{}", std::process::id()),
            on_message: None,
            mask: 0x1234_5678,
            read_buf: vec![0; 64 * 1024],
        })
    }

    /// Opens `n` connections (at most `window` in progress) and waits until
    /// each is authenticated and subscribed (or failed).
    fn open(&mut self, common: &Common, n: usize, room_of: impl Fn(usize) -> Option<usize>) -> Result<usize> {
        let sources = source_ips(&common.source_ips)?;
        let start = self.conns.len();
        let mut next = 0;
        let mut events = Events::with_capacity(4096);
        let deadline = Instant::now() + Duration::from_secs(120 + n as u64 / 100);
        loop {
            let mut in_progress = self.conns[start..]
                .iter()
                .filter(|c| !matches!(c.phase, Phase::Ready | Phase::Failed))
                .count();
            while next < n && in_progress < common.connect_window {
                let sock = connect(common.target, sources.get(next % sources.len().max(1)).copied())?;
                let mut c = Conn {
                    sock,
                    phase: Phase::Connecting,
                    inbuf: Vec::new(),
                    outbuf: Vec::new(),
                    room: room_of(next),
                };
                let token = Token(self.conns.len());
                self.poll
                    .registry()
                    .register(&mut c.sock, token, Interest::READABLE | Interest::WRITABLE)?;
                self.conns.push(c);
                next += 1;
                in_progress += 1;
            }
            let done = self.conns[start..]
                .iter()
                .filter(|c| matches!(c.phase, Phase::Ready | Phase::Failed))
                .count();
            if next == n && done == n {
                break;
            }
            if Instant::now() > deadline {
                bail!("connections not ready in time ({done}/{n})");
            }
            self.poll.poll(&mut events, Some(Duration::from_millis(50)))?;
            let ready: Vec<(usize, bool, bool)> = events
                .iter()
                .map(|e| (e.token().0, e.is_readable() || e.is_read_closed(), e.is_writable()))
                .collect();
            for (i, r, w) in ready {
                self.service(i, r, w, Instant::now());
            }
        }
        Ok(self.conns[start..].iter().filter(|c| c.phase == Phase::Ready).count())
    }

    fn service(&mut self, i: usize, readable: bool, writable: bool, now: Instant) {
        if writable {
            self.on_writable(i);
        }
        if readable {
            self.on_readable(i, now);
        }
    }

    fn on_writable(&mut self, i: usize) {
        let target_host = "herald";
        let c = &mut self.conns[i];
        if c.phase == Phase::Connecting {
            if c.sock.peer_addr().is_err() {
                return;
            }
            c.phase = Phase::Upgrading;
            let req = format!(
                "GET /ws HTTP/1.1\r\nHost: {target_host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            );
            c.outbuf.extend_from_slice(req.as_bytes());
        }
        flush(c);
    }

    fn send_frame(&mut self, i: usize, frame: &[u8]) {
        self.mask = self.mask.rotate_left(7) ^ 0x9e37_79b9;
        let c = &mut self.conns[i];
        push_masked(&mut c.outbuf, frame, self.mask.to_ne_bytes());
        flush(c);
    }

    fn on_readable(&mut self, i: usize, now: Instant) {
        let mut buf = std::mem::take(&mut self.read_buf);
        loop {
            let c = &mut self.conns[i];
            match c.sock.read(&mut buf) {
                Ok(0) => {
                    c.phase = Phase::Failed;
                    break;
                }
                Ok(n) => c.inbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    c.phase = Phase::Failed;
                    break;
                }
            }
        }
        self.read_buf = buf;
        if self.conns[i].phase == Phase::Upgrading {
            let c = &mut self.conns[i];
            let Some(end) = c.inbuf.windows(4).position(|w| w == b"\r\n\r\n") else {
                return;
            };
            if !c.inbuf.starts_with(b"HTTP/1.1 101") {
                c.phase = Phase::Failed;
                return;
            }
            c.inbuf.drain(..end + 4);
            c.phase = Phase::Authenticating;
            let user = format!("{}-{i}", self.user_prefix);
            let mut connect = wire::ConnectT::default();
            connect.protocol = Some("herald/1".into());
            connect.token = Some(user);
            connect.client_name = Some("gateway-bench".into());
            let frame = with_encoder(|e| e.body(1, BodyT::Connect(Box::new(connect))));
            self.send_frame(i, &frame);
        }
        let mut pos = 0;
        let inbuf = std::mem::take(&mut self.conns[i].inbuf);
        while let Some((hlen, plen)) = server_frame_len(&inbuf[pos..]) {
            if inbuf.len() - pos < hlen + plen {
                break;
            }
            let opcode = inbuf[pos] & 0x0F;
            let payload = &inbuf[pos + hlen..pos + hlen + plen];
            pos += hlen + plen;
            if opcode == 0x2 {
                self.on_frame(i, payload, now);
            } else if opcode == 0x8 {
                self.conns[i].phase = Phase::Failed;
            }
        }
        let c = &mut self.conns[i];
        c.inbuf = inbuf;
        c.inbuf.drain(..pos);
    }

    fn on_frame(&mut self, i: usize, payload: &[u8], now: Instant) {
        let Ok(frame) = decode(payload, &DecodeLimits::SERVER_TO_CLIENT) else {
            self.conns[i].phase = Phase::Failed;
            return;
        };
        if let Some(m) = frame.body_as_message() {
            if let (Some(cb), Some(p)) = (self.on_message.as_mut(), m.payload()) {
                cb(i, p.bytes(), now);
            }
        } else if frame.body_as_connected().is_some() {
            match self.conns[i].room {
                Some(r) => {
                    self.conns[i].phase = Phase::Subscribing;
                    let mut s = wire::SubscribeT::default();
                    s.room = self.rooms[r].clone();
                    let frame = with_encoder(|e| e.body(2, BodyT::Subscribe(Box::new(s))));
                    self.send_frame(i, &frame);
                }
                None => self.conns[i].phase = Phase::Ready,
            }
        } else if frame.body_as_subscribed().is_some() {
            self.conns[i].phase = Phase::Ready;
        } else if let Some(p) = frame.body_as_ping() {
            let pong = with_encoder(|e| e.pong(p.nonce()));
            self.send_frame(i, &pong);
        } else if let Some(e) = frame.body_as_error() {
            if e.code().0 >= 200 {
                self.conns[i].phase = Phase::Failed;
            }
        } else if let Some(r) = frame.body_as_reply()
            && r.code().0 != 0
            && self.conns[i].phase == Phase::Subscribing
        {
            self.conns[i].phase = Phase::Failed;
        }
    }

    /// Services sockets for `d` (answers pings, reads deliveries).
    fn pump(&mut self, d: Duration) -> Result<()> {
        let until = Instant::now() + d;
        let mut events = Events::with_capacity(4096);
        while Instant::now() < until {
            self.poll
                .poll(&mut events, Some(until.saturating_duration_since(Instant::now())))?;
            let now = Instant::now();
            let ready: Vec<(usize, bool, bool)> = events
                .iter()
                .map(|e| (e.token().0, e.is_readable() || e.is_read_closed(), e.is_writable()))
                .collect();
            for (i, r, w) in ready {
                self.service(i, r, w, now);
            }
        }
        Ok(())
    }
}

fn connect(target: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    if let Some(ip) = source {
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match socket.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(115) || e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e).context("connect"),
    }
    Ok(TcpStream::from_std(socket.into()))
}

fn flush(c: &mut Conn) {
    while !c.outbuf.is_empty() {
        match c.sock.write_vectored(&[IoSlice::new(&c.outbuf)]) {
            Ok(n) => {
                c.outbuf.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

fn push_masked(out: &mut Vec<u8>, payload: &[u8], mask: [u8; 4]) {
    out.push(0x82);
    let n = payload.len();
    if n < 126 {
        out.push(0x80 | n as u8);
    } else if n <= 65_535 {
        out.push(0x80 | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
}

/// Header and payload length of the server frame at the start of `b`.
fn server_frame_len(b: &[u8]) -> Option<(usize, usize)> {
    let len = *b.get(1)? & 0x7F;
    match len {
        126 => Some((4, u16::from_be_bytes([*b.get(2)?, *b.get(3)?]) as usize)),
        127 => {
            let s = b.get(2..10)?;
            Some((10, u64::from_be_bytes(s.try_into().ok()?) as usize))
        }
        n => Some((2, n as usize)),
    }
}

// ---- /proc -----------------------------------------------------------------

fn rss_bytes(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: &str) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    json!({
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu_model": cpu,
        "kernel": kernel.trim(),
    })
}

// ---- scenarios -------------------------------------------------------------

fn idle(common: &Common, n: usize, hold: Duration) -> Result<serde_json::Value> {
    if n > 19_000 {
        bail!("one process holds at most ~19,000 sockets here (open-file limit 20,000)");
    }
    let before = common.pid.and_then(rss_bytes);
    let mut fleet = Fleet::new(Vec::new())?;
    let t0 = Instant::now();
    let ready = fleet.open(common, n, |_| None)?;
    let connect_secs = t0.elapsed().as_secs_f64();
    fleet.pump(hold)?;
    let after = common.pid.and_then(rss_bytes);
    let still = fleet.conns.iter().filter(|c| c.phase == Phase::Ready).count();
    let per_conn = match (before, after) {
        (Some(b), Some(a)) if still > 0 => Some((a.saturating_sub(b)) as f64 / still as f64),
        _ => None,
    };
    Ok(json!({
        "scenario": "idle",
        "connections": n,
        "ready": ready,
        "ready_after_hold": still,
        "connect_secs": connect_secs,
        "hold_secs": hold.as_secs(),
        "target_rss_before": before,
        "target_rss_after": after,
        "target_rss_bytes_per_connection": per_conn,
        "machine": machine(),
    }))
}

struct FanoutPlan {
    subscribers: usize,
    rooms: usize,
    publishers: usize,
    rates: Vec<u64>,
    duration: Duration,
    payload: usize,
    keep_up: f64,
}

/// Deliveries of a step. Sequence numbers rise within each room, so a
/// delivery at or below the last one its connection saw is a duplicate or
/// out of order.
#[derive(Default)]
struct Tally {
    delivered: u64,
    duplicated_or_reordered: u64,
    /// Per connection: 1 + the last sequence number seen (0: none yet).
    last: Vec<u64>,
}

fn fanout(common: &Common, plan: &FanoutPlan) -> Result<serde_json::Value> {
    if plan.subscribers + plan.publishers > 19_000 {
        bail!("one process holds at most ~19,000 sockets here (open-file limit 20,000)");
    }
    let rooms: Vec<String> = (0..plan.rooms)
        .map(|r| format!("bench:{}-{r}", std::process::id()))
        .collect();
    let mut fleet = Fleet::new(rooms.clone())?;
    let rooms_n = plan.rooms;
    let subs = fleet.open(common, plan.subscribers, |i| Some(i % rooms_n))?;
    let pubs = fleet.open(common, plan.publishers, |_| None)?;
    if subs < plan.subscribers || pubs < plan.publishers {
        bail!(
            "only {subs}/{} subscribers and {pubs}/{} publishers connected",
            plan.subscribers,
            plan.publishers
        );
    }
    let first_pub = plan.subscribers;
    let per_room: Vec<u64> = (0..plan.rooms)
        .map(|r| (0..plan.subscribers).filter(|i| i % plan.rooms == r).count() as u64)
        .collect();
    let base = Instant::now();
    let hist = std::rc::Rc::new(std::cell::RefCell::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let tally = std::rc::Rc::new(std::cell::RefCell::new(Tally::default()));
    {
        let (hist, tally) = (hist.clone(), tally.clone());
        fleet.on_message = Some(Box::new(move |conn, p, now| {
            if p.len() < 16 {
                return;
            }
            let sched = u64::from_le_bytes(p[..8].try_into().unwrap_or_default());
            let seq = u64::from_le_bytes(p[8..16].try_into().unwrap_or_default());
            let at = (now - base).as_micros() as u64;
            let _ = hist.borrow_mut().record(at.saturating_sub(sched / 1000).max(1));
            let mut t = tally.borrow_mut();
            t.delivered += 1;
            if t.last.len() <= conn {
                t.last.resize(conn + 1, 0);
            }
            if seq < t.last[conn] {
                t.duplicated_or_reordered += 1;
            } else {
                t.last[conn] = seq + 1;
            }
        }));
    }
    let pid = common.pid.map(|p| p.to_string());
    let mut steps = Vec::new();
    let mut seq: u64 = 0;
    let mut events = Events::with_capacity(8192);
    for &rate in &plan.rates {
        if rate == 0 {
            continue;
        }
        hist.borrow_mut().reset();
        {
            let mut t = tally.borrow_mut();
            t.delivered = 0;
            t.duplicated_or_reordered = 0;
        }
        let cpu0 = pid.as_deref().and_then(cpu_secs);
        let self0 = cpu_secs("self");
        let interval = Duration::from_secs_f64(1.0 / rate as f64);
        let start = Instant::now();
        let end = start + plan.duration;
        let mut sent: u64 = 0;
        let mut expected: u64 = 0;
        let mut payload = vec![0u8; plan.payload];
        loop {
            let now = Instant::now();
            // Send everything scheduled up to now (catching up if late: the
            // payload keeps the scheduled time, so lateness is measured).
            // Message i is due at start + i * interval.
            loop {
                let sched = start + interval.mul_f64(sent as f64);
                if sched > now || sched >= end {
                    break;
                }
                let room = (seq as usize) % plan.rooms;
                payload[..8].copy_from_slice(&((sched - base).as_nanos() as u64).to_le_bytes());
                payload[8..16].copy_from_slice(&seq.to_le_bytes());
                let frame = with_encoder(|e| {
                    e.publish(
                        (seq % u32::MAX as u64) as u32 + 1,
                        &PublishRef {
                            room: &rooms[room],
                            payload: &payload,
                            content_type: None,
                            volatile: false,
                            idempotency_key: None,
                        },
                    )
                });
                let publisher = first_pub + (seq as usize % plan.publishers);
                fleet.send_frame(publisher, &frame);
                expected += per_room[room];
                sent += 1;
                seq += 1;
            }
            if now >= end {
                break;
            }
            let next = start + interval.mul_f64(sent as f64);
            fleet.poll.poll(
                &mut events,
                Some(
                    next.saturating_duration_since(Instant::now())
                        .min(Duration::from_millis(5)),
                ),
            )?;
            let now = Instant::now();
            let ready: Vec<(usize, bool, bool)> = events
                .iter()
                .map(|e| (e.token().0, e.is_readable() || e.is_read_closed(), e.is_writable()))
                .collect();
            for (i, r, w) in ready {
                fleet.service(i, r, w, now);
            }
        }
        // Let in-flight deliveries arrive (bounded).
        let drain_until = Instant::now() + Duration::from_secs(3);
        while tally.borrow().delivered < expected && Instant::now() < drain_until {
            fleet.pump(Duration::from_millis(20))?;
        }
        let elapsed = start.elapsed().as_secs_f64();
        let cpu1 = pid.as_deref().and_then(cpu_secs);
        let self1 = cpu_secs("self");
        let t = tally.borrow();
        let h = hist.borrow();
        let delivered = t.delivered;
        let node_cpu_us = match (cpu0, cpu1) {
            (Some(a), Some(b)) if delivered > 0 => Some((b - a) * 1e6 / delivered as f64),
            _ => None,
        };
        let bench_cpu_us = match (self0, self1) {
            (Some(a), Some(b)) if delivered > 0 => Some((b - a) * 1e6 / delivered as f64),
            _ => None,
        };
        let ratio = if expected == 0 {
            1.0
        } else {
            delivered as f64 / expected as f64
        };
        let step = json!({
            "rate": rate,
            "sent": sent,
            "expected": expected,
            "delivered": delivered,
            "lost": expected.saturating_sub(delivered),
            "duplicated_or_reordered": t.duplicated_or_reordered,
            "deliveries_per_sec": delivered as f64 / plan.duration.as_secs_f64(),
            "elapsed_secs": elapsed,
            "latency_us": {
                "p50": h.value_at_quantile(0.5),
                "p90": h.value_at_quantile(0.9),
                "p99": h.value_at_quantile(0.99),
                "p999": h.value_at_quantile(0.999),
                "max": h.max(),
            },
            "node_cpu_us_per_delivery": node_cpu_us,
            "bench_cpu_us_per_delivery": bench_cpu_us,
            "kept_up": ratio >= plan.keep_up,
        });
        eprintln!(
            "rate {rate}/s: delivered {delivered}/{expected} ({:.1}%), duplicated or reordered {}, {:.0} deliveries/s, \
             p50 {} us, p99 {} us, p99.9 {} us",
            ratio * 100.0,
            t.duplicated_or_reordered,
            delivered as f64 / plan.duration.as_secs_f64(),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999)
        );
        drop(h);
        drop(t);
        steps.push(step);
        if ratio < plan.keep_up {
            break;
        }
        // Let queues empty before the next step.
        fleet.pump(Duration::from_millis(500))?;
    }
    Ok(json!({
        "scenario": "fanout",
        "subscribers": plan.subscribers,
        "rooms": plan.rooms,
        "publishers": plan.publishers,
        "payload": plan.payload,
        "duration_secs": plan.duration.as_secs(),
        "steps": steps,
        "target_rss_bytes": common.pid.and_then(rss_bytes),
        "machine": machine(),
    }))
}
