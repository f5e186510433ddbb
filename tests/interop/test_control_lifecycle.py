"""The SA lifecycle and the control socket attacked through the real socket of
a running espgw (brief C3):

- a key || salt is installed once per direction: delete-sa then add-sa with
  the same key, the same key under another SPI or tunnel, a re-add after a
  hard expiry are refused (outbound: repeated GCM nonces; inbound: a fresh
  replay window that accepts every old packet again);
- an outbound SA moved by update-sa keeps its SPI on its tunnel to itself;
- request lines of exactly the maximum length are served, one byte more is
  refused, however the bytes arrive."""

import json
import socket
import subprocess
import time

import pytest
from scapy.all import IP, UDP, Raw

import gateway_harness as h
from test_control import ALL_SAS, gw, read_events, sa_req, state, subscribe  # noqa: F401 (gw: the shared fixture)

pytestmark = pytest.mark.skipif(not h.ESPGW.exists(), reason=f"espgw not built at {h.ESPGW}")

MAX_LINE = 64 * 1024  # ControlServer::kMaxRequest, docs/control-api.md


def test_an_outbound_key_is_installed_once(gw):
    sa = h.Sa("out", 0x5001, "aws-a1", seed=5001)
    assert gw.request(sa_req("add-sa", sa))["ok"]
    assert gw.request({"op": "delete-sa", "direction": "out", "spi": 0x5001})["ok"]
    before = state(gw)
    again = [sa_req("add-sa", sa),                                                # delete, then re-add
             sa_req("add-sa", h.Sa("out", 0x5002, "aws-a1", seed=5001)),          # another SPI
             sa_req("add-sa", h.Sa("out", 0x5001, "aws-b2", seed=5001)),          # another tunnel
             sa_req("replace-sa", h.Sa("out", 0x5003, "aws-a2", seed=5001))]      # replace-sa = add here
    for req in again:
        r = gw.request(req)
        assert r["ok"] is False and "would repeat GCM nonces" in r["error"], (req, r)
        assert sa.key.hex()[:8] not in r["error"]
    assert state(gw) == before
    # The static SAs' keys count too: the config's aws-a1 outbound key under a new SPI.
    r = gw.request(sa_req("add-sa", h.Sa("out", 0x5004, "aws-a1", seed=0x1001)))
    assert r["ok"] is False and "would repeat GCM nonces" in r["error"], r
    # A fresh key is fine, and a request refused for another reason does not use its key up.
    fresh = h.Sa("out", 0x5005, "aws-a1", seed=5005)
    assert gw.request(sa_req("add-sa", fresh, seq=0))["ok"] is False
    assert gw.request(sa_req("add-sa", fresh))["ok"]


def test_an_outbound_key_is_not_installed_again_after_a_hard_expiry(tmp_path):
    # Traffic on aws-b2 only; the SA starts 100 numbers before the end of its 32-bit space.
    lan = [h.lan_frame(IP(bytes(IP(src="10.240.128.5", dst=f"172.31.1.{i + 1}", id=i) / UDP(sport=1, dport=2) /
                                Raw(b"x" * 40)))) for i in range(32)]
    gw = h.Gateway(tmp_path, ALL_SAS, lan_in=lan, infinite_lan=True, down=("aws-a1", "aws-a2", "aws-b1"))
    with gw:
        s, f = subscribe(gw)
        s.settimeout(15)
        sa = h.Sa("out", 0x5101, "aws-b2", seed=5101)
        assert gw.request(sa_req("add-sa", sa, seq=2**32 - 100))["ok"]
        evs = read_events(f, 4)
        assert [(e["event"], e.get("kind")) for e in evs][-2:] == [("sa-expire", "hard"), ("sa-deleted", None)], evs
        s.close()
        # What an agent's expire handler might do: install the same SA again.
        r = gw.request(sa_req("add-sa", sa))
        assert r["ok"] is False and "would repeat GCM nonces" in r["error"], r
    seqs = [q for _, spi, q in h.raw_esp_records(gw.wan_out[0]) if spi == 0x5101]
    assert seqs and seqs == list(range(2**32 - 100, 2**32 - 100 + len(seqs))) and seqs[-1] <= 2**32 - 1


