//! The connections of a shard: a slab of sockets with their buffers and
//! links, each named by (slot, generation) so that a slot reused by a new
//! connection never answers to the old one's name.
//!
//! An idle WebSocket connection owns its socket, its link (session and
//! identity) and a few words: its input and output buffers are empty `Vec`s
//! (no allocation) until a partial frame arrives or a write comes back short.

use std::time::Instant;

use mio::net::TcpStream;
use slab::Slab;

use crate::link::{HTTP_TIMEOUT, HttpLink, Link};

/// A connection on a shard: slab slot and generation (slots are reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ConnKey {
    pub(crate) slot: u32,
    pub(crate) generation: u32,
}

impl ConnKey {
    /// The key as one number (for the room owner, which needs no more).
    pub(crate) fn id(self) -> u64 {
        (u64::from(self.slot) << 32) | u64::from(self.generation)
    }
}

/// Which listener accepted a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listener {
    /// Clients: WebSocket, health (and everything when there is no internal
    /// listener).
    Public,
    /// Operators and backends: metrics and the server API.
    Internal,
}

#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) sock: TcpStream,
    pub(crate) generation: u32,
    pub(crate) listener: Listener,
    pub(crate) link: Link,
    /// Received bytes not yet parsed (a partial head or frame, or requests
    /// pipelined behind an unwritten answer).
    pub(crate) inbuf: Vec<u8>,
    /// Bytes to write before anything else: the rest of a short write, an
    /// HTTP answer, a pong, a close frame.
    pub(crate) outbuf: Vec<u8>,
    /// The last write would have blocked: wait for writable readiness.
    pub(crate) blocked: bool,
    /// Already in the shard's list of connections to read.
    pub(crate) queued_read: bool,
    /// Already in the shard's list of connections to write.
    pub(crate) queued_write: bool,
    /// Already in the shard's list of recently active connections.
    pub(crate) active: bool,
    /// HTTP: when the request must be complete or the answer read.
    /// Closing: when to give up on the peer's close. A stuck WebSocket: when
    /// to drop it. (One field for the three: an idle connection's size
    /// matters, BENCHMARKS.md.)
    pub(crate) deadline: Instant,
    /// The wheel tick of this connection's current timer entry, 0 for none
    /// (ticks start at 1); older entries that expire are ignored.
    pub(crate) timer: u64,
}

impl Conn {
    pub(crate) fn key(&self, slot: usize) -> ConnKey {
        ConnKey {
            slot: slot as u32,
            generation: self.generation,
        }
    }

    /// When this connection must next be looked at.
    pub(crate) fn next_deadline(&self, token_leeway_secs: u64, now_unix_secs: u64, now: Instant) -> Option<Instant> {
        match &self.link {
            Link::Http(h) => h.timed().then_some(self.deadline),
            Link::Closing => Some(self.deadline),
            Link::Ws(w) if w.framing.stuck => Some(self.deadline),
            Link::Sse(s) if s.stuck => Some(self.deadline),
            Link::Sse(s) => {
                let expiry = s.expires_at.map(|exp| {
                    let left = exp.saturating_add(token_leeway_secs).saturating_sub(now_unix_secs);
                    now + std::time::Duration::from_secs(left)
                });
                Some(expiry.map_or(s.next_heartbeat, |e| e.min(s.next_heartbeat)))
            }
            Link::Ws(w) => {
                let session = w.peer.session.poll_timeout();
                // A token's expiry, on the monotonic clock.
                let expiry = w.peer.expires_at().map(|exp| {
                    let left = exp.saturating_add(token_leeway_secs).saturating_sub(now_unix_secs);
                    now + std::time::Duration::from_secs(left)
                });
                [session, expiry].into_iter().flatten().min()
            }
        }
    }
}

/// The slab of connections and the generation counter.
#[derive(Debug, Default)]
pub(crate) struct Connections {
    slab: Slab<Conn>,
    next_generation: u32,
}

impl Connections {
    pub(crate) fn len(&self) -> usize {
        self.slab.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// The slot the next connection will take.
    pub(crate) fn next_slot(&self) -> usize {
        self.slab.vacant_key()
    }

    /// Adds a freshly accepted socket as an HTTP connection.
    pub(crate) fn insert(&mut self, sock: TcpStream, listener: Listener, now: Instant) -> ConnKey {
        self.next_generation = self.next_generation.wrapping_add(1);
        let conn = Conn {
            sock,
            generation: self.next_generation,
            listener,
            link: Link::Http(HttpLink::new()),
            inbuf: Vec::new(),
            outbuf: Vec::new(),
            blocked: false,
            queued_read: false,
            queued_write: false,
            active: false,
            deadline: now + HTTP_TIMEOUT,
            timer: 0,
        };
        let slot = self.slab.insert(conn);
        ConnKey {
            slot: slot as u32,
            generation: self.next_generation,
        }
    }

    pub(crate) fn remove(&mut self, slot: usize) -> Option<Conn> {
        self.slab.try_remove(slot)
    }

    pub(crate) fn get(&self, slot: usize) -> Option<&Conn> {
        self.slab.get(slot)
    }

    pub(crate) fn get_mut(&mut self, slot: usize) -> Option<&mut Conn> {
        self.slab.get_mut(slot)
    }

    /// The connection named by `key`, if it is still that connection.
    pub(crate) fn by_key(&mut self, key: ConnKey) -> Option<&mut Conn> {
        self.slab
            .get_mut(key.slot as usize)
            .filter(|c| c.generation == key.generation)
    }

    /// The slot of `key` if it is still that connection.
    pub(crate) fn slot_of(&self, key: ConnKey) -> Option<usize> {
        let slot = key.slot as usize;
        (self.slab.get(slot)?.generation == key.generation).then_some(slot)
    }

    pub(crate) fn key(&self, slot: usize) -> Option<ConnKey> {
        self.slab.get(slot).map(|c| c.key(slot))
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (usize, &Conn)> {
        self.slab.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_slot_gets_another_id() {
        let a = ConnKey { slot: 7, generation: 1 };
        let b = ConnKey { slot: 7, generation: 2 };
        let c = ConnKey { slot: 8, generation: 1 };
        assert_ne!(a.id(), b.id());
        assert_ne!(a.id(), c.id());
        assert_eq!(a.id(), (7 << 32) | 1);
    }
}
