"""Runs the real espgw daemon on net_pcap ports for end-to-end tests.

A test writes the packets each port receives into pcap files, starts espgw
with a config that points net_pcap at them, waits until the daemon has read
everything (through the control socket's stats), stops it with SIGTERM and
reads what each port sent. Packets are checked with scapy, an independent
ESP implementation."""

import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import yaml
from scapy.all import IP, UDP, Ether, PcapWriter, rdpcap
from scapy.layers.ipsec import ESP, SecurityAssociation

BUILD = Path(os.environ.get("ESPGW_BUILD", Path(__file__).resolve().parents[2] / "build"))
ESPGW = BUILD / "control" / "espgw"
# Sanitizer builds run several times slower: scripts/test.sh --sanitize sets
# ESPGW_TIMEOUT_SCALE so every wait of the harness stretches with them.
TIMEOUT_SCALE = float(os.environ.get("ESPGW_TIMEOUT_SCALE", "1"))
# "address" when ESPGW_BUILD is an ASan build (scripts/test.sh sets it):
# memory figures (RSS) mean nothing there, ASan's quarantine holds freed memory.
SANITIZER = os.environ.get("ESPGW_SANITIZER", "")
# A command that execs espgw in the same process (keeps its pid), for tools:
# ESPGW_WRAPPER="env LD_PRELOAD=/usr/lib/heaptrack/libheaptrack_preload.so
# DUMP_HEAPTRACK_OUTPUT=/tmp/ht.raw" (a fifo read by /usr/lib/heaptrack/libexec/heaptrack_interpret).
WRAPPER = shlex.split(os.environ.get("ESPGW_WRAPPER", ""))


def scaled(seconds):
    return seconds * TIMEOUT_SCALE

LAN_MAC = "02:00:00:00:00:01"
WAN_MAC = "02:00:00:00:00:02"
PEER_MAC = "02:00:00:00:01:02"  # the LAN router behind the gateway
NH_MAC = "02:00:00:00:02:fe"    # the Internet next hop towards AWS
LOCAL_A, LOCAL_B = "198.51.100.10", "198.51.100.11"

# The interop guide's four tunnels: connection A (a1, a2) from LOCAL_A,
# connection B (b1, b2) from LOCAL_B.
TUNNELS = {
    "aws-a1": (LOCAL_A, "203.0.113.1"),
    "aws-a2": (LOCAL_A, "203.0.113.2"),
    "aws-b1": (LOCAL_B, "203.0.113.129"),
    "aws-b2": (LOCAL_B, "203.0.113.130"),
}


def keymat(seed: int, algo: str = "aes128-gcm") -> bytes:
    """Distinct, reproducible key || salt per seed (test keys only)."""
    n = 20 if algo == "aes128-gcm" else 36
    return (hashlib.sha256(f"espgw-test-{seed}".encode()).digest() * 2)[:n]


class Sa:
    """One SA as both espgw's config entry and scapy's SecurityAssociation."""

    def __init__(self, direction, spi, tunnel, algo="aes128-gcm", seed=None, esn=False,
                 udp=False, replay_window=1024, local_selectors=None, remote_selectors=None):
        self.direction, self.spi, self.tunnel, self.algo = direction, spi, tunnel, algo
        self.key = keymat(seed if seed is not None else spi, algo)
        self.esn, self.udp, self.replay_window = esn, udp, replay_window
        self.local_selectors, self.remote_selectors = local_selectors, remote_selectors

    def config(self):
        c = {"direction": self.direction, "spi": self.spi, "tunnel": self.tunnel, "algo": self.algo,
             "key": self.key.hex(), "esn": self.esn}
        if self.direction == "in":
            c["replay_window"] = self.replay_window
        if self.local_selectors:
            c["local_selectors"] = self.local_selectors
        if self.remote_selectors:
            c["remote_selectors"] = self.remote_selectors
        return c

    def scapy_sa(self, seq_num=1):
        local, remote = TUNNELS[self.tunnel]
        src, dst = (local, remote) if self.direction == "out" else (remote, local)
        kw = {}
        if self.udp:
            kw["nat_t_header"] = UDP(sport=4500, dport=4500)
        return SecurityAssociation(ESP, spi=self.spi, crypt_algo="AES-GCM", crypt_key=self.key,
                                   auth_algo="NULL", tunnel_header=IP(src=src, dst=dst),
                                   esn_en=self.esn, seq_num=seq_num, **kw)

    def encrypt(self, inner, seq_num):
        """ESP packet (IP layer) as the AWS side would send it to us."""
        pkt = self.scapy_sa(seq_num).encrypt(inner, seq_num=seq_num)
        if self.udp:  # scapy 2.5 leaves UDP.len = 8 (see shared notes)
            pkt[UDP].len = None
            pkt[UDP].chksum = 0
        return IP(bytes(pkt))


