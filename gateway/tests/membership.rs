//! Membership is counted by connection: joins that were refused, followed
//! by unsubscribes and closes, never change what the real members receive
//! or what presence and the room list say.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod support;

use std::time::Duration;

use herald_gateway::{AuthConfig, NodeConfig};
use herald_protocol::wire::{self, BodyT};
use herald_protocol::{ErrorCode, with_encoder};
use serde_json::json;
use support::{API_KEY, HttpConn, RawWs, WAIT, metric_in, ws_connected, ws_next_non_ping, ws_send_frame, ws_subscribe};

const ROOM: &str = "chat:small";

/// One shard (every member counts on the same shard), rooms of at most two.
fn config(auth: AuthConfig) -> NodeConfig {
    let mut c = NodeConfig {
        shards: 1,
        api_key: API_KEY.into(),
        auth,
        ..NodeConfig::default()
    };
    for (name, ns) in &mut c.namespaces {
        if name == "chat" {
            ns.max_subscribers = 2;
        }
    }
    c
}

fn subscribe_frame(request_id: u32, room: &str) -> bytes::Bytes {
    let mut s = wire::SubscribeT::default();
    s.room = room.into();
    s.presence = true;
    with_encoder(|e| e.body(request_id, BodyT::Subscribe(Box::new(s))))
}

fn unsubscribe_frame(request_id: u32, room: &str) -> bytes::Bytes {
    let mut u = wire::UnsubscribeT::default();
    u.room = room.into();
    with_encoder(|e| e.body(request_id, BodyT::Unsubscribe(Box::new(u))))
}

/// Subscribes and unsubscribes in one write, so the node reads both before
/// the owner's refusal comes back: the unsubscribe of a join still pending
/// sends the owner a leave for a connection it never counted.
async fn join_and_run(ws: &mut RawWs) {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    ws.feed(Message::Binary(subscribe_frame(1, ROOM))).await.unwrap();
    ws.feed(Message::Binary(unsubscribe_frame(2, ROOM))).await.unwrap();
    tokio::time::timeout(WAIT, ws.flush()).await.unwrap().unwrap();
}

