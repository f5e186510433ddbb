// parse_message() on real XFRM messages (built from <linux/xfrm.h> with
// libmnl): what is mirrored, what is Unsupported, what is Malformed, and a
// fuzz-ish loop that must never crash (the 'sanitize' suite runs it under
// ASan/UBSan).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <random>
#include <set>

#include "control/xfrm.h"
#include "tests/xfrm/xfrm_builder.h"

namespace x = espgw::control::xfrm;
using namespace xfrm_test;

namespace {

// Parses from a heap copy of exactly `len` bytes, so ASan sees any read past it.
x::Event parse(const std::vector<uint8_t>& m, size_t len) {
  std::unique_ptr<uint8_t[]> copy(new uint8_t[std::max<size_t>(len, 1)]);
  if (len) std::memcpy(copy.get(), m.data(), len);
  return x::parse_message(copy.get(), len);
}
x::Event parse(const std::vector<uint8_t>& m) { return parse(m, m.size()); }

template <typename T>
T expect_kind(const x::Event& ev) {
  if (!std::holds_alternative<T>(ev)) {
    ADD_FAILURE() << "unexpected event: " << x::to_string(ev);
    return T{};
  }
  return std::get<T>(ev);
}

std::string unsupported(const std::vector<uint8_t>& m) {
  return expect_kind<x::Unsupported>(parse(m)).reason;
}
std::string malformed(const std::vector<uint8_t>& m) {
  return expect_kind<x::Malformed>(parse(m)).reason;
}

// Sets the nla_len of the attribute of `type` in a built message.
void patch_attr_len(std::vector<uint8_t>& m, size_t fixed_len, uint16_t type, uint16_t new_len) {
  size_t off = MNL_ALIGN(sizeof(nlmsghdr)) + MNL_ALIGN(fixed_len);
  while (off + sizeof(nlattr) <= m.size()) {
    nlattr a;
    std::memcpy(&a, m.data() + off, sizeof(a));
    if ((a.nla_type & NLA_TYPE_MASK) == type) {
      a.nla_len = new_len;
      std::memcpy(m.data() + off, &a, sizeof(a));
      return;
    }
    off += MNL_ALIGN(a.nla_len);
  }
  FAIL() << "attribute " << type << " not found";
}

// Offset of the payload of the attribute of `type`.
size_t attr_payload_off(const std::vector<uint8_t>& m, size_t fixed_len, uint16_t type) {
  size_t off = MNL_ALIGN(sizeof(nlmsghdr)) + MNL_ALIGN(fixed_len);
  while (off + sizeof(nlattr) <= m.size()) {
    nlattr a;
    std::memcpy(&a, m.data() + off, sizeof(a));
    if ((a.nla_type & NLA_TYPE_MASK) == type) return off + sizeof(nlattr);
    off += MNL_ALIGN(a.nla_len);
  }
  ADD_FAILURE() << "attribute " << type << " not found";
  return 0;
}

std::string fmt_hex(uint8_t b, bool upper) {
  char buf[3];
  std::snprintf(buf, sizeof(buf), upper ? "%02X" : "%02x", b);
  return buf;
}

}  // namespace

// ---------------------------------------------------------------------------
// Mirrored SAs

TEST(XfrmParse, NewSaAes128Gcm) {
  SaSpec s;
  const auto sa = expect_kind<x::SaInfo>(parse(build_sa(s)));
  EXPECT_EQ(sa.spi, 0xc0ffee01u);
  EXPECT_EQ(sa.saddr, ip("192.0.2.1"));
  EXPECT_EQ(sa.daddr, ip("198.51.100.7"));
  EXPECT_EQ(sa.reqid, 7u);
  ASSERT_EQ(sa.keymat.size(), 20u);
  EXPECT_EQ(sa.key_len(), 16u);
  EXPECT_TRUE(sa.keymat.equals(seq_bytes(20, 0xa0)));  // key then salt, in order
  EXPECT_EQ(std::vector<uint8_t>(sa.keymat.span().end() - 4, sa.keymat.span().end()), seq_bytes(4, 0xa0 + 16));
  EXPECT_EQ(sa.icv_bits, 128u);
  EXPECT_FALSE(sa.esn);
  EXPECT_EQ(sa.replay_window, 32u);
  EXPECT_EQ(sa.encap_sport, 0);
  EXPECT_EQ(sa.encap_dport, 0);
  EXPECT_EQ(sa.soft_bytes, 1000000u);
  EXPECT_EQ(sa.hard_bytes, 2000000u);
  EXPECT_EQ(sa.soft_packets, 0u);  // XFRM_INF -> none
  EXPECT_EQ(sa.hard_packets, 0u);
  EXPECT_EQ(sa.soft_add_seconds, 3000u);
  EXPECT_EQ(sa.hard_add_seconds, 3600u);
  EXPECT_FALSE(sa.update);
  EXPECT_EQ(sa.if_id, 0u);
  EXPECT_EQ(sa.key(), (x::SaKey{0xc0ffee01u, ip("198.51.100.7"), IPPROTO_ESP}));
}

