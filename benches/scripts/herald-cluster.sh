#!/usr/bin/env bash
# Herald's cluster (nodes sharing rooms through Redis) measured on one
# machine, beside Socket.IO's cluster and the kernel's floor:
#
#   latency     Same-node against cross-node publish→deliver latency: two
#               Herald nodes, then two Socket.IO processes with
#               @socket.io/redis-streams-adapter, in the plan of
#               benches/results/socketio-cluster.md (1,000 subscribers in
#               rooms of 10 dealt over both, 10 publishers on the first,
#               64 B, 200/1,000/2,000 publishes/s), alternating which goes
#               first from round to round, and raw-ceiling --mode rate (the
#               kernel's floor) at the same deliveries/s in the same round.
#   throughput  Three Herald nodes against one node without Redis, per
#               rate step: rooms of 10 (9,000 subscribers in 900 rooms, 20
#               publishers, every room on all three nodes), then one room
#               of 5,000 (one publisher). A series stops after its first
#               step that was not kept up.
#   cross       CPU per cross-node delivery (docs/CAPACITY.md): two nodes,
#               every subscriber on the second and every publisher on the
#               first (9,000 in rooms of 10, 20 publishers, 2,500/s); beside
#               it the same plan on one node with Redis (every delivery
#               same-node, still sequenced in Redis) and one without.
#   all         The three, in that order (and latency-ref after latency).
#   latency-ref The latency plan against one Herald node without Redis
#               (both "targets" are that node), for reference.
#
# usage: benches/scripts/herald-cluster.sh latency|latency-ref|throughput|cross|all [ROUNDS]
#
# With each run the nodes' CPU per thread over the step (connects done to
# the end of the drain) goes to threads-NAME.json (thread_cpu.py).
#
# Every Redis is this script's own (a free port from REDIS_PORT, 6491, no
# persistence), every node fresh per round and series; everything started
# is stopped on exit. Redis is sampled 4 times a second during every run
# (benches/scripts/redis_window.py; the samples stay in DATA/samples):
# redis-NAME.json has the whole run (the keys of socketio-cluster.sh's
# redis-RATE-ROUND.json) and `steady`, the step without its first second
# and last half second, per publish.
# Before every run the script waits (up to WAIT_MAX, 300 s) while other
# heavy work runs (cargo, rustc, cluster_design, herald-loadgen or
# raw-ceiling not started by this script, another /tmp/herald-*.lock) or
# the machine is over 30 % busy, and records the load average, the CPU use
# of the second before and what it waited for in OUT/*/loadavg.txt; a run
# that such work overlapped is marked CONTENDED there and run once more.
# While it runs it holds /tmp/herald-bench.lock. Tables:
# python3 benches/scripts/herald_cluster_table.py OUT.
#
# Settings: OUT (benches/results/herald-cluster), DATA (/tmp/herald-cluster-data:
# logs, data directories, Redis samples), BIN (target/herald-cluster-bin:
# the binaries are copied there after the build so a concurrent build cannot
# change them between rounds; NO_BUILD=1 uses BIN as it is), SHARDS_CLUSTER
# (1 per cluster node), SHARDS_SINGLE (2: the whole machine),
# LAT_RATES (200,1000,2000), ROOMS10_RATES (1000,2500,5000,7500,10000),
# ROOM5000_RATES (10,20,50,100,200,400), CROSS_RATE (2500).
# Bounded: every loadgen run is under `timeout`; latency ~3 min per round,
# throughput ~7 min per round, cross ~1.5 min per round.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-benches/results/herald-cluster}
# Redis and port helpers (free_port, wait_healthy); sourced, it only defines
# (and sets its own defaults, which this script does not use).
. benches/scripts/socketio-cluster.sh

BIN=${BIN:-target/herald-cluster-bin}
HERALD=$BIN/herald
LG=$BIN/herald-loadgen
RAW=$BIN/raw-ceiling
SHARDS_CLUSTER=${SHARDS_CLUSTER:-1}
SHARDS_SINGLE=${SHARDS_SINGLE:-2}
API_KEY=bench-key-0123456789
DATA=${DATA:-/tmp/herald-cluster-data}
LOCK=/tmp/herald-bench.lock
WAIT_MAX=${WAIT_MAX:-300}

