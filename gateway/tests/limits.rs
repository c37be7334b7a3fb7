//! Per-connection and per-node limits over real loopback sockets: frame and
//! payload size, rooms per connection, publish rate, outbound queue (slow
//! consumers), subscribers per room, handshake and idle timeouts, connection
//! count. Each limit answers with its typed code and hurts nobody else.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use herald_gateway::{NodeConfig, NodeHandle, close_code};
use herald_protocol::tokio_client::{ClientError, Events};
use herald_protocol::wire::BodyT;
use herald_protocol::{ClientEvent, Delivery, ErrorCode, PublishOptions, SubscribeOptions};
use support::*;
use tokio_tungstenite::MaybeTlsStream;

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

fn server_error(code: ErrorCode) -> impl Fn(&ClientError) -> bool {
    move |e| matches!(e, ClientError::Server { code: c, .. } if *c == code)
}

async fn next_message(events: &mut Events) -> Delivery {
    next_matching(events, |ev| match ev {
        ClientEvent::Message(d) => Some(d),
        _ => None,
    })
    .await
}

/// Polls `/metrics` until `name{labels}` reaches `at_least`; returns the
/// last value (which is below `at_least` if the wait bound passed).
async fn wait_metric(addr: SocketAddr, name: &str, labels: &str, at_least: u64) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = metric(addr, name, labels).await;
        if v >= at_least || Instant::now() >= deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_oversized_frame_closes_only_its_connection() {
    let mut config = four_shards();
    config.session.limits.decode.max_frame_bytes = 1024;
    let node = node_with(config);
    let (watcher, mut events) = client(&node.url(), "watcher").await;
    watcher.subscribe("chat:calm", NO_PRESENCE).await.unwrap();

    let (mut mallory, _) = ws_connected(&node.url(), "mallory").await;
    ws_send_frame(&mut mallory, bytes::Bytes::from(vec![0u8; 2000])).await;
    let end = ws_until_close(mallory).await;
    // A WebSocket frame over the limit is the transport's business: RFC
    // 6455's 1009 (message too big), refused from the header alone.
    assert_eq!(end.error, None, "{end:?}");
    let (code, reason) = end.close.expect("a close frame");
    assert_eq!(code, 1009);
    assert!(reason.contains("exceeds the limit of 1024"), "{reason}");

    // Frames within the limit still work, for everyone else.
    let p = watcher
        .publish("chat:calm", vec![7u8; 512], PublishOptions::default())
        .await
        .unwrap();
    let d = next_message(&mut events).await;
    assert_eq!((d.offset, d.payload.len()), (p.offset, 512));
    stop(node).await;
}

#[tokio::test]
async fn subscribing_beyond_max_rooms_is_refused_and_the_connection_stays() {
    let mut config = four_shards();
    config.session.limits.max_rooms = 3;
    let node = node_with(config);
    let (alice, mut events) = client(&node.url(), "alice").await;
    for room in ["chat:r1", "chat:r2", "chat:r3"] {
        alice.subscribe(room, NO_PRESENCE).await.unwrap();
    }
    let err = alice.subscribe("chat:r4", NO_PRESENCE).await.unwrap_err();
    assert!(server_error(ErrorCode::TooManyRooms)(&err), "{err:?}");
    // Subscribing again to a room already held is not a new room.
    alice.subscribe("chat:r2", NO_PRESENCE).await.unwrap();
    // Leaving one makes room for another.
    alice.unsubscribe("chat:r1").await.unwrap();
    alice.subscribe("chat:r4", NO_PRESENCE).await.unwrap();
    let p = alice
        .publish("chat:r4", &b"still connected"[..], PublishOptions::default())
        .await
        .unwrap();
    assert_eq!(p.offset, 1);
    let d = next_message(&mut events).await;
    assert_eq!(d.room, "chat:r4");
    stop(node).await;
}

