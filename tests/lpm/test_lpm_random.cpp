// Randomized check of the RIB+FIB against an independent reference model:
// 100,000 random routes of random lengths (0..32) over 64 tunnels, tunnel
// flaps and route edits interleaved, 1,000,000 lookups, zero mismatches.
// Seed: ESPGW_TEST_SEED (printed on failure).
#include <random>

#include "lpm_test_util.h"

using namespace espgw::lpm;
using lpmtest::RefModel;

static ::testing::Environment* const g_env =
    ::testing::AddGlobalTestEnvironment(new lpmtest::EalEnv("1024"));

namespace {
constexpr unsigned kTunnels = 64;
constexpr size_t kRoutes = 100000;
constexpr size_t kLookups = 1000000;

struct Rng {
  std::mt19937_64 g;
  explicit Rng(uint64_t s) : g(s) {}
  uint32_t u32() { return static_cast<uint32_t>(g()); }
  uint32_t below(uint32_t n) { return static_cast<uint32_t>(g() % n); }
  bool chance(unsigned pct) { return below(100) < pct; }
};

std::vector<NextHop> random_hops(Rng& r) {
  std::vector<NextHop> h;
  const unsigned n = 1 + r.below(4);
  while (h.size() < n) {
    const TunnelId t = static_cast<TunnelId>(r.below(kTunnels));
    bool dup = false;
    for (auto& x : h) dup |= x.tunnel == t;
    if (!dup) h.push_back(NextHop{t, r.below(8)});  // few priorities: many ties
  }
  return h;
}
}  // namespace

