"""Checks what the soak's ports sent, frame by frame, with OpenSSL's AES-GCM
(python `cryptography`), independent of espgw's code.

WAN output: every ESP frame decrypts (ICV verified) under the key of the
outbound SA its SPI names, it left while that SA was installed, its inner
packet goes to a routed prefix, and no (SPI, sequence number) pair appears
twice. "While installed" is checked on no clock at all: one worker writes
the WAN capture in transmission order, so a frame's index in the file is
the WAN port's TX packet counter when it left; the soak reads that counter
before each add-sa and after each delete-sa reply (the reply comes after an
RCU grace period: no worker can still send under the SA), which bounds the
indices each SA's frames may have. LAN output: every decrypted packet is one of the
peer's (tunnel, generation, index) packets, and none was accepted twice."""

import struct
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from traffic import MARK_IN

@dataclass
class OutboundSaLog:
    spi: int
    keymat: bytes
    first_index: int               # WAN TX packets counted before the add-sa request
    last_index: float = float("inf")  # WAN TX packets counted after the delete-sa reply


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


def check_wan(paths, sa_log: dict):
    """Every frame the WAN port sent. sa_log: SPI -> OutboundSaLog."""
    r = WanReport()
    assert len(paths) == 1, "the index check needs one worker (one TX queue, one capture file)"
    aead = {}
    seen = {}
    for path in paths:
        for index, (ts, pkt) in enumerate(pcap_records_ts(path)):
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
            if not (sa.first_index <= index < sa.last_index):
                r.outside_lifetime.append((index, hex(spi), seq, sa.first_index, sa.last_index))
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


