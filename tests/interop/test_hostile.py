"""Hostile traffic into both ports of the real daemon: mutated frames of
every class (truncated, bad checksums, bad headers, wrong SPIs, replays,
forged ICVs, outer fragments in and out of order, overlapping and
incomplete, ARP, IKE, TFC padding and dummies, ECN CE marks, NAT-T) on two
workers. Afterwards the accounting equations hold exactly for every port
and worker, the mbufs in use are back to their starting count, and a valid
packet is still forwarded both ways. Packets by scapy and OpenSSL
(esp_oracle); mutations by a seeded RNG."""

import random
import struct
import time

import pytest
from scapy.all import ARP, ICMP, IP, UDP, Ether, Raw, fragment

import esp_oracle as eo
import gateway_harness as h

pytestmark = pytest.mark.skipif(not h.ESPGW.exists(), reason=f"espgw not built at {h.ESPGW}")

ROUTES = [{"prefix": "172.31.0.0/16", "via": [{"tunnel": "aws-a1", "priority": 10}, {"tunnel": "aws-b1", "priority": 20}]}]


def mutate(rng, frame: bytes) -> bytes:
    b = bytearray(frame)
    kind = rng.randrange(9)
    if kind == 0 and len(b) > 1:  # truncated anywhere, Ethernet header included
        return bytes(b[:rng.randrange(len(b))])
    if kind == 1:  # random bytes flipped (headers, SPI, sequence number, ciphertext, ICV)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(b))
            b[i] ^= rng.randint(1, 255)
        return bytes(b)
    if kind == 2 and len(b) > 34:  # IPv4 header byte changed, checksum left wrong
        b[14 + rng.randrange(20)] ^= 1 << rng.randrange(8)
        return bytes(b)
    if kind == 3 and len(b) > 34:  # IPv4 header byte changed, checksum fixed
        b[14 + rng.choice([1, 2, 3, 6, 7, 8, 9, 12, 16])] ^= 1 << rng.randrange(8)
        b[24:26] = b"\0\0"
        b[24:26] = struct.pack("!H", eo.ip_checksum(bytes(b[14:34])))
        return bytes(b)
    if kind == 4:  # garbage appended (Ethernet trailer, TFC-like lengths)
        return bytes(b) + bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64)))
    if kind == 5 and len(b) > 14:  # other ethertypes
        b[12:14] = struct.pack("!H", rng.choice([0x86DD, 0x8100, 0x0806, 0x88CC, 0x0000]))
        return bytes(b)
    if kind == 6 and len(b) > 14:  # IHL / version nonsense
        b[14] = rng.choice([0x44, 0x46, 0x4F, 0x55, 0x65, 0x00])
        return bytes(b)
    if kind == 7 and len(b) > 34:  # total length nonsense
        b[16:18] = struct.pack("!H", rng.choice([0, 19, 20, len(b) - 14 + rng.randint(1, 100), 65535]))
        return bytes(b)
    return bytes(b)


def one_tunnel():
    """Plain ESP on aws-a1: its SA pair, a sender under its inbound SA, the peer's address."""
    local_a, remote_a = h.TUNNELS["aws-a1"]
    sas = [h.Sa("out", 0x1001, "aws-a1"), h.Sa("in", 0x2001, "aws-a1")]
    return sas, eo.EspSender(sas[1].key, 0x2001, remote_a, local_a), remote_a


def two_tunnels():
    """The hostile tests' setup: plain ESP on aws-a1 (one_tunnel), ESP-in-UDP
    on aws-b1; the SAs, a sender per inbound SA, and framers for each side."""
    sas, esp_a, _ = one_tunnel()
    local_b, remote_b = h.TUNNELS["aws-b1"]
    sas += [h.Sa("out", 0x1002, "aws-b1", udp=True), h.Sa("in", 0x2002, "aws-b1", udp=True)]
    esp_b = eo.EspSender(sas[3].key, 0x2002, remote_b, local_b, udp_ports=(4500, 4500))
    wan = lambda ip: eo.ether(h.WAN_MAC, h.NH_MAC, ip)  # noqa: E731
    lan = lambda ip: eo.ether(h.LAN_MAC, h.PEER_MAC, ip)  # noqa: E731
    return sas, esp_a, esp_b, wan, lan


