"""Outer IPv4 fragments on the unprotected side (dataplane/reassembly.h):
ESP fragmented after encryption (as Linux and strongSwan peers send it when
the inner packet has DF clear) is reassembled and decrypted, in order and
out of order; duplicate/overlapping fragments and incomplete datagrams are
dropped, counted and their mbufs returned; fragmented IKE on UDP 500 reaches
the host's IKE daemon whole. Fragments are made by scapy's fragment(), ESP
by OpenSSL (esp_oracle)."""

import time

import pytest
from scapy.all import ICMP, IP, UDP, Raw, fragment

import esp_oracle as eo
import gateway_harness as h

pytestmark = pytest.mark.skipif(not h.ESPGW.exists(), reason=f"espgw not built at {h.ESPGW}")

ROUTES = [{"prefix": "172.31.0.0/16", "via": [{"tunnel": "aws-a1", "priority": 10}]}]
LOCAL, REMOTE = h.TUNNELS["aws-a1"]


def inner(i, size):
    return bytes(IP(src="172.31.1.1", dst="10.240.128.20", id=i, flags=0) / UDP(sport=7, dport=9) /
                 Raw(bytes((i + j) & 0xFF for j in range(size))))


def forwarded(raw):
    q = IP(raw)
    q.ttl -= 1
    del q.chksum
    return bytes(IP(bytes(q)))


def frames(ip_packets):
    return [bytes(h.wan_frame(p)) for p in ip_packets]


def test_outer_fragments(tmp_path):
    sa_out = h.Sa("out", 0x1001, "aws-a1")
    sa_in = h.Sa("in", 0x2001, "aws-a1")
    tx = eo.EspSender(sa_in.key, sa_in.spi, REMOTE, LOCAL)
    wan_in, expect = [], []
    n_frags = 0

    def esp(seq, size):
        return IP(tx.packet(seq, inner(seq, size), ident=0x4000 + seq))

    # In order: 2, 3 and 4 fragments.
    for seq, (size, fsz) in enumerate([(1400, 1000), (1450, 600), (1200, 320)], 1):
        fr = fragment(esp(seq, size), fragsize=fsz)
        assert len(fr) >= 2
        wan_in += frames(fr)
        expect.append(forwarded(inner(seq, size)))
    # Out of order (last fragment first, then the rest reversed).
    fr = fragment(esp(4, 1450), fragsize=400)
    wan_in += frames(list(reversed(fr)))
    expect.append(forwarded(inner(4, 1450)))
    # A whole (unfragmented) packet between them still works.
    wan_in += frames([esp(5, 100)])
    expect.append(forwarded(inner(5, 100)))
    # Duplicate first fragment: the entry is refused (both copies counted as
    # failed); the later fragments start a new entry that never completes
    # (counted as timeouts).
    fr = fragment(esp(6, 1300), fragsize=600)
    dup = frames([fr[0], fr[0]] + fr[1:])
    wan_in += dup
    failed = 2
    timeouts = len(dup) - 2
    # Overlapping fragments (a middle one re-sent at a shifted offset): refused.
    fr = fragment(esp(7, 1300), fragsize=400)
    over = IP(bytes(fr[1]))
    over.frag += 8
    del over.chksum
    ov = frames([fr[0], IP(bytes(over))] + fr[1:])
    wan_in += ov
    failed_overlap = len(ov)
    # Fragmented IKE on UDP 500 (IKE_AUTH with certificates): to the host, whole.
    ike = IP(bytes(IP(src=REMOTE, dst=LOCAL, id=0x5151, flags=0) / UDP(sport=500, dport=500) /
                   Raw(bytes(range(256)) * 9)))
    wan_in += frames(reversed(fragment(ike, fragsize=800)))
    # Fragmented ping to the gateway: the host's stack reassembles it.
    ping = IP(bytes(IP(src=REMOTE, dst=LOCAL, id=0x6161, flags=0) / ICMP() / Raw(b"p" * 2000)))
    ping_frags = fragment(ping, fragsize=1000)
    wan_in += frames(ping_frags)
    # Incomplete: the first two of three fragments, the last never comes.
    fr = fragment(esp(8, 1450), fragsize=504)
    assert len(fr) == 3
    wan_in += frames(fr[:2])
    timeouts += 2
    # Then a valid packet after all of the above.
    wan_in += frames(fragment(esp(9, 1450), fragsize=800))
    expect.append(forwarded(inner(9, 1450)))

    gw = h.Gateway(tmp_path, [sa_out, sa_in], routes=ROUTES, wan_in=wan_in, host_in=[])
    with gw:
        st = gw.wait_rx(wan=len(wan_in))
        deadline = time.time() + 15
        while st["drops"]["reassembly_timeout"] < timeouts and time.time() < deadline:
            time.sleep(0.2)
            st = gw.stats()
    assert gw.proc.returncode == 0, gw.output
    assert st["drops"]["reassembly_timeout"] == timeouts, st["drops"]
    assert [bytes(f[h.IP]) for f in gw.sent("lan")] == expect
    host = [bytes(f[h.IP]) for f in gw.sent("host")]
    assert bytes(ike) in host, "the reassembled IKE datagram did not reach the host"
    assert sorted(host) == sorted([bytes(ike)] + [bytes(f) for f in ping_frags])
    d = st["drops"]
    assert d["reassembly_failed"] == failed + failed_overlap, d
    assert st["drops_total"] == d["reassembly_timeout"] + d["reassembly_failed"], d
    # Reassembled: ESP 1, 2, 3, 4, 9 and the IKE datagram.
    assert st["reassembly"] == {"reassembled": 6, "timeouts": timeouts,
                                "failed": failed + failed_overlap}
    wan = {p["name"]: p for p in st["accounting"]["ports"]}["wan"]
    assert wan["held"] == 0 and st["accounting"]["holds"], st["accounting"]
    in_use, at_start = gw.mbufs()
    assert in_use == at_start


