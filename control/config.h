// The gateway's configuration model, loaded from YAML (see docs/config.md).
//
// Loading validates everything before any port starts: a bad file raises
// ConfigError whose message names the field (a YAML path such as
// "tunnels[2].remote") and the reason.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "crypto/secret.h"

namespace espgw::control {

class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct MacAddr {
  uint8_t b[6];
};

struct Ipv4Prefix {
  uint32_t addr;  // host byte order
  uint8_t len;
};

enum class PortRole : uint8_t { kProtected, kUnprotected };

struct NeighborConfig {           // a static ARP entry
  uint32_t ip;
  MacAddr mac;
};

struct PortConfig {
  std::string name;                 // how tunnels and the rest refer to it
  std::string device;               // PCI address ("0000:3b:00.0") or vdev string ("net_pcap0,rx_pcap=a.pcap")
  PortRole role;
  std::vector<uint32_t> addresses;  // this gateway's IPv4 addresses on the port (answers ARP for them)
  std::optional<MacAddr> mac;       // override the port's MAC
  std::optional<MacAddr> peer_mac;  // protected: the LAN next hop for decrypted traffic
  std::optional<uint32_t> peer_ip;  // protected: LAN next hop IP (resolved by ARP when peer_mac is absent)
  std::vector<uint8_t> prefix_lens; // per address: its connected subnet's length ("10.0.0.1/24"); 0: bare address
  std::optional<uint32_t> gateway;  // default next hop for off-link destinations (protected: same as peer_ip)
  std::vector<NeighborConfig> neighbors;  // static entries
  uint32_t neighbor_timeout_s = 300;      // a learned MAC is re-confirmed by ARP after this long
  uint16_t mtu = 1500;              // IP MTU of the link
  uint16_t rx_desc = 1024;
  uint16_t tx_desc = 1024;
};

enum class DfPolicyConfig : uint8_t { kCopy, kSet, kClear };

struct TunnelConfig {
  std::string name;
  std::string port;                 // an unprotected port
  uint32_t local;                   // outer source: one of the port's addresses
  uint32_t remote;                  // outer destination: the peer's endpoint
  std::optional<uint32_t> gateway;  // L2 next hop IP if the peer is not on-link (default: remote)
  std::optional<MacAddr> next_hop_mac;  // static; otherwise resolved by ARP
  bool udp_encap = false;           // RFC 3948 ESP-in-UDP
  uint16_t udp_src_port = 4500;
  uint16_t udp_dst_port = 4500;
  uint8_t ttl = 64;
  int16_t dscp = -1;                // -1: copy inner
  DfPolicyConfig df = DfPolicyConfig::kCopy;
  uint16_t mtu = 0;                 // 0: port MTU; the inner limit is derived from it
  uint16_t mss_clamp = 0;           // 0: off; else clamp TCP SYN MSS to this value
  bool up = true;                   // administrative state at start
  // An SA's IKE traffic selectors (add-sa traffic_selectors) become its
  // enforced selectors; on a route-based tunnel they are recorded only.
  bool policy_based = false;
};

struct RouteHopConfig {
  std::string tunnel;
  uint32_t priority;
};

struct RouteConfig {
  Ipv4Prefix prefix;
  std::vector<RouteHopConfig> via;  // in configuration order (tie break)
};

enum class SaDirection : uint8_t { kInbound, kOutbound };
enum class SaAlgo : uint8_t { kAes128Gcm, kAes256Gcm };

struct SaConfig {
  SaDirection direction;
  uint32_t spi;
  std::string tunnel;
  SaAlgo algo;
  crypto::SecretBytes keymat;       // key || 4-byte salt (20 or 36 bytes)
  bool esn = false;
  uint32_t replay_window = 1024;    // inbound only; 0 disables, max 4096
  uint64_t initial_seq = 1;         // outbound only
  // Policy-based SA (one SA over one CIDR each side): inner packets must lie
  // inside these selectors. Empty: route-based (the tunnel's routes decide).
  std::vector<Ipv4Prefix> local_selectors;
  std::vector<Ipv4Prefix> remote_selectors;
  std::string position;             // "file:line:col" of the entry, for messages after loading
};

struct ExceptionConfig {
  bool enabled = false;
  std::string device = "net_tap0,iface=espgw0";  // where the host's IKE daemon lives
};

struct XfrmConfig {
  bool enabled = false;             // mirror the kernel's ESP SAs (an unmodified strongSwan drives espgw)
};

struct ControlConfig {
  std::string socket_path = "/run/espgw/espgw.sock";
  std::string socket_group;         // empty: the process's group
};

struct GatewayConfig {
  std::vector<std::string> eal_args;  // passed to rte_eal_init as is
  std::vector<uint32_t> worker_lcores;  // empty: every lcore but the main one
  uint32_t mbufs = 16384;
  uint16_t icmp_rate_limit_pps = 100;  // ICMP errors the gateway may send per second
  std::vector<PortConfig> ports;
  std::vector<TunnelConfig> tunnels;
  std::vector<RouteConfig> routes;
  std::vector<SaConfig> sas;
  ExceptionConfig exception;
  ControlConfig control;
  XfrmConfig xfrm;
  uint32_t stats_interval_s = 0;    // 0: print counters only at exit
  // Not errors, but setups that cannot work as they stand (e.g. inbound SAs
  // whose decrypted traffic no route can accept): --check prints them.
  std::vector<std::string> warnings;
};

// The largest configuration file read (a key file, not a data set; 10,000
// tunnels with their SAs take a few MB; a full route table goes in
// routes_file).
inline constexpr size_t kMaxConfigBytes = 16 << 20;
// The largest routes_file read (one "PREFIX TUNNEL [PRIORITY]" per line: a
// full table of ~1M prefixes is ~30 MB).
inline constexpr size_t kMaxRoutesFileBytes = 256 << 20;

// How many workers the config asks for: workers: when given, else the
// lcores of the eal: list (-l, --lcores, -c) but the main one; nullopt when
// the file leaves it to EAL (every CPU the process may run on).
std::optional<size_t> configured_workers(const GatewayConfig& cfg);

// Mbufs the pool must hold so that no RX ring starves: for every port (the
// exception port included) each worker's RX and TX ring, each lcore's
// mempool cache (up to 1.5 x 256 objects), and bursts in flight.
uint64_t mbufs_needed(const GatewayConfig& cfg, size_t workers);

// The checks that depend on this host: when the file leaves the worker
// count to EAL, the mbuf check with every CPU this process may run on (the
// loader assumed one worker). Throws ConfigError. --check and the daemon
// run it after loading.
void check_on_this_host(const GatewayConfig& cfg, const std::string& source_name);

// Parses and validates; throws ConfigError. `source_name` is used in messages.
GatewayConfig parse_config(const std::string& yaml_text, const std::string& source_name = "<config>");
GatewayConfig load_config_file(const std::string& path);

// The embedded default: the interop guide's four-tunnel topology on virtual
// devices, no NIC and no hugepages (what `espgw` runs without --config).
const char* embedded_default_config();

std::string format_ipv4(uint32_t host_order);
std::string format_mac(const MacAddr&);

}  // namespace espgw::control
