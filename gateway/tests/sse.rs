//! `GET /sse` end to end, read as a browser's EventSource reads it: message
//! events whose `id:` resumes every room with no gap and no repeat, the
//! `recovered` event when history no longer reaches back, presence and
//! notifications on request, heartbeats, the three ways to pass a token,
//! refusals, a reader that falls behind, and the `transport` label.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod support;

use std::time::Duration;

use herald_gateway::auth::{MintRequest, mint_hs256};
use herald_gateway::{AuthConfig, NodeConfig};
use serde_json::{Value, json};
use support::sse::{self, Event};
use support::*;

async fn publish(addr: std::net::SocketAddr, room: &str, data: &str) -> Value {
    let body = json!({"room": room, "data": data}).to_string();
    let (status, resp) = http(addr, "POST", "/api/publish", Some(API_KEY), Some(&body)).await;
    assert_eq!(status, 200, "{resp}");
    resp
}

/// Opens a stream and waits until every room answered its join.
async fn joined(addr: std::net::SocketAddr, target: &str, headers: &[&str], rooms: usize) -> sse::Stream {
    let mut s = sse::open(addr, target, headers).await.stream();
    for _ in 0..rooms {
        s.next_named("subscribed").await;
    }
    s
}

fn positions(id: &str) -> Vec<(u64, u64)> {
    id.split(',')
        .map(|p| {
            let (e, o) = p.split_once('.').unwrap();
            (e.parse().unwrap(), o.parse().unwrap())
        })
        .collect()
}

#[tokio::test]
async fn every_message_is_an_event_whose_id_holds_every_rooms_position() {
    let node = node_with(api_config());
    let mut s = joined(node.addr, "/sse?room=chat:a&room=chat:b&token=ann", &[], 2).await;
    assert_eq!(s.header("content-type"), Some("text/event-stream"));
    assert_eq!(s.retry, Some(1000), "browsers are told how soon to reconnect");

    let a1 = publish(node.addr, "chat:a", "hello").await;
    let b1 = publish(node.addr, "chat:b", "world").await;
    let a2 = publish(node.addr, "chat:a", "again ✓").await;
    let got = s.messages(3).await;
    let data: Vec<Value> = got.iter().map(Event::json).collect();
    assert_eq!(data[0]["room"], "chat:a");
    assert_eq!(data[0]["data"], "hello");
    assert_eq!(data[0]["offset"], 1);
    assert_eq!(data[0]["epoch"], a1["epoch"]);
    assert_eq!(data[0]["publisher"], "");
    assert_eq!(data[1]["room"], "chat:b");
    assert_eq!(data[2]["data"], "again ✓");
    let (ea, eb) = (a1["epoch"].as_u64().unwrap(), b1["epoch"].as_u64().unwrap());
    // Joined rooms stand at their position at the join (offset 0 here), so
    // even a room with no message yet resumes exactly.
    assert_eq!(positions(got[0].id.as_deref().unwrap()), [(ea, 1), (eb, 0)]);
    assert_eq!(positions(got[1].id.as_deref().unwrap()), [(ea, 1), (eb, 1)]);
    assert_eq!(
        positions(got[2].id.as_deref().unwrap()),
        [(ea, a2["offset"].as_u64().unwrap()), (eb, 1)]
    );
    stop(node).await;
}

#[tokio::test]
async fn last_event_id_resumes_every_room_without_gap_or_repeat() {
    let node = node_with(api_config());
    let target = "/sse?room=chat:r1&room=chat:r2&token=ann";
    let mut s = joined(node.addr, target, &[], 2).await;
    publish(node.addr, "chat:r1", "a1").await;
    publish(node.addr, "chat:r2", "b1").await;
    s.messages(2).await;
    let last = s.last_id.clone().unwrap();
    drop(s);

    // Published while the page was away.
    for (room, data) in [("chat:r1", "a2"), ("chat:r2", "b2"), ("chat:r1", "a3")] {
        publish(node.addr, room, data).await;
    }
    let header = format!("Last-Event-ID: {last}");
    let mut s = sse::open(node.addr, target, &[&header]).await.stream();
    let mut subscribed = Vec::new();
    let mut messages = Vec::new();
    while messages.len() < 3 {
        let e = s.next().await.unwrap();
        match e.name.as_str() {
            "subscribed" => subscribed.push(e.json()),
            "message" => messages.push(e.json()["data"].as_str().unwrap().to_owned()),
            other => panic!("unexpected {other} event: {e:?}"),
        }
    }
    assert!(
        subscribed
            .iter()
            .all(|j| j["resumed"] == true && j["recovered"] == true),
        "{subscribed:?}"
    );
    let mut r1: Vec<&str> = messages
        .iter()
        .map(String::as_str)
        .filter(|m| m.starts_with('a'))
        .collect();
    let r2: Vec<&str> = messages
        .iter()
        .map(String::as_str)
        .filter(|m| m.starts_with('b'))
        .collect();
    r1.dedup();
    assert_eq!(r1, ["a2", "a3"], "the missed ones, once, in order");
    assert_eq!(r2, ["b2"]);

    // The same resume through the query (for pages that build the URL).
    let query = format!("{target}&lastEventId={}", s.last_id.clone().unwrap());
    publish(node.addr, "chat:r2", "b3").await;
    let mut s2 = sse::open(node.addr, &query, &[]).await.stream();
    let m = s2.messages(1).await;
    assert_eq!(m[0].json()["data"], "b3");
    stop(node).await;
}

