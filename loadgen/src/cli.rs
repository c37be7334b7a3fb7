//! Command line: scenarios, their options, and the scenario file.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::coord::{self, RunOptions, fmt_us};
use crate::plan::{Plan, Scenario};
use crate::schedule::Step;
use crate::target::{Kind, Target};

/// Sockets one process may hold here (open-file limit 20,000, minus room
/// for the process's own files).
const SOCKETS_PER_PROCESS: usize = 19_000;

#[derive(Parser, Debug)]
#[command(
    name = "herald-loadgen",
    version,
    about = "Open-loop load generator for Herald (and Socket.IO, for comparison)"
)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Open N connections at a rate, hold them, report connect latency,
    /// errors by kind and the target's memory per connection.
    Connect {
        #[command(flatten)]
        common: Common,
        /// Connections to open (over all workers).
        #[arg(long, default_value_t = 1_000)]
        connections: usize,
        /// How long to hold them (heartbeats are answered), e.g. 10s, 2m.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        hold: Duration,
        /// sse:// only: streams are spread over this many rooms (stream g
        /// reads room g mod N; default 1). WebSocket connections held by
        /// `connect` join no room.
        #[arg(long)]
        rooms: Option<usize>,
    },
    /// Subscribers spread over rooms, publishers at an open-loop rate (or a
    /// series of rate steps, stopping at the first the target cannot keep
    /// up with).
    Fanout {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        fanout: FanoutArgs,
        #[command(flatten)]
        rates: RateArgs,
    },
    /// Users in rooms publish and receive, with presence churn and typing.
    Chat {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        chat: ChatArgs,
        #[command(flatten)]
        rates: RateArgs,
    },
    /// A scenario file (TOML) with phases: ramp-up, steady, spike, ramp-down.
    Run {
        /// The scenario file (see docs/LOADGEN.md).
        file: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Two JSON reports side by side, with ratios (B / A).
    Compare { a: PathBuf, b: PathBuf },
    /// What a workload needs (nodes, cores, memory, Redis shards), from
    /// measured reports, with the arithmetic (docs/CAPACITY.md).
    Capacity(Box<CapacityArgs>),
    /// Closed-loop publish→ack round trips (a quick check, not a load test).
    Ping {
        /// WebSocket URL of the node.
        #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
        target: String,
        #[arg(long, default_value_t = 10)]
        clients: u32,
        /// Publishes per client (the node's default per-connection publish
        /// limit is 50/s with a burst of 100; refused publishes are counted).
        #[arg(long, default_value_t = 50)]
        publishes: u32,
        #[arg(long, default_value_t = 64)]
        payload: usize,
    },
    /// Internal: a worker process started by `--workers`.
    #[command(name = "__worker", hide = true)]
    Worker,
}

