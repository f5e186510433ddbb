"""Interop: espgw's ESP tunnel mode (tools/esp-vector, real mbufs and
dataplane/esp.h) against scapy's independent ESP implementation, and a
cross-check with tshark's ESP dissector.

Run with Debian's interpreter (it has scapy):
    ESPGW_BUILD=/abs/build/dir /usr/bin/python3 -m pytest tests/interop
"""
import os
import random
import shutil
import struct
import subprocess

import pytest

scapy_all = pytest.importorskip("scapy.all", reason="scapy not installed (use /usr/bin/python3)")
from scapy.all import ICMP, IP, TCP, UDP, Raw, rdpcap, wrpcap  # noqa: E402
from scapy.layers.ipsec import ESP, SecurityAssociation  # noqa: E402

AESGCM = pytest.importorskip("cryptography.hazmat.primitives.ciphers.aead",
                             reason="pyca/cryptography (scapy's ESP backend) missing").AESGCM

BUILD = os.environ.get("ESPGW_BUILD", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "build"))
TOOL = os.path.join(BUILD, "tools", "esp-vector")

pytestmark = pytest.mark.skipif(
    not os.access(TOOL, os.X_OK),
    reason=f"{TOOL} not built (configure with -Dtests=true; set ESPGW_BUILD)")

OUTER_SRC = "192.0.2.1"
OUTER_DST = "198.51.100.2"
SPI = 0x0c0ffee1


