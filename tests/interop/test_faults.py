"""Degrade, don't die: faults injected into a running espgw. For each one the
drops are counted by reason, the accounting equations still hold, the other
ports keep forwarding, and espgw recovers when the fault goes away.

- a port whose link fails at run time (a net_tap interface set down, then up
  again), and with it a TX ring the driver does not drain;
- mempool exhaustion (a deliberately tiny pool, filled by fragments that
  never complete);
- a control client flood while the workers forward: the worker's rate with
  and without the flood, in the same run.

Traffic is made with esp_oracle (OpenSSL) and scapy; the wire output is
checked by decrypting it with OpenSSL, independent of espgw."""

import json
import os
import socket
import struct
import subprocess
import threading
import time

import pytest
import yaml
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from scapy.all import IP, UDP, Raw, fragment

import esp_oracle as eo
import gateway_harness as h

pytestmark = pytest.mark.skipif(not h.ESPGW.exists(), reason=f"espgw not built at {h.ESPGW}")

LOCAL_A, REMOTE_A = h.TUNNELS["aws-a1"]
LOCAL_B, REMOTE_B = h.TUNNELS["aws-b1"]
# aws-a1 carries 172.31.0.0/17 out of port "wan" (net_pcap); aws-b1 carries
# 172.31.128.0/17 out of port "wan2" (net_tap, the one that fails).
ROUTES = [{"prefix": "172.31.0.0/17", "via": [{"tunnel": "aws-a1", "priority": 10}]},
          {"prefix": "172.31.128.0/17", "via": [{"tunnel": "aws-b1", "priority": 10}]}]
OUT_A, OUT_B = h.Sa("out", 0x1001, "aws-a1"), h.Sa("out", 0x1002, "aws-b1")
IN_A, IN_B = h.Sa("in", 0x2001, "aws-a1"), h.Sa("in", 0x2002, "aws-b1")


def lan_traffic(n=64, size=200):
    """Half for aws-a1 (port wan), half for aws-b1 (port wan2)."""
    out = []
    for i in range(n):
        dst = f"172.31.{1 + i % 100}.{i % 250 + 1}" if i % 2 == 0 else f"172.31.{130 + i % 100}.{i % 250 + 1}"
        out.append(bytes(h.lan_frame(IP(src="10.240.128.5", dst=dst, id=i) / UDP(sport=1000 + i, dport=9) /
                                     Raw(b"f" * size))))
    return out


def tap_name(tag):
    return f"kf{os.getpid() % 100000}{tag}"[:15]


def ip_link(name, state):
    subprocess.run(["ip", "link", "set", name, state], check=True, timeout=10)


def three_port_gateway(tmp_path, wan2_device, lan_in, **kw):
    """lan (net_pcap, replayed forever), wan (net_pcap), wan2 (any device)."""
    gw = h.Gateway(tmp_path, [OUT_A, OUT_B, IN_A, IN_B], routes=ROUTES, lan_in=lan_in, infinite_lan=True, **kw)
    c = gw.config
    wan = next(p for p in c["ports"] if p["name"] == "wan")
    wan["addresses"] = [LOCAL_A]
    c["ports"].append({"name": "wan2", "device": wan2_device, "role": "unprotected", "addresses": [LOCAL_B],
                       "mac": "02:00:00:00:00:03"})
    for t in c["tunnels"]:
        if t["name"] in ("aws-b1", "aws-b2"):
            t["port"] = "wan2"
    gw.config_path.write_text(yaml.safe_dump(c, sort_keys=False))
    return gw


def port(st, name):
    return next(p for p in st["ports"] if p["name"] == name)


def acc_port(st, name):
    return next(p for p in st["accounting"]["ports"] if p["name"] == name)


def assert_holds(st):
    acc = st["accounting"]
    for w in acc["workers"]:
        assert w["consistent"], w
        for p in w["ports"]:
            assert p["rx_holds"] and p["tx_holds"], (w["worker"], p["equation"])
    assert acc["holds"]


def rate(gw, key, seconds=1.0):
    """(packets per second of key(stats), last stats) over `seconds`."""
    a = gw.stats()
    t = time.time()
    time.sleep(seconds)
    b = gw.stats()
    return (key(b) - key(a)) / (time.time() - t), b


def final_drop(gw, reason):
    """A drop counter from the final report espgw prints on exit."""
    for line in gw.output.splitlines():
        if line.startswith("drops:"):
            for kv in line.split()[1:]:
                k, v = kv.split("=")
                if k == reason:
                    return int(v)
            return 0
    raise AssertionError("no drops line in the final report:\n" + gw.output)


