#!/usr/bin/env bash
# TFTP A/B of two tftpd builds, interleaved, ROUNDS rounds (default 3): 4
# windowed 16 MiB downloads (W=16), 2000 lock-step 64 KiB downloads by 32
# clients, and the 10 000-client storm (ONLY=1: the lock-step one only).
# Each line: NAME, tftpload's summary, and the server's CPU seconds.
#
#   OLD=/path/to/old/tftpd NEW=target/release/tftpd BENCH_LAB=/tmp/benchlab bench/ab-tftp.sh
#
# BENCH_LAB is a writable copy of ../shared/bench with tftpload built;
# BENCH_ROOT holds small64k.bin and mid16M.bin (its run.sh makes them).
set -u
LAB="${BENCH_LAB:-../shared/bench}"
LOAD="$LAB/tftpload/target/release/tftpload"
ROOT="${BENCH_ROOT:-/tmp/bench-root}"

ulimit -n 20000
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); print ($12 + $13) / hz }' "/proc/$1/stat"; }
one() { # label bin workload-args...
  local name=$1 bin=$2; shift 2
  "$bin" --root "$ROOT" --listen 127.0.0.1:17777 --user root --max-sessions 20000 --max-sessions-per-peer 20000 > /dev/null 2>&1 & local pid=$!
  for _ in $(seq 50); do ss -uln | grep -q 17777 && break; sleep 0.1; done
  local before; before=$(cpu_s $pid)
  local out; out=$("$LOAD" get --server 127.0.0.1:17777 "$@" 2>/dev/null | tail -1)
  local after; after=$(cpu_s $pid)
  python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(sys.argv[4], json.dumps({k:d.get(k) for k in ["ok","failed","wall_s","transfers_per_s","mbps","MBps","throughput_mbps","p99_ms","rrq_resent"]}), "cpu", round(float(sys.argv[3])-float(sys.argv[2]),3))' "$out" "$before" "$after" "$name" 2>/dev/null || echo "$name $out"
  kill $pid; wait $pid 2>/dev/null
}
SHA64=$(sha256sum $ROOT/small64k.bin | cut -d' ' -f1)
SHA16=$(sha256sum $ROOT/mid16M.bin | cut -d' ' -f1)
for r in $(seq ${ROUNDS:-3}); do
  for v in "old:$OLD" "new:$NEW"; do
    [ -n "${ONLY:-}" ] || one "${v%%:*}-win16" "${v#*:}" --file mid16M.bin --blksize 1468 --windowsize 16 --transfers 4 --expect-sha256 $SHA16
    one "${v%%:*}-lock64k" "${v#*:}" --file small64k.bin --blksize 1468 --clients 32 --transfers 2000 --expect-sha256 $SHA64
    [ -n "${ONLY:-}" ] || one "${v%%:*}-storm" "${v#*:}" --file small64k.bin --blksize 1468 --clients 10000 --transfers 10000 --rcvbuf 262144 --expect-sha256 $SHA64
  done
done
