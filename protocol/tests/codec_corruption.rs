//! Corrupted input: every valid frame of every kind, truncated at every
//! length and with every byte overwritten by several values, must be refused
//! by `decode` (truncations) and must never make the decoder, the object
//! API, the accessors or either session panic. A server session that gets
//! undecodable bytes closes with a fatal code.

#[macro_use]
mod support;

use std::time::Instant;

use bytes::Bytes;
use herald_protocol::framing::check_datagram;
use herald_protocol::wire::{self, Body};
use herald_protocol::{
    ClientConfig, ClientEvent, ClientSession, DecodeLimits, Encoder, ErrorCode, ServerConfig, ServerEvent,
    ServerSession, body_name, decode,
};
use support::{frames, open_server};

/// Encoded frames of every kind.
fn valid_frames() -> Vec<Bytes> {
    let mut encoder = Encoder::new();
    let mut out: Vec<Bytes> = frames::every_kind().iter().map(|f| encoder.frame(f)).collect();
    // The hand-laid Message layout (with and without a content type).
    for content_type in [None, Some("application/json")] {
        out.push(encoder.message(&herald_protocol::MessageRef {
            room: "chat:lobby",
            epoch: 7,
            offset: 42,
            publisher: "ann",
            timestamp_ms: 1_700_000_000_000,
            payload: b"{\"hi\":1}",
            content_type,
            volatile: false,
        }));
    }
    out
}

/// The specialised verifier may only accept what the generic one accepts.
fn assert_fast_path_no_more_permissive(bytes: &[u8]) {
    if herald_protocol::fast_verifier_accepts(bytes) {
        let generic = wire::root_as_frame_with_opts(&DecodeLimits::SERVER_TO_CLIENT.verifier_options(), bytes);
        assert!(
            generic.is_ok(),
            "fast path accepted what the verifier refuses: {generic:?} {bytes:?}"
        );
    }
}

/// Reads every field reachable from a decoded frame through the accessors
/// (not only through `unpack`), as application code would.
fn touch(frame: &wire::Frame<'_>) -> usize {
    let mut n = frame.request_id() as usize + body_name(frame.body_type()).len();
    n += usize::from(check_datagram(frame).is_ok());
    let msg = |m: wire::Message<'_>| {
        m.room().len()
            + m.publisher().map_or(0, str::len)
            + m.payload().map_or(0, |p| p.bytes().len())
            + m.content_type().map_or(0, str::len)
            + (m.epoch() ^ m.offset() ^ m.timestamp_ms()) as usize % 7
            + usize::from(m.volatile())
    };
    if let Some(c) = frame.body_as_connect() {
        n += c.protocol().map_or(0, str::len) + c.token().map_or(0, str::len);
        n += c.client_name().map_or(0, str::len) + c.client_version().map_or(0, str::len);
        n += c.resume().map_or(0, |r| {
            r.iter()
                .map(|p| p.room().len() + (p.epoch() ^ p.offset()) as usize % 3)
                .sum()
        });
    }
    if let Some(p) = frame.body_as_publish() {
        n += p.room().len() + p.payload().map_or(0, |p| p.bytes().len());
        n += p.content_type().map_or(0, str::len) + p.idempotency_key().map_or(0, str::len);
    }
    if let Some(s) = frame.body_as_subscribed() {
        n += s.room().len() + s.history().map_or(0, |h| h.iter().map(msg).sum());
        n += s.presence().map_or(0, |p| {
            p.room().len() + p.users().map_or(0, |u| u.iter().map(str::len).sum())
        });
    }
    if let Some(m) = frame.body_as_message() {
        n += msg(m);
    }
    if let Some(h) = frame.body_as_history_page() {
        n += h.room().len() + h.messages().map_or(0, |m| m.iter().map(msg).sum());
    }
    if let Some(p) = frame.body_as_notifications_page() {
        n += p.notifications().map_or(0, |ns| {
            ns.iter()
                .map(|x| x.kind().map_or(0, str::len) + x.data().map_or(0, |d| d.bytes().len()))
                .sum()
        });
    }
    if let Some(m) = frame.body_as_metrics_update() {
        n += m.samples().map_or(0, |s| {
            s.iter()
                .map(|x| x.name().len() + x.labels().map_or(0, |l| l.iter().map(|kv| kv.key().len()).sum()))
                .sum()
        });
    }
    if let Some(e) = frame.body_as_error() {
        n += e.message().map_or(0, str::len) + e.room().map_or(0, str::len) + usize::from(e.code().0);
    }
    n
}

