#!/usr/bin/env bash
# The video chat without webcam or display: starts `vchat flow --uses flow.yml`,
# three simulated users (moving test patterns, one colour each) stream for a few
# seconds, and each saves the last mosaic it received to target/demo/USER.png.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_USER=${DEMO_SECONDS:-6}
scripts/install-deps.sh
cargo build --release --bins
OUT=target/demo
mkdir -p "$OUT"
BIN=target/release
"$BIN/vchat" flow --uses flow.yml --host 127.0.0.1 --port 0 >"$OUT/flow.out" 2>"$OUT/flow.log" &
FLOW=$!
trap 'kill $FLOW 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    grep -q '^vchat: listening on' "$OUT/flow.out" 2>/dev/null && break
    sleep 0.1
done
cat "$OUT/flow.out"
ADDR=$(sed -n 's/^vchat: listening on //p' "$OUT/flow.out")
[ -n "$ADDR" ] || { echo "demo: the Flow did not start:"; cat "$OUT/flow.log"; exit 1; }
pids=()
for user in alice bob carol; do
    # Everyone stays the same time; later joiners leave later, so each snapshot
    # shows the users present at that moment.
    "$BIN/vchat-client" "$ADDR" "$user" --headless --source test --duration "$SECONDS_PER_USER" \
        --snapshot "$OUT/$user.png" &
    pids+=($!)
    sleep 1
done
for p in "${pids[@]}"; do wait "$p"; done
kill -INT $FLOW
wait $FLOW || true
trap - EXIT
echo
echo "demo: mosaics saved: $(ls "$OUT"/*.png | tr '\n' ' ')"
echo "demo: Flow log in $OUT/flow.log"
