#!/usr/bin/env bash
# Same-node against cross-node publish→deliver latency of a two-node
# cluster, measured in one run: herald-loadgen fanout with each room's
# subscribers dealt over both nodes and every publisher on the first, so a
# message reaches half its room on the node it was published to and half
# through the cluster's bus. Each rate is one loadgen run; with the bus's
# Redis port known, Redis's own counters (commands, bytes, CPU) are read
# before and after each run and divided by the publishes.
#
# usage:
#   benches/scripts/socketio-cluster.sh [ROUNDS]
#       Starts, per round: a Redis on a free port (from REDIS_PORT, 6391),
#       and two processes of benches/peers/socketio/server.js (PORT_A 3101,
#       PORT_B 3102) sharing rooms through @socket.io/redis-streams-adapter;
#       measures; stops them.
#   TARGETS=URL_A,URL_B [TARGET_PIDS=PID_A,PID_B] [REDIS_PORT=P] \
#     benches/scripts/socketio-cluster.sh [ROUNDS]
#       Measures two nodes someone else started (e.g. two Herald nodes,
#       ws://127.0.0.1:8081/ws,ws://127.0.0.1:8082/ws, with their publish
#       limit raised); REDIS_PORT is the Redis they share, if its counters
#       should be read. Nothing is started or stopped.
#   . benches/scripts/socketio-cluster.sh; cluster_fanout URL_A URL_B [PIDS] [REDIS_PORT] [TAG]
#       The measurement alone, from another script.
#
# Settings: RATES (200,1000,2000 publishes/s), ROOMS (100), ROOM_SIZE (10),
# PUBLISHERS (10), DURATION (10s per rate), WARMUP (3s at WARMUP_RATE 1000/s
# before the first rate, not recorded; WARMUP=0 skips it: fresh Node
# processes are slow in their first seconds), HTML (1: an HTML report beside
# each JSON one), OUT (target/socketio-cluster),
# SOURCE_IPS (127.0.0.2-127.0.0.9). Bounded: every loadgen run is under
# `timeout`; about 20 s per rate per round with the defaults (3 rounds x 3
# rates: 3-4 minutes). The load average before each run goes to
# OUT/loadavg.txt (the machine may be shared). Tables:
# python3 benches/scripts/cluster_table.py OUT.
# Sourced, it defines the functions only (run from the repository's root).

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RATES=${RATES:-200,1000,2000}
ROOMS=${ROOMS:-100}
ROOM_SIZE=${ROOM_SIZE:-10}
PUBLISHERS=${PUBLISHERS:-10}
DURATION=${DURATION:-10s}
OUT=${OUT:-target/socketio-cluster}
SRC=${SOURCE_IPS:-127.0.0.2-127.0.0.9}
LG=${LG:-target/release/herald-loadgen}

