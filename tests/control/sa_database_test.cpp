// SaDatabase against a real EAL, the real inbound SA table, real RCU (QSBR)
// and real worker-side objects: the identity owns its state (sequence
// number, replay window, install order) across reconcile and update.
#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_malloc.h>
#include <rte_pause.h>
#include <rte_rcu_qsbr.h>

#include <gtest/gtest.h>

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "control/sa_database.h"
#include "control/sa_spec.h"
#include "dataplane/dataplane.h"

namespace espgw::control {
namespace {
namespace dp = espgw::dataplane;

constexpr uint32_t kLocal = 0xc633640a;    // 198.51.100.10
constexpr uint32_t kPeer1 = 0xcb007101;    // 203.0.113.1
constexpr uint32_t kPeer2 = 0xcb007102;    // 203.0.113.2
constexpr uint32_t kPeerMoved = 0xcb007163;  // 203.0.113.99

std::vector<TunnelConfig> test_tunnels() {
  TunnelConfig plain;
  plain.name = "plain";
  plain.port = "wan";
  plain.local = kLocal;
  plain.remote = kPeer1;
  TunnelConfig udp = plain;
  udp.name = "natt";
  udp.remote = kPeer2;
  udp.udp_encap = true;
  return {plain, udp};
}

crypto::SecretBytes key(uint8_t fill) {
  crypto::SecretBytes k;
  for (int i = 0; i < 20; i++) k.push_back(static_cast<uint8_t>(fill + i));
  return k;
}

class SaDatabaseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static int instance = 0;
    name_ = "sadb_test_" + std::to_string(instance++);
    dp_ = std::make_unique<dp::Dataplane>();
    size_t sz = rte_rcu_qsbr_get_memsize(1);
    dp_->qsbr = static_cast<rte_rcu_qsbr*>(rte_zmalloc("sadb_qsbr", sz, RTE_CACHE_LINE_SIZE));
    ASSERT_NE(dp_->qsbr, nullptr);
    ASSERT_EQ(rte_rcu_qsbr_init(dp_->qsbr, 1), 0);
    dp_->nb_workers = 1;
    dp_->counters[0] = static_cast<dp::WorkerCounters*>(
        rte_zmalloc("sadb_counters", sizeof(dp::WorkerCounters), RTE_CACHE_LINE_SIZE));
    ASSERT_NE(dp_->counters[0], nullptr);
    dp_->inbound = new dp::InboundSaTable(dp::kMaxSas, SOCKET_ID_ANY);
    tunnels_ = test_tunnels();
    dp_->nb_tunnels = static_cast<uint16_t>(tunnels_.size());
    for (uint16_t t = 0; t < dp_->nb_tunnels; t++) dp_->tunnels[t].out_sa.store(nullptr);
    db_ = std::make_unique<SaDatabase>(
        *dp_, tunnels_, [this](const nlohmann::json& ev) { events_.push_back(ev); },
        [](uint16_t, bool) {});
  }

  void TearDown() override {
    db_.reset();
    delete dp_->inbound;
    rte_free(dp_->counters[0]);
    rte_free(dp_->qsbr);
  }

  SaSpec spec(SaDirection dir, uint32_t spi, const char* tunnel, uint8_t key_fill = 1) {
    SaSpec s;
    s.direction = dir;
    s.spi = spi;
    s.tunnel = tunnel;
    s.keymat = key(key_fill);
    return s;
  }
  SaParams params(const SaSpec& s) { return validate_sa_spec(s, db_->tunnels()); }

  dp::InboundSa* inbound(uint32_t spi) {
    return dp_->inbound->lookup({spi, kLocal});
  }
  // What a worker does with an authenticated packet: check, then update.
  dp::ReplayVerdict receive(uint32_t spi, uint32_t seq) {
    dp::InboundSa* sa = inbound(spi);
    EXPECT_NE(sa, nullptr);
    uint64_t full = 0;
    dp::ReplayVerdict v = sa->replay.check(seq, &full);
    if (v != dp::ReplayVerdict::kOk) return v;
    return sa->replay.update(full);
  }
  dp::OutboundSa* current(uint16_t tunnel) { return dp_->tunnels[tunnel].out_sa.load(); }

