#include "control/accounting.h"

#include <fmt/format.h>

#include <immintrin.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>

namespace espgw::control {
namespace dp = espgw::dataplane;

namespace {
uint64_t load_seq(const dp::WorkerCounters& c) {
  return std::atomic_ref<const uint64_t>(c.update_seq).load(std::memory_order_acquire);
}

nlohmann::json port_json(const std::string& name, const dp::PortBalance& b) {
  return {{"name", name},
          {"rx", b.rx},
          {"forwarded", b.forwarded},
          {"to_host", b.to_host},
          {"consumed", b.consumed},
          {"queued", b.queued},
          {"held", b.held},
          {"dropped", b.dropped},
          {"rx_holds", b.rx_holds()},
          {"staged", b.staged},
          {"sent", b.sent},
          {"tx_dropped", b.tx_dropped},
          {"generated", b.generated},
          {"tx_holds", b.tx_holds()},
          {"equation", fmt::format("rx {} {} forwarded {} + to_host {} + consumed {} + dropped {} + queued {} + held {}; "
                                   "staged {} {} sent {} + tx_dropped {}",
                                   b.rx, b.rx_holds() ? "=" : "!=", b.forwarded, b.to_host, b.consumed, b.dropped, b.queued, b.held,
                                   b.staged, b.tx_holds() ? "=" : "!=", b.sent, b.tx_dropped)}};
}
}  // namespace

bool snapshot_balance_counters(const dp::WorkerCounters& live, dp::WorkerCounters& out) {
  // A worker at full load is odd for its whole poll iteration (tens of
  // microseconds) and even only between two: a fixed number of tries can
  // all land inside one iteration (the soak saw "consistent": false), so
  // keep trying for a bounded time instead (yielding the CPU between tries
  // was measured: it makes a loaded host miss the gaps).
  const auto deadline = std::chrono::steady_clock::now() + kSnapshotPatience;
  for (uint64_t tries = 0;; tries++) {
    if ((tries & 1023) == 1023 && std::chrono::steady_clock::now() > deadline) return false;
    uint64_t s1 = load_seq(live);
    if (s1 & 1) {
      _mm_pause();
      continue;
    }
    std::memcpy(out.port, live.port, sizeof out.port);
    std::memcpy(out.rx_disp, live.rx_disp, sizeof out.rx_disp);
    std::memcpy(out.tx_disp, live.tx_disp, sizeof out.tx_disp);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (load_seq(live) == s1) {
      out.update_seq = s1;
      return true;
    }
  }
}

nlohmann::json balance_json(const dp::Dataplane& d, const std::vector<std::string>& port_names) {
  auto name = [&](uint16_t p) { return p < port_names.size() ? port_names[p] : fmt::format("port{}", p); };
  // One snapshot buffer per thread, kept: WorkerCounters is cache-line
  // aligned and ~45 KB, and glibc 2.36's memalign never reuses the chunk a
  // freed one leaves (it asks for size + alignment), so a fresh one per stats
  // request grew the heap by 45 KB each time (issue 12's soak).
  static thread_local const std::unique_ptr<dp::WorkerCounters> snap = std::make_unique<dp::WorkerCounters>();
  std::vector<dp::PortBalance> total(d.nb_ports);
  nlohmann::json workers = nlohmann::json::array();
  bool holds = true;
  for (uint16_t w = 0; w < d.nb_workers; w++) {
    std::memset(static_cast<void*>(snap.get()), 0, sizeof(dp::WorkerCounters));
    bool consistent = snapshot_balance_counters(*d.counters[w], *snap);
    nlohmann::json ports = nlohmann::json::array();
    for (uint16_t p = 0; p < d.nb_ports; p++) {
      dp::PortBalance b = dp::port_balance(*snap, p);
      holds = holds && b.holds();
      dp::add(total[p], b);
      ports.push_back(port_json(name(p), b));
    }
    workers.push_back({{"worker", w}, {"consistent", consistent}, {"ports", ports}});
  }
  nlohmann::json ports = nlohmann::json::array();
  for (uint16_t p = 0; p < d.nb_ports; p++) ports.push_back(port_json(name(p), total[p]));
  return {{"holds", holds}, {"ports", ports}, {"workers", workers}};
}

std::string balance_text(const nlohmann::json& b) {
  std::string out = fmt::format("accounting: {}\n", b["holds"].get<bool>() ? "holds" : "DOES NOT HOLD");
  for (const auto& w : b["workers"])
    for (const auto& p : w["ports"])
      out += fmt::format("  worker {} {:<10} {}{}\n", w["worker"].get<int>(), p["name"].get<std::string>(),
                         p["equation"].get<std::string>(), w["consistent"].get<bool>() ? "" : " (unsettled)");
  return out;
}

}  // namespace espgw::control
