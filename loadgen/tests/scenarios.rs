//! Every scenario, briefly, against a real Herald node on loopback (in this
//! process), through the `herald-loadgen` binary; then the JSON report's
//! counts are checked against each other.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use herald_gateway::{NodeConfig, NodeHandle};
use serde_json::Value;

mod support;
use support::{loadgen, read, tmp, u};

fn node() -> NodeHandle {
    node_with(|_| {})
}

fn node_with(adjust: impl FnOnce(&mut NodeConfig)) -> NodeHandle {
    let mut config = NodeConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        shards: 2,
        ..NodeConfig::default()
    };
    // Publishers here send far above the default per-connection limit.
    config.session.limits.publish_rate_per_sec = 1_000_000;
    config.session.limits.publish_burst = 1_000_000;
    adjust(&mut config);
    NodeHandle::spawn(config).expect("node starts")
}

/// delivered + lost = expected, for the run and for every step, and the
/// steps add up to the run.
fn assert_consistent(r: &Value) {
    assert_eq!(u(&r["delivered"]) + u(&r["lost"]), u(&r["expected"]), "run totals: {r}");
    let steps = r["rate"]["steps"].as_array().unwrap();
    assert!(!steps.is_empty());
    let mut sums = [0u64; 3];
    for s in steps {
        assert_eq!(
            u(&s["delivered"]) + u(&s["lost"]),
            u(&s["expected"]),
            "step {}",
            s["name"]
        );
        sums[0] += u(&s["sent"]);
        sums[1] += u(&s["expected"]);
        sums[2] += u(&s["delivered"]);
    }
    assert_eq!(sums, [u(&r["sent"]), u(&r["expected"]), u(&r["delivered"])]);
    assert_eq!(
        u(&r["latency_us"]["count"]),
        u(&r["delivered"]),
        "one latency per delivery"
    );
    assert!(!r["timeline"].as_array().unwrap().is_empty());
}

#[test]
fn fanout_counts_add_up_and_nothing_is_lost_on_loopback() {
    let node = node();
    let target = format!("ws://{}/ws", node.addr);
    let r = loadgen(
        &[
            "fanout",
            "--target",
            &target,
            "--subscribers",
            "60",
            "--rooms",
            "6",
            "--publishers",
            "3",
            "--rates",
            "200,400",
            "--duration",
            "1s",
        ],
        "fanout",
    );
    assert_consistent(&r);
    assert_eq!(u(&r["connections"]["ok"]), 63);
    let steps = r["rate"]["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    for s in steps {
        // Each message reaches the 10 subscribers of its room.
        assert_eq!(u(&s["expected"]), u(&s["sent"]) * 10);
        assert_eq!(u(&s["lost"]), 0);
        assert_eq!(u(&s["duplicated"]), 0);
        assert_eq!(u(&s["out_of_order"]), 0);
        assert_eq!(u(&s["acks_ok"]), u(&s["sent"]));
        assert_eq!(u(&s["send_lag_us"]["count"]), u(&s["sent"]));
        // Publish→ack latency: one per ack, though a publisher's two rooms
        // may sit on different shards and answer out of order.
        let acks = &s["ack_latency_us"];
        assert_eq!(u(&acks["count"]), u(&s["acks_ok"]), "one ack latency per ack: {s}");
        assert!(u(&acks["p50"]) > 0, "{acks}");
        assert!(u(&acks["p50"]) <= u(&acks["p99"]) && u(&acks["p99"]) <= u(&acks["max"]));
        assert!(u(&acks["max"]) < 60_000_000, "from this step's schedule: {acks}");
        for k in ["acks_untimed", "acks_untracked", "acks_unanswered"] {
            assert_eq!(u(&s[k]), 0, "{k}: {s}");
        }
    }
    assert_eq!(u(&r["ack_latency_us"]["count"]), 600, "over the run");
    assert_eq!(u(&steps[0]["sent"]), 200);
    assert_eq!(u(&steps[1]["sent"]), 400);
    assert_eq!(r["rate"]["max_sustained_rate"].as_f64(), Some(400.0));
    node.shutdown();
}

