#!/usr/bin/env bash
# The cost curve: `vchat bench` against `vchat flow` (release builds, on loopback,
# server and load generator pinned to the same cores) over
#   - raw vertical mosaics composed per frame (flow.yml), 1-30 users x 30 fps,
#   - the JPEG grid in one room (bench/grid.yml), 10-300 users x 30 fps,
#   - 50 rooms x 4 users on the JPEG grid, each room composed at most 15 times
#     a second (--rooms-mosaic-fps) from cameras at 30,
# a fresh gateway for every point. Per point: answered rate against offered,
# p50/p99, the gateway's CPU (/proc/PID/stat) and peak RSS (VmHWM), the load
# generator's CPU, egress in bytes per second (response bytes received / s).
# Also the loopback limit (bench/loopback.py). Writes bench/results/curve-*.csv
# (and a .txt beside it: commit, machine, load, the commands) and bench/curve.svg
# (bench/plot_curve.py).
#   bench/curve.sh                                   # ~5 minutes on 2 cores
#   bench/curve.sh --repeats 3                       # medians of 3, ~15 minutes
#   bench/curve.sh --vertical 1,10 --grid 10 --rooms '' --duration 3   # a quick look
set -euo pipefail
cd "$(dirname "$0")/.."

vertical=1,2,3,5,10,15,20,25,30
grid=10,50,100,150,200,250,300
rooms=50x4
rooms_mosaic_fps=15
fps=30
duration=8
warmup=1
repeats=1
cpus=0,1
# From this many users on, the raw vertical load generator runs as 2
# single-threaded processes: receiving n^2 mosaic bytes, one thread would be the
# bottleneck first. The JPEG points' responses are small: one process keeps up
# (and a second takes CPU from the gateway on the same cores).
split_from=10
grid_processes=1
out=""
svg=bench/curve.svg
build=1
nice=0
vchat=target/release/vchat

usage() {
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
  cat <<USAGE
options:
  --vertical LIST   users of the raw vertical points [$vertical] ('' for none)
  --grid LIST       users of the JPEG grid points, one room [$grid] ('' for none)
  --rooms RxU       R rooms of U users on the JPEG grid [$rooms] ('' for none)
  --rooms-mosaic-fps N  the rooms' mosaic_fps: how often each room composes
                    and encodes its canvas [$rooms_mosaic_fps]
  --fps N           frames per second per user [$fps]
  --duration S      seconds measured per point [$duration], after --warmup [$warmup]
  --repeats N       runs of every point [$repeats]
  --cpus LIST       cores of the gateway and the load generator (taskset) [$cpus]
  --split-from N    raw vertical users from which the load generator runs as 2
                    processes [$split_from]
  --grid-processes N  load generator processes of the JPEG points [$grid_processes]
  --out FILE        the CSV [bench/results/curve-DATE.csv]
  --svg FILE        the plot [$svg]
  --nice N          run the gateway and the load generator at this niceness
                    (negative, as root: ahead of other work on a shared machine;
                    with the kernel's autogroup scheduling it only ranks them
                    among this session's processes) [$nice]
  --no-build        use target/release/vchat as it is
  --vchat BIN       measure this vchat binary instead (no build) [$vchat]
USAGE
}

while [ $# -gt 0 ]; do
  case "$1" in
    --vertical) vertical=$2; shift 2 ;;
    --grid) grid=$2; shift 2 ;;
    --rooms) rooms=$2; shift 2 ;;
    --rooms-mosaic-fps) rooms_mosaic_fps=$2; shift 2 ;;
    --fps) fps=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --repeats) repeats=$2; shift 2 ;;
    --cpus) cpus=$2; shift 2 ;;
    --split-from) split_from=$2; shift 2 ;;
    --grid-processes) grid_processes=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --svg) svg=$2; shift 2 ;;
    --nice) nice=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --vchat) vchat=$2; build=0; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "curve.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

command -v jq >/dev/null || { echo "curve.sh: needs jq" >&2; exit 1; }
if [ "$build" = 1 ]; then
  cargo build --release -q -p vchat-cli
fi
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=${out:-bench/results/curve-$stamp.csv}
work=target/bench/curve/$stamp
mkdir -p "$work" "$(dirname "$out")"
pin=(nice -n "$nice" taskset -c "$cpus")

# grid.yml admits 256 users a room; the sweep may go past that.
max_grid=$(tr ',' '\n' <<<"$grid" | sort -n | tail -1)
sed -E "s/^( *max_users:) *[0-9]+/\1 $(( ${max_grid:-0} > 256 ? max_grid : 256 ))/" \
  bench/grid.yml >"$work/grid.yml"
sed -E "s/^( *mosaic_fps:) *[0-9.]+/\1 $rooms_mosaic_fps/" "$work/grid.yml" >"$work/rooms.yml"

gateway_pid=""
stop_gateway() {
  if [ -n "$gateway_pid" ] && kill -0 "$gateway_pid" 2>/dev/null; then
    kill -INT "$gateway_pid" 2>/dev/null || true
    wait "$gateway_pid" 2>/dev/null || true
  fi
  gateway_pid=""
}
trap stop_gateway EXIT

# Starts a fresh gateway for FLOW; sets gateway_pid and addr.
start_gateway() {
  local flow=$1 log=$2
  # `vchat bench` runs its users over one connection (per process) from one
  # address: lift the per-address and per-connection stream limits meant for peers.
  "${pin[@]}" "$vchat" flow --uses "$flow" --host 127.0.0.1 --port 0 \
    --max-streams 1024 --max-streams-per-ip 1024 --max-concurrent-streams 1024 >"$log" 2>&1 &
  gateway_pid=$!
  addr=""
  for _ in $(seq 200); do
    addr=$(grep -soE 'listening on grpc://127\.0\.0\.1:[0-9]+' "$log" | head -1 | sed 's/listening on //' || true)
    [ -n "$addr" ] && return 0
    kill -0 "$gateway_pid" 2>/dev/null || break
    sleep 0.05
  done
  echo "curve.sh: the gateway for $flow did not start:" >&2
  cat "$log" >&2
  exit 1
}

