//! The coalescing writer: everything a connection has to write goes out in
//! as few write calls as the socket takes, its pending bytes first, then
//! its session's frames, many to a call.

use std::io::{self, Write};

use herald_protocol::ServerSession;
use mio::net::TcpStream;

use crate::stats::ShardStats;
use crate::ws::{self, ServerHead};

/// Most frames one write call carries.
pub(crate) const FRAMES_PER_WRITE: usize = 64;
/// Bytes after which a write call stops taking more frames.
pub(crate) const BYTES_PER_WRITE: usize = 64 * 1024;

/// Where a connection's queued output comes from: a Herald session's frames
/// (WebSocket framing added here) or an SSE stream's events.
pub(crate) trait Source {
    /// Moves the next write's worth into `buf` (cleared first); returns how
    /// many frames or events it took.
    fn take_batch(&mut self, buf: &mut Vec<u8>) -> usize;
}

impl Source for ServerSession {
    fn take_batch(&mut self, buf: &mut Vec<u8>) -> usize {
        take_batch(self, buf)
    }
}

/// Writes `outbuf` and then the source's queued output, as much per call as
/// fits, until the socket would block or nothing is left. Bytes a short
/// write leaves behind move to `outbuf` (bounded by one call's worth).
/// `scratch` is the shard's buffer for assembling one call's bytes.
/// Returns false if the socket failed.
pub(crate) fn flush(
    sock: &mut TcpStream,
    outbuf: &mut Vec<u8>,
    mut session: Option<&mut dyn Source>,
    blocked: &mut bool,
    stats: &ShardStats,
    scratch: &mut Vec<u8>,
) -> bool {
    loop {
        if !outbuf.is_empty() {
            match write_some(sock, outbuf, stats) {
                Ok(n) if n == outbuf.len() => *outbuf = Vec::new(),
                Ok(n) => {
                    outbuf.drain(..n);
                    *blocked = true;
                    return true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    *blocked = true;
                    return true;
                }
                Err(_) => return false,
            }
        }
        let Some(s) = session.as_deref_mut() else { return true };
        let frames = s.take_batch(scratch);
        if frames == 0 {
            return true;
        }
        ShardStats::add(&stats.frames_out, frames as u64);
        let written = match write_some(sock, scratch, stats) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(_) => return false,
        };
        if written < scratch.len() {
            // Keep what the kernel did not take, in order.
            outbuf.extend_from_slice(&scratch[written..]);
            *blocked = true;
            return true;
        }
    }
}

/// Moves the next write's worth of frames from `session` into `buf`, each
/// after its WebSocket header: up to [`FRAMES_PER_WRITE`] frames or until
/// [`BYTES_PER_WRITE`] is passed. Returns how many frames it took.
///
/// One contiguous buffer rather than a `writev` of (header, frame) pairs:
/// the kernel's per-segment cost of copying many small pieces was ~20 % of
/// the node's CPU in a 5,000-subscriber room, far more than copying the
/// same bytes once here from frames that are hot in cache.
pub(crate) fn take_batch(session: &mut ServerSession, buf: &mut Vec<u8>) -> usize {
    buf.clear();
    if buf.capacity() > 4 * BYTES_PER_WRITE {
        // A large frame grew it; do not keep that much per shard.
        buf.shrink_to(2 * BYTES_PER_WRITE);
    }
    let mut frames = 0;
    while frames < FRAMES_PER_WRITE && buf.len() < BYTES_PER_WRITE {
        let Some(f) = session.poll_transmit() else { break };
        buf.extend_from_slice(ServerHead::new(ws::opcode::BINARY, f.len()).as_bytes());
        buf.extend_from_slice(&f);
        frames += 1;
    }
    frames
}

