#!/usr/bin/python3
"""espgw's cost curve as the work grows (scripts/bench_e2e.py --curve,
scripts/bench.sh --curve; see bench/README.md, "The cost curve").

espgw only, one worker, AES-128-GCM, 64-byte inner IP packets, the same
source (net_pcap, infinite_rx) and sink (net_null) as the main matrix;
cycles per packet = TSC Hz / (packets at the sink per second of worker CPU
time). Series:

  out-random   outbound, N tunnels each with its own SA and a /24 route; a
               random tunnel per packet
  out-burst    outbound, N tunnels; one flow per 32-packet burst (32
               consecutive frames to one random tunnel)
  in-random    inbound, N SAs (one per tunnel); a random SPI per packet;
               replay window 0 (the pcap loops)
  routes       outbound, R random prefixes (/16../32 in the proportions of a
               real table), next hop one of 4 tunnels, random destinations
               among the routed addresses; loaded through routes_file
  replay       inbound, one SA, in-order sequence numbers 1..F, replay window
               W: see REPLAY_NOTE

The pcaps are written here without scapy (struct + cryptography's AES-GCM:
10,000 SAs and 1M routes in seconds); a sample of espgw's output on finite
pcaps is then checked with scapy's own ESP implementation before anything is
measured."""

import hashlib
import ipaddress
import json
import os
import random
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

import bench_e2e as be

TUNNEL_COUNTS = (1, 4, 64, 1000, 10000)
ROUTE_COUNTS = (1000, 100_000, 1_000_000)
WINDOWS = (0, 32, 4096)         # 0: no check (the accepting baseline); 32: the smallest the config allows
FRAMES = 8192                   # frames per source pcap (a multiple of 32)
BURST = 32
INNER_LEN = 64
LOCAL = be.LOCAL
SALT = bytes.fromhex(be.SALT)
# Real IPv4 table proportions (per cent), roughly the 2024 DFZ by prefix
# length, plus a small share of /25../32 (internal tables, the "/16../32"
# of the issue): they need tbl8 groups.
LEN_MIX = {16: 1.5, 17: 1.0, 18: 1.5, 19: 3.0, 20: 5.0, 21: 5.0, 22: 12.0, 23: 10.0, 24: 60.0,
           25: 0.2, 26: 0.2, 27: 0.15, 28: 0.15, 29: 0.1, 30: 0.1, 31: 0.05, 32: 0.05}
# First octets the random table avoids: 0, 10 (the tunnels' /24s and the
# LAN), 100 (the tunnel endpoints), 127, 198 and 203 (the gateway and the
# main matrix's peer), 224+ (multicast, class E).
AVOID_OCTETS = {0, 10, 100, 127, 198, 203}

REPLAY_NOTE = (
    "replay: the source pcap holds sequence numbers 1..F in order and loops. Only its first pass is accepted; "
    "from the second pass on every packet is left of the window (too_old) or inside it and already seen "
    "(replay) and is dropped at the window check, BEFORE decryption (RFC 4303 3.4.3). So with W >= 32 the "
    "interval measures the cost of refusing a replayed packet (a replay flood), not of accepting one; W = 0 "
    "(no check, every packet decrypted) is the accepting baseline. The check + update on the accepting path "
    "is bench_esp's replay/<pattern>/<window> micro-benchmark (run here too when the binary exists). The "
    "drop counters of each run are in the JSON (dispositions).")


# ------------------------------------------------------------ addressing ---

def ip4(a):
    return int(ipaddress.IPv4Address(a))


def ip4s(n):
    return str(ipaddress.IPv4Address(n))


def tunnel_remote(i):
    return ip4("100.64.0.1") + i            # one peer per tunnel (100.64/10)


def tunnel_net(i):
    return ip4("10.0.0.0") + (i << 8)       # 10.(i>>8).(i&255).0/24, i < 10,000


def sa_key(direction, i):
    return hashlib.sha256(f"espgw-curve-{direction}-{i}".encode()).digest()[:16] + SALT


