// The inbound SA table (dataplane/inbound_sa_table.h) and the worker's burst
// lookup over it (inbound.h): every installed key found, its neighbours not;
// updates, deletes, slot reuse only after reclaim(), compaction under churn,
// and a reader racing the writer under RCU (also run under TSan).
#include <rte_malloc.h>
#include <rte_rcu_qsbr.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "dataplane/inbound.h"
#include "dataplane/inbound_sa_table.h"

namespace dp = espgw::dataplane;
using dp::InboundKey;
using dp::InboundSa;
using dp::InboundSaTable;

namespace {

// Stand-in SA pointers, never dereferenced: the key's index + 1.
InboundSa* fake(size_t i) { return reinterpret_cast<InboundSa*>(uintptr_t{i + 1} * 16); }

std::vector<InboundKey> random_keys(size_t n, uint32_t seed, std::set<uint64_t>* seen) {
  std::mt19937 g(seed);
  std::vector<InboundKey> keys;
  while (keys.size() < n) {
    InboundKey k{uint32_t(g()) | 0x100, 0xc6336400u + (uint32_t(g()) & 0xff)};  // few destinations, as in practice
    if (seen->insert(dp::inbound_key_word(k)).second) keys.push_back(k);
  }
  return keys;
}

// The slot index holding `k`, or -1.
int64_t slot_of(const InboundSaTable& t, const InboundKey& k) {
  const InboundSaTable::Array* a = t.array();
  for (uint32_t i = 0; i <= a->mask; i++)
    if (a->slot[i].key.load() == dp::inbound_key_word(k)) return i;
  return -1;
}

// A key (not in `seen`) whose probe starts at slot `home`.
InboundKey key_homed_at(const InboundSaTable& t, uint32_t home, std::set<uint64_t>* seen, uint32_t seed) {
  std::mt19937 g(seed);
  for (;;) {
    InboundKey k{uint32_t(g()) | 0x100, 0xc6336401u};
    const uint64_t w = dp::inbound_key_word(k);
    if ((InboundSaTable::hash(t.array(), w) & t.array()->mask) == home && seen->insert(w).second) return k;
  }
}

}  // namespace

TEST(InboundSaTable, FindsEveryInstalledKeyAndNoNeighbour) {
  InboundSaTable t(dp::kMaxSas, SOCKET_ID_ANY);
  std::set<uint64_t> seen;
  std::vector<InboundKey> keys = random_keys(10000, 17, &seen);
  for (size_t i = 0; i < keys.size(); i++) t.set(keys[i], fake(i));
  EXPECT_EQ(t.size(), 10000u);
  for (size_t i = 0; i < keys.size(); i++) {
    ASSERT_EQ(t.lookup(keys[i]), fake(i)) << i;
    for (InboundKey other : {InboundKey{keys[i].spi ^ 1, keys[i].dst}, InboundKey{keys[i].spi, keys[i].dst ^ 0x10000}}) {
      if (seen.count(dp::inbound_key_word(other)) == 0) {
        EXPECT_EQ(t.lookup(other), nullptr) << i;
      }
    }
  }
  // SPI 0 is never an SA's (RFC 4303 §2.1): refused, and its lookups miss
  // even where a key word equals a slot marker.
  EXPECT_THROW(t.set({0, 0xc6336401u}, fake(0)), std::invalid_argument);
  for (uint32_t dst : {0u, 1u, 2u, 0xc6336401u}) EXPECT_EQ(t.lookup({0, dst}), nullptr) << dst;
}

