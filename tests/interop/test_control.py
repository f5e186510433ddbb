"""The control plane through the real socket of a running espgw: every
operation and every error case (state unchanged after each error), many
clients, make-before-break rekey under traffic, failover through the API,
lifetimes and their events, DPDK telemetry, and keys never leaking."""

import json
import os
import random
import socket
import subprocess
import threading
import time

import pytest
from scapy.all import IP, UDP, Raw, rdpcap
from scapy.layers.ipsec import ESP

import gateway_harness as h

pytestmark = pytest.mark.skipif(not h.ESPGW.exists(), reason=f"espgw not built at {h.ESPGW}")
ESPCTL = h.BUILD / "control" / "espctl"

OUT = {t: h.Sa("out", 0x1000 + i, t) for i, t in enumerate(h.TUNNELS, 1)}
IN = {t: h.Sa("in", 0x2000 + i, t) for i, t in enumerate(h.TUNNELS, 1)}
ALL_SAS = list(OUT.values()) + list(IN.values())


def lan_traffic(n=32):
    return [h.lan_frame(IP(bytes(IP(src="10.240.128.5", dst=f"172.31.1.{i + 1}", id=i) / UDP(sport=1111, dport=2222) /
                                 Raw(b"t" * 50)))) for i in range(n)]


def state(gw):
    """Everything a request could change."""
    sas = gw.request({"op": "list-sas"})["sas"]
    for s in sas:  # counters and ages move on their own
        for k in ("packets", "bytes", "age_seconds", "idle_seconds", "next_seq", "replay_top"):
            s.pop(k, None)
    tunnels = [{k: t[k] for k in ("name", "up", "admin_up") if k in t} | {"spi": t.get("out_spi")}
               for t in gw.request({"op": "tunnels"})["tunnels"]]
    return json.dumps([sas, tunnels, gw.request({"op": "routes"})["routes"]], sort_keys=True)


def sa_req(op, sa, **extra):
    r = {"op": op, "direction": sa.direction, "spi": sa.spi, "tunnel": sa.tunnel, "algo": sa.algo,
         "key": sa.key.hex()}
    r.update(extra)
    return r


def espctl(gw, *args, check=True):
    r = subprocess.run([str(ESPCTL), "-s", gw.sock, *args], capture_output=True, text=True, timeout=20)
    if check:
        assert r.returncode == 0, r.stderr
    return r


@pytest.fixture
def gw(tmp_path):
    g = h.Gateway(tmp_path, ALL_SAS)
    g.start()
    yield g
    g.stop()


