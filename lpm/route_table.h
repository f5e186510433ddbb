// espgw route table: prefix -> [(tunnel, priority)...] with the active next
// hop precomputed into a DIR-24-8 FIB that workers read without locks.
//
// Semantics (docs/routes.md has the long version):
//  * longest prefix first, then the lowest priority value among UP tunnels;
//    ties break by the order in which the next hops were configured;
//  * a prefix whose next hops are all down leaves the FIB, so the covering
//    prefix (or 0.0.0.0/0) answers; it comes back when a tunnel recovers;
//  * prefixes with host bits set (10.0.0.1/8) are REJECTED with RouteError,
//    like `ip route add`; nothing is normalised silently.
//
// FIB design, in short: our own DIR-24-8 (rte_lpm's rule table does a linear
// scan per add, 300k prefixes took 13 s here, so 1M cannot load in < 2 s).
// tbl24 entry (32 bit): bit 31 = extended; if extended, bits 0..23 are a tbl8
// group index; otherwise bits 16..21 = depth of the prefix that owns the
// entry and bits 0..15 = the tunnel id (kNoRoute when no prefix covers it).
// Every change is a sequence of single 32-bit atomic stores, each writing the
// final answer for the addresses of that entry, so a concurrent lookup
// returns either the old or the new answer. A new tbl8 group is filled before
// its tbl24 entry is published (release); a group that is no longer needed is
// unlinked first and reused only after an rte_rcu_qsbr grace period.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

struct rte_rcu_qsbr;

namespace espgw::lpm {

using TunnelId = uint16_t;  // 0 .. max_tunnels-1
inline constexpr TunnelId kNoRoute = 0xFFFF;

struct Prefix4 {
  uint32_t addr;  // host byte order
  uint8_t len;
  friend bool operator==(const Prefix4&, const Prefix4&) = default;
};

struct NextHop {
  TunnelId tunnel;
  uint32_t priority;  // lower value wins
  friend bool operator==(const NextHop&, const NextHop&) = default;
};

class RouteError : public std::runtime_error {
 public:
  using runtime_error::runtime_error;
};

namespace detail {
inline constexpr uint32_t kExt = 1u << 31;
inline constexpr uint32_t kGroupMask = 0x00FFFFFFu;
// The tbl24 read. The writer stores every entry with one aligned 32-bit
// atomic store; an aligned 32-bit load cannot tear on the targets DPDK
// supports, and the value is loaded once into a local. A plain load (what
// rte_lpm does) measured ~10% faster than a relaxed __atomic_load_n here,
// because GCC does not schedule atomics as freely; under TSan it is atomic.
// The tbl8 read depends on the tbl24 value (address dependency), which
// orders it after the writer's release store that published the group.
inline uint32_t load24(const uint32_t* p) {
#if defined(__SANITIZE_THREAD__)
  return __atomic_load_n(p, __ATOMIC_ACQUIRE);
#else
  return *p;
#endif
}
}  // namespace detail

// Worker side. Lock-free reads; safe while the control thread publishes.
// The reader must be registered with the RouteTableConfig::qsbr variable and
// report quiescent states between lookups (outside lookup_burst).
class Fib {
 public:
  // dst: IPv4 destinations in HOST byte order; out[i] = tunnel or kNoRoute.
  inline void lookup_burst(const uint32_t* dst, TunnelId* out, unsigned n) const;
  inline TunnelId lookup(uint32_t dst) const;

 private:
  friend class RouteTable;
  uint32_t* tbl24_ = nullptr;  // 1 << 24 entries
  uint32_t* tbl8_ = nullptr;   // tbl8_groups * 256 entries
};

inline TunnelId Fib::lookup(uint32_t dst) const {
  uint32_t e = detail::load24(&tbl24_[dst >> 8]);
  if (__builtin_expect((e & detail::kExt) != 0, 0))
    e = __atomic_load_n(
        &tbl8_[(static_cast<size_t>(e & detail::kGroupMask) << 8) | (dst & 0xFF)],
        __ATOMIC_RELAXED);
  return static_cast<TunnelId>(e);
}

inline void Fib::lookup_burst(const uint32_t* dst, TunnelId* out, unsigned n) const {
  // One pass like rte_lpm_lookup_bulk: the tbl24 loads are independent of
  // each other, so the out-of-order core overlaps their misses anyway; the
  // rare tbl8 load depends only on its own tbl24 entry.
  const uint32_t* t24 = tbl24_;
  const uint32_t* t8 = tbl8_;
  for (unsigned i = 0; i < n; i++) {
    const uint32_t a = dst[i];
    uint32_t v = detail::load24(&t24[a >> 8]);
    if (__builtin_expect((v & detail::kExt) != 0, 0))
      v = __atomic_load_n(&t8[(static_cast<size_t>(v & detail::kGroupMask) << 8) | (a & 0xFF)],
                          __ATOMIC_RELAXED);
    out[i] = static_cast<TunnelId>(v);
  }
}

struct RouteTableConfig {
  uint32_t max_routes = 1 << 20;  // 1M routes must fit
  uint16_t max_tunnels = 256;     // 1 .. 65535 (0xFFFF is kNoRoute)
  uint32_t max_priority = 65535;  // priorities 0..max_priority
  rte_rcu_qsbr* qsbr = nullptr;   // worker RCU; nullptr = no readers registered (tests, tools)
  const char* name = "espgw";     // DPDK object name prefix (unique per instance)
  // Number of tbl8 groups (1 KiB each), i.e. how many distinct /24s may hold
  // prefixes longer than /24. 0 = max_routes / 16, clamped to [256, 65536].
  uint32_t tbl8_groups = 0;
  int socket_id = -1;  // NUMA socket for the FIB tables (SOCKET_ID_ANY)
};

// Control side: the RIB. Single writer (the control thread). Every mutating
// call either succeeds and publishes, or throws RouteError with a precise
// message and changes nothing. Destroy it only after the workers stopped
// reading its fib().
class RouteTable {
 public:
  explicit RouteTable(const RouteTableConfig&);
  ~RouteTable();
  RouteTable(const RouteTable&) = delete;
  RouteTable& operator=(const RouteTable&) = delete;

