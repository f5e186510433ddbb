"""Generated control lines through the real socket of a running espgw.

Random types in every field of every operation, deep nesting, huge numbers,
NUL bytes, invalid UTF-8 and truncation, with valid operations interleaved.
Checked: the daemon stays up, every line gets exactly one reply, and a batch
whose generated lines were all refused leaves list-sas, routes and tunnels
exactly as they were (the valid operations in a batch come in pairs that
undo each other: add/delete, down/up).

ESPGW_FUZZ_LINES sets the number of lines (default: as many as fit in
ESPGW_FUZZ_SECONDS, 60); ESPGW_FUZZ_SEED the seed. Run by hand for the long
run: ESPGW_FUZZ_LINES=1000000 ESPGW_FUZZ_SECONDS=100000 ... -s"""

import json
import os
import random
import socket
import time

import pytest

import gateway_harness as h
from test_control import ALL_SAS, state

pytestmark = pytest.mark.skipif(not h.ESPGW.exists(), reason=f"espgw not built at {h.ESPGW}")

KEY = h.keymat(1).hex()
TEMPLATES = [
    {"op": "ping"}, {"op": "stats"}, {"op": "tunnels"}, {"op": "list-sas"}, {"op": "routes"},
    {"op": "tunnel-down", "tunnel": "aws-zz"}, {"op": "tunnel-up", "tunnel": "aws-zz"},
    {"op": "add-sa", "direction": "out", "spi": 0x1001, "tunnel": "aws-a1", "algo": "aes128-gcm", "key": KEY,
     "esn": False, "seq": 1, "lifetime": {"soft": {"bytes": 1}, "hard": {"packets": 2}}},
    {"op": "add-sa", "direction": "in", "spi": 0x2001, "tunnel": "aws-a1", "key": KEY, "replay_window": 64,
     "local_selectors": ["10.240.128.0/24"], "remote_selectors": ["172.31.0.0/16"]},
    {"op": "replace-sa", "direction": "out", "spi": 0x1002, "tunnel": "aws-a2", "key": h.keymat(0x1002).hex()},
    {"op": "update-sa", "direction": "out", "spi": 0x1003, "tunnel": "aws-b1", "remote": "203.0.113.129",
     "lifetime": {"hard": {"seconds": 100}}},
    {"op": "delete-sa", "direction": "in", "spi": 0x2004, "tunnel": "aws-b2"},
    {"op": "add-route", "prefix": "172.31.0.0/16", "via": [{"tunnel": "aws-a1", "priority": 1}]},
    {"op": "replace-route", "prefix": "10.1.0.0/16", "via": [{"tunnel": "aws-a1", "priority": 1}]},
    {"op": "delete-route", "prefix": "10.2.0.0/16"},
]
# Fields whose mutation can still give a valid, state-changing request are
# pinned to values that make the request fail (an existing SPI for add-sa,
# a missing SA for update/delete, an existing route for add-route...), so a
# mutant is refused unless the mutation itself happens to repair it; such
# lines are recognised by their ok reply and their batch is not compared.

SCALARS = [None, True, False, 0, 1, -1, 255, 256, 65535, 65536, 2**31, 2**32 - 1, 2**32, 2**63, 2**64 - 1, 2**64,
           -2**63, 10**400, 0.0, 1.5, -0.0, 1e308, "", "0x", "0x1001", "07001", " 0x1001", "+0x1", "\t1", "aws-a1",
           "in", "out", "aes256-gcm", "10.0.0.0/8", "1.2.3.4", "0" * 40, "zz", "\u0000", "é", "\ud7ff", "x" * 3000]


def random_value(rng, depth=0):
    r = rng.random()
    if r < 0.6 or depth > 3:
        return rng.choice(SCALARS)
    if r < 0.8:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(["sport", "dport", "soft", "hard", "bytes", "x", "tunnel", "priority"]):
            random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def mutate(rng, req):
    req = json.loads(json.dumps(req))
    for _ in range(rng.randint(1, 3)):
        r = rng.random()
        keys = list(req)
        if r < 0.55 and keys:
            req[rng.choice(keys)] = random_value(rng)
        elif r < 0.7 and keys:
            del req[rng.choice(keys)]
        elif r < 0.8:
            req[rng.choice(["colour", "id2", "Op", "spi ", "encap", "remote", "lifetime", "key"])] = random_value(rng)
        else:  # a nested field
            for k in ("lifetime", "via", "encap", "local_selectors"):
                if k in req and isinstance(req[k], (dict, list)) and req[k]:
                    if isinstance(req[k], dict):
                        req[k][rng.choice(list(req[k]) + ["x"])] = random_value(rng)
                    else:
                        req[k][0] = random_value(rng)
                    break
            else:
                req["encap"] = random_value(rng)
    return req


