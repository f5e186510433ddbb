"""Neighbour tables end to end through the real espgw daemon: per-destination
ARP on the LAN (on-link hosts get their own MAC, off-link destinations go
via the LAN router), static entries, the WAN gateway for what the host sends
through the exception path, the `neighbors` control operation and `espctl
neighbors`; and, in network namespaces, the Linux kernel's own ARP and IP
stack as the LAN hosts and router (resolution, aging and re-ARP)."""

import json
import os
import subprocess
import textwrap
import time
import uuid

import pytest
import yaml
from scapy.all import ARP, IP, UDP, Ether, Raw

import gateway_harness as h
from test_gateway import IN, OUT, arp

pytestmark = pytest.mark.skipif(not h.ESPGW.exists(), reason=f"espgw not built at {h.ESPGW}")

HOST1_MAC, HOST2_MAC, ROUTER_MAC = "02:00:00:00:10:14", "02:00:00:00:10:15", "02:00:00:00:10:fe"
WAN_GW_MAC, DNS_MAC = "02:00:00:00:20:01", "02:00:00:00:20:53"


def reconfigure(gw, ports):
    """Replaces keys of the ports' config ({"lan": {...}}); a None value removes the key."""
    for p in gw.config["ports"]:
        for k, v in ports.get(p["name"], {}).items():
            if v is None:
                p.pop(k, None)
            else:
                p[k] = v
    gw.config_path.write_text(yaml.safe_dump(gw.config, sort_keys=False))


def inbound(dsts, sa=None):
    """ESP frames (scapy-encrypted) carrying one UDP packet to each destination."""
    sa = sa or IN["aws-a1"]
    inner = [IP(bytes(IP(src="172.31.1.1", dst=d, id=100 + i) / UDP(sport=4000, dport=5000 + i) / Raw(b"n" * 20)))
             for i, d in enumerate(dsts)]
    return inner, [h.wan_frame(sa.encrypt(p, s)) for s, p in enumerate(inner, 1)]


def sent_ip(gw, port):
    return [f for f in gw.sent(port) if IP in f]


def test_lan_hosts_resolved_per_destination_and_off_link_via_the_router(tmp_path):
    dsts = ["10.240.128.20", "10.240.128.21", "192.168.50.5", "10.240.128.20", "192.168.60.6"]
    inner, wan_in = inbound(dsts)
    # The hosts' and the router's ARP replies to our requests (addressed to us).
    lan_in = [arp(2, HOST1_MAC, "10.240.128.20", "10.240.128.1", dst_mac=h.LAN_MAC),
              arp(2, HOST2_MAC, "10.240.128.21", "10.240.128.1", dst_mac=h.LAN_MAC),
              arp(2, ROUTER_MAC, "10.240.128.254", "10.240.128.1", dst_mac=h.LAN_MAC)]
    gw = h.Gateway(tmp_path, list(OUT.values()) + list(IN.values()), wan_in=wan_in, lan_in=lan_in)
    reconfigure(gw, {"lan": {"addresses": ["10.240.128.1/24"], "gateway": "10.240.128.254", "peer_mac": None}})
    with gw:
        deadline = time.time() + 10
        while len(sent_ip(gw, "lan")) < len(dsts) and time.time() < deadline:
            time.sleep(0.1)
        st = gw.wait_rx(wan=len(wan_in), lan=len(lan_in))
        neigh = gw.request({"op": "neighbors"})
        cli = subprocess.run([str(h.BUILD / "control" / "espctl"), "-s", gw.sock, "neighbors"], capture_output=True,
                             text=True, timeout=10)
    got = {(f[IP].dst, f[UDP].dport): f[Ether].dst for f in sent_ip(gw, "lan")}
    want_mac = {"10.240.128.20": HOST1_MAC, "10.240.128.21": HOST2_MAC, "192.168.50.5": ROUTER_MAC,
                "192.168.60.6": ROUTER_MAC}
    assert got == {(p.dst, p[UDP].dport): want_mac[p.dst] for p in inner}
    for f in sent_ip(gw, "lan"):
        assert f[Ether].src == h.LAN_MAC and f[IP].ttl == 63
    assert st["drops"]["no_neighbor"] == 0
    # The gateway asked for each on-link next hop, from its LAN address.
    asked = {f[ARP].pdst for f in gw.sent("lan") if ARP in f and f[ARP].op == 1}
    assert asked <= {"10.240.128.20", "10.240.128.21", "10.240.128.254"}
    assert neigh["ok"]
    table = {(n["port"], n["ip"]): n for n in neigh["neighbors"]}
    assert table[("lan", "10.240.128.20")]["mac"] == HOST1_MAC
    assert table[("lan", "10.240.128.21")]["mac"] == HOST2_MAC
    router = table[("lan", "10.240.128.254")]
    assert router["mac"] == ROUTER_MAC and router["gateway"] and router["state"] == "reachable"
    assert not router["static"] and router["age_s"] is not None
    assert ("lan", "192.168.50.5") not in table  # off-link: never resolved itself
    assert cli.returncode == 0, cli.stderr
    line = next(l for l in cli.stdout.splitlines() if "10.240.128.21" in l)
    assert HOST2_MAC in line and "reachable" in line
    gw.stop()
    from test_gateway import assert_no_leak
    assert_no_leak(gw)


