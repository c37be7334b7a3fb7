//! The node's storage service: threads that do every storage I/O, so no
//! shard ever blocks on a disk or a database.
//!
//! - one **writer** group-commits: it takes every write that arrived while
//!   the previous commit ran (appends of all rooms of all shards,
//!   notifications, marks, analytics events), writes them as one batch,
//!   syncs once by the node's [`SyncPolicy`], then answers each;
//! - **readers** serve head reads, history pages and notification pages in
//!   parallel with the writer;
//! - a **retention** thread trims what namespaces no longer keep, in the
//!   background, never on the publish path.
//!
//! Shards reach them through bounded queues ([`StoreLink`]); a full queue is
//! answered at once with `Overloaded`. Answers come back on a per-shard
//! channel and wake the shard once per batch.

mod jobs;
mod log;
mod reader;
mod retention;
mod stats;
mod writer;

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, SyncSender, TrySendError, channel, sync_channel};
use std::thread::JoinHandle;

use herald_protocol::owner::{LogDone, LogError};
use herald_storage::Storage;

use crate::config::{StorageConfig, SyncPolicy};

pub(crate) use jobs::{ReadJob, StoreAnswer, StoreDone, WriteJob};
pub(crate) use log::DurableLog;
pub(crate) use stats::StorageStats;

/// What a job's answer goes back through: the shard's channels and waker.
#[derive(Debug, Clone)]
pub(crate) struct Return {
    log: Sender<LogDone>,
    done: Sender<StoreDone>,
    waker: Arc<mio::Waker>,
}

/// Answers for many shards, sent then woken once per shard.
#[derive(Debug)]
pub(crate) struct Outbox {
    returns: Arc<[Return]>,
    woken: Vec<bool>,
}

impl Outbox {
    fn new(returns: Arc<[Return]>) -> Self {
        let n = returns.len();
        Self {
            returns,
            woken: vec![false; n],
        }
    }

    fn log(&mut self, shard: usize, done: LogDone) {
        if let Some(r) = self.returns.get(shard) {
            // A shard that stopped has nobody waiting.
            let _ = r.log.send(done);
            self.woken[shard] = true;
        }
    }

    fn done(&mut self, shard: usize, done: StoreDone) {
        if let Some(r) = self.returns.get(shard) {
            let _ = r.done.send(done);
            self.woken[shard] = true;
        }
    }

    /// Wakes every shard that got answers since the last flush.
    fn flush(&mut self) {
        for (i, w) in self.woken.iter_mut().enumerate() {
            if std::mem::take(w) {
                let _ = self.returns[i].waker.wake();
            }
        }
    }
}

/// A shard's way into the storage service.
#[derive(Debug)]
pub(crate) struct StoreLink {
    writes: SyncSender<WriteJob>,
    reads: SyncSender<ReadJob>,
    done: Receiver<StoreDone>,
    stats: Arc<StorageStats>,
    budget: Arc<WriteBudget>,
}

impl StoreLink {
    /// Queues a write; a full queue or a stopped writer is an error now.
    pub(crate) fn write(&self, job: WriteJob) -> Result<(), LogError> {
        send_write(&self.writes, job, &self.stats, &self.budget)
    }

    /// Queues a read; a full queue or stopped readers is an error now.
    pub(crate) fn read(&self, job: ReadJob) -> Result<(), LogError> {
        send(&self.reads, job, &self.stats)
    }

    /// The next answer to a notification or analytics job.
    pub(crate) fn poll_done(&self) -> Option<StoreDone> {
        self.done.try_recv().ok()
    }
}

/// The bytes that writes waiting for the writers may hold, node-wide: the
/// queue's length alone would let large payloads hold gigabytes (65,536
/// jobs of 32 KiB) while a disk is slow.
#[derive(Debug)]
pub(crate) struct WriteBudget {
    queued: std::sync::atomic::AtomicUsize,
    max: usize,
}

impl WriteBudget {
    fn new(max: usize) -> Self {
        Self {
            queued: std::sync::atomic::AtomicUsize::new(0),
            max: max.max(1),
        }
    }

