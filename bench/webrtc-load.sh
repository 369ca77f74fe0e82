#!/usr/bin/env bash
# WebRTC users from the Rust load client (`vchat bench --transport webrtc`),
# all in one room of a fresh `vchat flow` (the chat's executor/config.yml,
# vertical mosaic, WebRTC on a free UDP port) per run, server and load client
# pinned to the same CPUs. For each case USERS:HxW@FPS, RUNS runs of SECS
# seconds after WARMUP, alternating the server builds of VCHATS (A/B); prints
# medians of the runs as a Markdown table and keeps each run's JSON in
# target/bench/webrtc-load-*.json.
#   bench/webrtc-load.sh                              # 8:240x320@15 and 4:480x640@30, 3 runs of 8 s
#   CASES="8:240x320@15" RUNS=5 bench/webrtc-load.sh
#   VCHATS="/tmp/before/vchat target/release/vchat" bench/webrtc-load.sh   # A/B
#   PROCESSES=2 CPUS=0,1 bench/webrtc-load.sh
# BENCH is the load client's binary (default target/release/vchat, built if
# missing); CPUS the CPU list for taskset (default 0,1; empty: no pinning).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in -h|--help) sed -n '2,15p' "$0"; exit 0 ;; esac
CASES=${CASES:-8:240x320@15 4:480x640@30}
RUNS=${RUNS:-3} SECS=${SECS:-8} WARMUP=${WARMUP:-2} PROCESSES=${PROCESSES:-1}
CPUS=${CPUS-0,1}
BENCH=${BENCH:-target/release/vchat}
VCHATS=${VCHATS:-$BENCH}
OUT=target/bench
mkdir -p "$OUT"
[ -x "$BENCH" ] || cargo build --release -p vchat-cli >&2
pin=()
[ -n "$CPUS" ] && pin=(taskset -c "$CPUS")

dir=$(mktemp -d)
flow_pid=
cleanup() {
    [ -n "$flow_pid" ] && kill "$flow_pid" 2>/dev/null && wait "$flow_pid" 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT
cat >"$dir/flow.yml" <<EOF
jtype: Flow
with:
  protocol: [grpc, websocket]
  port_http: 0
  webrtc:
    udp_port: 0
executors:
  - uses: $PWD/executor/config.yml
    name: frameAggregator
EOF

echo "load before: $(uptime)" >&2
files=()
for case in $CASES; do
    users=${case%%:*} rest=${case#*:}
    size=${rest%@*} fps=${rest#*@}
    for round in $(seq 1 "$RUNS"); do
        b=0
        for vchat in $VCHATS; do
            b=$((b + 1))
            # A log of its own per Flow: the shell may look before the new
            # Flow has truncated the last one's.
            log="$dir/flow-$users-$size-$fps-$round-$b"
            "${pin[@]}" "$vchat" flow --uses "$dir/flow.yml" --port 0 >"$log.out" 2>"$log.err" &
            flow_pid=$!
            web=
            for _ in $(seq 1 100); do
                web=$(sed -n 's/^vchat: listening on \(http:.*\)$/\1/p' "$log.out" 2>/dev/null)
                [ -n "$web" ] && break
                sleep 0.1
            done
            [ -n "$web" ] || { cat "$log.err" >&2; exit 1; }
            f="$OUT/webrtc-load-b$b-u$users-$size-$fps-$round.json"
            "${pin[@]}" "$BENCH" bench "$web" --transport webrtc --users "$users" --size "$size" \
                --fps "$fps" --duration "$SECS" --warmup "$WARMUP" --room load \
                --processes "$PROCESSES" --server-pid "$flow_pid" --json >"$f"
            kill "$flow_pid"; wait "$flow_pid" 2>/dev/null || true; flow_pid=
            echo "$vchat $users x $size @ $fps round $round: $(python3 -c '
import json, sys
r = json.load(open(sys.argv[1])); w = r["webrtc"]
print("mosaics/s min %.1f, rtt p50 %.0f ms, server %.0f%%, load client %.0f%%" % (w["mosaic_fps_min"], r["p50_ms"], r["server_cpu_percent"], r["bench_cpu_percent"]))' "$f")" >&2
            files+=("$f")
        done
    done
done
echo "load after: $(uptime)" >&2

python3 - "$RUNS" "$SECS" "$VCHATS" "${files[@]}" <<'EOF'
import json, re, statistics, sys
runs, secs, vchats, files = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4:]
groups = {}
for f in files:
    b = int(re.search(r"-b(\d+)-", f).group(1))
    r = json.load(open(f))
    groups.setdefault((r["users"], r["size"], r["fps"], b), []).append(r)
def med(rs, get):
    vs = [v for v in (get(r) for r in rs) if v is not None]
    return statistics.median(vs) if vs else float("nan")
print(f"Medians of {runs} runs of {secs} s, every user in one room:\n")
print("| build | users | HxW @ fps | mosaics/s per user, min / median | round trip p50 / p99 ms | sent / received kB/s per user | server CPU % of a core (per user) | server peak RSS MB | load client CPU % | errors |")
print("|---|---|---|---|---|---|---|---|---|---|")
for (users, size, fps, b), rs in groups.items():
    w = lambda k: (lambda r: r["webrtc"][k])
    print(f"| {vchats[b - 1]} | {users} | {size} @ {fps:g} "
          f"| {med(rs, w('mosaic_fps_min')):.1f} / {med(rs, w('mosaic_fps_median')):.1f} "
          f"| {med(rs, lambda r: r['p50_ms']):.0f} / {med(rs, lambda r: r['p99_ms']):.0f} "
          f"| {med(rs, w('bytes_out_per_s_median')) / 1e3:.1f} / {med(rs, w('bytes_in_per_s_median')) / 1e3:.1f} "
          f"| {med(rs, lambda r: r['server_cpu_percent']):.0f} ({med(rs, w('server_cpu_percent_per_user')):.1f}) "
          f"| {med(rs, lambda r: r['server_peak_rss_mb']):.0f} "
          f"| {med(rs, lambda r: r['bench_cpu_percent']):.0f} "
          f"| {med(rs, lambda r: r['errors']):.0f} |")
EOF