def control_request(sock_path, req):
    """One request on espgw's control socket, its reply."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(scaled(10))
    s.connect(sock_path)
    s.sendall((json.dumps(req) + "\n").encode())
    buf = b""
    while b"\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    s.close()
    return json.loads(buf.split(b"\n")[0])


def default_routes():
    return [{"prefix": "172.31.0.0/16",
             "via": [{"tunnel": "aws-a1", "priority": 10}, {"tunnel": "aws-a2", "priority": 20},
                     {"tunnel": "aws-b1", "priority": 30}, {"tunnel": "aws-b2", "priority": 40}]}]


def write_pcap(path, frames):
    w = PcapWriter(str(path), linktype=1, sync=True)
    for f in frames:
        w.write(f)
    w.close()


class Gateway:
    """espgw on two (or more-queue) net_pcap ports; one instance per test."""

    def __init__(self, tmp: Path, sas, routes=None, lan_in=(), wan_in=(), workers=1, tunnels_extra=None,
                 infinite_lan=False, icmp_rate_limit=100, lan_in_split=None, wan_in_split=None, down=(),
                 host_in=None, ports_extra=None, discard_out=False):
        self.tmp = Path(tmp)
        self.sas = sas
        self.workers = workers
        self.sock = str(self.tmp / "espgw.sock")
        lan_files = self._inputs("lan", lan_in_split if lan_in_split is not None else [list(lan_in)])
        wan_files = self._inputs("wan", wan_in_split if wan_in_split is not None else [list(wan_in)])
        self.lan_out = [self.tmp / f"lan_out{q}.pcap" for q in range(workers)]
        self.wan_out = [self.tmp / f"wan_out{q}.pcap" for q in range(workers)]
        if discard_out:
            # Rate tests: at a Mpps a capture file fills the page cache, and
            # the worker's writes slow as the kernel throttles dirty pages.
            self.lan_out = [Path("/dev/null")] * workers
            self.wan_out = [Path("/dev/null")] * workers
        lan_dev = "net_pcap0," + ",".join(
            [f"rx_pcap={f}" for f in lan_files] + (["infinite_rx=1"] if infinite_lan else []) +
            [f"tx_pcap={f}" for f in self.lan_out])
        wan_dev = "net_pcap1," + ",".join([f"rx_pcap={f}" for f in wan_files] +
                                          [f"tx_pcap={f}" for f in self.wan_out])
        if workers == 1:
            eal = ["-l", "0,1"]
            worker_lcores = [1]
        else:  # N workers over the 2 CPUs: correctness, not speed
            eal = ["--lcores", "0@0," + ",".join(f"{i + 1}@{(i + 1) % 2}" for i in range(workers))]
            worker_lcores = list(range(1, workers + 1))
        tunnels = []
        for name, (local, remote) in TUNNELS.items():
            t = {"name": name, "port": "wan", "local": local, "remote": remote, "next_hop_mac": NH_MAC,
                 "mss_clamp": 1379, "up": name not in down}
            udp = any(s.udp for s in sas if s.tunnel == name)
            if udp:
                t["udp_encap"] = True
            t.update((tunnels_extra or {}).get(name, {}))
            tunnels.append(t)
        self.config = {
            "eal": eal + ["--no-huge", "-m", "512", "--no-pci", "--file-prefix", f"espgw-test-{os.getpid()}-{id(self)}",
                          "--log-level", "lib.eal:error"],
            "workers": worker_lcores,
            "mbufs": 16384,
            "icmp_rate_limit": icmp_rate_limit,
            "control": {"socket": self.sock},
            "ports": [
                {"name": "lan", "device": lan_dev, "role": "protected", "addresses": ["10.240.128.1"],
                 "mac": LAN_MAC, "peer_mac": PEER_MAC},
                {"name": "wan", "device": wan_dev, "role": "unprotected", "addresses": [LOCAL_A, LOCAL_B],
                 "mac": WAN_MAC},
            ],
            "tunnels": tunnels,
            "routes": routes if routes is not None else default_routes(),
            "sas": [s.config() for s in sas],
        }
        for port in self.config["ports"]:  # e.g. {"lan": {"mtu": 9000}}
            port.update((ports_extra or {}).get(port["name"], {}))
        if host_in is not None:
            # The exception path's host side, as a pcap pair: what the host's
            # IKE daemon sends (host_in) and what espgw hands it (host_out).
            files = self._inputs("host", [list(host_in)])
            self.host_out = [self.tmp / f"host_out{q}.pcap" for q in range(workers)]
            self.config["exception"] = {"enabled": True, "device": "net_pcap2," + ",".join(
                [f"rx_pcap={f}" for f in files] + [f"tx_pcap={f}" for f in self.host_out])}
        self.config_path = self.tmp / "espgw.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        self.proc = None
        self.output = ""

    def _inputs(self, name, groups):
        files = []
        for q, frames in enumerate(groups):
            p = self.tmp / f"{name}_in{q}.pcap"
            write_pcap(p, frames)
            files.append(p)
        # net_pcap needs one rx file per queue: pad with empty ones.
        while len(files) < self.workers:
            p = self.tmp / f"{name}_in{len(files)}.pcap"
            write_pcap(p, [])
            files.append(p)
        return files

    def start(self):
        self.log = open(self.tmp / "espgw.log", "w+")
        self.proc = subprocess.Popen(WRAPPER + [str(ESPGW), "--config", str(self.config_path)], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + scaled(20)
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"espgw exited with {self.proc.returncode}:\n{self.read_log()}")
            if os.path.exists(self.sock):
                try:
                    self.request({"op": "ping"})
                    return self
                except OSError:
                    pass
            time.sleep(0.05)
        raise RuntimeError("espgw did not open its control socket:\n" + self.read_log())

    def read_log(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def request(self, req):
        return control_request(self.sock, req)

    def stats(self):
        return self.request({"op": "stats"})

    def wait_rx(self, lan=None, wan=None, timeout=20):
        """Waits until the ports received these many packets and the counters settle."""
        deadline = time.time() + scaled(timeout)
        last = None
        while time.time() < deadline:
            st = self.stats()
            rx = {p["name"]: p["rx"]["packets"] for p in st["ports"]}
            done = (lan is None or rx["lan"] >= lan) and (wan is None or rx["wan"] >= wan)
            snapshot = json.dumps(st["tunnels"]) + json.dumps(st["drops"]) + json.dumps(st["ports"])
            if done and snapshot == last:
                return st
            last = snapshot if done else None
            time.sleep(0.1)
        raise TimeoutError(f"ports did not receive lan={lan} wan={wan}: {self.stats()}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=scaled(20))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.output = self.read_log() if self.proc else ""
        # DPDK leaves its runtime folder (telemetry socket, config) behind.
        eal = self.config["eal"]
        shutil.rmtree(f"/var/run/dpdk/{eal[eal.index('--file-prefix') + 1]}", ignore_errors=True)
        return self.proc.returncode if self.proc else None

    def mbufs(self):
        """(in use at exit, in use at start) from the daemon's final report."""
        for line in self.output.splitlines():
            if line.startswith("mbufs in use:"):
                a = line.split(":")[1].split()[0]
                b = line.split("at start")[1].strip(" )")
                return int(a), int(b)
        raise AssertionError("no mbuf report in espgw's output:\n" + self.output)

    def sent(self, port):
        """Frames a port transmitted, all queues (file order = TX order per queue)."""
        files = {"lan": self.lan_out, "wan": self.wan_out}.get(port) or self.host_out
        out = []
        for f in files:
            if f.exists() and f.stat().st_size > 24:
                out.extend(rdpcap(str(f)))
        return out

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def settle(gw, timeout=15):
    """Waits until no outer fragment is held and every mbuf is back (incomplete
    datagrams time out after 2 s, packets held for ARP fail after 3 s); the
    last stats reply."""
    deadline = time.time() + scaled(timeout)
    while True:
        st = gw.stats()
        held = sum(p["held"] for p in st["accounting"]["ports"])
        if (held == 0 and st["mbufs"]["in_use"] == st["mbufs"]["in_use_at_start"]) or time.time() > deadline:
            return st
        time.sleep(0.2)


