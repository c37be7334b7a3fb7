//! Every CQL statement of the backend, the embedded schema files, and the
//! pure helpers `migrate` uses (keyspace statement, splitting a file).
//!
//! Conventions the schema-consistency test relies on: keywords in upper
//! case, table and column names in lower case.

use crate::{StorageError, StorageResult};

/// The schema files of `schemas/cql`, in the order `migrate` applies them.
/// A test checks that this list holds every file of that directory.
pub const MIGRATIONS: &[(&str, &str)] = &[("001_init.cql", include_str!("../../../schemas/cql/001_init.cql"))];

// --- room log -------------------------------------------------------------

pub(crate) const INSERT_MESSAGE: &str = "INSERT INTO messages (room, epoch, bucket, msg_offset, publisher, \
     timestamp_ms, content_type, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?";
pub(crate) const BUCKET_FIRST: &str =
    "UPDATE room_buckets USING TTL ? AND TIMESTAMP ? SET first_offset = ? WHERE room = ? AND epoch = ? AND bucket = ?";
pub(crate) const BUCKET_LAST: &str =
    "UPDATE room_buckets USING TTL ? AND TIMESTAMP ? SET last_offset = ? WHERE room = ? AND epoch = ? AND bucket = ?";
pub(crate) const HEAD_EPOCH: &str = "UPDATE room_heads USING TIMESTAMP ? SET current_epoch = ? WHERE room = ?";
pub(crate) const HEAD_LAST: &str =
    "UPDATE room_heads USING TIMESTAMP ? SET last_offset = ? WHERE room = ? AND epoch = ?";
pub(crate) const HEAD_TRIM: &str =
    "UPDATE room_heads USING TIMESTAMP ? SET trimmed_through = ? WHERE room = ? AND epoch = ?";
pub(crate) const SELECT_HEAD: &str =
    "SELECT current_epoch, epoch, last_offset, trimmed_through FROM room_heads WHERE room = ?";
pub(crate) const DELETE_HEAD_EPOCH: &str = "DELETE FROM room_heads WHERE room = ? AND epoch = ?";
pub(crate) const SELECT_BUCKETS: &str =
    "SELECT epoch, bucket, first_offset, last_offset FROM room_buckets WHERE room = ? AND epoch = ?";
pub(crate) const SELECT_ALL_BUCKETS: &str =
    "SELECT epoch, bucket, first_offset, last_offset FROM room_buckets WHERE room = ?";
pub(crate) const SELECT_MESSAGES_DESC: &str = "SELECT msg_offset, publisher, timestamp_ms, content_type, payload \
     FROM messages WHERE room = ? AND epoch = ? AND bucket = ? AND msg_offset > ? AND msg_offset < ? LIMIT ?";
pub(crate) const SELECT_MESSAGES_ASC: &str = "SELECT msg_offset, publisher, timestamp_ms, content_type, payload \
     FROM messages WHERE room = ? AND epoch = ? AND bucket = ? AND msg_offset > ? AND msg_offset < ? \
     ORDER BY msg_offset ASC LIMIT ?";
pub(crate) const SELECT_OFFSETS_ASC: &str = "SELECT msg_offset, timestamp_ms FROM messages \
     WHERE room = ? AND epoch = ? AND bucket = ? AND msg_offset > ? AND msg_offset < ? ORDER BY msg_offset ASC";
pub(crate) const DELETE_MESSAGES_THROUGH: &str =
    "DELETE FROM messages WHERE room = ? AND epoch = ? AND bucket = ? AND msg_offset <= ?";
pub(crate) const DELETE_MESSAGE_PARTITION: &str = "DELETE FROM messages WHERE room = ? AND epoch = ? AND bucket = ?";
/// A normal (current) timestamp: it shadows the bounds, written with
/// timestamps in the past.
pub(crate) const DELETE_BUCKET: &str = "DELETE FROM room_buckets WHERE room = ? AND epoch = ? AND bucket = ?";

// --- name index -----------------------------------------------------------

pub(crate) const INDEX_UPSERT: &str = "INSERT INTO name_index (kind, shard, name) VALUES (?, ?, ?)";
pub(crate) const INDEX_DELETE: &str = "DELETE FROM name_index WHERE kind = ? AND shard = ? AND name = ?";
pub(crate) const INDEX_LIST_AFTER: &str =
    "SELECT name FROM name_index WHERE kind = ? AND shard = ? AND name > ? LIMIT ?";
