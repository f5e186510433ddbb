// A worker thread (registered with rte_rcu_qsbr, quiescent once per loop)
// looks up bursts while the control thread flaps tunnels and adds, replaces
// and deletes routes, including prefixes longer than /24 in a tiny tbl8 pool
// so groups are retired and reused all the time.
//
// The check is versioned through RCU. For each probe address the writer
// keeps a mask of the answers allowed right now. Before op k it widens the
// mask to {answer in state k-1, answer in state k}, then applies the op, then
// waits for a grace period (rte_rcu_qsbr_synchronize) and only then narrows
// the mask to {answer in state k}. The reader looks up and reads the masks in
// the same critical section. Any critical section that overlaps op k's FIB
// writes ends before the narrowing (and before op k+1 starts), so it may see
// exactly the states k-1 and k: an answer outside the mask is a value that
// was never a valid answer for that address while the reader looked.
#include <rte_rcu_qsbr.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <memory>
#include <random>
#include <thread>

#include "lpm_test_util.h"

using namespace espgw::lpm;
using lpmtest::RefModel;

static ::testing::Environment* const g_env =
    ::testing::AddGlobalTestEnvironment(new lpmtest::EalEnv("512"));

namespace {
constexpr unsigned kTunnels = 12;
uint32_t bit(TunnelId t) { return t == kNoRoute ? 1u << 31 : 1u << t; }

struct QsbrDeleter {
  void operator()(rte_rcu_qsbr* v) const { std::free(v); }
};
}  // namespace

