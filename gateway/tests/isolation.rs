//! One user's data never reaches another user's connection, nor a socket
//! that has not completed `Connect`, however slots are reused.
//!
//! On a one-shard node a new connection takes the slab slot the last closed
//! one freed; these tests check that they really do (the session id names
//! shard, slot and generation) before asserting that nothing of the old
//! occupant follows. Instead of waiting for "nothing to arrive", each test
//! sends the victim something of its own afterwards: frames reach a
//! connection in order, so the first one it sees must be its own.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod support;

use std::time::Duration;

use herald_gateway::NodeConfig;
use herald_protocol::wire::BodyT;
use serde_json::json;
use support::{
    API_KEY, HttpConn, RawWs, WAIT, metric_in, ws_connect_frame, ws_connected, ws_next_non_ping, ws_open,
    ws_send_frame, ws_subscribe,
};

fn one_shard() -> NodeConfig {
    NodeConfig {
        shards: 1,
        api_key: API_KEY.into(),
        ..NodeConfig::default()
    }
}

/// (shard, slot, generation) from a session id `NODE-SHARD-SLOT-GENERATION`.
fn slot_of(session_id: &str) -> (u32, u32, u32) {
    let mut parts = session_id.rsplit('-').map(|p| p.parse::<u32>().expect("numeric part"));
    let (generation, slot, shard) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
    (shard, slot, generation)
}

/// Connects as `user` and returns the socket and its session id.
async fn connect(url: &str, user: &str) -> (RawWs, String) {
    let mut ws = ws_open(url).await;
    ws_send_frame(&mut ws, ws_connect_frame(user)).await;
    match ws_next_non_ping(&mut ws).await {
        Some((_, BodyT::Connected(c))) => (ws, c.session_id.unwrap_or_default()),
        other => panic!("expected Connected, got {other:?}"),
    }
}

/// Waits until the node has no WebSocket session left (closes are
/// asynchronous), asking through `http`.
async fn wait_no_sessions(http: &mut HttpConn) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let text = http.request("GET", "/metrics", None, None).await.text();
        if metric_in(&text, "herald_sessions", "transport=\"websocket\"") == 0 {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "sessions close in time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn notify(http: &mut HttpConn, user: &str, kind: &str) -> u64 {
    let body = json!({"user": user, "kind": kind}).to_string();
    let resp = http.request("POST", "/api/notify", Some(API_KEY), Some(&body)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.json()["online_connections"].as_u64().unwrap()
}

async fn publish(http: &mut HttpConn, room: &str, data: &str) {
    let body = json!({"room": room, "data": data}).to_string();
    let resp = http.request("POST", "/api/publish", Some(API_KEY), Some(&body)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
}

/// The kind of the next notification, or the payload of the next message.
async fn next_delivery(ws: &mut RawWs) -> String {
    match ws_next_non_ping(ws).await {
        Some((_, BodyT::Notification(n))) => format!("notification {}", n.kind.unwrap_or_default()),
        Some((_, BodyT::Message(m))) => format!(
            "message {} {}",
            m.room,
            String::from_utf8_lossy(&m.payload.unwrap_or_default())
        ),
        other => panic!("expected a delivery, got {other:?}"),
    }
}

#[tokio::test]
async fn a_reused_slot_never_gets_the_previous_users_messages() {
    let node = support::node_with(one_shard());
    // Held open throughout, so it keeps its own slot.
    let mut http = HttpConn::open(node.addr).await;
    assert_eq!(http.request("GET", "/health", None, None).await.status, 200);

    let (mut ann, ann_session) = connect(&node.url(), "ann").await;
    ws_subscribe(&mut ann, 1, "chat:private", false).await;
    assert_eq!(
        next_delivery_after_publish(&mut http, &mut ann, "user:ann").await,
        "message user:ann hi"
    );
    drop(ann);
    wait_no_sessions(&mut http).await;

    let (mut bob, bob_session) = connect(&node.url(), "bob").await;
    let (ann_slot, bob_slot) = (slot_of(&ann_session), slot_of(&bob_session));
    assert_eq!(
        bob_slot.1, ann_slot.1,
        "bob reuses ann's slot ({ann_session}, {bob_session})"
    );
    assert_ne!(bob_slot.2, ann_slot.2, "with a new generation");

    // Everything meant for ann: nobody online gets it...
    assert_eq!(notify(&mut http, "ann", "for-ann").await, 0, "ann is not online");
    publish(&mut http, "user:ann", "for ann only").await;
    publish(&mut http, "chat:private", "for ann's room").await;
    // ...and bob's first delivery is his own.
    assert_eq!(notify(&mut http, "bob", "for-bob").await, 1);
    assert_eq!(next_delivery(&mut bob).await, "notification for-bob");
    publish(&mut http, "user:bob", "bob's").await;
    assert_eq!(next_delivery(&mut bob).await, "message user:bob bob's");
}

/// Publishes "hi" to `room` and returns what `ws` gets next.
async fn next_delivery_after_publish(http: &mut HttpConn, ws: &mut RawWs, room: &str) -> String {
    publish(http, room, "hi").await;
    next_delivery(ws).await
}

#[tokio::test]
async fn a_socket_that_never_connected_gets_nothing() {
    let node = support::node_with(one_shard());
    let mut http = HttpConn::open(node.addr).await;
    assert_eq!(http.request("GET", "/health", None, None).await.status, 200);

    let (mut ann, _) = connect(&node.url(), "ann").await;
    ws_subscribe(&mut ann, 1, "chat:private", false).await;
    drop(ann);
    wait_no_sessions(&mut http).await;

    // Upgraded, in ann's old slot, but never sent Connect.
    let mut lurker = ws_open(&node.url()).await;
    assert_eq!(notify(&mut http, "ann", "for-ann").await, 0);
    publish(&mut http, "user:ann", "for ann only").await;
    publish(&mut http, "chat:private", "for ann's room").await;
    // Anything queued for it would come before the answer to its Connect.
    ws_send_frame(&mut lurker, ws_connect_frame("mallory")).await;
    match ws_next_non_ping(&mut lurker).await {
        Some((_, BodyT::Connected(c))) => assert_eq!(c.user_id.as_deref(), Some("mallory")),
        other => panic!("the first frame must answer Connect, got {other:?}"),
    }
    // And as mallory it gets mallory's, not ann's.
    assert_eq!(notify(&mut http, "mallory", "for-mallory").await, 1);
    assert_eq!(next_delivery(&mut lurker).await, "notification for-mallory");
}

#[tokio::test]
async fn a_user_with_several_connections_keeps_getting_them_on_the_others() {
    let node = support::node_with(NodeConfig {
        shards: 2,
        api_key: API_KEY.into(),
        ..NodeConfig::default()
    });
    let mut http = HttpConn::open(node.addr).await;
    let (first, _) = ws_connected(&node.url(), "ann").await;
    let (mut second, _) = ws_connected(&node.url(), "ann").await;
    assert_eq!(notify(&mut http, "ann", "both").await, 2);
    assert_eq!(next_delivery(&mut second).await, "notification both");
    drop(first);
    // Once the first is gone, only the second is counted and served.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let n = notify(&mut http, "ann", "again").await;
        assert_eq!(next_delivery(&mut second).await, "notification again");
        if n == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the closed one leaves the index");
    }
}
