//! `RoomLog` on ScyllaDB: the queries `log_plan` asks for, nothing more.

use std::sync::Arc;

use futures_util::FutureExt;
use herald_protocol::owner::{ReadPage, ReadRange, Stored};

use super::binds::{self, BucketRow, HeadRow, MessageRow, NameRow, OffsetRow};
use super::client::{Client, Op, all, all_values};
use super::log_plan::{self, AgeScan, BucketInfo, BucketQuery, RangeReader, SpanFinder};
use super::util::{INDEX_SHARDS, KIND_ROOM, to_u64, unbits};
use crate::{LogEntry, Retention, RoomHead, RoomLog, StorageResult};

/// The room log of a ScyllaDB cluster.
pub(crate) struct ScyllaRoomLog {
    client: Arc<Client>,
}

impl std::fmt::Debug for ScyllaRoomLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScyllaRoomLog").field("client", &self.client).finish()
    }
}

fn bucket_info((epoch, bucket, first, last): BucketRow) -> StorageResult<(u64, BucketInfo)> {
    Ok((
        unbits(epoch),
        BucketInfo {
            bucket: to_u64(bucket, "bucket")?,
            first: first.map(|f| to_u64(f, "first_offset")).transpose()?,
            last: last.map(|l| to_u64(l, "last_offset")).transpose()?,
        },
    ))
}

fn stored((offset, publisher, ts, content_type, payload): MessageRow) -> StorageResult<Stored> {
    Ok(Stored {
        offset: to_u64(offset, "offset")?,
        publisher: Arc::from(publisher.unwrap_or_default()),
        timestamp_ms: unbits(ts.unwrap_or(0)),
        payload: payload.unwrap_or_default(),
        content_type: content_type.map(Arc::from),
    })
}

impl ScyllaRoomLog {
    pub(crate) fn new(client: Arc<Client>) -> ScyllaRoomLog {
        ScyllaRoomLog { client }
    }

    /// The head, and every epoch with a `room_heads` row.
    async fn heads_of(&self, room: &str) -> StorageResult<(Option<RoomHead>, Vec<u64>)> {
        let c = &*self.client;
        let rows: Vec<HeadRow> = c.rows(&c.st.select_head, binds::name(room), usize::MAX).await?;
        let epochs: Vec<u64> = rows.iter().filter_map(|r| r.1).map(unbits).collect();
        let Some(current) = rows.first().and_then(|r| r.0) else {
            return Ok((None, epochs));
        };
        let row = rows.iter().find(|r| r.1 == Some(current));
        let head = RoomHead {
            epoch: unbits(current),
            last_offset: to_u64(row.and_then(|r| r.2).unwrap_or(0), "last_offset")?,
            trimmed_through: to_u64(row.and_then(|r| r.3).unwrap_or(0), "trimmed_through")?,
        };
        Ok((Some(head), epochs))
    }

    async fn head_of(&self, room: &str) -> StorageResult<Option<RoomHead>> {
        Ok(self.heads_of(room).await?.0)
    }

    async fn buckets_of(&self, room: &str, epoch: u64) -> StorageResult<Vec<BucketInfo>> {
        let c = &*self.client;
        let rows: Vec<BucketRow> = c
            .rows(&c.st.select_buckets, binds::room_epoch(room, epoch), usize::MAX)
            .await?;
        rows.into_iter().map(|r| bucket_info(r).map(|(_, b)| b)).collect()
    }

    async fn fetch(&self, room: &str, epoch: u64, q: BucketQuery) -> StorageResult<Vec<Stored>> {
        let c = &*self.client;
        let st = if q.newest_first {
            &c.st.select_messages_desc
        } else {
            &c.st.select_messages_asc
        };
        let values = binds::messages(room, epoch, q.bucket, q.after, q.before, q.limit);
        let rows: Vec<MessageRow> = c.rows(st, values, q.limit).await?;
        rows.into_iter().map(stored).collect()
    }

