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
    let dir = peer_dir();
    assert!(
        dir.join("node_modules/socket.io").is_dir(),
        "the Socket.IO reference server is not installed: run scripts/test, or `npm ci --prefix {}`",
        dir.display()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("node")
        .arg("server.js")
        .current_dir(&dir)
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .spawn()
        .expect("node (Node.js 20) is installed");
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "reference server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, port)
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
