//! Counters each shard keeps for `/metrics`. Every field is written by its own
//! shard only (relaxed atomics, no contention on the hot path) except
//! `queue_depth`, which senders raise and the owning shard lowers; any shard
//! serving `/metrics` reads all of them.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (seconds) of the fan-out latency histogram buckets.
const LATENCY_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// A named metric read from one shard's counters.
type Metric<T> = (&'static str, &'static str, fn(&ShardStats) -> T);

/// Why an outbound frame or a connection was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropReason {
    /// A volatile frame skipped because the connection's queue was full.
    Volatile,
    /// A connection closed for not reading fast enough.
    SlowConsumer,
    /// A connection refused at the node's connection limit.
    ConnectionLimit,
    /// A request refused by the publish or typing rate limit.
    RateLimited,
    /// A connection closed for a malformed or oversized frame.
    BadFrame,
    /// A connection closed by the handshake or idle timeout.
    Timeout,
    /// A new connection refused at the node's `max_http_connections`.
    HttpLimit,
    /// A message of a conflated room replaced by a newer one before the
    /// reader took it.
    Conflated,
}

const DROPS: [(DropReason, &str); 8] = [
    (DropReason::Volatile, "volatile"),
    (DropReason::SlowConsumer, "slow_consumer"),
    (DropReason::ConnectionLimit, "connection_limit"),
    (DropReason::RateLimited, "rate_limited"),
    (DropReason::BadFrame, "bad_frame"),
    (DropReason::Timeout, "timeout"),
    (DropReason::HttpLimit, "http_limit"),
    (DropReason::Conflated, "conflated"),
];

#[derive(Debug, Default)]
pub(crate) struct ShardStats {
    pub(crate) connections: AtomicI64,
    pub(crate) ws_sessions: AtomicI64,
    pub(crate) sse_sessions: AtomicI64,
    pub(crate) rooms: AtomicI64,
    pub(crate) subscriptions: AtomicI64,
    pub(crate) frames_in: AtomicU64,
    pub(crate) frames_out: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) write_syscalls: AtomicU64,
    pub(crate) write_pass_reads: AtomicU64,
    pub(crate) publishes: AtomicU64,
    pub(crate) deliveries: AtomicU64,
    pub(crate) http_requests: AtomicU64,
    drops: [AtomicU64; DROPS.len()],
    pub(crate) queue_depth: AtomicI64,
    /// Messages this shard sent that wait in its overflow queues.
    pub(crate) mesh_overflow: AtomicI64,
    /// The most that ever waited there at once.
    pub(crate) mesh_overflow_peak: AtomicI64,
    /// Entries on the shard's timer wheel (connection deadlines).
    pub(crate) timers: AtomicI64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_ns: AtomicU64,
}

impl ShardStats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub(crate) fn gauge(g: &AtomicI64, delta: i64) {
        g.fetch_add(delta, Relaxed);
    }

    pub(crate) fn set(g: &AtomicI64, value: i64) {
        g.store(value, Relaxed);
    }

    /// Messages entered (positive) or left (negative) this shard's overflow.
    pub(crate) fn overflowed(&self, delta: i64) {
        let now = self.mesh_overflow.fetch_add(delta, Relaxed) + delta;
        self.mesh_overflow_peak.fetch_max(now, Relaxed);
    }

    pub(crate) fn dropped(&self, why: DropReason) {
        if let Some(i) = DROPS.iter().position(|(d, _)| *d == why) {
            self.drops[i].fetch_add(1, Relaxed);
        }
    }

    /// Records the time from a publish being accepted to its frame being
    /// queued to every local subscriber of one shard.
    pub(crate) fn fanout_latency(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.latency_buckets[i].fetch_add(1, Relaxed);
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_ns.fetch_add(d.as_nanos() as u64, Relaxed);
    }
}

