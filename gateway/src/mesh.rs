//! Typed messages between shards over bounded channels.
//!
//! Every shard holds a sender to every shard (itself included, for uniform
//! handling of replies). A send never blocks the event loop: when a channel
//! is full the message waits in a per-destination overflow queue and the
//! sending shard stops reading client sockets until it drains, so pressure
//! reaches the clients as TCP back-pressure instead of growing memory.
//! Destination shards are woken once per loop iteration, not once per
//! message (each wake is a syscall).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Instant;

use bytes::Bytes;
use herald_protocol::{ErrorCode, Position};

use crate::room::Stored;
use crate::stats::ShardStats;

/// A connection on a shard: slab slot and generation (slots are reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ConnKey {
    pub(crate) slot: u32,
    pub(crate) generation: u32,
}

/// Who asked, so the answer finds its way back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A WebSocket request (request id 0 = a resume from `Connect`).
    Ws {
        shard: usize,
        conn: ConnKey,
        request_id: u32,
    },
    /// A server API request on an HTTP connection.
    Http { shard: usize, conn: ConnKey },
}

impl Origin {
    pub(crate) fn shard(&self) -> usize {
        match *self {
            Origin::Ws { shard, .. } | Origin::Http { shard, .. } => shard,
        }
    }
}

/// A refusal with its wire code and message.
pub(crate) type Refusal = (ErrorCode, &'static str);

/// What a joining connection gets from the room's owner.
#[derive(Debug)]
pub(crate) struct Joined {
    pub(crate) epoch: u64,
    pub(crate) offset: u64,
    pub(crate) recovered: bool,
    pub(crate) history: Vec<Stored>,
    /// Users (at most a page) and the full count, when presence was asked.
    pub(crate) presence: Option<(Vec<Arc<str>>, u64)>,
}

/// Who receives a delivered frame on each shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Audience {
    /// Every member; `volatile` frames are dropped first under pressure.
    Members { volatile: bool },
    /// Members that asked for presence, except the connection that caused it.
    Presence { except: Option<(usize, ConnKey)> },
    /// Every member except the typing connection (volatile).
    Typing { except: (usize, ConnKey) },
}

/// A query a room owner answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Query {
    History { before: u64, after: u64, limit: usize },
    Presence,
}

/// A room owner's answer to a [`Query`].
#[derive(Debug)]
pub(crate) enum Answer {
    History {
        epoch: u64,
        messages: Vec<Stored>,
        has_more: bool,
    },
    Presence {
        users: Vec<Arc<str>>,
        count: u64,
    },
    NoRoom,
}

/// One room as a shard reports it for `GET /api/rooms`.
#[derive(Debug, Clone)]
pub(crate) struct RoomInfo {
    pub(crate) name: Arc<str>,
    pub(crate) epoch: u64,
    pub(crate) offset: u64,
    pub(crate) subscribers: u64,
    pub(crate) users: u64,
}

#[derive(Debug)]
pub(crate) enum ShardMsg {
    /// To the owner: a connection joins a room. `rejoin` repeats a join
    /// (no presence change).
    Join {
        origin: Origin,
        room: Arc<str>,
        user: Arc<str>,
        history: u32,
        recover: Option<Position>,
        presence: bool,
        rejoin: bool,
    },
    /// To the joining shard.
    JoinResult {
        origin: Origin,
        room: Arc<str>,
        presence: bool,
        result: Result<Joined, Refusal>,
    },
    /// To the owner: a connection of `user` on shard `from` left the room.
    Leave {
        from: usize,
        room: Arc<str>,
        user: Arc<str>,
    },
    /// To the owner.
    Publish {
        origin: Origin,
        room: Arc<str>,
        user: Arc<str>,
        payload: Bytes,
        content_type: Option<String>,
        volatile: bool,
        idempotency_key: Option<String>,
        received: Instant,
    },
    /// To the publishing shard.
    PublishResult {
        origin: Origin,
        result: Result<Position, Refusal>,
    },
    /// To every shard with members in the room: one encoded frame.
    Deliver {
        room: Arc<str>,
        frame: Bytes,
        audience: Audience,
        published: Instant,
    },
    /// To the owner: typing indicator.
    Typing {
        from: usize,
        conn: ConnKey,
        room: Arc<str>,
        user: Arc<str>,
        active: bool,
    },
    /// To the owner.
    Query {
        origin: Origin,
        room: Arc<str>,
        query: Query,
    },
    /// To the asking shard.
    Answer {
        origin: Origin,
        room: Arc<str>,
        answer: Answer,
    },
    /// To every shard: list owned rooms.
    ListRooms { origin: Origin },
    /// To the asking shard.
    Rooms { origin: Origin, rooms: Vec<RoomInfo> },
    /// To every shard: close the connections of a user.
    DisconnectUser { origin: Origin, user: Arc<str> },
    /// To every shard: send a notification frame to a user's connections.
    NotifyUser {
        origin: Origin,
        user: Arc<str>,
        frame: Bytes,
    },
    /// To the asking shard: connections closed or notified on one shard.
    Counted { origin: Origin, count: u64 },
    /// Stop accepting, send GoAway, drain.
    Shutdown,
}

