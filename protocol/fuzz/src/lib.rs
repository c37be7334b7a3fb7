//! The fuzz harness for the herald/1 decoder, shared by the `decode` fuzz
//! target (libFuzzer) and the `seeds` example (seed corpus generation and
//! replay of inputs on a plain stable build).
//!
//! [`fuzz_decode`] feeds one input to everything that parses untrusted bytes:
//!
//! 1. [`herald_protocol::decode`] with both [`DecodeLimits`] presets; on
//!    success the frame is unpacked (object API), checked with
//!    [`check_datagram`], and round-tripped: re-encoding the unpacked frame
//!    must give a frame that decodes, and encoding that again must give the
//!    same bytes.
//! 2. The whole input as one frame to a fresh [`ServerSession`] (awaiting
//!    `Connect`), to an open one (after `Connect` and `accept`), to a
//!    connecting [`ClientSession`] and to an open, subscribed one.
//! 3. The input as a QUIC stream: a [`LengthPrefixedReader`] fed all at once
//!    and another fed in small chunks must yield the same frames; each frame
//!    goes, in order, to the open server and client sessions, which answer
//!    like an application would (subscribe, ack, reply), with time moving.
//!
//! Invariants asserted (a panic is a bug): every frame a server session
//! transmits decodes with [`DecodeLimits::SERVER_TO_CLIENT`] and is a
//! server body; every frame a client session transmits decodes with
//! [`DecodeLimits::CLIENT_TO_SERVER`] and is a client body; a session that
//! returned an error from `handle_frame` is closed; both stream readers agree.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use herald_protocol::framing::{LengthPrefixedReader, check_datagram, write_length_prefixed};
use herald_protocol::wire::{self, BodyT};
use herald_protocol::{
    Accept, ClientConfig, ClientEvent, ClientSession, DecodeLimits, Encoder, ErrorCode, MessageRef, PROTOCOL_VERSION,
    Position, PublishRef, ServerConfig, ServerEvent, ServerSession, SubscribeOptions, SubscribedRef, decode,
    is_client_body, is_server_body,
};

/// The room the harness's sessions subscribe to.
pub const ROOM: &str = "chat:lobby";

/// Runs every check on one input. Panics on a bug.
pub fn fuzz_decode(data: &[u8]) {
    let t0 = Instant::now();
    // The specialised Message/Publish verifier may only accept what the
    // generic FlatBuffers verifier accepts.
    if herald_protocol::fast_verifier_accepts(data) {
        let opts = DecodeLimits::SERVER_TO_CLIENT.verifier_options();
        if let Err(e) = herald_protocol::wire::root_as_frame_with_opts(&opts, data) {
            panic!("fast verifier accepted a frame the generic verifier refuses: {e}");
        }
    }
    decode_both_presets(data);

    let input = Bytes::copy_from_slice(data);

    // The whole input as one frame, to sessions in each state.
    let mut fresh = ServerSession::new(ServerConfig::default(), t0);
    server_frame(&mut fresh, t0, input.clone());
    drain_server(&mut fresh, t0);

    let mut server = open_server(t0);
    server_frame(&mut server, t0, input.clone());
    drain_server(&mut server, t0);

    let mut connecting = ClientSession::new(ClientConfig::default(), t0);
    connecting.connect(t0);
    drain_client(&mut connecting);
    client_frame(&mut connecting, t0, input.clone());
    drain_client(&mut connecting);

    let mut client = open_client(t0);
    client_frame(&mut client, t0, input);
    drain_client(&mut client);

    // The input as a length-prefixed stream of frames.
    let frames = read_stream(data, DecodeLimits::CLIENT_TO_SERVER.max_frame_bytes);
    let mut server = open_server(t0);
    let mut client = open_client(t0);
    let mut now = t0;
    for frame in frames {
        now += Duration::from_millis(7);
        decode_both_presets(&frame);
        server_frame(&mut server, now, frame.clone());
        drain_server(&mut server, now);
        client_frame(&mut client, now, frame);
        drain_client(&mut client);
    }
    // Timers: heartbeats, request timeouts, idle timeouts.
    for later in [
        Duration::from_secs(11),
        Duration::from_secs(16),
        Duration::from_secs(120),
    ] {
        server.handle_timeout(now + later);
        drain_server(&mut server, now + later);
        client.handle_timeout(now + later);
        drain_client(&mut client);
    }
}

