// The state the workers read: ports, tunnels, the inbound SA hash, the FIB.
//
// Written only by the control thread. Pointers the workers follow
// (Tunnel::out_sa, the hash's data, the FIB's tables) are published with one
// store and reclaimed after a grace period (rcu_sync.h); workers report a
// quiescent state once per loop.
#pragma once

#include <rte_ether.h>
#include <rte_ip_frag.h>
#include <rte_mempool.h>
#include <rte_rcu_qsbr.h>

#include <atomic>
#include <cstdint>
#include <cstring>

#include "dataplane/counters.h"
#include "dataplane/inbound_sa_table.h"
#include "dataplane/neighbor.h"
#include "dataplane/sa.h"
#include "lpm/route_table.h"

namespace espgw::dataplane {

inline constexpr uint16_t kBurst = 32;
inline constexpr uint16_t kMaxWorkers = 64;
inline constexpr uint8_t kMaxPortAddrs = 8;
inline constexpr uint16_t kNoPort = 0xFFFF;
// Outer reassembly table of one (worker, unprotected port): at most
// kReasmMaxEntries datagrams in progress (each of at most
// RTE_LIBRTE_IP_FRAG_MAX_FRAG fragments), kept at most kReasmTimeoutMs.
inline constexpr uint32_t kReasmBuckets = 64;
inline constexpr uint32_t kReasmBucketEntries = 4;
inline constexpr uint32_t kReasmMaxEntries = kReasmBuckets * kReasmBucketEntries;
inline constexpr uint32_t kReasmTimeoutMs = 2000;

enum class PortKind : uint8_t { kProtected, kUnprotected, kException };

struct Port {
  uint16_t port_id;          // DPDK port id
  PortKind kind;
  uint16_t nb_rx_queues;     // workers with index >= this do not poll it
  uint16_t mtu;              // IP MTU
  rte_ether_addr mac;
  uint8_t nb_addrs;
  uint32_t addrs[kMaxPortAddrs];  // host order
  // One bit per address, at port_addr_bit(): "is this one of ours?" is then
  // one test for almost every address that is not (the loop over addrs cost
  // ~20 instructions per packet outbound, where destinations vary).
  uint64_t addr_filter;
};

inline uint32_t port_addr_bit(uint32_t a) { return (a * 0x9E3779B1u) >> 26; }  // Fibonacci hash, 6 bits

// Adds an address to a port (the only way to: it keeps addr_filter true).
inline bool port_add_addr(Port& p, uint32_t a) {
  if (p.nb_addrs >= kMaxPortAddrs) return false;
  p.addrs[p.nb_addrs++] = a;
  p.addr_filter |= uint64_t{1} << port_addr_bit(a);
  return true;
}

// A tunnel's next hop (the peer, or its `gateway`): a learned or configured
// MAC (kMacValid | 48 bits, one atomic word so a worker never reads half a
// MAC). The ports' other neighbours live in their NeighborTable.
struct Neighbor {
  uint32_t ip;  // host order; 0 = none
  std::atomic<uint64_t> mac;
  std::atomic<uint64_t> last_request_tsc;  // ARP request pacing (worker 0)
  std::atomic<uint64_t> confirmed_tsc;     // last ARP heard from it
  bool is_static;
};

inline uint64_t pack_mac(const rte_ether_addr& a) {
  uint64_t v = 0;
  for (int i = 0; i < 6; i++) v |= uint64_t(a.addr_bytes[i]) << (8 * i);
  return v | kMacValid;
}
inline void unpack_mac(uint64_t v, rte_ether_addr* a) {
  for (int i = 0; i < 6; i++) a->addr_bytes[i] = uint8_t(v >> (8 * i));
}

struct Tunnel {
  std::atomic<OutboundSa*> out_sa;  // current outbound SA; nullptr = none installed
  uint16_t port;                    // index into Dataplane::ports (unprotected)
  uint16_t mtu;                     // outer IP MTU
  uint16_t max_inner;               // largest inner packet that fits under plain ESP
  uint16_t max_inner_udp;           // ... and under ESP-in-UDP
  uint32_t remote;                  // peer's outer address (host order)
  uint16_t mss_clamp;               // 0 = off
  Neighbor next_hop;
};

// Key of the inbound SA hash: what the wire gives us (RFC 4301 §4.1: SPI,
// and the destination address since SPIs are chosen per receiver address).
struct Dataplane {
  rte_mempool* pool = nullptr;
  rte_rcu_qsbr* qsbr = nullptr;
  const lpm::Fib* fib = nullptr;
  InboundSaTable* inbound = nullptr;  // InboundKey -> InboundSa* (owned by the gateway)

  uint16_t nb_ports = 0;
  Port ports[kMaxPorts];
  uint16_t protected_port = kNoPort;  // where decrypted traffic leaves
  uint16_t exception_port = kNoPort;  // net_tap to the host's IKE daemon
  // Per port: connected subnets, gateway (the protected port's is the legacy
  // peer_ip/peer_mac), static and ARP-resolved neighbours.
  NeighborTable neighbors[kMaxPorts];

  uint16_t nb_tunnels = 0;
  Tunnel tunnels[kMaxTunnels];

  uint16_t nb_workers = 0;
  WorkerCounters* counters[kMaxWorkers] = {};
  uint64_t icmp_tokens_per_s = 100;  // per worker
  // Outer IPv4 reassembly (reassembly.h): one table per worker and
  // unprotected port, made and destroyed by the control side; nullptr = none.
  rte_ip_frag_tbl* reasm[kMaxWorkers][kMaxPorts] = {};
  uint32_t reasm_timeout_ms = kReasmTimeoutMs;
  // Mbufs that packets parked on someone else's behalf (outer fragments
  // waiting for their datagram, packets waiting for ARP) may never take:
  // below this many free mbufs, a fragment or a packet to hold is dropped
  // (no_buffer) instead. Anyone on the WAN can send fragments that never
  // complete; without the floor they could empty the pool until the
  // timeouts, and RX rings (refilled from the pool) would stall. Set by the
  // control side to a quarter of the pool.
  uint32_t park_floor = 0;

  std::atomic<bool> stop{false};
};

struct WorkerArgs {
  Dataplane* dp;
  uint16_t index;  // worker index: RX/TX queue number and RCU thread id
};

// The lcore entry point (rte_eal_remote_launch). Returns when dp->stop is set.
int worker_main(void* worker_args);

// One poll iteration, exposed for tests that drive a worker in-process.
// Returns the number of packets received.
uint32_t worker_poll_once(Dataplane& dp, uint16_t index);

// After the workers stopped: frees the outer fragments still waiting in
// worker `index`'s reassembly tables, counted as reassembly timeouts (so
// that the accounting still balances and no mbuf stays held).
void worker_release_fragments(Dataplane& dp, uint16_t index);

}  // namespace espgw::dataplane
