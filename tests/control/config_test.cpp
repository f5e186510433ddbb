// Tests for the YAML configuration loader (control/config.cpp).
#include "control/config.h"
#include "dataplane/counters.h"

#include <fmt/format.h>

#include <gtest/gtest.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>

#ifndef ESPGW_SOURCE_ROOT
#error "ESPGW_SOURCE_ROOT must be defined by the build (meson.project_source_root())"
#endif

namespace espgw::control {
namespace {

const char* kBase = R"(
ports:
  - { name: lan, device: "net_tap0,iface=l", role: protected, addresses: [10.0.0.1], peer_ip: 10.0.0.2 }
  - { name: wan, device: "net_tap1,iface=w", role: unprotected, addresses: [198.51.100.10, 198.51.100.11] }
tunnels:
  - { name: t1, port: wan, local: 198.51.100.10, remote: 203.0.113.1 }
  - { name: t2, port: wan, local: 198.51.100.11, remote: 203.0.113.2 }
  - { name: t3, port: wan, local: 198.51.100.11, remote: 203.0.113.3 }
routes:
  - { prefix: 172.31.0.0/16, via: [ { tunnel: t1, priority: 10 }, { tunnel: t2, priority: 20 } ] }
sas:
  - { direction: out, spi: 0x1001, tunnel: t1, algo: aes128-gcm, key: "0x000102030405060708090a0b0c0d0e0f10111213" }
  - { direction: in,  spi: 0x2001, tunnel: t1, algo: aes128-gcm, key: "101112131415161718191a1b1c1d1e1f20212223" }
)";

YAML::Node base() { return YAML::Load(kBase); }

std::string dump(const YAML::Node& n) {
  YAML::Emitter e;
  e << n;
  return e.c_str();
}

// The ConfigError message of parsing `text`, or "" (and a test failure) if it parses.
std::string error_of(const std::string& text) {
  try {
    parse_config(text, "test.yaml");
  } catch (const ConfigError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a ConfigError for:\n" << text;
  return "";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string example(const char* name) { return std::string(ESPGW_SOURCE_ROOT) + "/examples/" + name; }

// Everything in a config, as text: equal configs give equal strings, and a
// difference shows in the test output.
std::string describe(const GatewayConfig& c) {
  std::ostringstream o;
  auto pfx = [](const Ipv4Prefix& p) { return format_ipv4(p.addr) + "/" + std::to_string(p.len); };
  auto opt_mac = [](const std::optional<MacAddr>& m) { return m ? format_mac(*m) : std::string("-"); };
  auto opt_ip = [](const std::optional<uint32_t>& a) { return a ? format_ipv4(*a) : std::string("-"); };
  o << "eal";
  for (const auto& a : c.eal_args) o << " " << a;
  o << "\nworkers";
  for (auto w : c.worker_lcores) o << " " << w;
  o << "\nmbufs " << c.mbufs << " icmp " << c.icmp_rate_limit_pps << " stats " << c.stats_interval_s << "\n";
  o << "exception " << c.exception.enabled << " " << c.exception.device << "\n";
  o << "control " << c.control.socket_path << " '" << c.control.socket_group << "'\n";
  for (const auto& p : c.ports) {
    o << "port " << p.name << " " << p.device << " " << int(p.role) << " [";
    for (auto a : p.addresses) o << format_ipv4(a) << " ";
    o << "] mac " << opt_mac(p.mac) << " peer " << opt_mac(p.peer_mac) << " " << opt_ip(p.peer_ip) << " mtu " << p.mtu
      << " desc " << p.rx_desc << "/" << p.tx_desc << "\n";
  }
  for (const auto& t : c.tunnels)
    o << "tunnel " << t.name << " " << t.port << " " << format_ipv4(t.local) << " -> " << format_ipv4(t.remote) << " gw "
      << opt_ip(t.gateway) << " nh " << opt_mac(t.next_hop_mac) << " udp " << t.udp_encap << " " << t.udp_src_port << "/"
      << t.udp_dst_port << " ttl " << int(t.ttl) << " dscp " << t.dscp << " df " << int(t.df) << " mtu " << t.mtu
      << " mss " << t.mss_clamp << " up " << t.up << "\n";
  for (const auto& r : c.routes) {
    o << "route " << pfx(r.prefix);
    for (const auto& h : r.via) o << " " << h.tunnel << "@" << h.priority;
    o << "\n";
  }
  for (const auto& s : c.sas) {
    o << "sa " << int(s.direction) << " " << s.spi << " " << s.tunnel << " " << int(s.algo) << " key ";
    for (auto b : s.keymat) o << int(b) << ",";
    o << " esn " << s.esn << " win " << s.replay_window << " seq " << s.initial_seq << " L";
    for (const auto& p : s.local_selectors) o << " " << pfx(p);
    o << " R";
    for (const auto& p : s.remote_selectors) o << " " << pfx(p);
    o << "\n";
  }
  return o.str();
}

// ---------------------------------------------------------------------------
// Valid input

TEST(ConfigParse, BaseConfigGetsDefaults) {
  GatewayConfig c = parse_config(kBase);
  EXPECT_TRUE(c.eal_args.empty());
  EXPECT_TRUE(c.worker_lcores.empty());
  EXPECT_EQ(c.mbufs, 16384u);
  EXPECT_EQ(c.icmp_rate_limit_pps, 100);
  EXPECT_EQ(c.stats_interval_s, 0u);
  EXPECT_FALSE(c.exception.enabled);
  EXPECT_EQ(c.control.socket_path, "/run/espgw/espgw.sock");
  EXPECT_EQ(c.control.socket_group, "");

  ASSERT_EQ(c.ports.size(), 2u);
  EXPECT_EQ(c.ports[0].name, "lan");
  EXPECT_EQ(c.ports[0].device, "net_tap0,iface=l");
  EXPECT_EQ(c.ports[0].role, PortRole::kProtected);
  ASSERT_EQ(c.ports[0].addresses.size(), 1u);
  EXPECT_EQ(c.ports[0].addresses[0], 0x0a000001u);
  EXPECT_EQ(c.ports[0].peer_ip, 0x0a000002u);
  EXPECT_FALSE(c.ports[0].peer_mac);
  EXPECT_FALSE(c.ports[0].mac);
  EXPECT_EQ(c.ports[0].mtu, 1500);
  EXPECT_EQ(c.ports[0].rx_desc, 1024);
  EXPECT_EQ(c.ports[0].tx_desc, 1024);
  EXPECT_EQ(c.ports[1].role, PortRole::kUnprotected);
  ASSERT_EQ(c.ports[1].addresses.size(), 2u);
  EXPECT_EQ(c.ports[1].addresses[1], 0xc633640bu);  // 198.51.100.11

  ASSERT_EQ(c.tunnels.size(), 3u);
  const TunnelConfig& t = c.tunnels[0];
  EXPECT_EQ(t.name, "t1");
  EXPECT_EQ(t.port, "wan");
  EXPECT_EQ(t.local, 0xc633640au);
  EXPECT_EQ(t.remote, 0xcb007101u);
  EXPECT_FALSE(t.gateway);
  EXPECT_FALSE(t.next_hop_mac);
  EXPECT_FALSE(t.udp_encap);
  EXPECT_EQ(t.udp_src_port, 4500);
  EXPECT_EQ(t.udp_dst_port, 4500);
  EXPECT_EQ(t.ttl, 64);
  EXPECT_EQ(t.dscp, -1);
  EXPECT_EQ(t.df, DfPolicyConfig::kCopy);
  EXPECT_EQ(t.mtu, 0);
  EXPECT_EQ(t.mss_clamp, 0);
  EXPECT_TRUE(t.up);

  ASSERT_EQ(c.routes.size(), 1u);
  EXPECT_EQ(c.routes[0].prefix.addr, 0xac1f0000u);
  EXPECT_EQ(c.routes[0].prefix.len, 16);
  ASSERT_EQ(c.routes[0].via.size(), 2u);
  EXPECT_EQ(c.routes[0].via[0].tunnel, "t1");
  EXPECT_EQ(c.routes[0].via[0].priority, 10u);
  EXPECT_EQ(c.routes[0].via[1].tunnel, "t2");
  EXPECT_EQ(c.routes[0].via[1].priority, 20u);

  ASSERT_EQ(c.sas.size(), 2u);
  EXPECT_EQ(c.sas[0].direction, SaDirection::kOutbound);
  EXPECT_EQ(c.sas[0].spi, 0x1001u);
  EXPECT_EQ(c.sas[0].tunnel, "t1");
  EXPECT_EQ(c.sas[0].algo, SaAlgo::kAes128Gcm);
  ASSERT_EQ(c.sas[0].keymat.size(), 20u);
  for (size_t i = 0; i < 20; ++i) EXPECT_EQ(c.sas[0].keymat[i], i);
  ASSERT_EQ(c.sas[1].keymat.size(), 20u);  // "0x" prefix optional
  for (size_t i = 0; i < 20; ++i) EXPECT_EQ(c.sas[1].keymat[i], 0x10 + i);
  EXPECT_FALSE(c.sas[0].esn);
  EXPECT_EQ(c.sas[0].initial_seq, 1u);
  EXPECT_EQ(c.sas[1].direction, SaDirection::kInbound);
  EXPECT_EQ(c.sas[1].replay_window, 1024u);
  EXPECT_TRUE(c.sas[1].local_selectors.empty());
  EXPECT_TRUE(c.sas[1].remote_selectors.empty());
}

TEST(ConfigParse, EveryFieldIsRead) {
  const char* text = R"(
eal: [--no-huge, -m, 1024, --file-prefix, x]
workers: [2, 3]
mbufs: 65536
icmp_rate_limit: 0
stats_interval: 10
control: { socket: /tmp/e.sock, group: netadm }
exception: { enabled: yes, device: "net_tap9,iface=exc" }
ports:
  - name: lan
    device: 0000:3b:00.0
    role: PROTECTED
    addresses: 10.0.0.1
    mac: 02:AA:bb:cc:dd:01
    peer_mac: "02:00:00:00:00:09"
    mtu: 9000
    rx_desc: 2048
    tx_desc: 512
  - { name: wan, device: 0000:3b:00.1, role: unprotected, addresses: [198.51.100.10] }
tunnels:
  - name: t1
    port: wan
    local: 198.51.100.10
    remote: 203.0.113.1
    gateway: 198.51.100.1
    next_hop_mac: "02:00:00:00:00:fe"
    udp_encap: true
    udp_src_port: 4501
    udp_dst_port: 0x1194
    ttl: 255
    dscp: 46
    df: set
    mtu: 1400
    mss_clamp: 1379
    up: false
    policy_based: true
  - { name: t2, port: wan, local: 198.51.100.10, remote: 203.0.113.2, df: clear, dscp: 0 }
routes:
  - { prefix: 0.0.0.0/0, via: [ { tunnel: t2 } ] }
  - { prefix: 10.9.0.0/16, via: [ { tunnel: t1, priority: 65535 }, { tunnel: t2, priority: 0 } ] }
sas:
  - direction: outbound
    spi: 4294967295
    tunnel: t1
    algo: aes256-gcm
    key: "00:01:02:03:04:05:06:07:08:09:0a:0b:0c:0d:0e:0f:10:11:12:13:14:15:16:17:18:19:1a:1b:1c:1d:1e:1f:20:21:22:23"
    esn: true
    seq: 0x100000000
  - { direction: inbound, spi: 256, tunnel: t1, algo: AES128-GCM, key: "0x00010203 04050607 08090a0b 0c0d0e0f 10111214", replay_window: 0,
      local_selectors: [10.0.0.0/24, 10.0.1.0/24], remote_selectors: 10.9.0.0/16 }
  - { direction: in, spi: 4096, tunnel: t2, algo: aes128-gcm, key: "000102030405060708090a0b0c0d0e0f10111213", replay_window: 4096 }
)";
  GatewayConfig c = parse_config(text);
  EXPECT_EQ(c.eal_args, (std::vector<std::string>{"--no-huge", "-m", "1024", "--file-prefix", "x"}));
  EXPECT_EQ(c.worker_lcores, (std::vector<uint32_t>{2, 3}));
  EXPECT_EQ(c.mbufs, 65536u);
  EXPECT_EQ(c.icmp_rate_limit_pps, 0);
  EXPECT_EQ(c.stats_interval_s, 10u);
  EXPECT_EQ(c.control.socket_path, "/tmp/e.sock");
  EXPECT_EQ(c.control.socket_group, "netadm");
  EXPECT_TRUE(c.exception.enabled);
  EXPECT_EQ(c.exception.device, "net_tap9,iface=exc");

  const PortConfig& lan = c.ports[0];
  EXPECT_EQ(lan.device, "0000:3b:00.0");
  EXPECT_EQ(lan.role, PortRole::kProtected);
  EXPECT_EQ(lan.addresses, (std::vector<uint32_t>{0x0a000001}));
  ASSERT_TRUE(lan.mac);
  EXPECT_EQ(format_mac(*lan.mac), "02:aa:bb:cc:dd:01");
  ASSERT_TRUE(lan.peer_mac);
  EXPECT_EQ(format_mac(*lan.peer_mac), "02:00:00:00:00:09");
  EXPECT_FALSE(lan.peer_ip);
  EXPECT_EQ(lan.mtu, 9000);
  EXPECT_EQ(lan.rx_desc, 2048);
  EXPECT_EQ(lan.tx_desc, 512);

  const TunnelConfig& t = c.tunnels[0];
  EXPECT_EQ(t.gateway, 0xc6336401u);
  ASSERT_TRUE(t.next_hop_mac);
  EXPECT_EQ(format_mac(*t.next_hop_mac), "02:00:00:00:00:fe");
  EXPECT_TRUE(t.udp_encap);
  EXPECT_EQ(t.udp_src_port, 4501);
  EXPECT_EQ(t.udp_dst_port, 0x1194);
  EXPECT_EQ(t.ttl, 255);
  EXPECT_EQ(t.dscp, 46);
  EXPECT_EQ(t.df, DfPolicyConfig::kSet);
  EXPECT_EQ(t.mtu, 1400);
  EXPECT_EQ(t.mss_clamp, 1379);
  EXPECT_FALSE(t.up);
  EXPECT_TRUE(t.policy_based);
  EXPECT_FALSE(c.tunnels[1].policy_based);  // default: route-based
  EXPECT_EQ(c.tunnels[1].df, DfPolicyConfig::kClear);
  EXPECT_EQ(c.tunnels[1].dscp, 0);

  EXPECT_EQ(c.routes[0].prefix.addr, 0u);
  EXPECT_EQ(c.routes[0].prefix.len, 0);
  EXPECT_EQ(c.routes[0].via[0].priority, 0u);  // default priority
  EXPECT_EQ(c.routes[1].via[0].priority, 65535u);

  const SaConfig& out = c.sas[0];
  EXPECT_EQ(out.direction, SaDirection::kOutbound);
  EXPECT_EQ(out.spi, 0xffffffffu);
  EXPECT_EQ(out.algo, SaAlgo::kAes256Gcm);
  ASSERT_EQ(out.keymat.size(), 36u);
  EXPECT_EQ(out.keymat[35], 0x23);
  EXPECT_TRUE(out.esn);
  EXPECT_EQ(out.initial_seq, 0x100000000u);  // above 2^32 is fine with ESN
  const SaConfig& in = c.sas[1];
  ASSERT_EQ(in.local_selectors.size(), 2u);
  EXPECT_EQ(in.local_selectors[1].addr, 0x0a000100u);
  EXPECT_EQ(in.local_selectors[1].len, 24);
  ASSERT_EQ(in.remote_selectors.size(), 1u);
  EXPECT_EQ(in.remote_selectors[0].addr, 0x0a090000u);
  EXPECT_EQ(c.sas[1].direction, SaDirection::kInbound);
  EXPECT_EQ(c.sas[1].spi, 256u);
  EXPECT_EQ(c.sas[1].algo, SaAlgo::kAes128Gcm);
  // Spaces in a key are ignored. (Each inbound SA has its own key: the
  // daemon installs a key || salt once per direction.)
  ASSERT_EQ(c.sas[1].keymat.size(), 20u);
  for (size_t i = 0; i < 19; ++i) EXPECT_EQ(c.sas[1].keymat[i], i);
  EXPECT_EQ(c.sas[1].keymat[19], 0x14);
  EXPECT_EQ(c.sas[1].replay_window, 0u);
  EXPECT_EQ(c.sas[2].replay_window, 4096u);
}

TEST(ConfigParse, NeighborFields) {
  YAML::Node n = base();
  n["ports"][0]["addresses"] = YAML::Load("[10.0.0.1/24, 10.1.0.1]");
  n["ports"][0].remove("peer_ip");
  n["ports"][0]["gateway"] = "10.0.0.254";
  n["ports"][0]["neighbors"] = YAML::Load("[{ip: 10.0.0.9, mac: '02:00:00:00:00:09'}]");
  n["ports"][0]["neighbor_timeout"] = 60;
  n["ports"][1]["gateway"] = "198.51.100.1";  // bare addresses: any gateway
  GatewayConfig c = parse_config(dump(n), "test.yaml");
  const PortConfig& lan = c.ports[0];
  EXPECT_EQ(lan.addresses, (std::vector<uint32_t>{0x0a000001u, 0x0a010001u}));
  EXPECT_EQ(lan.prefix_lens, (std::vector<uint8_t>{24, 0}));
  EXPECT_EQ(lan.gateway, 0x0a0000feu);
  ASSERT_EQ(lan.neighbors.size(), 1u);
  EXPECT_EQ(lan.neighbors[0].ip, 0x0a000009u);
  EXPECT_EQ(lan.neighbors[0].mac.b[5], 0x09);
  EXPECT_EQ(lan.neighbor_timeout_s, 60u);
  EXPECT_EQ(c.ports[1].gateway, 0xc6336401u);
  EXPECT_EQ(c.ports[1].neighbor_timeout_s, 300u);  // the default
  // A protected port with only a subnet: on-link destinations only.
  YAML::Node m = base();
  m["ports"][0]["addresses"] = YAML::Load("[10.0.0.1/24]");
  m["ports"][0].remove("peer_ip");
  EXPECT_NO_THROW(parse_config(dump(m), "test.yaml"));
}

TEST(ConfigParse, SameSpiInBothDirectionsIsAllowed) {
  YAML::Node n = base();
  n["sas"][1]["spi"] = "0x1001";
  EXPECT_EQ(parse_config(dump(n)).sas[1].spi, 0x1001u);
}

TEST(ConfigParse, ExactlyMaxTunnelsIsAccepted) {
  YAML::Node n = base();
  YAML::Node tunnels(YAML::NodeType::Sequence);
  const int max = dataplane::kMaxTunnels;  // 16384
  for (int i = 0; i < max; ++i) {
    YAML::Node t;
    t["name"] = "t" + std::to_string(i + 1);
    t["port"] = "wan";
    t["local"] = "198.51.100.10";
    t["remote"] = "100.64." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1);
    tunnels.push_back(t);
  }
  n["tunnels"] = tunnels;
  EXPECT_EQ(parse_config(dump(n)).tunnels.size(), size_t(max));
  YAML::Node t = YAML::Clone(tunnels[0]);
  t["name"] = "one-too-many";
  n["tunnels"].push_back(t);
  std::string e = error_of(dump(n));
  EXPECT_TRUE(contains(e, fmt::format("tunnels: {} tunnels configured; at most {}", max + 1, max))) << e;
}

TEST(ConfigFormat, Ipv4AndMac) {
  EXPECT_EQ(format_ipv4(0xc6336401u), "198.51.100.1");
  EXPECT_EQ(format_ipv4(0), "0.0.0.0");
  EXPECT_EQ(format_ipv4(0xffffffffu), "255.255.255.255");
  MacAddr m{{0x02, 0x00, 0xab, 0xcd, 0xef, 0x01}};
  EXPECT_EQ(format_mac(m), "02:00:ab:cd:ef:01");
}

// ---------------------------------------------------------------------------
// Invalid input: each case mutates the valid base and expects the path and
// the reason in the message.

struct BadCase {
  const char* name;
  std::function<void(YAML::Node&)> mutate;
  std::string path;    // expected as "<path>: " in the message
  std::string reason;  // a substring of the message
};

std::ostream& operator<<(std::ostream& o, const BadCase& c) { return o << c.name; }

class ConfigBad : public ::testing::TestWithParam<BadCase> {};

TEST_P(ConfigBad, FailsWithPathAndReason) {
  const BadCase& c = GetParam();
  YAML::Node n = base();
  c.mutate(n);
  std::string text = dump(n);
  ASSERT_NO_THROW(YAML::Load(text));
  std::string e = error_of(text);
  EXPECT_TRUE(contains(e, c.path + ": ")) << "path '" << c.path << "' not in: " << e;
  EXPECT_TRUE(contains(e, c.reason)) << "reason '" << c.reason << "' not in: " << e;
  EXPECT_TRUE(e.rfind("test.yaml", 0) == 0) << "source name missing: " << e;
}

YAML::Node tunnel0(YAML::Node& n) { return n["tunnels"][0]; }

const BadCase kBadCases[] = {
    // Unknown keys, with a suggestion.
    {"TopLevelTypo", [](YAML::Node& n) { n["tunels"] = YAML::Load("[]"); }, "tunels", "unknown key 'tunels'; did you mean 'tunnels'?"},
    {"TunnelTypo", [](YAML::Node& n) { tunnel0(n)["remtoe"] = "1.2.3.4"; }, "tunnels[0].remtoe", "did you mean 'remote'?"},
    {"UnknownKeyNoSuggestion", [](YAML::Node& n) { n["routes"][0]["colour"] = "red"; }, "routes[0].colour",
     "unknown key 'colour'; allowed keys: prefix via"},
    {"SaTypo", [](YAML::Node& n) { n["sas"][0]["replay_windwo"] = 64; }, "sas[0].replay_windwo", "did you mean 'replay_window'?"},
    // Missing required fields.
    {"MissingPorts", [](YAML::Node& n) { n.remove("ports"); }, "ports", "missing required key 'ports'"},
    {"MissingRemote", [](YAML::Node& n) { tunnel0(n).remove("remote"); }, "tunnels[0].remote", "missing required key 'remote'"},
    {"NullRemote", [](YAML::Node& n) { tunnel0(n)["remote"] = YAML::Node(YAML::NodeType::Null); }, "tunnels[0].remote",
     "missing required key"},
    {"MissingPortName", [](YAML::Node& n) { n["ports"][1].remove("name"); }, "ports[1].name", "missing required key"},
    {"MissingDevice", [](YAML::Node& n) { n["ports"][0].remove("device"); }, "ports[0].device", "missing required key"},
    {"MissingRole", [](YAML::Node& n) { n["ports"][0].remove("role"); }, "ports[0].role", "missing required key"},
    {"MissingSaKey", [](YAML::Node& n) { n["sas"][0].remove("key"); }, "sas[0].key", "missing required key 'key'"},
    {"MissingSpi", [](YAML::Node& n) { n["sas"][1].remove("spi"); }, "sas[1].spi", "missing required key"},
    {"MissingAlgo", [](YAML::Node& n) { n["sas"][1].remove("algo"); }, "sas[1].algo", "missing required key"},
    {"MissingDirection", [](YAML::Node& n) { n["sas"][1].remove("direction"); }, "sas[1].direction", "missing required key"},
    {"MissingVia", [](YAML::Node& n) { n["routes"][0].remove("via"); }, "routes[0].via", "missing required key"},
    {"MissingHopTunnel", [](YAML::Node& n) { n["routes"][0]["via"][1].remove("tunnel"); }, "routes[0].via[1].tunnel",
     "missing required key"},
    // IPv4, prefix and MAC syntax.
    {"ShortIpv4", [](YAML::Node& n) { n["tunnels"][2]["remote"] = "203.0.113"; }, "tunnels[2].remote",
     "bad IPv4 address '203.0.113'"},
    {"Ipv4OctetTooBig", [](YAML::Node& n) { tunnel0(n)["remote"] = "203.0.113.256"; }, "tunnels[0].remote", "bad IPv4 address"},
    {"Ipv4LeadingZero", [](YAML::Node& n) { tunnel0(n)["remote"] = "203.0.113.010"; }, "tunnels[0].remote", "no leading zeros"},
    {"Ipv4Garbage", [](YAML::Node& n) { n["ports"][0]["peer_ip"] = "10.0.0.x"; }, "ports[0].peer_ip", "bad IPv4 address"},
    {"Ipv4FiveParts", [](YAML::Node& n) { n["ports"][1]["addresses"][0] = "1.2.3.4.5"; }, "ports[1].addresses[0]",
     "bad IPv4 address"},
    {"RemoteMulticast", [](YAML::Node& n) { tunnel0(n)["remote"] = "224.0.0.5"; }, "tunnels[0].remote", "not a unicast host address"},
    {"RemoteZero", [](YAML::Node& n) { tunnel0(n)["remote"] = "0.0.0.0"; }, "tunnels[0].remote", "not a unicast host address"},
    {"RemoteIsOwnAddress", [](YAML::Node& n) { tunnel0(n)["remote"] = "198.51.100.11"; }, "tunnels[0].remote",
     "198.51.100.11 is this gateway's own address (port 'wan')"},
    {"PrefixWithoutLength", [](YAML::Node& n) { n["routes"][0]["prefix"] = "172.31.0.0"; }, "routes[0].prefix",
     "bad IPv4 prefix '172.31.0.0'"},
    {"PrefixLengthTooBig", [](YAML::Node& n) { n["routes"][0]["prefix"] = "172.31.0.0/33"; }, "routes[0].prefix", "len 0..32"},
    {"PrefixLengthGarbage", [](YAML::Node& n) { n["routes"][0]["prefix"] = "172.31.0.0/1x"; }, "routes[0].prefix",
     "bad IPv4 prefix"},
    {"PrefixHostBits", [](YAML::Node& n) { n["routes"][0]["prefix"] = "172.31.0.1/16"; }, "routes[0].prefix",
     "host bits set in 172.31.0.1/16; did you mean 172.31.0.0/16?"},
    {"SelectorHostBits",
     [](YAML::Node& n) {
       n["sas"][0]["local_selectors"] = YAML::Load("[10.0.0.0/24, 192.168.1.0/23]");
       n["sas"][0]["remote_selectors"] = YAML::Load("[172.31.0.0/16]");
     },
     "sas[0].local_selectors[1]", "host bits set in 192.168.1.0/23; did you mean 192.168.0.0/23?"},
    {"BadMac", [](YAML::Node& n) { tunnel0(n)["next_hop_mac"] = "02:00:00:00:00"; }, "tunnels[0].next_hop_mac", "bad MAC address"},
    {"BadMacHex", [](YAML::Node& n) { n["ports"][0]["mac"] = "02:00:00:00:00:zz"; }, "ports[0].mac", "bad MAC address"},
    {"MacDashes", [](YAML::Node& n) { n["ports"][0]["peer_mac"] = "02-00-00-00-00-01"; }, "ports[0].peer_mac", "bad MAC address"},
    {"MulticastMac", [](YAML::Node& n) { tunnel0(n)["next_hop_mac"] = "01:00:5e:00:00:01"; }, "tunnels[0].next_hop_mac",
     "multicast/broadcast MAC"},
    {"ZeroMac", [](YAML::Node& n) { tunnel0(n)["next_hop_mac"] = "00:00:00:00:00:00"; }, "tunnels[0].next_hop_mac",
     "not a usable MAC"},
    // References and duplicates.
    {"UnknownPort", [](YAML::Node& n) { tunnel0(n)["port"] = "wann"; }, "tunnels[0].port", "no port named 'wann'"},
    {"UnknownTunnelInRoute", [](YAML::Node& n) { n["routes"][0]["via"][1]["tunnel"] = "t9"; }, "routes[0].via[1].tunnel",
     "no tunnel named 't9'"},
    {"UnknownTunnelInSa", [](YAML::Node& n) { n["sas"][1]["tunnel"] = "nope"; }, "sas[1].tunnel", "no tunnel named 'nope'"},
    {"DuplicatePortName", [](YAML::Node& n) { n["ports"][1]["name"] = "lan"; }, "ports[1].name",
     "duplicate port name 'lan' (also ports[0])"},
    {"DuplicateTunnelName", [](YAML::Node& n) { n["tunnels"][2]["name"] = "t1"; }, "tunnels[2].name",
     "duplicate tunnel name 't1' (also tunnels[0])"},
    {"BadName", [](YAML::Node& n) { n["tunnels"][2]["name"] = "aws a1"; }, "tunnels[2].name", "bad name 'aws a1'"},
    {"NameTooLong", [](YAML::Node& n) { n["tunnels"][2]["name"] = std::string(33, 'x'); }, "tunnels[2].name", "up to 32"},
    {"DuplicateAddress", [](YAML::Node& n) { n["ports"][1]["addresses"][1] = "10.0.0.1"; }, "ports[1].addresses[1]",
     "address 10.0.0.1 is already used by ports[0].addresses[0]"},
    {"DuplicateDevice", [](YAML::Node& n) { n["ports"][1]["device"] = "net_tap0,iface=other"; }, "ports[1].device",
     "device 'net_tap0' is already used by ports[0].device"},
    {"ExceptionDeviceClash", [](YAML::Node& n) { n["exception"] = YAML::Load("{enabled: true, device: 'net_tap1,iface=x'}"); },
     "exception.device", "device 'net_tap1' is already used by ports[1].device"},
    // Port rules.
    {"TunnelOnProtectedPort", [](YAML::Node& n) { tunnel0(n)["port"] = "lan"; }, "tunnels[0].port",
     "port 'lan' is protected; tunnels must run over an unprotected port"},
    {"LocalNotOnPort", [](YAML::Node& n) { tunnel0(n)["local"] = "198.51.100.12"; }, "tunnels[0].local",
     "198.51.100.12 is not an address of port 'wan' (its addresses: 198.51.100.10, 198.51.100.11)"},
    {"NoProtectedPort", [](YAML::Node& n) { n["ports"][0]["role"] = "unprotected"; n["ports"][0].remove("peer_ip"); }, "ports",
     "no port has role: protected"},
    {"NoUnprotectedPort",
     [](YAML::Node& n) {
       n["ports"][1]["role"] = "protected";
       n["ports"][1]["peer_ip"] = "198.51.100.1";
       n.remove("tunnels");
       n.remove("routes");
       n.remove("sas");
     },
     "ports", "no port has role: unprotected"},
    {"ProtectedWithoutPeer", [](YAML::Node& n) { n["ports"][0].remove("peer_ip"); }, "ports[0]",
     "needs peer_ip, peer_mac, gateway or an address with a subnet"},
    // Neighbour fields.
    {"SubnetLengthZero", [](YAML::Node& n) { n["ports"][0]["addresses"] = YAML::Load("[10.0.0.1/0]"); },
     "ports[0].addresses[0]", "len 1..32"},
    {"SubnetLengthGarbage", [](YAML::Node& n) { n["ports"][0]["addresses"] = YAML::Load("[10.0.0.1/2x]"); },
     "ports[0].addresses[0]", "expected a.b.c.d or a.b.c.d/len"},
    {"SubnetNetworkAddress", [](YAML::Node& n) { n["ports"][0]["addresses"] = YAML::Load("[10.0.0.0/24]"); },
     "ports[0].addresses[0]", "network or broadcast address"},
    {"SubnetBroadcastAddress", [](YAML::Node& n) { n["ports"][0]["addresses"] = YAML::Load("[10.0.0.255/24]"); },
     "ports[0].addresses[0]", "network or broadcast address"},
    {"GatewayOffLink",
     [](YAML::Node& n) {
       n["ports"][1]["addresses"] = YAML::Load("[198.51.100.10/24, 198.51.100.11/24]");
       n["ports"][1]["gateway"] = "192.0.2.1";
     },
     "ports[1].gateway", "192.0.2.1 is not in any of this port's subnets"},
    {"GatewayIsOwn", [](YAML::Node& n) { n["ports"][1]["gateway"] = "198.51.100.11"; }, "ports[1].gateway",
     "one of this gateway's own addresses"},
    {"GatewayDiffersFromPeerIp", [](YAML::Node& n) { n["ports"][0]["gateway"] = "10.0.0.3"; }, "ports[0].gateway",
     "differs from peer_ip 10.0.0.2"},
    {"NeighborTwice",
     [](YAML::Node& n) {
       n["ports"][0]["neighbors"] = YAML::Load("[{ip: 10.0.0.9, mac: '02:00:00:00:00:09'}, {ip: 10.0.0.9, mac: '02:00:00:00:00:0a'}]");
     },
     "ports[0].neighbors[1].ip", "10.0.0.9 is listed twice"},
    {"NeighborMulticastMac",
     [](YAML::Node& n) { n["ports"][0]["neighbors"] = YAML::Load("[{ip: 10.0.0.9, mac: '01:00:5e:00:00:09'}]"); },
     "ports[0].neighbors[0].mac", "a unicast address is required"},
    {"NeighborOwnAddress",
     [](YAML::Node& n) { n["ports"][0]["neighbors"] = YAML::Load("[{ip: 10.0.0.1, mac: '02:00:00:00:00:09'}]"); },
     "ports[0].neighbors[0].ip", "one of this gateway's own addresses"},
    {"NeighborUnknownKey",
     [](YAML::Node& n) { n["ports"][0]["neighbors"] = YAML::Load("[{ip: 10.0.0.9, hw: '02:00:00:00:00:09'}]"); },
     "ports[0].neighbors[0].hw", "unknown key 'hw'"},
    {"NeighborTimeoutZero", [](YAML::Node& n) { n["ports"][0]["neighbor_timeout"] = 0; }, "ports[0].neighbor_timeout",
     "out of range 1..86400"},
    {"PeerIpNeedsAddress", [](YAML::Node& n) { n["ports"][0].remove("addresses"); }, "ports[0].peer_ip", "needs an address"},
    {"PeerIpIsOwn", [](YAML::Node& n) { n["ports"][0]["peer_ip"] = "10.0.0.1"; }, "ports[0].peer_ip",
     "is one of this gateway's own addresses"},
    {"PeerOnUnprotected", [](YAML::Node& n) { n["ports"][1]["peer_mac"] = "02:00:00:00:00:05"; }, "ports[1].peer_mac",
     "applies to protected ports only"},
    {"BadRole", [](YAML::Node& n) { n["ports"][0]["role"] = "inside"; }, "ports[0].role", "unknown role 'inside'"},
    {"PortMtuTooSmall", [](YAML::Node& n) { n["ports"][0]["mtu"] = 575; }, "ports[0].mtu", "575 is out of range 576..9000"},
    {"PortMtuTooBig", [](YAML::Node& n) { n["ports"][1]["mtu"] = 9001; }, "ports[1].mtu", "out of range 576..9000"},
    {"RxDescNotPow2", [](YAML::Node& n) { n["ports"][1]["rx_desc"] = 1000; }, "ports[1].rx_desc", "not a power of two"},
    {"TxDescTooBig", [](YAML::Node& n) { n["ports"][1]["tx_desc"] = 65536; }, "ports[1].tx_desc", "out of range 64..32768"},
    // Tunnel fields.
    {"TtlZero", [](YAML::Node& n) { tunnel0(n)["ttl"] = 0; }, "tunnels[0].ttl", "0 is out of range 1..255"},
    {"DscpTooBig", [](YAML::Node& n) { tunnel0(n)["dscp"] = 64; }, "tunnels[0].dscp", "64 is out of range 0..63"},
    {"DscpWord", [](YAML::Node& n) { tunnel0(n)["dscp"] = "cpy"; }, "tunnels[0].dscp", "expected copy or 0..63, got 'cpy'"},
    {"BadDf", [](YAML::Node& n) { tunnel0(n)["df"] = "keep"; }, "tunnels[0].df", "unknown df policy 'keep'"},
    {"TunnelMtuTooSmall", [](YAML::Node& n) { tunnel0(n)["mtu"] = 500; }, "tunnels[0].mtu", "out of range 576..9000"},
    {"TunnelMtuAbovePort", [](YAML::Node& n) { tunnel0(n)["mtu"] = 1600; }, "tunnels[0].mtu",
     "1600 exceeds the MTU of port 'wan' (1500)"},
    {"MssTooSmall", [](YAML::Node& n) { tunnel0(n)["mss_clamp"] = 50; }, "tunnels[0].mss_clamp", "0 (off) or 88..8960"},
    {"UdpPortWithoutEncap", [](YAML::Node& n) { tunnel0(n)["udp_dst_port"] = 4501; }, "tunnels[0].udp_dst_port",
     "udp_dst_port is set but udp_encap is false"},
    {"UdpPortZero",
     [](YAML::Node& n) {
       tunnel0(n)["udp_encap"] = true;
       tunnel0(n)["udp_src_port"] = 0;
     },
     "tunnels[0].udp_src_port", "out of range 1..65535"},
    // Routes.
    {"RouteNoHops", [](YAML::Node& n) { n["routes"][0]["via"] = YAML::Node(YAML::NodeType::Sequence); }, "routes[0].via",
     "at least one next hop"},
    {"PriorityTooBig", [](YAML::Node& n) { n["routes"][0]["via"][0]["priority"] = 65536; }, "routes[0].via[0].priority",
     "65536 is out of range 0..65535"},
    {"PriorityNegative", [](YAML::Node& n) { n["routes"][0]["via"][0]["priority"] = -1; }, "routes[0].via[0].priority",
     "-1 is out of range 0..65535"},
    {"DuplicateHop", [](YAML::Node& n) { n["routes"][0]["via"][1]["tunnel"] = "t1"; }, "routes[0].via[1].tunnel",
     "tunnel 't1' is listed twice in this route (also routes[0].via[0])"},
    {"DuplicateRoute", [](YAML::Node& n) { n["routes"].push_back(YAML::Clone(n["routes"][0])); }, "routes[1].prefix",
     "duplicate route for 172.31.0.0/16 (also routes[0])"},
    // SAs.
    {"KeyTooShortFor256", [](YAML::Node& n) { n["sas"][0]["algo"] = "aes256-gcm"; }, "sas[0].key",
     "aes256-gcm needs 36 bytes (72 hex digits: 32-byte key || 4-byte salt), got 20 bytes"},
    {"KeyTooLongFor128", [](YAML::Node& n) { n["sas"][1]["key"] = std::string(72, 'a'); }, "sas[1].key",
     "aes128-gcm needs 20 bytes"},
    {"KeyBadHex", [](YAML::Node& n) { n["sas"][0]["key"] = "0x000102030405060708090a0b0c0d0e0f1011121g"; }, "sas[0].key",
     "'g' is not a hex digit"},
    {"KeyOddDigits", [](YAML::Node& n) { n["sas"][0]["key"] = "0x000102030405060708090a0b0c0d0e0f1011121"; }, "sas[0].key",
     "odd number of hex digits"},
    {"KeyBadColons", [](YAML::Node& n) { n["sas"][0]["key"] = "00:0102:03"; }, "sas[0].key", "two hex digits"},
    {"BadAlgo", [](YAML::Node& n) { n["sas"][0]["algo"] = "aes128-cbc"; }, "sas[0].algo", "unknown algo 'aes128-cbc'"},
    {"BadDirection", [](YAML::Node& n) { n["sas"][0]["direction"] = "both"; }, "sas[0].direction", "unknown direction 'both'"},
    {"DuplicateSpi", [](YAML::Node& n) { n["sas"].push_back(YAML::Clone(n["sas"][1])); n["sas"][2]["tunnel"] = "t2"; },
     "sas[2].spi", "duplicate inbound SPI 0x00002001 (also sas[1])"},
    {"SpiZero", [](YAML::Node& n) { n["sas"][0]["spi"] = 0; }, "sas[0].spi", "SPI 0 is reserved (RFC 4303)"},
    {"SpiIanaReserved", [](YAML::Node& n) { n["sas"][0]["spi"] = 255; }, "sas[0].spi", "SPI 255 is in 1..255, reserved by IANA"},
    {"SpiTooBig", [](YAML::Node& n) { n["sas"][0]["spi"] = "0x100000000"; }, "sas[0].spi", "out of range 0..4294967295"},
    {"ReplayWindowTooBig", [](YAML::Node& n) { n["sas"][1]["replay_window"] = 4097; }, "sas[1].replay_window",
     "4097 is out of range 0..4096"},
    {"ReplayWindowOnOutbound", [](YAML::Node& n) { n["sas"][0]["replay_window"] = 64; }, "sas[0].replay_window",
     "inbound SAs only"},
    {"SeqOnInbound", [](YAML::Node& n) { n["sas"][1]["seq"] = 5; }, "sas[1].seq", "outbound SAs only"},
    {"SeqZero", [](YAML::Node& n) { n["sas"][0]["seq"] = 0; }, "sas[0].seq", "out of range 1..4294967295"},
    {"SeqAbove32BitsWithoutEsn", [](YAML::Node& n) { n["sas"][0]["seq"] = "0x100000000"; }, "sas[0].seq",
     "out of range 1..4294967295"},
    {"TwoOutboundOnOneTunnel",
     [](YAML::Node& n) {
       n["sas"].push_back(YAML::Clone(n["sas"][0]));
       n["sas"][2]["spi"] = 0x1002;
     },
     "sas[2].tunnel", "tunnel 't1' already has an outbound SA (sas[0])"},
    {"OneSidedSelectors", [](YAML::Node& n) { n["sas"][0]["local_selectors"] = "10.0.0.0/24"; }, "sas[0]",
     "needs both local_selectors and remote_selectors"},
    {"EmptySelectors", [](YAML::Node& n) { n["sas"][0]["local_selectors"] = YAML::Node(YAML::NodeType::Sequence); },
     "sas[0].local_selectors", "empty selector list"},
    {"DuplicateSelector",
     [](YAML::Node& n) {
       n["sas"][0]["local_selectors"] = YAML::Load("[10.0.0.0/24, 10.0.0.0/24]");
       n["sas"][0]["remote_selectors"] = "172.31.0.0/16";
     },
     "sas[0].local_selectors[1]", "10.0.0.0/24 is listed twice"},
    // Globals.
    {"MbufsTooSmall", [](YAML::Node& n) { n["mbufs"] = 4096; }, "mbufs", "4096 mbufs is too small: 5888 needed"},
    {"MbufsTooSmallForBigRings", [](YAML::Node& n) { n["ports"][1]["rx_desc"] = 16384; }, "mbufs", "21248 needed"},
    {"DuplicateWorker", [](YAML::Node& n) { n["workers"] = YAML::Load("[1, 2, 1]"); }, "workers[2]",
     "lcore 1 is listed twice (also workers[0])"},
    {"WorkerTooBig", [](YAML::Node& n) { n["workers"] = YAML::Load("[128]"); }, "workers[0]", "out of range 0..127"},
    {"SocketPathTooLong", [](YAML::Node& n) { n["control"]["socket"] = "/" + std::string(110, 's'); }, "control.socket",
     "a Unix socket path is at most 107"},
    {"EmptyDevice", [](YAML::Node& n) { n["exception"]["device"] = ""; }, "exception.device", "must not be empty"},
    // Type errors name the path.
    {"StringForNumber", [](YAML::Node& n) { n["ports"][0]["mtu"] = "big"; }, "ports[0].mtu", "expected an integer, got 'big'"},
    {"FloatForNumber", [](YAML::Node& n) { n["mbufs"] = "1.5e4"; }, "mbufs", "expected an integer, got '1.5e4'"},
    {"ListForNumber", [](YAML::Node& n) { tunnel0(n)["ttl"] = YAML::Load("[64]"); }, "tunnels[0].ttl",
     "expected an integer, got a list"},
    {"MapForString", [](YAML::Node& n) { tunnel0(n)["name"] = YAML::Load("{a: b}"); }, "tunnels[0].name",
     "expected a string, got a mapping"},
    {"ScalarForList", [](YAML::Node& n) { n["tunnels"] = "t1"; }, "tunnels", "expected a list, got a scalar"},
    {"ListForMapping", [](YAML::Node& n) { n["tunnels"][1] = YAML::Load("[a, b]"); }, "tunnels[1]",
     "expected a mapping, got a list"},
    {"ScalarForMapping", [](YAML::Node& n) { n["control"] = "off"; }, "control", "expected a mapping, got a scalar"},
    {"BadBool", [](YAML::Node& n) { tunnel0(n)["udp_encap"] = "maybe"; }, "tunnels[0].udp_encap",
     "expected true or false, got 'maybe'"},
    {"MapForIp", [](YAML::Node& n) { tunnel0(n)["local"] = YAML::Load("{ip: 1.2.3.4}"); }, "tunnels[0].local",
     "expected an IPv4 address, got a mapping"},
    {"EalNotStrings", [](YAML::Node& n) { n["eal"] = YAML::Load("[--no-huge, [x]]"); }, "eal[1]", "expected a string, got a list"},
};

INSTANTIATE_TEST_SUITE_P(Cases, ConfigBad, ::testing::ValuesIn(kBadCases),
                         [](const ::testing::TestParamInfo<BadCase>& i) { return std::string(i.param.name); });

TEST(ConfigErrors, DuplicateYamlKey) {
  std::string text = std::string(kBase) + "mbufs: 20000\nmbufs: 30000\n";
  std::string e = error_of(text);
  EXPECT_TRUE(contains(e, "mbufs: duplicate key 'mbufs'")) << e;
}

TEST(ConfigErrors, MessageCarriesLineAndColumn) {
  std::string text = std::string(kBase);
  // Line 6 (1-based) of kBase is tunnels[1]; break its remote address.
  size_t at = text.find("203.0.113.2 ");
  ASSERT_NE(at, std::string::npos);
  text.replace(at, 11, "203.0.113.x");
  size_t line_start = text.rfind('\n', at) + 1;
  int line = static_cast<int>(std::count(text.begin(), text.begin() + static_cast<long>(at), '\n')) + 1;
  int col = static_cast<int>(at - line_start) + 1;
  std::string e = error_of(text);
  EXPECT_TRUE(contains(e, "test.yaml:" + std::to_string(line) + ":" + std::to_string(col) + ": tunnels[1].remote: ")) << e;
}

TEST(ConfigErrors, YamlSyntaxErrorHasLineAndColumn) {
  std::string e = error_of("ports:\n  - name: lan\n    device: [unclosed\n");
  EXPECT_TRUE(contains(e, "test.yaml:")) << e;
  EXPECT_TRUE(contains(e, "YAML syntax error")) << e;
  EXPECT_TRUE(contains(e, ":4:") || contains(e, ":3:")) << e;
}

TEST(ConfigErrors, EmptyDocument) {
  EXPECT_TRUE(contains(error_of(""), "test.yaml: empty configuration"));
  EXPECT_TRUE(contains(error_of("# only a comment\n"), "empty configuration"));
}

TEST(ConfigErrors, RootMustBeMapping) {
  std::string e = error_of("- a\n- b\n");
  EXPECT_TRUE(contains(e, "expected a mapping, got a list")) << e;
}

TEST(ConfigErrors, SeveralDocuments) {
  std::string e = error_of(std::string(kBase) + "---\nmbufs: 1\n");
  EXPECT_TRUE(contains(e, "holds 2 YAML documents; expected one")) << e;
}

// Found by tests/fuzz/fuzz_config: yaml-cpp's LoadAll never returned on a
// document starting with a stray ',' (it allocated until the process died):
// espgw and --check hung on such a file. Now a syntax error at the comma.
TEST(ConfigErrors, StrayCommaIsASyntaxErrorNotAHang) {
  EXPECT_TRUE(contains(error_of(","), "test.yaml:1:1: YAML syntax error: unexpected ','")) << error_of(",");
  std::string e = error_of(std::string(kBase) + "---\n,\n");
  EXPECT_TRUE(contains(e, "YAML syntax error: unexpected ','")) << e;
  e = error_of("[a],");
  EXPECT_TRUE(contains(e, "test.yaml:1:4: YAML syntax error: unexpected ','")) << e;
}

// ---------------------------------------------------------------------------
// Files

class ConfigFile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ("espgw-config-test-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& text) {
    std::string p = (dir_ / name).string();
    std::ofstream(p) << text;
    return p;
  }
  std::filesystem::path dir_;
};

