#!/usr/bin/python3
"""Soak: espgw forwards both ways on net_pcap ports replaying their input
forever (traffic.py) while, through the control socket:
  - a tunnel flaps every 100 ms (aws-a1 and aws-b1 in turn, down and up);
  - every tunnel rekeys every 500 ms, make-before-break, with fresh keys
    (docs/control-api.md): add the new inbound SA, add the new outbound SA
    (it becomes current), delete the old outbound SA, delete the inbound SA
    of two generations ago;
  - routes are added, replaced and deleted (192.0.2.0/24, 172.31.128.0/17);
  - stats and VmRSS are sampled every second.
At the end: the process is alive; the accounting equations hold exactly for
every port and worker, live and in the final report; every mbuf is back;
RSS did not grow after warm-up beyond what the SA key digests explain (the
curve is printed); no (SPI, sequence number) pair went out twice; every ESP
frame that left decrypts under the key of an SA installed at the time
(check.py); no peer packet was accepted twice.

  scripts/soak.sh DURATION            (e.g. 120, 60m, 1h)
  /usr/bin/python3 tests/soak/soak.py --duration 120 [--junit FILE] [--keep]

ESPGW_BUILD names the build folder (default build/)."""

import argparse
import json
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from xml.sax.saxutils import escape

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "interop"))

import gateway_harness as h  # noqa: E402
import traffic  # noqa: E402
from check import OutboundSaLog, check_lan, check_wan  # noqa: E402

FLAP_S, REKEY_S, ROUTE_S, SAMPLE_S = 0.1, 0.5, 0.3, 1.0
FLAPPING = ["aws-a1", "aws-b1"]      # aws-a2 and aws-b2 stay up: the /16 always has a way out
ROUTE_STEPS = [
    {"op": "add-route", "prefix": "192.0.2.0/24", "via": [{"tunnel": "aws-a2", "priority": 10},
                                                          {"tunnel": "aws-b2", "priority": 20}]},
    {"op": "add-route", "prefix": "172.31.128.0/17", "via": [{"tunnel": "aws-b1", "priority": 10}]},
    {"op": "replace-route", "prefix": "172.31.128.0/17", "via": [{"tunnel": "aws-b2", "priority": 10},
                                                                 {"tunnel": "aws-a1", "priority": 20}]},
    {"op": "delete-route", "prefix": "192.0.2.0/24"},
    {"op": "replace-route", "prefix": "172.31.128.0/17", "via": [{"tunnel": "aws-a2", "priority": 10}]},
    {"op": "delete-route", "prefix": "172.31.128.0/17"},
]
ROUTES = [{"prefix": "172.31.0.0/16",
           "via": [{"tunnel": "aws-a1", "priority": 10}, {"tunnel": "aws-a2", "priority": 20},
                   {"tunnel": "aws-b1", "priority": 30}, {"tunnel": "aws-b2", "priority": 40}]}]


