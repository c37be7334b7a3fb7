//! `EventStore` on ScyllaDB: the queries `event_plan` asks for.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;

use super::binds::{self, DayRow, EventRow, EventTimeRow, RollupRow};
use super::client::{Client, Op, all, all_values};
use super::event_plan::{self, ROLLUP_CACHE_ENTRIES, RollupCache, RollupWrite};
use super::log_plan::{BATCH_MAX_BYTES, BATCH_MAX_STATEMENTS, chunk_ranges};
use super::room_log::list_names;
use super::util::{KIND_EVENT, mix64, random_u64, to_u64};
use crate::{AnalyticsEvent, EventStore, Rollup, StorageResult};

/// Names listed per page when trim walks every event name.
const NAMES_PAGE: usize = 1000;

/// The analytics events of a ScyllaDB cluster.
pub(crate) struct ScyllaEvents {
    client: Arc<Client>,
    /// This store's writer id: with `seq`, it keys raw events (two events
    /// of one millisecond never collide).
    writer: i64,
    seq: AtomicU64,
    rollups: Mutex<RollupCache>,
}

impl std::fmt::Debug for ScyllaEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScyllaEvents")
            .field("client", &self.client)
            .field("writer", &self.writer)
            .finish_non_exhaustive()
    }
}

impl ScyllaEvents {
    pub(crate) fn new(client: Arc<Client>) -> ScyllaEvents {
        let seed = random_u64();
        ScyllaEvents {
            client,
            writer: i64::from_ne_bytes(mix64(seed).to_ne_bytes()),
            seq: AtomicU64::new(0),
            rollups: Mutex::new(RollupCache::new(seed, ROLLUP_CACHE_ENTRIES)),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, RollupCache> {
        // The cache is consistent between statements: a panic elsewhere
        // while holding the lock leaves nothing half done.
        self.rollups.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The days of `name` in `first..=last` that received events, oldest
    /// first, with their `raw` flag.
    async fn days(&self, name: &str, first: u64, last: u64) -> StorageResult<Vec<(u64, Option<bool>)>> {
        let c = &*self.client;
        let rows: Vec<DayRow> = c
            .rows(&c.st.event_days, binds::event_days(name, first, last), usize::MAX)
            .await?;
        let mut days: Vec<(u64, Option<bool>)> = rows
            .into_iter()
            .map(|(d, raw)| Ok((to_u64(d, "day")?, raw)))
            .collect::<StorageResult<_>>()?;
        days.sort_unstable_by_key(|(d, _)| *d);
        Ok(days)
    }

    async fn write(
        &self,
        batch: &[AnalyticsEvent],
        first_seq: u64,
        rollups: &[RollupWrite],
        ts: i64,
    ) -> StorageResult<()> {
        let c = &*self.client;
        // Raw events, one unlogged batch per (name, day) partition.
        let mut groups: Vec<((&str, u64), Vec<usize>)> = Vec::new();
        let mut index: HashMap<(&str, u64), usize> = HashMap::new();
        for (i, e) in batch.iter().enumerate() {
            let key = (&*e.name, event_plan::day_of(e.timestamp_ms));
            let slot = *index.entry(key).or_insert_with(|| {
                groups.push((key, Vec::new()));
                groups.len() - 1
            });
            groups[slot].1.push(i);
        }
        let mut ops: Vec<Op<'_>> = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        for ((name, day), items) in &groups {
            let sizes = items
                .iter()
                .map(|&i| batch[i].tags.iter().map(|(k, v)| k.len() + v.len() + 8).sum::<usize>() + 64);
            for chunk in chunk_ranges(sizes, BATCH_MAX_STATEMENTS, BATCH_MAX_BYTES) {
                let values: Vec<_> = items[chunk]
                    .iter()
                    .map(|&i| binds::event(&batch[i], *day, self.writer, first_seq.wrapping_add(i as u64)))
                    .collect();
                ops.push(async move { c.batch(&c.st.event_insert, &values).await }.boxed_local());
            }
            ops.push(c.exec(&c.st.event_day_raw, binds::event_day(name, *day)).boxed_local());
            if !names.contains(name) {
                names.push(name);
                ops.push(
                    c.exec(&c.st.index_upsert, binds::index_entry(KIND_EVENT, name))
                        .boxed_local(),
                );
            }
        }
        // Each partial rollup row holds absolute values: rewriting it is
        // idempotent; the timestamp orders this store's rewrites.
        for w in rollups {
            ops.push(c.exec(&c.st.rollup_upsert, binds::rollup(ts, w)).boxed_local());
        }
        all(ops).await
    }

    /// Removes raw events of `name` older than `min_ts`; returns how many.
    async fn trim_name(&self, name: &str, min_ts: u64) -> StorageResult<u64> {
        let c = &*self.client;
        let days = self.days(name, 0, event_plan::day_of(min_ts)).await?;
        let plan = event_plan::day_trim(&days, min_ts);
        let mut work: Vec<(u64, u64, bool)> = plan.whole.iter().map(|&d| (d, u64::MAX, true)).collect();
        if let Some(d) = plan.partial {
            work.push((d, min_ts, false));
        }
        let counts = all_values(
            work.into_iter()
                .map(|(day, before, whole)| {
                    async move {
                        let mut removed = 0u64;
                        let values = binds::events_before(name, day, before);
                        c.scan(&c.st.event_scan_before, values, |rows: Vec<EventTimeRow>| {
                            removed += rows.len() as u64;
                            Ok(true)
                        })
                        .await?;
                        c.exec(&c.st.event_delete_before, values).await?;
                        if whole {
                            c.exec(&c.st.event_day_trimmed, binds::event_day(name, day)).await?;
                        }
                        Ok(removed)
                    }
                    .boxed_local()
                })
                .collect(),
        )
        .await?;
        Ok(counts.into_iter().sum())
    }
}

impl EventStore for ScyllaEvents {
    fn append(&self, batch: &[AnalyticsEvent]) -> StorageResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        batch.iter().try_for_each(event_plan::validate_event)?;
        let first_seq = self.seq.fetch_add(batch.len() as u64, Ordering::Relaxed);
        // Fold and stamp under the lock: a later fold gets a later stamp.
        let (rollups, ts) = {
            let mut cache = self.cache();
            (cache.apply(batch), self.client.clock.next())
        };
        let result = self.client.run(self.write(batch, first_seq, &rollups, ts));
        if result.is_err() {
            // The caller may retry the batch: partials that may not match
            // their durable rows start over.
            self.cache().forget(&rollups);
        }
        result
    }

    fn sync(&self) -> StorageResult<()> {
        Ok(())
    }

    fn events(&self, name: &str, from_ms: u64, to_ms: u64, limit: usize) -> StorageResult<Vec<AnalyticsEvent>> {
        let Some((first, last)) = event_plan::day_span(from_ms, to_ms) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let c = &*self.client;
        let name_arc: Arc<str> = Arc::from(name);
        c.run(async {
            let mut out = Vec::new();
            for (day, raw) in self.days(name, first, last).await? {
                if raw == Some(false) {
                    continue;
                }
                let remaining = limit - out.len();
                let values = binds::events(name, day, from_ms, to_ms, remaining);
                let rows: Vec<EventRow> = c.rows(&c.st.event_select, values, remaining).await?;
                for (ts, value, tags) in rows {
                    out.push(AnalyticsEvent {
                        name: name_arc.clone(),
                        value: value.unwrap_or(0.0),
                        tags: tags.unwrap_or_default(),
                        timestamp_ms: to_u64(ts, "timestamp_ms")?,
                    });
                }
                if out.len() >= limit {
                    break;
                }
            }
            Ok(out)
        })
    }

    fn rollups(&self, name: &str, from_ms: u64, to_ms: u64) -> StorageResult<Vec<Rollup>> {
        let Some((first, last)) = event_plan::day_span(from_ms, to_ms) else {
            return Ok(Vec::new());
        };
        let c = &*self.client;
        c.run(async {
            let days = self.days(name, first, last).await?;
            let per_day = all_values(
                days.into_iter()
                    .map(|(day, _)| {
                        async move {
                            let values = binds::rollups(name, day, from_ms, to_ms);
                            let rows: Vec<RollupRow> = c.rows(&c.st.rollup_select, values, usize::MAX).await?;
                            rows.into_iter()
                                .map(|(minute, count, sum, min, max)| {
                                    Ok(Rollup {
                                        minute_ms: to_u64(minute, "minute_ms")?,
                                        count: to_u64(count.unwrap_or(0), "event_count")?,
                                        sum: sum.unwrap_or(0.0),
                                        min: min.unwrap_or(f64::INFINITY),
                                        max: max.unwrap_or(f64::NEG_INFINITY),
                                    })
                                })
                                .collect::<StorageResult<Vec<Rollup>>>()
                        }
                        .boxed_local()
                    })
                    .collect(),
            )
            .await?;
            Ok(event_plan::fold_rollups(per_day.into_iter().flatten()))
        })
    }

    fn trim(&self, min_timestamp_ms: u64) -> StorageResult<u64> {
        if min_timestamp_ms == 0 {
            return Ok(0);
        }
        let c = &*self.client;
        c.run(async {
            let mut removed = 0u64;
            let mut after: Option<String> = None;
            loop {
                let names = list_names(c, KIND_EVENT, after.as_deref(), NAMES_PAGE).await?;
                for name in &names {
                    removed = removed.saturating_add(self.trim_name(name, min_timestamp_ms).await?);
                }
                if names.len() < NAMES_PAGE {
                    return Ok(removed);
                }
                after = names.last().cloned();
            }
        })
    }
}
