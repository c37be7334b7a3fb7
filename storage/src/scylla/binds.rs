//! The values bound to each statement and the rows each query returns, as
//! Rust types. Kept apart from the I/O so a test can check every one of
//! them against the column types of `schemas/cql` with the driver's own
//! serialization and row type checks, no cluster needed.

use bytes::Bytes;
use herald_protocol::owner::Stored;
use scylla::value::MaybeUnset;

use super::event_plan::RollupWrite;
use super::util::{bits, bound_i64, limit_i32, shard_of};
use crate::{AnalyticsEvent, NotificationRecord};

// --- rows -----------------------------------------------------------------

/// `SELECT_HEAD`: `(current_epoch, epoch, last_offset, trimmed_through)`.
pub(crate) type HeadRow = (Option<i64>, Option<i64>, Option<i64>, Option<i64>);
/// `SELECT_BUCKETS`, `SELECT_ALL_BUCKETS`: `(epoch, bucket, first_offset, last_offset)`.
pub(crate) type BucketRow = (i64, i64, Option<i64>, Option<i64>);
/// `SELECT_MESSAGES_*`: `(msg_offset, publisher, timestamp_ms, content_type, payload)`.
pub(crate) type MessageRow = (i64, Option<String>, Option<i64>, Option<String>, Option<Bytes>);
/// `SELECT_OFFSETS_ASC`: `(msg_offset, timestamp_ms)`.
pub(crate) type OffsetRow = (i64, Option<i64>);
/// `INDEX_LIST_*`: `(name,)`.
pub(crate) type NameRow = (String,);
/// `NOTIF_PAGE`: `(id, kind, title, body, data, created_ms, is_read)`.
pub(crate) type NotificationRow = (
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<Bytes>,
    Option<i64>,
    Option<bool>,
);
/// `NOTIF_FLAGS_*`: `(id, is_read, created_ms)`.
pub(crate) type FlagsRow = (i64, Option<bool>, Option<i64>);
/// `NOTIF_NEWEST`: `(id,)`; `WATERMARK_GET`: `(read_through,)`.
pub(crate) type IdRow = (i64,);
/// `NOTIF_TRIM_SCAN`: `(id, created_ms)`.
pub(crate) type TrimScanRow = (i64, Option<i64>);
/// `EVENT_DAYS`: `(day, raw)`.
pub(crate) type DayRow = (i64, Option<bool>);
/// `EVENT_SELECT`: `(timestamp_ms, event_value, tags)`.
pub(crate) type EventRow = (i64, Option<f64>, Option<Vec<(String, String)>>);
/// `EVENT_SCAN_BEFORE`: `(timestamp_ms,)`.
pub(crate) type EventTimeRow = (i64,);
/// `ROLLUP_SELECT`: `(minute_ms, event_count, value_sum, value_min, value_max)`.
pub(crate) type RollupRow = (i64, Option<i64>, Option<f64>, Option<f64>, Option<f64>);

// --- room log -------------------------------------------------------------

/// `INSERT_MESSAGE`.
#[allow(clippy::type_complexity)]
pub(crate) fn insert_message<'a>(
    room: &'a str,
    epoch: u64,
    bucket: u64,
    m: &'a Stored,
    ttl: i32,
) -> (&'a str, i64, i64, i64, &'a str, i64, Option<&'a str>, &'a Bytes, i32) {
    (
        room,
        bits(epoch),
        bound_i64(bucket),
        bound_i64(m.offset),
        &m.publisher,
        bits(m.timestamp_ms),
        m.content_type.as_deref(),
        &m.payload,
        ttl,
    )
}

/// `BUCKET_FIRST`, `BUCKET_LAST`: TTL, write timestamp, offset, key.
pub(crate) fn bucket_bound(
    ttl: i32,
    timestamp: i64,
    offset: u64,
    room: &str,
    epoch: u64,
    bucket: u64,
) -> (i32, i64, i64, &str, i64, i64) {
    (ttl, timestamp, bound_i64(offset), room, bits(epoch), bound_i64(bucket))
}

