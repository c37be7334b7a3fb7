//! Node-wide counters of the cluster bridge, for `/metrics` and `/ready`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// Upper bounds (seconds) of the Redis round-trip histogram.
const LATENCY_BOUNDS: [f64; 12] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

/// Written by the bridge's tasks and by shards refusing on a full queue.
#[derive(Debug)]
pub(crate) struct ClusterStats {
    /// Every Redis instance answered its last command or read.
    pub(crate) up: Vec<AtomicBool>,
    /// The node has cleared what an earlier run under its id left (stale
    /// presence) and heartbeats: it may take traffic.
    pub(crate) joined: AtomicBool,
    pub(crate) publishes: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) commands: AtomicU64,
    pub(crate) round_trips: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) overloaded: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) entries_read: AtomicU64,
    pub(crate) entries_skipped: AtomicU64,
    pub(crate) notices_read: AtomicU64,
    pub(crate) reads: AtomicU64,
    pub(crate) storage_reads: AtomicU64,
    pub(crate) followed: AtomicU64,
    pub(crate) persisted: AtomicU64,
    pub(crate) claimed: AtomicU64,
    pub(crate) reaped: AtomicU64,
    /// Newest publish-to-read delay seen by the readers (ms).
    pub(crate) read_lag_ms: AtomicU64,
    latency: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    latency_sum_ns: AtomicU64,
}

