// YAML configuration loader: schema in docs/config.md.
//
// Parsing goes through a small layer over yaml-cpp that knows the YAML path of
// every node ("tunnels[2].remote") and its line/column, so every error names
// the field and says why. Scalars are converted here, not by yaml-cpp's
// as<T>(), so that a type error reports the path rather than "bad conversion".
// No DPDK at run time: it uses only the data plane's table sizes (headers),
// so the unit tests need no EAL.
#include "control/config.h"
#include "control/sa_spec.h"
#include "dataplane/dataplane.h"

#include <fmt/format.h>
#include <yaml-cpp/eventhandler.h>
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
#include <unordered_map>
#include <sstream>
#include <string_view>

#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>

namespace espgw::control {

namespace {

constexpr size_t kMaxTunnels = dataplane::kMaxTunnels;
constexpr uint32_t kMaxLcore = 127;          // RTE_MAX_LCORE - 1 of the default DPDK build
constexpr uint32_t kMaxReplayWindow = 4096;
constexpr uint32_t kMinSpi = 256;            // 0 reserved (RFC 4303), 1..255 reserved by IANA
constexpr uint16_t kMinMtu = 576;
constexpr uint16_t kMaxMtu = 9000;
constexpr uint32_t kMbufSlack = 1024;        // bursts in flight (kBurst per port and worker, fragments, ICMP)
constexpr uint32_t kMempoolCache = 256;      // per lcore, as the gateway creates the pool
constexpr uint32_t kMempoolCacheMax = kMempoolCache * 3 / 2;  // DPDK's flush threshold: what a cache may hold
// The data plane's fixed table sizes (headers only).
constexpr size_t kMaxWorkers = dataplane::kMaxWorkers;
constexpr size_t kMaxPorts = dataplane::kMaxPorts;
constexpr size_t kMaxPortAddrs = dataplane::kMaxPortAddrs;
constexpr size_t kMaxSas = dataplane::kMaxSas;
constexpr uint16_t kExceptionDesc = 1024;    // the exception port's rings (not configurable)
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

// Forward declarations: defined with the public helpers below.
}  // namespace
std::optional<size_t> configured_workers(const GatewayConfig& cfg);
uint64_t mbufs_needed(const GatewayConfig& cfg, size_t workers);
namespace {

// Lcore ids of an EAL list: "0-3", "0,2,4", "1@0,2@1", "(1,2)@0"; nullopt
// when it is not one of those forms.
bool add_lcore_list(std::string_view s, std::set<unsigned>& out) {
  std::string cur;
  int depth = 0;
  auto element = [&](std::string e) -> bool {
    if (auto at = e.find('@'); at != std::string::npos) e = e.substr(0, at);
    if (!e.empty() && e.front() == '(' && e.back() == ')') return add_lcore_list(e.substr(1, e.size() - 2), out);
    unsigned a = 0, b = 0;
    size_t dash = e.find('-');
    std::string_view x = std::string_view(e).substr(0, dash);
    auto r1 = std::from_chars(x.data(), x.data() + x.size(), a);
    if (x.empty() || r1.ec != std::errc() || r1.ptr != x.data() + x.size()) return false;
    b = a;
    if (dash != std::string::npos) {
      std::string_view y = std::string_view(e).substr(dash + 1);
      auto r2 = std::from_chars(y.data(), y.data() + y.size(), b);
      if (y.empty() || r2.ec != std::errc() || r2.ptr != y.data() + y.size() || b < a || b > kMaxLcore) return false;
    }
    if (a > kMaxLcore) return false;
    for (unsigned l = a; l <= b; l++) out.insert(l);
    return true;
  };
  for (char c : s) {
    if (c == '(') depth++;
    if (c == ')') depth--;
    if (c == ',' && depth == 0) {
      if (!element(cur)) return false;
      cur.clear();
    } else {
      cur.push_back(c);
    }
  }
  return element(cur);
}

struct EalLcores {
  std::set<unsigned> lcores;
  unsigned main;
};

// The lcores the eal: list enables (-l, --lcores, -c) and the main one
// (--main-lcore, else the lowest); nullopt when the list does not say.
std::optional<EalLcores> eal_lcores(const std::vector<std::string>& a) {
  std::optional<EalLcores> out;
  std::optional<unsigned> main;
  for (size_t i = 0; i < a.size(); i++) {
    std::string v;
    bool mask = false;
    if ((a[i] == "-l" || a[i] == "--lcores" || a[i] == "-c") && i + 1 < a.size()) v = a[i + 1], mask = a[i] == "-c";
    else if (a[i].rfind("--lcores=", 0) == 0) v = a[i].substr(9);
    else if (a[i].size() > 2 && a[i].rfind("-l", 0) == 0) v = a[i].substr(2);
    else if (a[i].size() > 2 && a[i].rfind("-c", 0) == 0) v = a[i].substr(2), mask = true;
    else if (a[i] == "--main-lcore" && i + 1 < a.size()) {
      unsigned m = 0;
      auto r = std::from_chars(a[i + 1].data(), a[i + 1].data() + a[i + 1].size(), m);
      if (r.ec == std::errc()) main = m;
      continue;
    } else continue;
    EalLcores e;
    if (mask) {  // hex core mask, lowest bit = lcore 0
      std::string_view m = v;
      if (m.size() > 2 && m[0] == '0' && (m[1] == 'x' || m[1] == 'X')) m.remove_prefix(2);
      unsigned bit = 0;
      for (size_t k = m.size(); k-- > 0; bit += 4) {
        unsigned d = 0;
        auto r = std::from_chars(m.data() + k, m.data() + k + 1, d, 16);
        if (r.ec != std::errc()) return std::nullopt;
        for (unsigned j = 0; j < 4; j++)
          if (d >> j & 1) e.lcores.insert(bit + j);
      }
    } else if (!add_lcore_list(v, e.lcores)) {
      return std::nullopt;
    }
    out = std::move(e);
  }
  if (!out || out->lcores.empty()) return std::nullopt;
  out->main = main.value_or(*out->lcores.begin());
  return out;
}

std::string mbufs_text(const GatewayConfig& cfg, size_t workers, uint64_t need, bool pinned) {
  uint64_t rings = 0;
  for (const auto& port : cfg.ports) rings += uint64_t{port.rx_desc} + port.tx_desc;
  if (cfg.exception.enabled) rings += 2u * kExceptionDesc;
  return fmt::format("{} mbufs is too small: {} needed = {} worker(s){} x {} (rx_desc + tx_desc of every port{}) + "
                     "{} lcores x {} (mempool caches) + {} in flight",
                     cfg.mbufs, need, workers, pinned ? "" : " (assumed: workers is not set)", rings,
                     cfg.exception.enabled ? ", exception port 1024 + 1024" : "", workers + 1, kMempoolCacheMax,
                     kMbufSlack);
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

  // "source:line:col" of a node (just "source" when it has no position).
  std::string where(const YAML::Node& at) const {
    std::string w = source_;
    YAML::Mark m = YAML::Mark::null_mark();
    try {
      if (at.IsDefined()) m = at.Mark();
    } catch (const YAML::Exception&) {
    }
    if (!m.is_null()) w += fmt::format(":{}:{}", m.line + 1, m.column + 1);
    return w;
  }

  [[noreturn]] void fail(const YAML::Node& at, const std::string& path, const std::string& why) const {
    const std::string where = this->where(at);
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

  // Key material: every copy made here is wiped on the way out (an error
  // included); the YAML node's own scalar is wiped when parsing ends
  // (wipe_key_scalars: an alias may read the same node twice).
  crypto::SecretBytes hex_bytes(const YAML::Node& n, const std::string& path) const {
    std::string s = scalar(n, path, "a hex string");
    std::string digits;
    struct Wipe {
      std::string& a;
      std::string& b;
      ~Wipe() {
        crypto::SecretBytes::wipe(a);
        crypto::SecretBytes::wipe(b);
      }
    } wipe{s, digits};
    digits.reserve(s.size());
    std::string_view v = s;
    if (v.size() >= 2 && v[0] == '0' && (v[1] == 'x' || v[1] == 'X')) v.remove_prefix(2);
    // Accept "aabbcc..." (spaces ignored, e.g. between key and salt) and
    // ipsec-secgw's "aa:bb:cc:..." forms. Errors quote only non-hex characters.
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
    crypto::SecretBytes out;
    out.reserve(digits.size() / 2);
    for (size_t i = 0; i < digits.size(); i += 2) {
      unsigned b = 0;
      std::from_chars(digits.data() + i, digits.data() + i + 2, b, 16);
      out.push_back(static_cast<uint8_t>(b));
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

 public:
  const std::string& source() const { return source_; }
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
           "tunnels", "routes", "routes_file", "sas"});
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
    if (auto n = m.get("routes_file")) load_routes_file(*n);
    if (auto n = m.get("sas")) load_sas(*n);
    check_devices();
    check_dataplane_limits(m);

    const std::optional<size_t> pinned = configured_workers(cfg);
    if (pinned && *pinned == 0)
      p.fail(m.has("eal") ? *m.get("eal") : root, "eal",
             "no worker lcore: give EAL at least two lcores (e.g. -l 0,1); the main lcore runs the control thread");
    if (pinned && *pinned > kMaxWorkers)
      p.fail(m.has("workers") ? *m.get("workers") : root, "workers",
             fmt::format("{} workers; at most {} are supported", *pinned, kMaxWorkers));
    if (auto e = eal_lcores(cfg.eal_args); e && !cfg.worker_lcores.empty())
      for (size_t i = 0; i < cfg.worker_lcores.size(); i++) {
        const uint32_t l = cfg.worker_lcores[i];
        if (!e->lcores.count(l) || l == e->main)
          p.fail(*m.get("workers"), "workers",
                 fmt::format("lcore {} is not an enabled worker lcore of the eal: list (main lcore {}); the "
                             "daemon would refuse it",
                             l, e->main));
      }
    const size_t workers = pinned.value_or(1);
    const uint64_t need = mbufs_needed(cfg, workers);
    if (cfg.mbufs < need)
      p.fail(m.has("mbufs") ? *m.get("mbufs") : root, "mbufs", mbufs_text(cfg, workers, need, pinned.has_value()));
    warn_unreachable_inbound();
    warn_static_outbound();
  }

  // A static outbound SA starts at its `seq` under the same key after every
  // restart: GCM nonces (salt || sequence number) repeat. The daemon cannot
  // tell, since it keeps no state across restarts.
  void warn_static_outbound() {
    size_t n = 0;
    std::string first;
    for (size_t i = 0; i < cfg.sas.size(); i++)
      if (cfg.sas[i].direction == SaDirection::kOutbound && n++ == 0)
        first = fmt::format("{}: sas[{}]", cfg.sas[i].position, i);
    if (n == 0) return;
    cfg.warnings.push_back(fmt::format(
        "{}: {} static outbound SA{} in this file: after every restart of the daemon {} sequence numbers again "
        "from `seq` under the same key, so AES-GCM nonces repeat (an observer can forge packets and recover "
        "plaintext); static outbound SAs are for labs only, give the keys to an IKE agent in production "
        "(see docs/config.md)",
        first, n, n == 1 ? "" : "s", n == 1 ? "it sends" : "they send"));
  }

  // Decrypted packets are accepted only when the FIB has an active route
  // back to their inner source (dataplane/worker.cpp: no route = "policy"),
  // and a route is active only while one of its tunnels has an outbound SA.
  void warn_unreachable_inbound() {
    const bool runtime_sas = !cfg.control.socket_path.empty() || cfg.xfrm.enabled;
    std::map<std::string, bool> can_be_up;  // tunnel -> has an outbound SA in the file and starts admin-up
    for (const auto& t : cfg.tunnels) can_be_up[t.name] = false;
    for (const auto& sa : cfg.sas)
      if (sa.direction == SaDirection::kOutbound) can_be_up[sa.tunnel] = true;
    for (const auto& t : cfg.tunnels)
      if (!t.up) can_be_up[t.name] = false;
    // Per route, once: does one of its next hops have an outbound SA? (10,000
    // SAs x 1M routes must not multiply.) An SA without selectors sees every route.
    std::unordered_map<std::string, bool> up(can_be_up.begin(), can_be_up.end());
    std::vector<char> route_up(cfg.routes.size(), 0);
    bool any_up = false;
    for (size_t r = 0; r < cfg.routes.size(); r++) {
      for (const auto& hop : cfg.routes[r].via)
        if (auto it = up.find(hop.tunnel); it != up.end() && it->second) route_up[r] = 1;
      any_up |= route_up[r] != 0;
    }
    for (size_t i = 0; i < cfg.sas.size(); i++) {
      const SaConfig& sa = cfg.sas[i];
      if (sa.direction != SaDirection::kInbound) continue;
      bool routed = false, any_route = false;
      if (sa.remote_selectors.empty()) {
        any_route = !cfg.routes.empty();
        routed = any_up;
      }
      for (size_t ri = 0; ri < cfg.routes.size() && !sa.remote_selectors.empty(); ri++) {
        const auto& r = cfg.routes[ri];
        // A policy-based SA's sources are its remote selectors: only routes that overlap them matter.
        bool relevant = false;
        for (const auto& sel : sa.remote_selectors) {
          uint8_t len = std::min(sel.len, r.prefix.len);
          if ((sel.addr & prefix_mask(len)) == (r.prefix.addr & prefix_mask(len))) relevant = true;
        }
        if (!relevant) continue;
        any_route = true;
        if (route_up[ri]) routed = true;
      }
      if (routed) continue;
      cfg.warnings.push_back(fmt::format(
          "{}: sas[{}] (inbound SPI 0x{:08x} on {}): {}; until {}, every packet decrypted on it is dropped as "
          "'policy' (a decrypted packet needs an active route back to its source; see docs/config.md)",
          sa.position, i, sa.spi, sa.tunnel,
          any_route ? "no route to its senders has a next hop with an outbound SA in this file"
                    : "no route covers its senders",
          runtime_sas && any_route ? "an agent installs an outbound SA on one of those tunnels"
                                   : "routes and an outbound SA are added"));
    }
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
             "ttl", "dscp", "df", "mtu", "mss_clamp", "up", "policy_based"});
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
      if (auto v = m.get("policy_based")) t.policy_based = p.boolean(*v, m.sub("policy_based"));
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

