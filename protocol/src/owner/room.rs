//! One room as its owner holds it: offsets, the memory window of recent
//! messages, members (by connection), presence (by user), idempotency keys
//! and the operations waiting for the log store, in arrival order.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::Position;

use super::log::{ClusterHead, ReadRange, Stored, Ticket};
use super::{Input, Member, NamespaceConfig, Op, PRESENCE_LIST_MAX};

/// What happened to a room's membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct MembershipChange {
    /// The connection was not a member before (a repeated join is not).
    pub(super) joined: bool,
    /// Its user was not present before (their first connection in the room).
    pub(super) user_arrived: bool,
}

#[derive(Debug)]
pub(super) struct Room<O> {
    pub(super) epoch: u64,
    /// Last offset given to a message (appends still in flight included).
    pub(super) assigned: u64,
    /// Last offset whose append completed and was released, in order:
    /// everything up to here is in the window or the store.
    pub(super) released: u64,
    /// The newest released messages, bounded by count and age.
    window: VecDeque<Stored>,
    window_limit: usize,
    max_age_ms: Option<u64>,
    /// Members by connection, with their user.
    members: HashMap<Member, Arc<str>>,
    /// Members per shard: deliveries go to shards with any.
    interest: Vec<u32>,
    /// Member connections per user, so presence has one entry per user.
    users: HashMap<Arc<str>, u32>,
    /// Idempotency keys by publisher, then key.
    dedup: HashMap<Arc<str>, HashMap<Box<str>, Position>>,
    dedup_order: VecDeque<(Arc<str>, Box<str>)>,
    dedup_limit: usize,
    /// Operations waiting for the log store or for an earlier operation.
    pub(super) ops: VecDeque<Op<O>>,
    /// Appends go through the log store (else they complete at once).
    pub(super) durable: bool,
    /// The store's head is being read: the room's epoch and offset are not
    /// known yet, so every input for it waits in `deferred`, in order.
    pub(super) loading: bool,
    pub(super) deferred: VecDeque<Input<O>>,
    /// Shared by the cluster's nodes: offsets come from the cluster's log,
    /// and presence counts every node.
    pub(super) clustered: bool,
    /// Presence over every node (clustered rooms): distinct users, and
    /// some of them.
    cluster_count: u64,
    cluster_sample: Vec<Arc<str>>,
    /// Shards with connections of the user of a clustered `user:U` room:
    /// the node follows the room while any has.
    pub(super) user_shards: u32,
}

impl<O> Room<O> {
    pub(super) fn new(epoch: u64, ns: &NamespaceConfig, dedup_limit: usize) -> Self {
        Self {
            epoch,
            assigned: 0,
            released: 0,
            window: VecDeque::new(),
            window_limit: ns.history.max(1),
            max_age_ms: ns.history_max_age.map(|d| d.as_millis() as u64),
            members: HashMap::new(),
            interest: Vec::new(),
            users: HashMap::new(),
            dedup: HashMap::new(),
            dedup_order: VecDeque::new(),
            dedup_limit,
            ops: VecDeque::new(),
            durable: false,
            loading: false,
            deferred: VecDeque::new(),
            clustered: false,
            cluster_count: 0,
            cluster_sample: Vec::new(),
            user_shards: 0,
        }
    }

    /// A room shared by the cluster, waiting for its follow to start.
    pub(super) fn following(ns: &NamespaceConfig, dedup_limit: usize) -> Self {
        Self {
            clustered: true,
            ..Self::loading(ns, dedup_limit)
        }
    }

    /// The follow started: deliveries continue after `head`.
    pub(super) fn followed(&mut self, head: &ClusterHead) {
        self.loaded(Some((head.epoch, head.last_offset)), head.epoch);
        self.cluster_count = head.presence_count;
        self.cluster_sample = head.presence_sample.iter().take(PRESENCE_LIST_MAX).cloned().collect();
    }

    /// The cluster's log moved the room to another epoch (its stream and
    /// metadata were lost): the window belongs to the old one.
    pub(super) fn adopt_epoch(&mut self, epoch: u64) {
        self.epoch = epoch;
        self.assigned = 0;
        self.released = 0;
        self.window.clear();
    }

