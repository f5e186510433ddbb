// Per-worker counters. Each worker writes only its own block (plain stores,
// no atomics); the control thread sums the blocks on demand. A torn 64-bit
// read cannot happen on x86-64; a reader that needs the accounting equations
// below to hold exactly takes a consistent snapshot through update_seq.
//
// The counter model (accounting to the packet)
// ---------------------------------------------
// Every frame a worker receives on port p ends in exactly one disposition,
// counted against p in that worker's block, in the same poll iteration:
//   forwarded[p]   staged for transmission on some port (encrypted, decrypted,
//                  or host traffic sent out by us) -- one per received frame;
//   to_host[p]     staged for the exception port (IKE, ICMP, management);
//   consumed[p]    absorbed without being an error: ARP (requests, replies,
//                  gratuitous; an answered request becomes a generated reply),
//                  TFC dummy packets (RFC 4303 §2.6, next header 59);
//   dropped[p][r]  freed for reason r (DropReason);
//   queued[p]      handed to a neighbour entry's hold queue while ARP resolves
//                  its next hop (arp.h); from there it leaves, from whichever
//                  worker, as a generated packet (sent, or dropped as
//                  no_neighbor in generated_dropped);
//   held[p]        an outer fragment waiting in the reassembly table (a gauge:
//                  when its datagram completes, its N fragments leave held,
//                  N - 1 become consumed and the reassembled frame takes one
//                  of the dispositions above; reassembly.h).
// so, per worker and per RX port, exactly (checked by port_balance()):
//   port[p].rx.packets = forwarded[p] + to_host[p] + consumed[p] + sum_r dropped[p][r]
//                        + queued[p] + held[p]
// Packets the worker makes itself are not received and are counted on TX
// only: generated[q] (ARP replies and requests, ICMP errors, packets
// released from a hold queue, and the extra
// fragments of a packet fragmented before encryption -- its first fragment
// carries the received frame's disposition). A generated packet that
// cannot be sent counts in generated_dropped (and drop[r]).
// On TX, per worker and per port q, exactly:
//   staged[q] = port[q].tx.packets + tx_dropped[q]
// where staged[q] counts every packet put on q's TX staging buffer
// (received or generated) and tx_dropped[q] those the driver refused (also
// counted in drop[kTxFull]). port[q].tx.bytes counts every byte sent,
// whatever the packet (ESP, decrypted, ARP, ICMP, exception traffic).
// drop[r] is the total by reason: sum_p dropped[p][r] + what generated packets
// and the TX stage lost.
//
// SA counters count a packet once, when it is accepted: inbound, when the
// decrypted packet passed every check (selectors, route back, TTL) and is
// handed to TX; outbound, when the encrypted packet is handed to TX. SA
// bytes are inner bytes (lifetimes count these). An SA's last_tsc is the TSC
// of the burst in which the packet was counted.
// A tunnel's out and in counts are not kept here: every packet they would
// count is counted on exactly one of the tunnel's SAs, so the control side
// reports the sum of its SAs' counts plus those of its deleted SAs
// (SaDatabase::tunnel_traffic). With a different tunnel per packet that is
// one counter line written per packet instead of two. Only the rare
// asymmetric-return count is per tunnel.
#pragma once

#include <cstdint>

