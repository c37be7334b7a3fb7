//! Presence and typing over real loopback sockets on a four-shard node:
//! presence counts users, not connections; namespaces without presence send
//! none; typing reaches the other members only, is rate-limited per
//! connection and is never stored.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod support;

use std::time::Instant;

use herald_gateway::NodeConfig;
use herald_protocol::tokio_client::{Client, Events};
use herald_protocol::wire::{self, BodyT};
use herald_protocol::{ClientEvent, ErrorCode, PublishOptions, SubscribeOptions};
use support::*;

const PRESENCE: SubscribeOptions = SubscribeOptions {
    history: 0,
    presence: true,
};
const NO_PRESENCE: SubscribeOptions = SubscribeOptions {
    history: 0,
    presence: false,
};

fn config() -> NodeConfig {
    NodeConfig {
        shards: 4,
        ..api_config()
    }
}

/// Subscribes and returns the presence snapshot of the `Subscribed` answer.
async fn subscribe(
    c: &Client,
    events: &mut Events,
    room: &str,
    options: SubscribeOptions,
) -> Option<wire::PresenceSnapshotT> {
    c.subscribe(room, options).await.unwrap();
    next_matching(events, |ev| match ev {
        ClientEvent::Subscribed { room: r, presence, .. } if r == room => Some(presence),
        _ => None,
    })
    .await
}

/// Every event before the delivery of the message with `payload`. Frames
/// the room's owner sent before that message (presence, typing) arrive
/// before it: owner-to-shard channels and connections are FIFO.
async fn events_until_message(events: &mut Events, payload: &[u8]) -> Vec<ClientEvent> {
    let mut before = Vec::new();
    tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await.expect("events stream open") {
                ClientEvent::Message(d) if d.payload == payload => return,
                ev => before.push(ev),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("message {payload:?} within the wait bound; saw {before:?}"));
    before
}

fn presence_frames(events: &[ClientEvent]) -> Vec<(&'static str, String)> {
    events
        .iter()
        .filter_map(|ev| match ev {
            ClientEvent::Frame {
                body: BodyT::PresenceJoin(j),
                ..
            } => Some(("join", j.user.clone())),
            ClientEvent::Frame {
                body: BodyT::PresenceLeave(l),
                ..
            } => Some(("leave", l.user.clone())),
            _ => None,
        })
        .collect()
}

fn typing_from(events: &[ClientEvent], user: &str) -> usize {
    events
        .iter()
        .filter(|ev| matches!(ev, ClientEvent::Frame { body: BodyT::TypingEvent(t), .. } if t.user == user))
        .count()
}

