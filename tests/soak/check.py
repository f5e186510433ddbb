"""Checks what the soak's ports sent, frame by frame, with OpenSSL's AES-GCM
(python `cryptography`), independent of espgw's code.

WAN output: every ESP frame decrypts (ICV verified) under the key of the
outbound SA its SPI names, its capture time lies inside that SA's installed
interval (from the add-sa request to the delete-sa reply), its inner packet
is one the LAN side sent towards a routed prefix, and no (SPI, sequence
number) pair appears twice. LAN output: every decrypted packet is one of the
peer's (tunnel, generation, index) packets, and none was accepted twice."""

import struct
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from traffic import MARK_IN

# Capture times, mapped onto the soak's clock (clock_fit), may differ from it
# by this much (scheduling of the soak's own thread, the fit's error).
CLOCK_SLACK_S = 0.1


@dataclass
class OutboundSaLog:
    spi: int
    keymat: bytes
    installed: float            # time.time() before the add-sa request
    deleted: float = float("inf")  # time.time() after the delete-sa reply
    fitted: bool = True            # installed while traffic flowed (clock_fit uses it)


@dataclass
class WanReport:
    esp: int = 0
    arp: int = 0
    other: int = 0
    bad_icv: list = field(default_factory=list)
    unknown_spi: list = field(default_factory=list)
    outside_lifetime: list = field(default_factory=list)
    duplicates: list = field(default_factory=list)
    bad_inner: list = field(default_factory=list)
    spis_seen: int = 0
    first_ts: float = 0.0
    last_ts: float = 0.0
    clock_offset_s: float = 0.0
    clock_drift_ppm: float = 0.0

    def problems(self):
        return {k: v[:5] for k, v in (("bad_icv", self.bad_icv), ("unknown_spi", self.unknown_spi),
                                      ("outside_lifetime", self.outside_lifetime),
                                      ("duplicates", self.duplicates), ("bad_inner", self.bad_inner)) if v}

    def counts(self):
        return {k: len(v) for k, v in (("bad_icv", self.bad_icv), ("unknown_spi", self.unknown_spi),
                                       ("outside_lifetime", self.outside_lifetime),
                                       ("duplicates", self.duplicates), ("bad_inner", self.bad_inner))}


def pcap_records_ts(path):
    """(timestamp, frame bytes) of each record of a classic pcap, streamed."""
    with open(path, "rb") as f:
        hdr = f.read(24)
        if len(hdr) < 24:
            return
        magic = struct.unpack("<I", hdr[:4])[0]
        nano = magic == 0xA1B23C4D
        while True:
            rec = f.read(16)
            if len(rec) < 16:
                return
            sec, frac, incl, _ = struct.unpack("<IIII", rec)
            data = f.read(incl)
            if len(data) < incl:
                return
            yield sec + frac / (1e9 if nano else 1e6), data


class SeqSeen:
    """Which sequence numbers one SPI has sent: a growing bitmap."""

    def __init__(self):
        self.bits = bytearray(1024)

    def add(self, seq):
        """True when seq was seen before."""
        i, b = seq >> 3, 1 << (seq & 7)
        if i >= len(self.bits):
            self.bits.extend(bytes(max(i + 1 - len(self.bits), len(self.bits))))
        dup = bool(self.bits[i] & b)
        self.bits[i] |= b
        return dup


def routed_destination(dst: bytes):
    return dst[:2] == bytes([172, 31]) or dst[:3] == bytes([192, 0, 2])


