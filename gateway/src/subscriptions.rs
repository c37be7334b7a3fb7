//! Which of this shard's connections receive what: the local members of
//! each room (answered joins only) and every connection of each user (the
//! members of `user:U` and the targets of notifications). Every entry names
//! a connection with its generation and is removed when the connection
//! goes, so a reused slot never receives what belonged to the connection
//! before it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::conns::ConnKey;

/// A member on this shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LocalMember {
    pub(crate) generation: u32,
    /// It asked for presence events.
    pub(crate) presence: bool,
}

impl LocalMember {
    pub(crate) fn key(&self, slot: u32) -> ConnKey {
        ConnKey {
            slot,
            generation: self.generation,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Subscriptions {
    /// Members by room, by slot. Ordered by slot so fan-out walks the
    /// connection slab front to back: in a room of 5,000 the hash order's
    /// random walk missed the cache on every member (user-space share of
    /// node CPU 30 % → 20 %, BENCHMARKS.md).
    rooms: HashMap<Arc<str>, BTreeMap<u32, LocalMember>>,
    /// Open connections by user.
    users: HashMap<Arc<str>, Vec<ConnKey>>,
    count: usize,
}

impl Subscriptions {
    /// Room memberships held.
    #[cfg(test)]
    fn count(&self) -> usize {
        self.count
    }

    /// Adds a member; false if it was one already.
    pub(crate) fn add(&mut self, room: Arc<str>, key: ConnKey, presence: bool) -> bool {
        let member = LocalMember {
            generation: key.generation,
            presence,
        };
        match self.rooms.entry(room).or_default().insert(key.slot, member) {
            Some(old) if old.generation == key.generation => false,
            // A previous occupant's entry would be a bug elsewhere; the
            // new connection replaces it either way.
            Some(_) => true,
            None => {
                self.count += 1;
                true
            }
        }
    }

    /// Removes a member if it is this very connection; true if it was.
    pub(crate) fn remove(&mut self, room: &str, key: ConnKey) -> bool {
        let Some(members) = self.rooms.get_mut(room) else {
            return false;
        };
        if members.get(&key.slot).is_none_or(|m| m.generation != key.generation) {
            return false;
        }
        members.remove(&key.slot);
        self.count -= 1;
        if members.is_empty() {
            self.rooms.remove(room);
        }
        true
    }

    /// The members of `room` on this shard, by slot.
    pub(crate) fn members(&self, room: &str) -> Option<&BTreeMap<u32, LocalMember>> {
        self.rooms.get(room)
    }

    /// Whether the connection is a member of `room`.
    #[cfg(test)]
    fn is_member(&self, room: &str, key: ConnKey) -> bool {
        self.rooms
            .get(room)
            .and_then(|m| m.get(&key.slot))
            .is_some_and(|m| m.generation == key.generation)
    }

    /// A connection of `user` opened (its `Connect` was accepted).
    /// Returns whether it is the user's first on this shard.
    pub(crate) fn add_user(&mut self, user: Arc<str>, key: ConnKey) -> bool {
        let conns = self.users.entry(user).or_default();
        if !conns.contains(&key) {
            conns.push(key);
        }
        conns.len() == 1
    }

    /// A connection of `user` closed. Returns whether it was the user's
    /// last on this shard.
    pub(crate) fn remove_user(&mut self, user: &str, key: ConnKey) -> bool {
        let Some(conns) = self.users.get_mut(user) else {
            return false;
        };
        let before = conns.len();
        conns.retain(|k| *k != key);
        if conns.is_empty() {
            self.users.remove(user);
            return before > 0;
        }
        false
    }

    /// The open connections of `user` on this shard.
    pub(crate) fn user_conns(&self, user: &str) -> &[ConnKey] {
        self.users.get(user).map_or(&[], Vec::as_slice)
    }

    /// Users with open connections on this shard.
    #[cfg(test)]
    fn user_count(&self) -> usize {
        self.users.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(slot: u32, generation: u32) -> ConnKey {
        ConnKey { slot, generation }
    }

    #[test]
    fn a_reused_slot_is_not_the_member_it_replaced() {
        let mut s = Subscriptions::default();
        let room: Arc<str> = Arc::from("chat:a");
        assert!(s.add(room.clone(), key(3, 1), false));
        assert!(!s.add(room.clone(), key(3, 1), false));
        assert!(!s.is_member("chat:a", key(3, 2)));
        assert!(!s.remove("chat:a", key(3, 2)), "the next occupant removes nothing");
        assert!(s.is_member("chat:a", key(3, 1)));
        assert!(s.remove("chat:a", key(3, 1)));
        assert!(s.members("chat:a").is_none());
        assert_eq!(s.count(), 0);
    }

    #[test]
    fn the_user_index_forgets_closed_connections() {
        let mut s = Subscriptions::default();
        let ann: Arc<str> = Arc::from("ann");
        s.add_user(ann.clone(), key(1, 1));
        s.add_user(ann.clone(), key(2, 1));
        s.remove_user("ann", key(1, 1));
        assert_eq!(s.user_conns("ann"), [key(2, 1)]);
        s.remove_user("ann", key(2, 1));
        assert!(s.user_conns("ann").is_empty());
        assert_eq!(s.user_count(), 0);
    }
}
