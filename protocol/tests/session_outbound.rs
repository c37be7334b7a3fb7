//! The outbound limit of a server session: volatile frames are dropped first,
//! then the connection is closed as a slow consumer, and nothing a client
//! does can grow the queue past the limit.

#[macro_use]
mod support;

use std::time::Instant;

use bytes::Bytes;
use herald_protocol::{
    ErrorCode, MessageRef, SendOutcome, ServerConfig, ServerEvent, ServerSession, SessionLimits, SubscribedRef,
    with_encoder,
};
use support::{frames, open_server, server_events, transmitted};

const LIMIT: usize = 1_000;

fn limited_server(now: Instant) -> ServerSession {
    open_server(
        ServerConfig {
            limits: SessionLimits {
                max_outbound_bytes: LIMIT,
                ..SessionLimits::default()
            },
            ..ServerConfig::default()
        },
        now,
    )
}

fn message(payload: &str, volatile: bool) -> Bytes {
    with_encoder(|e| {
        e.message(&MessageRef {
            room: "dash:cpu",
            epoch: 1,
            offset: u64::from(!volatile),
            payload: payload.as_bytes(),
            volatile,
            ..MessageRef::default()
        })
    })
}

#[test]
fn volatile_frames_are_dropped_first_then_the_slow_consumer_is_closed() {
    let now = Instant::now();
    let mut server = limited_server(now);

    // Fill the queue with volatile frames.
    let volatile = message(&"v".repeat(100), true);
    let mut queued = 0;
    while server.outbound_bytes() + volatile.len() <= LIMIT {
        assert_eq!(server.send(volatile.clone(), true), SendOutcome::Queued);
        queued += 1;
    }
    assert!(queued >= 3);
    let full = server.outbound_bytes();
    // One more volatile frame does not fit: it is the one dropped.
    assert_eq!(server.send(volatile.clone(), true), SendOutcome::DroppedVolatile);
    assert_eq!(server.outbound_bytes(), full);

    // A durable frame that does not fit evicts the queued volatile ones.
    let durable = message(&"d".repeat(100), false);
    assert_eq!(server.send(durable.clone(), false), SendOutcome::Queued);
    assert_eq!(server.outbound_bytes(), durable.len());
    assert!(server.is_open());

    // Durable frames up to the limit are queued, the next one closes.
    while server.outbound_bytes() + durable.len() <= LIMIT {
        assert_eq!(server.send(durable.clone(), false), SendOutcome::Queued);
    }
    let durable_queued = server.outbound_bytes() / durable.len();
    assert_eq!(server.send(durable.clone(), false), SendOutcome::SlowConsumer);
    assert!(server.is_closed());
    assert_eq!(server.close_reason().map(|(c, _)| c), Some(ErrorCode::SlowConsumer));
    assert!(matches!(
        server_events(&mut server)[..],
        [ServerEvent::Closed {
            code: ErrorCode::SlowConsumer,
            ..
        }]
    ));
    assert_eq!(server.send(durable.clone(), false), SendOutcome::Closed);
    assert_eq!(server.send(volatile, true), SendOutcome::Closed);

    // What was queued still goes out, in order, then the closing frame.
    let out = transmitted(&mut server);
    assert_eq!(out.len(), durable_queued + 1);
    assert!(out[..durable_queued].iter().all(|f| *f == durable));
    assert_eq!(frames::error_of(&out[durable_queued]).0, ErrorCode::SlowConsumer);
    assert_eq!(server.outbound_bytes(), 0);
}

#[test]
fn taking_frames_frees_room_in_the_queue() {
    let now = Instant::now();
    let mut server = limited_server(now);
    let durable = message(&"d".repeat(300), false);
    for _ in 0..10 {
        // The transport keeps up: one out for each one in.
        assert_eq!(server.send(durable.clone(), false), SendOutcome::Queued);
        assert_eq!(server.send(durable.clone(), false), SendOutcome::Queued);
        assert_eq!(server.poll_transmit(), Some(durable.clone()));
        assert_eq!(server.poll_transmit(), Some(durable.clone()));
    }
    assert_eq!(server.outbound_bytes(), 0);
    assert!(server.is_open());
}

#[test]
fn a_client_that_never_reads_cannot_grow_the_queue_with_pings() {
    let now = Instant::now();
    let mut server = limited_server(now);
    // Pings keep coming; the transport never takes a frame.
    for nonce in 0..1_000 {
        server.handle_frame(now, frames::ping(nonce)).expect("valid");
    }
    assert!(
        server.outbound_bytes() <= LIMIT,
        "{} bytes queued for a client that reads nothing",
        server.outbound_bytes()
    );
}

#[test]
fn a_client_that_never_reads_cannot_grow_the_queue_with_requests() {
    let now = Instant::now();
    let mut server = limited_server(now);
    // Unsubscribes of rooms never joined are answered by the session itself.
    for id in 1..=1_000 {
        let frame = frames::encode(
            id,
            herald_protocol::wire::BodyT::Unsubscribe(Box::new(obj!(herald_protocol::wire::UnsubscribeT {
                room: "never:joined".into(),
            }))),
        );
        server.handle_frame(now, frame).expect("valid");
    }
    assert!(
        server.outbound_bytes() <= LIMIT + 200,
        "{} bytes queued",
        server.outbound_bytes()
    );
    assert_eq!(server.close_reason().map(|(c, _)| c), Some(ErrorCode::SlowConsumer));
}