def final_tx_dropped(gw, port_name):
    """tx_dropped of a port, all workers, from the final report's equations."""
    total = 0
    for line in gw.output.splitlines():
        f = line.split()
        if len(f) > 3 and f[0] == "worker" and f[2] == port_name:
            total += int(line.rsplit("tx_dropped", 1)[1].split()[0])
    return total


def decrypt_all(path, sa):
    """Every ESP frame of this SA in the capture decrypts (OpenSSL); their count."""
    aead = AESGCM(sa.key[:-4])
    n = 0
    for pkt in h.pcap_records(path):
        ip = pkt[14:]
        if pkt[12:14] != b"\x08\x00" or ip[9] != 50:
            continue
        esp = ip[(ip[0] & 0xF) * 4:struct.unpack(">H", ip[2:4])[0]]
        spi = struct.unpack(">I", esp[:4])[0]
        if spi != sa.spi:
            continue
        aead.decrypt(sa.key[-4:] + esp[8:16], esp[16:], esp[:8])
        n += 1
    return n


def test_link_down_at_run_time_is_counted_and_survived(tmp_path):
    # wan2 is a net_tap whose interface goes down under full traffic: its
    # driver refuses every packet (what a TX ring that never drains looks
    # like to a worker: rte_eth_tx_burst takes fewer than it was given).
    # They are counted as tx_full against wan2; wan keeps forwarding; when
    # the link comes back, wan2 sends again.
    name = tap_name("w")
    gw = three_port_gateway(tmp_path, f"net_tap9,iface={name}", lan_traffic())
    wan2_sent = lambda s: port(s, "wan2")["tx"]["packets"]  # noqa: E731
    wan_sent = lambda s: port(s, "wan")["tx"]["packets"]  # noqa: E731
    with gw:
        ip_link(name, "up")
        time.sleep(0.5)
        up_rate, st = rate(gw, wan2_sent)
        assert up_rate > 1000, "wan2 does not forward before the fault"
        assert st["drops"]["tx_full"] == 0
        ip_link(name, "down")
        time.sleep(0.5)
        down_before = gw.stats()
        down_rate, st = rate(gw, wan2_sent, 2.0)
        wan_rate, _ = rate(gw, wan_sent)
        full = st["drops"]["tx_full"] - down_before["drops"]["tx_full"]
        refused = acc_port(st, "wan2")["tx_dropped"] - acc_port(down_before, "wan2")["tx_dropped"]
        assert down_rate == 0, "packets sent on a link that is down"
        # Counted by reason and against wan2 (the two are read a few
        # microseconds apart here; the final report below compares them exactly).
        assert full > 1000 and refused > 1000, (full, refused)
        assert wan_rate > 1000, "the other port stopped forwarding"
        assert_holds(st)
        ip_link(name, "up")
        time.sleep(0.5)
        back_rate, st = rate(gw, wan2_sent, 2.0)
        assert back_rate > 1000, "wan2 did not recover"
        after = gw.stats()["drops"]["tx_full"]
        time.sleep(0.5)
        assert gw.stats()["drops"]["tx_full"] == after, "still refusing after the link came back"
        assert_holds(gw.stats())
    assert gw.proc.returncode == 0, gw.output
    assert "accounting: holds" in gw.output
    assert final_drop(gw, "tx_full") == final_tx_dropped(gw, "wan2") > 0
    in_use, at_start = gw.mbufs()
    assert in_use == at_start
    # Everything wan sent, before, during and after the fault, decrypts.
    assert decrypt_all(gw.wan_out[0], OUT_A) > 1000
    print(f"\nlink down: wan2 {up_rate:.0f} pps before, 0 while down ({full} tx_full), {back_rate:.0f} after; "
          f"wan {wan_rate:.0f} pps during")


