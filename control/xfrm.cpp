// The XFRM netlink mirror: parse the kernel's SA/policy messages (libmnl) and
// follow them on a NETLINK_XFRM socket. See xfrm.h and docs/xfrm.md.
//
// Pure Linux netlink + libmnl + std: no DPDK headers here.
#include "control/xfrm.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <linux/ipsec.h>
#include <linux/netlink.h>
#include <linux/udp.h>
#include <linux/xfrm.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <string_view>
#include <system_error>
#include <type_traits>

namespace espgw::control::xfrm {

namespace {

constexpr std::string_view kRfc4106 = "rfc4106(gcm(aes))";
constexpr size_t kSaltLen = 4;

// ---------------------------------------------------------------------------
// Small helpers

// Wipes a buffer that held netlink messages (NEWSA carries key bytes) on
// every way out of a scope.
template <class Buffer>
struct WipeOnExit {
  Buffer& b;
  ~WipeOnExit() { crypto::SecretBytes::wipe(b); }
};

uint64_t inf_to_zero(uint64_t v) { return v == XFRM_INF ? 0 : v; }

std::string ipv4(uint32_t host) {
  return fmt::format("{}.{}.{}.{}", host >> 24, (host >> 16) & 0xff, (host >> 8) & 0xff,
                     host & 0xff);
}

// An algorithm name from a fixed 64-byte field: bounded, printable only (the
// kernel's names are ASCII; anything else is escaped so a log stays a log).
std::string alg_name(const char (&name)[64]) {
  std::string out;
  const size_t n = strnlen(name, sizeof(name));
  for (size_t i = 0; i < n; ++i) {
    const auto c = static_cast<unsigned char>(name[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      out += fmt::format("\\x{:02x}", c);
    }
  }
  return out;
}

bool name_is(const char (&name)[64], std::string_view want) {
  return std::string_view(name, strnlen(name, sizeof(name))) == want;
}

std::string proto_name(uint8_t proto) {
  switch (proto) {
    case IPPROTO_ESP: return "ESP (50)";
    case IPPROTO_AH: return "AH (51)";
    case IPPROTO_COMP: return "IPComp (108)";
    case IPSEC_PROTO_ANY: return "any (255)";
    default: return fmt::format("protocol {}", proto);
  }
}

std::string family_reason(uint16_t family, std::string_view what) {
  if (family == AF_INET6) return fmt::format("IPv6 {} is not supported (IPv4 only)", what);
  return fmt::format("address family {} of the {} is not supported (IPv4 only)", family, what);
}

std::string mode_name(uint8_t mode) {
  switch (mode) {
    case XFRM_MODE_TRANSPORT: return "transport";
    case XFRM_MODE_TUNNEL: return "tunnel";
    case XFRM_MODE_ROUTEOPTIMIZATION: return "route optimization";
    case XFRM_MODE_IN_TRIGGER: return "in-trigger";
    case XFRM_MODE_BEET: return "BEET";
    default: return fmt::format("{}", mode);
  }
}

const char* msg_name(uint16_t type) {
  switch (type) {
    case NLMSG_NOOP: return "NLMSG_NOOP";
    case NLMSG_ERROR: return "NLMSG_ERROR";
    case NLMSG_DONE: return "NLMSG_DONE";
    case NLMSG_OVERRUN: return "NLMSG_OVERRUN";
    case XFRM_MSG_NEWSA: return "XFRM_MSG_NEWSA";
    case XFRM_MSG_DELSA: return "XFRM_MSG_DELSA";
    case XFRM_MSG_GETSA: return "XFRM_MSG_GETSA";
    case XFRM_MSG_NEWPOLICY: return "XFRM_MSG_NEWPOLICY";
    case XFRM_MSG_DELPOLICY: return "XFRM_MSG_DELPOLICY";
    case XFRM_MSG_GETPOLICY: return "XFRM_MSG_GETPOLICY";
    case XFRM_MSG_ALLOCSPI: return "XFRM_MSG_ALLOCSPI";
    case XFRM_MSG_ACQUIRE: return "XFRM_MSG_ACQUIRE";
    case XFRM_MSG_EXPIRE: return "XFRM_MSG_EXPIRE";
    case XFRM_MSG_UPDPOLICY: return "XFRM_MSG_UPDPOLICY";
    case XFRM_MSG_UPDSA: return "XFRM_MSG_UPDSA";
    case XFRM_MSG_POLEXPIRE: return "XFRM_MSG_POLEXPIRE";
    case XFRM_MSG_FLUSHSA: return "XFRM_MSG_FLUSHSA";
    case XFRM_MSG_FLUSHPOLICY: return "XFRM_MSG_FLUSHPOLICY";
    case XFRM_MSG_NEWAE: return "XFRM_MSG_NEWAE";
    case XFRM_MSG_GETAE: return "XFRM_MSG_GETAE";
    case XFRM_MSG_REPORT: return "XFRM_MSG_REPORT";
    case XFRM_MSG_MIGRATE: return "XFRM_MSG_MIGRATE";
    case XFRM_MSG_MAPPING: return "XFRM_MSG_MAPPING";
    default: return nullptr;
  }
}

std::string msg_label(uint16_t type) {
  const char* n = msg_name(type);
  return n ? std::string(n) : fmt::format("message type {}", type);
}

// ---------------------------------------------------------------------------
// One message, copied into an aligned, zero-padded buffer so that libmnl's
// iteration (which walks to MNL_ALIGN(nlmsg_len)) never leaves our memory and
// every struct access is aligned whatever the caller's pointer was.

class Message {
 public:
  Message(const void* p, size_t nlmsg_len)
      : words_((MNL_ALIGN(nlmsg_len) + sizeof(uint64_t) - 1) / sizeof(uint64_t), 0) {
    std::memcpy(words_.data(), p, nlmsg_len);
  }
  // A NEWSA/UPDSA copy holds key bytes: wiped, not just freed.
  ~Message() { crypto::SecretBytes::wipe(words_); }
  Message(const Message&) = delete;
  Message& operator=(const Message&) = delete;
  const nlmsghdr* nlh() const { return reinterpret_cast<const nlmsghdr*>(words_.data()); }
  size_t payload_len() const { return nlh()->nlmsg_len - MNL_NLMSG_HDRLEN; }
  const char* payload() const { return static_cast<const char*>(mnl_nlmsg_get_payload(nlh())); }

  template <typename T>
  T fixed() const {
    static_assert(std::is_trivially_copyable_v<T>);
    T t;
    std::memcpy(&t, payload(), sizeof(T));
    return t;
  }

 private:
  std::vector<uint64_t> words_;
};

// What the attribute walk found. Pointers point into the Message's buffer.
struct Attrs {
  std::array<const nlattr*, XFRMA_MAX + 1> a{};
  std::string error;            // set: malformed
  const char* end = nullptr;    // where the last valid attribute (aligned) ends
  const char* msg_end = nullptr;  // nlh + nlmsg_len (unaligned)

  const nlattr* operator[](int type) const { return a[static_cast<size_t>(type)]; }
  template <typename T>
  T get(int type) const {
    T t{};
    std::memcpy(&t, mnl_attr_get_payload(a[static_cast<size_t>(type)]), sizeof(T));
    return t;
  }
};

std::string attr_label(uint16_t type) {
  switch (type) {
    case XFRMA_ALG_AUTH: return "XFRMA_ALG_AUTH";
    case XFRMA_ALG_CRYPT: return "XFRMA_ALG_CRYPT";
    case XFRMA_ALG_COMP: return "XFRMA_ALG_COMP";
    case XFRMA_ENCAP: return "XFRMA_ENCAP";
    case XFRMA_TMPL: return "XFRMA_TMPL";
    case XFRMA_SA: return "XFRMA_SA";
    case XFRMA_POLICY: return "XFRMA_POLICY";
    case XFRMA_SEC_CTX: return "XFRMA_SEC_CTX";
    case XFRMA_ALG_AEAD: return "XFRMA_ALG_AEAD";
    case XFRMA_ALG_AUTH_TRUNC: return "XFRMA_ALG_AUTH_TRUNC";
    case XFRMA_MARK: return "XFRMA_MARK";
    case XFRMA_REPLAY_ESN_VAL: return "XFRMA_REPLAY_ESN_VAL";
    case XFRMA_IF_ID: return "XFRMA_IF_ID";
    default: return fmt::format("attribute {}", type);
  }
}

// An algorithm attribute: the fixed struct must fit, and so must the key its
// alg_key_len (bits) announces.
template <typename Alg>
bool check_alg(const nlattr* attr, std::string& err) {
  const uint16_t len = mnl_attr_get_payload_len(attr);
  const uint16_t type = mnl_attr_get_type(attr);
  if (len < sizeof(Alg)) {
    err = fmt::format("{}: {} bytes, shorter than its {}-byte header", attr_label(type), len,
                      sizeof(Alg));
    return false;
  }
  Alg alg;
  std::memcpy(&alg, mnl_attr_get_payload(attr), sizeof(Alg));
  const uint64_t key_bytes = (uint64_t{alg.alg_key_len} + 7) / 8;
  if (sizeof(Alg) + key_bytes > len) {
    err = fmt::format("{}: alg_key_len {} bits needs {} key bytes but the attribute holds {}",
                      attr_label(type), alg.alg_key_len, key_bytes, len - sizeof(Alg));
    return false;
  }
  return true;
}

bool check_exact(const nlattr* attr, size_t want, std::string& err) {
  if (mnl_attr_validate2(attr, MNL_TYPE_UNSPEC, want) < 0) {
    err = fmt::format("{}: {} bytes, expected {}", attr_label(mnl_attr_get_type(attr)),
                      mnl_attr_get_payload_len(attr), want);
    return false;
  }
  return true;
}

int attr_cb(const nlattr* attr, void* data) {
  auto* at = static_cast<Attrs*>(data);
  const char* begin = reinterpret_cast<const char*>(attr);
  if (begin + attr->nla_len > at->msg_end) {
    // Inside libmnl's aligned tail but past nlmsg_len.
    at->error = fmt::format("{} of {} bytes runs past the end of the message",
                            attr_label(mnl_attr_get_type(attr)), attr->nla_len);
    return MNL_CB_ERROR;
  }
  at->end = begin + MNL_ALIGN(attr->nla_len);
  // Attributes newer than our headers are skipped, as the kernel's own
  // parsers do with unknown ones.
  if (mnl_attr_type_valid(attr, XFRMA_MAX) < 0) return MNL_CB_OK;
  const uint16_t type = mnl_attr_get_type(attr);
  std::string& err = at->error;
  bool ok = true;
  switch (type) {
    case XFRMA_ALG_AEAD: ok = check_alg<xfrm_algo_aead>(attr, err); break;
    case XFRMA_ALG_AUTH_TRUNC: ok = check_alg<xfrm_algo_auth>(attr, err); break;
    case XFRMA_ALG_AUTH:
    case XFRMA_ALG_CRYPT:
    case XFRMA_ALG_COMP: ok = check_alg<xfrm_algo>(attr, err); break;
    case XFRMA_ENCAP: ok = check_exact(attr, sizeof(xfrm_encap_tmpl), err); break;
    case XFRMA_MARK: ok = check_exact(attr, sizeof(xfrm_mark), err); break;
    case XFRMA_SA: ok = check_exact(attr, sizeof(xfrm_usersa_info), err); break;
    case XFRMA_POLICY: ok = check_exact(attr, sizeof(xfrm_userpolicy_info), err); break;
    case XFRMA_IF_ID:
    case XFRMA_TFCPAD:
    case XFRMA_SA_EXTRA_FLAGS:
      if (mnl_attr_validate(attr, MNL_TYPE_U32) < 0) {
        err = fmt::format("{}: {} bytes, expected 4", attr_label(type),
                          mnl_attr_get_payload_len(attr));
        ok = false;
      }
      break;
    case XFRMA_TMPL: {
      const uint16_t len = mnl_attr_get_payload_len(attr);
      if (len % sizeof(xfrm_user_tmpl) != 0) {
        err = fmt::format("XFRMA_TMPL: {} bytes is not a whole number of {}-byte templates", len,
                          sizeof(xfrm_user_tmpl));
        ok = false;
      }
      break;
    }
    case XFRMA_REPLAY_ESN_VAL: {
      const uint16_t len = mnl_attr_get_payload_len(attr);
      if (len < sizeof(xfrm_replay_state_esn)) {
        err = fmt::format("XFRMA_REPLAY_ESN_VAL: {} bytes, shorter than its {}-byte header", len,
                          sizeof(xfrm_replay_state_esn));
        ok = false;
        break;
      }
      xfrm_replay_state_esn rs;
      std::memcpy(&rs, mnl_attr_get_payload(attr), sizeof(rs));
      constexpr unsigned kMaxBmpLen = XFRMA_REPLAY_ESN_MAX / 32;
      if (rs.bmp_len > kMaxBmpLen) {
        err = fmt::format("XFRMA_REPLAY_ESN_VAL: bmp_len {} exceeds {}", rs.bmp_len, kMaxBmpLen);
        ok = false;
      } else if (sizeof(rs) + size_t{rs.bmp_len} * 4 > len) {
        err = fmt::format("XFRMA_REPLAY_ESN_VAL: bmp_len {} needs {} bytes but the attribute holds {}",
                          rs.bmp_len, sizeof(rs) + size_t{rs.bmp_len} * 4, len);
        ok = false;
      } else if (rs.replay_window > rs.bmp_len * 32) {
        err = fmt::format("XFRMA_REPLAY_ESN_VAL: replay_window {} exceeds the {}-bit bitmap",
                          rs.replay_window, rs.bmp_len * 32);
        ok = false;
      }
      break;
    }
    default:
      break;  // attributes we do not use are not checked beyond their header
  }
  if (!ok) return MNL_CB_ERROR;
  at->a[type] = attr;
  return MNL_CB_OK;
}

// Walks the attributes after the fixed struct of `fixed_len` bytes. Returns
// false (with at.error) when one is malformed or the walk did not consume the
// message to its end.
bool parse_attrs(const Message& m, size_t fixed_len, Attrs& at) {
  const nlmsghdr* nlh = m.nlh();
  at.msg_end = reinterpret_cast<const char*>(nlh) + nlh->nlmsg_len;
  const char* start = static_cast<const char*>(mnl_nlmsg_get_payload_offset(nlh, fixed_len));
  const char* tail = static_cast<const char*>(mnl_nlmsg_get_payload_tail(nlh));
  at.end = start;
  if (start > tail) {
    at.error = "fixed header runs past the end of the message";
    return false;
  }
  const int ret = mnl_attr_parse(nlh, static_cast<unsigned>(fixed_len), attr_cb, &at);
  if (ret == MNL_CB_ERROR) {
    if (at.error.empty()) at.error = "bad attribute";
    return false;
  }
  if (at.end < tail) {
    const auto off = at.end - reinterpret_cast<const char*>(nlh);
    nlattr hdr{};
    std::memcpy(&hdr, at.end, sizeof(hdr));  // zero padding guarantees 4 readable bytes
    at.error = fmt::format("attribute at offset {} claims {} bytes but only {} remain", off,
                           hdr.nla_len, at.msg_end - at.end);
    return false;
  }
  return true;
}

Selector selector(const xfrm_selector& s) {
  Selector out;
  out.family = s.family;
  if (s.family == AF_INET) {
    out.saddr = ntohl(s.saddr.a4);
    out.daddr = ntohl(s.daddr.a4);
  }
  out.prefixlen_s = s.prefixlen_s;
  out.prefixlen_d = s.prefixlen_d;
  out.proto = s.proto;
  out.sport = ntohs(s.sport);
  out.dport = ntohs(s.dport);
  return out;
}

bool selector_ok(const xfrm_selector& s) { return s.family == AF_INET || s.family == AF_UNSPEC; }

template <typename T>
std::string too_short(const Message& m, const char* struct_name) {
  return fmt::format("{}: payload of {} bytes is shorter than struct {} ({} bytes)",
                     msg_label(m.nlh()->nlmsg_type), m.payload_len(), struct_name, sizeof(T));
}

// ---------------------------------------------------------------------------
// Per message type

Event parse_sa(const Message& m, bool update) {
  if (m.payload_len() < sizeof(xfrm_usersa_info)) {
    return Malformed{too_short<xfrm_usersa_info>(m, "xfrm_usersa_info")};
  }
  const auto p = m.fixed<xfrm_usersa_info>();
  Attrs at;
  if (!parse_attrs(m, sizeof(p), at)) return Malformed{at.error};

  // Structural problems first: they are Malformed whatever the algorithm.
  const bool has_esn_attr = at[XFRMA_REPLAY_ESN_VAL] != nullptr;
  if ((p.flags & XFRM_STATE_ESN) && !has_esn_attr) {
    return Malformed{"XFRM_STATE_ESN is set but XFRMA_REPLAY_ESN_VAL is missing"};
  }
  xfrm_algo_aead aead{};
  if (at[XFRMA_ALG_AEAD]) {
    aead = at.get<xfrm_algo_aead>(XFRMA_ALG_AEAD);
    if (name_is(aead.alg_name, kRfc4106) && aead.alg_key_len != 160 && aead.alg_key_len != 224 &&
        aead.alg_key_len != 288) {
      return Malformed{fmt::format(
          "rfc4106(gcm(aes)) alg_key_len {} bits is not key+salt (160, 224 or 288 bits)",
          aead.alg_key_len)};
    }
  }

  // Then what we do not mirror.
  if (p.family != AF_INET) return Unsupported{family_reason(p.family, "SA")};
  if (p.id.proto != IPPROTO_ESP) {
    return Unsupported{fmt::format("SA protocol {} is not ESP", proto_name(p.id.proto))};
  }
  if (p.mode != XFRM_MODE_TUNNEL) {
    return Unsupported{fmt::format("{} mode is not supported (tunnel only)", mode_name(p.mode))};
  }
  if (!selector_ok(p.sel)) return Unsupported{family_reason(p.sel.family, "inner selector")};
  if (at[XFRMA_ALG_COMP]) return Unsupported{"IPComp compression (XFRMA_ALG_COMP) is not supported"};
  if (at[XFRMA_SEC_CTX]) return Unsupported{"labeled IPsec (XFRMA_SEC_CTX) is not supported"};
  if (at[XFRMA_ALG_CRYPT] || at[XFRMA_ALG_AUTH] || at[XFRMA_ALG_AUTH_TRUNC]) {
    std::string enc = "none", auth = "none";
    if (at[XFRMA_ALG_CRYPT]) enc = alg_name(at.get<xfrm_algo>(XFRMA_ALG_CRYPT).alg_name);
    if (at[XFRMA_ALG_AUTH_TRUNC]) {
      auth = alg_name(at.get<xfrm_algo_auth>(XFRMA_ALG_AUTH_TRUNC).alg_name);
    } else if (at[XFRMA_ALG_AUTH]) {
      auth = alg_name(at.get<xfrm_algo>(XFRMA_ALG_AUTH).alg_name);
    }
    return Unsupported{fmt::format(
        "encryption '{}' with authentication '{}' is not supported (only rfc4106(gcm(aes)))", enc,
        auth)};
  }
  if (!at[XFRMA_ALG_AEAD]) return Unsupported{"no AEAD algorithm (XFRMA_ALG_AEAD) on the SA"};
  if (!name_is(aead.alg_name, kRfc4106)) {
    return Unsupported{fmt::format("AEAD '{}' is not supported (only rfc4106(gcm(aes)))",
                                   alg_name(aead.alg_name))};
  }
  if (aead.alg_icv_len != 128) {
    return Unsupported{fmt::format("ICV of {} bits is not supported (128 only)", aead.alg_icv_len)};
  }
  if (aead.alg_key_len == 224) return Unsupported{"AES-192-GCM is not supported (128 or 256 only)"};

  SaInfo sa;
  if (at[XFRMA_ENCAP]) {
    const auto e = at.get<xfrm_encap_tmpl>(XFRMA_ENCAP);
    if (e.encap_type != UDP_ENCAP_ESPINUDP) {
      return Unsupported{fmt::format("encapsulation type {} is not supported (UDP_ENCAP_ESPINUDP only)",
                                     e.encap_type)};
    }
    sa.encap_sport = ntohs(e.encap_sport);
    sa.encap_dport = ntohs(e.encap_dport);
  }

  sa.spi = ntohl(p.id.spi);
  sa.saddr = ntohl(p.saddr.a4);
  sa.daddr = ntohl(p.id.daddr.a4);
  sa.reqid = p.reqid;
  const size_t key_bytes = aead.alg_key_len / 8;
  const auto* key = static_cast<const uint8_t*>(mnl_attr_get_payload(at[XFRMA_ALG_AEAD])) +
                    sizeof(xfrm_algo_aead);
  sa.keymat = crypto::SecretBytes(std::span<const uint8_t>(key, key_bytes));  // key || salt, as the kernel holds it
  sa.icv_bits = aead.alg_icv_len;
  sa.esn = (p.flags & XFRM_STATE_ESN) != 0;
  if (has_esn_attr) {
    const auto rs = at.get<xfrm_replay_state_esn>(XFRMA_REPLAY_ESN_VAL);
    sa.replay_window = rs.replay_window != 0 ? rs.replay_window : rs.bmp_len * 32;
  } else {
    sa.replay_window = p.replay_window;
  }
  sa.soft_bytes = inf_to_zero(p.lft.soft_byte_limit);
  sa.hard_bytes = inf_to_zero(p.lft.hard_byte_limit);
  sa.soft_packets = inf_to_zero(p.lft.soft_packet_limit);
  sa.hard_packets = inf_to_zero(p.lft.hard_packet_limit);
  sa.soft_add_seconds = inf_to_zero(p.lft.soft_add_expires_seconds);
  sa.hard_add_seconds = inf_to_zero(p.lft.hard_add_expires_seconds);
  sa.update = update;
  sa.sel = selector(p.sel);
  if (at[XFRMA_IF_ID]) sa.if_id = mnl_attr_get_u32(at[XFRMA_IF_ID]);
  if (at[XFRMA_MARK]) {
    const auto mk = at.get<xfrm_mark>(XFRMA_MARK);
    sa.mark = mk.v;
    sa.mark_mask = mk.m;
  }
  return sa;
}

Event parse_delsa(const Message& m) {
  if (m.payload_len() < sizeof(xfrm_usersa_id)) {
    return Malformed{too_short<xfrm_usersa_id>(m, "xfrm_usersa_id")};
  }
  const auto id = m.fixed<xfrm_usersa_id>();
  Attrs at;
  if (!parse_attrs(m, sizeof(id), at)) return Malformed{at.error};
  if (id.family != AF_INET) return Unsupported{family_reason(id.family, "SA")};
  if (id.proto != IPPROTO_ESP) {
    return Unsupported{fmt::format("SA protocol {} is not ESP", proto_name(id.proto))};
  }
  return SaDelete{SaKey{ntohl(id.spi), ntohl(id.daddr.a4), id.proto}};
}

Event parse_expire(const Message& m) {
  if (m.payload_len() < sizeof(xfrm_user_expire)) {
    return Malformed{too_short<xfrm_user_expire>(m, "xfrm_user_expire")};
  }
  const auto ue = m.fixed<xfrm_user_expire>();
  Attrs at;
  if (!parse_attrs(m, sizeof(ue), at)) return Malformed{at.error};
  const auto& s = ue.state;
  if (s.family != AF_INET) return Unsupported{family_reason(s.family, "SA")};
  if (s.id.proto != IPPROTO_ESP) {
    return Unsupported{fmt::format("SA protocol {} is not ESP", proto_name(s.id.proto))};
  }
  return SaExpire{SaKey{ntohl(s.id.spi), ntohl(s.id.daddr.a4), s.id.proto}, ue.hard != 0};
}

Event policy_common(PolicyEvent ev, const xfrm_selector& sel, uint8_t dir, const Attrs& at) {
  if (!selector_ok(sel)) return Unsupported{family_reason(sel.family, "policy selector")};
  switch (dir) {
    case XFRM_POLICY_IN: ev.dir = PolicyDir::kIn; break;
    case XFRM_POLICY_OUT: ev.dir = PolicyDir::kOut; break;
    case XFRM_POLICY_FWD: ev.dir = PolicyDir::kFwd; break;
    default: return Unsupported{fmt::format("policy direction {} is not in/out/fwd", dir)};
  }
  ev.sel = selector(sel);
  if (const nlattr* t = at[XFRMA_TMPL]) {
    ev.tmpl_count = mnl_attr_get_payload_len(t) / sizeof(xfrm_user_tmpl);
    if (ev.tmpl_count > 0) {
      xfrm_user_tmpl ut;
      std::memcpy(&ut, mnl_attr_get_payload(t), sizeof(ut));
      ev.has_tmpl = true;
      ev.reqid = ut.reqid;
      ev.tmpl_proto = ut.id.proto;
      ev.tmpl_mode = ut.mode;
      if (ut.family == AF_INET) {
        ev.tmpl_saddr = ntohl(ut.saddr.a4);
        ev.tmpl_daddr = ntohl(ut.id.daddr.a4);
      }
    }
  }
  return ev;
}

Event parse_newpolicy(const Message& m, bool update) {
  if (m.payload_len() < sizeof(xfrm_userpolicy_info)) {
    return Malformed{too_short<xfrm_userpolicy_info>(m, "xfrm_userpolicy_info")};
  }
  const auto p = m.fixed<xfrm_userpolicy_info>();
  Attrs at;
  if (!parse_attrs(m, sizeof(p), at)) return Malformed{at.error};
  PolicyEvent ev;
  ev.kind = update ? PolicyEvent::Kind::kUpdate : PolicyEvent::Kind::kNew;
  ev.block = p.action == XFRM_POLICY_BLOCK;
  ev.index = p.index;
  ev.priority = p.priority;
  return policy_common(ev, p.sel, p.dir, at);
}

Event parse_delpolicy(const Message& m) {
  if (m.payload_len() < sizeof(xfrm_userpolicy_id)) {
    return Malformed{too_short<xfrm_userpolicy_id>(m, "xfrm_userpolicy_id")};
  }
  const auto id = m.fixed<xfrm_userpolicy_id>();
  Attrs at;
  if (!parse_attrs(m, sizeof(id), at)) return Malformed{at.error};
  PolicyEvent ev;
  ev.kind = PolicyEvent::Kind::kDelete;
  ev.index = id.index;
  xfrm_selector sel = id.sel;
  uint8_t dir = id.dir;
  if (at[XFRMA_POLICY]) {  // the kernel's notification carries the whole policy
    const auto p = at.get<xfrm_userpolicy_info>(XFRMA_POLICY);
    ev.block = p.action == XFRM_POLICY_BLOCK;
    ev.priority = p.priority;
    if (ev.index == 0) ev.index = p.index;
    if (sel.family == AF_UNSPEC) sel = p.sel;
  }
  return policy_common(ev, sel, dir, at);
}

Event parse_one(const Message& m) {
  const uint16_t type = m.nlh()->nlmsg_type;
  switch (type) {
    case XFRM_MSG_NEWSA: return parse_sa(m, false);
    case XFRM_MSG_UPDSA: return parse_sa(m, true);
    case XFRM_MSG_DELSA: return parse_delsa(m);
    case XFRM_MSG_EXPIRE: return parse_expire(m);
    case XFRM_MSG_NEWPOLICY: return parse_newpolicy(m, false);
    case XFRM_MSG_UPDPOLICY: return parse_newpolicy(m, true);
    case XFRM_MSG_DELPOLICY: return parse_delpolicy(m);
    case XFRM_MSG_FLUSHSA: {
      if (m.payload_len() < sizeof(xfrm_usersa_flush)) {
        return Malformed{too_short<xfrm_usersa_flush>(m, "xfrm_usersa_flush")};
      }
      const auto f = m.fixed<xfrm_usersa_flush>();
      Attrs at;
      if (!parse_attrs(m, sizeof(f), at)) return Malformed{at.error};
      return SaFlush{f.proto};
    }
    case XFRM_MSG_FLUSHPOLICY: {
      Attrs at;
      if (!parse_attrs(m, 0, at)) return Malformed{at.error};
      PolicyEvent ev;
      ev.kind = PolicyEvent::Kind::kFlush;
      return ev;
    }
    default:
      return Unsupported{fmt::format("{} is not followed by the mirror", msg_label(type))};
  }
}

}  // namespace

// ---------------------------------------------------------------------------
// Public: parsing

SaKey SaInfo::key() const { return SaKey{spi, daddr, IPPROTO_ESP}; }

bool SaFlush::affects_esp() const { return proto == IPPROTO_ESP || proto == IPSEC_PROTO_ANY; }

Event parse_message(const void* nlmsg, size_t len) noexcept {
  try {
    if (nlmsg == nullptr || len < sizeof(nlmsghdr)) {
      return Malformed{fmt::format("truncated netlink header: {} bytes, need {}", len,
                                   sizeof(nlmsghdr))};
    }
    nlmsghdr h;
    std::memcpy(&h, nlmsg, sizeof(h));
    if (h.nlmsg_len < sizeof(nlmsghdr)) {
      return Malformed{fmt::format("nlmsg_len {} is shorter than the netlink header", h.nlmsg_len)};
    }
    if (h.nlmsg_len > len) {
      return Malformed{fmt::format("{}: nlmsg_len {} exceeds the {} bytes received",
                                   msg_label(h.nlmsg_type), h.nlmsg_len, len)};
    }
    const Message m(nlmsg, h.nlmsg_len);
    return parse_one(m);
  } catch (const std::exception& e) {  // allocation failure: nothing else throws
    return Malformed{std::string("cannot parse: ") + e.what()};
  }
}

Dir direction_of(uint32_t saddr, uint32_t daddr, const std::function<bool(uint32_t)>& is_local) {
  const bool src_local = is_local(saddr);
  const bool dst_local = is_local(daddr);
  if (src_local == dst_local) return Dir::kUnknown;
  return src_local ? Dir::kOut : Dir::kIn;
}

namespace {

std::string lifetime_str(uint64_t soft, uint64_t hard) {
  auto one = [](uint64_t v) { return v == 0 ? std::string("none") : fmt::format("{}", v); };
  return one(soft) + "/" + one(hard);
}

std::string key_str(const SaKey& k) {
  return fmt::format("spi=0x{:08x} dst={} proto={}", k.spi, ipv4(k.daddr), proto_name(k.proto));
}

std::string selector_str(const Selector& s) {
  if (s.family == AF_UNSPEC && s.prefixlen_s == 0 && s.prefixlen_d == 0) return "any";
  std::string out = fmt::format("{}/{} -> {}/{}", ipv4(s.saddr), s.prefixlen_s, ipv4(s.daddr),
                                s.prefixlen_d);
  if (s.proto != 0) out += fmt::format(" proto {}", s.proto);
  return out;
}

struct ToString {
  std::string operator()(const SaInfo& sa) const {
    std::string out = fmt::format(
        "sa {} spi=0x{:08x} {} -> {} reqid={} aes-{}-gcm icv={} esn={} replay={}",
        sa.update ? "update" : "add", sa.spi, ipv4(sa.saddr), ipv4(sa.daddr), sa.reqid,
        sa.key_len() * 8, sa.icv_bits, sa.esn ? "yes" : "no", sa.replay_window);
    if (sa.encap_sport != 0 || sa.encap_dport != 0) {
      out += fmt::format(" udp-encap={}->{}", sa.encap_sport, sa.encap_dport);
    }
    out += fmt::format(" bytes={} packets={} seconds={}", lifetime_str(sa.soft_bytes, sa.hard_bytes),
                       lifetime_str(sa.soft_packets, sa.hard_packets),
                       lifetime_str(sa.soft_add_seconds, sa.hard_add_seconds));
    if (sa.if_id != 0) out += fmt::format(" if_id={}", sa.if_id);
    if (sa.mark != 0 || sa.mark_mask != 0) out += fmt::format(" mark=0x{:x}/0x{:x}", sa.mark, sa.mark_mask);
    return out;  // the key material is never printed
  }
  std::string operator()(const SaDelete& d) const { return "sa delete " + key_str(d.key); }
  std::string operator()(const SaExpire& e) const {
    return fmt::format("sa expire {} {}", e.hard ? "hard" : "soft", key_str(e.key));
  }
  std::string operator()(const SaFlush& f) const {
    return fmt::format("sa flush proto={}", proto_name(f.proto));
  }
  std::string operator()(const PolicyEvent& p) const {
    if (p.kind == PolicyEvent::Kind::kFlush) return "policy flush";
    const char* kind = p.kind == PolicyEvent::Kind::kNew      ? "add"
                       : p.kind == PolicyEvent::Kind::kUpdate ? "update"
                                                              : "delete";
    const char* dir = p.dir == PolicyDir::kIn ? "in" : p.dir == PolicyDir::kOut ? "out" : "fwd";
    std::string out = fmt::format("policy {} dir={} {} action={} index={} priority={}", kind, dir,
                                  selector_str(p.sel), p.block ? "block" : "allow", p.index,
                                  p.priority);
    if (p.has_tmpl) {
      out += fmt::format(" tmpl={} {} {} -> {} reqid={}", proto_name(p.tmpl_proto),
                         mode_name(p.tmpl_mode), ipv4(p.tmpl_saddr), ipv4(p.tmpl_daddr), p.reqid);
      if (p.tmpl_count > 1) out += fmt::format(" (+{} more)", p.tmpl_count - 1);
    }
    return out;
  }
  std::string operator()(const Unsupported& u) const { return "unsupported: " + u.reason; }
  std::string operator()(const Malformed& m) const { return "malformed: " + m.reason; }
};

}  // namespace

std::string to_string(const Event& ev) { return std::visit(ToString{}, ev); }

// ---------------------------------------------------------------------------
// Public: the live mirror

namespace {

struct SocketCloser {
  void operator()(mnl_socket* s) const { mnl_socket_close(s); }
};
using Socket = std::unique_ptr<mnl_socket, SocketCloser>;

constexpr size_t kRecvBuf = 64 * 1024;  // more than one dump chunk
constexpr int kEventRcvBuf = 4 * 1024 * 1024;

Socket open_socket(unsigned groups) {
  Socket s(mnl_socket_open(NETLINK_XFRM));
  if (!s) {
    const int e = errno;
    throw std::runtime_error(fmt::format(
        "xfrm: cannot open a NETLINK_XFRM socket: {}{}", std::strerror(e),
        e == EPROTONOSUPPORT ? " (this kernel has no XFRM netlink: CONFIG_XFRM_USER)" : ""));
  }
  if (mnl_socket_bind(s.get(), groups, MNL_SOCKET_AUTOPID) < 0) {
    const int e = errno;
    throw std::runtime_error(fmt::format(
        "xfrm: cannot bind the NETLINK_XFRM socket{}: {}{}",
        groups ? " to the SA/policy/expire groups" : "", std::strerror(e),
        e == EPERM ? " (needs CAP_NET_ADMIN)" : ""));
  }
  return s;
}

// Receives one datagram from the kernel. Returns its size, 0 when nothing
// is pending (non-blocking), -1 with errno otherwise (ENOSPC: truncated).
ssize_t recv_kernel(mnl_socket* s, std::vector<char>& buf, int flags) {
  for (;;) {
    sockaddr_nl from{};
    iovec iov{buf.data(), buf.size()};
    msghdr msg{};
    msg.msg_name = &from;
    msg.msg_namelen = sizeof(from);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    const ssize_t n = recvmsg(mnl_socket_get_fd(s), &msg, flags);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
      return -1;
    }
    if (msg.msg_flags & MSG_TRUNC) {
      errno = ENOSPC;
      return -1;
    }
    if (msg.msg_namelen != sizeof(from) || from.nl_pid != 0) continue;  // not the kernel
    return n;
  }
}

bool wait_readable(int fd, std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd pfd{fd, POLLIN, 0};
    const int r = ::poll(&pfd, 1, static_cast<int>(left.count()));
    if (r > 0) return true;
    if (r < 0 && errno != EINTR) {
      throw std::runtime_error(fmt::format("xfrm: poll: {}", std::strerror(errno)));
    }
  }
}

uint32_t next_seq() {
  static uint32_t seq = static_cast<uint32_t>(time(nullptr));
  return ++seq;
}

}  // namespace

