// ARP on the protected and unprotected ports: answer for our addresses,
// learn neighbour MACs, and (worker 0) ask for the ones needed and still
// unknown, and re-ask for the ones whose confirmation aged out.
#pragma once

#include "dataplane/neighbor.h"
#include "dataplane/worker_context.h"

namespace espgw::dataplane {

// Sends what an entry held, now that its MAC is known: from this worker's
// own TX queue of the port (every worker owns one on every port).
inline void release_held(Worker& w, NeighborEntry& e, uint16_t port, uint64_t mac) {
  for (uint32_t i = 0; i < kHoldPackets; i++) {
    if (e.held[i].load(std::memory_order_relaxed) == nullptr) continue;
    rte_mbuf* m = e.held[i].exchange(nullptr, std::memory_order_acquire);
    if (m == nullptr) continue;
    unpack_mac(mac, &rte_pktmbuf_mtod(m, rte_ether_hdr*)->dst_addr);
    stage_tx(w, port, m);  // counted as generated: its disposition was "queued" (counters.h)
  }
}

inline void drop_held(Worker& w, NeighborEntry& e) {
  for (uint32_t i = 0; i < kHoldPackets; i++) {
    if (e.held[i].load(std::memory_order_relaxed) == nullptr) continue;
    if (rte_mbuf* m = e.held[i].exchange(nullptr, std::memory_order_acquire)) drop(w, m, DropReason::kNoNeighbor);
  }
}

// Keeps a packet (its Ethernet header in place) until the entry's MAC is
// known; dropped as no_neighbor when the entry already holds kHoldPackets.
// Returns whether it was kept. Accounting (counters.h): a held packet's
// disposition is "queued" on the worker and port that received it; it
// leaves the hold queue (from any worker) as a generated packet, sent or
// dropped.
inline bool hold_or_drop(Worker& w, NeighborEntry* e, uint16_t port, rte_mbuf* m) {
  const uint16_t rx_mark = m->port;
  // Holding is parking a packet for a destination that may never answer:
  // never below the pool's floor (Dataplane::park_floor).
  if (__builtin_expect(rte_mempool_avail_count(w.dp->pool) < w.dp->park_floor, 0)) {
    drop(w, m, DropReason::kNoBuffer);
    return false;
  }
  m->port = kGeneratedPort;  // before it is visible to other workers
  if (e != nullptr)
    for (uint32_t i = 0; i < kHoldPackets; i++) {
      rte_mbuf* expected = nullptr;
      if (!e->held[i].compare_exchange_strong(expected, m, std::memory_order_release, std::memory_order_relaxed))
        continue;
      if (rx_mark != kGeneratedPort) w.c->rx_disp[w.rx_port].queued++;
      // The MAC may have been learned (and the queue released) between our
      // lookup and this store: then send it now.
      uint64_t mac = e->mac.load(std::memory_order_acquire);
      if (mac & kMacValid) release_held(w, *e, port, mac);
      return true;
    }
  m->port = rx_mark;
  drop(w, m, DropReason::kNoNeighbor);
  return false;
}

// Learns MACs from any ARP packet: the port's neighbour table (an entry is
// created only when the ARP was addressed to us, so broadcast chatter cannot
// fill the table) and the tunnels' next hops. Workers write these words
// directly: ARP is rare, each store is one atomic word, and every writer
// stores the same value for the same sender.
inline void learn_neighbor(Worker& w, const rte_mbuf* m, uint16_t port) {
  Dataplane& dp = *w.dp;
  uint32_t ip;
  rte_ether_addr mac;
  if (!arp_sender(m, &ip, &mac)) return;
  // A sender claiming one of our own addresses is a conflict or a spoof:
  // never an entry in our table.
  if (port_owns(dp.ports[port], ip)) return;
  uint64_t packed = pack_mac(mac);
  uint64_t now = rte_rdtsc();
  auto* arp = rte_pktmbuf_mtod_offset(m, const rte_arp_hdr*, sizeof(rte_ether_hdr));
  bool to_us = port_owns(dp.ports[port], rte_be_to_cpu_32(arp->arp_data.arp_tip));
  if (NeighborEntry* e = neighbor_learn(dp.neighbors[port], ip, packed, to_us, now))
    release_held(w, *e, port, packed);
  for (uint16_t t = 0; t < dp.nb_tunnels; t++) {
    Neighbor& n = dp.tunnels[t].next_hop;
    if (dp.tunnels[t].port == port && n.ip == ip && !n.is_static) {
      n.mac.store(packed, std::memory_order_relaxed);
      n.confirmed_tsc.store(now, std::memory_order_relaxed);
    }
  }
}

// ARP on a protected/unprotected port: answer for our addresses, learn.
inline void handle_arp(Worker& w, rte_mbuf* m, uint16_t port) {
  Dataplane& dp = *w.dp;
  uint32_t sender;
  rte_ether_addr sha;
  w.c->arp_consumed++;
  // A sender claiming a connected subnet's broadcast address is no host:
  // neither learned nor answered (RFC 1812 §4.3.2.7 / §5.3.7).
  if (arp_sender(m, &sender, &sha) && is_directed_broadcast(dp.neighbors[port], sender)) {
    consume(w, m);
    return;
  }
  learn_neighbor(w, m, port);
  if (arp_make_reply(m, dp.ports[port])) {
    w.c->arp_replies++;
    reuse_as_generated(w, m);  // the request is consumed, the reply generated
    stage_tx(w, port, m);
    return;
  }
  consume(w, m);  // replies to us and requests for others
}

inline void send_arp_request(Worker& w, uint16_t port, uint32_t target) {
  Dataplane& dp = *w.dp;
  rte_mbuf* m = rte_pktmbuf_alloc(dp.pool);
  if (!m) return;
  if (!build_arp_request(m, dp.ports[port], target, source_for(dp.neighbors[port], target))) {
    rte_pktmbuf_free(m);  // never received: nothing to account
    return;
  }
  stage_tx(w, port, m);
}

// Takes an entry out of the table (worker 0): no new lookup finds it from
// now on; workers that found it earlier may still use it (send to its MAC,
// hold a packet in it) until they report a quiescent state.
inline void retire_entry(Worker& w, NeighborEntry& e) {
  drop_held(w, e);
  // Unlinked first, then the token (rte_rcu_qsbr_start() releases, a
  // reader's quiescent report acquires): a worker that reports quiescence
  // after the token no longer finds the entry.
  e.ip.store(kSlotDying, std::memory_order_release);
  e.retire_token.store(w.dp->qsbr ? rte_rcu_qsbr_start(w.dp->qsbr) : 0, std::memory_order_relaxed);
}

// A retired entry, once no worker can hold it any more: reset and offered
// to the next new address. Packets a worker held in it meanwhile are dropped.
inline void reclaim_if_quiescent(Worker& w, NeighborTable& t, NeighborEntry& e) {
  rte_rcu_qsbr* q = w.dp->qsbr;
  if (q && rte_rcu_qsbr_check(q, e.retire_token.load(std::memory_order_relaxed), false) != 1) return;
  drop_held(w, e);
  e.mac.store(0, std::memory_order_relaxed);
  e.confirmed_tsc.store(0, std::memory_order_relaxed);
  e.used_tsc.store(0, std::memory_order_relaxed);
  e.last_request_tsc.store(0, std::memory_order_relaxed);
  e.unanswered.store(0, std::memory_order_relaxed);
  e.ip.store(kSlotReusable, std::memory_order_release);  // the resets above happen-before a claim
  t.nb_used.fetch_sub(1, std::memory_order_relaxed);
}

// One table entry's ARP duty (worker 0): resolve it while packets want it,
// re-confirm it once its confirmation is older than the reachable time
// (keeping the MAC meanwhile). Held packets leave once the MAC is known, or
// are dropped once the entry failed. The slot is retired (and later
// reclaimed) when the entry failed (kArpRetries unanswered requests, the
// last one a second old), when its confirmation aged out while nothing used
// it, or when it has no MAC and nothing asked for it for 3 s (the
// gateway's entry is never retired: it keeps the old aging); an entry
// learned from an ARP but never used is retired after a second once the
// table is half full (an ARP storm cannot hold the slots). Static entries
// and the port's gateway stay.
inline void maintain_entry(Worker& w, uint16_t port, NeighborEntry& e, uint64_t now) {
  NeighborTable& t = w.dp->neighbors[port];
  uint32_t ip = e.ip.load(std::memory_order_relaxed);
  if (ip == kSlotDying) return reclaim_if_quiescent(w, t, e);
  if (ip == 0 || ip >= kFirstReservedIp || e.is_static.load(std::memory_order_relaxed)) return;
  const bool pinned = &e == t.gateway;
  uint64_t mac = e.mac.load(std::memory_order_acquire);
  uint32_t unanswered = e.unanswered.load(std::memory_order_relaxed);
  if (mac & kMacValid) release_held(w, e, port, mac);  // held just as the MAC arrived
  else if (unanswered >= kArpRetries) drop_held(w, e);
  uint64_t used = e.used_tsc.load(std::memory_order_relaxed);
  uint64_t confirmed = e.confirmed_tsc.load(std::memory_order_relaxed);
  uint64_t last_request = e.last_request_tsc.load(std::memory_order_relaxed);
  bool wanted = used != 0 && now - used < t.reachable_tsc;
  if (mac & kMacValid) {
    if (now - confirmed < t.reachable_tsc) {  // reachable
      if (!pinned && used == 0 && now - confirmed > w.tsc_hz &&
          t.nb_used.load(std::memory_order_relaxed) > kNeighborSlots / 2)
        retire_entry(w, e);
      return;
    }
    if (!wanted || unanswered >= kArpRetries) {  // idle, or gone: resolve afresh when next needed
      if (!pinned) return retire_entry(w, e);
      e.mac.store(0, std::memory_order_relaxed);
      e.unanswered.store(0, std::memory_order_relaxed);
      return;
    }
  } else {
    if (used == 0) return;  // claimed an instant ago: its first user marks it used next
    const bool asked = now - used <= 3 * w.tsc_hz;
    const bool failed = unanswered >= kArpRetries && now - last_request >= w.tsc_hz;
    if (!pinned && (failed || !asked)) return retire_entry(w, e);  // a later packet starts afresh
    if (!asked) return;  // nobody asked for it lately
  }
  if (now - last_request < w.tsc_hz) return;  // one request a second
  e.last_request_tsc.store(now, std::memory_order_relaxed);
  e.unanswered.store(unanswered + 1, std::memory_order_relaxed);
  send_arp_request(w, port, ip);
}

// Worker 0, ten times a second: the tunnels' next hops and every port's
// neighbour table.
inline void resolve_neighbors(Worker& w) {
  Dataplane& dp = *w.dp;
  uint64_t now = rte_rdtsc();
  if (now - w.arp_check_tsc < w.tsc_hz / 10) return;
  w.arp_check_tsc = now;
  for (uint16_t ti = 0; ti < dp.nb_tunnels; ti++) {
    Neighbor& n = dp.tunnels[ti].next_hop;
    if (n.ip == 0 || n.is_static) continue;
    // A tunnel always needs its next hop: ask while unknown, re-confirm
    // after the port's reachable time (the MAC stays in use meanwhile).
    if (n.mac.load(std::memory_order_relaxed) & kMacValid) {
      uint64_t age = now - n.confirmed_tsc.load(std::memory_order_relaxed);
      if (age < dp.neighbors[dp.tunnels[ti].port].reachable_tsc) continue;
    }
    if (now - n.last_request_tsc.load(std::memory_order_relaxed) < w.tsc_hz) continue;
    n.last_request_tsc.store(now, std::memory_order_relaxed);
    send_arp_request(w, dp.tunnels[ti].port, n.ip);
  }
  for (uint16_t p = 0; p < dp.nb_ports; p++) {
    NeighborTable& t = dp.neighbors[p];
    if (t.nb_used.load(std::memory_order_relaxed) == 0) continue;
    for (uint32_t i = 0; i < kNeighborSlots; i++) maintain_entry(w, p, t.slots[i], now);
  }
}

}  // namespace espgw::dataplane
