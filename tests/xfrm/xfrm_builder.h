// Builds REAL XFRM netlink messages with the kernel's <linux/xfrm.h>
// structures and libmnl (mnl_nlmsg_put_header / put_extra_header /
// mnl_attr_put), the way strongSwan's kernel-netlink backend and the kernel's
// own notifications lay them out.
#pragma once

#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <linux/ipsec.h>
#include <linux/netlink.h>
#include <linux/udp.h>
#include <linux/xfrm.h>
#include <netinet/in.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

namespace xfrm_test {

// One message under construction (8-byte aligned storage, zeroed).
class MsgBuilder {
 public:
  explicit MsgBuilder(uint16_t type, uint16_t flags = 0) : buf_(4096 / 8, 0) {
    nlh_ = mnl_nlmsg_put_header(buf_.data());
    nlh_->nlmsg_type = type;
    nlh_->nlmsg_flags = flags;
  }
  template <typename T>
  T* put_struct() {
    return static_cast<T*>(mnl_nlmsg_put_extra_header(nlh_, sizeof(T)));
  }
  void put_attr(uint16_t type, const void* data, size_t len) {
    mnl_attr_put(nlh_, type, len, data);
  }
  nlmsghdr* nlh() { return nlh_; }
  std::vector<uint8_t> bytes() const {
    const auto* p = reinterpret_cast<const uint8_t*>(nlh_);
    return std::vector<uint8_t>(p, p + nlh_->nlmsg_len);
  }

 private:
  std::vector<uint64_t> buf_;
  nlmsghdr* nlh_;
};

inline uint32_t ip(const char* s) {
  in_addr a{};
  inet_pton(AF_INET, s, &a);
  return ntohl(a.s_addr);
}

// An xfrm_algo* attribute: fixed header + key bytes.
template <typename Alg>
std::vector<uint8_t> alg_attr(const std::string& name, uint32_t key_len_bits,
                              const std::vector<uint8_t>& key, uint32_t third = 0) {
  std::vector<uint8_t> out(sizeof(Alg) + key.size(), 0);
  Alg a{};
  std::strncpy(a.alg_name, name.c_str(), sizeof(a.alg_name) - 1);
  a.alg_key_len = key_len_bits;
  if constexpr (requires { a.alg_icv_len; }) a.alg_icv_len = third;
  if constexpr (requires { a.alg_trunc_len; }) a.alg_trunc_len = third;
  std::memcpy(out.data(), &a, sizeof(a));
  if (!key.empty()) std::memcpy(out.data() + sizeof(a), key.data(), key.size());
  return out;
}

inline std::vector<uint8_t> seq_bytes(size_t n, uint8_t first) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(first + i);
  return v;
}

struct SaSpec {
  uint16_t family = AF_INET;
  uint8_t proto = IPPROTO_ESP;
  uint8_t mode = XFRM_MODE_TUNNEL;
  uint32_t spi = 0xc0ffee01;
  uint32_t saddr = ip("192.0.2.1");
  uint32_t daddr = ip("198.51.100.7");
  uint32_t reqid = 7;
  uint8_t replay_window = 32;
  uint8_t flags = 0;
  std::string aead_name = "rfc4106(gcm(aes))";
  bool with_aead = true;
  std::vector<uint8_t> keymat = seq_bytes(20, 0xa0);  // 16-byte key + 4-byte salt
  std::optional<uint32_t> key_len_bits;                // default: keymat.size() * 8
  uint32_t icv_bits = 128;
  // XFRMA_ENCAP
  std::optional<uint16_t> encap_type;
  uint16_t encap_sport = 4500, encap_dport = 4500;
  // XFRMA_REPLAY_ESN_VAL
  bool with_esn_attr = false;
  uint32_t esn_bmp_len = 4, esn_window = 100;
  // Other algorithms
  bool with_cbc_hmac = false;
  bool with_comp = false;
  // Lifetimes
  uint64_t soft_bytes = 1000000, hard_bytes = 2000000;
  uint64_t soft_packets = XFRM_INF, hard_packets = XFRM_INF;
  uint64_t soft_add = 3000, hard_add = 3600;
  std::optional<uint32_t> if_id;
};

