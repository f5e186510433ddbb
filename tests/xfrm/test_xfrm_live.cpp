// The live mirror on a real NETLINK_XFRM socket.
//
// The test process first moves into a private network namespace (when it
// may), so what it installs never touches the host's SAD/SPD and parallel
// runs do not see each other. Tests that install state skip without one.
// Without CAP_NET_ADMIN or XFRM the Mirror constructor throws: skip with the
// reason. This kernel has XFRM netlink but no ESP: installing an ESP SA fails
// and that test skips; policies need no ESP, so the socket path (events,
// dumps, overruns) is tested end to end with them.
#include <gtest/gtest.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>

#include <chrono>
#include <cstring>
#include <optional>
#include <system_error>

#include "control/xfrm.h"
#include "tests/xfrm/xfrm_builder.h"

namespace x = espgw::control::xfrm;
using namespace xfrm_test;

namespace {

struct Recorder {
  std::vector<x::Event> events;
  x::Mirror::Callback cb() {
    return [this](const x::Event& ev) { events.push_back(ev); };
  }
};

std::optional<std::string> g_netns_error;  // set: no private netns
bool g_netns_tried = false;

void enter_private_netns() {
  if (g_netns_tried) return;
  g_netns_tried = true;
  if (unshare(CLONE_NEWNET) != 0) g_netns_error = std::strerror(errno);
}

// Creates a mirror or returns the reason it cannot.
std::unique_ptr<x::Mirror> make_mirror(Recorder& rec, std::string& why) {
  try {
    return std::make_unique<x::Mirror>(rec.cb());
  } catch (const std::runtime_error& e) {
    why = e.what();
    return nullptr;
  }
}

#define MIRROR_OR_SKIP(m, rec)                          \
  std::string why_;                                     \
  auto m = make_mirror(rec, why_);                      \
  if (!m) GTEST_SKIP() << "no live XFRM mirror: " << why_

#define NETNS_OR_SKIP()                                                                  \
  if (g_netns_error)                                                                     \
  GTEST_SKIP() << "no private network namespace (" << *g_netns_error                     \
               << "): not installing XFRM state in the host's"

// Polls the mirror until `pred` holds on a recorded event (or times out).
template <typename Pred>
bool wait_for(x::Mirror& m, Recorder& rec, Pred pred, int timeout_ms = 3000) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  size_t seen = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd pfd{m.fd(), POLLIN, 0};
    ::poll(&pfd, 1, 50);
    m.poll();
    for (; seen < rec.events.size(); ++seen) {
      if (pred(rec.events[seen])) return true;
    }
  }
  return false;
}

uint64_t counted(const x::Stats& s) {
  return s.sa_added + s.sa_updated + s.sa_deleted + s.expires + s.policies + s.unsupported +
         s.malformed + s.flushes;
}

class XfrmLive : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { enter_private_netns(); }
};

}  // namespace

TEST(XfrmMirror, NeedsACallback) {
  EXPECT_THROW(x::Mirror(x::Mirror::Callback{}), std::invalid_argument);
}

TEST_F(XfrmLive, DumpCompletesAndStatsAreConsistent) {
  Recorder rec;
  MIRROR_OR_SKIP(m, rec);
  EXPECT_GE(m->fd(), 0);
  ASSERT_NO_THROW(m->dump());
  const auto& s = m->stats();
  EXPECT_EQ(s.messages, rec.events.size());
  EXPECT_EQ(counted(s), s.messages);
  EXPECT_EQ(s.sa_updated, 0u);  // dump replies are NEWSA
  EXPECT_EQ(s.malformed, 0u);   // the kernel's own messages always parse
  if (!g_netns_error) {
    // A fresh namespace has no SAs and no policies.
    EXPECT_EQ(s.sa_added + s.unsupported, 0u);
    EXPECT_EQ(s.policies, 0u);
  }
  EXPECT_EQ(m->poll(), 0u);  // nothing happened since
}

TEST_F(XfrmLive, RequestReportsTheKernelsError) {
  NETNS_OR_SKIP();
  Recorder rec;
  MIRROR_OR_SKIP(m, rec);
  PolicySpec p;
  p.dir = 7;  // not in/out/fwd: the kernel says EINVAL
  const auto msg = build_newpolicy(p);
  try {
    x::Mirror::request(msg.data(), msg.size());
    FAIL() << "the kernel accepted a policy with dir 7";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code().value(), EINVAL) << e.what();
    EXPECT_NE(std::string(e.what()).find("XFRM_MSG_NEWPOLICY"), std::string::npos) << e.what();
  }
}