  std::string name_;
  std::unique_ptr<dp::Dataplane> dp_;
  std::vector<TunnelConfig> tunnels_;
  std::vector<nlohmann::json> events_;
  std::unique_ptr<SaDatabase> db_;
};

TEST_F(SaDatabaseTest, ReconcileWithTheSameKeyKeepsTheSequenceNumber) {
  db_->add(params(spec(SaDirection::kOutbound, 0x1001, "plain")));
  dp::OutboundSa* sa = current(0);
  ASSERT_NE(sa, nullptr);
  sa->next_seq.fetch_add(500);  // 500 packets sent: next is 501
  db_->reconcile(params(spec(SaDirection::kOutbound, 0x1001, "plain")));  // e.g. an XFRM re-dump
  ASSERT_NE(current(0), nullptr);
  EXPECT_EQ(current(0)->next_seq.load(), 501u);  // never back to 1 under the same key
  EXPECT_EQ(db_->size(), 1u);
}

TEST_F(SaDatabaseTest, InitialSeqMovesTheCounterForwardNeverBack) {
  db_->add(params(spec(SaDirection::kOutbound, 0x1001, "plain")));
  current(0)->next_seq.fetch_add(99);  // next 100
  SaSpec s = spec(SaDirection::kOutbound, 0x1001, "plain");
  s.initial_seq = 50;
  db_->reconcile(params(s));
  EXPECT_EQ(current(0)->next_seq.load(), 100u);
  s.initial_seq = 7000;
  db_->reconcile(params(s));
  EXPECT_EQ(current(0)->next_seq.load(), 7000u);
}

TEST_F(SaDatabaseTest, ReconcileKeepsTheReplayWindow) {
  db_->add(params(spec(SaDirection::kInbound, 0x2001, "plain")));
  EXPECT_EQ(receive(0x2001, 5), dp::ReplayVerdict::kOk);
  SaSpec again = spec(SaDirection::kInbound, 0x2001, "plain");
  again.replay_window = 64;  // a window size is state too: kept, not reset
  db_->reconcile(params(again));
  EXPECT_EQ(inbound(0x2001)->replay.window(), 1024u);
  EXPECT_EQ(receive(0x2001, 5), dp::ReplayVerdict::kReplay);  // accepted before: a replay after
  EXPECT_EQ(receive(0x2001, 6), dp::ReplayVerdict::kOk);
}

TEST_F(SaDatabaseTest, ReconcileThatRebuildsTheInboundSaCarriesTheWindowOver) {
  db_->add(params(spec(SaDirection::kInbound, 0x2001, "plain")));
  for (uint32_t s : {3u, 9u, 2000u}) EXPECT_EQ(receive(0x2001, s), dp::ReplayVerdict::kOk);
  dp::InboundSa* before = inbound(0x2001);
  SaSpec s = spec(SaDirection::kInbound, 0x2001, "plain");
  s.local_selectors = {{0x0a000000, 8}};  // new selectors: a new worker-side object
  s.remote_selectors = {{0xac1f0000, 16}};
  db_->reconcile(params(s));
  dp::InboundSa* after = inbound(0x2001);
  ASSERT_NE(after, nullptr);
  EXPECT_NE(after, before);
  EXPECT_EQ(after->nb_remote_sel, 1);
  EXPECT_EQ(receive(0x2001, 2000), dp::ReplayVerdict::kReplay);
  EXPECT_EQ(receive(0x2001, 1999), dp::ReplayVerdict::kOk);
  EXPECT_EQ(receive(0x2001, 9), dp::ReplayVerdict::kTooOld);  // left of the 1024 window, as before
}