TEST_F(ConfigFile, LoadsAValidFile) {
  std::string p = write("ok.yaml", kBase);
  EXPECT_EQ(describe(load_config_file(p)), describe(parse_config(kBase)));
}

TEST_F(ConfigFile, ErrorsNameTheFile) {
  YAML::Node n = base();
  n["mbufs"] = "lots";
  std::string p = write("bad.yaml", dump(n));
  try {
    load_config_file(p);
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_TRUE(std::string(e.what()).rfind(p + ":", 0) == 0) << e.what();
    EXPECT_TRUE(contains(e.what(), "mbufs: expected an integer, got 'lots'")) << e.what();
  }
}

TEST_F(ConfigFile, NotFound) {
  std::string p = (dir_ / "missing.yaml").string();
  try {
    load_config_file(p);
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_TRUE(contains(e.what(), p + ": cannot open configuration: No such file or directory")) << e.what();
  }
}

TEST_F(ConfigFile, Directory) {
  try {
    load_config_file(dir_.string());
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_TRUE(contains(e.what(), "is a directory")) << e.what();
  }
}

TEST_F(ConfigFile, Unreadable) {
  if (::geteuid() == 0) GTEST_SKIP() << "root reads any file";
  std::string p = write("secret.yaml", kBase);
  std::filesystem::permissions(p, std::filesystem::perms::none);
  try {
    load_config_file(p);
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_TRUE(contains(e.what(), "Permission denied")) << e.what();
  }
}

