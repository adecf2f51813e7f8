#!/usr/bin/env bash
# asterisk_peer.sh: the comparison Asterisk (built by build-asterisk.sh into $PEERS; chan_sip on
# UDP 127.0.0.1:5080) for the benches: its configuration, its start and its CLI, in one place.
# Sourced by bench/asterisk_dial.sh (functions peer_*), run as a command by bench/run's
# orchestrator (bench/load/asterisk.rs):
#
#   asterisk_peer.sh PEERS configure-load PROMPT WEB   bench-load-*.conf and rtp.conf (below);
#                                                     PROMPT: a WAV path without ".wav";
#                                                     WEB: host:port of the harness's web server
#   asterisk_peer.sh PEERS configure-playing PROMPT    bench-playing-extensions.conf and rtp.conf:
#                                                     7100 answers and plays PROMPT (a WAV
#                                                     path without ".wav") over and over
#   asterisk_peer.sh PEERS exec                        checks nothing holds 5080, then execs
#                                                     Asterisk in the foreground (same pid)
#   asterisk_peer.sh PEERS booted PID                  waits until Asterisk PID is fully booted
#   asterisk_peer.sh PEERS cli COMMAND                 asterisk -rx COMMAND
#
# Everything it writes is outside the repo, in $PEERS/asterisk/etc/asterisk, `#include`d from
# the build's own files (the include line is added once) and rewritten on every run.

peer_die() { printf 'asterisk_peer.sh: %s\n' "$*" >&2; exit 1; }

# Sets P, ETC, AST_CONF, SIP and LD_LIBRARY_PATH for the Asterisk in $1.
peer_init() {
    local peers=${1%/}
    P=$peers/asterisk
    ETC=$P/etc/asterisk
    AST_CONF=$ETC/asterisk.conf
    SIP=127.0.0.1:5080
    [ -x "$P/sbin/asterisk" ] && [ -f "$AST_CONF" ] \
        || peer_die "no Asterisk in $P: build it with /work/shared/peers/build-asterisk.sh (see bench/README.md)"
    export LD_LIBRARY_PATH=$P/lib
}

peer_cli() { "$P/sbin/asterisk" -C "$AST_CONF" -rx "$1"; }
peer_udp_busy() { [ -n "$(ss -Hlun "sport = :$1")" ]; }

# peer_include FILE CONF: `#include FILE` at the end of CONF, once.
peer_include() {
    grep -qxF "#include $1" "$ETC/$2" || printf '\n#include %s\n' "$1" >> "$ETC/$2"
}

# RTP away from the tests' ports (20000-29999); the build's 10000-30000 covers them.
peer_rtp_conf() {
    cat > "$ETC/rtp.conf" <<'EOF'
[general]
; Written by pivotd's bench/asterisk_peer.sh: away from the tests' RTP ports (20000-29999).
rtpstart=40000
rtpend=49999
EOF
}

# Refuses to start a second Asterisk of this build, or one whose SIP port is taken.
peer_check_free() {
    if [ -S "$P/var/run/asterisk/asterisk.ctl" ] && peer_cli "core show version" >/dev/null 2>&1; then
        peer_die "an Asterisk from $P is already running; stop it: $P/sbin/asterisk -C $AST_CONF -rx 'core stop now'"
    fi
    if peer_udp_busy 5080; then peer_die "UDP $SIP is taken"; fi
}

# Replaces the shell with Asterisk in the foreground: the caller's pid is Asterisk's.
peer_exec() {
    peer_check_free
    exec "$P/sbin/asterisk" -f -n -C "$AST_CONF" </dev/null >>"$P/var/log/asterisk/bench-stdout.log" 2>&1
}

# peer_booted PID: waits (30 s at most) until Asterisk has loaded everything.
peer_booted() {
    for _ in $(seq 60); do
        peer_cli "core waitfullybooted" >/dev/null 2>&1 && return 0
        kill -0 "$1" 2>/dev/null || peer_die "Asterisk exited (see $P/var/log/asterisk/messages.log)"
        sleep 0.5
    done
    peer_die "Asterisk did not finish booting in 30 s"
}

# bench/run's scenarios A and P (bench/README.md, "bench/run"), in a context guests reach.
peer_configure_load() {
    local prompt=$1 web=$2
    cat > "$ETC/bench-load-extensions.conf" <<EOF
; Written by pivotd's bench/asterisk_peer.sh for bench/run: A (7000) answers, plays the 1 s
; prompt, hangs up (BYE from Asterisk); P (7001) first fetches over HTTP from the harness's web
; server (a new connection per call; the answer is only checked to be non-empty), then does A.
[bench-load]
exten => 7000,1,Answer()
 same => n,Playback($prompt)
 same => n,Hangup()
exten => 7001,1,Set(FLOW=\${CURL(http://$web/ivr?Call=\${UNIQUEID})})
 same => n,GotoIf(\$[\${LEN(\${FLOW})} > 0]?7000,1)
 ; No answer from the web server: 500 to the caller, which SIPp counts as failed.
 same => n,Hangup(38)

; Guests land in [ivr], whose _X. would take these: exact matches win over the pattern.
[ivr](+)
exten => 7000,1,Goto(bench-load,7000,1)
exten => 7001,1,Goto(bench-load,7001,1)
EOF
    # build-asterisk.sh loads only what its IVR needs (autoload=no): CURL() and LEN() too.
    cat > "$ETC/bench-load-modules.conf" <<'EOF'
load => res_curl.so
load => func_curl.so
load => func_strings.so
EOF
    peer_include bench-load-modules.conf modules.conf
    peer_include bench-load-extensions.conf extensions.conf
    peer_rtp_conf
}

# bench/run's scenario B (load_playing --asterisk): long calls that play until the caller hangs up.
peer_configure_playing() {
    local prompt=$1
    cat > "$ETC/bench-playing-extensions.conf" <<EOF
; Written by pivotd's bench/asterisk_peer.sh for load_playing --asterisk: 7100 answers and
; plays the prompt again and again until the caller's BYE (pivotd's endless_playback).
[bench-playing]
exten => 7100,1,Answer()
 same => n(loop),Playback($prompt)
 same => n,Goto(loop)

[ivr](+)
exten => 7100,1,Goto(bench-playing,7100,1)
EOF
    peer_include bench-playing-extensions.conf extensions.conf
    peer_rtp_conf
}

# As a command (not when sourced).
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    [ $# -ge 2 ] || peer_die "usage: asterisk_peer.sh PEERS configure-load PROMPT WEB | configure-playing PROMPT | exec | booted PID | cli COMMAND"
    peer_init "$1"
    cmd=$2
    shift 2
    case $cmd in
        configure-load) [ $# -eq 2 ] || peer_die "configure-load PROMPT WEB"; peer_configure_load "$1" "$2" ;;
        configure-playing) [ $# -eq 1 ] || peer_die "configure-playing PROMPT"; peer_configure_playing "$1" ;;
        exec) peer_exec ;;
        booted) [ $# -eq 1 ] || peer_die "booted PID"; peer_booted "$1" ;;
        cli) [ $# -eq 1 ] || peer_die "cli COMMAND"; peer_cli "$1" ;;
        *) peer_die "unknown command $cmd" ;;
    esac
fi