fn decode_both_presets(data: &[u8]) {
    for limits in [DecodeLimits::CLIENT_TO_SERVER, DecodeLimits::SERVER_TO_CLIENT] {
        let Ok(frame) = decode(data, &limits) else { continue };
        let _ = check_datagram(&frame);
        let unpacked = frame.unpack();
        round_trip(&unpacked, &limits);
    }
}

/// pack(unpack(frame)) must decode, and packing its unpacked form again must
/// give the same bytes (the first round may normalise, e.g. shared strings).
fn round_trip(unpacked: &wire::FrameT, limits: &DecodeLimits) {
    let mut enc = Encoder::new();
    let once = enc.frame(unpacked);
    // Unpacking expands data the input shared between several references,
    // so the re-encoded frame may be larger than the input (by at most the
    // verifier's apparent-size bound): decode it without the size limit.
    let relaxed = DecodeLimits {
        max_frame_bytes: once.len().max(limits.max_frame_bytes),
        ..*limits
    };
    let again = match decode(&once, &relaxed) {
        Ok(f) => f.unpack(),
        Err(e) => panic!("re-encoded frame does not decode: {e}; frame: {unpacked:?}"),
    };
    let twice = enc.frame(&again);
    assert_eq!(once, twice, "encoding is not stable across an unpack/pack round trip");
}

fn server_frame(s: &mut ServerSession, now: Instant, frame: Bytes) {
    let was_closed = s.is_closed();
    if s.handle_frame(now, frame).is_err() {
        assert!(s.is_closed(), "a server session that rejected a frame must be closed");
        assert!(!was_closed, "a closed server session must ignore frames");
    }
}

fn client_frame(c: &mut ClientSession, now: Instant, frame: Bytes) {
    if c.handle_frame(now, frame).is_err() {
        assert!(
            !c.is_open(),
            "a client session that rejected a frame must be disconnected"
        );
    }
}

/// Answers events like an application would, and checks every transmitted
/// frame.
fn drain_server(s: &mut ServerSession, now: Instant) {
    while let Some(event) = s.poll_event() {
        match event {
            ServerEvent::Connect { .. } => s.accept(now, &accept()),
            ServerEvent::Subscribe { request_id, room, .. } => {
                let history = [MessageRef {
                    room: &room,
                    epoch: 1,
                    offset: 1,
                    publisher: "u",
                    timestamp_ms: 1,
                    payload: b"hi",
                    content_type: None,
                    volatile: false,
                }];
                s.subscribed(
                    request_id,
                    &SubscribedRef {
                        room: &room,
                        epoch: 1,
                        offset: 1,
                        recovered: true,
                        history: &history,
                        presence: None,
                    },
                );
            }
            ServerEvent::Publish {
                request_id,
                room,
                payload,
                volatile,
                ..
            } => {
                // Fan the message back out to this connection, then ack it.
                let m = Encoder::new().message(&MessageRef {
                    room: &room,
                    epoch: 1,
                    offset: if volatile { 0 } else { 2 },
                    publisher: "u",
                    timestamp_ms: 2,
                    payload: &payload,
                    content_type: None,
                    volatile,
                });
                let _ = s.send(m, volatile);
                s.ack(request_id, Position { epoch: 1, offset: 2 });
            }
            ServerEvent::Request { request_id, .. } => s.reply(request_id, ErrorCode::Ok, None),
            ServerEvent::Unsubscribed { .. }
            | ServerEvent::Typing { .. }
            | ServerEvent::RateLimited { .. }
            | ServerEvent::Closed { .. } => {}
        }
    }
    while let Some(frame) = s.poll_transmit() {
        match decode(&frame, &DecodeLimits::SERVER_TO_CLIENT) {
            Ok(f) => assert!(
                is_server_body(f.body_type()),
                "server sent a client-only body {:?}",
                f.body_type()
            ),
            Err(e) => panic!("server transmitted a frame a client cannot decode: {e}"),
        }
    }
}

fn drain_client(c: &mut ClientSession) {
    while let Some(event) = c.poll_event() {
        if let ClientEvent::Message(d) = event {
            // Payloads are zero-copy slices of the received frame.
            std::hint::black_box(d.payload.len());
        }
    }
    while let Some(frame) = c.poll_transmit() {
        match decode(&frame, &DecodeLimits::CLIENT_TO_SERVER) {
            Ok(f) => assert!(
                is_client_body(f.body_type()),
                "client sent a server-only body {:?}",
                f.body_type()
            ),
            Err(e) => panic!("client transmitted a frame a server cannot decode: {e}"),
        }
    }
}