TEST(XfrmParse, NewSaAes256Gcm) {
  SaSpec s;
  s.keymat = seq_bytes(36, 0x10);
  s.spi = 0x00000102;
  s.saddr = ip("203.0.113.9");
  s.daddr = ip("192.0.2.200");
  s.reqid = 0x12345678;
  s.replay_window = 0;
  s.soft_bytes = XFRM_INF;
  s.hard_bytes = XFRM_INF;
  s.soft_packets = 500;
  s.hard_packets = 1000;
  s.soft_add = XFRM_INF;
  s.hard_add = XFRM_INF;
  s.if_id = 42;
  const auto sa = expect_kind<x::SaInfo>(parse(build_sa(s)));
  EXPECT_EQ(sa.spi, 0x102u);
  EXPECT_EQ(sa.saddr, ip("203.0.113.9"));
  EXPECT_EQ(sa.daddr, ip("192.0.2.200"));
  EXPECT_EQ(sa.reqid, 0x12345678u);
  EXPECT_EQ(sa.key_len(), 32u);
  EXPECT_TRUE(sa.keymat.equals(seq_bytes(36, 0x10)));
  EXPECT_EQ(sa.replay_window, 0u);
  EXPECT_EQ(sa.soft_bytes, 0u);
  EXPECT_EQ(sa.hard_bytes, 0u);
  EXPECT_EQ(sa.soft_packets, 500u);
  EXPECT_EQ(sa.hard_packets, 1000u);
  EXPECT_EQ(sa.soft_add_seconds, 0u);
  EXPECT_EQ(sa.hard_add_seconds, 0u);
  EXPECT_EQ(sa.if_id, 42u);
}

TEST(XfrmParse, UdpEncapsulationPorts) {
  SaSpec s;
  s.encap_type = UDP_ENCAP_ESPINUDP;
  s.encap_sport = 4500;
  s.encap_dport = 31337;
  const auto sa = expect_kind<x::SaInfo>(parse(build_sa(s)));
  EXPECT_EQ(sa.encap_sport, 4500);
  EXPECT_EQ(sa.encap_dport, 31337);
}

TEST(XfrmParse, EsnWithReplayEsnAttribute) {
  SaSpec s;
  s.flags = XFRM_STATE_ESN;
  s.replay_window = 0;  // strongSwan puts the window in the ESN attribute
  s.with_esn_attr = true;
  s.esn_bmp_len = 4;
  s.esn_window = 100;
  const auto sa = expect_kind<x::SaInfo>(parse(build_sa(s)));
  EXPECT_TRUE(sa.esn);
  EXPECT_EQ(sa.replay_window, 100u);
}

TEST(XfrmParse, ReplayEsnWindowFallsBackToBitmapSize) {
  SaSpec s;
  s.flags = XFRM_STATE_ESN;
  s.with_esn_attr = true;
  s.esn_bmp_len = 2;
  s.esn_window = 0;
  const auto sa = expect_kind<x::SaInfo>(parse(build_sa(s)));
  EXPECT_EQ(sa.replay_window, 64u);  // bmp_len * 32
}

TEST(XfrmParse, LargeWindowWithoutEsn) {
  // strongSwan sends XFRMA_REPLAY_ESN_VAL for windows > 32 even without ESN.
  SaSpec s;
  s.with_esn_attr = true;
  s.esn_bmp_len = 32;
  s.esn_window = 1024;
  const auto sa = expect_kind<x::SaInfo>(parse(build_sa(s)));
  EXPECT_FALSE(sa.esn);
  EXPECT_EQ(sa.replay_window, 1024u);
}

