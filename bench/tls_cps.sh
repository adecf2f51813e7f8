#!/usr/bin/env bash
# bench/tls_cps.sh: calls per second over TLS beside UDP, one invocation: bench/run's scenario
# A (answer, play 1 s, BYE) at the same stepped rates with `--transport u1` (Debian's sipp)
# then `--transport l1` (one TLS connection, the SIPp scripts/sipp-tls.sh builds), each
# against a fresh pivotd; prints each step's achieved calls/s and INVITE -> 200 p50 side by
# side, the highest clean rate of each, and TLS / UDP.
#
#   bench/tls_cps.sh [RATES] [STEP_SECONDS]     (default 250,500,1000,2000 and 10)
#
# The JSON of each run: target/bench-tls-cps-u1.json, target/bench-tls-cps-l1.json.
set -euo pipefail
cd "$(dirname "$0")/.."
rates=${1:-250,500,1000,2000}
seconds=${2:-10}
sipp_tls=${PIVOTD_SIPP_TLS:-/usr/local/lib/pivotd-tests/sipp-tls/sipp}
[ -x "$sipp_tls" ] || { echo "bench/tls_cps.sh: no TLS SIPp at $sipp_tls: run scripts/sipp-tls.sh" >&2; exit 1; }
for t in u1 l1; do
  bench/run --scenarios A --rates "$rates" --step-seconds "$seconds" --transport "$t" \
    --json "target/bench-tls-cps-$t.json"
done
python3 - target/bench-tls-cps-u1.json target/bench-tls-cps-l1.json <<'EOF'
import json, sys
udp, tls = (json.load(open(p)) for p in sys.argv[1:3])
def steps(run):
    return {s["rate"]: s for s in run["steps"] if s["scenario"] == "A"}
u, t = steps(udp), steps(tls)
def cpu(s):
    f = (s.get("server") or {}).get("cpu_ms_per_call")
    return "-" if f is None else f"{f:.3f}"
print("\nA over UDP (-t u1) and TLS (-t l1, TLS 1.2)")
print("| offered calls/s | UDP achieved | TLS achieved | TLS / UDP | UDP p50 ms | TLS p50 ms | UDP CPU ms/call | TLS CPU ms/call | clean UDP / TLS |")
print("|---|---|---|---|---|---|---|---|---|")
for rate in sorted(set(u) & set(t)):
    a, b = u[rate], t[rate]
    ratio = b["achieved_cps"] / a["achieved_cps"] if a["achieved_cps"] else float("nan")
    print(f"| {rate} | {a['achieved_cps']:.0f} | {b['achieved_cps']:.0f} | {ratio:.2f} | "
          f"{a['invite_200_p50_ms']} | {b['invite_200_p50_ms']} | {cpu(a)} | {cpu(b)} | "
          f"{'yes' if a['clean'] else 'no'} / {'yes' if b['clean'] else 'no'} |")
def best(steps):
    clean = [r for r, s in steps.items() if s["clean"]]
    return max(clean) if clean else None
bu, bt = best(u), best(t)
ratio = f"{bt / bu:.2f}" if bu and bt else "-"
print(f"highest clean rate: UDP {bu} / TLS {bt} calls/s, TLS / UDP = {ratio}")
EOF