    /// Presence changed somewhere in the cluster.
    pub(super) fn cluster_presence(&mut self, user: &Arc<str>, joined: bool, count: u64) {
        self.cluster_count = count;
        let at = self.cluster_sample.iter().position(|u| u == user);
        match (joined, at) {
            (true, None) if self.cluster_sample.len() < PRESENCE_LIST_MAX => self.cluster_sample.push(user.clone()),
            (false, Some(i)) => {
                self.cluster_sample.swap_remove(i);
            }
            _ => {}
        }
    }

    /// Who is present: on every node for a clustered room, else here.
    pub(super) fn presence(&self, max: usize) -> (Vec<Arc<str>>, u64) {
        if self.clustered {
            (
                self.cluster_sample.iter().take(max).cloned().collect(),
                self.cluster_count,
            )
        } else {
            self.users(max)
        }
    }

    /// A durable room whose head is being read from the store.
    pub(super) fn loading(ns: &NamespaceConfig, dedup_limit: usize) -> Self {
        Self {
            durable: true,
            loading: true,
            ..Self::new(0, ns, dedup_limit)
        }
    }

    /// The store's head arrived: continue its epoch after its last offset,
    /// or start `epoch` for a room the store never held.
    pub(super) fn loaded(&mut self, head: Option<(u64, u64)>, epoch: u64) {
        let (epoch, last) = head.unwrap_or((epoch, 0));
        self.epoch = epoch;
        self.assigned = last;
        self.released = last;
        self.loading = false;
    }

    pub(super) fn position(&self) -> Position {
        Position {
            epoch: self.epoch,
            offset: self.released,
        }
    }

    /// Nothing to remember: no members, no messages, nothing in flight. A
    /// clustered room's messages are in the cluster's log: without members
    /// here, this node has nothing of it to keep.
    pub(super) fn is_unused(&self) -> bool {
        self.members.is_empty()
            && self.user_shards == 0
            && (self.clustered || self.assigned == 0)
            && self.ops.is_empty()
            && self.deferred.is_empty()
    }

    // ---- membership -------------------------------------------------------

    pub(super) fn subscribers(&self) -> usize {
        self.members.len()
    }

    pub(super) fn user_count(&self) -> usize {
        self.users.len()
    }

    pub(super) fn is_member(&self, member: Member) -> bool {
        self.members.contains_key(&member)
    }

    /// Adds a member; repeating it changes nothing.
    pub(super) fn add_member(&mut self, member: Member, user: &Arc<str>) -> MembershipChange {
        if self.members.contains_key(&member) {
            return MembershipChange {
                joined: false,
                user_arrived: false,
            };
        }
        self.members.insert(member, user.clone());
        let shard = member.shard as usize;
        if self.interest.len() <= shard {
            self.interest.resize(shard + 1, 0);
        }
        self.interest[shard] += 1;
        let n = self.users.entry(user.clone()).or_insert(0);
        *n += 1;
        MembershipChange {
            joined: true,
            user_arrived: *n == 1,
        }
    }

