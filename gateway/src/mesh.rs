//! Typed messages between shards over bounded channels, in two lanes.
//!
//! - **Requests** ask a shard for work that produces messages: the room
//!   owner's inputs (join, leave, publish, typing, queries) and the server
//!   API's per-user operations.
//! - **Replies** end where they arrive: the owner's answers and deliveries,
//!   counts for the server API, and the shutdown signal.
//!
//! A send never blocks the event loop: when a channel is full the message
//! waits in a per-destination overflow queue, and the sender stops making
//! more of that kind of message:
//! - with replies waiting, a shard takes no requests (their output is
//!   replies), but it always takes replies;
//! - with requests waiting, a shard reads no client input (its output is
//!   requests).
//!
//! So pressure travels end to end: a shard that falls behind on deliveries
//! makes the owner's replies wait, the owner stops taking publishes, its
//! request channel fills, the publishing shards' requests wait, they stop
//! reading their clients, and TCP pushes back on the clients. Overflow stays
//! bounded by what one request or one client frame produces (a delivery per
//! shard and an answer), plus the leaves of connections that close, which
//! only shrink what they free. Nothing can stall in a cycle: replies are
//! always taken, and taking a request waits only for replies.
//!
//! Every shard holds a sender to every shard (itself included, for uniform
//! handling). Destinations are woken (eventfd) once per loop iteration, not
//! once per message: each wake is a syscall.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use bytes::Bytes;
use herald_protocol::owner::{Input, Output};

use crate::conns::ConnKey;
use crate::stats::ShardStats;

/// Who asked, so the answer finds its way back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A request of a streaming connection (a WebSocket session, or an SSE
    /// stream's joins); request id 0 = a resume from `Connect` (WebSocket)
    /// or any SSE join. `attempt` tells a join's answer from an earlier
    /// join's of the same room (see `Peer::start_join`); 0 for other
    /// requests.
    Conn {
        shard: u32,
        conn: ConnKey,
        request_id: u32,
        attempt: u32,
    },
    /// A server API request on an HTTP connection.
    Http { shard: u32, conn: ConnKey },
}

impl Origin {
    pub(crate) fn shard(&self) -> usize {
        match *self {
            Origin::Conn { shard, .. } | Origin::Http { shard, .. } => shard as usize,
        }
    }
}

/// Work for a shard.
#[derive(Debug)]
pub(crate) enum Request {
    /// For the room owner on that shard.
    Owner(Input<Origin>),
    /// Close the connections of a user.
    DisconnectUser { origin: Origin, user: Arc<str> },
    /// Send a notification frame to a user's connections.
    NotifyUser {
        origin: Origin,
        user: Arc<str>,
        frame: Bytes,
    },
}

/// Something that ends at the shard it reaches.
#[derive(Debug)]
pub(crate) enum Reply {
    /// A room owner's answer or delivery (never a log request).
    Owner(Output<Origin>),
    /// Connections closed or notified on one shard.
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

/// One direction of one lane to one shard.
#[derive(Debug)]
struct Lane<T> {
    tx: SyncSender<T>,
    overflow: VecDeque<T>,
}

/// What became of a message handed to a lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// In the channel.
    Channel,
    /// Waiting in overflow.
    Overflow,
    /// The destination has stopped (shutdown): nothing left to tell it.
    Gone,
}

impl<T> Lane<T> {
    fn send(&mut self, msg: T) -> Sent {
        if !self.overflow.is_empty() {
            self.overflow.push_back(msg);
            return Sent::Overflow;
        }
        match self.tx.try_send(msg) {
            Ok(()) => Sent::Channel,
            Err(TrySendError::Full(msg)) => {
                self.overflow.push_back(msg);
                Sent::Overflow
            }
            Err(TrySendError::Disconnected(_)) => Sent::Gone,
        }
    }

    /// Moves overflow into the channel while it has room; returns how many
    /// left the overflow and how many of those entered the channel.
    fn drain(&mut self) -> (usize, usize) {
        let (mut left, mut entered) = (0, 0);
        while let Some(msg) = self.overflow.pop_front() {
            match self.tx.try_send(msg) {
                Ok(()) => {
                    left += 1;
                    entered += 1;
                }
                Err(TrySendError::Full(msg)) => {
                    self.overflow.push_front(msg);
                    break;
                }
                Err(TrySendError::Disconnected(_)) => {
                    left += 1 + self.overflow.len();
                    self.overflow.clear();
                }
            }
        }
        if self.overflow.is_empty() && self.overflow.capacity() > 64 {
            self.overflow = VecDeque::new();
        }
        (left, entered)
    }
}

