// Route table (RIB) and its DIR-24-8 FIB. See route_table.h and docs/routes.md.
//
// Why not rte_lpm / rte_fib (measured, DPDK 22.11 on this machine):
//  * rte_lpm's rule table checks for an existing rule with a linear scan of
//    all rules of that depth, so loading N prefixes is O(N^2): 100k prefixes
//    took 2.2 s, 300k took 12.9 s; 1M (60% /24) would take minutes, far over
//    the 2 s budget. Its tbl24/tbl8 lookup and update scheme is sound, and we
//    keep it: per-entry depth, in-place 32-bit stores, tbl8 groups published
//    by a release store and reclaimed after an RCU grace period.
//  * rte_fib (DIR24_8 + rte_rib, fast loads) has no RCU hook in 22.11: a freed
//    tbl8 group is reused at once, so a worker that read the old tbl24 entry
//    could read another /24's next hop. Unsafe with concurrent readers.
// So the FIB is ours, with the RIB indexed by a hash of (addr, len): loading
// is O(N) and failover writes only the entries of the affected prefixes.
//
// Safety argument (single writer, lock-free readers):
//  1. Every FIB change is a sequence of aligned 32-bit atomic stores; a
//     reader's lookup reads one tbl24 entry and at most one tbl8 entry.
//  2. The writer updates every route's active tunnel in the RIB first and
//     only then writes the FIB, so each store writes the final answer (in the
//     new state) for all addresses that entry covers: an install/change
//     writes the prefix's new tunnel over entries owned by it or by shorter
//     prefixes (depth <= len), a withdrawal writes the covering prefix's new
//     answer over entries owned by the withdrawn prefix (depth == len). A
//     concurrent lookup returns the old or the new answer, never a mix of
//     unrelated values. A tunnel change is never a delete+add.
//  3. A new tbl8 group is completely filled (copy of the tbl24 entry, then
//     the new prefix's range) before the tbl24 entry pointing at it is
//     stored with release order; the reader's tbl8 load depends on the tbl24 value it read (address dependency, as in rte_lpm).
//  4. A group that no longer holds prefixes longer than /24 is collapsed: the
//     tbl24 entry gets the group's (uniform) answer first, then the group goes
//     on a deferred list tagged with rte_rcu_qsbr_start(). It is reused only
//     after rte_rcu_qsbr_check() reports every registered reader passed a
//     quiescent state, so no reader still holds the old tbl24 value. Readers
//     report quiescence between bursts, never inside lookup_burst.
#include "lpm/route_table.h"

#include <rte_malloc.h>
#include <rte_rcu_qsbr.h>
#include <sys/mman.h>

#include <algorithm>
#include <charconv>
#include <cstring>