TEST(XfrmParse, UpdSaIsAnUpdate) {
  SaSpec s;
  const auto sa = expect_kind<x::SaInfo>(parse(build_sa(s, XFRM_MSG_UPDSA)));
  EXPECT_TRUE(sa.update);
  EXPECT_EQ(sa.spi, s.spi);
}

TEST(XfrmParse, UnknownAttributesAreSkipped) {
  SaSpec s;
  MsgBuilder b(XFRM_MSG_NEWSA);
  fill_usersa_info(b.put_struct<xfrm_usersa_info>(), s);
  const auto a = alg_attr<xfrm_algo_aead>(s.aead_name, 160, s.keymat, 128);
  b.put_attr(XFRMA_ALG_AEAD, a.data(), a.size());
  mnl_attr_put_u32(b.nlh(), XFRMA_MAX + 5, 1);  // from a newer kernel
  const auto sa = expect_kind<x::SaInfo>(parse(b.bytes()));
  EXPECT_TRUE(sa.keymat.equals(s.keymat));
}

TEST(XfrmParse, DelSa) {
  const auto d = expect_kind<x::SaDelete>(parse(build_delsa(0xdeadbeef, ip("198.51.100.7"))));
  EXPECT_EQ(d.key, (x::SaKey{0xdeadbeefu, ip("198.51.100.7"), IPPROTO_ESP}));
}

TEST(XfrmParse, DelSaAsTheKernelNotifiesIt) {
  // The kernel's DELSA notification: xfrm_usersa_id + XFRMA_SA (the whole state).
  SaSpec s;
  MsgBuilder b(XFRM_MSG_DELSA);
  auto* id = b.put_struct<xfrm_usersa_id>();
  id->daddr.a4 = htonl(s.daddr);
  id->spi = htonl(s.spi);
  id->family = AF_INET;
  id->proto = IPPROTO_ESP;
  xfrm_usersa_info info{};
  fill_usersa_info(&info, s);
  b.put_attr(XFRMA_SA, &info, sizeof(info));
  const auto d = expect_kind<x::SaDelete>(parse(b.bytes()));
  EXPECT_EQ(d.key.spi, s.spi);
  EXPECT_EQ(d.key.daddr, s.daddr);
}

TEST(XfrmParse, ExpireSoftAndHard) {
  SaSpec s;
  const auto soft = expect_kind<x::SaExpire>(parse(build_expire(s, false)));
  EXPECT_FALSE(soft.hard);
  EXPECT_EQ(soft.key, (x::SaKey{s.spi, s.daddr, IPPROTO_ESP}));
  const auto hard = expect_kind<x::SaExpire>(parse(build_expire(s, true)));
  EXPECT_TRUE(hard.hard);
  EXPECT_EQ(hard.key, soft.key);
}

TEST(XfrmParse, FlushSa) {
  MsgBuilder b(XFRM_MSG_FLUSHSA);
  b.put_struct<xfrm_usersa_flush>()->proto = IPSEC_PROTO_ANY;
  const auto f = expect_kind<x::SaFlush>(parse(b.bytes()));
  EXPECT_EQ(f.proto, IPSEC_PROTO_ANY);
  EXPECT_TRUE(f.affects_esp());
  EXPECT_TRUE(x::SaFlush{IPPROTO_ESP}.affects_esp());
  EXPECT_FALSE(x::SaFlush{IPPROTO_AH}.affects_esp());
}

// ---------------------------------------------------------------------------
// Policies

TEST(XfrmParse, NewPolicy) {
  PolicySpec p;
  p.index = 0x109;
  const auto ev = expect_kind<x::PolicyEvent>(parse(build_newpolicy(p)));
  EXPECT_EQ(ev.kind, x::PolicyEvent::Kind::kNew);
  EXPECT_EQ(ev.dir, x::PolicyDir::kOut);
  EXPECT_EQ(ev.sel.saddr, ip("10.1.0.0"));
  EXPECT_EQ(ev.sel.daddr, ip("10.2.0.0"));
  EXPECT_EQ(ev.sel.prefixlen_s, 16);
  EXPECT_EQ(ev.sel.prefixlen_d, 24);
  EXPECT_FALSE(ev.block);
  EXPECT_EQ(ev.priority, 2000u);
  EXPECT_EQ(ev.index, 0x109u);
  ASSERT_TRUE(ev.has_tmpl);
  EXPECT_EQ(ev.tmpl_count, 1u);
  EXPECT_EQ(ev.reqid, 7u);
  EXPECT_EQ(ev.tmpl_proto, IPPROTO_ESP);
  EXPECT_EQ(ev.tmpl_mode, XFRM_MODE_TUNNEL);
  EXPECT_EQ(ev.tmpl_saddr, ip("192.0.2.1"));
  EXPECT_EQ(ev.tmpl_daddr, ip("198.51.100.7"));
}

