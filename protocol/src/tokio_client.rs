//! An async Herald client over WebSocket for Rust applications (feature
//! `client`).
//!
//! [`Client::connect`] opens a connection and returns a cloneable [`Client`]
//! handle plus an [`Events`] stream. A background task drives a
//! [`ClientSession`] over tokio-tungstenite and, when the link drops,
//! reconnects with exponential backoff and jitter, resumes every room from its
//! last (epoch, offset) and resends unacknowledged publishes (with their
//! idempotency keys). Read the events stream: it is bounded, and the
//! background task waits for room in it rather than dropping events.
//!
//! ```no_run
//! use herald_protocol::tokio_client::{Client, ClientOptions};
//! use herald_protocol::{ClientConfig, ClientEvent, PublishOptions, SubscribeOptions};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let options = ClientOptions {
//!     session: ClientConfig { token: "alice".into(), ..ClientConfig::default() },
//!     ..ClientOptions::default()
//! };
//! let (client, mut events) = Client::connect("ws://127.0.0.1:8080/ws", options).await?;
//! client.subscribe("chat:lobby", SubscribeOptions::default()).await?;
//! let position = client.publish("chat:lobby", &b"hello"[..], PublishOptions::default()).await?;
//! println!("stored at offset {}", position.offset);
//! while let Some(event) = events.recv().await {
//!     if let ClientEvent::Message(m) = event {
//!         println!("{} says {:?}", m.publisher, m.payload);
//!     }
//! }
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::wire::{self, BodyT};
use crate::{ClientConfig, ClientEvent, ClientSession, ErrorCode, Position, PublishOptions, SubscribeOptions};

/// Reconnect backoff: `initial * 2^attempt`, capped at `max`, each delay
/// multiplied by a random factor in [0.5, 1.0) so that clients dropped
/// together do not reconnect together.
#[derive(Debug, Clone)]
pub struct ReconnectPolicy {
    /// First delay. Default 100 ms.
    pub initial: Duration,
    /// Longest delay. Default 10 s.
    pub max: Duration,
    /// Give up after this many consecutive failed attempts (None: never).
    pub max_attempts: Option<u32>,
    /// Seed for the jitter (None: random).
    pub seed: Option<u64>,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            max_attempts: None,
            seed: None,
        }
    }
}

impl ReconnectPolicy {
    /// The delay before reconnect attempt `attempt` (0-based).
    pub fn delay(&self, attempt: u32, rng: &mut fastrand::Rng) -> Duration {
        let base = self.initial.saturating_mul(1u32 << attempt.min(20)).min(self.max);
        base.mul_f64(0.5 + rng.f64() * 0.5)
    }
}

/// Options of the async client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Session settings (token, timeouts, limits).
    pub session: ClientConfig,
    /// Reconnect behaviour.
    pub reconnect: ReconnectPolicy,
    /// Capacity of the events channel. Default 1024.
    pub event_capacity: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            session: ClientConfig::default(),
            reconnect: ReconnectPolicy::default(),
            event_capacity: 1024,
        }
    }
}

/// Errors of the async client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The WebSocket connection could not be opened or failed.
    #[error("websocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    /// The server refused a request or closed the connection.
    #[error("{code:?}: {message}")]
    Server {
        /// Error code.
        code: ErrorCode,
        /// Detail.
        message: String,
    },
    /// The client was closed (or gave up reconnecting).
    #[error("client closed")]
    Closed,
}

/// Result of a subscribe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Room epoch.
    pub epoch: u64,
    /// Latest room offset.
    pub offset: u64,
}

enum Command {
    Subscribe(
        String,
        SubscribeOptions,
        oneshot::Sender<Result<Subscription, ClientError>>,
    ),
    Unsubscribe(String),
    Publish(
        String,
        Bytes,
        PublishOptions,
        oneshot::Sender<Result<Position, ClientError>>,
    ),
    Typing(String, bool),
    /// Any other request; answered with the answer's body (None for a
    /// `Reply{Ok}`).
    Request(BodyT, oneshot::Sender<Result<Option<BodyT>, ClientError>>),
    Close,
}