echo "curve.sh: measuring the loopback limit..." >&2
loopback=$("${pin[@]}" python3 bench/loopback.py)
loopback_bps=$(jq -r '.bytes_per_s | floor' <<<"$loopback")
echo "  loopback: $(jq -r .gb_per_s <<<"$loopback") GB/s (one TCP connection, two processes)" >&2

{
  echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates || echo ' (with local changes)')"
  echo "date: $(date -u +%FT%TZ)"
  echo "machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(uname -sr)"
  echo "uptime before: $(uptime)"
  echo "loopback: $loopback"
  echo "binary: $vchat ($(stat -c %y "$vchat" | cut -d. -f1))"
  echo "command: bench/curve.sh --vertical '$vertical' --grid '$grid' --rooms '$rooms' --rooms-mosaic-fps $rooms_mosaic_fps --fps $fps --duration $duration --warmup $warmup --repeats $repeats --cpus $cpus --split-from $split_from --grid-processes $grid_processes --nice $nice"
  echo "points:"
} >"${out%.csv}.txt"

header=scenario,users,rooms,fps,repeat,processes,offered_per_s,answered_per_s,answered_pct,p50_ms,p99_ms,server_cpu_pct,bench_cpu_pct,bench_cpu_pct_per_process,egress_bytes_per_s,bytes_per_response,server_peak_rss_mb,held,loopback_bytes_per_s,loadavg_1m,note
echo "$header" >"$out"

# point SCENARIO USERS ROOMS FLOW REPEAT PROCESSES BENCH_ARGS...
point() {
  local scenario=$1 users=$2 nrooms=$3 flow=$4 rep=$5 procs=$6
  shift 6
  local tag="$scenario-$users-$rep"
  start_gateway "$flow" "$work/$tag.gateway.log"
  local cmd=("${pin[@]}" "$vchat" --threads 1 bench "$addr" --users "$users" --fps "$fps"
    --duration "$duration" --warmup "$warmup" --processes "$procs"
    --server-pid "$gateway_pid" --json "$@")
  echo "  ${cmd[*]:6}" >>"${out%.csv}.txt"
  local json note=""
  if json=$("${cmd[@]}" 2>"$work/$tag.bench.log"); then
    note=$(jq -r '.warnings | join(" / ")' <<<"$json")
  else
    note="bench failed: $(tail -c 300 "$work/$tag.bench.log" | tr '\n,' '  ')"
    json='{}'
  fi
  stop_gateway
  # The machine's load over the last minute: the figures of a busy machine
  # are not those of an idle one.
  local load
  load=$(cut -d' ' -f1 /proc/loadavg)
  jq -r --arg s "$scenario" --arg rooms "$nrooms" --arg rep "$rep" --arg procs "$procs" \
     --arg users "$users" --arg fps "$fps" --arg loop "$loopback_bps" --arg load "$load" --arg note "$note" '
    def r(n): if . == null then "" else (. * pow(10; n) | round) / pow(10; n) end;
    [ $s, $users, $rooms, $fps, $rep, $procs,
      (($fps | tonumber) * ($users | tonumber)),
      (.rate | r(1)),
      (if .rate then (100 * .rate / .target_rate | r(1)) else null end),
      (.p50_ms | r(3)), (.p99_ms | r(3)),
      (.server_cpu_percent | r(1)), (.bench_cpu_percent | r(1)),
      ([.bench_processes[]? | .cpu_percent | r(1) | tostring] | join(" ")),
      (if .bytes_in then (.bytes_in / .seconds | round) else null end),
      (if .answered and .answered > 0 then (.bytes_in / .answered | round) else null end),
      (.server_peak_rss_mb | r(1)),
      (if .rate then (if (.rate >= 0.99 * .target_rate and .p99_ms <= 50) then "yes" else "no" end) else "no" end),
      $loop, $load, $note
    ] | map(if . == null then "" else tostring end) | map(gsub(","; ";")) | join(",")' \
    <<<"$json" >>"$out"
  tail -1 "$out" | awk -F, '{printf "  %-8s %3s users: %s of %s/s, p50 %s p99 %s ms, gateway %s%% CPU, bench %s%%, %s B/s, RSS %s MB %s\n", $1, $2, $8, $7, $10, $11, $12, $13, $15, $17, $21}' >&2
}

for rep in $(seq "$repeats"); do
  for n in ${vertical//,/ }; do
    procs=1
    [ "$n" -ge "$split_from" ] && procs=2
    point vertical "$n" 1 flow.yml "$rep" "$procs" --room all
  done
  for n in ${grid//,/ }; do
    point grid "$n" 1 "$work/grid.yml" "$rep" "$grid_processes" --room all --encoding jpeg --frames textured
  done
  if [ -n "$rooms" ]; then
    r=${rooms%x*} u=${rooms#*x}
    point rooms $(( r * u )) "$r" "$work/rooms.yml" "$rep" "$grid_processes" --room room --rooms "$r" --encoding jpeg --frames textured
  fi
done

echo "uptime after: $(uptime)" >>"${out%.csv}.txt"
python3 bench/plot_curve.py "$out" "$svg"
echo "curve.sh: wrote $out, ${out%.csv}.txt and $svg" >&2
