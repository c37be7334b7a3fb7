//! The `sse://` target against a real Herald node on loopback (in this
//! process): SSE streams read, Herald WebSocket connections publish; and
//! against a scripted server that sends what a node sends only rarely
//! (a refusal, a `close` event, events split at odd places).

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use herald_gateway::{NodeConfig, NodeHandle};

mod support;
use support::{loadgen, u};

fn node() -> NodeHandle {
    let mut config = NodeConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        shards: 2,
        ..NodeConfig::default()
    };
    // A few publishers send far above the default per-connection limit.
    config.session.limits.publish_rate_per_sec = 1_000_000;
    config.session.limits.publish_burst = 1_000_000;
    NodeHandle::spawn(config).expect("node starts")
}

#[test]
fn fanout_over_sse_delivers_every_message_to_every_stream_of_its_room() {
    let node = node();
    let target = format!("sse://{}", node.addr);
    let r = loadgen(
        &[
            "fanout",
            "--target",
            &target,
            "--subscribers",
            "40",
            "--rooms",
            "4",
            "--publishers",
            "2",
            "--rate",
            "200",
            "--duration",
            "1500ms",
            "--connect-timeout",
            "5s",
        ],
        "sse-fanout",
    );
    assert_eq!(u(&r["connections"]["ok"]), 42, "{}", r["connections"]);
    assert_eq!(u(&r["connect_latency_us"]["count"]), 42);
    let s = &r["rate"]["steps"][0];
    assert_eq!(u(&s["sent"]), 300);
    assert_eq!(u(&s["acks_ok"]), 300, "publishers are Herald WebSocket connections");
    assert_eq!(u(&s["ack_latency_us"]["count"]), 300, "one publish→ack latency per ack");
    // Each message reaches the 10 streams of its room, once, in order.
    assert_eq!(u(&s["expected"]), 300 * 10);
    assert_eq!(u(&s["delivered"]), u(&s["expected"]), "errors: {}", s["errors"]);
    assert_eq!(u(&s["lost"]), 0);
    assert_eq!(u(&s["duplicated"]), 0);
    assert_eq!(u(&s["out_of_order"]), 0);
    assert!(s["errors"].as_object().unwrap().is_empty(), "{}", s["errors"]);
    assert_eq!(u(&r["latency_us"]["count"]), 3000, "one latency per delivery");
    assert_eq!(r["order_checked"], true);
    node.shutdown();
}

/// Streams spread over two targets (one node under two names), WebSocket
/// publishers on the second: the report splits the deliveries by target.
#[test]
fn fanout_over_two_sse_targets_splits_same_and_cross_node() {
    let node = node();
    let port = node.addr.port();
    let targets = format!("sse://127.0.0.1:{port},sse://localhost:{port}");
    let r = loadgen(
        &[
            "fanout",
            "--target",
            &targets,
            "--subscribers",
            "20",
            "--rooms",
            "2",
            "--publishers-on",
            "1",
            "--rate",
            "100",
            "--duration",
            "1s",
        ],
        "sse-two-targets",
    );
    assert_eq!(u(&r["connections"]["ok"]), 21, "{}", r["connections"]);
    assert_eq!(u(&r["lost"]), 0);
    let l = &r["locality"];
    assert_eq!(u(&l["same_node"]["expected"]), 100 * 5);
    assert_eq!(u(&l["cross_node"]["expected"]), 100 * 5);
    assert_eq!(u(&l["same_node"]["latency_us"]["count"]), 500);
    assert_eq!(u(&l["cross_node"]["latency_us"]["count"]), 500);
    node.shutdown();
}

#[test]
fn connect_holds_sse_streams_and_measures_the_node() {
    let node = node();
    let target = format!("sse://{}", node.addr);
    let pid = std::process::id().to_string();
    let r = loadgen(
        &[
            "connect",
            "--target",
            &target,
            "--connections",
            "60",
            "--rooms",
            "3",
            "--hold",
            "1s",
            "--connect-timeout",
            "5s",
            "--target-pid",
            &pid,
        ],
        "sse-connect",
    );
    let c = &r["connections"];
    assert_eq!(u(&c["ok"]), 60, "{c}");
    assert_eq!(u(&c["alive_after_hold"]), 60, "{c}");
    assert!(c["dropped_during_hold"].as_object().unwrap().is_empty(), "{c}");
    // Ready means subscribed: the latency of every stream was recorded.
    assert_eq!(u(&r["connect_latency_us"]["count"]), 60);
    assert!(r["target"]["rss_bytes_per_connection"].is_number(), "{}", r["target"]);
    assert_eq!(r["options"]["rooms"], 3);
    node.shutdown();
}

