//! RFC 9112 conformance of the node's HTTP/1.1 side, over raw TCP sockets:
//! pipelining and its back-pressure, message framing (`Content-Length`),
//! `Host`, and the `Connection` header as a list of tokens for both HTTP/1.1
//! and HTTP/1.0 persistence.
//!
//! Every wait is bounded by [`support::raw::BOUND`]; nothing here sleeps to
//! synchronise.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod support;

use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::API_KEY;
use support::raw::{HttpResponse, Peer, parse_response, request};

/// A one-shard node with the API key of [`support::api_config`].
fn one_shard() -> herald_gateway::NodeHandle {
    support::raw::one_shard_with(support::api_config())
}

const HEALTH: &str = "GET /health HTTP/1.1\r\nHost: herald.test\r\n\r\n";

/// Sends `bytes` on `p` and reads one response; panics with `what` on failure.
fn exchange(p: &mut Peer, bytes: &str, what: &str) -> HttpResponse {
    p.send(bytes.as_bytes()).unwrap_or_else(|e| panic!("{what}: {e}"));
    p.read_response().unwrap_or_else(|e| panic!("{what}: no response: {e}"))
}

/// Whether a second request on `p` is answered (the connection stayed open).
fn still_open(p: &mut Peer) -> Result<HttpResponse, String> {
    p.send(HEALTH.as_bytes())?;
    let resp = p
        .read_response()
        .map_err(|e| format!("a second request was not answered: {e}"))?;
    if resp.status != 200 {
        return Err(format!("the second request got {}", resp.show()));
    }
    Ok(resp)
}

// ---- pipelining (RFC 9112 §9.3.2) -------------------------------------------------

