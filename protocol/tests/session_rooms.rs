//! Rooms over a connected pair: subscribe (with history), publish and ack,
//! fan-out, unsubscribe, and the per-connection limits the server session
//! enforces on them (room names, room count, payload size, publish and
//! typing rates).

#[macro_use]
mod support;

use std::time::{Duration, Instant};

use herald_protocol::{
    ClientEvent, ErrorCode, Position, PublishOptions, ServerConfig, ServerEvent, SessionLimits, SubscribeOptions,
};
use support::{Pair, frames, messages, open_server, payloads, server_events, transmitted};

const ROOM: &str = "chat:lobby";

fn connected_pair() -> Pair {
    let mut pair = Pair::default();
    pair.connect();
    let events = pair.client_events();
    assert!(
        matches!(&events[..], [ClientEvent::Connected { user_id, reconnected: false, .. }] if user_id == "alice"),
        "{events:?}"
    );
    pair
}

fn subscribed_pair() -> Pair {
    let mut pair = connected_pair();
    pair.client.subscribe(pair.now, ROOM, SubscribeOptions::default());
    pair.drive();
    let events = pair.client_events();
    assert!(
        matches!(&events[..], [ClientEvent::Subscribed { room, resumed: false, .. }] if room == ROOM),
        "{events:?}"
    );
    pair
}

fn publish(pair: &mut Pair, room: &str, payload: &[u8]) -> u32 {
    pair.client.publish(pair.now, room, payload, PublishOptions::default())
}

fn published(events: &[ClientEvent]) -> Vec<(u32, Position)> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Published { request_id, position } => Some((*request_id, *position)),
            _ => None,
        })
        .collect()
}

fn publish_failures(events: &[ClientEvent]) -> Vec<(u32, ErrorCode)> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::PublishFailed { request_id, code, .. } => Some((*request_id, *code)),
            _ => None,
        })
        .collect()
}

fn subscribe_failures(events: &[ClientEvent]) -> Vec<(String, ErrorCode)> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::SubscribeFailed { room, code, .. } => Some((room.clone(), *code)),
            _ => None,
        })
        .collect()
}

fn typing_events(pair: &Pair) -> usize {
    pair.app
        .events
        .iter()
        .filter(|e| matches!(e, ServerEvent::Typing { .. }))
        .count()
}

#[test]
fn connect_subscribe_publish_and_ack_with_offset() {
    let mut pair = connected_pair();
    assert!(pair.client.is_open());
    assert_eq!(pair.client.user_id(), Some("alice"));

    pair.client.subscribe(pair.now, ROOM, SubscribeOptions::default());
    pair.drive();
    let events = pair.client_events();
    let [
        ClientEvent::Subscribed {
            room,
            epoch: 1,
            offset: 0,
            recovered: false,
            resumed: false,
            history,
            presence: None,
        },
    ] = &events[..]
    else {
        panic!("expected Subscribed, got {events:?}");
    };
    assert_eq!(room, ROOM);
    assert!(history.is_empty());
    assert_eq!(pair.client.position(ROOM), Some(Position { epoch: 1, offset: 0 }));

    let first = publish(&mut pair, ROOM, b"hello");
    let second = publish(&mut pair, ROOM, b"world");
    assert_eq!(pair.client.pending_requests(), 2);
    pair.drive();
    let events = pair.client_events();
    assert_eq!(
        published(&events),
        vec![
            (first, Position { epoch: 1, offset: 1 }),
            (second, Position { epoch: 1, offset: 2 })
        ]
    );
    // The publisher is subscribed, so it also receives its own messages.
    assert_eq!(messages(&events), ["hello", "world"]);
    let ClientEvent::Message(delivery) = events
        .iter()
        .find(|e| matches!(e, ClientEvent::Message(_)))
        .expect("a delivery")
    else {
        unreachable!()
    };
    assert_eq!((delivery.room.as_str(), delivery.publisher.as_str()), (ROOM, "alice"));
    assert_eq!((delivery.epoch, delivery.offset, delivery.volatile), (1, 1, false));
    assert_eq!(pair.client.pending_requests(), 0);
    assert_eq!(pair.client.position(ROOM), Some(Position { epoch: 1, offset: 2 }));
    assert_eq!(pair.app.log(ROOM).latest(), 2);
}

#[test]
fn publish_without_subscription_is_acked_but_not_delivered() {
    let mut pair = connected_pair();
    let id = publish(&mut pair, "news", b"x");
    pair.drive();
    let events = pair.client_events();
    assert_eq!(published(&events), vec![(id, Position { epoch: 1, offset: 1 })]);
    assert!(messages(&events).is_empty(), "{events:?}");
}

