//! An HTTP/1.1 connection as a request pipeline that holds at most one
//! answer: the next request is read and parsed only once the answer to the
//! previous one has been written (hyper's rule), so a client that pipelines
//! requests without reading the answers cannot make the node buffer them.
//! Its deadline (request or answer within [`HTTP_TIMEOUT`]) is the
//! connection's (`Conn::deadline`), set by the shard at each step.

use std::borrow::Cow;
use std::time::Duration;

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
    /// Headers for the answer other shards are working on (CORS), kept
    /// from the request until that answer comes.
    pub(crate) answer_headers: Vec<Cow<'static, str>>,
}

impl HttpLink {
    pub(crate) fn new() -> Self {
        Self {
            state: HttpState::Reading,
            keep_alive: true,
            continue_sent: false,
            answer_headers: Vec::new(),
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

    /// The answer is queued (it must be read within the timeout).
    pub(crate) fn answered(&mut self, keep_alive: bool) {
        self.keep_alive &= keep_alive;
        self.state = HttpState::Writing;
    }

    /// The answer was written: read the next request (within the timeout).
    pub(crate) fn written(&mut self) {
        self.state = HttpState::Reading;
    }

    /// Whether the connection's deadline applies: not while other shards
    /// work on its request (they always answer).
    pub(crate) fn timed(&self) -> bool {
        self.state != HttpState::Waiting
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_answer_at_a_time() {
        let mut h = HttpLink::new();
        assert!(h.reading() && h.timed());
        h.took_request(true);
        assert!(!h.reading() && !h.timed(), "waiting for shards");
        h.answered(true);
        assert!(!h.reading(), "nothing is read while the answer is unwritten");
        assert!(h.timed(), "the answer must be read in time");
        h.written();
        assert!(h.reading() && h.keep_alive);
        h.took_request(true);
        h.answered(false);
        assert!(!h.keep_alive, "an answer that closes wins");
    }
}
