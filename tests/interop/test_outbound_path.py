"""Outbound path details checked end to end through the real espgw daemon,
with scapy as the independent implementation: pre-encryption fragments
(header checksums, reassembly), the TCP MSS clamp at every option alignment,
and the ICMP-error / ARP rules of RFC 1812 and RFC 792."""

import time

import pytest
from scapy.all import ARP, ICMP, IP, TCP, UDP, Ether, Raw, defragment
from scapy.utils import checksum

import gateway_harness as h
from test_gateway import ALL_SAS, OUT, arp, assert_no_leak, decrypt_outbound, forwarded, tunnel_of

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


def icmp_error_cases(kind):
    """(frame, whether RFC 1812 §4.3.2.7 allows an ICMP error for it) for a
    packet that would expire here (TTL 1) or needs fragmenting with DF set."""
    def pkt(src="10.240.128.5", payload=None, frag=0, l2dst=h.LAN_MAC, **kw):
        ip = IP(src=src, dst="172.31.1.1", frag=frag, **kw)
        ip.flags = "DF" if kind == "frag-needed" else 0
        if kind == "ttl-exceeded":
            ip.ttl = 1
        body = payload if payload is not None else UDP(sport=7, dport=9)
        size = 1480 if kind == "frag-needed" else 60
        p = ip / body
        p = IP(bytes(p / Raw(b"z" * max(0, size - len(p)))))
        return Ether(src=h.PEER_MAC, dst=l2dst) / p
    quote = IP(src="172.31.1.1", dst="10.240.128.5") / UDP(sport=9, dport=7)
    return [
        (pkt(), True),
        (pkt(payload=ICMP(type=8) / Raw(b"echo")), True),          # an echo request is no error
        (pkt(payload=ICMP(type=3, code=1) / quote), False),         # ICMP errors: never answered
        (pkt(payload=ICMP(type=11, code=0) / quote), False),
        (pkt(payload=ICMP(type=12) / quote), False),
        (pkt(payload=ICMP(type=4) / quote), False),
        (pkt(payload=ICMP(type=5) / quote), False),
        (pkt(frag=185), False),                                     # non-first fragment
        (pkt(src="255.255.255.255"), False),                        # limited broadcast source
        (pkt(src="224.0.0.5"), False),                              # multicast source
        (pkt(src="127.0.0.1"), False),                              # loopback source
        (pkt(src="0.0.0.0"), False),                                # "this host"
        (pkt(src="0.1.2.3"), False),                                # 0/8
        (pkt(src="240.0.0.1"), False),                              # class E
        (pkt(l2dst="ff:ff:ff:ff:ff:ff"), False),                    # link-layer broadcast
        (pkt(l2dst="01:00:5e:00:00:05"), False),                    # link-layer multicast
        (pkt(id=4242), True),
    ]


@pytest.mark.parametrize("kind", ["frag-needed", "ttl-exceeded"])
def test_no_icmp_error_about_errors_fragments_or_non_host_sources(tmp_path, kind):
    cases = icmp_error_cases(kind)
    gw = h.Gateway(tmp_path, ALL_SAS, lan_in=[f for f, _ in cases])
    with gw:
        st = gw.wait_rx(lan=len(cases))
    icmps = gw.sent("lan")
    answered = [f for f, ok in cases if ok]
    assert len(icmps) == len(answered), [i[ICMP].payload.summary() for i in icmps]
    for icmp, orig in zip(icmps, answered):
        assert icmp[ICMP].type == (3 if kind == "frag-needed" else 11)
        assert bytes(icmp[ICMP].payload)[:28] == bytes(orig[IP])[:28]
    reason = "mtu" if kind == "frag-needed" else "ttl_exceeded"
    # A source no host has (RFC 1812 §5.3.7) is dropped before: `martian`.
    martians = [f for f, _ in cases if f[IP].src.split(".")[0] in ("0", "127", "224", "240", "255")]
    assert len(martians) == 6
    assert st["drops"]["martian"] == len(martians)
    # Frames to a link-layer broadcast or multicast address are not ours
    # (RFC 1812 §5.3.4): `not_for_us`.
    l2_group = [f for f, _ in cases if f[Ether].dst != h.LAN_MAC]
    assert len(l2_group) == 2 and st["drops"]["not_for_us"] == len(l2_group)
    assert st["drops"][reason] == len(cases) - len(martians) - len(l2_group)
    assert st["icmp_sent"] == len(answered)
    assert len(gw.sent("wan")) == 0
    assert_no_leak(gw)


