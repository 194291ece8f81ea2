#!/usr/bin/env python3
"""What hostile clients cost a TFTP server on loopback (any server: tftpd,
tftpd-hpa, ...; start it first, serving FILE from its root).

  hostile.py unanswered PORT FILE        datagrams and bytes one unanswered
                                         RRQ draws (plain, and asking for the
                                         largest options), and when
  hostile.py flood PORT FILE ROUNDS [N]  a real client's first-answer latency
                                         while 40 addresses x N (10) RRQs
                                         nobody answers arrive; N=0: baseline
  hostile.py hold PORT FILE N PID        N clients each verify a transfer at
                                         the largest window, then stall; the
                                         RSS of process PID before and after

The flood sends from 127.0.1.10-49 and hold from 127.0.2.1-127.0.41.250:
Linux answers all of 127/8 on lo. hold needs N + 1000 descriptors.
"""
import os, resource, selectors, socket, statistics, struct, sys, time

def rrq(name, opts=()):
    b = b"\x00\x01" + name.encode() + b"\x00octet\x00"
    for k, v in opts:
        b += k.encode() + b"\x00" + v.encode() + b"\x00"
    return b

BIG = [("blksize", "65464"), ("windowsize", "64"), ("timeout", "255"), ("tsize", "0")]

def unanswered(port, name):
    for opts in [(), (("blksize", "1468"), ("windowsize", "64"), ("timeout", "255"), ("tsize", "0"))]:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.settimeout(20)
        t0 = time.monotonic()
        s.sendto(rrq(name, opts), ("127.0.0.1", port))
        got = []
        while True:
            try:
                d, _ = s.recvfrom(70000)
            except socket.timeout:
                break
            got.append((time.monotonic() - t0, len(d)))
        times = ", ".join("%.2f s" % t for t, _ in got)
        print("options %-60s datagrams %d, bytes %d (UDP payload), at %s; request %d bytes" % (
            dict(opts) or "none", len(got), sum(n for _, n in got), times, len(rrq(name, opts))))

def flood(port, name, rounds, per=10):
    import threading
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
    lat = []
    for r in range(rounds):
        socks = []
        for a in range(40):
            for _ in range(per):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind(("127.0.1.%d" % (a + 10), 0))
                socks.append(s)
        real = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        real.bind(("127.0.0.2", 0))
        real.settimeout(10)
        req = rrq(name)
        got = {}
        def answer():
            got["d"], got["tid"] = real.recvfrom(70000)
            got["t1"] = time.perf_counter()
        th = threading.Thread(target=answer)
        th.start()
        # The real request goes out in the middle of the burst.
        half = len(socks) // 2
        for s in socks[:half]:
            s.sendto(req, ("127.0.0.1", port))
        t0 = time.perf_counter()
        real.sendto(req, ("127.0.0.1", port))
        for s in socks[half:]:
            s.sendto(req, ("127.0.0.1", port))
        th.join()
        d, tid, t1 = got["d"], got["tid"], got["t1"]
        assert d[:4] == b"\x00\x03\x00\x01", d[:4]
        lat.append((t1 - t0) * 1e3)
        # Finish politely: the transfer is verified, then abandoned.
        real.sendto(b"\x00\x05\x00\x00done\x00", tid)
        for s in socks:
            s.close()
        real.close()
        time.sleep(0.2)
    lat.sort()
    print("first answer during %d unanswered RRQs from 40 addresses:" % (40 * per) + " median %.2f ms, p90 %.2f ms, max %.2f ms (%d rounds)" % (
        statistics.median(lat), lat[int(len(lat) * 0.9) - 1], lat[-1], len(lat)))

def rss_of(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

def hold(port, name, n, pid):
    resource.setrlimit(resource.RLIMIT_NOFILE, (n + 1000, n + 1000))
    sel = selectors.DefaultSelector()
    socks = []
    base = rss_of(pid)
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.bind(("127.0.%d.%d" % (2 + i // 250, 1 + i % 250), 0))
        s.setblocking(False)
        socks.append(s)
        sel.register(s, selectors.EVENT_READ, i)
    answered = {}   # i -> (blksize, window) or None (busy)
    asked_at = {}
    t_start = time.monotonic()
    deadline = t_start + 60
    nxt = 0
    req = rrq(name, BIG)
    while len(answered) < n and time.monotonic() < deadline:
        now = time.monotonic()
        # Paced: at most 500 requests outstanding; unanswered ones again after 1 s.
        outstanding = [i for i in asked_at if i not in answered]
        for i in outstanding:
            if now - asked_at[i] > 1.0:
                socks[i].sendto(req, ("127.0.0.1", port))
                asked_at[i] = now
        while nxt < n and len(outstanding) < 500:
            socks[nxt].sendto(req, ("127.0.0.1", port))
            asked_at[nxt] = now
            outstanding.append(nxt)
            nxt += 1
        for key, _ in sel.select(0.05):
            s = key.fileobj
            i = key.data
            while True:
                try:
                    d, frm = s.recvfrom(70000)
                except BlockingIOError:
                    break
                if i in answered:
                    continue
                if d[:2] == b"\x00\x06":
                    fields = d[2:].split(b"\x00")
                    opts = dict(zip(fields[0::2], fields[1::2]))
                    answered[i] = (int(opts.get(b"blksize", b"512")), int(opts.get(b"windowsize", b"1")))
                    s.sendto(b"\x00\x04\x00\x00", frm)   # ACK 0: verified, then silence
                elif d[:2] == b"\x00\x05":
                    answered[i] = None
    took = time.monotonic() - t_start
    time.sleep(1)
    rss = rss_of(pid)
    served = [v for v in answered.values() if v]
    full = sum(1 for b, w in served if b * w >= 8 * 65464)
    print("%d requests (blksize 65464, windowsize 64) in %.1f s: %d verified and held, %d refused busy, %d unanswered; %d at the full window of 8 x 65464, median window %d bytes" % (
        n, took, len(served), sum(1 for v in answered.values() if v is None), n - len(answered), full,
        statistics.median([b * w for b, w in served]) if served else 0))
    print("tftpd RSS: %.1f MiB before, %.1f MiB with them held" % (base / 1024, rss / 1024))

if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "unanswered":
        unanswered(int(sys.argv[2]), sys.argv[3])
    elif cmd == "flood":
        flood(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]) if len(sys.argv) > 5 else 10)
    elif cmd == "hold":
        hold(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
