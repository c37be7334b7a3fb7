//! What browsers meet: allowed origins on the WebSocket upgrade, SSE and the
//! HTTP API (with CORS preflights and headers), the `herald.v1` subprotocol
//! named back only when offered (other offers, and permessage-deflate,
//! declined by leaving them out), and the development directory at `/app/`.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod support;

use herald_gateway::{AllowedOrigins, NodeConfig};
use support::raw::{Peer, one_shard_with, request};
use support::{API_KEY, stop};

const GOOD_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn restricted() -> NodeConfig {
    NodeConfig {
        allowed_origins: AllowedOrigins::List(vec!["https://app.example.com".into()]),
        api_key: API_KEY.into(),
        ..NodeConfig::default()
    }
}

fn upgrade(extra: &[&str]) -> String {
    let mut headers = vec![
        "Host: herald.test",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Version: 13",
    ];
    let key = format!("Sec-WebSocket-Key: {GOOD_KEY}");
    headers.push(&key);
    headers.extend_from_slice(extra);
    request("GET /ws HTTP/1.1", &headers)
}

fn answer(node: &herald_gateway::NodeHandle, req: &str) -> support::raw::HttpResponse {
    let mut p = Peer::connect(node.addr);
    p.send(req.as_bytes()).unwrap();
    p.read_response().unwrap()
}

#[tokio::test]
async fn pages_from_other_origins_are_refused_on_every_entrance() {
    let node = one_shard_with(restricted());
    for origin in ["https://evil.example", "http://app.example.com", "null"] {
        let o = format!("Origin: {origin}");
        let ws = answer(&node, &upgrade(&[&o]));
        assert_eq!(ws.status, 403, "upgrade from {origin}: {}", ws.show());
        assert!(ws.text().contains("forbidden_origin"));
        let sse = answer(
            &node,
            &request("GET /sse?room=chat:a&token=ann HTTP/1.1", &["Host: herald.test", &o]),
        );
        assert_eq!(sse.status, 403, "SSE from {origin}");
        let auth = format!("Authorization: Bearer {API_KEY}");
        let api = answer(
            &node,
            &request("GET /api/rooms HTTP/1.1", &["Host: herald.test", &o, &auth]),
        );
        assert_eq!(api.status, 403, "API from {origin}");
        let pre = answer(
            &node,
            &request(
                "OPTIONS /api/publish HTTP/1.1",
                &["Host: herald.test", &o, "Access-Control-Request-Method: POST"],
            ),
        );
        assert_eq!(pre.status, 403, "preflight from {origin}");
        assert!(pre.header("access-control-allow-origin").is_none());
    }
    stop(node).await;
}

