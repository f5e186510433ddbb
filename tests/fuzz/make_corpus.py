#!/usr/bin/python3
"""Writes the fuzz targets' seed corpora under tests/fuzz/corpus/NAME/.

Packets are built and encrypted by scapy (an implementation independent of
espgw's) under the keys of the fuzz config (tests/fuzz/fuzz_gateway.cpp:
sa_keys() and config_yaml(); keep the two in step). Each packet seed is a
sequence of records: byte 0 = port (0 lan, 1 wan, 2 exception) | flags << 2
| 0x80 to poll before it; two bytes of length (big-endian); the frame.

    /usr/bin/python3 tests/fuzz/make_corpus.py        # rewrites the corpora

Regression inputs of bugs found by fuzzing live next to the seeds as
regress-*.bin and are kept (this script only writes seed-*).
"""
import hashlib
import os
import struct
import subprocess
import sys

from scapy.all import ARP, ICMP, IP, TCP, UDP, Ether, Raw, fragment
from scapy.layers.ipsec import ESP, SecurityAssociation

ROOT = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(ROOT, "corpus")

LAN_MAC, WAN_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"
LAN_HOST_MAC, PEER_MAC, HOST_MAC = "02:00:00:00:00:10", "02:00:00:00:02:fe", "02:00:00:00:99:01"
LAN, WAN, EXC = 0, 1, 2
SEAL = 1 << 2
POLL = 0x80


def key(base, n):
    return bytes((base + i) & 0xFF for i in range(n))


# The fuzz config's SAs: spi -> (key || salt, esn, outer src, outer dst, udp)
INBOUND = {
    0x2001: (key(0x20, 20), False, "203.0.113.1", "198.51.100.10", None),
    0x2002: (key(0x80, 36), True, "203.0.113.2", "198.51.100.11", (4500, 4501)),
    0x2003: (key(0xC0, 20), False, "203.0.113.1", "198.51.100.10", None),
}


def rec(port, frame, flags=0):
    b = bytes(frame)
    return bytes([port | flags]) + struct.pack(">H", len(b)) + b


def esp_in(spi, inner, seq=1, tos=0):
    k, esn, src, dst, udp = INBOUND[spi]
    sa = SecurityAssociation(ESP, spi=spi, crypt_algo="AES-GCM", crypt_key=k,
                             tunnel_header=IP(src=src, dst=dst, tos=tos), esn_en=esn, esn=0)
    pkt = sa.encrypt(inner, seq_num=seq, iv=struct.pack(">Q", seq))
    if udp:  # scapy's nat_t_header leaves the UDP length at 8: wrap by hand
        pkt = IP(src=src, dst=dst, tos=tos) / UDP(sport=udp[0], dport=udp[1], chksum=0) / Raw(bytes(pkt[ESP]))
    return Ether(src=PEER_MAC, dst=WAN_MAC) / pkt


def sealed(spi, payload, seq=1, udp=None):
    """A frame for the harness's seal mode: ESP header, IV, plaintext (the
    harness encrypts and appends the ICV)."""
    _, _, src, dst, sa_udp = INBOUND[spi]
    udp = udp or sa_udp
    outer = IP(src=src, dst=dst, proto=17 if udp else 50)
    if udp:
        outer = outer / UDP(sport=udp[0], dport=udp[1], chksum=0)
    body = struct.pack(">II", spi, seq) + struct.pack(">Q", seq) + bytes(payload)
    return Ether(src=PEER_MAC, dst=WAN_MAC) / outer / Raw(body)


def trailer(inner, pad=None, nh=4):
    b = bytes(inner)
    if pad is None:
        pad = (4 - (len(b) + 2) % 4) % 4
    return b + bytes(range(1, pad + 1)) + bytes([pad, nh])


def inner_udp(src="172.16.0.5", dst="10.0.0.10", n=40, **kw):
    return IP(src=src, dst=dst, ttl=64, **kw) / UDP(sport=1234, dport=5678) / Raw(b"i" * n)


