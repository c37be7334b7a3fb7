//! Node configuration with documented defaults. [`crate::settings`] builds it
//! from a TOML file, `HERALD_*` variables and flags.

use std::net::SocketAddr;
use std::time::Duration;

use herald_protocol::ServerConfig;
pub use herald_protocol::owner::NamespaceConfig;

pub use crate::origins::AllowedOrigins;

/// How clients authenticate at `Connect`.
#[derive(Clone, Default)]
pub enum AuthConfig {
    /// Unsigned development tokens (the token is the user id); only allowed
    /// on loopback addresses. The default.
    #[default]
    Development,
    /// JWTs signed with HS256 and this secret (at least 32 bytes).
    Hs256Secret(Vec<u8>),
    /// JWTs signed with RS256 or EdDSA, checked with this PEM public key.
    PublicKeyPem(Vec<u8>),
}

impl std::fmt::Debug for AuthConfig {
    // Never print key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AuthConfig::Development => "Development",
            AuthConfig::Hs256Secret(_) => "Hs256Secret(..)",
            AuthConfig::PublicKeyPem(_) => "PublicKeyPem(..)",
        })
    }
}

/// Settings of a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Address for HTTP and WebSocket clients (`ws://ADDR/ws`). Default
    /// 127.0.0.1:8080.
    pub listen: SocketAddr,
    /// Address for operators and backends: `/metrics` and the server API
    /// (`/api/...`) move here, off the public listener. Default: none, so a
    /// development node serves everything on `listen`.
    pub internal_listen: Option<SocketAddr>,
    /// Browser origins allowed to open WebSockets and SSE streams and to call
    /// the API (requests without `Origin` are not from pages and pass).
    /// Default here: any (a development node); `herald serve` defaults to
    /// same-origin only when a JWT key is configured.
    pub allowed_origins: AllowedOrigins,
    /// A directory served at `/app/` (development: the TypeScript client's
    /// example page). Default: none.
    pub static_dir: Option<std::path::PathBuf>,
    /// Shards (threads, each with its own listener). Default: the number of
    /// cores.
    pub shards: usize,
    /// How clients authenticate. Default: development tokens.
    pub auth: AuthConfig,
    /// Key the server API requires as `Authorization: Bearer <key>` (at least
    /// 16 characters). Default: 32 random characters.
    pub api_key: String,
    /// This node's id, sent to clients in `Connected`. Default "dev-1".
    pub node_id: String,
    /// Session timing and per-connection limits.
    pub session: ServerConfig,
    /// Options of rooms outside the configured namespaces.
    pub default_namespace: NamespaceConfig,
    /// Options per namespace. Default: [`NamespaceConfig::defaults`].
    pub namespaces: Vec<(String, NamespaceConfig)>,
    /// Idempotency keys remembered per room. Default 10,000.
    pub dedup_per_room: usize,
    /// Rooms a node holds (split evenly over shards); subscribing or
    /// publishing to a new room beyond it is refused with `Unavailable`.
    /// Default 100,000.
    pub max_rooms: usize,
    /// Open WebSocket sessions per node; beyond it new ones are closed with
    /// `ConnectionLimit`. Default 100,000.
    pub max_connections: usize,
    /// Sockets per node that are not WebSocket sessions: HTTP requests and
    /// keep-alive, upgrades in progress, closing connections (split evenly
    /// over shards). Beyond it a new connection gets `503` and is closed, so
    /// idle or slow HTTP clients cannot take every file descriptor.
    /// Default 10,000.
    pub max_http_connections: usize,
    /// Messages each lane between two shards holds (requests and replies
    /// each have one). A sender whose lane is full keeps the message in a
    /// short overflow queue and stops taking work until it drains. Default
    /// 16,384: enough that a 5,000-subscriber room's bursts never wait.
    pub shard_channel_capacity: usize,
    /// Time connections get to drain after `GoAway` on shutdown. Default 5 s.
    pub shutdown_grace: Duration,
    /// Delay clients are told to wait before reconnecting after shutdown.
    /// Default 1 s.
    pub reconnect_after: Duration,
    /// Where history, notifications and analytics events are kept.
    /// Default: in memory (nothing survives a restart); the `herald`
    /// binary defaults to the embedded store under `--data-dir`.
    pub storage: StorageConfig,
    /// Share rooms with other nodes through Redis (None: this node alone).
    pub cluster: Option<ClusterConfig>,
}

