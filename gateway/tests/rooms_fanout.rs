//! Fan-out over real loopback sockets on a four-shard node: every subscriber
//! gets every message of its room exactly once, in offset order, whatever
//! shard it and the publishers landed on; rooms do not leak into each other;
//! unsubscribing stops delivery and subscribing again does not duplicate it;
//! messages published while one shard writes to hundreds of sockets are
//! taken in the middle of that pass and still arrive once each, in order.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod support;

use std::collections::{BTreeMap, BTreeSet};

use herald_gateway::NodeConfig;
use herald_protocol::tokio_client::Events;
use herald_protocol::wire::{self, BodyT};
use herald_protocol::{ClientEvent, Delivery, ErrorCode, PublishOptions, SubscribeOptions};
use support::*;

const NO_PRESENCE: SubscribeOptions = SubscribeOptions {
    history: 0,
    presence: false,
};

fn four_shards() -> NodeConfig {
    NodeConfig {
        shards: 4,
        ..NodeConfig::default()
    }
}

/// The shard a session landed on, from its id (`{node}-{shard}-{slot}-{generation}`).
async fn shard_of_session(events: &mut Events) -> String {
    let session_id = next_matching(events, |ev| match ev {
        ClientEvent::Connected { session_id, .. } => Some(session_id),
        _ => None,
    })
    .await;
    let parts: Vec<&str> = session_id.rsplitn(4, '-').collect();
    parts[2].to_owned()
}

async fn next_message(events: &mut Events) -> Delivery {
    next_matching(events, |ev| match ev {
        ClientEvent::Message(d) => Some(d),
        _ => None,
    })
    .await
}

