//! A shard: one thread running one epoll loop (mio) over its own listeners
//! (SO_REUSEPORT) and connections. The shard is a driver that wires parts
//! that each do one job and keep their state to themselves:
//!
//! - [`Connections`]: sockets with their buffers and [links](crate::link)
//!   (HTTP, WebSocket, SSE), named by slot and generation;
//! - [`Subscriptions`]: this shard's members per room and connections per
//!   user;
//! - [`Rooms`]: the rooms this shard owns (the sans-IO room owner over a
//!   log store);
//! - [`Placer`]: which shard owns a room;
//! - [`Mesh`]: typed messages to and from other shards, in two lanes;
//! - [`TimerWheel`]: connection deadlines;
//! - [`Api`]: the HTTP routes.
//!
//! Each loop iteration: poll; take replies and (unless backed up) requests
//! from other shards; read ready sockets into one shard-owned buffer and run
//! their sessions; then write every connection that got frames, all its
//! queued frames in one call; fire due timers.
//!
//! `io.rs` holds the socket side (reading, parsing links, writing, closing),
//! `peers.rs` the Herald side (session events to owners, owners' answers and
//! deliveries to sessions and streams), `storage.rs` notifications and
//! analytics through the storage service, `streams.rs` what is particular
//! to SSE streams (opening one, its joins).

mod io;
mod peers;
mod storage;
mod streams;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald_protocol::owner::{ClusterRequest, Input, OwnerConfig};
use herald_storage::{EphemeralLog, LogStore};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};

use crate::api::Api;
use crate::auth::Verifier;
use crate::config::NodeConfig;
use crate::conns::{ConnKey, Connections, Listener};
use crate::http::Response;
use crate::mesh::{Mesh, Reply, Request};
use crate::placement::{Placement, Placer};
use crate::rooms::Rooms;
use crate::stats::ShardStats;
use crate::store::{IdClock, ShardStore, StorageStats, StoreLink};
use crate::subscriptions::Subscriptions;
use crate::timers::TimerWheel;

pub(crate) const LISTENER: Token = Token(usize::MAX - 1);
pub(crate) const WAKER: Token = Token(usize::MAX - 2);
pub(crate) const INTERNAL_LISTENER: Token = Token(usize::MAX - 3);

/// Shard-owned read buffer.
const READ_BUF: usize = 64 * 1024;
/// How soon a shard retries sending to a full peer channel (nothing wakes
/// it when the channel drains).
const BACKLOG_RETRY: Duration = Duration::from_millis(1);
/// Socket writes between two looks at the inbox and the sockets' readiness
/// during a long write pass.
const WRITES_BETWEEN_INBOX: usize = 64;
/// Messages from other shards handled per iteration before sockets get a turn.
const INBOX_BATCH: usize = 4096;
/// How often connections that were busy are checked for quiet, to give
/// back what a burst made their queues grow to.
const SWEEP_INTERVAL: Duration = Duration::from_millis(100);
/// Operations a room may have waiting for its log store (the in-memory
/// store answers at once, so only a durable one can fill this).
const MAX_PENDING_PER_ROOM: usize = 10_000;
/// How soon accepting is retried after it failed (EMFILE and friends).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// What all shards of a node share (read-mostly).
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: NodeConfig,
    /// The session settings every connection shares.
    pub(crate) session: Arc<herald_protocol::ServerConfig>,
    pub(crate) verifier: Verifier,
    pub(crate) stats: Vec<Arc<ShardStats>>,
    pub(crate) accepting: AtomicBool,
    /// Open sessions on the node, WebSocket and SSE (for `max_connections`).
    pub(crate) sessions_open: AtomicUsize,
    /// Rooms keep history in the storage backend (not memory only).
    pub(crate) durable: bool,
    pub(crate) storage_stats: Arc<StorageStats>,
    /// The node is in a cluster: its bridge's metrics and readiness.
    pub(crate) cluster: Option<Arc<crate::cluster::ClusterStats>>,
    /// Notification ids, node-wide.
    pub(crate) notification_ids: IdClock,
}

/// The listeners a shard accepts on.
#[derive(Debug)]
pub(crate) struct Listeners {
    pub(crate) public: TcpListener,
    pub(crate) internal: Option<TcpListener>,
}

