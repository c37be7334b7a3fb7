//! Losing the link and coming back: resume with recovery (and without, when
//! the server's history no longer covers the gap), no duplicate deliveries,
//! unacknowledged publishes resent with their idempotency keys, and GoAway.

#[macro_use]
mod support;

use std::time::Duration;

use herald_protocol::{ClientEvent, ErrorCode, Position, PublishOptions, ServerEvent, SubscribeOptions};
use support::{Dir, Pair, messages, owner_config, payloads};

const ROOM: &str = "chat:lobby";

/// A pair connected and subscribed to ROOM, having seen two messages.
fn pair_at_offset_2() -> Pair {
    pair_at_offset_2_keeping(1_000)
}

/// [`pair_at_offset_2`] with an owner that keeps `history` messages per room.
fn pair_at_offset_2_keeping(history: usize) -> Pair {
    let mut pair = Pair::default();
    let mut config = owner_config(1);
    config.default_namespace.history = history;
    pair.app.restart_owner(config);
    pair.connect();
    pair.client.subscribe(pair.now, ROOM, SubscribeOptions::default());
    pair.drive();
    pair.publish_elsewhere(ROOM, b"m1");
    pair.publish_elsewhere(ROOM, b"m2");
    pair.drive();
    let events = pair.client_events();
    assert_eq!(messages(&events), ["m1", "m2"]);
    assert_eq!(pair.client.position(ROOM), Some(Position { epoch: 1, offset: 2 }));
    pair
}

fn resume_positions(pair: &Pair) -> Vec<Vec<(String, Position)>> {
    pair.app
        .events
        .iter()
        .filter_map(|e| match e {
            ServerEvent::Connect { resume, .. } => Some(resume.iter().map(|r| (r.room.clone(), r.position)).collect()),
            _ => None,
        })
        .collect()
}

#[test]
fn reconnect_resumes_and_replays_missed_messages_once() {
    let mut pair = pair_at_offset_2();

    pair.drop_link();
    let events = pair.client_events();
    assert!(
        matches!(
            &events[..],
            [ClientEvent::Disconnected {
                code: ErrorCode::Unavailable,
                ..
            }]
        ),
        "{events:?}"
    );
    assert!(!pair.client.is_open());
    // Missed while away.
    for m in ["m3", "m4", "m5"] {
        pair.publish_elsewhere(ROOM, m.as_bytes());
    }

    pair.advance(Duration::from_secs(2));
    pair.connect();
    let events = pair.client_events();
    let [
        ClientEvent::Connected {
            reconnected: true,
            session_id,
            ..
        },
        ClientEvent::Subscribed {
            room,
            epoch: 1,
            offset: 5,
            recovered: true,
            resumed: true,
            history,
            ..
        },
    ] = &events[..]
    else {
        panic!("{events:?}");
    };
    assert_eq!((session_id.as_str(), room.as_str()), ("s2", ROOM));
    assert_eq!(payloads(history), ["m3", "m4", "m5"]);
    assert_eq!(
        resume_positions(&pair).last(),
        Some(&vec![(ROOM.to_owned(), Position { epoch: 1, offset: 2 })])
    );
    assert_eq!(pair.client.position(ROOM), Some(Position { epoch: 1, offset: 5 }));
    assert_eq!(pair.server.rooms().collect::<Vec<_>>(), [ROOM]);

    // A message the client already has (a replay racing a live fan-out) is
    // dropped; the next new one is delivered.
    pair.app.redeliver(&mut pair.server, ROOM, 5);
    pair.publish_elsewhere(ROOM, b"m6");
    pair.drive();
    assert_eq!(messages(&pair.client_events()), ["m6"]);
    assert_eq!(pair.delivered(Dir::ToClient, herald_protocol::wire::Body::Message), 4);
}

#[test]
fn reconnect_with_nothing_missed_recovers_with_an_empty_batch() {
    let mut pair = pair_at_offset_2();
    pair.drop_link();
    pair.connect();
    let events = pair.client_events();
    assert!(
        matches!(
            &events[..],
            [
                ClientEvent::Disconnected { .. },
                ClientEvent::Connected { reconnected: true, .. },
                ClientEvent::Subscribed { recovered: true, resumed: true, offset: 2, history, .. },
            ] if history.is_empty()
        ),
        "{events:?}"
    );
}