TEST_F(XfrmLive, PolicyEventsEndToEnd) {
  NETNS_OR_SKIP();
  Recorder rec;
  MIRROR_OR_SKIP(m, rec);
  m->dump();
  PolicySpec p;
  p.src = ip("10.11.0.0");
  p.dst = ip("10.12.0.0");
  p.priority = 4242;
  p.reqid = 99;
  const auto add = build_newpolicy(p);
  ASSERT_NO_THROW(x::Mirror::request(add.data(), add.size()));
  auto is_ours = [&](const x::Event& ev, x::PolicyEvent::Kind kind) {
    const auto* pe = std::get_if<x::PolicyEvent>(&ev);
    return pe && pe->kind == kind && pe->sel.saddr == p.src && pe->sel.daddr == p.dst &&
           pe->dir == x::PolicyDir::kOut;
  };
  ASSERT_TRUE(wait_for(*m, rec, [&](const x::Event& ev) {
    if (!is_ours(ev, x::PolicyEvent::Kind::kNew)) return false;
    const auto& pe = std::get<x::PolicyEvent>(ev);
    EXPECT_EQ(pe.priority, 4242u);
    EXPECT_TRUE(pe.has_tmpl);
    EXPECT_EQ(pe.reqid, 99u);
    EXPECT_EQ(pe.tmpl_daddr, p.tmpl_daddr);
    return true;
  })) << "no NEWPOLICY event";

  // A new dump (GETPOLICY) reports it too.
  const size_t before = rec.events.size();
  m->dump();
  bool in_dump = false;
  for (size_t i = before; i < rec.events.size(); ++i) {
    in_dump |= is_ours(rec.events[i], x::PolicyEvent::Kind::kNew);
  }
  EXPECT_TRUE(in_dump);

  const auto del = build_delpolicy(p);
  ASSERT_NO_THROW(x::Mirror::request(del.data(), del.size()));
  ASSERT_TRUE(wait_for(*m, rec, [&](const x::Event& ev) {
    if (!is_ours(ev, x::PolicyEvent::Kind::kDelete)) return false;
    EXPECT_EQ(std::get<x::PolicyEvent>(ev).priority, 4242u);  // from the kernel's XFRMA_POLICY
    return true;
  })) << "no DELPOLICY event";
  EXPECT_EQ(m->stats().malformed, 0u);
  EXPECT_EQ(counted(m->stats()), m->stats().messages);
}

TEST_F(XfrmLive, OverrunIsCounted) {
  NETNS_OR_SKIP();
  Recorder rec;
  MIRROR_OR_SKIP(m, rec);
  const int tiny = 1;  // the kernel rounds it up to its minimum (a few KiB)
  ASSERT_EQ(setsockopt(m->fd(), SOL_SOCKET, SO_RCVBUF, &tiny, sizeof(tiny)), 0);
  constexpr int kPolicies = 64;
  for (int i = 0; i < kPolicies; ++i) {
    PolicySpec p;
    p.src = ip("10.20.0.0");
    p.dst = ip("10.21.0.0") + static_cast<uint32_t>(i);
    p.plen_d = 32;
    const auto add = build_newpolicy(p);
    ASSERT_NO_THROW(x::Mirror::request(add.data(), add.size()));
  }
  m->poll();
  EXPECT_GT(m->stats().overruns, 0u);
  EXPECT_LT(m->stats().policies, static_cast<uint64_t>(kPolicies));
  MsgBuilder flush(XFRM_MSG_FLUSHPOLICY);
  const auto fm = flush.bytes();
  EXPECT_NO_THROW(x::Mirror::request(fm.data(), fm.size()));
}

TEST_F(XfrmLive, EspSaEndToEnd) {
  NETNS_OR_SKIP();
  Recorder rec;
  MIRROR_OR_SKIP(m, rec);
  m->dump();
  SaSpec s;
  s.spi = 0x5eed0001;
  s.saddr = ip("192.0.2.10");
  s.daddr = ip("198.51.100.20");
  s.reqid = 31;
  s.soft_bytes = s.hard_bytes = XFRM_INF;
  s.soft_add = s.hard_add = XFRM_INF;
  const auto add = build_sa(s);
  try {
    x::Mirror::request(add.data(), add.size());
  } catch (const std::system_error& e) {
    GTEST_SKIP() << "this kernel has no ESP: cannot test the live mirror end to end (" << e.what()
                 << ")";
  }
  ASSERT_TRUE(wait_for(*m, rec, [&](const x::Event& ev) {
    const auto* sa = std::get_if<x::SaInfo>(&ev);
    if (!sa || sa->spi != s.spi) return false;
    EXPECT_TRUE(sa->keymat.equals(s.keymat));
    EXPECT_EQ(sa->saddr, s.saddr);
    EXPECT_EQ(sa->daddr, s.daddr);
    EXPECT_EQ(sa->reqid, 31u);
    return true;
  })) << "no NEWSA event";
  const auto del = build_delsa(s.spi, s.daddr);
  ASSERT_NO_THROW(x::Mirror::request(del.data(), del.size()));
  EXPECT_TRUE(wait_for(*m, rec, [&](const x::Event& ev) {
    const auto* d = std::get_if<x::SaDelete>(&ev);
    return d && d->key.spi == s.spi && d->key.daddr == s.daddr;
  })) << "no DELSA event";
}
