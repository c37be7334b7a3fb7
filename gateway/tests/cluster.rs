//! Nodes sharing rooms through a real `redis-server`: cross-node fan-out and
//! order, resume and idempotent resend on another node, presence across
//! nodes and after a node is killed, Redis restarts under load, routing
//! only to nodes with members, and durable storage written once.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod support;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use herald_gateway::{ClusterConfig, NodeConfig, NodeHandle, StorageBackend};
use herald_protocol::tokio_client::Events;
use herald_protocol::wire::BodyT;
use herald_protocol::{ClientEvent, ErrorCode, PublishOptions, SubscribeOptions};
use support::redis_server::RedisServer;
use support::*;

/// A node of the cluster over `redis` (memory storage unless given).
async fn cluster_node(redis: &RedisServer, id: &str, storage: StorageBackend) -> NodeHandle {
    let mut cluster = ClusterConfig::new(vec![redis.url()]);
    cluster.presence_ttl = Duration::from_secs(2);
    let mut config = NodeConfig {
        node_id: id.into(),
        cluster: Some(cluster),
        ..api_config()
    };
    config.storage.backend = storage;
    let node = node_with(config);
    wait_ready(node.addr).await;
    node
}

/// Waits until `/ready` says the node has joined the cluster.
async fn wait_ready(addr: std::net::SocketAddr) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while ready_status(addr).await != 200 {
        assert!(tokio::time::Instant::now() < deadline, "node joins the cluster in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn ready_status(addr: std::net::SocketAddr) -> u16 {
    http(addr, "GET", "/ready", None, None).await.0
}

/// Collects `n` messages of `room` (offset, payload) from `events`.
async fn messages(events: &mut Events, room: &str, n: usize) -> Vec<(u64, Vec<u8>)> {
    let mut got = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + WAIT;
    while got.len() < n {
        let ev = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap_or_else(|_| panic!("{room}: {} of {n} messages; last {:?}", got.len(), got.last()))
            .expect("events open");
        if let ClientEvent::Message(d) = ev
            && d.room == room
        {
            got.push((d.offset, d.payload.to_vec()));
        }
    }
    got
}

/// Presence events that arrived within a short while.
async fn presence_events(events: &mut Events) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(20), events.recv()).await {
        match ev {
            ClientEvent::Frame {
                body: BodyT::PresenceJoin(j),
                ..
            } => out.push((true, j.user)),
            ClientEvent::Frame {
                body: BodyT::PresenceLeave(l),
                ..
            } => out.push((false, l.user)),
            _ => {}
        }
    }
    out
}

async fn presence_count(addr: std::net::SocketAddr, room: &str) -> u64 {
    let (status, json) = http(addr, "GET", &format!("/api/presence/{room}"), Some(API_KEY), None).await;
    if status == 404 {
        return 0;
    }
    assert_eq!(status, 200, "{json}");
    json["count"].as_u64().unwrap()
}