TEST(LpmRandom, MatchesReferenceModel) {
  const uint64_t seed = lpmtest::test_seed();
  SCOPED_TRACE("ESPGW_TEST_SEED=" + std::to_string(seed));
  RecordProperty("seed", std::to_string(seed));
  Rng rng(seed);

  RouteTableConfig cfg;
  cfg.max_routes = kRoutes + 1000;
  cfg.max_tunnels = kTunnels;
  cfg.tbl8_groups = 65536;  // ~38k routes end up longer than /24 (short lengths saturate)
  cfg.name = "lpmrand";
  RouteTable rt(cfg);
  RefModel ref;
  ref.up.assign(kTunnels, false);
  for (TunnelId t = 0; t < kTunnels; t++) {
    const bool up = rng.chance(75);
    rt.add_tunnel(t, up);
    ref.up[t] = up;
  }

  size_t lookups = 0, mismatches = 0, scans = 0, ops = 0, flaps = 0, dup_rejects = 0;
  std::vector<uint32_t> addrs;
  std::vector<TunnelId> got;
  auto check_batch = [&](size_t n) {
    addrs.clear();
    for (size_t i = 0; i < n; i++) {
      uint32_t a = rng.u32();
      if (!ref.routes.empty() && rng.chance(60)) {  // inside a random route, often at its edges
        const auto& r = ref.routes[rng.below(static_cast<uint32_t>(ref.routes.size()))];
        const uint32_t host = ~RefModel::mask(r.len);
        const unsigned k = rng.below(4);
        a = r.addr | (k == 0 ? 0 : k == 1 ? host : (a & host));
      }
      addrs.push_back(a);
    }
    got.assign(n, 0);
    rt.fib().lookup_burst(addrs.data(), got.data(), static_cast<unsigned>(n));
    for (size_t i = 0; i < n; i++) {
      const TunnelId want = ref.lookup(addrs[i]);
      const TunnelId one = rt.fib().lookup(addrs[i]);
      if (got[i] != want || one != want) {
        if (++mismatches <= 10)
          ADD_FAILURE() << "address " << to_string(Prefix4{addrs[i], 32}) << ": burst " << got[i] << " single "
                        << one << " reference " << want;
      }
      if (i % 500 == 0) {  // the fast reference against the plain linear scan
        scans++;
        if (ref.lookup_scan(addrs[i]) != want && ++mismatches <= 10)
          ADD_FAILURE() << "reference models disagree at " << to_string(Prefix4{addrs[i], 32});
      }
    }
    lookups += n;
  };
  auto random_prefix = [&]() {
    const uint8_t len = static_cast<uint8_t>(rng.below(33));
    return Prefix4{rng.u32() & RefModel::mask(len), len};
  };
  auto flap = [&]() {
    const TunnelId t = static_cast<TunnelId>(rng.below(kTunnels));
    const bool up = !ref.up[t];
    rt.set_tunnel_up(t, up);
    ref.up[t] = up;
    flaps++;
  };
  auto random_edit = [&]() {
    if (ref.routes.empty()) return;
    const auto r = ref.routes[rng.below(static_cast<uint32_t>(ref.routes.size()))];
    const Prefix4 p{r.addr, r.len};
    switch (rng.below(4)) {
      case 0:
        rt.delete_route(p);
        ref.erase(r.addr, r.len);
        break;
      case 1: {
        auto h = random_hops(rng);
        rt.replace_route(p, h);
        ref.get(r.addr, r.len)->hops = h;
        break;
      }
      case 2: {
        const TunnelId t = static_cast<TunnelId>(rng.below(kTunnels));
        bool has = false;
        for (auto& x : r.hops) has |= x.tunnel == t;
        if (has) {
          EXPECT_THROW(rt.add_next_hop(p, {t, 1}), RouteError);
        } else {
          const NextHop h{t, rng.below(8)};
          rt.add_next_hop(p, h);
          ref.get(r.addr, r.len)->hops.push_back(h);
        }
        break;
      }
      default: {
        const TunnelId t = r.hops[rng.below(static_cast<uint32_t>(r.hops.size()))].tunnel;
        rt.delete_next_hop(p, t);
        if (r.hops.size() == 1) {
          ref.erase(r.addr, r.len);
        } else {
          auto& hv = ref.get(r.addr, r.len)->hops;
          hv.erase(std::find_if(hv.begin(), hv.end(), [t](const NextHop& x) { return x.tunnel == t; }));
        }
      }
    }
    ops++;
  };

  // Build-up: 100,000 routes in batches, flaps and edits interleaved.
  while (ref.routes.size() < kRoutes) {
    for (int i = 0; i < 2500 && ref.routes.size() < kRoutes; i++) {
      const Prefix4 p = random_prefix();
      auto h = random_hops(rng);
      if (ref.has(p.addr, p.len)) {
        EXPECT_THROW(rt.add_route(p, h), RouteError);
        dup_rejects++;
        continue;
      }
      rt.add_route(p, h);
      ref.add(p.addr, p.len, h);
      ops++;
      if (rng.chance(1)) random_edit();
    }
    for (int i = 0; i < 3; i++) flap();
    check_batch(10000);
    if (mismatches > 10) break;
  }
  ASSERT_EQ(rt.route_count(), ref.routes.size());
  // Steady state: flaps, edits and lookups until a million lookups are done.
  while (lookups < kLookups && mismatches <= 10) {
    for (int i = 0; i < 4; i++) flap();
    for (int i = 0; i < 20; i++) random_edit();
    check_batch(std::min<size_t>(20000, kLookups - lookups));
  }
  EXPECT_EQ(mismatches, 0u);
  EXPECT_GE(lookups, kLookups);

  // The RIB's view agrees too: every route, its hops in order, its active tunnel.
  const auto views = rt.list();
  ASSERT_EQ(views.size(), ref.routes.size());
  size_t bad_views = 0;
  for (const auto& v : views) {
    RefModel::R* r = ref.get(v.prefix.addr, v.prefix.len);
    if (r == nullptr || r->hops != v.hops || ref.best(*r) != v.active)
      if (++bad_views <= 5) ADD_FAILURE() << "route " << to_string(v.prefix) << " differs from the reference";
  }
  EXPECT_EQ(bad_views, 0u);
  EXPECT_GT(dup_rejects, 0u);
  EXPECT_GT(rt.stats().tbl8_used, 10000u);  // the long prefixes really went through tbl8
  std::printf("seed %llu: %zu lookups (%zu also by linear scan), %zu route ops, %zu flaps, %zu duplicate adds "
              "rejected, %zu routes, %u tbl8 groups in use\n",
              static_cast<unsigned long long>(seed), lookups, scans, ops, flaps, dup_rejects, views.size(),
              rt.stats().tbl8_used);
}