pub(crate) const INDEX_LIST_FROM: &str =
    "SELECT name FROM name_index WHERE kind = ? AND shard = ? AND name >= ? LIMIT ?";

// --- notifications --------------------------------------------------------

pub(crate) const NOTIF_INSERT: &str = "INSERT INTO notifications (user_id, id, kind, title, body, data, \
     created_ms, is_read) VALUES (?, ?, ?, ?, ?, ?, ?, ?)";
pub(crate) const NOTIF_PAGE: &str = "SELECT id, kind, title, body, data, created_ms, is_read FROM notifications \
     WHERE user_id = ? AND id > ? AND id < ?";
pub(crate) const NOTIF_FLAGS_RANGE: &str =
    "SELECT id, is_read, created_ms FROM notifications WHERE user_id = ? AND id > ? AND id <= ?";
pub(crate) const NOTIF_FLAGS_IDS: &str =
    "SELECT id, is_read, created_ms FROM notifications WHERE user_id = ? AND id IN ?";
pub(crate) const NOTIF_MARK: &str = "UPDATE notifications SET is_read = TRUE WHERE user_id = ? AND id = ?";
pub(crate) const NOTIF_NEWEST: &str = "SELECT id FROM notifications WHERE user_id = ? LIMIT 1";
pub(crate) const NOTIF_TRIM_SCAN: &str = "SELECT id, created_ms FROM notifications WHERE user_id = ?";
pub(crate) const NOTIF_DELETE_THROUGH: &str = "DELETE FROM notifications WHERE user_id = ? AND id <= ?";
pub(crate) const NOTIF_DELETE_ONE: &str = "DELETE FROM notifications WHERE user_id = ? AND id = ?";
pub(crate) const WATERMARK_GET: &str = "SELECT read_through FROM notification_watermarks WHERE user_id = ? LIMIT 1";
pub(crate) const WATERMARK_ADD: &str = "INSERT INTO notification_watermarks (user_id, read_through) VALUES (?, ?)";
pub(crate) const WATERMARK_PRUNE: &str = "DELETE FROM notification_watermarks WHERE user_id = ? AND read_through < ?";

// --- events ---------------------------------------------------------------

pub(crate) const EVENT_INSERT: &str = "INSERT INTO events (event_name, day, timestamp_ms, writer, seq, \
     event_value, tags) VALUES (?, ?, ?, ?, ?, ?, ?)";
pub(crate) const EVENT_DAY_RAW: &str = "UPDATE event_days SET raw = TRUE WHERE event_name = ? AND day = ?";
pub(crate) const EVENT_DAY_TRIMMED: &str = "UPDATE event_days SET raw = FALSE WHERE event_name = ? AND day = ?";
pub(crate) const EVENT_DAYS: &str = "SELECT day, raw FROM event_days WHERE event_name = ? AND day >= ? AND day <= ?";
pub(crate) const EVENT_SELECT: &str = "SELECT timestamp_ms, event_value, tags FROM events \
     WHERE event_name = ? AND day = ? AND timestamp_ms >= ? AND timestamp_ms < ? LIMIT ?";
pub(crate) const EVENT_SCAN_BEFORE: &str =
    "SELECT timestamp_ms FROM events WHERE event_name = ? AND day = ? AND timestamp_ms < ?";
pub(crate) const EVENT_DELETE_BEFORE: &str = "DELETE FROM events WHERE event_name = ? AND day = ? AND timestamp_ms < ?";
pub(crate) const ROLLUP_UPSERT: &str = "UPDATE event_rollups USING TIMESTAMP ? SET event_count = ?, \
     value_sum = ?, value_min = ?, value_max = ? WHERE event_name = ? AND day = ? AND minute_ms = ? AND writer = ?";
pub(crate) const ROLLUP_SELECT: &str = "SELECT minute_ms, event_count, value_sum, value_min, value_max \
     FROM event_rollups WHERE event_name = ? AND day = ? AND minute_ms >= ? AND minute_ms < ?";

// --- migrations -----------------------------------------------------------

pub(crate) const MIGRATION_DONE: &str = "INSERT INTO schema_migrations (name, applied_ms) VALUES (?, ?)";

