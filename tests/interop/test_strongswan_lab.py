"""espgw driven by strongSwan (charon + kernel-espgw) against an independent
strongSwan peer (charon + kernel-libipsec, the "AWS side"), in the interop
guide's four-tunnel topology: scripts/lab.sh, one lab for the module.

Issue 11, "What it must show": 1 four tunnels by IKEv2, ping and TCP, the peer
decrypted espgw's traffic (and tshark does, with the peer's key); 2 100 rekeys under traffic, both sides, PFS, no
loss; 3 a rekey from a byte lifetime (espgw's soft expiry); 4 DPD failover
and back, with the gaps; 5 policy-based selectors both ways; 6 asymmetric
return; 7 bring-up time and the module's duration (printed at the end).

Loss is counted per sequence number by the receivers of a UDP stream each
way (lab_stream.py), never inferred from TCP. Every wait is bounded."""

import os
import re
import shutil
import subprocess
import time

import pytest
from scapy.all import IP, UDP, Raw
from scapy.layers.ipsec import ESP, SecurityAssociation

import gateway_harness as h
import lab as labmod
from lab import LAN_HOST, VPC_HOST, VPC2_HOST, Lab

PLUGIN_BUILT = h.BUILD / "control" / "strongswan" / "libstrongswan-kernel-espgw.so"
PLUGIN_INSTALLED = "/usr/lib/ipsec/plugins/libstrongswan-kernel-espgw.so"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, charon)"),
    pytest.mark.skipif(not h.ESPGW.exists(), reason=f"espgw not built at {h.ESPGW}"),
    pytest.mark.skipif(not (shutil.which("swanctl") and os.path.exists("/usr/lib/ipsec/charon")),
                       reason="strongSwan (strongswan-charon, strongswan-swanctl) not installed"),
    pytest.mark.skipif(not (PLUGIN_BUILT.exists() or os.path.exists(PLUGIN_INSTALLED)),
                       reason="kernel-espgw not built (meson -Dstrongswan=enabled after scripts/strongswan-src.sh)"),
]

FIGURES = []  # (what, value) printed at the end of the module


def running(pid):
    """Alive and not a zombie (init reaps charon late)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def note(what, value):
    FIGURES.append((what, value))


def wait(pred, timeout, what, step=0.02):
    """Polls pred() until it returns something true; its value."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s: {what}")
        time.sleep(step)


@pytest.fixture(scope="module")
def lab(request):
    t0 = time.monotonic()
    Lab.remove_stale(h.BUILD)  # labs of killed runs
    lab = Lab(h.BUILD)
    pids = []
    try:
        lab.up(timeout=60)
        pids = lab.pids()
        assert len(pids) == 3, pids
        note("lab bring-up (lab.sh up, all CHILD_SAs INSTALLED)", f"{lab.up_seconds:.2f} s")
        # Neighbours resolved on both sides before any count starts.
        wait(lambda: lab.sh("lan", "ping", "-c", "1", "-W", "1", VPC_HOST, check=False).returncode == 0,
             10, "a first ping through the lab")
        yield lab
    finally:
        lab.down()
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert lab.prefix + "-" not in left, left
        assert not lab.dir.exists()
        assert not os.path.exists(f"/var/run/dpdk/{lab.prefix}-espgw")
        for pid in pids:
            assert not running(pid), f"lab process {pid} still running after lab.sh down"
        note("module duration (bring-up, tests, teardown)", f"{time.monotonic() - t0:.1f} s")
        capman = request.config.pluginmanager.getplugin("capturemanager")
        with capman.global_and_fixture_disabled():
            print("\n== strongSwan lab figures")
            for what, value in FIGURES:
                print(f"   {what}: {value}")


@pytest.fixture(autouse=True)
def timed(request):
    t0 = time.monotonic()
    yield
    note(f"{request.node.name} duration", f"{time.monotonic() - t0:.1f} s")


def espgw_sas(lab, tunnel):
    return [s for s in lab.sas() if s["tunnel"] == tunnel]


def spi_int(s):
    return int(s, 16)


