// The one SA validator: every refusal with its reason, and the valid forms.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "control/sa_spec.h"

namespace espgw::control {
namespace {

std::vector<TunnelDefaults> tunnels() {
  return {{"plain", 0xc633640a, 0xcb007101, false, 4500, 4500}, {"natt", 0xc633640a, 0xcb007102, true, 4500, 4501}};
}

crypto::SecretBytes key(size_t n, uint8_t fill = 0x11) {
  crypto::SecretBytes k;
  for (size_t i = 0; i < n; i++) k.push_back(fill);
  return k;
}

SaSpec outbound() {
  SaSpec s;
  s.direction = SaDirection::kOutbound;
  s.spi = 0x1001;
  s.tunnel = "plain";
  s.keymat = key(20);
  return s;
}

SaSpec inbound() {
  SaSpec s = outbound();
  s.direction = SaDirection::kInbound;
  s.spi = 0x2001;
  return s;
}

struct Bad {
  const char* name;
  std::function<SaSpec()> make;
  const char* reason;  // a part of the SaError message
};

class SaSpecRefused : public ::testing::TestWithParam<Bad> {};

TEST_P(SaSpecRefused, WithAPreciseReason) {
  const Bad& b = GetParam();
  auto t = tunnels();
  try {
    validate_sa_spec(b.make(), t);
    FAIL() << b.name << ": accepted";
  } catch (const SaError& e) {
    EXPECT_NE(std::string(e.what()).find(b.reason), std::string::npos) << "message: " << e.what();
    EXPECT_EQ(std::string(e.what()).find("1111"), std::string::npos) << "key bytes in: " << e.what();
  }
}

const Bad kBad[] = {
    {"SeqAbove32BitsWithoutEsn", [] { auto s = outbound(); s.initial_seq = uint64_t{1} << 32; return s; },
     "does not fit in 32 bits"},
    {"SeqZero", [] { auto s = outbound(); s.initial_seq = 0; return s; }, "start at 1"},
    {"SeqOnInbound", [] { auto s = inbound(); s.initial_seq = 5; return s; }, "outbound SAs only"},
    {"ReplayWindowOnOutbound", [] { auto s = outbound(); s.replay_window = 64; return s; }, "inbound SAs only"},
    {"ReplayWindow16", [] { auto s = inbound(); s.replay_window = 16; return s; }, "neither 0 (off) nor in 32..4096"},
    {"ReplayWindow31", [] { auto s = inbound(); s.replay_window = 31; return s; }, "neither 0"},
    {"ReplayWindow4097", [] { auto s = inbound(); s.replay_window = 4097; return s; }, "neither 0"},
    {"SelectorsOnOutbound",
     [] {
       auto s = outbound();
       s.local_selectors = {{0x0a000000, 8}};
       s.remote_selectors = {{0xac1f0000, 16}};
       return s;
     },
     "inbound SAs only"},
    {"OnlyLocalSelectors", [] { auto s = inbound(); s.local_selectors = {{0x0a000000, 8}}; return s; },
     "needs both local_selectors and remote_selectors"},
    {"OnlyRemoteSelectors", [] { auto s = inbound(); s.remote_selectors = {{0x0a000000, 8}}; return s; },
     "needs both"},
    {"TooManySelectors",
     [] {
       auto s = inbound();
       for (uint32_t i = 0; i < 5; i++) s.local_selectors.push_back({0x0a000000 + (i << 8), 24});
       s.remote_selectors = {{0xac1f0000, 16}};
       return s;
     },
     "at most 4 per side"},
    {"SelectorHostBits",
     [] {
       auto s = inbound();
       s.local_selectors = {{0x0a000001, 8}};
       s.remote_selectors = {{0xac1f0000, 16}};
       return s;
     },
     "host bits set"},
    {"EncapLocalPortZero", [] { auto s = outbound(); s.tunnel = "natt"; s.encap = UdpEncap{0, 4500}; return s; },
     "UDP ports must be 1..65535"},
    {"EncapRemotePortZero", [] { auto s = inbound(); s.tunnel = "natt"; s.encap = UdpEncap{4500, 0}; return s; },
     "UDP ports must be 1..65535"},
    // The data plane never takes UDP to port 500 for ESP: the SA would never match.
    {"InboundOnIkePort", [] { auto s = inbound(); s.tunnel = "natt"; s.encap = UdpEncap{500, 4500}; return s; },
     "cannot receive on UDP port 500"},
    {"SoftBytesAboveHard", [] { auto s = outbound(); s.soft.bytes = 100; s.hard.bytes = 99; return s; },
     "soft bytes limit 100 is larger than the hard limit 99"},
    {"SoftPacketsAboveHard", [] { auto s = outbound(); s.soft.packets = 10; s.hard.packets = 9; return s; },
     "soft packets limit"},
    {"SoftSecondsAboveHard", [] { auto s = inbound(); s.soft.seconds = 3600; s.hard.seconds = 60; return s; },
     "soft seconds limit"},
    {"AllZeroKeymat", [] { auto s = outbound(); s.keymat = key(20, 0); return s; }, "all zeros"},
    {"AllZeroKeyPart",
     [] {
       auto s = outbound();
       s.keymat = key(16, 0);
       for (int i = 0; i < 4; i++) s.keymat.push_back(0xab);  // salt not zero: the AES key still is
       return s;
     },
     "all zeros"},
    {"Aes128WithAes256Key", [] { auto s = outbound(); s.keymat = key(36); return s; }, "aes128-gcm needs 20 bytes"},
    {"Aes256WithAes128Key", [] { auto s = outbound(); s.algo = SaAlgo::kAes256Gcm; return s; },
     "aes256-gcm needs 36 bytes"},
    {"KeyWithoutSalt", [] { auto s = outbound(); s.keymat = key(16); return s; }, "got 16 bytes"},
    {"Spi0", [] { auto s = outbound(); s.spi = 0; return s; }, "0 is reserved"},
    {"Spi1", [] { auto s = outbound(); s.spi = 1; return s; }, "reserved by IANA"},
    {"Spi255", [] { auto s = inbound(); s.spi = 255; return s; }, "reserved by IANA"},
    {"UnknownTunnel", [] { auto s = outbound(); s.tunnel = "nope"; return s; }, "unknown tunnel 'nope'"},
    {"EncapOnPlainTunnel", [] { auto s = outbound(); s.encap = UdpEncap{4500, 4500}; return s; },
     "tunnel 'plain' runs plain ESP"},
    {"PlainOnNattTunnel", [] { auto s = inbound(); s.tunnel = "natt"; s.plain_esp = true; return s; },
     "tunnel 'natt' runs ESP-in-UDP"},
    {"EncapAndPlain",
     [] {
       auto s = outbound();
       s.tunnel = "natt";
       s.encap = UdpEncap{4500, 4500};
       s.plain_esp = true;
       return s;
     },
     "both UDP encapsulation and plain ESP"},
};

INSTANTIATE_TEST_SUITE_P(Table, SaSpecRefused, ::testing::ValuesIn(kBad),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(SaSpecAccepted, DefaultsAndTunnelAddresses) {
  auto t = tunnels();
  SaParams o = validate_sa_spec(outbound(), t);
  EXPECT_EQ(o.tunnel, 0);
  EXPECT_EQ(o.initial_seq, 1u);
  EXPECT_FALSE(o.encap);
  EXPECT_EQ(o.local_addr, 0xc633640au);
  EXPECT_EQ(o.remote_addr, 0xcb007101u);
  EXPECT_EQ(o.origin, SaOrigin::kSocket);
  EXPECT_TRUE(o.keymat == key(20));
  SaParams i = validate_sa_spec(inbound(), t);
  EXPECT_EQ(i.replay_window, 1024u);
}

TEST(SaSpecAccepted, BoundaryValues) {
  auto t = tunnels();
  for (uint32_t w : {0u, 32u, 1024u, 4096u}) {
    SaSpec s = inbound();
    s.replay_window = w;
    EXPECT_EQ(validate_sa_spec(s, t).replay_window, w);
  }
  SaSpec s = outbound();
  s.initial_seq = 0xffffffffu;
  EXPECT_EQ(validate_sa_spec(s, t).initial_seq, 0xffffffffu);
  s.esn = true;
  s.initial_seq = uint64_t{1} << 40;  // above 2^32 with ESN
  EXPECT_EQ(validate_sa_spec(s, t).initial_seq, uint64_t{1} << 40);
  s = outbound();
  s.spi = 256;
  EXPECT_NO_THROW(validate_sa_spec(s, t));
  s.algo = SaAlgo::kAes256Gcm;
  s.keymat = key(36);
  EXPECT_NO_THROW(validate_sa_spec(s, t));
  s = outbound();
  s.soft = {100, 10, 60};
  s.hard = {100, 0, 120};  // equal limits, and a soft limit with no hard one
  EXPECT_NO_THROW(validate_sa_spec(s, t));
  s = inbound();
  s.local_selectors = {{0x0a000000, 24}, {0x0a000100, 24}, {0x0a000200, 24}, {0x0a000300, 24}};
  s.remote_selectors = {{0, 0}};
  EXPECT_EQ(validate_sa_spec(s, t).local_selectors.size(), 4u);
  s = outbound();
  s.keymat = key(16, 0x01);
  for (int k = 0; k < 4; k++) s.keymat.push_back(0);  // an all-zero salt is allowed
  EXPECT_NO_THROW(validate_sa_spec(s, t));
}

TEST(SaSpecAccepted, AnSaWithoutEncapTakesItsTunnelsSetting) {
  auto t = tunnels();
  SaSpec s = outbound();
  s.tunnel = "natt";
  SaParams o = validate_sa_spec(s, t);
  ASSERT_TRUE(o.encap);
  EXPECT_EQ(o.encap->local, 4500);   // tunnels[].udp_src_port
  EXPECT_EQ(o.encap->remote, 4501);  // tunnels[].udp_dst_port
  s.encap = UdpEncap{4500, 31337};   // a NAT-mapped peer port: agrees with the tunnel
  EXPECT_EQ(validate_sa_spec(s, t).encap->remote, 31337);
  s = outbound();
  s.plain_esp = true;
  EXPECT_FALSE(validate_sa_spec(s, t).encap);
}

TEST(SaSpecAccepted, OriginAndConfigEntry) {
  SaConfig c;
  c.direction = SaDirection::kInbound;
  c.spi = 0x2001;
  c.tunnel = "natt";
  c.algo = SaAlgo::kAes128Gcm;
  c.keymat = key(20);
  c.replay_window = 64;
  auto t = tunnels();
  SaParams p = validate_sa_spec(sa_spec_from_config(c), t);
  EXPECT_EQ(p.origin, SaOrigin::kConfig);
  EXPECT_EQ(p.replay_window, 64u);
  EXPECT_TRUE(p.encap);
  c.replay_window = 16;  // what --check used to accept
  EXPECT_THROW(validate_sa_spec(sa_spec_from_config(c), t), SaError);
}

TEST(SaUpdateValidation, RefusesAndAccepts) {
  auto t = tunnels();
  SaUpdate u;
  u.spi = 0x1001;
  u.tunnel = "natt";
  EXPECT_THROW(validate_sa_update(u, t), SaError);  // nothing to change
  u.encap = UdpEncap{4500, 0};
  EXPECT_THROW(validate_sa_update(u, t), SaError);
  u.encap = UdpEncap{4500, 1234};
  EXPECT_NO_THROW(validate_sa_update(u, t));
  // A NAT rebinding onto our port 500 (IKE's): an inbound SA there never matches.
  u.encap = UdpEncap{500, 1234};
  EXPECT_NO_THROW(validate_sa_update(u, t));  // outbound: our source port, allowed
  u.direction = SaDirection::kInbound;
  EXPECT_THROW(validate_sa_update(u, t), SaError);
  u.direction = SaDirection::kOutbound;
  u.encap = UdpEncap{4500, 1234};
  u.tunnel = "plain";
  EXPECT_THROW(validate_sa_update(u, t), SaError);  // encap on a plain-ESP tunnel
  u.encap.reset();
  u.remote_addr = 0xe0000001;  // multicast
  EXPECT_THROW(validate_sa_update(u, t), SaError);
  u.remote_addr = 0xcb007163;
  EXPECT_NO_THROW(validate_sa_update(u, t));
  u.soft = SaLifetime{0, 0, 100};
  u.hard = SaLifetime{0, 0, 50};
  EXPECT_THROW(validate_sa_update(u, t), SaError);
  u.spi = 12;
  u.soft.reset();
  EXPECT_THROW(validate_sa_update(u, t), SaError);
  u.spi = 0x1001;
  u.tunnel = "gone";
  EXPECT_THROW(validate_sa_update(u, t), SaError);
}

TEST(ParseSpiString, AcceptsOnlyHexWithPrefix) {
  EXPECT_EQ(parse_spi_string("0x1001"), 0x1001u);
  EXPECT_EQ(parse_spi_string("0X1"), 1u);
  EXPECT_EQ(parse_spi_string("0xffffffff"), 0xffffffffu);
  EXPECT_EQ(parse_spi_string("0xDeadBeef"), 0xdeadbeefu);
  EXPECT_EQ(parse_spi_string("0x00000100"), 0x100u);
  for (const char* bad : {"", "0x", "0x123456789", "4097", "010", "0o17", "-0x1", "+0x1", " 0x1", "0x1 ", "0x-1",
                          "0x1g", "x1", "0 x1", "1e3", "0x+1"})
    EXPECT_FALSE(parse_spi_string(bad)) << "'" << bad << "'";
}

}  // namespace
}  // namespace espgw::control

namespace espgw::control {
namespace {

// Naming a tunnel by the SA's outer addresses (src, dst as charon has them).
TEST(ResolveSaTunnel, ByAddressesInEitherDirection) {
  auto t = tunnels();
  EXPECT_EQ(resolve_sa_tunnel(SaDirection::kOutbound, "", 0xc633640a, 0xcb007102, t), 1u);
  EXPECT_EQ(resolve_sa_tunnel(SaDirection::kInbound, "", 0xcb007101, 0xc633640a, t), 0u);
  EXPECT_EQ(resolve_sa_tunnel(SaDirection::kInbound, "natt", std::nullopt, 0xc633640a, t), 1u);
  EXPECT_THROW(resolve_sa_tunnel(SaDirection::kInbound, "", 0xc633640a, 0xcb007102, t), SaError);
  EXPECT_THROW(resolve_sa_tunnel(SaDirection::kOutbound, "", 0xc633640a, std::nullopt, t), SaError);
  EXPECT_THROW(resolve_sa_tunnel(SaDirection::kOutbound, "plain", 0xc633640a, 0xcb007102, t), SaError);
}

TEST(ResolveSaTunnel, TwoTunnelsBetweenTheSameAddressesNeedTheName) {
  auto t = tunnels();
  t[1].remote = t[0].remote;
  try {
    resolve_sa_tunnel(SaDirection::kOutbound, "", 0xc633640a, 0xcb007101, t);
    FAIL() << "ambiguous addresses accepted";
  } catch (const SaError& e) {
    EXPECT_NE(std::string(e.what()).find("name the tunnel"), std::string::npos) << e.what();
  }
  EXPECT_EQ(resolve_sa_tunnel(SaDirection::kOutbound, "natt", 0xc633640a, 0xcb007101, t), 1u);
}

TEST(ResolveSaTunnel, ValidateUsesTheResolvedTunnelsSettings) {
  auto t = tunnels();
  SaSpec s = outbound();
  s.tunnel.clear();
  s.src = 0xc633640a;
  s.dst = 0xcb007102;
  SaParams p = validate_sa_spec(s, t);
  EXPECT_EQ(p.tunnel, 1);
  ASSERT_TRUE(p.encap.has_value());  // natt's UDP encapsulation and ports
  EXPECT_EQ(p.encap->remote, 4501);
}

}  // namespace
}  // namespace espgw::control