struct Mirror::Impl {
  Callback cb;
  Socket events;
  Stats stats;
  std::vector<char> buf = std::vector<char>(kRecvBuf);
};

Mirror::Mirror(Callback cb) : impl_(std::make_unique<Impl>()) {
  if (!cb) throw std::invalid_argument("xfrm: Mirror needs a callback");
  impl_->cb = std::move(cb);
  const unsigned groups = (1u << (XFRMNLGRP_SA - 1)) | (1u << (XFRMNLGRP_POLICY - 1)) |
                          (1u << (XFRMNLGRP_EXPIRE - 1));
  impl_->events = open_socket(groups);
  const int fd = mnl_socket_get_fd(impl_->events.get());
  // A burst of rekeys must not overflow the queue: ask for a large buffer
  // (FORCE needs CAP_NET_ADMIN, which we have if the bind worked).
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &kEventRcvBuf, sizeof(kEventRcvBuf)) < 0) {
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &kEventRcvBuf, sizeof(kEventRcvBuf));
  }
  const int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
    throw std::runtime_error(fmt::format("xfrm: cannot make the socket non-blocking: {}",
                                         std::strerror(errno)));
  }
}

Mirror::~Mirror() = default;

int Mirror::fd() const { return mnl_socket_get_fd(impl_->events.get()); }

