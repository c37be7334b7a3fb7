//! Where a room's owner is: one shard of this node, chosen by a stable hash
//! of its name. In a cluster every node still has its own owner of each
//! room it serves; what makes them agree is the room's log in Redis, which
//! sequences every publish (`crate::cluster`), so placement stays local.

/// The owner of a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// A shard of this node.
    Local(usize),
}

/// Places rooms on the shards of this node.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Placer {
    shards: usize,
}

impl Placer {
    pub(crate) fn new(shards: usize) -> Self {
        Self { shards: shards.max(1) }
    }

    /// Where `room`'s owner is.
    pub(crate) fn place(&self, room: &str) -> Placement {
        Placement::Local(shard_of(room, self.shards))
    }
}

/// The shard that owns `room` on a node of `shards` shards.
pub(crate) fn shard_of(room: &str, shards: usize) -> usize {
    // FNV-1a: stable across processes and versions (unlike RandomState),
    // so tests and tools can tell which shard owns a room.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in room.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % shards.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_is_stable_and_spreads_rooms() {
        let placer = Placer::new(4);
        assert_eq!(placer.place("chat:lobby"), placer.place("chat:lobby"));
        let mut used = [0; 4];
        for i in 0..400 {
            let Placement::Local(s) = placer.place(&format!("room:{i}"));
            used[s] += 1;
        }
        assert!(used.iter().all(|&n| n > 50), "{used:?}");
        // Pinned (FNV-1a 64 of "chat:lobby" is 13271436920385565849): a
        // change of hash would move the rooms of every running node.
        assert_eq!(shard_of("chat:lobby", 4), 1);
        assert_eq!(shard_of("chat:lobby", 7), 4);
        assert_eq!(Placer::new(1).place("anything"), Placement::Local(0));
    }
}
