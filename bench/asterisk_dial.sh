#!/usr/bin/env bash
# asterisk_dial.sh: bridged calls through Asterisk 20's Dial() (chan_sip) and through the pivotd
# binary, measured by the same harness (bench/bridge_relay.rs) in the same run: set-up time,
# relayed packets/s, latency through the relay against socket-to-socket, and the CPU of the
# server process alone (/proc/PID/stat) per relayed packet.
#
# Usage:  bench/asterisk_dial.sh [SECONDS] [N ...]        (defaults: 10 s steady, N = 100 400)
# Environment:
#   PEERS        where build-asterisk.sh put Asterisk (default $HOME/peers, as that script)
#   CALLEE_PORT  the UDP port on 127.0.0.1 of the bench's callee, which Asterisk dials (5081)
# Asterisk listens where build-asterisk.sh put it, UDP 127.0.0.1:5080.
#
# It adds to that Asterisk's configuration (outside the repo, $PEERS/asterisk/etc/asterisk):
#   bench-dial-modules.conf     app_dial, bridge_native_rtp, bridge_simple (included from
#                               modules.conf, which build-asterisk.sh keeps to its IVR's needs)
#   bench-dial-sip.conf         peer bench-callee = 127.0.0.1:CALLEE_PORT, directmedia=no,
#                               ulaw/alaw (included from sip.conf)
#   bench-dial-extensions.conf  context bench-dial: 6000 -> Dial(SIP/bench-callee/5551234);
#                               [ivr](+) sends 6000 there (included from extensions.conf)
#   rtp.conf                    RTP ports 40000-49999 (the tests take 20000-29999, the pivotd
#                               of the bench 50000-59999)
# then, for each N and each callee codec (PCMU: relayed as is; PCMA: transcoded), runs the bench
# against a fresh pivotd process and against a freshly started Asterisk, which it stops after.
set -euo pipefail

SECS=${1:-10}
shift || true
NS=("$@")
[ ${#NS[@]} -gt 0 ] || NS=(100 400)
PEERS=${PEERS:-$HOME/peers}
CALLEE_PORT=${CALLEE_PORT:-5081}
REPO=$(cd "$(dirname "$0")/.." && pwd)
# Asterisk's configuration, start and CLI: peer_init sets P, ETC, AST_CONF, SIP.
# shellcheck source=bench/asterisk_peer.sh
. "$REPO/bench/asterisk_peer.sh"
peer_init "$PEERS"
die() { printf 'asterisk_dial.sh: %s\n' "$*" >&2; exit 1; }
cli() { peer_cli "$1"; }
udp_busy() { peer_udp_busy "$1"; }

# ---------------------------------------------------------------- configuration
cat > "$ETC/bench-dial-sip.conf" <<EOF
; Written by pivotd's bench/asterisk_dial.sh: the callee of bench/bridge_relay.rs.
[bench-callee]
type=peer
host=127.0.0.1
port=$CALLEE_PORT
directmedia=no
disallow=all
allow=ulaw
allow=alaw
qualify=no
EOF
cat > "$ETC/bench-dial-extensions.conf" <<'EOF'
; Written by pivotd's bench/asterisk_dial.sh: 6000 is bridged to the bench's callee, Asterisk
; staying in the media path (directmedia=no), as pivotd's "resources" callflow does.
[bench-dial]
exten => 6000,1,Dial(SIP/bench-callee/5551234,30)
 same => n,Hangup()

; Guests land in [ivr], whose _X. would take 6000: an exact match there wins over the pattern.
[ivr](+)
exten => 6000,1,Goto(bench-dial,6000,1)
EOF
# build-asterisk.sh loads only what its IVR needs (autoload=no): Dial() and the bridges too.
cat > "$ETC/bench-dial-modules.conf" <<'EOF'
load => app_dial.so
load => bridge_native_rtp.so
load => bridge_simple.so
EOF
peer_include bench-dial-modules.conf modules.conf
peer_include bench-dial-sip.conf sip.conf
peer_include bench-dial-extensions.conf extensions.conf
peer_rtp_conf

# ---------------------------------------------------------------- Asterisk start/stop
AST_PID=
start_asterisk() {
    ( peer_exec ) &
    AST_PID=$!
    peer_booted "$AST_PID"
    # Output captured first: grep -q in a pipe can end the CLI with SIGPIPE (pipefail).
    local plan peer mods
    plan=$(cli "dialplan show 6000@ivr")
    peer=$(cli "sip show peer bench-callee")
    mods=$(cli "module show")
    for m in app_dial.so bridge_native_rtp.so bridge_simple.so; do
        grep -qF "$m" <<<"$mods" || die "$m is not loaded (see $ETC/modules.conf)"
    done
    grep -qF 'Goto(bench-dial,6000,1)' <<<"$plan" \
        || die "6000@ivr does not go to bench-dial (see $ETC/extensions.conf)"
    grep -qF "127.0.0.1:$CALLEE_PORT" <<<"$peer" \
        || die "peer bench-callee is not 127.0.0.1:$CALLEE_PORT (see $ETC/sip.conf)"
}
stop_asterisk() {
    [ -n "$AST_PID" ] || return 0
    cli "core stop now" >/dev/null 2>&1 || kill "$AST_PID" 2>/dev/null || true
    wait "$AST_PID" 2>/dev/null || true
    AST_PID=
}
trap stop_asterisk EXIT

# ---------------------------------------------------------------- runs
cd "$REPO"
# Built before any measurement: no compiler shares the CPU with a run.
cargo bench --bench bridge_relay --no-run 2>&1 | tail -1
bench() { cargo bench -q --bench bridge_relay -- "$@" 2>&1 | grep -v '^\s*Running\|^\s*Finished'; }

echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores; $("$P/sbin/asterisk" -V)"
for n in "${NS[@]}"; do
    for codec in pcmu pcma; do
        echo
        echo "## N=$n, callee $codec, $SECS s steady — pivotd process   [$(uptime | sed 's/.*load/load/')]"
        bench "$n" "$SECS" "$codec" --process
        udp_busy "$CALLEE_PORT" && die "UDP 127.0.0.1:$CALLEE_PORT (CALLEE_PORT) is taken"
        start_asterisk
        echo
        echo "## N=$n, callee $codec, $SECS s steady — Asterisk $SIP pid $AST_PID   [$(uptime | sed 's/.*load/load/')]"
        # Mid-run (the bench first measures its baseline, 1 + SECS s, then sets the calls up,
        # warms up 1 s and measures SECS s): the bridges' technology (native_rtp relays in
        # res_rtp_asterisk; simple_bridge goes through the core, transcoding if codecs differ).
        ( sleep $((SECS * 3 / 2 + 4))
          echo "   mid-run: $(cli 'core show channels count' | grep 'active call' | tr -s ' ')," \
               "bridges by technology: $(cli 'bridge show all' | awk 'NR > 1 && NF >= 4 {print $(NF - 1)}' | sort | uniq -c | tr -s ' \n' ' ')"
        ) &
        probe=$!
        bench "$n" "$SECS" "$codec" --target "$SIP" --pid "$AST_PID" --callee-port "$CALLEE_PORT"
        wait "$probe" 2>/dev/null || true
        sleep 3
        echo "   after BYE + 3 s: $(cli 'core show channels count' | grep 'active call' | tr -s ' ')"
        stop_asterisk
    done
done