def test_hostile_traffic_balances_and_recovers(tmp_path):
    rng = random.Random(20261204)
    local_a, remote_a = h.TUNNELS["aws-a1"]
    local_b, remote_b = h.TUNNELS["aws-b1"]
    sas, esp_a, esp_b, wan, lan = two_tunnels()

    def inner_in(i, size=None):
        return eo.inner_udp(f"172.31.{i % 200}.{i % 250 + 1}", "10.240.128.20",
                            bytes(rng.getrandbits(8) for _ in range(size if size is not None else rng.randint(0, 300))),
                            ident=i & 0xFFFF)

    wan_frames, lan_frames = [], []
    seq = {"a": 0, "b": 0}

    def next_esp(which, raw_inner, **kw):
        seq[which] += 1
        return (esp_a if which == "a" else esp_b).packet(seq[which], raw_inner, **kw)

    valid_wan = []
    for i in range(3000):
        which = rng.choice("ab")
        c = rng.randrange(10)
        if c == 0:
            pkt = next_esp(which, inner_in(i), tfc=bytes(rng.randint(1, 200)))
        elif c == 1:
            pkt = next_esp(which, bytes(rng.randint(0, 100)), next_header=59)
        elif c == 2:
            pkt = next_esp(which, inner_in(i), tos=3)  # CE over Not-ECT: dropped
        else:
            pkt = next_esp(which, inner_in(i))
        valid_wan.append(wan(pkt))
    wan_frames += valid_wan
    wan_frames += [rng.choice(valid_wan) for _ in range(1500)]  # replays
    wan_frames += [mutate(rng, rng.choice(valid_wan)) for _ in range(9000)]
    # Wrong SPIs, wrong destination, IKE, keepalives, ARP.
    for i in range(300):
        wrong = eo.EspSender(sas[1].key, rng.getrandbits(32), remote_a, local_a)
        wan_frames.append(wan(wrong.packet(i + 1, inner_in(i))))
    wan_frames += [bytes(h.wan_frame(IP(src=remote_a, dst=rng.choice([local_a, "198.51.100.99"])) /
                                     UDP(sport=500, dport=rng.choice([500, 4500, 4501])) /
                                     Raw(b"\0\0\0\0" * rng.randint(0, 1) + bytes(rng.randint(0, 200)))))
                   for _ in range(200)]
    arps = [bytes(Ether(src="02:00:00:00:09:09", dst=rng.choice(["ff:ff:ff:ff:ff:ff", h.WAN_MAC])) /
                  ARP(op=rng.choice([1, 2]), hwsrc="02:00:00:00:09:09", psrc=remote_a,
                      pdst=rng.choice([local_a, local_b, "198.51.100.99"]))) for _ in range(200)]
    wan_frames += arps + [mutate(rng, a) for a in arps]
    # Outer fragments: in order, shuffled, overlapping (duplicated), incomplete, mutated.
    for i in range(150):
        which = rng.choice("ab")
        ip = IP(next_esp(which, inner_in(10000 + i, rng.randint(600, 1400)), ident=rng.getrandbits(16)))
        fr = [bytes(h.wan_frame(f)) for f in fragment(ip, fragsize=rng.choice([256, 512, 800]))]
        k = rng.randrange(5)
        if k == 1:
            rng.shuffle(fr)
        elif k == 2:
            fr.insert(rng.randrange(len(fr)), rng.choice(fr))
        elif k == 3:
            fr = fr[:-1]
        elif k == 4:
            fr = [mutate(rng, f) for f in fr]
        wan_frames += fr
    rng.shuffle(wan_frames)

    # LAN side: traffic to encrypt (some to fragment, DF, TTL 1, no route),
    # pings to the gateway, ARP; then the same mutated.
    valid_lan = []
    for i in range(2000):
        size = rng.choice([0, 10, 100, 500, 1400, 1600, 2000])
        flags = rng.choice([0, 2])
        ttl = rng.choice([64, 64, 64, 1])
        dst = rng.choice(["172.31.5.5", "172.31.200.1", "192.0.2.1", "10.240.128.1"])
        p = IP(src="10.240.128.5", dst=dst, id=i, flags=flags, ttl=ttl) / (ICMP() if dst == "10.240.128.1" else UDP(sport=1, dport=2))
        valid_lan.append(lan(bytes(p / Raw(bytes(size)))))
    lan_frames = valid_lan + [mutate(rng, rng.choice(valid_lan)) for _ in range(5000)]
    lan_frames += [bytes(Ether(src=h.PEER_MAC, dst="ff:ff:ff:ff:ff:ff") /
                         ARP(op=1, hwsrc=h.PEER_MAC, psrc="10.240.128.2", pdst="10.240.128.1"))] * 50
    rng.shuffle(lan_frames)

    # The last frame of queue 0 on each side: valid, after all the rest.
    final_in = eo.inner_udp("172.31.9.9", "10.240.128.20", b"still alive", ident=4242)
    final_wan = wan(esp_a.packet(10_000_000, final_in))
    final_lan_ip = IP(bytes(IP(src="10.240.128.5", dst="172.31.9.9", id=4343) / UDP(sport=3, dport=4) / Raw(b"still alive")))
    final_lan = lan(bytes(final_lan_ip))
    wq = [wan_frames[0::2] + [final_wan], wan_frames[1::2]]
    lq = [lan_frames[0::2] + [final_lan], lan_frames[1::2]]
    total_wan, total_lan = sum(map(len, wq)), sum(map(len, lq))

    t0 = time.time()
    gw = h.Gateway(tmp_path, sas, routes=ROUTES, workers=2, wan_in_split=wq, lan_in_split=lq, host_in=[],
                   tunnels_extra={"aws-b1": {"udp_src_port": 4500, "udp_dst_port": 4500}})
    with gw:
        st = gw.wait_rx(wan=total_wan, lan=total_lan, timeout=40)
        st = h.settle(gw)  # incomplete datagrams time out (2 s), then every mbuf is back
    assert gw.proc.returncode == 0, gw.output
    assert time.time() - t0 < 60

    h.assert_balanced(st, lan_rx=total_lan, wan_rx=total_wan)
    assert st["reassembly"]["reassembled"] > 0
    d = st["drops"]
    for reason in ("truncated", "bad_header", "unknown_spi", "replay", "icv_failure", "ce_not_ect",
                   "reassembly_timeout", "no_route", "ttl_exceeded", "mtu"):
        assert d[reason] > 0, f"no {reason} drop: the traffic did not cover that class"
    assert st["tfc_dummies"] > 0 and st["arp_consumed"] > 0 and st["exception"]["to_host"] > 0

    # The valid packets sent last got through, both ways.
    lan_out = [bytes(f) for f in h.pcap_records(gw.lan_out[0])] + [bytes(f) for f in h.pcap_records(gw.lan_out[1])]
    assert any(f[14:] and IP(f[14:]).id == 4242 and bytes(IP(f[14:])[Raw].load) == b"still alive" for f in lan_out
               if len(f) > 34 and f[12:14] == b"\x08\x00" and f[23] == 17)
    sa_out = sas[0].scapy_sa()
    found = False
    for q in gw.wan_out:
        for f in h.pcap_records(q):
            if len(f) > 34 and f[12:14] == b"\x08\x00" and f[23] == 50 and f[30:34] == bytes(map(int, h.TUNNELS["aws-a1"][1].split("."))):
                try:
                    dec = sa_out.decrypt(IP(f[14:]))
                except Exception:
                    continue
                if dec.id == 4343:
                    found = True
    assert found, "the last valid LAN packet was not encrypted and sent"
    in_use, at_start = gw.mbufs()
    assert in_use == at_start