def inbound_seeds():
    s = {}
    s["esp-t1"] = rec(WAN, esp_in(0x2001, inner_udp()))
    s["esp-t1-two-seqs"] = rec(WAN, esp_in(0x2001, inner_udp(), seq=1)) + rec(WAN, esp_in(0x2001, inner_udp(), seq=2)) \
        + rec(WAN, esp_in(0x2001, inner_udp(), seq=1))
    s["esp-t1-ecn-ce"] = rec(WAN, esp_in(0x2001, inner_udp(tos=2), tos=3))
    s["esp-t1-unresolved-dst"] = rec(WAN, esp_in(0x2001, inner_udp(dst="10.0.0.77")))
    s["esp-t1-to-gateway"] = rec(WAN, esp_in(0x2001, IP(src="172.16.0.5", dst="10.0.0.1") / ICMP()))
    s["esp-t1-ttl1"] = rec(WAN, esp_in(0x2001, IP(src="172.16.0.5", dst="10.0.0.10", ttl=1) / ICMP()))
    s["esp-policy"] = rec(WAN, esp_in(0x2003, inner_udp()))
    s["esp-policy-outside"] = rec(WAN, esp_in(0x2003, inner_udp(dst="10.9.0.1")))
    s["esp-udp-esn"] = rec(WAN, esp_in(0x2002, inner_udp(src="172.17.0.9")))
    big = esp_in(0x2001, inner_udp(n=900))
    frags = fragment(big[IP], fragsize=400)
    s["esp-fragmented"] = b"".join(rec(WAN, Ether(src=PEER_MAC, dst=WAN_MAC) / f) for f in frags)
    s["esp-fragmented-reversed"] = b"".join(rec(WAN, Ether(src=PEER_MAC, dst=WAN_MAC) / f) for f in reversed(frags))
    ike = Ether(src=PEER_MAC, dst=WAN_MAC) / IP(src="203.0.113.1", dst="198.51.100.10") / UDP(sport=500, dport=500) \
        / Raw(b"\x11" * 28)
    s["ike"] = rec(WAN, ike)
    s["ike-fragmented"] = b"".join(rec(WAN, Ether(src=PEER_MAC, dst=WAN_MAC) / f)
                                   for f in fragment(IP(src="203.0.113.1", dst="198.51.100.10") /
                                                     UDP(sport=4500, dport=4500) / Raw(b"\0\0\0\0" + b"k" * 1800),
                                                     fragsize=800))
    s["non-esp-marker"] = rec(WAN, Ether(src=PEER_MAC, dst=WAN_MAC) / IP(src="203.0.113.2", dst="198.51.100.11")
                              / UDP(sport=4500, dport=4501) / Raw(b"\0\0\0\0" + b"ike"))
    s["natt-keepalive"] = rec(WAN, Ether(src=PEER_MAC, dst=WAN_MAC) / IP(src="203.0.113.2", dst="198.51.100.11")
                              / UDP(sport=4500, dport=4500) / Raw(b"\xff"))
    s["icmp-to-us"] = rec(WAN, Ether(src=PEER_MAC, dst=WAN_MAC) / IP(src="203.0.113.9", dst="198.51.100.10") / ICMP())
    s["arp-request"] = rec(WAN, Ether(src=PEER_MAC, dst="ff:ff:ff:ff:ff:ff") /
                           ARP(op=1, hwsrc=PEER_MAC, psrc="198.51.100.1", pdst="198.51.100.10"))
    # Seal mode: the harness encrypts, so trailers and inner packets can be
    # anything and still authenticate.
    s["seal-good"] = rec(WAN, sealed(0x2001, trailer(inner_udp())), SEAL)
    s["seal-tfc-dummy"] = rec(WAN, sealed(0x2001, trailer(b"\0" * 30, nh=59)), SEAL)
    s["seal-tfc-padding"] = rec(WAN, sealed(0x2001, trailer(bytes(inner_udp()) + b"\0" * 37)), SEAL)
    s["seal-bad-pad"] = rec(WAN, sealed(0x2001, bytes(inner_udp()) + b"\x01\x02\x09\x03\x04"), SEAL)
    s["seal-long-pad"] = rec(WAN, sealed(0x2001, trailer(inner_udp(), pad=200)), SEAL)
    s["seal-ipv6"] = rec(WAN, sealed(0x2001, trailer(b"\x60" + b"\0" * 39, nh=41)), SEAL)
    s["seal-inner-options"] = rec(WAN, sealed(0x2001, trailer(IP(src="172.16.0.5", dst="10.0.0.10",
                                                                  options=b"\x94\x04\0\0") / ICMP())), SEAL)
    s["seal-udp-esn"] = rec(WAN, sealed(0x2002, trailer(inner_udp(src="172.17.0.9"))), SEAL)
    s["seal-policy"] = rec(WAN, sealed(0x2003, trailer(inner_udp())), SEAL)
    s["seal-martian"] = rec(WAN, sealed(0x2001, trailer(inner_udp(dst="224.0.0.1"))), SEAL)
    s["seal-no-route-back"] = rec(WAN, sealed(0x2001, trailer(inner_udp(src="192.0.2.1"))), SEAL)
    return s


