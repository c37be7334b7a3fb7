//! A `herald serve` process killed with SIGKILL in the middle of a publish
//! storm loses nothing it acknowledged: restarted on the same data
//! directory, every acknowledged message is in history exactly once and in
//! order, and a subscriber that was connected resumes from its last
//! position with everything it missed and `recovered = true`.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_protocol::{ClientEvent, PublishOptions, SubscribeOptions};
use support::*;

const ROOMS: [&str; 3] = ["chat:crash-a", "chat:crash-b", "chat:crash-c"];
const PUBLISHERS: usize = 4;

/// What publishers were told, per room: (offset, text).
type Acked = Arc<Mutex<BTreeMap<&'static str, Vec<(u64, String)>>>>;

/// Every message of `room` in history, oldest first, paging forward.
async fn full_history(addr: std::net::SocketAddr, room: &str) -> Vec<(u64, String)> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let path = format!("/api/history/{room}?after={after}&limit=500");
        let (status, body) = http(addr, "GET", &path, Some(API_KEY), None).await;
        assert_eq!(status, 200, "{body}");
        let page: Vec<(u64, String)> = body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["offset"].as_u64().unwrap(), m["data"].as_str().unwrap().to_owned()))
            .collect();
        let Some(&(last, _)) = page.last() else { break };
        all.extend(page);
        after = last;
        if body["has_more"] != true {
            break;
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_message_survives_sigkill_once_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let args = ["--api-key", API_KEY];
    let node = NodeProcess::start_at(port, 2, dir.path(), &args).await;
    let url = node.url();

    // A subscriber that stays connected across the crash.
    let (watcher, mut events) = client(&url, "watcher").await;
    let sub = watcher.subscribe(ROOMS[0], SubscribeOptions::default()).await.unwrap();

    // Publishers, each on its own connection, round-robin over the rooms,
    // recording what was acknowledged.
    let acked: Acked = Arc::default();
    let stop_at = Instant::now() + Duration::from_secs(20);
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let (c, _events) = client(&url, &format!("pub{p}")).await;
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            let _events = _events;
            for seq in 0.. {
                if Instant::now() > stop_at {
                    break;
                }
                let room = ROOMS[(p + seq) % ROOMS.len()];
                let text = format!("p{p}-{seq}");
                match c
                    .publish(room, text.clone().into_bytes(), PublishOptions::default())
                    .await
                {
                    Ok(pos) => acked.lock().unwrap().entry(room).or_default().push((pos.offset, text)),
                    // The node died under it: what was not acknowledged
                    // may or may not be stored.
                    Err(_) => break,
                }
            }
            c.close().await;
        }));
    }
    // Let acknowledgements pile up, then kill the node mid-stream.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n: usize = acked.lock().unwrap().values().map(Vec::len).sum();
        if n >= 600 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // What the watcher saw before the crash.
    node.kill();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let total: usize = acked.values().map(Vec::len).sum();
    assert!(
        total >= 100,
        "the storm got going before the kill: {total} acknowledged"
    );

    let node = NodeProcess::start_at(port, 2, dir.path(), &args).await;
    for room in ROOMS {
        let history = full_history(node.addr, room).await;
        let offsets: Vec<u64> = history.iter().map(|(o, _)| *o).collect();
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{room}: in order, no repeat");
        let texts: HashSet<&str> = history.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(texts.len(), history.len(), "{room}: no message stored twice");
        let by_offset: BTreeMap<u64, &str> = history.iter().map(|(o, t)| (*o, t.as_str())).collect();
        for (offset, text) in acked.get(room).into_iter().flatten() {
            assert_eq!(
                by_offset.get(offset).copied(),
                Some(text.as_str()),
                "{room}: acknowledged message {offset} is stored as acknowledged"
            );
        }
    }

    // The watcher reconnects to the restarted node and resumes: what it got
    // before and after the crash together is the room's whole history.
    let mut seen = Vec::new();
    let resumed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match events.recv().await.expect("events stream open") {
                ClientEvent::Message(d) => seen.push(d.offset),
                ClientEvent::Subscribed {
                    resumed: true,
                    recovered,
                    epoch,
                    history,
                    ..
                } => {
                    seen.extend(history.iter().map(|d| d.offset));
                    return (recovered, epoch);
                }
                _ => {}
            }
        }
    })
    .await
    .expect("the watcher resumes on the restarted node");
    assert_eq!(resumed, (true, sub.epoch), "recovered in the same epoch");
    let stored: Vec<u64> = full_history(node.addr, ROOMS[0])
        .await
        .iter()
        .map(|(o, _)| *o)
        .collect();
    assert_eq!(seen, stored, "the watcher has every stored message once, in order");
    watcher.close().await;
}
