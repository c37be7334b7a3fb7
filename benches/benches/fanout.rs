//! Fan-out micro-benchmarks: the hand-off of a `Deliver` between shards and
//! the queueing of one encoded frame to every member of a room.
//!
//! - `shard_handoff/B`: the gateway's real two-shard mesh
//!   (`herald_gateway::bench_support::handoff_pair`: `Mesh` over bounded
//!   `sync_channel`s, the reply lane of 16 Ki messages as in the gateway, one
//!   `mio::Waker` per shard). The bench thread plays shard 0: per iteration
//!   it `Mesh::reply`s `B` deliveries, `Reply::Owner(Output::Deliver)` (a clone of the room name and
//!   of a 64 B-payload frame each) and calls `Mesh::flush` once, i.e. one wake
//!   per batch as at the end of a shard's loop iteration. A thread `shard-1`
//!   blocks in `mio::Poll::poll`, then drains the inbox with `try_recv` and
//!   drops the messages. The timed region ends when the receiver has taken
//!   every message sent, so the figure is pipelined throughput (the slower
//!   of the two sides), per message.
//! - `room_fanout/N`: one encoded `Message` frame (64 B payload, 216 B frame,
//!   encoded once with `with_encoder`) queued with
//!   `ServerSession::send(frame.clone(), false)` to `N` open sessions, then
//!   every session drained with `poll_transmit` (as `writer::flush` will), per
//!   delivery. Sessions sit in a `Vec`, not in the gateway's slab of
//!   connections, and the member lookup of the shard's `deliver` is not
//!   included.
//! - `flush_assembly/16`: what `writer::flush` does for one write of 16
//!   queued frames, without the socket: `poll_transmit` × 16, each frame
//!   copied after its WebSocket header into the shard's write buffer
//!   (`bench_support::assemble_write`, which calls `writer::take_batch`);
//!   queueing the 16 frames is not timed. Per batch; criterion's
//!   throughput gives frames per second.
//!
//! Run: `cargo bench -p herald-benches --bench fanout`
//! (about 1 minute; `-- --quick` for a smoke run).

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput};
use herald_benches::fixtures::{message_ref, payload};
use herald_gateway::bench_support::{HandoffReceiver, assemble_write, handoff_pair};
use herald_protocol::wire::{self, BodyT};
use herald_protocol::{Accept, PROTOCOL_VERSION, SendOutcome, ServerConfig, ServerSession, with_encoder};
use mimalloc::MiMalloc;

// The allocator the gateway runs with.
#[global_allocator]
static ALLOC: MiMalloc = MiMalloc;

/// Capacity of a shard's inbound lane in the gateway (`NodeConfig::shard_channel_capacity`).
const SHARD_CHANNEL: usize = 16 * 1024;
/// Messages handed over per wake.
const BATCHES: [usize; 3] = [1, 16, 256];
/// Subscribers of the room on one shard.
const MEMBERS: [usize; 3] = [10, 1_000, 5_000];
/// Frames per write call measured in `flush_assembly`.
const FLUSH_BATCH: usize = 16;
/// Sessions prepared per timed stretch of `flush_assembly`, so that the two
/// clock reads around it cost little per batch.
const FLUSH_SESSIONS: usize = 64;

/// The 64 B-payload `Message` frame the benches deliver.
fn message_frame() -> Bytes {
    let p = payload(64);
    with_encoder(|e| e.message(&message_ref(&p)))
}

/// A server session in the `Open` state, as the gateway has it after
/// `Connect` and `accept` (its `Connected` frame already taken).
fn open_session(config: &Arc<ServerConfig>, now: Instant, i: usize) -> ServerSession {
    let mut connect = wire::ConnectT::default();
    connect.protocol = Some(PROTOCOL_VERSION.to_owned());
    connect.token = Some(format!("user:u{i}"));
    connect.client_name = Some("bench".to_owned());
    connect.client_version = Some("0".to_owned());
    let frame = with_encoder(|e| e.body(0, BodyT::Connect(Box::new(connect))));
    let mut s = ServerSession::new(config.clone(), now);
    s.handle_frame(now, frame).expect("a valid Connect frame");
    while s.poll_event().is_some() {}
    s.accept(
        now,
        &Accept {
            session_id: format!("bench-0-{i}"),
            node_id: "bench".to_owned(),
            user_id: format!("u{i}"),
            server_time_ms: 0,
        },
    );
    while s.poll_transmit().is_some() {}
    assert!(s.is_open(), "session {i} is not open");
    s
}