def lan_frame(pkt, src_mac=LAN_HOST_MAC):
    return Ether(src=src_mac, dst=LAN_MAC) / pkt


def outbound_seeds():
    s = {}
    s["udp-t1"] = rec(LAN, lan_frame(IP(src="10.0.0.10", dst="172.16.1.1") / UDP(sport=1, dport=2) / Raw(b"o" * 64)))
    s["udp-t2"] = rec(LAN, lan_frame(IP(src="10.0.0.10", dst="172.17.1.1", tos=0xb9) / UDP() / Raw(b"o" * 64)))
    s["udp-t3-fallback"] = rec(LAN, lan_frame(IP(src="10.0.0.10", dst="172.18.1.1") / UDP() / Raw(b"o" * 64)))
    s["tcp-syn-mss"] = rec(LAN, lan_frame(IP(src="10.0.0.10", dst="172.16.1.1") /
                                          TCP(sport=40000, dport=443, flags="S", options=[("MSS", 1460), ("NOP", None),
                                                                                           ("WScale", 7)])))
    s["tcp-syn-mss-udp"] = rec(LAN, lan_frame(IP(src="10.0.0.10", dst="172.17.1.1") /
                                              TCP(sport=40000, dport=443, flags="S", options=[("MSS", 8960)])))
    s["big-df-clear"] = rec(LAN, lan_frame(IP(src="10.0.0.10", dst="172.16.1.1") / UDP() / Raw(b"f" * 1400)))
    s["big-df-set"] = rec(LAN, lan_frame(IP(src="10.0.0.10", dst="172.16.1.1", flags="DF") / UDP() / Raw(b"f" * 1000)))
    s["ttl1"] = rec(LAN, lan_frame(IP(src="10.0.0.10", dst="172.16.1.1", ttl=1) / UDP() / Raw(b"t" * 10)))
    s["to-gateway"] = rec(LAN, lan_frame(IP(src="10.0.0.10", dst="10.0.0.1") / ICMP()))
    s["no-route"] = rec(LAN, lan_frame(IP(src="10.0.0.10", dst="192.0.2.1") / UDP()))
    s["martian"] = rec(LAN, lan_frame(IP(src="127.0.0.1", dst="172.16.1.1") / UDP()))
    s["options"] = rec(LAN, lan_frame(IP(src="10.0.0.10", dst="172.16.1.1", options=b"\x94\x04\0\0") / UDP()))
    s["arp-request"] = rec(LAN, Ether(src=LAN_HOST_MAC, dst="ff:ff:ff:ff:ff:ff") /
                           ARP(op=1, hwsrc=LAN_HOST_MAC, psrc="10.0.0.10", pdst="10.0.0.1"))
    s["burst"] = b"".join(rec(LAN, lan_frame(IP(src="10.0.0.10", dst=f"172.{16 + i % 3}.1.{i}") / UDP() /
                                             Raw(b"b" * (i * 37 % 700)))) for i in range(40))
    return s