#[test]
fn sse_refusals_name_the_status_and_code() {
    let node = node();
    let target = format!("sse://{}", node.addr);
    // A space is not allowed in a room name: the node answers 400.
    let r = loadgen(
        &[
            "connect",
            "--target",
            &target,
            "--connections",
            "3",
            "--hold",
            "0s",
            "--room-prefix",
            "chat:bad name-",
        ],
        "sse-refused",
    );
    assert_eq!(u(&r["connections"]["ok"]), 0);
    assert_eq!(
        u(&r["connections"]["failed_by_reason"]["sse refused (HTTP/1.1 400 invalid_room_name)"]),
        3,
        "{}",
        r["connections"]
    );
    node.shutdown();
}

/// A server that answers every stream with `script`, written in pieces of
/// `piece` bytes, then holds the connection until the client goes (or
/// closes after the script if `close`). Serves `n` connections.
fn scripted(script: &'static [u8], piece: usize, n: usize, close: bool) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        let mut held = Vec::new();
        for _ in 0..n {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let k = s.read(&mut buf).unwrap();
                assert!(k > 0, "request ended early");
                req.extend_from_slice(&buf[..k]);
            }
            let head = String::from_utf8(req).unwrap();
            assert!(head.starts_with("GET /sse?room=chat%3Alg-"), "{head}");
            assert!(head.contains("&token=lg-"), "{head}");
            s.set_nodelay(true).unwrap();
            for p in script.chunks(piece) {
                s.write_all(p).unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
            if !close {
                held.push(s);
            }
        }
        // Until the generator closes its ends (bounded: it holds 1 s).
        let deadline = Instant::now() + Duration::from_secs(10);
        for mut s in held {
            let mut b = [0u8; 64];
            while Instant::now() < deadline && matches!(s.read(&mut b), Ok(k) if k > 0) {}
        }
    });
    (addr, h)
}

const SUBSCRIBED: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n\
retry: 1000\n: herald\n\n\
event: subscribed\ndata: {\"room\":\"chat:lg-0\",\"epoch\":1,\"offset\":0,\"resumed\":false,\"recovered\":false}\n\n";

#[test]
fn a_close_event_drops_the_stream_with_its_code() {
    const SCRIPT: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n\
retry: 1000\n: herald\n\n\
event: subscribed\ndata: {\"room\":\"chat:lg-0\",\"epoch\":1,\"offset\":0,\"resumed\":false,\"recovered\":false}\n\n\
: heartbeat\n\n\
event: close\ndata: {\"code\":\"slow_consumer\",\"reason\":\"the stream fell too far behind\"}\n\n";
    // Pieces of 7 bytes: the head, lines and events arrive split.
    let (addr, server) = scripted(SCRIPT, 7, 2, true);
    let r = loadgen(
        &[
            "connect",
            "--target",
            &format!("sse://{addr}"),
            "--connections",
            "2",
            "--connect-window",
            "1",
            "--hold",
            "1s",
            "--room-prefix",
            "chat:lg-",
        ],
        "sse-close",
    );
    server.join().unwrap();
    let c = &r["connections"];
    assert_eq!(u(&c["alive_after_hold"]), 0, "{c}");
    // Each stream was ready (subscribed), then dropped: during the open or
    // the hold, depending on when the close event came.
    let dropped = u(&c["dropped_during_hold"]["dropped: sse close slow_consumer"]);
    let at_open = c["failed_by_reason"]["dropped: sse close slow_consumer"]
        .as_u64()
        .unwrap_or(0);
    assert_eq!(dropped + at_open, 2, "{c}");
}

#[test]
fn a_held_stream_split_into_single_bytes_becomes_ready() {
    let (addr, server) = scripted(SUBSCRIBED, 1, 1, false);
    let r = loadgen(
        &[
            "connect",
            "--target",
            &format!("sse://{addr}"),
            "--connections",
            "1",
            "--hold",
            "1s",
            "--room-prefix",
            "chat:lg-",
        ],
        "sse-bytes",
    );
    server.join().unwrap();
    let c = &r["connections"];
    assert_eq!((u(&c["ok"]), u(&c["alive_after_hold"])), (1, 1), "{c}");
}
