# Helpers the benchmark scripts share; sourced, not run.

# wait_healthy URL: waits up to 10 s for URL to answer 2xx; false if not.
wait_healthy() {
  for _ in $(seq 100); do
    curl -fs "$1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}

# half_rate REPORT.json: the mean rate of the sweep's best kept-up step,
# halved (0 if no step was kept up).
half_rate() {
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["rate"]["max_sustained_rate"]; print(r/2 if r else 0)' "$1"
}

# The node a script started (its pid in node_pid); stop_node sends SIGTERM
# and waits for it. Scripts that start nodes set `trap stop_node EXIT`.
node_pid=""
stop_node() {
  [ -n "$node_pid" ] || return 0
  kill -TERM "$node_pid" 2>/dev/null || true
  wait "$node_pid" 2>/dev/null || true
  node_pid=""
}

# start_bench_node BINARY SHARDS DATA_DIR LOG: a node on 127.0.0.1:$PORT
# (pid in node_pid), default settings except the per-connection publish
# rate, raised so a few publisher connections can drive a schedule, and the
# storage backend: STORAGE (default "memory", as every figure before durable
# storage was taken; storage.sh sets "embedded"). It is passed in the
# environment, which binaries older than the storage work ignore, so A/B
# scripts can still run them.
start_bench_node() {
  HERALD_LIMITS__PUBLISH_RATE_PER_SEC=1000000 HERALD_LIMITS__PUBLISH_BURST=1000000 \
    HERALD_STORAGE__BACKEND="${STORAGE:-memory}" \
    "$1" serve --listen "127.0.0.1:$PORT" --shards "$2" --data-dir "$3" >"$4" 2>&1 &
  node_pid=$!
  wait_healthy "http://127.0.0.1:$PORT/health" && return 0
  echo "node $1 did not start" >&2
  exit 1
}