def host_seeds():
    s = {}
    exc = lambda pkt: Ether(src=HOST_MAC, dst="02:00:00:00:99:02") / pkt  # noqa: E731
    s["ike-to-peer"] = rec(EXC, exc(IP(src="198.51.100.10", dst="203.0.113.1") / UDP(sport=500, dport=500) /
                                    Raw(b"\x22" * 40)))
    s["ike-to-udp-peer"] = rec(EXC, exc(IP(src="198.51.100.11", dst="203.0.113.2") / UDP(sport=4500, dport=4500) /
                                        Raw(b"\0\0\0\0" + b"\x22" * 40)))
    s["to-onlink"] = rec(EXC, exc(IP(src="198.51.100.10", dst="198.51.100.50") / ICMP()))
    s["to-internet-then-arp"] = rec(EXC, exc(IP(src="198.51.100.10", dst="8.8.8.8") / UDP(dport=53))) + \
        rec(WAN, Ether(src="02:00:00:00:00:77", dst=WAN_MAC) /
            ARP(op=2, hwsrc="02:00:00:00:00:77", psrc="198.51.100.1", hwdst=WAN_MAC, pdst="198.51.100.10"), POLL)
    s["lan-mgmt"] = rec(EXC, exc(IP(src="10.0.0.1", dst="10.0.0.10") / ICMP(type=0)))
    s["not-ours"] = rec(EXC, exc(IP(src="192.0.2.1", dst="10.0.0.10") / ICMP()))
    s["host-arp"] = rec(EXC, Ether(src=HOST_MAC, dst="ff:ff:ff:ff:ff:ff") /
                        ARP(op=1, hwsrc=HOST_MAC, psrc="198.51.100.10", pdst="198.51.100.1"))
    s["lan-arp-request"] = rec(LAN, Ether(src="02:00:00:00:00:20", dst="ff:ff:ff:ff:ff:ff") /
                               ARP(op=1, hwsrc="02:00:00:00:00:20", psrc="10.0.0.20", pdst="10.0.0.1"))
    s["lan-gratuitous"] = rec(LAN, Ether(src="02:00:00:00:00:21", dst="ff:ff:ff:ff:ff:ff") /
                              ARP(op=1, hwsrc="02:00:00:00:00:21", psrc="10.0.0.21", pdst="10.0.0.21"))
    s["lan-broadcast-sender"] = rec(LAN, Ether(src="02:00:00:00:00:22", dst="ff:ff:ff:ff:ff:ff") /
                                    ARP(op=1, hwsrc="02:00:00:00:00:22", psrc="10.0.0.255", pdst="10.0.0.1"))
    s["wan-reply"] = rec(WAN, Ether(src="02:00:00:00:00:77", dst=WAN_MAC) /
                         ARP(op=2, hwsrc="02:00:00:00:00:77", psrc="198.51.100.1", hwdst=WAN_MAC, pdst="198.51.100.11"))
    s["wan-request-other"] = rec(WAN, Ether(src="02:00:00:00:00:78", dst="ff:ff:ff:ff:ff:ff") /
                                 ARP(op=1, hwsrc="02:00:00:00:00:78", psrc="198.51.100.30", pdst="198.51.100.99"))
    s["hold-then-resolve"] = b"".join(rec(EXC, exc(IP(src="198.51.100.10", dst="198.51.100.60") / UDP() /
                                                   Raw(bytes([i]) * 10))) for i in range(6)) + \
        rec(WAN, Ether(src="02:00:00:00:00:60", dst=WAN_MAC) /
            ARP(op=2, hwsrc="02:00:00:00:00:60", psrc="198.51.100.60", hwdst=WAN_MAC, pdst="198.51.100.10"), POLL)
    return s