    /// Removes a member. A connection that is not a member changes nothing,
    /// so a leave can never undo someone else's join. Returns the member's
    /// user and whether that was the user's last connection in the room.
    pub(super) fn remove_member(&mut self, member: Member) -> Option<(Arc<str>, bool)> {
        let user = self.members.remove(&member)?;
        if let Some(n) = self.interest.get_mut(member.shard as usize) {
            *n -= 1;
        }
        let gone = match self.users.get_mut(&user) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                self.users.remove(&user);
                true
            }
            None => false,
        };
        Some((user, gone))
    }

    /// Shards with at least one member.
    pub(super) fn interested_shards(&self) -> impl Iterator<Item = u32> + '_ {
        self.interest
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, _)| i as u32)
    }

    /// Every present user here, with one of its member connections.
    pub(super) fn user_members(&self) -> Vec<(Arc<str>, Member)> {
        let mut seen: HashMap<&Arc<str>, Member> = HashMap::new();
        for (m, u) in &self.members {
            seen.entry(u).or_insert(*m);
        }
        seen.into_iter().map(|(u, m)| (u.clone(), m)).collect()
    }

    /// Up to `max` present users and how many there are.
    pub(super) fn users(&self, max: usize) -> (Vec<Arc<str>>, u64) {
        (self.users.keys().take(max).cloned().collect(), self.users.len() as u64)
    }

    // ---- idempotency --------------------------------------------------------

    /// The position already given to (publisher, key), if remembered.
    pub(super) fn duplicate(&self, publisher: &str, key: &str) -> Option<Position> {
        self.dedup.get(publisher)?.get(key).copied()
    }

    pub(super) fn remember_key(&mut self, publisher: &Arc<str>, key: &str, position: Position) {
        if self.dedup_limit == 0 {
            return;
        }
        self.dedup
            .entry(publisher.clone())
            .or_default()
            .insert(key.into(), position);
        self.dedup_order.push_back((publisher.clone(), key.into()));
        if self.dedup_order.len() > self.dedup_limit
            && let Some((p, k)) = self.dedup_order.pop_front()
        {
            self.forget_key(&p, &k, None);
        }
    }

    /// Forgets (publisher, key), only if it still names `position` when one
    /// is given (a failed append must not erase a later, successful one).
    pub(super) fn forget_key(&mut self, publisher: &str, key: &str, position: Option<Position>) {
        let Some(keys) = self.dedup.get_mut(publisher) else {
            return;
        };
        if position.is_none_or(|p| keys.get(key) == Some(&p)) {
            keys.remove(key);
        }
        if keys.is_empty() {
            self.dedup.remove(publisher);
        }
    }

    // ---- the window ---------------------------------------------------------

    /// Drops messages older than the age limit.
    pub(super) fn prune(&mut self, now_ms: u64) {
        let Some(max_age) = self.max_age_ms else { return };
        let oldest = now_ms.saturating_sub(max_age);
        while self.window.front().is_some_and(|m| m.timestamp_ms < oldest) {
            self.window.pop_front();
        }
    }

    /// Adds a released message, evicting the oldest past the count limit.
    pub(super) fn push_window(&mut self, message: Stored) {
        if self.window.len() == self.window_limit {
            self.window.pop_front();
        }
        self.released = message.offset;
        self.window.push_back(message);
    }

    /// Marks `offset` released without keeping a message (its append failed).
    pub(super) fn skip_released(&mut self, offset: u64) {
        self.released = self.released.max(offset);
    }

    /// The offset of the oldest message the window holds (the next one when
    /// it holds none).
    pub(super) fn window_first(&self) -> u64 {
        self.window.front().map_or(self.released + 1, |m| m.offset)
    }

    /// Whether every released message after `offset` is in the window.
    pub(super) fn window_covers_after(&self, offset: u64) -> bool {
        offset <= self.released && offset + 1 >= self.window_first()
    }

    /// Messages after `offset` in the window, oldest first.
    pub(super) fn window_after(&mut self, offset: u64) -> &[Stored] {
        let w = self.window.make_contiguous();
        let skip = w.partition_point(|m| m.offset <= offset);
        &w[skip..]
    }

    /// The newest `n` messages in the window.
    pub(super) fn window_last(&mut self, n: usize) -> &[Stored] {
        let w = self.window.make_contiguous();
        &w[w.len() - n.min(w.len())..]
    }

    pub(super) fn window_len(&self) -> usize {
        self.window.len()
    }

    /// The part of `range` the window holds, and whether the range has more
    /// messages in the window than `limit`.
    pub(super) fn window_range(&mut self, range: ReadRange) -> (&[Stored], bool) {
        let w = self.window.make_contiguous();
        let lo = w.partition_point(|m| m.offset <= range.after);
        let hi = if range.before == 0 {
            w.len()
        } else {
            w.partition_point(|m| m.offset < range.before)
        };
        let lo = lo.min(hi);
        if hi - lo <= range.limit {
            (&w[lo..hi], false)
        } else if range.newest {
            (&w[hi - range.limit..hi], true)
        } else {
            (&w[lo..lo + range.limit], true)
        }
    }

    /// Whether messages of `range` may lie below the window (released
    /// before the oldest message it holds).
    pub(super) fn range_reaches_below_window(&self, range: ReadRange) -> bool {
        let first = self.window_first();
        first > 1 && range.after + 1 < first && (range.before == 0 || range.before > range.after + 1)
    }

    pub(super) fn next_ticket_op(&mut self, ticket: Ticket) -> Option<&mut Op<O>> {
        self.ops.iter_mut().find(|op| op.ticket() == Some(ticket))
    }
}
