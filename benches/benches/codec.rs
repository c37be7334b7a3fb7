//! Codec micro-benchmarks: encode of a delivered `Message`, decode+verify of
//! `Message` and `Publish` frames (with field reads), and, for context, the
//! unverified read. Before timing, the heap allocations per operation are
//! counted and printed (the `allocations` test asserts them).
//!
//! Run: `cargo bench -p herald-benches --bench codec`
//! (see BENCHMARKS.md at the repository root for the recorded figures).

// The only unsafe code here is the `root_as_frame_unchecked` benchmark, which
// reads a frame without the FlatBuffers verifier. It is given for context (the
// cost of verification is `decode` minus this) and only ever reads frames this
// file just encoded, which are valid by construction. The workspace denies
// unsafe code; this bench file is the one place that allows it.
#![allow(unsafe_code)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use herald_benches::fixtures::{
    PAYLOAD_SIZES, decode_message, decode_publish, message_frame, message_ref, payload, publish_frame,
};
use herald_benches::{AllocStats, CountingAlloc, count_allocs, counting_active};
use herald_protocol::{Encoder, wire, with_encoder};
use mimalloc::MiMalloc;

// The allocator the gateway and the load generator use (mimalloc), wrapped to
// count allocations. The counting adds a thread-local increment per call.
#[global_allocator]
static ALLOC: CountingAlloc<MiMalloc> = CountingAlloc(MiMalloc);

fn bench_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode_message");
    for len in PAYLOAD_SIZES {
        let p = payload(len);
        let m = message_ref(&p);
        g.throughput(Throughput::Elements(1));
        // A dedicated encoder, reused across iterations (the builder keeps its
        // capacity after the first frame).
        let mut enc = Encoder::new();
        g.bench_with_input(BenchmarkId::new("encoder", len), &m, |b, m| {
            b.iter(|| enc.message(black_box(m)));
        });
        // The thread-local encoder the server sessions use.
        g.bench_with_input(BenchmarkId::new("with_encoder", len), &m, |b, m| {
            b.iter(|| with_encoder(|e| e.message(black_box(m))));
        });
    }
    g.finish();
}

fn bench_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_verify");
    g.throughput(Throughput::Elements(1));
    for len in PAYLOAD_SIZES {
        let frame = message_frame(len);
        g.bench_with_input(BenchmarkId::new("message", len), &frame, |b, frame| {
            b.iter(|| {
                let (room, offset, payload) = decode_message(black_box(frame)).unwrap_or_default();
                black_box(room);
                black_box(offset);
                black_box(payload);
            });
        });
    }
    let frame = publish_frame(64);
    g.bench_with_input(BenchmarkId::new("publish", 64), &frame, |b, frame| {
        b.iter(|| {
            let (request_id, room, payload) = decode_publish(black_box(frame)).unwrap_or_default();
            black_box(request_id);
            black_box(room);
            black_box(payload);
        });
    });
    g.finish();

    let mut g = c.benchmark_group("read_unchecked");
    g.throughput(Throughput::Elements(1));
    for len in PAYLOAD_SIZES {
        let frame = message_frame(len);
        g.bench_with_input(BenchmarkId::new("message", len), &frame, |b, frame| {
            b.iter(|| {
                // SAFETY: `frame` was produced by `Encoder::message` above, so
                // it is a valid, finished `Frame` buffer.
                let f = unsafe { wire::root_as_frame_unchecked(black_box(frame)) };
                if let Some(m) = f.body_as_message() {
                    black_box(m.room());
                    black_box(m.offset());
                    black_box(m.payload().map(|p| p.bytes()));
                }
            });
        });
    }
    g.finish();
}

/// Heap allocations per operation, measured over `OPS` operations after one
/// warm-up operation (which may grow the encoder's builder once).
fn allocations_per_op(mut op: impl FnMut()) -> (f64, AllocStats) {
    const OPS: u64 = 1000;
    op();
    let ((), stats) = count_allocs(|| {
        for _ in 0..OPS {
            op();
        }
    });
    (stats.requests() as f64 / OPS as f64, stats)
}

fn report_allocations() {
    if !counting_active() {
        println!("allocation counting is not active; skipping the allocation report");
        return;
    }
    println!("heap allocations per operation (after one warm-up op, averaged over 1000 ops):");
    let mut rows: Vec<(String, f64, AllocStats, f64)> = Vec::new();
    for len in PAYLOAD_SIZES {
        let p = payload(len);
        let m = message_ref(&p);
        let mut enc = Encoder::new();
        let (per_op, stats) = allocations_per_op(|| drop(black_box(enc.message(black_box(&m)))));
        rows.push((format!("encode_message/encoder/{len}"), per_op, stats, 1.0));
        let (per_op, stats) = allocations_per_op(|| drop(black_box(with_encoder(|e| e.message(black_box(&m))))));
        rows.push((format!("encode_message/with_encoder/{len}"), per_op, stats, 1.0));
    }
    for len in PAYLOAD_SIZES {
        let frame = message_frame(len);
        let (per_op, stats) = allocations_per_op(|| {
            black_box(decode_message(black_box(&frame)));
        });
        rows.push((format!("decode_verify/message/{len}"), per_op, stats, 0.0));
    }
    let frame = publish_frame(64);
    let (per_op, stats) = allocations_per_op(|| {
        black_box(decode_publish(black_box(&frame)));
    });
    rows.push(("decode_verify/publish/64".to_owned(), per_op, stats, 0.0));
    for (name, per_op, stats, expected) in rows {
        #[allow(clippy::float_cmp)] // exact small integers
        let verdict = if per_op == expected {
            "as expected"
        } else {
            "UNEXPECTED"
        };
        println!(
            "  {name:<34} {per_op:>5.2} allocs/op  ({} allocs, {} reallocs, {} bytes over 1000 ops; expected {expected}: {verdict})",
            stats.allocs, stats.reallocs, stats.bytes
        );
    }
}

fn main() {
    report_allocations();
    let mut c = Criterion::default().configure_from_args();
    bench_encode(&mut c);
    bench_decode(&mut c);
    c.final_summary();
}
