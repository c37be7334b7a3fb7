//! The backend conformance suite: what every [`Storage`] must do, checked
//! the same way for each backend.
//!
//! [`run_all`] runs every check, each on a store from `open`; each check is
//! also a public function, listed in [`CHECKS`], so a backend's tests can
//! run one alone. A failing check panics with a message that says what
//! was expected.
//!
//! Every check names its rooms, users and events with a prefix unique to
//! that run (process id, a counter, the clock's nanoseconds), and never
//! assumes it sees a store with nothing else in it. So a backend that
//! cannot be emptied between runs (a live ScyllaDB keyspace) can run the
//! suite again and again, even in parallel. The one exception is
//! [`events_trim_keeps_rollups`]: `EventStore::trim` is global, so it also
//! removes other runs' events older than a day before this run's clock.

mod events;
mod notifications;
mod room_log;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{Storage, StorageResult};

pub use events::{events_by_name_and_time, events_rollups, events_trim_keeps_rollups};
pub use notifications::{
    notifications_concurrent_marks, notifications_mark_ids, notifications_mark_upto_and_all, notifications_page,
    notifications_reappend, notifications_trim, notifications_users_isolated, notifications_users_paging,
};
pub use room_log::{
    room_log_append_and_head, room_log_atomic_batches, room_log_complete, room_log_concurrent_readers,
    room_log_idempotent_append, room_log_new_epoch, room_log_page_backwards, room_log_paging_edges, room_log_payloads,
    room_log_read_after, room_log_read_newest, room_log_read_time, room_log_rooms_paging, room_log_trim_by_age,
    room_log_trim_by_count,
};

/// One check: takes a store, panics if the store is wrong.
pub type Check = fn(&Storage);

/// Every check, by name.
pub const CHECKS: &[(&str, Check)] = &[
    ("room_log_append_and_head", room_log_append_and_head),
    ("room_log_read_newest", room_log_read_newest),
    ("room_log_read_after", room_log_read_after),
    ("room_log_page_backwards", room_log_page_backwards),
    ("room_log_paging_edges", room_log_paging_edges),
    ("room_log_complete", room_log_complete),
    ("room_log_new_epoch", room_log_new_epoch),
    ("room_log_idempotent_append", room_log_idempotent_append),
    ("room_log_read_time", room_log_read_time),
    ("room_log_trim_by_count", room_log_trim_by_count),
    ("room_log_trim_by_age", room_log_trim_by_age),
    ("room_log_rooms_paging", room_log_rooms_paging),
    ("room_log_payloads", room_log_payloads),
    ("room_log_concurrent_readers", room_log_concurrent_readers),
    ("notifications_page", notifications_page),
    ("notifications_mark_ids", notifications_mark_ids),
    ("notifications_mark_upto_and_all", notifications_mark_upto_and_all),
    ("notifications_users_isolated", notifications_users_isolated),
    ("notifications_reappend", notifications_reappend),
    ("notifications_trim", notifications_trim),
    ("notifications_users_paging", notifications_users_paging),
    ("notifications_concurrent_marks", notifications_concurrent_marks),
    ("events_by_name_and_time", events_by_name_and_time),
    ("events_rollups", events_rollups),
    ("events_trim_keeps_rollups", events_trim_keeps_rollups),
];

/// Runs every check, each on a store `open` returns.
pub fn run_all(open: &mut dyn FnMut() -> Storage) {
    for (name, check) in CHECKS {
        // Shown with the panic's message when a check fails.
        eprintln!("conformance: {name}");
        let started = std::time::Instant::now();
        check(&open());
        eprintln!("conformance: {name} passed in {:?}", started.elapsed());
    }
}

/// Names unique to one run of one check.
#[derive(Debug)]
struct Names {
    prefix: String,
}

impl Names {
    fn new(check: &str) -> Self {
        static RUNS: AtomicU64 = AtomicU64::new(0);
        let run = RUNS.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Self {
            prefix: format!("conf.{check}.{}-{run}-{nanos}.", std::process::id()),
        }
    }

    /// A name of this run: `prefix` + `name`. Names of a run sort together,
    /// right after [`prefix`](Names::prefix).
    fn name(&self, name: &str) -> Arc<str> {
        Arc::from(format!("{}{name}", self.prefix))
    }

    fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// Wall-clock ms, rounded down to a minute so rollup checks know their
/// minutes.
fn base_ms() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    now - now % 60_000
}

/// The value, or a panic naming what failed.
#[track_caller]
fn ok<T>(result: StorageResult<T>, doing: &str) -> T {
    match result {
        Ok(value) => value,
        Err(e) => panic!("{doing} failed: {e}"),
    }
}

/// Pages through names after `prefix` with `list` while they carry the
/// prefix: the run's names in order, whatever else the store holds.
fn list_run(
    prefix: &str,
    page: usize,
    list: impl Fn(Option<&str>, usize) -> StorageResult<Vec<Arc<str>>>,
) -> Vec<Arc<str>> {
    let mut found: Vec<Arc<str>> = Vec::new();
    loop {
        let after = found.last().map_or(prefix, |n| &**n).to_owned();
        let names = ok(list(Some(&after), page), "listing names");
        assert!(names.len() <= page, "a page of {} names for limit {page}", names.len());
        let ours: Vec<_> = names.iter().take_while(|n| n.starts_with(prefix)).cloned().collect();
        let last_page = ours.len() < names.len() || names.len() < page;
        found.extend(ours);
        if last_page {
            return found;
        }
    }
}
