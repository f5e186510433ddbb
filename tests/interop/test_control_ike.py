"""What an IKE daemon's kernel-ipsec plugin needs of the control socket
(issue 11, docs/control-api.md), through the real socket of a running espgw:
SAs named by their outer addresses, SPIs allocated by espgw (larval
reservations), last use per SA (query-sa), flush-sas and origins, addresses
in events, and traffic selectors on policy-based tunnels."""

import time

import pytest
from scapy.all import IP, UDP, Raw

import gateway_harness as h
from test_control import ALL_SAS, IN, OUT, gw, read_events, sa_req, state, subscribe  # noqa: F401 (gw: fixture)

pytestmark = pytest.mark.skipif(not h.ESPGW.exists(), reason=f"espgw not built at {h.ESPGW}")

A, B = h.LOCAL_A, h.LOCAL_B
PEER_A1, PEER_A2 = h.TUNNELS["aws-a1"][1], h.TUNNELS["aws-a2"][1]


def by_addr(op, sa, src, dst, **extra):
    """An add-sa/replace-sa naming the SA by its outer addresses, no tunnel."""
    r = sa_req(op, sa, src=src, dst=dst, **extra)
    del r["tunnel"]
    return r


def listed(gw, direction, spi):
    return [s for s in gw.request({"op": "list-sas"})["sas"] if s["direction"] == direction and s["spi"] == spi]


# ---------------------------------------------------------------- 1. naming

def test_add_sa_by_outer_addresses_finds_the_tunnel(gw):
    # Outbound: src = our address, dst = the peer; inbound: the reverse.
    assert gw.request(by_addr("add-sa", h.Sa("out", 0x6001, "aws-a2"), A, PEER_A2))["ok"]
    assert gw.request(by_addr("add-sa", h.Sa("in", 0x6002, "aws-a2"), PEER_A2, A))["ok"]
    assert gw.request(by_addr("replace-sa", h.Sa("in", 0x6003, "aws-b1"), "203.0.113.129", B))["ok"]
    assert [s["tunnel"] for s in listed(gw, "out", "0x00006001")] == ["aws-a2"]
    assert [s["tunnel"] for s in listed(gw, "in", "0x00006002")] == ["aws-a2"]
    assert [s["tunnel"] for s in listed(gw, "in", "0x00006003")] == ["aws-b1"]
    # The tunnel and addresses that agree are accepted too.
    assert gw.request(sa_req("add-sa", h.Sa("out", 0x6004, "aws-a1"), src=A, dst=PEER_A1))["ok"]


NAMING_ERRORS = [
    # (request, words in the error)
    (by_addr("add-sa", h.Sa("out", 0x6101, "aws-a1"), A, "203.0.113.77"), "no tunnel from 198.51.100.10 to 203.0.113.77"),
    # inbound with the outbound order of addresses
    (by_addr("add-sa", h.Sa("in", 0x6102, "aws-a1"), A, PEER_A1), "no tunnel from"),
    (sa_req("add-sa", h.Sa("out", 0x6103, "aws-a1"), src=A, dst=PEER_A2), "tunnel 'aws-a1' runs from"),
    (sa_req("add-sa", h.Sa("in", 0x6104, "aws-a1"), dst=B), "tunnel 'aws-a1' runs from"),
    ({k: v for k, v in by_addr("add-sa", h.Sa("out", 0x6105, "aws-a1"), A, PEER_A1).items() if k != "dst"},
     "missing field 'tunnel'"),
    ({k: v for k, v in by_addr("replace-sa", h.Sa("out", 0x6106, "aws-a1"), A, PEER_A1).items() if k != "src"},
     "missing field 'tunnel'"),
    (by_addr("add-sa", h.Sa("out", 0x6107, "aws-a1"), A, "203.0.113"), "field 'dst': not an IPv4 address"),
    ({"op": "delete-sa", "direction": "out", "spi": 0x1001, "dst": PEER_A2}, "no out SA with SPI 0x00001001 to"),
    ({"op": "delete-sa", "direction": "out", "spi": 0x1001, "dst": PEER_A1, "tunnel": "aws-a2"}, "no out SA"),
    ({"op": "query-sa", "direction": "in", "spi": 0x2001, "dst": B}, "no in SA"),
    ({"op": "update-sa", "direction": "in", "spi": 0x2001, "dst": B, "lifetime": {"hard": {"seconds": 9}}}, "no in SA"),
    ({"op": "update-sa", "direction": "in", "spi": 0x2001, "src": PEER_A1, "lifetime": {"hard": {"seconds": 9}}},
     "missing field 'tunnel'"),
    ({"op": "query-sa", "direction": "in", "spi": 0x2001, "dst": A, "key": "00"}, "unknown field 'key'"),
]


