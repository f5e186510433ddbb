"""SA state across replace-sa / update-sa under traffic, and the tunnels'
administrative vs operational state, through the real socket of a running
espgw (issue 9, defects 3 and 5).

An SA's identity owns its state: replace-sa (SaDatabase::reconcile) and
update-sa keep the outbound sequence number (a repeated GCM nonce under one
key is the one failure ESP must never have) and the inbound replay window."""

import struct
import time

import pytest
from scapy.all import IP, UDP, Raw

import gateway_harness as h
from test_control import ALL_SAS, IN, OUT, lan_traffic, sa_req

pytestmark = pytest.mark.skipif(not h.ESPGW.exists(), reason=f"espgw not built at {h.ESPGW}")

ONLY_A1 = [{"prefix": "172.31.0.0/16", "via": [{"tunnel": "aws-a1", "priority": 10}]}]


def esp_seq_iv(path, want_spi):
    """(seq, 8-byte explicit IV) of every ESP frame with this SPI."""
    out = []
    for pkt in h.pcap_records(path):
        ip = pkt[14:]
        ihl = (ip[0] & 0xF) * 4
        esp = ip[ihl + (8 if ip[9] == 17 else 0):]
        spi, seq = struct.unpack(">II", esp[:8])
        if spi == want_spi:
            out.append((seq, bytes(esp[8:16])))
    return out