#[test]
fn resume_says_not_recovered_when_history_lost_the_gap() {
    // The room keeps only its last 3 messages: after m12, 3..=9 are gone.
    let mut pair = pair_at_offset_2_keeping(3);
    pair.drop_link();
    for i in 3..=12 {
        pair.publish_elsewhere(ROOM, format!("m{i}").as_bytes());
    }
    assert_eq!(pair.app.log(ROOM).first, 10);

    pair.connect();
    let events = pair.client_events();
    let [
        ClientEvent::Disconnected { .. },
        ClientEvent::Connected { .. },
        ClientEvent::Subscribed {
            offset: 12,
            recovered,
            resumed: true,
            history,
            ..
        },
    ] = &events[..]
    else {
        panic!("{events:?}");
    };
    assert!(!recovered, "the gap could not be filled: the client must be told");
    assert!(history.is_empty());
    // The client now continues from the room's current position.
    assert_eq!(pair.client.position(ROOM), Some(Position { epoch: 1, offset: 12 }));
    pair.publish_elsewhere(ROOM, b"m13");
    pair.drive();
    assert_eq!(messages(&pair.client_events()), ["m13"]);
}

#[test]
fn resume_into_a_new_epoch_is_not_recovered() {
    let mut pair = pair_at_offset_2();
    pair.drop_link();
    // The node restarted without durable history: a new epoch.
    pair.app.restart_owner(owner_config(2));
    pair.connect();
    let events = pair.client_events();
    assert!(
        events.iter().any(|e| matches!(
            e,
            ClientEvent::Subscribed {
                epoch: 2,
                recovered: false,
                resumed: true,
                ..
            }
        )),
        "{events:?}"
    );
    assert_eq!(pair.client.position(ROOM).map(|p| p.epoch), Some(2));
}

#[test]
fn resume_into_a_new_epoch_replays_what_the_new_epoch_holds() {
    let mut pair = pair_at_offset_2();
    pair.drop_link();
    pair.app.restart_owner(owner_config(2));
    // Published after the restart, before the client is back: the client
    // has seen nothing of epoch 2, so all of it is what it missed.
    pair.publish_elsewhere(ROOM, b"n1");
    pair.publish_elsewhere(ROOM, b"n2");
    pair.connect();
    let events = pair.client_events();
    let replay = events.iter().find_map(|e| match e {
        ClientEvent::Subscribed {
            epoch: 2,
            recovered,
            history,
            ..
        } => Some((*recovered, payloads(history))),
        _ => None,
    });
    // Not recovered: the old epoch's tail is unknown.
    assert_eq!(
        replay,
        Some((false, vec!["n1".to_owned(), "n2".to_owned()])),
        "{events:?}"
    );
    assert_eq!(pair.client.position(ROOM), Some(Position { epoch: 2, offset: 2 }));
}

#[test]
fn unacknowledged_publish_is_resent_with_the_same_idempotency_key() {
    let mut pair = Pair::default();
    pair.connect();
    pair.client.subscribe(pair.now, ROOM, SubscribeOptions::default());
    pair.drive();
    pair.client_events();

    let id = pair
        .client
        .publish(pair.now, ROOM, b"exactly once", PublishOptions::default());
    // The publish reaches the server and is stored; the link drops while
    // the ack (and the delivery) are on their way back.
    pair.advance(pair.latency);
    assert_eq!(pair.app.log(ROOM).messages.len(), 1);
    pair.drop_link();
    let events = pair.client_events();
    assert!(
        matches!(&events[..], [ClientEvent::Disconnected { .. }]),
        "a non-volatile publish survives the disconnect: {events:?}"
    );
    assert_eq!(pair.client.pending_requests(), 1);

    pair.connect();
    let events = pair.client_events();
    // The message is recovered once, through the resume...
    let subscribed_history: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Subscribed { history, .. } => Some(payloads(history)),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(subscribed_history, ["exactly once"]);
    assert!(messages(&events).is_empty(), "no second delivery: {events:?}");
    // ...and the resent publish is acknowledged with the original position.
    assert!(
        events.contains(&ClientEvent::Published {
            request_id: id,
            position: Position { epoch: 1, offset: 1 },
        }),
        "{events:?}"
    );
    assert_eq!(pair.client.pending_requests(), 0);

    let sent = pair.app.publishes();
    assert_eq!(sent.len(), 2, "sent once, resent once");
    assert_eq!(sent[0], sent[1], "same room, payload and idempotency key");
    assert!(sent[0].2.is_some());
    assert_eq!(pair.app.log(ROOM).messages.len(), 1, "deduplicated");
}

