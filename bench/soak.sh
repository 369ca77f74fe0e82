#!/usr/bin/env bash
# Soak: USERS users x FPS fps through one `vchat flow --uses flow.yml` for SECS
# seconds, the gateway's RSS sampled every 10 s. Passes when, after WARMUP seconds,
# RSS stays within 10% of its post-warm-up median and no frame is lost or refused.
# The warm-up is 3 minutes because RSS is the heap's high-water mark: the gateway
# asks glibc to keep freed memory (trim threshold 256 MiB) rather than fault in
# fresh pages for every frame, so RSS climbs in steps to the peak of the load's
# fragmentation and then stays there; growth after that would be a leak.
#   bench/soak.sh                      # 10 users, 30 fps, 600 s (the recorded run)
#   SECS=60 bench/soak.sh              # a quick one
# Writes target/bench/soak-rss.csv (seconds, RSS in kB) and prints a Markdown row.
set -euo pipefail
cd "$(dirname "$0")/.."
USERS=${USERS:-10} FPS=${FPS:-30} SECS=${SECS:-600} WARMUP=${WARMUP:-180} SIZE=${SIZE:-200x300}
cargo build --release -q -p vchat-cli
BIN=target/release
OUT=target/bench
mkdir -p "$OUT"
rm -f "$OUT/soak-flow.out"
"$BIN/vchat" flow --uses flow.yml --host 127.0.0.1 --port 0 >"$OUT/soak-flow.out" 2>"$OUT/soak-flow.log" &
pid=$!
trap 'kill -INT $pid 2>/dev/null || true' EXIT
until grep -q '^vchat: listening on' "$OUT/soak-flow.out" 2>/dev/null; do
    kill -0 $pid 2>/dev/null || { cat "$OUT/soak-flow.log"; exit 1; }
    sleep 0.05
done
addr=$(sed -n 's/^vchat: listening on //p' "$OUT/soak-flow.out")
echo "soak: $USERS users x $FPS fps, $SIZE, ${SECS}s against $addr (pid $pid)" >&2
echo "seconds,rss_kb" >"$OUT/soak-rss.csv"
(
    t=0
    while kill -0 $pid 2>/dev/null; do
        echo "$t,$(awk '/^VmRSS/ {print $2}' /proc/$pid/status)" >>"$OUT/soak-rss.csv"
        sleep 10
        t=$((t + 10))
    done
) &
sampler=$!
json=$("$BIN/vchat" --threads 1 bench "$addr" --users "$USERS" --fps "$FPS" --size "$SIZE" \
    --duration "$SECS" --warmup 1 --json)
kill $sampler 2>/dev/null || true
peak_kb=$(awk '/^VmHWM/ {print $2}' /proc/$pid/status)
kill -INT $pid
wait $pid || true
trap - EXIT
python3 - "$json" "$OUT/soak-rss.csv" "$WARMUP" "$peak_kb" <<'PY'
import csv, json, statistics, sys
r = json.loads(sys.argv[1])
rows = [(int(a["seconds"]), int(a["rss_kb"])) for a in csv.DictReader(open(sys.argv[2]))]
warm = int(sys.argv[3])
after = [kb for t, kb in rows if t >= warm]
med = statistics.median(after)
spread = (max(after) - min(after)) / med * 100
flat = all(abs(kb - med) <= 0.10 * med for kb in after)
ok = flat and r["lost"] == 0 and r["errors"] == 0
print(f"samples every 10 s (MB): {' '.join(f'{kb/1024:.1f}' for _, kb in rows)}")
print()
print("| users x fps | seconds | responses/s (target) | p50 / p99 ms | lost | errors | RSS after warm-up: median, min-max | peak RSS | flat within 10% |")
print("|---|---|---|---|---|---|---|---|---|")
print(f"| {r['users']} x {r['fps']:.0f} | {r['seconds']:.0f} | {r['rate']:.1f} ({r['target_rate']:.0f}) | "
      f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f} | {r['lost']} | {r['errors']} | "
      f"{med/1024:.1f} MB, {min(after)/1024:.1f}-{max(after)/1024:.1f} MB ({spread:.1f}%) | "
      f"{int(sys.argv[4])/1024:.1f} MB | {'yes' if ok else 'NO'} |")
sys.exit(0 if ok else 1)
PY
