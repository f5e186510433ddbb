// libFuzzer harness: the YAML config loader (parse_config, what the daemon
// and --check run on the file's text), with its validation: the schema, the
// unknown-key suggestions, addresses, prefixes, MACs, hex keys, SAs through
// validate_sa_spec, routes, the mbuf arithmetic.
//
// Contract checked beyond "no crash": parse_config throws ConfigError and
// nothing else (the daemon prints a ConfigError as a message with the
// file's position; anything else is an escape from the validation), and a
// config it accepts also passes the host checks' arithmetic
// (configured_workers, mbufs_needed) without throwing anything but
// ConfigError.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <typeinfo>

#include "control/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace espgw::control;
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    GatewayConfig cfg = parse_config(text, "<fuzz>");
    auto workers = configured_workers(cfg);
    if (mbufs_needed(cfg, workers.value_or(1)) > cfg.mbufs && workers) {
      std::fprintf(stderr, "\n==FUZZ INVARIANT== accepted a config whose pool (%u mbufs) is smaller than its rings need\n",
                   cfg.mbufs);
      std::abort();
    }
  } catch (const ConfigError& e) {
    static const bool verbose = std::getenv("FUZZ_VERBOSE") != nullptr;  // why a seed is refused
    if (verbose) std::fprintf(stderr, "refused: %s\n", e.what());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "\n==FUZZ INVARIANT== parse_config threw %s, not ConfigError: %s\n", typeid(e).name(), e.what());
    std::abort();
  }
  return 0;
}
