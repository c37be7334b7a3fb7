//! The storage writer: group commit. Every write that arrived while the
//! previous commit ran goes into the next one: one backend batch per kind
//! of data and at most one sync, then every job is answered. Under load the
//! batches grow by themselves, so the sync cost is shared by all of them.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_protocol::owner::{LogDone, LogError};
use herald_storage::{AnalyticsEvent, LogEntry, MarkRead, NotificationRecord, Storage, StorageError};

use super::log::failed;
use super::{Outbox, StorageStats, StoreAnswer, StoreDone, WriteBudget, WriteJob, syncs_before_answer};
use crate::config::SyncPolicy;

/// Most jobs in one commit, so answers are never held back for long.
const MAX_BATCH: usize = 16 * 1024;

/// Logs storage errors at most once a second (a full disk fails every
/// commit; the log must not drown).
#[derive(Debug, Default)]
pub(crate) struct ErrorLog {
    last: Mutex<Option<Instant>>,
}

impl ErrorLog {
    pub(crate) fn report(&self, what: &str, e: &StorageError) {
        let now = Instant::now();
        let Ok(mut last) = self.last.lock() else { return };
        if last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
            *last = Some(now);
            tracing::error!(error = %e, "storage {what} failed (logged at most once a second)");
        }
    }
}

