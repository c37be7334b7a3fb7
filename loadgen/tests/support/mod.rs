//! What the load generator's integration tests share: running the binary
//! and reading its JSON report.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)] // shared by several test crates; each uses some

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

pub fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("herald-loadgen-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Runs `herald-loadgen ARGS --json FILE --quiet` and returns the report.
pub fn loadgen(args: &[&str], name: &str) -> Value {
    let json = tmp(&format!("{name}.json"));
    let out = Command::new(env!("CARGO_BIN_EXE_herald-loadgen"))
        .args(args)
        .arg("--json")
        .arg(&json)
        .arg("--quiet")
        .output()
        .expect("herald-loadgen runs");
    assert!(
        out.status.success(),
        "herald-loadgen {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    read(&json)
}

pub fn read(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

pub fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}
