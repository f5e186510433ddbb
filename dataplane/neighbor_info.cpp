#include "dataplane/neighbor_info.h"

#include <rte_cycles.h>
#include <rte_mbuf.h>

namespace espgw::dataplane {
namespace {

struct Snapshot {
  uint32_t ip;
  uint64_t mac, confirmed, used;
  uint32_t unanswered;
  bool is_static;
};

NeighborInfo describe(uint16_t port, const Snapshot& s, uint64_t reachable_tsc, uint64_t now, uint64_t hz) {
  NeighborInfo n{};
  n.port = port;
  n.ip = s.ip;
  n.is_static = s.is_static;
  if (s.mac & kMacValid) {
    std::array<uint8_t, 6> b;
    for (int i = 0; i < 6; i++) b[i] = uint8_t(s.mac >> (8 * i));
    n.mac = b;
  }
  n.age_s = (s.is_static || s.confirmed == 0) ? -1.0 : double(now - s.confirmed) / double(hz);
  if (s.is_static) n.state = "static";
  else if (!(s.mac & kMacValid)) n.state = s.unanswered >= kArpRetries ? "failed" : "incomplete";
  else if (now - s.confirmed < reachable_tsc) n.state = "reachable";
  else n.state = "stale";  // in use, being re-confirmed
  return n;
}

Snapshot snap(const NeighborEntry& e) {
  return {e.ip.load(std::memory_order_acquire), e.mac.load(std::memory_order_relaxed),
          e.confirmed_tsc.load(std::memory_order_relaxed), e.used_tsc.load(std::memory_order_relaxed),
          e.unanswered.load(std::memory_order_relaxed), e.is_static.load(std::memory_order_relaxed)};
}

}  // namespace

std::vector<NeighborInfo> list_neighbors(const Dataplane& dp) {
  std::vector<NeighborInfo> out;
  const uint64_t now = rte_rdtsc(), hz = rte_get_tsc_hz();
  for (uint16_t p = 0; p < dp.nb_ports; p++) {
    const NeighborTable& t = dp.neighbors[p];
    size_t first = out.size();
    if (t.gateway == &t.anon_gateway) {
      out.push_back(describe(p, snap(t.anon_gateway), t.reachable_tsc, now, hz));
      out.back().is_gateway = true;
    }
    for (uint32_t i = 0; i < kNeighborSlots; i++) {
      Snapshot s = snap(t.slots[i]);
      if (s.ip == 0 || s.ip >= kFirstReservedIp) continue;  // free, dying or reusable
      out.push_back(describe(p, s, t.reachable_tsc, now, hz));
      out.back().is_gateway = t.gateway == &t.slots[i];
    }
    for (uint16_t ti = 0; ti < dp.nb_tunnels; ti++) {
      const Tunnel& tun = dp.tunnels[ti];
      if (tun.port != p || tun.next_hop.ip == 0) continue;
      bool dup = false;
      for (size_t k = first; k < out.size(); k++)
        if (out[k].ip == tun.next_hop.ip) {
          out[k].is_tunnel_next_hop = dup = true;
          break;
        }
      if (dup) continue;
      Snapshot s{tun.next_hop.ip, tun.next_hop.mac.load(std::memory_order_relaxed),
                 tun.next_hop.confirmed_tsc.load(std::memory_order_relaxed), 0, 0, tun.next_hop.is_static};
      out.push_back(describe(p, s, t.reachable_tsc, now, hz));
      if (!s.is_static && !(s.mac & kMacValid)) out.back().state = "incomplete";
      if (!s.is_static && (s.mac & kMacValid) && s.confirmed == 0) out.back().state = "reachable";
      out.back().is_tunnel_next_hop = true;
    }
  }
  return out;
}

void drop_all_held(Dataplane& dp) {
  for (uint16_t p = 0; p < dp.nb_ports; p++)
    for (uint32_t i = 0; i < kNeighborSlots; i++)
      for (auto& h : dp.neighbors[p].slots[i].held)
        if (rte_mbuf* m = h.exchange(nullptr)) {
          // A held packet left its receiver as "queued" and is generated
          // from then on (counters.h): a generated packet dropped.
          if (WorkerCounters* c = dp.counters[0]) {
            c->drop[static_cast<int>(DropReason::kNoNeighbor)]++;
            c->generated_dropped++;
          }
          rte_pktmbuf_free(m);
        }
}

}  // namespace espgw::dataplane