/// Frames up to and including the first `Message` (heartbeats skipped).
async fn frames_until_message(ws: &mut RawWs) -> (Vec<(u32, BodyT)>, Box<wire::MessageT>) {
    let mut before = Vec::new();
    loop {
        match ws_next_non_ping(ws).await {
            Some((_, BodyT::Message(m))) => return (before, m),
            Some(other) => before.push(other),
            None => panic!("closed while waiting for a message; saw {before:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fan_out_across_shards_delivers_every_message_once_in_offset_order() {
    const ROOM: &str = "chat:fanout";
    const PUBLISHERS: usize = 3;
    const PER_PUBLISHER: usize = 50;
    const TOTAL: usize = PUBLISHERS * PER_PUBLISHER;
    let node = node_with(four_shards());

    let mut subscribers = Vec::new();
    let mut shards = BTreeSet::new();
    for i in 0..40 {
        let (c, mut events) = client(&node.url(), &format!("sub{i}")).await;
        shards.insert(shard_of_session(&mut events).await);
        c.subscribe(ROOM, NO_PRESENCE).await.unwrap();
        subscribers.push((c, events));
    }
    assert!(
        shards.len() >= 2,
        "40 connections spread over SO_REUSEPORT listeners, got shards {shards:?}"
    );

    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let (publisher, events) = client(&node.url(), &format!("pub{p}")).await;
        tasks.push(tokio::spawn(async move {
            let _keep = events;
            let mut acks = Vec::new();
            for seq in 0..PER_PUBLISHER {
                let payload = format!("p{p}-{seq:03}");
                let pos = publisher
                    .publish(ROOM, payload.clone().into_bytes(), PublishOptions::default())
                    .await
                    .unwrap();
                acks.push((pos, payload));
            }
            acks
        }));
    }
    // What the publishers were told: offset -> payload.
    let mut acked = BTreeMap::new();
    let mut epochs = BTreeSet::new();
    for t in tasks {
        let acks = tokio::time::timeout(WAIT, t).await.unwrap().unwrap();
        let offsets: Vec<u64> = acks.iter().map(|(p, _)| p.offset).collect();
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "one publisher's acks increase: {offsets:?}"
        );
        for (pos, payload) in acks {
            epochs.insert(pos.epoch);
            assert!(
                acked.insert(pos.offset, payload).is_none(),
                "offset {} acked twice",
                pos.offset
            );
        }
    }
    assert_eq!(epochs.len(), 1, "one room, one epoch");
    assert_eq!(
        acked.keys().copied().collect::<Vec<_>>(),
        (1..=TOTAL as u64).collect::<Vec<_>>(),
        "acks cover 1..=150 without gaps"
    );

    for (i, (_c, events)) in subscribers.iter_mut().enumerate() {
        let mut seen = Vec::with_capacity(TOTAL);
        while seen.len() < TOTAL {
            let d = next_message(events).await;
            assert_eq!(d.room, ROOM);
            assert!(epochs.contains(&d.epoch));
            seen.push((d.offset, String::from_utf8(d.payload.to_vec()).unwrap()));
        }
        let offsets: Vec<u64> = seen.iter().map(|(o, _)| *o).collect();
        assert_eq!(
            offsets,
            (1..=TOTAL as u64).collect::<Vec<_>>(),
            "subscriber {i}: offsets 1..=150, in order, once each"
        );
        for (offset, payload) in &seen {
            assert_eq!(
                Some(payload),
                acked.get(offset),
                "subscriber {i}: payload at offset {offset}"
            );
        }
    }
    // Nothing beyond the 150: a last message is the next thing everyone sees.
    let (last, _e) = client(&node.url(), "last").await;
    let pos = last
        .publish(ROOM, &b"end"[..], PublishOptions::default())
        .await
        .unwrap();
    assert_eq!(pos.offset, TOTAL as u64 + 1);
    for (i, (_c, events)) in subscribers.iter_mut().enumerate() {
        let d = next_message(events).await;
        assert_eq!((d.offset, &d.payload[..]), (pos.offset, &b"end"[..]), "subscriber {i}");
    }
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_rooms_do_not_leak_into_each_other() {
    const ROOMS: usize = 20;
    const PER_ROOM: u64 = 10;
    let node = node_with(four_shards());
    let room = |i: usize| format!("chat:many-{i}");

    // Per room: a Rust client (checks order and content) and a raw socket
    // (sees every frame the server sends it, so a foreign room shows).
    let mut rust_subs = Vec::new();
    let mut raw_subs = Vec::new();
    for i in 0..ROOMS {
        let (c, events) = client(&node.url(), &format!("reader{i}")).await;
        c.subscribe(&room(i), NO_PRESENCE).await.unwrap();
        rust_subs.push((c, events));
        let (mut ws, _) = ws_connected(&node.url(), &format!("raw{i}")).await;
        ws_subscribe(&mut ws, 2, &room(i), false).await;
        raw_subs.push(ws);
    }

    let mut publishers = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..ROOMS {
        let (publisher, events) = client(&node.url(), &format!("writer{i}")).await;
        publishers.push((publisher.clone(), events));
        let name = room(i);
        tasks.push(tokio::spawn(async move {
            for seq in 1..=PER_ROOM {
                let pos = publisher
                    .publish(&name, format!("{name}/{seq}").into_bytes(), PublishOptions::default())
                    .await
                    .unwrap();
                assert_eq!(pos.offset, seq, "{name}: its own offsets");
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(WAIT, t).await.unwrap().unwrap();
    }
    // A last message per room once every room is done: anything leaking from
    // another room would have been queued before it.
    for (i, (publisher, _)) in publishers.iter().enumerate() {
        let pos = publisher
            .publish(&room(i), &b"end"[..], PublishOptions::default())
            .await
            .unwrap();
        assert_eq!(pos.offset, PER_ROOM + 1);
    }

    for (i, (_c, events)) in rust_subs.iter_mut().enumerate() {
        for seq in 1..=PER_ROOM {
            let d = next_message(events).await;
            assert_eq!(d.room, room(i));
            assert_eq!(d.offset, seq);
            assert_eq!(d.payload, format!("{}/{seq}", room(i)).into_bytes());
        }
        let d = next_message(events).await;
        assert_eq!((d.offset, &d.payload[..]), (PER_ROOM + 1, &b"end"[..]));
    }
    for (i, ws) in raw_subs.iter_mut().enumerate() {
        let mut offsets = Vec::new();
        loop {
            let (before, m) = frames_until_message(ws).await;
            assert!(before.is_empty(), "{}: unexpected frames {before:?}", room(i));
            assert_eq!(m.room, room(i), "a message of another room reached {}", room(i));
            offsets.push(m.offset);
            if m.payload.as_deref() == Some(b"end") {
                break;
            }
        }
        assert_eq!(offsets, (1..=PER_ROOM + 1).collect::<Vec<_>>(), "{}", room(i));
    }
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_delivery_and_subscribing_again_does_not_duplicate() {
    const ROOM: &str = "chat:unsub";
    let node = node_with(four_shards());
    let (bob, _b) = client(&node.url(), "bob").await;
    let publish = |payload: &'static str| {
        let bob = bob.clone();
        async move {
            bob.publish(ROOM, payload.as_bytes(), PublishOptions::default())
                .await
                .unwrap()
                .offset
        }
    };
    let (mut alice, _) = ws_connected(&node.url(), "alice").await;
    ws_subscribe(&mut alice, 2, ROOM, false).await;
    assert_eq!(publish("m1").await, 1);
    let (before, m) = frames_until_message(&mut alice).await;
    assert!(before.is_empty(), "{before:?}");
    assert_eq!(m.offset, 1);

    let mut u = wire::UnsubscribeT::default();
    u.room = ROOM.into();
    ws_send_body(&mut alice, 3, BodyT::Unsubscribe(Box::new(u))).await;
    match ws_next_non_ping(&mut alice).await {
        Some((3, BodyT::Reply(r))) => assert_eq!(r.code, ErrorCode::Ok),
        other => panic!("expected the unsubscribe's Reply, got {other:?}"),
    }
    assert_eq!(publish("m2").await, 2);
    // Subscribing again goes through the room's owner after m2 did: had m2
    // been delivered, it would arrive before this Subscribed.
    let s = ws_subscribe(&mut alice, 4, ROOM, false).await;
    assert_eq!(s.offset, 2, "m2 was published while alice was away");
    assert_eq!(publish("m3").await, 3);
    let (before, m) = frames_until_message(&mut alice).await;
    assert!(before.is_empty(), "{before:?}");
    assert_eq!(m.offset, 3, "m2 never reached alice; m3 did");

    // A second Subscribe to a room already joined (a rejoin) is confirmed
    // again but does not add a second delivery.
    let s = ws_subscribe(&mut alice, 5, ROOM, false).await;
    assert_eq!(s.offset, 3);
    for (p, want) in [("m4", 4), ("m5", 5), ("m6", 6)] {
        assert_eq!(publish(p).await, want);
    }
    let mut offsets = Vec::new();
    for _ in 0..3 {
        let (before, m) = frames_until_message(&mut alice).await;
        assert!(before.is_empty(), "{before:?}");
        offsets.push(m.offset);
    }
    assert_eq!(offsets, vec![4, 5, 6]);
    assert_eq!(publish("m7").await, 7);
    let (_, m) = frames_until_message(&mut alice).await;
    assert_eq!(m.offset, 7, "each message exactly once after the rejoin");

    // One Unsubscribe leaves the room entirely, rejoin or not.
    let mut u = wire::UnsubscribeT::default();
    u.room = ROOM.into();
    ws_send_body(&mut alice, 6, BodyT::Unsubscribe(Box::new(u))).await;
    match ws_next_non_ping(&mut alice).await {
        Some((6, BodyT::Reply(r))) => assert_eq!(r.code, ErrorCode::Ok),
        other => panic!("expected the unsubscribe's Reply, got {other:?}"),
    }
    assert_eq!(publish("m8").await, 8);
    let s = ws_subscribe(&mut alice, 7, ROOM, false).await;
    assert_eq!(s.offset, 8, "m8 was not delivered before this");
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_while_the_subscribe_is_pending_stops_delivery() {
    const ROOM: &str = "chat:ghost";
    // One shard: alice and bob share it, so deliveries for bob reach the
    // shard that holds alice's connection.
    let node = node_with(NodeConfig {
        shards: 1,
        ..NodeConfig::default()
    });
    let (mut alice, _) = ws_connected(&node.url(), "alice").await;
    // Subscribe and Unsubscribe in one write: the unsubscribe is handled
    // before the room owner's answer to the subscribe comes back.
    let mut u = wire::UnsubscribeT::default();
    u.room = ROOM.into();
    let subscribe = herald_protocol::with_encoder(|e| e.body(2, subscribe_body(ROOM, 0, false)));
    let unsubscribe = herald_protocol::with_encoder(|e| e.body(3, BodyT::Unsubscribe(Box::new(u))));
    {
        use futures_util::SinkExt;
        use tokio_tungstenite::tungstenite::Message;
        alice.feed(Message::Binary(subscribe)).await.unwrap();
        alice.feed(Message::Binary(unsubscribe)).await.unwrap();
        alice.flush().await.unwrap();
    }
    match ws_next_non_ping(&mut alice).await {
        Some((3, BodyT::Reply(r))) => assert_eq!(r.code, ErrorCode::Ok),
        other => panic!("expected the unsubscribe's Reply, got {other:?}"),
    }

    let (bob, _b) = client(&node.url(), "bob").await;
    bob.subscribe(ROOM, NO_PRESENCE).await.unwrap();
    let pos = bob
        .publish(ROOM, &b"for bob only"[..], PublishOptions::default())
        .await
        .unwrap();
    assert_eq!(pos.offset, 1);
    // A subscribe to another room is answered after any delivery of that
    // message to this shard.
    ws_send_body(&mut alice, 4, subscribe_body("chat:barrier", 0, false)).await;
    match ws_next_non_ping(&mut alice).await {
        Some((4, BodyT::Subscribed(_))) => {}
        Some((_, BodyT::Message(m))) => {
            panic!(
                "alice unsubscribed from {ROOM} but got message {} of {}",
                m.offset, m.room
            )
        }
        Some((2, BodyT::Subscribed(_))) => panic!("a cancelled subscribe was confirmed"),
        other => panic!("unexpected {other:?}"),
    }
    stop(node).await;
}

/// One shard, 200 subscribers: every write pass is long enough (200
/// sockets) for the shard to read sockets in the middle of it. Publishers
/// whose ack went out early in a pass publish again before it ends, so
/// their messages are taken mid-pass; every subscriber still gets every
/// message once, in offset order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_taken_during_a_long_write_pass_arrive_once_in_order() {
    const ROOM: &str = "chat:long-pass";
    const SUBSCRIBERS: usize = 200;
    const PUBLISHERS: usize = 5;
    const PER_PUBLISHER: usize = 40;
    const TOTAL: usize = PUBLISHERS * PER_PUBLISHER;
    let node = node_with(NodeConfig {
        shards: 1,
        ..NodeConfig::default()
    });
    let mut subscribers = Vec::new();
    for i in 0..SUBSCRIBERS {
        let (c, events) = client(&node.url(), &format!("sub{i}")).await;
        c.subscribe(ROOM, NO_PRESENCE).await.unwrap();
        subscribers.push((c, events));
    }
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let (publisher, events) = client(&node.url(), &format!("pub{p}")).await;
        tasks.push(tokio::spawn(async move {
            let _keep = events;
            for seq in 0..PER_PUBLISHER {
                publisher
                    .publish(ROOM, format!("p{p}-{seq}").into_bytes(), PublishOptions::default())
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(WAIT, t).await.unwrap().unwrap();
    }
    for (i, (_c, events)) in subscribers.iter_mut().enumerate() {
        let mut offsets = Vec::with_capacity(TOTAL);
        while offsets.len() < TOTAL {
            offsets.push(next_message(events).await.offset);
        }
        assert_eq!(
            offsets,
            (1..=TOTAL as u64).collect::<Vec<_>>(),
            "subscriber {i}: every offset once, in order"
        );
    }
    let mid_pass = metric(node.addr, "herald_write_pass_reads_total", "").await;
    assert!(mid_pass > 0, "no socket was read during a write pass");
    stop(node).await;
}

/// docs/PROTOCOL.md §5: a subscribed publisher gets the `Reply` to its
/// publish before the `Message` it published, whichever shard owns the room.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscribed_publisher_gets_its_reply_before_its_own_message() {
    let node = node_with(four_shards());
    let (mut ws, _) = ws_connected(&node.url(), "ann").await;
    // Rooms on different shards (the owner is the shard of FNV-1a(room)).
    let rooms: Vec<String> = (0..8).map(|i| format!("chat:order-{i}")).collect();
    for (i, room) in rooms.iter().enumerate() {
        ws_subscribe(&mut ws, 100 + i as u32, room, false).await;
    }
    for i in 0..40u32 {
        let room = &rooms[i as usize % rooms.len()];
        ws_send_frame(&mut ws, publish_frame(1_000 + i, room, b"mine")).await;
        let (before, message) = frames_until_message(&mut ws).await;
        let reply = before.iter().find_map(|(id, body)| match body {
            BodyT::Reply(r) if *id == 1_000 + i => Some(r.offset),
            _ => None,
        });
        assert_eq!(
            reply,
            Some(message.offset),
            "publish {i} in {room}: the Reply with the message's offset comes first; saw {before:?}"
        );
    }
    stop(node).await;
}
