//! Test support: a node on a free loopback port, clients, raw frames, and a
//! TCP proxy whose connections can be cut to simulate a dropped link.

#![allow(dead_code, unreachable_pub)]

pub mod raw;
/// A real `redis-server` (the gateway's own test harness, shared).
#[path = "../../src/cluster/test_redis.rs"]
pub mod redis_server;
pub mod sse;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use herald_gateway::{NodeConfig, NodeHandle};
use herald_protocol::tokio_client::{Client, ClientOptions, Events, ReconnectPolicy};
use herald_protocol::{ClientConfig, ClientEvent};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, watch};

/// Upper bound for any single wait in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn node() -> NodeHandle {
    node_with(NodeConfig::default())
}

pub fn node_with(mut config: NodeConfig) -> NodeHandle {
    if config.listen.port() == 8080 {
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    }
    NodeHandle::spawn(config).expect("node starts")
}

/// A free loopback port: bind 127.0.0.1:0, read the port, release it.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn options(user: &str) -> ClientOptions {
    ClientOptions {
        session: ClientConfig {
            token: user.into(),
            ..ClientConfig::default()
        },
        reconnect: ReconnectPolicy {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
            max_attempts: Some(200),
            seed: Some(7),
        },
        event_capacity: 1024,
    }
}

pub async fn client(url: &str, user: &str) -> (Client, Events) {
    Client::connect(url, options(user)).await.expect("client connects")
}

/// Waits for the first event matching `pick`, skipping others.
pub async fn next_matching<T>(events: &mut Events, mut pick: impl FnMut(ClientEvent) -> Option<T>) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            let ev = events.recv().await.expect("events stream open");
            if let Some(t) = pick(ev) {
                return t;
            }
        }
    })
    .await
    .expect("expected event within the wait bound")
}

/// A TCP proxy to `upstream`; `cut()` drops every proxied connection.
pub struct Proxy {
    pub addr: SocketAddr,
    cut: watch::Sender<u64>,
    upstream: Arc<Mutex<SocketAddr>>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let (cut, cut_rx) = watch::channel(0u64);
        let upstream = Arc::new(Mutex::new(upstream));
        let up = upstream.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let target = *up.lock().await;
                let mut cut_rx = cut_rx.clone();
                // Only cuts after this connection was accepted apply to it.
                cut_rx.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut ri, mut wi) = inbound.into_split();
                    let (mut ro, mut wo) = outbound.into_split();
                    tokio::select! {
                        _ = tokio::io::copy(&mut ri, &mut wo) => {}
                        _ = tokio::io::copy(&mut ro, &mut wi) => {}
                        _ = cut_rx.changed() => {}
                    }
                });
            }
        });
        Proxy { addr, cut, upstream }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    pub async fn retarget(&self, upstream: SocketAddr) {
        *self.upstream.lock().await = upstream;
    }
}

// ---- HTTP/1.1 and raw WebSocket helpers (http_api.rs, auth_jwt.rs) ----------

/// The server API key of [`api_config`] nodes.
pub const API_KEY: &str = "test-api-key-0123456789";

/// A two-shard node with [`API_KEY`] (the port is picked by [`node_with`]).
pub fn api_config() -> NodeConfig {
    NodeConfig {
        shards: 2,
        api_key: API_KEY.into(),
        ..NodeConfig::default()
    }
}

/// One HTTP response read by [`HttpConn`].
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lower-cased, values trimmed.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body text if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("status {}: body is not JSON ({e}): {:?}", self.status, self.text()))
    }
}