#[derive(Debug)]
struct PeerShard {
    requests: Lane<Request>,
    replies: Lane<Reply>,
    waker: Arc<mio::Waker>,
    needs_wake: bool,
    /// The peer's counters (its queue depth is raised here).
    stats: Arc<ShardStats>,
}

/// One shard's ends of the mesh.
#[derive(Debug)]
pub(crate) struct Mesh {
    me: usize,
    peers: Vec<PeerShard>,
    requests: Receiver<Request>,
    replies: Receiver<Reply>,
    /// Requests this shard sent that wait in overflow.
    waiting_requests: usize,
    /// Replies this shard sent that wait in overflow.
    waiting_replies: usize,
    stats: Arc<ShardStats>,
}

/// Senders and wakers of every shard, handed to each shard's [`Mesh`] and to
/// the control side (shutdown).
#[derive(Debug, Clone)]
pub(crate) struct Senders {
    pub(crate) requests: Vec<SyncSender<Request>>,
    pub(crate) replies: Vec<SyncSender<Reply>>,
    pub(crate) wakers: Vec<Arc<mio::Waker>>,
    pub(crate) stats: Vec<Arc<ShardStats>>,
}

/// The receiving ends of one shard's two lanes.
#[derive(Debug)]
pub(crate) struct Inbox {
    requests: Receiver<Request>,
    replies: Receiver<Reply>,
}

/// Channels for `n` shards, `capacity` messages per lane.
pub(crate) fn channels(n: usize, capacity: usize) -> (Vec<SyncSender<Request>>, Vec<SyncSender<Reply>>, Vec<Inbox>) {
    let mut requests = Vec::with_capacity(n);
    let mut replies = Vec::with_capacity(n);
    let mut inboxes = Vec::with_capacity(n);
    for _ in 0..n {
        let (req_tx, req_rx) = sync_channel(capacity);
        let (rep_tx, rep_rx) = sync_channel(capacity);
        requests.push(req_tx);
        replies.push(rep_tx);
        inboxes.push(Inbox {
            requests: req_rx,
            replies: rep_rx,
        });
    }
    (requests, replies, inboxes)
}

impl Mesh {
    pub(crate) fn new(me: usize, senders: &Senders, inbox: Inbox) -> Self {
        let peers = (0..senders.requests.len())
            .map(|i| PeerShard {
                requests: Lane {
                    tx: senders.requests[i].clone(),
                    overflow: VecDeque::new(),
                },
                replies: Lane {
                    tx: senders.replies[i].clone(),
                    overflow: VecDeque::new(),
                },
                waker: senders.wakers[i].clone(),
                needs_wake: false,
                stats: senders.stats[i].clone(),
            })
            .collect();
        Self {
            me,
            peers,
            requests: inbox.requests,
            replies: inbox.replies,
            waiting_requests: 0,
            waiting_replies: 0,
            stats: senders.stats[me].clone(),
        }
    }

    pub(crate) fn shards(&self) -> usize {
        self.peers.len()
    }

    /// Queues a request for shard `to` (woken at [`flush`](Self::flush)).
    pub(crate) fn request(&mut self, to: usize, msg: Request) {
        let Some(peer) = self.peers.get_mut(to) else { return };
        peer.needs_wake = true;
        match peer.requests.send(msg) {
            Sent::Channel => ShardStats::gauge(&peer.stats.queue_depth, 1),
            Sent::Overflow => {
                self.waiting_requests += 1;
                self.stats.overflowed(1);
            }
            Sent::Gone => {}
        }
    }

    /// Queues a reply for shard `to` (woken at [`flush`](Self::flush)).
    pub(crate) fn reply(&mut self, to: usize, msg: Reply) {
        let Some(peer) = self.peers.get_mut(to) else { return };
        peer.needs_wake = true;
        match peer.replies.send(msg) {
            Sent::Channel => ShardStats::gauge(&peer.stats.queue_depth, 1),
            Sent::Overflow => {
                self.waiting_replies += 1;
                self.stats.overflowed(1);
            }
            Sent::Gone => {}
        }
    }

    /// Replies wait in overflow: take no requests until they drain.
    pub(crate) fn replies_waiting(&self) -> bool {
        self.waiting_replies > 0
    }

    /// Requests wait in overflow: read no client input until they drain.
    pub(crate) fn requests_waiting(&self) -> bool {
        self.waiting_requests > 0
    }

    /// Anything waits in overflow.
    pub(crate) fn backlogged(&self) -> bool {
        self.waiting_requests + self.waiting_replies > 0
    }

