// The XFRM mirror's mapping onto the real control path: real XFRM netlink
// messages (built with <linux/xfrm.h> and libmnl, parsed by the same
// xfrm::parse_message the live socket uses) applied through XfrmMirror to a
// real ControlOps / SaDatabase / route table on an EAL without hugepages.
// (The kernels of our CI machines have XFRM but no ESP, so they never send
// an SA message; this is where FLUSHSA, UPDSA-as-reconcile and the overrun
// resync are shown.)
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_malloc.h>
#include <rte_rcu_qsbr.h>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <memory>

#include "control/control_ops.h"
#include "control/sa_database.h"
#include "control/xfrm_mirror.h"
#include "lpm/route_table.h"
#include "tests/xfrm/xfrm_builder.h"

namespace espgw::control {
namespace {
namespace dp = espgw::dataplane;
using nlohmann::json;

const char* kLocal = "198.51.100.10";
const char* kPeer = "203.0.113.1";

xfrm::Event event_of(const std::vector<uint8_t>& msg) { return xfrm::parse_message(msg.data(), msg.size()); }

xfrm_test::SaSpec kernel_sa(uint32_t spi, bool outbound, uint8_t key_seed) {
  xfrm_test::SaSpec s;
  s.spi = spi;
  s.saddr = xfrm_test::ip(outbound ? kLocal : kPeer);
  s.daddr = xfrm_test::ip(outbound ? kPeer : kLocal);
  s.keymat = xfrm_test::seq_bytes(20, key_seed);
  s.replay_window = 64;
  s.soft_bytes = s.hard_bytes = XFRM_INF;
  s.soft_add = 0;
  s.hard_add = 0;
  return s;
}

std::vector<uint8_t> flushsa(uint8_t proto) {
  xfrm_test::MsgBuilder b(XFRM_MSG_FLUSHSA);
  b.put_struct<xfrm_usersa_flush>()->proto = proto;
  return b.bytes();
}

// One tunnel (kLocal -> kPeer) and everything the control path needs.
class MirrorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    size_t sz = rte_rcu_qsbr_get_memsize(1);
    d_.qsbr = static_cast<rte_rcu_qsbr*>(rte_zmalloc("t_qsbr", sz, RTE_CACHE_LINE_SIZE));
    ASSERT_TRUE(d_.qsbr && rte_rcu_qsbr_init(d_.qsbr, 1) == 0);
    d_.nb_workers = 1;
    d_.counters[0] = static_cast<dp::WorkerCounters*>(rte_zmalloc("t_cnt", sizeof(dp::WorkerCounters), 64));
    ASSERT_NE(d_.counters[0], nullptr);
    d_.inbound = new dp::InboundSaTable(dp::kMaxSas, SOCKET_ID_ANY);
    TunnelConfig tc;
    tc.name = "aws-a1";
    tc.port = "wan";
    tc.local = xfrm_test::ip(kLocal);
    tc.remote = xfrm_test::ip(kPeer);
    tunnels_ = {tc};
    d_.nb_tunnels = 1;
    d_.tunnels[0].out_sa.store(nullptr);
    d_.tunnels[0].remote = tc.remote;
    lpm::RouteTableConfig rc;
    rc.max_routes = 16;
    rc.max_tunnels = dp::kMaxTunnels;
    rc.qsbr = d_.qsbr;
    rc.name = "t_routes";
    routes_ = std::make_unique<lpm::RouteTable>(rc);
    routes_->add_tunnel(0, false);
    ops_ = std::make_unique<ControlOps>(d_, *routes_, std::vector<std::string>{"aws-a1"}, std::vector<bool>{true},
                                        std::vector<std::string>{}, [this](const json& ev) { events_.push_back(ev); });
    sas_ = std::make_unique<SaDatabase>(d_, tunnels_, [this](const json& ev) { events_.push_back(ev); },
                                        [this](uint16_t t, bool has) { ops_->tunnel_sa_changed(t, has); });
    ops_->attach(*sas_);
    mirror_ = std::make_unique<XfrmMirror>(
        *ops_, std::vector<XfrmMirror::TunnelEnds>{{"aws-a1", tc.local, tc.remote}}, XfrmMirror::NoSocket{});
  }
  void TearDown() override {
    mirror_.reset();
    sas_.reset();
    ops_.reset();
    routes_.reset();
    delete d_.inbound;
    rte_free(d_.counters[0]);
    rte_free(d_.qsbr);
  }