def test_an_inbound_key_is_installed_once(gw):
    # After delete-sa, a re-add with the same key would start a fresh replay
    # window: every packet sent under the old SA would be accepted again.
    sa = h.Sa("in", 0x6001, "aws-a1", seed=6001)
    assert gw.request(sa_req("add-sa", sa))["ok"]
    assert gw.request({"op": "delete-sa", "direction": "in", "spi": 0x6001})["ok"]
    before = state(gw)
    for req in (sa_req("add-sa", sa), sa_req("replace-sa", sa),
                sa_req("add-sa", h.Sa("in", 0x6002, "aws-b1", seed=6001))):
        r = gw.request(req)
        assert r["ok"] is False and "restart the replay window" in r["error"], (req, r)
    assert state(gw) == before
    # Nor outbound: the peer numbers its packets from 1 under that key as we would.
    r = gw.request(sa_req("add-sa", h.Sa("out", 0x6003, "aws-a1", seed=6001)))
    assert r["ok"] is False and "both ends number their packets" in r["error"], r
    assert state(gw) == before


def test_a_moved_outbound_spi_is_not_installed_twice_on_its_tunnel(gw):
    sa = h.Sa("out", 0x5201, "aws-a1", seed=5201)
    assert gw.request(sa_req("add-sa", sa))["ok"]
    assert gw.request({"op": "update-sa", "direction": "out", "spi": 0x5201, "tunnel": "aws-a1",
                       "remote": "192.0.2.77"})["ok"]
    before = state(gw)
    # replace-sa as first installed (the tunnel's remote): the same key at a new identity.
    r = gw.request(sa_req("replace-sa", sa))
    assert r["ok"] is False and "moved by update-sa" in r["error"], r
    # A new key under that SPI on that tunnel: two SAs that delete-sa could not tell apart.
    r = gw.request(sa_req("add-sa", h.Sa("out", 0x5201, "aws-a1", seed=5202)))
    assert r["ok"] is False and "moved by update-sa" in r["error"], r
    assert state(gw) == before
    assert gw.request({"op": "delete-sa", "direction": "out", "spi": 0x5201, "tunnel": "aws-a1"})["ok"]


def test_update_sa_cannot_move_an_sa_onto_another_identity(gw):
    # 0x5301 on aws-a1 (to 203.0.113.1) and 0x5301 on aws-a2 (to 203.0.113.2).
    assert gw.request(sa_req("add-sa", h.Sa("out", 0x5301, "aws-a1", seed=5301)))["ok"]
    assert gw.request(sa_req("add-sa", h.Sa("out", 0x5301, "aws-a2", seed=5302)))["ok"]
    before = state(gw)
    r = gw.request({"op": "update-sa", "direction": "out", "spi": 0x5301, "tunnel": "aws-a2",
                    "remote": h.TUNNELS["aws-a1"][1]})
    assert r["ok"] is False and "exists already" in r["error"], r
    r = gw.request({"op": "delete-sa", "direction": "out", "spi": 0x5301})
    assert r["ok"] is False and "name the tunnel" in r["error"], r
    r = gw.request({"op": "update-sa", "direction": "out", "spi": 0x5399, "tunnel": "aws-a2",
                    "lifetime": {"hard": {"seconds": 60}}})
    assert r["ok"] is False and "no out SA" in r["error"], r
    assert state(gw) == before