inline void fill_usersa_info(xfrm_usersa_info* p, const SaSpec& s) {
  p->family = s.family;
  p->id.proto = s.proto;
  p->id.spi = htonl(s.spi);
  p->mode = s.mode;
  p->reqid = s.reqid;
  p->replay_window = s.replay_window;
  p->flags = s.flags;
  if (s.family == AF_INET) {
    p->saddr.a4 = htonl(s.saddr);
    p->id.daddr.a4 = htonl(s.daddr);
  } else {
    p->saddr.a6[0] = htonl(0x20010db8);
    p->saddr.a6[3] = htonl(1);
    p->id.daddr.a6[0] = htonl(0x20010db8);
    p->id.daddr.a6[3] = htonl(2);
  }
  p->lft.soft_byte_limit = s.soft_bytes;
  p->lft.hard_byte_limit = s.hard_bytes;
  p->lft.soft_packet_limit = s.soft_packets;
  p->lft.hard_packet_limit = s.hard_packets;
  p->lft.soft_add_expires_seconds = s.soft_add;
  p->lft.hard_add_expires_seconds = s.hard_add;
  p->lft.soft_use_expires_seconds = 0;
  p->lft.hard_use_expires_seconds = 0;
}

// NEWSA / UPDSA with xfrm_usersa_info and its attributes.
inline std::vector<uint8_t> build_sa(const SaSpec& s, uint16_t type = XFRM_MSG_NEWSA) {
  MsgBuilder b(type);
  fill_usersa_info(b.put_struct<xfrm_usersa_info>(), s);
  if (s.with_aead) {
    const auto a = alg_attr<xfrm_algo_aead>(
        s.aead_name, s.key_len_bits.value_or(static_cast<uint32_t>(s.keymat.size() * 8)),
        s.keymat, s.icv_bits);
    b.put_attr(XFRMA_ALG_AEAD, a.data(), a.size());
  }
  if (s.with_cbc_hmac) {
    const auto enc = alg_attr<xfrm_algo>("cbc(aes)", 128, seq_bytes(16, 1));
    const auto auth = alg_attr<xfrm_algo_auth>("hmac(sha256)", 256, seq_bytes(32, 2), 128);
    b.put_attr(XFRMA_ALG_CRYPT, enc.data(), enc.size());
    b.put_attr(XFRMA_ALG_AUTH_TRUNC, auth.data(), auth.size());
  }
  if (s.with_comp) {
    const auto comp = alg_attr<xfrm_algo>("deflate", 0, {});
    b.put_attr(XFRMA_ALG_COMP, comp.data(), comp.size());
  }
  if (s.encap_type) {
    xfrm_encap_tmpl e{};
    e.encap_type = *s.encap_type;
    e.encap_sport = htons(s.encap_sport);
    e.encap_dport = htons(s.encap_dport);
    b.put_attr(XFRMA_ENCAP, &e, sizeof(e));
  }
  if (s.with_esn_attr) {
    std::vector<uint8_t> v(sizeof(xfrm_replay_state_esn) + s.esn_bmp_len * 4, 0);
    xfrm_replay_state_esn rs{};
    rs.bmp_len = s.esn_bmp_len;
    rs.replay_window = s.esn_window;
    std::memcpy(v.data(), &rs, sizeof(rs));
    b.put_attr(XFRMA_REPLAY_ESN_VAL, v.data(), v.size());
  }
  if (s.if_id) mnl_attr_put_u32(b.nlh(), XFRMA_IF_ID, *s.if_id);
  return b.bytes();
}

