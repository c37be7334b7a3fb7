#!/usr/bin/env bash
# Herald's publish -> deliver latency in rooms of 10 beside the kernel's floor
# at the same rates, in one run: for each rate, `raw-ceiling --mode rate`
# (plain TCP, one 64 B write per delivery, no protocol) and then Herald on a
# fresh node driven by `herald-loadgen fanout`. Both are open loop, time each
# delivery from its message's scheduled time, and use 9,000 receiving
# connections in 900 rooms of 10 (the most one raw-ceiling process holds
# under the 20,000 open-file limit).
#
# usage: benches/scripts/small-rooms-floor.sh [ROUNDS]
#   RATES     messages/s, comma-separated (default 2500,3750,5000,6250,7500,10000;
#             x ROOM_SIZE deliveries/s)
#   ROOM_SIZE 10 (default: 9,000 receivers in 900 rooms) or 5000 (one room of
#             5,000 receivers, one publisher)
#   SHARDS    Herald's shards (default 2, one per core here)
#   DURATION  seconds per step (default 8); OUT (target/floor)
# Beside latency it gives CPU per delivery: the kernel floor's writer (the
# process that plays the server) and Herald's node.
# Bounded: ROUNDS x rates x 2 steps of DURATION plus connection set-up
# (about 2.5 minutes per round with the defaults).
set -euo pipefail
cd "$(dirname "$0")/../.."
. benches/scripts/lib.sh
ROUNDS=${1:-3}
RATES=${RATES:-2500,3750,5000,6250,7500,10000}
ROOM_SIZE=${ROOM_SIZE:-10}
case "$ROOM_SIZE" in
  10) RECEIVERS=9000 SHAPE=(--subscribers 9000 --rooms 900 --publishers 20) ;;
  5000) RECEIVERS=5000 SHAPE=(--subscribers 5000 --rooms 1 --publishers 1) ;;
  *) echo "ROOM_SIZE must be 10 or 5000" >&2; exit 1 ;;
esac
SHARDS=${SHARDS:-2}
DURATION=${DURATION:-8}
OUT=${OUT:-target/floor}
PORT=${PORT:-18500}
mkdir -p "$OUT"
cargo build --release -p herald-gateway --bin herald -p herald-benches --bin raw-ceiling \
  -p herald-loadgen --bin herald-loadgen

trap stop_node EXIT

for r in $(seq "$ROUNDS"); do
  for rate in ${RATES//,/ }; do
    target/release/raw-ceiling --mode rate --connections "$RECEIVERS" --room-size "$ROOM_SIZE" --rate "$rate" \
      --duration "$DURATION" --json "$OUT/kernel-$rate-$r.json" >/dev/null
    start_bench_node target/release/herald "$SHARDS" "$OUT/data" "$OUT/herald.log"
    target/release/herald-loadgen fanout --target "ws://127.0.0.1:$PORT/ws" --target-pid "$node_pid" \
      --source-ips "${SOURCE_IPS:-127.0.0.2-127.0.0.9}" "${SHAPE[@]}" \
      --payload 64 --duration "${DURATION}s" --rate "$rate" --keep-up 0 --quiet \
      --json "$OUT/herald-$rate-$r.json" >/dev/null
    stop_node
    echo "round $r, $rate msgs/s: done"
  done
done

python3 - "$OUT" "$ROUNDS" "$RATES" "$SHARDS" "$ROOM_SIZE" "$RECEIVERS" <<'EOF'
import json, statistics, sys
out, rounds, rates, shards = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(","), sys.argv[4]
room, receivers = int(sys.argv[5]), int(sys.argv[6])
def ms(us):
    return f"{us / 1000:.2f}"
print(f"Rooms of {room:,}, {receivers:,} receivers, 64 B; Herald on {shards} shard(s). "
      f"Latency in ms, median of {rounds} run(s) (each run's figure in brackets).\n")
print("| deliveries/s | kernel p50 | kernel p99 | kernel p99.9 | Herald p50 | Herald p99 | Herald p99.9 | Herald p99 / kernel p99 |")
print("|---|---|---|---|---|---|---|---|")
for rate in rates:
    k = [json.load(open(f"{out}/kernel-{rate}-{r}.json"))["latency_us"] for r in range(1, rounds + 1)]
    h = [json.load(open(f"{out}/herald-{rate}-{r}.json"))["latency_us"] for r in range(1, rounds + 1)]
    def cell(runs, key):
        vals = [x[key] for x in runs]
        return ms(statistics.median(vals)) + (" (" + " / ".join(ms(v) for v in vals) + ")" if rounds > 1 else "")
    ratio = statistics.median(x["p99"] for x in h) / max(statistics.median(x["p99"] for x in k), 1)
    print(f"| {int(float(rate) * room):,} | {cell(k, 'p50')} | {cell(k, 'p99')} | {cell(k, 'p999')} | "
          f"{cell(h, 'p50')} | {cell(h, 'p99')} | {cell(h, 'p999')} | {ratio:.2f} |")
print("\nCPU per delivery, µs, median (runs): the kernel floor's writer (user + sys) and whole process; "
      "Herald's node and its load generator.\n")
print("| deliveries/s | kernel writer | kernel process | Herald node | generator | node / kernel writer |")
print("|---|---|---|---|---|---|")
for rate in rates:
    kj = [json.load(open(f"{out}/kernel-{rate}-{r}.json")) for r in range(1, rounds + 1)]
    hj = [json.load(open(f"{out}/herald-{rate}-{r}.json"))["rate"]["steps"][0] for r in range(1, rounds + 1)]
    kw = [x["writer_cpu_us_per_delivery"]["user"] + x["writer_cpu_us_per_delivery"]["sys"] for x in kj]
    kp = [x["process_cpu_us_per_delivery"] for x in kj]
    hn = [x["target_cpu_us_per_delivery"] for x in hj]
    hg = [x["loadgen_cpu_us_per_delivery"] for x in hj]
    def c(v):
        return f"{statistics.median(v):.1f} ({' / '.join(f'{x:.1f}' for x in v)})"
    print(f"| {int(float(rate) * room):,} | {c(kw)} | {c(kp)} | {c(hn)} | {c(hg)} | "
          f"{statistics.median(hn) / statistics.median(kw):.2f} |")
EOF