ERRORS = [
    ({"op": "frobnicate"}, "unknown operation"),
    ({"nop": 1}, "missing field 'op'"),
    ({"op": "add-sa", "direction": "out", "spi": 0x5000, "tunnel": "aws-a1"}, "missing field 'key'"),
    ({"op": "add-sa", "direction": "out", "tunnel": "aws-a1", "key": "01" * 20}, "missing field 'spi'"),
    ({"op": "add-sa", "direction": "out", "spi": 0x5000, "tunnel": "aws-a1", "key": "01" * 19}, "needs 20 bytes"),
    ({"op": "add-sa", "direction": "out", "spi": 0x5000, "tunnel": "aws-a1", "algo": "aes256-gcm", "key": "01" * 20},
     "needs 36 bytes"),
    ({"op": "add-sa", "direction": "out", "spi": 0x5000, "tunnel": "aws-a1", "key": "zz" * 20}, "not hex"),
    ({"op": "add-sa", "direction": "out", "spi": 0x1001, "tunnel": "aws-a1", "key": "01" * 20}, "exists"),
    ({"op": "add-sa", "direction": "in", "spi": 0x2001, "tunnel": "aws-a2", "key": "01" * 20}, "already used"),
    ({"op": "add-sa", "direction": "out", "spi": 0x5000, "tunnel": "nope", "key": "01" * 20}, "unknown tunnel"),
    ({"op": "add-sa", "direction": "sideways", "spi": 0x5000, "tunnel": "aws-a1", "key": "01" * 20}, "neither in nor out"),
    ({"op": "add-sa", "direction": "out", "spi": 7, "tunnel": "aws-a1", "key": "01" * 20}, "reserved"),
    ({"op": "add-sa", "direction": "in", "spi": 0x5000, "tunnel": "aws-a1", "key": "01" * 20, "replay_window": 5000},
     "replay_window"),
    ({"op": "add-sa", "direction": "out", "spi": 0x5000, "tunnel": "aws-a1", "key": "01" * 20, "colour": "red"},
     "unknown field 'colour'"),
    ({"op": "add-sa", "direction": "out", "spi": "0xZZ", "tunnel": "aws-a1", "key": "01" * 20}, "not a number"),
    ({"op": "delete-sa", "direction": "out", "spi": 0x5999}, "no out SA"),
    ({"op": "delete-sa", "direction": "in"}, "missing field 'spi'"),
    ({"op": "tunnel-down", "tunnel": "nope"}, "unknown tunnel"),
    ({"op": "tunnel-down"}, "missing field 'tunnel'"),
    ({"op": "add-route", "prefix": "172.31.0.0/16", "via": [{"tunnel": "aws-a1", "priority": 1}]}, "exists"),
    ({"op": "add-route", "prefix": "10.9.0.1/16", "via": [{"tunnel": "aws-a1", "priority": 1}]}, "host bits"),
    ({"op": "add-route", "prefix": "10.9.0.0/33", "via": [{"tunnel": "aws-a1", "priority": 1}]}, ""),
    ({"op": "add-route", "prefix": "10.9.0.0/16", "via": [{"tunnel": "nope", "priority": 1}]}, "unknown tunnel"),
    ({"op": "add-route", "prefix": "10.9.0.0/16", "via": [{"tunnel": "aws-a1", "priority": 70000}]}, "larger than"),
    ({"op": "add-route", "prefix": "10.9.0.0/16", "via": []}, ""),
    ({"op": "add-route", "prefix": "10.9.0.0/16",
      "via": [{"tunnel": "aws-a1", "priority": 1}, {"tunnel": "aws-a1", "priority": 2}]}, ""),
    ({"op": "delete-route", "prefix": "10.99.0.0/16"}, ""),
]


def test_every_error_is_a_reply_with_a_reason_and_changes_nothing(gw):
    before = state(gw)
    for req, reason in ERRORS:
        r = gw.request(req)
        assert r["ok"] is False, req
        assert reason in r["error"], (req, r)
        assert state(gw) == before, f"state changed after {req}"


def test_malformed_json_and_non_object(gw):
    before = state(gw)
    s = socket.socket(socket.AF_UNIX)
    s.connect(gw.sock)
    s.sendall(b'{"op": "stats"\n[1,2]\n{"op":"ping","id":7}\n')
    f = s.makefile("r")
    r1, r2, r3 = (json.loads(f.readline()) for _ in range(3))
    assert r1 == {"ok": False, "error": "malformed JSON"}
    assert r2["ok"] is False and "JSON object" in r2["error"]
    assert r3 == {"ok": True, "id": 7}
    s.close()
    assert state(gw) == before


def test_oversized_message_is_refused_and_the_daemon_lives_on(gw):
    s = socket.socket(socket.AF_UNIX)
    s.connect(gw.sock)
    s.sendall(b'{"op":"ping","pad":"' + b"x" * 100_000)
    r = json.loads(s.makefile("r").readline())
    assert r["ok"] is False and "longer than" in r["error"]
    s.close()
    assert gw.request({"op": "ping"})["ok"]


def test_client_disconnecting_mid_request_changes_nothing(gw):
    before = state(gw)
    s = socket.socket(socket.AF_UNIX)
    s.connect(gw.sock)
    s.sendall(json.dumps(sa_req("add-sa", h.Sa("out", 0x5001, "aws-a1")))[:40].encode())
    s.close()
    time.sleep(0.1)
    assert state(gw) == before
    assert gw.request({"op": "ping"})["ok"]


