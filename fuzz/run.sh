#!/bin/sh
# Runs one fuzz target (or all, one after the other) on its seeds and its growing corpus.
# Usage: fuzz/run.sh TARGET|all [SECONDS]      (nightly toolchain + `cargo install cargo-fuzz`)
# Logs go to fuzz/logs/TARGET.log; crashes to fuzz/artifacts/TARGET/.
set -eu
cd "$(dirname "$0")/.."
secs=${2:-600}
targets=$1
[ "$targets" = all ] && targets="sip_message sdp rtp_dtmf twiml kazoo_json config media_file digest tone_spec subscribe presence_message srtp"
mkdir -p fuzz/logs
for t in $targets; do
    mkdir -p "fuzz/corpus/$t"
    extra=""
    [ -d "fuzz/regressions/$t" ] && extra="fuzz/regressions/$t"
    [ "$t" = sip_message ] && extra="$extra tests/fixtures/rfc4475"
    # shellcheck disable=SC2086
    nice -n 19 cargo +nightly fuzz run "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" $extra -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        >"fuzz/logs/$t.log" 2>&1 || echo "$t: exit $? (see fuzz/logs/$t.log)"
    tail -n 20 "fuzz/logs/$t.log" | grep -E '^(#|stat::|==|SUMMARY|Done)' || true
done
