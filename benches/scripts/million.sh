#!/usr/bin/env bash
# One million concurrent WebSocket connections in one Herald cluster on this
# one machine: NODES `herald serve --shards 1 --storage memory` nodes sharing
# one Redis (their cluster bus), and `herald-loadgen connect` holding
# CONNECTIONS connections over all of them (connection g to node g mod
# NODES) with heartbeats answered, from WORKERS processes (~18,000 sockets
# each: the open-file limit is 20,000 per process) bound to source addresses
# 127.0.0.2-... (about PER_IP connections each, under the ~28,000 ephemeral
# ports of an address).
#
# While the connections are held:
#   1. QUIET seconds with nothing but heartbeats (the idle cost: CPU of the
#      machine, nodes, generator and Redis);
#   2. a broadcast: `herald-loadgen fanout` from other source addresses,
#      FANOUT_PER_NODE subscribers of ONE room on every node (fanout deals
#      a room's members over all targets), one publisher on node 0,
#      FANOUT_RATE messages/s for FANOUT_DURATION: expected, delivered,
#      lost, latency;
#   3. while its subscribers are in: GET /api/presence/{room} on two nodes
#      (fanout subscribes with presence=false, which only turns off the
#      events it receives: the room's namespace, chat, tracks presence, so
#      every subscriber counts), the room's subscribers on every node
#      (herald_subscriptions in /metrics, summed), GET /api/rooms on two
#      nodes, presence on a third, and presence again after they left.
#
# Snapshots (free -m, /proc/stat, /proc/meminfo, RSS and CPU of nodes,
# generator and Redis, Redis INFO, the nodes' metrics summed) are taken
# before, when all are connected, at the end of the quiet window, after the
# broadcast, near the end of the hold, after the generator closed, and after
# everything stopped; a sampler writes one line every SAMPLE seconds to
# OUT/timeline.jsonl. OUT/summary.json puts the deltas together.
#
# usage: benches/scripts/million.sh
# Settings (environment), defaults for the full run:
#   NODES (55), CONNECTIONS (1000000), WORKERS (CONNECTIONS / 18200, rounded
#   up), CONNECT_RATE (1600/s), CONNECT_WINDOW (256), CONNECT_TIMEOUT (30s),
#   HOLD (180 s, counted from the moment every connection is up: at least 2
#   heartbeat intervals), QUIET (60 s: one heartbeat interval), PER_IP (12500),
#   FANOUT_IPS (127.0.0.200-127.0.0.203), FANOUT_PER_NODE (100), FANOUT_RATE
#   (10/s), FANOUT_DURATION (20s), FANOUT_WORKERS (2), BASE_PORT (19000),
#   REDIS_PORT (6400), HEARTBEAT (60s; the product's default is 15s) and
#   IDLE_TIMEOUT (3 heartbeats), SAMPLE (10 s),
#   OUT (benches/results/million: reports),
#   WORK (target/million: logs, data directories, a copy of the binaries),
#   HERALD_BIN / LG_BIN (target/release/...), WAIT_LOCK (1: first wait, up
#   to 60 minutes, until /tmp/herald-bench.lock is gone, then hold
#   /tmp/herald-million.lock for the run), DEADLINE (1140 s: the whole run,
#   after the lock wait, is stopped past it).
# Small check: NODES=4 CONNECTIONS=20000 CONNECT_RATE=4000 HOLD=60 QUIET=15 \
#   HEARTBEAT=15s OUT=target/million-small benches/scripts/million.sh
# Every process it starts is stopped on exit, on failure too (by pid).
set -euo pipefail
cd "$(dirname "$0")/../.."
. benches/scripts/lib.sh

NODES=${NODES:-55}
CONNECTIONS=${CONNECTIONS:-1000000}
WORKERS=${WORKERS:-$(((CONNECTIONS + 18199) / 18200))}
CONNECT_RATE=${CONNECT_RATE:-1600}
CONNECT_WINDOW=${CONNECT_WINDOW:-256}
CONNECT_TIMEOUT=${CONNECT_TIMEOUT:-30s}
HOLD=${HOLD:-180}
QUIET=${QUIET:-60}
# The nodes' [limits] heartbeat_interval, and idle_timeout (default three
# heartbeats). The product's defaults are 15 s and 45 s (HEARTBEAT=15s);
# at 15 s, the heartbeats of 1,000,000 connections alone take more than
# this machine's 2 vCPUs once the generator's side is counted
# (benches/results/million.md), so the full run pings every 60 s.
HEARTBEAT=${HEARTBEAT:-60s}
case "$HEARTBEAT" in *[!0-9s]* | "" | s) echo "HEARTBEAT is whole seconds, e.g. 60s" >&2; exit 64 ;; esac
IDLE_TIMEOUT=${IDLE_TIMEOUT:-$((3 * ${HEARTBEAT%s}))s}
PER_IP=${PER_IP:-12500}
IP_COUNT=$(((CONNECTIONS + PER_IP - 1) / PER_IP))
[ "$IP_COUNT" -ge 2 ] || IP_COUNT=2
SOURCE_IPS=127.0.0.2-127.0.0.$((1 + IP_COUNT))
FANOUT_IPS=${FANOUT_IPS:-127.0.0.200-127.0.0.203}
FANOUT_PER_NODE=${FANOUT_PER_NODE:-100}
FANOUT_RATE=${FANOUT_RATE:-10}
FANOUT_DURATION=${FANOUT_DURATION:-20s}
FANOUT_WORKERS=${FANOUT_WORKERS:-2}
ROOM_PREFIX=chat:million-
ROOM=${ROOM_PREFIX}0
BASE_PORT=${BASE_PORT:-19000}
REDIS_PORT=${REDIS_PORT:-6400}
API_KEY=million-bench-key-0123456789
SAMPLE=${SAMPLE:-10}
OUT=${OUT:-benches/results/million}
WORK=${WORK:-target/million}
HERALD_BIN=${HERALD_BIN:-target/release/herald}
LG_BIN=${LG_BIN:-target/release/herald-loadgen}
WAIT_LOCK=${WAIT_LOCK:-1}
# Settings of this script, not of the nodes (which warn about HERALD_*
# variables that name no setting).
export -n HERALD_BIN LG_BIN 2>/dev/null || true
DEADLINE=${DEADLINE:-1140}
BENCH_LOCK=/tmp/herald-bench.lock
MY_LOCK=/tmp/herald-million.lock