# What this script started (pids), stopped on exit.
mine=()
stop_mine() {
  local p
  for p in "${mine[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${mine[@]}"; do wait "$p" 2>/dev/null || true; done
  mine=()
}
cleanup() {
  stop_mine
  stop_sampler
  watch_stop /dev/null exit || true
  rm -f "$LOCK"
}

# others_busy: heavy processes that are not this script's descendants, by
# name (empty: none).
MY_PID=$$
others_busy() {
  ps -eo pid=,ppid=,comm= | awk -v me="$MY_PID" '
    { parent[$1] = $2; name[$1] = $3 }
    END {
      for (p in name) {
        if (name[p] !~ /^(cargo|rustc|cluster_design|herald-loadgen|raw-ceiling|cc1|ld)$/) continue
        q = p; ours = 0
        for (i = 0; i < 64 && q > 1; i++) { if (q == me) { ours = 1; break }; q = parent[q] }
        if (!ours) print name[p] "(" p ")"
      }
    }' | sort -u -t'(' -k1,1 | tr '\n' ' '
  # Other benchmarks' locks (this script's own is $LOCK, held by us).
  local f
  for f in /tmp/herald-*.lock; do
    [ -e "$f" ] && [ "$f" != "$LOCK" ] && printf 'lock:%s ' "$(basename "$f")"
  done
  return 0
}

# watch_start / watch_stop LOG NAME: what of others_busy showed up during
# a run (polled twice a second), appended to LOG; watch_stop returns 1 if
# anything did.
watch_pid=""
watch_start() {
  rm -f "$DATA/watch"
  (while :; do b=$(others_busy); [ -z "$b" ] || echo "$(date -u +%T) $b"; sleep 0.5; done) >"$DATA/watch" 2>/dev/null &
  watch_pid=$!
}
watch_stop() {
  [ -n "$watch_pid" ] || return 0
  kill "$watch_pid" 2>/dev/null || true
  wait "$watch_pid" 2>/dev/null || true
  watch_pid=""
  if [ -s "$DATA/watch" ]; then
    echo "$2 CONTENDED during the run: $(head -1 "$DATA/watch") ... ($(wc -l <"$DATA/watch") polls)" >>"$1"
    return 1
  fi
  return 0
}

# cpu_busy_1s: the machine's CPU use over one second, in % of both vCPUs.
cpu_busy_1s() {
  local a b
  a=$(head -1 /proc/stat)
  sleep 1
  b=$(head -1 /proc/stat)
  echo "$a" "$b" | awk '{n=NF/2; for(i=2;i<=n;i++){t0+=$i; t1+=$(i+n)}; i0=$5+$6; i1=$(5+n)+$(6+n); printf "%.0f", 100*(1-(i1-i0)/(t1-t0))}'
}

# wait_quiet LOGFILE NAME: waits, up to WAIT_MAX s, while others_busy or
# while the machine is more than 30 % busy over a second with nothing of
# ours running; logs the load average, that second's CPU use, the busiest
# processes (ps's lifetime %CPU) and how long it waited.
wait_quiet() {
  local log=$1 name=$2 waited=0 busy busy1 top
  while :; do
    busy=$(others_busy)
    busy1=$(cpu_busy_1s)
    { [ -n "$busy" ] || [ "$busy1" -gt 30 ]; } || break
    [ "$waited" -lt "$WAIT_MAX" ] || break
    echo "  waiting: ${busy:-nothing named} busy, machine ${busy1}% busy" >&2
    sleep 10
    waited=$((waited + 11))
  done
  top=$(ps -eo pcpu=,comm= --sort=-pcpu | head -4 | awk '{printf "%s %s%%, ", $2, $1}')
  echo "$name $(date -u +%FT%TZ) loadavg $(cut -d' ' -f1-3 /proc/loadavg) cpu-busy-1s ${busy1}% waited ${waited}s${busy:+ still busy: $busy} ps-top: $top" >>"$log"
}

# start_redis: a fresh Redis on a free port, in $redis_port.
start_redis() {
  redis_port=$(free_port "${REDIS_PORT:-6491}")
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >"$DATA/redis-$redis_port.log" 2>&1 &
  mine+=($!)
  for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  redis-cli -p "$redis_port" ping >/dev/null || { echo "redis did not start on $redis_port" >&2; exit 1; }
}

# start_herald NAME PORT SHARDS [REDIS_PORT]: a fresh node (pid appended to
# node_pids, URL to node_urls), memory storage, the publish limit raised.
start_herald() {
  local name=$1 port=$2 shards=$3 redis=${4:-}
  rm -rf "${DATA:?}/$name"
  mkdir -p "$DATA/$name"
  HERALD_LIMITS__PUBLISH_RATE_PER_SEC=1000000 HERALD_LIMITS__PUBLISH_BURST=1000000 \
    "$HERALD" serve --listen "127.0.0.1:$port" --shards "$shards" --storage memory \
    ${redis:+--redis "redis://127.0.0.1:$redis" --node-id "$name"} --api-key "$API_KEY" \
    --data-dir "$DATA/$name" >"$DATA/$name.log" 2>&1 &
  mine+=($!)
  node_pids+=($!)
  node_urls+=("ws://127.0.0.1:$port/ws")
  node_metrics+=("http://127.0.0.1:$port/metrics")
  wait_healthy "http://127.0.0.1:$port/ready" || { echo "herald $name did not start" >&2; exit 1; }
}

# start_herald_nodes N SHARDS [REDIS_PORT]: N fresh nodes on free ports.
start_herald_nodes() {
  node_pids=() node_urls=() node_metrics=()
  local i port=18600
  for i in $(seq "$1"); do
    port=$(free_port $((port + 1)))
    start_herald "n$i" "$port" "$2" "${3:-}"
  done
}

# start_socketio_nodes REDIS_PORT: two Socket.IO processes sharing rooms
# through the redis-streams adapter, as socketio-cluster.sh starts them.
start_socketio_nodes() {
  node_pids=() node_urls=() node_metrics=()
  local i port=3100
  for i in 1 2; do
    port=$(free_port $((port + 1)))
    (cd benches/peers/socketio && REDIS_URL="redis://127.0.0.1:$1" PORT=$port exec node server.js) \
      >"$DATA/socketio-$port.log" 2>&1 &
    mine+=($!)
    node_pids+=($!)
    node_urls+=("socketio://127.0.0.1:$port")
    wait_healthy "http://127.0.0.1:$port/health" || { echo "socket.io on $port did not start" >&2; exit 1; }
  done
}

sampler_pid=""
stop_sampler() {
  [ -n "$sampler_pid" ] || return 0
  kill -TERM "$sampler_pid" 2>/dev/null || true
  wait "$sampler_pid" 2>/dev/null || true
  sampler_pid=""
}

join() { local IFS=,; echo "$*"; }

# run_fanout DIR NAME RATE [REDIS_PORT] -- LOADGEN_ARGS...: one loadgen run
# at RATE against node_urls, CPU of node_pids; DIR/NAME.json, and with
# REDIS_PORT DIR/redis-NAME.json (redis_window.py). Returns 0 if the step
# was kept up.
run_fanout() {
  local dir=$1 name=$2 rate=$3 redis=${4:-} attempt
  shift 4
  [ "${1:-}" = "--" ] && shift
  mkdir -p "$dir"
  # A run that someone else's benchmark overlapped is run again, once.
  for attempt in 1 2; do
    wait_quiet "$dir/loadavg.txt" "$name"
    local samples="$DATA/samples/${dir//\//_}-$name.jsonl"
    mkdir -p "$DATA/samples"
    rm -f "$samples" "$dir/$name.stderr"
    watch_start
    if [ -n "$redis" ]; then
      python3 benches/scripts/redis_window.py sample "$redis" "$samples" --every 0.25 \
        ${node_metrics[0]:+--metrics "$(join "${node_metrics[@]}")"} &
      sampler_pid=$!
      sleep 1.5
    fi
    # Each progress line stamped with its time; the nodes' CPU per thread
    # taken when the connects are done (the step starts 50 ms later) and
    # when the step's line comes (after its drain).
    local pids
    pids=$(join "${node_pids[@]}")
    rm -f "$DATA/threads-before.json" "$DATA/threads-after.json"
    timeout 180 "$LG" fanout --target "$(join "${node_urls[@]}")" --target-pid "$pids" \
      --payload 64 --rate "$rate" --duration "$DURATION" "$@" --json "$dir/$name.json" 2>&1 >/dev/null |
      while IFS= read -r line; do
        printf '%s %s\n' "$(date +%s.%N)" "$line"
        case "$line" in
          "connected "*) python3 benches/scripts/thread_cpu.py snapshot "$pids" "$DATA/threads-before.json" ;;
          "step "*) python3 benches/scripts/thread_cpu.py snapshot "$pids" "$DATA/threads-after.json" ;;
        esac
      done >"$dir/$name.stderr" || true
    if [ -s "$DATA/threads-before.json" ] && [ -s "$DATA/threads-after.json" ] && [ -s "$dir/$name.json" ]; then
      python3 benches/scripts/thread_cpu.py diff "$DATA/threads-before.json" "$DATA/threads-after.json" \
        "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["rate"]["steps"][0]["delivered"])' "$dir/$name.json")" \
        "$dir/threads-$name.json"
    fi
    if [ -n "$redis" ]; then
      sleep 0.5
      stop_sampler
      python3 benches/scripts/redis_window.py window "$samples" "$dir/$name.stderr" "$dir/$name.json" \
        "$dir/redis-$name.json"
    fi
    # Let the nodes' queues empty before the next run.
    sleep 1
    watch_stop "$dir/loadavg.txt" "$name" && break
    echo "  $name: another benchmark ran meanwhile (attempt $attempt)" >&2
  done
  python3 -c 'import json, sys
