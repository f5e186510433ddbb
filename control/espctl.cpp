// espctl: command-line client of espgw's control socket (JSON lines,
// docs/control-api.md). Human-readable tables by default, --json for
// scripts; exit 1 with the daemon's error message when a request fails, 2
// when the daemon cannot be reached, 64 (EX_USAGE) for bad arguments, found
// before anything is sent. An IKE daemon's updown hook can call it.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <optional>
#include <iostream>
#include <sstream>
#include <string>

using nlohmann::json;

namespace {
constexpr int kExitRefused = 1;      // the daemon answered with an error
constexpr int kExitUnreachable = 2;  // no daemon, or the connection broke
constexpr int kExitUsage = 64;       // bad arguments: nothing was sent

[[noreturn]] void die(int code, const std::string& msg) {
  fmt::print(stderr, "espctl: {}\n", msg);
  std::exit(code);
}

class Connection {
 public:
  explicit Connection(const std::string& path) {
    fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof(addr.sun_path)) die(kExitUsage, "socket path too long: " + path);
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    if (fd_ < 0 || connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0)
      die(kExitUnreachable, fmt::format("cannot connect to {}: {} (is espgw running? -s/ESPGW_SOCKET sets the path)", path,
                         std::strerror(errno)));
  }
  ~Connection() { close(fd_); }
  void send(const json& req) {
    std::string line = req.dump() + "\n";
    size_t off = 0;
    while (off < line.size()) {
      ssize_t w = write(fd_, line.data() + off, line.size() - off);
      if (w <= 0) die(kExitUnreachable, std::string("write failed: ") + std::strerror(errno));
      off += static_cast<size_t>(w);
    }
  }
  json receive() {
    size_t pos;
    while ((pos = buf_.find('\n')) == std::string::npos) {
      char tmp[65536];
      ssize_t r = read(fd_, tmp, sizeof(tmp));
      if (r <= 0) die(kExitUnreachable, "connection closed before a reply");
      buf_.append(tmp, static_cast<size_t>(r));
    }
    std::string line = buf_.substr(0, pos);
    buf_.erase(0, pos + 1);
    json j = json::parse(line, nullptr, false);
    if (j.is_discarded()) die(kExitUnreachable, "the daemon sent something that is not JSON");
    return j;
  }

 private:
  int fd_;
  std::string buf_;
};

uint64_t u64(const json& j, const char* k) { return j.contains(k) && j[k].is_number() ? j[k].get<uint64_t>() : 0; }
std::string str(const json& j, const char* k, const char* dflt = "-") {
  return j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : dflt;
}

// ADMIN: the operator's switch (tunnel up/down); OPER: what routing uses
// (admin up and an outbound SA installed); WHY: the reason OPER is down.
void print_tunnels(const json& tunnels) {
  fmt::print("{:<14} {:>5} {:>5} {:<14} {:>11} {:>12} {:>14} {:>12} {:>14} {:>10}\n", "TUNNEL", "ADMIN", "OPER", "WHY",
             "OUT-SPI", "OUT-PKTS", "OUT-BYTES", "IN-PKTS", "IN-BYTES", "ASYMMETRIC");
  for (const auto& t : tunnels) {
    std::string why = str(t, "oper_reason");
    fmt::print("{:<14} {:>5} {:>5} {:<14} {:>11} {:>12} {:>14} {:>12} {:>14} {:>10}\n", str(t, "name"), str(t, "admin"),
               str(t, "oper"), why == "up" ? "-" : why, str(t, "out_spi"), u64(t["out"], "packets"),
               u64(t["out"], "bytes"), u64(t["in"], "packets"), u64(t["in"], "bytes"), u64(t, "asymmetric"));
  }
}

