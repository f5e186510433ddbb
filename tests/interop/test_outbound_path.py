"""Outbound path details checked end to end through the real espgw daemon,
with scapy as the independent implementation: pre-encryption fragments
(header checksums, reassembly), the TCP MSS clamp at every option alignment,
and the ICMP-error / ARP rules of RFC 1812 and RFC 792."""

from scapy.all import ICMP, IP, TCP, UDP, Ether, Raw, defragment
from scapy.utils import checksum

import gateway_harness as h
from test_gateway import ALL_SAS, OUT, assert_no_leak, decrypt_outbound, forwarded

import pytest

pytestmark = pytest.mark.skipif(not h.ESPGW.exists(), reason=f"espgw not built at {h.ESPGW}")


def header_checksum_ok(ip):
    """The IPv4 header checksum as scapy (RFC 791) verifies it: the one's
    complement sum over the header, checksum field included, is 0xFFFF."""
    raw = bytes(ip)[: ip.ihl * 4]
    return checksum(raw) == 0


# 1401..9000 in steps of 97, plus the edges around the inner limit (1446 for
# ESP-GCM in a 1500-byte outer MTU), the 8-byte fragment boundary and 9000.
FRAG_SIZES = sorted(set(list(range(1401, 9001, 97)) + [1440, 1441, 1445, 1446, 1447, 1448, 1454, 1455, 2000,
                                                        2881, 2882, 8999, 9000]))


def test_df_clear_packets_of_every_size_reassemble_at_the_receiver(tmp_path):
    inner = []
    for i, size in enumerate(FRAG_SIZES):
        p = IP(src="10.240.128.5", dst="172.31.1.1", flags=0, id=1000 + i) / UDP(sport=5, dport=6)
        inner.append(IP(bytes(p / Raw(bytes((i + j) & 0xFF for j in range(size - 28))))))
    gw = h.Gateway(tmp_path, ALL_SAS, lan_in=[h.lan_frame(p) for p in inner], ports_extra={"lan": {"mtu": 9000}})
    with gw:
        st = gw.wait_rx(lan=len(inner))
    assert st["drops"] == {k: 0 for k in st["drops"]}, st["drops"]
    wan = gw.sent("wan")
    plain = []
    for f in wan:
        assert len(f[IP]) <= 1500
        d = decrypt_outbound(f, OUT["aws-a1"])
        assert header_checksum_ok(d), f"fragment id={d.id} off={d.frag} has header checksum {d.chksum:#06x}"
        plain.append(d)
    assert st["fragments"] == sum(1 for d in plain if d.flags.MF or d.frag)
    whole = {p.id: p for p in defragment(plain)}
    assert sorted(whole) == [p.id for p in inner]
    for p in inner:
        assert bytes(whole[p.id]) == bytes(forwarded(p)), f"size {len(p)} did not reassemble"
    assert_no_leak(gw)


def tcp_checksum_ok(p):
    """scapy recomputes the TCP checksum (pseudo header included) and compares."""
    fresh = IP(bytes(p))
    del fresh[TCP].chksum
    return IP(bytes(fresh))[TCP].chksum == p[TCP].chksum


MSS_LAYOUTS = [
    # (options before the NOPs, options after MSS): with 0..3 NOPs in front,
    # the MSS value lands at every offset mod 4.
    ([], []), ([("SAckOK", b"")], []), ([("WScale", 7)], []), ([("SAckOK", b""), ("WScale", 7)], []),
    ([("Timestamp", (1, 0))], [("WScale", 2)]), ([], [("SAckOK", b""), ("Timestamp", (9, 0))]),
    ([("WScale", 14), ("WScale", 14)], [("SAckOK", b"")]),
]


def test_mss_clamp_keeps_the_tcp_checksum_at_every_option_alignment(tmp_path):
    syns = []
    for i, (pre, post) in enumerate(MSS_LAYOUTS):
        for nops in range(4):
            for mss in (1460, 1380, 8960, 65535):
                opts = pre + [("NOP", None)] * nops + [("MSS", mss)] + post
                syns.append(IP(bytes(IP(src="10.240.128.5", dst="172.31.1.1", id=len(syns)) /
                                     TCP(sport=1000 + len(syns), dport=443, seq=len(syns) * 7919, flags="S",
                                         options=opts))))
    gw = h.Gateway(tmp_path, ALL_SAS, lan_in=[h.lan_frame(p) for p in syns])
    with gw:
        st = gw.wait_rx(lan=len(syns))
    out = [decrypt_outbound(f, OUT["aws-a1"]) for f in gw.sent("wan")]
    assert len(out) == len(syns)
    for sent, got in zip(syns, out):
        assert got.id == sent.id
        assert dict(o for o in got[TCP].options if isinstance(o, tuple))["MSS"] == 1379
        assert tcp_checksum_ok(got), f"options {sent[TCP].options}: TCP checksum {got[TCP].chksum:#06x} wrong"
        # Nothing else changed: same options but the MSS value.
        want = IP(bytes(forwarded(sent)))
        want[TCP].options = [(n, 1379) if n == "MSS" else (n, v) for n, v in want[TCP].options]
        del want[TCP].chksum
        assert bytes(got) == bytes(IP(bytes(want)))
    assert st["mss_clamped"] == len(syns)
