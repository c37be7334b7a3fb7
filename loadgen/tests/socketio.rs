//! The `socketio://` target against the reference Socket.IO 4 server in
//! benches/peers/socketio (installed by scripts/test with `npm ci`).

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::{loadgen, u};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn peer_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../benches/peers/socketio")
}

fn start_server() -> (Server, u16) {
    start_server_with(&[])
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The reference server with extra environment (`REDIS_URL`).
fn start_server_with(env: &[(&str, &str)]) -> (Server, u16) {
    let dir = peer_dir();
    assert!(
        dir.join("node_modules/socket.io").is_dir(),
        "the Socket.IO reference server is not installed: run scripts/test, or `npm ci --prefix {}`",
        dir.display()
    );
    let port = free_port();
    let child = Command::new("node")
        .arg("server.js")
        .current_dir(&dir)
        .env("PORT", port.to_string())
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .spawn()
        .expect("node (Node.js 20) is installed");
    let server = Server(child);
    wait_listening(port, "reference server");
    (server, port)
}

/// `fanout` over two Socket.IO processes, rooms of 10 dealt 5 and 5 over
/// them, both publishers on the first.
fn two_node_fanout(a: u16, b: u16, name: &str) -> serde_json::Value {
    let targets = format!("socketio://127.0.0.1:{a},socketio://127.0.0.1:{b}");
    loadgen(
        &[
            "fanout",
            "--target",
            &targets,
            "--subscribers",
            "40",
            "--rooms",
            "4",
            "--publishers",
            "2",
            "--publishers-on",
            "0",
            "--rate",
            "100",
            "--duration",
            "1s",
            "--drain",
            "500ms",
            "--keep-up",
            "0",
        ],
        name,
    )
}

/// Two processes that share nothing: what a subscriber on the other one
/// should have had is counted as lost, and only there.
#[test]
fn without_a_bus_every_cross_node_delivery_is_lost() {
    let (_a, a) = start_server();
    let (_b, b) = start_server();
    let r = two_node_fanout(a, b, "sio-no-bus");
    let (same, cross) = (&r["locality"]["same_node"], &r["locality"]["cross_node"]);
    assert_eq!((u(&same["expected"]), u(&same["delivered"])), (500, 500), "{same}");
    assert_eq!((u(&cross["expected"]), u(&cross["lost"])), (500, 500), "{cross}");
    assert!(cross["latency_us"].is_null());
    assert_eq!(u(&r["lost"]), 500);
}

/// Two processes sharing rooms through @socket.io/redis-streams-adapter
/// (`REDIS_URL`): every subscriber gets every message of its room, and the
/// report times the two halves apart. Needs `redis-server`; says so and
/// passes without it.
#[test]
fn through_redis_streams_cross_node_deliveries_arrive() {
    if Command::new("redis-server").arg("--version").output().is_err() {
        eprintln!("SKIPPED: redis-server is not installed (apt-get install redis-server)");
        return;
    }
    let port = free_port();
    // Dropped last, after the two servers that use it.
    let _redis = Server(
        Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(port, "redis-server");
    let url = format!("redis://127.0.0.1:{port}");
    let (_a, a) = start_server_with(&[("REDIS_URL", &url)]);
    let (_b, b) = start_server_with(&[("REDIS_URL", &url)]);
    let r = two_node_fanout(a, b, "sio-redis");
    assert_eq!(u(&r["lost"]), 0, "{}", r["rate"]["steps"][0]["errors"]);
    for side in ["same_node", "cross_node"] {
        let s = &r["locality"][side];
        assert_eq!((u(&s["expected"]), u(&s["delivered"])), (500, 500), "{side}: {s}");
        assert_eq!(u(&s["latency_us"]["count"]), 500);
    }
    assert_eq!(
        u(&r["out_of_order"]),
        0,
        "one publisher per room: in order across nodes too"
    );
}

#[test]
fn fanout_and_chat_against_socketio() {
    let (server, port) = start_server();
    let target = format!("socketio://127.0.0.1:{port}");
    let pid = server.0.id().to_string();
    let r = loadgen(
        &[
            "fanout",
            "--target",
            &target,
            "--subscribers",
            "40",
            "--rooms",
            "4",
            "--publishers",
            "2",
            "--rate",
            "200",
            "--duration",
            "1s",
            "--target-pid",
            &pid,
        ],
        "fanout",
    );
    assert_eq!(u(&r["connections"]["ok"]), 42);
    assert_eq!(u(&r["sent"]), 200);
    assert_eq!(u(&r["expected"]), 200 * 10);
    assert_eq!(u(&r["delivered"]) + u(&r["lost"]), u(&r["expected"]));
    assert_eq!(u(&r["lost"]), 0);
    assert_eq!(u(&r["out_of_order"]), 0);
    assert_eq!(u(&r["rate"]["steps"][0]["acks_ok"]), 200, "publish is acknowledged");
    // Socket.IO acks answer the publish's ack id: timed like Herald's.
    assert_eq!(u(&r["rate"]["steps"][0]["ack_latency_us"]["count"]), 200);
    assert!(u(&r["rate"]["steps"][0]["ack_latency_us"]["p50"]) > 0);
    assert!(u(&r["target"]["rss_bytes"]) > 0);

    let r = loadgen(
        &[
            "chat",
            "--target",
            &target,
            "--users",
            "30",
            "--rooms",
            "3",
            "--rate",
            "100",
            "--duration",
            "1s",
            "--typing",
            "0.5",
        ],
        "chat",
    );
    assert_eq!(u(&r["delivered"]) + u(&r["lost"]), u(&r["expected"]));
    assert_eq!(u(&r["lost"]), 0);
    assert!(u(&r["rate"]["steps"][0]["typing_events"]) > 0);
    assert_eq!(r["order_checked"], false, "Socket.IO assigns no order to check against");
}
