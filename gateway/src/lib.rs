//! The Herald gateway.
//!
//! Today this is a single-threaded development node: WebSocket clients at
//! `/ws`, rooms with per-room epochs and offsets, bounded in-memory history
//! with resume and explicit `recovered = false` on gaps, presence, typing,
//! publish acks with idempotency-key deduplication, and graceful shutdown
//! with `GoAway`. Authentication is development-only (the token is the user
//! id), so the binary refuses to listen on non-loopback addresses. Sharding,
//! JWT, limits configuration, the HTTP API and metrics come next.

mod config;
mod connection;
mod node;
mod room;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub use config::NodeConfig;
pub use connection::close_code;
use node::Node;

/// Runs a node on `listener` until `shutdown` resolves, then sends `GoAway`
/// to every connection and waits (at most `shutdown_grace`) for them to
/// close. Must run inside a [`tokio::task::LocalSet`].
pub async fn run(listener: TcpListener, config: NodeConfig, shutdown: impl Future<Output = ()>) {
    let grace = config.shutdown_grace;
    let reconnect_after = config.reconnect_after;
    let node = Rc::new(RefCell::new(Node::new(config)));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    tokio::task::spawn_local(connection::serve(node.clone(), stream));
                }
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let open = node.borrow().conns.len();
    tracing::info!(connections = open, "shutting down: sending GoAway");
    node.borrow().go_away_all("node shutting down", reconnect_after);
    let deadline = Instant::now() + grace;
    while !node.borrow().conns.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let left = node.borrow().conns.len();
    if left > 0 {
        tracing::warn!(connections = left, "shutdown grace expired with connections still open");
    }
}

/// A node running on its own thread (for tests and embedding).
#[derive(Debug)]
pub struct NodeHandle {
    /// The bound address.
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NodeHandle {
    /// Binds `config.listen` (port 0 picks a free port) and runs the node on
    /// a new thread with its own current-thread runtime.
    pub fn spawn(config: NodeConfig) -> std::io::Result<NodeHandle> {
        let std_listener = std::net::TcpListener::bind(config.listen)?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name("herald-node".into()).spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start runtime");
                    return;
                }
            };
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async move {
                let listener = match TcpListener::from_std(std_listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot register listener");
                        return;
                    }
                };
                run(listener, config, async {
                    let _ = rx.await;
                })
                .await;
            });
        })?;
        Ok(NodeHandle {
            addr,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// The WebSocket URL of this node.
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Shuts the node down gracefully and waits for its thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for NodeHandle {
    fn drop(&mut self) {
        self.stop();
    }
}
