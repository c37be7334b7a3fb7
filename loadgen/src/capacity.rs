//! `herald-loadgen capacity`: what a workload needs (nodes, cores, memory,
//! Redis shards), worked out from measured figures, with the arithmetic
//! shown line by line (docs/CAPACITY.md has the model).
//!
//! The figures come from the load generator's own JSON reports: a
//! `connect` report run with `--target-pid` (memory per connection, the
//! empty node's memory, and, over a long enough hold, the CPU of idle
//! connections) and a `fanout` report (the node's CPU per delivery). The
//! cluster's figures (Redis commands, bytes and CPU per publish, the CPU of
//! a delivery that crossed nodes) are given on the command line. Any
//! figure can be given on the command line instead of from a report.
//!
//! Everything here is a pure function of its inputs, so the arithmetic is
//! unit-tested; only [`load`] reads files.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// Descriptors a node keeps for itself (listeners, storage files, its
/// bus connections, logs) out of its open-file limit.
pub const FILE_RESERVE: u64 = 1_024;

/// The kernel's memory per idle TCP connection end: socket 2,368 B,
/// socket inode 832, file 192, dentry 192, epoll entry 128 and small
/// objects, from /proc/slabinfo with 15,000 connections on Linux 6.18
/// (benches/results/capacity/kernel-socket-memory.txt).
pub const KERNEL_BYTES_PER_CONNECTION: f64 = 3_800.0;

/// Fewest seconds of held connections to read idle CPU from: a node sends
/// heartbeats every 15 s by default, so a shorter window can miss them or
/// catch them twice.
pub const MIN_IDLE_SAMPLES: usize = 20;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// What runs: connections, rooms and their traffic.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    pub connections: u64,
    /// Rooms that carry traffic.
    pub rooms: u64,
    /// Publishes per second in each room.
    pub publish_rate: f64,
    /// Members per room: deliveries per publish.
    pub fanout: f64,
    /// Share of deliveries whose subscriber is on another node than the
    /// publisher; `None`: (n - 1) / n, members spread over the nodes
    /// without regard to their rooms.
    pub cross_node_fraction: Option<f64>,
}

/// One node, and how much of it a plan may use.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeSize {
    pub cores: f64,
    pub memory_bytes: f64,
    /// The node process's open-file limit (`ulimit -n`).
    pub open_files: u64,
    /// Fraction of cores and memory kept free (bursts, failover, GC of
    /// buffers): a plan uses at most `1 - headroom` of each.
    pub headroom: f64,
}

/// What one Redis shard (one main thread) may take, before headroom.
#[derive(Clone, Debug, PartialEq)]
pub struct RedisBudget {
    pub ops_per_sec: f64,
    pub bytes_per_sec: f64,
}

/// A measured figure and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    pub value: f64,
    pub source: String,
}

impl Figure {
    pub fn given(value: f64, flag: &str) -> Self {
        Self {
            value,
            source: flag.to_owned(),
        }
    }
}

/// The measured figures the model needs; `None`: not measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Measured {
    /// The node's RSS per connection.
    pub bytes_per_connection: Option<Figure>,
    /// The kernel's memory per connection (socket, inode, file, epoll
    /// entry), which is not in the process's RSS.
    pub kernel_bytes_per_connection: Option<Figure>,
    /// RSS of a node with no connection.
    pub empty_node_bytes: Option<Figure>,
    /// Cores per idle connection (heartbeats and timers).
    pub idle_cores_per_connection: Option<Figure>,
    /// Why idle CPU is not in the figures, when it is not.
    pub idle_note: Option<String>,
    pub cpu_us_per_delivery: Option<Figure>,
    /// Room size of the fan-out run the CPU figure came from.
    pub measured_room_size: Option<f64>,
    pub cross_node_cpu_us_per_delivery: Option<Figure>,
    pub redis_ops_per_publish: Option<Figure>,
    pub redis_bytes_per_publish: Option<Figure>,
    pub redis_cpu_us_per_publish: Option<Figure>,
}

/// One line of the arithmetic: `what: formula = value`, or for a
/// measured figure `what: value (source)`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Line {
    pub section: &'static str,
    pub what: String,
    pub formula: String,
    pub value: String,
    /// Where a measured figure came from (empty for arithmetic).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub source: String,
}

/// What the workload needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Estimate {
    pub nodes: u64,
    pub nodes_for_connections: u64,
    pub nodes_for_cpu: u64,
    pub connections_per_node: u64,
    pub publishes_per_sec: f64,
    pub deliveries_per_sec: f64,
    pub cross_node_fraction: f64,
    /// Cores busy at this load, over all nodes.
    pub cores_busy: f64,
    /// Cores provisioned: nodes × cores per node.
    pub cores: f64,
    /// Memory the connections and the nodes take.
    pub memory_used_bytes: f64,
    /// Memory provisioned: nodes × memory per node.
    pub memory_bytes: f64,
    /// `None`: the cluster's Redis figures were not given.
    pub redis_shards: Option<u64>,
    pub redis_ops_per_sec: Option<f64>,
    pub redis_bytes_per_sec: Option<f64>,
    pub lines: Vec<Line>,
    /// What the estimate leaves out or assumes, in words.
    pub notes: Vec<String>,
}