[ "$IP_COUNT" -le 190 ] || { echo "$IP_COUNT source addresses would reach $FANOUT_IPS: raise PER_IP" >&2; exit 64; }
[ $((CONNECTIONS / WORKERS)) -le 19000 ] || { echo "over 19,000 sockets per worker: raise WORKERS" >&2; exit 64; }
[ $((CONNECTIONS / NODES)) -le 19000 ] || { echo "over 19,000 connections per node: raise NODES" >&2; exit 64; }

log() { echo "[$(date -u +%T)] $*" >&2; }

# ---- what this script started, stopped on exit ---------------------------
node_pids=() redis_pid="" lg_pids=() aux_pids=() holding_lock=0 nap_pid=""

# nap SECONDS: a sleep that a signal interrupts (the trap runs at once).
nap() {
  sleep "$1" &
  nap_pid=$!
  wait "$nap_pid" || true
  nap_pid=""
}

# descendants PID: every process below PID (loadgen workers are children of
# the coordinator, which is a child of `timeout`).
descendants() {
  local c
  for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do
    echo "$c"
    descendants "$c"
  done
}

# stop PID...: SIGTERM, up to 20 s, then SIGKILL for what is left.
stop() {
  local p left
  [ $# -gt 0 ] || return 0
  for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 200); do
    left=0
    for p in "$@"; do kill -0 "$p" 2>/dev/null && left=1; done
    [ "$left" = 1 ] || break
    sleep 0.1
  done
  for p in "$@"; do kill -KILL "$p" 2>/dev/null || true; done
  for p in "$@"; do wait "$p" 2>/dev/null || true; done
}