def test_inner_header_with_a_bad_checksum_is_dropped_not_encrypted(tmp_path):
    good = IP(bytes(IP(src="10.240.128.5", dst="172.31.1.1", id=1) / UDP() / Raw(b"g" * 30)))
    bad = IP(bytes(IP(src="10.240.128.5", dst="172.31.1.1", id=2, chksum=0x1234) / UDP() / Raw(b"b" * 30)))
    opts = IP(bytes(IP(src="10.240.128.5", dst="172.31.1.1", id=3, options=[b"\x01\x01\x01\x00"]) / UDP()))
    bad_opts = IP(bytes(opts))
    raw = bytearray(bytes(bad_opts))
    raw[22] ^= 0x01  # an option byte: only a checksum over the whole header sees it
    bad_opts = IP(bytes(raw))
    assert bad.chksum != IP(bytes(IP(src=bad.src, dst=bad.dst, id=2) / UDP() / Raw(b"b" * 30))).chksum
    gw = h.Gateway(tmp_path, ALL_SAS, lan_in=[h.lan_frame(p) for p in (good, bad, opts, bad_opts)])
    with gw:
        st = gw.wait_rx(lan=4)
    out = [decrypt_outbound(f, OUT["aws-a1"]) for f in gw.sent("wan")]
    assert [bytes(o) for o in out] == [bytes(forwarded(good)), bytes(forwarded(opts))]
    assert st["drops"]["bad_header"] == 2
    assert_no_leak(gw)


def test_arp_requests_from_non_hosts_and_gratuitous_ones_are_not_answered(tmp_path):
    asker = "02:00:00:00:09:09"
    host_mac = "02:00:00:00:0e:0e"
    lan_in = [arp(1, asker, sip, "10.240.128.1")
              for sip in ("0.0.0.0", "255.255.255.255", "224.0.0.1", "127.0.0.1", "240.0.0.9", "0.9.9.9")]
    lan_in += [arp(1, asker, "10.240.128.77", "10.240.128.77"),   # gratuitous, not ours
               arp(1, "01:00:5e:00:00:01", "10.240.128.2", "10.240.128.1"),  # group sender MAC
               arp(1, asker, "10.240.128.2", "10.240.128.1")]    # the one to answer
    host_in = [arp(1, host_mac, h.LOCAL_A, h.LOCAL_A),           # the host's own gratuitous ARP
               arp(1, host_mac, "127.0.0.1", "203.0.113.1"),
               arp(1, host_mac, h.LOCAL_A, "203.0.113.1")]       # proxied: answered
    gw = h.Gateway(tmp_path, ALL_SAS, lan_in=lan_in, host_in=host_in)
    with gw:
        st = gw.wait_rx(lan=len(lan_in))
        deadline = time.time() + 5
        while gw.stats()["ports"][2]["rx"]["packets"] < len(host_in) and time.time() < deadline:
            time.sleep(0.05)
        st = gw.stats()
    lan = [f for f in gw.sent("lan") if ARP in f]
    assert len(lan) == 1 and lan[0][ARP].op == 2 and lan[0][ARP].pdst == "10.240.128.2"
    host = [f for f in gw.sent("host") if ARP in f]
    assert len(host) == 1 and host[0][ARP].psrc == "203.0.113.1" and host[0][ARP].pdst == h.LOCAL_A
    assert st["arp_replies"] == 2
    assert_no_leak(gw)


def test_no_icmp_error_or_arp_reply_for_a_connected_subnets_broadcast_source(tmp_path):
    from test_neighbors import reconfigure
    dying = [IP(bytes(IP(src=s, dst="172.31.1.1", ttl=1, id=i) / UDP() / Raw(b"d" * 20)))
             for i, s in enumerate(("10.240.128.255", "10.240.128.5"))]
    asks = [arp(1, "02:00:00:00:09:09", s, "10.240.128.1") for s in ("10.240.128.255", "10.240.128.6")]
    gw = h.Gateway(tmp_path, ALL_SAS, lan_in=[h.lan_frame(p) for p in dying] + asks)
    reconfigure(gw, {"lan": {"addresses": ["10.240.128.1/24"]}})
    with gw:
        st = gw.wait_rx(lan=4)
    lan = gw.sent("lan")
    icmps = [f for f in lan if ICMP in f]
    assert len(icmps) == 1 and icmps[0][IP].dst == "10.240.128.5"
    replies = [f for f in lan if ARP in f and f[ARP].op == 2]
    assert len(replies) == 1 and replies[0][ARP].pdst == "10.240.128.6"
    assert st["drops"]["ttl_exceeded"] == 2


