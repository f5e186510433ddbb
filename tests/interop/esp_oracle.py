"""ESP tunnel-mode packets (RFC 4303 + RFC 4106 AES-GCM, optional RFC 3948
UDP encapsulation) built with OpenSSL's AES-GCM (python `cryptography`),
fast enough for tens of thousands of packets, and with the knobs scapy's
SecurityAssociation lacks: TFC padding after the inner packet (RFC 4303
§2.4), any next header (59 = dummy packet, §2.6), the outer TOS byte (ECN).

It is independent of espgw's code; tests cross-check it against scapy's
ESP decryption (test_esp_oracle_matches_scapy)."""

import socket
import struct

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def ip_checksum(hdr: bytes) -> int:
    s = sum(struct.unpack(f"!{len(hdr) // 2}H", hdr))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4_header(src, dst, proto, payload_len, tos=0, ttl=64, ident=0, frag=0):
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, tos, 20 + payload_len, ident, frag, ttl, proto, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    return hdr[:10] + struct.pack("!H", ip_checksum(hdr)) + hdr[12:]


class EspSender:
    """The peer's side of one inbound SA: key material = key || 4-byte salt."""

    def __init__(self, keymat: bytes, spi: int, src: str, dst: str, udp_ports=None, esn=False):
        self.aead = AESGCM(keymat[:-4])
        self.salt = keymat[-4:]
        self.spi, self.src, self.dst, self.udp_ports, self.esn = spi, src, dst, udp_ports, esn

    def esp_payload(self, seq: int, inner: bytes, tfc: bytes = b"", next_header: int = 4) -> bytes:
        plain = inner + tfc
        pad = (4 - (len(plain) + 2) % 4) % 4
        plain += bytes(range(1, pad + 1)) + bytes([pad, next_header])
        iv = struct.pack("!Q", seq)
        if self.esn:
            aad = struct.pack("!III", self.spi, seq >> 32, seq & 0xFFFFFFFF)
        else:
            aad = struct.pack("!II", self.spi, seq & 0xFFFFFFFF)
        ct = self.aead.encrypt(self.salt + iv, plain, aad)  # ciphertext || 16-byte ICV
        return struct.pack("!II", self.spi, seq & 0xFFFFFFFF) + iv + ct

    def packet(self, seq: int, inner: bytes, tfc: bytes = b"", next_header: int = 4, tos: int = 0,
               ident: int = 0, df: bool = False) -> bytes:
        """The outer IPv4 packet (no Ethernet)."""
        esp = self.esp_payload(seq, inner, tfc, next_header)
        frag = 0x4000 if df else 0
        if self.udp_ports:
            sport, dport = self.udp_ports
            udp = struct.pack("!HHHH", sport, dport, 8 + len(esp), 0) + esp
            return ipv4_header(self.src, self.dst, 17, len(udp), tos=tos, ident=ident, frag=frag) + udp
        return ipv4_header(self.src, self.dst, 50, len(esp), tos=tos, ident=ident, frag=frag) + esp


def inner_udp(src: str, dst: str, payload: bytes, ident: int = 0, tos: int = 0, sport=40000, dport=9) -> bytes:
    """A plain inner IPv4/UDP packet (UDP checksum 0)."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    return ipv4_header(src, dst, 17, len(udp), tos=tos, ident=ident) + udp


def ether(dst_mac: str, src_mac: str, ip_packet: bytes, ethertype=0x0800) -> bytes:
    mac = lambda m: bytes(int(x, 16) for x in m.split(":"))
    return mac(dst_mac) + mac(src_mac) + struct.pack("!H", ethertype) + ip_packet
