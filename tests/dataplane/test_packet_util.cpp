// Forwarding helpers of dataplane/packet_util.h: TTL decrement with the
// incremental checksum, ICMP errors (time exceeded, fragmentation needed),
// the TCP MSS clamp (vectors from scapy), the header checksum verdict of
// esp.h, port_owns() behind its address filter, and the martian verdict.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "dataplane/neighbor_info.h"
#include "dataplane/outbound.h"
#include "dataplane/packet_util.h"
#include "tests/dataplane/esp_test_util.h"

using namespace espgw::dataplane;
using namespace esptest;

namespace {

Bytes random_header(std::mt19937& rng, uint32_t ihl_words = 5) {
  Bytes h(ihl_words * 4);
  for (auto& b : h) b = static_cast<uint8_t>(rng());
  h[0] = static_cast<uint8_t>(0x40 | ihl_words);
  fix_ip_cksum(h.data());
  return h;
}

TEST(PacketUtil, TtlDecrementMatchesFullRecompute) {
  std::mt19937 rng(7);
  for (int i = 0; i < 200000; i++) {
    Bytes h = random_header(rng);
    if (h[8] <= 1) h[8] = static_cast<uint8_t>(2 + (i & 0x7f)), fix_ip_cksum(h.data());
    Bytes want = h;
    want[8]--;
    fix_ip_cksum(want.data());
    ipv4_decrement_ttl(reinterpret_cast<rte_ipv4_hdr*>(h.data()));
    ASSERT_EQ(h, want) << "iteration " << i;
    ASSERT_EQ(cksum(h.data(), 20), 0);
  }
  // Every TTL and every checksum high byte (the carry cases).
  for (int ttl = 2; ttl <= 255; ttl++)
    for (int hi = 0; hi <= 255; hi++) {
      Bytes h = random_header(rng);
      h[8] = static_cast<uint8_t>(ttl);
      h[4] = static_cast<uint8_t>(hi);  // moves the checksum around
      fix_ip_cksum(h.data());
      Bytes want = h;
      want[8]--;
      fix_ip_cksum(want.data());
      ipv4_decrement_ttl(reinterpret_cast<rte_ipv4_hdr*>(h.data()));
      ASSERT_EQ(h, want) << ttl << " " << hi;
    }
}

// ip_sum_ok (the receive-side verdict, a divisibility test) against RFC
// 1071's definition, computed independently (esp_test_util.h's cksum: a valid
// header sums to 0). Random headers with valid and corrupted checksums at
// every length, plus the sums the 64-bit end-around carry must get right.
TEST(PacketUtil, HeaderChecksumVerdictMatchesRfc1071) {
  using espgw::dataplane::detail::ip_sum_ok;
  std::mt19937 rng(11);
  uint32_t valid = 0, invalid = 0;
  for (uint32_t words = 5; words <= 15; words++)
    for (int i = 0; i < 20000; i++) {
      Bytes h = random_header(rng, words);
      if (i % 2) h[rng() % h.size()] ^= static_cast<uint8_t>(1u << (rng() % 8));
      if (i % 7 == 0) h[10] = h[11] = static_cast<uint8_t>(rng() & 1 ? 0x00 : 0xff);  // checksum field 0x0000 or 0xffff
      const bool want = cksum(h.data(), h.size()) == 0;
      ASSERT_EQ(ip_sum_ok(h.data(), uint32_t(h.size())), want) << words << " words, iteration " << i;
      (want ? valid : invalid)++;
    }
  EXPECT_GT(valid, 80000u);
  EXPECT_GT(invalid, 80000u);
  // Every word 0xffff (a "negative zero" sum, valid by RFC 1071), every word
  // 0 (not valid: no IPv4 header sums to +0), headers of 0xff bytes with one
  // word changed (the 64-bit adds carry out).
  for (uint32_t words = 5; words <= 15; words++) {
    Bytes ones(words * 4, 0xff), zeros(words * 4, 0);
    EXPECT_EQ(ip_sum_ok(ones.data(), words * 4), cksum(ones.data(), ones.size()) == 0);
    EXPECT_TRUE(ip_sum_ok(ones.data(), words * 4));
    EXPECT_FALSE(ip_sum_ok(zeros.data(), words * 4));
    for (uint32_t at = 0; at < words * 4; at += 2)
      for (uint32_t v : {0x0000u, 0x0001u, 0x8000u, 0xfffeu}) {
        Bytes h = ones;
        h[at] = uint8_t(v >> 8);
        h[at + 1] = uint8_t(v);
        ASSERT_EQ(ip_sum_ok(h.data(), words * 4), cksum(h.data(), h.size()) == 0) << words << " " << at << " " << v;
      }
  }
}

TEST(PacketUtil, CheckIpv4VerdictForEveryFirstByte) {
  // RFC 791: version 4; IHL at least 5 words and within the total length.
  // Any other version is unsupported (not a bad header), IHL < 5 is bad.
  for (uint32_t b0 = 0; b0 < 256; b0++) {
    const uint32_t ihl = (b0 & 0xf) * 4;
    Bytes h = make_inner(80);
    h[0] = static_cast<uint8_t>(b0);
    if (ihl >= 20) fix_ip_cksum(h.data());
    MbufPtr m = to_mbuf(h);
    const DropReason want = (b0 >> 4) != 4 ? DropReason::kUnsupported
                            : ihl < 20     ? DropReason::kBadHeader
                                           : DropReason::kCount;
    EXPECT_EQ(check_ipv4(m.get(), rte_pktmbuf_mtod(m.get(), rte_ipv4_hdr*), 80), want) << b0;
  }
  // Total length shorter than the header's own length.
  Bytes h = make_inner(80);
  h[0] = 0x4f;  // 60 bytes of header
  st16(&h[2], 56);
  fix_ip_cksum(h.data());
  MbufPtr m = to_mbuf(h);
  EXPECT_EQ(check_ipv4(m.get(), rte_pktmbuf_mtod(m.get(), rte_ipv4_hdr*), 80), DropReason::kBadHeader);
  st16(&h[2], 60);
  fix_ip_cksum(h.data());
  MbufPtr m2 = to_mbuf(h);
  EXPECT_EQ(check_ipv4(m2.get(), rte_pktmbuf_mtod(m2.get(), rte_ipv4_hdr*), 80), DropReason::kCount);
  EXPECT_EQ(rte_pktmbuf_data_len(m2.get()), 60);  // the rest trimmed as L2 padding
}

TEST(PacketUtil, MartianAddressesByRfc1812) {
  // RFC 1812 §4.3.2.7 / §5.3.7, RFC 5735: 0/8, 127/8, 224/4 (multicast)
  // and 240/4 (with 255.255.255.255) name no single host. Every pair of
  // first bytes, with host bits that must not matter.
  auto host = [](uint32_t top) { return !(top == 0 || top == 127 || (top >= 224 && top <= 255)); };
  int hosts = 0;
  for (uint32_t a = 0; a < 256; a++) {
    const uint32_t ia = a << 24 | 0x00a5c301u * (a & 1);
    ASSERT_EQ(ipv4_names_one_host(ia), host(a)) << a;
    hosts += host(a);
    for (uint32_t b = 0; b < 256; b++) {
      const uint32_t ib = b << 24 | 0x00ffffffu * (b & 1);
      ASSERT_EQ(ipv4_both_name_one_host(ia, ib), host(a) && host(b)) << a << " " << b;
    }
  }
  EXPECT_EQ(hosts, 256 - 1 - 1 - 32);
}

TEST(PacketUtil, PortOwnsExactlyItsAddresses) {
  // The filter in front of the address loop must never say "not ours" for
  // one of the port's addresses, nor let through one that is not: checked
  // for every address near the port's own and for a million others,
  // enough of which share a filter bit with an own address to take the
  // loop.
  Port port{};
  const uint32_t own[] = {0x0af08001, 0xc6336410, 0x0a000001, 0x0a000002, 0x64400001, 0xac100001, 0xc0a80101, 0x0b000001};
  for (uint32_t a : own) ASSERT_TRUE(port_add_addr(port, a));
  EXPECT_FALSE(port_add_addr(port, 0x01020304));  // kMaxPortAddrs
  EXPECT_EQ(port.nb_addrs, kMaxPortAddrs);
  auto is_own = [&](uint32_t a) { return std::find(std::begin(own), std::end(own), a) != std::end(own); };
  uint32_t through_filter = 0;
  auto check = [&](uint32_t a) {
    ASSERT_EQ(port_owns(port, a), is_own(a)) << std::hex << a;
    through_filter += !is_own(a) && ((port.addr_filter >> port_addr_bit(a)) & 1);
  };
  for (uint32_t a : own)
    for (uint32_t d = 0; d < 512; d++) check(a - 256 + d);
  uint64_t x = 88172645463325252ull;  // xorshift64
  for (int i = 0; i < 1000000; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    check(static_cast<uint32_t>(x));
  }
  EXPECT_GT(through_filter, 10000u);  // the loop was taken, and still said no
  Port empty{};
  EXPECT_FALSE(port_owns(empty, 0));
}

TEST(PacketUtil, IcmpTimeExceeded) {
  Port port{};
  ASSERT_TRUE(port_add_addr(port, 0x0af08001));  // 10.240.128.1
  for (int i = 0; i < 6; i++) port.mac.addr_bytes[i] = static_cast<uint8_t>(0x10 + i);
  Bytes frame(14);
  for (int i = 0; i < 6; i++) frame[6 + i] = static_cast<uint8_t>(0xa0 + i);  // sender MAC
  frame[12] = 0x08;
  Bytes inner = make_inner(100);
  inner[8] = 1;  // TTL 1
  fix_ip_cksum(inner.data());
  frame.insert(frame.end(), inner.begin(), inner.end());
  auto* eth = reinterpret_cast<const rte_ether_hdr*>(frame.data());
  auto* ip = reinterpret_cast<const rte_ipv4_hdr*>(frame.data() + 14);
  rte_mbuf* m = build_icmp_time_exceeded(pool(), eth, ip, port);
  ASSERT_NE(m, nullptr);
  Bytes out = from_mbuf(m);
  rte_pktmbuf_free(m);
  ASSERT_EQ(out.size(), 14u + 20 + 8 + 28);
  EXPECT_TRUE(std::equal(out.begin(), out.begin() + 6, frame.begin() + 6));  // back to the sender
  EXPECT_TRUE(std::equal(out.begin() + 6, out.begin() + 12, port.mac.addr_bytes));
  const uint8_t* o = out.data() + 14;
  EXPECT_EQ(o[9], IPPROTO_ICMP);
  EXPECT_EQ(cksum(o, 20), 0);
  EXPECT_EQ(ld32(o + 12), 0x0af08001u);
  EXPECT_TRUE(std::equal(o + 16, o + 20, inner.begin() + 12));  // to the original source
  const uint8_t* icmp = o + 20;
  EXPECT_EQ(icmp[0], 11);
  EXPECT_EQ(icmp[1], 0);
  EXPECT_EQ(ld32(icmp + 4), 0u);
  EXPECT_EQ(cksum(icmp, 8 + 28), 0);
  EXPECT_TRUE(std::equal(icmp + 8, icmp + 36, inner.begin()));  // header + 64 bits, as received
  // Frag-needed still carries the MTU.
  rte_mbuf* f = build_icmp_frag_needed(pool(), eth, ip, port, 1446);
  ASSERT_NE(f, nullptr);
  Bytes fo = from_mbuf(f);
  rte_pktmbuf_free(f);
  EXPECT_EQ(fo[14 + 20], 3);
  EXPECT_EQ(fo[14 + 21], 4);
  EXPECT_EQ(ld16(&fo[14 + 26]), 1446);
  EXPECT_EQ(cksum(&fo[14 + 20], 36), 0);
}

// scapy builds TCP SYNs with the MSS option behind every mix of 0..3 NOPs
// and other options (so the MSS value sits at even and odd offsets), and the
// same SYN with the MSS clamped and the checksum recomputed from scratch.
// Prints "input-hex expected-hex mss-value-offset-in-tcp" per vector, or NOSCAPY.
constexpr const char* kMssVectorScript = R"PY(
import random
try:
    from scapy.all import IP, TCP, Raw
except Exception:
    print("NOSCAPY"); raise SystemExit(0)
rng = random.Random(1624)
CLAMP = 1379
other = {"S": ("SAckOK", b""), "W": ("WScale", 7), "T": ("Timestamp", (123456, 0))}
prefixes = ["", "S", "W", "T", "SW", "WS", "TW", "WT", "ST", "SWT", "WWW"]
suffixes = ["", "S", "W", "T", "SW", "WS"]
for nops in range(4):
    for pre in prefixes:
        for suf in suffixes:
            opts = [other[c] for c in pre] + [("NOP", None)] * nops + [("MSS", 0)] + [other[c] for c in suf]
            for k in range(6):
                mss = [1380, 1460, 8960, 65535, 1379, 536][k] if k < 6 else 0
                if rng.random() < 0.5 and mss > CLAMP:
                    mss = rng.randint(CLAMP + 1, 65535)
                o = [(n, mss) if n == "MSS" else (n, v) for n, v in opts]
                p = IP(src="10.%d.%d.%d" % (rng.randint(0, 255), rng.randint(0, 255), rng.randint(1, 254)),
                       dst="172.31.%d.%d" % (rng.randint(0, 255), rng.randint(1, 254)), id=rng.randint(0, 65535)) / \
                    TCP(sport=rng.randint(1, 65535), dport=443, seq=rng.getrandbits(32), flags="S",
                        window=rng.randint(0, 65535), options=o) / Raw(bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 9))))
                inp = bytes(p)
                q = IP(inp)
                q[TCP].options = [(n, min(v, CLAMP)) if n == "MSS" else (n, v) for n, v in q[TCP].options]
                del q[TCP].chksum
                exp = bytes(q)
                assert len(exp) == len(inp)
                size = {"NOP": 1, "SAckOK": 2, "WScale": 3, "Timestamp": 10}
                before = [n for n, _ in opts[:opts.index(("MSS", 0))]]
                print(inp.hex(), exp.hex(), 20 + sum(size[n] for n in before) + 2)
)PY";