pub(crate) struct Shard {
    id: usize,
    shared: Arc<Shared>,
    stats: Arc<ShardStats>,
    poll: Poll,
    listeners: Option<Listeners>,
    conns: Connections,
    subs: Subscriptions,
    rooms: Rooms,
    /// The storage service (notifications, analytics; the rooms' log store
    /// is inside `rooms`).
    store: StoreLink,
    /// Unacknowledged analytics events read since the last flush, written
    /// as one job (`storage.rs`).
    events_batch: Vec<herald_storage::AnalyticsEvent>,
    /// Unread counts asked for connecting sessions and not answered yet
    /// (bounded, so a reconnect storm cannot crowd history reads out of
    /// the storage read queue).
    unread_in_flight: usize,
    placer: Placer,
    mesh: Mesh,
    timers: TimerWheel<ConnKey>,
    api: Api,
    events: Events,
    read_buf: Box<[u8]>,
    to_read: Vec<usize>,
    to_write: Vec<usize>,
    /// Connections that read or wrote since the last sweep.
    active: Vec<ConnKey>,
    next_sweep: Instant,
    /// When the room owner next gets a tick (only while follows wait to be
    /// asked again).
    next_tick: Instant,
    /// Scratch for expired timers.
    expired: Vec<(ConnKey, u64)>,
    /// The wall clock (unix seconds), read once per loop iteration.
    unix_secs: u64,
    draining: Option<Instant>,
    accept_retry: Option<Instant>,
    /// A peer shard's channel is full: client input and requests wait.
    backlog: bool,
    /// A write pass sent this shard messages: handle them before sleeping.
    sent_to_self: bool,
    /// Requests were left in the inbox because replies waited in overflow:
    /// take them as soon as the replies are through (nothing else wakes
    /// this shard for them; their senders only wait).
    requests_deferred: bool,
    /// This shard's share of `max_http_connections`.
    max_http_connections: usize,
    /// The answer to a connection beyond that share, encoded once.
    busy_response: Box<[u8]>,
    /// Where one write call's frames are assembled (see `writer::take_batch`).
    write_buf: Vec<u8>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("id", &self.id)
            .field("conns", &self.conns.len())
            .finish_non_exhaustive()
    }
}

impl Shard {
    pub(crate) fn new(
        id: usize,
        shared: Arc<Shared>,
        poll: Poll,
        mut listeners: Listeners,
        mesh: Mesh,
        store: ShardStore,
        cluster: Option<crate::cluster::ShardLink>,
    ) -> Self {
        let stats = shared.stats[id].clone();
        let shards = shared.stats.len();
        let config = &shared.config;
        let owner = OwnerConfig {
            epoch: epoch_base(crate::unix_ms(), id),
            durable_store: shared.durable,
            cluster: cluster.is_some(),
            shards: shards as u32,
            max_rooms: config.max_rooms.div_ceil(shards),
            dedup_per_room: config.dedup_per_room,
            max_pending_per_room: MAX_PENDING_PER_ROOM,
            // Half the outbound limit, so a replay never closes its own
            // connection as a slow consumer.
            replay_budget: config.session.limits.max_outbound_bytes / 2,
            default_namespace: config.default_namespace.clone(),
            namespaces: config.namespaces.clone(),
        };
        let ShardStore { link, log } = store;
        let mut log_store: Box<dyn LogStore> = if shared.durable {
            Box::new(log)
        } else {
            Box::new(EphemeralLog::default())
        };
        if let (Some(link), Some(stats)) = (cluster, &shared.cluster) {
            log_store = Box::new(link.into_log(id, log_store, stats.clone()));
        }
        let registry = poll.registry();
        if let Err(e) = registry.register(&mut listeners.public, LISTENER, Interest::READABLE) {
            tracing::error!(shard = id, error = %e, "cannot register listener");
        }
        if let Some(l) = listeners.internal.as_mut()
            && let Err(e) = registry.register(l, INTERNAL_LISTENER, Interest::READABLE)
        {
            tracing::error!(shard = id, error = %e, "cannot register internal listener");
        }
        let now = Instant::now();
        Self {
            id,
            stats,
            poll,
            listeners: Some(listeners),
            conns: Connections::default(),
            subs: Subscriptions::default(),
            rooms: Rooms::new(owner, log_store),
            store: link,
            events_batch: Vec::new(),
            unread_in_flight: 0,
            placer: Placer::new(shards),
            mesh,
            timers: TimerWheel::new(now),
            api: Api::default(),
            events: Events::with_capacity(1024),
            read_buf: vec![0; READ_BUF].into_boxed_slice(),
            to_read: Vec::new(),
            to_write: Vec::new(),
            active: Vec::new(),
            next_sweep: now + SWEEP_INTERVAL,
            next_tick: now + SWEEP_INTERVAL,
            expired: Vec::new(),
            unix_secs: crate::unix_secs(),
            draining: None,
            accept_retry: None,
            backlog: false,
            sent_to_self: false,
            requests_deferred: false,
            max_http_connections: config.max_http_connections.div_ceil(shards.max(1)),
            busy_response: Response::error(
                503,
                "too_many_connections",
                "the node holds its limit of connections that are not WebSocket sessions; retry later",
            )
            .encode(false)
            .into(),
            write_buf: Vec::new(),
            shared,
        }
    }

