"""NAT-T (RFC 3948) on a local port other than 4500, end to end: scapy
encrypts ESP-in-UDP to port 4501 and espgw decrypts it; espgw's outbound
ESP-in-UDP leaves from 4501 and scapy decrypts it. IKE (port 500, or the
non-ESP marker on 4501) and UDP on 4501 that is no SA's go to the host."""

import pytest
from scapy.all import IP, UDP, Ether, Raw
from scapy.layers.ipsec import ESP, SecurityAssociation

import gateway_harness as h

pytestmark = pytest.mark.skipif(not h.ESPGW.exists(), reason=f"espgw not built at {h.ESPGW}")

ROUTES = [{"prefix": "172.31.0.0/16", "via": [{"tunnel": "aws-a1", "priority": 10}]}]
LOCAL, REMOTE = h.TUNNELS["aws-a1"]


def scapy_sa(sa, src, dst, sport, dport):
    return SecurityAssociation(ESP, spi=sa.spi, crypt_algo="AES-GCM", crypt_key=sa.key, auth_algo="NULL",
                               tunnel_header=IP(src=src, dst=dst), nat_t_header=UDP(sport=sport, dport=dport))


def encrypt_to(sa, inner, seq, dport):
    pkt = scapy_sa(sa, REMOTE, LOCAL, 4500, dport).encrypt(inner, seq_num=seq)
    pkt[UDP].len = None  # scapy 2.5 leaves UDP.len = 8
    pkt[UDP].chksum = 0
    return IP(bytes(pkt))


def test_nat_t_on_local_port_4501(tmp_path):
    sa_out, sa_in = h.Sa("out", 0x1001, "aws-a1", udp=True), h.Sa("in", 0x2001, "aws-a1", udp=True)
    inner = [IP(bytes(IP(src="172.31.1.1", dst="10.240.128.20", id=i) / UDP(sport=5, dport=7) / Raw(b"n" * (i + 1))))
             for i in range(30)]
    esp_4501 = [h.wan_frame(encrypt_to(sa_in, p, seq, 4501)) for seq, p in enumerate(inner, 1)]
    # The SA's packets on 4500: not where this SA lives (it is on 4501).
    esp_4500 = h.wan_frame(encrypt_to(sa_in, inner[0], 100, 4500))
    ike_marker = h.wan_frame(IP(src=REMOTE, dst=LOCAL) / UDP(sport=4500, dport=4501) / Raw(b"\0\0\0\0" + b"i" * 60))
    ike_500 = h.wan_frame(IP(src=REMOTE, dst=LOCAL) / UDP(sport=500, dport=500) / Raw(b"\x11" * 80))
    # UDP to 4501 whose first word is no SA's SPI: somebody else's datagram.
    other_udp = h.wan_frame(IP(src=REMOTE, dst=LOCAL) / UDP(sport=4500, dport=4501) / Raw(b"\x99\x99\x99\x99" + b"o" * 60))
    other_short = h.wan_frame(IP(src=REMOTE, dst=LOCAL) / UDP(sport=53, dport=4501) / Raw(b"abc"))
    to_host = [ike_marker, ike_500, other_udp, other_short]
    plain = IP(bytes(IP(src="10.240.128.5", dst="172.31.9.9", id=77) / UDP(sport=1111, dport=2222) / Raw(b"z" * 99)))
    wan_in = esp_4501[:15] + to_host + esp_4501[15:] + [esp_4500]
    gw = h.Gateway(tmp_path, [sa_out, sa_in], routes=ROUTES, wan_in=wan_in, lan_in=[h.lan_frame(plain)],
                   tunnels_extra={"aws-a1": {"udp_src_port": 4501, "udp_dst_port": 4500}}, host_in=[])
    with gw:
        st = gw.wait_rx(wan=len(wan_in), lan=1)
    assert gw.proc.returncode == 0, gw.output
    out = gw.sent("lan")
    assert [bytes(f[IP])[20:] for f in out] == [bytes(p)[20:] for p in inner]  # payload as sent (TTL aside)
    host = gw.sent("host")
    assert sorted(bytes(f[IP]) for f in host) == sorted(bytes(f[IP]) for f in to_host)
    assert st["drops"]["unknown_spi"] == 1  # the 4500 copy
    assert st["drops_total"] == 1, st["drops"]
    wan = gw.sent("wan")
    assert len(wan) == 1
    u = wan[0][UDP]
    assert (u.sport, u.dport, u.chksum) == (4501, 4500, 0)
    dec = scapy_sa(sa_out, LOCAL, REMOTE, 4501, 4500).decrypt(wan[0][IP])
    assert bytes(dec[Raw].load) == b"z" * 99
    tun = {t["name"]: t for t in st["tunnels"]}
    assert tun["aws-a1"]["in"]["packets"] == len(inner)
    in_use, at_start = gw.mbufs()
    assert in_use == at_start
