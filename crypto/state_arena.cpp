// The per-SA state arena (state_arena.h).
#include "crypto/state_arena.h"

#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <unordered_map>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define ESPGW_STATE_ARENA_MALLOC 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define ESPGW_STATE_ARENA_MALLOC 1
#endif
#endif

namespace espgw::crypto {

namespace {

constexpr std::size_t kChunk = std::size_t{64} << 20;
constexpr std::size_t kHugePage = std::size_t{2} << 20;

std::size_t round_up(std::size_t n, std::size_t a) { return (n + a - 1) & ~(a - 1); }

// Aligned by hand inside a plain malloc block (glibc's memalign would never
// reuse the block; see the header).
void* malloc_aligned(std::size_t n) {
  void* raw = std::malloc(n + StateArena::kAlign + sizeof(void*));
  if (raw == nullptr) throw std::bad_alloc();
  auto p = round_up(reinterpret_cast<std::uintptr_t>(raw) + sizeof(void*), StateArena::kAlign);
  reinterpret_cast<void**>(p)[-1] = raw;
  return reinterpret_cast<void*>(p);
}
void free_aligned(void* p) noexcept {
  if (p != nullptr) std::free(static_cast<void**>(p)[-1]);
}

struct Arena {
  std::mutex mu;
  char* next = nullptr;  // bump pointer in the current chunk
  char* end = nullptr;
  std::unordered_map<std::size_t, void*> free_list;  // block size -> first free block (linked through its first word)
  std::size_t reserved = 0, carved = 0, in_use = 0;

  void* allocate(std::size_t size) {
    std::lock_guard lock(mu);
    void*& head = free_list[size];
    if (head != nullptr) {
      void* p = head;
      head = *static_cast<void**>(p);
      in_use += size;
      return p;
    }
    if (next == nullptr || static_cast<std::size_t>(end - next) < size) grow();
    void* p = next;
    next += size;
    carved += size;
    in_use += size;
    return p;
  }
  void deallocate(void* p, std::size_t size) noexcept {
    std::lock_guard lock(mu);
    void*& head = free_list[size];  // the size's list exists: its block was allocated
    *static_cast<void**>(p) = head;
    head = p;
    in_use -= size;
  }
  // A new chunk on a huge-page boundary (the rest of the old one is left).
  void grow() {
    void* m = mmap(nullptr, kChunk + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) throw std::bad_alloc();
    char* base = reinterpret_cast<char*>(round_up(reinterpret_cast<std::uintptr_t>(m), kHugePage));
    // A hint: without THP (or with it off) the arena still works on 4 KB pages.
    (void)madvise(base, kChunk, MADV_HUGEPAGE);
    next = base;
    end = base + kChunk;
    reserved += kChunk + kHugePage;
  }
};

// Never destroyed: SAs may be freed during static destruction.
Arena& arena() {
  static Arena* a = new Arena;
  return *a;
}

}  // namespace

bool StateArena::enabled() {
#ifdef ESPGW_STATE_ARENA_MALLOC
  return false;
#else
  return true;
#endif
}

void* StateArena::allocate(std::size_t n) {
  const std::size_t size = round_up(n == 0 ? 1 : n, kAlign);
  if (!enabled() || size > kMaxObject) return malloc_aligned(size);
  return arena().allocate(size);
}

void StateArena::deallocate(void* p, std::size_t n) noexcept {
  if (p == nullptr) return;
  const std::size_t size = round_up(n == 0 ? 1 : n, kAlign);
  if (!enabled() || size > kMaxObject) return free_aligned(p);
  arena().deallocate(p, size);
}

StateArena::Stats StateArena::stats() {
  if (!enabled()) return {0, 0, 0};
  Arena& a = arena();
  std::lock_guard lock(a.mu);
  return {a.reserved, a.carved, a.in_use};
}

}  // namespace espgw::crypto
