//! An idle session gives back queue memory after a burst.

#[macro_use]
mod support;

use std::time::Instant;

use bytes::Bytes;
use herald_protocol::{SendOutcome, ServerConfig};
use support::open_server;

#[test]
fn release_idle_memory_keeps_queued_frames_and_frees_empty_queues() {
    let now = Instant::now();
    let mut s = open_server(ServerConfig::default(), now);
    s.release_idle_memory();
    assert_eq!(
        s.queue_capacity_bytes(),
        0,
        "an idle open session holds no queue memory"
    );

    for _ in 0..3 {
        assert_eq!(s.send(Bytes::from_static(b"x"), false), SendOutcome::Queued);
    }
    let burst = s.queue_capacity_bytes();
    assert!(burst > 0, "queued frames take queue capacity");
    // Frames still queued survive a release, and so does their capacity.
    s.release_idle_memory();
    assert_eq!(s.queue_capacity_bytes(), burst);
    let mut n = 0;
    while s.poll_transmit().is_some() {
        n += 1;
    }
    assert_eq!(n, 3);
    assert_eq!(s.outbound_bytes(), 0);
    // Drained, the capacity is still there until released...
    assert_eq!(s.queue_capacity_bytes(), burst);
    s.release_idle_memory();
    // ...and then it is all given back.
    assert_eq!(s.queue_capacity_bytes(), 0);
    // The session still works after its queues were released.
    assert_eq!(s.send(Bytes::from_static(b"y"), false), SendOutcome::Queued);
    assert_eq!(s.poll_transmit().as_deref(), Some(&b"y"[..]));
}

#[test]
fn a_session_that_has_not_connected_takes_no_application_frame() {
    let now = Instant::now();
    let mut s = herald_protocol::ServerSession::new(ServerConfig::default(), now);
    assert_eq!(s.send(Bytes::from_static(b"private"), false), SendOutcome::NotOpen);
    assert_eq!(s.send(Bytes::from_static(b"private"), true), SendOutcome::NotOpen);
    assert_eq!(s.poll_transmit(), None, "nothing queued before Connected");
    assert_eq!(s.outbound_bytes(), 0);
    // A ping before Connect is still answered: pongs are the session's own.
    s.handle_frame(now, support::frames::ping(7))
        .expect("a ping is valid before Connect");
    assert!(s.poll_transmit().is_some(), "the pong");
}
