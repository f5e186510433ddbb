// YAML configuration loader: schema in docs/config.md.
//
// Parsing goes through a small layer over yaml-cpp that knows the YAML path of
// every node ("tunnels[2].remote") and its line/column, so every error names
// the field and says why. Scalars are converted here, not by yaml-cpp's
// as<T>(), so that a type error reports the path rather than "bad conversion".
// No DPDK dependency: this file builds into the control library and into the
// unit tests alone.
#include "control/config.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <map>
#include <set>
#include <sstream>
#include <utility>

namespace espgw::control {

namespace {

constexpr size_t kMaxTunnels = 256;
constexpr uint32_t kMaxLcore = 127;          // RTE_MAX_LCORE - 1 of the default DPDK build
constexpr uint32_t kMaxReplayWindow = 4096;
constexpr uint32_t kMinSpi = 256;            // 0 reserved (RFC 4303), 1..255 reserved by IANA
constexpr uint16_t kMinMtu = 576;
constexpr uint16_t kMaxMtu = 9000;
constexpr uint32_t kMbufSlack = 1024;        // bursts in flight, per-core caches
constexpr size_t kMaxNameLen = 32;
constexpr size_t kMaxStaticNeighbors = 256;  // per port (the data plane's table holds 1024)
constexpr size_t kMaxSocketPath = 107;       // sizeof(sockaddr_un::sun_path) - 1

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// Levenshtein distance, for "did you mean" on misspelt keys.
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

const char* type_name(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Null: return "nothing (null)";
    case YAML::NodeType::Scalar: return "a scalar";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Map: return "a mapping";
    default: return "an undefined node";
  }
}

std::string index_path(const std::string& path, size_t i) { return fmt::format("{}[{}]", path, i); }

bool is_unicast_host(uint32_t a) {
  uint8_t first = static_cast<uint8_t>(a >> 24);
  return a != 0 && first != 0 && first != 127 && first < 224;
}

std::string format_prefix(const Ipv4Prefix& p) { return fmt::format("{}/{}", format_ipv4(p.addr), p.len); }

uint32_t prefix_mask(uint8_t len) { return len == 0 ? 0 : ~uint32_t{0} << (32 - len); }

// Parses strict dotted-quad (four decimal parts 0..255, no leading zeros:
// inet_aton would read "010" as octal); nullopt on any syntax error.
std::optional<uint32_t> parse_ipv4_text(std::string_view s) {
  if (std::count(s.begin(), s.end(), '.') != 3) return std::nullopt;
  uint32_t addr = 0;
  size_t pos = 0;
  for (int i = 0; i < 4; ++i) {
    size_t end = i < 3 ? s.find('.', pos) : s.size();
    std::string_view part = s.substr(pos, end - pos);
    if (part.empty() || part.size() > 3 || (part.size() > 1 && part[0] == '0')) return std::nullopt;
    unsigned v = 0;
    for (char c : part) {
      if (c < '0' || c > '9') return std::nullopt;
      v = v * 10 + static_cast<unsigned>(c - '0');
    }
    if (v > 255) return std::nullopt;
    addr = (addr << 8) | v;
    pos = end + 1;
  }
  return addr;
}

class Parser;

// A mapping node with its path: rejects unknown and duplicate keys up front
// (so a typo is reported as a typo, not as the missing key it was meant to be).
class Map {
 public:
  Map(const Parser& p, const YAML::Node& node, std::string path, std::initializer_list<const char*> allowed);

  // The value of `key`, or nullopt if absent or null.
  std::optional<YAML::Node> get(const char* key) const {
    auto it = entries_.find(key);
    if (it == entries_.end() || it->second.IsNull()) return std::nullopt;
    return it->second;
  }
  YAML::Node require(const char* key) const;
  bool has(const char* key) const { return get(key).has_value(); }
  std::string sub(const char* key) const { return path_.empty() ? std::string(key) : path_ + "." + key; }
  const YAML::Node& node() const { return node_; }
  const std::string& path() const { return path_; }

 private:
  const Parser& p_;
  YAML::Node node_;
  std::string path_;
  std::map<std::string, YAML::Node, std::less<>> entries_;
};

class Parser {
 public:
  explicit Parser(std::string source) : source_(std::move(source)) {}

  [[noreturn]] void fail(const YAML::Node& at, const std::string& path, const std::string& why) const {
    std::string where = source_;
    YAML::Mark m = YAML::Mark::null_mark();
    try {
      if (at.IsDefined()) m = at.Mark();
    } catch (const YAML::Exception&) {
    }
    if (!m.is_null()) where += fmt::format(":{}:{}", m.line + 1, m.column + 1);
    if (path.empty()) throw ConfigError(fmt::format("{}: {}", where, why));
    throw ConfigError(fmt::format("{}: {}: {}", where, path, why));
  }

  std::string scalar(const YAML::Node& n, const std::string& path, const char* what = "a string") const {
    if (!n.IsScalar()) fail(n, path, fmt::format("expected {}, got {}", what, type_name(n)));
    return n.Scalar();
  }

  std::string nonempty_string(const YAML::Node& n, const std::string& path) const {
    std::string s = scalar(n, path);
    if (s.empty()) fail(n, path, "must not be empty");
    return s;
  }

