#include "control/spi_allocator.h"

#include <fmt/format.h>
#include <openssl/rand.h>

#include <cstring>

#include "control/config.h"
#include "control/sa_spec.h"

namespace espgw::control {

namespace {
uint32_t openssl_random() {
  uint8_t b[4];
  if (RAND_bytes(b, sizeof(b)) != 1) throw SaError("alloc-spi: the random source failed (OpenSSL RAND_bytes)");
  uint32_t v;
  std::memcpy(&v, b, sizeof(v));
  return v;
}
}  // namespace

SpiAllocator::SpiAllocator(Random random) : random_(random ? std::move(random) : Random(openssl_random)) {}

uint32_t SpiAllocator::reserve(uint32_t dst, uint32_t src, Clock::duration timeout, Clock::time_point now,
                               const Installed& installed) {
  if (by_id_.size() >= kMaxReservations)
    throw SaError(fmt::format("alloc-spi: {} SPIs are reserved already (the limit); add or delete SAs for them "
                              "first",
                              kMaxReservations));
  for (int i = 0; i < kMaxDraws; i++) {
    const uint32_t spi = random_();
    if (spi < kMinSpi || reserved(dst, spi) || installed(spi)) continue;
    const Clock::time_point expires = now + timeout;
    by_id_.emplace(Id{dst, spi}, Reservation{dst, spi, src, expires});
    by_expiry_.emplace(expires, dst, spi);
    return spi;
  }
  throw SaError(fmt::format("alloc-spi: no free SPI for {} in {} random draws", format_ipv4(dst), kMaxDraws));
}

bool SpiAllocator::release(uint32_t dst, uint32_t spi) {
  auto it = by_id_.find({dst, spi});
  if (it == by_id_.end()) return false;
  by_expiry_.erase({it->second.expires, dst, spi});
  by_id_.erase(it);
  return true;
}

std::vector<uint32_t> SpiAllocator::destinations_of(uint32_t spi) const {
  std::vector<uint32_t> out;
  for (const auto& [id, r] : by_id_)
    if (id.second == spi) out.push_back(id.first);
  return out;
}

size_t SpiAllocator::expire(Clock::time_point now) {
  size_t n = 0;
  while (!by_expiry_.empty() && std::get<0>(*by_expiry_.begin()) <= now) {
    auto [when, dst, spi] = *by_expiry_.begin();
    by_expiry_.erase(by_expiry_.begin());
    by_id_.erase({dst, spi});
    n++;
  }
  return n;
}

size_t SpiAllocator::clear() {
  size_t n = by_id_.size();
  by_id_.clear();
  by_expiry_.clear();
  return n;
}

std::vector<SpiAllocator::Reservation> SpiAllocator::list() const {
  std::vector<Reservation> out;
  out.reserve(by_id_.size());
  for (const auto& [id, r] : by_id_) out.push_back(r);
  return out;
}

}  // namespace espgw::control
