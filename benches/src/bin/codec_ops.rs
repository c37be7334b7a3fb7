//! Runs one codec operation N times, for instruction counting under
//! valgrind (`benches/scripts/instr-per-op`): unlike wall-clock time, the
//! instruction count is repeatable on a shared or noisy machine.
//!
//! Usage: `codec_ops CASE N`, CASE one of the names printed by `codec_ops list`.

#![forbid(unsafe_code)]

use std::hint::black_box;
use std::process::ExitCode;

use herald_benches::fixtures::{decode_message, decode_publish, message_frame, message_ref, payload, publish_frame};
use herald_protocol::Encoder;
use mimalloc::MiMalloc;

// As in the gateway, the load generator and the criterion bench.
#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

const CASES: [&str; 5] = [
    "encode-message-64",
    "encode-message-1024",
    "decode-message-64",
    "decode-message-1024",
    "decode-publish-64",
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("list") {
        for c in CASES {
            println!("{c}");
        }
        return ExitCode::SUCCESS;
    }
    let (Some(case), Some(Ok(n))) = (args.first(), args.get(1).map(|n| n.parse::<u64>())) else {
        eprintln!("usage: codec_ops CASE N | codec_ops list");
        return ExitCode::from(2);
    };
    // Setup (identical for every N, so it cancels out in N1 - N0).
    let p64 = payload(64);
    let p1k = payload(1024);
    let (m64, m1k) = (message_ref(&p64), message_ref(&p1k));
    let (f64b, f1k, pub64) = (message_frame(64), message_frame(1024), publish_frame(64));
    let mut enc = Encoder::new();
    drop(enc.message(&m1k)); // grow the builder once
    let op: Box<dyn FnMut()> = match case.as_str() {
        "encode-message-64" => Box::new(|| drop(black_box(enc.message(black_box(&m64))))),
        "encode-message-1024" => Box::new(|| drop(black_box(enc.message(black_box(&m1k))))),
        "decode-message-64" => Box::new(|| {
            black_box(decode_message(black_box(&f64b)));
        }),
        "decode-message-1024" => Box::new(|| {
            black_box(decode_message(black_box(&f1k)));
        }),
        "decode-publish-64" => Box::new(|| {
            black_box(decode_publish(black_box(&pub64)));
        }),
        other => {
            eprintln!("unknown case {other}; try `codec_ops list`");
            return ExitCode::from(2);
        }
    };
    let mut op = op;
    for _ in 0..n {
        op();
    }
    ExitCode::SUCCESS
}
