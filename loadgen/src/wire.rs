//! What goes over a connection: WebSocket client framing, the payload
//! stamp that carries a message's scheduled time, and the two target
//! protocols (Herald's binary frames, Socket.IO's text packets).
//!
//! On an `sse://` run the WebSocket connections (the publishers) speak
//! Herald, so `Kind::Sse` encodes and parses as `Kind::Herald` here; the
//! streams themselves are read by [`crate::sse`].

use herald_protocol::wire::{self, BodyT};
use herald_protocol::{DecodeLimits, PublishRef, decode, with_encoder};

use crate::target::Kind;

// ---- WebSocket (RFC 6455, client side) --------------------------------------

pub fn upgrade_request(host: &str, path: &str) -> Vec<u8> {
    // A fixed key is fine: the load generator does not check the accept hash.
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Appends one masked client frame.
pub fn push_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | opcode);
    let n = payload.len();
    if n < 126 {
        out.push(0x80 | n as u8);
    } else if n <= 65_535 {
        out.push(0x80 | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
}

/// Largest server frame accepted; a bigger one fails the connection rather
/// than growing the buffer without bound.
pub const MAX_FRAME: usize = 1 << 20;

/// The unmasked server frame at the start of `b`: (opcode, header length,
/// payload length), or `None` until the header is complete. Fragmented
/// messages are not used by either target for the sizes sent here.
pub fn server_frame(b: &[u8]) -> Option<(u8, usize, usize)> {
    let op = *b.first()? & 0x0F;
    let len = *b.get(1)? & 0x7F;
    match len {
        126 => Some((op, 4, u16::from_be_bytes([*b.get(2)?, *b.get(3)?]) as usize)),
        127 => {
            let s = b.get(2..10)?;
            let n = u64::from_be_bytes(s.try_into().ok()?);
            Some((op, 10, usize::try_from(n).unwrap_or(usize::MAX)))
        }
        n => Some((op, 2, n as usize)),
    }
}

// ---- payload stamp -------------------------------------------------------------

/// Bytes of the stamp at the start of every payload: scheduled send time
/// (Unix ns), message id, and the message's sequence number in its room,
/// as hex, so the same payload is valid UTF-8 text for Socket.IO.
pub const STAMP_LEN: usize = 16 + 12 + 12;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub sched_unix_ns: u64,
    pub id: u64,
    pub room_seq: u64,
}

pub fn write_stamp(buf: &mut [u8], s: Stamp) {
    fn hex(out: &mut [u8], mut v: u64) {
        for b in out.iter_mut().rev() {
            *b = b"0123456789abcdef"[(v & 0xF) as usize];
            v >>= 4;
        }
    }
    hex(&mut buf[..16], s.sched_unix_ns);
    hex(&mut buf[16..28], s.id);
    hex(&mut buf[28..40], s.room_seq);
}

pub fn read_stamp(p: &[u8]) -> Option<Stamp> {
    fn unhex(b: &[u8]) -> Option<u64> {
        b.iter().try_fold(0u64, |acc, &c| {
            let d = (c as char).to_digit(16)?;
            Some((acc << 4) | u64::from(d))
        })
    }
    Some(Stamp {
        sched_unix_ns: unhex(p.get(..16)?)?,
        id: unhex(p.get(16..28)?)?,
        room_seq: unhex(p.get(28..40)?)?,
    })
}

/// A payload of `len` bytes (at least the stamp) whose tail is filler.
pub fn payload(len: usize) -> Vec<u8> {
    vec![b'x'; len.max(STAMP_LEN)]
}

// ---- what the target says ------------------------------------------------------

/// One thing a target told a connection, protocol-independent.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// The session is open (Herald `Connected`; Socket.IO namespace connect).
    Open,
    /// Engine.IO's handshake packet: answer with the namespace connect.
    EngineOpen,
    /// A join (request id) succeeded.
    Joined(u32),
    /// A request was answered: (request id, ok, reason when refused).
    Reply(u32, bool, Option<String>),
    /// A message for a room: (room name, target-assigned order if any, payload).
    Message(&'a str, Option<u64>, &'a [u8]),
    Presence,
    Typing,
    /// Answer this heartbeat (Herald ping nonce; Socket.IO ping has none).
    Ping(u64),
    /// The target will close the connection: reason.
    Closing(String),
    /// A non-fatal error (code name).
    Error(String),
    Other,
}

