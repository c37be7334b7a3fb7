//! RFC 6455 conformance of the node's WebSocket endpoint, over raw TCP
//! sockets: the opening handshake (§4.2), framing (§5.2–§5.5), control
//! frames, the closing handshake and close codes (§5.5.1, §7.4), and
//! delivery in odd pieces. This is what the Autobahn testsuite checks for a
//! server without extensions, written as the behaviour Herald must have.
//!
//! Every wait is bounded by [`BOUND`]; nothing here sleeps to synchronise
//! (only the byte-at-a-time writes pause between bytes).

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use herald_gateway::{NodeConfig, NodeHandle};
use herald_protocol::wire::Body;
use herald_protocol::{DecodeLimits, decode};
use support::raw::{BOUND, End, HttpResponse, Peer, one_shard, request};

/// The masking key of every client frame (RFC 6455 §5.7's example key).
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// The RFC's example key and its accept value (§1.3, §4.2.2).
const RFC_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const RFC_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
/// Pongs a burst of pings may get back when only the latest is answered.
const MAX_PONGS_PER_BURST: usize = 10;

const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

// ---- the node ---------------------------------------------------------------

/// The node's largest accepted frame payload (default 64 KiB).
fn max_frame() -> usize {
    NodeConfig::default().session.limits.decode.max_frame_bytes
}

// ---- client frames ----------------------------------------------------------

/// How a client frame writes its payload length.
#[derive(Debug, Clone, Copy)]
enum Len {
    /// The shortest encoding (7, 16 or 64 bits), as the RFC requires.
    Shortest,
    /// The 64-bit encoding with this value, whatever payload follows (the
    /// payload's own length forces the 64-bit encoding of a true length).
    Declared(u64),
}

/// A client frame to put on the wire.
#[derive(Debug, Clone)]
struct Frame {
    fin: bool,
    /// RSV1..RSV3 as the low three bits (RSV1 = 0b100).
    rsv: u8,
    opcode: u8,
    payload: Vec<u8>,
    mask: Option<[u8; 4]>,
    len: Len,
}

impl Frame {
    fn new(opcode: u8, payload: &[u8]) -> Self {
        Self {
            fin: true,
            rsv: 0,
            opcode,
            payload: payload.to_vec(),
            mask: Some(MASK),
            len: Len::Shortest,
        }
    }

    fn fin(mut self, fin: bool) -> Self {
        self.fin = fin;
        self
    }

    fn rsv(mut self, rsv: u8) -> Self {
        self.rsv = rsv;
        self
    }

    fn unmasked(mut self) -> Self {
        self.mask = None;
        self
    }

    fn len(mut self, len: Len) -> Self {
        self.len = len;
        self
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = vec![(u8::from(self.fin) << 7) | ((self.rsv & 0x7) << 4) | (self.opcode & 0x0F)];
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let n = self.payload.len() as u64;
        match self.len {
            Len::Shortest if n < 126 => out.push(mask_bit | n as u8),
            Len::Shortest if n <= 0xFFFF => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            Len::Shortest => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&n.to_be_bytes());
            }
            Len::Declared(d) => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&d.to_be_bytes());
            }
        }
        match self.mask {
            Some(m) => {
                out.extend_from_slice(&m);
                out.extend(self.payload.iter().zip(m.iter().cycle()).map(|(b, k)| b ^ k));
            }
            None => out.extend_from_slice(&self.payload),
        }
        out
    }
}

/// A final, masked frame with the shortest length encoding.
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    Frame::new(opcode, payload).encode()
}

/// A close frame payload: the code, then the reason bytes.
fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    p
}

/// A Herald `Connect` as the payload of one binary message.
fn connect_payload(user: &str) -> Vec<u8> {
    support::ws_connect_frame(user).to_vec()
}

// ---- server frames ----------------------------------------------------------

/// A frame from the server.
#[derive(Debug, Clone)]
struct Received {
    fin: bool,
    rsv: u8,
    opcode: u8,
    masked: bool,
    payload: Vec<u8>,
}

impl Received {
    /// The status code of a close frame (None for an empty close payload).
    fn close_code(&self) -> Option<u16> {
        match self.payload[..] {
            [a, b, ..] => Some(u16::from_be_bytes([a, b])),
            _ => None,
        }
    }

