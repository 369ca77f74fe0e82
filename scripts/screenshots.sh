#!/usr/bin/env bash
# Makes the README's screenshots, without webcam or display:
#   OUT/native-window.png   vchat-client's window, under Xvfb, captured with
#                           ImageMagick's `import`
#   OUT/browser.png         the web client in headless Chromium (fake camera)
# in a room with two simulated users (test patterns). OUT is the first
# argument, docs/screenshots by default. VCHAT_BIN_DIR runs binaries already
# built there (e.g. target/debug) instead of building the release ones.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-docs/screenshots}
if [ -n "${VCHAT_BIN_DIR:-}" ]; then
    BIN=$VCHAT_BIN_DIR
else
    scripts/install-deps.sh
    cargo build --release --bins
    BIN=target/release
fi
# Every wait below is for an event, within this many tenths of a second.
PATIENCE=${SCREENSHOTS_PATIENCE:-600}
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vchat-screenshots.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

wait_for() {
    for _ in $(seq "$PATIENCE"); do
        grep -Eq "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "screenshots: $3 did not happen:" >&2
    tail -n 20 "$1" >&2 || true
    exit 1
}

# The chat's Flow with both doors: gRPC for the native clients, HTTP and
# WebSocket for the browser.
cat >"$WORK/flow.yml" <<EOF
jtype: Flow
with:
  protocol: [grpc, websocket]
  port_http: 0
executors:
  - uses: $PWD/executor/config.yml
    name: frameAggregator
EOF
"$BIN/vchat" flow --uses "$WORK/flow.yml" --host 127.0.0.1 --port 0 >"$WORK/flow.out" 2>"$WORK/flow.log" &
pids+=($!)
wait_for "$WORK/flow.out" '^vchat: listening on grpc' "the Flow starting"
ADDR=$(sed -n 's/^vchat: listening on \(grpc:.*\)/\1/p' "$WORK/flow.out")
WEB=$(sed -n 's/^vchat: listening on \(http:.*\)/\1/p' "$WORK/flow.out")

for user in alice bob; do
    "$BIN/vchat-client" "$ADDR" "$user" --headless --source test --size 240x320 --fps 10 \
        >"$WORK/$user.out" 2>&1 &
    pids+=($!)
    wait_for "$WORK/$user.out" "^$user: participants: (.*, )?$user(,|\$)" "$user joining"
done

# The native window, on a virtual display of its own.
Xvfb -displayfd 3 -screen 0 1024x768x24 -nolisten tcp 3>"$WORK/display" 2>/dev/null &
pids+=($!)
wait_for "$WORK/display" '^[0-9]+' "Xvfb starting"
export DISPLAY=":$(head -n 1 "$WORK/display")"
"$BIN/vchat-client" "$ADDR" carol --source test --size 240x320 --fps 10 >"$WORK/carol.out" 2>&1 &
pids+=($!)
wait_for "$WORK/carol.out" '^carol: participants: alice, bob, carol$' "carol's window joining"
# Two status lines later the window has drawn the mosaics of all three.
seen=$(grep -c '^carol: ' "$WORK/carol.out")
for _ in $(seq "$PATIENCE"); do
    [ "$(grep -c '^carol: ' "$WORK/carol.out")" -ge $((seen + 2)) ] && break
    sleep 0.1
done
import -window "vchat: carol" "$OUT/native-window.png"
echo "screenshots: $OUT/native-window.png"

# The browser page, as dana, with Chromium's fake camera.
"$BIN/vchat-browser-screenshot" "$WEB/?user=dana&autojoin=1&fps=10&transport=ws" "$OUT/browser.png" 4
echo "screenshots: $OUT/browser.png"
