//! The room log's pure logic: time buckets, grouping an append by
//! partition, merging bucket reads into a `ReadPage`, planning trims.
//! Nothing here does I/O; `log.rs` runs the queries these plans ask for.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;

use herald_protocol::owner::{ReadRange, Stored};

use super::config::MAX_TTL_SECS;
use crate::{LogEntry, StorageError, StorageResult};

/// `room_buckets.first_offset` is written with timestamp
/// `FIRST_TS_BASE - offset` (µs; 2001-09-09 for offset 0) so the lowest
/// offset wins, `last_offset` with timestamp `offset` so the highest wins.
/// Both lie in the past, which ScyllaDB accepts (it may refuse timestamps
/// far in the future).
pub(crate) const FIRST_TS_BASE: i64 = 1_000_000_000_000_000;

/// The highest offset the backend stores (offsets must keep the first-
/// offset timestamp positive).
pub(crate) const MAX_OFFSET: u64 = FIRST_TS_BASE as u64 - 1;

/// Most statements in one unlogged batch.
pub(crate) const BATCH_MAX_STATEMENTS: usize = 64;

/// Most payload bytes in one unlogged batch (ScyllaDB warns above 128 KiB
/// per batch by default).
pub(crate) const BATCH_MAX_BYTES: usize = 96 * 1024;

/// The time bucket of a timestamp.
pub(crate) fn bucket_of(timestamp_ms: u64, bucket_ms: u64) -> u64 {
    timestamp_ms / bucket_ms.max(1)
}

/// Write timestamp of a `first_offset` cell (the lowest offset wins).
pub(crate) fn first_offset_timestamp(offset: u64) -> i64 {
    FIRST_TS_BASE - i64::try_from(offset.min(MAX_OFFSET)).unwrap_or(0)
}

/// Write timestamp of a cell whose highest value must win (`last_offset`,
/// `trimmed_through`): the value itself.
pub(crate) fn rising_timestamp(offset: u64) -> i64 {
    i64::try_from(offset.min(MAX_OFFSET)).unwrap_or(0)
}

/// TTL of a `room_buckets` row: one bucket longer than its messages', so a
/// bucket is never forgotten while it still holds messages (0: none).
pub(crate) fn bucket_ttl(message_ttl: i32, bucket_ms: u64) -> i32 {
    if message_ttl == 0 {
        return 0;
    }
    let extra = i32::try_from(bucket_ms.div_ceil(1000)).unwrap_or(MAX_TTL_SECS);
    message_ttl.saturating_add(extra).min(MAX_TTL_SECS)
}

/// Refuses what the schema cannot hold: offsets are compared in range
/// queries and derive write timestamps, so they must stay at or below
/// [`MAX_OFFSET`]; epochs and timestamps are stored bit for bit (any u64).
pub(crate) fn validate_entry(entry: &LogEntry) -> StorageResult<()> {
    let m = &entry.message;
    if m.offset > MAX_OFFSET {
        return Err(StorageError::Invalid(format!(
            "room {}: offset {} above the backend's maximum {MAX_OFFSET}",
            entry.room, m.offset
        )));
    }
    Ok(())
}

/// The messages of one append going to one partition `(room, epoch,
/// bucket)`, in batch order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartitionWrite<'a> {
    pub(crate) room: &'a str,
    pub(crate) epoch: u64,
    pub(crate) bucket: u64,
    pub(crate) messages: Vec<&'a Stored>,
}

impl PartitionWrite<'_> {
    /// Lowest offset written to the partition.
    pub(crate) fn first(&self) -> u64 {
        self.messages.iter().map(|m| m.offset).min().unwrap_or(0)
    }

    /// Highest offset written to the partition.
    pub(crate) fn last(&self) -> u64 {
        self.messages.iter().map(|m| m.offset).max().unwrap_or(0)
    }

    /// Index ranges of `messages` forming unlogged batches: at most
    /// [`BATCH_MAX_STATEMENTS`] and about [`BATCH_MAX_BYTES`] each (a larger
    /// message goes alone).
    pub(crate) fn chunks(&self) -> Vec<Range<usize>> {
        chunk_ranges(
            self.messages.iter().map(|m| m.payload.len() + m.publisher.len() + 64),
            BATCH_MAX_STATEMENTS,
            BATCH_MAX_BYTES,
        )
    }
}

