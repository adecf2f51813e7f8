#!/usr/bin/env bash
# A TLS-capable SIPp for the tests and benches that speak SIP over TLS (`sipp -t l1`).
# Debian 12's sip-tester is built without OpenSSL (its source package Build-Conflicts with
# libssl-dev, for the licence), so this builds the same source package (1:3.6.1-1, sha256
# checked against Debian's .dsc) with Debian's options (SCTP, PCAP play, GSL) plus -DUSE_SSL=1,
# and installs the binary at $PIVOTD_SIPP_TLS (default /usr/local/lib/pivotd-tests/sipp-tls/sipp,
# outside any clone; the tests and benches read the same variable). /usr/bin/sipp is left alone.
# Idempotent: does nothing when the binary is there and speaks TLS.
# Usage: scripts/sipp-tls.sh   (as root, or with the build dependencies installed and the
# directory writable). Prints the binary's path.
set -euo pipefail

bin=${PIVOTD_SIPP_TLS:-/usr/local/lib/pivotd-tests/sipp-tls/sipp}
dir=$(dirname "$bin")
# `sipp -v` prints "SIPp v3.6.1-TLS-…" and exits non-zero.
speaks_tls() { [[ $("$1" -v 2>&1 || true) == *-TLS* ]]; }
if [ -x "$bin" ] && speaks_tls "$bin"; then
  echo "$bin"
  exit 0
fi

# Debian's Build-Depends (less debhelper: the binary is built with cmake directly) and OpenSSL.
deps=(cmake g++ make pkg-config libssl-dev libpcap-dev libncurses-dev libsctp-dev libgsl-dev
  libnet1-dev dpkg-dev curl ca-certificates xz-utils)
need=()
for p in "${deps[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "sipp-tls: installing ${need[*]}" >&2
  if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/sipp-tls.sh: missing ${need[*]} and not root; install them with apt-get" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi

pool=http://deb.debian.org/debian/pool/main/s/sip-tester
# Ubuntu's archive carries the same upstream tarball (same sha256) under its own pool: a
# second source for a file Debian's mirror cannot serve; the checksum is Debian's either way.
ubuntu_pool=http://archive.ubuntu.com/ubuntu/pool/universe/s/sip-tester
dsc=sip-tester_3.6.1-1.dsc
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

curl -fsS -o "$dsc" "$pool/$dsc"
# The .dsc's "Checksums-Sha256:" block: " SHA256 SIZE NAME" lines.
mapfile -t sums < <(awk '/^Checksums-Sha256:/ {on = 1; next} on && /^ / {print $1, $3; next} {on = 0}' "$dsc")
[ ${#sums[@]} -gt 0 ] || { echo "sipp-tls: no Checksums-Sha256 in $dsc" >&2; exit 1; }
have_debian_tar=0
for line in "${sums[@]}"; do
  read -r sum name <<<"$line"
  if ! curl -fsS -o "$name" "$pool/$name" 2>/dev/null; then
    rm -f "$name"
    case "$name" in
      *.orig.tar.*) curl -fsS -o "$name" "$ubuntu_pool/$name" ;;
      # The packaging (rules, patches): Debian's alone; without it, see below.
      *) echo "sipp-tls: $pool/$name not available" >&2; continue ;;
    esac
  fi
  echo "$sum  $name" | sha256sum -c --quiet - >&2
  case "$name" in *.debian.tar.*) have_debian_tar=1 ;; esac
done

if [ "$have_debian_tar" = 1 ]; then
  # Unpacks the orig tarball and applies debian/patches (quilt format 3.0).
  dpkg-source --no-check -x "$dsc" src >&2
else
  # Some mirrors serve the .dsc but not the packaging tarball; its changelog says 3.6.0-1
  # dropped the last patches (upstream had taken them), so the orig tarball is built as is.
  echo "sipp-tls: building the orig tarball without Debian's packaging tarball" >&2
  mkdir src
  tar -xzf sip-tester_3.6.1.orig.tar.gz -C src --strip-components=1
fi

# Debian's options (the packaged sipp -v: SCTP-PCAP-RTPSTREAM, linked with libgsl) + TLS.
# In the source tree: the release tarball's version.h sits at its top, which 3.6.1's
# CMakeLists finds only as the build directory.
cmake -S src -B src -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DUSE_SSL=1 -DUSE_SCTP=1 -DUSE_PCAP=1 -DUSE_GSL=1 >&2
make -C src -j"$(nproc)" sipp >&2
if ! speaks_tls src/sipp; then
  echo "sipp-tls: the built sipp does not report TLS" >&2
  exit 1
fi
mkdir -p "$dir"
install -m 755 src/sipp "$bin.new"
mv "$bin.new" "$bin"
echo "$bin"