def assert_balanced(st, lan_rx, wan_rx):
    """Every port and worker balances exactly, the LAN and WAN ports received
    what was sent, nothing is held and every mbuf is back."""
    acc = st["accounting"]
    assert acc["holds"], acc
    for w in acc["workers"]:
        assert w["consistent"]
        for p in w["ports"]:
            assert p["rx_holds"] and p["tx_holds"], (w["worker"], p["equation"])
    ports = {p["name"]: p for p in acc["ports"]}
    assert ports["wan"]["rx"] == wan_rx and ports["lan"]["rx"] == lan_rx
    assert ports["wan"]["held"] == 0
    assert st["mbufs"]["in_use"] == st["mbufs"]["in_use_at_start"], st["mbufs"]


def lan_frame(inner):
    return Ether(src=PEER_MAC, dst=LAN_MAC) / inner


def wan_frame(outer):
    return Ether(src=NH_MAC, dst=WAN_MAC) / outer


def esp_of(frame):
    """(outer IP, ESP layer) of a frame the gateway sent on the WAN side."""
    ip = frame[IP]
    return ip, ip[ESP]


def pcap_records(path):
    """Frames of a classic pcap file as bytes, fast (no dissection)."""
    with open(path, "rb") as f:
        data = f.read()
    off = 24
    while off + 16 <= len(data):
        incl = struct.unpack_from("<I", data, off + 8)[0]
        yield data[off + 16: off + 16 + incl]
        off += 16 + incl


def raw_esp_records(path):
    """For big captures: (outer dst, spi, seq) of each ESP frame."""
    for pkt in pcap_records(path):
        ip = pkt[14:]
        ihl = (ip[0] & 0xF) * 4
        esp = ip[ihl + (8 if ip[9] == 17 else 0):]
        yield socket.inet_ntoa(ip[16:20]), struct.unpack(">I", esp[:4])[0], struct.unpack(">I", esp[4:8])[0]


def raw_esp_records_l2(path):
    """(Ethernet dst MAC, ethertype) of each frame."""
    for pkt in pcap_records(path):
        yield ":".join(f"{b:02x}" for b in pkt[:6]), struct.unpack(">H", pkt[12:14])[0]


def raw_frames(path, wanted):
    """The frames at these indices (0-based), as bytes."""
    wanted = set(wanted)
    return {i: pkt for i, pkt in enumerate(pcap_records(path)) if i in wanted}