pub(super) fn run(
    storage: &Storage,
    sync: SyncPolicy,
    jobs: &Receiver<WriteJob>,
    mut out: Outbox,
    stats: &Arc<StorageStats>,
    errors: &ErrorLog,
    budget: &WriteBudget,
) {
    let mut batch = Vec::new();
    // Written but not synced yet (interval policy), since when.
    let mut unsynced: Option<Instant> = None;
    loop {
        let first = match (sync, unsynced) {
            (SyncPolicy::Interval(every), Some(since)) => {
                match jobs.recv_timeout((since + every).saturating_duration_since(Instant::now())) {
                    Ok(j) => Some(j),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            _ => match jobs.recv() {
                Ok(j) => Some(j),
                Err(_) => break,
            },
        };
        if let Some(j) = first {
            batch.push(j);
            while batch.len() < MAX_BATCH {
                match jobs.try_recv() {
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
            // Taken off the budget when the commit is done with them.
            let held: usize = batch.iter().map(WriteJob::bytes).sum();
            commit(storage, sync, &mut batch, &mut out, stats, errors);
            budget.give(held);
            if matches!(sync, SyncPolicy::Interval(_)) && unsynced.is_none() {
                unsynced = Some(Instant::now());
            }
        }
        if let (SyncPolicy::Interval(every), Some(since)) = (sync, unsynced)
            && since.elapsed() >= every
        {
            sync_all(storage, stats, errors);
            unsynced = None;
        }
    }
    // Every shard is gone: make what was written durable before the node
    // exits, whatever the policy.
    sync_all(storage, stats, errors);
}

fn sync_all(storage: &Storage, stats: &StorageStats, errors: &ErrorLog) {
    for r in [storage.log.sync(), storage.notifications.sync(), storage.events.sync()] {
        if let Err(e) = r {
            errors.report("sync", &e);
        }
    }
    StorageStats::add(&stats.syncs, 1);
}

/// Timed sync of one store, counted.
fn synced(sync: impl FnOnce() -> Result<(), StorageError>, stats: &StorageStats) -> Result<(), StorageError> {
    let t = Instant::now();
    let r = sync();
    StorageStats::add(&stats.syncs, 1);
    StorageStats::add(&stats.sync_ns, t.elapsed().as_nanos() as u64);
    r
}

fn commit(
    storage: &Storage,
    sync: SyncPolicy,
    batch: &mut Vec<WriteJob>,
    out: &mut Outbox,
    stats: &StorageStats,
    errors: &ErrorLog,
) {
    let started = Instant::now();
    let before_answer = syncs_before_answer(sync);
    let mut entries: Vec<LogEntry> = Vec::new();
    let mut records: Vec<NotificationRecord> = Vec::new();
    let mut events: Vec<AnalyticsEvent> = Vec::new();
    let mut marks = false;
    let mut event_counts: Vec<usize> = Vec::new();
    for job in batch.iter_mut() {
        match job {
            WriteJob::Append { entry, .. } => entries.push(entry.clone()),
            WriteJob::Notify { record, .. } => records.push(record.clone()),
            // The job's events move into the batch; its count stays for
            // the answer.
            WriteJob::Events { events: e, .. } => {
                event_counts.push(e.len());
                events.append(e);
            }
            WriteJob::MarkRead { .. } => marks = true,
        }
    }
    let log_result = (!entries.is_empty()).then(|| {
        storage.log.append(&entries).and_then(|()| {
            if before_answer {
                synced(|| storage.log.sync(), stats)
            } else {
                Ok(())
            }
        })
    });
    // Marks run one by one (each answers its own count) before the
    // notifications batch is synced, so one sync covers both.
    let mut mark_results = Vec::new();
    for job in batch.iter() {
        if let WriteJob::MarkRead {
            user, ids, up_to, all, ..
        } = job
        {
            let which = if *all {
                MarkRead::All
            } else if *up_to > 0 && ids.is_empty() {
                MarkRead::UpTo(*up_to)
            } else {
                MarkRead::Ids(ids)
            };
            let mut r = storage.notifications.mark_read(user, which);
            if *up_to > 0 && !ids.is_empty() && !*all {
                r = r.and_then(|n| Ok(n + storage.notifications.mark_read(user, MarkRead::UpTo(*up_to))?));
            }
            mark_results.push(r);
        }
    }
    let notify_result = (!records.is_empty() || marks).then(|| {
        let appended = if records.is_empty() {
            Ok(())
        } else {
            storage.notifications.append(&records)
        };
        appended.and_then(|()| {
            if before_answer {
                synced(|| storage.notifications.sync(), stats)
            } else {
                Ok(())
            }
        })
    });
    let events_result = (!events.is_empty()).then(|| {
        storage.events.append(&events).and_then(|()| {
            if before_answer {
                synced(|| storage.events.sync(), stats)
            } else {
                Ok(())
            }
        })
    });
    for (what, r) in [
        ("room log write", &log_result),
        ("notification write", &notify_result),
        ("analytics write", &events_result),
    ] {
        if let Some(Err(e)) = r {
            errors.report(what, e);
            StorageStats::add(&stats.write_errors, 1);
        }
    }
    let as_log = |r: &Option<Result<(), StorageError>>| -> Result<(), LogError> {
        match r {
            Some(Err(e)) => Err(failed(e)),
            _ => Ok(()),
        }
    };
    if matches!(log_result, Some(Ok(()))) {
        StorageStats::add(&stats.messages, entries.len() as u64);
    }
    if matches!(notify_result, Some(Ok(()))) {
        StorageStats::add(&stats.notifications, records.len() as u64);
    }
    if matches!(events_result, Some(Ok(()))) {
        StorageStats::add(&stats.events, events.len() as u64);
    }
    let mut marks = mark_results.into_iter();
    let mut event_counts = event_counts.into_iter();
    for job in batch.drain(..) {
        match job {
            WriteJob::Append { shard, ticket, entry } => out.log(
                shard,
                LogDone::Appended {
                    ticket,
                    room: entry.room,
                    result: as_log(&log_result),
                },
            ),
            WriteJob::Notify { origin, record } => {
                let answer = StoreAnswer::Notified(as_log(&notify_result).map(|()| record));
                out.done(origin.shard(), StoreDone { origin, answer });
            }
            WriteJob::MarkRead { origin, .. } => {
                let marked = marks.next().unwrap_or(Ok(0)).map_err(|e| failed(&e));
                // A sync failure fails the marks too: they may not be durable.
                let answer = StoreAnswer::Marked(as_log(&notify_result).and(marked));
                out.done(origin.shard(), StoreDone { origin, answer });
            }
            WriteJob::Events { origin, .. } => {
                let stored = event_counts.next().unwrap_or(0);
                if let Some(origin) = origin {
                    let answer = StoreAnswer::EventsStored(as_log(&events_result).map(|()| stored));
                    out.done(origin.shard(), StoreDone { origin, answer });
                }
            }
        }
    }
    out.flush();
    StorageStats::add(&stats.commits, 1);
    StorageStats::add(&stats.commit_ns, started.elapsed().as_nanos() as u64);
}
