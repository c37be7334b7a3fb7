//! Analytics events: `AnalyticsEvent` frames (acknowledged or not) and
//! `POST /api/events` batches are stored and folded into per-minute
//! rollups that `GET /api/events/{name}/rollups` reads back; bad input gets
//! 400 (or `BadRequest`) with a clear code and stores nothing; a failing
//! store answers 503 / `Unavailable`.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod support;

use std::time::Duration;

use herald_gateway::{NodeConfig, StorageBackend};
use herald_protocol::ErrorCode;
use herald_protocol::wire::{self, BodyT};
use herald_storage::faulty::{self, FaultSwitch};
use serde_json::{Value, json};
use support::*;

const MINUTE: u64 = 60_000;

fn config(backend: StorageBackend) -> NodeConfig {
    let mut c = api_config();
    c.storage.backend = backend;
    c
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn post_events(addr: std::net::SocketAddr, body: &str) -> (u16, Value) {
    http(addr, "POST", "/api/events", Some(API_KEY), Some(body)).await
}

async fn rollups(addr: std::net::SocketAddr, name: &str, from_ms: u64, to_ms: u64) -> Vec<Value> {
    let path = format!("/api/events/{name}/rollups?from_ms={from_ms}&to_ms={to_ms}");
    let (status, body) = http(addr, "GET", &path, Some(API_KEY), None).await;
    assert_eq!(status, 200, "{body}");
    body["rollups"].as_array().unwrap().clone()
}

/// (count, sum, min, max) over rows.
fn totals(rows: &[Value]) -> (u64, f64, f64, f64) {
    rows.iter().fold((0, 0.0, f64::MAX, f64::MIN), |(c, s, lo, hi), r| {
        (
            c + r["count"].as_u64().unwrap(),
            s + r["sum"].as_f64().unwrap(),
            lo.min(r["min"].as_f64().unwrap()),
            hi.max(r["max"].as_f64().unwrap()),
        )
    })
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}

fn event_body(name: &str, value: f64, dimensions: &[(&str, &str)]) -> BodyT {
    let mut e = wire::AnalyticsEventT::default();
    e.name = name.into();
    e.value = value;
    e.dimensions = Some(
        dimensions
            .iter()
            .map(|&(k, v)| {
                let mut kv = wire::KeyValueT::default();
                kv.key = k.into();
                kv.value = Some(v.into());
                kv
            })
            .collect(),
    );
    BodyT::AnalyticsEvent(Box::new(e))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_from_http_roll_up_per_minute_with_count_sum_min_and_max() {
    let node = node_with(config(StorageBackend::Memory));
    // Two minutes well in the past, so the rows are exact.
    let t0 = (now_ms() / MINUTE - 120) * MINUTE;
    let body = json!([
        {"name": "checkout", "value": 10.0, "timestamp_ms": t0 + 1_000},
        {"name": "checkout", "value": 0.5, "tags": {"plan": "pro"}, "timestamp_ms": t0 + 59_999},
        {"name": "checkout", "value": -3.0, "timestamp_ms": t0 + 30_000},
        {"name": "checkout", "value": 4.0, "timestamp_ms": t0 + MINUTE},
        {"name": "checkout", "timestamp_ms": t0 + MINUTE + 1},
        {"name": "other", "value": 100.0, "timestamp_ms": t0},
    ]);
    let (status, resp) = post_events(node.addr, &body.to_string()).await;
    assert_eq!((status, resp), (200, json!({"stored": 6})));

    let rows = rollups(node.addr, "checkout", t0, t0 + 2 * MINUTE).await;
    assert_eq!(
        rows,
        [
            json!({"minute_ms": t0, "count": 3, "sum": 7.5, "min": -3.0, "max": 10.0}),
            json!({"minute_ms": t0 + MINUTE, "count": 2, "sum": 5.0, "min": 1.0, "max": 4.0}),
        ]
    );
    // The range is by minute start, end excluded.
    assert_eq!(
        rollups(node.addr, "checkout", t0 + MINUTE, t0 + 2 * MINUTE).await.len(),
        1
    );
    assert_eq!(rollups(node.addr, "checkout", t0, t0 + MINUTE).await.len(), 1);
    assert_eq!(totals(&rollups(node.addr, "other", t0, t0 + MINUTE).await).0, 1);
    assert!(rollups(node.addr, "nothing", t0, t0 + MINUTE).await.is_empty());
    // An empty batch is fine and stores nothing.
    let (status, resp) = post_events(node.addr, "[]").await;
    assert_eq!((status, resp), (200, json!({"stored": 0})));
    // Without bounds: the last hour, now included.
    let (status, body) = http(node.addr, "GET", "/api/events/checkout/rollups", Some(API_KEY), None).await;
    assert_eq!(
        (status, body["rollups"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{body}"
    );
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_from_websocket_are_stamped_stored_and_acknowledged_when_asked() {
    let node = node_with(config(StorageBackend::Memory));
    let before = now_ms();
    let (ann, _events) = client(&node.url(), "ann").await;
    ann.track("page.view", 2.0, &[("path", "/home")]).await.unwrap();
    ann.track("page.view", 5.0, &[]).await.unwrap();
    // Unacknowledged ones go in the shard's batch.
    let (mut raw, _) = ws_connected(&node.url(), "bob").await;
    for v in [1.0, -1.0, 3.0] {
        ws_send_body(&mut raw, 0, event_body("page.view", v, &[("k", "v")])).await;
    }
    // Only the acknowledged one is answered: nothing came for the three
    // before it.
    ws_send_body(&mut raw, 9, event_body("page.view", 0.0, &[])).await;
    match ws_next_non_ping(&mut raw).await {
        Some((9, BodyT::Reply(r))) => assert_eq!(r.code, ErrorCode::Ok),
        other => panic!("only the acknowledged event is answered, got {other:?}"),
    }
    let (from, to) = (before / MINUTE * MINUTE, now_ms() + 2 * MINUTE);
    let deadline = std::time::Instant::now() + WAIT;
    let got = loop {
        let got = totals(&rollups(node.addr, "page.view", from, to).await);
        if got.0 == 6 || std::time::Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(got, (6, 10.0, -1.0, 5.0), "(count, sum, min, max)");
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_events_are_refused_with_clear_codes_and_store_nothing() {
    let node = node_with(config(StorageBackend::Memory));
    let long = "n".repeat(129);
    let tags: serde_json::Map<String, Value> = (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
    let many = format!("[{}]", vec![r#"{"name":"spam"}"#; 1001].join(","));
    let t0 = (now_ms() / MINUTE - 10) * MINUTE;
    for (body, code) in [
        ("[{".to_owned(), "bad_request"),
        (r#"{"name":"x"}"#.to_owned(), "bad_request"),
        (String::new(), "bad_request"),
        (many, "too_many_events"),
        (json!([{"name": long}]).to_string(), "invalid_event"),
        (json!([{"name": ""}]).to_string(), "invalid_event"),
        (json!([{"name": "bad", "tags": tags}]).to_string(), "invalid_event"),
        (
            json!([{"name": "bad", "tags": {"k": "v".repeat(129)}}]).to_string(),
            "invalid_event",
        ),
        (json!([{"name": "bad", "tags": {"k": 1}}]).to_string(), "invalid_event"),
        (json!([{"name": "bad", "value": "1"}]).to_string(), "invalid_event"),
        (json!([{"name": "bad", "colour": "red"}]).to_string(), "invalid_event"),
        (
            json!([{"name": "bad", "timestamp_ms": now_ms() + 2 * 24 * 3600 * 1000}]).to_string(),
            "invalid_event",
        ),
        // One bad event refuses the whole batch.
        (
            json!([{"name": "bad", "timestamp_ms": t0}, {"name": ""}]).to_string(),
            "invalid_event",
        ),
    ] {
        let (status, resp) = post_events(node.addr, &body).await;
        assert_eq!((status, error_code(&resp)), (400, code), "{body:.80}: {resp}");
        assert!(!resp["error"]["message"].as_str().unwrap().is_empty());
    }
    assert!(
        rollups(node.addr, "bad", t0, t0 + MINUTE).await.is_empty(),
        "nothing stored"
    );
    assert!(rollups(node.addr, "spam", t0, now_ms() + MINUTE).await.is_empty());
    let week = 7 * 24 * 3600 * 1000;
    for (path, status, code) in [
        (format!("/api/events/{long}/rollups"), 400, "invalid_event"),
        (
            format!("/api/events/x/rollups?from_ms=0&to_ms={}", week + 1),
            400,
            "range_too_large",
        ),
        ("/api/events/x/rollups?from_ms=5&to_ms=5".to_owned(), 400, "bad_request"),
        ("/api/events/x/rollups?from_ms=abc".to_owned(), 400, "bad_request"),
        ("/api/events".to_owned(), 405, "method_not_allowed"),
    ] {
        let (got, resp) = http(node.addr, "GET", &path, Some(API_KEY), None).await;
        assert_eq!((got, error_code(&resp)), (status, code), "{path:.80}: {resp}");
    }
    let (status, _) = http(node.addr, "POST", "/api/events", None, Some("[]")).await;
    assert_eq!(status, 401, "the API key is needed");
    let huge = format!(r#"[{{"name":"x","tags":{{"k":"{}"}}}}]"#, "v".repeat(300 * 1024));
    let (status, resp) = post_events(node.addr, &huge).await;
    assert_eq!((status, error_code(&resp)), (413, "payload_too_large"));

    // Over WebSocket: BadRequest, and the session goes on.
    let (ann, _events) = client(&node.url(), "ann").await;
    let many_dims: Vec<(String, String)> = (0..17).map(|i| (format!("k{i}"), "v".to_owned())).collect();
    let many_dims: Vec<(&str, &str)> = many_dims.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let key = "k".repeat(129);
    for (name, value, dims) in [
        (long.as_str(), 1.0, &[][..]),
        ("", 1.0, &[][..]),
        ("bad", f64::NAN, &[][..]),
        ("bad", f64::INFINITY, &[][..]),
        ("bad", 1.0, &many_dims[..]),
        ("bad", 1.0, &[(key.as_str(), "v")][..]),
    ] {
        let err = ann.track(name, value, dims).await.unwrap_err();
        assert_refused(&err, ErrorCode::BadRequest);
    }
    ann.track("good", 1.0, &many_dims[..16]).await.unwrap();
    assert!(rollups(node.addr, "bad", t0, now_ms() + MINUTE).await.is_empty());
    let (status, _) = http(node.addr, "GET", "/health", None, None).await;
    assert_eq!(status, 200);
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_answers_503_for_events_and_rollups() {
    let switch = FaultSwitch::new();
    let storage = faulty::wrap(herald_storage::memory::storage(), switch.clone());
    let node = node_with(config(StorageBackend::Opened(storage)));
    let (ann, _events) = client(&node.url(), "ann").await;
    let t0 = (now_ms() / MINUTE - 10) * MINUTE;
    let one = json!([{"name": "e", "timestamp_ms": t0}]).to_string();

    switch.fail_writes(true);
    let (status, resp) = post_events(node.addr, &one).await;
    assert_eq!((status, error_code(&resp)), (503, "unavailable"), "{resp}");
    assert_refused(&ann.track("e", 1.0, &[]).await.unwrap_err(), ErrorCode::Unavailable);
    switch.fail_writes(false);
    switch.fail_reads(true);
    let path = format!("/api/events/e/rollups?from_ms={t0}&to_ms={}", t0 + MINUTE);
    let (status, resp) = http(node.addr, "GET", &path, Some(API_KEY), None).await;
    assert_eq!((status, error_code(&resp)), (503, "unavailable"), "{resp}");
    switch.fail_reads(false);

    let (status, resp) = post_events(node.addr, &one).await;
    assert_eq!((status, resp), (200, json!({"stored": 1})));
    let rows = rollups(node.addr, "e", t0, t0 + MINUTE).await;
    assert_eq!(totals(&rows).0, 1, "only what was acknowledged: {rows:?}");
    stop(node).await;
}