const Stats& Mirror::stats() const { return impl_->stats; }

void Mirror::deliver(const Event& ev) {
  Stats& s = impl_->stats;
  ++s.messages;
  std::visit(
      [&s](const auto& e) {
        using T = std::decay_t<decltype(e)>;
        if constexpr (std::is_same_v<T, SaInfo>) {
          ++(e.update ? s.sa_updated : s.sa_added);
        } else if constexpr (std::is_same_v<T, SaDelete>) {
          ++s.sa_deleted;
        } else if constexpr (std::is_same_v<T, SaExpire>) {
          ++s.expires;
        } else if constexpr (std::is_same_v<T, SaFlush>) {
          ++s.flushes;
        } else if constexpr (std::is_same_v<T, PolicyEvent>) {
          ++s.policies;
        } else if constexpr (std::is_same_v<T, Unsupported>) {
          ++s.unsupported;
        } else {
          ++s.malformed;
        }
      },
      ev);
  impl_->cb(ev);
}

size_t Mirror::poll() {
  size_t handled = 0;
  mnl_socket* s = impl_->events.get();
  for (;;) {
    const ssize_t n = recv_kernel(s, impl_->buf, MSG_DONTWAIT);
    if (n == 0) break;
    if (n < 0) {
      if (errno == ENOBUFS || errno == ENOSPC) {  // events lost: the caller must dump() again
        ++impl_->stats.overruns;
        continue;
      }
      throw std::runtime_error(fmt::format("xfrm: receiving events: {}", std::strerror(errno)));
    }
    int left = static_cast<int>(n);
    for (auto* nlh = reinterpret_cast<const nlmsghdr*>(impl_->buf.data()); mnl_nlmsg_ok(nlh, left);
         nlh = mnl_nlmsg_next(nlh, &left)) {
      if (nlh->nlmsg_type == NLMSG_NOOP || nlh->nlmsg_type == NLMSG_DONE ||
          nlh->nlmsg_type == NLMSG_ERROR) {
        continue;
      }
      deliver(parse_message(nlh, nlh->nlmsg_len));
      ++handled;
    }
    OPENSSL_cleanse(impl_->buf.data(), static_cast<size_t>(n));  // NEWSA messages carry keys
  }
  return handled;
}