Bytes unhex(const std::string& s) {
  Bytes b(s.size() / 2);
  for (size_t i = 0; i < b.size(); i++) b[i] = static_cast<uint8_t>(std::stoi(s.substr(2 * i, 2), nullptr, 16));
  return b;
}

TEST(PacketUtil, MssClampMatchesScapyAtEveryOptionAlignment) {
  char path[] = "/tmp/espgw-mss-vectors-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  std::string script = kMssVectorScript;
  ASSERT_EQ(write(fd, script.data(), script.size()), static_cast<ssize_t>(script.size()));
  close(fd);
  FILE* f = popen(("/usr/bin/python3 " + std::string(path) + " 2>&1").c_str(), "r");
  ASSERT_NE(f, nullptr);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), f)) > 0) out.append(buf, n);
  int rc = pclose(f);
  unlink(path);
  if (out.rfind("NOSCAPY", 0) == 0) GTEST_SKIP() << "scapy not installed for /usr/bin/python3";
  ASSERT_EQ(rc, 0) << out;
  std::istringstream lines(out);
  std::string in_hex, exp_hex;
  size_t mss_at = 0;
  int vectors = 0, clamped_odd = 0, clamped_even = 0;
  while (lines >> in_hex >> exp_hex >> mss_at) {
    Bytes in = unhex(in_hex), want = unhex(exp_hex);
    MbufPtr m = to_mbuf(in);
    ASSERT_NE(m, nullptr);
    auto* ip = rte_pktmbuf_mtod(m.get(), rte_ipv4_hdr*);
    bool changed = clamp_tcp_mss(ip, static_cast<uint32_t>(in.size()), 1379);
    Bytes got = from_mbuf(m.get());
    ASSERT_EQ(got, want) << "vector " << vectors << ", MSS value at TCP offset " << mss_at << ": " << in_hex;
    ASSERT_EQ(changed, in != want) << in_hex;
    if (changed) (mss_at & 1 ? clamped_odd : clamped_even)++;
    vectors++;
  }
  EXPECT_GT(vectors, 1000);
  EXPECT_GT(clamped_odd, 100);   // the case the RFC 1624 update got wrong
  EXPECT_GT(clamped_even, 100);
}