// Issue 11 §7: outbound SAs enforce selectors too; new selectors on a live
// outbound SA mean a new worker-side object, and the sequence carries over.
TEST_F(SaDatabaseTest, ReconcileThatGivesAnOutboundSaSelectorsKeepsTheSequence) {
  db_->add(params(spec(SaDirection::kOutbound, 0x1001, "plain")));
  dp::OutboundSa* before = current(0);
  EXPECT_EQ(before->nb_remote_sel, 0);  // route-based: no per-packet check
  before->next_seq.fetch_add(41);       // next 42
  SaSpec s = spec(SaDirection::kOutbound, 0x1001, "plain");
  s.local_selectors = {{0x0af08000, 25}};
  s.remote_selectors = {{0xac1f0100, 24}, {0xc0a80000, 16}};
  db_->reconcile(params(s));
  dp::OutboundSa* after = current(0);
  ASSERT_NE(after, nullptr);
  EXPECT_NE(after, before);
  EXPECT_EQ(after->next_seq.load(), 42u);
  ASSERT_EQ(after->nb_local_sel, 1);
  ASSERT_EQ(after->nb_remote_sel, 2);
  EXPECT_EQ(after->local_sel[0].mask, 0xffffff80u);
  EXPECT_TRUE(dp::in_selectors(after->remote_sel, after->nb_remote_sel, 0xc0a81234u));
  EXPECT_FALSE(dp::in_selectors(after->remote_sel, after->nb_remote_sel, 0xac1f0200u));
  EXPECT_FALSE(dp::in_selectors(after->local_sel, after->nb_local_sel, 0x0af080c8u));  // 10.240.128.200
}

// Issue 11 §3: last use is the most recent burst any worker counted a
// packet on the SA in; a reused slot's old value does not count.
TEST_F(SaDatabaseTest, IdleSecondsIsNullUntilThePacketCountMoves) {
  db_->add(params(spec(SaDirection::kOutbound, 0x1001, "plain")));
  const uint32_t slot = current(0)->slot;
  dp_->counters[0]->sa[slot].last_tsc = rte_rdtsc();  // a predecessor's use of the slot
  dp::WorkerCounters sums{};
  sums.sa[slot] = dp_->counters[0]->sa[slot];
  SaRef ref{SaDirection::kOutbound, 0x1001, std::nullopt, kPeer1};
  EXPECT_FALSE(db_->query(ref, sums).idle_seconds.has_value());
  sums.sa[slot].packets += 3;
  sums.sa[slot].last_tsc = rte_rdtsc() - rte_get_tsc_hz() / 2;  // used half a second ago
  auto u = db_->query(ref, sums);
  ASSERT_TRUE(u.idle_seconds.has_value());
  EXPECT_NEAR(*u.idle_seconds, 0.5, 0.05);
  EXPECT_EQ(u.packets, 3u);
  EXPECT_THROW(db_->query({SaDirection::kOutbound, 0x1001, std::nullopt, kPeer2}, sums), SaNotFound);
}

TEST_F(SaDatabaseTest, InboundEncapUpdateCarriesTheWindowOver) {
  db_->add(params(spec(SaDirection::kInbound, 0x2002, "natt")));
  EXPECT_EQ(inbound(0x2002)->udp_port, 4500);
  EXPECT_EQ(receive(0x2002, 77), dp::ReplayVerdict::kOk);
  SaUpdate u;
  u.direction = SaDirection::kInbound;
  u.spi = 0x2002;
  u.tunnel = "natt";
  u.encap = UdpEncap{4501, 31000};
  db_->update(u);
  EXPECT_EQ(inbound(0x2002)->udp_port, 4501);
  EXPECT_EQ(receive(0x2002, 77), dp::ReplayVerdict::kReplay);
}