TEST(XfrmParse, UpdPolicyInAndFwdBlock) {
  PolicySpec p;
  p.dir = XFRM_POLICY_IN;
  const auto in = expect_kind<x::PolicyEvent>(parse(build_newpolicy(p, XFRM_MSG_UPDPOLICY)));
  EXPECT_EQ(in.kind, x::PolicyEvent::Kind::kUpdate);
  EXPECT_EQ(in.dir, x::PolicyDir::kIn);
  p.dir = XFRM_POLICY_FWD;
  p.action = XFRM_POLICY_BLOCK;
  p.with_tmpl = false;
  const auto fwd = expect_kind<x::PolicyEvent>(parse(build_newpolicy(p)));
  EXPECT_EQ(fwd.dir, x::PolicyDir::kFwd);
  EXPECT_TRUE(fwd.block);
  EXPECT_FALSE(fwd.has_tmpl);
  EXPECT_EQ(fwd.reqid, 0u);
}

TEST(XfrmParse, DelPolicy) {
  PolicySpec p;
  p.dir = XFRM_POLICY_IN;
  const auto ev = expect_kind<x::PolicyEvent>(parse(build_delpolicy(p)));
  EXPECT_EQ(ev.kind, x::PolicyEvent::Kind::kDelete);
  EXPECT_EQ(ev.dir, x::PolicyDir::kIn);
  EXPECT_EQ(ev.sel.daddr, ip("10.2.0.0"));
  EXPECT_FALSE(ev.has_tmpl);
}

TEST(XfrmParse, DelPolicyAsTheKernelNotifiesIt) {
  PolicySpec p;
  p.index = 77;
  p.priority = 1234;
  const auto ev = expect_kind<x::PolicyEvent>(parse(build_delpolicy(p, true)));
  EXPECT_EQ(ev.kind, x::PolicyEvent::Kind::kDelete);
  EXPECT_EQ(ev.priority, 1234u);  // from XFRMA_POLICY
  EXPECT_EQ(ev.index, 77u);
  EXPECT_TRUE(ev.has_tmpl);
  EXPECT_EQ(ev.reqid, 7u);
}

TEST(XfrmParse, FlushPolicy) {
  MsgBuilder b(XFRM_MSG_FLUSHPOLICY);
  const auto ev = expect_kind<x::PolicyEvent>(parse(b.bytes()));
  EXPECT_EQ(ev.kind, x::PolicyEvent::Kind::kFlush);
}

// ---------------------------------------------------------------------------
// Unsupported (well-formed, not mirrored)

TEST(XfrmUnsupported, CbcAesHmacSha256) {
  SaSpec s;
  s.with_aead = false;
  s.with_cbc_hmac = true;
  const auto r = unsupported(build_sa(s));
  EXPECT_NE(r.find("cbc(aes)"), std::string::npos) << r;
  EXPECT_NE(r.find("hmac(sha256)"), std::string::npos) << r;
}

TEST(XfrmUnsupported, AhProtocol) {
  SaSpec s;
  s.proto = IPPROTO_AH;
  s.with_aead = false;
  EXPECT_NE(unsupported(build_sa(s)).find("AH"), std::string::npos);
  EXPECT_NE(unsupported(build_delsa(1, ip("192.0.2.1"), IPPROTO_AH)).find("AH"), std::string::npos);
  EXPECT_NE(unsupported(build_expire(s, true)).find("AH"), std::string::npos);
}

TEST(XfrmUnsupported, Ipv6Family) {
  SaSpec s;
  s.family = AF_INET6;
  EXPECT_NE(unsupported(build_sa(s)).find("IPv6"), std::string::npos);
  EXPECT_NE(unsupported(build_delsa(1, 0, IPPROTO_ESP, AF_INET6)).find("IPv6"), std::string::npos);
  EXPECT_NE(unsupported(build_expire(s, false)).find("IPv6"), std::string::npos);
  PolicySpec p;
  p.family = AF_INET6;
  EXPECT_NE(unsupported(build_newpolicy(p)).find("IPv6"), std::string::npos);
}