/// Request ids: 1 is Connect; joins and leaves use `JOIN_BASE + room slot`;
/// publishes count up from `PUBLISH_BASE`.
pub const JOIN_BASE: u32 = 16;
pub const PUBLISH_BASE: u32 = 1 << 20;

pub fn parse<'a>(kind: Kind, opcode: u8, data: &'a [u8]) -> Incoming<'a> {
    match (kind, opcode) {
        (Kind::Herald | Kind::Sse, OP_BINARY) => parse_herald(data),
        (Kind::SocketIo, OP_TEXT) => std::str::from_utf8(data).map_or(Incoming::Other, parse_socketio),
        _ => Incoming::Other,
    }
}

fn parse_herald(data: &[u8]) -> Incoming<'_> {
    let Ok(frame) = decode(data, &DecodeLimits::SERVER_TO_CLIENT) else {
        return Incoming::Closing("undecodable frame".into());
    };
    if let Some(m) = frame.body_as_message() {
        return Incoming::Message(m.room(), Some(m.offset()), m.payload().map_or(&[][..], |p| p.bytes()));
    }
    if let Some(r) = frame.body_as_reply() {
        let ok = r.code() == wire::ErrorCode::Ok;
        let why = (!ok).then(|| r.code().variant_name().unwrap_or("error").to_owned());
        return Incoming::Reply(frame.request_id(), ok, why);
    }
    if frame.body_as_subscribed().is_some() {
        return Incoming::Joined(frame.request_id());
    }
    if frame.body_as_connected().is_some() {
        return Incoming::Open;
    }
    if let Some(p) = frame.body_as_ping() {
        return Incoming::Ping(p.nonce());
    }
    if frame.body_as_presence_join().is_some() || frame.body_as_presence_leave().is_some() {
        return Incoming::Presence;
    }
    if frame.body_as_typing_event().is_some() {
        return Incoming::Typing;
    }
    if let Some(g) = frame.body_as_go_away() {
        return Incoming::Closing(format!("goaway: {}", g.reason().unwrap_or("")));
    }
    if let Some(e) = frame.body_as_error() {
        let name = e.code().variant_name().unwrap_or("error").to_owned();
        // Codes from 200 up are fatal: the server closes after them.
        return if e.code().0 >= 200 {
            Incoming::Closing(name)
        } else {
            Incoming::Error(name)
        };
    }
    Incoming::Other
}

/// Engine.IO 4 packet type digit, then (for "4" message) the Socket.IO
/// packet: `0` connect, `2` event, `3` ack, `4` connect error.
fn parse_socketio(text: &str) -> Incoming<'_> {
    let b = text.as_bytes();
    match b.first() {
        Some(b'0') => Incoming::EngineOpen,
        Some(b'1') => Incoming::Closing("engine.io close".into()),
        Some(b'2') => Incoming::Ping(0),
        Some(b'4') => match b.get(1) {
            Some(b'0') => Incoming::Open,
            Some(b'4') => Incoming::Closing(format!("connect error: {}", &text[2..])),
            Some(b'2') => parse_event(&text[2..]),
            Some(b'3') => {
                let digits = text[2..].bytes().take_while(u8::is_ascii_digit).count();
                let id = text[2..2 + digits].parse().unwrap_or(0);
                let ok = text[2 + digits..].starts_with("[true");
                Incoming::Reply(id, ok, (!ok).then(|| "nack".to_owned()))
            }
            _ => Incoming::Other,
        },
        _ => Incoming::Other,
    }
}

