//! One room as its owner shard holds it: the log (epoch, offsets, bounded
//! in-memory history), which shards have subscribers, presence and publish
//! deduplication. Subscribers themselves live on their own shards.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use herald_protocol::{MessageRef, Position};

/// A stored message. `frame` is the `Message` frame encoded once at publish
/// time; every delivery and replay hands out a clone of it.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub(crate) offset: u64,
    pub(crate) publisher: String,
    pub(crate) timestamp_ms: u64,
    pub(crate) payload: Bytes,
    pub(crate) content_type: Option<String>,
    pub(crate) frame: Bytes,
}

impl Stored {
    pub(crate) fn as_ref<'a>(&'a self, room: &'a str, epoch: u64) -> MessageRef<'a> {
        MessageRef {
            room,
            epoch,
            offset: self.offset,
            publisher: &self.publisher,
            timestamp_ms: self.timestamp_ms,
            payload: &self.payload,
            content_type: self.content_type.as_deref(),
            volatile: false,
        }
    }
}

/// A message being published.
#[derive(Debug)]
pub(crate) struct Incoming<'a> {
    pub(crate) publisher: &'a str,
    pub(crate) timestamp_ms: u64,
    pub(crate) payload: Bytes,
    pub(crate) content_type: Option<String>,
    pub(crate) idempotency_key: Option<&'a str>,
}

/// What a subscriber gets when joining: the messages to replay and whether
/// the requested recovery is complete.
#[derive(Debug)]
pub(crate) struct Join<'a> {
    pub(crate) history: &'a [Stored],
    pub(crate) recovered: bool,
}

#[derive(Debug)]
pub(crate) struct Room {
    pub(crate) epoch: u64,
    pub(crate) last_offset: u64,
    log: VecDeque<Stored>,
    history_limit: usize,
    /// Messages older than this (ms) leave the history.
    max_age_ms: Option<u64>,
    /// Subscribed connections per shard: deliveries go to shards with any.
    pub(crate) interest: Vec<u32>,
    /// Connections per user, so presence has one entry per user.
    pub(crate) users: HashMap<Arc<str>, usize>,
    dedup: HashMap<(String, String), Position>,
    dedup_order: VecDeque<(String, String)>,
    dedup_limit: usize,
}

impl Room {
    pub(crate) fn new(epoch: u64, shards: usize, history_limit: usize, dedup_limit: usize) -> Self {
        Self {
            epoch,
            last_offset: 0,
            log: VecDeque::new(),
            history_limit,
            max_age_ms: None,
            interest: vec![0; shards],
            users: HashMap::new(),
            dedup: HashMap::new(),
            dedup_order: VecDeque::new(),
            dedup_limit,
        }
    }

    /// Drops history older than `max_age` (checked at append, join and range).
    pub(crate) fn with_max_age(mut self, max_age: Option<std::time::Duration>) -> Self {
        self.max_age_ms = max_age.map(|d| d.as_millis() as u64);
        self
    }

    /// Forgets messages older than the age limit.
    pub(crate) fn prune(&mut self, now_ms: u64) {
        let Some(max_age) = self.max_age_ms else { return };
        let oldest = now_ms.saturating_sub(max_age);
        while self.log.front().is_some_and(|m| m.timestamp_ms < oldest) {
            self.log.pop_front();
        }
    }

    pub(crate) fn position(&self) -> Position {
        Position {
            epoch: self.epoch,
            offset: self.last_offset,
        }
    }

    /// The position already assigned to this (publisher, key), if any.
    pub(crate) fn duplicate(&self, publisher: &str, key: &str) -> Option<Position> {
        self.dedup.get(&(publisher.to_owned(), key.to_owned())).copied()
    }

    /// Assigns the next offset, appends to the log and returns the stored
    /// message; `encode` builds the frame once for the assigned offset.
    pub(crate) fn append(
        &mut self,
        room_name: &str,
        msg: Incoming<'_>,
        encode: impl FnOnce(&MessageRef<'_>) -> Bytes,
    ) -> &Stored {
        let Incoming {
            publisher,
            timestamp_ms,
            payload,
            content_type,
            idempotency_key,
        } = msg;
        self.last_offset += 1;
        let mut stored = Stored {
            offset: self.last_offset,
            publisher: publisher.to_owned(),
            timestamp_ms,
            payload,
            content_type,
            frame: Bytes::new(),
        };
        stored.frame = encode(&stored.as_ref(room_name, self.epoch));
        if let Some(key) = idempotency_key {
            let k = (publisher.to_owned(), key.to_owned());
            self.dedup.insert(k.clone(), self.position());
            self.dedup_order.push_back(k);
            if self.dedup_order.len() > self.dedup_limit
                && let Some(old) = self.dedup_order.pop_front()
            {
                self.dedup.remove(&old);
            }
        }
        if self.log.len() == self.history_limit {
            self.log.pop_front();
        }
        self.log.push_back(stored);
        self.log.back().unwrap_or_else(|| unreachable!("just pushed"))
    }

    /// Messages for a joining subscriber: everything after `recover` if the
    /// log still holds it (recovered), else the latest `history` messages.
    pub(crate) fn join(&mut self, recover: Option<Position>, history: u32) -> Join<'_> {
        let log = self.log.make_contiguous();
        if let Some(from) = recover {
            let first_kept = log.first().map_or(self.last_offset + 1, |m| m.offset);
            if from.epoch == self.epoch && from.offset <= self.last_offset && from.offset + 1 >= first_kept {
                let skip = log.partition_point(|m| m.offset <= from.offset);
                return Join {
                    history: &log[skip..],
                    recovered: true,
                };
            }
        }
        let n = (history as usize).min(log.len());
        Join {
            history: &log[log.len() - n..],
            recovered: false,
        }
    }