  uint64_t integer(const YAML::Node& n, const std::string& path, uint64_t min, uint64_t max) const {
    std::string s = scalar(n, path, "an integer");
    std::string_view v = s;
    bool negative = !v.empty() && v[0] == '-';
    if (negative || (!v.empty() && v[0] == '+')) v.remove_prefix(1);
    int base = 10;
    if (v.size() > 2 && v[0] == '0' && (v[1] == 'x' || v[1] == 'X')) {
      base = 16;
      v.remove_prefix(2);
    }
    uint64_t out = 0;
    auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), out, base);
    if (v.empty() || ptr != v.data() + v.size() || (ec != std::errc() && ec != std::errc::result_out_of_range))
      fail(n, path, fmt::format("expected an integer, got '{}'", s));
    if (negative || ec == std::errc::result_out_of_range || out < min || out > max)
      fail(n, path, range_text(s, min, max));
    return out;
  }

  bool boolean(const YAML::Node& n, const std::string& path) const {
    std::string s = lower(scalar(n, path, "true or false"));
    if (s == "true" || s == "yes" || s == "on") return true;
    if (s == "false" || s == "no" || s == "off") return false;
    fail(n, path, fmt::format("expected true or false, got '{}'", n.Scalar()));
  }

  uint32_t ipv4(const YAML::Node& n, const std::string& path, bool unicast = true) const {
    std::string s = scalar(n, path, "an IPv4 address");
    auto a = parse_ipv4_text(s);
    if (!a) fail(n, path, fmt::format("bad IPv4 address '{}' (expected dotted quad a.b.c.d, no leading zeros)", s));
    if (unicast && !is_unicast_host(*a))
      fail(n, path, fmt::format("{} is not a unicast host address (0/8, 127/8, multicast and broadcast are not allowed)", s));
    return *a;
  }

  Ipv4Prefix prefix(const YAML::Node& n, const std::string& path) const {
    std::string s = scalar(n, path, "an IPv4 prefix");
    size_t slash = s.find('/');
    if (slash == std::string::npos)
      fail(n, path, fmt::format("bad IPv4 prefix '{}' (expected a.b.c.d/len, e.g. 172.31.0.0/16)", s));
    auto a = parse_ipv4_text(std::string_view(s).substr(0, slash));
    std::string len_text = s.substr(slash + 1);
    unsigned len = 0;
    auto [ptr, ec] = std::from_chars(len_text.data(), len_text.data() + len_text.size(), len);
    if (!a || len_text.empty() || ec != std::errc() || ptr != len_text.data() + len_text.size() || len > 32 ||
        (len_text.size() > 1 && len_text[0] == '0'))
      fail(n, path, fmt::format("bad IPv4 prefix '{}' (expected a.b.c.d/len with len 0..32)", s));
    Ipv4Prefix p{*a, static_cast<uint8_t>(len)};
    uint32_t mask = prefix_mask(p.len);
    if ((p.addr & ~mask) != 0)
      fail(n, path,
           fmt::format("host bits set in {}; did you mean {}?", s, format_prefix(Ipv4Prefix{p.addr & mask, p.len})));
    return p;
  }

  MacAddr mac(const YAML::Node& n, const std::string& path) const {
    std::string s = scalar(n, path, "a MAC address");
    MacAddr m{};
    bool ok = s.size() == 17;
    for (size_t i = 0; ok && i < 6; ++i) {
      if (i > 0 && s[i * 3 - 1] != ':') ok = false;
      unsigned v = 0;
      auto [ptr, ec] = std::from_chars(s.data() + i * 3, s.data() + i * 3 + 2, v, 16);
      if (ec != std::errc() || ptr != s.data() + i * 3 + 2) ok = false;
      m.b[i] = static_cast<uint8_t>(v);
    }
    if (!ok) fail(n, path, fmt::format("bad MAC address '{}' (expected six hex bytes like 02:00:00:00:00:01)", s));
    if (m.b[0] & 1) fail(n, path, fmt::format("{} is a multicast/broadcast MAC; a unicast address is required", s));
    if (std::all_of(std::begin(m.b), std::end(m.b), [](uint8_t b) { return b == 0; }))
      fail(n, path, "00:00:00:00:00:00 is not a usable MAC address");
    return m;
  }

  std::vector<uint8_t> hex_bytes(const YAML::Node& n, const std::string& path) const {
    std::string s = scalar(n, path, "a hex string");
    std::string_view v = s;
    if (v.size() >= 2 && v[0] == '0' && (v[1] == 'x' || v[1] == 'X')) v.remove_prefix(2);
    std::string digits;
    // Accept "aabbcc..." (spaces ignored, e.g. between key and salt) and
    // ipsec-secgw's "aa:bb:cc:..." forms.
    bool colons = v.find(':') != std::string_view::npos;
    for (size_t i = 0; i < v.size(); ++i) {
      char c = v[i];
      if (!colons && c == ' ') continue;
      if (colons && c == ':') {
        if (i % 3 != 2) fail(n, path, "bad hex key: with ':' separators every byte must be two hex digits (aa:bb:...)");
        continue;
      }
      if (!std::isxdigit(static_cast<unsigned char>(c)))
        fail(n, path, fmt::format("bad hex key: '{}' is not a hex digit", c));
      if (colons && i % 3 == 2) fail(n, path, "bad hex key: with ':' separators every byte must be two hex digits (aa:bb:...)");
      digits.push_back(c);
    }
    if (digits.empty()) fail(n, path, "bad hex key: empty");
    if (digits.size() % 2 != 0) fail(n, path, fmt::format("bad hex key: odd number of hex digits ({})", digits.size()));
    std::vector<uint8_t> out(digits.size() / 2);
    for (size_t i = 0; i < out.size(); ++i) {
      unsigned b = 0;
      std::from_chars(digits.data() + 2 * i, digits.data() + 2 * i + 2, b, 16);
      out[i] = static_cast<uint8_t>(b);
    }
    return out;
  }

  // Calls fn(item, path) for every element; a lone scalar counts as a
  // one-element list when `scalar_ok` (e.g. `addresses: 10.0.0.1`).
  void each(const YAML::Node& n, const std::string& path, const std::function<void(const YAML::Node&, const std::string&)>& fn,
            bool scalar_ok = false) const {
    if (scalar_ok && n.IsScalar()) {
      fn(n, path);
      return;
    }
    if (!n.IsSequence()) fail(n, path, fmt::format("expected a list, got {}", type_name(n)));
    for (size_t i = 0; i < n.size(); ++i) fn(n[i], index_path(path, i));
  }

  std::string name(const YAML::Node& n, const std::string& path) const {
    std::string s = nonempty_string(n, path);
    bool ok = s.size() <= kMaxNameLen && std::isalnum(static_cast<unsigned char>(s[0]));
    for (char c : s)
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') ok = false;
    if (!ok)
      fail(n, path,
           fmt::format("bad name '{}': use up to {} letters, digits, '-', '_' or '.', starting with a letter or digit", s,
                       kMaxNameLen));
    return s;
  }

 private:
  static std::string range_text(const std::string& s, uint64_t min, uint64_t max) {
    return fmt::format("{} is out of range {}..{}", s, min, max);
  }

  std::string source_;
};

