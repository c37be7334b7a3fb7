//! The Redis bridge: one thread with a tokio runtime that does every Redis
//! I/O of the node, so no shard ever waits on the network.
//!
//! Per Redis instance:
//! - a **dispatcher** takes the shards' cluster requests for the rooms on
//!   that instance and sends them as one pipeline per round trip (publish
//!   scripts, follows, presence changes, typing and volatile events), in
//!   the order they came, so a room's publishes from one node keep their
//!   order; reads run beside it;
//! - a **reader** holds its own connection and reads the streams of the
//!   rooms this node follows with one blocking XREAD; a change of the set
//!   wakes it (CLIENT UNBLOCK). After a lost connection it reconnects with
//!   backoff and continues from the last IDs it handed over, so nothing
//!   published meanwhile is lost or repeated;
//! - a **persister** (with durable storage) consumes the `herald:persist`
//!   stream in the `storage` consumer group, so each message reaches
//!   storage once per cluster, and claims what dead nodes left pending.
//!
//! A heartbeat task keeps this node's presence alive and removes the
//! presence of nodes whose heartbeat stopped.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_protocol::owner::{
    ClusterHead, ClusterRequest, LogDone, LogError, PresenceSnapshot, ReadPage, ReadRange, Sequenced, Stored,
    StreamEvent,
};
use herald_protocol::{Position, owner::Member};
use herald_storage::{LogEntry, RoomLog};
use redis::aio::ConnectionManager;
use tokio::sync::mpsc::{Receiver, Sender};
use tokio::sync::{Notify, Semaphore};

use super::ClusterStats;
use super::link::Job;
use super::redis::{self as r, StreamId};

/// Entries of one room one read takes at most.
const READ_COUNT: usize = 512;
/// Rooms one non-blocking read covers at most (bounds a command's size).
const ROOMS_PER_READ: usize = 1_000;
/// Notices one partition read takes at most.
const NOTICE_COUNT: usize = 2_048;
/// How long a blocking read waits before it looks at its room set again.
const READ_BLOCK_MS: u64 = 2_000;
/// Reads (history ranges, presence) in flight per instance.
const READS_IN_FLIGHT: usize = 32;
/// Persist entries taken per consumer-group read.
const PERSIST_BATCH: usize = 512;
/// Pending persist entries older than this belong to a dead node.
const CLAIM_IDLE_MS: u64 = 30_000;
const CLAIM_EVERY: Duration = Duration::from_secs(5);
/// Reconnection backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Presence changes kept for sending again while Redis is unreachable.
const RETRY_MAX: usize = 100_000;
/// How often a dispatcher tries Redis while it is known to be down.
const PROBE_EVERY: Duration = Duration::from_millis(250);
/// Entries of a stream that presence events keep when reaping dead nodes.
const REAP_KEEP: u64 = 1_000;

/// What the bridge needs to know of the node.
#[derive(Debug, Clone)]
pub(crate) struct BridgeConfig {
    pub(crate) node_id: Arc<str>,
    pub(crate) presence_ttl: Duration,
    pub(crate) pipeline_max: usize,
    pub(crate) dedup_limit: u64,
}

/// Answers to the shards: a bounded channel each (a shard that falls
/// behind slows the readers down, and Redis keeps what they have not read)
/// and its waker.
#[derive(Debug, Clone)]
pub(crate) struct Answers {
    pub(crate) txs: Vec<Sender<LogDone>>,
    pub(crate) wakers: Vec<Arc<mio::Waker>>,
}

impl Answers {
    async fn send(&self, shard: usize, done: LogDone) {
        if let Some(tx) = self.txs.get(shard) {
            // A shard that stopped has nobody waiting.
            let _ = tx.send(done).await;
            let _ = self.wakers[shard].wake();
        }
    }
}

/// A room this node reads, and where its reading stands.
#[derive(Debug, Clone)]
struct Follow {
    shard: usize,
    epoch: u64,
    last_id: StreamId,
}

/// What one instance's reader reads, kept so that a pass of the reader
/// costs what changed, not what is followed (a node follows a room per
/// connected user).
#[derive(Debug, Default)]
struct FollowSet {
    rooms: HashMap<Arc<str>, Follow>,
    /// Followed rooms per notice partition: the partitions to watch.
    partitions: HashMap<u32, usize>,
    /// Rooms to read once directly (new follows, new epochs): their entries
    /// may have left notices before the reader's cursor.
    fresh: Vec<Arc<str>>,
}

impl FollowSet {
    fn insert(&mut self, room: Arc<str>, follow: Follow) {
        if self.rooms.insert(room.clone(), follow).is_none() {
            *self.partitions.entry(r::notice_partition(&room)).or_default() += 1;
        }
        self.fresh.push(room);
    }

    fn remove(&mut self, room: &str) -> bool {
        if self.rooms.remove(room).is_none() {
            return false;
        }
        let p = r::notice_partition(room);
        if let Some(n) = self.partitions.get_mut(&p) {
            *n -= 1;
            if *n == 0 {
                self.partitions.remove(&p);
            }
        }
        true
    }
}