/// `HEAD_EPOCH`.
pub(crate) fn head_epoch(timestamp: i64, epoch: u64, room: &str) -> (i64, i64, &str) {
    (timestamp, bits(epoch), room)
}

/// `HEAD_LAST`, `HEAD_TRIM`: write timestamp, offset, room, epoch.
pub(crate) fn head_offset(timestamp: i64, offset: u64, room: &str, epoch: u64) -> (i64, i64, &str, i64) {
    (timestamp, bound_i64(offset), room, bits(epoch))
}

/// `SELECT_HEAD`, `SELECT_ALL_BUCKETS`, and every statement keyed by one
/// name (`NOTIF_NEWEST`, `NOTIF_TRIM_SCAN`, `WATERMARK_GET`).
pub(crate) fn name(name: &str) -> (&str,) {
    (name,)
}

/// `SELECT_BUCKETS`, `DELETE_HEAD_EPOCH`.
pub(crate) fn room_epoch(room: &str, epoch: u64) -> (&str, i64) {
    (room, bits(epoch))
}

/// `DELETE_MESSAGE_PARTITION`, `DELETE_BUCKET`.
pub(crate) fn partition(room: &str, epoch: u64, bucket: u64) -> (&str, i64, i64) {
    (room, bits(epoch), bound_i64(bucket))
}

/// `SELECT_MESSAGES_*`: offsets `after < offset < before`, at most `limit`.
pub(crate) fn messages(
    room: &str,
    epoch: u64,
    bucket: u64,
    after: u64,
    before: u64,
    limit: usize,
) -> (&str, i64, i64, i64, i64, i32) {
    (
        room,
        bits(epoch),
        bound_i64(bucket),
        bound_i64(after),
        bound_i64(before),
        limit_i32(limit),
    )
}

/// `SELECT_OFFSETS_ASC`: offsets `after < offset < before`.
pub(crate) fn offsets(room: &str, epoch: u64, bucket: u64, after: u64, before: u64) -> (&str, i64, i64, i64, i64) {
    (
        room,
        bits(epoch),
        bound_i64(bucket),
        bound_i64(after),
        bound_i64(before),
    )
}

/// `DELETE_MESSAGES_THROUGH`.
pub(crate) fn messages_through(room: &str, epoch: u64, bucket: u64, through: u64) -> (&str, i64, i64, i64) {
    (room, bits(epoch), bound_i64(bucket), bound_i64(through))
}

// --- name index -----------------------------------------------------------

/// `INDEX_UPSERT`, `INDEX_DELETE`.
pub(crate) fn index_entry<'a>(kind: &'a str, name: &'a str) -> (&'a str, i32, &'a str) {
    (kind, shard_of(name), name)
}

/// `INDEX_LIST_AFTER`, `INDEX_LIST_FROM`.
pub(crate) fn index_list<'a>(kind: &'a str, shard: i32, bound: &'a str, limit: usize) -> (&'a str, i32, &'a str, i32) {
    (kind, shard, bound, limit_i32(limit))
}

// --- notifications --------------------------------------------------------

/// `NOTIF_INSERT`. An unread record leaves `is_read` unset: a retried
/// append keeps a read mark made since.
#[allow(clippy::type_complexity)]
pub(crate) fn notification<'a>(
    user: &'a str,
    id: i64,
    r: &'a NotificationRecord,
) -> (
    &'a str,
    i64,
    &'a str,
    &'a str,
    &'a str,
    &'a Bytes,
    i64,
    MaybeUnset<bool>,
) {
    let read = if r.read {
        MaybeUnset::Set(true)
    } else {
        MaybeUnset::Unset
    };
    (user, id, &r.kind, &r.title, &r.body, &r.data, bits(r.created_ms), read)
}