/// Feeds bytes to a fresh server session (awaiting Connect), to an open one,
/// and to a client session; none may panic, and a server that cannot decode
/// the bytes must close with a fatal code.
fn feed_sessions(bytes: &[u8], server_decodes: bool) {
    let now = Instant::now();
    let bytes = Bytes::copy_from_slice(bytes);

    let fresh = ServerSession::new(ServerConfig::default(), now);
    let open = open_server(ServerConfig::default(), now);
    for mut server in [fresh, open] {
        let result = server.handle_frame(now, bytes.clone());
        // Let the application side run too: unpacking requests must not panic.
        while let Some(ev) = server.poll_event() {
            if let ServerEvent::Subscribe { request_id, room, .. } = ev {
                server.subscribed(
                    request_id,
                    &herald_protocol::SubscribedRef {
                        room: &room,
                        epoch: 1,
                        offset: 0,
                        recovered: false,
                        history: &[],
                        presence: None,
                    },
                );
            }
        }
        if !server_decodes {
            assert!(result.is_err(), "undecodable bytes accepted");
        }
        if result.is_err() {
            assert!(server.is_closed(), "an undecodable frame must close the session");
            let (code, _) = server.close_reason().expect("a close reason");
            assert!(code.is_fatal(), "closed with non-fatal {code:?}");
            let last = std::iter::from_fn(|| server.poll_transmit())
                .last()
                .expect("closing frame");
            assert_eq!(frames::error_of(&last).0, code);
        }
        while server.poll_transmit().is_some() {}
    }

    let mut client = ClientSession::new(ClientConfig::default(), now);
    client.connect(now);
    while client.poll_transmit().is_some() {}
    if client.handle_frame(now, bytes).is_err() {
        let events: Vec<_> = std::iter::from_fn(|| client.poll_event()).collect();
        assert!(
            matches!(events.last(), Some(ClientEvent::Disconnected { code, .. }) if code.is_fatal()),
            "{events:?}"
        );
    }
    while client.poll_event().is_some() {}
}

/// Decodes with both limit sets and exercises whatever decodes.
fn check_corrupted(bytes: &[u8]) {
    assert_fast_path_no_more_permissive(bytes);
    let server_decodes = decode(bytes, &DecodeLimits::CLIENT_TO_SERVER).is_ok();
    if let Ok(frame) = decode(bytes, &DecodeLimits::SERVER_TO_CLIENT) {
        let unpacked = frame.unpack();
        assert_eq!(unpacked.body.body_type(), frame.body_type());
        std::hint::black_box(touch(&frame));
        // Whatever decodes re-encodes to something that decodes the same
        // (compared through Debug: a corrupted double may be NaN).
        let again = Encoder::new().frame(&unpacked);
        assert_eq!(format!("{:?}", frames::parse(&again)), format!("{unpacked:?}"));
    }
    feed_sessions(bytes, server_decodes);
}

#[test]
fn truncated_frames_are_refused() {
    for bytes in valid_frames() {
        let kind = frames::kind(&bytes);
        for len in 0..bytes.len() {
            let truncated = &bytes[..len];
            match decode(truncated, &DecodeLimits::SERVER_TO_CLIENT) {
                Err(_) => {}
                // The builder pads objects to their alignment; cutting only
                // trailing padding leaves every byte that is referenced, and
                // then the frame must still be exactly the original.
                Ok(frame) => {
                    assert!(
                        bytes[len..].iter().all(|b| *b == 0),
                        "{kind} truncated to {len}/{} bytes decoded",
                        bytes.len()
                    );
                    assert_eq!(frame.unpack(), frames::parse(&bytes), "{kind} truncated to {len}");
                }
            }
            check_corrupted(truncated);
        }
    }
}