def spi_of(direction, i):
    return (0x100000 if direction == "out" else 0x200000) + i


# ---------------------------------------------------------------- frames ---

def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def ipv4_header(src, dst, total, ident, proto, ttl=64):
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, ident & 0xFFFF, 0, ttl, proto, 0,
                    src.to_bytes(4, "big"), dst.to_bytes(4, "big"))
    return h[:10] + struct.pack("!H", csum(h)) + h[12:]


def mac(s):
    return bytes.fromhex(s.replace(":", ""))


def inner_ip(src, dst, i):
    """A 64-byte IPv4/UDP packet (UDP checksum 0: allowed over IPv4)."""
    payload = INNER_LEN - 28
    udp = struct.pack("!HHHH", 10000 + (i % 64), 5001, 8 + payload, 0) + bytes([0x5A]) * payload
    return ipv4_header(src, dst, INNER_LEN, i, 17) + udp


def clear_frame(dst, i):
    return mac(be.LAN_MAC) + mac(be.PEER_MAC) + b"\x08\x00" + inner_ip(ip4(be.LAN_PEER), dst, i)


def esp_frame(aead, spi, seq, outer_src, inner, iv_seed):
    """The peer's ESP (tunnel mode, RFC 4303/4106) of `inner` from outer_src
    to the gateway: SPI, seq, IV(8), AES-GCM(inner, pad, pad len, next
    header 4), ICV(16); AAD = SPI || seq (no ESN)."""
    padlen = (-(len(inner) + 2)) % 4
    pt = inner + bytes(range(1, padlen + 1)) + bytes([padlen, 4])
    iv = struct.pack("!Q", iv_seed)
    hdr = struct.pack("!II", spi, seq)
    body = hdr + iv + aead.encrypt(SALT + iv, pt, hdr)
    return mac(be.WAN_MAC) + mac(be.NH_MAC) + b"\x08\x00" + \
        ipv4_header(outer_src, ip4(LOCAL), 20 + len(body), seq, 50) + body


