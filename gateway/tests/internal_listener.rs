//! With an internal listener, `/metrics` and the server API are served
//! there only; clients keep `/ws`, `/health` and `/ready` on the public
//! listener. Without one, everything is on the public listener (the
//! development default).

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod support;

use std::net::SocketAddr;

use herald_gateway::NodeConfig;
use herald_protocol::SubscribeOptions;
use support::{API_KEY, HttpConn, NodeProcess, client, http};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const PUBLISH: &str = r#"{"room":"chat:ops","data":"from the backend"}"#;

#[tokio::test]
async fn operator_routes_live_on_the_internal_listener_only() {
    let node = support::node_with(NodeConfig {
        internal_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..support::api_config()
    });
    let public = node.addr;
    let internal = node.internal_addr.expect("bound");
    assert_ne!(public, internal);
    assert_eq!(node.operator_addr(), internal);

    for path in ["/health", "/ready"] {
        assert_eq!(http(public, "GET", path, None, None).await.0, 200, "public {path}");
        assert_eq!(http(internal, "GET", path, None, None).await.0, 200, "internal {path}");
    }
    assert_eq!(http(public, "GET", "/metrics", None, None).await.0, 404);
    assert_eq!(
        http(public, "POST", "/api/publish", Some(API_KEY), Some(PUBLISH))
            .await
            .0,
        404
    );
    assert_eq!(http(internal, "GET", "/metrics", None, None).await.0, 200);

    // A client on the public listener gets what the backend publishes on
    // the internal one.
    let (c, mut events) = client(&node.url(), "ann").await;
    c.subscribe("chat:ops", SubscribeOptions::default()).await.unwrap();
    let (status, body) = http(internal, "POST", "/api/publish", Some(API_KEY), Some(PUBLISH)).await;
    assert_eq!(status, 200, "{body}");
    let d = support::next_matching(&mut events, |ev| match ev {
        herald_protocol::ClientEvent::Message(d) => Some(d),
        _ => None,
    })
    .await;
    assert_eq!(&d.payload[..], b"from the backend");

    // WebSocket clients do not upgrade on the internal listener.
    let mut conn = HttpConn::open(internal).await;
    conn.send_raw(
        b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    assert_eq!(conn.read_response().await.status, 404);
}

#[tokio::test]
async fn without_an_internal_listener_everything_is_public() {
    let node = support::node_with(support::api_config());
    assert_eq!(node.internal_addr, None);
    assert_eq!(http(node.addr, "GET", "/metrics", None, None).await.0, 200);
    assert_eq!(
        http(node.addr, "POST", "/api/publish", Some(API_KEY), Some(PUBLISH))
            .await
            .0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_takes_internal_listen_as_a_flag() {
    let internal = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let node = NodeProcess::start(1, &["--internal-listen", &internal.to_string()]).await;
    assert_eq!(http(node.addr, "GET", "/metrics", None, None).await.0, 404);
    let (status, _) = http(internal, "GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
}