#[test]
fn publish_made_while_disconnected_is_sent_after_connecting() {
    let mut pair = Pair::default();
    let first = pair
        .client
        .publish(pair.now, ROOM, b"queued 1", PublishOptions::default());
    let second = pair
        .client
        .publish(pair.now, ROOM, b"queued 2", PublishOptions::default());
    pair.connect();
    let events = pair.client_events();
    assert_eq!(
        events[1..],
        [
            ClientEvent::Published {
                request_id: first,
                position: Position { epoch: 1, offset: 1 }
            },
            ClientEvent::Published {
                request_id: second,
                position: Position { epoch: 1, offset: 2 }
            },
        ]
    );
    let keys: Vec<_> = pair.app.publishes().into_iter().map(|p| p.2).collect();
    assert_eq!(keys, [Some("c-1".to_owned()), Some("c-2".to_owned())]);
}

#[test]
fn volatile_publish_is_not_kept_across_a_disconnect() {
    let mut pair = Pair::default();
    pair.connect();
    pair.client_events();
    // The server takes it and answers, but the answer is lost.
    pair.lose_server_frames = true;
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
    pair.drop_link();
    let events = pair.client_events();
    assert!(
        matches!(
            &events[..],
            [
                ClientEvent::PublishFailed { request_id, code: ErrorCode::Unavailable, .. },
                ClientEvent::Disconnected { .. },
            ] if *request_id == id
        ),
        "{events:?}"
    );
    assert_eq!(pair.client.pending_requests(), 0);
    pair.lose_server_frames = false;
    pair.connect();
    assert_eq!(pair.app.publishes().len(), 1, "not resent");
}

#[test]
fn go_away_reaches_the_client_then_it_resumes_elsewhere() {
    let mut pair = pair_at_offset_2();
    pair.server
        .go_away(ErrorCode::ServerShutdown, "restarting", Duration::from_millis(2_500));
    pair.drive();
    let events = pair.client_events();
    assert_eq!(
        events,
        [
            ClientEvent::GoAway {
                code: ErrorCode::ServerShutdown,
                reason: "restarting".into(),
                reconnect_after: Some(Duration::from_millis(2_500)),
            },
            ClientEvent::Disconnected {
                code: ErrorCode::ServerShutdown,
                reason: "restarting".into(),
            },
        ]
    );
    assert!(!pair.link_up());

    pair.advance(Duration::from_millis(2_500));
    pair.publish_elsewhere(ROOM, b"m3");
    pair.connect();
    let events = pair.client_events();
    assert!(
        events.iter().any(
            |e| matches!(e, ClientEvent::Subscribed { recovered: true, history, .. } if payloads(history) == ["m3"])
        ),
        "{events:?}"
    );
}

#[test]
fn go_away_without_delay_means_do_not_reconnect() {
    let mut pair = Pair::default();
    pair.connect();
    pair.client_events();
    pair.server.go_away(ErrorCode::Kicked, "bye", Duration::ZERO);
    pair.drive();
    let events = pair.client_events();
    assert!(
        matches!(
            &events[..],
            [
                ClientEvent::GoAway {
                    code: ErrorCode::Kicked,
                    reconnect_after: None,
                    ..
                },
                ClientEvent::Disconnected { .. }
            ]
        ),
        "{events:?}"
    );
}