Map::Map(const Parser& p, const YAML::Node& node, std::string path, std::initializer_list<const char*> allowed)
    : p_(p), node_(node), path_(std::move(path)) {
  if (!node.IsMap()) p.fail(node, path_, fmt::format("expected a mapping, got {}", type_name(node)));
  for (const auto& kv : node) {  // kv: a temporary bound to the reference (yaml-cpp's iterators yield values)
    const YAML::Node k = kv.first;
    if (!k.IsScalar()) p.fail(k, path_, "mapping keys must be plain strings");
    const std::string& key = k.Scalar();
    bool known = std::any_of(allowed.begin(), allowed.end(), [&](const char* a) { return key == a; });
    if (!known) {
      std::string best;
      size_t best_d = 3;
      for (const char* a : allowed) {
        size_t d = edit_distance(lower(key), a);
        if (d < best_d) best_d = d, best = a;
      }
      std::string why = fmt::format("unknown key '{}'", key);
      if (!best.empty()) why += fmt::format("; did you mean '{}'?", best);
      else {
        why += "; allowed keys:";
        for (const char* a : allowed) why += fmt::format(" {}", a);
      }
      p.fail(k, sub(key.c_str()), why);
    }
    if (entries_.count(key)) p.fail(k, sub(key.c_str()), fmt::format("duplicate key '{}'", key));
    entries_.emplace(key, kv.second);
  }
}

YAML::Node Map::require(const char* key) const {
  auto v = get(key);
  if (!v) p_.fail(node_, sub(key), fmt::format("missing required key '{}'", key));
  return *v;
}

// ---------------------------------------------------------------------------

struct Loader {
  const Parser& p;
  GatewayConfig cfg;
  std::map<std::string, size_t> port_index;
  std::map<std::string, size_t> tunnel_index;
  YAML::Node root;

  uint16_t mtu(const YAML::Node& n, const std::string& path) const {
    return static_cast<uint16_t>(p.integer(n, path, kMinMtu, kMaxMtu));
  }

  uint16_t desc(const YAML::Node& n, const std::string& path) const {
    uint64_t v = p.integer(n, path, 64, 32768);
    if ((v & (v - 1)) != 0) p.fail(n, path, fmt::format("{} is not a power of two", v));
    return static_cast<uint16_t>(v);
  }

  void load_top() {
    Map m(p, root, "",
          {"eal", "workers", "mbufs", "icmp_rate_limit", "stats_interval", "control", "exception", "xfrm", "ports",
           "tunnels", "routes", "sas"});
    if (auto n = m.get("eal"))
      p.each(*n, "eal", [&](const YAML::Node& a, const std::string& path) { cfg.eal_args.push_back(p.scalar(a, path)); });
    if (auto n = m.get("workers")) {
      std::map<uint32_t, std::string> seen;
      p.each(
          *n, "workers",
          [&](const YAML::Node& a, const std::string& path) {
            auto id = static_cast<uint32_t>(p.integer(a, path, 0, kMaxLcore));
            auto [it, fresh] = seen.emplace(id, path);
            if (!fresh) p.fail(a, path, fmt::format("lcore {} is listed twice (also {})", id, it->second));
            cfg.worker_lcores.push_back(id);
          },
          true);
    }
    if (auto n = m.get("mbufs")) cfg.mbufs = static_cast<uint32_t>(p.integer(*n, "mbufs", 1, 1u << 24));
    if (auto n = m.get("icmp_rate_limit"))
      cfg.icmp_rate_limit_pps = static_cast<uint16_t>(p.integer(*n, "icmp_rate_limit", 0, 65535));
    if (auto n = m.get("stats_interval"))
      cfg.stats_interval_s = static_cast<uint32_t>(p.integer(*n, "stats_interval", 0, 86400));
    if (auto n = m.get("control")) load_control(*n);
    if (auto n = m.get("exception")) load_exception(*n);
    if (auto n = m.get("xfrm")) {
      Map x(p, *n, "xfrm", {"enabled"});
      if (auto v = x.get("enabled")) cfg.xfrm.enabled = p.boolean(*v, "xfrm.enabled");
    }

    load_ports(m.require("ports"));
    if (auto n = m.get("tunnels")) load_tunnels(*n);
    if (auto n = m.get("routes")) load_routes(*n);
    if (auto n = m.get("sas")) load_sas(*n);
    check_devices();

    uint64_t need = kMbufSlack;
    for (const auto& port : cfg.ports) need += uint64_t{port.rx_desc} + port.tx_desc;
    if (cfg.mbufs < need)
      p.fail(m.has("mbufs") ? *m.get("mbufs") : root, "mbufs",
             fmt::format("{} mbufs is too small: the ports' rx/tx rings alone need {} (sum of rx_desc + tx_desc + {})",
                         cfg.mbufs, need, kMbufSlack));
  }