fn parse_event(json: &str) -> Incoming<'_> {
    // ["message","room","data"] or ["typing","room"]; payloads are plain
    // ASCII, so borrowed strings parse without allocation.
    if json.starts_with("[\"message\"") {
        if let Ok((_, room, data)) = serde_json::from_str::<(&str, &str, &str)>(json) {
            return Incoming::Message(room, None, data.as_bytes());
        }
        return Incoming::Error("bad message event".into());
    }
    if json.starts_with("[\"typing\"") {
        return Incoming::Typing;
    }
    if json.starts_with("[\"presence\"") {
        return Incoming::Presence;
    }
    Incoming::Other
}

// ---- what a connection says ------------------------------------------------------

/// A frame to send: (WebSocket opcode, payload).
pub type Outgoing = (u8, Vec<u8>);

pub fn hello(kind: Kind, token: &str) -> Option<Outgoing> {
    match kind {
        Kind::Herald | Kind::Sse => {
            let mut connect = wire::ConnectT::default();
            connect.protocol = Some(herald_protocol::PROTOCOL_VERSION.into());
            connect.token = Some(token.into());
            connect.client_name = Some("herald-loadgen".into());
            Some((
                OP_BINARY,
                with_encoder(|e| e.body(1, BodyT::Connect(Box::new(connect)))).to_vec(),
            ))
        }
        // Socket.IO speaks after Engine.IO's open packet (see `engine_connect`).
        Kind::SocketIo => None,
    }
}

/// The Socket.IO namespace connect, sent after Engine.IO's open packet.
pub fn engine_connect() -> Outgoing {
    (OP_TEXT, b"40".to_vec())
}

pub fn join(kind: Kind, request_id: u32, room: &str, presence: bool) -> Outgoing {
    match kind {
        Kind::Herald | Kind::Sse => {
            let mut s = wire::SubscribeT::default();
            s.room = room.into();
            s.presence = presence;
            (
                OP_BINARY,
                with_encoder(|e| e.body(request_id, BodyT::Subscribe(Box::new(s)))).to_vec(),
            )
        }
        Kind::SocketIo => (
            OP_TEXT,
            format!("42{request_id}[\"join\",{}]", json_str(room)).into_bytes(),
        ),
    }
}

pub fn leave(kind: Kind, request_id: u32, room: &str) -> Outgoing {
    match kind {
        Kind::Herald | Kind::Sse => {
            let mut s = wire::UnsubscribeT::default();
            s.room = room.into();
            (
                OP_BINARY,
                with_encoder(|e| e.body(request_id, BodyT::Unsubscribe(Box::new(s)))).to_vec(),
            )
        }
        Kind::SocketIo => (
            OP_TEXT,
            format!("42{request_id}[\"leave\",{}]", json_str(room)).into_bytes(),
        ),
    }
}

pub fn publish(kind: Kind, request_id: u32, room: &str, payload: &[u8]) -> Outgoing {
    match kind {
        Kind::Herald | Kind::Sse => {
            let p = PublishRef {
                room,
                payload,
                content_type: None,
                volatile: false,
                idempotency_key: None,
            };
            (OP_BINARY, with_encoder(|e| e.publish(request_id, &p)).to_vec())
        }
        Kind::SocketIo => {
            // The payload is the ASCII stamp plus filler: no escaping needed.
            let data = String::from_utf8_lossy(payload);
            (
                OP_TEXT,
                format!("42{request_id}[\"publish\",{},\"{data}\"]", json_str(room)).into_bytes(),
            )
        }
    }
}

pub fn typing(kind: Kind, room: &str) -> Outgoing {
    match kind {
        Kind::Herald | Kind::Sse => {
            let mut t = wire::TypingT::default();
            t.room = room.into();
            t.active = true;
            (
                OP_BINARY,
                with_encoder(|e| e.body(0, BodyT::Typing(Box::new(t)))).to_vec(),
            )
        }
        Kind::SocketIo => (OP_TEXT, format!("42[\"typing\",{}]", json_str(room)).into_bytes()),
    }
}

pub fn pong(kind: Kind, nonce: u64) -> Outgoing {
    match kind {
        Kind::Herald | Kind::Sse => (OP_BINARY, with_encoder(|e| e.pong(nonce)).to_vec()),
        Kind::SocketIo => (OP_TEXT, b"3".to_vec()),
    }
}