def test_many_clients_and_one_that_never_reads(gw):
    # A client that floods requests and never reads its replies must not stall anyone.
    hog = socket.socket(socket.AF_UNIX)
    hog.connect(gw.sock)
    hog.setblocking(False)
    line = b'{"op":"stats"}\n'
    try:
        for _ in range(20000):
            hog.send(line)
    except BlockingIOError:
        pass
    errors = []

    def client(i):
        try:
            for _ in range(20):
                assert gw.request({"op": "ping", "id": i})["ok"]
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    t0 = time.time()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert time.time() - t0 < 20
    hog.close()


def test_sa_lifecycle_and_list_shows_fingerprints_only(gw):
    new_in = h.Sa("in", 0x3001, "aws-a1")
    new_out = h.Sa("out", 0x4001, "aws-a1")
    assert gw.request(sa_req("add-sa", new_in, replay_window=64))["ok"]
    assert gw.request(sa_req("add-sa", new_out,
                             lifetime={"soft": {"bytes": 1000}, "hard": {"seconds": 3600}}))["ok"]
    sas = {(s["direction"], s["spi"]): s for s in gw.request({"op": "list-sas"})["sas"]}
    s = sas[("out", "0x00004001")]
    assert s["current"] is True and s["udp_encap"] is False and s["lifetime"]["soft"]["bytes"] == 1000
    assert sas[("out", "0x00001001")]["current"] is False  # make-before-break: the newest is current
    assert sas[("in", "0x00003001")]["replay_window"] == 64
    assert len(s["key_fingerprint"]) == 8
    assert new_out.key.hex() not in json.dumps(list(sas.values()))
    tun = {t["name"]: t for t in gw.request({"op": "tunnels"})["tunnels"]}
    assert tun["aws-a1"]["out_spi"] == "0x00004001"
    # replace keeps the identity and its key (a new key needs a new SPI), changes what may change
    assert gw.request(sa_req("replace-sa", new_out, lifetime={"soft": {"bytes": 2000}}))["ok"]
    sas2 = {(s["direction"], s["spi"]): s for s in gw.request({"op": "list-sas"})["sas"]}
    assert sas2[("out", "0x00004001")]["key_fingerprint"] == s["key_fingerprint"]
    assert sas2[("out", "0x00004001")]["lifetime"]["soft"]["bytes"] == 2000
    r = gw.request(sa_req("replace-sa", h.Sa("out", 0x4001, "aws-a1", seed=99)))
    assert r["ok"] is False and "new SPI" in r["error"]
    assert gw.request({"op": "delete-sa", "direction": "out", "spi": "0x4001"})["ok"]
    tun = {t["name"]: t for t in gw.request({"op": "tunnels"})["tunnels"]}
    assert tun["aws-a1"]["out_spi"] == "0x00001001"  # back to the older SA
    assert gw.request({"op": "delete-sa", "direction": "in", "spi": 0x3001, "tunnel": "aws-a1"})["ok"]
    assert ("in", "0x00003001") not in {(s["direction"], s["spi"]) for s in gw.request({"op": "list-sas"})["sas"]}


def test_routes_through_the_api(gw):
    assert gw.request({"op": "add-route", "prefix": "192.0.2.0/24",
                       "via": [{"tunnel": "aws-b1", "priority": 5}, {"tunnel": "aws-b2", "priority": 6}]})["ok"]
    routes = {r["prefix"]: r for r in gw.request({"op": "routes"})["routes"]}
    assert routes["192.0.2.0/24"]["active"] == "aws-b1"
    assert gw.request({"op": "replace-route", "prefix": "192.0.2.0/24",
                       "via": [{"tunnel": "aws-b2", "priority": 5}]})["ok"]
    routes = {r["prefix"]: r for r in gw.request({"op": "routes"})["routes"]}
    assert routes["192.0.2.0/24"]["active"] == "aws-b2"
    assert gw.request({"op": "delete-route", "prefix": "192.0.2.0/24"})["ok"]
    assert "192.0.2.0/24" not in {r["prefix"] for r in gw.request({"op": "routes"})["routes"]}