  void load_control(const YAML::Node& n) {
    Map m(p, n, "control", {"socket", "group"});
    if (auto v = m.get("socket")) {
      std::string path = p.nonempty_string(*v, "control.socket");
      if (path.size() > kMaxSocketPath)
        p.fail(*v, "control.socket", fmt::format("path is {} bytes; a Unix socket path is at most {}", path.size(), kMaxSocketPath));
      cfg.control.socket_path = path;
    }
    if (auto v = m.get("group")) cfg.control.socket_group = p.scalar(*v, "control.group");
  }

  void load_exception(const YAML::Node& n) {
    Map m(p, n, "exception", {"enabled", "device"});
    if (auto v = m.get("enabled")) cfg.exception.enabled = p.boolean(*v, "exception.enabled");
    if (auto v = m.get("device")) cfg.exception.device = p.nonempty_string(*v, "exception.device");
  }

  void load_ports(const YAML::Node& list) {
    std::map<uint32_t, std::string> addr_owner;
    bool have_protected = false, have_unprotected = false;
    p.each(list, "ports", [&](const YAML::Node& n, const std::string& path) {
      Map m(p, n, path, {"name", "device", "role", "addresses", "mac", "peer_mac", "peer_ip", "mtu", "rx_desc", "tx_desc",
                         "gateway", "neighbors", "neighbor_timeout"});
      PortConfig port;
      port.name = p.name(m.require("name"), m.sub("name"));
      if (port_index.count(port.name))
        p.fail(*m.get("name"), m.sub("name"),
               fmt::format("duplicate port name '{}' (also ports[{}])", port.name, port_index[port.name]));
      port.device = p.nonempty_string(m.require("device"), m.sub("device"));
      YAML::Node role = m.require("role");
      std::string r = lower(p.scalar(role, m.sub("role")));
      if (r == "protected") port.role = PortRole::kProtected;
      else if (r == "unprotected") port.role = PortRole::kUnprotected;
      else p.fail(role, m.sub("role"), fmt::format("unknown role '{}' (expected protected or unprotected)", role.Scalar()));
      if (auto v = m.get("addresses"))
        p.each(
            *v, m.sub("addresses"),
            [&](const YAML::Node& a, const std::string& apath) {
              // "a.b.c.d" or "a.b.c.d/len": the address and its connected subnet.
              uint32_t ip;
              uint8_t len = 0;
              std::string text = a.IsScalar() ? a.Scalar() : std::string();
              if (size_t slash = text.find('/'); slash != std::string::npos) {
                auto addr = parse_ipv4_text(std::string_view(text).substr(0, slash));
                std::string len_text = text.substr(slash + 1);
                unsigned l = 0;
                auto [ptr, ec] = std::from_chars(len_text.data(), len_text.data() + len_text.size(), l);
                if (!addr || len_text.empty() || ec != std::errc() || ptr != len_text.data() + len_text.size() ||
                    l < 1 || l > 32 || (len_text.size() > 1 && len_text[0] == '0'))
                  p.fail(a, apath, fmt::format("bad address '{}' (expected a.b.c.d or a.b.c.d/len with len 1..32)", text));
                if (!is_unicast_host(*addr))
                  p.fail(a, apath, fmt::format("{} is not a unicast host address", text));
                ip = *addr;
                len = static_cast<uint8_t>(l);
                uint32_t mask = prefix_mask(len);
                if (len <= 30 && ((ip & ~mask) == 0 || (ip & ~mask) == ~mask))
                  p.fail(a, apath, fmt::format("{} is the subnet's network or broadcast address, not a host", text));
              } else {
                ip = p.ipv4(a, apath);
              }
              auto [it, fresh] = addr_owner.emplace(ip, apath);
              if (!fresh) p.fail(a, apath, fmt::format("address {} is already used by {}", format_ipv4(ip), it->second));
              port.addresses.push_back(ip);
              port.prefix_lens.push_back(len);
            },
            true);
      if (auto v = m.get("mac")) port.mac = p.mac(*v, m.sub("mac"));
      if (auto v = m.get("peer_mac")) port.peer_mac = p.mac(*v, m.sub("peer_mac"));
      if (auto v = m.get("peer_ip")) port.peer_ip = p.ipv4(*v, m.sub("peer_ip"));
      if (auto v = m.get("mtu")) port.mtu = mtu(*v, m.sub("mtu"));
      if (auto v = m.get("rx_desc")) port.rx_desc = desc(*v, m.sub("rx_desc"));
      if (auto v = m.get("tx_desc")) port.tx_desc = desc(*v, m.sub("tx_desc"));
      load_neighbor_fields(m, port, addr_owner);

      if (port.role == PortRole::kProtected) {
        have_protected = true;
        bool has_subnet = std::any_of(port.prefix_lens.begin(), port.prefix_lens.end(), [](uint8_t l) { return l; });
        if (!port.peer_mac && !port.peer_ip && !port.gateway && !has_subnet)
          p.fail(n, path,
                 "a protected port needs peer_ip, peer_mac, gateway or an address with a subnet (a.b.c.d/len): "
                 "where decrypted traffic is sent");
        if (port.gateway && port.peer_ip && *port.gateway != *port.peer_ip)
          p.fail(*m.get("gateway"), m.sub("gateway"),
                 fmt::format("gateway {} differs from peer_ip {} (they name the same next hop: give one)",
                             format_ipv4(*port.gateway), format_ipv4(*port.peer_ip)));
        if (port.peer_ip && addr_owner.count(*port.peer_ip))
          p.fail(*m.get("peer_ip"), m.sub("peer_ip"),
                 fmt::format("{} is one of this gateway's own addresses", format_ipv4(*port.peer_ip)));
        if (port.peer_ip && !port.peer_mac && port.addresses.empty())
          p.fail(*m.get("peer_ip"), m.sub("peer_ip"),
                 "resolving peer_ip by ARP needs an address on this port: set addresses, or set peer_mac");
      } else {
        have_unprotected = true;
        for (const char* k : {"peer_mac", "peer_ip"})
          if (m.has(k))
            p.fail(*m.get(k), m.sub(k),
                   fmt::format("{} applies to protected ports only (tunnels have their own next hop)", k));
      }
      port_index[port.name] = cfg.ports.size();
      cfg.ports.push_back(std::move(port));
    });
    if (!have_protected) p.fail(list, "ports", "no port has role: protected (the LAN side)");
    if (!have_unprotected) p.fail(list, "ports", "no port has role: unprotected (the side where the tunnels run)");
  }