/// `NOTIF_PAGE`, `NOTIF_FLAGS_RANGE`: ids `lower < id < upper` (page) or
/// `lower < id <= upper` (flags); -1 as `lower` means no bound.
pub(crate) fn id_range(user: &str, lower: i64, upper: i64) -> (&str, i64, i64) {
    (user, lower, upper)
}

/// `NOTIF_FLAGS_IDS`.
pub(crate) fn ids<'a>(user: &'a str, ids: &'a Vec<i64>) -> (&'a str, &'a Vec<i64>) {
    (user, ids)
}

/// `NOTIF_MARK`, `NOTIF_DELETE_ONE`, `NOTIF_DELETE_THROUGH`,
/// `WATERMARK_ADD`, `WATERMARK_PRUNE`.
pub(crate) fn user_id(user: &str, id: u64) -> (&str, i64) {
    (user, bound_i64(id))
}

// --- events ---------------------------------------------------------------

/// `EVENT_INSERT`.
#[allow(clippy::type_complexity)]
pub(crate) fn event(
    e: &AnalyticsEvent,
    day: u64,
    writer: i64,
    seq: u64,
) -> (&str, i64, i64, i64, i64, f64, &Vec<(String, String)>) {
    (
        &e.name,
        bound_i64(day),
        bound_i64(e.timestamp_ms),
        writer,
        bits(seq),
        e.value,
        &e.tags,
    )
}

/// `EVENT_DAY_RAW`, `EVENT_DAY_TRIMMED`.
pub(crate) fn event_day(name: &str, day: u64) -> (&str, i64) {
    (name, bound_i64(day))
}

/// `EVENT_DAYS`: days `first..=last`.
pub(crate) fn event_days(name: &str, first: u64, last: u64) -> (&str, i64, i64) {
    (name, bound_i64(first), bound_i64(last))
}

/// `EVENT_SELECT`: `from <= timestamp < to`, at most `limit`.
pub(crate) fn events(name: &str, day: u64, from_ms: u64, to_ms: u64, limit: usize) -> (&str, i64, i64, i64, i32) {
    (
        name,
        bound_i64(day),
        bound_i64(from_ms),
        bound_i64(to_ms),
        limit_i32(limit),
    )
}

/// `EVENT_SCAN_BEFORE`, `EVENT_DELETE_BEFORE`.
pub(crate) fn events_before(name: &str, day: u64, before_ms: u64) -> (&str, i64, i64) {
    (name, bound_i64(day), bound_i64(before_ms))
}

/// `ROLLUP_UPSERT`.
#[allow(clippy::type_complexity)]
pub(crate) fn rollup(timestamp: i64, w: &RollupWrite) -> (i64, i64, f64, f64, f64, &str, i64, i64, i64) {
    let r = &w.rollup;
    (
        timestamp,
        i64::try_from(r.count).unwrap_or(i64::MAX),
        r.sum,
        r.min,
        r.max,
        &w.name,
        bound_i64(super::event_plan::day_of(r.minute_ms)),
        bound_i64(r.minute_ms),
        w.writer,
    )
}

/// `ROLLUP_SELECT`: minutes `from <= minute < to` of one day.
pub(crate) fn rollups(name: &str, day: u64, from_ms: u64, to_ms: u64) -> (&str, i64, i64, i64) {
    (name, bound_i64(day), bound_i64(from_ms), bound_i64(to_ms))
}