namespace espgw::lpm {
namespace {

using detail::kExt;
using detail::kGroupMask;

constexpr uint32_t kNone = UINT32_MAX;
constexpr size_t kTbl24Entries = size_t{1} << 24;
constexpr uint32_t kGroupEntries = 256;

constexpr uint32_t make_entry(TunnelId t, uint8_t depth) {
  return (static_cast<uint32_t>(depth) << 16) | t;
}
constexpr uint8_t depth_of(uint32_t e) { return static_cast<uint8_t>((e >> 16) & 0x3F); }

void* table_alloc(const std::string& type, size_t bytes, int socket, bool& dpdk) {
  void* p = rte_malloc_socket(type.c_str(), bytes, RTE_CACHE_LINE_SIZE, socket);
  if (p != nullptr) {
    dpdk = true;
    return p;
  }
  // EAL not initialised (tools, some tests) or its heap is too small.
  p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    throw RouteError("route table: cannot allocate " + std::to_string(bytes >> 20) +
                     " MiB for the FIB");
  madvise(p, bytes, MADV_HUGEPAGE);
  dpdk = false;
  return p;
}

void table_free(void* p, size_t bytes, bool dpdk) {
  if (p == nullptr) return;
  if (dpdk)
    rte_free(p);
  else
    munmap(p, bytes);
}

}  // namespace

// ---------------------------------------------------------------- strings

std::string to_string(Prefix4 p) {
  char buf[24];
  snprintf(buf, sizeof buf, "%u.%u.%u.%u/%u", p.addr >> 24, (p.addr >> 16) & 0xFF,
           (p.addr >> 8) & 0xFF, p.addr & 0xFF, static_cast<unsigned>(p.len));
  return buf;
}

Prefix4 parse_prefix4(std::string_view s) {
  const std::string orig(s);
  auto bad = [&](const char* why) {
    return RouteError("bad prefix '" + orig + "': " + why + " (expected A.B.C.D/LEN)");
  };
  auto number = [&](std::string_view& rest, unsigned max, const char* what) {
    size_t n = 0;
    while (n < rest.size() && rest[n] >= '0' && rest[n] <= '9') n++;
    if (n == 0) throw bad(what);
    if (n > 1 && rest[0] == '0') throw bad("leading zero");
    if (n > 3) throw bad("number too long");
    unsigned v = 0;
    std::from_chars(rest.data(), rest.data() + n, v);
    if (v > max) throw bad(max == 255 ? "octet > 255" : "length > 32");
    rest.remove_prefix(n);
    return v;
  };
  std::string_view rest = s;
  uint32_t addr = 0;
  for (int i = 0; i < 4; i++) {
    addr = (addr << 8) | number(rest, 255, "missing octet");
    if (i < 3) {
      if (rest.empty() || rest[0] != '.') throw bad("missing '.'");
      rest.remove_prefix(1);
    }
  }
  uint8_t len = 32;
  if (!rest.empty()) {
    if (rest[0] != '/') throw bad("junk after address");
    rest.remove_prefix(1);
    len = static_cast<uint8_t>(number(rest, 32, "missing length"));
    if (!rest.empty()) throw bad("junk after length");
  }
  Prefix4 p{addr, len};
  if ((addr & ~prefix_mask(len)) != 0)
    throw RouteError("bad prefix '" + orig + "': host bits set (did you mean " +
                     to_string(Prefix4{addr & prefix_mask(len), len}) + "?)");
  return p;
}

// ---------------------------------------------------------------- lifetime

RouteTable::RouteTable(const RouteTableConfig& cfg) : cfg_(cfg), name_(cfg.name ? cfg.name : "espgw") {
  cfg_.name = name_.c_str();
  if (cfg_.max_routes == 0) throw RouteError("route table: max_routes must be > 0");
  if (cfg_.max_tunnels == 0) throw RouteError("route table: max_tunnels must be > 0");
  if (cfg_.tbl8_groups == 0)
    cfg_.tbl8_groups = std::clamp<uint32_t>(cfg_.max_routes / 16, 256, 65536);
  if (cfg_.tbl8_groups > (1u << 22))
    throw RouteError("route table: tbl8_groups " + std::to_string(cfg_.tbl8_groups) +
                     " too large (max 4194304)");

  tbl24_bytes_ = kTbl24Entries * sizeof(uint32_t);
  tbl8_bytes_ = size_t{cfg_.tbl8_groups} * kGroupEntries * sizeof(uint32_t);
  fib_.tbl24_ = static_cast<uint32_t*>(table_alloc(name_ + "_tbl24", tbl24_bytes_, cfg_.socket_id, dpdk24_));
  try {
    fib_.tbl8_ = static_cast<uint32_t*>(table_alloc(name_ + "_tbl8", tbl8_bytes_, cfg_.socket_id, dpdk8_));
  } catch (...) {
    table_free(fib_.tbl24_, tbl24_bytes_, dpdk24_);
    throw;
  }
  std::fill_n(fib_.tbl24_, kTbl24Entries, make_entry(kNoRoute, 0));
  std::memset(fib_.tbl8_, 0, tbl8_bytes_);

  free_groups_.reserve(cfg_.tbl8_groups);
  for (uint32_t g = cfg_.tbl8_groups; g-- > 0;) free_groups_.push_back(g);
  tunnels_.resize(cfg_.max_tunnels);
  slots_.assign(1024, 0);
}

RouteTable::~RouteTable() {
  table_free(fib_.tbl24_, tbl24_bytes_, dpdk24_);
  table_free(fib_.tbl8_, tbl8_bytes_, dpdk8_);
}

// ---------------------------------------------------------------- index

size_t RouteTable::slot_of(uint32_t addr, uint8_t len) const {
  const uint64_t k = (static_cast<uint64_t>(addr) << 6) | len;
  return static_cast<size_t>((k * 0x9E3779B97F4A7C15ull) >> 20) & (slots_.size() - 1);
}

uint32_t RouteTable::find(uint32_t addr, uint8_t len) const {
  const size_t mask = slots_.size() - 1;
  for (size_t i = slot_of(addr, len);; i = (i + 1) & mask) {
    const uint32_t s = slots_[i];
    if (s == 0) return kNone;
    const Route& r = routes_[s - 1];
    if (r.addr == addr && r.len == len) return s - 1;
  }
}

void RouteTable::index_insert(uint32_t id) {
  if ((count_ + 1) * 2 > slots_.size()) {
    std::vector<uint32_t> old(slots_.size() * 2, 0);
    old.swap(slots_);
    const size_t mask = slots_.size() - 1;
    for (uint32_t s : old) {
      if (s == 0) continue;
      size_t i = slot_of(routes_[s - 1].addr, routes_[s - 1].len);
      while (slots_[i] != 0) i = (i + 1) & mask;
      slots_[i] = s;
    }
  }
  const size_t mask = slots_.size() - 1;
  size_t i = slot_of(routes_[id].addr, routes_[id].len);
  while (slots_[i] != 0) i = (i + 1) & mask;
  slots_[i] = id + 1;
}

void RouteTable::index_erase(uint32_t id) {
  const size_t mask = slots_.size() - 1;
  size_t i = slot_of(routes_[id].addr, routes_[id].len);
  while (slots_[i] != id + 1) i = (i + 1) & mask;
  // Backward-shift deletion keeps probe chains intact without tombstones.
  size_t j = i;
  for (;;) {
    j = (j + 1) & mask;
    if (slots_[j] == 0) break;
    const Route& r = routes_[slots_[j] - 1];
    const size_t home = slot_of(r.addr, r.len);
    // Move slots_[j] into the hole at i unless its home lies in (i, j].
    const bool in_range = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
    if (!in_range) {
      slots_[i] = slots_[j];
      i = j;
    }
  }
  slots_[i] = 0;
}

// ---------------------------------------------------------------- validation

void RouteTable::validate_prefix(Prefix4 p) const {
  if (p.len > 32)
    throw RouteError("prefix length " + std::to_string(p.len) + " out of range (0..32)");
  if ((p.addr & ~prefix_mask(p.len)) != 0)
    throw RouteError("prefix " + to_string(p) + " has host bits set (did you mean " +
                     to_string(Prefix4{p.addr & prefix_mask(p.len), p.len}) + "?)");
}

void RouteTable::validate_hops(Prefix4 p, const std::vector<NextHop>& hops) const {
  const std::string what = "route " + to_string(p) + ": ";
  if (hops.empty()) throw RouteError(what + "empty next-hop list");
  for (size_t i = 0; i < hops.size(); i++) {
    const NextHop& h = hops[i];
    if (h.tunnel >= cfg_.max_tunnels)
      throw RouteError(what + "tunnel " + std::to_string(h.tunnel) + " out of range (max_tunnels " +
                       std::to_string(cfg_.max_tunnels) + ")");
    if (!tunnels_[h.tunnel].known)
      throw RouteError(what + "tunnel " + std::to_string(h.tunnel) + " is not configured");
    if (h.priority > cfg_.max_priority)
      throw RouteError(what + "priority " + std::to_string(h.priority) + " of tunnel " +
                       std::to_string(h.tunnel) + " out of range (0.." +
                       std::to_string(cfg_.max_priority) + ")");
    for (size_t j = 0; j < i; j++)
      if (hops[j].tunnel == h.tunnel)
        throw RouteError(what + "duplicate next hop on tunnel " + std::to_string(h.tunnel));
  }
}

void RouteTable::check_capacity_for_new(Prefix4 p) const {
  if (count_ >= cfg_.max_routes)
    throw RouteError("route " + to_string(p) + ": route table full (max_routes " +
                     std::to_string(cfg_.max_routes) + ")");
  if (p.len > 24 && !long24_.contains(p.addr >> 8) && long24_.size() >= cfg_.tbl8_groups)
    throw RouteError("route " + to_string(p) + ": no tbl8 group left for another /24 holding "
                     "prefixes longer than /24 (tbl8_groups " + std::to_string(cfg_.tbl8_groups) + ")");
}

// ---------------------------------------------------------------- tunnels

bool RouteTable::has_tunnel(TunnelId id) const { return id < cfg_.max_tunnels && tunnels_[id].known; }

void RouteTable::add_tunnel(TunnelId id, bool up) {
  if (id >= cfg_.max_tunnels)
    throw RouteError("tunnel " + std::to_string(id) + " out of range (max_tunnels " +
                     std::to_string(cfg_.max_tunnels) + ")");
  if (tunnels_[id].known) throw RouteError("tunnel " + std::to_string(id) + " already exists");
  tunnels_[id].known = true;
  tunnels_[id].up = up;
}

void RouteTable::remove_tunnel(TunnelId id) {
  if (!has_tunnel(id)) throw RouteError("tunnel " + std::to_string(id) + " does not exist");
  const auto& users = tunnels_[id].routes;
  if (!users.empty())
    throw RouteError("tunnel " + std::to_string(id) + " is still used by " + std::to_string(users.size()) +
                     " route(s), e.g. " + to_string(Prefix4{routes_[users[0]].addr, routes_[users[0]].len}));
  tunnels_[id] = Tunnel{};
}

bool RouteTable::tunnel_up(TunnelId id) const {
  if (!has_tunnel(id)) throw RouteError("tunnel " + std::to_string(id) + " does not exist");
  return tunnels_[id].up;
}

void RouteTable::set_tunnel_up(TunnelId id, bool up) {
  if (!has_tunnel(id)) throw RouteError("tunnel " + std::to_string(id) + " does not exist");
  Tunnel& tun = tunnels_[id];
  if (tun.up == up) return;
  std::vector<std::pair<uint32_t, TunnelId>> changed;  // (route, old active)
  changed.reserve(tun.routes.size());
  tun.up = up;
  // RIB first: every affected route gets its final active tunnel ...
  for (uint32_t rid : tun.routes) {
    Route& r = routes_[rid];
    const TunnelId best = best_of(r);
    if (best != r.active) {
      changed.emplace_back(rid, r.active);
      r.active = best;
    }
  }
  // ... then the FIB, so every store writes a final answer (see top).
  for (const auto& [rid, old] : changed) publish(rid, old);
  last_examined_ = tun.routes.size();
  last_republished_ = changed.size();
  reclaim();
}

// ---------------------------------------------------------------- routes

TunnelId RouteTable::best_of(const Route& r) const {
  TunnelId best = kNoRoute;
  uint32_t prio = 0;
  for (const Hop& h : r.hops) {
    if (!tunnels_[h.tunnel].up) continue;
    if (best == kNoRoute || h.priority < prio) {  // strict: first configured wins a tie
      best = h.tunnel;
      prio = h.priority;
    }
  }
  return best;
}

void RouteTable::link_hops(uint32_t id) {
  for (Hop& h : routes_[id].hops) {
    auto& v = tunnels_[h.tunnel].routes;
    h.tpos = static_cast<uint32_t>(v.size());
    v.push_back(id);
  }
}

void RouteTable::unlink_hop(TunnelId t, uint32_t pos) {
  auto& v = tunnels_[t].routes;
  const uint32_t last = v.back();
  v[pos] = last;
  v.pop_back();
  if (pos < v.size())
    for (Hop& h : routes_[last].hops)
      if (h.tunnel == t) {
        h.tpos = pos;
        break;
      }
}

void RouteTable::unlink_hops(uint32_t id) {
  for (const Hop& h : routes_[id].hops)
    unlink_hop(h.tunnel, h.tpos);
}

uint32_t RouteTable::alloc_route_id() {
  if (!free_ids_.empty()) {
    const uint32_t id = free_ids_.back();
    free_ids_.pop_back();
    return id;
  }
  routes_.emplace_back();
  return static_cast<uint32_t>(routes_.size() - 1);
}

void RouteTable::add_route(Prefix4 p, std::vector<NextHop> hops) {
  validate_prefix(p);
  validate_hops(p, hops);
  if (find(p.addr, p.len) != kNone)
    throw RouteError("route " + to_string(p) + " already exists (use replace)");
  check_capacity_for_new(p);

  const uint32_t id = alloc_route_id();
  Route& r = routes_[id];
  r.addr = p.addr;
  r.len = p.len;
  r.live = true;
  r.active = kNoRoute;
  r.hops.clear();
  r.hops.reserve(hops.size());
  for (const NextHop& h : hops) r.hops.push_back(Hop{h.tunnel, h.priority, 0});
  index_insert(id);
  count_++;
  len_count_[p.len]++;
  if (p.len > 24) long24_[p.addr >> 8]++;
  link_hops(id);
  r.active = best_of(r);
  publish(id, kNoRoute);
  reclaim();
}

void RouteTable::replace_route(Prefix4 p, std::vector<NextHop> hops) {
  validate_prefix(p);
  validate_hops(p, hops);
  const uint32_t id = find(p.addr, p.len);
  if (id == kNone) return add_route(p, std::move(hops));
  Route& r = routes_[id];
  const TunnelId old = r.active;
  unlink_hops(id);
  r.hops.clear();
  for (const NextHop& h : hops) r.hops.push_back(Hop{h.tunnel, h.priority, 0});
  link_hops(id);
  r.active = best_of(r);
  publish(id, old);
  reclaim();
}

void RouteTable::delete_route(Prefix4 p) {
  validate_prefix(p);
  const uint32_t id = find(p.addr, p.len);
  if (id == kNone) throw RouteError("route " + to_string(p) + " does not exist");
  Route& r = routes_[id];
  const TunnelId old = r.active;
  unlink_hops(id);
  index_erase(id);
  count_--;
  len_count_[p.len]--;
  if (p.len > 24) {
    auto it = long24_.find(p.addr >> 8);
    if (--it->second == 0) long24_.erase(it);
  }
  r.live = false;
  r.active = kNoRoute;
  std::vector<Hop>().swap(r.hops);
  free_ids_.push_back(id);
  last_examined_ = 1;
  last_republished_ = old != kNoRoute ? 1 : 0;
  if (old != kNoRoute) {
    installed_--;
    TunnelId t;
    uint8_t d;
    covering(p.addr, p.len, t, d);
    fib_write(p.addr, p.len, make_entry(t, d), true);
  }
  reclaim();
}

void RouteTable::add_next_hop(Prefix4 p, NextHop h) {
  validate_prefix(p);
  const uint32_t id = find(p.addr, p.len);
  if (id == kNone) return add_route(p, {h});
  validate_hops(p, {h});
  Route& r = routes_[id];
  for (const Hop& x : r.hops)
    if (x.tunnel == h.tunnel)
      throw RouteError("route " + to_string(p) + ": duplicate next hop on tunnel " + std::to_string(h.tunnel));
  auto& users = tunnels_[h.tunnel].routes;
  users.reserve(users.size() + 1);
  r.hops.push_back(Hop{h.tunnel, h.priority, static_cast<uint32_t>(users.size())});
  users.push_back(id);
  const TunnelId old = r.active;
  r.active = best_of(r);
  publish(id, old);
  reclaim();
}

void RouteTable::delete_next_hop(Prefix4 p, TunnelId t) {
  validate_prefix(p);
  const uint32_t id = find(p.addr, p.len);
  if (id == kNone) throw RouteError("route " + to_string(p) + " does not exist");
  Route& r = routes_[id];
  size_t k = 0;
  while (k < r.hops.size() && r.hops[k].tunnel != t) k++;
  if (k == r.hops.size())
    throw RouteError("route " + to_string(p) + " has no next hop on tunnel " + std::to_string(t));
  if (r.hops.size() == 1) return delete_route(p);
  unlink_hop(t, r.hops[k].tpos);
  r.hops.erase(r.hops.begin() + static_cast<ptrdiff_t>(k));
  const TunnelId old = r.active;
  r.active = best_of(r);
  publish(id, old);
  reclaim();
}

std::vector<RouteTable::RouteView> RouteTable::list() const {
  std::vector<RouteView> out;
  out.reserve(count_);
  for (const Route& r : routes_) {
    if (!r.live) continue;
    RouteView v{Prefix4{r.addr, r.len}, {}, r.active};
    v.hops.reserve(r.hops.size());
    for (const Hop& h : r.hops) v.hops.push_back(NextHop{h.tunnel, h.priority});
    out.push_back(std::move(v));
  }
  std::sort(out.begin(), out.end(), [](const RouteView& a, const RouteView& b) {
    return a.prefix.addr != b.prefix.addr ? a.prefix.addr < b.prefix.addr : a.prefix.len < b.prefix.len;
  });
  return out;
}

RouteTable::Stats RouteTable::stats() const {
  Stats s;
  s.routes = count_;
  s.installed = installed_;
  s.tbl8_groups = cfg_.tbl8_groups;
  s.tbl8_used = groups_used_;
  s.tbl8_deferred = static_cast<uint32_t>(deferred_.size());
  s.fib_bytes = tbl24_bytes_ + tbl8_bytes_;
  s.fib_in_dpdk_memory = dpdk24_ && dpdk8_;
  s.tbl8_retired = retired_total_;
  s.last_examined = last_examined_;
  s.last_republished = last_republished_;
  return s;
}

// ---------------------------------------------------------------- FIB

void RouteTable::publish(uint32_t id, TunnelId old) {
  const Route& r = routes_[id];
  last_examined_ = 1;
  last_republished_ = r.active == old ? 0 : 1;
  if (r.active == old) return;
  if (r.active == kNoRoute) {  // every hop down: leave the FIB
    installed_--;
    TunnelId t;
    uint8_t d;
    covering(r.addr, r.len, t, d);
    fib_write(r.addr, r.len, make_entry(t, d), true);
  } else {  // install or in-place change
    if (old == kNoRoute) installed_++;
    fib_write(r.addr, r.len, make_entry(r.active, r.len), false);
  }
}

void RouteTable::covering(uint32_t addr, uint8_t len, TunnelId& t, uint8_t& depth) const {
  for (int l = static_cast<int>(len) - 1; l >= 0; l--) {
    if (len_count_[l] == 0) continue;
    const uint32_t id = find(addr & prefix_mask(static_cast<uint8_t>(l)), static_cast<uint8_t>(l));
    if (id != kNone && routes_[id].active != kNoRoute) {
      t = routes_[id].active;
      depth = static_cast<uint8_t>(l);
      return;
    }
  }
  t = kNoRoute;
  depth = 0;
}

// Writes `entry` over the entries of prefix addr/len that it owns: with
// withdraw=false those of depth <= len (install / change), with withdraw=true
// those of depth == len (they fall back to the covering answer in `entry`).
void RouteTable::fib_write(uint32_t addr, uint8_t len, uint32_t entry, bool withdraw) {
  uint32_t* const t24 = fib_.tbl24_;
  uint32_t* const t8 = fib_.tbl8_;
  auto owns = [withdraw, len](uint32_t e) { return withdraw ? depth_of(e) == len : depth_of(e) <= len; };

  if (len <= 24) {
    const uint32_t first = addr >> 8;
    const uint32_t end = first + (1u << (24 - len));
    for (uint32_t i = first; i < end; i++) {
      const uint32_t e = t24[i];
      if ((e & kExt) == 0) {
        if (owns(e)) __atomic_store_n(&t24[i], entry, __ATOMIC_RELEASE);
        continue;
      }
      uint32_t* g = &t8[static_cast<size_t>(e & kGroupMask) * kGroupEntries];
      for (uint32_t j = 0; j < kGroupEntries; j++)
        if (owns(g[j])) __atomic_store_n(&g[j], entry, __ATOMIC_RELAXED);
    }
    return;
  }

  const uint32_t i = addr >> 8;
  const uint32_t lo = addr & 0xFF;
  const uint32_t hi = lo + (1u << (32 - len));
  const uint32_t e = t24[i];
  if ((e & kExt) == 0) {
    if (withdraw) return;  // cannot happen: an installed long prefix always has a group
    const uint32_t gi = alloc_group();
    uint32_t* g = &t8[static_cast<size_t>(gi) * kGroupEntries];
    for (uint32_t j = 0; j < kGroupEntries; j++) __atomic_store_n(&g[j], e, __ATOMIC_RELAXED);
    for (uint32_t j = lo; j < hi; j++) __atomic_store_n(&g[j], entry, __ATOMIC_RELAXED);
    __atomic_store_n(&t24[i], kExt | gi, __ATOMIC_RELEASE);  // publish the filled group
    groups_used_++;
    return;
  }
  const uint32_t gi = e & kGroupMask;
  uint32_t* g = &t8[static_cast<size_t>(gi) * kGroupEntries];
  for (uint32_t j = lo; j < hi; j++)
    if (owns(g[j])) __atomic_store_n(&g[j], entry, __ATOMIC_RELAXED);
  if (!withdraw) return;
  for (uint32_t j = 0; j < kGroupEntries; j++)
    if (depth_of(g[j]) > 24) return;  // still holds longer prefixes
  // Only the covering (<= /24) answer is left, uniform over the group:
  // put it in tbl24 first, then retire the group after a grace period.
  __atomic_store_n(&t24[i], g[0], __ATOMIC_RELEASE);
  groups_used_--;
  retired_total_++;
  defer_free_group(gi);
}

uint32_t RouteTable::alloc_group() {
  if (free_groups_.empty()) reclaim();
  if (free_groups_.empty() && !deferred_.empty()) {
    // Capacity is reserved per /24 at add time, so a group is always either
    // free or retired; wait for the oldest retired one's grace period.
    rte_rcu_qsbr_check(cfg_.qsbr, deferred_.front().token, true);
    free_groups_.push_back(deferred_.front().group);
    deferred_.pop_front();
  }
  if (free_groups_.empty()) throw RouteError("route table: internal error, tbl8 pool exhausted");
  const uint32_t g = free_groups_.back();
  free_groups_.pop_back();
  return g;
}

void RouteTable::defer_free_group(uint32_t g) {
  if (cfg_.qsbr == nullptr) {
    free_groups_.push_back(g);  // no registered readers
    return;
  }
  deferred_.push_back(Deferred{g, rte_rcu_qsbr_start(cfg_.qsbr)});
}

void RouteTable::reclaim() {
  while (!deferred_.empty() && rte_rcu_qsbr_check(cfg_.qsbr, deferred_.front().token, false) == 1) {
    free_groups_.push_back(deferred_.front().group);
    deferred_.pop_front();
  }
}

}  // namespace espgw::lpm
