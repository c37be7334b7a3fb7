//! The rooms a shard owns: the sans-IO room owner
//! ([`herald_protocol::owner`]) and the log store beneath it, wired to the
//! mesh. Owner outputs become replies to the shards that asked or have
//! members; log requests go to the store, and its answers go back into the
//! owner, whenever they come.

use herald_protocol::owner::{Input, Output, OwnerConfig, RoomOwner};
use herald_storage::LogStore;

use crate::mesh::{Mesh, Origin, Reply};
use crate::stats::ShardStats;

#[derive(Debug)]
pub(crate) struct Rooms {
    owner: RoomOwner<Origin>,
    store: Box<dyn LogStore>,
}

impl Rooms {
    pub(crate) fn new(config: OwnerConfig, store: Box<dyn LogStore>) -> Self {
        Self {
            owner: RoomOwner::new(config),
            store,
        }
    }

    /// Runs one input, then everything it leads to.
    pub(crate) fn handle(&mut self, now_ms: u64, input: Input<Origin>, mesh: &mut Mesh, stats: &ShardStats) {
        self.owner.handle(now_ms, input);
        self.pump(now_ms, mesh, stats);
    }

    /// Some cluster follows failed and wait to be asked again
    /// ([`Input::Tick`]).
    pub(crate) fn has_retries(&self) -> bool {
        self.owner.has_retries()
    }

    /// Hands a cluster request to the log store directly (work for the
    /// cluster that no room owner here needs to order).
    pub(crate) fn submit_cluster(&mut self, request: herald_protocol::owner::ClusterRequest) {
        self.store.submit(herald_protocol::owner::LogRequest::Cluster(request));
    }

    /// Feeds the store's answers that came in meanwhile (a store answering
    /// from another thread wakes the shard).
    pub(crate) fn poll_store(&mut self, now_ms: u64, mesh: &mut Mesh, stats: &ShardStats) {
        self.pump(now_ms, mesh, stats);
    }

    fn pump(&mut self, now_ms: u64, mesh: &mut Mesh, stats: &ShardStats) {
        loop {
            while let Some(out) = self.owner.poll_output() {
                self.route(out, mesh, stats);
            }
            let Some(done) = self.store.poll_done() else { break };
            self.owner.handle(now_ms, Input::Log(done));
        }
        ShardStats::set(&stats.rooms, self.owner.room_count() as i64);
    }

    fn route(&mut self, out: Output<Origin>, mesh: &mut Mesh, stats: &ShardStats) {
        let to = match &out {
            Output::Log(_) => {
                if let Output::Log(request) = out {
                    self.store.submit(request);
                }
                return;
            }
            Output::Deliver { shard, .. } => *shard as usize,
            Output::PublishResult {
                origin,
                result,
                duplicate,
            } => {
                if result.is_ok() && !duplicate {
                    ShardStats::add(&stats.publishes, 1);
                }
                origin.shard()
            }
            Output::JoinResult { origin, .. } | Output::Answer { origin, .. } | Output::Rooms { origin, .. } => {
                origin.shard()
            }
        };
        mesh.reply(to, Reply::Owner(out));
    }
}