/// `MIGRATION_DONE`.
pub(crate) fn migration(name: &str, applied_ms: i64) -> (&str, i64) {
    (name, applied_ms)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use scylla::deserialize::row::DeserializeRow;
    use scylla::frame::response::result::{CollectionType, ColumnSpec, ColumnType, NativeType, TableSpec};
    use scylla::serialize::row::{RowSerializationContext, SerializeRow};
    use scylla::serialize::writers::RowWriter;

    use super::super::cql;
    use super::*;
    use crate::Rollup;

    /// table -> column -> type, from the schema files.
    fn column_types() -> BTreeMap<String, BTreeMap<String, ColumnType<'static>>> {
        cql::schema::tables()
            .into_iter()
            .map(|(name, t)| {
                (
                    name,
                    t.columns.iter().map(|(c, typ)| (c.clone(), cql_type(typ))).collect(),
                )
            })
            .collect()
    }

    fn cql_type(t: &str) -> ColumnType<'static> {
        match t {
            "text" => ColumnType::Native(NativeType::Text),
            "bigint" => ColumnType::Native(NativeType::BigInt),
            "int" => ColumnType::Native(NativeType::Int),
            "blob" => ColumnType::Native(NativeType::Blob),
            "boolean" => ColumnType::Native(NativeType::Boolean),
            "double" => ColumnType::Native(NativeType::Double),
            "list<frozen<tuple<text, text>>>" => ColumnType::Collection {
                frozen: false,
                typ: CollectionType::List(Box::new(ColumnType::Tuple(vec![
                    ColumnType::Native(NativeType::Text),
                    ColumnType::Native(NativeType::Text),
                ]))),
            },
            other => panic!("add the CQL type {other:?} to this test"),
        }
    }

    fn tokens(stmt: &str) -> Vec<String> {
        let spaced = stmt
            .replace('(', " ( ")
            .replace(')', " ) ")
            .replace(',', " , ")
            .replace("<=", " <= ")
            .replace(">=", " >= ");
        let mut out: Vec<String> = Vec::new();
        for t in spaced.split_whitespace() {
            // Split lone = < > not already part of <= >=.
            if t.len() > 1 && (t.ends_with('=') || t.ends_with('<') || t.ends_with('>')) && !t.starts_with(['<', '>']) {
                out.push(t[..t.len() - 1].to_owned());
                out.push(t[t.len() - 1..].to_owned());
            } else {
                out.push(t.to_owned());
            }
        }
        out
    }

    fn table_of(stmt: &str) -> String {
        let t = tokens(stmt);
        let after = |kw: &str| t.iter().position(|w| w == kw).map(|i| t[i + 1].clone());
        after("INTO")
            .or_else(|| after("FROM"))
            .or_else(|| after("UPDATE"))
            .unwrap()
    }

    /// The type of each `?` of a statement, from the schema.
    fn bind_types(stmt: &str) -> Vec<(String, ColumnType<'static>)> {
        let tables = column_types();
        let table = table_of(stmt);
        let columns = &tables[&table];
        let t = tokens(stmt);
        let mut out = Vec::new();
        if t[0] == "INSERT" {
            let open = t.iter().position(|w| w == "(").unwrap();
            let close = t.iter().position(|w| w == ")").unwrap();
            let names: Vec<&String> = t[open + 1..close].iter().filter(|w| *w != ",").collect();
            for n in &names {
                out.push(((*n).clone(), columns[n.as_str()].clone()));
            }
            if t.iter().any(|w| w == "TTL") {
                out.push(("[ttl]".to_owned(), ColumnType::Native(NativeType::Int)));
            }
            return out;
        }
        for (i, w) in t.iter().enumerate() {
            if w != "?" {
                continue;
            }
            let prev = t[i - 1].as_str();
            let entry = match prev {
                "TTL" | "LIMIT" => (prev.to_owned(), ColumnType::Native(NativeType::Int)),
                "TIMESTAMP" => (prev.to_owned(), ColumnType::Native(NativeType::BigInt)),
                "IN" => {
                    let col = &t[i - 2];
                    let elem = columns[col.as_str()].clone();
                    (
                        col.clone(),
                        ColumnType::Collection {
                            frozen: false,
                            typ: CollectionType::List(Box::new(elem)),
                        },
                    )
                }
                "=" | "<" | ">" | "<=" | ">=" => {
                    let col = &t[i - 2];
                    let typ = columns
                        .get(col.as_str())
                        .unwrap_or_else(|| panic!("{stmt}: {col}"))
                        .clone();
                    (col.clone(), typ)
                }
                other => panic!("{stmt}: a ? after {other:?}"),
            };
            out.push(entry);
        }
        out
    }

    /// The type of each selected column, from the schema.
    fn result_types(stmt: &str) -> Vec<(String, ColumnType<'static>)> {
        let tables = column_types();
        let columns = &tables[&table_of(stmt)];
        let t = tokens(stmt);
        let from = t.iter().position(|w| w == "FROM").unwrap();
        t[1..from]
            .iter()
            .filter(|w| *w != ",")
            .map(|c| (c.clone(), columns[c.as_str()].clone()))
            .collect()
    }

    fn specs(stmt: &str, typed: Vec<(String, ColumnType<'static>)>) -> Vec<ColumnSpec<'static>> {
        let table = TableSpec::owned("herald".to_owned(), table_of(stmt));
        typed
            .into_iter()
            .map(|(name, typ)| ColumnSpec::owned(name, typ, table.clone()))
            .collect()
    }

    #[track_caller]
    fn check_binds(stmt: &str, values: &dyn SerializeRow) {
        let specs = specs(stmt, bind_types(stmt));
        let ctx = RowSerializationContext::from_specs(&specs);
        let mut buf = Vec::new();
        let mut writer = RowWriter::new(&mut buf);
        values
            .serialize(&ctx, &mut writer)
            .unwrap_or_else(|e| panic!("{stmt}: {e}"));
        assert_eq!(writer.value_count(), specs.len(), "{stmt}: one value per ?");
    }

    #[track_caller]
    fn check_row<R: for<'f, 'm> DeserializeRow<'f, 'm>>(stmt: &str) {
        let specs = specs(stmt, result_types(stmt));
        R::type_check(&specs).unwrap_or_else(|e| panic!("{stmt}: {e}"));
    }

    fn stored() -> Stored {
        Stored {
            offset: 7,
            publisher: Arc::from("ann"),
            timestamp_ms: u64::MAX,
            payload: Bytes::from_static(b"x"),
            content_type: None,
        }
    }

    #[test]
    fn room_log_binds_match_the_schema() {
        let m = stored();
        check_binds(cql::INSERT_MESSAGE, &insert_message("r", u64::MAX, 3, &m, 0));
        check_binds(cql::BUCKET_FIRST, &bucket_bound(10, 5, 7, "r", 1, 3));
        check_binds(cql::BUCKET_LAST, &bucket_bound(10, 5, 7, "r", 1, 3));
        check_binds(cql::HEAD_EPOCH, &head_epoch(5, 1, "r"));
        check_binds(cql::HEAD_LAST, &head_offset(5, 7, "r", 1));
        check_binds(cql::HEAD_TRIM, &head_offset(5, 7, "r", 1));
        check_binds(cql::SELECT_HEAD, &name("r"));
        check_binds(cql::SELECT_BUCKETS, &room_epoch("r", 1));
        check_binds(cql::SELECT_ALL_BUCKETS, &name("r"));
        check_binds(cql::SELECT_MESSAGES_DESC, &messages("r", 1, 3, 0, u64::MAX, 10));
        check_binds(cql::SELECT_MESSAGES_ASC, &messages("r", 1, 3, 0, u64::MAX, 10));
        check_binds(cql::SELECT_OFFSETS_ASC, &offsets("r", 1, 3, 0, 9));
        check_binds(cql::DELETE_MESSAGES_THROUGH, &messages_through("r", 1, 3, 9));
        check_binds(cql::DELETE_MESSAGE_PARTITION, &partition("r", 1, 3));
        check_binds(cql::DELETE_BUCKET, &partition("r", 1, 3));
        check_binds(cql::DELETE_HEAD_EPOCH, &room_epoch("r", 1));
        check_binds(cql::INDEX_UPSERT, &index_entry("room", "r"));
        check_binds(cql::INDEX_DELETE, &index_entry("room", "r"));
        check_binds(cql::INDEX_LIST_AFTER, &index_list("room", 3, "a", 10));
        check_binds(cql::INDEX_LIST_FROM, &index_list("room", 3, "", 10));
        check_binds(cql::MIGRATION_DONE, &migration("001_init.cql", 5));
    }

    #[test]
    fn notification_binds_match_the_schema() {
        let mut r = NotificationRecord {
            id: 5,
            user: Arc::from("u"),
            kind: "k".into(),
            title: "t".into(),
            body: "b".into(),
            data: Bytes::new(),
            created_ms: u64::MAX,
            read: false,
        };
        check_binds(cql::NOTIF_INSERT, &notification("u", 5, &r));
        r.read = true;
        check_binds(cql::NOTIF_INSERT, &notification("u", 5, &r));
        check_binds(cql::NOTIF_PAGE, &id_range("u", -1, i64::MAX));
        check_binds(cql::NOTIF_FLAGS_RANGE, &id_range("u", 0, 9));
        let list = vec![1, 2];
        check_binds(cql::NOTIF_FLAGS_IDS, &ids("u", &list));
        check_binds(cql::NOTIF_MARK, &user_id("u", 5));
        check_binds(cql::NOTIF_NEWEST, &name("u"));
        check_binds(cql::NOTIF_TRIM_SCAN, &name("u"));
        check_binds(cql::NOTIF_DELETE_THROUGH, &user_id("u", 5));
        check_binds(cql::NOTIF_DELETE_ONE, &user_id("u", 5));
        check_binds(cql::WATERMARK_GET, &name("u"));
        check_binds(cql::WATERMARK_ADD, &user_id("u", 5));
        check_binds(cql::WATERMARK_PRUNE, &user_id("u", 5));
    }

    #[test]
    fn event_binds_match_the_schema() {
        let e = AnalyticsEvent {
            name: Arc::from("e"),
            value: 1.5,
            tags: vec![("k".into(), "v".into())],
            timestamp_ms: 5,
        };
        check_binds(cql::EVENT_INSERT, &event(&e, 0, -3, u64::MAX));
        check_binds(cql::EVENT_DAY_RAW, &event_day("e", 1));
        check_binds(cql::EVENT_DAY_TRIMMED, &event_day("e", 1));
        check_binds(cql::EVENT_DAYS, &event_days("e", 0, 9));
        check_binds(cql::EVENT_SELECT, &events("e", 1, 0, u64::MAX, 10));
        check_binds(cql::EVENT_SCAN_BEFORE, &events_before("e", 1, 5));
        check_binds(cql::EVENT_DELETE_BEFORE, &events_before("e", 1, u64::MAX));
        let w = RollupWrite {
            name: Arc::from("e"),
            writer: 9,
            rollup: Rollup {
                minute_ms: 60_000,
                count: 2,
                sum: 3.0,
                min: 1.0,
                max: 2.0,
            },
        };
        check_binds(cql::ROLLUP_UPSERT, &rollup(5, &w));
        check_binds(cql::ROLLUP_SELECT, &rollups("e", 0, 0, 60_000));
    }

    #[test]
    fn rows_match_the_schema() {
        check_row::<HeadRow>(cql::SELECT_HEAD);
        check_row::<BucketRow>(cql::SELECT_BUCKETS);
        check_row::<BucketRow>(cql::SELECT_ALL_BUCKETS);
        check_row::<MessageRow>(cql::SELECT_MESSAGES_DESC);
        check_row::<MessageRow>(cql::SELECT_MESSAGES_ASC);
        check_row::<OffsetRow>(cql::SELECT_OFFSETS_ASC);
        check_row::<NameRow>(cql::INDEX_LIST_AFTER);
        check_row::<NameRow>(cql::INDEX_LIST_FROM);
        check_row::<NotificationRow>(cql::NOTIF_PAGE);
        check_row::<FlagsRow>(cql::NOTIF_FLAGS_RANGE);
        check_row::<FlagsRow>(cql::NOTIF_FLAGS_IDS);
        check_row::<IdRow>(cql::NOTIF_NEWEST);
        check_row::<IdRow>(cql::WATERMARK_GET);
        check_row::<TrimScanRow>(cql::NOTIF_TRIM_SCAN);
        check_row::<DayRow>(cql::EVENT_DAYS);
        check_row::<EventRow>(cql::EVENT_SELECT);
        check_row::<EventTimeRow>(cql::EVENT_SCAN_BEFORE);
        check_row::<RollupRow>(cql::ROLLUP_SELECT);
    }

    #[test]
    fn every_statement_is_checked() {
        // A statement added to cql::ALL without a check here fails this.
        let checked = [
            cql::INSERT_MESSAGE,
            cql::BUCKET_FIRST,
            cql::BUCKET_LAST,
            cql::HEAD_EPOCH,
            cql::HEAD_LAST,
            cql::HEAD_TRIM,
            cql::SELECT_HEAD,
            cql::DELETE_HEAD_EPOCH,
            cql::SELECT_BUCKETS,
            cql::SELECT_ALL_BUCKETS,
            cql::SELECT_MESSAGES_DESC,
            cql::SELECT_MESSAGES_ASC,
            cql::SELECT_OFFSETS_ASC,
            cql::DELETE_MESSAGES_THROUGH,
            cql::DELETE_MESSAGE_PARTITION,
            cql::DELETE_BUCKET,
            cql::INDEX_UPSERT,
            cql::INDEX_DELETE,
            cql::INDEX_LIST_AFTER,
            cql::INDEX_LIST_FROM,
            cql::NOTIF_INSERT,
            cql::NOTIF_PAGE,
            cql::NOTIF_FLAGS_RANGE,
            cql::NOTIF_FLAGS_IDS,
            cql::NOTIF_MARK,
            cql::NOTIF_NEWEST,
            cql::NOTIF_TRIM_SCAN,
            cql::NOTIF_DELETE_THROUGH,
            cql::NOTIF_DELETE_ONE,
            cql::WATERMARK_GET,
            cql::WATERMARK_ADD,
            cql::WATERMARK_PRUNE,
            cql::EVENT_INSERT,
            cql::EVENT_DAY_RAW,
            cql::EVENT_DAY_TRIMMED,
            cql::EVENT_DAYS,
            cql::EVENT_SELECT,
            cql::EVENT_SCAN_BEFORE,
            cql::EVENT_DELETE_BEFORE,
            cql::ROLLUP_UPSERT,
            cql::ROLLUP_SELECT,
            cql::MIGRATION_DONE,
        ];
        for stmt in cql::ALL {
            assert!(checked.contains(stmt), "no bind check for {stmt}");
        }
        assert_eq!(checked.len(), cql::ALL.len());
    }

    #[test]
    fn the_type_checks_catch_mismatches() {
        // The harness itself: a wrong Rust type is refused.
        let wrong = ("r", 1i32);
        let specs = specs(cql::SELECT_BUCKETS, bind_types(cql::SELECT_BUCKETS));
        let ctx = RowSerializationContext::from_specs(&specs);
        let mut buf = Vec::new();
        assert!(
            wrong.serialize(&ctx, &mut RowWriter::new(&mut buf)).is_err(),
            "int for a bigint"
        );
        let specs = specs_of_head();
        assert!(
            <(i64, i64, i64, bool)>::type_check(&specs).is_err(),
            "bool for a bigint"
        );
    }

    fn specs_of_head() -> Vec<ColumnSpec<'static>> {
        specs(cql::SELECT_HEAD, result_types(cql::SELECT_HEAD))
    }
}