/// A page of the user's notifications ([`Client::notifications`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotificationsQuery {
    /// Only unread ones. Default true.
    pub unread_only: bool,
    /// Only ids below this one (0: from the newest).
    pub before_id: u64,
    /// At most this many (the server caps it). Default 50.
    pub limit: u32,
}

impl Default for NotificationsQuery {
    fn default() -> Self {
        Self {
            unread_only: true,
            before_id: 0,
            limit: 50,
        }
    }
}

/// Handle to a connection; cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

/// Stream of [`ClientEvent`]s (messages, presence, reconnects...).
#[derive(Debug)]
pub struct Events {
    rx: mpsc::Receiver<ClientEvent>,
}

impl Events {
    /// The next event; None once the client is closed.
    pub async fn recv(&mut self) -> Option<ClientEvent> {
        self.rx.recv().await
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn ws_config(session: &ClientConfig) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(session.decode.max_frame_bytes))
        .max_frame_size(Some(session.decode.max_frame_bytes))
}

async fn open(url: &str, session: &ClientConfig) -> Result<Ws, ClientError> {
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(ws_config(session)), true).await?;
    Ok(ws)
}

impl Client {
    /// Connects to `url` (e.g. `ws://127.0.0.1:8080/ws`) and waits for the
    /// server to accept the session. Only this first connection's failure is
    /// returned; later drops are retried per `options.reconnect`.
    pub async fn connect(url: &str, mut options: ClientOptions) -> Result<(Client, Events), ClientError> {
        let mut rng = options
            .reconnect
            .seed
            .map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed);
        if options.session.idempotency_prefix == ClientConfig::default().idempotency_prefix {
            options.session.idempotency_prefix = format!("{:016x}", rng.u64(..));
        }
        let mut ws = open(url, &options.session).await?;
        let mut session = ClientSession::new(options.session.clone(), Instant::now());
        session.connect(Instant::now());
        // Handshake inline, so a refused token is this call's error.
        flush(&mut session, &mut ws).await?;
        let mut early = Vec::new();
        loop {
            let deadline = session
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(10));
            tokio::select! {
                msg = ws.next() => match msg {
                    Some(Ok(WsMessage::Binary(b))) => { let _ = session.handle_frame(Instant::now(), b); }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err(ClientError::Closed),
                },
                _ = tokio::time::sleep_until(deadline.into()) => session.handle_timeout(Instant::now()),
            }
            flush(&mut session, &mut ws).await?;
            while let Some(ev) = session.poll_event() {
                match ev {
                    ClientEvent::Disconnected { code, reason } => {
                        return Err(ClientError::Server { code, message: reason });
                    }
                    ClientEvent::Connected { .. } => {
                        early.push(ev);
                        let (tx, rx) = mpsc::channel(64);
                        let (etx, erx) = mpsc::channel(options.event_capacity.max(1));
                        for ev in early.drain(..) {
                            let _ = etx.try_send(ev);
                        }
                        let driver = Driver {
                            url: url.to_owned(),
                            options,
                            session,
                            rng,
                            commands: rx,
                            events: etx,
                            publish_waiters: HashMap::new(),
                            subscribe_waiters: HashMap::new(),
                            request_waiters: HashMap::new(),
                        };
                        tokio::spawn(driver.run(Some(ws)));
                        return Ok((Client { commands: tx }, Events { rx: erx }));
                    }
                    other => early.push(other),
                }
            }
        }
    }

    /// Subscribes to a room and waits until the server confirms.
    pub async fn subscribe(&self, room: &str, options: SubscribeOptions) -> Result<Subscription, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Subscribe(room.to_owned(), options, tx)).await?;
        rx.await.map_err(|_| ClientError::Closed)?
    }

    /// Leaves a room.
    pub async fn unsubscribe(&self, room: &str) -> Result<(), ClientError> {
        self.send(Command::Unsubscribe(room.to_owned())).await
    }

    /// Publishes and waits for the acknowledgement (the stored position;
    /// offset 0 for volatile publishes).
    pub async fn publish(
        &self,
        room: &str,
        payload: impl Into<Bytes>,
        options: PublishOptions,
    ) -> Result<Position, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Publish(room.to_owned(), payload.into(), options, tx))
            .await?;
        rx.await.map_err(|_| ClientError::Closed)?
    }

    /// Sends a typing indicator.
    pub async fn typing(&self, room: &str, active: bool) -> Result<(), ClientError> {
        self.send(Command::Typing(room.to_owned(), active)).await
    }

    /// A page of the user's notifications, newest first, with the unread
    /// count. The user is the one the token names: a session only ever
    /// sees its own inbox.
    pub async fn notifications(&self, query: NotificationsQuery) -> Result<wire::NotificationsPageT, ClientError> {
        let q = wire::NotificationsQueryT {
            unread_only: query.unread_only,
            before_id: query.before_id,
            limit: query.limit,
        };
        match self.request(BodyT::NotificationsQuery(Box::new(q))).await? {
            Some(BodyT::NotificationsPage(p)) => Ok(*p),
            other => Err(unexpected(other)),
        }
    }

    /// Marks the user's notifications read: `ids`, and every one with id <=
    /// `up_to` (0: none).
    pub async fn mark_read(&self, ids: Vec<u64>, up_to: u64) -> Result<(), ClientError> {
        let m = wire::NotificationsMarkReadT { ids: Some(ids), up_to };
        self.request(BodyT::NotificationsMarkRead(Box::new(m))).await.map(drop)
    }

    /// Records an analytics event and waits until the node stored it.
    pub async fn track(&self, name: &str, value: f64, dimensions: &[(&str, &str)]) -> Result<(), ClientError> {
        let dimensions = dimensions
            .iter()
            .map(|&(k, v)| wire::KeyValueT {
                key: k.to_owned(),
                value: Some(v.to_owned()),
            })
            .collect();
        let e = wire::AnalyticsEventT {
            name: name.to_owned(),
            value,
            dimensions: Some(dimensions),
        };
        self.request(BodyT::AnalyticsEvent(Box::new(e))).await.map(drop)
    }

    /// Sends a request and waits for its answer's body (None for `Reply{Ok}`;
    /// an error `Reply` is [`ClientError::Server`]). While disconnected it
    /// fails at once with `Unavailable`.
    pub async fn request(&self, body: BodyT) -> Result<Option<BodyT>, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Request(body, tx)).await?;
        rx.await.map_err(|_| ClientError::Closed)?
    }

    /// Closes the connection; pending requests fail with `Closed`.
    pub async fn close(&self) {
        let _ = self.commands.send(Command::Close).await;
    }

    async fn send(&self, cmd: Command) -> Result<(), ClientError> {
        self.commands.send(cmd).await.map_err(|_| ClientError::Closed)
    }
}

