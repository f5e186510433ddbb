// Shared helpers for the lpm tests: EAL bring-up and an independent
// reference model (plain vectors, no code shared with the RIB/FIB).
#pragma once

#include <gtest/gtest.h>
#include <rte_eal.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <unordered_map>
#include <vector>

#include "lpm/route_table.h"

namespace lpmtest {

using namespace espgw::lpm;

class EalEnv : public ::testing::Environment {
 public:
  explicit EalEnv(const char* mem) : mem_(mem) {}
  void SetUp() override {
    std::vector<std::string> args = {"lpm_test", "--no-huge", "-m", mem_, "--no-pci", "--no-shconf",
                                     "--no-telemetry", "-l", "0", "--log-level=lib.eal:error"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    ASSERT_GE(rte_eal_init(static_cast<int>(argv.size()), argv.data()), 0) << "rte_eal_init failed";
  }
  void TearDown() override { rte_eal_cleanup(); }

 private:
  std::string mem_;
};

inline uint64_t test_seed(uint64_t dflt = 20250805) {
  const char* s = std::getenv("ESPGW_TEST_SEED");
  return s ? std::strtoull(s, nullptr, 0) : dflt;
}

inline bool under_sanitizer() {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  return true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
  return true;
#endif
#endif
  return false;
}

// The reference: a plain vector of routes, and a plain scan over hops with
// the current tunnel states. lookup_scan() is a linear scan over all routes;
// lookup() finds candidates per length through a hash map (same answers,
// fast enough for a million lookups) and is cross-checked against it.
struct RefModel {
  struct R {
    uint32_t addr;
    uint8_t len;
    std::vector<NextHop> hops;
  };
  std::vector<R> routes;
  std::unordered_map<uint64_t, size_t> where;  // key -> index in routes
  std::vector<bool> up;

  static uint64_t key(uint32_t a, uint8_t l) { return (uint64_t{a} << 8) | l; }
  static uint32_t mask(int l) { return l == 0 ? 0u : ~0u << (32 - l); }

  bool has(uint32_t a, uint8_t l) const { return where.count(key(a, l)) != 0; }
  R* get(uint32_t a, uint8_t l) {
    auto it = where.find(key(a, l));
    return it == where.end() ? nullptr : &routes[it->second];
  }
  void add(uint32_t a, uint8_t l, std::vector<NextHop> h) {
    where[key(a, l)] = routes.size();
    routes.push_back(R{a, l, std::move(h)});
  }
  void erase(uint32_t a, uint8_t l) {
    auto it = where.find(key(a, l));
    const size_t i = it->second;
    where.erase(it);
    if (i != routes.size() - 1) {
      routes[i] = std::move(routes.back());
      where[key(routes[i].addr, routes[i].len)] = i;
    }
    routes.pop_back();
  }
  TunnelId best(const R& r) const {
    TunnelId b = kNoRoute;
    uint32_t bp = UINT32_MAX;
    bool any = false;
    for (const NextHop& h : r.hops)
      if (up[h.tunnel] && (!any || h.priority < bp)) {
        b = h.tunnel;
        bp = h.priority;
        any = true;
      }
    return b;
  }
  TunnelId lookup(uint32_t a) const {
    for (int l = 32; l >= 0; l--) {
      auto it = where.find(key(a & mask(l), static_cast<uint8_t>(l)));
      if (it == where.end()) continue;
      const TunnelId t = best(routes[it->second]);
      if (t != kNoRoute) return t;
    }
    return kNoRoute;
  }
  TunnelId lookup_scan(uint32_t a) const {
    int best_len = -1;
    TunnelId ans = kNoRoute;
    for (const R& r : routes) {
      if (r.len <= best_len || (a & mask(r.len)) != r.addr) continue;
      const TunnelId t = best(r);
      if (t == kNoRoute) continue;
      best_len = r.len;
      ans = t;
    }
    return ans;
  }
};

}  // namespace lpmtest