namespace espgw::dataplane {

inline constexpr uint16_t kMaxPorts = 8;
// Tunnels: indices are uint16_t (the FIB's next hop is 16 bits, 0xFFFF = no
// route). SA slots: a rekey keeps the old and the new SA of a tunnel in each
// direction for a while, so two per tunnel and direction.
// WorkerCounters is ~1.2 MB per worker with these (rte_zmalloc'd).
inline constexpr uint16_t kMaxTunnels = 16384;
inline constexpr uint32_t kMaxSas = 32768;  // SA slots (counters are indexed by slot)

// Why a packet was dropped. Keep in sync with drop_reason_name().
enum class DropReason : uint8_t {
  kTruncated,       // shorter than the headers it claims
  kBadHeader,       // malformed L2/L3/ESP header
  kUnknownSpi,      // no inbound SA for (SPI, destination)
  kReplay,          // duplicate sequence number inside the window
  kTooOld,          // left of the replay window
  kIcvFailure,      // authentication failed
  kBadPadding,      // ESP trailer pad bytes, pad length or next header wrong
  kNoRoute,         // no FIB entry for the destination
  kTunnelDown,      // route points at a tunnel with no usable outbound SA
  kMtu,             // too big, DF set: ICMP "fragmentation needed" sent (or rate-limited)
  kPolicy,          // decrypted packet outside the SA's selectors / the tunnel's routes
  kSeqExhausted,    // outbound SA used up its sequence space (hard expire pending)
  kNotForUs,        // not for the gateway: another MAC (either side), or not its IP (unprotected side)
  kNoException,     // IKE/ICMP for the gateway but no exception path configured
  kNoNeighbor,      // next-hop MAC not resolved yet
  kNoBuffer,        // mbuf pool empty / no room for headers
  kTxFull,          // TX queue full
  kUnsupported,     // IPv6, IP options we don't handle on this path, multi-segment...
  kTtlExceeded,     // forwarded packet's TTL would reach 0 (outbound: ICMP time exceeded sent, rate-limited)
  kCeNotEct,        // RFC 6040 §4.2: outer CE over a Not-ECT inner packet (the congestion mark cannot be kept)
  kReasmTimeout,    // outer fragment whose datagram did not complete in time
  kReasmFailed,     // outer fragment refused by reassembly (overlap, duplicate, too many fragments, table full)
  kMartian,         // RFC 1812 §5.3.7: source or destination no host can have (0/8, 127/8, multicast, class E, broadcast)
  kCount
};

constexpr const char* drop_reason_name(DropReason r) {
  constexpr const char* names[] = {
      "truncated",   "bad_header",    "unknown_spi", "replay",       "too_old",   "icv_failure",
      "bad_padding", "no_route",      "tunnel_down", "mtu",          "policy",    "seq_exhausted",
      "not_for_us",  "no_exception",  "no_neighbor", "no_buffer",    "tx_full",   "unsupported",
      "ttl_exceeded", "ce_not_ect",   "reassembly_timeout", "reassembly_failed",
      "martian"};
  static_assert(sizeof(names) / sizeof(names[0]) == static_cast<int>(DropReason::kCount));
  return names[static_cast<int>(r)];
}

struct PacketByteCount {
  uint64_t packets;
  uint64_t bytes;
};

// One SA's counters in one worker's block, and the TSC of the burst in
// which this worker last counted a packet on it (0: never): query-sa's last
// use. 32 bytes, aligned, so the last-use store lands on the cache line the
// worker writes the counters on anyway (one store per burst per SA).
struct alignas(32) SaCounters {
  uint64_t packets;
  uint64_t bytes;
  uint64_t last_tsc;
};

struct PortCounters {
  PacketByteCount rx;
  PacketByteCount tx;
};

// Dispositions of the frames received on one port (see the model above).
struct RxDisposition {
  uint64_t forwarded;
  uint64_t to_host;
  uint64_t consumed;
  uint64_t held;    // outer fragments waiting in the reassembly table (a gauge)
  uint64_t queued;  // handed to a neighbour's ARP hold queue (leaves it as generated)
  uint64_t dropped[static_cast<int>(DropReason::kCount)];
};

struct TxDisposition {
  uint64_t staged;      // put on the port's TX staging buffer
  uint64_t generated;   // of which made by the worker (not received)
  uint64_t tx_dropped;  // refused by the driver (TX ring full)
};

struct WorkerCounters {
  // Odd while the worker is between its first counter update of a poll
  // iteration and the end of it; readers retry until they copy the block
  // between two equal even values (a seqlock; the worker never waits).
  uint64_t update_seq;
  PortCounters port[kMaxPorts];
  RxDisposition rx_disp[kMaxPorts];
  TxDisposition tx_disp[kMaxPorts];
  uint64_t generated_dropped;        // generated packets dropped before TX staging
  // By tunnel: packets decrypted from it while the route back to their
  // source points at another tunnel (accepted; a diagnostic).
  uint64_t tunnel_asymmetric[kMaxTunnels];
  SaCounters sa[kMaxSas];            // by SA slot: bytes are inner bytes (lifetimes count these)
  uint64_t drop[static_cast<int>(DropReason::kCount)];
  uint64_t exception_to_host;        // packets handed to the exception path
  uint64_t exception_from_host;      // packets the host sent out through us
  uint64_t arp_replies;
  uint64_t arp_consumed;             // ARP frames received (all of them end in consumed[p])
  uint64_t tfc_dummies;              // inbound TFC dummy packets (next header 59), consumed
  uint64_t reassembled;              // outer datagrams reassembled from fragments
  uint64_t reasm_timeouts;           // outer fragments freed because their datagram timed out
  uint64_t icmp_sent;                // ICMP errors generated (frag needed, time exceeded)
  uint64_t fragments;                // fragments made before encryption
  uint64_t mss_clamped;
  uint64_t loops;                    // poll loop iterations (idle ones too)
  uint64_t busy_loops;               // iterations that received something
};

// The two equations of one port in one worker's block (or in a sum of
// blocks: the equations are linear).
struct PortBalance {
  uint64_t rx, forwarded, to_host, consumed, dropped, queued, held;  // RX side
  uint64_t staged, sent, tx_dropped, generated;                      // TX side
  bool rx_holds() const { return rx == forwarded + to_host + consumed + dropped + queued + held; }
  bool tx_holds() const { return staged == sent + tx_dropped; }
  bool holds() const { return rx_holds() && tx_holds(); }
};

inline PortBalance port_balance(const WorkerCounters& c, uint16_t p) {
  PortBalance b{};
  const RxDisposition& d = c.rx_disp[p];
  b.rx = c.port[p].rx.packets;
  b.forwarded = d.forwarded;
  b.to_host = d.to_host;
  b.consumed = d.consumed;
  b.held = d.held;
  b.queued = d.queued;
  for (uint64_t x : d.dropped) b.dropped += x;
  b.staged = c.tx_disp[p].staged;
  b.generated = c.tx_disp[p].generated;
  b.tx_dropped = c.tx_disp[p].tx_dropped;
  b.sent = c.port[p].tx.packets;
  return b;
}

inline void add(PortBalance& a, const PortBalance& b) {
  a.rx += b.rx, a.forwarded += b.forwarded, a.to_host += b.to_host, a.consumed += b.consumed, a.held += b.held;
  a.queued += b.queued;
  a.dropped += b.dropped, a.staged += b.staged, a.sent += b.sent, a.tx_dropped += b.tx_dropped;
  a.generated += b.generated;
}

inline void count(PacketByteCount& c, uint32_t bytes) {
  c.packets++;
  c.bytes += bytes;
}

}  // namespace espgw::dataplane