// The worker's lookup: one probe per run of one key, the right SA for every
// packet whatever the pattern (runs, alternation, unknown SPIs among them).
TEST(InboundSaTable, BurstLookupGivesEachPacketItsSa) {
  auto d = std::make_unique<dp::Dataplane>();
  InboundSaTable t(dp::kMaxSas, SOCKET_ID_ANY);
  d->inbound = &t;
  std::set<uint64_t> seen;
  std::vector<InboundKey> keys = random_keys(1000, 5, &seen);
  std::vector<InboundKey> unknown = random_keys(50, 6, &seen);
  for (size_t i = 0; i < keys.size(); i++) t.set(keys[i], fake(i));
  std::mt19937 g(9);
  for (int burst = 0; burst < 2000; burst++) {
    const uint16_t n = uint16_t(1 + g() % dp::kBurst);
    InboundKey in[dp::kBurst];
    InboundSa* want[dp::kBurst];
    uint16_t runs = 0;
    for (uint16_t i = 0; i < n; i++) {
      const uint32_t pattern = burst % 4;
      size_t idx = pattern == 0 ? g() % keys.size() : pattern == 1 ? (i % 2) * 7 : pattern == 2 ? (i / 5) * 3 : 42;
      if (g() % 10 == 0) {
        in[i] = unknown[g() % unknown.size()];
        want[i] = nullptr;
      } else {
        in[i] = keys[idx];
        want[i] = fake(idx);
      }
      if (i == 0 || dp::inbound_key_word(in[i]) != dp::inbound_key_word(in[i - 1])) runs++;
    }
    InboundSa* got[dp::kBurst];
    ASSERT_EQ(dp::lookup_inbound_sas(*d, in, n, got), runs);
    for (uint16_t i = 0; i < n; i++) ASSERT_EQ(got[i], want[i]) << "burst " << burst << " packet " << i;
  }
  d->inbound = nullptr;
}

TEST(InboundSaTable, UpdateEraseAndReclaim) {
  InboundSaTable t(64, SOCKET_ID_ANY);
  const InboundKey k{0x2001, 0xc6336401u};
  t.set(k, fake(1));
  t.set(k, nullptr);  // a handover's first step: the key stays, lookups miss
  EXPECT_EQ(t.lookup(k), nullptr);
  EXPECT_EQ(t.size(), 1u);
  t.set(k, fake(2));
  EXPECT_EQ(t.lookup(k), fake(2));
  EXPECT_EQ(t.size(), 1u);

  // A deleted slot is not claimed before reclaim(), even by a key whose
  // probe starts there (a reader may still have matched the old key).
  const int64_t at = slot_of(t, k);
  ASSERT_GE(at, 0);
  EXPECT_TRUE(t.erase(k));
  EXPECT_FALSE(t.erase(k));
  EXPECT_EQ(t.lookup(k), nullptr);
  EXPECT_EQ(t.size(), 0u);
  EXPECT_EQ(t.array()->slot[at].key.load(), InboundSaTable::kDeleted);
  EXPECT_EQ(t.array()->slot[at].sa.load(), nullptr);
  std::set<uint64_t> seen{dp::inbound_key_word(k)};
  const InboundKey k2 = key_homed_at(t, uint32_t(at), &seen, 1);
  t.set(k2, fake(3));
  EXPECT_NE(slot_of(t, k2), at);
  EXPECT_EQ(t.lookup(k2), fake(3));
  t.reclaim();
  EXPECT_EQ(t.array()->slot[at].key.load(), InboundSaTable::kFree);
  // After reclaim() the slot is claimed, and what lies past it is still found.
  const InboundKey k3 = key_homed_at(t, uint32_t(at), &seen, 2);
  t.set(k3, fake(4));
  EXPECT_EQ(slot_of(t, k3), at);
  EXPECT_EQ(t.lookup(k2), fake(3));
  EXPECT_EQ(t.lookup(k3), fake(4));
  // The same key again after its delete: a new entry.
  t.set(k, fake(5));
  EXPECT_EQ(t.lookup(k), fake(5));
  EXPECT_EQ(t.size(), 3u);
}

