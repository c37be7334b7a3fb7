//! Fuzz target `decode`: arbitrary bytes into the herald/1 decoder (both
//! `DecodeLimits` presets, unpack, re-encode round trip), the server and
//! client session state machines, and the QUIC length-prefixed stream reader.
//! The harness and its invariants are in `src/lib.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    herald_fuzz::fuzz_decode(data);
});