/// The rooms one instance's reader reads; `generation` moves with every
/// change so the reader knows its blocking read is stale.
#[derive(Debug, Default)]
struct Follows {
    set: Mutex<FollowSet>,
    generation: AtomicU64,
    /// The generation the reader's current read was built from.
    reading: AtomicU64,
    /// The reader connection's CLIENT ID (0: none), for CLIENT UNBLOCK.
    reader_id: AtomicU64,
    changed: Notify,
}

impl Follows {
    fn lock(&self) -> std::sync::MutexGuard<'_, FollowSet> {
        self.set.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn touch(&self) {
        self.generation.fetch_add(1, Relaxed);
        self.changed.notify_one();
    }
}

/// One Redis instance and its tasks' shared state.
struct Instance {
    index: usize,
    client: redis::Client,
    cmd: ConnectionManager,
    follows: Follows,
    reads: Arc<Semaphore>,
}

/// Runs the bridge until every shard has dropped its senders.
pub(crate) async fn run(
    config: BridgeConfig,
    urls: Vec<String>,
    queues: Vec<Receiver<Job>>,
    answers: Answers,
    storage: Option<Arc<dyn RoomLog>>,
    stats: Arc<ClusterStats>,
) {
    let mut instances = Vec::with_capacity(urls.len());
    for (index, url) in urls.iter().enumerate() {
        let client = match redis::Client::open(url.as_str()) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(url, error = %e, "redis: bad url");
                return;
            }
        };
        let cmd = match connection_manager(&client) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(url, error = %e, "redis: cannot create a connection");
                return;
            }
        };
        instances.push(Arc::new(Instance {
            index,
            client,
            cmd,
            follows: Follows::default(),
            reads: Arc::new(Semaphore::new(READS_IN_FLIGHT)),
        }));
    }
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(heartbeat(
        config.clone(),
        instances.clone(),
        answers.clone(),
        stats.clone(),
    ));
    for (instance, queue) in instances.iter().zip(queues) {
        tasks.spawn(reader(
            instance.clone(),
            config.node_id.clone(),
            answers.clone(),
            stats.clone(),
        ));
        if let Some(storage) = &storage {
            tasks.spawn(persister(
                instance.clone(),
                config.node_id.clone(),
                storage.clone(),
                stats.clone(),
            ));
        }
        let dispatch = dispatcher(
            instance.clone(),
            config.clone(),
            queue,
            answers.clone(),
            storage.clone(),
            stats.clone(),
        );
        tasks.spawn(dispatch);
    }
    // The dispatchers end when the shards are gone; the rest then stops.
    while let Some(done) = tasks.join_next().await {
        if done.is_ok() {
            break;
        }
    }
    tasks.abort_all();
    // Leave every room's presence at once rather than after the TTL.
    for instance in &instances {
        let mut cmd = instance.cmd.clone();
        let reaped = r::reap(&mut cmd, &config.node_id, crate::unix_ms(), REAP_KEEP).await;
        if let Err(e) = reaped {
            tracing::warn!(instance = instance.index, error = %e, "redis: could not clear this node's presence");
        }
    }
}

/// A connection manager that connects on first use (and reconnects by
/// itself afterwards), so a node whose Redis is down at start still serves
/// its local rooms, refuses clustered ones, and stops when asked.
fn connection_manager(client: &redis::Client) -> redis::RedisResult<ConnectionManager> {
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(1);
    ConnectionManager::new_lazy_with_config(client.clone(), config)
}

// ---- dispatcher --------------------------------------------------------------

/// What to do with one reply of a pipeline, in request order.
enum Slot {
    Follow {
        shard: usize,
        ticket: u64,
        room: Arc<str>,
    },
    Publish {
        shard: usize,
        ticket: u64,
        room: Arc<str>,
    },
    /// Best effort: a failure is counted.
    Event,
    /// A presence change: a failure is sent again.
    Presence(Job),
    /// Not in the pipeline: applied in its turn.
    Unfollow {
        shard: usize,
        room: Arc<str>,
    },
}