  json sa(const char* dir, uint32_t spi) {
    for (const auto& s : ops_->list_sas())
      if (s["direction"] == dir && s["spi"] == fmt::format("0x{:08x}", spi)) return s;
    return nullptr;
  }

  dp::Dataplane d_;
  std::vector<TunnelConfig> tunnels_;
  std::unique_ptr<lpm::RouteTable> routes_;
  std::unique_ptr<ControlOps> ops_;
  std::unique_ptr<SaDatabase> sas_;
  std::unique_ptr<XfrmMirror> mirror_;
  std::vector<json> events_;
};

TEST_F(MirrorTest, NewsaThenUpdsaKeepsTheSequenceNumber) {
  auto out = kernel_sa(0x5001, true, 0x10);
  mirror_->apply(event_of(xfrm_test::build_sa(out)));
  json s = sa("out", 0x5001);
  ASSERT_FALSE(s.is_null());
  EXPECT_EQ(s["origin"], "xfrm");
  EXPECT_EQ(s["tunnel"], "aws-a1");
  // Traffic has used sequence numbers 1..999.
  d_.tunnels[0].out_sa.load()->next_seq.store(1000);
  out.hard_add = 7200;  // strongSwan's UPDSA, e.g. new lifetimes or NAT-T ports
  mirror_->apply(event_of(xfrm_test::build_sa(out, XFRM_MSG_UPDSA)));
  s = sa("out", 0x5001);
  EXPECT_EQ(s["next_seq"], 1000u) << "UPDSA went through a path that resets state";
  EXPECT_EQ(s["lifetime"]["hard"]["seconds"], 7200u);
  // A NEWSA for the same SA (a re-dump) is a reconcile too.
  mirror_->apply(event_of(xfrm_test::build_sa(out)));
  EXPECT_EQ(sa("out", 0x5001)["next_seq"], 1000u);
  EXPECT_EQ(mirror_->counters().mirrored, 3u);
}

TEST_F(MirrorTest, FlushsaRemovesEveryMirroredSaAndOnlyThose) {
  mirror_->apply(event_of(xfrm_test::build_sa(kernel_sa(0x5001, true, 0x10))));
  mirror_->apply(event_of(xfrm_test::build_sa(kernel_sa(0x6001, false, 0x20))));
  // One SA from the control socket, same tunnel.
  SaSpec own;
  own.direction = SaDirection::kOutbound;
  own.spi = 0x7001;
  own.tunnel = "aws-a1";
  own.keymat = crypto::SecretBytes(xfrm_test::seq_bytes(20, 0x30));
  ops_->add_sa(own, SaOrigin::kSocket);
  ASSERT_EQ(ops_->list_sas().size(), 3u);
  // AH flush: not ours.
  mirror_->apply(event_of(flushsa(IPPROTO_AH)));
  EXPECT_EQ(ops_->list_sas().size(), 3u);
  // `ip xfrm state flush` (IPSEC_PROTO_ANY).
  mirror_->apply(event_of(flushsa(IPSEC_PROTO_ANY)));
  json left = ops_->list_sas();
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0]["spi"], "0x00007001");
  EXPECT_EQ(left[0]["origin"], "socket");
  mirror_->apply(event_of(xfrm_test::build_sa(kernel_sa(0x5002, true, 0x11))));
  mirror_->apply(event_of(flushsa(IPPROTO_ESP)));
  EXPECT_EQ(ops_->list_sas().size(), 1u);
}

