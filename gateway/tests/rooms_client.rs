//! End-to-end over real loopback sockets: the async client against a node.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod support;

use herald_protocol::{ClientEvent, ErrorCode, Position, PublishOptions, SubscribeOptions};
use support::*;

#[tokio::test]
async fn publish_is_acked_with_offsets_and_delivered_in_order() {
    let node = node();
    let (alice, mut alice_events) = client(&node.url(), "alice").await;
    let (bob, _bob_events) = client(&node.url(), "bob").await;
    let sub = alice
        .subscribe("chat:lobby", SubscribeOptions::default())
        .await
        .unwrap();
    assert_eq!(sub.offset, 0, "a new room starts before offset 1");

    let mut acks = Vec::new();
    for i in 0..20u8 {
        acks.push(
            bob.publish("chat:lobby", vec![i], PublishOptions::default())
                .await
                .unwrap(),
        );
    }
    let offsets: Vec<u64> = acks.iter().map(|p| p.offset).collect();
    assert_eq!(
        offsets,
        (1..=20).collect::<Vec<_>>(),
        "offsets are assigned 1, 2, 3, ..."
    );
    assert!(acks.iter().all(|p| p.epoch == sub.epoch));

    let mut got = Vec::new();
    while got.len() < 20 {
        let d = next_matching(&mut alice_events, |ev| match ev {
            ClientEvent::Message(d) => Some(d),
            _ => None,
        })
        .await;
        assert_eq!(d.publisher, "bob");
        got.push((d.offset, d.payload[0]));
    }
    assert_eq!(got, (1..=20).map(|i| (i, (i - 1) as u8)).collect::<Vec<_>>());
}

#[tokio::test]
async fn history_is_sent_on_subscribe() {
    let node = node();
    let (bob, _e) = client(&node.url(), "bob").await;
    for i in 0..5u8 {
        bob.publish("chat:h", vec![i], PublishOptions::default()).await.unwrap();
    }
    let (alice, mut events) = client(&node.url(), "alice").await;
    alice
        .subscribe(
            "chat:h",
            SubscribeOptions {
                history: 3,
                presence: false,
            },
        )
        .await
        .unwrap();
    let history = next_matching(&mut events, |ev| match ev {
        ClientEvent::Subscribed { history, .. } => Some(history),
        _ => None,
    })
    .await;
    assert_eq!(history.iter().map(|d| d.offset).collect::<Vec<_>>(), vec![3, 4, 5]);
}

#[tokio::test]
async fn dropped_link_resumes_without_gap_or_duplicates() {
    let node = node();
    let proxy = Proxy::start(node.addr).await;
    let (alice, mut events) = client(&proxy.url(), "alice").await;
    let (bob, _b) = client(&node.url(), "bob").await;
    alice.subscribe("chat:r", SubscribeOptions::default()).await.unwrap();
    for i in 1..=3u8 {
        bob.publish("chat:r", vec![i], PublishOptions::default()).await.unwrap();
    }
    let mut seen = Vec::new();
    while seen.len() < 3 {
        if let ClientEvent::Message(d) = events.recv().await.unwrap() {
            seen.push(d.offset);
        }
    }

    proxy.cut();
    next_matching(&mut events, |ev| {
        matches!(ev, ClientEvent::Disconnected { .. }).then_some(())
    })
    .await;
    // Published while alice is away: she must get exactly these on resume.
    for i in 4..=6u8 {
        bob.publish("chat:r", vec![i], PublishOptions::default()).await.unwrap();
    }
    let (recovered, resumed, history) = next_matching(&mut events, |ev| match ev {
        ClientEvent::Subscribed {
            recovered,
            resumed,
            history,
            ..
        } => Some((recovered, resumed, history)),
        _ => None,
    })
    .await;
    assert!(resumed && recovered, "gap within the history window is filled");
    seen.extend(history.iter().map(|d| d.offset));
    bob.publish("chat:r", vec![7], PublishOptions::default()).await.unwrap();
    let d = next_matching(&mut events, |ev| match ev {
        ClientEvent::Message(d) => Some(d),
        _ => None,
    })
    .await;
    seen.push(d.offset);
    assert_eq!(seen, (1..=7).collect::<Vec<_>>(), "no gap, no duplicate");
}

#[tokio::test]
async fn resume_after_node_restart_says_not_recovered() {
    let node = node();
    let proxy = Proxy::start(node.addr).await;
    let (alice, mut events) = client(&proxy.url(), "alice").await;
    let first = alice.subscribe("chat:x", SubscribeOptions::default()).await.unwrap();
    alice
        .publish("chat:x", &b"before"[..], PublishOptions::default())
        .await
        .unwrap();

    // A new node (new epoch, empty history) behind the same address.
    let node2 = support::node();
    proxy.retarget(node2.addr).await;
    node.shutdown();
    let (recovered, epoch) = next_matching(&mut events, |ev| match ev {
        ClientEvent::Subscribed {
            recovered,
            resumed: true,
            epoch,
            ..
        } => Some((recovered, epoch)),
        _ => None,
    })
    .await;
    assert!(!recovered, "a lost log is reported, never a silent gap");
    assert_ne!(epoch, first.epoch);
}