/// What [`Mesh::flush`] left.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Flushed {
    /// Some messages still wait for room in a full channel.
    pub(crate) backlog: bool,
    /// This shard sent itself messages: do not sleep before handling them.
    pub(crate) to_self: bool,
}

/// One shard's ends of the mesh.
#[derive(Debug)]
pub(crate) struct Mesh {
    me: usize,
    peers: Vec<Peer>,
    inbox: Receiver<ShardMsg>,
}

#[derive(Debug)]
struct Peer {
    tx: SyncSender<ShardMsg>,
    waker: Arc<mio::Waker>,
    overflow: VecDeque<ShardMsg>,
    needs_wake: bool,
    /// The peer's counters (its queue depth is raised here).
    stats: Arc<ShardStats>,
}

/// Senders and wakers of every shard, handed to each shard's [`Mesh`] and to
/// the control side (shutdown).
#[derive(Debug, Clone)]
pub(crate) struct Senders {
    pub(crate) txs: Vec<SyncSender<ShardMsg>>,
    pub(crate) wakers: Vec<Arc<mio::Waker>>,
    pub(crate) stats: Vec<Arc<ShardStats>>,
}

/// Channels for `n` shards of `capacity` messages each.
pub(crate) fn channels(n: usize, capacity: usize) -> (Vec<SyncSender<ShardMsg>>, Vec<Receiver<ShardMsg>>) {
    (0..n).map(|_| sync_channel(capacity)).unzip()
}

impl Mesh {
    pub(crate) fn new(me: usize, senders: &Senders, inbox: Receiver<ShardMsg>) -> Self {
        let peers = senders
            .txs
            .iter()
            .zip(&senders.wakers)
            .zip(&senders.stats)
            .map(|((tx, waker), stats)| Peer {
                tx: tx.clone(),
                waker: waker.clone(),
                overflow: VecDeque::new(),
                needs_wake: false,
                stats: stats.clone(),
            })
            .collect();
        Self { me, peers, inbox }
    }

    pub(crate) fn shards(&self) -> usize {
        self.peers.len()
    }

    /// Queues a message for shard `to` (woken at [`flush`](Self::flush)).
    pub(crate) fn send(&mut self, to: usize, msg: ShardMsg) {
        let Some(peer) = self.peers.get_mut(to) else { return };
        peer.needs_wake = true;
        if !peer.overflow.is_empty() {
            peer.overflow.push_back(msg);
            return;
        }
        match peer.tx.try_send(msg) {
            Ok(()) => ShardStats::gauge(&peer.stats.queue_depth, 1),
            Err(TrySendError::Full(msg)) => peer.overflow.push_back(msg),
            // The peer has stopped (shutdown): nothing left to tell it.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Moves overflow into channels where room was made and wakes every
    /// shard that got messages.
    pub(crate) fn flush(&mut self) -> Flushed {
        let mut backlog = false;
        let mut to_self = false;
        for (i, peer) in self.peers.iter_mut().enumerate() {
            while let Some(msg) = peer.overflow.pop_front() {
                match peer.tx.try_send(msg) {
                    Ok(()) => {
                        ShardStats::gauge(&peer.stats.queue_depth, 1);
                        peer.needs_wake = true;
                    }
                    Err(TrySendError::Full(msg)) => {
                        peer.overflow.push_front(msg);
                        break;
                    }
                    Err(TrySendError::Disconnected(_)) => peer.overflow.clear(),
                }
            }
            backlog |= !peer.overflow.is_empty();
            if std::mem::take(&mut peer.needs_wake) {
                if i == self.me {
                    to_self = true;
                } else {
                    let _ = peer.waker.wake();
                }
            }
        }
        Flushed { backlog, to_self }
    }

    /// The next message for this shard, if any.
    pub(crate) fn recv(&self) -> Option<ShardMsg> {
        self.inbox.try_recv().ok()
    }
}
