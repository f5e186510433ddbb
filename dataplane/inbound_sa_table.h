// The inbound SA table, (SPI, outer destination) -> InboundSa*: read by the
// workers without locks, written by the control thread alone.
//
// Open addressing with linear probing over 16-byte slots (the key word, the
// SA pointer), hashed with CRC32-C (one instruction for the 8-byte key)
// under a random seed per array (the peer picks the SPIs it sends, we pick
// the ones we install; neither can aim at a cluster it cannot see). It
// replaced DPDK's lock-free rte_hash: with a different SA per packet its bulk
// lookup cost ~155 instructions per packet (signatures, the compare callback,
// the lock-free change counter; callgrind, 1,000 SAs), a probe here ~15.
//
// Why lock-free readers are safe:
// - an insert writes the SA pointer, then publishes the key (release); a
//   reader that sees the key (acquire) sees the pointer;
// - an update of an existing key (a rekey's handover) is one pointer store;
// - a delete clears the pointer, then marks the slot deleted; the slot can
//   be claimed by another key only after reclaim(), which the caller calls
//   after an RCU grace period: a reader never matches a key and then reads
//   another key's SA;
// - the slot array is replaced (compact()) only by publishing a new array
//   and freeing the old one after a grace period.
// Probes end at a never-used slot. Deleted slots do not end a probe, so they
// are counted with the live ones: when the used slots pass half of the
// array, compact() rebuilds it with the live keys only (the caller frees the
// old array after a grace period). At most a quarter of the slots are live,
// so a lookup of an unknown SPI (a flood of them included) stops after ~2.5
// slots on average.
#pragma once

#include <rte_hash_crc.h>
#include <rte_malloc.h>
#include <rte_prefetch.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <random>
#include <stdexcept>
#include <vector>

namespace espgw::dataplane {

struct InboundSa;

// What the wire gives us (RFC 4301 §4.1: the SPI, and the destination
// address since SPIs are chosen per receiver address).
struct InboundKey {
  uint32_t spi;
  uint32_t dst;
};
static_assert(sizeof(InboundKey) == 8);

// The key as the one word the table compares.
inline uint64_t inbound_key_word(const InboundKey& k) {
  uint64_t v;
  memcpy(&v, &k, sizeof(v));
  return v;
}

class InboundSaTable {
 public:
  struct Slot {
    std::atomic<uint64_t> key;
    std::atomic<InboundSa*> sa;
  };
  static_assert(sizeof(Slot) == 16);
  struct Array {
    uint32_t mask;  // slots - 1
    uint32_t seed;  // of the hash, random per array: where keys cluster is not predictable
    Slot* slot;     // in the same allocation, after this header
  };
  struct ArrayFree {
    void operator()(Array* a) const { rte_free(a); }
  };
  using ArrayPtr = std::unique_ptr<Array, ArrayFree>;

  // Keys with SPI 0 never name an SA (RFC 4303 §2.1: SPI 0 is never sent),
  // so they mark the slots' states. A lookup of such a key matches at most
  // a marker slot, whose SA pointer is null: a miss.
  static constexpr uint64_t kEmpty = 0;                     // never used: ends a probe
  static constexpr uint64_t kDeleted = uint64_t{1} << 32;   // deleted, a reader may still match it
  static constexpr uint64_t kFree = uint64_t{2} << 32;      // deleted a grace period ago: claimable

  // Room for max_entries SAs at a quarter of the array (max_entries <= 2^28).
  // Throws std::bad_alloc when the memory is not there.
  InboundSaTable(uint32_t max_entries, int socket) : socket_(socket), max_(max_entries) {
    uint32_t slots = 64;
    while (slots < 4 * uint64_t{max_entries}) slots *= 2;
    cur_.store(allocate(slots).release(), std::memory_order_relaxed);
  }
  ~InboundSaTable() { ArrayPtr(cur_.load(std::memory_order_relaxed)); }
  InboundSaTable(const InboundSaTable&) = delete;
  InboundSaTable& operator=(const InboundSaTable&) = delete;

  // --- workers -------------------------------------------------------------
  // The array to use for one burst (no array outlives the quiescent state a
  // worker reports after each poll iteration).
  const Array* array() const { return cur_.load(std::memory_order_acquire); }
  static uint32_t hash(const Array* a, uint64_t key) { return rte_hash_crc_8byte(key, a->seed); }
  static void prefetch(const Array* a, uint32_t h) { rte_prefetch0(&a->slot[h & a->mask]); }
  static InboundSa* find(const Array* a, uint64_t key, uint32_t h) {
    for (uint32_t i = h & a->mask;; i = (i + 1) & a->mask) {
      const uint64_t k = a->slot[i].key.load(std::memory_order_acquire);
      if (k == key) return a->slot[i].sa.load(std::memory_order_acquire);
      if (k == kEmpty) return nullptr;
    }
  }
  InboundSa* lookup(const InboundKey& k) const {
    const uint64_t w = inbound_key_word(k);
    const Array* a = array();
    return find(a, w, hash(a, w));
  }

