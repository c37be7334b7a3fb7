#!/usr/bin/env bash
# Runs the whole engine benchmark and prints markdown tables (also written to
# $BENCH_DIR/report.md). 13-17 minutes on this 2-core machine. Data dirs live under
# $BENCH_DIR (default /tmp/engines-bench), never in the repository.
#
#   SKIP_COMPILE=1  skip the clean-build timings (they run `cargo clean` at the end)
#   QUICK=1         a smoke run: small counts, 1 recovery trial
set -euo pipefail
cd "$(dirname "$0")"

BENCH_DIR=${BENCH_DIR:-/tmp/engines-bench}
QUICK=${QUICK:-0}
mkdir -p "$BENCH_DIR/bin"
RES=$BENCH_DIR/results.tsv
LOG=$BENCH_DIR/run.log
: >"$RES"
: >"$LOG"

if [ "$QUICK" = 1 ]; then
    B1_SECS=1 BIG_MSGS=20000 LOAD_MSGS=100000 READS=2000 TRIALS=1 ROUNDS=1
    CRASH_MSGS=100000 BIG_CRASH_MSGS=400000 BIG_ROOMS=10000
else
    B1_SECS=3 BIG_MSGS=200000 LOAD_MSGS=1000000 READS=10000 TRIALS=3 ROUNDS=2
    CRASH_MSGS=1000000 BIG_CRASH_MSGS=10000000 BIG_ROOMS=100000
fi

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
# Logs a step and the machine's 1-minute load average when it starts.
step() {
    echo "== $(date +%T) $* (load $(cut -d' ' -f1 /proc/loadavg))" | tee -a "$LOG" >&2
    printf 'load\t%s\tloadavg\t%s\n' "$*" "$(cut -d' ' -f1 /proc/loadavg)" >>"$RES"
}

{
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "nproc: $(nproc); kernel: $(uname -r); $(rustc --version)"
    df -T /tmp | tail -n 1 | awk '{ print "/tmp: " $1 " (" $2 "), " $3 " KiB total" }'
} | tee -a "$LOG"

step "build: all engines"
cargo build -q --release
BIN=$BENCH_DIR/bin/engines
cp target/release/engines "$BIN"

# Runs the binary, keeping its RESULT lines (stderr and everything else go to the log).
run() {
    "$BIN" "$@" 2>>"$LOG" | tee -a "$LOG" | { grep '^RESULT' || true; } | cut -f2- >>"$RES"
}

step "fsync floor (start)"
run fsync --dir "$BENCH_DIR/fsync" --samples 2000 --label start

# 1. Append throughput, fsync per batch, 1,000 rooms; engines interleaved over
# $ROUNDS rounds (the report keeps each engine's best round).
ENGINES="fjall redb redb-qr sqlite"
for round in $(seq 1 "$ROUNDS"); do
    for e in $ENGINES; do
        step "append $e, round $round"
        run fsync --dir "$BENCH_DIR/fsync" --samples 200 --section probe --label "$e" --prefix "r${round}_"
        for b in 1 64 1024; do
            if [ "$b" = 1 ]; then max="--max-messages 1000000 --max-secs $B1_SECS"; else max="--max-messages $BIG_MSGS --max-secs 90"; fi
            # shellcheck disable=SC2086
            run append --engine "$e" --dir "$BENCH_DIR/append-$e" --batch "$b" --round "$round" $max
        done
    done
done

# fsync + fdatasync calls per commit at batch 64: (calls for 1,000 commits −
# calls for 500 commits) / 500, which cancels the open/close syncs.
if command -v strace >/dev/null; then
    syncs() {
        strace -f -c -e trace=fsync,fdatasync -o "$BENCH_DIR/strace.txt" \
            "$BIN" append --engine "$1" --dir "$BENCH_DIR/strace-$1" --batch 64 --max-messages "$2" >/dev/null
        awk '$NF == "fsync" || $NF == "fdatasync" { s += $4 } END { print s + 0 }' "$BENCH_DIR/strace.txt"
    }
    for e in $ENGINES; do
        step "strace $e"
        a=$(syncs "$e" 32000)
        b=$(syncs "$e" 64000)
        printf 'syscalls\t%s\tb64_syncs_per_commit\t%s\n' "$e" \
            "$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", (b - a) / 500 }')" >>"$RES"
    done
else
    echo "strace not found: skipping the fsync count" | tee -a "$LOG"
fi

# 2 + 4. Load (batch 1024, fsync), disk bytes after close / after compaction, read-last-50.
for e in fjall redb sqlite; do
    step "history $e"
    run history --engine "$e" --label "$e" --dir "$BENCH_DIR/history-$e" \
        --rooms 1000 --messages "$LOAD_MSGS" --reads "$READS"
done
step "history fjall, $BIG_ROOMS rooms"
run history --engine fjall --label "fjall ($BIG_ROOMS rooms)" --dir "$BENCH_DIR/history-fjall-big" \
    --rooms "$BIG_ROOMS" --messages "$LOAD_MSGS" --reads "$READS"

step "fsync floor (middle)"
run fsync --dir "$BENCH_DIR/fsync" --samples 2000 --label middle

# 3. Recovery after kill -9: the writer fills with batch 4096, writes the last
# 64,000 messages with batch 64 (fsync each), and is killed at N committed.
for e in fjall fjall-m16 redb redb-qr sqlite; do
    step "crash $e"
    run crash --engine "$e" --label "$e" --dir "$BENCH_DIR/crash-$e" --rooms 1000 \
        --messages "$CRASH_MSGS" --fill-batch 4096 --tail 64000 --batch 64 --trials "$TRIALS"
done
step "crash fjall, $BIG_CRASH_MSGS messages, $BIG_ROOMS rooms"
run crash --engine fjall --label "fjall ($BIG_ROOMS rooms)" --dir "$BENCH_DIR/crash-fjall-big" \
    --rooms "$BIG_ROOMS" --messages "$BIG_CRASH_MSGS" --fill-batch 4096 --tail 64000 --batch 64 \
    --trials "$TRIALS" --max-secs 400

step "fsync floor (end)"
run fsync --dir "$BENCH_DIR/fsync" --samples 2000 --label end

# 5. Clean release build of each engine alone (and of none, the baseline). Last,
# so that its disk writes do not disturb the I/O figures.
if [ "${SKIP_COMPILE:-0}" != 1 ]; then
    for f in none fjall redb sqlite; do
        step "clean build: $f"
        cargo clean -q
        feats=(--no-default-features)
        [ "$f" = none ] || feats+=(--features "$f")
        TIMEFORMAT='%R %U %S'
        t=$( { time cargo build -q --release "${feats[@]}" >/dev/null 2>&1; } 2>&1 )
        read -r wall user sys <<<"$t"
        printf 'compile\t%s\tsecs\t%.1f\n' "$f" "$wall" >>"$RES"
        printf 'compile\t%s\tcpu_secs\t%s\n' "$f" "$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.1f", u + s }')" >>"$RES"
    done
fi

step "done"
"$BIN" report --file "$RES" | tee "$BENCH_DIR/report.md"
