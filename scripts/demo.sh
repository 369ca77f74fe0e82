#!/usr/bin/env bash
# The video chat without webcam or display: starts `vchat flow --uses flow.yml`,
# and three simulated users (moving test patterns, one colour each, each tile
# labelled with its user's name) join one after the other: each starts once the
# previous one is in the room. After DEMO_SECONDS together they leave in reverse
# order, each once the previous one is gone, so each user's last mosaic shows
# the users who joined before them:
#   target/demo/alice.png   alice
#   target/demo/bob.png     alice, bob
#   target/demo/carol.png   alice, bob, carol
#   target/demo/contact-sheet.png   alice's view over time: joins and leaves
# DEMO_OUT sets the folder; VCHAT_BIN_DIR runs binaries already built there
# (e.g. target/debug) instead of building the release ones.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TOGETHER=${DEMO_SECONDS:-6}
OUT=${DEMO_OUT:-target/demo}
if [ -n "${VCHAT_BIN_DIR:-}" ]; then
    BIN=$VCHAT_BIN_DIR
else
    scripts/install-deps.sh
    cargo build --release --bins
    BIN=target/release
fi
# Every wait below is for an event, within this many tenths of a second.
PATIENCE=${DEMO_PATIENCE:-300}
mkdir -p "$OUT"
rm -f "$OUT"/*.png
"$BIN/vchat" flow --uses flow.yml --host 127.0.0.1 --port 0 >"$OUT/flow.out" 2>"$OUT/flow.log" &
FLOW=$!
pids=()
cleanup() {
    for p in "${pids[@]}" $FLOW; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# wait_for FILE REGEX WHAT [SKIP]: until a line of FILE, after its first SKIP
# lines, matches REGEX.
wait_for() {
    for _ in $(seq "$PATIENCE"); do
        tail -n +"$((${4:-0} + 1))" "$1" 2>/dev/null | grep -Eq "$2" && return 0
        sleep 0.1
    done
    echo "demo: $3 did not happen; see $OUT" >&2
    exit 1
}

wait_for "$OUT/flow.out" '^vchat: listening on' "the Flow starting"
cat "$OUT/flow.out"
ADDR=$(sed -n 's/^vchat: listening on //p' "$OUT/flow.out")

users=(alice bob carol)
for user in "${users[@]}"; do
    extra=()
    # The first one in stays to the end: their contact sheet sees every change.
    [ "$user" = alice ] && extra=(--contact-sheet "$OUT/contact-sheet.png" --contact-sheet-every 1)
    "$BIN/vchat-client" "$ADDR" "$user" --headless --source test \
        --snapshot "$OUT/$user.png" "${extra[@]}" >"$OUT/$user.out" 2>"$OUT/$user.log" &
    pids+=($!)
    # The client prints the room's users on every change: in once it is listed.
    wait_for "$OUT/$user.out" "^$user: participants: (.*, )?$user(,|\$)" "$user joining"
    echo "demo: $user is in: $(grep "^$user: participants:" "$OUT/$user.out" | tail -1 | cut -d: -f3-)"
done
sleep "$SECONDS_TOGETHER"
# Last in, first out; each leaves once the one before is gone from the room.
for ((i = ${#users[@]} - 1; i >= 0; i--)); do
    user=${users[$i]}
    prev=${users[$((i > 0 ? i - 1 : 0))]}
    seen=$(wc -l <"$OUT/$prev.out")
    kill -INT "${pids[$i]}"
    wait "${pids[$i]}"
    echo "demo: $user left"
    if [ "$i" -gt 0 ]; then
        stayed=$(IFS=,; echo "${users[*]:0:$i}" | sed 's/,/, /g')
        wait_for "$OUT/$prev.out" "^$prev: participants: $stayed\$" "$user leaving" "$seen"
    fi
done
pids=()
kill -INT $FLOW
wait $FLOW || true
trap - EXIT
echo
echo "demo: mosaics saved: $(ls "$OUT"/*.png | tr '\n' ' ')"
echo "demo: Flow log in $OUT/flow.log"
