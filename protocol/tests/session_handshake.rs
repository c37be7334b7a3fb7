//! The handshake and the fatal protocol errors around it: authentication,
//! protocol version, frames at the wrong time (ProtocolViolation), frames
//! from the wrong side (UnsupportedFrame), and handshake timeouts.

#[macro_use]
mod support;

use std::time::{Duration, Instant};

use herald_protocol::wire::{self, BodyT};
use herald_protocol::{
    ClientConfig, ClientEvent, ClientSession, ErrorCode, ProtocolError, ServerConfig, ServerEvent, ServerSession,
    SessionLimits, SubscribeOptions,
};
use support::{Pair, frames, open_server, server_events, transmitted};

/// Asserts that the session closed with `code`: the last queued frame is the
/// `Error` carrying it, and the application got `Closed`.
fn assert_closed_with(server: &mut ServerSession, code: ErrorCode) {
    assert!(server.is_closed(), "session still open");
    assert_eq!(server.close_reason().map(|(c, _)| c), Some(code));
    let out = transmitted(server);
    let last = out.last().expect("a closing frame");
    assert_eq!(frames::error_of(last).0, code);
    let events = server_events(server);
    assert!(
        matches!(events.last(), Some(ServerEvent::Closed { code: c, .. }) if *c == code),
        "{events:?}"
    );
    assert_eq!(server.poll_timeout(), None, "a closed session has no timers");
}

#[test]
fn connect_is_accepted_and_the_client_learns_its_user_and_limits() {
    let mut pair = Pair::default();
    pair.connect();
    let events = pair.client_events();
    let [
        ClientEvent::Connected {
            session_id,
            node_id,
            user_id,
            reconnected: false,
        },
    ] = &events[..]
    else {
        panic!("{events:?}");
    };
    assert_eq!(
        (session_id.as_str(), node_id.as_str(), user_id.as_str()),
        ("s1", "node-1", "alice")
    );
    assert!(pair.client.is_open() && pair.server.is_open());
    let [
        ServerEvent::Connect {
            token,
            client_name,
            resume,
            ..
        },
    ] = &pair.app.events[..]
    else {
        panic!("{:?}", pair.app.events);
    };
    assert_eq!((token.as_str(), client_name.as_str()), ("user:alice", "herald-rust"));
    assert!(resume.is_empty());
}

#[test]
fn connected_advertises_the_session_limits() {
    let now = Instant::now();
    let config = ServerConfig {
        heartbeat_interval: Duration::from_secs(20),
        limits: SessionLimits {
            max_rooms: 7,
            publish_burst: 9,
            ..SessionLimits::default()
        },
        ..ServerConfig::default()
    };
    let mut server = ServerSession::new(config, now);
    server.handle_frame(now, frames::connect("user:alice")).expect("valid");
    drop(server_events(&mut server));
    server.accept(
        now,
        &herald_protocol::Accept {
            session_id: "s".into(),
            node_id: "n".into(),
            user_id: "alice".into(),
            server_time_ms: 5,
        },
    );
    let out = transmitted(&mut server);
    let BodyT::Connected(c) = frames::parse(&out[0]).body else {
        panic!("expected Connected");
    };
    assert_eq!(c.heartbeat_interval_ms, 20_000);
    assert_eq!(c.server_time_ms, 5);
    let limits = c.limits.expect("limits");
    assert_eq!((limits.max_rooms, limits.publish_burst), (7, 9));
    assert_eq!(limits.max_frame_bytes, 64 * 1024);
    assert_eq!(limits.max_payload_bytes, 32 * 1024);
}