#[derive(Args, Debug, Clone)]
struct Common {
    /// Target URLs, comma-separated: ws://host:port/ws (Herald),
    /// socketio://host:port (Socket.IO 4), sse://host:port (Herald's
    /// Server-Sent Events; publishers use the node's /ws), quic://host:port
    /// (Herald over QUIC). Connections go round-robin over them.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    target: String,
    /// Worker processes (each holds at most ~19,000 sockets here).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Source addresses to spread connections over, e.g. 127.0.0.2-127.0.0.40.
    #[arg(long)]
    source_ips: Option<String>,
    /// Seed for every random choice (rooms, speakers, churn): same seed,
    /// same run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Target process ids: their RSS and CPU are read from /proc.
    #[arg(long, value_delimiter = ',')]
    target_pid: Vec<u32>,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write a self-contained HTML report with charts here.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Connections opened per second, over all workers (0: as fast as
    /// --connect-window allows).
    #[arg(long, default_value_t = 0.0)]
    connect_rate: f64,
    /// Handshakes in progress at once, per worker.
    #[arg(long, default_value_t = 256)]
    connect_window: usize,
    /// A connection not ready this long after it was due has failed.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// Room name prefix (Herald: a namespace clients may publish in).
    #[arg(long)]
    room_prefix: Option<String>,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args, Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FanoutArgs {
    /// Subscriber connections, spread evenly over the rooms.
    #[arg(long, default_value_t = 1_000)]
    subscribers: usize,
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Publisher connections; room r is published by publisher r mod P.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Payload bytes (at least 40: the stamp).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Several targets: indexes (0-based, in --target's order) of the
    /// targets the subscribers go to, e.g. 0,1. Each room's members are
    /// dealt round robin over them. Default: every target.
    #[arg(long, value_delimiter = ',')]
    subscribers_on: Vec<usize>,
    /// Several targets: indexes of the targets the publishers go to, e.g. 0
    /// (publisher p to entry p mod n). Default: every target.
    #[arg(long, value_delimiter = ',')]
    publishers_on: Vec<usize>,
}

impl Default for FanoutArgs {
    fn default() -> Self {
        Self {
            subscribers: 1_000,
            rooms: 1,
            publishers: 1,
            payload: 64,
            subscribers_on: Vec::new(),
            publishers_on: Vec::new(),
        }
    }
}

#[derive(Args, Debug, Clone)]
struct CapacityArgs {
    /// Concurrent connections.
    #[arg(long)]
    connections: u64,
    /// Rooms that carry traffic.
    #[arg(long, default_value_t = 0)]
    rooms: u64,
    /// Publishes per second in each room.
    #[arg(long, default_value_t = 0.0)]
    publish_rate: f64,
    /// Members per room (deliveries per publish); needed with traffic.
    #[arg(long)]
    fanout: Option<f64>,
    /// Share of deliveries to a subscriber on another node than the
    /// publisher's. Default: (n - 1) / n, members spread over n nodes
    /// whatever their room; 0 if rooms are placed on one node each.
    #[arg(long)]
    cross_node_fraction: Option<f64>,
    /// A `connect` report run with --target-pid: memory per connection,
    /// the empty node's memory, idle CPU (with a hold of 20 s or more).
    #[arg(long)]
    connect_report: Option<PathBuf>,
    /// A `fanout` report run with --target-pid, with rooms of about
    /// --fanout members: the node's CPU per delivery.
    #[arg(long)]
    fanout_report: Option<PathBuf>,
    /// The fanout report's step to read (default: the kept-up step with
    /// the most deliveries/s).
    #[arg(long)]
    fanout_step: Option<String>,
    /// Instead of --connect-report: the node's RSS per connection, bytes.
    #[arg(long)]
    bytes_per_connection: Option<f64>,
    /// The kernel's memory per connection (TCP socket, inode, file, epoll
    /// entry: not in the node's RSS). The default was measured on Linux
    /// 6.18 from /proc/slabinfo (docs/CAPACITY.md).
    /// [default: 3800]
    #[arg(long)]
    kernel_bytes_per_connection: Option<f64>,
    /// Instead of --connect-report's hold: cores the node spends on
    /// 100,000 idle connections (heartbeats).
    #[arg(long)]
    idle_cores_per_100k: Option<f64>,
    /// Instead of --fanout-report: the node's CPU per delivery, µs.
    #[arg(long)]
    cpu_us_per_delivery: Option<f64>,
    /// Node CPU per delivery that crossed nodes (publisher on one node,
    /// subscriber on another), µs; default: as a same-node delivery.
    #[arg(long)]
    cross_node_cpu_us_per_delivery: Option<f64>,
    /// Redis commands per publish, measured on a cluster.
    #[arg(long)]
    redis_ops_per_publish: Option<f64>,
    /// Redis bytes in + out per publish, measured on a cluster.
    #[arg(long)]
    redis_bytes_per_publish: Option<f64>,
    /// Redis CPU per publish (µs), measured on a cluster.
    #[arg(long)]
    redis_cpu_us_per_publish: Option<f64>,
    /// Commands/s one Redis shard may take before headroom. The default is
    /// a round figure, not a measurement: measure yours (docs/CAPACITY.md).
    #[arg(long, default_value_t = 100_000.0)]
    redis_ops_per_shard: f64,
    /// MB/s (10^6 bytes) one Redis shard may move before headroom (default:
    /// about 1 Gbit/s).
    #[arg(long, default_value_t = 100.0)]
    redis_mb_per_shard: f64,
    /// Cores per node.
    #[arg(long, default_value_t = 8.0)]
    cores_per_node: f64,
    /// Memory per node, GiB.
    #[arg(long, default_value_t = 16.0)]
    memory_per_node: f64,
    /// The node process's open-file limit (ulimit -n; Linux's default
    /// ceiling, fs.nr_open, is 1,048,576).
    #[arg(long, default_value_t = 1_048_576)]
    open_files: u64,
    /// Fraction of each node's cores and memory, and of each Redis shard,
    /// kept free.
    #[arg(long, default_value_t = 0.3)]
    headroom: f64,
    /// Also write the estimate as JSON here (`-`: only JSON, on stdout).
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Runs `capacity`: the figures from reports, then flags, then the model.
fn capacity(a: &CapacityArgs) -> Result<()> {
    use crate::capacity::{self as cap, Figure, Measured};
    let mut m = Measured::default();
    if let Some(p) = &a.connect_report {
        let r = cap::load(p, "connect")?;
        cap::from_connect_report(&p.display().to_string(), &r, &mut m)?;
    }
    if let Some(p) = &a.fanout_report {
        let r = cap::load(p, "fanout")?;
        cap::from_fanout_report(&p.display().to_string(), &r, a.fanout_step.as_deref(), &mut m)?;
    }
    let given = |v: Option<f64>, flag: &str| -> Result<Option<Figure>> {
        match v {
            Some(x) if !x.is_finite() || x < 0.0 => bail!("{flag} must be a number >= 0"),
            Some(x) => Ok(Some(Figure::given(x, flag))),
            None => Ok(None),
        }
    };
    let or = |flag: Option<Figure>, report: Option<Figure>| flag.or(report);
    m.bytes_per_connection = or(
        given(a.bytes_per_connection, "--bytes-per-connection")?,
        m.bytes_per_connection,
    );
    m.kernel_bytes_per_connection = Some(
        given(a.kernel_bytes_per_connection, "--kernel-bytes-per-connection")?.unwrap_or(Figure {
            value: crate::capacity::KERNEL_BYTES_PER_CONNECTION,
            source: "default: Linux 6.18, /proc/slabinfo; docs/CAPACITY.md".into(),
        }),
    );
    if let Some(x) = a.idle_cores_per_100k {
        m.idle_cores_per_connection = given(Some(x / 1e5), "--idle-cores-per-100k")?;
    }
    m.cpu_us_per_delivery = or(
        given(a.cpu_us_per_delivery, "--cpu-us-per-delivery")?,
        m.cpu_us_per_delivery,
    );
    m.cross_node_cpu_us_per_delivery = given(a.cross_node_cpu_us_per_delivery, "--cross-node-cpu-us-per-delivery")?;
    m.redis_ops_per_publish = given(a.redis_ops_per_publish, "--redis-ops-per-publish")?;
    m.redis_bytes_per_publish = given(a.redis_bytes_per_publish, "--redis-bytes-per-publish")?;
    m.redis_cpu_us_per_publish = given(a.redis_cpu_us_per_publish, "--redis-cpu-us-per-publish")?;
    let traffic = a.rooms > 0 && a.publish_rate > 0.0;
    let fanout = match a.fanout {
        Some(f) => f,
        None if traffic => bail!("give --fanout: the members of each room, who each get every publish"),
        None => 0.0,
    };
    let w = cap::Workload {
        connections: a.connections,
        rooms: a.rooms,
        publish_rate: a.publish_rate,
        fanout,
        cross_node_fraction: a.cross_node_fraction,
    };
    let node = cap::NodeSize {
        cores: a.cores_per_node,
        memory_bytes: a.memory_per_node * 1024.0 * 1024.0 * 1024.0,
        open_files: a.open_files,
        headroom: a.headroom,
    };
    let budget = cap::RedisBudget {
        ops_per_sec: a.redis_ops_per_shard,
        bytes_per_sec: a.redis_mb_per_shard * 1e6,
    };
    let e = cap::estimate(&w, &node, &budget, &m)?;
    let j = serde_json::to_string_pretty(&cap::json(&e, &w, &node, &budget))?;
    match &a.json {
        Some(p) if p.as_os_str() == "-" => println!("{j}"),
        Some(p) => {
            print!("{}", cap::text(&e));
            std::fs::write(p, j).with_context(|| format!("writing {}", p.display()))?;
        }
        None => print!("{}", cap::text(&e)),
    }
    Ok(())
}

#[derive(Args, Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ChatArgs {
    #[arg(long, default_value_t = 1_000)]
    users: usize,
    #[arg(long, default_value_t = 100)]
    rooms: usize,
    /// Rooms each user is in.
    #[arg(long, default_value_t = 3)]
    rooms_per_user: usize,
    /// Users who keep leaving and re-joining a room (presence churn); their
    /// deliveries are not counted. Default: a tenth of the users.
    #[arg(long)]
    churn_users: Option<usize>,
    /// Leave+join operations per second over all churning users.
    #[arg(long, default_value_t = 10.0)]
    churn_rate: f64,
    /// Fraction of publishes preceded by a typing indicator.
    #[arg(long, default_value_t = 0.2)]
    typing: f64,
    #[arg(long, default_value_t = 64)]
    payload: usize,
}

impl Default for ChatArgs {
    fn default() -> Self {
        Self {
            users: 1_000,
            rooms: 100,
            rooms_per_user: 3,
            churn_users: None,
            churn_rate: 10.0,
            typing: 0.2,
            payload: 64,
        }
    }
}

#[derive(Args, Debug, Clone)]
struct RateArgs {
    /// Messages per second over all rooms (open loop).
    #[arg(long, conflicts_with = "rates")]
    rate: Option<f64>,
    /// Rate steps, e.g. 100,200,500: stops at the first step the target
    /// cannot keep up with.
    #[arg(long, value_delimiter = ',')]
    rates: Vec<f64>,
    /// Length of each step, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// After a step, how long late deliveries may still arrive.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    drain: Duration,
    /// A step is kept up when at least this fraction of expected
    /// deliveries arrived (and the median did not keep growing).
    #[arg(long, default_value_t = 0.99)]
    keep_up: f64,
    /// Run every step, even after one the target did not keep up with.
    #[arg(long)]
    all_steps: bool,
}

impl RateArgs {
    /// Sets the plan's steps and step options; returns them for the report.
    fn apply(&self, p: &mut Plan) -> Result<Value> {
        p.steps = self.steps()?;
        p.drain = self.drain;
        p.keep_up = self.keep_up;
        p.stop_on_fail = !self.all_steps;
        Ok(json!({
            "rates": p.steps.iter().map(|s| s.from).collect::<Vec<_>>(),
            "duration_secs": self.duration.as_secs_f64(),
            "drain_secs": self.drain.as_secs_f64(),
            "keep_up": self.keep_up,
            "all_steps": self.all_steps,
        }))
    }

    fn steps(&self) -> Result<Vec<Step>> {
        let rates = match (self.rate, self.rates.is_empty()) {
            (Some(r), _) => vec![r],
            (None, false) => self.rates.clone(),
            (None, true) => vec![100.0],
        };
        if rates.iter().any(|r| !r.is_finite() || *r <= 0.0) {
            bail!("rates must be positive numbers of messages per second");
        }
        Ok(rates.into_iter().map(|r| Step::steady(r, self.duration)).collect())
    }
}

/// `10s`, `250ms`, `2m`, `1h`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration like 10s, 250ms, 2m"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        other => return Err(format!("{s:?}: unknown unit {other:?} (ms, s, m, h)")),
    };
    if !(0.0..=7.0 * 86_400.0).contains(&secs) {
        return Err(format!("{s:?}: out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn source_ips(spec: Option<&str>) -> Result<Vec<IpAddr>> {
    let Some(spec) = spec else { return Ok(Vec::new()) };
    let (a, b) = spec.split_once('-').unwrap_or((spec, spec));
    let (a, b): (Ipv4Addr, Ipv4Addr) = (
        a.trim().parse().context("--source-ips: low address")?,
        b.trim().parse().context("--source-ips: high address")?,
    );
    let (a, b) = (u32::from(a), u32::from(b));
    if b < a || b - a >= 1024 {
        bail!("--source-ips: give low-high with at most 1,024 addresses");
    }
    Ok((a..=b).map(|x| IpAddr::V4(x.into())).collect())
}

fn base_plan(common: &Common, scenario: Scenario, connections: usize) -> Result<Plan> {
    let targets = Target::parse_list(&common.target)?;
    let workers = common.workers.max(1);
    if connections.div_ceil(workers) > SOCKETS_PER_PROCESS {
        bail!(
            "{connections} connections over {workers} worker(s) is more than the ~{SOCKETS_PER_PROCESS} sockets one process \
             can hold here: use --workers {}",
            connections.div_ceil(SOCKETS_PER_PROCESS)
        );
    }
    if !common.connect_rate.is_finite() || common.connect_rate < 0.0 {
        bail!("--connect-rate must be 0 or a positive number");
    }
    Ok(Plan {
        scenario,
        targets,
        source_ips: source_ips(common.source_ips.as_deref())?,
        workers,
        connections,
        connect_rate: common.connect_rate,
        connect_window: common.connect_window.max(1),
        connect_timeout: common.connect_timeout,
        rooms: 1,
        subscribers: 0,
        publishers: 0,
        rooms_per_user: 0,
        churners: 0,
        churn_rate: 0.0,
        typing: 0.0,
        payload: 64,
        seed: common.seed,
        room_prefix: common
            .room_prefix
            .clone()
            .unwrap_or_else(|| format!("chat:lg{}-", std::process::id())),
        drain: Duration::from_secs(2),
        steps: Vec::new(),
        hold: Duration::ZERO,
        keep_up: 0.99,
        stop_on_fail: true,
        subscribers_on: Vec::new(),
        publishers_on: Vec::new(),
        index: 0,
    })
}

fn connect_plan(common: &Common, connections: usize, hold: Duration, rooms: Option<usize>) -> Result<Plan> {
    let mut p = base_plan(common, Scenario::Connect, connections)?;
    p.hold = hold;
    if let Some(rooms) = rooms {
        if p.targets.first().is_some_and(|t| t.kind != Kind::Sse) {
            bail!("--rooms applies to sse:// streams; WebSocket connections held by connect join no room");
        }
        if rooms == 0 {
            bail!("--rooms must be at least 1");
        }
        p.rooms = rooms;
    }
    Ok(p)
}

fn fanout_plan(common: &Common, f: &FanoutArgs) -> Result<Plan> {
    if f.rooms == 0 || f.publishers == 0 || f.subscribers < f.rooms {
        bail!("need --rooms >= 1, --publishers >= 1 and --subscribers >= --rooms");
    }
    if f.payload < crate::wire::STAMP_LEN || f.payload > 512 * 1024 {
        bail!("--payload must be between {} and 524288 bytes", crate::wire::STAMP_LEN);
    }
    let mut p = base_plan(common, Scenario::Fanout, f.subscribers + f.publishers)?;
    p.rooms = f.rooms;
    p.subscribers = f.subscribers;
    p.publishers = f.publishers;
    p.payload = f.payload;
    p.subscribers_on = target_indexes("--subscribers-on", &f.subscribers_on, p.targets.len())?;
    p.publishers_on = target_indexes("--publishers-on", &f.publishers_on, p.targets.len())?;
    Ok(p)
}

/// A list of target indexes, each below `targets` and none twice (a
/// target listed twice would take twice the share, which is better said
/// with more connections).
fn target_indexes(flag: &str, list: &[usize], targets: usize) -> Result<Vec<usize>> {
    if let Some(i) = list.iter().find(|&&i| i >= targets) {
        bail!(
            "{flag}: target index {i} is out of range: --target lists {targets} URL(s), indexes 0 to {}",
            targets.saturating_sub(1)
        );
    }
    if list.iter().enumerate().any(|(k, i)| list[..k].contains(i)) {
        bail!("{flag}: each target index at most once");
    }
    Ok(list.to_vec())
}

fn chat_plan(common: &Common, c: &ChatArgs) -> Result<Plan> {
    if Target::parse_list(&common.target)?
        .first()
        .is_some_and(|t| t.kind == Kind::Sse)
    {
        bail!("sse:// streams only read: use fanout or connect (chat users publish on the connection they read)");
    }
    if c.rooms == 0 || c.users < 2 || c.rooms_per_user == 0 {
        bail!("need --users >= 2, --rooms >= 1, --rooms-per-user >= 1");
    }
    if c.payload < crate::wire::STAMP_LEN || c.payload > 512 * 1024 {
        bail!("--payload must be between {} and 524288 bytes", crate::wire::STAMP_LEN);
    }
    if !(0.0..=1.0).contains(&c.typing) || !c.churn_rate.is_finite() || c.churn_rate < 0.0 {
        bail!("--typing is a fraction in 0..1 and --churn-rate a rate >= 0");
    }
    let mut p = base_plan(common, Scenario::Chat, c.users)?;
    p.rooms = c.rooms;
    p.rooms_per_user = c.rooms_per_user.min(c.rooms);
    p.churners = c.churn_users.unwrap_or(c.users / 10).min(c.users - 1);
    p.churn_rate = c.churn_rate;
    p.typing = c.typing;
    p.payload = c.payload;
    Ok(p)
}

/// A scenario file: the scenario's options plus phases.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    scenario: String,
    #[serde(default)]
    fanout: Option<FanoutArgs>,
    #[serde(default)]
    chat: Option<ChatArgs>,
    #[serde(default)]
    drain: Option<String>,
    #[serde(rename = "phase")]
    phases: Vec<Phase>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Phase {
    name: String,
    duration: String,
    /// Steady rate, or `from` → `to` for a ramp.
    rate: Option<f64>,
    from: Option<f64>,
    to: Option<f64>,
}

fn file_plan(path: &Path, common: &Common) -> Result<(Plan, String)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: ScenarioFile = toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
    let mut plan = match file.scenario.as_str() {
        "fanout" => fanout_plan(common, &file.fanout.unwrap_or_default())?,
        "chat" => chat_plan(common, &file.chat.unwrap_or_default())?,
        other => bail!(
            "{}: scenario must be \"fanout\" or \"chat\", not {other:?}",
            path.display()
        ),
    };
    if file.phases.is_empty() {
        bail!("{}: give at least one [[phase]]", path.display());
    }
    for ph in &file.phases {
        let duration = parse_duration(&ph.duration).map_err(|e| anyhow::anyhow!("phase {:?}: {e}", ph.name))?;
        let (from, to) = match (ph.rate, ph.from, ph.to) {
            (Some(r), None, None) => (r, r),
            (None, Some(a), Some(b)) => (a, b),
            _ => bail!("phase {:?}: give either rate, or from and to", ph.name),
        };
        if !(from.is_finite() && to.is_finite()) || from < 0.0 || to < 0.0 || duration.is_zero() {
            bail!("phase {:?}: rates must be >= 0 and the duration > 0", ph.name);
        }
        plan.steps.push(Step {
            name: ph.name.clone(),
            duration,
            from,
            to,
        });
    }
    if let Some(d) = &file.drain {
        plan.drain = parse_duration(d).map_err(|e| anyhow::anyhow!("drain: {e}"))?;
    }
    plan.stop_on_fail = false;
    Ok((plan, text))
}

pub fn main() -> Result<()> {
    let cli = Cli::parse();
    let (common, plan, name, mut options) = match cli.cmd {
        Cmd::Worker => return coord::worker_process(),
        Cmd::Ping {
            target,
            clients,
            publishes,
            payload,
        } => return crate::ping::run(&target, clients, publishes, payload),
        Cmd::Capacity(args) => return capacity(&args),
        Cmd::Compare { a, b } => {
            let ra = crate::compare::load_report(&a).map_err(anyhow::Error::msg)?;
            let rb = crate::compare::load_report(&b).map_err(anyhow::Error::msg)?;
            print!(
                "{}",
                crate::compare::compare(&ra, &rb, &a.display().to_string(), &b.display().to_string())
            );
            return Ok(());
        }
        Cmd::Connect {
            common,
            connections,
            hold,
            rooms,
        } => {
            let p = connect_plan(&common, connections, hold, rooms)?;
            let o = json!({"connections": connections, "hold_secs": hold.as_secs_f64(), "rooms": rooms});
            (common, p, "connect", o)
        }
        Cmd::Fanout { common, fanout, rates } => {
            let mut p = fanout_plan(&common, &fanout)?;
            let mut o = rates.apply(&mut p)?;
            o["subscribers"] = json!(fanout.subscribers);
            o["rooms"] = json!(fanout.rooms);
            o["publishers"] = json!(fanout.publishers);
            o["payload"] = json!(fanout.payload);
            o["subscribers_on"] = json!(fanout.subscribers_on);
            o["publishers_on"] = json!(fanout.publishers_on);
            (common, p, "fanout", o)
        }
        Cmd::Chat { common, chat, rates } => {
            let mut p = chat_plan(&common, &chat)?;
            let mut o = rates.apply(&mut p)?;
            o["users"] = json!(chat.users);
            o["rooms"] = json!(chat.rooms);
            o["rooms_per_user"] = json!(p.rooms_per_user);
            o["churn_users"] = json!(p.churners);
            o["churn_rate"] = json!(chat.churn_rate);
            o["typing"] = json!(chat.typing);
            o["payload"] = json!(chat.payload);
            (common, p, "chat", o)
        }
        Cmd::Run { file, common } => {
            let (p, text) = file_plan(&file, &common)?;
            let o = json!({"file": file.display().to_string(), "file_text": text});
            (common, p, "run", o)
        }
    };
    if let Value::Object(m) = &mut options {
        m.insert("target".into(), json!(common.target));
        m.insert("workers".into(), json!(plan.workers));
        m.insert("source_ips".into(), json!(common.source_ips));
        m.insert("connect_rate".into(), json!(common.connect_rate));
        m.insert("connect_window".into(), json!(common.connect_window));
        m.insert(
            "connect_timeout_secs".into(),
            json!(common.connect_timeout.as_secs_f64()),
        );
        m.insert("room_prefix".into(), json!(plan.room_prefix));
        m.insert("target_pid".into(), json!(common.target_pid));
    }
    let opts = RunOptions {
        scenario_name: name.into(),
        target_pids: common.target_pid.clone(),
        options,
        progress: !common.quiet,
    };
    let report = coord::run(&plan, &opts)?;
    print!("{}", summary(&report));
    if let Some(path) = &common.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &common.html {
        std::fs::write(path, crate::html::html_report(&report))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// A step's publish→ack median and p99 as one cell, `-` without acks.
fn ack_p50_p99(acks: &Value) -> String {
    match (
        acks.get("p50").and_then(Value::as_u64),
        acks.get("p99").and_then(Value::as_u64),
    ) {
        (Some(p50), Some(p99)) => format!("{} / {}", fmt_us(p50), fmt_us(p99)),
        _ => "-".into(),
    }
}

/// The final table on stdout.
pub fn summary(r: &Value) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let u = |v: &Value| v.as_u64().unwrap_or(0);
    let lat = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).map_or("-".into(), fmt_us);
    let c = &r["connections"];
    let _ = writeln!(
        s,
        "{} against {}: connections {} ok, {} failed {}",
        r["scenario"].as_str().unwrap_or("?"),
        r["targets"]
            .as_array()
            .map(|t| t.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","))
            .unwrap_or_default(),
        u(&c["ok"]),
        u(&c["failed"]),
        if c["failed_by_reason"].as_object().is_some_and(|m| !m.is_empty()) {
            c["failed_by_reason"].to_string()
        } else {
            String::new()
        },
    );
    let cl = &r["connect_latency_us"];
    if !cl.is_null() {
        let _ = writeln!(
            s,
            "connect latency: p50 {} p90 {} p99 {} p99.9 {} max {}",
            lat(cl, "p50"),
            lat(cl, "p90"),
            lat(cl, "p99"),
            lat(cl, "p999"),
            lat(cl, "max")
        );
    }
    if let Some(b) = r["target"]["rss_bytes_per_connection"].as_f64() {
        let _ = writeln!(s, "target RSS per connection: {b:.0} B");
    }
    let steps = r["rate"]["steps"].as_array().cloned().unwrap_or_default();
    if !steps.is_empty() {
        let _ = writeln!(
            s,
            "{:<12} {:>12} {:>14} {:>9} {:>6} {:>10} {:>10} {:>10} {:>10} {:>10} {:>21} {:>10} {:>6}",
            "step",
            "deliveries/s",
            "delivered",
            "lost",
            "dup",
            "p50",
            "p90",
            "p99",
            "p99.9",
            "max",
            "ack p50/p99",
            "lag p99",
            "kept"
        );
        for st in &steps {
            let l = &st["latency_us"];
            let _ = writeln!(
                s,
                "{:<12} {:>12.0} {:>14} {:>9} {:>6} {:>10} {:>10} {:>10} {:>10} {:>10} {:>21} {:>10} {:>6}",
                st["name"].as_str().unwrap_or(""),
                st["deliveries_per_sec"].as_f64().unwrap_or(0.0),
                format!("{}/{}", u(&st["delivered"]), u(&st["expected"])),
                u(&st["lost"]),
                u(&st["duplicated"]),
                lat(l, "p50"),
                lat(l, "p90"),
                lat(l, "p99"),
                lat(l, "p999"),
                lat(l, "max"),
                // Publish→ack: on a durable node, includes the fsync.
                ack_p50_p99(&st["ack_latency_us"]),
                // The generator's own lateness, already inside the latency:
                // large here means the figures are the generator's, not the
                // target's.
                lat(&st["send_lag_us"], "p99"),
                if st["kept_up"].as_bool() == Some(true) {
                    "yes"
                } else {
                    "no"
                },
            );
        }
        let l = &r["latency_us"];
        let _ = writeln!(
            s,
            "all steps: delivered {}/{}, lost {}, duplicated {}, out of order {}; p50 {} p90 {} p99 {} p99.9 {} p99.99 {} max {}",
            u(&r["delivered"]),
            u(&r["expected"]),
            u(&r["lost"]),
            u(&r["duplicated"]),
            u(&r["out_of_order"]),
            lat(l, "p50"),
            lat(l, "p90"),
            lat(l, "p99"),
            lat(l, "p999"),
            lat(l, "p9999"),
            lat(l, "max"),
        );
        let a = &r["ack_latency_us"];
        if !a.is_null() {
            let _ = writeln!(
                s,
                "publish→ack: {} acks; p50 {} p90 {} p99 {} p99.9 {} max {}",
                u(&a["count"]),
                lat(a, "p50"),
                lat(a, "p90"),
                lat(a, "p99"),
                lat(a, "p999"),
                lat(a, "max"),
            );
        }
        if let Some(m) = r["rate"]["max_sustained_deliveries_per_sec"].as_f64() {
            let _ = writeln!(s, "max sustained: {m:.0} deliveries/s");
        }
        s += &locality_table(r, &steps);
    }
    s
}

/// Same-node against cross-node deliveries, per step and over the run:
/// printed when the run had several targets.
fn locality_table(r: &Value, steps: &[Value]) -> String {
    use std::fmt::Write as _;
    let several = r["targets"].as_array().is_some_and(|t| t.len() > 1);
    if !several || r["locality"].is_null() {
        return String::new();
    }
    let lat = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).map_or("-".into(), fmt_us);
    let side = |l: &Value| {
        let n = |k: &str| l[k].as_u64().unwrap_or(0);
        let lat_us = &l["latency_us"];
        [
            format!("{}/{}", n("delivered"), n("expected")),
            lat(lat_us, "p50"),
            lat(lat_us, "p99"),
            lat(lat_us, "p999"),
        ]
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "same node (subscriber on the publisher's target) vs cross node (on another target):"
    );
    let _ = writeln!(
        s,
        "{:<12} {:>16} {:>10} {:>10} {:>10} {:>16} {:>10} {:>10} {:>10}",
        "step", "same delivered", "p50", "p99", "p99.9", "cross delivered", "p50", "p99", "p99.9"
    );
    let row = |name: &str, l: &Value| {
        let [a, b, c, d] = side(&l["same_node"]);
        let [e, f, g, h] = side(&l["cross_node"]);
        format!("{name:<12} {a:>16} {b:>10} {c:>10} {d:>10} {e:>16} {f:>10} {g:>10} {h:>10}\n")
    };
    for st in steps {
        s += &row(st["name"].as_str().unwrap_or(""), &st["locality"]);
    }
    s += &row("all steps", &r["locality"]);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_step_table_shows_each_steps_send_lag_and_ack_latency() {
        let report = serde_json::json!({
            "scenario": "fanout",
            "rate": {"steps": [{
                "name": "500/s", "deliveries_per_sec": 5000.0, "delivered": 10, "expected": 10,
                "lost": 0, "duplicated": 0, "kept_up": true,
                "latency_us": {"p50": 900, "p90": 1000, "p99": 2000, "p999": 3000, "max": 4000},
                "send_lag_us": {"p50": 10, "p99": 777, "max": 900},
                "ack_latency_us": {"p50": 1500, "p90": 2000, "p99": 8200, "max": 9000}
            }]}
        });
        let text = summary(&report);
        let header = text.lines().find(|l| l.starts_with("step")).unwrap();
        let row = text.lines().find(|l| l.starts_with("500/s")).unwrap();
        // Right-aligned columns: a cell ends where its heading ends.
        let end_of = |line: &str, cell: &str| {
            line.find(cell)
                .map(|i| line[..i].chars().count() + cell.chars().count())
        };
        assert_eq!(end_of(row, "777 µs"), end_of(header, "lag p99"), "{text}");
        assert_eq!(
            end_of(row, "1.50 ms / 8.20 ms"),
            end_of(header, "ack p50/p99"),
            "{text}"
        );
        assert_eq!(end_of(row, "4.00 ms"), end_of(header, " max"), "{text}");
    }

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        common: Common,
    }