/// Subscribers of `room` on the whole node, from the server API.
async fn subscribers(node_addr: std::net::SocketAddr, room: &str) -> u64 {
    let (status, json) = http(node_addr, "GET", "/api/rooms", Some(API_KEY), None).await;
    assert_eq!(status, 200, "{json}");
    json["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["room"] == room)
        .map_or(0, |r| r["subscribers"].as_u64().unwrap())
}

/// Polls the server API until `room` has `want` subscribers.
async fn wait_subscribers(node_addr: std::net::SocketAddr, room: &str, want: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let n = subscribers(node_addr, room).await;
        if n == want {
            return;
        }
        assert!(Instant::now() < deadline, "{room}: {n} subscribers, waiting for {want}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_counts_users_not_connections() {
    const ROOM: &str = "chat:p";
    let node = node_with(config());
    let url = node.url();
    let (olga, mut olga_events) = client(&url, "olga").await;
    let snap = subscribe(&olga, &mut olga_events, ROOM, PRESENCE).await.unwrap();
    assert_eq!((snap.count, snap.users), (1, Some(vec!["olga".to_owned()])));

    let (ann1, mut ann1_events) = client(&url, "ann").await;
    let snap = subscribe(&ann1, &mut ann1_events, ROOM, PRESENCE).await.unwrap();
    assert_eq!(snap.count, 2);
    let (ann2, mut ann2_events) = client(&url, "ann").await;
    let snap = subscribe(&ann2, &mut ann2_events, ROOM, PRESENCE).await.unwrap();
    let mut users = snap.users.unwrap();
    users.sort();
    assert_eq!(
        (snap.count, users),
        (2, vec!["ann".to_owned(), "olga".to_owned()]),
        "three connections, two users"
    );
    let (bob, mut bob_events) = client(&url, "bob").await;
    assert_eq!(subscribe(&bob, &mut bob_events, ROOM, PRESENCE).await.unwrap().count, 3);

    bob.publish(ROOM, &b"barrier-1"[..], PublishOptions::default())
        .await
        .unwrap();
    let seen = events_until_message(&mut olga_events, b"barrier-1").await;
    assert_eq!(
        presence_frames(&seen),
        vec![("join", "ann".to_owned()), ("join", "bob".to_owned())],
        "one join for ann's two connections"
    );
    // ann's first connection saw bob join, not her own second connection.
    let seen = events_until_message(&mut ann1_events, b"barrier-1").await;
    assert_eq!(presence_frames(&seen), vec![("join", "bob".to_owned())]);

    // ann still has a connection in the room: no leave.
    ann1.close().await;
    wait_subscribers(node.addr, ROOM, 3).await;
    bob.publish(ROOM, &b"barrier-2"[..], PublishOptions::default())
        .await
        .unwrap();
    let seen = events_until_message(&mut olga_events, b"barrier-2").await;
    assert_eq!(presence_frames(&seen), vec![], "ann is still here");
    let (status, json) = http(node.addr, "GET", "/api/presence/chat:p", Some(API_KEY), None).await;
    assert_eq!((status, json["count"].as_u64()), (200, Some(3)), "{json}");

    // Her last connection leaves: exactly one leave.
    ann2.close().await;
    wait_subscribers(node.addr, ROOM, 2).await;
    bob.publish(ROOM, &b"barrier-3"[..], PublishOptions::default())
        .await
        .unwrap();
    let seen = events_until_message(&mut olga_events, b"barrier-3").await;
    assert_eq!(presence_frames(&seen), vec![("leave", "ann".to_owned())]);
    let seen = events_until_message(&mut bob_events, b"barrier-3").await;
    assert_eq!(presence_frames(&seen), vec![("leave", "ann".to_owned())]);
    let (status, json) = http(node.addr, "GET", "/api/presence/chat:p", Some(API_KEY), None).await;
    assert_eq!((status, json["count"].as_u64()), (200, Some(2)), "{json}");
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_without_presence_sends_no_presence() {
    // `dash:` tracks no presence by default, and only the server publishes.
    const ROOM: &str = "dash:p";
    let node = node_with(config());
    let url = node.url();
    let (a, mut a_events) = client(&url, "ann").await;
    assert_eq!(subscribe(&a, &mut a_events, ROOM, PRESENCE).await, None, "no snapshot");
    let (b, mut b_events) = client(&url, "bob").await;
    assert_eq!(subscribe(&b, &mut b_events, ROOM, PRESENCE).await, None, "no snapshot");

    let body = |data: &str| format!(r#"{{"room":"{ROOM}","data":"{data}"}}"#);
    let (status, json) = http(node.addr, "POST", "/api/publish", Some(API_KEY), Some(&body("tick-1"))).await;
    assert_eq!(status, 200, "{json}");
    let seen = events_until_message(&mut a_events, b"tick-1").await;
    assert_eq!(presence_frames(&seen), vec![], "no join for bob");

    b.close().await;
    wait_subscribers(node.addr, ROOM, 1).await;
    let (status, json) = http(node.addr, "POST", "/api/publish", Some(API_KEY), Some(&body("tick-2"))).await;
    assert_eq!(status, 200, "{json}");
    let seen = events_until_message(&mut a_events, b"tick-2").await;
    assert_eq!(presence_frames(&seen), vec![], "no leave for bob");
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_reaches_others_is_rate_limited_and_never_stored() {
    const ROOM: &str = "chat:t";
    let node = node_with(config());
    let url = node.url();
    let (bob, mut bob_events) = client(&url, "bob").await;
    subscribe(&bob, &mut bob_events, ROOM, NO_PRESENCE).await;
    let (ann, mut ann_events) = client(&url, "ann").await;
    subscribe(&ann, &mut ann_events, ROOM, NO_PRESENCE).await;

    // One indicator: bob sees it, ann (the sender) does not.
    ann.typing(ROOM, true).await.unwrap();
    ann.publish(ROOM, &b"after-typing"[..], PublishOptions::default())
        .await
        .unwrap();
    let seen = events_until_message(&mut bob_events, b"after-typing").await;
    let typing: Vec<(String, String, bool)> = seen
        .iter()
        .filter_map(|ev| match ev {
            ClientEvent::Frame {
                body: BodyT::TypingEvent(t),
                ..
            } => Some((t.room.clone(), t.user.clone(), t.active)),
            _ => None,
        })
        .collect();
    assert_eq!(typing, vec![(ROOM.to_owned(), "ann".to_owned(), true)]);
    let seen = events_until_message(&mut ann_events, b"after-typing").await;
    assert_eq!(typing_from(&seen, "ann"), 0, "the sender does not get its own typing");

    // A burst of 20 from a fresh connection (full bucket of 5, 2/s refill):
    // the Rust client sends typing without a request id, so the excess is
    // dropped silently.
    let (carol, mut carol_events) = client(&url, "carol").await;
    subscribe(&carol, &mut carol_events, ROOM, NO_PRESENCE).await;
    let start = Instant::now();
    for i in 0..20 {
        carol.typing(ROOM, i % 2 == 0).await.unwrap();
    }
    carol
        .publish(ROOM, &b"carol-done"[..], PublishOptions::default())
        .await
        .unwrap();
    let elapsed = start.elapsed().as_secs_f64();
    let seen = events_until_message(&mut bob_events, b"carol-done").await;
    let delivered = typing_from(&seen, "carol");
    let allowance = 5 + (2.0 * elapsed).ceil() as usize;
    assert!(
        (5..=allowance).contains(&delivered),
        "{delivered} of 20 typing updates delivered in {elapsed:.3}s (burst 5, 2/s)"
    );
    let seen = events_until_message(&mut carol_events, b"carol-done").await;
    assert!(
        !seen.iter().any(|ev| matches!(
            ev,
            ClientEvent::Disconnected { .. }
                | ClientEvent::Frame {
                    body: BodyT::TypingEvent(_),
                    ..
                }
        )),
        "no own typing and no disconnect for carol: {seen:?}"
    );

    // With request ids (raw socket), each dropped update is answered with
    // RateLimited and each passed one with nothing: together, all 10.
    let (mut dave, _) = ws_connected(&url, "dave").await;
    ws_subscribe(&mut dave, 2, ROOM, false).await;
    let start = Instant::now();
    {
        use futures_util::SinkExt;
        use tokio_tungstenite::tungstenite::Message;
        for id in 100..110u32 {
            let mut t = wire::TypingT::default();
            t.room = ROOM.into();
            t.active = true;
            let frame = herald_protocol::with_encoder(|e| e.body(id, BodyT::Typing(Box::new(t))));
            dave.feed(Message::Binary(frame)).await.unwrap();
        }
        dave.feed(Message::Binary(publish_frame(200, ROOM, b"dave-done")))
            .await
            .unwrap();
        dave.flush().await.unwrap();
    }
    let mut limited = Vec::new();
    loop {
        match ws_next_non_ping(&mut dave).await {
            Some((200, BodyT::Reply(r))) => {
                assert_eq!(r.code, ErrorCode::Ok);
                break;
            }
            Some((id, BodyT::Reply(r))) => {
                assert!((100..110).contains(&id), "reply to {id}");
                assert_eq!(r.code, ErrorCode::RateLimited);
                limited.push(id);
            }
            Some((_, BodyT::Message(_))) => {}
            Some((_, BodyT::TypingEvent(t))) => panic!("dave got his own typing: {t:?}"),
            other => panic!("unexpected {other:?}"),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let seen = events_until_message(&mut bob_events, b"dave-done").await;
    let passed = typing_from(&seen, "dave");
    assert_eq!(
        passed + limited.len(),
        10,
        "every update passed or was refused: {limited:?}"
    );
    assert!(
        (5..=5 + (2.0 * elapsed).ceil() as usize).contains(&passed),
        "{passed} of 10 passed in {elapsed:.3}s"
    );
    assert_eq!(
        limited,
        (110 - limited.len() as u32..110).collect::<Vec<_>>(),
        "the tail is refused"
    );

    // Typing is never stored: history holds the three publishes only.
    let mut q = wire::HistoryQueryT::default();
    q.room = ROOM.into();
    q.limit = 100;
    ws_send_body(&mut dave, 300, BodyT::HistoryQuery(Box::new(q))).await;
    let page = loop {
        match ws_next_non_ping(&mut dave).await {
            Some((300, BodyT::HistoryPage(p))) => break p,
            Some((_, BodyT::Message(_))) => {}
            other => panic!("expected the HistoryPage, got {other:?}"),
        }
    };
    let stored: Vec<(u64, Vec<u8>)> = page
        .messages
        .unwrap_or_default()
        .into_iter()
        .map(|m| (m.offset, m.payload.unwrap_or_default()))
        .collect();
    assert_eq!(
        stored,
        vec![
            (1, b"after-typing".to_vec()),
            (2, b"carol-done".to_vec()),
            (3, b"dave-done".to_vec())
        ]
    );
    let (late, mut late_events) = client(&url, "late").await;
    late.subscribe(
        ROOM,
        SubscribeOptions {
            history: 100,
            presence: false,
        },
    )
    .await
    .unwrap();
    let history = next_matching(&mut late_events, |ev| match ev {
        ClientEvent::Subscribed { history, .. } => Some(history),
        _ => None,
    })
    .await;
    assert_eq!(history.iter().map(|d| d.offset).collect::<Vec<_>>(), vec![1, 2, 3]);
    stop(node).await;
}
