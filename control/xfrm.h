// The XFRM netlink mirror (Linux): follow the kernel's IPsec SAs and policies
// the way 6WIND's and fastSwan's fast paths follow an unmodified strongSwan
// (kernel-netlink backend). See docs/xfrm.md.
//
// parse_message() turns ONE netlink message into an Event; it never throws
// and never reads past the length it is given. Mirror owns a NETLINK_XFRM
// socket subscribed to the SA, policy and expire groups and feeds every
// message through parse_message() to a callback.
//
// No DPDK here: pure Linux netlink + libmnl + std.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "crypto/secret.h"

namespace espgw::control::xfrm {

// XFRM SAs have no direction: the caller decides it from the outer addresses
// (see direction_of()).
enum class Dir : uint8_t { kUnknown, kIn, kOut };

// How the kernel identifies an SA: (spi, daddr, proto).
struct SaKey {
  uint32_t spi;    // host order
  uint32_t daddr;  // host order
  uint8_t proto;   // IPPROTO_ESP for everything we mirror
  friend bool operator==(const SaKey&, const SaKey&) = default;
};

// A traffic selector (struct xfrm_selector), IPv4 view. family is AF_INET or
// AF_UNSPEC (0: "any", what strongSwan puts in tunnel-mode SAs).
struct Selector {
  uint32_t saddr = 0, daddr = 0;  // host order
  uint8_t prefixlen_s = 0, prefixlen_d = 0;
  uint8_t proto = 0;              // 0 = any
  uint16_t sport = 0, dport = 0;  // host order; 0 = any
  uint16_t family = 0;
  friend bool operator==(const Selector&, const Selector&) = default;
};

// An ESP SA we can mirror: ESP, IPv4 outer, tunnel mode, rfc4106(gcm(aes))
// with a 128-bit ICV.
struct SaInfo {
  uint32_t spi = 0;                // host order
  uint32_t saddr = 0, daddr = 0;   // outer addresses, host order (IPv4 only for now)
  uint32_t reqid = 0;
  crypto::SecretBytes keymat;      // key || 4-byte salt (16+4 or 32+4 bytes); wipes itself
  uint32_t icv_bits = 128;         // always 128 for a mirrored SA
  bool esn = false;                // XFRM_STATE_ESN flag
  // Anti-replay window in packets: XFRMA_REPLAY_ESN_VAL's replay_window
  // (falling back to bmp_len*32 when that is 0), else
  // xfrm_usersa_info.replay_window. 0 = no anti-replay.
  uint32_t replay_window = 0;
  uint16_t encap_sport = 0, encap_dport = 0;  // XFRMA_ENCAP UDP_ENCAP_ESPINUDP, host order; 0 = none
  // xfrm_lifetime_cfg; XFRM_INF (unlimited) is mapped to 0 = none.
  uint64_t soft_bytes = 0, hard_bytes = 0, soft_packets = 0, hard_packets = 0,
           soft_add_seconds = 0, hard_add_seconds = 0;
  bool update = false;             // XFRM_MSG_UPDSA rather than NEWSA (or a dump reply)
  Selector sel;                    // the SA's selector (often "any" in tunnel mode)
  uint32_t if_id = 0;              // XFRMA_IF_ID (XFRM interfaces); 0 = none
  uint32_t mark = 0, mark_mask = 0;  // XFRMA_MARK; 0/0 = none