async fn dispatcher(
    instance: Arc<Instance>,
    config: BridgeConfig,
    mut queue: Receiver<Job>,
    answers: Answers,
    storage: Option<Arc<dyn RoomLog>>,
    stats: Arc<ClusterStats>,
) {
    let node = config.node_id.clone();
    let mut jobs = Vec::with_capacity(config.pipeline_max);
    let mut last_try = Instant::now();
    // Presence changes that met a failure (Redis unreachable), in order:
    // they are sent again before any later one, so a user who joined and
    // left during an outage ends up left, not present forever.
    let mut retry: VecDeque<Job> = VecDeque::new();
    loop {
        jobs.clear();
        if retry.is_empty() {
            if queue.recv_many(&mut jobs, config.pipeline_max).await == 0 {
                return;
            }
        } else {
            tokio::select! {
                n = queue.recv_many(&mut jobs, config.pipeline_max) => if n == 0 { return },
                () = tokio::time::sleep(PROBE_EVERY) => {}
            }
            // Later presence changes wait behind the earlier ones.
            let (presence, rest): (Vec<Job>, Vec<Job>) = jobs
                .drain(..)
                .partition(|j| matches!(j.request, ClusterRequest::Presence { .. }));
            retry.extend(presence);
            jobs = rest;
            if stats.is_up(instance.index) || last_try.elapsed() >= PROBE_EVERY {
                let n = retry.len().min(config.pipeline_max);
                jobs.splice(0..0, retry.drain(..n));
            }
        }
        let now_ms = crate::unix_ms();
        let mut pipe = redis::pipe();
        let mut slots = Vec::with_capacity(jobs.len());
        // While the instance is known to be down (the reader or the
        // heartbeat lost it, and it has not answered since), publishes and
        // follows are refused at once rather than held until it returns:
        // clients see Unavailable and retry, possibly on another node.
        // Every PROBE_EVERY one batch goes through anyway, so a dispatcher
        // finds a returned Redis by itself.
        let down = !stats.is_up(instance.index) && last_try.elapsed() < PROBE_EVERY;
        if !down {
            last_try = Instant::now();
        }
        for Job { shard, request } in jobs.drain(..) {
            if down
                && matches!(
                    request,
                    ClusterRequest::Publish { .. }
                        | ClusterRequest::Follow { .. }
                        | ClusterRequest::Volatile { .. }
                        | ClusterRequest::Typing { .. }
                )
            {
                match request.fail(LogError::Failed("redis is unreachable".into())) {
                    Some(done) => answers.send(shard, done).await,
                    None => ClusterStats::add(&stats.dropped, 1),
                }
                continue;
            }
            match request {
                ClusterRequest::Follow { ticket, room } => {
                    pipe.add_command(r::follow_cmd(&room));
                    slots.push(Slot::Follow { shard, ticket, room });
                }
                ClusterRequest::Unfollow { room } => slots.push(Slot::Unfollow { shard, room }),
                ClusterRequest::Publish {
                    ticket,
                    room,
                    message,
                    idempotency_key,
                    keep,
                    durable,
                } => {
                    pipe.add_command(r::publish_cmd(&r::Publish {
                        room: &room,
                        publisher: &message.publisher,
                        payload: &message.payload,
                        content_type: message.content_type.as_deref(),
                        idempotency_key: idempotency_key.as_deref(),
                        timestamp_ms: message.timestamp_ms,
                        maxlen: keep,
                        dedup_limit: config.dedup_limit,
                        persist: durable && storage.is_some(),
                    }));
                    slots.push(Slot::Publish { shard, ticket, room });
                }
                ClusterRequest::Volatile {
                    room,
                    message,
                    member,
                    keep,
                } => {
                    let member = member.unwrap_or(Member {
                        shard: u32::MAX,
                        conn: 0,
                    });
                    pipe.add_command(r::volatile_cmd(&r::Volatile {
                        room: &room,
                        publisher: &message.publisher,
                        payload: &message.payload,
                        content_type: message.content_type.as_deref(),
                        timestamp_ms: message.timestamp_ms,
                        node: &node,
                        member: redis_member(member),
                        maxlen: keep,
                    }));
                    slots.push(Slot::Event);
                }
                ClusterRequest::Typing {
                    room,
                    user,
                    active,
                    member,
                    keep,
                } => {
                    pipe.add_command(r::typing_cmd(&r::Typing {
                        room: &room,
                        user: &user,
                        active,
                        timestamp_ms: now_ms,
                        node: &node,
                        member: redis_member(member),
                        maxlen: keep,
                    }));
                    slots.push(Slot::Event);
                }
                ClusterRequest::Presence {
                    ref room,
                    ref user,
                    joined,
                    member,
                    keep,
                } => {
                    let p = r::Presence {
                        room,
                        node: &node,
                        user,
                        member: Some(redis_member(member)),
                        timestamp_ms: now_ms,
                        maxlen: keep,
                    };
                    pipe.add_command(r::presence_cmd(&p, joined));
                    slots.push(Slot::Presence(Job { shard, request }));
                }
                ClusterRequest::UserFrame {
                    room,
                    frame,
                    disconnect,
                    keep,
                } => {
                    pipe.add_command(r::user_frame_cmd(&room, &frame, disconnect, now_ms, &node, keep));
                    slots.push(Slot::Event);
                }
                request @ (ClusterRequest::Read { .. } | ClusterRequest::PresenceRead { .. }) => {
                    let permit = instance.reads.clone().acquire_owned().await;
                    let (instance, answers, storage, stats) =
                        (instance.clone(), answers.clone(), storage.clone(), stats.clone());
                    tokio::spawn(async move {
                        let _permit = permit;
                        read(&instance, shard, request, &answers, storage, &stats).await;
                    });
                }
            }
        }
        let replies = if pipe.is_empty() {
            Ok(Vec::new())
        } else {
            let started = Instant::now();
            let mut cmd = instance.cmd.clone();
            let result = r::query_pipeline(&mut cmd, &mut pipe).await;
            stats.round_trip(pipe.len(), started.elapsed());
            result
        };
        let replies = match replies {
            Ok(replies) => {
                stats.set_up(instance.index, true);
                replies.into_iter().map(Ok).collect::<Vec<_>>()
            }
            Err(e) => {
                stats.set_up(instance.index, false);
                ClusterStats::add(&stats.errors, 1);
                tracing::warn!(instance = instance.index, error = %e, "redis: pipeline failed");
                let e = LogError::Failed(format!("redis: {e}"));
                (0..pipe.len()).map(|_| Err(e.clone())).collect()
            }
        };
        let mut replies = replies.into_iter();
        let mut changed = false;
        let mut failed = Vec::new();
        for slot in slots {
            if let Slot::Presence(job) = slot {
                match replies.next() {
                    Some(Ok(redis::Value::ServerError(e))) => {
                        // The script refused it: sending it again will not help.
                        ClusterStats::add(&stats.dropped, 1);
                        tracing::warn!(error = ?e, "redis: presence change refused");
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => failed.push(job),
                }
                continue;
            }
            changed |= finish(&instance, slot, &mut replies, &answers, &stats).await;
        }
        for job in failed.into_iter().rev() {
            retry.push_front(job);
        }
        while retry.len() > RETRY_MAX {
            retry.pop_back();
            ClusterStats::add(&stats.dropped, 1);
        }
        if changed {
            instance.follows.touch();
            wake_reader(&instance, &stats).await;
        }
    }
}

fn redis_member(m: Member) -> r::Member {
    r::Member {
        shard: m.shard,
        conn: m.conn,
    }
}

/// Applies one slot's reply; returns whether the follow set changed.
async fn finish(
    instance: &Instance,
    slot: Slot,
    replies: &mut impl Iterator<Item = Result<redis::Value, LogError>>,
    answers: &Answers,
    stats: &ClusterStats,
) -> bool {
    match slot {
        Slot::Unfollow { shard, room } => {
            let mut set = instance.follows.lock();
            let removed = set.rooms.get(&room).is_some_and(|f| f.shard == shard) && set.remove(&room);
            ClusterStats::set_gauge(&stats.followed, set.rooms.len());
            removed
        }
        Slot::Follow { shard, ticket, room } => {
            let head = reply(replies, r::parse_head);
            let result = head.as_ref().map(|h| ClusterHead {
                epoch: h.epoch,
                last_offset: h.last_offset,
                presence_count: h.presence_count,
                presence_sample: h.presence_sample.iter().map(|u| Arc::from(u.as_str())).collect(),
            });
            let done = LogDone::Followed {
                ticket,
                room: room.clone(),
                result: result.map_err(Clone::clone),
            };
            // The answer first: the reader hands over the room's entries
            // only once it is registered, so they always come after it.
            answers.send(shard, done).await;
            let Ok(head) = head else { return false };
            let mut set = instance.follows.lock();
            set.insert(
                room,
                Follow {
                    shard,
                    epoch: head.epoch,
                    last_id: head.stream_last_id,
                },
            );
            ClusterStats::set_gauge(&stats.followed, set.rooms.len());
            true
        }
        Slot::Publish { shard, ticket, room } => {
            let result = reply(replies, r::parse_published).map(|p| {
                ClusterStats::add(
                    if p.duplicate {
                        &stats.duplicates
                    } else {
                        &stats.publishes
                    },
                    1,
                );
                Sequenced {
                    position: Position {
                        epoch: p.epoch,
                        offset: p.offset,
                    },
                    duplicate: p.duplicate,
                }
            });
            answers.send(shard, LogDone::Published { ticket, room, result }).await;
            false
        }
        Slot::Event | Slot::Presence(_) => {
            if let Some(Err(_) | Ok(redis::Value::ServerError(_))) = replies.next() {
                ClusterStats::add(&stats.dropped, 1);
            }
            false
        }
    }
}

/// The next reply, parsed, as the owner understands a failure.
fn reply<T>(
    replies: &mut impl Iterator<Item = Result<redis::Value, LogError>>,
    parse: impl FnOnce(redis::Value) -> Result<T, r::RedisError>,
) -> Result<T, LogError> {
    match replies.next() {
        Some(Ok(v)) => parse(v).map_err(|e| LogError::Failed(format!("redis: {e}"))),
        Some(Err(e)) => Err(e),
        None => Err(LogError::Failed("redis: reply missing".into())),
    }
}

/// Makes the reader's blocking read return if it was built from an older
/// follow set (a read that has not started yet picks up the new set by
/// itself).
async fn wake_reader(instance: &Instance, stats: &ClusterStats) {
    let follows = &instance.follows;
    for _ in 0..3 {
        let id = follows.reader_id.load(Relaxed);
        if id == 0 || follows.reading.load(Relaxed) >= follows.generation.load(Relaxed) {
            return;
        }
        let mut cmd = instance.cmd.clone();
        match r::unblock(&mut cmd, id).await {
            Ok(true) => return,
            // Not blocked yet: it may be about to block with the old set.
            Ok(false) => tokio::time::sleep(Duration::from_millis(1)).await,
            Err(e) => {
                ClusterStats::add(&stats.errors, 1);
                tracing::debug!(error = %e, "redis: unblock failed");
                return;
            }
        }
    }
}

// ---- reads -------------------------------------------------------------------

async fn read(
    instance: &Instance,
    shard: usize,
    request: ClusterRequest,
    answers: &Answers,
    storage: Option<Arc<dyn RoomLog>>,
    stats: &ClusterStats,
) {
    let mut cmd = instance.cmd.clone();
    let done = match request {
        ClusterRequest::PresenceRead { ticket, room } => {
            let result = r::presence_snapshot(&mut cmd, &room, herald_protocol::owner::PRESENCE_LIST_MAX as u64)
                .await
                .map(|(users, count)| PresenceSnapshot {
                    users: users.into_iter().map(|u| Arc::from(u.as_str())).collect(),
                    count,
                })
                .map_err(|e| {
                    ClusterStats::add(&stats.errors, 1);
                    LogError::Failed(format!("redis: {e}"))
                });
            LogDone::Presence { ticket, room, result }
        }
        ClusterRequest::Read {
            ticket,
            room,
            epoch,
            range,
        } => {
            ClusterStats::add(&stats.reads, 1);
            let result = read_range(&mut cmd, &room, epoch, range, storage, stats).await;
            LogDone::Read { ticket, room, result }
        }
        _ => return,
    };
    answers.send(shard, done).await;
}

/// A range from the room's stream, completed from durable storage where the
/// stream no longer holds it.
async fn read_range(
    cmd: &mut ConnectionManager,
    room: &Arc<str>,
    epoch: u64,
    range: ReadRange,
    storage: Option<Arc<dyn RoomLog>>,
    stats: &ClusterStats,
) -> Result<ReadPage, LogError> {
    let q = r::RangeQuery {
        room,
        epoch,
        after: range.after,
        before: range.before,
        limit: range.limit as u64,
        newest: range.newest,
    };
    let page = r::read_range(cmd, &q).await.map_err(|e| {
        ClusterStats::add(&stats.errors, 1);
        LogError::Failed(format!("redis: {e}"))
    })?;
    if page.epoch != epoch {
        // Another epoch: nothing of the asked one can be vouched for.
        return Ok(ReadPage::default());
    }
    let mut messages: Vec<Stored> = page.messages.into_iter().map(stored).collect();
    let covered = page.covered_from <= range.after + 1;
    if covered || range.limit == 0 {
        return Ok(ReadPage {
            messages,
            complete: true,
            more: page.more,
        });
    }
    let Some(storage) = storage else {
        return Ok(ReadPage {
            messages,
            complete: false,
            more: page.more,
        });
    };
    // The part below what the stream holds, from storage.
    ClusterStats::add(&stats.storage_reads, 1);
    let below = ReadRange {
        before: if range.before == 0 {
            page.covered_from
        } else {
            range.before.min(page.covered_from)
        },
        ..range
    };
    let room_name = room.clone();
    let stored_page = tokio::task::spawn_blocking(move || storage.read(&room_name, epoch, below))
        .await
        .map_err(|e| LogError::Failed(format!("storage read: {e}")))?
        .map_err(|e| LogError::Failed(format!("storage: {e}")))?;
    let mut all = stored_page.messages;
    all.retain(|m| m.offset < page.covered_from);
    let gapless = contiguous(&all, range.after, page.covered_from, range.newest && stored_page.more);
    all.append(&mut messages);
    let more = all.len() > range.limit || stored_page.more || page.more;
    if all.len() > range.limit {
        if range.newest {
            all.drain(..all.len() - range.limit);
        } else {
            all.truncate(range.limit);
        }
    }
    Ok(ReadPage {
        messages: all,
        complete: stored_page.complete && gapless,
        more,
    })
}

/// Whether `messages` (oldest first) hold every offset from `after + 1` up
/// to `until - 1`; a page cut from its old end (`cut_below`) need not
/// start at `after + 1`.
fn contiguous(messages: &[Stored], after: u64, until: u64, cut_below: bool) -> bool {
    let mut expected = match (messages.first(), cut_below) {
        (Some(first), true) => first.offset,
        _ => after + 1,
    };
    for m in messages {
        if m.offset != expected {
            return false;
        }
        expected += 1;
    }
    expected >= until
}

fn stored(m: r::StreamMessage) -> Stored {
    Stored {
        offset: m.offset,
        publisher: Arc::from(m.publisher.as_str()),
        timestamp_ms: m.timestamp_ms,
        payload: m.payload,
        content_type: m.content_type.map(|c| Arc::from(c.as_str())),
    }
}

// ---- reader ------------------------------------------------------------------

async fn reader(instance: Arc<Instance>, node: Arc<str>, answers: Answers, stats: Arc<ClusterStats>) {
    let mut first = true;
    let mut backoff = BACKOFF_MIN;
    loop {
        let mut conn = match r::blocking_connection(&instance.client).await {
            Ok(c) => c,
            Err(e) => {
                stats.set_up(instance.index, false);
                ClusterStats::add(&stats.errors, 1);
                tracing::warn!(instance = instance.index, error = %e, "redis reader: cannot connect; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let id = match r::client_id(&mut conn).await {
            Ok(id) => id,
            Err(e) => {
                ClusterStats::add(&stats.errors, 1);
                tracing::warn!(error = %e, "redis reader: CLIENT ID failed");
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        if !first {
            ClusterStats::add(&stats.reconnects, 1);
            // Redis may have restarted without its data: a room whose
            // epoch changed is read again from its start.
            if recheck_epochs(&instance, &stats).await.is_err() {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
            // Redis may have lost this node's presence with its data.
            rejoin(&instance, &answers).await;
        }
        first = false;
        backoff = BACKOFF_MIN;
        instance.follows.reader_id.store(id, Relaxed);
        if let Err(e) = read_loop(&instance, &node, &mut conn, &answers, &stats).await {
            instance.follows.reader_id.store(0, Relaxed);
            stats.set_up(instance.index, false);
            ClusterStats::add(&stats.errors, 1);
            tracing::warn!(instance = instance.index, error = %e, "redis reader: connection lost; reconnecting");
            tokio::time::sleep(backoff).await;
        }
    }
}

/// Asks the owners of every room this instance follows to announce their
/// present users again.
async fn rejoin(instance: &Instance, answers: &Answers) {
    let rooms: Vec<(Arc<str>, usize)> = instance
        .follows
        .lock()
        .rooms
        .iter()
        .map(|(room, f)| (room.clone(), f.shard))
        .collect();
    for (room, shard) in rooms {
        let events = vec![StreamEvent::Rejoin];
        answers.send(shard, LogDone::Streamed { room, events }).await;
    }
}

/// Follows every followed room again (one pipeline) and restarts the
/// reading of those whose epoch changed.
async fn recheck_epochs(instance: &Instance, stats: &ClusterStats) -> Result<(), ()> {
    let rooms: Vec<(Arc<str>, u64)> = instance
        .follows
        .lock()
        .rooms
        .iter()
        .map(|(room, f)| (room.clone(), f.epoch))
        .collect();
    if rooms.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for (room, _) in &rooms {
        pipe.add_command(r::follow_cmd(room));
    }
    let mut cmd = instance.cmd.clone();
    let replies = r::query_pipeline(&mut cmd, &mut pipe).await.map_err(|e| {
        ClusterStats::add(&stats.errors, 1);
        tracing::warn!(error = %e, "redis reader: cannot recheck rooms");
    })?;
    let mut set = instance.follows.lock();
    for ((room, epoch), v) in rooms.into_iter().zip(replies) {
        let Ok(head) = r::parse_head(v) else { continue };
        if head.epoch != epoch
            && let Some(f) = set.rooms.get_mut(&room)
        {
            tracing::warn!(room = %room, old = epoch, new = head.epoch, "room lost from redis: new epoch");
            f.epoch = head.epoch;
            f.last_id = (0, 0);
            set.fresh.push(room);
        }
    }
    Ok(())
}

async fn read_loop(
    instance: &Instance,
    node: &str,
    conn: &mut redis::aio::MultiplexedConnection,
    answers: &Answers,
    stats: &ClusterStats,
) -> Result<(), r::RedisError> {
    let follows = &instance.follows;
    // Where this connection reads each notice partition it watches.
    let mut cursors: HashMap<u32, StreamId> = HashMap::new();
    // Rooms to read now. After a (re)connection every followed room is
    // read once: notices written while this node was away are not watched.
    let mut dirty: HashSet<Arc<str>> = {
        let mut set = follows.lock();
        set.fresh.clear();
        set.rooms.keys().cloned().collect()
    };
    loop {
        let generation = follows.generation.load(Relaxed);
        let needed: HashSet<u32> = {
            let mut set = follows.lock();
            dirty.extend(std::mem::take(&mut set.fresh));
            set.partitions.keys().copied().collect()
        };
        follows.reading.store(generation, Relaxed);
        cursors.retain(|p, _| needed.contains(p));
        let new: Vec<u32> = needed.iter().copied().filter(|p| !cursors.contains_key(p)).collect();
        // Cursors first, direct reads after: nothing falls between them.
        for (p, head) in new.iter().zip(r::notice_heads(conn, &new).await?) {
            cursors.insert(*p, head);
        }
        if !dirty.is_empty() {
            dirty = read_rooms(instance, node, conn, dirty, answers, stats).await?;
        }
        if cursors.is_empty() {
            // Nothing followed: wait for a follow (or look again soon).
            let _ = tokio::time::timeout(Duration::from_millis(READ_BLOCK_MS), follows.changed.notified()).await;
            continue;
        }
        let watched: Vec<(u32, StreamId)> = cursors.iter().map(|(p, id)| (*p, *id)).collect();
        // Block only when nothing is known to wait.
        let block = dirty.is_empty().then_some(READ_BLOCK_MS);
        let notices = r::xread_notices(conn, &watched, NOTICE_COUNT, block).await?;
        stats.set_up(instance.index, true);
        let set = follows.lock();
        for n in notices {
            cursors.insert(n.partition, n.last_id);
            ClusterStats::add(&stats.notices_read, n.rooms.len() as u64);
            for room in n.rooms {
                if let Some((name, _)) = set.rooms.get_key_value(room.as_str()) {
                    dirty.insert(name.clone());
                }
            }
            if n.full {
                // More notices wait than one read takes: read every room of
                // the partition (rare: a reader more than 2,048 behind).
                dirty.extend(
                    set.rooms
                        .keys()
                        .filter(|k| r::notice_partition(k) == n.partition)
                        .cloned(),
                );
            }
        }
    }
}

/// Reads `rooms` from their last IDs (non-blocking) and hands the entries
/// to their shards. Returns the rooms that have more entries waiting.
async fn read_rooms(
    instance: &Instance,
    node: &str,
    conn: &mut redis::aio::MultiplexedConnection,
    rooms: HashSet<Arc<str>>,
    answers: &Answers,
    stats: &ClusterStats,
) -> Result<HashSet<Arc<str>>, r::RedisError> {
    let follows = &instance.follows;
    let mut more = HashSet::new();
    let asked: Vec<(Arc<str>, StreamId)> = {
        let map = follows.lock();
        rooms
            .into_iter()
            .filter_map(|room| map.rooms.get(&room).map(|f| (room, f.last_id)))
            .collect()
    };
    for chunk in asked.chunks(ROOMS_PER_READ) {
        let started = Instant::now();
        let read = r::xread(conn, chunk, READ_COUNT, None).await?;
        stats.round_trip(1, started.elapsed());
        let now_ms = crate::unix_ms();
        for entries in read {
            let room: Arc<str> = Arc::from(entries.room.as_str());
            // Still followed, and not restarted meanwhile from another ID.
            let shard = {
                let mut map = follows.lock();
                let Some(f) = map.rooms.get_mut(&room) else { continue };
                let from = chunk.iter().find(|(r, _)| *r == room).map(|(_, id)| *id);
                if from != Some(f.last_id) {
                    continue;
                }
                f.last_id = entries.last_id;
                f.shard
            };
            if entries.entries.len() + entries.skipped >= READ_COUNT {
                more.insert(room.clone());
            }
            ClusterStats::add(&stats.entries_read, entries.entries.len() as u64);
            ClusterStats::add(&stats.entries_skipped, entries.skipped as u64);
            let mut events = Vec::with_capacity(entries.entries.len());
            for e in entries.entries {
                if let Some((event, ts)) = stream_event(e, node) {
                    stats.read_lag_ms.store(now_ms.saturating_sub(ts), Relaxed);
                    events.push(event);
                }
            }
            if !events.is_empty() {
                answers.send(shard, LogDone::Streamed { room, events }).await;
            }
        }
    }
    Ok(more)
}

/// A stream entry as the owner takes it, and its timestamp.
fn stream_event(entry: r::StreamEntry, node: &str) -> Option<(StreamEvent, u64)> {
    let local = |origin: Option<r::Origin>| {
        origin
            .filter(|o| o.node == node && o.shard != u32::MAX)
            .map(|o| Member {
                shard: o.shard,
                conn: o.conn,
            })
    };
    Some(match entry.kind {
        r::EntryKind::Message(m) => {
            let (epoch, ts) = (m.epoch, m.timestamp_ms);
            (
                StreamEvent::Message {
                    epoch,
                    message: stored(m),
                },
                ts,
            )
        }
        r::EntryKind::Volatile {
            epoch,
            publisher,
            timestamp_ms,
            payload,
            content_type,
            origin,
        } => (
            StreamEvent::Volatile {
                epoch,
                message: Stored {
                    offset: 0,
                    publisher: Arc::from(publisher.as_str()),
                    timestamp_ms,
                    payload,
                    content_type: content_type.map(|c| Arc::from(c.as_str())),
                },
                except: local(origin),
            },
            timestamp_ms,
        ),
        r::EntryKind::Presence {
            user,
            joined,
            count,
            timestamp_ms,
            origin,
            ..
        } => (
            StreamEvent::Presence {
                user: Arc::from(user.as_str()),
                joined,
                count,
                except: local(origin),
            },
            timestamp_ms,
        ),
        r::EntryKind::UserFrame {
            frame,
            disconnect,
            timestamp_ms,
            node: from,
        } => (
            StreamEvent::UserFrame {
                frame,
                disconnect,
                local: from == node,
            },
            timestamp_ms,
        ),
        r::EntryKind::Typing {
            user,
            active,
            timestamp_ms,
            origin,
            ..
        } => (
            StreamEvent::Typing {
                user: Arc::from(user.as_str()),
                active,
                except: local(origin),
            },
            timestamp_ms,
        ),
    })
}

// ---- heartbeat ---------------------------------------------------------------

async fn heartbeat(config: BridgeConfig, instances: Vec<Arc<Instance>>, answers: Answers, stats: Arc<ClusterStats>) {
    let ttl_ms = config.presence_ttl.as_millis() as u64;
    let every = config.presence_ttl / 3;
    let mut joined = false;
    loop {
        let mut ok = true;
        for instance in &instances {
            let mut cmd = instance.cmd.clone();
            let now_ms = crate::unix_ms();
            let beat = async {
                let mut lost = false;
                if joined {
                    // Our heartbeat lapsed (a long outage, a pause): other
                    // nodes may have reaped our presence.
                    let alive: bool = redis::cmd("EXISTS")
                        .arg(r::node_alive_key(&config.node_id))
                        .query_async(&mut cmd)
                        .await?;
                    lost = !alive;
                } else {
                    // What a previous run under this id left (a crash)
                    // goes before this run's own presence comes.
                    r::reap(&mut cmd, &config.node_id, now_ms, REAP_KEEP).await?;
                }
                r::heartbeat(&mut cmd, &config.node_id, ttl_ms).await?;
                let reaped = r::reap_dead(&mut cmd, now_ms, REAP_KEEP).await?;
                Ok::<_, r::RedisError>((reaped, lost))
            };
            match beat.await {
                Ok((reaped, lost)) => {
                    if lost {
                        tracing::warn!(
                            instance = instance.index,
                            "this node's heartbeat had lapsed (or Redis lost its data): rechecking rooms, announcing presence again"
                        );
                        if recheck_epochs(instance, &stats).await.is_ok() {
                            instance.follows.touch();
                            wake_reader(instance, &stats).await;
                        }
                        rejoin(instance, &answers).await;
                    }
                    if joined {
                        stats.set_up(instance.index, true);
                    }
                    if !reaped.is_empty() {
                        tracing::info!(nodes = ?reaped, "redis: removed the presence of dead nodes");
                        ClusterStats::add(&stats.reaped, reaped.len() as u64);
                    }
                }
                Err(e) => {
                    ok = false;
                    stats.set_up(instance.index, false);
                    ClusterStats::add(&stats.errors, 1);
                    tracing::warn!(instance = instance.index, error = %e, "redis: heartbeat failed");
                }
            }
        }
        if ok && !joined {
            joined = true;
            for instance in &instances {
                stats.set_up(instance.index, true);
            }
            stats.joined.store(true, Relaxed);
            tracing::info!(node = %config.node_id, instances = instances.len(), "joined the cluster");
        }
        tokio::time::sleep(if ok { every } else { BACKOFF_MAX.min(every) }).await;
    }
}

// ---- persister ---------------------------------------------------------------

async fn persister(instance: Arc<Instance>, node: Arc<str>, storage: Arc<dyn RoomLog>, stats: Arc<ClusterStats>) {
    let mut backoff = BACKOFF_MIN;
    loop {
        match persist_loop(&instance, &node, &storage, &stats).await {
            Ok(()) => return,
            Err(e) => {
                ClusterStats::add(&stats.errors, 1);
                tracing::warn!(instance = instance.index, error = %e, "redis persister: retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

async fn persist_loop(
    instance: &Instance,
    node: &str,
    storage: &Arc<dyn RoomLog>,
    stats: &ClusterStats,
) -> Result<(), String> {
    let mut conn = r::blocking_connection(&instance.client)
        .await
        .map_err(|e| e.to_string())?;
    r::ensure_group(&mut conn).await.map_err(|e| e.to_string())?;
    // What this node took and did not finish before it stopped.
    loop {
        let batch = r::read_persist(&mut conn, node, PERSIST_BATCH, None, true)
            .await
            .map_err(|e| e.to_string())?;
        if batch.entries.is_empty() && batch.dropped.is_empty() {
            break;
        }
        persist(&mut conn, batch, storage, stats).await?;
    }
    let mut next_claim = Instant::now() + CLAIM_EVERY;
    loop {
        let batch = r::read_persist(&mut conn, node, PERSIST_BATCH, Some(1_000), false)
            .await
            .map_err(|e| e.to_string())?;
        persist(&mut conn, batch, storage, stats).await?;
        if Instant::now() >= next_claim {
            next_claim = Instant::now() + CLAIM_EVERY;
            let claimed = r::claim_persist(&mut conn, node, CLAIM_IDLE_MS, PERSIST_BATCH)
                .await
                .map_err(|e| e.to_string())?;
            ClusterStats::add(&stats.claimed, claimed.entries.len() as u64);
            persist(&mut conn, claimed, storage, stats).await?;
        }
    }
}

/// Writes a batch to storage (synced), then acknowledges and deletes it:
/// a crash in between leaves it pending, and writing it again stores the
/// same keys.
async fn persist(
    conn: &mut redis::aio::MultiplexedConnection,
    batch: r::PersistBatch,
    storage: &Arc<dyn RoomLog>,
    stats: &ClusterStats,
) -> Result<(), String> {
    let mut ids: Vec<StreamId> = batch.dropped;
    if !batch.entries.is_empty() {
        let mut entries = Vec::with_capacity(batch.entries.len());
        for (id, e) in batch.entries {
            ids.push(id);
            entries.push(LogEntry {
                room: Arc::from(e.room.as_str()),
                epoch: e.epoch,
                message: Stored {
                    offset: e.offset,
                    publisher: Arc::from(e.publisher.as_str()),
                    timestamp_ms: e.timestamp_ms,
                    payload: e.payload,
                    content_type: e.content_type.map(|c| Arc::from(c.as_str())),
                },
            });
        }
        let n = entries.len() as u64;
        let storage = storage.clone();
        tokio::task::spawn_blocking(move || storage.append(&entries).and_then(|()| storage.sync()))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("storage: {e}"))?;
        ClusterStats::add(&stats.persisted, n);
    }
    r::ack_persist(conn, &ids).await.map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn m(offset: u64) -> Stored {
        Stored {
            offset,
            publisher: Arc::from("a"),
            timestamp_ms: 0,
            payload: Bytes::new(),
            content_type: None,
        }
    }

    #[test]
    fn contiguity_of_a_storage_page_below_the_stream() {
        let ms: Vec<Stored> = (4..=9).map(m).collect();
        assert!(contiguous(&ms, 3, 10, false));
        assert!(!contiguous(&ms, 2, 10, false), "offset 3 is missing");
        assert!(!contiguous(&ms, 3, 11, false), "offset 10 is missing");
        let gap: Vec<Stored> = [4, 5, 7].into_iter().map(m).collect();
        assert!(!contiguous(&gap, 3, 8, false));
        // Newest first, cut: starts wherever the cut left it.
        assert!(contiguous(&ms, 0, 10, true));
        assert!(contiguous(&[], 5, 6, false), "an empty range");
    }
}