  void add_tunnel(TunnelId id, bool up = true);  // error if it exists or id >= max_tunnels
  void remove_tunnel(TunnelId id);               // error while routes still use it
  void set_tunnel_up(TunnelId id, bool up);      // recompute ONLY affected prefixes and publish
  bool tunnel_up(TunnelId id) const;             // error if unknown
  bool has_tunnel(TunnelId id) const;

  void add_route(Prefix4 p, std::vector<NextHop> hops);      // error if exists
  void replace_route(Prefix4 p, std::vector<NextHop> hops);  // add or replace
  void delete_route(Prefix4 p);                              // error if missing
  // Appends (it is last in tie order); creates the route if it is missing.
  // Error on a duplicate tunnel in that route.
  void add_next_hop(Prefix4 p, NextHop h);
  // Error if the route or the hop is missing; removing the last hop deletes the route.
  void delete_next_hop(Prefix4 p, TunnelId t);

  struct RouteView {
    Prefix4 prefix;
    std::vector<NextHop> hops;  // configuration (tie-break) order
    TunnelId active;            // kNoRoute when every hop is down
  };
  std::vector<RouteView> list() const;  // sorted by (addr, len)
  const Fib& fib() const { return fib_; }
  size_t route_count() const { return count_; }

  struct Stats {
    size_t routes = 0;
    size_t installed = 0;          // routes with an up next hop (in the FIB)
    uint32_t tbl8_groups = 0;      // configured
    uint32_t tbl8_used = 0;        // linked into tbl24
    uint32_t tbl8_deferred = 0;    // unlinked, waiting for a grace period
    size_t fib_bytes = 0;          // tbl24 + tbl8 tables
    bool fib_in_dpdk_memory = false;  // rte_malloc (else anonymous mmap)
    uint64_t tbl8_retired = 0;     // groups collapsed and handed to RCU, total
    size_t last_examined = 0;      // routes recomputed by the last mutating call
    size_t last_republished = 0;   // routes whose FIB entries it rewrote
  };
  Stats stats() const;

  // Return unlinked tbl8 groups whose grace period is over to the free pool
  // (non-blocking). Mutating calls do this on their own; a control thread may
  // also call it from its idle loop.
  void reclaim();

 private:
  struct Hop {
    TunnelId tunnel;
    uint32_t priority;
    uint32_t tpos;  // index of this route in tunnels_[tunnel].routes
  };
  struct Route {
    uint32_t addr = 0;
    uint8_t len = 0;
    bool live = false;
    TunnelId active = kNoRoute;
    std::vector<Hop> hops;
  };
  struct Tunnel {
    bool known = false;
    bool up = false;
    std::vector<uint32_t> routes;  // one entry per (route, hop) using this tunnel
  };

  // Open-addressing (linear probing) index (addr, len) -> route id.
  uint32_t find(uint32_t addr, uint8_t len) const;
  void index_insert(uint32_t id);
  void index_erase(uint32_t id);
  size_t slot_of(uint32_t addr, uint8_t len) const;

  void validate_prefix(Prefix4 p) const;
  void validate_hops(Prefix4 p, const std::vector<NextHop>& hops) const;
  void check_capacity_for_new(Prefix4 p) const;
  TunnelId best_of(const Route& r) const;
  void link_hops(uint32_t id);
  void unlink_hops(uint32_t id);
  void unlink_hop(TunnelId t, uint32_t pos);
  uint32_t alloc_route_id();

  // FIB maintenance. All RIB state (actives) must be final before calling.
  void publish(uint32_t id, TunnelId old_active);
  void fib_write(uint32_t addr, uint8_t len, uint32_t entry, bool withdraw);
  void covering(uint32_t addr, uint8_t len, TunnelId& t, uint8_t& depth) const;
  uint32_t alloc_group();
  void defer_free_group(uint32_t g);

  RouteTableConfig cfg_;
  std::string name_;
  Fib fib_;
  size_t tbl24_bytes_ = 0, tbl8_bytes_ = 0;
  bool dpdk24_ = false, dpdk8_ = false;

  std::vector<Route> routes_;
  std::vector<uint32_t> free_ids_;
  size_t count_ = 0;
  size_t installed_ = 0;
  std::vector<uint32_t> slots_;  // route id + 1, 0 = empty
  uint32_t len_count_[33] = {};
  std::vector<Tunnel> tunnels_;
  // /24 -> number of routes longer than /24 inside it: each such /24 may
  // need one tbl8 group, reserved at add time so a tunnel-up never fails.
  std::unordered_map<uint32_t, uint32_t> long24_;

  std::vector<uint32_t> free_groups_;
  struct Deferred {
    uint32_t group;
    uint64_t token;
  };
  std::deque<Deferred> deferred_;
  uint32_t groups_used_ = 0;
  uint64_t retired_total_ = 0;
  size_t last_examined_ = 0, last_republished_ = 0;
};

std::string to_string(Prefix4);
// "10.0.0.0/8"; a bare address means /32. Throws RouteError on bad syntax,
// length > 32 or host bits set.
Prefix4 parse_prefix4(std::string_view);
// Mask for a prefix length 0..32 (0 for /0).
inline constexpr uint32_t prefix_mask(uint8_t len) {
  return len == 0 ? 0u : ~0u << (32 - len);
}

}  // namespace espgw::lpm