#[test]
fn corrupted_bytes_never_panic_and_fail_closed() {
    let mut decoded_anyway = 0usize;
    let mut refused = 0usize;
    for bytes in valid_frames() {
        for pos in 0..bytes.len() {
            let original = bytes[pos];
            for value in [
                0x00,
                0xff,
                0x7f,
                0x80,
                original ^ 0x01,
                original ^ 0x10,
                original.wrapping_add(4),
            ] {
                if value == original {
                    continue;
                }
                let mut corrupted = bytes.to_vec();
                corrupted[pos] = value;
                match decode(&corrupted, &DecodeLimits::SERVER_TO_CLIENT) {
                    Ok(_) => decoded_anyway += 1,
                    Err(_) => refused += 1,
                }
                check_corrupted(&corrupted);
            }
        }
    }
    // Both outcomes happen: the test exercises the verifier's refusals and
    // the accessors on frames that verify but carry garbage.
    assert!(
        refused > 1_000 && decoded_anyway > 1_000,
        "{refused} refused, {decoded_anyway} decoded"
    );
}

#[test]
fn garbage_never_panics() {
    // A small deterministic generator (xorshift) for unstructured input,
    // including inputs that carry the right identifier.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..5_000 {
        let len = (next() % 96) as usize;
        let mut buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if i % 2 == 0 && buf.len() >= 8 {
            buf[4..8].copy_from_slice(b"HRL1");
            // A root offset that lands inside the buffer.
            let root = (next() % buf.len() as u64) as u32 & !3;
            buf[..4].copy_from_slice(&root.to_le_bytes());
        }
        check_corrupted(&buf);
    }
}

#[test]
fn undecodable_input_closes_the_server_with_the_matching_code() {
    let now = Instant::now();
    let cases: Vec<(Bytes, ErrorCode)> = vec![
        (Bytes::from_static(b""), ErrorCode::MalformedFrame),
        (Bytes::from_static(b"HRL1HRL1HRL1"), ErrorCode::MalformedFrame),
        (Bytes::from(vec![0u8; 70_000]), ErrorCode::FrameTooLarge),
        (frames::encode(1, wire::BodyT::NONE), ErrorCode::MalformedFrame),
    ];
    for (bytes, code) in cases {
        let mut server = ServerSession::new(ServerConfig::default(), now);
        assert!(server.handle_frame(now, bytes).is_err());
        assert_eq!(server.close_reason().map(|(c, _)| c), Some(code));
        let out: Vec<_> = std::iter::from_fn(|| server.poll_transmit()).collect();
        assert_eq!(frames::error_of(&out[0]).0, code);
    }
}

#[test]
fn every_kind_is_handled_by_both_sessions_without_panicking() {
    // Valid frames of every kind, in every session state: the side that may
    // not receive a kind refuses it with UnsupportedFrame.
    for bytes in valid_frames() {
        let body = decode(&bytes, &DecodeLimits::SERVER_TO_CLIENT)
            .expect("valid")
            .body_type();
        let now = Instant::now();
        let mut server = open_server(ServerConfig::default(), now);
        let result = server.handle_frame(now, bytes.clone());
        if herald_protocol::is_client_body(body) {
            assert!(result.is_ok(), "{body:?}");
        } else {
            assert!(result.is_err(), "{body:?}");
            assert_eq!(server.close_reason().map(|(c, _)| c), Some(ErrorCode::UnsupportedFrame));
        }
        let mut client = ClientSession::new(ClientConfig::default(), now);
        client.connect(now);
        let result = client.handle_frame(now, bytes);
        assert_eq!(result.is_ok(), herald_protocol::is_server_body(body), "{body:?}");
        if body == Body::Connected {
            assert!(client.is_open());
        }
    }
}