TEST_F(ConfigFile, SyntaxErrorHasLineAndColumn) {
  std::string p = write("syntax.yaml", "mbufs: 1\nports:\n  - { name: lan, device: x\n");
  try {
    load_config_file(p);
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    std::string m = e.what();
    EXPECT_TRUE(m.rfind(p + ":", 0) == 0) << m;
    EXPECT_TRUE(contains(m, "YAML syntax error")) << m;
    // "<path>:<line>:<col>: ..."
    std::string rest = m.substr(p.size() + 1);
    EXPECT_TRUE(std::isdigit(static_cast<unsigned char>(rest[0]))) << m;
  }
}

// ---------------------------------------------------------------------------
// The shipped configurations

TEST(ShippedConfig, EmbeddedDefaultIsTheFourTunnelAwsTopology) {
  GatewayConfig c = parse_config(embedded_default_config(), "<embedded>");
  EXPECT_EQ(c.eal_args, (std::vector<std::string>{"--no-huge", "-m", "1024", "--no-pci", "--file-prefix", "espgw"}));
  EXPECT_FALSE(c.exception.enabled);
  ASSERT_EQ(c.ports.size(), 2u);
  EXPECT_EQ(c.ports[0].device, "net_tap0,iface=espgw-lan");
  EXPECT_EQ(c.ports[0].role, PortRole::kProtected);
  EXPECT_EQ(format_ipv4(c.ports[0].addresses.at(0)), "10.240.128.1");
  EXPECT_EQ(c.ports[1].device, "net_tap1,iface=espgw-wan");
  EXPECT_EQ(c.ports[1].role, PortRole::kUnprotected);
  ASSERT_EQ(c.ports[1].addresses.size(), 2u);
  EXPECT_EQ(format_ipv4(c.ports[1].addresses[0]), "198.51.100.10");
  EXPECT_EQ(format_ipv4(c.ports[1].addresses[1]), "198.51.100.11");

  ASSERT_EQ(c.tunnels.size(), 4u);
  const char* remotes[] = {"203.0.113.1", "203.0.113.2", "203.0.113.129", "203.0.113.130"};
  const char* locals[] = {"198.51.100.10", "198.51.100.10", "198.51.100.11", "198.51.100.11"};
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(format_ipv4(c.tunnels[i].remote), remotes[i]);
    EXPECT_EQ(format_ipv4(c.tunnels[i].local), locals[i]);
    EXPECT_TRUE(c.tunnels[i].next_hop_mac) << c.tunnels[i].name;
  }

  ASSERT_EQ(c.routes.size(), 1u);
  EXPECT_EQ(format_ipv4(c.routes[0].prefix.addr), "172.31.0.0");
  EXPECT_EQ(c.routes[0].prefix.len, 16);
  ASSERT_EQ(c.routes[0].via.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(c.routes[0].via[i].tunnel, c.tunnels[i].name);
    EXPECT_EQ(c.routes[0].via[i].priority, 10u * (i + 1));
  }

  // One inbound and one outbound AES-128-GCM SA per tunnel.
  ASSERT_EQ(c.sas.size(), 8u);
  for (const auto& t : c.tunnels) {
    int in = 0, out = 0;
    for (const auto& s : c.sas) {
      if (s.tunnel != t.name) continue;
      EXPECT_EQ(s.algo, SaAlgo::kAes128Gcm);
      EXPECT_EQ(s.keymat.size(), 20u);
      (s.direction == SaDirection::kInbound ? in : out)++;
    }
    EXPECT_EQ(in, 1) << t.name;
    EXPECT_EQ(out, 1) << t.name;
  }
}

