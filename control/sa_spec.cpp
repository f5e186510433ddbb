// The one SA validator (see sa_spec.h). Messages name the field and the
// reason and never contain key bytes.
#include "control/sa_spec.h"

#include <fmt/format.h>

#include "crypto/aead.h"
#include "dataplane/replay_window.h"
#include "dataplane/sa.h"

namespace espgw::control {
namespace dp = espgw::dataplane;

namespace {

constexpr uint32_t kMinSpi = 256;  // 0 reserved (RFC 4303 §2.1), 1..255 reserved by IANA

const char* algo_name(SaAlgo a) { return a == SaAlgo::kAes128Gcm ? "aes128-gcm" : "aes256-gcm"; }

crypto::AeadAlgo to_aead(SaAlgo a) {
  return a == SaAlgo::kAes128Gcm ? crypto::AeadAlgo::kAes128Gcm : crypto::AeadAlgo::kAes256Gcm;
}

bool is_unicast_host(uint32_t a) {
  uint8_t first = static_cast<uint8_t>(a >> 24);
  return first != 0 && first != 127 && first < 224;
}

void check_spi(uint32_t spi) {
  if (spi == 0) throw SaError("spi: 0 is reserved (RFC 4303 §2.1)");
  if (spi < kMinSpi) throw SaError(fmt::format("spi: {} is in 1..255, reserved by IANA", spi));
}

const TunnelDefaults& find_tunnel(const std::string& name, std::span<const TunnelDefaults> tunnels) {
  for (const auto& t : tunnels)
    if (t.name == name) return t;
  throw SaError(fmt::format("tunnel: unknown tunnel '{}'", name));
}

constexpr uint16_t kIkePort = 500;  // dataplane/esp.h: never parsed as ESP-in-UDP

void check_encap_ports(const UdpEncap& e, SaDirection dir) {
  if (e.local == 0 || e.remote == 0)
    throw SaError(fmt::format("encap: UDP ports must be 1..65535 (local {}, remote {})", e.local, e.remote));
  // UDP to our port 500 is IKE (no non-ESP marker there): the data plane
  // never takes it for ESP, so such an inbound SA would never match.
  if (dir == SaDirection::kInbound && e.local == kIkePort)
    throw SaError("encap: an inbound SA cannot receive on UDP port 500 (IKE's port, never taken for ESP-in-UDP; "
                  "RFC 3948 uses 4500)");
}

}  // namespace

// Per limit: a soft limit above the hard one would never fire before the SA dies.
void validate_sa_lifetimes(const SaLifetime& soft, const SaLifetime& hard) {
  auto one = [](const char* what, uint64_t s, uint64_t h) {
    if (s && h && s > h)
      throw SaError(fmt::format("lifetime: soft {} limit {} is larger than the hard limit {}", what, s, h));
  };
  one("bytes", soft.bytes, hard.bytes);
  one("packets", soft.packets, hard.packets);
  one("seconds", soft.seconds, hard.seconds);
}

namespace {

uint32_t prefix_mask(uint8_t len) { return len == 0 ? 0 : ~uint32_t{0} << (32 - len); }

void check_selectors(const char* field, const std::vector<Ipv4Prefix>& sel) {
  if (sel.size() > dp::kMaxSelectors)
    throw SaError(fmt::format("{}: {} prefixes; at most {} per side", field, sel.size(), dp::kMaxSelectors));
  for (const auto& p : sel) {
    if (p.len > 32) throw SaError(fmt::format("{}: prefix length {} is above 32", field, p.len));
    if (p.addr & ~prefix_mask(p.len))
      throw SaError(fmt::format("{}: host bits set in {}/{}", field, format_ipv4(p.addr), p.len));
  }
}

}  // namespace

const char* to_string(SaOrigin o) {
  switch (o) {
    case SaOrigin::kConfig: return "config";
    case SaOrigin::kSocket: return "socket";
    case SaOrigin::kXfrm: return "xfrm";
    case SaOrigin::kPlugin: return "plugin";
  }
  return "?";
}

std::vector<TunnelDefaults> tunnel_defaults(const std::vector<TunnelConfig>& tunnels) {
  std::vector<TunnelDefaults> out;
  out.reserve(tunnels.size());
  for (const auto& t : tunnels) out.push_back({t.name, t.local, t.remote, t.udp_encap, t.udp_src_port, t.udp_dst_port});
  return out;
}

SaSpec sa_spec_from_config(const SaConfig& c) {
  SaSpec s;
  s.direction = c.direction;
  s.spi = c.spi;
  s.tunnel = c.tunnel;
  s.algo = c.algo;
  s.keymat = c.keymat;
  s.esn = c.esn;
  if (c.direction == SaDirection::kInbound) s.replay_window = c.replay_window;
  else s.initial_seq = c.initial_seq;
  s.local_selectors = c.local_selectors;
  s.remote_selectors = c.remote_selectors;
  s.origin = SaOrigin::kConfig;
  return s;
}

size_t resolve_sa_tunnel(SaDirection dir, const std::string& tunnel, std::optional<uint32_t> src,
                         std::optional<uint32_t> dst, std::span<const TunnelDefaults> tunnels) {
  const bool in = dir == SaDirection::kInbound;
  if (!tunnel.empty()) {
    const TunnelDefaults& t = find_tunnel(tunnel, tunnels);
    const uint32_t want_src = in ? t.remote : t.local, want_dst = in ? t.local : t.remote;
    if ((src && *src != want_src) || (dst && *dst != want_dst))
      throw SaError(fmt::format("tunnel '{}' runs from {} to {} ({}), not from {} to {}", t.name,
                                format_ipv4(want_src), format_ipv4(want_dst), in ? "inbound" : "outbound",
                                src ? format_ipv4(*src) : std::string("?"), dst ? format_ipv4(*dst) : std::string("?")));
    return static_cast<size_t>(&t - tunnels.data());
  }
  if (!src || !dst) throw SaError("name the SA's tunnel: give 'tunnel', or both 'src' and 'dst'");
  size_t found = tunnels.size();
  for (size_t i = 0; i < tunnels.size(); i++) {
    const TunnelDefaults& t = tunnels[i];
    const bool match = in ? (t.remote == *src && t.local == *dst) : (t.local == *src && t.remote == *dst);
    if (!match) continue;
    if (found != tunnels.size())
      throw SaError(fmt::format("tunnels '{}' and '{}' both run from {} to {}: name the tunnel", tunnels[found].name,
                                t.name, format_ipv4(*src), format_ipv4(*dst)));
    found = i;
  }
  if (found == tunnels.size())
    throw SaError(fmt::format("no tunnel from {} to {}", format_ipv4(*src), format_ipv4(*dst)));
  return found;
}

SaParams validate_sa_spec(const SaSpec& spec, std::span<const TunnelDefaults> tunnels) {
  const bool in = spec.direction == SaDirection::kInbound;
  check_spi(spec.spi);
  const TunnelDefaults& t = tunnels[resolve_sa_tunnel(spec.direction, spec.tunnel, spec.src, spec.dst, tunnels)];

  const size_t want = crypto::keymat_len(to_aead(spec.algo));
  if (spec.keymat.size() != want)
    throw SaError(fmt::format("key: {} needs {} bytes ({} hex digits: {}-byte key || 4-byte salt), got {} bytes",
                              algo_name(spec.algo), want, 2 * want, want - crypto::kSaltLen, spec.keymat.size()));
  {
    uint8_t acc = 0;  // the AES key part; an all-zero keymat has an all-zero key part too
    for (size_t i = 0; i + crypto::kSaltLen < want; i++) acc |= spec.keymat[i];
    if (acc == 0) throw SaError("key: the AES key is all zeros (a placeholder, not a negotiated key)");
  }

  SaParams p;
  p.direction = spec.direction;
  p.spi = spec.spi;
  p.tunnel = static_cast<uint16_t>(&t - tunnels.data());
  p.algo = spec.algo;
  p.keymat = spec.keymat;
  p.esn = spec.esn;
  p.origin = spec.origin;
  p.local_addr = t.local;
  p.remote_addr = t.remote;

  if (spec.replay_window) {
    if (!in) throw SaError("replay_window: applies to inbound SAs only");
    uint32_t w = *spec.replay_window;
    if (w != 0 && (w < dp::ReplayWindow::kMinWindow || w > dp::ReplayWindow::kMaxWindow))
      throw SaError(fmt::format("replay_window: {} is neither 0 (off) nor in {}..{}", w, dp::ReplayWindow::kMinWindow,
                                dp::ReplayWindow::kMaxWindow));
    p.replay_window = w;
  }
  if (spec.initial_seq) {
    if (in) throw SaError("seq: the first sequence number applies to outbound SAs only");
    uint64_t s = *spec.initial_seq;
    if (s == 0) throw SaError("seq: sequence numbers start at 1 (RFC 4303 §3.3.3)");
    if (!spec.esn && s >= dp::kSeqLimitNoEsn)
      throw SaError(fmt::format("seq: {} does not fit in 32 bits and the SA has no ESN", s));
    if (spec.esn && s >= kEsnSeqReserved) throw SaError(fmt::format("seq: {} is at or above 2^63", s));
    p.initial_seq = s;
  }

  if (!spec.local_selectors.empty() || !spec.remote_selectors.empty()) {
    if (!in)
      throw SaError("local_selectors/remote_selectors: apply to inbound SAs only (outbound traffic is chosen by routes)");
    if (spec.local_selectors.empty() || spec.remote_selectors.empty())
      throw SaError("a policy-based SA needs both local_selectors and remote_selectors (or neither: route-based)");
    check_selectors("local_selectors", spec.local_selectors);
    check_selectors("remote_selectors", spec.remote_selectors);
    p.local_selectors = spec.local_selectors;
    p.remote_selectors = spec.remote_selectors;
  }

  if (spec.encap && spec.plain_esp) throw SaError("encap: both UDP encapsulation and plain ESP were requested");
  if (spec.encap) {
    check_encap_ports(*spec.encap, spec.direction);
    if (!t.udp_encap)
      throw SaError(fmt::format("encap: tunnel '{}' runs plain ESP (udp_encap: false); a UDP-encapsulated SA on it "
                                "would never match",
                                t.name));
    p.encap = *spec.encap;
  } else if (spec.plain_esp) {
    if (t.udp_encap)
      throw SaError(fmt::format("encap: tunnel '{}' runs ESP-in-UDP (udp_encap: true); a plain ESP SA on it would "
                                "never match",
                                t.name));
  } else if (t.udp_encap) {
    p.encap = UdpEncap{t.udp_local_port, t.udp_remote_port};
    check_encap_ports(*p.encap, spec.direction);
  }

  validate_sa_lifetimes(spec.soft, spec.hard);
  p.soft = spec.soft;
  p.hard = spec.hard;
  return p;
}

void validate_sa_update(const SaUpdate& u, std::span<const TunnelDefaults> tunnels) {
  check_spi(u.spi);
  if (u.tunnel.empty() && !u.dst) throw SaError("update: name the SA by 'tunnel' or 'dst'");
  const TunnelDefaults* t = u.tunnel.empty() ? nullptr : &find_tunnel(u.tunnel, tunnels);
  if (!u.encap && !u.remote_addr && !u.soft && !u.hard)
    throw SaError("update: nothing to change (give encap, remote address or lifetimes)");
  if (u.encap) {
    check_encap_ports(*u.encap, u.direction);
    // Named by dst only: the database checks the SA itself (a plain-ESP SA
    // cannot take UDP ports).
    if (t && !t->udp_encap)
      throw SaError(fmt::format("encap: tunnel '{}' runs plain ESP (udp_encap: false)", t->name));
  }
  if (u.remote_addr && !is_unicast_host(*u.remote_addr))
    throw SaError(fmt::format("remote address: {} is not a unicast host address", format_ipv4(*u.remote_addr)));
  if (u.soft && u.hard) validate_sa_lifetimes(*u.soft, *u.hard);
}

std::optional<uint32_t> parse_spi_string(std::string_view s) {
  if (s.size() < 3 || s.size() > 10 || s[0] != '0' || (s[1] != 'x' && s[1] != 'X')) return std::nullopt;
  uint32_t v = 0;
  for (char c : s.substr(2)) {
    uint32_t d;
    if (c >= '0' && c <= '9') d = static_cast<uint32_t>(c - '0');
    else if (c >= 'a' && c <= 'f') d = static_cast<uint32_t>(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') d = static_cast<uint32_t>(c - 'A' + 10);
    else return std::nullopt;
    v = v << 4 | d;
  }
  return v;
}

}  // namespace espgw::control