/// Groups an append by partition, in order of first appearance; an
/// unlogged batch never spans partitions.
pub(crate) fn group_by_partition(batch: &[LogEntry], bucket_ms: u64) -> Vec<PartitionWrite<'_>> {
    let mut groups: Vec<PartitionWrite<'_>> = Vec::new();
    let mut index: HashMap<(&str, u64, u64), usize> = HashMap::new();
    for entry in batch {
        let bucket = bucket_of(entry.message.timestamp_ms, bucket_ms);
        let key = (&*entry.room, entry.epoch, bucket);
        let i = *index.entry(key).or_insert_with(|| {
            groups.push(PartitionWrite {
                room: &entry.room,
                epoch: entry.epoch,
                bucket,
                messages: Vec::new(),
            });
            groups.len() - 1
        });
        groups[i].messages.push(&entry.message);
    }
    groups
}

/// Each room's head after an append: the epoch and offset of its last
/// entry in the batch (rooms in order of first appearance).
pub(crate) fn heads_of(batch: &[LogEntry]) -> Vec<(&str, u64, u64)> {
    let mut heads: Vec<(&str, u64, u64)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for entry in batch {
        let head = (&*entry.room, entry.epoch, entry.message.offset);
        match index.get(&*entry.room) {
            Some(&i) => heads[i] = head,
            None => {
                index.insert(&entry.room, heads.len());
                heads.push(head);
            }
        }
    }
    heads
}

/// Splits items of the given sizes into consecutive ranges of at most
/// `max_items` items and `max_bytes` bytes (an item larger than `max_bytes`
/// forms its own range).
pub(crate) fn chunk_ranges(
    sizes: impl Iterator<Item = usize>,
    max_items: usize,
    max_bytes: usize,
) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let (mut start, mut bytes, mut len) = (0, 0usize, 0);
    for (i, size) in sizes.enumerate() {
        if len > 0 && (len == max_items || bytes.saturating_add(size) > max_bytes) {
            ranges.push(start..i);
            (start, bytes, len) = (i, 0, 0);
        }
        bytes = bytes.saturating_add(size);
        len += 1;
    }
    if len > 0 {
        ranges.push(start..start + len);
    }
    ranges
}

/// One `room_buckets` row: a bucket of a room's epoch and the lowest and
/// highest offsets written to it (None when the cell is missing, e.g.
/// expired: then the bounds are unknown and taken as wide as possible).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BucketInfo {
    pub(crate) bucket: u64,
    pub(crate) first: Option<u64>,
    pub(crate) last: Option<u64>,
}

impl BucketInfo {
    /// No offset of the bucket is below this.
    pub(crate) fn lo(&self) -> u64 {
        self.first.unwrap_or(0)
    }

    /// No offset of the bucket is above this.
    pub(crate) fn hi(&self) -> u64 {
        self.last.unwrap_or(u64::MAX)
    }
}

/// One query of a read: offsets `after < offset < before` of one bucket,
/// newest or oldest first, at most `limit` rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BucketQuery {
    pub(crate) bucket: u64,
    pub(crate) after: u64,
    /// Exclusive; `u64::MAX` when the range has no upper bound.
    pub(crate) before: u64,
    pub(crate) newest_first: bool,
    pub(crate) limit: usize,
}

/// Answers a `ReadRange` from per-bucket queries: asks for one bucket at a
/// time, most promising first, and stops as soon as no remaining bucket
/// can hold a message of the answer. Exact even when a clock step put
/// offsets in buckets out of time order: buckets are ordered and skipped by
/// their offset bounds, never by time.
#[derive(Debug)]
pub(crate) struct RangeReader {
    after: u64,
    before: u64,
    limit: usize,
    newest: bool,
    pending: VecDeque<BucketInfo>,
    /// Best rows so far, in the read's order (newest first when `newest`),
    /// at most `limit + 1`.
    rows: Vec<Stored>,
}

impl RangeReader {
    /// A read of `range` with effective lower bound `lower` (the range's
    /// `after`, raised to what retention removed) over `buckets`.
    pub(crate) fn new(buckets: &[BucketInfo], lower: u64, range: &ReadRange) -> RangeReader {
        let before = if range.before == 0 { u64::MAX } else { range.before };
        let empty = before <= lower.saturating_add(1);
        let mut pending: Vec<BucketInfo> = buckets
            .iter()
            .copied()
            .filter(|b| !empty && b.hi() > lower && b.lo() < before)
            .collect();
        if range.newest {
            pending.sort_by(|a, b| b.hi().cmp(&a.hi()).then(b.bucket.cmp(&a.bucket)));
        } else {
            pending.sort_by(|a, b| a.lo().cmp(&b.lo()).then(a.bucket.cmp(&b.bucket)));
        }
        RangeReader {
            after: lower,
            before,
            limit: range.limit,
            newest: range.newest,
            pending: pending.into(),
            rows: Vec::new(),
        }
    }

