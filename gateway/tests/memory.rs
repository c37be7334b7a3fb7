//! Clients that send without reading cannot grow the node's memory. Each
//! test runs `herald serve` as a child process and measures that process's
//! resident memory while attacking it (an in-process node would share its
//! RSS with the test harness and every test running beside it).

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::{HttpConn, NodeProcess};

/// Growth allowed while an attack runs: buffers that are bounded per
/// connection, allocator slack. The defects these tests guard against grew
/// the node by hundreds of MB to GB.
const ALLOWED_GROWTH: u64 = 32 << 20;

/// Writes `chunk` again and again on non-blocking sockets, never reading,
/// until `total` bytes are accepted, then goes on watching until `budget`
/// has passed (a node that buffers answers keeps growing while it works
/// through what it took). Returns the bytes the kernel accepted and the
/// highest node RSS seen.
fn flood(node: &NodeProcess, socks: &mut [TcpStream], chunk: &[u8], total: usize, budget: Duration) -> (usize, u64) {
    let start = Instant::now();
    let mut sent = 0;
    let mut peak = node.rss();
    let mut offsets = vec![0usize; socks.len()];
    while start.elapsed() < budget {
        if sent >= total {
            peak = peak.max(node.rss());
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let mut progress = false;
        for (sock, off) in socks.iter_mut().zip(offsets.iter_mut()) {
            match sock.write(&chunk[*off..]) {
                Ok(n) => {
                    sent += n;
                    *off = (*off + n) % chunk.len();
                    progress = true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("write failed: {e}"),
            }
        }
        peak = peak.max(node.rss());
        if !progress {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    (sent, peak.max(node.rss()))
}

/// The attack: 20 connections pipeline `GET /metrics` without ever
/// reading the answers (each answer is ~10 KB of text).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_without_reading_do_not_grow_the_node() {
    let node = NodeProcess::start(2, &[]).await;
    let request = b"GET /metrics HTTP/1.1\r\nHost: h\r\n\r\n";
    let chunk: Vec<u8> = request.iter().copied().cycle().take(request.len() * 2_000).collect();
    let mut socks: Vec<TcpStream> = (0..20)
        .map(|_| {
            let s = TcpStream::connect(node.addr).unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let before = node.rss();
    let node_ref = &node;
    let (sent, peak) =
        tokio::task::block_in_place(|| flood(node_ref, &mut socks, &chunk, 68 << 20, Duration::from_secs(3)));
    let grown = peak.saturating_sub(before);
    assert!(
        grown < ALLOWED_GROWTH,
        "the node grew by {} MiB while {} MiB of pipelined requests were sent",
        grown >> 20,
        sent >> 20
    );
    // Everyone else is still served.
    let mut other = HttpConn::open(node.addr).await;
    assert_eq!(other.request("GET", "/health", None, None).await.status, 200);
    // And the flooders still get their answers, in order, once they read.
    let mut flooder = HttpConn::from_reader(tokio::io::BufReader::new(
        tokio::net::TcpStream::from_std(socks.pop().unwrap()).unwrap(),
    ));
    for _ in 0..3 {
        assert_eq!(flooder.read_response().await.status, 200);
    }
}

/// A client that pings without ever reading must not make the node queue
/// pongs (RFC 6455 lets a server answer only the latest ping).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_without_reading_do_not_grow_the_node() {
    let node = NodeProcess::start(1, &[]).await;
    let mut sock = TcpStream::connect(node.addr).unwrap();
    sock.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        std::io::Read::read_exact(&mut sock, &mut b).unwrap();
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    sock.set_nonblocking(true).unwrap();
    // Masked pings with 125-byte payloads (mask 0 keeps the payload as is).
    let mut ping = vec![0x89, 0x80 | 125, 0, 0, 0, 0];
    ping.extend_from_slice(&[7u8; 125]);
    let chunk: Vec<u8> = ping.iter().copied().cycle().take(ping.len() * 8_000).collect();
    let before = node.rss();
    let node_ref = &node;
    let mut socks = [sock];
    // 40 MB of pings: queued pongs would add at least as much.
    let (sent, peak) =
        tokio::task::block_in_place(|| flood(node_ref, &mut socks, &chunk, 40 << 20, Duration::from_secs(3)));
    assert!(
        sent >= 40 << 20,
        "the node keeps reading pings: only {} MiB taken",
        sent >> 20
    );
    let grown = peak.saturating_sub(before);
    assert!(grown < ALLOWED_GROWTH, "the node grew by {} MiB", grown >> 20);
    // Another client is served normally meanwhile.
    let (c, _e) = support::client(&node.url(), "other").await;
    c.subscribe("chat:ping", herald_protocol::SubscribeOptions::default())
        .await
        .unwrap();
}
