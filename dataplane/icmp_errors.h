// ICMP errors the gateway generates (RFC 792, RFC 1812 §4.3.2.8 rate limit):
// "fragmentation needed" and "time exceeded", back out of the port the
// offending packet came in on.
#pragma once

#include "dataplane/neighbor.h"
#include "dataplane/worker_context.h"

namespace espgw::dataplane {

// Sends a packet that still starts at its Ethernet header and exceeds the
// tunnel MTU with DF set back as ICMP "fragmentation needed" (when RFC 1812
// §4.3.2.7 permits an error for it at all; the rate limit comes after).
inline void send_frag_needed(Worker& w, rte_mbuf* m, uint16_t in_port, uint16_t mtu) {
  Dataplane& dp = *w.dp;
  auto* eth = rte_pktmbuf_mtod(m, const rte_ether_hdr*);
  auto* ip = reinterpret_cast<const rte_ipv4_hdr*>(eth + 1);
  if (icmp_error_permitted(eth, ip) && !is_directed_broadcast(dp.neighbors[in_port], detail::be32(ip->src_addr)) &&
      icmp_allowed(w)) {
    if (rte_mbuf* icmp = build_icmp_frag_needed(dp.pool, eth, ip, dp.ports[in_port], mtu)) {
      w.c->icmp_sent++;
      stage_tx(w, in_port, icmp);
    }
  }
  drop(w, m, DropReason::kMtu);
}

// Same for a packet whose TTL would expire here: ICMP "time exceeded" back
// to the sender (RFC 1812 §5.3.1), rate-limited like frag-needed.
inline void send_time_exceeded(Worker& w, rte_mbuf* m, uint16_t in_port) {
  Dataplane& dp = *w.dp;
  auto* eth = rte_pktmbuf_mtod(m, const rte_ether_hdr*);
  auto* ip = reinterpret_cast<const rte_ipv4_hdr*>(eth + 1);
  if (icmp_error_permitted(eth, ip) && !is_directed_broadcast(dp.neighbors[in_port], detail::be32(ip->src_addr)) &&
      icmp_allowed(w)) {
    if (rte_mbuf* icmp = build_icmp_time_exceeded(dp.pool, eth, ip, dp.ports[in_port])) {
      w.c->icmp_sent++;
      stage_tx(w, in_port, icmp);
    }
  }
  drop(w, m, DropReason::kTtlExceeded);
}

}  // namespace espgw::dataplane