def clock_fit(paths, sa_log: dict):
    """net_pcap stamps frames with the TSC since the port started, anchored
    to gettimeofday once; over an hour its rate error adds up. An SA carries
    its first frame no earlier than its add-sa request (later when its
    tunnel is down or not the active route), so the smallest (first capture
    time - add-sa time) per minute traces the capture clock's offset: a
    line through those minima (a constant for runs under 3 minutes).
    Returns (offset a, drift b): wall = capture - (a + b * capture)."""
    first = {}
    for path in paths:
        for ts, pkt in pcap_records_ts(path):
            if pkt[12:14] == b"\x08\x00" and pkt[23] == 50:
                spi = struct.unpack(">I", pkt[34:38])[0]
                first.setdefault(spi, ts)
    pts = [(sa_log[spi].installed, ts - sa_log[spi].installed) for spi, ts in first.items()
           if spi in sa_log and sa_log[spi].fitted]
    if not pts:
        return 0.0, 0.0
    bins = {}
    x0 = min(x for x, _ in pts)
    for x, y in pts:
        k = int((x - x0) // 60)
        if k not in bins or y < bins[k][1]:
            bins[k] = (x, y)
    mins = sorted(bins.values())
    if len(mins) < 3:
        return min(y for _, y in pts), 0.0
    n = len(mins)
    mx = sum(x for x, _ in mins) / n
    my = sum(y for _, y in mins) / n
    sxx = sum((x - mx) ** 2 for x, _ in mins)
    b = sum((x - mx) * (y - my) for x, y in mins) / sxx
    return my - b * mx, b


def check_wan(paths, sa_log: dict):
    """Every frame the WAN port sent. sa_log: SPI -> OutboundSaLog."""
    r = WanReport()
    a, b = clock_fit(paths, sa_log)
    r.clock_offset_s, r.clock_drift_ppm = a, b * 1e6
    aead = {}
    seen = {}
    for path in paths:
        for ts, pkt in pcap_records_ts(path):
            ts -= a + b * ts   # onto the soak's clock (clock_fit)
            r.first_ts = r.first_ts or ts
            r.last_ts = ts
            etype = struct.unpack(">H", pkt[12:14])[0]
            if etype == 0x0806:
                r.arp += 1
                continue
            ip = pkt[14:]
            if etype != 0x0800 or ip[9] not in (50, 17):
                r.other += 1
                continue
            ihl = (ip[0] & 0xF) * 4
            esp = ip[ihl + (8 if ip[9] == 17 else 0):struct.unpack(">H", ip[2:4])[0]]
            r.esp += 1
            spi, seq = struct.unpack(">II", esp[:8])
            sa = sa_log.get(spi)
            if sa is None:
                r.unknown_spi.append((ts, hex(spi), seq))
                continue
            if not (sa.installed - CLOCK_SLACK_S <= ts <= sa.deleted + CLOCK_SLACK_S):
                r.outside_lifetime.append((ts, hex(spi), seq, sa.installed, sa.deleted))
            if seen.setdefault(spi, SeqSeen()).add(seq):
                r.duplicates.append((ts, hex(spi), seq))
            if spi not in aead:
                aead[spi] = AESGCM(sa.keymat[:-4])
            try:
                plain = aead[spi].decrypt(sa.keymat[-4:] + esp[8:16], esp[16:], esp[:8])
            except InvalidTag:
                r.bad_icv.append((ts, hex(spi), seq))
                continue
            pad_len, next_header = plain[-2], plain[-1]
            inner = plain[:len(plain) - 2 - pad_len]
            ok = (next_header == 4 and len(inner) >= 20 and inner[0] >> 4 == 4 and
                  struct.unpack(">H", inner[2:4])[0] == len(inner) and routed_destination(inner[16:20]))
            # A fragment made before encryption carries the marker only in its
            # first piece; mutated LAN frames may carry none.
            if not ok:
                r.bad_inner.append((ts, hex(spi), seq, inner[:24].hex()))
    r.spis_seen = len(seen)
    return r


@dataclass
class LanReport:
    decrypted: int = 0
    other: int = 0
    accepted: dict = field(default_factory=dict)   # (tunnel, gen) -> packets accepted
    accepted_twice: list = field(default_factory=list)


def check_lan(paths):
    """The frames the LAN port sent: decrypted peer packets, ICMP errors, ARP."""
    r = LanReport()
    seen = set()
    for path in paths:
        for ts, pkt in pcap_records_ts(path):
            ip = pkt[14:]
            if struct.unpack(">H", pkt[12:14])[0] != 0x0800 or ip[9] != 17:
                r.other += 1
                continue
            ihl = (ip[0] & 0xF) * 4
            payload = ip[ihl + 8:]
            if not payload.startswith(MARK_IN):
                r.other += 1
                continue
            t, g, i = struct.unpack("!BHH", payload[len(MARK_IN):len(MARK_IN) + 5])
            r.decrypted += 1
            if (t, g, i) in seen:
                r.accepted_twice.append((ts, t, g, i))
            seen.add((t, g, i))
            r.accepted[(t, g)] = r.accepted.get((t, g), 0) + 1
    return r