inline std::vector<uint8_t> build_delsa(uint32_t spi, uint32_t daddr, uint8_t proto = IPPROTO_ESP,
                                        uint16_t family = AF_INET) {
  MsgBuilder b(XFRM_MSG_DELSA);
  auto* id = b.put_struct<xfrm_usersa_id>();
  id->daddr.a4 = htonl(daddr);
  id->spi = htonl(spi);
  id->family = family;
  id->proto = proto;
  return b.bytes();
}

inline std::vector<uint8_t> build_expire(const SaSpec& s, bool hard) {
  MsgBuilder b(XFRM_MSG_EXPIRE);
  auto* ue = b.put_struct<xfrm_user_expire>();
  fill_usersa_info(&ue->state, s);
  ue->hard = hard ? 1 : 0;
  return b.bytes();
}

struct PolicySpec {
  uint16_t family = AF_INET;
  uint32_t src = ip("10.1.0.0"), dst = ip("10.2.0.0");
  uint8_t plen_s = 16, plen_d = 24;
  uint8_t dir = XFRM_POLICY_OUT;
  uint8_t action = XFRM_POLICY_ALLOW;
  uint32_t priority = 2000, index = 0;
  bool with_tmpl = true;
  uint32_t tmpl_saddr = ip("192.0.2.1"), tmpl_daddr = ip("198.51.100.7");
  uint32_t reqid = 7;
};

inline void fill_selector(xfrm_selector* sel, const PolicySpec& p) {
  sel->family = p.family;
  if (p.family == AF_INET) {
    sel->saddr.a4 = htonl(p.src);
    sel->daddr.a4 = htonl(p.dst);
  } else {
    sel->saddr.a6[0] = htonl(0x20010db8);
    sel->daddr.a6[0] = htonl(0x20010db9);
  }
  sel->prefixlen_s = p.plen_s;
  sel->prefixlen_d = p.plen_d;
}

inline void fill_policy_info(xfrm_userpolicy_info* pi, const PolicySpec& p) {
  fill_selector(&pi->sel, p);
  pi->dir = p.dir;
  pi->action = p.action;
  pi->priority = p.priority;
  pi->index = p.index;
  pi->lft.soft_byte_limit = XFRM_INF;
  pi->lft.hard_byte_limit = XFRM_INF;
  pi->lft.soft_packet_limit = XFRM_INF;
  pi->lft.hard_packet_limit = XFRM_INF;
}

inline void put_tmpl(MsgBuilder& b, const PolicySpec& p) {
  xfrm_user_tmpl t{};
  t.family = AF_INET;
  t.id.proto = IPPROTO_ESP;
  t.id.daddr.a4 = htonl(p.tmpl_daddr);
  t.saddr.a4 = htonl(p.tmpl_saddr);
  t.reqid = p.reqid;
  t.mode = XFRM_MODE_TUNNEL;
  t.aalgos = t.ealgos = t.calgos = ~0u;
  b.put_attr(XFRMA_TMPL, &t, sizeof(t));
}

inline std::vector<uint8_t> build_newpolicy(const PolicySpec& p,
                                            uint16_t type = XFRM_MSG_NEWPOLICY) {
  MsgBuilder b(type);
  fill_policy_info(b.put_struct<xfrm_userpolicy_info>(), p);
  if (p.with_tmpl) put_tmpl(b, p);
  return b.bytes();
}

// As `ip xfrm policy delete` sends it (by selector + dir); with
// `kernel_style`, as the kernel's notification (plus XFRMA_POLICY).
inline std::vector<uint8_t> build_delpolicy(const PolicySpec& p, bool kernel_style = false) {
  MsgBuilder b(XFRM_MSG_DELPOLICY);
  auto* id = b.put_struct<xfrm_userpolicy_id>();
  fill_selector(&id->sel, p);
  id->dir = p.dir;
  id->index = p.index;
  if (kernel_style) {
    xfrm_userpolicy_info pi{};
    fill_policy_info(&pi, p);
    b.put_attr(XFRMA_POLICY, &pi, sizeof(pi));
    if (p.with_tmpl) put_tmpl(b, p);
  }
  return b.bytes();
}

}  // namespace xfrm_test
