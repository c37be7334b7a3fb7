//! One connection's publishes still waiting for their ack: request id and
//! the publish's *scheduled* send time, so publish→ack latency is measured
//! open-loop like delivery latency (ack receive time − intended send time).
//!
//! Replies may come back out of order (a connection publishing to rooms
//! owned by different shards gets each shard's replies as that shard
//! answers), so an ack is looked up by its id, not taken from the front.
//! Ids are handed out in increasing order (wrapping past `u32::MAX`), so
//! the queue stays sorted by id relative to its oldest entry and a lookup
//! is a binary search.

use std::collections::VecDeque;

/// Publishes one connection may have awaiting their ack before the oldest
/// is forgotten (its ack then carries no latency).
pub const MAX_IN_FLIGHT: usize = 4096;

#[derive(Debug, Default)]
pub struct InFlight {
    /// (request id, scheduled send time in Unix ns), oldest first.
    q: VecDeque<(u32, u64)>,
}

impl InFlight {
    /// Remembers publish `id`, scheduled for `sched_unix_ns`. Returns true
    /// when that pushed the oldest entry out (over [`MAX_IN_FLIGHT`]).
    pub fn push(&mut self, id: u32, sched_unix_ns: u64) -> bool {
        let evicted = self.q.len() >= MAX_IN_FLIGHT;
        if evicted {
            self.q.pop_front();
        }
        self.q.push_back((id, sched_unix_ns));
        evicted
    }

    /// Takes the entry of `id` and returns its scheduled send time; `None`
    /// for an id not (or no longer) awaiting its ack.
    pub fn take(&mut self, id: u32) -> Option<u64> {
        let &(base, _) = self.q.front()?;
        // Distance from the oldest id: increasing along the queue even where
        // the ids wrapped, and never equal for two different ids.
        let at = self
            .q
            .binary_search_by_key(&id.wrapping_sub(base), |&(i, _)| i.wrapping_sub(base))
            .ok()?;
        self.q.remove(at).map(|(_, sched)| sched)
    }

    pub fn len(&self) -> usize {
        self.q.len()
    }

    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    /// Forgets every entry (the connection failed, or a new step starts)
    /// and returns how many there were.
    pub fn clear(&mut self) -> usize {
        let n = self.q.len();
        self.q = VecDeque::new();
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::PUBLISH_BASE;

    #[test]
    fn replies_in_any_order_find_their_own_schedule() {
        let mut t = InFlight::default();
        for k in 0..6u32 {
            assert!(!t.push(PUBLISH_BASE + k, 1_000 + u64::from(k)));
        }
        // Two shards: the odd ids answer first, newest first.
        for k in [5u32, 3, 1, 0, 4, 2] {
            assert_eq!(t.take(PUBLISH_BASE + k), Some(1_000 + u64::from(k)), "id +{k}");
        }
        assert!(t.is_empty());
    }

    #[test]
    fn unknown_and_repeated_ids_are_not_matched() {
        let mut t = InFlight::default();
        assert_eq!(t.take(PUBLISH_BASE), None, "empty table");
        t.push(PUBLISH_BASE + 10, 7);
        t.push(PUBLISH_BASE + 11, 8);
        assert_eq!(t.take(PUBLISH_BASE + 9), None, "older than every entry");
        assert_eq!(t.take(PUBLISH_BASE + 12), None, "never sent");
        assert_eq!(t.take(3), None, "not a publish id");
        assert_eq!(t.len(), 2, "misses leave the table alone");
        assert_eq!(t.take(PUBLISH_BASE + 11), Some(8));
        assert_eq!(t.take(PUBLISH_BASE + 11), None, "one ack per publish");
        assert_eq!(t.take(PUBLISH_BASE + 10), Some(7));
    }

    #[test]
    fn the_table_is_bounded_and_says_when_it_drops_the_oldest() {
        let mut t = InFlight::default();
        let n = MAX_IN_FLIGHT as u32;
        for k in 0..n {
            assert!(!t.push(PUBLISH_BASE + k, u64::from(k)));
        }
        assert!(t.push(PUBLISH_BASE + n, u64::from(n)), "one over the bound");
        assert!(t.push(PUBLISH_BASE + n + 1, u64::from(n + 1)));
        assert_eq!(t.len(), MAX_IN_FLIGHT);
        assert_eq!(t.take(PUBLISH_BASE), None, "the oldest went first");
        assert_eq!(t.take(PUBLISH_BASE + 1), None);
        assert_eq!(t.take(PUBLISH_BASE + 2), Some(2));
        assert_eq!(t.take(PUBLISH_BASE + n + 1), Some(u64::from(n + 1)));
        assert_eq!(t.clear(), MAX_IN_FLIGHT - 2);
        assert!(t.is_empty());
    }

    #[test]
    fn ids_that_wrap_past_u32_max_are_still_found() {
        let mut t = InFlight::default();
        // The id after u32::MAX is PUBLISH_BASE again (see `Fleet::publish`).
        let ids = [u32::MAX - 1, u32::MAX, PUBLISH_BASE, PUBLISH_BASE + 1];
        for (k, &id) in ids.iter().enumerate() {
            t.push(id, k as u64);
        }
        assert_eq!(t.take(PUBLISH_BASE), Some(2));
        assert_eq!(t.take(u32::MAX), Some(1));
        assert_eq!(t.take(PUBLISH_BASE + 1), Some(3));
        assert_eq!(t.take(u32::MAX - 1), Some(0));
    }
}