TEST(InboundSaTable, RefusesMoreThanItsCapacity) {
  InboundSaTable t(100, SOCKET_ID_ANY);
  std::set<uint64_t> seen;
  std::vector<InboundKey> keys = random_keys(101, 3, &seen);
  for (size_t i = 0; i < 100; i++) t.set(keys[i], fake(i));
  EXPECT_THROW(t.set(keys[100], fake(100)), std::length_error);
  t.set(keys[0], fake(7));  // updating an existing key still works when full
  EXPECT_EQ(t.lookup(keys[0]), fake(7));
  EXPECT_TRUE(t.erase(keys[1]));
  t.reclaim();
  t.set(keys[100], fake(100));
  EXPECT_EQ(t.lookup(keys[100]), fake(100));
}

// Rekeys for ever: 10,000 live keys, 400,000 replaced one by one. Deleted
// slots never end a probe, so without compaction every never-used slot
// would be used up and a lookup of an unknown SPI would scan the array.
TEST(InboundSaTable, ChurnKeepsProbesShort) {
  InboundSaTable t(dp::kMaxSas, SOCKET_ID_ANY);
  std::set<uint64_t> seen;
  std::vector<InboundKey> live = random_keys(10000, 21, &seen);
  std::vector<InboundKey> fresh = random_keys(400000, 22, &seen);
  for (size_t i = 0; i < live.size(); i++) t.set(live[i], fake(i));
  std::vector<InboundSaTable::ArrayPtr> retired;
  std::mt19937 g(23);
  size_t compactions = 0;
  for (size_t r = 0; r < fresh.size(); r++) {
    const size_t victim = g() % live.size();
    ASSERT_TRUE(t.erase(live[victim]));
    t.reclaim();  // (no readers here: the grace period is immediate)
    live[victim] = fresh[r];
    t.set(live[victim], fake(r));
    if (t.wants_compaction()) {
      t.compact();  // the old array is freed at once: no readers
      compactions++;
    }
    ASSERT_LE(t.used_slots() * 2, t.slots());
  }
  EXPECT_GT(compactions, 0u);
  EXPECT_EQ(t.size(), live.size());
  std::set<uint64_t> now;
  for (const InboundKey& k : live) now.insert(dp::inbound_key_word(k));
  for (const InboundKey& k : live) ASSERT_NE(t.lookup(k), nullptr);
  // Deleted keys miss.
  size_t checked = 0;
  for (size_t r = 0; r < fresh.size() && checked < 10000; r += 37)
    if (now.count(dp::inbound_key_word(fresh[r])) == 0) {
      ASSERT_EQ(t.lookup(fresh[r]), nullptr);
      checked++;
    }
  // An unknown key's probe is short: count the slots to the first never-used one.
  const InboundSaTable::Array* a = t.array();
  std::set<uint64_t> none;
  std::vector<InboundKey> probes = random_keys(10000, 24, &none);
  uint64_t total = 0;
  for (const InboundKey& k : probes) {
    uint32_t i = InboundSaTable::hash(a, dp::inbound_key_word(k)) & a->mask, len = 1;
    while (a->slot[i].key.load() != InboundSaTable::kEmpty) i = (i + 1) & a->mask, len++;
    total += len;
  }
  EXPECT_LT(double(total) / probes.size(), 4.0);
}