  // gateway, neighbors (static entries) and neighbor_timeout of a port.
  void load_neighbor_fields(const Map& m, PortConfig& port, const std::map<uint32_t, std::string>& addr_owner) {
    auto on_link = [&](uint32_t a) {
      for (size_t i = 0; i < port.addresses.size(); i++)
        if (port.prefix_lens[i] && ((a ^ port.addresses[i]) & prefix_mask(port.prefix_lens[i])) == 0) return true;
      return false;
    };
    bool has_subnet = std::any_of(port.prefix_lens.begin(), port.prefix_lens.end(), [](uint8_t l) { return l; });
    if (auto v = m.get("gateway")) {
      port.gateway = p.ipv4(*v, m.sub("gateway"));
      if (addr_owner.count(*port.gateway))
        p.fail(*v, m.sub("gateway"), fmt::format("{} is one of this gateway's own addresses", format_ipv4(*port.gateway)));
      if (port.addresses.empty())
        p.fail(*v, m.sub("gateway"), "resolving the gateway by ARP needs an address on this port: set addresses");
      if (has_subnet && !on_link(*port.gateway))
        p.fail(*v, m.sub("gateway"),
               fmt::format("{} is not in any of this port's subnets (a gateway must be on-link)", format_ipv4(*port.gateway)));
    }
    if (auto v = m.get("neighbors")) {
      std::set<uint32_t> seen;
      p.each(*v, m.sub("neighbors"), [&](const YAML::Node& e, const std::string& epath) {
        Map em(p, e, epath, {"ip", "mac"});
        NeighborConfig nc;
        nc.ip = p.ipv4(em.require("ip"), em.sub("ip"));
        nc.mac = p.mac(em.require("mac"), em.sub("mac"));
        if (addr_owner.count(nc.ip))
          p.fail(*em.get("ip"), em.sub("ip"), fmt::format("{} is one of this gateway's own addresses", format_ipv4(nc.ip)));
        if (!seen.insert(nc.ip).second)
          p.fail(*em.get("ip"), em.sub("ip"), fmt::format("{} is listed twice", format_ipv4(nc.ip)));
        port.neighbors.push_back(nc);
      });
      if (port.neighbors.size() > kMaxStaticNeighbors)
        p.fail(*v, m.sub("neighbors"), fmt::format("at most {} static neighbours per port", kMaxStaticNeighbors));
    }
    if (auto v = m.get("neighbor_timeout"))
      port.neighbor_timeout_s = static_cast<uint32_t>(p.integer(*v, m.sub("neighbor_timeout"), 1, 86400));
  }

