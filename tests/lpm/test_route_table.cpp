// Route table semantics, the interop guide's AWS topology, and bad input.
#include <algorithm>
#include <functional>
#include <numeric>

#include "lpm_test_util.h"

using namespace espgw::lpm;
using lpmtest::EalEnv;

static ::testing::Environment* const g_env = ::testing::AddGlobalTestEnvironment(new EalEnv("512"));

namespace {

Prefix4 P(const char* s) { return parse_prefix4(s); }
uint32_t A(const char* s) { return parse_prefix4(s).addr; }

RouteTableConfig small_cfg(uint32_t max_routes = 1024, uint32_t tbl8 = 64) {
  RouteTableConfig c;
  c.max_routes = max_routes;
  c.max_tunnels = 16;
  c.tbl8_groups = tbl8;
  c.name = "lpmtest";
  return c;
}

// Both lookup entry points, and they must agree.
TunnelId look(const RouteTable& rt, uint32_t a) {
  TunnelId burst = 0;
  rt.fib().lookup_burst(&a, &burst, 1);
  const TunnelId one = rt.fib().lookup(a);
  EXPECT_EQ(burst, one) << "lookup_burst and lookup disagree";
  return one;
}

bool same_views(const std::vector<RouteTable::RouteView>& a, const std::vector<RouteTable::RouteView>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); i++)
    if (!(a[i].prefix == b[i].prefix) || a[i].hops != b[i].hops || a[i].active != b[i].active) return false;
  return true;
}

}  // namespace

TEST(Prefix, ParseAndFormat) {
  EXPECT_EQ(P("10.0.0.0/8"), (Prefix4{0x0A000000, 8}));
  EXPECT_EQ(P("0.0.0.0/0"), (Prefix4{0, 0}));
  EXPECT_EQ(P("192.168.1.7"), (Prefix4{0xC0A80107, 32}));
  EXPECT_EQ(P("255.255.255.255/32"), (Prefix4{0xFFFFFFFF, 32}));
  EXPECT_EQ(to_string(Prefix4{0xAC1F0000, 16}), "172.31.0.0/16");
  EXPECT_EQ(to_string(P("10.248.0.128/25")), "10.248.0.128/25");
  for (const char* bad : {"", "10.0.0/8", "10.0.0.0/", "10.0.0.0/33", "256.0.0.0/8", "10.0.0.0/8x",
                          "10..0.0/8", "a.b.c.d/8", "10.0.0.0 /8", "010.0.0.0/8", "10.0.0.0/-1", "1.2.3.4.5"})
    EXPECT_THROW(parse_prefix4(bad), RouteError) << bad;
  try {
    parse_prefix4("10.0.0.1/8");
    FAIL() << "host bits accepted";
  } catch (const RouteError& e) {
    EXPECT_NE(std::string(e.what()).find("did you mean 10.0.0.0/8"), std::string::npos) << e.what();
  }
}

TEST(RouteTable, EmptyTableHasNoRoute) {
  RouteTable rt(small_cfg());
  EXPECT_EQ(look(rt, A("1.2.3.4")), kNoRoute);
  EXPECT_EQ(rt.route_count(), 0u);
  EXPECT_TRUE(rt.list().empty());
}

TEST(RouteTable, LongestPrefixWinsOverPriority) {
  RouteTable rt(small_cfg());
  for (TunnelId t = 0; t < 4; t++) rt.add_tunnel(t);
  rt.add_route(P("0.0.0.0/0"), {{0, 1}});
  rt.add_route(P("10.0.0.0/8"), {{1, 100}});
  rt.add_route(P("10.1.0.0/16"), {{2, 65535}});  // worse priority, more specific: wins
  rt.add_route(P("10.1.2.3/32"), {{3, 50}});
  EXPECT_EQ(look(rt, A("9.9.9.9")), 0);
  EXPECT_EQ(look(rt, A("10.200.0.1")), 1);
  EXPECT_EQ(look(rt, A("10.1.0.1")), 2);
  EXPECT_EQ(look(rt, A("10.1.2.2")), 2);
  EXPECT_EQ(look(rt, A("10.1.2.3")), 3);
  EXPECT_EQ(look(rt, A("10.1.2.4")), 2);
  EXPECT_EQ(rt.route_count(), 4u);
}