#[test]
fn a_client_that_never_reads_cannot_grow_the_queue_with_subscribes() {
    let now = Instant::now();
    let mut server = limited_server(now);
    // Subscribing again to the same room is allowed, and each answer carries
    // history: the application answers every one.
    let payload = "h".repeat(100);
    let history = [MessageRef {
        room: "chat:lobby",
        epoch: 1,
        offset: 1,
        payload: payload.as_bytes(),
        ..MessageRef::default()
    }];
    for id in 1..=100 {
        server
            .handle_frame(now, frames::subscribe(id, "chat:lobby"))
            .expect("valid");
        while let Some(ev) = server.poll_event() {
            if let ServerEvent::Subscribe { request_id, room, .. } = ev {
                server.subscribed(
                    request_id,
                    &SubscribedRef {
                        room: &room,
                        epoch: 1,
                        offset: 1,
                        recovered: false,
                        history: &history,
                        presence: None,
                    },
                );
            }
        }
    }
    assert!(
        server.outbound_bytes() <= LIMIT + 200,
        "{} bytes queued",
        server.outbound_bytes()
    );
    assert_eq!(server.close_reason().map(|(c, _)| c), Some(ErrorCode::SlowConsumer));
}

#[test]
fn the_closing_frame_gets_out_past_the_limit_and_is_last() {
    let now = Instant::now();
    let mut server = limited_server(now);
    let durable = message(&"d".repeat(300), false);
    assert_eq!(server.send(durable.clone(), false), SendOutcome::Queued);
    assert_eq!(server.send(durable.clone(), false), SendOutcome::Queued);
    assert_eq!(
        server.send(message(&"v".repeat(400), true), true),
        SendOutcome::DroppedVolatile
    );
    server.go_away(ErrorCode::ServerShutdown, "restart", std::time::Duration::from_secs(1));
    // The application may still answer events it had already taken.
    server.ack(7, herald_protocol::Position { epoch: 1, offset: 1 });
    server.reply(8, ErrorCode::Ok, None);
    server.resume_failed("chat:lobby", ErrorCode::NotFound, "gone");
    let out = transmitted(&mut server);
    assert_eq!(out.len(), 3, "queued frames, then GoAway, nothing after");
    assert_eq!(frames::kind(&out[2]), "GoAway");
}

fn offset_of(frame: &[u8]) -> (String, u64) {
    let f = herald_protocol::decode(frame, &herald_protocol::DecodeLimits::SERVER_TO_CLIENT).expect("a valid frame");
    let m = f.body_as_message().expect("a message");
    (m.room().to_owned(), m.offset())
}

fn numbered(room: &str, offset: u64) -> Bytes {
    with_encoder(|e| {
        e.message(&MessageRef {
            room,
            epoch: 1,
            offset,
            payload: &[b'x'; 100],
            ..MessageRef::default()
        })
    })
}

#[test]
fn a_conflated_room_keeps_its_newest_message_and_never_closes_the_reader() {
    let now = Instant::now();
    let mut server = limited_server(now);
    let (a, b): (std::sync::Arc<str>, std::sync::Arc<str>) = ("dash:a".into(), "dash:b".into());
    // Far more than the limit holds, into two rooms, none read meanwhile.
    assert_eq!(server.send_conflated(numbered("dash:a", 1), &a), SendOutcome::Queued);
    assert_eq!(server.send_conflated(numbered("dash:b", 1), &b), SendOutcome::Queued);
    for offset in 2..=200 {
        assert_eq!(
            server.send_conflated(numbered("dash:a", offset), &a),
            SendOutcome::Replaced
        );
        assert!(server.outbound_bytes() <= LIMIT);
    }
    assert_eq!(server.send_conflated(numbered("dash:b", 2), &b), SendOutcome::Replaced);
    assert!(server.is_open());
    // The reader gets the newest of each room, in the order the rooms
    // first queued: the offsets it skipped show as a jump.
    let got: Vec<(String, u64)> = transmitted(&mut server).iter().map(|f| offset_of(f)).collect();
    assert_eq!(got, [("dash:a".to_owned(), 200), ("dash:b".to_owned(), 2)]);
    // Once written, the next message queues anew.
    assert_eq!(server.send_conflated(numbered("dash:a", 201), &a), SendOutcome::Queued);
}

#[test]
fn conflation_does_not_reorder_or_replace_other_frames() {
    let now = Instant::now();
    let mut server = limited_server(now);
    let a: std::sync::Arc<str> = "dash:a".into();
    let plain = numbered("chat:x", 1);
    assert_eq!(server.send_conflated(numbered("dash:a", 1), &a), SendOutcome::Queued);
    assert_eq!(server.send(plain.clone(), false), SendOutcome::Queued);
    assert_eq!(server.send_conflated(numbered("dash:a", 2), &a), SendOutcome::Replaced);
    let got: Vec<(String, u64)> = transmitted(&mut server).iter().map(|f| offset_of(f)).collect();
    assert_eq!(got, [("dash:a".to_owned(), 2), ("chat:x".to_owned(), 1)]);
    // Unconflated frames still close a reader that does not keep up.
    while server.send(plain.clone(), false) == SendOutcome::Queued {}
    assert!(server.is_closed());
    assert_eq!(server.send_conflated(numbered("dash:a", 3), &a), SendOutcome::Closed);
}