fn write_some(sock: &mut TcpStream, bytes: &[u8], stats: &ShardStats) -> io::Result<usize> {
    loop {
        ShardStats::add(&stats.write_syscalls, 1);
        match sock.write(bytes) {
            Ok(n) => {
                ShardStats::add(&stats.bytes_out, n as u64);
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use bytes::Bytes;
    use herald_protocol::{ServerConfig, ServerSession};

    use super::{BYTES_PER_WRITE, FRAMES_PER_WRITE, take_batch};

    /// Splits server-to-client WebSocket frames (unmasked, binary, final)
    /// back into their payloads.
    fn payloads(mut buf: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while !buf.is_empty() {
            assert_eq!(buf[0], 0x82, "FIN + binary");
            let (len, head) = match buf[1] {
                n @ 0..=125 => (usize::from(n), 2),
                126 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
                127 => (u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize, 10),
                _ => panic!("masked server frame"),
            };
            out.push(buf[head..head + len].to_vec());
            buf = &buf[head + len..];
        }
        out
    }

    fn session_with(frames: &[Vec<u8>]) -> ServerSession {
        let now = Instant::now();
        let mut s = ServerSession::new(ServerConfig::default(), now);
        let mut connect = herald_protocol::wire::ConnectT::default();
        connect.token = Some("ann".into());
        let frame =
            herald_protocol::with_encoder(|e| e.body(1, herald_protocol::wire::BodyT::Connect(Box::new(connect))));
        s.handle_frame(now, frame).unwrap();
        while s.poll_event().is_some() {}
        let accept = herald_protocol::Accept {
            session_id: "s".into(),
            node_id: "n".into(),
            user_id: "ann".into(),
            server_time_ms: 0,
        };
        s.accept(now, &accept);
        while s.poll_transmit().is_some() {}
        for f in frames {
            s.send(Bytes::from(f.clone()), false);
        }
        s
    }

    #[test]
    fn a_batch_holds_every_frame_in_order_after_its_header() {
        // One length of each header size: 7-bit, 16-bit, 64-bit.
        let frames = vec![vec![1; 3], vec![2; 300], vec![3; 70_000], vec![4; 125]];
        let mut s = session_with(&frames);
        let mut buf = Vec::new();
        assert_eq!(take_batch(&mut s, &mut buf), 3, "stops once 64 KiB is passed");
        assert_eq!(payloads(&buf), frames[..3]);
        assert_eq!(take_batch(&mut s, &mut buf), 1);
        assert_eq!(payloads(&buf), frames[3..]);
        assert_eq!(take_batch(&mut s, &mut buf), 0);
        assert!(buf.is_empty());
    }

    #[test]
    fn a_batch_stops_at_the_frame_cap_and_leaves_the_rest_queued() {
        let frames: Vec<Vec<u8>> = (0..FRAMES_PER_WRITE + 5).map(|i| vec![i as u8; 20]).collect();
        let mut s = session_with(&frames);
        let mut buf = Vec::new();
        assert_eq!(take_batch(&mut s, &mut buf), FRAMES_PER_WRITE);
        assert_eq!(payloads(&buf), frames[..FRAMES_PER_WRITE]);
        assert_eq!(take_batch(&mut s, &mut buf), 5);
        assert_eq!(payloads(&buf), frames[FRAMES_PER_WRITE..]);
    }

    #[test]
    fn the_buffer_does_not_keep_what_a_large_frame_grew_it_to() {
        let mut s = session_with(&[vec![7; 8 * BYTES_PER_WRITE]]);
        let mut buf = Vec::new();
        assert_eq!(take_batch(&mut s, &mut buf), 1);
        assert!(buf.capacity() > 4 * BYTES_PER_WRITE);
        s.send(Bytes::from_static(b"small"), false);
        assert_eq!(take_batch(&mut s, &mut buf), 1);
        assert_eq!(payloads(&buf), [b"small".to_vec()]);
        assert!(buf.capacity() <= 2 * BYTES_PER_WRITE, "capacity {}", buf.capacity());
    }
}