def test_espctl_every_subcommand(gw, tmp_path):
    keyfile = tmp_path / "k"
    sa = h.Sa("out", 0x4100, "aws-b1")
    keyfile.write_text(sa.key.hex() + "\n")
    out = espctl(gw, "sa", "add", "-d", "out", "--spi", "0x4100", "-t", "aws-b1", "--key-file", str(keyfile)).stdout
    assert out.strip() == "ok"
    listing = espctl(gw, "sa", "list").stdout
    assert "0x00004100" in listing and "aws-b1" in listing and sa.key.hex() not in listing
    js = json.loads(espctl(gw, "--json", "sas").stdout)
    assert any(s["spi"] == "0x00004100" for s in js["sas"])
    assert "aws-a1" in espctl(gw, "tunnels").stdout
    espctl(gw, "route", "add", "198.18.0.0/15", "--via", "aws-b1/10", "--via", "aws-b2/20")
    assert "198.18.0.0/15" in espctl(gw, "route", "list").stdout
    espctl(gw, "route", "replace", "198.18.0.0/15", "--via", "aws-b2/10")
    espctl(gw, "route", "delete", "198.18.0.0/15")
    espctl(gw, "tunnel", "down", "aws-a1")
    assert "aws-a2" in espctl(gw, "routes").stdout.splitlines()[1]
    espctl(gw, "tunnel", "up", "aws-a1")
    assert "DROPS:" in espctl(gw, "stats").stdout
    # update: new lifetimes on the live SA; decimal SPIs go as JSON integers
    espctl(gw, "sa", "update", "-d", "out", "--spi", str(0x4100), "-t", "aws-b1", "--hard-seconds", "7200")
    js = json.loads(espctl(gw, "--json", "sas").stdout)
    assert [s["lifetime"]["hard"]["seconds"] for s in js["sas"] if s["spi"] == "0x00004100"] == [7200]
    r = espctl(gw, "sa", "update", "-d", "out", "--spi", "0x4100", "-t", "aws-b1", check=False)
    assert r.returncode == 1 and "nothing to change" in r.stderr
    espctl(gw, "sa", "delete", "-d", "out", "--spi", "0x4100")
    # Errors: non-zero exit and the daemon's reason.
    r = espctl(gw, "sa", "delete", "-d", "out", "--spi", "0x4100", check=False)
    assert r.returncode == 1 and "no out SA" in r.stderr
    r = espctl(gw, "tunnel", "down", "nope", check=False)
    assert r.returncode == 1 and "unknown tunnel" in r.stderr
    r = subprocess.run([str(ESPCTL), "-s", str(tmp_path / "none.sock"), "stats"], capture_output=True, text=True)
    assert r.returncode == 2 and "cannot connect" in r.stderr
    r = espctl(gw, "raw", '{"op":"ping"}')
    assert json.loads(r.stdout)["ok"] is True


def test_events_stream_in_order(gw):
    p = subprocess.Popen([str(ESPCTL), "-s", gw.sock, "--json", "events", "-n", "4"], stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)
    gw.request({"op": "tunnel-down", "tunnel": "aws-b2"})
    gw.request(sa_req("add-sa", h.Sa("in", 0x3333, "aws-b2")))
    gw.request({"op": "delete-sa", "direction": "in", "spi": 0x3333})
    gw.request({"op": "tunnel-up", "tunnel": "aws-b2"})
    out, _ = p.communicate(timeout=10)
    evs = [json.loads(l) for l in out.splitlines()]
    assert [e["event"] for e in evs] == ["tunnel-state", "sa-installed", "sa-deleted", "tunnel-state"]
    assert evs[0]["up"] is False and evs[3]["up"] is True
    assert evs[1]["spi"] == "0x00003333" and evs[2]["reason"] == "request"


def subscribe(gw):
    s = socket.socket(socket.AF_UNIX)
    s.connect(gw.sock)
    s.sendall(b'{"op":"subscribe"}\n')
    f = s.makefile("r")
    assert json.loads(f.readline())["ok"]
    return s, f


def read_events(f, n, timeout=15):
    evs = []
    deadline = time.time() + timeout
    while len(evs) < n and time.time() < deadline:
        line = f.readline()
        if line:
            evs.append(json.loads(line))
    return evs


