//! `cluster_design`: measures three designs for room-aware cross-node fan-out
//! over Redis Streams, so that Herald keeps the better one on evidence.
//!
//! The tool plays `--nodes N` gateway nodes (one reader task and one Redis
//! connection each) and a publisher, all against ONE dedicated Redis server.
//! `--rooms R` rooms (`room-0` .. `room-{R-1}`) are each followed by
//! `--followers F` of the N nodes (room `i` by nodes `i, i+1, .., i+F-1`
//! mod N), so F = 1 is "a room lives on one node" and F = N is "every node
//! has a subscriber in every room".
//!
//! Designs (the scripts are [`SCRIPT_A`], [`SCRIPT_B`] and [`SCRIPT_C`]):
//! - **A, per-room streams.** A publish is one `EVALSHA`: `HINCRBY
//!   herald:{room}:o offset 1`, then `XADD herald:{room}:s MAXLEN ~ M
//!   <offset>-0 payload <bytes>`. A node reads every room it follows with one
//!   blocking `XREAD COUNT 512 BLOCK 1000 STREAMS k1..kn id1..idn` loop.
//! - **B, partition streams.** `--partitions 64`; room → partition by
//!   FNV-1a 32 of the room name. A publish is one `EVALSHA`: `HINCRBY
//!   herald:p:{p}:o <room> 1`, then `XADD herald:p:{p} MAXLEN ~ M×rooms/p *
//!   room <room> offset <offset> payload <bytes>`. A node reads (one blocking
//!   `XREAD`) the partitions that hold at least one room it follows, and
//!   drops entries of rooms it does not follow (counted as `unneeded`).
//! - **C, per-room streams + partition notices** (the gateway's design:
//!   `notify` in `gateway/src/cluster/lua/common.lua`, `read_loop` and
//!   `read_rooms` in `gateway/src/cluster/bridge.rs`). A publish is A's
//!   script followed by the gateway's `notify`, copied verbatim: `XADD
//!   herald:n:<p> MAXLEN ~ 100000 * r <room>`, p = FNV-1a 64 of the room
//!   name mod 64 (computed in Lua; a node checks every notice it gets
//!   against the Rust value). A node first takes the head of each notice
//!   partition of its rooms (one `XREVRANGE + - COUNT 1` pipeline) and
//!   reads every room it follows once; then it loops: one `XREAD COUNT
//!   2048 [BLOCK ms] STREAMS <its notice partitions> <cursors>` (blocking
//!   only when no room is known to wait), and for the followed rooms named
//!   in the notices ONE non-blocking `XREAD COUNT 512 STREAMS <those
//!   rooms> <their last IDs>` per 1,000 rooms. Notices of rooms it does
//!   not follow share its partitions: they are read and dropped (counted
//!   as `unneeded_notices`, apart from room entries). A partition read that
//!   returns the full COUNT marks every followed room of the partition; a
//!   room read that returns its full COUNT is read again without blocking.
//!   Only the steady state is measured: the start-up reads happen before
//!   the window and are not in the node counters.
//!
//! Every script touches keys of one hash slot only (`{room}` / `{p}`
//! tags), except C's notice key, which the gateway's script also writes
//! undeclared (one Redis instance per room set; no Redis Cluster).
//!
//! One measured run: `FLUSHALL`, load the scripts, start the readers, wait
//! until every reading node is blocked in `XREAD`, snapshot `INFO stats cpu
//! commandstats`, publish open loop (`--rate` per second, message `k` due at
//! `k / rate`, at most `--max-publishes`, for `--duration` seconds; rooms
//! drawn uniformly from a seeded generator; at most `--in-flight`
//! unanswered publishes on one pipelined connection), wait for every reply
//! and until every node has every entry of its streams, let the readers
//! re-block, snapshot again. Deltas:
//! - commands: `cmdstat_*` calls. Client-issued = `evalsha` + `xread` (the
//!   only commands the clients send in the window); the `hincrby` / `xadd`
//!   run inside the scripts and are counted by Redis as well, so "total"
//!   is both. `INFO` itself is excluded.
//! - network: `total_net_input_bytes` / `total_net_output_bytes`, less the
//!   bytes of the snapshot `INFO` exchange (measured by two back-to-back
//!   snapshots before the window).
//! - Redis CPU: `used_cpu_user + used_cpu_sys` (the whole server process).
//!   This includes the server's idle work (`serverCron`); `idle_cpu_us_per_s`
//!   in the JSON is that rate, measured once at start-up.
//! - latency: the publisher writes its send time (ns since the tool's start,
//!   8 bytes LE) at the head of the payload just before handing the command to
//!   the connection; a node records receive time − send time, per entry of a
//!   room it follows (HdrHistogram, µs, 3 significant figures). The open-loop
//!   lateness of the publisher (send time − due time) is `publish_lag_us`.
//! - per node: XREAD calls, request bytes it sent, reply bytes it received
//!   (the exact RESP2 length of each reply, recomputed from the parsed
//!   value; `reply_bytes_accounted_pct` compares their sum with Redis's own
//!   output counter), entries received, entries of rooms it follows, and
//!   entries (and their RESP bytes) of rooms it does NOT follow. For designs
//!   A and C the last must be 0: that is the check that a node with no
//!   subscriber in a room gets none of the room's entries. C's notices are
//!   counted apart: all notices, those of rooms the node does not follow and
//!   their RESP bytes, and the notice reads that named no followed room.
//!
//! What C leaves out of the gateway: the gateway's publish script does more
//! work around the same two XADDs (room meta and epoch, idempotency,
//! persistence) and its entries carry more fields; here every design has
//! the same minimal script body and entry, so the differences are the
//! designs'. The gateway's reader blocks 2,000 ms; here every design uses
//! `--block-ms`.
//!
//! Subcommands:
//! - `fanout` (default): `--design a,b,c` (a list), `--followers 1,3` (a
//!   list: one run per value and design, designs side by side).
//! - `xread-growth`: one node following `--followed 10,100,1000,10000`
//!   rooms at a low rate, every design, plus one publish-only run per design
//!   (no reader) as the baseline; `xread_round.cpu_us` = (Redis CPU −
//!   baseline CPU per publish × publishes) / rounds, i.e. what one read
//!   round costs Redis. A round is one blocking-type XREAD (A: over the
//!   rooms, B: over the partitions; parse, look up every key, block on
//!   every key, unblock, reply); for C it is one notice XREAD plus the room
//!   XREAD that follows it. `xread_round.reader_cpu_us_per_publish` is the
//!   same excess per publish.
//!
//! `--json FILE` writes `{tool, redis_version, idle_cpu_us_per_s, mode,
//! runs: [...]}`; each run has its configuration, `publishes`,
//! `per_publish {client_cmds, total_cmds, xread, net_in_bytes,
//! net_out_bytes, redis_cpu_us, unneeded_entries, unneeded_bytes, notices,
//! notice_bytes, unneeded_notices, unneeded_notice_bytes, room_xread,
//! idle_wakeups, evalsha_usec, xread_usec}` (`idle_wakeups`: C's notice
//! reads that named no followed room, i.e. wake-ups caused only by rooms
//! the node does not follow; `*_usec`: `commandstats` time),
//! `commands {name: {calls, usec}}`, `latency_us {p50, p99, p999, max}`,
//! `publish_lag_us`, `node_reports [...]`, and `complete` (every node got every
//! entry before `--drain-timeout`).
//!
//! The server must be dedicated to the tool: it runs `FLUSHALL` before every
//! run and reads server-wide counters. It refuses a non-empty database unless
//! `--flush` is given. The replies are sized as RESP2 (the default protocol).

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::{Args, Parser, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Value};
use serde_json::{Value as Json, json};
use tokio::sync::Semaphore;

/// Design A: KEYS = [offset hash, stream]; ARGV = [maxlen, payload].
const SCRIPT_A: &str = r"
local off = redis.call('HINCRBY', KEYS[1], 'offset', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], off .. '-0', 'payload', ARGV[2])
return off
";

/// Design B: KEYS = [partition offset hash, partition stream];
/// ARGV = [room, maxlen, payload].
const SCRIPT_B: &str = r"
local off = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'room', ARGV[1], 'offset', off, 'payload', ARGV[3])
return off
";