#[tokio::test]
async fn a_resume_that_cannot_be_complete_says_so_and_sends_what_there_is() {
    let node = node_with(api_config());
    publish(node.addr, "chat:gone", "n1").await;
    // A position in an epoch the node never had (a restart of an in-memory
    // node looks the same).
    let mut s = sse::open(node.addr, "/sse?room=chat:gone&token=ann", &["Last-Event-ID: 12345.9"])
        .await
        .stream();
    let sub = s.next_named("subscribed").await.json();
    assert_eq!(
        (sub["resumed"].clone(), sub["recovered"].clone()),
        (json!(true), json!(false))
    );
    let rec = s.next_named("recovered").await.json();
    assert_eq!(rec["recovered"], false);
    assert_eq!(rec["room"], "chat:gone");
    // All of the room's current epoch is what the page missed.
    let m = s.messages(1).await;
    assert_eq!(m[0].json()["data"], "n1");
    stop(node).await;
}

#[tokio::test]
async fn presence_and_notifications_come_when_asked_for() {
    let node = node_with(api_config());
    let mut s = sse::open(node.addr, "/sse?room=chat:p&presence=1&notifications=1&token=ann", &[])
        .await
        .stream();
    let snapshot = s.next_named("presence").await.json();
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(snapshot["users"], json!(["ann"]), "the stream itself is present");
    s.next_named("subscribed").await;

    let (bob, _events) = client(&node.url(), "bob").await;
    let opts = herald_protocol::SubscribeOptions {
        presence: true,
        ..Default::default()
    };
    bob.subscribe("chat:p", opts).await.unwrap();
    let join = s.next_named("presence").await.json();
    assert_eq!(join, json!({"room": "chat:p", "user": "bob", "type": "join"}));

    let body = json!({"user": "ann", "kind": "mention", "title": "hi", "data": {"x": 1}}).to_string();
    let (status, resp) = http(node.addr, "POST", "/api/notify", Some(API_KEY), Some(&body)).await;
    assert_eq!(status, 200);
    assert_eq!(resp["online_connections"], 1, "the stream counts as ann's connection");
    let n = s.next_named("notification").await.json();
    assert_eq!((n["kind"].clone(), n["title"].clone()), (json!("mention"), json!("hi")));
    assert_eq!(
        serde_json::from_str::<Value>(n["data"].as_str().unwrap()).unwrap(),
        json!({"x": 1})
    );

    // A stream that did not ask gets neither.
    let mut quiet = joined(node.addr, "/sse?room=chat:p&token=ann", &[], 1).await;
    let (status, _) = http(node.addr, "POST", "/api/notify", Some(API_KEY), Some(&body)).await;
    assert_eq!(status, 200);
    drop(bob);
    publish(node.addr, "chat:p", "marker").await;
    let next = quiet.next().await.unwrap();
    assert_eq!(
        (next.name.as_str(), next.json()["data"].clone()),
        ("message", json!("marker"))
    );
    stop(node).await;
}

#[tokio::test]
async fn idle_streams_get_heartbeat_comments() {
    let mut config = api_config();
    config.session.heartbeat_interval = Duration::from_millis(100);
    let node = node_with(config);
    let mut s = joined(node.addr, "/sse?room=chat:hb&token=ann", &[], 1).await;
    publish(node.addr, "chat:hb", "after beats").await;
    tokio::time::sleep(Duration::from_millis(350)).await;
    publish(node.addr, "chat:hb", "later").await;
    s.messages(2).await;
    assert!(
        s.comments.iter().filter(|c| *c == "heartbeat").count() >= 2,
        "{:?}",
        s.comments
    );
    stop(node).await;
}

