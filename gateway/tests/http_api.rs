//! The HTTP side of the client port over real loopback sockets: health,
//! readiness and metrics, the server API (publish, history, presence, rooms,
//! notify, disconnect) and its authentication, limits and error shapes, and
//! HTTP/1.1 connection handling.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod support;

use base64::Engine as _;
use herald_gateway::close_code;
use herald_protocol::wire::BodyT;
use herald_protocol::{ClientEvent, Delivery, ErrorCode, PublishOptions, SubscribeOptions};
use serde_json::{Value, json};
use support::*;

fn api_node() -> herald_gateway::NodeHandle {
    node_with(api_config())
}

async fn publish(addr: std::net::SocketAddr, body: &Value) -> (u16, Value) {
    http(addr, "POST", "/api/publish", Some(API_KEY), Some(&body.to_string())).await
}

async fn next_message(events: &mut herald_protocol::tokio_client::Events) -> Delivery {
    next_matching(events, |ev| match ev {
        ClientEvent::Message(d) => Some(d),
        _ => None,
    })
    .await
}

async fn next_notification(
    events: &mut herald_protocol::tokio_client::Events,
) -> Box<herald_protocol::wire::NotificationT> {
    next_matching(events, |ev| match ev {
        ClientEvent::Frame {
            body: BodyT::Notification(n),
            ..
        } => Some(n),
        _ => None,
    })
    .await
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}

/// Sum over shards of a metric's samples in Prometheus text.
fn metric_sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// The gateway's room-to-shard mapping (FNV-1a), to pick rooms on both shards.
fn shard_of(room: &str, shards: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in room.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h % shards
}

#[tokio::test]
async fn health_ready_and_metrics_count_publishes_and_deliveries() {
    let node = api_node();
    let (status, body) = http(node.addr, "GET", "/health", None, None).await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));
    let (status, body) = http(node.addr, "GET", "/ready", None, None).await;
    assert_eq!((status, &body["status"]), (200, &json!("ready")));

    let (alice, mut events) = client(&node.url(), "alice").await;
    alice
        .subscribe("chat:metrics", SubscribeOptions::default())
        .await
        .unwrap();
    let (status, _) = publish(node.addr, &json!({"room": "chat:metrics", "data": "hi"})).await;
    assert_eq!(status, 200);
    assert_eq!(&next_message(&mut events).await.payload[..], b"hi");

    let resp = HttpConn::open(node.addr)
        .await
        .request("GET", "/metrics", None, None)
        .await;
    assert_eq!(resp.status, 200);
    assert!(resp.header("content-type").unwrap().starts_with("text/plain"));
    let text = resp.text();
    assert!(text.contains("herald_connections{"), "{text}");
    assert!(metric_sum(&text, "herald_connections") >= 1, "{text}");
    assert!(metric_sum(&text, "herald_publishes_total") >= 1, "{text}");
    assert!(metric_sum(&text, "herald_deliveries_total") >= 1, "{text}");
    // One sample per shard.
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("herald_publishes_total{"))
            .count(),
        2
    );
    stop(node).await;
}

