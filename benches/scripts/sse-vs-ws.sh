#!/usr/bin/env bash
# SSE beside WebSocket on the same build, alternately on fresh nodes:
#  - idle: CONNECTIONS streams (each reading one of 100 rooms) against as
#    many WebSocket connections (Connect, no rooms: the loadgen's connect
#    scenario joins none), held 5 s; the node's RSS per connection;
#  - fan-out: FANOUT_SUBSCRIBERS readers in FANOUT_ROOMS rooms, published by
#    FANOUT_PUBLISHERS WebSocket clients at each of RATES messages/s, read
#    over SSE and then over WebSocket; latency and CPU per delivery.
#
# usage: benches/scripts/sse-vs-ws.sh [ROUNDS]
#   CONNECTIONS (15000), RATES (250,500,1000), FANOUT_SUBSCRIBERS (1000),
#   FANOUT_ROOMS (10), FANOUT_PUBLISHERS (10), SHARDS (2), DURATION (8),
#   OUT (target/sse-vs-ws)
# Bounded: ROUNDS x (2 idle runs of ~10 s + 2 x rates fan-out steps of
# DURATION), about 1.5 minutes per round with the defaults.
set -euo pipefail
cd "$(dirname "$0")/../.."
. benches/scripts/lib.sh
ROUNDS=${1:-3}
CONNECTIONS=${CONNECTIONS:-15000}
RATES=${RATES:-250,500,1000}
SHARDS=${SHARDS:-2}
DURATION=${DURATION:-8}
OUT=${OUT:-target/sse-vs-ws}
PORT=${PORT:-18510}
SRC=${SOURCE_IPS:-127.0.0.2-127.0.0.9}
mkdir -p "$OUT"
cargo build --release -p herald-gateway --bin herald -p herald-loadgen --bin herald-loadgen
LG=target/release/herald-loadgen
trap stop_node EXIT

for r in $(seq "$ROUNDS"); do
  for kind in sse ws; do
    start_bench_node target/release/herald "$SHARDS" "$OUT/data" "$OUT/herald.log"
    if [ "$kind" = sse ]; then
      target="sse://127.0.0.1:$PORT/sse" rooms=(--rooms 100)
    else
      target="ws://127.0.0.1:$PORT/ws" rooms=()
    fi
    "$LG" connect --target "$target" "${rooms[@]}" --target-pid "$node_pid" --source-ips "$SRC" \
      --connections "$CONNECTIONS" --connect-rate 5000 --hold 5s --quiet --json "$OUT/idle-$kind-$r.json" >/dev/null
    stop_node
  done
  for rate in ${RATES//,/ }; do
    for kind in sse ws; do
      start_bench_node target/release/herald "$SHARDS" "$OUT/data" "$OUT/herald.log"
      if [ "$kind" = sse ]; then target="sse://127.0.0.1:$PORT/sse"; else target="ws://127.0.0.1:$PORT/ws"; fi
      "$LG" fanout --target "$target" --target-pid "$node_pid" --source-ips "$SRC" \
        --subscribers "${FANOUT_SUBSCRIBERS:-1000}" --rooms "${FANOUT_ROOMS:-10}" \
        --publishers "${FANOUT_PUBLISHERS:-10}" --payload 64 --rate "$rate" --duration "${DURATION}s" \
        --keep-up 0 --quiet --json "$OUT/fanout-$kind-$rate-$r.json" >/dev/null
      stop_node
    done
    echo "round $r, $rate msgs/s: done"
  done
done

python3 - "$OUT" "$ROUNDS" "$RATES" "$CONNECTIONS" "$SHARDS" "${FANOUT_SUBSCRIBERS:-1000}" "${FANOUT_ROOMS:-10}" <<'PY'
import json, statistics, sys
out, rounds, rates, conns, shards = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(","), int(sys.argv[4]), sys.argv[5]
subs, rooms = int(sys.argv[6]), int(sys.argv[7])
runs = range(1, rounds + 1)
def med(vals, fmt):
    return fmt(statistics.median(vals)) + (" (" + " / ".join(fmt(v) for v in vals) + ")" if rounds > 1 else "")
print(f"Idle: {conns:,} connections, {shards} shard(s), held 5 s; node RSS per connection, median (runs).\n")
print("| transport | held | RSS per connection |")
print("|---|---|---|")
per = {}
for kind, name in (("sse", "SSE (one room each)"), ("ws", "WebSocket (Connect, no room)")):
    js = [json.load(open(f"{out}/idle-{kind}-{r}.json")) for r in runs]
    held = [j["connections"].get("alive_after_hold") or j["connections"]["ok"] for j in js]
    rss = [j["target"]["rss_bytes_per_connection"] for j in js]
    per[kind] = statistics.median(rss)
    print(f"| {name} | {med(held, lambda v: f'{v:,.0f}')} | {med(rss, lambda v: f'{v:,.0f} B')} |")
print(f"\nSSE / WebSocket: {per['sse'] / per['ws']:.2f}\n")
print(f"Fan-out: {subs:,} readers in {rooms} rooms, 64 B, {shards} shard(s); latency ms and CPU µs per delivery, median (runs).\n")
print("| deliveries/s | transport | delivered | p50 | p99 | p99.9 | node CPU | generator CPU | p99 SSE / WS | node CPU SSE / WS |")
print("|---|---|---|---|---|---|---|---|---|---|")
for rate in rates:
    cells = {}
    for kind in ("sse", "ws"):
        js = [json.load(open(f"{out}/fanout-{kind}-{rate}-{r}.json")) for r in runs]
        lat = [j["latency_us"] for j in js]
        st = [j["rate"]["steps"][0] for j in js]
        cells[kind] = (js, lat, st)
    for kind, name in (("sse", "SSE"), ("ws", "WebSocket")):
        js, lat, st = cells[kind]
        deliv = [s.get("delivered", 0) for s in st]
        exp = [s.get("expected", 0) for s in st]
        row = (f"| {int(float(rate)) * subs // rooms:,} | {name} | "
               f"{med(deliv, lambda v: f'{v:,.0f}')} of {statistics.median(exp):,.0f} | "
               f"{med([l['p50'] for l in lat], lambda v: f'{v/1000:.2f}')} | "
               f"{med([l['p99'] for l in lat], lambda v: f'{v/1000:.2f}')} | "
               f"{med([l['p999'] for l in lat], lambda v: f'{v/1000:.2f}')} | "
               f"{med([s['target_cpu_us_per_delivery'] for s in st], lambda v: f'{v:.2f}')} | "
               f"{med([s['loadgen_cpu_us_per_delivery'] for s in st], lambda v: f'{v:.2f}')} |")
        if kind == "sse":
            _, wl, wst = cells["ws"]
            p = statistics.median(l["p99"] for l in lat) / statistics.median(l["p99"] for l in wl)
            c = statistics.median(s["target_cpu_us_per_delivery"] for s in st) / statistics.median(
                s["target_cpu_us_per_delivery"] for s in wst)
            row += f" {p:.2f} | {c:.2f} |"
        else:
            row += " | |"
        print(row)
PY