/// Renders every shard's counters in the Prometheus text format.
pub(crate) fn render(node_id: &str, shards: &[Arc<ShardStats>], accepting: bool) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let node = escape(node_id);
    let _ = writeln!(out, "# HELP herald_up 1 while the node accepts connections.");
    let _ = writeln!(out, "# TYPE herald_up gauge");
    let _ = writeln!(out, "herald_up{{node=\"{node}\"}} {}", u8::from(accepting));
    let _ = writeln!(
        out,
        "# HELP herald_sessions Open client sessions, by transport.\n# TYPE herald_sessions gauge"
    );
    for (i, s) in shards.iter().enumerate() {
        for (transport, n) in [("websocket", &s.ws_sessions), ("sse", &s.sse_sessions)] {
            let n = n.load(Relaxed);
            let _ = writeln!(
                out,
                "herald_sessions{{node=\"{node}\",shard=\"{i}\",transport=\"{transport}\"}} {n}"
            );
        }
    }
    let gauges: [Metric<i64>; 7] = [
        (
            "herald_connections",
            "Open TCP connections (WebSocket and HTTP).",
            |s| s.connections.load(Relaxed),
        ),
        ("herald_rooms", "Rooms owned by the shard.", |s| s.rooms.load(Relaxed)),
        (
            "herald_subscriptions",
            "Room subscriptions of the shard's connections.",
            |s| s.subscriptions.load(Relaxed),
        ),
        (
            "herald_shard_queue_depth",
            "Messages waiting in the shard's inbound channels.",
            |s| s.queue_depth.load(Relaxed),
        ),
        (
            "herald_shard_overflow_messages",
            "Messages the shard sent that wait for room in a full channel (while any do, it takes no new work).",
            |s| s.mesh_overflow.load(Relaxed),
        ),
        (
            "herald_shard_timers",
            "Connection deadlines on the shard's timer wheel.",
            |s| s.timers.load(Relaxed),
        ),
        (
            "herald_shard_overflow_peak_messages",
            "The most messages that ever waited in the shard's overflow at once.",
            |s| s.mesh_overflow_peak.load(Relaxed),
        ),
    ];
    for (name, help, get) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (i, s) in shards.iter().enumerate() {
            let _ = writeln!(out, "{name}{{node=\"{node}\",shard=\"{i}\"}} {}", get(s));
        }
    }
    let counters: [Metric<u64>; 9] = [
        ("herald_frames_in_total", "Frames received from clients.", |s| {
            s.frames_in.load(Relaxed)
        }),
        ("herald_frames_out_total", "Frames written to clients.", |s| {
            s.frames_out.load(Relaxed)
        }),
        ("herald_bytes_in_total", "Bytes received on client sockets.", |s| {
            s.bytes_in.load(Relaxed)
        }),
        ("herald_bytes_out_total", "Bytes written to client sockets.", |s| {
            s.bytes_out.load(Relaxed)
        }),
        (
            "herald_write_syscalls_total",
            "Socket write calls (frames are coalesced per connection).",
            |s| s.write_syscalls.load(Relaxed),
        ),
        (
            "herald_write_pass_reads_total",
            "Sockets read in the middle of a long write pass (what they publish reaches the rest of the pass).",
            |s| s.write_pass_reads.load(Relaxed),
        ),
        ("herald_publishes_total", "Messages accepted by room owners.", |s| {
            s.publishes.load(Relaxed)
        }),
        (
            "herald_deliveries_total",
            "Message frames queued to subscribers.",
            |s| s.deliveries.load(Relaxed),
        ),
        ("herald_http_requests_total", "HTTP requests served.", |s| {
            s.http_requests.load(Relaxed)
        }),
    ];
    for (name, help, get) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (i, s) in shards.iter().enumerate() {
            let _ = writeln!(out, "{name}{{node=\"{node}\",shard=\"{i}\"}} {}", get(s));
        }
    }
    let _ = writeln!(
        out,
        "# HELP herald_drops_total Frames or connections dropped, by reason.\n# TYPE herald_drops_total counter"
    );
    for (i, s) in shards.iter().enumerate() {
        for (j, (_, reason)) in DROPS.iter().enumerate() {
            let v = s.drops[j].load(Relaxed);
            let _ = writeln!(
                out,
                "herald_drops_total{{node=\"{node}\",shard=\"{i}\",reason=\"{reason}\"}} {v}"
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP herald_fanout_seconds Time from a publish being accepted by the room owner to its frame being \
         queued to every subscriber on a shard.\n# TYPE herald_fanout_seconds histogram"
    );
    for (i, s) in shards.iter().enumerate() {
        let mut cumulative = 0;
        for (j, bound) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += s.latency_buckets[j].load(Relaxed);
            let _ = writeln!(
                out,
                "herald_fanout_seconds_bucket{{node=\"{node}\",shard=\"{i}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = s.latency_count.load(Relaxed);
        let sum = s.latency_sum_ns.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(
            out,
            "herald_fanout_seconds_bucket{{node=\"{node}\",shard=\"{i}\",le=\"+Inf\"}} {count}\n\
             herald_fanout_seconds_sum{{node=\"{node}\",shard=\"{i}\"}} {sum}\n\
             herald_fanout_seconds_count{{node=\"{node}\",shard=\"{i}\"}} {count}"
        );
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_counts_match() {
        let s = Arc::new(ShardStats::default());
        s.fanout_latency(Duration::from_micros(30));
        s.fanout_latency(Duration::from_micros(700));
        s.fanout_latency(Duration::from_secs(3));
        ShardStats::add(&s.deliveries, 5);
        s.dropped(DropReason::SlowConsumer);
        let text = render("n\"1", &[s], true);
        assert!(text.contains("herald_fanout_seconds_bucket{node=\"n\\\"1\",shard=\"0\",le=\"0.00005\"} 1"));
        assert!(text.contains("le=\"0.001\"} 2"));
        assert!(text.contains("le=\"1\"} 2"));
        assert!(text.contains("le=\"+Inf\"} 3"));
        assert!(text.contains("herald_deliveries_total{node=\"n\\\"1\",shard=\"0\"} 5"));
        assert!(text.contains("reason=\"slow_consumer\"} 1"));
        assert!(text.contains("reason=\"volatile\"} 0"));
        assert!(text.contains("herald_sessions{node=\"n\\\"1\",shard=\"0\",transport=\"sse\"} 0"));
    }
}