TEST(LpmConcurrency, ReadersOnlySeeValidAnswersWhileTheWriterPublishes) {
  const uint64_t seed = lpmtest::test_seed();
  SCOPED_TRACE("ESPGW_TEST_SEED=" + std::to_string(seed));
  const char* dur_env = std::getenv("ESPGW_TEST_DURATION_MS");
  const int duration_ms = dur_env ? std::atoi(dur_env) : lpmtest::under_sanitizer() ? 1000 : 3000;

  const size_t qsz = rte_rcu_qsbr_get_memsize(1);
  std::unique_ptr<rte_rcu_qsbr, QsbrDeleter> qsbr(
      static_cast<rte_rcu_qsbr*>(std::aligned_alloc(RTE_CACHE_LINE_SIZE, (qsz + 63) / 64 * 64)));
  ASSERT_EQ(rte_rcu_qsbr_init(qsbr.get(), 1), 0);

  RouteTableConfig cfg;
  cfg.max_routes = 4096;
  cfg.max_tunnels = kTunnels;
  cfg.tbl8_groups = 6;  // fewer than the /24s that want one: constant reuse
  cfg.qsbr = qsbr.get();
  cfg.name = "lpmconc";
  RouteTable rt(cfg);
  RefModel ref;
  ref.up.assign(kTunnels, true);
  for (TunnelId t = 0; t < kTunnels; t++) rt.add_tunnel(t);

  // Candidate prefixes: a /8, a /12, /16s, /24s and many longer ones spread
  // over 10 /24s (only 6 may hold long prefixes at once). No /0: each of its
  // changes rewrites all 16M tbl24 entries and would starve the op rate.
  std::vector<Prefix4> cands = {parse_prefix4("10.0.0.0/8"), parse_prefix4("10.0.0.0/12"),
                                parse_prefix4("10.1.0.0/16"), parse_prefix4("10.2.0.0/16")};
  std::mt19937_64 g(seed);
  for (uint32_t x = 0; x < 10; x++) {
    const uint32_t base = 0x0A010000 | (x << 8);
    cands.push_back(Prefix4{base, 24});
    for (uint8_t len : {25, 26, 28, 30, 32}) {
      const uint32_t a = (base | (static_cast<uint32_t>(g()) & 0xFF)) & RefModel::mask(len);
      cands.push_back(Prefix4{a, len});
    }
  }
  std::vector<uint32_t> probes;
  for (const Prefix4& p : cands) {
    const uint32_t host = ~RefModel::mask(p.len);
    probes.push_back(p.addr);
    probes.push_back(p.addr | host);
    probes.push_back(p.addr | (static_cast<uint32_t>(g()) & host));
  }
  for (int i = 0; i < 64; i++) probes.push_back(0x0A010000 | (static_cast<uint32_t>(g()) & 0x0FFF));
  while (probes.size() % 32) probes.push_back(static_cast<uint32_t>(g()));
  const size_t np = probes.size();

  std::vector<TunnelId> answer(np, kNoRoute);
  std::unique_ptr<std::atomic<uint32_t>[]> allowed(new std::atomic<uint32_t>[np]);
  for (size_t i = 0; i < np; i++) allowed[i].store(bit(kNoRoute));

  std::atomic<bool> stop{false};
  std::atomic<uint64_t> reader_lookups{0}, violations{0};
  std::atomic<uint32_t> bad_addr{0}, bad_answer{0}, bad_mask{0};
  std::thread reader([&] {
    rte_rcu_qsbr_thread_register(qsbr.get(), 0);
    rte_rcu_qsbr_thread_online(qsbr.get(), 0);
    TunnelId out[32];
    uint64_t n = 0;
    size_t off = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      rt.fib().lookup_burst(&probes[off], out, 32);
      for (unsigned i = 0; i < 32; i++) {
        const uint32_t m = allowed[off + i].load(std::memory_order_acquire);
        if ((m & bit(out[i])) == 0 && violations.fetch_add(1) == 0) {
          bad_addr = probes[off + i];
          bad_answer = out[i];
          bad_mask = m;
        }
      }
      const TunnelId one = rt.fib().lookup(probes[off]);
      if ((allowed[off].load(std::memory_order_acquire) & bit(one)) == 0) violations.fetch_add(1);
      n += 33;
      off = (off + 32) % np;
      rte_rcu_qsbr_quiescent(qsbr.get(), 0);
    }
    reader_lookups = n;
    rte_rcu_qsbr_thread_offline(qsbr.get(), 0);
    rte_rcu_qsbr_thread_unregister(qsbr.get(), 0);
  });

  uint64_t ops = 0, rejected = 0, rest_mismatches = 0;
  std::vector<TunnelId> next(np);
  auto random_hops = [&] {
    std::vector<NextHop> h;
    const unsigned n = 1 + g() % 3;
    while (h.size() < n) {
      const TunnelId t = static_cast<TunnelId>(g() % kTunnels);
      bool dup = false;
      for (auto& x : h) dup |= x.tunnel == t;
      if (!dup) h.push_back(NextHop{t, static_cast<uint32_t>(g() % 4)});
    }
    return h;
  };
  const auto t_end = std::chrono::steady_clock::now() + std::chrono::milliseconds(duration_ms);
  // On a loaded host (a sanitizer build beside other jobs on 2 CPUs) the
  // duration alone may end before the writer reached what the test must
  // exercise: run on until it has, up to 10 times the duration.
  const auto t_hard_end = std::chrono::steady_clock::now() + std::chrono::milliseconds(10 * duration_ms);
  auto covered = [&] { return ops > 100 && rejected > 0 && rt.stats().tbl8_retired > 10; };
  while (violations.load() == 0 && std::chrono::steady_clock::now() < t_hard_end &&
         (std::chrono::steady_clock::now() < t_end || !covered())) {
    // Choose the op and apply it to the reference (state k).
    const RefModel saved_ref = ref;
    std::function<void()> op;
    const unsigned kind = g() % 10;
    if (kind < 3) {
      const TunnelId t = static_cast<TunnelId>(g() % kTunnels);
      const bool up = !ref.up[t];
      ref.up[t] = up;
      op = [&rt, t, up] { rt.set_tunnel_up(t, up); };
    } else {
      const Prefix4 p = cands[g() % cands.size()];
      if (!ref.has(p.addr, p.len)) {
        auto h = random_hops();
        ref.add(p.addr, p.len, h);
        op = [&rt, p, h] { rt.add_route(p, h); };
      } else if (kind < 7) {
        ref.erase(p.addr, p.len);
        op = [&rt, p] { rt.delete_route(p); };
      } else {
        auto h = random_hops();
        ref.get(p.addr, p.len)->hops = h;
        op = [&rt, p, h] { rt.replace_route(p, h); };
      }
    }
    for (size_t i = 0; i < np; i++) next[i] = ref.lookup(probes[i]);
    for (size_t i = 0; i < np; i++) allowed[i].store(bit(answer[i]) | bit(next[i]), std::memory_order_seq_cst);
    bool ok = true;
    try {
      op();
    } catch (const RouteError&) {  // tbl8 pool full: nothing changed
      ok = false;
      rejected++;
      ref = saved_ref;
    }
    // rte_rcu_qsbr_synchronize(), but yielding: on a loaded 2-core box the
    // reader may share our core, and pure spinning would wait a time slice.
    const uint64_t token = rte_rcu_qsbr_start(qsbr.get());
    while (rte_rcu_qsbr_check(qsbr.get(), token, false) != 1) std::this_thread::yield();
    if (ok) answer = next;
    for (size_t i = 0; i < np; i++) allowed[i].store(bit(answer[i]), std::memory_order_release);
    ops++;
    // The FIB at rest equals the reference exactly.
    if (ops % 64 == 0)
      for (size_t i = 0; i < np; i++)
        if (rt.fib().lookup(probes[i]) != answer[i] && rest_mismatches++ == 0)
          ADD_FAILURE() << to_string(Prefix4{probes[i], 32}) << " differs from the reference after op " << ops;
  }
  stop = true;
  reader.join();

  EXPECT_EQ(rest_mismatches, 0u);
  EXPECT_EQ(violations.load(), 0u) << "first: " << to_string(Prefix4{bad_addr.load(), 32}) << " returned "
                                   << bad_answer.load() << ", allowed mask 0x" << std::hex << bad_mask.load();
  const auto st = rt.stats();
  EXPECT_GT(ops, 100u);
  EXPECT_GT(reader_lookups.load(), 10000u);
  EXPECT_GT(st.tbl8_retired, 10u) << "the test did not exercise tbl8 reuse";
  EXPECT_GT(rejected, 0u) << "the tbl8 capacity limit was never hit";
  std::printf("seed %llu, %d ms: %llu writer ops (%llu rejected for tbl8 capacity), %llu reader lookups, "
              "%llu tbl8 groups retired through RCU\n",
              static_cast<unsigned long long>(seed), duration_ms, static_cast<unsigned long long>(ops),
              static_cast<unsigned long long>(rejected), static_cast<unsigned long long>(reader_lookups.load()),
              static_cast<unsigned long long>(st.tbl8_retired));
}