/// Design C: A's script, then the gateway's `notify` (verbatim from
/// `gateway/src/cluster/lua/common.lua`). KEYS = [offset hash, stream
/// `herald:{room}:s`]; ARGV = [maxlen, payload].
const SCRIPT_C: &str = r"
local NOTICE_PARTITIONS = 64
local function notify(stream)
  local room = string.sub(stream, 9, -4)
  local h = 2216829733
  for i = 1, #room do
    h = bit.bxor(h, string.byte(room, i)) % 4294967296
    h = (h * 435) % 4294967296
  end
  redis.call('XADD', 'herald:n:' .. (h % NOTICE_PARTITIONS), 'MAXLEN', '~', '100000', '*', 'r', room)
end
local off = redis.call('HINCRBY', KEYS[1], 'offset', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], off .. '-0', 'payload', ARGV[2])
notify(KEYS[2])
return off
";

/// Design C: notice partitions (`NOTICE_PARTITIONS` in the gateway's Lua).
const NOTICE_PARTITIONS: u32 = 64;
/// Design C: notices one partition read takes at most (gateway `NOTICE_COUNT`).
const NOTICE_COUNT: usize = 2_048;
/// Design C: rooms one non-blocking room read covers at most (gateway
/// `ROOMS_PER_READ`).
const ROOMS_PER_READ: usize = 1_000;

/// The commands clients send inside the measured window.
const CLIENT_COMMANDS: [&str; 2] = ["evalsha", "xread"];
/// Every command the window may hold: the clients' and the scripts'.
const OWN_COMMANDS: [&str; 4] = ["evalsha", "xread", "hincrby", "xadd"];

/// Bounds that keep one invocation short on a shared machine.
const MAX_PUBLISHES: u64 = 1_000_000;
const MAX_ROOMS: u32 = 100_000;
const MAX_NODES: usize = 64;

#[derive(Parser, Debug)]
#[command(about = "Per-room streams, partition streams, or both with notices: cross-node fan-out")]
struct Cli {
    /// Redis URL of a server dedicated to this tool (it is FLUSHALLed).
    #[arg(long)]
    redis: String,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Allow FLUSHALL of a non-empty database.
    #[arg(long)]
    flush: bool,
    /// Tokio worker threads for all simulated nodes and the publisher
    /// (default 1: Redis keeps the other core of a 2-core machine).
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    #[command(subcommand)]
    mode: Option<Mode>,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// N nodes, R rooms, each followed by F nodes; every design.
    Fanout(FanoutArgs),
    /// One node following 10 .. 10,000 rooms: the cost of one XREAD round.
    XreadGrowth(GrowthArgs),
}

#[derive(Args, Debug, Clone)]
struct Common {
    /// Designs to run, in this order for each configuration.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "a,b,c")]
    design: Vec<Design>,
    /// Payload bytes per publish (the first 8 carry the send time).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Per-room retention: design A `MAXLEN ~ M` per room stream; design B
    /// `MAXLEN ~ M × ceil(rooms / partitions)` per partition stream.
    #[arg(long, default_value_t = 1000)]
    maxlen: u64,
    /// Design B partition count.
    #[arg(long, default_value_t = 64)]
    partitions: u32,
    /// XREAD COUNT (A and B; C's room reads).
    #[arg(long, default_value_t = 512)]
    count: u32,
    /// XREAD BLOCK in milliseconds (every design; the gateway's C reader
    /// uses 2,000, which only changes how often an idle node times out).
    #[arg(long, default_value_t = 1000)]
    block_ms: u64,
    /// Unanswered publishes allowed on the publisher's connection.
    #[arg(long, default_value_t = 1024)]
    in_flight: usize,
    /// Seed of the room choice.
    #[arg(long, default_value_t = 0x5eed)]
    seed: u64,
    /// Seconds to wait, after the last publish reply, for the nodes to read
    /// everything.
    #[arg(long, default_value_t = 10.0)]
    drain_timeout: f64,
}

#[derive(Args, Debug, Clone)]
struct FanoutArgs {
    #[command(flatten)]
    common: Common,
    /// Simulated gateway nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Rooms.
    #[arg(long, default_value_t = 1000)]
    rooms: u32,
    /// Nodes following each room; a list runs each value.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    followers: Vec<usize>,
    /// Publishes per second (open loop).
    #[arg(long, default_value_t = 5000.0)]
    rate: f64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 4.0)]
    duration: f64,
    /// Upper bound on publishes per run.
    #[arg(long, default_value_t = 20_000)]
    max_publishes: u64,
}

#[derive(Args, Debug, Clone)]
struct GrowthArgs {
    #[command(flatten)]
    common: Common,
    /// Rooms followed by the one node; one run per value and design.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000,10000")]
    followed: Vec<u32>,
    /// Publishes per second (low, so most XREAD rounds carry one entry).
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Seconds of publishing per run.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Design {
    /// Per-room streams.
    A,
    /// Partition streams.
    B,
    /// Per-room streams + partition notices.
    C,
}

impl Design {
    fn name(self) -> &'static str {
        match self {
            Self::A => "A per-room",
            Self::B => "B partition",
            Self::C => "C room+notice",
        }
    }
}

/// Everything one measured run needs.
#[derive(Clone, Debug)]
struct RunConfig {
    design: Design,
    nodes: usize,
    rooms: u32,
    followers: usize,
    rate: f64,
    publishes: u64,
    /// `false`: publish only, no node reads (the baseline of the growth series).
    readers: bool,
    common: Common,
}

/// The sha1 of every script, loaded once per run (after FLUSHALL).
#[derive(Clone, Debug)]
struct Shas {
    a: String,
    b: String,
    c: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cluster_design: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    ensure!(
        (1..=16).contains(&cli.client_threads),
        "--client-threads must be 1..=16"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.client_threads)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(run_async(cli))
}