fn accept() -> Accept {
    Accept {
        session_id: "s1".into(),
        node_id: "n1".into(),
        user_id: "u1".into(),
        server_time_ms: 1,
    }
}

static CONNECT: OnceLock<Bytes> = OnceLock::new();
static CONNECTED: OnceLock<Bytes> = OnceLock::new();
static SUBSCRIBED: OnceLock<Bytes> = OnceLock::new();

/// A setup frame, encoded once per process (cloning `Bytes` is a refcount).
fn cached(cell: &OnceLock<Bytes>, make: impl FnOnce() -> Bytes) -> Bytes {
    cell.get_or_init(make).clone()
}

/// A server session after `Connect` and `accept`.
pub fn open_server(now: Instant) -> ServerSession {
    let mut s = ServerSession::new(ServerConfig::default(), now);
    let connect = cached(&CONNECT, seed_connect);
    if let Err(e) = s.handle_frame(now, connect) {
        panic!("a valid Connect was refused: {e}");
    }
    drain_server(&mut s, now);
    assert!(s.is_open(), "server session did not open");
    s
}

/// A client session after `Connected`, subscribed to [`ROOM`] (request id 1).
pub fn open_client(now: Instant) -> ClientSession {
    let mut c = ClientSession::new(ClientConfig::default(), now);
    c.connect(now);
    if let Err(e) = c.handle_frame(now, cached(&CONNECTED, seed_connected)) {
        panic!("a valid Connected was refused: {e}");
    }
    c.subscribe(now, ROOM, SubscribeOptions::default());
    if let Err(e) = c.handle_frame(now, cached(&SUBSCRIBED, || seed_subscribed(1))) {
        panic!("a valid Subscribed was refused: {e}");
    }
    drain_client(&mut c);
    assert!(c.is_open(), "client session did not open");
    c
}

/// Splits `data` as a length-prefixed stream, checking that a reader fed
/// everything at once and one fed in small chunks agree. Stops at the first
/// error (the transport would close).
fn read_stream(data: &[u8], max: usize) -> Vec<Bytes> {
    let mut whole = LengthPrefixedReader::new(max);
    whole.extend(data);
    let mut frames = Vec::new();
    let whole_end = loop {
        match whole.next_frame() {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => break Ok(whole.buffered()),
            Err(e) => break Err(e),
        }
    };

    let chunk = 1 + data.len() % 13;
    let mut chunked = LengthPrefixedReader::new(max);
    let mut got = Vec::new();
    let mut chunked_end = None;
    'feed: for piece in data.chunks(chunk) {
        chunked.extend(piece);
        loop {
            match chunked.next_frame() {
                Ok(Some(f)) => got.push(f),
                Ok(None) => break,
                Err(e) => {
                    chunked_end = Some(Err(e));
                    break 'feed;
                }
            }
        }
    }
    let chunked_end = chunked_end.unwrap_or(Ok(chunked.buffered()));
    assert_eq!(frames, got, "chunked and whole stream readers disagree on frames");
    assert_eq!(
        whole_end, chunked_end,
        "chunked and whole stream readers disagree on the end"
    );
    frames
}

// ---- seeds -----------------------------------------------------------------

/// Builds an object-API value (the generated `...T` structs are
/// `#[non_exhaustive]`, so they cannot be written as struct literals here).
macro_rules! obj {
    ($t:path { $($field:ident : $value:expr),* $(,)? }) => {{
        let mut o = <$t>::default();
        $(o.$field = $value;)*
        o
    }};
}

fn body(request_id: u32, body: BodyT) -> Bytes {
    Encoder::new().body(request_id, body)
}

fn seed_connect() -> Bytes {
    body(
        0,
        BodyT::Connect(Box::new(obj!(wire::ConnectT {
            protocol: Some(PROTOCOL_VERSION.into()),
            token: Some("token".into()),
            client_name: Some("fuzz".into()),
            client_version: Some("0".into()),
            resume: Some(vec![obj!(wire::RoomPositionT {
                room: ROOM.into(),
                epoch: 1,
                offset: 3,
            })]),
        }))),
    )
}

fn seed_connected() -> Bytes {
    body(
        0,
        BodyT::Connected(Box::new(obj!(wire::ConnectedT {
            session_id: Some("s1".into()),
            node_id: Some("n1".into()),
            user_id: Some("u1".into()),
            server_time_ms: 1,
            heartbeat_interval_ms: 15_000,
            limits: Some(Box::new(obj!(wire::LimitsT {
                max_frame_bytes: 65_536,
                max_payload_bytes: 32_768,
                max_rooms: 256,
                max_room_name_bytes: 128,
                publish_rate_per_sec: 50,
                publish_burst: 100,
                max_outbound_bytes: 1 << 20,
            }))),
        }))),
    )
}

