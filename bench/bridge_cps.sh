#!/usr/bin/env bash
# bridge_cps.sh: bridged calls per second, SIPp UAC -> pivotd -> SIPp UAS, at stepped rates.
# Each call: INVITE to 6000, which pivotd's `resources` module bridges to a SIPp UAS (the
# carrier); answered, held HOLD_MS, BYE from the caller. No RTP (SIPp's built-in scenarios
# send none): this measures the SIP side of the bridge — two dialogs, two transactions each,
# the outbound INVITE, the RTP session pair set up and torn down — not the relay
# (`bridge_relay` measures that).
#
# Usage:  bench/bridge_cps.sh [SECONDS] [RATE ...]     (defaults: 20 s per step, 50 100 200 400 800)
# Environment: HOLD_MS (1000), SIP_PORT (5090; the UAS 5091, the UAC 5092). Loopback only.
# Prints per step: calls offered, successful, failed, achieved calls/s, INVITE->200 p50/p99
# (SIPp's rtt trace, whole ms), pivotd's CPU per call (/proc/PID/stat) and its RSS after.
set -euo pipefail

SECS=${1:-20}
shift || true
RATES=("$@")
[ ${#RATES[@]} -gt 0 ] || RATES=(50 100 200 400 800)
HOLD_MS=${HOLD_MS:-1000}
SIP_PORT=${SIP_PORT:-5090}
UAS_PORT=$((SIP_PORT + 1))
UAC_PORT=$((SIP_PORT + 2))
REPO=$(cd "$(dirname "$0")/.." && pwd)
TMP=$(mktemp -d)
PIVOTD=
UAS=

cleanup() {
    [ -n "$UAS" ] && kill "$UAS" 2>/dev/null || true
    [ -n "$PIVOTD" ] && kill "$PIVOTD" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

command -v sipp >/dev/null || { echo "bridge_cps.sh: sipp is missing (apt-get install sip-tester)" >&2; exit 1; }
(cd "$REPO" && cargo build --release --quiet)

cat > "$TMP/pivotd.toml" <<EOF
[sip]
udp = ["127.0.0.1:$SIP_PORT"]
tcp = []
trusted_sources = ["127.0.0.1"]
max_calls = 100000
max_calls_per_second = 100000
[api]
listen = "127.0.0.1:0"
[store]
sqlite = ":memory:"
[media]
ip = "127.0.0.1"
port_min = 50000
port_max = 59999
[[accounts]]
id = "4b6e1d0c2f6a4e0f9a1b2c3d4e5f6a7b"
realm = "bench.test"
[[accounts.callflows]]
numbers = ["6000"]
flow = { module = "resources", data = { to_did = "5551234" } }
[[accounts.resources]]
id = "carrier"
gateway = "sip:127.0.0.1:$UAS_PORT"
EOF

RUST_LOG=error "$REPO/target/release/pivotd" --config "$TMP/pivotd.toml" > "$TMP/pivotd.out" 2>&1 &
PIVOTD=$!
for _ in $(seq 50); do
    [ -n "$(ss -Hlun "sport = :$SIP_PORT")" ] && break
    sleep 0.1
done
(cd "$TMP" && sipp -sn uas -i 127.0.0.1 -p "$UAS_PORT" -nostdin -buff_size 4194304 \
    -trace_err > uas.out 2>&1) &
UAS=$!
sleep 0.5

cpu_ticks() { awk '{print $14 + $15}' "/proc/$PIVOTD/stat"; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$PIVOTD/status"; }
tick_hz=$(getconf CLK_TCK)

printf '%s, %s s per step, calls held %s ms, load: %s\n' "$(date -u +%FT%TZ)" "$SECS" "$HOLD_MS" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '%8s %8s %8s %8s %10s %14s %14s %10s\n' rate offered ok failed "calls/s" "200 p50/p99" "CPU/call" "RSS MB"
for rate in "${RATES[@]}"; do
    calls=$((rate * SECS))
    before=$(cpu_ticks)
    start=$(date +%s.%N)
    (cd "$TMP" && rm -f uac_*_screen.log uac_*_rtt.csv && timeout $((SECS * 3 + 60)) sipp -sn uac -s 6000 \
        -r "$rate" -m "$calls" -l $((rate * 4 + 100)) -d "$HOLD_MS" -i 127.0.0.1 \
        -p "$UAC_PORT" -mp 46000 -nostdin -buff_size 4194304 -timeout $((SECS * 3 + 30))s \
        -timeout_error -trace_screen -trace_rtt -rtt_freq 1 -trace_err "127.0.0.1:$SIP_PORT" > uac.out 2>&1) || true
    end=$(date +%s.%N)
    after=$(cpu_ticks)
    screen=$(ls "$TMP"/uac_*_screen.log 2>/dev/null | head -1)
    ok=$(awk '/Successful call/ {print $(NF)}' "$screen" 2>/dev/null | tail -1)
    failed=$(awk '/Failed call/ {print $(NF)}' "$screen" 2>/dev/null | tail -1)
    # INVITE -> 200 per call from SIPp's rtt file (whole milliseconds: SIPp's resolution).
    rtt=$(ls "$TMP"/uac_*_rtt.csv 2>/dev/null | head -1)
    rt=$( (tail -n +2 "$rtt" 2>/dev/null | cut -d';' -f2 | sort -n) | awk '{v[NR]=$1} END {
        if (NR == 0) { print "?"; exit }
        printf "%d/%d ms", v[int((NR - 1) * 0.5) + 1], v[int((NR - 1) * 0.99) + 1] }')
    ok=${ok:-0}
    failed=${failed:-?}
    awk -v r="$rate" -v c="$calls" -v ok="$ok" -v f="$failed" -v rt="${rt:-?}" \
        -v s="$start" -v e="$end" -v cpu=$((after - before)) -v hz="$tick_hz" -v rss="$(rss_kb)" \
        'BEGIN {
            wall = e - s - '"$HOLD_MS"' / 1000.0;
            printf "%8d %8d %8d %8s %10.0f %14s %11.2f ms %10.0f\n", r, c, ok, f,
                (wall > 0 ? ok / wall : 0), rt, (ok > 0 ? cpu * 1000.0 / hz / ok : 0), rss / 1024
        }'
    sleep 2
done