@pytest.mark.parametrize("req,words", NAMING_ERRORS, ids=[str(i) for i in range(len(NAMING_ERRORS))])
def test_naming_errors_change_nothing(gw, req, words):
    before = state(gw)
    r = gw.request(req)
    assert r["ok"] is False and words in r["error"], (req, r)
    assert state(gw) == before


def test_unknown_sa_errors_carry_code_not_found(gw):
    for req in ({"op": "delete-sa", "direction": "out", "spi": 0x5999},
                {"op": "delete-sa", "direction": "in", "spi": 0x2001, "dst": B},
                {"op": "query-sa", "direction": "out", "spi": 0x5999, "dst": PEER_A1},
                {"op": "query-sa", "direction": "out", "spi": 0x1001, "tunnel": "aws-a2"},
                {"op": "update-sa", "direction": "out", "spi": 0x5999, "dst": PEER_A1, "remote": "203.0.113.9"},
                {"op": "update-sa", "direction": "out", "spi": 0x5999, "tunnel": "aws-a1",
                 "lifetime": {"hard": {"seconds": 9}}}):
        r = gw.request(req)
        assert r["ok"] is False and r.get("code") == "not-found", (req, r)
    # Other failures carry no code: they are not "already gone".
    for req in ({"op": "delete-sa", "direction": "out", "spi": 0x1001, "tunnel": "nope"},
                {"op": "query-sa", "direction": "out", "spi": "0xZZ", "dst": PEER_A1}):
        r = gw.request(req)
        assert r["ok"] is False and "code" not in r, (req, r)


def test_same_spi_on_two_tunnels_is_named_by_dst(gw):
    # One outbound SPI towards two peers: the SPI alone is ambiguous, dst is not.
    assert gw.request(by_addr("add-sa", h.Sa("out", 0x6201, "aws-a1", seed=1), A, PEER_A1))["ok"]
    assert gw.request(by_addr("add-sa", h.Sa("out", 0x6201, "aws-a2", seed=2), A, PEER_A2))["ok"]
    r = gw.request({"op": "delete-sa", "direction": "out", "spi": 0x6201})
    assert r["ok"] is False and "several tunnels" in r["error"] and "code" not in r
    q = gw.request({"op": "query-sa", "direction": "out", "spi": 0x6201, "dst": PEER_A2, "src": A})
    assert q["ok"] and q["tunnel"] == "aws-a2" and q["dst"] == PEER_A2 and q["spi"] == "0x00006201", q
    assert gw.request({"op": "delete-sa", "direction": "out", "spi": 0x6201, "dst": PEER_A2, "src": A})["ok"]
    assert [s["tunnel"] for s in listed(gw, "out", "0x00006201")] == ["aws-a1"]


def test_an_sa_moved_by_update_sa_is_found_by_its_new_dst(gw):
    moved = "203.0.113.77"
    r = gw.request({"op": "update-sa", "direction": "out", "spi": 0x1001, "dst": PEER_A1, "remote": moved})
    assert r["ok"], r
    assert gw.request({"op": "query-sa", "direction": "out", "spi": 0x1001, "dst": moved})["tunnel"] == "aws-a1"
    r = gw.request({"op": "query-sa", "direction": "out", "spi": 0x1001, "dst": PEER_A1})
    assert r["ok"] is False and r["code"] == "not-found"
    r = gw.request({"op": "update-sa", "direction": "out", "spi": 0x1001, "dst": moved,
                    "lifetime": {"hard": {"seconds": 7200}}})
    assert r["ok"], r
    assert listed(gw, "out", "0x00001001")[0]["lifetime"]["hard"]["seconds"] == 7200
    assert gw.request({"op": "delete-sa", "direction": "out", "spi": 0x1001, "dst": moved})["ok"]
    assert listed(gw, "out", "0x00001001") == []
    # Inbound: dst is our address.
    assert gw.request({"op": "delete-sa", "direction": "in", "spi": 0x2001, "dst": A, "src": PEER_A1})["ok"]
    assert listed(gw, "in", "0x00002001") == []


# ------------------------------------------------------------ 2. alloc-spi

def pipelined(gw, reqs, chunk=2000):
    """Many requests on one connection, replies in order (in chunks, so the
    daemon never holds more than 4 MiB of replies for us)."""
    import json
    import socket
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(gw.sock)
    f = s.makefile("r")
    out = []
    for i in range(0, len(reqs), chunk):
        part = reqs[i:i + chunk]
        s.sendall("".join(json.dumps(r) + "\n" for r in part).encode())
        out.extend(json.loads(f.readline()) for _ in part)
    s.close()
    return out


def larval(gw):
    return gw.request({"op": "list-sas"})["larval"]