TEST(ShippedConfig, RouteBasedExampleMatchesEmbeddedDefault) {
  GatewayConfig file = load_config_file(example("aws-route-based.yaml"));
  GatewayConfig embedded = parse_config(embedded_default_config(), "<embedded>");
  EXPECT_EQ(describe(file), describe(embedded));
}

TEST(ShippedConfig, PolicyBasedExampleIsOneSaPairOverOneCidrEachSide) {
  GatewayConfig c = load_config_file(example("aws-policy-based.yaml"));
  ASSERT_EQ(c.tunnels.size(), 1u);
  ASSERT_EQ(c.sas.size(), 2u);
  for (const auto& s : c.sas) {
    EXPECT_EQ(s.tunnel, c.tunnels[0].name);
    EXPECT_EQ(s.algo, SaAlgo::kAes256Gcm);
    EXPECT_EQ(s.keymat.size(), 36u);
    if (s.direction == SaDirection::kOutbound) {
      EXPECT_TRUE(s.local_selectors.empty());  // the route is the outbound policy
      continue;
    }
    ASSERT_EQ(s.local_selectors.size(), 1u);
    ASSERT_EQ(s.remote_selectors.size(), 1u);
    EXPECT_EQ(format_ipv4(s.local_selectors[0].addr), "192.168.0.0");
    EXPECT_EQ(s.local_selectors[0].len, 23);
    EXPECT_EQ(format_ipv4(s.remote_selectors[0].addr), "172.31.0.0");
    EXPECT_EQ(s.remote_selectors[0].len, 16);
  }
  EXPECT_NE(c.sas[0].direction, c.sas[1].direction);
}

// docs/config.md documents every key the loader accepts: a key added to the
// loader without documentation fails here.
TEST(ShippedConfig, DocsMentionEveryKey) {
  std::string doc = slurp(std::string(ESPGW_SOURCE_ROOT) + "/docs/config.md");
  ASSERT_FALSE(doc.empty());
  for (const char* key :
       {"eal", "workers", "mbufs", "icmp_rate_limit", "stats_interval", "control", "socket", "group", "exception",
        "enabled", "device", "ports", "name", "role", "addresses", "mac", "peer_mac", "peer_ip", "mtu", "rx_desc",
        "tx_desc", "tunnels", "port", "local", "remote", "gateway", "next_hop_mac", "udp_encap", "udp_src_port",
        "udp_dst_port", "ttl", "dscp", "df", "mss_clamp", "up", "policy_based", "routes", "prefix", "via", "tunnel", "priority", "sas",
        "direction", "spi", "algo", "key", "esn", "replay_window", "seq", "local_selectors", "remote_selectors",
        "neighbors", "neighbor_timeout", "ip"})
    EXPECT_TRUE(contains(doc, std::string("`") + key + "`")) << key << " is not documented in docs/config.md";
}

}  // namespace
}  // namespace espgw::control