def keymat(bits, seed):
    rng = random.Random(seed)
    return bytes(rng.randrange(256) for _ in range(bits // 8 + 4))


def inner_packets(seed=1):
    """IPv4 UDP/TCP/ICMP packets of total length 20..1500: every size 20..80
    (every length mod 16, several times), then a spread up to 1500."""
    sizes = list(range(20, 81)) + list(range(97, 1500, 53)) + [1499, 1500]
    rng = random.Random(seed)
    pkts = []
    for i, size in enumerate(sizes):
        ip = IP(src="10.0.%d.1" % (i % 250), dst="10.1.0.2", ttl=rng.randrange(1, 256),
                tos=rng.randrange(256), id=rng.randrange(65536),
                flags="DF" if i % 2 else 0)
        kind = i % 3
        if size < 28:
            p = ip / Raw(bytes(rng.randrange(256) for _ in range(size - 20)))
            p[IP].proto = 253  # experimental: plain payload
        elif kind == 0 or size < 40:
            p = ip / UDP(sport=rng.randrange(1, 65536), dport=53)
            p = p / Raw(bytes(rng.randrange(256) for _ in range(size - 28)))
        elif kind == 1:
            p = ip / TCP(sport=rng.randrange(1024, 65536), dport=443, flags="PA",
                         seq=rng.randrange(2**32))
            p = p / Raw(bytes(rng.randrange(256) for _ in range(size - 40)))
        else:
            p = ip / ICMP(type=8, id=i, seq=i)
            p = p / Raw(bytes(rng.randrange(256) for _ in range(size - 28)))
        p = IP(bytes(p))
        assert len(p) == size
        pkts.append(p)
    return pkts


def run_tool(mode, args, pin, pout):
    cmd = [TOOL, mode] + args + [str(pin), str(pout)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"{cmd}: rc={r.returncode}\n{r.stdout}\n{r.stderr}"
    failures = {}
    for line in r.stdout.splitlines():
        idx, status = line.split()
        failures[int(idx)] = status
    return failures


def scapy_sa(key, udp, esn):
    return SecurityAssociation(
        ESP, spi=SPI, crypt_algo="AES-GCM", crypt_key=key,
        tunnel_header=IP(src=OUTER_SRC, dst=OUTER_DST),
        nat_t_header=UDP(sport=4500, dport=4500) if udp else None,
        esn_en=esn)


def tool_args(key, udp, esn, burst):
    a = ["--spi", hex(SPI), "--key", key.hex(), "--burst", str(burst)]
    if udp:
        a.append("--udp")
    if esn:
        a.append("--esn")
    return a


VARIANTS = [
    pytest.param(bits, udp, esn, id=f"aes{bits}-{'udp' if udp else 'esp'}-{'esn' if esn else 'seq32'}")
    for bits in (128, 256) for udp in (False, True) for esn in (False, True)
]


def start_seq(esn):
    # ESN: start just below 2^32 so the high 32 bits change inside the run.
    return 0xFFFFFFF0 if esn else 7


@pytest.mark.parametrize("bits,udp,esn", VARIANTS)
def test_espgw_encrypts_scapy_decrypts(tmp_path, bits, udp, esn):
    key = keymat(bits, bits + 2 * udp + esn)
    inner = inner_packets(seed=bits)
    wrpcap(str(tmp_path / "inner.pcap"), inner)
    start = start_seq(esn)
    burst = 1 if (bits == 256 and not udp) else 32
    args = tool_args(key, udp, esn, burst) + ["--src", OUTER_SRC, "--dst", OUTER_DST,
                                              "--seq", str(start)]
    fails = run_tool("encrypt", args, tmp_path / "inner.pcap", tmp_path / "esp.pcap")
    assert fails == {}
    outer = rdpcap(str(tmp_path / "esp.pcap"))
    assert len(outer) == len(inner)

    sa = scapy_sa(key, udp, esn)
    for i, (o, p) in enumerate(zip(outer, inner)):
        raw = bytes(o)
        o = IP(raw)
        seq = start + i
        # Outer IPv4 header.
        assert o.version == 4 and o.ihl == 5
        assert o.src == OUTER_SRC and o.dst == OUTER_DST
        assert o.len == len(raw)
        assert o.ttl == 64
        assert o.tos == p.tos  # DSCP and ECN copied (RFC 4301 / RFC 6040 defaults)
        assert (o.flags.DF) == (p.flags.DF)  # DF copied
        assert o.frag == 0 and not o.flags.MF
        assert o.id == seq & 0xFFFF
        ref = o.copy()
        del ref.chksum
        assert IP(bytes(ref)).chksum == o.chksum, "outer IPv4 checksum"
        if udp:
            assert o.proto == 17
            assert o[UDP].sport == 4500 and o[UDP].dport == 4500
            assert o[UDP].len == len(raw) - 20
            assert o[UDP].chksum == 0
            esp_bytes = raw[28:]
        else:
            assert o.proto == 50
            esp_bytes = raw[20:]
        esp = ESP(esp_bytes)
        assert esp.spi == SPI
        assert esp.seq == seq & 0xFFFFFFFF
        assert esp_bytes[8:16] == struct.pack("!Q", seq), "IV = 64-bit sequence number"
        # Trailer: decrypt the ESP payload with pyca/cryptography's AES-GCM
        # (scapy's own _ESPPlain.padding is sliced wrongly in 2.5.0).
        high = seq >> 32
        aad = esp_bytes[:4] + (struct.pack("!I", high) if esn else b"") + esp_bytes[4:8]
        plain = AESGCM(key[:-4]).decrypt(key[-4:] + esp_bytes[8:16], esp_bytes[16:], aad)
        padlen = -(len(p) + 2) % 4
        assert len(plain) == len(p) + padlen + 2
        assert plain[:len(p)] == bytes(p)
        assert plain[len(p):len(p) + padlen] == bytes(range(1, padlen + 1)), "RFC 4303 pad bytes 1,2,3"
        assert plain[-2] == padlen, "pad length: the minimum for 4-byte alignment"
        assert plain[-1] == 4, "next header: IPv4"
        # And scapy's full tunnel-mode decapsulation.
        d = sa.decrypt(o.copy(), esn=high) if high else sa.decrypt(o.copy())
        assert bytes(d) == bytes(p), f"packet {i} (inner size {len(p)})"


def scapy_encrypt_stream(sa, inner, start, udp):
    out = []
    for i, p in enumerate(inner):
        seq = start + i
        sa.seq_num = seq & 0xFFFFFFFF  # set directly: seq_num=0 would mean "default"
        sa.esn = seq >> 32
        e = sa.encrypt(p)
        if udp:
            e[UDP].len = None  # scapy leaves UDP.len = 8 with nat_t_header
        out.append(IP(bytes(e)))
    return out


@pytest.mark.parametrize("bits,udp,esn", VARIANTS)
def test_scapy_encrypts_espgw_decrypts(tmp_path, bits, udp, esn):
    key = keymat(bits, 100 + bits + 2 * udp + esn)
    inner = inner_packets(seed=bits + 1)
    start = start_seq(esn)
    sa = scapy_sa(key, udp, esn)
    enc = scapy_encrypt_stream(sa, inner, start, udp)
    # Sanity: scapy agrees with itself.
    sa.esn = start >> 32
    assert bytes(sa.decrypt(enc[0].copy())) == bytes(inner[0])  # decrypt() mangles its argument
    wrpcap(str(tmp_path / "esp.pcap"), enc)
    burst = 1 if (bits == 128 and udp) else 32
    args = tool_args(key, udp, esn, burst) + ["--dst", OUTER_DST]
    if esn and burst > 1:
        # The burst path infers ESN high bits from the window as it was at the
        # start of the burst; a fresh window (top 0) cannot tell that a
        # stream starting at 0xfffffff0 wraps inside its first burst. Start
        # the receiver as an SA that has been running (real ESN SAs start at
        # 1). The burst-1 variants run from a fresh window.
        args += ["--top", str(start - 1)]
    fails = run_tool("decrypt", args, tmp_path / "esp.pcap", tmp_path / "inner.pcap")
    assert fails == {}
    got = rdpcap(str(tmp_path / "inner.pcap"))
    assert len(got) == len(inner)
    for i, (g, p) in enumerate(zip(got, inner)):
        assert bytes(g) == bytes(p), f"packet {i} (inner size {len(p)})"


def test_espgw_rejects_bad_scapy_packets(tmp_path):
    """Replays, forgeries, reordering, IKE and keepalives in one scapy-made
    stream: espgw must pass exactly the good packets and name each failure."""
    key = keymat(128, 7)
    inner = inner_packets(seed=9)[:40]
    sa = scapy_sa(key, True, False)
    enc = scapy_encrypt_stream(sa, inner, 1, True)
    stream = []
    expect = {}
    want_inner = []
    for i, e in enumerate(enc):
        stream.append(e)
        want_inner.append(inner[i])
        if i == 5:
            stream.append(enc[3])  # replay of an earlier packet
            expect[len(stream) - 1] = "replay"
        if i == 10:
            bad = bytearray(bytes(e))
            bad[-20] ^= 0x01  # ciphertext
            stream.append(IP(bytes(bad)))
            expect[len(stream) - 1] = "icv-mismatch"
        if i == 12:
            bad = bytearray(bytes(e))
            bad[-1] ^= 0x80  # ICV
            stream.append(IP(bytes(bad)))
            expect[len(stream) - 1] = "icv-mismatch"
        if i == 15:
            ike = IP(src=OUTER_SRC, dst=OUTER_DST) / UDP(sport=4500, dport=4500) / Raw(b"\x00" * 4 + b"IKEv2hdr" * 4)
            stream.append(IP(bytes(ike)))
            expect[len(stream) - 1] = "not-esp"
            ka = IP(src=OUTER_SRC, dst=OUTER_DST) / UDP(sport=4500, dport=4500) / Raw(b"\xff")
            stream.append(IP(bytes(ka)))
            expect[len(stream) - 1] = "not-esp"
        if i == 20:
            other = SecurityAssociation(ESP, spi=SPI + 1, crypt_algo="AES-GCM", crypt_key=key,
                                        tunnel_header=IP(src=OUTER_SRC, dst=OUTER_DST),
                                        nat_t_header=UDP(sport=4500, dport=4500))
            x = other.encrypt(inner[0])
            x[UDP].len = None
            stream.append(IP(bytes(x)))
            expect[len(stream) - 1] = "unknown-spi"
        if i == 25:
            short = IP(src=OUTER_SRC, dst=OUTER_DST) / UDP(sport=4500, dport=4500) / Raw(bytes(e[UDP].payload)[:30])
            stream.append(IP(bytes(short)))
            expect[len(stream) - 1] = "short-esp"
    wrpcap(str(tmp_path / "esp.pcap"), stream)
    args = tool_args(key, True, False, 32) + ["--dst", OUTER_DST, "--window", "64"]
    fails = run_tool("decrypt", args, tmp_path / "esp.pcap", tmp_path / "inner.pcap")
    assert fails == expect
    got = rdpcap(str(tmp_path / "inner.pcap"))
    assert [bytes(g) for g in got] == [bytes(p) for p in want_inner]


def test_espgw_decrypts_reordered_and_rejects_too_old(tmp_path):
    key = keymat(256, 8)
    inner = inner_packets(seed=3)[:80]
    sa = scapy_sa(key, False, False)
    enc = scapy_encrypt_stream(sa, inner, 1, False)
    order = list(range(80))
    rng = random.Random(5)
    for k in range(0, 80, 8):  # shuffle within blocks of 8 (window 32)
        blk = order[k:k + 8]
        rng.shuffle(blk)
        order[k:k + 8] = blk
    stream = [enc[j] for j in order] + [enc[10]]  # 10 is far left of the window at the end
    wrpcap(str(tmp_path / "esp.pcap"), stream)
    args = tool_args(key, False, False, 32) + ["--window", "32"]
    fails = run_tool("decrypt", args, tmp_path / "esp.pcap", tmp_path / "inner.pcap")
    assert fails == {80: "too-old"}
    got = rdpcap(str(tmp_path / "inner.pcap"))
    assert [bytes(g) for g in got] == [bytes(inner[j]) for j in order]


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
@pytest.mark.parametrize("udp", [False, True], ids=["esp", "udp"])
def test_tshark_decodes_espgw_output(tmp_path, udp):
    key = keymat(128, 42)
    inner = inner_packets(seed=4)[:30]
    wrpcap(str(tmp_path / "inner.pcap"), inner)
    args = tool_args(key, udp, False, 32) + ["--src", OUTER_SRC, "--dst", OUTER_DST]
    assert run_tool("encrypt", args, tmp_path / "inner.pcap", tmp_path / "esp.pcap") == {}
    uat = ('uat:esp_sa:"IPv4","%s","%s","0x%08x","AES-GCM with 16 octet ICV [RFC4106]","0x%s","NULL",""'
           % (OUTER_SRC, OUTER_DST, SPI, key.hex()))
    r = subprocess.run(
        # dns/tls off: the random inner payloads are not valid DNS/TLS, and a
        # dissector exception there would stop tshark before the ESP trailer.
        ["tshark", "-n", "-r", str(tmp_path / "esp.pcap"), "--disable-protocol", "dns",
         "--disable-protocol", "tls", "-o", "esp.enable_encryption_decode:TRUE",
         "-o", uat, "-T", "fields", "-E", "separator=|",
         "-e", "esp.spi", "-e", "esp.sequence", "-e", "ip.src", "-e", "ip.dst", "-e", "ip.len",
         "-e", "esp.pad_len", "-e", "esp.protocol"],
        capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stdout.splitlines() if l.strip()]
    assert len(lines) == len(inner)
    for i, (line, p) in enumerate(zip(lines, inner)):
        spi, seq, srcs, dsts, lens, padlen, proto = line.split("|")
        assert int(spi, 0) == SPI
        assert int(seq) == 1 + i
        # tshark saw the decrypted inner IPv4 header.
        assert srcs.split(",") == [OUTER_SRC, p.src]
        assert dsts.split(",") == [OUTER_DST, p.dst]
        assert int(lens.split(",")[-1]) == len(p)
        assert int(padlen) == -(len(p) + 2) % 4
        assert int(proto, 0) == 4


def test_ethernet_input_pcap(tmp_path):
    """esp-vector also reads Ethernet pcaps (linktype 1): the L2 header is
    dropped, non-IPv4 frames are reported and skipped."""
    from scapy.all import ARP, Ether
    key = keymat(128, 77)
    inner = inner_packets(seed=11)[:10]
    frames = [Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / p for p in inner]
    frames.insert(4, Ether() / ARP())
    wrpcap(str(tmp_path / "eth.pcap"), frames)
    args = tool_args(key, False, False, 32) + ["--src", OUTER_SRC, "--dst", OUTER_DST]
    fails = run_tool("encrypt", args, tmp_path / "eth.pcap", tmp_path / "esp.pcap")
    assert fails == {4: "bad-inner"}
    sa = scapy_sa(key, False, False)
    got = rdpcap(str(tmp_path / "esp.pcap"))
    assert [bytes(sa.decrypt(IP(bytes(g)))) for g in got] == [bytes(p) for p in inner]