def child(lab, side, name):
    """The newest INSTALLED CHILD_SA of that name on that side."""
    cs = lab.installed(side, name)
    return max(cs, key=lambda c: int(c["uniqueid"])) if cs else None


def route_active(lab, prefix="172.31.0.0/16"):
    return next(r["active"] for r in lab.espgw({"op": "routes"})["routes"] if r["prefix"] == prefix)


def make_aws_send_on(lab, name):
    """libipsec sends on the most recently installed SA among CHILD_SAs with
    the same selectors (a1/a2 share them): a rekey started by the AWS side
    makes that tunnel its newest."""
    before = child(lab, "aws", name)["spi-out"]
    lab.rekey("aws", name)
    wait(lambda: (c := child(lab, "aws", name)) and c["spi-out"] != before, 5, f"AWS-side rekey of {name}")


# 1 -------------------------------------------------------------------------
def test_four_tunnels_ping_tcp_and_peer_decrypts(lab):
    for name in ("a1", "a2", "b1", "b2"):
        tunnel = labmod.TUNNELS[name][0]
        gw = child(lab, "gw", name)
        aws = child(lab, "aws", name)
        assert gw and aws, f"{name} not INSTALLED on both sides"
        assert gw["spi-in"] == aws["spi-out"] and gw["spi-out"] == aws["spi-in"]
        # The plugin installed exactly charon's SAs in espgw, with SPIs espgw allocated.
        sas = {(s["direction"], spi_int(s["spi"])): s for s in espgw_sas(lab, tunnel)}
        assert ("in", spi_int(gw["spi-in"])) in sas and ("out", spi_int(gw["spi-out"])) in sas, (name, sas)
        for s in sas.values():
            assert s["origin"] == "plugin" and s["udp_encap"], s
        want = "aes256-gcm" if name == "a2" else "aes128-gcm"
        assert {s["algo"] for s in sas.values()} == {want}, sas
        assert gw["encr-keysize"] == ("256" if name == "a2" else "128")
        assert lab.tunnels()[tunnel]["oper"] == "up"
    # AWS narrowed connection A to the /25 halves, kept the /24 on B.
    assert child(lab, "gw", "a1")["local-ts"] == ["10.240.128.0/25", "10.240.128.128/25"]
    assert child(lab, "gw", "b1")["local-ts"] == ["10.240.128.0/24"]
    assert route_active(lab) == "aws-a1"
    status = lab.status()
    assert status.count("INSTALLED") >= 2 * 4 and "aws-a1" in status and "0x" in status, status

    # The AWS side decrypted exactly what espgw encrypted: 5 pings raise its
    # a1 packets-in by what espgw's a1 outbound SA counted, 5.
    def a1_counts():
        aws = child(lab, "aws", "a1")
        out = next(s for s in espgw_sas(lab, "aws-a1") if s["direction"] == "out" and s["current"])
        assert spi_int(aws["spi-in"]) == spi_int(out["spi"])
        return int(aws["packets-in"]), int(aws["bytes-in"]), out["packets"]
    aws0, aws_bytes0, out0 = a1_counts()
    r = lab.sh("lan", "ping", "-c", "5", "-i", "0.2", "-W", "2", VPC_HOST, timeout=15)
    assert " 0% packet loss" in r.stdout, r.stdout
    aws1, _, out1 = wait(lambda: (c := a1_counts()) and c[0] - aws0 >= 5 and c, 5, "the AWS side to count 5 pings")
    assert aws1 - aws0 == out1 - out0 == 5, (aws0, aws1, out0, out1)

    # A third ESP implementation: Wireshark decrypts what espgw sent, captured
    # on the AWS side's end of the link, with the AWS side's inbound key.
    cap = lab.capture("aws", "eth0", f"udp port 4500 and src host {labmod.TUNNELS['a1'][1]}",
                      lab.dir / "a1.pcapng")
    time.sleep(0.3)
    seq0 = next(s for s in espgw_sas(lab, "aws-a1") if s["direction"] == "out" and s["current"])["next_seq"]
    lab.sh("lan", "ping", "-c", "3", "-i", "0.2", "-W", "2", VPC_HOST, timeout=15)
    time.sleep(0.3)
    cap.stop()
    aws = child(lab, "aws", "a1")
    decoded = {}
    for key in aws_keys(lab, aws["spi-in"], "inbound"):
        uat = (f'uat:esp_sa:"IPv4","{labmod.TUNNELS["a1"][1]}","{labmod.TUNNELS["a1"][2]}","0x{aws["spi-in"]}",'
               f'"AES-GCM with 16 octet ICV [RFC4106]","0x{key.hex()}","NULL",""')
        r = subprocess.run(["tshark", "-r", cap.path, "-o", "esp.enable_encryption_decode:TRUE", "-o", uat,
                            "-Y", "icmp", "-T", "fields", "-e", "esp.spi", "-e", "ip.src", "-e", "ip.dst",
                            "-e", "icmp.type", "-e", "esp.sequence"], capture_output=True, text=True, timeout=30)
        if r.stdout.strip():
            decoded[key] = [l.split("\t") for l in r.stdout.strip().splitlines()]
    assert len(decoded) == 1, decoded  # one key decrypts, the other direction's does not
    rows = next(iter(decoded.values()))
    assert rows == [[f"0x{aws['spi-in']}", f"{labmod.TUNNELS['a1'][1]},{LAN_HOST}",
                     f"{labmod.TUNNELS['a1'][2]},{VPC_HOST}", "8", str(seq0 + i)] for i in range(3)], rows

    # TCP both ways through the tunnels: 1 MiB echoed back by the VPC host.
    server = subprocess.Popen(["ip", "netns", "exec", lab.ns("aws"), labmod.PY, "-c", TCP_ECHO, VPC_HOST],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "listening"
        r = lab.sh("lan", labmod.PY, "-c", TCP_CLIENT, VPC_HOST, timeout=30)
        assert r.stdout.split() == ["ok", str(1 << 20)], r.stdout + r.stderr
    finally:
        server.kill()
        server.wait()
    # The 1 MiB went through the AWS side's decryption (libipsec drops some
    # of a TCP burst in its socket buffer; TCP resends them, the counters
    # then differ: only the exact count above is exact).
    aws2, aws_bytes2, out2 = a1_counts()
    assert aws_bytes2 - aws_bytes0 > 1 << 20
    note("item 1: AWS a1 decrypted", f"5 pings = 5 of espgw's packets exactly; TCP 1 MiB echoed: "
         f"{aws2 - aws1} packets in at AWS / {out2 - out1} sent by espgw")


TCP_ECHO = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5201)); s.listen(1); s.settimeout(30)
print("listening", flush=True)
c, _ = s.accept(); c.settimeout(30)
while True:
    d = c.recv(65536)
    if not d: break
    c.sendall(d)
