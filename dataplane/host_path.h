// The exception path: frames for the gateway itself (IKE, NAT keepalives,
// ICMP, management) go to the host's TAP, and what the host sends back
// (IKE, ARP) leaves by the port that owns its source address.
#pragma once

#include "dataplane/arp.h"
#include "dataplane/neighbor.h"
#include "dataplane/worker_context.h"

namespace espgw::dataplane {

inline void to_exception(Worker& w, rte_mbuf* m) {
  Dataplane& dp = *w.dp;
  if (dp.exception_port == kNoPort) {
    drop(w, m, DropReason::kNoException);
    return;
  }
  w.c->exception_to_host++;
  // The host's stack takes only frames addressed to its interface: the
  // frame arrived for our port's MAC, so readdress it to the TAP's.
  auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
  eth->dst_addr = dp.ports[dp.exception_port].mac;
  stage_tx(w, dp.exception_port, m);
}

// What the host sent through the tap: IKE and ICMP from one of our outer
// addresses (or ARP from the host kernel). Leaves by the port that owns the
// source address, towards the tunnel peer's MAC.
inline void from_host(Worker& w, uint16_t port, rte_mbuf** pkts, uint16_t n) {
  Dataplane& dp = *w.dp;
  for (uint16_t i = 0; i < n; i++) w.c->port[port].rx.bytes += rte_pktmbuf_pkt_len(pkts[i]);
  for (uint16_t i = 0; i < n; i++) {
    rte_mbuf* m = pkts[i];
    if (rte_pktmbuf_data_len(m) < kEthLen) {
      drop(w, m, DropReason::kTruncated);
      continue;
    }
    auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
    uint16_t type = detail::be16(eth->ether_type);
    if (type == RTE_ETHER_TYPE_ARP) {
      // The host resolves its peers through us: answer every request with
      // the tap port's MAC (proxy ARP), we rewrite L2 on the way out anyway.
      w.c->arp_consumed++;
      if (arp_make_reply(m, dp.ports[dp.exception_port], true)) {
        w.c->arp_replies++;
        reuse_as_generated(w, m);
        stage_tx(w, dp.exception_port, m);
      } else {
        consume(w, m);
      }
      continue;
    }
    if (type != RTE_ETHER_TYPE_IPV4 || rte_pktmbuf_data_len(m) < kEthLen + sizeof(rte_ipv4_hdr)) {
      drop(w, m, DropReason::kUnsupported);
      continue;
    }
    auto* ip = reinterpret_cast<rte_ipv4_hdr*>(eth + 1);
    uint32_t s = detail::be32(ip->src_addr);
    uint32_t d = detail::be32(ip->dst_addr);
    uint16_t out = kNoPort;
    for (uint16_t p = 0; p < dp.nb_ports && out == kNoPort; p++)
      if (dp.ports[p].kind != PortKind::kException && port_owns(dp.ports[p], s)) out = p;
    if (out == kNoPort) {
      drop(w, m, DropReason::kNoRoute);
      continue;
    }
    // A tunnel peer leaves by the tunnel's next hop (its static MAC or its
    // gateway); anything else (IKE to a peer that is no tunnel yet, DNS,
    // NTP) by the port's neighbour table: on-link directly, else the gateway.
    uint64_t mac = 0;
    bool tunnel_peer = false;
    NeighborEntry* entry = nullptr;
    for (uint16_t t = 0; t < dp.nb_tunnels; t++)
      if (dp.tunnels[t].port == out && dp.tunnels[t].remote == d) {
        mac = dp.tunnels[t].next_hop.mac.load(std::memory_order_relaxed);
        tunnel_peer = true;
        break;
      }
    if (!tunnel_peer) {
      NextHop nh = neighbor_lookup(dp.neighbors[out], d, rte_rdtsc(), w.tsc_hz, &mac, &entry);
      if (nh == NextHop::kNoRoute) {
        drop(w, m, DropReason::kNoRoute);
        continue;
      }
    }
    eth->src_addr = dp.ports[out].mac;
    if (!(mac & kMacValid)) {
      if (tunnel_peer) {
        drop(w, m, DropReason::kNoNeighbor);
      } else if (hold_or_drop(w, entry, out, m)) {  // until ARP resolves the destination or the gateway
        w.c->exception_from_host++;
      }
      continue;
    }
    unpack_mac(mac, &eth->dst_addr);
    w.c->exception_from_host++;
    stage_tx(w, out, m);
  }
}

}  // namespace espgw::dataplane
