#!/usr/bin/python3
"""End-to-end throughput: espgw vs DPDK's ipsec-secgw on the same vdevs.

One worker on lcore 1, a net_pcap source with infinite_rx=1 and a net_null
sink (no-rx=1). For each direction (outbound: cleartext in, ESP out;
inbound: ESP in, cleartext out) and inner IP total length (64, 512, 1400 B),
both daemons run in turn (the order alternates between repetitions); after a
warm-up the sink port's TX packet counter is read twice through DPDK
telemetry (/ethdev/stats,N) and the rate is the difference over the interval.

Run it through scripts/bench_e2e.sh, which builds both programs first, or
directly with Debian's interpreter (scapy): /usr/bin/python3 scripts/bench_e2e.py -h
See bench/e2e/README.md."""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Addresses and keys shared by both daemons (bench-only, public keys).
LAN_MAC, WAN_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"
PEER_MAC, NH_MAC = "02:00:00:00:01:02", "02:00:00:00:02:fe"
LAN_PEER = "10.240.128.2"          # the LAN host behind the gateway
LAN_NET = "10.240.128.0/24"
LOCAL, REMOTE = "198.51.100.10", "203.0.113.1"   # tunnel endpoints
REMOTE_NET = "172.31.0.0/16"       # the tunnel's remote prefix
REMOTE_HOST = "172.31.1.1"
SPI_OUT, SPI_IN = 0x1001, 0x2001
KEY_OUT = bytes.fromhex("11" * 16 + "a1a1a1a1")   # AES-128 key || 4-byte salt
KEY_IN = bytes.fromhex("22" * 16 + "a1a1a1a1")
PCAP_PACKETS = 256                 # packets per source pcap (looped by net_pcap)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- traffic ---

def inner_packet(size, src, dst, i=0):
    from scapy.all import IP, UDP, Raw
    payload = size - 20 - 8
    assert payload >= 0
    return IP(src=src, dst=dst, ttl=64, id=i & 0xFFFF) / UDP(sport=10000 + (i % 64), dport=5001) / Raw(b"\x5a" * payload)


def sa_scapy(direction):
    from scapy.all import IP
    from scapy.layers.ipsec import ESP, SecurityAssociation
    if direction == "out":
        return SecurityAssociation(ESP, spi=SPI_OUT, crypt_algo="AES-GCM", crypt_key=KEY_OUT, auth_algo="NULL",
                                   tunnel_header=IP(src=LOCAL, dst=REMOTE))
    return SecurityAssociation(ESP, spi=SPI_IN, crypt_algo="AES-GCM", crypt_key=KEY_IN, auth_algo="NULL",
                               tunnel_header=IP(src=REMOTE, dst=LOCAL))


def write_pcap(path, frames):
    from scapy.all import PcapWriter
    w = PcapWriter(str(path), linktype=1, sync=False)
    for f in frames:
        w.write(f)
    w.close()


def make_pcaps(work, sizes, count=PCAP_PACKETS):
    """out_<size>.pcap: cleartext LAN -> remote prefix; in_<size>.pcap: the
    matching ESP (SPI_IN, sequence numbers 1..count) from the peer."""
    from scapy.all import Ether, IP
    files = {}
    sa_in = sa_scapy("in")
    for size in sizes:
        out = [Ether(src=PEER_MAC, dst=LAN_MAC) / inner_packet(size, LAN_PEER, REMOTE_HOST, i) for i in range(count)]
        inb = []
        for i in range(count):
            esp = sa_in.encrypt(inner_packet(size, REMOTE_HOST, LAN_PEER, i), seq_num=i + 1)
            inb.append(Ether(src=NH_MAC, dst=WAN_MAC) / IP(bytes(esp)))
        files[("out", size)] = work / f"out_{size}.pcap"
        files[("in", size)] = work / f"in_{size}.pcap"
        write_pcap(files[("out", size)], out)
        write_pcap(files[("in", size)], inb)
    return files


# ---------------------------------------------------------------- configs ---

def eal_mem(hugepages):
    if hugepages:
        return ["-m", "512", "--huge-unlink"]
    return ["--no-huge", "-m", "1024"]


