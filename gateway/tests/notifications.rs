//! Durable notifications: `POST /api/notify` stores first and only then
//! delivers live and answers; the inbox pages newest first over WebSocket
//! (`NotificationsQuery`) and HTTP, marks read by ids, `up_to` or all, and
//! a session learns its unread count when it connects. A user only ever
//! reaches their own inbox, however slots are reused; the inbox survives a
//! restart on the embedded store; a failing or full store gets typed errors
//! and never a false success or a live delivery of what was not stored.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use herald_gateway::{NodeConfig, NodeHandle, StorageBackend};
use herald_protocol::tokio_client::{Events, NotificationsQuery};
use herald_protocol::wire::{self, BodyT};
use herald_protocol::{ClientEvent, ErrorCode};
use herald_storage::faulty::{self, FaultSwitch};
use herald_storage::{MarkRead, NotificationPage, NotificationRecord, NotificationStore, Storage, StorageResult};
use serde_json::{Value, json};
use support::*;

fn config(shards: usize, backend: StorageBackend) -> NodeConfig {
    let mut c = api_config();
    c.shards = shards;
    c.storage.backend = backend;
    c
}

async fn notify(addr: std::net::SocketAddr, user: &str, kind: &str) -> (u16, Value) {
    let body =
        json!({"user": user, "kind": kind, "title": format!("title {kind}"), "body": "b", "data": {"kind": kind}});
    http(addr, "POST", "/api/notify", Some(API_KEY), Some(&body.to_string())).await
}

/// Notifies `user` and returns the stored id.
async fn notify_ok(addr: std::net::SocketAddr, user: &str, kind: &str) -> u64 {
    let (status, body) = notify(addr, user, kind).await;
    assert_eq!(status, 200, "{body}");
    body["id"].as_u64().unwrap()
}

