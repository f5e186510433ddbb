#!/usr/bin/python3
"""The four-tunnel demo, driven against a running espgw (embedded default).

espgw's LAN and WAN ports are net_tap interfaces (espgw-lan, espgw-wan).
This script plays the hosts on both sides with scapy: it sends LAN traffic to
the AWS VPC prefix, captures what leaves on the WAN side and decrypts it with
scapy's own ESP (an implementation independent of espgw), fails tunnel 1
over and back through espctl, and sends ESP from the "AWS side" that espgw
decrypts onto the LAN."""

import argparse
import subprocess
import sys
import time

import yaml
from scapy.all import ICMP, IP, UDP, AsyncSniffer, Ether, Raw, conf, sendp
from scapy.layers.ipsec import ESP, SecurityAssociation

conf.verb = 0

ap = argparse.ArgumentParser()
ap.add_argument("--espgw", required=True)
ap.add_argument("--espctl", required=True)
ap.add_argument("--socket", default="/run/espgw/espgw.sock")
args = ap.parse_args()

cfg = yaml.safe_load(subprocess.run([args.espgw, "--print-default-config"], check=True, capture_output=True,
                                    text=True).stdout)
ports = {p["name"]: p for p in cfg["ports"]}
tunnels = {t["name"]: t for t in cfg["tunnels"]}
out_sa = {s["tunnel"]: s for s in cfg["sas"] if s["direction"] == "out"}
in_sa = {s["tunnel"]: s for s in cfg["sas"] if s["direction"] == "in"}
LAN, WAN = ports["lan"], ports["wan"]


def key(s):
    return bytes.fromhex(s["key"].removeprefix("0x"))


def scapy_sa(s, tunnel, outbound):
    t = tunnels[tunnel]
    src, dst = (t["local"], t["remote"]) if outbound else (t["remote"], t["local"])
    return SecurityAssociation(ESP, spi=s["spi"], crypt_algo="AES-GCM", crypt_key=key(s), auth_algo="NULL",
                               tunnel_header=IP(src=src, dst=dst))


def espctl(*a):
    r = subprocess.run([args.espctl, "-s", args.socket, *a], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"espctl {' '.join(a)} failed: {r.stderr.strip()}")
    return r.stdout


def forwarded(p):
    """What a router sends on for `p`: its TTL one less, checksum to match."""
    q = IP(bytes(p))
    q.ttl -= 1
    del q.chksum
    return IP(bytes(q))


def banner(text):
    print(f"\n=== {text}")


def send_lan(n, first_id):
    """n ICMP echo requests from a LAN host to the AWS VPC; returns them."""
    sent = []
    for i in range(n):
        inner = IP(src="10.240.128.20", dst="172.31.5.10", id=first_id + i) / ICMP(id=7, seq=first_id + i) / \
            Raw(b"espgw-demo " + str(first_id + i).encode())
        inner = IP(bytes(inner))
        sent.append(inner)
        sendp(Ether(src=LAN["peer_mac"], dst=LAN["mac"]) / inner, iface="espgw-lan")
    return sent


def capture(iface, lfilter, send, expect, timeout=3.0):
    sn = AsyncSniffer(iface=iface, lfilter=lfilter, store=True)
    sn.start()
    time.sleep(0.3)
    sent = send()
    deadline = time.time() + timeout
    while time.time() < deadline and len(sn.results or []) < expect:
        time.sleep(0.05)
    got = sn.stop() or []
    return sent, list(got)


def is_esp(p):
    return IP in p and p[IP].proto == 50


def tunnel_of(ip):
    return next(name for name, t in tunnels.items() if t["remote"] == ip)


def outbound_round(label, first_id, expect_tunnel):
    banner(label)
    sent, got = capture("espgw-wan", is_esp, lambda: send_lan(5, first_id), 5)
    if len(got) != len(sent):
        sys.exit(f"expected {len(sent)} ESP packets on espgw-wan, saw {len(got)}")
    for inner, frame in zip(sent, got):
        t = tunnel_of(frame[IP].dst)
        esp = frame[ESP]
        clear = scapy_sa(out_sa[t], t, True).decrypt(IP(bytes(frame[IP])))
        ok = bytes(IP(bytes(clear))) == bytes(forwarded(inner))  # espgw routes: TTL one less
        print(f"  {frame[IP].src} -> {frame[IP].dst} ({t}) ESP spi=0x{esp.spi:08x} seq={esp.seq:<3} "
              f"{len(frame[IP])} B   scapy decrypts: {IP(bytes(clear)).summary()}  {'[match]' if ok else '[MISMATCH]'}")
        if t != expect_tunnel or not ok:
            sys.exit(f"expected traffic on {expect_tunnel}, decrypting to what we sent")
    print(f"  -> all {len(got)} packets left on {expect_tunnel} as ESP and decrypt to what the LAN host sent (TTL - 1)")


outbound_round("LAN host pings 172.31.5.10: route 172.31.0.0/16 via aws-a1/10 aws-a2/20 aws-b1/30 aws-b2/40", 1,
               "aws-a1")

banner("espctl tunnel down aws-a1  (what an IKE agent's updown hook calls when DPD declares the tunnel dead)")
espctl("tunnel", "down", "aws-a1")
print(espctl("routes"), end="")
outbound_round("the same traffic fails over to the next tunnel by priority", 101, "aws-a2")

banner("espctl tunnel up aws-a1")
espctl("tunnel", "up", "aws-a1")
outbound_round("traffic returns to the preferred tunnel", 201, "aws-a1")

banner("the AWS side answers: ESP from 203.0.113.1 (aws-a1, SPI 0x%08x) into espgw-wan" % in_sa["aws-a1"]["spi"])
isa = scapy_sa(in_sa["aws-a1"], "aws-a1", False)


def send_wan():
    replies = []
    for i in range(5):
        inner = IP(bytes(IP(src="172.31.5.10", dst="10.240.128.20", id=300 + i) / ICMP(type=0, id=7, seq=i + 1) /
                         Raw(b"espgw-demo reply " + str(i + 1).encode())))
        replies.append(inner)
        esp = isa.encrypt(inner, seq_num=i + 1)
        sendp(Ether(src=tunnels["aws-a1"]["next_hop_mac"], dst=WAN["mac"]) / esp, iface="espgw-wan")
    return replies


sent, got = capture("espgw-lan", lambda p: IP in p and p[IP].src == "172.31.5.10", send_wan, 5)
for inner, frame in zip(sent, got):
    ok = bytes(frame[IP]) == bytes(forwarded(inner))
    print(f"  on the LAN: {frame[Ether].src} -> {frame[Ether].dst} {frame[IP].summary()}  {'[match]' if ok else '[MISMATCH]'}")
if len(got) != len(sent) or any(bytes(f[IP]) != bytes(forwarded(i)) for i, f in zip(sent, got)):
    sys.exit("inbound ESP did not come out as the original packets")
print(f"  -> espgw decrypted all {len(got)} ESP packets back to the AWS host's replies (TTL - 1)")

banner("replaying those 5 ESP packets: anti-replay drops them")
for i in range(5):
    sendp(Ether(src=tunnels["aws-a1"]["next_hop_mac"], dst=WAN["mac"]) / isa.encrypt(sent[i], seq_num=i + 1),
          iface="espgw-wan")
time.sleep(0.5)

banner("espctl stats")
print(espctl("stats"), end="")