#[test]
fn subscribe_returns_the_requested_history_oldest_first() {
    let mut pair = connected_pair();
    for i in 1..=5 {
        pair.publish_elsewhere(ROOM, format!("m{i}").as_bytes());
    }
    pair.client.subscribe(
        pair.now,
        ROOM,
        SubscribeOptions {
            history: 3,
            presence: false,
        },
    );
    pair.drive();
    let events = pair.client_events();
    let [ClientEvent::Subscribed { offset: 5, history, .. }] = &events[..] else {
        panic!("{events:?}");
    };
    assert_eq!(payloads(history), ["m3", "m4", "m5"]);
    assert!(history.iter().all(|d| d.publisher == "bob" && d.room == ROOM));
    assert_eq!(pair.client.position(ROOM), Some(Position { epoch: 1, offset: 5 }));
}

#[test]
fn messages_from_others_are_fanned_out_to_subscribers() {
    let mut pair = subscribed_pair();
    pair.publish_elsewhere(ROOM, b"from bob");
    pair.publish_elsewhere("other", b"not for alice");
    pair.drive();
    let events = pair.client_events();
    assert_eq!(messages(&events), ["from bob"]);
    assert_eq!(pair.client.position(ROOM), Some(Position { epoch: 1, offset: 1 }));
}

#[test]
fn volatile_publish_is_acked_with_offset_zero_and_not_stored() {
    let mut pair = subscribed_pair();
    let id = pair.client.publish(
        pair.now,
        ROOM,
        b"cursor",
        PublishOptions {
            volatile: true,
            ..PublishOptions::default()
        },
    );
    pair.drive();
    let events = pair.client_events();
    // Acknowledged in the room's epoch, at offset 0: nothing was stored.
    assert_eq!(published(&events), vec![(id, Position { epoch: 1, offset: 0 })]);
    let [_, ClientEvent::Message(d)] = &events[..] else {
        panic!("{events:?}");
    };
    assert!(d.volatile && d.offset == 0);
    assert!(pair.app.log(ROOM).messages.is_empty());
    // A volatile delivery does not move the client's position.
    assert_eq!(pair.client.position(ROOM), Some(Position { epoch: 1, offset: 0 }));
}

#[test]
fn unsubscribe_is_acknowledged_and_stops_deliveries() {
    let mut pair = subscribed_pair();
    let id = pair.client.unsubscribe(pair.now, ROOM).expect("sent");
    pair.drive();
    let events = pair.client_events();
    assert!(
        matches!(&events[..], [ClientEvent::Reply { request_id, code: ErrorCode::Ok, .. }] if *request_id == id),
        "{events:?}"
    );
    assert!(
        pair.app
            .events
            .contains(&ServerEvent::Unsubscribed { room: ROOM.into() })
    );
    assert_eq!(pair.server.rooms().count(), 0);

    pair.publish_elsewhere(ROOM, b"after");
    pair.drive();
    assert!(pair.client_events().is_empty());
}

#[test]
fn unsubscribe_from_a_room_never_joined_is_not_subscribed() {
    let now = Instant::now();
    let mut server = open_server(ServerConfig::default(), now);
    let frame = frames::encode(
        9,
        herald_protocol::wire::BodyT::Unsubscribe(Box::new(obj!(herald_protocol::wire::UnsubscribeT {
            room: ROOM.into()
        }))),
    );
    server.handle_frame(now, frame).expect("valid");
    let out = transmitted(&mut server);
    assert_eq!(out.len(), 1);
    assert_eq!(frames::reply_of(&out[0]), (9, ErrorCode::NotSubscribed, 0, 0));
    assert!(server.is_open());
}

#[test]
fn publish_rate_limit_answers_rate_limited_after_the_burst() {
    let mut pair = connected_pair();
    // Default limits: a burst of 100, then 50 per second.
    let ids: Vec<u32> = (0..110)
        .map(|i| publish(&mut pair, ROOM, format!("{i}").as_bytes()))
        .collect();
    pair.drive();
    let events = pair.client_events();
    let ok: Vec<u32> = published(&events).iter().map(|(id, _)| *id).collect();
    assert_eq!(ok, ids[..100]);
    let limited: Vec<(u32, ErrorCode)> = ids[100..].iter().map(|id| (*id, ErrorCode::RateLimited)).collect();
    assert_eq!(publish_failures(&events), limited);
    assert!(pair.server.is_open(), "rate limiting is not fatal");
    // Each refusal is also an event for the application's metrics.
    let counted: Vec<u32> = pair
        .app
        .events
        .iter()
        .filter_map(|e| match e {
            ServerEvent::RateLimited {
                request_id,
                limit: herald_protocol::RateLimit::Publish,
            } => Some(*request_id),
            _ => None,
        })
        .collect();
    assert_eq!(counted, ids[100..]);

    // The burst was taken when the publishes arrived, one latency before
    // their replies did. The next publishes arrive exactly one second after
    // it: 50 more tokens.
    pair.advance(Duration::from_secs(1) - 2 * pair.latency);
    let ids: Vec<u32> = (0..51).map(|_| publish(&mut pair, ROOM, b"again")).collect();
    pair.drive();
    let events = pair.client_events();
    assert_eq!(published(&events).len(), 50);
    assert_eq!(publish_failures(&events), vec![(ids[50], ErrorCode::RateLimited)]);
}