TEST(PacketUtil, DropReasonNames) {
  EXPECT_STREQ(drop_reason_name(DropReason::kTtlExceeded), "ttl_exceeded");
  EXPECT_STREQ(drop_reason_name(DropReason::kUnsupported), "unsupported");
}

// Found by fuzz_inbound's balance check: a packet still in an ARP hold
// queue when the workers stop was counted in drop[no_neighbor] but not in
// generated_dropped, so drop[] summed no longer equalled the ports' drops
// plus generated_dropped plus tx_dropped (dataplane/counters.h).
TEST(PacketUtil, DropAllHeldCountsAGeneratedDrop) {
  auto d = std::make_unique<Dataplane>();
  auto c = std::make_unique<WorkerCounters>();
  d->counters[0] = c.get();
  d->nb_workers = 1;
  d->nb_ports = 2;
  rte_mbuf* m = rte_pktmbuf_alloc(pool());
  ASSERT_NE(m, nullptr);
  const unsigned in_use = rte_mempool_in_use_count(pool());
  d->neighbors[1].slots[17].held[2].store(m);
  drop_all_held(*d);
  EXPECT_EQ(d->neighbors[1].slots[17].held[2].load(), nullptr);
  EXPECT_EQ(rte_mempool_in_use_count(pool()), in_use - 1);
  EXPECT_EQ(c->drop[static_cast<int>(DropReason::kNoNeighbor)], 1u);
  EXPECT_EQ(c->generated_dropped, 1u);
}