// A worker looking up while the control thread installs, rekeys (pointer
// updates), deletes and compacts, with the grace periods of the real RCU:
// a lookup returns nullptr or the SA of the key it asked for, never
// another's; a key installed for the whole run is always found.
TEST(InboundSaTable, ReaderNeverSeesAnotherKeysSa) {
  size_t sz = rte_rcu_qsbr_get_memsize(1);
  auto* qsbr = static_cast<rte_rcu_qsbr*>(rte_zmalloc("t_sa_table_qsbr", sz, RTE_CACHE_LINE_SIZE));
  ASSERT_NE(qsbr, nullptr);
  ASSERT_EQ(rte_rcu_qsbr_init(qsbr, 1), 0);
  InboundSaTable t(64, SOCKET_ID_ANY);  // 256 slots: compacted every ~100 installs
  std::set<uint64_t> seen;
  std::vector<InboundKey> stable = random_keys(32, 31, &seen);
  std::vector<InboundKey> churn = random_keys(20000, 32, &seen);  // each installed once, then deleted
  // SA "pointers" that name their key: key index * 2 (+1 after an update).
  auto sa_of = [](size_t key, int version) { return fake(key * 2 + size_t(version)); };
  for (size_t i = 0; i < stable.size(); i++) t.set(stable[i], sa_of(i, 0));
  std::atomic<bool> stop{false};
  std::atomic<size_t> cursor{0};
  std::atomic<bool> online{false};  // the grace periods wait for the reader from then on
  std::atomic<uint64_t> bad{0}, lookups{0};
  std::thread reader([&] {
    rte_rcu_qsbr_thread_register(qsbr, 0);
    rte_rcu_qsbr_thread_online(qsbr, 0);
    online = true;
    std::mt19937 g(33);
    while (!stop.load(std::memory_order_relaxed)) {
      const InboundSaTable::Array* a = t.array();  // once per "burst", as a worker does
      for (int j = 0; j < 32; j++) {
        const bool s = g() % 2;
        // churn keys near the writer's cursor: mostly live ones
        const size_t c = cursor.load(std::memory_order_relaxed), back = g() % 40;
        const size_t i = s ? g() % stable.size() : (c > back ? c - back : 0);
        const InboundKey& k = s ? stable[i] : churn[i];
        const uint64_t w = dp::inbound_key_word(k);
        InboundSa* got = InboundSaTable::find(a, w, InboundSaTable::hash(a, w));
        const size_t base = s ? i : stable.size() + i;
        if (s ? got != sa_of(base, 0) : (got != nullptr && got != sa_of(base, 0) && got != sa_of(base, 1))) bad++;
      }
      lookups += 32;
      rte_rcu_qsbr_quiescent(qsbr, 0);
      std::this_thread::yield();  // the writer may share this CPU
    }
    rte_rcu_qsbr_thread_offline(qsbr, 0);
    rte_rcu_qsbr_thread_unregister(qsbr, 0);
  });
  while (!online) std::this_thread::yield();
  // EAL pins this thread, and so the reader, to one CPU: yield while waiting.
  auto sync = [&] {
    const uint64_t token = rte_rcu_qsbr_start(qsbr);
    while (rte_rcu_qsbr_check(qsbr, token, false) == 0) std::this_thread::yield();
  };
  std::mt19937 g(34);
  std::vector<size_t> live;
  size_t compactions = 0;
  for (size_t next = 0; next < churn.size();) {
    if (live.size() < 24 && g() % 3 != 0) {  // install the next key
      t.set(churn[next], sa_of(stable.size() + next, 0));
      live.push_back(next++);
      cursor.store(next, std::memory_order_relaxed);
      if (t.wants_compaction()) {
        auto old = t.compact();
        sync();
        compactions++;
      }
    } else if (!live.empty() && g() % 2) {  // a handover to the key's next object, and back
      const size_t i = live[g() % live.size()];
      t.set(churn[i], sa_of(stable.size() + i, 1));
      t.set(churn[i], sa_of(stable.size() + i, 0));
    } else if (!live.empty()) {  // delete
      const size_t at = g() % live.size();
      t.erase(churn[live[at]]);
      live[at] = live.back();
      live.pop_back();
      sync();
      t.reclaim();
    }
  }
  stop = true;
  reader.join();
  EXPECT_EQ(bad.load(), 0u) << "of " << lookups.load() << " lookups";
  EXPECT_GT(lookups.load(), 100000u);
  EXPECT_GT(compactions, 10u);
  std::printf("%llu lookups, %zu compactions\n", (unsigned long long)lookups.load(), compactions);
  rte_free(qsbr);
}
