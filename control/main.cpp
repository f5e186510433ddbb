// espgw: the gateway daemon.
//   espgw [--config FILE] [--check] [--print-default-config] [-- EAL args...]
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cstdio>
#include <string>
#include <vector>

#include "control/config.h"
#include "control/gateway.h"

int main(int argc, char** argv) {
  // Raw EAL arguments follow "--" and are appended to the file's eal: list.
  std::vector<std::string> extra_eal;
  int our_argc = argc;
  for (int i = 1; i < argc; i++)
    if (std::string(argv[i]) == "--") {
      our_argc = i;
      for (int j = i + 1; j < argc; j++) extra_eal.emplace_back(argv[j]);
      break;
    }

  CLI::App app{"espgw: IPsec ESP (AES-GCM) gateway data plane on DPDK"};
  std::string config_path;
  bool check_only = false, print_default = false;
  app.add_option("-c,--config", config_path, "YAML configuration (default: the embedded four-tunnel demo)");
  app.add_flag("--check", check_only, "validate the configuration and exit");
  app.add_flag("--print-default-config", print_default, "print the embedded default configuration and exit");
  app.footer("Raw EAL arguments may follow `--`; they are appended to the configuration's eal list.");
  try {
    app.parse(our_argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (print_default) {
    std::fputs(espgw::control::embedded_default_config(), stdout);
    return 0;
  }

  espgw::control::GatewayConfig cfg;
  try {
    cfg = config_path.empty() ? espgw::control::parse_config(espgw::control::embedded_default_config(), "<embedded default>")
                              : espgw::control::load_config_file(config_path);
    // What depends on this host (the worker count EAL would pick): the
    // daemon and --check run the same checks before any port starts.
    espgw::control::check_on_this_host(cfg, config_path.empty() ? "<embedded default>" : config_path);
  } catch (const std::exception& e) {
    fmt::print(stderr, "espgw: {}\n", e.what());
    return 2;
  }
  if (check_only) {
    for (const auto& w : cfg.warnings) fmt::print("warning: {}\n", w);
    fmt::print("{}: OK ({} ports, {} tunnels, {} routes, {} SAs)\n", config_path.empty() ? "<embedded default>" : config_path,
               cfg.ports.size(), cfg.tunnels.size(), cfg.routes.size(), cfg.sas.size());
    return 0;
  }

  int rc = 0;
  {
    espgw::control::Gateway gw(std::move(cfg), std::move(extra_eal));
    try {
      gw.start();
      fmt::print("espgw: running; stop with Ctrl-C or SIGTERM\n");
      std::fflush(stdout);
      gw.run();
      gw.stop();
      fmt::print("espgw: stopped; final counters:\n{}", gw.format_stats());
      fmt::print("mbufs in use: {} (at start {})\n", gw.mbufs_in_use(), gw.mbufs_in_use_at_start());
      std::fflush(stdout);
    } catch (const std::exception& e) {
      fmt::print(stderr, "espgw: {}\n", e.what());
      rc = 1;
    }
  }
  return rc;
}