def test_ten_thousand_spis_to_one_address_are_distinct_and_free(gw):
    installed = {int(s["spi"], 16) for s in gw.request({"op": "list-sas"})["sas"] if s["direction"] == "in"}
    replies = pipelined(gw, [{"op": "alloc-spi", "dst": A, "src": PEER_A1, "id": i} for i in range(10000)])
    assert all(r["ok"] and r["expires_in_s"] == 180 for r in replies), replies[0]
    assert [r["id"] for r in replies] == list(range(10000))
    spis = [int(r["spi"], 16) for r in replies]
    assert all(r["spi"].startswith("0x") and len(r["spi"]) == 10 for r in replies)
    assert len(set(spis)) == 10000
    assert all(256 <= s <= 0xFFFFFFFF for s in spis)
    assert not installed & set(spis)
    listed_larval = larval(gw)
    assert len(listed_larval) == 10000
    assert {int(x["spi"], 16) for x in listed_larval} == set(spis)
    assert all(x["dst"] == A and x["src"] == PEER_A1 and 178 <= x["expires_in_s"] <= 180 for x in listed_larval)


def test_a_reserved_spi_is_consumed_by_add_sa(gw):
    r = gw.request({"op": "alloc-spi", "dst": A, "src": PEER_A1, "timeout_s": 60})
    assert r["ok"] and r["expires_in_s"] == 60, r
    spi = int(r["spi"], 16)
    assert [x["spi"] for x in larval(gw)] == [r["spi"]]
    sa = h.Sa("in", spi, "aws-a1", seed=7001)
    # A refused add-sa consumes nothing.
    bad = by_addr("add-sa", sa, PEER_A1, A)
    bad["key"] = bad["key"][:-2]
    assert gw.request(bad)["ok"] is False
    assert [x["spi"] for x in larval(gw)] == [r["spi"]]
    assert gw.request(by_addr("add-sa", sa, PEER_A1, A))["ok"]
    assert larval(gw) == []  # consumed: the SA holds the SPI now
    d = gw.request({"op": "delete-sa", "direction": "in", "spi": spi, "dst": A})
    assert d == {"ok": True}, d  # an SA, not a reservation
    d = gw.request({"op": "delete-sa", "direction": "in", "spi": spi, "dst": A})
    assert d["ok"] is False and d["code"] == "not-found"


def test_replace_sa_consumes_a_reservation_too(gw):
    spi = int(gw.request({"op": "alloc-spi", "dst": B})["spi"], 16)
    assert gw.request(sa_req("replace-sa", h.Sa("in", spi, "aws-b2", seed=7002)))["ok"]
    assert larval(gw) == []


def test_deleting_a_reserved_spi_releases_it(gw):
    spis = [gw.request({"op": "alloc-spi", "dst": A})["spi"] for _ in range(3)]
    # by dst, by tunnel (its local address), and by SPI alone
    assert gw.request({"op": "delete-sa", "direction": "in", "spi": spis[0], "dst": A, "src": PEER_A2}) == \
        {"ok": True, "larval": True}
    assert gw.request({"op": "delete-sa", "direction": "in", "spi": spis[1], "tunnel": "aws-a2"}) == \
        {"ok": True, "larval": True}
    assert gw.request({"op": "delete-sa", "direction": "in", "spi": spis[2]}) == {"ok": True, "larval": True}
    assert larval(gw) == []
    # Reserved at A, not at B (aws-b1's address); outbound never matches a reservation.
    spi = gw.request({"op": "alloc-spi", "dst": A})["spi"]
    for req in ({"op": "delete-sa", "direction": "in", "spi": spi, "dst": B},
                {"op": "delete-sa", "direction": "in", "spi": spi, "tunnel": "aws-b1"},
                {"op": "delete-sa", "direction": "out", "spi": spi}):
        r = gw.request(req)
        assert r["ok"] is False and r["code"] == "not-found", (req, r)
    assert [x["spi"] for x in larval(gw)] == [spi]


def test_an_unconsumed_reservation_expires(gw):
    r = gw.request({"op": "alloc-spi", "dst": A, "timeout_s": 1})
    keep = gw.request({"op": "alloc-spi", "dst": A, "timeout_s": 30})
    assert r["ok"] and r["expires_in_s"] == 1
    assert len(larval(gw)) == 2
    time.sleep(1.3)  # the control thread checks 20 times a second
    assert [x["spi"] for x in larval(gw)] == [keep["spi"]]
    d = gw.request({"op": "delete-sa", "direction": "in", "spi": r["spi"], "dst": A})
    assert d["ok"] is False and d["code"] == "not-found"