/// The bytes of an HTTP/1.1 request (keep-alive; `Content-Length` when a body
/// is given).
pub fn request_bytes(method: &str, path: &str, api_key: Option<&str>, body: Option<&str>) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: herald.test\r\n");
    if let Some(key) = api_key {
        head.push_str(&format!("Authorization: Bearer {key}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body.unwrap_or_default().as_bytes());
    out
}

/// Sum over shards of the `/metrics` samples of `name` whose labels contain
/// `labels`.
pub async fn metric(addr: std::net::SocketAddr, name: &str, labels: &str) -> u64 {
    let resp = HttpConn::open(addr).await.request("GET", "/metrics", None, None).await;
    assert_eq!(resp.status, 200);
    metric_in(&resp.text(), name, labels)
}

/// [`metric`] over a `/metrics` body already fetched.
pub fn metric_in(text: &str, name: &str, labels: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<i64>().unwrap())
        .sum::<i64>()
        .max(0) as u64
}

/// A hand-written HTTP/1.1 client connection over a loopback TCP stream, so
/// the gateway's own HTTP handling is what the tests see (keep-alive,
/// malformed input, status lines).
pub struct HttpConn {
    reader: tokio::io::BufReader<TcpStream>,
}

impl HttpConn {
    pub async fn open(addr: SocketAddr) -> HttpConn {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect within the wait bound")
            .expect("tcp connect");
        HttpConn {
            reader: tokio::io::BufReader::new(stream),
        }
    }

    /// Continues on a connection a test already started by hand.
    pub fn from_reader(reader: tokio::io::BufReader<TcpStream>) -> HttpConn {
        HttpConn { reader }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        tokio::time::timeout(WAIT, self.reader.get_mut().write_all(bytes))
            .await
            .expect("write within the wait bound")
            .expect("write request");
    }

    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        api_key: Option<&str>,
        body: Option<&str>,
    ) -> HttpResponse {
        self.send_raw(&request_bytes(method, path, api_key, body)).await;
        self.read_response().await
    }

    /// Reads one `Content-Length`-framed response.
    pub async fn read_response(&mut self) -> HttpResponse {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt};
        tokio::time::timeout(WAIT, async {
            let mut line = String::new();
            self.reader.read_line(&mut line).await.expect("read status line");
            let mut parts = line.split_whitespace();
            assert_eq!(parts.next(), Some("HTTP/1.1"), "status line {line:?}");
            let status: u16 = parts
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("status line {line:?}"));
            let mut headers = Vec::new();
            loop {
                line.clear();
                self.reader.read_line(&mut line).await.expect("read header");
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                let (name, value) = l.split_once(':').unwrap_or_else(|| panic!("header {l:?}"));
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
            let len: usize = headers
                .iter()
                .find(|(n, _)| n == "content-length")
                .map(|(_, v)| v.parse().expect("numeric content-length"))
                .expect("responses carry Content-Length");
            let mut body = vec![0; len];
            self.reader.read_exact(&mut body).await.expect("read body");
            HttpResponse { status, headers, body }
        })
        .await
        .expect("response within the wait bound")
    }

    /// Whether the server closes the connection (EOF or reset) within the
    /// wait bound without sending anything more.
    pub async fn closed_by_server(&mut self) -> bool {
        use tokio::io::AsyncReadExt;
        let mut byte = [0u8; 1];
        match tokio::time::timeout(WAIT, self.reader.read(&mut byte)).await {
            Ok(Ok(0) | Err(_)) => true,
            Ok(Ok(_)) | Err(_) => false,
        }
    }
}

/// One request on a fresh connection: the status and the JSON body (Null when
/// the body is not JSON).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    api_key: Option<&str>,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let resp = HttpConn::open(addr).await.request(method, path, api_key, body).await;
    let json = serde_json::from_slice(&resp.body).unwrap_or(serde_json::Value::Null);
    (resp.status, json)
}

/// A WebSocket without the herald client on top.
pub type RawWs = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

pub async fn ws_open(url: &str) -> RawWs {
    tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("upgrade within the wait bound")
        .expect("upgrade")
        .0
}

pub fn ws_connect_frame(token: &str) -> bytes::Bytes {
    let mut c = herald_protocol::wire::ConnectT::default();
    c.protocol = Some(herald_protocol::PROTOCOL_VERSION.into());
    c.token = Some(token.into());
    herald_protocol::with_encoder(|e| e.body(1, herald_protocol::wire::BodyT::Connect(Box::new(c))))
}

/// Opens a WebSocket and sends `Connect` with `token`.
pub async fn ws_hello(url: &str, token: &str) -> RawWs {
    use futures_util::SinkExt;
    let mut ws = ws_open(url).await;
    ws.send(tokio_tungstenite::tungstenite::Message::Binary(ws_connect_frame(token)))
        .await
        .expect("send Connect");
    ws
}