/// Reads a report written by `herald-loadgen` and checks its scenario.
pub fn load(path: &Path, scenario: &str) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading report {}", path.display()))?;
    let v: Value = serde_json::from_str(&text).with_context(|| format!("report {} is not JSON", path.display()))?;
    let got = v["scenario"].as_str().unwrap_or("?");
    if got != scenario {
        bail!(
            "{} is a {got:?} report; this option takes a {scenario:?} report (herald-loadgen {scenario} ... --json FILE)",
            path.display()
        );
    }
    Ok(v)
}

/// Memory per connection, the empty node's memory and the CPU of idle
/// connections, from a `connect` report.
pub fn from_connect_report(name: &str, r: &Value, m: &mut Measured) -> Result<()> {
    let per = r["target"]["rss_bytes_per_connection"].as_f64().with_context(|| {
        format!(
            "{name} has no target.rss_bytes_per_connection: run connect with --target-pid PID of the node \
             (docs/CAPACITY.md)"
        )
    })?;
    if per <= 0.0 {
        bail!("{name}: target.rss_bytes_per_connection is {per}: run it on a fresh node (docs/LOADGEN.md)");
    }
    let alive = r["connections"]["alive_after_hold"].as_u64().unwrap_or(0);
    m.bytes_per_connection = Some(Figure {
        value: per,
        source: format!("{name}: target.rss_bytes_per_connection, {} connections", n(alive)),
    });
    if let Some(b) = r["target"]["rss_bytes_before"].as_f64() {
        m.empty_node_bytes = Some(Figure {
            value: b,
            source: format!("{name}: target.rss_bytes_before"),
        });
    }
    // Idle CPU: the node's CPU in the seconds every connection was up,
    // after the first (the end of the connects), per connection.
    let timeline = r["timeline"].as_array().map(Vec::as_slice).unwrap_or_default();
    let peak = timeline
        .iter()
        .filter_map(|s| s["connections"].as_u64())
        .max()
        .unwrap_or(0);
    let held: Vec<f64> = timeline
        .iter()
        .filter(|s| peak > 0 && s["connections"].as_u64() == Some(peak))
        .skip(1)
        .filter_map(|s| s["target_cpu_percent"].as_f64())
        .collect();
    if held.len() >= MIN_IDLE_SAMPLES {
        let mean = held.iter().sum::<f64>() / held.len() as f64;
        m.idle_cores_per_connection = Some(Figure {
            value: mean / 100.0 / peak as f64,
            source: format!(
                "{name}: mean target_cpu_percent {mean:.2} % over {} s with {} connections",
                held.len(),
                n(peak)
            ),
        });
    } else {
        m.idle_note = Some(format!(
            "idle connections' CPU is not counted: {name} has {} s of held connections with CPU samples, \
             fewer than {MIN_IDLE_SAMPLES} (run connect with --target-pid and --hold 60s, or give \
             --idle-cores-per-100k)",
            held.len()
        ));
    }
    Ok(())
}

