// The poll-mode worker: run to completion, bursts of 32.
//
// Every worker polls its own RX queue (index = worker index) of every port
// and owns the TX queue of the same index on every port, so nothing on the
// hot path is shared but the outbound SA sequence counters.
//
//   protected port  --outbound-->  FIB -> tunnel -> ESP encap -> unprotected port
//   unprotected port --inbound-->  SPI -> replay -> ESP decap -> policy -> protected port
//   IKE / ICMP / ARP for the gateway <-> exception port (net_tap to the host)
#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_ip_frag.h>
#include <rte_lcore.h>
#include <rte_prefetch.h>
#include <rte_udp.h>

#include "dataplane/dataplane.h"
#include "dataplane/esp.h"
#include "dataplane/packet_util.h"

namespace espgw::dataplane {
namespace {

constexpr uint16_t kEthLen = sizeof(rte_ether_hdr);
constexpr uint16_t kMaxFrags = 8;  // fragments of one packet before encryption
constexpr uint16_t kWork = kBurst * 2;

// Per-port TX staging: packets are flushed once per poll iteration.
struct TxBuffer {
  uint16_t n;
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
};

inline void drop(Worker& w, rte_mbuf* m, DropReason r) {
  w.c->drop[static_cast<int>(r)]++;
  rte_pktmbuf_free(m);
}

inline void stage_tx(Worker& w, uint16_t port, rte_mbuf* m) {
  TxBuffer& b = w.tx[port];
  if (b.n == RTE_DIM(b.pkts)) {
    drop(w, m, DropReason::kTxFull);
    return;
  }
  b.pkts[b.n++] = m;
}

inline void flush_tx(Worker& w) {
  Dataplane& dp = *w.dp;
  for (uint16_t p = 0; p < dp.nb_ports; p++) {
    TxBuffer& b = w.tx[p];
    if (b.n == 0) continue;
    uint16_t sent = 0;
    // A couple of retries absorb a momentarily full ring; then drop.
    for (int tries = 0; tries < 4 && sent < b.n; tries++)
      sent += rte_eth_tx_burst(dp.ports[p].port_id, w.index, b.pkts + sent, uint16_t(b.n - sent));
    w.c->port[p].tx.packets += sent;
    for (uint16_t i = sent; i < b.n; i++) drop(w, b.pkts[i], DropReason::kTxFull);
    b.n = 0;
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

// Learns next-hop MACs from any ARP packet whose sender we are waiting for.
// Workers write these words directly: ARP is rare, the store is one atomic
// 64-bit word, and every writer stores the same value for the same sender.
inline void learn_neighbor(Dataplane& dp, const rte_mbuf* m, uint16_t port) {
  uint32_t ip;
  rte_ether_addr mac;
  if (!arp_sender(m, &ip, &mac)) return;
  uint64_t packed = pack_mac(mac);
  if (port == dp.protected_port && dp.lan_peer.ip == ip && !dp.lan_peer.is_static)
    dp.lan_peer.mac.store(packed, std::memory_order_relaxed);
  for (uint16_t t = 0; t < dp.nb_tunnels; t++) {
    Neighbor& n = dp.tunnels[t].next_hop;
    if (dp.tunnels[t].port == port && n.ip == ip && !n.is_static) n.mac.store(packed, std::memory_order_relaxed);
  }
}

// ARP on a protected/unprotected port: answer for our addresses, learn.
inline void handle_arp(Worker& w, rte_mbuf* m, uint16_t port) {
  Dataplane& dp = *w.dp;
  learn_neighbor(dp, m, port);
  if (arp_make_reply(m, dp.ports[port])) {
    w.c->arp_replies++;
    stage_tx(w, port, m);
    return;
  }
  rte_pktmbuf_free(m);  // replies to us and requests for others: consumed
}

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

// Sends a packet that still starts at its Ethernet header and exceeds the
// tunnel MTU with DF set back as ICMP "fragmentation needed".
inline void send_frag_needed(Worker& w, rte_mbuf* m, uint16_t in_port, uint16_t mtu) {
  Dataplane& dp = *w.dp;
  if (icmp_allowed(w)) {
    auto* eth = rte_pktmbuf_mtod(m, const rte_ether_hdr*);
    auto* ip = reinterpret_cast<const rte_ipv4_hdr*>(eth + 1);
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
  if (icmp_allowed(w)) {
    auto* eth = rte_pktmbuf_mtod(m, const rte_ether_hdr*);
    auto* ip = reinterpret_cast<const rte_ipv4_hdr*>(eth + 1);
    if (rte_mbuf* icmp = build_icmp_time_exceeded(dp.pool, eth, ip, dp.ports[in_port])) {
      w.c->icmp_sent++;
      stage_tx(w, in_port, icmp);
    }
  }
  drop(w, m, DropReason::kTtlExceeded);
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
};

// Encrypts up to kBurst items (all with a usable SA) and stages them for TX:
// one sequence number reservation, one next-hop MAC read and one counter
// update per (tunnel, SA) group and call.
inline void encrypt_and_send(Worker& w, const OutItem* items, uint16_t n, const OutGroups& groups) {
  Dataplane& dp = *w.dp;
  struct Group {
    uint16_t cnt;
    uint16_t sent;
    uint16_t port;
    bool ok;
    uint64_t base;
    uint64_t inner_bytes;
    uint64_t wire_bytes;
    uint8_t eth[16];
  };
  Group g[kBurst];
  const uint16_t ng = groups.n;
  for (uint16_t k = 0; k < ng; k++) g[k].cnt = 0;
  for (uint16_t i = 0; i < n; i++) g[items[i].grp].cnt++;
  for (uint16_t k = 0; k < ng; k++) {
    Group& gr = g[k];
    gr.sent = 0;
    gr.inner_bytes = gr.wire_bytes = 0;
    if (gr.cnt == 0) continue;
    const Tunnel& t = dp.tunnels[groups.tunnel[k]];
    uint64_t mac = t.next_hop.mac.load(std::memory_order_relaxed);
    gr.ok = (mac & kMacValid) != 0;
    gr.port = t.port;
    if (!gr.ok) continue;  // dropped below, before a sequence number is spent
    make_eth(gr.eth, dp.ports[t.port].mac, mac);
    gr.base = groups.sa[k]->next_seq.fetch_add(gr.cnt, std::memory_order_relaxed);
  }

  crypto::AeadOp ops[kBurst];
  uint8_t aad[kBurst][kAadScratch];
  uint16_t ok_items[kBurst];
  uint16_t nops = 0;
  for (uint16_t i = 0; i < n; i++) {
    const OutItem& it = items[i];
    Group& gr = g[it.grp];
    if (!gr.ok) {
      drop(w, it.m, DropReason::kNoNeighbor);
      continue;
    }
    uint64_t seq = gr.base++;
    EspStatus st = esp_outbound_prepare<true>(it.m, *groups.sa[it.grp], seq, ops[nops], aad[nops]);
    if (st != EspStatus::kOk) {
      drop(w, it.m, st == EspStatus::kSeqExhausted ? DropReason::kSeqExhausted
                    : st == EspStatus::kNoRoom     ? DropReason::kNoBuffer
                                                   : DropReason::kUnsupported);
      continue;
    }
    ok_items[nops++] = i;
  }
  if (nops == 0) return;
  crypto::encrypt_burst(ops, nops);
  for (uint16_t j = 0; j < nops; j++) {
    const OutItem& it = items[ok_items[j]];
    Group& gr = g[it.grp];
    if (!put_eth(it.m, gr.eth)) {
      drop(w, it.m, DropReason::kNoBuffer);
      continue;
    }
    gr.sent++;
    gr.inner_bytes += it.inner_len;
    gr.wire_bytes += rte_pktmbuf_pkt_len(it.m);
    stage_tx(w, gr.port, it.m);
  }
  for (uint16_t k = 0; k < ng; k++) {
    const Group& gr = g[k];
    if (gr.sent == 0) continue;
    PacketByteCount& tc = w.c->tunnel[groups.tunnel[k]].out;
    tc.packets += gr.sent;
    tc.bytes += gr.inner_bytes;
    PacketByteCount& sc = w.c->sa[groups.sa[k]->slot];
    sc.packets += gr.sent;
    sc.bytes += gr.inner_bytes;
    w.c->port[gr.port].tx.bytes += gr.wire_bytes;
  }
}

inline void encrypt_and_send_all(Worker& w, const OutItem* items, uint16_t n, const OutGroups& groups) {
  for (uint16_t s = 0; s < n; s += kBurst) encrypt_and_send(w, items + s, std::min<uint16_t>(kBurst, n - s), groups);
}

// First checks of every frame a protected or unprotected port received:
// single segment, Ethernet, ARP handled here, IPv4 header sane (Ethernet
// padding trimmed). Returns the IPv4 header, or nullptr when the frame was
// consumed (ARP) or dropped and counted.
inline rte_ipv4_hdr* accept_ipv4_frame(Worker& w, rte_mbuf* m, uint16_t port) {
  if (m->nb_segs != 1) {
    drop(w, m, DropReason::kUnsupported);
    return nullptr;
  }
  if (rte_pktmbuf_data_len(m) < kEthLen) {
    drop(w, m, DropReason::kTruncated);
    return nullptr;
  }
  auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
  uint16_t type = detail::be16(eth->ether_type);
  if (type == RTE_ETHER_TYPE_ARP) {
    handle_arp(w, m, port);
    return nullptr;
  }
  if (type != RTE_ETHER_TYPE_IPV4) {
    drop(w, m, DropReason::kUnsupported);
    return nullptr;
  }
  auto* ip = reinterpret_cast<rte_ipv4_hdr*>(eth + 1);
  DropReason r = check_ipv4(m, ip, rte_pktmbuf_data_len(m) - kEthLen);
  if (r != DropReason::kCount) {
    drop(w, m, r);
    return nullptr;
  }
  return ip;
}

// Protected side: plaintext in, ESP out.
void outbound(Worker& w, uint16_t port, rte_mbuf** pkts, uint16_t n) {
  Dataplane& dp = *w.dp;
  const Port& in = dp.ports[port];
  rte_mbuf* ip_pkts[kBurst];
  uint32_t dst[kBurst];
  uint16_t k = 0;
  uint64_t rx_bytes = 0;

  for (uint16_t i = 0; i < n; i++) {
    rte_mbuf* m = pkts[i];
    if (i + 1 < n) rte_prefetch0(rte_pktmbuf_mtod(pkts[i + 1], void*));
    rx_bytes += rte_pktmbuf_pkt_len(m);
    rte_ipv4_hdr* ip = accept_ipv4_frame(w, m, port);
    if (ip == nullptr) continue;  // dropped, or ARP answered
    uint32_t d = detail::be32(ip->dst_addr);
    if (port_owns(in, d)) {  // ICMP echo to the gateway, management traffic
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

  OutItem items[kWork];
  uint16_t ni = 0;
  OutGroups groups;
  groups.n = 0;
  for (uint16_t i = 0; i < k; i++) {
    rte_mbuf* m = ip_pkts[i];
    if (tun[i] == lpm::kNoRoute) {
      drop(w, m, DropReason::kNoRoute);
      continue;
    }
    Tunnel& t = dp.tunnels[tun[i]];
    uint16_t si = 0;
    while (si < groups.n && groups.tunnel[si] != tun[i]) si++;
    if (si == groups.n) {
      groups.tunnel[groups.n] = tun[i];
      groups.sa[groups.n++] = t.out_sa.load(std::memory_order_acquire);
    }
    OutboundSa* sa = groups.sa[si];
    if (sa == nullptr) {
      drop(w, m, DropReason::kTunnelDown);
      continue;
    }
    auto* ip = rte_pktmbuf_mtod_offset(m, rte_ipv4_hdr*, kEthLen);
    // RFC 1812 §5.3.1: a router never forwards a packet whose TTL expires.
    if (ip->time_to_live <= 1) {
      send_time_exceeded(w, m, port);
      continue;
    }
    uint16_t inner_len = detail::be16(ip->total_length);
    if (t.mss_clamp && clamp_tcp_mss(ip, inner_len, t.mss_clamp)) w.c->mss_clamped++;

    uint16_t max_inner = sa->udp_dst_port ? t.max_inner_udp : t.max_inner;
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
      rte_pktmbuf_free(m);
      if (nf <= 0) {
        w.c->drop[static_cast<int>(DropReason::kMtu)]++;
        continue;
      }
      w.c->fragments += nf;
      for (int f = 0; f < nf; f++) {
        if (ni == kWork) {  // the work array is full: send what we have
          encrypt_and_send_all(w, items, ni, groups);
          ni = 0;
        }
        // copy_nonseg leaves headroom for an L2 header: the ESP header fits.
        items[ni++] = {frags[f], uint16_t(rte_pktmbuf_data_len(frags[f])), uint8_t(si)};
      }
      continue;
    }
    ipv4_decrement_ttl(ip);
    m->data_off = uint16_t(m->data_off + kEthLen);  // single segment: strip Ethernet in place
    m->data_len = uint16_t(m->data_len - kEthLen);
    m->pkt_len -= kEthLen;
    if (ni == kWork) {
      encrypt_and_send_all(w, items, ni, groups);
      ni = 0;
    }
    items[ni++] = {m, inner_len, uint8_t(si)};
  }
  encrypt_and_send_all(w, items, ni, groups);
}

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
    default: return DropReason::kUnsupported;
  }
}

inline bool in_selectors(const Selector* s, uint8_t n, uint32_t a) {
  for (uint8_t i = 0; i < n; i++)
    if (((a ^ s[i].addr) & s[i].mask) == 0) return true;
  return false;
}

// Per-burst SA lookup: the distinct (SPI, destination) keys of a burst are
// looked up once each (a burst usually carries one or two SAs). Nothing is
// kept across poll iterations, so no SA pointer outlives the quiescent state
// the worker reports after each iteration (RCU reclamation stays safe).
constexpr uint16_t kMaxDistinctSa = 4;

inline void lookup_inbound_sas(const Dataplane& dp, const InboundKey* keys, uint16_t k, InboundSa** out) {
  uint64_t ukey[kMaxDistinctSa];
  const void* ukeyp[kMaxDistinctSa];
  uint8_t which[kBurst];
  uint16_t nu = 0;
  for (uint16_t i = 0; i < k; i++) {
    uint64_t kv;
    memcpy(&kv, &keys[i], sizeof(kv));
    uint16_t j = 0;
    while (j < nu && ukey[j] != kv) j++;
    if (j == nu) {
      if (nu == kMaxDistinctSa) {  // many SAs in one burst: the hash's bulk lookup
        const void* keyp[kBurst];
        void* data[kBurst];
        uint64_t hits = 0;
        for (uint16_t x = 0; x < k; x++) keyp[x] = &keys[x];
        rte_hash_lookup_bulk_data(dp.inbound, keyp, k, &hits, data);
        for (uint16_t x = 0; x < k; x++) out[x] = (hits >> x) & 1 ? static_cast<InboundSa*>(data[x]) : nullptr;
        return;
      }
      ukey[nu] = kv;
      ukeyp[nu++] = &keys[i];
    }
    which[i] = uint8_t(j);
  }
  InboundSa* usa[kMaxDistinctSa];
  if (nu == 1) {
    void* d = nullptr;
    usa[0] = rte_hash_lookup_data(dp.inbound, ukeyp[0], &d) >= 0 ? static_cast<InboundSa*>(d) : nullptr;
  } else {
    void* data[kMaxDistinctSa];
    uint64_t hits = 0;
    rte_hash_lookup_bulk_data(dp.inbound, ukeyp, nu, &hits, data);
    for (uint16_t j = 0; j < nu; j++) usa[j] = (hits >> j) & 1 ? static_cast<InboundSa*>(data[j]) : nullptr;
  }
  for (uint16_t i = 0; i < k; i++) out[i] = usa[which[i]];
}

// Counts runs of packets on the same SA with one counter update per run.
struct SaRunCounter {
  WorkerCounters* c;
  const InboundSa* sa = nullptr;
  uint64_t packets = 0, bytes = 0;
  void flush() {
    if (sa == nullptr) return;
    c->sa[sa->slot].packets += packets;
    c->sa[sa->slot].bytes += bytes;
    c->tunnel[sa->tunnel].in.packets += packets;
    c->tunnel[sa->tunnel].in.bytes += bytes;
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
void inbound(Worker& w, uint16_t port, rte_mbuf** pkts, uint16_t n) {
  Dataplane& dp = *w.dp;
  const Port& in = dp.ports[port];
  rte_mbuf* esp[kBurst];
  EspInboundInfo info[kBurst];
  InboundKey keys[kBurst];
  uint16_t k = 0;
  uint64_t rx_bytes = 0;

  for (uint16_t i = 0; i < n; i++) {
    rte_mbuf* m = pkts[i];
    if (i + 1 < n) rte_prefetch0(rte_pktmbuf_mtod(pkts[i + 1], void*));
    rx_bytes += rte_pktmbuf_pkt_len(m);
    rte_ipv4_hdr* ip = accept_ipv4_frame(w, m, port);
    if (ip == nullptr) continue;  // dropped, or ARP answered
    if (!port_owns(in, detail::be32(ip->dst_addr))) {
      drop(w, m, DropReason::kNotForUs);
      continue;
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
  lookup_inbound_sas(dp, keys, k, found);

  crypto::AeadOp ops[kBurst];
  uint8_t aad[kBurst][kAadScratch];
  InboundSa* sa[kBurst];
  uint64_t full[kBurst];
  uint16_t idx[kBurst];
  uint16_t nops = 0;
  for (uint16_t i = 0; i < k; i++) {
    InboundSa* s = found[i];
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
    EspStatus st = esp_inbound_prepare(esp[i], info[i], *s, full[i], ops[nops], aad[nops]);
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
  ReplayVerdict verdict[kBurst];
  {
    ReplayWindow::UpdateLock guard;
    for (uint16_t j = 0; j < nops; j++) {
      if (!ok[j]) continue;
      guard.hold(&sa[j]->replay);
      verdict[j] = sa[j]->replay.update(full[idx[j]]);
    }
  }

  rte_mbuf* fwd[kBurst];
  uint32_t src[kBurst];
  uint16_t tun_of[kBurst];
  uint16_t nf = 0;
  SaRunCounter sc{w.c};
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
    EspStatus st = esp_inbound_finish(m, info[i], true);
    if (st != EspStatus::kOk) {
      if (st == EspStatus::kDummy) {  // TFC dummy packet: silently discarded
        rte_pktmbuf_free(m);
        continue;
      }
      drop(w, m, esp_drop_reason(st));
      continue;
    }
    auto* ip = rte_pktmbuf_mtod(m, rte_ipv4_hdr*);
    uint32_t s = detail::be32(ip->src_addr);
    uint32_t d = detail::be32(ip->dst_addr);
    InboundSa& isa = *sa[j];
    if (isa.nb_remote_sel &&
        (!in_selectors(isa.remote_sel, isa.nb_remote_sel, s) || !in_selectors(isa.local_sel, isa.nb_local_sel, d))) {
      drop(w, m, DropReason::kPolicy);
      continue;
    }
    sc.add(&isa, rte_pktmbuf_pkt_len(m));
    fwd[nf] = m;
    src[nf] = s;
    tun_of[nf++] = isa.tunnel;
  }
  sc.flush();
  if (nf == 0) return;

  // Route-based acceptance and asymmetry: which tunnel would we use to reach
  // the sender? None: the tunnel's routes do not allow this source.
  lpm::TunnelId back[kBurst];
  dp.fib->lookup_burst(src, back, nf);
  uint64_t lan_mac = dp.lan_peer.mac.load(std::memory_order_relaxed);
  const Port& out = dp.ports[dp.protected_port];
  uint8_t eth[16];
  make_eth(eth, out.mac, lan_mac);
  uint64_t tx_bytes = 0;
  for (uint16_t i = 0; i < nf; i++) {
    rte_mbuf* m = fwd[i];
    if (back[i] == lpm::kNoRoute) {
      drop(w, m, DropReason::kPolicy);
      continue;
    }
    if (back[i] != tun_of[i]) w.c->tunnel[tun_of[i]].asymmetric++;
    // Forwarding (RFC 1812 §5.3.1): the decrypted packet's TTL must not
    // expire here. No ICMP back through the tunnel: dropped and counted.
    auto* ip = rte_pktmbuf_mtod(m, rte_ipv4_hdr*);
    if (ip->time_to_live <= 1) {
      drop(w, m, DropReason::kTtlExceeded);
      continue;
    }
    if (!(lan_mac & kMacValid)) {
      drop(w, m, DropReason::kNoNeighbor);
      continue;
    }
    ipv4_decrement_ttl(ip);
    if (!put_eth(m, eth)) {
      drop(w, m, DropReason::kNoBuffer);
      continue;
    }
    tx_bytes += rte_pktmbuf_pkt_len(m);
    stage_tx(w, dp.protected_port, m);
  }
  w.c->port[dp.protected_port].tx.bytes += tx_bytes;
}

// What the host sent through the tap: IKE and ICMP from one of our outer
// addresses (or ARP from the host kernel). Leaves by the port that owns the
// source address, towards the tunnel peer's MAC.
void from_host(Worker& w, uint16_t port, rte_mbuf** pkts, uint16_t n) {
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
      if (arp_make_reply(m, dp.ports[dp.exception_port], true)) {
        w.c->arp_replies++;
        stage_tx(w, dp.exception_port, m);
      } else {
        rte_pktmbuf_free(m);
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
    uint64_t mac = 0;
    if (out == dp.protected_port) {
      mac = dp.lan_peer.mac.load(std::memory_order_relaxed);
    } else {
      for (uint16_t t = 0; t < dp.nb_tunnels; t++)
        if (dp.tunnels[t].port == out && dp.tunnels[t].remote == d) {
          mac = dp.tunnels[t].next_hop.mac.load(std::memory_order_relaxed);
          break;
        }
    }
    if (!(mac & kMacValid)) {
      drop(w, m, DropReason::kNoNeighbor);
      continue;
    }
    unpack_mac(mac, &eth->dst_addr);
    eth->src_addr = dp.ports[out].mac;
    w.c->exception_from_host++;
    stage_tx(w, out, m);
  }
}

// Worker 0 asks for next-hop MACs that are still unknown, once a second.
void resolve_neighbors(Worker& w) {
  Dataplane& dp = *w.dp;
  uint64_t now = rte_rdtsc();
  if (now - w.arp_check_tsc < w.tsc_hz / 10) return;
  w.arp_check_tsc = now;
  auto ask = [&](Neighbor& n, uint16_t port) {
    if (n.ip == 0 || (n.mac.load(std::memory_order_relaxed) & kMacValid)) return;
    if (now - n.last_request_tsc.load(std::memory_order_relaxed) < w.tsc_hz) return;
    n.last_request_tsc.store(now, std::memory_order_relaxed);
    rte_mbuf* m = rte_pktmbuf_alloc(dp.pool);
    if (!m) return;
    if (!build_arp_request(m, dp.ports[port], n.ip)) {
      rte_pktmbuf_free(m);
      return;
    }
    stage_tx(w, port, m);
  };
  if (dp.protected_port != kNoPort) ask(dp.lan_peer, dp.protected_port);
  for (uint16_t t = 0; t < dp.nb_tunnels; t++) ask(dp.tunnels[t].next_hop, dp.tunnels[t].port);
}

}  // namespace

uint32_t worker_poll_once_impl(Worker& w) {
  Dataplane& dp = *w.dp;
  uint32_t total = 0;
  rte_mbuf* pkts[kBurst];
  for (uint16_t p = 0; p < dp.nb_ports; p++) {
    const Port& port = dp.ports[p];
    if (w.index >= port.nb_rx_queues) continue;
    uint16_t n = rte_eth_rx_burst(port.port_id, w.index, pkts, kBurst);
    if (n == 0) continue;
    total += n;
    w.c->port[p].rx.packets += n;  // rx bytes: counted by the pipelines, which touch each mbuf anyway
    switch (port.kind) {
      case PortKind::kProtected: outbound(w, p, pkts, n); break;
      case PortKind::kUnprotected: inbound(w, p, pkts, n); break;
      case PortKind::kException: from_host(w, p, pkts, n); break;
    }
  }
  if (w.index == 0) resolve_neighbors(w);
  flush_tx(w);
  w.c->loops++;
  if (total) w.c->busy_loops++;
  return total;
}

namespace {
void init_worker(Worker& w, Dataplane* dp, uint16_t index) {
  memset(static_cast<void*>(&w), 0, sizeof(w));
  w.dp = dp;
  w.index = index;
  w.c = dp->counters[index];
  w.tsc_hz = rte_get_tsc_hz();
  w.icmp_tokens = dp->icmp_tokens_per_s;
  w.icmp_last_tsc = rte_rdtsc();
}
}  // namespace

uint32_t worker_poll_once(Dataplane& dp, uint16_t index) {
  // Tests drive one iteration at a time; the TX buffers are flushed inside,
  // so a fresh Worker per call loses nothing.
  Worker w;
  init_worker(w, &dp, index);
  return worker_poll_once_impl(w);
}

int worker_main(void* arg) {
  auto* a = static_cast<WorkerArgs*>(arg);
  Dataplane& dp = *a->dp;
  static thread_local Worker w;  // large (TX staging): not on the lcore stack
  init_worker(w, &dp, a->index);
  if (dp.qsbr) {
    rte_rcu_qsbr_thread_register(dp.qsbr, a->index);
    rte_rcu_qsbr_thread_online(dp.qsbr, a->index);
  }
  while (!dp.stop.load(std::memory_order_relaxed)) {
    worker_poll_once_impl(w);
    if (dp.qsbr) rte_rcu_qsbr_quiescent(dp.qsbr, a->index);
  }
  if (dp.qsbr) {
    rte_rcu_qsbr_thread_offline(dp.qsbr, a->index);
    rte_rcu_qsbr_thread_unregister(dp.qsbr, a->index);
  }
  return 0;
}

}  // namespace espgw::dataplane