  // routes_file: one route per line, "PREFIX TUNNEL [PRIORITY]" (one next
  // hop; '#' starts a comment), for tables too big for YAML (a full table:
  // ~1M prefixes load in about a second). A relative path is relative to the
  // configuration file's folder. Checked like routes: (host bits, known
  // tunnel, no duplicate prefix, also against routes:).
  void load_routes_file(const YAML::Node& n) {
    std::string file = p.scalar(n, "routes_file", "a file name");
    std::filesystem::path fp(file);
    if (fp.is_relative()) {
      std::filesystem::path src(p.source());
      if (src.has_parent_path()) fp = src.parent_path() / fp;
    }
    const std::string name = fp.string();
    std::error_code ec;
    const auto size = std::filesystem::file_size(fp, ec);
    if (ec) p.fail(n, "routes_file", fmt::format("cannot read {}: {}", name, ec.message()));
    if (size > kMaxRoutesFileBytes)
      p.fail(n, "routes_file", fmt::format("{} is {} bytes; at most {} are read", name, size, kMaxRoutesFileBytes));
    std::ifstream in(fp);
    if (!in) p.fail(n, "routes_file", fmt::format("cannot open {}", name));
    std::unordered_map<uint64_t, size_t> seen;  // (addr << 8 | len) -> line (0: routes:)
    seen.reserve(cfg.routes.size() + size / 24);
    for (const auto& r : cfg.routes) seen.emplace(uint64_t{r.prefix.addr} << 8 | r.prefix.len, 0);
    std::unordered_map<std::string, size_t> known(tunnel_index.begin(), tunnel_index.end());
    std::string line;
    size_t lineno = 0;
    auto bad = [&](const std::string& why) {
      throw ConfigError(fmt::format("{}:{}: {} (routes_file of {})", name, lineno, why, p.source()));
    };
    while (std::getline(in, line)) {
      lineno++;
      if (auto h = line.find('#'); h != std::string::npos) line.resize(h);
      std::istringstream ls(line);
      std::string pfx, tunnel, prio, extra;
      if (!(ls >> pfx)) continue;
      if (!(ls >> tunnel)) bad(fmt::format("'{}': expected PREFIX TUNNEL [PRIORITY]", line));
      RouteHopConfig hop;
      hop.priority = 0;
      if (ls >> prio) {
        unsigned v = 0;
        auto [ptr, e] = std::from_chars(prio.data(), prio.data() + prio.size(), v);
        if (e != std::errc() || ptr != prio.data() + prio.size() || v > 65535)
          bad(fmt::format("priority '{}' is not in 0..65535", prio));
        hop.priority = v;
      }
      if (ls >> extra) bad(fmt::format("'{}': expected PREFIX TUNNEL [PRIORITY]", line));
      const size_t slash = pfx.find('/');
      auto a = parse_ipv4_text(std::string_view(pfx).substr(0, slash));
      unsigned len = 32;
      if (slash != std::string::npos) {
        auto [ptr, e] = std::from_chars(pfx.data() + slash + 1, pfx.data() + pfx.size(), len);
        if (e != std::errc() || ptr != pfx.data() + pfx.size() || slash + 1 == pfx.size()) a.reset();
      }
      if (!a || len > 32) bad(fmt::format("bad IPv4 prefix '{}' (expected a.b.c.d/len with len 0..32)", pfx));
      RouteConfig r;
      r.prefix = {*a, static_cast<uint8_t>(len)};
      if ((r.prefix.addr & ~prefix_mask(r.prefix.len)) != 0)
        bad(fmt::format("prefix '{}' has host bits set (the network is {})", pfx,
                        format_prefix({r.prefix.addr & prefix_mask(r.prefix.len), r.prefix.len})));
      if (!known.count(tunnel)) bad(fmt::format("no tunnel named '{}'", tunnel));
      auto [it, fresh] = seen.emplace(uint64_t{r.prefix.addr} << 8 | r.prefix.len, lineno);
      if (!fresh)
        bad(it->second ? fmt::format("duplicate route for {} (also line {})", pfx, it->second)
                       : fmt::format("duplicate route for {} (also in routes:)", pfx));
      hop.tunnel = std::move(tunnel);
      r.via.push_back(std::move(hop));
      cfg.routes.push_back(std::move(r));
    }
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
    const std::vector<TunnelDefaults> defaults = tunnel_defaults(cfg.tunnels);
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
      // The daemon's own validator, so that --check refuses what the daemon
      // would, with this entry's position.
      sa.position = p.where(n);
      try {
        validate_sa_spec(sa_spec_from_config(sa), defaults);
      } catch (const SaError& e) {
        p.fail(n, path, e.what());
      }
      // The SA database installs a key || salt once (a second outbound
      // install repeats GCM nonces, a second inbound one a window, one key
      // both ways the peer's nonces).
      for (size_t i = 0; i < cfg.sas.size(); i++)
        if (cfg.sas[i].keymat == sa.keymat)
          p.fail(*m.get("key"), m.sub("key"),
                 fmt::format("the same key || salt as sas[{}] ({}); every SA needs its own key{}", i,
                             cfg.sas[i].direction == SaDirection::kInbound ? "inbound" : "outbound",
                             cfg.sas[i].direction == sa.direction
                                 ? ""
                                 : " (one key in both directions repeats GCM nonces: both ends number from 1)"));
      cfg.sas.push_back(std::move(sa));
    });
  }

  // The data plane's fixed tables (dataplane/counters.h, dataplane.h): what
  // the daemon would refuse at start-up, refused here with a position.
  void check_dataplane_limits(const Map& m) {
    const size_t nports = cfg.ports.size() + (cfg.exception.enabled ? 1 : 0);
    if (nports > kMaxPorts)
      p.fail(m.require("ports"), "ports",
             fmt::format("{} ports{}; at most {} are supported", nports,
                         cfg.exception.enabled ? " (the exception port included)" : "", kMaxPorts));
    for (size_t i = 0; i < cfg.ports.size(); i++)
      if (cfg.ports[i].addresses.size() > kMaxPortAddrs)
        p.fail(static_cast<const YAML::Node&>(root)["ports"][i]["addresses"], fmt::format("ports[{}].addresses", i),
               fmt::format("{} addresses; at most {} per port", cfg.ports[i].addresses.size(), kMaxPortAddrs));
    if (cfg.sas.size() > kMaxSas)
      p.fail(*m.get("sas"), "sas", fmt::format("{} SAs; the SA table holds {}", cfg.sas.size(), kMaxSas));
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

namespace {
}  // namespace

std::optional<size_t> configured_workers(const GatewayConfig& cfg) {
  if (!cfg.worker_lcores.empty()) return cfg.worker_lcores.size();
  auto e = eal_lcores(cfg.eal_args);
  if (!e) return std::nullopt;
  return e->lcores.size() - (e->lcores.count(e->main) ? 1 : 0);
}

uint64_t mbufs_needed(const GatewayConfig& cfg, size_t workers) {
  uint64_t rings = 0;
  for (const auto& port : cfg.ports) rings += uint64_t{port.rx_desc} + port.tx_desc;
  if (cfg.exception.enabled) rings += 2u * kExceptionDesc;
  return workers * rings + (workers + 1) * uint64_t{kMempoolCacheMax} + kMbufSlack;
}

void check_on_this_host(const GatewayConfig& cfg, const std::string& source_name) {
  if (configured_workers(cfg)) return;  // the loader checked the configured count
  cpu_set_t set;
  CPU_ZERO(&set);
  size_t cpus = sched_getaffinity(0, sizeof(set), &set) == 0 ? static_cast<size_t>(CPU_COUNT(&set)) : 1;
  const size_t workers = cpus > 1 ? cpus - 1 : 1;
  const uint64_t need = mbufs_needed(cfg, workers);
  if (cfg.mbufs < need)
    throw ConfigError(fmt::format("{}: mbufs: {} (neither workers: nor an EAL lcore list is set, so EAL uses every "
                                  "CPU here: set workers: or eal -l to fix the count)",
                                  source_name, mbufs_text(cfg, workers, need, false)));
}

namespace {
// yaml-cpp keeps each scalar in a std::string it owns (not const): wipe the
// SAs' key strings once nothing reads them any more. (Its scanner's own
// temporary copies are freed inside yaml-cpp, out of reach.)
void wipe_key_scalars(const YAML::Node& root) noexcept {
  try {
    if (!root.IsMap()) return;
    const YAML::Node sas = root["sas"];
    if (!sas.IsSequence()) return;
    for (const auto& sa : sas) {
      if (!sa.IsMap()) continue;
      const YAML::Node key = sa["key"];
      if (key.IsScalar()) crypto::SecretBytes::wipe(const_cast<std::string&>(key.Scalar()));
    }
  } catch (const YAML::Exception&) {
  }
}
// The documents' start marks, read with the event parser. YAML::LoadAll
// cannot be used: on a document that starts with a token no node can start
// with (a stray ',' at the top: "," or "a: 1\n---\n,") yaml-cpp 0.7 ends the
// document without consuming the token and starts the next one at the same
// place, for ever, allocating as it goes (found by tests/fuzz/fuzz_config).
// A document that starts where the previous one did is that case: a syntax
// error at that mark.
struct DocumentStarts : YAML::EventHandler {
  std::vector<YAML::Mark> starts;
  void OnDocumentStart(const YAML::Mark& m) override { starts.push_back(m); }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

std::vector<YAML::Mark> document_starts(const std::string& text, const std::string& source_name) {
  std::istringstream in(text);
  YAML::Parser parser(in);
  DocumentStarts d;
  while (parser.HandleNextDocument(d)) {
    const size_t n = d.starts.size();
    if (n >= 2 && d.starts[n - 1].pos == d.starts[n - 2].pos) {
      const YAML::Mark& m = d.starts[n - 1];
      const char c = m.pos >= 0 && size_t(m.pos) < text.size() ? text[size_t(m.pos)] : '?';
      throw ConfigError(fmt::format("{}:{}:{}: YAML syntax error: unexpected '{}'", source_name, m.line + 1,
                                    m.column + 1, c));
    }
  }
  return std::move(d.starts);
}
}  // namespace

GatewayConfig parse_config(const std::string& yaml_text, const std::string& source_name) {
  YAML::Node root;
  std::vector<YAML::Mark> starts;
  try {
    starts = document_starts(yaml_text, source_name);
    if (!starts.empty()) root = YAML::Load(yaml_text);  // the first document
  } catch (const YAML::Exception& e) {
    if (e.mark.is_null()) throw ConfigError(fmt::format("{}: YAML syntax error: {}", source_name, e.msg));
    throw ConfigError(
        fmt::format("{}:{}:{}: YAML syntax error: {}", source_name, e.mark.line + 1, e.mark.column + 1, e.msg));
  }
  Parser p(source_name);
  if (starts.empty() || root.IsNull()) throw ConfigError(fmt::format("{}: empty configuration", source_name));
  if (starts.size() > 1)
    throw ConfigError(fmt::format("{}:{}:{}: the file holds {} YAML documents; expected one", source_name,
                                  starts[1].line + 1, starts[1].column + 1, starts.size()));
  struct WipeKeys {
    YAML::Node root;
    ~WipeKeys() { wipe_key_scalars(root); }
  } wipe_keys{root};
  Loader l{p, {}, {}, {}, root};
  try {
    l.load_top();
  } catch (const YAML::Exception& e) {
    // Should not happen (every access is checked); keep the source in the message if it does.
    throw ConfigError(fmt::format("{}: {}", source_name, e.what()));
  }
  return std::move(l.cfg);
}

GatewayConfig load_config_file(const std::string& path) {
  // O_NONBLOCK: opening a FIFO must not hang; only a regular file is read.
  int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    if (err == EISDIR) throw ConfigError(fmt::format("{}: cannot read configuration: is a directory", path));
    throw ConfigError(fmt::format("{}: cannot open configuration: {}", path, std::strerror(err)));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    throw ConfigError(fmt::format("{}: cannot read configuration: {}", path, std::strerror(errno)));
  if (S_ISDIR(st.st_mode)) throw ConfigError(fmt::format("{}: cannot read configuration: is a directory", path));
  if (!S_ISREG(st.st_mode))
    throw ConfigError(fmt::format("{}: cannot read configuration: not a regular file", path));
  if (static_cast<uint64_t>(st.st_size) > kMaxConfigBytes)
    throw ConfigError(fmt::format("{}: configuration is {} bytes; at most {} are read", path, st.st_size,
                                  kMaxConfigBytes));
  // The text holds keys: wiped once parsed, whatever happens.
  std::string text;
  struct Wipe {
    std::string& s;
    ~Wipe() { crypto::SecretBytes::wipe(s); }
  } wipe{text};
  text.resize(kMaxConfigBytes + 1);
  size_t got = 0;
  while (got < text.size()) {
    ssize_t n = ::read(fd, text.data() + got, text.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw ConfigError(fmt::format("{}: cannot read configuration: {}", path, std::strerror(errno)));
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  if (got > kMaxConfigBytes)  // grew since fstat
    throw ConfigError(fmt::format("{}: configuration is larger than {} bytes", path, kMaxConfigBytes));
  text.resize(got);
  return parse_config(text, path);
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
