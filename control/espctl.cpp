// espctl: command-line client of espgw's control socket (JSON lines).
// Human-readable output by default, --json for scripts; exit 1 with the
// daemon's error message when a request fails, 2 when it cannot connect.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <iostream>
#include <string>

using nlohmann::json;

namespace {
int connect_to(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0) {
    fmt::print(stderr, "espctl: cannot connect to {}: {}\n", path, std::strerror(errno));
    std::exit(2);
  }
  return fd;
}

json request(const std::string& path, const json& req) {
  int fd = connect_to(path);
  std::string line = req.dump() + "\n";
  if (write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
    fmt::print(stderr, "espctl: write failed: {}\n", std::strerror(errno));
    std::exit(2);
  }
  std::string in;
  char buf[65536];
  while (in.find('\n') == std::string::npos) {
    ssize_t r = read(fd, buf, sizeof(buf));
    if (r <= 0) {
      fmt::print(stderr, "espctl: connection closed before a reply\n");
      std::exit(2);
    }
    in.append(buf, static_cast<size_t>(r));
  }
  close(fd);
  return json::parse(in.substr(0, in.find('\n')));
}

void print_tunnels(const json& tunnels) {
  fmt::print("{:<12} {:>6} {:>12} {:>12} {:>14} {:>12} {:>14} {:>10}\n", "TUNNEL", "STATE", "OUT-SPI", "OUT-PKTS",
             "OUT-BYTES", "IN-PKTS", "IN-BYTES", "ASYMMETRIC");
  for (const auto& t : tunnels)
    fmt::print("{:<12} {:>6} {:>12} {:>12} {:>14} {:>12} {:>14} {:>10}\n", t["name"].get<std::string>(),
               t["up"].get<bool>() ? "up" : "down", t.value("out_spi", "-"), t["out"]["packets"].get<uint64_t>(),
               t["out"]["bytes"].get<uint64_t>(), t["in"]["packets"].get<uint64_t>(), t["in"]["bytes"].get<uint64_t>(),
               t["asymmetric"].get<uint64_t>());
}

void print_human(const std::string& cmd, const json& r) {
  if (cmd == "tunnels") {
    print_tunnels(r["tunnels"]);
  } else if (cmd == "stats") {
    print_tunnels(r["tunnels"]);
    fmt::print("\n{:<12} {:<12} {:>12} {:>14} {:>12} {:>14}\n", "PORT", "KIND", "RX-PKTS", "RX-BYTES", "TX-PKTS",
               "TX-BYTES");
    for (const auto& p : r["ports"])
      fmt::print("{:<12} {:<12} {:>12} {:>14} {:>12} {:>14}\n", p["name"].get<std::string>(),
                 p["kind"].get<std::string>(), p["rx"]["packets"].get<uint64_t>(), p["rx"]["bytes"].get<uint64_t>(),
                 p["tx"]["packets"].get<uint64_t>(), p["tx"]["bytes"].get<uint64_t>());
    fmt::print("\nDROPS:");
    bool any = false;
    for (auto& [k, v] : r["drops"].items())
      if (v.get<uint64_t>()) {
        fmt::print(" {}={}", k, v.get<uint64_t>());
        any = true;
      }
    fmt::print("{}\n", any ? "" : " none");
  } else if (cmd == "routes") {
    fmt::print("{:<20} {:<10} {}\n", "PREFIX", "ACTIVE", "VIA (tunnel/priority)");
    for (const auto& rt : r["routes"]) {
      std::string via;
      for (const auto& h : rt["via"]) via += fmt::format("{}/{} ", h["tunnel"].get<std::string>(), h["priority"].get<uint32_t>());
      fmt::print("{:<20} {:<10} {}\n", rt["prefix"].get<std::string>(),
                 rt["active"].is_null() ? "-" : rt["active"].get<std::string>(), via);
    }
  } else {
    fmt::print("ok\n");
  }
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"espctl: control an espgw gateway through its control socket"};
  std::string socket_path = "/run/espgw/espgw.sock";
  bool as_json = false;
  app.add_option("-s,--socket", socket_path, "control socket path")->envname("ESPGW_SOCKET");
  app.add_flag("--json", as_json, "print the daemon's JSON reply");
  app.require_subcommand(1);

  std::string tunnel;
  auto* stats = app.add_subcommand("stats", "counters per tunnel, port and drop reason");
  auto* tunnels = app.add_subcommand("tunnels", "tunnel states and counters");
  auto* routes = app.add_subcommand("routes", "routes and their active tunnel");
  auto* tun = app.add_subcommand("tunnel", "tunnel up/down");
  auto* tun_up = tun->add_subcommand("up", "mark a tunnel up");
  auto* tun_down = tun->add_subcommand("down", "mark a tunnel down (traffic fails over by priority)");
  tun_up->add_option("name", tunnel, "tunnel name")->required();
  tun_down->add_option("name", tunnel, "tunnel name")->required();
  tun->require_subcommand(1);
  CLI11_PARSE(app, argc, argv);

  json req;
  std::string cmd;
  if (*stats) cmd = "stats", req = {{"op", "stats"}};
  else if (*tunnels) cmd = "tunnels", req = {{"op", "tunnels"}};
  else if (*routes) cmd = "routes", req = {{"op", "routes"}};
  else if (*tun_up) cmd = "tunnel", req = {{"op", "tunnel-up"}, {"tunnel", tunnel}};
  else if (*tun_down) cmd = "tunnel", req = {{"op", "tunnel-down"}, {"tunnel", tunnel}};

  json r = request(socket_path, req);
  if (!r.value("ok", false)) {
    fmt::print(stderr, "espctl: {}\n", r.value("error", std::string("request failed")));
    return 1;
  }
  if (as_json) std::cout << r.dump(2) << "\n";
  else print_human(cmd, r);
  return 0;
}