    /// Messages with after < offset < before (0 = unbounded), at most
    /// `limit`, oldest first; and whether more exist in that range.
    pub(crate) fn range(&mut self, before: u64, after: u64, limit: usize) -> (&[Stored], bool) {
        let log = self.log.make_contiguous();
        let lo = log.partition_point(|m| m.offset <= after);
        let hi = if before == 0 {
            log.len()
        } else {
            log.partition_point(|m| m.offset < before)
        };
        let (lo, hi) = (lo.min(hi), hi);
        if hi - lo <= limit {
            (&log[lo..hi], false)
        } else if after != 0 {
            (&log[lo..lo + limit], true)
        } else {
            (&log[hi - limit..hi], true)
        }
    }

    /// Subscribed connections on all shards.
    pub(crate) fn subscribers(&self) -> u64 {
        self.interest.iter().map(|&n| u64::from(n)).sum()
    }

    /// Shards with at least one subscriber.
    pub(crate) fn interested_shards(&self) -> impl Iterator<Item = usize> + '_ {
        self.interest
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, _)| i)
    }

    /// Adds a user's connection; true if the user was not present before.
    pub(crate) fn add_user(&mut self, user: &Arc<str>) -> bool {
        let n = self.users.entry(user.clone()).or_insert(0);
        *n += 1;
        *n == 1
    }

    /// Removes a user's connection; true if it was the user's last one.
    pub(crate) fn remove_user(&mut self, user: &str) -> bool {
        match self.users.get_mut(user) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                self.users.remove(user);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incoming(i: u64, key: Option<&str>) -> Incoming<'_> {
        Incoming {
            publisher: "u",
            timestamp_ms: i,
            payload: Bytes::from(vec![i as u8]),
            content_type: None,
            idempotency_key: key,
        }
    }

    fn room_with(n: u64, limit: usize) -> Room {
        let mut r = Room::new(7, 1, limit, 100);
        for i in 0..n {
            r.append("chat:a", incoming(i, None), |_| Bytes::new());
        }
        r
    }

    #[test]
    fn recovery_within_the_window_replays_exactly_the_gap() {
        let mut r = room_with(10, 5);
        let j = r.join(Some(Position { epoch: 7, offset: 6 }), 0);
        assert!(j.recovered);
        assert_eq!(
            j.history.iter().map(|m| m.offset).collect::<Vec<_>>(),
            vec![7, 8, 9, 10]
        );
        // Offset 5 is the oldest kept, so recovering from 5 works, from 4 does not.
        assert!(r.join(Some(Position { epoch: 7, offset: 5 }), 0).recovered);
        assert!(!r.join(Some(Position { epoch: 7, offset: 4 }), 0).recovered);
        // Another epoch never recovers.
        assert!(!r.join(Some(Position { epoch: 8, offset: 9 }), 0).recovered);
        // Up to date: recovered with nothing to replay.
        let j = r.join(Some(Position { epoch: 7, offset: 10 }), 3);
        assert!(j.recovered && j.history.is_empty());
    }

    #[test]
    fn range_pages_from_the_newest_or_after_a_bound() {
        let mut r = room_with(10, 100);
        let (page, more) = r.range(0, 0, 3);
        assert_eq!(page.iter().map(|m| m.offset).collect::<Vec<_>>(), vec![8, 9, 10]);
        assert!(more);
        let (page, more) = r.range(0, 2, 3);
        assert_eq!(page.iter().map(|m| m.offset).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert!(more);
        let (page, more) = r.range(5, 2, 10);
        assert_eq!(page.iter().map(|m| m.offset).collect::<Vec<_>>(), vec![3, 4]);
        assert!(!more);
    }

    #[test]
    fn history_is_bounded_by_age_too() {
        let mut r = Room::new(1, 1, 100, 10).with_max_age(Some(std::time::Duration::from_millis(5)));
        for i in 0..10 {
            r.append("x", incoming(i, None), |_| Bytes::new());
        }
        r.prune(12);
        // Timestamps 0..9, now 12, max age 5: 7, 8, 9 remain.
        let j = r.join(None, 100);
        assert_eq!(j.history.iter().map(|m| m.offset).collect::<Vec<_>>(), vec![8, 9, 10]);
        // A recovery from before the pruned part is not complete.
        assert!(!r.join(Some(Position { epoch: 1, offset: 5 }), 0).recovered);
        assert!(r.join(Some(Position { epoch: 1, offset: 7 }), 0).recovered);
    }

    #[test]
    fn presence_counts_users_not_connections() {
        let mut r = Room::new(1, 1, 10, 10);
        let ann: Arc<str> = Arc::from("ann");
        assert!(r.add_user(&ann));
        assert!(!r.add_user(&ann));
        assert!(!r.remove_user("ann"));
        assert!(r.remove_user("ann"));
        assert!(!r.remove_user("ann"));
    }

    #[test]
    fn dedup_remembers_a_bounded_number_of_keys() {
        let mut r = Room::new(1, 1, 10, 2);
        for k in ["a", "b", "c"] {
            r.append("x", incoming(0, Some(k)), |_| Bytes::new());
        }
        assert_eq!(r.duplicate("u", "a"), None, "evicted");
        assert_eq!(r.duplicate("u", "c"), Some(Position { epoch: 1, offset: 3 }));
        assert_eq!(r.duplicate("v", "c"), None, "keys are per publisher");
    }
}