#[test]
fn typing_is_rate_limited_and_needs_a_subscription() {
    let mut pair = subscribed_pair();
    // Not subscribed there: dropped (typing frames carry no request id).
    pair.client.typing("elsewhere", true);
    pair.drive();
    assert_eq!(typing_events(&pair), 0);

    // Default limits: a burst of 5, then 2 per second.
    for _ in 0..8 {
        pair.client.typing(ROOM, true);
    }
    pair.drive();
    assert_eq!(typing_events(&pair), 5);

    // The tokens were taken when the burst arrived; the next typing frame
    // arrives 490 ms later (480 ms + 10 ms of latency): not quite a token.
    pair.advance(Duration::from_millis(480));
    pair.client.typing(ROOM, false);
    pair.drive();
    assert_eq!(typing_events(&pair), 5, "no token before 500 ms");

    // 500 ms after the burst: exactly one token.
    pair.client.typing(ROOM, false);
    pair.client.typing(ROOM, false);
    pair.drive();
    assert_eq!(typing_events(&pair), 6, "one token per 500 ms");
    assert!(pair.client_events().is_empty());
}

#[test]
fn typing_with_a_request_id_gets_rate_limited_replies() {
    let now = Instant::now();
    let mut server = open_server(ServerConfig::default(), now);
    server.handle_frame(now, frames::subscribe(1, ROOM)).expect("valid");
    let [ServerEvent::Subscribe { request_id: 1, .. }] = &server_events(&mut server)[..] else {
        panic!("expected Subscribe");
    };
    server.subscribed(
        1,
        &herald_protocol::SubscribedRef {
            room: ROOM,
            epoch: 1,
            offset: 0,
            recovered: false,
            history: &[],
            presence: None,
        },
    );
    drop(transmitted(&mut server));

    for id in 10..16 {
        server.handle_frame(now, frames::typing(id, ROOM)).expect("valid");
    }
    let mut typing = server_events(&mut server);
    // The refusal is also an event, so the application can count it.
    assert_eq!(
        typing.pop(),
        Some(ServerEvent::RateLimited {
            request_id: 15,
            limit: herald_protocol::RateLimit::Typing
        })
    );
    assert_eq!(typing.len(), 5);
    assert!(
        typing
            .iter()
            .all(|e| matches!(e, ServerEvent::Typing { active: true, .. }))
    );
    let replies: Vec<_> = transmitted(&mut server).iter().map(|f| frames::reply_of(f)).collect();
    assert_eq!(replies, [(15, ErrorCode::RateLimited, 0, 0)]);

    server
        .handle_frame(now, frames::typing(20, "not:joined"))
        .expect("valid");
    let replies: Vec<_> = transmitted(&mut server).iter().map(|f| frames::reply_of(f)).collect();
    assert_eq!(replies, [(20, ErrorCode::NotSubscribed, 0, 0)]);
}

#[test]
fn payload_too_large_is_refused_and_the_limit_itself_is_fine() {
    let mut pair = connected_pair();
    let max = SessionLimits::default().max_payload_bytes;
    let ok = publish(&mut pair, ROOM, &vec![7u8; max]);
    let too_large = publish(&mut pair, ROOM, &vec![7u8; max + 1]);
    pair.drive();
    let events = pair.client_events();
    assert_eq!(published(&events), vec![(ok, Position { epoch: 1, offset: 1 })]);
    assert_eq!(publish_failures(&events), vec![(too_large, ErrorCode::PayloadTooLarge)]);
    assert_eq!(pair.app.log(ROOM).messages.len(), 1);
    assert!(pair.server.is_open());
}

