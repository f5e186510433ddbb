#!/usr/bin/python3
"""End-to-end throughput: espgw vs DPDK's ipsec-secgw and the I/O + crypto limit.

One worker on lcore 1, a net_pcap source with infinite_rx=1 and a net_null
sink (no-rx=1). For each row (direction, AES-128/256-GCM, ESP or ESP-in-UDP,
inner IP total length 64/512/1400 B or IMIX) the programs run in turn (the
order alternates between repetitions): espgw, ipsec-secgw (same SAs, same
pcap) and dpdk-testpmd in io mode (the I/O-only cost, same pcap, same
source and sink). After a warm-up the port counters are read twice through
DPDK telemetry (/ethdev/stats,N); the rate is the difference over the
interval, and the worker thread's CPU time over the same interval
(/proc/PID/task/TID/schedstat) gives the per-CPU-second rate and cycles per
packet. dpdk-test-crypto-perf (crypto_aesni_gcm PMD) gives the crypto-only
cycles per operation at the same ESP payload sizes, and the Google Benchmark
micro-benchmarks can be run into the same JSON (--micro).

Run it through scripts/bench.sh (builds, hugepages, chart) or
scripts/bench_e2e.sh, or directly with Debian's interpreter:
/usr/bin/python3 scripts/bench_e2e.py -h.  See bench/README.md and
bench/e2e/README.md."""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Addresses and keys shared by every program (bench-only, public keys).
LAN_MAC, WAN_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"
PEER_MAC, NH_MAC = "02:00:00:00:01:02", "02:00:00:00:02:fe"
LAN_PEER = "10.240.128.2"          # the LAN host behind the gateway
LAN_NET = "10.240.128.0/24"
LOCAL, REMOTE = "198.51.100.10", "203.0.113.1"   # tunnel endpoints
REMOTE_NET = "172.31.0.0/16"       # the tunnel's remote prefix
REMOTE_HOST = "172.31.1.1"
SPI_OUT, SPI_IN = 0x1001, 0x2001
NATT_PORT = 4500
SALT = "a1a1a1a1"
KEYS = {  # key || 4-byte salt, per (direction, algo)
    ("out", "aes128"): bytes.fromhex("11" * 16 + SALT), ("in", "aes128"): bytes.fromhex("22" * 16 + SALT),
    ("out", "aes256"): bytes.fromhex("11" * 32 + SALT), ("in", "aes256"): bytes.fromhex("22" * 32 + SALT),
}
KEY_OUT, KEY_IN = KEYS[("out", "aes128")], KEYS[("in", "aes128")]   # (older callers)
PCAP_PACKETS = 256                 # packets per fixed-size source pcap (looped by net_pcap)
# IMIX: 7:4:1 of 64/570/1518-byte Ethernet frames (the usual convention counts
# the 4-byte FCS, which a pcap does not hold): IP total length = frame - 18.
IMIX_FRAMES = (64, 570, 1518)
IMIX_IP = tuple(f - 18 for f in IMIX_FRAMES)                    # 46, 552, 1500
IMIX_WEIGHTS = (7, 4, 1)
IMIX_PATTERN = (0, 0, 1, 0, 0, 1, 0, 2, 0, 1, 0, 1)           # one 12-frame cycle, 7:4:1
IMIX_PACKETS = 21 * len(IMIX_PATTERN)                           # 252
IMIX_MEAN_IP = sum(s * w for s, w in zip(IMIX_IP, IMIX_WEIGHTS)) / sum(IMIX_WEIGHTS)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def size_label(size):
    return "imix" if size == "imix" else str(size)


def mean_ip_len(size):
    return IMIX_MEAN_IP if size == "imix" else size


def inner_lengths(size, count=PCAP_PACKETS):
    """IP total lengths of the packets of one source pcap, in order (count:
    fixed sizes only)."""
    if size == "imix":
        return [IMIX_IP[IMIX_PATTERN[i % len(IMIX_PATTERN)]] for i in range(IMIX_PACKETS)]
    return [size] * count


def esp_payload_len(ip_len):
    """What AES-GCM encrypts for one packet: inner IP + pad length + next
    header, padded to 4 bytes (RFC 4303)."""
    return (ip_len + 2 + 3) // 4 * 4


# ---------------------------------------------------------------- traffic ---

def inner_packet(size, src, dst, i=0):
    from scapy.all import IP, UDP, Raw
    payload = size - 20 - 8
    assert payload >= 0
    return IP(src=src, dst=dst, ttl=64, id=i & 0xFFFF) / UDP(sport=10000 + (i % 64), dport=5001) / Raw(b"\x5a" * payload)


def sa_scapy(direction, algo="aes128", encap="esp", natt=None):
    """scapy SA of the given direction. natt=None: follow encap; decrypting
    ESP-in-UDP is done on a rebuilt IP/ESP packet with natt=False."""
    from scapy.all import IP, UDP
    from scapy.layers.ipsec import ESP, SecurityAssociation
    use_natt = (encap == "udp") if natt is None else natt
    extra = {"nat_t_header": UDP(sport=NATT_PORT, dport=NATT_PORT)} if use_natt else {}
    if direction == "out":
        return SecurityAssociation(ESP, spi=SPI_OUT, crypt_algo="AES-GCM", crypt_key=KEYS[("out", algo)],
                                   auth_algo="NULL", tunnel_header=IP(src=LOCAL, dst=REMOTE), **extra)
    return SecurityAssociation(ESP, spi=SPI_IN, crypt_algo="AES-GCM", crypt_key=KEYS[("in", algo)],
                               auth_algo="NULL", tunnel_header=IP(src=REMOTE, dst=LOCAL), **extra)


def write_pcap(path, frames):
    from scapy.all import PcapWriter
    w = PcapWriter(str(path), linktype=1, sync=False)
    for f in frames:
        w.write(f)
    w.close()


def make_pcaps(work, sizes, algos=("aes128",), encaps=("esp",), dirs=("out", "in"), count=PCAP_PACKETS):
    """out_<size>.pcap: cleartext LAN -> remote prefix (the same for every
    algo/encap); in_<algo>_<encap>_<size>.pcap: the matching ESP (SPI_IN,
    sequence numbers 1..count) from the peer. Packet i's inner IPv4
    identification is i. Returns {(dir, algo, encap, size): path}."""
    from scapy.all import Ether, IP, UDP, Raw
    files = {}
    for size in sizes:
        lens = inner_lengths(size, count)
        out_path = work / f"out_{size_label(size)}.pcap"
        if "out" in dirs:
            write_pcap(out_path, [Ether(src=PEER_MAC, dst=LAN_MAC) / inner_packet(n, LAN_PEER, REMOTE_HOST, i)
                                  for i, n in enumerate(lens)])
        for algo in algos:
            for encap in encaps:
                files[("out", algo, encap, size)] = out_path
                if "in" not in dirs:
                    continue
                # ESP-in-UDP is wrapped here: scapy 2.5's nat_t_header leaves UDP length 8
                sa_in = sa_scapy("in", algo, encap, natt=False)
                inb = []
                for i, n in enumerate(lens):
                    esp = IP(bytes(sa_in.encrypt(inner_packet(n, REMOTE_HOST, LAN_PEER, i), seq_num=i + 1)))
                    if encap == "udp":
                        esp = IP(src=esp.src, dst=esp.dst, ttl=esp.ttl, id=esp.id) / \
                            UDP(sport=NATT_PORT, dport=NATT_PORT, chksum=0) / Raw(bytes(esp.payload))
                    inb.append(Ether(src=NH_MAC, dst=WAN_MAC) / IP(bytes(esp)))
                p = work / f"in_{algo}_{encap}_{size_label(size)}.pcap"
                write_pcap(p, inb)
                files[("in", algo, encap, size)] = p
    return files