async fn run_async(cli: Cli) -> Result<()> {
    let client = Client::open(cli.redis.as_str()).context("--redis URL")?;
    let mut admin = connect(&client, Some(Duration::from_secs(30))).await?;
    let server = info(&mut admin, &["server", "keyspace", "clients"]).await?;
    let redis_version = server.get("redis_version").cloned().unwrap_or_default();
    let dbsize: u64 = redis::cmd("DBSIZE").query_async(&mut admin).await?;
    if dbsize > 0 && !cli.flush {
        bail!("the database holds {dbsize} keys; this tool FLUSHALLs it (pass --flush on a dedicated server)");
    }
    if let Some(n) = server.get("connected_clients")
        && n != "1"
    {
        eprintln!("warning: {n} clients connected; other traffic pollutes the server-wide counters");
    }
    let idle = idle_cpu_us_per_s(&mut admin).await?;
    eprintln!("redis {redis_version}, idle Redis CPU {idle:.0} µs/s");

    let mode = cli.mode.unwrap_or(Mode::Fanout(FanoutArgs::parse_default()));
    let (mode_name, runs) = match &mode {
        Mode::Fanout(args) => ("fanout", fanout_configs(args)?),
        Mode::XreadGrowth(args) => ("xread-growth", growth_configs(args)?),
    };

    let mut results = Vec::with_capacity(runs.len());
    for cfg in &runs {
        eprintln!(
            "run: design {} nodes {} rooms {} followers {} rate {}/s publishes {}{}",
            cfg.design.name(),
            cfg.nodes,
            cfg.rooms,
            cfg.followers,
            cfg.rate,
            cfg.publishes,
            if cfg.readers { "" } else { " (no readers)" }
        );
        let result = measure(&client, &mut admin, cfg).await?;
        results.push(result);
    }
    redis::cmd("FLUSHALL").arg("SYNC").query_async::<()>(&mut admin).await?;

    if matches!(mode, Mode::XreadGrowth(_)) {
        add_xread_round_cost(&mut results);
    }
    print_markdown(mode_name, &results);

    if let Some(path) = &cli.json {
        let doc = json!({
            "tool": "cluster_design",
            "redis_version": redis_version,
            "idle_cpu_us_per_s": idle,
            "client_threads": cli.client_threads,
            "mode": mode_name,
            "runs": results,
        });
        let text = serde_json::to_string_pretty(&doc)?;
        fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

impl FanoutArgs {
    fn parse_default() -> Self {
        // `fanout` with every default: the same values clap would produce.
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            args: FanoutArgs,
        }
        Wrap::parse_from(["fanout"]).args
    }
}

fn check_common(c: &Common) -> Result<()> {
    ensure!(!c.design.is_empty(), "--design needs at least one value");
    ensure!((8..=1 << 20).contains(&c.payload), "--payload must be 8..=1 MiB");
    ensure!((1..=4096).contains(&c.partitions), "--partitions must be 1..=4096");
    ensure!((1..=100_000).contains(&c.count), "--count must be 1..=100000");
    ensure!((1..=60_000).contains(&c.block_ms), "--block-ms must be 1..=60000");
    ensure!((1..=65_536).contains(&c.in_flight), "--in-flight must be 1..=65536");
    ensure!(c.maxlen >= 1, "--maxlen must be at least 1");
    ensure!(
        c.drain_timeout > 0.0 && c.drain_timeout <= 120.0,
        "--drain-timeout must be in (0, 120]"
    );
    Ok(())
}

fn publishes_for(rate: f64, duration: f64, max: u64) -> Result<u64> {
    ensure!(rate > 0.0 && rate <= 1e6, "--rate must be in (0, 1e6]");
    ensure!(duration > 0.0 && duration <= 120.0, "--duration must be in (0, 120]");
    // Truncation is the intent: whole publishes that fall due within the duration.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let n = (rate * duration) as u64;
    Ok(n.min(max).clamp(1, MAX_PUBLISHES))
}

fn fanout_configs(args: &FanoutArgs) -> Result<Vec<RunConfig>> {
    check_common(&args.common)?;
    ensure!((1..=MAX_NODES).contains(&args.nodes), "--nodes must be 1..={MAX_NODES}");
    ensure!((1..=MAX_ROOMS).contains(&args.rooms), "--rooms must be 1..={MAX_ROOMS}");
    let publishes = publishes_for(args.rate, args.duration, args.max_publishes)?;
    let mut runs = Vec::new();
    for &followers in &args.followers {
        ensure!((1..=args.nodes).contains(&followers), "--followers must be 1..=--nodes");
        for &design in &args.common.design {
            runs.push(RunConfig {
                design,
                nodes: args.nodes,
                rooms: args.rooms,
                followers,
                rate: args.rate,
                publishes,
                readers: true,
                common: args.common.clone(),
            });
        }
    }
    Ok(runs)
}

fn growth_configs(args: &GrowthArgs) -> Result<Vec<RunConfig>> {
    check_common(&args.common)?;
    let publishes = publishes_for(args.rate, args.duration, MAX_PUBLISHES)?;
    ensure!(!args.followed.is_empty(), "--followed needs at least one value");
    let mut runs = Vec::new();
    for &design in &args.common.design {
        let base = RunConfig {
            design,
            nodes: 1,
            rooms: args.followed[0],
            followers: 1,
            rate: args.rate,
            publishes,
            readers: false,
            common: args.common.clone(),
        };
        runs.push(base.clone());
        for &rooms in &args.followed {
            ensure!((1..=MAX_ROOMS).contains(&rooms), "--followed must be 1..={MAX_ROOMS}");
            runs.push(RunConfig {
                rooms,
                readers: true,
                ..base.clone()
            });
        }
    }
    Ok(runs)
}

async fn connect(client: &Client, timeout: Option<Duration>) -> Result<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_response_timeout(timeout)
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_pipeline_buffer_size(4096);
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .context("connecting to Redis")
}

// ---------------------------------------------------------------------------
// Layout: room names, partitions, who follows what.

struct Layout {
    names: Vec<String>,
    /// Design B: room index → partition (FNV-1a 32).
    partition: Vec<u32>,
    /// Design C: room index → notice partition (FNV-1a 64, as the gateway).
    notice: Vec<u32>,
    /// `followed_by[node]`: rooms the node has local subscribers in.
    followed_by: Vec<Vec<u32>>,
}

impl Layout {
    fn new(rooms: u32, nodes: usize, followers: usize, partitions: u32) -> Self {
        let names: Vec<String> = (0..rooms).map(|i| format!("room-{i}")).collect();
        let partition = names.iter().map(|n| fnv1a(n.as_bytes()) % partitions).collect();
        let notice = names.iter().map(|n| notice_partition(n.as_bytes())).collect();
        let mut followed_by = vec![Vec::new(); nodes];
        for room in 0..rooms {
            for j in 0..followers {
                followed_by[(room as usize + j) % nodes].push(room);
            }
        }
        Self {
            names,
            partition,
            notice,
            followed_by,
        }
    }
}

