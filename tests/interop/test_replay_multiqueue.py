"""One inbound SA's packets on two workers at once (RSS after a spoofed
outer source or a NAT rebinding): the anti-replay window must still accept
each sequence number exactly once. Packets come from an independent ESP
implementation (OpenSSL's AES-GCM through esp_oracle, cross-checked against
scapy's ESP here)."""

import struct

import pytest
from scapy.all import IP, UDP, Raw

import esp_oracle as eo
import gateway_harness as h

pytestmark = pytest.mark.skipif(not h.ESPGW.exists(), reason=f"espgw not built at {h.ESPGW}")

ROUTES = [{"prefix": "172.31.0.0/16", "via": [{"tunnel": "aws-a1", "priority": 10}]}]


def test_esp_oracle_matches_scapy():
    sa = h.Sa("in", 0x2001, "aws-a1")
    remote, local = h.TUNNELS["aws-a1"][1], h.TUNNELS["aws-a1"][0]
    inner = eo.inner_udp("172.31.1.1", "10.240.128.20", b"oracle", ident=7)
    pkt = eo.EspSender(sa.key, sa.spi, remote, local).packet(42, inner)
    dec = sa.scapy_sa(42).decrypt(IP(pkt))
    assert bytes(dec) == inner


def test_same_packets_on_two_queues_each_sequence_number_once(tmp_path):
    n = 12000
    sa_in = h.Sa("in", 0x2001, "aws-a1")
    sas = [h.Sa("out", 0x1001, "aws-a1"), sa_in]
    local, remote = h.TUNNELS["aws-a1"]
    tx = eo.EspSender(sa_in.key, sa_in.spi, remote, local)
    frames = [eo.ether(h.WAN_MAC, h.NH_MAC, tx.packet(seq, eo.inner_udp(
        "172.31.1.1", "10.240.128.20", struct.pack("!I", seq), ident=seq & 0xFFFF))) for seq in range(1, n + 1)]
    gw = h.Gateway(tmp_path, sas, routes=ROUTES, workers=2, wan_in_split=[frames, frames])
    with gw:
        st = gw.wait_rx(wan=2 * n, timeout=60)
    assert gw.proc.returncode == 0, gw.output
    got = []
    for q in gw.lan_out:
        if q.exists():
            for f in h.pcap_records(q):
                got.append(struct.unpack("!I", f[14 + 28:14 + 32])[0])
    dup = len(got) - len(set(got))
    assert dup == 0, f"{dup} sequence numbers accepted twice"
    assert len(got) == n, f"{n - len(got)} sequence numbers never accepted"
    d = st["drops"]
    tun = {t["name"]: t for t in st["tunnels"]}
    assert tun["aws-a1"]["in"]["packets"] == n
    # Every second copy was refused by the window (inside it: replay; left
    # of it, when one worker ran far ahead: too old); nothing else dropped.
    assert d["replay"] + d["too_old"] == n, d
    assert st["drops_total"] == n, d
    in_use, at_start = gw.mbufs()
    assert in_use == at_start
