//! Node configuration with documented defaults.

use std::net::SocketAddr;
use std::time::Duration;

use herald_protocol::ServerConfig;

/// Settings of a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Address for WebSocket clients (`ws://ADDR/ws`). Default 127.0.0.1:8080.
    pub listen: SocketAddr,
    /// This node's id, sent to clients in `Connected`. Default "dev-1".
    pub node_id: String,
    /// Session timing and per-connection limits.
    pub session: ServerConfig,
    /// Messages kept in memory per room for history and resume. Default 1,000.
    pub history_per_room: usize,
    /// Idempotency keys remembered per room. Default 10,000.
    pub dedup_per_room: usize,
    /// Rooms a node holds; subscribing or publishing to a new room beyond it
    /// is refused with `Unavailable`. Default 100,000.
    pub max_rooms: usize,
    /// Subscribers per room; beyond it `RoomFull`. Default 100,000.
    pub max_subscribers_per_room: usize,
    /// Open connections; beyond it new ones are closed with
    /// `ConnectionLimit`. Default 10,000.
    pub max_connections: usize,
    /// Time connections get to drain after `GoAway` on shutdown. Default 5 s.
    pub shutdown_grace: Duration,
    /// Delay clients are told to wait before reconnecting after shutdown.
    /// Default 1 s.
    pub reconnect_after: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            node_id: "dev-1".into(),
            session: ServerConfig::default(),
            history_per_room: 1_000,
            dedup_per_room: 10_000,
            max_rooms: 100_000,
            max_subscribers_per_room: 100_000,
            max_connections: 10_000,
            shutdown_grace: Duration::from_secs(5),
            reconnect_after: Duration::from_secs(1),
        }
    }
}
