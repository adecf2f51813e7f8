#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs the tools the tests drive
# (SIPp and a TLS-capable build of it, sox, espeak-ng, baresip, pjsua2, PostgreSQL, Kamailio, Chromium) when they are missing, then checks
# formatting and lints and runs every test. Usage: scripts/test.sh   (as root, or with the tools already installed)
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v sipp >/dev/null 2>&1 || need+=(sip-tester)
command -v sox >/dev/null 2>&1 || need+=(sox)
# sox reads and writes MP3 through this plugin (the prompt tests decode MP3 made by sox).
dpkg -s libsox-fmt-mp3 >/dev/null 2>&1 || need+=(libsox-fmt-mp3)
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
# The worked example's pivot web server (examples/pivot_server.py) is run by the tests.
command -v python3 >/dev/null 2>&1 || need+=(python3)
# Real softphones: baresip (Debian's) and pjsua2 (PyPI wheel, needs pip) register and call.
command -v baresip >/dev/null 2>&1 || need+=(baresip)
# The TLS tests make their certificates with the openssl CLI.
command -v openssl >/dev/null 2>&1 || need+=(openssl)
python3 -c "import pjsua2" >/dev/null 2>&1 || python3 -m pip --version >/dev/null 2>&1 ||
  need+=(python3-pip)
# The PostgreSQL store's tests start their own server from Debian's binaries
# (/usr/lib/postgresql/N/bin: initdb, pg_ctl, psql).
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
# The several-nodes tests put Debian's Kamailio (dispatcher, pike, path) in front of pivotd.
command -v kamailio >/dev/null 2>&1 || need+=(kamailio)
# The debug page's test drives Debian's headless Chromium (tests/ui/browse.py).
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# tests/packaging.rs checks the systemd unit with systemd-analyze verify.
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test.sh: missing ${need[*]} and not root; install them with apt-get" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
if ! python3 -c "import pjsua2" >/dev/null 2>&1; then
  echo "installing: pjsua2-python (pip)"
  # Debian's python3 is "externally managed" (PEP 668); the wheel has no Debian package.
  python3 -m pip install -q pjsua2-python ||
    python3 -m pip install -q --break-system-packages pjsua2-python
fi
# Debian's sipp has no TLS; tests/sipp_tls.rs runs one built from Debian's source with TLS
# (once: the binary is kept outside the clone).
scripts/sipp-tls.sh >/dev/null

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --all-targets --locked 2>&1 | tee "$log"
# One closing line for the whole suite (cargo prints one per test binary).
awk '/^test result:/ {p += $4; f += $6} END {printf "suite: %d passed, %d failed\n", p, f}' "$log"
