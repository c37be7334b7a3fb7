//! Malformed, oversized and out-of-protocol input over raw WebSockets: each
//! gets a typed error and a close with a reason; other clients are unaffected.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod support;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use herald_gateway::close_code;
use herald_protocol::wire::{self, Body};
use herald_protocol::{DecodeLimits, ErrorCode, PublishOptions, PublishRef, SubscribeOptions, decode, with_encoder};
use support::*;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn raw(url: &str) -> Ws {
    tokio_tungstenite::connect_async(url).await.expect("upgrade").0
}

fn connect_frame(user: &str) -> Bytes {
    let mut c = wire::ConnectT::default();
    c.protocol = Some("herald/1".into());
    c.token = Some(user.into());
    with_encoder(|e| e.body(1, wire::BodyT::Connect(Box::new(c))))
}

/// Reads frames until the server closes; returns the last Error code seen
/// and the WebSocket close code.
async fn read_until_close(ws: &mut Ws) -> (Option<ErrorCode>, Option<u16>) {
    let mut last_error = None;
    tokio::time::timeout(WAIT, async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Binary(b)) => {
                    let f = decode(&b, &DecodeLimits::SERVER_TO_CLIENT).expect("server frames are valid");
                    if let Some(e) = f.body_as_error() {
                        last_error = Some(e.code());
                    }
                }
                Ok(Message::Close(Some(c))) => return (last_error, Some(u16::from(c.code))),
                Ok(Message::Close(None)) | Err(_) => return (last_error, None),
                Ok(_) => {}
            }
        }
        (last_error, None)
    })
    .await
    .expect("server closes within the wait bound")
}

async fn connected(url: &str, user: &str) -> Ws {
    let mut ws = raw(url).await;
    ws.send(Message::Binary(connect_frame(user))).await.unwrap();
    match ws.next().await {
        Some(Ok(Message::Binary(b))) => {
            let f = decode(&b, &DecodeLimits::SERVER_TO_CLIENT).unwrap();
            assert_eq!(f.body_type(), Body::Connected);
        }
        other => panic!("expected Connected, got {other:?}"),
    }
    ws
}

#[tokio::test]
async fn garbage_text_and_oversized_frames_close_with_typed_codes() {
    let node = node();
    // A bystander keeps receiving throughout.
    let (watcher, mut events) = client(&node.url(), "watcher").await;
    watcher
        .subscribe("chat:calm", SubscribeOptions::default())
        .await
        .unwrap();

    // Herald's own errors: an Error frame, then a close with 4000 + code.
    let herald: Vec<(Message, ErrorCode)> = vec![
        (
            Message::Binary(Bytes::from_static(b"\x00\x01garbage-not-a-frame")),
            ErrorCode::MalformedFrame,
        ),
        (
            // A server-only body from a client.
            Message::Binary(with_encoder(|e| e.go_away(ErrorCode::Kicked, "x", 0))),
            ErrorCode::UnsupportedFrame,
        ),
    ];
    for (msg, want) in herald {
        let mut ws = connected(&node.url(), "mallory").await;
        ws.send(msg).await.unwrap();
        let (error, close) = read_until_close(&mut ws).await;
        assert_eq!(error, Some(want), "error frame for {want:?}");
        assert_eq!(close, Some(close_code(want)), "close code for {want:?}");
    }
    // WebSocket-level refusals: RFC 6455's codes, no Herald frame.
    let transport: Vec<(Message, u16)> = vec![
        // Herald speaks binary only: unsupported data.
        (Message::Text("{\"hello\":1}".into()), 1003),
        // Over the 64 KiB frame limit: message too big.
        (Message::Binary(Bytes::from(vec![0u8; 70 * 1024])), 1009),
    ];
    for (msg, want) in transport {
        let mut ws = connected(&node.url(), "mallory").await;
        ws.send(msg).await.unwrap();
        let (error, close) = read_until_close(&mut ws).await;
        assert_eq!(error, None, "no Herald error frame for close {want}");
        assert_eq!(close, Some(want));
    }

    let p = watcher
        .publish("chat:calm", &b"still here"[..], PublishOptions::default())
        .await
        .unwrap();
    let d = next_matching(&mut events, |ev| match ev {
        herald_protocol::ClientEvent::Message(d) => Some(d),
        _ => None,
    })
    .await;
    assert_eq!(d.offset, p.offset);
}

#[tokio::test]
async fn requests_before_connect_are_a_protocol_violation() {
    let node = node();
    let mut ws = raw(&node.url()).await;
    let publish = with_encoder(|e| {
        e.publish(
            3,
            &PublishRef {
                room: "chat:a",
                payload: b"x",
                ..PublishRef::default()
            },
        )
    });
    ws.send(Message::Binary(publish)).await.unwrap();
    let (error, close) = read_until_close(&mut ws).await;
    assert_eq!(error, Some(ErrorCode::ProtocolViolation));
    assert_eq!(close, Some(close_code(ErrorCode::ProtocolViolation)));
}

#[tokio::test]
async fn retried_publish_with_same_key_gets_the_same_offset() {
    let node = node();
    let mut ws = connected(&node.url(), "ann").await;
    let publish = |id| {
        with_encoder(|e| {
            e.publish(
                id,
                &PublishRef {
                    room: "chat:dedup",
                    payload: b"once",
                    idempotency_key: Some("k-1"),
                    ..PublishRef::default()
                },
            )
        })
    };
    let mut offsets = Vec::new();
    for id in [10, 11] {
        ws.send(Message::Binary(publish(id))).await.unwrap();
        loop {
            let Some(Ok(Message::Binary(b))) = ws.next().await else {
                panic!("closed")
            };
            let f = decode(&b, &DecodeLimits::SERVER_TO_CLIENT).unwrap();
            if let Some(r) = f.body_as_reply() {
                assert_eq!(f.request_id(), id);
                assert_eq!(r.code(), ErrorCode::Ok);
                offsets.push(r.offset());
                break;
            }
        }
    }
    assert_eq!(offsets, vec![1, 1], "the retry is deduplicated");
}

#[tokio::test]
async fn only_the_ws_path_upgrades() {
    let node = node();
    let err = tokio_tungstenite::connect_async(format!("ws://{}/other", node.addr))
        .await
        .unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 404),
        other => panic!("expected HTTP 404, got {other:?}"),
    }
}

/// docs/PROTOCOL.md §4: the frame the node does not implement yet
/// (`MetricsSubscribe`) is answered `Reply{Unavailable}` with its request
/// id, and the connection stays open.
#[tokio::test]
async fn requests_not_implemented_yet_are_answered_unavailable() {
    let node = node();
    let (mut ws, _) = support::ws_connected(&node.url(), "ann").await;
    support::ws_send_body(&mut ws, 10, wire::BodyT::MetricsSubscribe(Box::default())).await;
    match support::ws_next_non_ping(&mut ws).await {
        Some((rid, wire::BodyT::Reply(r))) => {
            assert_eq!((rid, r.code), (10, ErrorCode::Unavailable));
            assert!(r.message.unwrap_or_default().contains("not available"));
        }
        other => panic!("expected Reply{{Unavailable}}, got {other:?}"),
    }
    // Still open: a subscribe works.
    support::ws_subscribe(&mut ws, 99, "chat:after", false).await;
}
