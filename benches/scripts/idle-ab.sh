#!/usr/bin/env bash
# Idle cost of two `herald` builds, alternately on fresh nodes: 15,000
# WebSocket connections (Connect, no rooms) held open with heartbeats
# answered; for each run the node's RSS per connection (herald-loadgen
# connect --target-pid) and the node's CPU while the connections sit idle
# (utime + stime from /proc/PID/stat over WINDOW seconds, after SETTLE
# seconds of quiet once every connection is up).
#
# usage: benches/scripts/idle-ab.sh HERALD_A HERALD_B [ROUNDS]
#   CONNECTIONS (15000), SHARDS (2), SETTLE (5), WINDOW (30), OUT (target/idle-ab)
# Bounded: ROUNDS x 2 runs of about SETTLE + WINDOW + 10 s each.
set -euo pipefail
cd "$(dirname "$0")/../.."
. benches/scripts/lib.sh
[ $# -ge 2 ] || { sed -n 2,12p "$0" >&2; exit 1; }
A=$1 B=$2 ROUNDS=${3:-3}
CONNECTIONS=${CONNECTIONS:-15000}
SETTLE=${SETTLE:-5} WINDOW=${WINDOW:-30}
OUT=${OUT:-target/idle-ab}
PORT=${PORT:-18495}
mkdir -p "$OUT"
cargo build --release -p herald-loadgen --bin herald-loadgen
LG=target/release/herald-loadgen
HZ=$(getconf CLK_TCK)

trap stop_node EXIT

# cpu_ticks PID: utime + stime of the process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# one LABEL BINARY ROUND
one() {
  start_bench_node "$2" "${SHARDS:-2}" "$OUT/data" "$OUT/herald-$1.log"
  local hold=$((SETTLE + WINDOW + 15))
  "$LG" connect --target "ws://127.0.0.1:$PORT/ws" --target-pid "$node_pid" \
    --source-ips "${SOURCE_IPS:-127.0.0.2-127.0.0.9}" --connections "$CONNECTIONS" \
    --connect-rate 5000 --hold "${hold}s" --quiet --json "$OUT/$1-$3.json" >/dev/null &
  local lg=$!
  # Every connection is up after CONNECTIONS / 5000 s; then let it settle.
  sleep $((CONNECTIONS / 5000 + 2 + SETTLE))
  local c0 c1
  c0=$(cpu_ticks "$node_pid")
  sleep "$WINDOW"
  c1=$(cpu_ticks "$node_pid")
  echo "$c0 $c1 $HZ $WINDOW" >"$OUT/$1-$3.cpu"
  wait "$lg"
  stop_node
}

for r in $(seq "$ROUNDS"); do
  one a "$A" "$r"
  one b "$B" "$r"
done

python3 - "$OUT" "$ROUNDS" "$A" "$B" "$CONNECTIONS" <<'EOF'
import json, sys
out, rounds, conns = sys.argv[1], int(sys.argv[2]), int(sys.argv[5])
print(f"A = {sys.argv[3]}\nB = {sys.argv[4]}\n")
print(f"| run | connections held | RSS per connection | node CPU while idle | CPU µs per connection-second |")
print("|---|---|---|---|---|")
for r in range(1, rounds + 1):
    for side in "ab":
        j = json.load(open(f"{out}/{side}-{r}.json"))
        c0, c1, hz, window = open(f"{out}/{side}-{r}.cpu").read().split()
        secs = (int(c1) - int(c0)) / int(hz)
        pct = 100 * secs / int(window)
        per = secs * 1e6 / (int(window) * conns)
        alive = j["connections"].get("alive_after_hold") or j["connections"]["ok"]
        print(f"| {side.upper()}{r} | {alive:,} | {j['target']['rss_bytes_per_connection']:,.0f} B | "
              f"{pct:.2f} % of a core | {per:.3f} |")
EOF
