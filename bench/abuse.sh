#!/usr/bin/env bash
# Abuse: HONEST users x FPS fps (vchat bench, from 127.0.0.1) with and without a
# hostile peer (examples/clients `abuse`) attacking the same gateway from
# ATTACKERS loopback addresses: idle streams and idle connections up to the
# per-address limits, the bad-input catalogue, slow readers. RUNS fresh Flows per
# side, SECS seconds each, medians. Prints what the attacks got back and a
# Markdown table of the honest users' figures side by side.
#   bench/abuse.sh                           # 3 honest users, 30 fps, 3 x 40 s
#   SECS=20 RUNS=1 bench/abuse.sh            # a quick look
# Each attacking address holds what one peer address may: 12 idle streams, 2
# slow readers and 2 streams of bad input make the default max_streams_per_ip of
# 16 (every stream past it is refused), beside IDLE_CONNS idle connections.
set -euo pipefail
cd "$(dirname "$0")/.."
HONEST=${HONEST:-3} FPS=${FPS:-30} RUNS=${RUNS:-3} SECS=${SECS:-40}
ATTACKERS=${ATTACKERS:-127.0.0.2,127.0.0.3,127.0.0.4}
IDLE_STREAMS=${IDLE_STREAMS:-12} IDLE_CONNS=${IDLE_CONNS:-16} SLOW=${SLOW:-2} BAD=${BAD:-30}
cargo build --release -q -p vchat-cli -p vchat-example-clients
BIN=target/release
OUT=target/bench
mkdir -p "$OUT"
TICK=$(getconf CLK_TCK)

one_run() { # $1: with or without
    rm -f "$OUT/abuse-flow.out" # else the wait below may read the last run's address
    "$BIN/vchat" flow --uses flow.yml --host 127.0.0.1 --port 0 >"$OUT/abuse-flow.out" 2>"$OUT/abuse-flow.log" &
    local pid=$!
    until grep -q '^vchat: listening on' "$OUT/abuse-flow.out" 2>/dev/null; do
        kill -0 $pid 2>/dev/null || { cat "$OUT/abuse-flow.log" >&2; exit 1; }
        sleep 0.05
    done
    local addr
    addr=$(sed -n 's/^vchat: listening on //p' "$OUT/abuse-flow.out")
    local attacker=
    if [ "$1" = with ]; then
        "$BIN/abuse" "$addr" --from "$ATTACKERS" --idle-streams "$IDLE_STREAMS" \
            --idle-conns "$IDLE_CONNS" --slow-readers "$SLOW" --bad-per-s "$BAD" \
            --duration $((SECS + 4)) >"$OUT/abuse-attack.json" &
        attacker=$!
        sleep 2 # the attacks are in place before the honest users join
    fi
    local cpu0 cpu1 w0 w1 json
    cpu0=$(awk '{print $14 + $15}' /proc/$pid/stat)
    w0=$(date +%s%N)
    json=$("$BIN/vchat" --threads 1 bench "$addr" --users "$HONEST" --fps "$FPS" \
        --duration "$SECS" --warmup 1 --json)
    w1=$(date +%s%N)
    cpu1=$(awk '{print $14 + $15}' /proc/$pid/stat)
    [ -n "$attacker" ] && wait "$attacker"
    local peak_kb
    peak_kb=$(awk '/^VmHWM/ {print $2}' /proc/$pid/status)
    kill -INT $pid
    wait $pid || true
    python3 - "$json" <<PY
import json, sys
r = json.loads(sys.argv[1])
cpu = ($cpu1 - $cpu0) / $TICK / (($w1 - $w0) / 1e9) * 100
print(r["p50_ms"], r["p99_ms"], r["rate"], r["target_rate"], r["lost"], r["errors"], cpu, $peak_kb / 1024)
PY
}

declare -a without with
for run in $(seq "$RUNS"); do
    without+=("$(one_run without)")
    echo "run $run without attacks: p50 p99 rate target lost errors cpu% peak_MB = ${without[-1]}" >&2
    with+=("$(one_run with)")
    echo "run $run under attack:    p50 p99 rate target lost errors cpu% peak_MB = ${with[-1]}" >&2
    python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(json.dumps(j, indent=1))' \
        "$OUT/abuse-attack.json" >&2
done
python3 - "$HONEST" "$FPS" "$SECS" "$RUNS" "$OUT/abuse-attack.json" <<PY
import json, statistics as st, sys
honest, fps, secs, runs, attack = sys.argv[1:]
def med(rows):
    rows = [list(map(float, r.split())) for r in rows]
    return [st.median(c) for c in zip(*rows)]
a = med("""$(printf '%s\n' "${without[@]}")""".strip().splitlines())
b = med("""$(printf '%s\n' "${with[@]}")""".strip().splitlines())
print(f"Medians of {runs} runs, {secs} s each; {honest} honest users x {fps} fps of 200x300 raw frames.")
print()
print("| honest users | p50 ms | p99 ms | responses/s (target) | lost | errors | gateway CPU | gateway peak RSS |")
print("|---|---|---|---|---|---|---|---|")
for name, m in (("alone", a), ("under attack", b)):
    print(f"| {name} | {m[0]:.2f} | {m[1]:.2f} | {m[2]:.1f} ({m[3]:.0f}) | {m[4]:.0f} | {m[5]:.0f} | {m[6]:.0f}% of a core | {m[7]:.1f} MB |")
j = json.load(open(attack))
print()
print("What the last run's attacks got back (count):")
print()
for what, outcomes in j["outcomes"].items():
    for o, n in outcomes.items():
        print(f"- {what}: {o}: {n}")
ok = b[1] <= 50 and b[2] >= 0.99 * b[3] and j["bad_input_not_refused"] == 0
print()
print("honest users kept their rate and p99 <= 50 ms, every bad input refused:", "yes" if ok else "NO")
sys.exit(0 if ok else 1)
PY