    fn show(&self) -> String {
        let flags = format!(
            "{}{}{}",
            if self.fin { "" } else { " FIN=0" },
            if self.rsv != 0 { " RSV" } else { "" },
            if self.masked { " MASKED" } else { "" },
        );
        match self.opcode {
            CLOSE => match self.close_code() {
                Some(code) => format!("close {code} {:?}{flags}", String::from_utf8_lossy(&self.payload[2..])),
                None => format!("close (no code, {} bytes){flags}", self.payload.len()),
            },
            PING | PONG => format!(
                "{} {:?}{flags}",
                if self.opcode == PING { "ping" } else { "pong" },
                String::from_utf8_lossy(&self.payload)
            ),
            BINARY => match decode(&self.payload, &DecodeLimits::SERVER_TO_CLIENT) {
                Ok(f) => match f.body_as_error() {
                    Some(e) => format!(
                        "herald Error {:?} {:?}{flags}",
                        e.code(),
                        e.message().unwrap_or_default()
                    ),
                    None => format!("herald {:?}{flags}", f.body_type()),
                },
                Err(e) => format!("binary ({} bytes, not a herald frame: {e}){flags}", self.payload.len()),
            },
            op => format!("opcode {op:#x} ({} bytes){flags}", self.payload.len()),
        }
    }

    /// The Herald body type of a binary frame.
    fn herald_body(&self) -> Option<Body> {
        if self.opcode != BINARY {
            return None;
        }
        decode(&self.payload, &DecodeLimits::SERVER_TO_CLIENT)
            .ok()
            .map(|f| f.body_type())
    }
}

fn show_all(frames: &[Received]) -> String {
    let shown: Vec<String> = frames.iter().map(Received::show).collect();
    format!("[{}]", shown.join(", "))
}

/// Parses one server frame at the start of `buf`; Ok(None) = need more.
fn parse_server_frame(buf: &[u8]) -> Result<Option<(Received, usize)>, End> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    let masked = b1 & 0x80 != 0;
    let (len, mut at) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => (u64::from_be_bytes(b.try_into().unwrap()), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if len > 64 << 20 {
        return Err(End::Malformed(format!("a server frame declares {len} bytes")));
    }
    let len = len as usize;
    let mut mask = None;
    if masked {
        let Some(m) = buf.get(at..at + 4) else { return Ok(None) };
        mask = Some([m[0], m[1], m[2], m[3]]);
        at += 4;
    }
    let Some(p) = buf.get(at..at + len) else {
        return Ok(None);
    };
    let mut payload = p.to_vec();
    if let Some(m) = mask {
        for (b, k) in payload.iter_mut().zip(m.iter().cycle()) {
            *b ^= k;
        }
    }
    let frame = Received {
        fin: b0 & 0x80 != 0,
        rsv: (b0 >> 4) & 0x7,
        opcode: b0 & 0x0F,
        masked,
        payload,
    };
    Ok(Some((frame, at + len)))
}

// ---- a raw connection: the WebSocket side ---------------------------------------

/// What only these tests do on a [`Peer`]: read server frames, write slowly.
impl Peer {
    /// Writes each byte on its own, with a short pause between.
    fn send_bytewise(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.send(std::slice::from_ref(b)).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn read_frame_by(&mut self, deadline: Instant) -> Result<Received, End> {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buf)? {
                self.buf.drain(..used);
                return Ok(frame);
            }
            self.fill(deadline)?;
        }
    }
}

// ---- the handshake --------------------------------------------------------------

/// A valid upgrade request with `key`.
fn upgrade_request(key: &str) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: herald.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Sends `request` on a new connection and reads the response head.
fn handshake(addr: SocketAddr, request: &str) -> (Peer, Result<HttpResponse, End>) {
    let mut p = Peer::connect(addr);
    p.send(request.as_bytes()).unwrap();
    let resp = p.read_response();
    (p, resp)
}

/// Checks a 101 answer to a request with `key`.
fn check_switching(resp: &Result<HttpResponse, End>, key: &str) -> Result<(), String> {
    let resp = match resp {
        Ok(r) => r,
        Err(e) => return Err(format!("no response: {e}")),
    };
    if resp.status != 101 {
        return Err(format!("expected 101, got {}", resp.show()));
    }
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    if resp.header("sec-websocket-accept") != Some(accept.as_str()) {
        return Err(format!("Sec-WebSocket-Accept should be {accept}: {}", resp.show()));
    }
    if !resp.has_token("upgrade", "websocket") || !resp.has_token("connection", "upgrade") {
        return Err(format!(
            "101 without Upgrade: websocket / Connection: Upgrade: {}",
            resp.show()
        ));
    }
    Ok(())
}

/// Checks that `request` is refused with `status` and the connection closed.
fn check_refused(addr: SocketAddr, request: &str, status: u16) -> Result<HttpResponse, String> {
    let (mut p, resp) = handshake(addr, request);
    let resp = resp.map_err(|e| format!("expected {status}, got no response: {e}"))?;
    if resp.status != status {
        return Err(format!("expected {status}, got {}", resp.show()));
    }
    if status == 400 {
        p.closed_by_server()
            .map_err(|e| format!("400 sent but the connection was not closed: {e}"))?;
    }
    Ok(resp)
}