TEST(XfrmUnsupported, TransportMode) {
  SaSpec s;
  s.mode = XFRM_MODE_TRANSPORT;
  EXPECT_NE(unsupported(build_sa(s)).find("transport"), std::string::npos);
  s.mode = XFRM_MODE_BEET;
  EXPECT_NE(unsupported(build_sa(s)).find("BEET"), std::string::npos);
}

TEST(XfrmUnsupported, Icv64Bits) {
  SaSpec s;
  s.icv_bits = 64;
  EXPECT_NE(unsupported(build_sa(s)).find("64"), std::string::npos);
}

TEST(XfrmUnsupported, Compression) {
  SaSpec s;
  s.with_comp = true;
  EXPECT_NE(unsupported(build_sa(s)).find("IPComp"), std::string::npos);
  SaSpec c;
  c.proto = IPPROTO_COMP;
  c.with_aead = false;
  c.with_comp = true;
  EXPECT_NE(unsupported(build_sa(c)).find("IPComp"), std::string::npos);
}

TEST(XfrmUnsupported, OtherAeadsAndAes192) {
  SaSpec s;
  s.aead_name = "rfc7539esp(chacha20,poly1305)";
  s.keymat = seq_bytes(36, 0);
  EXPECT_NE(unsupported(build_sa(s)).find("chacha20"), std::string::npos);
  SaSpec g;
  g.keymat = seq_bytes(28, 0);  // 192-bit key + salt
  EXPECT_NE(unsupported(build_sa(g)).find("AES-192"), std::string::npos);
  SaSpec none;
  none.with_aead = false;
  EXPECT_NE(unsupported(build_sa(none)).find("no AEAD"), std::string::npos);
}

TEST(XfrmUnsupported, NonIkeEncapsulation) {
  SaSpec s;
  s.encap_type = UDP_ENCAP_ESPINUDP_NON_IKE;
  EXPECT_NE(unsupported(build_sa(s)).find("encapsulation"), std::string::npos);
}

TEST(XfrmUnsupported, OtherMessageTypes) {
  MsgBuilder acq(XFRM_MSG_ACQUIRE);
  acq.put_struct<xfrm_user_acquire>();
  EXPECT_NE(unsupported(acq.bytes()).find("XFRM_MSG_ACQUIRE"), std::string::npos);
  MsgBuilder done(NLMSG_DONE);
  EXPECT_NE(unsupported(done.bytes()).find("NLMSG_DONE"), std::string::npos);
}

TEST(XfrmUnsupported, BadPolicyDirection) {
  PolicySpec p;
  p.dir = 7;
  EXPECT_NE(unsupported(build_newpolicy(p)).find("direction"), std::string::npos);
}

// ---------------------------------------------------------------------------
// Malformed

TEST(XfrmMalformed, TruncatedHeader) {
  const auto m = build_sa(SaSpec{});
  EXPECT_NE(expect_kind<x::Malformed>(parse(m, 8)).reason.find("truncated"), std::string::npos);
  EXPECT_TRUE(std::holds_alternative<x::Malformed>(x::parse_message(nullptr, 0)));
}

TEST(XfrmMalformed, NlmsgLenBeyondBuffer) {
  const auto m = build_sa(SaSpec{});
  EXPECT_NE(expect_kind<x::Malformed>(parse(m, m.size() - 1)).reason.find("exceeds"),
            std::string::npos);
  auto bad = m;
  nlmsghdr h;
  std::memcpy(&h, bad.data(), sizeof(h));
  h.nlmsg_len = 4;  // shorter than the header itself
  std::memcpy(bad.data(), &h, sizeof(h));
  EXPECT_FALSE(malformed(bad).empty());
}

