#!/usr/bin/env bash
# Durable storage, measured in one run (BENCHMARKS.md, "Durable storage"):
#  1. raw engine: storage-bench engine (one fsync's latency on the same disk;
#     appends/s with a sync per batch at batch 1, 64 and 1,024; read-last-50;
#     disk bytes per 64 B message);
#  2. publish->ack and publish->delivery at each of RATES on one node with
#     the embedded store and sync = always: durable rooms (chat:) and
#     memory-only rooms (game:) alternately, ROUNDS times, same node; one
#     subscriber per room (ACK_SUBSCRIBERS), so the figures are the
#     publish path's, not fan-out's;
#  2b. fan-out as the gateway section runs it (SUBSCRIBERS in ROOMS rooms) at
#     FANOUT_RATES, durable and memory-only rooms alternately, same node;
#  3. publish ceilings, one subscriber per room: CEILING_RATES stepped until
#     a step is not kept up, on memory-only rooms, on durable rooms with one
#     storage writer per node, and with one writer per shard (writers = 2),
#     beside the engine's batch-1,024 appends/s;
#  4. recovery: FILL_MESSAGES messages in FILL_ROOMS rooms written by
#     storage-bench fill, a second fill killed with SIGKILL mid-write, then
#     `herald serve` on that directory: time to /ready, to the first publish
#     into a stored room, and its offset; disk bytes per message.
#
# usage: benches/scripts/storage.sh [ROUNDS]
#   RATES (1000,10000), FANOUT_RATES (1000,5000),
#   CEILING_RATES (10000,20000,30000,40000,60000,80000), ACK_SUBSCRIBERS (100),
#   SUBSCRIBERS (1000), ROOMS (100), PUBLISHERS (10), SHARDS (2), DURATION (8),
#   FILL_MESSAGES (10000000), FILL_ROOMS (100000), OUT (target/storage-bench)
# Bounded: about 1 minute for 1, 45 s per round of 2, 1 minute for 3, and
# the fill (~2-3 minutes for 10 M messages here) for 4.
set -euo pipefail
cd "$(dirname "$0")/../.."
. benches/scripts/lib.sh
ROUNDS=${1:-3}
RATES=${RATES:-1000,10000}
FANOUT_RATES=${FANOUT_RATES:-1000,5000}
# Durable nodes (lib.sh's start_bench_node defaults to memory).
export STORAGE=embedded
CEILING_RATES=${CEILING_RATES:-10000,20000,30000,40000,60000,80000}
SHARDS=${SHARDS:-2}
DURATION=${DURATION:-8}
OUT=${OUT:-target/storage-bench}
PORT=${PORT:-18520}
SRC=${SOURCE_IPS:-127.0.0.2-127.0.0.5}
FILL_MESSAGES=${FILL_MESSAGES:-10000000}
FILL_ROOMS=${FILL_ROOMS:-100000}
rm -rf "$OUT" && mkdir -p "$OUT"
cargo build --release -p herald-gateway --bin herald -p herald-loadgen --bin herald-loadgen \
  -p herald-benches --bin storage-bench
LG=target/release/herald-loadgen
SB=target/release/storage-bench
trap stop_node EXIT

echo "1. raw engine"
"$SB" engine --dir "$OUT/engine" >"$OUT/engine.json"
rm -rf "$OUT/engine"

fanout() { # SUBSCRIBERS PREFIX RATE(S) JSON [extra loadgen args]
  local subscribers=$1 prefix=$2 rates=$3 json=$4
  shift 4
  "$LG" fanout --target "ws://127.0.0.1:$PORT/ws" --target-pid "$node_pid" --source-ips "$SRC" \
    --subscribers "$subscribers" --rooms "${ROOMS:-100}" --publishers "${PUBLISHERS:-10}" \
    --payload 64 --rates "$rates" --duration "${DURATION}s" --room-prefix "$prefix" \
    --quiet --json "$json" "$@" >/dev/null
}