fn assert_all(failures: &[String], what: &str) {
    assert!(failures.is_empty(), "{what}:\n  {}", failures.join("\n  "));
}

/// Opens an upgraded connection.
fn open(node: &NodeHandle) -> Peer {
    let (p, resp) = handshake(node.addr, &upgrade_request(RFC_KEY));
    if let Err(e) = check_switching(&resp, RFC_KEY) {
        panic!("the upgrade itself failed: {e}");
    }
    p
}

// ---- closes -------------------------------------------------------------------

/// How the server ended a WebSocket.
#[derive(Debug)]
struct Ending {
    /// Frames before the close frame.
    before: Vec<Received>,
    close: Option<Received>,
    /// Why reading stopped without a close frame.
    stopped: Option<End>,
    /// Frames after the close frame.
    after: Vec<Received>,
    /// The server closed TCP after its close frame.
    tcp_closed: bool,
}

impl Ending {
    fn show(&self) -> String {
        match &self.close {
            Some(c) => format!("{} after {}", c.show(), show_all(&self.before)),
            None => format!(
                "no close frame ({}) after {}",
                self.stopped.as_ref().map_or(String::new(), End::to_string),
                show_all(&self.before)
            ),
        }
    }

    fn code(&self) -> Option<u16> {
        self.close.as_ref().and_then(Received::close_code)
    }
}

/// Reads until the server's close frame, then (if `answer`) answers it as a
/// client would, and waits for the server to close TCP. Bounded throughout.
fn until_close(p: &mut Peer, answer: bool) -> Ending {
    let mut ending = Ending {
        before: Vec::new(),
        close: None,
        stopped: None,
        after: Vec::new(),
        tcp_closed: false,
    };
    let deadline = Instant::now() + BOUND;
    loop {
        match p.read_frame_by(deadline) {
            Ok(f) if f.opcode == CLOSE => {
                ending.close = Some(f);
                break;
            }
            Ok(f) => ending.before.push(f),
            Err(e) => {
                ending.stopped = Some(e);
                return ending;
            }
        }
    }
    if answer {
        let code = ending
            .close
            .as_ref()
            .map(|c| c.payload[..c.payload.len().min(2)].to_vec());
        // The server may already be gone: a failed write shows as EOF below.
        let _ = p.sock.write_all(&frame(CLOSE, &code.unwrap_or_default()));
    }
    let deadline = Instant::now() + BOUND;
    loop {
        match p.read_frame_by(deadline) {
            Ok(f) => ending.after.push(f),
            Err(e) => {
                ending.tcp_closed = e.closed();
                return ending;
            }
        }
    }
}

/// Checks that the server closes with a code `ok` accepts, sends no frame
/// after its close and closes TCP.
fn check_close(p: &mut Peer, ok: impl Fn(u16) -> bool, want: &str) -> Result<Ending, String> {
    let e = until_close(p, true);
    if !e.code().is_some_and(&ok) {
        return Err(format!("expected close {want}, got {}", e.show()));
    }
    if !e.after.is_empty() {
        return Err(format!("frames after the close frame: {}", show_all(&e.after)));
    }
    if !e.tcp_closed {
        return Err(format!("the server did not close TCP within {BOUND:?} after its close"));
    }
    Ok(e)
}

/// Sends `bytes` on a new upgraded connection and checks the close `code`.
fn violation(node: &NodeHandle, bytes: &[u8], code: u16) -> Result<Ending, String> {
    let mut p = open(node);
    p.send(bytes).unwrap();
    check_close(&mut p, |c| c == code, &code.to_string())
}

/// The next pong, skipping Herald frames; Err on a close or the bound.
fn next_pong(p: &mut Peer) -> Result<Received, String> {
    let deadline = Instant::now() + BOUND;
    let mut skipped = Vec::new();
    loop {
        match p.read_frame_by(deadline) {
            Ok(f) if f.opcode == PONG => return Ok(f),
            Ok(f) if f.opcode == BINARY => skipped.push(f),
            Ok(f) => {
                return Err(format!(
                    "expected a pong, got {} after {}",
                    f.show(),
                    show_all(&skipped)
                ));
            }
            Err(e) => return Err(format!("expected a pong: {e} after {}", show_all(&skipped))),
        }
    }
}

