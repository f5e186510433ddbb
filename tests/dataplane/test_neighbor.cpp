// The neighbour table of dataplane/neighbor.h: lock-free slot claiming from
// several threads at once, lookups on-link / via the gateway, directed
// broadcasts, learning rules. Checked against std:: containers.
#include <gtest/gtest.h>

#include <memory>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "dataplane/neighbor.h"

using namespace espgw::dataplane;

namespace {

std::unique_ptr<NeighborTable> lan_table() {
  auto t = std::make_unique<NeighborTable>();
  t->nb_subnets = 1;
  t->subnet[0] = 0x0a000000;  // 10.0.0.0/16
  t->mask[0] = 0xffff0000;
  t->subnet_src[0] = 0x0a000001;
  t->reachable_tsc = 1000;
  return t;
}

TEST(NeighborTable, ConcurrentClaimsGiveOneSlotPerAddress) {
  auto t = lan_table();
  std::vector<uint32_t> ips;
  std::mt19937 rng(3);
  std::set<uint32_t> distinct;
  while (distinct.size() < 600) distinct.insert(0x0a000000 | (rng() & 0xffff) | 1);
  ips.assign(distinct.begin(), distinct.end());
  constexpr int kThreads = 4;
  std::vector<std::vector<NeighborEntry*>> got(kThreads, std::vector<NeighborEntry*>(ips.size()));
  std::vector<std::thread> th;
  for (int k = 0; k < kThreads; k++)
    th.emplace_back([&, k] {
      std::mt19937 r(k);
      std::vector<size_t> order(ips.size());
      for (size_t i = 0; i < order.size(); i++) order[i] = i;
      std::shuffle(order.begin(), order.end(), r);
      for (size_t i : order) got[k][i] = neighbor_find_or_add(*t, ips[i]);
    });
  for (auto& x : th) x.join();
  std::set<NeighborEntry*> slots;
  size_t full = 0;
  for (size_t i = 0; i < ips.size(); i++) {
    for (int k = 1; k < kThreads; k++) ASSERT_EQ(got[k][i], got[0][i]) << "two slots for one address";
    if (got[0][i] == nullptr) {
      full++;
      continue;
    }
    EXPECT_EQ(got[0][i]->ip.load(), ips[i]);
    EXPECT_EQ(neighbor_find(*t, ips[i]), got[0][i]);
    slots.insert(got[0][i]);
  }
  EXPECT_EQ(slots.size() + full, ips.size());
  EXPECT_EQ(t->nb_used.load(), slots.size());
  EXPECT_LT(full, 10u);  // 600 of 1024 slots: a probe chain of 32 is rarely exhausted
}

TEST(NeighborTable, LookupOnLinkViaGatewayAndBroadcast) {
  auto t = lan_table();
  uint64_t mac = 0;
  // No gateway: off-link has no route; on-link is unresolved until learned.
  EXPECT_EQ(neighbor_lookup(*t, 0xc0a80001, 100, 16, &mac), NextHop::kNoRoute);
  NeighborEntry* e = nullptr;
  EXPECT_EQ(neighbor_lookup(*t, 0x0a000105, 100, 16, &mac, &e), NextHop::kUnresolved);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->used_tsc.load(), 100u);
  EXPECT_EQ(neighbor_lookup(*t, 0x0a00ffff, 100, 16, &mac), NextHop::kNoRoute);  // 10.0.255.255: directed broadcast
  EXPECT_TRUE(is_directed_broadcast(*t, 0x0a00ffff));
  EXPECT_FALSE(is_directed_broadcast(*t, 0x0a00fffe));
  // Learned from an ARP addressed to us: resolved.
  const uint8_t b[6] = {2, 0, 0, 0, 1, 5};
  EXPECT_EQ(neighbor_learn(*t, 0x0a000105, pack_mac_bytes(b), false, 200), e);
  EXPECT_EQ(neighbor_lookup(*t, 0x0a000105, 300, 16, &mac), NextHop::kResolved);
  EXPECT_EQ(mac, pack_mac_bytes(b));
  // ARP not addressed to us creates nothing; addressed to us and on-link does.
  EXPECT_EQ(neighbor_learn(*t, 0x0a000106, pack_mac_bytes(b), false, 200), nullptr);
  EXPECT_EQ(neighbor_find(*t, 0x0a000106), nullptr);
  EXPECT_NE(neighbor_learn(*t, 0x0a000106, pack_mac_bytes(b), true, 200), nullptr);
  EXPECT_EQ(neighbor_learn(*t, 0xc0a80001, pack_mac_bytes(b), true, 200), nullptr);  // off-link: not ours to keep
  // A static entry is never overwritten; the gateway takes off-link traffic.
  NeighborEntry* g = neighbor_find_or_add(*t, 0x0a0000fe);
  const uint8_t gb[6] = {2, 0, 0, 0, 0, 0xfe};
  g->mac.store(pack_mac_bytes(gb));
  g->is_static.store(true);
  t->gateway = g;
  EXPECT_EQ(neighbor_learn(*t, 0x0a0000fe, pack_mac_bytes(b), true, 300), nullptr);
  EXPECT_EQ(neighbor_lookup(*t, 0xc0a80001, 400, 16, &mac), NextHop::kResolved);
  EXPECT_EQ(mac, pack_mac_bytes(gb));
}

}  // namespace