stop_loadgens() {
  local p tree=()
  for p in "${lg_pids[@]}"; do tree+=("$p" $(descendants "$p")); done
  stop "${tree[@]}"
  lg_pids=()
}

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  [ ${#lg_pids[@]} -eq 0 ] || { log "stopping load generators"; stop_loadgens; }
  [ ${#node_pids[@]} -eq 0 ] || { log "stopping ${#node_pids[@]} nodes"; stop "${node_pids[@]}"; }
  [ -z "$redis_pid" ] || stop "$redis_pid"
  [ ${#aux_pids[@]} -eq 0 ] || stop "${aux_pids[@]}"
  [ -z "$nap_pid" ] || stop "$nap_pid"
  [ "$holding_lock" = 0 ] || rm -f "$MY_LOCK"
  [ "$rc" = 0 ] || log "failed (exit $rc); logs in $WORK, reports in $OUT"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- the probe: snapshots and the sampler ----------------------------------
mkdir -p "$OUT" "$WORK/bin"
PROBE=$WORK/probe.py
cat >"$PROBE" <<'EOF'
"""Reads the machine, the processes and Redis; `snap NAME FILE` writes one
JSON snapshot, `sample SECONDS FILE` appends a compact one every SECONDS.
Process ids and ports come from the environment (and WORK/*.pids, re-read
each time, so the sampler sees the load generators started after it)."""
import json, os, subprocess, sys, time, urllib.request

HZ = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
WORK = os.environ["WORK"]
PORTS = [int(p) for p in os.environ.get("NODE_PORTS", "").split(",") if p]
REDIS_PORT = os.environ.get("REDIS_PORT")
SUMMED = ("herald_connections", "herald_subscriptions", "herald_rooms", "herald_frames_in_total",
          "herald_frames_out_total", "herald_bytes_in_total", "herald_bytes_out_total",
          "herald_write_syscalls_total", "herald_deliveries_total", "herald_publishes_total",
          "herald_redis_followed_rooms", "herald_redis_commands_total", "herald_redis_round_trips_total",
          "herald_redis_errors_total", "herald_redis_overloaded_total", "herald_redis_dropped_total",
          "herald_drops_total", "herald_shard_queue_depth")


def pids(name):
    try:
        return [int(x) for x in open(os.path.join(WORK, name)).read().split()]
    except OSError:
        return []


def children():
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    return kids


def tree(roots, kids):
    out, todo = [], list(roots)
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def proc(ps):
    """RSS (bytes) and CPU (s) summed over live processes."""
    rss = cpu = n = 0
    for p in ps:
        try:
            f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            comm = open(f"/proc/{p}/comm").read().strip()
        except OSError:
            continue
        if comm == "timeout":
            continue
        cpu += (int(f[11]) + int(f[12])) / HZ
        rss += int(f[21]) * PAGE
        n += 1
    return {"processes": n, "rss_bytes": rss, "cpu_secs": round(cpu, 2)}


def stat_cpu():
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    names = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"]
    return dict(zip(names, f))


def meminfo():
    m = {}
    for line in open("/proc/meminfo"):
        k, v = line.split(":")
        if k in ("MemTotal", "MemFree", "MemAvailable", "Buffers", "Cached", "Slab", "SReclaimable",
                 "SUnreclaim", "AnonPages", "Shmem"):
            m[k] = int(v.split()[0]) * 1024
    return m


def redis_info():
    if not REDIS_PORT:
        return None
    try:
        text = subprocess.run(["redis-cli", "-p", REDIS_PORT, "INFO", "all"], capture_output=True,
                              text=True, timeout=10).stdout
    except Exception as e:  # noqa: BLE001 - a probe reports what it could not read
        return {"error": str(e)}
    info, commands = {}, {}
    for line in text.splitlines():
        if ":" not in line or line.startswith("#"):
            continue
        k, v = line.split(":", 1)
        if k.startswith("cmdstat_"):
            d = dict(kv.split("=") for kv in v.split(","))
            commands[k[8:]] = {"calls": int(d["calls"]), "usec": int(d["usec"])}
        elif k.startswith("db"):
            info[k] = v
        else:
            try:
                info[k] = int(v)
            except ValueError:
                try:
                    info[k] = float(v)
                except ValueError:
                    info[k] = v
    keep = ("used_memory", "used_memory_rss", "used_memory_peak", "connected_clients", "blocked_clients",
            "total_commands_processed", "instantaneous_ops_per_sec", "total_net_input_bytes",
            "total_net_output_bytes", "used_cpu_sys", "used_cpu_user", "used_cpu_sys_main_thread",
            "used_cpu_user_main_thread", "expired_keys", "evicted_keys", "keyspace_hits", "keyspace_misses",
            "process_id", "db0", "mem_fragmentation_ratio", "total_connections_received")
    out = {k: info[k] for k in keep if k in info}
    out["commands"] = commands
    return out


def metrics(per_node):
    total = {k: 0 for k in SUMMED}
    total["herald_sessions"] = 0
    nodes, unreachable = [], 0
    for port in PORTS:
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        except Exception:  # noqa: BLE001
            unreachable += 1
            continue
        sessions = 0
        for line in text.splitlines():
            if line.startswith("#") or " " not in line:
                continue
            name_labels, value = line.rsplit(" ", 1)
            name = name_labels.split("{", 1)[0]
            try:
                v = float(value)
            except ValueError:
                continue
            if name == "herald_sessions" and 'transport="websocket"' in name_labels:
                sessions += v
            elif name in total:
                total[name] += v
        total["herald_sessions"] += sessions
        nodes.append(int(sessions))
    total = {k: int(v) for k, v in total.items()}
    total["nodes_unreachable"] = unreachable
    if per_node:
        total["sessions_per_node"] = nodes
    return total


def read_text(path):
    try:
        return open(path).read()
    except OSError:
        return ""


def snapshot(full):
    kids = children()
    s = {
        "t": round(time.time(), 3),
        "cpu_ticks": stat_cpu(),
        "hz": HZ,
        "meminfo": meminfo(),
        "nodes": proc(pids("node.pids")),
        "loadgen": proc(tree(pids("lg.pids"), kids)),
        "redis": proc(pids("redis.pids")),
        "redis_info": redis_info(),
        "file_nr": read_text("/proc/sys/fs/file-nr").split(),
        "sockstat": read_text("/proc/net/sockstat"),
        "metrics": metrics(full) if PORTS else None,
        "loadavg": read_text("/proc/loadavg").strip(),
    }
    if full:
        s["free_m"] = subprocess.run(["free", "-m"], capture_output=True, text=True).stdout
    else:
        info = s["redis_info"] or {}
        info.pop("commands", None)
    return s


if sys.argv[1] == "snap":
    s = snapshot(True)
    s["name"] = sys.argv[2]
    json.dump(s, open(sys.argv[3], "w"), indent=1)
elif sys.argv[1] == "sample":
    every = float(sys.argv[2])
    with open(sys.argv[3], "a") as f:
        while True:
            t0 = time.time()
            f.write(json.dumps(snapshot(False)) + "\n")
            f.flush()
            time.sleep(max(0.5, every - (time.time() - t0)))
EOF

snap_n=0
snap() {
  snap_n=$((snap_n + 1))
  WORK=$WORK NODE_PORTS=$node_ports REDIS_PORT=$REDIS_PORT \
    python3 "$PROBE" snap "$1" "$OUT/snap-$snap_n-$1.json"
  log "snapshot $1: $(free -m | awk '/^Mem:/ {print "used " $3 " MiB, available " $7 " MiB"}')"
}

# ---- wait for the machine ------------------------------------------------
# Another benchmark measures latency while /tmp/herald-bench.lock exists;
# /tmp/herald-million.lock held by someone else (its text says who) means
# the machine is promised elsewhere too. Wait for both, then take ours
# (noclobber: two waiters cannot both get it).
if [ "$WAIT_LOCK" = 1 ]; then
  for i in $(seq 121); do
    if [ ! -e "$BENCH_LOCK" ] && (set -C && echo "$$ $(date -u +%FT%TZ) benches/scripts/million.sh" >"$MY_LOCK") 2>/dev/null; then
      holding_lock=1
      break
    fi
    [ "$i" -lt 121 ] || { log "$BENCH_LOCK or $MY_LOCK still there after 60 minutes"; exit 75; }
    [ "$i" -gt 1 ] || log "waiting for $BENCH_LOCK and $MY_LOCK to go ($(cat "$BENCH_LOCK" "$MY_LOCK" 2>/dev/null | tr '\n' ' '))"
    nap 30
  done
fi
# Bounded from here: past DEADLINE the run stops and cleans up.
(
  sleep "$DEADLINE" &
  s=$!
  trap 'kill $s 2>/dev/null; exit 0' TERM
  wait $s && log "deadline of $DEADLINE s reached" && kill -TERM $$
) &
aux_pids+=($!)
started_at=$(date +%s)

# ---- binaries, ports, machine facts -----------------------------------------
cp "$HERALD_BIN" "$WORK/bin/herald"
cp "$LG_BIN" "$WORK/bin/herald-loadgen"
HERALD=$WORK/bin/herald
LG=$WORK/bin/herald-loadgen
for p in "$REDIS_PORT" $(seq "$BASE_PORT" $((BASE_PORT + NODES - 1))); do
  if (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "port $p is in use: set BASE_PORT / REDIS_PORT" >&2
    exit 1
  fi
done
{
  echo "date: $(date -u +%FT%TZ)"
  echo "commit: $(git rev-parse HEAD 2>/dev/null) $(git status --porcelain -- gateway loadgen protocol storage 2>/dev/null | wc -l) changed files under gateway/ loadgen/ protocol/ storage/"
  echo "herald: $(stat -c '%y' "$HERALD_BIN") sha256 $(sha256sum "$HERALD" | cut -c1-16)"
  echo "herald-loadgen: $(stat -c '%y' "$LG_BIN") sha256 $(sha256sum "$LG" | cut -c1-16)"
  echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) vCPUs"
  echo "memory: $(grep MemTotal /proc/meminfo)"
  echo "kernel: $(uname -r)"
  echo "rustc: $(rustc -V 2>/dev/null)"
  echo "redis: $(redis-server --version)"
  echo "open files per process: $(ulimit -n); system-wide: $(cat /proc/sys/fs/file-max)"
  echo "ephemeral ports: $(cat /proc/sys/net/ipv4/ip_local_port_range)"
  echo "tcp_max_tw_buckets: $(cat /proc/sys/net/ipv4/tcp_max_tw_buckets); somaxconn: $(cat /proc/sys/net/core/somaxconn)"
  echo "settings: NODES=$NODES CONNECTIONS=$CONNECTIONS WORKERS=$WORKERS CONNECT_RATE=$CONNECT_RATE CONNECT_WINDOW=$CONNECT_WINDOW CONNECT_TIMEOUT=$CONNECT_TIMEOUT HOLD=$HOLD QUIET=$QUIET HEARTBEAT=$HEARTBEAT IDLE_TIMEOUT=$IDLE_TIMEOUT SOURCE_IPS=$SOURCE_IPS FANOUT_IPS=$FANOUT_IPS FANOUT_PER_NODE=$FANOUT_PER_NODE FANOUT_RATE=$FANOUT_RATE FANOUT_DURATION=$FANOUT_DURATION FANOUT_WORKERS=$FANOUT_WORKERS BASE_PORT=$BASE_PORT REDIS_PORT=$REDIS_PORT"
  echo "loadavg at start: $(cat /proc/loadavg)"
} >"$OUT/machine.txt"
cat "$OUT/machine.txt" >&2
# A report left by an earlier run must not pass for this one's.
rm -f "$OUT"/snap-*.json "$OUT"/{timeline.jsonl,connect.json,connect.html,fanout.json,fanout.html} \
  "$OUT"/{presence.json,summary.json,node-log-warnings.txt} "$WORK"/*.pids
node_ports=""
snap before

# ---- Redis and the nodes ------------------------------------------------------
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --maxclients 10000 \
  >"$WORK/redis.log" 2>&1 &
redis_pid=$!
echo "$redis_pid" >"$WORK/redis.pids"
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$REDIS_PORT" ping >/dev/null || { echo "redis did not start on $REDIS_PORT" >&2; exit 1; }

targets=() ports=()
for i in $(seq 0 $((NODES - 1))); do
  port=$((BASE_PORT + i))
  rm -rf "$WORK/data-$i"
  HERALD_LIMITS__HEARTBEAT_INTERVAL=$HEARTBEAT HERALD_LIMITS__IDLE_TIMEOUT=$IDLE_TIMEOUT \
    "$HERALD" serve --listen "127.0.0.1:$port" --shards 1 --storage memory --data-dir "$WORK/data-$i" \
    --redis "redis://127.0.0.1:$REDIS_PORT" --node-id "n$i" --api-key "$API_KEY" \
    >"$WORK/node-$i.log" 2>&1 &
  node_pids+=($!)
  ports+=("$port")
  targets+=("ws://127.0.0.1:$port/ws")
done
echo "${node_pids[*]}" >"$WORK/node.pids"
for port in "${ports[@]}"; do
  wait_healthy "http://127.0.0.1:$port/ready" || { echo "node on $port not ready" >&2; exit 1; }
done
IFS=,
target_list="${targets[*]}" pid_list="${node_pids[*]}" node_ports="${ports[*]}"
unset IFS
log "redis :$REDIS_PORT and $NODES nodes (:$BASE_PORT-:$((BASE_PORT + NODES - 1))) ready"
snap nodes-up

WORK=$WORK NODE_PORTS=$node_ports REDIS_PORT=$REDIS_PORT python3 "$PROBE" sample "$SAMPLE" "$OUT/timeline.jsonl" &
aux_pids+=($!)

# ---- one million connections -------------------------------------------------
connect_secs=$(((CONNECTIONS + CONNECT_RATE - 1) / CONNECT_RATE))
connect_bound=$((connect_secs + HOLD + 240))
log "connect: $CONNECTIONS connections at $CONNECT_RATE/s (~${connect_secs} s), $WORKERS workers, $SOURCE_IPS, hold ${HOLD}s"
timeout "$connect_bound" "$LG" connect --target "$target_list" --workers "$WORKERS" \
  --source-ips "$SOURCE_IPS" --connections "$CONNECTIONS" --connect-rate "$CONNECT_RATE" \
  --connect-window "$CONNECT_WINDOW" --connect-timeout "$CONNECT_TIMEOUT" --hold "${HOLD}s" --target-pid "$pid_list" \
  --json "$OUT/connect.json" --html "$OUT/connect.html" >"$WORK/connect.out" 2>"$WORK/connect.err" &
connect_pid=$!
lg_pids+=("$connect_pid")
echo "${lg_pids[*]}" >"$WORK/lg.pids"

# wait_line FILE PATTERN PID SECONDS: until FILE has a line matching
# PATTERN; false if PID exits or SECONDS pass first.
wait_line() {
  local end=$(($(date +%s) + $4))
  while [ "$(date +%s)" -lt "$end" ]; do
    grep -q "$2" "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || { grep -q "$2" "$1" 2>/dev/null; return; }
    sleep 1
  done
  return 1
}
if ! wait_line "$WORK/connect.err" '^connected ' "$connect_pid" "$connect_bound"; then
  tail -5 "$WORK/connect.err" >&2
  echo "the connect phase did not end" >&2
  exit 1
fi
connected_at=$(date +%s)
log "$(grep '^connected ' "$WORK/connect.err") after $((connected_at - started_at)) s; holding ${HOLD}s"
snap connected

# ---- the hold: quiet, then the broadcast ------------------------------------
nap "$QUIET"
snap quiet-end

subscribers=$((NODES * FANOUT_PER_NODE))
broadcast_started=$(date +%s)
# A machine too busy to take the snapshots in time can push the broadcast
# past the hold: it then measures nodes without the held connections.
in_hold=true
if [ "$broadcast_started" -ge $((connected_at + HOLD)) ]; then
  in_hold=false
  log "WARNING: the hold ended before the broadcast (snapshots took $((broadcast_started - connected_at)) s)"
fi
log "broadcast: $subscribers subscribers of $ROOM over $NODES nodes, 1 publisher on node 0, $FANOUT_RATE/s for $FANOUT_DURATION"
timeout 180 "$LG" fanout --target "$target_list" --workers "$FANOUT_WORKERS" --source-ips "$FANOUT_IPS" \
  --subscribers "$subscribers" --rooms 1 --publishers 1 --publishers-on 0 --room-prefix "$ROOM_PREFIX" \
  --rate "$FANOUT_RATE" --duration "$FANOUT_DURATION" --drain 5s --payload 64 --connect-rate 2000 \
  --target-pid "$pid_list" --json "$OUT/fanout.json" --html "$OUT/fanout.html" \
  >"$WORK/fanout.out" 2>"$WORK/fanout.err" &
fanout_pid=$!
lg_pids+=("$fanout_pid")
echo "${lg_pids[*]}" >"$WORK/lg.pids"

# presence_of NODE_INDEX: the room's presence as that node answers it.
presence_of() {
  local body
  body=$(curl -s -m 10 -H "Authorization: Bearer $API_KEY" \
    "http://127.0.0.1:${ports[$1]}/api/presence/$ROOM" -w '\n%{http_code}') || body=$'\n000'
  python3 - "$1" "$body" <<'EOF'
import json, sys
node, body = int(sys.argv[1]), sys.argv[2]
text, code = body.rsplit("\n", 1)
try:
    b = json.loads(text)
except ValueError:
    b = {"raw": text[:200]}
print(json.dumps({"node": f"n{node}", "http": int(code), "count": b.get("count"),
                  "users_listed": len(b.get("users", [])), "truncated": b.get("truncated"), "body": b if "raw" in b else None}))
EOF
}

# subscriptions_everywhere: the room's subscribers on every node, from
# /metrics (herald_subscriptions: the held connections join no room, so a
# node's subscriptions are the room's members there), and their sum.
subscriptions_everywhere() {
  NODE_PORTS=$node_ports python3 - <<'EOF'
import json, os, urllib.request
subs = []
for port in os.environ["NODE_PORTS"].split(","):
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        subs.append(int(sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
                            if l.startswith("herald_subscriptions{"))))
    except Exception:  # noqa: BLE001
        subs.append(None)
print(json.dumps({"subscriptions_per_node": subs, "subscriptions_summed": sum(x or 0 for x in subs),
                  "nodes_answering": sum(x is not None for x in subs)}))
EOF
}

# api_rooms_on NODE_INDEX...: GET /api/rooms on those nodes: the room's
# entry there. A node lists every room it holds, its users' `user:U` rooms
# too (~1.5 MB of JSON at 18,000 connections), so not on every node.
api_rooms_on() {
  NODE_PORTS=$node_ports API_KEY=$API_KEY ROOM=$ROOM python3 - "$@" <<'EOF'
import json, os, sys, time, urllib.request
ports = os.environ["NODE_PORTS"].split(",")
listed = []
for i in map(int, sys.argv[1:]):
    t0 = time.time()
    req = urllib.request.Request(f"http://127.0.0.1:{ports[i]}/api/rooms",
                                 headers={"Authorization": "Bearer " + os.environ["API_KEY"]})
    try:
        raw = urllib.request.urlopen(req, timeout=30).read()
        rooms = json.loads(raw)["rooms"]
        mine = [r for r in rooms if r["room"] == os.environ["ROOM"]]
        listed.append({"node": f"n{i}", "room": mine[0] if mine else None, "rooms_listed": len(rooms),
                       "user_rooms_listed": sum(r["room"].startswith("user:") for r in rooms),
                       "bytes": len(raw), "ms": round((time.time() - t0) * 1000)})
    except Exception as e:  # noqa: BLE001
        listed.append({"node": f"n{i}", "error": str(e)})
print(json.dumps(listed))
EOF
}

if wait_line "$WORK/fanout.err" '^connected ' "$fanout_pid" 60; then
  log "broadcast: $(grep '^connected ' "$WORK/fanout.err"); presence on n0 and n$((NODES - 1)), subscriptions on every node"
  sleep 1
  # Cheapest first: the step lasts FANOUT_DURATION, its subscribers leave
  # right after it.
  {
    echo '{"during": ['
    presence_of 0
    echo ','
    presence_of $((NODES - 1))
    echo '], "subscriptions_during":'
    subscriptions_everywhere
    echo ', "api_rooms_during":'
    api_rooms_on 0 $((NODES - 1))
    echo ', "during_again": ['
    presence_of $((NODES / 2))
    echo "], \"checks_ended_unix\": $(date +%s)"
  } >"$WORK/presence.part"
else
  log "broadcast: its subscribers did not all connect"
  echo '{"during": null' >"$WORK/presence.part"
fi
fanout_rc=0
wait "$fanout_pid" || fanout_rc=$?
broadcast_ended=$(date +%s)
lg_pids=("$connect_pid")
echo "${lg_pids[*]}" >"$WORK/lg.pids"
log "broadcast: $(grep -E '^step ' "$WORK/fanout.err" | tail -1) (exit $fanout_rc)"
snap broadcast-end
sleep 3
{
  cat "$WORK/presence.part"
  echo ', "after": ['
  presence_of 0
  echo ','
  presence_of $((NODES - 1))
  echo "], \"expected_during\": $subscribers, \"connected_unix\": $connected_at, \"hold_secs\": $HOLD,"
  echo "\"broadcast_started_unix\": $broadcast_started, \"broadcast_ended_unix\": $broadcast_ended,"
  echo "\"broadcast_during_hold\": $in_hold}"
} | python3 -c 'import json,sys; json.dump(json.load(sys.stdin), open(sys.argv[1], "w"), indent=1)' "$OUT/presence.json"

# A last snapshot while every connection is still held.
hold_end=$((connected_at + HOLD))
now=$(date +%s)
if [ "$now" -ge $((hold_end - 8)) ]; then
  log "WARNING: the broadcast and presence checks took past the hold's end (HOLD=$HOLD too short)"
else
  nap $((hold_end - 8 - now))
fi
snap hold-end

connect_rc=0
wait "$connect_pid" || connect_rc=$?
lg_pids=()
echo "" >"$WORK/lg.pids"
log "connect: exit $connect_rc; $(grep -iE 'alive|held' "$WORK/connect.out" | head -3 | tr '\n' ' ')"
snap loadgen-closed

# The nodes let go of 1M sessions (leaves, unfollows): wait until they have.
for _ in $(seq 60); do
  s=$(python3 - "$node_ports" <<'EOF'
import sys, urllib.request
n = 0
for p in sys.argv[1].split(","):
    try:
        t = urllib.request.urlopen(f"http://127.0.0.1:{p}/metrics", timeout=5).read().decode()
    except Exception:
        continue
    n += sum(float(l.rsplit(" ", 1)[1]) for l in t.splitlines() if l.startswith("herald_redis_followed_rooms"))
print(int(n))
EOF
)
  [ "$s" -gt 0 ] || break
  sleep 2
done
snap nodes-idle

log "stopping nodes and Redis"
stop "${aux_pids[@]:1}"
aux_pids=("${aux_pids[0]}")
stop "${node_pids[@]}"
node_pids=()
redis-cli -p "$REDIS_PORT" INFO all >"$WORK/redis-final-info.txt" 2>/dev/null || true
stop "$redis_pid"
redis_pid=""
sleep 2
node_ports=""
snap after
grep -h -E ' (WARN|ERROR) ' "$WORK"/node-*.log 2>/dev/null | sed -E 's/^[^ ]* +//' | cut -c1-160 |
  sort | uniq -c | sort -rn | head -40 >"$OUT/node-log-warnings.txt" || true

# ---- summary -------------------------------------------------------------------
python3 - "$OUT" "$CONNECTIONS" "$NODES" "$HOLD" "$QUIET" <<'EOF'
import glob, json, os, sys
out, conns, nodes, hold, quiet = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
snaps = {}
for p in sorted(glob.glob(os.path.join(out, "snap-*.json")), key=lambda p: int(p.split("snap-")[1].split("-")[0])):
    s = json.load(open(p))
    snaps[s["name"]] = s


def cpu(a, b):
    """Machine CPU between two snapshots: busy cores on average, and by kind."""
    ta, tb = a["cpu_ticks"], b["cpu_ticks"]
    d = {k: tb[k] - ta[k] for k in ta}
    total = sum(d.values()) or 1
    secs = b["t"] - a["t"]
    busy = total - d["idle"] - d["iowait"]
    return {"secs": round(secs, 1), "busy_fraction": round(busy / total, 3),
            "busy_cores": round(busy / a["hz"] / secs, 2),
            "by_kind_cores": {k: round(v / a["hz"] / secs, 2) for k, v in d.items() if k != "idle"},
            "nodes_cores": round((b["nodes"]["cpu_secs"] - a["nodes"]["cpu_secs"]) / secs, 2),
            "loadgen_cores": round((b["loadgen"]["cpu_secs"] - a["loadgen"]["cpu_secs"]) / secs, 2)
            if b["loadgen"]["processes"] else None,
            "redis_cores": round((b["redis"]["cpu_secs"] - a["redis"]["cpu_secs"]) / secs, 2)}


def redis(a, b):
    ra, rb = a.get("redis_info") or {}, b.get("redis_info") or {}
    if "total_commands_processed" not in rb or "total_commands_processed" not in ra:
        return None
    secs = b["t"] - a["t"]
    ca, cb = ra.get("commands", {}), rb.get("commands", {})
    cmds = {}
    for k, v in cb.items():
        calls = v["calls"] - ca.get(k, {}).get("calls", 0)
        usec = v["usec"] - ca.get(k, {}).get("usec", 0)
        if calls > 0:
            cmds[k] = {"calls": calls, "per_sec": round(calls / secs, 1),
                       "usec_per_call": round(usec / calls, 2), "usec_total": usec}
    total = rb["total_commands_processed"] - ra["total_commands_processed"]
    c = lambda r: r["used_cpu_sys"] + r["used_cpu_user"]
    return {"secs": round(secs, 1), "commands": total, "commands_per_sec": round(total / secs),
            "by_command": dict(sorted(cmds.items(), key=lambda kv: -kv[1]["calls"])),
            "cpu_secs": round(c(rb) - c(ra), 2), "cpu_cores": round((c(rb) - c(ra)) / secs, 3),
            "net_in_bytes_per_sec": round((rb["total_net_input_bytes"] - ra["total_net_input_bytes"]) / secs),
            "net_out_bytes_per_sec": round((rb["total_net_output_bytes"] - ra["total_net_output_bytes"]) / secs),
            "used_memory_before": ra.get("used_memory"), "used_memory_after": rb.get("used_memory"),
            "used_memory_rss_after": rb.get("used_memory_rss"), "keys_after": rb.get("db0"),
            "connected_clients": rb.get("connected_clients")}


def metric_delta(a, b, k):
    return (b["metrics"] or {}).get(k, 0) - (a["metrics"] or {}).get(k, 0)


def window(a, b):
    a, b = snaps.get(a), snaps.get(b)
    if not a or not b:
        return None
    w = {"cpu": cpu(a, b), "redis": redis(a, b)}
    if a.get("metrics") and b.get("metrics"):
        secs = b["t"] - a["t"]
        w["node_frames_in_per_sec"] = round(metric_delta(a, b, "herald_frames_in_total") / secs)
        w["node_frames_out_per_sec"] = round(metric_delta(a, b, "herald_frames_out_total") / secs)
        w["node_write_syscalls_per_sec"] = round(metric_delta(a, b, "herald_write_syscalls_total") / secs)
    return w


def mem(s):
    m = s["meminfo"]
    return {"used_bytes": m["MemTotal"] - m["MemAvailable"], "available_bytes": m["MemAvailable"],
            "slab_bytes": m["Slab"], "sunreclaim_bytes": m["SUnreclaim"], "anon_bytes": m["AnonPages"],
            "nodes_rss_bytes": s["nodes"]["rss_bytes"], "loadgen_rss_bytes": s["loadgen"]["rss_bytes"],
            "loadgen_processes": s["loadgen"]["processes"], "redis_rss_bytes": s["redis"]["rss_bytes"],
            "redis_used_memory": (s.get("redis_info") or {}).get("used_memory"),
            "file_nr": s["file_nr"], "sockstat": s["sockstat"].strip().splitlines(),
            "metrics": s.get("metrics"), "free_m": s.get("free_m", "").splitlines(), "loadavg": s["loadavg"]}


summary = {"memory": {k: mem(s) for k, s in snaps.items()},
           "windows": {"connect": window("nodes-up", "connected"),
                       "hold_quiet": window("connected", "quiet-end"),
                       "broadcast": window("quiet-end", "broadcast-end"),
                       "hold_whole": window("connected", "hold-end"),
                       "close": window("hold-end", "nodes-idle")}}
held = snaps.get("hold-end") or snaps.get("connected")
base = snaps.get("nodes-up")
if held and base:
    alive = (held.get("metrics") or {}).get("herald_sessions") or 0
    d_nodes = held["nodes"]["rss_bytes"] - base["nodes"]["rss_bytes"]
    d_used = (held["meminfo"]["MemTotal"] - held["meminfo"]["MemAvailable"]) - (
        base["meminfo"]["MemTotal"] - base["meminfo"]["MemAvailable"])
    d_slab = held["meminfo"]["SUnreclaim"] - base["meminfo"]["SUnreclaim"]
    summary["per_connection"] = {
        "sessions_at_hold_end": alive,
        "nodes_rss_bytes": round(d_nodes / alive) if alive else None,
        "loadgen_rss_bytes": round(held["loadgen"]["rss_bytes"] / alive) if alive else None,
        "machine_used_bytes": round(d_used / alive) if alive else None,
        "kernel_sunreclaim_bytes": round(d_slab / alive) if alive else None,
        "redis_used_memory_bytes": round(((held.get("redis_info") or {}).get("used_memory", 0)
                                          - (base.get("redis_info") or {}).get("used_memory", 0)) / alive) if alive else None,
    }
for name in ("connect", "fanout"):
    p = os.path.join(out, f"{name}.json")
    if os.path.exists(p):
        r = json.load(open(p))
        summary[name] = {k: r.get(k) for k in ("connections", "connect_latency_us", "latency_us", "sent", "expected",
                                               "delivered", "lost", "duplicated", "out_of_order", "target", "loadgen",
                                               "locality", "placement", "duration_secs")}
        if name == "fanout":
            summary[name]["steps"] = [{k: s.get(k) for k in ("name", "rate", "expected", "delivered", "lost",
                                                              "errors", "not_sent", "kept_up", "acks_ok")}
                                      for s in r["rate"]["steps"]]
p = os.path.join(out, "presence.json")
if os.path.exists(p):
    summary["presence"] = json.load(open(p))
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=1)

c = summary.get("connect", {}).get("connections") or {}
print(f"connections: ok {c.get('ok')} of {c.get('attempted')}, alive after hold {c.get('alive_after_hold')}, "
      f"failed {c.get('failed_by_reason')}, dropped {c.get('dropped_during_hold')}")
print("per connection:", summary.get("per_connection"))
for k, w in summary["windows"].items():
    if w:
        r = w["redis"] or {}
        print(f"{k}: machine {w['cpu']['busy_cores']} cores busy (nodes {w['cpu']['nodes_cores']}, loadgen "
              f"{w['cpu']['loadgen_cores']}, redis {w['cpu']['redis_cores']}); redis {r.get('commands_per_sec')} cmd/s, "
              f"{r.get('cpu_cores')} cores, used_memory {r.get('used_memory_after')}")
f = summary.get("fanout")
if f:
    print(f"broadcast: expected {f['expected']}, delivered {f['delivered']}, lost {f['lost']}, dup {f['duplicated']}, "
          f"p50 {f['latency_us'] and f['latency_us']['p50']} us, p99 {f['latency_us'] and f['latency_us']['p99']} us")
pr = summary.get("presence")
if pr and pr.get("during"):
    print("presence during:", [(x["node"], x["count"]) for x in pr["during"]],
          "subscriptions summed:", pr["subscriptions_during"]["subscriptions_summed"], "expected", pr["expected_during"],
          "after:", [(x["node"], x["count"], x["http"]) for x in pr["after"]])
EOF
log "done in $(($(date +%s) - started_at)) s; reports in $OUT"