def test_lifetime_by_packets_raises_soft_then_hard(tmp_path):
    gw = h.Gateway(tmp_path, ALL_SAS, lan_in=lan_traffic(), infinite_lan=True, down=("aws-a1",))
    with gw:
        s, f = subscribe(gw)
        s.settimeout(15)
        sa = h.Sa("out", 0x4200, "aws-a2")
        assert gw.request(sa_req("add-sa", sa, lifetime={"soft": {"packets": 2000}, "hard": {"packets": 5000}}))["ok"]
        evs = read_events(f, 4)
        kinds = [(e["event"], e.get("kind"), e.get("reason")) for e in evs]
        assert kinds == [("sa-installed", None, None), ("sa-expire", "soft", "packets"),
                         ("sa-expire", "hard", "packets"), ("sa-deleted", None, "hard-expire")], evs
        assert all(e["spi"] == "0x00004200" for e in evs)
        time.sleep(0.2)
        tun = {t["name"]: t for t in gw.stats()["tunnels"]}
        assert tun["aws-a2"]["out_spi"] == "0x00001002"  # back on the older SA
        s.close()


def test_lifetime_by_seconds(tmp_path):
    gw = h.Gateway(tmp_path, ALL_SAS)
    with gw:
        s, f = subscribe(gw)
        s.settimeout(15)
        t0 = time.time()
        sa = h.Sa("in", 0x4300, "aws-b1")
        assert gw.request(sa_req("add-sa", sa, lifetime={"soft": {"seconds": 1}, "hard": {"seconds": 2}}))["ok"]
        evs = read_events(f, 4)
        assert [(e["event"], e.get("kind")) for e in evs] == [("sa-installed", None), ("sa-expire", "soft"),
                                                              ("sa-expire", "hard"), ("sa-deleted", None)]
        assert evs[1]["reason"] == "seconds" and evs[2]["reason"] == "seconds"
        assert 1.5 <= time.time() - t0 < 6
        assert ("in", "0x00004300") not in {(x["direction"], x["spi"]) for x in gw.request({"op": "list-sas"})["sas"]}
        s.close()


def test_sequence_numbers_never_wrap(tmp_path):
    # An SA 300 packets from the end of its 32-bit space: soft at once, hard
    # when used up, and no packet ever carries a wrapped sequence number.
    gw = h.Gateway(tmp_path, ALL_SAS, lan_in=lan_traffic(), infinite_lan=True, down=("aws-a1", "aws-a2", "aws-b1"))
    with gw:
        s, f = subscribe(gw)
        s.settimeout(15)
        sa = h.Sa("out", 0x4400, "aws-b2")
        assert gw.request(sa_req("add-sa", sa, seq=2**32 - 300))["ok"]
        evs = read_events(f, 4)
        assert [(e["event"], e.get("kind"), e.get("reason")) for e in evs] == [
            ("sa-installed", None, None), ("sa-expire", "soft", "sequence"), ("sa-expire", "hard", "sequence"),
            ("sa-deleted", None, "hard-expire")]
        s.close()
    seqs = [q for _, spi, q in h.raw_esp_records(gw.wan_out[0]) if spi == 0x4400]
    assert seqs and seqs == list(range(2**32 - 300, 2**32 - 300 + len(seqs)))
    assert seqs[-1] <= 2**32 - 1
    assert len(seqs) <= 300


def test_deleting_last_outbound_sa_fails_over(tmp_path):
    gw = h.Gateway(tmp_path, ALL_SAS, lan_in=lan_traffic(), infinite_lan=True)
    with gw:
        deadline = time.time() + 20
        while gw.stats()["tunnels"][0]["out"]["packets"] < 1000 and time.time() < deadline:
            time.sleep(0.01)
        assert gw.request({"op": "delete-sa", "direction": "out", "spi": 0x1001})["ok"]
        a1 = gw.stats()["tunnels"][0]["out"]["packets"]
        while gw.stats()["tunnels"][1]["out"]["packets"] < 1000 and time.time() < deadline:
            time.sleep(0.01)
        st = gw.stats()
    tun = {t["name"]: t for t in st["tunnels"]}
    assert tun["aws-a1"]["up"] is False and tun["aws-a1"]["out"]["packets"] == a1
    # Traffic was routed away before the SA was unpublished: nothing dropped.
    assert st["drops"]["tunnel_down"] == 0, st["drops"]
    dsts = [d for d, _, _ in h.raw_esp_records(gw.wan_out[0])]
    first = dsts.index(h.TUNNELS["aws-a2"][1])
    last_a1 = len(dsts) - 1 - dsts[::-1].index(h.TUNNELS["aws-a1"][1])
    assert last_a1 - first < 2 * 32  # the FIB republish runs entry by entry
    assert set(dsts[last_a1 + 1:]) == {h.TUNNELS["aws-a2"][1]}


