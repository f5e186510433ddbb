"""Accounting to the packet (dataplane/counters.h): for every port and
worker, received = forwarded + to_host + consumed + dropped, and staged =
sent + tx_dropped, exactly; TX bytes count every frame sent (checked against
the pcap files the ports wrote); tunnel and SA "in" counters count only the
packets that were accepted. Packets are made by scapy and OpenSSL
(esp_oracle), never by espgw."""

import subprocess

import pytest
from scapy.all import ARP, ICMP, IP, UDP, Ether, Raw

import esp_oracle as eo
import gateway_harness as h

pytestmark = pytest.mark.skipif(not h.ESPGW.exists(), reason=f"espgw not built at {h.ESPGW}")

ROUTES = [{"prefix": "172.31.0.0/16", "via": [{"tunnel": "aws-a1", "priority": 10}]}]
LOCAL, REMOTE = h.TUNNELS["aws-a1"]
ASKER = "02:00:00:00:09:09"


def arp(op, hwsrc, psrc, pdst, dst_mac="ff:ff:ff:ff:ff:ff"):
    return Ether(src=hwsrc, dst=dst_mac) / ARP(op=op, hwsrc=hwsrc, psrc=psrc, pdst=pdst)


def pcap_bytes(files):
    return sum(len(f) for p in files if p.exists() for f in h.pcap_records(p))


def pcap_count(files):
    return sum(1 for p in files if p.exists() for _ in h.pcap_records(p))


def check_balance(st, workers):
    acc = st["accounting"]
    assert acc["holds"], acc
    assert len(acc["workers"]) == workers
    for w in acc["workers"]:
        assert w["consistent"]
        for p in w["ports"]:
            assert p["rx_holds"] and p["tx_holds"], p["equation"]
            assert p["rx"] == p["forwarded"] + p["to_host"] + p["consumed"] + p["dropped"] + p["queued"] + p["held"], p
            assert p["staged"] == p["sent"] + p["tx_dropped"], p
    # The per-port totals match the port counters the stats have always shown.
    ports = {p["name"]: p for p in st["ports"]}
    for p in acc["ports"]:
        assert p["rx"] == ports[p["name"]]["rx"]["packets"]
        assert p["sent"] == ports[p["name"]]["tx"]["packets"]
    return {p["name"]: p for p in acc["ports"]}


