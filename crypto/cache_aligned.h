// Heap objects aligned to cache lines, for the per-SA state workers read
// (AeadContext here, the SAs in dataplane/sa.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>

namespace espgw::crypto {

// A base class whose over-aligned operator new aligns by hand inside a plain
// malloc block. glibc 2.36's memalign asks for size + alignment and so never
// reuses the chunk a freed block leaves: that grew the heap ~1.4 KB per SA
// installed (issue 12's soak). Blocks of one size are reused.
struct CacheAligned {
  static void* operator new(std::size_t n, std::align_val_t al) {
    const auto a = static_cast<std::size_t>(al);
    void* raw = std::malloc(n + a + sizeof(void*));
    if (raw == nullptr) throw std::bad_alloc();
    auto p = (reinterpret_cast<std::uintptr_t>(raw) + sizeof(void*) + a - 1) & ~(std::uintptr_t{a} - 1);
    reinterpret_cast<void**>(p)[-1] = raw;
    return reinterpret_cast<void*>(p);
  }
  static void operator delete(void* p, std::align_val_t) noexcept {
    if (p != nullptr) std::free(static_cast<void**>(p)[-1]);
  }
};

}  // namespace espgw::crypto
