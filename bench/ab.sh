#!/usr/bin/env bash
# Two builds of vchat side by side in one run: for each load, RUNS rounds that
# start a fresh `vchat flow --uses flow.yml` of A (its own checkout's flow.yml),
# measure it, then the same for B, so that both see the same machine state.
# Prints medians and B/A ratios.
#   bench/ab.sh OLD_BIN_DIR NEW_BIN_DIR        # each holds a release `vchat`
#   USERS="3 10 20" RUNS=5 SECS=10 bench/ab.sh ...
# Another Flow for both, and more arguments for `vchat bench` (the JPEG grid,
# 50 rooms of 4):
#   FLOW=bench/grid.yml BENCH_ARGS="--encoding jpeg --quality 75 --frames textured --rooms 50" USERS=200 bench/ab.sh ...
#   FLOW_ARGS="--max-concurrent-streams 64" USERS=20 bench/ab.sh ...   # flags for both gateways
# To compare against an earlier commit:
#   git worktree add --detach ../base REV && (cd ../base && cargo build --release -p vchat-cli)
#   cargo build --release -p vchat-cli && bench/ab.sh ../base/target/release target/release
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { sed -n '2,9p' "$0"; exit 2; }
A=$1 B=$2
USERS=${USERS:-3 10} FPS=${FPS:-30} RUNS=${RUNS:-3} SECS=${SECS:-10}
FLOW=${FLOW:-} BENCH_ARGS=${BENCH_ARGS:-} FLOW_ARGS=${FLOW_ARGS:-}
OUT=target/bench
mkdir -p "$OUT"
TICK=$(getconf CLK_TCK)

one() { # $1: bin dir, $2: users; prints p50 p99 rate target lost cpu% peak_MB
    rm -f "$OUT/ab-flow.out"
    # Each build serves its own checkout's flow.yml (BIN_DIR is CHECKOUT/target/release).
    "$1/vchat" flow --uses "${FLOW:-$1/../../flow.yml}" --host 127.0.0.1 --port 0 $FLOW_ARGS >"$OUT/ab-flow.out" 2>"$OUT/ab-flow.log" &
    local pid=$!
    until grep -q '^vchat: listening on' "$OUT/ab-flow.out" 2>/dev/null; do
        kill -0 $pid 2>/dev/null || { cat "$OUT/ab-flow.log" >&2; exit 1; }
        sleep 0.05
    done
    local addr cpu0 cpu1 w0 w1 json peak
    addr=$(sed -n 's/^vchat: listening on //p' "$OUT/ab-flow.out")
    cpu0=$(awk '{print $14 + $15}' /proc/$pid/stat)
    w0=$(date +%s%N)
    # The load generator is always B's, so only the server differs.
    json=$("$B/vchat" --threads 1 bench "$addr" --users "$2" --fps "$FPS" --duration "$SECS" --warmup 1 --json $BENCH_ARGS)
    w1=$(date +%s%N)
    cpu1=$(awk '{print $14 + $15}' /proc/$pid/stat)
    peak=$(awk '/^VmHWM/ {print $2}' /proc/$pid/status)
    kill -INT $pid
    wait $pid || true
    python3 -c '
import json, sys
r = json.loads(sys.argv[1])
cpu = (float(sys.argv[3]) - float(sys.argv[2])) / float(sys.argv[4]) / ((float(sys.argv[6]) - float(sys.argv[5])) / 1e9) * 100
print(r["p50_ms"], r["p99_ms"], r["rate"], r["target_rate"], r["lost"], cpu, int(sys.argv[7]) / 1024)
' "$json" "$cpu0" "$cpu1" "$TICK" "$w0" "$w1" "$peak"
}

rows=()
for u in $USERS; do
    a=() b=()
    for run in $(seq "$RUNS"); do
        a+=("$(one "$A" "$u")")
        b+=("$(one "$B" "$u")")
        echo "$u users, round $run: A ${a[-1]} | B ${b[-1]}" >&2
    done
    rows+=("$u|$(printf '%s;' "${a[@]}")|$(printf '%s;' "${b[@]}")")
done
printf '%s\n' "${rows[@]}" | python3 -c '
import statistics as st, sys
fps, secs, runs = sys.argv[1:]
print(f"Medians of {runs} rounds, {secs} s each, 200x300 frames at {fps} fps; A and B alternate.")
print()
print("| users | A p50 / p99 ms | B p50 / p99 ms | A responses/s | B responses/s | A CPU | B CPU | A peak RSS | B peak RSS | B/A p50 | B/A CPU |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for line in sys.stdin:
    u, a, b = line.strip().split("|")
    med = lambda rs: [st.median(c) for c in zip(*[list(map(float, r.split())) for r in rs.split(";") if r])]
    A, B = med(a), med(b)
    print(f"| {u} | {A[0]:.2f} / {A[1]:.2f} | {B[0]:.2f} / {B[1]:.2f} | {A[2]:.1f} ({A[3]:.0f}) | {B[2]:.1f} ({B[3]:.0f}) | {A[5]:.0f}% | {B[5]:.0f}% | {A[6]:.1f} MB | {B[6]:.1f} MB | {B[0]/A[0]:.2f} | {B[5]/A[5]:.2f} |")
' "$FPS" "$SECS" "$RUNS"