/// Reads until `Connected`; Err on anything else first.
fn expect_connected(p: &mut Peer, what: &str) {
    let deadline = Instant::now() + BOUND;
    let mut seen = Vec::new();
    loop {
        match p.read_frame_by(deadline) {
            Ok(f) if f.herald_body() == Some(Body::Connected) => return,
            Ok(f) if f.opcode == PONG => seen.push(f),
            Ok(f) => panic!("{what}: expected Connected, got {} after {}", f.show(), show_all(&seen)),
            Err(e) => panic!("{what}: expected Connected: {e} after {}", show_all(&seen)),
        }
    }
}

// ---- handshake (§4.2.1, §4.2.2, §4.4) -------------------------------------------------

#[test]
fn handshake_valid_upgrade_gets_101_with_the_accept_key() {
    let node = one_shard();
    let (_p, resp) = handshake(node.addr, &upgrade_request(RFC_KEY));
    if let Err(e) = check_switching(&resp, RFC_KEY) {
        panic!("RFC example key: {e}");
    }
    let resp = resp.unwrap();
    assert_eq!(resp.header("sec-websocket-accept"), Some(RFC_ACCEPT), "RFC 6455 §1.3");
    assert!(resp.body.is_empty(), "a 101 has no body: {}", resp.show());

    let key = b64(&[0x5a; 16]);
    let (_p, resp) = handshake(node.addr, &upgrade_request(&key));
    if let Err(e) = check_switching(&resp, &key) {
        panic!("key {key}: {e}");
    }
}

#[test]
fn handshake_header_names_and_tokens_are_case_insensitive() {
    let node = one_shard();
    let req = request(
        "GET /ws HTTP/1.1",
        &[
            "host: herald.test",
            "UPGRADE: WebSocket",
            "connection: UPGRADE",
            &format!("sec-websocket-key: {RFC_KEY}"),
            "SEC-WEBSOCKET-VERSION: 13",
        ],
    );
    let (_p, resp) = handshake(node.addr, &req);
    if let Err(e) = check_switching(&resp, RFC_KEY) {
        panic!("mixed-case names and tokens: {e}");
    }
}

#[test]
fn handshake_connection_and_upgrade_are_token_lists() {
    let node = one_shard();
    let key = format!("Sec-WebSocket-Key: {RFC_KEY}");
    let cases: [(&str, &[&str]); 3] = [
        (
            "Connection: keep-alive, Upgrade",
            &["Upgrade: websocket", "Connection: keep-alive, Upgrade"],
        ),
        (
            "Upgrade: foo/1, websocket",
            &["Upgrade: foo/1, websocket", "Connection: Upgrade"],
        ),
        ("Upgrade: WebSocket", &["Upgrade: WebSocket", "Connection: upgrade"]),
    ];
    let mut failures = Vec::new();
    for (what, lines) in cases {
        let mut headers = vec!["Host: herald.test", key.as_str(), "Sec-WebSocket-Version: 13"];
        headers.extend_from_slice(lines);
        let (_p, resp) = handshake(node.addr, &request("GET /ws HTTP/1.1", &headers));
        if let Err(e) = check_switching(&resp, RFC_KEY) {
            failures.push(format!("{what}: {e}"));
        }
    }
    assert_all(&failures, "token lists must upgrade");
}

#[test]
fn handshake_over_http_1_0_is_400() {
    let node = one_shard();
    let req = upgrade_request(RFC_KEY).replacen("HTTP/1.1", "HTTP/1.0", 1);
    if let Err(e) = check_refused(node.addr, &req, 400) {
        panic!("HTTP/1.0 upgrade (RFC 6455 §4.1 needs HTTP/1.1 or higher): {e}");
    }
}

#[test]
fn handshake_without_host_is_400() {
    let node = one_shard();
    let req = upgrade_request(RFC_KEY).replace("Host: herald.test\r\n", "");
    if let Err(e) = check_refused(node.addr, &req, 400) {
        panic!("upgrade without Host (§4.2.1 item 2): {e}");
    }
}

#[test]
fn handshake_connection_without_the_upgrade_token_is_400() {
    let node = one_shard();
    let mut failures = Vec::new();
    for connection in ["Connection: keep-alive", "Connection: upgraded"] {
        let req = upgrade_request(RFC_KEY).replace("Connection: Upgrade", connection);
        if let Err(e) = check_refused(node.addr, &req, 400) {
            failures.push(format!("{connection}: {e}"));
        }
    }
    assert_all(&failures, "Upgrade: websocket without the Connection token `upgrade`");
}