fn unexpected(body: Option<BodyT>) -> ClientError {
    let what = body
        .map(|b| wire::Body::variant_name(b.body_type()).unwrap_or("an unknown body"))
        .unwrap_or("Reply");
    ClientError::Server {
        code: ErrorCode::MalformedFrame,
        message: format!("unexpected answer: {what}"),
    }
}

async fn flush(session: &mut ClientSession, ws: &mut Ws) -> Result<(), ClientError> {
    let mut any = false;
    while let Some(frame) = session.poll_transmit() {
        ws.feed(WsMessage::Binary(frame)).await?;
        any = true;
    }
    if any {
        ws.flush().await?;
    }
    Ok(())
}

struct Driver {
    url: String,
    options: ClientOptions,
    session: ClientSession,
    rng: fastrand::Rng,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<ClientEvent>,
    publish_waiters: HashMap<u32, oneshot::Sender<Result<Position, ClientError>>>,
    subscribe_waiters: HashMap<String, Vec<oneshot::Sender<Result<Subscription, ClientError>>>>,
    request_waiters: HashMap<u32, oneshot::Sender<Result<Option<BodyT>, ClientError>>>,
}

enum Exit {
    Reconnect(Option<Duration>),
    Close,
}

impl Driver {
    async fn run(mut self, mut ws: Option<Ws>) {
        let mut attempt = 0u32;
        let mut next_delay: Option<Duration> = None;
        loop {
            let conn = match ws.take() {
                Some(ws) => Some(ws),
                None => {
                    let delay = next_delay
                        .take()
                        .unwrap_or_else(|| self.options.reconnect.delay(attempt, &mut self.rng));
                    if !self.wait_commands(delay).await {
                        break;
                    }
                    match open(&self.url, &self.options.session).await {
                        Ok(ws) => {
                            self.session.connect(Instant::now());
                            Some(ws)
                        }
                        Err(_) => None,
                    }
                }
            };
            let Some(conn) = conn else {
                attempt += 1;
                if self.options.reconnect.max_attempts.is_some_and(|m| attempt >= m) {
                    break;
                }
                continue;
            };
            let (exit, connected) = self.drive(conn).await;
            match exit {
                Exit::Close => break,
                Exit::Reconnect(after) => next_delay = after,
            }
            // A connection that never reached Connected counts as a failed
            // attempt, so refused handshakes back off and can give up.
            attempt = if connected { 0 } else { attempt + 1 };
            if self.options.reconnect.max_attempts.is_some_and(|m| attempt >= m) {
                break;
            }
        }
        self.fail_all();
    }

