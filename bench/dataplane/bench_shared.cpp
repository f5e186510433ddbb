// What workers share, measured: the two writes that cross cores on the hot
// path when one tunnel's traffic is spread over several workers.
//
//  - seq_reserve: an outbound SA's next sequence number, reserved with one
//    fetch_add per burst of 32 (dataplane/outbound.h). threads:1 is the
//    uncontended cost; threads:2 is two workers encrypting on one SA.
//  - replay_handoff: an inbound SA's replay window, updated under its lock
//    once per burst of 32 (dataplane/replay_window.h). threads:2 moves the
//    window's cache lines between the two cores on every burst: the hand-off
//    cost when RSS spreads one SA over two queues.
//
// Per burst figures; divide by 32 for per packet. On a 2-core machine the two
// threads share the cores with the main thread: run pinned and quiet
// (taskset -c 0,1), and read threads:2 as an upper bound.
#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdint>

#include "dataplane/replay_window.h"

using espgw::dataplane::ReplayVerdict;
using espgw::dataplane::ReplayWindow;

namespace {

constexpr uint64_t kBurst = 32;

alignas(64) std::atomic<uint64_t> g_next_seq{1};

void seq_reserve(benchmark::State& state) {
  uint64_t sink = 0;
  for (auto _ : state) {
    sink += g_next_seq.fetch_add(kBurst, std::memory_order_relaxed);
  }
  benchmark::DoNotOptimize(sink);
  state.counters["packets_per_burst"] = benchmark::Counter(kBurst, benchmark::Counter::kAvgThreads);
}
BENCHMARK(seq_reserve)->Threads(1)->Threads(2)->UseRealTime();

alignas(64) ReplayWindow g_window(1024, false);
alignas(64) std::atomic<uint64_t> g_rx_seq{1};

void replay_handoff(benchmark::State& state) {
  uint64_t accepted = 0;
  for (auto _ : state) {
    // The sequence numbers this "worker" received: the next run of 32.
    uint64_t first = g_rx_seq.fetch_add(kBurst, std::memory_order_relaxed);
    g_window.lock();
    for (uint64_t s = first; s < first + kBurst; ++s) {
      accepted += g_window.update(s) == ReplayVerdict::kOk;
    }
    g_window.unlock();
  }
  benchmark::DoNotOptimize(accepted);
  state.counters["packets_per_burst"] = benchmark::Counter(kBurst, benchmark::Counter::kAvgThreads);
}
BENCHMARK(replay_handoff)->Threads(1)->Threads(2)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
