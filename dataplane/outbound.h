// The outbound pipeline (protected side): plaintext in, FIB -> tunnel ->
// MSS clamp, TTL, MTU (ICMP or pre-encryption fragmentation) -> ESP encap
// -> unprotected port.
#pragma once

#include <cstring>

#include <rte_ip_frag.h>
#include <rte_prefetch.h>

#include "dataplane/esp.h"
#include "dataplane/host_path.h"
#include "dataplane/icmp_errors.h"
#include "dataplane/rx_frame.h"
#include "dataplane/worker_context.h"

namespace espgw::dataplane {

struct OutItem {
  rte_mbuf* m;
  uint16_t inner_len;
  uint8_t grp;  // index into the burst's (tunnel, SA) list
};

// The (tunnel, SA) pairs of one outbound burst: each tunnel's SA is read once
// per burst, so a rekey switches every tunnel at a burst boundary.
struct OutGroups {
  uint16_t n;
  uint16_t tunnel[kBurst];
  OutboundSa* sa[kBurst];
  // tunnel -> group, open addressing: at most kBurst groups in 8 * kBurst
  // slots. A linear search of the groups cost ~11 cycles per packet with a
  // different tunnel per packet (16 compares on average in a full burst).
  // At most 1/8 full, a probe rarely runs past its first slot: with 2 *
  // kBurst slots (half full at the burst's end) the probe loop's exit was
  // mispredicted ~0.5 times per packet with a random tunnel per packet
  // (callgrind --branch-sim, 1,000 tunnels); clearing 256 bytes a burst
  // costs less than one misprediction.
  static constexpr uint32_t kSlots = 8 * kBurst;
  // The work items of each group, counted as the items are made (the
  // pipeline counts the runs of one group among them in registers): with a
  // different SA per packet, counting them in a pass of their own cost ~25
  // instructions per packet.
  uint16_t item_count[kBurst];
  static constexpr uint8_t kEmpty = 0xff;
  static_assert((kSlots & (kSlots - 1)) == 0 && kBurst < kEmpty, "a power of two; group indices below kEmpty");
  uint8_t slot[kSlots];

