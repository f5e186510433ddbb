// Per-port neighbour tables: which MAC a packet leaving a port is sent to.
//
// Each port has its connected subnets (from `addresses: [a.b.c.d/len]`), an
// optional default gateway, static entries, and a fixed open-addressing
// table of per-destination entries resolved by ARP. Lock-free: a slot is
// claimed with one compare-and-swap on its IP (any worker, on first use) and
// never moves while it holds that IP; a MAC is one atomic 64-bit word; workers learn MACs from ARP
// with plain atomic stores (every writer stores the same value for the same
// sender); worker 0 alone sends the ARP requests and ages entries. No
// allocation and no lock on the hot path; a full table drops and counts
// (no_neighbor). Each entry holds up to kHoldPackets packets while its MAC
// is being resolved (claimed with a compare-and-swap, sent by whichever
// worker learns the MAC, dropped as no_neighbor after kArpRetries
// unanswered requests); more are dropped and counted as no_neighbor.
//
// Slots are reclaimed (worker 0, arp.h): a failed entry, and an entry no
// packet needed for a while, is retired (its IP word becomes kSlotDying, so
// no new lookup finds it, and probe chains through it stay intact); once
// every worker has reported a quiescent state since (rte_rcu_qsbr on
// Dataplane::qsbr), no worker still holds a pointer to it, and it is reset
// and becomes kSlotReusable, which the next new address may claim.
#pragma once

#include <atomic>
#include <cstdint>

struct rte_mbuf;

