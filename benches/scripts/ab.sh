#!/usr/bin/env bash
# Alternating A/B runs of two `herald` builds on one fan-out step, for a
# change whose effect is smaller than the machine's drift between sweeps.
# Each round runs A, then B, each on a fresh node with the same
# herald-loadgen step; the table gives p50, p99 and CPU per delivery per run.
#
# usage: benches/scripts/ab.sh HERALD_A HERALD_B [ROUNDS]
#   SCENARIO=5000  1 room x 5,000 subscribers, 1 publisher (default RATE 400 msgs/s)
#   SCENARIO=10    1,000 rooms x 10, 20 publishers (default RATE 5000 msgs/s)
#   SHARDS (1), DURATION (8s), OUT (target/ab)
#   RATES=r1,r2,...  a rate sweep per run instead of one step: the table gives
#                  each run's max sustained deliveries/s (the highest step
#                  kept up) and its p99 there
#   PERF=1         also `perf record -g` each node for 5 s mid-step, into $OUT
#   LOADGEN_A, LOADGEN_B  herald-loadgen binaries for the A and B runs
#                  (default: this tree's); give one herald twice to A/B the
#                  load generator itself
#
# A build of an older commit, for example:
#   git worktree add /tmp/herald-a COMMIT && (cd /tmp/herald-a && cargo build --release -p herald-gateway --bin herald)
# Bounded: ROUNDS x 2 steps of DURATION plus connection set-up (~25 s each).
set -euo pipefail
cd "$(dirname "$0")/../.."
. benches/scripts/lib.sh
[ $# -ge 2 ] || { sed -n 2,19p "$0" >&2; exit 1; }
A=$1 B=$2 ROUNDS=${3:-3}
SCENARIO=${SCENARIO:-5000}
case "$SCENARIO" in
  5000) SHAPE=(--subscribers 5000 --rooms 1 --publishers 1); RATE=${RATE:-400} ;;
  10) SHAPE=(--subscribers 10000 --rooms 1000 --publishers 20); RATE=${RATE:-5000} ;;
  *) echo "SCENARIO must be 5000 or 10" >&2; exit 1 ;;
esac
OUT=${OUT:-target/ab}
PORT=${PORT:-18490}
mkdir -p "$OUT"
cargo build --release -p herald-loadgen --bin herald-loadgen
LOADGEN_A=${LOADGEN_A:-target/release/herald-loadgen}
LOADGEN_B=${LOADGEN_B:-target/release/herald-loadgen}

trap stop_node EXIT

# one LABEL BINARY ROUND LOADGEN
one() {
  start_bench_node "$2" "${SHARDS:-1}" "$OUT/data" "$OUT/herald-$1.log"
  if [ -n "${PERF:-}" ]; then
    (sleep 4; perf record -g -p "$node_pid" -o "$OUT/perf-$1-$3.data" -- sleep 5 >/dev/null 2>&1) &
  fi
  local step=(--rate "$RATE" --keep-up 0)
  [ -n "${RATES:-}" ] && step=(--rates "$RATES" --all-steps)
  "$4" fanout --target "ws://127.0.0.1:$PORT/ws" --target-pid "$node_pid" \
    --source-ips "${SOURCE_IPS:-127.0.0.2-127.0.0.9}" "${SHAPE[@]}" --payload 64 \
    --duration "${DURATION:-8s}" "${step[@]}" --quiet --json "$OUT/$1-$3.json" >/dev/null
  stop_node
  wait
}

for r in $(seq "$ROUNDS"); do
  one a "$A" "$r" "$LOADGEN_A"
  one b "$B" "$r" "$LOADGEN_B"
done

python3 - "$OUT" "$ROUNDS" "$A" "$B" "$LOADGEN_A" "$LOADGEN_B" "${RATES:-}" <<'EOF'
import json, sys
out, rounds = sys.argv[1], int(sys.argv[2])
print(f"A = {sys.argv[3]} (load generator {sys.argv[5]})\nB = {sys.argv[4]} (load generator {sys.argv[6]})\n")
if sys.argv[7]:
    print("| run | max sustained deliveries/s | p99 at that step | node CPU/delivery there | steps kept up |")
    print("|---|---|---|---|---|")
    for r in range(1, rounds + 1):
        for side in "ab":
            j = json.load(open(f"{out}/{side}-{r}.json"))
            rate = j["rate"]
            best = rate.get("max_sustained_deliveries_per_sec")
            kept = [s for s in rate["steps"] if s.get("kept_up")]
            top = kept[-1] if kept else None
            p99 = f"{top['latency_us']['p99'] / 1000:.2f} ms" if top and top.get("latency_us") else "-"
            cpu = top.get("target_cpu_us_per_delivery") if top else None
            cpu = f"{cpu:.2f} µs" if cpu is not None else "-"
            print(f"| {side.upper()}{r} | {best:,.0f} | {p99} | {cpu} | {len(kept)} of {len(rate['steps'])} |"
                  if best else f"| {side.upper()}{r} | none kept up | - | - | 0 of {len(rate['steps'])} |")
    sys.exit(0)
print("| run | p50 | p99 | send lag p99 | node CPU/delivery | generator CPU/delivery | delivered |")
print("|---|---|---|---|---|---|---|")
def us(v):
    return f"{v:.2f} µs" if v is not None else "-"
for r in range(1, rounds + 1):
    for side in "ab":
        j = json.load(open(f"{out}/{side}-{r}.json"))
        step = j["rate"]["steps"][0]
        lat = j["latency_us"]
        lag = (step.get("send_lag_us") or {}).get("p99")
        lag = f"{lag} µs" if lag is not None else "-"
        print(f"| {side.upper()}{r} | {lat['p50'] / 1000:.2f} ms | {lat['p99'] / 1000:.2f} ms | {lag} | "
              f"{us(step.get('target_cpu_us_per_delivery'))} | {us(step.get('loadgen_cpu_us_per_delivery'))} | "
              f"{j['delivered']:,} / {j['expected']:,} |")
EOF