/// FNV-1a, 32 bits.
fn fnv1a(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// FNV-1a, 64 bits (the gateway's `cluster::redis::fnv1a`).
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Design C: the notice partition of a room (the gateway's
/// `notice_partition`; `notify` in Lua computes the same).
fn notice_partition(room: &[u8]) -> u32 {
    // The remainder is below 64.
    u32::try_from(fnv1a64(room) % u64::from(NOTICE_PARTITIONS)).unwrap_or(0)
}

fn notice_key(p: u32) -> String {
    format!("herald:n:{p}")
}

fn room_key(name: &str) -> String {
    format!("herald:{{{name}}}:s")
}

fn room_offset_key(name: &str) -> String {
    format!("herald:{{{name}}}:o")
}

fn partition_key(p: u32) -> String {
    format!("herald:p:{{{p}}}")
}

fn partition_offset_key(p: u32) -> String {
    format!("herald:p:{{{p}}}:o")
}

// ---------------------------------------------------------------------------
// INFO snapshots.

#[derive(Clone, Debug, Default)]
struct Snapshot {
    net_in: u64,
    net_out: u64,
    cpu_us: f64,
    connected_clients: u64,
    /// `cmdstat_<name>` → (calls, usec).
    cmds: HashMap<String, (u64, u64)>,
}

async fn info(conn: &mut MultiplexedConnection, sections: &[&str]) -> Result<HashMap<String, String>> {
    let text: String = redis::cmd("INFO").arg(sections).query_async(conn).await?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect())
}

async fn snapshot(conn: &mut MultiplexedConnection) -> Result<Snapshot> {
    let fields = info(conn, &["stats", "cpu", "commandstats", "clients"]).await?;
    let num = |k: &str| -> Result<u64> {
        fields
            .get(k)
            .with_context(|| format!("INFO has no {k}"))?
            .parse()
            .with_context(|| format!("INFO {k}"))
    };
    let secs = |k: &str| -> Result<f64> {
        fields
            .get(k)
            .with_context(|| format!("INFO has no {k}"))?
            .parse::<f64>()
            .with_context(|| format!("INFO {k}"))
    };
    let mut cmds = HashMap::new();
    for (k, v) in &fields {
        let Some(name) = k.strip_prefix("cmdstat_") else {
            continue;
        };
        let mut calls = 0;
        let mut usec = 0;
        for kv in v.split(',') {
            match kv.split_once('=') {
                Some(("calls", n)) => calls = n.parse().unwrap_or(0),
                Some(("usec", n)) => usec = n.parse().unwrap_or(0),
                _ => {}
            }
        }
        cmds.insert(name.to_owned(), (calls, usec));
    }
    Ok(Snapshot {
        net_in: num("total_net_input_bytes")?,
        net_out: num("total_net_output_bytes")?,
        cpu_us: (secs("used_cpu_user")? + secs("used_cpu_sys")?) * 1e6,
        connected_clients: num("connected_clients")?,
        cmds,
    })
}

/// What one snapshot `INFO` exchange adds to the counters (bytes in, out).
fn snapshot_overhead(s0: &Snapshot, s1: &Snapshot) -> (u64, u64) {
    (s1.net_in - s0.net_in, s1.net_out - s0.net_out)
}

async fn idle_cpu_us_per_s(conn: &mut MultiplexedConnection) -> Result<f64> {
    let s0 = snapshot(conn).await?;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let s1 = snapshot(conn).await?;
    Ok((s1.cpu_us - s0.cpu_us) / t0.elapsed().as_secs_f64())
}

async fn blocked_clients(conn: &mut MultiplexedConnection) -> Result<u64> {
    let f = info(conn, &["clients"]).await?;
    Ok(f.get("blocked_clients").and_then(|v| v.parse().ok()).unwrap_or(0))
}

// ---------------------------------------------------------------------------
// Nodes.

/// What a node reads, fixed before the run.
struct NodePlan {
    node: usize,
    design: Design,
    /// Stream keys of the blocking XREAD, in order (C: notice partitions).
    keys: Vec<String>,
    /// Design A: key index → room index. Design C: key index → notice
    /// partition.
    key_room: Vec<u32>,
    /// Rooms followed, by index.
    follows: Vec<bool>,
    /// Designs B and C: room name → room index.
    room_index: HashMap<Vec<u8>, u32>,
    /// Design C: room index → notice partition, for every room.
    notice: Vec<u32>,
    /// Design C: room index → stream key, for every room.
    room_keys: Vec<String>,
}

/// Counters a node updates as it reads; the publisher side watches `entries`.
#[derive(Default, Debug)]
struct NodeCounters {
    entries: AtomicU64,
}

#[derive(Debug)]
struct NodeReport {
    node: usize,
    followed_rooms: usize,
    keys: usize,
    /// Every XREAD (C: notice reads + room reads).
    xread_calls: u64,
    xread_timeouts: u64,
    request_bytes: u64,
    reply_bytes: u64,
    /// Stream entries carrying a message (C: room entries, not notices).
    entries: u64,
    wanted: u64,
    unneeded: u64,
    unneeded_bytes: u64,
    latency: Histogram<u64>,
    /// Design C: notice reads, their request and reply bytes.
    notice_calls: u64,
    notice_request_bytes: u64,
    notice_reply_bytes: u64,
    /// Design C: notices received, those of rooms the node does not follow,
    /// and the RESP bytes of the latter (each `[id, [r, room]]`).
    notices: u64,
    unneeded_notices: u64,
    unneeded_notice_bytes: u64,
    /// Design C: notice reads that returned notices, none of a followed
    /// room: wake-ups caused only by rooms the node does not follow.
    idle_wakeups: u64,
    /// Design C: room reads, the rooms they asked for, how many of those
    /// came back empty (already read by an earlier round), and the bytes.
    room_calls: u64,
    room_keys_asked: u64,
    room_keys_empty: u64,
    room_request_bytes: u64,
    room_reply_bytes: u64,
}

impl NodeReport {
    fn new(plan: &NodePlan) -> Result<Self> {
        Ok(Self {
            node: plan.node,
            followed_rooms: plan.follows.iter().filter(|&&f| f).count(),
            keys: plan.keys.len(),
            xread_calls: 0,
            xread_timeouts: 0,
            request_bytes: 0,
            reply_bytes: 0,
            entries: 0,
            wanted: 0,
            unneeded: 0,
            unneeded_bytes: 0,
            latency: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            notice_calls: 0,
            notice_request_bytes: 0,
            notice_reply_bytes: 0,
            notices: 0,
            unneeded_notices: 0,
            unneeded_notice_bytes: 0,
            idle_wakeups: 0,
            room_calls: 0,
            room_keys_asked: 0,
            room_keys_empty: 0,
            room_request_bytes: 0,
            room_reply_bytes: 0,
        })
    }
}

fn plan_nodes(layout: &Layout, cfg: &RunConfig) -> Vec<NodePlan> {
    let rooms = layout.names.len();
    (0..cfg.nodes)
        .map(|node| {
            let mine = &layout.followed_by[node];
            let mut follows = vec![false; rooms];
            for &r in mine {
                follows[r as usize] = true;
            }
            let (keys, key_room) = match cfg.design {
                Design::A => (
                    mine.iter().map(|&r| room_key(&layout.names[r as usize])).collect(),
                    mine.clone(),
                ),
                Design::B => {
                    let parts: BTreeSet<u32> = mine.iter().map(|&r| layout.partition[r as usize]).collect();
                    (parts.into_iter().map(partition_key).collect(), Vec::new())
                }
                Design::C => {
                    let parts: BTreeSet<u32> = mine.iter().map(|&r| layout.notice[r as usize]).collect();
                    (
                        parts.iter().map(|&p| notice_key(p)).collect(),
                        parts.into_iter().collect(),
                    )
                }
            };
            let room_index = match cfg.design {
                Design::A => HashMap::new(),
                Design::B | Design::C => layout
                    .names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (n.as_bytes().to_vec(), u32::try_from(i).unwrap_or(u32::MAX)))
                    .collect(),
            };
            let (notice, room_keys) = match cfg.design {
                Design::C => (
                    layout.notice.clone(),
                    layout.names.iter().map(|n| room_key(n)).collect(),
                ),
                Design::A | Design::B => (Vec::new(), Vec::new()),
            };
            NodePlan {
                node,
                design: cfg.design,
                keys,
                key_room,
                follows,
                room_index,
                notice,
                room_keys,
            }
        })
        .collect()
}

/// Entries `node` will receive, given the publishes per room: those of its
/// rooms (A, C; C's notices are not entries), or those of every room in its
/// partitions (B).
fn expected_entries(design: Design, layout: &Layout, node: usize, per_room: &[u64]) -> u64 {
    let mine = &layout.followed_by[node];
    match design {
        Design::A | Design::C => mine.iter().map(|&r| per_room[r as usize]).sum(),
        Design::B => {
            let parts: HashSet<u32> = mine.iter().map(|&r| layout.partition[r as usize]).collect();
            layout
                .partition
                .iter()
                .zip(per_room)
                .filter(|(p, _)| parts.contains(p))
                .map(|(_, &k)| k)
                .sum()
        }
    }
}

async fn node_loop(
    mut conn: MultiplexedConnection,
    plan: NodePlan,
    common: Common,
    counters: Arc<NodeCounters>,
    stop: Arc<AtomicBool>,
    base: Instant,
) -> Result<NodeReport> {
    if plan.design == Design::C {
        return node_loop_c(conn, plan, common, counters, stop, base).await;
    }
    let mut ids: Vec<String> = vec!["0-0".to_owned(); plan.keys.len()];
    let key_index: HashMap<Vec<u8>, usize> = plan
        .keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.as_bytes().to_vec(), i))
        .collect();
    let mut report = NodeReport::new(&plan)?;
    let count = common.count.to_string();
    let block = common.block_ms.to_string();
    while !stop.load(Relaxed) {
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(&count).arg("BLOCK").arg(&block).arg("STREAMS");
        for k in &plan.keys {
            cmd.arg(k);
        }
        for id in &ids {
            cmd.arg(id);
        }
        report.request_bytes += command_len(&cmd);
        report.xread_calls += 1;
        let reply: Value = cmd.query_async(&mut conn).await?;
        let now_ns = nanos_since(base);
        report.reply_bytes += resp2_len(&reply);
        let Value::Array(streams) = reply else {
            report.xread_timeouts += 1;
            continue;
        };
        let mut got = 0;
        for stream in streams {
            let Value::Array(mut pair) = stream else {
                bail!("XREAD: stream is not [key, entries]");
            };
            ensure!(pair.len() == 2, "XREAD: stream is not [key, entries]");
            let entries = pair.pop();
            let key = pair.pop();
            let (Some(Value::BulkString(key)), Some(Value::Array(entries))) = (key, entries) else {
                bail!("XREAD: unexpected stream shape");
            };
            let k = *key_index.get(&key).context("XREAD: a key the node did not ask for")?;
            for entry in &entries {
                let (id, fields) = split_entry(entry)?;
                got += 1;
                let room = match plan.design {
                    Design::A => Some(plan.key_room[k]),
                    Design::B | Design::C => field(fields, b"room").and_then(|n| plan.room_index.get(n).copied()),
                };
                let followed = room.is_some_and(|r| plan.follows[r as usize]);
                count_entry(&mut report, followed, entry, fields, now_ns);
                ids[k].clear();
                ids[k].push_str(id);
            }
        }
        report.entries += got;
        counters.entries.fetch_add(got, Relaxed);
    }
    Ok(report)
}

/// Counts one message entry: its latency if the node follows its room, its
/// bytes as unneeded if not.
fn count_entry(report: &mut NodeReport, followed: bool, entry: &Value, fields: &[Value], now_ns: u64) {
    if followed {
        report.wanted += 1;
        if let Some(p) = field(fields, b"payload")
            && let Some(head) = p.first_chunk::<8>()
        {
            let sent = u64::from_le_bytes(*head);
            let us = now_ns.saturating_sub(sent) / 1000;
            report.latency.saturating_record(us.max(1));
        }
    } else {
        report.unneeded += 1;
        report.unneeded_bytes += resp2_len(entry);
    }
}