/// Two targets that are one node (two names for it): every delivery
/// arrives, and the report splits them by whether the subscriber's target
/// was its publisher's. Against a cluster the same run tells cross-node
/// latency from same-node latency.
#[test]
fn fanout_over_two_targets_splits_same_and_cross_node_deliveries() {
    let node = node();
    let port = node.addr.port();
    let targets = format!("ws://127.0.0.1:{port}/ws,ws://localhost:{port}/ws");
    let r = loadgen(
        &[
            "fanout",
            "--target",
            &targets,
            "--workers",
            "2",
            "--subscribers",
            "40",
            "--rooms",
            "4",
            "--publishers",
            "2",
            "--publishers-on",
            "1",
            "--rate",
            "200",
            "--duration",
            "1s",
        ],
        "two-targets",
    );
    assert_consistent(&r);
    assert_eq!(u(&r["lost"]), 0);
    assert_eq!(r["placement"]["subscribers_per_target"], serde_json::json!([20, 20]));
    assert_eq!(r["placement"]["publishers_per_target"], serde_json::json!([0, 2]));
    // Rooms of 10, dealt 5 and 5 over the two targets; every publisher on
    // target 1: half of each message's deliveries stay on its node.
    let s = &r["rate"]["steps"][0];
    for l in [&r["locality"], &s["locality"]] {
        let (same, cross) = (&l["same_node"], &l["cross_node"]);
        assert_eq!(u(&same["expected"]), 200 * 5, "{l}");
        assert_eq!(u(&cross["expected"]), 200 * 5, "{l}");
        assert_eq!(u(&same["delivered"]), 1000);
        assert_eq!(u(&cross["delivered"]), 1000);
        assert_eq!(u(&same["lost"]) + u(&cross["lost"]), 0);
        assert_eq!(u(&same["latency_us"]["count"]), 1000, "one latency per delivery");
        assert_eq!(u(&cross["latency_us"]["count"]), 1000);
        for side in [same, cross] {
            let p = |k: &str| u(&side["latency_us"][k]);
            assert!(0 < p("p50") && p("p50") <= p("p99") && p("p99") <= p("p999"), "{side}");
        }
    }
    let hist: u64 = r["locality"]["cross_node"]["latency_histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| u(&pair[1]))
        .sum();
    assert_eq!(hist, 1000, "the run keeps each side's histogram");

    // Chat over the same two targets: users alternate, and the split adds
    // up to the whole.
    let r = loadgen(
        &[
            "chat",
            "--target",
            &targets,
            "--users",
            "20",
            "--rooms",
            "2",
            "--rate",
            "100",
            "--duration",
            "1s",
            "--churn-users",
            "0",
        ],
        "two-targets-chat",
    );
    assert_consistent(&r);
    let l = &r["locality"];
    assert_eq!(
        u(&l["same_node"]["expected"]) + u(&l["cross_node"]["expected"]),
        u(&r["expected"])
    );
    assert_eq!(
        u(&l["same_node"]["delivered"]) + u(&l["cross_node"]["delivered"]),
        u(&r["delivered"])
    );
    assert!(u(&l["cross_node"]["delivered"]) > 0 && u(&l["same_node"]["delivered"]) > 0);
    assert_eq!(r["placement"]["connections_per_target"], serde_json::json!([10, 10]));
    node.shutdown();
}

#[test]
fn connect_holds_every_connection_and_measures_the_target() {
    let node = node();
    let target = format!("ws://{}/ws", node.addr);
    let pid = std::process::id().to_string();
    let r = loadgen(
        &[
            "connect",
            "--target",
            &target,
            "--connections",
            "50",
            "--connect-rate",
            "500",
            "--hold",
            "1s",
            "--target-pid",
            &pid,
        ],
        "connect",
    );
    assert_eq!(u(&r["connections"]["ok"]), 50);
    assert_eq!(u(&r["connections"]["failed"]), 0);
    assert_eq!(u(&r["connections"]["alive_after_hold"]), 50);
    assert_eq!(u(&r["connect_latency_us"]["count"]), 50);
    assert!(u(&r["target"]["rss_bytes"]) > 0);
    // Sampled during the run, not only at its ends.
    assert!(u(&r["target"]["rss_bytes_peak"]) >= u(&r["target"]["rss_bytes_before"]));
    let sampled = r["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["target_rss_bytes"].is_u64())
        .count();
    assert!(sampled >= 1, "per-second RSS samples: {}", r["timeline"]);
    // Opened at 500/s: the last is due ~98 ms after the first, so the run's
    // timeline starts at t = 0 and the report has its options.
    assert_eq!(r["options"]["connections"], 50);
    node.shutdown();
}

#[test]
fn connect_failures_are_counted_by_reason() {
    // Nothing listens on this port.
    let free = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let target = format!("ws://{free}/ws");
    let r = loadgen(
        &["connect", "--target", &target, "--connections", "5", "--hold", "0s"],
        "refused",
    );
    assert_eq!(u(&r["connections"]["ok"]), 0);
    assert_eq!(u(&r["connections"]["failed_by_reason"]["refused"]), 5);
}

#[test]
fn chat_with_churn_and_typing_adds_up() {
    let node = node();
    let target = format!("ws://{}/ws", node.addr);
    let r = loadgen(
        &[
            "chat",
            "--target",
            &target,
            "--users",
            "40",
            "--rooms",
            "5",
            "--rooms-per-user",
            "2",
            "--rate",
            "100",
            "--duration",
            "1s",
            "--churn-users",
            "5",
            "--churn-rate",
            "20",
            "--typing",
            "0.5",
        ],
        "chat",
    );
    assert_consistent(&r);
    assert_eq!(u(&r["lost"]), 0);
    assert_eq!(u(&r["duplicated"]), 0);
    let s = &r["rate"]["steps"][0];
    assert_eq!(u(&s["sent"]), 100);
    assert!(u(&s["typing_events"]) > 0, "typing indicators reach room members");
    assert!(u(&s["presence_events"]) > 0, "churn shows as presence events");
    node.shutdown();
}

#[test]
fn scenario_file_runs_every_phase() {
    let node = node();
    let target = format!("ws://{}/ws", node.addr);
    let file = tmp("phases.toml");
    std::fs::write(
        &file,
        r#"
scenario = "fanout"
drain = "1s"
[fanout]
subscribers = 20
rooms = 4
publishers = 2
[[phase]]
name = "ramp-up"
duration = "1s"
from = 0
to = 200
[[phase]]
name = "steady"
duration = "1s"
rate = 200
[[phase]]
name = "spike"
duration = "500ms"
rate = 800
[[phase]]
name = "ramp-down"
duration = "1s"
from = 200
to = 0
"#,
    )
    .unwrap();
    let r = loadgen(&["run", file.to_str().unwrap(), "--target", &target], "run");
    assert_consistent(&r);
    let names: Vec<&str> = r["rate"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ramp-up", "steady", "spike", "ramp-down"]);
    let sent: Vec<u64> = r["rate"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| u(&s["sent"]))
        .collect();
    assert_eq!(sent, [100, 200, 400, 100]);
    node.shutdown();
}

#[test]
fn workers_split_the_connections_and_merge_the_counts() {
    let node = node();
    let target = format!("ws://{}/ws", node.addr);
    let r = loadgen(
        &[
            "fanout",
            "--target",
            &target,
            "--workers",
            "3",
            "--source-ips",
            "127.0.0.2-127.0.0.4",
            "--subscribers",
            "90",
            "--rooms",
            "9",
            "--publishers",
            "9",
            "--rate",
            "300",
            "--duration",
            "1s",
        ],
        "workers",
    );
    assert_consistent(&r);
    assert_eq!(u(&r["connections"]["ok"]), 99);
    assert_eq!(u(&r["lost"]), 0);
    assert_eq!(u(&r["expected"]), 300 * 10);
    assert_eq!(r["loadgen"]["workers"], 3);
    node.shutdown();
}

/// A TCP proxy that can stop passing bytes: the target's to the clients
/// (`stalled`) or the clients' to the target (`stalled_up`).
struct Proxy {
    addr: SocketAddr,
    stalled: Arc<AtomicBool>,
    stalled_up: Arc<AtomicBool>,
    connections: Arc<AtomicUsize>,
}

fn proxy(upstream: SocketAddr) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stalled = Arc::new(AtomicBool::new(false));
    let stalled_up = Arc::new(AtomicBool::new(false));
    let connections = Arc::new(AtomicUsize::new(0));
    let (s, up, n) = (stalled.clone(), stalled_up.clone(), connections.clone());
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let Ok(server) = TcpStream::connect(upstream) else {
                return;
            };
            n.fetch_add(1, Ordering::SeqCst);
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let stall_up = up.clone();
            std::thread::spawn(move || pipe(c2, s2, stall_up));
            let stall = s.clone();
            std::thread::spawn(move || pipe(server, client, stall));
        }
    });
    Proxy {
        addr,
        stalled,
        stalled_up,
        connections,
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream, stall: Arc<AtomicBool>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while stall.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

impl Proxy {
    /// Blocks until `n` clients have connected through the proxy.
    fn wait_for(&self, n: usize) {
        while self.connections.load(Ordering::SeqCst) < n {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// From another thread: once `n` clients are connected and `after` has
    /// passed, raises `flag` (one of this proxy's stalls) for `hold`.
    fn stall_later(
        &self,
        flag: &Arc<AtomicBool>,
        n: usize,
        after: Duration,
        hold: Duration,
    ) -> std::thread::JoinHandle<()> {
        let (flag, conns) = (flag.clone(), self.connections.clone());
        std::thread::spawn(move || {
            while conns.load(Ordering::SeqCst) < n {
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(after);
            flag.store(true, Ordering::SeqCst);
            std::thread::sleep(hold);
            flag.store(false, Ordering::SeqCst);
        })
    }
}

fn stall_run(stall: bool, name: &str) -> Value {
    let node = node();
    let p = proxy(node.addr);
    let target = format!("ws://{}/ws", p.addr);
    // Once all 11 connections are up, let a second of the step pass, then
    // hold every delivery back for 800 ms.
    let staller = stall.then(|| p.stall_later(&p.stalled, 11, Duration::from_secs(1), Duration::from_millis(800)));
    let r = loadgen(
        &[
            "fanout",
            "--target",
            &target,
            "--subscribers",
            "10",
            "--rooms",
            "1",
            "--publishers",
            "1",
            "--rate",
            "200",
            "--duration",
            "3s",
            "--keep-up",
            "0",
        ],
        name,
    );
    if let Some(staller) = staller {
        staller.join().unwrap();
    }
    node.shutdown();
    r
}

/// Coordinated omission: a closed-loop tool stops sending while the target
/// stalls and records one slow sample. Open loop keeps the schedule, so
/// every message due during the stall shows its wait: with 800 ms of 3 s
/// stalled, well over 1 % of the deliveries wait hundreds of ms.
#[test]
fn a_stalled_target_raises_p99() {
    let calm = stall_run(false, "calm");
    let stalled = stall_run(true, "stalled");
    assert_consistent(&calm);
    assert_consistent(&stalled);
    let p99 = |r: &Value| u(&r["latency_us"]["p99"]);
    let p90 = |r: &Value| u(&r["latency_us"]["p90"]);
    assert!(p99(&stalled) >= 500_000, "stalled p99 {} µs", p99(&stalled));
    // ~27 % of the messages were due during or just before the stall.
    assert!(p90(&stalled) >= 100_000, "stalled p90 {} µs", p90(&stalled));
    assert!(p99(&calm) * 4 < p99(&stalled), "calm p99 {} µs", p99(&calm));
    assert_eq!(u(&stalled["lost"]), 0, "a stall delays, it does not lose");
    // The wait was the target's: the generator kept its schedule.
    let lag = &stalled["rate"]["steps"][0]["send_lag_us"];
    assert!(u(&lag["p99"]) < 100_000, "send lag {lag}");
}

/// The other half of coordinated omission: when the generator itself is
/// late (here: stopped with SIGSTOP for 800 ms), the messages it sends late
/// still count from when they were due. Stamping the actual send time
/// instead would hide the stall, and this test would fail.
#[test]
fn a_late_generator_counts_from_the_schedule() {
    let node = node();
    let p = proxy(node.addr);
    let target = format!("ws://{}/ws", p.addr);
    let json = tmp("late.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald-loadgen"))
        .args([
            "fanout",
            "--target",
            &target,
            "--subscribers",
            "10",
            "--publishers",
            "1",
            "--rate",
            "200",
            "--duration",
            "3s",
            "--keep-up",
            "0",
            "--quiet",
            "--json",
        ])
        .arg(&json)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    p.wait_for(11);
    std::thread::sleep(Duration::from_millis(1_000));
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    std::thread::sleep(Duration::from_millis(800));
    assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    assert!(child.wait().unwrap().success());
    let r = read(&json);
    assert_consistent(&r);
    assert!(
        u(&r["latency_us"]["p99"]) >= 500_000,
        "p99 {} µs",
        r["latency_us"]["p99"]
    );
    assert_eq!(u(&r["sent"]), 600, "late messages are sent, not skipped");
    // ... and the report says the generator was the late one.
    let lag = &r["rate"]["steps"][0]["send_lag_us"];
    assert_eq!(u(&lag["count"]), 600);
    assert!(u(&lag["max"]) >= 500_000, "send lag {lag}");
    node.shutdown();
}

/// More than this process can send: the step ends on time, says how many
/// messages it could not send, and is not counted as kept up. Every
/// subscriber stays connected while the node coalesces large bursts to it.
#[test]
fn a_schedule_beyond_the_generator_is_reported_not_chased() {
    // The flood is far beyond what one process reads back, so the node's
    // slow-consumer limit (1 MiB by default) is raised out of the way:
    // this test is about the generator, which must take multi-megabyte
    // bursts without dropping a subscriber itself.
    let node = node_with(|c| c.session.limits.max_outbound_bytes = 256 << 20);
    let target = format!("ws://{}/ws", node.addr);
    let started = std::time::Instant::now();
    let r = loadgen(
        &[
            "fanout",
            "--target",
            &target,
            "--subscribers",
            "10",
            "--rate",
            "5000000",
            "--duration",
            "1s",
            "--drain",
            "1s",
        ],
        "behind",
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_consistent(&r);
    let s = &r["rate"]["steps"][0];
    assert!(u(&s["not_sent"]) > 0);
    assert!(
        u(&s["errors"]["not sent: generator behind schedule"]) > 0,
        "{}",
        s["errors"]
    );
    assert_eq!(s["kept_up"], false);
    assert!(r["rate"]["max_sustained_deliveries_per_sec"].is_null());
    assert!(
        !s["errors"]
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.starts_with("dropped")),
        "no subscriber dropped: {}",
        s["errors"]
    );
    node.shutdown();
}

/// A target that stops reading: the generator queues at most 8 MiB per
/// connection and counts the rest as not sent, instead of growing.
#[test]
fn a_target_that_stops_reading_does_not_grow_the_generator() {
    let node = node();
    let p = proxy(node.addr);
    let target = format!("ws://{}/ws", p.addr);
    // Let the handshakes through, then stop forwarding what clients send.
    let staller = p.stall_later(&p.stalled_up, 2, Duration::from_millis(500), Duration::from_secs(3));
    // 2,000 publishes/s of 16,000 B is 32 MB/s into a stalled socket.
    let r = loadgen(
        &[
            "fanout",
            "--target",
            &target,
            "--subscribers",
            "1",
            "--rate",
            "2000",
            "--payload",
            "16000",
            "--duration",
            "2s",
            "--drain",
            "1s",
            "--connect-window",
            "1",
        ],
        "stuck",
    );
    staller.join().unwrap();
    assert_consistent(&r);
    let s = &r["rate"]["steps"][0];
    assert!(
        u(&s["errors"]["not sent: 8 MiB already queued to the target"]) > 0,
        "{}",
        s["errors"]
    );
    assert_eq!(s["kept_up"], false);
    node.shutdown();
}

#[test]
fn compare_and_html_read_the_reports() {
    let node = node();
    let target = format!("ws://{}/ws", node.addr);
    let args = [
        "fanout",
        "--target",
        &target,
        "--subscribers",
        "20",
        "--rooms",
        "2",
        "--rate",
        "100",
        "--duration",
        "1s",
    ];
    let a = loadgen(&args, "cmp-a");
    let html = tmp("cmp-b.html");
    let mut with_html = args.to_vec();
    with_html.extend(["--html", html.to_str().unwrap()]);
    let b = loadgen(&with_html, "cmp-b");
    assert_eq!(a["expected"], b["expected"], "same plan, same expected count");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<svg"));
    let out = Command::new(env!("CARGO_BIN_EXE_herald-loadgen"))
        .args([
            "compare",
            tmp("cmp-a.json").to_str().unwrap(),
            tmp("cmp-b.json").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("1.00"), "equal expected counts give ratio 1.00:\n{text}");
    node.shutdown();
}