TEST_F(SaDatabaseTest, ADifferentKeyIsRefusedAndChangesNothing) {
  db_->add(params(spec(SaDirection::kOutbound, 0x1001, "plain", 1)));
  dp::OutboundSa* sa = current(0);
  sa->next_seq.fetch_add(41);
  size_t events = events_.size();
  try {
    db_->reconcile(params(spec(SaDirection::kOutbound, 0x1001, "plain", 0x40)));
    FAIL() << "a different key under the same SPI was accepted";
  } catch (const SaError& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("a new key needs a new SPI"), std::string::npos) << m;
    EXPECT_EQ(m.find("4041"), std::string::npos) << "key bytes in the message: " << m;
  }
  EXPECT_EQ(current(0), sa);
  EXPECT_EQ(sa->next_seq.load(), 42u);
  EXPECT_EQ(events_.size(), events);
  // Inbound: the window stays too.
  db_->add(params(spec(SaDirection::kInbound, 0x2001, "plain", 3)));
  EXPECT_EQ(receive(0x2001, 10), dp::ReplayVerdict::kOk);
  EXPECT_THROW(db_->reconcile(params(spec(SaDirection::kInbound, 0x2001, "plain", 2))), SaError);
  EXPECT_EQ(receive(0x2001, 10), dp::ReplayVerdict::kReplay);
}

TEST_F(SaDatabaseTest, ReconcileOfASupersededSaLeavesTheNewestCurrent) {
  db_->add(params(spec(SaDirection::kOutbound, 0x1001, "plain", 1)));
  db_->add(params(spec(SaDirection::kOutbound, 0x1002, "plain", 2)));  // the rekey
  ASSERT_EQ(current(0)->spi, 0x1002u);
  db_->reconcile(params(spec(SaDirection::kOutbound, 0x1001, "plain", 1)));
  EXPECT_EQ(current(0)->spi, 0x1002u);  // the superseded SA does not become current again
  // Changing the old one's outer header (a rebuild) does not make it current either.
  SaUpdate u;
  u.direction = SaDirection::kOutbound;
  u.spi = 0x1001;
  u.tunnel = "plain";
  u.remote_addr = kPeerMoved;
  db_->update(u);
  EXPECT_EQ(current(0)->spi, 0x1002u);
  db_->remove({SaDirection::kOutbound, 0x1002, 0, std::nullopt}, "test");
  ASSERT_NE(current(0), nullptr);
  EXPECT_EQ(current(0)->spi, 0x1001u);
  EXPECT_EQ(current(0)->outer_dst, kPeerMoved);
}

TEST_F(SaDatabaseTest, RefusedUpdatesChangeNothing) {
  SaSpec s = spec(SaDirection::kOutbound, 0x1002, "natt");
  s.hard.packets = 1000;
  db_->add(params(s));
  dp::OutboundSa* sa = current(1);
  sa->next_seq.fetch_add(9);
  SaUpdate u;
  u.direction = SaDirection::kOutbound;
  u.spi = 0x1002;
  u.tunnel = "natt";
  u.soft = SaLifetime{0, 2000, 0};  // above the installed hard limit
  EXPECT_THROW(db_->update(u), SaError);
  u.soft.reset();
  u.spi = 0x1003;
  u.encap = UdpEncap{4500, 1};
  EXPECT_THROW(db_->update(u), SaError);  // no such SA
  // Moving it onto another SA's identity (same SPI, that destination) is refused.
  db_->add(params(spec(SaDirection::kOutbound, 0x1003, "plain", 7)));
  u.spi = 0x1002;
  u.encap.reset();
  u.remote_addr = kPeer1;
  EXPECT_NO_THROW(db_->update(u));  // 0x1002 to 203.0.113.1 does not exist yet: allowed
  EXPECT_EQ(current(1)->outer_dst, kPeer1);
  SaUpdate v = u;
  v.spi = 0x1003;
  v.tunnel = "plain";
  v.remote_addr = kPeer2;
  EXPECT_NO_THROW(db_->update(v));
  EXPECT_EQ(current(1)->next_seq.load(), 10u);
  // A plain-ESP SA cannot gain UDP encapsulation by an update.
  SaUpdate w;
  w.direction = SaDirection::kOutbound;
  w.spi = 0x1003;
  w.tunnel = "plain";
  w.encap = UdpEncap{4500, 4500};
  EXPECT_THROW(db_->update(w), SaError);
  EXPECT_EQ(current(0)->udp_dst_port, 0);
  // Same SPI towards two peers: two identities; moving one onto the other is refused.
  db_->add(params(spec(SaDirection::kOutbound, 0x1004, "plain", 8)));  // to 203.0.113.1
  db_->add(params(spec(SaDirection::kOutbound, 0x1004, "natt", 9)));   // to 203.0.113.2
  SaUpdate x;
  x.direction = SaDirection::kOutbound;
  x.spi = 0x1004;
  x.tunnel = "natt";
  x.remote_addr = kPeer1;
  EXPECT_THROW(db_->update(x), SaError);
  EXPECT_EQ(current(1)->spi, 0x1004u);
  EXPECT_EQ(current(1)->outer_dst, kPeer2);
}

