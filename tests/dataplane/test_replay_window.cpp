// Anti-replay window: RFC 4303 §3.4.3 and Appendix A (A2 window, A3 ESN).
#include "dataplane/replay_window.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>
#include <set>
#include <thread>
#include <atomic>

using espgw::dataplane::ReplayVerdict;
using espgw::dataplane::ReplayWindow;

namespace {

constexpr uint64_t k32 = uint64_t{1} << 32;

// Receive one authenticated packet: check, then update.
ReplayVerdict recv(ReplayWindow& w, uint32_t low, uint64_t* full = nullptr) {
  uint64_t f = ~uint64_t{0};
  ReplayVerdict v = w.check(low, &f);
  if (full) *full = f;
  if (v == ReplayVerdict::kOk) {
    EXPECT_EQ(w.update(f), ReplayVerdict::kOk);
  }
  return v;
}

TEST(ReplayWindow, InOrderAcceptedThenAllDuplicatesRejected) {
  ReplayWindow w(64, false);
  for (uint32_t s = 1; s <= 1000; ++s) ASSERT_EQ(recv(w, s), ReplayVerdict::kOk) << s;
  EXPECT_EQ(w.top(), 1000u);
  for (uint32_t s = 1000 - 63; s <= 1000; ++s) EXPECT_EQ(recv(w, s), ReplayVerdict::kReplay) << s;
  for (uint32_t s = 1; s < 1000 - 63; ++s) EXPECT_EQ(recv(w, s), ReplayVerdict::kTooOld) << s;
}

TEST(ReplayWindow, ReorderedWithinWindowAcceptedOnce) {
  ReplayWindow w(64, false);
  ASSERT_EQ(recv(w, 100), ReplayVerdict::kOk);
  // Window is [37, 100]: everything below 100 down to 37 is new.
  for (uint32_t s = 99; s >= 37; --s) ASSERT_EQ(recv(w, s), ReplayVerdict::kOk) << s;
  EXPECT_EQ(recv(w, 36), ReplayVerdict::kTooOld);
  EXPECT_EQ(recv(w, 37), ReplayVerdict::kReplay);
  EXPECT_EQ(recv(w, 70), ReplayVerdict::kReplay);
  EXPECT_EQ(w.top(), 100u);
}

TEST(ReplayWindow, DuplicateOfTopIsReplay) {
  ReplayWindow w(1024, false);
  ASSERT_EQ(recv(w, 5), ReplayVerdict::kOk);
  EXPECT_EQ(recv(w, 5), ReplayVerdict::kReplay);
  EXPECT_EQ(recv(w, 4), ReplayVerdict::kOk);
  EXPECT_EQ(recv(w, 4), ReplayVerdict::kReplay);
}

TEST(ReplayWindow, SequenceZeroIsNeverValid) {
  ReplayWindow w(64, false);
  uint64_t f;
  EXPECT_EQ(w.check(0, &f), ReplayVerdict::kTooOld);
  ReplayWindow e(64, true);
  EXPECT_EQ(e.check(0, &f), ReplayVerdict::kTooOld);
}

TEST(ReplayWindow, CheckDoesNotChangeState) {
  // A forged packet passes check() but is never update()d: the window must
  // not have moved.
  ReplayWindow w(64, false);
  ASSERT_EQ(recv(w, 10), ReplayVerdict::kOk);
  uint64_t f;
  EXPECT_EQ(w.check(1000000, &f), ReplayVerdict::kOk);
  EXPECT_EQ(f, 1000000u);
  EXPECT_EQ(w.top(), 10u);
  EXPECT_EQ(w.check(9, &f), ReplayVerdict::kOk);   // still inside the old window
  EXPECT_EQ(w.check(10, &f), ReplayVerdict::kReplay);
}

TEST(ReplayWindow, FarJumpAheadClearsOldBits) {
  ReplayWindow w(128, false);
  for (uint32_t s = 1; s <= 200; ++s) ASSERT_EQ(recv(w, s), ReplayVerdict::kOk);
  ASSERT_EQ(recv(w, 1000000), ReplayVerdict::kOk);
  EXPECT_EQ(w.top(), 1000000u);
  EXPECT_EQ(recv(w, 200), ReplayVerdict::kTooOld);
  // Every number in the new window except the top is new, although the
  // bitmap buckets they map to held bits for 1..200.
  for (uint32_t s = 1000000 - 127; s < 1000000; ++s) ASSERT_EQ(recv(w, s), ReplayVerdict::kOk) << s;
  EXPECT_EQ(recv(w, 1000000 - 128), ReplayVerdict::kTooOld);
}

TEST(ReplayWindow, JumpByLessThanWindowKeepsBits) {
  ReplayWindow w(1024, false);
  for (uint32_t s = 1; s <= 600; s += 2) ASSERT_EQ(recv(w, s), ReplayVerdict::kOk);
  ASSERT_EQ(recv(w, 1100), ReplayVerdict::kOk);  // window now [77, 1100]
  for (uint32_t s = 77; s <= 600; ++s)
    EXPECT_EQ(recv(w, s), (s & 1) ? ReplayVerdict::kReplay : ReplayVerdict::kOk) << s;
  EXPECT_EQ(recv(w, 76), ReplayVerdict::kTooOld);
}

TEST(ReplayWindow, UpdateRejectsDuplicateWithinOneBurst) {
  // Two copies of one packet both pass check() before either is updated;
  // update() must refuse the second.
  ReplayWindow w(64, false);
  uint64_t a, b;
  ASSERT_EQ(w.check(7, &a), ReplayVerdict::kOk);
  ASSERT_EQ(w.check(7, &b), ReplayVerdict::kOk);
  EXPECT_EQ(w.update(a), ReplayVerdict::kOk);
  EXPECT_EQ(w.update(b), ReplayVerdict::kReplay);
  // And one that fell out of the window between check and update.
  uint64_t c;
  ASSERT_EQ(w.check(8, &c), ReplayVerdict::kOk);
  ASSERT_EQ(recv(w, 500), ReplayVerdict::kOk);
  EXPECT_EQ(w.update(c), ReplayVerdict::kTooOld);
}

TEST(ReplayWindow, ResetValidatesSize) {
  ReplayWindow w(64, false);
  EXPECT_FALSE(w.reset(31, false));
  EXPECT_FALSE(w.reset(4097, false));
  EXPECT_EQ(w.window(), 64u);
  EXPECT_TRUE(w.reset(32, false));
  EXPECT_TRUE(w.reset(4096, true));
  EXPECT_TRUE(w.reset(1000, false));  // not a power of two
  EXPECT_TRUE(w.reset(0, false));
  EXPECT_EQ(w.window(), 0u);
}

TEST(ReplayWindow, InitialTopMarksEverythingBelowAsSeen) {
  ReplayWindow w;
  ASSERT_TRUE(w.reset(64, false, 1000));
  uint64_t f;
  EXPECT_EQ(w.check(1000, &f), ReplayVerdict::kReplay);
  EXPECT_EQ(w.check(937, &f), ReplayVerdict::kReplay);
  EXPECT_EQ(w.check(936, &f), ReplayVerdict::kTooOld);
  EXPECT_EQ(w.check(1001, &f), ReplayVerdict::kOk);
}

TEST(ReplayWindow, DisabledAcceptsEverythingButZero) {
  ReplayWindow w(0, false);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(recv(w, 5), ReplayVerdict::kOk);
  EXPECT_EQ(recv(w, 100000), ReplayVerdict::kOk);
  EXPECT_EQ(recv(w, 1), ReplayVerdict::kOk);
  EXPECT_EQ(w.top(), 100000u);
  uint64_t f;
  EXPECT_EQ(w.check(0, &f), ReplayVerdict::kTooOld);
}

// Edges of the window, for the sizes the product supports, against a naive
// model of §3.4.3 (a set of everything received; new iff not in the set and
// seq > top - W).
class ReplayWindowSizes : public ::testing::TestWithParam<uint32_t> {};

TEST_P(ReplayWindowSizes, EdgesOfTheWindow) {
  const uint32_t W = GetParam();
  ReplayWindow w(W, false);
  const uint32_t top = 3 * W + 17;
  ASSERT_EQ(recv(w, top), ReplayVerdict::kOk);
  uint64_t f;
  EXPECT_EQ(w.check(top - W + 1, &f), ReplayVerdict::kOk);
  EXPECT_EQ(w.check(top - W, &f), ReplayVerdict::kTooOld);
  EXPECT_EQ(w.check(top + 1, &f), ReplayVerdict::kOk);
  ASSERT_EQ(recv(w, top - W + 1), ReplayVerdict::kOk);
  EXPECT_EQ(w.check(top - W + 1, &f), ReplayVerdict::kReplay);
  // Advance by exactly one: the lowest slot falls out.
  ASSERT_EQ(recv(w, top + 1), ReplayVerdict::kOk);
  EXPECT_EQ(w.check(top - W + 1, &f), ReplayVerdict::kTooOld);
  EXPECT_EQ(w.check(top - W + 2, &f), ReplayVerdict::kOk);
}

TEST_P(ReplayWindowSizes, RandomTrafficMatchesNaiveModel) {
  const uint32_t W = GetParam();
  ReplayWindow w(W, false);
  std::set<uint64_t> seen;
  uint64_t top = 0;
  std::mt19937_64 rng(W);
  uint64_t next = 1;
  for (int i = 0; i < 20000; ++i) {
    // Mostly in-order with reordering, duplicates, jumps and stale packets.
    uint64_t s;
    switch (rng() % 8) {
      case 0: s = next > W * 2 ? next - (rng() % (W * 2)) : 1 + rng() % next; break;  // late
      case 1: s = top ? top - (rng() % (top < W ? top : W)) : 1; break;                // dup-ish
      case 2: next += rng() % (W * 3); s = next++; break;                              // jump
      default: s = next++; break;
    }
    if (s == 0 || s >= k32) continue;
    ReplayVerdict want;
    if (top >= W && s <= top - W) want = ReplayVerdict::kTooOld;
    else if (seen.count(s)) want = ReplayVerdict::kReplay;
    else want = ReplayVerdict::kOk;
    uint64_t f;
    ReplayVerdict got = w.check(static_cast<uint32_t>(s), &f);
    ASSERT_EQ(got, want) << "i=" << i << " seq=" << s << " top=" << top;
    if (got == ReplayVerdict::kOk) {
      ASSERT_EQ(w.update(f), ReplayVerdict::kOk);
      seen.insert(s);
      if (s > top) top = s;
    }
    ASSERT_EQ(w.top(), top);
  }
}

INSTANTIATE_TEST_SUITE_P(Sizes, ReplayWindowSizes, ::testing::Values(32u, 64u, 100u, 1024u, 4096u));

// ---- ESN (RFC 4303 Appendix A2/A3)

TEST(ReplayWindowEsn, LowBitsWrapIncrementsHighBits) {
  ReplayWindow w(64, true);
  uint64_t f;
  for (uint64_t s = k32 - 10; s < k32; ++s) {
    ASSERT_EQ(recv(w, static_cast<uint32_t>(s), &f), ReplayVerdict::kOk);
    ASSERT_EQ(f, s);
  }
  // Case A: Tl = 0xffffffff >= W - 1; 0 < Bl -> Seqh = Th + 1.
  ASSERT_EQ(recv(w, 0, &f), ReplayVerdict::kOk);
  EXPECT_EQ(f, k32);
  ASSERT_EQ(recv(w, 1, &f), ReplayVerdict::kOk);
  EXPECT_EQ(f, k32 + 1);
  EXPECT_EQ(w.top(), k32 + 1);
}

TEST(ReplayWindowEsn, LatePacketFromBeforeTheWrapUsesHighMinusOne) {
  ReplayWindow w(64, true);
  ASSERT_TRUE(w.reset(64, true, k32 - 5));  // T = 0x0_fffffffb
  uint64_t f;
  ASSERT_EQ(recv(w, 2, &f), ReplayVerdict::kOk);  // skipped a few: T = 0x1_00000002
  ASSERT_EQ(f, k32 + 2);
  // Case B: Tl = 2 < W - 1, Bl = 2 - 63 (mod 2^32) = 0xffffffc3.
  EXPECT_EQ(w.check(0xfffffffc, &f), ReplayVerdict::kOk);
  EXPECT_EQ(f, 0xfffffffcu);  // Th - 1 = 0
  ASSERT_EQ(w.update(f), ReplayVerdict::kOk);
  EXPECT_EQ(recv(w, 0xfffffffc), ReplayVerdict::kReplay);
  EXPECT_EQ(recv(w, 0xfffffffb), ReplayVerdict::kReplay);  // the initial top
  EXPECT_EQ(w.check(0xffffffc3, &f), ReplayVerdict::kReplay);  // bottom of window, seen per reset()
  EXPECT_EQ(f, 0xffffffc3u);
  EXPECT_EQ(w.check(0xffffffc2, &f), ReplayVerdict::kOk);  // below Bl: read as Th (= far ahead)
  EXPECT_EQ(f, k32 + 0xffffffc2u);
  EXPECT_EQ(w.check(1, &f), ReplayVerdict::kOk);  // missing one just after the wrap
  EXPECT_EQ(f, k32 + 1);
  EXPECT_EQ(w.check(0, &f), ReplayVerdict::kOk);
  EXPECT_EQ(f, k32);
  EXPECT_EQ(w.top(), k32 + 2);
}

TEST(ReplayWindowEsn, WindowBottomAcrossTheWrap) {
  ReplayWindow w(32, true);
  ASSERT_TRUE(w.reset(32, true, k32 + 10));  // T = 0x1_0000000a, window [0x0_ffffffeb, T]
  uint64_t f;
  EXPECT_EQ(w.check(0xffffffeb, &f), ReplayVerdict::kReplay);  // marked by reset
  ReplayWindow fresh(32, true);
  // Case B with Th = 1: Bl = 10 - 31 = 0xffffffeb.
  ASSERT_EQ(recv(fresh, 0xfffffff0), ReplayVerdict::kOk);
  ASSERT_EQ(recv(fresh, 10, &f), ReplayVerdict::kOk);
  ASSERT_EQ(f, k32 + 10);
  EXPECT_EQ(fresh.check(0xffffffeb, &f), ReplayVerdict::kOk);
  EXPECT_EQ(f, 0xffffffebu);
  EXPECT_EQ(fresh.check(0xfffffff0, &f), ReplayVerdict::kReplay);
  EXPECT_EQ(f, 0xfffffff0u);
  // One below the window's bottom: A3 reads it as the current epoch (far
  // ahead); only the ICV can reject it.
  EXPECT_EQ(fresh.check(0xffffffea, &f), ReplayVerdict::kOk);
  EXPECT_EQ(f, k32 + 0xffffffeau);
}

TEST(ReplayWindowEsn, CaseAPacketBelowWindowIsNextEpoch) {
  // RFC 4303 A3 case A: Seql < Bl is taken to be in the next epoch (ahead),
  // never "too old"; the ICV decides.
  ReplayWindow w(1024, true);
  ASSERT_TRUE(w.reset(1024, true, (uint64_t{7} << 32) | 50000));
  uint64_t f;
  EXPECT_EQ(w.check(50000 - 1023, &f), ReplayVerdict::kReplay);  // bottom; reset() marked it
  EXPECT_EQ(f, (uint64_t{7} << 32) | (50000 - 1023));
  EXPECT_EQ(w.check(50000 - 1024, &f), ReplayVerdict::kOk);
  EXPECT_EQ(f, (uint64_t{8} << 32) | (50000 - 1024));
  EXPECT_EQ(w.check(60000, &f), ReplayVerdict::kOk);
  EXPECT_EQ(f, (uint64_t{7} << 32) | 60000);
}

TEST(ReplayWindowEsn, StreamMayStartAnywhereInTheFirstEpoch) {
  // Th = 0: A3 would put 0xfffffff0 into epoch -1; the only consistent
  // reading is epoch 0 (a jump ahead from the initial state).
  ReplayWindow w(1024, true);
  uint64_t f;
  ASSERT_EQ(recv(w, 0xfffffff0, &f), ReplayVerdict::kOk);
  EXPECT_EQ(f, 0xfffffff0u);
  for (uint32_t i = 0; i < 40; ++i) {
    uint64_t want = 0xfffffff1ull + i;
    ASSERT_EQ(recv(w, static_cast<uint32_t>(want), &f), ReplayVerdict::kOk);
    ASSERT_EQ(f, want);
  }
}

TEST(ReplayWindowEsn, NonEsnNeverInfersHighBits) {
  ReplayWindow w(64, false);
  uint64_t f;
  ASSERT_EQ(recv(w, 0xffffffff, &f), ReplayVerdict::kOk);
  EXPECT_EQ(f, 0xffffffffu);
  EXPECT_EQ(w.check(1, &f), ReplayVerdict::kTooOld);  // no wrap without ESN
  EXPECT_EQ(f, 1u);
}

TEST(ReplayWindowEsn, DisabledWindowStillInfersHighBits) {
  ReplayWindow w(0, true);
  uint64_t f;
  ASSERT_EQ(recv(w, 0xfffffff0, &f), ReplayVerdict::kOk);
  ASSERT_EQ(recv(w, 3, &f), ReplayVerdict::kOk);
  EXPECT_EQ(f, k32 + 3);
  ASSERT_EQ(recv(w, 0xffffffff, &f), ReplayVerdict::kOk);  // late, before the wrap
  EXPECT_EQ(f, 0xffffffffu);
  ASSERT_EQ(recv(w, 3, &f), ReplayVerdict::kOk);  // duplicates accepted
  EXPECT_EQ(f, k32 + 3);
}

TEST(ReplayWindowEsn, LongRunAcrossSeveralWrapsWithReordering) {
  for (uint32_t W : {32u, 64u, 1024u, 4096u}) {
    ReplayWindow w(W, true);
    ASSERT_TRUE(w.reset(W, true, 3 * k32 - 3 * W));
    std::mt19937 rng(W);
    uint64_t base = 3 * k32 - 3 * W + 1;
    // Blocks of W/2 packets sent in shuffled order, crossing 3*2^32.
    for (int blk = 0; blk < 12; ++blk) {
      std::vector<uint64_t> seqs;
      for (uint32_t i = 0; i < W / 2; ++i) seqs.push_back(base + i);
      std::shuffle(seqs.begin(), seqs.end(), rng);
      for (uint64_t s : seqs) {
        uint64_t f;
        ASSERT_EQ(recv(w, static_cast<uint32_t>(s), &f), ReplayVerdict::kOk) << W << " " << s;
        ASSERT_EQ(f, s);
      }
      base += W / 2;
    }
    EXPECT_GT(w.top(), 3 * k32);
  }
}

}  // namespace