TEST(XfrmMalformed, PayloadShorterThanUsersaInfo) {
  MsgBuilder b(XFRM_MSG_NEWSA);
  b.put_struct<xfrm_usersa_id>();  // far shorter than xfrm_usersa_info
  EXPECT_NE(malformed(b.bytes()).find("xfrm_usersa_info"), std::string::npos);
  MsgBuilder d(XFRM_MSG_DELSA);
  EXPECT_NE(malformed(d.bytes()).find("xfrm_usersa_id"), std::string::npos);
  MsgBuilder e(XFRM_MSG_EXPIRE);
  e.put_struct<xfrm_usersa_info>();  // lacks `hard`
  EXPECT_NE(malformed(e.bytes()).find("xfrm_user_expire"), std::string::npos);
  MsgBuilder p(XFRM_MSG_NEWPOLICY);
  p.put_struct<xfrm_userpolicy_id>();
  EXPECT_NE(malformed(p.bytes()).find("xfrm_userpolicy_info"), std::string::npos);
}

TEST(XfrmMalformed, AttributeLengthPastTheEnd) {
  auto m = build_sa(SaSpec{});
  patch_attr_len(m, sizeof(xfrm_usersa_info), XFRMA_ALG_AEAD, 2000);
  EXPECT_NE(malformed(m).find("remain"), std::string::npos);
  auto z = build_sa(SaSpec{});
  patch_attr_len(z, sizeof(xfrm_usersa_info), XFRMA_ALG_AEAD, 2);  // < nlattr header
  EXPECT_FALSE(malformed(z).empty());
}

TEST(XfrmMalformed, AttributeEndsInsideThePadding) {
  // nlmsg_len not 4-aligned, an attribute reaching into libmnl's aligned tail.
  auto m = build_sa(SaSpec{});
  nlmsghdr h;
  std::memcpy(&h, m.data(), sizeof(h));
  h.nlmsg_len -= 2;
  std::memcpy(m.data(), &h, sizeof(h));
  m.resize(h.nlmsg_len);
  EXPECT_FALSE(malformed(m).empty());
}

TEST(XfrmMalformed, TrailingGarbage) {
  auto m = build_sa(SaSpec{});
  const size_t old = m.size();
  m.resize(old + 8, 0xee);
  nlmsghdr h;
  std::memcpy(&h, m.data(), sizeof(h));
  h.nlmsg_len = static_cast<uint32_t>(m.size());
  std::memcpy(m.data(), &h, sizeof(h));
  EXPECT_FALSE(malformed(m).empty());
}

TEST(XfrmMalformed, AeadKeyLongerThanTheAttribute) {
  SaSpec s;
  s.key_len_bits = 288;  // announces 36 bytes, carries 20
  EXPECT_NE(malformed(build_sa(s)).find("alg_key_len 288"), std::string::npos);
}

TEST(XfrmMalformed, AeadAttributeShorterThanItsHeader) {
  auto m = build_sa(SaSpec{});
  patch_attr_len(m, sizeof(xfrm_usersa_info), XFRMA_ALG_AEAD, sizeof(nlattr) + 40);
  // The rest of the old attribute now reads as garbage attributes, or this
  // one is too short: either way Malformed.
  EXPECT_FALSE(malformed(m).empty());
  MsgBuilder b(XFRM_MSG_NEWSA);
  fill_usersa_info(b.put_struct<xfrm_usersa_info>(), SaSpec{});
  const std::vector<uint8_t> shorty(40, 0);
  b.put_attr(XFRMA_ALG_AEAD, shorty.data(), shorty.size());
  EXPECT_NE(malformed(b.bytes()).find("header"), std::string::npos);
}

TEST(XfrmMalformed, Rfc4106KeyLen100Bits) {
  SaSpec s;
  s.key_len_bits = 100;
  EXPECT_NE(malformed(build_sa(s)).find("100"), std::string::npos);
}

TEST(XfrmMalformed, EsnFlagWithoutReplayEsn) {
  SaSpec s;
  s.flags = XFRM_STATE_ESN;
  EXPECT_NE(malformed(build_sa(s)).find("XFRMA_REPLAY_ESN_VAL"), std::string::npos);
}

TEST(XfrmMalformed, ReplayEsnBitmapLies) {
  SaSpec s;
  s.with_esn_attr = true;
  s.esn_bmp_len = 4;
  auto m = build_sa(s);
  // Claim a bigger bitmap than the attribute holds.
  const size_t off = attr_payload_off(m, sizeof(xfrm_usersa_info), XFRMA_REPLAY_ESN_VAL);
  uint32_t big = 8;
  std::memcpy(m.data() + off, &big, sizeof(big));
  EXPECT_NE(malformed(m).find("bmp_len"), std::string::npos);
  // Window larger than the bitmap.
  SaSpec w;
  w.with_esn_attr = true;
  w.esn_bmp_len = 1;
  w.esn_window = 64;
  EXPECT_NE(malformed(build_sa(w)).find("replay_window"), std::string::npos);
}

