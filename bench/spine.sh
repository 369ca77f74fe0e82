#!/usr/bin/env bash
# The first benchmark: USERS users x FPS fps x 200x300 frames through
# `vchat flow --uses flow.yml` on loopback, RUNS times, each with a fresh Flow.
# Prints per run: start-to-ready, idle RSS, p50/p99 latency, achieved rate, the
# gateway's CPU (% of one core) and peak RSS; then the medians as a Markdown row.
#   bench/spine.sh                 # 3 users, 30 fps, 3 runs of 20 s
#   USERS=10 RUNS=5 SECS=30 bench/spine.sh
set -euo pipefail
cd "$(dirname "$0")/.."
USERS=${USERS:-3} FPS=${FPS:-30} RUNS=${RUNS:-3} SECS=${SECS:-20}
# Only the vchat package: the server is what is measured.
cargo build --release -q -p vchat-cli
BIN=target/release
OUT=target/bench
mkdir -p "$OUT"
TICK=$(getconf CLK_TCK)
results=()
for run in $(seq "$RUNS"); do
    rm -f "$OUT/flow.out"
    t0=$(date +%s%N)
    "$BIN/vchat" flow --uses flow.yml --host 127.0.0.1 --port 0 >"$OUT/flow.out" 2>"$OUT/flow.log" &
    pid=$!
    until grep -q '^vchat: listening on' "$OUT/flow.out" 2>/dev/null; do sleep 0.001; done
    t1=$(date +%s%N)
    addr=$(sed -n 's/^vchat: listening on //p' "$OUT/flow.out")
    sleep 0.5
    idle_kb=$(awk '/^VmRSS/ {print $2}' /proc/$pid/status)
    cpu0=$(awk '{print $14 + $15}' /proc/$pid/stat)
    w0=$(date +%s%N)
    json=$("$BIN/vchat" --threads 1 bench "$addr" --users "$USERS" --fps "$FPS" --duration "$SECS" --warmup 1 --json)
    w1=$(date +%s%N)
    cpu1=$(awk '{print $14 + $15}' /proc/$pid/stat)
    peak_kb=$(awk '/^VmHWM/ {print $2}' /proc/$pid/status)
    kill -INT $pid; wait $pid || true
    row=$(python3 - "$json" <<PY
import json, sys
r = json.loads(sys.argv[1])
ready_ms = ($t1 - $t0) / 1e6
cpu = ($cpu1 - $cpu0) / $TICK / (($w1 - $w0) / 1e9) * 100
print(f"{ready_ms:.1f} {$idle_kb/1024:.1f} {r['p50_ms']:.3f} {r['p99_ms']:.3f} {r['rate']:.1f} {r['target_rate']:.1f} {r['lost']} {r['errors']} {cpu:.1f} {$peak_kb/1024:.1f}")
PY
)
    echo "run $run: ready_ms idle_MB p50_ms p99_ms rate target lost errors cpu% peak_MB = $row"
    results+=("$row")
done
printf '%s\n' "${results[@]}" | python3 -c '
import sys, statistics as st
rows = [list(map(float, l.split())) for l in sys.stdin if l.strip()]
m = [st.median(c) for c in zip(*rows)]
print()
print("| users x fps | p50 ms | p99 ms | responses/s (target) | lost | gateway CPU | idle RSS | peak RSS | start to ready |")
print("|---|---|---|---|---|---|---|---|---|")
print(f"| '"$USERS"' x '"$FPS"' | {m[2]:.3f} | {m[3]:.3f} | {m[4]:.1f} ({m[5]:.0f}) | {m[6]:.0f} | {m[8]:.1f}% of a core | {m[1]:.1f} MB | {m[9]:.1f} MB | {m[0]:.1f} ms |")
'