@pytest.mark.parametrize("workers", [1, 2])
def test_every_frame_accounted_for(tmp_path, workers):
    sa_out, sa_in = h.Sa("out", 0x1001, "aws-a1"), h.Sa("in", 0x2001, "aws-a1")
    tx = eo.EspSender(sa_in.key, sa_in.spi, REMOTE, LOCAL)
    wan = lambda ip: eo.ether(h.WAN_MAC, h.NH_MAC, ip)

    # WAN side.
    good = [wan(tx.packet(s, eo.inner_udp("172.31.1.1", "10.240.128.20", b"g" * s, ident=s))) for s in range(1, 21)]
    no_route_back = wan(tx.packet(21, eo.inner_udp("192.0.2.1", "10.240.128.20", b"policy")))  # not from 172.31/16
    ttl1 = wan(tx.packet(22, bytes(IP(src="172.31.1.1", dst="10.240.128.20", ttl=1) / UDP() / Raw(b"t"))))
    replay = good[3]
    bad_icv = bytearray(tx.packet(23, eo.inner_udp("172.31.1.1", "10.240.128.20", b"icv")))
    bad_icv[-1] ^= 1
    ike = bytes(h.wan_frame(IP(src=REMOTE, dst=LOCAL) / UDP(sport=500, dport=500) / Raw(b"I" * 40)))
    not_for_us = bytes(h.wan_frame(IP(src=REMOTE, dst="198.51.100.77") / UDP(sport=1, dport=2)))
    wan_arps = [bytes(arp(1, ASKER, REMOTE, LOCAL)), bytes(arp(1, ASKER, REMOTE, "198.51.100.99")),
                bytes(arp(2, ASKER, REMOTE, LOCAL, dst_mac=h.WAN_MAC))]
    wan_in = good + [no_route_back, ttl1, replay, wan(bytes(bad_icv)), ike, not_for_us] + wan_arps

    # LAN side: traffic to encrypt, fragmentation (extra fragments are
    # generated), DF + too big (ICMP generated), TTL 1 (ICMP generated), no
    # route, a ping to the gateway (to the host), ARP.
    lan_pkts = [IP(src="10.240.128.5", dst="172.31.9.9", id=i) / UDP(sport=9, dport=9) / Raw(b"o" * (i * 10))
                for i in range(15)]
    lan_pkts += [IP(src="10.240.128.5", dst="172.31.9.9", flags=0, id=900) / UDP() / Raw(b"F" * 1700),
                 IP(src="10.240.128.5", dst="172.31.9.9", flags="DF") / UDP() / Raw(b"D" * 1472),
                 IP(src="10.240.128.5", dst="172.31.9.9", ttl=1) / UDP() / Raw(b"T"),
                 IP(src="10.240.128.5", dst="192.0.2.9") / UDP() / Raw(b"N"),
                 IP(src="10.240.128.5", dst="10.240.128.1") / ICMP()]
    lan_in = [bytes(h.lan_frame(p)) for p in lan_pkts] + [bytes(arp(1, ASKER, "10.240.128.2", "10.240.128.1"))]

    # Host side: IKE out to the peer and an ARP request (proxy-answered).
    host_mac = "02:00:00:00:0e:0e"
    host_in = [Ether(src=host_mac, dst="ff:ff:ff:ff:ff:ff") / IP(src=LOCAL, dst=REMOTE) / UDP(sport=500, dport=500) /
               Raw(b"K" * 50), arp(1, host_mac, LOCAL, REMOTE)]

    if workers == 1:
        split = {"wan_in": wan_in, "lan_in": lan_in}
    else:
        split = {"wan_in_split": [wan_in[0::2], wan_in[1::2]], "lan_in_split": [lan_in[0::2], lan_in[1::2]]}
    gw = h.Gateway(tmp_path, [sa_out, sa_in], routes=ROUTES, host_in=host_in, workers=workers, **split)
    with gw:
        st = gw.wait_rx(wan=len(wan_in), lan=len(lan_in))
        cli = subprocess.run([str(h.BUILD / "control" / "espctl"), "-s", gw.sock, "stats"], capture_output=True,
                             text=True, timeout=10)
    assert gw.proc.returncode == 0, gw.output
    assert cli.returncode == 0 and "ACCOUNTING: holds" in cli.stdout, cli.stdout + cli.stderr
    assert sum(1 for line in cli.stdout.splitlines() if line.startswith("  worker ")) == 3 * workers  # lan, wan, host
    bal = check_balance(st, workers)
    assert "accounting: holds" in gw.output  # the final report prints it too

    wanb, lanb, hostb = bal["wan"], bal["lan"], bal["exception"]
    assert wanb["rx"] == len(wan_in) and lanb["rx"] == len(lan_in) and hostb["rx"] == 2
    assert wanb["consumed"] == 3 and lanb["consumed"] == 1 and hostb["consumed"] == 1  # ARP
    assert st["arp_consumed"] == 5
    assert wanb["to_host"] == 1 and lanb["to_host"] == 1
    assert wanb["forwarded"] == len(good)
    assert wanb["dropped"] == 5  # policy, ttl, replay, icv, not for us
    # LAN: 15 + the fragmented one forwarded; DF/TTL/no-route dropped.
    assert lanb["forwarded"] == 16 and lanb["dropped"] == 3
    # Generated: an ARP reply and the extra fragment of the 1728-byte packet
    # on the WAN; 2 ICMP errors and an ARP reply on the LAN; the proxy ARP
    # reply to the host. (Next hops are static: no ARP requests.)
    assert wanb["generated"] == 2 and lanb["generated"] == 3 and hostb["generated"] == 1

    # Tunnel/SA "in": the accepted packets only (not the policy/TTL drops).
    tun = {t["name"]: t for t in st["tunnels"]}
    assert tun["aws-a1"]["in"]["packets"] == len(good)
    assert tun["aws-a1"]["in"]["bytes"] == sum(28 + s for s in range(1, 21))
    sa = next(s for s in st["sas"] if s["direction"] == "in")
    assert (sa["packets"], sa["bytes"]) == (len(good), sum(28 + s for s in range(1, 21)))

    # TX packets and bytes: exactly what the pcap files hold, for every port.
    ports = {p["name"]: p for p in st["ports"]}
    for name, files in (("lan", gw.lan_out), ("wan", gw.wan_out), ("exception", gw.host_out)):
        assert ports[name]["tx"]["packets"] == pcap_count(files), name
        assert ports[name]["tx"]["bytes"] == pcap_bytes(files), name
    assert ports["exception"]["tx"]["bytes"] > 0
    in_use, at_start = gw.mbufs()
    assert in_use == at_start


def test_hold_queue_is_accounted(tmp_path):
    # Decrypted packets for an unresolved LAN host: 4 wait in its hold queue
    # ("queued"), the rest are dropped (no_neighbor); at stop the held ones
    # are dropped as generated packets. The equations hold throughout.
    sa_out, sa_in = h.Sa("out", 0x1001, "aws-a1"), h.Sa("in", 0x2001, "aws-a1")
    tx = eo.EspSender(sa_in.key, sa_in.spi, REMOTE, LOCAL)
    wan_in = [eo.ether(h.WAN_MAC, h.NH_MAC, tx.packet(s, eo.inner_udp("172.31.1.1", "10.240.128.40", b"q" * s)))
              for s in range(1, 11)]
    gw = h.Gateway(tmp_path, [sa_out, sa_in], routes=ROUTES, wan_in=wan_in)
    for p in gw.config["ports"]:
        if p["name"] == "lan":
            p["addresses"] = ["10.240.128.1/24"]
    import yaml
    gw.config_path.write_text(yaml.safe_dump(gw.config, sort_keys=False))
    with gw:
        st = gw.wait_rx(wan=len(wan_in))
    bal = check_balance(st, 1)
    assert (bal["wan"]["queued"], bal["wan"]["dropped"], bal["wan"]["forwarded"]) == (4, 6, 0)
    assert st["drops"]["no_neighbor"] == 6
    assert bal["lan"]["generated"] >= 1  # the ARP request for .40
    assert "accounting: holds" in gw.output
    in_use, at_start = gw.mbufs()
    assert in_use == at_start