def test_rekey_under_load_outbound(tmp_path):
    """100 back-to-back rekeys with fresh keys under full traffic: every packet
    decrypts under the SA current when it was sent; none is sent under a
    deleted SA; sequence numbers per SA run 1, 2, 3... without a gap."""
    gw = h.Gateway(tmp_path, ALL_SAS, lan_in=lan_traffic(), infinite_lan=True)
    keys = {0x1001: OUT["aws-a1"]}
    with gw:
        deadline = time.time() + 30
        while gw.stats()["tunnels"][0]["out"]["packets"] < 500 and time.time() < deadline:
            time.sleep(0.01)
        old_out, old_in = 0x1001, 0x2001
        for k in range(1, 101):
            new_in = h.Sa("in", 0x30000 + k, "aws-a1", seed=1000 + k)
            new_out = h.Sa("out", 0x40000 + k, "aws-a1", seed=2000 + k)
            keys[new_out.spi] = new_out
            assert gw.request(sa_req("add-sa", new_in))["ok"]     # inbound first
            assert gw.request(sa_req("add-sa", new_out))["ok"]    # then switch outbound
            assert gw.request({"op": "delete-sa", "direction": "out", "spi": old_out})["ok"]
            assert gw.request({"op": "delete-sa", "direction": "in", "spi": old_in})["ok"]
            old_out, old_in = new_out.spi, new_in.spi
            time.sleep(0.005)
        time.sleep(0.2)
        st = gw.stats()
    assert st["drops_total"] == 0, st["drops"]
    records = list(h.raw_esp_records(gw.wan_out[0]))
    order = []
    by_spi = {}
    for idx, (_, spi, seq) in enumerate(records):
        assert spi in keys, f"packet under an SPI that was never installed: {spi:#x}"
        if not order or order[-1] != spi:
            assert spi not in by_spi, f"SPI {spi:#x} used again after the switch (deleted SA)"
            order.append(spi)
        by_spi.setdefault(spi, []).append((idx, seq))
    assert order == sorted(order, key=lambda s: (s != 0x1001, s)), "SAs not used in install order"
    assert len(order) >= 90  # nearly every rekey carried traffic
    # The tunnel's count is its SAs' (deleted ones included): at least every
    # packet sent under the 100 deleted SAs (all counted before their delete
    # returned), at most every packet sent.
    under_deleted = sum(len(by_spi[s]) for s in order if s != old_out)
    assert under_deleted <= st["tunnels"][0]["out"]["packets"] <= len(records), (under_deleted, len(records))
    frames = h.raw_frames(gw.wan_out[0], [i for items in by_spi.values() for i in (items[0][0], items[-1][0])])
    for spi, items in by_spi.items():
        seqs = [s for _, s in items]
        assert seqs == list(range(1, len(seqs) + 1)), f"{spi:#x}: sequence gap or reuse"
        for idx, _ in (items[0], items[-1]):  # decrypt first and last under that SA's key
            clear = keys[spi].scapy_sa().decrypt(h.Ether(frames[idx])[IP])
            assert IP(bytes(clear)).dst.startswith("172.31.1.")