# free_port START: the first port from START on that nothing listens on.
free_port() {
  local p=$1
  while (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do
    p=$((p + 1))
    [ "$p" -lt $(($1 + 100)) ] || { echo "no free port in $1..$p" >&2; return 1; }
  done
  echo "$p"
}

# redis_snapshot PORT FILE: Redis's counters now, as JSON (commands by name,
# bytes in and out, CPU seconds).
redis_snapshot() {
  redis-cli -p "$1" INFO all | python3 -c '
import json, sys
info = {}
for line in sys.stdin:
    line = line.strip()
    if ":" not in line or line.startswith("#"):
        continue
    k, v = line.split(":", 1)
    if k.startswith("cmdstat_"):
        info.setdefault("commands", {})[k[8:]] = int(v.split(",")[0].split("=")[1])
    elif k in ("total_commands_processed", "total_net_input_bytes", "total_net_output_bytes"):
        info[k] = int(v)
    elif k in ("used_cpu_sys", "used_cpu_user", "used_cpu_sys_main_thread", "used_cpu_user_main_thread"):
        info[k] = float(v)
    elif k == "used_memory":
        info[k] = int(v)
json.dump(info, sys.stdout)
' >"$2"
}

# redis_delta BEFORE AFTER REPORT FILE: what Redis did during one loadgen
# run, in total and per publish the run sent.
redis_delta() {
  python3 - "$@" <<'EOF'
import json, sys
before, after, report = (json.load(open(p)) for p in sys.argv[1:4])
sent = report["sent"] or 1
delivered = report["delivered"] or 1
cpu = lambda s: s["used_cpu_sys"] + s["used_cpu_user"]
main = lambda s: s.get("used_cpu_sys_main_thread", 0) + s.get("used_cpu_user_main_thread", 0)
commands = {k: after["commands"].get(k, 0) - before.get("commands", {}).get(k, 0) for k in after.get("commands", {})}
# The INFO that took the "before" snapshot is not the run's.
commands["info"] = commands.get("info", 0) - 1
commands = {k: v for k, v in commands.items() if v > 0}
total = after["total_commands_processed"] - before["total_commands_processed"] - 1
d = {
    "publishes": report["sent"],
    "deliveries": report["delivered"],
    "commands": commands,
    "commands_total": total,
    "bytes_in": after["total_net_input_bytes"] - before["total_net_input_bytes"],
    "bytes_out": after["total_net_output_bytes"] - before["total_net_output_bytes"],
    "cpu_secs": round(cpu(after) - cpu(before), 3),
    "cpu_secs_main_thread": round(main(after) - main(before), 3),
    "used_memory_after": after.get("used_memory"),
}
d["per_publish"] = {
    "commands": round(total / sent, 3),
    "bytes_in": round(d["bytes_in"] / sent, 1),
    "bytes_out": round(d["bytes_out"] / sent, 1),
    "cpu_us": round(d["cpu_secs"] * 1e6 / sent, 2),
}
d["per_delivery_cpu_us"] = round(d["cpu_secs"] * 1e6 / delivered, 3)
json.dump(d, open(sys.argv[4], "w"), indent=1)
EOF
}

# cluster_fanout URL_A URL_B [PIDS] [REDIS_PORT] [TAG]: one loadgen run per
# rate of RATES against the two nodes, reports in $OUT as
# fanout-RATE[-TAG].json (and redis-RATE[-TAG].json with REDIS_PORT).
cluster_fanout() {
  local a=$1 b=$2 pids=${3:-} redis=${4:-} tag=${5:+-$5}
  local subscribers=$((ROOMS * ROOM_SIZE)) rate
  local shape=(--source-ips "$SRC" --subscribers "$subscribers" --rooms "$ROOMS" --publishers "$PUBLISHERS"
    --subscribers-on 0,1 --publishers-on 0 --payload 64 --quiet)
  mkdir -p "$OUT"
  if [ "${WARMUP:-3s}" != 0 ]; then
    timeout 60 "$LG" fanout --target "$a,$b" "${shape[@]}" --rate "${WARMUP_RATE:-1000}" \
      --duration "${WARMUP:-3s}" >/dev/null
  fi
  for rate in ${RATES//,/ }; do
    echo "fanout-$rate$tag $(date -u +%FT%TZ) loadavg $(cat /proc/loadavg)" >>"$OUT/loadavg.txt"
    local name="$OUT/fanout-$rate$tag"
    [ -z "$redis" ] || redis_snapshot "$redis" "$name.redis-before"
    # Connects (~1 s), the step, a 2 s drain: 60 s is far more than enough.
    timeout 120 "$LG" fanout --target "$a,$b" ${pids:+--target-pid "$pids"} "${shape[@]}" \
      --rate "$rate" --duration "$DURATION" --json "$name.json" ${HTML:+--html "$name.html"}
    if [ -n "$redis" ]; then
      redis_snapshot "$redis" "$name.redis-after"
      redis_delta "$name.redis-before" "$name.redis-after" "$name.json" "$OUT/redis-$rate$tag.json"
      rm -f "$name.redis-before" "$name.redis-after"
    fi
    # Let the nodes' queues empty before the next rate.
    sleep 1
  done
}

# What this script started, stopped on exit (only these pids).
started=()
stop_started() {
  local p
  for p in "${started[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${started[@]}"; do wait "$p" 2>/dev/null || true; done
  started=()
}

# socketio_round TAG: a fresh Redis and two Socket.IO processes, measured.
socketio_round() {
  local redis_port a_port b_port
  redis_port=$(free_port "${REDIS_PORT:-6391}")
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
    >"$OUT/redis-$1.log" 2>&1 &
  started+=($!)
  for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  redis-cli -p "$redis_port" ping >/dev/null || { echo "redis did not start on $redis_port" >&2; exit 1; }
  a_port=$(free_port "${PORT_A:-3101}")
  b_port=$(free_port "$(( ${PORT_B:-3102} > a_port ? ${PORT_B:-3102} : a_port + 1 ))")
  local pids=()
  for port in "$a_port" "$b_port"; do
    (cd benches/peers/socketio && REDIS_URL="redis://127.0.0.1:$redis_port" PORT=$port exec node server.js) \
      >"$OUT/socketio-$port-$1.log" 2>&1 &
    started+=($!)
    pids+=($!)
    wait_healthy "http://127.0.0.1:$port/health" || { echo "socket.io on $port did not start" >&2; exit 1; }
  done
  echo "== round $1: redis :$redis_port, socket.io :$a_port (publishers) and :$b_port"
  cluster_fanout "socketio://127.0.0.1:$a_port" "socketio://127.0.0.1:$b_port" \
    "${pids[0]},${pids[1]}" "$redis_port" "$1"
  stop_started
}

main() {
  set -euo pipefail
  cd "$(dirname "$0")/../.."
  local rounds=${1:-3} r
  mkdir -p "$OUT"
  cargo build --release -p herald-loadgen --bin herald-loadgen
  if [ -n "${TARGETS:-}" ]; then
    for r in $(seq "$rounds"); do
      echo "== round $r: $TARGETS"
      cluster_fanout "${TARGETS%%,*}" "${TARGETS#*,}" "${TARGET_PIDS:-}" "${REDIS_PORT:-}" "$r"
    done
  else
    npm ci --prefix benches/peers/socketio --no-audit --no-fund --loglevel=error
    trap stop_started EXIT
    for r in $(seq "$rounds"); do socketio_round "$r"; done
  fi
  python3 benches/scripts/cluster_table.py "$OUT"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  main "$@"
fi