def control_seeds():
    import json
    k = lambda seed, n=20: bytes((seed * 7 + i * 13 + 1) & 0xFF for i in range(n)).hex()  # noqa: E731
    lines = {
        "ping": [{"op": "ping", "id": 1}],
        "reads": [{"op": "stats"}, {"op": "tunnels"}, {"op": "list-sas"}, {"op": "sas"}, {"op": "routes"},
                  {"op": "neighbors"}, {"op": "subscribe"}],
        "add-out": [{"op": "add-sa", "direction": "out", "spi": 0x3001, "tunnel": "t1", "algo": "aes128-gcm",
                     "key": k(1), "esn": False, "seq": 5,
                     "lifetime": {"soft": {"bytes": 1000, "packets": 10}, "hard": {"seconds": 100}}}],
        "add-in-policy": [{"op": "add-sa", "direction": "in", "spi": "0x3002", "tunnel": "t1", "key": "0x" + k(2),
                           "replay_window": 4096, "local_selectors": ["10.0.0.0/24"],
                           "remote_selectors": ["172.16.0.0/16", "172.20.0.0/16"]}],
        "add-udp-esn": [{"op": "add-sa", "direction": "in", "spi": 0x3003, "tunnel": "t2", "algo": "aes256-gcm",
                         "key": k(3, 36), "esn": True, "encap": {"sport": 4500, "dport": 4501}}],
        "add-plain-on-udp": [{"op": "add-sa", "direction": "out", "spi": 0x3004, "tunnel": "t2", "key": k(4),
                              "encap": False}],
        "replace-update-delete": [
            {"op": "replace-sa", "direction": "out", "spi": 0x3005, "tunnel": "t3", "key": k(5)},
            {"op": "update-sa", "direction": "out", "spi": 0x3005, "tunnel": "t3", "remote": "198.51.100.21",
             "lifetime": {"hard": {"packets": 5}}},
            {"op": "replace-sa", "direction": "out", "spi": 0x3005, "tunnel": "t3", "key": k(5)},
            {"op": "delete-sa", "direction": "out", "spi": 0x3005, "tunnel": "t3"}],
        "update-config-sa": [{"op": "update-sa", "direction": "in", "spi": 0x2002, "tunnel": "t2",
                              "encap": {"sport": 4600, "dport": 4501}}],
        "delete-config-sa": [{"op": "delete-sa", "direction": "out", "spi": 0x1001}],
        "routes": [{"op": "add-route", "prefix": "172.30.0.0/16", "via": [{"tunnel": "t1", "priority": 1},
                                                                        {"tunnel": "t2", "priority": 2}]},
                   {"op": "replace-route", "prefix": "172.16.0.0/16", "via": [{"tunnel": "t3", "priority": 0}]},
                   {"op": "delete-route", "prefix": "172.30.0.0/16"},
                   {"op": "add-route", "prefix": "172.31.255.0/24", "via": [{"tunnel": "t2", "priority": 65535}]}],
        "tunnels": [{"op": "tunnel-down", "tunnel": "t1"}, {"op": "tunnel-up", "tunnel": "t3"},
                    {"op": "tunnel-up", "tunnel": "t1"}],
        "plugin-ike": [{"op": "alloc-spi", "dst": "198.51.100.10", "src": "203.0.113.1", "timeout_s": 30, "id": 1},
                       {"op": "add-sa", "direction": "in", "spi": 0x3010, "dst": "198.51.100.10",
                        "src": "203.0.113.1", "key": k(10), "origin": "plugin"},
                       {"op": "query-sa", "direction": "in", "spi": 0x3010, "dst": "198.51.100.10"},
                       {"op": "update-sa", "direction": "in", "spi": 0x3010, "dst": "198.51.100.10",
                        "lifetime": {"soft": {"seconds": 5}}},
                       {"op": "delete-sa", "direction": "in", "spi": 0x3010, "dst": "198.51.100.10"},
                       {"op": "flush-sas", "origin": "plugin"}],
        "alloc-and-release": [{"op": "alloc-spi", "dst": "198.51.100.11"},
                              {"op": "delete-sa", "direction": "in", "spi": "0x00003011", "dst": "198.51.100.11"},
                              {"op": "flush-sas"}],
        "refused": [{"op": "add-sa", "direction": "out", "spi": 0x1001, "tunnel": "t1", "key": k(6)},
                    {"op": "add-sa", "direction": "sideways", "spi": 1, "tunnel": "t9", "key": "zz"},
                    {"op": "add-route", "prefix": "172.16.0.1/16", "via": []},
                    {"op": "tunnel-down", "tunnel": "nope"}, {"op": "bogus", "spi": -1}],
    }
    seeds = {name: "\n".join(json.dumps(x) for x in reqs).encode() for name, reqs in lines.items()}
    seeds["raw-edge"] = b'{"op":"ping","op":"ping"}\n[1,2]\n{"key":"00","key":"11"}\n{"op":"add-sa","key":"\\u0030"}\n' \
        + b"[" * 20 + b"\n{\"op\":\"ping\",\"id\":\"\xff\xfe\"}\n{\"op\":\"ping\"\x00}"
    return seeds


def config_seeds():
    s = {}
    for f in sorted(os.listdir(os.path.join(ROOT, "..", "..", "examples"))):
        if f.endswith(".yaml"):
            with open(os.path.join(ROOT, "..", "..", "examples", f), "rb") as fh:
                s["example-" + f[:-5]] = fh.read()
    s["small"] = b"""eal: [--no-huge, -l, "0,1"]
workers: 1
mbufs: 8192
xfrm: { enabled: true }
exception: { enabled: true, device: "net_tap9,iface=x" }
ports:
  - { name: lan, device: net_ring0, role: protected, addresses: [10.0.0.1/24], gateway: 10.0.0.254,
      neighbors: [{ip: 10.0.0.9, mac: "02:00:00:00:00:09"}], rx_desc: 64, tx_desc: 64, mtu: 9000 }
  - { name: wan, device: net_ring1, role: unprotected, addresses: 198.51.100.10/24, neighbor_timeout: 5 }
tunnels:
  - { name: t, port: wan, local: 198.51.100.10, remote: 203.0.113.1, udp_encap: true, udp_src_port: 4501,
      dscp: 46, df: set, ttl: 9, mtu: 1400, mss_clamp: 1300, gateway: 198.51.100.1, up: false }
routes: [{ prefix: 172.16.0.0/12, via: [{ tunnel: t, priority: 3 }] }]
sas:
  - { direction: in, spi: 0x100, tunnel: t, algo: aes256-gcm, esn: true, replay_window: 4096,
      key: "aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99:01:02:03:04",
      local_selectors: 10.0.0.0/24, remote_selectors: [172.16.0.0/12] }
  - { direction: out, spi: 4294967295, tunnel: t, algo: aes128-gcm, seq: 4294967295,
      key: "0x0102030405060708090a0b0c0d0e0f10 11121314" }
"""
    s["typo"] = b"ports:\n  - name: lan\n    devcie: x\n    role: protected\n"
    s["anchors"] = b"x: &a {role: protected}\nports: [*a, {<<: *a, name: q}]\n"
    return s