#[tokio::test]
async fn a_full_room_refuses_the_next_subscriber_until_one_leaves() {
    let mut config = four_shards();
    for (name, ns) in &mut config.namespaces {
        if name == "chat" {
            ns.max_subscribers = 3;
        }
    }
    let node = node_with(config);
    // SO_REUSEPORT spreads the four connections over the shards; the room's
    // owner counts subscribers from all of them.
    let mut users = Vec::new();
    for i in 0..4 {
        users.push(client(&node.url(), &format!("u{i}")).await);
    }
    for (c, _) in &users[..3] {
        c.subscribe("chat:full", NO_PRESENCE).await.unwrap();
    }
    let late = &users[3].0;
    let err = late.subscribe("chat:full", NO_PRESENCE).await.unwrap_err();
    assert!(server_error(ErrorCode::RoomFull)(&err), "{err:?}");
    // The refusal is not fatal: the late user still joins other rooms.
    late.subscribe("chat:other", NO_PRESENCE).await.unwrap();
    // Subscribing again to a room already held takes no new place.
    users[0].0.subscribe("chat:full", NO_PRESENCE).await.unwrap();

    // One leaves; its place goes to the late user. The leave reaches the
    // owner over another shard's channel than the join, so allow it time.
    users[1].0.unsubscribe("chat:full").await.unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        match users[3].0.subscribe("chat:full", NO_PRESENCE).await {
            Ok(_) => break,
            Err(e) if server_error(ErrorCode::RoomFull)(&e) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("the freed place was not given: {e:?}"),
        }
    }
    let err = users[1].0.subscribe("chat:full", NO_PRESENCE).await.unwrap_err();
    assert!(server_error(ErrorCode::RoomFull)(&err), "full again: {err:?}");

    // A publish reaches the three members.
    let p = users[0]
        .0
        .publish("chat:full", &b"members only"[..], PublishOptions::default())
        .await
        .unwrap();
    for i in [0, 2, 3] {
        let d = next_message(&mut users[i].1).await;
        assert_eq!((d.room.as_str(), d.offset), ("chat:full", p.offset), "u{i}");
    }
    stop(node).await;
}

