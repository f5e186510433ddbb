// Per-worker counters. Each worker writes only its own block (plain stores,
// no atomics); the control thread sums the blocks on demand. A torn 64-bit
// read cannot happen on x86-64, and a slightly stale sum is fine for stats.
#pragma once

#include <cstdint>

namespace espgw::dataplane {

inline constexpr uint16_t kMaxPorts = 8;
inline constexpr uint16_t kMaxTunnels = 256;
inline constexpr uint32_t kMaxSas = 1024;  // SA slots (counters are indexed by slot)

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
  kNotForUs,        // arrived on the unprotected side but not addressed to the gateway
  kNoException,     // IKE/ICMP for the gateway but no exception path configured
  kNoNeighbor,      // next-hop MAC not resolved yet
  kNoBuffer,        // mbuf pool empty / no room for headers
  kTxFull,          // TX queue full
  kUnsupported,     // IPv6, IP options we don't handle on this path, multi-segment...
  kTtlExceeded,     // forwarded packet's TTL would reach 0 (outbound: ICMP time exceeded sent, rate-limited)
  kCount
};

constexpr const char* drop_reason_name(DropReason r) {
  constexpr const char* names[] = {
      "truncated",   "bad_header",    "unknown_spi", "replay",       "too_old",   "icv_failure",
      "bad_padding", "no_route",      "tunnel_down", "mtu",          "policy",    "seq_exhausted",
      "not_for_us",  "no_exception",  "no_neighbor", "no_buffer",    "tx_full",   "unsupported",
      "ttl_exceeded"};
  static_assert(sizeof(names) / sizeof(names[0]) == static_cast<int>(DropReason::kCount));
  return names[static_cast<int>(r)];
}

struct PacketByteCount {
  uint64_t packets;
  uint64_t bytes;
};

struct PortCounters {
  PacketByteCount rx;
  PacketByteCount tx;
};

struct TunnelCounters {
  PacketByteCount out;   // inner packets encrypted and sent on the tunnel
  PacketByteCount in;    // inner packets decrypted from the tunnel
  uint64_t asymmetric;   // decrypted here while another tunnel is active for the source
};

struct WorkerCounters {
  PortCounters port[kMaxPorts];
  TunnelCounters tunnel[kMaxTunnels];
  PacketByteCount sa[kMaxSas];       // by SA slot: bytes are inner bytes (lifetimes count these)
  uint64_t drop[static_cast<int>(DropReason::kCount)];
  uint64_t exception_to_host;        // packets handed to the exception path
  uint64_t exception_from_host;      // packets the host sent out through us
  uint64_t arp_replies;
  uint64_t icmp_sent;                // ICMP errors generated (frag needed, time exceeded)
  uint64_t fragments;                // fragments made before encryption
  uint64_t mss_clamped;
  uint64_t loops;                    // poll loop iterations (idle ones too)
  uint64_t busy_loops;               // iterations that received something
};

inline void count(PacketByteCount& c, uint32_t bytes) {
  c.packets++;
  c.bytes += bytes;
}

}  // namespace espgw::dataplane