/// A node in a cluster: the Redis instances it shares rooms through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Redis URLs (`redis://host:port[/db]`); rooms are spread over them by
    /// a stable hash of their name, so every node must list the same ones
    /// in the same order.
    pub redis: Vec<String>,
    /// How long a node's presence entries outlive its last heartbeat (a
    /// killed node's users leave every room within about this much).
    pub presence_ttl: Duration,
    /// Publishes, follows and presence changes one Redis round trip carries
    /// at most (they are pipelined per instance).
    pub pipeline_max: usize,
    /// Cluster requests a shard may have waiting for the Redis bridge;
    /// beyond it publishes are refused with `Overloaded`.
    pub queue: usize,
}

impl ClusterConfig {
    /// A cluster over `redis` with the default timings.
    pub fn new(redis: Vec<String>) -> Self {
        Self {
            redis,
            presence_ttl: Duration::from_secs(15),
            pipeline_max: 512,
            queue: 8_192,
        }
    }
}

/// Which storage backend a node uses.
#[derive(Debug, Clone)]
pub enum StorageBackend {
    /// Nothing survives a restart: rooms keep only their memory window.
    Memory,
    /// The embedded store (fjall) in this directory.
    Embedded(std::path::PathBuf),
    /// ScyllaDB, as `scylla://host:9042,host2:9042/keyspace`.
    Scylla(String),
    /// Stores opened by the embedder (tests wrap one in a fault injector).
    Opened(herald_storage::Storage),
}

/// When the storage writer fsyncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Before every acknowledgement: an ack means the message is on disk.
    Always,
    /// At most this long after a write; acknowledgements do not wait (a
    /// crash loses up to this much acknowledged data).
    Interval(Duration),
    /// Never explicitly (the OS writes back when it likes).
    Never,
}

/// Storage settings of a node.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// The backend.
    pub backend: StorageBackend,
    /// When writes are made durable.
    pub sync: SyncPolicy,
    /// Writes (appends, marks) waiting for the writers, node-wide; beyond it
    /// publishers get `Overloaded`.
    pub write_queue: usize,
    /// Bytes those writes may hold (payloads and strings), node-wide;
    /// beyond it `Overloaded` too. Bounds the node's memory while a disk is
    /// slow whatever the payload sizes.
    pub write_queue_bytes: usize,
    /// Writer threads (at most one per shard; shard i writes through writer
    /// i mod n). One per node shares each sync among all shards' appends
    /// (BENCHMARKS.md, "Durable storage", measured both).
    pub writers: usize,
    /// Reads waiting for the readers, node-wide; beyond it `Overloaded`.
    pub read_queue: usize,
    /// Reader threads.
    pub readers: usize,
    /// Notifications kept per user (the oldest go first).
    pub notifications_per_user: u64,
    /// Raw analytics events are kept this long (rollups stay).
    pub events_max_age: Duration,
    /// How often retention runs.
    pub retention_interval: Duration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            backend: StorageBackend::Memory,
            sync: SyncPolicy::Always,
            write_queue: 64 * 1024,
            write_queue_bytes: 64 * 1024 * 1024,
            writers: 1,
            read_queue: 16 * 1024,
            readers: 2,
            notifications_per_user: 1_000,
            events_max_age: Duration::from_secs(7 * 24 * 3600),
            retention_interval: Duration::from_secs(60),
        }
    }
}

impl NodeConfig {
    /// The options of `room`'s namespace.
    pub fn namespace(&self, room: &str) -> &NamespaceConfig {
        herald_protocol::owner::namespace_of(room, &self.namespaces, &self.default_namespace)
    }

    /// Largest history of any namespace (bounds history queries).
    pub fn max_history(&self) -> usize {
        self.namespaces
            .iter()
            .map(|(_, c)| c.history)
            .chain([self.default_namespace.history])
            .max()
            .unwrap_or(1)
            .max(1)
    }
}

/// A random key of 32 characters from [A-Za-z0-9].
pub(crate) fn random_key() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 32];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness: fall back to the hasher's per-process keys.
        use std::hash::{BuildHasher, RandomState};
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = RandomState::new().hash_one(i) as u8;
        }
    }
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            internal_listen: None,
            allowed_origins: AllowedOrigins::Any,
            static_dir: None,
            shards: std::thread::available_parallelism().map_or(1, |n| n.get()),
            auth: AuthConfig::Development,
            api_key: random_key(),
            node_id: "dev-1".into(),
            session: ServerConfig::default(),
            default_namespace: NamespaceConfig::general(),
            namespaces: NamespaceConfig::defaults(),
            dedup_per_room: 10_000,
            max_rooms: 100_000,
            max_connections: 100_000,
            max_http_connections: 10_000,
            shard_channel_capacity: 16 * 1024,
            shutdown_grace: Duration::from_secs(5),
            reconnect_after: Duration::from_secs(1),
            storage: StorageConfig::default(),
            cluster: None,
        }
    }
}