def test_static_neighbors_are_used_without_arp_and_never_overwritten(tmp_path):
    inner, wan_in = inbound(["10.240.128.30", "10.240.128.30"])
    spoof = arp(2, "02:00:00:00:66:66", "10.240.128.30", "10.240.128.1", dst_mac=h.LAN_MAC)
    gw = h.Gateway(tmp_path, list(OUT.values()) + list(IN.values()), wan_in=wan_in, lan_in=[spoof])
    reconfigure(gw, {"lan": {"addresses": ["10.240.128.1/24"],
                             "neighbors": [{"ip": "10.240.128.30", "mac": "02:00:00:00:30:30"}]}})
    with gw:
        st = gw.wait_rx(wan=2, lan=1)
        neigh = gw.request({"op": "neighbors"})
    lan = sent_ip(gw, "lan")
    assert [f[Ether].dst for f in lan] == ["02:00:00:00:30:30"] * 2
    assert not [f for f in gw.sent("lan") if ARP in f and f[ARP].pdst == "10.240.128.30"]
    entry = next(n for n in neigh["neighbors"] if n["ip"] == "10.240.128.30")
    assert entry["static"] and entry["state"] == "static" and entry["mac"] == "02:00:00:00:30:30"
    assert st["drops"]["no_neighbor"] == 0


def test_unresolved_neighbor_holds_a_few_packets_then_drops_and_counts(tmp_path):
    # Nobody answers for .40: the entry holds 4 packets, the rest are
    # dropped as no_neighbor at once, the held ones when the daemon stops.
    inner, wan_in = inbound(["10.240.128.40"] * 10)
    gw = h.Gateway(tmp_path, list(OUT.values()) + list(IN.values()), wan_in=wan_in)
    reconfigure(gw, {"lan": {"addresses": ["10.240.128.1/24"]}})
    with gw:
        st = gw.wait_rx(wan=10)
        time.sleep(0.5)
        st = gw.stats()
    assert st["drops"]["no_neighbor"] == 6
    assert sent_ip(gw, "lan") == []
    reqs = [f for f in gw.sent("lan") if ARP in f]
    assert reqs and reqs[0][ARP].pdst == "10.240.128.40" and reqs[0][ARP].psrc == "10.240.128.1"
    assert "no_neighbor" in gw.output
    from test_gateway import assert_no_leak
    assert_no_leak(gw)


def test_exception_path_reaches_wan_addresses_that_are_not_tunnel_peers(tmp_path):
    host_mac = "02:00:00:00:0e:0e"
    ike = Ether(src=host_mac, dst=h.WAN_MAC) / IP(src=h.LOCAL_A, dst="192.0.2.99") / UDP(sport=500, dport=500) / Raw(b"I" * 40)
    dns = Ether(src=host_mac, dst=h.WAN_MAC) / IP(src=h.LOCAL_A, dst="198.51.100.53") / UDP(sport=3333, dport=53) / Raw(b"q" * 20)
    ntp = Ether(src=host_mac, dst=h.WAN_MAC) / IP(src=h.LOCAL_B, dst="203.0.113.200") / UDP(sport=123, dport=123) / Raw(b"t" * 48)
    wan_in = [arp(2, WAN_GW_MAC, "198.51.100.1", h.LOCAL_A, dst_mac=h.WAN_MAC),
              arp(2, DNS_MAC, "198.51.100.53", h.LOCAL_A, dst_mac=h.WAN_MAC)]
    gw = h.Gateway(tmp_path, list(OUT.values()), wan_in=wan_in, host_in=[ike, dns, ntp])
    reconfigure(gw, {"wan": {"addresses": [h.LOCAL_A + "/24", h.LOCAL_B + "/24"], "gateway": "198.51.100.1"}})
    with gw:
        deadline = time.time() + 10
        while len(sent_ip(gw, "wan")) < 3 and time.time() < deadline:
            time.sleep(0.1)
        st = gw.stats()
    out = {f[IP].dst: f for f in sent_ip(gw, "wan")}
    assert set(out) == {"192.0.2.99", "198.51.100.53", "203.0.113.200"}
    assert out["192.0.2.99"][Ether].dst == WAN_GW_MAC      # off-link: via the WAN gateway
    assert out["203.0.113.200"][Ether].dst == WAN_GW_MAC
    assert out["198.51.100.53"][Ether].dst == DNS_MAC      # on-link: its own MAC
    for f in out.values():
        assert f[Ether].src == h.WAN_MAC
    assert bytes(out["192.0.2.99"][IP]) == bytes(ike[IP])
    assert st["drops"]["no_neighbor"] == 0 and st["drops"]["no_route"] == 0