def espgw_config(path, direction, src_dev, sink_dev, prefix, sock, hugepages):
    """One tunnel, one SA per direction. The source (net_pcap) is listed
    first so that it is DPDK port 0 and the sink port 1."""
    import yaml
    lan = {"name": "lan", "role": "protected", "addresses": ["10.240.128.1"], "mac": LAN_MAC, "peer_mac": PEER_MAC}
    wan = {"name": "wan", "role": "unprotected", "addresses": [LOCAL], "mac": WAN_MAC}
    if direction == "out":
        lan["device"], wan["device"] = src_dev, sink_dev
        ports = [lan, wan]
    else:
        wan["device"], lan["device"] = src_dev, sink_dev
        ports = [wan, lan]
    cfg = {
        "eal": ["-l", "0,1", "--no-pci", "--file-prefix", prefix, "--log-level", "lib.eal:error"] + eal_mem(hugepages),
        "workers": [1],
        "mbufs": 16384,
        "control": {"socket": str(sock)},
        "ports": ports,
        "tunnels": [{"name": "t1", "port": "wan", "local": LOCAL, "remote": REMOTE, "next_hop_mac": NH_MAC}],
        "routes": [{"prefix": REMOTE_NET, "via": [{"tunnel": "t1"}]}],
        "sas": [
            {"direction": "out", "spi": SPI_OUT, "tunnel": "t1", "algo": "aes128-gcm", "key": KEY_OUT.hex()},
            # window 0: the looping pcap repeats sequence numbers (ipsec-secgw's default is off too)
            {"direction": "in", "spi": SPI_IN, "tunnel": "t1", "algo": "aes128-gcm", "key": KEY_IN.hex(),
             "replay_window": 0},
        ],
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def secgw_config(path):
    k = lambda b: ":".join(f"{x:02x}" for x in b)
    path.write_text(f"""# espgw bench: one SA per direction, AES-128-GCM, IPv4 tunnel
sa out {SPI_OUT} aead_algo aes-128-gcm aead_key {k(KEY_OUT)} mode ipv4-tunnel src {LOCAL} dst {REMOTE}
sa in {SPI_IN} aead_algo aes-128-gcm aead_key {k(KEY_IN)} mode ipv4-tunnel src {REMOTE} dst {LOCAL}
sp ipv4 out esp protect {SPI_OUT} pri 1 dst {REMOTE_NET} sport 0:65535 dport 0:65535
sp ipv4 in esp protect {SPI_IN} pri 1 dst {LAN_NET} sport 0:65535 dport 0:65535
rt ipv4 dst {REMOTE}/32 port 1
rt ipv4 dst {LAN_NET} port 1
""")


def secgw_cmd(binary, direction, src_dev, sink_dev, prefix, cfg, hugepages, mode):
    # Port 0 is the source (net_pcap), port 1 the sink (net_null); -u marks
    # the unprotected (ESP) side: the sink outbound, the source inbound.
    cmd = [str(binary), "-l", "0,1", "-n", "1", "--no-pci", "--file-prefix", prefix, "--log-level", "lib.eal:error"]
    cmd += eal_mem(hugepages)
    cmd += ["--vdev", src_dev, "--vdev", sink_dev, "--vdev", "crypto_aesni_gcm0"]
    cmd += ["--", "-p", "0x3", "-u", "0x2" if direction == "out" else "0x1", "--config", "(0,0,1),(1,0,1)", "-f", str(cfg)]
    if mode == "librte_ipsec":
        cmd += ["-l"]
    return cmd


# -------------------------------------------------------------- telemetry ---

def telemetry(prefix, cmd):
    path = f"/var/run/dpdk/{prefix}/dpdk_telemetry.v2"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(5)
    s.connect(path)
    s.recv(1024)  # greeting
    s.send(cmd.encode())
    data = s.recv(1 << 16)
    s.close()
    return json.loads(data)


def port_stats(prefix, port):
    return telemetry(prefix, f"/ethdev/stats,{port}")["/ethdev/stats"]


def wait_telemetry(prefix, proc, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        try:
            ports = telemetry(prefix, "/ethdev/list")["/ethdev/list"]
            if len(ports) >= 2 and port_stats(prefix, 0)["ipackets"] > 0:
                return True
        except (OSError, ValueError, KeyError, TypeError):
            pass
        time.sleep(0.1)
    return False


def stop(proc, sig=signal.SIGTERM):
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def worker_cpu_ns(pid, name="rte-worker-1"):
    """CPU time (ns) the worker thread has run so far (/proc schedstat), or None."""
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/comm") as f:
                if f.read().strip() != name:
                    continue
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                return int(f.read().split()[0])
    except OSError:
        pass
    return None


def measure(name, cmd, prefix, logpath, warmup, interval):
    """Starts cmd, waits for traffic; returns (Mpps at the sink, rx Mpps at
    the source, extras: the worker thread's CPU share over the interval and
    the rate per second of worker CPU time)."""
    with open(logpath, "w") as lf:
        proc = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            if not wait_telemetry(prefix, proc):
                stop(proc)
                raise RuntimeError(f"{name} did not start (or no traffic): see {logpath}\n" + Path(logpath).read_text()[-3000:])
            time.sleep(warmup)
            a, ra, ta, ca = port_stats(prefix, 1), port_stats(prefix, 0), time.monotonic(), worker_cpu_ns(proc.pid)
            time.sleep(interval)
            b, rb, tb, cb = port_stats(prefix, 1), port_stats(prefix, 0), time.monotonic(), worker_cpu_ns(proc.pid)
        finally:
            stop(proc, signal.SIGINT)
            shutil.rmtree(f"/var/run/dpdk/{prefix}", ignore_errors=True)
    dt = tb - ta
    pkts = b["opackets"] - a["opackets"]
    cpu_s = (cb - ca) / 1e9 if ca is not None and cb is not None else None
    return pkts / dt / 1e6, (rb["ipackets"] - ra["ipackets"]) / dt / 1e6, \
        {"sink_tx_errors": b["oerrors"] - a["oerrors"], "src_imissed": rb["imissed"] - ra["imissed"],
         "src_nombuf": rb.get("rx_nombuf", 0) - ra.get("rx_nombuf", 0),
         "worker_cpu_share": cpu_s / dt if cpu_s else None,
         "mpps_per_cpu_s": pkts / cpu_s / 1e6 if cpu_s else None}


# ----------------------------------------------------------- verification ---

def verify_espgw(espgw, work, hugepages, sizes=(64, 1400)):
    """Runs espgw on a finite pcap with a net_pcap sink and checks the output
    with scapy: outbound decrypts to the input; inbound is the cleartext."""
    from scapy.all import rdpcap, IP, Ether
    from scapy.layers.ipsec import ESP
    ok = True
    for direction in ("out", "in"):
        for size in sizes:
            src = work / f"{direction}_{size}.pcap"
            sink = work / f"verify_{direction}_{size}_sink.pcap"
            srcout = work / f"verify_{direction}_{size}_srcout.pcap"
            prefix = f"espgw-bench-verify-{os.getpid()}"
            sock = work / "verify.sock"
            cfgp = work / f"verify_{direction}_{size}.yaml"
            espgw_config(cfgp, direction, f"net_pcap0,rx_pcap={src},tx_pcap={srcout}",
                         f"net_pcap1,tx_pcap={sink}", prefix, sock, hugepages)
            logp = work / f"verify_{direction}_{size}.log"
            with open(logp, "w") as lf:
                p = subprocess.Popen([str(espgw), "--config", str(cfgp)], stdout=lf, stderr=subprocess.STDOUT)
                try:
                    deadline = time.time() + 20
                    while time.time() < deadline and p.poll() is None:
                        try:
                            if port_stats(prefix, 1)["opackets"] >= PCAP_PACKETS:
                                break
                        except (OSError, ValueError, KeyError, TypeError):
                            pass
                        time.sleep(0.1)
                    time.sleep(0.3)
                finally:
                    stop(p)
                    shutil.rmtree(f"/var/run/dpdk/{prefix}", ignore_errors=True)
            out = rdpcap(str(sink)) if sink.exists() and sink.stat().st_size > 24 else []
            orig = rdpcap(str(src))
            good = 0
            if direction == "out":
                if out and ESP in out[0]:
                    log(f"  first output frame: {len(out[0])} B on the wire, outer {out[0][IP].src} > "
                        f"{out[0][IP].dst}, ESP spi {out[0][ESP].spi:#x} seq {out[0][ESP].seq}")
                sa = sa_scapy("out")
                for f in out:
                    ip = f[IP]
                    if ip.proto != 50 or ip.src != LOCAL or ip.dst != REMOTE or f[ESP].spi != SPI_OUT:
                        continue
                    try:
                        inner = sa.decrypt(ip)
                    except Exception:
                        continue
                    from scapy.all import UDP
                    if inner[IP].src == LAN_PEER and inner[IP].dst == REMOTE_HOST and inner[IP].len == size \
                            and UDP in inner and bytes(inner[UDP]) == bytes(orig[good][IP][UDP]):
                        good += 1
            else:
                for f in out:
                    ip = f[IP]
                    if ip.proto == 17 and ip.dst == LAN_PEER and len(ip) == size and f[Ether].dst == PEER_MAC:
                        good += 1
            res = "OK" if good == len(orig) and len(out) == len(orig) else "FAIL"
            ok &= res == "OK"
            log(f"verify espgw {direction} {size} B: {len(orig)} in, {len(out)} out, {good} check -> {res}"
                + ("" if res == "OK" else f" (log {logp})"))
    return ok


# ------------------------------------------------------------------- main ---

def tsc_hz(logs):
    for lp in logs:
        try:
            for line in Path(lp).read_text().splitlines():
                if "TSC frequency is" in line:  # EAL log: "TSC frequency is ~2596000 KHz"
                    return int(line.split("~")[1].split()[0]) * 1000
        except OSError:
            pass
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("cpu MHz"):
                return float(line.split(":")[1]) * 1e6
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--espgw", default=str(REPO / "build-bench" / "control" / "espgw"))
    ap.add_argument("--secgw", default="/tmp/secgw-build/build/ipsec-secgw")
    ap.add_argument("--quick", action="store_true", help="2 s intervals, 1 s warm-up")
    ap.add_argument("--hugepages", action="store_true", help="run both without --no-huge (hugepages reserved by the caller)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--interval", type=float)
    ap.add_argument("--warmup", type=float)
    ap.add_argument("--sizes", default="64,512,1400")
    ap.add_argument("--dirs", default="out,in")
    ap.add_argument("--impls", default="espgw,secgw")
    ap.add_argument("--secgw-mode", choices=["legacy", "librte_ipsec"], default="legacy")
    ap.add_argument("--no-verify", action="store_true", help="skip the scapy check of espgw's output")
    ap.add_argument("--work", default=f"/tmp/espgw-bench-{os.getpid()}")
    ap.add_argument("--out", default=str(REPO / "bench" / "e2e" / "results.json"))
    a = ap.parse_args()
    interval = a.interval or (2.0 if a.quick else 5.0)
    warmup = a.warmup if a.warmup is not None else (1.0 if a.quick else 2.0)
    sizes = [int(s) for s in a.sizes.split(",")]
    dirs = a.dirs.split(",")
    impls = a.impls.split(",")
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    memmode = "2MB hugepages" if a.hugepages else "--no-huge -m 1024"

    log(f"generating pcaps in {work} ...")
    files = make_pcaps(work, sizes)
    if not a.no_verify and "espgw" in impls:
        if not verify_espgw(a.espgw, work, a.hugepages, sizes=[s for s in (64, 1400) if s in sizes] or sizes[:1]):
            log("espgw's output did not verify: refusing to benchmark a broken path")
            return 2
    secgw_cfg = work / "secgw.cfg"
    secgw_config(secgw_cfg)

    rows = {}
    logs = []
    for rep in range(a.reps):
        order = impls if rep % 2 == 0 else impls[::-1]
        for d in dirs:
            for size in sizes:
                for impl in order:
                    prefix = f"espgw-bench-{impl}-{os.getpid()}"
                    src_dev = f"net_pcap0,rx_pcap={files[(d, size)]},infinite_rx=1"
                    sink_dev = "net_null0,no-rx=1"
                    logp = work / f"{impl}_{d}_{size}_{rep}.log"
                    logs.append(logp)
                    if impl == "espgw":
                        cfgp = work / f"espgw_{d}_{size}.yaml"
                        espgw_config(cfgp, d, src_dev + ",tx_pcap=/dev/null", sink_dev, prefix, work / "espgw.sock",
                                     a.hugepages)
                        cmd = [a.espgw, "--config", str(cfgp)]
                    else:
                        # ipsec-secgw wants one TX queue per lcore on every port: two tx_pcap queues
                        cmd = secgw_cmd(a.secgw, d, src_dev + ",tx_pcap=/dev/null,tx_pcap=/dev/null", sink_dev, prefix,
                                        secgw_cfg, a.hugepages, a.secgw_mode)
                    mpps, rx_mpps, extra = measure(impl, cmd, prefix, logp, warmup, interval)
                    rows.setdefault((d, size, impl), []).append({"mpps": mpps, "src_rx_mpps": rx_mpps, **extra})
                    share = extra["worker_cpu_share"]
                    log(f"rep {rep + 1}/{a.reps} {d:3} {size:5} B {impl:6}: {mpps:7.3f} Mpps at the sink "
                        f"(source rx {rx_mpps:.3f}); worker on CPU {share * 100 if share else float('nan'):3.0f}% "
                        f"-> {extra['mpps_per_cpu_s'] or float('nan'):.3f} Mpps per worker CPU-second")

    hz = tsc_hz(logs)
    result = {"memory": memmode, "tsc_hz": hz, "interval_s": interval, "warmup_s": warmup, "reps": a.reps,
              "worker_cores": 1, "secgw_mode": a.secgw_mode, "pcap_packets": PCAP_PACKETS,
              "loadavg": os.getloadavg(), "rows": []}
    print(f"\nespgw vs ipsec-secgw ({a.secgw_mode}), 1 worker core, {memmode}, AES-128-GCM tunnel, "
          f"median of {a.reps} x {interval:g} s (after {warmup:g} s warm-up), TSC {hz / 1e6:.0f} MHz, "
          f"load average {os.getloadavg()[0]:.1f}")
    sub = f"{'Mpps':>6} {'cpu%':>4} {'Mpps/cpu':>8} {'cyc/pkt':>7} {'Gbps':>5}"
    hdr = f"{'dir':3} {'size':>5} | espgw {sub} | secgw {sub} | ratio wall cpu"
    print(hdr)
    print("-" * len(hdr))
    med = lambda xs: statistics.median(xs) if xs else None
    for d in dirs:
        for size in sizes:
            r = {"direction": "outbound" if d == "out" else "inbound", "inner_ip_len": size}
            cells = []
            for impl in ("espgw", "secgw"):
                runs = rows.get((d, size, impl))
                if not runs:
                    cells.append(f"{'-':>6} {'-':>4} {'-':>8} {'-':>7} {'-':>5}")
                    continue
                m = med([x["mpps"] for x in runs])
                mc = med([x["mpps_per_cpu_s"] for x in runs if x["mpps_per_cpu_s"]])
                share = med([x["worker_cpu_share"] for x in runs if x["worker_cpu_share"]])
                # cycles per packet from the worker's own CPU time (robust to
                # time stolen by other processes); falls back to wall time
                cyc = hz / (mc * 1e6) if mc else (hz / (m * 1e6) if m > 0 else float("inf"))
                gbps = m * size * 8 / 1000
                r[impl] = {"mpps_median": m, "mpps_per_worker_cpu_s_median": mc, "worker_cpu_share_median": share,
                           "cycles_per_packet": cyc, "cycles_per_packet_wall": hz / (m * 1e6) if m > 0 else None,
                           "inner_gbps": gbps, "runs": runs}
                cells.append(f"{m:6.3f} {share * 100 if share else float('nan'):4.0f} {mc or float('nan'):8.3f} "
                             f"{cyc:7.0f} {gbps:5.2f}")
            both = "espgw" in r and "secgw" in r
            rw = r["espgw"]["mpps_median"] / r["secgw"]["mpps_median"] if both and r["secgw"]["mpps_median"] else None
            rc = r["espgw"]["mpps_per_worker_cpu_s_median"] / r["secgw"]["mpps_per_worker_cpu_s_median"] \
                if both and r["espgw"]["mpps_per_worker_cpu_s_median"] and r["secgw"]["mpps_per_worker_cpu_s_median"] \
                else None
            r["ratio_espgw_secgw"] = rw
            r["ratio_espgw_secgw_per_cpu"] = rc
            nan = float("nan")
            print(f"{d:3} {size:5} |       {cells[0]} |       {cells[1]} | {rw or nan:5.2f} {rc or nan:4.2f}")
            result["rows"].append(r)
    print("Mpps: packets/s leaving the sink port (net_null TX counter, DPDK telemetry), median of the runs.\n"
          "cpu%: share of the interval the worker thread (rte-worker-1) was on a CPU (/proc schedstat); below 100%\n"
          "  other processes took the core. Mpps/cpu: packets per second of worker CPU time. cyc/pkt: TSC Hz / that\n"
          "  rate (1 core). Gbps: inner IP bytes (IP total length) x 8 x Mpps. ratio: espgw / secgw, wall-clock\n"
          "  Mpps and per worker CPU-second (>1: espgw faster).")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"JSON: {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