def wait_out_packets(gw, tunnel_index, n, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if gw.stats()["tunnels"][tunnel_index]["out"]["packets"] >= n:
            return
        time.sleep(0.01)
    raise TimeoutError(f"tunnel {tunnel_index} did not send {n} packets")


def test_replace_and_update_outbound_under_traffic_keep_the_sequence(tmp_path):
    sa = OUT["aws-a1"]
    gw = h.Gateway(tmp_path, ALL_SAS, routes=ONLY_A1, lan_in=lan_traffic(), infinite_lan=True)
    with gw:
        wait_out_packets(gw, 0, 500)
        # Same key, new lifetimes: the identity stays, so does its counter.
        r = gw.request(sa_req("replace-sa", sa, lifetime={"hard": {"packets": 10**9}}))
        assert r["ok"], r
        mark1 = gw.stats()["tunnels"][0]["out"]["packets"]
        wait_out_packets(gw, 0, mark1 + 500)
        r = gw.request({"op": "update-sa", "direction": "out", "spi": sa.spi, "tunnel": "aws-a1",
                        "lifetime": {"soft": {"packets": 10**8}, "hard": {"packets": 10**9}}})
        assert r["ok"], r
        mark2 = gw.stats()["tunnels"][0]["out"]["packets"]
        wait_out_packets(gw, 0, mark2 + 500)
        listed = [s for s in gw.request({"op": "list-sas"})["sas"] if s["spi"] == "0x00001001"]
        assert listed and listed[0]["lifetime"]["soft"]["packets"] == 10**8
    recs = esp_seq_iv(gw.wan_out[0], sa.spi)
    assert len(recs) > 1500
    seqs = [s for s, _ in recs]
    # Strictly rising across both changes (one sequence 1, 2, 3, ...).
    assert all(b > a for a, b in zip(seqs, seqs[1:])), "sequence number went back after replace/update"
    assert seqs == list(range(1, len(seqs) + 1))
    ivs = [iv for _, iv in recs]
    assert len(set(ivs)) == len(ivs), "an IV (GCM nonce) repeated under one key"
    # And scapy decrypts packets from before, between and after the changes.
    frames = h.raw_frames(gw.wan_out[0], [0, len(recs) // 2, len(recs) - 1])
    for f in frames.values():
        clear = sa.scapy_sa().decrypt(h.Ether(f)[IP])
        assert IP(bytes(clear)).dst.startswith("172.31.1.")


@pytest.mark.parametrize("change", ["replace-sa", "update-sa"])
def test_inbound_replay_window_survives_replace_and_update(tmp_path, change):
    # 32 ESP packets under the inbound SA, looping: the first pass is
    # accepted, every later pass is a replay. After the change the window is
    # the same: a packet accepted before it is a replay after it.
    sa = IN["aws-a1"]
    inner = [IP(bytes(IP(src="172.31.1.1", dst="10.240.128.9", id=i) / UDP(sport=1, dport=2) / Raw(b"i" * 40)))
             for i in range(32)]
    gw = h.Gateway(tmp_path, ALL_SAS, routes=ONLY_A1, wan_in=[h.wan_frame(sa.encrypt(p, s)) for s, p in
                                                               enumerate(inner, 1)])
    gw.config["ports"][1]["device"] += ",infinite_rx=1"
    import yaml
    gw.config_path.write_text(yaml.safe_dump(gw.config, sort_keys=False))
    with gw:
        deadline = time.time() + 20
        while gw.stats()["drops"]["replay"] < 320 and time.time() < deadline:
            time.sleep(0.01)
        st = gw.stats()
        assert st["tunnels"][0]["in"]["packets"] == 32
        if change == "replace-sa":
            r = gw.request(sa_req("replace-sa", sa, replay_window=1024))
        else:
            r = gw.request({"op": "update-sa", "direction": "in", "spi": sa.spi, "tunnel": "aws-a1",
                            "lifetime": {"hard": {"seconds": 3600}}})
        assert r["ok"], r
        replays = gw.stats()["drops"]["replay"]
        while gw.stats()["drops"]["replay"] < replays + 320 and time.time() < deadline + 10:
            time.sleep(0.01)
        st = gw.stats()
    assert st["tunnels"][0]["in"]["packets"] == 32, "packets accepted again after the change: window reset"


def test_replace_with_another_key_is_refused(tmp_path):
    # A new key means a new SPI: replacing the key under a live SPI would
    # restart GCM nonces under... the new key with the old counter, or reuse
    # them; either way it is refused and nothing changes.
    from test_control import state
    with h.Gateway(tmp_path, ALL_SAS) as gw:
        before = state(gw)
        r = gw.request(sa_req("replace-sa", h.Sa("out", OUT["aws-a1"].spi, "aws-a1", seed=999)))
        assert r["ok"] is False and "new SPI" in r["error"], r
        assert state(gw) == before


def tunnel(gw, name):
    return next(t for t in gw.request({"op": "tunnels"})["tunnels"] if t["name"] == name)


def test_admin_and_oper_state_are_separate(tmp_path):
    gw = h.Gateway(tmp_path, [OUT["aws-a2"], IN["aws-a2"]])
    with gw:
        t = tunnel(gw, "aws-a1")  # no SA yet
        assert (t["admin"], t["oper"], t["oper_reason"]) == ("up", "down", "no-outbound-sa")
        assert gw.request({"op": "tunnel-down", "tunnel": "aws-a1"})["ok"]
        t = tunnel(gw, "aws-a1")
        assert (t["admin"], t["oper"], t["oper_reason"]) == ("down", "down", "admin-down")
        # An SA event never changes the operator's switch...
        assert gw.request(sa_req("add-sa", OUT["aws-a1"]))["ok"]
        t = tunnel(gw, "aws-a1")
        assert (t["admin"], t["oper"], t["oper_reason"]) == ("down", "down", "admin-down")
        assert gw.request({"op": "routes"})["routes"][0]["active"] == "aws-a2"
        # ...the operator's switch brings it up, since it has an SA now.
        assert gw.request({"op": "tunnel-up", "tunnel": "aws-a1"})["ok"]
        t = tunnel(gw, "aws-a1")
        assert (t["admin"], t["oper"], t["up"]) == ("up", "up", True)
        assert gw.request({"op": "routes"})["routes"][0]["active"] == "aws-a1"
        # Losing the last outbound SA: oper down, admin stays up; a new SA
        # (an IKE rekey after a DPD restart) brings it back with no tunnel-up.
        assert gw.request({"op": "delete-sa", "direction": "out", "spi": OUT["aws-a1"].spi})["ok"]
        t = tunnel(gw, "aws-a1")
        assert (t["admin"], t["oper"], t["oper_reason"]) == ("up", "down", "no-outbound-sa")
        assert gw.request(sa_req("add-sa", h.Sa("out", 0x7301, "aws-a1")))["ok"]
        assert tunnel(gw, "aws-a1")["oper"] == "up"
        # espctl shows both columns.
        import subprocess
        r = subprocess.run([str(h.BUILD / "control" / "espctl"), "-s", gw.sock, "tunnels"], capture_output=True,
                           text=True, timeout=20)
        assert r.returncode == 0, r.stderr
        header, *rows = r.stdout.splitlines()
        assert "ADMIN" in header and "OPER" in header
        a1 = next(l for l in rows if l.startswith("aws-a1")).split()
        assert a1[1:3] == ["up", "up"]
        b1 = next(l for l in rows if l.startswith("aws-b1")).split()
        assert b1[1:4] == ["up", "down", "no-outbound-sa"]


def test_update_sa_nat_rebinding_and_mobike_under_traffic(tmp_path):
    # ESP-in-UDP tunnel; the peer's NAT rebinds its port, then the peer moves
    # (MOBIKE): update-sa changes the outer header, the SA keeps counting.
    sa = h.Sa("out", 0x1001, "aws-a1", udp=True)
    gw = h.Gateway(tmp_path, [sa, IN["aws-a1"]], routes=ONLY_A1, lan_in=lan_traffic(), infinite_lan=True)
    with gw:
        wait_out_packets(gw, 0, 300)
        r = gw.request({"op": "update-sa", "direction": "out", "spi": sa.spi, "tunnel": "aws-a1",
                        "encap": {"sport": 4500, "dport": 62001}})
        assert r["ok"], r
        mark = gw.stats()["tunnels"][0]["out"]["packets"]
        wait_out_packets(gw, 0, mark + 300)
        r = gw.request({"op": "update-sa", "direction": "out", "spi": sa.spi, "tunnel": "aws-a1",
                        "remote": "203.0.113.77"})
        assert r["ok"], r
        mark = gw.stats()["tunnels"][0]["out"]["packets"]
        wait_out_packets(gw, 0, mark + 300)
    outer = []
    for pkt in h.pcap_records(gw.wan_out[0]):
        ip = pkt[14:]
        assert ip[9] == 17, "not ESP-in-UDP"
        ihl = (ip[0] & 0xF) * 4
        dst = ".".join(str(b) for b in ip[16:20])
        dport = struct.unpack(">H", ip[ihl + 2:ihl + 4])[0]
        spi, seq = struct.unpack(">II", ip[ihl + 8:ihl + 16])
        if spi == sa.spi:
            outer.append((dst, dport, seq))
    phases = []
    for dst, dport, _ in outer:
        if not phases or phases[-1] != (dst, dport):
            phases.append((dst, dport))
    assert phases == [("203.0.113.1", 4500), ("203.0.113.1", 62001), ("203.0.113.77", 62001)], phases
    seqs = [s for _, _, s in outer]
    assert seqs == list(range(1, len(seqs) + 1)), "sequence numbers restarted or skipped across update-sa"


def test_replace_sa_is_add_or_update(tmp_path):
    # replace-sa = SaDatabase::reconcile: an absent SA is installed, a present
    # one is updated in place (same identity, same key).
    with h.Gateway(tmp_path, ALL_SAS) as gw:
        new = h.Sa("out", 0x7401, "aws-b1")
        assert gw.request(sa_req("replace-sa", new))["ok"]
        listed = [s for s in gw.request({"op": "list-sas"})["sas"] if s["spi"] == "0x00007401"]
        assert len(listed) == 1 and listed[0]["origin"] == "socket" and listed[0]["current"] is True
        assert gw.request(sa_req("replace-sa", new, lifetime={"hard": {"packets": 5000}}))["ok"]
        listed = [s for s in gw.request({"op": "list-sas"})["sas"] if s["spi"] == "0x00007401"]
        assert len(listed) == 1 and listed[0]["lifetime"]["hard"]["packets"] == 5000


def test_tunnel_counts_outlive_their_sas_and_a_reused_slot(tmp_path):
    """A tunnel's out/in counts are its SAs' counts summed, plus those of its
    deleted SAs (the workers count per SA only: dataplane/counters.h). After
    a rekey deletes the SAs that carried the traffic, the tunnel keeps their
    counts; a new SA that reuses a deleted SA's counter slot, on this or
    another tunnel, starts from zero and adds nothing to either."""
    inner = [IP(bytes(IP(src="172.31.1.1", dst="10.240.128.9", id=i) / UDP(sport=1, dport=2) / Raw(b"i" * 40)))
             for i in range(24)]
    sa_in = IN["aws-a1"]
    gw = h.Gateway(tmp_path, ALL_SAS, routes=ONLY_A1, lan_in=lan_traffic(32),
                   wan_in=[h.wan_frame(sa_in.encrypt(p, s)) for s, p in enumerate(inner, 1)])
    inner_out = 32 * len(bytes(lan_traffic(1)[0][IP]))
    inner_in = sum(len(bytes(p)) for p in inner)

    def counts(st):
        t = {x["name"]: x for x in st["tunnels"]}
        return {n: (t[n]["out"]["packets"], t[n]["out"]["bytes"], t[n]["in"]["packets"], t[n]["in"]["bytes"])
                for n in ("aws-a1", "aws-a2")}

    with gw:
        st = gw.wait_rx(lan=32, wan=24)
        assert st["drops_total"] == 0, st["drops"]
        want = {"aws-a1": (32, inner_out, 24, inner_in), "aws-a2": (0, 0, 0, 0)}
        assert counts(st) == want
        # Rekey aws-a1 both ways, then delete the SAs that carried everything.
        assert gw.request(sa_req("add-sa", h.Sa("in", 0x7201, "aws-a1", seed=71)))["ok"]
        assert gw.request(sa_req("add-sa", h.Sa("out", 0x7101, "aws-a1", seed=72)))["ok"]
        assert gw.request({"op": "delete-sa", "direction": "out", "spi": OUT["aws-a1"].spi})["ok"]
        assert gw.request({"op": "delete-sa", "direction": "in", "spi": sa_in.spi})["ok"]
        assert counts(gw.stats()) == want, "a tunnel lost its deleted SAs' counts"
        # The freed counter slots go to the next SAs installed: one on aws-a2,
        # one on aws-a1. Neither inherits the old SAs' counts.
        assert gw.request(sa_req("add-sa", h.Sa("in", 0x7202, "aws-a2", seed=73)))["ok"]
        assert gw.request(sa_req("add-sa", h.Sa("out", 0x7102, "aws-a1", seed=74)))["ok"]
        assert counts(gw.stats()) == want, "a reused SA slot counted its predecessor's packets again"
        listed = {int(s["spi"], 16): s for s in gw.request({"op": "list-sas"})["sas"]}
        assert all(listed[spi]["packets"] == 0 for spi in (0x7101, 0x7102, 0x7201, 0x7202)), listed
        # Deleting SAs that carried nothing changes nothing either.
        assert gw.request({"op": "delete-sa", "direction": "in", "spi": 0x7202})["ok"]
        assert gw.request({"op": "delete-sa", "direction": "out", "spi": 0x7101})["ok"]
        assert counts(gw.stats()) == want
    assert len(list(h.raw_esp_records(gw.wan_out[0]))) == 32