    fn want(&self) -> usize {
        self.limit.saturating_add(1)
    }

    /// The next bucket to read, or None when the answer is known.
    pub(crate) fn next_query(&mut self) -> Option<BucketQuery> {
        let b = *self.pending.front()?;
        let want = self.want();
        if self.rows.len() >= want {
            // Full: only a bucket reaching past the worst kept row matters,
            // and the remaining ones reach no further than this one.
            let worst = self.rows[want - 1].offset;
            let useful = if self.newest { b.hi() > worst } else { b.lo() < worst };
            if !useful {
                self.pending.clear();
                return None;
            }
        }
        self.pending.pop_front();
        // A bucket wholly beyond every kept row only fills the remainder.
        let beyond = match (self.rows.first(), self.rows.last()) {
            (None, _) | (_, None) => true,
            (Some(_), Some(worst)) if self.newest => b.hi() < worst.offset,
            (Some(_), Some(worst)) => b.lo() > worst.offset,
        };
        let limit = if beyond {
            want - self.rows.len().min(want - 1)
        } else {
            want
        };
        Some(BucketQuery {
            bucket: b.bucket,
            after: self.after,
            before: self.before,
            newest_first: self.newest,
            limit,
        })
    }

    /// Rows one query returned (any order; out-of-range rows are ignored).
    pub(crate) fn feed(&mut self, rows: Vec<Stored>) {
        let (after, before) = (self.after, self.before);
        self.rows
            .extend(rows.into_iter().filter(|m| m.offset > after && m.offset < before));
        if self.newest {
            self.rows.sort_by_key(|m| std::cmp::Reverse(m.offset));
        } else {
            self.rows.sort_by_key(|m| m.offset);
        }
        self.rows.dedup_by_key(|m| m.offset);
        self.rows.truncate(self.want());
    }

    /// The messages (oldest first) and whether the range holds more.
    pub(crate) fn finish(mut self) -> (Vec<Stored>, bool) {
        let more = self.rows.len() > self.limit;
        self.rows.truncate(self.limit);
        if self.newest {
            self.rows.reverse();
        }
        (self.rows, more)
    }
}

/// The offset at or below which a count retention removes messages: the
/// newest `max_messages` offsets stay. Offsets Herald gave to appends that
/// failed leave gaps, so a room with gaps keeps somewhat fewer than
/// `max_messages` (never more); this spares trim a scan of what it keeps.
pub(crate) fn count_cut(last_offset: u64, max_messages: Option<u64>) -> u64 {
    max_messages.map_or(0, |n| last_offset.saturating_sub(n))
}

/// What an age retention needs: the offsets of buckets wholly older than
/// `cutoff_ms` (all go), and the one bucket straddling it, whose rows must
/// be examined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AgePlan {
    /// Highest offset of the wholly older buckets (0: none).
    pub(crate) cut: u64,
    /// The bucket holding `cutoff_ms`, when it has messages above `lower`.
    pub(crate) straddling: Option<u64>,
}

pub(crate) fn age_plan(buckets: &[BucketInfo], lower: u64, cutoff_ms: u64, bucket_ms: u64) -> AgePlan {
    let bucket_ms = bucket_ms.max(1);
    let mut plan = AgePlan {
        cut: 0,
        straddling: None,
    };
    for b in buckets.iter().filter(|b| b.hi() > lower) {
        let start = b.bucket.saturating_mul(bucket_ms);
        let end = start.saturating_add(bucket_ms);
        if end <= cutoff_ms {
            if let Some(last) = b.last {
                plan.cut = plan.cut.max(last);
            }
        } else if start < cutoff_ms {
            plan.straddling = Some(b.bucket);
        }
    }
    plan
}

/// Scans the straddling bucket's `(offset, timestamp_ms)` rows, ascending:
/// the messages before the first one at or after the cutoff go (Herald
/// stamps a room's messages in offset order, so that is all of them unless
/// a clock stepped back).
#[derive(Debug)]
pub(crate) struct AgeScan {
    cutoff_ms: u64,
    pub(crate) cut: Option<u64>,
    pub(crate) done: bool,
}