#[tokio::test]
async fn shutdown_sends_goaway_with_reconnect_advice() {
    let node = node();
    let (_alice, mut events) = client(&node.url(), "alice").await;
    std::thread::spawn(move || node.shutdown());
    let (code, after) = next_matching(&mut events, |ev| match ev {
        ClientEvent::GoAway {
            code, reconnect_after, ..
        } => Some((code, reconnect_after)),
        _ => None,
    })
    .await;
    assert_eq!(code, ErrorCode::ServerShutdown);
    assert!(after.is_some());
}

#[tokio::test]
async fn volatile_publish_is_acked_without_offset() {
    let node = node();
    let (alice, mut events) = client(&node.url(), "alice").await;
    alice.subscribe("game:1", SubscribeOptions::default()).await.unwrap();
    let pos = alice
        .publish(
            "game:1",
            &b"pos"[..],
            PublishOptions {
                volatile: true,
                ..PublishOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(pos.offset, 0);
    let d = next_matching(&mut events, |ev| match ev {
        ClientEvent::Message(d) => Some(d),
        _ => None,
    })
    .await;
    assert!(d.volatile && d.offset == 0);
}

#[tokio::test]
async fn a_namespace_without_volatile_refuses_volatile_publishes() {
    let mut config = herald_gateway::NodeConfig::default();
    for (name, ns) in &mut config.namespaces {
        if name == "chat" {
            ns.volatile = false;
        }
    }
    let node = node_with(config);
    let (alice, mut events) = client(&node.url(), "alice").await;
    alice.subscribe("chat:calm", SubscribeOptions::default()).await.unwrap();
    let volatile = PublishOptions {
        volatile: true,
        ..PublishOptions::default()
    };
    let err = alice
        .publish("chat:calm", &b"fleeting"[..], volatile.clone())
        .await
        .unwrap_err();
    assert_refused(&err, ErrorCode::VolatileNotAllowed);
    // Stored publishes still go through, and were the only thing delivered;
    // other namespaces keep their own setting.
    let p = alice
        .publish("chat:calm", &b"kept"[..], PublishOptions::default())
        .await
        .unwrap();
    assert_eq!(p.offset, 1, "the refused publish took no offset");
    let d = next_matching(&mut events, |ev| match ev {
        ClientEvent::Message(d) => Some(d),
        _ => None,
    })
    .await;
    assert_eq!(&d.payload[..], b"kept");
    alice.publish("game:1", &b"pos"[..], volatile).await.unwrap();
}

#[tokio::test]
async fn refused_requests_carry_typed_errors() {
    let node = node();
    let (alice, _e) = client(&node.url(), "alice").await;
    let err = alice
        .subscribe("bad room!", SubscribeOptions::default())
        .await
        .unwrap_err();
    assert_refused(&err, ErrorCode::InvalidRoomName);
    let err = alice
        .publish("chat:big", vec![0u8; 40 * 1024], PublishOptions::default())
        .await
        .unwrap_err();
    assert_refused(&err, ErrorCode::PayloadTooLarge);
    // The connection is still usable.
    let p = alice
        .publish("chat:ok", &b"x"[..], PublishOptions::default())
        .await
        .unwrap();
    assert_eq!(p.offset, 1);
}

#[tokio::test]
async fn empty_token_is_refused_at_connect() {
    let node = node();
    let err = herald_protocol::tokio_client::Client::connect(&node.url(), options(""))
        .await
        .unwrap_err();
    assert_refused(&err, ErrorCode::AuthFailed);
    let _ = Position::default();
}

#[tokio::test]
async fn a_gap_larger_than_the_replay_budget_is_reported_not_recovered() {
    let mut config = herald_gateway::NodeConfig::default();
    // Replay budget is half the outbound limit: 8 KiB here.
    config.session.limits.max_outbound_bytes = 16 * 1024;
    let node = node_with(config);
    let proxy = Proxy::start(node.addr).await;
    let (alice, mut events) = client(&proxy.url(), "alice").await;
    let (bob, _b) = client(&node.url(), "bob").await;
    alice.subscribe("chat:big", SubscribeOptions::default()).await.unwrap();

    proxy.cut();
    next_matching(&mut events, |ev| {
        matches!(ev, ClientEvent::Disconnected { .. }).then_some(())
    })
    .await;
    for i in 0..20u8 {
        bob.publish("chat:big", vec![i; 1024], PublishOptions::default())
            .await
            .unwrap();
    }
    let (recovered, history, offset) = next_matching(&mut events, |ev| match ev {
        ClientEvent::Subscribed {
            recovered,
            resumed: true,
            history,
            offset,
            ..
        } => Some((recovered, history, offset)),
        _ => None,
    })
    .await;
    assert!(!recovered, "20 KiB of missed messages do not fit an 8 KiB replay");
    assert_eq!(offset, 20);
    assert!(
        !history.is_empty() && history.len() < 20,
        "history of {}",
        history.len()
    );
    assert_eq!(history.last().map(|d| d.offset), Some(20), "the newest part is sent");
    // The connection survived the replay (no slow-consumer close).
    let p = alice
        .publish("chat:big", &b"ok"[..], PublishOptions::default())
        .await
        .unwrap();
    assert_eq!(p.offset, 21);
}