def inject(name, frames):
    """Frames into espgw through the kernel side of a net_tap port."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((name, 0))
    for i, f in enumerate(frames):
        s.send(f)
        if i % 32 == 31:
            time.sleep(0.0005)  # the tap's kernel queue holds 1000 frames
    s.close()


def incomplete_datagrams(n, pieces=7, first_id=1):
    """n ESP datagrams to wan2's address, each cut into 8 fragments of which
    only the first `pieces` are sent: they wait in the reassembly table,
    holding mbufs, until they time out (2 s)."""
    tx = eo.EspSender(IN_B.key, IN_B.spi, REMOTE_B, LOCAL_B)
    frames = []
    for i in range(n):
        ip = IP(tx.packet(i + 1, eo.inner_udp("172.31.200.1", "10.240.128.9", bytes(8 * 64)), ident=first_id + i))
        for f in fragment(ip, fragsize=72)[:pieces]:
            frames.append(eo.ether("02:00:00:00:00:03", h.NH_MAC, bytes(f)))
    return frames


def test_mempool_exhaustion_is_counted_and_survived(tmp_path):
    # The smallest pool the config allows (rings of 64). Incomplete outer
    # datagrams flood wan2 until the pool reaches its floor (a quarter kept
    # free, dataplane.h park_floor): further fragments are dropped as
    # no_buffer, while wan keeps encrypting and sending the LAN's traffic.
    # When the datagrams time out every mbuf comes back, and a valid packet
    # from wan2's peer crosses again.
    name = tap_name("m")
    gw = three_port_gateway(tmp_path, f"net_tap9,iface={name}", lan_traffic(16))
    gw.config["mbufs"] = 2304   # the minimum for 3 ports x (64 + 64) descriptors, 2 caches, 1024 in flight
    for p in gw.config["ports"]:
        p["rx_desc"], p["tx_desc"] = 64, 64
    gw.config_path.write_text(yaml.safe_dump(gw.config, sort_keys=False))
    wan_sent = lambda s: port(s, "wan")["tx"]["packets"]  # noqa: E731
    with gw:
        ip_link(name, "up")
        time.sleep(0.5)
        before_rate, st = rate(gw, wan_sent)
        assert st["drops"]["no_buffer"] == 0
        inject(name, incomplete_datagrams(600))
        during_rate, st = rate(gw, wan_sent, 0.3)
        peak = st["mbufs"]["in_use"]
        assert st["drops"]["no_buffer"] > 0, st["drops"]          # counted by reason
        assert peak >= 2304 * 3 // 4 - 64, st["mbufs"]             # the pool really ran down to its floor
        assert during_rate > 1000, "wan stopped forwarding while the pool was at its floor"
        assert_holds(st)
        # The fault goes away: the datagrams time out (2 s), the mbufs return.
        deadline = time.time() + h.scaled(10)
        while acc_port(gw.stats(), "wan2")["held"] and time.time() < deadline:
            time.sleep(0.2)
        st = gw.stats()
        if acc_port(st, "wan2")["held"]:
            alive, _ = rate(gw, wan_sent)  # is the worker still looping?
            raise AssertionError(f"held after {h.scaled(10)} s: {acc_port(st, 'wan2')} {st['reassembly']} "
                                 f"{st['mbufs']} {st['drops']}; wan still sends {alive:.0f} pps")
        assert st["mbufs"]["in_use"] < st["mbufs"]["in_use_at_start"] + 256, st["mbufs"]  # what is in flight
        nobuf = st["drops"]["no_buffer"]
        # A valid packet from wan2's peer is decrypted and reaches the LAN.
        lan_sent = port(st, "lan")["tx"]["packets"]
        tx = eo.EspSender(IN_B.key, IN_B.spi, REMOTE_B, LOCAL_B)
        inject(name, [eo.ether("02:00:00:00:00:03", h.NH_MAC,
                               tx.packet(10000, eo.inner_udp("172.31.200.1", "10.240.128.9", b"after")))])
        deadline = time.time() + h.scaled(5)
        while port(gw.stats(), "lan")["tx"]["packets"] == lan_sent and time.time() < deadline:
            time.sleep(0.05)
        after_rate, st = rate(gw, wan_sent)
        assert port(st, "lan")["tx"]["packets"] == lan_sent + 1, "wan2 did not recover"
        assert st["drops"]["no_buffer"] == nobuf, "still out of buffers after the fault went away"
        assert_holds(st)
    assert gw.proc.returncode == 0, gw.output
    assert "accounting: holds" in gw.output
    in_use, at_start = gw.mbufs()
    assert in_use == at_start
    assert decrypt_all(gw.wan_out[0], OUT_A) > 1000
    print(f"\nmempool at its floor (peak {peak} of 2304 in use, {nobuf} no_buffer): wan {before_rate:.0f} pps before, "
          f"{during_rate:.0f} during, {after_rate:.0f} after")


FLOOD_REQUESTS = [
    {"op": "stats"}, {"op": "list-sas"}, {"op": "routes"}, {"op": "tunnels"}, {"op": "neighbors"},
    {"op": "add-sa", "direction": "out", "spi": 5, "tunnel": "aws-a1", "key": "00" * 20},   # refused
    {"op": "delete-sa", "direction": "in", "spi": "0x7777"},                               # refused
    {"op": "nonsense"},
]


def flood_client(sock_path, stop, served, batch=32):
    """Pipelined requests, as fast as the daemon answers them."""
    lines = b"".join((json.dumps(r) + "\n").encode() for r in FLOOD_REQUESTS)
    lines += b"{not json\n" + b'{"op":"ping","op":"ping"}\n'
    per_round = len(FLOOD_REQUESTS) + 2
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(h.scaled(20))
    s.connect(sock_path)
    buf = b""
    while not stop.is_set():
        s.sendall(lines * (batch // per_round + 1))
        want = per_round * (batch // per_round + 1)
        while want:
            chunk = s.recv(1 << 20)
            if not chunk:
                raise AssertionError("espgw closed a flooding client's connection")
            buf += chunk
            n = buf.count(b"\n")
            buf = buf[buf.rfind(b"\n") + 1:]
            want -= n
            served[0] += n
    s.close()


def worker_cpu_s(pid):
    """CPU seconds the worker lcore's thread has run (schedstat)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            if f.read().startswith(("rte-worker", "lcore-worker")):
                with open(f"/proc/{pid}/task/{tid}/schedstat") as g:
                    return int(g.read().split()[0]) / 1e9
    raise AssertionError("no worker lcore thread")