impl AgeScan {
    pub(crate) fn new(cutoff_ms: u64) -> AgeScan {
        AgeScan {
            cutoff_ms,
            cut: None,
            done: false,
        }
    }

    /// Takes rows in ascending offset order; returns false once done.
    pub(crate) fn feed(&mut self, rows: &[(u64, u64)]) -> bool {
        for &(offset, ts) in rows {
            if self.done {
                break;
            }
            if ts < self.cutoff_ms {
                self.cut = Some(offset);
            } else {
                self.done = true;
            }
        }
        !self.done
    }
}

/// What trim does to one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BucketRemoval {
    pub(crate) bucket: u64,
    /// Every message of the bucket goes: delete the partition, not a range.
    pub(crate) whole: bool,
    /// Forget the bucket in `room_buckets` too (only buckets at least a
    /// bucket older than now, which no append of a sane clock reaches).
    pub(crate) drop_row: bool,
}

/// The buckets holding offsets in `(lower, cut]`.
pub(crate) fn removal_plan(
    buckets: &[BucketInfo],
    lower: u64,
    cut: u64,
    now_ms: u64,
    bucket_ms: u64,
) -> Vec<BucketRemoval> {
    if cut <= lower {
        return Vec::new();
    }
    let mut plan: Vec<BucketRemoval> = buckets
        .iter()
        .filter(|b| b.hi() > lower && b.lo() <= cut)
        .map(|b| {
            let whole = b.last.is_some_and(|last| last <= cut);
            let old = b.bucket.saturating_add(2).saturating_mul(bucket_ms) <= now_ms;
            BucketRemoval {
                bucket: b.bucket,
                whole,
                drop_row: whole && old,
            }
        })
        .collect();
    plan.sort_by_key(|r| r.bucket);
    plan
}

