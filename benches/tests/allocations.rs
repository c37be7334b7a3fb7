//! Heap allocations of the codec hot paths, asserted exactly:
//!
//! - decode+verify of a delivered `Message` (as a client) and of a `Publish`
//!   (as a server), including reading room, offset/request id and payload:
//!   0 allocations;
//! - encode of a `Message` with a warmed-up encoder: exactly 1 allocation (the
//!   `Bytes` copied out of the builder), both with a dedicated [`Encoder`] and
//!   with the thread-local one from [`with_encoder`].
//!
//! Counters are per thread, so these tests can run in parallel.

use std::hint::black_box;

use herald_benches::fixtures::{
    PAYLOAD_SIZES, decode_message, decode_publish, message_frame, message_ref, payload, publish_frame, publish_ref,
};
use herald_benches::{CountingAlloc, count_allocs, counting_active};
use herald_protocol::{DecodeLimits, Encoder, decode, with_encoder};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::SYSTEM;

#[test]
fn counting_allocator_is_installed() {
    assert!(
        counting_active(),
        "CountingAlloc must be this binary's global allocator"
    );
}

#[test]
fn decode_verify_message_allocates_nothing() {
    assert!(counting_active());
    for len in PAYLOAD_SIZES {
        let frame = message_frame(len);
        let expected = payload(len);
        let (fields, stats) = count_allocs(|| decode_message(black_box(&frame)).map(|(r, o, p)| (r, o, p.len())));
        assert_eq!(fields, Some(("chat:lobby", 1_234_567, len)), "{len} B");
        assert_eq!(
            stats.requests(),
            0,
            "decode+verify of a {len} B Message allocated: {stats:?}"
        );
        // The payload is read in place, not copied.
        let (_, _, p) = decode_message(&frame).expect("valid frame");
        assert_eq!(p, &expected[..]);
    }
}

#[test]
fn decode_verify_publish_allocates_nothing() {
    assert!(counting_active());
    for len in PAYLOAD_SIZES {
        let frame = publish_frame(len);
        let (fields, stats) = count_allocs(|| decode_publish(black_box(&frame)).map(|(id, r, p)| (id, r, p.len())));
        assert_eq!(fields, Some((1, "chat:lobby", len)), "{len} B");
        assert_eq!(
            stats.requests(),
            0,
            "decode+verify of a {len} B Publish allocated: {stats:?}"
        );
    }
}

#[test]
fn decode_with_both_limit_presets_allocates_nothing() {
    assert!(counting_active());
    let frame = message_frame(64);
    for limits in [DecodeLimits::CLIENT_TO_SERVER, DecodeLimits::SERVER_TO_CLIENT] {
        let (ok, stats) = count_allocs(|| decode(black_box(&frame), &limits).is_ok());
        assert!(ok);
        assert_eq!(stats.requests(), 0, "{limits:?}: {stats:?}");
    }
}

#[test]
fn encode_message_allocates_exactly_once() {
    assert!(counting_active());
    for len in PAYLOAD_SIZES {
        let p = payload(len);
        let m = message_ref(&p);
        let mut enc = Encoder::new();
        // The first frame may grow the builder (1 KiB initial capacity); the
        // builder keeps its capacity afterwards.
        let first = enc.message(&m);
        for _ in 0..3 {
            let (out, stats) = count_allocs(|| enc.message(black_box(&m)));
            assert_eq!(out, first, "encoding is deterministic");
            assert_eq!(stats.allocs, 1, "encode of a {len} B Message: {stats:?}");
            assert_eq!(stats.reallocs, 0, "encode of a {len} B Message: {stats:?}");
            assert_eq!(stats.deallocs, 0, "encode of a {len} B Message: {stats:?}");
            // The one allocation is the frame itself.
            assert_eq!(stats.bytes, out.len() as u64, "encode of a {len} B Message: {stats:?}");
        }
    }
}

#[test]
fn encode_with_thread_local_encoder_allocates_exactly_once() {
    assert!(counting_active());
    for len in PAYLOAD_SIZES {
        let p = payload(len);
        let m = message_ref(&p);
        drop(with_encoder(|e| e.message(&m))); // warm-up: creates and grows the builder
        let (out, stats) = count_allocs(|| with_encoder(|e| e.message(black_box(&m))));
        assert_eq!(stats.requests(), 1, "with_encoder + message, {len} B: {stats:?}");
        assert_eq!(stats.bytes, out.len() as u64);
    }
}

#[test]
fn encode_publish_allocates_exactly_once() {
    assert!(counting_active());
    let p = payload(64);
    let pr = publish_ref(&p);
    let mut enc = Encoder::new();
    drop(enc.publish(1, &pr));
    let (out, stats) = count_allocs(|| enc.publish(1, black_box(&pr)));
    assert_eq!(stats.requests(), 1, "{stats:?}");
    assert_eq!(stats.bytes, out.len() as u64);
}