const SECRET: &[u8] = b"sse-test-secret-0123456789-abcdefghij";

fn mint(user: &str, rooms: &[&str], ttl: Duration) -> String {
    let req = MintRequest {
        user: user.into(),
        rooms: rooms.iter().map(|r| (*r).to_owned()).collect(),
        ttl,
        admin: false,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    mint_hs256(SECRET, &req, now).unwrap()
}

fn jwt_node() -> herald_gateway::NodeHandle {
    node_with(NodeConfig {
        auth: AuthConfig::Hs256Secret(SECRET.to_vec()),
        ..api_config()
    })
}

#[tokio::test]
async fn a_token_comes_by_header_query_or_cookie_and_is_checked_like_at_connect() {
    let node = jwt_node();
    let token = mint("ann", &["chat:*"], Duration::from_secs(600));
    let bearer = format!("Authorization: Bearer {token}");
    let cookie = format!("Cookie: theme=dark; herald_token={token}");
    let query = format!("/sse?room=chat:t&token={token}");
    joined(node.addr, "/sse?room=chat:t", &[&bearer], 1).await;
    joined(node.addr, "/sse?room=chat:t", &[&cookie], 1).await;
    joined(node.addr, &query, &[], 1).await;

    let r = sse::open(node.addr, "/sse?room=chat:t", &[]).await.refused();
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (401, json!("auth_failed"))
    );
    let r = sse::open(node.addr, "/sse?room=chat:t&token=forged.token.value", &[])
        .await
        .refused();
    assert_eq!(r.status, 401);
    // Rooms outside the token's patterns, including another user's.
    for room in ["dash:x", "user:bob"] {
        let r = sse::open(node.addr, &format!("/sse?room={room}&token={token}"), &[])
            .await
            .refused();
        assert_eq!(
            (r.status, r.json()["error"]["code"].clone()),
            (403, json!("forbidden")),
            "{room}"
        );
    }
    // Bad requests are refused before anything streams.
    for target in ["/sse?token=x", "/sse?room=has%20space&token=x"] {
        let r = sse::open(node.addr, target, &[]).await.refused();
        assert_eq!(r.status, 400, "{target}");
    }
    let mut c = HttpConn::open(node.addr).await;
    assert_eq!(
        c.request("POST", "/sse?room=chat:t", None, Some("{}")).await.status,
        405
    );
    stop(node).await;
}

#[tokio::test]
async fn one_users_notifications_never_reach_another_users_stream() {
    let node = jwt_node();
    let ann = mint("ann", &["chat:*"], Duration::from_secs(600));
    let bob = mint("bob", &["chat:*"], Duration::from_secs(600));
    let mut ann_s = joined(
        node.addr,
        &format!("/sse?notifications=1&room=chat:i&token={ann}"),
        &[],
        1,
    )
    .await;
    let mut bob_s = joined(
        node.addr,
        &format!("/sse?notifications=1&room=chat:i&token={bob}"),
        &[],
        1,
    )
    .await;
    for (user, kind) in [("ann", "for-ann"), ("bob", "for-bob")] {
        let body = json!({"user": user, "kind": kind}).to_string();
        let (status, _) = http(node.addr, "POST", "/api/notify", Some(API_KEY), Some(&body)).await;
        assert_eq!(status, 200);
    }
    assert_eq!(ann_s.next_named("notification").await.json()["kind"], "for-ann");
    assert_eq!(bob_s.next_named("notification").await.json()["kind"], "for-bob");
    // A message to user:ann (the user room) reaches ann's stream only if it
    // listed it; bob's never.
    publish(node.addr, "user:ann", "private").await;
    publish(node.addr, "chat:i", "public").await;
    let m = bob_s.messages(1).await;
    assert_eq!(m[0].json()["data"], "public", "bob's first message is the public one");

    // A closed stream's slot reused by a new stream of bob's inherits
    // nothing of ann's.
    drop(ann_s);
    let mut bob2 = joined(
        node.addr,
        &format!("/sse?notifications=1&room=chat:j&token={bob}"),
        &[],
        1,
    )
    .await;
    let body = json!({"user": "ann", "kind": "late-for-ann"}).to_string();
    http(node.addr, "POST", "/api/notify", Some(API_KEY), Some(&body)).await;
    publish(node.addr, "chat:j", "marker").await;
    let next = bob2.next().await.unwrap();
    assert_eq!(
        (next.name.as_str(), next.json()["data"].clone()),
        ("message", json!("marker"))
    );
    stop(node).await;
}