    /// Sleeps for `delay` while still applying commands (they queue in the
    /// session). Returns false if the client was closed.
    async fn wait_commands(&mut self, delay: Duration) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return true,
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Close) | None => return false,
                    Some(cmd) => self.apply(cmd),
                },
            }
        }
    }

    /// Runs one transport connection until it ends; returns how to go on and
    /// whether the session reached `Connected` on it.
    async fn drive(&mut self, mut ws: Ws) -> (Exit, bool) {
        let mut connected = false;
        loop {
            if flush(&mut self.session, &mut ws).await.is_err() {
                self.session.handle_disconnect(ErrorCode::Unavailable, "write failed");
            }
            let mut exit = None;
            let mut going_away = None;
            while let Some(ev) = self.session.poll_event() {
                match &ev {
                    ClientEvent::Connected { .. } => connected = true,
                    ClientEvent::GoAway {
                        code,
                        reason,
                        reconnect_after,
                    } => {
                        going_away = Some((*code, reason.clone()));
                        exit = Some(match reconnect_after {
                            Some(d) => Exit::Reconnect(Some(d.mul_f64(1.0 + self.rng.f64() * 0.5))),
                            None => Exit::Close,
                        });
                    }
                    ClientEvent::Disconnected { code, .. } => {
                        // Retrying cannot fix these: the application must
                        // change the token or the client; and a kick by the
                        // server means stay away (docs/PROTOCOL.md §6).
                        let hopeless = matches!(
                            *code,
                            ErrorCode::AuthFailed
                                | ErrorCode::TokenExpired
                                | ErrorCode::UnsupportedVersion
                                | ErrorCode::Kicked
                        );
                        exit.get_or_insert(if hopeless { Exit::Close } else { Exit::Reconnect(None) });
                    }
                    _ => {}
                }
                self.route(&ev);
                // If nobody listens any more, keep serving command callers.
                let _ = self.events.send(ev).await;
            }
            if let Some(exit) = exit {
                let _ = ws.close(None).await;
                if let Some((code, reason)) = going_away {
                    self.session.handle_disconnect(code, &reason);
                    while let Some(ev) = self.session.poll_event() {
                        self.route(&ev);
                        let _ = self.events.send(ev).await;
                    }
                }
                return (exit, connected);
            }
            let deadline = self
                .session
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                msg = ws.next() => match msg {
                    Some(Ok(WsMessage::Binary(b))) => { let _ = self.session.handle_frame(Instant::now(), b); }
                    Some(Ok(WsMessage::Close(_))) | None => {
                        self.session.handle_disconnect(ErrorCode::Unavailable, "connection closed");
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => self.session.handle_disconnect(ErrorCode::Unavailable, &e.to_string()),
                },
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Close) | None => {
                        let _ = ws.close(None).await;
                        return (Exit::Close, connected);
                    }
                    Some(cmd) => self.apply(cmd),
                },
                _ = tokio::time::sleep_until(deadline.into()) => self.session.handle_timeout(Instant::now()),
            }
        }
    }

    fn apply(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::Subscribe(room, opts, reply) => {
                self.subscribe_waiters.entry(room.clone()).or_default().push(reply);
                self.session.subscribe(now, &room, opts);
            }
            Command::Unsubscribe(room) => {
                let _ = self.session.unsubscribe(now, &room);
            }
            Command::Publish(room, payload, opts, reply) => {
                let id = self.session.publish(now, &room, &payload, opts);
                self.publish_waiters.insert(id, reply);
            }
            Command::Typing(room, active) => self.session.typing(&room, active),
            Command::Request(body, reply) => match self.session.request(now, body) {
                Some(id) => {
                    self.request_waiters.insert(id, reply);
                }
                None => {
                    let _ = reply.send(Err(ClientError::Server {
                        code: ErrorCode::Unavailable,
                        message: "not connected".into(),
                    }));
                }
            },
            Command::Close => {}
        }
    }

    fn route(&mut self, ev: &ClientEvent) {
        match ev {
            ClientEvent::Published { request_id, position } => {
                if let Some(w) = self.publish_waiters.remove(request_id) {
                    let _ = w.send(Ok(*position));
                }
            }
            ClientEvent::PublishFailed {
                request_id,
                code,
                message,
            } => {
                if let Some(w) = self.publish_waiters.remove(request_id) {
                    let _ = w.send(Err(ClientError::Server {
                        code: *code,
                        message: message.clone(),
                    }));
                }
            }
            ClientEvent::Subscribed {
                room, epoch, offset, ..
            } => {
                for w in self.subscribe_waiters.remove(room).unwrap_or_default() {
                    let _ = w.send(Ok(Subscription {
                        epoch: *epoch,
                        offset: *offset,
                    }));
                }
            }
            ClientEvent::SubscribeFailed { room, code, message } => {
                for w in self.subscribe_waiters.remove(room).unwrap_or_default() {
                    let _ = w.send(Err(ClientError::Server {
                        code: *code,
                        message: message.clone(),
                    }));
                }
            }
            ClientEvent::Reply {
                request_id,
                code,
                message,
            } => {
                if let Some(w) = self.request_waiters.remove(request_id) {
                    let _ = w.send(if *code == ErrorCode::Ok {
                        Ok(None)
                    } else {
                        Err(ClientError::Server {
                            code: *code,
                            message: message.clone(),
                        })
                    });
                }
            }
            ClientEvent::Frame { request_id, body } if *request_id != 0 => {
                if let Some(w) = self.request_waiters.remove(request_id) {
                    let _ = w.send(Ok(Some(body.clone())));
                }
            }
            _ => {}
        }
    }

    fn fail_all(&mut self) {
        for (_, w) in self.publish_waiters.drain() {
            let _ = w.send(Err(ClientError::Closed));
        }
        for (_, ws) in self.subscribe_waiters.drain() {
            for w in ws {
                let _ = w.send(Err(ClientError::Closed));
            }
        }
        for (_, w) in self.request_waiters.drain() {
            let _ = w.send(Err(ClientError::Closed));
        }
    }
}
