//! Small pure helpers shared by the stores: value conversions, the name
//! index's sharding and merge, the write clock.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{StorageError, StorageResult};

/// Shards of each kind of name in `name_index` (part of the schema:
/// changing it needs a migration that rewrites the index).
pub(crate) const INDEX_SHARDS: i32 = 16;

/// `name_index` kinds.
pub(crate) const KIND_ROOM: &str = "room";
pub(crate) const KIND_USER: &str = "user";
pub(crate) const KIND_EVENT: &str = "event";

/// A u64 stored in a bigint bit for bit (epochs, timestamps in regular
/// columns: any u64 round-trips, order is not kept). Columns compared in
/// range queries use `bound_i64` and values validated to fit instead.
pub(crate) fn bits(value: u64) -> i64 {
    i64::from_ne_bytes(value.to_ne_bytes())
}

/// The u64 a `bits` bigint holds.
pub(crate) fn unbits(value: i64) -> u64 {
    u64::from_ne_bytes(value.to_ne_bytes())
}

/// A u64 bound as a bigint, saturating (for range bounds only).
pub(crate) fn bound_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A stored bigint as a u64; negative values are damage.
pub(crate) fn to_u64(value: i64, what: &str) -> StorageResult<u64> {
    u64::try_from(value).map_err(|_| StorageError::Corrupt(format!("negative {what} {value}")))
}

/// A `limit` as a CQL `LIMIT` bind (an int, at least 1).
pub(crate) fn limit_i32(limit: usize) -> i32 {
    i32::try_from(limit).unwrap_or(i32::MAX).max(1)
}

/// The `name_index` shard of a name: FNV-1a, stable across builds and
/// platforms (it is stored).
pub(crate) fn shard_of(name: &str) -> i32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // INDEX_SHARDS is a small positive constant: the remainder fits.
    (hash % INDEX_SHARDS.unsigned_abs() as u64) as i32
}

/// Merges the shards' listings (each ascending, each names > `after`) into
/// the first `limit` names in order, without duplicates.
pub(crate) fn merge_listings(shards: Vec<Vec<String>>, limit: usize) -> Vec<String> {
    let mut all: Vec<String> = shards.into_iter().flatten().collect();
    all.sort_unstable();
    all.dedup();
    all.truncate(limit);
    all
}

/// Write timestamps in µs since the Unix epoch, strictly increasing within
/// the process: an operation takes one before it starts, so of two
/// operations on the same row the one started later wins, whatever order
/// their writes (or the driver's retries of them) reach the replicas in.
#[derive(Debug, Default)]
pub(crate) struct WriteClock {
    last: AtomicI64,
}

impl WriteClock {
    pub(crate) fn next(&self) -> i64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        let mut prev = self.last.load(Ordering::Relaxed);
        loop {
            let ts = now.max(prev.saturating_add(1));
            match self
                .last
                .compare_exchange_weak(prev, ts, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return ts,
                Err(p) => prev = p,
            }
        }
    }
}

/// A random 64-bit value from the standard library's hasher seeds (no
/// extra crate): distinct per process and per call.
pub(crate) fn random_u64() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.write_u32(std::process::id());
    h.finish()
}

/// A 64-bit mix (splitmix64's finaliser): spreads counters into ids.
pub(crate) fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        for v in [0, 1, i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX] {
            assert_eq!(unbits(bits(v)), v);
        }
        assert_eq!(bits(u64::MAX), -1);
        assert_eq!(bits(5), 5);
        assert_eq!(bound_i64(u64::MAX), i64::MAX);
        assert_eq!(to_u64(7, "x").unwrap(), 7);
        assert!(matches!(to_u64(-1, "x"), Err(StorageError::Corrupt(_))));
        assert_eq!(limit_i32(0), 1);
        assert_eq!(limit_i32(10), 10);
        assert_eq!(limit_i32(usize::MAX), i32::MAX);
    }

    #[test]
    fn shards_are_stable_and_spread() {
        // Stored values: these must never change.
        assert_eq!(shard_of(""), (0xcbf2_9ce4_8422_2325u64 % 16) as i32);
        assert_eq!(shard_of("chat:lobby"), shard_of("chat:lobby"));
        let mut seen = [0usize; INDEX_SHARDS as usize];
        for i in 0..1600 {
            seen[shard_of(&format!("room-{i}")) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
    }

    #[test]
    fn merge_orders_dedups_and_limits() {
        let merged = merge_listings(
            vec![
                vec!["b".into(), "d".into()],
                vec![],
                vec!["a".into(), "c".into(), "d".into()],
            ],
            3,
        );
        assert_eq!(merged, ["a", "b", "c"]);
        assert!(merge_listings(vec![vec![], vec![]], 5).is_empty());
    }

    #[test]
    fn clock_strictly_increases() {
        let c = WriteClock::default();
        let mut prev = c.next();
        assert!(prev > 1_600_000_000_000_000, "µs since the epoch");
        for _ in 0..10_000 {
            let t = c.next();
            assert!(t > prev);
            prev = t;
        }
    }

    #[test]
    fn random_values_differ() {
        assert_ne!(random_u64(), random_u64());
        assert_ne!(mix64(1), mix64(2));
    }
}