def raw_exchange(gw, data, shutdown=False, timeout=10):
    """Sends raw bytes on one connection; returns the reply lines until EOF or timeout."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(gw.sock)
    s.sendall(data)
    if shutdown:
        s.shutdown(socket.SHUT_WR)
    buf = b""
    eof = False
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                eof = True
                break
            buf += chunk
    except socket.timeout:
        pass
    s.close()
    return [json.loads(l) for l in buf.splitlines()], eof


def padded_ping(n, ident):
    """A valid request line of exactly n bytes (JSON allows trailing spaces)."""
    body = json.dumps({"op": "ping", "id": ident}).encode()
    return body + b" " * (n - len(body))


def test_request_line_limits_hold_however_the_bytes_arrive(gw):
    # Exactly the maximum: served, the connection stays open for the next line.
    replies, _ = raw_exchange(gw, padded_ping(MAX_LINE, 1) + b"\n" + padded_ping(10, 2) + b"\n", timeout=2)
    assert replies == [{"ok": True, "id": 1}, {"ok": True, "id": 2}]
    # One byte more, newline in the same write: refused, then closed.
    replies, eof = raw_exchange(gw, padded_ping(MAX_LINE + 1, 3) + b"\n" + padded_ping(10, 4) + b"\n")
    assert eof and len(replies) == 1 and replies[0]["ok"] is False, replies
    assert replies[0]["error"] == f"request longer than {MAX_LINE} bytes"
    # A served line followed by an over-long unfinished one in the same write:
    # the line is answered, the tail refused at once (not when more bytes come).
    replies, eof = raw_exchange(gw, padded_ping(20, 5) + b"\n" + b"a" * (MAX_LINE + 1))
    assert eof and replies[0] == {"ok": True, "id": 5}, replies
    assert len(replies) == 2 and replies[1]["error"] == f"request longer than {MAX_LINE} bytes"
    # A line without its newline, then EOF: nothing is served, nothing breaks.
    replies, eof = raw_exchange(gw, json.dumps({"op": "tunnel-down", "tunnel": "aws-a1"}).encode(), shutdown=True)
    assert eof and replies == []
    assert {t["name"]: t["admin"] for t in gw.request({"op": "tunnels"})["tunnels"]}["aws-a1"] == "up"
    assert gw.request({"op": "ping", "id": 6}) == {"ok": True, "id": 6}


ESPCTL = h.BUILD / "control" / "espctl"
BAD_ESPCTL_ARGS = [
    (["sa", "update", "-d", "out", "--spi", "0x1001", "-t", "aws-a1", "--encap", "4500x:4500"], "--encap wants"),
    (["sa", "update", "-d", "out", "--spi", "0x1001", "-t", "aws-a1", "--encap", "0:4500"], "--encap wants"),
    (["route", "add", "10.77.0.0/16", "--via", "aws-a1/10x"], "--via wants"),
    (["route", "add", "10.77.0.0/16", "--via", "aws-a1/-1"], "--via wants"),
    (["sa", "add", "-d", "out", "--spi", "0x5401", "-t", "aws-a1", "--key", "01" * 20, "--soft-bytes", "-1"],
     "digits only"),
    (["sa", "add", "-d", "out", "--spi", "0x5401", "-t", "aws-a1", "--key", "01" * 20, "--seq", "-1"], "digits only"),
    (["sa", "add", "-d", "out", "--spi", "0x5401", "-t", "aws-a1", "--key-file", "/nonexistent/key"],
     "cannot read key file"),
    (["sa", "add", "-d", "sideways", "--spi", "0x5401", "-t", "aws-a1", "--key", "01" * 20], "sideways"),
    (["sa", "add", "-d", "out", "--spi", "0x5401"], "an SA needs -t TUNNEL, or --src and --dst"),
    (["tunnel", "down"], "name is required"),
    (["raw", "[1]"], "not a JSON object"),
    (["events", "-n", "-1"], "digits only"),
    ([], "subcommand is required"),
]


@pytest.mark.parametrize("args,message", BAD_ESPCTL_ARGS)
def test_espctl_bad_arguments_exit_64_and_send_nothing(gw, args, message):
    before = state(gw)
    r = subprocess.run([str(ESPCTL), "-s", gw.sock, *args], capture_output=True, text=True, timeout=20)
    assert r.returncode == 64, (args, r.returncode, r.stdout, r.stderr)
    assert message in r.stderr, r.stderr
    assert state(gw) == before


def test_espctl_exit_codes_for_refusal_and_no_daemon(gw, tmp_path):
    r = subprocess.run([str(ESPCTL), "-s", gw.sock, "tunnel", "down", "no-such-tunnel"], capture_output=True,
                       text=True, timeout=20)
    assert r.returncode == 1 and "unknown tunnel" in r.stderr, r.stderr
    r = subprocess.run([str(ESPCTL), "-s", str(tmp_path / "none.sock"), "stats"], capture_output=True, text=True,
                       timeout=20)
    assert r.returncode == 2 and "cannot connect" in r.stderr, r.stderr
    r = subprocess.run([str(ESPCTL), "--help"], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0 and "espctl" in r.stdout


@pytest.mark.parametrize("spi", [0, 1, 255, "0x0", "0xff"])
@pytest.mark.parametrize("direction", ["in", "out"])
def test_reserved_spis_are_refused(gw, spi, direction):
    before = state(gw)
    r = gw.request({"op": "add-sa", "direction": direction, "spi": spi, "tunnel": "aws-b1",
                    "key": h.keymat(0x5500).hex()})
    assert r["ok"] is False and "reserved" in r["error"], r
    assert state(gw) == before
    # 256 is the first SPI that may be used (and the refused key was not used up).
    assert gw.request({"op": "add-sa", "direction": direction, "spi": 256, "tunnel": "aws-b1",
                       "key": h.keymat(0x5500).hex()})["ok"]


def test_the_last_sequence_number_is_sent_once_then_the_sa_expires(tmp_path):
    # seq 2^32-1 without ESN: exactly one packet, with 0xffffffff; never 0 or a
    # wrapped number; soft and hard expiry, in that order, formatted as documented.
    lan = [h.lan_frame(IP(bytes(IP(src="10.240.128.5", dst=f"172.31.1.{i + 1}", id=i) / UDP(sport=1, dport=2) /
                                Raw(b"x" * 40)))) for i in range(32)]
    gw = h.Gateway(tmp_path, ALL_SAS, lan_in=lan, infinite_lan=True, down=("aws-a1", "aws-a2", "aws-b1"))
    with gw:
        s, f = subscribe(gw)
        s.settimeout(15)
        sa = h.Sa("out", 0x5601, "aws-b2", seed=5601)
        assert gw.request(sa_req("add-sa", sa, seq=2**32 - 1))["ok"]
        evs = read_events(f, 4)
        s.close()
    common = {"direction": "out", "spi": "0x00005601", "tunnel": "aws-b2"}
    addresses = {"src": "198.51.100.11", "dst": "203.0.113.130", "protocol": "esp"}  # issue 11: for charon's expire
    assert evs == [
        {"event": "sa-installed", **common, "origin": "socket", "replaced": False},
        {"event": "sa-expire", "kind": "soft", "reason": "sequence", **common, **addresses},
        {"event": "sa-expire", "kind": "hard", "reason": "sequence", **common, **addresses},
        {"event": "sa-deleted", **common, "reason": "hard-expire", **addresses},
    ], evs
    seqs = [q for _, spi, q in h.raw_esp_records(gw.wan_out[0]) if spi == 0x5601]
    assert seqs == [2**32 - 1], seqs[:10]


def test_tunnel_state_events_are_formatted_as_documented(gw):
    s, f = subscribe(gw)
    s.settimeout(15)
    assert gw.request({"op": "tunnel-down", "tunnel": "aws-a2"})["ok"]
    assert gw.request({"op": "tunnel-up", "tunnel": "aws-a2"})["ok"]
    evs = read_events(f, 2)
    s.close()
    assert evs == [{"event": "tunnel-state", "tunnel": "aws-a2", "up": False, "admin": "down", "oper": "down"},
                   {"event": "tunnel-state", "tunnel": "aws-a2", "up": True, "admin": "up", "oper": "up"}], evs


ODD_NAMES = ["aws-a1\u0000", "aws-a1\n{\"ok\":true}", "\u00e9\u4e2d\U0001f600", "aws-a1 ", "A" * 60000, "", "%s%n"]


@pytest.mark.parametrize("name", ODD_NAMES, ids=range(len(ODD_NAMES)))
def test_odd_tunnel_names_are_refused_on_one_line(gw, name):
    before = state(gw)
    for req in ({"op": "tunnel-down", "tunnel": name},
                sa_req("add-sa", h.Sa("out", 0x5701, "aws-a1", seed=5701)) | {"tunnel": name},
                {"op": "delete-sa", "direction": "out", "spi": 0x1001, "tunnel": name},
                {"op": "add-route", "prefix": "10.77.0.0/16", "via": [{"tunnel": name, "priority": 1}]}):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect(gw.sock)
        s.sendall(json.dumps(req).encode() + b"\n")
        f = s.makefile("rb")
        line = f.readline()
        s.close()
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        r = json.loads(line)
        assert r["ok"] is False and "tunnel" in r["error"], (req["op"], r)
    assert state(gw) == before
    # The refused add did not use its key up.
    assert gw.request(sa_req("add-sa", h.Sa("out", 0x5701, "aws-a1", seed=5701)))["ok"]


def test_replace_sa_with_another_esn_setting_or_algorithm_is_refused(gw):
    sa = h.Sa("out", 0x5801, "aws-b1", seed=5801)
    assert gw.request(sa_req("add-sa", sa))["ok"]
    before = state(gw)
    r = gw.request(sa_req("replace-sa", sa, esn=True))
    assert r["ok"] is False and "ESN setting" in r["error"], r
    r = gw.request(sa_req("replace-sa", sa) | {"algo": "aes256-gcm", "key": h.keymat(5801, "aes256-gcm").hex()})
    assert r["ok"] is False and "a new key needs a new SPI" in r["error"], r
    # A lower seq is ignored, never moves the counter back.
    r = gw.request(sa_req("replace-sa", sa, seq=1))
    assert r["ok"]
    assert state(gw) == before


LIFETIMES = [
    ({"hard": {"bytes": 2**64 - 1, "packets": 2**64 - 1, "seconds": 2**64 - 1}}, True),
    ({"soft": {"bytes": 0}, "hard": {"seconds": 0}}, True),           # 0 = no limit
    ({"soft": {"packets": 10}, "hard": {"packets": 9}}, "larger than the hard limit"),
    ({"hard": {"bytes": 2**64}}, "non-negative JSON integer"),
    ({"hard": {"bytes": -1}}, "non-negative JSON integer"),
    ({"hard": {"bytes": 1.5}}, "non-negative JSON integer"),
    ({"hard": {"minutes": 5}}, "unknown field 'minutes'"),
]


@pytest.mark.parametrize("lifetime,expect", LIFETIMES, ids=range(len(LIFETIMES)))
def test_lifetime_edges(gw, lifetime, expect):
    before = state(gw)
    r = gw.request(sa_req("add-sa", h.Sa("in", 0x5901, "aws-b1", seed=5901), lifetime=lifetime))
    if expect is True:
        assert r["ok"], r
        sa = [s for s in gw.request({"op": "list-sas"})["sas"] if s["spi"] == "0x00005901"][0]
        assert sa["lifetime"]["hard"]["bytes"] == lifetime.get("hard", {}).get("bytes", 0)
    else:
        assert r["ok"] is False and expect in r["error"], r
        assert state(gw) == before


def test_two_thousand_clients_at_once_are_all_served(gw):
    # Past the daemon's client limit (1024) connections wait in the listen
    # backlog and are served as earlier clients leave.
    socks = []
    try:
        for _ in range(2000):
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(30)
            s.connect(gw.sock)
            socks.append(s)
        for i, s in enumerate(socks):
            s.sendall(json.dumps({"op": "ping", "id": i}).encode() + b"\n")
        for i, s in enumerate(socks):
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(4096)
                assert chunk, f"client {i} closed without a reply"
                buf += chunk
            assert json.loads(buf) == {"ok": True, "id": i}
            s.close()
    finally:
        for s in socks:
            s.close()
    assert gw.request({"op": "ping", "id": -1}) == {"ok": True, "id": -1}