    /// Moves overflow into channels where room was made and wakes every
    /// shard that got messages.
    pub(crate) fn flush(&mut self) -> Flushed {
        let mut to_self = false;
        let mut moved = 0;
        for (i, peer) in self.peers.iter_mut().enumerate() {
            // Replies first: they are what unblocks everyone else.
            let (left_replies, replies) = peer.replies.drain();
            let (left_requests, requests) = peer.requests.drain();
            self.waiting_replies -= left_replies;
            self.waiting_requests -= left_requests;
            moved += left_replies + left_requests;
            let entered = replies + requests;
            if entered > 0 {
                ShardStats::gauge(&peer.stats.queue_depth, entered as i64);
                peer.needs_wake = true;
            }
            if std::mem::take(&mut peer.needs_wake) {
                if i == self.me {
                    to_self = true;
                } else {
                    let _ = peer.waker.wake();
                }
            }
        }
        if moved > 0 {
            self.stats.overflowed(-(moved as i64));
        }
        Flushed {
            backlog: self.backlogged(),
            to_self,
        }
    }

    /// The next reply for this shard, if any.
    pub(crate) fn recv_reply(&self) -> Option<Reply> {
        let r = self.replies.try_recv().ok()?;
        ShardStats::gauge(&self.stats.queue_depth, -1);
        Some(r)
    }

    /// The next request for this shard, if any.
    pub(crate) fn recv_request(&self) -> Option<Request> {
        let r = self.requests.try_recv().ok()?;
        ShardStats::gauge(&self.stats.queue_depth, -1);
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use super::*;

    fn mesh_pair(capacity: usize) -> (Mesh, Mesh, mio::Poll, mio::Poll) {
        let polls = [mio::Poll::new().unwrap(), mio::Poll::new().unwrap()];
        let wakers = polls
            .iter()
            .map(|p| Arc::new(mio::Waker::new(p.registry(), mio::Token(0)).unwrap()))
            .collect();
        let stats: Vec<Arc<ShardStats>> = (0..2).map(|_| Arc::new(ShardStats::default())).collect();
        let (requests, replies, inboxes) = channels(2, capacity);
        let senders = Senders {
            requests,
            replies,
            wakers,
            stats,
        };
        let mut inboxes = inboxes.into_iter();
        let a = Mesh::new(0, &senders, inboxes.next().unwrap());
        let b = Mesh::new(1, &senders, inboxes.next().unwrap());
        let [p0, p1] = polls;
        (a, b, p0, p1)
    }

    fn counted(n: u64) -> Reply {
        Reply::Counted {
            origin: Origin::Http {
                shard: 0,
                conn: ConnKey { slot: 0, generation: 0 },
            },
            count: n,
        }
    }

    #[test]
    fn overflow_keeps_order_and_marks_the_sender_backlogged_until_drained() {
        let (mut a, b, _p0, _p1) = mesh_pair(2);
        for n in 0..5 {
            a.reply(1, counted(n));
        }
        assert!(
            a.backlogged() && a.replies_waiting() && !a.requests_waiting(),
            "3 wait in overflow"
        );
        assert_eq!(a.stats.mesh_overflow.load(Relaxed), 3);
        assert!(a.flush().backlog);
        let mut got = Vec::new();
        for _ in 0..3 {
            while let Some(Reply::Counted { count, .. }) = b.recv_reply() {
                got.push(count);
            }
            a.flush();
        }
        assert_eq!(got, [0, 1, 2, 3, 4], "FIFO through the overflow");
        assert!(!a.backlogged());
        assert_eq!(a.stats.mesh_overflow.load(Relaxed), 0);
        assert_eq!(a.stats.mesh_overflow_peak.load(Relaxed), 3);
        assert_eq!(b.stats.queue_depth.load(Relaxed), 0);
    }

    #[test]
    fn a_stopped_shard_is_no_backlog() {
        let (mut a, b, _p0, _p1) = mesh_pair(1);
        drop(b);
        a.reply(1, counted(1));
        a.reply(1, counted(2));
        assert!(!a.backlogged(), "messages to a stopped shard are dropped, not kept");
        assert!(!a.flush().backlog);
    }

    #[test]
    fn requests_and_replies_are_separate_lanes() {
        let (mut a, b, _p0, _p1) = mesh_pair(1);
        // The request lane is full; replies still get through.
        a.request(
            1,
            Request::DisconnectUser {
                origin: Origin::Http {
                    shard: 0,
                    conn: ConnKey { slot: 0, generation: 0 },
                },
                user: Arc::from("ann"),
            },
        );
        a.reply(1, counted(7));
        assert!(!a.backlogged());
        assert!(matches!(b.recv_reply(), Some(Reply::Counted { count: 7, .. })));
        assert!(matches!(b.recv_request(), Some(Request::DisconnectUser { .. })));
    }
}
