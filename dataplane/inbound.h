// The inbound pipeline (unprotected side): ESP in, SPI -> replay -> ESP
// decap -> policy -> protected port; IKE and ICMP go to the host.
#pragma once

#include <rte_prefetch.h>

#include "dataplane/esp.h"
#include "dataplane/host_path.h"
#include "dataplane/reassembly.h"
#include "dataplane/rx_frame.h"
#include "dataplane/worker_context.h"

namespace espgw::dataplane {

inline DropReason esp_drop_reason(EspStatus st) {
  switch (st) {
    case EspStatus::kTruncated: return DropReason::kTruncated;
    case EspStatus::kBadOuterHeader:
    case EspStatus::kShortEsp: return DropReason::kBadHeader;
    case EspStatus::kUnknownSpi: return DropReason::kUnknownSpi;
    case EspStatus::kReplay: return DropReason::kReplay;
    case EspStatus::kTooOld: return DropReason::kTooOld;
    case EspStatus::kIcvMismatch: return DropReason::kIcvFailure;
    case EspStatus::kBadPadding:
    case EspStatus::kPadLength:
    case EspStatus::kBadNextHeader:
    case EspStatus::kDummy: return DropReason::kBadPadding;
    case EspStatus::kBadInner: return DropReason::kBadHeader;
    case EspStatus::kNoRoom: return DropReason::kNoBuffer;
    case EspStatus::kSeqExhausted: return DropReason::kSeqExhausted;
    case EspStatus::kCeNotEct: return DropReason::kCeNotEct;
    default: return DropReason::kUnsupported;
  }
}

// Whether `a` is one of the gateway's addresses, on any port.
inline bool gateway_owns(const Dataplane& dp, uint32_t a) {
  for (uint16_t p = 0; p < dp.nb_ports; p++)
    if (port_owns(dp.ports[p], a)) return true;
  return false;
}

// Per-burst SA lookup: one probe per run of packets with the same (SPI,
// destination) key, all the runs' slots prefetched first (with a different
// SA per packet each is a cold line). Nothing is kept across poll
// iterations, so no SA pointer outlives the quiescent state the worker
// reports after each iteration (RCU reclamation stays safe). Returns the
// number of runs.
inline uint16_t lookup_inbound_sas(const Dataplane& dp, const InboundKey* keys, uint16_t k, InboundSa** out) {
  const InboundSaTable::Array* table = dp.inbound->array();
  uint64_t word[kBurst];
  uint32_t hash[kBurst];
  uint16_t runs = 0;
  for (uint16_t i = 0; i < k; i++) {
    word[i] = inbound_key_word(keys[i]);
    if (i == 0 || word[i] != word[i - 1]) {
      hash[i] = InboundSaTable::hash(table, word[i]);
      InboundSaTable::prefetch(table, hash[i]);
      runs++;
    }
  }
  InboundSa* s = nullptr;
  for (uint16_t i = 0; i < k; i++) {
    if (i == 0 || word[i] != word[i - 1]) s = InboundSaTable::find(table, word[i], hash[i]);
    out[i] = s;
  }
  return runs;
}

// Counts runs of packets on the same SA with one counter update per run.
struct SaRunCounter {
  WorkerCounters* c;
  uint64_t tsc;  // the burst's receive time: the SA's last use
  const InboundSa* sa = nullptr;
  uint64_t packets = 0, bytes = 0;
  void flush() {
    if (sa == nullptr) return;
    c->sa[sa->slot].packets += packets;
    c->sa[sa->slot].bytes += bytes;
    c->sa[sa->slot].last_tsc = tsc;
  }
  void add(const InboundSa* s, uint32_t len) {
    if (s != sa) {
      flush();
      sa = s;
      packets = bytes = 0;
    }
    packets++;
    bytes += len;
  }
};

// Unprotected side: ESP in, plaintext out; IKE and ICMP to the host.
inline void inbound(Worker& w, uint16_t port, rte_mbuf** pkts, uint16_t n) {
  Dataplane& dp = *w.dp;
  const Port& in = dp.ports[port];
  rte_mbuf* esp[kBurst];
  EspInboundInfo info[kBurst];
  InboundKey keys[kBurst];
  uint16_t k = 0;
  uint64_t rx_bytes = 0;

  // Whether the outer destination is the port's (they usually all are).
  PerRunAnswer owned([&in](uint32_t a) { return port_owns(in, a); });
  for (uint16_t i = 0; i < n; i++) {
    rte_mbuf* m = pkts[i];
    if (i + 1 < n) rte_prefetch0(rte_pktmbuf_mtod(pkts[i + 1], void*));
    rx_bytes += rte_pktmbuf_pkt_len(m);
    rte_ipv4_hdr* ip = accept_ipv4_frame(w, m, port);
    if (ip == nullptr) continue;  // dropped, or ARP answered
    if (!owned(detail::be32(ip->dst_addr))) {
      drop(w, m, DropReason::kNotForUs);
      continue;
    }
    if (__builtin_expect(rte_ipv4_frag_pkt_is_fragmented(ip), 0)) {
      if (!reasm_wanted(ip)) {  // not ESP, not UDP: the host's stack reassembles it
        to_exception(w, m);
        continue;
      }
      m = reasm_feed(w, port, m, ip);  // reassembly.h
      if (m == nullptr) continue;      // held, or dropped and counted
      ip = rte_pktmbuf_mtod_offset(m, rte_ipv4_hdr*, kEthLen);
    }
    // Single segment, at least 14 bytes: strip Ethernet in place.
    m->data_off = uint16_t(m->data_off + kEthLen);
    m->data_len = uint16_t(m->data_len - kEthLen);
    m->pkt_len -= kEthLen;
    // ESP-in-UDP on any port but 500: the SA decides below (an SA's local
    // NAT-T port need not be 4500).
    EspStatus st = esp_inbound_parse<true>(m, info[k], kAnyNatTPort);
    if (st == EspStatus::kNotEsp) {
      // IKE on 500, IKE behind the non-ESP marker, NAT keepalives, ICMP:
      // the host's IKE daemon and stack deal with them.
      rte_pktmbuf_prepend(m, kEthLen);
      to_exception(w, m);
      continue;
    }
    if (st != EspStatus::kOk) {
      drop(w, m, esp_drop_reason(st));
      continue;
    }
    keys[k] = {info[k].spi, info[k].outer_dst};
    esp[k++] = m;
  }
  w.c->port[port].rx.bytes += rx_bytes;
  if (k == 0) return;

  InboundSa* found[kBurst];
  // With many SAs (one per packet) each SA is cold: start loading the first
  // line of each (its hot fields and the replay top, sa.h) for the whole
  // burst, and below, two packets ahead, its replay word and counters. A
  // burst on one SA skips all of it (its lines are in the cache after the
  // first packet).
  const bool many = lookup_inbound_sas(dp, keys, k, found) > 1;
  auto prefetch_state = [&](uint16_t i) {
    if (i >= k || found[i] == nullptr || (i > 0 && found[i] == found[i - 1])) return;
    const InboundSa* s = found[i];
    s->replay.prefetch(info[i].seq_low);
    rte_prefetch0(&w.c->sa[s->slot]);
  };
  if (many) {
    for (uint16_t i = 0; i < k; i++)
      if (found[i] != nullptr && (i == 0 || found[i] != found[i - 1])) rte_prefetch0(found[i]);
    prefetch_state(0);
    prefetch_state(1);
  } else if (found[0] != nullptr) {  // one SA: its state once
    prefetch_state(0);
  }

  crypto::AeadOp ops[kBurst];
  uint8_t aad[kBurst][kAadScratch];
  InboundSa* sa[kBurst];
  uint64_t full[kBurst];
  uint16_t idx[kBurst];
  uint16_t nops = 0;
  for (uint16_t i = 0; i < k; i++) {
    InboundSa* s = found[i];
    if (many) prefetch_state(uint16_t(i + 2));
    // UDP to a port other than 4500 is ESP only when an SA for this (SPI,
    // destination) expects it on that port; anything else there is the
    // host's (its IKE daemon may float to any port).
    if (info[i].udp && info[i].udp_dport != kNatTPort && (s == nullptr || s->udp_port != info[i].udp_dport)) {
      rte_pktmbuf_prepend(esp[i], kEthLen);
      to_exception(w, esp[i]);
      continue;
    }
    if (s == nullptr) {
      drop(w, esp[i], DropReason::kUnknownSpi);
      continue;
    }
    ReplayVerdict v = s->replay.check(info[i].seq_low, &full[i]);
    if (v != ReplayVerdict::kOk) {
      drop(w, esp[i], v == ReplayVerdict::kReplay ? DropReason::kReplay : DropReason::kTooOld);
      continue;
    }
    EspStatus st = esp_inbound_prepare<true>(info[i], *s, full[i], ops[nops], aad[nops]);
    if (st != EspStatus::kOk) {
      drop(w, esp[i], esp_drop_reason(st));
      continue;
    }
    sa[nops] = s;
    idx[nops++] = i;
  }
  if (nops == 0) return;
  uint8_t ok[kBurst];
  crypto::decrypt_burst(ops, nops, ok);
  // Only an authenticated packet moves the window. Another worker may hold
  // packets of the same SA (RSS is no guarantee): the updates run under the
  // window's lock, once per run of one SA (replay_window.h). update()
  // re-checks, so a duplicate within this burst or on another queue fails.
  // With one worker there is no other writer (the control thread never
  // writes a published window): no lock, which with a different SA per
  // packet is a locked instruction pair per packet.
  ReplayVerdict verdict[kBurst];
  {
    ReplayWindow::UpdateLock guard(dp.nb_workers > 1);
    for (uint16_t j = 0; j < nops; j++) {
      if (!ok[j]) continue;
      guard.hold(&sa[j]->replay);
      verdict[j] = sa[j]->replay.update(full[idx[j]]);
    }
  }

  // One pass from here to TX per packet: the trailer and inner checks, the
  // selectors, the route check and forwarding (a pass of its own each cost
  // loop overhead and arrays stored and reloaded per packet).
  NeighborTable& lan = dp.neighbors[dp.protected_port];
  const Port& out = dp.ports[dp.protected_port];
  const lpm::Fib& fib = *dp.fib;
  const uint64_t now = w.burst_tsc;
  uint8_t eth[16];
  uint64_t eth_mac = 0, mac = 0;
  uint32_t last_dst = 0;
  // Whether the destination is one of the gateway's addresses.
  PerRunAnswer ours([&dp](uint32_t a) { return gateway_owns(dp, a); });
  NextHop nh = NextHop::kNoRoute;
  NeighborEntry* entry = nullptr;
  // Tunnel and SA counters count a packet once, when it is accepted
  // (counters.h): after the last check, when it is handed to TX or to the
  // neighbour's hold queue.
  SaRunCounter sc{w.c, now};
  rte_mbuf* lan_tx[kBurst];  // staged at the end, in order (stage_tx_bulk)
  uint16_t nlan = 0;
  for (uint16_t j = 0; j < nops; j++) {
    uint16_t i = idx[j];
    rte_mbuf* m = esp[i];
    if (!ok[j]) {
      drop(w, m, DropReason::kIcvFailure);
      continue;
    }
    ReplayVerdict v = verdict[j];
    if (v != ReplayVerdict::kOk) {
      drop(w, m, v == ReplayVerdict::kReplay ? DropReason::kReplay : DropReason::kTooOld);
      continue;
    }
    uint8_t* const pt = ops[j].dst;  // the inner packet once finished
    EspStatus st = esp_inbound_finish_payload(m, info[i], pt);
    if (st != EspStatus::kOk) {
      if (st == EspStatus::kDummy) {  // TFC dummy packet (RFC 4303 §2.6): discarded, not an error
        w.c->tfc_dummies++;
        consume(w, m);
        continue;
      }
      drop(w, m, esp_drop_reason(st));
      continue;
    }
    auto* ip = reinterpret_cast<rte_ipv4_hdr*>(pt);
    const uint32_t s = detail::be32(ip->src_addr);
    const uint32_t d = detail::be32(ip->dst_addr);
    const InboundSa& isa = *sa[j];
    if (isa.nb_remote_sel &&
        (!in_selectors(isa.remote_sel, isa.nb_remote_sel, s) || !in_selectors(isa.local_sel, isa.nb_local_sel, d))) {
      drop(w, m, DropReason::kPolicy);
      continue;
    }
    // Route-based acceptance and asymmetry: which tunnel would we use to
    // reach the sender? None: the tunnel's routes do not allow this source.
    const lpm::TunnelId back = fib.lookup(s);
    if (back == lpm::kNoRoute) {
      drop(w, m, DropReason::kPolicy);
      continue;
    }
    // RFC 1812 §5.3.7: never forward to or from an address no host has
    // (a peer's default route must not reach the LAN's broadcast or
    // multicast, nor loopback).
    if (!ipv4_both_name_one_host(d, s)) {
      drop(w, m, DropReason::kMartian);
      continue;
    }
    const uint16_t tun = isa.tunnel;
    // For the gateway itself (any of its addresses: management through
    // the tunnel, a ping from the peer's LAN): delivered, not forwarded, so
    // to the host by the exception path as on the outbound side, never
    // ARPed for nor sent back out by the LAN router.
    if (ours(d)) {
      if (dp.exception_port == kNoPort) {  // no host to deliver to
        drop(w, m, DropReason::kNoException);
        continue;
      }
      uint8_t to_host[16];
      make_eth(to_host, out.mac, 0);  // destination: the TAP's MAC, set by to_exception
      if (!put_eth(m, to_host)) {
        drop(w, m, DropReason::kNoBuffer);
        continue;
      }
      if (back != tun) w.c->tunnel_asymmetric[tun]++;
      sc.add(&isa, rte_pktmbuf_pkt_len(m) - kEthLen);
      to_exception(w, m);
      continue;
    }
    // Forwarding (RFC 1812 §5.3.1): the decrypted packet's TTL must not
    // expire here. No ICMP back through the tunnel: dropped and counted.
    if (ip->time_to_live <= 1) {
      drop(w, m, DropReason::kTtlExceeded);
      continue;
    }
    // Next hop per destination (on-link host or the LAN gateway), looked
    // up once per run of packets to the same destination.
    if (d != last_dst || eth_mac == 0) {
      last_dst = d;
      nh = neighbor_lookup(lan, d, now, w.tsc_hz, &mac, &entry);
      if (nh == NextHop::kResolved && mac != eth_mac) make_eth(eth, out.mac, eth_mac = mac);
    }
    if (nh == NextHop::kNoRoute) {
      drop(w, m, DropReason::kNoRoute);
      continue;
    }
    ipv4_decrement_ttl(ip);
    const uint32_t inner_len = rte_pktmbuf_pkt_len(m);
    if (nh == NextHop::kUnresolved) {  // held until ARP resolves it (destination MAC filled then)
      uint8_t pending[16];
      make_eth(pending, out.mac, 0);
      if (!put_eth(m, pending)) {
        drop(w, m, DropReason::kNoBuffer);
        continue;
      }
      if (back != tun) w.c->tunnel_asymmetric[tun]++;
      sc.add(&isa, inner_len);
      hold_or_drop(w, entry, dp.protected_port, m);
      continue;
    }
    if (!put_eth(m, eth)) {
      drop(w, m, DropReason::kNoBuffer);
      continue;
    }
    if (back != tun) w.c->tunnel_asymmetric[tun]++;
    sc.add(&isa, inner_len);
    lan_tx[nlan++] = m;
  }
  if (nlan != 0) stage_tx_bulk(w, dp.protected_port, lan_tx, nlan);
  sc.flush();
}

}  // namespace espgw::dataplane