/// Whether a frame is the unread count every session gets unasked after
/// `Connected`: a `NotificationsPage` with request id 0 (docs/PROTOCOL.md).
pub fn is_unread_count(request_id: u32, body: &herald_protocol::wire::BodyT) -> bool {
    request_id == 0 && matches!(body, herald_protocol::wire::BodyT::NotificationsPage(_))
}

/// The next binary frame from the server, decoded and unpacked (None once
/// closed), past the unread count a session gets after `Connected` (which
/// arrives whenever the storage service answers): tests about anything else
/// need not expect it. [`ws_next_frame`] returns every frame.
pub async fn ws_next_body(ws: &mut RawWs) -> Option<(u32, herald_protocol::wire::BodyT)> {
    loop {
        match ws_next_frame(ws).await {
            Some((id, body)) if is_unread_count(id, &body) => {}
            other => return other,
        }
    }
}

/// The next binary frame from the server, decoded and unpacked (None once
/// closed).
pub async fn ws_next_frame(ws: &mut RawWs) -> Option<(u32, herald_protocol::wire::BodyT)> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => {
                    let f = herald_protocol::decode(&b, &herald_protocol::DecodeLimits::SERVER_TO_CLIENT)
                        .expect("server frames are valid");
                    return Some((f.request_id(), f.unpack().body));
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .expect("frame within the wait bound")
}

/// Connects with `token` and returns the socket and the user id the server
/// accepted; panics unless the first frame is `Connected`.
pub async fn ws_connected(url: &str, token: &str) -> (RawWs, String) {
    let mut ws = ws_hello(url, token).await;
    match ws_next_body(&mut ws).await {
        Some((_, herald_protocol::wire::BodyT::Connected(c))) => {
            let user = c.user_id.clone().unwrap_or_default();
            (ws, user)
        }
        other => panic!("expected Connected, got {other:?}"),
    }
}

/// How a server ended a WebSocket: the last herald `Error` frame and the
/// close frame's code and reason.
#[derive(Debug, Default)]
pub struct WsEnd {
    pub error: Option<(herald_protocol::ErrorCode, String)>,
    /// The request id of that `Error` frame.
    pub error_request_id: Option<u32>,
    pub close: Option<(u16, String)>,
}

/// Reads until the server closes (bounded by [`WAIT`]), completes the closing
/// handshake and drops the socket.
pub async fn ws_until_close(mut ws: RawWs) -> WsEnd {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut end = WsEnd::default();
    tokio::time::timeout(WAIT, async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Binary(b)) => {
                    let f = herald_protocol::decode(&b, &herald_protocol::DecodeLimits::SERVER_TO_CLIENT)
                        .expect("server frames are valid");
                    if let Some(e) = f.body_as_error() {
                        end.error = Some((e.code(), e.message().unwrap_or_default().to_owned()));
                        end.error_request_id = Some(f.request_id());
                    }
                }
                Ok(Message::Close(c)) => {
                    end.close = c.map(|c| (u16::from(c.code), c.reason.to_string()));
                    // Finish the closing handshake so the server can let go.
                    while let Some(Ok(_)) = ws.next().await {}
                    return;
                }
                Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("server closes within the wait bound");
    end
}

/// Shuts `node` down on a blocking thread, so that this runtime's clients can
/// answer the GoAway meanwhile (dropping a node inline blocks the runtime's
/// thread, and each client still open then costs the 2 s close linger).
pub async fn stop(node: NodeHandle) {
    tokio::time::timeout(WAIT, tokio::task::spawn_blocking(move || node.shutdown()))
        .await
        .expect("node stops within the wait bound")
        .expect("shutdown thread");
}

// ---- raw WebSocket requests (limits.rs, presence_typing.rs, rooms_fanout.rs) -

/// Sends one encoded herald frame on a raw WebSocket.
pub async fn ws_send_frame(ws: &mut RawWs, frame: bytes::Bytes) {
    use futures_util::SinkExt;
    tokio::time::timeout(WAIT, ws.send(tokio_tungstenite::tungstenite::Message::Binary(frame)))
        .await
        .expect("send within the wait bound")
        .expect("send frame");
}