    fn take(&self, n: usize) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let mut cur = self.queued.load(Relaxed);
        loop {
            // One job always fits an empty budget, however large.
            if cur > 0 && cur + n > self.max {
                return false;
            }
            match self.queued.compare_exchange_weak(cur, cur + n, Relaxed, Relaxed) {
                Ok(_) => return true,
                Err(c) => cur = c,
            }
        }
    }

    pub(crate) fn give(&self, n: usize) {
        self.queued.fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Queues a write within the node's write budget.
fn send_write(
    to: &SyncSender<WriteJob>,
    job: WriteJob,
    stats: &StorageStats,
    budget: &WriteBudget,
) -> Result<(), LogError> {
    let n = job.bytes();
    if !budget.take(n) {
        StorageStats::add(&stats.overloaded, 1);
        return Err(LogError::Overloaded);
    }
    let sent = send(to, job, stats);
    if sent.is_err() {
        budget.give(n);
    }
    sent
}

fn send<T>(to: &SyncSender<T>, job: T, stats: &StorageStats) -> Result<(), LogError> {
    match to.try_send(job) {
        Ok(()) => Ok(()),
        Err(TrySendError::Full(_)) => {
            StorageStats::add(&stats.overloaded, 1);
            Err(LogError::Overloaded)
        }
        Err(TrySendError::Disconnected(_)) => Err(LogError::Failed("the storage service stopped".into())),
    }
}

/// The running service: its threads, joined when the node stops.
#[derive(Debug)]
pub(crate) struct StorageService {
    threads: Vec<JoinHandle<()>>,
    stop_retention: Option<Sender<()>>,
}

/// What each shard takes from the service.
#[derive(Debug)]
pub(crate) struct ShardStore {
    pub(crate) link: StoreLink,
    pub(crate) log: DurableLog,
}

impl StorageService {
    /// Starts the writer, the readers and the retention thread over
    /// `storage`, and returns one [`ShardStore`] per shard.
    pub(crate) fn start(
        storage: Storage,
        config: &StorageConfig,
        retention: retention::Policy,
        wakers: &[Arc<mio::Waker>],
        stats: &Arc<StorageStats>,
    ) -> std::io::Result<(StorageService, Vec<ShardStore>)> {
        // One writer per node by default: every shard's appends share its
        // syncs. With more, shard i writes through writer i mod n.
        let writers = config.writers.clamp(1, wakers.len().max(1));
        let per_writer = (config.write_queue / writers).max(1);
        let (write_txs, write_rxs): (Vec<_>, Vec<_>) = (0..writers).map(|_| sync_channel(per_writer)).unzip();
        let (read_tx, read_rx) = sync_channel(config.read_queue.max(1));
        let budget = Arc::new(WriteBudget::new(config.write_queue_bytes));
        let mut returns = Vec::with_capacity(wakers.len());
        let mut shard_stores = Vec::with_capacity(wakers.len());
        for (i, waker) in wakers.iter().enumerate() {
            let (log_tx, log_rx) = channel();
            let (done_tx, done_rx) = channel();
            returns.push(Return {
                log: log_tx,
                done: done_tx,
                waker: waker.clone(),
            });
            let write_tx = &write_txs[i % writers];
            let link = StoreLink {
                writes: write_tx.clone(),
                reads: read_tx.clone(),
                done: done_rx,
                stats: stats.clone(),
                budget: budget.clone(),
            };
            let log = DurableLog::new(
                i,
                write_tx.clone(),
                read_tx.clone(),
                log_rx,
                stats.clone(),
                budget.clone(),
            );
            shard_stores.push(ShardStore { link, log });
        }
        drop((write_txs, read_tx));
        let returns: Arc<[Return]> = returns.into();
        let errors = Arc::new(writer::ErrorLog::default());
        let mut threads = Vec::new();
        let sync = config.sync;
        for (w, write_rx) in write_rxs.into_iter().enumerate() {
            let (storage, returns, stats, errors) = (storage.clone(), returns.clone(), stats.clone(), errors.clone());
            let budget = budget.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("storage-writer-{w}"))
                    .spawn(move || {
                        writer::run(
                            &storage,
                            sync,
                            &write_rx,
                            Outbox::new(returns),
                            &stats,
                            &errors,
                            &budget,
                        )
                    })?,
            );
        }
        let read_rx = Arc::new(std::sync::Mutex::new(read_rx));
        for r in 0..config.readers.max(1) {
            let (storage, returns, read_rx, stats, errors) = (
                storage.clone(),
                returns.clone(),
                read_rx.clone(),
                stats.clone(),
                errors.clone(),
            );
            threads.push(
                std::thread::Builder::new()
                    .name(format!("storage-reader-{r}"))
                    .spawn(move || reader::run(&storage, &read_rx, Outbox::new(returns), &stats, &errors))?,
            );
        }
        let (stop_tx, stop_rx) = channel();
        {
            let (storage, stats) = (storage.clone(), stats.clone());
            let interval = config.retention_interval;
            threads.push(
                std::thread::Builder::new()
                    .name("storage-retention".into())
                    .spawn(move || retention::run(&storage, &retention, interval, &stop_rx, &stats))?,
            );
        }
        Ok((
            StorageService {
                threads,
                stop_retention: Some(stop_tx),
            },
            shard_stores,
        ))
    }

    /// Waits for the threads once every shard has dropped its link (the
    /// writer commits and syncs what it holds first).
    pub(crate) fn join(mut self) {
        self.stop_retention.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

pub(crate) use retention::Policy as RetentionPolicy;

/// Whether a sync policy makes the writer sync before answering.
fn syncs_before_answer(sync: SyncPolicy) -> bool {
    matches!(sync, SyncPolicy::Always)
}

/// Opens the configured backend. Returns the stores and whether rooms keep
/// their history in them (every backend but memory).
pub(crate) fn open(
    backend: &crate::config::StorageBackend,
    retention: &RetentionPolicy,
) -> Result<(Storage, bool), String> {
    use crate::config::StorageBackend;
    match backend {
        StorageBackend::Memory => Ok((herald_storage::memory::storage(), false)),
        StorageBackend::Embedded(dir) => herald_storage::embedded::open(dir, Default::default())
            .map(|s| (s, true))
            .map_err(|e| format!("cannot open the embedded store in {}: {e}", dir.display())),
        StorageBackend::Scylla(url) => open_scylla(url, retention).map(|s| (s, true)),
        StorageBackend::Opened(storage) => Ok((storage.clone(), true)),
    }
}

/// ScyllaDB keeps retention by age as a TTL on each insert (its
/// `retain_messages` bound is the background trim's, as for the other
/// backends).
#[cfg(feature = "scylla")]
fn open_scylla(url: &str, retention: &RetentionPolicy) -> Result<Storage, String> {
    let mut config = herald_storage::scylla::ScyllaConfig::parse(url).map_err(|e| e.to_string())?;
    config.default_max_age = retention.default_namespace.retain_max_age;
    for (name, ns) in &retention.namespaces {
        config
            .namespace_max_age
            .insert(name.clone(), ns.retain_max_age.unwrap_or(std::time::Duration::ZERO));
    }
    herald_storage::scylla::ScyllaStorage::connect(config).map_err(|e| format!("cannot reach ScyllaDB at {url}: {e}"))
}

#[cfg(not(feature = "scylla"))]
fn open_scylla(url: &str, _retention: &RetentionPolicy) -> Result<Storage, String> {
    Err(format!("{url}: this herald was built without the `scylla` feature"))
}

/// Node-wide notification ids: increasing, unique, and near the wall clock
/// in ms × 1,024 so ids sort by time and survive restarts (a restarted node
/// starts above what it gave before unless its clock went back by more than
/// the ids it handed out per ms).
#[derive(Debug, Default)]
pub(crate) struct IdClock {
    last: std::sync::atomic::AtomicU64,
}

impl IdClock {
    pub(crate) fn next(&self, now_ms: u64) -> u64 {
        use std::sync::atomic::Ordering::Relaxed;
        let floor = now_ms.saturating_mul(1024);
        let mut prev = self.last.load(Relaxed);
        loop {
            let id = floor.max(prev + 1);
            match self.last.compare_exchange_weak(prev, id, Relaxed, Relaxed) {
                Ok(_) => return id,
                Err(p) => prev = p,
            }
        }
    }
}
