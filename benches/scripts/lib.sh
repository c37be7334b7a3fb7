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