  void load_tunnels(const YAML::Node& list) {
    if (list.IsSequence() && list.size() > kMaxTunnels)
      p.fail(list, "tunnels", fmt::format("{} tunnels configured; at most {} are supported", list.size(), kMaxTunnels));
    p.each(list, "tunnels", [&](const YAML::Node& n, const std::string& path) {
      Map m(p, n, path,
            {"name", "port", "local", "remote", "gateway", "next_hop_mac", "udp_encap", "udp_src_port", "udp_dst_port",
             "ttl", "dscp", "df", "mtu", "mss_clamp", "up"});
      TunnelConfig t;
      t.name = p.name(m.require("name"), m.sub("name"));
      if (tunnel_index.count(t.name))
        p.fail(*m.get("name"), m.sub("name"),
               fmt::format("duplicate tunnel name '{}' (also tunnels[{}])", t.name, tunnel_index[t.name]));
      YAML::Node port_node = m.require("port");
      t.port = p.scalar(port_node, m.sub("port"));
      auto pit = port_index.find(t.port);
      if (pit == port_index.end()) p.fail(port_node, m.sub("port"), fmt::format("no port named '{}'", t.port));
      const PortConfig& port = cfg.ports[pit->second];
      if (port.role != PortRole::kUnprotected)
        p.fail(port_node, m.sub("port"),
               fmt::format("port '{}' is protected; tunnels must run over an unprotected port", t.port));
      YAML::Node local = m.require("local");
      t.local = p.ipv4(local, m.sub("local"));
      if (std::find(port.addresses.begin(), port.addresses.end(), t.local) == port.addresses.end()) {
        std::string have;
        for (uint32_t a : port.addresses) have += (have.empty() ? "" : ", ") + format_ipv4(a);
        p.fail(local, m.sub("local"),
               fmt::format("{} is not an address of port '{}' (its addresses: {})", format_ipv4(t.local), t.port,
                           have.empty() ? "none" : have));
      }
      YAML::Node remote = m.require("remote");
      t.remote = p.ipv4(remote, m.sub("remote"));
      for (const auto& pc : cfg.ports)
        if (std::find(pc.addresses.begin(), pc.addresses.end(), t.remote) != pc.addresses.end())
          p.fail(remote, m.sub("remote"),
                 fmt::format("{} is this gateway's own address (port '{}')", format_ipv4(t.remote), pc.name));
      if (auto v = m.get("gateway")) t.gateway = p.ipv4(*v, m.sub("gateway"));
      if (auto v = m.get("next_hop_mac")) t.next_hop_mac = p.mac(*v, m.sub("next_hop_mac"));
      if (auto v = m.get("udp_encap")) t.udp_encap = p.boolean(*v, m.sub("udp_encap"));
      for (auto [key, field] : {std::pair{"udp_src_port", &t.udp_src_port}, std::pair{"udp_dst_port", &t.udp_dst_port}}) {
        if (auto v = m.get(key)) {
          if (!t.udp_encap)
            p.fail(*v, m.sub(key), fmt::format("{} is set but udp_encap is false", key));
          *field = static_cast<uint16_t>(p.integer(*v, m.sub(key), 1, 65535));
        }
      }
      if (auto v = m.get("ttl")) t.ttl = static_cast<uint8_t>(p.integer(*v, m.sub("ttl"), 1, 255));
      if (auto v = m.get("dscp")) {
        std::string d = p.scalar(*v, m.sub("dscp"), "copy or 0..63");
        if (lower(d) == "copy") t.dscp = -1;
        else if (d.empty() || !std::isdigit(static_cast<unsigned char>(d[0])))
          p.fail(*v, m.sub("dscp"), fmt::format("expected copy or 0..63, got '{}'", d));
        else t.dscp = static_cast<int16_t>(p.integer(*v, m.sub("dscp"), 0, 63));
      }
      if (auto v = m.get("df")) {
        std::string d = lower(p.scalar(*v, m.sub("df")));
        if (d == "copy") t.df = DfPolicyConfig::kCopy;
        else if (d == "set") t.df = DfPolicyConfig::kSet;
        else if (d == "clear") t.df = DfPolicyConfig::kClear;
        else p.fail(*v, m.sub("df"), fmt::format("unknown df policy '{}' (expected copy, set or clear)", v->Scalar()));
      }
      if (auto v = m.get("mtu")) {
        t.mtu = mtu(*v, m.sub("mtu"));
        if (t.mtu > port.mtu)
          p.fail(*v, m.sub("mtu"), fmt::format("{} exceeds the MTU of port '{}' ({})", t.mtu, t.port, port.mtu));
      }
      if (auto v = m.get("mss_clamp")) t.mss_clamp = static_cast<uint16_t>(p.integer(*v, m.sub("mss_clamp"), 0, 65535));
      if (t.mss_clamp != 0 && (t.mss_clamp < 88 || t.mss_clamp > kMaxMtu - 40))
        p.fail(*m.get("mss_clamp"), m.sub("mss_clamp"),
               fmt::format("{} is out of range: 0 (off) or 88..{}", t.mss_clamp, kMaxMtu - 40));
      if (auto v = m.get("up")) t.up = p.boolean(*v, m.sub("up"));
      tunnel_index[t.name] = cfg.tunnels.size();
      cfg.tunnels.push_back(std::move(t));
    });
  }

  const TunnelConfig& tunnel_ref(const YAML::Node& n, const std::string& path, std::string* out) {
    *out = p.scalar(n, path);
    auto it = tunnel_index.find(*out);
    if (it == tunnel_index.end()) p.fail(n, path, fmt::format("no tunnel named '{}'", *out));
    return cfg.tunnels[it->second];
  }

  void load_routes(const YAML::Node& list) {
    std::map<std::pair<uint32_t, uint8_t>, std::string> seen;
    p.each(list, "routes", [&](const YAML::Node& n, const std::string& path) {
      Map m(p, n, path, {"prefix", "via"});
      RouteConfig r;
      YAML::Node pn = m.require("prefix");
      r.prefix = p.prefix(pn, m.sub("prefix"));
      auto [it, fresh] = seen.emplace(std::pair{r.prefix.addr, r.prefix.len}, path);
      if (!fresh)
        p.fail(pn, m.sub("prefix"),
               fmt::format("duplicate route for {} (also {}); list every next hop under one route's via",
                           format_prefix(r.prefix), it->second));
      YAML::Node via = m.require("via");
      std::map<std::string, std::string> hop_seen;
      p.each(via, m.sub("via"), [&](const YAML::Node& h, const std::string& hpath) {
        Map hm(p, h, hpath, {"tunnel", "priority"});
        RouteHopConfig hop;
        YAML::Node tn = hm.require("tunnel");
        tunnel_ref(tn, hm.sub("tunnel"), &hop.tunnel);
        auto [hit, hfresh] = hop_seen.emplace(hop.tunnel, hpath);
        if (!hfresh)
          p.fail(tn, hm.sub("tunnel"), fmt::format("tunnel '{}' is listed twice in this route (also {})", hop.tunnel, hit->second));
        hop.priority = 0;
        if (auto v = hm.get("priority")) hop.priority = static_cast<uint32_t>(p.integer(*v, hm.sub("priority"), 0, 65535));
        r.via.push_back(std::move(hop));
      });
      if (r.via.empty()) p.fail(via, m.sub("via"), "a route needs at least one next hop");
      cfg.routes.push_back(std::move(r));
    });
  }

  void selectors(const Map& m, const char* key, std::vector<Ipv4Prefix>* out) {
    auto v = m.get(key);
    if (!v) return;
    p.each(
        *v, m.sub(key),
        [&](const YAML::Node& s, const std::string& spath) {
          Ipv4Prefix pf = p.prefix(s, spath);
          for (const auto& o : *out)
            if (o.addr == pf.addr && o.len == pf.len) p.fail(s, spath, fmt::format("{} is listed twice", format_prefix(pf)));
          out->push_back(pf);
        },
        true);
    if (out->empty()) p.fail(*v, m.sub(key), "empty selector list; omit the key for a route-based SA");
  }