// Found by fuzz_host_path: an ARP request whose hardware/protocol address
// lengths were not 6/4 was answered (by proxy on the exception port, and for
// our addresses on the others) with a reply that kept those lengths (a
// malformed ARP packet), and its sender was learned. RFC 826 / Linux's
// arp_process: such a packet is ignored.
TEST(PacketUtil, ArpWithOtherAddressLengthsIsIgnored) {
  Port port{};
  ASSERT_TRUE(port_add_addr(port, 0x0a000001));  // 10.0.0.1
  for (uint8_t i = 0; i < 6; i++) port.mac.addr_bytes[i] = uint8_t(0x02 * (i == 0) + (i == 5));
  auto request = [](uint8_t hlen, uint8_t plen) {
    Bytes f(42, 0);
    std::memset(f.data(), 0xff, 6);                              // broadcast
    const uint8_t sha[6] = {0x02, 0, 0, 0, 0, 0x10};
    std::memcpy(&f[6], sha, 6);
    st16(&f[12], 0x0806);
    st16(&f[14], 1);       // Ethernet
    st16(&f[16], 0x0800);  // IPv4
    f[18] = hlen;
    f[19] = plen;
    st16(&f[20], 1);  // request
    std::memcpy(&f[22], sha, 6);
    st32(&f[28], 0x0a00000a);  // 10.0.0.10
    st32(&f[38], 0x0a000001);  // 10.0.0.1 (ours)
    return f;
  };
  for (auto [hlen, plen, want] : {std::tuple{6, 4, true}, {12, 4, false}, {6, 16, false}, {0, 0, false}}) {
    SCOPED_TRACE(testing::Message() << "hlen " << hlen << " plen " << plen);
    MbufPtr m = to_mbuf(request(uint8_t(hlen), uint8_t(plen)));
    ASSERT_TRUE(m);
    uint32_t ip = 0;
    rte_ether_addr mac;
    EXPECT_EQ(arp_sender(m.get(), &ip, &mac), want);
    EXPECT_EQ(arp_make_reply(m.get(), port), want);
    MbufPtr m2 = to_mbuf(request(uint8_t(hlen), uint8_t(plen)));
    EXPECT_EQ(arp_make_reply(m2.get(), port, /*proxy_any=*/true), want);
    if (want) {  // the reply, read back independently
      const uint8_t* r = rte_pktmbuf_mtod(m.get(), const uint8_t*);
      EXPECT_EQ(ld16(r + 20), 2);
      EXPECT_EQ(r[18], 6);
      EXPECT_EQ(r[19], 4);
      EXPECT_EQ(ld32(r + 28), 0x0a000001u);
      EXPECT_EQ(ld32(r + 38), 0x0a00000au);
    }
  }
}

}  // namespace