/// The `[[key, entries], ...]` pairs of an XREAD reply (empty on `Nil`).
fn stream_pairs(reply: Value) -> Result<Vec<(Vec<u8>, Vec<Value>)>> {
    let Value::Array(streams) = reply else {
        return Ok(Vec::new());
    };
    streams
        .into_iter()
        .map(|stream| {
            let Value::Array(mut pair) = stream else {
                bail!("XREAD: stream is not [key, entries]");
            };
            ensure!(pair.len() == 2, "XREAD: stream is not [key, entries]");
            let entries = pair.pop();
            let key = pair.pop();
            let (Some(Value::BulkString(key)), Some(Value::Array(entries))) = (key, entries) else {
                bail!("XREAD: unexpected stream shape");
            };
            Ok((key, entries))
        })
        .collect()
}

/// Design C, as the gateway's `read_loop`: block on the notice partitions
/// of the followed rooms, then read only the followed rooms they name.
async fn node_loop_c(
    mut conn: MultiplexedConnection,
    plan: NodePlan,
    common: Common,
    counters: Arc<NodeCounters>,
    stop: Arc<AtomicBool>,
    base: Instant,
) -> Result<NodeReport> {
    let mut report = NodeReport::new(&plan)?;
    let followed: Vec<u32> = (0..plan.follows.len())
        .filter(|&r| plan.follows[r])
        .map(u32::try_from)
        .collect::<Result<_, _>>()?;
    // Followed rooms by notice partition (a full partition read marks them all).
    let mut partition_rooms: HashMap<u32, Vec<u32>> = HashMap::new();
    for &r in &followed {
        partition_rooms.entry(plan.notice[r as usize]).or_default().push(r);
    }
    let key_partition: HashMap<Vec<u8>, usize> = plan
        .keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.as_bytes().to_vec(), i))
        .collect();
    let key_room: HashMap<Vec<u8>, u32> = followed
        .iter()
        .map(|&r| (plan.room_keys[r as usize].as_bytes().to_vec(), r))
        .collect();
    // Where each room is read from (followed rooms only).
    let mut last: Vec<String> = vec!["0-0".to_owned(); plan.follows.len()];

    // Start-up, as after a (re)connection: cursors at the partitions'
    // heads first, then every followed room read once.
    let mut pipe = redis::pipe();
    for k in &plan.keys {
        pipe.cmd("XREVRANGE").arg(k).arg("+").arg("-").arg("COUNT").arg(1);
    }
    let heads: Vec<Value> = if plan.keys.is_empty() {
        Vec::new()
    } else {
        pipe.query_async(&mut conn).await?
    };
    let mut cursors: Vec<String> = heads.iter().map(head_id).collect::<Result<_>>()?;
    let mut dirty: BTreeSet<u32> = followed.iter().copied().collect();
    while !dirty.is_empty() {
        dirty = read_rooms_c(
            &mut conn,
            &plan,
            &common,
            &key_room,
            dirty,
            &mut last,
            &mut report,
            base,
        )
        .await?;
    }
    // The steady state starts here: the start-up reads are not counted.
    let mut report = NodeReport::new(&plan)?;
    let notice_count = NOTICE_COUNT.to_string();
    let block = common.block_ms.to_string();
    while !stop.load(Relaxed) {
        if !dirty.is_empty() {
            let before = report.entries;
            dirty = read_rooms_c(
                &mut conn,
                &plan,
                &common,
                &key_room,
                dirty,
                &mut last,
                &mut report,
                base,
            )
            .await?;
            counters.entries.fetch_add(report.entries - before, Relaxed);
        }
        if plan.keys.is_empty() {
            break;
        }
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(&notice_count);
        // Block only when nothing is known to wait.
        if dirty.is_empty() {
            cmd.arg("BLOCK").arg(&block);
        }
        cmd.arg("STREAMS");
        for k in &plan.keys {
            cmd.arg(k);
        }
        for id in &cursors {
            cmd.arg(id);
        }
        let len = command_len(&cmd);
        report.request_bytes += len;
        report.notice_request_bytes += len;
        report.xread_calls += 1;
        report.notice_calls += 1;
        let reply: Value = cmd.query_async(&mut conn).await?;
        let len = resp2_len(&reply);
        report.reply_bytes += len;
        report.notice_reply_bytes += len;
        if reply == Value::Nil {
            report.xread_timeouts += 1;
            continue;
        }
        let was_dirty = dirty.len();
        let mut full = false;
        for (key, entries) in stream_pairs(reply)? {
            let k = *key_partition
                .get(&key)
                .context("XREAD: a notice key the node did not ask for")?;
            let p = plan.key_room[k];
            for entry in &entries {
                let (id, fields) = split_entry(entry)?;
                report.notices += 1;
                cursors[k].clear();
                cursors[k].push_str(id);
                let room = field(fields, b"r")
                    .and_then(|n| plan.room_index.get(n).copied())
                    .context("a notice names no known room")?;
                ensure!(
                    plan.notice[room as usize] == p,
                    "the notice of room {room} is in partition {p}, Rust computes {}",
                    plan.notice[room as usize]
                );
                if plan.follows[room as usize] {
                    dirty.insert(room);
                } else {
                    report.unneeded_notices += 1;
                    report.unneeded_notice_bytes += resp2_len(entry);
                }
            }
            if entries.len() >= NOTICE_COUNT {
                // More notices wait: the next round does not block.
                full = true;
                dirty.extend(partition_rooms.get(&p).into_iter().flatten().copied());
            }
        }
        if was_dirty == 0 && dirty.is_empty() && !full {
            report.idle_wakeups += 1;
        }
    }
    Ok(report)
}

/// The ID of the one entry an `XREVRANGE + - COUNT 1` returned, `0-0` for
/// an empty stream (the gateway's `notice_heads`).
fn head_id(reply: &Value) -> Result<String> {
    let top = match reply {
        Value::Array(items) => items.first().map(split_entry).transpose()?,
        _ => None,
    };
    Ok(top.map_or("0-0", |(id, _)| id).to_owned())
}

/// Design C, as the gateway's `read_rooms`: reads `rooms` from their last
/// IDs (non-blocking, at most [`ROOMS_PER_READ`] rooms per XREAD) and
/// returns the rooms that have more entries waiting.
#[allow(clippy::too_many_arguments)]
async fn read_rooms_c(
    conn: &mut MultiplexedConnection,
    plan: &NodePlan,
    common: &Common,
    key_room: &HashMap<Vec<u8>, u32>,
    rooms: BTreeSet<u32>,
    last: &mut [String],
    report: &mut NodeReport,
    base: Instant,
) -> Result<BTreeSet<u32>> {
    let mut more = BTreeSet::new();
    let asked: Vec<u32> = rooms.into_iter().collect();
    let count = common.count.to_string();
    for chunk in asked.chunks(ROOMS_PER_READ) {
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(&count).arg("STREAMS");
        for &r in chunk {
            cmd.arg(&plan.room_keys[r as usize]);
        }
        for &r in chunk {
            cmd.arg(&last[r as usize]);
        }
        let len = command_len(&cmd);
        report.request_bytes += len;
        report.room_request_bytes += len;
        report.xread_calls += 1;
        report.room_calls += 1;
        report.room_keys_asked += len_u64(chunk.len());
        let reply: Value = cmd.query_async(conn).await?;
        let now_ns = nanos_since(base);
        let len = resp2_len(&reply);
        report.reply_bytes += len;
        report.room_reply_bytes += len;
        let streams = stream_pairs(reply)?;
        report.room_keys_empty += len_u64(chunk.len() - streams.len());
        for (key, entries) in streams {
            let room = *key_room
                .get(&key)
                .context("XREAD: a room key the node did not ask for")?;
            report.entries += len_u64(entries.len());
            for entry in &entries {
                let (id, fields) = split_entry(entry)?;
                count_entry(report, plan.follows[room as usize], entry, fields, now_ns);
                last[room as usize].clear();
                last[room as usize].push_str(id);
            }
            if entries.len() >= common.count as usize {
                more.insert(room);
            }
        }
    }
    Ok(more)
}

/// `[id, [f1, v1, ...]]` → (id, fields).
fn split_entry(entry: &Value) -> Result<(&str, &[Value])> {
    if let Value::Array(parts) = entry
        && let [Value::BulkString(id), Value::Array(fields)] = parts.as_slice()
    {
        return Ok((std::str::from_utf8(id)?, fields.as_slice()));
    }
    bail!("XREAD: entry is not [id, fields]")
}