  void clear() {
    n = 0;
    memset(slot, kEmpty, sizeof(slot));  // add() zeroes a new group's item count
  }
  // The work items were sent: counts start again (the groups stay).
  void clear_counts() {
    for (uint16_t k = 0; k < n; k++) item_count[k] = 0;
  }
  // The group of tunnel `t`, or kEmpty with *where set to the slot to claim.
  uint8_t find(lpm::TunnelId t, uint32_t* where) const {
    uint32_t h = t & (kSlots - 1);  // tunnel ids are dense: the low bits spread them
    while (slot[h] != kEmpty && tunnel[slot[h]] != t) h = (h + 1) & (kSlots - 1);
    *where = h;
    return slot[h];
  }
  uint8_t add(uint32_t where, lpm::TunnelId t, OutboundSa* s) {
    tunnel[n] = t;
    sa[n] = s;
    item_count[n] = 0;
    slot[where] = uint8_t(n);
    return uint8_t(n++);
  }
};

// Encrypts up to kBurst items (all with a usable SA) and stages them for TX:
// one sequence number reservation, one next-hop MAC read and one counter
// update per (tunnel, SA) group and call. `runs` != 0: the items are all the
// groups' work items, which groups.item_count counts, in `runs` runs of one
// group; 0: a part of a longer list, counted here.
inline void encrypt_and_send(Worker& w, const OutItem* items, uint16_t n, const OutGroups& groups, uint16_t runs) {
  Dataplane& dp = *w.dp;
  struct Group {
    uint16_t sent;
    uint16_t port;
    bool ok;
    uint64_t base;
    uint64_t inner_bytes;
    uint8_t eth[16];
  };
  Group g[kBurst];
  const uint16_t ng = groups.n;
  uint16_t counts[kBurst];
  const uint16_t* cnt = groups.item_count;
  if (runs == 0) {
    // Counted by runs: counts[grp]++ in a loop this short is a chain of
    // stores and loads of one counter (store forwarding, ~4 cycles per
    // packet). One group (a burst on one tunnel): every item is its.
    cnt = counts;
    runs = 1;
    if (ng == 1) {
      counts[0] = n;
    } else {
      runs = 0;
      for (uint16_t k = 0; k < ng; k++) counts[k] = 0;
      for (uint16_t i = 0; i < n;) {
        const uint8_t grp = items[i].grp;
        uint16_t j = uint16_t(i + 1);
        while (j < n && items[j].grp == grp) j++;
        counts[grp] = uint16_t(counts[grp] + (j - i));
        runs++;
        i = j;
      }
    }
  }
  for (uint16_t k = 0; k < ng; k++) {
    Group& gr = g[k];
    gr.sent = 0;
    gr.inner_bytes = 0;
    if (cnt[k] == 0) continue;
    const Tunnel& t = dp.tunnels[groups.tunnel[k]];
    uint64_t mac = t.next_hop.mac.load(std::memory_order_relaxed);
    gr.ok = (mac & kMacValid) != 0;
    gr.port = t.port;
    if (!gr.ok) continue;  // dropped below, before a sequence number is spent
    make_eth(gr.eth, dp.ports[t.port].mac, mac);
    gr.base = groups.sa[k]->next_seq.fetch_add(cnt[k], std::memory_order_relaxed);
    // The group's counters, updated after the crypto: cold with many SAs.
    // (The tunnel's are its SAs' summed: counters.h.)
    rte_prefetch0(&w.c->sa[groups.sa[k]->slot]);
  }

  // Encryption cannot fail, so a prepared packet is already counted as sent.
  crypto::AeadOp ops[kBurst];
  uint8_t aad[kBurst][kAadScratch];
  rte_mbuf* out[kBurst];
  uint16_t out_port[kBurst];
  uint16_t nops = 0;
  bool one_port = true;  // every prepared packet leaves by out_port[0]
  auto prepare_failed = [&w](rte_mbuf* m, EspStatus st) {
    drop(w, m, st == EspStatus::kSeqExhausted ? DropReason::kSeqExhausted
               : st == EspStatus::kNoRoom     ? DropReason::kNoBuffer
                                              : DropReason::kUnsupported);
  };
  // Mostly runs of one packet (a different SA per packet): prepared packet
  // by packet, the group's state read and written through g[] each time.
  // The run loop below paid ~45 instructions per run for finding the run's
  // end and for its prologue and epilogue (callgrind, 1,000 SAs, a random SA
  // per packet); here a repeated group costs a store-to-load forward
  // instead, which runs this short rarely meet.
  if (runs * 2 > n) {
    for (uint16_t i = 0; i < n; i++) {
      const OutItem& it = items[i];
      Group& gr = g[it.grp];
      if (!gr.ok) {
        drop(w, it.m, DropReason::kNoNeighbor);
        continue;
      }
      EspStatus st = esp_outbound_prepare<true>(it.m, *groups.sa[it.grp], gr.base++, ops[nops], aad[nops], gr.eth);
      if (st != EspStatus::kOk) {
        prepare_failed(it.m, st);  // its sequence number is skipped
        continue;
      }
      out[nops] = it.m;
      out_port[nops++] = gr.port;
      one_port = one_port && gr.port == out_port[0];
      gr.sent++;
      gr.inner_bytes += it.inner_len;
    }
  }
  // Prepared run by run of one group: the group's next sequence number and
  // its sent/byte counts stay in registers for the run (per packet, gr.base++
  // and gr.sent++ would each be a store the next packet's load waits for).
  for (uint16_t i = runs * 2 > n ? n : 0; i < n;) {
    const uint8_t grp = items[i].grp;
    uint16_t j = n;  // one group: the run is the rest of the burst
    if (ng != 1) {
      j = uint16_t(i + 1);
      while (j < n && items[j].grp == grp) j++;
    }
    Group& gr = g[grp];
    if (!gr.ok) {
      for (; i < j; i++) drop(w, items[i].m, DropReason::kNoNeighbor);
      continue;
    }
    const OutboundSa& sa = *groups.sa[grp];
    uint64_t seq = gr.base;
    uint16_t sent = 0;
    uint64_t bytes = 0;
    for (; i < j; i++, seq++) {
      const OutItem& it = items[i];
      EspStatus st = esp_outbound_prepare<true>(it.m, sa, seq, ops[nops], aad[nops], gr.eth);
      if (st != EspStatus::kOk) {
        prepare_failed(it.m, st);
        continue;  // its sequence number is skipped
      }
      out[nops] = it.m;
      out_port[nops++] = gr.port;
      sent++;
      bytes += it.inner_len;
    }
    gr.base = seq;
    gr.sent = uint16_t(gr.sent + sent);
    gr.inner_bytes += bytes;
    if (sent != 0) one_port = one_port && gr.port == out_port[0];
  }
  if (nops == 0) return;
  crypto::encrypt_burst(ops, nops);
  // The frames are complete (the prepare wrote the Ethernet header too).
  // Staged in order, in runs of one port (stage_tx_bulk).
  if (one_port) {
    stage_tx_bulk(w, out_port[0], out, nops);
  } else {
    for (uint16_t s = 0; s < nops;) {
      uint16_t e = uint16_t(s + 1);
      while (e < nops && out_port[e] == out_port[s]) e++;
      stage_tx_bulk(w, out_port[s], out + s, uint16_t(e - s));
      s = e;
    }
  }
  for (uint16_t k = 0; k < ng; k++) {
    const Group& gr = g[k];
    if (gr.sent == 0) continue;
    SaCounters& sc = w.c->sa[groups.sa[k]->slot];
    sc.packets += gr.sent;
    sc.bytes += gr.inner_bytes;
    sc.last_tsc = w.burst_tsc;
  }
}

// Sends the work items (in `runs` runs of one group) and starts their counts
// again.
inline void encrypt_and_send_all(Worker& w, const OutItem* items, uint16_t n, OutGroups& groups, uint16_t runs) {
  if (n <= kBurst) {
    if (n != 0) encrypt_and_send(w, items, n, groups, runs);
  } else {
    for (uint16_t s = 0; s < n; s += kBurst)
      encrypt_and_send(w, items + s, std::min<uint16_t>(kBurst, n - s), groups, 0);
  }
  groups.clear_counts();
}

// Protected side: plaintext in, ESP out.
inline void outbound(Worker& w, uint16_t port, rte_mbuf** pkts, uint16_t n) {
  Dataplane& dp = *w.dp;
  const Port& in = dp.ports[port];
  rte_mbuf* ip_pkts[kBurst];
  uint32_t dst[kBurst];
  uint16_t k = 0;
  uint64_t rx_bytes = 0;
  // Whether the destination is the port's own.
  PerRunAnswer owned([&in](uint32_t a) { return port_owns(in, a); });

  for (uint16_t i = 0; i < n; i++) {
    rte_mbuf* m = pkts[i];
    if (i + 1 < n) rte_prefetch0(rte_pktmbuf_mtod(pkts[i + 1], void*));
    rx_bytes += rte_pktmbuf_pkt_len(m);
    rte_ipv4_hdr* ip = accept_ipv4_frame(w, m, port);
    if (ip == nullptr) continue;  // dropped, or ARP answered
    uint32_t d = detail::be32(ip->dst_addr);
    // RFC 1812 §5.3.7: nothing from or to an address no host has goes into
    // a tunnel (or to the host).
    if (!ipv4_both_name_one_host(d, detail::be32(ip->src_addr))) {
      drop(w, m, DropReason::kMartian);
      continue;
    }
    if (owned(d)) {  // ICMP echo to the gateway, management traffic
      to_exception(w, m);
      continue;
    }
    ip_pkts[k] = m;
    dst[k++] = d;
  }
  w.c->port[port].rx.bytes += rx_bytes;
  if (k == 0) return;

  lpm::TunnelId tun[kBurst];
  dp.fib->lookup_burst(dst, tun, k);
  // With many tunnels (one per packet) each packet's tunnel entry and SA are
  // cold: start loading the burst's tunnels now, and each SA two packets
  // ahead (below). A burst on one tunnel skips the per-packet part.
  uint16_t changes = 0;
  for (uint16_t i = 0; i < k; i++)
    if (tun[i] != lpm::kNoRoute && (i == 0 || tun[i] != tun[i - 1])) {
      rte_prefetch0(&dp.tunnels[tun[i]]);
      changes++;
    }
  const bool many = changes > 1;
  auto prefetch_sa = [&](uint16_t j) {
    if (j >= k || tun[j] == lpm::kNoRoute || (j > 0 && tun[j] == tun[j - 1])) return;
    const OutboundSa* s = dp.tunnels[tun[j]].out_sa.load(std::memory_order_relaxed);
    if (s == nullptr) return;
    // The lines holding the per-packet fields (2 or 3: an SA is 16-byte aligned).
    const char* p = reinterpret_cast<const char*>(s);
    rte_prefetch0(p);
    rte_prefetch0(p + 64);
    rte_prefetch0(p + kOutboundSaHotBytes - 1);
  };
  prefetch_sa(0);
  prefetch_sa(1);

  OutItem items[kWork];
  uint16_t ni = 0;
  OutGroups groups;
  groups.clear();
  // Runs of one group among the work items, counted as they are made.
  uint16_t runs = 0;
  uint8_t last = OutGroups::kEmpty;
  auto add_item = [&](rte_mbuf* m, uint16_t len, uint8_t si) {
    if (ni == kWork) {  // the work array is full: send what we have
      encrypt_and_send_all(w, items, ni, groups, runs);
      ni = 0;
      runs = 0;
      last = OutGroups::kEmpty;
    }
    items[ni++] = {m, len, si};
    groups.item_count[si]++;
    runs = uint16_t(runs + (si != last));
    last = si;
  };
  // The packet's group, tunnel and SA, and the SA's settings the loop
  // reads: found again for each packet when the burst has several tunnels;
  // with one (`many` false) only for the first, as its group is then group 0.
  uint8_t si = 0;
  const Tunnel* t = nullptr;
  OutboundSa* sa = nullptr;
  bool policy = false;     // a policy-based SA
  uint16_t max_inner = 0;  // the largest inner packet sent whole
  for (uint16_t i = 0; i < k; i++) {
    rte_mbuf* m = ip_pkts[i];
    if (many) prefetch_sa(uint16_t(i + 2));
    if (tun[i] == lpm::kNoRoute) {
      drop(w, m, DropReason::kNoRoute);
      continue;
    }
    if (many || groups.n == 0) {
      t = &dp.tunnels[tun[i]];
      uint32_t where;
      si = groups.find(tun[i], &where);
      if (si == OutGroups::kEmpty) si = groups.add(where, tun[i], t->out_sa.load(std::memory_order_acquire));
      sa = groups.sa[si];
      if (sa != nullptr) {
        policy = sa->nb_remote_sel != 0;
        max_inner = sa->udp_dst_port ? t->max_inner_udp : t->max_inner;
      }
    }
    if (sa == nullptr) {
      drop(w, m, DropReason::kTunnelDown);
      continue;
    }
    auto* ip = rte_pktmbuf_mtod_offset(m, rte_ipv4_hdr*, kEthLen);
    // A policy-based SA carries only its selectors' traffic (RFC 4301 §4.4.1:
    // what the SA's policy does not cover is not sent under it). One
    // predictable branch on route-based SAs.
    if (__builtin_expect(policy, 0) &&
        (!in_selectors(sa->local_sel, sa->nb_local_sel, detail::be32(ip->src_addr)) ||
         !in_selectors(sa->remote_sel, sa->nb_remote_sel, dst[i]))) {
      drop(w, m, DropReason::kPolicy);
      continue;
    }
    // RFC 1812 §5.3.1: a router never forwards a packet whose TTL expires.
    if (ip->time_to_live <= 1) {
      send_time_exceeded(w, m, port);
      continue;
    }
    uint16_t inner_len = detail::be16(ip->total_length);
    if (t->mss_clamp && clamp_tcp_mss(ip, inner_len, t->mss_clamp)) w.c->mss_clamped++;

    if (inner_len > max_inner) {
      if (ip->fragment_offset & rte_cpu_to_be_16(RTE_IPV4_HDR_DF_FLAG)) {
        send_frag_needed(w, m, port, max_inner);  // quotes the header as received
        continue;
      }
      ipv4_decrement_ttl(ip);  // every fragment carries the decremented TTL
      // DF clear: fragment the inner packet, then encrypt each fragment
      // (RFC 4301 §8.1 pre-encryption fragmentation).
      rte_pktmbuf_adj(m, kEthLen);
      rte_mbuf* frags[kMaxFrags];
      int nf = rte_ipv4_fragment_copy_nonseg_packet(m, frags, kMaxFrags, max_inner & ~7u, dp.pool);
      if (nf <= 0) {
        drop(w, m, DropReason::kMtu);
        continue;
      }
      // The first fragment carries the received frame's disposition, the
      // others are generated (counters.h).
      frags[0]->port = m->port;
      for (int f = 1; f < nf; f++) frags[f]->port = kGeneratedPort;
      rte_pktmbuf_free(m);
      w.c->fragments += nf;
      for (int f = 0; f < nf; f++) {
        // copy_nonseg leaves each fragment's header checksum 0 for the
        // caller (a NIC offload or software): without this every fragment
        // is dropped by the receiver after decryption.
        auto* fip = rte_pktmbuf_mtod(frags[f], rte_ipv4_hdr*);
        fip->hdr_checksum = 0;
        fip->hdr_checksum = rte_ipv4_cksum(fip);
        // copy_nonseg leaves headroom for an L2 header: the ESP header fits.
        add_item(frags[f], uint16_t(rte_pktmbuf_data_len(frags[f])), si);
      }
      continue;
    }
    ipv4_decrement_ttl(ip);
    m->data_off = uint16_t(m->data_off + kEthLen);  // single segment: strip Ethernet in place
    m->data_len = uint16_t(m->data_len - kEthLen);
    m->pkt_len -= kEthLen;
    add_item(m, inner_len, si);
  }
  encrypt_and_send_all(w, items, ni, groups, runs);
}

}  // namespace espgw::dataplane