TEST_F(MirrorTest, DelsaNeverRemovesAnSaTheSocketInstalled) {
  SaSpec own;
  own.direction = SaDirection::kOutbound;
  own.spi = 0x5001;
  own.tunnel = "aws-a1";
  own.keymat = crypto::SecretBytes(xfrm_test::seq_bytes(20, 0x30));
  ops_->add_sa(own, SaOrigin::kSocket);
  mirror_->apply(event_of(xfrm_test::build_delsa(0x5001, xfrm_test::ip(kPeer))));
  EXPECT_FALSE(sa("out", 0x5001).is_null());
}

TEST_F(MirrorTest, ResyncAfterAnOverrunReconcilesAndRemovesWhatTheKernelLost) {
  auto a = kernel_sa(0x5001, true, 0x10), b = kernel_sa(0x5002, true, 0x11), c = kernel_sa(0x6001, false, 0x20);
  for (const auto& s : {a, b, c}) mirror_->apply(event_of(xfrm_test::build_sa(s)));
  d_.tunnels[0].out_sa.load()->next_seq.store(5000);  // b is current (newest)
  ASSERT_EQ(sa("out", 0x5002)["current"], true);
  // Events were lost: the kernel deleted a and added d. The re-dump shows b, c, d.
  auto d = kernel_sa(0x6002, false, 0x21);
  mirror_->resync_from({event_of(xfrm_test::build_sa(b)), event_of(xfrm_test::build_sa(c)),
                        event_of(xfrm_test::build_sa(d))});
  EXPECT_TRUE(sa("out", 0x5001).is_null()) << "a mirrored SA the kernel no longer has survived the resync";
  ASSERT_FALSE(sa("out", 0x5002).is_null());
  EXPECT_EQ(sa("out", 0x5002)["next_seq"], 5000u) << "the resync reset an SA's state";
  EXPECT_FALSE(sa("in", 0x6001).is_null());
  EXPECT_FALSE(sa("in", 0x6002).is_null());
  EXPECT_EQ(mirror_->counters().resyncs, 1u);
  bool resync_delete = false;
  for (const auto& ev : events_)
    if (ev.value("event", "") == "sa-deleted" && ev.value("reason", "") == "kernel-resync") resync_delete = true;
  EXPECT_TRUE(resync_delete);
}

TEST_F(MirrorTest, KernelKeysStayInWipingStorage) {
  auto ev = event_of(xfrm_test::build_sa(kernel_sa(0x5001, true, 0x10)));
  auto* info = std::get_if<xfrm::SaInfo>(&ev);
  ASSERT_NE(info, nullptr);
  static_assert(std::is_same_v<decltype(info->keymat), crypto::SecretBytes>);
  SaSpec spec = XfrmMirror::spec_of(*info, SaDirection::kOutbound, "aws-a1");
  EXPECT_TRUE(spec.keymat.equals(xfrm_test::seq_bytes(20, 0x10)));
  EXPECT_EQ(spec.origin, SaOrigin::kXfrm);
  EXPECT_TRUE(spec.plain_esp);
}

}  // namespace
}  // namespace espgw::control

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  char a0[] = "espgw-test", a1[] = "--no-huge", a2[] = "-m", a3[] = "256", a4[] = "--no-pci", a5[] = "--no-shconf",
       a6[] = "--log-level=error", a7[] = "-l", a8[] = "0";
  char* eal_argv[] = {a0, a1, a2, a3, a4, a5, a6, a7, a8, nullptr};
  if (rte_eal_init(9, eal_argv) < 0) {
    std::fprintf(stderr, "rte_eal_init failed: %s\n", rte_strerror(rte_errno));
    return 1;
  }
  int rc = RUN_ALL_TESTS();
  rte_eal_cleanup();
  return rc;
}
