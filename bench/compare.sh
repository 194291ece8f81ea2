#!/usr/bin/env bash
# The side-by-side benchmark of ../shared/bench with this checkout's tftpd
# as its EXTRA_SERVER, in the same run as the peers (tftpd-hpa, atftpd,
# dnsmasq, rs-tftpd, ...), then its 10 000-client probe (scale.sh) against
# rs-tftpd. Needs root and what ../shared/bench's README lists; builds
# tftpd in release first.
#
#   bench/compare.sh                      full matrix (~8 min) + scale
#   PEERS="tftpd-hpa dnsmasq" REPEAT=3 bench/compare.sh
#   SCALE="1000 10000" bench/compare.sh   scale.sh's client counts ("" skips it)
#
# BENCH_LAB points at a writable copy of ../shared/bench (its setup writes
# .peers/ and builds tftpload there); results go where run.sh says.
set -euo pipefail
cd "$(dirname "$0")/.."
LAB="${BENCH_LAB:-../shared/bench}"
cargo build --release -p tftpd
TFTPD="$PWD/target/release/tftpd"
COMMIT="$(git rev-parse --short HEAD)$(git diff --quiet || echo +)"
cargo build --release --quiet --manifest-path "$LAB/tftpload/Cargo.toml"
(
  cd "$LAB"
  EXTRA_SERVER="$TFTPD --listen 127.0.0.1:{port} --root {root} --user root" \
    EXTRA_NAME="${EXTRA_NAME:-tftp-rs}" EXTRA_VERSION="tftp-rs $COMMIT" \
    ./run.sh
)
SCALE="${SCALE-10000}"
if [ -n "$SCALE" ]; then
  (cd "$LAB" && ./scale.sh "$TFTPD" $SCALE)
fi