#[test]
fn handshake_key_that_is_not_16_bytes_of_base64_is_400() {
    let node = one_shard();
    let mut failures = Vec::new();
    for key in [
        "abc".to_owned(),
        b64(&[7; 15]),
        b64(&[7; 17]),
        "!!!!!!!!!!!!!!!!!!!!!!==".to_owned(),
    ] {
        if let Err(e) = check_refused(node.addr, &upgrade_request(&key), 400) {
            failures.push(format!("key {key:?}: {e}"));
        }
    }
    assert_all(
        &failures,
        "Sec-WebSocket-Key must be base64 of 16 bytes (§4.2.1 item 5)",
    );
}

#[test]
fn handshake_without_key_is_400() {
    let node = one_shard();
    let req = upgrade_request(RFC_KEY).replace(&format!("Sec-WebSocket-Key: {RFC_KEY}\r\n"), "");
    if let Err(e) = check_refused(node.addr, &req, 400) {
        panic!("upgrade without Sec-WebSocket-Key: {e}");
    }
}

#[test]
fn handshake_wrong_or_missing_version_is_426_naming_13() {
    let node = one_shard();
    let mut failures = Vec::new();
    for (what, version) in [("version 8", "Sec-WebSocket-Version: 8\r\n"), ("no version", "")] {
        let req = upgrade_request(RFC_KEY).replace("Sec-WebSocket-Version: 13\r\n", version);
        match check_refused(node.addr, &req, 426) {
            Ok(resp) if !resp.has_token("sec-websocket-version", "13") => {
                failures.push(format!(
                    "{what}: 426 without Sec-WebSocket-Version: 13: {}",
                    resp.show()
                ));
            }
            Ok(_) => {}
            Err(e) => failures.push(format!("{what}: {e}")),
        }
    }
    assert_all(&failures, "§4.2.2 / §4.4");
}

#[test]
fn plain_get_of_the_ws_endpoint_is_426_upgrade_required() {
    let node = one_shard();
    let req = request("GET /ws HTTP/1.1", &["Host: herald.test"]);
    let (_p, resp) = handshake(node.addr, &req);
    let resp = resp.unwrap_or_else(|e| panic!("GET /ws: no response: {e}"));
    assert_eq!(resp.status, 426, "GET /ws without upgrade headers: {}", resp.show());
    assert!(
        resp.has_token("upgrade", "websocket"),
        "426 must name the protocol in Upgrade (RFC 9110 §15.5.22): {}",
        resp.show()
    );
}

#[test]
fn upgrade_elsewhere_is_404_and_post_is_refused() {
    let node = one_shard();
    let req = upgrade_request(RFC_KEY).replacen("GET /ws", "GET /other", 1);
    let (_p, resp) = handshake(node.addr, &req);
    let resp = resp.unwrap_or_else(|e| panic!("GET /other upgrade: no response: {e}"));
    assert_eq!(resp.status, 404, "upgrade of GET /other: {}", resp.show());

    let req = upgrade_request(RFC_KEY).replacen("GET /ws", "POST /ws", 1);
    let (_p, resp) = handshake(node.addr, &req);
    let resp = resp.unwrap_or_else(|e| panic!("POST /ws upgrade: no response: {e}"));
    assert!(
        (400..500).contains(&resp.status),
        "upgrade by POST must be refused with 4xx (405 or 400): {}",
        resp.show()
    );
}

#[test]
fn handshake_delivered_byte_by_byte_upgrades() {
    let node = one_shard();
    let mut p = Peer::connect(node.addr);
    p.send_bytewise(upgrade_request(RFC_KEY).as_bytes());
    if let Err(e) = check_switching(&p.read_response(), RFC_KEY) {
        panic!("byte-at-a-time upgrade: {e}");
    }
}

// ---- framing (§5.2–§5.5) ----------------------------------------------------------

#[test]
fn unmasked_client_frame_closes_1002() {
    let node = one_shard();
    let bytes = Frame::new(BINARY, &connect_payload("alice")).unmasked().encode();
    if let Err(e) = violation(&node, &bytes, 1002) {
        panic!("unmasked frame (§5.1): {e}");
    }
}

#[test]
fn rsv_bits_close_1002() {
    let node = one_shard();
    let mut failures = Vec::new();
    for (name, rsv) in [("RSV1", 0b100), ("RSV2", 0b010), ("RSV3", 0b001)] {
        let bytes = Frame::new(BINARY, &connect_payload("alice")).rsv(rsv).encode();
        if let Err(e) = violation(&node, &bytes, 1002) {
            failures.push(format!("{name}: {e}"));
        }
    }
    assert_all(&failures, "RSV bits without an extension (§5.2)");
}

