#!/usr/bin/python3
"""Control-plane benchmarks against a running espgw (net_pcap ports):

1. SA installs per second through the control socket: batches of inbound
   add-sa requests pipelined on one connection, each batch then deleted
   (delete waits for an RCU grace period per SA), medians over batches.
2. Failover latency under traffic: from sending `tunnel-down` to its reply,
   which espgw sends only after every worker has passed a quiescent state,
   i.e. when every worker routes by the new state (the next burst leaves on
   the next tunnel). net_pcap's per-packet timestamps are not usable as a
   clock (they jump by seconds), so the wire itself is not timed.

Usage: ESPGW_BUILD=build-release /usr/bin/python3 bench/control/bench_control.py [--batches N] [--batch N]
"""

import argparse
import json
import os
import socket
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "interop"))
import gateway_harness as h  # noqa: E402
from scapy.all import IP, UDP, Raw  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--batches", type=int, default=10)
ap.add_argument("--batch", type=int, default=1000)
ap.add_argument("--failovers", type=int, default=5)
args = ap.parse_args()

OUT = {t: h.Sa("out", 0x1000 + i, t) for i, t in enumerate(h.TUNNELS, 1)}
IN = {t: h.Sa("in", 0x2000 + i, t) for i, t in enumerate(h.TUNNELS, 1)}


def pipelined(sock_path, requests):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock_path)
    payload = b"".join(json.dumps(r).encode() + b"\n" for r in requests)
    f = s.makefile("rb")
    t0 = time.perf_counter()
    s.sendall(payload)
    for _ in requests:
        r = json.loads(f.readline())
        if not r.get("ok"):
            raise RuntimeError(r)
    dt = time.perf_counter() - t0
    s.close()
    return dt


def bench_installs():
    with tempfile.TemporaryDirectory() as tmp:
        gw = h.Gateway(Path(tmp), list(OUT.values()) + list(IN.values()))
        with gw:
            adds, dels = [], []
            for b in range(args.batches):
                base = 0x100000 + b * args.batch
                reqs = [{"op": "add-sa", "direction": "in", "spi": base + i, "tunnel": "aws-b2",
                         "key": h.keymat(base + i).hex(), "replay_window": 1024} for i in range(args.batch)]
                adds.append(args.batch / pipelined(gw.sock, reqs))
                dels.append(args.batch / pipelined(gw.sock, [{"op": "delete-sa", "direction": "in", "spi": base + i}
                                                             for i in range(args.batch)]))
    return statistics.median(adds), min(adds), max(adds), statistics.median(dels)


def bench_failover():
    rtt = []
    for _ in range(args.failovers):
        with tempfile.TemporaryDirectory() as tmp:
            inner = [h.lan_frame(IP(src="10.240.128.5", dst=f"172.31.1.{i + 1}") / UDP(sport=1, dport=2) /
                                 Raw(b"x" * 50)) for i in range(32)]
            gw = h.Gateway(Path(tmp), list(OUT.values()), lan_in=inner, infinite_lan=True)
            with gw:
                time.sleep(0.3)
                t0 = time.perf_counter()
                r = gw.request({"op": "tunnel-down", "tunnel": "aws-a1"})
                rtt.append((time.perf_counter() - t0) * 1e3)
                assert r["ok"], r
                # From the reply on, no worker routes by the old state: the next
                # burst goes out on aws-a2 (checked here through the counters).
                a2 = gw.stats()["tunnels"][1]["out"]["packets"]
                time.sleep(0.05)
                assert gw.stats()["tunnels"][1]["out"]["packets"] > a2
    return rtt


add_med, add_min, add_max, del_med = bench_installs()
print(f"SA installs through the socket: median {add_med:,.0f}/s (min {add_min:,.0f}, max {add_max:,.0f}) over "
      f"{args.batches} batches of {args.batch}; deletes (with an RCU grace period each): median {del_med:,.0f}/s")
rtt = bench_failover()
print(f"tunnel-down request -> reply (sent after every worker passed a quiescent state, i.e. all see the new "
      f"tunnel): median {statistics.median(rtt):.3f} ms (min {min(rtt):.3f}, max {max(rtt):.3f}, n={len(rtt)})")
print(json.dumps({"sa_installs_per_s": add_med, "sa_deletes_per_s": del_med, "failover_request_ms": rtt}))