    fn common(args: &[&str]) -> Common {
        Wrap::try_parse_from(std::iter::once("x").chain(args.iter().copied()))
            .unwrap()
            .common
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("99999999h").is_err());
    }

    #[test]
    fn source_ip_ranges() {
        let ips = source_ips(Some("127.0.0.2-127.0.0.5")).unwrap();
        assert_eq!(ips.len(), 4);
        assert_eq!(ips[3], IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5)));
        assert!(source_ips(Some("127.0.0.5-127.0.0.2")).is_err());
        assert!(source_ips(Some("10.0.0.0-10.1.0.0")).is_err());
    }

    #[test]
    fn scenario_file_phases() {
        let dir = std::env::temp_dir().join(format!("lg-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.toml");
        std::fs::write(
            &path,
            r#"
scenario = "fanout"
[fanout]
subscribers = 100
rooms = 10
[[phase]]
name = "ramp-up"
duration = "10s"
from = 0
to = 100
[[phase]]
name = "steady"
duration = "5s"
rate = 100
[[phase]]
name = "spike"
duration = "1s"
rate = 1000
[[phase]]
name = "ramp-down"
duration = "10s"
from = 100
to = 0
"#,
        )
        .unwrap();
        let common = common(&[]);
        let (plan, _) = file_plan(&path, &common).unwrap();
        assert_eq!(plan.subscribers, 100);
        assert_eq!(plan.connections, 101);
        let counts: Vec<u64> = plan.steps.iter().map(Step::count).collect();
        assert_eq!(counts, vec![500, 500, 1000, 500]);
        assert!(!plan.stop_on_fail);
        std::fs::write(
            &path,
            "scenario = \"fanout\"\n[[phase]]\nname = \"x\"\nduration = \"1s\"\n",
        )
        .unwrap();
        assert!(file_plan(&path, &common).unwrap_err().to_string().contains("rate"));
    }

    #[test]
    fn sse_targets_refuse_chat_and_spread_connect_streams_over_rooms() {
        let sse = common(&["--target", "sse://127.0.0.1:1"]);
        let e = chat_plan(&sse, &ChatArgs::default()).unwrap_err().to_string();
        assert!(e.contains("sse:// streams only read: use fanout or connect"), "{e}");
        // ... and so does a chat scenario file.
        let dir = std::env::temp_dir().join(format!("lg-sse-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("chat.toml");
        std::fs::write(
            &path,
            "scenario = \"chat\"\n[[phase]]\nname = \"x\"\nduration = \"1s\"\nrate = 1\n",
        )
        .unwrap();
        let e = file_plan(&path, &sse).unwrap_err().to_string();
        assert!(e.contains("sse:// streams only read"), "{e}");
        let f = fanout_plan(&sse, &FanoutArgs::default()).unwrap();
        assert!(f.is_stream(0) && !f.is_stream(f.subscribers));

        let p = connect_plan(&sse, 10, Duration::ZERO, Some(4)).unwrap();
        assert_eq!(p.rooms_of(6), vec![2]);
        assert_eq!(
            connect_plan(&sse, 10, Duration::ZERO, None).unwrap().rooms_of(6),
            vec![0]
        );
        assert!(connect_plan(&sse, 10, Duration::ZERO, Some(0)).is_err());
        let ws = common(&["--target", "ws://127.0.0.1:1/ws"]);
        let e = connect_plan(&ws, 10, Duration::ZERO, Some(4)).unwrap_err().to_string();
        assert!(e.contains("sse://"), "{e}");
    }

    #[derive(Parser)]
    struct WrapFanout {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        fanout: FanoutArgs,
    }

    fn fanout(args: &[&str]) -> Result<Plan> {
        let w = WrapFanout::try_parse_from(std::iter::once("x").chain(args.iter().copied()))?;
        fanout_plan(&w.common, &w.fanout)
    }

    #[test]
    fn subscribers_and_publishers_go_where_the_flags_say() {
        let two = "ws://127.0.0.1:1/ws,ws://127.0.0.1:2/ws";
        let p = fanout(&["--target", two, "--subscribers", "20", "--rooms", "2"]).unwrap();
        assert_eq!(p.per_target(0..20), [10, 10], "round robin by default");
        let p = fanout(&[
            "--target",
            two,
            "--subscribers",
            "20",
            "--rooms",
            "2",
            "--publishers",
            "3",
            "--subscribers-on",
            "1",
            "--publishers-on",
            "0",
        ])
        .unwrap();
        assert_eq!(p.per_target(0..20), [0, 20]);
        assert_eq!(p.per_target(20..23), [3, 0]);
        assert_eq!(p.locality(0, 20), crate::plan::Locality::CrossNode);

        let e = fanout(&["--target", two, "--publishers-on", "2"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--publishers-on: target index 2 is out of range"), "{e}");
        assert!(e.contains("indexes 0 to 1"), "{e}");
        let e = fanout(&["--subscribers-on", "1"]).unwrap_err().to_string();
        assert!(e.contains("lists 1 URL(s)"), "{e}");
        let e = fanout(&["--target", two, "--subscribers-on", "0,0"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("at most once"), "{e}");
        assert!(fanout(&["--target", two, "--subscribers-on", "x"]).is_err());
    }

    #[test]
    fn scenario_files_take_the_placement_too() {
        let dir = std::env::temp_dir().join(format!("lg-place-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.toml");
        std::fs::write(
            &path,
            "scenario = \"fanout\"\n[fanout]\nsubscribers = 10\npublishers_on = [1]\n\
             [[phase]]\nname = \"x\"\nduration = \"1s\"\nrate = 1\n",
        )
        .unwrap();
        let c = common(&["--target", "ws://127.0.0.1:1/ws,ws://127.0.0.1:2/ws"]);
        let (plan, _) = file_plan(&path, &c).unwrap();
        assert_eq!(plan.publishers_on, [1]);
        assert_eq!(plan.target_of(10), 1);
    }

    #[test]
    fn the_summary_splits_same_and_cross_node_with_several_targets() {
        let side = |d: u64, p50: u64, p99: u64| {
            json!({"expected": 100, "delivered": d, "lost": 100 - d,
                   "latency_us": {"count": d, "p50": p50, "p99": p99, "p999": p99 + 1}})
        };
        let split = json!({"same_node": side(100, 400, 900), "cross_node": side(98, 1_500, 7_000)});
        let mut report = json!({
            "scenario": "fanout",
            "targets": ["socketio://127.0.0.1:3101", "socketio://127.0.0.1:3102"],
            "locality": split,
            "rate": {"steps": [{"name": "200/s", "locality": split, "latency_us": {}}]}
        });
        let text = summary(&report);
        let row = text
            .lines()
            .find(|l| l.starts_with("200/s") && l.contains("98/100"))
            .unwrap();
        let cells: Vec<&str> = row.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect();
        assert_eq!(
            cells,
            [
                "200/s", "100/100", "400 µs", "900 µs", "901 µs", "98/100", "1.50 ms", "7.00 ms", "7.00 ms"
            ],
            "{text}"
        );
        assert!(
            text.lines().any(|l| l.starts_with("all steps") && l.contains("98/100")),
            "{text}"
        );
        // One target: nothing to split.
        report["targets"] = json!(["ws://127.0.0.1:1/ws"]);
        assert!(!summary(&report).contains("cross node"));
    }

    #[test]
    fn too_many_connections_for_one_process_asks_for_workers() {
        let common = common(&["--target", "ws://127.0.0.1:1/ws"]);
        let e = base_plan(&common, Scenario::Connect, 100_000).unwrap_err().to_string();
        assert!(e.contains("--workers 6"), "{e}");
    }
}