// Deterministic check of the reclamation rule the stress test above can only
// hit by chance: a retired tbl8 group is not reused while a registered reader
// has not passed a quiescent state since it was retired.
TEST(LpmConcurrency, RetiredTbl8GroupWaitsForTheGracePeriod) {
  const size_t qsz = rte_rcu_qsbr_get_memsize(1);
  std::unique_ptr<rte_rcu_qsbr, QsbrDeleter> qsbr(
      static_cast<rte_rcu_qsbr*>(std::aligned_alloc(RTE_CACHE_LINE_SIZE, (qsz + 63) / 64 * 64)));
  ASSERT_EQ(rte_rcu_qsbr_init(qsbr.get(), 1), 0);
  RouteTableConfig cfg;
  cfg.max_routes = 64;
  cfg.max_tunnels = 4;
  cfg.tbl8_groups = 1;
  cfg.qsbr = qsbr.get();
  cfg.name = "lpmgrace";
  RouteTable rt(cfg);
  rt.add_tunnel(0);
  rt.add_tunnel(1);
  const Prefix4 a = parse_prefix4("10.0.0.128/25"), b = parse_prefix4("10.0.1.128/25");

  // A reader is online and "inside a lookup": it has not reported quiescence.
  rte_rcu_qsbr_thread_register(qsbr.get(), 0);
  rte_rcu_qsbr_thread_online(qsbr.get(), 0);
  rt.add_route(a, {{0, 1}});
  EXPECT_EQ(rt.stats().tbl8_used, 1u);
  rt.delete_route(a);  // the group is unlinked and retired, not freed
  EXPECT_EQ(rt.stats().tbl8_used, 0u);
  EXPECT_EQ(rt.stats().tbl8_deferred, 1u);
  rt.reclaim();
  EXPECT_EQ(rt.stats().tbl8_deferred, 1u) << "reclaimed before the reader was quiescent";
  EXPECT_EQ(rt.fib().lookup(a.addr), kNoRoute);

  // With the only group retired, the next long prefix must wait for the reader.
  std::atomic<bool> reported{false};
  std::thread reader([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    reported = true;
    rte_rcu_qsbr_quiescent(qsbr.get(), 0);
  });
  rt.add_route(b, {{1, 1}});
  EXPECT_TRUE(reported.load()) << "the retired group was reused before the grace period ended";
  reader.join();
  EXPECT_EQ(rt.stats().tbl8_deferred, 0u);
  EXPECT_EQ(rt.stats().tbl8_used, 1u);
  EXPECT_EQ(rt.fib().lookup(b.addr), 1);
  EXPECT_EQ(rt.fib().lookup(a.addr), kNoRoute);

  // Retire again; a quiescent report lets the non-blocking reclaim free it.
  rt.delete_route(b);
  EXPECT_EQ(rt.stats().tbl8_deferred, 1u);
  rte_rcu_qsbr_quiescent(qsbr.get(), 0);
  rt.reclaim();
  EXPECT_EQ(rt.stats().tbl8_deferred, 0u);
  rte_rcu_qsbr_thread_offline(qsbr.get(), 0);
  rte_rcu_qsbr_thread_unregister(qsbr.get(), 0);
}