TEST(RouteTable, LowestPriorityAmongUpTunnels) {
  RouteTable rt(small_cfg());
  for (TunnelId t = 0; t < 3; t++) rt.add_tunnel(t);
  rt.add_route(P("10.0.0.0/24"), {{2, 30}, {0, 10}, {1, 20}});
  EXPECT_EQ(look(rt, A("10.0.0.9")), 0);
  rt.set_tunnel_up(0, false);
  EXPECT_EQ(look(rt, A("10.0.0.9")), 1);
  rt.set_tunnel_up(1, false);
  EXPECT_EQ(look(rt, A("10.0.0.9")), 2);
  rt.set_tunnel_up(0, true);
  EXPECT_EQ(look(rt, A("10.0.0.9")), 0);
  EXPECT_EQ(rt.list().at(0).active, 0);
}

TEST(RouteTable, TiesBreakByConfigurationOrder) {
  RouteTable rt(small_cfg());
  for (TunnelId t = 0; t < 4; t++) rt.add_tunnel(t);
  rt.add_route(P("10.0.0.0/16"), {{3, 5}, {1, 5}, {2, 5}});
  EXPECT_EQ(look(rt, A("10.0.1.1")), 3);
  rt.set_tunnel_up(3, false);
  EXPECT_EQ(look(rt, A("10.0.1.1")), 1);
  rt.set_tunnel_up(3, true);  // recovers: first configured wins again
  EXPECT_EQ(look(rt, A("10.0.1.1")), 3);
  // add_next_hop appends: last in tie order.
  rt.add_next_hop(P("10.0.0.0/16"), {0, 5});
  EXPECT_EQ(look(rt, A("10.0.1.1")), 3);
  rt.set_tunnel_up(3, false);
  rt.set_tunnel_up(1, false);
  rt.set_tunnel_up(2, false);
  EXPECT_EQ(look(rt, A("10.0.1.1")), 0);
  for (TunnelId t : {1, 2, 3}) rt.set_tunnel_up(t, true);
  // replace_route takes the new order.
  rt.replace_route(P("10.0.0.0/16"), {{2, 5}, {3, 5}});
  EXPECT_EQ(look(rt, A("10.0.1.1")), 2);
  ASSERT_EQ(rt.list().size(), 1u);
  EXPECT_EQ(rt.list()[0].hops, (std::vector<NextHop>{{2, 5}, {3, 5}}));
}

TEST(RouteTable, AllHopsDownFallsBackToCoveringThenDefault) {
  RouteTable rt(small_cfg());
  for (TunnelId t = 0; t < 4; t++) rt.add_tunnel(t);
  rt.add_route(P("10.1.2.0/24"), {{0, 10}, {1, 20}});
  rt.add_route(P("10.1.0.0/16"), {{2, 10}});
  rt.add_route(P("0.0.0.0/0"), {{3, 10}});
  const uint32_t a = A("10.1.2.77");
  EXPECT_EQ(look(rt, a), 0);
  rt.set_tunnel_up(0, false);
  rt.set_tunnel_up(1, false);
  EXPECT_EQ(look(rt, a), 2);  // /24 left the FIB: the /16 answers
  EXPECT_EQ(rt.list()[2].active, kNoRoute);  // sorted: /0, /16, /24
  EXPECT_EQ(rt.stats().installed, 2u);
  rt.set_tunnel_up(2, false);
  EXPECT_EQ(look(rt, a), 3);  // then the default route
  EXPECT_EQ(look(rt, A("10.1.9.9")), 3);
  rt.set_tunnel_up(3, false);
  EXPECT_EQ(look(rt, a), kNoRoute);
  rt.set_tunnel_up(1, true);  // the /24 comes back
  EXPECT_EQ(look(rt, a), 1);
  EXPECT_EQ(look(rt, A("10.1.9.9")), kNoRoute);
  rt.set_tunnel_up(2, true);
  EXPECT_EQ(look(rt, A("10.1.9.9")), 2);
  EXPECT_EQ(look(rt, a), 1);
  // Deleting the /16 makes its addresses fall back too.
  rt.set_tunnel_up(3, true);
  rt.delete_route(P("10.1.0.0/16"));
  EXPECT_EQ(look(rt, A("10.1.9.9")), 3);
  EXPECT_EQ(look(rt, a), 1);
}