def test_incomplete_datagram_released_at_exit(tmp_path):
    # Fragments still waiting when espgw stops are freed and counted.
    sa_in = h.Sa("in", 0x2001, "aws-a1")
    tx = eo.EspSender(sa_in.key, sa_in.spi, REMOTE, LOCAL)
    fr = fragment(IP(tx.packet(1, inner(1, 1400), ident=77)), fragsize=504)
    gw = h.Gateway(tmp_path, [h.Sa("out", 0x1001, "aws-a1"), sa_in], routes=ROUTES, wan_in=frames(fr[:-1]))
    with gw:
        st = gw.wait_rx(wan=len(fr) - 1)
        wan = {p["name"]: p for p in st["accounting"]["ports"]}["wan"]
        assert wan["held"] == len(fr) - 1 and st["accounting"]["holds"]
    assert "accounting: holds" in gw.output
    in_use, at_start = gw.mbufs()
    assert in_use == at_start


def test_fragments_never_take_the_pools_last_quarter(tmp_path):
    # Anyone on the WAN can send fragments that never complete. Without a
    # floor they would fill the pool until the 2 s timeouts (on a NIC whose
    # RX rings refill from the pool, reception would stall): espgw refuses to
    # park a fragment when fewer than mbufs/4 are free (no_buffer).
    sa_in = h.Sa("in", 0x2001, "aws-a1")
    tx = eo.EspSender(sa_in.key, sa_in.spi, REMOTE, LOCAL)
    wan_in = []
    for d in range(300):  # 300 datagrams, all but the last fragment: ~2,000 to park
        fr = fragment(IP(tx.packet(d + 1, inner(d, 1400), ident=1000 + d)), fragsize=200)
        assert 6 <= len(fr) <= 8  # the library keeps at most 8 fragments of a datagram
        wan_in += frames(fr[:-1])
    mbufs = 2400  # the rings (64 descriptors) and caches need 2,048: a pool of this size
    gw = h.Gateway(tmp_path, [h.Sa("out", 0x1001, "aws-a1"), sa_in], routes=ROUTES, wan_in=wan_in,
                   ports_extra={"lan": {"rx_desc": 64, "tx_desc": 64}, "wan": {"rx_desc": 64, "tx_desc": 64}})
    gw.config["mbufs"] = mbufs
    gw.config_path.write_text(h.yaml.safe_dump(gw.config, sort_keys=False))
    with gw:
        st = gw.wait_rx(wan=len(wan_in))
        wan = {p["name"]: p for p in st["accounting"]["ports"]}["wan"]
        assert st["drops"]["no_buffer"] > 0, st["drops"]
        assert st["mbufs"]["in_use"] <= mbufs - mbufs // 4 + 64, st["mbufs"]  # + one burst in flight
        assert wan["held"] + st["drops"]["no_buffer"] + st["drops"]["reassembly_failed"] <= len(wan_in)
        assert st["accounting"]["holds"], st["accounting"]
    in_use, at_start = gw.mbufs()
    assert in_use == at_start