    /// Runs until drained after a shutdown message.
    pub(crate) fn run(mut self) {
        let mut busy = false;
        loop {
            let now = Instant::now();
            let waiting_input = !self.mesh.requests_waiting() && !self.to_read.is_empty();
            let waiting_requests = self.requests_deferred && !self.mesh.replies_waiting();
            let timeout = if busy || waiting_input || waiting_requests || !self.to_write.is_empty() {
                Duration::ZERO
            } else {
                self.sleep_until(now)
                    .map_or(Duration::from_secs(3600), |t| t.saturating_duration_since(now))
            };
            if !self.poll_events(timeout) {
                return;
            }
            self.unix_secs = crate::unix_secs();
            busy = self.handle_inbox(INBOX_BATCH) == INBOX_BATCH;
            // While this shard's requests wait for room in other shards'
            // channels, it takes no client input: the pressure reaches
            // clients as TCP back-pressure.
            if !self.mesh.requests_waiting() {
                self.read_ready();
            }
            self.flush_events();
            // Hand publishes and deliveries to other shards before writing
            // sockets, so they work in parallel with this shard's writes
            // instead of waiting for them.
            let early = self.mesh.flush();
            self.write_ready();
            busy |= early.to_self || std::mem::take(&mut self.sent_to_self);
            let now = Instant::now();
            self.run_timers(now);
            if now >= self.next_sweep {
                self.sweep_idle();
                self.next_sweep = now + SWEEP_INTERVAL;
            }
            if now >= self.next_tick && self.rooms.has_retries() {
                self.rooms
                    .handle(crate::unix_ms(), Input::Tick, &mut self.mesh, &self.stats);
                self.next_tick = now + SWEEP_INTERVAL;
            }
            if self.accept_retry.is_some_and(|t| t <= now) {
                self.accept_retry = None;
                self.accept_all();
            }
            // Last: what the write pass and the timers sent (closing
            // connections' leaves) is woken for before this shard sleeps.
            let flushed = self.mesh.flush();
            self.backlog = flushed.backlog;
            busy |= flushed.to_self;
            if let Some(deadline) = self.draining
                && (self.conns.is_empty() || now >= deadline)
            {
                if !self.conns.is_empty() {
                    tracing::warn!(
                        shard = self.id,
                        connections = self.conns.len(),
                        "shutdown grace expired with connections open"
                    );
                }
                return;
            }
        }
    }

