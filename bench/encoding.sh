#!/usr/bin/env bash
# Bytes per response and capacity: raw vertical mosaics (flow.yml) against JPEG
# grid mosaics (the grid of examples/flows/grid.yml, 480x640 canvas, with room
# for more users), USERS users in one room
# sending SIZE frames of the client's test pattern at FPS, through a release
# `vchat flow` on loopback. Prints one Markdown row per configuration: bytes per
# request and per response, responses per second against the target, p50/p99
# latency and the gateway's CPU (% of one core).
#   bench/encoding.sh                     # 4 users, 15 fps, 240x320, 10 s, textured frames
#   USERS=8 FPS=30 SIZE=480x640 SECS=20 bench/encoding.sh
set -euo pipefail
cd "$(dirname "$0")/.."
USERS=${USERS:-4} FPS=${FPS:-15} SECS=${SECS:-10} SIZE=${SIZE:-240x320} QUALITY=${QUALITY:-80}
FRAMES=${FRAMES:-textured}   # solid | pattern | textured (see vchat bench --help)
cargo build --release -p vchat-cli -q
BIN=target/release
OUT=target/bench
mkdir -p "$OUT"
TICK=$(getconf CLK_TCK)
cat >"$OUT/grid.yml" <<YML
jtype: Flow
executors:
  - uses: $PWD/executor/config.yml
    name: frameAggregator
    uses_with: {layout: grid, canvas: 480x640, max_users: 64}
YML
echo "| layout | encoding | users x fps | frame | bytes/request | bytes/response | responses/s (target) | p50 ms | p99 ms | gateway CPU |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for cfg in "vertical flow.yml raw" "vertical flow.yml jpeg" "grid $OUT/grid.yml raw" "grid $OUT/grid.yml jpeg"; do
    set -- $cfg
    layout=$1 flow=$2 enc=$3
    rm -f "$OUT/enc.out"
    "$BIN/vchat" flow --uses "$flow" --host 127.0.0.1 --port 0 --max-streams 1024 \
        --max-streams-per-ip 1024 --max-concurrent-streams 1024 >"$OUT/enc.out" 2>"$OUT/enc.log" &
    pid=$!
    until grep -q '^vchat: listening on' "$OUT/enc.out" 2>/dev/null; do sleep 0.01; done
    addr=$(sed -n 's/^vchat: listening on //p' "$OUT/enc.out")
    cpu0=$(awk '{print $14 + $15}' /proc/$pid/stat)
    w0=$(date +%s%N)
    json=$("$BIN/vchat" bench "$addr" --users "$USERS" --fps "$FPS" --duration "$SECS" --warmup 1 \
        --size "$SIZE" --room bench --frames "$FRAMES" --encoding "$enc" --quality "$QUALITY" --json)
    w1=$(date +%s%N)
    cpu1=$(awk '{print $14 + $15}' /proc/$pid/stat)
    kill -INT $pid; wait $pid || true
    python3 - "$json" <<PY
import json, sys
r = json.loads(sys.argv[1])
cpu = ($cpu1 - $cpu0) / $TICK / (($w1 - $w0) / 1e9) * 100
req = r['bytes_out'] / max(r['sent'], 1)
resp = r['bytes_in'] / max(r['answered'], 1)
print(f"| $layout | $enc | $USERS x $FPS | $SIZE | {req:,.0f} | {resp:,.0f} | {r['rate']:.1f} ({r['target_rate']:.0f}) | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {cpu:.0f}% |")
PY
done
