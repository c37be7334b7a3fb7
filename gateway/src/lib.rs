//! The Herald gateway: a sharded WebSocket and HTTP server.
//!
//! A node runs one shard per core. Each shard is a thread with its own epoll
//! loop and its own `SO_REUSEPORT` listener on the node's port; it owns its
//! connections and the rooms that hash to it, and talks to other shards only
//! through typed messages on bounded channels ([`NodeHandle`] starts them).
//! HTTP (health, readiness, metrics, the server API) and WebSocket (`/ws`)
//! share the port, unless an internal listener takes the operator routes.
//!
//! Module map (docs/ARCHITECTURE.md has the flow of a publish through it):
//! `shard` drives `conns` (sockets) and their `link`s (`http`, `ws`,
//! `handshake` are the byte layers; `writer` coalesces writes), `peer`s
//! (sessions with identity and rooms), `subscriptions` (local members),
//! `rooms` (the room owner over the log store), `placement`, `mesh`
//! (messages between shards), `timers`, `store` (the storage service's
//! threads), `api` (HTTP routes), `notify` and `analytics` (notifications
//! and analytics events as clients see them, and their bounds).

#![forbid(unsafe_code)]

mod analytics;
mod api;
pub mod auth;
#[doc(hidden)]
pub mod bench_support;
mod cluster;
mod config;
mod conns;
mod handshake;
mod http;
mod link;
mod mesh;
mod notify;
mod origins;
mod peer;
mod placement;
mod rooms;
pub mod settings;
mod shard;
mod sse;
mod statics;
mod stats;
mod store;
mod subscriptions;
mod timers;
#[cfg(test)]
mod untrusted_props;
mod writer;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::{SystemTime, UNIX_EPOCH};

use herald_protocol::ErrorCode;
use socket2::{Domain, Protocol, Socket, Type};

pub use config::{
    AllowedOrigins, AuthConfig, ClusterConfig, NamespaceConfig, NodeConfig, StorageBackend, StorageConfig, SyncPolicy,
};

use crate::auth::Verifier;
use crate::mesh::{Mesh, Reply, Senders};
use crate::shard::{Listeners, Shard, Shared, WAKER};
use crate::stats::ShardStats;