// The outbound burst's tunnel -> group map (outbound.h): tunnels whose ids
// share low bits (0, 64, 128, ...) probe past each other, a repeated tunnel
// finds its group, and a full burst of distinct tunnels fits.
TEST(OutGroups, CollidingTunnelIdsKeepTheirOwnGroups) {
  using espgw::dataplane::OutGroups;
  using espgw::dataplane::OutboundSa;
  std::mt19937 g(9);
  for (int round = 0; round < 200; round++) {
    OutGroups groups;
    groups.clear();
    std::vector<uint16_t> ids;
    // A full burst's worth of distinct tunnels, most of them colliding.
    for (uint16_t t = 0; ids.size() < espgw::dataplane::kBurst; t++) {
      uint16_t id = uint16_t((round % 3 == 0 ? t * 64 : g() % 300) + round % 5);
      if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
    }
    std::vector<int> grp_of(65536, -1);
    for (int i = 0; i < 4 * espgw::dataplane::kBurst; i++) {  // each tunnel seen several times, shuffled
      uint16_t id = ids[g() % ids.size()];
      auto* sa = reinterpret_cast<OutboundSa*>(uintptr_t{id} * 64 + 64);
      uint32_t where;
      uint8_t gi = groups.find(id, &where);
      if (grp_of[id] < 0) {
        ASSERT_EQ(gi, OutGroups::kEmpty) << "tunnel " << id << " found before it was added";
        gi = groups.add(where, id, sa);
        grp_of[id] = gi;
      }
      ASSERT_EQ(gi, grp_of[id]) << "tunnel " << id;
      ASSERT_EQ(groups.tunnel[gi], id);
      ASSERT_EQ(groups.sa[gi], sa);
    }
    EXPECT_LE(groups.n, espgw::dataplane::kBurst);
  }
}