c.close()
"""

TCP_CLIENT = r"""
import hashlib, os, socket, sys, threading
data = os.urandom(1 << 20)
s = socket.create_connection((sys.argv[1], 5201), timeout=30)
got = bytearray()
def rx():
    while len(got) < len(data):
        d = s.recv(65536)
        if not d: break
        got.extend(d)
t = threading.Thread(target=rx); t.start()
s.sendall(data); s.shutdown(socket.SHUT_WR); t.join(30)
print("ok" if bytes(got) == data else "mismatch", len(got))
"""


# 2 -------------------------------------------------------------------------
def test_100_rekeys_under_traffic_no_loss(lab):
    rekeys = 100
    make_aws_send_on(lab, "a1")  # both directions on a1, the tunnel being rekeyed
    log_mark = len(lab.log("gw"))
    events = lab.events()
    stream = lab.stream(port=5002, rate=500)
    stream.start()
    seen = {(s["direction"], s["spi"]) for s in espgw_sas(lab, "aws-a1")}
    initial_sas = set(seen)
    max_sas = 0
    dh_groups = set()
    durations = []
    for i in range(rekeys):
        side = "gw" if i % 2 == 0 else "aws"
        t0 = time.monotonic()
        lab.rekey(side, "a1")

        def new_sas_carry_traffic():
            sas = espgw_sas(lab, "aws-a1")
            new = [s for s in sas if (s["direction"], s["spi"]) not in seen]
            dirs = {s["direction"] for s in new}
            if dirs == {"in", "out"} and all(s["packets"] > 0 for s in new):
                return sas, new
            return None
        sas, new = wait(new_sas_carry_traffic, 10,
                        f"rekey {i} ({side}): a new SA pair on aws-a1 in espgw, both carrying traffic")
        assert len(new) == 2, new
        seen |= {(s["direction"], s["spi"]) for s in new}
        max_sas = max(max_sas, len(sas))
        # The gateway's charon sees the new CHILD_SA with PFS.
        gw = wait(lambda: (c := child(lab, "gw", "a1")) and
                  {spi_int(c["spi-in"]), spi_int(c["spi-out"])} == {spi_int(s["spi"]) for s in new} and c,
                  5, f"rekey {i}: the gateway's CHILD_SA has espgw's new SPIs")
        dh_groups.add(gw.get("dh-group"))
        durations.append(time.monotonic() - t0)

    # query_sa: charon's view of the current CHILD_SA's counters rises.
    c1 = child(lab, "gw", "a1")
    time.sleep(0.5)
    c2 = child(lab, "gw", "a1")
    assert c1["uniqueid"] == c2["uniqueid"]
    for k in ("bytes-in", "packets-in", "bytes-out", "packets-out"):
        assert int(c2[k]) > int(c1[k]) > 0, (k, c1, c2)
    res = stream.stop()
    for direction, r in res.items():
        note(f"item 2: {direction} stream over {rekeys} rekeys", r.summary())
    assert dh_groups == {"MODP_2048"}, dh_groups
    for direction, r in res.items():
        assert r.sent > 500 * 5 and not r.missing, (direction, r.summary(), r.missing[:20])

    # charon deletes the rekeyed SAs (inbound ones after delete_rekeyed_delay,
    # 2 s here): espgw ends with exactly the current pair.
    gw = child(lab, "gw", "a1")
    want = {("in", spi_int(gw["spi-in"])), ("out", spi_int(gw["spi-out"]))}
    wait(lambda: {(s["direction"], spi_int(s["spi"])) for s in espgw_sas(lab, "aws-a1")} == want, 10,
         "espgw to hold only aws-a1's current SA pair once charon deleted the rekeyed ones")
    assert not lab.espgw({"op": "list-sas"}).get("larval"), "reserved SPIs left behind"
    # Every CHILD_SA charon closed after a rekey (one per rekey) is gone from
    # espgw, deleted by charon's request, and nothing else was: espgw's
    # sa-deleted events are the closed SAs (and ones from before the loop). charon's closing line
    # carries the SA's bytes, which it had from espgw (query_sa): traffic
    # both ways on every one of them.
    events.close()
    closed = re.findall(r"closing CHILD_SA a1\{\d+\} with SPIs ([0-9a-f]{8})_i \((\d+) bytes\) "
                        r"([0-9a-f]{8})_o \((\d+) bytes\)", lab.log("gw")[log_mark:])
    initial = {spi_int(spi) for _, spi in initial_sas}  # from before the stream started: may be idle
    # Every pair a rekey made is closed but the current one. The pair current
    # before the loop is closed by the first rekey; when both charons
    # initiated at bring-up, a1 may hold a second pre-loop pair, which charon
    # closes as well (seen once in CI: 101 closings, the extra pair carrying
    # only the earlier test's outbound traffic, the other only its inbound).
    pre_loop = [c for c in closed if int(c[0], 16) in initial or int(c[2], 16) in initial]
    made_by_loop = [c for c in closed if c not in pre_loop]
    assert len(made_by_loop) == rekeys - 1, (len(closed), len(pre_loop))
    assert 1 <= len(pre_loop) <= len(initial) // 2, (pre_loop, sorted(initial))
    assert all(int(b_in) > 0 and int(b_out) > 0 for _, b_in, _, b_out in made_by_loop), closed
    closed_sas = {("in", int(i, 16)) for i, _, _, _ in closed} | {("out", int(o, 16)) for _, _, o, _ in closed}
    deleted = {(e["direction"], spi_int(e["spi"])) for e in events.events
               if e.get("event") == "sa-deleted" and e.get("tunnel") == "aws-a1"}
    # (an SA closed before the log mark may still be deleted in the window:
    # inbound SAs go delete_rekeyed_delay after their CHILD_SA closed)
    assert closed_sas <= deleted, sorted(closed_sas - deleted)
    assert {spi for _, spi in deleted - closed_sas} <= initial, sorted(deleted - closed_sas)
    assert {e["reason"] for e in events.events if e.get("event") == "sa-deleted"} == {"request"}
    note("item 2: rekey round trip (rekey -> new pair carrying traffic in espgw)",
         f"median {sorted(durations)[len(durations) // 2] * 1000:.0f} ms, max {max(durations) * 1000:.0f} ms; "
         f"at most {max_sas} SAs on aws-a1 at once")


# 3 -------------------------------------------------------------------------
def test_byte_lifetime_rekey_by_espgw_soft_expiry(lab):
    """A CHILD_SA with rekey_bytes/life_bytes (gateway side): only espgw counts
    the bytes, so the rekey can only come from espgw's soft expiry event
    (sa-expire -> the plugin -> charon's expire)."""
    rekey_bytes, life_bytes = 150_000, 600_000
    old = child(lab, "gw", "a1")
    # charon replaces a changed connection: it closes a1's IKE_SA and, by its
    # start action, opens it again under the new config (a rekey would keep
    # the CHILD_SA's old config).
    lab.write_swanctl_extra("gw", f"""
connections {{ a1 {{ children {{ a1 {{
  rekey_bytes = {rekey_bytes}
  life_bytes = {life_bytes}
  rand_bytes = 0
}} }} }} }}
""")
    try:
        wait(lambda: (c := child(lab, "gw", "a1")) and c["spi-in"] != old["spi-in"], 10,
             "a1 re-established with byte limits")
        wait(lambda: route_active(lab) == "aws-a1", 5, "traffic back on aws-a1")
        make_aws_send_on(lab, "a1")
        sa = next(s for s in espgw_sas(lab, "aws-a1") if s["direction"] == "out" and s["current"])
        assert sa["lifetime"]["soft"]["bytes"] == rekey_bytes and sa["lifetime"]["hard"]["bytes"] == life_bytes, sa
        log_mark = len(lab.log("gw"))
        events = lab.events()
        spis = {child(lab, "gw", "a1")["spi-in"]}
        stream = lab.stream(port=5003, rate=500)
        stream.start()
        # ~64 kB/s each way: a rekey every few seconds, without anyone asking.
        def rekeyed_twice():
            c = child(lab, "gw", "a1")
            if c:
                spis.add(c["spi-in"])
            return len(spis) >= 3
        wait(rekeyed_twice, 20, "two rekeys of a1 triggered by its byte lifetime", step=0.1)
        time.sleep(0.5)
        res = stream.stop()
        events.close()
        expires = [e for e in events.events if e.get("event") == "sa-expire" and e.get("tunnel") == "aws-a1"]
        assert any(e["kind"] == "soft" and e["reason"] == "bytes" for e in expires), events.events
        assert not any(e["kind"] == "hard" for e in expires), expires
        note("item 3: espgw's sa-expire events on aws-a1",
             ", ".join(f"{e['kind']}/{e['reason']} {e['direction']} {e['spi']}" for e in expires))
        log = lab.log("gw")[log_mark:]
        assert re.search(r"creating rekey job for CHILD_SA ESP/0x", log), "charon did not get a soft expire"
        assert not re.search(r"creating delete job for CHILD_SA", log), "a hard expire deleted a CHILD_SA"
        for direction, r in res.items():
            note(f"item 3: {direction} stream over byte-lifetime rekeys", r.summary())
            assert not r.missing, (direction, r.summary(), r.missing[:20])
    finally:
        cur = child(lab, "gw", "a1")
        lab.write_swanctl_extra("gw", "")
        wait(lambda: (c := child(lab, "gw", "a1")) and (cur is None or c["spi-in"] != cur["spi-in"]), 10,
             "a1 re-established without byte limits")
        wait(lambda: route_active(lab) == "aws-a1", 5, "traffic back on aws-a1")


# 4 -------------------------------------------------------------------------
def blackhole(lab, addr, on):
    """The AWS side stops answering on one endpoint: tc on its link sends
    every packet to or from that address to a device that is down (this
    kernel has no netfilter tools and no gact drop action)."""
    if on:
        for hook, field in (("ingress", "dst"), ("egress", "src")):
            lab.sh("aws", "tc", "filter", "add", "dev", "eth0", hook, "pref", "10", "protocol", "ip", "u32",
                   "match", "ip", field, f"{addr}/32", "action", "mirred", "egress", "redirect", "dev", "drop0")
    else:
        for hook in ("ingress", "egress"):
            lab.sh("aws", "tc", "filter", "del", "dev", "eth0", hook, "pref", "10", check=False)


def test_dpd_failover_and_return(lab):
    wait(lambda: route_active(lab) == "aws-a1", 10, "aws-a1 active")
    make_aws_send_on(lab, "a1")
    stream = lab.stream(port=5004, rate=500)
    stream.start()
    time.sleep(1.0)
    a2_before = lab.tunnels()["aws-a2"]["out"]["packets"]
    t_cut = time.monotonic_ns()
    blackhole(lab, labmod.TUNNELS["a1"][2], True)
    try:
        # DPD (1 s idle, then 3 x 0.5 s unanswered) declares a1 dead; charon
        # deletes its SAs; the tunnel loses its outbound SA and the route
        # moves to a2 by priority, with no script.
        wait(lambda: route_active(lab) == "aws-a2", 15, "the route to move to aws-a2 after DPD", step=0.01)
        t_moved = time.monotonic_ns()
        assert lab.tunnels()["aws-a1"]["oper_reason"] == "no-outbound-sa"
        assert not [s for s in espgw_sas(lab, "aws-a1") if s["direction"] == "out"]
        time.sleep(1.0)
        assert lab.tunnels()["aws-a2"]["out"]["packets"] > a2_before + 300
    finally:
        t_back = time.monotonic_ns()
        blackhole(lab, labmod.TUNNELS["a1"][2], False)
    drops0 = lab.stats()["drops"]
    # charon restarts a1 (dpd_action = restart); the route comes back.
    wait(lambda: route_active(lab) == "aws-a1", 20, "the route to return to aws-a1", step=0.01)
    t_returned = time.monotonic_ns()
    a1_back = lab.tunnels()["aws-a1"]["out"]["packets"]
    time.sleep(1.0)
    assert lab.tunnels()["aws-a1"]["out"]["packets"] > a1_back + 300
    res = stream.stop()
    drops = {k: v - drops0[k] for k, v in lab.stats()["drops"].items() if v != drops0[k]}
    note("item 4: espgw's drops while a1 came back", drops or "none")
    note("item 4: DPD detection (cut -> route on aws-a2)", f"{(t_moved - t_cut) / 1e6:.0f} ms")
    note("item 4: return (blackhole lifted -> route on aws-a1)", f"{(t_returned - t_back) / 1e6:.0f} ms")
    for direction, r in res.items():
        fail = r.gaps(t_cut, t_back)
        back = r.gaps(t_back, None)
        note(f"item 4: {direction} failover gap (lost packets, ms)", fail[:1] or "none")
        note(f"item 4: {direction} return gap (lost packets, ms)", back[:1] or "none")
        note(f"item 4: {direction} stream", r.summary())
        # Nothing lost outside the two transitions, and the outage is bounded
        # by DPD's 2.5 s plus the restart.
        assert sum(n for n, _ in fail) + sum(n for n, _ in back) == len(r.missing), (direction, fail, back)
        assert all(ms < 6000 for _, ms in fail + back), (direction, fail, back)
    # espgw sends on a1 again: its way back has no loss (the AWS side, as
    # IKE responder, installs its inbound SA before answering). The AWS side
    # may lose a few: it sends on its new SA as soon as it answered
    # IKE_AUTH, before charon (the initiator) installed espgw's inbound SA;
    # espgw counts exactly those as unknown_spi, nothing else.
    assert not res["up"].gaps(t_back, None), res["up"].gaps(t_back, None)
    assert set(drops) <= {"unknown_spi"}, drops
    assert sum(n for n, _ in res["down"].gaps(t_back, None)) == drops.get("unknown_spi", 0), drops


# 5 -------------------------------------------------------------------------
def aws_keys(lab, spi_hex, direction="outbound"):
    """Key candidates (key||salt) for the AWS side's SA with that SPI, from
    its charon's chd=4 log: the initiator and responder keys the same thread
    printed just before 'adding outbound ESP SA' (or inbound). Test tool only."""
    keys, cur, state = {}, {}, {}
    lines = lab.log("aws").splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"\S+ (\d+)\[CHD\] (.*)$", line)
        if not m:
            continue
        tid, text = m.groups()
        km = re.match(r"encryption (initiator|responder) key => (\d+) bytes", text)
        if km:
            state[tid] = (km.group(1), int(km.group(2)), bytearray())
            continue
        hm = re.match(r"\s+\d+: ((?:[0-9A-F]{2} )+)", text)
        if hm and tid in state and len(state[tid][2]) < state[tid][1]:
            state[tid][2].extend(bytes.fromhex(hm.group(1).replace(" ", "")))
            if len(state[tid][2]) == state[tid][1]:
                cur.setdefault(tid, {})[state[tid][0]] = bytes(state[tid][2])
            continue
        if text.startswith(f"adding {direction} ESP SA") and i + 1 < len(lines):
            sm = re.search(r"SPI 0x([0-9a-f]+)", lines[i + 1])
            if sm and int(sm.group(1), 16) == int(spi_hex, 16):
                keys = dict(cur.get(tid, {}))
    return list(keys.values())