/// WebSocket close code for a fatal herald error code: 4000 + code
/// (e.g. 4208 for `SlowConsumer`), so browsers can see why without parsing
/// the last frame.
pub fn close_code(code: ErrorCode) -> u16 {
    4000 + code.0.min(999)
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(crate) fn unix_secs() -> u64 {
    unix_ms() / 1000
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is unusable.
    #[error("{0}")]
    Config(String),
    /// Binding or creating an OS resource failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StartError {
    let what = what.into();
    move |source| StartError::Io { what, source }
}

/// A running node: its shard threads, and how to stop them.
#[derive(Debug)]
pub struct NodeHandle {
    /// The bound address.
    pub addr: SocketAddr,
    /// The bound internal (operator) address, if configured.
    pub internal_addr: Option<SocketAddr>,
    senders: Senders,
    threads: Vec<std::thread::JoinHandle<()>>,
    storage: Option<store::StorageService>,
    cluster: Option<cluster::Cluster>,
}

impl NodeHandle {
    /// Binds `config.listen` (port 0 picks a free port) once per shard with
    /// `SO_REUSEPORT` and starts one thread per shard.
    pub fn spawn(config: NodeConfig) -> Result<NodeHandle, StartError> {
        let verifier = match &config.auth {
            AuthConfig::Development => {
                if !config.listen.ip().is_loopback() {
                    return Err(StartError::Config(format!(
                        "refusing to listen on {} without --jwt-secret or --jwt-public-key: development \
                         tokens are accepted only on loopback addresses",
                        config.listen
                    )));
                }
                Verifier::development()
            }
            AuthConfig::Hs256Secret(secret) => {
                Verifier::hs256(secret).map_err(|e| StartError::Config(format!("jwt secret: {e}")))?
            }
            AuthConfig::PublicKeyPem(pem) => {
                Verifier::public_key_pem(pem).map_err(|e| StartError::Config(format!("jwt public key: {e}")))?
            }
        };
        if config.shards == 0 || config.shards > 1024 {
            return Err(StartError::Config("shards must be between 1 and 1024".into()));
        }
        if config.api_key.len() < 16 {
            return Err(StartError::Config("the api key must be at least 16 characters".into()));
        }
        if config.shard_channel_capacity == 0 {
            return Err(StartError::Config("shard_channel_capacity must be at least 1".into()));
        }
        let n = config.shards;
        let (public, addr) = bind_all(config.listen, n)?;
        let (mut internal, internal_addr) = match config.internal_listen {
            Some(a) => {
                let (ls, bound) = bind_all(a, n)?;
                (ls.into_iter().map(Some).collect(), Some(bound))
            }
            None => ((0..n).map(|_| None).collect::<Vec<_>>(), None),
        };
        let mut polls = Vec::with_capacity(n);
        let mut wakers = Vec::with_capacity(n);
        for _ in 0..n {
            let poll = mio::Poll::new().map_err(io_err("epoll"))?;
            let waker = mio::Waker::new(poll.registry(), WAKER).map_err(io_err("eventfd"))?;
            polls.push(poll);
            wakers.push(Arc::new(waker));
        }
        let stats: Vec<Arc<ShardStats>> = (0..n).map(|_| Arc::new(ShardStats::default())).collect();
        let retention = store::RetentionPolicy {
            default_namespace: config.default_namespace.clone(),
            namespaces: config.namespaces.clone(),
            notifications_per_user: config.storage.notifications_per_user,
            events_max_age: config.storage.events_max_age,
        };
        let (storage, durable) = store::open(&config.storage.backend, &retention).map_err(StartError::Config)?;
        let storage_stats = Arc::new(store::StorageStats::default());
        let cluster_stats = config
            .cluster
            .as_ref()
            .map(|c| Arc::new(cluster::ClusterStats::new(c.redis.len())));
        let (cluster, mut cluster_links) = match (&config.cluster, &cluster_stats) {
            (Some(c), Some(stats)) => {
                if c.redis.is_empty() {
                    return Err(StartError::Config("a cluster needs at least one redis URL".into()));
                }
                // The cluster's messages reach storage through one node
                // each (consumer group), when this node stores durably.
                let log = durable.then(|| storage.log.clone());
                let (bridge, links) =
                    cluster::Cluster::start(c, &config.node_id, config.dedup_per_room, &wakers, log, stats.clone())
                        .map_err(io_err("cannot start the redis bridge"))?;
                (Some(bridge), links.into_iter().map(Some).collect())
            }
            _ => (None, (0..n).map(|_| None).collect::<Vec<_>>()),
        };
        let (storage_service, shard_stores) =
            store::StorageService::start(storage, &config.storage, retention, &wakers, &storage_stats)
                .map_err(io_err("cannot start storage threads"))?;
        let (requests, replies, inboxes) = mesh::channels(n, config.shard_channel_capacity);
        let senders = Senders {
            requests,
            replies,
            wakers,
            stats: stats.clone(),
        };
        let shared = Arc::new(Shared {
            session: Arc::new(config.session.clone()),
            config,
            verifier,
            stats,
            accepting: AtomicBool::new(true),
            sessions_open: AtomicUsize::new(0),
            durable,
            storage_stats,
            cluster: cluster_stats,
            notification_ids: store::IdClock::default(),
        });
        let mut threads = Vec::with_capacity(n);
        let parts = polls.into_iter().zip(public).zip(inboxes).zip(shard_stores);
        for (i, (((poll, public), inbox), store)) in parts.enumerate() {
            let mesh = Mesh::new(i, &senders, inbox);
            let shared = shared.clone();
            let internal = internal[i].take();
            let cluster_link = cluster_links[i].take();
            let t = std::thread::Builder::new()
                .name(format!("shard-{i}"))
                .spawn(move || {
                    let listeners = Listeners {
                        public: mio::net::TcpListener::from_std(public),
                        internal: internal.map(mio::net::TcpListener::from_std),
                    };
                    Shard::new(i, shared, poll, listeners, mesh, store, cluster_link).run();
                })
                .map_err(io_err("cannot start shard thread"))?;
            threads.push(t);
        }
        Ok(NodeHandle {
            addr,
            internal_addr,
            senders,
            threads,
            storage: Some(storage_service),
            cluster,
        })
    }

    /// The WebSocket URL of this node.
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// The HTTP base URL of this node.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Where operators and backends reach `/metrics` and the server API:
    /// the internal listener if there is one, else the public one.
    pub fn operator_addr(&self) -> SocketAddr {
        self.internal_addr.unwrap_or(self.addr)
    }

    /// Shuts the node down gracefully (GoAway, drain within the grace
    /// period) and waits for every shard.
    pub fn shutdown(mut self) {
        self.stop();
    }

    /// Waits for the shards to stop (after a [`shutdown_handle`](Self::shutdown_handle) fired).
    pub fn join(mut self) {
        self.wait();
    }

    /// A cloneable trigger that starts a graceful shutdown.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            senders: self.senders.clone(),
        }
    }

    fn stop(&mut self) {
        self.shutdown_handle().trigger();
        self.wait();
    }

    /// Joins the shards, then the storage threads (which end once every
    /// shard has let go of them, after syncing what they hold).
    fn wait(&mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some(cluster) = self.cluster.take() {
            cluster.join();
        }
        if let Some(storage) = self.storage.take() {
            storage.join();
        }
    }
}

impl Drop for NodeHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts a node's graceful shutdown from any thread.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    senders: Senders,
}

impl ShutdownHandle {
    /// Tells every shard to stop accepting, send GoAway and drain.
    pub fn trigger(&self) {
        for (tx, waker) in self.senders.replies.iter().zip(&self.senders.wakers) {
            // Replies are always taken, so a full channel drains; block
            // briefly rather than lose the signal.
            let _ = tx.send(Reply::Shutdown);
            let _ = waker.wake();
        }
    }
}

/// Binds `addr` once per shard (port 0 picks one free port for all).
fn bind_all(addr: SocketAddr, n: usize) -> Result<(Vec<std::net::TcpListener>, SocketAddr), StartError> {
    let mut listeners = Vec::with_capacity(n);
    let mut bound = addr;
    for i in 0..n {
        let l = reuseport_listener(bound).map_err(io_err(format!("cannot listen on {bound}")))?;
        if i == 0 {
            bound = l.local_addr().map_err(io_err("local_addr"))?;
        }
        listeners.push(l);
    }
    Ok((listeners, bound))
}

fn reuseport_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Applies the ScyllaDB schema (keyspace with `replication`, then every
/// table) for `herald migrate`.
#[cfg(feature = "scylla")]
pub fn migrate_scylla(url: &str, replication: &str) -> Result<(), String> {
    let config = herald_storage::scylla::ScyllaConfig::parse(url).map_err(|e| e.to_string())?;
    herald_storage::scylla::migrate(&config, replication).map_err(|e| e.to_string())
}

/// Without the `scylla` feature there is nothing to migrate.
#[cfg(not(feature = "scylla"))]
pub fn migrate_scylla(url: &str, _replication: &str) -> Result<(), String> {
    Err(format!("{url}: this herald was built without the `scylla` feature"))
}
