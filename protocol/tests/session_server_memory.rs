//! An idle session gives back queue memory after a burst.

use std::time::Instant;

use bytes::Bytes;
use herald_protocol::{ServerConfig, ServerSession};

#[test]
fn release_idle_memory_keeps_queued_frames_and_frees_empty_queues() {
    let now = Instant::now();
    let mut s = ServerSession::new(ServerConfig::default(), now);
    for _ in 0..3 {
        let _ = s.send(Bytes::from_static(b"x"), false);
    }
    // Frames still queued survive a release.
    s.release_idle_memory();
    let mut n = 0;
    while s.poll_transmit().is_some() {
        n += 1;
    }
    assert_eq!(n, 3);
    assert_eq!(s.outbound_bytes(), 0);
    s.release_idle_memory();
    // The session still works after its queues were released.
    assert_eq!(
        s.send(Bytes::from_static(b"y"), false),
        herald_protocol::SendOutcome::Queued
    );
    assert_eq!(s.poll_transmit().as_deref(), Some(&b"y"[..]));
}
