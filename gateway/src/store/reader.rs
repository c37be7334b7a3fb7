//! Storage readers: head reads, history pages and notification pages, in
//! parallel with the writer. Readers share one queue.

use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};

use herald_protocol::owner::{DurableHead, LogDone};
use herald_storage::Storage;

use super::log::failed;
use super::writer::ErrorLog;
use super::{Outbox, ReadJob, StorageStats, StoreAnswer, StoreDone};

pub(super) fn run(
    storage: &Storage,
    jobs: &Arc<Mutex<Receiver<ReadJob>>>,
    mut out: Outbox,
    stats: &Arc<StorageStats>,
    errors: &ErrorLog,
) {
    loop {
        // One job at a time per reader: the lock is held only to take it.
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        serve(storage, job, &mut out, stats, errors);
        out.flush();
    }
}

fn serve(storage: &Storage, job: ReadJob, out: &mut Outbox, stats: &StorageStats, errors: &ErrorLog) {
    StorageStats::add(&stats.reads, 1);
    let check = |what: &str, e: &herald_storage::StorageError| {
        errors.report(what, e);
        StorageStats::add(&stats.read_errors, 1);
    };
    match job {
        ReadJob::Log {
            shard,
            ticket,
            room,
            epoch,
            range,
        } => {
            let result = storage.log.read(&room, epoch, range).map_err(|e| {
                check("history read", &e);
                failed(&e)
            });
            out.log(shard, LogDone::Read { ticket, room, result });
        }
        ReadJob::Head { shard, ticket, room } => {
            let result = storage
                .log
                .head(&room)
                .map(|h| {
                    h.map(|h| DurableHead {
                        epoch: h.epoch,
                        last_offset: h.last_offset,
                    })
                })
                .map_err(|e| {
                    check("room head read", &e);
                    failed(&e)
                });
            out.log(shard, LogDone::Head { ticket, room, result });
        }
        ReadJob::Notifications {
            origin,
            user,
            before_id,
            limit,
            unread_only,
        } => {
            let result = storage
                .notifications
                .page(&user, before_id, limit, unread_only)
                .map_err(|e| {
                    check("notifications read", &e);
                    failed(&e)
                });
            out.done(
                origin.shard(),
                StoreDone {
                    origin,
                    answer: StoreAnswer::Page(result),
                },
            );
        }
        ReadJob::Unread { origin, user } => {
            let result = storage.notifications.unread_count(&user).map_err(|e| {
                check("unread count", &e);
                failed(&e)
            });
            out.done(
                origin.shard(),
                StoreDone {
                    origin,
                    answer: StoreAnswer::Unread(result),
                },
            );
        }
        ReadJob::Rollups {
            origin,
            name,
            from_ms,
            to_ms,
        } => {
            let result = storage.events.rollups(&name, from_ms, to_ms).map_err(|e| {
                check("rollups read", &e);
                failed(&e)
            });
            out.done(
                origin.shard(),
                StoreDone {
                    origin,
                    answer: StoreAnswer::Rollups(result),
                },
            );
        }
    }
}