TEST_F(SaDatabaseTest, AddOfAnExistingIdentityIsRefused) {
  db_->add(params(spec(SaDirection::kInbound, 0x2001, "plain")));
  EXPECT_THROW(db_->add(params(spec(SaDirection::kInbound, 0x2001, "plain"))), SaError);
  // Same SPI, same destination (our address), other tunnel: the same identity.
  EXPECT_THROW(db_->add(params(spec(SaDirection::kInbound, 0x2001, "natt"))), SaError);
  EXPECT_EQ(db_->size(), 1u);
}

TEST_F(SaDatabaseTest, RemoveAllByOrigin) {
  SaSpec a = spec(SaDirection::kOutbound, 0x1001, "plain");
  a.origin = SaOrigin::kConfig;
  SaSpec b = spec(SaDirection::kInbound, 0x2001, "plain", 4);
  b.origin = SaOrigin::kXfrm;
  SaSpec c = spec(SaDirection::kOutbound, 0x1002, "natt", 3);  // each outbound SA its own key
  c.origin = SaOrigin::kXfrm;
  for (const SaSpec* s : {&a, &b, &c}) db_->add(params(*s));
  // A reconcile from another source does not take the identity over.
  SaSpec a2 = a;
  a2.origin = SaOrigin::kXfrm;
  db_->reconcile(params(a2));
  EXPECT_EQ(db_->keys(SaOrigin::kXfrm).size(), 2u);
  EXPECT_EQ(db_->remove_all(SaOrigin::kXfrm, "flush"), 2u);
  std::vector<SaKey> left = db_->keys();
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0].spi, 0x1001u);
  EXPECT_EQ(left[0].destination, kPeer1);
  EXPECT_EQ(left[0].origin, SaOrigin::kConfig);
  EXPECT_EQ(inbound(0x2001), nullptr);
  EXPECT_EQ(current(1), nullptr);
  EXPECT_NE(current(0), nullptr);
  EXPECT_EQ(db_->remove_all(std::nullopt, "flush"), 1u);
  EXPECT_EQ(db_->size(), 0u);
}

