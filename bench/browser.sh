#!/usr/bin/env bash
# The browser benchmark: USERS headless Chromium windows (the web client, a
# stamped fake camera) in one room of a fresh `vchat flow`, per transport and
# size; per user: bytes per second sent and received by the page, the frame
# round trip (camera frame painted -> first mosaic shown holding it), the
# picture's quality (PSNR of the user's own tile, as shown, against the still
# part of the frame painted) and the server's CPU. Each round runs every transport once, one after the other, so
# they see the same machine; prints medians of the rounds as a Markdown table.
#   bench/browser.sh                                 # ws, 320x240@15 and 640x480@30, 3 rounds
#   TRANSPORTS="ws webrtc" USERS=4 RUNS=3 SECS=10 bench/browser.sh
#   SIZES="320x240@15" WITH_webrtc='webrtc: {udp_port: 0}' bench/browser.sh
# WITH_<transport> adds lines to the Flow's `with:` for that transport's runs;
# VCHAT=path/to/vchat measures that build instead of building this checkout's.
# TAP=1 joins a gRPC client to each room that measures the pages' tiles as the
# server has them (one tile more in the mosaic; its raw mosaics count in the
# server's bytes).
# Each run's JSON (with every user's figures) is kept in target/bench/browser-*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in -h|--help) sed -n '2,16p' "$0"; exit 0 ;; esac
TRANSPORTS=${TRANSPORTS:-ws} SIZES=${SIZES:-320x240@15 640x480@30}
USERS=${USERS:-4} RUNS=${RUNS:-3} SECS=${SECS:-10} WARMUP=${WARMUP:-3}
OUT=target/bench
mkdir -p "$OUT"

if [ -z "${VCHAT:-}" ]; then
    cargo build --release -p vchat-cli >&2
    VCHAT=target/release/vchat
fi
cargo build --workspace --bins >&2
BENCH=target/debug/vchat-browser-bench

echo "load before: $(uptime)" >&2
files=()
for size in $SIZES; do
    for round in $(seq 1 "$RUNS"); do
        for t in $TRANSPORTS; do
            with_var="WITH_$t"
            f="$OUT/browser-$t-${size/@/-}-u$USERS-$round.json"
            "$BENCH" --vchat "$VCHAT" --users "$USERS" --size "${size%@*}" --fps "${size#*@}" \
                --transport "$t" --secs "$SECS" --warmup "$WARMUP" --with "${!with_var:-}" \
                --tap "${TAP:-0}" >"$f"
            echo "$t $size round $round: $(python3 -c 'import json,sys; p=json.load(open(sys.argv[1]))["per_user"]; print(", ".join(f"{k} {v:.1f}" for k, v in p.items() if v is not None))' "$f")" >&2
            files+=("$f")
        done
    done
done
echo "load after: $(uptime)" >&2

python3 - "$USERS" "$RUNS" "$SECS" "${files[@]}" <<'EOF'
import json, statistics, sys
users, runs, secs, files = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
groups, each, taps = {}, {}, {}
for f in files:
    r = json.load(open(f))
    key = (r["size"], r["fps"], r["transport"])
    groups.setdefault(key, []).append(r["per_user"])
    if r.get("server_view"):
        taps.setdefault(key, []).append(r["server_view"])
    for u in r["users_detail"]:
        each.setdefault(key + (u["user"],), []).append(u)
def med(rs, k, scale=1.0):
    vs = [r[k] for r in rs if r.get(k) is not None]
    return statistics.median(vs) * scale if vs else float("nan")
print(f"Medians of {runs} runs, {users} users in one room, {secs} s each; per user:\n")
print("| size @ fps | transport | sent KB/s | received KB/s | frames sent/s | mosaics shown/s | round trip p50 / p90 ms | own tile PSNR p50 / p10 dB | PSNR of 4x4 means p50 / p10 dB | server CPU % of a core |")
print("|---|---|---|---|---|---|---|---|---|---|")
for (size, fps, t), rs in groups.items():
    print(f"| {size} @ {fps:g} | {t} | {med(rs, 'bytes_sent_per_s', 1e-3):.1f} | {med(rs, 'bytes_received_per_s', 1e-3):.1f} "
          f"| {med(rs, 'frames_sent_per_s'):.1f} | {med(rs, 'mosaics_per_s'):.1f} "
          f"| {med(rs, 'rtt_ms_p50'):.0f} / {med(rs, 'rtt_ms_p90'):.0f} | {med(rs, 'psnr_db_p50'):.1f} / {med(rs, 'psnr_db_p10'):.1f} "
          f"| {med(rs, 'psnr4_db_p50'):.1f} / {med(rs, 'psnr4_db_p10'):.1f} "
          f"| {med(rs, 'server_cpu_percent'):.1f} |")
def bias(rs):
    bs = [r["bias_rgb"] for r in rs if r.get("bias_rgb")]
    return " / ".join(f"{statistics.median(b[c] for b in bs):+.1f}" for c in range(3)) if bs else "-"
print("\nThe picture: PSNR of 4x4 means against the room painted with its grain and without it, and the mean error of R / G / B, as each page shows its own tile (and, with TAP=1, as the server has it):\n")
print("| size @ fps | transport | shown: 4x4 dB | shown: 4x4 without grain dB | shown: R / G / B error | server: 4x4 dB | server: 4x4 without grain dB | server: R / G / B error |")
print("|---|---|---|---|---|---|---|---|")
for (size, fps, t), rs in groups.items():
    ts = taps.get((size, fps, t), [])
    tap = (f"| {med(ts, 'psnr4_db_p50'):.1f} | {med(ts, 'psnr4_clean_db_p50'):.1f} | {bias(ts)} |" if ts else "| - | - | - |")
    print(f"| {size} @ {fps:g} | {t} | {med(rs, 'psnr4_db_p50'):.1f} | {med(rs, 'psnr4_clean_db_p50'):.1f} | {bias(rs)} {tap}")
print("\nEach user (medians of the runs):\n")
print("| size @ fps | transport | user | sent KB/s | received KB/s | mosaics shown/s | round trip p50 / p90 ms | sender's quality limitation |")
print("|---|---|---|---|---|---|---|---|")
for (size, fps, t, user), rs in each.items():
    print(f"| {size} @ {fps:g} | {t} | {user} | {med(rs, 'bytes_sent_per_s', 1e-3):.1f} | {med(rs, 'bytes_received_per_s', 1e-3):.1f} "
          f"| {med(rs, 'mosaics_per_s'):.1f} | {med(rs, 'rtt_ms_p50'):.0f} / {med(rs, 'rtt_ms_p90'):.0f} "
          f"| {', '.join(sorted({str((r.get('encoder') or {}).get('qualityLimitationReason', '-')) for r in rs}))} |")
EOF
