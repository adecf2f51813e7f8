#!/usr/bin/env bash
# cluster.sh: calls per second through Kamailio (deploy/kamailio/kamailio.cfg) in front of 1,
# 2 and 3 pivotd nodes on one PostgreSQL store, and what Kamailio itself costs.
#
# Each call: SIPp (tests/sipp/uac_rr.xml, following Record-Route) -> Kamailio -> a node, which
# answers, plays a 1 s prompt and hangs up (BYE back through Kamailio). For every node count
# and rate: calls offered, successful, failed, achieved calls/s, INVITE->200 p50/p99 (SIPp's
# rtt trace, whole ms), the 503s the nodes sent for load or limits (through Kamailio one
# call's 503 may be counted on two nodes: it is handed on), CPU per call of the pivotd nodes
# together and of Kamailio (all its processes), and each node's share of the calls (its
# pivotd_calls_total). SIPp counts a call refused 503 as failed through Kamailio; straight to a
# node its caller ends one "successfully", so the direct row counts what the node answered. The row "direct" sends the same calls to
# one node without Kamailio: the difference is what the proxy adds.
#
# Usage:  bench/cluster.sh [SECONDS] [RATE ...]     (defaults: 10 s per step, 100 200 400)
# Environment: NODES ("1 2 3": the node counts to run), CHILDREN (Kamailio's UDP workers, 4),
# KAMAILIO_OPTS (more options for kamailio; default "-x tlsf": the TLSF allocator, half the CPU
# per call of the default q_malloc, whose debugging bookkeeping Debian's build keeps on).
# Loopback only: the nodes on 127.0.0.1-3, Kamailio on 127.0.0.4, SIPp on 127.0.0.1; media
# ports 40000-45999. Needs root (PostgreSQL runs as the `postgres` user), sipp, kamailio,
# sox and Debian's postgresql.
set -euo pipefail

