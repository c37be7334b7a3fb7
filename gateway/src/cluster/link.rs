//! A shard's log store on a node in a cluster: the cluster's work goes to
//! the Redis bridge, everything else (rooms of local-only namespaces) to
//! the node's own store beneath.

use std::collections::VecDeque;
use std::sync::Arc;

use herald_protocol::owner::{ClusterRequest, LogDone, LogError, LogRequest};
use herald_storage::LogStore;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::{Receiver, Sender};

use super::ClusterStats;

/// One cluster request of one shard, for the bridge.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) shard: usize,
    pub(crate) request: ClusterRequest,
}

/// A [`LogStore`] that splits the owner's requests between the cluster
/// bridge and the node's own store.
#[derive(Debug)]
pub(crate) struct ClusterLog {
    shard: usize,
    local: Box<dyn LogStore>,
    /// One queue per Redis instance: a room's requests go to its own.
    to_bridge: Vec<Sender<Job>>,
    answers: Receiver<LogDone>,
    /// Requests refused on the spot (a full queue), answered next poll.
    refused: VecDeque<LogDone>,
    /// Unfollows and presence changes that found their queue full: they
    /// must not be lost (a room read forever, a user present forever), so
    /// they wait here, in order, and go first when there is room.
    deferred: VecDeque<(usize, Job)>,
    stats: Arc<ClusterStats>,
}

impl ClusterLog {
    pub(crate) fn new(
        shard: usize,
        local: Box<dyn LogStore>,
        to_bridge: Vec<Sender<Job>>,
        answers: Receiver<LogDone>,
        stats: Arc<ClusterStats>,
    ) -> Self {
        Self {
            shard,
            local,
            to_bridge,
            answers,
            refused: VecDeque::new(),
            deferred: VecDeque::new(),
            stats,
        }
    }

    /// Sends what waits in `deferred` while its queues take it.
    fn send_deferred(&mut self) {
        while let Some((instance, job)) = self.deferred.pop_front() {
            match self.to_bridge[instance].try_send(job) {
                Ok(()) => {}
                Err(TrySendError::Full(job)) => {
                    self.deferred.push_front((instance, job));
                    return;
                }
                Err(TrySendError::Closed(_)) => {}
            }
        }
    }
}

impl LogStore for ClusterLog {
    fn submit(&mut self, request: LogRequest) {
        let LogRequest::Cluster(request) = request else {
            self.local.submit(request);
            return;
        };
        let instance = super::redis::room_instance(request.room(), self.to_bridge.len());
        let job = Job {
            shard: self.shard,
            request,
        };
        let must_arrive = matches!(
            job.request,
            ClusterRequest::Unfollow { .. } | ClusterRequest::Presence { .. }
        );
        if must_arrive && !self.deferred.is_empty() {
            // Behind what already waits, to keep their order.
            self.deferred.push_back((instance, job));
            self.send_deferred();
            return;
        }
        let (job, error) = match self.to_bridge[instance].try_send(job) {
            Ok(()) => return,
            Err(TrySendError::Full(job)) if must_arrive => {
                self.deferred.push_back((instance, job));
                return;
            }
            Err(TrySendError::Full(job)) => (job, LogError::Overloaded),
            Err(TrySendError::Closed(job)) => (job, LogError::Failed("the cluster bridge has stopped".into())),
        };
        match job.request.fail(error) {
            Some(done) => {
                ClusterStats::add(&self.stats.overloaded, 1);
                self.refused.push_back(done);
            }
            // Best effort: typing indicators and volatile messages.
            None => ClusterStats::add(&self.stats.dropped, 1),
        }
    }

    fn poll_done(&mut self) -> Option<LogDone> {
        if !self.deferred.is_empty() {
            self.send_deferred();
        }
        self.refused
            .pop_front()
            .or_else(|| self.local.poll_done())
            .or_else(|| self.answers.try_recv().ok())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use herald_protocol::owner::{Ticket, Unsequenced};
    use herald_storage::EphemeralLog;
    use tokio::sync::mpsc::channel;

    use super::*;

    fn publish(ticket: Ticket) -> LogRequest {
        LogRequest::Cluster(ClusterRequest::Publish {
            ticket,
            room: Arc::from("chat:a"),
            message: Unsequenced {
                publisher: Arc::from("ann"),
                timestamp_ms: 1,
                payload: Bytes::from_static(b"x"),
                content_type: None,
            },
            idempotency_key: None,
            keep: 10,
            durable: true,
        })
    }

    #[test]
    fn a_full_bridge_queue_refuses_with_overloaded_and_local_rooms_stay_local() {
        let stats = Arc::new(ClusterStats::new(1));
        let (tx, mut rx) = channel(1);
        let (_answer_tx, answers) = channel(1);
        let mut log = ClusterLog::new(3, Box::new(EphemeralLog::default()), vec![tx], answers, stats.clone());
        log.submit(publish(1));
        log.submit(publish(2));
        assert!(matches!(
            log.poll_done(),
            Some(LogDone::Published {
                ticket: 2,
                result: Err(LogError::Overloaded),
                ..
            })
        ));
        // An unfollow that does not fit waits, and goes once there is room.
        log.submit(LogRequest::Cluster(ClusterRequest::Unfollow {
            room: Arc::from("chat:a"),
        }));
        let job = rx.try_recv().expect("the first went to the bridge");
        assert_eq!(job.shard, 3);
        assert!(rx.try_recv().is_err(), "the unfollow waits in the link");
        assert!(log.poll_done().is_none());
        assert!(matches!(
            rx.try_recv().map(|j| j.request),
            Ok(ClusterRequest::Unfollow { .. })
        ));
        // A typing indicator that does not fit is dropped and counted.
        log.submit(publish(3));
        log.submit(LogRequest::Cluster(ClusterRequest::Typing {
            room: Arc::from("chat:a"),
            user: Arc::from("ann"),
            active: true,
            member: herald_protocol::owner::Member { shard: 3, conn: 1 },
            keep: 10,
        }));
        assert_eq!(stats.dropped.load(std::sync::atomic::Ordering::Relaxed), 1);
        rx.try_recv().expect("publish 3");
        // A local room's head read never reaches the bridge.
        log.submit(LogRequest::Head {
            ticket: 9,
            room: Arc::from("local:x"),
        });
        assert!(matches!(log.poll_done(), Some(LogDone::Head { ticket: 9, .. })));
        assert!(rx.try_recv().is_err());
    }
}