/// The buckets a time read walks, oldest first: those of the epoch whose
/// time span meets `[from_ms, to_ms)` and that hold messages above `lower`.
pub(crate) fn time_buckets(buckets: &[BucketInfo], lower: u64, from_ms: u64, to_ms: u64, bucket_ms: u64) -> Vec<u64> {
    if to_ms <= from_ms {
        return Vec::new();
    }
    let (first, last) = (bucket_of(from_ms, bucket_ms), bucket_of(to_ms - 1, bucket_ms));
    let mut out: Vec<u64> = buckets
        .iter()
        .filter(|b| b.bucket >= first && b.bucket <= last && b.hi() > lower)
        .map(|b| b.bucket)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Finds, in one bucket's `(offset, timestamp_ms)` rows scanned in
/// ascending offset order, the offset span of the first `wanted` messages
/// stamped within `[from_ms, to_ms)`; the payloads are then fetched for that
/// span only.
#[derive(Debug)]
pub(crate) struct SpanFinder {
    from_ms: u64,
    to_ms: u64,
    wanted: usize,
    pub(crate) found: usize,
    pub(crate) span: Option<(u64, u64)>,
}

impl SpanFinder {
    pub(crate) fn new(from_ms: u64, to_ms: u64, wanted: usize) -> SpanFinder {
        SpanFinder {
            from_ms,
            to_ms,
            wanted,
            found: 0,
            span: None,
        }
    }

    /// Takes rows in ascending offset order; returns false once enough.
    pub(crate) fn feed(&mut self, rows: &[(u64, u64)]) -> bool {
        for &(offset, ts) in rows {
            if self.found >= self.wanted {
                break;
            }
            if ts >= self.from_ms && ts < self.to_ms {
                self.found += 1;
                self.span = Some(self.span.map_or((offset, offset), |(lo, _)| (lo, offset)));
            }
        }
        self.found < self.wanted
    }
}

/// Buckets of epochs other than the head's: history lost when the epoch
/// changed, removed by trim.
pub(crate) fn stale_buckets(rows: &[(u64, BucketInfo)], head_epoch: u64) -> Vec<(u64, u64)> {
    rows.iter()
        .filter(|(epoch, _)| *epoch != head_epoch)
        .map(|(epoch, b)| (*epoch, b.bucket))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;

    fn msg(offset: u64, ts: u64) -> Stored {
        Stored {
            offset,
            publisher: Arc::from("u"),
            timestamp_ms: ts,
            payload: Bytes::from(format!("m{offset}")),
            content_type: None,
        }
    }

    fn entry(room: &str, epoch: u64, offset: u64, ts: u64) -> LogEntry {
        LogEntry {
            room: Arc::from(room),
            epoch,
            message: msg(offset, ts),
        }
    }

    #[test]
    fn buckets_of_timestamps() {
        assert_eq!(bucket_of(0, 1000), 0);
        assert_eq!(bucket_of(999, 1000), 0);
        assert_eq!(bucket_of(1000, 1000), 1);
        assert_eq!(bucket_of(1_700_000_000_000, super::super::config::DAY_MS), 19675);
        assert_eq!(bucket_of(5, 0), 5, "a zero width never divides by zero");
    }

    #[test]
    fn offset_timestamps_order_first_low_and_last_high() {
        assert!(first_offset_timestamp(1) > first_offset_timestamp(2));
        assert!(rising_timestamp(2) > rising_timestamp(1));
        assert!(first_offset_timestamp(MAX_OFFSET) >= 1);
        // In the past: below 2001-09-09 in µs.
        assert!(first_offset_timestamp(0) <= FIRST_TS_BASE);
        assert_eq!(bucket_ttl(0, 86_400_000), 0);
        assert_eq!(bucket_ttl(3600, 86_400_000), 3600 + 86_400);
        assert_eq!(bucket_ttl(MAX_TTL_SECS, 86_400_000), MAX_TTL_SECS);
    }

    #[test]
    fn validation() {
        validate_entry(&entry("r", 1, MAX_OFFSET, 5)).unwrap();
        assert!(validate_entry(&entry("r", 1, MAX_OFFSET + 1, 5)).is_err());
        validate_entry(&entry("r", u64::MAX, 1, u64::MAX)).unwrap();
        assert!(bucket_of(u64::MAX, super::super::config::DAY_MS) < i64::MAX as u64);
    }

    #[test]
    fn grouping_by_partition() {
        let batch = [
            entry("a", 1, 1, 100),
            entry("b", 7, 1, 150),
            entry("a", 1, 2, 999),
            entry("a", 1, 3, 1000), // next bucket
            entry("b", 7, 2, 160),
            entry("a", 2, 1, 1001), // new epoch
        ];
        let groups = group_by_partition(&batch, 1000);
        let shape: Vec<(&str, u64, u64, Vec<u64>)> = groups
            .iter()
            .map(|g| (g.room, g.epoch, g.bucket, g.messages.iter().map(|m| m.offset).collect()))
            .collect();
        assert_eq!(
            shape,
            [
                ("a", 1, 0, vec![1, 2]),
                ("b", 7, 0, vec![1, 2]),
                ("a", 1, 1, vec![3]),
                ("a", 2, 1, vec![1]),
            ]
        );
        assert_eq!((groups[0].first(), groups[0].last()), (1, 2));
        assert_eq!(heads_of(&batch), [("a", 2, 1), ("b", 7, 2)]);
        assert!(group_by_partition(&[], 1000).is_empty());
    }

    #[test]
    fn chunking() {
        assert_eq!(chunk_ranges([1, 1, 1, 1, 1].into_iter(), 2, 100), [0..2, 2..4, 4..5]);
        assert_eq!(
            chunk_ranges([60, 60, 10, 200, 5].into_iter(), 10, 100),
            [0..1, 1..3, 3..4, 4..5]
        );
        assert!(chunk_ranges([].into_iter(), 2, 100).is_empty());
        assert_eq!(
            chunk_ranges([500].into_iter(), 2, 100),
            vec![Range { start: 0, end: 1 }]
        );
        let batch: Vec<LogEntry> = (1..=150).map(|o| entry("r", 1, o, 5)).collect();
        let groups = group_by_partition(&batch, 1000);
        let chunks = groups[0].chunks();
        assert_eq!(chunks, [0..64, 64..128, 128..150]);
    }

    /// A fake cluster: bucket -> rows, answering `BucketQuery`s as CQL would.
    struct FakeBuckets(BTreeMap<u64, Vec<Stored>>);

    impl FakeBuckets {
        fn new(rows: &[(u64, u64)]) -> FakeBuckets {
            let mut map: BTreeMap<u64, Vec<Stored>> = BTreeMap::new();
            for &(bucket, offset) in rows {
                map.entry(bucket).or_default().push(msg(offset, bucket));
            }
            FakeBuckets(map)
        }

        fn infos(&self) -> Vec<BucketInfo> {
            self.0
                .iter()
                .map(|(&bucket, rows)| BucketInfo {
                    bucket,
                    first: rows.iter().map(|m| m.offset).min(),
                    last: rows.iter().map(|m| m.offset).max(),
                })
                .collect()
        }

        fn query(&self, q: &BucketQuery) -> Vec<Stored> {
            let mut rows: Vec<Stored> = self.0[&q.bucket]
                .iter()
                .filter(|m| m.offset > q.after && m.offset < q.before)
                .cloned()
                .collect();
            rows.sort_by_key(|m| m.offset);
            if q.newest_first {
                rows.reverse();
            }
            rows.truncate(q.limit);
            rows
        }

        /// Runs a read as the store does (lower bound: the range's `after`
        /// raised to `trimmed`); returns (offsets, more, queries issued).
        fn read(&self, trimmed: u64, range: ReadRange) -> (Vec<u64>, bool, usize) {
            let lower = trimmed.max(range.after);
            let mut reader = RangeReader::new(&self.infos(), lower, &range);
            let mut queries = 0;
            while let Some(q) = reader.next_query() {
                queries += 1;
                reader.feed(self.query(&q));
            }
            let (rows, more) = reader.finish();
            (rows.iter().map(|m| m.offset).collect(), more, queries)
        }

        /// The answer by brute force.
        fn expected(&self, trimmed: u64, range: ReadRange) -> (Vec<u64>, bool) {
            let lower = trimmed.max(range.after);
            let mut all: Vec<u64> = self.0.values().flatten().map(|m| m.offset).collect();
            all.sort_unstable();
            let all: Vec<u64> = all.into_iter().filter(|&o| o > lower && range.contains(o)).collect();
            let more = all.len() > range.limit;
            let page = if range.newest {
                all[all.len().saturating_sub(range.limit)..].to_vec()
            } else {
                all[..range.limit.min(all.len())].to_vec()
            };
            (page, more)
        }
    }

    fn range(after: u64, before: u64, limit: usize, newest: bool) -> ReadRange {
        ReadRange {
            after,
            before,
            limit,
            newest,
        }
    }

    #[test]
    fn newest_reads_stop_at_the_newest_buckets() {
        // Three days of ten messages each.
        let rows: Vec<(u64, u64)> = (1..=30).map(|o| ((o - 1) / 10, o)).collect();
        let fake = FakeBuckets::new(&rows);
        let (offsets, more, queries) = fake.read(0, range(0, 0, 5, true));
        assert_eq!(offsets, [26, 27, 28, 29, 30]);
        assert!(more);
        assert_eq!(queries, 1, "the newest bucket answers alone");
        let (offsets, more, queries) = fake.read(0, range(0, 0, 15, true));
        assert_eq!(offsets, (16..=30).collect::<Vec<_>>());
        assert!(more);
        assert_eq!(queries, 2);
        let (offsets, more, _) = fake.read(0, range(0, 0, 30, true));
        assert_eq!(offsets.len(), 30);
        assert!(!more);
    }

    #[test]
    fn oldest_reads_start_at_the_bucket_holding_after() {
        let rows: Vec<(u64, u64)> = (1..=30).map(|o| ((o - 1) / 10, o)).collect();
        let fake = FakeBuckets::new(&rows);
        let (offsets, more, queries) = fake.read(0, range(12, 0, 3, false));
        assert_eq!(offsets, [13, 14, 15]);
        assert!(more);
        assert_eq!(queries, 1, "the first bucket is skipped by its offsets");
        let (offsets, more, queries) = fake.read(0, range(25, 0, 10, false));
        assert_eq!(offsets, [26, 27, 28, 29, 30]);
        assert!(!more);
        assert_eq!(queries, 1);
        let (offsets, more, _) = fake.read(0, range(30, 0, 10, false));
        assert!(offsets.is_empty() && !more);
    }

    #[test]
    fn pages_before_an_offset() {
        let rows: Vec<(u64, u64)> = (1..=30).map(|o| ((o - 1) / 10, o)).collect();
        let fake = FakeBuckets::new(&rows);
        let (offsets, more, queries) = fake.read(0, range(0, 12, 5, true));
        assert_eq!(offsets, [7, 8, 9, 10, 11]);
        assert!(more);
        assert_eq!(queries, 2, "buckets starting at or above `before` are skipped");
        let (offsets, more, _) = fake.read(0, range(8, 12, 5, true));
        assert_eq!(offsets, [9, 10, 11]);
        assert!(!more);
        let (offsets, more, queries) = fake.read(0, range(5, 6, 5, true));
        assert!(offsets.is_empty() && !more);
        assert_eq!(queries, 0, "an empty range asks nothing");
    }

    #[test]
    fn trimmed_lower_bound_hides_removed_offsets() {
        let rows: Vec<(u64, u64)> = (1..=30).map(|o| ((o - 1) / 10, o)).collect();
        let fake = FakeBuckets::new(&rows);
        let (offsets, _, queries) = fake.read(20, range(0, 0, 100, false));
        assert_eq!(offsets, (21..=30).collect::<Vec<_>>());
        assert_eq!(queries, 1);
    }

    #[test]
    fn limit_zero_still_tells_more() {
        let fake = FakeBuckets::new(&[(0, 1), (0, 2)]);
        let (offsets, more, _) = fake.read(0, range(0, 0, 0, true));
        assert!(offsets.is_empty());
        assert!(more);
        let (offsets, more, _) = fake.read(0, range(2, 0, 0, false));
        assert!(offsets.is_empty());
        assert!(!more);
    }

    #[test]
    fn no_buckets_no_queries() {
        let fake = FakeBuckets::new(&[]);
        assert_eq!(fake.read(0, range(0, 0, 10, true)), (vec![], false, 0));
    }

    #[test]
    fn exact_when_a_clock_step_mixed_buckets() {
        // Bucket 5 holds 1..=10 and 21..=25 (the clock stepped back after
        // bucket 6 had taken 11..=20), bucket 6 holds 11..=20 and 26.
        let mut rows: Vec<(u64, u64)> = (1..=10).map(|o| (5, o)).collect();
        rows.extend((11..=20).map(|o| (6, o)));
        rows.extend((21..=25).map(|o| (5, o)));
        rows.push((6, 26));
        let fake = FakeBuckets::new(&rows);
        for newest in [true, false] {
            for after in [0, 3, 10, 15, 20, 24, 26] {
                for before in [0, 5, 12, 22, 27] {
                    for limit in [0, 1, 4, 7, 30] {
                        let r = range(after, before, limit, newest);
                        let (offsets, more, _) = fake.read(0, r);
                        assert_eq!((offsets, more), fake.expected(0, r), "{r:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn matches_brute_force_on_ordered_buckets() {
        let rows: Vec<(u64, u64)> = (1..=47).map(|o| (o / 6, o)).collect();
        let fake = FakeBuckets::new(&rows);
        for newest in [true, false] {
            for lower in [0, 9] {
                for after in [0, 5, 6, 23, 46, 47, 60] {
                    for before in [0, 1, 7, 24, 48] {
                        for limit in [0, 1, 5, 6, 13, 100] {
                            let r = range(after, before, limit, newest);
                            let (offsets, more, _) = fake.read(lower, r);
                            assert_eq!((offsets, more), fake.expected(lower, r), "{lower} {r:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn unknown_bucket_bounds_are_read_conservatively() {
        let infos = [
            BucketInfo {
                bucket: 1,
                first: None,
                last: Some(10),
            },
            BucketInfo {
                bucket: 2,
                first: Some(11),
                last: None,
            },
        ];
        let mut reader = RangeReader::new(&infos, 0, &range(0, 0, 5, false));
        let q = reader.next_query().unwrap();
        assert_eq!(q.bucket, 1);
        reader.feed((1..=10).map(|o| msg(o, 0)).collect());
        assert!(reader.next_query().is_none(), "bucket 2 starts above the kept rows");
        let (rows, more) = reader.finish();
        assert_eq!(rows.len(), 5);
        assert!(more);
    }

    #[test]
    fn queries_ask_only_for_what_can_count() {
        let infos = [
            BucketInfo {
                bucket: 1,
                first: Some(1),
                last: Some(10),
            },
            BucketInfo {
                bucket: 2,
                first: Some(11),
                last: Some(20),
            },
        ];
        let mut reader = RangeReader::new(&infos, 0, &range(0, 0, 12, true));
        let q = reader.next_query().unwrap();
        assert_eq!((q.bucket, q.limit, q.newest_first, q.before), (2, 13, true, u64::MAX));
        reader.feed((11..=20).map(|o| msg(o, 0)).collect());
        let q = reader.next_query().unwrap();
        assert_eq!((q.bucket, q.limit), (1, 3), "only the remainder of the page");
    }

    #[test]
    fn count_and_age_cuts() {
        assert_eq!(count_cut(100, Some(10)), 90);
        assert_eq!(count_cut(5, Some(10)), 0);
        assert_eq!(count_cut(100, None), 0);
        assert_eq!(count_cut(100, Some(0)), 100);
        let infos = [
            BucketInfo {
                bucket: 0,
                first: Some(1),
                last: Some(10),
            },
            BucketInfo {
                bucket: 1,
                first: Some(11),
                last: Some(20),
            },
            BucketInfo {
                bucket: 2,
                first: Some(21),
                last: Some(30),
            },
        ];
        assert_eq!(
            age_plan(&infos, 0, 1500, 1000),
            AgePlan {
                cut: 10,
                straddling: Some(1)
            }
        );
        assert_eq!(
            age_plan(&infos, 0, 2000, 1000),
            AgePlan {
                cut: 20,
                straddling: None
            }
        );
        assert_eq!(
            age_plan(&infos, 0, 0, 1000),
            AgePlan {
                cut: 0,
                straddling: None
            }
        );
        assert_eq!(
            age_plan(&infos, 20, 2500, 1000),
            AgePlan {
                cut: 0,
                straddling: Some(2)
            }
        );
        let mut scan = AgeScan::new(1500);
        assert!(scan.feed(&[(11, 1000), (12, 1499)]));
        assert!(
            !scan.feed(&[(13, 1500), (14, 1200)]),
            "stops at the first row at the cutoff"
        );
        assert_eq!(scan.cut, Some(12));
    }

    #[test]
    fn removal_plans() {
        let infos = [
            BucketInfo {
                bucket: 0,
                first: Some(1),
                last: Some(10),
            },
            BucketInfo {
                bucket: 1,
                first: Some(11),
                last: Some(20),
            },
            BucketInfo {
                bucket: 2,
                first: Some(21),
                last: Some(30),
            },
        ];
        let now = 10_000;
        assert_eq!(
            removal_plan(&infos, 0, 15, now, 1000),
            [
                BucketRemoval {
                    bucket: 0,
                    whole: true,
                    drop_row: true
                },
                BucketRemoval {
                    bucket: 1,
                    whole: false,
                    drop_row: false
                },
            ]
        );
        assert_eq!(
            removal_plan(&infos, 10, 30, 3500, 1000),
            [
                BucketRemoval {
                    bucket: 1,
                    whole: true,
                    drop_row: true
                },
                BucketRemoval {
                    bucket: 2,
                    whole: true,
                    drop_row: false
                },
            ],
            "the current and previous buckets keep their rows"
        );
        assert!(removal_plan(&infos, 15, 15, now, 1000).is_empty());
        assert!(removal_plan(&infos, 15, 10, now, 1000).is_empty());
        let unknown = [BucketInfo {
            bucket: 0,
            first: Some(1),
            last: None,
        }];
        assert_eq!(
            removal_plan(&unknown, 0, 5, now, 1000),
            [BucketRemoval {
                bucket: 0,
                whole: false,
                drop_row: false
            }]
        );
    }

    #[test]
    fn time_reads() {
        let infos = [
            BucketInfo {
                bucket: 0,
                first: Some(1),
                last: Some(10),
            },
            BucketInfo {
                bucket: 2,
                first: Some(11),
                last: Some(20),
            },
            BucketInfo {
                bucket: 3,
                first: Some(21),
                last: Some(30),
            },
        ];
        assert_eq!(time_buckets(&infos, 0, 500, 3000, 1000), [0, 2]);
        assert_eq!(time_buckets(&infos, 0, 500, 3001, 1000), [0, 2, 3]);
        assert_eq!(time_buckets(&infos, 10, 0, 10_000, 1000), [2, 3]);
        assert!(time_buckets(&infos, 0, 3000, 3000, 1000).is_empty());
        let mut span = SpanFinder::new(100, 200, 3);
        assert!(span.feed(&[(1, 50), (2, 100), (3, 150)]));
        assert!(!span.feed(&[(4, 199), (5, 199)]));
        assert_eq!((span.found, span.span), (3, Some((2, 4))));
        let mut span = SpanFinder::new(100, 200, 3);
        assert!(span.feed(&[(1, 50), (2, 300)]));
        assert_eq!(span.span, None);
    }

    #[test]
    fn stale_epochs() {
        let b = |bucket| BucketInfo {
            bucket,
            first: Some(1),
            last: Some(2),
        };
        let rows = [(1, b(5)), (2, b(6)), (2, b(7)), (3, b(7))];
        assert_eq!(stale_buckets(&rows, 2), [(1, 5), (3, 7)]);
    }
}