class Control:
    """One persistent connection to the control socket."""

    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(h.scaled(10))
        self.s.connect(path)
        self.buf = b""
        self.requests = 0
        self.failures = []

    def request(self, req, must_succeed=True):
        self.s.sendall((json.dumps(req) + "\n").encode())
        while b"\n" not in self.buf:
            chunk = self.s.recv(1 << 20)
            if not chunk:
                raise ConnectionError("espgw closed the control connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        self.requests += 1
        reply = json.loads(line)
        if must_succeed and not reply.get("ok"):
            self.failures.append((req.get("op"), req.get("spi"), reply.get("error")))
        return reply


def rss_kib(pid):
    """(VmRSS, the part outside DPDK's memory) in KiB. DPDK's memory (with
    --no-huge the "/memfd:nohuge" mapping, bounded by -m) holds the mbuf
    pool: its pages become resident as the pool's ring hands out mbufs never
    used before, for as long as that takes (65,536 mbufs: ~50 MB over the
    first hour), so it is no measure of growth; the rest (the heap, the
    control thread's containers) is."""
    total = dpdk = 0
    in_dpdk = False
    try:
        for line in open(f"/proc/{pid}/smaps"):
            if line[0] in "0123456789abcdef" and "-" in line.split()[0]:
                in_dpdk = "memfd:nohuge" in line
            elif line.startswith("Rss:"):
                kib = int(line.split()[1])
                total += kib
                dpdk += kib if in_dpdk else 0
    except OSError:
        return 0, 0
    return total, total - dpdk


def wan_tx(stats):
    """Frames the WAN port has sent (= index of the next frame in its capture)."""
    return next(p for p in stats["ports"] if p["name"] == "wan")["tx"]["packets"]


def sa_request(op, direction, spi, tunnel, keymat):
    r = {"op": op, "direction": direction, "spi": spi, "tunnel": tunnel, "algo": "aes128-gcm", "key": keymat.hex()}
    if direction == "in":
        r["replay_window"] = 1024
    return r


def run(args):
    duration = args.duration
    rng = random.Random(args.seed)
    generations = int(duration / REKEY_S) + 3
    # The WAN loop holds per_gen packets per tunnel and generation (each an
    # mbuf of the pool for the whole run): keep it near 30,000 frames.
    per_gen = args.per_gen or max(1, min(16, 28000 // (generations * len(traffic.TUNNEL_NAMES))))
    keys = traffic.InboundKeys(generations, args.seed)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="espgw-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    lan_in = traffic.lan_frames(rng, args.lan_frames, args.lan_valid)
    wan_in = traffic.wan_frames(rng, keys, per_gen, extra_hostile=args.wan_hostile)
    print(f"soak: {duration:.0f} s, {generations} rekey generations, {per_gen} peer packets per SA; "
          f"LAN loop {len(lan_in)} frames ({args.lan_valid} to encrypt), WAN loop {len(wan_in)} frames; "
          f"input built in {time.time() - t0:.1f} s; work dir {work}", flush=True)

    out_log = {}   # SPI -> OutboundSaLog
    sas = []
    next_out_spi = 0x10000000

    def fresh_out(tunnel, first_index=0):
        nonlocal next_out_spi
        next_out_spi += 1
        sa = OutboundSaLog(next_out_spi, os.urandom(20), first_index)
        out_log[sa.spi] = sa
        return sa

    current_out = {}
    for t, name in enumerate(traffic.TUNNEL_NAMES):
        o = fresh_out(name)
        current_out[name] = o
        so = h.Sa("out", o.spi, name)
        so.key = o.keymat
        si = h.Sa("in", traffic.in_spi(t, 0), name)
        si.key = keys.key[(t, 0)]
        sas += [so, si]
    gw = h.Gateway(work, sas, routes=ROUTES, lan_in=lan_in, wan_in=wan_in, infinite_lan=True)
    gw.config["ports"][1]["device"] = gw.config["ports"][1]["device"].replace(
        "net_pcap1,", "net_pcap1,infinite_rx=1,", 1)
    gw.config["mbufs"] = 65536
    eal = gw.config["eal"]
    eal[eal.index("-m") + 1] = "1024"
    import yaml
    gw.config_path.write_text(yaml.safe_dump(gw.config, sort_keys=False))

    result = {"checks": {}, "figures": {}}
    checks = result["checks"]
    samples = []
    gw.start()
    start = time.time()
    ctl = Control(gw.sock)
    pid = gw.proc.pid
    flap_n = rekey_n = route_n = 0
    down = set()
    next_flap, next_rekey, next_route, next_sample = start + FLAP_S, start + REKEY_S, start + ROUTE_S, start
    end = start + duration
    installs = len(sas)
    try:
        while True:
            now = time.time()
            if now >= end:
                break
            if gw.proc.poll() is not None:
                break
            if now >= next_sample:
                st = ctl.request({"op": "stats"})
                samples.append((now - start, rss_kib(pid), st))
                next_sample += SAMPLE_S
            if now >= next_flap:
                name = FLAPPING[flap_n % len(FLAPPING)]
                op = "tunnel-up" if name in down else "tunnel-down"
                ctl.request({"op": op, "tunnel": name})
                down.symmetric_difference_update({name})
                flap_n += 1
                next_flap += FLAP_S
            if now >= next_rekey:
                rekey_n += 1
                g = rekey_n
                wan_sent_before = wan_tx(ctl.request({"op": "stats"}))
                deleted = []
                for t, name in enumerate(traffic.TUNNEL_NAMES):
                    if g < generations:
                        ctl.request(sa_request("add-sa", "in", traffic.in_spi(t, g), name, keys.key[(t, g)]))
                        installs += 1
                    new = fresh_out(name, wan_sent_before)
                    ctl.request(sa_request("add-sa", "out", new.spi, name, new.keymat))
                    installs += 1
                    old = current_out[name]
                    ctl.request({"op": "delete-sa", "direction": "out", "spi": old.spi, "tunnel": name})
                    deleted.append(old)
                    current_out[name] = new
                    if g >= 2 and g - 2 < generations:
                        ctl.request({"op": "delete-sa", "direction": "in", "spi": traffic.in_spi(t, g - 2),
                                     "tunnel": name})
                wan_sent_after = wan_tx(ctl.request({"op": "stats"}))
                for old in deleted:
                    old.last_index = wan_sent_after
                next_rekey += REKEY_S
            if now >= next_route:
                ctl.request(ROUTE_STEPS[route_n % len(ROUTE_STEPS)])
                route_n += 1
                next_route += ROUTE_S
            time.sleep(max(0.0, min(next_flap, next_rekey, next_route, next_sample) - time.time()))
    except (OSError, ValueError) as e:  # the daemon died or answered garbage: reported below
        checks["control connection stayed up"] = (False, repr(e))
    try:
        alive = gw.proc.poll() is None
        checks["process alive at the end"] = (alive, f"exit code {gw.proc.returncode}" if not alive else "")
        if alive:
            for name in list(down):
                ctl.request({"op": "tunnel-up", "tunnel": name})
            st = ctl.request({"op": "stats"})
            samples.append((time.time() - start, rss_kib(pid), st))
            acc = st["accounting"]
            bad = [(w["worker"], p["equation"]) for w in acc["workers"] for p in w["ports"]
                   if not (p["rx_holds"] and p["tx_holds"])]
            inconsistent = [w["worker"] for w in acc["workers"] if not w["consistent"]]
            checks["accounting holds live (every port, every worker)"] = (
                acc["holds"] and not bad and not inconsistent, f"{bad[:3]} inconsistent={inconsistent}")
    finally:
        stop_time = time.time()
        rc = gw.stop()
    checks["clean exit on SIGTERM"] = (rc == 0, f"rc={rc}")
    checks["control requests all succeeded"] = (not ctl.failures, f"{len(ctl.failures)} failed: {ctl.failures[:5]}")
    checks["accounting holds in the final report"] = ("accounting: holds" in gw.output,
                                                      "\n".join(l for l in gw.output.splitlines()
                                                                if "accounting" in l or " worker " in l)[:2000])
    try:
        in_use, at_start = gw.mbufs()
        checks["mbufs back at baseline"] = (in_use == at_start, f"in use {in_use}, at start {at_start}")
    except AssertionError as e:
        checks["mbufs back at baseline"] = (False, str(e)[:500])

    # RSS after warm-up: the key digests of every SA installed (kept for the
    # daemon's life, docs/control-api.md) are the only growth allowed.
    warm = max(10.0, duration * 0.1)
    curve = [(round(t), r[0], r[1]) for t, r, _ in samples]
    after = [r[1] for t, r, _ in samples if t >= warm]
    base = next((r[1] for t, r, _ in samples if t >= warm), None)
    if base is not None and after:
        growth = max(after) - base
        installs_after = installs * (1 - warm / duration) if duration > warm else 0
        allowance = int(installs_after * 256 / 1024) + 2048
        rss_ok = growth <= allowance
        rss_msg = (f"grew {growth} KiB after {warm:.0f} s (allowed {allowance} KiB: "
                   f"256 B per SA installed + 2 MiB)")
        # 256 B per SA: the SA database keeps a digest of every key installed
        # since start (it refuses reuse), ~80 B each in the heap.
        checks["RSS outside DPDK's memory flat after warm-up"] = (rss_ok, rss_msg)
    step = max(1, len(curve) // 24)
    result["figures"]["rss_curve_kib (s, VmRSS, outside DPDK)"] = curve[::step] + ([curve[-1]] if curve and curve[-1] not in curve[::step] else [])

    # Rates over the run (the middle samples: warm-up and stop excluded).
    if len(samples) >= 3:
        (ta, _, sa_), (tb, _, sb) = samples[min(len(samples) - 2, len(samples) // 10)], samples[-2]
        def port(st, name, key):
            return next(p for p in st["ports"] if p["name"] == name)[key]["packets"]
        dt = tb - ta
        f = result["figures"]
        f["interval_s"] = round(dt, 1)
        for name in ("lan", "wan"):
            f[f"{name}_rx_kpps"] = round((port(sb, name, "rx") - port(sa_, name, "rx")) / dt / 1e3, 1)
            f[f"{name}_tx_kpps"] = round((port(sb, name, "tx") - port(sa_, name, "tx")) / dt / 1e3, 1)
        out_a = sum(t["out"]["packets"] for t in sa_["tunnels"])
        out_b = sum(t["out"]["packets"] for t in sb["tunnels"])
        in_a = sum(t["in"]["packets"] for t in sa_["tunnels"])
        in_b = sum(t["in"]["packets"] for t in sb["tunnels"])
        f["encrypted_kpps"] = round((out_b - out_a) / dt / 1e3, 1)
        f["decrypted_pps"] = round((in_b - in_a) / dt, 1)
        last = samples[-1][2]
        f["drops"] = {k: v for k, v in last["drops"].items() if v}
        f["rx_total"] = {p["name"]: p["rx"]["packets"] for p in last["ports"]}
    result["figures"].update(control_requests=ctl.requests, flaps=flap_n, rekeys=rekey_n, route_changes=route_n,
                             sas_installed=installs)

    # The wire: every ESP frame that left, every decrypted packet.
    t1 = time.time()
    wan = check_wan(gw.wan_out, out_log)
    lan = check_lan(gw.lan_out)
    result["figures"]["check_s"] = round(time.time() - t1, 1)
    result["figures"]["wan_out"] = {"esp": wan.esp, "arp": wan.arp, "other": wan.other, "spis": wan.spis_seen}
    if args.keep or not all(ok for ok, _ in checks.values()) or wan.problems():
        # Test keys only: what a later look at the capture needs.
        (work / "outbound_sas.json").write_text(json.dumps(
            [{"spi": o.spi, "keymat": o.keymat.hex(), "first_index": o.first_index,
              "last_index": None if o.last_index == float("inf") else o.last_index} for o in out_log.values()]))
    checks["every ESP frame decrypts under a key installed at the time, no (SPI, seq) twice"] = (
        wan.esp > 0 and not wan.problems(), f"{wan.esp} ESP frames; {wan.counts()} {wan.problems()}")
    full = [(t, g) for t in range(len(traffic.TUNNEL_NAMES)) for g in range(1, rekey_n - 2)]
    complete = sum(1 for k in full if lan.accepted.get(k, 0) == per_gen)
    result["figures"]["lan_out"] = {"decrypted": lan.decrypted, "other": lan.other,
                                    "generations_complete": f"{complete}/{len(full)}"}
    checks["no peer packet accepted twice"] = (not lan.accepted_twice and lan.decrypted > 0,
                                               f"{lan.decrypted} accepted, twice: {lan.accepted_twice[:5]}")
    over = [(k, n) for k, n in lan.accepted.items() if n > per_gen]
    checks["every rekey generation's packets accepted once"] = (
        complete == len(full) and not over, f"{complete}/{len(full)} generations complete; over: {over[:5]}")
    if not args.keep and all(ok for ok, _ in checks.values()):
        shutil.rmtree(work, ignore_errors=True)
    else:
        result["figures"]["work_dir"] = str(work)
    return result


def report(result, duration, elapsed, junit):
    checks = result["checks"]
    ok = all(v for v, _ in checks.values())
    lines = [f"soak {duration:.0f} s: {'PASS' if ok else 'FAIL'} ({elapsed:.0f} s with setup and checks)"]
    for name, (v, detail) in checks.items():
        lines.append(f"  [{'ok' if v else 'FAIL'}] {name}" + ("" if v else f": {detail}"))
    for k, v in result["figures"].items():
        lines.append(f"  {k}: {v}")
    text = "\n".join(lines)
    print(text, flush=True)
    if junit:
        fail = "" if ok else f'<failure message="soak checks failed">{escape(text)}</failure>'
        Path(junit).write_text(
            f'<?xml version="1.0" encoding="utf-8"?>\n<testsuites><testsuite name="soak" tests="1" '
            f'failures="{0 if ok else 1}" time="{elapsed:.1f}"><testcase classname="soak" name="soak_{duration:.0f}s" '
            f'time="{elapsed:.1f}">{fail}<system-out>{escape(text)}</system-out></testcase></testsuite></testsuites>\n')
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=120, help="seconds of traffic (default 120)")
    ap.add_argument("--junit", help="write one JUnit test case here")
    ap.add_argument("--workdir", help="keep the pcaps and the log here")
    ap.add_argument("--keep", action="store_true", help="keep the work dir even when every check passed")
    ap.add_argument("--seed", type=int, default=20261205)
    ap.add_argument("--lan-frames", type=int, default=4096, help="frames in the LAN loop")
    ap.add_argument("--lan-valid", type=int, default=8, help="of which clean packets to encrypt")
    ap.add_argument("--wan-hostile", type=int, default=1000, help="mutated ESP frames in the WAN loop")
    ap.add_argument("--per-gen", type=int, default=0, help="peer packets per inbound SA (default: fit 28k frames)")
    args = ap.parse_args()
    if not h.ESPGW.exists():
        print(f"soak: espgw not built at {h.ESPGW}", file=sys.stderr)
        return 2
    t = time.time()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    result = run(args)
    return 0 if report(result, args.duration, time.time() - t, args.junit) else 1


if __name__ == "__main__":
    sys.exit(main())
