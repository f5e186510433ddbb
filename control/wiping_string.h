// A std::string whose storage is cleansed whenever it is freed or
// reallocated: for buffers that may hold key material in text form (the
// control socket's read buffer and request lines). Growth by append() would
// otherwise leave copies of a key in freed heap memory.
#pragma once

#include <openssl/crypto.h>

#include <cstddef>
#include <memory>
#include <string>

namespace espgw::control {

template <class T>
struct WipingAllocator {
  using value_type = T;
  WipingAllocator() noexcept = default;
  template <class U>
  WipingAllocator(const WipingAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) { return std::allocator<T>{}.allocate(n); }
  void deallocate(T* p, std::size_t n) noexcept {
    OPENSSL_cleanse(p, n * sizeof(T));
    std::allocator<T>{}.deallocate(p, n);
  }
  template <class U>
  bool operator==(const WipingAllocator<U>&) const noexcept {
    return true;
  }
};

using WipingString = std::basic_string<char, std::char_traits<char>, WipingAllocator<char>>;

}  // namespace espgw::control