namespace {

// Addresses whose probe chains start at slot `h` (same hash).
std::vector<uint32_t> same_chain(uint32_t h, size_t n) {
  std::vector<uint32_t> out;
  for (uint32_t a = 0x0a000002; out.size() < n && a < 0x0a00ffff; a++)
    if (neighbor_hash(a) == h) out.push_back(a);
  return out;
}

}  // namespace

// A retired slot (dying, then reusable) keeps the probe chain through it
// intact; only a reusable one is claimed again, and an address already in
// the chain behind it is found rather than claimed twice.
TEST(NeighborTable, RetiredSlotsKeepChainsAndOnlyReusableOnesAreClaimed) {
  auto t = lan_table();
  auto a = same_chain(neighbor_hash(0x0a000002), 3);
  ASSERT_EQ(a.size(), 3u);
  NeighborEntry* e0 = neighbor_find_or_add(*t, a[0]);
  NeighborEntry* e1 = neighbor_find_or_add(*t, a[1]);
  ASSERT_TRUE(e0 && e1 && e0 != e1);
  e0->ip.store(kSlotDying);                    // retired: readers may still hold it
  EXPECT_EQ(neighbor_find(*t, a[0]), nullptr);  // no new lookup finds it
  EXPECT_EQ(neighbor_find(*t, a[1]), e1);       // the chain through it holds
  NeighborEntry* e2 = neighbor_find_or_add(*t, a[2]);
  EXPECT_NE(e2, e0);  // a dying slot is never handed out
  e0->ip.store(kSlotReusable);
  EXPECT_EQ(neighbor_find_or_add(*t, a[1]), e1);  // found behind the reusable slot, not claimed twice
  EXPECT_EQ(neighbor_find_or_add(*t, a[0]), e0);  // the reusable slot goes to the next new address
  EXPECT_EQ(e0->ip.load(), a[0]);
  // The markers and 0 are no addresses: never found, never claimed.
  EXPECT_EQ(neighbor_find(*t, 0), nullptr);
  EXPECT_EQ(neighbor_find(*t, kSlotDying), nullptr);
  EXPECT_EQ(neighbor_find_or_add(*t, kSlotReusable), nullptr);
  EXPECT_EQ(neighbor_find_or_add(*t, 0), nullptr);
}

// A full table whose slots are retired and reclaimed takes new addresses
// again (before reclamation existed, the 1,024 slots stayed taken for good).
TEST(NeighborTable, ReclaimedSlotsServeNewAddressesAfterAFullTable) {
  auto t = lan_table();
  uint32_t claimed = 0;
  for (uint32_t a = 0x0a000002; a < 0x0a000002 + 4 * kNeighborSlots; a++)
    if (neighbor_find_or_add(*t, a)) claimed++;
  EXPECT_GT(claimed, kNeighborSlots * 9 / 10);
  uint32_t fresh = 0x0a00ff01;
  // Full around fresh's slot, or claimable: scan until one is refused.
  uint32_t refused = 0;
  for (uint32_t a = 0x0a00f000; a < 0x0a00ff00 && !refused; a++)
    if (!neighbor_find(*t, a) && !neighbor_find_or_add(*t, a)) refused = a;
  ASSERT_NE(refused, 0u) << "table never filled";
  for (auto& e : t->slots) e.ip.store(kSlotDying);
  EXPECT_EQ(neighbor_find_or_add(*t, refused), nullptr);  // still held by possible readers
  for (auto& e : t->slots) e.ip.store(kSlotReusable);
  for (uint32_t a = fresh; a < fresh + 200; a++) {
    NeighborEntry* e = neighbor_find_or_add(*t, a);
    ASSERT_NE(e, nullptr) << a;
    EXPECT_EQ(neighbor_find(*t, a), e);
  }
  EXPECT_NE(neighbor_find_or_add(*t, refused), nullptr);
}
