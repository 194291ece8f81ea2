#!/usr/bin/env bash
# tftpd --origin on loopback, side by side with the same file from --root
# and from tftpd-hpa: cache-hit throughput, cold-miss first-byte latency,
# and the origin GETs of a 200-client storm. Needs nginx, a release build
# (cargo build --release -p tftpd), ../shared/bench's tftpload and
# tftpd-hpa (its peers.sh setup), and taskset.
#
#   bench/origin.sh [ROUNDS]     (default 15 interleaved rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-15}"
LAB="${BENCH_LAB:-../shared/bench}"
LOAD="$LAB/tftpload/target/release/tftpload"
TFTPD="$PWD/target/release/tftpd"
W="$(mktemp -d /tmp/origin-bench.XXXX)"
trap 'kill $(jobs -p) 2>/dev/null; pkill -f "nginx -c $W" 2>/dev/null; rm -rf "$W"' EXIT
mkdir -p "$W/www/boot" "$W/tmp" "$W/root"
head -c $((64 << 20)) /dev/urandom > "$W/www/boot/big"
ln "$W/www/boot/big" "$W/root/big"
for i in $(seq 1 "$ROUNDS"); do head -c 4000000 /dev/urandom > "$W/www/boot/cold$i"; cp "$W/www/boot/cold$i" "$W/root/cold$i"; done
head -c 8000000 /dev/urandom > "$W/www/boot/storm"
chmod -R o+rX "$W"
cat > "$W/nginx.conf" <<CONF
user root;
daemon off;
worker_processes 1;
pid $W/nginx.pid;
error_log $W/error.log;
events { worker_connections 1024; }
http {
  log_format t '\$request_method \$uri \$status \$body_bytes_sent';
  access_log $W/access.log t;
  client_body_temp_path $W/tmp; proxy_temp_path $W/tmp; fastcgi_temp_path $W/tmp;
  uwsgi_temp_path $W/tmp; scgi_temp_path $W/tmp;
  server { listen 127.0.0.1:17080; root $W/www; }
}
CONF
nginx -c "$W/nginx.conf" -p "$W" & sleep 0.5
taskset -c 0 "$TFTPD" --root "$W/root" --listen 127.0.0.1:17011 --workers 1 --user root 2>"$W/root.log" &
taskset -c 0 "$TFTPD" --origin 'http://127.0.0.1:17080/boot/{path}' --cache-size $((1 << 30)) \
    --listen 127.0.0.1:17012 --workers 1 --user root --max-sessions-per-peer 1000 2>"$W/origin.log" &
taskset -c 0 "$LAB/.peers/tftpd-hpa/usr/sbin/in.tftpd" -L -a 127.0.0.1:17013 -s "$W/root" 2>"$W/hpa.log" &
sleep 1
get() { taskset -c 1 "$LOAD" get --server "127.0.0.1:$1" --file big --blksize "$2" --windowsize "$3" --expect-size $((64 << 20)) | jq -r .mb_per_s; }
get 17012 1468 16 >/dev/null   # fill the cache
declare -A R
for r in $(seq 1 "$ROUNDS"); do
    for case in "1468 16" "512 1" "65464 1"; do
        set -- $case
        for s in 17011 17012 17013; do R["$s $1 $2"]+="$(get $s $1 $2) "; done
    done
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
echo "| 64 MiB, MB/s (median of $ROUNDS) | --root | --origin (cache hit) | tftpd-hpa | hit / root |"
echo "|---|---:|---:|---:|---:|"
for case in "1468 16" "512 1" "65464 1"; do
    set -- $case
    a=$(echo "${R["17011 $1 $2"]}" | median); b=$(echo "${R["17012 $1 $2"]}" | median); c=$(echo "${R["17013 $1 $2"]}" | median)
    echo "| blksize $1 windowsize $2 | $a | $b | $c | $(echo "scale=2; $b / $a" | bc) |"
done
names=$(for i in $(seq 1 "$ROUNDS"); do echo "cold$i"; done)
echo
echo "first byte (RRQ to DATA 1), 4 MB objects never asked before:"
echo "  --origin cold miss: $(python3 bench/first_byte.py 17012 $names | tail -1)"
echo "  --origin hit:       $(python3 bench/first_byte.py 17012 $names | tail -1)"
echo "  --root:             $(python3 bench/first_byte.py 17011 $names | tail -1)"
echo "  tftpd-hpa:          $(python3 bench/first_byte.py 17013 $names | tail -1)"
echo
storm=$(taskset -c 1 "$LOAD" get --server 127.0.0.1:17012 --file storm --blksize 1468 --windowsize 8 \
    --clients 200 --transfers 200 --expect-size 8000000 --threads 1)
echo "storm: 200 clients at once of an uncached 8 MB object: ok=$(echo "$storm" | jq .ok) failed=$(echo "$storm" | jq .failed) wall=$(echo "$storm" | jq .wall_s) s, rrq_resent=$(echo "$storm" | jq .rrq_resent)"
echo "  origin GETs of it (nginx access log): $(grep -c '^GET /boot/storm 200 ' "$W/access.log")"