// Two workers receive the same packets (RSS spread one SA over two queues):
// with updates under the window's lock, each number is accepted exactly once.
TEST(ReplayWindow, TwoWritersUnderTheLockAcceptEachNumberOnce) {
  constexpr uint32_t kN = 200000;
  ReplayWindow w(1024, false);
  std::vector<uint8_t> accepted(kN + 1, 0);
  std::atomic<uint32_t> dup{0};
  auto run = [&] {
    for (uint32_t s0 = 1; s0 <= kN; s0 += 32) {
      uint64_t full[32];
      bool pass[32];
      uint32_t n = std::min<uint32_t>(32, kN + 1 - s0);
      for (uint32_t i = 0; i < n; ++i) pass[i] = w.check(s0 + i, &full[i]) == ReplayVerdict::kOk;
      ReplayWindow::UpdateLock guard;
      for (uint32_t i = 0; i < n; ++i) {
        if (!pass[i]) continue;
        guard.hold(&w);
        if (w.update(full[i]) == ReplayVerdict::kOk) {
          // Only one thread gets here per number: the store needs no atomic.
          if (accepted[full[i]]++) dup++;
        }
      }
    }
  };
  std::thread a(run), b(run);
  a.join();
  b.join();
  EXPECT_EQ(dup.load(), 0u);
  for (uint32_t s = 1; s <= kN; ++s) ASSERT_LE(accepted[s], 1) << s;
}