fn field<'a>(fields: &'a [Value], name: &[u8]) -> Option<&'a [u8]> {
    fields.chunks_exact(2).find_map(|kv| match kv {
        [Value::BulkString(k), Value::BulkString(v)] if k == name => Some(v.as_slice()),
        _ => None,
    })
}

fn nanos_since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn decimal_len(mut n: u64) -> u64 {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

fn len_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// The RESP2 length of a reply as Redis wrote it.
fn resp2_len(v: &Value) -> u64 {
    match v {
        // XREAD's timeout is the null array `*-1\r\n`.
        Value::Nil => 5,
        Value::Okay => 5,
        Value::Int(i) => 3 + decimal_len(i.unsigned_abs()) + u64::from(*i < 0),
        Value::SimpleString(s) => 3 + len_u64(s.len()),
        Value::BulkString(b) => {
            let n = len_u64(b.len());
            5 + decimal_len(n) + n
        }
        Value::Array(items) => 3 + decimal_len(len_u64(items.len())) + items.iter().map(resp2_len).sum::<u64>(),
        _ => 0,
    }
}

/// The RESP length of a command as sent.
fn command_len(cmd: &redis::Cmd) -> u64 {
    let mut argc = 0;
    let mut len = 0;
    for arg in cmd.args_iter() {
        if let redis::Arg::Simple(a) = arg {
            argc += 1;
            let n = len_u64(a.len());
            len += 5 + decimal_len(n) + n;
        }
    }
    len + 3 + decimal_len(argc)
}

// ---------------------------------------------------------------------------
// One measured run.

async fn measure(client: &Client, admin: &mut MultiplexedConnection, cfg: &RunConfig) -> Result<Json> {
    let c = &cfg.common;
    redis::cmd("FLUSHALL").arg("SYNC").query_async::<()>(admin).await?;
    let shas = Shas {
        a: redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(SCRIPT_A)
            .query_async(admin)
            .await?,
        b: redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(SCRIPT_B)
            .query_async(admin)
            .await?,
        c: redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(SCRIPT_C)
            .query_async(admin)
            .await?,
    };
    let layout = Layout::new(cfg.rooms, cfg.nodes, cfg.followers, c.partitions);
    let base = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));

    // Readers, each on its own connection.
    let plans = if cfg.readers {
        plan_nodes(&layout, cfg)
    } else {
        Vec::new()
    };
    let reading = len_u64(plans.iter().filter(|p| !p.keys.is_empty()).count());
    let mut readers = Vec::new();
    let mut counters = Vec::new();
    for plan in plans {
        let conn = connect(client, None).await?;
        let ctr = Arc::new(NodeCounters::default());
        counters.push(ctr.clone());
        readers.push(tokio::spawn(node_loop(conn, plan, c.clone(), ctr, stop.clone(), base)));
    }
    let mut publisher = connect(client, Some(Duration::from_secs(30))).await?;
    let ready_by = Instant::now() + Duration::from_secs(10);
    while blocked_clients(admin).await? < reading {
        ensure!(
            Instant::now() < ready_by,
            "the nodes did not block in XREAD within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Two back-to-back snapshots: the second is the window's start, their
    // difference is what one snapshot exchange costs.
    let s0 = snapshot(admin).await?;
    let s1 = snapshot(admin).await?;
    let (over_in, over_out) = snapshot_overhead(&s0, &s1);

    let published = publish(&mut publisher, &layout, cfg, &shas, base).await?;

    // Wait until every node has every entry of its streams.
    let plans_expected: Vec<u64> = (0..readers.len())
        .map(|node| expected_entries(cfg.design, &layout, node, &published.per_room))
        .collect();
    let drain_by = Instant::now() + Duration::from_secs_f64(c.drain_timeout);
    let mut complete = true;
    loop {
        let done = counters
            .iter()
            .zip(&plans_expected)
            .all(|(ctr, &want)| ctr.entries.load(Relaxed) >= want);
        if done {
            break;
        }
        if Instant::now() >= drain_by {
            complete = false;
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let drain_s = published.finished.elapsed().as_secs_f64();
    // Let every node send its next XREAD and block again, so that each XREAD
    // round in the window is whole (request and reply).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let s2 = snapshot(admin).await?;
    stop.store(true, Relaxed);

    let mut nodes = Vec::new();
    for task in readers {
        nodes.push(task.await.context("node task")??);
    }
    drop(publisher);

    Ok(report(
        cfg,
        &layout,
        &published,
        &nodes,
        &plans_expected,
        &s1,
        &s2,
        (over_in, over_out),
        complete,
        drain_s,
    ))
}

struct Published {
    count: u64,
    per_room: Vec<u64>,
    lag: Histogram<u64>,
    wall_s: f64,
    finished: Instant,
}

async fn publish(
    conn: &mut MultiplexedConnection,
    layout: &Layout,
    cfg: &RunConfig,
    shas: &Shas,
    base: Instant,
) -> Result<Published> {
    let c = &cfg.common;
    let rooms_per_partition = u64::from(cfg.rooms.div_ceil(c.partitions));
    let maxlen_a = c.maxlen.to_string();
    let maxlen_b = (c.maxlen * rooms_per_partition).to_string();
    let a_keys: Vec<(String, String)> = layout.names.iter().map(|n| (room_offset_key(n), room_key(n))).collect();
    let b_keys: Vec<(String, String)> = (0..c.partitions)
        .map(|p| (partition_offset_key(p), partition_key(p)))
        .collect();

    let permits = Arc::new(Semaphore::new(c.in_flight));
    let errors = Arc::new(AtomicU64::new(0));
    let mut rng = SplitMix(cfg.common.seed);
    let mut per_room = vec![0u64; layout.names.len()];
    let mut lag = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let filler = vec![b'x'; c.payload - 8];
    let start = Instant::now();
    let period_ns = 1e9 / cfg.rate;
    for k in 0..cfg.publishes {
        // Open loop: message k is due at k / rate, never sent earlier.
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let due = start + Duration::from_nanos((k as f64 * period_ns) as u64);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        let permit = permits.clone().acquire_owned().await?;
        let room = usize::try_from(rng.next() % len_u64(layout.names.len()))?;
        per_room[room] += 1;
        let now = Instant::now();
        let lag_us = u64::try_from(now.saturating_duration_since(due).as_micros()).unwrap_or(u64::MAX);
        lag.saturating_record(lag_us.max(1));
        let mut payload = Vec::with_capacity(c.payload);
        payload.extend_from_slice(&nanos_since(base).to_le_bytes());
        payload.extend_from_slice(&filler);
        let mut cmd = redis::cmd("EVALSHA");
        match cfg.design {
            Design::A => {
                let (o, s) = &a_keys[room];
                cmd.arg(&shas.a).arg(2).arg(o).arg(s).arg(&maxlen_a).arg(payload);
            }
            Design::C => {
                let (o, s) = &a_keys[room];
                cmd.arg(&shas.c).arg(2).arg(o).arg(s).arg(&maxlen_a).arg(payload);
            }
            Design::B => {
                let (o, s) = &b_keys[layout.partition[room] as usize];
                cmd.arg(&shas.b)
                    .arg(2)
                    .arg(o)
                    .arg(s)
                    .arg(&layout.names[room])
                    .arg(&maxlen_b)
                    .arg(payload);
            }
        }
        let mut conn = conn.clone();
        let errors = errors.clone();
        tokio::spawn(async move {
            if cmd.query_async::<i64>(&mut conn).await.is_err() {
                errors.fetch_add(1, Relaxed);
            }
            drop(permit);
        });
    }
    // Every reply is in once every permit is back.
    let all = u32::try_from(c.in_flight)?;
    let _all = permits.acquire_many(all).await?;
    let finished = Instant::now();
    let failed = errors.load(Relaxed);
    ensure!(failed == 0, "{failed} publishes failed");
    Ok(Published {
        count: cfg.publishes,
        per_room,
        lag,
        wall_s: start.elapsed().as_secs_f64(),
        finished,
    })
}

/// splitmix64: a seeded, reproducible room choice.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

// ---------------------------------------------------------------------------
// Reporting.

fn percentiles(h: &Histogram<u64>) -> Json {
    if h.is_empty() {
        return Json::Null;
    }
    json!({
        "p50": h.value_at_quantile(0.50),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
        "count": h.len(),
    })
}

#[allow(clippy::too_many_arguments, clippy::cast_precision_loss)]
fn report(
    cfg: &RunConfig,
    layout: &Layout,
    published: &Published,
    nodes: &[NodeReport],
    expected: &[u64],
    s1: &Snapshot,
    s2: &Snapshot,
    overhead: (u64, u64),
    complete: bool,
    drain_s: f64,
) -> Json {
    let n = published.count as f64;
    let mut commands = BTreeMap::new();
    let mut client_cmds = 0u64;
    let mut foreign = Vec::new();
    let mut total_cmds = 0u64;
    for (name, &(calls, usec)) in &s2.cmds {
        if name == "info" {
            continue;
        }
        let (c0, u0) = s1.cmds.get(name).copied().unwrap_or((0, 0));
        let calls = calls - c0;
        if calls == 0 {
            continue;
        }
        total_cmds += calls;
        if CLIENT_COMMANDS.contains(&name.as_str()) {
            client_cmds += calls;
        }
        if !OWN_COMMANDS.contains(&name.as_str()) {
            foreign.push(name.clone());
        }
        commands.insert(name.clone(), json!({"calls": calls, "usec": usec - u0}));
    }
    let xread_server = s2.cmds.get("xread").map_or(0, |c| c.0) - s1.cmds.get("xread").map_or(0, |c| c.0);
    // Admin, publisher and one connection per node: anything else is another
    // client on the server, whose traffic the counters would include.
    let own_clients = 2 + len_u64(nodes.len());
    // C's script adds the notice too.
    let xadds = if cfg.design == Design::C { 2 } else { 1 } * published.count;
    let clean = foreign.is_empty()
        && s1.connected_clients == own_clients
        && s2.connected_clients == own_clients
        && s2.cmds.get("xadd").map_or(0, |c| c.0) - s1.cmds.get("xadd").map_or(0, |c| c.0) == xadds;
    if !clean {
        eprintln!(
            "warning: foreign traffic on the server (clients {} / {}, own {own_clients}, other commands {foreign:?}); this run is not clean",
            s1.connected_clients, s2.connected_clients
        );
    }
    let net_in = (s2.net_in - s1.net_in).saturating_sub(overhead.0);
    let net_out = (s2.net_out - s1.net_out).saturating_sub(overhead.1);
    let cpu_us = s2.cpu_us - s1.cpu_us;
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).ok();
    if let Some(h) = latency.as_mut() {
        for node in nodes {
            // Same bounds, so adding cannot fail.
            let _ = h.add(&node.latency);
        }
    }
    let unneeded: u64 = nodes.iter().map(|x| x.unneeded).sum();
    let notices: u64 = nodes.iter().map(|x| x.notices).sum();
    let notice_bytes: u64 = nodes.iter().map(|x| x.notice_reply_bytes).sum();
    let unneeded_notices: u64 = nodes.iter().map(|x| x.unneeded_notices).sum();
    let unneeded_notice_bytes: u64 = nodes.iter().map(|x| x.unneeded_notice_bytes).sum();
    let room_calls: u64 = nodes.iter().map(|x| x.room_calls).sum();
    let idle_wakeups: u64 = nodes.iter().map(|x| x.idle_wakeups).sum();
    let usec_of = |name: &str| {
        let (_, u1) = s2.cmds.get(name).copied().unwrap_or((0, 0));
        let (_, u0) = s1.cmds.get(name).copied().unwrap_or((0, 0));
        (u1 - u0) as f64
    };
    let unneeded_bytes: u64 = nodes.iter().map(|x| x.unneeded_bytes).sum();
    let reply_bytes: u64 = nodes.iter().map(|x| x.reply_bytes).sum();
    let xread_client: u64 = nodes.iter().map(|x| x.xread_calls).sum();
    // Each EVALSHA reply is `:<offset>\r\n`: 3 bytes + the offset's digits.
    let evalsha_reply_bytes: u64 = published
        .per_room
        .iter()
        .map(|&k| (1..=k).map(|o| 3 + decimal_len(o)).sum::<u64>())
        .sum();
    let rooms = layout.names.len();
    let parts_used = match cfg.design {
        Design::A => 0,
        Design::B => layout.partition.iter().copied().collect::<HashSet<u32>>().len(),
        Design::C => layout.notice.iter().copied().collect::<HashSet<u32>>().len(),
    };
    let node_json: Vec<Json> = nodes
        .iter()
        .zip(expected)
        .map(|(x, &want)| {
            json!({
                "node": x.node,
                "followed_rooms": x.followed_rooms,
                "xread_keys": x.keys,
                "expected_entries": want,
                "entries": x.entries,
                "wanted": x.wanted,
                "unneeded": x.unneeded,
                "unneeded_bytes": x.unneeded_bytes,
                "reply_bytes": x.reply_bytes,
                "request_bytes": x.request_bytes,
                "xread_calls": x.xread_calls,
                "xread_timeouts": x.xread_timeouts,
                "latency_us": percentiles(&x.latency),
                "notice_xread_calls": x.notice_calls,
                "notice_request_bytes": x.notice_request_bytes,
                "notice_reply_bytes": x.notice_reply_bytes,
                "notices": x.notices,
                "unneeded_notices": x.unneeded_notices,
                "unneeded_notice_bytes": x.unneeded_notice_bytes,
                "idle_wakeups": x.idle_wakeups,
                "room_xread_calls": x.room_calls,
                "room_keys_asked": x.room_keys_asked,
                "room_keys_empty": x.room_keys_empty,
                "room_request_bytes": x.room_request_bytes,
                "room_reply_bytes": x.room_reply_bytes,
            })
        })
        .collect();
    json!({
        "design": cfg.design.name(),
        "readers": cfg.readers,
        "nodes": cfg.nodes,
        "rooms": cfg.rooms,
        "followers": cfg.followers,
        "partitions": match cfg.design {
            Design::A => 0,
            Design::B => cfg.common.partitions,
            Design::C => NOTICE_PARTITIONS,
        },
        "partitions_used": parts_used,
        "streams": match cfg.design {
            Design::A => rooms,
            Design::B => parts_used,
            Design::C => rooms + parts_used,
        },
        "rate": cfg.rate,
        "payload": cfg.common.payload,
        "count": cfg.common.count,
        "block_ms": cfg.common.block_ms,
        "publishes": published.count,
        "publish_wall_s": published.wall_s,
        "drain_s": drain_s,
        "complete": complete,
        "clean": clean,
        "foreign_commands": foreign,
        "publish_lag_us": percentiles(&published.lag),
        "latency_us": latency.as_ref().map_or(Json::Null, percentiles),
        "per_publish": {
            "client_cmds": client_cmds as f64 / n,
            "total_cmds": total_cmds as f64 / n,
            "xread": xread_server as f64 / n,
            "net_in_bytes": net_in as f64 / n,
            "net_out_bytes": net_out as f64 / n,
            "redis_cpu_us": cpu_us / n,
            "unneeded_entries": unneeded as f64 / n,
            "unneeded_bytes": unneeded_bytes as f64 / n,
            "notices": notices as f64 / n,
            "notice_bytes": notice_bytes as f64 / n,
            "unneeded_notices": unneeded_notices as f64 / n,
            "unneeded_notice_bytes": unneeded_notice_bytes as f64 / n,
            "room_xread": room_calls as f64 / n,
            "idle_wakeups": idle_wakeups as f64 / n,
            // Redis's own time in the command (wall, `commandstats` usec):
            // the publish script with what it calls, and every XREAD.
            "evalsha_usec": usec_of("evalsha") / n,
            "xread_usec": usec_of("xread") / n,
        },
        "totals": {
            "net_in_bytes": net_in,
            "net_out_bytes": net_out,
            "redis_cpu_us": cpu_us,
            "xread_calls_server": xread_server,
            "xread_calls_client": xread_client,
            "room_xread_calls_client": room_calls,
            "xread_reply_bytes_client": reply_bytes,
            "evalsha_reply_bytes_client": evalsha_reply_bytes,
            "reply_bytes_accounted_pct": if net_out > 0 {
                100.0 * (reply_bytes + evalsha_reply_bytes) as f64 / net_out as f64
            } else { 0.0 },
            "snapshot_overhead_bytes": {"in": overhead.0, "out": overhead.1},
        },
        "commands": commands,
        "node_reports": node_json,
    })
}

/// Growth series: what one XREAD round costs Redis, over the publish-only
/// baseline of the same design.
#[allow(clippy::cast_precision_loss)]
fn add_xread_round_cost(results: &mut [Json]) {
    let mut base: HashMap<String, f64> = HashMap::new();
    for r in results.iter() {
        if r["readers"] == json!(false) {
            base.insert(
                r["design"].as_str().unwrap_or_default().to_owned(),
                r["per_publish"]["redis_cpu_us"].as_f64().unwrap_or(0.0),
            );
        }
    }
    for r in results.iter_mut() {
        if r["readers"] != json!(true) {
            continue;
        }
        let design = r["design"].as_str().unwrap_or_default().to_owned();
        let Some(&b) = base.get(&design) else {
            continue;
        };
        let pubs = r["publishes"].as_f64().unwrap_or(0.0);
        let cpu = r["totals"]["redis_cpu_us"].as_f64().unwrap_or(0.0);
        let calls = r["totals"]["xread_calls_server"].as_f64().unwrap_or(0.0);
        // C's room reads never block, so every one completed in the window:
        // the rest of the server's XREAD calls are the blocking-type rounds.
        let room_calls = r["totals"]["room_xread_calls_client"].as_f64().unwrap_or(0.0);
        let rounds = calls - room_calls;
        let xread_usec = r["commands"]["xread"]["usec"].as_f64().unwrap_or(0.0);
        let req = r["node_reports"][0]["request_bytes"].as_f64().unwrap_or(0.0);
        let client_rounds = r["node_reports"][0]["xread_calls"].as_f64().unwrap_or(0.0)
            - r["node_reports"][0]["room_xread_calls"].as_f64().unwrap_or(0.0);
        if rounds > 0.0 {
            r["xread_round"] = json!({
                "rounds": rounds,
                "cpu_us": (cpu - b * pubs) / rounds,
                "reader_cpu_us_per_publish": (cpu - b * pubs) / pubs,
                "commandstats_usec_per_call": xread_usec / calls,
                "commandstats_usec_per_round": xread_usec / rounds,
                "request_bytes": if client_rounds > 0.0 { req / client_rounds } else { 0.0 },
                "baseline_cpu_us_per_publish": b,
            });
        }
    }
}

fn f(v: &Json) -> String {
    match v.as_f64() {
        Some(x) if x.abs() >= 100.0 => format!("{x:.0}"),
        Some(x) if x.abs() >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.2}"),
        None => "-".to_owned(),
    }
}

fn ok(r: &Json) -> &'static str {
    match (r["complete"] == json!(true), r["clean"] == json!(true)) {
        (true, true) => "yes, yes",
        (true, false) => "yes, NO",
        (false, true) => "NO, yes",
        (false, false) => "NO, NO",
    }
}