namespace {

// Reads replies to request `seq` on `s` until NLMSG_DONE (dumps) or
// NLMSG_ERROR (the ack of a request, or an error). `on_msg` gets each data message. Returns the kernel's error
// (0 or a negative errno).
template <typename OnMsg>
int await_replies(mnl_socket* s, uint32_t seq, int timeout_ms, const char* what,
                  OnMsg&& on_msg) {
  std::vector<char> buf(kRecvBuf);
  WipeOnExit<std::vector<char>> wipe_buf{buf};  // dump replies carry keys
  const unsigned portid = mnl_socket_get_portid(s);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    if (!wait_readable(mnl_socket_get_fd(s), deadline)) {
      throw std::runtime_error(fmt::format("xfrm: {}: no answer from the kernel within {} ms",
                                           what, timeout_ms));
    }
    const ssize_t n = recv_kernel(s, buf, MSG_DONTWAIT);
    if (n == 0) continue;
    if (n < 0) throw std::runtime_error(fmt::format("xfrm: {}: {}", what, std::strerror(errno)));
    int left = static_cast<int>(n);
    for (auto* nlh = reinterpret_cast<const nlmsghdr*>(buf.data()); mnl_nlmsg_ok(nlh, left);
         nlh = mnl_nlmsg_next(nlh, &left)) {
      if (!mnl_nlmsg_seq_ok(nlh, seq) || !mnl_nlmsg_portid_ok(nlh, portid)) continue;
      if (nlh->nlmsg_type == NLMSG_ERROR) {
        if (mnl_nlmsg_get_payload_len(nlh) < sizeof(nlmsgerr)) return -EBADMSG;
        const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
        return err->error;  // 0: the ack of a request
      }
      if (nlh->nlmsg_type == NLMSG_DONE) {
        if (mnl_nlmsg_get_payload_len(nlh) >= sizeof(int)) {
          int e;
          std::memcpy(&e, mnl_nlmsg_get_payload(nlh), sizeof(e));
          if (e < 0) return e;
        }
        return 0;
      }
      if (nlh->nlmsg_type == NLMSG_NOOP) continue;
      on_msg(nlh);
    }
  }
}

}  // namespace

