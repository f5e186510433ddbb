"""The soak's input: two pcaps that net_pcap replays forever (infinite_rx=1),
made with OpenSSL's AES-GCM (tests/interop/esp_oracle.py) and scapy, never
with espgw's code.

LAN (protected port): plain inner packets towards the tunnels' prefixes (the
ones that become ESP), packets for the routes the soak adds and deletes,
DF-clear packets too big for the tunnel (fragmented before encryption), and
hostile frames: mutated copies, truncated frames, inner fragments, TTL 1,
martians, IPv6, ARP, and frames for another MAC (the cheap bulk of the loop,
so the encrypted output stays at a rate the checker can decrypt in full).

WAN (unprotected port): for every tunnel and every rekey generation g, the
peer's first packets under the inbound SA of generation g (a fresh random
key the soak installs at its g-th rekey). Replayed forever, each of them is
accepted once, while its SA is installed, and is a replay (or an unknown SPI
before the SA comes and after it goes) on every other pass: make-before-
break rekeys, replays and wrong SPIs in one stream. Mixed in: mutated ESP
(forged ICVs, flipped headers), truncated ESP, ESP under SPIs never
installed, valid ESP as outer fragments, incomplete fragments, IKE, ARP."""

import os
import random
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "interop"))

import esp_oracle as eo  # noqa: E402
import gateway_harness as h  # noqa: E402
from scapy.all import ARP, IP, IPv6, UDP, Ether, Raw, fragment  # noqa: E402
from test_hostile import mutate  # noqa: E402

TUNNEL_NAMES = list(h.TUNNELS)            # aws-a1, aws-a2, aws-b1, aws-b2
LAN_HOST = "10.240.128.20"                # inbound packets' destination (static peer_mac)
MARK_OUT = b"SOAKOUT"                     # payload marker of LAN packets to encrypt
MARK_IN = b"SOAKIN"                       # payload marker of the peer's packets (tunnel, generation, index)


def in_spi(tunnel_index, gen):
    """SPI of tunnel t's inbound SA of generation g (unique for the run)."""
    return 0x20000000 | (tunnel_index << 20) | gen


class InboundKeys:
    """Fresh random key material for every inbound SA the soak will install."""

    def __init__(self, generations, seed):
        rng = random.Random(seed)
        self.generations = generations
        self.key = {(t, g): bytes(rng.getrandbits(8) for _ in range(20))
                    for t in range(len(TUNNEL_NAMES)) for g in range(generations)}


def lan(ip: bytes) -> bytes:
    return eo.ether(h.LAN_MAC, h.PEER_MAC, ip)


def wan(ip: bytes) -> bytes:
    return eo.ether(h.WAN_MAC, h.NH_MAC, ip)


