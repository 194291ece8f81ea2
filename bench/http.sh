#!/usr/bin/env bash
# HTTP throughput of one 64 MiB file, side by side on loopback: nginx
# (Debian's) serving it from disk with sendfile on (its default) and off
# (copying through user space, as tftpd does); `tftpd --root --http`
# serving the same file; `tftpd --origin http://nginx/ --http` serving it
# from its warmed disk cache. Each round fetches it with curl from each in
# turn (interleaved), REPEAT rounds (default 5), C parallel clients
# (default 1); prints each server's MB/s per round and the medians.
#
#   bench/http.sh            REPEAT=7 C=4 bench/http.sh
set -eu
cd "$(dirname "$0")/.."
cargo build --release --quiet -p tftpd
TFTPD="$PWD/target/release/tftpd"
LAB=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$LAB"' EXIT
mkdir -p "$LAB/www" "$LAB/tmp" "$LAB/cache"
# Written in 1 MiB pieces, as cp or a package manager would: how a file
# was written changes how fast the page cache hands it out (measured here:
# 64 KiB writes read back about a fifth faster than head's small ones).
dd if=/dev/urandom of="$LAB/www/big.bin" bs=1M count=64 iflag=fullblock status=none
# nginx's workers run as another user: they must read it.
chmod 755 "$LAB" "$LAB/www"; chmod 644 "$LAB/www/big.bin"
# Written back before measuring: dirty pages being flushed would slow
# whoever reads them first.
sync
cat > "$LAB/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $LAB/nginx.pid;
error_log $LAB/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on; tcp_nopush on;
  client_body_temp_path $LAB/tmp; proxy_temp_path $LAB/tmp;
  fastcgi_temp_path $LAB/tmp; uwsgi_temp_path $LAB/tmp; scgi_temp_path $LAB/tmp;
  server { listen 127.0.0.1:18080; root $LAB/www; }
  server { listen 127.0.0.1:18083; root $LAB/www; sendfile off; }
}
CONF
nginx -c "$LAB/nginx.conf" &
"$TFTPD" --root "$LAB/www" --listen 127.0.0.1:0 --http 127.0.0.1:18081 --user "$(id -un)" 2>/dev/null &
"$TFTPD" --origin "http://127.0.0.1:18080/{path}" --cache-dir "$LAB/cache" --listen 127.0.0.1:0 \
  --http 127.0.0.1:18082 --user "$(id -un)" 2>/dev/null &
for p in 18080 18081 18082 18083; do
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$p/big.bin" && break; sleep 0.1; done
done
C="${C:-1}"
fetch() { # port: MB/s of C parallel fetches (curl's own timing), or FAIL
  local out
  out=$(for _ in $(seq "$C"); do
    curl -s -o /dev/null -w '%{size_download} %{time_total}\n' "http://127.0.0.1:$1/big.bin" &
  done; wait)
  echo "$out" | python3 -c "
import sys
rows = [l.split() for l in sys.stdin if l.strip()]
if len(rows) != $C or any(int(r[0]) != 64 << 20 for r in rows):
    print('FAIL', rows)
else:
    print(round($C * 64 * 1.048576 / max(float(r[1]) for r in rows), 1))"
}
declare -A runs
for r in $(seq "${REPEAT:-5}"); do
  for s in nginx:18080 nginx-nosendfile:18083 tftpd-root:18081 tftpd-origin-cache:18082; do
    v=$(fetch "${s#*:}"); runs[${s%%:*}]+="$v "
    echo "round $r ${s%%:*} $v MB/s"
  done
done
for s in nginx nginx-nosendfile tftpd-root tftpd-origin-cache; do
  echo "median $s $(echo ${runs[$s]} | tr ' ' '\n' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}') MB/s"
done