  size_t key_len() const { return keymat.size() >= 4 ? keymat.size() - 4 : 0; }  // 16 or 32
  SaKey key() const;
};

struct SaDelete {
  SaKey key;
};

// XFRM_MSG_EXPIRE. hard = true: the kernel has already removed the SA (no
// DELSA follows); soft: the IKE daemon is expected to rekey.
struct SaExpire {
  SaKey key;
  bool hard = false;
};

// XFRM_MSG_FLUSHSA: every SA of `proto` is gone (IPSEC_PROTO_ANY, 255, is
// what `ip xfrm state flush` sends: AH, ESP and IPComp).
struct SaFlush {
  uint8_t proto = 0;
  bool affects_esp() const;  // proto is IPPROTO_ESP or IPSEC_PROTO_ANY
};

enum class PolicyDir : uint8_t { kIn, kOut, kFwd };

// Policies are informational for now (espgw's routes come from its own
// config), but they are parsed and counted.
struct PolicyEvent {
  enum class Kind : uint8_t { kNew, kUpdate, kDelete, kFlush };
  Kind kind = Kind::kNew;
  Selector sel;                    // src/dst prefixes (zero for kFlush)
  PolicyDir dir = PolicyDir::kOut;
  bool block = false;              // action XFRM_POLICY_BLOCK rather than ALLOW
  uint32_t index = 0, priority = 0;
  // First template (XFRMA_TMPL), if any: what the policy asks for.
  bool has_tmpl = false;
  uint32_t reqid = 0;
  uint8_t tmpl_proto = 0, tmpl_mode = 0;
  uint32_t tmpl_saddr = 0, tmpl_daddr = 0;  // tunnel endpoints, host order
  size_t tmpl_count = 0;
};

// A well-formed message we do not mirror: non-ESP proto, not
// rfc4106(gcm(aes)) (e.g. cbc(aes)+hmac), IPv6, transport mode, ICV != 128,
// compression, a message type we don't follow...
struct Unsupported {
  std::string reason;
};

// A message that is not what the kernel sends: truncated, bad lengths,
// attributes past the end, wrong key length.
struct Malformed {
  std::string reason;
};

// The first six alternatives are in the order the brief fixed; SaFlush was
// added at the end.
using Event = std::variant<SaInfo, SaDelete, SaExpire, PolicyEvent, Unsupported, Malformed, SaFlush>;

// Parses ONE netlink message (the same function the live socket path uses).
// Never throws, never reads past `len`; `nlmsg` needs no alignment.
Event parse_message(const void* nlmsg, size_t len) noexcept;

// For logs: never prints key bytes.
std::string to_string(const Event& ev);

// The direction of an SA for this gateway: kOut when saddr is one of our
// addresses (we encrypt towards daddr), kIn when daddr is (we decrypt),
// kUnknown when neither or both.
Dir direction_of(uint32_t saddr, uint32_t daddr, const std::function<bool(uint32_t)>& is_local);

// Counters of what the mirror saw (every event delivered to the callback is
// counted once).
struct Stats {
  uint64_t sa_added = 0, sa_updated = 0, sa_deleted = 0, expires = 0, policies = 0,
           unsupported = 0, malformed = 0;
  uint64_t flushes = 0;    // SaFlush events
  uint64_t overruns = 0;   // ENOBUFS on the event socket: events were lost, dump() again
  uint64_t messages = 0;   // netlink messages parsed (== sum of the event counters)
};

// The live mirror: a NETLINK_XFRM socket (libmnl) bound to XFRMNLGRP_SA,
// XFRMNLGRP_POLICY and XFRMNLGRP_EXPIRE.
//
// Start-up sync: construct (subscribes first), then dump(): SAs that change
// while the dump runs are queued on the event socket and replayed by the next
// poll(), so applying "dump, then events" in order ends in the kernel's state.
class Mirror {
 public:
  using Callback = std::function<void(const Event&)>;

  // Throws std::runtime_error with the reason (EPERM without CAP_NET_ADMIN,
  // EPROTONOSUPPORT on a kernel without XFRM).
  explicit Mirror(Callback cb);
  ~Mirror();
  Mirror(const Mirror&) = delete;
  Mirror& operator=(const Mirror&) = delete;

  // The event socket, for epoll (readable = call poll()).
  int fd() const;

  // Synchronous dump of the current SAs (XFRM_MSG_GETSA, NLM_F_DUMP) and then
  // policies (XFRM_MSG_GETPOLICY), on a separate socket; each reply goes to
  // the callback. Throws std::runtime_error if the kernel answers an error or
  // does not finish within `timeout_ms`.
  void dump(int timeout_ms = 5000);

  // Non-blocking: processes every pending event (multipart too) and returns
  // the number of netlink messages handled. On ENOBUFS (events were lost)
  // stats().overruns grows: the caller should dump() again.
  size_t poll();

  const Stats& stats() const;

  // Sends one request on a separate socket and waits for the kernel's ack
  // (throws std::system_error with the kernel's errno on failure). Used by
  // the tests to install SAs/policies; not needed to mirror.
  static void request(const void* nlmsg, size_t len, int timeout_ms = 2000);

 private:
  void deliver(const Event& ev);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace espgw::control::xfrm
