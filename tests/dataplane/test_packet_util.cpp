// Forwarding helpers of dataplane/packet_util.h: TTL decrement with the
// incremental checksum, ICMP errors (time exceeded, fragmentation needed),
// and the outer-header checksum fast path of esp.h.
#include <gtest/gtest.h>

#include <random>

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

TEST(PacketUtil, OuterChecksumFastPathAndOptions) {
  std::mt19937 rng(9);
  for (uint32_t words = 5; words <= 15; words++)
    for (int i = 0; i < 2000; i++) {
      Bytes h = random_header(rng, words);
      ASSERT_EQ(espgw::dataplane::detail::ip_sum(h.data(), words * 4), 0xffff);
      h[rng() % h.size()] ^= static_cast<uint8_t>(1 + rng() % 255);
      ASSERT_NE(espgw::dataplane::detail::ip_sum(h.data(), words * 4), 0xffff);
    }
}

TEST(PacketUtil, IcmpTimeExceeded) {
  Port port{};
  port.nb_addrs = 1;
  port.addrs[0] = 0x0af08001;  // 10.240.128.1
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

TEST(PacketUtil, DropReasonNames) {
  EXPECT_STREQ(drop_reason_name(DropReason::kTtlExceeded), "ttl_exceeded");
  EXPECT_STREQ(drop_reason_name(DropReason::kUnsupported), "unsupported");
}

}  // namespace