/// Every prepared statement (the schema test checks each against the
/// schema; `connect` prepares each once).
#[cfg(test)]
pub(crate) const ALL: &[&str] = &[
    INSERT_MESSAGE,
    BUCKET_FIRST,
    BUCKET_LAST,
    HEAD_EPOCH,
    HEAD_LAST,
    HEAD_TRIM,
    SELECT_HEAD,
    DELETE_HEAD_EPOCH,
    SELECT_BUCKETS,
    SELECT_ALL_BUCKETS,
    SELECT_MESSAGES_DESC,
    SELECT_MESSAGES_ASC,
    SELECT_OFFSETS_ASC,
    DELETE_MESSAGES_THROUGH,
    DELETE_MESSAGE_PARTITION,
    DELETE_BUCKET,
    INDEX_UPSERT,
    INDEX_DELETE,
    INDEX_LIST_AFTER,
    INDEX_LIST_FROM,
    NOTIF_INSERT,
    NOTIF_PAGE,
    NOTIF_FLAGS_RANGE,
    NOTIF_FLAGS_IDS,
    NOTIF_MARK,
    NOTIF_NEWEST,
    NOTIF_TRIM_SCAN,
    NOTIF_DELETE_THROUGH,
    NOTIF_DELETE_ONE,
    WATERMARK_GET,
    WATERMARK_ADD,
    WATERMARK_PRUNE,
    EVENT_INSERT,
    EVENT_DAY_RAW,
    EVENT_DAY_TRIMMED,
    EVENT_DAYS,
    EVENT_SELECT,
    EVENT_SCAN_BEFORE,
    EVENT_DELETE_BEFORE,
    ROLLUP_UPSERT,
    ROLLUP_SELECT,
    MIGRATION_DONE,
];

/// `CREATE KEYSPACE IF NOT EXISTS` for `keyspace` with `replication`, a CQL
/// map such as `{'class': 'NetworkTopologyStrategy', 'replication_factor':
/// 3}`. The map is pasted into the statement, so it is checked to be one
/// map literal and nothing more.
pub fn create_keyspace(keyspace: &str, replication: &str) -> StorageResult<String> {
    let keyspace = super::config::parse_keyspace(keyspace)?;
    let map = replication.trim();
    let bad = |why: &str| StorageError::Invalid(format!("replication {replication:?}: {why}"));
    if !(map.starts_with('{') && map.ends_with('}')) {
        return Err(bad(
            "expected a CQL map such as {'class': 'NetworkTopologyStrategy', 'replication_factor': 3}",
        ));
    }
    if !map.contains("'class'") {
        return Err(bad("the map needs a 'class'"));
    }
    // Outside quotes only map punctuation, names and numbers may appear;
    // quotes must balance; nothing may follow the closing brace.
    let mut in_quote = false;
    let mut depth = 0i32;
    for (i, c) in map.char_indices() {
        if c == '\'' {
            in_quote = !in_quote;
            continue;
        }
        if in_quote {
            if c == ';' || c.is_control() {
                return Err(bad("unexpected character inside a quoted string"));
            }
            continue;
        }
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 && i + 1 != map.len() {
                    return Err(bad("text after the map"));
                }
            }
            ':' | ',' | ' ' | '_' | '.' => {}
            c if c.is_ascii_alphanumeric() => {}
            _ => return Err(bad("unexpected character")),
        }
        if depth > 1 {
            return Err(bad("nested maps"));
        }
    }
    if in_quote || depth != 0 {
        return Err(bad("unbalanced quotes or braces"));
    }
    Ok(format!(
        "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {map} AND durable_writes = true"
    ))
}

/// The statements of a schema file: `--` comments removed, split on `;`,
/// blank ones dropped. Schema files hold no `;` or `--` inside strings.
pub fn split_statements(file: &str) -> Vec<String> {
    let without_comments: String = file
        .lines()
        .map(|line| line.split_once("--").map_or(line, |(code, _)| code))
        .collect::<Vec<_>>()
        .join("\n");
    without_comments
        .split(';')
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|s| !s.is_empty())
        .collect()
}

/// The schema files parsed, for tests that check statements against them.
#[cfg(test)]
pub(crate) mod schema {
    use std::collections::{BTreeMap, BTreeSet};

    use super::{MIGRATIONS, split_statements};

    /// One table of the schema.
    #[derive(Debug, Default)]
    pub(crate) struct Table {
        /// Column name -> CQL type, as written.
        pub(crate) columns: BTreeMap<String, String>,
        pub(crate) partition: Vec<String>,
        pub(crate) clustering: Vec<String>,
        pub(crate) statics: BTreeSet<String>,
    }