def test_at_most_65536_live_reservations(gw):
    replies = pipelined(gw, [{"op": "alloc-spi", "dst": A if i % 2 else B, "src": PEER_A1} for i in range(65537)],
                        chunk=8000)
    assert all(r["ok"] for r in replies[:65536])
    assert replies[65536]["ok"] is False and "65536" in replies[65536]["error"], replies[65536]
    # All of them listed in one reply (~5 MB: more than a client may leave
    # unread, delivered whole to a client that reads).
    import json
    listed_all = gw.request({"op": "list-sas"})
    assert len(listed_all["larval"]) == 65536 and len(json.dumps(listed_all, separators=(",", ":"))) > 4 << 20
    # A consumed or released one makes room.
    spi = replies[0]["spi"]
    assert gw.request({"op": "delete-sa", "direction": "in", "spi": spi, "dst": B})["larval"] is True
    assert gw.request({"op": "alloc-spi", "dst": A})["ok"]


ALLOC_ERRORS = [
    ({"op": "alloc-spi"}, "missing field 'dst'"),
    ({"op": "alloc-spi", "dst": "203.0.113.1"}, "203.0.113.1 is not a local address of any tunnel"),
    ({"op": "alloc-spi", "dst": "10.240.128.1"}, "not a local address"),  # the LAN port's, not a tunnel's
    ({"op": "alloc-spi", "dst": "198.51.100"}, "field 'dst'"),
    ({"op": "alloc-spi", "dst": A, "src": 5}, "field 'src'"),
    ({"op": "alloc-spi", "dst": A, "timeout_s": 0}, "timeout_s"),
    ({"op": "alloc-spi", "dst": A, "timeout_s": 3601}, "timeout_s"),
    ({"op": "alloc-spi", "dst": A, "timeout_s": "5"}, "timeout_s"),
    ({"op": "alloc-spi", "dst": A, "timeout_s": 1.5}, "timeout_s"),
    ({"op": "alloc-spi", "dst": A, "spi": 0x3000}, "unknown field 'spi'"),
]


@pytest.mark.parametrize("req,words", ALLOC_ERRORS, ids=[str(i) for i in range(len(ALLOC_ERRORS))])
def test_alloc_spi_errors_change_nothing(gw, req, words):
    before = state(gw)
    r = gw.request(req)
    assert r["ok"] is False and words in r["error"] and "code" not in r, (req, r)
    assert state(gw) == before and larval(gw) == []


# --------------------------------------------------------- 3. last use

ONLY_A1 = [{"prefix": "172.31.0.0/16", "via": [{"tunnel": "aws-a1", "priority": 10}]}]


def query(gw, direction, spi, dst):
    r = gw.request({"op": "query-sa", "direction": direction, "spi": spi, "dst": dst})
    assert r["ok"], r
    return r