#[test]
fn reserved_opcodes_close_1002() {
    let node = one_shard();
    let mut failures = Vec::new();
    for op in (0x3..=0x7).chain(0xB..=0xF) {
        if let Err(e) = violation(&node, &frame(op, b"x"), 1002) {
            failures.push(format!("opcode {op:#x}: {e}"));
        }
    }
    assert_all(&failures, "reserved opcodes (§5.2)");
}

#[test]
fn control_frame_longer_than_125_bytes_closes_1002() {
    let node = one_shard();
    if let Err(e) = violation(&node, &frame(PING, &[b'p'; 126]), 1002) {
        panic!("ping with a 126-byte payload (§5.5): {e}");
    }
}

#[test]
fn fragmented_control_frame_closes_1002() {
    let node = one_shard();
    let bytes = Frame::new(PING, b"half").fin(false).encode();
    if let Err(e) = violation(&node, &bytes, 1002) {
        panic!("ping with FIN=0 (§5.5): {e}");
    }
}

#[test]
fn continuation_without_a_message_closes_1002() {
    let node = one_shard();
    if let Err(e) = violation(&node, &frame(CONTINUATION, b"orphan"), 1002) {
        panic!("continuation with no message started (§5.4): {e}");
    }
}

#[test]
fn new_data_frame_inside_a_fragmented_message_closes_1002() {
    let node = one_shard();
    let mut failures = Vec::new();
    for (name, op) in [("binary", BINARY), ("text", TEXT)] {
        let mut bytes = Frame::new(BINARY, b"first").fin(false).encode();
        bytes.extend(frame(op, b"second"));
        if let Err(e) = violation(&node, &bytes, 1002) {
            failures.push(format!("{name} frame while a binary message is open: {e}"));
        }
    }
    assert_all(&failures, "§5.4: only continuation frames may follow FIN=0");
}

#[test]
fn payload_length_with_the_top_bit_set_closes_1002() {
    let node = one_shard();
    // The header alone: FIN binary, masked, 64-bit length 2^63 + 5, mask key.
    let bytes = Frame::new(BINARY, b"").len(Len::Declared((1 << 63) | 5)).encode();
    if let Err(e) = violation(&node, &bytes, 1002) {
        panic!("64-bit length with the most significant bit set (§5.2): {e}");
    }
}

#[test]
fn frame_declared_larger_than_the_limit_closes_1009() {
    let node = one_shard();
    let bytes = Frame::new(BINARY, b"").len(Len::Declared(1 << 20)).encode();
    if let Err(e) = violation(&node, &bytes, 1009) {
        panic!("header declaring 1 MiB (limit {} bytes), no payload: {e}", max_frame());
    }
}

#[test]
fn fragmented_message_larger_than_the_limit_closes_1009() {
    let node = one_shard();
    let part = vec![0u8; max_frame() / 2 + 1024];
    let mut p = open(&node);
    // The first half, then a ping: its pong shows the node has taken it in.
    let mut bytes = Frame::new(BINARY, &part).fin(false).encode();
    bytes.extend(frame(PING, b"taken"));
    p.send(&bytes).unwrap();
    if let Err(e) = next_pong(&mut p) {
        panic!("ping after the first {}-byte fragment: {e}", part.len());
    }
    p.send(&Frame::new(CONTINUATION, &part).encode()).unwrap();
    if let Err(e) = check_close(&mut p, |c| c == 1009, "1009") {
        panic!("two fragments of {} bytes (limit {}): {e}", part.len(), max_frame());
    }
}

