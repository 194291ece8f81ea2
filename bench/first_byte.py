#!/usr/bin/env python3
"""Time from an RRQ to its DATA 1, per file name, on a TFTP server on
loopback; the transfer is then abandoned with an ERROR.

  first_byte.py PORT NAME...   prints one line per name (ms), then the median
"""
import socket, statistics, sys, time

def first_byte(port, name):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(10)
    rrq = b"\x00\x01" + name.encode() + b"\x00octet\x00blksize\x001468\x00"
    t0 = time.monotonic()
    s.sendto(rrq, ("127.0.0.1", port))
    while True:
        d, peer = s.recvfrom(70000)
        if d[:2] == b"\x00\x06":            # OACK: acknowledge, DATA 1 follows
            s.sendto(b"\x00\x04\x00\x00", peer)
        elif d[:4] == b"\x00\x03\x00\x01":  # DATA 1
            ms = (time.monotonic() - t0) * 1000
            s.sendto(b"\x00\x05\x00\x00done\x00", peer)
            return ms
        elif d[:2] == b"\x00\x05":
            raise SystemExit(f"{name}: ERROR {d[4:-1].decode(errors='replace')}")

port = int(sys.argv[1])
times = [first_byte(port, n) for n in sys.argv[2:]]
for n, t in zip(sys.argv[2:], times):
    print(f"{n} {t:.2f}")
print(f"median {statistics.median(times):.2f} ms over {len(times)}")