s = json.load(open(sys.argv[1]))["rate"]["steps"][0]
print("  %s: %.0f deliveries/s, p50 %s µs, p99 %s µs, lost %s, kept up %s" % (sys.argv[2],
      s["deliveries_per_sec"], s["latency_us"]["p50"], s["latency_us"]["p99"], s["lost"], s["kept_up"]))
sys.exit(0 if s["kept_up"] else 1)' "$dir/$name.json" "$name"
}

# ---------------------------------------------------------------------------
# 1. Same-node vs cross-node latency, Herald and Socket.IO, with the floor.

LAT_SHAPE=(--source-ips 127.0.0.2-127.0.0.9 --subscribers 1000 --rooms 100 --publishers 10
  --subscribers-on 0,1 --publishers-on 0)

lat_series() { # lat_series herald|socketio ROUND
  local kind=$1 r=$2 dir="$OUT/latency/$1"
  start_redis
  if [ "$kind" = herald ]; then
    start_herald_nodes 2 "$SHARDS_CLUSTER" "$redis_port"
  else
    start_socketio_nodes "$redis_port"
  fi
  echo "== latency round $r: $kind $(join "${node_urls[@]}"), redis :$redis_port"
  # Warm-up as socketio-cluster.sh: 3 s at 1,000/s, not recorded.
  timeout 60 "$LG" fanout --target "$(join "${node_urls[@]}")" "${LAT_SHAPE[@]}" --payload 64 \
    --rate 1000 --duration 3s >/dev/null 2>&1 || true
  local rate
  for rate in ${LAT_RATES//,/ }; do
    DURATION=10s run_fanout "$dir" "fanout-$rate-$r" "$rate" "$redis_port" -- "${LAT_SHAPE[@]}" || true
  done
  stop_mine
}

lat_kernel() { # lat_kernel ROUND: the floor at the same deliveries/s (1,000 receivers, rooms of 10)
  local r=$1 dir="$OUT/latency/kernel" rate attempt
  mkdir -p "$dir"
  for rate in ${LAT_RATES//,/ }; do
    for attempt in 1 2; do
      wait_quiet "$dir/loadavg.txt" "kernel-$rate-$r"
      watch_start
      timeout 60 "$RAW" --mode rate --connections 1000 --room-size 10 --rate "$rate" --duration 10 \
        --json "$dir/kernel-$rate-$r.json" >/dev/null
      watch_stop "$dir/loadavg.txt" "kernel-$rate-$r" && break
    done
  done
  echo "== latency round $r: kernel floor done"
}

# A reference: one Herald node without Redis (SHARDS_CLUSTER shards) under
# the same plan, both "targets" being that node (as socketio-cluster.md's
# one-process reference), so same and cross node agree.
latency_ref() {
  local r rate dir="$OUT/latency/herald-single"
  for r in $(seq "$ROUNDS"); do
    start_herald_nodes 1 "$SHARDS_CLUSTER"
    node_urls=("${node_urls[0]}" "${node_urls[0]}")
    echo "== latency reference round $r: one node ${node_urls[0]}, no Redis"
    timeout 60 "$LG" fanout --target "$(join "${node_urls[@]}")" "${LAT_SHAPE[@]}" --payload 64 \
      --rate 1000 --duration 3s >/dev/null 2>&1 || true
    for rate in ${LAT_RATES//,/ }; do
      DURATION=10s run_fanout "$dir" "fanout-$rate-$r" "$rate" "" -- "${LAT_SHAPE[@]}" || true
    done
    stop_mine
  done
}

latency() {
  local r
  for r in $(seq "$ROUNDS"); do
    lat_kernel "$r"
    if [ $((r % 2)) = 1 ]; then
      lat_series herald "$r"; lat_series socketio "$r"
    else
      lat_series socketio "$r"; lat_series herald "$r"
    fi
  done
}

# ---------------------------------------------------------------------------
# 2. Deliveries/s: three nodes against one node without Redis.

TP_SRC=(--source-ips 127.0.0.2-127.0.0.17)

tp_series() { # tp_series rooms10|room5000 cluster3|single ROUND
  local shape=$1 kind=$2 r=$3 dir="$OUT/throughput/$1-$2" rates args rate
  if [ "$shape" = rooms10 ]; then
    rates=$ROOMS10_RATES args=(--subscribers 9000 --rooms 900 --publishers 20)
  else
    rates=$ROOM5000_RATES args=(--subscribers 5000 --rooms 1 --publishers 1)
  fi
  local redis=""
  if [ "$kind" = cluster3 ]; then
    start_redis
    redis=$redis_port
    start_herald_nodes 3 "$SHARDS_CLUSTER" "$redis_port"
  else
    start_herald_nodes 1 "$SHARDS_SINGLE"
  fi
  echo "== throughput round $r: $shape on $kind $(join "${node_urls[@]}")"
  for rate in ${rates//,/ }; do
    DURATION=8s run_fanout "$dir" "fanout-$rate-$r" "$rate" "$redis" -- "${TP_SRC[@]}" "${args[@]}" || break
  done
  stop_mine
}

throughput() {
  local r shape
  for r in $(seq "$ROUNDS"); do
    for shape in rooms10 room5000; do
      if [ $((r % 2)) = 1 ]; then
        tp_series "$shape" cluster3 "$r"; tp_series "$shape" single "$r"
      else
        tp_series "$shape" single "$r"; tp_series "$shape" cluster3 "$r"
      fi
    done
  done
}

# ---------------------------------------------------------------------------
# 3. CPU per cross-node delivery.

CROSS_SHAPE=(--source-ips 127.0.0.2-127.0.0.17 --subscribers 9000 --rooms 900 --publishers 20)

cross_one() { # cross_one cross|local-redis|single ROUND
  local kind=$1 r=$2 dir="$OUT/cross" redis=""
  case "$kind" in
    cross)
      start_redis; redis=$redis_port
      start_herald_nodes 2 "$SHARDS_CLUSTER" "$redis_port"
      DURATION=10s run_fanout "$dir" "$kind-$r" "$CROSS_RATE" "$redis" -- "${CROSS_SHAPE[@]}" \
        --subscribers-on 1 --publishers-on 0 || true ;;
    local-redis)
      start_redis; redis=$redis_port
      start_herald_nodes 1 "$SHARDS_CLUSTER" "$redis_port"
      DURATION=10s run_fanout "$dir" "$kind-$r" "$CROSS_RATE" "$redis" -- "${CROSS_SHAPE[@]}" || true ;;
    single)
      start_herald_nodes 1 "$SHARDS_CLUSTER"
      DURATION=10s run_fanout "$dir" "$kind-$r" "$CROSS_RATE" "" -- "${CROSS_SHAPE[@]}" || true ;;
  esac
  stop_mine
}

cross() {
  local r order
  for r in $(seq "$ROUNDS"); do
    case $((r % 3)) in
      1) order="cross local-redis single" ;;
      2) order="local-redis single cross" ;;
      0) order="single cross local-redis" ;;
    esac
    for k in $order; do cross_one "$k" "$r"; done
    echo "== cross round $r done"
  done
}

