// ARP on the protected and unprotected ports: answer for our addresses,
// learn next-hop MACs, and (worker 0) ask for the ones still unknown.
#pragma once

#include "dataplane/worker_context.h"

namespace espgw::dataplane {

// Learns next-hop MACs from any ARP packet whose sender we are waiting for.
// Workers write these words directly: ARP is rare, the store is one atomic
// 64-bit word, and every writer stores the same value for the same sender.
inline void learn_neighbor(Dataplane& dp, const rte_mbuf* m, uint16_t port) {
  uint32_t ip;
  rte_ether_addr mac;
  if (!arp_sender(m, &ip, &mac)) return;
  uint64_t packed = pack_mac(mac);
  if (port == dp.protected_port && dp.lan_peer.ip == ip && !dp.lan_peer.is_static)
    dp.lan_peer.mac.store(packed, std::memory_order_relaxed);
  for (uint16_t t = 0; t < dp.nb_tunnels; t++) {
    Neighbor& n = dp.tunnels[t].next_hop;
    if (dp.tunnels[t].port == port && n.ip == ip && !n.is_static) n.mac.store(packed, std::memory_order_relaxed);
  }
}

// ARP on a protected/unprotected port: answer for our addresses, learn.
inline void handle_arp(Worker& w, rte_mbuf* m, uint16_t port) {
  Dataplane& dp = *w.dp;
  learn_neighbor(dp, m, port);
  w.c->arp_consumed++;
  if (arp_make_reply(m, dp.ports[port])) {
    w.c->arp_replies++;
    reuse_as_generated(w, m);  // the request is consumed, the reply generated
    stage_tx(w, port, m);
    return;
  }
  consume(w, m);  // replies to us and requests for others
}

// Worker 0 asks for next-hop MACs that are still unknown, once a second.
inline void resolve_neighbors(Worker& w) {
  Dataplane& dp = *w.dp;
  uint64_t now = rte_rdtsc();
  if (now - w.arp_check_tsc < w.tsc_hz / 10) return;
  w.arp_check_tsc = now;
  auto ask = [&](Neighbor& n, uint16_t port) {
    if (n.ip == 0 || (n.mac.load(std::memory_order_relaxed) & kMacValid)) return;
    if (now - n.last_request_tsc.load(std::memory_order_relaxed) < w.tsc_hz) return;
    n.last_request_tsc.store(now, std::memory_order_relaxed);
    rte_mbuf* m = rte_pktmbuf_alloc(dp.pool);
    if (!m) return;
    if (!build_arp_request(m, dp.ports[port], n.ip)) {
      rte_pktmbuf_free(m);
      return;
    }
    stage_tx(w, port, m);
  };
  if (dp.protected_port != kNoPort) ask(dp.lan_peer, dp.protected_port);
  for (uint16_t t = 0; t < dp.nb_tunnels; t++) ask(dp.tunnels[t].next_hop, dp.tunnels[t].port);
}

}  // namespace espgw::dataplane