    /// `(offset, timestamp_ms)` of a bucket's messages with `after < offset
    /// < before`, ascending, page by page while `page` returns true.
    async fn scan_offsets(
        &self,
        room: &str,
        epoch: u64,
        bucket: u64,
        after: u64,
        before: u64,
        mut page: impl FnMut(&[(u64, u64)]) -> bool,
    ) -> StorageResult<()> {
        let c = &*self.client;
        let values = binds::offsets(room, epoch, bucket, after, before);
        c.scan(&c.st.select_offsets_asc, values, |rows: Vec<OffsetRow>| {
            let rows: Vec<(u64, u64)> = rows
                .into_iter()
                .map(|(o, ts)| Ok((to_u64(o, "offset")?, unbits(ts.unwrap_or(0)))))
                .collect::<StorageResult<_>>()?;
            Ok(page(&rows))
        })
        .await
    }

    /// Messages of one epoch's bucket at or below `cut` and above `lower`
    /// go; returns how many there were.
    async fn remove(
        &self,
        room: &str,
        epoch: u64,
        r: log_plan::BucketRemoval,
        lower: u64,
        cut: u64,
    ) -> StorageResult<u64> {
        let c = &*self.client;
        let mut removed = 0u64;
        self.scan_offsets(room, epoch, r.bucket, lower, cut.saturating_add(1), |rows| {
            removed += rows.len() as u64;
            true
        })
        .await?;
        if r.whole {
            c.exec(&c.st.delete_message_partition, binds::partition(room, epoch, r.bucket))
                .await?;
        } else {
            c.exec(
                &c.st.delete_messages_through,
                binds::messages_through(room, epoch, r.bucket, cut),
            )
            .await?;
        }
        if r.drop_row {
            c.exec(&c.st.delete_bucket, binds::partition(room, epoch, r.bucket))
                .await?;
        }
        Ok(removed)
    }
}

