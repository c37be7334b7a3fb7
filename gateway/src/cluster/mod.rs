//! The cluster: nodes share rooms through Redis.
//!
//! Each room of a clustered namespace has a stream in Redis; a script there
//! assigns its offsets (so every node sees the same `(epoch, offset)`) and
//! checks idempotency keys. A node reads the streams of the rooms it has
//! members for, and nothing else; its owner shard fans each entry out
//! locally with one encode. Presence is counted per node in Redis and kept
//! alive by heartbeats. Rooms are spread over several independent Redis
//! instances by a stable hash of their name (docs/ARCHITECTURE.md says why
//! not Redis Cluster).
//!
//! `bridge` does the I/O on its own thread; `link` is each shard's end;
//! `redis` the scripts and replies; `stats` the metrics.

mod bridge;
mod link;
pub(crate) mod redis;
mod stats;
#[cfg(test)]
pub(crate) mod test_redis;

use std::sync::Arc;
use std::thread::JoinHandle;

use herald_protocol::owner::LogDone;
use herald_storage::{LogStore, RoomLog};
use tokio::sync::mpsc::{Receiver, Sender, channel};

pub(crate) use link::{ClusterLog, Job};
pub(crate) use stats::ClusterStats;

use crate::config::ClusterConfig;

/// Answers (and stream events) waiting for one shard at most, in batches.
const ANSWERS_PER_SHARD: usize = 4_096;

/// A shard's end of the bridge: a queue per Redis instance, and its answers.
#[derive(Debug)]
pub(crate) struct ShardLink {
    queues: Vec<Sender<Job>>,
    answers: Receiver<LogDone>,
}

impl ShardLink {
    /// The shard's log store: cluster requests to the bridge (to the
    /// instance of their room), the rest to `local`.
    pub(crate) fn into_log(self, shard: usize, local: Box<dyn LogStore>, stats: Arc<ClusterStats>) -> ClusterLog {
        ClusterLog::new(shard, local, self.queues, self.answers, stats)
    }
}

/// The running bridge thread.
#[derive(Debug)]
pub(crate) struct Cluster {
    thread: Option<JoinHandle<()>>,
}

impl Cluster {
    /// Starts the bridge for `shards` shards (woken by `wakers`). With
    /// `storage`, this node also writes its share of the cluster's messages
    /// to it.
    pub(crate) fn start(
        config: &ClusterConfig,
        node_id: &str,
        dedup_limit: usize,
        wakers: &[Arc<mio::Waker>],
        storage: Option<Arc<dyn RoomLog>>,
        stats: Arc<ClusterStats>,
    ) -> std::io::Result<(Cluster, Vec<ShardLink>)> {
        for url in &config.redis {
            ::redis::Client::open(url.as_str())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("redis url {url}: {e}")))?;
        }
        let instances = config.redis.len();
        let shards = wakers.len();
        let per_instance = config.queue.max(1);
        let (queue_txs, queue_rxs): (Vec<_>, Vec<_>) = (0..instances).map(|_| channel::<Job>(per_instance)).unzip();
        let (answer_txs, answer_rxs): (Vec<_>, Vec<_>) = (0..shards).map(|_| channel(ANSWERS_PER_SHARD)).unzip();
        let links = answer_rxs
            .into_iter()
            .map(|answers| ShardLink {
                queues: queue_txs.clone(),
                answers,
            })
            .collect();
        drop(queue_txs);
        let answers = bridge::Answers {
            txs: answer_txs,
            wakers: wakers.to_vec(),
        };
        let bridge_config = bridge::BridgeConfig {
            node_id: Arc::from(node_id),
            presence_ttl: config.presence_ttl,
            pipeline_max: config.pipeline_max,
            dedup_limit: dedup_limit as u64,
        };
        let urls = config.redis.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(8)
            .build()?;
        let thread = std::thread::Builder::new().name("redis-bridge".into()).spawn(move || {
            runtime.block_on(bridge::run(bridge_config, urls, queue_rxs, answers, storage, stats));
        })?;
        Ok((Cluster { thread: Some(thread) }, links))
    }

    /// Waits for the bridge (it stops once every shard dropped its link).
    pub(crate) fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
