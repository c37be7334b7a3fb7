//! The room owners' log store on a durable node: appends go to the
//! writer, reads and head reads to the readers; answers come back on the
//! shard's channel whenever they are ready.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender};

use herald_protocol::owner::{LogDone, LogError, LogRequest};
use herald_storage::{LogEntry, LogStore};

use super::StorageStats;
use super::{ReadJob, WriteBudget, WriteJob, send, send_write};

/// A [`LogStore`] over the storage service.
#[derive(Debug)]
pub(crate) struct DurableLog {
    shard: usize,
    writes: SyncSender<WriteJob>,
    reads: SyncSender<ReadJob>,
    answers: Receiver<LogDone>,
    /// Requests refused on the spot (a full queue), answered on the next poll.
    refused: VecDeque<LogDone>,
    stats: Arc<StorageStats>,
    budget: Arc<WriteBudget>,
}

impl DurableLog {
    pub(super) fn new(
        shard: usize,
        writes: SyncSender<WriteJob>,
        reads: SyncSender<ReadJob>,
        answers: Receiver<LogDone>,
        stats: Arc<StorageStats>,
        budget: Arc<WriteBudget>,
    ) -> Self {
        Self {
            shard,
            writes,
            reads,
            answers,
            refused: VecDeque::new(),
            stats,
            budget,
        }
    }
}

impl LogStore for DurableLog {
    fn submit(&mut self, request: LogRequest) {
        let shard = self.shard;
        let refused = match request {
            LogRequest::Append {
                ticket,
                room,
                epoch,
                message,
            } => {
                let job = WriteJob::Append {
                    shard,
                    ticket,
                    entry: LogEntry {
                        room: room.clone(),
                        epoch,
                        message,
                    },
                };
                send_write(&self.writes, job, &self.stats, &self.budget)
                    .err()
                    .map(|e| LogDone::Appended {
                        ticket,
                        room,
                        result: Err(e),
                    })
            }
            LogRequest::Read {
                ticket,
                room,
                epoch,
                range,
            } => {
                let job = ReadJob::Log {
                    shard,
                    ticket,
                    room: room.clone(),
                    epoch,
                    range,
                };
                send(&self.reads, job, &self.stats).err().map(|e| LogDone::Read {
                    ticket,
                    room,
                    result: Err(e),
                })
            }
            LogRequest::Head { ticket, room } => {
                let job = ReadJob::Head {
                    shard,
                    ticket,
                    room: room.clone(),
                };
                send(&self.reads, job, &self.stats).err().map(|e| LogDone::Head {
                    ticket,
                    room,
                    result: Err(e),
                })
            }
            // The cluster's work goes to the cluster's log, never here.
            LogRequest::Cluster(request) => request.fail(LogError::Failed("not in a cluster".into())),
        };
        self.refused.extend(refused);
    }

    fn poll_done(&mut self) -> Option<LogDone> {
        self.refused.pop_front().or_else(|| self.answers.try_recv().ok())
    }
}

/// Maps a storage failure to what the owner understands.
pub(super) fn failed(e: &herald_storage::StorageError) -> LogError {
    LogError::Failed(e.to_string())
}
