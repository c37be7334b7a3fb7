//! `NotificationStore` on ScyllaDB: the queries `notif_plan` asks for.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::FutureExt;

use super::binds::{self, FlagsRow, IdRow, NotificationRow as Row, TrimScanRow};
use super::client::{Client, Op, all};
use super::log_plan::{BATCH_MAX_BYTES, BATCH_MAX_STATEMENTS, chunk_ranges};
use super::notif_plan::{self, FlagRow, NotificationRow, PageCollector, UnreadCounter};
use super::room_log::list_names;
use super::util::{KIND_USER, bound_i64, to_u64, unbits};
use crate::{MarkRead, NotificationPage, NotificationRecord, NotificationStore, StorageResult};

/// The notification inboxes of a ScyllaDB cluster.
pub(crate) struct ScyllaNotifications {
    client: Arc<Client>,
}

impl std::fmt::Debug for ScyllaNotifications {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScyllaNotifications")
            .field("client", &self.client)
            .finish()
    }
}

fn flag_row((id, read, created): FlagsRow) -> StorageResult<FlagRow> {
    Ok(FlagRow {
        id: to_u64(id, "notification id")?,
        read: read.unwrap_or(false),
        created_ms: created.map(unbits),
    })
}

fn flag_rows(rows: Vec<FlagsRow>) -> StorageResult<Vec<FlagRow>> {
    rows.into_iter().map(flag_row).collect()
}

fn full_row((id, kind, title, body, data, created, read): Row) -> StorageResult<NotificationRow> {
    Ok(NotificationRow {
        id: to_u64(id, "notification id")?,
        kind,
        title,
        body,
        data,
        created_ms: created.map(unbits),
        read: read.unwrap_or(false),
    })
}

impl ScyllaNotifications {
    pub(crate) fn new(client: Arc<Client>) -> ScyllaNotifications {
        ScyllaNotifications { client }
    }

    /// The user's read watermark (0: none): the highest watermark row.
    async fn watermark(&self, user: &str) -> StorageResult<u64> {
        let c = &*self.client;
        let row: Option<IdRow> = c.row(&c.st.watermark_get, binds::name(user)).await?;
        row.map_or(Ok(0), |(w,)| to_u64(w, "read_through"))
    }

    /// Unread notifications above `watermark`: a scan of the rows above it,
    /// at most `unread_scan_limit` of them.
    async fn count_unread(&self, user: &str, watermark: u64) -> StorageResult<u64> {
        let c = &*self.client;
        let mut counter = UnreadCounter::new(watermark, c.config.unread_scan_limit);
        let values = binds::id_range(user, bound_i64(watermark), i64::MAX);
        c.scan(&c.st.notif_flags_range, values, |rows: Vec<FlagsRow>| {
            Ok(counter.feed(&flag_rows(rows)?))
        })
        .await?;
        Ok(counter.unread)
    }

    /// Marks every stored notification with id <= `id` read by raising the
    /// watermark to the newest of them; returns how many were unread.
    async fn mark_up_to(&self, user: &str, watermark: u64, id: u64) -> StorageResult<u64> {
        let c = &*self.client;
        if id <= watermark {
            return Ok(0);
        }
        let mut counter = UnreadCounter::new(watermark, u64::MAX);
        let values = binds::id_range(user, bound_i64(watermark), bound_i64(id));
        c.scan(&c.st.notif_flags_range, values, |rows: Vec<FlagsRow>| {
            Ok(counter.feed(&flag_rows(rows)?))
        })
        .await?;
        let Some(newest) = counter.newest else {
            return Ok(0);
        };
        // Insert the new watermark row, drop the lower ones: order-free and
        // idempotent, the highest row is the watermark.
        futures_util::future::try_join(
            c.exec(&c.st.watermark_add, binds::user_id(user, newest)),
            c.exec(&c.st.watermark_prune, binds::user_id(user, newest)),
        )
        .await?;
        Ok(counter.unread)
    }
}

