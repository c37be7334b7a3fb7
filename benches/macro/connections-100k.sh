#!/usr/bin/env bash
# 100,000+ concurrent WebSocket connections on one machine: NODES herald
# nodes (one process holds at most ~19,000 sockets here: open-file limit
# 20,000) and as many herald-loadgen worker processes, spread over source
# addresses 127.0.0.2-... so ephemeral ports never run out. Holds them,
# then reports connect latency, failures by reason and the nodes' memory.
# Bounded: connect at RATE/s, hold HOLD.
set -euo pipefail
cd "$(dirname "$0")/../.."
. benches/scripts/lib.sh
OUT=${OUT:-target/macro}
NODES=${NODES:-6}
CONNECTIONS=${CONNECTIONS:-102000}
RATE=${RATE:-5000}
HOLD=${HOLD:-20s}
BASE_PORT=${BASE_PORT:-18600}
mkdir -p "$OUT"
cargo build --release -p herald-gateway --bin herald -p herald-loadgen --bin herald-loadgen

pids=()
stop_nodes() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap stop_nodes EXIT
targets=()
for i in $(seq 0 $((NODES - 1))); do
  port=$((BASE_PORT + i))
  HERALD_STORAGE__BACKEND="${STORAGE:-memory}" \
    target/release/herald serve --listen "127.0.0.1:$port" --shards 1 --node-id "n$i" \
    --data-dir "$OUT/data-$i" >"$OUT/herald-$i.log" 2>&1 &
  pids+=($!)
  targets+=("ws://127.0.0.1:$port/ws")
done
for i in $(seq 0 $((NODES - 1))); do
  wait_healthy "http://127.0.0.1:$((BASE_PORT + i))/health" || { echo "node $i did not start" >&2; exit 1; }
done
IFS=, ; target_list="${targets[*]}"; pid_list="${pids[*]}"; unset IFS
target/release/herald-loadgen connect --target "$target_list" --workers "$NODES" \
  --source-ips 127.0.0.2-127.0.0.11 --connections "$CONNECTIONS" --connect-rate "$RATE" \
  --connect-window 512 --hold "$HOLD" --target-pid "$pid_list" \
  --json "$OUT/connections-100k.json" --html "$OUT/connections-100k.html"