def test_rekey_inbound_old_sa_keeps_accepting_until_deleted(tmp_path):
    # A stream of ESP under the old inbound SA loops (window off for the loop).
    old = h.Sa("in", 0x2001, "aws-a1", replay_window=0)
    sas = [OUT["aws-a1"], old]
    inner = [IP(bytes(IP(src="172.31.1.1", dst="10.240.128.9", id=i) / UDP(sport=1, dport=2) / Raw(b"i" * 40)))
             for i in range(32)]
    gw = h.Gateway(tmp_path, sas, routes=[{"prefix": "172.31.0.0/16", "via": [{"tunnel": "aws-a1", "priority": 10}]}],
                   wan_in=[h.wan_frame(old.encrypt(p, s)) for s, p in enumerate(inner, 1)])
    gw.config["ports"][1]["device"] += ",infinite_rx=1"
    import yaml
    gw.config_path.write_text(yaml.safe_dump(gw.config, sort_keys=False))
    with gw:
        time.sleep(0.5)
        new = h.Sa("in", 0x3001, "aws-a1", seed=5)
        assert gw.request(sa_req("add-sa", new))["ok"]
        a = gw.stats()["tunnels"][0]["in"]["packets"]
        time.sleep(0.5)
        st = gw.stats()
        assert st["tunnels"][0]["in"]["packets"] > a, "old inbound SA stopped accepting after the new one arrived"
        assert st["drops_total"] == 0
        assert gw.request({"op": "delete-sa", "direction": "in", "spi": 0x2001})["ok"]
        time.sleep(0.3)
        st2 = gw.stats()
        assert st2["drops"]["unknown_spi"] > 0
    # lan_out grows large with a looping source; only the counters matter here.


def telemetry(prefix, cmd):
    path = f"/var/run/dpdk/{prefix}/dpdk_telemetry.v2"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(path)
    json.loads(s.recv(65536))
    s.send(cmd.encode())
    r = json.loads(s.recv(1 << 20))
    s.close()
    return r


def test_telemetry_shows_tunnels_sas_routes_stats(gw):
    prefix = gw.config["eal"][gw.config["eal"].index("--file-prefix") + 1]
    time.sleep(0.2)
    t = telemetry(prefix, "/espgw/tunnels")["/espgw/tunnels"]
    assert t[0].startswith("aws-a1 up spi=0x00001001") and len(t) == 4
    one = telemetry(prefix, "/espgw/tunnel,aws-a2")["/espgw/tunnel"]
    assert one["name"] == "aws-a2" and one["up"] == "true" and one["out_packets"] == 0
    assert one["admin"] == "up" and one["oper"] == "up"
    assert t[0].endswith(" admin=up")
    sas = telemetry(prefix, "/espgw/sas")["/espgw/sas"]
    assert any(l.startswith("out:0x00001001 tunnel=aws-a1") and l.endswith("current") for l in sas)
    sa = telemetry(prefix, "/espgw/sa,in:0x00002001")["/espgw/sa"]
    assert sa["tunnel"] == "aws-a1" and sa["replay_window"] == 1024 and len(sa["key_fingerprint"]) == 8
    routes = telemetry(prefix, "/espgw/routes")["/espgw/routes"]
    assert routes == ["172.31.0.0/16 active=aws-a1 via=aws-a1/10,aws-a2/20,aws-b1/30,aws-b2/40"]
    gw.request({"op": "tunnel-down", "tunnel": "aws-a1"})
    time.sleep(0.2)  # the snapshot refreshes 20 times a second
    assert telemetry(prefix, "/espgw/routes")["/espgw/routes"][0].startswith("172.31.0.0/16 active=aws-a2")
    a1 = telemetry(prefix, "/espgw/tunnels")["/espgw/tunnels"][0]
    assert a1.startswith("aws-a1 down ") and a1.endswith(" admin=down"), a1
    one = telemetry(prefix, "/espgw/tunnel,aws-a1")["/espgw/tunnel"]
    assert one["admin"] == "down" and one["oper"] == "down" and one["oper_reason"] == "admin-down"
    stats = telemetry(prefix, "/espgw/stats")["/espgw/stats"]
    assert stats["drops_replay"] == 0 and "port_lan_rx_packets" in stats
    listing = telemetry(prefix, "/")["/"]
    assert {"/espgw/tunnels", "/espgw/sas", "/espgw/routes", "/espgw/stats"} <= set(listing)
    # Debian's dpdk-telemetry.py reads commands on stdin.
    tool = "/usr/bin/dpdk-telemetry.py"
    if os.path.exists(tool):
        r = subprocess.run(["/usr/bin/python3", tool, "-f", prefix], input="/espgw/tunnels\n", capture_output=True,
                           text=True, timeout=20)
        assert "aws-a1" in r.stdout, r.stdout + r.stderr