// A thread that reserves sequence numbers exactly like a worker (load the
// tunnel's current SA with acquire, one fetch_add per burst, report a
// quiescent state per loop) while the control thread moves the SA's outer
// header back and forth. Every number below the SA's limit is a packet on
// the wire: none may appear twice, and each thread's numbers keep rising.
TEST_F(SaDatabaseTest, OuterHeaderUpdatesNeverHandOutASequenceNumberTwice) {
  db_->add(params(spec(SaDirection::kOutbound, 0x1002, "natt")));
  std::atomic<bool> stop{false};
  // Checked on the fly: one worker's sent numbers must rise strictly (a
  // repeat, or a restart under the same key, breaks that).
  uint64_t sent = 0, last = 0, violations = 0, first_bad = 0, closed_hits = 0;
  std::thread worker([&] {
    rte_rcu_qsbr_thread_register(dp_->qsbr, 0);
    rte_rcu_qsbr_thread_online(dp_->qsbr, 0);
    while (!stop.load(std::memory_order_relaxed)) {
      dp::OutboundSa* sa = dp_->tunnels[1].out_sa.load(std::memory_order_acquire);
      // A worker classifies its burst between loading the SA and reserving
      // numbers: a handover can fall in between.
      for (int spin = 0; spin < 16; spin++) rte_pause();
      const uint64_t burst = 1 + (sent % 32);
      uint64_t base = sa->next_seq.fetch_add(burst, std::memory_order_relaxed);
      for (uint64_t i = 0; i < burst; i++) {
        uint64_t seq = base + i;
        if (seq - 1 < sa->tmpl.seq_max_m1) {  // esp_outbound_prepare's check: this one is sent
          if (seq <= last && violations++ == 0) first_bad = seq;
          last = seq;
          sent++;
        } else {
          closed_hits++;  // dropped as seq_exhausted, never sent
        }
      }
      rte_rcu_qsbr_quiescent(dp_->qsbr, 0);
    }
    rte_rcu_qsbr_thread_offline(dp_->qsbr, 0);
    rte_rcu_qsbr_thread_unregister(dp_->qsbr, 0);
  });
  for (int i = 0; i < 1000; i++) {
    SaUpdate u;
    u.direction = SaDirection::kOutbound;
    u.spi = 0x1002;
    u.tunnel = "natt";
    if (i % 2) u.encap = UdpEncap{4500, static_cast<uint16_t>(20000 + i)};
    else u.remote_addr = i % 4 ? kPeer2 : kPeerMoved;
    db_->update(u);
    std::this_thread::yield();
  }
  stop.store(true);
  worker.join();
  ASSERT_GT(sent, 1000u);
  EXPECT_EQ(violations, 0u) << "first repeated or backward sequence number: " << first_bad;
  const dp::OutboundSa* now = current(1);
  EXPECT_EQ(now->udp_dst_port, 20999);
  EXPECT_EQ(now->outer_dst, kPeer2);  // the last address update (i = 998)
  EXPECT_GT(now->next_seq.load(), last);
  std::printf("[ info ] %llu sequence numbers sent, %llu reservations hit a closed counter\n",
              static_cast<unsigned long long>(sent), static_cast<unsigned long long>(closed_hits));
}