# ---------------------------------------------------------------------------

what=${1:-}
ROUNDS=${2:-3}
LAT_RATES=${LAT_RATES:-200,1000,2000}
ROOMS10_RATES=${ROOMS10_RATES:-1000,2500,5000,7500,10000}
ROOM5000_RATES=${ROOM5000_RATES:-10,20,50,100,200,400}
CROSS_RATE=${CROSS_RATE:-2500}
case "$what" in
  latency | latency-ref | throughput | cross | all) ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d' >&2; exit 2 ;;
esac

[ ! -e "$LOCK" ] || { echo "$LOCK exists ($(cat "$LOCK")): another benchmark runs" >&2; exit 1; }
echo "herald-cluster.sh $what (pid $$), $(date -u +%FT%TZ): Herald cluster latency and throughput (waits for other benchmarks' locks before each run)" >"$LOCK"
trap cleanup EXIT
mkdir -p "$OUT" "$DATA"
# The build is heavy too: it waits for others like a run does.
wait_quiet "$OUT/runs.txt" build
if [ -z "${NO_BUILD:-}" ]; then
  cargo build --release -p herald-gateway --bin herald -p herald-loadgen --bin herald-loadgen \
    -p herald-benches --bin raw-ceiling
  mkdir -p "$BIN"
  cp target/release/herald target/release/herald-loadgen target/release/raw-ceiling "$BIN/"
  echo "built $(date -u +%FT%TZ) from HEAD $(git rev-parse --short HEAD), $(git status --short gateway loadgen protocol storage benches/src | wc -l) changed files in gateway/ loadgen/ protocol/ storage/ benches/src/" >>"$OUT/runs.txt"
fi
{
  echo "run $what $(date -u +%FT%TZ), rounds $ROUNDS"
  echo "binaries: $(cd "$BIN" && sha256sum herald herald-loadgen raw-ceiling | cut -c1-16 | tr '\n' ' ')"
  echo "HEAD $(git rev-parse --short HEAD), $(git status --short gateway loadgen protocol | wc -l) changed files in gateway/ loadgen/ protocol/ at start"
  echo "machine: $(lscpu | grep 'Model name' | sed 's/ *Model name: *//'), nproc $(nproc), $(grep MemTotal /proc/meminfo | tr -s ' '), $(uname -r)"
} >>"$OUT/runs.txt"
case "$what" in
  latency) latency ;;
  latency-ref) latency_ref ;;
  throughput) throughput ;;
  cross) cross ;;
  all) latency; latency_ref; throughput; cross ;;
esac
echo "done $what $(date -u +%FT%TZ)" >>"$OUT/runs.txt"