def test_packets_to_the_gateway_and_through_it_alternating_in_one_burst(tmp_path):
    # The worker decides "to the port's own address" once per run of one
    # destination: runs that alternate (ours, not, ours, not) in one burst
    # must each be decided anew. Ours go to the host as received; the others
    # are encrypted on the chosen tunnel.
    to_gw = [IP(bytes(IP(src="10.240.128.5", dst="10.240.128.1") / ICMP(id=9, seq=s))) for s in (1, 2)]
    through = [IP(bytes(IP(src="10.240.128.5", dst="172.31.1.1", id=s) / UDP(sport=5, dport=6) / Raw(b"t" * s)))
               for s in (10, 20)]
    order = [to_gw[0], through[0], to_gw[1], through[1]]
    gw = h.Gateway(tmp_path, ALL_SAS, lan_in=[h.lan_frame(p) for p in order], host_in=[])
    with gw:
        st = gw.wait_rx(lan=len(order))
    host = [f for f in gw.sent("host") if IP in f]
    assert [bytes(f[IP]) for f in host] == [bytes(p) for p in to_gw]
    wan = gw.sent("wan")
    assert [bytes(decrypt_outbound(f, OUT["aws-a1"])) for f in wan] == [bytes(forwarded(p)) for p in through]
    assert st["exception"]["to_host"] == 2
    assert st["drops"] == {k: 0 for k in st["drops"]}, st["drops"]
    assert_no_leak(gw)


def test_fragments_of_several_tunnels_in_one_burst_keep_each_sequence_contiguous(tmp_path):
    # DF-clear packets of 2 and 4 fragments, on three tunnels interleaved
    # packet by packet and in runs. Each 32-frame burst makes 80 work items:
    # 16 packets of 2 fragments and 8 of 4 fill the 64-item work array, which
    # the pipeline sends mid-way (counting its items per tunnel in chunks);
    # the last 8 packets' 16 fragments are sent after the loop, counted per
    # tunnel as they were made. Each tunnel reserves exactly the sequence
    # numbers its fragments use: every ESP frame decrypts, each tunnel's
    # numbers are 1, 2, 3... in wire order, and every packet reassembles.
    tunnels = ["aws-a1", "aws-a2", "aws-b1"]
    routes = [{"prefix": f"172.31.{i}.0/24", "via": [{"tunnel": t, "priority": 10}]} for i, t in enumerate(tunnels, 1)]
    sizes = [2000] * 16 + [5000] * 8 + [2000] * 8  # 2 and 4 fragments of at most 1,440 bytes of data
    order = [i % 3 for i in range(32)] + [(i // 3) % 3 for i in range(32)] + [2] * 8 + [0, 1] * 12
    inner = []
    for i, t in enumerate(order):
        size = sizes[i % 32] + i % 7
        p = IP(src="10.240.128.5", dst=f"172.31.{t + 1}.{i % 200 + 1}", flags=0, id=2000 + i) / UDP(sport=5, dport=6)
        inner.append(IP(bytes(p / Raw(bytes((i + j) & 0xFF for j in range(size - 28))))))
    gw = h.Gateway(tmp_path, ALL_SAS, routes=routes, lan_in=[h.lan_frame(p) for p in inner],
                   ports_extra={"lan": {"mtu": 9000}})
    with gw:
        st = gw.wait_rx(lan=len(inner))
    assert st["drops"] == {k: 0 for k in st["drops"]}, st["drops"]
    seqs = {t: [] for t in tunnels}
    plain = []
    for f in gw.sent("wan"):
        t = tunnel_of(f)
        ip, esp = h.esp_of(f)
        assert esp.spi == OUT[t].spi
        seqs[t].append(esp.seq)
        plain.append(decrypt_outbound(f, OUT[t]))
    for t, s in seqs.items():
        assert s == list(range(1, len(s) + 1)), f"{t}: sequence numbers not 1,2,3... in wire order: {s[:16]}"
    assert st["fragments"] == len(plain) == sum(2 if sizes[i % 32] == 2000 else 4 for i in range(len(inner)))
    whole = {p.id: p for p in defragment(plain)}
    assert sorted(whole) == [p.id for p in inner]
    for p in inner:
        assert bytes(whole[p.id]) == bytes(forwarded(p)), f"packet id {p.id} did not reassemble"
    assert_no_leak(gw)