echo "2. publish->ack, durable vs memory-only rooms"
start_bench_node target/release/herald "$SHARDS" "$OUT/node" "$OUT/herald.log"
for r in $(seq "$ROUNDS"); do
  for rate in ${RATES//,/ }; do
    fanout "${ACK_SUBSCRIBERS:-100}" "chat:st$r-$rate-" "$rate" "$OUT/durable-$rate-$r.json" --keep-up 0
    fanout "${ACK_SUBSCRIBERS:-100}" "game:st$r-$rate-" "$rate" "$OUT/memory-$rate-$r.json" --keep-up 0
  done
  for rate in ${FANOUT_RATES//,/ }; do
    fanout "${SUBSCRIBERS:-1000}" "chat:fo$r-$rate-" "$rate" "$OUT/fanout-durable-$rate-$r.json" --keep-up 0
    fanout "${SUBSCRIBERS:-1000}" "game:fo$r-$rate-" "$rate" "$OUT/fanout-memory-$rate-$r.json" --keep-up 0
  done
  echo "round $r: done"
done

echo "3. publish ceilings"
fanout "${ACK_SUBSCRIBERS:-100}" "game:ceiling-" "$CEILING_RATES" "$OUT/ceiling-memory.json"
fanout "${ACK_SUBSCRIBERS:-100}" "chat:ceiling-" "$CEILING_RATES" "$OUT/ceiling-durable.json"
stop_node
HERALD_STORAGE__WRITERS=2 start_bench_node target/release/herald "$SHARDS" "$OUT/node2" "$OUT/herald2.log"
fanout "${ACK_SUBSCRIBERS:-100}" "chat:ceiling2-" "$CEILING_RATES" "$OUT/ceiling-durable-2writers.json"
stop_node

echo "4. recovery after SIGKILL"
rm -rf "$OUT/recovery"
"$SB" fill --dir "$OUT/recovery/store" --rooms "$FILL_ROOMS" --messages "$FILL_MESSAGES" >/dev/null
# A second writer, killed in the middle of its batches.
"$SB" fill --dir "$OUT/recovery/store" --rooms "$FILL_ROOMS" --messages 1000000 >"$OUT/fill2.log" &
fill_pid=$!
sleep 3
kill -KILL "$fill_pid"
wait "$fill_pid" 2>/dev/null || true
acked=$(tail -n1 "$OUT/fill2.log" | awk '{print $2}')
bytes=$(du -sb "$OUT/recovery/store" | awk '{print $1}')
t0=$(date +%s.%N)
target/release/herald serve --listen "127.0.0.1:$PORT" --shards "$SHARDS" --data-dir "$OUT/recovery" \
  --api-key bench-key-0123456789 >"$OUT/recovery.log" 2>&1 &
node_pid=$!
wait_healthy "http://127.0.0.1:$PORT/ready"
t1=$(date +%s.%N)
answer=$(curl -fs -X POST -H 'Authorization: Bearer bench-key-0123456789' \
  -d '{"room":"chat:bench-7","data":"after"}' "http://127.0.0.1:$PORT/api/publish")
t2=$(date +%s.%N)
stop_node
python3 - "$t0" "$t1" "$t2" "$answer" "$bytes" "$FILL_MESSAGES" "$acked" "$FILL_ROOMS" >"$OUT/recovery.json" <<'PY'
import json, sys
t0, t1, t2 = map(float, sys.argv[1:4])
answer = json.loads(sys.argv[4])
messages = int(sys.argv[6]) + int(sys.argv[7] or 0)
print(json.dumps({
    "ready_s": round(t1 - t0, 3), "first_publish_s": round(t2 - t0, 3), "publish_answer": answer,
    "messages": messages, "rooms": int(sys.argv[8]), "disk_bytes": int(sys.argv[5]),
    "disk_bytes_per_message": round(int(sys.argv[5]) / messages, 1),
}))
PY

python3 - "$OUT" "$ROUNDS" "$RATES" "$FANOUT_RATES" <<'PY'
import json, statistics, sys
out, rounds, rates, fanout_rates = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(","), sys.argv[4].split(",")
e = json.load(open(f"{out}/engine.json"))
print("| raw engine | figure |\n|---|---|")
print(f"| one fsync (4 KiB + fdatasync) | p50 {e['fsync_4k_us']['p50']} us, p99 {e['fsync_4k_us']['p99']} us |")
for a in e["appends"]:
    print(f"| batch {a['batch']}, one sync each | {a['messages_per_sec']:.0f} msgs/s (commit p50 {a['commit_us']['p50']} us, p99 {a['commit_us']['p99']} us) |")
print(f"| read last 50 (1,000 rooms, 1 M messages) | p50 {e['read_last_50_us']['p50']} us, p99 {e['read_last_50_us']['p99']} us |")
print(f"| disk per 64 B message | {e['disk_bytes_per_64b_message']} B |")
print()
def table(title, prefix, rates):
    print(f"\n{title}\n")
    print("| rate | rooms | delivered | ack p50 ms | ack p99 ms | delivery p50 ms | delivery p99 ms | node CPU us/delivery |")
    print("|---|---|---|---|---|---|---|---|")
    for rate in rates:
        for kind in ("durable", "memory"):
            steps = [json.load(open(f"{out}/{prefix}{kind}-{rate}-{r}.json"))["rate"]["steps"][0] for r in range(1, rounds + 1)]
            med = statistics.median
            ack50 = [s["ack_latency_us"]["p50"] / 1000 for s in steps]
            ack99 = [s["ack_latency_us"]["p99"] / 1000 for s in steps]
            d50 = [s["latency_us"]["p50"] / 1000 for s in steps]
            d99 = [s["latency_us"]["p99"] / 1000 for s in steps]
            cpu = [s.get("target_cpu_us_per_delivery") or 0 for s in steps]
            got = sum(s["delivered"] for s in steps); exp = sum(s["expected"] for s in steps)
            runs = lambda xs: " / ".join(f"{x:.2f}" for x in xs)
            name = "chat (durable)" if kind == "durable" else "game (memory)"
            print(f"| {rate}/s | {name} | {got:,} of {exp:,} | {med(ack50):.2f} | {med(ack99):.2f} ({runs(ack99)}) | {med(d50):.2f} | {med(d99):.2f} ({runs(d99)}) | {med(cpu):.2f} |")
table("publish->ack, one subscriber per room", "", rates)
table("fan-out, 1,000 subscribers in 100 rooms", "fanout-", fanout_rates)
print()
for name in ("memory", "durable", "durable-2writers"):
    c = json.load(open(f"{out}/ceiling-{name}.json"))["rate"]
    print(f"ceiling {name}: max sustained {c.get('max_sustained_rate')} msgs/s; steps: " +
          ", ".join(f"{s['rate']:.0f} kept_up={s['kept_up']} ack p99 {s['ack_latency_us']['p99']/1000:.1f} ms" for s in c["steps"]))
r = json.load(open(f"{out}/recovery.json"))
print(f"recovery: {r['messages']:,} messages in {r['rooms']:,} rooms, {r['disk_bytes']:,} B on disk ({r['disk_bytes_per_message']} B/message); ready in {r['ready_s']} s, first publish answered at {r['first_publish_s']} s: {r['publish_answer']}")
PY