def write_pcap(path, frames):
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for n, fr in enumerate(frames):
            f.write(struct.pack("<IIII", n // 1_000_000, n % 1_000_000, len(fr), len(fr)))
            f.write(fr)


def pick_tunnels(n, pattern, rng, frames=FRAMES):
    if pattern == "random":
        return [rng.randrange(n) for _ in range(frames)]
    out = []
    for _ in range(frames // BURST):
        out += [rng.randrange(n)] * BURST
    return out


def random_table(count, rng):
    """count distinct random prefixes with LEN_MIX's lengths, host bits zero."""
    lens, weights = zip(*LEN_MIX.items())
    seen = set()
    out = []
    while len(out) < count:
        for ln in rng.choices(lens, weights, k=min(count - len(out), 65536) * 11 // 10):
            first = rng.randrange(1, 224)
            if first in AVOID_OCTETS:
                continue
            addr = (first << 24 | rng.getrandbits(24)) & (0xFFFFFFFF << (32 - ln)) & 0xFFFFFFFF
            k = addr << 6 | ln
            if k in seen:
                continue
            seen.add(k)
            out.append((addr, ln))
            if len(out) == count:
                break
    return out


# ---------------------------------------------------------------- configs ---

def curve_config(path, direction, src_dev, sink_dev, prefix, sock, hugepages, tunnels, in_sas=0, window=0,
                 routes_file=None, routes=True, mbufs=16384 + FRAMES):
    """`tunnels` tunnels t0.., each with an outbound SA (so that its routes
    are active), a /24 route each (unless routes_file), and `in_sas` inbound
    SAs on t0..; written as JSON (YAML's subset: fast to write and to parse)."""
    ports = be.bench_ports(direction, src_dev, sink_dev)
    cfg = {
        "eal": be.lcore_args(1) + ["--no-pci", "--file-prefix", prefix, "--log-level", "lib.eal:error"]
        + be.eal_mem(hugepages),
        "workers": [1],
        "mbufs": mbufs,   # net_pcap's infinite_rx holds the whole pcap in mbufs of this pool
        "stats_interval": 0,
        "control": {"socket": str(sock)},
        "ports": ports,
        "tunnels": [{"name": f"t{i}", "port": "wan", "local": LOCAL, "remote": ip4s(tunnel_remote(i)),
                     "next_hop_mac": be.NH_MAC} for i in range(tunnels)],
        "sas": [{"direction": "out", "spi": spi_of("out", i), "tunnel": f"t{i}", "algo": "aes128-gcm",
                 "key": sa_key("out", i).hex()} for i in range(tunnels)]
        + [{"direction": "in", "spi": spi_of("in", i), "tunnel": f"t{i}", "algo": "aes128-gcm",
            "key": sa_key("in", i).hex(), "replay_window": window} for i in range(in_sas)],
    }
    if routes_file:
        cfg["routes_file"] = str(routes_file)
    elif routes:
        cfg["routes"] = [{"prefix": f"{ip4s(tunnel_net(i))}/24", "via": [{"tunnel": f"t{i}"}]} for i in range(tunnels)]
    path.write_text(json.dumps(cfg, separators=(",", ":")))


# --------------------------------------------------------------- control ---

def control(sock, op, timeout=30):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(str(sock))
    s.sendall(json.dumps({"op": op}).encode() + b"\n")
    buf = b""
    while not buf.endswith(b"\n"):
        d = s.recv(1 << 20)
        if not d:
            break
        buf += d
    s.close()
    return json.loads(buf)


def installed(sock):
    """What the daemon holds: tunnels up, SAs by direction, routes in the
    RIB/FIB, and the drop counters (the dispositions of the run)."""
    st = control(sock, "stats")
    sas = st.get("sas", [])
    rt = st.get("route_table", {})
    drops = {k: v for k, v in st.get("drops", {}).items() if v}
    return {"tunnels": len(st.get("tunnels", [])), "tunnels_up": sum(1 for t in st.get("tunnels", []) if t.get("up")),
            "sas_out": sum(1 for x in sas if x.get("direction") == "out"),
            "sas_in": sum(1 for x in sas if x.get("direction") == "in"),
            "sas_in_used": sum(1 for x in sas if x.get("direction") == "in" and x.get("packets")),
            "sas_out_used": sum(1 for x in sas if x.get("direction") == "out" and x.get("packets")),
            "routes": rt.get("routes"), "routes_installed": rt.get("installed"), "tbl8_used": rt.get("tbl8_used"),
            "drops": drops}


def forwarding(prefix, sock):
    """The daemon runs (control socket up: tables loaded, workers launched)
    and its sink has sent something."""
    try:
        return Path(sock).exists() and be.port_stats(prefix, 1)["opackets"] + be.port_stats(prefix, 1)["oerrors"] > 0
    except (OSError, ValueError, KeyError, TypeError):
        return False


# ------------------------------------------------------------------- plan ---

class Case:
    def __init__(self, series, x, direction, tunnels, in_sas=0, window=0, routes=None, pattern="random"):
        self.series, self.x, self.direction, self.tunnels = series, x, direction, tunnels
        self.in_sas, self.window, self.routes, self.pattern = in_sas, window, routes, pattern
        self.pcap = self.routes_file = self.expect = None

    @property
    def tag(self):
        return f"{self.series}_{self.x}"


def make_cases(counts, route_counts, windows):
    cases = [Case("out-random", n, "out", n) for n in counts]
    cases += [Case("out-burst", n, "out", n, pattern="burst") for n in counts]
    cases += [Case("in-random", n, "in", n, in_sas=n) for n in counts]
    cases += [Case("routes", r, "out", 4, routes=r) for r in route_counts]
    cases += [Case("replay", w, "in", 1, in_sas=1, window=w, pattern="seq") for w in windows]
    return cases


def build_inputs(case, work, rng, frames):
    """The case's source pcap (and routes file); case.expect: per frame, what
    must come out (for the check)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    t0 = time.time()
    p = work / f"src_{case.tag}.pcap"
    if case.series in ("out-random", "out-burst"):
        picks = pick_tunnels(case.tunnels, case.pattern, rng, frames)
        dsts = [tunnel_net(t) + 1 + (k % 250) for k, t in enumerate(picks)]
        write_pcap(p, [clear_frame(d, k) for k, d in enumerate(dsts)])
        case.expect = [("out", t, d) for t, d in zip(picks, dsts)]
    elif case.series == "routes":
        table = random_table(case.routes, rng)
        case.routes_file = work / f"routes_{case.routes}.txt"
        hop = [rng.randrange(4) for _ in table]
        with open(case.routes_file, "w") as f:
            f.write("".join(f"{ip4s(a)}/{ln} t{h}\n" for (a, ln), h in zip(table, hop)))
        # random destinations among the routed addresses: a random prefix, a random host in it
        dsts = []
        for _ in range(frames):
            a, ln = table[rng.randrange(len(table))]
            dsts.append(a | (rng.getrandbits(32 - ln) if ln < 32 else 0))
        lookup = {}
        for (a, ln), h in zip(table, hop):
            lookup[(a, ln)] = h
        lens = sorted(set(ln for _, ln in table), reverse=True)

        def lpm(d):
            for ln in lens:
                h = lookup.get((d & (0xFFFFFFFF << (32 - ln)) & 0xFFFFFFFF, ln))
                if h is not None:
                    return h
            return None
        write_pcap(p, [clear_frame(d, k) for k, d in enumerate(dsts)])
        case.expect = [("out", lpm(d), d) for d in dsts]
    else:
        n = case.in_sas
        aeads = {}
        if case.series == "in-random":
            picks = pick_tunnels(n, "random", rng, frames)
            # one encrypted packet per SA, reused (replay window 0): sequence number = SA index + 1
            cache = {}
            for t in set(picks):
                aead = AESGCM(sa_key("in", t)[:16])
                inner = inner_ip(tunnel_net(t) + 1, ip4(be.LAN_PEER), t)
                cache[t] = esp_frame(aead, spi_of("in", t), t + 1, tunnel_remote(t), inner, t + 1)
            write_pcap(p, [cache[t] for t in picks])
            case.expect = [("in", t, tunnel_net(t) + 1) for t in picks]
        else:  # replay: one SA, sequence numbers 1..frames in order
            aead = aeads.setdefault(0, AESGCM(sa_key("in", 0)[:16]))
            src = tunnel_net(0) + 1
            write_pcap(p, [esp_frame(aead, spi_of("in", 0), k + 1, tunnel_remote(0),
                                     inner_ip(src, ip4(be.LAN_PEER), k), k + 1) for k in range(frames)])
            case.expect = [("in", 0, src)] * frames
    case.pcap = p
    be.log(f"curve: inputs {case.tag}: {frames} frames"
           f"{f', {case.routes} routes' if case.routes else ''} in {time.time() - t0:.1f} s")


# ----------------------------------------------------------------- check ---

def verify(espgw, work, hugepages, case, sample=64):
    """espgw on the finite pcap, net_pcap sink: as many frames out as in, every
    SA/route installed, and a sample decrypted (outbound: scapy's ESP, the
    tunnel's outer addresses and SPI; inbound: the cleartext from the SA's
    tunnel). Returns (ok, details)."""
    from scapy.all import rdpcap, IP, Ether
    from scapy.layers.ipsec import ESP, SecurityAssociation
    prefix = f"espgw-curve-verify-{os.getpid()}"
    sink = work / f"verify_{case.tag}_sink.pcap"
    sock = work / "verify.sock"
    cfgp = work / f"verify_{case.tag}.yaml"
    curve_config(cfgp, case.direction, f"net_pcap0,rx_pcap={case.pcap},tx_pcap=/dev/null",
                 f"net_pcap1,tx_pcap={sink}", prefix, sock, hugepages, case.tunnels, case.in_sas,
                 case.window, case.routes_file)
    want = len(case.expect)
    logp = work / f"verify_{case.tag}.log"
    inst = {}
    t0 = time.time()
    with open(logp, "w") as lf:
        p = subprocess.Popen([str(espgw), "--config", str(cfgp)], stdout=lf, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 180
            while time.time() < deadline and p.poll() is None:
                try:
                    if be.port_stats(prefix, 1)["opackets"] >= want:
                        break
                except (OSError, ValueError, KeyError, TypeError):
                    pass
                time.sleep(0.05)
            time.sleep(0.3)
            if p.poll() is None:
                inst = installed(sock)
        finally:
            be.stop(p)
            shutil.rmtree(f"/var/run/dpdk/{prefix}", ignore_errors=True)
    start_s = time.time() - t0
    out = list(rdpcap(str(sink))) if sink.exists() and sink.stat().st_size > 24 else []
    good = 0
    idx = sorted(random.Random(7).sample(range(min(len(out), want)), min(sample, len(out), want)))
    for k in idx:
        f = out[k]
        kind, t, d = case.expect[k]
        ip = f[IP]
        if kind == "out":
            if t is None or ip.src != LOCAL or ip.dst != ip4s(tunnel_remote(t)) or ip.proto != 50:
                continue
            if ip[ESP].spi != spi_of("out", t):
                continue
            sa = SecurityAssociation(ESP, spi=spi_of("out", t), crypt_algo="AES-GCM", crypt_key=sa_key("out", t),
                                     auth_algo="NULL", tunnel_header=IP(src=LOCAL, dst=ip.dst))
            try:
                inner = sa.decrypt(IP(bytes(ip)))
            except Exception:
                continue
            # (the TTL is decremented on the way: compare the UDP datagram)
            if inner[IP].dst == ip4s(d) and inner[IP].src == be.LAN_PEER and len(inner[IP]) == INNER_LEN \
                    and bytes(inner[IP].payload) == inner_ip(ip4(be.LAN_PEER), d, inner[IP].id)[20:]:
                good += 1
        else:
            if ip.proto == 17 and ip.src == ip4s(d) and ip.dst == be.LAN_PEER and len(ip) == INNER_LEN \
                    and f[Ether].dst == be.PEER_MAC:
                good += 1
    want_routes = case.routes if case.routes else case.tunnels
    ok = (len(out) == want and good == len(idx) and len(idx) > 0 and inst.get("tunnels") == case.tunnels
          and inst.get("tunnels_up") == case.tunnels and inst.get("sas_out") == case.tunnels
          and inst.get("sas_in") == case.in_sas and inst.get("routes") == want_routes
          and inst.get("routes_installed") == want_routes)
    det = {"frames_in": want, "frames_out": len(out), "sample": len(idx), "sample_ok": good,
           "seconds": round(start_s, 1), **inst}
    be.log(f"curve: verify {case.tag}: {want} in, {len(out)} out, sample {good}/{len(idx)} decrypted/checked; "
           f"tunnels {inst.get('tunnels_up')}/{case.tunnels} up, SAs out {inst.get('sas_out')} in {inst.get('sas_in')}, "
           f"routes {inst.get('routes_installed')}/{want_routes} -> {'OK' if ok else 'FAIL (' + str(logp) + ')'}")
    return ok, det


# ------------------------------------------------------------------- main ---

def run(a):
    t_start = time.time()
    counts = [int(x) for x in a.curve_counts.split(",")]
    route_counts = [int(x) for x in a.curve_routes.split(",")] if a.curve_routes else []
    windows = [int(x) for x in a.curve_windows.split(",")] if a.curve_windows else []
    frames = a.curve_frames // BURST * BURST
    interval = a.interval or 2.0
    warmup = a.warmup if a.warmup is not None else 1.0
    reps = a.reps
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(a.curve_seed)
    cases = make_cases(counts, route_counts, windows)
    est = sum(warmup + interval + 1.5 + c.tunnels / 1500 + (c.routes or 0) / 90_000 for c in cases) * reps
    est += len(cases) * 1.5 + 30
    be.log(f"curve plan: {len(cases)} cases x {reps} rep(s) of {warmup:g}+{interval:g} s, {frames} frames per pcap; "
           f"estimated {est / 60:.1f} min")
    memmode = "2MB hugepages" if a.hugepages else "--no-huge -m 1024"
    for c in cases:
        build_inputs(c, work, rng, frames)

    checks = {}
    if not a.no_verify:
        # the largest case of every series (the others differ only in count)
        biggest = {}
        for c in cases:
            if c.series not in biggest or (c.routes or c.tunnels) > (biggest[c.series].routes or biggest[c.series].tunnels) \
                    or (c.series == "replay" and c.window > biggest[c.series].window):
                biggest[c.series] = c
        for c in biggest.values():
            # the replay case's finite pcap passes once: all accepted
            ok, det = verify(a.espgw, work, a.hugepages, c)
            checks[c.tag] = {"ok": ok, **det}
            if not ok:
                be.log("curve: espgw's output did not verify: refusing to benchmark a broken path")
                return 2

    runs = {}
    logs = []
    for rep in range(reps):
        order = cases if rep % 2 == 0 else cases[::-1]
        for c in order:
            prefix = f"espgw-curve-{os.getpid()}"
            sock = work / "curve.sock"
            cfgp = work / f"run_{c.tag}.yaml"
            curve_config(cfgp, c.direction, f"net_pcap0,rx_pcap={c.pcap},infinite_rx=1,tx_pcap=/dev/null",
                         "net_null0,no-rx=1", prefix, sock, a.hugepages, c.tunnels, c.in_sas, c.window,
                         c.routes_file)
            sock.unlink(missing_ok=True)
            logp = work / f"run_{c.tag}_{rep}.log"
            logs.append(logp)
            t0 = time.time()
            mpps, rx_mpps, extra = be.measure(c.tag, [a.espgw, "--config", str(cfgp)], prefix, logp, warmup,
                                              interval, 1, start_timeout=240, probe=lambda: installed(sock),
                                              ready=lambda: forwarding(prefix, sock))
            runs.setdefault(c.tag, []).append({"mpps": mpps, "src_rx_mpps": rx_mpps, "seconds": round(time.time() - t0, 1),
                                               **extra})
            share = extra["worker_cpu_share"]
            be.log(f"curve rep {rep + 1}/{reps} {c.series:10} {c.x:>8}: {mpps:7.3f} Mpps (source rx {rx_mpps:.3f}); "
                   f"worker on CPU {share * 100 if share else float('nan'):3.0f}% -> "
                   f"{extra['mpps_per_cpu_s'] or float('nan'):.3f} Mpps/cpu; {time.time() - t0:.1f} s")

    micro = {}
    bench_esp = Path(a.build) / "bench" / "dataplane" / "bench_esp"
    if windows and bench_esp.exists():
        outp = work / "bench_esp_replay.json"
        pin = ["taskset", "-c", "1"] if (os.cpu_count() or 1) > 1 and shutil.which("taskset") else []
        r = subprocess.run(pin + [str(bench_esp), "--benchmark_filter=replay", f"--benchmark_out={outp}",
                                  "--benchmark_out_format=json", "--benchmark_min_time=0.05"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=300)
        if r.returncode == 0 and outp.exists():
            micro = {b["name"]: b.get("cyc/pkt") for b in json.loads(outp.read_text()).get("benchmarks", [])
                     if b.get("run_type") == "iteration"}

    hz = be.tsc_hz(logs)
    med = lambda xs: statistics.median(xs) if xs else None
    spread = lambda xs: (max(xs) - min(xs)) / statistics.median(xs) if len(xs) > 1 and statistics.median(xs) else 0.0
    rows = []
    for c in cases:
        rs = runs.get(c.tag, [])
        pc = [r["mpps_per_cpu_s"] for r in rs if r["mpps_per_cpu_s"]]
        mc = med(pc)
        # per RECEIVED packet: the replay rows drop nearly everything (REPLAY_NOTE)
        prx = [r["src_rx_mpps"] / r["worker_cpu_share"] for r in rs if r["worker_cpu_share"] and r["src_rx_mpps"]]
        mrx = med(prx)
        rows.append({"series": c.series, "x": c.x, "direction": c.direction, "tunnels": c.tunnels, "sas_in": c.in_sas,
                     "sas_out": c.tunnels, "routes": c.routes or c.tunnels, "replay_window": c.window,
                     "pattern": c.pattern, "mpps_median": med([r["mpps"] for r in rs]),
                     "mpps_per_worker_cpu_s_median": mc, "mpps_per_cpu_spread": spread(pc),
                     "worker_cpu_share_median": med([r["worker_cpu_share"] for r in rs if r["worker_cpu_share"]]),
                     "cycles_per_packet": hz / (mc * 1e6) if mc else None,
                     "rx_mpps_per_worker_cpu_s_median": mrx,
                     "cycles_per_rx_packet": hz / (mrx * 1e6) if mrx else None, "runs": rs})
    for r in rows:
        # the figure a series is read by: per packet sent, except replay (per packet received)
        r["cycles"] = r["cycles_per_rx_packet"] if r["series"] == "replay" else r["cycles_per_packet"]
    for r in rows:  # relative to the series' first point
        first = next(x for x in rows if x["series"] == r["series"])
        r["vs_first"] = r["cycles"] / first["cycles"] if r["cycles"] and first["cycles"] else None
    gates = {}
    for s in ("out-random", "out-burst", "in-random"):
        one = next((r for r in rows if r["series"] == s and r["x"] == 1), None)
        big = next((r for r in rows if r["series"] == s and r["x"] == 10000), None)
        if one and big and one["cycles_per_packet"] and big["cycles_per_packet"]:
            ratio = big["cycles_per_packet"] / one["cycles_per_packet"]
            gates[s] = {"ratio_10000_over_1": ratio, "limit": 1.3, "pass": ratio <= 1.3}

    result = {"mode": "curve", "tsc_hz": hz, "memory": memmode, "interval_s": interval, "warmup_s": warmup,
              "reps": reps, "frames_per_pcap": frames, "inner_ip_len": INNER_LEN, "algo": "aes128-gcm",
              "burst": BURST, "route_length_mix_percent": LEN_MIX, "nproc": os.cpu_count(),
              "loadavg_end": os.getloadavg(), "command": sys.argv, "seed": a.curve_seed,
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t_start)),
              "checks": checks, "gates": gates, "replay_note": REPLAY_NOTE, "bench_esp_replay_cyc_per_pkt": micro,
              "rows": rows}

    nan = float("nan")
    f = lambda v, fmt: format(v if v is not None else nan, fmt)
    print(f"\nespgw cost curve: AES-128-GCM, {INNER_LEN} B inner, 1 worker, {memmode}, median of {reps} x {interval:g} s "
          f"(after {warmup:g} s), TSC {hz / 1e6:.0f} MHz, load average {os.getloadavg()[0]:.1f}")
    hdr = f"{'series':10} {'count':>8} | {'Mpps':>6} {'cpu%':>4} {'Mpps/cpu':>8} {'sprd':>4} {'cyc/pkt':>7} {'vs 1st':>6} | dispositions"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        last = (r["runs"] or [{}])[-1].get("probe") or {}
        disp = ", ".join(f"{k} {v}" for k, v in sorted(last.get("drops", {}).items())) or "no drops"
        if r["series"] == "in-random" or r["series"] == "replay":
            disp = f"in SAs used {last.get('sas_in_used')}/{r['sas_in']}; " + disp
        elif r["series"] == "routes":
            disp = f"routes {last.get('routes_installed')}, tbl8 {last.get('tbl8_used')}; " + disp
        else:
            disp = f"out SAs used {last.get('sas_out_used')}/{r['sas_out']}; " + disp
        print(f"{r['series']:10} {r['x']:>8} | {f(r['mpps_median'], '6.3f')} "
              f"{f(r['worker_cpu_share_median'] and r['worker_cpu_share_median'] * 100, '4.0f')} "
              f"{f(r['mpps_per_worker_cpu_s_median'], '8.3f')} {f(r['mpps_per_cpu_spread'] * 100, '3.0f')}% "
              f"{f(r['cycles'], '7.0f')}{'*' if r['series'] == 'replay' else ' '}{f(r['vs_first'], '6.2f')} | {disp}")
    print("count: tunnels = SAs (out-*, in-random), routes (routes), replay window (replay). cyc/pkt: TSC Hz / Mpps per\n"
          "  second of worker CPU time. vs 1st: cyc/pkt over the series' first point. out-burst: one flow per 32-packet\n"
          "  burst; routes: 4 tunnels, random prefixes /16../32, random routed destinations. *: per packet RECEIVED\n"
          "  (replay: almost every packet is dropped at the window check, see below).")
    for s, g in gates.items():
        print(f"gate {s}: 10,000 SAs / 1 SA = {g['ratio_10000_over_1']:.2f} (limit 1.3) -> {'PASS' if g['pass'] else 'FAIL'}")
    if micro:
        print("bench_esp replay (accepting path, check + update), cyc/pkt: " +
              "  ".join(f"{k[7:]} {v:.1f}" for k, v in micro.items() if v is not None))
    print("\n".join(wrap_note(REPLAY_NOTE)))
    result["seconds"] = round(time.time() - t_start, 1)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"JSON: {a.out}  ({result['seconds'] / 60:.1f} min)")
    if a.chart:
        try:
            plot(result, a.chart)
            print(f"chart: {a.chart}")
        except Exception as e:
            be.log(f"chart failed: {e!r}")
    if not a.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def wrap_note(text, width=110):
    words, lines, cur = text.split(), [], ""
    for w in words:
        if len(cur) + len(w) + 1 > width:
            lines.append(cur)
            cur = "  " + w if lines else w
        else:
            cur = f"{cur} {w}" if cur else w
    return lines + [cur]


def plot(result, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = result["rows"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    labels = {"out-random": "outbound, random SA per packet", "out-burst": "outbound, one flow per 32-packet burst",
              "in-random": "inbound, random SPI per packet", "routes": "outbound, 4 tunnels, random destinations",
              "replay": "inbound, 1 SA, looping in-order pcap"}
    panels = [(axes[0], ("out-random", "out-burst", "in-random"), "tunnels = SAs"),
              (axes[1], ("routes",), "routes (random prefixes /16../32)"),
              (axes[2], ("replay",), "replay window (bits)")]
    for ax, series, xlabel in panels:
        for k, s in enumerate(series):
            pts = [(r["x"], r["cycles"]) for r in rows if r["series"] == s and r["cycles"]]
            if s == "replay":
                base = [y for x, y in pts if x == 0]
                pts = [(x, y) for x, y in pts if x > 0]
                if base:
                    ax.axhline(base[0], ls="--", color="grey", label="window 0 (no check, every packet decrypted)")
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o", label=labels[s] + (": refused as replays, per packet received"
                                                               if s == "replay" else ""))
                for x, y in pts:
                    ax.annotate(f"{y:.0f}", (x, y), textcoords="offset points", xytext=(0, 6 + 9 * k), ha="center",
                                fontsize=8, color=ax.lines[-1].get_color())
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("cycles / packet (worker CPU time)")
        ys_all = [y for ln in ax.lines for y in ln.get_ydata()]
        ax.set_ylim(bottom=0, top=max(ys_all) * 1.2 if ys_all else None)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    g = result.get("gates", {})
    gt = "; ".join(f"{s}: 10k/1 = {v['ratio_10000_over_1']:.2f}" for s, v in g.items())
    fig.suptitle(f"espgw cost curve: AES-128-GCM, {result['inner_ip_len']} B inner, 1 worker, median of "
                 f"{result['reps']} x {result['interval_s']:g} s, {result['memory']}" + (f"\n{gt} (limit 1.3)" if gt else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
