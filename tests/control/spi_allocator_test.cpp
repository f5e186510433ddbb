// The SPI allocator behind alloc-spi: with an injected random sequence, so
// that a draw that collides with an installed SA, a live reservation or the
// reserved range is actually made and must be skipped.
#include <gtest/gtest.h>

#include <deque>
#include <set>

#include "control/sa_spec.h"
#include "control/spi_allocator.h"

namespace espgw::control {
namespace {

using Clock = SpiAllocator::Clock;
using std::chrono::seconds;

constexpr uint32_t kDst = 0xc633640a;    // 198.51.100.10
constexpr uint32_t kOther = 0xc633640b;  // 198.51.100.11

// Draws from a fixed list (then fails the test if it runs dry).
struct Sequence {
  std::deque<uint32_t> values;
  uint32_t operator()() {
    if (values.empty()) {
      ADD_FAILURE() << "random sequence exhausted";
      return 0;
    }
    uint32_t v = values.front();
    values.pop_front();
    return v;
  }
};

TEST(SpiAllocator, SkipsReservedRangeInstalledSasAndLiveReservations) {
  auto seq = std::make_shared<Sequence>();
  seq->values = {0x5000, 0, 255, 0x1234, 0x5000, 0x5001};
  SpiAllocator a([seq] { return (*seq)(); });
  const auto now = Clock::now();
  auto installed = [](uint32_t spi) { return spi == 0x1234; };
  EXPECT_EQ(a.reserve(kDst, 0, seconds(10), now, installed), 0x5000u);
  // 0 and 255 are reserved (RFC 4303), 0x1234 an installed SA's, 0x5000 reserved.
  EXPECT_EQ(a.reserve(kDst, 0, seconds(10), now, installed), 0x5001u);
  EXPECT_TRUE(seq->values.empty());
  EXPECT_TRUE(a.reserved(kDst, 0x5000));
  EXPECT_FALSE(a.reserved(kOther, 0x5000));
}

TEST(SpiAllocator, UniquenessIsPerDestination) {
  auto seq = std::make_shared<Sequence>();
  seq->values = {0x7777, 0x7777};
  SpiAllocator a([seq] { return (*seq)(); });
  const auto now = Clock::now();
  auto none = [](uint32_t) { return false; };
  EXPECT_EQ(a.reserve(kDst, 0, seconds(10), now, none), 0x7777u);
  EXPECT_EQ(a.reserve(kOther, 0, seconds(10), now, none), 0x7777u);
  EXPECT_EQ(a.destinations_of(0x7777).size(), 2u);
}

TEST(SpiAllocator, ExpiryAndReleaseFreeTheSpi) {
  auto seq = std::make_shared<Sequence>();
  seq->values = {0x6001, 0x6002, 0x6001};
  SpiAllocator a([seq] { return (*seq)(); });
  const auto now = Clock::now();
  auto none = [](uint32_t) { return false; };
  a.reserve(kDst, 0, seconds(1), now, none);
  a.reserve(kDst, 0, seconds(5), now, none);
  EXPECT_EQ(a.expire(now + std::chrono::milliseconds(999)), 0u);
  EXPECT_EQ(a.expire(now + seconds(1)), 1u);
  EXPECT_FALSE(a.reserved(kDst, 0x6001));
  EXPECT_TRUE(a.reserved(kDst, 0x6002));
  // Expired: 0x6001 may be handed out again.
  EXPECT_EQ(a.reserve(kDst, 0, seconds(5), now + seconds(1), none), 0x6001u);
  EXPECT_TRUE(a.release(kDst, 0x6002));
  EXPECT_FALSE(a.release(kDst, 0x6002));
  EXPECT_EQ(a.size(), 1u);
  EXPECT_EQ(a.clear(), 1u);
  EXPECT_EQ(a.size(), 0u);
  EXPECT_EQ(a.expire(now + seconds(100)), 0u);
}

TEST(SpiAllocator, AtMostMaxReservations) {
  uint32_t next = 0x10000;
  SpiAllocator a([&next] { return next++; });
  const auto now = Clock::now();
  auto none = [](uint32_t) { return false; };
  for (size_t i = 0; i < SpiAllocator::kMaxReservations; i++) a.reserve(kDst, 0, seconds(100), now, none);
  EXPECT_THROW(a.reserve(kOther, 0, seconds(100), now, none), SaError);
  a.release(kDst, 0x10000);
  EXPECT_NO_THROW(a.reserve(kOther, 0, seconds(100), now, none));
}

TEST(SpiAllocator, ABrokenRandomSourceIsAnErrorNotALoop) {
  SpiAllocator a([] { return 0x4444u; });
  const auto now = Clock::now();
  EXPECT_THROW(a.reserve(kDst, 0, seconds(1), now, [](uint32_t spi) { return spi == 0x4444; }), SaError);
}

TEST(SpiAllocator, DefaultRandomSourceGivesDistinctValidSpis) {
  SpiAllocator a;
  const auto now = Clock::now();
  std::set<uint32_t> seen;
  for (int i = 0; i < 10000; i++) {
    uint32_t spi = a.reserve(kDst, 0, seconds(100), now, [](uint32_t) { return false; });
    EXPECT_GE(spi, 256u);
    seen.insert(spi);
  }
  EXPECT_EQ(seen.size(), 10000u);
}

}  // namespace
}  // namespace espgw::control