#[test]
fn too_many_rooms_is_refused() {
    let config = ServerConfig {
        limits: SessionLimits {
            max_rooms: 2,
            ..SessionLimits::default()
        },
        ..ServerConfig::default()
    };
    let mut pair = Pair::new(Default::default(), config);
    pair.connect();
    pair.client_events();

    // Pending subscribes count too: the third is refused before the first
    // two are confirmed.
    for room in ["a", "b", "c"] {
        pair.client.subscribe(pair.now, room, SubscribeOptions::default());
    }
    pair.drive();
    let events = pair.client_events();
    assert_eq!(
        subscribe_failures(&events),
        vec![("c".to_owned(), ErrorCode::TooManyRooms)]
    );
    assert_eq!(pair.client.rooms().collect::<Vec<_>>(), ["a", "b"]);
    let mut rooms: Vec<_> = pair.server.rooms().collect();
    rooms.sort_unstable();
    assert_eq!(rooms, ["a", "b"]);

    // Subscribing again to a room already joined is not a new room.
    pair.client.subscribe(pair.now, "a", SubscribeOptions::default());
    pair.drive();
    assert!(matches!(&pair.client_events()[..], [ClientEvent::Subscribed { room, .. }] if room == "a"));

    // Leaving one frees a slot.
    pair.client.unsubscribe(pair.now, "b");
    pair.client.subscribe(pair.now, "c", SubscribeOptions::default());
    pair.drive();
    let events = pair.client_events();
    assert!(subscribe_failures(&events).is_empty(), "{events:?}");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ClientEvent::Subscribed { room, .. } if room == "c"))
    );
}

#[test]
fn invalid_room_names_are_refused() {
    let mut pair = connected_pair();
    let too_long = "r".repeat(129);
    let bad = ["", "has space", "emoji-\u{1f600}", "semi;colon", too_long.as_str()];
    for room in bad {
        pair.client.subscribe(pair.now, room, SubscribeOptions::default());
    }
    let publish_id = publish(&mut pair, "bad room", b"x");
    let longest = "r".repeat(128);
    pair.client.subscribe(pair.now, &longest, SubscribeOptions::default());
    pair.client
        .subscribe(pair.now, "ns:a-b_c.d@e/f", SubscribeOptions::default());
    pair.drive();

    let events = pair.client_events();
    let mut refused = subscribe_failures(&events);
    refused.sort();
    let mut expected: Vec<_> = bad
        .iter()
        .map(|r| (r.to_string(), ErrorCode::InvalidRoomName))
        .collect();
    expected.sort();
    assert_eq!(refused, expected);
    assert_eq!(
        publish_failures(&events),
        vec![(publish_id, ErrorCode::InvalidRoomName)]
    );
    let joined = events
        .iter()
        .filter(|e| matches!(e, ClientEvent::Subscribed { .. }))
        .count();
    assert_eq!(joined, 2, "{events:?}");
    assert!(pair.server.is_open());
}

#[test]
fn unsubscribe_while_subscribe_is_pending_cancels_it() {
    let now = std::time::Instant::now();
    let mut server = support::open_server(herald_protocol::ServerConfig::default(), now);
    server
        .handle_frame(now, support::frames::subscribe(5, "chat:a"))
        .expect("valid");
    let unsubscribe = support::frames::encode(
        6,
        herald_protocol::wire::BodyT::Unsubscribe(Box::new(obj!(herald_protocol::wire::UnsubscribeT {
            room: "chat:a".to_owned(),
        }))),
    );
    server.handle_frame(now, unsubscribe).expect("valid");
    let events = support::server_events(&mut server);
    assert!(
        matches!(&events[..], [ServerEvent::Subscribe { request_id: 5, .. }, ServerEvent::Unsubscribed { room }] if room == "chat:a"),
        "{events:?}"
    );
    let out = support::transmitted(&mut server);
    assert_eq!(support::frames::reply_of(&out[0]), (6, ErrorCode::Ok, 0, 0));
    // The application's late confirmation of the cancelled subscribe is ignored.
    server.subscribed(
        5,
        &herald_protocol::SubscribedRef {
            room: "chat:a",
            epoch: 1,
            offset: 0,
            recovered: false,
            history: &[],
            presence: None,
        },
    );
    assert!(support::transmitted(&mut server).is_empty());
    assert_eq!(server.rooms().count(), 0);
}

#[test]
fn invalid_room_name_message_states_the_configured_limit() {
    let now = std::time::Instant::now();
    let mut config = herald_protocol::ServerConfig::default();
    config.limits.max_room_name_bytes = 16;
    let mut server = support::open_server(config, now);
    server
        .handle_frame(now, support::frames::subscribe(9, "chat:this-name-is-too-long"))
        .expect("valid");
    let out = support::transmitted(&mut server);
    let reply = support::frames::parse(&out[0]);
    let herald_protocol::wire::BodyT::Reply(r) = reply.body else {
        panic!("expected Reply");
    };
    assert_eq!(r.code, ErrorCode::InvalidRoomName);
    assert!(
        r.message.as_deref().unwrap_or_default().contains("1-16 bytes"),
        "{:?}",
        r.message
    );
}