void print_sas(const json& sas) {
  fmt::print("{:<4} {:<11} {:<14} {:<11} {:<9} {:>12} {:>14} {:>8} {}\n", "DIR", "SPI", "TUNNEL", "ALGO", "KEY-FP",
             "PACKETS", "BYTES", "AGE-S", "NOTES");
  for (const auto& s : sas) {
    std::string notes;
    if (s.value("current", false)) notes += "current ";
    if (s.value("esn", false)) notes += "esn ";
    if (s.value("udp_encap", false)) notes += "udp ";
    if (s.contains("next_seq")) notes += fmt::format("next_seq={} ", u64(s, "next_seq"));
    if (s.contains("replay_window")) notes += fmt::format("window={} ", u64(s, "replay_window"));
    if (s.contains("origin")) notes += "origin=" + str(s, "origin") + " ";
    if (s.contains("idle_seconds"))
      notes += s["idle_seconds"].is_number() ? fmt::format("idle={:.3f}s ", s["idle_seconds"].get<double>())
                                             : std::string("idle=never ");
    fmt::print("{:<4} {:<11} {:<14} {:<11} {:<9} {:>12} {:>14} {:>8} {}\n", str(s, "direction"), str(s, "spi"),
               str(s, "tunnel"), str(s, "algo"), str(s, "key_fingerprint"), u64(s, "packets"), u64(s, "bytes"),
               u64(s, "age_seconds"), notes);
  }
}

// alloc-spi reservations not yet consumed by an SA.
void print_larval(const json& larval) {
  if (!larval.is_array() || larval.empty()) return;
  fmt::print("\n{:<11} {:<16} {:<16} {:>10}\n", "LARVAL-SPI", "DST", "SRC", "EXPIRES-S");
  for (const auto& l : larval)
    fmt::print("{:<11} {:<16} {:<16} {:>10}\n", str(l, "spi"), str(l, "dst"), str(l, "src"), u64(l, "expires_in_s"));
}

void print_query(const json& q) {
  fmt::print("{:<4} {:<11} {:<14} {:<16} {:>12} {:>14} {:>10}\n", "DIR", "SPI", "TUNNEL", "DST", "PACKETS", "BYTES",
             "IDLE-S");
  fmt::print("{:<4} {:<11} {:<14} {:<16} {:>12} {:>14} {:>10}\n", str(q, "direction"), str(q, "spi"), str(q, "tunnel"),
             str(q, "dst"), u64(q, "packets"), u64(q, "bytes"),
             q.contains("idle_seconds") && q["idle_seconds"].is_number()
                 ? fmt::format("{:.3f}", q["idle_seconds"].get<double>())
                 : std::string("never"));
}

void print_neighbors(const json& list) {
  fmt::print("{:<10} {:<16} {:<18} {:<11} {}\n", "port", "ip", "mac", "state", "age");
  for (const auto& n : list) {
    std::string flags = std::string(n.value("gateway", false) ? " gateway" : "") +
                        (n.value("tunnel_next_hop", false) ? " tunnel" : "");
    fmt::print("{:<10} {:<16} {:<18} {:<11} {}{}\n", str(n, "port"), n["ip"].is_null() ? "-" : str(n, "ip"),
               n["mac"].is_null() ? "(none)" : str(n, "mac"), str(n, "state"),
               n["age_s"].is_null() ? "-" : fmt::format("{:.0f}s", n["age_s"].get<double>()), flags);
  }
}

void print_routes(const json& routes) {
  fmt::print("{:<20} {:<14} {}\n", "PREFIX", "ACTIVE", "VIA (tunnel/priority)");
  for (const auto& rt : routes) {
    std::string via;
    for (const auto& h : rt["via"]) via += fmt::format("{}/{} ", str(h, "tunnel"), u64(h, "priority"));
    fmt::print("{:<20} {:<14} {}\n", str(rt, "prefix"), rt["active"].is_null() ? "-" : str(rt, "active"), via);
  }
}

