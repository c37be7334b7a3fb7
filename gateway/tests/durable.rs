//! Durable rooms: history and positions survive a restart on the same data
//! directory (the embedded store), a lost data directory is reported as a
//! new epoch, memory-only namespaces stay out of the store, and a store that
//! fails or falls behind gives publishers typed errors while the node keeps
//! serving.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod support;

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

use herald_gateway::{NodeConfig, NodeHandle, StorageBackend, SyncPolicy};
use herald_protocol::owner::{ReadPage, ReadRange, Stored};
use herald_protocol::{ClientEvent, ErrorCode, PublishOptions, SubscribeOptions};
use herald_storage::faulty::{self, FaultSwitch};
use herald_storage::{LogEntry, Retention, RoomHead, RoomLog, Storage, StorageResult};
use serde_json::{Value, json};
use support::*;

fn config(backend: StorageBackend) -> NodeConfig {
    let mut c = api_config();
    c.storage.backend = backend;
    c
}

fn embedded(dir: &Path) -> NodeHandle {
    node_with(config(StorageBackend::Embedded(dir.to_path_buf())))
}

async fn history(addr: std::net::SocketAddr, room: &str, query: &str) -> Vec<(u64, String)> {
    let (status, body) = http(
        addr,
        "GET",
        &format!("/api/history/{room}?{query}"),
        Some(API_KEY),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["offset"].as_u64().unwrap(),
                m["data"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn api_publish(addr: std::net::SocketAddr, room: &str, text: &str) -> impl Future<Output = (u16, Value)> + use<> {
    let body = json!({"room": room, "data": text});
    async move { api_publish_body(addr, body).await }
}

async fn api_publish_body(addr: std::net::SocketAddr, body: Value) -> (u16, Value) {
    http(addr, "POST", "/api/publish", Some(API_KEY), Some(&body.to_string())).await
}

/// An address nothing listens on (a node that is down).
fn dead_addr() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], free_port()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_across_a_restart_with_what_was_published_while_it_was_away() {
    let dir = tempfile::tempdir().unwrap();
    let node = embedded(dir.path());
    let proxy = Proxy::start(node.addr).await;
    let (alice, mut events) = client(&proxy.url(), "alice").await;
    let (bob, _b) = client(&node.url(), "bob").await;
    let sub = alice.subscribe("chat:d", SubscribeOptions::default()).await.unwrap();
    for i in 1..=3u8 {
        bob.publish("chat:d", vec![i], PublishOptions::default()).await.unwrap();
    }
    let mut seen = Vec::new();
    while seen.len() < 3 {
        if let ClientEvent::Message(d) = events.recv().await.unwrap() {
            seen.push(d.offset);
        }
    }
    // alice is cut off; bob goes on publishing; then the node restarts.
    proxy.retarget(dead_addr()).await;
    proxy.cut();
    for i in 4..=6u8 {
        bob.publish("chat:d", vec![i], PublishOptions::default()).await.unwrap();
    }
    drop(bob);
    stop(node).await;
    let node = embedded(dir.path());
    proxy.retarget(node.addr).await;
    let (recovered, epoch, history) = next_matching(&mut events, |ev| match ev {
        ClientEvent::Subscribed {
            recovered,
            resumed: true,
            epoch,
            history,
            ..
        } => Some((recovered, epoch, history)),
        _ => None,
    })
    .await;
    assert!(recovered, "everything missed is on disk");
    assert_eq!(epoch, sub.epoch, "a restart keeps the room's epoch");
    seen.extend(history.iter().map(|d| d.offset));
    assert_eq!(
        history.iter().map(|d| d.payload.to_vec()).collect::<Vec<_>>(),
        vec![vec![4u8], vec![5], vec![6]]
    );
    // Offsets go on after the last stored one, in the same epoch.
    let (carol, _c) = client(&node.url(), "carol").await;
    let p = carol
        .publish("chat:d", vec![7u8], PublishOptions::default())
        .await
        .unwrap();
    assert_eq!((p.epoch, p.offset), (sub.epoch, 7));
    let d = next_matching(&mut events, |ev| match ev {
        ClientEvent::Message(d) => Some(d),
        _ => None,
    })
    .await;
    seen.push(d.offset);
    assert_eq!(seen, (1..=7).collect::<Vec<_>>(), "no gap, no duplicate");
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_data_dir_is_a_new_epoch_and_resuming_clients_are_told() {
    let first = tempfile::tempdir().unwrap();
    let node = embedded(first.path());
    let proxy = Proxy::start(node.addr).await;
    let (alice, mut events) = client(&proxy.url(), "alice").await;
    let sub = alice.subscribe("chat:w", SubscribeOptions::default()).await.unwrap();
    alice
        .publish("chat:w", &b"x"[..], PublishOptions::default())
        .await
        .unwrap();
    proxy.retarget(dead_addr()).await;
    stop(node).await;
    let wiped = tempfile::tempdir().unwrap();
    let node = embedded(wiped.path());
    proxy.retarget(node.addr).await;
    let (recovered, epoch) = next_matching(&mut events, |ev| match ev {
        ClientEvent::Subscribed {
            recovered,
            resumed: true,
            epoch,
            ..
        } => Some((recovered, epoch)),
        _ => None,
    })
    .await;
    assert!(!recovered, "the history is gone and the client hears so");
    assert_ne!(epoch, sub.epoch);
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_come_from_the_store_after_a_restart_and_volatile_namespaces_are_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let node = embedded(dir.path());
    for i in 1..=5 {
        assert_eq!(api_publish(node.addr, "chat:h", &format!("m{i}")).await.0, 200);
        assert_eq!(api_publish(node.addr, "game:h", &format!("g{i}")).await.0, 200);
    }
    stop(node).await;
    let node = embedded(dir.path());
    let newest = history(node.addr, "chat:h", "limit=3").await;
    assert_eq!(
        newest,
        [(3, "m3".to_owned()), (4, "m4".to_owned()), (5, "m5".to_owned())]
    );
    let older = history(node.addr, "chat:h", "limit=10&before=3").await;
    assert_eq!(older, [(1, "m1".to_owned()), (2, "m2".to_owned())]);
    let after = history(node.addr, "chat:h", "limit=2&after=1").await;
    assert_eq!(after, [(2, "m2".to_owned()), (3, "m3".to_owned())]);
    // `game` keeps its rooms in memory only: after the restart the node
    // knows no such room.
    let (status, body) = http(node.addr, "GET", "/api/history/game:h?limit=10", Some(API_KEY), None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_refuses_publishes_with_unavailable_and_the_node_keeps_serving() {
    let switch = FaultSwitch::new();
    let storage = faulty::wrap(herald_storage::memory::storage(), switch.clone());
    let node = node_with(config(StorageBackend::Opened(storage)));
    let (alice, mut events) = client(&node.url(), "alice").await;
    alice.subscribe("chat:f", SubscribeOptions::default()).await.unwrap();
    alice.subscribe("game:f", SubscribeOptions::default()).await.unwrap();
    let first = alice
        .publish("chat:f", &b"1"[..], PublishOptions::default())
        .await
        .unwrap();

    switch.fail_writes(true);
    let err = alice
        .publish("chat:f", &b"lost"[..], PublishOptions::default())
        .await
        .unwrap_err();
    assert_refused(&err, ErrorCode::Unavailable);
    let (status, body) = api_publish(node.addr, "chat:f", "lost too").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("unavailable")),
        "{body}"
    );
    // Rooms kept in memory do not depend on the store.
    let p = alice
        .publish("game:f", &b"pos"[..], PublishOptions::default())
        .await
        .unwrap();
    assert_eq!(p.offset, 1);
    let errors = metric(node.addr, "herald_storage_write_errors_total", "").await;
    assert!(errors >= 2, "failed commits are counted: {errors}");

    switch.fail_writes(false);
    let next = alice
        .publish("chat:f", &b"2"[..], PublishOptions::default())
        .await
        .unwrap();
    assert!(next.offset > first.offset);
    // Subscribers got what was acknowledged, and nothing that was refused.
    let mut got = Vec::new();
    while got.len() < 3 {
        if let ClientEvent::Message(d) = next_matching(&mut events, Some).await {
            got.push((d.room.clone(), d.payload.to_vec()));
        }
    }
    assert_eq!(
        got,
        [
            ("chat:f".to_owned(), b"1".to_vec()),
            ("game:f".to_owned(), b"pos".to_vec()),
            ("chat:f".to_owned(), b"2".to_vec())
        ]
    );
    let h: Vec<String> = history(node.addr, "chat:f", "limit=10")
        .await
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    assert_eq!(h, ["1", "2"], "a refused publish is not in history");
    stop(node).await;
}

/// A room log around another that the tests watch and hold: appends wait
/// while `gate` is closed (the writer is stuck in its commit while the
/// queue behind it fills), and syncs are counted.
#[derive(Debug)]
struct Instrumented {
    inner: Arc<dyn RoomLog>,
    gate: Gate,
    syncs: Arc<std::sync::atomic::AtomicU64>,
}

/// Open or closed, and the condition appends wait on.
type Gate = Arc<(Mutex<bool>, Condvar)>;

impl Instrumented {
    /// `storage` with its room log instrumented; the gate starts `open`.
    fn wrap(storage: Storage, open: bool) -> (Storage, Gate, Arc<std::sync::atomic::AtomicU64>) {
        let gate = Arc::new((Mutex::new(open), Condvar::new()));
        let syncs = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let log = Arc::new(Instrumented {
            inner: storage.log.clone(),
            gate: gate.clone(),
            syncs: syncs.clone(),
        });
        (Storage { log, ..storage }, gate, syncs)
    }
}

impl RoomLog for Instrumented {
    fn append(&self, batch: &[LogEntry]) -> StorageResult<()> {
        let (lock, cv) = &*self.gate;
        let mut open = lock.lock().unwrap();
        while !*open {
            open = cv.wait(open).unwrap();
        }
        drop(open);
        self.inner.append(batch)
    }
    fn sync(&self) -> StorageResult<()> {
        self.syncs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.sync()
    }
    fn head(&self, room: &str) -> StorageResult<Option<RoomHead>> {
        self.inner.head(room)
    }
    fn read(&self, room: &str, epoch: u64, range: ReadRange) -> StorageResult<ReadPage> {
        self.inner.read(room, epoch, range)
    }
    fn read_time(&self, room: &str, from_ms: u64, to_ms: u64, limit: usize) -> StorageResult<Vec<Stored>> {
        self.inner.read_time(room, from_ms, to_ms, limit)
    }
    fn trim(&self, room: &str, retention: Retention, now_ms: u64) -> StorageResult<u64> {
        self.inner.trim(room, retention, now_ms)
    }
    fn rooms(&self, after: Option<&str>, limit: usize) -> StorageResult<Vec<Arc<str>>> {
        self.inner.rooms(after, limit)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_write_queue_answers_overloaded_at_once_and_nothing_acknowledged_is_lost() {
    let (storage, open, _) = Instrumented::wrap(herald_storage::memory::storage(), false);
    let mut c = config(StorageBackend::Opened(storage));
    c.storage.write_queue = 2;
    c.storage.sync = SyncPolicy::Always;
    let node = node_with(c);
    // Each publish to its own room, so no room's pending limit interferes.
    let mut answers = Vec::new();
    for i in 0..8 {
        let room = format!("chat:q{i}");
        answers.push((room.clone(), tokio::spawn(api_publish(node.addr, &room, "x"))));
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
    // With the writer stuck, one job is in its hands, two wait in the
    // queue, and the rest are refused at once.
    let mut overloaded = 0;
    let mut waiting = Vec::new();
    for (room, a) in answers {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        if a.is_finished() {
            let (status, body) = a.await.unwrap();
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (503, Some("overloaded")),
                "{body}"
            );
            assert!(history(node.addr, &room, "limit=10").await.is_empty());
            overloaded += 1;
        } else {
            waiting.push((room, a));
        }
    }
    assert!(overloaded >= 4, "{overloaded} refused");
    assert!(!waiting.is_empty());
    {
        let (lock, cv) = &*open;
        *lock.lock().unwrap() = true;
        cv.notify_all();
    }
    for (room, a) in waiting {
        let (status, body) = a.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(history(node.addr, &room, "limit=10").await, [(1, "x".to_owned())]);
    }
    assert!(metric(node.addr, "herald_storage_overloaded_total", "").await >= 4);
    stop(node).await;
}

/// Publishes `n` messages one after another on a node with `sync`; returns
/// the log's syncs after the acks, after `settle`, and after shutdown.
async fn syncs_under(sync: SyncPolicy, n: u64, settle: std::time::Duration) -> (u64, u64, u64) {
    let (storage, _, syncs) = Instrumented::wrap(herald_storage::memory::storage(), true);
    let mut c = config(StorageBackend::Opened(storage));
    c.storage.sync = sync;
    let node = node_with(c);
    let (alice, _events) = client(&node.url(), "alice").await;
    for i in 0..n {
        let p = alice
            .publish("chat:s", vec![i as u8], PublishOptions::default())
            .await
            .unwrap();
        assert_eq!(p.offset, i + 1);
    }
    let count = || syncs.load(std::sync::atomic::Ordering::SeqCst);
    let after_acks = count();
    tokio::time::sleep(settle).await;
    let settled = count();
    alice.close().await;
    stop(node).await;
    (after_acks, settled, count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_policy_decides_when_the_log_is_synced() {
    // always: every acknowledged publish was synced before its ack (one at
    // a time here, so one sync each).
    let (acked, _, _) = syncs_under(SyncPolicy::Always, 20, std::time::Duration::ZERO).await;
    assert!(acked >= 20, "a sync before every ack: {acked}");
    // interval: acks do not wait; a sync follows within the interval and
    // covers many appends.
    let every = std::time::Duration::from_millis(200);
    let (acked, settled, _) = syncs_under(SyncPolicy::Interval(every), 20, every * 3).await;
    assert!(settled >= 1, "synced within the interval");
    assert!(
        acked < 20 && settled < 20,
        "syncs shared by many appends: {acked} then {settled}"
    );
    // none: never synced while running; once at shutdown.
    let (acked, settled, stopped) = syncs_under(SyncPolicy::Never, 20, std::time::Duration::from_millis(300)).await;
    assert_eq!((acked, settled), (0, 0));
    assert!(stopped >= 1, "what was written is synced when the node stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bytes_waiting_for_a_stuck_writer_are_bounded_not_only_their_count() {
    let (storage, open, _) = Instrumented::wrap(herald_storage::memory::storage(), false);
    let mut c = config(StorageBackend::Opened(storage));
    c.storage.write_queue = 10_000;
    c.storage.write_queue_bytes = 40 * 1024;
    let node = node_with(c);
    let big = "x".repeat(16 * 1024);
    let mut waiting = Vec::new();
    let mut refused = 0;
    for i in 0..6 {
        let room = format!("chat:b{i}");
        let task = tokio::spawn(api_publish(node.addr, &room, &big));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        if task.is_finished() {
            let (status, body) = task.await.unwrap();
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (503, Some("overloaded")),
                "{body}"
            );
            refused += 1;
        } else {
            waiting.push(task);
        }
    }
    // Two 16 KiB messages fit in 40 KiB; the rest are refused at once
    // although the queue has room for 10,000 jobs.
    assert_eq!((waiting.len(), refused), (2, 4));
    {
        let (lock, cv) = &*open;
        *lock.lock().unwrap() = true;
        cv.notify_all();
    }
    for task in waiting {
        assert_eq!(task.await.unwrap().0, 200);
    }
    // The budget is given back: the next one is taken.
    assert_eq!(api_publish(node.addr, "chat:b9", &big).await.0, 200);
    stop(node).await;
}