def craft_from_aws(spi_hex, key, seq, inner):
    sa = SecurityAssociation(ESP, spi=int(spi_hex, 16), crypt_algo="AES-GCM", crypt_key=key, auth_algo="NULL",
                             tunnel_header=IP(src=labmod.TUNNELS["p1"][2], dst=labmod.TUNNELS["p1"][1]),
                             nat_t_header=UDP(sport=4500, dport=4500))
    pkt = sa.encrypt(inner, seq_num=seq)
    pkt[UDP].len = None  # scapy 2.5 leaves UDP.len = 8 (see the shared notes)
    pkt[UDP].chksum = 0
    return bytes(IP(bytes(pkt)))


SEND_RAW = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for h in sys.argv[1:]:
    b = bytes.fromhex(h)
    s.sendto(b, (socket.inet_ntoa(b[16:20]), 0))
"""

UDP_SINK = r"""
import socket, sys, select
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
while True:
    r, _, _ = select.select([s, sys.stdin], [], [], 10)
    if s in r:
        d, a = s.recvfrom(2048); print(a[0], d.decode(errors="replace"), flush=True)
    if sys.stdin in r or not r:
        break
"""


def test_policy_based_selectors(lab):
    if "aws-p1" not in lab.tunnels():
        pytest.fail("the lab has no policy-based tunnel (LAB_POLICY=0)")
    gw = child(lab, "gw", "p1")
    assert gw and gw["local-ts"] == ["10.240.128.0/24"] and gw["remote-ts"] == ["172.30.0.0/16"], gw
    sas = {s["direction"]: s for s in espgw_sas(lab, "aws-p1")}
    assert sas["in"]["traffic_selectors"] == {"local": ["10.240.128.0/24"], "remote": ["172.30.0.0/16"]}, sas
    assert sas["out"]["traffic_selectors"] == {"local": ["10.240.128.0/24"], "remote": ["172.30.0.0/16"]}, sas
    drops = lambda: lab.stats()["drops"]["policy"]
    aws_in = lambda: int(child(lab, "aws", "p1")["packets-in"])

    # Inside the selectors: both ways.
    r = lab.sh("lan", "ping", "-c", "3", "-i", "0.2", "-W", "2", VPC2_HOST, timeout=15)
    assert " 0% packet loss" in r.stdout, r.stdout

    # Not sent: a LAN source outside 10.240.128.0/24 towards the policy
    # tunnel's VPC is dropped by espgw (never encrypted).
    lab.sh("lan", "ip", "addr", "add", "10.240.129.10/32", "dev", "lo")
    p0, a0 = drops(), aws_in()
    lab.sh("lan", labmod.PY, "-c",
           "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('10.240.129.10', 0));"
           f"[s.sendto(b'outside', ('{VPC2_HOST}', 9)) for _ in range(5)]")
    wait(lambda: drops() >= p0 + 5, 5, "5 outbound packets outside the selectors dropped as policy")
    assert aws_in() == a0, "the AWS side received packets outside the selectors"

    # Not accepted: the AWS side's own key, an inner source outside 172.30/16.
    sink = subprocess.Popen(["ip", "netns", "exec", lab.ns("lan"), labmod.PY, "-c", UDP_SINK, "7777"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert sink.stdout.readline().strip() == "ready"
        aws = child(lab, "aws", "p1")
        keys = aws_keys(lab, aws["spi-out"])
        assert len(keys) == 2, f"no keys for SPI {aws['spi-out']} in the AWS side's log"
        seq = int(aws["packets-out"]) + 1000
        inside = [craft_from_aws(aws["spi-out"], k, seq + i, IP(src=VPC2_HOST, dst=LAN_HOST) /
                                 UDP(sport=7777, dport=7777) / Raw(f"inside-{i}".encode()))
                  for i, k in enumerate(keys)]
        lab.sh("aws", labmod.PY, "-c", SEND_RAW, *[p.hex() for p in inside])
        line = sink.stdout.readline().split()
        assert line[0] == VPC2_HOST and line[1].startswith("inside-"), line
        key = keys[int(line[1].split("-")[1])]
        p0 = drops()
        outside = craft_from_aws(aws["spi-out"], key, seq + 10, IP(src=VPC_HOST, dst=LAN_HOST) /
                                 UDP(sport=7777, dport=7777) / Raw(b"outside"))
        lab.sh("aws", labmod.PY, "-c", SEND_RAW, outside.hex())
        wait(lambda: drops() >= p0 + 1, 5, "the decrypted packet outside the selectors dropped as policy")
        sink.stdin.write("\n")
        sink.stdin.flush()
        rest = sink.communicate(timeout=15)[0]
        assert "outside" not in rest, rest
        note("item 5: policy-based p1", "inside the selectors: ping and a forged packet delivered; outside: "
             "5 LAN packets not sent, 1 forged AWS packet not delivered (both dropped as policy)")
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.wait()
        lab.sh("lan", "ip", "addr", "del", "10.240.129.10/32", "dev", "lo", check=False)


# 6 -------------------------------------------------------------------------
def test_asymmetric_return(lab):
    wait(lambda: route_active(lab) == "aws-a1", 10, "aws-a1 active")
    # The AWS side's newest SA among connection A's tunnels becomes a2's: it
    # answers over a2 while espgw sends over a1 (the guide's warning).
    make_aws_send_on(lab, "a2")
    t = lab.tunnels()
    asym0 = sum(x["asymmetric"] for x in t.values())
    a2_in0 = t["aws-a2"]["in"]["packets"]
    a1_out0 = t["aws-a1"]["out"]["packets"]
    stream = lab.stream(port=5006, rate=500)
    stream.start()
    time.sleep(2.0)
    res = stream.stop()
    t = lab.tunnels()
    got_a2 = t["aws-a2"]["in"]["packets"] - a2_in0
    asym = sum(x["asymmetric"] for x in t.values()) - asym0
    note("item 6: VPC -> LAN packets over aws-a2 while espgw sends on aws-a1",
         f"{got_a2} received on aws-a2, asymmetric +{asym}, {res['down'].summary()}")
    assert t["aws-a1"]["out"]["packets"] - a1_out0 >= res["up"].sent - len(res["up"].send_errors)
    assert got_a2 >= res["down"].sent - len(res["down"].send_errors)
    assert asym >= got_a2 > 0
    assert not res["down"].missing and not res["up"].missing
    make_aws_send_on(lab, "a1")  # symmetric again
