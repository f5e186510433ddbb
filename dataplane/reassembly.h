// Outer IPv4 reassembly on the unprotected side. Peers (Linux, strongSwan)
// fragment ESP after encryption when the inner packet has DF clear, and IKE
// with certificates arrives fragmented on UDP 500/4500: both must be whole
// before their protocol is looked at (RFC 4303 §3.4.1, RFC 4301 §7).
//
// DPDK's rte_ip_frag, one table per (worker, unprotected port), created by
// the control side: bounded (kReasmMaxEntries datagrams of at most
// RTE_LIBRTE_IP_FRAG_MAX_FRAG fragments each, so at most that many mbufs
// held), entries expire after Dataplane::reasm_timeout_ms and are reclaimed
// once per burst on the port. The death row is emptied after every call, so
// it never overflows and every freed fragment is counted.
//
// What is reassembled: ESP (protocol 50) and UDP (ESP-in-UDP or IKE; which
// one is known only from the whole datagram): the reassembled datagram is
// then classified like any other (ESP -> decrypt, IKE -> the host). Other
// protocols' fragments (ICMP, TCP to the gateway) go to the host as they
// are: its stack reassembles them.
//
// RSS: the ports hash fragments on the IPv4 addresses only (NICs classify
// every fragment, first one included, as FRAG_IPV4, which RTE_ETH_RSS_IP
// hashes on addresses), so all fragments of a datagram reach one queue, one
// worker, one table. A datagram whose fragments were spread anyway times
// out and is counted (reassembly_timeout).
//
// Accounting (counters.h): a fragment entering the table is "held" by its
// port; when a datagram completes, its N fragments leave "held", N - 1 of
// them are "consumed" and the reassembled frame carries the disposition of
// the datagram; fragments freed by the library (timeout, overlap, duplicate,
// too many fragments, table full) leave "held" as dropped.
#pragma once

#include <rte_ip_frag.h>

#include "dataplane/host_path.h"
#include "dataplane/worker_context.h"

namespace espgw::dataplane {

inline constexpr uint64_t kReasmExpireLoops = 1024;  // a power of two

// Frees the death row: every mbuf on it is a fragment this port received
// and held.
inline void reasm_free_death_row(Worker& w, rte_ip_frag_death_row& dr, uint16_t port, DropReason r) {
  const uint32_t n = dr.cnt;
  if (n == 0) return;
  begin_counting(w);
  w.c->rx_disp[port].held -= n;
  w.c->rx_disp[port].dropped[static_cast<int>(r)] += n;
  w.c->drop[static_cast<int>(r)] += n;
  if (r == DropReason::kReasmTimeout) w.c->reasm_timeouts += n;
  rte_ip_frag_free_death_row(&dr, 0);
}

// Reclaims the datagrams of this port's table that timed out (the worker
// calls it every kReasmExpireLoops iterations, traffic or not).
inline void reasm_expire(Worker& w, uint16_t port) {
  rte_ip_frag_tbl* tbl = w.dp->reasm[w.index][port];
  if (tbl == nullptr) return;
  rte_ip_frag_death_row dr;
  dr.cnt = 0;
  rte_ip_frag_table_del_expired_entries(tbl, &dr, rte_rdtsc());
  reasm_free_death_row(w, dr, port, DropReason::kReasmTimeout);
}

// True for a fragment this file reassembles (ESP or UDP).
inline bool reasm_wanted(const rte_ipv4_hdr* ip) {
  return rte_ipv4_frag_pkt_is_fragmented(ip) &&
         (ip->next_proto_id == IPPROTO_ESP || ip->next_proto_id == IPPROTO_UDP);
}

// A reassembled (multi-segment) frame that is IKE: UDP to port 500, or
// behind the non-ESP marker on another port (RFC 3948 §2.2).
inline bool reasm_is_ike(const rte_mbuf* r) {
  const auto* ip = rte_pktmbuf_mtod_offset(r, const rte_ipv4_hdr*, kEthLen);
  const uint32_t l4 = kEthLen + (ip->version_ihl & 0xf) * 4u;
  if (ip->next_proto_id != IPPROTO_UDP || rte_pktmbuf_data_len(r) < l4 + 12) return false;
  const uint8_t* u = rte_pktmbuf_mtod_offset(r, const uint8_t*, l4);
  return detail::ld16(u + 2) == kIkePort || detail::ld32(u + 8) == 0;
}

// Feeds one fragment (an Ethernet frame, `ip` its header, validated by
// accept_ipv4_frame()). Returns the reassembled frame in one segment with a
// fresh header checksum, or nullptr when the fragment was kept (held) or
// dropped (counted).
inline rte_mbuf* reasm_feed(Worker& w, uint16_t port, rte_mbuf* m, rte_ipv4_hdr* ip) {
  rte_ip_frag_tbl* tbl = w.dp->reasm[w.index][port];
  if (tbl == nullptr) {
    drop(w, m, DropReason::kUnsupported);
    return nullptr;
  }
  // The library trusts the header it is given: accept_ipv4_frame() checked
  // it (version, lengths, checksum).
  const uint32_t ihl = (ip->version_ihl & 0xf) * 4u;
  // No datagram is longer than 65,535 bytes (RFC 791): a fragment reaching
  // past that end can never complete (the "ping of death"); refused at once
  // rather than held until it times out.
  const uint32_t frag_end = (detail::be16(ip->fragment_offset) & RTE_IPV4_HDR_OFFSET_MASK) * 8u +
                            detail::be16(ip->total_length);
  if (frag_end > 65535) {
    drop(w, m, DropReason::kBadHeader);
    return nullptr;
  }
  // Parking on behalf of an unauthenticated sender: never below the floor.
  if (__builtin_expect(rte_mempool_avail_count(w.dp->pool) < w.dp->park_floor, 0)) {
    drop(w, m, DropReason::kNoBuffer);
    return nullptr;
  }
  m->l2_len = kEthLen;
  m->l3_len = ihl;
  w.c->rx_disp[port].held++;
  rte_ip_frag_death_row dr;
  dr.cnt = 0;
  rte_mbuf* r = rte_ipv4_frag_reassemble_packet(tbl, &dr, m, rte_rdtsc(), ip);
  reasm_free_death_row(w, dr, port, DropReason::kReasmFailed);
  if (r == nullptr) return nullptr;
  const uint16_t nseg = r->nb_segs;
  w.c->rx_disp[port].held -= nseg;
  w.c->rx_disp[port].consumed += nseg - 1u;
  w.c->reassembled++;
  // The library leaves the header checksum 0; the header is in the first
  // segment.
  auto* rip = rte_pktmbuf_mtod_offset(r, rte_ipv4_hdr*, kEthLen);
  rip->hdr_checksum = 0;
  rip->hdr_checksum = rte_ipv4_cksum(rip);
  // The pipelines work on one segment; the pool's buffers hold a frame of
  // the largest port MTU plus the ESP room. A bigger datagram is IKE (with
  // certificates) or nothing we can decrypt in place: IKE goes to the host
  // as a chain (the TAP takes multi-segment frames), the rest is dropped.
  if (rte_pktmbuf_linearize(r) != 0) {
    if (reasm_is_ike(r)) {
      to_exception(w, r);
    } else {
      drop(w, r, DropReason::kUnsupported);
    }
    return nullptr;
  }
  return r;
}

}  // namespace espgw::dataplane