TEST(RouteTable, PrefixesLongerThan24UseAndReturnTbl8Groups) {
  RouteTable rt(small_cfg());
  for (TunnelId t = 0; t < 4; t++) rt.add_tunnel(t);
  rt.add_route(P("10.0.0.0/24"), {{0, 1}});
  rt.add_route(P("10.0.0.128/25"), {{1, 1}});
  rt.add_route(P("10.0.0.200/32"), {{2, 1}});
  EXPECT_EQ(rt.stats().tbl8_used, 1u);
  EXPECT_EQ(look(rt, A("10.0.0.5")), 0);
  EXPECT_EQ(look(rt, A("10.0.0.128")), 1);
  EXPECT_EQ(look(rt, A("10.0.0.200")), 2);
  EXPECT_EQ(look(rt, A("10.0.0.201")), 1);
  // A change of the /24 reaches into the tbl8 group but not the longer ones.
  rt.replace_route(P("10.0.0.0/24"), {{3, 1}});
  EXPECT_EQ(look(rt, A("10.0.0.5")), 3);
  EXPECT_EQ(look(rt, A("10.0.0.200")), 2);
  rt.set_tunnel_up(1, false);
  EXPECT_EQ(look(rt, A("10.0.0.201")), 3);
  EXPECT_EQ(look(rt, A("10.0.0.200")), 2);
  rt.set_tunnel_up(2, false);  // nothing longer than /24 is left: the group collapses
  EXPECT_EQ(look(rt, A("10.0.0.200")), 3);
  EXPECT_EQ(rt.stats().tbl8_used, 0u);
  EXPECT_EQ(rt.stats().tbl8_retired, 1u);
  rt.set_tunnel_up(2, true);  // comes back into a new group
  EXPECT_EQ(rt.stats().tbl8_used, 1u);
  EXPECT_EQ(look(rt, A("10.0.0.200")), 2);
  EXPECT_EQ(look(rt, A("10.0.0.199")), 3);
  rt.delete_route(P("10.0.0.200/32"));
  rt.delete_route(P("10.0.0.128/25"));
  EXPECT_EQ(rt.stats().tbl8_used, 0u);
  EXPECT_EQ(look(rt, A("10.0.0.200")), 3);
}

TEST(RouteTable, FailoverRecomputesOnlyAffectedPrefixes) {
  RouteTable rt(small_cfg(4096));
  for (TunnelId t = 0; t < 3; t++) rt.add_tunnel(t);
  for (uint32_t i = 0; i < 1000; i++) rt.add_route(Prefix4{0x0A000000 | (i << 8), 24}, {{0, 10}, {1, 20}});
  rt.add_route(P("192.168.0.0/24"), {{2, 10}, {0, 20}});
  rt.add_route(P("192.168.1.0/24"), {{2, 10}});
  rt.set_tunnel_up(2, false);
  EXPECT_EQ(rt.stats().last_examined, 2u);  // only the routes that use tunnel 2
  EXPECT_EQ(rt.stats().last_republished, 2u);
  EXPECT_EQ(look(rt, A("192.168.0.1")), 0);
  EXPECT_EQ(look(rt, A("192.168.1.1")), kNoRoute);
  rt.set_tunnel_up(0, false);
  EXPECT_EQ(rt.stats().last_examined, 1001u);
  EXPECT_EQ(rt.stats().last_republished, 1001u);
  EXPECT_EQ(look(rt, A("10.0.7.1")), 1);
  EXPECT_EQ(look(rt, A("192.168.0.1")), kNoRoute);
  rt.set_tunnel_up(1, false);  // backups of the 1000 only
  EXPECT_EQ(rt.stats().last_examined, 1000u);
  EXPECT_EQ(look(rt, A("10.0.7.1")), kNoRoute);
}

TEST(RouteTable, NextHopEditing) {
  RouteTable rt(small_cfg());
  for (TunnelId t = 0; t < 3; t++) rt.add_tunnel(t);
  rt.add_next_hop(P("10.9.0.0/16"), {1, 20});  // creates the route
  EXPECT_EQ(rt.route_count(), 1u);
  EXPECT_EQ(look(rt, A("10.9.1.1")), 1);
  rt.add_next_hop(P("10.9.0.0/16"), {0, 10});
  EXPECT_EQ(look(rt, A("10.9.1.1")), 0);
  rt.delete_next_hop(P("10.9.0.0/16"), 0);
  EXPECT_EQ(look(rt, A("10.9.1.1")), 1);
  rt.delete_next_hop(P("10.9.0.0/16"), 1);  // last hop: the route goes
  EXPECT_EQ(rt.route_count(), 0u);
  EXPECT_EQ(look(rt, A("10.9.1.1")), kNoRoute);
  rt.remove_tunnel(1);
  EXPECT_FALSE(rt.has_tunnel(1));
}