impl ClusterStats {
    pub(crate) fn new(instances: usize) -> Self {
        Self {
            up: (0..instances).map(|_| AtomicBool::new(false)).collect(),
            joined: AtomicBool::new(false),
            publishes: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            commands: AtomicU64::new(0),
            round_trips: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            overloaded: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            entries_read: AtomicU64::new(0),
            entries_skipped: AtomicU64::new(0),
            notices_read: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            storage_reads: AtomicU64::new(0),
            followed: AtomicU64::new(0),
            persisted: AtomicU64::new(0),
            claimed: AtomicU64::new(0),
            reaped: AtomicU64::new(0),
            read_lag_ms: AtomicU64::new(0),
            latency: Default::default(),
            latency_sum_ns: AtomicU64::new(0),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub(crate) fn set_gauge(gauge: &AtomicU64, n: usize) {
        gauge.store(n as u64, Relaxed);
    }

    /// Whether the node can serve clustered rooms: every instance is
    /// reachable and the node has joined.
    pub(crate) fn ready(&self) -> bool {
        self.joined.load(Relaxed) && self.up.iter().all(|u| u.load(Relaxed))
    }

    pub(crate) fn is_up(&self, instance: usize) -> bool {
        self.up.get(instance).is_some_and(|u| u.load(Relaxed))
    }

    pub(crate) fn set_up(&self, instance: usize, up: bool) {
        if let Some(u) = self.up.get(instance) {
            u.store(up, Relaxed);
        }
    }

    /// One round trip to Redis carrying `commands` commands.
    pub(crate) fn round_trip(&self, commands: usize, took: std::time::Duration) {
        Self::add(&self.round_trips, 1);
        Self::add(&self.commands, commands as u64);
        let secs = took.as_secs_f64();
        let i = LATENCY_BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BOUNDS.len());
        Self::add(&self.latency[i], 1);
        Self::add(&self.latency_sum_ns, took.as_nanos() as u64);
    }

    /// Appends the cluster metrics to a `/metrics` answer.
    pub(crate) fn render(&self, node: &str, out: &mut String) {
        let counters: [(&str, &str, &AtomicU64); 16] = [
            (
                "herald_redis_publishes_total",
                "Publishes sequenced by Redis.",
                &self.publishes,
            ),
            (
                "herald_redis_duplicates_total",
                "Publishes Redis found to repeat an idempotency key (acked once).",
                &self.duplicates,
            ),
            (
                "herald_redis_commands_total",
                "Commands sent to Redis (scripts count one).",
                &self.commands,
            ),
            (
                "herald_redis_round_trips_total",
                "Round trips to Redis (pipelines count one).",
                &self.round_trips,
            ),
            (
                "herald_redis_errors_total",
                "Redis commands or reads that failed.",
                &self.errors,
            ),
            (
                "herald_redis_reconnects_total",
                "Reconnections of the blocking readers.",
                &self.reconnects,
            ),
            (
                "herald_redis_overloaded_total",
                "Cluster requests refused because the bridge queue was full.",
                &self.overloaded,
            ),
            (
                "herald_redis_dropped_total",
                "Best-effort cluster events (typing, volatile, presence changes) dropped.",
                &self.dropped,
            ),
            (
                "herald_redis_entries_read_total",
                "Stream entries this node read for the rooms it follows.",
                &self.entries_read,
            ),
            (
                "herald_redis_entries_skipped_total",
                "Stream entries that could not be parsed.",
                &self.entries_skipped,
            ),
            (
                "herald_redis_notices_read_total",
                "Room notices read from the partitions this node watches (its rooms' and their neighbours').",
                &self.notices_read,
            ),
            (
                "herald_redis_range_reads_total",
                "History ranges read from the streams.",
                &self.reads,
            ),
            (
                "herald_redis_storage_reads_total",
                "Ranges the streams no longer held, read from durable storage.",
                &self.storage_reads,
            ),
            (
                "herald_redis_persisted_total",
                "Stream entries this node wrote to durable storage (consumer group).",
                &self.persisted,
            ),
            (
                "herald_redis_claimed_total",
                "Entries of dead consumers claimed for durable storage.",
                &self.claimed,
            ),
            (
                "herald_redis_reaped_nodes_total",
                "Dead nodes whose presence this node removed.",
                &self.reaped,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{node=\"{node}\"}} {}",
                v.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP herald_redis_followed_rooms Rooms whose streams this node reads.\n\
             # TYPE herald_redis_followed_rooms gauge\nherald_redis_followed_rooms{{node=\"{node}\"}} {}",
            self.followed.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP herald_redis_read_lag_seconds Publish-to-read delay of the newest entry read.\n\
             # TYPE herald_redis_read_lag_seconds gauge\nherald_redis_read_lag_seconds{{node=\"{node}\"}} {}",
            self.read_lag_ms.load(Relaxed) as f64 / 1e3
        );
        let _ = writeln!(
            out,
            "# HELP herald_redis_up Whether the Redis instance answers.\n# TYPE herald_redis_up gauge"
        );
        for (i, u) in self.up.iter().enumerate() {
            let _ = writeln!(
                out,
                "herald_redis_up{{node=\"{node}\",instance=\"{i}\"}} {}",
                u8::from(u.load(Relaxed))
            );
        }
        let name = "herald_redis_round_trip_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Redis round trips (a pipeline of commands, or a read).\n# TYPE {name} histogram"
        );
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BOUNDS.iter().enumerate() {
            cumulative += self.latency[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{node=\"{node}\",le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.latency[LATENCY_BOUNDS.len()].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{node=\"{node}\",le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(
            out,
            "{name}_sum{{node=\"{node}\"}} {}\n{name}_count{{node=\"{node}\"}} {cumulative}",
            self.latency_sum_ns.load(Relaxed) as f64 / 1e9
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn round_trips_fill_a_cumulative_histogram_and_readiness_needs_every_instance() {
        let s = ClusterStats::new(2);
        s.round_trip(3, Duration::from_micros(200));
        s.round_trip(1, Duration::from_secs(2));
        let mut out = String::new();
        s.render("n1", &mut out);
        assert!(
            out.contains("herald_redis_round_trip_seconds_bucket{node=\"n1\",le=\"0.00025\"} 1"),
            "{out}"
        );
        assert!(out.contains("herald_redis_round_trip_seconds_bucket{node=\"n1\",le=\"+Inf\"} 2"));
        assert!(out.contains("herald_redis_commands_total{node=\"n1\"} 4"));
        assert!(!s.ready());
        s.joined.store(true, Relaxed);
        s.set_up(0, true);
        assert!(!s.ready(), "one instance is still down");
        s.set_up(1, true);
        assert!(s.ready());
    }
}
