//! `herald-loadgen capacity` on the reports docs/CAPACITY.md's worked
//! example reads (benches/results/capacity), through the binary.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::path::PathBuf;
use std::process::{Command, Output};

mod support;
use support::{read, tmp, u};

fn results(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../benches/results/capacity")
        .join(name)
        .display()
        .to_string()
}

fn capacity(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herald-loadgen"))
        .arg("capacity")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_worked_example_of_one_million_connections() {
    let json = tmp("capacity.json");
    let (idle, fanout) = (
        results("herald-idle-15000.json"),
        results("herald-rooms-of-10-25000.json"),
    );
    let out = capacity(&[
        "--connections",
        "1000000",
        "--rooms",
        "100000",
        "--publish-rate",
        "0.5",
        "--fanout",
        "10",
        "--connect-report",
        &idle,
        "--fanout-report",
        &fanout,
        "--json",
        json.to_str().unwrap(),
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    // 827 B per connection and 21.85 µs per delivery, from the reports.
    assert!(text.contains("827 B"), "{text}");
    assert!(text.contains("21.9 µs = 45,767 deliveries/s per core"), "{text}");
    assert!(text.contains("needs: 3 nodes, 24 cores"), "{text}");
    let j = read(&json);
    assert_eq!(u(&j["needs"]["nodes"]), 3);
    assert_eq!(j["needs"]["deliveries_per_sec"], 500_000.0);
    assert!(j["needs"]["redis_shards"].is_null(), "no Redis figure given");

    // The Redis figures, once measured, decide the shards.
    let out = capacity(&[
        "--connections",
        "1000000",
        "--rooms",
        "100000",
        "--publish-rate",
        "0.5",
        "--fanout",
        "10",
        "--connect-report",
        &idle,
        "--fanout-report",
        &fanout,
        "--redis-ops-per-publish",
        "3",
        "--json",
        "-",
    ]);
    assert!(out.status.success());
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // 150,000 commands/s over 70,000 per shard.
    assert_eq!(u(&j["needs"]["redis_shards"]), 3);
}

#[test]
fn missing_or_wrong_reports_are_refused_with_what_to_run() {
    let out = capacity(&[
        "--connections",
        "1000",
        "--rooms",
        "10",
        "--publish-rate",
        "1",
        "--fanout",
        "10",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("--connect-report") && err.contains("herald-loadgen connect"),
        "{err}"
    );

    let idle = results("herald-idle-15000.json");
    let out = capacity(&[
        "--connections",
        "1000",
        "--rooms",
        "10",
        "--publish-rate",
        "1",
        "--fanout",
        "10",
        "--connect-report",
        &idle,
    ]);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("--fanout-report"), "{err}");

    // A connect report where a fanout report belongs.
    let out = capacity(&["--connections", "1000", "--fanout-report", &idle]);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("is a \"connect\" report"), "{err}");

    // No traffic: the connect report alone is enough.
    let out = capacity(&["--connections", "1000000", "--connect-report", &idle]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("needs: 1 node, 8 cores"), "{text}");
}