#[tokio::test]
async fn api_routes_require_the_api_key() {
    let node = api_node();
    let body = json!({"room": "chat:k", "data": "x"}).to_string();
    let (status, resp) = http(node.addr, "POST", "/api/publish", None, Some(&body)).await;
    assert_eq!(status, 401);
    assert_eq!(error_code(&resp), "unauthorized");
    assert!(resp["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    // Wrong key, same length, and a different length.
    for key in ["test-api-key-0123456780", "nope", ""] {
        let (status, resp) = http(node.addr, "POST", "/api/publish", Some(key), Some(&body)).await;
        assert_eq!(status, 401, "key {key:?}");
        assert_eq!(error_code(&resp), "unauthorized");
    }
    let (status, _) = http(node.addr, "GET", "/api/rooms", Some("wrong-key-wrong-key"), None).await;
    assert_eq!(status, 401);
    // Not a bearer token.
    let mut conn = HttpConn::open(node.addr).await;
    conn.send_raw(format!("GET /api/rooms HTTP/1.1\r\nHost: h\r\nAuthorization: Basic {API_KEY}\r\n\r\n").as_bytes())
        .await;
    assert_eq!(conn.read_response().await.status, 401);

    let (status, resp) = http(node.addr, "POST", "/api/publish", Some(API_KEY), Some(&body)).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["offset"], 1);
}

#[tokio::test]
async fn publish_text_and_binary_reach_subscribers_with_increasing_offsets() {
    let node = api_node();
    let (alice, mut events) = client(&node.url(), "alice").await;
    let sub = alice.subscribe("chat:api", SubscribeOptions::default()).await.unwrap();

    for (i, text) in ["one", "two", "three ünïcödé"].iter().enumerate() {
        let (status, body) = publish(node.addr, &json!({"room": "chat:api", "data": text})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["offset"], i as u64 + 1, "offsets are 1, 2, 3");
        assert_eq!(body["epoch"], sub.epoch);
        let d = next_message(&mut events).await;
        assert_eq!(&d.payload[..], text.as_bytes());
        assert_eq!(d.publisher, "", "the server API publishes as the empty user");
        assert_eq!(
            (d.room.as_str(), d.offset, d.epoch),
            ("chat:api", i as u64 + 1, sub.epoch)
        );
    }

    let bytes: Vec<u8> = vec![0, 255, 254, 10, 13, 128, 0xc3];
    let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
    let (status, body) = publish(
        node.addr,
        &json!({"room": "chat:api", "data_b64": b64, "content_type": "application/octet-stream"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["offset"], 4);
    let d = next_message(&mut events).await;
    assert_eq!(&d.payload[..], &bytes[..]);
    assert_eq!(d.content_type.as_deref(), Some("application/octet-stream"));
    stop(node).await;
}

#[tokio::test]
async fn publish_rejects_bad_bodies_with_400() {
    let node = api_node();
    let cases: Vec<(&str, &str)> = vec![
        (r#"{"room":"chat:a","data":"x","data_b64":"eA=="}"#, "bad_request"),
        (r#"{"room":"chat:a"}"#, "bad_request"),
        (r#"{"room":"chat:a","data_b64":"!!not base64!!"}"#, "bad_request"),
        (r#"{"room":"chat:a","data":"x""#, "bad_request"),
        ("not json at all", "bad_request"),
        ("", "bad_request"),
        (r#"{"room":"chat:a","data":"x","colour":"red"}"#, "bad_request"),
        (r#"{"data":"x"}"#, "bad_request"),
        (r#"{"room":"bad room!","data":"x"}"#, "invalid_room_name"),
        (r#"{"room":"","data":"x"}"#, "invalid_room_name"),
    ];
    for (body, code) in cases {
        let (status, resp) = http(node.addr, "POST", "/api/publish", Some(API_KEY), Some(body)).await;
        assert_eq!(status, 400, "body {body:?}: {resp}");
        assert_eq!(error_code(&resp), code, "body {body:?}");
    }
    // Nothing was stored: the room does not exist.
    let (status, _) = http(node.addr, "GET", "/api/history/chat:a", Some(API_KEY), None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn oversized_payloads_and_bodies_get_413() {
    let mut config = api_config();
    config.session.limits.max_payload_bytes = 1024;
    let node = node_with(config);

    let (status, resp) = publish(node.addr, &json!({"room": "chat:big", "data": "x".repeat(1025)})).await;
    assert_eq!(status, 413, "{resp}");
    assert_eq!(error_code(&resp), "payload_too_large");
    let b64 = base64::engine::general_purpose::STANDARD.encode(vec![7u8; 1025]);
    let (status, _) = publish(node.addr, &json!({"room": "chat:big", "data_b64": b64})).await;
    assert_eq!(status, 413);
    // Exactly at the limit is fine.
    let (status, resp) = publish(node.addr, &json!({"room": "chat:big", "data": "x".repeat(1024)})).await;
    assert_eq!((status, &resp["offset"]), (200, &json!(1)));

    // A body over 256 KiB is refused from its Content-Length alone, before
    // it is sent, and the connection is closed.
    let mut conn = HttpConn::open(node.addr).await;
    let head = format!(
        "POST /api/publish HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {API_KEY}\r\nContent-Length: {}\r\n\r\n",
        256 * 1024 + 1
    );
    conn.send_raw(head.as_bytes()).await;
    let resp = conn.read_response().await;
    assert_eq!(resp.status, 413);
    assert_eq!(error_code(&resp.json()), "payload_too_large");
    assert!(conn.closed_by_server().await);
    let (status, _) = http(node.addr, "GET", "/health", None, None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn server_only_namespace_accepts_api_publishes_but_not_client_ones() {
    let node = api_node();
    let (alice, mut events) = client(&node.url(), "alice").await;
    alice
        .subscribe("dash:sales", SubscribeOptions::default())
        .await
        .unwrap();

    let (status, body) = publish(node.addr, &json!({"room": "dash:sales", "data": "42"})).await;
    assert_eq!(status, 200, "{body}");
    let d = next_message(&mut events).await;
    assert_eq!((&d.payload[..], d.publisher.as_str()), (&b"42"[..], ""));

    let err = alice
        .publish("dash:sales", &b"43"[..], PublishOptions::default())
        .await
        .unwrap_err();
    assert_refused(&err, ErrorCode::Forbidden);
    // user: rooms are server-only too.
    let err = alice
        .publish("user:alice", &b"me"[..], PublishOptions::default())
        .await
        .unwrap_err();
    assert_refused(&err, ErrorCode::Forbidden);
    // The refusal was not fatal, and the API can still publish after it.
    let (status, body) = publish(node.addr, &json!({"room": "dash:sales", "data": "44"})).await;
    assert_eq!((status, &body["offset"]), (200, &json!(2)));
    assert_eq!(&next_message(&mut events).await.payload[..], b"44");
    stop(node).await;
}

#[tokio::test]
async fn history_pages_by_limit_before_and_after() {
    let node = api_node();
    for i in 1..=5 {
        let (status, _) = publish(node.addr, &json!({"room": "chat:hist", "data": format!("m{i}")})).await;
        assert_eq!(status, 200);
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode([0xffu8, 0x00]);
    let (status, _) = publish(node.addr, &json!({"room": "chat:hist", "data_b64": b64})).await;
    assert_eq!(status, 200);

    let page = |query: &'static str| {
        let addr = node.addr;
        async move {
            let (status, body) = http(
                addr,
                "GET",
                &format!("/api/history/chat:hist{query}"),
                Some(API_KEY),
                None,
            )
            .await;
            assert_eq!(status, 200, "{query}: {body}");
            assert_eq!(body["room"], "chat:hist");
            assert!(body["epoch"].as_u64().unwrap() > 0);
            let offsets: Vec<u64> = body["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["offset"].as_u64().unwrap())
                .collect();
            (offsets, body["has_more"].as_bool().unwrap(), body)
        }
    };

    let (offsets, more, body) = page("").await;
    assert_eq!((offsets, more), (vec![1, 2, 3, 4, 5, 6], false));
    let messages = body["messages"].as_array().unwrap();
    for m in &messages[..5] {
        assert_eq!(m["data"], format!("m{}", m["offset"]));
        assert_eq!(m["publisher"], "");
        assert!(m["timestamp_ms"].as_u64().unwrap() > 0);
    }
    assert_eq!(messages[5]["data_b64"], b64, "non-UTF-8 payloads come back as base64");
    assert!(messages[5].get("data").is_none());

    let (offsets, more, _) = page("?limit=2").await;
    assert_eq!((offsets, more), (vec![5, 6], true), "newest page");
    let (offsets, more, _) = page("?limit=2&before=5").await;
    assert_eq!((offsets, more), (vec![3, 4], true));
    let (offsets, more, _) = page("?limit=2&before=3").await;
    assert_eq!((offsets, more), (vec![1, 2], false));
    let (offsets, more, _) = page("?after=2&limit=2").await;
    assert_eq!((offsets, more), (vec![3, 4], true), "forward paging keeps the oldest");
    let (offsets, more, _) = page("?after=4").await;
    assert_eq!((offsets, more), (vec![5, 6], false));
    let (offsets, more, _) = page("?after=2&before=5").await;
    assert_eq!((offsets, more), (vec![3, 4], false));
    let (offsets, more, _) = page("?after=6").await;
    assert_eq!((offsets, more), (vec![], false));

    let (status, body) = http(node.addr, "GET", "/api/history/chat:nowhere", Some(API_KEY), None).await;
    assert_eq!(status, 404);
    assert_eq!(error_code(&body), "not_found");
    for query in ["?limit=abc", "?limit=-1", "?before=x", "?after=1.5"] {
        let (status, body) = http(
            node.addr,
            "GET",
            &format!("/api/history/chat:hist{query}"),
            Some(API_KEY),
            None,
        )
        .await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(error_code(&body), "bad_request");
    }
    let (status, body) = http(node.addr, "GET", "/api/history/bad%20room", Some(API_KEY), None).await;
    assert_eq!((status, error_code(&body)), (400, "invalid_room_name"));
}

#[tokio::test]
async fn presence_counts_users_not_connections() {
    let node = api_node();
    let mut keep = Vec::new();
    for user in ["ann", "ann", "bob"] {
        let (c, e) = client(&node.url(), user).await;
        c.subscribe("chat:pres", SubscribeOptions::default()).await.unwrap();
        keep.push((c, e));
    }
    let (status, body) = http(node.addr, "GET", "/api/presence/chat:pres", Some(API_KEY), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["room"], "chat:pres");
    assert_eq!(body["count"], 2);
    let mut users: Vec<&str> = body["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    users.sort_unstable();
    assert_eq!(users, ["ann", "bob"]);
    assert_eq!(body["truncated"], false);

    let (status, _) = http(node.addr, "GET", "/api/presence/chat:empty", Some(API_KEY), None).await;
    assert_eq!(status, 404);
    stop(node).await;
}

#[tokio::test]
async fn rooms_are_listed_from_every_shard_with_subscriber_counts() {
    let node = api_node();
    let rooms: Vec<String> = (0..6).map(|i| format!("chat:list-{i}")).collect();
    let shards: std::collections::HashSet<u64> = rooms.iter().map(|r| shard_of(r, 2)).collect();
    assert_eq!(shards.len(), 2, "the test rooms must live on both shards");
    for (i, room) in rooms.iter().enumerate() {
        for _ in 0..=i {
            let (status, _) = publish(node.addr, &json!({"room": room, "data": "x"})).await;
            assert_eq!(status, 200);
        }
    }
    let (alice, _a) = client(&node.url(), "alice").await;
    let (bob, _b) = client(&node.url(), "bob").await;
    for room in &rooms[..2] {
        alice.subscribe(room, SubscribeOptions::default()).await.unwrap();
    }
    bob.subscribe(&rooms[0], SubscribeOptions::default()).await.unwrap();

    let (status, body) = http(node.addr, "GET", "/api/rooms", Some(API_KEY), None).await;
    assert_eq!(status, 200, "{body}");
    let listed = body["rooms"].as_array().unwrap();
    let names: Vec<&str> = listed.iter().map(|r| r["room"].as_str().unwrap()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "rooms are sorted by name");
    for (i, room) in rooms.iter().enumerate() {
        let r = listed
            .iter()
            .find(|r| r["room"] == room.as_str())
            .unwrap_or_else(|| panic!("{room} missing from {body}"));
        assert_eq!(r["offset"], i as u64 + 1, "{room}");
        let want = match i {
            0 => 2,
            1 => 1,
            _ => 0,
        };
        assert_eq!(r["subscribers"], want, "{room}");
        assert_eq!(r["users"], want, "{room}");
        assert!(r["epoch"].as_u64().unwrap() > 0);
    }

    let (status, _) = http(node.addr, "POST", "/api/rooms", Some(API_KEY), Some("{}")).await;
    assert_eq!(status, 405);
    stop(node).await;
}

#[tokio::test]
async fn notify_reaches_every_connection_of_the_user_only() {
    let node = api_node();
    let (_ann1, mut ann1) = client(&node.url(), "ann").await;
    let (_ann2, mut ann2) = client(&node.url(), "ann").await;
    let (_bob, mut bob) = client(&node.url(), "bob").await;
    // `Connected` means the shard has registered the connection as ann's (or
    // bob's): notifications go to every shard's connections of the user.

    let body = json!({"user": "ann", "kind": "mention", "title": "t", "body": "b", "data": {"x": 1}});
    let (status, resp) = http(node.addr, "POST", "/api/notify", Some(API_KEY), Some(&body.to_string())).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["online_connections"], 2);

    for events in [&mut ann1, &mut ann2] {
        let n = next_notification(events).await;
        assert_eq!(n.kind.as_deref(), Some("mention"));
        assert_eq!(n.title.as_deref(), Some("t"));
        assert_eq!(n.body.as_deref(), Some("b"));
        let data: Value = serde_json::from_slice(n.data.as_deref().unwrap()).unwrap();
        assert_eq!(data, json!({"x": 1}));
        assert!(n.created_ms > 0);
    }

    // Bob's first notification is his own marker, not ann's.
    let marker = json!({"user": "bob", "kind": "marker"});
    let (status, resp) = http(
        node.addr,
        "POST",
        "/api/notify",
        Some(API_KEY),
        Some(&marker.to_string()),
    )
    .await;
    assert_eq!((status, &resp["online_connections"]), (200, &json!(1)));
    assert_eq!(next_notification(&mut bob).await.kind.as_deref(), Some("marker"));

    // A user with no connection: accepted, nobody online.
    let nobody = json!({"user": "nobody", "kind": "k"});
    let (status, resp) = http(
        node.addr,
        "POST",
        "/api/notify",
        Some(API_KEY),
        Some(&nobody.to_string()),
    )
    .await;
    assert_eq!((status, &resp["online_connections"]), (200, &json!(0)));
    for bad in [
        json!({"user": "", "kind": "k"}),
        json!({"user": "a b", "kind": "k"}),
        json!({"user": "ann"}),
        json!({"user": "ann", "kind": "k", "extra": true}),
    ] {
        let (status, _) = http(node.addr, "POST", "/api/notify", Some(API_KEY), Some(&bad.to_string())).await;
        assert_eq!(status, 400, "{bad}");
    }
    stop(node).await;
}

#[tokio::test]
async fn disconnect_kicks_every_connection_of_the_user() {
    let node = api_node();
    let (carl1, _) = ws_connected(&node.url(), "carl").await;
    let (carl2, _) = ws_connected(&node.url(), "carl").await;
    let (dave, mut dave_events) = client(&node.url(), "dave").await;
    dave.subscribe("chat:after", SubscribeOptions::default()).await.unwrap();

    let (status, body) = http(node.addr, "POST", "/api/disconnect/carl", Some(API_KEY), None).await;
    assert_eq!((status, body), (200, json!({"disconnected": 2})));
    for ws in [carl1, carl2] {
        let end = ws_until_close(ws).await;
        assert_eq!(end.error.as_ref().map(|e| e.0), Some(ErrorCode::Kicked), "{end:?}");
        let (code, reason) = end.close.expect("a close frame");
        assert_eq!(code, close_code(ErrorCode::Kicked));
        assert_eq!(code, 4211);
        assert!(!reason.is_empty());
    }

    // Dave is untouched.
    let (status, _) = publish(node.addr, &json!({"room": "chat:after", "data": "still"})).await;
    assert_eq!(status, 200);
    assert_eq!(&next_message(&mut dave_events).await.payload[..], b"still");
    let p = dave
        .publish("chat:after", &b"me too"[..], PublishOptions::default())
        .await
        .unwrap();
    assert_eq!(p.offset, 2);

    // The Rust client takes a kick as final: it reports it and stops,
    // instead of coming straight back.
    let (erin, mut erin_events) = client(&node.url(), "erin").await;
    let (status, body) = http(node.addr, "POST", "/api/disconnect/erin", Some(API_KEY), None).await;
    assert_eq!((status, body), (200, json!({"disconnected": 1})));
    let code = next_matching(&mut erin_events, |ev| match ev {
        ClientEvent::Disconnected { code, .. } => Some(code),
        _ => None,
    })
    .await;
    assert_eq!(code, ErrorCode::Kicked);
    let rest = tokio::time::timeout(WAIT, async {
        let mut rest = Vec::new();
        while let Some(ev) = erin_events.recv().await {
            rest.push(ev);
        }
        rest
    })
    .await
    .expect("the client stops after a kick");
    assert!(
        !rest.iter().any(|ev| matches!(ev, ClientEvent::Connected { .. })),
        "{rest:?}"
    );
    drop(erin);

    let (status, body) = http(node.addr, "POST", "/api/disconnect/nobody", Some(API_KEY), None).await;
    assert_eq!((status, body), (200, json!({"disconnected": 0})));
    let (status, _) = http(node.addr, "POST", "/api/disconnect/", Some(API_KEY), None).await;
    assert_eq!(status, 400);
    stop(node).await;
}

#[tokio::test]
async fn keep_alive_malformed_requests_and_unknown_routes() {
    let node = api_node();
    let mut conn = HttpConn::open(node.addr).await;
    let a = conn.request("GET", "/health", None, None).await;
    let b = conn.request("GET", "/ready", None, None).await;
    let c = conn
        .request(
            "POST",
            "/api/publish",
            Some(API_KEY),
            Some(r#"{"room":"chat:ka","data":"x"}"#),
        )
        .await;
    assert_eq!((a.status, b.status, c.status), (200, 200, 200));
    assert_eq!(a.header("connection"), None, "kept alive");
    assert_eq!(c.json()["offset"], 1);
    // Pipelined: both requests written at once, answered in order.
    let mut two = request_bytes("GET", "/api/history/chat:ka", Some(API_KEY), None);
    two.extend(request_bytes("GET", "/health", None, None));
    conn.send_raw(&two).await;
    let first = conn.read_response().await;
    assert_eq!((first.status, &first.json()["messages"][0]["data"]), (200, &json!("x")));
    assert_eq!(conn.read_response().await.json(), json!({"status": "ok"}));
    // Connection: close is honoured.
    conn.send_raw(b"GET /health HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        .await;
    let last = conn.read_response().await;
    assert_eq!((last.status, last.header("connection")), (200, Some("close")));
    assert!(conn.closed_by_server().await);

    // A malformed request line gets 400 and a close; the node keeps serving.
    let mut bad = HttpConn::open(node.addr).await;
    bad.send_raw(b"THIS IS NOT HTTP\r\n\r\n").await;
    let resp = bad.read_response().await;
    assert_eq!(resp.status, 400);
    assert_eq!(error_code(&resp.json()), "bad_request");
    assert!(bad.closed_by_server().await);
    let (status, _) = http(node.addr, "GET", "/health", None, None).await;
    assert_eq!(status, 200);

    for (method, path, key, want) in [
        ("GET", "/api/publish", Some(API_KEY), 405),
        ("PUT", "/api/publish", Some(API_KEY), 405),
        ("GET", "/api/notify", Some(API_KEY), 405),
        ("GET", "/nope", None, 404),
        ("GET", "/api/nope", Some(API_KEY), 404),
        ("POST", "/health/x", None, 404),
    ] {
        let (status, body) = http(node.addr, method, path, key, None).await;
        assert_eq!(status, want, "{method} {path}: {body}");
        assert!(body["error"]["code"].is_string(), "{method} {path}: {body}");
    }
    let (status, body) = http(node.addr, "GET", "/api/publish", Some(API_KEY), None).await;
    assert_eq!((status, error_code(&body)), (405, "method_not_allowed"));
}

#[tokio::test]
async fn expect_continue_gets_a_go_ahead_before_the_body() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let node = api_node();
    let body = r#"{"room":"chat:expect","data":"after the go-ahead"}"#;
    let stream = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    let mut reader = tokio::io::BufReader::new(stream);
    let head = format!(
        "POST /api/publish HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {API_KEY}\r\nExpect: 100-continue\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    reader.get_mut().write_all(head.as_bytes()).await.unwrap();
    // curl waits a second for this line before sending the body.
    let mut line = String::new();
    tokio::time::timeout(std::time::Duration::from_millis(500), reader.read_line(&mut line))
        .await
        .expect("100 Continue well before curl's 1 s fallback")
        .unwrap();
    assert_eq!(line, "HTTP/1.1 100 Continue\r\n");
    line.clear();
    reader.read_line(&mut line).await.unwrap();
    assert_eq!(line, "\r\n");
    reader.get_mut().write_all(body.as_bytes()).await.unwrap();
    let mut conn = HttpConn::from_reader(reader);
    let resp = conn.read_response().await;
    assert_eq!((resp.status, &resp.json()["offset"]), (200, &json!(1)));
}

#[tokio::test]
async fn room_and_user_path_parameters_may_be_percent_encoded() {
    let node = api_node();
    let (status, _) = http(
        node.addr,
        "POST",
        "/api/publish",
        Some(API_KEY),
        Some(r#"{"room":"chat:enc","data":"x"}"#),
    )
    .await;
    assert_eq!(status, 200);
    // What encodeURIComponent("chat:enc") produces.
    let (status, body) = http(node.addr, "GET", "/api/history/chat%3Aenc", Some(API_KEY), None).await;
    assert_eq!((status, &body["messages"][0]["data"]), (200, &json!("x")), "{body}");
    let (status, body) = http(node.addr, "GET", "/api/history/chat%FFenc", Some(API_KEY), None).await;
    assert_eq!((status, error_code(&body)), (400, "invalid_room_name"));
    let (_ann, _events) = client(&node.url(), "ann@example.com").await;
    let (status, body) = http(
        node.addr,
        "POST",
        "/api/disconnect/ann%40example.com",
        Some(API_KEY),
        None,
    )
    .await;
    assert_eq!((status, &body["disconnected"]), (200, &json!(1)), "{body}");
}

#[tokio::test]
async fn nothing_after_a_closing_response_is_answered() {
    let node = api_node();
    let mut conn = HttpConn::open(node.addr).await;
    // The first request asks to close; a pipelined second one must not
    // reopen the conversation.
    let mut two = b"GET /health HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".to_vec();
    two.extend(request_bytes("GET", "/ready", None, None));
    conn.send_raw(&two).await;
    let first = conn.read_response().await;
    assert_eq!((first.status, first.header("connection")), (200, Some("close")));
    assert!(
        conn.closed_by_server().await,
        "closed without answering the second request"
    );
    // A refused upgrade closes too, whatever follows it.
    let mut conn = HttpConn::open(node.addr).await;
    let mut bytes = b"GET /elsewhere HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                      Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        .to_vec();
    bytes.extend(request_bytes("GET", "/health", None, None));
    conn.send_raw(&bytes).await;
    assert_eq!(conn.read_response().await.status, 404);
    assert!(conn.closed_by_server().await);
}