void Mirror::dump(int timeout_ms) {
  Socket s = open_socket(0);
  for (const uint16_t type : {uint16_t{XFRM_MSG_GETSA}, uint16_t{XFRM_MSG_GETPOLICY}}) {
    std::array<char, MNL_ALIGN(sizeof(nlmsghdr)) + 16> req{};
    nlmsghdr* nlh = mnl_nlmsg_put_header(req.data());
    nlh->nlmsg_type = type;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    nlh->nlmsg_seq = next_seq();
    const std::string what = fmt::format("dump ({})", msg_label(type));
    if (mnl_socket_sendto(s.get(), nlh, nlh->nlmsg_len) < 0) {
      throw std::runtime_error(fmt::format("xfrm: {}: send: {}", what, std::strerror(errno)));
    }
    const int err = await_replies(s.get(), nlh->nlmsg_seq, timeout_ms, what.c_str(),
                                  [this](const nlmsghdr* m) {
                                    deliver(parse_message(m, m->nlmsg_len));
                                  });
    if (err != 0) {
      throw std::runtime_error(fmt::format("xfrm: {}: the kernel answered: {}", what,
                                           std::strerror(-err)));
    }
  }
}

void Mirror::request(const void* nlmsg, size_t len, int timeout_ms) {
  if (len < sizeof(nlmsghdr) || len > kRecvBuf) {
    throw std::invalid_argument(fmt::format("xfrm: a request of {} bytes is not a netlink message", len));
  }
  std::vector<uint64_t> copy(len / 8 + 1);
  std::memcpy(copy.data(), nlmsg, len);
  WipeOnExit<std::vector<uint64_t>> wipe_copy{copy};  // a NEWSA request holds a key
  auto* nlh = reinterpret_cast<nlmsghdr*>(copy.data());
  if (nlh->nlmsg_len != len) throw std::invalid_argument("xfrm: request nlmsg_len does not match its size");
  nlh->nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
  nlh->nlmsg_seq = next_seq();
  Socket s = open_socket(0);
  const std::string what = fmt::format("request {}", msg_label(nlh->nlmsg_type));
  if (mnl_socket_sendto(s.get(), nlh, len) < 0) {
    const int e = errno;
    throw std::system_error(e, std::generic_category(), fmt::format("xfrm: {}: send", what));
  }
  const int err = await_replies(s.get(), nlh->nlmsg_seq, timeout_ms, what.c_str(),
                                [](const nlmsghdr*) {});
  if (err != 0) {
    throw std::system_error(-err, std::generic_category(), fmt::format("xfrm: {}", what));
  }
}

}  // namespace espgw::control::xfrm
