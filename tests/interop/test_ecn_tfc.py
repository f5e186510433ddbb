"""Inbound RFC 6040 (ECN at decapsulation) and RFC 4303 traffic flow
confidentiality: TFC padding after the inner packet (§2.4, §2.7) is accepted
and trimmed, dummy packets (next header 59, §2.6) are consumed and counted,
outer CE over a Not-ECT inner packet is dropped and counted. Inner packets by
scapy, ESP by OpenSSL (esp_oracle)."""

import os

import pytest
from scapy.all import IP, UDP, Raw

import esp_oracle as eo
import gateway_harness as h

pytestmark = pytest.mark.skipif(not h.ESPGW.exists(), reason=f"espgw not built at {h.ESPGW}")

ROUTES = [{"prefix": "172.31.0.0/16", "via": [{"tunnel": "aws-a1", "priority": 10}]}]
LOCAL, REMOTE = h.TUNNELS["aws-a1"]


def inner(i, tos=0, size=50):
    return bytes(IP(src="172.31.1.1", dst="10.240.128.20", id=i, tos=tos) / UDP(sport=7, dport=9) / Raw(b"e" * size))


def forwarded(raw, ecn=None):
    """What leaves on the LAN: TTL one less, ECN field as RFC 6040 sets it, checksum by scapy."""
    q = IP(raw)
    q.ttl -= 1
    if ecn is not None:
        q.tos = (q.tos & ~3) | ecn
    del q.chksum
    return bytes(IP(bytes(q)))


def test_tfc_padding_dummies_and_ecn(tmp_path):
    sa_out, sa_in = h.Sa("out", 0x1001, "aws-a1"), h.Sa("in", 0x2001, "aws-a1")
    tx = eo.EspSender(sa_in.key, sa_in.spi, REMOTE, LOCAL)
    frames, expect = [], []
    seq = 0

    def send(raw_inner, **kw):
        nonlocal seq
        seq += 1
        frames.append(eo.ether(h.WAN_MAC, h.NH_MAC, tx.packet(seq, raw_inner, **kw)))

    # TFC padding of several sizes (random bytes, as a real sender would).
    for i, extra in enumerate((1, 7, 64, 333, 900)):
        p = inner(100 + i)
        send(p, tfc=os.urandom(extra))
        expect.append(forwarded(p))
    # Dummy packets: next header 59, random payload, some with TFC-like lengths.
    for n in (0, 1, 40, 500):
        send(os.urandom(n), next_header=59)
    # RFC 6040 §4.2 (codepoints: 1 ECT(1), 2 ECT(0), 3 CE).
    ce_over_not_ect = inner(200, tos=0xb8)
    send(ce_over_not_ect, tos=3)
    ce_over_ect0 = inner(201, tos=0xb8 | 2)
    send(ce_over_ect0, tos=3)
    expect.append(forwarded(ce_over_ect0, ecn=3))
    ect1_over_ect0 = inner(202, tos=2)
    send(ect1_over_ect0, tos=1)
    expect.append(forwarded(ect1_over_ect0, ecn=1))
    ect0_over_not_ect = inner(203)
    send(ect0_over_not_ect, tos=2)
    expect.append(forwarded(ect0_over_not_ect))

    gw = h.Gateway(tmp_path, [sa_out, sa_in], routes=ROUTES, wan_in=frames)
    with gw:
        st = gw.wait_rx(wan=len(frames))
    assert gw.proc.returncode == 0, gw.output
    got = [bytes(f[IP]) for f in gw.sent("lan")]
    assert got == expect
    assert st["tfc_dummies"] == 4
    assert st["drops"]["ce_not_ect"] == 1
    assert st["drops_total"] == 1, st["drops"]
    wan = {p["name"]: p for p in st["accounting"]["ports"]}["wan"]
    assert (wan["forwarded"], wan["consumed"], wan["dropped"]) == (len(expect), 4, 1)
    assert st["accounting"]["holds"]
    tun = {t["name"]: t for t in st["tunnels"]}
    assert tun["aws-a1"]["in"]["packets"] == len(expect)  # dummies are not traffic
    in_use, at_start = gw.mbufs()
    assert in_use == at_start
