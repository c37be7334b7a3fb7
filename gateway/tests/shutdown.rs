//! Graceful shutdown over real loopback sockets: clients get GoAway with
//! reconnect advice, the node stops taking new work while it drains, and
//! stopping is bounded by the grace period even if a client never leaves;
//! the `herald` binary does the same on SIGTERM and exits 0.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod support;

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use herald_gateway::NodeConfig;
use herald_protocol::wire::BodyT;
use herald_protocol::{ClientEvent, ErrorCode, SubscribeOptions};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// GET `path` on a fresh connection: the status, or None if the node did not
/// answer (connection refused, reset or closed without a response).
async fn try_get(addr: SocketAddr, path: &str) -> Option<u16> {
    let attempt = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: herald.test\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        let text = String::from_utf8_lossy(&buf);
        text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_goaway_stops_accepting_and_is_bounded_by_the_grace_period() {
    let grace = Duration::from_secs(1);
    let node = node_with(NodeConfig {
        shards: 4,
        shutdown_grace: grace,
        reconnect_after: Duration::from_millis(1500),
        ..NodeConfig::default()
    });
    let addr = node.addr;
    assert_eq!(try_get(addr, "/ready").await, Some(200));
    let (alice, mut events) = client(&node.url(), "alice").await;
    alice.subscribe("chat:bye", SubscribeOptions::default()).await.unwrap();
    // A client that reads the GoAway but never closes its socket.
    let (mut stubborn, _) = ws_connected(&node.url(), "stubborn").await;

    let stopping = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        node.shutdown();
        start.elapsed()
    });

    let (code, after) = next_matching(&mut events, |ev| match ev {
        ClientEvent::GoAway {
            code, reconnect_after, ..
        } => Some((code, reconnect_after)),
        _ => None,
    })
    .await;
    assert_eq!(code, ErrorCode::ServerShutdown);
    assert_eq!(
        after,
        Some(Duration::from_millis(1500)),
        "the configured reconnect advice"
    );
    match ws_next_non_ping(&mut stubborn).await {
        Some((0, BodyT::GoAway(g))) => {
            assert_eq!(g.code, ErrorCode::ServerShutdown);
            assert_eq!(g.reconnect_after_ms, 1500);
        }
        other => panic!("expected GoAway, got {other:?}"),
    }

    // While draining, the node is not ready: /ready says 503 or nothing
    // answers at all (the listeners are closed).
    let deadline = Instant::now() + WAIT;
    loop {
        match try_get(addr, "/ready").await {
            Some(200) => assert!(Instant::now() < deadline, "/ready still 200 while draining"),
            Some(status) => {
                assert_eq!(status, 503);
                break;
            }
            None => break,
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Every shard closes its listener (one that is a moment behind may still
    // take a connection, and answer 503).
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting connections while draining");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let elapsed = tokio::time::timeout(grace + Duration::from_secs(2), stopping)
        .await
        .expect("shutdown returns")
        .unwrap();
    assert!(
        elapsed >= grace && elapsed <= grace + Duration::from_secs(1),
        "a client that never closes holds the node for the grace period only: {elapsed:?}"
    );
    // The stubborn socket got its close frame after the GoAway.
    assert!(ws_next_non_ping(&mut stubborn).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_early_when_every_client_leaves() {
    let node = node_with(NodeConfig {
        shards: 4,
        shutdown_grace: Duration::from_secs(5),
        ..NodeConfig::default()
    });
    let mut clients = Vec::new();
    for i in 0..8 {
        let (c, events) = client(&node.url(), &format!("u{i}")).await;
        c.subscribe("chat:early", SubscribeOptions::default()).await.unwrap();
        clients.push((c, events));
    }
    // An idle HTTP keep-alive connection does not hold the drain either.
    let mut http = HttpConn::open(node.addr).await;
    assert_eq!(http.request("GET", "/health", None, None).await.status, 200);

    let elapsed = tokio::time::timeout(
        WAIT,
        tokio::task::spawn_blocking(move || {
            let start = Instant::now();
            node.shutdown();
            start.elapsed()
        }),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        elapsed < Duration::from_secs(2),
        "clients close on GoAway, so the drain ends well before the 5 s grace: {elapsed:?}"
    );
    for (_, events) in &mut clients {
        next_matching(events, |ev| matches!(ev, ClientEvent::GoAway { .. }).then_some(())).await;
    }
    assert!(http.closed_by_server().await);
}

/// Kills the child if the test fails before it exits.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_drains_on_sigterm_and_exits_zero() {
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let data_dir = std::env::temp_dir().join(format!("herald-shutdown-test-{}-{port}", std::process::id()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.args(["serve", "--listen", &addr.to_string(), "--shards", "2", "--data-dir"])
        .arg(&data_dir)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env("HERALD_LIMITS__SHUTDOWN_GRACE", "3s")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("HERALD_") && k != "HERALD_LIMITS__SHUTDOWN_GRACE" {
            cmd.env_remove(k);
        }
    }
    let mut child = Reap(cmd.spawn().unwrap());
    let mut stderr = child.0.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let deadline = Instant::now() + WAIT;
    while try_get(addr, "/health").await != Some(200) {
        assert!(child.0.try_wait().unwrap().is_none(), "herald exited early");
        assert!(
            Instant::now() < deadline,
            "herald answers /health within the wait bound"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (alice, mut events) = client(&format!("ws://{addr}/ws"), "alice").await;
    alice.subscribe("chat:sig", SubscribeOptions::default()).await.unwrap();

    let start = Instant::now();
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.0.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let (code, after) = next_matching(&mut events, |ev| match ev {
        ClientEvent::GoAway {
            code, reconnect_after, ..
        } => Some((code, reconnect_after)),
        _ => None,
    })
    .await;
    assert_eq!(code, ErrorCode::ServerShutdown);
    assert!(after.is_some(), "reconnect advice");
    alice.close().await;

    let exit = loop {
        if let Some(exit) = child.0.try_wait().unwrap() {
            break exit;
        }
        assert!(start.elapsed() < WAIT, "herald exits within the wait bound");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let elapsed = start.elapsed();
    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        elapsed < Duration::from_secs(3),
        "drained before the 3 s grace: {elapsed:?}"
    );
    let log = log.join().unwrap();
    assert!(
        log.contains("api key:"),
        "a development node logs its generated key:\n{log}"
    );
    assert!(log.contains("draining"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "a log written to a pipe carries no colour codes:\n{log}"
    );
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// A SIGTERM that arrives the moment `/health` first answers drains the
/// node: the handler is in place before the node answers anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_right_after_health_answers_still_drains() {
    for _ in 0..5 {
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let data_dir = std::env::temp_dir().join(format!("herald-early-term-{}-{port}", std::process::id()));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
        cmd.args(["serve", "--listen", &addr.to_string(), "--shards", "1", "--data-dir"])
            .arg(&data_dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, _) in std::env::vars() {
            if k.starts_with("HERALD_") {
                cmd.env_remove(k);
            }
        }
        let mut child = Reap(cmd.spawn().unwrap());
        let deadline = Instant::now() + WAIT;
        while try_get(addr, "/health").await != Some(200) {
            assert!(child.0.try_wait().unwrap().is_none(), "herald exited early");
            assert!(
                Instant::now() < deadline,
                "herald answers /health within the wait bound"
            );
            // Poll tightly: the first answer is what matters.
            std::thread::sleep(Duration::from_micros(50));
        }
        // The handler is there already (SigCgt: caught signals, SIGTERM
        // is 15), not installed some time after the node answers.
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.0.id())).unwrap();
        let caught = status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
            .unwrap();
        assert!(
            caught & (1 << (15 - 1)) != 0,
            "SIGTERM not caught yet when /health answered"
        );
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(child.0.id().to_string())
            .status()
            .unwrap();
        assert!(sent.success());
        let exit = loop {
            if let Some(exit) = child.0.try_wait().unwrap() {
                break exit;
            }
            assert!(Instant::now() < deadline, "herald exits within the wait bound");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(
            exit.success(),
            "drained and exited 0, not killed by the signal: {exit:?}"
        );
        let _ = std::fs::remove_dir_all(&data_dir);
    }
}