impl NotificationStore for ScyllaNotifications {
    fn append(&self, batch: &[NotificationRecord]) -> StorageResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = batch
            .iter()
            .map(notif_plan::check_record)
            .collect::<StorageResult<_>>()?;
        // One partition per user: group, then batch within each.
        let mut by_user: Vec<(&str, Vec<usize>)> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (i, r) in batch.iter().enumerate() {
            let slot = *index.entry(&r.user).or_insert_with(|| {
                by_user.push((&r.user, Vec::new()));
                by_user.len() - 1
            });
            by_user[slot].1.push(i);
        }
        let c = &*self.client;
        c.run(async {
            let mut ops: Vec<Op<'_>> = Vec::new();
            for (user, items) in &by_user {
                let sizes = items
                    .iter()
                    .map(|&i| batch[i].data.len() + batch[i].title.len() + batch[i].body.len() + 64);
                for chunk in chunk_ranges(sizes, BATCH_MAX_STATEMENTS, BATCH_MAX_BYTES) {
                    let values: Vec<_> = items[chunk]
                        .iter()
                        .map(|&i| binds::notification(user, ids[i], &batch[i]))
                        .collect();
                    ops.push(async move { c.batch(&c.st.notif_insert, &values).await }.boxed_local());
                }
                ops.push(
                    c.exec(&c.st.index_upsert, binds::index_entry(KIND_USER, user))
                        .boxed_local(),
                );
            }
            all(ops).await
        })
    }

    fn sync(&self) -> StorageResult<()> {
        Ok(())
    }

    fn page(&self, user: &str, before_id: u64, limit: usize, unread_only: bool) -> StorageResult<NotificationPage> {
        let c = &*self.client;
        c.run(async {
            let watermark = self.watermark(user).await?;
            let lower = if unread_only { bound_i64(watermark) } else { -1 };
            let upper = if before_id == 0 { i64::MAX } else { bound_i64(before_id) };
            let mut collector = PageCollector::new(Arc::from(user), watermark, limit, unread_only);
            let page = c.scan(
                &c.st.notif_page,
                binds::id_range(user, lower, upper),
                |rows: Vec<Row>| {
                    let rows: Vec<NotificationRow> = rows.into_iter().map(full_row).collect::<StorageResult<_>>()?;
                    Ok(collector.feed(rows))
                },
            );
            let ((), unread) = futures_util::future::try_join(page, self.count_unread(user, watermark)).await?;
            Ok(NotificationPage {
                items: collector.items,
                unread,
                has_more: collector.has_more,
            })
        })
    }

    fn mark_read(&self, user: &str, which: MarkRead<'_>) -> StorageResult<u64> {
        let c = &*self.client;
        c.run(async {
            let watermark = self.watermark(user).await?;
            match which {
                MarkRead::Ids(ids) => {
                    let ids: Vec<i64> = notif_plan::ids_to_check(ids, watermark)
                        .into_iter()
                        .map(bound_i64)
                        .collect();
                    if ids.is_empty() {
                        return Ok(0);
                    }
                    let rows: Vec<FlagsRow> = c
                        .rows(&c.st.notif_flags_ids, binds::ids(user, &ids), usize::MAX)
                        .await?;
                    // Only rows that exist get a flag: an update of a missing
                    // row would create one.
                    let unread = notif_plan::unread_ids(&flag_rows(rows)?, watermark);
                    let ops: Vec<Op<'_>> = unread
                        .iter()
                        .map(|&id| c.exec(&c.st.notif_mark, binds::user_id(user, id)).boxed_local())
                        .collect();
                    all(ops).await?;
                    Ok(unread.len() as u64)
                }
                MarkRead::UpTo(id) => self.mark_up_to(user, watermark, id).await,
                MarkRead::All => {
                    let newest: Option<IdRow> = c.row(&c.st.notif_newest, binds::name(user)).await?;
                    match newest {
                        Some((id,)) => self.mark_up_to(user, watermark, to_u64(id, "notification id")?).await,
                        None => Ok(0),
                    }
                }
            }
        })
    }

    fn unread_count(&self, user: &str) -> StorageResult<u64> {
        self.client.run(async {
            let watermark = self.watermark(user).await?;
            self.count_unread(user, watermark).await
        })
    }

    fn trim(&self, user: &str, max_per_user: u64, min_created_ms: u64) -> StorageResult<u64> {
        let c = &*self.client;
        c.run(async {
            let mut rows: Vec<(u64, Option<u64>)> = Vec::new();
            c.scan(&c.st.notif_trim_scan, binds::name(user), |page: Vec<TrimScanRow>| {
                for (id, created) in page {
                    rows.push((to_u64(id, "notification id")?, created.map(unbits)));
                }
                Ok(true)
            })
            .await?;
            let plan = notif_plan::trim_plan(&rows, max_per_user, min_created_ms);
            let mut ops: Vec<Op<'_>> = plan
                .singles
                .iter()
                .map(|&id| c.exec(&c.st.notif_delete_one, binds::user_id(user, id)).boxed_local())
                .collect();
            if let Some(through) = plan.through {
                ops.push(
                    c.exec(&c.st.notif_delete_through, binds::user_id(user, through))
                        .boxed_local(),
                );
            }
            all(ops).await?;
            if plan.kept == 0 {
                // An empty inbox leaves the listing (an append racing this
                // puts it back with its next append).
                c.exec(&c.st.index_delete, binds::index_entry(KIND_USER, user)).await?;
            }
            Ok(plan.removed)
        })
    }

    fn users(&self, after: Option<&str>, limit: usize) -> StorageResult<Vec<Arc<str>>> {
        let names = self.client.run(list_names(&self.client, KIND_USER, after, limit))?;
        Ok(names.into_iter().map(Arc::from).collect())
    }
}
