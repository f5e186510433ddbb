// The per-worker state every pipeline stage shares: the Worker struct, TX
// staging (stage_tx/flush_tx), the one way to drop a packet (drop, counted by
// reason), the ICMP error token bucket and the prebuilt-Ethernet helpers.
// Header-only, included into worker.cpp's single translation unit so the hot
// path stays inline.
#pragma once

#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>

#include <algorithm>
#include <atomic>
#include <cstring>

#include "dataplane/dataplane.h"
#include "dataplane/esp.h"  // detail::be16/be32
#include "dataplane/packet_util.h"

namespace espgw::dataplane {

constexpr uint16_t kEthLen = sizeof(rte_ether_hdr);
constexpr uint16_t kMaxFrags = 8;  // fragments of one packet before encryption
constexpr uint16_t kWork = kBurst * 2;

// Per-port TX staging: packets are flushed once per poll iteration.
struct TxBuffer {
  uint16_t n;
  uint32_t bytes;  // sum of pkts' pkt_len (at most kBurst * 9 * 65535 < 2^32)
  rte_mbuf* pkts[kBurst * (kMaxFrags + 1)];
};

struct Worker {
  Dataplane* dp;
  uint16_t index;
  WorkerCounters* c;
  TxBuffer tx[kMaxPorts];
  // ICMP error token bucket (RFC 1812 §4.3.2.8 asks routers to rate-limit).
  uint64_t icmp_tokens;
  uint64_t icmp_last_tsc;
  uint64_t tsc_hz;
  uint64_t arp_check_tsc;
  uint64_t burst_tsc;  // rte_rdtsc() when the current RX burst was received (SA last use, neighbour ages)
  uint16_t rx_port;  // the port whose burst is being processed (counters.h: dispositions)
  bool counting;     // c->update_seq is odd: this iteration has changed counters
};

// mbuf->port of a packet the worker made itself (ARP, ICMP, extra
// fragments): counted on TX only (counters.h). The RX dispatch stamps every
// received mbuf with its port id, which is never this value.
constexpr uint16_t kGeneratedPort = RTE_MBUF_PORT_INVALID;

// The seqlock around one poll iteration's counter updates (counters.h):
// odd from the first update to the end of the iteration.
inline void begin_counting(Worker& w) {
  if (w.counting) return;
  std::atomic_ref<uint64_t>(w.c->update_seq).store(w.c->update_seq + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  w.counting = true;
}
inline void end_counting(Worker& w) {
  if (!w.counting) return;
  std::atomic_ref<uint64_t>(w.c->update_seq).store(w.c->update_seq + 1, std::memory_order_release);
  w.counting = false;
}

// The one way to drop a packet: counted by reason, and against the port it
// was received on (or as a generated packet).
inline void drop(Worker& w, rte_mbuf* m, DropReason r) {
  w.c->drop[static_cast<int>(r)]++;
  if (m->port == kGeneratedPort) {
    begin_counting(w);
    w.c->generated_dropped++;
  } else {
    w.c->rx_disp[w.rx_port].dropped[static_cast<int>(r)]++;
  }
  rte_pktmbuf_free(m);
}

// A received frame absorbed without error (ARP, TFC dummy): freed, counted.
inline void consume(Worker& w, rte_mbuf* m) {
  w.c->rx_disp[w.rx_port].consumed++;
  rte_pktmbuf_free(m);
}

// A received frame turned into a packet of our own (an ARP request
// rewritten into the reply): the received frame is consumed, what leaves is
// generated.
inline void reuse_as_generated(Worker& w, rte_mbuf* m) {
  w.c->rx_disp[w.rx_port].consumed++;
  m->port = kGeneratedPort;
}

// Stages a run of packets for TX on one port, in order, and counts each
// one's disposition: generated (TX only), to_host (a received frame handed to
// the exception port) or forwarded; what does not fit is dropped (tx_full).
// One capacity check and one counter update per run: per packet, b.n++ and a
// disposition ++ would each be a store the next packet's load waits for
// (store forwarding, ~5 cycles each per packet at 64 B). The bytes the port
// will send are summed here, in the loop that already reads each mbuf's
// first line, not in a second pass over the buffer at flush.
inline void stage_tx_bulk(Worker& w, uint16_t port, rte_mbuf* const* ms, uint16_t n) {
  TxBuffer& b = w.tx[port];
  const uint16_t room = uint16_t(RTE_DIM(b.pkts) - b.n);
  const uint16_t take = n < room ? n : room;
  rte_mbuf** dst = b.pkts + b.n;
  uint32_t generated = 0, bytes = 0;
  for (uint16_t i = 0; i < take; i++) {
    dst[i] = ms[i];
    generated += ms[i]->port == kGeneratedPort;
    bytes += rte_pktmbuf_pkt_len(ms[i]);
  }
  b.n = uint16_t(b.n + take);
  b.bytes += bytes;
  if (generated) {
    begin_counting(w);
    w.c->tx_disp[port].generated += generated;
  }
  if (const uint32_t received = take - generated) {
    if (port == w.dp->exception_port && w.rx_port != port)
      w.c->rx_disp[w.rx_port].to_host += received;
    else
      w.c->rx_disp[w.rx_port].forwarded += received;
  }
  for (uint16_t i = take; i < n; i++) drop(w, ms[i], DropReason::kTxFull);
}

inline void stage_tx(Worker& w, uint16_t port, rte_mbuf* m) { stage_tx_bulk(w, port, &m, 1); }

inline void flush_tx(Worker& w) {
  Dataplane& dp = *w.dp;
  for (uint16_t p = 0; p < dp.nb_ports; p++) {
    TxBuffer& b = w.tx[p];
    if (b.n == 0) continue;
    // Bytes of everything sent (ESP, decrypted, ARP, ICMP, host traffic):
    // summed at staging, before the driver owns the mbufs; what the driver
    // did not take is subtracted below.
    uint64_t bytes = b.bytes;
    uint16_t sent = 0;
    // A couple of retries absorb a momentarily full ring; then drop.
    for (int tries = 0; tries < 4 && sent < b.n; tries++)
      sent += rte_eth_tx_burst(dp.ports[p].port_id, w.index, b.pkts + sent, uint16_t(b.n - sent));
    TxDisposition& d = w.c->tx_disp[p];
    d.staged += b.n;
    for (uint16_t i = sent; i < b.n; i++) {
      bytes -= rte_pktmbuf_pkt_len(b.pkts[i]);
      d.tx_dropped++;
      w.c->drop[static_cast<int>(DropReason::kTxFull)]++;
      rte_pktmbuf_free(b.pkts[i]);
    }
    w.c->port[p].tx.packets += sent;
    w.c->port[p].tx.bytes += bytes;
    b.n = 0;
    b.bytes = 0;
  }
}

inline bool icmp_allowed(Worker& w) {
  uint64_t now = rte_rdtsc();
  uint64_t rate = w.dp->icmp_tokens_per_s;
  if (rate == 0) return false;
  uint64_t elapsed = std::min(now - w.icmp_last_tsc, w.tsc_hz);  // a full bucket refills in 1 s
  uint64_t add = elapsed * rate / w.tsc_hz;
  if (add) {
    w.icmp_tokens = std::min<uint64_t>(w.icmp_tokens + add, rate);
    w.icmp_last_tsc = now;
  }
  if (w.icmp_tokens == 0) return false;
  w.icmp_tokens--;
  return true;
}

// The 14-byte Ethernet header of a next hop, built once per burst.
inline void make_eth(uint8_t* out, const rte_ether_addr& src, uint64_t dst_mac) {
  for (int i = 0; i < 6; i++) out[i] = uint8_t(dst_mac >> (8 * i));
  memcpy(out + 6, &src, 6);
  const uint16_t type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
  memcpy(out + 12, &type, 2);
}

// Prepends a prebuilt Ethernet header; false when there is no headroom.
inline bool put_eth(rte_mbuf* m, const uint8_t* eth) {
  uint8_t* p = reinterpret_cast<uint8_t*>(rte_pktmbuf_prepend(m, kEthLen));
  if (p == nullptr) return false;
  memcpy(p, eth, kEthLen);
  return true;
}

}  // namespace espgw::dataplane