  void load_sas(const YAML::Node& list) {
    std::map<std::pair<SaDirection, uint32_t>, std::string> spi_seen;
    std::map<std::string, std::string> outbound_of_tunnel;
    p.each(list, "sas", [&](const YAML::Node& n, const std::string& path) {
      Map m(p, n, path,
            {"direction", "spi", "tunnel", "algo", "key", "esn", "replay_window", "seq", "local_selectors",
             "remote_selectors"});
      SaConfig sa;
      YAML::Node dn = m.require("direction");
      std::string d = lower(p.scalar(dn, m.sub("direction")));
      if (d == "in" || d == "inbound") sa.direction = SaDirection::kInbound;
      else if (d == "out" || d == "outbound") sa.direction = SaDirection::kOutbound;
      else p.fail(dn, m.sub("direction"), fmt::format("unknown direction '{}' (expected in or out)", dn.Scalar()));
      const bool in = sa.direction == SaDirection::kInbound;

      YAML::Node sn = m.require("spi");
      uint64_t spi = p.integer(sn, m.sub("spi"), 0, 0xffffffffu);
      if (spi == 0) p.fail(sn, m.sub("spi"), "SPI 0 is reserved (RFC 4303)");
      if (spi < kMinSpi) p.fail(sn, m.sub("spi"), fmt::format("SPI {} is in 1..255, reserved by IANA", spi));
      sa.spi = static_cast<uint32_t>(spi);
      auto [sit, sfresh] = spi_seen.emplace(std::pair{sa.direction, sa.spi}, path);
      if (!sfresh)
        p.fail(sn, m.sub("spi"),
               fmt::format("duplicate {} SPI 0x{:08x} (also {})", in ? "inbound" : "outbound", sa.spi, sit->second));

      YAML::Node tn = m.require("tunnel");
      tunnel_ref(tn, m.sub("tunnel"), &sa.tunnel);
      if (!in) {
        auto [oit, ofresh] = outbound_of_tunnel.emplace(sa.tunnel, path);
        if (!ofresh)
          p.fail(tn, m.sub("tunnel"),
                 fmt::format("tunnel '{}' already has an outbound SA ({}); one outbound SA per tunnel", sa.tunnel, oit->second));
      }

      YAML::Node an = m.require("algo");
      std::string a = lower(p.scalar(an, m.sub("algo")));
      size_t key_len = 0;
      if (a == "aes128-gcm") sa.algo = SaAlgo::kAes128Gcm, key_len = 20;
      else if (a == "aes256-gcm") sa.algo = SaAlgo::kAes256Gcm, key_len = 36;
      else p.fail(an, m.sub("algo"), fmt::format("unknown algo '{}' (expected aes128-gcm or aes256-gcm)", an.Scalar()));

      YAML::Node kn = m.require("key");
      sa.keymat = p.hex_bytes(kn, m.sub("key"));
      if (sa.keymat.size() != key_len)
        p.fail(kn, m.sub("key"),
               fmt::format("{} needs {} bytes ({} hex digits: {}-byte key || 4-byte salt), got {} bytes", a, key_len,
                           key_len * 2, key_len - 4, sa.keymat.size()));

      if (auto v = m.get("esn")) sa.esn = p.boolean(*v, m.sub("esn"));
      if (auto v = m.get("replay_window")) {
        if (!in) p.fail(*v, m.sub("replay_window"), "replay_window applies to inbound SAs only");
        sa.replay_window = static_cast<uint32_t>(p.integer(*v, m.sub("replay_window"), 0, kMaxReplayWindow));
      }
      if (auto v = m.get("seq")) {
        if (in) p.fail(*v, m.sub("seq"), "seq (the first outbound sequence number) applies to outbound SAs only");
        sa.initial_seq = p.integer(*v, m.sub("seq"), 1, sa.esn ? ~uint64_t{0} : 0xffffffffu);
      }
      selectors(m, "local_selectors", &sa.local_selectors);
      selectors(m, "remote_selectors", &sa.remote_selectors);
      if (sa.local_selectors.empty() != sa.remote_selectors.empty())
        p.fail(n, path, "a policy-based SA needs both local_selectors and remote_selectors (or neither: route-based)");
      cfg.sas.push_back(std::move(sa));
    });
  }

  // Two ports (or a port and the exception tap) on the same DPDK device
  // name (the part before the first ','), e.g. net_tap0, cannot both attach.
  void check_devices() {
    std::map<std::string, std::string> seen;
    auto dev_name = [](const std::string& d) { return d.substr(0, d.find(',')); };
    const YAML::Node& r = root;  // const: operator[] must not insert
    YAML::Node ports = r["ports"];
    for (size_t i = 0; i < cfg.ports.size(); ++i) {
      std::string path = fmt::format("ports[{}].device", i);
      auto [it, fresh] = seen.emplace(dev_name(cfg.ports[i].device), path);
      if (!fresh)
        p.fail(ports[i]["device"], path, fmt::format("device '{}' is already used by {}", it->first, it->second));
    }
    if (cfg.exception.enabled) {
      auto it = seen.find(dev_name(cfg.exception.device));
      if (it != seen.end())
        p.fail(r["exception"]["device"], "exception.device",
               fmt::format("device '{}' is already used by {}", it->first, it->second));
    }
  }
};

}  // namespace

std::string format_ipv4(uint32_t a) {
  return fmt::format("{}.{}.{}.{}", a >> 24, (a >> 16) & 0xff, (a >> 8) & 0xff, a & 0xff);
}