# ---------------------------------------------------------------- configs ---

def eal_mem(hugepages):
    if hugepages:
        return ["-m", "512", "--huge-unlink"]
    return ["--no-huge", "-m", "1024"]


def lcore_args(workers):
    """EAL core list for the main lcore 0 plus `workers` worker lcores 1..N.
    With fewer CPUs than that, the extra lcores share CPUs (--lcores
    lcore@cpu): correct, but no scaling to measure."""
    ncpu = os.cpu_count() or 1
    if workers + 1 <= ncpu:
        return ["-l", f"0-{workers}"]
    spare = list(range(1, ncpu)) or [0]
    m = ["0@0"] + [f"{w}@{spare[(w - 1) % len(spare)]}" for w in range(1, workers + 1)]
    return ["--lcores", ",".join(m)]


def bench_ports(direction, src_dev, sink_dev):
    """espgw's two ports, the source (net_pcap) first so that it is DPDK port
    0 and the sink port 1. MTU 1600, as ipsec-secgw gets (secgw_cmd): IMIX's
    1500-byte inner packets need no fragmentation, and the mbufs stay 2 KB
    (an MTU of 9000 made espgw's mbufs 9 KB, spreading each burst's packet
    data over five times the memory)."""
    lan = {"name": "lan", "role": "protected", "addresses": ["10.240.128.1"], "mac": LAN_MAC, "peer_mac": PEER_MAC,
           "mtu": 1600, "device": src_dev if direction == "out" else sink_dev}
    wan = {"name": "wan", "role": "unprotected", "addresses": [LOCAL], "mac": WAN_MAC, "mtu": 1600,
           "device": sink_dev if direction == "out" else src_dev}
    return [lan, wan] if direction == "out" else [wan, lan]