SECS=${1:-10}
shift || true
RATES=("$@")
[ ${#RATES[@]} -gt 0 ] || RATES=(100 200 400)
read -r -a COUNTS <<< "${NODES:-1 2 3}"
CHILDREN=${CHILDREN:-4}
REPO=$(cd "$(dirname "$0")/.." && pwd)
TMP=$(mktemp -d)
chmod 755 "$TMP"
PIDS=()
KAM=
PGBIN=$(dirname "$(compgen -G '/usr/lib/postgresql/*/bin/initdb' | sort -V | tail -1)")

for tool in sipp kamailio sox; do
    command -v "$tool" >/dev/null || { echo "cluster.sh: $tool is missing (scripts/test.sh installs it)" >&2; exit 1; }
done
[ -x "$PGBIN/initdb" ] || { echo "cluster.sh: PostgreSQL is missing (apt-get install postgresql)" >&2; exit 1; }

as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; }

stop_nodes() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}
stop_kamailio() {
    [ -n "$KAM" ] && kill "$KAM" 2>/dev/null && wait "$KAM" 2>/dev/null || true
    KAM=
}
cleanup() {
    stop_nodes
    stop_kamailio
    as_postgres "$PGBIN/pg_ctl" -D "$TMP/pg" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$TMP"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("'"$1"'", 0)); print(s.getsockname()[1])'; }

(cd "$REPO" && cargo build --release --quiet --bin pivotd)
PIVOTD="${PIVOTD_BIN:-$REPO/target/release/pivotd}"

# PostgreSQL: a server of this run's own (trust on loopback: a bench, not a deployment).
mkdir -p "$TMP/pg" && chown postgres: "$TMP/pg"
as_postgres "$PGBIN/initdb" -D "$TMP/pg" -A trust -U postgres >/dev/null
PGPORT=$(free_port 127.0.0.1)
as_postgres "$PGBIN/pg_ctl" -D "$TMP/pg" -l "$TMP/pg/log" -w \
    -o "-p $PGPORT -k $TMP/pg -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off" start >/dev/null
"$PGBIN/psql" -X -q -h 127.0.0.1 -p "$PGPORT" -U postgres -c "CREATE DATABASE pivotd" postgres

mkdir -p "$TMP/media"
sox -n -r 8000 -c 1 -b 16 "$TMP/media/bench-1s.wav" synth 1 sine 440

KPORT=$(free_port 127.0.0.4)
UAC_PORT=$(free_port 127.0.0.1)

# Node $1 (1-3): its config, started; its SIP address on stdout.
start_node() {
    local i=$1 sip api
    sip=$(free_port "127.0.0.$i")
    api=$(free_port "127.0.0.$i")
    cat > "$TMP/node$i.toml" <<EOF
[sip]
udp = ["127.0.0.$i:$sip"]
tcp = []
trusted_proxies = ["127.0.0.4/32"]
allow_unauthenticated = true
max_calls = 100000
max_calls_per_second = 100000
# SIPp is one caller, behind Kamailio or not.
source_calls_per_second = 1000000
source_max_calls = 1000000
source_requests_per_second = 1000000
[api]
listen = "127.0.0.$i:$api"
[store]
postgres = "postgres://postgres@127.0.0.1:$PGPORT/pivotd"
[media]
dir = "$TMP/media"
ip = "127.0.0.$i"
port_min = $((40000 + (i - 1) * 2000))
port_max = $((41999 + (i - 1) * 2000))
[[accounts]]
id = "4b6e1d0c2f6a4e0f9a1b2c3d4e5f6a7b"
realm = "bench.test"
[[accounts.callflows]]
numbers = ["7000"]
flow = '{"module": "play", "data": {"id": "bench-1s"}, "children": {"_": {"module": "hangup"}}}'
EOF
    RUST_LOG=error "$PIVOTD" --config "$TMP/node$i.toml" > "$TMP/node$i.out" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do
        [ -n "$(ss -Hlun "src 127.0.0.$i:$sip")" ] && break
        sleep 0.1
    done
    echo "127.0.0.$i:$sip" > "$TMP/node$i.addr"
}

start_kamailio() {
    local n=$1
    : > "$TMP/dispatcher.list"
    for i in $(seq "$n"); do echo "1 sip:$(cat "$TMP/node$i.addr")" >> "$TMP/dispatcher.list"; done
    kamailio -DD -E -f "$REPO/deploy/kamailio/kamailio.cfg" -P "$TMP/kamailio.pid" -m 128 -M 16 ${KAMAILIO_OPTS--x tlsf} \
        -A "LISTEN=udp:127.0.0.4:$KPORT" -A "DISPATCHER_LIST=\"$TMP/dispatcher.list\"" \
        -A PROBE_INTERVAL=1 -A PIKE_DENSITY=1000000 -A "CHILDREN=$CHILDREN" -A LOG_LEVEL=1 \
        > "$TMP/kamailio.log" 2>&1 &
    KAM=$!
    sleep 3  # the first probes answered
    # What Kamailio spends with no calls (its timer processes, the probes): per second, to
    # set beside its cost per call.
    local t0
    t0=$(ticks "$KAM")
    sleep 5
    echo "Kamailio idle, $n nodes probed every second: $(( ($(ticks "$KAM") - t0) * 1000 / tick_hz / 5 )) ms CPU per s" >&2
}

# utime+stime ticks of PIDs and their children (Kamailio's workers are children of its main).
ticks() {
    local total=0 p
    for p in "$@" $(for q in "$@"; do pgrep -P "$q" || true; done); do
        [ -r "/proc/$p/stat" ] && total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
    done
    echo "$total"
}
# A node's count of a metric (summed over its labels).
metric_of() { curl -s "http://$(grep -o '127.0.0.[0-9]:[0-9]*' "$TMP/node$1.toml" | sed -n 2p)/metrics" |
    awk -v m="$2" '$1 == m || index($1, m "{") == 1 {s += $2} END {print s + 0}'; }
calls_of() { metric_of "$1" pivotd_calls_total; }
refused_by_nodes() {
    local total=0 i
    for i in $(seq "$1"); do total=$((total + $(metric_of "$i" pivotd_sip_overload_503_total))); done
    echo "$total"
}
tick_hz=$(getconf CLK_TCK)

# One step: $1 label, $2 target, $3 rate, $4 node count, $5 SIPp scenario (a name without the
# .xml; through Kamailio the caller must follow its Record-Route, straight to a node there is none).
step() {
    local label=$1 target=$2 rate=$3 n=$4 sf=$5 calls=$(($3 * SECS)) before_n before_k start end ok failed rt shares=""
    local -a before_calls=()
    for i in $(seq "$n"); do before_calls+=("$(calls_of "$i")"); done
    local before_503
    before_503=$(refused_by_nodes "$n")
    before_n=$(ticks "${PIDS[@]}")
    before_k=$( [ -n "$KAM" ] && ticks "$KAM" || echo 0)
    start=$(date +%s.%N)
    (cd "$TMP" && rm -f ./*_screen.log ./*_rtt.csv && timeout $((SECS * 3 + 60)) sipp \
        -sf "$REPO/$sf.xml" -s 7000 -r "$rate" -m "$calls" -l $((rate * 4 + 100)) \
        -i 127.0.0.1 -p "$UAC_PORT" -mi 127.0.0.1 -mp 46000 -nostdin -buff_size 4194304 \
        -timeout $((SECS * 3 + 30))s -timeout_error -trace_screen -trace_rtt -rtt_freq 1 -trace_err \
        "$target" > uac.out 2>&1) || true
    end=$(date +%s.%N)
    local after_n after_k
    after_n=$(ticks "${PIDS[@]}")
    after_k=$( [ -n "$KAM" ] && ticks "$KAM" || echo 0)
    for i in $(seq "$n"); do shares+="$(( $(calls_of "$i") - before_calls[i - 1] ))/"; done
    local refused=$(( $(refused_by_nodes "$n") - before_503 ))
    local screen rtt
    screen=$(ls "$TMP"/*_screen.log 2>/dev/null | head -1)
    ok=$(awk '/Successful call/ {print $(NF)}' "$screen" 2>/dev/null | tail -1)
    failed=$(awk '/Failed call/ {print $(NF)}' "$screen" 2>/dev/null | tail -1)
    rtt=$(ls "$TMP"/*_rtt.csv 2>/dev/null | head -1)
    rt=$( (tail -n +2 "$rtt" 2>/dev/null | cut -d';' -f2 | sort -n) | awk '{v[NR]=$1} END {
        if (NR == 0) { print "?"; exit }
        printf "%d/%d ms", v[int((NR - 1) * 0.5) + 1], v[int((NR - 1) * 0.99) + 1] }')
    if [ "$sf" = bench/sipp/load_uac ]; then
        # That caller ends a call refused with 503 (pivotd's load shedding) "successfully":
        # count what the node answered instead, and the rest as failed.
        ok=$(( ${shares%/} ))
        failed=$((calls - ok))
    fi
    awk -v l="$label" -v r="$rate" -v c="$calls" -v ok="${ok:-0}" -v f="${failed:-?}" -v rt="${rt:-?}" \
        -v s="$start" -v e="$end" -v cn=$((after_n - before_n)) -v ck=$((after_k - before_k)) \
        -v hz="$tick_hz" -v sh="${shares%/}" -v rf="$refused" \
        'BEGIN {
            wall = e - s - 1.0;
            printf "%-8s %6d %7d %7d %6s %6d %9.0f %13s %10.3f %10.3f  %s\n", l, r, c, ok, f, rf,
                (wall > 0 ? ok / wall : 0), rt, (ok > 0 ? cn * 1000.0 / hz / ok : 0),
                (ok > 0 ? ck * 1000.0 / hz / ok : 0), sh
        }'
    sleep 2
}

printf '%s, %s s per step, Kamailio %s workers, load: %s\n' "$(date -u +%FT%TZ)" "$SECS" "$CHILDREN" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-8s %6s %7s %7s %6s %6s %9s %13s %10s %10s  %s\n' nodes rate offered ok failed 503s "calls/s" "200 p50/p99" "pivotd ms" "kam ms" "calls per node"
for n in "${COUNTS[@]}"; do
    for i in $(seq "$n"); do start_node "$i"; done
    if [ "$n" = "${COUNTS[0]}" ]; then
        for rate in "${RATES[@]}"; do step direct "$(cat "$TMP/node1.addr")" "$rate" 1 bench/sipp/load_uac; done
    fi
    start_kamailio "$n"
    for rate in "${RATES[@]}"; do step "$n via K" "127.0.0.4:$KPORT" "$rate" "$n" tests/sipp/uac_rr; done
    stop_kamailio
    stop_nodes
done
