// LPM micro-benchmarks: lookup bursts (ours vs raw rte_lpm, same prefixes,
// same addresses, same run), load time and memory of the 1M table, failover
// republish latency as seen by an RCU-registered worker thread.
#include <benchmark/benchmark.h>
#include <malloc.h>
#include <rte_eal.h>
#include <rte_lpm.h>
#include <rte_rcu_qsbr.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <thread>
#include <unordered_set>

#include "lpm/route_table.h"

using namespace espgw::lpm;
using Clock = std::chrono::steady_clock;

namespace {

constexpr TunnelId kTunnels = 256;

// Internet-like mix: 60% /24, 36% /16../23, 2% /25../32, 2% /8../15.
std::vector<Prefix4> internet_mix(size_t n, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::unordered_set<uint64_t> seen;
  std::vector<Prefix4> out;
  out.reserve(n);
  while (out.size() < n) {
    const unsigned r = g() % 100;
    const uint8_t len = r < 60 ? 24 : r < 96 ? 16 + g() % 8 : r < 98 ? 25 + g() % 8 : 8 + g() % 8;
    uint32_t a = static_cast<uint32_t>(g());
    a = (a % (223u << 24)) + (1u << 24);  // 1.0.0.0 .. 223.255.255.255
    a &= prefix_mask(len);
    if (seen.insert((uint64_t{a} << 8) | len).second) out.push_back(Prefix4{a, len});
  }
  return out;
}

struct Table {
  size_t n = 0;
  std::unique_ptr<RouteTable> ours;
  rte_lpm* raw = nullptr;
  std::vector<uint32_t> addrs;  // lookup pool (power of two)
  double load_s = 0, raw_load_s = 0;
  size_t rib_heap = 0;
  std::vector<Prefix4> raw_prefixes;
  ~Table() { rte_lpm_free(raw); }
};

std::unique_ptr<Table> g_table;
void make_addrs(Table* t, const std::vector<Prefix4>& prefixes);
void check_same(Table* t);

Table& table(size_t n) {
  if (g_table && g_table->n == n) return *g_table;
  g_table.reset();
  auto t = std::make_unique<Table>();
  t->n = n;
  const auto prefixes = internet_mix(n, 42 + n);
  std::mt19937_64 g(7);

  RouteTableConfig cfg;
  cfg.max_routes = static_cast<uint32_t>(n);
  cfg.max_tunnels = kTunnels;
  cfg.tbl8_groups = n >= 100000 ? 32768 : 1024;
  cfg.name = "bench";
  // Heap in use: small chunks (uordblks) plus mmap()ed big ones (hblkhd).
  auto heap = [] {
    const auto m = mallinfo2();
    return m.uordblks + m.hblkhd;
  };
  const size_t heap0 = heap();
  const auto t0 = Clock::now();
  t->ours = std::make_unique<RouteTable>(cfg);
  for (TunnelId i = 0; i < kTunnels; i++) t->ours->add_tunnel(i);
  for (const Prefix4& p : prefixes) {
    std::vector<NextHop> h{{static_cast<TunnelId>(g() % kTunnels), 10}};
    if (g() % 2) h.push_back({static_cast<TunnelId>((h[0].tunnel + 1) % kTunnels), 20});
    t->ours->add_route(p, std::move(h));
  }
  t->load_s = std::chrono::duration<double>(Clock::now() - t0).count();
  t->rib_heap = heap() - heap0;
  t->raw_prefixes = prefixes;
  make_addrs(t.get(), prefixes);
  g_table = std::move(t);
  return *g_table;
}

// The raw rte_lpm twin is built on first use: its O(N^2) load takes minutes at 1M.
Table& raw_table(size_t n) {
  Table& tt = table(n);
  Table* t = &tt;
  if (t->raw != nullptr) return tt;
  RouteTableConfig cfg;
  cfg.tbl8_groups = n >= 100000 ? 32768 : 1024;

  // Raw rte_lpm with the same prefixes and the same answers (the active tunnel).
  rte_lpm_config lc{};
  lc.max_rules = static_cast<uint32_t>(n);
  lc.number_tbl8s = cfg.tbl8_groups;
  t->raw = rte_lpm_create(("raw" + std::to_string(n)).c_str(), SOCKET_ID_ANY, &lc);
  if (t->raw == nullptr) {
    std::fprintf(stderr, "rte_lpm_create failed\n");
    std::exit(1);
  }
  const auto r0 = Clock::now();
  for (const auto& v : t->ours->list())
    if (v.prefix.len > 0 && rte_lpm_add(t->raw, v.prefix.addr, v.prefix.len, v.active) != 0) {
      std::fprintf(stderr, "rte_lpm_add %s failed\n", to_string(v.prefix).c_str());
      std::exit(1);
    }
  t->raw_load_s = std::chrono::duration<double>(Clock::now() - r0).count();
  check_same(t);
  return tt;
}

void make_addrs(Table* t, const std::vector<Prefix4>& prefixes) {
  std::mt19937_64 g(11);
  // Addresses: 90% inside a random prefix, 10% anywhere.
  t->addrs.resize(1u << 20);
  for (auto& a : t->addrs) {
    a = static_cast<uint32_t>(g());
    if (g() % 10 != 0) {
      const Prefix4 p = prefixes[g() % prefixes.size()];
      a = p.addr | (a & ~prefix_mask(p.len));
    }
  }
}

void check_same(Table* t) {
  // Same answers from both, or the comparison means nothing.
  for (size_t i = 0; i < t->addrs.size(); i += 7) {
    uint32_t nh = 0;
    const TunnelId want = rte_lpm_lookup(t->raw, t->addrs[i], &nh) == 0 ? static_cast<TunnelId>(nh) : kNoRoute;
    if (t->ours->fib().lookup(t->addrs[i]) != want) {
      std::fprintf(stderr, "ours and rte_lpm disagree at %s\n", to_string(Prefix4{t->addrs[i], 32}).c_str());
      std::exit(1);
    }
  }
}

void BM_LookupOurs(benchmark::State& st) {
  Table& t = table(static_cast<size_t>(st.range(0)));
  const Fib& fib = t.ours->fib();
  TunnelId out[32];
  size_t i = 0;
  const size_t mask = t.addrs.size() - 1;
  for (auto _ : st) {
    fib.lookup_burst(&t.addrs[i], out, 32);
    benchmark::DoNotOptimize(out);
    i = (i + 32) & mask;
  }
  st.SetItemsProcessed(static_cast<int64_t>(st.iterations()) * 32);
  st.counters["ns_per_lookup"] = benchmark::Counter(static_cast<double>(st.iterations()) * 32 * 1e-9,
                                                    benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

void BM_LookupRawRteLpm(benchmark::State& st) {
  Table& t = raw_table(static_cast<size_t>(st.range(0)));
  uint32_t out[32];
  size_t i = 0;
  const size_t mask = t.addrs.size() - 1;
  for (auto _ : st) {
    rte_lpm_lookup_bulk(t.raw, &t.addrs[i], out, 32);
    benchmark::DoNotOptimize(out);
    i = (i + 32) & mask;
  }
  st.SetItemsProcessed(static_cast<int64_t>(st.iterations()) * 32);
  st.counters["ns_per_lookup"] = benchmark::Counter(static_cast<double>(st.iterations()) * 32 * 1e-9,
                                                    benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

// Both interleaved in one loop (64 bursts each per iteration), so machine
// noise hits both alike: reports ns/lookup of each and the ratio.
void BM_LookupPair(benchmark::State& st) {
  Table& t = raw_table(static_cast<size_t>(st.range(0)));
  const Fib& fib = t.ours->fib();
  TunnelId o16[32];
  uint32_t o32[32];
  size_t i = 0, j = 0;
  const size_t mask = t.addrs.size() - 1;
  double ours = 0, raw = 0;
  j = t.addrs.size() / 2;  // different addresses, so neither warms the other's cache lines
  bool ours_first = true;
  auto run_ours = [&] {
    for (int k = 0; k < 64; k++) {
      fib.lookup_burst(&t.addrs[i], o16, 32);
      benchmark::DoNotOptimize(o16);
      i = (i + 32) & mask;
    }
  };
  auto run_raw = [&] {
    for (int k = 0; k < 64; k++) {
      rte_lpm_lookup_bulk(t.raw, &t.addrs[j], o32, 32);
      benchmark::DoNotOptimize(o32);
      j = (j + 32) & mask;
    }
  };
  for (auto _ : st) {
    const auto a = Clock::now();
    if (ours_first) run_ours(); else run_raw();
    const auto b = Clock::now();
    if (ours_first) run_raw(); else run_ours();
    const auto c = Clock::now();
    const double first = std::chrono::duration<double, std::nano>(b - a).count();
    const double second = std::chrono::duration<double, std::nano>(c - b).count();
    ours += ours_first ? first : second;
    raw += ours_first ? second : first;
    ours_first = !ours_first;
    st.SetIterationTime(std::chrono::duration<double>(c - a).count());
  }
  const double n = static_cast<double>(st.iterations()) * 64 * 32;
  st.counters["ours_ns"] = ours / n;
  st.counters["raw_ns"] = raw / n;
  st.counters["ours_over_raw"] = ours / raw;
}

void BM_Load1M(benchmark::State& st) {
  for (auto _ : st) {
    Table& t = table(1u << 20);  // loaded (and timed) once, when first used
    st.SetIterationTime(t.load_s);
    const auto s = t.ours->stats();
    st.counters["load_s"] = t.load_s;
    st.counters["fib_MiB"] = static_cast<double>(s.fib_bytes) / (1 << 20);
    st.counters["rib_heap_MiB"] = static_cast<double>(t.rib_heap) / (1 << 20);
    st.counters["total_MiB"] = static_cast<double>(s.fib_bytes + t.rib_heap) / (1 << 20);
    st.counters["tbl8_used"] = s.tbl8_used;
    if (t.raw != nullptr) st.counters["raw_rte_lpm_load_s"] = t.raw_load_s;
    st.counters["routes"] = static_cast<double>(s.routes);
  }
}

// 10,000 prefixes whose active tunnel goes down: time from set_tunnel_up()
// until a worker (RCU-registered, quiescent every loop) has seen the backup
// tunnel on all of them in one full pass.
void BM_Failover10k(benchmark::State& st) {
  const size_t qsz = rte_rcu_qsbr_get_memsize(1);
  auto* v = static_cast<rte_rcu_qsbr*>(std::aligned_alloc(RTE_CACHE_LINE_SIZE, (qsz + 63) / 64 * 64));
  rte_rcu_qsbr_init(v, 1);
  RouteTableConfig cfg;
  cfg.max_routes = 20000;
  cfg.max_tunnels = 4;
  cfg.qsbr = v;
  cfg.name = "failover";
  RouteTable rt(cfg);
  rt.add_tunnel(0);
  rt.add_tunnel(1);
  std::vector<uint32_t> probes;
  for (uint32_t i = 0; i < 10000; i++) {
    const uint32_t a = 0x0A000000 | (i << 8);
    rt.add_route(Prefix4{a, 24}, {{0, 10}, {1, 20}});
    probes.push_back(a | 77);
  }
  std::atomic<uint32_t> want_gen{0}, seen_gen{0};
  std::atomic<TunnelId> want{0};
  std::atomic<int64_t> seen_ns{0};
  std::atomic<bool> stop{false};
  std::thread worker([&] {
    rte_rcu_qsbr_thread_register(v, 0);
    rte_rcu_qsbr_thread_online(v, 0);
    TunnelId out[32];
    while (!stop.load(std::memory_order_relaxed)) {
      const uint32_t gen = want_gen.load(std::memory_order_acquire);
      const TunnelId w = want.load(std::memory_order_relaxed);
      bool all = true;
      for (size_t i = 0; i < probes.size(); i += 32) {
        const unsigned m = static_cast<unsigned>(std::min<size_t>(32, probes.size() - i));
        rt.fib().lookup_burst(&probes[i], out, m);
        for (unsigned k = 0; k < m; k++) all &= out[k] == w;
      }
      if (all && seen_gen.load(std::memory_order_relaxed) != gen) {
        seen_ns.store(Clock::now().time_since_epoch().count(), std::memory_order_relaxed);
        seen_gen.store(gen, std::memory_order_release);
      }
      rte_rcu_qsbr_quiescent(v, 0);
    }
    rte_rcu_qsbr_thread_offline(v, 0);
    rte_rcu_qsbr_thread_unregister(v, 0);
  });
  double call_us = 0, max_ms = 0;
  uint32_t gen = 0;
  auto flip = [&](bool up, TunnelId target) {
    want.store(target);
    want_gen.store(++gen, std::memory_order_release);
    const auto t0 = Clock::now();
    rt.set_tunnel_up(0, up);
    const auto t1 = Clock::now();
    while (seen_gen.load(std::memory_order_acquire) != gen) std::this_thread::yield();
    const double s = static_cast<double>(seen_ns.load() - t0.time_since_epoch().count()) * 1e-9;
    return std::make_pair(s, std::chrono::duration<double, std::micro>(t1 - t0).count());
  };
  for (auto _ : st) {
    const auto [s, us] = flip(false, 1);
    st.SetIterationTime(s);
    call_us += us;
    max_ms = std::max(max_ms, s * 1e3);
    st.PauseTiming();
    flip(true, 0);
    st.ResumeTiming();
  }
  stop = true;
  worker.join();
  std::free(v);
  st.counters["set_tunnel_up_us"] = call_us / static_cast<double>(st.iterations());
  st.counters["max_visible_ms"] = max_ms;
  st.counters["prefixes"] = 10000;
}

}  // namespace

BENCHMARK(BM_Failover10k)->UseManualTime()->Iterations(100)->Unit(benchmark::kMicrosecond);
// Grouped by table size: one table (ours + raw) is built per size.
BENCHMARK(BM_LookupOurs)->Arg(1000);
BENCHMARK(BM_LookupRawRteLpm)->Arg(1000);
BENCHMARK(BM_LookupPair)->Arg(1000)->UseManualTime();
BENCHMARK(BM_LookupOurs)->Arg(100000);
BENCHMARK(BM_LookupRawRteLpm)->Arg(100000);
BENCHMARK(BM_LookupPair)->Arg(100000)->UseManualTime();
BENCHMARK(BM_LookupOurs)->Arg(1 << 20);
BENCHMARK(BM_LookupRawRteLpm)->Arg(1 << 20);
BENCHMARK(BM_LookupPair)->Arg(1 << 20)->UseManualTime();
BENCHMARK(BM_Load1M)->UseManualTime()->Iterations(1)->Unit(benchmark::kMillisecond);

int main(int argc, char** argv) {
  std::vector<std::string> eal = {"bench_lpm", "--no-huge", "-m", "2048", "--no-pci", "--no-shconf",
                                  "--no-telemetry", "-l", "0", "--log-level=lib.eal:error"};
  if (const char* m = std::getenv("ESPGW_BENCH_MEM")) eal[3] = m;
  std::vector<char*> ev;
  for (auto& s : eal) ev.push_back(s.data());
  if (rte_eal_init(static_cast<int>(ev.size()), ev.data()) < 0) {
    std::fprintf(stderr, "rte_eal_init failed\n");
    return 1;
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  g_table.reset();
  benchmark::Shutdown();
  rte_eal_cleanup();
  return 0;
}