TEST(RouteTable, TunnelManagement) {
  RouteTable rt(small_cfg());
  rt.add_tunnel(0, false);
  EXPECT_FALSE(rt.tunnel_up(0));
  EXPECT_THROW(rt.add_tunnel(0), RouteError);
  EXPECT_THROW(rt.add_tunnel(16), RouteError);  // max_tunnels = 16
  EXPECT_THROW(rt.tunnel_up(5), RouteError);
  EXPECT_THROW(rt.set_tunnel_up(5, true), RouteError);
  EXPECT_THROW(rt.remove_tunnel(5), RouteError);
  rt.add_route(P("10.0.0.0/8"), {{0, 1}});
  EXPECT_EQ(look(rt, A("10.0.0.1")), kNoRoute);  // tunnel starts down
  rt.set_tunnel_up(0, true);
  EXPECT_EQ(look(rt, A("10.0.0.1")), 0);
  try {
    rt.remove_tunnel(0);
    FAIL() << "removed a tunnel in use";
  } catch (const RouteError& e) {
    EXPECT_NE(std::string(e.what()).find("10.0.0.0/8"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(rt.has_tunnel(0));
  EXPECT_EQ(look(rt, A("10.0.0.1")), 0);
  rt.delete_route(P("10.0.0.0/8"));
  rt.remove_tunnel(0);
  EXPECT_FALSE(rt.has_tunnel(0));
}

// ---------------------------------------------------------------- interop guide topology

namespace {
// Connection A = tunnels 0 (A1) and 1 (A2); connection B = 2 (B1) and 3 (B2).
// 172.31.0.0/16: all four at priorities 10/20/30/40.
// Split subnet: 10.248.0.0/25 and 10.248.0.128/25 on A1/A2 (10/20), the whole
// 10.248.0.0/24 on B1/B2 (30/40). AWS prefers A through the more specifics,
// so must we: A1, then A2, then B1, then B2; with all four down, no route
// (or the default, tunnel 4, when one is configured).
constexpr TunnelId A1 = 0, A2 = 1, B1 = 2, B2 = 3, INET = 4;

TunnelId expected(unsigned state, bool with_default) {
  for (TunnelId t : {A1, A2, B1, B2})
    if (state & (1u << t)) return t;
  return with_default ? INET : kNoRoute;
}

void check_state(const RouteTable& rt, unsigned state, bool with_default, const std::string& how) {
  const TunnelId want = expected(state, with_default);
  for (const char* a : {"172.31.0.0", "172.31.0.1", "172.31.128.9", "172.31.255.255", "10.248.0.0",
                        "10.248.0.1", "10.248.0.127", "10.248.0.128", "10.248.0.200", "10.248.0.255"})
    ASSERT_EQ(look(rt, A(a)), want) << a << " in state " << state << " via " << how;
  for (const char* a : {"172.30.255.255", "172.32.0.0", "10.248.1.0", "10.247.255.255", "8.8.8.8"})
    ASSERT_EQ(look(rt, A(a)), with_default ? INET : kNoRoute) << a << " state " << state;
  for (const auto& v : rt.list())
    if (v.prefix.addr != 0 || v.prefix.len != 0) {
      // The /24 on connection B answers only when no A tunnel is up.
      TunnelId w = want;
      if (v.prefix.len == 25) w = (state & 1) ? A1 : (state & 2) ? A2 : kNoRoute;
      if (v.prefix.len == 24) w = (state & 4) ? B1 : (state & 8) ? B2 : kNoRoute;
      if (w == INET) w = kNoRoute;
      ASSERT_EQ(v.active, w) << to_string(v.prefix) << " state " << state << " via " << how;
    }
}

void aws_all_transitions(bool with_default) {
  RouteTable rt(small_cfg());
  for (TunnelId t : {A1, A2, B1, B2, INET}) rt.add_tunnel(t);
  rt.add_route(P("172.31.0.0/16"), {{A1, 10}, {A2, 20}, {B1, 30}, {B2, 40}});
  rt.add_route(P("10.248.0.0/25"), {{A1, 10}, {A2, 20}});
  rt.add_route(P("10.248.0.128/25"), {{A1, 10}, {A2, 20}});
  rt.add_route(P("10.248.0.0/24"), {{B1, 30}, {B2, 40}});
  if (with_default) rt.add_route(P("0.0.0.0/0"), {{INET, 100}});
  unsigned cur = 0xF;
  auto go = [&](TunnelId t, bool up, const std::string& how) {
    rt.set_tunnel_up(t, up);
    cur = up ? (cur | (1u << t)) : (cur & ~(1u << t));
    check_state(rt, cur, with_default, how);
  };
  check_state(rt, cur, with_default, "start");
  size_t transitions = 0;
  for (unsigned from = 0; from < 16; from++)
    for (unsigned to = 0; to < 16; to++) {
      if (from == to) continue;
      // Reach `from` one tunnel at a time, then every order of the flips to `to`.
      std::vector<TunnelId> diff;
      for (TunnelId t = 0; t < 4; t++)
        if (((from ^ to) >> t) & 1) diff.push_back(t);
      std::sort(diff.begin(), diff.end());
      do {
        for (TunnelId t = 0; t < 4; t++)
          if (((cur ^ from) >> t) & 1) go(t, (from >> t) & 1, "reset");
        std::string how = std::to_string(from) + "->" + std::to_string(to) + " order";
        for (TunnelId t : diff) how += " " + std::to_string(t);
        for (TunnelId t : diff) go(t, (to >> t) & 1, how);
        ASSERT_EQ(cur, to);
        transitions++;
      } while (std::next_permutation(diff.begin(), diff.end()));
      if (::testing::Test::HasFatalFailure()) return;
    }
  EXPECT_GT(transitions, 240u);  // 240 ordered pairs, more with flip orders
}
}  // namespace

TEST(AwsInterop, FourTunnelsSplitSubnetEveryTransition) { aws_all_transitions(false); }
TEST(AwsInterop, FourTunnelsSplitSubnetEveryTransitionWithDefault) { aws_all_transitions(true); }

// ---------------------------------------------------------------- bad input

namespace {
struct Snapshot {
  std::vector<RouteTable::RouteView> views;
  std::vector<TunnelId> answers;
  size_t count;
};
const std::vector<uint32_t>& probes() {
  static const std::vector<uint32_t> p = [] {
    std::vector<uint32_t> v;
    for (const char* a : {"10.0.0.1", "10.1.2.3", "10.1.2.200", "10.1.2.255", "172.31.5.5", "8.8.8.8", "10.2.0.0"})
      v.push_back(A(a));
    return v;
  }();
  return p;
}
Snapshot snap(const RouteTable& rt) {
  Snapshot s{rt.list(), {}, rt.route_count()};
  for (uint32_t a : probes()) s.answers.push_back(look(rt, a));
  return s;
}
void expect_rejected(RouteTable& rt, const std::function<void()>& op, const char* needle) {
  const Snapshot before = snap(rt);
  try {
    op();
    ADD_FAILURE() << "accepted; expected an error containing '" << needle << "'";
  } catch (const RouteError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << "message: " << e.what();
  }
  const Snapshot after = snap(rt);
  EXPECT_TRUE(same_views(before.views, after.views)) << "list() changed after a rejected call (" << needle << ")";
  EXPECT_EQ(before.answers, after.answers) << "lookups changed after a rejected call (" << needle << ")";
  EXPECT_EQ(before.count, after.count);
}
}  // namespace

TEST(BadInput, EachIsAClearErrorAndChangesNothing) {
  RouteTableConfig c = small_cfg(8, 2);
  c.max_priority = 1000;
  RouteTable rt(c);
  for (TunnelId t = 0; t < 3; t++) rt.add_tunnel(t);
  rt.add_route(P("10.0.0.0/8"), {{0, 10}, {1, 20}});
  rt.add_route(P("10.1.2.128/25"), {{2, 5}});
  rt.add_route(P("172.31.0.0/16"), {{1, 1}});
  rt.set_tunnel_up(0, false);

  const Prefix4 p8 = P("10.0.0.0/8");
  expect_rejected(rt, [&] { rt.add_route(Prefix4{0x0A000001, 8}, {{0, 1}}); }, "host bits");
  expect_rejected(rt, [&] { rt.replace_route(Prefix4{0x0A000001, 8}, {{0, 1}}); }, "host bits");
  expect_rejected(rt, [&] { rt.delete_route(Prefix4{0x0A000001, 8}); }, "host bits");
  expect_rejected(rt, [&] { rt.add_route(Prefix4{0x0A000000, 33}, {{0, 1}}); }, "length 33");
  expect_rejected(rt, [&] { rt.add_route(Prefix4{0x0A000000, 200}, {{0, 1}}); }, "out of range");
  expect_rejected(rt, [&] { rt.add_route(P("10.2.0.0/16"), {{7, 1}}); }, "tunnel 7 is not configured");
  expect_rejected(rt, [&] { rt.add_route(P("10.2.0.0/16"), {{0, 1}, {99, 1}}); }, "tunnel 99 out of range");
  expect_rejected(rt, [&] { rt.replace_route(p8, {{7, 1}}); }, "not configured");
  expect_rejected(rt, [&] { rt.add_route(P("10.2.0.0/16"), {{0, 1001}}); }, "priority 1001");
  expect_rejected(rt, [&] { rt.replace_route(p8, {{0, 1}, {1, 1001}}); }, "out of range (0..1000)");
  expect_rejected(rt, [&] { rt.add_next_hop(p8, {2, 5000}); }, "priority 5000");
  expect_rejected(rt, [&] { rt.add_route(P("10.2.0.0/16"), {{0, 1}, {1, 2}, {0, 3}}); }, "duplicate next hop");
  expect_rejected(rt, [&] { rt.replace_route(p8, {{1, 1}, {1, 2}}); }, "duplicate next hop");
  expect_rejected(rt, [&] { rt.add_next_hop(p8, {1, 7}); }, "duplicate next hop on tunnel 1");
  expect_rejected(rt, [&] { rt.add_route(P("10.2.0.0/16"), {}); }, "empty next-hop list");
  expect_rejected(rt, [&] { rt.replace_route(p8, {}); }, "empty next-hop list");
  expect_rejected(rt, [&] { rt.add_route(p8, {{2, 1}}); }, "already exists");
  expect_rejected(rt, [&] { rt.delete_route(P("10.3.0.0/16")); }, "10.3.0.0/16 does not exist");
  expect_rejected(rt, [&] { rt.delete_next_hop(P("10.3.0.0/16"), 0); }, "does not exist");
  expect_rejected(rt, [&] { rt.delete_next_hop(p8, 2); }, "no next hop on tunnel 2");
  expect_rejected(rt, [&] { rt.add_next_hop(P("10.2.0.0/16"), {9, 1}); }, "not configured");
  expect_rejected(rt, [&] { rt.remove_tunnel(1); }, "still used");
  expect_rejected(rt, [&] { rt.set_tunnel_up(9, true); }, "does not exist");
  expect_rejected(rt, [&] { rt.add_tunnel(2); }, "already exists");
  // Capacity: two tbl8 groups = two /24s holding prefixes longer than /24.
  rt.add_route(P("10.9.9.0/26"), {{2, 1}});  // second /24 with a long prefix
  rt.add_route(P("10.1.2.0/26"), {{2, 1}});  // same /24 as the /25: no new group
  expect_rejected(rt, [&] { rt.add_route(P("10.7.7.7/32"), {{2, 1}}); }, "no tbl8 group left");
  // max_routes = 8.
  rt.add_route(P("11.0.0.0/8"), {{1, 1}});
  rt.add_route(P("12.0.0.0/8"), {{1, 1}});
  rt.add_route(P("13.0.0.0/8"), {{1, 1}});
  expect_rejected(rt, [&] { rt.add_route(P("14.0.0.0/8"), {{1, 1}}); }, "route table full");
  expect_rejected(rt, [&] { rt.add_next_hop(P("14.0.0.0/8"), {1, 1}); }, "route table full");
  EXPECT_EQ(rt.route_count(), 8u);
}

TEST(BadInput, ConfigIsValidated) {
  RouteTableConfig c = small_cfg();
  c.max_routes = 0;
  EXPECT_THROW(RouteTable{c}, RouteError);
  c = small_cfg();
  c.max_tunnels = 0;
  EXPECT_THROW(RouteTable{c}, RouteError);
  c = small_cfg();
  c.tbl8_groups = 1u << 23;
  EXPECT_THROW(RouteTable{c}, RouteError);
}