def lan_frames(rng, total, valid):
    """`total` LAN frames, `valid` of which are clean packets to encrypt."""
    frames = []
    good = []
    for i in range(valid):
        k = i % 16
        if k == 14:
            dst = f"192.0.2.{i % 250 + 1}"           # routed only while the soak's 192.0.2.0/24 exists
        elif k == 15:
            dst = f"172.31.{200 + i % 50}.{i % 250 + 1}"  # the /17 the soak replaces between tunnels
        else:
            dst = f"172.31.{i % 200}.{i % 250 + 1}"
        size = rng.choice([0, 18, 100, 400, 1000, 1300])
        payload = MARK_OUT + struct.pack("!I", i) + bytes(size)
        good.append(lan(eo.inner_udp(f"10.240.128.{i % 200 + 2}", dst, payload, ident=i, sport=40000 + i % 100)))
    frames += good
    # DF clear and too big for the tunnel: fragmented before encryption.
    for i in range(max(1, valid // 16)):
        payload = MARK_OUT + struct.pack("!I", 100000 + i) + bytes(1700)
        frames.append(lan(eo.inner_udp("10.240.128.5", f"172.31.9.{i % 250 + 1}", payload, ident=5000 + i)))
    hostile = []
    hostile += [mutate(rng, rng.choice(good)) for _ in range(valid // 2)]
    hostile += [f[:rng.randint(1, 33)] for f in rng.sample(good, min(len(good), 16))]          # truncated
    hostile += [lan(bytes(IP(src="10.240.128.5", dst="172.31.1.1", ttl=1) / UDP() / Raw(b"t")))] * 4
    hostile += [lan(bytes(IP(src="10.240.128.5", dst=d) / UDP() / Raw(b"m")))
                for d in ("127.0.0.1", "224.0.0.5", "0.0.0.1", "240.0.0.1", "255.255.255.255")]
    hostile += [lan(bytes(IP(src="10.240.128.5", dst="172.31.3.3", flags="MF", frag=0, id=77) / UDP() /
                          Raw(b"f" * 64)))] * 4                                                   # inner fragment
    hostile += [bytes(Ether(src=h.PEER_MAC, dst=h.LAN_MAC) / IPv6() / UDP() / Raw(b"6"))] * 4
    hostile += [bytes(Ether(src="02:00:00:00:09:09", dst="ff:ff:ff:ff:ff:ff") /
                      ARP(op=1, hwsrc="02:00:00:00:09:09", psrc="10.240.128.9", pdst=p))
                for p in ("10.240.128.1", "10.240.128.77")]
    frames += hostile
    # The bulk: frames for another MAC on the segment (dropped as not_for_us).
    other = eo.ether("02:00:00:00:0a:0a", h.PEER_MAC, eo.inner_udp("10.240.128.5", "172.31.1.1", bytes(64)))
    frames += [other] * max(0, total - len(frames))
    rng.shuffle(frames)
    return frames


def wan_frames(rng, keys: InboundKeys, per_gen, extra_hostile):
    """The peer's ESP for every generation, plus hostile frames."""
    frames = []
    samples = []
    # At most ~64 valid datagrams arrive as fragments per loop: with the 50
    # incomplete ones they stay under the reassembly table's 256 entries, so
    # whether a generation's fragmented packet finds an entry is not luck
    # (a 60-minute loop with every 8th generation fragmented, ~3,600
    # datagrams, kept the table full and 117 generations never got one in).
    frag_every = max(8, -(-keys.generations * len(TUNNEL_NAMES) // 64))
    for t, name in enumerate(TUNNEL_NAMES):
        local, remote = h.TUNNELS[name]
        for g in range(keys.generations):
            tx = eo.EspSender(keys.key[(t, g)], in_spi(t, g), remote, local)
            for i in range(per_gen):
                payload = MARK_IN + struct.pack("!BHH", t, g, i) + bytes(rng.choice([0, 50, 300]))
                inner = eo.inner_udp(f"172.31.{1 + t}.{i % 250 + 1}", LAN_HOST, payload, ident=g & 0xFFFF)
                pkt = tx.packet(i + 1, inner, ident=rng.getrandbits(16))
                if i == per_gen - 1 and g % frag_every == 0:
                    # The last packet of some generations arrives as 2..4 outer
                    # fragments (DPDK reassembles at most 8 per datagram).
                    size = -(-(len(pkt) - 20) // rng.choice([2, 3, 4]))
                    frames += [bytes(h.wan_frame(f)) for f in fragment(IP(pkt), fragsize=(size + 7) // 8 * 8)]
                else:
                    frames.append(wan(pkt))
                if len(samples) < 4000:
                    samples.append(wan(pkt))
    hostile = [mutate(rng, rng.choice(samples)) for _ in range(extra_hostile)]
    hostile += [f[:rng.randint(14, 60)] for f in rng.sample(samples, min(200, len(samples)))]   # truncated ESP
    local, remote = h.TUNNELS["aws-a1"]
    for i in range(200):                                                                          # wrong SPIs
        wrong = eo.EspSender(os.urandom(20), 0x30000000 + rng.getrandbits(24), remote, local)
        hostile.append(wan(wrong.packet(i + 1, eo.inner_udp("172.31.1.1", LAN_HOST, b"w"))))
    for i in range(50):                                                                           # incomplete datagrams
        ip = IP(wrong.packet(1000 + i, eo.inner_udp("172.31.1.1", LAN_HOST, bytes(600)), ident=9000 + i))
        hostile.append(bytes(h.wan_frame(fragment(ip, fragsize=256)[0])))
    hostile += [bytes(h.wan_frame(IP(src=remote, dst=local) / UDP(sport=500, dport=500) / Raw(b"I" * 60)))] * 8
    hostile += [bytes(Ether(src="02:00:00:00:09:09", dst="ff:ff:ff:ff:ff:ff") /
                      ARP(op=1, hwsrc="02:00:00:00:09:09", psrc=remote, pdst=p))
                for p in (local, "198.51.100.99")]
    frames += hostile
    rng.shuffle(frames)
    return frames
