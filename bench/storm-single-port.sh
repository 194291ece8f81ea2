#!/usr/bin/env bash
# The 10 000-client storm (N clients x 64 KiB at once, blksize 1468) against
# this checkout's tftpd in its default mode and with --single-port, and
# rs-tftpd without and with its own single-port mode (-s), interleaved,
# REPEAT rounds (default 3). Each line: NAME JSON, tftpload's summary and
# server_cpu_s (user + system seconds of the server for the storm).
#
#   BENCH_LAB=/tmp/benchlab bench/storm-single-port.sh
#
# BENCH_LAB is a writable copy of ../shared/bench whose `./peers.sh setup
# rs-tftpd` has run; BENCH_ROOT holds small64k.bin (run.sh makes it).
set -u
cd "$(dirname "$0")/.."
LAB="${BENCH_LAB:-../shared/bench}"
cargo build --release --quiet -p tftpd
cargo build --release --quiet --manifest-path "$LAB/tftpload/Cargo.toml"
LOAD="$LAB/tftpload/target/release/tftpload"
RS="$LAB/.peers/rs-tftpd/bin/tftpd"
OURS="$PWD/target/release/tftpd"
ROOT="${BENCH_ROOT:-/tmp/bench-root}"
N="${N:-10000}"
SHA=$(sha256sum "$ROOT/small64k.bin" | cut -d' ' -f1)
ulimit -n 20000
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); print ($12 + $13) / hz }' "/proc/$1/stat"; }
one() { # name port cmd...
  local name=$1 port=$2; shift 2
  "$@" > "/tmp/storm-$name.log" 2>&1 & local pid=$!
  sleep 1
  local before; before=$(cpu_s $pid)
  local out; out=$("$LOAD" get --server "127.0.0.1:$port" --file small64k.bin --blksize 1468 \
        --clients "$N" --transfers "$N" --rcvbuf 262144 --deadline-s 120 --expect-sha256 "$SHA" \
        2>/dev/null | tail -1)
  local after; after=$(cpu_s $pid)
  python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d["server_cpu_s"]=round(float(sys.argv[3])-float(sys.argv[2]),3); print(sys.argv[4], json.dumps({k:d.get(k) for k in ["ok","failed","wall_s","transfers_per_s","p50_ms","p99_ms","rrq_resent","timeouts","server_cpu_s"]}))' \
    "$out" "$before" "$after" "$name" 2>/dev/null || echo "$name $out"
  kill $pid; wait $pid 2>/dev/null
  sleep 2
}
LIMITS=(--root "$ROOT" --max-sessions 20000 --max-sessions-per-peer 20000)
for _ in $(seq "${REPEAT:-3}"); do
  one tftp-rs 17010 "$OURS" --listen 127.0.0.1:17010 "${LIMITS[@]}"
  one tftp-rs-single-port 17011 "$OURS" --listen 127.0.0.1:17011 "${LIMITS[@]}" --single-port
  one rs-tftpd 17006 "$RS" -i 127.0.0.1 -p 17006 -d "$ROOT" -r -q
  one rs-tftpd-single-port 17007 "$RS" -i 127.0.0.1 -p 17007 -d "$ROOT" -r -q -s
done
