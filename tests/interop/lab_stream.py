"""One end of a sequence-numbered UDP stream, for the strongSwan lab.

Runs inside a lab namespace (ip netns exec NS /usr/bin/python3 lab_stream.py
--bind A --peer B --port P --rate R). It sends datagrams numbered 0, 1, 2...
to the peer at a steady rate and records every datagram it receives from the
peer (sequence number, CLOCK_MONOTONIC arrival time: one clock for every
namespace of the machine, so the test can line arrivals up with events).

Commands on stdin, one JSON reply line each on stdout:
  start    start sending                       {"ok":true}
  stop     stop sending                        {"sent":N,"send_errors":[seq...]}
  report   what arrived so far                 {"received":N,"arrivals":[[seq,t_ns],...]}
  quit     exit                                {"ok":true}
Loss is counted by the receiver, per sequence number: never inferred from a
transport protocol."""

import argparse
import json
import socket
import struct
import sys
import threading
import time

HEADER = struct.Struct("!4sIQ")  # magic, seq, send time (ns, CLOCK_MONOTONIC)
MAGIC = b"LABS"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bind", required=True)
    ap.add_argument("--peer", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--size", type=int, default=100)
    a = ap.parse_args()

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind((a.bind, a.port))
    pad = b"\0" * max(0, a.size - HEADER.size)
    lock = threading.Lock()
    arrivals = []
    sent = 0
    errors = []
    sending = threading.Event()
    stopped = threading.Event()

    def receiver():
        while True:
            data, _ = s.recvfrom(65536)
            t = time.monotonic_ns()
            if len(data) >= HEADER.size:
                magic, seq, _ = HEADER.unpack_from(data)
                if magic == MAGIC:
                    with lock:
                        arrivals.append((seq, t))

    def sender():
        nonlocal sent
        sending.wait()
        t0 = time.monotonic()
        seq = 0
        while not stopped.is_set():
            due = t0 + seq / a.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            try:
                s.sendto(HEADER.pack(MAGIC, seq, time.monotonic_ns()) + pad, (a.peer, a.port))
            except OSError:
                errors.append(seq)  # never left this host: not counted as sent
            seq += 1
            sent = seq

    threading.Thread(target=receiver, daemon=True).start()
    tx = threading.Thread(target=sender, daemon=True)
    tx.start()
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "start":
            sending.set()
            out = {"ok": True}
        elif cmd == "stop":
            stopped.set()
            sending.set()
            tx.join()
            out = {"sent": sent, "send_errors": errors}
        elif cmd == "report":
            with lock:
                out = {"received": len(arrivals), "arrivals": list(arrivals)}
        elif cmd == "quit":
            print(json.dumps({"ok": True}), flush=True)
            return
        else:
            out = {"error": f"unknown command {cmd!r}"}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
