// Key material in one type that wipes itself.
//
// Every copy of a key outside the AEAD context's expanded schedule lives in a
// SecretBytes: the control socket's decoded request, the config file's SA
// entries, the XFRM mirror's parsed SAs, the SA database's specification.
// Its storage is cleansed (OPENSSL_cleanse, which the compiler cannot elide)
// whenever it is destroyed, overwritten, moved from or shrunk, so a key
// never lingers in freed heap memory. It has no operator<< and no
// formatter: a key cannot end up in a log line by accident.
#pragma once

#include <openssl/crypto.h>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <utility>
#include <vector>

namespace espgw::crypto {

class SecretBytes {
 public:
  SecretBytes() = default;
  explicit SecretBytes(std::span<const uint8_t> bytes) : v_(bytes.begin(), bytes.end()) {}
  SecretBytes(std::initializer_list<uint8_t> bytes) : v_(bytes) {}
  // Takes over a plain vector and wipes the caller's copy.
  static SecretBytes adopt(std::vector<uint8_t>& v) {
    SecretBytes s(v);
    wipe(v);
    return s;
  }
  SecretBytes(const SecretBytes& o) : v_(o.v_) {}
  SecretBytes(SecretBytes&& o) noexcept : v_(std::move(o.v_)) { o.v_.clear(); }
  SecretBytes& operator=(const SecretBytes& o) {
    if (this != &o) {
      clear();
      v_ = o.v_;
    }
    return *this;
  }
  SecretBytes& operator=(SecretBytes&& o) noexcept {
    if (this != &o) {
      clear();
      v_ = std::move(o.v_);
      o.v_.clear();
    }
    return *this;
  }
  ~SecretBytes() { clear(); }

  // Appends one byte. Reserve first when the size is known: a reallocation
  // wipes the old buffer before freeing it.
  void push_back(uint8_t b) {
    if (v_.size() == v_.capacity()) {
      std::vector<uint8_t> bigger;
      bigger.reserve(v_.empty() ? 64 : 2 * v_.capacity());
      bigger.assign(v_.begin(), v_.end());
      clear();
      v_ = std::move(bigger);
    }
    v_.push_back(b);
  }
  void reserve(size_t n) {
    if (n <= v_.capacity()) return;
    std::vector<uint8_t> bigger;
    bigger.reserve(n);
    bigger.assign(v_.begin(), v_.end());
    clear();
    v_ = std::move(bigger);
  }
  void clear() noexcept { wipe(v_); }

  size_t size() const { return v_.size(); }
  bool empty() const { return v_.empty(); }
  const uint8_t* data() const { return v_.data(); }
  std::span<const uint8_t> span() const { return {v_.data(), v_.size()}; }
  operator std::span<const uint8_t>() const { return span(); }
  uint8_t operator[](size_t i) const { return v_[i]; }
  const uint8_t* begin() const { return v_.data(); }
  const uint8_t* end() const { return v_.data() + v_.size(); }
  bool all_zero() const {
    uint8_t acc = 0;
    for (uint8_t b : v_) acc |= b;
    return acc == 0;
  }
  // Constant-time comparison (a different key under the same SPI is refused).
  bool equals(std::span<const uint8_t> o) const {
    return o.size() == v_.size() && (v_.empty() || CRYPTO_memcmp(v_.data(), o.data(), v_.size()) == 0);
  }

  // Constant time as well.
  bool operator==(const SecretBytes& o) const { return equals(o.span()); }

  // Wipes and empties a plain buffer that held key bytes (a socket's read
  // buffer, a JSON string, a netlink attribute copy).
  template <class Container>
  static void wipe(Container& c) noexcept {
    if (c.capacity()) OPENSSL_cleanse(c.data(), c.capacity() * sizeof(*c.data()));
    c.clear();
  }

 private:
  std::vector<uint8_t> v_;
};

}  // namespace espgw::crypto