/// Shard 1's loop, reduced to the inbox: poll, drain, count.
fn receive(mut rx: HandoffReceiver, received: &AtomicU64) {
    loop {
        if rx.wait(None).is_err() {
            return;
        }
        let d = rx.drain();
        received.fetch_add(d.delivers, Ordering::Release);
        if d.shutdown {
            return;
        }
    }
}

fn bench_handoff(c: &mut Criterion) {
    let mut g = c.benchmark_group("shard_handoff");
    for batch in BATCHES {
        let (mut tx, rx) = handoff_pair(SHARD_CHANNEL, "chat:lobby", message_frame()).expect("epoll and eventfd");
        let received = Arc::new(AtomicU64::new(0));
        let shard1 = {
            let received = received.clone();
            std::thread::Builder::new()
                .name("shard-1".into())
                .spawn(move || receive(rx, &received))
                .expect("spawn shard-1")
        };
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(BenchmarkId::from_parameter(batch), |b| {
            b.iter_custom(|iters| {
                let target = received.load(Ordering::Acquire) + iters * batch as u64;
                let start = Instant::now();
                for _ in 0..iters {
                    for _ in 0..batch {
                        tx.send_deliver();
                    }
                    tx.flush();
                }
                // Whatever waited in the overflow queue, then the receiver.
                while tx.flush() {
                    std::thread::yield_now();
                }
                while received.load(Ordering::Acquire) < target {
                    std::thread::yield_now();
                }
                start.elapsed()
            });
        });
        tx.shutdown();
        shard1.join().expect("shard-1 panicked");
    }
    g.finish();
}

fn bench_room_fanout(c: &mut Criterion) {
    let frame = message_frame();
    let config = Arc::new(ServerConfig::default());
    let now = Instant::now();
    let mut g = c.benchmark_group("room_fanout");
    for n in MEMBERS {
        let mut sessions: Vec<ServerSession> = (0..n).map(|i| open_session(&config, now, i)).collect();
        // Every member takes the frame (not dropped, not closed).
        for s in &mut sessions {
            assert_eq!(s.send(frame.clone(), false), SendOutcome::Queued);
            while s.poll_transmit().is_some() {}
        }
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                for s in &mut sessions {
                    black_box(s.send(black_box(&frame).clone(), false));
                }
                for s in &mut sessions {
                    while let Some(f) = s.poll_transmit() {
                        black_box(f);
                    }
                }
            });
        });
    }
    g.finish();
}

fn bench_flush_assembly(c: &mut Criterion) {
    let frame = message_frame();
    let config = Arc::new(ServerConfig::default());
    let now = Instant::now();
    let mut sessions: Vec<ServerSession> = (0..FLUSH_SESSIONS).map(|i| open_session(&config, now, i)).collect();
    let mut buf = Vec::new();
    let mut g = c.benchmark_group("flush_assembly");
    g.throughput(Throughput::Elements(FLUSH_BATCH as u64));
    g.bench_function(BenchmarkId::from_parameter(FLUSH_BATCH), |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let k = left.min(FLUSH_SESSIONS as u64) as usize;
                for s in &mut sessions[..k] {
                    for _ in 0..FLUSH_BATCH {
                        s.send(frame.clone(), false);
                    }
                }
                let start = Instant::now();
                for s in &mut sessions[..k] {
                    let total = assemble_write(s, &mut buf);
                    black_box(&buf);
                    black_box(total);
                }
                elapsed += start.elapsed();
                left -= k as u64;
            }
            elapsed
        });
    });
    g.finish();
    // One batch: 16 × (4 B header, a 16-bit length, + 216 B frame).
    assert!((126..=usize::from(u16::MAX)).contains(&frame.len()));
    for _ in 0..FLUSH_BATCH {
        sessions[0].send(frame.clone(), false);
    }
    let total = assemble_write(&mut sessions[0], &mut buf);
    assert_eq!(total, FLUSH_BATCH * (4 + frame.len()));
    assert_eq!(&buf[4..4 + frame.len()], &frame[..]);
}

fn main() {
    // Seven benchmarks of 1 s warm-up + 4 s measurement: about a minute.
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(30)
        .configure_from_args();
    bench_handoff(&mut c);
    bench_room_fanout(&mut c);
    bench_flush_assembly(&mut c);
    c.final_summary();
}
