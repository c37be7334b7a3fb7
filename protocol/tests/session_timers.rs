//! Timers on virtual time: heartbeats, idle timeouts on both sides, and the
//! client's request (ack) timeout.

#[macro_use]
mod support;

use std::time::{Duration, Instant};

use herald_protocol::wire::Body;
use herald_protocol::{ClientEvent, ErrorCode, PublishOptions, ServerConfig, ServerEvent, SubscribeOptions};
use support::{Dir, Pair, open_server, server_events, transmitted};

fn connected_pair(server: ServerConfig) -> Pair {
    let mut pair = Pair::new(Default::default(), server);
    pair.connect();
    assert!(matches!(&pair.client_events()[..], [ClientEvent::Connected { .. }]));
    pair
}

#[test]
fn heartbeats_keep_a_live_link_open_for_minutes() {
    let mut pair = connected_pair(ServerConfig::default());
    pair.advance(Duration::from_secs(5 * 60));
    assert!(pair.link_up());
    assert!(pair.client.is_open() && pair.server.is_open());
    assert!(pair.client_events().is_empty());
    // One ping every 15 s, each answered.
    let pings = pair.delivered(Dir::ToClient, Body::Ping);
    assert_eq!(pings, 20);
    assert!(pair.delivered(Dir::ToServer, Body::Pong) >= pings - 1);
}

#[test]
fn server_pings_on_the_heartbeat_interval_and_closes_when_idle() {
    let t0 = Instant::now();
    let mut server = open_server(ServerConfig::default(), t0);
    assert_eq!(server.poll_timeout(), Some(t0 + Duration::from_secs(15)));
    server.handle_timeout(t0 + Duration::from_secs(15));
    let out = transmitted(&mut server);
    assert_eq!(out.len(), 1);
    assert_eq!(support::frames::kind(&out[0]), "Ping");
    assert_eq!(server.poll_timeout(), Some(t0 + Duration::from_secs(30)));
    server.handle_timeout(t0 + Duration::from_secs(30));
    drop(transmitted(&mut server));
    // Next ping would be at 45 s, which is also when the idle timeout hits.
    assert_eq!(server.poll_timeout(), Some(t0 + Duration::from_secs(45)));
    server.handle_timeout(t0 + Duration::from_millis(44_999));
    assert!(server.is_open());
    server.handle_timeout(t0 + Duration::from_secs(45));
    assert!(server.is_closed());
    assert_eq!(server.close_reason().map(|(c, _)| c), Some(ErrorCode::IdleTimeout));
    let out = transmitted(&mut server);
    assert_eq!(
        support::frames::error_of(out.last().expect("closing frame")).0,
        ErrorCode::IdleTimeout
    );
    assert!(matches!(
        server_events(&mut server)[..],
        [ServerEvent::Closed {
            code: ErrorCode::IdleTimeout,
            ..
        }]
    ));
}

#[test]
fn any_frame_from_the_client_resets_the_idle_timer() {
    let t0 = Instant::now();
    let mut server = open_server(ServerConfig::default(), t0);
    let t1 = t0 + Duration::from_secs(40);
    server.handle_frame(t1, support::frames::ping(1)).expect("valid");
    server.handle_timeout(t0 + Duration::from_secs(45));
    assert!(server.is_open());
    assert_eq!(server.poll_timeout(), Some(t0 + Duration::from_secs(60)), "next ping");
    server.handle_timeout(t1 + Duration::from_secs(45));
    assert_eq!(server.close_reason().map(|(c, _)| c), Some(ErrorCode::IdleTimeout));
}

#[test]
fn server_closes_a_silent_client_with_idle_timeout() {
    let mut pair = connected_pair(ServerConfig::default());
    // The client still hears pings, but nothing it sends gets through.
    pair.lose_client_frames = true;
    pair.advance(Duration::from_secs(44));
    assert!(pair.link_up());
    pair.advance(Duration::from_secs(2));
    assert!(!pair.link_up());
    assert_eq!(pair.server.close_reason().map(|(c, _)| c), Some(ErrorCode::IdleTimeout));
    let events = pair.client_events();
    assert!(
        matches!(
            &events[..],
            [ClientEvent::Disconnected {
                code: ErrorCode::IdleTimeout,
                ..
            }]
        ),
        "{events:?}"
    );
}

#[test]
fn client_detects_a_silent_server_after_three_heartbeats() {
    // A server that would wait much longer than the client.
    let mut pair = connected_pair(ServerConfig {
        idle_timeout: Duration::from_secs(600),
        ..ServerConfig::default()
    });
    pair.lose_server_frames = true;
    pair.advance(Duration::from_millis(44_900));
    assert!(pair.client.is_open());
    pair.advance(Duration::from_millis(200));
    let events = pair.client_events();
    assert!(
        matches!(
            &events[..],
            [ClientEvent::Disconnected {
                code: ErrorCode::IdleTimeout,
                ..
            }]
        ),
        "{events:?}"
    );
    assert!(!pair.client.is_open());
    assert!(!pair.server.is_closed(), "the client gave up first");
}

#[test]
fn unanswered_publish_fails_with_timeout() {
    let mut pair = connected_pair(ServerConfig::default());
    pair.app.hold_publishes = true;
    let id = pair
        .client
        .publish(pair.now, "chat:lobby", b"stuck", PublishOptions::default());
    pair.drive();
    assert_eq!(pair.app.publishes().len(), 1, "the server got it");
    pair.advance(Duration::from_millis(9_980));
    assert!(pair.client_events().is_empty());
    assert_eq!(pair.client.pending_requests(), 1);

    pair.advance(Duration::from_millis(10));
    let events = pair.client_events();
    assert!(
        matches!(
            &events[..],
            [ClientEvent::PublishFailed { request_id, code: ErrorCode::Timeout, .. }] if *request_id == id
        ),
        "{events:?}"
    );
    assert_eq!(pair.client.pending_requests(), 0);
    assert!(pair.client.is_open(), "a request timeout is not fatal");
}

#[test]
fn unanswered_subscribe_fails_with_timeout_and_the_room_is_forgotten() {
    let mut pair = connected_pair(ServerConfig::default());
    // The server gets the subscribe but nothing comes back.
    pair.lose_server_frames = true;
    pair.client
        .subscribe(pair.now, "chat:lobby", SubscribeOptions::default());
    pair.advance(Duration::from_secs(10));
    let events = pair.client_events();
    assert!(
        matches!(
            &events[..],
            [ClientEvent::SubscribeFailed { room, code: ErrorCode::Timeout, .. }] if room == "chat:lobby"
        ),
        "{events:?}"
    );
    assert_eq!(pair.client.rooms().count(), 0);
}
