//! The generated TypeScript bindings (schemas/generated/ts) against this
//! crate's codec, both ways, as a browser client meets them: Message frames
//! from the Rust encoder (the hand-written fast path) decoded in Node.js, and
//! a Publish built in TypeScript decoded by the verifying Rust decoder.
//!
//! Needs Node.js and the compiled check (schemas/check/wire.ts), which
//! scripts/test builds with `npm ci --prefix schemas && npm run --prefix
//! schemas build` before the Rust tests.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::path::{Path, PathBuf};
use std::process::Command;

use herald_protocol::{DecodeLimits, MessageRef, decode, with_encoder};
use serde_json::json;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn message_case(dir: &Path, file: &str, m: &MessageRef<'_>) -> serde_json::Value {
    std::fs::write(dir.join(file), with_encoder(|e| e.message(m))).unwrap();
    json!({
        "file": file,
        "request_id": 0,
        "room": m.room,
        // Strings: u64 values past 2^53 do not survive a JSON number in JS.
        "epoch": m.epoch.to_string(),
        "offset": m.offset.to_string(),
        "publisher": m.publisher,
        "timestamp_ms": m.timestamp_ms.to_string(),
        "payload_hex": hex(m.payload),
        "content_type": m.content_type,
        "volatile": m.volatile,
    })
}

#[test]
fn typescript_decodes_rust_frames_and_rust_decodes_typescript_frames() {
    let script = root().join("target/ts-check/check/wire.js");
    let node_modules = root().join("schemas/node_modules");
    assert!(
        script.is_file() && node_modules.join("flatbuffers").is_dir(),
        "the TypeScript check is not built: run scripts/test, or `npm ci --prefix schemas && npm run --prefix schemas build`"
    );
    let dir = std::env::temp_dir().join(format!("herald-ts-bindings-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let messages = [
        message_case(
            &dir,
            "stored.bin",
            &MessageRef {
                room: "chat:café-☕",
                epoch: 0x0123_4567_89ab_cdef,
                offset: 42,
                publisher: "alice",
                timestamp_ms: 1_795_000_000_123,
                payload: &[0, 1, 2, 0x7f, 0x80, 0xff],
                content_type: None,
                volatile: false,
            },
        ),
        message_case(
            &dir,
            "volatile.bin",
            &MessageRef {
                room: "dash:cpu",
                epoch: u64::MAX,
                offset: 0,
                publisher: "",
                timestamp_ms: 1,
                payload: b"{\"load\":0.5}",
                content_type: Some("application/json"),
                volatile: true,
            },
        ),
        message_case(
            &dir,
            "empty.bin",
            &MessageRef {
                room: "user:u-1",
                epoch: 1,
                offset: 1,
                publisher: "server-job",
                timestamp_ms: 0,
                payload: &[],
                content_type: Some(""),
                volatile: false,
            },
        ),
    ];
    let payload = [0xde, 0xad, 0xbe, 0xef, 0x00];
    let case = json!({
        "messages": messages,
        "publish": {
            "request_id": 4_000_000_000u32,
            "room": "game:lobby-7",
            "payload_hex": hex(&payload),
            "content_type": "application/octet-stream",
            "idempotency_key": "retry-1",
            "volatile": true,
        },
    });
    std::fs::write(dir.join("case.json"), case.to_string()).unwrap();

    let out = Command::new("node")
        .arg(&script)
        .arg(&dir)
        .env("NODE_PATH", &node_modules)
        .output()
        .expect("node (Node.js 20) is installed");
    assert!(
        out.status.success(),
        "the TypeScript check failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let bytes = std::fs::read(dir.join("from-ts.bin")).unwrap();
    let frame = decode(&bytes, &DecodeLimits::CLIENT_TO_SERVER).expect("the Rust decoder accepts the TypeScript frame");
    assert_eq!(frame.request_id(), 4_000_000_000);
    let p = frame.body_as_publish().expect("a Publish body");
    assert_eq!(p.room(), "game:lobby-7");
    assert_eq!(p.payload().map(|v| v.bytes().to_vec()), Some(payload.to_vec()));
    assert_eq!(p.content_type(), Some("application/octet-stream"));
    assert_eq!(p.idempotency_key(), Some("retry-1"));
    assert!(p.volatile());
    let _ = std::fs::remove_dir_all(&dir);
}
