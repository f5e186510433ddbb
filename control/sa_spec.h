// One SA specification and one validator for every source of SAs.
//
// The config file (sas:), the control socket (add-sa / update-sa), the XFRM
// mirror (NEWSA / UPDSA) and the charon plugin all build an SaSpec and pass
// it through validate_sa_spec(). Nothing else builds the SA database's
// input (SaParams), so what is checked on the way in is written once, here.
//
// Identity: an SA is (direction, SPI, destination). The identity owns the
// mutable state (next sequence number, replay window, counters, lifetime
// usage). Installing an SaSpec creates an identity; SaUpdate changes only
// what may change during an SA's life (NAT-T ports and outer addresses after
// a NAT rebinding or a MOBIKE move, lifetimes); a different key under the
// same SPI is refused. Nothing moves a sequence number backwards or resets
// a window.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "control/config.h"
#include "crypto/secret.h"

namespace espgw::control {

// Why an SA request was refused; the message is the reason a user sees
// (never key bytes).
class SaError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The SA a request names does not exist (the control socket adds
// "code":"not-found", so an IKE agent can tell "already gone", e.g. after a
// hard expiry, from a real failure).
class SaNotFound : public SaError {
 public:
  using SaError::SaError;
};

// Who installed an SA. The identity keeps the origin it was first installed
// with (a later reconcile from another source does not take it over), so
// the XFRM mirror's flush removes only what it mirrored.
enum class SaOrigin : uint8_t { kConfig, kSocket, kXfrm, kPlugin };

const char* to_string(SaOrigin o);

struct SaLifetime {
  uint64_t bytes = 0;    // 0 = no limit
  uint64_t packets = 0;
  uint64_t seconds = 0;
  bool operator==(const SaLifetime&) const = default;
};

// RFC 3948 UDP encapsulation, from this gateway's point of view: `local` is
// our UDP port, `remote` the peer's. (For an outbound SA: source, destination;
// for inbound: destination, source.) Both 1..65535.
struct UdpEncap {
  uint16_t local = 4500;
  uint16_t remote = 4500;
  bool operator==(const UdpEncap&) const = default;
};

// What a source asks for, before validation. Optional fields left empty take
// the tunnel's settings (encapsulation and ports) or the defaults
// (replay_window 1024, seq 1).
struct SaSpec {
  SaDirection direction = SaDirection::kOutbound;
  uint32_t spi = 0;
  std::string tunnel;                        // a tunnel name; empty: resolved from src/dst
  // The SA's outer addresses as an IKE daemon names them (outbound: src =
  // our tunnel-local address, dst = the peer; inbound: the reverse). Without
  // `tunnel` both are required and name the tunnel; with it, they must agree.
  std::optional<uint32_t> src, dst;
  SaAlgo algo = SaAlgo::kAes128Gcm;
  crypto::SecretBytes keymat;                // key || 4-byte salt
  bool esn = false;
  std::optional<uint32_t> replay_window;     // inbound only: 0 (off) or 32..4096
  std::optional<uint64_t> initial_seq;       // outbound only: >= 1; < 2^32 without ESN
  std::optional<UdpEncap> encap;             // must agree with the tunnel's udp_encap
  // The source says explicitly "plain ESP" (an XFRM SA without an encap
  // template, a socket request with "encap": false): refused on an
  // ESP-in-UDP tunnel. Neither this nor `encap`: the tunnel's setting.
  bool plain_esp = false;
  SaOrigin origin = SaOrigin::kSocket;
  SaLifetime soft, hard;                     // soft <= hard for every limit both set
  std::vector<Ipv4Prefix> local_selectors;   // inbound only (policy-based); both or neither
  std::vector<Ipv4Prefix> remote_selectors;
};

// What may change on a live SA. Every field but the identity is optional;
// an update with nothing to change is refused.
struct SaUpdate {
  SaDirection direction = SaDirection::kOutbound;
  uint32_t spi = 0;
  std::string tunnel;                        // empty: named by dst
  std::optional<uint32_t> dst;               // the identity's destination (see SaSpec::dst)
  std::optional<UdpEncap> encap;             // NAT rebinding: new ports
  std::optional<uint32_t> remote_addr;       // MOBIKE / NAT: the peer's new outer address
  std::optional<SaLifetime> soft, hard;
};

// The tunnel facts the validator needs (from the config's tunnels:).
struct TunnelDefaults {
  std::string name;
  uint32_t local = 0, remote = 0;            // outer addresses, host order
  bool udp_encap = false;
  uint16_t udp_local_port = 4500;            // tunnels[].udp_src_port
  uint16_t udp_remote_port = 4500;           // tunnels[].udp_dst_port
};

// A validated SA, ready for SaDatabase::add(): tunnel resolved to its
// index, tunnel defaults applied, every constraint checked.
struct SaParams {
  SaDirection direction = SaDirection::kOutbound;
  uint32_t spi = 0;
  uint16_t tunnel = 0;
  SaAlgo algo = SaAlgo::kAes128Gcm;
  crypto::SecretBytes keymat;
  bool esn = false;
  uint32_t replay_window = 1024;             // inbound
  uint64_t initial_seq = 1;                  // outbound
  std::optional<UdpEncap> encap;             // empty: plain ESP (IP protocol 50)
  uint32_t local_addr = 0, remote_addr = 0;  // outer addresses (tunnel's, or an update's)
  SaLifetime soft, hard;
  std::vector<Ipv4Prefix> local_selectors, remote_selectors;
  SaOrigin origin = SaOrigin::kSocket;
};

// The validator's view of the config's tunnels (index = tunnel index).
std::vector<TunnelDefaults> tunnel_defaults(const std::vector<TunnelConfig>& tunnels);

// The SaSpec of a config file entry (origin kConfig).
SaSpec sa_spec_from_config(const SaConfig& c);

// Largest first sequence number of an ESN SA: numbers >= 2^63 are reserved
// for the SA database's counter handover (an ESN SA cannot get there: 2^63
// packets take centuries at any packet rate).
inline constexpr uint64_t kEsnSeqReserved = uint64_t{1} << 63;

// The tunnel an SA named by its outer addresses belongs to: the one tunnel
// whose (local, remote) is (src, dst) outbound or (dst, src) inbound. With a
// tunnel name, checks that the addresses given agree with it. Returns the
// tunnel's index; throws SaError.
size_t resolve_sa_tunnel(SaDirection dir, const std::string& tunnel, std::optional<uint32_t> src,
                         std::optional<uint32_t> dst, std::span<const TunnelDefaults> tunnels);

// Checks `spec` against the tunnels and returns the SA to install, or throws
// SaError naming the field and the reason. Pure: no state is read or changed.
SaParams validate_sa_spec(const SaSpec& spec, std::span<const TunnelDefaults> tunnels);

// Checks an update's fields (not whether the SA exists: the database does).
void validate_sa_update(const SaUpdate& update, std::span<const TunnelDefaults> tunnels);

// Soft <= hard for every limit both set (an update's merged lifetimes).
void validate_sa_lifetimes(const SaLifetime& soft, const SaLifetime& hard);

// SPI as written in the control API and the config: a JSON/YAML integer, or
// the one documented string form "0x" followed by 1..8 hex digits. Anything
// else (octal, signs, spaces, decimal strings) is refused.
std::optional<uint32_t> parse_spi_string(std::string_view s);

}  // namespace espgw::control