#[tokio::test]
async fn allowed_and_same_origin_pages_and_non_browser_clients_get_in() {
    let node = one_shard_with(restricted());
    let allowed = "Origin: https://app.example.com";
    for origin in [Some(allowed), Some("Origin: http://herald.test"), None] {
        let extra: Vec<&str> = origin.into_iter().collect();
        let ws = answer(&node, &upgrade(&extra));
        assert_eq!(ws.status, 101, "{origin:?}: {}", ws.show());
    }
    // The API answers an allowed page with CORS headers.
    let auth = format!("Authorization: Bearer {API_KEY}");
    let api = answer(
        &node,
        &request("GET /api/rooms HTTP/1.1", &["Host: herald.test", allowed, &auth]),
    );
    assert_eq!(api.status, 200, "{}", api.show());
    assert_eq!(
        api.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert!(api.has_token("vary", "Origin"));
    // A same-origin page needs none.
    let same = answer(
        &node,
        &request(
            "GET /api/rooms HTTP/1.1",
            &["Host: herald.test", "Origin: http://herald.test", &auth],
        ),
    );
    assert_eq!(same.status, 200);
    assert!(same.header("access-control-allow-origin").is_none());
    // The preflight of a POST with a JSON body and a bearer token.
    let mut p = Peer::connect(node.addr);
    p.send(
        request(
            "OPTIONS /api/publish HTTP/1.1",
            &[
                "Host: herald.test",
                allowed,
                "Access-Control-Request-Method: POST",
                "Access-Control-Request-Headers: authorization, content-type",
            ],
        )
        .as_bytes(),
    )
    .unwrap();
    let pre = p.read_response().unwrap();
    assert_eq!(pre.status, 204, "{}", pre.show());
    assert_eq!(
        pre.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert!(pre.has_token("access-control-allow-methods", "POST"));
    assert!(pre.has_token("access-control-allow-headers", "Authorization"));
    assert!(pre.has_token("access-control-allow-headers", "Content-Type"));
    assert!(pre.header("content-length").is_none(), "a 204 has no body length");
    // The connection goes on after a preflight, like any keep-alive answer.
    p.send(request("GET /health HTTP/1.1", &["Host: herald.test"]).as_bytes())
        .unwrap();
    assert_eq!(p.read_response().unwrap().status, 200);
    // An SSE stream to an allowed page carries the CORS headers for
    // `withCredentials`.
    let mut p = Peer::connect(node.addr);
    p.send(
        request(
            "GET /sse?room=chat:a&token=ann HTTP/1.1",
            &["Host: herald.test", allowed],
        )
        .as_bytes(),
    )
    .unwrap();
    let sse = p.read_response_head().unwrap();
    assert_eq!(sse.status, 200, "{}", sse.show());
    assert_eq!(
        sse.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(sse.header("access-control-allow-credentials"), Some("true"));
    stop(node).await;
}

#[tokio::test]
async fn a_development_node_takes_pages_from_anywhere() {
    let node = one_shard_with(NodeConfig::default());
    let ws = answer(&node, &upgrade(&["Origin: https://anything.example"]));
    assert_eq!(ws.status, 101);
    stop(node).await;
}

#[tokio::test]
async fn the_subprotocol_is_named_back_only_when_offered() {
    let node = one_shard_with(NodeConfig::default());
    let cases: [(&[&str], Option<&str>); 5] = [
        (&[], None),
        (&["Sec-WebSocket-Protocol: herald.v1"], Some("herald.v1")),
        (&["Sec-WebSocket-Protocol: chat, herald.v1"], Some("herald.v1")),
        // Offers we do not speak are declined by naming none.
        (&["Sec-WebSocket-Protocol: mqtt"], None),
        // What Chromium and Firefox offer on every socket.
        (
            &["Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"],
            None,
        ),
    ];
    for (extra, want) in cases {
        let r = answer(&node, &upgrade(extra));
        assert_eq!(r.status, 101, "{extra:?}");
        assert_eq!(r.header("sec-websocket-protocol"), want, "{extra:?}");
        assert!(r.header("sec-websocket-extensions").is_none(), "{extra:?}");
    }
    stop(node).await;
}

#[tokio::test]
async fn the_app_directory_serves_files_inside_it_and_nothing_else() {
    let dir = std::env::temp_dir().join(format!("herald-app-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "<h1>chat</h1>").unwrap();
    std::fs::write(dir.join("app.js"), "export {}").unwrap();
    let node = one_shard_with(NodeConfig {
        static_dir: Some(dir.clone()),
        ..NodeConfig::default()
    });
    let get = |target: &str| {
        answer(
            &node,
            &request(&format!("GET {target} HTTP/1.1"), &["Host: herald.test"]),
        )
    };
    let index = get("/app/");
    assert_eq!((index.status, index.text().as_str()), (200, "<h1>chat</h1>"));
    assert_eq!(index.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(
        get("/app/app.js").header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(get("/app").status, 301);
    for bad in ["/app/../Cargo.toml", "/app/%2e%2e/%2e%2e/etc/passwd", "/app/nope.js"] {
        assert_eq!(get(bad).status, 404, "{bad}");
    }
    stop(node).await;
    // Without a directory configured there is no /app/.
    let node = one_shard_with(NodeConfig::default());
    let r = answer(&node, &request("GET /app/ HTTP/1.1", &["Host: herald.test"]));
    assert_eq!(r.status, 404);
    stop(node).await;
    std::fs::remove_dir_all(&dir).unwrap();
}