std::string format_mac(const MacAddr& m) {
  return fmt::format("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m.b[0], m.b[1], m.b[2], m.b[3], m.b[4], m.b[5]);
}

GatewayConfig parse_config(const std::string& yaml_text, const std::string& source_name) {
  std::vector<YAML::Node> docs;
  try {
    docs = YAML::LoadAll(yaml_text);
  } catch (const YAML::Exception& e) {
    if (e.mark.is_null()) throw ConfigError(fmt::format("{}: YAML syntax error: {}", source_name, e.msg));
    throw ConfigError(
        fmt::format("{}:{}:{}: YAML syntax error: {}", source_name, e.mark.line + 1, e.mark.column + 1, e.msg));
  }
  Parser p(source_name);
  if (docs.empty() || docs[0].IsNull()) throw ConfigError(fmt::format("{}: empty configuration", source_name));
  if (docs.size() > 1)
    p.fail(docs[1], "", fmt::format("the file holds {} YAML documents; expected one", docs.size()));
  Loader l{p, {}, {}, {}, docs[0]};
  try {
    l.load_top();
  } catch (const YAML::Exception& e) {
    // Should not happen (every access is checked); keep the source in the message if it does.
    throw ConfigError(fmt::format("{}: {}", source_name, e.what()));
  }
  return std::move(l.cfg);
}

GatewayConfig load_config_file(const std::string& path) {
  std::error_code ec;
  auto st = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(st)) {
    int err = ec ? ec.value() : ENOENT;
    throw ConfigError(fmt::format("{}: cannot open configuration: {}", path, std::strerror(err)));
  }
  if (std::filesystem::is_directory(st))
    throw ConfigError(fmt::format("{}: cannot read configuration: is a directory", path));
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(fmt::format("{}: cannot open configuration: {}", path, std::strerror(errno)));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw ConfigError(fmt::format("{}: cannot read configuration: {}", path, std::strerror(errno)));
  return parse_config(text.str(), path);
}

// Keep in sync with examples/aws-route-based.yaml (the tests compare them).
const char* embedded_default_config() {
  return R"yaml(# espgw embedded default: the AWS four-tunnel topology on virtual devices.
# Runs without a NIC or hugepages. The keys are DEMO-ONLY; see
# examples/aws-route-based.yaml for the commented version of this file.
eal: [--no-huge, -m, "1024", --no-pci, --file-prefix, espgw]
workers: [1]
mbufs: 16384
icmp_rate_limit: 100
stats_interval: 0
control: { socket: /run/espgw/espgw.sock, group: "" }
exception: { enabled: false, device: "net_tap2,iface=espgw0" }

ports:
  - name: lan
    device: "net_tap0,iface=espgw-lan"
    role: protected
    addresses: [10.240.128.1]
    mac: "02:00:00:00:00:01"
    peer_ip: 10.240.128.2
    peer_mac: "02:00:00:00:01:02"
    mtu: 1500
  - name: wan
    device: "net_tap1,iface=espgw-wan"
    role: unprotected
    addresses: [198.51.100.10, 198.51.100.11]
    mac: "02:00:00:00:00:02"
    mtu: 1500

tunnels:
  - { name: aws-a1, port: wan, local: 198.51.100.10, remote: 203.0.113.1,   next_hop_mac: "02:00:00:00:02:fe", mss_clamp: 1379 }
  - { name: aws-a2, port: wan, local: 198.51.100.10, remote: 203.0.113.2,   next_hop_mac: "02:00:00:00:02:fe", mss_clamp: 1379 }
  - { name: aws-b1, port: wan, local: 198.51.100.11, remote: 203.0.113.129, next_hop_mac: "02:00:00:00:02:fe", mss_clamp: 1379 }
  - { name: aws-b2, port: wan, local: 198.51.100.11, remote: 203.0.113.130, next_hop_mac: "02:00:00:00:02:fe", mss_clamp: 1379 }

routes:
  - prefix: 172.31.0.0/16
    via:
      - { tunnel: aws-a1, priority: 10 }
      - { tunnel: aws-a2, priority: 20 }
      - { tunnel: aws-b1, priority: 30 }
      - { tunnel: aws-b2, priority: 40 }

# DEMO-ONLY static keys (key || salt). Never use them on a real network.
sas:
  - { direction: out, spi: 0x00001001, tunnel: aws-a1, algo: aes128-gcm, key: "0x11111111111111111111111111111111a1a1a1a1" }
  - { direction: in,  spi: 0x00002001, tunnel: aws-a1, algo: aes128-gcm, key: "0x22222222222222222222222222222222a1a1a1a1", replay_window: 1024 }
  - { direction: out, spi: 0x00001002, tunnel: aws-a2, algo: aes128-gcm, key: "0x33333333333333333333333333333333a2a2a2a2" }
  - { direction: in,  spi: 0x00002002, tunnel: aws-a2, algo: aes128-gcm, key: "0x44444444444444444444444444444444a2a2a2a2", replay_window: 1024 }
  - { direction: out, spi: 0x00001003, tunnel: aws-b1, algo: aes128-gcm, key: "0x55555555555555555555555555555555b1b1b1b1" }
  - { direction: in,  spi: 0x00002003, tunnel: aws-b1, algo: aes128-gcm, key: "0x66666666666666666666666666666666b1b1b1b1", replay_window: 1024 }
  - { direction: out, spi: 0x00001004, tunnel: aws-b2, algo: aes128-gcm, key: "0x77777777777777777777777777777777b2b2b2b2" }
  - { direction: in,  spi: 0x00002004, tunnel: aws-b2, algo: aes128-gcm, key: "0x88888888888888888888888888888888b2b2b2b2", replay_window: 1024 }
)yaml";
}

}  // namespace espgw::control