impl RoomLog for ScyllaRoomLog {
    fn append(&self, batch: &[LogEntry]) -> StorageResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        batch.iter().try_for_each(log_plan::validate_entry)?;
        let c = &*self.client;
        let bucket_ms = c.config.bucket_ms;
        let groups = log_plan::group_by_partition(batch, bucket_ms);
        let heads = log_plan::heads_of(batch);
        // Taken before any write: a later append of the room wins the
        // current epoch.
        let epoch_ts = c.clock.next();
        c.run(async {
            // Messages and bucket bounds first: once the head moves, readers
            // find everything up to it. One unlogged batch never spans
            // partitions.
            let mut ops: Vec<Op<'_>> = Vec::new();
            for g in &groups {
                let ttl = c.config.ttl_secs(g.room);
                for chunk in g.chunks() {
                    let values: Vec<_> = g.messages[chunk]
                        .iter()
                        .map(|m| binds::insert_message(g.room, g.epoch, g.bucket, m, ttl))
                        .collect();
                    ops.push(async move { c.batch(&c.st.insert_message, &values).await }.boxed_local());
                }
                let bucket_ttl = log_plan::bucket_ttl(ttl, bucket_ms);
                let (first, last) = (g.first(), g.last());
                let first_ts = log_plan::first_offset_timestamp(first);
                let last_ts = log_plan::rising_timestamp(last);
                let first_values = binds::bucket_bound(bucket_ttl, first_ts, first, g.room, g.epoch, g.bucket);
                let last_values = binds::bucket_bound(bucket_ttl, last_ts, last, g.room, g.epoch, g.bucket);
                ops.push(c.exec(&c.st.bucket_first, first_values).boxed_local());
                ops.push(c.exec(&c.st.bucket_last, last_values).boxed_local());
            }
            all(ops).await?;
            // Then heads and the room index. Upserts, no read before write:
            // the epoch cell carries this append's clock timestamp (the
            // newest append's epoch wins: one owner appends a room at a
            // time), last_offset the timestamp `offset` (a retry of an older
            // batch never lowers it). One batch: one partition, atomic.
            let mut ops: Vec<Op<'_>> = Vec::new();
            for &(room, epoch, last) in &heads {
                let epoch_values = binds::head_epoch(epoch_ts, epoch, room);
                let last_values = binds::head_offset(log_plan::rising_timestamp(last), last, room, epoch);
                let statements = [&c.st.head_epoch, &c.st.head_last];
                ops.push(async move { c.batch_of(&statements, (epoch_values, last_values)).await }.boxed_local());
                ops.push(
                    c.exec(&c.st.index_upsert, binds::index_entry(KIND_ROOM, room))
                        .boxed_local(),
                );
            }
            all(ops).await
        })
    }

    fn sync(&self) -> StorageResult<()> {
        // Writes are acknowledged at the configured consistency: in the
        // replicas' commit logs already.
        Ok(())
    }

    fn head(&self, room: &str) -> StorageResult<Option<RoomHead>> {
        self.client.run(self.head_of(room))
    }

    fn read(&self, room: &str, epoch: u64, range: ReadRange) -> StorageResult<ReadPage> {
        self.client.run(async {
            let (head, buckets) =
                futures_util::future::try_join(self.head_of(room), self.buckets_of(room, epoch)).await?;
            let Some(head) = head.filter(|h| h.epoch == epoch) else {
                return Ok(ReadPage {
                    messages: Vec::new(),
                    complete: false,
                    more: false,
                });
            };
            let lower = range.after.max(head.trimmed_through);
            let complete = range.after >= head.trimmed_through;
            let mut reader = RangeReader::new(&buckets, lower, &range);
            while let Some(q) = reader.next_query() {
                reader.feed(self.fetch(room, epoch, q).await?);
            }
            let (messages, more) = reader.finish();
            Ok(ReadPage {
                messages,
                complete,
                more,
            })
        })
    }

    fn read_time(&self, room: &str, from_ms: u64, to_ms: u64, limit: usize) -> StorageResult<Vec<Stored>> {
        if limit == 0 || to_ms <= from_ms {
            return Ok(Vec::new());
        }
        self.client.run(async {
            let Some(head) = self.head_of(room).await? else {
                return Ok(Vec::new());
            };
            let (epoch, lower) = (head.epoch, head.trimmed_through);
            let buckets = self.buckets_of(room, epoch).await?;
            let mut out: Vec<Stored> = Vec::new();
            for bucket in log_plan::time_buckets(&buckets, lower, from_ms, to_ms, self.client.config.bucket_ms) {
                // Offsets and times first (small rows), then the payloads of
                // the matching span only.
                let mut finder = SpanFinder::new(from_ms, to_ms, limit - out.len());
                self.scan_offsets(room, epoch, bucket, lower, u64::MAX, |rows| finder.feed(rows))
                    .await?;
                let Some((lo, hi)) = finder.span else {
                    continue;
                };
                let q = BucketQuery {
                    bucket,
                    after: lo.saturating_sub(1),
                    before: hi.saturating_add(1),
                    newest_first: false,
                    limit: usize::try_from(hi - lo + 1).unwrap_or(usize::MAX),
                };
                let rows = self.fetch(room, epoch, q).await?;
                let wanted = limit - out.len();
                out.extend(
                    rows.into_iter()
                        .filter(|m| m.timestamp_ms >= from_ms && m.timestamp_ms < to_ms)
                        .take(wanted),
                );
                if out.len() >= limit {
                    break;
                }
            }
            Ok(out)
        })
    }

    fn trim(&self, room: &str, retention: Retention, now_ms: u64) -> StorageResult<u64> {
        let c = &*self.client;
        let bucket_ms = c.config.bucket_ms;
        c.run(async {
            let (head, head_epochs) = self.heads_of(room).await?;
            let Some(head) = head else {
                return Ok(0);
            };
            let rows: Vec<BucketRow> = c.rows(&c.st.select_all_buckets, binds::name(room), usize::MAX).await?;
            let rows: Vec<(u64, BucketInfo)> = rows.into_iter().map(bucket_info).collect::<StorageResult<_>>()?;

            // History of earlier epochs was lost when the epoch changed:
            // remove it (not counted: it left the room's history then).
            let mut ops: Vec<Op<'_>> = Vec::new();
            for epoch in head_epochs.into_iter().filter(|e| *e != head.epoch) {
                ops.push(
                    c.exec(&c.st.delete_head_epoch, binds::room_epoch(room, epoch))
                        .boxed_local(),
                );
            }
            for (epoch, bucket) in log_plan::stale_buckets(&rows, head.epoch) {
                let key = binds::partition(room, epoch, bucket);
                ops.push(
                    async move {
                        c.exec(&c.st.delete_message_partition, key).await?;
                        c.exec(&c.st.delete_bucket, key).await
                    }
                    .boxed_local(),
                );
            }
            all(ops).await?;

            let epoch = head.epoch;
            let buckets: Vec<BucketInfo> = rows.iter().filter(|(e, _)| *e == epoch).map(|(_, b)| *b).collect();
            let lower = head.trimmed_through;
            let mut cut = log_plan::count_cut(head.last_offset, retention.max_messages);
            if let Some(max_age) = retention.max_age {
                let age_ms = u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX);
                let cutoff = now_ms.saturating_sub(age_ms);
                let plan = log_plan::age_plan(&buckets, lower, cutoff, bucket_ms);
                cut = cut.max(plan.cut);
                if let Some(bucket) = plan.straddling {
                    let mut scan = AgeScan::new(cutoff);
                    self.scan_offsets(room, epoch, bucket, lower.max(cut), u64::MAX, |r| scan.feed(r))
                        .await?;
                    cut = cut.max(scan.cut.unwrap_or(0));
                }
            }
            let cut = cut.min(head.last_offset);
            if cut <= lower {
                return Ok(0);
            }
            // Record the new lower bound first: should a delete fail, reads
            // already skip what it would have removed. Its timestamp is its
            // value: it only ever rises.
            let values = binds::head_offset(log_plan::rising_timestamp(cut), cut, room, epoch);
            c.exec(&c.st.head_trim, values).await?;

            let removals = log_plan::removal_plan(&buckets, lower, cut, now_ms, bucket_ms);
            let counts = all_values(
                removals
                    .into_iter()
                    .map(|r| self.remove(room, epoch, r, lower, cut).boxed_local())
                    .collect(),
            )
            .await?;
            Ok(counts.into_iter().sum())
        })
    }

    fn rooms(&self, after: Option<&str>, limit: usize) -> StorageResult<Vec<Arc<str>>> {
        let names = self.client.run(list_names(&self.client, KIND_ROOM, after, limit))?;
        Ok(names.into_iter().map(Arc::from).collect())
    }
}

/// Names of `kind` greater than `after` (None: from the first), in order,
/// at most `limit`: every shard of the index read, then merged.
pub(crate) async fn list_names(
    c: &Client,
    kind: &str,
    after: Option<&str>,
    limit: usize,
) -> StorageResult<Vec<String>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let (st, bound) = match after {
        Some(a) => (&c.st.index_list_after, a),
        None => (&c.st.index_list_from, ""),
    };
    let shards = all_values(
        (0..INDEX_SHARDS)
            .map(|shard| {
                async move {
                    let rows: Vec<NameRow> = c.rows(st, binds::index_list(kind, shard, bound, limit), limit).await?;
                    Ok(rows.into_iter().map(|(n,)| n).collect::<Vec<_>>())
                }
                .boxed_local()
            })
            .collect(),
    )
    .await?;
    Ok(super::util::merge_listings(shards, limit))
}
