#!/usr/bin/env bash
# How much of a fan-out step each thread of the node and of the load
# generator spent on a CPU and how much runnable but waiting for one, from
# /proc/<pid>/task/<tid>/schedstat (ns on CPU, ns waiting on a run queue),
# and how often it went to sleep and was woken (voluntary context switches,
# /proc/<pid>/task/<tid>/status), sampled over the middle 3 s of an 8 s
# step on a fresh node. It shows whether the node and the generator compete
# for the machine's cores, and how many wake-ups a delivery costs.
#
# usage: benches/scripts/run-queue-wait.sh [ROUNDS]
#   SCENARIO=5000  1 room x 5,000 subscribers, 1 publisher (default RATE 200 msgs/s)
#   SCENARIO=10    1,000 rooms x 10, 20 publishers (default RATE 5000 msgs/s)
#   SHARDS (2), OUT (target/run-queue)
# Bounded: ROUNDS x one 8 s step plus connection set-up (~15 s each).
set -euo pipefail
cd "$(dirname "$0")/../.."
. benches/scripts/lib.sh
ROUNDS=${1:-3}
SCENARIO=${SCENARIO:-5000}
case "$SCENARIO" in
  5000) SHAPE=(--subscribers 5000 --rooms 1 --publishers 1); RATE=${RATE:-200} ;;
  10) SHAPE=(--subscribers 10000 --rooms 1000 --publishers 20); RATE=${RATE:-5000} ;;
  *) echo "SCENARIO must be 5000 or 10" >&2; exit 1 ;;
esac
SHARDS=${SHARDS:-2}
OUT=${OUT:-target/run-queue}
PORT=${PORT:-18520}
mkdir -p "$OUT"
cargo build --release -p herald-gateway --bin herald -p herald-loadgen --bin herald-loadgen

trap stop_node EXIT

# snap PID: "<thread name> <ns on CPU> <ns runnable, waiting> <voluntary
# context switches>" per thread
snap() {
  for t in /proc/"$1"/task/*; do
    echo "$(tr ' ' _ <"$t/comm") $(cut -d' ' -f1,2 <"$t/schedstat") $(awk '/^voluntary_ctxt/ {print $2}' "$t/status")"
  done
}

for r in $(seq "$ROUNDS"); do
  start_bench_node target/release/herald "$SHARDS" "$OUT/data" "$OUT/herald.log"
  target/release/herald-loadgen fanout --target "ws://127.0.0.1:$PORT/ws" --target-pid "$node_pid" \
    --source-ips "${SOURCE_IPS:-127.0.0.2-127.0.0.9}" "${SHAPE[@]}" --payload 64 --duration 8s \
    --rate "$RATE" --keep-up 0 --quiet --json "$OUT/step-$r.json" >/dev/null &
  lg_pid=$!
  # Connections take 1-2 s; sample seconds 4-7 of the run.
  sleep 4
  snap "$lg_pid" >"$OUT/gen-$r.0"; snap "$node_pid" >"$OUT/node-$r.0"
  sleep 3
  snap "$lg_pid" >"$OUT/gen-$r.1"; snap "$node_pid" >"$OUT/node-$r.1"
  wait "$lg_pid"
  stop_node
done

python3 - "$OUT" "$ROUNDS" "$SHARDS" "$SCENARIO" "$RATE" <<'EOF'
import json, sys
out, rounds, shards, scenario, rate = sys.argv[1], int(sys.argv[2]), *sys.argv[3:]
def load(path):
    d = {}
    for line in open(path):
        name, *vals = line.split()
        r = d.setdefault(name, [0, 0, 0])
        for k, v in enumerate(vals):
            r[k] += int(v)
    return d
print(f"scenario {scenario}, {rate} msgs/s, {shards} shard(s); share of the 3 s window on a CPU / runnable but waiting; "
      "sleeps (voluntary context switches) per published message\n")
print("| run | p50 | p99 | thread | on CPU | waiting | sleeps per message |")
print("|---|---|---|---|---|---|---|")
for r in range(1, rounds + 1):
    lat = json.load(open(f"{out}/step-{r}.json"))["latency_us"]
    first = True
    for side in ("node", "gen"):
        a, b = load(f"{out}/{side}-{r}.0"), load(f"{out}/{side}-{r}.1")
        for name in sorted(b):
            if name not in a:
                continue
            run = (b[name][0] - a[name][0]) / 3e9
            wait = (b[name][1] - a[name][1]) / 3e9
            sleeps = (b[name][2] - a[name][2]) / 3 / float(rate)
            if run < 0.01:
                continue
            lead = f"| {r} | {lat['p50'] / 1000:.1f} ms | {lat['p99'] / 1000:.1f} ms" if first else "| | |"
            first = False
            print(f"{lead} | {side} {name} | {run:.0%} | {wait:.0%} | {sleeps:.2f} |")
EOF