def test_key_material_never_appears_in_logs_output_or_telemetry(tmp_path):
    extra = h.Sa("out", 0x4500, "aws-a1", seed=77)
    gw = h.Gateway(tmp_path, ALL_SAS, lan_in=lan_traffic(8))
    with gw:
        gw.request(sa_req("add-sa", extra))
        gw.wait_rx(lan=8)
        prefix = gw.config["eal"][gw.config["eal"].index("--file-prefix") + 1]
        texts = [json.dumps(gw.request({"op": "list-sas"})), json.dumps(gw.stats()),
                 json.dumps(gw.request({"op": "tunnels"}))]
        for cmd in ("/espgw/tunnels", "/espgw/sas", "/espgw/routes", "/espgw/stats"):
            texts.append(json.dumps(telemetry(prefix, cmd)))
        for args in (["sas"], ["stats"], ["tunnels"], ["--json", "sas"], ["--json", "stats"]):
            texts.append(espctl(gw, *args).stdout)
        bad = gw.request(sa_req("add-sa", extra))  # duplicate: the error names the SA, not its key
        texts.append(json.dumps(bad))
    texts.append(gw.output)
    blob = "\n".join(texts).lower()
    for sa in ALL_SAS + [extra]:
        k = sa.key.hex()
        for part in (k, k[:16], k[-16:]):
            assert part not in blob, f"key material of SPI {sa.spi:#x} leaked"


def xfrm_gateway(tmp_path):
    gw = h.Gateway(tmp_path, ALL_SAS)
    gw.config["xfrm"] = {"enabled": True}
    import yaml
    gw.config_path.write_text(yaml.safe_dump(gw.config, sort_keys=False))
    try:
        gw.start()
    except RuntimeError as e:
        if "Operation not permitted" in str(e) or "not supported" in str(e).lower():
            pytest.skip(f"no XFRM netlink here: {e}")
        raise
    return gw


def test_xfrm_mirror_starts_and_dumps_the_kernel_state(tmp_path):
    gw = xfrm_gateway(tmp_path)
    try:
        st = gw.stats()
        assert st["xfrm"]["mirrored"] == 0 and st["xfrm"]["ignored"] == 0 and st["xfrm"]["resyncs"] == 0
        assert "xfrm mirror: following the kernel's SAs (0 mirrored at start)" in gw.read_log()
    finally:
        gw.stop()
    assert gw.proc.returncode == 0


def test_xfrm_mirror_end_to_end(tmp_path):
    """A kernel ESP SA (as strongSwan's kernel-netlink backend installs it)
    shows up in espgw's SA table, and leaves it when the kernel deletes it."""
    gw = xfrm_gateway(tmp_path)
    key = h.keymat(4242).hex()
    add = ["ip", "xfrm", "state", "add", "src", h.LOCAL_A, "dst", "203.0.113.1", "proto", "esp", "spi", "0x5555",
           "mode", "tunnel", "aead", "rfc4106(gcm(aes))", "0x" + key, "128"]
    try:
        r = subprocess.run(add, capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"this kernel cannot hold an ESP SA ({r.stderr.strip()}): the live mirror can't be shown "
                        "end to end here; tests/xfrm feeds real XFRM messages to the same parser")
        try:
            deadline = time.time() + 5
            found = None
            while time.time() < deadline and not found:
                found = [s for s in gw.request({"op": "list-sas"})["sas"] if s["spi"] == "0x00005555"]
                time.sleep(0.05)
            assert found and found[0]["direction"] == "out" and found[0]["tunnel"] == "aws-a1"
        finally:
            subprocess.run(["ip", "xfrm", "state", "delete", "src", h.LOCAL_A, "dst", "203.0.113.1", "proto", "esp",
                            "spi", "0x5555"], capture_output=True)
        time.sleep(0.3)
        assert not [s for s in gw.request({"op": "list-sas"})["sas"] if s["spi"] == "0x00005555"]
    finally:
        gw.stop()