#[test]
fn text_frame_closes_1003() {
    let node = one_shard();
    if let Err(e) = violation(&node, &frame(TEXT, br#"{"hello":1}"#), 1003) {
        panic!("text frame to a binary-only endpoint: {e}");
    }
}

#[test]
fn first_text_fragment_closes_1003_at_once() {
    let node = one_shard();
    let bytes = Frame::new(TEXT, b"{\"hel").fin(false).encode();
    if let Err(e) = violation(&node, &bytes, 1003) {
        panic!("text frame with FIN=0 and nothing after it: {e}");
    }
}

#[test]
fn herald_protocol_errors_close_with_4000_plus_code() {
    let node = one_shard();
    let mut p = open(&node);
    p.send(&frame(BINARY, b"\x00\x01garbage-not-a-frame")).unwrap();
    if let Err(e) = check_close(&mut p, |c| (4000..=4999).contains(&c), "4000..=4999") {
        panic!("garbage binary frame: {e}");
    }
}

// ---- control frames (§5.5.2, §5.5.3) ------------------------------------------------

#[test]
fn ping_gets_a_pong_with_the_same_payload() {
    let node = one_shard();
    let mut p = open(&node);
    let long: Vec<u8> = (0..125u8).map(|i| b'a' + i % 26).collect();
    for payload in [&b""[..], b"hello", &long] {
        p.send(&frame(PING, payload)).unwrap();
        match next_pong(&mut p) {
            Ok(pong) => assert_eq!(pong.payload, payload, "pong payload for a {}-byte ping", payload.len()),
            Err(e) => panic!("{}-byte ping: {e}", payload.len()),
        }
    }
}

#[test]
fn ping_between_fragments_is_answered_and_the_message_completes() {
    let node = one_shard();
    let mut p = open(&node);
    let connect = connect_payload("alice");
    let third = connect.len() / 3;
    let (a, rest) = connect.split_at(third);
    let (b, c) = rest.split_at(third);

    let mut bytes = Frame::new(BINARY, a).fin(false).encode();
    bytes.extend(frame(PING, b"mid-1"));
    p.send(&bytes).unwrap();
    match next_pong(&mut p) {
        Ok(pong) => assert_eq!(pong.payload, b"mid-1", "pong for the ping after fragment 1"),
        Err(e) => panic!("ping after the first fragment: {e}"),
    }
    let mut bytes = Frame::new(CONTINUATION, b).fin(false).encode();
    bytes.extend(frame(PING, b"mid-2"));
    bytes.extend(Frame::new(CONTINUATION, c).encode());
    p.send(&bytes).unwrap();
    match next_pong(&mut p) {
        Ok(pong) => assert_eq!(pong.payload, b"mid-2", "pong for the ping after fragment 2"),
        Err(e) => panic!("ping after the second fragment: {e}"),
    }
    expect_connected(&mut p, "Connect in 3 fragments with pings between");
}

#[test]
fn unsolicited_pong_is_ignored() {
    let node = one_shard();
    let mut p = open(&node);
    p.send(&frame(PONG, b"unasked")).unwrap();
    p.send(&frame(PING, b"after")).unwrap();
    match next_pong(&mut p) {
        Ok(pong) => assert_eq!(
            pong.payload, b"after",
            "the answer is to the ping, not an echo of the pong"
        ),
        Err(e) => panic!("ping after an unsolicited pong: {e}"),
    }
}

/// Reads pongs until one carries `last`; returns them all (bounded).
fn pongs_until(p: &mut Peer, last: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let deadline = Instant::now() + BOUND;
    let mut pongs = Vec::new();
    loop {
        match p.read_frame_by(deadline) {
            Ok(f) if f.opcode == PONG => {
                let done = f.payload == last;
                pongs.push(f.payload);
                if done {
                    return Ok(pongs);
                }
            }
            Ok(f) if f.opcode == BINARY => {}
            Ok(f) => return Err(format!("{} after {} pongs", f.show(), pongs.len())),
            Err(e) => return Err(format!("{e} after {} pongs", pongs.len())),
        }
    }
}

#[test]
fn only_the_latest_of_many_pings_is_answered() {
    let node = one_shard();
    let mut p = open(&node);
    let sent = 200;
    let bytes: Vec<u8> = (0..sent).flat_map(|i| frame(PING, i.to_string().as_bytes())).collect();
    p.send(&bytes).unwrap();
    let last = (sent - 1).to_string();
    let pongs =
        pongs_until(&mut p, last.as_bytes()).unwrap_or_else(|e| panic!("no pong for the last of {sent} pings: {e}"));
    let numbers: Vec<usize> = pongs
        .iter()
        .map(|p| String::from_utf8_lossy(p).parse().unwrap_or(usize::MAX))
        .collect();
    assert!(
        numbers.windows(2).all(|w| w[0] < w[1]),
        "pongs answer pings in order: {numbers:?}"
    );
    assert!(
        pongs.len() <= MAX_PONGS_PER_BURST,
        "{sent} pings in one write got {} pongs; only the latest pending ping needs an answer \
         (§5.5.3), at most {MAX_PONGS_PER_BURST} expected",
        pongs.len()
    );
}

// ---- the closing handshake (§5.5.1, §7.4) ---------------------------------------------

/// Sends a close with `payload` and reads the server's side of the ending.
fn client_close(node: &NodeHandle, payload: &[u8]) -> Ending {
    let mut p = open(node);
    p.send(&frame(CLOSE, payload)).unwrap();
    until_close(&mut p, false)
}

#[test]
fn client_close_1000_is_answered_and_tcp_closed() {
    let node = one_shard();
    let e = client_close(&node, &close_payload(1000, b"bye"));
    assert_eq!(e.code(), Some(1000), "answer to close 1000: {}", e.show());
    assert!(e.after.is_empty(), "frames after the close: {}", show_all(&e.after));
    assert!(e.tcp_closed, "the server did not close TCP within {BOUND:?}");
}

#[test]
fn client_close_without_payload_is_answered() {
    let node = one_shard();
    let e = client_close(&node, b"");
    let close = e
        .close
        .as_ref()
        .unwrap_or_else(|| panic!("answer to an empty close: {}", e.show()));
    assert!(
        close.payload.is_empty() || close.close_code() == Some(1000),
        "an empty close is answered empty or with 1000: {}",
        e.show()
    );
    assert!(e.tcp_closed, "the server did not close TCP within {BOUND:?}");
}

#[test]
fn close_payload_of_one_byte_is_1002() {
    let node = one_shard();
    let e = client_close(&node, &[0x03]);
    assert_eq!(
        e.code(),
        Some(1002),
        "close with a 1-byte payload (§5.5.1): {}",
        e.show()
    );
}

#[test]
fn invalid_close_codes_are_1002() {
    let node = one_shard();
    let mut failures = Vec::new();
    for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535] {
        let e = client_close(&node, &close_payload(code, b""));
        if e.code() != Some(1002) {
            failures.push(format!("close {code}: expected 1002, got {}", e.show()));
        }
    }
    assert_all(&failures, "§7.4.1/§7.4.2 codes a client may not send");
}