fn seed_message(offset: u64, volatile: bool) -> MessageRef<'static> {
    MessageRef {
        room: ROOM,
        epoch: 1,
        offset,
        publisher: "u2",
        timestamp_ms: 1_795_392_000_000,
        payload: b"{\"text\":\"hello\"}",
        content_type: Some("application/json"),
        volatile,
    }
}

fn seed_subscribed(request_id: u32) -> Bytes {
    let history = [seed_message(1, false), seed_message(2, false)];
    Encoder::new().subscribed(
        request_id,
        &SubscribedRef {
            room: ROOM,
            epoch: 1,
            offset: 2,
            recovered: true,
            history: &history,
            presence: Some(herald_protocol::PresenceRef {
                users: &["u1", "u2"],
                count: 3,
            }),
        },
    )
}

/// Valid frames of every body kind, and length-prefixed sessions, named for
/// the corpus directory.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut enc = Encoder::new();
    let kv = || {
        Some(vec![obj!(wire::KeyValueT {
            key: "k".into(),
            value: Some("v".into()),
        })])
    };
    let publish = enc.publish(
        2,
        &PublishRef {
            room: ROOM,
            payload: b"{\"text\":\"hi\"}",
            content_type: Some("application/json"),
            volatile: false,
            idempotency_key: Some("c-1"),
        },
    );
    let volatile_publish = enc.publish(
        3,
        &PublishRef {
            room: ROOM,
            payload: b"x",
            content_type: None,
            volatile: true,
            idempotency_key: None,
        },
    );
    let mut frames: Vec<(&str, Bytes)> = vec![
        ("connect", seed_connect()),
        (
            "subscribe",
            body(
                1,
                BodyT::Subscribe(Box::new(obj!(wire::SubscribeT {
                    room: ROOM.into(),
                    history: 10,
                    recover_epoch: 1,
                    recover_offset: 2,
                    presence: true,
                }))),
            ),
        ),
        (
            "unsubscribe",
            body(
                4,
                BodyT::Unsubscribe(Box::new(obj!(wire::UnsubscribeT { room: ROOM.into() }))),
            ),
        ),
        ("publish", publish),
        ("publish-volatile", volatile_publish),
        (
            "typing",
            body(
                0,
                BodyT::Typing(Box::new(obj!(wire::TypingT {
                    room: ROOM.into(),
                    active: true,
                }))),
            ),
        ),
        (
            "presence-query",
            body(
                5,
                BodyT::PresenceQuery(Box::new(obj!(wire::PresenceQueryT { room: ROOM.into() }))),
            ),
        ),
        (
            "history-query",
            body(
                6,
                BodyT::HistoryQuery(Box::new(obj!(wire::HistoryQueryT {
                    room: ROOM.into(),
                    before: 10,
                    after: 1,
                    limit: 5,
                }))),
            ),
        ),
        (
            "notifications-query",
            body(
                7,
                BodyT::NotificationsQuery(Box::new(obj!(wire::NotificationsQueryT {
                    unread_only: false,
                    before_id: 9,
                    limit: 3,
                }))),
            ),
        ),
        (
            "notifications-mark-read",
            body(
                8,
                BodyT::NotificationsMarkRead(Box::new(obj!(wire::NotificationsMarkReadT {
                    ids: Some(vec![1, 2, 3]),
                    up_to: 4,
                }))),
            ),
        ),
        (
            "analytics-event",
            body(
                9,
                BodyT::AnalyticsEvent(Box::new(obj!(wire::AnalyticsEventT {
                    name: "click".into(),
                    value: 2.5,
                    dimensions: kv(),
                }))),
            ),
        ),
        (
            "metrics-subscribe",
            body(
                10,
                BodyT::MetricsSubscribe(Box::new(obj!(wire::MetricsSubscribeT {
                    names: Some(vec!["connections".into()]),
                    interval_ms: 500,
                }))),
            ),
        ),
        ("ping", enc.ping(42)),
        ("pong", enc.pong(42)),
        ("connected", seed_connected()),
        ("reply", enc.reply(2, ErrorCode::Ok, None, 1, 3)),
        (
            "reply-error",
            enc.reply(2, ErrorCode::RateLimited, Some("slow down"), 0, 0),
        ),
        ("subscribed", seed_subscribed(1)),
        ("subscribed-resume", seed_subscribed(0)),
        ("message", enc.message(&seed_message(3, false))),
        ("message-volatile", enc.message(&seed_message(0, true))),
        (
            "presence-join",
            body(
                0,
                BodyT::PresenceJoin(Box::new(obj!(wire::PresenceJoinT {
                    room: ROOM.into(),
                    user: "u3".into(),
                }))),
            ),
        ),
        (
            "presence-leave",
            body(
                0,
                BodyT::PresenceLeave(Box::new(obj!(wire::PresenceLeaveT {
                    room: ROOM.into(),
                    user: "u3".into(),
                }))),
            ),
        ),
        (
            "presence-snapshot",
            body(
                5,
                BodyT::PresenceSnapshot(Box::new(obj!(wire::PresenceSnapshotT {
                    room: ROOM.into(),
                    users: Some(vec!["u1".into(), "u2".into()]),
                    count: 2,
                    truncated: false,
                }))),
            ),
        ),
        (
            "typing-event",
            body(
                0,
                BodyT::TypingEvent(Box::new(obj!(wire::TypingEventT {
                    room: ROOM.into(),
                    user: "u2".into(),
                    active: true,
                }))),
            ),
        ),
        (
            "history-page",
            body(
                6,
                BodyT::HistoryPage(Box::new(obj!(wire::HistoryPageT {
                    room: ROOM.into(),
                    epoch: 1,
                    messages: Some(vec![obj!(wire::MessageT {
                        room: ROOM.into(),
                        epoch: 1,
                        offset: 1,
                        publisher: Some("u2".into()),
                        timestamp_ms: 5,
                        payload: Some(b"old".to_vec()),
                        content_type: None,
                        volatile: false,
                    })]),
                    has_more: true,
                }))),
            ),
        ),
        ("notification", body(0, BodyT::Notification(Box::new(notification())))),
        (
            "notifications-page",
            body(
                7,
                BodyT::NotificationsPage(Box::new(obj!(wire::NotificationsPageT {
                    notifications: Some(vec![notification()]),
                    unread: 1,
                    has_more: false,
                }))),
            ),
        ),
        (
            "metrics-update",
            body(
                0,
                BodyT::MetricsUpdate(Box::new(obj!(wire::MetricsUpdateT {
                    timestamp_ms: 9,
                    samples: Some(vec![obj!(wire::MetricSampleT {
                        name: "connections".into(),
                        value: 10.0,
                        labels: kv(),
                    })]),
                }))),
            ),
        ),
        (
            "alert",
            body(
                0,
                BodyT::Alert(Box::new(obj!(wire::AlertT {
                    name: "cpu".into(),
                    severity: wire::Severity::Warning,
                    message: Some("high".into()),
                    value: 0.9,
                    threshold: 0.8,
                    timestamp_ms: 9,
                }))),
            ),
        ),
        ("error", enc.error(0, ErrorCode::NotFound, "no such room", Some(ROOM))),
        (
            "error-fatal",
            enc.error(0, ErrorCode::MalformedFrame, "bad frame", None),
        ),
        ("go-away", enc.go_away(ErrorCode::ServerShutdown, "bye", 1000)),
    ];

    // Length-prefixed conversations: client -> server, and server -> client.
    let find = |name: &str| {
        frames
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, b)| b.clone())
            .unwrap_or_default()
    };
    let stream = |parts: &[Bytes]| {
        let mut out = BytesMut::new();
        for p in parts {
            write_length_prefixed(p, &mut out);
        }
        out.freeze()
    };
    let c2s = stream(&[
        find("subscribe"),
        find("publish"),
        find("typing"),
        find("presence-query"),
        find("ping"),
        find("unsubscribe"),
    ]);
    let s2c = stream(&[
        find("subscribed-resume"),
        find("message"),
        enc.message(&seed_message(4, false)),
        find("message-volatile"),
        find("presence-join"),
        find("ping"),
        find("go-away"),
    ]);
    frames.push(("stream-client-to-server", c2s));
    frames.push(("stream-server-to-client", s2c));

    frames
        .into_iter()
        .map(|(name, bytes)| (name.to_owned(), bytes.to_vec()))
        .collect()
}

fn notification() -> wire::NotificationT {
    obj!(wire::NotificationT {
        id: 1,
        kind: Some("mention".into()),
        title: Some("t".into()),
        body: Some("b".into()),
        data: Some(b"{}".to_vec()),
        created_ms: 3,
        read: false,
    })
}
