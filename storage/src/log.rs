//! The log store beneath a room owner.

use std::collections::VecDeque;

use herald_protocol::owner::{LogDone, LogError, LogRequest, ReadPage};

/// Where a room owner's appends and reads go. Requests come in through
/// [`submit`](LogStore::submit); every one is answered exactly once through
/// [`poll_done`](LogStore::poll_done), at once or later, in any order (the
/// owner releases each room's operations in their own order). A store that
/// answers from another thread wakes the shard that polls it.
pub trait LogStore: Send + std::fmt::Debug {
    /// Takes one request. Never blocks on I/O.
    fn submit(&mut self, request: LogRequest);

    /// The next answer, if one is ready.
    fn poll_done(&mut self) -> Option<LogDone>;
}

/// The store of a node that keeps history only in memory: the owners'
/// windows are all the history there is. Appends complete at once
/// (acknowledged means: in this node's memory), and reads of what the
/// window no longer holds find nothing and say they cannot vouch for the
/// range, so resuming clients are told `recovered = false`.
#[derive(Debug, Default)]
pub struct EphemeralLog {
    done: VecDeque<LogDone>,
}

impl LogStore for EphemeralLog {
    fn submit(&mut self, request: LogRequest) {
        let done = match request {
            LogRequest::Append { ticket, room, .. } => LogDone::Appended {
                ticket,
                room,
                result: Ok(()),
            },
            LogRequest::Read { ticket, room, .. } => LogDone::Read {
                ticket,
                room,
                result: Ok(ReadPage::default()),
            },
            // It never held anything (an owner over it does not ask).
            LogRequest::Head { ticket, room } => LogDone::Head {
                ticket,
                room,
                result: Ok(None),
            },
            // The cluster's work goes to the cluster's log, never here.
            LogRequest::Cluster(request) => match request.fail(LogError::Failed("not in a cluster".into())) {
                Some(done) => done,
                None => return,
            },
        };
        self.done.push_back(done);
    }

    fn poll_done(&mut self) -> Option<LogDone> {
        self.done.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use herald_protocol::owner::{ReadRange, Stored};

    use super::*;

    #[test]
    fn every_request_is_answered_once_in_order() {
        let mut log = EphemeralLog::default();
        let room: Arc<str> = Arc::from("chat:a");
        log.submit(LogRequest::Append {
            ticket: 1,
            room: room.clone(),
            epoch: 1,
            message: Stored {
                offset: 1,
                publisher: Arc::from("ann"),
                timestamp_ms: 0,
                payload: Bytes::from_static(b"x"),
                content_type: None,
            },
        });
        log.submit(LogRequest::Read {
            ticket: 2,
            room: room.clone(),
            epoch: 1,
            range: ReadRange {
                after: 0,
                before: 0,
                limit: 10,
                newest: true,
            },
        });
        assert!(matches!(
            log.poll_done(),
            Some(LogDone::Appended {
                ticket: 1,
                result: Ok(()),
                ..
            })
        ));
        match log.poll_done() {
            Some(LogDone::Read {
                ticket: 2,
                result: Ok(page),
                ..
            }) => assert!(
                !page.complete && page.messages.is_empty(),
                "it cannot vouch for older messages"
            ),
            other => panic!("{other:?}"),
        }
        assert!(log.poll_done().is_none());
    }
}