/// Waits until the node holds `n` WebSocket sessions: the closes before
/// have been handled, and so have their leaves (on one shard, the owner
/// takes them before any later request).
async fn wait_sessions(http: &mut HttpConn, n: u64) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let text = http.request("GET", "/metrics", None, None).await.text();
        if metric_in(&text, "herald_sessions", "transport=\"websocket\"") == n {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "sessions close in time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn room_state(http: &mut HttpConn) -> (u64, Vec<String>) {
    let rooms = http.request("GET", "/api/rooms", Some(API_KEY), None).await.json();
    let subscribers = rooms["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["room"] == ROOM)
        .map_or(0, |r| r["subscribers"].as_u64().unwrap());
    let presence = http
        .request("GET", &format!("/api/presence/{ROOM}"), Some(API_KEY), None)
        .await
        .json();
    let mut users: Vec<String> = presence["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap().to_owned())
        .collect();
    users.sort();
    (subscribers, users)
}

/// The members still get a message published now.
async fn members_still_receive(http: &mut HttpConn, members: &mut [&mut RawWs], text: &str) {
    let body = json!({"room": ROOM, "data": text}).to_string();
    assert_eq!(
        http.request("POST", "/api/publish", Some(API_KEY), Some(&body))
            .await
            .status,
        200
    );
    for ws in members.iter_mut() {
        loop {
            match tokio::time::timeout(WAIT, ws_next_non_ping(ws)).await.unwrap() {
                Some((_, BodyT::Message(m))) => {
                    assert_eq!(m.payload.as_deref(), Some(text.as_bytes()));
                    break;
                }
                // Presence events of the members themselves.
                Some((_, BodyT::PresenceJoin(_) | BodyT::PresenceLeave(_))) => {}
                other => panic!("expected the message, got {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn refused_joins_then_leaves_and_closes_change_nothing_for_members() {
    let node = support::node_with(config(AuthConfig::Development));
    let mut http = HttpConn::open(node.addr).await;
    let (mut ann, _) = ws_connected(&node.url(), "ann").await;
    let (mut bob, _) = ws_connected(&node.url(), "bob").await;
    ws_subscribe(&mut ann, 1, ROOM, true).await;
    ws_subscribe(&mut bob, 1, ROOM, true).await;
    assert_eq!(room_state(&mut http).await, (2, vec!["ann".into(), "bob".into()]));

    // Three more try: the room is full. Each unsubscribes in the same write,
    // so its leave reaches the owner after the refused join (the cancelled
    // subscribe gets no answer, as docs/PROTOCOL.md says), then closes.
    let mut cancelled = 0;
    for user in ["eve", "eve", "mallory"] {
        let (mut ws, _) = ws_connected(&node.url(), user).await;
        join_and_run(&mut ws).await;
        loop {
            match ws_next_non_ping(&mut ws).await {
                Some((1, BodyT::Reply(r))) => assert_eq!(r.code, ErrorCode::RoomFull),
                Some((2, BodyT::Reply(r))) => {
                    // Ok: it was still pending; NotSubscribed: refused first.
                    match r.code {
                        ErrorCode::Ok => cancelled += 1,
                        code => assert_eq!(code, ErrorCode::NotSubscribed),
                    }
                    break;
                }
                other => panic!("expected the answers, got {other:?}"),
            }
        }
        drop(ws);
    }
    assert!(
        cancelled > 0,
        "no unsubscribe overtook its refusal: the test proved nothing"
    );
    wait_sessions(&mut http, 2).await;
    assert_eq!(room_state(&mut http).await, (2, vec!["ann".into(), "bob".into()]));
    members_still_receive(&mut http, &mut [&mut ann, &mut bob], "still yours").await;

    // A member's own leave is counted once, however often it is repeated.
    ws_send_frame(&mut bob, unsubscribe_frame(5, ROOM)).await;
    ws_send_frame(&mut bob, unsubscribe_frame(6, ROOM)).await;
    let mut codes = Vec::new();
    while codes.len() < 2 {
        if let Some((id, BodyT::Reply(r))) = ws_next_non_ping(&mut bob).await {
            codes.push((id, r.code));
        }
    }
    assert_eq!(codes, [(5, ErrorCode::Ok), (6, ErrorCode::NotSubscribed)]);
    let deadline = std::time::Instant::now() + WAIT;
    while room_state(&mut http).await != (1, vec!["ann".into()]) {
        assert!(std::time::Instant::now() < deadline, "bob's leave is counted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    members_still_receive(&mut http, &mut [&mut ann], "only ann").await;
}

#[tokio::test]
async fn forbidden_joins_then_leaves_change_nothing_for_members() {
    const SECRET: &[u8] = b"a-test-secret-of-at-least-32-bytes!!";
    let node = support::node_with(config(AuthConfig::Hs256Secret(SECRET.to_vec())));
    let mint = |user: &str, rooms: &[&str]| {
        herald_gateway::auth::mint_hs256(
            SECRET,
            &herald_gateway::auth::MintRequest {
                user: user.into(),
                rooms: rooms.iter().map(|r| r.to_string()).collect(),
                ttl: Duration::from_secs(3600),
                admin: false,
            },
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
        .unwrap()
    };
    let mut http = HttpConn::open(node.addr).await;
    let (mut ann, _) = ws_connected(&node.url(), &mint("ann", &["chat:*"])).await;
    ws_subscribe(&mut ann, 1, ROOM, true).await;
    // Not allowed in chat:*: refused, then leaves and closes, repeatedly.
    for _ in 0..3 {
        let (mut ws, _) = ws_connected(&node.url(), &mint("eve", &["dash:*"])).await;
        join_and_run(&mut ws).await;
        match ws_next_non_ping(&mut ws).await {
            Some((1, BodyT::Reply(r))) => assert_eq!(r.code, ErrorCode::Forbidden),
            other => panic!("expected Forbidden, got {other:?}"),
        }
        match ws_next_non_ping(&mut ws).await {
            Some((2, BodyT::Reply(r))) => assert_eq!(r.code, ErrorCode::NotSubscribed),
            other => panic!("expected NotSubscribed, got {other:?}"),
        }
    }
    wait_sessions(&mut http, 1).await;
    assert_eq!(room_state(&mut http).await, (1, vec!["ann".into()]));
    members_still_receive(&mut http, &mut [&mut ann], "for ann").await;
}
