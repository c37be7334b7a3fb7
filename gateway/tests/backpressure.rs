//! Pressure travels end to end: publishers on every shard flood one room's
//! owner faster than the shards can deliver, through lanes of only 16
//! messages. What waits in overflow stays bounded (the owner stops taking
//! publishes while its deliveries wait, the publishing shards stop reading
//! their clients), and nothing acknowledged is lost or reordered.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use herald_gateway::NodeConfig;
use herald_protocol::wire::Body;
use herald_protocol::{DecodeLimits, ErrorCode, decode};
use support::{RawWs, WAIT, metric, publish_frame, ws_connected, ws_subscribe};
use tokio_tungstenite::tungstenite::Message;

const ROOM: &str = "chat:flood";
const SHARDS: usize = 4;
const SUBSCRIBERS: usize = 12;
const PUBLISHERS: usize = 6;
const PER_PUBLISHER: u32 = 1500;
/// What one shard may have waiting at once: the output of one publish (a
/// delivery per shard and the answer), a frame's worth of its own clients'
/// input, and the leaves of closing connections. Without back-pressure it
/// grows with the flood, into the thousands.
const OVERFLOW_BOUND: u64 = 64;

fn config() -> NodeConfig {
    let mut c = NodeConfig {
        shards: SHARDS,
        shard_channel_capacity: 16,
        ..NodeConfig::default()
    };
    c.session.limits.publish_rate_per_sec = 1_000_000;
    c.session.limits.publish_burst = 1_000_000;
    // Subscribers that fall behind during the flood must not be closed as
    // slow consumers: the test counts every message.
    c.session.limits.max_outbound_bytes = 64 << 20;
    c
}

/// Reads until `want` messages of ROOM arrived; returns their offsets.
async fn receive(mut ws: RawWs, want: usize) -> Vec<u64> {
    let mut offsets = Vec::with_capacity(want);
    while offsets.len() < want {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("deliveries keep coming")
            .expect("open")
            .expect("frame");
        if let Message::Binary(b) = msg {
            let f = decode(&b, &DecodeLimits::SERVER_TO_CLIENT).expect("valid frame");
            if let Some(m) = f.body_as_message() {
                offsets.push(m.offset());
            }
        }
    }
    offsets
}

/// Sends PER_PUBLISHER publishes as fast as the socket takes them while
/// reading their answers; returns how many were acknowledged.
async fn flood(ws: RawWs, acked: Arc<AtomicU64>) {
    let (mut tx, mut rx) = ws.split();
    let writer = tokio::spawn(async move {
        for i in 1..=PER_PUBLISHER {
            let frame = publish_frame(i, ROOM, format!("m{i}").as_bytes());
            tx.feed(Message::Binary(frame)).await.expect("send");
        }
        tx.flush().await.expect("flush");
        tx
    });
    let mut answered = 0;
    while answered < PER_PUBLISHER {
        let msg = tokio::time::timeout(WAIT, rx.next())
            .await
            .expect("answers keep coming")
            .expect("open")
            .expect("frame");
        let Message::Binary(b) = msg else { continue };
        let f = decode(&b, &DecodeLimits::SERVER_TO_CLIENT).expect("valid frame");
        if f.body_type() == Body::Reply {
            let reply = f.body_as_reply().expect("reply");
            assert_eq!(reply.code(), ErrorCode::Ok, "a publish was refused");
            answered += 1;
            acked.fetch_add(1, Ordering::Relaxed);
        }
    }
    let _tx = writer.await.expect("writer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flooded_owner_keeps_what_waits_bounded_and_loses_nothing() {
    let node = support::node_with(config());
    let url = node.url();
    let mut readers = Vec::new();
    for i in 0..SUBSCRIBERS {
        let (mut ws, _) = ws_connected(&url, &format!("sub{i}")).await;
        ws_subscribe(&mut ws, 1, ROOM, false).await;
        readers.push(tokio::spawn(receive(ws, PUBLISHERS * PER_PUBLISHER as usize)));
    }
    let acked = Arc::new(AtomicU64::new(0));
    let mut floods = Vec::new();
    for i in 0..PUBLISHERS {
        let (ws, _) = ws_connected(&url, &format!("pub{i}")).await;
        floods.push(tokio::spawn(flood(ws, acked.clone())));
    }
    for f in floods {
        tokio::time::timeout(Duration::from_secs(60), f)
            .await
            .expect("the flood ends")
            .expect("publisher");
    }
    let total = PUBLISHERS as u64 * u64::from(PER_PUBLISHER);
    assert_eq!(acked.load(Ordering::Relaxed), total);
    for r in readers {
        let offsets = tokio::time::timeout(Duration::from_secs(60), r)
            .await
            .expect("every message arrives")
            .expect("reader");
        // Every acknowledged message, once, in offset order.
        assert_eq!(offsets, (1..=total).collect::<Vec<u64>>());
    }

    let text = support::HttpConn::open(node.addr)
        .await
        .request("GET", "/metrics", None, None)
        .await
        .text();
    let peaks: Vec<u64> = (0..SHARDS)
        .map(|s| support::metric_in(&text, "herald_shard_overflow_peak_messages", &format!("shard=\"{s}\"")))
        .collect();
    assert!(
        peaks.iter().any(|&p| p > 0),
        "the flood never filled a lane, so it proved nothing: {peaks:?}"
    );
    assert!(
        peaks.iter().all(|&p| p <= OVERFLOW_BOUND),
        "overflow peaks per shard {peaks:?} exceed {OVERFLOW_BOUND}"
    );
    assert_eq!(metric(node.addr, "herald_shard_overflow_messages", "").await, 0);
}
