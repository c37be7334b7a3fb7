//! Thin wrappers over gateway internals for the criterion benches in
//! `benches/benches/fanout.rs`.
//!
//! **For benches only; not a stable API.** Nothing here is used by the
//! gateway itself; it exists so that benches measure the real [`Mesh`] and
//! the real WebSocket framing instead of copies of them.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use herald_protocol::ServerSession;

use herald_protocol::owner::{Audience, Output};

use crate::mesh::{self, Mesh, Reply, Senders};
use crate::shard::WAKER;
use crate::stats::ShardStats;

/// The sending end of a two-shard mesh: shard 0's [`Mesh`], which sends
/// deliveries (`Reply::Owner(Output::Deliver)`) to shard 1.
#[derive(Debug)]
pub struct HandoffSender {
    mesh: Mesh,
    room: Arc<str>,
    frame: Bytes,
    published: Instant,
    // Shard 0's poll: its waker is registered there (never polled here).
    _poll: mio::Poll,
}

/// The receiving end of a two-shard mesh: shard 1's [`Mesh`] and its
/// `mio::Poll`, with the waker registered as in a shard.
#[derive(Debug)]
pub struct HandoffReceiver {
    mesh: Mesh,
    poll: mio::Poll,
    events: mio::Events,
}

/// What one [`HandoffReceiver::drain`] took from the inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Deliveries received (and dropped).
    pub delivers: u64,
    /// A shutdown message was received: stop.
    pub shutdown: bool,
}

/// Builds the gateway's real mesh for two shards (bounded channels of
/// `capacity` messages, one `mio::Waker` per shard on its own `mio::Poll`)
/// and returns shard 0's sending end, which delivers `frame` to `room`, and
/// shard 1's receiving end. For benches only; not a stable API.
pub fn handoff_pair(capacity: usize, room: &str, frame: Bytes) -> io::Result<(HandoffSender, HandoffReceiver)> {
    let polls = [mio::Poll::new()?, mio::Poll::new()?];
    let wakers = polls
        .iter()
        .map(|p| mio::Waker::new(p.registry(), WAKER).map(Arc::new))
        .collect::<io::Result<Vec<_>>>()?;
    let stats: Vec<Arc<ShardStats>> = (0..2).map(|_| Arc::new(ShardStats::default())).collect();
    let (requests, replies, inboxes) = mesh::channels(2, capacity);
    let senders = Senders {
        requests,
        replies,
        wakers,
        stats: stats.clone(),
    };
    let [poll0, poll1] = polls;
    let mut rxs = inboxes.into_iter();
    let (Some(rx0), Some(rx1)) = (rxs.next(), rxs.next()) else {
        return Err(io::Error::other("mesh::channels returned fewer than two receivers"));
    };
    let sender = HandoffSender {
        mesh: Mesh::new(0, &senders, rx0),
        room: Arc::from(room),
        frame,
        published: Instant::now(),
        _poll: poll0,
    };
    let receiver = HandoffReceiver {
        mesh: Mesh::new(1, &senders, rx1),
        poll: poll1,
        events: mio::Events::with_capacity(16),
    };
    Ok((sender, receiver))
}

impl HandoffSender {
    /// Queues one delivery (a clone of the room name and of the frame, as a
    /// room owner sends them) for shard 1, through `Mesh::reply`. No wake
    /// until [`flush`](Self::flush).
    pub fn send_deliver(&mut self) {
        let msg = Reply::Owner(Output::Deliver {
            shard: 1,
            room: self.room.clone(),
            frame: self.frame.clone(),
            audience: Audience::Members {
                volatile: false,
                conflate: false,
            },
            published: Some(self.published),
        });
        self.mesh.reply(1, msg);
    }

    /// `Mesh::flush`, as at the end of a shard's loop iteration: moves
    /// overflow into the channel and wakes shard 1 once if it got messages.
    /// Returns true while messages still wait in the overflow queue.
    pub fn flush(&mut self) -> bool {
        self.mesh.flush().backlog
    }

    /// Sends `Reply::Shutdown` to shard 1 and wakes it (waits while the
    /// channel is full).
    pub fn shutdown(&mut self) {
        self.mesh.reply(1, Reply::Shutdown);
        while self.flush() {
            std::thread::yield_now();
        }
    }
}

impl HandoffReceiver {
    /// Blocks in `mio::Poll::poll` until the waker fires (or `timeout`).
    pub fn wait(&mut self, timeout: Option<std::time::Duration>) -> io::Result<()> {
        match self.poll.poll(&mut self.events, timeout) {
            Err(e) if e.kind() != io::ErrorKind::Interrupted => Err(e),
            _ => Ok(()),
        }
    }

    /// Takes every reply in the inbox with `try_recv` (`Mesh::recv_reply`,
    /// which lowers the queue-depth gauge as in a shard) and drops them.
    pub fn drain(&mut self) -> Drained {
        let mut drained = Drained {
            delivers: 0,
            shutdown: false,
        };
        while let Some(msg) = self.mesh.recv_reply() {
            match msg {
                Reply::Owner(Output::Deliver { .. }) => drained.delivers += 1,
                Reply::Shutdown => drained.shutdown = true,
                _ => {}
            }
        }
        drained
    }
}

/// Frames per write call (the gateway's own constant).
pub const FRAMES_PER_WRITE: usize = crate::writer::FRAMES_PER_WRITE;
/// Bytes per write call (the gateway's own constant).
pub const BYTES_PER_WRITE: usize = crate::writer::BYTES_PER_WRITE;

/// One write call of `writer::flush` without the socket, through the same
/// function: moves the next batch of frames from `session` into `buf`, each
/// after its WebSocket header. Returns the bytes assembled (0 when nothing
/// was queued). For benches only; not a stable API.
pub fn assemble_write(session: &mut ServerSession, buf: &mut Vec<u8>) -> usize {
    crate::writer::take_batch(session, buf);
    buf.len()
}
