// SPIs espgw allocates for an IKE daemon (alloc-spi, charon's get_spi) and
// the larval reservations that hold them until an inbound add-sa/replace-sa
// consumes them, a delete-sa releases them, or they expire.
//
// An SPI is random in 256..2^32-1 (RFC 4303 §2.1: 0 is reserved, 1..255 are
// IANA's), unique per destination address among installed inbound SAs
// (the caller's `installed` predicate) and live reservations: never handed
// out while an SA or a reservation holds it. Control thread only.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <tuple>
#include <utility>
#include <vector>

namespace espgw::control {

class SpiAllocator {
 public:
  using Clock = std::chrono::steady_clock;
  // A uniformly random 32-bit value (tests inject their own sequence).
  using Random = std::function<uint32_t()>;
  // Whether an installed inbound SA at the destination has this SPI.
  using Installed = std::function<bool(uint32_t spi)>;

  static constexpr size_t kMaxReservations = 65536;
  static constexpr uint32_t kMinSpi = 256;
  // Draws before giving up; with at most 65536 reservations and the SA
  // table's 1024 SAs in 2^32 values, a random SPI is taken once in 65,000
  // draws: this is never reached but by a broken random source.
  static constexpr int kMaxDraws = 64;

  struct Reservation {
    uint32_t dst = 0, spi = 0;  // host order
    uint32_t src = 0;           // the peer, recorded only (0: not given)
    Clock::time_point expires;
  };

  // Default random source: OpenSSL's RAND_bytes (SPIs are not secret, but
  // predictable ones help an off-path attacker aim forged packets).
  explicit SpiAllocator(Random random = {});

  // Reserves a new SPI for `dst` until now + timeout. Throws SaError when
  // kMaxReservations are live or no free SPI was drawn.
  uint32_t reserve(uint32_t dst, uint32_t src, Clock::duration timeout, Clock::time_point now,
                   const Installed& installed);
  // Ends the reservation of (dst, spi): consumed by an SA, or released.
  // Returns whether there was one.
  bool release(uint32_t dst, uint32_t spi);
  bool reserved(uint32_t dst, uint32_t spi) const { return by_id_.count({dst, spi}) != 0; }
  // The destinations holding a reservation of `spi` (a delete-sa that names
  // neither tunnel nor dst).
  std::vector<uint32_t> destinations_of(uint32_t spi) const;
  // Releases every reservation expired at `now`; returns how many.
  size_t expire(Clock::time_point now);
  // Releases every reservation; returns how many.
  size_t clear();
  std::vector<Reservation> list() const;
  size_t size() const { return by_id_.size(); }

 private:
  using Id = std::pair<uint32_t, uint32_t>;  // (dst, spi)
  std::map<Id, Reservation> by_id_;
  std::set<std::tuple<Clock::time_point, uint32_t, uint32_t>> by_expiry_;  // (expires, dst, spi)
  Random random_;
};

}  // namespace espgw::control