#[test]
fn bad_token_closes_with_auth_failed() {
    let mut pair = Pair::new(
        ClientConfig {
            token: "garbage".into(),
            ..ClientConfig::default()
        },
        ServerConfig::default(),
    );
    pair.connect();
    let events = pair.client_events();
    assert!(
        matches!(
            &events[..],
            [ClientEvent::Disconnected {
                code: ErrorCode::AuthFailed,
                ..
            }]
        ),
        "{events:?}"
    );
    assert!(!pair.client.is_open());
    assert!(!pair.link_up());
    assert_eq!(pair.server.close_reason().map(|(c, _)| c), Some(ErrorCode::AuthFailed));
}

#[test]
fn unsupported_protocol_version_is_refused() {
    let now = Instant::now();
    let mut server = ServerSession::new(ServerConfig::default(), now);
    let connect = frames::encode(
        0,
        BodyT::Connect(Box::new(obj!(wire::ConnectT {
            protocol: Some("herald/2".into()),
            token: Some("user:alice".into()),
        }))),
    );
    server.handle_frame(now, connect).expect("a valid frame");
    assert_closed_with(&mut server, ErrorCode::UnsupportedVersion);
}

#[test]
fn subscribe_before_connect_is_a_protocol_violation() {
    let now = Instant::now();
    let mut server = ServerSession::new(ServerConfig::default(), now);
    server
        .handle_frame(now, frames::subscribe(1, "chat:lobby"))
        .expect("a valid frame");
    assert_closed_with(&mut server, ErrorCode::ProtocolViolation);
}

#[test]
fn request_while_authenticating_is_a_protocol_violation() {
    let now = Instant::now();
    let mut server = ServerSession::new(ServerConfig::default(), now);
    server.handle_frame(now, frames::connect("user:alice")).expect("valid");
    assert!(matches!(server.poll_event(), Some(ServerEvent::Connect { .. })));
    server
        .handle_frame(now, frames::publish(1, "chat:lobby", b"x"))
        .expect("valid");
    assert_closed_with(&mut server, ErrorCode::ProtocolViolation);
}

#[test]
fn second_connect_before_accept_is_a_protocol_violation() {
    let now = Instant::now();
    let mut server = ServerSession::new(ServerConfig::default(), now);
    server.handle_frame(now, frames::connect("user:alice")).expect("valid");
    server
        .handle_frame(now, frames::connect("user:mallory"))
        .expect("valid");
    assert!(matches!(server.poll_event(), Some(ServerEvent::Connect { token, .. }) if token == "user:alice"));
    assert_closed_with(&mut server, ErrorCode::ProtocolViolation);
}

#[test]
fn second_connect_after_accept_is_a_protocol_violation() {
    let now = Instant::now();
    let mut server = open_server(ServerConfig::default(), now);
    server
        .handle_frame(now, frames::connect("user:mallory"))
        .expect("valid");
    let events = server_events(&mut server);
    assert!(
        !events.iter().any(|e| matches!(e, ServerEvent::Request { .. })),
        "a second Connect must not reach the application as a request: {events:?}"
    );
    assert!(server.is_closed());
    assert_eq!(
        server.close_reason().map(|(c, _)| c),
        Some(ErrorCode::ProtocolViolation)
    );
    let out = transmitted(&mut server);
    assert_eq!(
        frames::error_of(out.last().expect("closing frame")).0,
        ErrorCode::ProtocolViolation
    );
}

#[test]
fn server_only_body_from_a_client_is_unsupported() {
    let now = Instant::now();
    let mut server = open_server(ServerConfig::default(), now);
    let message = frames::encode(
        0,
        BodyT::Message(Box::new(obj!(wire::MessageT {
            room: "chat:lobby".into(),
        }))),
    );
    let err = server.handle_frame(now, message).expect_err("refused");
    assert_eq!(err, ProtocolError::UnexpectedBody("Message"));
    assert_closed_with(&mut server, ErrorCode::UnsupportedFrame);
}

#[test]
fn server_only_body_before_connect_is_unsupported() {
    let now = Instant::now();
    let mut server = ServerSession::new(ServerConfig::default(), now);
    let connected = frames::encode(0, BodyT::Connected(Box::default()));
    assert_eq!(
        server.handle_frame(now, connected),
        Err(ProtocolError::UnexpectedBody("Connected"))
    );
    assert_closed_with(&mut server, ErrorCode::UnsupportedFrame);
}