/// Sends `body` with `request_id` on a raw WebSocket.
pub async fn ws_send_body(ws: &mut RawWs, request_id: u32, body: herald_protocol::wire::BodyT) {
    ws_send_frame(ws, herald_protocol::with_encoder(|e| e.body(request_id, body))).await;
}

/// A `Subscribe` body.
pub fn subscribe_body(room: &str, history: u32, presence: bool) -> herald_protocol::wire::BodyT {
    let mut s = herald_protocol::wire::SubscribeT::default();
    s.room = room.into();
    s.history = history;
    s.presence = presence;
    herald_protocol::wire::BodyT::Subscribe(Box::new(s))
}

/// An encoded `Publish` frame (stored, no idempotency key).
pub fn publish_frame(request_id: u32, room: &str, payload: &[u8]) -> bytes::Bytes {
    herald_protocol::with_encoder(|e| {
        e.publish(
            request_id,
            &herald_protocol::PublishRef {
                room,
                payload,
                ..herald_protocol::PublishRef::default()
            },
        )
    })
}

/// The next frame that is not a heartbeat `Ping` (None once closed).
pub async fn ws_next_non_ping(ws: &mut RawWs) -> Option<(u32, herald_protocol::wire::BodyT)> {
    loop {
        match ws_next_body(ws).await {
            Some((_, herald_protocol::wire::BodyT::Ping(_))) => {}
            other => return other,
        }
    }
}

/// Subscribes a raw WebSocket and waits for `Subscribed`; returns it. Panics
/// on any other frame first.
pub async fn ws_subscribe(
    ws: &mut RawWs,
    request_id: u32,
    room: &str,
    presence: bool,
) -> Box<herald_protocol::wire::SubscribedT> {
    ws_send_body(ws, request_id, subscribe_body(room, 0, presence)).await;
    match ws_next_non_ping(ws).await {
        Some((id, herald_protocol::wire::BodyT::Subscribed(s))) if id == request_id => s,
        other => panic!("expected Subscribed for {room}, got {other:?}"),
    }
}

/// Asserts that the server refused a client request with `code`.
pub fn assert_refused(err: &herald_protocol::tokio_client::ClientError, code: herald_protocol::ErrorCode) {
    assert!(
        matches!(err, herald_protocol::tokio_client::ClientError::Server { code: c, .. } if *c == code),
        "expected {code:?}, got {err:?}"
    );
}

// ---- a node in its own process (memory.rs) -----------------------------------

/// A `herald serve` child process on a free loopback port, killed on drop.
/// Its memory is its own, so tests can measure what a client makes the node
/// hold (an in-process node shares the test process's RSS with every other
/// test running beside it).
pub struct NodeProcess {
    pub addr: SocketAddr,
    child: std::process::Child,
}

impl NodeProcess {
    /// Starts `herald serve` with `args` (after `--listen` and `--shards`)
    /// and waits for `/health`.
    pub async fn start(shards: usize, args: &[&str]) -> NodeProcess {
        let port = free_port();
        let data_dir = std::env::temp_dir().join(format!("herald-test-{}-{port}", std::process::id()));
        Self::start_at(port, shards, &data_dir, args).await
    }

    /// [`start`](Self::start) on `port` with `data_dir` (a restart on the
    /// same directory finds what the last process stored).
    pub async fn start_at(port: u16, shards: usize, data_dir: &std::path::Path, args: &[&str]) -> NodeProcess {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_herald"));
        cmd.args(["serve", "--listen", &addr.to_string(), "--shards", &shards.to_string()])
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        for (k, _) in std::env::vars() {
            if k.starts_with("HERALD_") {
                cmd.env_remove(k);
            }
        }
        let mut node = NodeProcess {
            addr,
            child: cmd.spawn().expect("herald starts"),
        };
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            assert!(node.child.try_wait().unwrap().is_none(), "herald exited early");
            assert!(std::time::Instant::now() < deadline, "herald answers /health in time");
            if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await {
                let mut conn = HttpConn {
                    reader: tokio::io::BufReader::new(s),
                };
                if conn.request("GET", "/health", None, None).await.status == 200 {
                    return node;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The node's resident memory, in bytes.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("/proc status");
        let kb: u64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .expect("VmRSS");
        kb * 1024
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// SIGKILL: no drain, no final sync.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
