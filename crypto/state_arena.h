// Where per-SA state lives: the state workers read for every packet
// (AeadContext's key schedule, dataplane/sa.h's SAs), allocated by the
// control thread from one arena of transparent huge pages.
//
// Why: with thousands of SAs and a random SA per packet, each packet touches
// an SA and ~7 lines of key state spread over megabytes. On the glibc heap
// those are 4 KB pages, so the lines come with TLB misses on top of cache
// misses (10,000 SAs outbound: ~60 cycles per packet, bench/README.md). The
// arena is mmap'ed in 64 MB chunks with MADV_HUGEPAGE (Linux's THP in its
// default "madvise" mode honours it), so 10,000 SAs' state needs ~12 TLB
// entries instead of ~6,000.
//
// Blocks are cache-line aligned and kept on one free list per size, so a
// freed SA's block is reused by the next SA of that size: churn does not grow
// the arena (glibc's memalign, which never reused a freed aligned block, grew
// the heap ~1.4 KB per SA installed: issue 12's soak). Arena memory is never
// returned to the system. Objects over kMaxObject, and every object in a
// sanitizer build (so that ASan still sees each SA's use after free), come
// from malloc instead.
#pragma once

#include <cstddef>
#include <new>

namespace espgw::crypto {

class StateArena {
 public:
  static constexpr std::size_t kAlign = 64;
  static constexpr std::size_t kMaxObject = 64 * 1024;
  // Cache-line aligned; throws std::bad_alloc. Thread-safe (a mutex: the
  // control side allocates, never a worker).
  static void* allocate(std::size_t n);
  // n: the size given to allocate().
  static void deallocate(void* p, std::size_t n) noexcept;

  struct Stats {
    std::size_t reserved;  // bytes mapped for the arena
    std::size_t carved;    // bytes handed out at least once (in use + on free lists)
    std::size_t in_use;    // bytes allocated and not freed
  };
  static Stats stats();
  // Whether allocate() uses the arena (false in sanitizer builds: malloc).
  static bool enabled();
};

// A base class that puts its derived objects in the StateArena.
struct InStateArena {
  static void* operator new(std::size_t n) { return StateArena::allocate(n); }
  static void* operator new(std::size_t n, std::align_val_t) { return StateArena::allocate(n); }
  static void operator delete(void* p, std::size_t n) noexcept { StateArena::deallocate(p, n); }
  static void operator delete(void* p, std::size_t n, std::align_val_t) noexcept { StateArena::deallocate(p, n); }
};

}  // namespace espgw::crypto