def worker_rate(gw, seconds):
    """(frames per wall second, frames per second of the worker's own CPU
    time, last stats): the second is what the worker's code achieves,
    whatever else the host's scheduler gives the CPU to."""
    a, ca, t = gw.stats(), worker_cpu_s(gw.proc.pid), time.time()
    time.sleep(seconds)
    b, cb = gw.stats(), worker_cpu_s(gw.proc.pid)
    n = port(b, "lan")["rx"]["packets"] - port(a, "lan")["rx"]["packets"]
    return n / (time.time() - t), n / max(cb - ca, 1e-6), b


def test_control_flood_does_not_slow_the_workers(tmp_path):
    # The worker's rate (frames received and forwarded per second, net_pcap
    # replaying LAN traffic) in alternating quiet and flood phases of the
    # same run. The flooding clients run on the control thread's CPU (0),
    # as a management client would; the worker has CPU 1 to itself.
    gw = h.Gateway(tmp_path, [OUT_A, IN_A], routes=ROUTES[:1], lan_in=lan_traffic()[0::2], infinite_lan=True,
                   discard_out=True)
    affinity = os.sched_getaffinity(0)
    quiet, flood, served = [], [], [0]
    try:
        with gw:
            # Pinned only now: espgw, started above, keeps the whole machine
            # (a child started after this would inherit CPU 0 alone, and its
            # worker would share it with the control thread).
            os.sched_setaffinity(0, {0})
            time.sleep(1.0)
            for _ in range(5):
                quiet.append(worker_rate(gw, 1.5)[:2])
                stop = threading.Event()
                threads = [threading.Thread(target=flood_client, args=(gw.sock, stop, served)) for _ in range(4)]
                for t in threads:
                    t.start()
                time.sleep(0.2)
                n0 = served[0]
                wall, cpu, st = worker_rate(gw, 1.5)
                flood.append((wall, cpu))
                rps = (served[0] - n0) / 1.5
                stop.set()
                for t in threads:
                    t.join()
                assert_holds(st)
            assert gw.request({"op": "ping"})["ok"]
    finally:
        os.sched_setaffinity(0, affinity)
    assert gw.proc.returncode == 0, gw.output
    assert "accounting: holds" in gw.output
    med = lambda xs, i: sorted(x[i] for x in xs)[len(xs) // 2]  # noqa: E731
    print(f"\ncontrol flood (~{rps:.0f} requests/s answered): worker {med(quiet, 0) / 1e6:.2f} Mpps quiet, "
          f"{med(flood, 0) / 1e6:.2f} Mpps flooded (wall clock); per second of the worker's CPU "
          f"{med(quiet, 1) / 1e6:.2f} vs {med(flood, 1) / 1e6:.2f} Mpps; phases (wall, cpu) "
          f"quiet {[(round(a / 1e6, 2), round(b / 1e6, 2)) for a, b in quiet]}, "
          f"flood {[(round(a / 1e6, 2), round(b / 1e6, 2)) for a, b in flood]}")
    assert served[0] > 1000
    # The worker's own work per CPU second must not drop (the median of five
    # paired phases; 10% for noise). The wall-clock rate is printed: on a shared
    # 2-CPU host the scheduler moves other jobs onto the worker's CPU while
    # the flood fills CPU 0, which is not espgw's doing.
    # Each flooded phase is compared with the quiet phase just before it: on
    # a shared VM the worker's per-CPU rate also drifts between phases (a CI
    # run saw quiet phases at 2.0, 1.4 and 0.9 Mpps), which pairs cancel.
    ratios = sorted(f[1] / q[1] for q, f in zip(quiet, flood))
    assert ratios[len(ratios) // 2] >= 0.9, (ratios, quiet, flood)