def client_seeds():
    """Replies and events as espgw sends them (docs/control-api.md, the IKE
    protocol): byte 0 = what the plugin expects (0 nothing, 1 spi, 2 usage),
    | 0x80 to go through the line reader (several lines)."""
    replies = {
        "ok": (0, b'{"ok":true,"id":7}'),
        "larval": (0, b'{"ok":true,"id":7,"larval":true}'),
        "refused": (0, b'{"ok":false,"id":7,"error":"no such SA","code":"not-found"}'),
        "other-id": (0, b'{"ok":true,"id":8}'),
        "alloc-spi": (1, b'{"ok":true,"id":7,"spi":"0xc3a1f00d","expires_in_s":180}'),
        "alloc-spi-number": (1, b'{"ok":true,"id":7,"spi":4294967295}'),
        "query-sa": (2, b'{"ok":true,"id":7,"direction":"in","spi":"0x00005001","tunnel":"t1",'
                        b'"packets":12,"bytes":1200,"idle_seconds":0.25}'),
        "query-sa-idle-null": (2, b'{"ok":true,"id":7,"packets":0,"bytes":0,"idle_seconds":null}'),
        "expire-hard": (0, b'{"event":"sa-expire","kind":"hard","reason":"bytes","direction":"in",'
                           b'"spi":"0x00005001","src":"203.0.113.1","dst":"198.51.100.10","origin":"plugin"}'),
        "deleted": (0, b'{"event":"sa-deleted","direction":"out","spi":"0x00004001","tunnel":"a",'
                       b'"dst":"203.0.113.1","reason":"request"}'),
        "tunnel-state": (0, b'{"event":"tunnel-state","tunnel":"a","up":false}'),
        "bad": (0, b'{"ok":true,"ok":false,"id":5}'),
    }
    s = {k: bytes([m]) + line for k, (m, line) in replies.items()}
    s["stream"] = bytes([0x80 | 2]) + b"\n".join(line for _, line in replies.values()) + b"\npartial"
    return s


def write(name, seeds):
    d = os.path.join(CORPUS, name)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        if f.startswith("seed-"):
            os.unlink(os.path.join(d, f))
    for label, data in seeds.items():
        with open(os.path.join(d, f"seed-{label}.bin"), "wb") as fh:
            fh.write(data)


def main():
    write("fuzz_inbound", inbound_seeds())
    write("fuzz_outbound", outbound_seeds())
    write("fuzz_host_path", host_seeds())
    write("fuzz_control", control_seeds())
    write("fuzz_config", config_seeds())
    write("fuzz_espgw_client", client_seeds())
    # fuzz_xfrm: netlink messages from the XFRM tests' builder (a C++ helper
    # of the fuzz build; FUZZ_BUILD_DIR, default build-fuzz).
    build = os.environ.get("FUZZ_BUILD_DIR", os.path.join(ROOT, "..", "..", "build-fuzz"))
    helper = os.path.join(build, "tests", "fuzz", "xfrm_corpus")
    if os.access(helper, os.X_OK):
        d = os.path.join(CORPUS, "fuzz_xfrm")
        os.makedirs(d, exist_ok=True)
        subprocess.run([helper, d], check=True)
    else:
        print(f"make_corpus: {helper} not built: fuzz_xfrm seeds left as they are", file=sys.stderr)
    for extra in sys.argv[1:]:
        print("unknown argument", extra, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