async fn metric_value(addr: std::net::SocketAddr, name: &str) -> u64 {
    let resp = HttpConn::open(addr).await.request("GET", "/metrics", None, None).await;
    let text = String::from_utf8(resp.body).unwrap();
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_node_fanout_keeps_each_rooms_order_with_publishers_on_every_node() {
    let redis = RedisServer::start();
    let mut nodes = Vec::new();
    for i in 1..=3 {
        nodes.push(cluster_node(&redis, &format!("n{i}"), StorageBackend::Memory).await);
    }
    let rooms = ["chat:a", "chat:b"];
    let mut subscribers = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let (c, events) = client(&node.url(), &format!("reader{i}")).await;
        for room in rooms {
            c.subscribe(room, SubscribeOptions::default()).await.unwrap();
        }
        subscribers.push((c, events));
    }
    // Four publishers on every node, 25 messages to each room each.
    const PER: usize = 25;
    let mut tasks = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for p in 0..4 {
            let url = node.url();
            tasks.push(tokio::spawn(async move {
                let (c, _e) = client(&url, &format!("pub{i}{p}")).await;
                let mut acks = Vec::new();
                for k in 0..PER {
                    for room in ["chat:a", "chat:b"] {
                        let payload = format!("{i}.{p}.{k}").into_bytes();
                        let at = c
                            .publish(room, payload.clone(), PublishOptions::default())
                            .await
                            .unwrap();
                        acks.push((room, at, payload));
                    }
                }
                acks
            }));
        }
    }
    let mut acked: BTreeMap<&str, BTreeMap<u64, Vec<u8>>> = BTreeMap::new();
    for t in tasks {
        for (room, at, payload) in t.await.unwrap() {
            assert!(
                acked.entry(room).or_default().insert(at.offset, payload).is_none(),
                "an offset given twice"
            );
        }
    }
    let total = 3 * 4 * PER;
    for room in rooms {
        let offsets: Vec<u64> = acked[room].keys().copied().collect();
        assert_eq!(
            offsets,
            (1..=total as u64).collect::<Vec<_>>(),
            "{room}: offsets 1..=n, from every node"
        );
    }
    for (_, events) in &mut subscribers {
        let mut got: BTreeMap<String, Vec<(u64, Vec<u8>)>> = BTreeMap::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        while got.values().map(Vec::len).sum::<usize>() < 2 * total {
            let ev = tokio::time::timeout_at(deadline, events.recv())
                .await
                .expect("every message in time");
            if let Some(ClientEvent::Message(d)) = ev {
                got.entry(d.room.clone())
                    .or_default()
                    .push((d.offset, d.payload.to_vec()));
            }
        }
        for room in rooms {
            let expected: Vec<(u64, Vec<u8>)> = acked[room].iter().map(|(o, p)| (*o, p.clone())).collect();
            assert_eq!(
                got[room], expected,
                "{room}: every node delivers the same messages in the same order"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_on_another_node_without_gap_or_duplicate() {
    let redis = RedisServer::start();
    let n1 = cluster_node(&redis, "n1", StorageBackend::Memory).await;
    let n2 = cluster_node(&redis, "n2", StorageBackend::Memory).await;
    let proxy = Proxy::start(n1.addr).await;
    let (alice, mut events) = client(&proxy.url(), "alice").await;
    let (bob, _b) = client(&n2.url(), "bob").await;
    let first = alice.subscribe("chat:r", SubscribeOptions::default()).await.unwrap();
    for i in 1..=3u8 {
        bob.publish("chat:r", vec![i], PublishOptions::default()).await.unwrap();
    }
    let mut seen: Vec<u64> = messages(&mut events, "chat:r", 3).await.iter().map(|m| m.0).collect();
    // Alice's link breaks; she comes back through the other node.
    proxy.retarget(n2.addr).await;
    proxy.cut();
    next_matching(&mut events, |ev| {
        matches!(ev, ClientEvent::Disconnected { .. }).then_some(())
    })
    .await;
    for i in 4..=6u8 {
        bob.publish("chat:r", vec![i], PublishOptions::default()).await.unwrap();
    }
    let (recovered, epoch, history) = next_matching(&mut events, |ev| match ev {
        ClientEvent::Subscribed {
            recovered,
            resumed: true,
            epoch,
            history,
            ..
        } => Some((recovered, epoch, history)),
        _ => None,
    })
    .await;
    assert!(recovered, "the stream holds what she missed");
    assert_eq!(epoch, first.epoch, "the same epoch on every node");
    seen.extend(history.iter().map(|d| d.offset));
    bob.publish("chat:r", vec![7], PublishOptions::default()).await.unwrap();
    seen.extend(messages(&mut events, "chat:r", 1).await.iter().map(|m| m.0));
    // Whatever the history carried and the stream delivered after it.
    assert_eq!(seen, (1..=7).collect::<Vec<_>>(), "no gap, no duplicate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_resend_to_another_node_is_acknowledged_once() {
    let redis = RedisServer::start();
    let n1 = cluster_node(&redis, "n1", StorageBackend::Memory).await;
    let n2 = cluster_node(&redis, "n2", StorageBackend::Memory).await;
    let (a, _ea) = client(&n1.url(), "ann").await;
    let (b, _eb) = client(&n2.url(), "ann").await;
    let key = PublishOptions {
        idempotency_key: Some("order-42".into()),
        ..PublishOptions::default()
    };
    let first = a.publish("chat:idem", &b"pay"[..], key.clone()).await.unwrap();
    let again = b.publish("chat:idem", &b"pay"[..], key.clone()).await.unwrap();
    assert_eq!(first, again, "the resend through another node gets the first position");
    // The server API shares the same keys per publisher ("" for the API).
    let body = r#"{"room":"chat:idem","data":"x","idempotency_key":"k1"}"#;
    let (s1, j1) = http(n1.addr, "POST", "/api/publish", Some(API_KEY), Some(body)).await;
    let (s2, j2) = http(n2.addr, "POST", "/api/publish", Some(API_KEY), Some(body)).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(j1, j2);
    let (_, history) = http(n2.addr, "GET", "/api/history/chat:idem?limit=10", Some(API_KEY), None).await;
    let offsets: Vec<u64> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, vec![1, 2], "stored once each");
    assert_eq!(metric_value(n2.addr, "herald_redis_duplicates_total").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_spans_nodes_and_leaves_are_seen_everywhere() {
    let redis = RedisServer::start();
    let n1 = cluster_node(&redis, "n1", StorageBackend::Memory).await;
    let n2 = cluster_node(&redis, "n2", StorageBackend::Memory).await;
    let n3 = cluster_node(&redis, "n3", StorageBackend::Memory).await;
    let with_presence = SubscribeOptions {
        history: 0,
        presence: true,
    };
    let (ann, mut ann_events) = client(&n1.url(), "ann").await;
    ann.subscribe("chat:p", with_presence).await.unwrap();
    let (bob, _bob_events) = client(&n2.url(), "bob").await;
    bob.subscribe("chat:p", with_presence).await.unwrap();
    // A second connection of bob on another node: still one user.
    let (bob2, _bob2_events) = client(&n3.url(), "bob").await;
    bob2.subscribe("chat:p", with_presence).await.unwrap();
    // Presence changes are written after the join is answered: wait until
    // Redis has both of bob's nodes.
    let mut conn = redis.conn().await;
    let settle = tokio::time::Instant::now() + WAIT;
    loop {
        let on: Vec<bool> = redis::pipe()
            .cmd("HEXISTS")
            .arg("herald:{chat:p}:pn")
            .arg("n2\0bob")
            .cmd("HEXISTS")
            .arg("herald:{chat:p}:pn")
            .arg("n3\0bob")
            .query_async(&mut conn)
            .await
            .unwrap();
        if on == [true, true] {
            break;
        }
        assert!(tokio::time::Instant::now() < settle, "bob is present through n2 and n3");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(presence_count(n3.addr, "chat:p").await, 2);
    assert_eq!(presence_count(n1.addr, "chat:p").await, 2);
    bob.unsubscribe("chat:p").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        presence_count(n1.addr, "chat:p").await,
        2,
        "bob is still here through n3"
    );
    drop(bob2);
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    while !seen.contains(&(false, "bob".to_owned())) {
        assert!(tokio::time::Instant::now() < deadline, "ann sees bob leave: {seen:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        seen.extend(presence_events(&mut ann_events).await);
    }
    assert!(seen.contains(&(true, "bob".to_owned())), "ann saw bob arrive: {seen:?}");
    assert_eq!(
        seen.iter().filter(|(j, u)| *j && u == "bob").count(),
        1,
        "one arrival per user: {seen:?}"
    );
    assert_eq!(presence_count(n2.addr, "chat:p").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_users_leave_within_the_presence_ttl() {
    let redis = RedisServer::start();
    let n1 = cluster_node(&redis, "n1", StorageBackend::Memory).await;
    let url = redis.url();
    let doomed = NodeProcess::start(
        1,
        &[
            "--redis",
            &url,
            "--node-id",
            "doomed",
            "--storage",
            "memory",
            "--api-key",
            API_KEY,
        ],
    )
    .await;
    // The child reads [cluster] from the environment only when asked:
    // its TTL is the default; n1 reaps it by the child's own heartbeat key.
    let (ann, mut ann_events) = client(&n1.url(), "ann").await;
    let with_presence = SubscribeOptions {
        history: 0,
        presence: true,
    };
    ann.subscribe("chat:k", with_presence).await.unwrap();
    let (zed, _z) = client(&doomed.url(), "zed").await;
    zed.subscribe("chat:k", with_presence).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while presence_count(n1.addr, "chat:k").await != 2 {
        assert!(tokio::time::Instant::now() < deadline, "zed arrives");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed = tokio::time::Instant::now();
    doomed.kill();
    // Default TTL 15 s, checked every 15/3 s by n1 (TTL 2 s, beat every
    // 0.67 s): zed leaves within ~16 s.
    let deadline = killed + Duration::from_secs(25);
    let mut seen = Vec::new();
    while !seen.contains(&(false, "zed".to_owned())) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "zed leaves after the kill: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        seen.extend(presence_events(&mut ann_events).await);
    }
    let took = killed.elapsed();
    assert!(took >= Duration::from_secs(10), "not before the TTL ran out ({took:?})");
    assert_eq!(presence_count(n1.addr, "chat:k").await, 1);
    assert!(metric_value(n1.addr, "herald_redis_reaped_nodes_total").await >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reads_nothing_of_rooms_it_has_no_members_for() {
    let redis = RedisServer::start();
    let n1 = cluster_node(&redis, "n1", StorageBackend::Memory).await;
    let n2 = cluster_node(&redis, "n2", StorageBackend::Memory).await;
    let n3 = cluster_node(&redis, "n3", StorageBackend::Memory).await;
    let (reader, mut events) = client(&n2.url(), "reader").await;
    reader
        .subscribe("chat:only2", SubscribeOptions::default())
        .await
        .unwrap();
    for i in 0..100u32 {
        let body = format!(r#"{{"room":"chat:only2","data":"{i}"}}"#);
        let (s, _) = http(n1.addr, "POST", "/api/publish", Some(API_KEY), Some(&body)).await;
        assert_eq!(s, 200);
    }
    messages(&mut events, "chat:only2", 100).await;
    assert!(metric_value(n2.addr, "herald_redis_entries_read_total").await >= 100);
    assert_eq!(
        metric_value(n1.addr, "herald_redis_entries_read_total").await,
        0,
        "the publishing node"
    );
    assert_eq!(
        metric_value(n3.addr, "herald_redis_entries_read_total").await,
        0,
        "an idle node"
    );
    assert_eq!(metric_value(n3.addr, "herald_redis_followed_rooms").await, 0);
    // Leaving stops the reading (n2 still follows user:reader, the room of
    // the reader's own connection).
    reader.unsubscribe("chat:only2").await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while metric_value(n2.addr, "herald_redis_followed_rooms").await != 1 {
        assert!(tokio::time::Instant::now() < deadline, "n2 stops following");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_under_load_loses_and_repeats_nothing() {
    let mut redis = RedisServer::start();
    let n1 = cluster_node(&redis, "n1", StorageBackend::Memory).await;
    let n2 = cluster_node(&redis, "n2", StorageBackend::Memory).await;
    let (reader, mut events) = client(&n2.url(), "reader").await;
    reader
        .subscribe("chat:storm", SubscribeOptions::default())
        .await
        .unwrap();
    // Three publishers (each under the per-connection rate limit) that
    // retry what was refused, with its key, until it is acknowledged.
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut writers = Vec::new();
    for w in 0..3u32 {
        let (publisher, events) = client(&n1.url(), &format!("writer{w}")).await;
        let acked_tx = acked_tx.clone();
        writers.push(tokio::spawn(async move {
            let _events = events;
            let mut refused = 0u32;
            for i in 0..100u32 {
                let k = w * 100 + i;
                let options = PublishOptions {
                    idempotency_key: Some(format!("k{k}")),
                    ..PublishOptions::default()
                };
                let deadline = tokio::time::Instant::now() + WAIT * 2;
                loop {
                    match publisher
                        .publish("chat:storm", k.to_be_bytes().to_vec(), options.clone())
                        .await
                    {
                        Ok(at) => {
                            acked_tx.send((k, at)).unwrap();
                            break;
                        }
                        Err(e) => {
                            assert_refused_any(&e, &[ErrorCode::Unavailable, ErrorCode::Overloaded]);
                            refused += 1;
                            assert!(tokio::time::Instant::now() < deadline, "Redis back in time");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            refused
        }));
    }
    drop(acked_tx);
    tokio::time::sleep(Duration::from_millis(600)).await;
    redis.kill9();
    // While Redis is gone: not ready, and publishes are refused, not acked.
    let deadline = tokio::time::Instant::now() + WAIT;
    while ready_status(n1.addr).await != 503 {
        assert!(tokio::time::Instant::now() < deadline, "/ready reports the lost Redis");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.restart();
    let mut refused = 0;
    for w in writers {
        refused += w.await.unwrap();
    }
    assert!(refused > 0, "some publishes met the outage");
    let mut acked = BTreeMap::new();
    while let Ok((k, at)) = acked_rx.try_recv() {
        acked.insert(at.offset, k);
    }
    assert_eq!(acked.len(), 300, "every message was acknowledged once in the end");
    let offsets: Vec<u64> = acked.keys().copied().collect();
    assert_eq!(offsets, (1..=300).collect::<Vec<_>>(), "the AOF kept the offsets going");
    let got = messages(&mut events, "chat:storm", 300).await;
    let keys: Vec<u32> = got
        .iter()
        .map(|(_, p)| u32::from_be_bytes(p[..4].try_into().unwrap()))
        .collect();
    let unique: HashSet<u32> = keys.iter().copied().collect();
    assert_eq!(unique.len(), 300, "nothing lost, nothing delivered twice");
    for (offset, payload) in &got {
        let k = u32::from_be_bytes(payload[..4].try_into().unwrap());
        assert_eq!(acked[offset], k, "delivered where acknowledged");
    }
    assert!(got.windows(2).all(|w| w[0].0 < w[1].0), "in order");
    assert!(metric_value(n2.addr, "herald_redis_reconnects_total").await >= 1);
    assert_eq!(ready_status(n1.addr).await, 200);
}

fn assert_refused_any(err: &herald_protocol::tokio_client::ClientError, codes: &[ErrorCode]) {
    let text = format!("{err:?}");
    assert!(
        codes.iter().any(|c| text.contains(&format!("{c:?}"))),
        "refused with one of {codes:?}, got {err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_storage_holds_every_message_once_across_nodes() {
    let redis = RedisServer::start();
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        nodes.push(
            cluster_node(
                &redis,
                &format!("s{i}"),
                StorageBackend::Embedded(d.path().join("store")),
            )
            .await,
        );
    }
    let mut positions = Vec::new();
    for k in 0..200u32 {
        let node = &nodes[k as usize % 2];
        let room = if k % 3 == 0 { "chat:d1" } else { "chat:d2" };
        let body = format!(r#"{{"room":"{room}","data":"{k}"}}"#);
        let (s, j) = http(node.addr, "POST", "/api/publish", Some(API_KEY), Some(&body)).await;
        assert_eq!(s, 200, "{j}");
        positions.push((room, j["offset"].as_u64().unwrap()));
    }
    // Persisting is behind the acks: wait for the consumer group.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut persisted = 0;
        for n in &nodes {
            persisted += metric_value(n.addr, "herald_redis_persisted_total").await;
        }
        if persisted >= 200 {
            assert_eq!(persisted, 200, "each message written once");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "persisted {persisted} of 200");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for n in nodes {
        n.shutdown();
    }
    let mut stored: BTreeMap<(String, u64), usize> = BTreeMap::new();
    for d in &dirs {
        let storage = herald_storage::embedded::open(&d.path().join("store"), Default::default()).unwrap();
        for room in ["chat:d1", "chat:d2"] {
            let Some(head) = storage.log.head(room).unwrap() else {
                continue;
            };
            let page = storage
                .log
                .read(
                    room,
                    head.epoch,
                    herald_protocol::owner::ReadRange {
                        after: 0,
                        before: 0,
                        limit: 1_000,
                        newest: false,
                    },
                )
                .unwrap();
            for m in page.messages {
                *stored.entry((room.to_owned(), m.offset)).or_default() += 1;
            }
        }
    }
    assert_eq!(stored.len(), 200, "every acknowledged message is stored");
    assert!(stored.values().all(|&n| n == 1), "and only once, on one node");
    for (room, offset) in positions {
        assert!(stored.contains_key(&(room.to_owned(), offset)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_namespaces_stay_on_their_node_and_work_without_redis() {
    let mut redis = RedisServer::start();
    let mut config = api_config();
    let mut local = herald_gateway::NamespaceConfig::general();
    local.cluster = false;
    config.namespaces.push(("local".into(), local));
    config.node_id = "n1".into();
    config.cluster = Some(ClusterConfig::new(vec![redis.url()]));
    let n1 = node_with(config);
    wait_ready(n1.addr).await;
    redis.kill9();
    let (c, mut events) = client(&n1.url(), "ann").await;
    c.subscribe("local:x", SubscribeOptions::default()).await.unwrap();
    let at = c
        .publish("local:x", &b"hi"[..], PublishOptions::default())
        .await
        .unwrap();
    assert_eq!(at.offset, 1);
    messages(&mut events, "local:x", 1).await;
    // A clustered room cannot be served: a typed refusal, never an ack.
    let err = c
        .publish("chat:x", &b"no"[..], PublishOptions::default())
        .await
        .unwrap_err();
    assert_refused_any(&err, &[ErrorCode::Unavailable]);
    let (s, _) = http(
        n1.addr,
        "POST",
        "/api/publish",
        Some(API_KEY),
        Some(r#"{"room":"chat:x","data":"x"}"#),
    )
    .await;
    assert_eq!(s, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_api_of_any_node_reaches_a_user_on_another_node() {
    let redis = RedisServer::start();
    let n1 = cluster_node(&redis, "n1", StorageBackend::Memory).await;
    let n2 = cluster_node(&redis, "n2", StorageBackend::Memory).await;
    // Sessions that join nothing: every connection of U gets user:U.
    let (mut ann, _) = ws_connected(&n2.url(), "ann").await;
    let (mut bob, _) = ws_connected(&n2.url(), "bob").await;
    // n2 follows user:ann and user:bob once their sessions are open there.
    let deadline = tokio::time::Instant::now() + WAIT;
    while metric_value(n2.addr, "herald_redis_followed_rooms").await < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "n2 follows ann's and bob's rooms"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A publish to user:ann through n1.
    let body = r#"{"room":"user:ann","data":"for ann"}"#;
    let (s, _) = http(n1.addr, "POST", "/api/publish", Some(API_KEY), Some(body)).await;
    assert_eq!(s, 200);
    match ws_next_body(&mut ann).await {
        Some((0, BodyT::Message(m))) => {
            assert_eq!(
                (m.room.as_str(), m.payload.as_deref()),
                ("user:ann", Some(&b"for ann"[..]))
            );
        }
        other => panic!("expected ann's message, got {other:?}"),
    }
    // A notification through n1 arrives live on n2.
    let body = r#"{"user":"ann","kind":"mention","title":"hi","body":"b"}"#;
    let (s, j) = http(n1.addr, "POST", "/api/notify", Some(API_KEY), Some(body)).await;
    assert_eq!(s, 200, "{j}");
    match ws_next_body(&mut ann).await {
        Some((_, BodyT::Notification(n))) => assert_eq!(n.kind.as_deref(), Some("mention")),
        other => panic!("expected the notification, got {other:?}"),
    }
    // A disconnection through n1 closes ann's session on n2, not bob's.
    let (s, _) = http(n1.addr, "POST", "/api/disconnect/ann", Some(API_KEY), None).await;
    assert_eq!(s, 200);
    let end = ws_until_close(ann).await;
    assert_eq!(end.error.map(|e| e.0), Some(ErrorCode::Kicked));
    let body = r#"{"room":"user:bob","data":"still here"}"#;
    let (s, _) = http(n1.addr, "POST", "/api/publish", Some(API_KEY), Some(body)).await;
    assert_eq!(s, 200);
    match ws_next_body(&mut bob).await {
        Some((0, BodyT::Message(m))) => assert_eq!(m.payload.as_deref(), Some(&b"still here"[..]), "bob is untouched"),
        other => panic!("expected bob's message, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_rooms_come_back_after_redis_loses_its_data() {
    let redis = RedisServer::start();
    let n1 = cluster_node(&redis, "n1", StorageBackend::Memory).await;
    let n2 = cluster_node(&redis, "n2", StorageBackend::Memory).await;
    let with_presence = SubscribeOptions {
        history: 0,
        presence: true,
    };
    let (ann, mut ann_events) = client(&n1.url(), "ann").await;
    let before = ann.subscribe("chat:lost", with_presence).await.unwrap();
    let (bob, _bob_events) = client(&n2.url(), "bob").await;
    bob.subscribe("chat:lost", with_presence).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while presence_count(n1.addr, "chat:lost").await != 2 {
        assert!(tokio::time::Instant::now() < deadline, "both present");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Redis loses everything (a restart without persistence).
    let mut conn = redis.conn().await;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    // Within a heartbeat (TTL 2 s: every 0.67 s) both nodes notice, and
    // announce their users again.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, j) = http(n2.addr, "GET", "/api/presence/chat:lost", Some(API_KEY), None).await;
        let users: u64 = redis::cmd("HLEN")
            .arg("herald:{chat:lost}:pu")
            .query_async(&mut conn)
            .await
            .unwrap();
        if users == 2 && j["count"] == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "presence is back: redis {users}, n2 {j}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The room continues in a new epoch, delivered across nodes.
    let at = bob
        .publish("chat:lost", &b"after"[..], PublishOptions::default())
        .await
        .unwrap();
    assert_ne!(at.epoch, before.epoch, "the lost room starts a new epoch");
    let d = next_matching(&mut ann_events, |ev| match ev {
        ClientEvent::Message(d) if &d.payload[..] == b"after" => Some(d),
        _ => None,
    })
    .await;
    assert_eq!((d.epoch, d.offset), (at.epoch, at.offset));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_beyond_the_stream_is_read_from_durable_storage() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let n1 = cluster_node(&redis, "d1", StorageBackend::Embedded(dir.path().join("store"))).await;
    // The stream keeps about the newest 1,000 (MAXLEN ~): the oldest
    // hundreds are only in storage once persisted.
    const N: u64 = 1_500;
    for k in 1..=N {
        let body = format!(r#"{{"room":"chat:deep","data":"{k}"}}"#);
        let (s, _) = http(n1.addr, "POST", "/api/publish", Some(API_KEY), Some(&body)).await;
        assert_eq!(s, 200);
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while metric_value(n1.addr, "herald_redis_persisted_total").await < N {
        assert!(tokio::time::Instant::now() < deadline, "persisted in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut conn = redis.conn().await;
    let first: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg("herald:{chat:deep}:s")
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let oldest_in_stream: u64 = first[0].0.split('-').next().unwrap().parse().unwrap();
    assert!(
        oldest_in_stream > 200,
        "the stream was trimmed (oldest {oldest_in_stream})"
    );
    let (s, page) = http(
        n1.addr,
        "GET",
        "/api/history/chat:deep?before=200&limit=50",
        Some(API_KEY),
        None,
    )
    .await;
    assert_eq!(s, 200, "{page}");
    let offsets: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, (150..200).collect::<Vec<_>>());
    let data: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"].as_str().unwrap())
        .collect();
    assert_eq!(data.first(), Some(&"150"));
    assert!(metric_value(n1.addr, "herald_redis_storage_reads_total").await >= 1);
    // A page that straddles the stream's start is whole and in order.
    let before = oldest_in_stream + 10;
    let (_, page) = http(
        n1.addr,
        "GET",
        &format!("/api/history/chat:deep?before={before}&limit=40"),
        Some(API_KEY),
        None,
    )
    .await;
    let offsets: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, (before - 40..before).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_spread_over_several_redis_instances() {
    let (a, b) = (RedisServer::start(), RedisServer::start());
    let urls = vec![a.url(), b.url()];
    let mut nodes = Vec::new();
    for id in ["m1", "m2"] {
        let mut cluster = ClusterConfig::new(urls.clone());
        cluster.presence_ttl = Duration::from_secs(2);
        let node = node_with(NodeConfig {
            node_id: id.into(),
            cluster: Some(cluster),
            ..api_config()
        });
        wait_ready(node.addr).await;
        nodes.push(node);
    }
    let rooms: Vec<String> = (0..8).map(|i| format!("chat:spread{i}")).collect();
    let (reader, mut events) = client(&nodes[1].url(), "reader").await;
    for room in &rooms {
        reader.subscribe(room, SubscribeOptions::default()).await.unwrap();
    }
    for room in &rooms {
        let body = format!(r#"{{"room":"{room}","data":"x"}}"#);
        let (s, j) = http(nodes[0].addr, "POST", "/api/publish", Some(API_KEY), Some(&body)).await;
        assert_eq!((s, j["offset"].as_u64()), (200, Some(1)), "{room}");
    }
    let mut got = HashSet::new();
    while got.len() < rooms.len() {
        let d = next_matching(&mut events, |ev| match ev {
            ClientEvent::Message(d) => Some(d),
            _ => None,
        })
        .await;
        got.insert(d.room);
    }
    // Each room's keys live on exactly one instance, and both are used.
    let mut per_instance = [0; 2];
    for room in &rooms {
        let mut on = 0;
        for (i, server) in [&a, &b].into_iter().enumerate() {
            let mut conn = server.conn().await;
            let exists: bool = redis::cmd("EXISTS")
                .arg(format!("herald:{{{room}}}:s"))
                .query_async(&mut conn)
                .await
                .unwrap();
            if exists {
                per_instance[i] += 1;
                on += 1;
            }
        }
        assert_eq!(on, 1, "{room} on one instance");
    }
    assert!(per_instance.iter().all(|&n| n > 0), "{per_instance:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_while_redis_is_down_waits_for_it_and_stops_when_asked() {
    let port = free_port();
    let mut config = api_config();
    config.node_id = "early".into();
    config.cluster = Some(ClusterConfig::new(vec![format!("redis://127.0.0.1:{port}/")]));
    let early = node_with(config.clone());
    assert_eq!(ready_status(early.addr).await, 503, "not ready without Redis");
    let (c, _e) = client(&early.url(), "ann").await;
    let err = c
        .publish("chat:x", &b"no"[..], PublishOptions::default())
        .await
        .unwrap_err();
    assert_refused_any(&err, &[ErrorCode::Unavailable]);
    // It stops promptly although Redis never answered.
    let started = std::time::Instant::now();
    stop(early).await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "stopped in {:?}",
        started.elapsed()
    );
    // And a node that finds Redis later joins then.
    let late = node_with(config);
    let redis = RedisServer::start_on(port);
    wait_ready(late.addr).await;
    let (c, _e) = client(&late.url(), "ann").await;
    let at = c
        .publish("chat:x", &b"yes"[..], PublishOptions::default())
        .await
        .unwrap();
    assert_eq!(at.offset, 1);
    drop(redis);
}