#[test]
fn text_message_is_unsupported() {
    let now = Instant::now();
    let mut server = open_server(ServerConfig::default(), now);
    assert_eq!(server.handle_text(), ProtocolError::TextMessage);
    assert_closed_with(&mut server, ErrorCode::UnsupportedFrame);
    // Nothing more happens on a closed session.
    assert_eq!(server.handle_frame(now, frames::ping(1)), Ok(()));
    assert!(transmitted(&mut server).is_empty());
}

#[test]
fn ping_is_answered_even_before_connect() {
    let now = Instant::now();
    let mut server = ServerSession::new(ServerConfig::default(), now);
    server.handle_frame(now, frames::ping(77)).expect("valid");
    let out = transmitted(&mut server);
    assert_eq!(out.len(), 1);
    let BodyT::Pong(p) = frames::parse(&out[0]).body else {
        panic!("expected Pong");
    };
    assert_eq!(p.nonce, 77);
    assert!(!server.is_closed());
}

#[test]
fn resume_listing_more_rooms_than_allowed_is_a_protocol_violation() {
    let now = Instant::now();
    let config = ServerConfig {
        limits: SessionLimits {
            max_rooms: 2,
            ..SessionLimits::default()
        },
        ..ServerConfig::default()
    };
    let mut server = ServerSession::new(config, now);
    let connect = frames::connect_resuming("user:alice", &[("a", 1, 1), ("b", 1, 1), ("c", 1, 1)]);
    server.handle_frame(now, connect).expect("valid");
    assert_closed_with(&mut server, ErrorCode::ProtocolViolation);
}

#[test]
fn client_only_body_from_the_server_disconnects_the_client() {
    let now = Instant::now();
    let mut client = ClientSession::new(ClientConfig::default(), now);
    client.connect(now);
    drop(client.poll_transmit());
    let err = client
        .handle_frame(now, frames::subscribe(1, "chat:lobby"))
        .expect_err("refused");
    assert_eq!(err, ProtocolError::UnexpectedBody("Subscribe"));
    assert!(matches!(
        client.poll_event(),
        Some(ClientEvent::Disconnected {
            code: ErrorCode::UnsupportedFrame,
            ..
        })
    ));
    assert!(!client.is_open());
}

#[test]
fn subscribe_while_the_handshake_is_in_flight_is_sent_once_connected() {
    let mut pair = Pair::default();
    pair.open_link();
    // The application subscribes right after starting to connect, before
    // `Connected` arrives.
    pair.client
        .subscribe(pair.now, "chat:lobby", SubscribeOptions::default());
    pair.drive();
    let events = pair.client_events();
    assert!(
        matches!(
            &events[..],
            [ClientEvent::Connected { .. }, ClientEvent::Subscribed { room, .. }] if room == "chat:lobby"
        ),
        "{events:?}"
    );
    assert_eq!(pair.server.rooms().collect::<Vec<_>>(), ["chat:lobby"]);
}

#[test]
fn unsubscribe_while_the_handshake_is_in_flight_leaves_the_resumed_room() {
    let mut pair = Pair::default();
    pair.connect();
    pair.client
        .subscribe(pair.now, "chat:lobby", SubscribeOptions::default());
    pair.drive();
    pair.drop_link();
    pair.client_events();

    // Reconnecting resumes the room; the application leaves it before
    // `Connected` arrives.
    pair.open_link();
    assert_eq!(
        pair.client.unsubscribe(pair.now, "chat:lobby"),
        None,
        "nothing can be sent yet"
    );
    pair.drive();
    let events = pair.client_events();
    assert!(matches!(&events[..], [ClientEvent::Connected { .. }]), "{events:?}");
    assert_eq!(pair.server.rooms().count(), 0, "the server must not keep the room");
    assert!(pair.app.events.contains(&ServerEvent::Unsubscribed {
        room: "chat:lobby".into()
    }));
    pair.publish_elsewhere("chat:lobby", b"not for alice");
    pair.drive();
    assert_eq!(pair.delivered(support::Dir::ToClient, wire::Body::Message), 0);
}