#[tokio::test]
async fn streams_count_against_the_connection_limit_and_show_in_metrics() {
    let node = node_with(NodeConfig {
        max_connections: 2,
        ..api_config()
    });
    let s1 = joined(node.addr, "/sse?room=chat:m&token=a", &[], 1).await;
    let (_ws, _) = ws_connected(&node.url(), "b").await;
    let text = HttpConn::open(node.addr)
        .await
        .request("GET", "/metrics", None, None)
        .await
        .text();
    assert_eq!(metric_in(&text, "herald_sessions", "transport=\"sse\""), 1);
    assert_eq!(metric_in(&text, "herald_sessions", "transport=\"websocket\""), 1);
    let r = sse::open(node.addr, "/sse?room=chat:m&token=c", &[]).await.refused();
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (503, json!("connection_limit"))
    );
    drop(s1);
    let deadline = std::time::Instant::now() + WAIT;
    while metric(node.addr, "herald_sessions", "transport=\"sse\"").await != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the closed stream is still counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    joined(node.addr, "/sse?room=chat:m&token=c", &[], 1).await;
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_falls_behind_ends_with_a_close_event() {
    let mut config = api_config();
    config.session.limits.max_outbound_bytes = 64 * 1024;
    let node = node_with(config);
    // A receive buffer of a few KiB: the node's socket fills quickly.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let stream = sock.connect(node.addr).await.unwrap();
    let mut slow = sse::open_on(stream, "/sse?room=chat:slow&token=slow", &[])
        .await
        .stream();
    slow.next_named("subscribed").await;
    let big = "x".repeat(16 * 1024);
    // Not read meanwhile: 8 MiB against 64 KiB of queue and the kernel's
    // buffers (a few MiB at most).
    for _ in 0..512 {
        publish(node.addr, "chat:slow", &big).await;
        if metric(node.addr, "herald_drops_total", "reason=\"slow_consumer\"").await > 0 {
            break;
        }
    }
    assert_eq!(
        metric(node.addr, "herald_drops_total", "reason=\"slow_consumer\"").await,
        1
    );
    let events = slow.until_end().await;
    let last = events.last().unwrap();
    assert_eq!(last.name, "close", "the final event says why");
    assert_eq!(last.json()["code"], "slow_consumer");
    let offsets: Vec<u64> = events
        .iter()
        .filter(|e| e.name == "message")
        .map(|e| e.json()["offset"].as_u64().unwrap())
        .collect();
    assert!(!offsets.is_empty());
    assert_eq!(
        offsets,
        (1..=offsets.len() as u64).collect::<Vec<_>>(),
        "a prefix, in order"
    );
    stop(node).await;
}

#[tokio::test]
async fn a_conflated_room_gives_a_slow_stream_the_newest_message_instead_of_closing_it() {
    let mut config = api_config();
    config.session.limits.max_outbound_bytes = 64 * 1024;
    let mut ns = herald_gateway::NamespaceConfig::general();
    ns.conflate = true;
    config.namespaces.push(("ticker".into(), ns));
    let node = node_with(config);
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let stream = sock.connect(node.addr).await.unwrap();
    let mut slow = sse::open_on(stream, "/sse?room=ticker:btc&token=slow", &[])
        .await
        .stream();
    slow.next_named("subscribed").await;
    let big = "x".repeat(16 * 1024);
    let mut last = 0;
    for _ in 0..512 {
        last = publish(node.addr, "ticker:btc", &big).await["offset"].as_u64().unwrap();
        if metric(node.addr, "herald_drops_total", "reason=\"conflated\"").await > 0 && last >= 400 {
            break;
        }
    }
    assert!(metric(node.addr, "herald_drops_total", "reason=\"conflated\"").await > 0);
    assert_eq!(
        metric(node.addr, "herald_drops_total", "reason=\"slow_consumer\"").await,
        0
    );
    // Reading now: what was written before falling behind, then the newest.
    let mut offsets = Vec::new();
    while offsets.last() != Some(&last) {
        let e = slow.next().await.expect("the stream stays open");
        if e.name == "message" {
            offsets.push(e.json()["offset"].as_u64().unwrap());
        }
    }
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "increasing: {offsets:?}");
    assert!((offsets.len() as u64) < last, "some offsets were skipped");
    stop(node).await;
}