void print_stats(const json& r) {
  print_tunnels(r["tunnels"]);
  fmt::print("\n{:<12} {:<12} {:>12} {:>14} {:>12} {:>14}\n", "PORT", "KIND", "RX-PKTS", "RX-BYTES", "TX-PKTS",
             "TX-BYTES");
  for (const auto& p : r["ports"])
    fmt::print("{:<12} {:<12} {:>12} {:>14} {:>12} {:>14}\n", str(p, "name"), str(p, "kind"), u64(p["rx"], "packets"),
               u64(p["rx"], "bytes"), u64(p["tx"], "packets"), u64(p["tx"], "bytes"));
  std::string drops;
  for (auto& [k, v] : r["drops"].items())
    if (v.get<uint64_t>()) drops += fmt::format(" {}={}", k, v.get<uint64_t>());
  fmt::print("\nDROPS:{}\n", drops.empty() ? " none" : drops);
  fmt::print("EXCEPTION: to_host={} from_host={}   ICMP sent={} fragments={} mss_clamped={}\n",
             u64(r["exception"], "to_host"), u64(r["exception"], "from_host"), u64(r, "icmp_sent"), u64(r, "fragments"),
             u64(r, "mss_clamped"));
  // Accounting to the packet (dataplane/counters.h): each port's equations
  // per worker, and whether they hold.
  if (r.contains("accounting") && r["accounting"].is_object()) {
    const json& a = r["accounting"];
    fmt::print("ACCOUNTING: {}\n", a.value("holds", false) ? "holds" : "DOES NOT HOLD");
    for (const auto& w : a["workers"])
      for (const auto& p : w["ports"])
        fmt::print("  worker {} {:<10} {}{}\n", u64(w, "worker"), str(p, "name"), str(p, "equation"),
                   w.value("consistent", true) ? "" : " (unsettled)");
  }
}

std::string read_key_file(const std::string& path) {
  std::ifstream in(path == "-" ? "/dev/stdin" : path);
  if (!in) die(kExitUsage, "cannot read key file " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  s.erase(std::remove_if(s.begin(), s.end(), [](unsigned char c) { return std::isspace(c); }), s.end());
  return s;
}

// Numbers on the command line: decimal digits only (CLI11 would take "-1"
// for an unsigned option and send 2^64-1).
const CLI::Validator kDigits(
    [](std::string& s) {
      return !s.empty() && s.size() <= 20 && std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); })
                 ? std::string()
                 : "wants a decimal number (digits only), got '" + s + "'";
    },
    "UINT");

// A dotted quad, checked before anything is sent.
std::string ipv4_arg(const std::string& option, const std::string& a) {
  in_addr x{};
  if (inet_pton(AF_INET, a.c_str(), &x) != 1) die(kExitUsage, option + " wants an IPv4 address (dotted quad), got '" + a + "'");
  return a;
}

struct SaOpts {
  std::string direction, tunnel, algo = "aes128-gcm", key, key_file, spi, encap, remote, src, dst, origin;
  bool esn = false;
  uint64_t replay_window = 1024, seq = 1;
  uint64_t soft_bytes = 0, hard_bytes = 0, soft_packets = 0, hard_packets = 0, soft_seconds = 0, hard_seconds = 0;
  std::vector<std::string> local_ts, remote_ts;
};

void add_sa_options(CLI::App* c, SaOpts& o) {
  c->add_option("--direction,-d", o.direction, "in or out")->required()->check(CLI::IsMember({"in", "out"}));
  c->add_option("--spi", o.spi, "SPI (decimal or 0x hex)")->required();
  c->add_option("--tunnel,-t", o.tunnel, "tunnel name (or --src and --dst)");
  c->add_option("--src", o.src, "the SA's outer source (outbound: our address; inbound: the peer's)");
  c->add_option("--dst", o.dst, "the SA's outer destination (outbound: the peer's; inbound: our address)");
  c->add_option("--origin", o.origin, "socket (default) or plugin")->check(CLI::IsMember({"socket", "plugin"}));
  c->add_option("--algo", o.algo, "aes128-gcm or aes256-gcm")->check(CLI::IsMember({"aes128-gcm", "aes256-gcm"}));
  auto* k = c->add_option("--key", o.key, "key || 4-byte salt, hex (visible in ps: prefer --key-file)");
  auto* kf = c->add_option("--key-file", o.key_file, "file holding the hex key || salt ('-' = stdin)");
  k->excludes(kf);
  c->add_flag("--esn", o.esn, "64-bit extended sequence numbers");
  c->add_option("--replay-window", o.replay_window, "inbound anti-replay window (0 = off, 32..4096)")->check(kDigits);
  c->add_option("--seq", o.seq, "outbound: first sequence number")->check(kDigits);
  c->add_option("--encap", o.encap, "UDP encapsulation SPORT:DPORT (e.g. 4500:4500)");
  c->add_option("--soft-bytes", o.soft_bytes)->check(kDigits);
  c->add_option("--hard-bytes", o.hard_bytes)->check(kDigits);
  c->add_option("--soft-packets", o.soft_packets)->check(kDigits);
  c->add_option("--hard-packets", o.hard_packets)->check(kDigits);
  c->add_option("--soft-seconds", o.soft_seconds)->check(kDigits);
  c->add_option("--hard-seconds", o.hard_seconds)->check(kDigits);
  c->add_option("--local-ts", o.local_ts, "policy-based: local selector prefix (repeatable)");
  c->add_option("--remote-ts", o.remote_ts, "policy-based: remote selector prefix (repeatable)");
}