/// The node's CPU per delivery from a `fanout` report: from step `step`,
/// or the kept-up step with the most deliveries per second.
pub fn from_fanout_report(name: &str, r: &Value, step: Option<&str>, m: &mut Measured) -> Result<()> {
    let steps = r["rate"]["steps"].as_array().map(Vec::as_slice).unwrap_or_default();
    let names = || {
        steps
            .iter()
            .filter_map(|s| s["name"].as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let chosen = match step {
        Some(want) => steps
            .iter()
            .find(|s| s["name"].as_str() == Some(want))
            .with_context(|| format!("{name} has no step {want:?}; its steps: {}", names()))?,
        None => steps
            .iter()
            .filter(|s| s["kept_up"].as_bool() == Some(true))
            .max_by(|a, b| {
                let d = |s: &Value| s["deliveries_per_sec"].as_f64().unwrap_or(0.0);
                d(a).total_cmp(&d(b))
            })
            .with_context(|| {
                format!(
                    "{name} has no kept-up step to take CPU per delivery from (steps: {}); pick one with --fanout-step",
                    names()
                )
            })?,
    };
    let label = chosen["name"].as_str().unwrap_or("?");
    let cpu = chosen["target_cpu_us_per_delivery"].as_f64().with_context(|| {
        format!("{name}, step {label:?}: no target_cpu_us_per_delivery: run fanout with --target-pid PID of the node")
    })?;
    if cpu <= 0.0 {
        bail!("{name}, step {label:?}: target_cpu_us_per_delivery is {cpu}");
    }
    let dps = chosen["deliveries_per_sec"].as_f64().unwrap_or(0.0);
    m.cpu_us_per_delivery = Some(Figure {
        value: cpu,
        source: format!("{name}, step {label:?} ({dps:.0} deliveries/s): target_cpu_us_per_delivery"),
    });
    let o = &r["options"];
    if let (Some(s), Some(rooms)) = (o["subscribers"].as_f64(), o["rooms"].as_f64())
        && rooms > 0.0
    {
        m.measured_room_size = Some(s / rooms);
    }
    Ok(())
}

fn ceil_div(a: f64, b: f64) -> u64 {
    if a <= 0.0 { 0 } else { (a / b).ceil() as u64 }
}

/// Integers with thousands separators.
fn n(x: u64) -> String {
    crate::html::fmt_num(x as f64)
}

fn f(x: f64) -> String {
    crate::html::fmt_num(x)
}

fn gib(b: f64) -> String {
    format!("{:.2} GiB", b / GIB)
}

/// Works out what `w` needs on nodes of size `node`.
pub fn estimate(w: &Workload, node: &NodeSize, redis: &RedisBudget, m: &Measured) -> Result<Estimate> {
    if w.connections == 0 {
        bail!("--connections must be at least 1");
    }
    if !(0.0..1.0).contains(&node.headroom) {
        bail!("--headroom is a fraction in [0, 1)");
    }
    if node.cores <= 0.0 || node.memory_bytes <= 0.0 {
        bail!("--cores-per-node and --memory-per-node must be positive");
    }
    let rates = [w.publish_rate, w.fanout, redis.ops_per_sec, redis.bytes_per_sec];
    if rates.iter().any(|x| !x.is_finite() || *x < 0.0) {
        bail!("rates, --fanout and the Redis budgets must be numbers >= 0");
    }
    if let Some(x) = w.cross_node_fraction
        && !(0.0..=1.0).contains(&x)
    {
        bail!("--cross-node-fraction is a fraction in [0, 1]");
    }
    let use_ = 1.0 - node.headroom;
    let mut lines = Vec::new();
    let mut notes = Vec::new();
    let mut line = |section: &'static str, what: &str, formula: String, value: String| {
        // Measured figures are `("measured", what, source, value)`.
        let (formula, source) = if section == "measured" {
            (String::new(), formula)
        } else {
            (formula, String::new())
        };
        lines.push(Line {
            section,
            what: what.to_owned(),
            formula,
            value,
            source,
        });
    };

    // The workload.
    let publishes = w.rooms as f64 * w.publish_rate;
    let deliveries = publishes * w.fanout;
    line("workload", "connections", String::new(), n(w.connections));
    line(
        "workload",
        "publishes/s",
        format!("{} rooms × {} /s", n(w.rooms), f(w.publish_rate)),
        f(publishes),
    );
    line(
        "workload",
        "deliveries/s",
        format!("{} publishes/s × {} members", f(publishes), f(w.fanout)),
        f(deliveries),
    );
    if w.rooms > 0 && w.fanout > 0.0 {
        line(
            "workload",
            "room memberships per connection",
            format!(
                "{} rooms × {} members / {} connections",
                n(w.rooms),
                f(w.fanout),
                n(w.connections)
            ),
            format!("{:.2}", w.rooms as f64 * w.fanout / w.connections as f64),
        );
    }

    // The figures.
    let bpc = m.bytes_per_connection.as_ref().context(
        "memory per connection is needed: give --connect-report FILE (herald-loadgen connect --target-pid PID ... \
         --json FILE; docs/CAPACITY.md) or --bytes-per-connection B",
    )?;
    line(
        "measured",
        "memory per connection",
        bpc.source.clone(),
        format!("{} B", f(bpc.value.round())),
    );
    let kernel = match &m.kernel_bytes_per_connection {
        Some(k) => {
            line(
                "measured",
                "kernel memory per connection",
                k.source.clone(),
                format!("{} B", f(k.value.round())),
            );
            k.value
        }
        None => {
            notes.push("the kernel's memory per socket is not counted (no figure)".into());
            0.0
        }
    };
    let per_conn = bpc.value + kernel;
    let empty = m.empty_node_bytes.as_ref().map_or(0.0, |e| e.value);
    match &m.empty_node_bytes {
        Some(e) => line(
            "measured",
            "empty node",
            e.source.clone(),
            format!("{:.1} MiB", e.value / 1048576.0),
        ),
        None => notes.push("the empty node's memory is not counted (no connect report)".into()),
    }
    let idle = m.idle_cores_per_connection.as_ref().map_or(0.0, |i| i.value);
    match (&m.idle_cores_per_connection, &m.idle_note) {
        (Some(i), _) => line(
            "measured",
            "idle cores per 100,000 connections",
            i.source.clone(),
            format!("{:.3}", i.value * 1e5),
        ),
        (None, Some(why)) => notes.push(why.clone()),
        (None, None) => notes.push("idle connections' CPU is not counted (no figure)".into()),
    }
    let local = match (&m.cpu_us_per_delivery, deliveries > 0.0) {
        (Some(c), _) => {
            line(
                "measured",
                "CPU per delivery",
                c.source.clone(),
                format!("{} µs = {} deliveries/s per core", f(c.value), f(1e6 / c.value)),
            );
            if let Some(size) = m.measured_room_size
                && w.fanout > 0.0
                && (size / w.fanout > 2.0 || w.fanout / size > 2.0)
            {
                notes.push(format!(
                    "CPU per delivery was measured with rooms of {}, this workload has rooms of {}: \
                     per-delivery cost falls as rooms grow (a publish is shared by more deliveries), \
                     so measure with rooms of about {} (docs/CAPACITY.md)",
                    f(size),
                    f(w.fanout),
                    f(w.fanout)
                ));
            }
            c.value
        }
        (None, true) => bail!(
            "CPU per delivery is needed for {} deliveries/s: give --fanout-report FILE (herald-loadgen fanout \
             --target-pid PID ... --json FILE; docs/CAPACITY.md) or --cpu-us-per-delivery US",
            f(deliveries)
        ),
        (None, false) => 0.0,
    };
    let cross = match &m.cross_node_cpu_us_per_delivery {
        Some(c) => {
            line(
                "measured",
                "CPU per cross-node delivery",
                c.source.clone(),
                format!("{} µs", f(c.value)),
            );
            c.value
        }
        None => {
            if deliveries > 0.0 {
                notes.push(
                    "a cross-node delivery is counted at the same-node CPU cost: give \
                     --cross-node-cpu-us-per-delivery once measured (docs/CAPACITY.md)"
                        .into(),
                );
            }
            local
        }
    };

    // Connections per node.
    line(
        "node",
        "size",
        String::new(),
        format!(
            "{} cores, {}, {} open files; {:.0} % kept free",
            f(node.cores),
            gib(node.memory_bytes),
            n(node.open_files),
            node.headroom * 100.0
        ),
    );
    let by_files = node.open_files.saturating_sub(FILE_RESERVE);
    if by_files == 0 {
        bail!(
            "--open-files {} leaves no descriptor for connections (the node keeps {FILE_RESERVE})",
            node.open_files
        );
    }
    line(
        "connections per node",
        "by open files",
        format!("{} − {} reserved", n(node.open_files), n(FILE_RESERVE)),
        n(by_files),
    );
    let usable = node.memory_bytes * use_ - empty;
    if usable < per_conn {
        bail!(
            "a node's usable memory ({} × {:.0} % − the empty node's {}) holds no connection",
            gib(node.memory_bytes),
            use_ * 100.0,
            gib(empty)
        );
    }
    let by_memory = (usable / per_conn).floor() as u64;
    line(
        "connections per node",
        "by memory",
        format!(
            "({} × {:.0} % − {:.1} MiB) / ({} + {} B)",
            gib(node.memory_bytes),
            use_ * 100.0,
            empty / 1048576.0,
            f(bpc.value.round()),
            f(kernel.round())
        ),
        n(by_memory),
    );
    let per_node = by_files.min(by_memory);
    line(
        "connections per node",
        "per node",
        format!("min({}, {})", n(by_files), n(by_memory)),
        n(per_node),
    );
    let nodes_conn = w.connections.div_ceil(per_node).max(1);
    line(
        "connections per node",
        "nodes for connections",
        format!("⌈{} / {}⌉", n(w.connections), n(per_node)),
        n(nodes_conn),
    );

    // CPU: the cross-node share grows with the number of nodes, which the
    // CPU decides in turn; iterate until the count stops growing (it is
    // bounded: the share never passes 1).
    let fraction = |nodes: u64| {
        w.cross_node_fraction
            .unwrap_or_else(|| (nodes.saturating_sub(1)) as f64 / nodes as f64)
    };
    let cores_for = |nodes: u64| {
        let x = fraction(nodes);
        deliveries * ((1.0 - x) * local + x * cross) / 1e6 + idle * w.connections as f64
    };
    let per_node_cores = node.cores * use_;
    let mut nodes = nodes_conn;
    for _ in 0..64 {
        let need = ceil_div(cores_for(nodes), per_node_cores).max(1);
        if need <= nodes {
            break;
        }
        nodes = need;
    }
    let x = fraction(nodes);
    let busy = cores_for(nodes);
    let nodes_cpu = ceil_div(busy, per_node_cores).max(1);
    line(
        "CPU",
        "cross-node share",
        match w.cross_node_fraction {
            Some(_) => "given (--cross-node-fraction)".into(),
            None => format!("(n − 1) / n with n = {}", n(nodes)),
        },
        format!("{:.3}", x),
    );
    line(
        "CPU",
        "delivery cores",
        format!(
            "{} deliveries/s × ({:.3} × {} µs + {:.3} × {} µs) / 10⁶",
            f(deliveries),
            1.0 - x,
            f(local),
            x,
            f(cross)
        ),
        format!("{:.2}", deliveries * ((1.0 - x) * local + x * cross) / 1e6),
    );
    line(
        "CPU",
        "idle cores",
        format!("{} connections × {:.3} per 100,000", n(w.connections), idle * 1e5),
        format!("{:.2}", idle * w.connections as f64),
    );
    line("CPU", "cores busy", "delivery + idle".into(), format!("{busy:.2}"));
    line(
        "CPU",
        "nodes for CPU",
        format!("⌈{busy:.2} / ({} cores × {:.0} %)⌉", f(node.cores), use_ * 100.0),
        n(nodes_cpu),
    );

    // The totals.
    let memory_used = w.connections as f64 * per_conn + nodes as f64 * empty;
    line(
        "total",
        "nodes",
        format!("max({}, {})", n(nodes_conn), n(nodes_cpu)),
        n(nodes),
    );
    line(
        "total",
        "cores",
        format!("{} nodes × {} (busy: {busy:.2})", n(nodes), f(node.cores)),
        f(nodes as f64 * node.cores),
    );
    line(
        "total",
        "memory",
        format!(
            "{} nodes × {} (used: {} × {} B + {} × {:.1} MiB = {})",
            n(nodes),
            gib(node.memory_bytes),
            n(w.connections),
            f(per_conn.round()),
            n(nodes),
            empty / 1048576.0,
            gib(memory_used)
        ),
        gib(nodes as f64 * node.memory_bytes),
    );
    line(
        "total",
        "per node",
        format!(
            "{} connections, {} deliveries/s",
            n(w.connections.div_ceil(nodes)),
            f(deliveries / nodes as f64)
        ),
        String::new(),
    );

    // Redis.
    let (shards, ops, bytes) = redis_shards(publishes, nodes, use_, redis, m, &mut line, &mut notes);
    Ok(Estimate {
        nodes,
        nodes_for_connections: nodes_conn,
        nodes_for_cpu: nodes_cpu,
        connections_per_node: per_node,
        publishes_per_sec: publishes,
        deliveries_per_sec: deliveries,
        cross_node_fraction: x,
        cores_busy: busy,
        cores: nodes as f64 * node.cores,
        memory_used_bytes: memory_used,
        memory_bytes: nodes as f64 * node.memory_bytes,
        redis_shards: shards,
        redis_ops_per_sec: ops,
        redis_bytes_per_sec: bytes,
        lines,
        notes,
    })
}

/// Redis shards for `publishes`/s on `nodes` nodes: none for one node (no
/// bus), one for a cluster without traffic, else the most any given
/// figure (commands, bytes, CPU per publish) asks for; `None` when the
/// cluster has traffic and no figure was given.
fn redis_shards(
    publishes: f64,
    nodes: u64,
    use_: f64,
    budget: &RedisBudget,
    m: &Measured,
    line: &mut impl FnMut(&'static str, &str, String, String),
    notes: &mut Vec<String>,
) -> (Option<u64>, Option<f64>, Option<f64>) {
    if nodes <= 1 {
        line("Redis", "shards", "one node: no bus".into(), "0".into());
        return (Some(0), None, None);
    }
    if publishes == 0.0 {
        line(
            "Redis",
            "shards",
            "no publishes: the cluster's membership only".into(),
            "1".into(),
        );
        return (Some(1), Some(0.0), Some(0.0));
    }
    let mut shards: Option<u64> = None;
    let mut take = |s: u64| shards = Some(shards.map_or(s, |x| x.max(s)).max(1));
    let ops = m.redis_ops_per_publish.as_ref().map(|o| {
        let ops = publishes * o.value;
        let s = ceil_div(ops, budget.ops_per_sec * use_);
        line(
            "Redis",
            "by commands",
            format!(
                "{} publishes/s × {} ({}) / ({} /s per shard × {:.0} %)",
                f(publishes),
                f(o.value),
                o.source,
                f(budget.ops_per_sec),
                use_ * 100.0
            ),
            format!("{} commands/s → {} shards", f(ops), n(s)),
        );
        take(s);
        ops
    });
    let bytes = m.redis_bytes_per_publish.as_ref().map(|b| {
        let bytes = publishes * b.value;
        let s = ceil_div(bytes, budget.bytes_per_sec * use_);
        line(
            "Redis",
            "by bytes",
            format!(
                "{} publishes/s × {} B ({}) / ({} MB/s per shard × {:.0} %)",
                f(publishes),
                f(b.value),
                b.source,
                f(budget.bytes_per_sec / 1e6),
                use_ * 100.0
            ),
            format!("{} MB/s → {} shards", f(bytes / 1e6), n(s)),
        );
        take(s);
        bytes
    });
    if let Some(c) = &m.redis_cpu_us_per_publish {
        let cores = publishes * c.value / 1e6;
        let s = ceil_div(cores, use_);
        line(
            "Redis",
            "by CPU",
            format!(
                "{} publishes/s × {} µs ({}) / 10⁶ / {:.0} % of one core per shard",
                f(publishes),
                f(c.value),
                c.source,
                use_ * 100.0
            ),
            format!("{cores:.2} cores → {} shards", n(s)),
        );
        take(s);
    }
    match shards {
        Some(s) => line("Redis", "shards", "the most of the above, at least 1".into(), n(s)),
        None => notes.push(
            "Redis shards are not estimated: give --redis-ops-per-publish, --redis-bytes-per-publish or \
             --redis-cpu-us-per-publish, measured on a cluster (docs/CAPACITY.md)"
                .into(),
        ),
    }
    (shards, ops, bytes)
}

/// The estimate as text, one line of arithmetic per figure.
pub fn text(e: &Estimate) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let mut section = "";
    let width = e.lines.iter().map(|l| l.what.chars().count()).max().unwrap_or(0);
    for l in &e.lines {
        if l.section != section {
            section = l.section;
            let _ = writeln!(s, "{section}:");
        }
        let sep = if l.formula.is_empty() || l.value.is_empty() {
            ""
        } else {
            " = "
        };
        let source = if l.source.is_empty() {
            String::new()
        } else {
            format!("  ({})", l.source)
        };
        let _ = writeln!(s, "  {:<width$}  {}{sep}{}{source}", l.what, l.formula, l.value);
    }
    let _ = writeln!(
        s,
        "needs: {} node{}, {} cores ({:.1} busy), {} memory ({} used), Redis shards: {}",
        n(e.nodes),
        if e.nodes == 1 { "" } else { "s" },
        f(e.cores),
        e.cores_busy,
        gib(e.memory_bytes),
        gib(e.memory_used_bytes),
        e.redis_shards.map_or_else(|| "? (not estimated)".into(), n)
    );
    for note in &e.notes {
        let _ = writeln!(s, "note: {note}");
    }
    s
}

/// The estimate as JSON (`--json`).
pub fn json(e: &Estimate, w: &Workload, node: &NodeSize, redis: &RedisBudget) -> Value {
    json!({
        "tool": "herald-loadgen capacity",
        "version": env!("CARGO_PKG_VERSION"),
        "workload": {
            "connections": w.connections,
            "rooms": w.rooms,
            "publish_rate_per_room": w.publish_rate,
            "fanout": w.fanout,
            "cross_node_fraction": w.cross_node_fraction,
        },
        "node": {
            "cores": node.cores,
            "memory_bytes": node.memory_bytes,
            "open_files": node.open_files,
            "headroom": node.headroom,
        },
        "redis_budget": {"ops_per_sec": redis.ops_per_sec, "bytes_per_sec": redis.bytes_per_sec},
        "needs": {
            "nodes": e.nodes,
            "nodes_for_connections": e.nodes_for_connections,
            "nodes_for_cpu": e.nodes_for_cpu,
            "connections_per_node": e.connections_per_node,
            "publishes_per_sec": e.publishes_per_sec,
            "deliveries_per_sec": e.deliveries_per_sec,
            "cross_node_fraction": e.cross_node_fraction,
            "cores": e.cores,
            "cores_busy": e.cores_busy,
            "memory_bytes": e.memory_bytes,
            "memory_used_bytes": e.memory_used_bytes,
            "redis_shards": e.redis_shards,
            "redis_ops_per_sec": e.redis_ops_per_sec,
            "redis_bytes_per_sec": e.redis_bytes_per_sec,
        },
        "arithmetic": e.lines,
        "notes": e.notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeSize {
        NodeSize {
            cores: 8.0,
            memory_bytes: 16.0 * GIB,
            open_files: 1_048_576,
            headroom: 0.3,
        }
    }

    fn budget() -> RedisBudget {
        RedisBudget {
            ops_per_sec: 100_000.0,
            bytes_per_sec: 100e6,
        }
    }

    fn measured() -> Measured {
        Measured {
            bytes_per_connection: Some(Figure::given(1_000.0, "test")),
            empty_node_bytes: Some(Figure::given(10.0 * 1048576.0, "test")),
            cpu_us_per_delivery: Some(Figure::given(20.0, "test")),
            ..Measured::default()
        }
    }

    fn million(rooms: u64, rate: f64, fanout: f64) -> Workload {
        Workload {
            connections: 1_000_000,
            rooms,
            publish_rate: rate,
            fanout,
            cross_node_fraction: None,
        }
    }

    fn value<'a>(e: &'a Estimate, what: &str) -> &'a str {
        &e.lines
            .iter()
            .find(|l| l.what == what)
            .unwrap_or_else(|| panic!("no line {what:?}"))
            .value
    }

    #[test]
    fn a_million_connections_in_rooms_of_ten() {
        let mut m = measured();
        m.redis_ops_per_publish = Some(Figure::given(3.0, "test"));
        let e = estimate(&million(100_000, 1.0, 10.0), &node(), &budget(), &m).unwrap();
        assert_eq!((e.publishes_per_sec, e.deliveries_per_sec), (100_000.0, 1_000_000.0));
        // Files: 1,048,576 - 1,024. Memory: (16 GiB x 0.7 - 10 MiB) / 1,000 B.
        let by_memory = ((16.0 * GIB * 0.7 - 10.0 * 1048576.0) / 1000.0).floor() as u64;
        assert_eq!(e.connections_per_node, 1_047_552.min(by_memory));
        assert_eq!(e.nodes_for_connections, 1);
        // 1,000,000 deliveries/s x 20 µs = 20 cores; 5.6 usable per node.
        assert!((e.cores_busy - 20.0).abs() < 1e-9, "{}", e.cores_busy);
        assert_eq!((e.nodes_for_cpu, e.nodes), (4, 4));
        assert_eq!(e.cores, 32.0);
        assert_eq!(e.memory_bytes, 64.0 * GIB);
        assert_eq!(e.memory_used_bytes, 1e9 + 4.0 * 10.0 * 1048576.0);
        assert!((e.cross_node_fraction - 0.75).abs() < 1e-12);
        // 300,000 commands/s over 70,000 per shard.
        assert_eq!(e.redis_ops_per_sec, Some(300_000.0));
        assert_eq!(e.redis_shards, Some(5));
        assert_eq!(value(&e, "nodes for CPU"), "4");
        assert_eq!(value(&e, "delivery cores"), "20.00");
        let t = text(&e);
        assert!(
            t.contains("needs: 4 nodes, 32 cores (20.0 busy), 64.00 GiB memory"),
            "{t}"
        );
        assert!(t.contains("⌈20.00 / (8 cores × 70 %)⌉ = 4"), "{t}");
        let j = json(&e, &million(100_000, 1.0, 10.0), &node(), &budget());
        assert_eq!(j["needs"]["nodes"], 4);
        assert_eq!(j["needs"]["redis_shards"], 5);
        assert!(j["arithmetic"].as_array().unwrap().len() > 10);
    }

    #[test]
    fn zero_traffic_needs_only_connections_and_no_fanout_figure() {
        let mut m = measured();
        m.cpu_us_per_delivery = None;
        for w in [
            million(0, 5.0, 10.0),
            million(1_000, 0.0, 10.0),
            million(1_000, 1.0, 0.0),
        ] {
            let e = estimate(&w, &node(), &budget(), &m).unwrap();
            assert_eq!(e.deliveries_per_sec, 0.0);
            assert_eq!((e.cores_busy, e.nodes), (0.0, 1));
            assert_eq!(e.redis_shards, Some(0), "one node needs no bus");
        }
        // Many nodes (for the file limit) and no traffic: one shard for
        // the cluster's membership.
        let small = NodeSize {
            open_files: 20_000,
            ..node()
        };
        let e = estimate(&million(0, 0.0, 0.0), &small, &budget(), &m).unwrap();
        assert_eq!(e.connections_per_node, 18_976);
        assert_eq!(e.nodes, 53);
        assert_eq!(e.redis_shards, Some(1));
    }

    #[test]
    fn missing_figures_are_named_with_how_to_measure_them() {
        let w = million(1_000, 1.0, 10.0);
        let mut m = measured();
        m.cpu_us_per_delivery = None;
        let e = estimate(&w, &node(), &budget(), &m).unwrap_err().to_string();
        assert!(
            e.contains("--fanout-report") && e.contains("--cpu-us-per-delivery"),
            "{e}"
        );
        m = measured();
        m.bytes_per_connection = None;
        let e = estimate(&w, &node(), &budget(), &m).unwrap_err().to_string();
        assert!(
            e.contains("--connect-report") && e.contains("--bytes-per-connection"),
            "{e}"
        );
        // Redis figures are optional: said, not guessed.
        let e = estimate(&million(100_000, 1.0, 10.0), &node(), &budget(), &measured()).unwrap();
        assert_eq!((e.nodes, e.redis_shards), (4, None));
        assert!(text(&e).contains("? (not estimated)"));
        assert!(e.notes.iter().any(|n| n.contains("--redis-ops-per-publish")));
        assert!(e.notes.iter().any(|n| n.contains("--cross-node-cpu-us-per-delivery")));
        let e = estimate(
            &Workload {
                connections: 0,
                ..w.clone()
            },
            &node(),
            &budget(),
            &measured(),
        );
        assert!(e.is_err());
    }

    #[test]
    fn dearer_cross_node_deliveries_add_nodes_until_the_count_settles() {
        let mut m = measured();
        m.cross_node_cpu_us_per_delivery = Some(Figure::given(40.0, "test"));
        let e = estimate(&million(100_000, 1.0, 10.0), &node(), &budget(), &m).unwrap();
        // n = 4: 20 × (0.25 + 0.75 × 2) = 35 cores → 7 nodes; n = 7:
        // 20 × (1/7 + 6/7 × 2) = 37.1 → 7. Settled.
        assert_eq!(e.nodes, 7);
        assert!((e.cores_busy - 20.0 * (1.0 / 7.0 + 12.0 / 7.0)).abs() < 1e-9);
        // Rooms kept on one node: nothing crosses.
        let mut w = million(100_000, 1.0, 10.0);
        w.cross_node_fraction = Some(0.0);
        let e = estimate(&w, &node(), &budget(), &m).unwrap();
        assert_eq!(e.nodes, 4);
        w.cross_node_fraction = Some(1.5);
        assert!(estimate(&w, &node(), &budget(), &m).is_err());
    }

    #[test]
    fn the_tightest_redis_figure_decides_the_shards() {
        let mut m = measured();
        m.redis_ops_per_publish = Some(Figure::given(2.0, "test"));
        m.redis_bytes_per_publish = Some(Figure::given(1_000.0, "test"));
        m.redis_cpu_us_per_publish = Some(Figure::given(30.0, "test"));
        // 100,000 publishes/s: 200,000 commands/s → 3 shards; 100 MB/s →
        // 2; 3 cores → 5 at 70 % of a core each.
        let e = estimate(&million(100_000, 1.0, 10.0), &node(), &budget(), &m).unwrap();
        assert_eq!(e.redis_shards, Some(5));
        assert_eq!(e.redis_bytes_per_sec, Some(100e6));
        assert_eq!(value(&e, "by commands"), "200,000 commands/s → 3 shards");
        assert_eq!(value(&e, "by bytes"), "100 MB/s → 2 shards");
        assert_eq!(value(&e, "by CPU"), "3.00 cores → 5 shards");
    }

    #[test]
    fn memory_and_files_bound_connections_per_node() {
        let m = measured();
        let tight = NodeSize {
            memory_bytes: GIB,
            headroom: 0.5,
            ..node()
        };
        let e = estimate(&million(0, 0.0, 0.0), &tight, &budget(), &m).unwrap();
        let by_memory = ((GIB / 2.0 - 10.0 * 1048576.0) / 1000.0).floor() as u64;
        assert_eq!(e.connections_per_node, by_memory);
        assert_eq!(e.nodes, 1_000_000u64.div_ceil(by_memory));
        // The kernel's socket memory counts with the process's.
        let mut with_kernel = m.clone();
        with_kernel.kernel_bytes_per_connection = Some(Figure::given(3_000.0, "test"));
        let e = estimate(&million(0, 0.0, 0.0), &tight, &budget(), &with_kernel).unwrap();
        let by_memory = ((GIB / 2.0 - 10.0 * 1048576.0) / 4000.0).floor() as u64;
        assert_eq!(e.connections_per_node, by_memory);
        assert_eq!(e.memory_used_bytes, 4e9 + e.nodes as f64 * 10.0 * 1048576.0);
        assert!(text(&e).contains("/ (1,000 + 3,000 B)"), "{}", text(&e));
        let none = NodeSize {
            memory_bytes: 1048576.0,
            ..node()
        };
        let e = estimate(&million(0, 0.0, 0.0), &none, &budget(), &m)
            .unwrap_err()
            .to_string();
        assert!(e.contains("holds no connection"), "{e}");
        let files = NodeSize {
            open_files: 1_000,
            ..node()
        };
        assert!(estimate(&million(0, 0.0, 0.0), &files, &budget(), &m).is_err());
    }

    fn connect_report(samples: usize) -> Value {
        let mut timeline = vec![json!({"t": 0, "connections": 5_000, "target_cpu_percent": 40.0})];
        for t in 1..=samples + 1 {
            // The first second at the peak is the end of the connects.
            let cpu = if t == 1 { 50.0 } else { 1.5 };
            timeline.push(json!({"t": t, "connections": 15_000, "target_cpu_percent": cpu}));
        }
        json!({
            "scenario": "connect",
            "connections": {"alive_after_hold": 15_000},
            "target": {"rss_bytes_per_connection": 827.39, "rss_bytes_before": 16_629_760},
            "timeline": timeline,
        })
    }

    #[test]
    fn connect_reports_give_memory_and_idle_cpu() {
        let mut m = Measured::default();
        from_connect_report("idle.json", &connect_report(30), &mut m).unwrap();
        assert_eq!(m.bytes_per_connection.as_ref().unwrap().value, 827.39);
        assert_eq!(m.empty_node_bytes.as_ref().unwrap().value, 16_629_760.0);
        let idle = m.idle_cores_per_connection.unwrap();
        assert!((idle.value - 0.015 / 15_000.0).abs() < 1e-15, "{idle:?}");
        assert!(idle.source.contains("over 30 s"), "{}", idle.source);
        // Too short a hold: said, not guessed.
        let mut m = Measured::default();
        from_connect_report("short.json", &connect_report(5), &mut m).unwrap();
        assert!(m.idle_cores_per_connection.is_none());
        assert!(m.idle_note.clone().unwrap().contains("--hold 60s"));
        // Without --target-pid there is no memory figure.
        let e = from_connect_report("x.json", &json!({"scenario": "connect", "target": {}}), &mut m)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--target-pid"), "{e}");
    }

    #[test]
    fn fanout_reports_give_cpu_per_delivery_from_the_best_kept_up_step() {
        let r = json!({
            "scenario": "fanout",
            "options": {"subscribers": 9000, "rooms": 900},
            "rate": {"steps": [
                {"name": "1000/s", "deliveries_per_sec": 10000.0, "kept_up": true, "target_cpu_us_per_delivery": 22.0},
                {"name": "2500/s", "deliveries_per_sec": 25000.0, "kept_up": true, "target_cpu_us_per_delivery": 21.85},
                {"name": "9000/s", "deliveries_per_sec": 80000.0, "kept_up": false, "target_cpu_us_per_delivery": 9.0}
            ]}
        });
        let mut m = Measured::default();
        from_fanout_report("f.json", &r, None, &mut m).unwrap();
        assert_eq!(m.cpu_us_per_delivery.as_ref().unwrap().value, 21.85);
        assert_eq!(m.measured_room_size, Some(10.0));
        from_fanout_report("f.json", &r, Some("1000/s"), &mut m).unwrap();
        assert_eq!(m.cpu_us_per_delivery.as_ref().unwrap().value, 22.0);
        let e = from_fanout_report("f.json", &r, Some("5/s"), &mut m)
            .unwrap_err()
            .to_string();
        assert!(e.contains("1000/s, 2500/s, 9000/s"), "{e}");
        let none = json!({"scenario": "fanout", "rate": {"steps": [{"name": "x", "kept_up": false}]}});
        let e = from_fanout_report("g.json", &none, None, &mut m)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no kept-up step"), "{e}");
        // A room size far from the workload's is pointed out.
        let e = estimate(&million(1_000, 1.0, 5_000.0), &node(), &budget(), &{
            let mut m = m.clone();
            m.bytes_per_connection = Some(Figure::given(900.0, "t"));
            m
        })
        .unwrap();
        assert!(e.notes.iter().any(|n| n.contains("rooms of 10")), "{:?}", e.notes);
    }

    #[test]
    fn reports_of_the_wrong_scenario_or_missing_are_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("lg-capacity-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("fanout.json");
        std::fs::write(&p, r#"{"scenario": "fanout"}"#).unwrap();
        let e = load(&p, "connect").unwrap_err().to_string();
        assert!(e.contains("fanout.json is a \"fanout\" report"), "{e}");
        assert!(load(&p, "fanout").is_ok());
        let e = format!("{:#}", load(&dir.join("nope.json"), "connect").unwrap_err());
        assert!(e.contains("reading report") && e.contains("nope.json"), "{e}");
    }
}
