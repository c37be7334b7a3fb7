//! What an owner is configured with: its epoch, its bounds, and the options
//! of each room namespace.

use std::time::Duration;

/// Options of the rooms in one namespace (the part of a room name before the
/// first `:`, e.g. `chat` for `chat:lobby`).
#[derive(Debug, Clone, PartialEq)]
pub struct NamespaceConfig {
    /// Messages kept in memory per room for history and resume.
    pub history: usize,
    /// Messages older than this leave the history (None: kept until evicted
    /// by count).
    pub history_max_age: Option<Duration>,
    /// Presence (join/leave events and snapshots) is tracked.
    pub presence: bool,
    /// Clients may publish; when false only the server API may.
    pub client_publish: bool,
    /// Volatile (best-effort, unstored) publishes are allowed.
    pub volatile: bool,
    /// Subscribers per room; beyond it `RoomFull`.
    pub max_subscribers: usize,
    /// Readers want the latest state, not every step (tickers, gauges): a
    /// subscriber that falls behind gets the newest message of each room
    /// instead of a growing queue, and sees the skipped offsets as a jump.
    pub conflate: bool,
    /// Messages are kept by the node's log store (on disk with the embedded
    /// store): acknowledged means stored, and history survives restarts.
    /// Off for volatile rooms (typing, game state): they stay in memory,
    /// acknowledged at once, as fast as a node without storage.
    pub durable: bool,
    /// Messages the log store keeps per room (None: no bound by count).
    pub retain_messages: Option<u64>,
    /// Stored messages older than this are removed (None: no bound by age).
    pub retain_max_age: Option<Duration>,
    /// On a node in a cluster, the rooms are shared by every node (offsets
    /// assigned by the cluster's log, members on any node). Off: each node
    /// has its own rooms of this name, as without a cluster.
    pub cluster: bool,
}

impl NamespaceConfig {
    /// Rooms outside any configured namespace: chat-like defaults.
    pub fn general() -> Self {
        Self {
            history: 1_000,
            history_max_age: None,
            presence: true,
            client_publish: true,
            volatile: true,
            max_subscribers: 100_000,
            conflate: false,
            durable: true,
            retain_messages: None,
            retain_max_age: None,
            cluster: true,
        }
    }

    /// The namespaces a node has unless configured otherwise: `chat`
    /// (clients publish, presence, 1,000 messages in memory, every message
    /// stored), `dash` (dashboards: the server publishes, 100 messages, no
    /// presence, 10,000 stored per room), `game` (clients publish volatile
    /// state, 100 messages, presence, not stored) and `user` (per-user
    /// delivery: the server publishes, 100 messages, no presence, 1,000
    /// stored per user).
    pub fn defaults() -> Vec<(String, NamespaceConfig)> {
        let general = Self::general();
        vec![
            ("chat".into(), general.clone()),
            (
                "dash".into(),
                Self {
                    history: 100,
                    presence: false,
                    client_publish: false,
                    retain_messages: Some(10_000),
                    ..general.clone()
                },
            ),
            (
                "game".into(),
                Self {
                    history: 100,
                    durable: false,
                    ..general.clone()
                },
            ),
            (
                "user".into(),
                Self {
                    history: 100,
                    presence: false,
                    client_publish: false,
                    retain_messages: Some(1_000),
                    ..general
                },
            ),
        ]
    }
}

/// Settings of one owner.
#[derive(Debug, Clone)]
pub struct OwnerConfig {
    /// The epoch of every room this owner creates. It must differ from any
    /// earlier owner of the same rooms whose history was lost, so resuming
    /// clients are told `recovered = false`.
    pub epoch: u64,
    /// The log store beneath keeps history across restarts: rooms of
    /// durable namespaces load their head from it when first used (and
    /// continue its epoch), and append through it before acknowledging.
    /// False on a node that keeps history only in memory: no room waits for
    /// the store.
    pub durable_store: bool,
    /// The node is in a cluster: rooms of namespaces with `cluster` follow
    /// the cluster's log ([`ClusterRequest`](super::ClusterRequest)) instead
    /// of assigning offsets here.
    pub cluster: bool,
    /// Shards of the node: a message to `user:U` goes to every one of them,
    /// since each connection of U is a member there without joining.
    pub shards: u32,
    /// Rooms this owner holds; creating one more is refused (`Unavailable`).
    pub max_rooms: usize,
    /// Idempotency keys remembered per room.
    pub dedup_per_room: usize,
    /// Operations one room may have waiting for its log store (appends,
    /// and the joins, pages and repeats queued behind them). Beyond it
    /// publishes, joins and history reads of that room are refused with
    /// `Unavailable`, so a store that falls behind pushes back on the
    /// clients instead of growing the owner's memory.
    pub max_pending_per_room: usize,
    /// Bytes of history one answer may carry (replays and pages are cut to
    /// it, newest kept, so a replay never trips its own connection's
    /// outbound limit).
    pub replay_budget: usize,
    /// Options of rooms outside the named namespaces.
    pub default_namespace: NamespaceConfig,
    /// Options per namespace.
    pub namespaces: Vec<(String, NamespaceConfig)>,
}

impl OwnerConfig {
    /// The options of `room`'s namespace.
    pub fn namespace(&self, room: &str) -> &NamespaceConfig {
        namespace_of(room, &self.namespaces, &self.default_namespace)
    }
}

/// The options of `room`'s namespace (the part of its name before the
/// first `:`) among `named`, else `default`.
pub fn namespace_of<'a>(
    room: &str,
    named: &'a [(String, NamespaceConfig)],
    default: &'a NamespaceConfig,
) -> &'a NamespaceConfig {
    let ns = room.split_once(':').map_or("", |(ns, _)| ns);
    named.iter().find(|(name, _)| name == ns).map_or(default, |(_, c)| c)
}
