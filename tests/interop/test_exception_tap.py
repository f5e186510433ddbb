"""The exception path on a real net_tap, with a real host socket as the IKE
daemon: IKE the host sends leaves by the WAN port towards the peer, and IKE
from the peer reaches the host's socket. Runs in a private network namespace
so the host's own interfaces and routes are never touched."""

import os
import subprocess
import textwrap
import time
import uuid

import pytest
import yaml

import gateway_harness as h

NS = f"espgw-t{uuid.uuid4().hex[:8]}"

pytestmark = [
    pytest.mark.skipif(not h.ESPGW.exists(), reason=f"espgw not built at {h.ESPGW}"),
    pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/net/tun"),
                       reason="needs root and /dev/net/tun (TAP devices, a network namespace)"),
]

HOST_SIDE = textwrap.dedent("""
    import socket, sys, time
    from scapy.all import AsyncSniffer, Ether, IP, UDP, Raw, conf, sendp
    conf.verb = 0
    nh_mac, wan_mac = sys.argv[1], sys.argv[2]
    sn = AsyncSniffer(iface="egw-wan", lfilter=lambda p: UDP in p and p[UDP].dport == 500, store=True)
    sn.start(); time.sleep(0.5)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("198.51.100.10", 500))
    s.sendto(b"IKE_SA_INIT from the host", ("203.0.113.1", 500))
    time.sleep(1.0)
    got = sn.stop()
    out = [p for p in got if bytes(p[UDP].payload) == b"IKE_SA_INIT from the host"]
    print("OUT", len(out), out[0][Ether].src if out else "-", out[0][Ether].dst if out else "-")
    s.settimeout(3)
    sendp(Ether(src=nh_mac, dst=wan_mac) / IP(src="203.0.113.1", dst="198.51.100.10") /
          UDP(sport=500, dport=500) / Raw(b"IKE_SA_INIT reply"), iface="egw-wan")
    try:
        data, peer = s.recvfrom(100)
        print("IN", data.decode(), peer[0])
    except OSError as e:
        print("IN none", e)
""")


def sh(*cmd, check=True):
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


def start_in_netns(tmp_path, ns, cfg):
    """espgw on config cfg in namespace ns (its files in tmp_path); the
    process, once its control socket is there."""
    path = tmp_path / "espgw.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    log = open(tmp_path / "espgw.log", "w+")
    proc = subprocess.Popen(["ip", "netns", "exec", ns, str(h.ESPGW), "--config", str(path)], stdout=log,
                            stderr=subprocess.STDOUT)
    deadline = time.time() + 20
    while not os.path.exists(cfg["control"]["socket"]) and time.time() < deadline:
        assert proc.poll() is None, open(tmp_path / "espgw.log").read()
        time.sleep(0.1)
    time.sleep(0.5)
    return proc


def test_exception_path_over_net_tap(tmp_path):
    if sh("ip", "netns", "add", NS, check=False).returncode != 0:
        pytest.skip("cannot create a network namespace here")
    proc = None
    try:
        sh("ip", "netns", "exec", NS, "ip", "link", "set", "lo", "up")
        sock = str(tmp_path / "espgw.sock")
        cfg = yaml.safe_load(subprocess.run([str(h.ESPGW), "--print-default-config"], capture_output=True,
                                            text=True, check=True).stdout)
        cfg["eal"] = ["-l", "0,1", "--no-huge", "-m", "512", "--no-pci", "--file-prefix", NS]
        cfg["control"] = {"socket": sock}
        cfg["ports"][0]["device"] = "net_tap0,iface=egw-lan"
        cfg["ports"][1]["device"] = "net_tap1,iface=egw-wan"
        cfg["exception"] = {"enabled": True, "device": "net_tap2,iface=egw-host"}
        proc = start_in_netns(tmp_path, NS, cfg)
        for cmd in (["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"],
                    ["ip", "addr", "add", "198.51.100.10/32", "dev", "egw-host"],
                    ["ip", "route", "add", "203.0.113.0/24", "dev", "egw-host", "src", "198.51.100.10"]):
            sh("ip", "netns", "exec", NS, *cmd)
        wan_mac = next(p["mac"] for p in cfg["ports"] if p["role"] == "unprotected")
        nh_mac = cfg["tunnels"][0]["next_hop_mac"]
        r = subprocess.run(["ip", "netns", "exec", NS, "/usr/bin/python3", "-c", HOST_SIDE, nh_mac, wan_mac],
                           capture_output=True, text=True, timeout=60)
        lines = dict(l.split(" ", 1) for l in r.stdout.splitlines() if l.startswith(("OUT", "IN")))
        assert lines.get("OUT", "").split() == ["1", wan_mac, nh_mac], r.stdout + r.stderr
        assert lines.get("IN") == "IKE_SA_INIT reply 203.0.113.1", r.stdout + r.stderr
        st = h.control_request(sock, {"op": "stats"})
        assert st["exception"]["to_host"] >= 1 and st["exception"]["from_host"] >= 1
    finally:
        if proc and proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=20)
        sh("ip", "netns", "del", NS, check=False)
        subprocess.run(["rm", "-rf", f"/var/run/dpdk/{NS}"])
    assert proc.returncode == 0