namespace espgw::dataplane {

inline constexpr uint32_t kNeighborSlots = 1024;  // per port; a power of two
inline constexpr uint32_t kNeighborProbe = 32;    // linear probing limit
inline constexpr uint8_t kMaxSubnets = 8;
inline constexpr uint32_t kArpRetries = 3;        // unanswered requests before an entry is failed
inline constexpr uint32_t kHoldPackets = 4;       // packets an unresolved entry keeps

// A learned or configured MAC: 48 bits, bit 63 set when valid. One 64-bit
// atomic so a worker never reads half a MAC.
inline constexpr uint64_t kMacValid = 1ull << 63;

// IP words of slots that hold no address. 0: never used (ends a probe
// chain). The other two sit in class E space (240/4: no host, never on a
// link), which neighbor_find_or_add refuses as an address.
inline constexpr uint32_t kSlotDying = 0xFFFFFFFEu;     // retired, readers may still hold it
inline constexpr uint32_t kSlotReusable = 0xFFFFFFFFu;  // retired and past a grace period
inline constexpr uint32_t kFirstReservedIp = 0xF0000000u;

struct NeighborEntry {
  std::atomic<uint32_t> ip{0};                // host order; 0 = free slot (or the anonymous gateway)
  std::atomic<uint64_t> mac{0};               // kMacValid | MAC; 0 = unresolved
  std::atomic<uint64_t> confirmed_tsc{0};     // last ARP heard from it (0: never)
  std::atomic<uint64_t> used_tsc{0};          // last time a packet needed it (coarse: ~1/16 s)
  std::atomic<uint64_t> last_request_tsc{0};  // ARP request pacing (worker 0)
  std::atomic<uint32_t> unanswered{0};        // requests since the last confirmation
  std::atomic<bool> is_static{false};
  std::atomic<uint64_t> retire_token{0};      // RCU token taken when retired (worker 0)
  std::atomic<rte_mbuf*> held[kHoldPackets] = {};  // Ethernet header in place, destination MAC to fill
};

struct NeighborTable {
  uint8_t nb_subnets = 0;
  uint32_t subnet[kMaxSubnets] = {};  // connected prefixes, host order
  uint32_t mask[kMaxSubnets] = {};
  uint32_t subnet_src[kMaxSubnets] = {};  // our address on that subnet (ARP requests come from it)
  uint64_t reachable_tsc = 0;         // a confirmed MAC is trusted this long, then re-ARPed
  NeighborEntry* gateway = nullptr;   // default next hop (a slot, or anon_gateway); nullptr = none
  NeighborEntry anon_gateway;         // a gateway known by MAC only (legacy `peer_mac` without `peer_ip`)
  std::atomic<uint32_t> nb_used{0};   // slots taken (dying ones included)
  NeighborEntry slots[kNeighborSlots];
};

inline uint64_t pack_mac_bytes(const uint8_t* b) {
  uint64_t v = 0;
  for (int i = 0; i < 6; i++) v |= uint64_t(b[i]) << (8 * i);
  return v | kMacValid;
}

inline bool on_link(const NeighborTable& t, uint32_t a) {
  for (uint8_t i = 0; i < t.nb_subnets; i++)
    if ((a & t.mask[i]) == t.subnet[i]) return true;
  return false;
}

// The subnet-directed broadcast of a connected prefix (RFC 1812 §4.2.3.1):
// not a host, never resolved, never answered with an ICMP error.
inline bool is_directed_broadcast(const NeighborTable& t, uint32_t a) {
  for (uint8_t i = 0; i < t.nb_subnets; i++)
    if (t.mask[i] != 0xFFFFFFFFu && t.mask[i] != 0xFFFFFFFEu && (a & t.mask[i]) == t.subnet[i] &&
        (a | t.mask[i]) == 0xFFFFFFFFu)
      return true;
  return false;
}

// Our address on `a`'s subnet, or 0.
inline uint32_t source_for(const NeighborTable& t, uint32_t a) {
  for (uint8_t i = 0; i < t.nb_subnets; i++)
    if ((a & t.mask[i]) == t.subnet[i]) return t.subnet_src[i];
  return 0;
}

inline uint32_t neighbor_hash(uint32_t ip) { return (ip * 2654435761u) >> 22; }  // 10 bits: kNeighborSlots
static_assert(kNeighborSlots == 1024);

inline NeighborEntry* neighbor_find(NeighborTable& t, uint32_t ip) {
  if (ip == 0 || ip >= kFirstReservedIp) return nullptr;  // not addresses: the free-slot markers
  uint32_t h = neighbor_hash(ip);
  for (uint32_t i = 0; i < kNeighborProbe; i++) {
    NeighborEntry& e = t.slots[(h + i) & (kNeighborSlots - 1)];
    uint32_t v = e.ip.load(std::memory_order_acquire);
    if (v == ip) return &e;
    if (v == 0) return nullptr;  // a slot never used ends the probe chain (retired ones do not)
  }
  return nullptr;
}

// Finds or claims the slot of `ip`; nullptr when its probe chain is full
// (or `ip` is reserved). The whole chain is searched before a reusable slot
// is claimed, so an address lives in one slot.
inline NeighborEntry* neighbor_find_or_add(NeighborTable& t, uint32_t ip) {
  if (ip == 0 || ip >= kFirstReservedIp) return nullptr;
  uint32_t h = neighbor_hash(ip);
  for (int attempt = 0; attempt < 4; attempt++) {
    NeighborEntry* free_slot = nullptr;
    uint32_t free_word = 0;
    for (uint32_t i = 0; i < kNeighborProbe; i++) {
      NeighborEntry& e = t.slots[(h + i) & (kNeighborSlots - 1)];
      uint32_t v = e.ip.load(std::memory_order_acquire);
      if (v == ip) return &e;
      if (v == kSlotReusable && free_slot == nullptr) {
        free_slot = &e;
        free_word = v;
      }
      if (v == 0) {
        if (free_slot == nullptr) {
          free_slot = &e;
          free_word = 0;
        }
        break;
      }
    }
    if (free_slot == nullptr) return nullptr;
    uint32_t expected = free_word;
    if (free_slot->ip.compare_exchange_strong(expected, ip, std::memory_order_acq_rel)) {
      t.nb_used.fetch_add(1, std::memory_order_relaxed);
      return free_slot;
    }
    if (expected == ip) return free_slot;  // another worker claimed it for the same address
    // Claimed for another address (or retired) meanwhile: search again.
  }
  return nullptr;
}

// Marks an entry as needed now (worker 0 resolves or refreshes needed
// entries); one store per ~60 ms at most, so workers do not bounce the line.
inline void neighbor_touch(NeighborEntry& e, uint64_t now, uint64_t tsc_hz) {
  if (now - e.used_tsc.load(std::memory_order_relaxed) > (tsc_hz >> 4)) e.used_tsc.store(now, std::memory_order_relaxed);
}

enum class NextHop : uint8_t { kResolved, kUnresolved, kNoRoute };

// The MAC a packet to `dst` leaves this port with: `dst` itself when it is
// on-link, else the port's gateway (a port without connected subnets sends
// everything to its gateway, as before subnets existed).
inline NextHop neighbor_lookup(NeighborTable& t, uint32_t dst, uint64_t now, uint64_t tsc_hz, uint64_t* mac,
                               NeighborEntry** entry = nullptr) {
  NeighborEntry* e;
  if (t.nb_subnets != 0 && on_link(t, dst)) {
    if (is_directed_broadcast(t, dst)) return NextHop::kNoRoute;
    e = neighbor_find(t, dst);
    if (e == nullptr) e = neighbor_find_or_add(t, dst);
    if (e == nullptr) return NextHop::kUnresolved;  // table full around this slot
  } else {
    e = t.gateway;
    if (e == nullptr) return NextHop::kNoRoute;
  }
  neighbor_touch(*e, now, tsc_hz);
  if (entry) *entry = e;
  *mac = e->mac.load(std::memory_order_acquire);
  return (*mac & kMacValid) ? NextHop::kResolved : NextHop::kUnresolved;
}

// An ARP packet from `ip` (a host) with `mac`: refresh its entry (and create
// it when `create`, i.e. the ARP was addressed to us and `ip` is on-link).
// Returns the entry updated, or nullptr.
inline NeighborEntry* neighbor_learn(NeighborTable& t, uint32_t ip, uint64_t mac, bool create, uint64_t now) {
  NeighborEntry* e = neighbor_find(t, ip);
  if (e == nullptr && create && on_link(t, ip)) e = neighbor_find_or_add(t, ip);
  if (e == nullptr || e->is_static.load(std::memory_order_relaxed)) return nullptr;
  e->confirmed_tsc.store(now, std::memory_order_relaxed);
  e->unanswered.store(0, std::memory_order_relaxed);
  e->mac.store(mac, std::memory_order_release);
  return e;
}

}  // namespace espgw::dataplane