    /// Splits `text` at commas outside parentheses and angle brackets.
    fn top_level_items(text: &str) -> Vec<&str> {
        let (mut depth, mut start, mut items) = (0, 0, Vec::new());
        for (i, c) in text.char_indices() {
            match c {
                '(' | '<' => depth += 1,
                ')' | '>' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(text[start..i].trim());
                    start = i + 1;
                }
                _ => {}
            }
        }
        items.push(text[start..].trim());
        items
    }

    /// The text inside the parenthesis opening at `open`.
    fn inside_parens(text: &str, open: usize) -> &str {
        let mut depth = 0;
        for (i, c) in text[open..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        return &text[open + 1..open + i];
                    }
                }
                _ => {}
            }
        }
        panic!("unbalanced parentheses in {text}")
    }

    /// Every table of every schema file, by name.
    pub(crate) fn tables() -> BTreeMap<String, Table> {
        let mut tables = BTreeMap::new();
        for (_, file) in MIGRATIONS {
            for stmt in split_statements(file) {
                let Some(rest) = stmt.strip_prefix("CREATE TABLE IF NOT EXISTS ") else {
                    continue;
                };
                let open = rest.find('(').expect("table body");
                let name = rest[..open].trim();
                let mut t = Table::default();
                for item in top_level_items(inside_parens(rest, open)) {
                    if let Some(spec) = item.strip_prefix("PRIMARY KEY") {
                        let spec = spec.trim();
                        let keys = inside_parens(spec, spec.find('(').expect("key columns"));
                        let parts = top_level_items(keys);
                        let partition = parts[0].trim_start_matches('(').trim_end_matches(')');
                        t.partition = partition.split(',').map(|k| k.trim().to_owned()).collect();
                        t.clustering = parts[1..].iter().map(|k| (*k).to_owned()).collect();
                        continue;
                    }
                    let (column, typ) = item.split_once(' ').expect("a column and its type");
                    let mut typ = typ.trim();
                    if let Some(t2) = typ.strip_suffix(" PRIMARY KEY") {
                        typ = t2;
                        t.partition = vec![column.to_owned()];
                    }
                    if let Some(t2) = typ.strip_suffix(" STATIC") {
                        typ = t2;
                        t.statics.insert(column.to_owned());
                    }
                    t.columns.insert(column.to_owned(), typ.to_owned());
                }
                assert!(!t.partition.is_empty(), "{name}: no key");
                for k in t.partition.iter().chain(&t.clustering) {
                    assert!(t.columns.contains_key(k), "{name}: key {k} is not a column");
                }
                tables.insert(name.to_owned(), t);
            }
        }
        tables
    }
}

#[cfg(test)]
mod tests {
    use super::schema::tables as schema_tables;
    use super::*;

