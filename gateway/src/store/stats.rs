//! Node-wide counters of the storage service, for `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Written by the storage threads and by shards refusing on a full queue.
#[derive(Debug, Default)]
pub(crate) struct StorageStats {
    pub(crate) commits: AtomicU64,
    pub(crate) messages: AtomicU64,
    pub(crate) notifications: AtomicU64,
    pub(crate) events: AtomicU64,
    pub(crate) reads: AtomicU64,
    pub(crate) syncs: AtomicU64,
    pub(crate) sync_ns: AtomicU64,
    pub(crate) commit_ns: AtomicU64,
    pub(crate) write_errors: AtomicU64,
    pub(crate) read_errors: AtomicU64,
    pub(crate) overloaded: AtomicU64,
    pub(crate) trimmed: AtomicU64,
}

impl StorageStats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// Appends the storage metrics to a `/metrics` answer.
    pub(crate) fn render(&self, node: &str, out: &mut String) {
        let rows: [(&str, &str, &AtomicU64); 10] = [
            (
                "herald_storage_commits_total",
                "Group commits by the storage writer (each one write batch and at most one sync).",
                &self.commits,
            ),
            (
                "herald_storage_messages_total",
                "Room messages written.",
                &self.messages,
            ),
            (
                "herald_storage_notifications_total",
                "Notifications written.",
                &self.notifications,
            ),
            ("herald_storage_events_total", "Analytics events written.", &self.events),
            (
                "herald_storage_reads_total",
                "Reads served by the storage readers.",
                &self.reads,
            ),
            (
                "herald_storage_syncs_total",
                "fsyncs (or the backend's equivalent).",
                &self.syncs,
            ),
            (
                "herald_storage_write_errors_total",
                "Write batches that failed (publishers got Unavailable).",
                &self.write_errors,
            ),
            (
                "herald_storage_read_errors_total",
                "Reads that failed.",
                &self.read_errors,
            ),
            (
                "herald_storage_overloaded_total",
                "Jobs refused because the storage queue was full (Overloaded).",
                &self.overloaded,
            ),
            (
                "herald_storage_trimmed_total",
                "Stored items removed by retention.",
                &self.trimmed,
            ),
        ];
        for (name, help, v) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{node=\"{node}\"}} {}",
                v.load(Relaxed)
            );
        }
        for (name, help, v) in [
            (
                "herald_storage_sync_seconds_total",
                "Time spent in syncs.",
                &self.sync_ns,
            ),
            (
                "herald_storage_commit_seconds_total",
                "Time spent in group commits, syncs included.",
                &self.commit_ns,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{node=\"{node}\"}} {}",
                v.load(Relaxed) as f64 / 1e9
            );
        }
    }
}