  // --- the control thread --------------------------------------------------
  // Inserts `k`, or points an existing `k` at `sa` (nullptr: lookups miss,
  // the key stays). Throws std::invalid_argument for SPI 0 and
  // std::length_error beyond max_entries SAs.
  void set(const InboundKey& k, InboundSa* sa) {
    if (k.spi == 0) throw std::invalid_argument("inbound SA table: SPI 0 is reserved");
    const uint64_t w = inbound_key_word(k);
    Array* a = cur_.load(std::memory_order_relaxed);
    uint32_t claim = UINT32_MAX;
    uint32_t i = hash(a, w) & a->mask;
    for (;; i = (i + 1) & a->mask) {
      const uint64_t s = a->slot[i].key.load(std::memory_order_relaxed);
      if (s == w) {
        a->slot[i].sa.store(sa, std::memory_order_release);
        return;
      }
      if (s == kFree && claim == UINT32_MAX) claim = i;
      if (s == kEmpty) break;
    }
    if (live_ >= max_) throw std::length_error("inbound SA table: full");
    if (claim == UINT32_MAX) {
      claim = i;
      used_++;
    }
    a->slot[claim].sa.store(sa, std::memory_order_relaxed);
    a->slot[claim].key.store(w, std::memory_order_release);
    live_++;
  }
  // Lookups of `k` miss from now on. Its slot is claimable after the next
  // reclaim(). Returns whether `k` was there.
  bool erase(const InboundKey& k) {
    const uint64_t w = inbound_key_word(k);
    if (k.spi == 0) return false;
    Array* a = cur_.load(std::memory_order_relaxed);
    for (uint32_t i = hash(a, w) & a->mask;; i = (i + 1) & a->mask) {
      const uint64_t s = a->slot[i].key.load(std::memory_order_relaxed);
      if (s == kEmpty) return false;
      if (s != w) continue;
      a->slot[i].sa.store(nullptr, std::memory_order_release);
      a->slot[i].key.store(kDeleted, std::memory_order_release);
      pending_.push_back(i);
      live_--;
      return true;
    }
  }
  // After a grace period that began after the erase()s: their slots may be
  // claimed by other keys.
  void reclaim() {
    Array* a = cur_.load(std::memory_order_relaxed);
    for (uint32_t i : pending_) a->slot[i].key.store(kFree, std::memory_order_relaxed);
    pending_.clear();
  }
  // Whether deleted slots have filled the array enough to rebuild it.
  bool wants_compaction() const { return used_ * 2 > cur_.load(std::memory_order_relaxed)->mask + 1; }
  // Publishes a rebuilt array holding the live keys only and returns the old
  // one, for the caller to free after a grace period (workers may still
  // probe it). Throws std::bad_alloc (the table is then unchanged).
  ArrayPtr compact() {
    Array* old = cur_.load(std::memory_order_relaxed);
    ArrayPtr next = allocate(old->mask + 1);
    uint32_t used = 0;
    for (uint32_t i = 0; i <= old->mask; i++) {
      const uint64_t w = old->slot[i].key.load(std::memory_order_relaxed);
      if (w == kEmpty || w == kDeleted || w == kFree) continue;
      uint32_t j = hash(next.get(), w) & next->mask;
      while (next->slot[j].key.load(std::memory_order_relaxed) != kEmpty) j = (j + 1) & next->mask;
      next->slot[j].sa.store(old->slot[i].sa.load(std::memory_order_relaxed), std::memory_order_relaxed);
      next->slot[j].key.store(w, std::memory_order_relaxed);
      used++;
    }
    cur_.store(next.release(), std::memory_order_release);
    used_ = used;
    pending_.clear();  // deleted slots are not in the new array
    return ArrayPtr(old);
  }
  uint32_t size() const { return live_; }
  uint32_t slots() const { return cur_.load(std::memory_order_relaxed)->mask + 1; }
  uint32_t used_slots() const { return used_; }  // live, deleted and claimable

 private:
  ArrayPtr allocate(uint32_t slots) const {
    const size_t bytes = RTE_CACHE_LINE_SIZE + size_t{slots} * sizeof(Slot);
    void* mem = rte_zmalloc_socket("espgw_inbound_sa", bytes, RTE_CACHE_LINE_SIZE, socket_);
    if (mem == nullptr) throw std::bad_alloc();
    std::random_device rd;
    auto* a = new (mem) Array{slots - 1, rd(), reinterpret_cast<Slot*>(static_cast<char*>(mem) + RTE_CACHE_LINE_SIZE)};
    for (uint32_t i = 0; i < slots; i++) new (&a->slot[i]) Slot{{kEmpty}, {nullptr}};
    return ArrayPtr(a);
  }

  std::atomic<Array*> cur_{nullptr};
  int socket_;
  uint32_t max_;
  uint32_t live_ = 0;
  uint32_t used_ = 0;  // slots not kEmpty
  std::vector<uint32_t> pending_;  // erased since the last reclaim()
};

}  // namespace espgw::dataplane