def espgw_config(path, direction, src_dev, sink_dev, prefix, sock, hugepages, algo="aes128", encap="esp",
                 workers=1):
    """One tunnel, one SA per direction. The source (net_pcap) is listed
    first so that it is DPDK port 0 and the sink port 1 (bench_ports: MTU
    1600 on both)."""
    import yaml
    ports = bench_ports(direction, src_dev, sink_dev)
    tunnel = {"name": "t1", "port": "wan", "local": LOCAL, "remote": REMOTE, "next_hop_mac": NH_MAC}
    if encap == "udp":
        tunnel["udp_encap"] = True
    name = {"aes128": "aes128-gcm", "aes256": "aes256-gcm"}[algo]
    cfg = {
        "eal": lcore_args(workers) + ["--no-pci", "--file-prefix", prefix, "--log-level", "lib.eal:error"]
        + eal_mem(hugepages),
        "workers": list(range(1, workers + 1)),
        "mbufs": 16384,
        "control": {"socket": str(sock)},
        "ports": ports,
        "tunnels": [tunnel],
        "routes": [{"prefix": REMOTE_NET, "via": [{"tunnel": "t1"}]}],
        "sas": [
            {"direction": "out", "spi": SPI_OUT, "tunnel": "t1", "algo": name, "key": KEYS[("out", algo)].hex()},
            # window 0: the looping pcap repeats sequence numbers (ipsec-secgw's default is off too)
            {"direction": "in", "spi": SPI_IN, "tunnel": "t1", "algo": name, "key": KEYS[("in", algo)].hex(),
             "replay_window": 0},
        ],
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def secgw_config(path, algo="aes128", encap="esp"):
    k = lambda b: ":".join(f"{x:02x}" for x in b)
    a = {"aes128": "aes-128-gcm", "aes256": "aes-256-gcm"}[algo]
    ue = " udp-encap" if encap == "udp" else ""
    path.write_text(f"""# espgw bench: one SA per direction, {a}, IPv4 tunnel
sa out {SPI_OUT} aead_algo {a} aead_key {k(KEYS[("out", algo)])} mode ipv4-tunnel src {LOCAL} dst {REMOTE}{ue}
sa in {SPI_IN} aead_algo {a} aead_key {k(KEYS[("in", algo)])} mode ipv4-tunnel src {REMOTE} dst {LOCAL}{ue}
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
    # --mtu 1600: ipsec-secgw frees packets longer than its MTU (default 1500) when
    # fragmentation is off; IMIX's 1500-byte inner packets are ~1550 B once
    # encrypted. 1600 + Ethernet + headroom still fits one 2 KB mbuf (no multi-seg).
    cmd += ["--", "-p", "0x3", "-u", "0x2" if direction == "out" else "0x1", "--config", "(0,0,1),(1,0,1)", "-f", str(cfg),
            "--mtu", "1600"]
    if mode == "librte_ipsec":
        cmd += ["-l"]
    return cmd


def testpmd_cmd(binary, src_dev, sink_dev, prefix, hugepages):
    """I/O only: testpmd io forwarding from the source to the sink, one
    forwarding lcore (1). --stats-period keeps it running with stdin at EOF."""
    cmd = [str(binary), "-l", "0,1", "-n", "1", "--no-pci", "--file-prefix", prefix, "--log-level", "lib.eal:error"]
    cmd += eal_mem(hugepages)
    cmd += ["--vdev", src_dev, "--vdev", sink_dev, "--", "--forward-mode=io", "--nb-cores=1",
            "--total-num-mbufs=16384", "--stats-period", "3600"]
    return cmd


def probe_secgw_udp(binary, work, hugepages):
    """ipsec-secgw 22.11 accepts `udp-encap` only for rte_security sessions
    (inline crypto/protocol, lookaside protocol); with a plain cryptodev
    (crypto_aesni_gcm, lookaside-none) its SA parser refuses. Start it once
    with such a config: returns None if it runs, else the reason."""
    cfg = work / "secgw_probe_udp.cfg"
    secgw_config(cfg, "aes128", "udp")
    pcap = work / "out_64.pcap"
    if not pcap.exists():
        return "no probe pcap"
    prefix = f"espgw-bench-probe-{os.getpid()}"
    cmd = secgw_cmd(binary, "out", f"net_pcap0,rx_pcap={pcap},infinite_rx=1,tx_pcap=/dev/null,tx_pcap=/dev/null",
                    "net_null0,no-rx=1", prefix, cfg, hugepages, "legacy")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    try:
        ok = wait_telemetry(prefix, p, timeout=15)
    finally:
        stop(p, signal.SIGINT)
        shutil.rmtree(f"/var/run/dpdk/{prefix}", ignore_errors=True)
    out = p.stdout.read() if p.stdout else ""
    if ok:
        return None
    m = re.search(r"error: (.*)", out)
    return ("ipsec-secgw refuses udp-encap here: '" + m.group(1).strip() + "' (22.11's sa.c accepts it only for "
            "rte_security sessions: inline crypto/protocol or lookaside protocol; the crypto_aesni_gcm "
            "cryptodev is lookaside-none)") if m else "ipsec-secgw did not start with udp-encap"


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
        time.sleep(0.05)
    return False


def stop(proc, sig=signal.SIGTERM):
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def worker_cpu_ns(pid, names=("rte-worker-1",)):
    """CPU time (ns) the named threads have run so far (/proc schedstat,
    summed), or None when none of them is found."""
    total, found = 0, False
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{t}/comm") as f:
                    if f.read().strip() not in names:
                        continue
                with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                    total += int(f.read().split()[0])
                    found = True
            except OSError:
                continue
    except OSError:
        pass
    return total if found else None


def measure(name, cmd, prefix, logpath, warmup, interval, workers=1, start_timeout=30, probe=None, ready=None):
    """Starts cmd, waits for traffic; returns (Mpps at the sink, rx Mpps at
    the source, extras: the worker threads' CPU share over the interval and
    the rate per second of worker CPU time). probe: called after the
    interval, before the stop; its result lands in extras["probe"]. ready:
    also waited for before the warm-up (net_pcap's infinite_rx may count
    received packets before the program forwards any)."""
    names = tuple(f"rte-worker-{i}" for i in range(1, workers + 1))
    probed = None
    with open(logpath, "w") as lf:
        proc = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            if not wait_telemetry(prefix, proc, timeout=start_timeout):
                stop(proc)
                raise RuntimeError(f"{name} did not start (or no traffic): see {logpath}\n" + Path(logpath).read_text()[-3000:])
            deadline = time.time() + start_timeout
            while ready and not ready():
                if proc.poll() is not None or time.time() > deadline:
                    stop(proc)
                    raise RuntimeError(f"{name} did not become ready: see {logpath}\n" + Path(logpath).read_text()[-3000:])
                time.sleep(0.05)
            time.sleep(warmup)
            a, ra, ta, ca = port_stats(prefix, 1), port_stats(prefix, 0), time.monotonic(), worker_cpu_ns(proc.pid, names)
            time.sleep(interval)
            b, rb, tb, cb = port_stats(prefix, 1), port_stats(prefix, 0), time.monotonic(), worker_cpu_ns(proc.pid, names)
            if probe:
                try:
                    probed = probe()
                except (OSError, ValueError) as e:
                    probed = {"error": repr(e)}
        finally:
            stop(proc, signal.SIGINT)
            shutil.rmtree(f"/var/run/dpdk/{prefix}", ignore_errors=True)
    dt = tb - ta
    pkts = b["opackets"] - a["opackets"]
    cpu_s = (cb - ca) / 1e9 if ca is not None and cb is not None else None
    return pkts / dt / 1e6, (rb["ipackets"] - ra["ipackets"]) / dt / 1e6, \
        {"sink_tx_errors": b["oerrors"] - a["oerrors"], "src_imissed": rb["imissed"] - ra["imissed"],
         "src_nombuf": rb.get("rx_nombuf", 0) - ra.get("rx_nombuf", 0),
         "worker_cpu_share": cpu_s / dt / workers if cpu_s else None,
         "mpps_per_cpu_s": pkts / cpu_s / 1e6 if cpu_s else None, **({"probe": probed} if probe else {})}


# ------------------------------------------------------------ crypto-perf ---

def gcm_floor(binary, algo, op, sizes, quick):
    """The one-shot IPsec-MB GCM call on L1-resident buffers, pinned to the
    worker's CPU: {size: cycles}. The floor under espgw's crypto."""
    cpu = "1" if (os.cpu_count() or 1) > 1 else "0"
    cmd = ["taskset", "-c", cpu, str(binary), "--algo", algo, "--op", op,
           "--rounds", "10" if quick else "50", "--calls", "10000"] + [str(s) for s in sizes]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120).stdout
    return {r["bytes"]: r["cycles"] for r in map(json.loads, out.split("\n")[:-1])}


def crypto_perf(binary, algo, op, buf_sz, total_ops, hugepages, logpath):
    """One dpdk-test-crypto-perf throughput run (crypto_aesni_gcm, AAD 8,
    IV 12, ICV 16, burst 32, worker lcore 1). Returns (cycles/op from its
    Cycles/Buf column, cycles/op of worker CPU time or None, Mops)."""
    prefix = f"espgw-bench-cperf-{os.getpid()}"
    cmd = [binary, "-l", "0,1", "--no-pci", "--file-prefix", prefix, "--vdev", "crypto_aesni_gcm0",
           "--log-level=lib.eal:error"] + eal_mem(hugepages) + [
        "--", "--ptest", "throughput", "--devtype", "crypto_aesni_gcm", "--optype", "aead",
        "--aead-algo", "aes-gcm", "--aead-op", op, "--aead-key-sz", "16" if algo == "aes128" else "32",
        "--aead-iv-sz", "12", "--aead-aad-sz", "8", "--digest-sz", "16", "--buffer-sz", str(buf_sz),
        "--burst-sz", "32", "--total-ops", str(total_ops)]
    cpu = {"ns": None}
    with open(logpath, "w") as lf:
        p = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

        def poll():  # the worker thread's CPU time, sampled until it exits
            while p.poll() is None:
                v = worker_cpu_ns(p.pid)
                if v is not None:
                    cpu["ns"] = v
                time.sleep(0.005)
        th = threading.Thread(target=poll, daemon=True)
        th.start()
        try:
            p.wait(timeout=300)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        th.join()
    shutil.rmtree(f"/var/run/dpdk/{prefix}", ignore_errors=True)
    text = Path(logpath).read_text(errors="replace")
    for line in text.splitlines():
        f = line.split()
        if len(f) == 10 and all(re.fullmatch(r"[0-9.]+", x) for x in f) and int(f[1]) == buf_sz:
            if int(f[4]) == 0:
                raise RuntimeError(f"crypto-perf dequeued nothing ({logpath})")
            return float(f[9]), cpu["ns"], float(f[7])
    raise RuntimeError(f"no crypto-perf throughput row in {logpath}:\n{text[-2000:]}")


# ----------------------------------------------------------- verification ---

def decrypt_esp(sa_plain, frame):
    """Decrypts an outbound frame (IP/ESP or IP/UDP(4500)/ESP) with scapy."""
    from scapy.all import IP, UDP
    from scapy.layers.ipsec import ESP
    ip = frame[IP]
    if ip.proto == 17:
        if ip[UDP].dport != NATT_PORT or ip[UDP].sport != NATT_PORT or ip[UDP].len != ip.len - 4 * ip.ihl:
            raise ValueError("not NAT-T (or bad UDP length)")
        ip = IP(src=ip.src, dst=ip.dst, proto=50) / ESP(bytes(ip[UDP].payload))
    elif ip.proto != 50:
        raise ValueError("not ESP")
    return sa_plain.decrypt(IP(bytes(ip)))


def verify_espgw(espgw, work, hugepages, files, sizes=(64, 1400), algos=("aes128",), encaps=("esp",),
                 dirs=("out", "in"), workers=1):
    """Runs espgw on the finite pcaps with a net_pcap sink and checks the
    output with scapy: outbound decrypts to the input; inbound is the
    cleartext. With workers > 1 the source has one rx_pcap (queue) per
    worker and the sink one tx_pcap per worker."""
    from scapy.all import rdpcap, IP, Ether, UDP
    from scapy.layers.ipsec import ESP
    ok = True
    for algo in algos:
        for encap in encaps:
            for direction in dirs:
                for size in sizes:
                    src = files[(direction, algo, encap, size)]
                    tag = f"{direction}_{algo}_{encap}_{size_label(size)}_w{workers}"
                    sinks = [work / f"verify_{tag}_sink{q}.pcap" for q in range(workers)]
                    prefix = f"espgw-bench-verify-{os.getpid()}"
                    cfgp = work / f"verify_{tag}.yaml"
                    src_dev = "net_pcap0," + ",".join(f"rx_pcap={src}" for _ in range(workers)) + "," + \
                        ",".join("tx_pcap=/dev/null" for _ in range(workers))
                    sink_dev = "net_pcap1," + ",".join(f"tx_pcap={s}" for s in sinks)
                    espgw_config(cfgp, direction, src_dev, sink_dev, prefix, work / "verify.sock", hugepages, algo,
                                 encap, workers)
                    logp = work / f"verify_{tag}.log"
                    lens = inner_lengths(size)
                    want = len(lens) * workers
                    with open(logp, "w") as lf:
                        p = subprocess.Popen([str(espgw), "--config", str(cfgp)], stdout=lf, stderr=subprocess.STDOUT)
                        try:
                            deadline = time.time() + 20
                            while time.time() < deadline and p.poll() is None:
                                try:
                                    if port_stats(prefix, 1)["opackets"] >= want:
                                        break
                                except (OSError, ValueError, KeyError, TypeError):
                                    pass
                                time.sleep(0.05)
                            time.sleep(0.3)
                        finally:
                            stop(p)
                            shutil.rmtree(f"/var/run/dpdk/{prefix}", ignore_errors=True)
                    out = []
                    for s in sinks:
                        if s.exists() and s.stat().st_size > 24:
                            out += list(rdpcap(str(s)))
                    good = 0
                    sa = sa_scapy("out", algo, encap, natt=False)
                    seen = {}
                    for f in out:
                        if IP not in f:
                            continue
                        ip = f[IP]
                        if direction == "out":
                            if ip.src != LOCAL or ip.dst != REMOTE or (ip.proto == 17) != (encap == "udp"):
                                continue
                            try:
                                inner = decrypt_esp(sa, f)
                            except Exception:
                                continue
                            i = inner[IP].id
                            if inner[IP].src == LAN_PEER and inner[IP].dst == REMOTE_HOST and i < len(lens) \
                                    and inner[IP].len == lens[i] and UDP in inner \
                                    and bytes(inner[UDP]) == bytes(inner_packet(lens[i], LAN_PEER, REMOTE_HOST, i)[UDP]):
                                good += 1
                                seen[i] = seen.get(i, 0) + 1
                        else:
                            i = ip.id
                            if ip.proto == 17 and ip.dst == LAN_PEER and i < len(lens) and len(ip) == lens[i] \
                                    and f[Ether].dst == PEER_MAC:
                                good += 1
                                seen[i] = seen.get(i, 0) + 1
                    complete = len(seen) == len(lens) and all(v == workers for v in seen.values())
                    res = "OK" if good == want and len(out) == want and complete else "FAIL"
                    ok &= res == "OK"
                    if res == "OK" and direction == "out" and out:
                        f0 = out[0]
                        extra = f", first frame {len(f0)} B, {'UDP 4500/' if encap == 'udp' else ''}ESP"
                    else:
                        extra = ""
                    log(f"verify espgw {direction:3} {algo} {encap:3} {size_label(size):>4}"
                        f"{f' x{workers} queues' if workers > 1 else ''}: {want} in, {len(out)} out, {good} check"
                        f"{extra} -> {res}" + ("" if res == "OK" else f" (log {logp})"))
    return ok


# ------------------------------------------------------------------- main ---

def tsc_hz(logs=()):
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


def run_micro(build, work, quick):
    """The Google Benchmark binaries, JSON output. bench_lpm's raw rte_lpm
    twin at 1M prefixes takes minutes to load: filtered out."""
    specs = [
        ("bench_aead", build / "bench" / "crypto" / "bench_aead", "ipsec-mb" if quick else ""),
        ("bench_lpm", build / "bench" / "lpm" / "bench_lpm", "-.*(RawRteLpm|Pair)/1048576"),
        ("bench_esp", build / "bench" / "dataplane" / "bench_esp", "burst32|replay"),
    ]
    res = {}
    for name, binary, filt in specs:
        if not binary.exists():
            log(f"micro: {binary} missing (build with -Dbench=true): skipped")
            continue
        outp = work / f"{name}.json"
        cmd = [str(binary), f"--benchmark_out={outp}", "--benchmark_out_format=json",
               f"--benchmark_min_time={0.05 if quick else 0.2}"]
        if filt:
            cmd.append(f"--benchmark_filter={filt}")
        pin = ["taskset", "-c", "1"] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []
        t0 = time.time()
        r = subprocess.run(pin + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=900)
        if r.returncode != 0 or not outp.exists():
            log(f"micro: {name} failed ({r.returncode}): {r.stderr[-1000:]}")
            continue
        data = json.loads(outp.read_text())
        res[name] = {"command": cmd, "seconds": round(time.time() - t0, 1), "context": data.get("context", {}),
                     "benchmarks": data.get("benchmarks", [])}
        log(f"micro: {name}: {len(res[name]['benchmarks'])} benchmarks in {res[name]['seconds']} s")
    return res


def micro_summary(micro):
    """Lines for the printed table: the per-size figures most comparable with
    the end-to-end rows."""
    lines = []
    aead = {b["name"]: b for b in micro.get("bench_aead", {}).get("benchmarks", []) if b.get("run_type") == "iteration"}
    esp = {b["name"]: b for b in micro.get("bench_esp", {}).get("benchmarks", []) if b.get("run_type") == "iteration"}
    if aead:
        lines.append("bench_aead (IPsec-MB direct, burst 32), cycles/op:")
        for op in ("encrypt", "decrypt"):
            for algo in ("aes128", "aes256"):
                cells = []
                for n, b in aead.items():
                    m = re.fullmatch(rf"{op}/ipsec-mb/burst32/{algo}-gcm/(\d+)", n)
                    if m and "cyc/op" in b:
                        cells.append((int(m.group(1)), b["cyc/op"]))
                if cells:
                    lines.append(f"  {op} {algo}: " + "  ".join(f"{s} B {c:.0f}" for s, c in sorted(cells)))
    if esp:
        lines.append("bench_esp (encap/decap incl. crypto, burst 32), cycles/packet:")
        for d in ("outbound", "inbound"):
            for algo in ("aes128", "aes256"):
                cells = []
                for n, b in esp.items():
                    m = re.fullmatch(rf"esp/{d}/burst32/{algo}-gcm/(\d+)", n)
                    if m and "cyc/pkt" in b:
                        cells.append((int(m.group(1)), b["cyc/pkt"]))
                if cells:
                    lines.append(f"  {d} {algo}: " + "  ".join(f"{s} B {c:.0f}" for s, c in sorted(cells)))
        rp = [(n, b["cyc/pkt"]) for n, b in esp.items() if n.startswith("replay/") and "cyc/pkt" in b]
        if rp:
            lines.append("  replay window: " + "  ".join(f"{n[7:]} {c:.1f}" for n, c in rp))
    lpm = [b for b in micro.get("bench_lpm", {}).get("benchmarks", []) if b.get("run_type") == "iteration"]
    if lpm:
        lines.append("bench_lpm:")
        for b in lpm:
            extra = "".join(f" {k}={b[k]:.3g}" for k in ("ours_over_raw", "ns/lookup", "cyc/lookup") if k in b)
            lines.append(f"  {b['name']}: {b['real_time']:.4g} {b.get('time_unit', 'ns')}{extra}")
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--espgw", default=str(REPO / "build-bench" / "control" / "espgw"))
    ap.add_argument("--secgw", default="/tmp/secgw-build/build/ipsec-secgw")
    ap.add_argument("--testpmd", default=shutil.which("dpdk-testpmd") or "/usr/bin/dpdk-testpmd")
    ap.add_argument("--crypto-perf", default=shutil.which("dpdk-test-crypto-perf") or "/usr/bin/dpdk-test-crypto-perf")
    ap.add_argument("--build", default=str(REPO / "build-bench"), help="meson build with the bench_* binaries (--micro)")
    ap.add_argument("--quick", action="store_true", help="2 s intervals, 1 s warm-up")
    ap.add_argument("--hugepages", action="store_true", help="run without --no-huge (hugepages reserved by the caller)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--interval", type=float)
    ap.add_argument("--warmup", type=float)
    ap.add_argument("--sizes", default="64,512,1400", help="inner IP total lengths and/or 'imix'")
    ap.add_argument("--dirs", default="out,in")
    ap.add_argument("--algos", default="aes128", help="aes128,aes256")
    ap.add_argument("--encaps", default="esp", help="esp,udp (udp: ESP-in-UDP, NAT-T)")
    ap.add_argument("--impls", default="espgw,secgw", help="of espgw,secgw,testpmd,cperf")
    ap.add_argument("--workers", type=int, default=1, help="N >= 2: espgw scaling mode (N rx queues)")
    ap.add_argument("--micro", action="store_true", help="also run bench_aead, bench_lpm, bench_esp")
    ap.add_argument("--cperf-ops", type=int, default=0, help="crypto-perf ops per run (default by size)")
    ap.add_argument("--gcm-floor", default=None,
                    help="the crypto-floor binary (default: BUILD/bench/crypto/gcm_floor; measured in every rep)")
    ap.add_argument("--secgw-mode", choices=["legacy", "librte_ipsec"], default="legacy")
    ap.add_argument("--no-verify", action="store_true", help="skip the scapy check of espgw's output")
    ap.add_argument("--work", default=f"/tmp/espgw-bench-{os.getpid()}")
    ap.add_argument("--out", default=str(REPO / "bench" / "e2e" / "results.json"))
    ap.add_argument("--chart", help="write a PNG chart of the results here (bench/e2e/chart.py)")
    ap.add_argument("--keep-work", action="store_true", help="keep the work folder (pcaps, configs, logs)")
    ap.add_argument("--curve", action="store_true",
                    help="the cost curve instead of the matrix (scripts/bench_curve.py, bench/README.md): espgw only, "
                         "cycles/packet against tunnels/SAs, routes and replay window")
    ap.add_argument("--latency", action="store_true",
                    help="latency under load instead of the matrix (scripts/bench_latency.py, bench/README.md): "
                         "p50/p99/p99.9 at 10/50/90%% of espgw's maximum, espgw, ipsec-secgw and testpmd over memif")
    ap.add_argument("--latency-gen", help="--latency: the generator (default: BUILD/bench/e2e/latency_gen)")
    ap.add_argument("--curve-counts", default="1,4,64,1000,10000", help="--curve: tunnel (= SA) counts")
    ap.add_argument("--curve-routes", default="1000,100000,1000000", help="--curve: route table sizes ('' = none)")
    ap.add_argument("--curve-windows", default="0,32,4096", help="--curve: inbound replay windows (0 = off; else 32..4096; '' = none)")
    ap.add_argument("--curve-frames", type=int, default=8192, help="--curve: frames per source pcap")
    ap.add_argument("--curve-seed", type=int, default=1, help="--curve: seed of the random tunnels/prefixes")
    a = ap.parse_args()
    if a.curve:
        import bench_curve
        if a.out == ap.get_default("out"):
            a.out = str(REPO / "bench" / "results" / "curve-latest.json")
            a.chart = a.chart or a.out[:-len(".json")] + ".png"
        return bench_curve.run(a)
    if a.latency:
        import bench_latency
        if a.out == ap.get_default("out"):
            a.out = str(REPO / "bench" / "results" / "latency-latest.json")
            a.chart = a.chart or a.out[:-len(".json")] + ".png"
        return bench_latency.run(a)
    t_start = time.time()
    interval = a.interval or (2.0 if a.quick else 5.0)
    warmup = a.warmup if a.warmup is not None else (1.0 if a.quick else 2.0)
    sizes = [s if s == "imix" else int(s) for s in a.sizes.split(",")]
    dirs = a.dirs.split(",")
    algos = a.algos.split(",")
    encaps = a.encaps.split(",")
    impls = a.impls.split(",")
    workers = a.workers
    e2e_impls = [i for i in impls if i in ("espgw", "secgw", "testpmd")]
    if workers > 1:
        e2e_impls = ["espgw", f"espgw-x{workers}"]
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    memmode = "2MB hugepages" if a.hugepages else "--no-huge -m 1024"
    ncpu = os.cpu_count() or 1
    if workers > 1 and ncpu < workers + 1:
        log(f"NOTE: --workers {workers} needs {workers + 1} CPUs to scale (main lcore + one per worker); this machine "
            f"has {ncpu}: the workers share CPU(s) {', '.join(map(str, range(1, ncpu))) or '0'} (--lcores). This run "
            f"shows correctness (every queue forwards, output verified), not scaling.")

    rows_keys = [(d, al, en, s) for d in dirs for al in algos for en in encaps for s in sizes]
    io_keys = sorted({(d, en, s) for d, al, en, s in rows_keys}, key=str)
    # Estimated time: ~1 s start/stop per run on top of warm-up + interval
    per_run = warmup + interval + 1.0
    n_runs = 0
    for impl in e2e_impls:
        if impl == "testpmd":
            n_runs += len(io_keys)
        elif impl == "secgw":
            n_runs += len([k for k in rows_keys if k[2] == "esp"])
        else:
            n_runs += len(rows_keys)
    n_runs *= a.reps
    cperf_sizes = sorted({esp_payload_len(n) for s in sizes for n in (IMIX_IP if s == "imix" else (s,))})
    n_cperf = (len(algos) * len(dirs) * len(cperf_sizes) * a.reps) if "cperf" in impls and workers == 1 else 0
    n_verify = 0 if a.no_verify else len(algos) * len(encaps) * len(dirs) * 2
    est = n_runs * per_run + n_cperf * 1.5 + n_verify * 1.5 + 15 + (60 if a.micro else 0)
    log(f"plan: {len(rows_keys)} rows x {a.reps} rep(s); {n_runs} daemon runs of {warmup:g}+{interval:g} s, "
        f"{n_cperf} crypto-perf runs, {n_verify} checks{', micro-benchmarks' if a.micro else ''}; "
        f"estimated {est / 60:.1f} min")

    log(f"generating pcaps in {work} ...")
    files = make_pcaps(work, sizes, algos, encaps, dirs)

    if not a.no_verify and "espgw" in e2e_impls:
        vs = [s for s in (64, "imix", 1400) if s in sizes][:2] or sizes[:1]
        if not verify_espgw(a.espgw, work, a.hugepages, files, vs, algos, encaps, dirs, 1):
            log("espgw's output did not verify: refusing to benchmark a broken path")
            return 2
        if workers > 1 and not verify_espgw(a.espgw, work, a.hugepages, files, vs[:1], algos[:1], encaps[:1], dirs,
                                            workers):
            log(f"espgw with {workers} workers did not verify")
            return 2

    na = {}
    if "secgw" in e2e_impls and "udp" in encaps:
        if "out_64.pcap" not in [p.name for p in files.values()]:
            make_pcaps(work, [64], ["aes128"], ["esp"], ["out"])
        reason = probe_secgw_udp(a.secgw, work, a.hugepages)
        if reason:
            na["secgw_udp"] = reason
            log(f"ipsec-secgw ESP-in-UDP rows: n/a: {reason}")

    rows = {}
    io = {}
    cperf = {}
    floor = {}   # (algo, op, esp payload bytes) -> [cycles per call], one per rep
    floor_bin = Path(a.gcm_floor) if a.gcm_floor else Path(a.build) / "bench" / "crypto" / "gcm_floor"
    if not floor_bin.exists():
        log(f"NOTE: no crypto-floor binary at {floor_bin} (meson compile -C {a.build} gcm_floor): "
            f"no 'own over floor' column")
    logs = []
    for rep in range(a.reps):
        order = e2e_impls if rep % 2 == 0 else e2e_impls[::-1]
        io_done = set()
        for key in rows_keys:
            d, algo, encap, size = key
            for impl in order:
                if impl == "secgw" and encap == "udp" and "secgw_udp" in na:
                    continue
                if impl == "testpmd":
                    if (d, encap, size) in io_done:
                        continue
                    io_done.add((d, encap, size))
                nw = workers if impl.startswith("espgw-x") else 1
                prefix = f"espgw-bench-{impl}-{os.getpid()}"
                src = files[key]
                src_dev = "net_pcap0," + ",".join(f"rx_pcap={src}" for _ in range(nw)) + ",infinite_rx=1"
                sink_dev = "net_null0,no-rx=1"
                logp = work / f"{impl}_{d}_{algo}_{encap}_{size_label(size)}_{rep}.log"
                logs.append(logp)
                if impl.startswith("espgw"):
                    cfgp = work / f"{impl}_{d}_{algo}_{encap}_{size_label(size)}.yaml"
                    espgw_config(cfgp, d, src_dev + "," + ",".join("tx_pcap=/dev/null" for _ in range(nw)), sink_dev,
                                 prefix, work / "espgw.sock", a.hugepages, algo, encap, nw)
                    cmd = [a.espgw, "--config", str(cfgp)]
                elif impl == "secgw":
                    cfgp = work / f"secgw_{algo}_{encap}.cfg"
                    secgw_config(cfgp, algo, encap)
                    # ipsec-secgw wants one TX queue per lcore on every port: two tx_pcap queues
                    cmd = secgw_cmd(a.secgw, d, src_dev + ",tx_pcap=/dev/null,tx_pcap=/dev/null", sink_dev, prefix,
                                    cfgp, a.hugepages, a.secgw_mode)
                else:
                    cmd = testpmd_cmd(a.testpmd, src_dev + ",tx_pcap=/dev/null", sink_dev, prefix, a.hugepages)
                mpps, rx_mpps, extra = measure(impl, cmd, prefix, logp, warmup, interval, nw)
                rec = {"mpps": mpps, "src_rx_mpps": rx_mpps, **extra}
                if impl == "testpmd":
                    io.setdefault((d, encap, size), []).append(rec)
                else:
                    rows.setdefault(key + (impl,), []).append(rec)
                share = extra["worker_cpu_share"]
                drop = f"; DROPS {100 * (1 - mpps / rx_mpps):.1f}%" if rx_mpps > 0 and mpps < 0.99 * rx_mpps else ""
                log(f"rep {rep + 1}/{a.reps} {d:3} {algo} {encap:3} {size_label(size):>4} {impl:8}: {mpps:7.3f} Mpps "
                    f"(source rx {rx_mpps:.3f}{drop}); worker on CPU {share * 100 if share else float('nan'):3.0f}% "
                    f"-> {extra['mpps_per_cpu_s'] or float('nan'):.3f} Mpps per worker CPU-second")
        if floor_bin.exists():
            for algo in algos:
                for d in dirs:
                    op = "encrypt" if d == "out" else "decrypt"
                    for bs, cyc in gcm_floor(floor_bin, algo, op, cperf_sizes, a.quick).items():
                        floor.setdefault((algo, op, bs), []).append(cyc)
                    log(f"rep {rep + 1}/{a.reps} crypto floor {algo} {op}: " + ", ".join(
                        f"{bs} B {floor[(algo, op, bs)][-1]:.0f}" for bs in cperf_sizes) + " cyc/call")
        if n_cperf:
            hz0 = tsc_hz()
            for algo in algos:
                for d in dirs:
                    op = "encrypt" if d == "out" else "decrypt"
                    for bs in cperf_sizes:
                        ops = a.cperf_ops or ((2_000_000 if bs < 600 else 1_000_000) if a.quick
                                              else (8_000_000 if bs < 600 else 3_000_000))
                        lp = work / f"cperf_{algo}_{op}_{bs}_{rep}.log"
                        wall, cpu_ns, mops = crypto_perf(a.crypto_perf, algo, op, bs, ops, a.hugepages, lp)
                        cpu_cyc = cpu_ns * hz0 / 1e9 / ops if cpu_ns else None
                        # the worker's CPU time also covers its set-up; its wall
                        # cycles include time stolen by others: take the smaller
                        cyc = min(wall, cpu_cyc) if cpu_cyc else wall
                        cperf.setdefault((algo, op, bs), []).append(
                            {"cycles_per_op": cyc, "cycles_per_op_wall": wall, "cycles_per_op_cpu": cpu_cyc,
                             "mops": mops, "ops": ops})
                        log(f"rep {rep + 1}/{a.reps} crypto-perf {algo} {op} {bs:5} B: {wall:6.1f} cyc/op (wall), "
                            f"{cpu_cyc or float('nan'):6.1f} (worker CPU) -> {cyc:.1f}")

    micro = run_micro(Path(a.build), work, a.quick) if a.micro else {}

    hz = tsc_hz(logs)
    med = lambda xs: statistics.median(xs) if xs else None
    spread = lambda xs: (max(xs) - min(xs)) / statistics.median(xs) if len(xs) > 1 and statistics.median(xs) else 0.0
    result = {"memory": memmode, "tsc_hz": hz, "interval_s": interval, "warmup_s": warmup, "reps": a.reps,
              "worker_cores": workers, "nproc": ncpu, "secgw_mode": a.secgw_mode, "pcap_packets": PCAP_PACKETS,
              "imix": {"frames": IMIX_FRAMES, "ip_lengths": IMIX_IP, "weights": IMIX_WEIGHTS,
                       "mean_ip_len": IMIX_MEAN_IP, "pcap_packets": IMIX_PACKETS},
              "loadavg_end": os.getloadavg(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t_start)),
              "command": sys.argv, "not_available": na, "rows": [], "crypto_perf": [], "crypto_floor": [], "io_only": [],
              "micro": micro}

    def summarise(runs):
        m = med([x["mpps"] for x in runs])
        pc = [x["mpps_per_cpu_s"] for x in runs if x["mpps_per_cpu_s"]]
        mc = med(pc)
        share = med([x["worker_cpu_share"] for x in runs if x["worker_cpu_share"]])
        cyc = hz / (mc * 1e6) if mc else (hz / (m * 1e6) if m > 0 else None)
        return {"mpps_median": m, "mpps_per_worker_cpu_s_median": mc, "mpps_per_cpu_spread": spread(pc),
                "mpps_spread": spread([x["mpps"] for x in runs]), "worker_cpu_share_median": share,
                "cycles_per_packet": cyc, "cycles_per_packet_wall": hz / (m * 1e6) if m > 0 else None, "runs": runs}

    for (algo, op, bs), runs in sorted(cperf.items()):
        result["crypto_perf"].append({"algo": algo, "op": op, "buffer_sz": bs,
                                      "cycles_per_op_median": med([r["cycles_per_op"] for r in runs]),
                                      "spread": spread([r["cycles_per_op"] for r in runs]), "runs": runs})
    for (algo, op, bs), runs in sorted(floor.items()):
        result["crypto_floor"].append({"algo": algo, "op": op, "bytes": bs, "cycles_median": med(runs),
                                       "cycles_min": min(runs, default=None),
                                       "spread": spread(runs), "runs": runs})
    for (d, encap, size), runs in sorted(io.items(), key=str):
        result["io_only"].append({"direction": d, "encap": encap, "inner_ip_len": size, **summarise(runs)})

    def crypto_cycles(algo, d, size):
        op = "encrypt" if d == "out" else "decrypt"
        if size == "imix":
            parts = [med([r["cycles_per_op"] for r in cperf.get((algo, op, esp_payload_len(n)), [])]) for n in IMIX_IP]
            if None in parts:
                return None
            return sum(c * w for c, w in zip(parts, IMIX_WEIGHTS)) / sum(IMIX_WEIGHTS)
        return med([r["cycles_per_op"] for r in cperf.get((algo, op, esp_payload_len(size)), [])])

    def floor_cycles(algo, d, size):
        op = "encrypt" if d == "out" else "decrypt"
        sizes_ = IMIX_IP if size == "imix" else (size,)
        # The least of the reps: the floor is a best case (each rep already
        # takes its best round), and a rep the VM disturbed only raises it,
        # which would flatter espgw's own cost.
        parts = [min(floor.get((algo, op, esp_payload_len(n)), []), default=None) for n in sizes_]
        if None in parts:
            return None
        w = IMIX_WEIGHTS if size == "imix" else (1,)
        return sum(c * x for c, x in zip(parts, w)) / sum(w)

    nan = float("nan")
    f = lambda v, fmt: format(v, fmt) if v is not None else format(nan, fmt)
    title = (f"espgw vs ipsec-secgw ({a.secgw_mode}) vs the I/O+crypto limit, {workers} worker core(s), {memmode}, "
             f"median of {a.reps} x {interval:g} s (after {warmup:g} s warm-up), TSC {hz / 1e6:.0f} MHz, "
             f"load average {os.getloadavg()[0]:.1f}, nproc {ncpu}")
    print("\n" + title)
    if workers > 1:
        hdr = (f"{'dir':3} {'algo':6} {'enc':3} {'size':>4} | espgw x1 {'Mpps':>6} {'Mpps/cpu':>8} {'cyc/pkt':>7} | "
               f"espgw x{workers} {'Mpps':>6} {'cpu%':>4} {'Mpps/cpu':>8} {'cyc/pkt':>7} | speedup wall")
    else:
        hdr = (f"{'dir':3} {'algo':6} {'enc':3} {'size':>4} | espgw {'Mpps':>6} {'sprd':>4} {'cpu%':>4} {'Mpps/cpu':>8} "
               f"{'cyc/pkt':>7} {'Gbps':>5} | secgw {'Mpps/cpu':>8} {'cyc/pkt':>7} | ratio cpu  wall | "
               f"crypto  io limit Mpps | own cyc/pkt | floor own/floor")
    print(hdr)
    print("-" * len(hdr))
    for key in rows_keys:
        d, algo, encap, size = key
        r = {"direction": "outbound" if d == "out" else "inbound", "algo": algo,
             "encap": "esp-in-udp" if encap == "udp" else "esp", "inner_ip_len": size,
             "mean_inner_ip_len": mean_ip_len(size)}
        for impl in e2e_impls:
            runs = rows.get(key + (impl,))
            if runs and impl != "testpmd":
                r[impl.replace("-", "_")] = s = summarise(runs)
                s["inner_gbps"] = s["mpps_median"] * mean_ip_len(size) * 8 / 1000
                s["inner_gbps_per_cpu"] = (s["mpps_per_worker_cpu_s_median"] or 0) * mean_ip_len(size) * 8 / 1000
        if encap == "udp" and "secgw_udp" in na and "secgw" in e2e_impls:
            r["secgw"] = {"n/a": na["secgw_udp"]}
        eg, sg = r.get("espgw"), r.get("secgw")
        if workers > 1:
            ex = r.get(f"espgw_x{workers}")
            sp = ex["mpps_median"] / eg["mpps_median"] if ex and eg and eg["mpps_median"] else None
            r["speedup_wall"] = sp
            print(f"{d:3} {algo:6} {encap:3} {size_label(size):>4} |          {f(eg and eg['mpps_median'], '6.3f')} "
                  f"{f(eg and eg['mpps_per_worker_cpu_s_median'], '8.3f')} {f(eg and eg['cycles_per_packet'], '7.0f')} | "
                  f"         {f(ex and ex['mpps_median'], '6.3f')} "
                  f"{f(ex and ex['worker_cpu_share_median'] and ex['worker_cpu_share_median'] * 100, '4.0f')} "
                  f"{f(ex and ex['mpps_per_worker_cpu_s_median'], '8.3f')} {f(ex and ex['cycles_per_packet'], '7.0f')} | "
                  f"{f(sp, '7.2f')}")
            result["rows"].append(r)
            continue
        rc = eg["mpps_per_worker_cpu_s_median"] / sg["mpps_per_worker_cpu_s_median"] \
            if eg and sg and "n/a" not in sg and eg["mpps_per_worker_cpu_s_median"] and sg["mpps_per_worker_cpu_s_median"] else None
        rw = eg["mpps_median"] / sg["mpps_median"] if eg and sg and sg.get("mpps_median") else None
        r["ratio_espgw_secgw_per_cpu"], r["ratio_espgw_secgw"] = rc, rw
        cc = crypto_cycles(algo, d, size) if cperf else None
        ior = io.get((d, encap, size))
        ioc = summarise(ior)["cycles_per_packet"] if ior else None
        limit = hz / (cc + ioc) / 1e6 if cc and ioc else None
        own = eg["cycles_per_packet"] - cc - ioc if eg and cc and ioc else None
        fc = floor_cycles(algo, d, size) if floor else None
        own_f = eg["cycles_per_packet"] - fc - ioc if eg and fc and ioc else None
        r.update({"crypto_floor_cycles": fc, "own_over_floor_cycles_per_packet": own_f,
                  "limit_floor_mpps": hz / (fc + ioc) / 1e6 if fc and ioc else None})
        r.update({"crypto_only_cycles": cc, "io_only_cycles": ioc, "limit_mpps": limit, "own_cycles_per_packet": own,
                  "espgw_share_of_limit": eg["mpps_per_worker_cpu_s_median"] / limit if eg and limit and
                  eg["mpps_per_worker_cpu_s_median"] else None})
        if sg and "n/a" in sg:
            sgc = f"{'n/a':>8} {'':>7}"
        else:
            sgc = f"{f(sg and sg['mpps_per_worker_cpu_s_median'], '8.3f')} {f(sg and sg['cycles_per_packet'], '7.0f')}"
        print(f"{d:3} {algo:6} {encap:3} {size_label(size):>4} |       {f(eg and eg['mpps_median'], '6.3f')} "
              f"{f(eg and eg['mpps_per_cpu_spread'] * 100, '3.0f')}% "
              f"{f(eg and eg['worker_cpu_share_median'] and eg['worker_cpu_share_median'] * 100, '4.0f')} "
              f"{f(eg and eg['mpps_per_worker_cpu_s_median'], '8.3f')} {f(eg and eg['cycles_per_packet'], '7.0f')} "
              f"{f(eg and eg['inner_gbps_per_cpu'], '5.2f')} |       {sgc} | "
              f"{'  n/a' if sg and 'n/a' in sg else f(rc, '5.2f')} {'  n/a' if sg and 'n/a' in sg else f(rw, '5.2f')} | "
              f"{f(cc, '6.0f')} {f(ioc, '3.0f')} {f(limit, '10.2f')} | {f(own, '11.0f')} | "
              f"{f(fc, '5.0f')} {f(own_f, '9.0f')}")
        result["rows"].append(r)
    if workers > 1:
        print(f"x1: espgw with one worker; x{workers}: {workers} workers, one RSS-like rx_pcap queue each (net_pcap with "
              f"{workers} rx_pcap files). Mpps/cpu and cyc/pkt use the CPU time of all workers together.")
        if ncpu < workers + 1:
            print(f"nproc = {ncpu} < {workers + 1}: the {workers} workers share CPUs here, so 'speedup' is not a scaling "
                  f"figure; this run checks that {workers} queues work (output verified per queue).")
    else:
        print("Mpps: packets/s leaving the sink port (net_null TX counter, DPDK telemetry), median of the runs; sprd:\n"
              "  (max-min)/median of espgw's Mpps/cpu. cpu%: share of the interval the worker thread was on a CPU\n"
              "  (/proc schedstat). Mpps/cpu: packets per second of worker CPU time (= Mpps on a dedicated core).\n"
              "  cyc/pkt: TSC Hz / Mpps/cpu. Gbps: inner IP bytes x 8 x Mpps/cpu (IMIX: mean inner length "
              f"{IMIX_MEAN_IP:.0f} B).\n"
              "  ratio: espgw / secgw, per worker CPU-second and wall-clock (>1: espgw faster). crypto: crypto-perf\n"
              "  cycles/op (crypto_aesni_gcm, ESP payload size; IMIX weighted); io: testpmd io-forward cycles/packet on\n"
              "  the same pcap/sink; limit: TSC / (crypto + io); own: espgw cyc/pkt - crypto - io.\n"
              "  floor: IPsec-MB's one-shot GCM call (what espgw calls) on 32 L1-resident buffers, one key, best of\n"
              "  the rounds, measured in each rep, the least of the reps (bench/crypto/gcm_floor); own/floor: espgw cyc/pkt - floor - io\n"
              "  (the honest own cost: crypto-perf's figure includes a cryptodev queue espgw does not use).")
        for k, v in na.items():
            print(f"n/a ({k}): {v}")
    ml = micro_summary(micro)
    if ml:
        print("\nmicro-benchmarks (Google Benchmark, pinned to CPU 1):")
        print("\n".join(ml))
    result["seconds"] = round(time.time() - t_start, 1)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"JSON: {a.out}  ({result['seconds'] / 60:.1f} min)")
    if a.chart:
        try:
            sys.path.insert(0, str(REPO / "bench" / "e2e"))
            import chart
            chart.plot(result, a.chart)
            print(f"chart: {a.chart}")
        except Exception as e:  # the numbers are in the JSON anyway
            log(f"chart failed: {e!r}")
    if not a.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