fn json_str(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips_and_is_text() {
        let s = Stamp {
            sched_unix_ns: 1_790_000_000_123_456_789,
            id: 0xABC_DEF0_1234,
            room_seq: 77,
        };
        let mut p = payload(64);
        write_stamp(&mut p, s);
        assert_eq!(p.len(), 64);
        assert!(std::str::from_utf8(&p).is_ok());
        assert_eq!(read_stamp(&p), Some(s));
        assert_eq!(read_stamp(b"not a stamp"), None);
        assert_eq!(read_stamp(&[b'z'; 40]), None);
    }

    #[test]
    fn masked_frames_parse_back() {
        let mut out = Vec::new();
        push_frame(&mut out, OP_TEXT, &[7u8; 300], [1, 2, 3, 4]);
        assert_eq!(out[0], 0x81);
        assert_eq!(out[1], 0x80 | 126);
        assert_eq!(u16::from_be_bytes([out[2], out[3]]), 300);
        // Unmasking restores the payload.
        let body: Vec<u8> = out[8..]
            .iter()
            .zip([1u8, 2, 3, 4].iter().cycle())
            .map(|(b, m)| b ^ m)
            .collect();
        assert_eq!(body, vec![7u8; 300]);
        assert_eq!(server_frame(&[0x82, 5]), Some((OP_BINARY, 2, 5)));
        assert_eq!(server_frame(&[0x82]), None);
    }

    #[test]
    fn socketio_packets() {
        assert_eq!(
            parse(Kind::SocketIo, OP_TEXT, b"0{\"sid\":\"a\"}"),
            Incoming::EngineOpen
        );
        assert_eq!(parse(Kind::SocketIo, OP_TEXT, b"40{\"sid\":\"b\"}"), Incoming::Open);
        assert_eq!(parse(Kind::SocketIo, OP_TEXT, b"2"), Incoming::Ping(0));
        assert_eq!(
            parse(Kind::SocketIo, OP_TEXT, b"4317[true]"),
            Incoming::Reply(17, true, None)
        );
        assert_eq!(
            parse(Kind::SocketIo, OP_TEXT, b"42[\"message\",\"r-1\",\"0123abc\"]"),
            Incoming::Message("r-1", None, b"0123abc")
        );
        assert_eq!(
            parse(Kind::SocketIo, OP_TEXT, b"42[\"typing\",\"r-1\"]"),
            Incoming::Typing
        );
        let (op, bytes) = publish(Kind::SocketIo, 99, "r-\"1", b"abc");
        assert_eq!(op, OP_TEXT);
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "4299[\"publish\",\"r-\\\"1\",\"abc\"]"
        );
    }

    #[test]
    fn herald_frames_parse() {
        let reply = with_encoder(|e| e.reply(PUBLISH_BASE + 3, wire::ErrorCode::Ok, None, 5, 9));
        assert_eq!(
            parse(Kind::Herald, OP_BINARY, &reply),
            Incoming::Reply(PUBLISH_BASE + 3, true, None)
        );
        let m = with_encoder(|e| {
            e.message(&herald_protocol::MessageRef {
                room: "chat:r-1",
                epoch: 1,
                offset: 42,
                publisher: "u",
                timestamp_ms: 0,
                payload: b"hello",
                content_type: None,
                volatile: false,
            })
        });
        assert_eq!(
            parse(Kind::Herald, OP_BINARY, &m),
            Incoming::Message("chat:r-1", Some(42), b"hello")
        );
        assert!(matches!(
            parse(Kind::Herald, OP_BINARY, b"garbage"),
            Incoming::Closing(_)
        ));
        // A publish frame decodes as what the server expects.
        let (_, f) = publish(Kind::Herald, 7, "chat:x", b"p");
        let frame = decode(&f, &DecodeLimits::CLIENT_TO_SERVER).unwrap();
        assert_eq!(frame.body_as_publish().unwrap().room(), "chat:x");
    }
}