def wait_for(pred, timeout=20, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise TimeoutError(what)


def test_outbound_last_use_follows_traffic(tmp_path):
    # LAN traffic loops for the whole test; aws-a1 starts administratively
    # down, so nothing is encrypted until tunnel-up, and nothing after
    # tunnel-down (whose reply comes once every worker finished its burst).
    gw = h.Gateway(tmp_path, ALL_SAS, routes=ONLY_A1, infinite_lan=True, down=("aws-a1",),
                   lan_in=[h.lan_frame(IP(src="10.240.128.5", dst="172.31.1.1") / UDP(sport=1, dport=2) /
                                       Raw(b"o" * 60))])
    with gw:
        wait_for(lambda: gw.stats()["drops"]["no_route"] > 100, what="LAN traffic")
        q = query(gw, "out", 0x1001, PEER_A1)
        assert q["packets"] == 0 and q["idle_seconds"] is None, q
        assert gw.request({"op": "tunnel-up", "tunnel": "aws-a1"})["ok"]
        wait_for(lambda: query(gw, "out", 0x1001, PEER_A1)["packets"] > 100, what="encrypted traffic")
        q = query(gw, "out", 0x1001, PEER_A1)
        assert q["idle_seconds"] is not None and q["idle_seconds"] < 0.5, q
        assert gw.request({"op": "tunnel-down", "tunnel": "aws-a1"})["ok"]
        stopped = query(gw, "out", 0x1001, PEER_A1)
        time.sleep(1.0)
        q1 = query(gw, "out", 0x1001, PEER_A1)
        assert q1["packets"] == stopped["packets"]  # no traffic since tunnel-down
        assert 0.9 <= q1["idle_seconds"] < 3, q1
        time.sleep(0.5)
        q2 = query(gw, "out", 0x1001, PEER_A1)
        assert 0.4 <= q2["idle_seconds"] - q1["idle_seconds"] < 1.5, (q1, q2)
        listed_sa = listed(gw, "out", "0x00001001")[0]
        assert listed_sa["idle_seconds"] >= q2["idle_seconds"]
        # An SA that carried nothing stays null.
        assert query(gw, "out", 0x1002, PEER_A2)["idle_seconds"] is None
        assert listed(gw, "out", "0x00001002")[0]["idle_seconds"] is None
    # The packets counted really left, and scapy decrypts them.
    recs = list(h.raw_esp_records(gw.wan_out[0]))
    assert len(recs) == q2["packets"] and all(spi == 0x1001 for _, spi, _ in recs)
    frame = next(iter(h.raw_frames(gw.wan_out[0], [0]).values()))
    assert IP(bytes(OUT["aws-a1"].scapy_sa().decrypt(h.Ether(frame)[IP]))).dst == "172.31.1.1"


def test_inbound_last_use_counts_accepted_packets_only(tmp_path):
    # 32 ESP packets under SPI 0x2001, looping on the WAN port. The config's
    # SA 0x2001 has another key: every packet fails its ICV and the SA stays
    # unused. Installed with the right key, the first pass is accepted and
    # every later pass is a replay: not a use.
    right = IN["aws-a1"]
    wrong = h.Sa("in", right.spi, "aws-a1", seed=9001)
    sas = [s for s in ALL_SAS if s is not right] + [wrong]
    inner = [IP(bytes(IP(src="172.31.1.1", dst="10.240.128.9", id=i) / UDP(sport=1, dport=2) / Raw(b"i" * 40)))
             for i in range(32)]
    gw = h.Gateway(tmp_path, sas, routes=ONLY_A1,
                   wan_in=[h.wan_frame(right.encrypt(p, s)) for s, p in enumerate(inner, 1)])
    gw.config["ports"][1]["device"] += ",infinite_rx=1"
    import yaml
    gw.config_path.write_text(yaml.safe_dump(gw.config, sort_keys=False))
    with gw:
        wait_for(lambda: gw.stats()["drops"]["icv_failure"] > 100, what="ESP traffic")
        q = query(gw, "in", 0x2001, A)
        assert q["packets"] == 0 and q["idle_seconds"] is None, q
        assert gw.request({"op": "delete-sa", "direction": "in", "spi": 0x2001, "dst": A})["ok"]
        assert gw.request(by_addr("add-sa", right, PEER_A1, A))["ok"]
        wait_for(lambda: query(gw, "in", 0x2001, A)["packets"] == 32, what="32 packets accepted")
        q = query(gw, "in", 0x2001, A)
        assert q["idle_seconds"] is not None and q["idle_seconds"] < 0.5, q
        replays = gw.stats()["drops"]["replay"]
        time.sleep(1.0)
        q1 = query(gw, "in", 0x2001, A)
        assert gw.stats()["drops"]["replay"] > replays + 100  # still arriving, as replays
        assert q1["packets"] == 32 and 0.9 <= q1["idle_seconds"] < 3, q1
        assert listed(gw, "in", "0x00002001")[0]["idle_seconds"] >= q1["idle_seconds"]


# ------------------------------------------------- 4. flush-sas, origin

def origins(gw):
    return {(s["direction"], s["spi"]): s["origin"] for s in gw.request({"op": "list-sas"})["sas"]}


def test_origin_is_recorded_and_listed(gw):
    assert gw.request(sa_req("add-sa", h.Sa("out", 0x6301, "aws-a1"), origin="plugin"))["ok"]
    assert gw.request(sa_req("replace-sa", h.Sa("in", 0x6302, "aws-a1"), origin="plugin"))["ok"]
    assert gw.request(sa_req("add-sa", h.Sa("in", 0x6303, "aws-a1"), origin="socket"))["ok"]
    assert gw.request(sa_req("add-sa", h.Sa("in", 0x6304, "aws-a1")))["ok"]
    o = origins(gw)
    assert o[("out", "0x00006301")] == "plugin" and o[("in", "0x00006302")] == "plugin"
    assert o[("in", "0x00006303")] == "socket" and o[("in", "0x00006304")] == "socket"
    assert o[("out", "0x00001001")] == "config"


ORIGIN_ERRORS = [
    (sa_req("add-sa", h.Sa("out", 0x6401, "aws-a1"), origin="xfrm"), "neither socket nor plugin"),
    (sa_req("add-sa", h.Sa("out", 0x6402, "aws-a1"), origin="config"), "neither socket nor plugin"),
    (sa_req("replace-sa", h.Sa("out", 0x6403, "aws-a1"), origin="Plugin"), "neither socket nor plugin"),
    (sa_req("add-sa", h.Sa("out", 0x6404, "aws-a1"), origin=1), "field 'origin' must be a string"),
    ({"op": "flush-sas", "origin": "charon"}, "not one of config, socket, xfrm, plugin"),
    ({"op": "flush-sas", "origin": None}, "field 'origin' must be a string"),
    ({"op": "flush-sas", "all": True}, "unknown field 'all'"),
]


@pytest.mark.parametrize("req,words", ORIGIN_ERRORS, ids=[str(i) for i in range(len(ORIGIN_ERRORS))])
def test_origin_errors_change_nothing(gw, req, words):
    gw.request({"op": "alloc-spi", "dst": A})
    before, before_larval = state(gw), larval(gw)
    r = gw.request(req)
    assert r["ok"] is False and words in r["error"], (req, r)
    assert state(gw) == before and larval(gw) == before_larval


def test_flush_sas_by_origin_then_all(gw):
    assert gw.request(sa_req("add-sa", h.Sa("out", 0x6501, "aws-b1"), origin="plugin"))["ok"]
    assert gw.request(sa_req("add-sa", h.Sa("in", 0x6502, "aws-b1"), origin="plugin"))["ok"]
    assert gw.request(sa_req("add-sa", h.Sa("in", 0x6503, "aws-b1")))["ok"]
    gw.request({"op": "alloc-spi", "dst": A})
    gw.request({"op": "alloc-spi", "dst": B})
    s, f = subscribe(gw)
    s.settimeout(15)
    r = gw.request({"op": "flush-sas", "origin": "plugin"})
    assert r == {"ok": True, "deleted": 2, "larval": 2}, r
    evs = [e for e in read_events(f, 2) if e["event"] == "sa-deleted"]
    assert sorted((e["direction"], e["spi"], e["reason"]) for e in evs) == \
        [("in", "0x00006502", "flush"), ("out", "0x00006501", "flush")], evs
    o = origins(gw)
    assert ("in", "0x00006503") in o and all(v != "plugin" for v in o.values()) and len(o) == 9
    assert larval(gw) == []
    r = gw.request({"op": "flush-sas"})
    assert r == {"ok": True, "deleted": 9, "larval": 0}, r
    assert gw.request({"op": "list-sas"})["sas"] == []
    assert all(t["oper"] == "down" and t["oper_reason"] == "no-outbound-sa"
               for t in gw.request({"op": "tunnels"})["tunnels"])
    evs = read_events(f, 9 + 4)  # 9 sa-deleted, 4 tunnel-state
    assert sum(e["event"] == "sa-deleted" and e["reason"] == "flush" for e in evs) == 9, evs
    s.close()


# ------------------------------------------------ 5. addresses in events

def test_expire_and_delete_events_carry_addresses_and_protocol(tmp_path):
    gw = h.Gateway(tmp_path, ALL_SAS, lan_in=[
        h.lan_frame(IP(src="10.240.128.5", dst=f"172.31.1.{i + 1}") / UDP(sport=1, dport=2) / Raw(b"e" * 50))
        for i in range(32)], infinite_lan=True, down=("aws-a1",))
    with gw:
        s, f = subscribe(gw)
        s.settimeout(15)
        sa = h.Sa("out", 0x4200, "aws-a2")
        r = gw.request(by_addr("add-sa", sa, A, PEER_A2, origin="plugin",
                               lifetime={"soft": {"packets": 2000}, "hard": {"packets": 5000}}))
        assert r["ok"], r
        evs = [e for e in read_events(f, 4) if e["event"] != "tunnel-state"]
        evs += [e for e in read_events(f, 4 - len(evs)) if e["event"] != "tunnel-state"]
        kinds = [(e["event"], e.get("kind"), e.get("reason")) for e in evs]
        assert kinds == [("sa-installed", None, None), ("sa-expire", "soft", "packets"),
                         ("sa-expire", "hard", "packets"), ("sa-deleted", None, "hard-expire")], evs
        for e in evs[1:]:  # outbound: from us to the peer
            assert (e["src"], e["dst"], e["protocol"], e["spi"], e["direction"]) == \
                (A, PEER_A2, "esp", "0x00004200", "out"), e
        # Inbound: from the peer to us, whatever ends it (a hard lifetime, a request).
        assert gw.request(sa_req("add-sa", h.Sa("in", 0x4301, "aws-b2"), lifetime={"hard": {"seconds": 1}}))["ok"]
        assert gw.request({"op": "delete-sa", "direction": "in", "spi": 0x2003, "dst": B})["ok"]
        evs = [e for e in read_events(f, 4) if e["event"] in ("sa-expire", "sa-deleted")]
        by = {(e["event"], e["spi"]): e for e in evs}
        for key in (("sa-deleted", "0x00002003"), ("sa-expire", "0x00004301"), ("sa-deleted", "0x00004301")):
            e = by[key]
            assert e["protocol"] == "esp" and e["dst"] == B, e
        assert by[("sa-deleted", "0x00002003")]["src"] == "203.0.113.129"
        assert by[("sa-expire", "0x00004301")]["src"] == "203.0.113.130"
        assert by[("sa-expire", "0x00004301")]["kind"] == "hard"
        s.close()


# ------------------------------------------------------------ 6. espctl

def test_espctl_spi_alloc_query_and_flush(gw):
    import json
    from test_control import espctl
    out = espctl(gw, "spi", "alloc", "--dst", A, "--src", PEER_A1, "--timeout", "30").stdout
    spi = out.split()[0]
    assert spi.startswith("0x") and "reserved for 30 s" in out, out
    assert [(x["spi"], x["src"]) for x in larval(gw)] == [(spi, PEER_A1)]
    assert "LARVAL-SPI" in espctl(gw, "sa", "list").stdout and spi in espctl(gw, "sas").stdout
    sa = h.Sa("in", int(spi, 16), "aws-a1", seed=7100)
    espctl(gw, "sa", "add", "-d", "in", "--spi", spi, "--src", PEER_A1, "--dst", A, "--key", sa.key.hex(),
           "--origin", "plugin")
    assert larval(gw) == []
    assert listed(gw, "in", spi)[0]["origin"] == "plugin"
    q = espctl(gw, "sa", "query", "-d", "in", "--spi", spi, "--dst", A).stdout
    assert "aws-a1" in q and "never" in q, q
    qj = json.loads(espctl(gw, "--json", "sa", "query", "-d", "in", "--spi", spi, "-t", "aws-a1").stdout)
    assert qj["idle_seconds"] is None and qj["packets"] == 0 and qj["dst"] == A
    r = espctl(gw, "sa", "query", "-d", "in", "--spi", "0x9999", "--dst", A, check=False)
    assert r.returncode == 1 and "no in SA" in r.stderr, r
    # A reserved SPI deleted, said so.
    spi2 = json.loads(espctl(gw, "--json", "spi", "alloc", "--dst", B).stdout)["spi"]
    assert "released an SPI reservation" in espctl(gw, "sa", "delete", "-d", "in", "--spi", spi2, "--dst", B).stdout
    espctl(gw, "spi", "alloc", "--dst", B)
    assert espctl(gw, "sa", "flush", "--origin", "plugin").stdout.strip() == \
        "deleted 1 SAs, released 1 SPI reservations"
    assert espctl(gw, "sa", "flush").stdout.strip() == "deleted 8 SAs, released 0 SPI reservations"
    assert gw.request({"op": "list-sas"})["sas"] == []


@pytest.mark.parametrize("args", [
    ["spi", "alloc"],
    ["spi", "alloc", "--dst", "198.51.100"],
    ["spi", "alloc", "--dst", A, "--timeout", "-1"],
    ["spi", "alloc", "--dst", A, "--src", "peer"],
    ["sa", "query", "-d", "in", "--spi", "0x2001"],
    ["sa", "query", "-d", "in", "--spi", "0x2001", "--dst", "x"],
    ["sa", "flush", "--origin", "charon"],
    ["sa", "add", "-d", "out", "--spi", "0x7001", "--src", A, "--key", "01" * 20],
    ["sa", "add", "-d", "out", "--spi", "0x7001", "-t", "aws-a1", "--key", "01" * 20, "--origin", "xfrm"],
    ["sa", "update", "-d", "out", "--spi", "0x1001", "--hard-seconds", "5"],
])
def test_espctl_new_subcommands_refuse_bad_arguments_with_64(gw, args):
    from test_control import espctl
    before = state(gw)
    r = espctl(gw, *args, check=False)
    assert r.returncode == 64, (args, r.returncode, r.stderr)
    assert state(gw) == before and larval(gw) == []


# ----------------------------------------- 7. traffic selectors, policy-based

INSIDE = ("10.240.128.5", "172.31.1.1")
OUTSIDE_LOCAL = ("10.240.128.200", "172.31.1.1")    # source outside local 10.240.128.0/25
OUTSIDE_REMOTE = ("10.240.128.5", "172.31.200.1")   # destination outside remote 172.31.1.0/24
TS = {"local": ["10.240.128.0/25"], "remote": ["172.31.1.0/24"]}


@pytest.mark.parametrize("mode", ["policy-based", "route-based", "explicit"])
def test_outbound_selectors_decide_what_is_encrypted(tmp_path, mode):
    # Three packets loop on the LAN; aws-a1 carries 172.31.0.0/16. The new
    # SA gets IKE's traffic selectors (policy-based tunnel: enforced;
    # route-based: recorded only) or explicit selectors (enforced anywhere).
    frames = [h.lan_frame(IP(src=s, dst=d) / UDP(sport=7, dport=9) / Raw(b"s" * 40))
              for s, d in (INSIDE, OUTSIDE_LOCAL, OUTSIDE_REMOTE)]
    extra = {"aws-a1": {"policy_based": True}} if mode == "policy-based" else None
    gw = h.Gateway(tmp_path, ALL_SAS, routes=ONLY_A1, lan_in=frames, infinite_lan=True, down=("aws-a1",),
                   tunnels_extra=extra)
    sa = h.Sa("out", 0x6601, "aws-a1", seed=6601)
    sel = {"local_selectors": TS["local"], "remote_selectors": TS["remote"]} if mode == "explicit" else \
        {"traffic_selectors": TS}
    with gw:
        r = gw.request(by_addr("add-sa", sa, A, PEER_A1, origin="plugin", **sel))
        assert r["ok"], r
        shown = listed(gw, "out", "0x00006601")[0]
        if mode == "explicit":
            assert shown["local_selectors"] == TS["local"] and "traffic_selectors" not in shown
        else:
            assert shown["traffic_selectors"] == TS
            assert ("local_selectors" in shown) == (mode == "policy-based")
        policy0 = gw.stats()["drops"]["policy"]
        assert gw.request({"op": "tunnel-up", "tunnel": "aws-a1"})["ok"]
        wait_for(lambda: query(gw, "out", 0x6601, PEER_A1)["packets"] > 150, what="encrypted traffic")
        assert gw.request({"op": "tunnel-down", "tunnel": "aws-a1"})["ok"]
        # Workers publish their counters at the end of an iteration: let the
        # last bursts before the switch land before reading both.
        time.sleep(0.3)
        st = gw.stats()
        out = query(gw, "out", 0x6601, PEER_A1)["packets"]
        policy = st["drops"]["policy"] - policy0
    recs = [i for i, (_, spi, _) in enumerate(h.raw_esp_records(gw.wan_out[0])) if spi == 0x6601]
    assert len(recs) == out
    # Runs of consecutive frames (the LAN loop cycles through the three flows;
    # a stride could be a multiple of 3 and see one flow only).
    frames_out = h.raw_frames(gw.wan_out[0], recs[:150] + recs[len(recs) // 2:len(recs) // 2 + 75] + recs[-75:])
    seen = set()
    for f in frames_out.values():  # scapy decrypts what was sent
        inner = IP(bytes(sa.scapy_sa().decrypt(h.Ether(f)[IP])))
        seen.add((inner.src, inner.dst))
    if mode == "route-based":  # the routes decide: everything to 172.31/16 goes
        assert seen == {INSIDE, OUTSIDE_LOCAL, OUTSIDE_REMOTE}, seen
        assert policy == 0
    else:  # only the selectors' traffic; two in three packets dropped as policy
        assert seen == {INSIDE}, seen
        # Within one burst (32) + 0.1%: fresh-clone CI runs saw policy about
        # 10-12 below 2 x out whatever the count (736 vs 2 x 374; 90,314 vs
        # 2 x 45,163); a loop position at tunnel-up/down explains only 2.
        # Not root-caused (see the closing note); the shape is what is checked.
        assert abs(policy - 2 * out) <= 32 + out // 1000, (policy, out)


def test_policy_based_inbound_sa_enforces_traffic_selectors(tmp_path):
    # An inbound SA installed with traffic_selectors on a policy-based
    # tunnel accepts only packets from remote to local; on a route-based one
    # the same SA accepts what the routes accept.
    right = IN["aws-a1"]
    wrong = h.Sa("in", right.spi, "aws-a1", seed=9002)  # the config's SA: another key (nothing accepted)
    sas = [s for s in ALL_SAS if s is not right] + [wrong]
    pairs = [("172.31.1.1", "10.240.128.9"), ("172.31.200.1", "10.240.128.9"), ("172.31.1.1", "10.240.128.200")]
    inner = [IP(bytes(IP(src=s, dst=d, id=i) / UDP(sport=1, dport=2) / Raw(b"p" * 40))) for i, (s, d) in
             enumerate(pairs * 4)]
    gw = h.Gateway(tmp_path, sas, routes=ONLY_A1, tunnels_extra={"aws-a1": {"policy_based": True}},
                   wan_in=[h.wan_frame(right.encrypt(p, n)) for n, p in enumerate(inner, 1)])
    gw.config["ports"][1]["device"] += ",infinite_rx=1"
    import yaml
    gw.config_path.write_text(yaml.safe_dump(gw.config, sort_keys=False))
    with gw:
        wait_for(lambda: gw.stats()["drops"]["icv_failure"] > 50, what="ESP traffic")
        assert gw.request({"op": "delete-sa", "direction": "in", "spi": right.spi, "dst": A})["ok"]
        policy0 = gw.stats()["drops"]["policy"]
        assert gw.request(by_addr("add-sa", right, PEER_A1, A, traffic_selectors=TS))["ok"]
        wait_for(lambda: gw.stats()["drops"]["replay"] > 100, what="a full pass")
        st = gw.stats()
    # Of 12 packets (one pass; later passes are replays), the 4 inside pass.
    assert query_packets(st, right.spi) == 4
    assert st["drops"]["policy"] - policy0 == 8
    lan = [IP(bytes(f[IP])) for f in gw.sent("lan") if f.haslayer(IP) and f[IP].src.startswith("172.31.")]
    assert {(p.src, p.dst) for p in lan} == {pairs[0]} and len(lan) == 4


def query_packets(stats, spi):
    return next(s["packets"] for s in stats["sas"] if s["direction"] == "in" and s["spi"] == f"0x{spi:08x}")
