#!/usr/bin/env bash
# Peak RSS of the gateway when it falls behind: `vchat flow --uses flow.yml`
# driven by `vchat --threads 1 bench` (200x300 raw frames, vertical mosaic) at
# each USERSxFPS point, RUNS fresh starts of each binary, A and B alternating.
# Prints per run and then the medians: peak RSS (VmHWM), responses/s (mosaics
# and skipped replies alike, as `vchat bench` counts them), mosaics/s (from the
# gateway's vchat_requests_total minus vchat_frames_dropped_total), p50/p99.
#   A=/path/to/old/vchat B=target/release/vchat bench/overload.sh
#   POINTS="20x30 40x30 20x60" RUNS=3 SECS=8 bench/overload.sh
#   A_ARGS="--max-outbox-bytes 1099511627776" bench/overload.sh   # one binary, bound off in A
# The load generator multiplexes its users over one connection from one address:
# the Flow allows 1024 (--max-streams-per-ip, --max-concurrent-streams).
set -euo pipefail
cd "$(dirname "$0")/.."
A=${A:-target/release/vchat} B=${B:-target/release/vchat}
A_ARGS=${A_ARGS:-} B_ARGS=${B_ARGS:-}
POINTS=${POINTS:-20x30 40x30 20x60} RUNS=${RUNS:-3} SECS=${SECS:-8}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
run() { # BIN USERS FPS ARGS -> "peak_MB rate target mosaics_per_s p50 p99"
    local bin=$1 users=$2 fps=$3
    local -a extra
    read -r -a extra <<<"$4"
    rm -f "$OUT/flow.out"
    "$bin" flow --uses flow.yml --host 127.0.0.1 --port 0 --port-monitoring 0 \
        --max-streams-per-ip 1024 --max-concurrent-streams 1024 "${extra[@]}" \
        >"$OUT/flow.out" 2>"$OUT/flow.log" &
    local pid=$!
    until grep -q '^vchat: listening on' "$OUT/flow.out" 2>/dev/null; do sleep 0.01; done
    local addr metrics json text
    addr=$(sed -n 's/^vchat: listening on //p' "$OUT/flow.out")
    metrics=$(sed -n 's/^vchat: metrics on //p' "$OUT/flow.out")
    json=$("$B" --threads 1 bench "$addr" --users "$users" --fps "$fps" \
        --duration "$SECS" --warmup 1 --json)
    local peak_kb
    peak_kb=$(awk '/^VmHWM/ {print $2}' /proc/$pid/status)
    text=$(curl -s "$metrics")
    kill -INT $pid; wait $pid || true
    python3 - "$json" "$text" "$peak_kb" "$SECS" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
m = {l.split()[0]: float(l.split()[1]) for l in sys.argv[2].splitlines()
     if l and not l.startswith('#') and len(l.split()) == 2}
secs = float(sys.argv[4]) + 1
mosaics = (m.get('vchat_requests_total', 0) - m.get('vchat_frames_dropped_total', 0)) / secs
print(f"{int(sys.argv[3])/1024:.1f} {r['rate']:.1f} {r['target_rate']:.0f} {mosaics:.1f} {r['p50_ms']:.1f} {r['p99_ms']:.1f}")
PY
}
declare -A rows
for point in $POINTS; do
    users=${point%x*} fps=${point#*x}
    for i in $(seq "$RUNS"); do
        for side in A B; do
            bin=${!side} args_var=${side}_ARGS
            row=$(run "$bin" "$users" "$fps" "${!args_var}")
            echo "$point $side run $i: peak_MB rate target mosaics/s p50 p99 = $row" >&2
            rows[$point.$side]+="$row"$'\n'
        done
    done
done
echo "| users x fps | binary | peak RSS | responses/s (target) | mosaics/s | p50 ms | p99 ms |"
echo "|---|---|---|---|---|---|---|"
for point in $POINTS; do
    for side in A B; do
        printf '%s' "${rows[$point.$side]}" | python3 -c '
import sys, statistics as st
rows = [list(map(float, l.split())) for l in sys.stdin if l.strip()]
m = [st.median(c) for c in zip(*rows)]
print(f"| '"${point/x/ x }"' | '"$side"' | {m[0]:.1f} MB | {m[1]:.0f} ({m[2]:.0f}) | {m[3]:.0f} | {m[4]:.1f} | {m[5]:.1f} |")'
    done
done