#[test]
fn valid_close_codes_are_echoed() {
    let node = one_shard();
    let mut failures = Vec::new();
    for code in [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
    ] {
        let e = client_close(&node, &close_payload(code, b""));
        if e.code() != Some(code) {
            failures.push(format!("close {code}: expected {code} back, got {}", e.show()));
        }
    }
    assert_all(&failures, "valid close codes echoed (§5.5.1)");
}

#[test]
fn close_reason_that_is_not_utf8_is_1007() {
    let node = one_shard();
    let e = client_close(&node, &close_payload(1000, &[0xFF, 0xFE]));
    assert_eq!(
        e.code(),
        Some(1007),
        "close reason 0xFF 0xFE (§5.5.1, §8.1): {}",
        e.show()
    );
}

#[test]
fn close_reason_of_123_bytes_is_accepted() {
    let node = one_shard();
    let reason = "é".repeat(61) + "x"; // 123 bytes of valid UTF-8
    assert_eq!(reason.len(), 123);
    let e = client_close(&node, &close_payload(1000, reason.as_bytes()));
    assert_eq!(e.code(), Some(1000), "close 1000 with a 123-byte reason: {}", e.show());
}

// ---- limits and delivery --------------------------------------------------------

#[test]
fn connect_delivered_byte_by_byte_is_answered() {
    let node = one_shard();
    let mut p = open(&node);
    p.send_bytewise(&frame(BINARY, &connect_payload("alice")));
    expect_connected(&mut p, "Connect written one byte at a time");
}

#[test]
fn many_frames_in_one_write_are_all_processed() {
    let node = one_shard();
    let mut p = open(&node);
    let mut bytes = frame(BINARY, &connect_payload("alice"));
    let pings = 50;
    for i in 0..pings {
        bytes.extend(frame(PING, format!("p{i}").as_bytes()));
    }
    p.send(&bytes).unwrap();
    let last = format!("p{}", pings - 1);
    let deadline = Instant::now() + BOUND;
    let (mut connected, mut pongs, mut got_last) = (false, 0, false);
    while !(connected && got_last) {
        match p.read_frame_by(deadline) {
            Ok(f) if f.herald_body() == Some(Body::Connected) => connected = true,
            Ok(f) if f.opcode == PONG => {
                pongs += 1;
                got_last = f.payload == last.as_bytes();
            }
            Ok(f) if f.opcode == BINARY => {}
            Ok(f) => panic!("Connect + {pings} pings in one write: unexpected {}", f.show()),
            Err(e) => panic!(
                "Connect + {pings} pings in one write: {e} (Connected: {connected}, pongs: {pongs}, \
                 last pong seen: {got_last})"
            ),
        }
    }
    assert!(
        pongs <= MAX_PONGS_PER_BURST,
        "{pings} pings in one write got {pongs} pongs; at most {MAX_PONGS_PER_BURST} expected"
    );
}

#[test]
fn frame_of_exactly_the_maximum_size_is_not_refused_for_its_size() {
    let node = one_shard();
    let mut p = open(&node);
    p.send(&Frame::new(BINARY, &vec![0u8; max_frame()]).encode()).unwrap();
    let e = until_close(&mut p, true);
    assert_ne!(
        e.code(),
        Some(1009),
        "a {}-byte frame is within the limit: {}",
        max_frame(),
        e.show()
    );
}