TEST(XfrmMalformed, FixedSizeAttributesOfTheWrongSize) {
  MsgBuilder b(XFRM_MSG_NEWSA);
  SaSpec s;
  fill_usersa_info(b.put_struct<xfrm_usersa_info>(), s);
  const auto a = alg_attr<xfrm_algo_aead>(s.aead_name, 160, s.keymat, 128);
  b.put_attr(XFRMA_ALG_AEAD, a.data(), a.size());
  const uint16_t half_encap = 2;
  b.put_attr(XFRMA_ENCAP, &half_encap, sizeof(half_encap));
  EXPECT_NE(malformed(b.bytes()).find("XFRMA_ENCAP"), std::string::npos);

  MsgBuilder t(XFRM_MSG_NEWPOLICY);
  fill_policy_info(t.put_struct<xfrm_userpolicy_info>(), PolicySpec{});
  const std::vector<uint8_t> part(10, 0);
  t.put_attr(XFRMA_TMPL, part.data(), part.size());
  EXPECT_NE(malformed(t.bytes()).find("XFRMA_TMPL"), std::string::npos);
}

// ---------------------------------------------------------------------------
// Logs and helpers

TEST(XfrmToString, NeverPrintsKeyBytes) {
  SaSpec s;
  s.keymat = {0xde, 0xad, 0xbe, 0xef, 0x13, 0x37, 0xc0, 0xde, 0xfe, 0xed, 0xfa, 0xce,
              0xb1, 0x6b, 0x00, 0xb5, 0x5a, 0x17, 0x5a, 0x17};
  s.encap_type = UDP_ENCAP_ESPINUDP;
  const auto ev = parse(build_sa(s));
  ASSERT_TRUE(std::holds_alternative<x::SaInfo>(ev));
  const std::string str = x::to_string(ev);
  EXPECT_NE(str.find("spi=0xc0ffee01"), std::string::npos) << str;
  EXPECT_NE(str.find("192.0.2.1 -> 198.51.100.7"), std::string::npos) << str;
  EXPECT_NE(str.find("aes-128-gcm"), std::string::npos) << str;
  std::string lower, upper;
  for (uint8_t b : s.keymat) {
    lower += fmt_hex(b, false);
    upper += fmt_hex(b, true);
  }
  // No run of 3+ key bytes in hex, any case, with or without separators.
  for (size_t i = 0; i + 3 <= s.keymat.size(); ++i) {
    EXPECT_EQ(str.find(lower.substr(i * 2, 6)), std::string::npos) << str;
    EXPECT_EQ(str.find(upper.substr(i * 2, 6)), std::string::npos) << str;
  }
  EXPECT_EQ(str.find("de:ad:be"), std::string::npos);
  EXPECT_EQ(str.find("de ad be"), std::string::npos);
  // Nor the raw bytes.
  EXPECT_EQ(str.find(std::string(s.keymat.begin(), s.keymat.begin() + 4)), std::string::npos);
}

TEST(XfrmToString, EveryEventKind) {
  SaSpec s;
  EXPECT_NE(x::to_string(parse(build_delsa(0x1234, ip("192.0.2.9")))).find("sa delete spi=0x00001234 dst=192.0.2.9"),
            std::string::npos);
  EXPECT_NE(x::to_string(parse(build_expire(s, true))).find("expire hard"), std::string::npos);
  EXPECT_NE(x::to_string(parse(build_sa(s, XFRM_MSG_UPDSA))).find("sa update"), std::string::npos);
  EXPECT_NE(x::to_string(parse(build_newpolicy(PolicySpec{}))).find("10.1.0.0/16 -> 10.2.0.0/24"),
            std::string::npos);
  EXPECT_NE(x::to_string(x::Unsupported{"why"}).find("unsupported: why"), std::string::npos);
  EXPECT_NE(x::to_string(x::Malformed{"bad"}).find("malformed: bad"), std::string::npos);
  EXPECT_NE(x::to_string(x::SaFlush{IPSEC_PROTO_ANY}).find("flush"), std::string::npos);
}