#[tokio::test]
async fn publishes_beyond_the_burst_are_rate_limited_not_fatal() {
    let mut config = four_shards();
    config.session.limits.publish_rate_per_sec = 5;
    config.session.limits.publish_burst = 5;
    let node = node_with(config);
    let (alice, mut events) = client(&node.url(), "alice").await;
    alice.subscribe("chat:rate", NO_PRESENCE).await.unwrap();

    let start = Instant::now();
    let results = futures_util::future::join_all(
        (0..20u8).map(|i| alice.publish("chat:rate", vec![i], PublishOptions::default())),
    )
    .await;
    let elapsed = start.elapsed().as_secs_f64();
    let mut offsets = Vec::new();
    let mut limited = 0;
    for r in results {
        match r {
            Ok(p) => offsets.push(p.offset),
            Err(e) if server_error(ErrorCode::RateLimited)(&e) => limited += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    let allowance = 5 + (5.0 * elapsed).ceil() as usize;
    assert!(
        (5..=allowance).contains(&offsets.len()),
        "{} of 20 accepted in {elapsed:.3}s (burst 5, 5/s)",
        offsets.len()
    );
    assert_eq!(offsets.len() + limited, 20);
    offsets.sort_unstable();
    assert_eq!(
        offsets,
        (1..=offsets.len() as u64).collect::<Vec<_>>(),
        "refused ones take no offset"
    );

    // Not fatal: the connection stays and publishing works again once the
    // bucket refills (5/s: within a fraction of a second).
    let deadline = Instant::now() + WAIT;
    let p = loop {
        match alice
            .publish("chat:rate", &b"later"[..], PublishOptions::default())
            .await
        {
            Ok(p) => break p,
            Err(e) if server_error(ErrorCode::RateLimited)(&e) && Instant::now() < deadline => {
                limited += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    };
    assert_eq!(p.offset, offsets.len() as u64 + 1);
    let mut got = Vec::new();
    while got.len() < offsets.len() + 1 {
        got.push(next_message(&mut events).await.offset);
    }
    assert_eq!(got, (1..=p.offset).collect::<Vec<_>>());
    // Every refusal is counted where operators look.
    assert_eq!(
        support::metric(node.addr, "herald_drops_total", "reason=\"rate_limited\"").await,
        limited as u64
    );
    stop(node).await;
}

#[tokio::test]
async fn a_payload_over_the_limit_is_refused() {
    let mut config = four_shards();
    config.session.limits.max_payload_bytes = 1024;
    let node = node_with(config);
    let (alice, _e) = client(&node.url(), "alice").await;
    let err = alice
        .publish("chat:pay", vec![1u8; 1025], PublishOptions::default())
        .await
        .unwrap_err();
    assert!(server_error(ErrorCode::PayloadTooLarge)(&err), "{err:?}");
    let p = alice
        .publish("chat:pay", vec![1u8; 1024], PublishOptions::default())
        .await
        .unwrap();
    assert_eq!(
        p.offset, 1,
        "exactly the limit is fine, and the refused one took no offset"
    );
    stop(node).await;
}

/// A connected, subscribed raw WebSocket whose kernel receive buffer is
/// small, so that once the test stops reading it the server's writes block
/// quickly.
async fn slow_socket(node: &NodeHandle, user: &str, room: &str) -> RawWs {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let stream = sock.connect(node.addr).await.unwrap();
    let (mut ws, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::client_async(node.url(), MaybeTlsStream::Plain(stream)),
    )
    .await
    .unwrap()
    .unwrap();
    ws_send_frame(&mut ws, ws_connect_frame(user)).await;
    match ws_next_non_ping(&mut ws).await {
        Some((_, BodyT::Connected(_))) => {}
        other => panic!("expected Connected, got {other:?}"),
    }
    ws_subscribe(&mut ws, 2, room, false).await;
    ws
}

fn slow_consumer_config() -> NodeConfig {
    let mut config = four_shards();
    config.session.limits.max_outbound_bytes = 64 * 1024;
    config.session.limits.publish_rate_per_sec = 100_000;
    config.session.limits.publish_burst = 100_000;
    config
}

/// Messages of 16 KiB: 8 MiB in all, far beyond 64 KiB of queue plus what
/// the kernel buffers for a reader that stopped (about 3 MB with Linux
/// defaults: the sender side autotunes up to tcp_wmem max, 4 MiB).
const SLOW_MESSAGES: u64 = 512;
const SLOW_PAYLOAD: usize = 16 * 1024;

fn slow_payload(i: u64) -> Vec<u8> {
    let mut p = vec![(i % 251) as u8; SLOW_PAYLOAD];
    p[..8].copy_from_slice(&i.to_be_bytes());
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_closed_while_a_normal_subscriber_gets_everything() {
    const ROOM: &str = "chat:slow";
    let node = node_with(slow_consumer_config());
    let (normal, mut normal_events) = client(&node.url(), "normal").await;
    normal.subscribe(ROOM, NO_PRESENCE).await.unwrap();
    let mut slow = slow_socket(&node, "slow", ROOM).await;

    // From here on the slow socket is not read. The normal subscriber is
    // read concurrently, like any live client, and the publisher stays at
    // most two messages ahead of it: however loaded the machine, its backlog
    // (32 KiB) stays under the limit, while the slow one's grows.
    let (progress_tx, mut progress) = tokio::sync::watch::channel(0u64);
    let reader = tokio::spawn(async move {
        let mut offsets = Vec::new();
        while offsets.len() < SLOW_MESSAGES as usize {
            let d = next_message(&mut normal_events).await;
            assert_eq!(d.payload, slow_payload(d.offset), "payload of offset {}", d.offset);
            offsets.push(d.offset);
            let _ = progress_tx.send(d.offset);
        }
        (offsets, normal_events)
    });
    let (publisher, _p) = client(&node.url(), "publisher").await;
    for i in 1..=SLOW_MESSAGES {
        tokio::time::timeout(WAIT, progress.wait_for(|&seen| seen + 2 >= i))
            .await
            .expect("the normal subscriber keeps up")
            .expect("reader running");
        let p = publisher
            .publish(ROOM, slow_payload(i), PublishOptions::default())
            .await
            .unwrap();
        assert_eq!(p.offset, i);
    }
    let (offsets, mut normal_events) = tokio::time::timeout(WAIT, reader).await.unwrap().unwrap();
    assert_eq!(
        offsets,
        (1..=SLOW_MESSAGES).collect::<Vec<_>>(),
        "the normal subscriber got every message, in order"
    );

    // The slow one now reads what is left: a prefix of the messages, in
    // order, then SlowConsumer and the close.
    let mut got = Vec::new();
    let mut error = None;
    let close = tokio::time::timeout(WAIT, async {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        while let Some(msg) = slow.next().await {
            match msg {
                Ok(Message::Binary(b)) => {
                    let f = herald_protocol::decode(&b, &herald_protocol::DecodeLimits::SERVER_TO_CLIENT).unwrap();
                    match f.unpack().body {
                        BodyT::Message(m) => got.push(m.offset),
                        BodyT::Error(e) => error = Some(e.code),
                        // Pings, and the unread count after Connected.
                        BodyT::Ping(_) | BodyT::NotificationsPage(_) => {}
                        other => panic!("unexpected {other:?}"),
                    }
                }
                Ok(Message::Close(c)) => return c.map(|c| u16::from(c.code)),
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        }
        None
    })
    .await
    .expect("the slow consumer's socket ends within the wait bound");
    assert_eq!(error, Some(ErrorCode::SlowConsumer));
    assert_eq!(close, Some(close_code(ErrorCode::SlowConsumer)));
    assert!(
        !got.is_empty() && (got.len() as u64) < SLOW_MESSAGES,
        "a prefix of the messages, got {}",
        got.len()
    );
    assert_eq!(got, (1..=got.len() as u64).collect::<Vec<_>>(), "in order, no gap");
    let drops = wait_metric(node.addr, "herald_drops_total", "reason=\"slow_consumer\"", 1).await;
    assert!(drops >= 1, "slow_consumer drops: {drops}");

    // The normal subscriber is still live.
    let p = publisher
        .publish(ROOM, slow_payload(SLOW_MESSAGES + 1), PublishOptions::default())
        .await
        .unwrap();
    assert_eq!(next_message(&mut normal_events).await.offset, p.offset);
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_that_never_reads_is_disconnected() {
    const ROOM: &str = "chat:stuck";
    let node = node_with(slow_consumer_config());
    let slow = slow_socket(&node, "stuck", ROOM).await;
    let sessions_before = metric(node.addr, "herald_sessions", "transport=\"websocket\"").await;
    let (publisher, _p) = client(&node.url(), "publisher").await;
    for i in 1..=SLOW_MESSAGES {
        publisher
            .publish(ROOM, slow_payload(i), PublishOptions::default())
            .await
            .unwrap();
    }
    // Without the slow client ever reading again, the node lets it go.
    let drops = wait_metric(node.addr, "herald_drops_total", "reason=\"slow_consumer\"", 1).await;
    assert!(
        drops >= 1,
        "slow_consumer drops while the client does not read: {drops}"
    );
    let deadline = Instant::now() + WAIT;
    loop {
        // The publisher's session remains; the slow one is gone.
        let sessions = metric(node.addr, "herald_sessions", "transport=\"websocket\"").await;
        if sessions < sessions_before + 1 {
            break;
        }
        assert!(Instant::now() < deadline, "{sessions} WebSocket sessions still open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(slow);
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volatile_messages_are_dropped_before_a_slow_consumer_is_closed() {
    const ROOM: &str = "game:v";
    let node = node_with(slow_consumer_config());
    let mut slow = slow_socket(&node, "slow", ROOM).await;
    let (publisher, _p) = client(&node.url(), "publisher").await;
    let volatile = PublishOptions {
        volatile: true,
        ..PublishOptions::default()
    };
    for i in 1..=SLOW_MESSAGES {
        let p = publisher
            .publish(ROOM, slow_payload(i), volatile.clone())
            .await
            .unwrap();
        assert_eq!(p.offset, 0);
    }
    let drops = wait_metric(node.addr, "herald_drops_total", "reason=\"volatile\"", 1).await;
    assert!(drops >= 1, "volatile drops: {drops}");
    // A stored message still fits: the queued volatile ones make way for it.
    let last = publisher
        .publish(ROOM, &b"stored"[..], PublishOptions::default())
        .await
        .unwrap();
    assert_eq!(last.offset, 1);

    let mut volatile_seen = 0u64;
    let stored = loop {
        match ws_next_non_ping(&mut slow).await {
            Some((_, BodyT::Message(m))) if m.volatile => volatile_seen += 1,
            Some((_, BodyT::Message(m))) => break m,
            other => panic!("expected messages, got {other:?}"),
        }
    };
    assert_eq!((stored.offset, stored.payload.as_deref()), (1, Some(&b"stored"[..])));
    assert!(volatile_seen < SLOW_MESSAGES, "some volatile messages were dropped");
    assert_eq!(
        metric(node.addr, "herald_drops_total", "reason=\"slow_consumer\"").await,
        0,
        "nobody was closed"
    );
    // Still connected.
    ws_send_frame(&mut slow, publish_frame(9, ROOM, b"alive")).await;
    loop {
        match ws_next_non_ping(&mut slow).await {
            Some((9, BodyT::Reply(r))) => {
                assert_eq!((r.code, r.offset), (ErrorCode::Ok, 2));
                break;
            }
            Some((_, BodyT::Message(_))) => {}
            other => panic!("expected the publish's Reply, got {other:?}"),
        }
    }
    stop(node).await;
}

#[tokio::test]
async fn a_websocket_without_connect_gets_handshake_timeout() {
    let mut config = four_shards();
    config.session.handshake_timeout = Duration::from_millis(300);
    let node = node_with(config);
    let start = Instant::now();
    let ws = ws_open(&node.url()).await;
    let end = ws_until_close(ws).await;
    let elapsed = start.elapsed();
    assert_eq!(
        end.error.as_ref().map(|e| e.0),
        Some(ErrorCode::HandshakeTimeout),
        "{end:?}"
    );
    assert_eq!(end.close.as_ref().map(|c| c.0), Some(4204));
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(3),
        "closed after {elapsed:?}"
    );
    let timeouts = wait_metric(node.addr, "herald_drops_total", "reason=\"timeout\"", 1).await;
    assert!(timeouts >= 1);
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_ignores_pings_gets_idle_timeout_and_one_that_answers_stays() {
    let mut config = four_shards();
    config.session.heartbeat_interval = Duration::from_millis(200);
    config.session.idle_timeout = Duration::from_millis(600);
    let node = node_with(config);
    let (alice, mut events) = client(&node.url(), "alice").await;
    alice.subscribe("chat:idle", NO_PRESENCE).await.unwrap();

    // Measured from before Connect: the server counts silence from then on.
    let start = Instant::now();
    let (mut mute, _) = ws_connected(&node.url(), "mute").await;
    // Read (never answer) until closed: pings first, then IdleTimeout.
    let mut pings = 0;
    let mut error = None;
    let close = tokio::time::timeout(WAIT, async {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        while let Some(msg) = mute.next().await {
            match msg {
                Ok(Message::Binary(b)) => {
                    let f = herald_protocol::decode(&b, &herald_protocol::DecodeLimits::SERVER_TO_CLIENT).unwrap();
                    match f.unpack().body {
                        BodyT::Ping(_) => pings += 1,
                        BodyT::Error(e) => error = Some(e.code),
                        // The unread count after Connected.
                        BodyT::NotificationsPage(_) => {}
                        other => panic!("unexpected {other:?}"),
                    }
                }
                Ok(Message::Close(c)) => return c.map(|c| u16::from(c.code)),
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        }
        None
    })
    .await
    .unwrap();
    let elapsed = start.elapsed();
    assert_eq!(error, Some(ErrorCode::IdleTimeout));
    assert_eq!(close, Some(4207));
    assert!(pings >= 1, "heartbeats were sent before giving up");
    assert!(elapsed >= Duration::from_millis(600), "closed after {elapsed:?}");

    // alice answers pings: nothing happens to her for a while longer.
    let quiet = tokio::time::timeout(Duration::from_millis(1500), async {
        loop {
            match events.recv().await {
                Some(ev @ (ClientEvent::Disconnected { .. } | ClientEvent::Connected { reconnected: true, .. })) => {
                    return ev;
                }
                Some(_) => {}
                None => panic!("events closed"),
            }
        }
    })
    .await;
    assert!(quiet.is_err(), "alice was disconnected: {quiet:?}");
    let p = alice
        .publish("chat:idle", &b"still here"[..], PublishOptions::default())
        .await
        .unwrap();
    assert_eq!(p.offset, 1);
    assert_eq!(next_message(&mut events).await.offset, 1);
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_beyond_max_connections_is_refused() {
    let mut config = four_shards();
    config.max_connections = 3;
    let node = node_with(config);
    let mut clients = Vec::new();
    for user in ["a", "b", "c"] {
        clients.push(client(&node.url(), user).await);
    }
    let fourth = ws_open(&node.url()).await;
    let end = ws_until_close(fourth).await;
    assert_eq!(
        end.error.as_ref().map(|e| e.0),
        Some(ErrorCode::ConnectionLimit),
        "{end:?}"
    );
    assert_eq!(end.close.as_ref().map(|c| c.0), Some(4210));
    let refused = wait_metric(node.addr, "herald_drops_total", "reason=\"connection_limit\"", 1).await;
    assert!(refused >= 1);
    // The refused sessions hold no slot, and those in use stay usable.
    let (a, mut a_events) = clients.remove(0);
    a.subscribe("chat:max", NO_PRESENCE).await.unwrap();
    a.publish("chat:max", &b"x"[..], PublishOptions::default())
        .await
        .unwrap();
    assert_eq!(next_message(&mut a_events).await.offset, 1);

    // Once one leaves, a new session gets in.
    a.close().await;
    let deadline = Instant::now() + WAIT;
    loop {
        let mut ws = ws_hello(&node.url(), "d").await;
        match ws_next_non_ping(&mut ws).await {
            Some((_, BodyT::Connected(_))) => break,
            Some((_, BodyT::Error(e))) if e.code == ErrorCode::ConnectionLimit && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => panic!("expected Connected once a slot is free, got {other:?}"),
        }
    }
    drop(clients);
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_upgrade_are_capped_and_websockets_do_not_count() {
    let config = NodeConfig {
        shards: 1,
        max_http_connections: 3,
        ..NodeConfig::default()
    };
    let node = node_with(config);
    // A WebSocket session holds no HTTP place.
    let (session, mut session_events) = client(&node.url(), "ws").await;
    session.subscribe("chat:cap", NO_PRESENCE).await.unwrap();

    // Three idle sockets fill the node's HTTP places; accepts are in connect
    // order, so the fourth is the one refused.
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(HttpConn::open(node.addr).await);
    }
    let mut fourth = HttpConn::open(node.addr).await;
    let refused = fourth.read_response().await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.json()["error"]["code"], "too_many_connections");
    assert!(fourth.closed_by_server().await);
    // The first three hold their places: each answers on its own socket.
    for conn in &mut idle {
        assert_eq!(conn.request("GET", "/health", None, None).await.status, 200);
    }

    // The session keeps working while the HTTP places are full.
    session
        .publish("chat:cap", &b"x"[..], PublishOptions::default())
        .await
        .unwrap();
    assert_eq!(next_message(&mut session_events).await.offset, 1);

    // Once an idle socket goes, a new request is served.
    drop(idle.pop());
    assert_eq!(served_once_free(node.addr, "/health").await.status, 200);
    drop(idle);
    let metrics = served_once_free(node.addr, "/metrics").await.text();
    assert!(metric_in(&metrics, "herald_drops_total", "reason=\"http_limit\"") >= 1);
    stop(node).await;
}

/// GET `path` on fresh connections until one is not refused for want of an
/// HTTP place (the node sees closed sockets go a moment after they close).
async fn served_once_free(addr: SocketAddr, path: &str) -> HttpResponse {
    let deadline = Instant::now() + WAIT;
    loop {
        let resp = HttpConn::open(addr).await.request("GET", path, None, None).await;
        if resp.status != 503 {
            return resp;
        }
        assert_eq!(resp.json()["error"]["code"], "too_many_connections");
        assert!(Instant::now() < deadline, "no HTTP place came free");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflated_namespace_gives_a_slow_reader_the_newest_message_instead_of_closing_it() {
    const ROOM: &str = "ticker:eth";
    let mut config = slow_consumer_config();
    let mut ticker = herald_gateway::NamespaceConfig::general();
    ticker.conflate = true;
    config.namespaces.push(("ticker".into(), ticker));
    let node = node_with(config);
    let mut slow = slow_socket(&node, "slow", ROOM).await;
    let (normal, mut normal_events) = client(&node.url(), "normal").await;
    normal.subscribe(ROOM, NO_PRESENCE).await.unwrap();
    let (publisher, _p) = client(&node.url(), "publisher").await;
    // The same flood that closes a slow reader of an ordinary room.
    let mut last = 0;
    for i in 1..=SLOW_MESSAGES {
        last = publisher
            .publish(ROOM, slow_payload(i), PublishOptions::default())
            .await
            .unwrap()
            .offset;
    }
    let conflated = metric(node.addr, "herald_drops_total", "reason=\"conflated\"").await;
    assert!(conflated > 0, "messages were replaced while the reader was behind");
    assert_eq!(
        metric(node.addr, "herald_drops_total", "reason=\"slow_consumer\"").await,
        0
    );
    // The slow reader catches up to the newest message, in order, with the
    // skipped offsets visible as jumps.
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, async {
        use futures_util::StreamExt;
        while got.last() != Some(&last) {
            let msg = slow.next().await.expect("still open").expect("frame");
            let tokio_tungstenite::tungstenite::Message::Binary(b) = msg else {
                continue;
            };
            let f = herald_protocol::decode(&b, &herald_protocol::DecodeLimits::SERVER_TO_CLIENT).unwrap();
            match f.unpack().body {
                BodyT::Message(m) => {
                    assert_eq!(
                        m.payload.as_deref(),
                        Some(&slow_payload(m.offset)[..]),
                        "offset {}",
                        m.offset
                    );
                    got.push(m.offset);
                }
                // Pings, and the unread count after Connected.
                BodyT::Ping(_) | BodyT::NotificationsPage(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await
    .expect("the newest message arrives");
    assert!(got.windows(2).all(|w| w[0] < w[1]), "increasing offsets");
    assert!(
        (got.len() as u64) < SLOW_MESSAGES,
        "offsets were skipped: got {}",
        got.len()
    );
    // The other reader is not affected and reaches the newest too.
    let mut seen = 0;
    while seen < last {
        seen = next_message(&mut normal_events).await.offset;
    }
    stop(node).await;
}