// The socket takes an SPI as a JSON integer or "0x" + hex digits: decimal
// from the command line goes as an integer, the rest as written (the daemon
// refuses what is neither).
json spi_value(const std::string& spi) {
  if (!spi.empty() && spi.size() <= 10 &&
      std::all_of(spi.begin(), spi.end(), [](unsigned char c) { return std::isdigit(c); })) {
    uint64_t v = std::stoull(spi);
    if (v <= 0xFFFFFFFFull) return v;
  }
  return spi;
}

// A decimal number, digits only, at most `max` ("4500x", "-1", " 7" are not).
std::optional<uint64_t> strict_uint(const std::string& s, uint64_t max) {
  if (s.empty() || s.size() > 20 || !std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); }))
    return std::nullopt;
  errno = 0;
  char* end = nullptr;
  unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (errno == ERANGE || v > max) return std::nullopt;
  return v;
}

json parse_encap(const std::string& encap) {
  auto colon = encap.find(':');
  auto sport = strict_uint(encap.substr(0, colon), 65535);
  auto dport = colon == std::string::npos ? std::optional<uint64_t>(4500) : strict_uint(encap.substr(colon + 1), 65535);
  if (!sport || !dport || *sport == 0 || *dport == 0)
    die(kExitUsage, "--encap wants SPORT:DPORT, ports 1..65535, e.g. 4500:4500 (got '" + encap + "')");
  return {{"sport", *sport}, {"dport", *dport}};
}

json lifetime_of(const SaOpts& o) {
  json soft = json::object(), hard = json::object();
  if (o.soft_bytes) soft["bytes"] = o.soft_bytes;
  if (o.soft_packets) soft["packets"] = o.soft_packets;
  if (o.soft_seconds) soft["seconds"] = o.soft_seconds;
  if (o.hard_bytes) hard["bytes"] = o.hard_bytes;
  if (o.hard_packets) hard["packets"] = o.hard_packets;
  if (o.hard_seconds) hard["seconds"] = o.hard_seconds;
  json lt = json::object();
  if (!soft.empty()) lt["soft"] = soft;
  if (!hard.empty()) lt["hard"] = hard;
  return lt;
}

// The SA's name: -t and/or --dst (and --src where it may be given).
void add_sa_name(json& r, const SaOpts& o) {
  if (!o.tunnel.empty()) r["tunnel"] = o.tunnel;
  if (!o.src.empty()) r["src"] = ipv4_arg("--src", o.src);
  if (!o.dst.empty()) r["dst"] = ipv4_arg("--dst", o.dst);
}

json sa_request(const std::string& op, const SaOpts& o) {
  if (o.tunnel.empty() && (o.src.empty() || o.dst.empty()))
    die(kExitUsage, "an SA needs -t TUNNEL, or --src and --dst (its outer addresses)");
  json r = {{"op", op}, {"direction", o.direction}, {"spi", spi_value(o.spi)}, {"algo", o.algo}, {"esn", o.esn}};
  add_sa_name(r, o);
  if (!o.origin.empty()) r["origin"] = o.origin;
  std::string key = o.key_file.empty() ? o.key : read_key_file(o.key_file);
  if (key.empty()) die(kExitUsage, "an SA needs --key or --key-file");
  r["key"] = key;
  if (o.direction == "in") r["replay_window"] = o.replay_window;
  else r["seq"] = o.seq;
  if (!o.encap.empty()) r["encap"] = parse_encap(o.encap);
  if (json lt = lifetime_of(o); !lt.empty()) r["lifetime"] = lt;
  if (!o.local_ts.empty()) r["local_selectors"] = o.local_ts;
  if (!o.remote_ts.empty()) r["remote_selectors"] = o.remote_ts;
  return r;
}