fn cell(v: &Json) -> String {
    if v.is_null() { "-".to_owned() } else { v.to_string() }
}

/// A design-C-only figure: `-` for the designs without notices.
fn c_only(r: &Json, v: &Json) -> String {
    if r["design"] == json!(Design::C.name()) {
        f(v)
    } else {
        "-".to_owned()
    }
}

fn print_markdown(mode: &str, results: &[Json]) {
    println!("### {mode}\n");
    if mode == "fanout" {
        println!(
            "| design | nodes | rooms | followers | publishes | rate/s | client cmds/pub | total cmds/pub | XREAD/pub | net in B/pub | net out B/pub | Redis CPU µs/pub | p50 µs | p99 µs | unneeded entries/pub | unneeded B/pub | notices/pub | unneeded notices/pub | unneeded notice B/pub | complete, clean |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        for r in results {
            let p = &r["per_publish"];
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r["design"].as_str().unwrap_or_default(),
                r["nodes"],
                r["rooms"],
                r["followers"],
                r["publishes"],
                r["rate"],
                f(&p["client_cmds"]),
                f(&p["total_cmds"]),
                f(&p["xread"]),
                f(&p["net_in_bytes"]),
                f(&p["net_out_bytes"]),
                f(&p["redis_cpu_us"]),
                cell(&r["latency_us"]["p50"]),
                cell(&r["latency_us"]["p99"]),
                f(&p["unneeded_entries"]),
                f(&p["unneeded_bytes"]),
                c_only(r, &p["notices"]),
                c_only(r, &p["unneeded_notices"]),
                c_only(r, &p["unneeded_notice_bytes"]),
                ok(r),
            );
        }
        println!("\nWhere Redis spends it (commandstats usec per publish):\n");
        println!(
            "| design | nodes | followers | publish script (evalsha) µs/pub | XREAD µs/pub | XREAD/pub | C: room XREAD/pub | C: wake-ups for unfollowed rooms only /pub |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|");
        for r in results {
            let p = &r["per_publish"];
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                r["design"].as_str().unwrap_or_default(),
                r["nodes"],
                r["followers"],
                f(&p["evalsha_usec"]),
                f(&p["xread_usec"]),
                f(&p["xread"]),
                c_only(r, &p["room_xread"]),
                c_only(r, &p["idle_wakeups"]),
            );
        }
        println!("\nPer node:\n");
        println!(
            "| design | followers | node | followed rooms | XREAD keys | entries | of followed rooms | of rooms NOT followed | bytes received | bytes of rooms NOT followed | notices | notices of rooms NOT followed | their bytes | XREAD calls (C: notice + room) | XREAD request bytes | p50 µs | p99 µs |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for r in results {
            let is_c = r["design"] == json!(Design::C.name());
            for x in r["node_reports"].as_array().into_iter().flatten() {
                let (notices, unneeded, bytes, calls) = if is_c {
                    (
                        x["notices"].to_string(),
                        x["unneeded_notices"].to_string(),
                        x["unneeded_notice_bytes"].to_string(),
                        format!("{} + {}", x["notice_xread_calls"], x["room_xread_calls"]),
                    )
                } else {
                    (
                        "-".to_owned(),
                        "-".to_owned(),
                        "-".to_owned(),
                        x["xread_calls"].to_string(),
                    )
                };
                println!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    r["design"].as_str().unwrap_or_default(),
                    r["followers"],
                    x["node"],
                    x["followed_rooms"],
                    x["xread_keys"],
                    x["entries"],
                    x["wanted"],
                    x["unneeded"],
                    x["reply_bytes"],
                    x["unneeded_bytes"],
                    notices,
                    unneeded,
                    bytes,
                    calls,
                    x["request_bytes"],
                    cell(&x["latency_us"]["p50"]),
                    cell(&x["latency_us"]["p99"]),
                );
            }
        }
    } else {
        println!(
            "| design | followed rooms | XREAD keys | publishes | XREAD calls | XREAD/pub | rounds/pub | XREAD request B/round | net in B/pub | net out B/pub | Redis CPU µs/pub | reader Redis CPU µs/pub (over baseline) | Redis CPU µs per round | xread usec/round (commandstats) | p50 µs | p99 µs | complete, clean |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        for r in results {
            let p = &r["per_publish"];
            let x = &r["xread_round"];
            let readers = r["readers"] == json!(true);
            let rounds_per_pub = match (x["rounds"].as_f64(), r["publishes"].as_f64()) {
                (Some(k), Some(n)) if n > 0.0 => json!(k / n),
                _ => Json::Null,
            };
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r["design"].as_str().unwrap_or_default(),
                if readers {
                    r["rooms"].to_string()
                } else {
                    "(no reader)".to_owned()
                },
                cell(&r["node_reports"][0]["xread_keys"]),
                r["publishes"],
                r["totals"]["xread_calls_server"],
                f(&p["xread"]),
                f(&rounds_per_pub),
                f(&x["request_bytes"]),
                f(&p["net_in_bytes"]),
                f(&p["net_out_bytes"]),
                f(&p["redis_cpu_us"]),
                f(&x["reader_cpu_us_per_publish"]),
                f(&x["cpu_us"]),
                f(&x["commandstats_usec_per_round"]),
                cell(&r["latency_us"]["p50"]),
                cell(&r["latency_us"]["p99"]),
                ok(r),
            );
        }
    }
    println!();
}
