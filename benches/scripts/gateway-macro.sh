#!/usr/bin/env bash
# Reproduces the gateway figures in BENCHMARKS.md on this machine, in one
# run: the kernel's fan-out ceiling, idle memory per connection at 15,000
# connections, and fan-out (1 room x 5,000 subscribers; 1,000 rooms x 10)
# with the node on 2 shards and on 1 shard, each as a rate sweep followed by
# one step at half of the sweep's max. Results (JSON) go to
# ${OUT:-target/macro}. Bounded: each step has a fixed duration; the whole
# script takes about 6 minutes here.
set -euo pipefail
cd "$(dirname "$0")/../.."
. benches/scripts/lib.sh
OUT=${OUT:-target/macro}
PORT=${PORT:-18480}
mkdir -p "$OUT"
# Source addresses: ~15,000 connections per scenario from 127.0.0.1 alone
# meet the previous scenario's TIME_WAIT sockets in the ephemeral port
# allocator, which adds 1-2 s to the last few percent of connects.
SRC="--source-ips ${SOURCE_IPS:-127.0.0.2-127.0.0.9}"
cargo build --release -p herald-gateway --bin herald -p herald-benches --bin raw-ceiling -p herald-loadgen --bin herald-loadgen
LG=target/release/herald-loadgen

# A fresh node on 2 shards (or $SHARDS) with the raised publish limits of
# lib.sh's start_bench_node; everything else is the default configuration.
start_node() {
  start_bench_node target/release/herald "${SHARDS:-2}" "$OUT/data" "$OUT/herald.log"
}
trap stop_node EXIT

echo "== raw ceiling (5,000 connections, one 64 B write per connection per message)"
target/release/raw-ceiling --connections 5000 --duration 5 --json "$OUT/raw-max.json" | tail -3
target/release/raw-ceiling --mode sweep-latency --connections 5000 --json "$OUT/raw-sweep.json" | tail -3
target/release/raw-ceiling --connections 1000 --duration 5 --json "$OUT/raw-max-1000.json" | tail -3
# The nearest one process gets to the 10,000 receivers of the rooms-of-10 case.
target/release/raw-ceiling --connections 9000 --duration 5 --json "$OUT/raw-max-9000.json" | tail -3

echo "== idle memory, fresh node, 15,000 connections"
start_node
$LG connect --target "ws://127.0.0.1:$PORT/ws" --target-pid "$node_pid" $SRC \
  --connections 15000 --connect-rate 5000 --hold 5s --quiet --json "$OUT/idle.json"
stop_node
# `herald` commits allocator arenas lazily; this is mimalloc's own default,
# for comparison.
echo "== idle memory, fresh node with MIMALLOC_ARENA_EAGER_COMMIT=2"
MIMALLOC_ARENA_EAGER_COMMIT=2 start_node
$LG connect --target "ws://127.0.0.1:$PORT/ws" --target-pid "$node_pid" $SRC \
  --connections 15000 --connect-rate 5000 --hold 5s --quiet --json "$OUT/idle-eager.json"
stop_node

# fanout NAME RATES SHAPE...: on a fresh node, the rate sweep (every step),
# then one step at half of the sweep's max sustained rate.
fanout() {
  local name=$1 rates=$2; shift 2
  start_node
  local lg=("$LG" fanout --target "ws://127.0.0.1:$PORT/ws" --target-pid "$node_pid" $SRC "$@"
    --payload 64 --duration 5s --quiet)
  "${lg[@]}" --all-steps --rates "$rates" --json "$OUT/$name-s$SHARDS.json"
  local half
  half=$(half_rate "$OUT/$name-s$SHARDS.json")
  if [ "$half" != 0 ]; then
    "${lg[@]}" --rate "$half" --keep-up 0 --json "$OUT/$name-s$SHARDS-half.json"
  fi
  stop_node
}

# 2 shards is the default on this machine (one per core). 1 shard is one
# writer thread, like the kernel ceiling's, with the load generator on the
# other core, as the ceiling's reader is.
for SHARDS in 2 1; do
  echo "== fan-out, $SHARDS shard(s): 1 room x 5,000 subscribers, 64 B"
  fanout fanout-5000 "${RATES_5000:-2,10,20,50,100,200,400,800}" \
    --subscribers 5000 --rooms 1 --publishers 1
  echo "== fan-out, $SHARDS shard(s): 10,000 clients in 1,000 rooms of 10, 64 B"
  fanout fanout-10x1000 "${RATES_10:-1000,2500,5000,7500,10000,12000,14000,20000}" \
    --subscribers 10000 --rooms 1000 --publishers 20
done
echo "results in $OUT"