/// `GET /api/notifications/{user}?{query}`.
async fn page(addr: std::net::SocketAddr, user: &str, query: &str) -> Value {
    let (status, body) = http(
        addr,
        "GET",
        &format!("/api/notifications/{user}?{query}"),
        Some(API_KEY),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// `POST /api/notifications/{user}/read`; returns how many were marked.
async fn mark(addr: std::net::SocketAddr, user: &str, body: Value) -> u64 {
    let (status, resp) = http(
        addr,
        "POST",
        &format!("/api/notifications/{user}/read"),
        Some(API_KEY),
        Some(&body.to_string()),
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    resp["marked"].as_u64().unwrap()
}

fn ids(page: &Value) -> Vec<u64> {
    page["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_u64().unwrap())
        .collect()
}

fn page_ids(p: &wire::NotificationsPageT) -> Vec<u64> {
    p.notifications.iter().flatten().map(|n| n.id).collect()
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}

async fn next_unread(events: &mut Events) -> u64 {
    next_matching(events, |ev| match ev {
        ClientEvent::Unread { unread } => Some(unread),
        _ => None,
    })
    .await
}

async fn next_notification(events: &mut Events) -> Box<wire::NotificationT> {
    next_matching(events, |ev| match ev {
        ClientEvent::Frame {
            body: BodyT::Notification(n),
            ..
        } => Some(n),
        _ => None,
    })
    .await
}

fn query(unread_only: bool, before_id: u64, limit: u32) -> NotificationsQuery {
    NotificationsQuery {
        unread_only,
        before_id,
        limit,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_is_stored_delivered_live_and_paged_newest_first() {
    let node = node_with(config(2, StorageBackend::Memory));
    let (ann, mut events) = client(&node.url(), "ann").await;
    assert_eq!(next_unread(&mut events).await, 0, "nothing yet");

    let mut sent = Vec::new();
    for kind in ["n1", "n2", "n3"] {
        let (status, body) = notify(node.addr, "ann", kind).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["online_connections"], 1);
        let id = body["id"].as_u64().unwrap();
        let live = next_notification(&mut events).await;
        assert_eq!(
            (live.id, live.kind.as_deref()),
            (id, Some(kind)),
            "live after stored, same id"
        );
        assert!(!live.read);
        sent.push(id);
    }
    assert!(sent.windows(2).all(|w| w[0] < w[1]), "ids increase: {sent:?}");
    assert!(sent.iter().all(|&id| id < 1 << 53), "ids are exact in JavaScript");
    let [n1, n2, n3] = sent[..] else { unreachable!() };

    // Over WebSocket: newest first, paged by id.
    let all = ann.notifications(NotificationsQuery::default()).await.unwrap();
    assert_eq!((page_ids(&all), all.unread, all.has_more), (vec![n3, n2, n1], 3, false));
    let first = all.notifications.as_ref().unwrap()[0].clone();
    assert_eq!(first.title.as_deref(), Some("title n3"));
    let data: Value = serde_json::from_slice(first.data.as_deref().unwrap()).unwrap();
    assert_eq!(data, json!({"kind": "n3"}));
    let head = ann.notifications(query(true, 0, 2)).await.unwrap();
    assert_eq!((page_ids(&head), head.has_more), (vec![n3, n2], true));
    let rest = ann.notifications(query(true, n2, 2)).await.unwrap();
    assert_eq!((page_ids(&rest), rest.has_more), (vec![n1], false));

    // Over HTTP: the same, with data as text.
    let p = page(node.addr, "ann", "limit=2").await;
    assert_eq!(
        (ids(&p), &p["unread"], &p["has_more"]),
        (vec![n3, n2], &json!(3), &json!(true))
    );
    let n = &p["notifications"][0];
    assert_eq!(n["kind"], "n3");
    assert_eq!(n["title"], "title n3");
    assert_eq!(n["body"], "b");
    assert_eq!(n["data"], json!(r#"{"kind":"n3"}"#));
    assert_eq!(n["read"], false);
    assert!(n["created_ms"].as_u64().unwrap() > 0);
    assert_eq!(ids(&page(node.addr, "ann", &format!("before_id={n2}")).await), [n1]);

    // Marked read by id over WebSocket.
    ann.mark_read(vec![n1], 0).await.unwrap();
    let unread = ann.notifications(query(true, 0, 50)).await.unwrap();
    assert_eq!((page_ids(&unread), unread.unread), (vec![n3, n2], 2));
    let p = page(node.addr, "ann", "unread_only=false").await;
    let read: Vec<bool> = p["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["read"].as_bool().unwrap())
        .collect();
    assert_eq!(read, [false, false, true]);

    // Up to an id over HTTP, then all.
    assert_eq!(mark(node.addr, "ann", json!({"up_to": n2})).await, 1);
    let unread = ann.notifications(NotificationsQuery::default()).await.unwrap();
    assert_eq!((page_ids(&unread), unread.unread), (vec![n3], 1));
    assert_eq!(mark(node.addr, "ann", json!({"all": true})).await, 1);
    let p = page(node.addr, "ann", "unread_only=true").await;
    assert_eq!((ids(&p), &p["unread"]), (vec![], &json!(0)));
    assert_eq!(mark(node.addr, "ann", json!({"all": true})).await, 0, "nothing left");
    assert_eq!(mark(node.addr, "ann", json!({"ids": [n3], "up_to": n3})).await, 0);
    assert_eq!(mark(node.addr, "ann", json!({})).await, 0, "nothing asked");
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_connects_is_told_its_unread_count() {
    let node = node_with(config(2, StorageBackend::Memory));
    let first = notify_ok(node.addr, "carol", "a").await;
    let (status, body) = notify(node.addr, "carol", "b").await;
    assert_eq!(
        (status, &body["online_connections"]),
        (200, &json!(0)),
        "stored while offline"
    );

    let (_c1, mut e1) = client(&node.url(), "carol").await;
    assert_eq!(next_unread(&mut e1).await, 2);
    assert_eq!(mark(node.addr, "carol", json!({"ids": [first]})).await, 1);
    let (_c2, mut e2) = client(&node.url(), "carol").await;
    assert_eq!(next_unread(&mut e2).await, 1);
    // Someone else's count is their own.
    let (_d, mut d) = client(&node.url(), "dave").await;
    assert_eq!(next_unread(&mut d).await, 0);

    // On the wire: a NotificationsPage with request id 0 and no notifications.
    let mut ws = ws_hello(&node.url(), "carol").await;
    assert!(matches!(ws_next_frame(&mut ws).await, Some((1, BodyT::Connected(_)))));
    match ws_next_frame(&mut ws).await {
        Some((0, BodyT::NotificationsPage(p))) => {
            assert_eq!((p.unread, p.has_more), (1, false));
            assert!(p.notifications.unwrap_or_default().is_empty());
        }
        other => panic!("expected the unread count, got {other:?}"),
    }
    stop(node).await;
}

fn one_shard() -> NodeConfig {
    config(1, StorageBackend::Memory)
}

/// (slot, generation) from a session id `NODE-SHARD-SLOT-GENERATION`.
fn slot_of(session_id: &str) -> (u32, u32) {
    let mut parts = session_id.rsplit('-').map(|p| p.parse::<u32>().unwrap());
    let (generation, slot) = (parts.next().unwrap(), parts.next().unwrap());
    (slot, generation)
}

/// Connects as `user` on a raw WebSocket; returns it, its session id and
/// the unread count it was told.
async fn raw_connect(url: &str, user: &str) -> (RawWs, String, u64) {
    let mut ws = ws_hello(url, user).await;
    let session = match ws_next_frame(&mut ws).await {
        Some((_, BodyT::Connected(c))) => c.session_id.unwrap_or_default(),
        other => panic!("expected Connected, got {other:?}"),
    };
    match next_non_ping_frame(&mut ws).await {
        Some((0, BodyT::NotificationsPage(p))) => (ws, session, p.unread),
        other => panic!("expected the unread count, got {other:?}"),
    }
}

async fn next_non_ping_frame(ws: &mut RawWs) -> Option<(u32, BodyT)> {
    loop {
        match ws_next_frame(ws).await {
            Some((_, BodyT::Ping(_))) => {}
            other => return other,
        }
    }
}

fn query_body(unread_only: bool) -> BodyT {
    let mut q = wire::NotificationsQueryT::default();
    q.unread_only = unread_only;
    BodyT::NotificationsQuery(Box::new(q))
}

fn mark_body(ids: Vec<u64>, up_to: u64) -> BodyT {
    let mut m = wire::NotificationsMarkReadT::default();
    m.ids = Some(ids);
    m.up_to = up_to;
    BodyT::NotificationsMarkRead(Box::new(m))
}

/// Waits until the node has no WebSocket session left, asking through
/// `http` (one connection held open, so it keeps its own slot).
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

/// A request on a connection held open; the status and the JSON body.
async fn on(http: &mut HttpConn, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let body = body.map(|b| b.to_string());
    let resp = http.request(method, path, Some(API_KEY), body.as_deref()).await;
    (resp.status, resp.json())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_never_sees_nor_marks_anothers_notifications_even_in_their_old_slot() {
    let node = node_with(one_shard());
    // Every HTTP request on this one connection, so only the sessions below
    // take and free slots: bob must land in ann's.
    let mut http = HttpConn::open(node.addr).await;
    let (status, body) = on(
        &mut http,
        "POST",
        "/api/notify",
        Some(json!({"user": "ann", "kind": "secret"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let secret = body["id"].as_u64().unwrap();
    let (mut ann, ann_session, unread) = raw_connect(&node.url(), "ann").await;
    assert_eq!(unread, 1);
    // ann asks for her inbox and leaves before the answer is read.
    ws_send_body(&mut ann, 77, query_body(false)).await;
    drop(ann);
    wait_no_sessions(&mut http).await;

    let (mut bob, bob_session, unread) = raw_connect(&node.url(), "bob").await;
    let (ann_slot, bob_slot) = (slot_of(&ann_session), slot_of(&bob_session));
    assert_eq!(
        bob_slot.0, ann_slot.0,
        "bob reuses ann's slot ({ann_session}, {bob_session})"
    );
    assert_ne!(bob_slot.1, ann_slot.1, "with a new generation");
    assert_eq!(unread, 0, "bob's count, not ann's");

    // Bob's query answers his inbox: empty. Nothing of ann's request 77.
    ws_send_body(&mut bob, 5, query_body(false)).await;
    match next_non_ping_frame(&mut bob).await {
        Some((5, BodyT::NotificationsPage(p))) => {
            assert_eq!(p.unread, 0);
            assert!(p.notifications.unwrap_or_default().is_empty(), "none of ann's");
        }
        other => panic!("expected bob's page, got {other:?}"),
    }
    // Bob names ann's id and everything up to the end of time: his own
    // inbox is all that is marked.
    ws_send_body(&mut bob, 6, mark_body(vec![secret], u64::MAX)).await;
    match next_non_ping_frame(&mut bob).await {
        Some((6, BodyT::Reply(r))) => assert_eq!(r.code, ErrorCode::Ok),
        other => panic!("expected bob's Reply, got {other:?}"),
    }
    let (status, p) = on(&mut http, "GET", "/api/notifications/ann", None).await;
    assert_eq!(status, 200, "{p}");
    assert_eq!((ids(&p), &p["unread"]), (vec![secret], &json!(1)));
    assert_eq!(p["notifications"][0]["read"], false, "ann's stays unread");
    // And bob's live deliveries are his own.
    let (status, body) = on(
        &mut http,
        "POST",
        "/api/notify",
        Some(json!({"user": "bob", "kind": "mine"})),
    )
    .await;
    assert_eq!((status, &body["online_connections"]), (200, &json!(1)), "{body}");
    match next_non_ping_frame(&mut bob).await {
        Some((0, BodyT::Notification(n))) => assert_eq!(n.kind.as_deref(), Some("mine")),
        other => panic!("expected bob's notification, got {other:?}"),
    }
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_and_their_read_marks_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let embedded = || node_with(config(2, StorageBackend::Embedded(dir.path().to_path_buf())));
    let node = embedded();
    let a = notify_ok(node.addr, "ann", "a").await;
    let b = notify_ok(node.addr, "ann", "b").await;
    assert_eq!(mark(node.addr, "ann", json!({"ids": [a]})).await, 1);
    stop(node).await;

    let node = embedded();
    let p = page(node.addr, "ann", "unread_only=false").await;
    assert_eq!((ids(&p), &p["unread"]), (vec![b, a], &json!(1)));
    assert_eq!(p["notifications"][1]["read"], true);
    assert_eq!(p["notifications"][0]["data"], json!(r#"{"kind":"b"}"#));
    let (ann, mut events) = client(&node.url(), "ann").await;
    assert_eq!(next_unread(&mut events).await, 1);
    let c = notify_ok(node.addr, "ann", "c").await;
    assert!(c > b, "ids keep increasing across a restart");
    let unread = ann.notifications(NotificationsQuery::default()).await.unwrap();
    assert_eq!(page_ids(&unread), [c, b]);
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_answers_503_and_delivers_nothing() {
    let switch = FaultSwitch::new();
    let storage = faulty::wrap(herald_storage::memory::storage(), switch.clone());
    let node = node_with(config(2, StorageBackend::Opened(storage)));
    let (ann, mut events) = client(&node.url(), "ann").await;
    assert_eq!(next_unread(&mut events).await, 0);
    let kept = notify_ok(node.addr, "ann", "kept").await;
    assert_eq!(next_notification(&mut events).await.id, kept);

    switch.fail_writes(true);
    let (status, body) = notify(node.addr, "ann", "lost").await;
    assert_eq!((status, error_code(&body)), (503, "unavailable"), "{body}");
    let err = ann.mark_read(vec![kept], 0).await.unwrap_err();
    assert_refused(&err, ErrorCode::Unavailable);
    let (status, body) = http(
        node.addr,
        "POST",
        "/api/notifications/ann/read",
        Some(API_KEY),
        Some(r#"{"all":true}"#),
    )
    .await;
    assert_eq!((status, error_code(&body)), (503, "unavailable"), "{body}");

    switch.fail_writes(false);
    switch.fail_reads(true);
    let err = ann.notifications(NotificationsQuery::default()).await.unwrap_err();
    assert_refused(&err, ErrorCode::Unavailable);
    let (status, body) = http(node.addr, "GET", "/api/notifications/ann", Some(API_KEY), None).await;
    assert_eq!((status, error_code(&body)), (503, "unavailable"), "{body}");

    switch.fail_reads(false);
    // Nothing refused was delivered: the next live one is the marker, and
    // the inbox holds what was stored, still unread.
    let marker = notify_ok(node.addr, "ann", "marker").await;
    assert_eq!(next_notification(&mut events).await.id, marker);
    let p = page(node.addr, "ann", "").await;
    assert_eq!((ids(&p), &p["unread"]), (vec![marker, kept], &json!(2)));

    // A sync that fails is not an acknowledgement either.
    switch.fail_sync(true);
    let (status, body) = notify(node.addr, "ann", "unsynced").await;
    assert_eq!((status, error_code(&body)), (503, "unavailable"), "{body}");
    switch.fail_sync(false);
    let last = notify_ok(node.addr, "ann", "last").await;
    assert_eq!(
        next_notification(&mut events).await.id,
        last,
        "the unsynced one never went live"
    );
    assert!(metric(node.addr, "herald_storage_write_errors_total", "").await >= 2);
    stop(node).await;
}

/// A notification store whose appends wait until the test opens the gate:
/// the writer is stuck in its first commit while the queue behind it fills.
#[derive(Debug)]
struct Gated {
    inner: Arc<dyn NotificationStore>,
    open: Arc<(Mutex<bool>, Condvar)>,
    entered: Arc<AtomicBool>,
}

impl NotificationStore for Gated {
    fn append(&self, batch: &[NotificationRecord]) -> StorageResult<()> {
        self.entered.store(true, Ordering::Release);
        let (lock, cv) = &*self.open;
        let mut open = lock.lock().unwrap();
        while !*open {
            open = cv.wait(open).unwrap();
        }
        drop(open);
        self.inner.append(batch)
    }
    fn sync(&self) -> StorageResult<()> {
        self.inner.sync()
    }
    fn page(&self, user: &str, before_id: u64, limit: usize, unread_only: bool) -> StorageResult<NotificationPage> {
        self.inner.page(user, before_id, limit, unread_only)
    }
    fn mark_read(&self, user: &str, which: MarkRead<'_>) -> StorageResult<u64> {
        self.inner.mark_read(user, which)
    }
    fn unread_count(&self, user: &str) -> StorageResult<u64> {
        self.inner.unread_count(user)
    }
    fn trim(&self, user: &str, max_per_user: u64, min_created_ms: u64) -> StorageResult<u64> {
        self.inner.trim(user, max_per_user, min_created_ms)
    }
    fn users(&self, after: Option<&str>, limit: usize) -> StorageResult<Vec<Arc<str>>> {
        self.inner.users(after, limit)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_write_queue_answers_overloaded_at_once() {
    // The writer takes the first and is stuck in it; the second waits in
    // the queue; everything after is refused at once.
    let (node, open, first) = stuck_writer(1, "ann").await;
    let addr = node.addr;
    let second = tokio::spawn(async move { notify(addr, "ann", "second").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!second.is_finished(), "the second waits in the queue");
    let (status, body) = notify(node.addr, "ann", "refused").await;
    assert_eq!((status, error_code(&body)), (503, "overloaded"), "{body}");
    let (ann, mut events) = client(&node.url(), "ann").await;
    assert_eq!(next_unread(&mut events).await, 0, "reads still work");
    let err = ann.mark_read(vec![1], 0).await.unwrap_err();
    assert_refused(&err, ErrorCode::Overloaded);
    let err = ann.track("click", 1.0, &[]).await.unwrap_err();
    assert_refused(&err, ErrorCode::Overloaded);

    open_gate(&open);
    let (s1, b1) = first.await.unwrap();
    let (s2, b2) = second.await.unwrap();
    assert_eq!((s1, s2), (200, 200), "{b1} {b2}");
    let kinds: Vec<String> = page(node.addr, "ann", "").await["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["second", "first"], "the refused one was not stored");
    // Both go live once stored (two requests, maybe on two shards: in
    // either order).
    let mut live = Vec::new();
    for _ in 0..2 {
        live.push(next_notification(&mut events).await.kind.unwrap_or_default());
    }
    live.sort();
    assert_eq!(live, ["first", "second"]);
    assert!(metric(node.addr, "herald_storage_overloaded_total", "").await >= 3);
    stop(node).await;
}

/// Opens the gate of a [`Gated`] store.
fn open_gate(open: &(Mutex<bool>, Condvar)) {
    let (lock, cv) = open;
    *lock.lock().unwrap() = true;
    cv.notify_all();
}

/// The gate of a [`Gated`] store.
type Gate = Arc<(Mutex<bool>, Condvar)>;

/// A node (with `write_queue`) whose notification appends wait for the
/// gate; the writer is already stuck in one, a notification of `user`
/// (its request: the handle), when this returns.
async fn stuck_writer(
    write_queue: usize,
    user: &'static str,
) -> (NodeHandle, Gate, tokio::task::JoinHandle<(u16, Value)>) {
    let memory = herald_storage::memory::storage();
    let open = Arc::new((Mutex::new(false), Condvar::new()));
    let entered = Arc::new(AtomicBool::new(false));
    let storage = Storage {
        notifications: Arc::new(Gated {
            inner: memory.notifications.clone(),
            open: open.clone(),
            entered: entered.clone(),
        }),
        ..memory
    };
    let mut c = config(2, StorageBackend::Opened(storage));
    c.storage.write_queue = write_queue;
    let node = node_with(c);
    let addr = node.addr;
    let first = tokio::spawn(async move { notify(addr, user, "first").await });
    let deadline = std::time::Instant::now() + WAIT;
    while !entered.load(Ordering::Acquire) {
        assert!(std::time::Instant::now() < deadline, "the writer takes the first");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (node, open, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_cannot_fill_the_storage_queue() {
    let (node, open, first) = stuck_writer(1024, "zed").await;
    let (mut ws, _) = ws_connected(&node.url(), "ann").await;
    for rid in 1..=40 {
        ws_send_body(&mut ws, rid, mark_body(vec![1], 0)).await;
    }
    // 32 wait for the writer; the rest are refused at once.
    let mut refused = Vec::new();
    while refused.len() < 8 {
        match ws_next_non_ping(&mut ws).await {
            Some((rid, BodyT::Reply(r))) if r.code == ErrorCode::Overloaded => refused.push(rid),
            other => panic!("expected Overloaded, got {other:?}"),
        }
    }
    assert_eq!(refused, (33..=40).collect::<Vec<_>>());
    // Another connection still gets its turn.
    let (other, _o) = client(&node.url(), "bob").await;
    let page = other.notifications(NotificationsQuery::default()).await.unwrap();
    assert_eq!(page.unread, 0);

    open_gate(&open);
    assert_eq!(first.await.unwrap().0, 200);
    let mut answered = Vec::new();
    while answered.len() < 32 {
        match ws_next_non_ping(&mut ws).await {
            Some((rid, BodyT::Reply(r))) => {
                assert_eq!(r.code, ErrorCode::Ok, "request {rid}");
                answered.push(rid);
            }
            other => panic!("expected a Reply, got {other:?}"),
        }
    }
    answered.sort_unstable();
    assert_eq!(answered, (1..=32).collect::<Vec<_>>());
    // Answered requests make room again.
    ws_send_body(&mut ws, 50, mark_body(vec![1], 0)).await;
    match ws_next_non_ping(&mut ws).await {
        Some((50, BodyT::Reply(r))) => assert_eq!(r.code, ErrorCode::Ok),
        other => panic!("expected the Reply, got {other:?}"),
    }
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_notification_requests_are_refused_with_400() {
    let node: NodeHandle = node_with(config(2, StorageBackend::Memory));
    let (ann, _events) = client(&node.url(), "ann").await;
    let err = ann.mark_read((1..=1001).collect(), 0).await.unwrap_err();
    assert_refused(&err, ErrorCode::BadRequest);
    // Still usable, and an empty mark marks nothing.
    ann.mark_read(vec![], 0).await.unwrap();

    let many: Vec<u64> = (1..=1001).collect();
    for (method, path, body, status, code) in [
        ("GET", "/api/notifications/a%20b", None, 400, "bad_request"),
        ("GET", "/api/notifications/", None, 400, "bad_request"),
        ("GET", "/api/notifications/ann?limit=x", None, 400, "bad_request"),
        ("GET", "/api/notifications/ann?before_id=-1", None, 400, "bad_request"),
        (
            "GET",
            "/api/notifications/ann?unread_only=maybe",
            None,
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/notifications/ann/read",
            Some("{".to_owned()),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/notifications/ann/read",
            Some(r#"{"colour":1}"#.to_owned()),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/notifications/ann/read",
            Some(json!({ "ids": many }).to_string()),
            400,
            "too_many_ids",
        ),
        (
            "POST",
            "/api/notifications/a%20b/read",
            Some("{}".to_owned()),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/notifications/ann",
            Some("{}".to_owned()),
            405,
            "method_not_allowed",
        ),
        ("GET", "/api/notifications/ann/read", None, 405, "method_not_allowed"),
    ] {
        let (got, resp) = http(node.addr, method, path, Some(API_KEY), body.as_deref()).await;
        assert_eq!((got, error_code(&resp)), (status, code), "{method} {path}: {resp}");
    }
    let (status, _) = http(node.addr, "GET", "/api/notifications/ann", None, None).await;
    assert_eq!(status, 401, "the API key is needed");
    // Percent-encoded user ids work as elsewhere in the API.
    let id = notify_ok(node.addr, "u:1", "k").await;
    assert_eq!(ids(&page(node.addr, "u%3A1", "").await), [id]);
    assert_eq!(mark(node.addr, "u%3A1", json!({"ids": [id]})).await, 1);
    stop(node).await;
}