    fn lowercase_words(stmt: &str) -> Vec<&str> {
        stmt.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with(|c: char| c.is_ascii_lowercase()))
            .collect()
    }

    #[test]
    fn every_statement_names_existing_tables_and_columns() {
        let tables = schema_tables();
        assert!(tables.len() >= 10, "{:?}", tables.keys());
        for stmt in ALL {
            let words = lowercase_words(stmt);
            let table = words
                .iter()
                .find(|w| tables.contains_key(**w))
                .unwrap_or_else(|| panic!("no known table in {stmt}"));
            let columns = &tables[*table].columns;
            for w in &words {
                assert!(
                    *w == *table || columns.contains_key(*w),
                    "{stmt}: {w:?} is not a column of {table}"
                );
            }
        }
    }

    #[test]
    fn writes_bind_every_primary_key_column() {
        let tables = schema_tables();
        for stmt in ALL
            .iter()
            .filter(|s| s.starts_with("INSERT") || s.starts_with("UPDATE"))
        {
            let words = lowercase_words(stmt);
            let table = &tables[*words.iter().find(|w| tables.contains_key(**w)).unwrap()];
            let is_key = |w: &str| table.partition.iter().chain(&table.clustering).any(|k| k == w);
            let set: Vec<&str> = words
                .iter()
                .copied()
                .filter(|w| table.columns.contains_key(*w) && !is_key(w))
                .collect();
            // Writing only static columns names the partition alone.
            let only_static = !set.is_empty() && set.iter().all(|c| table.statics.contains(*c));
            let clustering: &[String] = if only_static { &[] } else { &table.clustering };
            for key in table.partition.iter().chain(clustering) {
                assert!(words.contains(&key.as_str()), "{stmt}: key column {key} missing");
            }
        }
    }

    #[test]
    fn statements_are_single_and_bound() {
        for stmt in ALL {
            assert!(!stmt.contains(';'), "{stmt}");
            assert!(!stmt.contains("  "), "double space in {stmt}");
            assert!(!stmt.contains(" IF "), "no LWT: {stmt}");
            assert!(stmt.contains('?'), "values are bound, never pasted: {stmt}");
        }
    }

    #[test]
    fn embedded_migrations_are_every_schema_file_in_order() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/cql");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".cql"))
            .collect();
        on_disk.sort();
        let embedded: Vec<&str> = MIGRATIONS.iter().map(|(n, _)| *n).collect();
        assert_eq!(embedded, on_disk, "embed every file of schemas/cql in MIGRATIONS");
        let mut sorted = embedded.clone();
        sorted.sort();
        assert_eq!(embedded, sorted, "MIGRATIONS in name order");
        for (name, text) in MIGRATIONS {
            assert_eq!(*text, std::fs::read_to_string(dir.join(name)).unwrap());
        }
    }

    #[test]
    fn schema_statements_are_idempotent_and_need_no_keyspace() {
        for (name, text) in MIGRATIONS {
            let stmts = split_statements(text);
            assert!(!stmts.is_empty(), "{name}");
            for s in stmts {
                assert!(
                    s.starts_with("CREATE TABLE IF NOT EXISTS ")
                        || s.starts_with("CREATE TYPE IF NOT EXISTS ")
                        || s.starts_with("ALTER TABLE "),
                    "{name}: not idempotent or not allowed: {s}"
                );
                assert!(!s.contains("KEYSPACE"), "{name}: the keyspace is migrate's: {s}");
            }
        }
    }

    #[test]
    fn split_removes_comments_and_blank_statements() {
        let file = "-- a comment; with a semicolon\nCREATE TABLE IF NOT EXISTS a (x int PRIMARY KEY);\n\n;  -- trailing\nCREATE TABLE IF NOT EXISTS b (\n  y int, -- note\n  PRIMARY KEY (y)\n) WITH CLUSTERING ORDER BY (y DESC);\n";
        assert_eq!(
            split_statements(file),
            [
                "CREATE TABLE IF NOT EXISTS a (x int PRIMARY KEY)",
                "CREATE TABLE IF NOT EXISTS b ( y int, PRIMARY KEY (y) ) WITH CLUSTERING ORDER BY (y DESC)",
            ]
        );
        assert!(split_statements("-- only comments\n\n").is_empty());
    }

    #[test]
    fn keyspace_statement() {
        let s = create_keyspace(
            "Herald",
            " {'class': 'NetworkTopologyStrategy', 'replication_factor': 3} ",
        )
        .unwrap();
        assert_eq!(
            s,
            "CREATE KEYSPACE IF NOT EXISTS herald WITH replication = {'class': 'NetworkTopologyStrategy', 'replication_factor': 3} AND durable_writes = true"
        );
        create_keyspace("herald_test", "{'class': 'SimpleStrategy', 'replication_factor': 1}").unwrap();
        create_keyspace("h", "{'class': 'NetworkTopologyStrategy', 'dc-1': 3, 'dc_2': 2}").unwrap();
    }

    #[test]
    fn keyspace_statement_rejects_injection() {
        for r in [
            "",
            "3",
            "{'replication_factor': 1}",
            "{'class': 'SimpleStrategy', 'replication_factor': 1}; DROP TABLE x",
            "{'class': 'SimpleStrategy'} AND durable_writes = false",
            "{'class': 'SimpleStrategy', 'replication_factor': 1}}",
            "{'class': 'SimpleStrategy', 'x': {'y': 1}}",
            "{'class': 'SimpleStrategy', 'replication_factor': 1",
            "{'class: 'SimpleStrategy'}",
            "{'class': 'Simple;Strategy'}",
            "{'class': 'SimpleStrategy', -- c\n}",
        ] {
            assert!(create_keyspace("herald", r).is_err(), "{r:?}");
        }
        assert!(create_keyspace("bad-name", "{'class': 'SimpleStrategy', 'replication_factor': 1}").is_err());
    }
}