// GCM's nonce is salt || sequence number, independent of the SPI: an
// outbound key installed a second time sends sequence 1, 2, ... again under
// the same key. Refused after a delete, under another SPI, while the first
// SA lives, and after a hard expiry on sequence exhaustion.
TEST_F(SaDatabaseTest, AnOutboundKeyIsNeverInstalledTwice) {
  auto refused = [&](const SaSpec& s) {
    try {
      db_->add(params(s));
    } catch (const SaError& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  db_->add(params(spec(SaDirection::kOutbound, 0x1001, "plain", 1)));
  current(0)->next_seq.fetch_add(77);
  db_->remove({SaDirection::kOutbound, 0x1001, std::nullopt, std::nullopt}, "test");
  const std::string m = refused(spec(SaDirection::kOutbound, 0x1001, "plain", 1));  // delete, then re-add
  EXPECT_NE(m.find("would repeat GCM nonces"), std::string::npos) << m;
  EXPECT_EQ(m.find("0102030405"), std::string::npos) << "key bytes in the message: " << m;
  EXPECT_NE(refused(spec(SaDirection::kOutbound, 0x1009, "plain", 1)), "accepted");  // another SPI
  EXPECT_NE(refused(spec(SaDirection::kOutbound, 0x1009, "natt", 1)), "accepted");   // another tunnel
  EXPECT_EQ(current(0), nullptr);
  EXPECT_EQ(db_->size(), 0u);
  // While the first SA lives.
  db_->add(params(spec(SaDirection::kOutbound, 0x1002, "plain", 5)));
  EXPECT_NE(refused(spec(SaDirection::kOutbound, 0x1003, "plain", 5)), "accepted");
  EXPECT_EQ(current(0)->spi, 0x1002u);
  // A refused add does not use its key up: refused for its identity, then accepted under a new SPI.
  EXPECT_NE(refused(spec(SaDirection::kOutbound, 0x1002, "plain", 6)).find("exists"), std::string::npos);
  EXPECT_EQ(refused(spec(SaDirection::kOutbound, 0x1004, "plain", 6)), "accepted");
  // Hard expiry on sequence exhaustion, then the agent re-adds the same SA.
  current(0)->next_seq.store(dp::kSeqLimitNoEsn);
  dp::WorkerCounters sums{};
  db_->check_lifetimes(sums);
  EXPECT_FALSE(db_->contains(SaDirection::kOutbound, 0x1004, 0));
  EXPECT_NE(refused(spec(SaDirection::kOutbound, 0x1004, "plain", 6)), "accepted");
  // Nor as an inbound key: the peer would number its packets from 1 under it too.
  EXPECT_NE(refused(spec(SaDirection::kInbound, 0x2001, "plain", 1)).find("both ends number their packets"),
            std::string::npos);
  EXPECT_NE(refused(spec(SaDirection::kInbound, 0x2001, "plain", 5)), "accepted");  // the live one's key
}

// An inbound SA deleted and installed again with its key would start with an
// empty replay window: every packet captured under the old SA passes again.
TEST_F(SaDatabaseTest, AnInboundKeyIsNeverInstalledTwice) {
  db_->add(params(spec(SaDirection::kInbound, 0x2001, "plain", 1)));
  EXPECT_EQ(receive(0x2001, 5), dp::ReplayVerdict::kOk);
  db_->remove({SaDirection::kInbound, 0x2001, std::nullopt, std::nullopt}, "test");
  try {
    db_->add(params(spec(SaDirection::kInbound, 0x2001, "plain", 1)));
    FAIL() << "an inbound key was installed twice";
  } catch (const SaError& e) {
    EXPECT_NE(std::string(e.what()).find("restart the replay window"), std::string::npos) << e.what();
  }
  EXPECT_EQ(inbound(0x2001), nullptr);
  EXPECT_THROW(db_->add(params(spec(SaDirection::kInbound, 0x2002, "natt", 1))), SaError);  // another SPI too
  EXPECT_THROW(db_->add(params(spec(SaDirection::kOutbound, 0x1001, "plain", 1))), SaError);  // nor outbound
  db_->add(params(spec(SaDirection::kInbound, 0x2001, "plain", 2)));  // a fresh key: fine
  EXPECT_EQ(receive(0x2001, 5), dp::ReplayVerdict::kOk);
}

// update-sa moved an outbound SA off its tunnel's remote address (MOBIKE).
// Another SA with that SPI on that tunnel (a new identity, at the tunnel's
// address) would make both unreachable for delete-sa / update-sa, which name
// an SA by SPI and tunnel; replace-sa of the moved SA as first installed
// would install its key a second time.
TEST_F(SaDatabaseTest, AMovedOutboundSpiCannotBeInstalledTwiceOnItsTunnel) {
  db_->add(params(spec(SaDirection::kOutbound, 0x1005, "plain", 11)));
  SaUpdate u;
  u.direction = SaDirection::kOutbound;
  u.spi = 0x1005;
  u.tunnel = "plain";
  u.remote_addr = kPeerMoved;
  db_->update(u);
  try {
    db_->add(params(spec(SaDirection::kOutbound, 0x1005, "plain", 12)));
    FAIL() << "a second outbound SA 0x1005 on the tunnel was installed";
  } catch (const SaError& e) {
    EXPECT_NE(std::string(e.what()).find("moved by update-sa"), std::string::npos) << e.what();
  }
  EXPECT_THROW(db_->reconcile(params(spec(SaDirection::kOutbound, 0x1005, "plain", 11))), SaError);
  EXPECT_EQ(db_->size(), 1u);
  EXPECT_EQ(current(0)->outer_dst, kPeerMoved);
  // The same SPI on another tunnel is another SA.
  db_->add(params(spec(SaDirection::kOutbound, 0x1005, "natt", 13)));
  db_->remove({SaDirection::kOutbound, 0x1005, 0, std::nullopt}, "test");
  EXPECT_EQ(current(0), nullptr);
  EXPECT_EQ(db_->size(), 1u);
}

// seq may start anywhere below 2^63 on an ESN SA: one that starts near the
// top runs out. It must expire (soft, then hard: deleted, the tunnel falls
// back) like a 32-bit one, not stay current and drop every packet unseen.
TEST_F(SaDatabaseTest, AnEsnSaThatRunsOutOfSequenceNumbersExpires) {
  db_->add(params(spec(SaDirection::kOutbound, 0x1001, "plain", 21)));
  SaSpec s = spec(SaDirection::kOutbound, 0x1002, "plain", 22);
  s.esn = true;
  s.initial_seq = kEsnSeqReserved - 10;
  db_->add(params(s));
  ASSERT_EQ(current(0)->spi, 0x1002u);
  dp::WorkerCounters sums{};
  events_.clear();
  db_->check_lifetimes(sums);  // 10 numbers left: soft
  ASSERT_EQ(events_.size(), 1u);
  EXPECT_EQ(events_[0]["kind"], "soft");
  EXPECT_EQ(events_[0]["reason"], "sequence");
  current(0)->next_seq.fetch_add(10);  // the last one was sent
  db_->check_lifetimes(sums);
  ASSERT_EQ(events_.size(), 3u);
  EXPECT_EQ(events_[1]["kind"], "hard");
  EXPECT_EQ(events_[2]["event"], "sa-deleted");
  EXPECT_EQ(current(0)->spi, 0x1001u);
  // A fresh ESN SA far from the end: no event.
  SaSpec f = spec(SaDirection::kOutbound, 0x1003, "plain", 23);
  f.esn = true;
  f.initial_seq = uint64_t{1} << 40;
  db_->add(params(f));
  events_.clear();
  db_->check_lifetimes(sums);
  EXPECT_TRUE(events_.empty());
}

TEST_F(SaDatabaseTest, ListShowsNoKeyMaterial) {
  db_->add(params(spec(SaDirection::kOutbound, 0x1001, "plain", 0xa0)));
  dp::WorkerCounters sums{};
  std::string text = db_->list(sums).dump();
  EXPECT_EQ(text.find("a0a1a2a3"), std::string::npos) << text;
  EXPECT_NE(text.find("key_fingerprint"), std::string::npos);
  for (const auto& ev : events_) EXPECT_EQ(ev.dump().find("a0a1a2a3"), std::string::npos) << ev.dump();
}

}  // namespace
}  // namespace espgw::control

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  std::string prefix = "--file-prefix=sadb_test_" + std::to_string(getpid());
  std::vector<std::string> args = {"sa_database_test", "--no-huge", "-m", "256", "--no-pci", "--no-shconf",
                                   "--log-level=error", "-l", "0", prefix};
  std::vector<char*> argv_eal;
  for (auto& a : args) argv_eal.push_back(a.data());
  if (rte_eal_init(static_cast<int>(argv_eal.size()), argv_eal.data()) < 0) {
    std::fprintf(stderr, "rte_eal_init failed: %s\n", rte_strerror(rte_errno));
    return 1;
  }
  int rc = RUN_ALL_TESTS();
  rte_eal_cleanup();
  return rc;
}