#[test]
fn handshake_timeout_closes_a_silent_connection() {
    let t0 = Instant::now();
    let mut server = ServerSession::new(ServerConfig::default(), t0);
    assert_eq!(server.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    server.handle_timeout(t0 + Duration::from_millis(9_999));
    assert!(!server.is_closed());
    server.handle_timeout(t0 + Duration::from_secs(10));
    assert_closed_with(&mut server, ErrorCode::HandshakeTimeout);
}

#[test]
fn handshake_timeout_also_covers_a_stalled_authentication() {
    // The application never answers Connect; the client waits longer than
    // the server, so the server's verdict is what reaches it.
    let mut pair = Pair::new(
        ClientConfig {
            connect_timeout: Duration::from_secs(30),
            ..ClientConfig::default()
        },
        ServerConfig::default(),
    );
    pair.app.hold_connects = true;
    pair.open_link();
    pair.advance(Duration::from_millis(9_990));
    assert!(pair.link_up());
    assert!(pair.client_events().is_empty());

    pair.advance(Duration::from_millis(20));
    let events = pair.client_events();
    assert!(
        matches!(
            &events[..],
            [ClientEvent::Disconnected {
                code: ErrorCode::HandshakeTimeout,
                ..
            }]
        ),
        "{events:?}"
    );
    assert_eq!(
        pair.server.close_reason().map(|(c, _)| c),
        Some(ErrorCode::HandshakeTimeout)
    );
    assert!(!pair.link_up());
}

#[test]
fn client_connect_timeout_gives_up_on_a_silent_server() {
    let mut pair = Pair::new(
        ClientConfig::default(),
        ServerConfig {
            handshake_timeout: Duration::from_secs(60),
            ..ServerConfig::default()
        },
    );
    pair.app.hold_connects = true;
    let t0 = pair.now;
    pair.open_link();
    pair.advance(Duration::from_secs(60));
    let events = pair.client_events();
    assert!(
        matches!(
            &events[..],
            [ClientEvent::Disconnected {
                code: ErrorCode::HandshakeTimeout,
                ..
            }]
        ),
        "{events:?}"
    );
    // The client gave up at its own 10 s deadline: nothing was delivered to
    // it, and the link was closed then.
    assert!(!pair.link_up());
    assert!(!pair.server.is_closed(), "the server never got to time out");
    assert!(pair.trace.iter().all(|(t, _, _)| *t < t0 + Duration::from_secs(10)));
}

#[test]
fn connected_echoes_the_connect_request_id() {
    let now = Instant::now();
    let mut server = ServerSession::new(ServerConfig::default(), now);
    let connect = frames::encode(
        42,
        BodyT::Connect(Box::new(obj!(wire::ConnectT {
            protocol: Some("herald/1".to_owned()),
            token: Some("user:alice".to_owned()),
        }))),
    );
    server.handle_frame(now, connect).expect("valid");
    let _ = server_events(&mut server);
    server.accept(
        now,
        &herald_protocol::Accept {
            session_id: "s".into(),
            node_id: "n".into(),
            user_id: "alice".into(),
            server_time_ms: 0,
        },
    );
    let out = transmitted(&mut server);
    assert_eq!(frames::kind(&out[0]), "Connected");
    assert_eq!(frames::parse(&out[0]).request_id, 42);
}

#[test]
fn resume_carries_each_rooms_presence_choice() {
    let now = Instant::now();
    let mut client = ClientSession::new(ClientConfig::default(), now);
    client.subscribe(
        now,
        "chat:quiet",
        SubscribeOptions {
            history: 0,
            presence: false,
        },
    );
    client.subscribe(now, "chat:loud", SubscribeOptions::default());
    client.connect(now);
    let connect = client.poll_transmit().expect("Connect queued");
    assert_ne!(frames::parse(&connect).request_id, 0, "Connect is a request");
    let mut server = ServerSession::new(ServerConfig::default(), now);
    server.handle_frame(now, connect).expect("valid");
    let Some(ServerEvent::Connect { resume, .. }) = server.poll_event() else {
        panic!("expected Connect");
    };
    let got: Vec<(&str, bool)> = resume.iter().map(|r| (r.room.as_str(), r.presence)).collect();
    assert_eq!(got, [("chat:loud", true), ("chat:quiet", false)]);
}

/// The code and request id of the closing `Error` frame.
fn closing_error(server: &mut ServerSession) -> (ErrorCode, u32) {
    assert!(server.is_closed(), "session still open");
    let out = transmitted(server);
    let last = out.last().expect("a closing frame");
    (frames::error_of(last).0, frames::parse(last).request_id)
}

fn connect_with(request_id: u32, protocol: &str) -> bytes::Bytes {
    frames::encode(
        request_id,
        BodyT::Connect(Box::new(obj!(wire::ConnectT {
            protocol: Some(protocol.into()),
            token: Some("user:alice".into()),
        }))),
    )
}

#[test]
fn fatal_errors_caused_by_a_request_name_it() {
    let now = Instant::now();
    let fresh = || ServerSession::new(ServerConfig::default(), now);

    let mut server = fresh();
    server.handle_frame(now, connect_with(5, "herald/2")).expect("valid");
    assert_eq!(closing_error(&mut server), (ErrorCode::UnsupportedVersion, 5));

    let mut server = fresh();
    server
        .handle_frame(now, frames::subscribe(3, "chat:lobby"))
        .expect("valid");
    assert_eq!(closing_error(&mut server), (ErrorCode::ProtocolViolation, 3));

    let mut server = open_server(ServerConfig::default(), now);
    server.handle_frame(now, connect_with(9, "herald/1")).expect("valid");
    assert_eq!(closing_error(&mut server), (ErrorCode::ProtocolViolation, 9));

    let mut server = open_server(ServerConfig::default(), now);
    let message = frames::encode(
        11,
        BodyT::Message(Box::new(obj!(wire::MessageT { room: "chat:x".into() }))),
    );
    assert!(server.handle_frame(now, message).is_err());
    assert_eq!(closing_error(&mut server), (ErrorCode::UnsupportedFrame, 11));

    // The application refuses the Connect it was asked about.
    let mut server = fresh();
    server.handle_frame(now, connect_with(7, "herald/1")).expect("valid");
    assert!(matches!(server.poll_event(), Some(ServerEvent::Connect { .. })));
    server.reject(ErrorCode::AuthFailed, "bad token");
    assert_eq!(closing_error(&mut server), (ErrorCode::AuthFailed, 7));
}

#[test]
fn fatal_errors_without_a_cause_use_request_id_zero() {
    let now = Instant::now();
    // Not a frame at all: nothing to name.
    let mut server = ServerSession::new(ServerConfig::default(), now);
    assert!(server.handle_frame(now, bytes::Bytes::from_static(b"junk")).is_err());
    assert_eq!(closing_error(&mut server).1, 0);
    // A close on the server's own account, even after a request id was seen.
    let mut server = open_server(ServerConfig::default(), now);
    server.close(ErrorCode::Kicked, "disconnected by the server API");
    assert_eq!(closing_error(&mut server), (ErrorCode::Kicked, 0));
    // reject() after the Connect was answered is an ordinary close.
    let mut server = open_server(ServerConfig::default(), now);
    server.reject(ErrorCode::TokenExpired, "token expired");
    assert_eq!(closing_error(&mut server), (ErrorCode::TokenExpired, 0));
}