TEST(XfrmToString, AlgorithmNamesAreEscaped) {
  SaSpec s;
  s.aead_name = "evil\n\x1b[2Jname";
  const auto r = unsupported(build_sa(s));
  EXPECT_EQ(r.find('\n'), std::string::npos) << r;
  EXPECT_EQ(r.find('\x1b'), std::string::npos) << r;
  EXPECT_NE(r.find("\\x0a"), std::string::npos) << r;
}

TEST(XfrmDirection, FromLocalAddresses) {
  const std::set<uint32_t> local = {ip("192.0.2.1")};
  auto is_local = [&](uint32_t a) { return local.count(a) != 0; };
  EXPECT_EQ(x::direction_of(ip("192.0.2.1"), ip("198.51.100.7"), is_local), x::Dir::kOut);
  EXPECT_EQ(x::direction_of(ip("198.51.100.7"), ip("192.0.2.1"), is_local), x::Dir::kIn);
  EXPECT_EQ(x::direction_of(ip("10.0.0.1"), ip("10.0.0.2"), is_local), x::Dir::kUnknown);
  EXPECT_EQ(x::direction_of(ip("192.0.2.1"), ip("192.0.2.1"), is_local), x::Dir::kUnknown);
}

// ---------------------------------------------------------------------------
// Fuzz-ish: random truncations and byte flips of valid messages.

TEST(XfrmFuzz, TruncationsAndFlipsNeverCrash) {
  std::vector<std::vector<uint8_t>> corpus;
  {
    SaSpec s;
    corpus.push_back(build_sa(s));
    s.keymat = seq_bytes(36, 3);
    s.encap_type = UDP_ENCAP_ESPINUDP;
    s.flags = XFRM_STATE_ESN;
    s.with_esn_attr = true;
    s.if_id = 9;
    corpus.push_back(build_sa(s, XFRM_MSG_UPDSA));
    SaSpec c;
    c.with_aead = false;
    c.with_cbc_hmac = true;
    c.with_comp = true;
    corpus.push_back(build_sa(c));
    corpus.push_back(build_delsa(5, ip("192.0.2.3")));
    corpus.push_back(build_expire(SaSpec{}, true));
    corpus.push_back(build_newpolicy(PolicySpec{}));
    corpus.push_back(build_delpolicy(PolicySpec{}, true));
    MsgBuilder f(XFRM_MSG_FLUSHSA);
    f.put_struct<xfrm_usersa_flush>()->proto = IPPROTO_ESP;
    corpus.push_back(f.bytes());
  }
  std::mt19937 rng(20240611);
  size_t counts[std::variant_size_v<x::Event>] = {};
  for (int it = 0; it < 20000; ++it) {
    auto m = corpus[rng() % corpus.size()];
    const bool flip = rng() % 2 == 0;
    if (flip) {
      const int flips = 1 + static_cast<int>(rng() % 8);
      for (int i = 0; i < flips; ++i) {
        // Bias towards the header and the first attributes, where lengths live.
        const size_t pos = (rng() % 4 == 0) ? rng() % std::min<size_t>(m.size(), 16) : rng() % m.size();
        m[pos] = static_cast<uint8_t>(rng());
      }
    }
    const size_t len = (rng() % 3 == 0) ? m.size() : rng() % (m.size() + 1);
    const x::Event ev = parse(m, len);
    ASSERT_FALSE(ev.valueless_by_exception());
    ++counts[ev.index()];
    if (!flip && len < m.size()) {
      // An intact header with nlmsg_len beyond what was received is always caught.
      ASSERT_TRUE(std::holds_alternative<x::Malformed>(ev)) << it << ": " << x::to_string(ev);
    }
    const std::string str = x::to_string(ev);
    ASSERT_FALSE(str.empty());
    if (const auto* sa = std::get_if<x::SaInfo>(&ev)) {
      ASSERT_TRUE(sa->keymat.size() == 20 || sa->keymat.size() == 36);
      ASSERT_EQ(sa->icv_bits, 128u);
    }
  }
  // The loop exercised both sides.
  EXPECT_GT(counts[5], 1000u);  // Malformed
  EXPECT_GT(counts[0] + counts[1] + counts[2] + counts[3] + counts[4] + counts[6], 100u);
}