    /// When the loop must wake with nothing to read: the next deadline of a
    /// connection, a sweep of busy connections, an accept retry, the drain
    /// deadline, or a retry of a full channel. None: only input wakes it.
    fn sleep_until(&self, now: Instant) -> Option<Instant> {
        let backlog = self.backlog.then(|| now + BACKLOG_RETRY);
        let sweep = (!self.active.is_empty()).then_some(self.next_sweep);
        let tick = self.rooms.has_retries().then_some(self.next_tick);
        [
            self.timers.next_deadline(),
            sweep,
            tick,
            self.accept_retry,
            self.draining,
            backlog,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Waits up to `timeout` for readiness and queues what it reports:
    /// accepts, reads, writes. False if polling failed (the shard stops).
    fn poll_events(&mut self, timeout: Duration) -> bool {
        let mut events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        let polled = self.poll.poll(&mut events, Some(timeout));
        if let Err(e) = polled
            && e.kind() != std::io::ErrorKind::Interrupted
        {
            tracing::error!(shard = self.id, error = %e, "poll failed; shard stops");
            self.events = events;
            return false;
        }
        for ev in events.iter() {
            match ev.token() {
                LISTENER => self.accept(Listener::Public),
                INTERNAL_LISTENER => self.accept(Listener::Internal),
                WAKER => {}
                Token(slot) => {
                    let Some(c) = self.conns.get_mut(slot) else { continue };
                    if (ev.is_readable() || ev.is_read_closed() || ev.is_error()) && !c.queued_read {
                        c.queued_read = true;
                        self.to_read.push(slot);
                    }
                    if ev.is_writable() || ev.is_error() {
                        c.blocked = false;
                        self.mark_write(slot);
                    }
                }
            }
        }
        self.events = events;
        true
    }

    /// Handles up to `max` messages from other shards: every reply first,
    /// then requests, but no request while this shard's replies wait in
    /// overflow (that is how pressure travels back to the senders).
    /// Returns how many.
    fn handle_inbox(&mut self, max: usize) -> usize {
        let mut handled = 0;
        while handled < max {
            let Some(reply) = self.mesh.recv_reply() else { break };
            self.on_reply(reply);
            handled += 1;
        }
        self.requests_deferred = false;
        while handled < max {
            if self.mesh.replies_waiting() {
                self.requests_deferred = true;
                break;
            }
            let Some(request) = self.mesh.recv_request() else { break };
            self.on_request(request);
            handled += 1;
        }
        self.rooms.poll_store(crate::unix_ms(), &mut self.mesh, &self.stats);
        self.poll_store_answers();
        handled
    }

    fn on_request(&mut self, request: Request) {
        match request {
            Request::Owner(input) => self.rooms.handle(crate::unix_ms(), input, &mut self.mesh, &self.stats),
            Request::DisconnectUser { origin, user } => {
                let count = self.disconnect_user(&user);
                self.mesh.reply(origin.shard(), Reply::Counted { origin, count });
            }
            Request::NotifyUser { origin, user, frame } => {
                let count = self.deliver_to_user(&user, &frame, false);
                self.mesh.reply(origin.shard(), Reply::Counted { origin, count });
            }
        }
    }

    /// In a cluster, tells the owner of `user:U` that this shard's first
    /// connection of U opened (or its last closed), so the node follows
    /// what other nodes send U.
    fn user_here(&mut self, user: &str, here: bool) {
        if self.shared.cluster.is_none() {
            return;
        }
        let room: Arc<str> = Arc::from(format!("user:{user}"));
        let owner = self.owner_of(&room);
        let input = Input::UserHere {
            room,
            shard: self.id as u32,
            here,
        };
        self.mesh.request(owner, Request::Owner(input));
    }

    /// In a cluster, sends `frame` (or a disconnection) to U's connections
    /// on the other nodes, through the `user:U` room's stream.
    fn send_user_elsewhere(&mut self, user: &str, frame: Bytes, disconnect: bool) {
        if self.shared.cluster.is_none() {
            return;
        }
        let room: Arc<str> = Arc::from(format!("user:{user}"));
        let keep = self.shared.config.namespace(&room).history.max(1_000) as u64;
        self.rooms.submit_cluster(ClusterRequest::UserFrame {
            room,
            frame,
            disconnect,
            keep,
        });
    }

    /// The shard that owns `room`.
    fn owner_of(&self, room: &str) -> usize {
        let Placement::Local(shard) = self.placer.place(room);
        shard
    }

    fn mark_write(&mut self, slot: usize) {
        if let Some(c) = self.conns.get_mut(slot)
            && !c.queued_write
        {
            c.queued_write = true;
            self.to_write.push(slot);
        }
    }

    fn requeue_read(&mut self, slot: usize) {
        if let Some(c) = self.conns.get_mut(slot)
            && !c.queued_read
        {
            c.queued_read = true;
            self.to_read.push(slot);
        }
    }

    /// Notes that a connection did something, for the next idle sweep.
    fn mark_active(&mut self, slot: usize) {
        if let Some(c) = self.conns.get_mut(slot)
            && !c.active
        {
            c.active = true;
            self.active.push(c.key(slot));
        }
    }

    /// Gives back the queue and buffer capacity of connections that were
    /// busy and went quiet. Only connections that did something since the
    /// last sweep are looked at: idle ones cost nothing.
    fn sweep_idle(&mut self) {
        let mut active = std::mem::take(&mut self.active);
        active.retain(|&key| {
            let Some(c) = self.conns.by_key(key) else { return false };
            if c.queued_write || c.blocked || !c.outbuf.is_empty() || !c.inbuf.is_empty() {
                return true;
            }
            c.active = false;
            c.outbuf = Vec::new();
            c.inbuf = Vec::new();
            match &mut c.link {
                crate::link::Link::Ws(w) => {
                    w.peer.session.release_idle_memory();
                    w.framing.release_idle_memory();
                }
                crate::link::Link::Sse(s) => s.release_idle_memory(),
                _ => {}
            }
            false
        });
        if active.capacity() > 64 && active.len() < active.capacity() / 4 {
            // A burst of connections made it long; do not keep that.
            active.shrink_to(active.len() * 2);
        }
        self.active = active;
    }

    /// (Re)arms the connection's timer if its deadline moved earlier than
    /// the entry it has (later moves are found when the entry fires).
    fn arm_timer(&mut self, slot: usize) {
        let now = Instant::now();
        let unix = self.unix_secs;
        let Some(c) = self.conns.get_mut(slot) else { return };
        let Some(deadline) = c.next_deadline(crate::auth::LEEWAY_SECS, unix, now) else {
            return;
        };
        let tick = self.timers.tick_for(deadline);
        if c.timer != 0 && c.timer <= tick {
            return;
        }
        let key = c.key(slot);
        c.timer = self.timers.insert(key, deadline);
    }

    /// Fires every connection deadline that is due.
    fn run_timers(&mut self, now: Instant) {
        let mut expired = std::mem::take(&mut self.expired);
        self.timers.expire(now, &mut expired);
        for &(key, tick) in &expired {
            let Some(slot) = self.conns.slot_of(key) else { continue };
            let Some(c) = self.conns.get_mut(slot) else { continue };
            if c.timer != tick {
                // Superseded by an earlier entry.
                continue;
            }
            c.timer = 0;
            self.on_deadline(slot, now);
            self.arm_timer(slot);
        }
        expired.clear();
        self.expired = expired;
        ShardStats::set(&self.stats.timers, self.timers.len() as i64);
    }

    /// Stop accepting and tell every client to go away.
    fn begin_drain(&mut self) {
        if self.draining.is_some() {
            return;
        }
        let grace = self.shared.config.shutdown_grace;
        let reconnect_after = self.shared.config.reconnect_after;
        self.draining = Some(Instant::now() + grace);
        self.shared.accepting.store(false, std::sync::atomic::Ordering::Relaxed);
        if let Some(mut l) = self.listeners.take() {
            let _ = self.poll.registry().deregister(&mut l.public);
            if let Some(internal) = l.internal.as_mut() {
                let _ = self.poll.registry().deregister(internal);
            }
        }
        tracing::info!(
            shard = self.id,
            connections = self.conns.len(),
            "draining: sending GoAway"
        );
        let slots: Vec<usize> = self.conns.iter().map(|(s, _)| s).collect();
        for slot in slots {
            let Some(c) = self.conns.get_mut(slot) else { continue };
            match &mut c.link {
                crate::link::Link::Ws(w) => {
                    w.peer.session.go_away(
                        herald_protocol::ErrorCode::ServerShutdown,
                        "node shutting down",
                        reconnect_after,
                    );
                    self.session_events(slot);
                }
                // The page's EventSource reconnects by itself (to another
                // node, or to this one once it is back) and resumes.
                crate::link::Link::Sse(s) => {
                    s.close_with("server_shutdown", "node shutting down");
                    self.mark_write(slot);
                }
                crate::link::Link::Http(h) if h.reading() && c.outbuf.is_empty() => self.remove(slot),
                _ => {}
            }
        }
    }
}

/// The epoch of every room a shard run owns. It must differ across restarts
/// of this in-memory node (and between shards), so a client resuming after a
/// restart is told `recovered = false`; and it must stay below 2^53 so the
/// JSON API's numbers survive JavaScript's `JSON.parse` (start ms × 1,024 +
/// shard: ~1.8e15 until the year 2248).
fn epoch_base(start_ms: u64, shard: usize) -> u64 {
    start_ms * 1024 + (shard as u64 % 1024)
}

#[cfg(test)]
mod tests {
    use super::epoch_base;

    #[test]
    fn epochs_differ_by_shard_and_start_and_fit_in_a_javascript_number() {
        let now = 1_795_443_134_157; // 2026-11
        assert_ne!(epoch_base(now, 0), epoch_base(now, 1));
        assert_ne!(epoch_base(now, 0), epoch_base(now + 1, 0));
        let year_2200_ms = 7_258_118_400_000;
        assert!(epoch_base(year_2200_ms, 1023) < 1 << 53);
    }
}
