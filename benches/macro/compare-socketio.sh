#!/usr/bin/env bash
# Herald vs the reference Socket.IO 4 server (benches/peers/socketio, Node),
# side by side in one run on this machine, same scenarios, same load
# generator (herald-loadgen):
#   1. idle memory per connection at 15,000 connections;
#   2. fan-out 1 room x 5,000 subscribers, 64 B: rate steps until the target
#      no longer keeps up (max sustainable), then p99 at half of that rate;
#   3. 10,000 clients in 1,000 rooms of 10: the same.
# Socket.IO runs first so Herald is also measured at Socket.IO's half-max
# rate: latency compared at the same load, not only at each one's own half.
# Each target is a fresh process per scenario. JSON and HTML reports go to
# $OUT; the last lines print the table BENCHMARKS.md records. About 4 min here.
set -euo pipefail
cd "$(dirname "$0")/../.."
. benches/scripts/lib.sh
OUT=${OUT:-target/compare}
HERALD_PORT=${HERALD_PORT:-18700}
SIO_PORT=${SIO_PORT:-18701}
SHARDS=${SHARDS:-2}
DURATION=${DURATION:-5s}
RATES_5000=${RATES_5000:-2,5,10,20,50,100,200,400}
RATES_10=${RATES_10:-500,1000,2000,3000,5000,7500,10000,20000}
mkdir -p "$OUT"
# Source addresses: ~15,000 connections per scenario from 127.0.0.1 alone
# meet the previous scenario's TIME_WAIT sockets in the ephemeral port
# allocator, which adds 1-2 s to the last few percent of connects.
SRC="--source-ips ${SOURCE_IPS:-127.0.0.2-127.0.0.9}"
cargo build --release -p herald-gateway --bin herald -p herald-loadgen --bin herald-loadgen
npm ci --prefix benches/peers/socketio --no-audit --no-fund --loglevel=error
LG=target/release/herald-loadgen

pid=""
start() { # start herald|socketio
  case $1 in
    herald)
      # Publish limits raised so a few publisher connections can drive the
      # schedule; history in memory like the Socket.IO peer's (STORAGE=embedded
      # for a durable node); everything else is the default configuration.
      HERALD_LIMITS__PUBLISH_RATE_PER_SEC=1000000 HERALD_LIMITS__PUBLISH_BURST=1000000 \
        HERALD_STORAGE__BACKEND="${STORAGE:-memory}" \
        target/release/herald serve --listen "127.0.0.1:$HERALD_PORT" --shards "$SHARDS" \
        --data-dir "$OUT/data" >"$OUT/herald.log" 2>&1 &
      pid=$!; url="ws://127.0.0.1:$HERALD_PORT/ws"; health="http://127.0.0.1:$HERALD_PORT/health" ;;
    socketio)
      (cd benches/peers/socketio && PORT=$SIO_PORT exec node server.js) >"$OUT/socketio.log" 2>&1 &
      pid=$!; url="socketio://127.0.0.1:$SIO_PORT"; health="http://127.0.0.1:$SIO_PORT/health" ;;
  esac
  wait_healthy "$health" && return 0
  echo "$1 did not start" >&2; exit 1
}
stop() { kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""; }
trap stop EXIT

# fanout_case NAME RATES SHAPE...: on a fresh target $t, the rate steps,
# then one step at half of the target's own max and (Herald) one at
# Socket.IO's half max.
fanout_case() {
  local name=$1 rates=$2; shift 2
  start $t
  local lg=("$LG" fanout --target "$url" --target-pid "$pid" $SRC "$@" --payload 64 --duration "$DURATION" --quiet)
  "${lg[@]}" --rates "$rates" --json "$OUT/$t-$name.json" --html "$OUT/$t-$name.html"
  local half same
  half=$(half_rate "$OUT/$t-$name.json")
  if [ "$half" != 0 ]; then
    "${lg[@]}" --rate "$half" --keep-up 0 --json "$OUT/$t-$name-half.json"
  fi
  same=$(half_rate "$OUT/socketio-$name.json")
  if [ "$t" = herald ] && [ "$same" != 0 ]; then
    "${lg[@]}" --rate "$same" --keep-up 0 --json "$OUT/$t-$name-same.json"
  fi
  stop
}

for t in socketio herald; do
  echo "== $t: idle memory, 15,000 connections"
  start $t
  $LG connect --target "$url" --target-pid "$pid" $SRC --connections 15000 --connect-rate 5000 --hold 5s \
    --quiet --json "$OUT/$t-idle.json"
  stop

  echo "== $t: fan-out 1 room x 5,000 subscribers"
  fanout_case 5000 "$RATES_5000" --subscribers 5000 --rooms 1 --publishers 1
  echo "== $t: 10,000 clients in 1,000 rooms of 10"
  fanout_case 10 "$RATES_10" --subscribers 10000 --rooms 1000 --publishers 20
done

for s in idle 5000 10; do
  echo "== compare: $s (A = herald, B = socket.io)"
  $LG compare "$OUT/herald-$s.json" "$OUT/socketio-$s.json"
done
python3 benches/macro/compare-table.py "$OUT"