json via_list(const std::vector<std::string>& via) {
  json hops = json::array();
  for (const auto& v : via) {
    auto slash = v.find_last_of("/:");
    auto prio = slash == std::string::npos ? std::nullopt : strict_uint(v.substr(slash + 1), 0xFFFFFFFFull);
    if (!prio || slash == 0) die(kExitUsage, "--via wants TUNNEL/PRIORITY, e.g. aws-a1/10 (got '" + v + "')");
    hops.push_back({{"tunnel", v.substr(0, slash)}, {"priority", *prio}});
  }
  return hops;
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"espctl: control an espgw gateway through its control socket"};
  std::string socket_path = "/run/espgw/espgw.sock";
  bool as_json = false;
  app.add_option("-s,--socket", socket_path, "control socket path")->envname("ESPGW_SOCKET");
  app.add_flag("--json", as_json, "print the daemon's JSON reply");
  app.require_subcommand(1);

  auto* stats = app.add_subcommand("stats", "counters per tunnel, port and drop reason");
  auto* tunnels = app.add_subcommand("tunnels", "tunnel states and counters");
  auto* routes = app.add_subcommand("routes", "routes and their active tunnel");
  auto* sas = app.add_subcommand("sas", "installed SAs (key fingerprints only)");
  auto* neighbors = app.add_subcommand("neighbors", "neighbour tables: port, IP, MAC, state, static, age");

  std::string name;
  auto* tun = app.add_subcommand("tunnel", "tunnel up/down");
  auto* tun_up = tun->add_subcommand("up", "mark a tunnel up");
  auto* tun_down = tun->add_subcommand("down", "mark a tunnel down (traffic fails over by priority)");
  tun_up->add_option("name", name, "tunnel name")->required();
  tun_down->add_option("name", name, "tunnel name")->required();
  tun->require_subcommand(1);

  SaOpts sa_opts;
  auto* sa = app.add_subcommand("sa", "add, replace, update, delete or list SAs");
  auto* sa_add = sa->add_subcommand("add", "install an SA");
  auto* sa_replace = sa->add_subcommand("replace", "replace an installed SA (same SPI, direction, tunnel)");
  add_sa_options(sa_add, sa_opts);
  add_sa_options(sa_replace, sa_opts);
  auto* sa_del = sa->add_subcommand("delete", "delete an SA");
  sa_del->add_option("--direction,-d", sa_opts.direction, "in or out")->required()->check(CLI::IsMember({"in", "out"}));
  sa_del->add_option("--spi", sa_opts.spi, "SPI")->required();
  sa_del->add_option("--tunnel,-t", sa_opts.tunnel, "tunnel (when the SPI is on several)");
  sa_del->add_option("--dst", sa_opts.dst, "the SA's destination (inbound: our address; outbound: the peer's)");
  auto* sa_update = sa->add_subcommand("update", "change a live SA: NAT-T ports, peer address, lifetimes");
  sa_update->add_option("--direction,-d", sa_opts.direction, "in or out")->required()->check(CLI::IsMember({"in", "out"}));
  sa_update->add_option("--spi", sa_opts.spi, "SPI")->required();
  sa_update->add_option("--tunnel,-t", sa_opts.tunnel, "tunnel name (or --dst)");
  sa_update->add_option("--dst", sa_opts.dst, "the SA's destination (inbound: our address; outbound: the peer's)");
  sa_update->add_option("--encap", sa_opts.encap, "new UDP ports SPORT:DPORT (NAT rebinding)");
  sa_update->add_option("--remote", sa_opts.remote, "the peer's new outer address (MOBIKE)");
  sa_update->add_option("--soft-bytes", sa_opts.soft_bytes)->check(kDigits);
  sa_update->add_option("--hard-bytes", sa_opts.hard_bytes)->check(kDigits);
  sa_update->add_option("--soft-packets", sa_opts.soft_packets)->check(kDigits);
  sa_update->add_option("--hard-packets", sa_opts.hard_packets)->check(kDigits);
  sa_update->add_option("--soft-seconds", sa_opts.soft_seconds)->check(kDigits);
  sa_update->add_option("--hard-seconds", sa_opts.hard_seconds)->check(kDigits);
  auto* sa_list = sa->add_subcommand("list", "list SAs");
  auto* sa_query = sa->add_subcommand("query", "one SA's packets, bytes and idle time (since its last packet)");
  sa_query->add_option("--direction,-d", sa_opts.direction, "in or out")->required()->check(CLI::IsMember({"in", "out"}));
  sa_query->add_option("--spi", sa_opts.spi, "SPI")->required();
  sa_query->add_option("--tunnel,-t", sa_opts.tunnel, "tunnel name (or --dst)");
  sa_query->add_option("--dst", sa_opts.dst, "the SA's destination (inbound: our address; outbound: the peer's)");
  auto* sa_flush = sa->add_subcommand("flush", "delete every SA (of one origin) and every SPI reservation");
  sa_flush->add_option("--origin", sa_opts.origin, "only SAs of this origin")
      ->check(CLI::IsMember({"config", "socket", "xfrm", "plugin"}));

  std::string spi_dst, spi_src;
  uint64_t spi_timeout = 0;
  auto* spi = app.add_subcommand("spi", "SPI allocation");
  auto* spi_alloc = spi->add_subcommand("alloc", "reserve a random inbound SPI for an SA being negotiated");
  spi_alloc->add_option("--dst", spi_dst, "our address the inbound SA will be addressed to")->required();
  spi_alloc->add_option("--src", spi_src, "the peer (recorded)");
  spi_alloc->add_option("--timeout", spi_timeout, "seconds the reservation lives unconsumed (1..3600, default 180)")
      ->check(kDigits);
  spi->require_subcommand(1);
  sa->require_subcommand(1);

  std::string prefix;
  std::vector<std::string> via;
  auto* route = app.add_subcommand("route", "add, replace, delete or list routes");
  auto* route_add = route->add_subcommand("add", "add a route");
  auto* route_replace = route->add_subcommand("replace", "add or replace a route");
  for (auto* c : {route_add, route_replace}) {
    c->add_option("prefix", prefix, "IPv4 prefix, e.g. 172.31.0.0/16")->required();
    c->add_option("--via", via, "TUNNEL/PRIORITY, repeatable, in tie-break order")->required();
  }
  auto* route_del = route->add_subcommand("delete", "delete a route");
  route_del->add_option("prefix", prefix, "IPv4 prefix")->required();
  auto* route_list = route->add_subcommand("list", "list routes");
  route->require_subcommand(1);

  uint64_t max_events = 0;
  auto* events = app.add_subcommand("events", "stream events (sa-expire, tunnel-state, sa-installed, sa-deleted)");
  events->add_option("--count,-n", max_events, "exit after this many events")->check(kDigits);

  std::string raw;
  auto* raw_cmd = app.add_subcommand("raw", "send one JSON request as is");
  raw_cmd->add_option("request", raw, "a JSON object")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);  // prints the message (or the help: rc 0)
    return rc == 0 ? 0 : kExitUsage;
  }

  // Everything that can be wrong with the arguments is found before the
  // daemon is contacted.
  json req;
  std::string view;
  if (*events) {
  } else if (*stats) req = {{"op", "stats"}}, view = "stats";
  else if (*tunnels) req = {{"op", "tunnels"}}, view = "tunnels";
  else if (*routes || *route_list) req = {{"op", "routes"}}, view = "routes";
  else if (*sas || *sa_list) req = {{"op", "list-sas"}}, view = "sas";
  else if (*sa_query) {
    if (sa_opts.tunnel.empty() && sa_opts.dst.empty()) die(kExitUsage, "sa query needs -t TUNNEL or --dst ADDRESS");
    req = {{"op", "query-sa"}, {"direction", sa_opts.direction}, {"spi", spi_value(sa_opts.spi)}};
    add_sa_name(req, sa_opts);
    view = "query";
  } else if (*sa_flush) {
    req = {{"op", "flush-sas"}};
    if (!sa_opts.origin.empty()) req["origin"] = sa_opts.origin;
    view = "flush";
  } else if (*spi_alloc) {
    req = {{"op", "alloc-spi"}, {"dst", ipv4_arg("--dst", spi_dst)}};
    if (!spi_src.empty()) req["src"] = ipv4_arg("--src", spi_src);
    if (spi_alloc->count("--timeout")) req["timeout_s"] = spi_timeout;
    view = "spi";
  }
  else if (*neighbors) req = {{"op", "neighbors"}}, view = "neighbors";
  else if (*tun_up) req = {{"op", "tunnel-up"}, {"tunnel", name}};
  else if (*tun_down) req = {{"op", "tunnel-down"}, {"tunnel", name}};
  else if (*sa_add) req = sa_request("add-sa", sa_opts);
  else if (*sa_replace) req = sa_request("replace-sa", sa_opts);
  else if (*sa_update) {
    if (sa_opts.tunnel.empty() && sa_opts.dst.empty()) die(kExitUsage, "sa update needs -t TUNNEL or --dst ADDRESS");
    req = {{"op", "update-sa"}, {"direction", sa_opts.direction}, {"spi", spi_value(sa_opts.spi)}};
    add_sa_name(req, sa_opts);
    if (!sa_opts.encap.empty()) req["encap"] = parse_encap(sa_opts.encap);
    if (!sa_opts.remote.empty()) req["remote"] = sa_opts.remote;
    if (json lt = lifetime_of(sa_opts); !lt.empty()) req["lifetime"] = lt;
  } else if (*sa_del) {
    req = {{"op", "delete-sa"}, {"direction", sa_opts.direction}, {"spi", spi_value(sa_opts.spi)}};
    add_sa_name(req, sa_opts);
  } else if (*route_add) req = {{"op", "add-route"}, {"prefix", prefix}, {"via", via_list(via)}};
  else if (*route_replace) req = {{"op", "replace-route"}, {"prefix", prefix}, {"via", via_list(via)}};
  else if (*route_del) req = {{"op", "delete-route"}, {"prefix", prefix}};
  else if (*raw_cmd) {
    req = json::parse(raw, nullptr, false);
    if (req.is_discarded() || !req.is_object()) die(kExitUsage, "raw: not a JSON object");
    as_json = true;
  }

  Connection conn(socket_path);
  if (*events) {
    conn.send({{"op", "subscribe"}});
    json ack = conn.receive();
    if (!ack.value("ok", false)) die(kExitRefused, ack.value("error", std::string("subscribe failed")));
    for (uint64_t n = 0; max_events == 0 || n < max_events; n++) {
      json ev = conn.receive();
      if (as_json) {
        std::cout << ev.dump() << std::endl;
      } else {
        std::string rest;
        for (auto& [k, v] : ev.items())
          if (k != "event") rest += fmt::format(" {}={}", k, v.is_string() ? v.get<std::string>() : v.dump());
        std::cout << str(ev, "event") << rest << std::endl;
      }
    }
    return 0;
  }

  conn.send(req);
  json r = conn.receive();
  if (!r.value("ok", false)) {
    if (as_json) std::cout << r.dump(2) << "\n";
    die(kExitRefused, r.value("error", std::string("request failed")));
  }
  if (as_json) std::cout << r.dump(2) << "\n";
  else if (view == "stats") print_stats(r);
  else if (view == "tunnels") print_tunnels(r["tunnels"]);
  else if (view == "routes") print_routes(r["routes"]);
  else if (view == "sas") {
    print_sas(r["sas"]);
    if (r.contains("larval")) print_larval(r["larval"]);
  } else if (view == "query") print_query(r);
  else if (view == "flush") fmt::print("deleted {} SAs, released {} SPI reservations\n", u64(r, "deleted"), u64(r, "larval"));
  else if (view == "spi") fmt::print("{} (reserved for {} s)\n", str(r, "spi"), u64(r, "expires_in_s"));
  else if (r.value("larval", false)) fmt::print("ok (released an SPI reservation)\n");
  else if (view == "neighbors") print_neighbors(r["neighbors"]);
  else fmt::print("ok\n");
  return 0;
}