def raw_line(rng):
    """Bytes that are not what json.dumps makes: nesting, NULs, bad UTF-8, truncation."""
    base = json.dumps(mutate(rng, rng.choice(TEMPLATES))).encode()
    r = rng.random()
    if r < 0.2:
        n = rng.choice([17, 100, 3000, 20000])
        return b"[" * n + b"]" * rng.choice([0, n])
    if r < 0.35:
        i = rng.randrange(len(base) + 1)
        return base[:i] + b"\x00" + base[i:]
    if r < 0.5:
        i = rng.randrange(len(base) + 1)
        return base[:i] + rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"]) + base[i:]
    if r < 0.65:
        return base[:rng.randrange(1, len(base) + 1)]
    if r < 0.8:
        return base.replace(b":", b":" + b"9" * rng.randint(20, 400), 1)   # huge numbers
    if r < 0.9:
        return b'{"op":"ping","x":' + b'{"a":' * 16 + b"1" + b"}" * 16 + b"}"
    return bytes(rng.randrange(1, 256) for _ in range(rng.randint(1, 60))).replace(b"\n", b" ")


def generated_line(rng):
    line = raw_line(rng) if rng.random() < 0.35 else json.dumps(mutate(rng, rng.choice(TEMPLATES))).encode()
    line = line.replace(b"\n", b" ")  # one line is one request
    if not line.strip(b"\r"):
        line = b"x"
    return line


def valid_pair(rng, n, before):
    """Two valid requests whose effects cancel out (from the state `before`)."""
    k = rng.randrange(3)
    if k == 0:
        p = f"10.{n % 200}.{n // 200 % 250}.0/24"
        return [{"op": "add-route", "prefix": p, "via": [{"tunnel": "aws-b1", "priority": 3}]},
                {"op": "delete-route", "prefix": p}]
    if k == 1:
        t = rng.choice(json.loads(before)[1])
        ops = ["tunnel-down", "tunnel-up"] if t["admin_up"] else ["tunnel-up", "tunnel-down"]
        return [{"op": op, "tunnel": t["name"]} for op in ops]
    spi = 0x70000 + n
    return [{"op": "add-sa", "direction": "out", "spi": spi, "tunnel": "aws-b2", "key": h.keymat(spi).hex()},
            {"op": "delete-sa", "direction": "out", "spi": spi, "tunnel": "aws-b2"}]


def exchange(sock_file, sock, lines):
    sock.sendall(b"".join(l + b"\n" for l in lines))
    return [sock_file.readline() for _ in lines]


def test_control_fuzz(tmp_path):
    seed = int(os.environ.get("ESPGW_FUZZ_SEED", random.randrange(1 << 30)))
    max_lines = int(os.environ.get("ESPGW_FUZZ_LINES", "1000000000"))
    seconds = float(os.environ.get("ESPGW_FUZZ_SECONDS", "60"))
    rng = random.Random(seed)
    gw = h.Gateway(tmp_path, ALL_SAS)
    sent = refused = accepted_mutants = compared = 0
    with gw:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(30)
        s.connect(gw.sock)
        f = s.makefile("rb")
        t0 = time.time()
        batch_no = 0
        while sent < max_lines and time.time() - t0 < seconds:
            batch_no += 1
            before = state(gw)
            gen = [generated_line(rng) for _ in range(min(200, max_lines - sent))]
            pair = valid_pair(rng, batch_no, before)
            # The pair's halves go at random places, in order.
            i, j = sorted(rng.sample(range(len(gen) + 1), 2))
            lines = gen[:i] + [json.dumps(pair[0]).encode()] + gen[i:j] + [json.dumps(pair[1]).encode()] + gen[j:]
            replies = exchange(f, s, lines)
            assert all(r.endswith(b"\n") for r in replies), f"seed {seed}: a line got no reply"
            parsed = [json.loads(r) for r in replies]
            pair_idx = {i, j + 1}
            ok_mutants = 0
            for k, (line, r) in enumerate(zip(lines, parsed)):
                assert isinstance(r, dict) and isinstance(r.get("ok"), bool), (seed, line[:200], r)
                if k in pair_idx:
                    assert r["ok"], (seed, line, r)
                elif r["ok"]:
                    ok_mutants += 1
                else:
                    assert isinstance(r.get("error"), str) and r["error"], (seed, line[:200], r)
            sent += len(lines)
            refused += len(gen) - ok_mutants
            accepted_mutants += ok_mutants
            assert gw.proc.poll() is None, f"seed {seed}: espgw exited:\n{gw.read_log()}"
            if ok_mutants == 0 or all(json.loads(lines[k]).get("op") in ("ping", "stats", "tunnels", "list-sas",
                                                                         "sas", "routes", "subscribe")
                                      for k, r in enumerate(parsed) if k not in pair_idx and r["ok"]):
                assert state(gw) == before, f"seed {seed}: refused lines changed the state (batch {batch_no})"
                compared += 1
        elapsed = time.time() - t0
        s.close()
        assert gw.request({"op": "ping"})["ok"]
    assert gw.proc.returncode == 0 and "final counters" in gw.output
    rate = sent / elapsed
    print(f"\nfuzz: seed {seed}: {sent} lines in {elapsed:.1f} s ({rate:.0f} lines/s), {refused} refused, "
          f"{accepted_mutants} generated lines accepted, {compared} of {batch_no} batches compared unchanged")
    assert compared >= batch_no // 2
