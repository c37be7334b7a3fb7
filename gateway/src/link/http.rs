//! An HTTP/1.1 connection as a request pipeline that holds at most one
//! answer: the next request is read and parsed only once the answer to the
//! previous one has been written (hyper's rule), so a client that pipelines
//! requests without reading the answers cannot make the node buffer them.

use std::time::{Duration, Instant};

/// Time a request (or the WebSocket upgrade) has to arrive, and an answer
/// has to be read.
pub(crate) const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the connection is in its request/answer cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HttpState {
    /// Reading the next request.
    Reading,
    /// Waiting for other shards to answer the request.
    Waiting,
    /// The answer is queued; nothing more is read until it is written.
    Writing,
}

#[derive(Debug)]
pub(crate) struct HttpLink {
    pub(crate) state: HttpState,
    /// Keep the connection after the current answer.
    pub(crate) keep_alive: bool,
    /// `100 Continue` was sent for the request being received.
    pub(crate) continue_sent: bool,
    /// When the request must be complete or the answer read.
    pub(crate) deadline: Instant,
}

impl HttpLink {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            state: HttpState::Reading,
            keep_alive: true,
            continue_sent: false,
            deadline: now + HTTP_TIMEOUT,
        }
    }

    /// Whether socket input is wanted now.
    pub(crate) fn reading(&self) -> bool {
        self.state == HttpState::Reading
    }

    /// A request was taken: the connection waits for its answer.
    pub(crate) fn took_request(&mut self, keep_alive: bool) {
        self.keep_alive = keep_alive;
        self.continue_sent = false;
        self.state = HttpState::Waiting;
    }

    /// The answer is queued; it must be read within the timeout.
    pub(crate) fn answered(&mut self, now: Instant, keep_alive: bool) {
        self.keep_alive &= keep_alive;
        self.state = HttpState::Writing;
        self.deadline = now + HTTP_TIMEOUT;
    }

    /// The answer was written: read the next request, within the timeout.
    pub(crate) fn written(&mut self, now: Instant) {
        self.state = HttpState::Reading;
        self.deadline = now + HTTP_TIMEOUT;
    }

    /// When this link must be looked at: None while other shards work on
    /// its request (they always answer).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        (self.state != HttpState::Waiting).then_some(self.deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_answer_at_a_time() {
        let now = Instant::now();
        let mut h = HttpLink::new(now);
        assert!(h.reading());
        h.took_request(true);
        assert!(!h.reading() && h.deadline().is_none(), "waiting for shards");
        h.answered(now, true);
        assert!(!h.reading(), "nothing is read while the answer is unwritten");
        assert_eq!(h.deadline(), Some(now + HTTP_TIMEOUT));
        h.written(now + Duration::from_secs(1));
        assert!(h.reading() && h.keep_alive);
        h.took_request(true);
        h.answered(now, false);
        assert!(!h.keep_alive, "an answer that closes wins");
    }
}