#[test]
fn pipelined_requests_are_answered_in_order() {
    let node = one_shard();
    let mut p = Peer::connect(node.addr);
    let mut bytes = HEALTH.to_owned();
    bytes.push_str("GET /no-such-route HTTP/1.1\r\nHost: herald.test\r\n\r\n");
    bytes.push_str(HEALTH);
    p.send(bytes.as_bytes()).expect("write three requests at once");
    let mut statuses = Vec::new();
    for i in 0..3 {
        let resp = p
            .read_response()
            .unwrap_or_else(|e| panic!("response {} of 3 pipelined: {e} (got {statuses:?})", i + 1));
        statuses.push(resp.status);
        if resp.status == 200 {
            assert_eq!(resp.text().trim(), r#"{"status":"ok"}"#, "response {}", i + 1);
        }
    }
    assert_eq!(statuses, [200, 404, 200], "responses in request order");
}

// ---- framing and Host (RFC 9112 §3.2, §6.3) ------------------------------------------

#[test]
fn differing_duplicate_content_lengths_are_400_and_close() {
    let node = one_shard();
    let mut p = Peer::connect(node.addr);
    let body = r#"{"room":"chat:cl","data":"x"}"#;
    let head = request(
        "POST /api/publish HTTP/1.1",
        &[
            "Host: herald.test",
            &format!("Authorization: Bearer {API_KEY}"),
            "Content-Type: application/json",
            "Content-Length: 2",
            &format!("Content-Length: {}", body.len()),
        ],
    );
    let resp = exchange(&mut p, &(head + body), "Content-Length: 2 and 29");
    assert_eq!(
        resp.status,
        400,
        "two Content-Length values (RFC 9112 §6.3 item 5: unrecoverable framing error): {}",
        resp.show()
    );
    if let Err(e) = p.closed_by_server() {
        panic!("after a framing error the connection must close: {e}");
    }
}

#[test]
fn http_1_1_request_without_host_is_400() {
    let node = one_shard();
    let mut p = Peer::connect(node.addr);
    let resp = exchange(&mut p, "GET /health HTTP/1.1\r\n\r\n", "GET /health without Host");
    assert_eq!(
        resp.status,
        400,
        "HTTP/1.1 without Host (RFC 9112 §3.2): {}",
        resp.show()
    );
}

#[test]
fn two_host_headers_are_400() {
    let node = one_shard();
    let mut p = Peer::connect(node.addr);
    let req = request("GET /health HTTP/1.1", &["Host: a.test", "Host: b.test"]);
    let resp = exchange(&mut p, &req, "GET /health with two Host headers");
    assert_eq!(resp.status, 400, "two Host headers (RFC 9112 §3.2): {}", resp.show());
}

// ---- persistence (RFC 9112 §9.3, §9.6) ------------------------------------------------

#[test]
fn connection_close_is_a_token_and_closes() {
    let node = one_shard();
    let mut failures = Vec::new();
    for value in ["close", "keep-alive, close", "Close"] {
        let mut p = Peer::connect(node.addr);
        let req = request(
            "GET /health HTTP/1.1",
            &["Host: herald.test", &format!("Connection: {value}")],
        );
        let resp = exchange(&mut p, &req, &format!("Connection: {value}"));
        if resp.status != 200 {
            failures.push(format!("Connection: {value}: got {}", resp.show()));
        } else if let Err(e) = p.closed_by_server() {
            failures.push(format!("Connection: {value}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "the close option closes after the response:\n  {}",
        failures.join("\n  ")
    );
}

#[test]
fn connection_token_merely_containing_close_keeps_the_connection() {
    let node = one_shard();
    let mut p = Peer::connect(node.addr);
    let req = request(
        "GET /health HTTP/1.1",
        &["Host: herald.test", "Connection: closed-captioning"],
    );
    let resp = exchange(&mut p, &req, "Connection: closed-captioning");
    assert_eq!(resp.status, 200, "{}", resp.show());
    if let Err(e) = still_open(&mut p) {
        panic!("`closed-captioning` is not the `close` option (tokens, not substrings): {e}");
    }
}

#[test]
fn http_1_0_without_keep_alive_closes_after_the_response() {
    let node = one_shard();
    let mut p = Peer::connect(node.addr);
    let resp = exchange(
        &mut p,
        "GET /health HTTP/1.0\r\nHost: herald.test\r\n\r\n",
        "HTTP/1.0 GET",
    );
    assert_eq!(resp.status, 200, "{}", resp.show());
    if let Err(e) = p.closed_by_server() {
        panic!("HTTP/1.0 without keep-alive is not persistent (RFC 9112 §9.3): {e}");
    }
}

#[test]
fn http_1_0_with_keep_alive_stays_open() {
    let node = one_shard();
    let mut p = Peer::connect(node.addr);
    let req = "GET /health HTTP/1.0\r\nHost: herald.test\r\nConnection: keep-alive\r\n\r\n";
    let resp = exchange(&mut p, req, "HTTP/1.0 keep-alive GET");
    assert_eq!(resp.status, 200, "{}", resp.show());
    let req = req.as_bytes();
    p.send(req).expect("second HTTP/1.0 keep-alive request");
    match p.read_response() {
        Ok(r) => assert_eq!(r.status, 200, "second request: {}", r.show()),
        Err(e) => panic!("HTTP/1.0 with Connection: keep-alive must stay open (RFC 9112 §9.3): {e}"),
    }
}

// ---- back-pressure on pipelined requests ------------------------------------------

/// Most request bytes the kernel may accept from a client that never reads
/// before the node must have stopped reading: socket buffers on both sides
/// (a few MiB each, up to 32 MiB with receive autotuning) plus one request.
const PIPELINE_BOUND: usize = 64 << 20;
/// How long the test keeps writing.
const PIPELINE_WRITE_FOR: Duration = Duration::from_secs(3);
/// A write that makes no progress for this long counts as blocked.
const STALL: Duration = Duration::from_millis(500);

/// A `GET /metrics` padded to about 4 KiB, so that the byte bound stands for
/// a modest number of requests and a node without back-pressure holds tens
/// of MiB of answers, not gigabytes, by the time the test stops.
fn padded_metrics_request() -> Vec<u8> {
    let pad = "p".repeat(4000);
    request(
        "GET /metrics HTTP/1.1",
        &["Host: herald.test", &format!("X-Pad: {pad}")],
    )
    .into_bytes()
}

#[test]
fn pipelined_requests_without_reading_are_pushed_back() {
    let node = one_shard();
    pipeline_without_reading(node.addr);
}

/// Writes padded `GET /metrics` requests to `addr` without reading, then
/// reads every answer back; asserts order, completeness and back-pressure.
fn pipeline_without_reading(addr: SocketAddr) {
    let mut p = Peer::connect(addr);
    let req = padded_metrics_request();
    let batch: Vec<u8> = req.iter().copied().cycle().take(req.len() * 16).collect();

    // Phase 1: write without reading, until a write stalls, the byte bound
    // is passed or the time is up.
    p.sock.set_write_timeout(Some(STALL)).expect("write timeout");
    let start = Instant::now();
    let mut accepted = 0usize;
    let mut stalled = None;
    while start.elapsed() < PIPELINE_WRITE_FOR && accepted <= PIPELINE_BOUND {
        let at = accepted % req.len();
        match p.sock.write(&batch[at..]) {
            Ok(0) => break,
            Ok(n) => accepted += n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                stalled = Some(start.elapsed());
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("writing pipelined requests failed after {accepted} bytes: {e}"),
        }
    }
    let wrote_for = start.elapsed();
    let requests = accepted.div_ceil(req.len());

    // Phase 2: finish the last request and add a closing one from another
    // thread, while this one reads every answer back.
    let partial = accepted % req.len();
    let mut rest = if partial == 0 {
        Vec::new()
    } else {
        req[partial..].to_vec()
    };
    rest.extend_from_slice(b"GET /health HTTP/1.1\r\nHost: herald.test\r\nConnection: close\r\n\r\n");
    let mut writer = p.sock.try_clone().expect("clone the socket");
    writer
        .set_write_timeout(Some(Duration::from_secs(20)))
        .expect("write timeout");
    let finish = std::thread::spawn(move || writer.write_all(&rest).map_err(|e| e.to_string()));

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut answers = 0usize;
    let mut bad: Option<String> = None;
    let mut consumed = 0usize;
    let mut answer_bytes = 0usize;
    let mut health = None;
    let ended = loop {
        match parse_response(&p.buf[consumed..]) {
            Ok(Some((resp, used))) => {
                consumed += used;
                answer_bytes += used;
                if answers < requests {
                    let is_metrics =
                        resp.status == 200 && resp.header("content-type").is_some_and(|t| t.starts_with("text/plain"));
                    if !is_metrics && bad.is_none() {
                        bad = Some(format!("answer {} of {requests}: {}", answers + 1, resp.show()));
                    }
                } else if health.is_none() {
                    health = Some(resp);
                } else if bad.is_none() {
                    bad = Some(format!("an answer after the closing request: {}", resp.show()));
                }
                answers += 1;
                continue;
            }
            Ok(None) => {}
            Err(e) => break Some(e),
        }
        if consumed > 1 << 20 {
            p.buf.drain(..consumed);
            consumed = 0;
        }
        if let Err(e) = p.fill(deadline) {
            break (!e.closed()).then_some(e);
        }
    };
    let written = finish.join().expect("writer thread");

    let observed = format!(
        "{accepted} bytes ({requests} requests of {} bytes) accepted in {wrote_for:?}, stalled: {stalled:?}; \
         {answers} answers ({} MiB) read back",
        req.len(),
        answer_bytes >> 20
    );
    assert!(written.is_ok(), "finishing the last request: {written:?} ({observed})");
    assert!(ended.is_none(), "reading the answers back: {ended:?} ({observed})");
    assert!(bad.is_none(), "{} ({observed})", bad.unwrap_or_default());
    assert_eq!(answers, requests + 1, "every request answered, in order ({observed})");
    let health = health.unwrap();
    assert_eq!(
        health.text().trim(),
        r#"{"status":"ok"}"#,
        "the closing request is answered last"
    );
    assert!(
        stalled.is_some() && accepted < PIPELINE_BOUND,
        "a client that pipelines without reading must be pushed back: the node should stop reading \
         while an answer is pending, so writes block well before {PIPELINE_BOUND} bytes; observed: {observed}"
    );
}
